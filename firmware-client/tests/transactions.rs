//! Transactions (feature `tx`).
//!
//! Against a scripted broker: the exact bytes of half messages, commits,
//! rollbacks and the check subscription; PUBACK reason codes as typed outcomes;
//! check requests as their own event; a commit that survives a reconnect;
//! requests refused before anything is sent.
//!
//! Against the Tern hub (built and started by each test on a free loopback
//! port, stopped by PID): what a subscriber sees of committed and rolled-back
//! transactions, the hub's answers for unknown and foreign transactions and
//! for a transaction over its limits, and check requests for a transaction
//! left open.

use std::time::{Duration, Instant};

use tern_client::{
    AsyncClient, Buffers, Client, ConfigBuilder, Error, Event, ProtocolVersion, QoS, ReasonCode,
    TcpTransport, TxAction, TxError, TxId, TxOutcome, TxResolution, TxSequence,
};
use tern_mqtt::{
    AckProperties, ConnAck, DecodeOptions, List, Packet, PubAck, Publish, PublishProperties, decode,
};
use tern_testkit::{Broker, start_hub_with_config};

mod common;
use common::{AsyncMock, Mock, MockError, block_on};

const V5: ProtocolVersion = ProtocolVersion::V5;

/// An application message, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Delivered {
    topic: String,
    payload: Vec<u8>,
    properties: Vec<(String, String)>,
}

/// What a test keeps of an event once the client is polled again.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Published(u16, ReasonCode),
    Resolved(TxResolution),
    Check(TxId),
    Message(Delivered),
    Other,
}

fn seen(event: Event<'_>) -> Seen {
    match event {
        Event::Published { packet_id, reason } => Seen::Published(packet_id, reason),
        Event::TxResolved(r) => Seen::Resolved(r),
        Event::TxCheck(id) => Seen::Check(id),
        Event::Message(m) => Seen::Message(Delivered {
            topic: m.topic.to_string(),
            payload: m.payload.to_vec(),
            properties: m
                .properties
                .user_properties
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }),
        _ => Seen::Other,
    }
}

fn connack() -> Packet<'static> {
    Packet::ConnAck(ConnAck::default())
}

fn puback(packet_id: u16, reason_code: ReasonCode, reason: Option<&str>) -> Packet<'_> {
    Packet::PubAck(PubAck {
        packet_id,
        reason_code,
        properties: AckProperties {
            reason_string: reason,
            ..Default::default()
        },
    })
}

fn encode(packet: &Packet<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; 4096];
    let n = packet.encode(V5, &mut buf).expect("encode expected packet");
    buf.truncate(n);
    buf
}

/// The QoS 1 commit or rollback PUBLISH of `id`, written out by hand.
fn control_bytes(id: &str, action: &str, packet_id: u16, dup: bool) -> Vec<u8> {
    let topic = format!("$tern/tx/{id}/{action}");
    let topic_len = u16::try_from(topic.len()).unwrap();
    // Topic length and name, packet id, property length 0, no payload.
    let remaining = u8::try_from(2 + topic.len() + 2 + 1).unwrap();
    let mut b = vec![if dup { 0x3A } else { 0x32 }, remaining];
    b.extend_from_slice(&topic_len.to_be_bytes());
    b.extend_from_slice(topic.as_bytes());
    b.extend_from_slice(&packet_id.to_be_bytes());
    b.push(0);
    b
}

macro_rules! connected {
    ($client:ident, $io:ident, $client_id:expr, $version:expr) => {
        let config = ConfigBuilder::new($client_id)
            .unwrap()
            .protocol($version)
            .build();
        let (mut rx, mut tx) = ([0u8; 512], [0u8; 1024]);
        let mut $client: Client<'_, 4> = Client::new(config, Buffers::new(&mut rx, &mut tx));
        let mut $io = Mock {
            version: $version,
            ..Mock::default()
        };
        $io.push(connack());
        $client.connect(&mut $io, 0).unwrap();
        $io.sent();
    };
}

#[test]
fn half_message_carries_tern_tx_after_the_callers_properties() {
    connected!(client, io, "dev-1", V5);
    let id = TxSequence::new("b7", 0).unwrap().begin();
    let packet_id = client
        .publish_in_tx(
            &mut io,
            &id,
            "sensors/1/temp",
            b"21.5",
            QoS::AtLeastOnce,
            &[("site", "north")],
            0,
        )
        .unwrap();
    let expected = encode(&Packet::Publish(Publish {
        qos: QoS::AtLeastOnce,
        topic: "sensors/1/temp",
        packet_id,
        properties: PublishProperties {
            user_properties: List::new(&[("site", "north"), ("tern-tx", "b7-0")]),
            ..Default::default()
        },
        payload: b"21.5",
        ..Default::default()
    }));
    assert_eq!(io.sent(), vec![expected]);
    assert_eq!(client.session().inflight_len(), 1);

    // Its PUBACK is an ordinary publish acknowledgement.
    io.push(puback(packet_id, ReasonCode::QuotaExceeded, None));
    let event = client.poll(&mut io, 0).unwrap();
    assert_eq!(
        event,
        Some(Event::Published {
            packet_id,
            reason: ReasonCode::QuotaExceeded
        })
    );
    assert_eq!(
        TxOutcome::from(ReasonCode::QuotaExceeded),
        TxOutcome::QuotaExceeded
    );
    assert_eq!(client.session().inflight_len(), 0);
}

#[test]
fn commit_and_rollback_are_empty_qos1_publishes_to_control_topics() {
    connected!(client, io, "dev-1", V5);
    let id = TxId::new("batch-17").unwrap();
    let c = client.commit(&mut io, &id, 0).unwrap();
    let r = client.rollback(&mut io, &id, 0).unwrap();
    assert_eq!(
        io.sent(),
        vec![
            control_bytes("batch-17", "commit", c, false),
            control_bytes("batch-17", "rollback", r, false)
        ]
    );
    // The longest id still fits.
    let long = TxId::new(&"x".repeat(64)).unwrap();
    let l = client.commit(&mut io, &long, 0).unwrap();
    let sent = io.sent();
    let Packet::Publish(p) = decode(&sent[0], &DecodeOptions::new(V5)).unwrap().0 else {
        panic!("expected PUBLISH");
    };
    assert_eq!(p.topic, format!("$tern/tx/{}/commit", "x".repeat(64)));
    assert_eq!(
        (p.packet_id, p.qos, p.payload),
        (l, QoS::AtLeastOnce, &[][..])
    );
}

#[test]
fn puback_reason_codes_become_typed_outcomes() {
    connected!(client, io, "dev-1", V5);
    let id = TxId::new("t-1").unwrap();
    let cases = [
        (
            TxAction::Commit,
            ReasonCode::Success,
            None,
            TxOutcome::Applied,
        ),
        (
            TxAction::Rollback,
            ReasonCode::Success,
            None,
            TxOutcome::Applied,
        ),
        (
            TxAction::Commit,
            ReasonCode::NoMatchingSubscribers,
            None,
            TxOutcome::Applied,
        ),
        (
            TxAction::Commit,
            ReasonCode::UnspecifiedError,
            Some("unknown transaction"),
            TxOutcome::UnknownTransaction,
        ),
        (
            TxAction::Rollback,
            ReasonCode::NotAuthorized,
            Some("transaction belongs to another client"),
            TxOutcome::NotAuthorized,
        ),
        (
            TxAction::Commit,
            ReasonCode::ImplementationSpecificError,
            None,
            TxOutcome::Refused(ReasonCode::ImplementationSpecificError),
        ),
    ];
    for (action, reason, text, outcome) in cases {
        let packet_id = match action {
            TxAction::Commit => client.commit(&mut io, &id, 0),
            TxAction::Rollback => client.rollback(&mut io, &id, 0),
        }
        .unwrap();
        io.push(puback(packet_id, reason, text));
        let event = client.poll(&mut io, 0).unwrap();
        assert_eq!(
            event,
            Some(Event::TxResolved(TxResolution {
                packet_id,
                id,
                action,
                outcome
            })),
            "{action:?} answered {reason:?}"
        );
        assert_eq!(client.session().inflight_len(), 0);
    }
}

#[test]
fn resolutions_follow_their_packet_ids_out_of_order() {
    connected!(client, io, "dev-1", V5);
    let mut seq = TxSequence::new("boot3", 40).unwrap();
    let (a, b) = (seq.begin(), seq.begin());
    let half = client
        .publish_in_tx(&mut io, &b, "t", b"x", QoS::AtLeastOnce, &[], 0)
        .unwrap();
    let ca = client.commit(&mut io, &a, 0).unwrap();
    let rb = client.rollback(&mut io, &b, 0).unwrap();
    io.push(puback(rb, ReasonCode::Success, None));
    io.push(puback(half, ReasonCode::Success, None));
    io.push(puback(ca, ReasonCode::UnspecifiedError, None));
    let mut events = Vec::new();
    while let Some(e) = client.poll(&mut io, 0).unwrap() {
        events.push(seen(e));
    }
    assert_eq!(
        events,
        vec![
            Seen::Resolved(TxResolution {
                packet_id: rb,
                id: b,
                action: TxAction::Rollback,
                outcome: TxOutcome::Applied
            }),
            Seen::Published(half, ReasonCode::Success),
            Seen::Resolved(TxResolution {
                packet_id: ca,
                id: a,
                action: TxAction::Commit,
                outcome: TxOutcome::UnknownTransaction
            }),
        ]
    );
    assert_eq!((a.as_str(), b.as_str()), ("boot3-40", "boot3-41"));
}

#[test]
fn check_request_is_its_own_event_and_acknowledged() {
    connected!(client, io, "dev-1", V5);
    let sub = client.subscribe_tx_checks(&mut io, 0).unwrap();
    let sent = io.sent();
    let Packet::Subscribe(s) = decode(&sent[0], &DecodeOptions::new(V5)).unwrap().0 else {
        panic!("expected SUBSCRIBE");
    };
    let filters: Vec<_> = s
        .filters
        .iter()
        .map(|f| (f.filter, f.options.qos))
        .collect();
    assert_eq!(filters, vec![("$tern/tx/check/dev-1", QoS::AtLeastOnce)]);
    assert_eq!(s.packet_id, sub);

    let check = |topic: &'static str, payload: &'static [u8], packet_id: u16| {
        Packet::Publish(Publish {
            qos: QoS::AtLeastOnce,
            topic,
            packet_id,
            properties: PublishProperties {
                user_properties: List::new(&[("tern-tx", "b7-3")]),
                ..Default::default()
            },
            payload,
            ..Default::default()
        })
    };
    io.push(check("$tern/tx/check/dev-1", b"b7-3", 11));
    let id = match client.poll(&mut io, 0).unwrap() {
        Some(Event::TxCheck(id)) => id,
        other => panic!("expected a check request, got {other:?}"),
    };
    assert_eq!(id.as_str(), "b7-3");
    assert_eq!(
        io.sent(),
        vec![encode(&puback(11, ReasonCode::Success, None))],
        "the check is acknowledged before it is reported"
    );
    // The answer is an ordinary rollback.
    let r = client.rollback(&mut io, &id, 0).unwrap();
    assert_eq!(io.sent(), vec![control_bytes("b7-3", "rollback", r, false)]);

    // Another client's check topic is a plain message.
    io.push(check("$tern/tx/check/dev-2", b"b7-3", 13));
    assert_eq!(
        client.poll(&mut io, 0).unwrap().map(seen),
        Some(Seen::Message(Delivered {
            topic: "$tern/tx/check/dev-2".into(),
            payload: b"b7-3".to_vec(),
            properties: vec![("tern-tx".into(), "b7-3".into())],
        }))
    );
}

#[test]
fn check_whose_payload_is_no_tx_id_is_delivered_as_a_message() {
    connected!(client, io, "dev-1", V5);
    io.push(Packet::Publish(Publish {
        qos: QoS::AtLeastOnce,
        topic: "$tern/tx/check/dev-1",
        packet_id: 5,
        payload: b"a/b",
        ..Default::default()
    }));
    assert!(matches!(
        client.poll(&mut io, 0).unwrap(),
        Some(Event::Message(m)) if m.payload == b"a/b"
    ));
}

#[test]
fn commit_whose_write_failed_is_resent_and_resolved_after_reconnect() {
    let config = ConfigBuilder::new("dev-1")
        .unwrap()
        .clean_start(false)
        .session_expiry(600)
        .build();
    let (mut rx, mut tx) = ([0u8; 512], [0u8; 1024]);
    let mut client: Client<'_, 4> = Client::new(config, Buffers::new(&mut rx, &mut tx));
    let mut io = Mock::default();
    io.push(connack());
    client.connect(&mut io, 0).unwrap();
    io.sent();
    let id = TxId::new("t-9").unwrap();
    io.writes_left = Some(0);
    assert!(matches!(
        client.commit(&mut io, &id, 0),
        Err(Error::Transport(_))
    ));
    assert_eq!(
        client.session().inflight_len(),
        1,
        "the commit stays in flight"
    );

    let mut io = Mock::default();
    io.push(Packet::ConnAck(ConnAck {
        session_present: true,
        ..Default::default()
    }));
    let info = client.connect(&mut io, 0).unwrap();
    assert_eq!(info.resent, 1);
    let sent = io.sent();
    assert_eq!(sent.len(), 2, "CONNECT and the resent commit");
    assert_eq!(sent[1], control_bytes("t-9", "commit", 1, true));
    io.push(puback(1, ReasonCode::Success, None));
    assert_eq!(
        client.poll(&mut io, 0).unwrap(),
        Some(Event::TxResolved(TxResolution {
            packet_id: 1,
            id,
            action: TxAction::Commit,
            outcome: TxOutcome::Applied
        }))
    );
}

#[test]
fn requests_the_hub_would_not_honour_are_refused_before_sending() {
    connected!(client, io, "dev-1", V5);
    let id = TxId::new("t-1").unwrap();
    let refused = |r: Result<u16, Error<MockError>>| match r {
        Err(Error::Tx(e)) => e,
        other => panic!("expected a transaction error, got {other:?}"),
    };
    assert_eq!(
        refused(client.publish_in_tx(&mut io, &id, "t", b"", QoS::AtMostOnce, &[], 0)),
        TxError::QoS0
    );
    assert_eq!(
        refused(client.publish_in_tx(
            &mut io,
            &id,
            "t",
            b"",
            QoS::AtLeastOnce,
            &[("tern-tx", "other")],
            0
        )),
        TxError::ReservedProperty
    );
    let many = [("k", "v"); 9];
    assert_eq!(
        refused(client.publish_in_tx(&mut io, &id, "t", b"", QoS::AtLeastOnce, &many, 0)),
        TxError::TooManyUserProperties
    );
    assert!(matches!(
        client.publish_in_tx(&mut io, &id, "t", b"", QoS::ExactlyOnce, &[], 0),
        Err(Error::Unsupported)
    ));
    assert!(matches!(
        client.publish_in_tx(&mut io, &id, "a/+", b"", QoS::AtLeastOnce, &[], 0),
        Err(Error::Topic(_))
    ));
    // Eight properties are fine.
    client
        .publish_in_tx(&mut io, &id, "t", b"", QoS::AtLeastOnce, &many[..8], 0)
        .unwrap();
    assert_eq!(io.sent().len(), 1);
    assert_eq!(client.session().inflight_len(), 1);

    connected!(old, old_io, "dev-2", ProtocolVersion::V311);
    assert_eq!(
        refused(old.publish_in_tx(&mut old_io, &id, "t", b"", QoS::AtLeastOnce, &[], 0)),
        TxError::RequiresV5
    );
    assert_eq!(
        refused(old.commit(&mut old_io, &id, 0)),
        TxError::RequiresV5
    );
    assert!(old_io.sent().is_empty());

    connected!(anon, anon_io, "", V5);
    assert_eq!(
        refused(anon.subscribe_tx_checks(&mut anon_io, 0)),
        TxError::ClientId
    );
    assert!(anon_io.sent().is_empty());
}

#[test]
fn async_client_speaks_the_same_protocol() {
    let config = ConfigBuilder::new("dev-1").unwrap().build();
    let (mut rx, mut tx) = ([0u8; 512], [0u8; 1024]);
    let mut client: AsyncClient<'_, 4> = AsyncClient::new(config, Buffers::new(&mut rx, &mut tx));
    let mut io = AsyncMock(Mock::default());
    io.0.push(connack());
    block_on(client.connect(&mut io, 0)).unwrap();
    block_on(client.subscribe_tx_checks(&mut io, 0)).unwrap();
    io.0.sent();
    let id = TxId::new("a-1").unwrap();
    let half =
        block_on(client.publish_in_tx(&mut io, &id, "t", b"1", QoS::AtLeastOnce, &[], 0)).unwrap();
    let c = block_on(client.commit(&mut io, &id, 0)).unwrap();
    let r = block_on(client.rollback(&mut io, &id, 0)).unwrap();
    let sent = io.0.sent();
    assert_eq!(sent.len(), 3);
    assert_eq!(sent[1], control_bytes("a-1", "commit", c, false));
    assert_eq!(sent[2], control_bytes("a-1", "rollback", r, false));
    io.0.push(puback(half, ReasonCode::Success, None));
    io.0.push(puback(c, ReasonCode::Success, None));
    io.0.push(puback(r, ReasonCode::UnspecifiedError, None));
    io.0.push(Packet::Publish(Publish {
        qos: QoS::AtLeastOnce,
        topic: "$tern/tx/check/dev-1",
        packet_id: 3,
        payload: b"a-2",
        ..Default::default()
    }));
    let mut events = Vec::new();
    while let Some(e) = block_on(client.poll(&mut io, 0)).unwrap() {
        events.push(seen(e));
    }
    assert_eq!(
        events,
        vec![
            Seen::Published(half, ReasonCode::Success),
            Seen::Resolved(TxResolution {
                packet_id: c,
                id,
                action: TxAction::Commit,
                outcome: TxOutcome::Applied
            }),
            Seen::Resolved(TxResolution {
                packet_id: r,
                id,
                action: TxAction::Rollback,
                outcome: TxOutcome::UnknownTransaction
            }),
            Seen::Check(TxId::new("a-2").unwrap()),
        ]
    );
}

/// Transaction ids follow the protocol's rule exactly: 1 to 64 bytes of
/// `[A-Za-z0-9._-]`.
fn naive_valid_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

proptest::proptest! {
    /// `TxId::new` accepts exactly what the naive rule accepts, and keeps it unchanged.
    #[test]
    fn ids_are_valid_exactly_when_the_rule_says(s in "[A-Za-z0-9._/ -]{0,66}|\\PC{0,70}") {
        let id = TxId::new(&s);
        proptest::prop_assert_eq!(id.is_ok(), naive_valid_id(&s));
        if let Ok(id) = id {
            proptest::prop_assert_eq!(id.as_str(), s.as_str());
        }
    }

    /// Whatever the id and the answer, the PUBACK of a commit or rollback is
    /// reported as that transaction, action and outcome.
    #[test]
    fn every_valid_id_resolves_as_itself(
        s in "[A-Za-z0-9._-]{1,64}",
        commit in proptest::bool::ANY,
        code in proptest::sample::select(vec![
            ReasonCode::Success,
            ReasonCode::NoMatchingSubscribers,
            ReasonCode::UnspecifiedError,
            ReasonCode::NotAuthorized,
            ReasonCode::QuotaExceeded,
            ReasonCode::TopicNameInvalid,
        ]),
    ) {
        connected!(client, io, "dev-p", V5);
        let id = TxId::new(&s).unwrap();
        let action = if commit { TxAction::Commit } else { TxAction::Rollback };
        let packet_id = match action {
            TxAction::Commit => client.commit(&mut io, &id, 0),
            TxAction::Rollback => client.rollback(&mut io, &id, 0),
        }
        .unwrap();
        let verb = if commit { "commit" } else { "rollback" };
        proptest::prop_assert_eq!(io.sent(), vec![control_bytes(&s, verb, packet_id, false)]);
        io.push(puback(packet_id, code, None));
        proptest::prop_assert_eq!(
            client.poll(&mut io, 0).unwrap().map(seen),
            Some(Seen::Resolved(TxResolution {
                packet_id,
                id,
                action,
                outcome: TxOutcome::from(code),
            }))
        );
    }
}

// ---------------------------------------------------------------------------
// Against the Tern hub.
// ---------------------------------------------------------------------------

/// Hub configuration of these tests: quick check requests, small limits.
const HUB_CONFIG: &str = r#"
[transactions]
check_after = "300ms"
check_interval = "300ms"
max_checks = 3
max_messages = 5
"#;
/// How long a packet the test expects may take.
const RECV_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the test listens to prove that nothing arrives.
const QUIET: Duration = Duration::from_millis(500);

fn start_hub() -> Broker {
    start_hub_with_config(HUB_CONFIG)
}

/// A connected client of the hub. Buffers and id are leaked so the client can
/// be `'static` (one small allocation per test connection).
struct Peer {
    client: Client<'static, 8>,
    io: TcpTransport,
    start: Instant,
}

impl Peer {
    fn connect(hub: &Broker, client_id: &str) -> Self {
        let id: &'static str = Box::leak(client_id.to_string().into_boxed_str());
        let rx: &'static mut [u8] = Box::leak(vec![0u8; 4096].into_boxed_slice());
        let tx: &'static mut [u8] = Box::leak(vec![0u8; 8192].into_boxed_slice());
        let config = ConfigBuilder::new(id).unwrap().keep_alive(30).build();
        let mut client = Client::new(config, Buffers::new(rx, tx));
        let mut io = TcpTransport::connect(hub.addr()).expect("connect to the hub");
        io.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("read timeout");
        let start = Instant::now();
        client.connect(&mut io, 0).expect("CONNACK");
        Self { client, io, start }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The next event within `timeout`, if any.
    fn next_within(&mut self, timeout: Duration) -> Option<Seen> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let now = self.now();
            if let Some(e) = self.client.poll(&mut self.io, now).expect("poll") {
                return Some(seen(e));
            }
        }
        None
    }

    fn next(&mut self) -> Seen {
        self.next_within(RECV_TIMEOUT)
            .expect("an event within the receive timeout")
    }

    fn subscribe(&mut self, filter: &str) {
        let now = self.now();
        let id = self
            .client
            .subscribe(&mut self.io, &[(filter, QoS::AtLeastOnce)], now)
            .expect("subscribe");
        self.await_subscribed(id);
    }

    fn subscribe_checks(&mut self) {
        let now = self.now();
        let id = self
            .client
            .subscribe_tx_checks(&mut self.io, now)
            .expect("subscribe to checks");
        self.await_subscribed(id);
    }

    fn await_subscribed(&mut self, id: u16) {
        let deadline = Instant::now() + RECV_TIMEOUT;
        while Instant::now() < deadline {
            let now = self.now();
            if let Some(Event::Subscribed {
                packet_id,
                reason_codes,
            }) = self.client.poll(&mut self.io, now).expect("poll")
                && packet_id == id
            {
                assert!(
                    reason_codes.iter().all(|r| !r.is_error()),
                    "subscription refused"
                );
                return;
            }
        }
        panic!("no SUBACK");
    }

    /// Publishes half messages and returns each PUBACK's reason, in order.
    fn halves(&mut self, id: &TxId, topic: &str, payloads: &[&[u8]]) -> Vec<ReasonCode> {
        let mut ids = Vec::new();
        for p in payloads {
            let now = self.now();
            ids.push(
                self.client
                    .publish_in_tx(
                        &mut self.io,
                        id,
                        topic,
                        p,
                        QoS::AtLeastOnce,
                        &[("site", "north")],
                        now,
                    )
                    .expect("half message"),
            );
        }
        let mut reasons = vec![None; ids.len()];
        while reasons.iter().any(Option::is_none) {
            match self.next() {
                Seen::Published(packet_id, reason) => {
                    let i = ids.iter().position(|&p| p == packet_id).expect("our id");
                    reasons[i] = Some(reason);
                }
                other => panic!("expected a PUBACK, got {other:?}"),
            }
        }
        reasons.into_iter().map(Option::unwrap).collect()
    }

    /// Commits or rolls back and returns the hub's answer.
    fn finish(&mut self, id: &TxId, action: TxAction) -> TxOutcome {
        let now = self.now();
        let packet_id = match action {
            TxAction::Commit => self.client.commit(&mut self.io, id, now),
            TxAction::Rollback => self.client.rollback(&mut self.io, id, now),
        }
        .expect("send the outcome");
        loop {
            match self.next() {
                Seen::Resolved(r) if r.packet_id == packet_id => {
                    assert_eq!((r.id, r.action), (*id, action));
                    return r.outcome;
                }
                Seen::Check(_) => {}
                other => panic!("expected the outcome's PUBACK, got {other:?}"),
            }
        }
    }

    /// The next application message.
    fn message(&mut self) -> Delivered {
        match self.next() {
            Seen::Message(m) => m,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    fn assert_quiet(&mut self) {
        if let Some(e) = self.next_within(QUIET) {
            panic!("nothing should arrive, got {e:?}");
        }
    }
}

#[test]
fn hub_delivers_a_committed_transaction_whole_in_order_without_its_marker() {
    let hub = start_hub();
    let mut sub = Peer::connect(&hub, "tx-sub");
    sub.subscribe("meters/#");
    let mut dev = Peer::connect(&hub, "tx-dev");
    let id = TxSequence::new("boot1", 0).unwrap().begin();
    let payloads: [&[u8]; 4] = [b"r0", b"r1", b"r2", b"r3"];
    let reasons = dev.halves(&id, "meters/4/reading", &payloads);
    assert!(reasons.iter().all(|r| !r.is_error()), "{reasons:?}");
    // Stored, acknowledged, not delivered.
    sub.assert_quiet();

    assert_eq!(dev.finish(&id, TxAction::Commit), TxOutcome::Applied);
    for p in payloads {
        let m = sub.message();
        assert_eq!(m.topic, "meters/4/reading");
        assert_eq!(m.payload, p, "publish order");
        assert_eq!(
            m.properties,
            vec![("site".to_string(), "north".to_string())],
            "tern-tx is removed, the caller's properties stay"
        );
    }
    sub.assert_quiet();
    // A second commit (a repeated answer) changes nothing.
    assert_eq!(
        dev.finish(&id, TxAction::Commit),
        TxOutcome::UnknownTransaction
    );
    sub.assert_quiet();
}

#[test]
fn hub_never_delivers_a_rolled_back_transaction() {
    let hub = start_hub();
    let mut sub = Peer::connect(&hub, "rb-sub");
    sub.subscribe("meters/#");
    let mut dev = Peer::connect(&hub, "rb-dev");
    let id = TxId::new("rb-1").unwrap();
    let reasons = dev.halves(&id, "meters/5/reading", &[b"x0", b"x1"]);
    assert!(reasons.iter().all(|r| !r.is_error()), "{reasons:?}");
    assert_eq!(dev.finish(&id, TxAction::Rollback), TxOutcome::Applied);
    // A plain publish after the rollback is the first thing the subscriber sees.
    let now = dev.now();
    let plain = dev
        .client
        .publish(
            &mut dev.io,
            "meters/5/reading",
            b"after",
            QoS::AtLeastOnce,
            &[],
            now,
        )
        .unwrap();
    assert_eq!(dev.next(), Seen::Published(plain, ReasonCode::Success));
    assert_eq!(sub.message().payload, b"after");
    sub.assert_quiet();
    assert_eq!(
        dev.finish(&id, TxAction::Commit),
        TxOutcome::UnknownTransaction,
        "a rolled-back transaction cannot be committed"
    );
    sub.assert_quiet();
}

#[test]
fn hub_refuses_other_clients_transactions_and_oversized_ones() {
    let hub = start_hub();
    let mut sub = Peer::connect(&hub, "q-sub");
    sub.subscribe("q/#");
    let mut owner = Peer::connect(&hub, "q-owner");
    let mut other = Peer::connect(&hub, "q-other");
    let id = TxId::new("shared-1").unwrap();
    owner.halves(&id, "q/1", &[b"a"]);
    assert_eq!(
        other.finish(&id, TxAction::Commit),
        TxOutcome::NotAuthorized
    );
    assert_eq!(
        other.finish(&id, TxAction::Rollback),
        TxOutcome::NotAuthorized
    );
    sub.assert_quiet();
    assert_eq!(owner.finish(&id, TxAction::Commit), TxOutcome::Applied);
    assert_eq!(sub.message().payload, b"a");

    // `max_messages = 5`: the sixth half message is refused and not part of it.
    let big = TxId::new("big-1").unwrap();
    let reasons = owner.halves(&big, "q/2", &[b"0", b"1", b"2", b"3", b"4", b"5"]);
    let outcomes: Vec<_> = reasons.into_iter().map(TxOutcome::from).collect();
    assert_eq!(&outcomes[..5], &[TxOutcome::Applied; 5]);
    assert_eq!(outcomes[5], TxOutcome::QuotaExceeded);
    assert_eq!(owner.finish(&big, TxAction::Rollback), TxOutcome::Applied);
    sub.assert_quiet();
}

#[test]
fn hub_asks_about_an_open_transaction_and_takes_the_answer() {
    let hub = start_hub();
    let mut sub = Peer::connect(&hub, "c-sub");
    sub.subscribe("c/#");
    let mut dev = Peer::connect(&hub, "c-dev");
    dev.subscribe_checks();
    let id = TxId::new("late-1").unwrap();
    dev.halves(&id, "c/1", &[b"kept"]);
    // No outcome: after `check_after` the hub asks.
    let asked = match dev.next() {
        Seen::Check(asked) => asked,
        other => panic!("expected a check request, got {other:?}"),
    };
    assert_eq!(asked, id);
    sub.assert_quiet();
    assert_eq!(dev.finish(&asked, TxAction::Commit), TxOutcome::Applied);
    assert_eq!(sub.message().payload, b"kept");
}

#[test]
fn hub_applies_its_policy_when_checks_go_unanswered() {
    let hub = start_hub();
    let mut sub = Peer::connect(&hub, "u-sub");
    sub.subscribe("u/#");
    let mut dev = Peer::connect(&hub, "u-dev");
    dev.subscribe_checks();
    let id = TxId::new("ignored-1").unwrap();
    dev.halves(&id, "u/1", &[b"dropped"]);
    // `max_checks = 3` checks, then `on_unresolved = rollback` (the default).
    let mut checks = 0;
    let deadline = Instant::now() + RECV_TIMEOUT;
    while Instant::now() < deadline {
        match dev.next_within(Duration::from_millis(200)) {
            Some(Seen::Check(asked)) => {
                assert_eq!(asked, id);
                checks += 1;
            }
            Some(other) => panic!("unexpected {other:?}"),
            None if checks >= 3 => break,
            None => {}
        }
    }
    assert_eq!(checks, 3, "max_checks requests");
    // Give the policy one check interval, then the transaction is gone.
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        dev.finish(&id, TxAction::Commit),
        TxOutcome::UnknownTransaction
    );
    sub.assert_quiet();
}
