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
//! Every complete frame in the read buffer is handled before anything is written. The
//! PUBLISHes of one read form one batch, handed to [`Broker::publish_batch`] as one store
//! submission (with the inbound QoS 2 ids of the batch); their PUBACKs/PUBRECs wait in
//! `gated`, tagged with the batch's tickets. The loop keeps reading (pipelining: the next
//! read's batch is submitted while the previous one commits) and releases the gated
//! acknowledgements, in order, when their tickets have resolved (a [`TicketWaiter`] wakes
//! the connection for its own oldest batch only, not for every commit of every connection)
//! and each ticket's outcome is a success. So a QoS 1/2 PUBLISH is acknowledged only once
//! it is durable, and the fsync is shared by everything that was waiting.
//!
//! - QoS 0 messages are appended in the same batches; nothing waits for them.
//! - A batch refused because the store is full (policy `refuse`) is not routed; MQTT 5
//!   publishers get PUBACK/PUBREC 0x97 (Quota exceeded) with a Reason String, MQTT 3.1.1
//!   publishers, which have no negative acknowledgement, are disconnected without one.
//! - A failed commit is never acknowledged: the connection ends, the client publishes again.
//! - For a persistent session, the state the client relies on is written too: PUBCOMP waits
//!   for the release of its QoS 2 id, SUBACK/UNSUBACK for the session record; outbound
//!   in-flight and queue changes are submitted at the next turn of the loop without waiting.

pub mod queue;
pub mod state;
pub mod transport;
mod tx;
pub mod wire;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf as _, Bytes, BytesMut};
use tern_mqtt::ProtocolVersion;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tracing::{Span, debug, info, warn};

use crate::broker::{
    AttachRequest, Attached, Broker, ConnectionRef, Detach, Mailbox, PublishScratch, Will,
};
use crate::message::{ClientId, Message};
use crate::router::SubscriptionOptions;
use crate::security::acl::Operation;
use crate::security::{AclState, AuthRefusal, Credentials, ListenerSecurity};
use crate::session::state::{
    ConnAck, Connection, Limits, Outbound, OutboundStage, PublishHeader, Violation, negotiate,
    reason,
};
use crate::session::wire::{Inbound, InboundPublish, WireError};
use crate::store::{InflightOut, OutboundState, Store, StoreError, Ticket, TicketWaiter, WriteOp};

/// Stop reading from a peer while this much output to it is unwritten.
const MAX_UNREAD_OUTPUT: usize = 4 * MAX_PENDING_OUTPUT;
/// Payloads up to this size are copied out of the read buffer; larger ones share it.
/// A shared slice pins the whole read chunk it came from for as long as the message lives
/// (offline queues, retained store), which for small messages costs far more memory than
/// the copy costs time.
const SHARE_PAYLOAD_ABOVE: usize = 512;
/// How long a shutting-down connection waits for its pending batches to commit.
const SHUTDOWN_ACK_WAIT: std::time::Duration = std::time::Duration::from_secs(1);
/// Packet type nibble of CONNECT.
const CONNECT_PACKET_TYPE: u8 = 1;
/// Initial read buffer; grows up to the largest packet accepted.
const READ_BUFFER: usize = 8 * 1024;
/// A write buffer whose allocation grew beyond this is replaced by one of the initial size
/// once everything in it is written, so a delivery burst does not pin its peak (up to
/// [`MAX_UNREAD_OUTPUT`] and more) for the rest of the connection.
const KEEP_WRITE_BUFFER: usize = MAX_PENDING_OUTPUT;
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
    /// The store refused or failed a write this connection needed; what it had not
    /// acknowledged stays unacknowledged.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// CONNECT refused by authentication or by the ACL (already counted and logged).
    #[error("not authorized: {}", .0.text)]
    Refused(AuthRefusal),
}

/// DISCONNECT reason code "Administrative action" (v5), sent to an evicted client.
const ADMINISTRATIVE_ACTION: u8 = 0x98;

/// How the main loop ended.
#[derive(Debug)]
enum End {
    /// DISCONNECT from the client; `with_will` for any v5 reason other than 0x00.
    Disconnect { with_will: bool },
    /// Another connection took over the session.
    TakenOver,
    /// An operator closed the connection (admin API): v5 DISCONNECT 0x98.
    Evicted,
    /// The hub is shutting down.
    Shutdown,
    /// Abnormal end: the will is published.
    Error(SessionError),
}

/// What the listener knows about a connection before its CONNECT.
#[derive(Debug, Clone)]
pub struct ConnectionContext {
    /// The listener's authentication and ACL.
    pub security: Arc<ListenerSecurity>,
    /// Identity from a verified client certificate (`use_identity_as_username`).
    pub certificate_identity: Option<String>,
}

/// Serves one accepted plain TCP connection until it closes.
pub async fn serve(
    mut stream: TcpStream,
    peer: SocketAddr,
    broker: Arc<Broker>,
    context: ConnectionContext,
) {
    let (reader, writer) = stream.split();
    serve_io(reader, writer, false, peer, &broker, &context).await;
}

/// Serves a connection over any byte stream (TLS, WebSocket) until it closes. Writes are
/// flushed, since these streams buffer.
pub async fn serve_stream<S>(
    stream: S,
    peer: SocketAddr,
    broker: Arc<Broker>,
    context: ConnectionContext,
) where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (reader, writer) = tokio::io::split(stream);
    let reader: Box<dyn AsyncRead + Send + Unpin> = Box::new(reader);
    let writer: Box<dyn AsyncWrite + Send + Unpin> = Box::new(writer);
    serve_io(reader, writer, true, peer, &broker, &context).await;
}

async fn serve_io<R, W>(
    reader: R,
    writer: W,
    flush_writes: bool,
    peer: SocketAddr,
    broker: &Arc<Broker>,
    context: &ConnectionContext,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut io = Io {
        reader,
        writer,
        read_buf: BytesMut::with_capacity(READ_BUFFER),
        write_buf: BytesMut::with_capacity(READ_BUFFER),
        flush_writes,
        unflushed: false,
    };
    match serve_inner(&mut io, peer, broker, context).await {
        Ok(()) => debug!("connection closed"),
        Err(SessionError::ClosedByPeer) => debug!("closed before CONNECT"),
        Err(SessionError::Refused(refusal)) => debug!(reason = refusal.text, "connection refused"),
        Err(err) => warn!(%peer, reason = %err, "connection refused"),
    }
    // Best effort: the peer may already be gone (or not reading a TLS close).
    let _ = tokio::time::timeout(SHUTDOWN_ACK_WAIT, io.writer.shutdown()).await;
}

/// The connection's stream halves and buffers.
struct Io<R, W> {
    reader: R,
    writer: W,
    read_buf: BytesMut,
    write_buf: BytesMut,
    /// The stream buffers writes (TLS, WebSocket): flush after writing.
    flush_writes: bool,
    /// Bytes were written since the last flush.
    unflushed: bool,
}

impl<R, W: AsyncWrite + Unpin> Io<R, W> {
    async fn flush(&mut self, broker: &Broker) -> Result<(), SessionError> {
        if !self.write_buf.is_empty() {
            let len = self.write_buf.len();
            self.writer.write_all(&self.write_buf).await?;
            broker.metrics().bytes_sent.add_len(len);
            self.write_buf.clear();
        }
        if self.flush_writes {
            self.writer.flush().await?;
            self.unflushed = false;
        }
        Ok(())
    }
}

/// One step of the write side of the main loop: write pending output, or flush a
/// buffering stream once the output is written. Both are cancel-safe.
enum WriteStep {
    Wrote(usize),
    Flushed,
}

async fn write_step<W: AsyncWrite + Unpin>(
    writer: &mut W,
    buf: &[u8],
) -> std::io::Result<WriteStep> {
    if buf.is_empty() {
        writer.flush().await.map(|()| WriteStep::Flushed)
    } else {
        writer.write(buf).await.map(WriteStep::Wrote)
    }
}

/// Topic hygiene limits of `[session]`.
#[derive(Debug, Clone, Copy)]
struct TopicLimits {
    max_length: usize,
    /// 0 = no limit.
    max_levels: usize,
    /// 0 = no limit.
    max_subscriptions: usize,
}

impl TopicLimits {
    fn of(config: &crate::Config) -> Self {
        Self {
            max_length: config.session.max_topic_length,
            max_levels: config.session.max_topic_levels,
            max_subscriptions: config.session.max_subscriptions_per_client,
        }
    }

    /// Whether a topic name or filter is within the length and depth limits.
    fn allows(&self, topic: &str) -> bool {
        topic.len() <= self.max_length
            && (self.max_levels == 0 || topic.split('/').count() <= self.max_levels)
    }
}

/// Counts a decode error; a packet over `max_packet_size` also gets its own counter.
fn count_malformed(broker: &Broker, err: &tern_mqtt::Error) {
    broker.metrics().malformed.inc();
    if disconnect_code(err) == reason::PACKET_TOO_LARGE {
        broker.metrics().security.packet_too_large.inc();
    }
}

/// Logs a refused login: the first ten, then at power-of-two totals, so a password
/// guessing storm cannot flood the log.
fn log_refusal(peer: SocketAddr, username: Option<&str>, refusal: AuthRefusal, total: u64) {
    if total <= 10 || total.is_power_of_two() {
        warn!(%peer, username, reason = refusal.text, refused_total = total, "CONNECT refused");
    } else {
        debug!(%peer, username, reason = refusal.text, "CONNECT refused");
    }
}

async fn serve_inner<R, W>(
    io: &mut Io<R, W>,
    peer: SocketAddr,
    broker: &Arc<Broker>,
    context: &ConnectionContext,
) -> Result<(), SessionError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
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
    let topic_limits = TopicLimits::of(config);

    // CONNECT, within connect_timeout.
    let connect_timeout = config.session.connect_timeout.0;
    let first = tokio::select! {
        () = broker.shutdown().triggered() => return Ok(()),
        first = tokio::time::timeout(connect_timeout, read_frame(io, broker, limits.max_packet_size)) => first,
    };
    let frame = match first {
        Err(_) => {
            broker.metrics().security.connect_timeouts.inc();
            return Err(SessionError::ConnectTimeout);
        }
        Ok(Err(SessionError::Malformed(err))) => {
            count_malformed(broker, &err);
            if wire::connect_level(&io.read_buf) == Some(ProtocolVersion::V5 as u8)
                && disconnect_code(&err) == reason::PACKET_TOO_LARGE
            {
                let refusal = state::ConnectRefusal {
                    code: reason::PACKET_TOO_LARGE,
                    text: "packet too large",
                };
                let packet = Outbound::ConnAck(ConnAck::refusal(refusal));
                if wire::encode(&packet, ProtocolVersion::V5, &mut io.write_buf).is_ok() {
                    io.flush(broker).await?;
                }
            }
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
    let security = &context.security;
    let credentials = Credentials {
        certificate: context.certificate_identity.as_deref(),
        username: connect.username,
        password: connect.password,
    };
    let username = match security.authenticate(credentials, broker.metrics()).await {
        Ok(username) => username,
        Err(refusal) => {
            let m = &broker.metrics().security;
            log_refusal(
                peer,
                connect.username,
                refusal,
                m.auth_failed.get() + m.anonymous_refused.get(),
            );
            return refuse_connect(io, broker, version, refusal).await;
        }
    };
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
    if let Some(username) = &username {
        Span::current().record("username", &**username);
    }
    let mut acl = security.client_acl(username.as_ref(), &client_id);
    if let Some(will) = &connect.will {
        let topic = will.message.topic.as_str();
        let refusal = if !topic_limits.allows(topic) {
            broker.metrics().security.topic_limit.inc();
            Some(AuthRefusal {
                code: reason::TOPIC_NAME_INVALID,
                text: "will topic exceeds max_topic_length or max_topic_levels",
            })
        } else if let Some(acl) = &mut acl
            && !acl.check_topic(topic, Operation::Write)
        {
            broker.metrics().security.will_denied.inc();
            Some(AuthRefusal {
                code: reason::NOT_AUTHORIZED,
                text: "will topic not writable by this client",
            })
        } else {
            None
        };
        if let Some(refusal) = refusal {
            warn!(%peer, will_topic = topic, reason = refusal.text, "CONNECT refused");
            return refuse_connect(io, broker, version, refusal).await;
        }
    }
    let problem_information = connect.problem_information;
    let will = connect.will.map(|w| Will {
        message: Message {
            publisher: Arc::clone(&client_id),
            ..w.message
        },
        delay_secs: w.delay_secs,
        expiry_secs: w.expiry_secs,
        token: broker.will_token(),
    });
    let request = AttachRequest {
        clean_start: params.clean_start,
        session_expiry: params.session_expiry,
        protocol_level: version as u8,
    };
    let Attached {
        mailbox,
        state: session_state,
        session_present,
        connection,
        stored,
    } = broker.attach(&client_id, request, will.as_ref()).await;
    // Fresh per connection, so this is its only setter.
    let _ = connection.peer.set(peer);
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
        acl,
        topic_limits,
        stored,
        state_ops: Vec::new(),
        batch: Vec::new(),
        batch_ops: Vec::new(),
        batch_acks: Vec::new(),
        gated: VecDeque::new(),
        tx_qos0_logged: false,
        problem_information,
    };
    session.emit(
        &Outbound::ConnAck(session.conn.connack(session_present)),
        &mut io.write_buf,
    )?;
    for packet in session.conn.resend_inflight(Instant::now()) {
        session.emit(&packet, &mut io.write_buf)?;
    }
    let end = session.run(io, &connection).await;
    session.settle_abandoned_endings();
    let mut will = session.will.take();
    if let (Some(w), Some(acl)) = (&will, &mut session.acl) {
        // The ACL may have been reloaded since CONNECT.
        acl.refresh();
        if !acl.check_topic(&w.message.topic, Operation::Write) {
            broker.metrics().security.will_denied.inc();
            will = None;
        }
    }
    // Outbound progress of this connection reaches the store before the session is parked
    // (and before a takeover may resume it).
    let leftover = std::mem::take(&mut session.state_ops);
    if let Err(err) = broker.submit(leftover).await {
        warn!(cause = %err, "session state not stored");
    }

    // Say goodbye where MQTT 5 has words for it, then park or end the session.
    let goodbye = match &end {
        End::TakenOver => Some((reason::SESSION_TAKEN_OVER, "session taken over")),
        End::Evicted => Some((ADMINISTRATIVE_ACTION, "administrative action")),
        End::Shutdown => Some((reason::SERVER_SHUTTING_DOWN, "server shutting down")),
        End::Error(SessionError::KeepAliveTimeout) => {
            Some((reason::KEEP_ALIVE_TIMEOUT, "keep alive timeout"))
        }
        End::Error(SessionError::Malformed(err)) => {
            let code = disconnect_code(err);
            Some((code, reason_text(code)))
        }
        End::Error(SessionError::Violation(v)) => Some((v.code, v.text)),
        End::Error(SessionError::Store(StoreError::QuotaExceeded { .. })) => {
            Some((reason::QUOTA_EXCEEDED, "store quota exceeded"))
        }
        End::Error(SessionError::Store(_)) => {
            Some((reason::UNSPECIFIED_ERROR, "message store unavailable"))
        }
        _ => None,
    };
    if let Some((code, text)) = goodbye {
        if version == ProtocolVersion::V5
            && wire::encode_within(
                &Outbound::Disconnect(code, text),
                version,
                &mut io.write_buf,
                session.conn.params.client_max_packet_size,
                session.problem_information,
            )
            .is_ok()
        {
            broker.metrics().packets_sent.inc();
        }
        // Best effort: the peer may be gone or not reading.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), io.flush(broker)).await;
    }
    // On shutdown the will is neither published nor discarded: its stored copy makes the
    // next start treat this close as abnormal (published unless the client resumes in time).
    let publish_will = match &end {
        End::Disconnect { with_will } => *with_will,
        End::Shutdown => false,
        End::TakenOver | End::Evicted | End::Error(_) => true,
    };
    let discarded_will = match &end {
        End::Disconnect { with_will: false } => will.as_ref().map(|w| w.token),
        _ => None,
    };
    match &end {
        End::Error(SessionError::Malformed(err)) => {
            count_malformed(broker, err);
            warn!(%peer, reason = %SessionError::Malformed(*err), "disconnecting client");
        }
        End::Error(err @ SessionError::Violation(_)) => {
            broker.metrics().malformed.inc();
            warn!(%peer, reason = %err, "disconnecting client");
        }
        End::Error(SessionError::KeepAliveTimeout) => {
            broker.metrics().keepalive_timeouts.inc();
            warn!(%peer, "keep alive timeout");
        }
        End::Error(err @ SessionError::Store(_)) => {
            warn!(%peer, reason = %err, "disconnecting client: publishes not acknowledged");
        }
        End::Error(err) => info!(reason = %err, "connection lost"),
        other => info!(end = ?other, "client disconnected"),
    }
    broker.metrics().clients_connected.dec();
    let session_expiry = conn.params.session_expiry;
    broker
        .detach(
            &client_id,
            &connection,
            Detach {
                state: conn.into_session(),
                session_expiry,
                will: if publish_will { will } else { None },
                discarded_will,
            },
        )
        .await;
    Ok(())
}

/// Answers a refused CONNECT with CONNACK `refusal.code` (the codec maps it to the 3.1.1
/// return code) and ends the connection.
async fn refuse_connect<R, W: AsyncWrite + Unpin>(
    io: &mut Io<R, W>,
    broker: &Broker,
    version: ProtocolVersion,
    refusal: AuthRefusal,
) -> Result<(), SessionError> {
    let packet = Outbound::ConnAck(ConnAck::refusal(state::ConnectRefusal {
        code: refusal.code,
        text: refusal.text,
    }));
    wire::encode(&packet, version, &mut io.write_buf)?;
    broker.metrics().packets_sent.inc();
    io.flush(broker).await?;
    Err(SessionError::Refused(refusal))
}

/// Reads until one complete frame is buffered and returns it (split off the read buffer).
async fn read_frame<R: AsyncRead + Unpin, W>(
    io: &mut Io<R, W>,
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

/// Acknowledgements of one batch, released once all its tickets have committed.
#[derive(Debug)]
struct Gated {
    tickets: Vec<Ticket>,
    acks: Vec<Outbound>,
    /// When the batch was submitted (commit latency histogram).
    since: std::time::Instant,
    /// The commit or rollback these tickets carry, settled in the registry when they
    /// resolve.
    ending: Option<crate::tx::Ending>,
}

impl Gated {
    /// The ticket that resolves last (tickets resolve in order); `Ticket(0)`, resolved from
    /// the start, when the batch has none.
    fn last_ticket(&self) -> Ticket {
        self.tickets.iter().copied().max().unwrap_or_default()
    }
}

/// An acknowledgement of the current read, and whether it answers a PUBLISH of the batch
/// (which a refusal turns into 0x97) rather than a duplicate or a PUBREL.
#[derive(Debug)]
struct PendingAck {
    packet: Outbound,
    refusable: bool,
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
    /// The client's compiled ACL; `None` when the listener has no ACL file.
    acl: Option<AclState>,
    /// Topic length/depth and subscription count limits.
    topic_limits: TopicLimits,
    /// Whether the store tracks this session (persistent session, store present).
    stored: bool,
    /// Store writes for outbound progress and QoS 2 releases, submitted at the next turn of
    /// the loop (or with the next batch).
    state_ops: Vec<WriteOp>,
    /// PUBLISHes of the current read, stored and routed together by [`Session::flush`].
    batch: Vec<Message>,
    /// Inbound QoS 2 ids of the batch, written in the same submission as its messages.
    batch_ops: Vec<WriteOp>,
    /// Acknowledgements of the current read, in order.
    batch_acks: Vec<PendingAck>,
    /// Acknowledgements waiting for their store tickets, oldest first.
    gated: VecDeque<Gated>,
    /// A QoS 0 half message was refused and logged on this connection (logged once).
    tx_qos0_logged: bool,
    /// The client's Request Problem Information (v5; true for 3.1.1, which has no Reason
    /// Strings anyway).
    problem_information: bool,
}

impl Session<'_> {
    async fn run<R, W>(&mut self, io: &mut Io<R, W>, connection: &ConnectionRef) -> End
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let keep_alive = self.conn.keep_alive_deadline();
        let mut last_heard = tokio::time::Instant::now();
        let mut committed = self.broker.store().map(Store::committed);
        let mut waiter = self.broker.store().map(Store::ticket_waiter);
        // Packets pipelined behind CONNECT are already buffered.
        match self.process_input(io, &mut committed).await {
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
            if !self.state_ops.is_empty() {
                let ops = std::mem::take(&mut self.state_ops);
                if let Err(err) = self.broker.submit(ops).await {
                    return End::Error(err.into());
                }
            }
            // Keep room for a full read; frames already split off stay with their messages.
            io.read_buf.reserve(READ_BUFFER);
            let deadline = keep_alive.map(|k| last_heard + k);
            let writing = !io.write_buf.is_empty() || io.unflushed;
            // A peer that sends but does not read its acknowledgements stops being read
            // once its unread output reaches the bound (its keep alive then runs out).
            let reading = io.write_buf.len() < MAX_UNREAD_OUTPUT;
            // The ticket whose resolution may release the oldest gated acknowledgements.
            let front = self.gated.front().map(Gated::last_ticket);
            tokio::select! {
                biased;
                () = connection.kick.cancelled() => return End::TakenOver,
                () = connection.evict.cancelled() => return End::Evicted,
                () = self.broker.shutdown().triggered() => {
                    self.drain_gated(&mut committed, &mut io.write_buf).await;
                    return End::Shutdown;
                }
                resolved = wait_resolved(&mut waiter, front), if front.is_some() => match resolved {
                    Ok(()) => {
                        if let Err(err) = self.release(&mut committed, &mut io.write_buf) {
                            return End::Error(err);
                        }
                    }
                    Err(err) => return End::Error(err.into()),
                },
                written = write_step(&mut io.writer, &io.write_buf), if writing => match written {
                    Ok(WriteStep::Wrote(0)) => return End::Error(SessionError::ClosedByPeer),
                    Ok(WriteStep::Wrote(n)) => {
                        self.broker.metrics().bytes_sent.add_len(n);
                        io.write_buf.advance(n);
                        // A burst grew the buffer: give its room back once written.
                        if io.write_buf.is_empty()
                            && io.write_buf.try_reclaim(KEEP_WRITE_BUFFER + 1)
                        {
                            io.write_buf = BytesMut::with_capacity(READ_BUFFER);
                        }
                        io.unflushed = io.flush_writes;
                    }
                    Ok(WriteStep::Flushed) => io.unflushed = false,
                    Err(err) => return End::Error(err.into()),
                },
                read = io.reader.read_buf(&mut io.read_buf), if reading => match read {
                    Ok(0) => return End::Error(SessionError::ClosedByPeer),
                    Ok(n) => {
                        self.broker.metrics().bytes_received.add_len(n);
                        last_heard = tokio::time::Instant::now();
                        match self.process_input(io, &mut committed).await {
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

    /// Decodes and handles every complete frame in the read buffer, then stores and routes
    /// the read's PUBLISHes as one batch.
    async fn process_input<R, W>(
        &mut self,
        io: &mut Io<R, W>,
        committed: &mut Option<watch::Receiver<Ticket>>,
    ) -> Result<Option<End>, SessionError> {
        let limit = self.broker.config().max_packet_size();
        self.refresh_acl();
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
            if let Some(end) = self
                .handle(packet, &frame, &mut io.write_buf, committed)
                .await?
            {
                // Publishes before a DISCONNECT are still stored and delivered.
                self.flush(&mut io.write_buf, committed).await?;
                return Ok(Some(end));
            }
        }
        self.flush(&mut io.write_buf, committed).await?;
        Ok(None)
    }

    /// Stores and routes the current batch and queues its acknowledgements behind the
    /// store tickets; releases whatever has committed already.
    async fn flush(
        &mut self,
        out: &mut BytesMut,
        committed: &mut Option<watch::Receiver<Ticket>>,
    ) -> Result<(), SessionError> {
        let mut tickets = Vec::new();
        if !self.state_ops.is_empty() {
            let ops = std::mem::take(&mut self.state_ops);
            tickets.extend(self.broker.submit(ops).await?);
        }
        if self.batch.is_empty() && self.batch_acks.is_empty() {
            return self.release(committed, out);
        }
        let messages = std::mem::take(&mut self.batch);
        let ops = std::mem::take(&mut self.batch_ops);
        let acks = std::mem::take(&mut self.batch_acks);
        if !messages.is_empty() || !ops.is_empty() {
            match self
                .broker
                .publish_batch(messages, ops, &mut self.scratch)
                .await
            {
                Ok(published) => tickets.extend(published.tickets),
                Err(err @ StoreError::QuotaExceeded { .. }) => {
                    let refused = acks.iter().filter(|a| a.refusable).count();
                    self.broker
                        .metrics()
                        .store_refused
                        .add(u64::try_from(refused).unwrap_or(u64::MAX));
                    warn!(
                        refused,
                        v5 = self.conn.is_v5(),
                        "store full: publishes refused"
                    );
                    for ack in acks.iter().filter(|a| a.refusable) {
                        if let Outbound::PubRec(id, _) = ack.packet {
                            self.conn.refuse_inbound(id);
                        }
                    }
                    if !self.conn.is_v5() {
                        // 3.1.1 has no negative PUBACK: close without acknowledging, so the
                        // client publishes again after reconnecting.
                        return Err(err.into());
                    }
                    let acks = acks
                        .into_iter()
                        .map(|ack| match ack.packet {
                            Outbound::PubAck(id, _) if ack.refusable => {
                                Outbound::PubAck(id, reason::QUOTA_EXCEEDED)
                            }
                            Outbound::PubRec(id, _) if ack.refusable => {
                                Outbound::PubRec(id, reason::QUOTA_EXCEEDED)
                            }
                            other => other,
                        })
                        .collect();
                    self.gated.push_back(Gated {
                        tickets,
                        acks,
                        since: std::time::Instant::now(),
                        ending: None,
                    });
                    return self.release(committed, out);
                }
                Err(err) => {
                    self.broker.metrics().store_refused.inc();
                    return Err(err.into());
                }
            }
        }
        self.gated.push_back(Gated {
            tickets,
            acks: acks.into_iter().map(|a| a.packet).collect(),
            since: std::time::Instant::now(),
            ending: None,
        });
        self.release(committed, out)
    }

    /// At shutdown: waits (bounded by [`SHUTDOWN_ACK_WAIT`]) for the pending batches to
    /// commit and releases their acknowledgements, so a graceful stop does not make clients
    /// publish again what the store already holds.
    async fn drain_gated(
        &mut self,
        committed: &mut Option<watch::Receiver<Ticket>>,
        out: &mut BytesMut,
    ) {
        let drain = async {
            while !self.gated.is_empty() {
                if self.release(committed, out).is_err() || self.gated.is_empty() {
                    break;
                }
                if wait_committed(committed).await.is_err() {
                    break;
                }
            }
        };
        // Whatever has not committed in time stays unacknowledged, as after a crash.
        let _ = tokio::time::timeout(SHUTDOWN_ACK_WAIT, drain).await;
    }

    /// Writes the acknowledgements whose tickets have all committed, oldest first. A failed
    /// ticket ends the connection without acknowledging.
    fn release(
        &mut self,
        committed: &mut Option<watch::Receiver<Ticket>>,
        out: &mut BytesMut,
    ) -> Result<(), SessionError> {
        let done = committed
            .as_mut()
            .map_or(Ticket(u64::MAX), |rx| *rx.borrow_and_update());
        while let Some(front) = self.gated.front() {
            if front.tickets.iter().any(|t| *t > done) {
                break;
            }
            let Some(gated) = self.gated.pop_front() else {
                break;
            };
            if let Some(store) = self.broker.store() {
                for ticket in &gated.tickets {
                    if let Err(err) = store.outcome(*ticket) {
                        if let Some(ending) = &gated.ending {
                            crate::tx::complete(self.broker, ending, Err(&err));
                        }
                        self.broker.metrics().store_refused.inc();
                        for ack in &gated.acks {
                            if let Outbound::PubRec(id, _) = ack {
                                self.conn.refuse_inbound(*id);
                            }
                        }
                        return Err(err.into());
                    }
                }
            }
            if let Some(ending) = &gated.ending {
                crate::tx::complete(self.broker, ending, Ok(()));
            }
            if !gated.tickets.is_empty() {
                self.broker
                    .metrics()
                    .commit_wait
                    .observe(gated.since.elapsed());
            }
            for ack in &gated.acks {
                self.emit(ack, out)?;
            }
        }
        Ok(())
    }

    async fn handle(
        &mut self,
        packet: Inbound<'_>,
        frame: &Bytes,
        out: &mut BytesMut,
        committed: &mut Option<watch::Receiver<Ticket>>,
    ) -> Result<Option<End>, SessionError> {
        match packet {
            Inbound::Connect(_) => return Err(SessionError::Violation(self.conn.on_connect())),
            Inbound::Publish(publish) => {
                if let Some(control) = self.on_publish(publish, frame)? {
                    self.on_tx_control(control, out, committed).await?;
                }
            }
            Inbound::PubAck(id) => {
                let seq = self.conn.session.stored_seq(id);
                if self.conn.on_puback(id) && self.stored && seq.is_some() {
                    self.state_ops.push(WriteOp::InflightOutRemove {
                        client: self.client_id.to_string(),
                        packet_id: id,
                    });
                }
            }
            Inbound::PubRec(id, code) => {
                let tracked = self.stored
                    && self.conn.session.stored_seq(id).is_some()
                    && self.conn.session.inflight_stage(id) == Some(OutboundStage::AwaitPubRec);
                let reply = self.conn.on_pubrec(id, code);
                if tracked {
                    self.record_pubrec(id);
                }
                if let Some(reply) = reply {
                    self.emit(&reply, out)?;
                }
            }
            Inbound::PubRel(id) => {
                let reply = self.conn.on_pubrel(id);
                if self.stored {
                    self.state_ops.push(WriteOp::InflightInRemove {
                        client: self.client_id.to_string(),
                        packet_id: id,
                    });
                }
                // PUBCOMP follows the batch (and the release of the id) to the store.
                self.batch_acks.push(PendingAck {
                    packet: reply,
                    refusable: false,
                });
            }
            Inbound::PubComp(id) => {
                let seq = self.conn.session.stored_seq(id);
                if self.conn.on_pubcomp(id) && self.stored && seq.is_some() {
                    self.state_ops.push(WriteOp::InflightOutRemove {
                        client: self.client_id.to_string(),
                        packet_id: id,
                    });
                }
            }
            Inbound::Subscribe(subscribe) => {
                // Publishes read before the SUBSCRIBE are routed before it takes effect.
                self.flush(out, committed).await?;
                let mut codes = Vec::with_capacity(subscribe.filters.len());
                for (filter, options) in subscribe.filters {
                    let options = SubscriptionOptions {
                        identifier: subscribe.identifier,
                        ..options
                    };
                    if let Some(refused) = self.check_subscription(filter) {
                        codes.push(refused);
                        continue;
                    }
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
                self.persist_subscriptions().await?;
                self.emit(&Outbound::SubAck(subscribe.packet_id, codes), out)?;
            }
            Inbound::Unsubscribe { packet_id, filters } => {
                self.flush(out, committed).await?;
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
                self.persist_subscriptions().await?;
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

    /// Writes the session record after a subscription change and waits until it is
    /// durable, so a SUBACK/UNSUBACK is never sent for a change a crash would undo.
    async fn persist_subscriptions(&self) -> Result<(), SessionError> {
        if !self.stored {
            return Ok(());
        }
        if let (Some(ticket), Some(store)) = (
            self.broker.persist_session(self.client_id).await?,
            self.broker.store(),
        ) {
            store.wait_durable(ticket).await?;
        }
        Ok(())
    }

    /// Store op for a PUBREC on a tracked delivery: now awaiting PUBCOMP, or finished when
    /// the PUBREC carried an error code.
    fn record_pubrec(&mut self, id: u16) {
        let client = self.client_id.to_string();
        let op = match self.conn.session.inflight_item(id) {
            Some(item) => match item.seq {
                Some(seq) => WriteOp::InflightOutSet {
                    client,
                    packet_id: id,
                    entry: InflightOut {
                        seq,
                        state: OutboundState::PubrelSent,
                        delivery: item.delivery_info(),
                    },
                },
                None => return,
            },
            None => WriteOp::InflightOutRemove {
                client,
                packet_id: id,
            },
        };
        self.state_ops.push(op);
    }

    /// Recompiles the client's ACL if its file was reloaded.
    fn refresh_acl(&mut self) {
        if let Some(acl) = &mut self.acl
            && acl.refresh()
        {
            info!("ACL file reloaded: rules recompiled for this client");
        }
    }

    /// The SUBACK code refusing `filter` (topic limits, ACL, subscription count), or `None`
    /// when it may be subscribed.
    fn check_subscription(&mut self, filter: &str) -> Option<u8> {
        let security = &self.broker.metrics().security;
        if !self.topic_limits.allows(filter) {
            security.topic_limit.inc();
            debug!(
                filter,
                "topic filter over max_topic_length or max_topic_levels"
            );
            return Some(reason::TOPIC_FILTER_INVALID);
        }
        // `$tern/` filters: the client's own check topic, or what the ACL grants.
        let reserved = self.tx_subscription(filter);
        if reserved == Some(false) {
            security.acl_denied_subscribe.inc();
            return Some(reason::NOT_AUTHORIZED);
        }
        if reserved.is_none()
            && let Some(acl) = &mut self.acl
            && !acl.check_subscribe(filter)
        {
            security.acl_denied_subscribe.inc();
            return Some(reason::NOT_AUTHORIZED);
        }
        let max = self.topic_limits.max_subscriptions;
        if max > 0 {
            let (held, present) = self.broker.subscription_count(self.client_id, filter);
            if !present && held >= max {
                security.subscription_limit.inc();
                warn!(
                    filter,
                    max_subscriptions_per_client = max,
                    "subscription refused: client at max_subscriptions_per_client"
                );
                return Some(reason::QUOTA_EXCEEDED);
            }
        }
        None
    }

    /// Handles one PUBLISH; a commit or rollback comes back to be run once the batch
    /// before it is stored.
    fn on_publish(
        &mut self,
        publish: InboundPublish<'_>,
        frame: &Bytes,
    ) -> Result<Option<tx::TxControl>, SessionError> {
        self.broker.metrics().publishes_received.inc();
        if let Some(counter) = self
            .broker
            .metrics()
            .publishes_received_qos
            .get(publish.qos as usize)
        {
            counter.inc();
        }
        let verdict = self
            .conn
            .on_publish(PublishHeader {
                topic: publish.topic,
                qos: publish.qos,
                packet_id: publish.packet_id,
                topic_alias: publish.topic_alias,
            })
            .map_err(SessionError::Violation)?;
        if verdict.route && !self.topic_limits.allows(&verdict.topic) {
            self.broker.metrics().security.topic_limit.inc();
            return Err(SessionError::Violation(Violation {
                code: reason::TOPIC_NAME_INVALID,
                text: "topic exceeds max_topic_length or max_topic_levels",
            }));
        }
        if verdict.route && verdict.topic.starts_with(crate::tx::RESERVED_PREFIX) {
            // Transaction control; the owner needs no ACL grant (see `docs/transactions.md`).
            return Ok(self.on_reserved_publish(verdict.topic, &publish.properties, verdict.ack));
        }
        if verdict.route
            && let Some(acl) = &mut self.acl
            && !acl.check_topic(&verdict.topic, Operation::Write)
        {
            self.broker.metrics().security.acl_denied_publish.inc();
            // MQTT 5: PUBACK/PUBREC 0x87 ends the exchange. MQTT 3.1.1 has no negative
            // acknowledgement: the message is dropped but acknowledged as usual, so the
            // client does not resend it forever.
            let ack = match verdict.ack {
                Some(Outbound::PubAck(id, _)) if self.conn.is_v5() => {
                    Some(Outbound::PubAck(id, reason::NOT_AUTHORIZED))
                }
                Some(Outbound::PubRec(id, _)) if self.conn.is_v5() => {
                    self.conn.refuse_inbound(id);
                    Some(Outbound::PubRec(id, reason::NOT_AUTHORIZED))
                }
                other => other,
            };
            if let Some(packet) = ack {
                self.batch_acks.push(PendingAck {
                    packet,
                    refusable: false,
                });
            }
            return Ok(None);
        }
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
            if let crate::tx::Classified::Half { tx } =
                crate::tx::classify(&message.topic, &message.properties)
            {
                let tx = tx.to_owned();
                self.on_half_message(&tx, message, verdict.ack);
                return Ok(None);
            }
            if self.stored
                && publish.qos == tern_mqtt::QoS::ExactlyOnce
                && let Some(packet_id) = publish.packet_id
            {
                self.batch_ops.push(WriteOp::InflightInAdd {
                    client: self.client_id.to_string(),
                    packet_id,
                });
            }
            self.batch.push(message);
        }
        if let Some(ack) = verdict.ack {
            self.batch_acks.push(PendingAck {
                packet: ack,
                refusable: verdict.route,
            });
        }
        Ok(None)
    }

    /// Moves queued messages into the in-flight window and encodes them; records the
    /// store changes of tracked deliveries in `state_ops`.
    fn pump_mailbox(&mut self, out: &mut BytesMut) -> Result<(), SessionError> {
        self.refresh_acl();
        let now = Instant::now();
        let mut expired = 0;
        loop {
            if out.len() >= MAX_PENDING_OUTPUT {
                break;
            }
            if !self.conn.can_send_qos() {
                // Window full: QoS 0 must not overtake QoS 1/2 (order per topic), so wait.
                break;
            }
            // Pages spilled entries in from the store when its window is empty.
            let Some(item) = self.mailbox.pop(now, &mut expired) else {
                break;
            };
            let tracked = item.seq.filter(|_| self.stored);
            if let Some(acl) = &mut self.acl
                && !acl.check_topic(&item.message.topic, Operation::Read)
            {
                // Wildcard subscriptions, retained messages and queued messages alike.
                self.broker.metrics().security.acl_denied_delivery.inc();
                self.queue_removed(tracked);
                continue;
            }
            let delivery = tracked.map(|_| item.delivery_info());
            let Some(publish) = self.conn.send(item, now) else {
                expired += 1;
                self.queue_removed(tracked);
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
                self.queue_removed(tracked);
                self.broker.metrics().messages_dropped.inc();
                debug!(
                    size,
                    "message larger than the client's maximum packet size dropped"
                );
                continue;
            }
            self.queue_removed(tracked);
            if let (Some(seq), Some(delivery), Outbound::Publish(publish)) =
                (tracked, delivery, &packet)
                && let Some(packet_id) = publish.packet_id
            {
                self.state_ops.push(WriteOp::InflightOutSet {
                    client: self.client_id.to_string(),
                    packet_id,
                    entry: InflightOut {
                        seq,
                        state: OutboundState::PublishSent,
                        delivery,
                    },
                });
            }
            self.broker.metrics().packets_sent.inc();
            self.broker.metrics().publishes_sent.inc();
            if let Outbound::Publish(publish) = &packet
                && let Some(counter) = self
                    .broker
                    .metrics()
                    .publishes_sent_qos
                    .get(publish.qos as usize)
            {
                counter.inc();
            }
        }
        if expired > 0 {
            self.broker.metrics().messages_dropped.add(expired);
        }
        let discarded = self.mailbox.queue().take_discarded();
        if self.stored {
            for seq in discarded {
                self.queue_removed(Some(seq));
            }
        }
        Ok(())
    }

    /// Records that a tracked queue entry left the queue (sent, expired or dropped).
    fn queue_removed(&mut self, seq: Option<crate::store::Seq>) {
        if let Some(seq) = seq {
            self.state_ops.push(WriteOp::QueueRemove {
                client: self.client_id.to_string(),
                seq,
            });
        }
    }

    fn emit(&self, packet: &Outbound, out: &mut BytesMut) -> Result<(), SessionError> {
        let max = self.conn.params.client_max_packet_size;
        wire::encode_within(packet, self.version, out, max, self.problem_information)?;
        self.broker.metrics().packets_sent.inc();
        Ok(())
    }
}

/// Completes once `ticket` has resolved (pending forever without a store or a ticket). Only
/// this connection's tickets wake it, unlike the `committed` watch, which moves on every
/// commit of every connection.
async fn wait_resolved(
    waiter: &mut Option<TicketWaiter>,
    ticket: Option<Ticket>,
) -> Result<(), StoreError> {
    match (waiter, ticket) {
        (Some(waiter), Some(ticket)) => waiter.resolved(ticket).await,
        _ => std::future::pending().await,
    }
}

/// Completes when the store's committed ticket moves (pending forever without a store).
async fn wait_committed(rx: &mut Option<watch::Receiver<Ticket>>) -> Result<(), StoreError> {
    match rx {
        Some(rx) => rx.changed().await.map_err(|_| StoreError::Closed),
        None => std::future::pending().await,
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
