//! Guest-side cost of one batch, natively: decode every record, decide, write the verdicts
//! (what `process` does inside the guest, minus the WebAssembly boundary).
//!
//! ```text
//! cargo run --release --example batch_cost --manifest-path filters/Cargo.toml \
//!     --target x86_64-unknown-linux-gnu
//! ```

use std::hint::black_box;
use std::time::{Duration, Instant};

use tern_filter::{Filter, Message, Verdict, process_batch};
use tern_filter_abi::{BatchWriter, RecordRef};

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

/// The benchmark batch of `hub/benches/filters.rs`: two user properties, no payload.
fn batch(n: usize) -> Vec<u8> {
    let mut w = BatchWriter::new(Vec::new(), false);
    for i in 0..n {
        let topic = format!("sensors/dev-{i}/temp");
        let temperature = (20 + i % 20).to_string();
        let site = if i % 2 == 0 { "north" } else { "south" };
        let rec = RecordRef {
            topic: &topic,
            client_id: "dev",
            qos: 1,
            retain: false,
            received_ms: 1_700_000_000_000,
            content_type: None,
            payload: None,
        };
        w.push(
            &rec,
            [("temperature", temperature.as_str()), ("site", site)].into_iter(),
        )
        .expect("packable");
    }
    w.finish()
}

fn per_message<F: Filter>(name: &str, filter: &mut F, n: usize) {
    let buf = batch(n);
    let mut out = Vec::new();
    let rounds = 200_000 / n;
    let mut best = Duration::MAX;
    for _ in 0..7 {
        let start = Instant::now();
        for _ in 0..rounds {
            out = process_batch(filter, black_box(&buf), out).expect("valid batch");
            black_box(&out);
        }
        best = best.min(start.elapsed() / u32::try_from(rounds).expect("small"));
    }
    let per = best.as_secs_f64() * 1e9 / n as f64;
    println!(
        "{name:8} batch {n:3}: {:9.0} ns per batch, {per:6.1} ns per message",
        best.as_secs_f64() * 1e9
    );
}

fn main() {
    for n in [1, 16, 256] {
        per_message("pass", &mut Pass, n);
        per_message("touch", &mut Touch, n);
    }
}
