//! Plain serde records the store keeps, encoded with `postcard`.
//!
//! These types are the on-disk format (together with the table layout in `tables.rs`):
//! postcard is not self-describing, so any change to a field's type or order needs a new
//! [`FORMAT_VERSION`](super::FORMAT_VERSION). Byte fields use [`serde_bytes_compat`] so
//! postcard writes them as one length-prefixed run instead of a sequence of `u8` elements.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tern_mqtt::QoS;

use crate::message::{ClientId, Expiry, Message, MessageProperties};

/// Position of a message in the log. Assigned at submission, strictly increasing in
/// submission order, never reused (gaps appear where a commit failed or data was trimmed).
pub type Seq = u64;

/// Wall-clock milliseconds since the Unix epoch.
pub type UnixMillis = u64;

/// Current wall-clock time in Unix milliseconds (0 if the clock is before 1970).
pub fn now_millis() -> UnixMillis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// v5 PUBLISH properties stored with a message and forwarded unchanged.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredProperties {
    /// Payload Format Indicator (0 = bytes, 1 = UTF-8).
    pub payload_format_indicator: Option<u8>,
    /// Content Type.
    pub content_type: Option<String>,
    /// Response Topic.
    pub response_topic: Option<String>,
    /// Correlation Data.
    #[serde(with = "serde_bytes_compat::option")]
    pub correlation_data: Option<Bytes>,
    /// User Properties, in order, duplicates kept.
    pub user_properties: Vec<(String, String)>,
}

/// One application message as stored in the log (and in the retained table).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMessage {
    /// When the hub accepted it. First field, so retention can read a record's age by
    /// decoding one varint.
    pub received_ms: UnixMillis,
    /// Topic name.
    pub topic: String,
    /// Payload bytes.
    #[serde(with = "serde_bytes_compat")]
    pub payload: Bytes,
    /// QoS as published.
    #[serde(with = "qos_serde")]
    pub qos: QoS,
    /// RETAIN flag as published.
    pub retain: bool,
    /// v5 properties forwarded unchanged.
    pub properties: StoredProperties,
    /// Client that published it (empty for messages the hub publishes itself).
    pub publisher: String,
    /// When it expires (v5 Message Expiry Interval anchored at `received_ms`), if ever.
    pub expires_ms: Option<UnixMillis>,
    /// Set when a filter routed the message to this bridge alone: the bridge forwards it
    /// (with `topic` as the upstream topic) and it is never delivered to local subscribers.
    /// Last field, added in format 3: a format-2 record is a format-3 record without it.
    pub bridge: Option<String>,
}

/// A [`StoredMessage`] borrowed from the message it describes: it encodes to the same
/// bytes, without first copying the topic, properties and publisher (the ingest path writes
/// one per message). Encode-only; records are read back as [`StoredMessage`].
#[derive(Debug, Serialize)]
pub struct StoredMessageRef<'a> {
    /// As [`StoredMessage::received_ms`].
    pub received_ms: UnixMillis,
    /// As [`StoredMessage::topic`].
    pub topic: &'a str,
    /// As [`StoredMessage::payload`].
    #[serde(serialize_with = "serde_bytes_compat::serialize_slice")]
    pub payload: &'a [u8],
    /// As [`StoredMessage::qos`].
    #[serde(with = "qos_serde")]
    pub qos: QoS,
    /// As [`StoredMessage::retain`].
    pub retain: bool,
    /// As [`StoredMessage::properties`].
    pub properties: StoredPropertiesRef<'a>,
    /// As [`StoredMessage::publisher`].
    pub publisher: &'a str,
    /// As [`StoredMessage::expires_ms`].
    pub expires_ms: Option<UnixMillis>,
    /// As [`StoredMessage::bridge`].
    pub bridge: Option<&'a str>,
}

/// [`StoredProperties`] borrowed, for [`StoredMessageRef`].
#[derive(Debug, Serialize)]
pub struct StoredPropertiesRef<'a> {
    /// As [`StoredProperties::payload_format_indicator`].
    pub payload_format_indicator: Option<u8>,
    /// As [`StoredProperties::content_type`].
    pub content_type: Option<&'a str>,
    /// As [`StoredProperties::response_topic`].
    pub response_topic: Option<&'a str>,
    /// As [`StoredProperties::correlation_data`].
    #[serde(serialize_with = "serde_bytes_compat::option::serialize_slice")]
    pub correlation_data: Option<&'a [u8]>,
    /// As [`StoredProperties::user_properties`].
    pub user_properties: &'a [(String, String)],
}

impl StoredMessageRef<'_> {
    /// The log record: the encoding of the equal [`StoredMessage`], in a buffer sized for
    /// it up front (no regrowing while postcard writes).
    pub fn encode(&self) -> Result<Vec<u8>, postcard::Error> {
        let p = &self.properties;
        let strings = self.topic.len()
            + self.payload.len()
            + self.publisher.len()
            + p.content_type.map_or(0, str::len)
            + p.response_topic.map_or(0, str::len)
            + p.correlation_data.map_or(0, <[u8]>::len)
            + self.bridge.map_or(0, str::len)
            + p.user_properties
                .iter()
                .map(|(k, v)| k.len() + v.len() + 2 * VARINT_MAX)
                .sum::<usize>();
        // Every length prefix and number is a varint of at most `VARINT_MAX` bytes.
        let capacity = strings + 12 * VARINT_MAX;
        postcard::to_extend(self, Vec::with_capacity(capacity))
    }
}

/// Longest postcard varint (a u64).
const VARINT_MAX: usize = 10;

impl StoredMessage {
    /// Decodes a record of the log or the retained table, format 3 or format 2 (which ends
    /// where `bridge` begins: decoded as `bridge: None`).
    pub fn decode(bytes: &[u8]) -> Result<Self, postcard::Error> {
        match postcard::from_bytes::<Self>(bytes) {
            Err(postcard::Error::DeserializeUnexpectedEnd) => {
                let mut upgraded = Vec::with_capacity(bytes.len() + 1);
                upgraded.extend_from_slice(bytes);
                upgraded.push(0); // `None`
                postcard::from_bytes::<Self>(&upgraded)
            }
            other => other,
        }
    }

    /// Whether the message has expired at `now_ms`.
    pub fn is_expired(&self, now_ms: UnixMillis) -> bool {
        self.expires_ms.is_some_and(|e| now_ms >= e)
    }

    /// Seconds of expiry interval left at `now_ms` (rounded up, at least 1), `None` if the
    /// message never expires. Call only for messages that are not expired.
    pub fn remaining_expiry_secs(&self, now_ms: UnixMillis) -> Option<u32> {
        self.expires_ms.map(|e| {
            let left_ms = e.saturating_sub(now_ms);
            u32::try_from(left_ms.div_ceil(1000))
                .unwrap_or(u32::MAX)
                .max(1)
        })
    }

    /// The stored form of an accepted message, received at wall-clock `now_ms` (the expiry
    /// deadline is anchored there).
    pub fn from_message(msg: &Message, now_ms: UnixMillis) -> Self {
        let p = &msg.properties;
        Self {
            received_ms: now_ms,
            topic: msg.topic.clone(),
            payload: msg.payload.clone(),
            qos: msg.qos,
            retain: msg.retain,
            properties: StoredProperties {
                payload_format_indicator: p.payload_format_indicator,
                content_type: p.content_type.clone(),
                response_topic: p.response_topic.clone(),
                correlation_data: p.correlation_data.clone(),
                user_properties: p.user_properties.clone(),
            },
            publisher: msg.publisher.to_string(),
            expires_ms: msg
                .expiry
                .map(|e| now_ms.saturating_add(u64::from(e.interval_secs) * 1000)),
            bridge: None,
        }
    }

    /// Back to the in-memory form at monotonic `now` / wall-clock `now_ms`: the expiry keeps
    /// the time already spent (in the hub, including while it was down).
    pub fn to_message(&self, now: Instant, now_ms: UnixMillis) -> Message {
        let p = &self.properties;
        let age = Duration::from_millis(now_ms.saturating_sub(self.received_ms));
        let received_at = now.checked_sub(age).unwrap_or(now);
        Message {
            topic: self.topic.clone(),
            payload: self.payload.clone(),
            qos: self.qos,
            retain: self.retain,
            properties: MessageProperties {
                payload_format_indicator: p.payload_format_indicator,
                content_type: p.content_type.clone(),
                response_topic: p.response_topic.clone(),
                correlation_data: p.correlation_data.clone(),
                user_properties: p.user_properties.clone(),
            },
            expiry: self.expires_ms.map(|e| {
                // checked_sub above may clamp on a young monotonic clock; the interval then
                // shrinks by the clamped amount so the deadline stays `expires_ms`.
                let anchored_ms = now_ms.saturating_sub(
                    u64::try_from(now.saturating_duration_since(received_at).as_millis())
                        .unwrap_or(u64::MAX),
                );
                Expiry {
                    received_at,
                    interval_secs: u32::try_from(e.saturating_sub(anchored_ms).div_ceil(1000))
                        .unwrap_or(u32::MAX),
                }
            }),
            publisher: ClientId::from(self.publisher.as_str()),
        }
    }

    /// Bytes this message counts against the retention budget before encoding (a cheap
    /// estimate used for group-commit sizing; the budget itself counts encoded bytes).
    pub fn size_hint(&self) -> usize {
        self.topic.len() + self.payload.len() + self.publisher.len() + 32
    }
}

/// Per-subscriber delivery details of one queued message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryInfo {
    /// QoS to deliver with: `min(published, granted)`.
    #[serde(with = "qos_serde")]
    pub qos: QoS,
    /// RETAIN flag to send.
    pub retain: bool,
    /// Subscription identifiers of the matching subscriptions (v5).
    pub subscription_ids: Vec<u32>,
}

/// State of an outbound QoS 1/2 delivery (hub → subscriber).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OutboundState {
    /// PUBLISH sent, waiting for PUBACK (QoS 1) or PUBREC (QoS 2).
    PublishSent,
    /// PUBREL sent, waiting for PUBCOMP (QoS 2).
    PubrelSent,
}

/// One outbound in-flight delivery, keyed by packet id in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InflightOut {
    /// Log position of the message.
    pub seq: Seq,
    /// Protocol state.
    pub state: OutboundState,
    /// How it is delivered.
    pub delivery: DeliveryInfo,
}

/// One subscription of a persistent session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionRecord {
    /// Topic filter (with `$share/<group>/` prefix for shared subscriptions).
    pub filter: String,
    /// Maximum QoS granted.
    #[serde(with = "qos_serde")]
    pub qos: QoS,
    /// v5 No Local.
    pub no_local: bool,
    /// v5 Retain As Published.
    pub retain_as_published: bool,
    /// v5 Retain Handling (0, 1 or 2).
    pub retain_handling: u8,
    /// v5 Subscription Identifier.
    pub identifier: Option<u32>,
}

/// The will of a connection, stored from CONNECT until it is published or discarded, so a
/// hub restart (graceful or a crash) publishes it like any other abnormal close.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WillRecord {
    /// Which CONNECT the will came from, unique within the store's lifetime. First field, so
    /// the writer can read it without decoding the rest: a conditional
    /// [`WillDelete`](super::WriteOp::WillDelete) for an older connection's will never
    /// removes the will of a newer connection of the same client.
    pub token: u64,
    /// The will message; `expires_ms` is always `None` (the expiry runs from publication,
    /// see `expiry_secs`) and `publisher` is the client id.
    pub message: StoredMessage,
    /// v5 Will Delay Interval in seconds (0 for 3.1.1).
    pub delay_secs: u32,
    /// v5 Message Expiry Interval of the will, counted from the moment it is published.
    pub expiry_secs: Option<u32>,
    /// Wall-clock time the will is due, set when the connection closed abnormally and the
    /// will waits for its delay; `None` while the connection is (or, after a crash, was)
    /// open.
    pub deadline_ms: Option<UnixMillis>,
}

/// Records as format 2 wrote them, read once to upgrade a format-2 store in place.
pub(super) mod format2 {
    use bytes::Bytes;
    use serde::Deserialize;
    use tern_mqtt::QoS;

    use super::{StoredProperties, UnixMillis, qos_serde, serde_bytes_compat};

    /// [`super::StoredMessage`] without `bridge`.
    #[derive(Deserialize)]
    pub struct StoredMessage {
        received_ms: UnixMillis,
        topic: String,
        #[serde(with = "serde_bytes_compat")]
        payload: Bytes,
        #[serde(with = "qos_serde")]
        qos: QoS,
        retain: bool,
        properties: StoredProperties,
        publisher: String,
        expires_ms: Option<UnixMillis>,
    }

    /// [`super::WillRecord`] holding a format-2 message.
    #[derive(Deserialize)]
    pub struct WillRecord {
        token: u64,
        message: StoredMessage,
        delay_secs: u32,
        expiry_secs: Option<u32>,
        deadline_ms: Option<UnixMillis>,
    }

    impl From<WillRecord> for super::WillRecord {
        fn from(w: WillRecord) -> Self {
            let m = w.message;
            Self {
                token: w.token,
                message: super::StoredMessage {
                    received_ms: m.received_ms,
                    topic: m.topic,
                    payload: m.payload,
                    qos: m.qos,
                    retain: m.retain,
                    properties: m.properties,
                    publisher: m.publisher,
                    expires_ms: m.expires_ms,
                    bridge: None,
                },
                delay_secs: w.delay_secs,
                expiry_secs: w.expiry_secs,
                deadline_ms: w.deadline_ms,
            }
        }
    }
}

/// A persistent session (clean start = 0 / session expiry > 0), as the broker saves it. Its
/// will, if any, is a separate [`WillRecord`] (clean sessions have wills too).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Client identifier (the key).
    pub client_id: String,
    /// Protocol level the client last connected with (4 = 3.1.1, 5 = 5.0).
    pub protocol_level: u8,
    /// Session Expiry Interval in seconds (`u32::MAX` = never).
    pub session_expiry_secs: u32,
    /// Wall-clock deadline after which the session is discarded, set while the client is
    /// disconnected; `None` while connected or for sessions that never expire.
    pub expires_at_ms: Option<UnixMillis>,
    /// Subscriptions.
    pub subscriptions: Vec<SubscriptionRecord>,
}

/// One entry of a session's offline queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueEntry {
    /// Log position of the message. May point to a trimmed or expired message (policy
    /// `drop-oldest`, age limit, or message expiry): [`Store::get`](super::Store::get) then
    /// returns `None` and the entry is skipped.
    pub seq: Seq,
    /// How it is delivered.
    pub delivery: DeliveryInfo,
}

/// Everything of one persistent session found at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveredSession {
    /// The session record as last upserted.
    pub record: SessionRecord,
    /// Offline queue, ordered by seq (at most `recovery_queue_limit` entries).
    pub queue: Vec<QueueEntry>,
    /// The queue has more entries than were loaded: continue with
    /// [`Store::read_queue`](super::Store::read_queue) after the last seq of `queue`.
    pub queue_truncated: bool,
    /// Outbound in-flight deliveries by packet id.
    pub inflight_out: BTreeMap<u16, InflightOut>,
    /// Inbound QoS 2 packet ids received (PUBREC sent) and awaiting PUBREL.
    pub inflight_in: Vec<u16>,
}

/// State restored by [`Store::open`](super::Store::open). Reading it costs time proportional
/// to sessions, queued entries, retained messages and cursors; the log is not scanned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Persistent sessions, by client id.
    pub sessions: BTreeMap<String, RecoveredSession>,
    /// Retained messages, by topic (expired ones are dropped during recovery).
    pub retained: BTreeMap<String, StoredMessage>,
    /// Consumer cursors (bridges): the next seq each still needs.
    pub cursors: BTreeMap<String, Seq>,
    /// Stored wills, by client id (for clean sessions too: they have no session record).
    pub wills: BTreeMap<String, WillRecord>,
    /// First seq in the log (equal to `next_seq` when the log is empty).
    pub head: Seq,
    /// The seq the next append receives.
    pub next_seq: Seq,
    /// Records that could not be decoded and were skipped (each logged and counted).
    pub corrupt_records: u64,
}

/// Serde adapter writing [`Bytes`] as a byte string (postcard: varint length + raw bytes).
pub mod serde_bytes_compat {
    use std::fmt;

    use bytes::Bytes;
    use serde::de::{self, SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};

    /// Serializes as a byte string.
    pub fn serialize<S: Serializer>(b: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(b)
    }

    /// The same for a borrowed slice.
    pub fn serialize_slice<S: Serializer>(b: &&[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(b)
    }

    /// Deserializes a byte string (or, for self-describing formats, a sequence of bytes).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        d.deserialize_byte_buf(BytesVisitor)
    }

    struct BytesVisitor;

    impl<'de> Visitor<'de> for BytesVisitor {
        type Value = Bytes;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a byte string")
        }

        fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Bytes, E> {
            Ok(Bytes::copy_from_slice(v))
        }

        fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
            Ok(Bytes::from(v))
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Bytes, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
            while let Some(b) = seq.next_element::<u8>()? {
                out.push(b);
            }
            Ok(Bytes::from(out))
        }
    }

    /// The same for `Option<Bytes>`.
    pub mod option {
        use bytes::Bytes;
        use serde::{Deserialize, Deserializer, Serialize, Serializer};

        #[derive(Serialize, Deserialize)]
        struct Wrap(#[serde(with = "super")] Bytes);

        /// Serializes `Some` as a byte string.
        pub fn serialize<S: Serializer>(b: &Option<Bytes>, s: S) -> Result<S::Ok, S::Error> {
            b.as_ref().map(|b| Wrap(b.clone())).serialize(s)
        }

        /// Deserializes an optional byte string.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Bytes>, D::Error> {
            Ok(Option::<Wrap>::deserialize(d)?.map(|w| w.0))
        }

        /// A borrowed slice, written as [`Wrap`] is.
        #[derive(Serialize)]
        struct WrapSlice<'a>(#[serde(serialize_with = "super::serialize_slice")] &'a [u8]);

        /// [`serialize`] for a borrowed slice.
        pub fn serialize_slice<S: Serializer>(b: &Option<&[u8]>, s: S) -> Result<S::Ok, S::Error> {
            b.map(WrapSlice).serialize(s)
        }
    }
}

/// Serde adapter storing [`QoS`] as its wire value.
mod qos_serde {
    use serde::{Deserialize, Deserializer, Serializer, de};
    use tern_mqtt::QoS;

    pub fn serialize<S: Serializer>(q: &QoS, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(*q as u8)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<QoS, D::Error> {
        let v = u8::deserialize(d)?;
        QoS::from_u8(v).ok_or_else(|| de::Error::custom(format_args!("invalid QoS {v}")))
    }
}
