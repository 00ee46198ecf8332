//! Sessions: clean session / clean start, session present, session expiry, offline queueing.

mod common;

use std::time::Duration;

use common::*;

async fn publisher(hub: &Hub, id: &str) -> RawClient {
    RawClient::connect_ok(hub.addr(), Connect::v4(id)).await.0
}

/// 3.1.1 clean session = 1: no session present, subscriptions end with the connection.
#[tokio::test]
async fn v311_clean_session_forgets_subscriptions() {
    let hub = Hub::start();
    let (mut c, present) = RawClient::connect_ok(hub.addr(), Connect::v4("cs1")).await;
    assert!(
        !present,
        "MQTT-3.2.2-1: clean session has session present = 0"
    );
    c.subscribe("cs1/t", 1).await;
    c.disconnect().await;
    let (mut c, present) = RawClient::connect_ok(hub.addr(), Connect::v4("cs1")).await;
    assert!(!present);
    let mut p = publisher(&hub, "cs1-pub").await;
    p.publish(Pub::new("cs1/t", b"x").qos(1, 0)).await;
    c.expect_no_publish(QUIET).await;
    hub.finish();
}

/// 3.1.1 clean session = 0: subscriptions survive, session present = 1 on reconnect
/// (MQTT-3.2.2-2), QoS 1 and 2 messages published meanwhile are queued and delivered in order.
#[tokio::test]
async fn v311_persistent_session_queues_offline_messages() {
    let hub = Hub::start();
    let (mut c, present) = RawClient::connect_ok(hub.addr(), Connect::v4("ps4").clean(false)).await;
    assert!(!present, "first connection has no session");
    c.subscribe("ps4/#", 2).await;
    c.disconnect().await;
    let mut p = publisher(&hub, "ps4-pub").await;
    for i in 0..6u8 {
        p.publish(Pub::new("ps4/t", &[i]).qos(1 + i % 2, 0)).await;
    }
    let (mut c, present) = RawClient::connect_ok(hub.addr(), Connect::v4("ps4").clean(false)).await;
    assert!(present, "MQTT-3.2.2-2: session present = 1");
    for i in 0..6u8 {
        let m = c.recv_publish_acked().await;
        assert_eq!((m.payload.as_slice(), m.qos), (&[i][..], 1 + i % 2));
    }
    // Subscriptions were kept: live messages flow without subscribing again.
    p.publish(Pub::new("ps4/t", b"live").qos(1, 0)).await;
    assert_eq!(c.recv_publish_acked().await.payload, b"live");
    hub.finish();
}

/// Connecting with clean session = 1 discards a stored session (MQTT-3.1.2-6).
#[tokio::test]
async fn clean_session_discards_stored_session() {
    let hub = Hub::start();
    let (mut c, _) = RawClient::connect_ok(hub.addr(), Connect::v4("discard").clean(false)).await;
    c.subscribe("discard/t", 1).await;
    c.disconnect().await;
    let (c, present) = RawClient::connect_ok(hub.addr(), Connect::v4("discard")).await;
    assert!(!present);
    c.disconnect().await;
    let (mut c, present) =
        RawClient::connect_ok(hub.addr(), Connect::v4("discard").clean(false)).await;
    assert!(!present, "the old session must be gone");
    let mut p = publisher(&hub, "discard-pub").await;
    p.publish(Pub::new("discard/t", b"x").qos(1, 0)).await;
    c.expect_no_publish(QUIET).await;
    hub.finish();
}

/// v5 Clean Start = 0 without Session Expiry Interval: the session ends with the connection
/// (the interval defaults to 0).
#[tokio::test]
async fn v5_session_without_expiry_ends_at_disconnect() {
    let hub = Hub::start();
    let (mut c, _) = RawClient::connect_ok(hub.addr(), Connect::v5("noexp").clean(false)).await;
    c.subscribe("noexp/t", 1).await;
    c.disconnect().await;
    let (c, present) = RawClient::connect_ok(hub.addr(), Connect::v5("noexp").clean(false)).await;
    assert!(!present);
    c.disconnect().await;
    hub.finish();
}

/// v5 session expiry: the session survives a disconnect for its interval and is gone after.
#[tokio::test]
async fn v5_session_expiry() {
    let hub = Hub::start();
    let connect = || Connect::v5("exp").clean(false).session_expiry(1);
    let (mut c, _) = RawClient::connect_ok(hub.addr(), connect()).await;
    c.subscribe("exp/t", 1).await;
    c.disconnect().await;
    let mut p = publisher(&hub, "exp-pub").await;
    p.publish(Pub::new("exp/t", b"queued").qos(1, 0)).await;

    // Within the interval: present, with the queued message.
    let (mut c, present) = RawClient::connect_ok(hub.addr(), connect()).await;
    assert!(present);
    assert_eq!(c.recv_publish_acked().await.payload, b"queued");
    c.disconnect().await;

    // After the interval: gone.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    p.publish(Pub::new("exp/t", b"dropped").qos(1, 0)).await;
    let (mut c, present) = RawClient::connect_ok(hub.addr(), connect()).await;
    assert!(!present, "session must have expired");
    c.expect_no_publish(QUIET).await;
    hub.finish();
}

/// v5: the Session Expiry Interval can be changed at DISCONNECT; 0 ends the session.
#[tokio::test]
async fn v5_disconnect_can_end_session() {
    let hub = Hub::start();
    let connect = || Connect::v5("dexp").clean(false).session_expiry(60);
    let (mut c, _) = RawClient::connect_ok(hub.addr(), connect()).await;
    c.subscribe("dexp/t", 1).await;
    c.send(&disconnect_v5(
        0,
        &Props::new().u32(prop::SESSION_EXPIRY, 0),
    ))
    .await;
    c.expect_closed(RECV_TIMEOUT).await;
    let (c, present) = RawClient::connect_ok(hub.addr(), connect()).await;
    assert!(!present);
    c.disconnect().await;
    hub.finish();
}

/// v5 Clean Start = 1 discards an existing session even with an expiry interval.
#[tokio::test]
async fn v5_clean_start_discards_session() {
    let hub = Hub::start();
    let (mut c, _) = RawClient::connect_ok(
        hub.addr(),
        Connect::v5("cst").clean(false).session_expiry(60),
    )
    .await;
    c.subscribe("cst/t", 1).await;
    c.disconnect().await;
    let (mut c, present) =
        RawClient::connect_ok(hub.addr(), Connect::v5("cst").session_expiry(60)).await;
    assert!(!present);
    let mut p = publisher(&hub, "cst-pub").await;
    p.publish(Pub::new("cst/t", b"x").qos(1, 0)).await;
    c.expect_no_publish(QUIET).await;
    hub.finish();
}

/// `max_session_expiry` caps the client's request; v5 CONNACK announces the value in force.
#[tokio::test]
async fn max_session_expiry_caps_requested_interval() {
    let hub = Hub::with_session("max_session_expiry = \"1s\"");
    let (c, ack) = RawClient::connect(
        hub.addr(),
        Connect::v5("cap").clean(false).session_expiry(3600),
    )
    .await;
    let Incoming::ConnAck { code: 0, props, .. } = ack else {
        panic!("refused: {ack:?}")
    };
    assert_eq!(props.u32(prop::SESSION_EXPIRY), Some(1));
    c.disconnect().await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (c, present) = RawClient::connect_ok(
        hub.addr(),
        Connect::v5("cap").clean(false).session_expiry(3600),
    )
    .await;
    assert!(!present, "session outlived max_session_expiry");
    c.disconnect().await;
    hub.finish();
}

/// Session takeover keeps the session: the new connection (clean = 0) sees it present.
#[tokio::test]
async fn takeover_keeps_persistent_session() {
    let hub = Hub::start();
    let (mut old, _) = RawClient::connect_ok(hub.addr(), Connect::v4("tk").clean(false)).await;
    old.subscribe("tk/t", 1).await;
    let (mut new, present) =
        RawClient::connect_ok(hub.addr(), Connect::v4("tk").clean(false)).await;
    assert!(present);
    old.expect_closed(RECV_TIMEOUT).await;
    let mut p = publisher(&hub, "tk-pub").await;
    p.publish(Pub::new("tk/t", b"to-new").qos(1, 0)).await;
    assert_eq!(new.recv_publish_acked().await.payload, b"to-new");
    hub.finish();
}

/// rumqttc v4 with clean session = false reports session present on reconnect.
#[tokio::test]
async fn rumqttc_persistent_session() {
    let hub = Hub::start();
    let mut c = V4Client::connect_with(&hub, "rq-persist", |o| {
        o.set_clean_session(false);
    })
    .await;
    assert!(!c.connack.session_present);
    c.subscribe("rqp/t", rumqttc::QoS::AtLeastOnce).await;
    c.disconnect().await;
    let mut p = publisher(&hub, "rq-persist-pub").await;
    p.publish(Pub::new("rqp/t", b"while away").qos(1, 0)).await;
    let mut c = V4Client::connect_with(&hub, "rq-persist", |o| {
        o.set_clean_session(false);
    })
    .await;
    assert!(c.connack.session_present);
    let m = c.recv_publish(RECV_TIMEOUT).await.expect("queued message");
    assert_eq!(&m.payload[..], b"while away");
    hub.finish();
}
