//! The fleet's firmware image: a 32-byte header naming the image's version and the outcome
//! of its self-test, then a deterministic body.
//!
//! ```text
//! 0..8    magic "OTAFLEET"
//! 8..24   version, ASCII, NUL-padded ("1.1.0")
//! 24      self-test outcome: 1 = passes, 0 = fails
//! 25..32  reserved (0)
//! 32..    body
//! ```
//!
//! A device's running version is read from these bytes in the slot it booted, never from
//! what the server offered.

/// Length of the header.
pub const HEADER_LEN: usize = 32;
/// The header's magic.
pub const MAGIC: &[u8; 8] = b"OTAFLEET";
const VERSION_AT: usize = 8;
const VERSION_LEN: usize = 16;
const SELF_TEST_AT: usize = 24;

/// Why bytes are not a fleet image header.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// Fewer than [`HEADER_LEN`] bytes.
    #[error("header is {0} bytes, expected {HEADER_LEN}")]
    Truncated(usize),
    /// The magic is not `OTAFLEET`.
    #[error("magic is {0:02x?}, expected \"OTAFLEET\"")]
    BadMagic([u8; 8]),
    /// The version field is empty or not ASCII.
    #[error("version field {0:02x?} is not ASCII text")]
    BadVersion([u8; VERSION_LEN]),
    /// The self-test byte is neither 0 nor 1.
    #[error("self-test byte is {0}, expected 0 or 1")]
    BadSelfTest(u8),
}

/// Why an image cannot be built.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// The version is empty, longer than 16 bytes or not ASCII.
    #[error("version {0:?} must be 1..=16 ASCII bytes")]
    Version(String),
    /// The length leaves no room for the header.
    #[error("an image of {0} bytes has no room for its {HEADER_LEN}-byte header")]
    TooShort(usize),
}

/// What an image header says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The image's version.
    pub version: String,
    /// Whether the image's self-test passes.
    pub self_test_passes: bool,
}

impl Header {
    /// Parses the first [`HEADER_LEN`] bytes of a slot.
    pub fn parse(bytes: &[u8]) -> Result<Self, HeaderError> {
        let head: &[u8; HEADER_LEN] = bytes
            .get(..HEADER_LEN)
            .and_then(|h| h.try_into().ok())
            .ok_or(HeaderError::Truncated(bytes.len()))?;
        let (magic, rest) = head.split_at(MAGIC.len());
        if magic != MAGIC {
            let mut m = [0u8; 8];
            m.copy_from_slice(magic);
            return Err(HeaderError::BadMagic(m));
        }
        let (field, rest) = rest.split_at(VERSION_LEN);
        let text = field.split(|&b| b == 0).next().unwrap_or_default();
        let version = match std::str::from_utf8(text) {
            Ok(v) if v.is_ascii() && !v.is_empty() => v.to_owned(),
            _ => {
                let mut f = [0u8; VERSION_LEN];
                f.copy_from_slice(field);
                return Err(HeaderError::BadVersion(f));
            }
        };
        let self_test_passes = match rest.first().copied().unwrap_or(0xFF) {
            0 => false,
            1 => true,
            other => return Err(HeaderError::BadSelfTest(other)),
        };
        Ok(Self {
            version,
            self_test_passes,
        })
    }
}

/// Builds an image of `len` bytes for `version` whose self-test passes or not.
pub fn build(version: &str, self_test_passes: bool, len: usize) -> Result<Vec<u8>, BuildError> {
    if !version.is_ascii() || version.is_empty() || version.len() > VERSION_LEN {
        return Err(BuildError::Version(version.to_owned()));
    }
    if len < HEADER_LEN {
        return Err(BuildError::TooShort(len));
    }
    let mut image: Vec<u8> = (0..len)
        .map(|i| u8::try_from(i.wrapping_mul(31) % 251).unwrap_or(0))
        .collect();
    image[..HEADER_LEN].fill(0);
    image[..MAGIC.len()].copy_from_slice(MAGIC);
    image[VERSION_AT..VERSION_AT + version.len()].copy_from_slice(version.as_bytes());
    image[SELF_TEST_AT] = u8::from(self_test_passes);
    Ok(image)
}

#[cfg(test)]
mod tests {
    use super::{BuildError, HEADER_LEN, Header, HeaderError, build};

    #[test]
    fn built_images_parse_back() {
        let image = build("1.1.0", true, 1000).unwrap();
        assert_eq!(image.len(), 1000);
        assert_eq!(
            Header::parse(&image),
            Ok(Header {
                version: "1.1.0".into(),
                self_test_passes: true
            })
        );
        let bad = build("1.2.0", false, HEADER_LEN).unwrap();
        assert_eq!(Header::parse(&bad).map(|h| h.self_test_passes), Ok(false));
    }

    #[test]
    fn bad_headers_say_what_is_wrong() {
        assert_eq!(Header::parse(&[0u8; 5]), Err(HeaderError::Truncated(5)));
        assert_eq!(
            Header::parse(&[0xFF; HEADER_LEN]),
            Err(HeaderError::BadMagic([0xFF; 8]))
        );
        let mut image = build("1.0.0", true, 64).unwrap();
        image[24] = 7;
        assert_eq!(Header::parse(&image), Err(HeaderError::BadSelfTest(7)));
        let mut image = build("1.0.0", true, 64).unwrap();
        image[8..24].fill(0);
        assert_eq!(Header::parse(&image), Err(HeaderError::BadVersion([0; 16])));
    }

    #[test]
    fn bad_build_requests_are_refused() {
        assert_eq!(build("", true, 64), Err(BuildError::Version(String::new())));
        assert_eq!(
            build("1.0.0-a-very-long-tag", true, 64),
            Err(BuildError::Version("1.0.0-a-very-long-tag".into()))
        );
        assert_eq!(build("1.0.0", true, 31), Err(BuildError::TooShort(31)));
    }
}
