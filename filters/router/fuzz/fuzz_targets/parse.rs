//! Parse arbitrary text as a rule set and route fixed and derived topics through whatever
//! compiles. Any panic, overflow or hang is a bug: a hostile config must get a `ConfigError`
//! whose location points into the input, and every topic the router produces must be a valid
//! MQTT topic name.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tern_filter_router::{Incoming, Outcome, Resolved, RouteTable, is_valid_topic_name};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let table = match RouteTable::parse(text) {
        Ok(table) => table,
        Err(err) => {
            let at = err.location();
            let lines: Vec<&str> = text.split('\n').collect();
            assert!(at.line >= 1 && at.line <= lines.len());
            let line = lines[at.line - 1];
            assert!(at.column >= 1 && at.column <= line.chars().count() + 1);
            let _ = err.to_string();
            return;
        }
    };
    // Topics from the rules' own words, so that rules match, plus fixed awkward ones.
    let mut topics: Vec<&str> = text
        .split(|c: char| c.is_whitespace() || c == ';')
        .collect();
    topics.extend([
        "a",
        "a/b",
        "$SYS/x",
        "sensors/d1/temp",
        "x//y",
        "/",
        "+",
        "#",
    ]);
    for topic in topics {
        for client_id in ["c", "", "a/b", "$x"] {
            if let Outcome::Route(routes) = table.route(Incoming { topic, client_id }) {
                assert!(!routes.is_empty());
                for route in routes {
                    let (Resolved::Local { topic: out } | Resolved::Bridge { topic: out, .. }) =
                        route;
                    assert!(is_valid_topic_name(&out), "{out:?}");
                }
            }
        }
    }
});
