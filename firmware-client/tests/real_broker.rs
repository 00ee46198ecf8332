//! The client against real brokers over loopback TCP: the Tern hub (built and
//! started by the test) and mosquitto (`/usr/sbin/mosquitto` or `$PATH`;
//! `mosquitto_pub` publishes the QoS 2 messages).
//! Each test starts its own broker on a free port and stops it by PID at the
//! end. A missing broker fails the test with a message saying what to
//! install; nothing is skipped.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use embedded_io::{ErrorType, Read, Write};
use tern_client::{
    Buffers, Client, Config, ConfigBuilder, Error, Event, ProtocolVersion, QoS, TcpTransport,
};
use tern_testkit::{start_hub, start_mosquitto};

/// How long an expected packet may take.
const RECV_TIMEOUT: Duration = Duration::from_secs(5);
/// Socket read timeout: how often `poll` comes back on a quiet link.
const READ_TIMEOUT: Duration = Duration::from_millis(50);

/// TCP transport that records every write and can be told to fail writes.
struct Recording {
    tcp: TcpTransport,
    writes: Vec<Vec<u8>>,
    fail_writes: bool,
}

impl Recording {
    fn connect(addr: SocketAddr) -> Self {
        let tcp = TcpTransport::connect(addr).expect("connect to the broker");
        tcp.set_read_timeout(Some(READ_TIMEOUT))
            .expect("read timeout");
        Self {
            tcp,
            writes: Vec::new(),
            fail_writes: false,
        }
    }

    fn pings(&self) -> usize {
        self.writes
            .iter()
            .filter(|w| w.as_slice() == [0xC0, 0x00])
            .count()
    }
}

impl ErrorType for Recording {
    type Error = std::io::Error;
}

impl Read for Recording {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, std::io::Error> {
        self.tcp.read(buf)
    }
}

impl Write for Recording {
    fn write(&mut self, buf: &[u8]) -> Result<usize, std::io::Error> {
        if self.fail_writes {
            return Err(std::io::ErrorKind::BrokenPipe.into());
        }
        let n = self.tcp.write(buf)?;
        self.writes.push(buf[..n].to_vec());
        Ok(n)
    }

    fn flush(&mut self) -> Result<(), std::io::Error> {
        self.tcp.flush()
    }
}

/// Milliseconds since the first call: the application clock.
fn now() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_millis()).expect("test clock fits u64")
}

/// Polls until `done` accepts an event, failing after [`RECV_TIMEOUT`].
fn poll_until<const N: usize>(
    client: &mut Client<'_, N>,
    io: &mut Recording,
    what: &str,
    mut done: impl FnMut(&Event<'_>) -> bool,
) {
    let deadline = Instant::now() + RECV_TIMEOUT;
    while Instant::now() < deadline {
        match client.poll(io, now()) {
            Ok(Some(event)) if done(&event) => return,
            Ok(_) => {}
            Err(e) => panic!("error while waiting for {what}: {e:?}"),
        }
    }
    panic!("timed out waiting for {what}");
}

fn config(client_id: &str, version: ProtocolVersion) -> Config<'_> {
    ConfigBuilder::new(client_id)
        .expect("client id")
        .protocol(version)
        .keep_alive(30)
        .build()
}

/// Connect, subscribe, publish QoS 0 and 1 to the subscription, receive both.
fn publish_and_receive(addr: SocketAddr, version: ProtocolVersion) {
    let (mut rx, mut tx) = ([0u8; 1024], [0u8; 1024]);
    let mut client: Client<'_, 4> =
        Client::new(config("fw-pubsub", version), Buffers::new(&mut rx, &mut tx));
    let mut io = Recording::connect(addr);
    let info = client.connect(&mut io, now()).expect("connect");
    assert!(!info.session_present);

    let sub = client
        .subscribe(&mut io, &[("fw/pubsub/#", QoS::AtLeastOnce)], now())
        .expect("subscribe");
    poll_until(&mut client, &mut io, "SUBACK", |e| {
        matches!(e, Event::Subscribed { packet_id, reason_codes }
            if *packet_id == sub && reason_codes.iter().all(|c| !c.is_error()))
    });

    client
        .publish(
            &mut io,
            "fw/pubsub/q0",
            b"zero",
            QoS::AtMostOnce,
            &[("site", "north")],
            now(),
        )
        .expect("publish QoS 0");
    let id = client
        .publish(
            &mut io,
            "fw/pubsub/q1",
            b"one",
            QoS::AtLeastOnce,
            &[("kind", "t")],
            now(),
        )
        .expect("publish QoS 1");
    assert_ne!(id, 0);

    let mut received = Vec::new();
    let mut acked = false;
    poll_until(&mut client, &mut io, "both messages and the PUBACK", |e| {
        match e {
            Event::Message(m) => {
                received.push((m.topic.to_string(), m.payload.to_vec(), m.qos));
                if version == ProtocolVersion::V5 {
                    let props: Vec<_> = m.properties.user_properties.iter().collect();
                    assert_eq!(props.len(), 1, "user property forwarded on {}", m.topic);
                }
            }
            Event::Published { packet_id, reason } => {
                assert_eq!(*packet_id, id);
                assert!(!reason.is_error());
                acked = true;
            }
            _ => {}
        }
        acked && received.len() == 2
    });
    received.sort();
    assert_eq!(
        received,
        vec![
            (
                "fw/pubsub/q0".to_string(),
                b"zero".to_vec(),
                QoS::AtMostOnce
            ),
            (
                "fw/pubsub/q1".to_string(),
                b"one".to_vec(),
                QoS::AtLeastOnce
            ),
        ]
    );
    assert_eq!(client.session().inflight_len(), 0);
    client.disconnect(&mut io).expect("disconnect");
}

/// Keep-alive of one second: PINGREQs go out on a quiet link, PINGRESPs come
/// back, and the connection still works afterwards.
fn keepalive(addr: SocketAddr) {
    let config = ConfigBuilder::new("fw-keepalive")
        .expect("client id")
        .keep_alive(1)
        .build();
    let (mut rx, mut tx) = ([0u8; 512], [0u8; 512]);
    let mut client: Client<'_, 2> = Client::new(config, Buffers::new(&mut rx, &mut tx));
    let mut io = Recording::connect(addr);
    client.connect(&mut io, now()).expect("connect");
    let quiet_until = Instant::now() + Duration::from_millis(3500);
    while Instant::now() < quiet_until {
        if let Err(e) = client.poll(&mut io, now()) {
            panic!("keep-alive failed: {e:?}");
        }
    }
    assert!(
        io.pings() >= 2,
        "expected at least 2 PINGREQs, sent {}",
        io.pings()
    );
    assert!(client.session().is_connected());
    let id = client
        .publish(
            &mut io,
            "fw/keepalive",
            b"still here",
            QoS::AtLeastOnce,
            &[],
            now(),
        )
        .expect("publish");
    poll_until(
        &mut client,
        &mut io,
        "PUBACK after pings",
        |e| matches!(e, Event::Published { packet_id, .. } if *packet_id == id),
    );
}

/// A QoS 1 publish whose write fails stays in flight; after reconnecting to
/// the persistent session it is resent with DUP and reaches a subscriber once.
fn resend_after_dropped_connection(addr: SocketAddr, version: ProtocolVersion) {
    // The subscriber that proves delivery.
    let (mut srx, mut stx) = ([0u8; 512], [0u8; 512]);
    let mut sub: Client<'_, 2> = Client::new(
        config("fw-resend-sub", version),
        Buffers::new(&mut srx, &mut stx),
    );
    let mut sio = Recording::connect(addr);
    sub.connect(&mut sio, now()).expect("subscriber connect");
    let sid = sub
        .subscribe(&mut sio, &[("fw/resend/#", QoS::AtLeastOnce)], now())
        .expect("subscribe");
    poll_until(
        &mut sub,
        &mut sio,
        "SUBACK",
        |e| matches!(e, Event::Subscribed { packet_id, .. } if *packet_id == sid),
    );

    let config = ConfigBuilder::new("fw-resend-pub")
        .expect("client id")
        .protocol(version)
        .clean_start(false)
        .session_expiry(300)
        .build();
    let (mut rx, mut tx) = ([0u8; 512], [0u8; 512]);
    let mut client: Client<'_, 4> = Client::new(config, Buffers::new(&mut rx, &mut tx));
    let mut io = Recording::connect(addr);
    client.connect(&mut io, now()).expect("first connect");
    // Establish the session before the drop: a round trip the broker has seen.
    let warmup = client
        .publish(
            &mut io,
            "fw/resend/warmup",
            b"w",
            QoS::AtLeastOnce,
            &[],
            now(),
        )
        .expect("warm-up publish");
    poll_until(
        &mut client,
        &mut io,
        "warm-up PUBACK",
        |e| matches!(e, Event::Published { packet_id, .. } if *packet_id == warmup),
    );

    io.fail_writes = true;
    let err = client
        .publish(
            &mut io,
            "fw/resend/lost",
            b"resent",
            QoS::AtLeastOnce,
            &[],
            now(),
        )
        .expect_err("the write fails");
    assert!(matches!(err, Error::Transport(_)), "{err:?}");
    assert_eq!(client.session().inflight_len(), 1);
    drop(io);

    let mut io = Recording::connect(addr);
    let info = client.connect(&mut io, now()).expect("reconnect");
    assert!(info.session_present, "the broker kept the session");
    assert_eq!(info.resent, 1);
    let resent = io
        .writes
        .iter()
        .find(|w| w.first().is_some_and(|b| b >> 4 == 3))
        .expect("the PUBLISH was resent");
    assert_eq!(resent[0] & 0x08, 0x08, "DUP is set on the resend");
    poll_until(&mut client, &mut io, "PUBACK of the resend", |e| {
        matches!(e, Event::Published { .. })
    });
    assert_eq!(client.session().inflight_len(), 0);

    let mut payloads = Vec::new();
    poll_until(
        &mut sub,
        &mut sio,
        "the resent message at the subscriber",
        |e| {
            if let Event::Message(m) = e {
                payloads.push((m.topic.to_string(), m.payload.to_vec()));
            }
            payloads.iter().any(|(t, _)| t == "fw/resend/lost")
        },
    );
    let lost: Vec<_> = payloads
        .iter()
        .filter(|(t, _)| t == "fw/resend/lost")
        .collect();
    assert_eq!(
        lost,
        vec![&("fw/resend/lost".to_string(), b"resent".to_vec())]
    );
}

#[test]
fn hub_publish_and_receive_v5() {
    let hub = start_hub();
    publish_and_receive(hub.addr(), ProtocolVersion::V5);
}

#[test]
fn hub_publish_and_receive_v311() {
    let hub = start_hub();
    publish_and_receive(hub.addr(), ProtocolVersion::V311);
}

#[test]
fn hub_keepalive() {
    let hub = start_hub();
    keepalive(hub.addr());
}

#[test]
fn hub_resend_after_dropped_connection() {
    let hub = start_hub();
    resend_after_dropped_connection(hub.addr(), ProtocolVersion::V5);
}

#[test]
fn hub_resend_after_dropped_connection_v311() {
    let hub = start_hub();
    resend_after_dropped_connection(hub.addr(), ProtocolVersion::V311);
}

#[test]
fn mosquitto_publish_and_receive_v5() {
    let broker = start_mosquitto();
    publish_and_receive(broker.addr(), ProtocolVersion::V5);
}

#[test]
fn mosquitto_publish_and_receive_v311() {
    let broker = start_mosquitto();
    publish_and_receive(broker.addr(), ProtocolVersion::V311);
}

#[test]
fn mosquitto_keepalive() {
    let broker = start_mosquitto();
    keepalive(broker.addr());
}

#[test]
fn mosquitto_resend_after_dropped_connection() {
    let broker = start_mosquitto();
    resend_after_dropped_connection(broker.addr(), ProtocolVersion::V5);
}

#[test]
fn mosquitto_resend_after_dropped_connection_v311() {
    let broker = start_mosquitto();
    resend_after_dropped_connection(broker.addr(), ProtocolVersion::V311);
}

/// The async driver over the same socket: a blocking TCP stream behind the
/// `embedded-io-async` traits, so every future is ready when first polled.
struct BlockingAsync(TcpTransport);

impl ErrorType for BlockingAsync {
    type Error = std::io::Error;
}

impl embedded_io_async::Read for BlockingAsync {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, std::io::Error> {
        self.0.read(buf)
    }
}

impl embedded_io_async::Write for BlockingAsync {
    async fn write(&mut self, buf: &[u8]) -> Result<usize, std::io::Error> {
        self.0.write(buf)
    }

    async fn flush(&mut self) -> Result<(), std::io::Error> {
        self.0.flush()
    }
}

/// Runs a future whose transport never returns `Pending`.
fn ready<F: Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(out) => out,
        std::task::Poll::Pending => panic!("blocking transport future was pending"),
    }
}

fn async_publish_and_receive(addr: SocketAddr) {
    let (mut rx, mut tx) = ([0u8; 512], [0u8; 512]);
    let mut client: tern_client::AsyncClient<'_, 2> = tern_client::AsyncClient::new(
        config("fw-async", ProtocolVersion::V5),
        Buffers::new(&mut rx, &mut tx),
    );
    let tcp = TcpTransport::connect(addr).expect("connect to the broker");
    tcp.set_read_timeout(Some(READ_TIMEOUT))
        .expect("read timeout");
    let mut io = BlockingAsync(tcp);
    ready(client.connect(&mut io, now())).expect("connect");
    let sub = ready(client.subscribe(&mut io, &[("fw/async/#", QoS::AtLeastOnce)], now()))
        .expect("subscribe");
    let id = ready(client.publish(&mut io, "fw/async/x", b"a", QoS::AtLeastOnce, &[], now()))
        .expect("publish");
    let (mut subscribed, mut acked, mut received) = (false, false, false);
    let deadline = Instant::now() + RECV_TIMEOUT;
    while !(subscribed && acked && received) {
        assert!(
            Instant::now() < deadline,
            "timed out: suback={subscribed} puback={acked} message={received}"
        );
        match ready(client.poll(&mut io, now())) {
            Ok(Some(Event::Subscribed { packet_id, .. })) => subscribed |= packet_id == sub,
            Ok(Some(Event::Published { packet_id, .. })) => acked |= packet_id == id,
            Ok(Some(Event::Message(m))) => received |= m.topic == "fw/async/x" && m.payload == b"a",
            Ok(_) => {}
            Err(e) => panic!("async poll failed: {e:?}"),
        }
    }
    ready(client.disconnect(&mut io)).expect("disconnect");
}

#[test]
fn hub_async_publish_and_receive() {
    let hub = start_hub();
    async_publish_and_receive(hub.addr());
}

#[test]
fn mosquitto_async_publish_and_receive() {
    let broker = start_mosquitto();
    async_publish_and_receive(broker.addr());
}

/// A QoS 2 message from another client (`mosquitto_pub -q 2`) is delivered
/// once, and the PUBREC / PUBREL / PUBCOMP exchange completes: the broker
/// would redeliver or disconnect otherwise, and the next round trip works.
#[cfg(feature = "qos2")]
fn receive_qos2(addr: SocketAddr) {
    let (mut rx, mut tx) = ([0u8; 512], [0u8; 512]);
    let mut client: Client<'_, 2> = Client::new(
        config("fw-qos2", ProtocolVersion::V5),
        Buffers::new(&mut rx, &mut tx),
    );
    let mut io = Recording::connect(addr);
    client.connect(&mut io, now()).expect("connect");
    let sub = client
        .subscribe(&mut io, &[("fw/qos2/#", QoS::ExactlyOnce)], now())
        .expect("subscribe");
    poll_until(
        &mut client,
        &mut io,
        "SUBACK",
        |e| matches!(e, Event::Subscribed { packet_id, .. } if *packet_id == sub),
    );
    let status = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &addr.port().to_string()])
        .args(["-V", "5", "-q", "2", "-t", "fw/qos2/x", "-m", "exactly"])
        .stdin(Stdio::null())
        .status()
        .expect("mosquitto_pub is not installed (apt-get install mosquitto-clients)");
    assert!(status.success(), "mosquitto_pub failed: {status}");
    let mut messages = 0;
    poll_until(&mut client, &mut io, "the QoS 2 message", |e| {
        if let Event::Message(m) = e {
            assert_eq!(
                (m.topic, m.payload, m.qos),
                ("fw/qos2/x", &b"exactly"[..], QoS::ExactlyOnce)
            );
            messages += 1;
        }
        messages > 0
    });
    // PUBREL arrives after PUBREC; answering it writes a PUBCOMP (0x70).
    let deadline = Instant::now() + RECV_TIMEOUT;
    while !io.writes.iter().any(|w| w.first() == Some(&0x70)) {
        assert!(Instant::now() < deadline, "no PUBCOMP sent");
        match client.poll(&mut io, now()) {
            Ok(Some(Event::Message(_))) => messages += 1,
            Ok(_) => {}
            Err(e) => panic!("error during the QoS 2 exchange: {e:?}"),
        }
    }
    assert_eq!(messages, 1, "delivered once");
    let id = client
        .publish(&mut io, "fw/other", b"", QoS::AtLeastOnce, &[], now())
        .expect("publish");
    poll_until(
        &mut client,
        &mut io,
        "PUBACK after the QoS 2 exchange",
        |e| matches!(e, Event::Published { packet_id, .. } if *packet_id == id),
    );
}

#[cfg(feature = "qos2")]
#[test]
fn hub_receive_qos2() {
    let hub = start_hub();
    receive_qos2(hub.addr());
}

#[cfg(feature = "qos2")]
#[test]
fn mosquitto_receive_qos2() {
    let broker = start_mosquitto();
    receive_qos2(broker.addr());
}
