//! Property tests of `topic::matches` against topics generated from the filter.
//!
//! Property: a topic made by replacing each `+` of a valid filter with one level and
//! a trailing `#` with zero or more levels matches the filter; changing one
//! literal level, or adding a level when the filter has no `#`, makes it not
//! match; and a topic starting with `$` never matches a filter starting with a
//! wildcard.

use proptest::prelude::*;
use tern_mqtt::topic::{matches, validate_topic_filter, validate_topic_name};

#[derive(Debug, Clone)]
enum Level {
    Literal(String),
    Plus,
}

fn filter_levels() -> impl Strategy<Value = (Vec<Level>, bool)> {
    let level = prop_oneof!["[a-z0-9]{0,3}".prop_map(Level::Literal), Just(Level::Plus),];
    (prop::collection::vec(level, 1..5), any::<bool>())
}

fn render_filter(levels: &[Level], hash: bool) -> String {
    let mut parts: Vec<&str> = levels
        .iter()
        .map(|l| match l {
            Level::Literal(s) => s.as_str(),
            Level::Plus => "+",
        })
        .collect();
    if hash {
        parts.push("#");
    }
    parts.join("/")
}

/// Instantiates the filter: `+` takes the next fill level, `#` takes `tail`.
fn instantiate(levels: &[Level], fill: &[String], tail: &[String]) -> Vec<String> {
    let mut fill = fill.iter().cycle();
    let mut topic: Vec<String> = levels
        .iter()
        .map(|l| match l {
            Level::Literal(s) => s.clone(),
            Level::Plus => fill.next().cloned().unwrap_or_default(),
        })
        .collect();
    topic.extend(tail.iter().cloned());
    topic
}

fn words(n: std::ops::Range<usize>) -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec("[a-z0-9]{0,3}", n)
}

proptest! {
    #[test]
    fn instantiated_filters_match(
        (levels, hash) in filter_levels(),
        fill in words(1..4),
        tail in words(0..3),
    ) {
        let filter = render_filter(&levels, hash);
        prop_assume!(!filter.is_empty());
        prop_assert!(validate_topic_filter(&filter).is_ok());
        let tail = if hash { tail } else { Vec::new() };
        let topic = instantiate(&levels, &fill, &tail).join("/");
        prop_assume!(validate_topic_name(&topic).is_ok());
        prop_assert!(matches(&filter, &topic), "{} should match {}", filter, topic);
    }

    #[test]
    fn changed_literal_or_extra_level_does_not_match(
        (levels, hash) in filter_levels(),
        fill in words(1..4),
        pick in any::<prop::sample::Index>(),
    ) {
        let filter = render_filter(&levels, hash);
        let mut topic = instantiate(&levels, &fill, &[]);
        let literals: Vec<usize> = levels
            .iter()
            .enumerate()
            .filter(|(_, l)| matches!(l, Level::Literal(_)))
            .map(|(i, _)| i)
            .collect();
        if literals.is_empty() {
            prop_assume!(!hash);
            topic.push("extra".to_owned());
        } else {
            let i = literals[pick.index(literals.len())];
            // Upper-case never appears in generated levels, so this differs.
            topic[i].push('X');
        }
        let topic = topic.join("/");
        prop_assert!(!matches(&filter, &topic), "{} should not match {}", filter, topic);
    }

    #[test]
    fn dollar_topics_escape_leading_wildcards(
        (levels, hash) in filter_levels(),
        rest in words(0..3),
    ) {
        let filter = render_filter(&levels, hash);
        prop_assume!(filter.starts_with('+') || filter.starts_with('#'));
        let mut topic = vec!["$SYS".to_owned()];
        topic.extend(rest);
        prop_assert!(!matches(&filter, &topic.join("/")));
    }
}
