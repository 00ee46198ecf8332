//! Shared subscriptions `$share/{group}/{filter}`: each message to exactly one member.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;

/// `$SYS` published every second, so counters can be awaited.
const SYS_FAST: &str = "sys_interval = \"1s\"\n";

/// Receives every PUBLISH arriving until the hub is quiet, acknowledging each.
async fn drain(c: &mut RawClient) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    while let Some(p) = c.try_recv_publish(QUIET).await {
        c.ack(&p).await;
        got.push(p.payload);
    }
    got
}

/// Each message goes to exactly one member; together the members receive all of them.
#[tokio::test]
async fn each_message_to_exactly_one_member() {
    let hub = Hub::start();
    let mut members = Vec::new();
    for (i, level) in [V5, V5, V311].into_iter().enumerate() {
        let (mut m, _) = RawClient::connect_ok(
            hub.addr(),
            Connect {
                level,
                ..Connect::v4(&format!("member-{i}"))
            },
        )
        .await;
        m.subscribe("$share/workers/jobs/+", 1).await;
        members.push(m);
    }
    let (mut publ, _) = RawClient::connect_ok(hub.addr(), Connect::v5("producer")).await;
    for i in 0..30u8 {
        publ.publish(Pub::new("jobs/new", &[i]).qos(1, 0)).await;
    }
    let mut seen = Vec::new();
    for m in &mut members {
        let got = drain(m).await;
        seen.extend(got);
    }
    seen.sort();
    let want: Vec<Vec<u8>> = (0..30u8).map(|i| vec![i]).collect();
    assert_eq!(seen, want, "every message exactly once across the group");
    hub.finish();
}

/// Groups are independent: every group gets every message once, and an ordinary
/// subscription to the same filter gets all of them too.
#[tokio::test]
async fn groups_are_independent_of_each_other_and_of_plain_subscriptions() {
    let hub = Hub::start();
    let mut groups: Vec<Vec<RawClient>> = Vec::new();
    for g in ["a", "b"] {
        let mut members = Vec::new();
        for i in 0..2 {
            let (mut m, _) =
                RawClient::connect_ok(hub.addr(), Connect::v5(&format!("{g}-{i}"))).await;
            m.subscribe(&format!("$share/{g}/data/#"), 1).await;
            members.push(m);
        }
        groups.push(members);
    }
    let (mut plain, _) = RawClient::connect_ok(hub.addr(), Connect::v5("plain")).await;
    plain.subscribe("data/#", 1).await;
    let (mut publ, _) = RawClient::connect_ok(hub.addr(), Connect::v5("data-pub")).await;
    for i in 0..10u8 {
        publ.publish(Pub::new("data/x", &[i]).qos(1, 0)).await;
    }
    let want: BTreeSet<Vec<u8>> = (0..10u8).map(|i| vec![i]).collect();
    for members in &mut groups {
        let mut seen = Vec::new();
        for m in members.iter_mut() {
            seen.extend(drain(m).await);
        }
        assert_eq!(seen.len(), 10, "no duplicates within a group");
        assert_eq!(seen.into_iter().collect::<BTreeSet<_>>(), want);
    }
    assert_eq!(
        drain(&mut plain).await.into_iter().collect::<BTreeSet<_>>(),
        want
    );
    hub.finish();
}

/// A member that unsubscribes or disconnects no longer receives; the rest get everything.
#[tokio::test]
async fn remaining_members_receive_after_one_leaves() {
    let hub = Hub::start();
    let (mut stay, _) = RawClient::connect_ok(hub.addr(), Connect::v5("stay")).await;
    stay.subscribe("$share/g/leave/t", 1).await;
    let (mut leave, _) = RawClient::connect_ok(hub.addr(), Connect::v5("leave")).await;
    leave.subscribe("$share/g/leave/t", 1).await;
    let (mut gone, _) = RawClient::connect_ok(hub.addr(), Connect::v4("gone")).await;
    gone.subscribe("$share/g/leave/t", 1).await;
    assert_eq!(leave.unsubscribe("$share/g/leave/t").await, vec![0]);
    gone.disconnect().await;
    let (mut publ, _) = RawClient::connect_ok(hub.addr(), Connect::v5("leave-pub")).await;
    for i in 0..5u8 {
        publ.publish(Pub::new("leave/t", &[i]).qos(1, 0)).await;
    }
    assert_eq!(drain(&mut stay).await.len(), 5);
    leave.expect_no_publish(QUIET).await;
    hub.finish();
}

/// MQTT 5.0 §4.8.2: when a member's session ends before it acknowledged or even received
/// messages the group chose it for, another member gets them: nothing the group accepted
/// is lost with a consumer that crashed. Counted in `$SYS/broker/messages/redistributed`.
#[tokio::test]
async fn messages_of_a_member_that_leaves_go_to_another_member() {
    let hub = Hub::with_config(&format!("[session]\n{SYS_FAST}"));
    let (mut stay, _) = RawClient::connect_ok(hub.addr(), Connect::v5("rd-stay")).await;
    stay.subscribe("$share/g/rd/t", 1).await;
    // One message in flight at a time: the crashing member holds one unacknowledged and
    // has the rest of its share queued behind it.
    let (mut crash, _) = RawClient::connect_ok(hub.addr(), one_in_flight("rd-crash")).await;
    crash.subscribe("$share/g/rd/t", 1).await;
    let (mut publ, _) = RawClient::connect_ok(hub.addr(), Connect::v5("rd-pub")).await;
    for i in 0..10u8 {
        publ.publish(Pub::new("rd/t", &[i]).qos(1, 0)).await;
    }
    let mut got = drain(&mut stay).await;
    assert_eq!(got.len(), 5, "round-robin: half of them to each member");
    let unacked = crash.recv_publish().await;
    assert_eq!(unacked.qos, 1);
    crash.drop_connection().await;
    let redelivered = drain(&mut stay).await;
    assert_eq!(redelivered.len(), 5, "{redelivered:?}");
    assert_eq!(
        redelivered[0], unacked.payload,
        "the one in flight first, then the queue"
    );
    assert!(
        redelivered.windows(2).all(|w| w[0] < w[1]),
        "in their order: {redelivered:?}"
    );
    got.extend(redelivered);
    got.sort();
    let want: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i]).collect();
    assert_eq!(got, want, "every message reached the group once");
    assert_redistributed(&hub, 5).await;
    hub.finish();
}

/// The other ways a member's session ends hand its undelivered messages on too: a
/// persistent session expiring while its client is away, and a clean start over a parked
/// session.
#[tokio::test]
async fn messages_of_an_expired_or_replaced_member_session_go_to_another_member() {
    let hub = Hub::with_config(&format!("[session]\n{SYS_FAST}"));
    let (mut stay, _) = RawClient::connect_ok(hub.addr(), Connect::v5("rx-stay")).await;
    stay.subscribe("$share/g/rx/t", 1).await;
    let (mut publ, _) = RawClient::connect_ok(hub.addr(), Connect::v5("rx-pub")).await;
    let member = |id: &str, expiry: u32| one_in_flight(id).session_expiry(expiry);
    // Expiry: the member's session outlives its connection by one second.
    let (mut expiring, _) = RawClient::connect_ok(hub.addr(), member("rx-exp", 1)).await;
    expiring.subscribe("$share/g/rx/t", 1).await;
    for i in 0..6u8 {
        publ.publish(Pub::new("rx/t", &[i]).qos(1, 0)).await;
    }
    let mut got = drain(&mut stay).await;
    assert_eq!(got.len(), 3);
    let _unacked = expiring.recv_publish().await;
    expiring.drop_connection().await;
    // Parked: the messages wait for the member until its session expires.
    stay.expect_no_publish(Duration::from_millis(300)).await;
    let expired = drain_until(&mut stay, 3).await;
    got.extend(expired);
    got.sort();
    assert_eq!(got, (0..6u8).map(|i| vec![i]).collect::<Vec<_>>());

    // Clean start over a parked session (expiry one hour) ends it.
    let (mut replaced, _) = RawClient::connect_ok(hub.addr(), member("rx-rep", 3600)).await;
    replaced.subscribe("$share/g/rx/t", 1).await;
    for i in 10..14u8 {
        publ.publish(Pub::new("rx/t", &[i]).qos(1, 0)).await;
    }
    let mut got = drain(&mut stay).await;
    assert_eq!(got.len(), 2);
    let _unacked = replaced.recv_publish().await;
    replaced.drop_connection().await;
    stay.expect_no_publish(Duration::from_millis(300)).await;
    let (again, _) = RawClient::connect_ok(hub.addr(), Connect::v5("rx-rep")).await;
    got.extend(drain_until(&mut stay, 2).await);
    got.sort();
    assert_eq!(got, (10..14u8).map(|i| vec![i]).collect::<Vec<_>>());
    drop(again);
    assert_redistributed(&hub, 5).await;
    hub.finish();
}

/// A v5 member that takes one message at a time (Receive Maximum 1): the rest of what the
/// group gives it waits in its queue.
fn one_in_flight(id: &str) -> Connect {
    Connect::v5(id).props(Props::new().u16(prop::RECEIVE_MAXIMUM, 1))
}

/// Asserts that `$SYS/broker/messages/redistributed` reaches `count` (and stays there).
async fn assert_redistributed(hub: &Hub, count: u64) {
    let got = wait_sys_counter(
        hub,
        "$SYS/broker/messages/redistributed",
        RECV_TIMEOUT,
        |v| v >= count,
    )
    .await;
    assert_eq!(got, Some(count));
}

/// Receives and acknowledges `n` PUBLISHes, each within the receive timeout.
async fn drain_until(c: &mut RawClient, n: usize) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    for _ in 0..n {
        let p = c.recv_publish().await;
        c.ack(&p).await;
        got.push(p.payload);
    }
    got
}

/// A member's session that ends with nobody else in the group online: its undelivered
/// messages are dropped and counted (a persistent member would have kept them).
#[tokio::test]
async fn messages_of_the_last_member_are_counted_as_dropped() {
    let hub = Hub::with_config(&format!("[session]\n{SYS_FAST}"));
    let (mut only, _) = RawClient::connect_ok(hub.addr(), one_in_flight("rd-only")).await;
    only.subscribe("$share/g/rd-last/t", 1).await;
    let (mut publ, _) = RawClient::connect_ok(hub.addr(), Connect::v5("rd-last-pub")).await;
    for i in 0..3u8 {
        publ.publish(Pub::new("rd-last/t", &[i]).qos(1, 0)).await;
    }
    let _unacked = only.recv_publish().await;
    only.drop_connection().await;
    let dropped = wait_sys_counter(&hub, "$SYS/broker/messages/dropped", RECV_TIMEOUT, |v| {
        v >= 3
    })
    .await;
    assert_eq!(dropped, Some(3));
    hub.finish();
}

/// MQTT 5.0 §4.8.2: retained messages are not sent when a shared subscription is made.
#[tokio::test]
async fn retained_not_sent_to_new_shared_subscription() {
    let hub = Hub::start();
    let (mut publ, _) = RawClient::connect_ok(hub.addr(), Connect::v5("sr-pub")).await;
    publ.publish(Pub::new("sr/t", b"retained").qos(1, 0).retain(true))
        .await;
    let (mut m, _) = RawClient::connect_ok(hub.addr(), Connect::v5("sr-member")).await;
    m.subscribe("$share/g/sr/t", 1).await;
    m.expect_no_publish(QUIET).await;
    publ.publish(Pub::new("sr/t", b"live").qos(1, 0)).await;
    assert_eq!(m.recv_publish_acked().await.payload, b"live");
    hub.finish();
}

/// Malformed share names (no filter, wildcard in the group name) are not granted.
#[tokio::test]
async fn malformed_share_names_not_granted() {
    let hub = Hub::start();
    for filter in ["$share/g", "$share/g+/t", "$share//t"] {
        let (mut c, _) = RawClient::connect_ok(hub.addr(), Connect::v5("bad-share")).await;
        let pid = c.pid();
        c.send(&subscribe_packet(V5, pid, &[(filter, 1)], &Props::new()))
            .await;
        match c.try_recv(RECV_TIMEOUT).await {
            Ok(Incoming::SubAck { codes, .. }) => {
                assert!(
                    codes.len() == 1 && codes[0] >= 0x80,
                    "{filter} granted: {codes:?}"
                );
            }
            Ok(Incoming::Disconnect { reason, .. }) => assert!(reason >= 0x80, "{filter}"),
            Err(RecvError::Closed) => {}
            other => panic!("{filter}: unexpected answer {other:?}"),
        }
    }
    hub.finish();
}
