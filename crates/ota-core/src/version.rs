//! Heap-free semantic versions (semver 2.0) and the "is this an update?" policies of Sming,
//! ThingsBoard and anti-rollback.
//!
//! ```
//! use ota_core::version::{Version, Decision, sming};
//!
//! let running = Version::parse("4.3.7").unwrap();
//! let offered = Version::parse("4.3.8-rc.1+build.5").unwrap();
//! assert!(offered > running);
//! assert_eq!(offered.pre(), Some("rc.1"));
//! assert_eq!(sming(&running, 4, 3, 8), Decision::Update);
//! assert_eq!(sming(&running, 4, 3, 7), Decision::Same);
//! ```
//!
//! Numbers are `u32`: every version scheme this stack meets fits (Sming's default patch is
//! Unix seconds, good until 2106), it keeps [`Version`] and the updater state small on
//! devices, and a number that does not fit is an input error ([`VersionError::Overflow`])
//! rather than a silent truncation. Conversions to and from `semver::Version` (whose numbers
//! are `u64`) are available with the `alloc` feature.
#![deny(clippy::indexing_slicing)]

use core::cmp::Ordering;
use core::fmt;

/// One of the three numeric components of a [`Version`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Part {
    /// The major number.
    Major,
    /// The minor number.
    Minor,
    /// The patch number.
    Patch,
    /// The pre-release (after `-`).
    Pre,
    /// The build metadata (after `+`).
    Build,
}

impl Part {
    /// The lower-case name used in error messages.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Major => "major",
            Self::Minor => "minor",
            Self::Patch => "patch",
            Self::Pre => "pre-release",
            Self::Build => "build metadata",
        }
    }
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a version string is not a semver 2.0 version.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum VersionError {
    /// The input was empty.
    #[error("empty version string")]
    Empty,
    /// The input is not UTF-8 (only from [`Version::parse_bytes`]).
    #[error("version is not UTF-8 (invalid byte at offset {offset})")]
    NotUtf8 {
        /// Offset of the first invalid byte.
        offset: usize,
    },
    /// A numeric component is missing (e.g. `"4.3"` has no patch).
    #[error("version has no {part} number")]
    Missing {
        /// Which component is missing.
        part: Part,
    },
    /// A numeric component contains something other than ASCII digits.
    #[error("{part} number contains {found:?} at offset {offset}, expected a digit")]
    NotNumeric {
        /// Which component.
        part: Part,
        /// The offending character.
        found: char,
        /// Byte offset in the input.
        offset: usize,
    },
    /// A numeric component (or numeric pre-release identifier) has a leading zero.
    #[error("{part} at offset {offset} has a leading zero")]
    LeadingZero {
        /// Which component.
        part: Part,
        /// Byte offset of the number in the input.
        offset: usize,
    },
    /// A numeric component does not fit in `u32`.
    #[error("{part} number at offset {offset} exceeds {max}", max = u32::MAX)]
    Overflow {
        /// Which component.
        part: Part,
        /// Byte offset of the number in the input.
        offset: usize,
    },
    /// A pre-release or build identifier is empty (`1.0.0-`, `1.0.0-a..b`).
    #[error("empty {part} identifier at offset {offset}")]
    EmptyIdentifier {
        /// [`Part::Pre`] or [`Part::Build`].
        part: Part,
        /// Byte offset where the identifier should start.
        offset: usize,
    },
    /// A pre-release or build identifier contains a character outside `[0-9A-Za-z-]`.
    #[error("{part} contains {found:?} at offset {offset}, expected [0-9A-Za-z-]")]
    InvalidCharacter {
        /// [`Part::Pre`] or [`Part::Build`].
        part: Part,
        /// The offending character.
        found: char,
        /// Byte offset in the input.
        offset: usize,
    },
}

/// A semantic version borrowing its pre-release and build metadata from the parsed text.
///
/// Ordering ([`Ord`]) is semver precedence, with build metadata compared last (lexically) only
/// to keep `Ord` consistent with `Eq`; use [`Version::cmp_precedence`] for pure semver
/// precedence, where build metadata is ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Version<'a> {
    /// Major number.
    pub major: u32,
    /// Minor number.
    pub minor: u32,
    /// Patch number.
    pub patch: u32,
    pre: Option<&'a str>,
    build: Option<&'a str>,
}

impl<'a> Version<'a> {
    /// A release version without pre-release or build metadata.
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Self {
            major,
            minor,
            patch,
            pre: None,
            build: None,
        }
    }

    /// Parses a semver 2.0 version (`MAJOR.MINOR.PATCH[-PRE][+BUILD]`), strictly: no `v`
    /// prefix, no leading zeros, no whitespace.
    pub fn parse(s: &'a str) -> Result<Self, VersionError> {
        if s.is_empty() {
            return Err(VersionError::Empty);
        }
        let (core_and_pre, build) = match s.find('+') {
            Some(i) => (
                s.get(..i).unwrap_or(""),
                Some((i + 1, s.get(i + 1..).unwrap_or(""))),
            ),
            None => (s, None),
        };
        let (core, pre) = match core_and_pre.find('-') {
            Some(i) => (
                core_and_pre.get(..i).unwrap_or(""),
                Some((i + 1, core_and_pre.get(i + 1..).unwrap_or(""))),
            ),
            None => (core_and_pre, None),
        };
        let mut offset = 0;
        let mut numbers = [0u32; 3];
        let mut fields = core.split('.');
        for (part, slot) in [Part::Major, Part::Minor, Part::Patch]
            .into_iter()
            .zip(&mut numbers)
        {
            let Some(text) = fields.next() else {
                return Err(VersionError::Missing { part });
            };
            *slot = parse_number(text, part, offset)?;
            offset += text.len() + 1;
        }
        if fields.next().is_some() {
            // "1.2.3.4": the fourth dot is where a pre-release or build should start.
            let at = offset - 1;
            return Err(VersionError::NotNumeric {
                part: Part::Patch,
                found: '.',
                offset: at,
            });
        }
        if let Some((at, text)) = pre {
            check_identifiers(text, Part::Pre, at)?;
        }
        if let Some((at, text)) = build {
            check_identifiers(text, Part::Build, at)?;
        }
        let [major, minor, patch] = numbers;
        Ok(Self {
            major,
            minor,
            patch,
            pre: pre.map(|(_, t)| t),
            build: build.map(|(_, t)| t),
        })
    }

    /// Parses from bytes (e.g. an MQTT payload), rejecting non-UTF-8 input.
    pub fn parse_bytes(b: &'a [u8]) -> Result<Self, VersionError> {
        let s = core::str::from_utf8(b).map_err(|e| VersionError::NotUtf8 {
            offset: e.valid_up_to(),
        })?;
        Self::parse(s)
    }

    /// The pre-release (text after `-`, without it), if any.
    pub const fn pre(&self) -> Option<&'a str> {
        self.pre
    }

    /// The build metadata (text after `+`, without it), if any.
    pub const fn build(&self) -> Option<&'a str> {
        self.build
    }

    /// Whether this is a pre-release (has a `-` part).
    pub const fn is_prerelease(&self) -> bool {
        self.pre.is_some()
    }

    /// Semver 2.0 precedence: numbers, then pre-release (a pre-release is lower than the
    /// release; identifiers compared one by one, numeric ones by value and below alphanumeric
    /// ones); build metadata is ignored.
    pub fn cmp_precedence(&self, other: &Self) -> Ordering {
        (self.major, self.minor, self.patch)
            .cmp(&(other.major, other.minor, other.patch))
            .then_with(|| match (self.pre, other.pre) {
                (None, None) => Ordering::Equal,
                (None, Some(_)) => Ordering::Greater,
                (Some(_), None) => Ordering::Less,
                (Some(a), Some(b)) => cmp_prerelease(a, b),
            })
    }

    /// Writes the canonical text (`1.2.3-rc.1+b5`) to any [`fmt::Write`].
    pub fn write_to<W: fmt::Write>(&self, w: &mut W) -> fmt::Result {
        write!(w, "{}.{}.{}", self.major, self.minor, self.patch)?;
        if let Some(pre) = self.pre {
            w.write_char('-')?;
            w.write_str(pre)?;
        }
        if let Some(build) = self.build {
            w.write_char('+')?;
            w.write_str(build)?;
        }
        Ok(())
    }
}

impl PartialOrd for Version<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Version<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.cmp_precedence(other)
            .then_with(|| self.build.cmp(&other.build))
    }
}

impl fmt::Display for Version<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_to(f)
    }
}

fn parse_number(text: &str, part: Part, offset: usize) -> Result<u32, VersionError> {
    if text.is_empty() {
        return Err(VersionError::Missing { part });
    }
    let mut value: u32 = 0;
    for (i, c) in text.char_indices() {
        let Some(d) = c.to_digit(10) else {
            return Err(VersionError::NotNumeric {
                part,
                found: c,
                offset: offset + i,
            });
        };
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_add(d))
            .ok_or(VersionError::Overflow { part, offset })?;
    }
    if text.len() > 1 && text.starts_with('0') {
        return Err(VersionError::LeadingZero { part, offset });
    }
    Ok(value)
}

fn check_identifiers(text: &str, part: Part, offset: usize) -> Result<(), VersionError> {
    let mut at = offset;
    for ident in text.split('.') {
        if ident.is_empty() {
            return Err(VersionError::EmptyIdentifier { part, offset: at });
        }
        for (i, c) in ident.char_indices() {
            if !(c.is_ascii_alphanumeric() || c == '-') {
                return Err(VersionError::InvalidCharacter {
                    part,
                    found: c,
                    offset: at + i,
                });
            }
        }
        let numeric = ident.bytes().all(|b| b.is_ascii_digit());
        if part == Part::Pre && numeric && ident.len() > 1 && ident.starts_with('0') {
            return Err(VersionError::LeadingZero { part, offset: at });
        }
        at += ident.len() + 1;
    }
    Ok(())
}

fn cmp_prerelease(a: &str, b: &str) -> Ordering {
    let mut xs = a.split('.');
    let mut ys = b.split('.');
    loop {
        match (xs.next(), ys.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => {
                let xn = x.bytes().all(|c| c.is_ascii_digit());
                let yn = y.bytes().all(|c| c.is_ascii_digit());
                let ord = match (xn, yn) {
                    // Without leading zeros, a longer digit string is a larger number; this
                    // compares numbers of any size without parsing them.
                    (true, true) => x.len().cmp(&y.len()).then_with(|| x.cmp(y)),
                    (true, false) => Ordering::Less,
                    (false, true) => Ordering::Greater,
                    (false, false) => x.cmp(y),
                };
                if ord != Ordering::Equal {
                    return ord;
                }
            }
        }
    }
}

/// The outcome of an update policy.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Decision {
    /// Install the offer.
    Update,
    /// The offer is what is already running.
    Same,
    /// The offer is older than what is running.
    Older,
    /// The offer belongs to another release line (Sming: another `major.minor`).
    OtherLine,
    /// The offer is below the anti-rollback minimum.
    BelowMinimum,
}

impl Decision {
    /// Whether the decision is [`Decision::Update`].
    pub const fn is_update(self) -> bool {
        matches!(self, Self::Update)
    }
}

/// Sming's rule, made safe: an offer on topic `a/{app}/u/{major}.{minor}` with patch `patch`
/// updates only a device running the same `major.minor` with a strictly lower patch.
///
/// Sming's own device code (`OtaUpgradeMqtt`) also installs an **equal** patch; since the
/// deployer publishes retained, a device whose new firmware carries the announced patch then
/// re-flashes itself on every boot. This policy answers [`Decision::Same`] instead.
pub fn sming(current: &Version<'_>, major: u32, minor: u32, patch: u32) -> Decision {
    if (current.major, current.minor) != (major, minor) {
        return Decision::OtherLine;
    }
    match patch.cmp(&current.patch) {
        Ordering::Greater => Decision::Update,
        Ordering::Equal => Decision::Same,
        Ordering::Less => Decision::Older,
    }
}

/// ThingsBoard's rule: update when the offered title **or** version string differs from the
/// running one. Versions are free strings there (`v0`, `1.1`, `2024-07-build3`), compared
/// exactly (case-sensitive), never ordered, so this never answers [`Decision::Older`].
pub fn thingsboard(
    current_title: &str,
    current_version: &str,
    offered_title: &str,
    offered_version: &str,
) -> Decision {
    if current_title == offered_title && current_version == offered_version {
        Decision::Same
    } else {
        Decision::Update
    }
}

/// Anti-rollback: never install anything whose precedence is below `minimum`.
/// Returns [`Decision::BelowMinimum`] or [`Decision::Update`]; combine with a transport policy.
pub fn anti_rollback(minimum: &Version<'_>, offered: &Version<'_>) -> Decision {
    if offered.cmp_precedence(minimum) == Ordering::Less {
        Decision::BelowMinimum
    } else {
        Decision::Update
    }
}

/// Why a `semver::Version` does not fit a [`Version`].
#[cfg(feature = "alloc")]
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{part} number {value} exceeds {max}", max = u32::MAX)]
pub struct SemverOverflow {
    /// Which component is too large.
    pub part: Part,
    /// Its value.
    pub value: u64,
}

#[cfg(feature = "alloc")]
impl From<Version<'_>> for semver::Version {
    fn from(v: Version<'_>) -> Self {
        // Our grammar is a subset of semver's, so these cannot fail; empty is the safe fallback.
        let pre = v
            .pre
            .and_then(|p| semver::Prerelease::new(p).ok())
            .unwrap_or(semver::Prerelease::EMPTY);
        let build = v
            .build
            .and_then(|b| semver::BuildMetadata::new(b).ok())
            .unwrap_or(semver::BuildMetadata::EMPTY);
        semver::Version {
            major: u64::from(v.major),
            minor: u64::from(v.minor),
            patch: u64::from(v.patch),
            pre,
            build,
        }
    }
}

#[cfg(feature = "alloc")]
impl<'a> TryFrom<&'a semver::Version> for Version<'a> {
    type Error = SemverOverflow;

    fn try_from(v: &'a semver::Version) -> Result<Self, Self::Error> {
        let num =
            |part, value: u64| u32::try_from(value).map_err(|_| SemverOverflow { part, value });
        Ok(Self {
            major: num(Part::Major, v.major)?,
            minor: num(Part::Minor, v.minor)?,
            patch: num(Part::Patch, v.patch)?,
            pre: (!v.pre.is_empty()).then(|| v.pre.as_str()),
            build: (!v.build.is_empty()).then(|| v.build.as_str()),
        })
    }
}

/// Parses arbitrary bytes; on success re-formats, re-parses and asserts both are equal and
/// that the text is reproduced exactly (the grammar is canonical). Used by the fuzz target
/// and the corpus-replay test.
#[doc(hidden)]
pub fn fuzz_check(data: &[u8]) {
    let Ok(v) = Version::parse_bytes(data) else {
        return;
    };
    let mut buf = heapless::String::<512>::new();
    if v.write_to(&mut buf).is_err() {
        // Longer than the scratch buffer: nothing to compare.
        return;
    }
    assert_eq!(buf.as_str().as_bytes(), data, "version text not reproduced");
    let again = Version::parse(buf.as_str());
    assert_eq!(again, Ok(v));
    assert_eq!(again.map(|a| a.cmp(&v)), Ok(Ordering::Equal));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn semver_spec_precedence_chain() {
        let chain = [
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-alpha.beta",
            "1.0.0-beta",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-rc.1",
            "1.0.0",
            "2.0.0",
            "2.1.0",
            "2.1.1",
        ];
        for pair in chain.windows(2) {
            let [a, b] = pair else { continue };
            let (a, b) = (Version::parse(a).unwrap(), Version::parse(b).unwrap());
            assert_eq!(a.cmp_precedence(&b), Ordering::Less, "{a} < {b}");
            assert!(a < b);
        }
    }

    #[test]
    fn build_metadata_ignored_for_precedence() {
        let a = Version::parse("1.0.0+a").unwrap();
        let b = Version::parse("1.0.0+b").unwrap();
        assert_eq!(a.cmp_precedence(&b), Ordering::Equal);
        assert_ne!(a, b);
    }
}
