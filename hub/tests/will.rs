//! Will messages: published on abnormal close, not on normal DISCONNECT, v5 will delay.

mod common;

use std::time::{Duration, Instant};

use common::*;

async fn watcher(hub: &Hub, id: &str, filter: &str) -> RawClient {
    let (mut w, _) = RawClient::connect_ok(hub.addr(), Connect::v5(id)).await;
    w.subscribe(filter, 2).await;
    w
}

/// MQTT-3.1.2-8: the will is published when the connection closes without DISCONNECT.
#[tokio::test]
async fn will_published_on_abnormal_close() {
    let hub = Hub::start();
    let mut w = watcher(&hub, "w-watch", "will/#").await;
    for connect in [Connect::v4("w4"), Connect::v5("w5")] {
        let level = connect.level;
        let mut will = Will::new(&format!("will/{level}"), b"gone");
        will.qos = 1;
        let (c, _) = RawClient::connect_ok(hub.addr(), connect.will(will)).await;
        c.drop_connection().await;
        let p = w.recv_publish_acked().await;
        assert_eq!(
            (p.topic, p.payload, p.qos),
            (format!("will/{level}"), b"gone".to_vec(), 1)
        );
    }
    hub.finish();
}

/// MQTT-3.1.2-10 / MQTT-3.14.4-3: DISCONNECT (reason 0) discards the will.
#[tokio::test]
async fn will_not_published_on_normal_disconnect() {
    let hub = Hub::start();
    let mut w = watcher(&hub, "nw-watch", "nwill/#").await;
    for connect in [Connect::v4("nw4"), Connect::v5("nw5")] {
        let (c, _) =
            RawClient::connect_ok(hub.addr(), connect.will(Will::new("nwill/t", b"x"))).await;
        c.disconnect().await;
    }
    w.expect_no_publish(Duration::from_secs(1)).await;
    hub.finish();
}

/// MQTT 5.0 §3.14.2.1: DISCONNECT with reason 0x04 (Disconnect with Will Message) publishes
/// the will.
#[tokio::test]
async fn v5_disconnect_with_will_message() {
    let hub = Hub::start();
    let mut w = watcher(&hub, "dw-watch", "dwill/#").await;
    let (mut c, _) = RawClient::connect_ok(
        hub.addr(),
        Connect::v5("dw").will(Will::new("dwill/t", b"asked")),
    )
    .await;
    c.send(&disconnect_v5(0x04, &Props::new())).await;
    assert_eq!(w.recv_publish().await.payload, b"asked");
    hub.finish();
}

/// A client dropped for exceeding its keepalive has its will published.
#[tokio::test]
async fn will_published_on_keepalive_timeout() {
    let hub = Hub::start();
    let mut w = watcher(&hub, "kw-watch", "kwill/#").await;
    let (_silent, _) = RawClient::connect_ok(
        hub.addr(),
        Connect::v4("kw")
            .keep_alive(1)
            .will(Will::new("kwill/t", b"timeout")),
    )
    .await;
    let start = Instant::now();
    let p = w.recv_publish().await;
    assert_eq!(p.payload, b"timeout");
    assert!(
        start.elapsed() >= Duration::from_millis(1400),
        "will sent before 1.5 × keepalive"
    );
    hub.finish();
}

/// A will with the retain flag becomes the retained message of its topic (MQTT-3.1.2-17).
#[tokio::test]
async fn retained_will_is_stored() {
    let hub = Hub::start();
    let mut will = Will::new("rwill/status", b"offline");
    will.retain = true;
    let (c, _) = RawClient::connect_ok(hub.addr(), Connect::v4("rw").will(will)).await;
    c.drop_connection().await;
    // Give the hub a moment to process the close, then subscribe afterwards.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let deadline = Instant::now() + RECV_TIMEOUT;
    loop {
        let (mut late, _) = RawClient::connect_ok(hub.addr(), Connect::v4("rw-late")).await;
        late.subscribe("rwill/status", 0).await;
        if let Some(p) = late.try_recv_publish(QUIET).await {
            assert_eq!((p.payload.as_slice(), p.retain), (&b"offline"[..], true));
            break;
        }
        assert!(Instant::now() < deadline, "retained will never stored");
    }
    hub.finish();
}

/// v5 Will Delay Interval: the will is published only after the delay.
#[tokio::test]
async fn v5_will_delay_honoured() {
    let hub = Hub::start();
    let mut w = watcher(&hub, "wd-watch", "wdelay/#").await;
    let mut will = Will::new("wdelay/t", b"late");
    will.props = Props::new().u32(prop::WILL_DELAY, 2);
    let (c, _) =
        RawClient::connect_ok(hub.addr(), Connect::v5("wd").session_expiry(60).will(will)).await;
    c.drop_connection().await;
    let start = Instant::now();
    w.expect_no_publish(Duration::from_millis(1500)).await;
    let p = w.recv_publish().await;
    assert_eq!(p.payload, b"late");
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1900),
        "will sent after {elapsed:?}, before 2 s delay"
    );
    hub.finish();
}

/// MQTT-3.1.3-9: reconnecting within the will delay cancels the will.
#[tokio::test]
async fn v5_will_delay_cancelled_by_reconnect() {
    let hub = Hub::start();
    let mut w = watcher(&hub, "wc-watch", "wcancel/#").await;
    let mut will = Will::new("wcancel/t", b"never");
    will.props = Props::new().u32(prop::WILL_DELAY, 2);
    let (c, _) =
        RawClient::connect_ok(hub.addr(), Connect::v5("wc").session_expiry(60).will(will)).await;
    c.drop_connection().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (back, present) = RawClient::connect_ok(
        hub.addr(),
        Connect::v5("wc").clean(false).session_expiry(60),
    )
    .await;
    assert!(present);
    w.expect_no_publish(Duration::from_secs(3)).await;
    back.disconnect().await;
    hub.finish();
}

/// MQTT 5.0 §3.1.3.2.2: the will is published when the session ends, if that comes before
/// the will delay.
#[tokio::test]
async fn v5_will_sent_at_session_expiry_before_delay() {
    let hub = Hub::start();
    let mut w = watcher(&hub, "we-watch", "wexp/#").await;
    let mut will = Will::new("wexp/t", b"expired");
    will.props = Props::new().u32(prop::WILL_DELAY, 30);
    let (c, _) =
        RawClient::connect_ok(hub.addr(), Connect::v5("we").session_expiry(1).will(will)).await;
    c.drop_connection().await;
    let p = w.recv_publish().await;
    assert_eq!(p.payload, b"expired");
    hub.finish();
}

/// Will properties (user properties, content type) are passed through.
#[tokio::test]
async fn v5_will_properties_forwarded() {
    let hub = Hub::start();
    let mut w = watcher(&hub, "wp-watch", "wprops/#").await;
    let mut will = Will::new("wprops/t", b"{}");
    will.props = Props::new()
        .str(prop::CONTENT_TYPE, "application/json")
        .user("site", "north");
    let (c, _) = RawClient::connect_ok(hub.addr(), Connect::v5("wp").will(will)).await;
    c.drop_connection().await;
    let p = w.recv_publish().await;
    assert_eq!(p.props.str(prop::CONTENT_TYPE), Some("application/json"));
    assert_eq!(
        p.props.user(),
        vec![("site".to_string(), "north".to_string())]
    );
    hub.finish();
}

/// rumqttc v4 client with a last will, dropped without DISCONNECT.
#[tokio::test]
async fn rumqttc_last_will() {
    let hub = Hub::start();
    let mut w = V5Client::connect(&hub, "rq-will-watch").await;
    w.subscribe("rqwill/#", rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
        .await;
    let dying = V4Client::connect_with(&hub, "rq-dying", |o| {
        o.set_last_will(rumqttc::LastWill::new(
            "rqwill/t",
            "bye",
            rumqttc::QoS::AtLeastOnce,
            false,
        ));
    })
    .await;
    // Dropping aborts the event loop task, which closes the socket without DISCONNECT.
    drop(dying);
    let p = w.recv_publish(RECV_TIMEOUT).await.expect("will");
    assert_eq!(&p.payload[..], b"bye");
    hub.finish();
}

/// MQTT 5.0 §3.1.4: on session takeover the hub closes the old connection and publishes its
/// will (no will delay).
#[tokio::test]
async fn v5_will_published_on_takeover() {
    let hub = Hub::start();
    let mut w = watcher(&hub, "tw-watch", "twill/#").await;
    let (mut old, _) = RawClient::connect_ok(
        hub.addr(),
        Connect::v5("tw").will(Will::new("twill/t", b"taken")),
    )
    .await;
    let (new, _) = RawClient::connect_ok(hub.addr(), Connect::v5("tw")).await;
    old.expect_closed(RECV_TIMEOUT).await;
    assert_eq!(w.recv_publish().await.payload, b"taken");
    new.disconnect().await;
    hub.finish();
}
