//! Evaluations per second for typical selectors, on borrowed message views.
//!
//! ```text
//! cargo run --release --example bench --manifest-path filters/Cargo.toml \
//!     --target x86_64-unknown-linux-gnu
//! ```
//!
//! The view below is what a guest holds: a slice of `(key, value)` pairs borrowed from the
//! batch buffer, with a linear property lookup.

use std::hint::black_box;
use std::time::Instant;

use tern_sql92::{MessageView, Selector};

struct View<'a> {
    topic: &'a str,
    props: &'a [(&'a str, &'a str)],
}

impl MessageView for View<'_> {
    fn property(&self, name: &str) -> Option<&str> {
        self.props.iter().find(|(k, _)| *k == name).map(|(_, v)| *v)
    }
    fn topic(&self) -> &str {
        self.topic
    }
    fn qos(&self) -> u8 {
        1
    }
    fn retain(&self) -> bool {
        false
    }
}

fn main() {
    let props_hit: &[(&str, &str)] = &[
        ("device", "d-17"),
        ("temperature", "31.5"),
        ("site", "north"),
        ("unit", "C"),
    ];
    let props_miss: &[(&str, &str)] = &[
        ("device", "d-18"),
        ("temperature", "12"),
        ("site", "south"),
        ("unit", "C"),
    ];
    let selectors = [
        "temperature > 30 AND site = 'north'",
        "site IN ('north', 'east', 'west') AND unit = 'C'",
        "device LIKE 'd-1%' AND temperature BETWEEN 10 AND 40",
        "$topic STARTSWITH 'sensors/' AND (temperature * 9 / 5 + 32) > 86",
        "NOT (site = 'south' OR humidity IS NOT NULL)",
    ];
    let msgs = [
        View {
            topic: "sensors/17/temp",
            props: props_hit,
        },
        View {
            topic: "sensors/18/temp",
            props: props_miss,
        },
    ];
    const N: u32 = 2_000_000;
    println!("{:<70} {:>10} {:>12}", "selector", "ns/eval", "evals/s");
    for text in selectors {
        let sel = Selector::parse(text).expect("benchmark selector parses");
        let mut matched = 0u32;
        let start = Instant::now();
        for i in 0..N {
            let msg = &msgs[(i & 1) as usize];
            matched += u32::from(black_box(&sel).matches(black_box(msg)));
        }
        let took = start.elapsed();
        let ns = took.as_nanos() as f64 / f64::from(N);
        println!("{text:<70} {ns:>10.1} {:>12.0}", 1e9 / ns);
        black_box(matched);
    }
    let text = selectors[0];
    let start = Instant::now();
    for _ in 0..100_000 {
        black_box(Selector::parse(black_box(text)).expect("parses"));
    }
    let per = start.elapsed().as_nanos() as f64 / 100_000.0;
    println!("parse {text:?}: {per:.0} ns");
}
