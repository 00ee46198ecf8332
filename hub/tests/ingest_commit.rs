//! The store's commit path under QoS 1 ingest: a submission made while the writer is idle is
//! committed by the submitting task itself, and submissions racing each other (some inline,
//! some through the writer thread, which groups them) still commit in ticket order, with
//! log positions in the same order, and all of it is there after a reopen.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tern_hub::store::{Store, StoreConfig, StoredMessage, StoredProperties, Ticket, WriteOp};
use tern_mqtt::QoS;

/// A QoS 1 message whose payload names its publisher and its number.
fn message(publisher: usize, number: u32) -> StoredMessage {
    StoredMessage {
        received_ms: tern_hub::store::now_millis(),
        topic: format!("ingest/{publisher}"),
        payload: Bytes::from(format!("{publisher}:{number}")),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: StoredProperties::default(),
        publisher: format!("p{publisher}"),
        expires_ms: None,
        bridge: None,
    }
}

/// The publisher and number a payload of [`message`] names.
fn parse(payload: &[u8]) -> (usize, u32) {
    let text = std::str::from_utf8(payload).expect("utf-8 payload");
    let (publisher, number) = text.split_once(':').expect("publisher:number");
    (
        publisher.parse().expect("publisher"),
        number.parse().expect("number"),
    )
}

/// A store whose writer thread never wakes on its own and never owes a checkpoint in the
/// test's time (maintenance and checkpoints stay on the writer thread), so only
/// submissions decide whether it is busy.
fn config() -> StoreConfig {
    StoreConfig {
        maintenance_interval: Duration::from_secs(3600),
        checkpoint_interval: Duration::from_secs(3600),
        ..StoreConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submission_to_an_idle_store_has_resolved_when_submit_returns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = Store::open(dir.path(), config()).expect("open");
    let committed = store.committed();
    let submitted = store
        .submit(vec![WriteOp::Append(message(0, 0))])
        .await
        .expect("submit");
    // Nothing was submitted before: the writer was idle and this task committed it.
    assert!(
        *committed.borrow() >= submitted.ticket,
        "ticket {:?} not resolved when submit returned",
        submitted.ticket
    );
    store.outcome(submitted.ticket).expect("committed");
    let stored = store.get(submitted.seqs[0]).expect("read").expect("stored");
    assert_eq!(parse(&stored.payload), (0, 0));
    // Back-to-back submissions after it may go either way; each resolves, in order.
    let mut last = submitted.ticket;
    for number in 1..20 {
        let s = store
            .submit(vec![WriteOp::Append(message(0, number))])
            .await
            .expect("submit");
        assert!(s.ticket > last);
        store.wait_durable(s.ticket).await.expect("durable");
        last = s.ticket;
    }
    assert_eq!(store.stats().appends, 20);
    store.close().expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_submissions_commit_in_ticket_order_and_survive_a_reopen() {
    const PUBLISHERS: usize = 8;
    const BATCHES: u32 = 150;
    const PER_BATCH: u32 = 4;
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = Store::open(dir.path(), config()).expect("open");

    // Resolution is observed from outside too: the committed ticket never moves back.
    let mut watch = store.committed();
    let watcher = tokio::spawn(async move {
        let mut last = Ticket(0);
        while watch.changed().await.is_ok() {
            let now = *watch.borrow_and_update();
            assert!(
                now >= last,
                "committed ticket moved back: {last:?} -> {now:?}"
            );
            last = now;
        }
    });

    let store = Arc::new(store);
    let mut tasks = Vec::new();
    for publisher in 0..PUBLISHERS {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let mut submitted = Vec::new();
            for batch in 0..BATCHES {
                let ops = (0..PER_BATCH)
                    .map(|i| WriteOp::Append(message(publisher, batch * PER_BATCH + i)))
                    .collect();
                let s = store.submit(ops).await.expect("submit");
                // Every other batch waits for its commit, as a publisher with a small
                // window does; the rest pipeline.
                if batch % 2 == 0 {
                    store.wait_durable(s.ticket).await.expect("durable");
                }
                submitted.push(s);
            }
            submitted
        }));
    }
    let mut by_ticket = BTreeMap::new();
    for task in tasks {
        for s in task.await.expect("publisher task") {
            store.wait_durable(s.ticket).await.expect("durable");
            by_ticket.insert(s.ticket, s.seqs);
        }
    }
    // Positions follow tickets: a later ticket never holds an earlier position.
    let mut last_seq = None;
    for seqs in by_ticket.values() {
        for &seq in seqs {
            assert!(
                last_seq.is_none_or(|last| seq > last),
                "seq {seq} after {last_seq:?}"
            );
            last_seq = Some(seq);
        }
    }
    let total = PUBLISHERS * usize::try_from(BATCHES * PER_BATCH).expect("count");
    assert_eq!(store.stats().appends, u64::try_from(total).expect("count"));
    let store = Arc::into_inner(store).expect("last handle");
    store.close().expect("close");
    drop(store);
    watcher.await.expect("watcher");

    // After a reopen (journal replay included) the log holds every message once, in
    // position order, and each publisher's messages in the order it submitted them.
    let (store, _) = Store::open(dir.path(), config()).expect("reopen");
    let mut next = [0u32; PUBLISHERS];
    let mut from = store.head();
    let mut read = 0;
    loop {
        let mut out = Vec::new();
        from = store.read_log(from, 512, &mut out).expect("read log");
        if out.is_empty() {
            break;
        }
        for (_, stored) in out {
            let (publisher, number) = parse(&stored.payload);
            assert_eq!(
                number, next[publisher],
                "publisher {publisher} out of order"
            );
            next[publisher] += 1;
            read += 1;
        }
    }
    assert_eq!(read, total);
    store.close().expect("close");
}
