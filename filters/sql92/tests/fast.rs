//! The evaluator that `Selector::evaluate` runs (leaves over raw property bytes, flat
//! `AND`/`OR`, `NOT` pushed into the leaves) against the reference evaluator
//! (`Selector::evaluate_reference`, a plain walk over the parsed tree).
//!
//! **Property:** for every selector and every message, with property coercion on and off, the
//! two evaluators give the same TRUE / FALSE / UNKNOWN, whether the message's view reads
//! property bytes through the default `property_bytes` or overrides it.
//!
//! Selectors come from a grammar of the shapes the fast evaluator specializes (a property,
//! header or arithmetic over them against a number or string literal in either order with all
//! six operators, `BETWEEN`, `IN`, `IS [NOT] NULL`), shapes next to them that must fall back
//! to the reference (literals of other types, `NULL` bounds, property against property,
//! `LIKE`, bare properties) and `NOT` / `AND` / `OR` over them. Literals and property values
//! are drawn from the edge cases of the coercion rules: missing properties, duplicates, empty
//! strings, non-numeric strings, `+5`, `-0`, `007`, `1e3`, `1.`, `.5`, fractions, integers
//! at and beyond the i64 range, `1e400`, booleans in any case, spaces, hex, `NaN`.

use proptest::prelude::*;
use tern_sql92::{MessageView, Options, OwnedMessage, Selector, Truth};

const PROPS: [&str; 4] = ["a", "b", "c", "\"n-m\""];
const KEYS: [&str; 4] = ["a", "b", "c", "n-m"];
const HEADERS: [&str; 6] = [
    "$topic",
    "$qos",
    "$retain",
    "$client_id",
    "$content_type",
    "$timestamp",
];

const NUMBERS: &[&str] = &[
    "0",
    "1",
    "2",
    "5",
    "-5",
    "30",
    "31",
    "1.5",
    "-2.5",
    "30.0",
    "1e3",
    "1E+2",
    ".5",
    "1.",
    "007",
    "0x1F",
    "9223372036854775807",
    "-9223372036854775808",
    "9223372036854775808",
    "99999999999999999999",
    "1700000000000",
    "2.5e-3",
];

const STRINGS: &[&str] = &[
    "''",
    "'north'",
    "'south'",
    "'a'",
    "'5'",
    "'+5'",
    "'30'",
    "'1e3'",
    "'true'",
    "'TRUE'",
    "'it''s'",
    "'sensors/7/temp'",
    "'dev-7'",
    "'é'",
    "'10'",
    "'9'",
];

/// Property values: the coercion rules' edge cases, plus arbitrary short digit strings
/// and short text.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "", "0", "-0", "+0", "1", "2", "5", "+5", "-5", "30", "31", "29", "1e3", "1E3", "1000",
            "1.5", "-2.5", "30.0", "30.", ".5", "1.", "007", " 10", "10 ", "abc", "north", "south",
            "true", "TRUE", "False", "yes", "9223372036854775807", "9223372036854775808",
            "-9223372036854775808", "-9223372036854775809", "99999999999999999999",
            "999999999999999999", "-999999999999999999", "1000000000000000000", "1e400",
            "-1e400", "1e", "1e+", "-", "+", ".", "0x10", "NaN", "inf", "é", "it's", "'", "--1",
            "+-1", "1,5", "1.e3", "1700000000000",
        ])
        .prop_map(String::from),
        1 => "[+-]?[0-9]{0,21}(\\.[0-9]{0,2})?([eE][+-]?[0-9]{0,3})?",
        1 => "[a-z0-9 .+-]{0,4}",
    ]
}

fn number() -> impl Strategy<Value = String> {
    prop::sample::select(NUMBERS).prop_map(String::from)
}

fn string() -> impl Strategy<Value = String> {
    prop::sample::select(STRINGS).prop_map(String::from)
}

fn literal() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => number(),
        4 => string(),
        1 => prop::sample::select(vec!["TRUE", "FALSE", "NULL"]).prop_map(String::from),
    ]
}

fn operand() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(PROPS.to_vec()).prop_map(String::from),
        1 => prop::sample::select(HEADERS.to_vec()).prop_map(String::from),
    ]
}

/// Arithmetic over operands, numbers and `NULL`, parenthesized.
fn arith() -> impl Strategy<Value = String> {
    let atom = prop_oneof![
        3 => operand(),
        2 => number(),
        1 => Just("NULL".to_string()),
    ];
    atom.prop_recursive(3, 8, 2, |inner| {
        prop_oneof![
            (
                inner.clone(),
                prop::sample::select(vec!["+", "-", "*", "/", "%"]),
                inner.clone()
            )
                .prop_map(|(a, op, b)| format!("({a} {op} {b})")),
            inner.prop_map(|a| format!("-({a})")),
        ]
    })
}

fn not() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["", "NOT "])
}

/// One condition of the kinds selectors are made of.
fn leaf() -> impl Strategy<Value = String> {
    let cmp = || prop::sample::select(vec!["=", "<>", "<", "<=", ">", ">="]);
    prop_oneof![
        // Operand against a literal, either order.
        6 => (operand(), cmp(), literal(), any::<bool>()).prop_map(|(x, op, lit, flip)| {
            if flip { format!("{lit} {op} {x}") } else { format!("{x} {op} {lit}") }
        }),
        // BETWEEN numbers, sometimes a string or NULL bound.
        3 => (operand(), not(), number(), number()).prop_map(|(x, n, lo, hi)| {
            format!("{x} {n}BETWEEN {lo} AND {hi}")
        }),
        1 => (operand(), not(), literal(), literal()).prop_map(|(x, n, lo, hi)| {
            format!("{x} {n}BETWEEN {lo} AND {hi}")
        }),
        // IN lists: strings, numbers or mixed, with NULL and duplicates.
        3 => (operand(), not(), prop::collection::vec(string(), 1..5)).prop_map(
            |(x, n, items)| format!("{x} {n}IN ({})", items.join(", "))
        ),
        2 => (operand(), not(), prop::collection::vec(literal(), 1..5)).prop_map(
            |(x, n, items)| format!("{x} {n}IN ({})", items.join(", "))
        ),
        2 => (operand(), not()).prop_map(|(x, n)| format!("{x} IS {n}NULL")),
        // Arithmetic operands.
        2 => (arith(), cmp(), literal(), any::<bool>()).prop_map(|(x, op, lit, flip)| {
            if flip { format!("{lit} {op} {x}") } else { format!("{x} {op} {lit}") }
        }),
        1 => (arith(), not(), number(), number()).prop_map(|(x, n, lo, hi)| {
            format!("{x} {n}BETWEEN {lo} AND {hi}")
        }),
        1 => (arith(), not(), prop::collection::vec(literal(), 1..4)).prop_map(
            |(x, n, items)| format!("{x} {n}IN ({})", items.join(", "))
        ),
        1 => (arith(), not()).prop_map(|(x, n)| format!("{x} IS {n}NULL")),
        // Shapes left to the reference evaluator.
        1 => (operand(), cmp(), operand()).prop_map(|(x, op, y)| format!("{x} {op} {y}")),
        1 => (arith(), cmp(), operand()).prop_map(|(x, op, y)| format!("{x} {op} {y}")),
        1 => (operand(), not(), prop::sample::select(vec!["'n%'", "'_'", "'%'", "''"]))
            .prop_map(|(x, n, p)| format!("{x} {n}LIKE {p}")),
        1 => prop::sample::select(vec!["a", "b", "$retain", "TRUE", "FALSE", "NULL", "1 = 1"])
            .prop_map(String::from),
    ]
}

fn selector() -> impl Strategy<Value = String> {
    leaf().prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            inner.clone().prop_map(|a| format!("NOT ({a})")),
            prop::collection::vec(inner.clone(), 2..4)
                .prop_map(|v| format!("({})", v.join(" AND "))),
            prop::collection::vec(inner, 2..4).prop_map(|v| format!("({})", v.join(" OR "))),
        ]
    })
}

fn message() -> impl Strategy<Value = OwnedMessage> {
    let props = prop::collection::vec((prop::sample::select(KEYS.to_vec()), value()), 0..6);
    (
        props,
        prop::sample::select(vec!["sensors/7/temp", "", "north", "é"]),
        0u8..3,
        any::<bool>(),
        prop::option::of(prop::sample::select(vec!["dev-7", "", "north"])),
        prop::option::of(prop::sample::select(vec!["text/plain", "5"])),
        prop::option::of(prop_oneof![Just(1_700_000_000_000i64), Just(5), Just(-1)]),
    )
        .prop_map(|(props, topic, qos, retain, client_id, content_type, ts)| {
            let mut m = OwnedMessage::new(topic);
            for (k, v) in props {
                m = m.with(k, v);
            }
            m.qos = qos;
            m.retain = retain;
            m.client_id = client_id.map(String::from);
            m.content_type = content_type.map(String::from);
            m.timestamp_ms = ts;
            m
        })
}

/// A view like a guest's: it holds raw bytes and overrides `property_bytes`.
struct RawView<'a>(&'a OwnedMessage);

impl MessageView for RawView<'_> {
    fn property(&self, name: &str) -> Option<&str> {
        self.property_bytes(name)
            .and_then(|b| std::str::from_utf8(b).ok())
    }
    fn property_bytes(&self, name: &str) -> Option<&[u8]> {
        self.0
            .properties
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_bytes())
    }
    fn topic(&self) -> &str {
        &self.0.topic
    }
    fn qos(&self) -> u8 {
        self.0.qos
    }
    fn retain(&self) -> bool {
        self.0.retain
    }
    fn client_id(&self) -> Option<&str> {
        self.0.client_id.as_deref()
    }
    fn content_type(&self) -> Option<&str> {
        self.0.content_type.as_deref()
    }
    fn timestamp_ms(&self) -> Option<i64> {
        self.0.timestamp_ms
    }
}

fn agree(text: &str, msg: &OwnedMessage) -> Result<(), TestCaseError> {
    for options in [
        Options::default(),
        Options::default().coerce_property_strings(false),
    ] {
        // Numbers out of range and the like are parse errors; only compiled selectors count.
        let Ok(selector) = Selector::parse_with(text, options) else {
            return Ok(());
        };
        let want = selector.evaluate_reference(msg);
        prop_assert_eq!(
            selector.evaluate(msg),
            want,
            "{} coerce={:?}",
            text,
            options
        );
        prop_assert_eq!(
            selector.evaluate(&RawView(msg)),
            want,
            "{} (raw view)",
            text
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn fast_evaluator_agrees_with_the_reference(text in selector(), msg in message()) {
        agree(&text, &msg)?;
    }

    /// Single leaves against messages that set the leaf's property, so that every value
    /// meets every literal.
    #[test]
    fn leaves_agree_on_every_value(text in leaf(), v in value(), w in value()) {
        let msg = OwnedMessage::new("sensors/7/temp")
            .with("a", v.clone())
            .with("b", w)
            .with("a", "1")
            .with("n-m", v);
        agree(&text, &msg)?;
    }
}

#[test]
fn common_selectors_agree() {
    let selectors = [
        "temperature > 30 AND site = 'north'",
        "site IN ('north', 'east') AND temperature BETWEEN 25 AND 35",
        "NOT (temperature < 30) OR $qos = 1",
        "30 < temperature",
        "temperature <> 31 OR site <> 'south'",
        "NOT (site IN ('north', NULL))",
        "temperature IS NULL OR NOT (temperature > 30)",
        "$topic = 'sensors/dev-3/temp' AND $client_id = 'dev'",
        "$timestamp >= 1700000000000 AND $retain = FALSE",
        "(temperature * 9 / 5 + 32) > 86 AND -temperature < -25",
        "temperature % 3 = 0 OR temperature / 0 = 1 OR temperature + 9223372036854775807 > 0",
    ];
    for s in selectors {
        let selector = Selector::parse(s).expect("parses");
        for i in 0..40 {
            let mut msg = OwnedMessage::new(format!("sensors/dev-{i}/temp"))
                .with("temperature", (20 + i % 20).to_string())
                .with("site", if i % 2 == 0 { "north" } else { "south" });
            msg.qos = u8::try_from(i % 3).expect("small");
            msg.client_id = Some("dev".into());
            msg.timestamp_ms = Some(1_700_000_000_000 + i64::from(i) - 20);
            if i % 7 == 0 {
                msg.properties.clear();
            }
            assert_eq!(
                selector.evaluate(&msg),
                selector.evaluate_reference(&msg),
                "{s}"
            );
        }
    }
}

/// A view whose bytes are not UTF-8 (only a hub bug could send one): the fast evaluator reads
/// them as a value that is no number and equals no literal, and never panics.
#[test]
fn bytes_that_are_not_utf8_are_just_unequal() {
    struct Broken;
    impl MessageView for Broken {
        fn property(&self, _: &str) -> Option<&str> {
            None
        }
        fn property_bytes(&self, _: &str) -> Option<&[u8]> {
            Some(b"3\xff")
        }
        fn topic(&self) -> &str {
            "t"
        }
        fn qos(&self) -> u8 {
            0
        }
        fn retain(&self) -> bool {
            false
        }
    }
    let eval = |s: &str| Selector::parse(s).expect("parses").evaluate(&Broken);
    assert_eq!(eval("a = 3"), Truth::False);
    assert_eq!(eval("a <> 3"), Truth::True);
    assert_eq!(eval("a = 'x'"), Truth::False);
    assert_eq!(eval("a BETWEEN 1 AND 5"), Truth::False);
    assert_eq!(eval("a IN ('x', 3)"), Truth::False);
    assert_eq!(eval("a IS NULL"), Truth::False);
}
