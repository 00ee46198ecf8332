//! The filter through the SDK's native harness (`tern_filter::testing::run`: the same batch
//! packing, decoding and verdict code the guest runs). Each selector below reads one header or
//! property kind, so together they show that the adapter hands every header to the selector.

use proptest::prelude::*;
use tern_filter::Filter;
use tern_filter::testing::{Outcome, TestMessage, run};
use tern_filter_sql92::{Sql92Filter, compile};
use tern_sql92::OwnedMessage;

/// Three messages that differ in every header.
fn messages() -> Vec<TestMessage> {
    vec![
        TestMessage::new("sensors/7/temp")
            .client_id("dev-7")
            .qos(1)
            .retain(true)
            .received_ms(1_700_000_000_000)
            .content_type("application/json")
            .property("temperature", "31.5")
            .property("site", "north")
            .property("a", "1")
            .property("a", "2")
            .property("n", "10")
            .property("s", "abc")
            .property("flag", "true")
            .property("empty", "")
            .payload(b"{\"t\": 31.5}".to_vec()),
        // Published by the hub itself: empty client id.
        TestMessage::new("sensors/8/hum")
            .qos(0)
            .received_ms(5)
            .property("temperature", "12")
            .property("site", "south"),
        TestMessage::new("other").client_id("dev-9").qos(2),
    ]
}

/// (config, which of the three messages are kept)
const ROWS: &[(&str, [bool; 3])] = &[
    // Numeric property strings; a missing property is UNKNOWN, which drops, also under NOT.
    ("temperature > 30", [true, false, false]),
    ("NOT (temperature > 30)", [false, true, false]),
    ("temperature IS NULL", [false, false, true]),
    ("temperature BETWEEN 10 AND 20", [false, true, false]),
    ("temperature * 2 > 60", [true, false, false]),
    ("n > 9 AND n = '10'", [true, false, false]),
    // A non-numeric string against a number is a type mismatch: FALSE for `>`, TRUE for `<>`.
    ("s > 1", [false, false, false]),
    ("s <> 1", [true, false, false]),
    ("flag = TRUE", [true, false, false]),
    ("empty = '' AND empty IS NOT NULL", [true, false, false]),
    // Duplicate keys: the first occurrence.
    ("a = 1", [true, false, false]),
    ("a = 2", [false, false, false]),
    // IN and LIKE.
    ("site IN ('north', 'east')", [true, false, false]),
    ("site NOT IN ('north')", [false, true, false]),
    ("site LIKE 'n%h'", [true, false, false]),
    ("site NOT LIKE 'n%'", [false, true, false]),
    // Every header.
    ("$topic = 'sensors/7/temp'", [true, false, false]),
    ("$topic LIKE 'sensors/_/%'", [true, true, false]),
    ("$topic STARTSWITH 'oth'", [false, false, true]),
    ("$qos = 1", [true, false, false]),
    ("$qos >= 1", [true, false, true]),
    ("$retain", [true, false, false]),
    ("NOT $retain", [false, true, true]),
    ("$client_id = 'dev-7'", [true, false, false]),
    ("$client_id IS NULL", [false, true, false]),
    ("$client_id LIKE 'dev-%'", [true, false, true]),
    ("$content_type = 'application/json'", [true, false, false]),
    ("$content_type IS NULL", [false, true, true]),
    ("$timestamp = 1700000000000", [true, false, false]),
    ("$timestamp = 5", [false, true, false]),
    ("$timestamp < 1000 AND $timestamp >= 0", [false, true, true]),
    // Options.
    ("# coerce = off\ntemperature > 30", [false, false, false]),
    ("# coerce = off\nsite = 'north'", [true, false, false]),
    ("# coerce = off\nn = '10'", [true, false, false]),
    ("# coerce = on\ntemperature > 30", [true, false, false]),
    // Multi-line selectors with comments.
    (
        "-- hot sensors in the north\ntemperature > 30\n  AND site = 'north' /* inclusive */",
        [true, false, false],
    ),
];

fn outcome(kept: bool) -> Outcome {
    if kept {
        Outcome::kept()
    } else {
        Outcome::dropped()
    }
}

#[test]
fn selectors_over_every_header() {
    let msgs = messages();
    for (config, kept) in ROWS {
        let mut filter = Sql92Filter::init(config).unwrap_or_else(|e| panic!("{config:?}: {e}"));
        let got = run(&mut filter, &msgs).unwrap_or_else(|e| panic!("{config:?}: {e}"));
        let expected: Vec<Outcome> = kept.iter().copied().map(outcome).collect();
        assert_eq!(got, expected, "{config:?}");
    }
}

#[test]
fn init_errors_are_the_operator_text() {
    let err = Sql92Filter::init("temperature > 30 site").expect_err("error");
    assert_eq!(
        err,
        "column 18: expected AND, OR or end of input, found identifier `site`"
    );
    let err = Sql92Filter::init("# coerse = off\nx = 1").expect_err("error");
    assert_eq!(err, "line 1: unknown option `coerse`; options are: coerce");
    let err = Sql92Filter::init("$topc = 'a'").expect_err("error");
    assert!(err.starts_with("column 1: unknown header `$topc`"), "{err}");
}

#[test]
fn payloads_are_not_requested() {
    const { assert!(!Sql92Filter::NEEDS_PAYLOAD) };
}

#[test]
fn a_full_batch_keeps_exactly_the_selected() {
    let mut filter = Sql92Filter::init("n % 3 = 0 AND $qos > 0").expect("compiles");
    let batch = |qos_shift: usize| -> Vec<TestMessage> {
        (0..256)
            .map(|i| {
                TestMessage::new(format!("t/{i}"))
                    .qos(u8::try_from((i + qos_shift) % 3).expect("small"))
                    .property("n", i.to_string())
            })
            .collect()
    };
    // Every multiple of 3 has QoS 0: nothing is kept.
    let got = run(&mut filter, &batch(0)).expect("runs");
    assert!(got.iter().all(|o| !o.kept));
    // Every multiple of 3 has QoS 1: exactly those are kept, unchanged and unrouted.
    let got = run(&mut filter, &batch(1)).expect("runs");
    let kept: Vec<usize> = (0..256).filter(|i| got[*i].kept).collect();
    assert_eq!(kept, (0..256).step_by(3).collect::<Vec<_>>());
    assert!(
        got.iter()
            .all(|o| o.replacement.is_none() && o.routes.is_none())
    );
}

/// Values for the property test below: the coercion rules' edge cases.
const VALUES: &[&str] = &[
    "",
    "0",
    "+5",
    "-5",
    "20",
    "30",
    "31",
    "30.0",
    "30.5",
    "1e3",
    ".5",
    "1.",
    " 30",
    "north",
    "south",
    "North",
    "true",
    "99999999999999999999",
    "-9223372036854775808",
    "é",
    "x",
];

const SELECTORS: &[&str] = &[
    "temperature > 30 AND site = 'north'",
    "site IN ('north', 'east') AND temperature BETWEEN 25 AND 35",
    "NOT (temperature < 30) OR $qos = 1",
    "30 <= temperature OR site <> 'south'",
    "temperature IS NULL OR NOT (temperature > 30)",
    "site NOT IN ('south', NULL) AND temperature NOT BETWEEN 0 AND 30.5",
    "temperature * 2 > 60 OR site LIKE 'n%'",
    "# coerce = off\ntemperature > 30 OR site = 'north' OR temperature = '30'",
];

proptest! {
    /// Through the guest's real code path (the SDK packs the batch, `View` reads raw property
    /// bytes, `decide` writes the verdicts), a message is kept exactly when the reference
    /// evaluator finds the selector TRUE on the same message.
    #[test]
    fn kept_exactly_when_the_reference_is_true(
        props in prop::collection::vec(
            (prop::sample::select(vec!["temperature", "site"]), prop::sample::select(VALUES)),
            0..4,
        ),
        qos in 0u8..3,
    ) {
        let mut test = TestMessage::new("sensors/7/temp").client_id("dev").qos(qos);
        let mut owned = OwnedMessage::new("sensors/7/temp");
        owned.qos = qos;
        owned.client_id = Some("dev".into());
        owned.timestamp_ms = Some(0);
        for (k, v) in props {
            test = test.property(k, v);
            owned = owned.with(k, v);
        }
        for config in SELECTORS {
            let selector = compile(config).expect("compiles");
            let mut filter = Sql92Filter::init(config).expect("compiles");
            let got = run(&mut filter, std::slice::from_ref(&test)).expect("runs");
            let want = selector.evaluate_reference(&owned).is_true();
            prop_assert_eq!(got, vec![outcome(want)], "{}", config);
        }
    }
}
