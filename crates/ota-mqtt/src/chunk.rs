//! ThingsBoard's chunk-request rules (reference §3): the size payload of
//! `v2/fw|sw/request/{reqId}/chunk/{n}`, the size remembered per request id, and the
//! package resolved once per request id — all per connection, with a bounded table.
#![deny(clippy::indexing_slicing)]

use std::collections::VecDeque;
use std::sync::Arc;

use ota_server::model::OtaPackage;

/// The largest chunk ThingsBoard serves (`NETTY_MAX_PAYLOAD_SIZE`); exactly this is allowed.
pub const MAX_CHUNK_SIZE: u64 = 65_536;

/// Why a chunk-size payload was refused (ThingsBoard closes the connection on each).
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChunkSizeError {
    /// The payload is not UTF-8.
    #[error("chunk size is not UTF-8 (invalid byte at offset {offset})")]
    NotUtf8 {
        /// Offset of the first invalid byte.
        offset: usize,
    },
    /// A character other than an optional leading sign and ASCII digits (or no digit at all).
    #[error("chunk size {found:?} at offset {offset} is not a decimal digit")]
    NotNumeric {
        /// The offending character (`'\0'` when the digits are missing).
        found: char,
        /// Its byte offset.
        offset: usize,
    },
    /// The value does not fit a Java `int`.
    #[error("chunk size with {digits} digits overflows a 32-bit signed integer")]
    Overflow {
        /// Number of digits.
        digits: usize,
    },
}

/// Parses a chunk-size payload the way ThingsBoard does (`Integer.parseInt` of the UTF-8
/// text; an empty payload is 0): optional `+`/`-`, then ASCII digits, no whitespace, no
/// quotes, within `i32`.
///
/// ```
/// use ota_mqtt::chunk::{parse_size, ChunkSizeError};
/// assert_eq!(parse_size(b"4096"), Ok(4096));
/// assert_eq!(parse_size(b""), Ok(0));
/// assert_eq!(parse_size(b"-1"), Ok(-1));
/// assert_eq!(parse_size(b"4096\n"), Err(ChunkSizeError::NotNumeric { found: '\n', offset: 4 }));
/// ```
pub fn parse_size(payload: &[u8]) -> Result<i32, ChunkSizeError> {
    let text = std::str::from_utf8(payload).map_err(|e| ChunkSizeError::NotUtf8 {
        offset: e.valid_up_to(),
    })?;
    if text.is_empty() {
        return Ok(0);
    }
    let (negative, digits, start) = match text.as_bytes().first() {
        Some(b'-') => (true, text.get(1..).unwrap_or(""), 1),
        Some(b'+') => (false, text.get(1..).unwrap_or(""), 1),
        _ => (false, text, 0),
    };
    if digits.is_empty() {
        return Err(ChunkSizeError::NotNumeric {
            found: '\0',
            offset: start,
        });
    }
    let mut value: i64 = 0;
    for (i, c) in digits.char_indices() {
        let Some(d) = c.to_digit(10) else {
            return Err(ChunkSizeError::NotNumeric {
                found: c,
                offset: start + i,
            });
        };
        value = value * 10 + i64::from(d);
        if value > i64::from(i32::MAX) + 1 {
            return Err(ChunkSizeError::Overflow {
                digits: digits.len(),
            });
        }
    }
    let value = if negative { -value } else { value };
    i32::try_from(value).map_err(|_| ChunkSizeError::Overflow {
        digits: digits.len(),
    })
}

/// What the connection remembers about one request id.
#[derive(Clone, Debug, Default)]
pub struct RequestState {
    /// The last positive size asked for (0 until one was given).
    pub size: u64,
    /// The package resolved at the first chunk request of this id.
    pub package: Option<Arc<OtaPackage>>,
}

/// The per-connection table of request ids, keyed by the literal digit string as
/// ThingsBoard does (`"007"` and `"7"` are different ids). It holds at most `capacity`
/// ids: the least recently used is forgotten first, which only costs a re-resolution of
/// the package if that id is used again.
#[derive(Debug)]
pub struct RequestTable {
    entries: VecDeque<(String, RequestState)>,
    capacity: usize,
}

impl RequestTable {
    /// An empty table holding up to `capacity` ids (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// The state of `id`, created empty when new (forgetting the least recently used id
    /// when full).
    pub fn entry(&mut self, id: &str) -> &mut RequestState {
        let existing = self
            .entries
            .iter()
            .position(|(k, _)| k == id)
            .and_then(|pos| self.entries.remove(pos));
        let entry = existing.unwrap_or_else(|| {
            while self.entries.len() >= self.capacity {
                self.entries.pop_front();
            }
            (id.to_owned(), RequestState::default())
        });
        self.entries.push_back(entry);
        &mut self.entries.back_mut().expect("an entry was just pushed").1
    }

    /// Applies ThingsBoard's size rule for a request on `id`: a positive `requested` size is
    /// remembered; otherwise the remembered size is used (0 if none). Returns the
    /// effective size.
    pub fn effective_size(&mut self, id: &str, requested: i32) -> u64 {
        let state = self.entry(id);
        if let Ok(size) = u64::try_from(requested)
            && size > 0
        {
            state.size = size;
        }
        state.size
    }

    /// Number of ids remembered.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no id is remembered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sizes_as_java_parses_them() {
        assert_eq!(parse_size(b"65536"), Ok(65_536));
        assert_eq!(parse_size(b"+12"), Ok(12));
        assert_eq!(parse_size(b"0"), Ok(0));
        assert_eq!(parse_size(b"-0"), Ok(0));
        assert_eq!(parse_size(b"007"), Ok(7));
        assert_eq!(parse_size(b"2147483647"), Ok(i32::MAX));
        assert_eq!(parse_size(b"-2147483648"), Ok(i32::MIN));
    }

    #[test]
    fn bad_sizes_each_get_their_error() {
        // Truncated: a sign without digits.
        assert_eq!(
            parse_size(b"-"),
            Err(ChunkSizeError::NotNumeric {
                found: '\0',
                offset: 1
            })
        );
        // Non-numeric: quotes (the JSON-encoded size of old SDKs), whitespace, letters.
        assert_eq!(
            parse_size(b"\"4096\""),
            Err(ChunkSizeError::NotNumeric {
                found: '"',
                offset: 0
            })
        );
        assert_eq!(
            parse_size(b" 1"),
            Err(ChunkSizeError::NotNumeric {
                found: ' ',
                offset: 0
            })
        );
        assert_eq!(
            parse_size(b"12a"),
            Err(ChunkSizeError::NotNumeric {
                found: 'a',
                offset: 2
            })
        );
        // Non-UTF-8.
        assert_eq!(
            parse_size(b"1\xff"),
            Err(ChunkSizeError::NotUtf8 { offset: 1 })
        );
        // Overflowing.
        assert_eq!(
            parse_size(b"2147483648"),
            Err(ChunkSizeError::Overflow { digits: 10 })
        );
        assert_eq!(
            parse_size(b"-2147483649"),
            Err(ChunkSizeError::Overflow { digits: 10 })
        );
        // Oversized: a long run of digits stops at the first overflow.
        assert_eq!(
            parse_size(&vec![b'9'; 70_000]),
            Err(ChunkSizeError::Overflow { digits: 70_000 })
        );
    }

    #[test]
    fn size_is_remembered_per_request_id() {
        let mut t = RequestTable::new(4);
        assert_eq!(t.effective_size("1", 0), 0);
        assert_eq!(t.effective_size("1", 4), 4);
        assert_eq!(t.effective_size("1", 0), 4);
        assert_eq!(t.effective_size("1", -5), 4);
        assert_eq!(t.effective_size("01", 0), 0, "ids are literal strings");
        assert_eq!(t.effective_size("1", 8), 8);
    }

    #[test]
    fn table_forgets_the_least_recently_used_id_when_full() {
        let mut t = RequestTable::new(2);
        t.effective_size("1", 10);
        t.effective_size("2", 20);
        t.effective_size("1", 0);
        t.effective_size("3", 30);
        assert_eq!(t.len(), 2);
        assert_eq!(t.effective_size("1", 0), 10);
        assert_eq!(t.effective_size("2", 0), 0, "id 2 was evicted");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn size_round_trips(v in any::<i32>()) {
            prop_assert_eq!(parse_size(v.to_string().as_bytes()), Ok(v));
        }

        #[test]
        fn size_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..32)) {
            let _ = parse_size(&bytes);
        }

        #[test]
        fn table_never_exceeds_capacity(ids in proptest::collection::vec(0u8..20, 0..64), cap in 1usize..8) {
            let mut t = RequestTable::new(cap);
            for id in ids {
                t.effective_size(&id.to_string(), i32::from(id));
                prop_assert!(t.len() <= cap);
            }
        }
    }
}
