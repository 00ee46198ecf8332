//! Sans-IO MQTT session state machine.
//!
//! Methods take what the peer sent (already decoded) or what the router queued, change state,
//! and return the packets to send as [`Outbound`] values or a [`Violation`] that ends the
//! connection. Nothing here touches a socket, a clock (callers pass `now`) or the broker, so
//! every rule is unit-tested below without I/O.
//!
//! Two layers of state:
//! - [`SessionState`] survives the connection for persistent sessions: outbound messages in
//!   flight (resent with DUP on reconnect), inbound QoS 2 packet ids awaiting PUBREL, and the
//!   packet id allocator. The broker parks it in the session registry while offline.
//! - [`Connection`] lives for one network connection: the negotiated protocol version and
//!   limits, and the topic-alias maps of both directions (aliases never outlive a connection).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tern_mqtt::{ProtocolVersion, QoS};

use crate::message::{ClientId, Message, QueuedMessage};
use crate::store::Seq;

/// MQTT 5 reason codes the session emits (MQTT 5.0 §2.4). For 3.1.1 connections the codec
/// maps them onto the CONNACK and SUBACK return codes when encoding.
pub mod reason {
    /// Success / granted QoS 0 / normal disconnection.
    pub const SUCCESS: u8 = 0x00;
    /// Granted QoS 1.
    pub const GRANTED_QOS_1: u8 = 0x01;
    /// Granted QoS 2.
    pub const GRANTED_QOS_2: u8 = 0x02;
    /// DISCONNECT: disconnect with will message.
    pub const DISCONNECT_WITH_WILL: u8 = 0x04;
    /// PUBACK/PUBREC: no subscriber matched.
    pub const NO_MATCHING_SUBSCRIBERS: u8 = 0x10;
    /// UNSUBACK: no such subscription.
    pub const NO_SUBSCRIPTION_EXISTED: u8 = 0x11;
    /// Unspecified error.
    pub const UNSPECIFIED_ERROR: u8 = 0x80;
    /// Malformed packet.
    pub const MALFORMED_PACKET: u8 = 0x81;
    /// Protocol error.
    pub const PROTOCOL_ERROR: u8 = 0x82;
    /// CONNACK: unsupported protocol version.
    pub const UNSUPPORTED_PROTOCOL_VERSION: u8 = 0x84;
    /// CONNACK: client identifier not valid.
    pub const CLIENT_ID_NOT_VALID: u8 = 0x85;
    /// CONNACK: bad authentication method.
    pub const BAD_AUTHENTICATION_METHOD: u8 = 0x8C;
    /// Server shutting down.
    pub const SERVER_SHUTTING_DOWN: u8 = 0x8B;
    /// Keep alive timeout.
    pub const KEEP_ALIVE_TIMEOUT: u8 = 0x8D;
    /// Session taken over.
    pub const SESSION_TAKEN_OVER: u8 = 0x8E;
    /// Topic filter invalid.
    pub const TOPIC_FILTER_INVALID: u8 = 0x8F;
    /// Topic name invalid.
    pub const TOPIC_NAME_INVALID: u8 = 0x90;
    /// PUBREL/PUBCOMP: packet identifier not found.
    pub const PACKET_ID_NOT_FOUND: u8 = 0x92;
    /// Receive maximum exceeded.
    pub const RECEIVE_MAXIMUM_EXCEEDED: u8 = 0x93;
    /// Topic alias invalid.
    pub const TOPIC_ALIAS_INVALID: u8 = 0x94;
    /// Packet too large.
    pub const PACKET_TOO_LARGE: u8 = 0x95;
    /// Bad user name or password (3.1.1 CONNACK: 0x04).
    pub const BAD_USER_NAME_OR_PASSWORD: u8 = 0x86;
    /// Not authorized (3.1.1 CONNACK: 0x05; SUBACK: 0x80).
    pub const NOT_AUTHORIZED: u8 = 0x87;
    /// Quota exceeded.
    pub const QUOTA_EXCEEDED: u8 = 0x97;
    /// Shared subscriptions not supported.
    pub const SHARED_SUBSCRIPTIONS_NOT_SUPPORTED: u8 = 0x9E;
    /// Subscription identifiers not supported.
    pub const SUBSCRIPTION_IDS_NOT_SUPPORTED: u8 = 0xA1;
    /// Wildcard subscriptions not supported.
    pub const WILDCARDS_NOT_SUPPORTED: u8 = 0xA2;
}

/// A rule the peer broke; the connection ends with this reason (v5 DISCONNECT; 3.1.1 close).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{text} (reason code {code:#04x})")]
pub struct Violation {
    /// MQTT 5 reason code for the DISCONNECT.
    pub code: u8,
    /// Human-readable reason, sent as v5 Reason String.
    pub text: &'static str,
}

impl Violation {
    const fn new(code: u8, text: &'static str) -> Self {
        Self { code, text }
    }
}

/// The hub-side limits a session enforces and announces (from `[session]` config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Inbound QoS 1/2 in flight the hub accepts (v5 Receive Maximum).
    pub receive_maximum: u16,
    /// Outbound in-flight window.
    pub max_inflight: u16,
    /// Inbound topic aliases accepted.
    pub topic_alias_maximum: u16,
    /// Largest inbound packet.
    pub max_packet_size: u32,
    /// Keep alive imposed on v5 clients, 0 = accept theirs.
    pub server_keep_alive: u16,
    /// Cap on the session expiry interval.
    pub max_session_expiry: u32,
}

/// The parts of a CONNECT the negotiation looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectRequest<'a> {
    /// Protocol version requested.
    pub version: ProtocolVersion,
    /// Client identifier as sent (may be empty).
    pub client_id: &'a str,
    /// Clean Session (3.1.1) / Clean Start (v5).
    pub clean_start: bool,
    /// Keep alive in seconds, 0 = none.
    pub keep_alive: u16,
    /// v5 Session Expiry Interval (absent = 0).
    pub session_expiry: Option<u32>,
    /// v5 Receive Maximum (absent = 65535).
    pub receive_maximum: Option<u16>,
    /// v5 Maximum Packet Size (absent = no limit).
    pub maximum_packet_size: Option<u32>,
    /// v5 Topic Alias Maximum (absent = 0).
    pub topic_alias_maximum: Option<u16>,
}

/// A CONNECT the hub refuses, answered with CONNACK carrying `code` and then closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectRefusal {
    /// v5 reason code (the codec maps it to a 3.1.1 return code).
    pub code: u8,
    /// Why, for the log and the v5 Reason String.
    pub text: &'static str,
}

/// Outcome of negotiating a CONNECT: everything the connection needs to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// Protocol version of the connection.
    pub version: ProtocolVersion,
    /// Client identifier (assigned if the client sent an empty one).
    pub client_id: ClientId,
    /// Whether the hub assigned the id (v5: sent back as Assigned Client Identifier).
    pub assigned_id: bool,
    /// Start a new session, discarding any existing one.
    pub clean_start: bool,
    /// Keep alive in force, seconds (0 = none).
    pub keep_alive: u16,
    /// Whether `keep_alive` differs from the client's and must be sent as Server Keep Alive.
    pub server_keep_alive: bool,
    /// Session expiry in force after capping, seconds (`u32::MAX` = never).
    pub session_expiry: u32,
    /// Whether the client asked for a longer expiry than granted (v5: sent back in CONNACK).
    pub session_expiry_capped: bool,
    /// Client's Receive Maximum: our outbound window is the minimum of this and ours.
    pub client_receive_maximum: u16,
    /// Client's Maximum Packet Size; larger PUBLISHes to it are dropped.
    pub client_max_packet_size: u32,
    /// Client's Topic Alias Maximum: aliases we may use towards it.
    pub client_topic_alias_maximum: u16,
}

/// Negotiates a CONNECT. `assign_id` produces a fresh unique client id when needed.
pub fn negotiate(
    request: &ConnectRequest<'_>,
    limits: &Limits,
    assign_id: impl FnOnce() -> String,
) -> Result<Negotiated, ConnectRefusal> {
    let v5 = request.version == ProtocolVersion::V5;
    let (client_id, assigned_id) = if request.client_id.is_empty() {
        if !v5 && !request.clean_start {
            // MQTT 3.1.1 §3.1.3.1: an empty id requires CleanSession = 1.
            return Err(ConnectRefusal {
                code: reason::CLIENT_ID_NOT_VALID,
                text: "empty client identifier requires clean session",
            });
        }
        (ClientId::from(assign_id()), true)
    } else {
        (ClientId::from(request.client_id), false)
    };
    if request.receive_maximum == Some(0) {
        return Err(ConnectRefusal {
            code: reason::PROTOCOL_ERROR,
            text: "receive maximum of 0",
        });
    }
    if request.maximum_packet_size == Some(0) {
        return Err(ConnectRefusal {
            code: reason::PROTOCOL_ERROR,
            text: "maximum packet size of 0",
        });
    }
    let (keep_alive, server_keep_alive) = if v5 && limits.server_keep_alive != 0 {
        (
            limits.server_keep_alive,
            limits.server_keep_alive != request.keep_alive,
        )
    } else {
        (request.keep_alive, false)
    };
    let requested_expiry = if v5 {
        request.session_expiry.unwrap_or(0)
    } else if request.clean_start {
        0
    } else {
        // 3.1.1 persistent sessions have no expiry of their own; the configured cap applies.
        u32::MAX
    };
    let session_expiry = requested_expiry.min(limits.max_session_expiry);
    Ok(Negotiated {
        version: request.version,
        client_id,
        assigned_id,
        clean_start: request.clean_start,
        keep_alive,
        server_keep_alive,
        session_expiry,
        session_expiry_capped: v5 && session_expiry != requested_expiry,
        client_receive_maximum: request.receive_maximum.unwrap_or(u16::MAX),
        client_max_packet_size: request.maximum_packet_size.unwrap_or(u32::MAX),
        client_topic_alias_maximum: if v5 {
            request.topic_alias_maximum.unwrap_or(0)
        } else {
            0
        },
    })
}

/// Where an outbound QoS 1/2 message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboundStage {
    /// QoS 1 PUBLISH sent, waiting for PUBACK.
    AwaitPubAck,
    /// QoS 2 PUBLISH sent, waiting for PUBREC.
    AwaitPubRec,
    /// PUBREL sent, waiting for PUBCOMP.
    AwaitPubComp,
}

/// One outbound message in flight.
#[derive(Debug, Clone)]
struct InFlight {
    /// Send order, so a reconnect resends in the original order.
    seq: u64,
    item: QueuedMessage,
    stage: OutboundStage,
}

/// Session state that outlives a connection (parked in the registry while offline).
#[derive(Debug, Default)]
pub struct SessionState {
    /// Outbound QoS 1/2 messages by packet id.
    inflight: HashMap<u16, InFlight>,
    /// Next send sequence number.
    next_seq: u64,
    /// Last packet id handed out; ids are allocated upwards, skipping those in flight.
    last_packet_id: u16,
    /// Inbound QoS 2 packet ids received (and routed) but not yet released by PUBREL.
    inbound_qos2: HashSet<u16>,
}

impl SessionState {
    /// Rebuilds the state of a persistent session read back from the store: outbound
    /// deliveries (resent in log order on reconnect) and inbound QoS 2 ids awaiting PUBREL.
    pub fn restore(
        inflight: impl IntoIterator<Item = (u16, QueuedMessage, OutboundStage)>,
        inbound_qos2: impl IntoIterator<Item = u16>,
    ) -> Self {
        let mut state = Self::default();
        for (packet_id, item, stage) in inflight {
            if packet_id == 0 {
                continue;
            }
            let seq = item.seq.unwrap_or(state.next_seq);
            state.next_seq = state.next_seq.max(seq.saturating_add(1));
            state.last_packet_id = state.last_packet_id.max(packet_id);
            state
                .inflight
                .insert(packet_id, InFlight { seq, item, stage });
        }
        state.inbound_qos2.extend(inbound_qos2);
        state
    }

    /// Number of outbound messages in flight.
    pub fn inflight_len(&self) -> usize {
        self.inflight.len()
    }

    /// Log position of the outbound message in flight under `packet_id`, if the store
    /// tracks it.
    pub fn stored_seq(&self, packet_id: u16) -> Option<Seq> {
        self.inflight.get(&packet_id).and_then(|f| f.item.seq)
    }

    /// Where the outbound message in flight under `packet_id` stands.
    pub fn inflight_stage(&self, packet_id: u16) -> Option<OutboundStage> {
        self.inflight.get(&packet_id).map(|f| f.stage)
    }

    /// The outbound message in flight under `packet_id`.
    pub fn inflight_item(&self, packet_id: u16) -> Option<&QueuedMessage> {
        self.inflight.get(&packet_id).map(|f| &f.item)
    }

    /// Takes the outbound messages a shared subscription chose this session for whose
    /// receipt the client has not confirmed (no PUBACK, no PUBREC yet), in send order: the
    /// session is ending, and another member should get them (MQTT 5.0 §4.8.2).
    pub fn take_unconfirmed_shared(&mut self) -> Vec<QueuedMessage> {
        let mut taken: Vec<InFlight> = Vec::new();
        self.inflight.retain(|_, flight| {
            let unconfirmed = flight.stage != OutboundStage::AwaitPubComp;
            if unconfirmed && flight.item.share.is_some() {
                taken.push(flight.clone());
                false
            } else {
                true
            }
        });
        taken.sort_by_key(|flight| flight.seq);
        taken.into_iter().map(|flight| flight.item).collect()
    }

    /// Allocates a packet id not in use by an outbound message in flight.
    fn allocate_packet_id(&mut self) -> Option<u16> {
        if self.inflight.len() >= usize::from(u16::MAX) {
            return None;
        }
        loop {
            self.last_packet_id = self.last_packet_id.wrapping_add(1);
            if self.last_packet_id != 0 && !self.inflight.contains_key(&self.last_packet_id) {
                return Some(self.last_packet_id);
            }
        }
    }
}

/// A PUBLISH to encode and send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundPublish {
    /// Packet id (QoS 1/2 only).
    pub packet_id: Option<u16>,
    /// QoS on the wire.
    pub qos: QoS,
    /// RETAIN flag on the wire.
    pub retain: bool,
    /// DUP flag (a resend of an unacknowledged message).
    pub dup: bool,
    /// The message.
    pub message: Arc<Message>,
    /// Whether to put the topic name in the packet (false: empty topic + alias).
    pub send_topic: bool,
    /// v5 Topic Alias to include.
    pub topic_alias: Option<u16>,
    /// v5 Subscription Identifiers.
    pub subscription_ids: Vec<u32>,
    /// v5 Message Expiry Interval left, seconds.
    pub message_expiry: Option<u32>,
}

/// A packet the session wants to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound {
    /// PUBLISH.
    Publish(OutboundPublish),
    /// PUBACK with reason code.
    PubAck(u16, u8),
    /// PUBREC with reason code.
    PubRec(u16, u8),
    /// PUBACK with reason code and reason string (v5; the string is dropped for 3.1.1).
    PubAckText(u16, u8, &'static str),
    /// PUBREC with reason code and reason string (v5; the string is dropped for 3.1.1).
    PubRecText(u16, u8, &'static str),
    /// PUBREL with reason code.
    PubRel(u16, u8),
    /// PUBCOMP with reason code.
    PubComp(u16, u8),
    /// PINGRESP.
    PingResp,
    /// CONNACK.
    ConnAck(ConnAck),
    /// SUBACK with one reason code per filter.
    SubAck(u16, Vec<u8>),
    /// UNSUBACK with one reason code per filter (v5; 3.1.1 has none).
    UnsubAck(u16, Vec<u8>),
    /// DISCONNECT (v5 only) with reason code and reason string.
    Disconnect(u8, &'static str),
}

/// A CONNACK to send: the outcome of CONNECT plus the v5 properties the hub announces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnAck {
    /// Session Present flag.
    pub session_present: bool,
    /// v5 reason code (mapped to a 3.1.1 return code at encode time).
    pub code: u8,
    /// v5 Reason String for refusals.
    pub reason_string: Option<&'static str>,
    /// v5 Assigned Client Identifier.
    pub assigned_client_id: Option<String>,
    /// v5 Session Expiry Interval, when the granted one differs from the requested one.
    pub session_expiry: Option<u32>,
    /// v5 Server Keep Alive.
    pub server_keep_alive: Option<u16>,
    /// v5 Receive Maximum.
    pub receive_maximum: u16,
    /// v5 Maximum Packet Size.
    pub maximum_packet_size: u32,
    /// v5 Topic Alias Maximum.
    pub topic_alias_maximum: u16,
}

impl ConnAck {
    /// A refusal (no session present, no properties beyond the reason string).
    pub fn refusal(refusal: ConnectRefusal) -> Self {
        Self {
            session_present: false,
            code: refusal.code,
            reason_string: Some(refusal.text),
            assigned_client_id: None,
            session_expiry: None,
            server_keep_alive: None,
            receive_maximum: 0,
            maximum_packet_size: 0,
            topic_alias_maximum: 0,
        }
    }
}

/// What to do with an inbound PUBLISH after [`Connection::on_publish`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundPublish {
    /// The topic (resolved from a v5 alias if needed).
    pub topic: String,
    /// Route the message to subscribers; false for a resent QoS 2 already routed.
    pub route: bool,
    /// Acknowledgement to send once the message is accepted (after the store commit).
    pub ack: Option<Outbound>,
}

/// Header fields of an inbound PUBLISH the state machine checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishHeader<'a> {
    /// Topic name as received (may be empty when an alias is used).
    pub topic: &'a str,
    /// QoS.
    pub qos: QoS,
    /// Packet id (QoS 1/2).
    pub packet_id: Option<u16>,
    /// v5 Topic Alias.
    pub topic_alias: Option<u16>,
}

/// State of one network connection.
#[derive(Debug)]
pub struct Connection {
    /// Negotiated parameters.
    pub params: Negotiated,
    limits: Limits,
    /// Persistent part, handed back to the broker at disconnect.
    pub session: SessionState,
    /// Inbound topic aliases (alias → topic), v5.
    inbound_aliases: HashMap<u16, String>,
    /// Outbound topic aliases (topic → alias), v5.
    outbound_aliases: HashMap<String, u16>,
    /// Highest outbound alias assigned (aliases are 1..=client's Topic Alias Maximum).
    last_outbound_alias: u16,
}

impl Connection {
    /// A connection on `session` (fresh or resumed) with negotiated `params`.
    pub fn new(params: Negotiated, limits: Limits, session: SessionState) -> Self {
        Self {
            params,
            limits,
            session,
            inbound_aliases: HashMap::new(),
            outbound_aliases: HashMap::new(),
            last_outbound_alias: 0,
        }
    }

    /// The CONNACK accepting this connection.
    pub fn connack(&self, session_present: bool) -> ConnAck {
        let p = &self.params;
        ConnAck {
            session_present,
            code: reason::SUCCESS,
            reason_string: None,
            assigned_client_id: p.assigned_id.then(|| p.client_id.to_string()),
            session_expiry: p.session_expiry_capped.then_some(p.session_expiry),
            server_keep_alive: p.server_keep_alive.then_some(p.keep_alive),
            receive_maximum: self.limits.receive_maximum,
            maximum_packet_size: self.limits.max_packet_size,
            topic_alias_maximum: self.limits.topic_alias_maximum,
        }
    }

    /// Whether this is an MQTT 5 connection.
    pub fn is_v5(&self) -> bool {
        self.params.version == ProtocolVersion::V5
    }

    /// How long the peer may stay silent before it is disconnected: 1.5 × keep alive.
    pub fn keep_alive_deadline(&self) -> Option<Duration> {
        match self.params.keep_alive {
            0 => None,
            secs => Some(Duration::from_millis(u64::from(secs) * 1500)),
        }
    }

    /// A second CONNECT on an established connection (MQTT 5.0 §3.1: a protocol error).
    pub fn on_connect(&self) -> Violation {
        Violation::new(reason::PROTOCOL_ERROR, "second CONNECT on a connection")
    }

    /// The outbound window: min(max_inflight, client's Receive Maximum).
    pub fn window(&self) -> usize {
        usize::from(
            self.limits
                .max_inflight
                .min(self.params.client_receive_maximum),
        )
    }

    /// Whether another QoS 1/2 message may be sent now.
    pub fn can_send_qos(&self) -> bool {
        self.session.inflight.len() < self.window()
    }

    /// Checks an inbound PUBLISH: alias, packet id, receive maximum and QoS 2 duplicates.
    pub fn on_publish(&mut self, header: PublishHeader<'_>) -> Result<InboundPublish, Violation> {
        let topic = self.resolve_topic(header.topic, header.topic_alias)?;
        let v5 = self.is_v5();
        match (header.qos, header.packet_id) {
            (QoS::AtMostOnce, _) => Ok(InboundPublish {
                topic,
                route: true,
                ack: None,
            }),
            (_, None | Some(0)) => Err(Violation::new(
                reason::PROTOCOL_ERROR,
                "QoS > 0 PUBLISH without packet id",
            )),
            (QoS::AtLeastOnce, Some(id)) => Ok(InboundPublish {
                topic,
                route: true,
                ack: Some(Outbound::PubAck(id, reason::SUCCESS)),
            }),
            (QoS::ExactlyOnce, Some(id)) => {
                if self.session.inbound_qos2.contains(&id) {
                    // Resent before our PUBREC arrived (or with DUP): acknowledge, never route twice.
                    return Ok(InboundPublish {
                        topic,
                        route: false,
                        ack: Some(Outbound::PubRec(id, reason::SUCCESS)),
                    });
                }
                if v5 && self.session.inbound_qos2.len() >= usize::from(self.limits.receive_maximum)
                {
                    return Err(Violation::new(
                        reason::RECEIVE_MAXIMUM_EXCEEDED,
                        "receive maximum exceeded",
                    ));
                }
                self.session.inbound_qos2.insert(id);
                Ok(InboundPublish {
                    topic,
                    route: true,
                    ack: Some(Outbound::PubRec(id, reason::SUCCESS)),
                })
            }
        }
    }

    fn resolve_topic(&mut self, topic: &str, alias: Option<u16>) -> Result<String, Violation> {
        let Some(alias) = alias else {
            if topic.is_empty() {
                return Err(Violation::new(
                    reason::PROTOCOL_ERROR,
                    "empty topic without alias",
                ));
            }
            return Ok(topic.to_owned());
        };
        if alias == 0 || alias > self.limits.topic_alias_maximum {
            return Err(Violation::new(
                reason::TOPIC_ALIAS_INVALID,
                "topic alias out of range",
            ));
        }
        if topic.is_empty() {
            self.inbound_aliases
                .get(&alias)
                .cloned()
                .ok_or(Violation::new(
                    reason::PROTOCOL_ERROR,
                    "unknown topic alias",
                ))
        } else {
            self.inbound_aliases.insert(alias, topic.to_owned());
            Ok(topic.to_owned())
        }
    }

    /// PUBREL from the peer: release the QoS 2 packet id, answer PUBCOMP.
    pub fn on_pubrel(&mut self, packet_id: u16) -> Outbound {
        let code = if self.session.inbound_qos2.remove(&packet_id) {
            reason::SUCCESS
        } else {
            reason::PACKET_ID_NOT_FOUND
        };
        Outbound::PubComp(packet_id, if self.is_v5() { code } else { reason::SUCCESS })
    }

    /// PUBACK from the peer; returns whether it completed a delivery. Unknown ids are
    /// ignored (a late ack after a resend).
    pub fn on_puback(&mut self, packet_id: u16) -> bool {
        let done = self
            .session
            .inflight
            .get(&packet_id)
            .is_some_and(|f| f.stage == OutboundStage::AwaitPubAck);
        if done {
            self.session.inflight.remove(&packet_id);
        }
        done
    }

    /// Forgets an inbound QoS 2 packet id whose PUBLISH was refused (not stored), so a
    /// resend is handled as a new message.
    pub fn refuse_inbound(&mut self, packet_id: u16) {
        self.session.inbound_qos2.remove(&packet_id);
    }

    /// PUBREC from the peer: answer PUBREL (or drop the message on an error reason code).
    pub fn on_pubrec(&mut self, packet_id: u16, code: u8) -> Option<Outbound> {
        match self.session.inflight.get_mut(&packet_id) {
            Some(f) if f.stage != OutboundStage::AwaitPubAck => {
                if code >= 0x80 {
                    // MQTT 5.0 §4.3.3: a failing PUBREC ends the exchange.
                    self.session.inflight.remove(&packet_id);
                    return None;
                }
                f.stage = OutboundStage::AwaitPubComp;
                Some(Outbound::PubRel(packet_id, reason::SUCCESS))
            }
            _ => Some(Outbound::PubRel(
                packet_id,
                if self.is_v5() {
                    reason::PACKET_ID_NOT_FOUND
                } else {
                    reason::SUCCESS
                },
            )),
        }
    }

    /// PUBCOMP from the peer: the QoS 2 exchange is complete. Returns whether it completed
    /// a delivery.
    pub fn on_pubcomp(&mut self, packet_id: u16) -> bool {
        let done = self
            .session
            .inflight
            .get(&packet_id)
            .is_some_and(|f| f.stage == OutboundStage::AwaitPubComp);
        if done {
            self.session.inflight.remove(&packet_id);
        }
        done
    }

    /// Turns a queued message into a PUBLISH, or `None` if it expired at `now`.
    ///
    /// QoS 1/2 messages take a packet id and a window slot: call only if
    /// [`Connection::can_send_qos`] (QoS 0 never waits for the window).
    pub fn send(&mut self, item: QueuedMessage, now: Instant) -> Option<OutboundPublish> {
        let message_expiry = match item.message.expiry {
            Some(expiry) => Some(expiry.remaining_secs(now)?),
            None => None,
        };
        // The packet id comes first: a message that cannot be sent must not leave an alias
        // behind that the client never learnt.
        let packet_id = match item.qos {
            QoS::AtMostOnce => None,
            QoS::AtLeastOnce | QoS::ExactlyOnce => Some(self.session.allocate_packet_id()?),
        };
        let (send_topic, topic_alias) = self.outbound_alias(&item.message.topic);
        let publish = OutboundPublish {
            packet_id,
            qos: item.qos,
            retain: item.retain,
            dup: false,
            message: Arc::clone(&item.message),
            send_topic,
            topic_alias,
            subscription_ids: item.subscription_ids.clone(),
            message_expiry,
        };
        if let Some(packet_id) = packet_id {
            let stage = if item.qos == QoS::AtLeastOnce {
                OutboundStage::AwaitPubAck
            } else {
                OutboundStage::AwaitPubRec
            };
            let seq = self.session.next_seq;
            self.session.next_seq += 1;
            self.session
                .inflight
                .insert(packet_id, InFlight { seq, item, stage });
        }
        Some(publish)
    }

    /// Forgets an outbound PUBLISH that could not be sent (too big for the client): frees its
    /// packet id and any topic alias it would have established.
    pub fn abandon(&mut self, publish: &OutboundPublish) {
        if let Some(packet_id) = publish.packet_id {
            self.session.inflight.remove(&packet_id);
        }
        // Only the alias this PUBLISH just introduced can be taken back; aliases are handed
        // out in increasing order, so it is the last one.
        if publish.send_topic && publish.topic_alias == Some(self.last_outbound_alias) {
            self.outbound_aliases.remove(&publish.message.topic);
            self.last_outbound_alias -= 1;
        }
    }

    /// Picks the topic alias for an outbound topic: reuse, assign while slots are free, or
    /// send the plain topic.
    fn outbound_alias(&mut self, topic: &str) -> (bool, Option<u16>) {
        if !self.is_v5() || self.params.client_topic_alias_maximum == 0 {
            return (true, None);
        }
        if let Some(&alias) = self.outbound_aliases.get(topic) {
            return (false, Some(alias));
        }
        if self.last_outbound_alias < self.params.client_topic_alias_maximum {
            self.last_outbound_alias += 1;
            let alias = self.last_outbound_alias;
            self.outbound_aliases.insert(topic.to_owned(), alias);
            return (true, Some(alias));
        }
        (true, None)
    }

    /// Packets to resend on a resumed session, in original order: unacknowledged PUBLISHes
    /// with DUP set, and PUBRELs for messages already PUBREC'd (MQTT 5.0 §4.4).
    pub fn resend_inflight(&mut self, now: Instant) -> Vec<Outbound> {
        let mut pending: Vec<(u64, u16)> = self
            .session
            .inflight
            .iter()
            .map(|(id, f)| (f.seq, *id))
            .collect();
        pending.sort_unstable();
        let mut out = Vec::with_capacity(pending.len());
        for (_, packet_id) in pending {
            let Some(flight) = self.session.inflight.get(&packet_id) else {
                continue;
            };
            if flight.stage == OutboundStage::AwaitPubComp {
                out.push(Outbound::PubRel(packet_id, reason::SUCCESS));
                continue;
            }
            let item = flight.item.clone();
            let message_expiry = item.message.expiry.and_then(|e| e.remaining_secs(now));
            let (send_topic, topic_alias) = self.outbound_alias(&item.message.topic);
            out.push(Outbound::Publish(OutboundPublish {
                packet_id: Some(packet_id),
                qos: item.qos,
                retain: item.retain,
                dup: true,
                message: Arc::clone(&item.message),
                send_topic,
                topic_alias,
                subscription_ids: item.subscription_ids.clone(),
                message_expiry,
            }));
        }
        out
    }

    /// DISCONNECT from a v5 peer that changes the session expiry. Changing it from 0 to
    /// non-zero is a protocol error (MQTT 5.0 §3.14.2.2.2).
    pub fn on_disconnect_expiry(&mut self, expiry: Option<u32>) -> Result<(), Violation> {
        let Some(expiry) = expiry else { return Ok(()) };
        if self.params.session_expiry == 0 && expiry != 0 {
            return Err(Violation::new(
                reason::PROTOCOL_ERROR,
                "session expiry changed from 0 at DISCONNECT",
            ));
        }
        self.params.session_expiry = expiry.min(self.limits.max_session_expiry);
        Ok(())
    }

    /// Ends the connection: hands back the persistent state.
    pub fn into_session(self) -> SessionState {
        self.session
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::message::MessageProperties;

    const LIMITS: Limits = Limits {
        receive_maximum: 2,
        max_inflight: 3,
        topic_alias_maximum: 4,
        max_packet_size: 1 << 20,
        server_keep_alive: 0,
        max_session_expiry: 3600,
    };

    fn request(version: ProtocolVersion, client_id: &str) -> ConnectRequest<'_> {
        ConnectRequest {
            version,
            client_id,
            clean_start: true,
            keep_alive: 60,
            session_expiry: None,
            receive_maximum: None,
            maximum_packet_size: None,
            topic_alias_maximum: None,
        }
    }

    fn connection(version: ProtocolVersion) -> Connection {
        let mut req = request(version, "c1");
        req.topic_alias_maximum = Some(2);
        req.receive_maximum = Some(10);
        let params = negotiate(&req, &LIMITS, || unreachable!("id given")).expect("accepted");
        Connection::new(params, LIMITS, SessionState::default())
    }

    fn queued(topic: &str, qos: QoS) -> QueuedMessage {
        QueuedMessage {
            message: Arc::new(Message {
                topic: topic.into(),
                payload: Bytes::from_static(b"x"),
                qos,
                retain: false,
                properties: MessageProperties::default(),
                expiry: None,
                publisher: Arc::from("p"),
            }),
            qos,
            retain: false,
            subscription_ids: Default::default(),
            seq: None,
            share: None,
        }
    }

    #[test]
    fn restored_state_resends_in_log_order_and_keeps_qos2_ids() {
        let tracked = |topic, seq| QueuedMessage {
            seq: Some(seq),
            ..queued(topic, QoS::AtLeastOnce)
        };
        let state = SessionState::restore(
            [
                (7, tracked("late", 20), OutboundStage::AwaitPubAck),
                (3, tracked("early", 10), OutboundStage::AwaitPubComp),
            ],
            [42],
        );
        assert_eq!(state.stored_seq(7), Some(20));
        let mut c = Connection::new(connection(ProtocolVersion::V5).params, LIMITS, state);
        let resent = c.resend_inflight(Instant::now());
        assert_eq!(resent.len(), 2);
        assert_eq!(resent[0], Outbound::PubRel(3, reason::SUCCESS));
        assert!(matches!(&resent[1], Outbound::Publish(p) if p.dup && p.packet_id == Some(7)));
        assert!(
            !c.on_publish(header("t", QoS::ExactlyOnce, Some(42)))
                .expect("valid")
                .route,
            "restored QoS 2 id is a duplicate until PUBREL"
        );
        assert_ne!(c.session.allocate_packet_id(), Some(7));
    }

    /// Only deliveries of a shared subscription whose receipt the client has not confirmed
    /// leave an ending session, in send order; the rest stay.
    #[test]
    fn unconfirmed_shared_deliveries_leave_in_send_order() {
        let item = |topic, seq, share: Option<&str>| QueuedMessage {
            seq: Some(seq),
            share: share.map(Arc::from),
            ..queued(topic, QoS::ExactlyOnce)
        };
        let share = Some("$share/g/t/#");
        let mut state = SessionState::restore(
            [
                (1, item("acked-half", 5, share), OutboundStage::AwaitPubComp),
                (2, item("second", 30, share), OutboundStage::AwaitPubRec),
                (3, item("direct", 10, None), OutboundStage::AwaitPubAck),
                (4, item("first", 20, share), OutboundStage::AwaitPubAck),
            ],
            [],
        );
        let taken: Vec<String> = state
            .take_unconfirmed_shared()
            .iter()
            .map(|q| q.message.topic.clone())
            .collect();
        assert_eq!(taken, ["first", "second"]);
        assert_eq!(state.inflight_len(), 2);
        assert_eq!(state.inflight_stage(1), Some(OutboundStage::AwaitPubComp));
        assert_eq!(state.inflight_stage(3), Some(OutboundStage::AwaitPubAck));
    }

    fn header(topic: &str, qos: QoS, packet_id: Option<u16>) -> PublishHeader<'_> {
        PublishHeader {
            topic,
            qos,
            packet_id,
            topic_alias: None,
        }
    }

    #[test]
    fn empty_client_id_is_assigned_for_v5_and_clean_311() {
        let n = negotiate(&request(ProtocolVersion::V5, ""), &LIMITS, || {
            "auto-1".into()
        })
        .expect("accepted");
        assert_eq!(&*n.client_id, "auto-1");
        assert!(n.assigned_id);
        let n = negotiate(&request(ProtocolVersion::V311, ""), &LIMITS, || {
            "auto-2".into()
        })
        .expect("accepted");
        assert_eq!(&*n.client_id, "auto-2");
    }

    #[test]
    fn empty_client_id_without_clean_session_is_refused_on_311() {
        let mut req = request(ProtocolVersion::V311, "");
        req.clean_start = false;
        let refusal = negotiate(&req, &LIMITS, || "x".into()).unwrap_err();
        assert_eq!(
            refusal.code,
            reason::CLIENT_ID_NOT_VALID,
            "3.1.1 return code 0x02"
        );
    }

    #[test]
    fn session_expiry_is_capped_and_311_persistent_gets_the_cap() {
        let mut req = request(ProtocolVersion::V5, "c");
        req.session_expiry = Some(u32::MAX);
        let n = negotiate(&req, &LIMITS, String::new).expect("accepted");
        assert_eq!(n.session_expiry, 3600);
        assert!(n.session_expiry_capped);
        let mut req = request(ProtocolVersion::V311, "c");
        req.clean_start = false;
        assert_eq!(
            negotiate(&req, &LIMITS, String::new)
                .expect("ok")
                .session_expiry,
            3600
        );
        let req = request(ProtocolVersion::V311, "c");
        assert_eq!(
            negotiate(&req, &LIMITS, String::new)
                .expect("ok")
                .session_expiry,
            0
        );
    }

    #[test]
    fn server_keep_alive_overrides_v5_only() {
        let limits = Limits {
            server_keep_alive: 30,
            ..LIMITS
        };
        let n = negotiate(&request(ProtocolVersion::V5, "c"), &limits, String::new).expect("ok");
        assert_eq!((n.keep_alive, n.server_keep_alive), (30, true));
        let n = negotiate(&request(ProtocolVersion::V311, "c"), &limits, String::new).expect("ok");
        assert_eq!((n.keep_alive, n.server_keep_alive), (60, false));
    }

    #[test]
    fn keep_alive_deadline_is_one_and_a_half_times() {
        let c = connection(ProtocolVersion::V5);
        assert_eq!(c.keep_alive_deadline(), Some(Duration::from_secs(90)));
    }

    #[test]
    fn qos1_publish_is_acked_and_routed() {
        let mut c = connection(ProtocolVersion::V311);
        let got = c
            .on_publish(header("a/b", QoS::AtLeastOnce, Some(7)))
            .expect("valid");
        assert!(got.route);
        assert_eq!(got.ack, Some(Outbound::PubAck(7, 0)));
    }

    #[test]
    fn qos2_resend_before_pubrel_is_not_routed_twice() {
        let mut c = connection(ProtocolVersion::V5);
        let first = c
            .on_publish(header("a", QoS::ExactlyOnce, Some(9)))
            .expect("valid");
        assert!(first.route);
        let again = c
            .on_publish(header("a", QoS::ExactlyOnce, Some(9)))
            .expect("valid");
        assert!(!again.route);
        assert_eq!(again.ack, Some(Outbound::PubRec(9, 0)));
        assert_eq!(c.on_pubrel(9), Outbound::PubComp(9, 0));
        assert_eq!(
            c.on_pubrel(9),
            Outbound::PubComp(9, reason::PACKET_ID_NOT_FOUND)
        );
        let after = c
            .on_publish(header("a", QoS::ExactlyOnce, Some(9)))
            .expect("valid");
        assert!(after.route, "a released id starts a new message");
    }

    #[test]
    fn inbound_receive_maximum_is_enforced() {
        let mut c = connection(ProtocolVersion::V5);
        c.on_publish(header("a", QoS::ExactlyOnce, Some(1)))
            .expect("valid");
        c.on_publish(header("a", QoS::ExactlyOnce, Some(2)))
            .expect("valid");
        let err = c
            .on_publish(header("a", QoS::ExactlyOnce, Some(3)))
            .unwrap_err();
        assert_eq!(err.code, reason::RECEIVE_MAXIMUM_EXCEEDED);
    }

    #[test]
    fn qos_publish_without_packet_id_is_a_protocol_error() {
        let mut c = connection(ProtocolVersion::V5);
        let err = c
            .on_publish(header("a", QoS::AtLeastOnce, None))
            .unwrap_err();
        assert_eq!(err.code, reason::PROTOCOL_ERROR);
    }

    #[test]
    fn inbound_topic_aliases() {
        let mut c = connection(ProtocolVersion::V5);
        let with = |topic, alias| PublishHeader {
            topic,
            qos: QoS::AtMostOnce,
            packet_id: None,
            topic_alias: Some(alias),
        };
        assert_eq!(c.on_publish(with("a/b", 1)).expect("set").topic, "a/b");
        assert_eq!(c.on_publish(with("", 1)).expect("use").topic, "a/b");
        assert_eq!(
            c.on_publish(with("", 2)).unwrap_err().code,
            reason::PROTOCOL_ERROR
        );
        assert_eq!(
            c.on_publish(with("x", 0)).unwrap_err().code,
            reason::TOPIC_ALIAS_INVALID
        );
        assert_eq!(
            c.on_publish(with("x", 5)).unwrap_err().code,
            reason::TOPIC_ALIAS_INVALID
        );
    }

    #[test]
    fn outbound_window_and_packet_ids() {
        let mut c = connection(ProtocolVersion::V5);
        assert_eq!(c.window(), 3);
        let mut ids = Vec::new();
        while c.can_send_qos() {
            let p = c
                .send(queued("t", QoS::AtLeastOnce), Instant::now())
                .expect("sent");
            ids.push(p.packet_id.expect("qos1 has id"));
        }
        assert_eq!(ids, [1, 2, 3]);
        c.on_puback(2);
        assert!(c.can_send_qos());
        let p = c
            .send(queued("t", QoS::AtLeastOnce), Instant::now())
            .expect("sent");
        assert_eq!(p.packet_id, Some(4), "ids in flight are not reused");
        let q0 = c
            .send(queued("t", QoS::AtMostOnce), Instant::now())
            .expect("sent");
        assert_eq!(q0.packet_id, None);
    }

    #[test]
    fn window_is_capped_by_client_receive_maximum() {
        let mut req = request(ProtocolVersion::V5, "c");
        req.receive_maximum = Some(1);
        let params = negotiate(&req, &LIMITS, String::new).expect("ok");
        let c = Connection::new(params, LIMITS, SessionState::default());
        assert_eq!(c.window(), 1);
    }

    #[test]
    fn qos2_outbound_flow_and_resend_on_reconnect() {
        let mut c = connection(ProtocolVersion::V5);
        let now = Instant::now();
        let a = c.send(queued("a", QoS::ExactlyOnce), now).expect("sent");
        let b = c.send(queued("b", QoS::AtLeastOnce), now).expect("sent");
        let (a_id, b_id) = (a.packet_id.expect("id"), b.packet_id.expect("id"));
        assert_eq!(c.on_pubrec(a_id, 0), Some(Outbound::PubRel(a_id, 0)));
        let session = c.into_session();
        assert_eq!(session.inflight_len(), 2);

        let mut resumed = connection(ProtocolVersion::V5);
        resumed.session = session;
        let resent = resumed.resend_inflight(now);
        assert_eq!(resent.len(), 2);
        assert_eq!(resent[0], Outbound::PubRel(a_id, 0));
        let Outbound::Publish(p) = &resent[1] else {
            panic!("expected PUBLISH: {resent:?}")
        };
        assert!(p.dup);
        assert_eq!(p.packet_id, Some(b_id));
        resumed.on_pubcomp(a_id);
        resumed.on_puback(b_id);
        assert_eq!(resumed.session.inflight_len(), 0);
    }

    #[test]
    fn outbound_aliases_are_reused_up_to_the_client_maximum() {
        let mut c = connection(ProtocolVersion::V5);
        let now = Instant::now();
        let first = c.send(queued("a", QoS::AtMostOnce), now).expect("sent");
        assert_eq!((first.send_topic, first.topic_alias), (true, Some(1)));
        let again = c.send(queued("a", QoS::AtMostOnce), now).expect("sent");
        assert_eq!((again.send_topic, again.topic_alias), (false, Some(1)));
        c.send(queued("b", QoS::AtMostOnce), now).expect("sent");
        let third = c.send(queued("c", QoS::AtMostOnce), now).expect("sent");
        assert_eq!(
            (third.send_topic, third.topic_alias),
            (true, None),
            "aliases exhausted"
        );
    }

    #[test]
    fn abandoned_publish_frees_its_packet_id_and_new_alias() {
        let mut c = connection(ProtocolVersion::V5);
        let now = Instant::now();
        let dropped = c.send(queued("big", QoS::AtLeastOnce), now).expect("sent");
        assert_eq!(dropped.topic_alias, Some(1));
        c.abandon(&dropped);
        assert_eq!(c.session.inflight_len(), 0);
        let next = c.send(queued("big", QoS::AtLeastOnce), now).expect("sent");
        assert_eq!(
            (next.send_topic, next.topic_alias),
            (true, Some(1)),
            "alias introduced again"
        );
    }

    #[test]
    fn disconnect_may_not_raise_expiry_from_zero() {
        let mut c = connection(ProtocolVersion::V5);
        assert_eq!(
            c.on_disconnect_expiry(Some(10)).unwrap_err().code,
            reason::PROTOCOL_ERROR
        );
        assert!(c.on_disconnect_expiry(Some(0)).is_ok());
    }
}
