//! Property tests against a naive model of the rule language.
//!
//! Properties:
//! - Matching agrees with a naive recursive matcher over topic levels (MQTT `+`/`#` semantics,
//!   `{name}` one level, `{name..}` one or more levels, no first-level wildcard on `$` topics),
//!   and the captured values agree too.
//! - A rule whose bridge destination repeats its own pattern (captures in place of levels)
//!   reproduces the topic exactly, `$` topics included.
//! - For arbitrary rule text and arbitrary topics and client ids, parsing and routing never
//!   panic, and every produced topic is a valid MQTT topic name; no local topic starts with
//!   `$`, and with no `$` in the rules the only `$` topic produced is the message's own,
//!   forwarded to a bridge (none leaks in through a capture).
//! - The guest's path (routes to templates the hub renders, through the SDK's harness, which
//!   renders them as the hub does) decides every message exactly as the owned `route` does.

use proptest::prelude::*;
use tern_filter::Filter;
use tern_filter::testing::{self, TestMessage};
use tern_filter_router::{
    Decided, Incoming, Outcome, Rendered, Resolved, RouteTable, RouterFilter, is_valid_topic_name,
};

#[derive(Debug, Clone)]
enum PatLevel {
    Lit(String),
    Plus,
    Cap,
}

#[derive(Debug, Clone, Copy)]
enum PatTail {
    Exact,
    Hash,
    CapMulti,
}

#[derive(Debug, Clone)]
struct Pat {
    levels: Vec<PatLevel>,
    tail: PatTail,
}

/// Level texts from a tiny alphabet, so that patterns and topics collide often.
fn level_text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a".to_string()),
        Just("b".to_string()),
        Just("".to_string()),
        Just("$s".to_string()),
        Just("é".to_string()),
    ]
}

fn pat() -> impl Strategy<Value = Pat> {
    let level = prop_oneof![
        3 => level_text().prop_filter("literal levels are non-empty", |s| !s.is_empty()).prop_map(PatLevel::Lit),
        1 => Just(PatLevel::Plus),
        2 => Just(PatLevel::Cap),
    ];
    let tail = prop_oneof![
        3 => Just(PatTail::Exact),
        1 => Just(PatTail::Hash),
        1 => Just(PatTail::CapMulti),
    ];
    (prop::collection::vec(level, 0..5), tail)
        .prop_filter("a pattern has at least one level", |(levels, tail)| {
            !levels.is_empty() || !matches!(tail, PatTail::Exact)
        })
        .prop_map(|(levels, tail)| Pat { levels, tail })
}

fn topic() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(level_text(), 1..7)
}

/// The pattern as rule text, captures named `c0`, `c1`, ... in order.
fn render_pattern(p: &Pat) -> (String, usize) {
    let mut parts = Vec::new();
    let mut caps = 0;
    for level in &p.levels {
        parts.push(match level {
            PatLevel::Lit(s) => s.clone(),
            PatLevel::Plus => "+".into(),
            PatLevel::Cap => {
                caps += 1;
                format!("{{c{}}}", caps - 1)
            }
        });
    }
    match p.tail {
        PatTail::Exact => {}
        PatTail::Hash => parts.push("#".into()),
        PatTail::CapMulti => {
            parts.push(format!("{{c{caps}..}}"));
            caps += 1;
        }
    }
    (parts.join("/"), caps)
}

/// Naive matcher: `Some(captures)` when the pattern matches the topic levels.
fn model_match(p: &Pat, topic: &[String]) -> Option<Vec<String>> {
    let first_is_literal = matches!(p.levels.first(), Some(PatLevel::Lit(_)));
    if topic.first().is_some_and(|l| l.starts_with('$')) && !first_is_literal {
        return None;
    }
    let n = p.levels.len();
    let ok_len = match p.tail {
        PatTail::Exact => topic.len() == n,
        PatTail::Hash => topic.len() >= n,
        PatTail::CapMulti => topic.len() > n,
    };
    if !ok_len {
        return None;
    }
    let mut caps = Vec::new();
    for (level, text) in p.levels.iter().zip(topic) {
        match level {
            PatLevel::Lit(s) if s != text => return None,
            PatLevel::Lit(_) | PatLevel::Plus => {}
            PatLevel::Cap => caps.push(text.clone()),
        }
    }
    if let PatTail::CapMulti = p.tail {
        caps.push(topic[n..].join("/"));
    }
    Some(caps)
}

/// One rule. The leading `;` keeps a pattern of just `#` from reading as a comment line.
fn rule(pattern: &str, template: &str) -> String {
    format!("; {pattern} -> {template}")
}

/// The topic of the only route, local or bridge.
fn only_route(outcome: Outcome<'_>) -> Option<String> {
    match outcome {
        Outcome::Route(routes) => match routes.as_slice() {
            [Resolved::Local { topic } | Resolved::Bridge { topic, .. }] => Some(topic.clone()),
            _ => None,
        },
        _ => None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn matching_agrees_with_the_model(p in pat(), t in topic()) {
        let (pattern, caps) = render_pattern(&p);
        let template: String = std::iter::once("m".to_string())
            .chain((0..caps).map(|i| format!("{{c{i}}}")))
            .collect::<Vec<_>>()
            .join("/");
        let table = RouteTable::parse(&rule(&pattern, &template))
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let topic = t.join("/");
        let got = table.route(Incoming { topic: &topic, client_id: "c" });
        match model_match(&p, &t) {
            None => prop_assert_eq!(got, Outcome::Keep),
            Some(values) => {
                let expected = std::iter::once("m".to_string()).chain(values).collect::<Vec<_>>().join("/");
                prop_assert_eq!(only_route(got), Some(expected));
            }
        }
        prop_assert_eq!(table.first_match(&topic).is_some(), model_match(&p, &t).is_some());
    }

    #[test]
    fn repeating_the_pattern_reproduces_the_topic(p in pat(), t in topic()) {
        // `+` and `#` cannot appear in a destination; use captures in their place.
        let p = Pat {
            levels: p.levels.into_iter().map(|l| match l {
                PatLevel::Plus => PatLevel::Cap,
                other => other,
            }).collect(),
            tail: match p.tail { PatTail::Hash => PatTail::CapMulti, other => other },
        };
        let (pattern, _) = render_pattern(&p);
        // A bridge topic, because local topics may not start with `$`.
        let template = format!("bridge:up {}", pattern.replace("..}", "}"));
        let table = RouteTable::parse(&rule(&pattern, &template))
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let topic = t.join("/");
        match table.route(Incoming { topic: &topic, client_id: "c" }) {
            Outcome::Keep => prop_assert!(model_match(&p, &t).is_none()),
            // A `$` topic only matches a literal `$` level, which the bridge topic repeats
            // literally, so only an empty topic is refused.
            Outcome::Invalid(_) => prop_assert!(topic.is_empty()),
            other => prop_assert_eq!(only_route(other), Some(topic)),
        }
    }

    #[test]
    fn arbitrary_rules_never_panic_and_produce_valid_topics(
        config in "([a-zé/+#{}.,:;\\- >\n\0]|->|\\{x\\}|\\{y\\.\\.\\}|\\{topic\\}|\\{client_id\\}|bridge:|local:|keep|drop|otherwise){0,40}",
        topics in prop::collection::vec("[a-z$é/+#\0]{0,12}", 1..6),
        client in "[a-z/$+#]{0,4}",
    ) {
        let Ok(table) = RouteTable::parse(&config) else { return Ok(()) };
        // One buffer for every topic, as in the guest.
        let mut rendered = Rendered::default();
        for topic in &topics {
            let first = table.first_match(topic);
            let msg = Incoming { topic, client_id: &client };
            let owned = table.route(msg);
            let via_buffer = match table.route_into(msg, &mut rendered) {
                Decided::Keep => Outcome::Keep,
                Decided::Drop => Outcome::Drop,
                Decided::Invalid(invalid) => Outcome::Invalid(invalid),
                Decided::Route => Outcome::Route(
                    rendered
                        .destinations(&table)
                        .map(|d| {
                            let topic = String::from_utf8(d.topic.to_vec()).expect("UTF-8 topic");
                            match d.bridge {
                                None => Resolved::Local { topic },
                                Some(bridge) => Resolved::Bridge { bridge, topic },
                            }
                        })
                        .collect(),
                ),
            };
            prop_assert_eq!(&via_buffer, &owned);
            match owned {
                Outcome::Route(routes) => {
                    prop_assert!(!routes.is_empty());
                    for route in routes {
                        let out = match route {
                            Resolved::Local { topic } => {
                                // The hub reserves local `$` topics.
                                prop_assert!(!topic.starts_with('$'), "{:?}", topic);
                                topic
                            }
                            Resolved::Bridge { topic, .. } => topic,
                        };
                        prop_assert!(is_valid_topic_name(&out), "{:?}", out);
                        // The rules hold no `$`: a `$` topic can only be the message's own.
                        prop_assert!(!out.starts_with('$') || out == *topic, "{:?}", out);
                    }
                }
                Outcome::Invalid(invalid) => prop_assert_eq!(invalid.rule, first),
                Outcome::Keep | Outcome::Drop => {}
            }
        }
    }

    #[test]
    fn host_rendered_routes_decide_as_the_router_renders(
        config in "([a-zé/+#{}.,:;\\- >\n]|->|\\{x\\}|\\{y\\.\\.\\}|\\{topic\\}|\\{client_id\\}|bridge:|local:|keep|drop|otherwise){0,40}",
        topics in prop::collection::vec("[a-z$é/]{0,12}", 1..8),
        client in "[a-z/$]{0,4}",
    ) {
        let Ok(table) = RouteTable::parse(&config) else { return Ok(()) };
        let mut filter = RouterFilter::init(&config).expect("the same config parses");
        let batch: Vec<TestMessage> = topics
            .iter()
            .map(|t| TestMessage::new(t.as_str()).client_id(client.as_str()))
            .collect();
        let got = testing::run(&mut filter, &batch).expect("the hub accepts the verdicts");
        for (topic, got) in topics.iter().zip(got) {
            let expected = match table.route(Incoming { topic, client_id: &client }) {
                Outcome::Keep => testing::Outcome::kept(),
                Outcome::Drop | Outcome::Invalid(_) => testing::Outcome::dropped(),
                Outcome::Route(routes) => testing::Outcome::routed(
                    routes
                        .into_iter()
                        .map(|r| match r {
                            Resolved::Local { topic } => tern_filter::Route::local(topic),
                            Resolved::Bridge { bridge, topic } => {
                                tern_filter::Route::bridge(bridge, topic)
                            }
                        })
                        .collect(),
                ),
            };
            prop_assert_eq!(got, expected, "topic {:?}", topic);
        }
    }

    #[test]
    fn arbitrary_text_never_panics(config in "\\PC{0,200}", topic in "\\PC{0,40}") {
        if let Ok(table) = RouteTable::parse(&config) {
            let _ = table.route(Incoming { topic: &topic, client_id: "c" });
        }
    }
}
