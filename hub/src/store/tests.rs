//! Store tests: round trips, group commit, tickets, recovery, retention, bad files, and a
//! model test against `BTreeMap`s across random reopen points.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;
use tern_mqtt::QoS;

use super::*;

fn msg(topic: &str, payload: &[u8], qos: QoS) -> StoredMessage {
    StoredMessage {
        received_ms: now_millis(),
        topic: topic.to_string(),
        payload: Bytes::copy_from_slice(payload),
        qos,
        retain: false,
        properties: StoredProperties::default(),
        publisher: "pub-1".to_string(),
        expires_ms: None,
        bridge: None,
    }
}

fn delivery(qos: QoS) -> DeliveryInfo {
    DeliveryInfo {
        qos,
        retain: false,
        subscription_ids: vec![7],
    }
}

fn session(client: &str) -> SessionRecord {
    SessionRecord {
        client_id: client.to_string(),
        protocol_level: 5,
        session_expiry_secs: 3600,
        expires_at_ms: Some(1_900_000_000_000),
        subscriptions: vec![SubscriptionRecord {
            filter: "a/#".into(),
            qos: QoS::ExactlyOnce,
            no_local: true,
            retain_as_published: true,
            retain_handling: 2,
            identifier: Some(7),
        }],
    }
}

fn will(token: u64, deadline_ms: Option<u64>) -> WillRecord {
    let mut message = msg("will/t", b"bye", QoS::AtLeastOnce);
    message.received_ms = 1_800_000_000_000;
    message.retain = true;
    message.publisher = "dying".into();
    message.properties = StoredProperties {
        payload_format_indicator: Some(1),
        content_type: Some("text/plain".into()),
        response_topic: Some("reply/to".into()),
        correlation_data: Some(Bytes::from_static(b"\x00corr")),
        user_properties: vec![("k".into(), "v".into()), ("k".into(), "v2".into())],
    };
    WillRecord {
        token,
        message,
        delay_secs: 30,
        expiry_secs: Some(120),
        deadline_ms,
    }
}

/// Wills (of clients with and without a session record) come back after reopen exactly as
/// written; a delete naming an older token keeps a newer will, an unconditional one removes
/// it.
#[test]
fn wills_survive_reopen_and_conditional_delete_keeps_newer_will() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = rt();
    {
        let (store, _) = open(dir.path());
        commit(
            &rt,
            &store,
            vec![
                WriteOp::SessionUpsert(session("dying")),
                WriteOp::WillSet {
                    client: "dying".into(),
                    will: will(7, Some(1_900_000_000_000)),
                },
                WriteOp::WillSet {
                    client: "clean".into(),
                    will: will(8, None),
                },
                WriteOp::WillSet {
                    client: "gone".into(),
                    will: will(9, None),
                },
            ],
        );
        commit(
            &rt,
            &store,
            vec![
                // Stale: the stored will of "clean" is token 8.
                WriteOp::WillDelete {
                    client: "clean".into(),
                    token: Some(3),
                },
                WriteOp::WillDelete {
                    client: "gone".into(),
                    token: Some(9),
                },
            ],
        );
        store.close().expect("close");
    }
    let (store, rec) = open(dir.path());
    assert_eq!(
        rec.wills,
        BTreeMap::from([
            ("clean".to_string(), will(8, None)),
            ("dying".to_string(), will(7, Some(1_900_000_000_000))),
        ])
    );
    assert_eq!(rec.sessions["dying"].record, session("dying"));
    commit(
        &rt,
        &store,
        vec![WriteOp::WillDelete {
            client: "clean".into(),
            token: None,
        }],
    );
    store.close().expect("close");
    drop(store);
    let (_store, rec) = open(dir.path());
    assert_eq!(rec.wills.keys().collect::<Vec<_>>(), ["dying"]);
}

fn open(dir: &Path) -> (Store, Recovered) {
    Store::open(dir, StoreConfig::default()).expect("open store")
}

pub(super) fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Submits and waits until durable.
pub(super) fn commit(rt: &tokio::runtime::Runtime, store: &Store, ops: Vec<WriteOp>) -> Vec<Seq> {
    rt.block_on(async {
        let s = store.submit(ops).await.expect("submit");
        store.wait_durable(s.ticket).await.expect("durable");
        s.seqs
    })
}

#[test]
fn append_read_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = rt();
    let (store, rec) = open(dir.path());
    assert_eq!(rec.next_seq, 0);
    let mut m = msg("a/b", &[0, 255, 1, 2], QoS::AtLeastOnce);
    m.retain = true;
    m.properties = StoredProperties {
        payload_format_indicator: Some(1),
        content_type: Some("text/plain".into()),
        response_topic: Some("resp".into()),
        correlation_data: Some(Bytes::from_static(b"\x00corr")),
        user_properties: vec![("k".into(), "1".into()), ("k".into(), "2".into())],
    };
    m.expires_ms = Some(now_millis() + 60_000);
    let seqs = commit(
        &rt,
        &store,
        vec![
            WriteOp::Append(m.clone()),
            WriteOp::Append(msg("c", b"", QoS::AtMostOnce)),
        ],
    );
    assert_eq!(seqs, vec![0, 1]);
    assert_eq!(store.get(0).expect("get"), Some(m.clone()));
    let mut out = Vec::new();
    let next = store.read_log(0, 10, &mut out).expect("read");
    assert_eq!(next, 2);
    assert_eq!(out.len(), 2);
    assert_eq!(out[0], (0, m));
    assert_eq!(out[1].1.topic, "c");
    assert_eq!(store.head(), 0);
    assert_eq!(store.tail(), 2);
    assert_eq!(store.get(5).expect("get"), None);
    let mut many = Vec::new();
    store.get_many([1, 7, 0], &mut many).expect("get_many");
    assert_eq!(many.iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![1, 0]);
    let mut out = Vec::new();
    assert_eq!(store.read_log(1, 1, &mut out).expect("read"), 2);
    assert_eq!(out.len(), 1);
}

#[test]
fn payload_is_encoded_as_one_byte_run() {
    let m = msg("t", &[0xAB; 1000], QoS::AtLeastOnce);
    let encoded = postcard::to_stdvec(&m).expect("encode");
    // 1000 payload bytes plus a small header: no per-byte framing.
    assert!(encoded.len() < 1000 + 40, "encoded {} bytes", encoded.len());
}

#[test]
fn message_conversion_round_trip() {
    use std::time::Instant;
    let now = Instant::now();
    let now_ms = now_millis();
    let m = crate::message::Message {
        topic: "x/y".into(),
        payload: Bytes::from_static(b"p"),
        qos: QoS::ExactlyOnce,
        retain: true,
        properties: crate::message::MessageProperties {
            user_properties: vec![("a".into(), "b".into())],
            ..Default::default()
        },
        expiry: Some(crate::message::Expiry {
            received_at: now,
            interval_secs: 60,
        }),
        publisher: "c1".into(),
    };
    let stored = StoredMessage::from_message(&m, now_ms);
    assert_eq!(stored.expires_ms, Some(now_ms + 60_000));
    let back = stored.to_message(now, now_ms);
    assert_eq!(back.topic, m.topic);
    assert_eq!(back.properties, m.properties);
    assert_eq!(back.expiry.map(|e| e.remaining_secs(now)), Some(Some(60)));
}

#[test]
fn expired_messages_are_hidden_on_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = rt();
    let (store, _) = open(dir.path());
    let mut old = msg("t", b"old", QoS::AtLeastOnce);
    old.expires_ms = Some(now_millis().saturating_sub(1));
    let seqs = commit(
        &rt,
        &store,
        vec![
            WriteOp::Append(old),
            WriteOp::Append(msg("t", b"new", QoS::AtLeastOnce)),
        ],
    );
    assert_eq!(store.get(seqs[0]).expect("get"), None);
    let mut out = Vec::new();
    assert_eq!(store.read_log(0, 10, &mut out).expect("read"), 2);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, seqs[1]);
}

#[test]
fn qos0_appends_are_visible_at_once_and_durable_after_close() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = rt();
    let (store, _) = open(dir.path());
    let seqs = commit(
        &rt,
        &store,
        (0..10u8)
            .map(|i| WriteOp::Append(msg("q0", &[i], QoS::AtMostOnce)))
            .collect(),
    );
    assert!(store.get(seqs[9]).expect("get").is_some());
    store.close().expect("close");
    drop(store);
    let (store, rec) = open(dir.path());
    assert_eq!(rec.next_seq, 10);
    assert_eq!(store.stats().records, 10);
    assert_eq!(
        store.get(seqs[9]).expect("get").map(|m| m.payload),
        Some(Bytes::from_static(&[9]))
    );
}

#[test]
fn group_commit_gathers_concurrent_submits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = open(dir.path());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("runtime");
    const TASKS: usize = 32;
    const PER_TASK: usize = 50;
    runtime.block_on(async {
        let mut handles = Vec::new();
        for t in 0..TASKS {
            let store = store.clone();
            handles.push(tokio::spawn(async move {
                let mut last: Option<Seq> = None;
                for i in 0..PER_TASK {
                    let m = msg(&format!("t/{t}"), &i.to_le_bytes(), QoS::AtLeastOnce);
                    let s = store
                        .submit(vec![WriteOp::Append(m)])
                        .await
                        .expect("submit");
                    store.wait_durable(s.ticket).await.expect("durable");
                    // Per-publisher order is submission order.
                    assert!(last.is_none_or(|l| l < s.seqs[0]));
                    last = Some(s.seqs[0]);
                }
            }));
        }
        for h in handles {
            h.await.expect("task");
        }
    });
    let stats = store.stats();
    let total = u64::try_from(TASKS * PER_TASK).expect("fits");
    assert_eq!(stats.appends, total);
    assert_eq!(stats.records, total);
    assert!(
        stats.commits < total,
        "{} commits for {} appends",
        stats.commits,
        total
    );
}

#[test]
fn linger_gathers_submissions_arriving_shortly_after() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = rt();
    let cfg = StoreConfig {
        group_commit_linger: Duration::from_millis(300),
        ..StoreConfig::default()
    };
    let (store, _) = Store::open(dir.path(), cfg).expect("open");
    let a = store
        .try_submit(vec![WriteOp::Append(msg("t", b"a", QoS::AtLeastOnce))])
        .expect("submit");
    std::thread::sleep(Duration::from_millis(20));
    let b = store
        .try_submit(vec![WriteOp::Append(msg("t", b"b", QoS::AtLeastOnce))])
        .expect("submit");
    rt.block_on(store.wait_durable(b.ticket)).expect("durable");
    rt.block_on(store.wait_durable(a.ticket)).expect("durable");
    assert_eq!(store.stats().commits, 1);
    assert_eq!(store.stats().last_commit_batch, 2);
}

#[test]
fn tickets_resolve_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = rt();
    let (store, _) = open(dir.path());
    let mut watch = store.committed();
    let mut tickets = Vec::new();
    for i in 0..200u32 {
        let s = store
            .try_submit(vec![WriteOp::Append(msg(
                "t",
                &i.to_le_bytes(),
                QoS::AtLeastOnce,
            ))])
            .expect("submit");
        tickets.push(s.ticket);
    }
    assert!(tickets.windows(2).all(|w| w[0] < w[1]));
    rt.block_on(async {
        let mut seen = Ticket(0);
        while seen < tickets[tickets.len() - 1] {
            watch.changed().await.expect("writer alive");
            let now = *watch.borrow_and_update();
            assert!(now >= seen, "watch went backwards");
            // Everything up to the published ticket is durable and readable.
            assert!(store.outcome(now).is_ok());
            seen = now;
        }
        for t in &tickets {
            store.wait_durable(*t).await.expect("durable");
        }
    });
    assert_eq!(store.stats().appends, 200);
}

#[test]
fn restart_recovers_everything() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = rt();
    let (store, _) = open(dir.path());
    let seqs = commit(
        &rt,
        &store,
        (0..5)
            .map(|i| WriteOp::Append(msg("a/x", &[i], QoS::AtLeastOnce)))
            .collect(),
    );
    let retained = msg("r/1", b"ret", QoS::AtLeastOnce);
    let c1_record = session("c1");
    commit(
        &rt,
        &store,
        vec![
            WriteOp::SessionUpsert(c1_record.clone()),
            WriteOp::SessionUpsert(session("c2")),
            WriteOp::QueuePush {
                client: "c1".into(),
                seq: seqs[3],
                delivery: delivery(QoS::AtLeastOnce),
            },
            WriteOp::QueuePush {
                client: "c1".into(),
                seq: seqs[4],
                delivery: delivery(QoS::ExactlyOnce),
            },
            WriteOp::QueuePush {
                client: "c2".into(),
                seq: seqs[0],
                delivery: delivery(QoS::AtLeastOnce),
            },
            WriteOp::InflightOutSet {
                client: "c1".into(),
                packet_id: 9,
                entry: InflightOut {
                    seq: seqs[2],
                    state: OutboundState::PubrelSent,
                    delivery: delivery(QoS::ExactlyOnce),
                },
            },
            WriteOp::InflightInAdd {
                client: "c1".into(),
                packet_id: 3,
            },
            WriteOp::InflightInAdd {
                client: "c1".into(),
                packet_id: 4,
            },
            WriteOp::RetainedSet {
                topic: "r/1".into(),
                message: retained.clone(),
            },
            WriteOp::RetainedSet {
                topic: "r/2".into(),
                message: retained.clone(),
            },
            WriteOp::CursorSet {
                name: "cloud".into(),
                seq: seqs[1],
            },
        ],
    );
    commit(
        &rt,
        &store,
        vec![
            WriteOp::InflightInRemove {
                client: "c1".into(),
                packet_id: 4,
            },
            WriteOp::RetainedClear {
                topic: "r/2".into(),
            },
            WriteOp::SessionDelete {
                client: "c2".into(),
            },
        ],
    );
    let before = store.stats();
    drop(store);

    let (store, rec) = open(dir.path());
    assert_eq!(rec.next_seq, 5);
    assert_eq!(rec.head, 0);
    assert_eq!(rec.sessions.len(), 1);
    let c1 = &rec.sessions["c1"];
    assert_eq!(c1.record, c1_record);
    assert_eq!(
        c1.queue,
        vec![
            QueueEntry {
                seq: seqs[3],
                delivery: delivery(QoS::AtLeastOnce)
            },
            QueueEntry {
                seq: seqs[4],
                delivery: delivery(QoS::ExactlyOnce)
            },
        ]
    );
    assert_eq!(c1.inflight_out[&9].seq, seqs[2]);
    assert_eq!(c1.inflight_out[&9].state, OutboundState::PubrelSent);
    assert_eq!(c1.inflight_in, vec![3]);
    assert_eq!(rec.retained.len(), 1);
    assert_eq!(rec.retained["r/1"], retained);
    assert_eq!(rec.cursors["cloud"], seqs[1]);
    assert_eq!(rec.corrupt_records, 0);
    let after = store.stats();
    assert_eq!(
        (after.bytes, after.records, after.head, after.next_seq),
        (before.bytes, before.records, before.head, before.next_seq)
    );
    // New appends continue after the recovered tail.
    let more = commit(
        &rt,
        &store,
        vec![WriteOp::Append(msg("a", b"z", QoS::AtLeastOnce))],
    );
    assert_eq!(more, vec![5]);
}

#[test]
fn long_queues_are_paged_in_after_a_truncated_recovery() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = rt();
    let (store, _) = open(dir.path());
    let seqs = commit(
        &rt,
        &store,
        (0..25u8)
            .map(|i| WriteOp::Append(msg("q", &[i], QoS::AtLeastOnce)))
            .collect(),
    );
    let mut ops = vec![
        WriteOp::SessionUpsert(session("a")),
        WriteOp::SessionUpsert(session("b")),
    ];
    for &seq in &seqs {
        for client in ["a", "b"] {
            ops.push(WriteOp::QueuePush {
                client: client.into(),
                seq,
                delivery: delivery(QoS::AtLeastOnce),
            });
        }
    }
    commit(&rt, &store, ops);
    drop(store);
    let cfg = StoreConfig {
        recovery_queue_limit: 10,
        ..StoreConfig::default()
    };
    let (store, rec) = Store::open(dir.path(), cfg).expect("open");
    let a = &rec.sessions["a"];
    assert!(a.queue_truncated);
    assert_eq!(a.queue.len(), 10);
    let mut rest = Vec::new();
    let mut after = a.queue.last().map(|e| e.seq);
    loop {
        let before = rest.len();
        store
            .read_queue("a", after, 4, &mut rest)
            .expect("read_queue");
        if rest.len() == before {
            break;
        }
        after = rest.last().map(|e: &QueueEntry| e.seq);
    }
    let all: Vec<Seq> = a.queue.iter().chain(&rest).map(|e| e.seq).collect();
    assert_eq!(all, seqs);
    // Another client's entries never leak into the page.
    let mut b = Vec::new();
    store
        .read_queue("b", None, 100, &mut b)
        .expect("read_queue");
    assert_eq!(b.len(), 25);
}

#[test]
fn meta_counters_are_exact_after_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = rt();
    let (store, _) = open(dir.path());
    for chunk in 0..20u8 {
        commit(
            &rt,
            &store,
            (0..50u8)
                .map(|i| WriteOp::Append(msg("m", &[chunk, i], QoS::AtLeastOnce)))
                .collect(),
        );
    }
    let mut all = Vec::new();
    store.read_log(0, usize::MAX, &mut all).expect("read");
    let encoded: u64 = all
        .iter()
        .map(|(_, m)| postcard::to_stdvec(m).expect("encode").len() as u64)
        .sum();
    drop(store);
    let (store, rec) = open(dir.path());
    let stats = store.stats();
    assert_eq!(stats.records, 1000);
    assert_eq!(stats.bytes, encoded);
    assert_eq!(stats.next_seq, 1000);
    assert_eq!(rec.next_seq, 1000);
    assert_eq!(store.head(), 0);
}

fn small_budget(max_bytes: u64, when_full: WhenFull) -> StoreConfig {
    StoreConfig {
        max_bytes,
        when_full,
        trim_grace: Duration::ZERO,
        maintenance_interval: Duration::from_millis(20),
        ..StoreConfig::default()
    }
}

#[test]
fn refuse_policy_returns_quota_exceeded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = rt();
    let (store, _) = Store::open(dir.path(), small_budget(10_000, WhenFull::Refuse)).expect("open");
    // A cursor at 0 keeps everything needed.
    commit(
        &rt,
        &store,
        vec![WriteOp::CursorSet {
            name: "cloud".into(),
            seq: 0,
        }],
    );
    let mut refused = None;
    for _ in 0..100 {
        let r =
            rt.block_on(store.submit(vec![WriteOp::Append(msg("t", &[1; 500], QoS::AtLeastOnce))]));
        match r {
            Ok(s) => rt.block_on(store.wait_durable(s.ticket)).expect("durable"),
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    assert!(matches!(
        refused,
        Some(StoreError::QuotaExceeded { limit: 10_000, .. })
    ));
    let stats = store.stats();
    assert_eq!(stats.refused, 1);
    assert_eq!(stats.trimmed, 0);
    assert_eq!(
        store.get(0).expect("get").map(|m| m.payload.len()),
        Some(500)
    );
    // Non-append ops still go through.
    commit(
        &rt,
        &store,
        vec![WriteOp::CursorSet {
            name: "cloud".into(),
            seq: 15,
        }],
    );
    // The consumer advanced: the writer trims behind it and appends are accepted again.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while store.stats().bytes >= 10_000 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(store.stats().bytes < 10_000);
    assert!(
        store.head() <= 15,
        "trimmed past the cursor: head {}",
        store.head()
    );
    assert!(store.get(15).expect("get").is_some());
    commit(
        &rt,
        &store,
        vec![WriteOp::Append(msg("t", b"again", QoS::AtLeastOnce))],
    );
}

#[test]
fn drop_oldest_trims_and_counts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = rt();
    let (store, _) =
        Store::open(dir.path(), small_budget(10_000, WhenFull::DropOldest)).expect("open");
    commit(
        &rt,
        &store,
        vec![WriteOp::CursorSet {
            name: "cloud".into(),
            seq: 0,
        }],
    );
    for _ in 0..100 {
        commit(
            &rt,
            &store,
            vec![WriteOp::Append(msg("t", &[1; 500], QoS::AtLeastOnce))],
        );
    }
    let stats = store.stats();
    assert!(stats.bytes <= 10_000 + 600, "bytes {}", stats.bytes);
    assert!(stats.trimmed > 0);
    assert_eq!(stats.trimmed, stats.dropped_unconsumed);
    assert_eq!(stats.records + stats.trimmed, 100);
    assert_eq!(store.get(0).expect("get"), None);
    assert!(store.get(99).expect("get").is_some());
    assert_eq!(store.head(), stats.trimmed);
}

#[test]
fn trimming_keeps_needed_entries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = rt();
    let (store, _) = Store::open(dir.path(), small_budget(20_000, WhenFull::Refuse)).expect("open");
    let seqs = commit(
        &rt,
        &store,
        (0..30)
            .map(|_| WriteOp::Append(msg("t", &[2; 500], QoS::AtLeastOnce)))
            .collect(),
    );
    // A session needs seq 10 (queued) and 12 (in flight); a consumer needs 20 onwards.
    commit(
        &rt,
        &store,
        vec![
            WriteOp::SessionUpsert(session("c")),
            WriteOp::QueuePush {
                client: "c".into(),
                seq: seqs[10],
                delivery: delivery(QoS::AtLeastOnce),
            },
            WriteOp::InflightOutSet {
                client: "c".into(),
                packet_id: 1,
                entry: InflightOut {
                    seq: seqs[12],
                    state: OutboundState::PublishSent,
                    delivery: delivery(QoS::AtLeastOnce),
                },
            },
            WriteOp::CursorSet {
                name: "b".into(),
                seq: seqs[20],
            },
        ],
    );
    // Fill the budget until the store refuses: everything left is needed.
    for _ in 0..100 {
        let r =
            rt.block_on(store.submit(vec![WriteOp::Append(msg("t", &[3; 500], QoS::AtLeastOnce))]));
        match r {
            Ok(s) => rt.block_on(store.wait_durable(s.ticket)).expect("durable"),
            Err(StoreError::QuotaExceeded { .. }) => break,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    let stats = store.stats();
    assert!(stats.trimmed > 0, "nothing trimmed");
    assert_eq!(stats.dropped_unconsumed, 0);
    assert_eq!(store.head(), seqs[10]);
    for &s in &seqs[10..30] {
        assert!(store.get(s).expect("get").is_some(), "seq {s} trimmed");
    }
    // The session acknowledges: the queue entry goes, the in-flight one still holds 12.
    commit(
        &rt,
        &store,
        vec![WriteOp::QueueRemove {
            client: "c".into(),
            seq: seqs[10],
        }],
    );
    assert_eq!(store.head(), seqs[12]);
    // Deleting the session releases 12 as well; the cursor still holds 20.
    commit(
        &rt,
        &store,
        vec![WriteOp::SessionDelete { client: "c".into() }],
    );
    let head = store.head();
    assert!(head > seqs[12] && head <= seqs[20], "head {head}");
    for &s in &seqs[20..30] {
        assert!(store.get(s).expect("get").is_some(), "seq {s} trimmed");
    }
    assert_eq!(store.stats().dropped_unconsumed, 0);
}

#[test]
fn age_limit_trims_old_entries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = rt();
    let cfg = StoreConfig {
        max_age: Duration::from_secs(3600),
        maintenance_interval: Duration::from_millis(20),
        ..StoreConfig::default()
    };
    let (store, _) = Store::open(dir.path(), cfg).expect("open");
    commit(
        &rt,
        &store,
        vec![WriteOp::CursorSet {
            name: "b".into(),
            seq: 0,
        }],
    );
    let mut old = msg("t", b"old", QoS::AtLeastOnce);
    old.received_ms = now_millis() - 2 * 3600 * 1000;
    let seqs = commit(
        &rt,
        &store,
        vec![
            WriteOp::Append(old.clone()),
            WriteOp::Append(old),
            WriteOp::Append(msg("t", b"new", QoS::AtLeastOnce)),
        ],
    );
    // The idle writer's maintenance deletes them even though the cursor still needs them.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while store.stats().trimmed < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let stats = store.stats();
    assert_eq!(stats.trimmed, 2);
    assert_eq!(stats.dropped_unconsumed, 2);
    assert_eq!(store.head(), seqs[2]);
    assert!(store.get(seqs[2]).expect("get").is_some());
}

#[test]
fn idle_writer_trims_a_large_aged_backlog_in_steps() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = rt();
    let cfg = StoreConfig {
        max_age: Duration::from_secs(3600),
        trim_batch: 100,
        // Long enough that only back-to-back steps can finish within the test's wait.
        maintenance_interval: Duration::from_secs(60),
        ..StoreConfig::default()
    };
    let (store, _) = Store::open(dir.path(), cfg).expect("open");
    let mut old = msg("t", b"old", QoS::AtLeastOnce);
    old.received_ms = now_millis() - 2 * 3600 * 1000;
    commit(
        &rt,
        &store,
        (0..1000).map(|_| WriteOp::Append(old.clone())).collect(),
    );
    // The commit itself trims one batch; the idle writer continues without waiting.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while store.stats().records > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let stats = store.stats();
    assert_eq!(stats.records, 0);
    assert_eq!(stats.trimmed, 1000);
    assert_eq!(stats.bytes, 0);
    assert_eq!(store.head(), 1000);
}

#[test]
fn garbage_file_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let garbage: Vec<u8> = (0..64 * 1024u32)
        .map(|i| u8::try_from(i.wrapping_mul(2_654_435_761) >> 24).unwrap_or(0))
        .collect();
    std::fs::write(dir.path().join(FILE_NAME), garbage).expect("write");
    let err = Store::open(dir.path(), StoreConfig::default()).expect_err("must fail");
    assert!(matches!(err, StoreError::Corrupted { .. }), "{err:?}");
    assert!(err.to_string().contains("tern.redb"), "{err}");
}

#[test]
fn foreign_redb_file_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let db = redb::Database::create(dir.path().join(FILE_NAME)).expect("create");
        let txn = db.begin_write().expect("txn");
        {
            let def: redb::TableDefinition<&str, &str> = redb::TableDefinition::new("other");
            let mut t = txn.open_table(def).expect("table");
            t.insert("k", "v").expect("insert");
        }
        txn.commit().expect("commit");
    }
    let err = Store::open(dir.path(), StoreConfig::default()).expect_err("must fail");
    assert!(matches!(err, StoreError::Corrupted { .. }), "{err:?}");
}

#[test]
fn unknown_format_version_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(open(dir.path()));
    {
        let db = redb::Database::create(dir.path().join(FILE_NAME)).expect("create");
        let txn = db.begin_write().expect("txn");
        txn.open_table(tables::META)
            .expect("meta")
            .insert(tables::KEY_FORMAT_VERSION, 99)
            .expect("insert");
        txn.commit().expect("commit");
    }
    let err = Store::open(dir.path(), StoreConfig::default()).expect_err("must fail");
    assert!(
        matches!(err, StoreError::UnsupportedVersion { found: 99, .. }),
        "{err:?}"
    );
}

#[test]
fn second_open_is_in_use() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_store, _) = open(dir.path());
    let err = Store::open(dir.path(), StoreConfig::default()).expect_err("must fail");
    assert!(matches!(err, StoreError::InUse { .. }), "{err:?}");
    assert!(err.to_string().contains("in use by another process"));
}

#[test]
fn close_flushes_and_refuses_later_submits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = open(dir.path());
    let mut last = None;
    for i in 0..100u8 {
        last = Some(
            store
                .try_submit(vec![WriteOp::Append(msg("t", &[i], QoS::AtLeastOnce))])
                .expect("submit"),
        );
    }
    store.close().expect("close");
    let last = last.expect("submitted");
    assert!(*store.committed().borrow() >= last.ticket);
    assert!(matches!(
        store.try_submit(vec![WriteOp::Append(msg("t", b"", QoS::AtLeastOnce))]),
        Err(StoreError::Closed)
    ));
    drop(store);
    let (store, rec) = open(dir.path());
    assert_eq!(rec.next_seq, 100);
    assert_eq!(store.stats().records, 100);
}

#[test]
fn store_is_send_sync_clone() {
    fn check<T: Send + Sync + Clone + 'static>() {}
    check::<Store>();
    let _ = Arc::new(0);
}

/// One step of the model test.
#[derive(Debug, Clone)]
enum ModelOp {
    Append {
        qos: u8,
        len: usize,
    },
    Upsert {
        client: usize,
    },
    Delete {
        client: usize,
    },
    Push {
        client: usize,
        pick: usize,
    },
    Remove {
        client: usize,
        pick: usize,
    },
    Retain {
        topic: usize,
        clear: bool,
    },
    Cursor {
        name: usize,
        pick: usize,
    },
    FlightOut {
        client: usize,
        pid: u16,
        pick: usize,
    },
    FlightOutDone {
        client: usize,
        pid: u16,
    },
    FlightIn {
        client: usize,
        pid: u16,
        add: bool,
    },
    Reopen,
}

fn model_op() -> impl Strategy<Value = ModelOp> {
    prop_oneof![
        4 => (0u8..3, 0usize..64).prop_map(|(qos, len)| ModelOp::Append { qos, len }),
        1 => (0usize..3).prop_map(|client| ModelOp::Upsert { client }),
        1 => (0usize..3).prop_map(|client| ModelOp::Delete { client }),
        3 => (0usize..3, any::<usize>()).prop_map(|(client, pick)| ModelOp::Push { client, pick }),
        2 => (0usize..3, any::<usize>())
            .prop_map(|(client, pick)| ModelOp::Remove { client, pick }),
        1 => (0usize..3, any::<bool>()).prop_map(|(topic, clear)| ModelOp::Retain { topic, clear }),
        1 => (0usize..2, any::<usize>()).prop_map(|(name, pick)| ModelOp::Cursor { name, pick }),
        2 => (0usize..3, 1u16..4, any::<usize>())
            .prop_map(|(client, pid, pick)| ModelOp::FlightOut { client, pid, pick }),
        1 => (0usize..3, 1u16..4).prop_map(|(client, pid)| ModelOp::FlightOutDone { client, pid }),
        1 => (0usize..3, 1u16..4, any::<bool>())
            .prop_map(|(client, pid, add)| ModelOp::FlightIn { client, pid, add }),
        1 => Just(ModelOp::Reopen),
    ]
}

#[derive(Default)]
struct Model {
    log: BTreeMap<Seq, StoredMessage>,
    sessions: BTreeMap<String, SessionRecord>,
    queue: BTreeMap<(String, Seq), DeliveryInfo>,
    retained: BTreeMap<String, StoredMessage>,
    cursors: BTreeMap<String, Seq>,
    inflight_out: BTreeMap<(String, u16), InflightOut>,
    inflight_in: BTreeMap<(String, u16), ()>,
    next_seq: Seq,
}

impl Model {
    fn check(&self, store: &Store, rec: &Recovered) {
        assert_eq!(rec.next_seq, self.next_seq);
        let mut out = Vec::new();
        store.read_log(0, usize::MAX, &mut out).expect("read");
        let stored: BTreeMap<_, _> = out.into_iter().collect();
        assert_eq!(stored, self.log);
        assert_eq!(rec.retained, self.retained);
        assert_eq!(rec.cursors, self.cursors);
        let sessions: BTreeMap<_, _> = rec
            .sessions
            .iter()
            .map(|(k, v)| (k.clone(), v.record.clone()))
            .collect();
        assert_eq!(sessions, self.sessions);
        for (client, s) in &rec.sessions {
            let expected: Vec<QueueEntry> = self
                .queue
                .iter()
                .filter(|((c, _), _)| c == client)
                .map(|((_, seq), d)| QueueEntry {
                    seq: *seq,
                    delivery: d.clone(),
                })
                .collect();
            assert_eq!(s.queue, expected);
            let flights: BTreeMap<u16, InflightOut> = self
                .inflight_out
                .iter()
                .filter(|((c, _), _)| c == client)
                .map(|((_, pid), f)| (*pid, f.clone()))
                .collect();
            assert_eq!(s.inflight_out, flights);
            let pids: Vec<u16> = self
                .inflight_in
                .keys()
                .filter(|(c, _)| c == client)
                .map(|(_, pid)| *pid)
                .collect();
            assert_eq!(s.inflight_in, pids);
        }
        // The `needed` reference counts match the queue and in-flight entries exactly.
        let mut refs: BTreeMap<Seq, u64> = BTreeMap::new();
        for (_, seq) in self.queue.keys() {
            *refs.entry(*seq).or_default() += 1;
        }
        for f in self.inflight_out.values() {
            *refs.entry(f.seq).or_default() += 1;
        }
        let db = store.shared.common.db().expect("db");
        let txn = db.begin_read().expect("read");
        let needed = txn.open_table(tables::NEEDED).expect("needed");
        let stored: BTreeMap<Seq, u64> = needed
            .iter()
            .expect("iter")
            .map(|e| {
                let (k, v) = e.expect("entry");
                (k.value(), v.value())
            })
            .collect();
        assert_eq!(stored, refs);
        let stats = store.stats();
        assert_eq!(stats.records, self.log.len() as u64);
        assert_eq!(
            stats.head,
            self.log.keys().next().copied().unwrap_or(self.next_seq)
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Property: after any sequence of log, queue, session, retained and cursor ops, with
    /// reopens at random points, the store holds exactly what a `BTreeMap` model holds.
    #[test]
    fn store_matches_model(ops in proptest::collection::vec(model_op(), 1..60)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = rt();
        let (mut store, _) = open(dir.path());
        let mut model = Model::default();
        let clients = ["c0", "c1", "c2"];
        let topics = ["r/0", "r/1", "r/2"];
        for op in ops {
            let write = match op {
                ModelOp::Append { qos, len } => {
                    let qos = QoS::from_u8(qos).expect("valid qos");
                    let m = msg("log", &vec![qos as u8; len], qos);
                    model.log.insert(model.next_seq, m.clone());
                    model.next_seq += 1;
                    WriteOp::Append(m)
                }
                ModelOp::Upsert { client } => {
                    let r = session(clients[client]);
                    model.sessions.insert(clients[client].into(), r.clone());
                    WriteOp::SessionUpsert(r)
                }
                ModelOp::Delete { client } => {
                    let c = clients[client];
                    model.sessions.remove(c);
                    model.queue.retain(|(qc, _), _| qc != c);
                    model.inflight_out.retain(|(qc, _), _| qc != c);
                    model.inflight_in.retain(|(qc, _), _| qc != c);
                    WriteOp::SessionDelete { client: c.into() }
                }
                ModelOp::Push { client, pick } => {
                    if model.next_seq == 0 {
                        continue;
                    }
                    let seq = u64::try_from(pick).expect("fits") % model.next_seq;
                    let d = delivery(QoS::AtLeastOnce);
                    model.queue.insert((clients[client].into(), seq), d.clone());
                    WriteOp::QueuePush { client: clients[client].into(), seq, delivery: d }
                }
                ModelOp::Remove { client, pick } => {
                    let c = clients[client];
                    let entries: Vec<Seq> = model
                        .queue
                        .keys()
                        .filter(|(qc, _)| qc == c)
                        .map(|(_, s)| *s)
                        .collect();
                    if entries.is_empty() {
                        continue;
                    }
                    let seq = entries[pick % entries.len()];
                    model.queue.remove(&(c.to_string(), seq));
                    WriteOp::QueueRemove { client: c.into(), seq }
                }
                ModelOp::Retain { topic, clear } => {
                    let t = topics[topic];
                    if clear {
                        model.retained.remove(t);
                        WriteOp::RetainedClear { topic: t.into() }
                    } else {
                        let m = msg(t, t.as_bytes(), QoS::AtLeastOnce);
                        model.retained.insert(t.into(), m.clone());
                        WriteOp::RetainedSet { topic: t.into(), message: m }
                    }
                }
                ModelOp::Cursor { name, pick } => {
                    let n = ["a", "b"][name];
                    let seq = u64::try_from(pick).expect("fits") % (model.next_seq + 1);
                    model.cursors.insert(n.into(), seq);
                    WriteOp::CursorSet { name: n.into(), seq }
                }
                ModelOp::FlightOut { client, pid, pick } => {
                    if model.next_seq == 0 {
                        continue;
                    }
                    let entry = InflightOut {
                        seq: u64::try_from(pick).expect("fits") % model.next_seq,
                        state: if pick % 2 == 0 {
                            OutboundState::PublishSent
                        } else {
                            OutboundState::PubrelSent
                        },
                        delivery: delivery(QoS::ExactlyOnce),
                    };
                    model.inflight_out.insert((clients[client].into(), pid), entry.clone());
                    WriteOp::InflightOutSet { client: clients[client].into(), packet_id: pid, entry }
                }
                ModelOp::FlightOutDone { client, pid } => {
                    model.inflight_out.remove(&(clients[client].to_string(), pid));
                    WriteOp::InflightOutRemove { client: clients[client].into(), packet_id: pid }
                }
                ModelOp::FlightIn { client, pid, add } => {
                    let key = (clients[client].to_string(), pid);
                    if add {
                        model.inflight_in.insert(key, ());
                        WriteOp::InflightInAdd { client: clients[client].into(), packet_id: pid }
                    } else {
                        model.inflight_in.remove(&key);
                        WriteOp::InflightInRemove { client: clients[client].into(), packet_id: pid }
                    }
                }
                ModelOp::Reopen => {
                    drop(store);
                    let (s, rec) = open(dir.path());
                    store = s;
                    model.check(&store, &rec);
                    continue;
                }
            };
            // Some ops are left pending (not awaited) so reopen also covers flush on drop.
            let s = store.try_submit(vec![write]).expect("submit");
            if s.ticket.0 % 3 == 0 {
                rt.block_on(store.wait_durable(s.ticket)).expect("durable");
            }
        }
        drop(store);
        let (store, rec) = open(dir.path());
        model.check(&store, &rec);
    }
}

/// A file backend whose writes and syncs fail while `fail` is set (a full disk).
#[derive(Debug)]
struct FullDisk {
    inner: redb::backends::FileBackend,
    fail: Arc<std::sync::atomic::AtomicBool>,
}

impl FullDisk {
    fn check(&self) -> std::io::Result<()> {
        if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
            Err(std::io::Error::from(std::io::ErrorKind::StorageFull))
        } else {
            Ok(())
        }
    }
}

type Lock<T> = Result<T, redb::BackendError>;
type Bound = std::ops::Bound<u64>;

impl redb::StorageBackend for FullDisk {
    fn len(&self) -> std::io::Result<u64> {
        self.inner.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.inner.read(offset, out)
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.check()?;
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        self.check()?;
        self.inner.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.check()?;
        self.inner.write(offset, data)
    }
    fn close(&self) -> std::io::Result<()> {
        self.inner.close()
    }
    fn try_lock_range(&self, start: Bound, end: Bound) -> Lock<bool> {
        self.inner.try_lock_range(start, end)
    }
    fn try_lock_shared_range(&self, start: Bound, end: Bound) -> Lock<bool> {
        self.inner.try_lock_shared_range(start, end)
    }
    fn lock_range(&self, start: Bound, end: Bound) -> Lock<()> {
        self.inner.lock_range(start, end)
    }
    fn lock_shared_range(&self, start: Bound, end: Bound) -> Lock<()> {
        self.inner.lock_shared_range(start, end)
    }
    fn unlock_range(&self, start: Bound, end: Bound) -> Lock<()> {
        self.inner.unlock_range(start, end)
    }
    fn query_lock_range(&self, start: Bound, end: Bound) -> Lock<bool> {
        self.inner.query_lock_range(start, end)
    }
}

#[test]
fn full_disk_fails_the_ticket_and_leaves_nothing_half_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = rt();
    let fail = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let path = dir.path().join(FILE_NAME);
    let flag = Arc::clone(&fail);
    let backend = move || {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .expect("file");
        FullDisk {
            inner: redb::backends::FileBackend::new(file).expect("backend"),
            fail: Arc::clone(&flag),
        }
    };
    // Every commit goes to redb's backend (under a journal, non-durable commits may stay in
    // redb's buffers; a full disk then fails the journal write instead).
    let cfg = StoreConfig {
        fsync: FsyncPolicy::EveryCommit,
        ..StoreConfig::default()
    };
    let (store, _) = Store::open_with_backend(dir.path(), cfg, backend).expect("open");
    let ok = commit(
        &rt,
        &store,
        vec![WriteOp::Append(msg("t", b"kept", QoS::AtLeastOnce))],
    );
    fail.store(true, std::sync::atomic::Ordering::SeqCst);
    let failed = rt.block_on(async {
        let s = store
            .submit(vec![
                WriteOp::Append(msg("t", &[9; 10_000], QoS::AtLeastOnce)),
                WriteOp::SessionUpsert(session("c")),
            ])
            .await
            .expect("submit");
        (s.seqs.clone(), store.wait_durable(s.ticket).await)
    });
    assert!(
        matches!(failed.1, Err(StoreError::CommitFailed { .. })),
        "{:?}",
        failed.1
    );
    assert!(store.stats().errors >= 1);
    // A group of submissions on the full disk: every one fails, none hangs.
    let tickets: Vec<Ticket> = (0..5u8)
        .map(|i| {
            store
                .try_submit(vec![WriteOp::Append(msg("t", &[i; 100], QoS::AtLeastOnce))])
                .expect("submit")
                .ticket
        })
        .collect();
    for t in tickets {
        let r = rt.block_on(store.wait_durable(t));
        assert!(matches!(r, Err(StoreError::CommitFailed { .. })), "{r:?}");
    }
    // Space comes back: the writer reopens the database and commits again, no restart.
    fail.store(false, std::sync::atomic::Ordering::SeqCst);
    let after = commit(
        &rt,
        &store,
        vec![WriteOp::Append(msg("t", b"after", QoS::AtLeastOnce))],
    );
    assert!(store.get(after[0]).expect("get").is_some());
    drop(store);
    let (store, rec) = open(dir.path());
    assert!(rec.sessions.is_empty(), "half-written session visible");
    assert_eq!(
        store.get(ok[0]).expect("get").map(|m| m.payload),
        Some(Bytes::from_static(b"kept"))
    );
    assert_eq!(store.get(failed.0[0]).expect("get"), None);
    assert_eq!(store.stats().records, 2);
    // The seq of the failed submission was not given out again.
    assert!(after[0] > failed.0[0]);
    assert_eq!(rec.next_seq, after[0] + 1);
}

const CRASH_DIR_ENV: &str = "TERN_STORE_CRASH_DIR";

/// Child role of the crash tests: appends batches of 16 messages forever and prints
/// `acked <seq> <n>` for each message once its ticket is durable (payload = `n`).
fn crash_child(dir: &Path, fsync: FsyncPolicy) -> ! {
    use std::io::Write;
    let rt = rt();
    let cfg = StoreConfig {
        fsync,
        ..StoreConfig::default()
    };
    let (store, rec) = Store::open(dir, cfg).expect("open store");
    let mut n = rec.next_seq;
    let stdout = std::io::stdout();
    loop {
        let ops = (0..16)
            .map(|i| WriteOp::Append(msg("crash", &(n + i).to_le_bytes(), QoS::AtLeastOnce)))
            .collect();
        let s = rt.block_on(store.submit(ops)).expect("submit");
        rt.block_on(store.wait_durable(s.ticket)).expect("durable");
        let mut out = stdout.lock();
        for (seq, i) in s.seqs.iter().zip(0u64..) {
            writeln!(out, "acked {seq} {}", n + i).expect("stdout");
        }
        out.flush().expect("stdout");
        n += 16;
    }
}

/// Property: after SIGKILL at a random point mid-stream, every append whose ticket was
/// reported durable is in the log with its payload, and the meta counters match the log.
/// The test runs itself as the child process (same test, with `TERN_STORE_CRASH_DIR` set).
/// Default policy: acknowledged after the journal write.
#[test]
fn kill_9_keeps_every_acknowledged_append() {
    kill_9_rounds(
        "store::tests::kill_9_keeps_every_acknowledged_append",
        StoreConfig::default().fsync,
    );
}

/// The same under `fsync = "every-commit"`.
#[test]
fn kill_9_keeps_every_acknowledged_append_with_fsync_per_commit() {
    kill_9_rounds(
        "store::tests::kill_9_keeps_every_acknowledged_append_with_fsync_per_commit",
        FsyncPolicy::EveryCommit,
    );
}

fn kill_9_rounds(test: &str, fsync: FsyncPolicy) {
    use std::io::BufRead;
    if let Some(dir) = std::env::var_os(CRASH_DIR_ENV) {
        crash_child(Path::new(&dir), fsync);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("test binary");
    let mut acked: BTreeMap<Seq, u64> = BTreeMap::new();
    let seed = now_millis();
    for round in 0..3u64 {
        let kill_after = 50 + (seed.wrapping_mul(31).wrapping_add(round * 977)) % 400;
        let mut child = std::process::Command::new(&exe)
            .args([test, "--exact", "--nocapture", "--test-threads=1"])
            .env(CRASH_DIR_ENV, dir.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = std::io::BufReader::new(stdout).lines();
        let mut seen = 0;
        while seen < kill_after {
            let Some(Ok(line)) = lines.next() else {
                break;
            };
            if let Some(rest) = line.strip_prefix("acked ") {
                let mut parts = rest.split(' ');
                let seq: Seq = parts.next().and_then(|s| s.parse().ok()).expect("seq");
                let n: u64 = parts.next().and_then(|s| s.parse().ok()).expect("n");
                acked.insert(seq, n);
                seen += 1;
            }
        }
        assert_eq!(seen, kill_after, "child stopped early in round {round}");
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");

        let (store, rec) = open(dir.path());
        for (&seq, &n) in &acked {
            let m = store
                .get(seq)
                .expect("get")
                .unwrap_or_else(|| panic!("acknowledged seq {seq} lost in round {round}"));
            assert_eq!(m.payload.as_ref(), n.to_le_bytes());
        }
        let mut all = Vec::new();
        store.read_log(0, usize::MAX, &mut all).expect("read");
        let stats = store.stats();
        assert_eq!(stats.records, all.len() as u64);
        assert!(rec.next_seq > *acked.keys().last().expect("acked"));
    }
}

/// One step of the retention model test.
#[derive(Debug, Clone)]
enum RetentionOp {
    Append { len: usize },
    Push { pick: usize },
    Remove { pick: usize },
    Cursor { pick: usize },
}

fn retention_op() -> impl Strategy<Value = RetentionOp> {
    prop_oneof![
        6 => (0usize..300).prop_map(|len| RetentionOp::Append { len }),
        2 => any::<usize>().prop_map(|pick| RetentionOp::Push { pick }),
        2 => any::<usize>().prop_map(|pick| RetentionOp::Remove { pick }),
        1 => any::<usize>().prop_map(|pick| RetentionOp::Cursor { pick }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// Property: under `refuse`, retention never deletes a record while it is at or after the
    /// lowest needed position (queued for a session, or at/after the consumer cursor), never
    /// counts a needed record as dropped, and keeps the log within the budget plus one
    /// submission.
    #[test]
    fn retention_never_trims_needed_records(ops in proptest::collection::vec(retention_op(), 1..120)) {
        const BUDGET: u64 = 4_000;
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = rt();
        let (store, _) = Store::open(dir.path(), small_budget(BUDGET, WhenFull::Refuse))
            .expect("open");
        commit(&rt, &store, vec![WriteOp::SessionUpsert(session("c"))]);
        let mut appended: Vec<Seq> = Vec::new();
        let mut queued: BTreeMap<Seq, ()> = BTreeMap::new();
        let mut cursor: Option<Seq> = None;
        // Records that were below the lowest needed position at some point: fair game.
        let mut exposed: BTreeMap<Seq, ()> = BTreeMap::new();
        for op in ops {
            let write = match op {
                RetentionOp::Append { len } => {
                    WriteOp::Append(msg("t", &vec![1; len], QoS::AtLeastOnce))
                }
                RetentionOp::Push { pick } => {
                    if appended.is_empty() {
                        continue;
                    }
                    let seq = appended[pick % appended.len()];
                    queued.insert(seq, ());
                    WriteOp::QueuePush { client: "c".into(), seq, delivery: delivery(QoS::AtLeastOnce) }
                }
                RetentionOp::Remove { pick } => {
                    let keys: Vec<Seq> = queued.keys().copied().collect();
                    if keys.is_empty() {
                        continue;
                    }
                    let seq = keys[pick % keys.len()];
                    queued.remove(&seq);
                    WriteOp::QueueRemove { client: "c".into(), seq }
                }
                RetentionOp::Cursor { pick } => {
                    let next = appended.last().map_or(0, |s| s + 1);
                    let seq = u64::try_from(pick).expect("fits") % (next + 1);
                    cursor = Some(seq);
                    WriteOp::CursorSet { name: "b".into(), seq }
                }
            };
            match rt.block_on(store.submit(vec![write])) {
                Ok(s) => {
                    rt.block_on(store.wait_durable(s.ticket)).expect("durable");
                    appended.extend(s.seqs);
                }
                Err(StoreError::QuotaExceeded { .. }) => {}
                Err(e) => panic!("unexpected {e}"),
            }
            let low = queued
                .keys()
                .next()
                .copied()
                .unwrap_or(u64::MAX)
                .min(cursor.unwrap_or(u64::MAX));
            for &seq in &appended {
                if seq < low {
                    exposed.insert(seq, ());
                } else if !exposed.contains_key(&seq) {
                    prop_assert!(store.get(seq).expect("get").is_some(), "needed seq {} trimmed", seq);
                }
            }
            let stats = store.stats();
            prop_assert_eq!(stats.dropped_unconsumed, 0);
            prop_assert!(stats.bytes < BUDGET + 400, "bytes {}", stats.bytes);
        }
    }
}

#[test]
fn format_2_store_is_upgraded_in_place() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(open(dir.path()));
    let will = will(7, Some(1234));
    let retained = msg("status/a", b"on", QoS::AtLeastOnce);
    {
        // Format 2 wrote the same records without the trailing `bridge` of the message.
        let message = postcard::to_stdvec(&will.message).expect("encode");
        let mut will_v2 = postcard::to_stdvec(&will.token).expect("encode");
        will_v2.extend_from_slice(&message[..message.len() - 1]);
        will_v2.extend(
            postcard::to_stdvec(&(will.delay_secs, will.expiry_secs, will.deadline_ms))
                .expect("encode"),
        );
        let retained_v3 = postcard::to_stdvec(&retained).expect("encode");
        let retained_v2 = &retained_v3[..retained_v3.len() - 1];

        let db = redb::Database::create(dir.path().join(FILE_NAME)).expect("create");
        let txn = db.begin_write().expect("txn");
        txn.open_table(tables::META)
            .expect("meta")
            .insert(tables::KEY_FORMAT_VERSION, 2)
            .expect("insert");
        txn.open_table(tables::WILLS)
            .expect("wills")
            .insert("dev-1", will_v2.as_slice())
            .expect("insert");
        txn.open_table(tables::RETAINED)
            .expect("retained")
            .insert("status/a", retained_v2)
            .expect("insert");
        txn.commit().expect("commit");
    }
    let (store, recovered) = open(dir.path());
    assert_eq!(recovered.wills.get("dev-1"), Some(&will));
    assert_eq!(recovered.retained.get("status/a"), Some(&retained));
    drop(store);
    // The upgrade is recorded: the next open reads format 3 directly.
    let (_store, recovered) = open(dir.path());
    assert_eq!(recovered.wills.get("dev-1"), Some(&will));
}

#[test]
fn bridge_destination_round_trips() {
    let mut m = msg("site-7/dev-1/temperature", b"21.5", QoS::AtLeastOnce);
    m.bridge = Some("cloud".into());
    let bytes = postcard::to_stdvec(&m).expect("encode");
    assert_eq!(StoredMessage::decode(&bytes).expect("decode"), m);
}

/// Copies every file of `from` into `to` (a crash image of a running store: what the
/// operating system holds after `kill -9`).
fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
    }
}

/// Journal mode without checkpoints while a test runs: every commit stays in the journal.
pub(super) fn journal_only() -> StoreConfig {
    StoreConfig {
        fsync: FsyncPolicy::Interval(Duration::from_millis(10)),
        checkpoint_interval: Duration::from_secs(3600),
        checkpoint_bytes: u64::MAX,
        maintenance_interval: Duration::from_secs(3600),
        ..StoreConfig::default()
    }
}

/// Under the journal, acknowledged writes that redb holds only in non-durable commits are
/// recovered from the journal: a crash image of a running store has all of them (with exact
/// counters), and the same image without its journal files does not — the journal is what
/// keeps them.
#[test]
fn journal_recovers_acknowledged_writes_redb_had_not_made_durable() {
    let live = tempfile::tempdir().expect("tempdir");
    let rt = rt();
    let cfg = journal_only();
    let (store, _) = Store::open(live.path(), cfg.clone()).expect("open");
    let mut seqs = Vec::new();
    for chunk in 0..10u8 {
        seqs.extend(commit(
            &rt,
            &store,
            (0..20u8)
                .map(|i| WriteOp::Append(msg("j", &[chunk, i], QoS::AtLeastOnce)))
                .collect(),
        ));
    }
    commit(&rt, &store, vec![WriteOp::SessionUpsert(session("c"))]);
    commit(
        &rt,
        &store,
        vec![
            WriteOp::QueuePush {
                client: "c".into(),
                seq: seqs[3],
                delivery: delivery(QoS::AtLeastOnce),
            },
            WriteOp::CursorSet {
                name: "bridge:up".into(),
                seq: seqs[5],
            },
        ],
    );
    let mut expected = Vec::new();
    store.read_log(0, usize::MAX, &mut expected).expect("read");
    let expected_stats = store.stats();

    // The image with its journal: everything, counters exact.
    let image = tempfile::tempdir().expect("tempdir");
    copy_dir(live.path(), image.path());
    // The image without it.
    let bare = tempfile::tempdir().expect("tempdir");
    copy_dir(live.path(), bare.path());
    for (_, path) in journal::list(bare.path()).expect("list") {
        std::fs::remove_file(path).expect("remove journal");
    }
    drop(store);

    let (bare_store, _) = Store::open(bare.path(), cfg.clone()).expect("open bare image");
    let mut bare_log = Vec::new();
    bare_store
        .read_log(0, usize::MAX, &mut bare_log)
        .expect("read");
    assert!(
        bare_log.len() < expected.len(),
        "without the journal the image should miss non-durable commits ({} of {})",
        bare_log.len(),
        expected.len()
    );
    drop(bare_store);

    let (recovered, rec) = Store::open(image.path(), cfg.clone()).expect("open image");
    let mut log = Vec::new();
    recovered.read_log(0, usize::MAX, &mut log).expect("read");
    assert_eq!(log, expected);
    let stats = recovered.stats();
    assert_eq!(stats.records, expected_stats.records);
    assert_eq!(stats.bytes, expected_stats.bytes);
    assert_eq!(rec.next_seq, expected_stats.next_seq);
    assert_eq!(rec.cursors.get("bridge:up"), Some(&seqs[5]));
    let session = rec.sessions.get("c").expect("session recovered");
    assert_eq!(
        session.queue.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [seqs[3]]
    );
    // Replayed files are gone once their content is durable; a second open replays nothing.
    drop(recovered);
    let (again, _) = Store::open(image.path(), cfg).expect("reopen");
    let mut log = Vec::new();
    again.read_log(0, usize::MAX, &mut log).expect("read");
    assert_eq!(log, expected);
    assert_eq!(again.stats().records, expected_stats.records);
    assert_eq!(again.stats().bytes, expected_stats.bytes);
}

/// A journal whose last frame was torn (a power loss mid-write) is applied up to that frame;
/// the damage is counted, and the store opens.
#[test]
fn torn_journal_tail_applies_the_intact_frames() {
    let live = tempfile::tempdir().expect("tempdir");
    let rt = rt();
    let cfg = journal_only();
    let (store, _) = Store::open(live.path(), cfg.clone()).expect("open");
    let first = commit(
        &rt,
        &store,
        vec![WriteOp::Append(msg("t", b"first", QoS::AtLeastOnce))],
    );
    let second = commit(
        &rt,
        &store,
        vec![WriteOp::Append(msg("t", b"second", QoS::AtLeastOnce))],
    );
    let image = tempfile::tempdir().expect("tempdir");
    copy_dir(live.path(), image.path());
    drop(store);
    let (_, path) = journal::list(image.path())
        .expect("list")
        .pop()
        .expect("a journal file");
    let len = std::fs::metadata(&path).expect("stat").len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open journal");
    file.set_len(len - 3).expect("tear the last frame");
    drop(file);

    let (store, _) = Store::open(image.path(), cfg).expect("open torn image");
    assert_eq!(
        store.get(first[0]).expect("get").map(|m| m.payload),
        Some(Bytes::from_static(b"first"))
    );
    assert!(store.get(second[0]).expect("get").is_none());
    assert_eq!(store.stats().errors, 1);
    assert_eq!(store.stats().records, 1);
}

/// Journal frames written by the writer parse back to the same ops, and damage anywhere in
/// a frame stops parsing there instead of applying garbage.
#[test]
fn journal_frames_round_trip_and_damage_is_detected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut file =
        journal::JournalFile::create(dir.path(), journal::Generation(7)).expect("create");
    let group_a = vec![
        writer::Op::encode(WriteOp::Append(msg("a", b"1", QoS::AtLeastOnce))).expect("op"),
        writer::Op::encode(WriteOp::CursorSet {
            name: "x".into(),
            seq: 4,
        })
        .expect("op"),
    ];
    let group_b =
        vec![writer::Op::encode(WriteOp::SessionDelete { client: "c".into() }).expect("op")];
    file.append(group_a.iter()).expect("append");
    let after_a = file.len();
    file.append(group_b.iter()).expect("append");
    let bytes = std::fs::read(journal::path_of(dir.path(), journal::Generation(7))).expect("read");
    let parsed = journal::parse(&bytes, journal::Generation(7));
    assert!(parsed.damage.is_none(), "{:?}", parsed.damage);
    assert_eq!(
        format!("{:?}", parsed.groups),
        format!("{:?}", vec![group_a, group_b])
    );
    // A flipped byte in the second frame: only the first is applied.
    let mut bad = bytes.clone();
    let i = usize::try_from(after_a).expect("len") + 8;
    bad[i] ^= 0xff;
    let parsed = journal::parse(&bad, journal::Generation(7));
    assert_eq!(parsed.groups.len(), 1);
    assert!(
        parsed
            .damage
            .as_deref()
            .is_some_and(|d| d.contains("checksum"))
    );
    // A file of another generation is not applied at all.
    let parsed = journal::parse(&bytes, journal::Generation(8));
    assert!(parsed.groups.is_empty() && parsed.damage.is_some());
}
