//! The router through the SDK's native harness (`tern_filter::testing::run`: the same batch
//! packing, decoding and verdict code the guest runs).

use tern_filter::testing::{Outcome, TestMessage, pack, run};
use tern_filter::{Destination, Filter, Route, TopicSpan, process_batch};
use tern_filter_abi::Verdicts;
use tern_filter_router::RouterFilter;

const RULES: &str = "\
# The architecture example, and a few more.
sensors/{device}/temp -> bridge:cloud site-7/{device}/temperature
sensors/{device}/alarm -> local:alarms/{device}, bridge:cloud site-7/{device}/alarm, keep
sensors/+/debug/# -> drop
cmd/+ -> keep
by-client/+ -> dev/{client_id}/{topic}
otherwise drop
";

fn msg(topic: &str) -> TestMessage {
    TestMessage::new(topic).client_id("d1").qos(1)
}

#[test]
fn one_batch_through_every_kind_of_outcome() {
    let mut filter = RouterFilter::init(RULES).expect("rules compile");
    let batch = [
        msg("sensors/d1/temp"),
        msg("sensors/d1/alarm"),
        msg("sensors/d1/debug/x"),
        msg("cmd/reboot"),
        msg("by-client/x"),
        // Hub-published: no client id for `{client_id}`, so the message is dropped.
        TestMessage::new("by-client/x"),
        msg("unmatched"),
    ];
    let got = run(&mut filter, &batch).expect("runs");
    let expected = vec![
        Outcome::routed(vec![Route::bridge("cloud", "site-7/d1/temperature")]),
        Outcome::routed(vec![
            Route::local("alarms/d1"),
            Route::bridge("cloud", "site-7/d1/alarm"),
            Route::local("sensors/d1/alarm"),
        ]),
        Outcome::dropped(),
        Outcome::kept(),
        Outcome::routed(vec![Route::local("dev/d1/by-client/x")]),
        Outcome::dropped(),
        Outcome::dropped(),
    ];
    assert_eq!(got, expected);
}

#[test]
fn the_default_keeps_unmatched_messages() {
    let mut filter = RouterFilter::init("a/{x} -> b/{x}").expect("compiles");
    let got = run(&mut filter, &[msg("a/1"), msg("z")]).expect("runs");
    assert_eq!(
        got,
        vec![Outcome::routed(vec![Route::local("b/1")]), Outcome::kept()]
    );
}

#[test]
fn init_errors_are_the_operator_text() {
    let err =
        RouterFilter::init("sensors/{device}/temp -> site-7/{devcie}/temp").expect_err("error");
    assert_eq!(
        err,
        "rule 1 (line 1, column 34): unknown capture `{devcie}` in the topic; the pattern \
         captures {device} (a topic may also use {topic} and {client_id})"
    );
    assert!(RouterFilter::init("").is_err());
}

#[test]
fn payloads_and_properties_are_not_requested() {
    const { assert!(!RouterFilter::NEEDS_PAYLOAD && !RouterFilter::NEEDS_PROPERTIES) };
}

#[test]
fn destinations_without_client_ids_are_templates_the_hub_renders() {
    let filter = RouterFilter::init(RULES).expect("rules compile");
    let declared: Vec<String> = filter.templates().iter().map(ToString::to_string).collect();
    // Captures are spans 0.., `{topic}` the span after the rule's captures; `keep` is the
    // whole topic; identical templates are declared once.
    assert_eq!(
        declared,
        [
            "bridge:cloud site-7/{0}/temperature",
            "alarms/{0}",
            "bridge:cloud site-7/{0}/alarm",
            "{1}",
        ]
    );
    let mut filter = filter;
    let batch =
        pack::<RouterFilter>(&[msg("sensors/dev-7/alarm"), msg("by-client/x")]).expect("packs");
    let verdicts = process_batch(&mut filter, &batch, Vec::new()).expect("decides");
    let verdicts = Verdicts::parse(&verdicts, 2).expect("valid");
    let routes: Vec<Vec<Destination<'_>>> = verdicts
        .edits()
        .map(|e| e.routes.expect("routes").collect())
        .collect();
    let spans = |d: &Destination<'_>| match d {
        Destination::Template { template, spans } => Some((*template, spans.iter().collect())),
        _ => None,
    };
    let dev = TopicSpan { start: 8, end: 13 };
    let whole = TopicSpan { start: 0, end: 19 };
    let got: Vec<Option<(u16, Vec<TopicSpan>)>> = routes[0].iter().map(spans).collect();
    assert_eq!(
        got,
        [
            Some((1, vec![dev])),
            Some((2, vec![dev])),
            Some((3, vec![dev, whole])),
        ]
    );
    // `{client_id}`: rendered by the router.
    assert_eq!(
        routes[1],
        [Destination::Local {
            topic: "dev/d1/by-client/x"
        }]
    );
}
