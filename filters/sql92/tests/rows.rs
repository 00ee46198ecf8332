//! Data-driven semantics: each row is a selector, the message's user properties and the
//! expected result. Every row is checked twice: as written, and wrapped as `NOT (selector)`,
//! which must give the three-valued negation (TRUE↔FALSE, UNKNOWN stays UNKNOWN) or, for a
//! parse error, still be a parse error.
//!
//! Every row runs against the same headers: topic `sensors/7/temp`, QoS 1, not retained,
//! client id `dev-7`, no content type, timestamp 1 700 000 000 000.

use tern_sql92::{Options, OwnedMessage, Selector, Truth};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    T,
    F,
    U,
    /// PARSE_ERROR
    E,
}
use Want::{E, F, T, U};

type Row = (&'static str, &'static [(&'static str, &'static str)], Want);

const NONE: &[(&str, &str)] = &[];

fn message(props: &[(&str, &str)]) -> OwnedMessage {
    let mut m = OwnedMessage::new("sensors/7/temp");
    m.qos = 1;
    m.client_id = Some("dev-7".into());
    m.timestamp_ms = Some(1_700_000_000_000);
    for (k, v) in props {
        m = m.with(*k, *v);
    }
    m
}

fn outcome(selector: &str, options: Options, props: &[(&str, &str)]) -> Want {
    match Selector::parse_with(selector, options) {
        Err(_) => E,
        Ok(s) => {
            let msg = message(props);
            let truth = s.evaluate(&msg);
            assert_eq!(s.matches(&msg), truth == Truth::True, "{selector}");
            match truth {
                Truth::True => T,
                Truth::False => F,
                Truth::Unknown => U,
            }
        }
    }
}

fn negation(w: Want) -> Want {
    match w {
        T => F,
        F => T,
        U => U,
        E => E,
    }
}

fn check(rows: &[Row], options: Options) {
    let mut failures = Vec::new();
    for &(selector, props, want) in rows {
        let got = outcome(selector, options, props);
        if got != want {
            failures.push(format!(
                "{selector:?} {props:?}: want {want:?}, got {got:?}"
            ));
        }
        // A selector with an unclosed `(` becomes valid once wrapped in `NOT ( … )`; only
        // balanced selectors can promise that the wrapped form fails too.
        let unclosed = selector.matches('(').count() > selector.matches(')').count();
        if want == E && unclosed {
            continue;
        }
        // New lines keep a trailing `--` comment from swallowing the closing parenthesis.
        let wrapped = format!("NOT (\n{selector}\n)");
        let got = outcome(&wrapped, options, props);
        if got != negation(want) {
            failures.push(format!(
                "{wrapped:?} {props:?}: want {:?}, got {got:?}",
                negation(want)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
}

const TRUTH_TABLES: &[Row] = &[
    // `u` is a missing property: UNKNOWN in a boolean context.
    ("TRUE", NONE, T),
    ("FALSE", NONE, F),
    ("u", NONE, U),
    ("NULL", NONE, U),
    ("TRUE AND TRUE", NONE, T),
    ("TRUE AND FALSE", NONE, F),
    ("TRUE AND u", NONE, U),
    ("FALSE AND TRUE", NONE, F),
    ("FALSE AND FALSE", NONE, F),
    ("FALSE AND u", NONE, F),
    ("u AND TRUE", NONE, U),
    ("u AND FALSE", NONE, F),
    ("u AND u", NONE, U),
    ("TRUE OR TRUE", NONE, T),
    ("TRUE OR FALSE", NONE, T),
    ("TRUE OR u", NONE, T),
    ("FALSE OR TRUE", NONE, T),
    ("FALSE OR FALSE", NONE, F),
    ("FALSE OR u", NONE, U),
    ("u OR TRUE", NONE, T),
    ("u OR FALSE", NONE, U),
    ("u OR u", NONE, U),
    ("NOT TRUE", NONE, F),
    ("NOT FALSE", NONE, T),
    ("NOT u", NONE, U),
    ("NOT NOT u", NONE, U),
    ("TRUE AND TRUE AND u OR TRUE", NONE, T),
    ("FALSE OR FALSE OR FALSE OR u", NONE, U),
    // Property strings `true`/`false` (any case) act as booleans; other strings are UNKNOWN.
    ("flag", &[("flag", "true")], T),
    ("flag", &[("flag", "TRUE")], T),
    ("flag", &[("flag", "False")], F),
    ("flag", &[("flag", "yes")], U),
    ("flag", &[("flag", "1")], U),
    ("flag AND TRUE", &[("flag", "true")], T),
];

const MISSING: &[Row] = &[
    // Every operator with a missing property `m`, in both operand positions (symmetric).
    ("m = 1", NONE, U),
    ("1 = m", NONE, U),
    ("m = 'x'", NONE, U),
    ("'x' = m", NONE, U),
    ("m <> 1", NONE, U),
    ("'x' <> m", NONE, U),
    ("m < 1", NONE, U),
    ("1 < m", NONE, U),
    ("m <= 1", NONE, U),
    ("m > 1", NONE, U),
    ("1 >= m", NONE, U),
    ("m = m", NONE, U),
    ("m = TRUE", NONE, U),
    ("m + 1 = 2", NONE, U),
    ("1 + m = 2", NONE, U),
    ("m - 1 = 2", NONE, U),
    ("m * 2 = 2", NONE, U),
    ("m / 2 = 2", NONE, U),
    ("2 / m = 2", NONE, U),
    ("m % 2 = 0", NONE, U),
    ("-m = 1", NONE, U),
    ("+m = 1", NONE, U),
    ("m BETWEEN 1 AND 2", NONE, U),
    ("m NOT BETWEEN 1 AND 2", NONE, U),
    ("1 BETWEEN m AND 2", NONE, U),
    ("1 BETWEEN 0 AND m", NONE, U),
    ("m IN ('a', 'b')", NONE, U),
    ("m NOT IN ('a', 'b')", NONE, U),
    ("m LIKE 'a%'", NONE, U),
    ("m NOT LIKE 'a%'", NONE, U),
    ("m LIKE '%'", NONE, U),
    ("m CONTAINS 'a'", NONE, U),
    ("m NOT CONTAINS 'a'", NONE, U),
    ("m STARTSWITH 'a'", NONE, U),
    ("m NOT STARTSWITH 'a'", NONE, U),
    ("m ENDSWITH 'a'", NONE, U),
    ("m NOT ENDSWITH 'a'", NONE, U),
    ("m IS NULL", NONE, T),
    ("m IS NOT NULL", NONE, F),
    ("m AND TRUE", NONE, U),
    ("m AND FALSE", NONE, F),
    ("m OR TRUE", NONE, T),
    ("m OR FALSE", NONE, U),
    // Missing versus empty string.
    ("e IS NULL", &[("e", "")], F),
    ("e IS NOT NULL", &[("e", "")], T),
    ("e = ''", &[("e", "")], T),
    ("'' = e", &[("e", "")], T),
    ("e LIKE ''", &[("e", "")], T),
    ("e LIKE '%'", &[("e", "")], T),
    ("e LIKE '_'", &[("e", "")], F),
    ("e = 0", &[("e", "")], F),
    ("e + 1 = 1", &[("e", "")], U),
    ("m = ''", NONE, U),
    // NULL literal.
    ("NULL = NULL", NONE, U),
    ("NULL IS NULL", NONE, T),
    ("NULL + 1 IS NULL", NONE, T),
    ("(1 = NULL) IS NULL", NONE, T),
];

const KEYWORDS_AND_IDENTIFIERS: &[Row] = &[
    ("a = 1 and b = 2", &[("a", "1"), ("b", "2")], T),
    ("a = 1 AnD b = 2 oR FaLsE", &[("a", "1"), ("b", "2")], T),
    ("a iS nUlL", NONE, T),
    ("a is not null", &[("a", "x")], T),
    ("tRuE", NONE, T),
    ("a between 1 And 3", &[("a", "2")], T),
    ("a Not In ('x')", &[("a", "y")], T),
    ("a lIkE 'x%' eScApE '!'", &[("a", "xy")], T),
    ("a contains 'x'", &[("a", "axb")], T),
    ("a startsWith 'x'", &[("a", "xb")], T),
    ("a endswith 'b'", &[("a", "xb")], T),
    // Identifiers are case-sensitive.
    ("A = 1", &[("a", "1")], U),
    ("a = 1", &[("A", "1")], U),
    ("Site = 'north'", &[("Site", "north")], T),
    ("température > 30", &[("température", "31")], T),
    ("_x$y = 1", &[("_x$y", "1")], T),
    // Keywords are reserved; double quotes make any name a property.
    ("and = 1", NONE, E),
    ("or = 1", NONE, E),
    // NULL is a literal, so this compares NULL with 1.
    ("null = 1", NONE, U),
    ("\"null\" = 1", &[("null", "1")], T),
    ("\"and\" = 'x'", &[("and", "x")], T),
    ("\"device-id\" = 'd1'", &[("device-id", "d1")], T),
    ("\"a\"\"b\" = 'q'", &[("a\"b", "q")], T),
    ("\"$topic\" = 'p'", &[("$topic", "p")], T),
    ("\"\" = 'v'", &[("", "v")], T),
    ("\"abc = 1", NONE, E),
    // Double quotes name a property, not a string: `site = "north"` compares two properties.
    ("site = \"north\"", &[("site", "north")], U),
    // Duplicate keys: the first value wins.
    ("a = 1", &[("a", "1"), ("a", "2")], T),
    ("a = 2", &[("a", "1"), ("a", "2")], F),
    ("a IN (2)", &[("a", "1"), ("a", "2")], F),
];

const HEADERS: &[Row] = &[
    ("$topic = 'sensors/7/temp'", NONE, T),
    ("$topic LIKE 'sensors/%/temp'", NONE, T),
    ("$topic STARTSWITH 'sensors/'", NONE, T),
    ("$qos = 1", NONE, T),
    ("$qos >= 1 AND $qos < 2", NONE, T),
    ("$qos IN (0, 1)", NONE, T),
    ("$retain", NONE, F),
    ("$retain = FALSE", NONE, T),
    ("NOT $retain", NONE, T),
    ("$client_id = 'dev-7'", NONE, T),
    ("$content_type IS NULL", NONE, T),
    ("$content_type = 'x'", NONE, U),
    ("$timestamp > 1600000000000", NONE, T),
    ("$timestamp = 1700000000000", NONE, T),
    // Headers are typed: no string/number coercion.
    ("$qos = '1'", NONE, F),
    ("$topic = 1", NONE, F),
    ("$qos LIKE '1'", NONE, F),
    // A property may share a header's name without the `$`.
    ("topic = 'x'", &[("topic", "x")], T),
    ("$topic = 'x'", &[("topic", "x")], F),
    ("$TOPIC = 'x'", NONE, E),
    ("$foo = 1", NONE, E),
    ("$ = 1", NONE, E),
    // Header types are checked when parsing.
    ("$qos", NONE, E),
    ("$topic AND TRUE", NONE, E),
    ("$topic + 1 = 2", NONE, E),
    ("$retain + 1 = 2", NONE, E),
];

const STRINGS: &[Row] = &[
    ("s = 'it''s'", &[("s", "it's")], T),
    ("'it''s' = s", &[("s", "it's")], T),
    ("q = ''''", &[("q", "'")], T),
    ("q = ''''''", &[("q", "''")], T),
    ("q = 'a''''b'", &[("q", "a''b")], T),
    ("s = 'it''s'", &[("s", "it''s")], F),
    ("s = 'abc", NONE, E),
    ("s = 'it''s", NONE, E),
    ("s = '", NONE, E),
    ("'a' = 'a'", NONE, T),
    ("'a' = 'A'", NONE, F),
    ("'a' < 'b'", NONE, T),
    ("'B' < 'a'", NONE, T),
    ("'abc' >= 'abd'", NONE, F),
    ("'' < 'a'", NONE, T),
    ("s = 'ünï'", &[("s", "ünï")], T),
    ("s = 'line\nbreak'", &[("s", "line\nbreak")], T),
];

const NUMERIC_LITERALS: &[Row] = &[
    ("n = 1.", &[("n", "1")], T),
    ("n = 1.0", &[("n", "1")], T),
    ("n = 1E0", &[("n", "1")], T),
    ("h = .5", &[("h", "0.5")], T),
    ("h = 5E-1", &[("h", "0.5")], T),
    ("h = 0.5e0", &[("h", "0.5")], T),
    ("h = .5E+0", &[("h", ".5")], T),
    ("1000 = 1E3", NONE, T),
    ("1E3 = 1000.0", NONE, T),
    ("1.5E+2 = 150", NONE, T),
    ("0x1F = 31", NONE, T),
    ("0X1f = 31", NONE, T),
    ("-0x1 = -1", NONE, T),
    ("0x7FFFFFFFFFFFFFFF = 9223372036854775807", NONE, T),
    ("-0x8000000000000000 = -9223372036854775807 - 1", NONE, T),
    ("010 = 10", NONE, T),
    ("007 = 7", NONE, T),
    ("9223372036854775807 = 9223372036854775807", NONE, T),
    ("-9223372036854775808 = -9223372036854775807 - 1", NONE, T),
    ("-9223372036854775808 < -9223372036854775807", NONE, T),
    // Past the i64 range a literal becomes approximate.
    ("9223372036854775808 > 0", NONE, T),
    ("99999999999999999999 > 1E19", NONE, T),
    ("99999999999999999999 = 1E20", NONE, T),
    ("9223372036854775807 + 1 = 9223372036854775808", NONE, T),
    ("1E308 > 1", NONE, T),
    ("1.e2 = 100", NONE, T),
    ("1e-400 = 0", NONE, T),
    ("00.5e-0 = .5", NONE, T),
    ("1E400 > 1", NONE, E),
    ("0x8000000000000000 > 0", NONE, E),
    ("0xFFFFFFFFFFFFFFFF = -1", NONE, E),
    ("0x10000000000000000 = 0", NONE, E),
    ("1e = 1", NONE, E),
    ("1e+ = 1", NONE, E),
    ("0x = 0", NONE, E),
    ("0xg = 0", NONE, E),
    ("1abc = 1", NONE, E),
    ("1.2.3 = 1", NONE, E),
    ("1..2 = 1", NONE, E),
    (". = 1", NONE, E),
    // Java's type suffixes (JMS literals use Java's syntax).
    ("1L = 1", NONE, T),
    ("1l + 1 = 2", NONE, T),
    ("0x7BL = 123", NONE, T),
    ("9223372036854775807L = 9223372036854775807", NONE, T),
    ("1.5f = 1.5", NONE, T),
    ("1.5D = 1.5", NONE, T),
    ("2d / 4 = 0.5", NONE, T),
    ("1E2f = 100", NONE, T),
    ("1.5L = 1", NONE, E),
    ("1LL = 1", NONE, E),
    ("1Lx = 1", NONE, E),
    ("1fd = 1", NONE, E),
    ("1 = 1", NONE, T),
    ("-1 = 0 - 1", NONE, T),
    ("+1 = 1", NONE, T),
    ("a IN (-1, +2)", &[("a", "2")], T),
];

const ARITHMETIC: &[Row] = &[
    ("17 / 4 = 4", NONE, T),
    ("17 / 4.0 = 4.25", NONE, T),
    ("17.0 / 4 = 4.25", NONE, T),
    ("-17 / 4 = -4", NONE, T),
    ("17 % 5 = 2", NONE, T),
    ("-17 % 5 = -2", NONE, T),
    ("17 % -5 = 2", NONE, T),
    ("7.5 % 2 = 1.5", NONE, T),
    ("1 / 0 = 1", NONE, U),
    ("1 / 0 IS NULL", NONE, T),
    ("1.0 / 0 IS NULL", NONE, T),
    ("1 / 0.0 IS NULL", NONE, T),
    ("0 / 0 = 0", NONE, U),
    ("1 % 0 IS NULL", NONE, T),
    ("n / z > 0", &[("n", "1"), ("z", "0")], U),
    ("9223372036854775807 * 2 > 9223372036854775807", NONE, T),
    (
        "9223372036854775807 + 9223372036854775807 = 1.8446744073709552E19",
        NONE,
        T,
    ),
    // Overflow goes approximate: within one f64 step of 2^63 values compare equal.
    ("-9223372036854775807 - 10 = -9223372036854775807", NONE, T),
    (
        "-9223372036854775807 - 10000 < -9223372036854775807",
        NONE,
        T,
    ),
    ("-9223372036854775808 / -1 > 0", NONE, T),
    ("-9223372036854775808 % -1 = 0", NONE, T),
    ("- (-9223372036854775807 - 1) > 0", NONE, T),
    ("1E308 * 10 > 1E308", NONE, T),
    ("1 = 1.0", NONE, T),
    ("1 <> 1.0", NONE, F),
    ("3 > 2.5", NONE, T),
    ("0.1 + 0.2 = 0.3", NONE, F),
    ("0.5 + 0.25 = 0.75", NONE, T),
    ("n + 1 = 11", &[("n", "10")], T),
    ("n / 4 = 2", &[("n", "10")], T),
    ("n / 4.0 = 2.5", &[("n", "10")], T),
    ("f * 2 = 5", &[("f", "2.5")], T),
    ("n * 1.5 = 15", &[("n", "10")], T),
    ("-n = -10", &[("n", "10")], T),
    ("+n = 10.0", &[("n", "10")], T),
    ("s + 1 = 1", &[("s", "abc")], U),
    ("-s = 1", &[("s", "abc")], U),
    ("a + b = 3", &[("a", "1"), ("b", "2")], T),
    // Static type errors.
    ("'a' + 1 = 2", NONE, E),
    ("1 + 'a' = 2", NONE, E),
    ("TRUE + 1 = 2", NONE, E),
    ("- 'a' = 1", NONE, E),
    ("-TRUE = 1", NONE, E),
    ("(1 = 1) + 1 = 2", NONE, E),
];

const COERCION: &[Row] = &[
    ("n = 10", &[("n", "10")], T),
    ("10 = n", &[("n", "10")], T),
    ("n > 9", &[("n", "10")], T),
    ("9 < n", &[("n", "10")], T),
    ("n = 10.0", &[("n", "10")], T),
    ("n = '10'", &[("n", "10")], T),
    ("'10' = n", &[("n", "10")], T),
    ("n = '10.0'", &[("n", "10")], F),
    ("n = 5", &[("n", "+5")], T),
    ("n = -0.5", &[("n", "-.5")], T),
    ("n = 1000", &[("n", "1e3")], T),
    ("n = 0", &[("n", "-0")], T),
    ("n = 16", &[("n", "0x10")], F),
    ("n = 10", &[("n", " 10")], F),
    ("n = 10", &[("n", "10 ")], F),
    ("n > 0", &[("n", "inf")], F),
    ("n > 0", &[("n", "NaN")], F),
    ("n = 1", &[("n", "1.")], T),
    ("n = 1", &[("n", ".")], F),
    ("n > 1E19", &[("n", "99999999999999999999")], T),
    // Non-numeric strings against numbers: `=` and orderings FALSE, `<>` TRUE, both orders.
    ("s = 1", &[("s", "abc")], F),
    ("1 = s", &[("s", "abc")], F),
    ("s <> 1", &[("s", "abc")], T),
    ("1 <> s", &[("s", "abc")], T),
    ("s > 1", &[("s", "abc")], F),
    ("1 < s", &[("s", "abc")], F),
    ("s >= 1", &[("s", "abc")], F),
    ("1 >= s", &[("s", "abc")], F),
    ("s <= 1", &[("s", "abc")], F),
    ("'1' = 1", NONE, F),
    ("1 = '1'", NONE, F),
    ("'abc' > 1", NONE, F),
    ("'1' <> 1", NONE, T),
    // Two properties compare as numbers when both look numeric, else as strings.
    ("a > b", &[("a", "10"), ("b", "9")], T),
    ("a = b", &[("a", "10"), ("b", "10.0")], T),
    ("a > b", &[("a", "10"), ("b", "x")], F),
    ("a < b", &[("a", "10"), ("b", "x")], T),
    ("a = b", &[("a", "x"), ("b", "x")], T),
    // Booleans.
    ("TRUE = TRUE", NONE, T),
    ("TRUE <> FALSE", NONE, T),
    ("TRUE > FALSE", NONE, F),
    ("TRUE = 1", NONE, F),
    ("TRUE = 'true'", NONE, F),
    ("b = TRUE", &[("b", "true")], T),
    ("TRUE = b", &[("b", "True")], T),
    ("b = FALSE", &[("b", "true")], F),
    ("b = TRUE", &[("b", "1")], F),
    ("b <> TRUE", &[("b", "1")], T),
    ("b = 'true'", &[("b", "true")], T),
    ("(1 < 2) = TRUE", NONE, T),
    ("1 < 2 = TRUE", NONE, T),
];

const BETWEEN: &[Row] = &[
    ("n BETWEEN 1 AND 10", &[("n", "5")], T),
    ("n BETWEEN 5 AND 5", &[("n", "5")], T),
    ("n BETWEEN 6 AND 10", &[("n", "5")], F),
    ("n BETWEEN 10 AND 1", &[("n", "5")], F),
    ("n NOT BETWEEN 10 AND 1", &[("n", "5")], T),
    ("n NOT BETWEEN 1 AND 10", &[("n", "5")], F),
    ("n BETWEEN NULL AND 10", &[("n", "5")], U),
    ("n BETWEEN NULL AND 3", &[("n", "5")], F),
    ("n BETWEEN 6 AND NULL", &[("n", "5")], F),
    ("n BETWEEN 1 AND NULL", &[("n", "5")], U),
    ("n NOT BETWEEN 1 AND NULL", &[("n", "5")], U),
    ("n NOT BETWEEN 6 AND NULL", &[("n", "5")], T),
    ("n BETWEEN m AND 10", &[("n", "5")], U),
    ("n BETWEEN 1 AND 2 + 3", &[("n", "5")], T),
    ("n BETWEEN 1 AND 10 AND TRUE", &[("n", "5")], T),
    ("n BETWEEN 1 AND 10 AND FALSE", &[("n", "5")], F),
    ("n BETWEEN 4.5 AND 5.5", &[("n", "5")], T),
    (
        "n BETWEEN lo AND hi",
        &[("n", "5"), ("lo", "1"), ("hi", "9")],
        T,
    ),
    ("5 BETWEEN 1 AND 10", NONE, T),
    ("s BETWEEN 1 AND 10", &[("s", "abc")], F),
    ("s NOT BETWEEN 1 AND 10", &[("s", "abc")], T),
    ("s BETWEEN 'a' AND 'b'", &[("s", "abc")], T),
    ("s BETWEEN 'b' AND 'c'", &[("s", "abc")], F),
    ("n BETWEEN 1", &[("n", "5")], E),
    ("n BETWEEN 1 OR 2", &[("n", "5")], E),
    ("n BETWEEN AND 2", &[("n", "5")], E),
];

const IN: &[Row] = &[
    ("s IN ('a', 'b', 'c')", &[("s", "b")], T),
    ("s IN ('a', 'a')", &[("s", "b")], F),
    ("s IN ('b', 'b')", &[("s", "b")], T),
    ("s IN ('a')", &[("s", "b")], F),
    ("s NOT IN ('a')", &[("s", "b")], T),
    ("s NOT IN ('b', 'b')", &[("s", "b")], F),
    ("s IN ('a', NULL)", &[("s", "b")], U),
    ("s IN ('b', NULL)", &[("s", "b")], T),
    ("s IN (NULL)", &[("s", "b")], U),
    ("s NOT IN ('a', NULL)", &[("s", "b")], U),
    ("s NOT IN ('b', NULL)", &[("s", "b")], F),
    ("s IN ('B')", &[("s", "b")], F),
    ("s IN ('')", &[("s", "")], T),
    ("s IN ('it''s')", &[("s", "it's")], T),
    ("NULL IN ('a')", NONE, U),
    ("n IN (5, 6)", &[("n", "5")], T),
    ("n IN ('5')", &[("n", "5")], T),
    ("n IN (5.0)", &[("n", "5")], T),
    ("n IN ('5.0')", &[("n", "5")], F),
    ("n IN (-5, 5)", &[("n", "5")], T),
    ("n IN (0x5)", &[("n", "5")], T),
    ("n IN (1, 2, 3)", &[("n", "5")], F),
    ("5 IN ('5')", NONE, F),
    ("'5' IN (5)", NONE, F),
    ("b IN (TRUE)", &[("b", "true")], T),
    ("b IN (FALSE)", &[("b", "true")], F),
    ("TRUE IN (TRUE, 1)", NONE, T),
    ("$qos IN (1)", NONE, T),
    ("s IN ()", &[("s", "b")], E),
    ("s IN ('a',)", &[("s", "b")], E),
    ("s IN 'a'", &[("s", "b")], E),
    ("s IN (t)", &[("s", "b")], E),
    ("s IN ('a' 'b')", &[("s", "b")], E),
    ("s IN ('a', 1 + 1)", &[("s", "b")], E),
    ("s IN (- 'a')", &[("s", "b")], E),
];

const LIKE: &[Row] = &[
    ("s LIKE 'h%'", &[("s", "hello")], T),
    ("s LIKE '%o'", &[("s", "hello")], T),
    ("s LIKE '%ll%'", &[("s", "hello")], T),
    ("s LIKE 'h_llo'", &[("s", "hello")], T),
    ("s LIKE 'h_lo'", &[("s", "hello")], F),
    ("s LIKE '_____'", &[("s", "hello")], T),
    ("s LIKE '______'", &[("s", "hello")], F),
    ("s LIKE '____'", &[("s", "hello")], F),
    ("s LIKE 'hello'", &[("s", "hello")], T),
    ("s LIKE 'Hello'", &[("s", "hello")], F),
    ("s LIKE 'hell'", &[("s", "hello")], F),
    ("s LIKE '%'", &[("s", "hello")], T),
    ("s LIKE '%%'", &[("s", "hello")], T),
    ("s LIKE 'h%l%o'", &[("s", "hello")], T),
    ("s LIKE 'h%x%o'", &[("s", "hello")], F),
    ("s LIKE '%l_o'", &[("s", "hello")], T),
    ("s LIKE '%_'", &[("s", "hello")], T),
    ("s LIKE '_%_'", &[("s", "hi")], T),
    ("s LIKE '_%_'", &[("s", "h")], F),
    ("s LIKE '%lo%lo'", &[("s", "hello lo")], T),
    ("s LIKE 'a%a%a'", &[("s", "aa")], F),
    ("s LIKE 'a%a%a'", &[("s", "aaa")], T),
    ("s NOT LIKE 'h%'", &[("s", "hello")], F),
    ("s NOT LIKE 'x%'", &[("s", "hello")], T),
    ("u LIKE '_'", &[("u", "é")], T),
    ("u LIKE '__'", &[("u", "é")], F),
    ("u LIKE 'caf_'", &[("u", "café")], T),
    ("u LIKE '%é'", &[("u", "café")], T),
    // Regular-expression metacharacters are literal.
    ("r LIKE 'a.c'", &[("r", "a.c")], T),
    ("r LIKE 'a.c'", &[("r", "abc")], F),
    ("r LIKE 'a*'", &[("r", "a*")], T),
    ("r LIKE 'a*'", &[("r", "aaa")], F),
    ("r LIKE '.*'", &[("r", "anything")], F),
    ("r LIKE '(x)[y]{2}+?^$|\\'", &[("r", "(x)[y]{2}+?^$|\\")], T),
    ("r LIKE '^a'", &[("r", "a")], F),
    ("r LIKE 'a\\%'", &[("r", "a\\xyz")], T),
    // ESCAPE.
    ("p LIKE '100\\%' ESCAPE '\\'", &[("p", "100%")], T),
    ("p LIKE '100\\%' ESCAPE '\\'", &[("p", "1000")], F),
    ("p LIKE 'a!_b' ESCAPE '!'", &[("p", "a_b")], T),
    ("p LIKE 'a!_b' ESCAPE '!'", &[("p", "axb")], F),
    ("p LIKE 'a!!b' ESCAPE '!'", &[("p", "a!b")], T),
    ("p LIKE '!%%' ESCAPE '!'", &[("p", "%abc")], T),
    ("p LIKE '!%%' ESCAPE '!'", &[("p", "abc")], F),
    ("p LIKE '5%%' ESCAPE '%'", &[("p", "5%")], T),
    ("p LIKE '5%%' ESCAPE '%'", &[("p", "50")], F),
    ("p LIKE 'a''%' ESCAPE ''''", &[("p", "a%")], T),
    ("p LIKE 'a''%' ESCAPE ''''", &[("p", "ab")], F),
    // The escape character before anything but `%`, `_` or itself, or at the end, is an
    // ordinary character (as in ActiveMQ and RocketMQ).
    ("p LIKE 'aéb' ESCAPE 'é'", &[("p", "aéb")], T),
    ("p LIKE 'aéb' ESCAPE 'é'", &[("p", "ab")], F),
    ("p LIKE 'aé_b' ESCAPE 'é'", &[("p", "a_b")], T),
    ("p LIKE 'a!' ESCAPE '!'", &[("p", "a!")], T),
    ("p LIKE 'a!b' ESCAPE '!'", &[("p", "a!b")], T),
    ("p LIKE 'a!b' ESCAPE '!'", &[("p", "ab")], F),
    ("p LIKE '%_%' ESCAPE '%'", &[("p", "_foo")], T),
    ("p LIKE '%_%' ESCAPE '%'", &[("p", "foo")], F),
    ("p LIKE '_a__' ESCAPE '_'", &[("p", "xa_")], T),
    ("p LIKE '_a__' ESCAPE '_'", &[("p", "xab")], F),
    ("p LIKE '%a%' ESCAPE '%'", &[("p", "xax")], T),
    ("p LIKE '%a%%' ESCAPE '%'", &[("p", "xa%")], T),
    ("p LIKE '%a%%' ESCAPE '%'", &[("p", "xax")], F),
    ("p LIKE 'x' ESCAPE ''", &[("p", "x")], E),
    ("p LIKE 'x' ESCAPE 'ab'", &[("p", "x")], E),
    ("p LIKE 'x' ESCAPE 1", &[("p", "x")], E),
    ("p LIKE 'x' ESCAPE", &[("p", "x")], E),
    ("p LIKE q", &[("p", "x"), ("q", "x")], E),
    ("p LIKE 1", &[("p", "1")], E),
    ("p LIKE", &[("p", "1")], E),
    // Not a string: a type mismatch, FALSE.
    ("n LIKE '1%'", &[("n", "123")], T),
    ("5 LIKE '5'", NONE, F),
    ("5 NOT LIKE '5'", NONE, T),
    ("TRUE LIKE 'T%'", NONE, F),
    // CONTAINS / STARTSWITH / ENDSWITH take the text literally.
    ("s CONTAINS 'ell'", &[("s", "hello")], T),
    ("s CONTAINS 'x'", &[("s", "hello")], F),
    ("s NOT CONTAINS 'x'", &[("s", "hello")], T),
    ("s CONTAINS ''", &[("s", "hello")], T),
    ("s STARTSWITH 'he'", &[("s", "hello")], T),
    ("s STARTSWITH 'lo'", &[("s", "hello")], F),
    ("s NOT STARTSWITH 'lo'", &[("s", "hello")], T),
    ("s ENDSWITH 'lo'", &[("s", "hello")], T),
    ("s NOT ENDSWITH 'lo'", &[("s", "hello")], F),
    ("s CONTAINS '%'", &[("s", "hello")], F),
    ("s CONTAINS '%'", &[("s", "50%")], T),
    ("s ENDSWITH '_'", &[("s", "hello")], F),
    ("s STARTSWITH '_'", &[("s", "_x")], T),
    ("s CONTAINS 'L'", &[("s", "hello")], F),
    ("s CONTAINS 1", &[("s", "1")], E),
    ("s CONTAINS t", &[("s", "1"), ("t", "1")], E),
    ("s CONTAINS 'a' ESCAPE '!'", &[("s", "a")], E),
];

const PRECEDENCE: &[Row] = &[
    ("TRUE OR TRUE AND FALSE", NONE, T),
    ("(TRUE OR TRUE) AND FALSE", NONE, F),
    ("TRUE AND FALSE OR TRUE", NONE, T),
    ("FALSE AND (FALSE OR TRUE)", NONE, F),
    ("NOT FALSE AND FALSE", NONE, F),
    ("NOT (FALSE AND FALSE)", NONE, T),
    ("NOT FALSE OR TRUE", NONE, T),
    ("NOT NOT TRUE", NONE, T),
    ("FALSE OR NOT FALSE", NONE, T),
    // NOT binds looser than comparisons (SQL).
    ("NOT a = 1", &[("a", "2")], T),
    ("NOT a = 2", &[("a", "2")], F),
    ("NOT a > 1 AND a < 5", &[("a", "2")], F),
    ("NOT a IS NULL", &[("a", "2")], T),
    ("1 + 2 * 3 = 7", NONE, T),
    ("(1 + 2) * 3 = 9", NONE, T),
    ("10 - 4 - 3 = 3", NONE, T),
    ("10 - (4 - 3) = 9", NONE, T),
    ("100 / 10 / 5 = 2", NONE, T),
    ("2 * 3 / 4 = 1", NONE, T),
    ("2 * (3 / 4) = 0", NONE, T),
    ("2 * 3 % 4 = 2", NONE, T),
    ("7 % 4 * 2 = 6", NONE, T),
    ("-2 * -3 = 6", NONE, T),
    ("- 2 + 3 = 1", NONE, T),
    ("- - 1 = 1", NONE, T),
    ("-(2 + 3) = -5", NONE, T),
    ("1 + 2 = 3 AND 2 * 3 = 6", NONE, T),
    ("1 + 1 > 1 = TRUE", NONE, T),
    ("a = 1 OR b = 2 AND c = 3", &[("a", "1")], T),
    ("(a = 1 OR b = 2) AND c = 3", &[("a", "1")], U),
    ("((((a = 1))))", &[("a", "1")], T),
    // Comparisons do not chain.
    ("1 < 2 < 3", NONE, E),
    ("1 = 1 = TRUE", NONE, E),
    ("a IS NULL IS NULL", NONE, E),
    ("a IS NULL = TRUE", NONE, E),
    ("a NOT = 1", NONE, E),
    ("a NOT NULL", NONE, E),
    ("a IS 1", NONE, E),
    ("a IS NOT", NONE, E),
    ("a IS", NONE, E),
    ("a = NOT b", NONE, E),
];

const SYNTAX: &[Row] = &[
    // Trailing garbage.
    ("a = 1 b", &[("a", "1")], E),
    ("a = 1 b = 2", &[("a", "1")], E),
    ("a = 1)", &[("a", "1")], E),
    ("a = 1 ;", &[("a", "1")], E),
    ("TRUE TRUE", NONE, E),
    ("TRUE 1", NONE, E),
    ("a = 1 AND", &[("a", "1")], E),
    ("a = 1 OR", &[("a", "1")], E),
    ("a =", NONE, E),
    ("= 1", NONE, E),
    ("", NONE, E),
    ("   ", NONE, E),
    ("NOT", NONE, E),
    // Unbalanced parentheses.
    ("(a = 1", &[("a", "1")], E),
    ("((TRUE)", NONE, E),
    ("TRUE)", NONE, E),
    ("(TRUE))", NONE, E),
    ("()", NONE, E),
    (")(", NONE, E),
    // Comments: `--` to end of line, `/* */` not nested.
    ("a = 1 -- trailing comment", &[("a", "1")], T),
    ("a = 1 --", &[("a", "1")], T),
    ("/* c */ a = 1", &[("a", "1")], T),
    ("a /* c */ = 1", &[("a", "1")], T),
    ("a = /* 2 */ 1", &[("a", "1")], T),
    ("a = 1 /**/", &[("a", "1")], T),
    ("a = 1 /* unterminated", &[("a", "1")], E),
    ("a = 1 /* nested /* */ */", &[("a", "1")], E),
    ("a = 1 -- c\nAND b = 2", &[("a", "1"), ("b", "2")], T),
    ("a = 1 -- c\nAND b = 2", &[("a", "1")], U),
    ("a = 1 -- AND b = 2", &[("a", "1")], T),
    ("-- only a comment", NONE, E),
    ("/* only */", NONE, E),
    ("s = '-- not a comment'", &[("s", "-- not a comment")], T),
    ("s = '/* nor this */'", &[("s", "/* nor this */")], T),
    // `--` always starts a comment: double negation needs a space.
    ("a - -1 = 2", &[("a", "1")], T),
    ("a --1 = 2", &[("a", "true")], T),
    // Characters that start nothing.
    ("a != 1", NONE, E),
    ("a == 1", NONE, E),
    ("a = 1 & b = 2", NONE, E),
    ("a = 1 || b = 2", NONE, E),
    ("a ~ 1", NONE, E),
    ("a = `x`", NONE, E),
    ("a = 1 # x", NONE, E),
    ("a[0] = 1", NONE, E),
    ("a.b = 1", NONE, E),
    // Top-level and boolean-context type errors.
    ("1", NONE, E),
    ("'a'", NONE, E),
    ("a + 1", NONE, E),
    ("1 AND TRUE", NONE, E),
    ("TRUE OR 'x'", NONE, E),
    ("NOT 1", NONE, E),
    ("NOT 'x'", NONE, E),
    ("a", &[("a", "true")], T),
    // White space of any kind separates tokens.
    ("a\t=\r\n1", &[("a", "1")], T),
    ("\u{a0}a = 1", &[("a", "1")], T),
];

/// With coercion off, property values are plain strings.
const NO_COERCION: &[Row] = &[
    ("n > 9", &[("n", "10")], F),
    ("n = 10", &[("n", "10")], F),
    ("n <> 10", &[("n", "10")], T),
    ("n = '10'", &[("n", "10")], T),
    ("n + 1 = 11", &[("n", "10")], U),
    ("n IN (10)", &[("n", "10")], F),
    ("n IN ('10')", &[("n", "10")], T),
    ("n LIKE '1%'", &[("n", "10")], T),
    ("n BETWEEN 1 AND 20", &[("n", "10")], F),
    ("b", &[("b", "true")], U),
    ("b = TRUE", &[("b", "true")], F),
    ("a > b", &[("a", "10"), ("b", "9")], F),
    ("a = b", &[("a", "10"), ("b", "10.0")], F),
    ("m = 1", NONE, U),
    ("$qos = 1", NONE, T),
];

macro_rules! row_tests {
    ($($name:ident => $rows:expr),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                check($rows, Options::default());
            }
        )*
    };
}

row_tests! {
    truth_tables => TRUTH_TABLES,
    missing_properties => MISSING,
    keywords_and_identifiers => KEYWORDS_AND_IDENTIFIERS,
    headers => HEADERS,
    strings => STRINGS,
    numeric_literals => NUMERIC_LITERALS,
    arithmetic => ARITHMETIC,
    coercion => COERCION,
    between => BETWEEN,
    in_lists => IN,
    like => LIKE,
    precedence => PRECEDENCE,
    syntax => SYNTAX,
}

#[test]
fn coercion_off() {
    check(
        NO_COERCION,
        Options::default().coerce_property_strings(false),
    );
}

#[test]
fn row_count() {
    let all = [
        TRUTH_TABLES,
        MISSING,
        KEYWORDS_AND_IDENTIFIERS,
        HEADERS,
        STRINGS,
        NUMERIC_LITERALS,
        ARITHMETIC,
        COERCION,
        BETWEEN,
        IN,
        LIKE,
        PRECEDENCE,
        SYNTAX,
        NO_COERCION,
    ];
    let rows: usize = all.iter().map(|r| r.len()).sum();
    // Guards against a table being emptied by accident.
    assert!(rows >= 400, "only {rows} rows");
}
