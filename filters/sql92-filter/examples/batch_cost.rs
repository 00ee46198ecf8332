//! Guest-side cost of the sql92 filter per message, natively: decode, evaluate the
//! selector, write the verdicts (the guest's `process` minus the WebAssembly boundary), on
//! the hub benchmark's batch.
//!
//! ```text
//! cargo run --release --example batch_cost --manifest-path filters/Cargo.toml \
//!     --target x86_64-unknown-linux-gnu -p tern-filter-sql92 [-- SELECTOR [BUDGET [SIZES]]]
//! ```
//!
//! `BUDGET` is the number of messages per timing round (default 400000) and `SIZES` a
//! comma-separated list of batch sizes (default `1,16,256`). A small budget and one size
//! suit instruction counting:
//! `valgrind --tool=callgrind --toggle-collect='*process_batch*' batch_cost SELECTOR 25600 256`
//! collects 7 × BUDGET messages.

use tern_filter::Filter;
use tern_filter::testing::{cost_per_message, telemetry};
use tern_filter_sql92::Sql92Filter;

fn main() {
    let mut args = std::env::args().skip(1);
    let selector = args
        .next()
        .unwrap_or_else(|| "temperature > 30 AND site = 'north'".into());
    let budget = args
        .next()
        .map_or(400_000, |b| b.parse().expect("BUDGET is a number"));
    let sizes: Vec<usize> = args.next().map_or_else(
        || vec![1, 16, 256],
        |s| {
            s.split(',')
                .map(|n| n.parse().expect("SIZES are numbers"))
                .collect()
        },
    );
    let mut filter = Sql92Filter::init(&selector).expect("selector compiles");
    for n in sizes {
        let cost = cost_per_message(&mut filter, &telemetry(n), budget).expect("valid batch");
        println!(
            "{selector}: batch {n:3}: {:6.1} ns per message",
            cost.as_secs_f64() * 1e9
        );
    }
}
