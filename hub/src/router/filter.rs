//! Topic filter syntax: validation, `$share/{group}/{filter}` parsing and level iteration.
//!
//! Owns the rules of MQTT 3.1.1 §4.7 / 5.0 §4.7 and §4.8.2 that depend only on the
//! filter string. Nothing here allocates: a parsed [`TopicFilter`] borrows its input.

use super::RouterError;

/// Separator between topic levels.
pub(crate) const LEVEL_SEPARATOR: char = '/';
/// The single-level wildcard, alone in its level.
pub(crate) const SINGLE_LEVEL: &str = "+";
/// The multi-level wildcard, alone in the last level.
pub(crate) const MULTI_LEVEL: &str = "#";
/// Prefix of a shared subscription filter (MQTT 5.0 §4.8.2).
const SHARE_PREFIX: &str = "$share/";

/// Most levels a subscription filter may have.
///
/// Each level of a stored filter costs a trie node (tens of bytes) while costing the client
/// one byte on the wire, so without a bound one SUBSCRIBE of `////…` could pin megabytes.
/// Real hierarchies are a handful of levels deep; other brokers cap them similarly (EMQX:
/// `max_topic_levels = 128`).
pub const MAX_FILTER_LEVELS: usize = 128;

/// A validated subscription filter, split into its optional share group and the filter proper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicFilter<'a> {
    share_group: Option<&'a str>,
    filter: &'a str,
}

impl<'a> TopicFilter<'a> {
    /// Validates `raw` as it appears in SUBSCRIBE or UNSUBSCRIBE.
    ///
    /// `$share/{group}/{filter}` is recognised as a shared subscription; any other filter,
    /// including other `$`-prefixed ones such as `$SYS/#`, is an ordinary one.
    pub fn parse(raw: &'a str) -> Result<Self, RouterError> {
        let (share_group, filter) = match raw.strip_prefix(SHARE_PREFIX) {
            Some(rest) => {
                let Some((group, filter)) = rest.split_once(LEVEL_SEPARATOR) else {
                    return Err(if rest.is_empty() {
                        RouterError::EmptyShareGroup
                    } else {
                        RouterError::MissingSharedFilter
                    });
                };
                if group.is_empty() {
                    return Err(RouterError::EmptyShareGroup);
                }
                if group.contains(['+', '#']) {
                    return Err(RouterError::WildcardInShareGroup);
                }
                (Some(group), filter)
            }
            None => (None, raw),
        };
        validate_plain(filter)?;
        Ok(Self {
            share_group,
            filter,
        })
    }

    /// The share group name of a `$share/...` filter, `None` for an ordinary filter.
    pub fn share_group(&self) -> Option<&'a str> {
        self.share_group
    }

    /// The filter that topics are matched against (without the `$share/{group}/` prefix).
    pub fn filter(&self) -> &'a str {
        self.filter
    }

    /// Whether this is a shared subscription.
    pub fn is_shared(&self) -> bool {
        self.share_group.is_some()
    }
}

/// Checks the wildcard placement rules of a filter without a share prefix.
fn validate_plain(filter: &str) -> Result<(), RouterError> {
    if filter.is_empty() {
        return Err(RouterError::EmptyFilter);
    }
    let mut levels = filter.split(LEVEL_SEPARATOR).enumerate().peekable();
    while let Some((index, level)) = levels.next() {
        if index >= MAX_FILTER_LEVELS {
            return Err(RouterError::TooManyLevels {
                max: MAX_FILTER_LEVELS,
            });
        }
        if level == MULTI_LEVEL {
            if levels.peek().is_some() {
                return Err(RouterError::MultiLevelWildcardNotLast);
            }
        } else if level != SINGLE_LEVEL && level.contains(['+', '#']) {
            return Err(RouterError::WildcardNotAlone);
        }
    }
    Ok(())
}

/// Whether a topic name is one of the `$`-topics that filters starting with a wildcard must
/// not match (MQTT 5.0 §4.7.2).
pub(crate) fn is_dollar_topic(topic: &str) -> bool {
    topic.starts_with('$')
}

/// Splits off the level that starts at byte `pos` of `s`.
///
/// Returns the level and the byte position of the next level, or `None` when this was the
/// last level. Positions always sit right after a `/`, so slicing cannot split a character.
pub(crate) fn level_at(s: &str, pos: usize) -> (&str, Option<usize>) {
    let rest = s.get(pos..).unwrap_or_default();
    match rest.find(LEVEL_SEPARATOR) {
        Some(i) => (&rest[..i], Some(pos + i + 1)),
        None => (rest, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_filters_with_well_placed_wildcards_are_valid() {
        for raw in [
            "a", "a/b", "+", "#", "a/+/c", "a/#", "+/+", "/", "a//b", "/a", "$SYS/#",
        ] {
            let f = TopicFilter::parse(raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
            assert_eq!(f.filter(), raw);
            assert!(!f.is_shared());
        }
    }

    #[test]
    fn misplaced_wildcards_are_rejected() {
        assert_eq!(TopicFilter::parse(""), Err(RouterError::EmptyFilter));
        assert_eq!(
            TopicFilter::parse("a/#/b"),
            Err(RouterError::MultiLevelWildcardNotLast)
        );
        assert_eq!(
            TopicFilter::parse("#/a"),
            Err(RouterError::MultiLevelWildcardNotLast)
        );
        assert_eq!(TopicFilter::parse("a#"), Err(RouterError::WildcardNotAlone));
        assert_eq!(
            TopicFilter::parse("a/b#"),
            Err(RouterError::WildcardNotAlone)
        );
        assert_eq!(
            TopicFilter::parse("a+/b"),
            Err(RouterError::WildcardNotAlone)
        );
        assert_eq!(
            TopicFilter::parse("a/++"),
            Err(RouterError::WildcardNotAlone)
        );
    }

    #[test]
    fn filters_deeper_than_the_limit_are_rejected() {
        let deepest = vec!["a"; MAX_FILTER_LEVELS].join("/");
        assert!(TopicFilter::parse(&deepest).is_ok());
        assert!(TopicFilter::parse(&format!("$share/g/{deepest}")).is_ok());
        let too_deep = format!("{deepest}/#");
        let expected = Err(RouterError::TooManyLevels {
            max: MAX_FILTER_LEVELS,
        });
        assert_eq!(TopicFilter::parse(&too_deep), expected);
        assert_eq!(TopicFilter::parse(&"/".repeat(MAX_FILTER_LEVELS)), expected);
    }

    #[test]
    fn shared_filters_split_group_and_filter() {
        let f = TopicFilter::parse("$share/workers/jobs/+").unwrap();
        assert_eq!(f.share_group(), Some("workers"));
        assert_eq!(f.filter(), "jobs/+");
        let f = TopicFilter::parse("$share/g/#").unwrap();
        assert_eq!(f.share_group(), Some("g"));
        assert_eq!(f.filter(), "#");
        // "$share" without the separator is an ordinary filter.
        assert_eq!(TopicFilter::parse("$share").unwrap().share_group(), None);
    }

    #[test]
    fn malformed_shared_filters_are_rejected() {
        assert_eq!(
            TopicFilter::parse("$share/"),
            Err(RouterError::EmptyShareGroup)
        );
        assert_eq!(
            TopicFilter::parse("$share//a"),
            Err(RouterError::EmptyShareGroup)
        );
        assert_eq!(
            TopicFilter::parse("$share/g"),
            Err(RouterError::MissingSharedFilter)
        );
        assert_eq!(
            TopicFilter::parse("$share/g/"),
            Err(RouterError::EmptyFilter)
        );
        assert_eq!(
            TopicFilter::parse("$share/g+/a"),
            Err(RouterError::WildcardInShareGroup)
        );
        assert_eq!(
            TopicFilter::parse("$share/#/a"),
            Err(RouterError::WildcardInShareGroup)
        );
        assert_eq!(
            TopicFilter::parse("$share/g/a/#/b"),
            Err(RouterError::MultiLevelWildcardNotLast)
        );
    }

    #[test]
    fn level_at_walks_every_level_including_empty_ones() {
        let topic = "/a//b/";
        let mut levels = Vec::new();
        let mut pos = Some(0);
        while let Some(p) = pos {
            let (level, next) = level_at(topic, p);
            levels.push(level);
            pos = next;
        }
        assert_eq!(levels, ["", "a", "", "b", ""]);
    }
}
