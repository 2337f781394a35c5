//! HTTP `Range` (RFC 9110 §14) for one representation of known length: only single byte
//! ranges are served; anything else is ignored as the RFC allows, so the client gets the
//! whole representation with `200`.

use core::fmt;

/// What to do with a request's `Range` header for a representation of `len` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeDecision {
    /// Send the whole representation (`200`): no header, a malformed one, another unit, or
    /// several ranges.
    Full,
    /// Send bytes `start..end` (`206`, `Content-Range: bytes start-(end-1)/len`).
    Partial {
        /// First byte, inclusive.
        start: u64,
        /// Last byte, exclusive (`> start`).
        end: u64,
    },
    /// The single range lies wholly past the end (`416`, `Content-Range: bytes */len`).
    Unsatisfiable,
}

/// Why a `Range` value was ignored (for logs and tests).
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeIgnored {
    /// The unit is not `bytes`.
    Unit,
    /// More than one range was asked for.
    Multiple,
    /// A bound is missing, not a decimal number, overflows `u64`, or `first > last`.
    Syntax,
}

impl fmt::Display for RangeIgnored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Unit => "range unit is not bytes",
            Self::Multiple => "more than one range",
            Self::Syntax => "malformed byte range",
        })
    }
}

/// A parsed single byte range, before it meets a length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ByteRange {
    /// `first-last` (inclusive) or `first-` (to the end, `last` = `None`).
    From {
        /// First byte.
        first: u64,
        /// Last byte, inclusive.
        last: Option<u64>,
    },
    /// `-n`: the last `n` bytes.
    Suffix(u64),
}

impl ByteRange {
    /// Parses a `Range` header value holding exactly one byte range (`bytes=0-99`,
    /// `bytes=100-`, `bytes=-100`; whitespace around the range is allowed).
    pub fn parse(value: &[u8]) -> Result<Self, RangeIgnored> {
        let text = core::str::from_utf8(value).map_err(|_| RangeIgnored::Syntax)?;
        let (unit, set) = text.split_once('=').ok_or(RangeIgnored::Syntax)?;
        if !unit.trim().eq_ignore_ascii_case("bytes") {
            return Err(RangeIgnored::Unit);
        }
        if set.contains(',') {
            return Err(RangeIgnored::Multiple);
        }
        let (first, last) = set.trim().split_once('-').ok_or(RangeIgnored::Syntax)?;
        if first.is_empty() {
            return Ok(Self::Suffix(digits(last)?));
        }
        let first = digits(first)?;
        if last.is_empty() {
            return Ok(Self::From { first, last: None });
        }
        let last = digits(last)?;
        if last < first {
            return Err(RangeIgnored::Syntax);
        }
        Ok(Self::From {
            first,
            last: Some(last),
        })
    }

    /// The range against a representation of `len` bytes.
    pub fn resolve(self, len: u64) -> RangeDecision {
        match self {
            Self::From { first, .. } if first >= len => RangeDecision::Unsatisfiable,
            Self::From { first, last } => RangeDecision::Partial {
                start: first,
                end: last.map_or(len, |l| l.saturating_add(1).min(len)),
            },
            Self::Suffix(0) => RangeDecision::Unsatisfiable,
            Self::Suffix(_) if len == 0 => RangeDecision::Unsatisfiable,
            Self::Suffix(n) => RangeDecision::Partial {
                start: len.saturating_sub(n),
                end: len,
            },
        }
    }
}

/// `1*DIGIT` as `u64`; no sign, no whitespace.
fn digits(s: &str) -> Result<u64, RangeIgnored> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(RangeIgnored::Syntax);
    }
    s.parse().map_err(|_| RangeIgnored::Syntax)
}

/// What a `Range` header value means for `len` bytes: an ignored value gives
/// [`RangeDecision::Full`].
pub fn decide(value: Option<&[u8]>, len: u64) -> RangeDecision {
    match value.map(ByteRange::parse) {
        Some(Ok(r)) => r.resolve(len),
        Some(Err(why)) => {
            tracing::debug!(%why, "Range header ignored");
            RangeDecision::Full
        }
        None => RangeDecision::Full,
    }
}

#[cfg(test)]
mod tests {
    use super::{ByteRange, RangeDecision, RangeIgnored, decide};
    use proptest::prelude::*;

    #[test]
    fn single_ranges_resolve() {
        let p = |v: &str| decide(Some(v.as_bytes()), 10);
        assert_eq!(p("bytes=0-3"), RangeDecision::Partial { start: 0, end: 4 });
        assert_eq!(p("bytes=8-"), RangeDecision::Partial { start: 8, end: 10 });
        assert_eq!(
            p("bytes=8-100"),
            RangeDecision::Partial { start: 8, end: 10 }
        );
        assert_eq!(p("bytes=-3"), RangeDecision::Partial { start: 7, end: 10 });
        assert_eq!(p("bytes=-30"), RangeDecision::Partial { start: 0, end: 10 });
        assert_eq!(
            p("BYTES = 2-2"),
            RangeDecision::Partial { start: 2, end: 3 }
        );
        assert_eq!(p("bytes=10-"), RangeDecision::Unsatisfiable);
        assert_eq!(p("bytes=-0"), RangeDecision::Unsatisfiable);
        assert_eq!(decide(Some(b"bytes=-5"), 0), RangeDecision::Unsatisfiable);
        assert_eq!(decide(None, 10), RangeDecision::Full);
    }

    #[test]
    fn each_bad_value_is_ignored_with_its_reason() {
        assert_eq!(ByteRange::parse(b"items=0-1"), Err(RangeIgnored::Unit));
        assert_eq!(
            ByteRange::parse(b"bytes=0-1,4-5"),
            Err(RangeIgnored::Multiple)
        );
        assert_eq!(ByteRange::parse(b"bytes=5-1"), Err(RangeIgnored::Syntax));
        assert_eq!(ByteRange::parse(b"bytes=a-1"), Err(RangeIgnored::Syntax));
        assert_eq!(ByteRange::parse(b"bytes=+1-2"), Err(RangeIgnored::Syntax));
        assert_eq!(ByteRange::parse(b"bytes=-"), Err(RangeIgnored::Syntax));
        assert_eq!(ByteRange::parse(b"bytes"), Err(RangeIgnored::Syntax));
        assert_eq!(ByteRange::parse(b"bytes=\xff-1"), Err(RangeIgnored::Syntax));
        assert_eq!(
            ByteRange::parse(b"bytes=0-99999999999999999999"),
            Err(RangeIgnored::Syntax)
        );
        assert_eq!(decide(Some(b"bytes=0-1,4-5"), 10), RangeDecision::Full);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn never_panics_and_stays_in_bounds(value in proptest::collection::vec(any::<u8>(), 0..40), len in 0u64..1 << 40) {
            match decide(Some(&value), len) {
                RangeDecision::Partial { start, end } => prop_assert!(start < end && end <= len),
                RangeDecision::Full | RangeDecision::Unsatisfiable => {}
            }
        }

        #[test]
        fn formatted_ranges_round_trip(first in 0u64..1 << 50, span in 0u64..1 << 20, len in 1u64..1 << 51) {
            let last = first + span;
            let header = format!("bytes={first}-{last}");
            prop_assert_eq!(ByteRange::parse(header.as_bytes()), Ok(ByteRange::From { first, last: Some(last) }));
            let expected = if first >= len {
                RangeDecision::Unsatisfiable
            } else {
                RangeDecision::Partial { start: first, end: (last + 1).min(len) }
            };
            prop_assert_eq!(decide(Some(header.as_bytes()), len), expected);
        }
    }
}
