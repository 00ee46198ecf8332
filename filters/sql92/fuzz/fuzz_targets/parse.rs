//! Parse arbitrary text as a selector and evaluate whatever compiles against fixed messages,
//! with and without property coercion. Any panic, overflow or hang is a bug: hostile selectors
//! must get a `ParseError`, and evaluation must always return a `Truth`, the same from the fast
//! evaluator as from the reference one.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tern_sql92::{Options, OwnedMessage, Selector};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut full = OwnedMessage::new("sensors/7/temp")
        .with("a", "1")
        .with("b", "2.5")
        .with("s", "hello")
        .with("t", "true")
        .with("e", "")
        .with("a", "dup")
        .with("big", "9223372036854775807");
    full.qos = 1;
    full.client_id = Some("dev-7".into());
    full.timestamp_ms = Some(1_700_000_000_000);
    let empty = OwnedMessage::new("");
    for options in [
        Options::default(),
        Options::default().coerce_property_strings(false),
    ] {
        match Selector::parse_with(text, options) {
            Ok(selector) => {
                for msg in [&full, &empty] {
                    let truth = selector.evaluate(msg);
                    assert_eq!(selector.matches(msg), truth.is_true());
                    assert_eq!(truth, selector.evaluate_reference(msg), "{text:?}");
                }
            }
            Err(err) => {
                // Columns point into the input (or one past its end).
                assert!(err.column() >= 1 && err.column() <= text.chars().count() + 1);
                let _ = err.to_string();
            }
        }
    }
});
