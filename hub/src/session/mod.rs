//! One MQTT connection: reads and decodes packets, drives the [`state`] machine, drains the
//! session's mailbox into the in-flight window, enforces keep alive, and writes batched
//! replies.
//!
//! [`serve`] runs one `tokio::select!` loop per connection over: socket readable, socket
//! writable (only while output is pending), mailbox notified, keep-alive deadline, takeover
//! and shutdown. Output is encoded into one `BytesMut` and written in as few syscalls as the
//! socket allows, so a burst of PUBACKs or fan-out PUBLISHes costs one write.
//!
//! Errors end the connection and are logged once here, with the peer and the reason.
//!
//! # Acknowledgements and the store
//!
//! Every complete frame in the read buffer is handled before anything is written, so the
//! PUBACKs/PUBRECs of one read batch leave in one write after the whole batch was handed to
//! [`Broker::publish_with`]. A durable store commits that batch as one group at that point
//! (between `process_input` and the write), which keeps "acknowledged means stored" without
//! one fsync per message.

pub mod queue;
pub mod state;
pub mod wire;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf as _, Bytes, BytesMut};
use tern_mqtt::ProtocolVersion;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tracing::{Span, debug, info, warn};

use crate::broker::{Attached, Broker, ConnectionRef, Detach, Mailbox, PublishScratch, Will};
use crate::message::{ClientId, Message};
use crate::router::SubscriptionOptions;
use crate::session::state::{
    ConnAck, Connection, Limits, Outbound, PublishHeader, Violation, negotiate, reason,
};
use crate::session::wire::{Inbound, InboundPublish, WireError};

/// Stop reading from a peer while this much output to it is unwritten.
const MAX_UNREAD_OUTPUT: usize = 4 * MAX_PENDING_OUTPUT;
/// Payloads up to this size are copied out of the read buffer; larger ones share it.
/// A shared slice pins the whole read chunk it came from for as long as the message lives
/// (offline queues, retained store), which for small messages costs far more memory than
/// the copy costs time.
const SHARE_PAYLOAD_ABOVE: usize = 512;
/// Packet type nibble of CONNECT.
const CONNECT_PACKET_TYPE: u8 = 1;
/// Initial read buffer; grows up to the largest packet accepted.
const READ_BUFFER: usize = 8 * 1024;
/// Stop pulling from the mailbox while this much output is waiting for the socket: the
/// backlog stays in the bounded session queue, where the overflow policy applies.
const MAX_PENDING_OUTPUT: usize = 256 * 1024;

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Socket error.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The peer sent bytes that are not a valid packet.
    #[error("malformed packet: {0}")]
    Malformed(tern_mqtt::Error),
    /// The peer broke a protocol rule.
    #[error("protocol violation: {0}")]
    Violation(Violation),
    /// The peer was silent for 1.5 × keep alive.
    #[error("keep alive timeout")]
    KeepAliveTimeout,
    /// No CONNECT within `connect_timeout`.
    #[error("no CONNECT within the connect timeout")]
    ConnectTimeout,
    /// The peer closed the connection without DISCONNECT.
    #[error("connection closed by peer without DISCONNECT")]
    ClosedByPeer,
    /// An outbound packet could not be encoded (a bug, never peer input).
    #[error("cannot encode packet: {0}")]
    Encode(#[from] tern_mqtt::EncodeError),
}

/// How the main loop ended.
#[derive(Debug)]
enum End {
    /// DISCONNECT from the client; `with_will` for any v5 reason other than 0x00.
    Disconnect { with_will: bool },
    /// Another connection took over the session.
    TakenOver,
    /// The hub is shutting down.
    Shutdown,
    /// Abnormal end: the will is published.
    Error(SessionError),
}

/// Serves one accepted connection until it closes.
pub async fn serve(mut stream: TcpStream, peer: SocketAddr, broker: Arc<Broker>) {
    match serve_inner(&mut stream, peer, &broker).await {
        Ok(()) => debug!("connection closed"),
        Err(SessionError::ClosedByPeer) => debug!("closed before CONNECT"),
        Err(err) => warn!(%peer, reason = %err, "connection refused"),
    }
    // Best effort: the peer may already be gone.
    let _ = stream.shutdown().await;
}

/// The connection's socket halves and buffers.
struct Io<'a> {
    reader: ReadHalf<'a>,
    writer: WriteHalf<'a>,
    read_buf: BytesMut,
    write_buf: BytesMut,
}

impl Io<'_> {
    async fn flush(&mut self, broker: &Broker) -> Result<(), SessionError> {
        if !self.write_buf.is_empty() {
            let len = self.write_buf.len();
            self.writer.write_all(&self.write_buf).await?;
            broker.metrics().bytes_sent.add_len(len);
            self.write_buf.clear();
        }
        Ok(())
    }
}

async fn serve_inner(
    stream: &mut TcpStream,
    peer: SocketAddr,
    broker: &Arc<Broker>,
) -> Result<(), SessionError> {
    let config = broker.config();
    let limits = Limits {
        receive_maximum: config.session.receive_maximum,
        max_inflight: config.session.max_inflight,
        topic_alias_maximum: config.session.topic_alias_maximum,
        max_packet_size: config.max_packet_size(),
        server_keep_alive: u16::try_from(config.session.server_keep_alive.0.as_secs())
            .unwrap_or(u16::MAX),
        max_session_expiry: config.max_session_expiry_secs(),
    };
    let (reader, writer) = stream.split();
    let mut io = Io {
        reader,
        writer,
        read_buf: BytesMut::with_capacity(READ_BUFFER),
        write_buf: BytesMut::with_capacity(READ_BUFFER),
    };

    // CONNECT, within connect_timeout.
    let connect_timeout = config.session.connect_timeout.0;
    let first = tokio::select! {
        () = broker.shutdown().triggered() => return Ok(()),
        first = tokio::time::timeout(connect_timeout, read_frame(&mut io, broker, limits.max_packet_size)) => first,
    };
    let frame = match first {
        Err(_) => return Err(SessionError::ConnectTimeout),
        Ok(Err(SessionError::Malformed(err))) => {
            broker.metrics().malformed.inc();
            return Err(SessionError::Malformed(err));
        }
        Ok(other) => other?,
    };
    if frame.first().map(|b| b >> 4) != Some(CONNECT_PACKET_TYPE) {
        // MQTT 5.0 §3.1: the first packet must be CONNECT; close without a reply.
        broker.metrics().malformed.inc();
        return Err(SessionError::Violation(Violation {
            code: reason::PROTOCOL_ERROR,
            text: "first packet is not CONNECT",
        }));
    }
    let connect = match wire::decode(&frame, None, limits.max_packet_size) {
        Ok(Inbound::Connect(connect)) => connect,
        Ok(_) => {
            broker.metrics().malformed.inc();
            return Err(SessionError::Violation(Violation {
                code: reason::PROTOCOL_ERROR,
                text: "first packet is not CONNECT",
            }));
        }
        Err(WireError::Decode(err)) => {
            broker.metrics().malformed.inc();
            if let tern_mqtt::Error::UnsupportedProtocolVersion(level) = err {
                io.write_buf
                    .extend_from_slice(&wire::unsupported_version_connack(level));
                io.flush(broker).await?;
            } else if wire::connect_level(&frame) == Some(ProtocolVersion::V5 as u8) {
                // MQTT 5.0 §3.2.2.2: tell a v5 client why its CONNECT was refused.
                let code = disconnect_code(&err);
                let refusal = state::ConnectRefusal {
                    code,
                    text: reason_text(code),
                };
                let packet = Outbound::ConnAck(ConnAck::refusal(refusal));
                // A code CONNACK cannot carry leaves only the close.
                if wire::encode(&packet, ProtocolVersion::V5, &mut io.write_buf).is_ok() {
                    io.flush(broker).await?;
                }
            }
            return Err(SessionError::Malformed(err));
        }
        Err(WireError::AuthenticationMethod) => {
            let refusal = state::ConnectRefusal {
                code: reason::BAD_AUTHENTICATION_METHOD,
                text: "enhanced authentication is not supported",
            };
            let packet = Outbound::ConnAck(ConnAck::refusal(refusal));
            wire::encode(&packet, ProtocolVersion::V5, &mut io.write_buf)?;
            io.flush(broker).await?;
            return Err(SessionError::Violation(Violation {
                code: refusal.code,
                text: refusal.text,
            }));
        }
        Err(WireError::Unsupported(text)) => {
            broker.metrics().malformed.inc();
            return Err(SessionError::Violation(Violation {
                code: reason::PROTOCOL_ERROR,
                text,
            }));
        }
    };
    broker.metrics().packets_received.inc();
    let version = connect.request.version;
    let params = match negotiate(&connect.request, &limits, || broker.assign_client_id()) {
        Ok(params) => params,
        Err(refusal) => {
            wire::encode(
                &Outbound::ConnAck(ConnAck::refusal(refusal)),
                version,
                &mut io.write_buf,
            )?;
            io.flush(broker).await?;
            return Err(SessionError::Violation(Violation {
                code: refusal.code,
                text: refusal.text,
            }));
        }
    };
    let client_id = Arc::clone(&params.client_id);
    Span::current().record("client_id", &*client_id);
    let will = connect.will.map(|w| Will {
        message: Message {
            publisher: Arc::clone(&client_id),
            ..w.message
        },
        delay_secs: w.delay_secs,
        expiry_secs: w.expiry_secs,
    });
    let Attached {
        mailbox,
        state: session_state,
        session_present,
        connection,
    } = broker.attach(&client_id, params.clean_start).await;
    let mut conn = Connection::new(params, limits, session_state);
    broker.metrics().clients_connected.inc();
    info!(
        ?version,
        keep_alive = conn.params.keep_alive,
        session_present,
        "client connected"
    );

    let mut session = Session {
        broker,
        conn: &mut conn,
        mailbox: &mailbox,
        client_id: &client_id,
        will,
        version,
        scratch: PublishScratch::default(),
    };
    session.emit(
        &Outbound::ConnAck(session.conn.connack(session_present)),
        &mut io.write_buf,
    )?;
    for packet in session.conn.resend_inflight(Instant::now()) {
        session.emit(&packet, &mut io.write_buf)?;
    }
    let end = session.run(&mut io, &connection).await;
    let will = session.will.take();

    // Say goodbye where MQTT 5 has words for it, then park or end the session.
    let goodbye = match &end {
        End::TakenOver => Some((reason::SESSION_TAKEN_OVER, "session taken over")),
        End::Shutdown => Some((reason::SERVER_SHUTTING_DOWN, "server shutting down")),
        End::Error(SessionError::KeepAliveTimeout) => {
            Some((reason::KEEP_ALIVE_TIMEOUT, "keep alive timeout"))
        }
        End::Error(SessionError::Malformed(err)) => {
            let code = disconnect_code(err);
            Some((code, reason_text(code)))
        }
        End::Error(SessionError::Violation(v)) => Some((v.code, v.text)),
        _ => None,
    };
    if let Some((code, text)) = goodbye {
        if version == ProtocolVersion::V5
            && wire::encode(
                &Outbound::Disconnect(code, text),
                version,
                &mut io.write_buf,
            )
            .is_ok()
        {
            broker.metrics().packets_sent.inc();
        }
        // Best effort: the peer may be gone or not reading.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), io.flush(broker)).await;
    }
    let publish_will = match &end {
        End::Disconnect { with_will } => *with_will,
        End::Shutdown => false,
        End::TakenOver | End::Error(_) => true,
    };
    match &end {
        End::Error(err @ (SessionError::Malformed(_) | SessionError::Violation(_))) => {
            broker.metrics().malformed.inc();
            warn!(%peer, reason = %err, "disconnecting client");
        }
        End::Error(SessionError::KeepAliveTimeout) => {
            broker.metrics().keepalive_timeouts.inc();
            warn!(%peer, "keep alive timeout");
        }
        End::Error(err) => info!(reason = %err, "connection lost"),
        other => info!(end = ?other, "client disconnected"),
    }
    broker.metrics().clients_connected.dec();
    let session_expiry = conn.params.session_expiry;
    broker.detach(
        &client_id,
        &connection,
        Detach {
            state: conn.into_session(),
            session_expiry,
            will: if publish_will { will } else { None },
        },
    );
    Ok(())
}

/// Reads until one complete frame is buffered and returns it (split off the read buffer).
async fn read_frame(
    io: &mut Io<'_>,
    broker: &Broker,
    max_packet_size: u32,
) -> Result<Bytes, SessionError> {
    loop {
        if let Some(frame) = next_frame(&mut io.read_buf, max_packet_size)? {
            return Ok(frame);
        }
        let n = io.reader.read_buf(&mut io.read_buf).await?;
        if n == 0 {
            return Err(SessionError::ClosedByPeer);
        }
        broker.metrics().bytes_received.add_len(n);
    }
}

/// Splits the next complete frame off `buf`, `None` if more bytes are needed.
fn next_frame(buf: &mut BytesMut, max_packet_size: u32) -> Result<Option<Bytes>, SessionError> {
    match tern_mqtt::frame_len(buf, max_packet_size) {
        Ok(len) => Ok(Some(buf.split_to(len).freeze())),
        Err(err) if err.is_incomplete() => {
            if let tern_mqtt::Error::Incomplete { needed: Some(n) } = err {
                buf.reserve(n);
            }
            Ok(None)
        }
        Err(err) => Err(SessionError::Malformed(err)),
    }
}

/// The running part of a connection after CONNACK.
struct Session<'a> {
    broker: &'a Arc<Broker>,
    conn: &'a mut Connection,
    mailbox: &'a Mailbox,
    client_id: &'a ClientId,
    will: Option<Will>,
    version: ProtocolVersion,
    /// Reused fan-out buffer.
    scratch: PublishScratch,
}

impl Session<'_> {
    async fn run(&mut self, io: &mut Io<'_>, connection: &ConnectionRef) -> End {
        let keep_alive = self.conn.keep_alive_deadline();
        let mut last_heard = tokio::time::Instant::now();
        // Packets pipelined behind CONNECT are already buffered.
        match self.process_input(io) {
            Ok(None) => {}
            Ok(Some(end)) => return end,
            Err(err) => return End::Error(err),
        }
        loop {
            if io.write_buf.len() < MAX_PENDING_OUTPUT
                && let Err(err) = self.pump_mailbox(&mut io.write_buf)
            {
                return End::Error(err);
            }
            // Keep room for a full read; frames already split off stay with their messages.
            io.read_buf.reserve(READ_BUFFER);
            let deadline = keep_alive.map(|k| last_heard + k);
            let writing = !io.write_buf.is_empty();
            // A peer that sends but does not read its acknowledgements stops being read
            // once its unread output reaches the bound (its keep alive then runs out).
            let reading = io.write_buf.len() < MAX_UNREAD_OUTPUT;
            tokio::select! {
                biased;
                () = connection.kick.cancelled() => return End::TakenOver,
                () = self.broker.shutdown().triggered() => return End::Shutdown,
                written = io.writer.write(&io.write_buf), if writing => match written {
                    Ok(0) => return End::Error(SessionError::ClosedByPeer),
                    Ok(n) => {
                        self.broker.metrics().bytes_sent.add_len(n);
                        io.write_buf.advance(n);
                    }
                    Err(err) => return End::Error(err.into()),
                },
                read = io.reader.read_buf(&mut io.read_buf), if reading => match read {
                    Ok(0) => return End::Error(SessionError::ClosedByPeer),
                    Ok(n) => {
                        self.broker.metrics().bytes_received.add_len(n);
                        last_heard = tokio::time::Instant::now();
                        match self.process_input(io) {
                            Ok(None) => {}
                            Ok(Some(end)) => return end,
                            Err(err) => return End::Error(err),
                        }
                    }
                    Err(err) => return End::Error(err.into()),
                },
                () = self.mailbox.notify.notified() => {}
                () = sleep_until(deadline) => return End::Error(SessionError::KeepAliveTimeout),
            }
        }
    }

    /// Decodes and handles every complete frame in the read buffer.
    fn process_input(&mut self, io: &mut Io<'_>) -> Result<Option<End>, SessionError> {
        let limit = self.broker.config().max_packet_size();
        while let Some(frame) = next_frame(&mut io.read_buf, limit)? {
            self.broker.metrics().packets_received.inc();
            let packet = match wire::decode(&frame, Some(self.version), limit) {
                Ok(packet) => packet,
                Err(WireError::Decode(err)) => return Err(SessionError::Malformed(err)),
                Err(WireError::AuthenticationMethod) => {
                    return Err(SessionError::Violation(self.conn.on_connect()));
                }
                Err(WireError::Unsupported(text)) => {
                    return Err(SessionError::Violation(Violation {
                        code: reason::PROTOCOL_ERROR,
                        text,
                    }));
                }
            };
            if let Some(end) = self.handle(packet, &frame, &mut io.write_buf)? {
                return Ok(Some(end));
            }
        }
        Ok(None)
    }

    fn handle(
        &mut self,
        packet: Inbound<'_>,
        frame: &Bytes,
        out: &mut BytesMut,
    ) -> Result<Option<End>, SessionError> {
        match packet {
            Inbound::Connect(_) => return Err(SessionError::Violation(self.conn.on_connect())),
            Inbound::Publish(publish) => self.on_publish(publish, frame, out)?,
            Inbound::PubAck(id) => self.conn.on_puback(id),
            Inbound::PubRec(id, code) => {
                if let Some(reply) = self.conn.on_pubrec(id, code) {
                    self.emit(&reply, out)?;
                }
            }
            Inbound::PubRel(id) => {
                let reply = self.conn.on_pubrel(id);
                self.emit(&reply, out)?;
            }
            Inbound::PubComp(id) => self.conn.on_pubcomp(id),
            Inbound::Subscribe(subscribe) => {
                let mut codes = Vec::with_capacity(subscribe.filters.len());
                for (filter, options) in subscribe.filters {
                    let options = SubscriptionOptions {
                        identifier: subscribe.identifier,
                        ..options
                    };
                    let code =
                        match self
                            .broker
                            .subscribe(self.client_id, self.mailbox, filter, options)
                        {
                            Ok(_) => granted_code(options.qos),
                            Err(err) if err.is_protocol_error() => {
                                return Err(SessionError::Violation(Violation {
                                    code: reason::PROTOCOL_ERROR,
                                    text: "no local on a shared subscription",
                                }));
                            }
                            Err(_) => reason::TOPIC_FILTER_INVALID,
                        };
                    codes.push(code);
                }
                self.emit(&Outbound::SubAck(subscribe.packet_id, codes), out)?;
            }
            Inbound::Unsubscribe { packet_id, filters } => {
                let codes = filters
                    .iter()
                    .map(|filter| {
                        if self.broker.unsubscribe(self.client_id, filter) {
                            reason::SUCCESS
                        } else {
                            reason::NO_SUBSCRIPTION_EXISTED
                        }
                    })
                    .collect();
                self.emit(&Outbound::UnsubAck(packet_id, codes), out)?;
            }
            Inbound::PingReq => self.emit(&Outbound::PingResp, out)?,
            Inbound::Disconnect {
                code,
                session_expiry,
            } => {
                self.conn
                    .on_disconnect_expiry(session_expiry)
                    .map_err(SessionError::Violation)?;
                // Only Normal disconnection (0x00) discards the will (MQTT 5.0 §3.14.4):
                // 0x04 asks for it, and an error code means the client is failing.
                return Ok(Some(End::Disconnect {
                    with_will: code != reason::SUCCESS,
                }));
            }
        }
        Ok(None)
    }

    fn on_publish(
        &mut self,
        publish: InboundPublish<'_>,
        frame: &Bytes,
        out: &mut BytesMut,
    ) -> Result<(), SessionError> {
        self.broker.metrics().publishes_received.inc();
        let verdict = self
            .conn
            .on_publish(PublishHeader {
                topic: publish.topic,
                qos: publish.qos,
                packet_id: publish.packet_id,
                topic_alias: publish.topic_alias,
            })
            .map_err(SessionError::Violation)?;
        if verdict.route {
            let message = Message {
                topic: verdict.topic,
                payload: payload_bytes(frame, publish.payload),
                qos: publish.qos,
                retain: publish.retain,
                properties: publish.properties,
                expiry: publish
                    .message_expiry
                    .map(|interval_secs| crate::message::Expiry {
                        received_at: Instant::now(),
                        interval_secs,
                    }),
                publisher: Arc::clone(self.client_id),
            };
            // The durable store commits inside `publish`; the ack below follows it.
            self.broker.publish_with(message, &mut self.scratch);
        }
        if let Some(ack) = verdict.ack {
            self.emit(&ack, out)?;
        }
        Ok(())
    }

    /// Moves queued messages into the in-flight window and encodes them.
    fn pump_mailbox(&mut self, out: &mut BytesMut) -> Result<(), SessionError> {
        let now = Instant::now();
        let mut expired = 0;
        loop {
            if out.len() >= MAX_PENDING_OUTPUT {
                break;
            }
            let item = {
                let mut queue = self.mailbox.queue();
                if !self.conn.can_send_qos() {
                    // Window full: QoS 0 must not overtake QoS 1/2 (order per topic), so wait.
                    break;
                }
                match queue.pop(now, &mut expired) {
                    Some(item) => item,
                    None => break,
                }
            };
            let Some(publish) = self.conn.send(item, now) else {
                expired += 1;
                continue;
            };
            let start = out.len();
            let packet = Outbound::Publish(publish);
            wire::encode(&packet, self.version, out)?;
            let size = out.len() - start;
            if u32::try_from(size).unwrap_or(u32::MAX) > self.conn.params.client_max_packet_size {
                // MQTT 5.0 §3.1.2.11.4: never send a packet bigger than the client accepts.
                out.truncate(start);
                if let Outbound::Publish(dropped) = &packet {
                    self.conn.abandon(dropped);
                }
                self.broker.metrics().messages_dropped.inc();
                debug!(
                    size,
                    "message larger than the client's maximum packet size dropped"
                );
                continue;
            }
            self.broker.metrics().packets_sent.inc();
            self.broker.metrics().publishes_sent.inc();
        }
        if expired > 0 {
            self.broker.metrics().messages_dropped.add(expired);
        }
        Ok(())
    }

    fn emit(&self, packet: &Outbound, out: &mut BytesMut) -> Result<(), SessionError> {
        wire::encode(packet, self.version, out)?;
        self.broker.metrics().packets_sent.inc();
        Ok(())
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// SUBACK reason code granting `qos`.
fn granted_code(qos: tern_mqtt::QoS) -> u8 {
    match qos {
        tern_mqtt::QoS::AtMostOnce => reason::SUCCESS,
        tern_mqtt::QoS::AtLeastOnce => reason::GRANTED_QOS_1,
        tern_mqtt::QoS::ExactlyOnce => reason::GRANTED_QOS_2,
    }
}

/// DISCONNECT reason code for a decode error: the codec's, except that an invalid Topic Alias
/// value gets the specific 0x94 (MQTT 5.0 §3.3.2.3.4).
fn disconnect_code(err: &tern_mqtt::Error) -> u8 {
    match err {
        tern_mqtt::Error::InvalidPropertyValue(tern_mqtt::PropertyId::TopicAlias) => {
            reason::TOPIC_ALIAS_INVALID
        }
        other => other.reason_code().to_u8(),
    }
}

/// Reason String for a DISCONNECT caused by a decode error.
fn reason_text(code: u8) -> &'static str {
    match code {
        reason::PACKET_TOO_LARGE => "packet too large",
        reason::PROTOCOL_ERROR => "protocol error",
        reason::TOPIC_NAME_INVALID => "topic name invalid",
        reason::TOPIC_FILTER_INVALID => "topic filter invalid",
        reason::TOPIC_ALIAS_INVALID => "topic alias invalid",
        reason::UNSUPPORTED_PROTOCOL_VERSION => "unsupported protocol version",
        _ => "malformed packet",
    }
}

/// The payload as `Bytes`: a zero-copy view of `frame` for large payloads, a copy for small
/// ones (see [`SHARE_PAYLOAD_ABOVE`]).
fn payload_bytes(frame: &Bytes, payload: &[u8]) -> Bytes {
    if payload.len() > SHARE_PAYLOAD_ABOVE {
        frame.slice_ref(payload)
    } else {
        Bytes::copy_from_slice(payload)
    }
}
