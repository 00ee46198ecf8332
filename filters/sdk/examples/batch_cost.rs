//! Guest-side cost of one batch, natively: decode every record, decide, write the verdicts
//! (what `process` does inside the guest, minus the WebAssembly boundary).
//!
//! ```text
//! cargo run --release --example batch_cost --manifest-path filters/Cargo.toml \
//!     --target x86_64-unknown-linux-gnu -p tern-filter
//! ```
//!
//! The standard filters have the same example: `-p tern-filter-sql92`, `-p tern-filter-router`.

use tern_filter::testing::{cost_per_message, telemetry};
use tern_filter::{Filter, Message, Verdict};

struct Pass;

impl Filter for Pass {
    fn init(_: &str) -> Result<Self, String> {
        Ok(Self)
    }
    fn filter(&mut self, _: &Message<'_>) -> Verdict {
        Verdict::Keep
    }
}

/// Reads the topic and one property, as most filters do.
struct Touch;

impl Filter for Touch {
    fn init(_: &str) -> Result<Self, String> {
        Ok(Self)
    }
    fn filter(&mut self, msg: &Message<'_>) -> Verdict {
        if msg.topic().len() > 3 && msg.property("site") == Some("north") {
            Verdict::Keep
        } else {
            Verdict::Drop
        }
    }
}

fn main() {
    for n in [1, 16, 256] {
        let batch = telemetry(n);
        let pass = cost_per_message(&mut Pass, &batch, 200_000).expect("valid batch");
        let touch = cost_per_message(&mut Touch, &batch, 200_000).expect("valid batch");
        println!(
            "batch {n:3}: pass {:6.1} ns, touch {:6.1} ns per message",
            pass.as_secs_f64() * 1e9,
            touch.as_secs_f64() * 1e9
        );
    }
}
