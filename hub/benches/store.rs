//! Store benchmarks: durable append throughput and start-up time with a large backlog.
//!
//! A plain timed harness (`harness = false`) that prints one line per figure:
//!
//! - durable append throughput (every append waited on until committed with
//!   `Durability::Immediate`) with a fixed group size — one submitter sending 1, 10, 100 or
//!   1000 appends per submission — for 64 B and 1 KiB payloads;
//! - the same with 1, 10 and 100 concurrent publishers submitting one message each and waiting
//!   for it (what sessions do), so the writer's natural group commit decides the group size;
//! - 1, 10 and 100 publishers submitting 16 appends at a time (a session's read), waiting on
//!   the `committed` watch (woken by every commit) or on a `TicketWaiter` (woken by their own
//!   ticket), with the polls of the waiting tasks per message;
//! - the reopen time and the ingest rate with a backlog of `TERN_BENCH_BACKLOG` messages
//!   (default 1,000,000) already stored, compared with an empty store;
//! - the reopen time when one offline persistent session is owed the whole backlog, loading
//!   its queue fully and with `recovery_queue_limit = 1000`.
//!
//! Run: `cargo bench -p tern-hub --bench store`. The database lives under `target/` (a real
//! disk, not tmpfs, so fsync costs are real); `TERN_BENCH_SECS` sets seconds per figure.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use tern_hub::store::{Store, StoreConfig, StoredMessage, StoredProperties, WriteOp, now_millis};
use tern_mqtt::QoS;

fn message(payload: &Bytes) -> StoredMessage {
    StoredMessage {
        received_ms: now_millis(),
        topic: "sensors/dev-0042/temperature".into(),
        payload: payload.clone(),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: StoredProperties::default(),
        publisher: "dev-0042".into(),
        expires_ms: None,
        bridge: None,
    }
}

fn config() -> StoreConfig {
    StoreConfig {
        // The benchmark measures ingest, not retention.
        max_bytes: u64::MAX,
        ..StoreConfig::default()
    }
}

/// One submitter, `group` appends per submission, each submission waited on.
async fn fixed_groups(store: &Store, payload: &Bytes, group: usize, secs: f64) -> Result<f64> {
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        let ops = (0..group)
            .map(|_| WriteOp::Append(message(payload)))
            .collect();
        let s = store.submit(ops).await?;
        store.wait_durable(s.ticket).await?;
        sent += u64::try_from(group)?;
    }
    Ok(rate(sent, start.elapsed()))
}

/// `publishers` tasks, each submitting one message at a time and waiting for it.
async fn publishers(store: &Store, payload: &Bytes, publishers: usize, secs: f64) -> Result<f64> {
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for _ in 0..publishers {
        let store = store.clone();
        let payload = payload.clone();
        tasks.push(tokio::spawn(async move {
            let mut sent = 0u64;
            while Instant::now() < deadline {
                let s = store
                    .submit(vec![WriteOp::Append(message(&payload))])
                    .await?;
                store.wait_durable(s.ticket).await?;
                sent += 1;
            }
            anyhow::Ok(sent)
        }));
    }
    let mut sent = 0;
    for t in tasks {
        sent += t.await??;
    }
    Ok(rate(sent, start.elapsed()))
}

/// How a publisher task learns that its submission resolved.
#[derive(Debug, Clone, Copy)]
enum Wait {
    /// The `committed` watch: woken by every commit of every publisher.
    Watch,
    /// A [`TicketWaiter`](tern_hub::store::TicketWaiter): woken once its own ticket resolved.
    Waiter,
}

/// Polls `future` to completion, adding each poll (the first and every wake-up) to `polls`.
async fn counted<F: std::future::Future>(future: F, polls: &mut u64) -> F::Output {
    let mut future = std::pin::pin!(future);
    std::future::poll_fn(|cx| {
        *polls += 1;
        future.as_mut().poll(cx)
    })
    .await
}

/// `publishers` tasks, each submitting `group` appends at a time and waiting the `wait` way
/// (one read's batch of a session); returns msg/s and polls of the waiting tasks per message.
async fn waiting_publishers(
    store: &Store,
    payload: &Bytes,
    publishers: usize,
    group: usize,
    wait: Wait,
    secs: f64,
) -> Result<(f64, f64)> {
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for _ in 0..publishers {
        let store = store.clone();
        let payload = payload.clone();
        tasks.push(tokio::spawn(async move {
            let (mut sent, mut polls) = (0u64, 0u64);
            let mut committed = store.committed();
            let mut waiter = store.ticket_waiter();
            while Instant::now() < deadline {
                let ops = (0..group)
                    .map(|_| WriteOp::Append(message(&payload)))
                    .collect();
                let ticket = store.submit(ops).await?.ticket;
                match wait {
                    Wait::Watch => {
                        let resolved = async {
                            while *committed.borrow_and_update() < ticket {
                                committed.changed().await?;
                            }
                            anyhow::Ok(())
                        };
                        counted(resolved, &mut polls).await?;
                    }
                    Wait::Waiter => counted(waiter.resolved(ticket), &mut polls).await?,
                }
                store.outcome(ticket)?;
                sent += u64::try_from(group)?;
            }
            anyhow::Ok((sent, polls))
        }));
    }
    let (mut sent, mut polls) = (0, 0);
    for t in tasks {
        let (s, p) = t.await??;
        sent += s;
        polls += p;
    }
    Ok((rate(sent, start.elapsed()), per(polls, sent)))
}

#[expect(clippy::cast_precision_loss, reason = "a rate for display")]
fn rate(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

#[expect(clippy::cast_precision_loss, reason = "a ratio for display")]
fn per(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// Fills the store with `count` 64-byte messages in groups of 1000 (pipelined).
async fn fill(store: &Store, count: u64) -> Result<()> {
    let payload = Bytes::from(vec![7u8; 64]);
    let mut pending = std::collections::VecDeque::new();
    let mut done = 0;
    while done < count {
        let n = (count - done).min(1000);
        let ops = (0..n).map(|_| WriteOp::Append(message(&payload))).collect();
        pending.push_back(store.submit(ops).await?.ticket);
        if pending.len() > 8
            && let Some(t) = pending.pop_front()
        {
            store.wait_durable(t).await?;
        }
        done += n;
    }
    for t in pending {
        store.wait_durable(t).await?;
    }
    Ok(())
}

fn fresh_dir(root: &Path, name: &str) -> Result<std::path::PathBuf> {
    let dir = root.join(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("remove {}", dir.display()))?;
    }
    Ok(dir)
}

fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs us without it: stay quick.
    let quick = !std::env::args().any(|a| a == "--bench");
    let secs: f64 = std::env::var("TERN_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if quick { 0.05 } else { 2.0 });
    let backlog: u64 = std::env::var("TERN_BENCH_BACKLOG")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if quick { 2_000 } else { 1_000_000 });
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/bench-store")
        .canonicalize()
        .or_else(|_| {
            let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-store");
            std::fs::create_dir_all(&p).map(|()| p)
        })?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;

    rt.block_on(async {
        for size in [64usize, 1024] {
            let payload = Bytes::from(vec![0x5au8; size]);
            let dir = fresh_dir(&root, "groups")?;
            let (store, _) = Store::open(&dir, config())?;
            for group in [1usize, 10, 100, 1000] {
                let r = fixed_groups(&store, &payload, group, secs).await?;
                println!("durable append, {size} B payload, group {group:>4}: {r:>10.0} msg/s");
            }
            for n in [1usize, 10, 100] {
                let before = store.stats();
                let r = publishers(&store, &payload, n, secs).await?;
                let after = store.stats();
                let commits = after.commits - before.commits;
                let appends = after.appends - before.appends;
                println!(
                    "durable append, {size} B payload, {n:>3} publishers: {r:>10.0} msg/s \
                     ({:.1} msg/commit)",
                    per(appends, commits)
                );
            }
            for n in [1usize, 10, 100] {
                for wait in [Wait::Watch, Wait::Waiter] {
                    let (r, polls) = waiting_publishers(&store, &payload, n, 16, wait, secs).await?;
                    println!(
                        "durable append, {size} B payload, {n:>3} publishers x 16, {wait:?}: \
                         {r:>10.0} msg/s, {polls:.3} polls/msg"
                    );
                }
            }
            let store2 = store.clone();
            drop(store);
            tokio::task::spawn_blocking(move || store2.close()).await??;
        }

        let dir = fresh_dir(&root, "backlog")?;
        let (store, _) = Store::open(&dir, config())?;
        let payload = Bytes::from(vec![0x5au8; 64]);
        let empty_rate = fixed_groups(&store, &payload, 1000, secs).await?;
        let start = Instant::now();
        fill(&store, backlog).await?;
        let fill_time = start.elapsed();
        let full_rate = fixed_groups(&store, &payload, 1000, secs).await?;
        let stats = store.stats();
        tokio::task::spawn_blocking(move || store.close()).await??;
        let size = std::fs::metadata(dir.join(tern_hub::store::FILE_NAME))?.len();
        let start = Instant::now();
        let (store, recovered) = Store::open(&dir, config())?;
        let open_time = start.elapsed();
        println!(
            "backlog: {} records, {} MiB of records, file {} MiB, filled in {:.1} s",
            stats.records,
            stats.bytes >> 20,
            size >> 20,
            fill_time.as_secs_f64()
        );
        println!(
            "reopen with {} records: {:.1} ms (next seq {})",
            stats.records,
            open_time.as_secs_f64() * 1000.0,
            recovered.next_seq
        );
        println!(
            "ingest, group 1000, 64 B: {empty_rate:.0} msg/s empty, {full_rate:.0} msg/s with backlog"
        );

        // One offline persistent session owed the whole backlog: start-up cost of its queue.
        let queued = backlog.min(recovered.next_seq);
        let mut ops = vec![WriteOp::SessionUpsert(tern_hub::store::SessionRecord {
            client_id: "offline".into(),
            protocol_level: 5,
            session_expiry_secs: u32::MAX,
            expires_at_ms: None,
            subscriptions: Vec::new(),
        })];
        let mut pending = std::collections::VecDeque::new();
        for seq in 0..queued {
            ops.push(WriteOp::QueuePush {
                client: "offline".into(),
                seq,
                delivery: tern_hub::store::DeliveryInfo {
                    qos: QoS::AtLeastOnce,
                    retain: false,
                    subscription_ids: Vec::new(),
                },
            });
            if ops.len() >= 1000 {
                pending.push_back(store.submit(std::mem::take(&mut ops)).await?.ticket);
                if pending.len() > 8
                    && let Some(t) = pending.pop_front()
                {
                    store.wait_durable(t).await?;
                }
            }
        }
        pending.push_back(store.submit(ops).await?.ticket);
        for t in pending {
            store.wait_durable(t).await?;
        }
        tokio::task::spawn_blocking(move || store.close()).await??;
        for limit in [usize::MAX, 1000] {
            let start = Instant::now();
            let cfg = StoreConfig {
                recovery_queue_limit: limit,
                ..config()
            };
            let (store, recovered) = Store::open(&dir, cfg)?;
            let open_time = start.elapsed();
            let loaded = recovered.sessions.get("offline").map_or(0, |s| s.queue.len());
            println!(
                "reopen with a {queued}-entry session queue, {loaded} loaded: {:.1} ms",
                open_time.as_secs_f64() * 1000.0
            );
            tokio::task::spawn_blocking(move || store.close()).await??;
        }
        std::fs::remove_dir_all(&root)?;
        anyhow::Ok(())
    })
}
