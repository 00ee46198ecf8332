//! The config string: option lines, then the selector; errors the operator sees.

use tern_filter_sql92::{ConfigError, OptionErrorKind, compile};
use tern_sql92::OwnedMessage;

fn temp(value: &str) -> OwnedMessage {
    OwnedMessage::new("sensors/1/temp").with("temperature", value)
}

#[test]
fn selector_alone_coerces_by_default() {
    let sel = compile("temperature > 30").expect("compiles");
    assert!(sel.options().coerce_property_strings);
    assert!(sel.matches(&temp("31")));
}

#[test]
fn option_lines_precede_the_selector() {
    for config in [
        "# coerce = off\ntemperature > 30",
        "#coerce=off\ntemperature > 30",
        "\n  # coerce =   off  \r\n\n temperature > 30",
    ] {
        let sel = compile(config).unwrap_or_else(|e| panic!("{config:?}: {e}"));
        assert!(!sel.options().coerce_property_strings, "{config:?}");
        // Without coercion "31" is a string: comparing it with a number is FALSE.
        assert!(!sel.matches(&temp("31")), "{config:?}");
    }
    let sel = compile("# coerce = on\ntemperature > 30").expect("compiles");
    assert!(sel.matches(&temp("31")));
    // Selector comments are the library's (`--`, `/* */`), anywhere in the selector.
    let sel = compile("-- hot ones\ntemperature > 30 /* C */").expect("compiles");
    assert!(sel.matches(&temp("31")));
}

/// (config, the whole error text)
const ERRORS: &[(&str, &str)] = &[
    // Without option lines, exactly the library's error.
    (
        "temperature > 30 site",
        "column 18: expected AND, OR or end of input, found identifier `site`",
    ),
    ("", "column 1: expected a condition, found end of input"),
    // With option lines, the column still counts from the start of the config.
    (
        "# coerce = off\ntemperature > 30 site",
        "column 33: expected AND, OR or end of input, found identifier `site`",
    ),
    (
        "# coerce = off\n",
        "column 16: expected a condition, found end of input",
    ),
    (
        "# hot sensors\nx = 1",
        "line 1: expected an option line `# name = value` (selector comments are written -- or /* */)",
    ),
    (
        "# coerse = off\nx = 1",
        "line 1: unknown option `coerse`; options are: coerce",
    ),
    (
        "# coerce = no\nx = 1",
        "line 1: option `coerce` takes on or off",
    ),
    (
        "# coerce = on\n\n# coerce = off\nx = 1",
        "line 3: option `coerce` given twice (first on line 1)",
    ),
    (
        "x = 1\n# coerce = off",
        "column 7: unexpected character '#'; option lines (`# name = value`) must come before the selector",
    ),
    ("x = 1 # y", "column 7: unexpected character '#'"),
];

#[test]
fn errors_point_into_the_whole_config() {
    for (config, expected) in ERRORS {
        let err = compile(config).expect_err(config);
        assert_eq!(err.to_string(), *expected, "{config:?}");
    }
    match compile("# nope = 1\nx = 1") {
        Err(ConfigError::Option(e)) => {
            assert_eq!(e.line, 1);
            assert_eq!(e.kind, OptionErrorKind::Unknown("nope".into()));
        }
        other => panic!("{other:?}"),
    }
    match compile("# coerce = off\na = 1 b") {
        Err(ConfigError::Selector(e)) => assert_eq!(e.column, 22),
        other => panic!("{other:?}"),
    }
}

proptest::proptest! {
    /// Any config text compiles or fails with an error; a selector error's column points
    /// into the config (or one past its end) and an option error's line exists.
    #[test]
    fn arbitrary_configs_never_panic(
        config in "(# ?coerce ?= ?(on|off)\n|#[a-z =]{0,8}\n|\n|[a-z0-9 '=<>#$()]{0,12}){0,6}",
    ) {
        match compile(&config) {
            Ok(_) => {}
            Err(ConfigError::Selector(e)) => {
                proptest::prop_assert!(e.column >= 1 && e.column <= config.chars().count() + 1);
            }
            Err(ConfigError::Option(e)) => {
                proptest::prop_assert!(e.line >= 1 && e.line <= config.split('\n').count());
            }
            Err(other) => proptest::prop_assert!(false, "unexpected error {other:?}"),
        }
    }
}
