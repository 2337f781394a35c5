//! The query of ThingsBoard's CoAP firmware resource (`/fw/{token}?title=…&version=…&size=…&chunk=…`)
//! and of the attributes resource (`?sharedKeys=a,b`), one `Uri-Query` option per `key=value`.

/// Why a query was refused (answered `4.00 Bad Request` with this text as diagnostic payload).
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// A `Uri-Query` option is not UTF-8.
    #[error("query option {index} is not UTF-8")]
    NotUtf8 {
        /// Position of the option (0-based).
        index: usize,
    },
    /// `size` or `chunk` is not a non-negative integer that fits 64 bits.
    #[error("query parameter {key} is not a number: {value:?}")]
    NotNumeric {
        /// `size` or `chunk`.
        key: &'static str,
        /// The value sent (cut to 32 bytes).
        value: String,
    },
    /// A parameter appears twice.
    #[error("query parameter {key} is given twice")]
    Duplicate {
        /// The repeated key.
        key: &'static str,
    },
}

/// The parameters of a firmware/software download request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DownloadQuery {
    /// `title`: compared with the package's title only when present (CoAP makes it optional).
    pub title: Option<String>,
    /// `version`: compared only when present.
    pub version: Option<String>,
    /// `size`: chunk size in bytes; 0 or absent = the whole package.
    pub size: u64,
    /// `chunk`: chunk index; absent = 0.
    pub chunk: u64,
}

fn split(option: &[u8], index: usize) -> Result<(&str, &str), QueryError> {
    let text = std::str::from_utf8(option).map_err(|_| QueryError::NotUtf8 { index })?;
    Ok(text.split_once('=').unwrap_or((text, "")))
}

fn number(key: &'static str, value: &str) -> Result<u64, QueryError> {
    // `u64::from_str` accepts a leading `+`; ThingsBoard's `Integer.parseInt` does too, but
    // nothing else, so digits only (and not empty).
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(QueryError::NotNumeric {
            key,
            value: cut(value),
        });
    }
    value.parse().map_err(|_| QueryError::NotNumeric {
        key,
        value: cut(value),
    })
}

fn cut(value: &str) -> String {
    value
        .chars()
        .scan(0usize, |n, c| {
            *n += c.len_utf8();
            (*n <= 32).then_some(c)
        })
        .collect()
}

fn set<T>(slot: &mut Option<T>, key: &'static str, value: T) -> Result<(), QueryError> {
    if slot.replace(value).is_some() {
        return Err(QueryError::Duplicate { key });
    }
    Ok(())
}

impl DownloadQuery {
    /// Parses the `Uri-Query` option values; unknown keys are ignored.
    pub fn parse<'a>(options: impl IntoIterator<Item = &'a [u8]>) -> Result<Self, QueryError> {
        let (mut title, mut version, mut size, mut chunk) = (None, None, None, None);
        for (index, option) in options.into_iter().enumerate() {
            let (key, value) = split(option, index)?;
            match key {
                "title" => set(&mut title, "title", value.to_owned())?,
                "version" => set(&mut version, "version", value.to_owned())?,
                "size" => set(&mut size, "size", number("size", value)?)?,
                "chunk" => set(&mut chunk, "chunk", number("chunk", value)?)?,
                _ => {}
            }
        }
        Ok(Self {
            title,
            version,
            size: size.unwrap_or(0),
            chunk: chunk.unwrap_or(0),
        })
    }
}

/// The keys of an attributes request (`sharedKeys=a,b`); `None` = not asked for.
pub fn shared_keys<'a>(
    options: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Option<Vec<String>>, QueryError> {
    keys_of("sharedKeys", options)
}

/// The client keys of an attributes request (`clientKeys=a,b`); `None` = not asked for.
pub fn client_keys<'a>(
    options: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Option<Vec<String>>, QueryError> {
    keys_of("clientKeys", options)
}

fn keys_of<'a>(
    name: &str,
    options: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Option<Vec<String>>, QueryError> {
    let mut keys: Option<Vec<String>> = None;
    for (index, option) in options.into_iter().enumerate() {
        let (key, value) = split(option, index)?;
        if key == name {
            // Repeated parameters are joined, as ThingsBoard's HTTP API does.
            keys.get_or_insert_with(Vec::new).extend(
                value
                    .split(',')
                    .filter(|k| !k.is_empty())
                    .map(str::to_owned),
            );
        }
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn q(parts: &[&str]) -> Result<DownloadQuery, QueryError> {
        DownloadQuery::parse(parts.iter().map(|p| p.as_bytes()))
    }

    #[test]
    fn parses_the_reference_query() {
        let got = q(&["title=demo", "version=1.1", "size=4", "chunk=1"]).expect("valid");
        assert_eq!(
            got,
            DownloadQuery {
                title: Some("demo".into()),
                version: Some("1.1".into()),
                size: 4,
                chunk: 1
            }
        );
        assert_eq!(q(&[]), Ok(DownloadQuery::default()));
        assert_eq!(q(&["other=x", "chunk=007"]).map(|d| d.chunk), Ok(7));
    }

    #[test]
    fn refuses_bad_values_naming_them() {
        assert_eq!(
            q(&["size=abc"]),
            Err(QueryError::NotNumeric {
                key: "size",
                value: "abc".into()
            })
        );
        assert_eq!(
            q(&["chunk=-1"]),
            Err(QueryError::NotNumeric {
                key: "chunk",
                value: "-1".into()
            })
        );
        assert_eq!(
            q(&["chunk="]),
            Err(QueryError::NotNumeric {
                key: "chunk",
                value: String::new()
            })
        );
        assert_eq!(
            q(&["size=+4"]),
            Err(QueryError::NotNumeric {
                key: "size",
                value: "+4".into()
            })
        );
        assert_eq!(
            q(&["chunk=18446744073709551616"]),
            Err(QueryError::NotNumeric {
                key: "chunk",
                value: "18446744073709551616".into()
            })
        );
        assert_eq!(
            q(&["title=a", "title=b"]),
            Err(QueryError::Duplicate { key: "title" })
        );
        assert_eq!(
            DownloadQuery::parse([&b"title=ok"[..], &[0xff, 0xfe][..]]),
            Err(QueryError::NotUtf8 { index: 1 })
        );
        let long = format!("size={}", "9".repeat(40));
        assert_eq!(
            q(&[&long]),
            Err(QueryError::NotNumeric {
                key: "size",
                value: "9".repeat(32)
            })
        );
    }

    #[test]
    fn shared_keys_are_joined() {
        let opts = [
            &b"sharedKeys=fw_title,fw_version"[..],
            b"sharedKeys=sw_title",
            b"clientKeys=x",
        ];
        assert_eq!(
            shared_keys(opts),
            Ok(Some(vec![
                "fw_title".into(),
                "fw_version".into(),
                "sw_title".into()
            ]))
        );
        assert_eq!(shared_keys([&b"x=1"[..]]), Ok(None));
        assert_eq!(client_keys(opts), Ok(Some(vec!["x".into()])));
        assert_eq!(client_keys([&b"sharedKeys=a"[..]]), Ok(None));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn round_trips(size: u64, chunk: u64, title in "[a-zA-Z0-9._-]{0,20}", version in "[a-zA-Z0-9._-]{0,20}") {
            let parts = [format!("title={title}"), format!("version={version}"), format!("size={size}"), format!("chunk={chunk}")];
            let got = DownloadQuery::parse(parts.iter().map(String::as_bytes)).expect("valid");
            prop_assert_eq!(got, DownloadQuery { title: Some(title), version: Some(version), size, chunk });
        }

        #[test]
        fn never_panics(opts in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..6)) {
            let _ = DownloadQuery::parse(opts.iter().map(Vec::as_slice));
            let _ = shared_keys(opts.iter().map(Vec::as_slice));
        }
    }
}
