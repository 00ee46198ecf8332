//! Topic names, topic filters, shared subscriptions and filter matching
//! (MQTT 5.0 §4.7–4.8, 3.1.1 §4.7).
//!
//! These functions check only what the topic rules say; UTF-8 and U+0000 rules for
//! strings received on the wire are checked by the decoder before topics get here,
//! but [`validate_topic_name`] and [`validate_topic_filter`] also reject U+0000 so
//! they are safe on strings from anywhere.

/// Prefix of a shared subscription filter: `$share/{group}/{filter}`.
pub const SHARED_PREFIX: &str = "$share/";

/// Longest topic name or filter: a two-byte length prefix limits it.
pub const MAX_TOPIC_LEN: usize = 65_535;

/// Why a topic name or filter is invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TopicError {
    /// Zero length.
    #[error("topic is empty")]
    Empty,
    /// Longer than 65 535 bytes.
    #[error("topic is longer than 65535 bytes")]
    TooLong,
    /// Contains U+0000.
    #[error("topic contains U+0000")]
    NullCharacter,
    /// A topic name contains `+` or `#`.
    #[error("topic name contains a wildcard")]
    Wildcard,
    /// A filter has `#` that is not alone in the last level, or `+` not alone in
    /// its level.
    #[error("wildcard not alone in its level, or `#` not last")]
    MisplacedWildcard,
    /// `$share/` filter whose share name is empty or contains `+` or `#`.
    #[error("invalid share name")]
    InvalidShareName,
    /// `$share/{group}` without a filter after the share name.
    #[error("shared subscription without a topic filter")]
    MissingSharedFilter,
}

fn check_length(s: &str) -> Result<(), TopicError> {
    if s.is_empty() {
        return Err(TopicError::Empty);
    }
    if s.len() > MAX_TOPIC_LEN {
        return Err(TopicError::TooLong);
    }
    Ok(())
}

fn check_common(s: &str) -> Result<(), TopicError> {
    check_length(s)?;
    // A plain loop: `contains` would link the word-at-a-time `memchr` into firmware.
    if s.bytes().any(|b| b == 0) {
        return Err(TopicError::NullCharacter);
    }
    Ok(())
}

/// Checks a topic name (what PUBLISH carries): non-empty, no wildcards.
pub fn validate_topic_name(name: &str) -> Result<(), TopicError> {
    check_length(name)?;
    // One pass for NUL and wildcards (every PUBLISH is checked). A NUL anywhere is the
    // error reported, even after a wildcard, as `check_common` would report it first.
    let mut wildcard = false;
    for b in name.bytes() {
        match b {
            0 => return Err(TopicError::NullCharacter),
            b'+' | b'#' => wildcard = true,
            _ => {}
        }
    }
    if wildcard {
        Err(TopicError::Wildcard)
    } else {
        Ok(())
    }
}

/// Checks a topic filter (what SUBSCRIBE carries): non-empty, `#` only as the
/// whole last level, `+` only as a whole level. A `$share/{group}/{filter}` filter
/// is valid when [`shared_subscription`] accepts it.
pub fn validate_topic_filter(filter: &str) -> Result<(), TopicError> {
    if shared_subscription(filter)?.is_some() {
        return Ok(());
    }
    validate_plain_filter(filter)
}

/// [`validate_topic_filter`] without the shared-subscription form.
pub(crate) fn validate_plain_filter(filter: &str) -> Result<(), TopicError> {
    check_common(filter)?;
    // One pass over the bytes (no `split`, which links the string searcher into
    // firmware): a wildcard must fill its level, and `#` must also end the filter.
    let bytes = filter.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b != b'+' && b != b'#' {
            continue;
        }
        let starts_level = i == 0 || bytes.get(i - 1) == Some(&b'/');
        let next = bytes.get(i + 1);
        let ends_level = next.is_none() || next == Some(&b'/');
        if !starts_level || !ends_level || (b == b'#' && next.is_some()) {
            return Err(TopicError::MisplacedWildcard);
        }
    }
    Ok(())
}

/// A shared subscription filter split into its parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedSubscription<'a> {
    /// The share name: members of the same group share the messages.
    pub group: &'a str,
    /// The topic filter the group subscribes to.
    pub filter: &'a str,
}

/// Splits `$share/{group}/{filter}`; `Ok(None)` when `filter` does not start with
/// `$share/` (an ordinary filter, not validated here).
///
/// The share name must be non-empty and free of `+` and `#` (a `/` ends it), and
/// the rest must be a valid, non-empty topic filter (MQTT 5.0 §4.8.2).
pub fn shared_subscription(filter: &str) -> Result<Option<SharedSubscription<'_>>, TopicError> {
    // Byte by byte: `strip_prefix` would link `memcmp` into firmware.
    let prefix = SHARED_PREFIX.as_bytes();
    let is_shared =
        filter.len() >= prefix.len() && filter.bytes().zip(prefix).all(|(a, &b)| a == b);
    let Some(rest) = filter.get(prefix.len()..).filter(|_| is_shared) else {
        return Ok(None);
    };
    let Some(slash) = rest.bytes().position(|b| b == b'/') else {
        return Err(if rest.is_empty() {
            TopicError::InvalidShareName
        } else {
            TopicError::MissingSharedFilter
        });
    };
    // `slash` indexes an ASCII byte, so both halves are on character boundaries.
    let (group, inner) = (
        rest.get(..slash).unwrap_or_default(),
        rest.get(slash + 1..).unwrap_or_default(),
    );
    if group.is_empty() || group.bytes().any(|b| b == b'+' || b == b'#' || b == 0) {
        return Err(TopicError::InvalidShareName);
    }
    if inner.is_empty() {
        return Err(TopicError::MissingSharedFilter);
    }
    validate_plain_filter(inner)?;
    Ok(Some(SharedSubscription {
        group,
        filter: inner,
    }))
}

/// Whether the topic filter `filter` matches the topic name `topic`.
///
/// Both are assumed valid (a shared subscription's `$share/{group}/` prefix
/// removed). Topics starting with `$` are not matched by a filter starting with a
/// wildcard (MQTT 5.0 §4.7.2), and `sport/#` also matches `sport` (§4.7.1.2).
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut filter_levels = filter.split('/');
    let mut topic_levels = topic.split('/');
    loop {
        match (filter_levels.next(), topic_levels.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(f), Some(t)) if f == t => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        assert_eq!(validate_topic_name("a/b/c"), Ok(()));
        assert_eq!(validate_topic_name("/"), Ok(()));
        assert_eq!(validate_topic_name("$SYS/uptime"), Ok(()));
        assert_eq!(validate_topic_name(""), Err(TopicError::Empty));
        assert_eq!(validate_topic_name("a/+/c"), Err(TopicError::Wildcard));
        assert_eq!(validate_topic_name("a/#"), Err(TopicError::Wildcard));
        assert_eq!(validate_topic_name("a\0b"), Err(TopicError::NullCharacter));
        assert_eq!(validate_topic_name("a/+\0"), Err(TopicError::NullCharacter));
    }

    #[test]
    fn topic_filters() {
        for ok in [
            "#",
            "+",
            "a/#",
            "a/+/c",
            "+/+",
            "/+",
            "a//b",
            "$share/g/a/#",
        ] {
            assert_eq!(validate_topic_filter(ok), Ok(()), "{ok}");
        }
        for bad in ["a#", "a/#/b", "a/b#", "a+/b", "+a", "#/a", "a/++"] {
            assert_eq!(
                validate_topic_filter(bad),
                Err(TopicError::MisplacedWildcard),
                "{bad}"
            );
        }
        assert_eq!(validate_topic_filter(""), Err(TopicError::Empty));
    }

    #[test]
    fn shared_subscriptions() {
        assert_eq!(
            shared_subscription("$share/workers/jobs/+"),
            Ok(Some(SharedSubscription {
                group: "workers",
                filter: "jobs/+"
            }))
        );
        assert_eq!(
            shared_subscription("$share/g//x"),
            Ok(Some(SharedSubscription {
                group: "g",
                filter: "/x"
            }))
        );
        assert_eq!(shared_subscription("jobs/+"), Ok(None));
        assert_eq!(shared_subscription("$sharex/g/a"), Ok(None));
        assert_eq!(
            shared_subscription("$share//a"),
            Err(TopicError::InvalidShareName)
        );
        assert_eq!(
            shared_subscription("$share/"),
            Err(TopicError::InvalidShareName)
        );
        assert_eq!(
            shared_subscription("$share/g+/a"),
            Err(TopicError::InvalidShareName)
        );
        assert_eq!(
            shared_subscription("$share/#/a"),
            Err(TopicError::InvalidShareName)
        );
        assert_eq!(
            shared_subscription("$share/g"),
            Err(TopicError::MissingSharedFilter)
        );
        assert_eq!(
            shared_subscription("$share/g/"),
            Err(TopicError::MissingSharedFilter)
        );
        assert_eq!(
            shared_subscription("$share/g/a#"),
            Err(TopicError::MisplacedWildcard)
        );
    }

    #[test]
    fn matching_follows_the_specification_examples() {
        assert!(matches("sport/tennis/player1/#", "sport/tennis/player1"));
        assert!(matches(
            "sport/tennis/player1/#",
            "sport/tennis/player1/ranking"
        ));
        assert!(matches("sport/#", "sport"));
        assert!(matches("#", "sport/tennis"));
        assert!(matches("sport/tennis/+", "sport/tennis/player1"));
        assert!(!matches("sport/tennis/+", "sport/tennis/player1/ranking"));
        assert!(!matches("sport/+", "sport"));
        assert!(matches("sport/+", "sport/"));
        assert!(matches("+/+", "/finance"));
        assert!(matches("/+", "/finance"));
        assert!(!matches("+", "/finance"));
        assert!(matches("a/b", "a/b"));
        assert!(!matches("a/b", "a/b/c"));
        assert!(!matches("a/b/c", "a/b"));
    }

    #[test]
    fn dollar_topics_are_not_matched_by_leading_wildcards() {
        assert!(!matches("#", "$SYS/uptime"));
        assert!(!matches("+/uptime", "$SYS/uptime"));
        assert!(matches("$SYS/#", "$SYS/uptime"));
        assert!(matches("$SYS/+", "$SYS/uptime"));
    }
}
