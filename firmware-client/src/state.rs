//! The sans-IO protocol core: [`Session`].
//!
//! A `Session` turns caller requests (connect, publish, subscribe, the passing
//! of time) and bytes from the broker into bytes to send and [`Event`]s. It
//! never touches a transport; the blocking and async drivers are loops around
//! it, and tests drive it directly.
//!
//! # Buffers
//!
//! The caller owns both buffers ([`Buffers`]).
//!
//! - `rx` holds bytes read from the broker. The packet behind the last
//!   [`Event`] stays in place (the event borrows it) until the next call that
//!   reads or decodes, which drops it. The largest packet the client accepts
//!   is `rx.len()`, announced to 5.0 brokers as Maximum Packet Size.
//! - `tx` is split in two: `tx[..stored]` keeps every QoS 1 PUBLISH awaiting
//!   its PUBACK, encoded and back to back in send order, so a reconnect can
//!   resend the exact bytes with DUP set; `tx[stored..]` is scratch for the
//!   packet being sent. A PUBACK removes its packet and moves the later ones
//!   down. The in-flight table (`N` entries) records only id and length.

use core::convert::Infallible;

use heapless::Vec;
use tern_mqtt::client::{
    AckType, ConnectRequest, PublishRequest, WillRequest, encode_ack, encode_disconnect,
    encode_ping_request, encode_subscribe, encode_unsubscribe,
};
use tern_mqtt::{
    ConnAckInfo, DecodeOptions, EncodeError, Incoming, PacketType, PublishProperties, QoS,
    ReasonCode, ReasonCodes, decode_from_server, frame_len,
};

use crate::config::Config;
use crate::error::{Error, ProtocolError};

/// Errors of the sans-IO core, which has no transport.
pub type CoreError = Error<Infallible>;

/// Most topic filters one SUBSCRIBE or UNSUBSCRIBE carries.
pub const MAX_FILTERS: usize = 8;

/// DUP flag in the first byte of a PUBLISH.
const DUP_FLAG: u8 = 0x08;

/// Caller-owned receive and transmit buffers.
#[derive(Debug)]
pub struct Buffers<'a> {
    rx: &'a mut [u8],
    tx: &'a mut [u8],
}

impl<'a> Buffers<'a> {
    /// `rx` bounds the largest incoming packet; `tx` bounds the largest
    /// outgoing packet plus every QoS 1 publish kept for resending. A QoS 1
    /// publish is refused ([`Error::BufferTooSmall`]) unless a CONNECT still
    /// fits behind it, so the client can always reconnect to deliver it.
    pub fn new(rx: &'a mut [u8], tx: &'a mut [u8]) -> Self {
        Self { rx, tx }
    }
}

/// What a successful CONNECT established.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectInfo {
    /// The broker resumed a stored session.
    pub session_present: bool,
    /// Unacknowledged QoS 1 publishes resent (with DUP) after this CONNACK.
    pub resent: usize,
}

/// An application message received from the broker, borrowed from the rx buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    /// Topic name.
    pub topic: &'a str,
    /// Payload bytes.
    pub payload: &'a [u8],
    /// QoS the broker delivered it with.
    pub qos: QoS,
    /// Retained message.
    pub retain: bool,
    /// The broker marked it as a redelivery.
    pub dup: bool,
    /// PUBLISH properties (5.0): user properties, content type, ...
    pub properties: PublishProperties<'a>,
}

/// Something the broker told the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event<'a> {
    /// CONNACK accepted the connection (returned by `connect`, never by `poll`).
    Connected(ConnectInfo),
    /// An application message; any acknowledgement is already sent.
    Message(Message<'a>),
    /// PUBACK for a QoS 1 publish of this client. `reason` is an error code
    /// when the broker refused the message (5.0).
    Published {
        /// Packet identifier returned by `publish`.
        packet_id: u16,
        /// Reason code of the PUBACK.
        reason: ReasonCode,
    },
    /// SUBACK: one reason code (granted QoS or failure) per filter.
    Subscribed {
        /// Packet identifier returned by `subscribe`.
        packet_id: u16,
        /// Per-filter results, in request order.
        reason_codes: ReasonCodes<'a>,
    },
    /// UNSUBACK.
    Unsubscribed {
        /// Packet identifier returned by `unsubscribe`.
        packet_id: u16,
    },
    /// PUBACK of a transaction's commit or rollback (feature `tx`), reported
    /// instead of [`Event::Published`].
    #[cfg(feature = "tx")]
    TxResolved(crate::tx::TxResolution),
    /// The hub asks how this transaction ends (feature `tx`): a PUBLISH on
    /// this client's check topic, already acknowledged. Answer with a commit or
    /// a rollback; a check repeated (or answered twice) is harmless, the late
    /// answer gets [`crate::TxOutcome::UnknownTransaction`].
    #[cfg(feature = "tx")]
    TxCheck(crate::tx::TxId),
}

/// Result of [`Session::handle`]: an event for the application and the bytes
/// to send back (empty when the packet needs no answer).
#[derive(Debug)]
pub struct Step<'s> {
    /// Event to report, if the packet carried one.
    pub event: Option<Event<'s>>,
    /// Acknowledgement to write before reporting the event.
    pub reply: &'s [u8],
}

/// A QoS 1 publish awaiting PUBACK; its bytes are in `tx` (see module docs).
#[derive(Debug, Clone, Copy)]
struct Inflight {
    packet_id: u16,
    len: usize,
}

/// Connection state apart from the buffers, so packet handling can borrow
/// `rx` while it updates this.
#[derive(Debug)]
struct State<const N: usize> {
    /// CONNACK accepted; cleared by DISCONNECT, errors and `connect`.
    connected: bool,
    /// CONNECT sent, CONNACK not yet received.
    awaiting_connack: bool,
    next_id: u16,
    inflight: Vec<Inflight, N>,
    /// Bytes of `tx` holding the in-flight publishes.
    stored: usize,
    /// Incoming QoS 2 ids between PUBREC and PUBREL, so a redelivery is not
    /// reported twice.
    #[cfg(feature = "qos2")]
    qos2_in: Vec<u16, N>,
    /// In-flight limit: `min(N, broker Receive Maximum)`.
    send_window: usize,
    /// Largest packet the broker accepts.
    max_out_packet: usize,
    /// Highest publish QoS the broker accepts.
    max_qos: QoS,
    /// Length of the last CONNECT: scratch space kept free behind the stored
    /// publishes, so a reconnect (and every acknowledgement) always fits.
    reserve: usize,
    /// At most 65 535 000 (a 16-bit number of seconds).
    keep_alive_ms: u32,
    last_tx_ms: u64,
    ping_sent_ms: Option<u64>,
}

/// The sans-IO MQTT client session. See the module docs.
#[derive(Debug)]
pub struct Session<'a, const N: usize> {
    config: Config<'a>,
    rx: &'a mut [u8],
    /// Bytes of `rx` filled by the transport.
    rx_len: usize,
    /// Length of the already-handled packet at the front of `rx`.
    rx_consumed: usize,
    tx: &'a mut [u8],
    st: State<N>,
}

/// The size of an encoded packet, or the client's error for an encoder failure.
fn encoded(result: Result<usize, EncodeError>) -> Result<usize, CoreError> {
    result.map_err(Error::encode)
}

/// `buf.copy_within(src, dest)` for `dest <= src.start`, as a plain forward loop:
/// `copy_within` links the general `memmove` (about 1.5 KB of flash on Cortex-M),
/// and both uses here only ever move bytes towards the front.
fn move_down(buf: &mut [u8], src: core::ops::Range<usize>, dest: usize) {
    let Some(gap) = src.start.checked_sub(dest) else {
        return;
    };
    for i in src {
        if let Some(&b) = buf.get(i)
            && let Some(d) = buf.get_mut(i - gap)
        {
            *d = b;
        }
    }
}

fn protocol(e: ProtocolError) -> CoreError {
    Error::Protocol(e)
}

impl<'a, const N: usize> Session<'a, N> {
    /// A disconnected session.
    pub fn new(config: Config<'a>, buffers: Buffers<'a>) -> Self {
        Self {
            config,
            rx: buffers.rx,
            rx_len: 0,
            rx_consumed: 0,
            tx: buffers.tx,
            st: State {
                connected: false,
                awaiting_connack: false,
                next_id: 1,
                inflight: Vec::new(),
                stored: 0,
                #[cfg(feature = "qos2")]
                qos2_in: Vec::new(),
                send_window: N,
                max_out_packet: usize::MAX,
                max_qos: QoS::ExactlyOnce,
                reserve: 0,
                keep_alive_ms: 0,
                last_tx_ms: 0,
                ping_sent_ms: None,
            },
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config<'a> {
        &self.config
    }

    /// CONNACK accepted and no error since.
    pub fn is_connected(&self) -> bool {
        self.st.connected
    }

    /// QoS 1 publishes awaiting PUBACK.
    pub fn inflight_len(&self) -> usize {
        self.st.inflight.len()
    }

    /// Records that the transport failed or closed: the session stays, the
    /// connection is gone.
    pub fn connection_lost(&mut self) {
        self.st.connected = false;
        self.st.awaiting_connack = false;
        self.st.ping_sent_ms = None;
    }

    /// Starts a connection: forgets buffered input and returns the CONNECT to send.
    pub fn connect(&mut self, now_ms: u64) -> Result<&[u8], CoreError> {
        self.connection_lost();
        self.rx_len = 0;
        self.rx_consumed = 0;
        let c = &self.config;
        let receive_maximum = u16::try_from(N)
            .map_or(c.receive_maximum, |n| n.min(c.receive_maximum))
            .max(1);
        let connect = ConnectRequest {
            clean_start: c.clean_start,
            keep_alive: c.keep_alive_secs,
            client_id: c.client_id,
            will: c.will.map(|w| WillRequest {
                topic: w.topic,
                payload: w.payload,
                qos: w.qos,
                retain: w.retain,
            }),
            username: c.username,
            password: c.password,
            session_expiry_interval: (c.session_expiry_secs > 0).then_some(c.session_expiry_secs),
            receive_maximum: Some(receive_maximum),
            maximum_packet_size: Some(u32::try_from(self.rx.len()).unwrap_or(u32::MAX)),
        };
        let start = self.st.stored;
        let out = self.tx.get_mut(start..).unwrap_or_default();
        let n = encoded(connect.encode(c.version, out))?;
        self.st.reserve = n;
        self.st.awaiting_connack = true;
        self.st.last_tx_ms = now_ms;
        Ok(&self.tx[start..start + n])
    }

    /// The free tail of `rx` to read into. Drops the packet handled last.
    /// Fails when a packet announced by the broker does not fit `rx`.
    pub fn rx_free(&mut self) -> Result<&mut [u8], CoreError> {
        self.discard_consumed();
        if self.rx_len == self.rx.len() {
            return Err(self.too_large());
        }
        Ok(&mut self.rx[self.rx_len..])
    }

    /// Records `n` bytes read into the slice [`Session::rx_free`] returned.
    pub fn rx_filled(&mut self, n: usize) {
        self.rx_len = self.rx_len.saturating_add(n).min(self.rx.len());
    }

    /// Copies bytes from the broker into `rx` (for tests and transports that
    /// push data); returns how many fitted.
    pub fn receive(&mut self, bytes: &[u8]) -> Result<usize, CoreError> {
        let free = self.rx_free()?;
        let n = free.len().min(bytes.len());
        free[..n].copy_from_slice(&bytes[..n]);
        self.rx_filled(n);
        Ok(n)
    }

    fn discard_consumed(&mut self) {
        if self.rx_consumed > 0 {
            let used = self.rx_consumed.min(self.rx_len);
            move_down(self.rx, used..self.rx_len, 0);
            self.rx_len -= used;
            self.rx_consumed = 0;
        }
    }

    /// Largest packet `rx` can hold, as the codec's size limit.
    fn rx_limit(&self) -> u32 {
        u32::try_from(self.rx.len()).unwrap_or(u32::MAX)
    }

    fn too_large(&self) -> CoreError {
        Error::BufferTooSmall {
            needed: self.rx.len() + 1,
            available: self.rx.len(),
        }
    }

    /// Whether `rx` holds a complete packet. Fails on a malformed fixed header
    /// or as soon as the fixed header announces a packet larger than `rx`.
    pub fn frame_ready(&mut self) -> Result<bool, CoreError> {
        self.discard_consumed();
        match frame_len(&self.rx[..self.rx_len], self.rx_limit()) {
            Ok(_) => Ok(true),
            Err(tern_mqtt::Error::PacketTooLarge { size, .. }) => Err(Error::BufferTooSmall {
                needed: size,
                available: self.rx.len(),
            }),
            Err(e) if e.is_incomplete() => {
                if self.rx_len == self.rx.len() {
                    Err(self.too_large())
                } else {
                    Ok(false)
                }
            }
            Err(e) => Err(protocol(ProtocolError::Malformed(e))),
        }
    }

    /// Handles the packet at the front of `rx`, if complete. Returns the event
    /// and the acknowledgement to send.
    pub fn handle(&mut self, now_ms: u64) -> Result<Step<'_>, CoreError> {
        if !self.frame_ready()? {
            return Ok(Step {
                event: None,
                reply: &[],
            });
        }
        let version = self.config.version;
        let Self {
            rx,
            rx_len,
            rx_consumed,
            tx,
            st,
            config,
        } = self;
        let opts = DecodeOptions {
            version,
            max_packet_size: u32::try_from(rx.len()).unwrap_or(u32::MAX),
        };
        let rx: &[u8] = &rx[..*rx_len];
        let (packet, used) = match decode_from_server(rx, &opts) {
            Ok(ok) => ok,
            Err(tern_mqtt::Error::NotFromServer(t)) => {
                st.connected = false;
                st.awaiting_connack = false;
                return Err(protocol(ProtocolError::Unexpected(t)));
            }
            Err(e) => {
                warn!("malformed packet from the broker: {:?}", e);
                st.connected = false;
                return Err(protocol(ProtocolError::Malformed(e)));
            }
        };
        *rx_consumed = used;
        // Any packet from the broker proves the connection is alive.
        st.ping_sent_ms = None;
        let unexpected = |t: PacketType| Err(protocol(ProtocolError::Unexpected(t)));

        if st.awaiting_connack {
            let Incoming::ConnAck(ack) = packet else {
                st.awaiting_connack = false;
                return unexpected(packet.packet_type());
            };
            let info = st.on_connack(&ack, config, now_ms)?;
            return Ok(Step {
                event: Some(Event::Connected(info)),
                reply: &[],
            });
        }
        if !st.connected {
            return unexpected(packet.packet_type());
        }
        match packet {
            Incoming::Publish(p) => {
                if p.topic.is_empty() {
                    st.connected = false;
                    return Err(protocol(ProtocolError::TopicAlias));
                }
                let message = Message {
                    topic: p.topic,
                    payload: p.payload,
                    qos: p.qos,
                    retain: p.retain,
                    dup: p.dup,
                    properties: p.properties,
                };
                let scratch = tx.get_mut(st.stored..).unwrap_or_default();
                let (deliver, n) = match p.qos {
                    QoS::AtMostOnce => (true, 0),
                    QoS::AtLeastOnce => {
                        let ack = encode_ack(
                            AckType::PubAck,
                            p.packet_id,
                            ReasonCode::Success,
                            version,
                            scratch,
                        );
                        (true, encoded(ack)?)
                    }
                    #[cfg(not(feature = "qos2"))]
                    QoS::ExactlyOnce => {
                        // Every subscription asked for QoS 1 at most.
                        st.connected = false;
                        return Err(protocol(ProtocolError::QoSNotGranted));
                    }
                    #[cfg(feature = "qos2")]
                    QoS::ExactlyOnce => {
                        let fresh = !st.qos2_in.contains(&p.packet_id);
                        if fresh && st.qos2_in.push(p.packet_id).is_err() {
                            st.connected = false;
                            return Err(protocol(ProtocolError::ReceiveMaximumExceeded));
                        }
                        let rec = encode_ack(
                            AckType::PubRec,
                            p.packet_id,
                            ReasonCode::Success,
                            version,
                            scratch,
                        );
                        (fresh, encoded(rec)?)
                    }
                };
                if n > 0 {
                    st.last_tx_ms = now_ms;
                }
                #[cfg(not(feature = "tx"))]
                let event = deliver.then_some(Event::Message(message));
                #[cfg(feature = "tx")]
                let event = deliver.then(|| crate::tx::incoming(message, config.client_id));
                Ok(Step {
                    event,
                    reply: &scratch[..n],
                })
            }
            #[cfg(feature = "qos2")]
            Incoming::PubRel(rel) => {
                let known = st.qos2_in.iter().position(|&id| id == rel.packet_id);
                let reason_code = match known {
                    Some(i) => {
                        st.qos2_in.swap_remove(i);
                        ReasonCode::Success
                    }
                    None if version == tern_mqtt::ProtocolVersion::V5 => {
                        ReasonCode::PacketIdentifierNotFound
                    }
                    None => ReasonCode::Success,
                };
                let scratch = tx.get_mut(st.stored..).unwrap_or_default();
                let comp = encode_ack(
                    AckType::PubComp,
                    rel.packet_id,
                    reason_code,
                    version,
                    scratch,
                );
                let n = encoded(comp)?;
                st.last_tx_ms = now_ms;
                Ok(Step {
                    event: None,
                    reply: &scratch[..n],
                })
            }
            Incoming::PubAck(ack) => {
                // An unknown id is a PUBACK for a publish already forgotten
                // (acknowledged twice after a resend): nothing to report.
                // A commit or rollback is recognised by its stored topic.
                #[cfg(feature = "tx")]
                if let Some((id, action)) = st
                    .inflight_bytes(tx, ack.packet_id)
                    .and_then(crate::tx::stored_control)
                {
                    st.remove_inflight(tx, ack.packet_id);
                    let resolution = crate::tx::TxResolution {
                        packet_id: ack.packet_id,
                        id,
                        action,
                        outcome: ack.reason_code.into(),
                    };
                    return Ok(Step {
                        event: Some(Event::TxResolved(resolution)),
                        reply: &[],
                    });
                }
                let event = st
                    .remove_inflight(tx, ack.packet_id)
                    .then_some(Event::Published {
                        packet_id: ack.packet_id,
                        reason: ack.reason_code,
                    });
                Ok(Step { event, reply: &[] })
            }
            Incoming::SubAck(ack) => Ok(Step {
                event: Some(Event::Subscribed {
                    packet_id: ack.packet_id,
                    reason_codes: ack.reason_codes,
                }),
                reply: &[],
            }),
            Incoming::UnsubAck(ack) => Ok(Step {
                event: Some(Event::Unsubscribed {
                    packet_id: ack.packet_id,
                }),
                reply: &[],
            }),
            Incoming::PingResp => Ok(Step {
                event: None,
                reply: &[],
            }),
            Incoming::Disconnect(reason_code) => {
                warn!("disconnected by the broker: {:?}", reason_code);
                st.connected = false;
                Err(Error::Disconnected(reason_code))
            }
            other => {
                st.connected = false;
                unexpected(other.packet_type())
            }
        }
    }

    /// The stored bytes of in-flight publish `index` (send order) with DUP set,
    /// for resending after a reconnect; `None` past the end.
    pub fn resend(&mut self, index: usize) -> Option<&[u8]> {
        let start: usize = self.st.inflight.iter().take(index).map(|f| f.len).sum();
        let len = self.st.inflight.get(index)?.len;
        let bytes = self.tx.get_mut(start..start + len)?;
        if let Some(first) = bytes.first_mut() {
            *first |= DUP_FLAG;
        }
        Some(bytes)
    }

    fn require_connected(&self) -> Result<(), CoreError> {
        if self.st.connected {
            Ok(())
        } else {
            Err(Error::NotConnected)
        }
    }

    /// Encodes a PUBLISH. At QoS 1 it is kept in `tx` until its PUBACK, and its
    /// packet identifier is returned (0 at QoS 0). QoS 2, and QoS 1 to a
    /// broker whose CONNACK says Maximum QoS 0, fail with [`Error::Unsupported`].
    pub fn publish(
        &mut self,
        topic: &str,
        payload: &[u8],
        qos: QoS,
        user_properties: &[(&str, &str)],
        now_ms: u64,
    ) -> Result<(u16, &[u8]), CoreError> {
        self.require_connected()?;
        // The encoder validates the topic (an invalid one is `Error::Topic`).
        let st = &mut self.st;
        if qos > st.max_qos {
            return Err(Error::Unsupported);
        }
        let packet_id = match qos {
            QoS::AtMostOnce => 0,
            QoS::AtLeastOnce => {
                if st.inflight.len() >= st.send_window || st.inflight.is_full() {
                    return Err(Error::InflightFull);
                }
                st.allocate_id()
            }
            QoS::ExactlyOnce => return Err(Error::Unsupported),
        };
        let publish = PublishRequest {
            topic,
            payload,
            qos,
            retain: false,
            packet_id,
            user_properties,
        };
        let start = st.stored;
        let n = encoded(publish.encode(
            self.config.version,
            self.tx.get_mut(start..).unwrap_or_default(),
        ))?;
        if n > st.max_out_packet {
            return Err(Error::Encode(tern_mqtt::EncodeError::PacketTooLarge));
        }
        if qos == QoS::AtLeastOnce {
            let needed = start + n + st.reserve;
            if needed > self.tx.len() {
                return Err(Error::BufferTooSmall {
                    needed,
                    available: self.tx.len(),
                });
            }
            // Capacity was checked above.
            st.inflight
                .push(Inflight { packet_id, len: n })
                .map_err(|_| Error::InflightFull)?;
            st.stored += n;
        }
        st.last_tx_ms = now_ms;
        Ok((packet_id, &self.tx[start..start + n]))
    }

    /// Encodes a SUBSCRIBE for up to [`MAX_FILTERS`] filters; returns its packet
    /// identifier. The result arrives as [`Event::Subscribed`].
    pub fn subscribe(
        &mut self,
        filters: &[(&str, QoS)],
        now_ms: u64,
    ) -> Result<(u16, &[u8]), CoreError> {
        self.require_connected()?;
        if filters.is_empty() || filters.len() > MAX_FILTERS {
            return Err(Error::TooManyFilters);
        }
        #[cfg(not(feature = "qos2"))]
        if filters.iter().any(|&(_, qos)| qos == QoS::ExactlyOnce) {
            return Err(Error::Unsupported);
        }
        let packet_id = self.st.allocate_id();
        let version = self.config.version;
        self.send_scratch(
            |out| encode_subscribe(packet_id, filters, version, out),
            now_ms,
        )
        .map(|b| (packet_id, b))
    }

    /// Encodes an UNSUBSCRIBE for up to [`MAX_FILTERS`] filters; returns its
    /// packet identifier. The result arrives as [`Event::Unsubscribed`].
    pub fn unsubscribe(
        &mut self,
        filters: &[&str],
        now_ms: u64,
    ) -> Result<(u16, &[u8]), CoreError> {
        self.require_connected()?;
        if filters.is_empty() || filters.len() > MAX_FILTERS {
            return Err(Error::TooManyFilters);
        }
        let packet_id = self.st.allocate_id();
        let version = self.config.version;
        self.send_scratch(
            |out| encode_unsubscribe(packet_id, filters, version, out),
            now_ms,
        )
        .map(|b| (packet_id, b))
    }

    /// Encodes a normal DISCONNECT and marks the connection closed. In-flight
    /// publishes stay for the next `connect`.
    pub fn disconnect(&mut self) -> Result<&[u8], CoreError> {
        self.require_connected()?;
        self.connection_lost();
        let start = self.st.stored;
        let n = encoded(encode_disconnect(
            self.tx.get_mut(start..).unwrap_or_default(),
        ))?;
        Ok(&self.tx[start..start + n])
    }

    /// Encodes a packet with `encode` into the scratch area of `tx`.
    fn send_scratch(
        &mut self,
        encode: impl FnOnce(&mut [u8]) -> Result<usize, EncodeError>,
        now_ms: u64,
    ) -> Result<&[u8], CoreError> {
        let start = self.st.stored;
        let n = encoded(encode(self.tx.get_mut(start..).unwrap_or_default()))?;
        if n > self.st.max_out_packet {
            return Err(Error::Encode(tern_mqtt::EncodeError::PacketTooLarge));
        }
        self.st.last_tx_ms = now_ms;
        Ok(&self.tx[start..start + n])
    }

    /// Keep-alive: returns a PINGREQ to send when the connection has been
    /// quiet for a keep-alive interval, and fails with [`Error::Timeout`] when
    /// a PINGREQ went unanswered for one interval.
    pub fn poll_keepalive(&mut self, now_ms: u64) -> Result<Option<&[u8]>, CoreError> {
        let st = &mut self.st;
        if !st.connected || st.keep_alive_ms == 0 {
            return Ok(None);
        }
        if let Some(sent) = st.ping_sent_ms {
            if now_ms.saturating_sub(sent) >= u64::from(st.keep_alive_ms) {
                warn!("keep-alive timeout: no PINGRESP since {} ms", sent);
                self.connection_lost();
                return Err(Error::Timeout);
            }
            return Ok(None);
        }
        if now_ms.saturating_sub(st.last_tx_ms) < u64::from(st.keep_alive_ms) {
            return Ok(None);
        }
        st.ping_sent_ms = Some(now_ms);
        let bytes = self.send_scratch(encode_ping_request, now_ms)?;
        Ok(Some(bytes))
    }

    /// When [`Session::poll_keepalive`] next has work (a PINGREQ to send or a
    /// timeout to report); `None` when keep-alive is off or not connected.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        let st = &self.st;
        if !st.connected || st.keep_alive_ms == 0 {
            return None;
        }
        let base = st.ping_sent_ms.unwrap_or(st.last_tx_ms);
        Some(base.saturating_add(u64::from(st.keep_alive_ms)))
    }
}

impl<const N: usize> State<N> {
    fn on_connack(
        &mut self,
        ack: &ConnAckInfo,
        config: &Config<'_>,
        now_ms: u64,
    ) -> Result<ConnectInfo, CoreError> {
        self.awaiting_connack = false;
        if ack.reason_code.is_error() {
            warn!("connection refused: {:?}", ack.reason_code);
            return Err(Error::Refused(ack.reason_code));
        }
        let p = ack;
        if !ack.session_present {
            // A new session: the broker forgot the QoS 2 exchanges in progress.
            #[cfg(feature = "qos2")]
            self.qos2_in.clear();
        }
        self.max_qos = p.maximum_qos.unwrap_or(QoS::ExactlyOnce);
        let window = usize::from(p.receive_maximum.unwrap_or(u16::MAX));
        self.send_window = window.min(N);
        self.max_out_packet = p
            .maximum_packet_size
            .and_then(|m| usize::try_from(m).ok())
            .unwrap_or(usize::MAX);
        let keep_alive = p.server_keep_alive.unwrap_or(config.keep_alive_secs);
        self.keep_alive_ms = u32::from(keep_alive) * 1000;
        self.last_tx_ms = now_ms;
        self.ping_sent_ms = None;
        self.connected = true;
        debug!(
            "connected: session_present={} resend={} keep_alive_ms={}",
            ack.session_present,
            self.inflight.len(),
            self.keep_alive_ms
        );
        Ok(ConnectInfo {
            session_present: ack.session_present,
            resent: self.inflight.len(),
        })
    }

    /// Next free non-zero packet identifier (not used by an in-flight publish).
    fn allocate_id(&mut self) -> u16 {
        loop {
            let id = self.next_id;
            self.next_id = self.next_id.checked_add(1).unwrap_or(1);
            if !self.inflight.iter().any(|f| f.packet_id == id) {
                return id;
            }
        }
    }

    /// The stored bytes of in-flight publish `packet_id`.
    #[cfg(feature = "tx")]
    fn inflight_bytes<'t>(&self, tx: &'t [u8], packet_id: u16) -> Option<&'t [u8]> {
        let index = self
            .inflight
            .iter()
            .position(|f| f.packet_id == packet_id)?;
        let start: usize = self.inflight.iter().take(index).map(|f| f.len).sum();
        tx.get(start..start + self.inflight.get(index)?.len)
    }

    /// Drops the in-flight publish `packet_id` and its bytes; false if unknown.
    fn remove_inflight(&mut self, tx: &mut [u8], packet_id: u16) -> bool {
        let Some(index) = self.inflight.iter().position(|f| f.packet_id == packet_id) else {
            return false;
        };
        let start: usize = self.inflight.iter().take(index).map(|f| f.len).sum();
        let len = self.inflight[index].len;
        move_down(tx, start + len..self.stored, start);
        self.stored -= len;
        // `Vec::remove` would link `memmove` (see `move_down`); shift by hand.
        for i in index + 1..self.inflight.len() {
            self.inflight[i - 1] = self.inflight[i];
        }
        self.inflight.pop();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ConfigBuilder;
    use tern_mqtt::ProtocolVersion;

    const V5: ProtocolVersion = ProtocolVersion::V5;

    fn connected<'a>(rx: &'a mut [u8], tx: &'a mut [u8]) -> Session<'a, 4> {
        let config = ConfigBuilder::new("unit").unwrap().keep_alive(10).build();
        let mut s = Session::new(config, Buffers::new(rx, tx));
        s.connect(0).unwrap();
        s.receive(&[0x20, 0x03, 0x01, 0x00, 0x00]).unwrap();
        let step = s.handle(0).unwrap();
        assert!(matches!(
            step.event,
            Some(Event::Connected(ConnectInfo {
                session_present: true,
                ..
            }))
        ));
        s
    }

    fn publish_of(bytes: &[u8]) -> (u16, bool, &[u8]) {
        use tern_mqtt::{Packet, decode};
        match decode(bytes, &DecodeOptions::new(V5)).unwrap().0 {
            Packet::Publish(p) => (p.packet_id, p.dup, p.payload),
            other => panic!("not a PUBLISH: {other:?}"),
        }
    }

    /// A PUBACK for a middle publish moves the later ones down; the stored
    /// bytes of the others stay intact and resend in order with DUP.
    #[test]
    fn puback_out_of_order_compacts_stored_publishes() {
        let (mut rx, mut tx) = ([0u8; 128], [0u8; 256]);
        let mut s = connected(&mut rx, &mut tx);
        let a = s.publish("t", b"aaaa", QoS::AtLeastOnce, &[], 0).unwrap().0;
        let b = s.publish("t", b"bb", QoS::AtLeastOnce, &[], 0).unwrap().0;
        let c = s
            .publish("t", b"cccccc", QoS::AtLeastOnce, &[], 0)
            .unwrap()
            .0;
        // A QoS 0 publish and a ping use the scratch area only.
        s.publish("t", b"zero", QoS::AtMostOnce, &[], 0).unwrap();
        assert_eq!(s.inflight_len(), 3);
        let [hi, lo] = b.to_be_bytes();
        s.receive(&[0x40, 0x02, hi, lo]).unwrap();
        let step = s.handle(0).unwrap();
        assert_eq!(
            step.event,
            Some(Event::Published {
                packet_id: b,
                reason: ReasonCode::Success
            })
        );
        assert_eq!(s.inflight_len(), 2);
        assert_eq!(publish_of(s.resend(0).unwrap()), (a, true, &b"aaaa"[..]));
        assert_eq!(publish_of(s.resend(1).unwrap()), (c, true, &b"cccccc"[..]));
        assert!(s.resend(2).is_none());
        // An unknown or repeated PUBACK is ignored.
        s.receive(&[0x40, 0x02, hi, lo]).unwrap();
        assert_eq!(s.handle(0).unwrap().event, None);
        assert_eq!(s.inflight_len(), 2);
    }

    #[test]
    fn packet_ids_skip_zero_and_ids_in_flight() {
        let (mut rx, mut tx) = ([0u8; 64], [0u8; 256]);
        let mut s = connected(&mut rx, &mut tx);
        s.st.next_id = u16::MAX;
        let first = s.publish("t", b"", QoS::AtLeastOnce, &[], 0).unwrap().0;
        assert_eq!(first, u16::MAX);
        s.st.next_id = u16::MAX;
        let second = s.publish("t", b"", QoS::AtLeastOnce, &[], 0).unwrap().0;
        assert_eq!(second, 1, "wraps past 0 and skips the id in flight");
    }

    #[test]
    fn full_tx_buffer_is_buffer_too_small_and_keeps_state() {
        // The CONNECT of `connected` takes 27 bytes and stays reserved.
        let (mut rx, mut tx) = ([0u8; 64], [0u8; 70]);
        let mut s = connected(&mut rx, &mut tx);
        assert_eq!(s.st.reserve, 27);
        s.publish("t", &[1; 20], QoS::AtLeastOnce, &[], 0).unwrap();
        assert!(matches!(
            s.publish("t", &[2; 20], QoS::AtLeastOnce, &[], 0),
            Err(Error::BufferTooSmall { .. })
        ));
        assert_eq!(s.inflight_len(), 1);
        assert_eq!(publish_of(s.resend(0).unwrap()).2, &[1; 20][..]);
        // QoS 0 may use the reserve; it is not kept.
        s.publish("t", &[3; 30], QoS::AtMostOnce, &[], 0).unwrap();
        // Reconnecting still fits.
        assert!(s.connect(0).is_ok());
    }

    #[test]
    fn deadline_follows_traffic() {
        let (mut rx, mut tx) = ([0u8; 64], [0u8; 128]);
        let mut s = connected(&mut rx, &mut tx);
        assert_eq!(s.next_deadline_ms(), Some(10_000));
        s.publish("t", b"", QoS::AtMostOnce, &[], 4_000).unwrap();
        assert_eq!(s.next_deadline_ms(), Some(14_000));
        assert_eq!(s.poll_keepalive(13_999).unwrap(), None);
        assert_eq!(s.poll_keepalive(14_000).unwrap(), Some(&[0xC0, 0x00][..]));
        assert_eq!(s.next_deadline_ms(), Some(24_000));
        assert_eq!(s.poll_keepalive(24_000), Err(Error::Timeout));
        assert_eq!(s.next_deadline_ms(), None);
    }
}
