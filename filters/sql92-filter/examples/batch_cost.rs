//! Guest-side cost of the sql92 filter per message, natively: decode, evaluate the
//! selector, write the verdicts (the guest's `process` minus the WebAssembly boundary), on
//! the hub benchmark's batch.
//!
//! ```text
//! cargo run --release --example batch_cost --manifest-path filters/Cargo.toml \
//!     --target x86_64-unknown-linux-gnu -p tern-filter-sql92 [-- SELECTOR]
//! ```

use tern_filter::Filter;
use tern_filter::testing::{cost_per_message, telemetry};
use tern_filter_sql92::Sql92Filter;

fn main() {
    let selector = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "temperature > 30 AND site = 'north'".into());
    let mut filter = Sql92Filter::init(&selector).expect("selector compiles");
    for n in [1, 16, 256] {
        let cost = cost_per_message(&mut filter, &telemetry(n), 400_000).expect("valid batch");
        println!(
            "{selector}: batch {n:3}: {:6.1} ns per message",
            cost.as_secs_f64() * 1e9
        );
    }
}
