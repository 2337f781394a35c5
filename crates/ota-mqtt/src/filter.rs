//! Subscription filters of a device session.
//!
//! Every server publish goes to one session only, so a filter never routes anything: it only
//! decides whether attribute pushes are wanted and at which QoS a reply goes out. Hence any
//! well-formed filter is accepted — also the `v2/fw/response/+` both official SDKs send,
//! which ThingsBoard refuses (harmlessly, since it delivers chunks anyway).
#![deny(clippy::indexing_slicing)]

/// Why a filter was refused.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// The filter is empty.
    #[error("empty topic filter")]
    Empty,
    /// `+` or `#` shares a level with other characters, or `#` is not the last level.
    #[error("misplaced wildcard in level {level} of the topic filter")]
    MisplacedWildcard {
        /// Zero-based level index.
        level: usize,
    },
    /// The filter contains NUL.
    #[error("topic filter contains NUL")]
    Nul,
}

/// Filters the ThingsBoard device SDKs subscribe to: a session holding one of these keeps a
/// reference to this table instead of a copy of the text (every connected device holds a few
/// filters for as long as it stays connected).
const COMMON: &[&str] = &[
    "v1/devices/me/attributes",
    "v1/devices/me/attributes/response/+",
    "v1/devices/me/rpc/request/+",
    "v1/devices/me/rpc/response/+",
    "v2/fw/response/+",
    "v2/fw/response/+/chunk/+",
    "v2/fw/response/#",
    "v2/fw/error",
    "v2/sw/response/+",
    "v2/sw/response/+/chunk/+",
    "v2/sw/response/#",
    "v2/sw/error",
];

/// A validated MQTT topic filter.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Filter(std::borrow::Cow<'static, str>);

impl Filter {
    /// Validates a filter (MQTT §4.7: `+` and `#` fill a whole level, `#` only last).
    ///
    /// ```
    /// use ota_mqtt::filter::Filter;
    /// let f = Filter::parse("v2/fw/response/+").unwrap();
    /// assert!(f.matches("v2/fw/response/1"));
    /// assert!(!f.matches("v2/fw/response/1/chunk/0"));
    /// assert!(Filter::parse("v2/fw/response/#").unwrap().matches("v2/fw/response/1/chunk/0"));
    /// ```
    pub fn parse(text: &str) -> Result<Self, FilterError> {
        if text.is_empty() {
            return Err(FilterError::Empty);
        }
        if text.contains('\0') {
            return Err(FilterError::Nul);
        }
        let count = text.split('/').count();
        for (level, l) in text.split('/').enumerate() {
            let wild = l.contains(['+', '#']);
            let misplaced = (wild && l.len() != 1) || (l == "#" && level + 1 != count);
            if misplaced {
                return Err(FilterError::MisplacedWildcard { level });
            }
        }
        Ok(Self(match COMMON.iter().find(|c| **c == text) {
            Some(c) => std::borrow::Cow::Borrowed(c),
            None => std::borrow::Cow::Owned(text.to_owned()),
        }))
    }

    /// The filter text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether a topic name matches (topics starting with `$` never match a leading
    /// wildcard).
    pub fn matches(&self, topic: &str) -> bool {
        if topic.starts_with('$') && self.0.starts_with(['+', '#']) {
            return false;
        }
        let mut f = self.0.split('/');
        let mut t = topic.split('/');
        loop {
            match (f.next(), t.next()) {
                (Some("#"), _) | (None, None) => return true,
                (Some("+"), Some(_)) => {}
                (Some(a), Some(b)) if a == b => {}
                _ => return false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sdk_filters_are_accepted_and_match() {
        let f = Filter::parse("v2/fw/response/+/chunk/+").expect("valid");
        assert!(f.matches("v2/fw/response/7/chunk/0"));
        assert!(!f.matches("v2/sw/response/7/chunk/0"));
        let attrs = Filter::parse("v1/devices/me/attributes").expect("valid");
        assert!(attrs.matches("v1/devices/me/attributes"));
        assert!(!attrs.matches("v1/devices/me/attributes/response/1"));
        assert!(
            Filter::parse("#")
                .expect("valid")
                .matches("v1/devices/me/attributes")
        );
        assert!(!Filter::parse("#").expect("valid").matches("$SYS/x"));
        assert!(
            Filter::parse("v1/devices/me/#")
                .expect("valid")
                .matches("v1/devices/me")
        );
    }

    #[test]
    fn bad_filters_get_their_error() {
        assert_eq!(Filter::parse(""), Err(FilterError::Empty));
        assert_eq!(
            Filter::parse("v2/fw/#/x"),
            Err(FilterError::MisplacedWildcard { level: 2 })
        );
        assert_eq!(
            Filter::parse("v2/fw+"),
            Err(FilterError::MisplacedWildcard { level: 1 })
        );
        assert_eq!(Filter::parse("a\0"), Err(FilterError::Nul));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn a_topic_matches_itself(levels in proptest::collection::vec("[a-z0-9]{0,4}", 1..6)) {
            let topic = levels.join("/");
            prop_assume!(!topic.is_empty());
            let f = Filter::parse(&topic).expect("a topic name is a filter");
            prop_assert_eq!(f.as_str(), topic.as_str());
            prop_assert!(f.matches(&topic));
        }

        #[test]
        fn never_panics(text in "[a-z/+#\\x00$]{0,12}", topic in "[a-z/$]{0,12}") {
            if let Ok(f) = Filter::parse(&text) {
                let _ = f.matches(&topic);
            }
        }
    }
}
