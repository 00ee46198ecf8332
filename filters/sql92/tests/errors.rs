//! Parse errors name the 1-based character column and what was expected.

use tern_sql92::{MAX_DEPTH, ParseErrorKind, Selector};

fn error(selector: &str) -> (usize, ParseErrorKind, String) {
    let err = Selector::parse(selector).expect_err(selector);
    (err.column(), err.kind().clone(), err.to_string())
}

#[test]
fn columns_and_expectations() {
    let cases: &[(&str, usize, &str)] = &[
        ("", 1, "column 1: expected a condition, found end of input"),
        (
            "a = 1 b",
            7,
            "column 7: expected AND, OR or end of input, found identifier `b`",
        ),
        (
            "a = 1)",
            6,
            "column 6: expected AND, OR or end of input, found `)`",
        ),
        (
            "(a = 1",
            7,
            "column 7: expected `)` or an operator, found end of input",
        ),
        (
            "a =",
            4,
            "column 4: expected a literal, an identifier or `(`, found end of input",
        ),
        (
            "a = 1 AND",
            10,
            "expected a literal, an identifier or `(`, found end of input",
        ),
        (
            "a != 1",
            3,
            "column 3: unexpected character '!'; not-equal is written <>",
        ),
        ("x = 'abc", 5, "column 5: unterminated string literal"),
        ("x = \"abc", 5, "column 5: unterminated quoted identifier"),
        ("x = 1 /* c", 7, "column 7: unterminated /* comment"),
        ("x = 1abc", 5, "column 5: invalid numeric literal"),
        ("x = 1e", 5, "the exponent needs digits"),
        ("x = 1E400", 5, "approximate literal out of the f64 range"),
        (
            "$nope = 1",
            1,
            "unknown header `$nope`; headers are $topic, $qos",
        ),
        (
            "x LIKE 'a' ESCAPE 'ab'",
            19,
            "ESCAPE takes exactly one character",
        ),
        ("x IN ()", 7, "expected a literal in the IN list"),
        (
            "x IN ('a' 'b')",
            11,
            "expected `,` or `)` in the IN list, found string 'b'",
        ),
        (
            "x NOT = 1",
            7,
            "expected BETWEEN, IN, LIKE, CONTAINS, STARTSWITH or ENDSWITH after NOT",
        ),
        ("x IS 1", 6, "expected NULL, found number 1"),
        (
            "x BETWEEN 1 OR 2",
            13,
            "expected AND (BETWEEN low AND high), found keyword OR",
        ),
        (
            "1 + 1",
            1,
            "column 1: expected a condition (a comparison, TRUE, FALSE or a property), found a number",
        ),
        ("x = 1 AND 'a'", 11, "found a string"),
        (
            "x = 'a' + 1",
            5,
            "column 5: expected a number or a property, found a string",
        ),
        (
            "1 < 2 < 3",
            7,
            "expected AND, OR or end of input, found `<`",
        ),
        // Columns count characters, not bytes.
        (
            "ééé = 1 x",
            9,
            "column 9: expected AND, OR or end of input, found identifier `x`",
        ),
        ("'ü' = 'ü' ?", 11, "unexpected character '?'"),
        // A comment moves the column along with it.
        (
            "/* 12345 */ x y",
            15,
            "column 15: expected AND, OR or end of input",
        ),
    ];
    for &(selector, column, message) in cases {
        let (got_column, _, text) = error(selector);
        assert_eq!(got_column, column, "{selector:?}: {text}");
        assert!(
            text.contains(message),
            "{selector:?}: {text:?} lacks {message:?}"
        );
    }
}

#[test]
fn long_tokens_are_shortened_in_messages() {
    let name = "p".repeat(10_000);
    let (_, kind, text) = error(&format!("a = 1 {name}"));
    assert!(matches!(kind, ParseErrorKind::Unexpected { .. }));
    assert!(text.len() < 200, "{text}");
    let (_, _, text) = error(&format!("${name} = 1"));
    assert!(text.len() < 200, "{text}");
}

#[test]
fn too_deep_reports_the_limit() {
    let sel = format!("{}TRUE{}", "(".repeat(1000), ")".repeat(1000));
    let (column, kind, text) = error(&sel);
    assert_eq!(kind, ParseErrorKind::TooDeep { limit: MAX_DEPTH });
    assert_eq!(column, MAX_DEPTH + 1, "{text}");
    assert!(text.contains("nested too deeply"), "{text}");
}

#[test]
fn errors_implement_std_error() {
    fn is_error<E: std::error::Error + Send + Sync + 'static>(_: &E) {}
    let err = Selector::parse("").unwrap_err();
    is_error(&err);
}
