//! Guest-side cost of the router filter per message, natively: decode, match, render and
//! write the routes (the guest's `process` minus the WebAssembly boundary), on the hub
//! benchmark's batch.
//!
//! ```text
//! cargo run --release --example batch_cost --manifest-path filters/Cargo.toml \
//!     --target x86_64-unknown-linux-gnu -p tern-filter-router [-- RULES]
//! ```

use tern_filter::Filter;
use tern_filter::testing::{cost_per_message, telemetry};
use tern_filter_router::RouterFilter;

fn main() {
    let rules = std::env::args().nth(1).unwrap_or_else(|| {
        "sensors/{device}/temp -> bridge:cloud site-7/{device}/temperature".into()
    });
    let mut filter = RouterFilter::init(&rules).expect("rules compile");
    for n in [1, 16, 256] {
        let cost = cost_per_message(&mut filter, &telemetry(n), 400_000).expect("valid batch");
        println!(
            "batch {n:3}: {:6.1} ns per message",
            cost.as_secs_f64() * 1e9
        );
    }
}
