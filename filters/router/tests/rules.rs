//! The rule language, one row per documented rule: what a rule set does with a message, and
//! which rule sets are rejected with which location and message.

use tern_filter_router::{
    ConfigErrorKind, Decided, Incoming, InvalidTopic, Location, Outcome, Rendered, Resolved,
    RouteTable,
};

/// The expected outcome, written compactly: `keep`, `drop`, `invalid:<why>`, or routes
/// `local:<topic>` / `bridge:<name> <topic>` joined by ` | `.
fn show(outcome: &Outcome<'_>) -> String {
    match outcome {
        Outcome::Keep => "keep".into(),
        Outcome::Drop => "drop".into(),
        Outcome::Invalid(invalid) => format!("invalid:{invalid}"),
        Outcome::Route(routes) => routes
            .iter()
            .map(|r| match r {
                Resolved::Local { topic } => format!("local:{topic}"),
                Resolved::Bridge { bridge, topic } => format!("bridge:{bridge} {topic}"),
            })
            .collect::<Vec<_>>()
            .join(" | "),
    }
}

/// The outcome of `route`, after checking that the allocation-free `route_into` (what the
/// guest runs) decides the same, also with a buffer that held an earlier message's routes.
fn route(table: &RouteTable, topic: &str, client_id: &str) -> String {
    let msg = Incoming { topic, client_id };
    let owned = show(&table.route(msg));
    let mut rendered = Rendered::default();
    for _ in 0..2 {
        let via_buffer = match table.route_into(msg, &mut rendered) {
            Decided::Keep => "keep".into(),
            Decided::Drop => "drop".into(),
            Decided::Invalid(invalid) => format!("invalid:{invalid}"),
            Decided::Route => rendered
                .destinations(table)
                .map(|d| {
                    let topic = std::str::from_utf8(d.topic).expect("UTF-8 topic");
                    match d.bridge {
                        None => format!("local:{topic}"),
                        Some(bridge) => format!("bridge:{bridge} {topic}"),
                    }
                })
                .collect::<Vec<_>>()
                .join(" | "),
        };
        assert_eq!(via_buffer, owned, "route_into disagrees for {topic:?}");
    }
    owned
}

fn table(config: &str) -> RouteTable {
    RouteTable::parse(config).unwrap_or_else(|e| panic!("{config:?}: {e}"))
}

/// (config, topic, client id, expected outcome)
const ROUTES: &[(&str, &str, &str, &str)] = &[
    // The architecture example.
    (
        "sensors/{device}/temp -> bridge:cloud site-7/{device}/temperature",
        "sensors/d1/temp",
        "c",
        "bridge:cloud site-7/d1/temperature",
    ),
    (
        "sensors/{device}/temp -> bridge:cloud site-7/{device}/temperature",
        "sensors/d1/humidity",
        "c",
        "keep",
    ),
    (
        "sensors/{device}/temp -> bridge:cloud site-7/{device}/temperature",
        "sensors/d1/temp/extra",
        "c",
        "keep",
    ),
    (
        "sensors/{device}/temp -> bridge:cloud site-7/{device}/temperature",
        "sensors/temp",
        "c",
        "keep",
    ),
    // Literals are exact and case-sensitive.
    ("a/b -> x", "a/b", "c", "local:x"),
    ("a/b -> x", "A/b", "c", "keep"),
    ("a/b -> x", "a/b/", "c", "keep"),
    ("a/b -> x", "a", "c", "keep"),
    // `+` matches one level, including an empty one, and is not captured.
    ("a/+/c -> x", "a/b/c", "c", "local:x"),
    ("a/+/c -> x", "a//c", "c", "local:x"),
    ("a/+/c -> x", "a/b/b/c", "c", "keep"),
    ("+ -> x", "a", "c", "local:x"),
    ("+ -> x", "a/b", "c", "keep"),
    // Captures interpolate anywhere inside a level; empty captures give empty levels.
    ("s/{d}/t -> dev-{d}-x/{d}", "s/7/t", "c", "local:dev-7-x/7"),
    ("s/{d}/t -> out/{d}/t", "s//t", "c", "local:out//t"),
    ("{a}/{b} -> {b}/{a}", "x/y", "c", "local:y/x"),
    // `{name..}`: one or more remaining levels, joined with `/`.
    (
        "in/{rest..} -> out/{rest}",
        "in/a/b/c",
        "c",
        "local:out/a/b/c",
    ),
    ("in/{rest..} -> out/{rest}", "in/a", "c", "local:out/a"),
    ("in/{rest..} -> out/{rest}", "in", "c", "keep"),
    ("in/{rest..} -> out/{rest}", "in/", "c", "local:out/"),
    ("{all..} -> copy/{all}", "a/b", "c", "local:copy/a/b"),
    // `#`: zero or more remaining levels, MQTT style (also the parent level).
    ("in/# -> x", "in", "c", "local:x"),
    ("in/# -> x", "in/a/b", "c", "local:x"),
    ("in/# -> x", "inn/a", "c", "keep"),
    ("a -> b; x/# -> y", "x", "c", "local:y"),
    // Built-ins.
    ("a/+ -> copy/{topic}", "a/b", "c", "local:copy/a/b"),
    (
        "a/+ -> dev/{client_id}/x",
        "a/b",
        "gw-1",
        "local:dev/gw-1/x",
    ),
    // Wildcards and captures at the first level do not match `$` topics; literals do.
    ("+/x -> y", "$SYS/x", "c", "keep"),
    ("{a}/x -> y", "$SYS/x", "c", "keep"),
    ("{all..} -> y", "$SYS/x", "c", "keep"),
    ("$SYS/{k} -> sys/{k}", "$SYS/x", "c", "local:sys/x"),
    ("a/+ -> y", "a/$x", "c", "local:y"),
    // A bridge topic may start with `$` when the rule says so: literally, or as `{topic}`
    // alone for a `$` topic the pattern matched literally. `keep` alone needs no route.
    (
        "$SYS/+ -> bridge:up {topic}",
        "$SYS/x",
        "c",
        "bridge:up $SYS/x",
    ),
    (
        "a/+ -> bridge:up $aws/{topic}",
        "a/b",
        "c",
        "bridge:up $aws/a/b",
    ),
    ("$SYS/+ -> keep", "$SYS/x", "c", "keep"),
    // First matching rule wins.
    (
        "a/{x} -> first/{x}\na/+ -> second\n+/+ -> third",
        "a/b",
        "c",
        "local:first/b",
    ),
    (
        "a/{x} -> first/{x}\na/+ -> second\n+/+ -> third",
        "b/b",
        "c",
        "local:third",
    ),
    ("a/# -> drop\na/b -> never", "a/b", "c", "drop"),
    // Several destinations, in order; `keep` adds the message's own topic.
    (
        "s/{d}/alarm -> local:alarms/{d}, bridge:cloud gw/{d}/alarm, keep",
        "s/7/alarm",
        "c",
        "local:alarms/7 | bridge:cloud gw/7/alarm | local:s/7/alarm",
    ),
    // `keep` alone is the message unchanged (no routes); `drop` alone drops it.
    (
        "a/+ -> keep\n# default drop\notherwise drop",
        "a/b",
        "c",
        "keep",
    ),
    ("a/+ -> keep\notherwise drop", "b/b", "c", "drop"),
    ("a/+ -> drop", "a/b", "c", "drop"),
    // `local:` with a space, bare topics, keyword case.
    ("a -> local: x/y", "a", "c", "local:x/y"),
    ("a -> LOCAL:x", "a", "c", "local:x"),
    ("a -> Bridge:up x", "a", "c", "bridge:up x"),
    ("a -> KEEP", "a", "c", "keep"),
    ("a -> local:keep", "a", "c", "local:keep"),
    ("a -> local:bridge:x", "a", "c", "local:bridge:x"),
    ("a -> local:x:y", "a", "c", "local:x:y"),
    ("a -> y/x:y", "a", "c", "local:y/x:y"),
    ("a -> a1:y", "a", "c", "local:a1:y"),
    // `otherwise`, wherever it appears, with or without an arrow, with destinations.
    ("otherwise drop\na -> x", "b", "c", "drop"),
    ("otherwise -> drop\na -> x", "a", "c", "local:x"),
    ("OTHERWISE keep; a -> drop", "b", "c", "keep"),
    (
        "otherwise bridge:cloud unrouted/{topic}",
        "q/r",
        "c",
        "bridge:cloud unrouted/q/r",
    ),
    ("otherwise drop", "anything", "c", "drop"),
    // A pattern that starts with the word `otherwise` is still a pattern.
    ("otherwise/x -> y", "otherwise/x", "c", "local:y"),
    // Separators, comments, blank lines, CRLF.
    ("# c\n\n  a -> x ; b -> y ;\r\n# d\n", "b", "c", "local:y"),
    ("a->x", "a", "c", "local:x"),
    // A line starting with `#` is a comment even when it looks like a rule; after `;` a
    // `#` is the match-everything pattern.
    ("# -> x\na -> b", "q", "c", "keep"),
    ("a -> b; # -> x", "q/r", "c", "local:x"),
    // Non-ASCII topics are fine.
    (
        "capteurs/{piece}/t -> b/{piece}/é",
        "capteurs/séjour/t",
        "c",
        "local:b/séjour/é",
    ),
];

#[test]
fn routes() {
    for (config, topic, client, expected) in ROUTES {
        let t = table(config);
        assert_eq!(
            route(&t, topic, client),
            *expected,
            "config {config:?}, topic {topic:?}"
        );
    }
}

/// (config, topic, client id, why the produced topic is invalid). Such a message is dropped.
const INVALID: &[(&str, &str, &str, InvalidTopic)] = &[
    // `{client_id}` must be one non-empty level.
    ("a -> d/{client_id}", "a", "", InvalidTopic::BadClientId),
    ("a -> d/{client_id}", "a", "x/y", InvalidTopic::BadClientId),
    ("a -> d/{client_id}", "a", "x+", InvalidTopic::ForbiddenChar),
    ("a -> d/{client_id}", "a", "x#", InvalidTopic::ForbiddenChar),
    (
        "a -> d/{client_id}",
        "a",
        "x\0",
        InvalidTopic::ForbiddenChar,
    ),
    // An interpolated value may not start a topic with `$`.
    (
        "in/{rest..} -> {rest}",
        "in/$SYS/x",
        "c",
        InvalidTopic::DollarPrefix,
    ),
    ("a -> {client_id}/x", "a", "$c", InvalidTopic::DollarPrefix),
    (
        "$SYS/+ -> bridge:up {topic}/x",
        "$SYS/x",
        "c",
        InvalidTopic::DollarPrefix,
    ),
    (
        "in/{rest..} -> bridge:up {rest}",
        "in/$x",
        "c",
        InvalidTopic::DollarPrefix,
    ),
    // The hub reserves local `$` topics: not even the message's own.
    (
        "$SYS/+ -> {topic}",
        "$SYS/x",
        "c",
        InvalidTopic::DollarPrefix,
    ),
    (
        "$SYS/{k} -> sys/{k}, keep",
        "$SYS/x",
        "c",
        InvalidTopic::DollarPrefix,
    ),
    // The result may be empty.
    ("in/{rest..} -> {rest}", "in/", "c", InvalidTopic::Empty),
    // Topics the hub should never pass on, still never forwarded with a wildcard.
    ("a/{x} -> b/{x}", "a/+", "c", InvalidTopic::ForbiddenChar),
    ("a/{x} -> b/{x}", "a/#", "c", InvalidTopic::ForbiddenChar),
    ("a/+ -> b/{topic}", "a/\0", "c", InvalidTopic::ForbiddenChar),
];

#[test]
fn invalid_topics_drop_the_message() {
    for (config, topic, client, reason) in INVALID {
        let t = table(config);
        match t.route(Incoming {
            topic,
            client_id: client,
        }) {
            Outcome::Invalid(invalid) => {
                assert_eq!(invalid.reason, *reason, "{config:?} {topic:?}");
                assert_eq!(invalid.rule, Some(1));
                assert!(invalid.to_string().starts_with("rule 1: "), "{invalid}");
            }
            other => panic!("{config:?} {topic:?}: expected invalid, got {other:?}"),
        }
    }
}

#[test]
fn too_long_output_is_invalid() {
    let t = table("in/{rest..} -> prefix/{rest}/{rest}");
    let long = format!("in/{}", "x".repeat(40_000));
    match t.route(Incoming {
        topic: &long,
        client_id: "c",
    }) {
        Outcome::Invalid(invalid) => {
            assert_eq!(invalid.reason, InvalidTopic::TooLong(80_008));
            assert!(invalid.to_string().contains("80008 bytes"), "{invalid}");
        }
        other => panic!("expected invalid, got {other:?}"),
    }
    // Exactly at the limit is fine.
    let t = table("{all..} -> {all}");
    let max = "y".repeat(65_535);
    assert_eq!(route(&t, &max, "c"), format!("local:{max}"));
}

#[test]
fn invalid_from_otherwise_names_it() {
    let t = table("a -> b\notherwise -> dev/{client_id}");
    match t.route(Incoming {
        topic: "z",
        client_id: "",
    }) {
        Outcome::Invalid(invalid) => {
            assert_eq!(invalid.rule, None);
            assert_eq!(
                invalid.to_string(),
                "otherwise: the publisher's client id is empty or contains `/`"
            );
        }
        other => panic!("expected invalid, got {other:?}"),
    }
}

#[test]
fn first_match_reports_the_rule_number() {
    let t = table("# header\na/b -> x\n\na/+ -> y; +/c -> z\notherwise drop");
    assert_eq!(t.len(), 3);
    assert_eq!(t.first_match("a/b"), Some(1));
    assert_eq!(t.first_match("a/q"), Some(2));
    assert_eq!(t.first_match("q/c"), Some(3));
    assert_eq!(t.first_match("q/q"), None);
    let only_default = table("otherwise drop");
    assert!(only_default.is_empty());
}

/// (config, rule number, line, column, expected text in the message)
const ERRORS: &[(&str, Option<usize>, usize, usize, &str)] = &[
    ("", None, 1, 1, "no rules"),
    ("# only a comment\n", None, 2, 1, "no rules"),
    ("# -> x", None, 1, 7, "no rules"),
    ("a/b", Some(1), 1, 4, "expected `->` after the pattern"),
    ("a/b x", Some(1), 1, 4, "expected `->`"),
    (
        " -> x",
        Some(1),
        1,
        2,
        "expected a topic pattern before `->`",
    ),
    ("a ->", Some(1), 1, 5, "expected a destination"),
    ("a -> x,", Some(1), 1, 8, "expected a destination"),
    ("a -> , x", Some(1), 1, 6, "expected a destination"),
    (
        "a b -> x",
        Some(1),
        1,
        2,
        "unexpected whitespace in the pattern",
    ),
    (
        "a -> x y",
        Some(1),
        1,
        7,
        "unexpected whitespace in the topic",
    ),
    (
        "a//b -> x",
        Some(1),
        1,
        3,
        "empty topic level in the pattern",
    ),
    ("/a -> x", Some(1), 1, 1, "empty topic level in the pattern"),
    ("a/ -> x", Some(1), 1, 3, "empty topic level in the pattern"),
    ("a -> x//y", Some(1), 1, 8, "empty topic level in the topic"),
    ("a -> /x", Some(1), 1, 6, "empty topic level in the topic"),
    ("a -> x/", Some(1), 1, 8, "empty topic level in the topic"),
    (
        "a+/b -> x",
        Some(1),
        1,
        2,
        "`+` must be a whole topic level",
    ),
    (
        "a/b# -> x",
        Some(1),
        1,
        4,
        "`#` must be a whole topic level",
    ),
    ("a/#/b -> x", Some(1), 1, 3, "`#` must be the last level"),
    (
        "a/{r..}/b -> x",
        Some(1),
        1,
        3,
        "`{name..}` must be the last level",
    ),
    ("a/{x -> y", Some(1), 1, 3, "a capture is written {name}"),
    ("a/x{y} -> y", Some(1), 1, 4, "a capture is written {name}"),
    ("a/{} -> y", Some(1), 1, 4, "invalid capture name ``"),
    ("a/{1x} -> y", Some(1), 1, 4, "invalid capture name `1x`"),
    ("a/{x-y} -> y", Some(1), 1, 4, "invalid capture name `x-y`"),
    ("a/{..} -> y", Some(1), 1, 4, "invalid capture name ``"),
    ("{d}/{d} -> y", Some(1), 1, 6, "duplicate capture `{d}`"),
    ("{d}/{d..} -> y", Some(1), 1, 6, "duplicate capture `{d}`"),
    (
        "{topic}/x -> y",
        Some(1),
        1,
        2,
        "would hide the built-in `{topic}`",
    ),
    ("{client_id} -> y", Some(1), 1, 2, "would hide the built-in"),
    (
        "s/{device}/t -> out/{devcie}",
        Some(1),
        1,
        22,
        "unknown capture `{devcie}` in the topic; the pattern captures {device}",
    ),
    (
        "s/+/t -> out/{x}",
        Some(1),
        1,
        15,
        "the pattern captures nothing",
    ),
    (
        "in/{r..} -> out/{r..}",
        Some(1),
        1,
        18,
        "unknown capture `{r..}`",
    ),
    (
        "a -> x/+",
        Some(1),
        1,
        8,
        "wildcard `+` in a destination topic",
    ),
    (
        "a -> x/#",
        Some(1),
        1,
        8,
        "wildcard `#` in a destination topic",
    ),
    ("a -> x/a+b", Some(1), 1, 9, "wildcard `+`"),
    ("a -> x/{y", Some(1), 1, 8, "unclosed `{`"),
    ("a -> x/y}", Some(1), 1, 9, "unmatched `}`"),
    ("a\0 -> x", Some(1), 1, 2, "NUL character in the pattern"),
    ("a -> x\0", Some(1), 1, 7, "NUL character in the topic"),
    ("a -> drop, x", Some(1), 1, 6, "`drop` cannot be combined"),
    ("a -> x, drop", Some(1), 1, 9, "`drop` cannot be combined"),
    ("a -> x, local:x", Some(1), 1, 9, "duplicate destination"),
    (
        "a -> keep, local:{topic}",
        Some(1),
        1,
        12,
        "duplicate destination",
    ),
    ("a -> keep, keep", Some(1), 1, 12, "duplicate destination"),
    ("a -> bridge:", Some(1), 1, 13, "expected a bridge name"),
    (
        "a -> bridge: cloud x",
        Some(1),
        1,
        13,
        "expected a bridge name",
    ),
    (
        "a -> bridge:c/d x",
        Some(1),
        1,
        13,
        "expected a bridge name",
    ),
    (
        "a -> bridge:cloud",
        Some(1),
        1,
        18,
        "expected a topic after the bridge name (`bridge:cloud <topic>`)",
    ),
    (
        "a -> bridge:cloud x y",
        Some(1),
        1,
        20,
        "unexpected whitespace",
    ),
    ("a -> local:", Some(1), 1, 12, "expected a destination"),
    (
        "a -> locl:x",
        Some(1),
        1,
        6,
        "unknown destination kind `locl:`",
    ),
    (
        "a -> brige:cloud x",
        Some(1),
        1,
        6,
        "unknown destination kind `brige:`",
    ),
    ("a -> x:y", Some(1), 1, 6, "unknown destination kind `x:`"),
    (
        "a -> $x/y",
        Some(1),
        1,
        6,
        "a local topic cannot start with `$`",
    ),
    (
        "a -> local: $x",
        Some(1),
        1,
        13,
        "a local topic cannot start with `$`",
    ),
    ("otherwise", None, 1, 10, "expected a destination"),
    (
        "otherwise drop\notherwise keep",
        None,
        2,
        1,
        "given twice (the first is on line 1)",
    ),
    (
        "otherwise -> x/{d}",
        None,
        1,
        17,
        "unknown capture `{d}` in the topic; the pattern captures nothing",
    ),
    // Rule numbers count rules only; columns count characters on their line.
    (
        "# c\na -> x\n\nb -> y; c -> z/+",
        Some(3),
        4,
        16,
        "wildcard `+`",
    ),
    ("é/ü -> x/{q}", Some(1), 1, 11, "unknown capture"),
    ("otherwise drop; a -> x; b", Some(2), 1, 26, "expected `->`"),
];

#[test]
fn errors_name_rule_line_and_column() {
    for (config, rule, line, column, message) in ERRORS {
        let err = RouteTable::parse(config).expect_err(config);
        assert_eq!(
            err.location(),
            Location {
                rule: *rule,
                line: *line,
                column: *column,
            },
            "{config:?}: {err}"
        );
        let text = err.to_string();
        assert!(text.contains(message), "{config:?}: {text}");
        let prefix = match rule {
            Some(rule) => format!("rule {rule} (line {line}, column {column}): "),
            None => format!("line {line}, column {column}: "),
        };
        assert!(text.starts_with(&prefix), "{config:?}: {text}");
    }
}

#[test]
fn limits() {
    let sixteen: Vec<String> = (0..16).map(|i| format!("{{c{i}}}")).collect();
    let ok = format!("{} -> out/{{c15}}", sixteen.join("/"));
    let t = table(&ok);
    let topic: Vec<String> = (0..16).map(|i| i.to_string()).collect();
    assert_eq!(route(&t, &topic.join("/"), "c"), "local:out/15");

    let seventeen = format!("{}/{{c16}} -> x", sixteen.join("/"));
    let err = RouteTable::parse(&seventeen).expect_err("17 captures");
    assert!(
        matches!(err.kind(), ConfigErrorKind::TooManyCaptures(16)),
        "{err}"
    );

    let dests: Vec<String> = (0..64).map(|i| format!("t{i}")).collect();
    let t = table(&format!("a -> {}", dests.join(", ")));
    match t.route(Incoming {
        topic: "a",
        client_id: "c",
    }) {
        Outcome::Route(routes) => assert_eq!(routes.len(), 64),
        other => panic!("{other:?}"),
    }
    let err = RouteTable::parse(&format!("a -> {}, t64", dests.join(", "))).expect_err("65");
    assert!(
        matches!(err.kind(), ConfigErrorKind::TooManyDestinations(64)),
        "{err}"
    );

    let long = "x".repeat(65_536);
    let err = RouteTable::parse(&format!("{long} -> y")).expect_err("long pattern");
    assert!(matches!(err.kind(), ConfigErrorKind::TooLong(_)), "{err}");
    let err = RouteTable::parse(&format!("a -> {long}")).expect_err("long topic");
    assert!(matches!(err.kind(), ConfigErrorKind::TooLong(_)), "{err}");
}

#[test]
fn many_rules_stay_first_match() {
    let mut config = String::new();
    for i in 0..1000 {
        config.push_str(&format!("site/{i}/{{sensor}} -> out/{i}/{{sensor}}\n"));
    }
    config.push_str("otherwise drop\n");
    let t = table(&config);
    assert_eq!(t.len(), 1000);
    assert_eq!(route(&t, "site/999/t", "c"), "local:out/999/t");
    assert_eq!(route(&t, "site/1000/t", "c"), "drop");
}

/// The README's first example config and its `Errors` pairs stay true.
#[test]
fn readme_examples() {
    let readme = include_str!("../README.md");
    let blocks: Vec<&str> = readme
        .split("```text\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .collect();
    let t = table(blocks[0]);
    assert_eq!(t.len(), 4);
    assert_eq!(
        route(&t, "sensors/d1/temp", "d1"),
        "bridge:cloud site-7/d1/temperature"
    );
    assert_eq!(
        route(&t, "sensors/d1/alarm", "d1"),
        "local:alarms/d1 | bridge:cloud site-7/d1/alarm | local:sensors/d1/alarm"
    );
    assert_eq!(route(&t, "sensors/d1/debug", "d1"), "drop");
    assert_eq!(route(&t, "sensors/d1/debug/x/y", "d1"), "drop");
    assert_eq!(
        route(&t, "logs/d1/boot/stage2", "d1"),
        "bridge:cloud site-7/logs/d1/boot/stage2"
    );
    assert_eq!(route(&t, "logs/d1", "d1"), "keep");
    assert_eq!(route(&t, "elsewhere", "d1"), "keep");

    let errors = blocks
        .iter()
        .find(|b| b.contains("unknown capture `{devcie}`"))
        .expect("errors block");
    let mut checked = 0;
    for pair in errors.split("\n\n") {
        let (config, message) = pair.trim().split_once('\n').expect("config, then error");
        let err = RouteTable::parse(config).expect_err(config);
        assert_eq!(err.to_string(), message, "{config:?}");
        checked += 1;
    }
    assert_eq!(checked, 5);
}
