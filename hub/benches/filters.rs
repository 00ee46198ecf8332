//! Filter host benchmarks (criterion).
//!
//! - `chain/<filter>/<batch>`: one chain of one filter (`pass`, and `sql92` / `router`
//!   when their guests are built), batches of 1, 16 and 256 messages with 256 B payloads
//!   and two user properties; throughput is per message. `chain/pass-x3/<batch>` runs three
//!   pass filters in a row. Measures `Chain::run_filtered`, the call the hub's ingest path
//!   makes (through `PipelineSet::run`); building the input batch and dropping the output
//!   are outside the measurement.
//! - `load/compile-cold`: `precompile` of the pass guest (Cranelift only);
//!   `load/deploy-cold`: deploy into an empty cache (componentize, compile, write,
//!   load, instantiate, init); `load/deploy-cached`: deploy from a warm cache.
//! - `instantiate/<filter>`: a new instance from the `InstancePre` plus `init`.
//! - `pipelines/empty/<batch>`: `PipelineSet::run` with no pipeline (the default hub).
//!
//! Run: `cargo bench -p tern-hub --bench filters`. Builds the guests of `filters/` first
//! (`cargo build --release --target wasm32-unknown-unknown` there). Allocates with mimalloc,
//! as the `tern` binary does (feature `mimalloc`, on by default).

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tern_hub::config::HumanDuration;
use tern_hub::filter_host::{
    Chain, FailurePolicy, FilterHost, FilterLimitsConfig, PipelineSet, precompile,
};

#[allow(
    dead_code,
    reason = "shared with the integration tests, which use all of it"
)]
#[path = "../tests/common/guests.rs"]
mod guests;

use guests::{Guest, wasm as guest_wasm};

#[path = "support/telemetry.rs"]
mod telemetry;

use telemetry::batch;

/// The `tern` binary's allocator: what the ingest path allocates and frees per message
/// (output lists, routes, dropped messages) costs what it costs in the hub.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BATCHES: [usize; 3] = [1, 16, 256];

/// The guests to benchmark as chains: name, guest, config.
const CHAINS: [(&str, Guest, &str); 3] = [
    ("pass", Guest::Pass, ""),
    ("sql92", Guest::Sql92, "temperature > 30 AND site = 'north'"),
    (
        "router",
        Guest::Router,
        "sensors/{device}/temp -> bridge:cloud site-7/{device}/temperature",
    ),
];

fn host(cache: &Path) -> FilterHost {
    let limits = FilterLimitsConfig {
        cache_dir: Some(cache.to_owned()),
        deadline_base: HumanDuration(Duration::from_millis(100)),
        ..FilterLimitsConfig::default()
    };
    FilterHost::new(&limits, cache, Arc::default()).expect("filter host")
}

fn chains(c: &mut Criterion) {
    let cache = tempfile::tempdir().expect("temp dir");
    let host = host(cache.path());
    let mut group = c.benchmark_group("chain");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    let mut runs: Vec<(String, Chain)> = Vec::new();
    for (name, guest, config) in CHAINS {
        match host.deploy(name, &guest_wasm(guest), config) {
            Ok(filter) => {
                if name == "pass" {
                    let three = vec![
                        Arc::clone(&filter),
                        Arc::clone(&filter),
                        Arc::clone(&filter),
                    ];
                    runs.push(("pass-x3".into(), Chain::new(three, FailurePolicy::Pass)));
                }
                runs.push((name.into(), Chain::new(vec![filter], FailurePolicy::Pass)));
            }
            Err(err) => eprintln!("skipping {name}: {err}"),
        }
    }
    for (name, chain) in &runs {
        for n in BATCHES {
            let input = batch(n);
            group.throughput(Throughput::Elements(u64::try_from(n).expect("small")));
            group.bench_with_input(BenchmarkId::new(name.as_str(), n), &input, |b, input| {
                b.iter_batched(
                    || input.clone(),
                    |messages| black_box(chain.run_filtered(messages)),
                    criterion::BatchSize::SmallInput,
                );
            });
        }
    }
    group.finish();
}

fn loading(c: &mut Criterion) {
    let wasm_path = guest_wasm(Guest::Pass);
    let wasm = std::fs::read(&wasm_path).expect("pass guest");
    let mut group = c.benchmark_group("load");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(10);
    group.bench_function("compile-cold", |b| {
        b.iter(|| black_box(precompile(&wasm, None).expect("compile")));
    });
    group.bench_function("deploy-cold", |b| {
        b.iter_batched(
            || tempfile::tempdir().expect("temp dir"),
            |cache| {
                let host = host(cache.path());
                black_box(host.deploy("p", &wasm_path, "").expect("deploy"));
                cache
            },
            criterion::BatchSize::PerIteration,
        );
    });
    let cache = tempfile::tempdir().expect("temp dir");
    host(cache.path())
        .deploy("p", &wasm_path, "")
        .expect("warm the cache");
    let warm = host(cache.path());
    group.bench_function("deploy-cached", |b| {
        b.iter(|| black_box(warm.deploy("p", &wasm_path, "").expect("deploy")));
    });
    group.finish();

    let mut group = c.benchmark_group("instantiate");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for (name, guest, config) in CHAINS {
        let Ok(filter) = warm.deploy(name, &guest_wasm(guest), config) else {
            continue;
        };
        group.bench_function(name, |b| {
            b.iter(|| filter.probe_instance().expect("instantiate"));
        });
    }
    group.finish();
}

fn empty_set(c: &mut Criterion) {
    let set = PipelineSet::empty();
    let mut group = c.benchmark_group("pipelines");
    for n in BATCHES {
        let input = batch(n);
        group.throughput(Throughput::Elements(u64::try_from(n).expect("small")));
        group.bench_with_input(BenchmarkId::new("empty", n), &input, |b, input| {
            b.iter_batched(
                || input.clone(),
                |messages| black_box(set.run(messages)),
                criterion::BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, chains, loading, empty_set);
criterion_main!(benches);
