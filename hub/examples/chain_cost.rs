//! Runs one benchmark chain (`pass`, `sql92` or `router`, as in `benches/filters.rs`) over
//! batches of 256 telemetry messages, `ROUNDS` times. Made for counting instructions, which
//! a shared or virtual machine does not disturb the way it disturbs timings:
//!
//! ```text
//! cargo build --release --example chain_cost -p tern-hub
//! target/release/examples/chain_cost sql92 2      # fills the compile cache
//! valgrind --tool=callgrind --toggle-collect='*run_filtered*' \
//!     target/release/examples/chain_cost sql92 120
//! ```
//!
//! Subtracting a run of 20 rounds from one of 120 leaves the steady-state instructions of
//! `Chain::run_filtered` for 100 × 256 messages. `GUEST_DIR` points at another build of the
//! guests (`tern_filter_<name>.wasm`); `TERN_FILTER_PERFMAP=1` lets `perf` name their
//! functions. A third argument replaces the chain's config (`chain_cost router 20000
//! 'sensors/{device}/temp -> keep'`). It also prints the time per message spent in
//! `Chain::run_filtered` (the input's clone is outside it), a quick figure between
//! criterion runs.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tern_hub::config::HumanDuration;
use tern_hub::filter_host::{Chain, FailurePolicy, FilterHost, FilterLimitsConfig};

#[allow(
    dead_code,
    reason = "shared with the integration tests, which use all of it"
)]
#[path = "../tests/common/guests.rs"]
mod guests;
#[path = "../benches/support/telemetry.rs"]
mod telemetry;

use guests::{Guest, wasm as guest_wasm};

/// As in the `tern` binary.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_else(|| "pass".into());
    let rounds: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(20);
    let (guest, config) = match name.as_str() {
        "pass" => (Guest::Pass, ""),
        "sql92" => (Guest::Sql92, "temperature > 30 AND site = 'north'"),
        "router" => (
            Guest::Router,
            "sensors/{device}/temp -> bridge:cloud site-7/{device}/temperature",
        ),
        other => {
            eprintln!("unknown chain {other:?}: pass, sql92 or router");
            std::process::exit(2);
        }
    };
    let cache = std::env::temp_dir().join("tern-chain-cost-cache");
    let limits = FilterLimitsConfig {
        cache_dir: Some(cache.clone()),
        // Generous: the chain runs under valgrind.
        deadline_base: HumanDuration(Duration::from_secs(100)),
        ..FilterLimitsConfig::default()
    };
    let host = FilterHost::new(&limits, &cache, Arc::default()).expect("filter host");
    let wasm: PathBuf = match std::env::var_os("GUEST_DIR") {
        Some(dir) => Path::new(&dir).join(format!("tern_filter_{name}.wasm")),
        None => guest_wasm(guest),
    };
    let custom = args.next();
    let config = custom.as_deref().unwrap_or(config);
    let filter = host.deploy(&name, &wasm, config).expect("deploy");
    let chain = Chain::new(vec![filter], FailurePolicy::Pass);
    let input = telemetry::batch(256);
    let mut outputs = 0usize;
    let mut in_chain = Duration::ZERO;
    for _ in 0..rounds {
        let batch = std::hint::black_box(input.clone());
        let started = std::time::Instant::now();
        let filtered = chain.run_filtered(batch);
        in_chain += started.elapsed();
        outputs += filtered.into_iter().count();
    }
    let per_message = in_chain.as_secs_f64() * 1e9 / (rounds.max(1) * input.len()) as f64;
    println!(
        "{name}: {rounds} batches of 256, {outputs} outputs, {per_message:.1} ns per message in run_filtered"
    );
}
