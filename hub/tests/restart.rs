//! Restart tests: what the durable store brings back after a graceful stop and after
//! `kill -9` — retained messages, persistent sessions with their subscriptions, queues and
//! in-flight messages, inbound QoS 2 state, wills (published after the restart unless the
//! client resumes within its will delay) — plus the store's refusal policy and its start-up
//! errors (corrupted file, data directory in use).

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// How a test stops the hub before restarting it.
#[derive(Debug, Clone, Copy)]
enum Stop {
    Graceful,
    Kill9,
}

fn stop(hub: &mut Hub, how: Stop) {
    match how {
        Stop::Graceful => hub.stop(),
        Stop::Kill9 => hub.kill_9(),
    }
}

/// A persistent v5 session: clean start 0, session expiry one hour.
fn persistent(id: &str) -> Connect {
    Connect::v5(id).clean(false).session_expiry(3600)
}

async fn retained_survive(how: Stop) {
    let mut hub = Hub::start();
    let (mut publisher, _) = RawClient::connect_ok(hub.addr(), Connect::v5("pub")).await;
    publisher
        .publish(Pub::new("r/kept", b"kept").qos(1, 0).retain(true))
        .await;
    publisher
        .publish(Pub::new("r/cleared", b"gone").qos(1, 0).retain(true))
        .await;
    publisher
        .publish(Pub::new("r/cleared", b"").qos(1, 0).retain(true))
        .await;
    publisher.drop_connection().await;
    stop(&mut hub, how);
    hub.restart();

    let (mut sub, _) = RawClient::connect_ok(hub.addr(), Connect::v5("sub")).await;
    sub.subscribe("r/#", 1).await;
    let p = sub.recv_publish().await;
    assert_eq!(
        (p.topic.as_str(), p.payload.as_slice()),
        ("r/kept", &b"kept"[..])
    );
    assert!(p.retain, "retained message delivered with RETAIN");
    sub.expect_no_publish(QUIET).await;
    hub.finish();
}

#[tokio::test]
async fn retained_messages_survive_graceful_restart() {
    retained_survive(Stop::Graceful).await;
}

#[tokio::test]
async fn retained_messages_survive_kill_9() {
    retained_survive(Stop::Kill9).await;
}

async fn session_survives(how: Stop) {
    let mut hub = Hub::start();
    let (mut sub, present) = RawClient::connect_ok(hub.addr(), persistent("sub")).await;
    assert!(!present);
    sub.subscribe("q/#", 1).await;
    sub.disconnect().await;

    let (mut publisher, _) = RawClient::connect_ok(hub.addr(), Connect::v5("pub")).await;
    for n in 0..5 {
        let code = publisher
            .publish(Pub::new("q/a", format!("m{n}").as_bytes()).qos(1, 0))
            .await;
        assert!(code < 0x80, "publish {n} refused: {code:#04x}");
    }
    publisher.drop_connection().await;
    stop(&mut hub, how);
    hub.restart();

    let (mut sub, present) = RawClient::connect_ok(hub.addr(), persistent("sub")).await;
    assert!(present, "session restored after restart");
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(String::from_utf8(sub.recv_publish_acked().await.payload).expect("utf8"));
    }
    assert_eq!(
        got,
        ["m0", "m1", "m2", "m3", "m4"],
        "queue restored in order"
    );
    sub.expect_no_publish(QUIET).await;

    // The subscription itself was restored: a new message reaches the session.
    let (mut publisher, _) = RawClient::connect_ok(hub.addr(), Connect::v5("pub")).await;
    publisher.publish(Pub::new("q/b", b"after").qos(1, 0)).await;
    let p = sub.recv_publish_acked().await;
    assert_eq!(p.payload, b"after");
    hub.finish();
}

#[tokio::test]
async fn persistent_session_survives_graceful_restart() {
    session_survives(Stop::Graceful).await;
}

#[tokio::test]
async fn persistent_session_survives_kill_9() {
    session_survives(Stop::Kill9).await;
}

#[tokio::test]
async fn unacknowledged_delivery_is_resent_with_dup_after_kill_9() {
    let mut hub = Hub::start();
    let (mut sub, _) = RawClient::connect_ok(hub.addr(), persistent("sub")).await;
    sub.subscribe("f/#", 1).await;
    let (mut publisher, _) = RawClient::connect_ok(hub.addr(), Connect::v5("pub")).await;
    publisher
        .publish(Pub::new("f/1", b"in flight").qos(1, 0))
        .await;
    let first = sub.recv_publish().await;
    assert!(!first.dup);
    // Give the in-flight record time to reach the store (it is written without waiting).
    tokio::time::sleep(Duration::from_millis(300)).await;
    hub.kill_9();
    hub.restart();

    let (mut sub, present) = RawClient::connect_ok(hub.addr(), persistent("sub")).await;
    assert!(present);
    let again = sub.recv_publish().await;
    assert!(again.dup, "resent in-flight message carries DUP");
    assert_eq!(
        (again.pid, again.payload.as_slice()),
        (first.pid, &b"in flight"[..])
    );
    sub.ack(&again).await;
    sub.expect_no_publish(QUIET).await;
    hub.finish();
}

#[tokio::test]
async fn inbound_qos2_state_survives_kill_9() {
    let mut hub = Hub::start();
    let (mut sub, _) = RawClient::connect_ok(hub.addr(), persistent("sub")).await;
    sub.subscribe("x/#", 2).await;
    sub.disconnect().await;

    let (mut publisher, _) = RawClient::connect_ok(hub.addr(), persistent("pub2")).await;
    publisher
        .send(&Pub::new("x/once", b"exactly once").qos(2, 7).encode(V5))
        .await;
    assert_eq!(publisher.expect_ack(PUBREC, 7).await, 0);
    hub.kill_9();
    hub.restart();

    let (mut publisher, present) = RawClient::connect_ok(hub.addr(), persistent("pub2")).await;
    assert!(present);
    // A resend before PUBREL is acknowledged but not routed a second time.
    let mut resend = Pub::new("x/once", b"exactly once").qos(2, 7);
    resend.dup = true;
    publisher.send(&resend.encode(V5)).await;
    assert_eq!(publisher.expect_ack(PUBREC, 7).await, 0);
    publisher.send(&ack_packet(0x62, 7)).await;
    assert_eq!(
        publisher.expect_ack(PUBCOMP, 7).await,
        0,
        "PUBREL after restart finds the packet id"
    );

    let (mut sub, present) = RawClient::connect_ok(hub.addr(), persistent("sub")).await;
    assert!(present);
    let p = sub.recv_publish_acked().await;
    assert_eq!(p.payload, b"exactly once");
    sub.expect_no_publish(QUIET).await;
    hub.finish();
}

#[tokio::test]
async fn session_expiry_continues_across_restart() {
    let mut hub = Hub::start();
    let (mut sub, _) = RawClient::connect_ok(
        hub.addr(),
        Connect::v5("short").clean(false).session_expiry(1),
    )
    .await;
    sub.subscribe("e/#", 1).await;
    sub.disconnect().await;
    hub.stop();
    // The one-second expiry runs out while the hub is down.
    std::thread::sleep(Duration::from_millis(1500));
    hub.restart();
    let (_sub, present) = RawClient::connect_ok(
        hub.addr(),
        Connect::v5("short").clean(false).session_expiry(1),
    )
    .await;
    assert!(!present, "session expired while the hub was down");
    hub.finish();
}

#[tokio::test]
async fn full_store_refuses_with_quota_exceeded() {
    let hub = Hub::with_config("[store]\nmax_bytes = \"2KiB\"\nwhen_full = \"refuse\"\n");
    // A persistent subscriber that never comes back keeps every message needed.
    let (mut sub, _) = RawClient::connect_ok(hub.addr(), persistent("hoarder")).await;
    sub.subscribe("big/#", 1).await;
    sub.disconnect().await;

    let (mut publisher, _) = RawClient::connect_ok(hub.addr(), Connect::v5("pub")).await;
    let payload = vec![b'x'; 300];
    let mut refused = None;
    for n in 0..100u16 {
        let pid = n + 1;
        publisher
            .send(&Pub::new("big/t", &payload).qos(1, pid).encode(V5))
            .await;
        let ack = publisher
            .recv_matching("PUBACK", |p| match p {
                Incoming::Ack {
                    kind: PUBACK,
                    pid: got,
                    reason,
                    props,
                } if *got == pid => Some((*reason, props.clone())),
                _ => None,
            })
            .await;
        if ack.0 == 0x97 {
            refused = Some((n, ack.1));
            break;
        }
        assert_eq!(ack.0, 0, "unexpected PUBACK reason");
    }
    let (n, props) = refused.expect("the store refused a publish once full");
    assert!(n > 0, "the first messages fit");
    let text = props.str(prop::REASON_STRING).expect("reason string");
    assert!(text.contains("quota"), "{text}");

    // A 3.1.1 client has no negative PUBACK: it is disconnected without one.
    let (mut old, _) = RawClient::connect_ok(hub.addr(), Connect::v4("old")).await;
    old.send(&Pub::new("big/t", &payload).qos(1, 9).encode(V311))
        .await;
    let seen = old.expect_closed(RECV_TIMEOUT).await;
    assert!(
        !seen.iter().any(|p| matches!(p, Incoming::Ack { .. })),
        "no acknowledgement for a refused 3.1.1 publish: {seen:?}"
    );
    assert!(hub.logs().contains("store full"), "refusal is logged");
    hub.finish();
}

#[tokio::test]
async fn corrupted_store_file_stops_start_up() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("mkdir");
    let garbage: Vec<u8> = (0..8192u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(data.join("tern.redb"), garbage).expect("write garbage");
    let out = tern(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data.to_str().expect("utf8 path"),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "started on a corrupted store: {stderr}"
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("listening on"),
        "announced a listener"
    );
    assert!(stderr.contains("tern.redb"), "names the file: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test]
async fn second_hub_on_the_same_data_dir_is_refused() {
    let hub = Hub::start();
    let child = Command::new(tern_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(hub.data_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn second tern");
    let out = wait_output(child, EXIT_TIMEOUT, "second tern serve");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "second hub started: {stderr}");
    assert!(
        stderr.contains("in use"),
        "says the store is in use: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    hub.finish();
}

#[tokio::test]
async fn expired_stored_messages_are_not_delivered_after_restart() {
    let mut hub = Hub::start();
    let (mut sub, _) = RawClient::connect_ok(hub.addr(), persistent("sub")).await;
    sub.subscribe("exp/#", 1).await;
    sub.disconnect().await;
    let (mut publisher, _) = RawClient::connect_ok(hub.addr(), Connect::v5("pub")).await;
    publisher
        .publish(
            Pub::new("exp/short", b"short")
                .qos(1, 0)
                .props(Props::new().u32(prop::MESSAGE_EXPIRY, 1)),
        )
        .await;
    publisher
        .publish(
            Pub::new("exp/long", b"long")
                .qos(1, 0)
                .props(Props::new().u32(prop::MESSAGE_EXPIRY, 600)),
        )
        .await;
    publisher.drop_connection().await;
    hub.stop();
    std::thread::sleep(Duration::from_millis(1500));
    hub.restart();

    let (mut sub, present) = RawClient::connect_ok(hub.addr(), persistent("sub")).await;
    assert!(present);
    let p = sub.recv_publish_acked().await;
    assert_eq!(p.payload, b"long", "the expired message is skipped");
    let left = p
        .props
        .u32(prop::MESSAGE_EXPIRY)
        .expect("remaining expiry forwarded");
    assert!((590..600).contains(&left), "remaining interval {left}");
    sub.expect_no_publish(QUIET).await;
    hub.finish();
}

#[tokio::test]
async fn store_statistics_are_published_under_sys() {
    let hub = Hub::with_session("sys_interval = \"200ms\"");
    let (mut publisher, _) = RawClient::connect_ok(hub.addr(), Connect::v5("pub")).await;
    for _ in 0..3 {
        publisher.publish(Pub::new("s/t", b"x").qos(1, 0)).await;
    }
    let appends =
        wait_sys_counter(&hub, "$SYS/broker/store/appends", RECV_TIMEOUT, |v| v >= 3).await;
    assert!(
        appends.is_some_and(|v| v >= 3),
        "store appends: {appends:?}"
    );
    let commits =
        wait_sys_counter(&hub, "$SYS/broker/store/commits", RECV_TIMEOUT, |v| v >= 1).await;
    assert!(
        commits.is_some_and(|v| v >= 1),
        "store commits: {commits:?}"
    );
    hub.finish();
}

/// A persistent subscriber to `filter` that then goes offline, so whatever the hub
/// publishes meanwhile (a will at start-up included) waits in its queue.
async fn offline_watcher(hub: &Hub, id: &str, filter: &str) {
    let (mut w, _) = RawClient::connect_ok(hub.addr(), persistent(id)).await;
    w.subscribe(filter, 1).await;
    w.disconnect().await;
}

/// A will with every v5 property a will can carry.
fn full_will(topic: &str, payload: &[u8]) -> Will {
    let mut will = Will::new(topic, payload);
    will.qos = 1;
    will.props = Props::new()
        .byte(prop::PAYLOAD_FORMAT, 1)
        .u32(prop::MESSAGE_EXPIRY, 600)
        .str(prop::CONTENT_TYPE, "text/plain")
        .str(prop::RESPONSE_TOPIC, "lw/reply")
        .bin(prop::CORRELATION_DATA, b"\x00corr")
        .user("site", "north")
        .user("site", "south");
    will
}

/// A hub crash closes every connection abnormally: after `kill -9` and a restart, the wills
/// of the clients connected at the crash (a v5 clean-start client and a 3.1.1 clean-session
/// client) are published once, with every property, to a persistent subscriber; a graceful
/// restart afterwards does not publish them again.
#[tokio::test]
async fn will_of_connected_client_is_published_after_kill_9() {
    let mut hub = Hub::start();
    offline_watcher(&hub, "lw-watch", "lw/#").await;
    let (_v5, _) = RawClient::connect_ok(
        hub.addr(),
        Connect::v5("lw-v5").will(full_will("lw/v5", b"v5 gone")),
    )
    .await;
    let mut will = Will::new("lw/v4", b"v4 gone");
    will.qos = 1;
    let (_v4, _) = RawClient::connect_ok(hub.addr(), Connect::v4("lw-v4").will(will)).await;
    // CONNACK comes only once the will is durable: no grace period before the kill.
    hub.kill_9();
    hub.restart();

    let (mut w, present) = RawClient::connect_ok(hub.addr(), persistent("lw-watch")).await;
    assert!(present);
    let mut got = Vec::new();
    for _ in 0..2 {
        got.push(w.recv_publish_acked().await);
    }
    got.sort_by(|a, b| a.topic.cmp(&b.topic));
    let (v4, v5) = (&got[0], &got[1]);
    assert_eq!(
        (v4.topic.as_str(), v4.payload.as_slice(), v4.qos),
        ("lw/v4", &b"v4 gone"[..], 1)
    );
    assert_eq!(
        (v5.topic.as_str(), v5.payload.as_slice(), v5.qos, v5.retain),
        ("lw/v5", &b"v5 gone"[..], 1, false)
    );
    assert_eq!(
        v5.props.get(prop::PAYLOAD_FORMAT),
        Some(&PropValue::Byte(1))
    );
    assert_eq!(v5.props.str(prop::CONTENT_TYPE), Some("text/plain"));
    assert_eq!(v5.props.str(prop::RESPONSE_TOPIC), Some("lw/reply"));
    assert_eq!(v5.props.bin(prop::CORRELATION_DATA), Some(&b"\x00corr"[..]));
    assert_eq!(
        v5.props.user(),
        [
            ("site".to_string(), "north".to_string()),
            ("site".to_string(), "south".to_string())
        ]
    );
    let left = v5.props.u32(prop::MESSAGE_EXPIRY).expect("will expiry");
    assert!(
        (590..=600).contains(&left),
        "expiry counts from publication: {left}"
    );
    w.expect_no_publish(QUIET).await;
    w.disconnect().await;

    hub.stop();
    hub.restart();
    let (mut w, _) = RawClient::connect_ok(hub.addr(), persistent("lw-watch")).await;
    w.expect_no_publish(QUIET).await;
    hub.finish();
}

/// A client that sent DISCONNECT (reason 0) before the crash has no will after the restart.
#[tokio::test]
async fn will_discarded_by_normal_disconnect_stays_discarded_after_kill_9() {
    let mut hub = Hub::start();
    offline_watcher(&hub, "nd-watch", "nd/#").await;
    for connect in [Connect::v5("nd-v5"), Connect::v4("nd-v4")] {
        let (c, _) =
            RawClient::connect_ok(hub.addr(), connect.will(Will::new("nd/t", b"never"))).await;
        c.disconnect().await;
    }
    hub.kill_9();
    hub.restart();
    let (mut w, present) = RawClient::connect_ok(hub.addr(), persistent("nd-watch")).await;
    assert!(present);
    w.expect_no_publish(Duration::from_secs(1)).await;
    hub.finish();
}

/// Connects a v5 client with a persistent session and a 2 s will delay; keep it until the
/// crash.
async fn delayed_will_client(hub: &Hub, id: &str, topic: &str) -> RawClient {
    let mut will = Will::new(topic, b"late");
    will.qos = 1;
    will.props = Props::new().u32(prop::WILL_DELAY, 2);
    let (c, _) = RawClient::connect_ok(
        hub.addr(),
        Connect::v5(id).clean(false).session_expiry(60).will(will),
    )
    .await;
    c
}

/// The will delay runs from the restart; resuming the session within it cancels the will,
/// for good (also across a further restart).
#[tokio::test]
async fn delayed_will_cancelled_by_resume_after_kill_9() {
    let mut hub = Hub::start();
    offline_watcher(&hub, "dc-watch", "dc/#").await;
    let _connected = delayed_will_client(&hub, "dc", "dc/t").await;
    hub.kill_9();
    hub.restart();
    let (back, present) = RawClient::connect_ok(
        hub.addr(),
        Connect::v5("dc").clean(false).session_expiry(60),
    )
    .await;
    assert!(present, "session resumed");
    let (mut w, _) = RawClient::connect_ok(hub.addr(), persistent("dc-watch")).await;
    w.expect_no_publish(Duration::from_secs(3)).await;
    back.disconnect().await;
    w.disconnect().await;

    hub.kill_9();
    hub.restart();
    let (mut w, _) = RawClient::connect_ok(hub.addr(), persistent("dc-watch")).await;
    w.expect_no_publish(Duration::from_secs(3)).await;
    hub.finish();
}

/// Without a resume, the will goes out once its delay has passed after the restart.
#[tokio::test]
async fn delayed_will_published_after_delay_following_kill_9() {
    let mut hub = Hub::start();
    offline_watcher(&hub, "dp-watch", "dp/#").await;
    let _connected = delayed_will_client(&hub, "dp", "dp/t").await;
    hub.kill_9();
    hub.restart();
    let started = std::time::Instant::now();
    let (mut w, present) = RawClient::connect_ok(hub.addr(), persistent("dp-watch")).await;
    assert!(present);
    w.expect_no_publish(Duration::from_secs(1)).await;
    let p = w.recv_publish_acked().await;
    assert_eq!(
        (p.topic.as_str(), p.payload.as_slice()),
        ("dp/t", &b"late"[..])
    );
    assert!(
        started.elapsed() >= Duration::from_millis(1000),
        "will published before its delay"
    );
    w.expect_no_publish(QUIET).await;
    hub.finish();
}

/// A will delay that started before the crash is measured in wall-clock time: when it ends
/// while the hub is down, the will goes out at start-up.
#[tokio::test]
async fn will_delay_that_ended_while_down_is_published_at_start_up() {
    let mut hub = Hub::start();
    offline_watcher(&hub, "wd-watch", "wd/#").await;
    let mut will = Will::new("wd/t", b"overdue");
    will.qos = 1;
    will.props = Props::new().u32(prop::WILL_DELAY, 2);
    let (c, _) = RawClient::connect_ok(
        hub.addr(),
        Connect::v5("wd")
            .clean(false)
            .session_expiry(600)
            .will(will),
    )
    .await;
    c.drop_connection().await;
    // Let the hub record the deadline (written without waiting), then crash.
    tokio::time::sleep(Duration::from_millis(300)).await;
    hub.kill_9();
    std::thread::sleep(Duration::from_secs(2));
    hub.restart();
    let (mut w, present) = RawClient::connect_ok(hub.addr(), persistent("wd-watch")).await;
    assert!(present);
    let p = w
        .try_recv_publish(Duration::from_millis(700))
        .await
        .expect("overdue will published at start-up");
    assert_eq!(p.payload, b"overdue");
    hub.finish();
}

/// A graceful stop closes the connections without publishing their wills, but keeps them:
/// the next start treats those closes as abnormal.
#[tokio::test]
async fn will_of_connected_client_is_published_after_graceful_restart() {
    let mut hub = Hub::start();
    offline_watcher(&hub, "gs-watch", "gs/#").await;
    let mut will = Will::new("gs/t", b"stopped");
    will.qos = 1;
    let (_c, _) = RawClient::connect_ok(hub.addr(), Connect::v5("gs").will(will)).await;
    hub.stop();
    hub.restart();
    let (mut w, present) = RawClient::connect_ok(hub.addr(), persistent("gs-watch")).await;
    assert!(present);
    let p = w.recv_publish_acked().await;
    assert_eq!(
        (p.topic.as_str(), p.payload.as_slice()),
        ("gs/t", &b"stopped"[..])
    );
    w.expect_no_publish(QUIET).await;
    hub.finish();
}
