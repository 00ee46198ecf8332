//! The durability contract under `kill -9`.
//!
//! Several publishers send numbered QoS 1 messages as fast as the hub acknowledges them and
//! record every PUBACK. At a random moment the hub is killed with SIGKILL, then restarted on
//! the same data directory; this repeats for several rounds. A persistent subscriber, which
//! subscribed before the first round and stays offline, then reconnects and must receive
//! every acknowledged message, in publish order per publisher, with no gaps. Unacknowledged
//! messages may or may not arrive (they may have been stored before the kill); a message may
//! arrive twice only as a DUP redelivery.
//!
//! A second test keeps the subscriber online through the kills: it acknowledges what it
//! receives, so its delivery progress races the kill, and every acknowledged message must
//! still reach it at least once.
//!
//! The kill points come from a seed printed at the start (`TERN_DURABILITY_SEED` replays one).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;

/// Kill rounds in one test run.
const ROUNDS: usize = 4;
/// Publishers per round.
const PUBLISHERS: usize = 3;
/// QoS 1 publishes a publisher keeps unacknowledged (pipelining).
const WINDOW: u16 = 16;
/// Upper bound on messages per publisher and round, to bound the test's time.
const MAX_PER_ROUND: u32 = 3_000;

/// A small deterministic generator (xorshift64*), so a failing seed can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low)
    }
}

/// Publishes `r{round}p{publisher}` messages numbered from 0 until the connection breaks or
/// the bound is reached; returns the numbers acknowledged, in acknowledgement order.
async fn publish_until_killed(
    addr: std::net::SocketAddr,
    round: usize,
    publisher: usize,
) -> Vec<u32> {
    let id = format!("pub-{round}-{publisher}");
    // The kill may come before the hub answers (a loaded machine): then nothing was sent.
    let Some(mut c) = RawClient::try_connect(addr, Connect::v5(&id)).await else {
        return Vec::new();
    };
    let topic = format!("d/{publisher}");
    let mut acked = Vec::new();
    let mut in_flight: BTreeMap<u16, u32> = BTreeMap::new();
    let mut next: u32 = 0;
    let mut pid: u16 = 0;
    loop {
        while in_flight.len() < usize::from(WINDOW) && next < MAX_PER_ROUND {
            pid = pid % 60_000 + 1;
            let payload = format!("{round}:{publisher}:{next}");
            let bytes = Pub::new(&topic, payload.as_bytes()).qos(1, pid).encode(V5);
            if !c.try_send(&bytes).await {
                return acked;
            }
            in_flight.insert(pid, next);
            next += 1;
        }
        if in_flight.is_empty() {
            return acked;
        }
        match c.try_recv(Duration::from_secs(10)).await {
            Ok(Incoming::Ack {
                kind: PUBACK,
                pid,
                reason,
                ..
            }) => {
                assert_eq!(reason, 0, "PUBACK with reason {reason:#04x}");
                let n = in_flight
                    .remove(&pid)
                    .expect("PUBACK for a packet id in flight");
                assert!(
                    acked.last().is_none_or(|&last| last < n),
                    "PUBACKs out of order"
                );
                acked.push(n);
            }
            Ok(_) => {}
            Err(_) => return acked,
        }
    }
}

/// The seed of this run's kill points.
fn seed() -> u64 {
    let seed = std::env::var("TERN_DURABILITY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    eprintln!("durability seed: {seed} (replay with TERN_DURABILITY_SEED={seed})");
    seed
}

/// `(round, publisher, n)` from a payload.
fn parse(payload: &[u8]) -> (usize, usize, u32) {
    let text = std::str::from_utf8(payload).expect("utf8 payload");
    let mut parts = text.split(':').map(|s| s.parse::<u64>().expect("number"));
    let mut next = || parts.next().expect("three numbers");
    (
        usize::try_from(next()).expect("round"),
        usize::try_from(next()).expect("publisher"),
        u32::try_from(next()).expect("n"),
    )
}

/// Receives and acknowledges until the connection breaks; returns what arrived.
async fn receive_until_killed(mut sub: RawClient) -> Vec<(usize, usize, u32)> {
    let mut got = Vec::new();
    while let Ok(packet) = sub.try_recv(Duration::from_secs(20)).await {
        if let Incoming::Publish(p) = packet {
            got.push(parse(&p.payload));
            if !sub.try_send(&ack_packet(0x40, p.pid)).await {
                break;
            }
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_subscriber_loses_nothing_across_kill_9() {
    let mut rng = Rng(seed());
    let mut hub = Hub::with_session("max_queued_messages = 1000000");
    let subscriber = Connect::v5("online-sub")
        .clean(false)
        .session_expiry(u32::MAX);
    let (mut sub, _) = RawClient::connect_ok(hub.addr(), subscriber.clone()).await;
    sub.subscribe("d/#", 1).await;
    let mut received: BTreeSet<(usize, usize, u32)> = BTreeSet::new();
    let mut acked: BTreeSet<(usize, usize, u32)> = BTreeSet::new();
    for round in 0..ROUNDS {
        let receiver = tokio::spawn(receive_until_killed(sub));
        let tasks: Vec<_> = (0..PUBLISHERS)
            .map(|p| tokio::spawn(publish_until_killed(hub.addr(), round, p)))
            .collect();
        tokio::time::sleep(Duration::from_millis(rng.between(150, 900))).await;
        hub.kill_9();
        for (p, task) in tasks.into_iter().enumerate() {
            let ns = task.await.expect("publisher task");
            acked.extend(ns.into_iter().map(|n| (round, p, n)));
        }
        received.extend(receiver.await.expect("subscriber task"));
        hub.restart();
        let (again, present) = RawClient::connect_ok(hub.addr(), subscriber.clone()).await;
        assert!(present, "persistent session survived kill {round}");
        sub = again;
    }
    assert!(!acked.is_empty(), "no publish was acknowledged at all");
    let deadline = Instant::now() + Duration::from_secs(90);
    while !acked.is_subset(&received) {
        assert!(
            Instant::now() < deadline,
            "subscriber still draining after 90 s"
        );
        let Some(publish) = sub.try_recv_publish(Duration::from_secs(10)).await else {
            break;
        };
        sub.ack(&publish).await;
        received.insert(parse(&publish.payload));
    }
    let lost: Vec<_> = acked.difference(&received).take(5).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged messages never reached the online subscriber, first: {lost:?}",
        acked.difference(&received).count()
    );
    eprintln!(
        "{} acknowledged messages, all delivered to the online subscriber",
        acked.len()
    );
    hub.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_message_survives_kill_9() {
    let mut rng = Rng(seed());
    let started = Instant::now();

    let mut hub = Hub::with_session("max_queued_messages = 1000000");
    let subscriber = Connect::v5("durable-sub")
        .clean(false)
        .session_expiry(u32::MAX);
    let (mut sub, _) = RawClient::connect_ok(hub.addr(), subscriber.clone()).await;
    sub.subscribe("d/#", 1).await;
    sub.disconnect().await;

    // (round, publisher) → acknowledged numbers.
    let mut acked: BTreeMap<(usize, usize), Vec<u32>> = BTreeMap::new();
    for round in 0..ROUNDS {
        let tasks: Vec<_> = (0..PUBLISHERS)
            .map(|p| tokio::spawn(publish_until_killed(hub.addr(), round, p)))
            .collect();
        let delay = rng.between(150, 900);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        hub.kill_9();
        for (p, task) in tasks.into_iter().enumerate() {
            let got = task.await.expect("publisher task");
            eprintln!(
                "round {round} publisher {p}: {} acknowledged (kill after {delay} ms)",
                got.len()
            );
            acked.insert((round, p), got);
        }
        hub.restart();
    }
    let total_acked: usize = acked.values().map(Vec::len).sum();
    assert!(total_acked > 0, "no publish was acknowledged at all");

    // Everything acknowledged must now be waiting for the subscriber.
    let (mut sub, present) = RawClient::connect_ok(hub.addr(), subscriber).await;
    assert!(present, "persistent session survived the kills");
    let mut received: BTreeMap<(usize, usize), Vec<u32>> = BTreeMap::new();
    let mut missing: BTreeSet<(usize, usize, u32)> = acked
        .iter()
        .flat_map(|(&(r, p), ns)| ns.iter().map(move |&n| (r, p, n)))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let wait = if missing.is_empty() {
            QUIET
        } else {
            Duration::from_secs(10)
        };
        let Some(publish) = sub.try_recv_publish(wait).await else {
            break;
        };
        sub.ack(&publish).await;
        let text = String::from_utf8_lossy(&publish.payload).into_owned();
        let (r, p, n) = parse(&publish.payload);
        let seen = received.entry((r, p)).or_default();
        if seen.contains(&n) {
            assert!(publish.dup, "duplicate of {text} without DUP");
            continue;
        }
        assert!(
            seen.last().is_none_or(|&last| last < n),
            "{text} arrived after {:?} (out of publish order)",
            seen.last()
        );
        seen.push(n);
        missing.remove(&(r, p, n));
        assert!(
            Instant::now() < deadline,
            "subscriber still draining after 90 s"
        );
    }
    assert!(
        missing.is_empty(),
        "{} acknowledged messages lost, first: {:?}",
        missing.len(),
        missing.iter().take(5).collect::<Vec<_>>()
    );
    // No gaps: within each publisher's stream, what arrived is a prefix-closed run up to
    // the last acknowledged number (numbers beyond it may be missing: never acknowledged).
    for ((r, p), ns) in &acked {
        let Some(&last) = ns.last() else { continue };
        let got = received.get(&(*r, *p)).map_or(&[][..], Vec::as_slice);
        let upto: Vec<u32> = got.iter().copied().filter(|&n| n <= last).collect();
        assert_eq!(
            upto,
            (0..=last).collect::<Vec<_>>(),
            "round {r} publisher {p}: gap before the last acknowledged message"
        );
    }
    eprintln!(
        "{total_acked} acknowledged messages over {ROUNDS} kill -9 rounds, all delivered in order ({:.1} s)",
        started.elapsed().as_secs_f64()
    );
    hub.finish();
}
