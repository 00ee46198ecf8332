//! Router fan-out: cost of `SubscriptionTree::route` for one PUBLISH.
//!
//! Variants (N = subscriber count):
//! - `exact_topics/N`: N clients on N distinct exact topics; one of them matches.
//! - `fan_out/N`: N clients on the same exact topic; all N match.
//! - `wildcards/N`: N clients with `+`/`#` filters spread over a small topic space.
//! - `shared_group/N`: N members of one share group; one is chosen per message.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tern_hub::router::{Delivery, SubscriptionOptions, SubscriptionTree};
use tern_mqtt::QoS;

const SIZES: [u32; 3] = [1, 100, 10_000];
const PUBLISHER: u32 = u32::MAX;

fn options() -> SubscriptionOptions {
    SubscriptionOptions {
        qos: QoS::AtLeastOnce,
        ..SubscriptionOptions::default()
    }
}

fn everyone_online(_: &u32) -> bool {
    true
}

/// Subscribes every client of `0..n` to the filter `filter(client)`.
fn tree(n: u32, filter: impl Fn(u32) -> String) -> SubscriptionTree<u32> {
    let mut tree = SubscriptionTree::new();
    for client in 0..n {
        if let Err(err) = tree.subscribe(client, &filter(client), options()) {
            panic!("bench filter rejected: {err}");
        }
    }
    tree
}

/// Routes `topics` round-robin, one topic per iteration, reusing the output vector.
fn bench_route(
    c: &mut Criterion,
    group: &str,
    n: u32,
    mut tree: SubscriptionTree<u32>,
    topics: &[String],
) {
    let mut group = c.benchmark_group(group);
    group.throughput(Throughput::Elements(1));
    let mut out: Vec<Delivery<u32>> = Vec::new();
    let mut next = 0;
    group.bench_function(BenchmarkId::from_parameter(n), |b| {
        b.iter(|| {
            let topic = &topics[next % topics.len()];
            next += 1;
            tree.route(black_box(topic), &PUBLISHER, &everyone_online, &mut out);
            black_box(out.len())
        });
    });
    group.finish();
}

fn exact_topics(c: &mut Criterion) {
    for n in SIZES {
        let tree = tree(n, |i| format!("site/{i}/temp"));
        let topics: Vec<String> = (0..n.min(1024)).map(|i| format!("site/{i}/temp")).collect();
        bench_route(c, "exact_topics", n, tree, &topics);
    }
}

fn fan_out(c: &mut Criterion) {
    for n in SIZES {
        let tree = tree(n, |_| "site/7/temp".to_owned());
        bench_route(c, "fan_out", n, tree, &["site/7/temp".to_owned()]);
    }
}

fn wildcards(c: &mut Criterion) {
    for n in SIZES {
        let tree = tree(n, |i| match i % 4 {
            0 => format!("site/{}/+", i % 100),
            1 => format!("site/+/sensor{}", i % 50),
            2 => format!("site/{}/#", i % 200),
            _ => format!("+/{}/+", i % 100),
        });
        let topics: Vec<String> = (0..256)
            .map(|i| format!("site/{}/sensor{}", i % 200, i % 50))
            .collect();
        bench_route(c, "wildcards", n, tree, &topics);
    }
}

fn shared_group(c: &mut Criterion) {
    for n in SIZES {
        let tree = tree(n, |_| "$share/workers/jobs/+".to_owned());
        bench_route(c, "shared_group", n, tree, &["jobs/42".to_owned()]);
    }
}

criterion_group!(benches, exact_topics, fan_out, wildcards, shared_group);
criterion_main!(benches);
