//! Query parameters of the device API, bound the way ThingsBoard's Spring controller binds
//! them: repeated values of one name are joined with commas, `int` parameters accept an
//! optional sign and must fit 32 bits, an empty `int` takes its default.

use core::fmt;

/// Why a query was refused (answered `400 Bad Request`).
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueryError {
    /// A required parameter is absent.
    Missing {
        /// Parameter name.
        name: &'static str,
    },
    /// A 32-bit integer parameter holds something else.
    NotAnInt {
        /// Parameter name.
        name: &'static str,
        /// The value as received.
        value: String,
    },
    /// A number is negative where only non-negative values mean something.
    Negative {
        /// Parameter name.
        name: &'static str,
        /// The value.
        value: i64,
    },
}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing { name } => {
                write!(f, "Required request parameter '{name}' is not present")
            }
            Self::NotAnInt { name, value } => {
                write!(
                    f,
                    "parameter '{name}' is {value:?}, expected a 32-bit integer"
                )
            }
            Self::Negative { name, value } => {
                write!(f, "parameter '{name}' is {value}, expected ≥ 0")
            }
        }
    }
}

impl std::error::Error for QueryError {}

/// Every value of `name` in `query`, joined with commas (Spring's binding of a `String`
/// parameter); `None` when absent.
pub fn joined(query: &str, name: &str) -> Option<String> {
    let mut out: Option<String> = None;
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        if k == name {
            match &mut out {
                Some(s) => {
                    s.push(',');
                    s.push_str(&v);
                }
                None => out = Some(v.into_owned()),
            }
        }
    }
    out
}

/// Parses a Java `int` the way Spring converts a request parameter: surrounding whitespace
/// trimmed, an optional `+`/`-`, decimal digits, within `i32`.
pub fn java_int(name: &'static str, value: &str) -> Result<i32, QueryError> {
    let t = value.trim();
    let digits = t.strip_prefix(['+', '-']).unwrap_or(t);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(QueryError::NotAnInt {
            name,
            value: value.to_owned(),
        });
    }
    t.parse().map_err(|_| QueryError::NotAnInt {
        name,
        value: value.to_owned(),
    })
}

/// An optional `int` parameter with a default (absent or empty → `default`).
fn int_or(query: &str, name: &'static str, default: i32) -> Result<i32, QueryError> {
    match joined(query, name) {
        Some(v) if !v.trim().is_empty() => java_int(name, &v),
        _ => Ok(default),
    }
}

/// The query of `GET /api/v1/{token}/firmware|software`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkQuery {
    /// `title`: must equal the assigned package's title.
    pub title: String,
    /// `version`: must equal the assigned package's version.
    pub version: String,
    /// `size`: bytes per chunk; 0 (also for absent or negative values) is the whole file.
    pub size: u64,
    /// `chunk`: chunk index.
    pub chunk: u64,
}

impl ChunkQuery {
    /// Binds `title`, `version`, `size` (default 0) and `chunk` (default 0).
    ///
    /// A negative `size` means the whole file, as ThingsBoard's in-memory cache treats it. A
    /// negative `chunk` with a positive `size` is refused: ThingsBoard fails inside the
    /// slicing there (an internal error); a clean `400` is better for the device.
    pub fn parse(query: &str) -> Result<Self, QueryError> {
        let title = joined(query, "title").ok_or(QueryError::Missing { name: "title" })?;
        let version = joined(query, "version").ok_or(QueryError::Missing { name: "version" })?;
        let size = int_or(query, "size", 0)?;
        let chunk = int_or(query, "chunk", 0)?;
        let size = u64::try_from(size).unwrap_or(0);
        let chunk = match u64::try_from(chunk) {
            Ok(c) => c,
            Err(_) if size == 0 => 0,
            Err(_) => {
                return Err(QueryError::Negative {
                    name: "chunk",
                    value: i64::from(chunk),
                });
            }
        };
        Ok(Self {
            title,
            version,
            size,
            chunk,
        })
    }
}

/// The key lists of `GET /api/v1/{token}/attributes`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AttributeKeys {
    /// `sharedKeys`, split at commas (empty names dropped); `None` when absent.
    pub shared: Option<Vec<String>>,
    /// `clientKeys`, split likewise.
    pub client: Option<Vec<String>>,
}

impl AttributeKeys {
    /// Binds `sharedKeys` and `clientKeys` (each may be repeated or comma-separated).
    pub fn parse(query: &str) -> Self {
        let split = |s: String| {
            s.split(',')
                .filter(|k| !k.is_empty())
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        Self {
            shared: joined(query, "sharedKeys").map(split),
            client: joined(query, "clientKeys").map(split),
        }
    }
}

/// `timeout` of the attribute long poll, in ms (default 60 000, ThingsBoard's
/// `HTTP_REQUEST_TIMEOUT`), capped at [`MAX_LONG_POLL_MS`].
pub fn long_poll_timeout(query: &str) -> Result<u64, QueryError> {
    match joined(query, "timeout") {
        Some(v) if !v.trim().is_empty() => {
            let t = v.trim();
            if !t.bytes().all(|b| b.is_ascii_digit()) {
                return Err(QueryError::NotAnInt {
                    name: "timeout",
                    value: v.clone(),
                });
            }
            // All digits: only overflow can fail, and an overflowing timeout is "forever".
            Ok(t.parse::<u64>().unwrap_or(u64::MAX).min(MAX_LONG_POLL_MS))
        }
        _ => Ok(DEFAULT_LONG_POLL_MS),
    }
}

/// Default long-poll timeout, ms.
pub const DEFAULT_LONG_POLL_MS: u64 = 60_000;
/// Longest long poll, ms (longer requests are shortened to this).
pub const MAX_LONG_POLL_MS: u64 = 600_000;

#[cfg(test)]
mod tests {
    use super::{AttributeKeys, ChunkQuery, QueryError, java_int, long_poll_timeout};
    use proptest::prelude::*;

    #[test]
    fn chunk_query_binds_like_spring() {
        let q = ChunkQuery::parse("title=demo&version=1.1&size=4&chunk=2").expect("valid");
        assert_eq!(
            (q.title.as_str(), q.version.as_str(), q.size, q.chunk),
            ("demo", "1.1", 4, 2)
        );
        let q = ChunkQuery::parse("title=demo&version=1.1").expect("defaults");
        assert_eq!((q.size, q.chunk), (0, 0));
        let q = ChunkQuery::parse("title=a&title=b&version=1%2E1&size=&chunk=+3").expect("joined");
        assert_eq!(
            (q.title.as_str(), q.version.as_str(), q.size, q.chunk),
            ("a,b", "1.1", 0, 3)
        );
        assert_eq!(
            ChunkQuery::parse("title=d&version=1&size=-5&chunk=-1")
                .expect("whole")
                .size,
            0
        );
    }

    #[test]
    fn each_bad_chunk_query_names_its_parameter() {
        assert_eq!(
            ChunkQuery::parse("version=1"),
            Err(QueryError::Missing { name: "title" })
        );
        assert_eq!(
            ChunkQuery::parse("title=t"),
            Err(QueryError::Missing { name: "version" })
        );
        let not_int = |name: &'static str, value: &str| QueryError::NotAnInt {
            name,
            value: value.into(),
        };
        assert_eq!(
            ChunkQuery::parse("title=t&version=1&size=abc"),
            Err(not_int("size", "abc"))
        );
        assert_eq!(
            ChunkQuery::parse("title=t&version=1&chunk=1.5"),
            Err(not_int("chunk", "1.5"))
        );
        assert_eq!(
            ChunkQuery::parse("title=t&version=1&size=2147483648"),
            Err(not_int("size", "2147483648"))
        );
        assert_eq!(
            ChunkQuery::parse("title=t&version=1&size=4&size=4"),
            Err(not_int("size", "4,4"))
        );
        assert_eq!(
            ChunkQuery::parse("title=t&version=1&chunk=%FF"),
            Err(not_int("chunk", "\u{fffd}"))
        );
        assert_eq!(
            ChunkQuery::parse("title=t&version=1&size=4&chunk=-1"),
            Err(QueryError::Negative {
                name: "chunk",
                value: -1
            })
        );
        assert_eq!(
            QueryError::Missing { name: "version" }.to_string(),
            "Required request parameter 'version' is not present"
        );
    }

    #[test]
    fn java_int_bounds() {
        assert_eq!(java_int("n", "2147483647"), Ok(i32::MAX));
        assert_eq!(java_int("n", "-2147483648"), Ok(i32::MIN));
        assert_eq!(java_int("n", " 7 "), Ok(7));
        assert!(java_int("n", "-").is_err());
        assert!(java_int("n", "+-1").is_err());
        assert!(java_int("n", "0x10").is_err());
    }

    #[test]
    fn attribute_keys_and_timeout() {
        let k = AttributeKeys::parse("sharedKeys=fw_title,fw_version&sharedKeys=fw_size");
        assert_eq!(
            k.shared,
            Some(vec![
                "fw_title".into(),
                "fw_version".into(),
                "fw_size".into()
            ])
        );
        assert_eq!(k.client, None);
        assert_eq!(AttributeKeys::parse("").shared, None);
        assert_eq!(long_poll_timeout(""), Ok(60_000));
        assert_eq!(long_poll_timeout("timeout=250"), Ok(250));
        assert_eq!(
            long_poll_timeout("timeout=99999999999999999999999"),
            Ok(600_000)
        );
        assert_eq!(
            long_poll_timeout("timeout=-1"),
            Err(QueryError::NotAnInt {
                name: "timeout",
                value: "-1".into()
            })
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn never_panics_on_arbitrary_queries(q in ".{0,80}") {
            let _ = ChunkQuery::parse(&q);
            let _ = AttributeKeys::parse(&q);
            let _ = long_poll_timeout(&q);
        }

        #[test]
        fn formatted_queries_round_trip(title in "[^\u{0}]{1,20}", version in "[^\u{0}]{1,20}", size in 1i32..=i32::MAX, chunk in 0i32..=i32::MAX) {
            let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            let query = format!("title={}&version={}&size={size}&chunk={chunk}", enc(&title), enc(&version));
            let q = ChunkQuery::parse(&query).expect("formatted query parses");
            prop_assert_eq!(q.title, title);
            prop_assert_eq!(q.version, version);
            prop_assert_eq!(q.size, u64::try_from(size).expect("positive"));
            prop_assert_eq!(q.chunk, u64::try_from(chunk).expect("positive"));
        }
    }
}
