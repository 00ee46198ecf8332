//! Route decisions per second for a typical gateway rule set, natively.
//!
//! ```text
//! cargo run --release --example bench --manifest-path filters/Cargo.toml \
//!     --target x86_64-unknown-linux-gnu -p tern-filter-router
//! ```
//!
//! Three cases: a message no rule matches (walks every rule, allocates nothing), one matched
//! by the last rule that only keeps it, and one routed to two destinations. `route`
//! allocates the output topics; `route_into` (what the guest runs) renders them into a
//! reused buffer.

use std::hint::black_box;
use std::time::Instant;

use tern_filter_router::{Incoming, Rendered, RouteTable};

const RULES: &str = "\
sensors/{device}/temp -> bridge:cloud site-7/{device}/temperature
sensors/{device}/humidity -> bridge:cloud site-7/{device}/humidity
sensors/{device}/alarm -> local:alarms/{device}, bridge:cloud site-7/{device}/alarm
sensors/+/debug/# -> drop
logs/{device}/{path..} -> bridge:cloud site-7/logs/{device}/{path}
cmd/{device}/+ -> keep
otherwise keep
";

fn main() {
    let table = RouteTable::parse(RULES).expect("benchmark rules parse");
    let cases = [
        ("unmatched", "status/gw-1/uptime"),
        ("last rule, keep", "cmd/d-17/reboot"),
        ("routed x2", "sensors/d-17/alarm"),
    ];
    const N: u32 = 2_000_000;
    println!(
        "{:<20} {:<24} {:>10} {:>14}",
        "case", "topic", "ns/route", "ns/route_into"
    );
    let mut rendered = Rendered::default();
    for (name, topic) in cases {
        let msg = Incoming {
            topic,
            client_id: "d-17",
        };
        let start = Instant::now();
        for _ in 0..N {
            black_box(black_box(&table).route(black_box(msg)));
        }
        let ns = start.elapsed().as_nanos() as f64 / f64::from(N);
        let start = Instant::now();
        for _ in 0..N {
            black_box(black_box(&table).route_into(black_box(msg), &mut rendered));
        }
        let into = start.elapsed().as_nanos() as f64 / f64::from(N);
        println!("{name:<20} {topic:<24} {ns:>10.1} {into:>14.1}");
    }
    let start = Instant::now();
    for _ in 0..10_000 {
        black_box(RouteTable::parse(black_box(RULES)).expect("parses"));
    }
    let per = start.elapsed().as_nanos() as f64 / 10_000.0;
    println!("parse the {} rules: {per:.0} ns", table.len());
}
