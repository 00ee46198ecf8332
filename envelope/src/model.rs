//! The data model: [`Envelope`], [`ForwardedMessage`], the borrowed [`MessageRef`] the
//! bridge encodes from, [`Coverage`] (the seq range a forwarding unit vouches for) and the
//! invariants every encoded envelope satisfies.
//!
//! Field order is the binary wire format (postcard encodes fields in declaration order):
//! never reorder, only append behind a new format version.

use serde::{Deserialize, Serialize};

use crate::{EnvelopeError, MessageId};

/// One batch forwarded upstream: messages of one gateway's log, in seq order, plus the seq
/// range it covers.
///
/// The range `(prev_seq, last_seq]` is the chain link: the bridge forwarded exactly
/// `messages` among the log seqs in that range (the log holds other topics too, so seqs are
/// not contiguous), and the next envelope of the same stream has `prev_seq == last_seq` of
/// this one. A consumer that misses an envelope sees a hole in the union of the ranges.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Forwarding stream the ids belong to (one per gateway and bridge).
    pub gateway: String,
    /// `last_seq` of the previous envelope of this stream, or `None` when nothing was
    /// forwarded before (the range then starts at seq 0).
    pub prev_seq: Option<u64>,
    /// Last seq the envelope covers: at least the seq of its last message; more when the
    /// bridge skipped log records of other topics behind it.
    pub last_seq: u64,
    /// When the bridge built the envelope (Unix milliseconds).
    pub created_ms: u64,
    /// The messages, seq strictly increasing, every seq in `(prev_seq, last_seq]`.
    pub messages: Vec<ForwardedMessage>,
    /// The bridge resent these messages from its backlog after an outage while newer ones
    /// went first (`replay = "live-first"`): they are older than envelopes that may have
    /// arrived before. Travels in the binary flags / the JSON header, not in the body.
    #[serde(skip)]
    pub replay: bool,
}

/// One message as the hub received it from a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardedMessage {
    /// Seq in the gateway's log; with the gateway, the message's [`MessageId`].
    pub seq: u64,
    /// Topic as published upstream (after the bridge's topic mapping).
    pub topic: String,
    /// When the hub accepted it (Unix milliseconds).
    pub received_ms: u64,
    /// QoS the device published with (0, 1 or 2).
    pub qos: u8,
    /// RETAIN flag the device published with.
    pub retain: bool,
    /// MQTT 5 content type, if the device set one.
    pub content_type: Option<String>,
    /// MQTT 5 user properties, in order, repeated keys kept.
    pub user_properties: Vec<(String, String)>,
    /// Payload bytes.
    #[serde(with = "bytes")]
    pub payload: Vec<u8>,
}

/// A [`ForwardedMessage`] borrowing its text and bytes, e.g. from the hub's store records,
/// so the bridge encodes without copying them first. Same wire form as the owned type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MessageRef<'a> {
    /// See [`ForwardedMessage::seq`].
    pub seq: u64,
    /// See [`ForwardedMessage::topic`].
    pub topic: &'a str,
    /// See [`ForwardedMessage::received_ms`].
    pub received_ms: u64,
    /// See [`ForwardedMessage::qos`].
    pub qos: u8,
    /// See [`ForwardedMessage::retain`].
    pub retain: bool,
    /// See [`ForwardedMessage::content_type`].
    pub content_type: Option<&'a str>,
    /// See [`ForwardedMessage::user_properties`].
    pub user_properties: &'a [(String, String)],
    /// See [`ForwardedMessage::payload`].
    #[serde(serialize_with = "bytes::serialize")]
    pub payload: &'a [u8],
}

/// The seq range `(prev_seq, last_seq]` one forwarding unit (an envelope, or one message in
/// `each` mode) vouches for: every message the bridge forwarded with a seq in it is in
/// that unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Coverage {
    /// Last seq covered by the previous unit of the stream; `None` at the stream's start.
    pub prev_seq: Option<u64>,
    /// Last seq covered by this unit.
    pub last_seq: u64,
}

/// An inclusive seq range `first..=last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SeqRange {
    /// First seq in the range.
    pub first: u64,
    /// Last seq in the range (`>= first`).
    pub last: u64,
}

impl Coverage {
    /// The covered seqs as an inclusive range, `None` when the range is empty
    /// (`prev_seq == last_seq`).
    pub fn range(&self) -> Option<SeqRange> {
        let first = match self.prev_seq {
            None => 0,
            Some(prev) => prev.checked_add(1)?,
        };
        (first <= self.last_seq).then_some(SeqRange {
            first,
            last: self.last_seq,
        })
    }

    /// Whether `seq` lies in `(prev_seq, last_seq]`.
    pub fn contains(&self, seq: u64) -> bool {
        self.prev_seq.is_none_or(|prev| prev < seq) && seq <= self.last_seq
    }
}

impl Envelope {
    /// The range this envelope covers.
    pub fn coverage(&self) -> Coverage {
        Coverage {
            prev_seq: self.prev_seq,
            last_seq: self.last_seq,
        }
    }

    /// Id of every message, in order.
    pub fn ids(&self) -> impl Iterator<Item = MessageId> + '_ {
        self.messages.iter().map(|m| m.id(&self.gateway))
    }

    /// Checks the invariants [`decode`](crate::decode) enforces: a non-empty gateway,
    /// `prev_seq <= last_seq`, seqs strictly increasing inside the range, QoS at most 2.
    pub fn validate(&self) -> Result<(), EnvelopeError> {
        validate_header(&self.gateway, self.coverage())?;
        let mut order = SeqOrder::new(self.prev_seq);
        for m in &self.messages {
            order.check(m.seq, m.qos)?;
        }
        order.finish(self.last_seq)
    }
}

impl ForwardedMessage {
    /// The message's id when it belongs to `gateway`'s stream.
    pub fn id(&self, gateway: &str) -> MessageId {
        MessageId::new(gateway, self.seq)
    }

    /// Borrowed view, for the encoders.
    pub fn as_ref(&self) -> MessageRef<'_> {
        MessageRef {
            seq: self.seq,
            topic: &self.topic,
            received_ms: self.received_ms,
            qos: self.qos,
            retain: self.retain,
            content_type: self.content_type.as_deref(),
            user_properties: &self.user_properties,
            payload: &self.payload,
        }
    }
}

impl MessageRef<'_> {
    /// Owned copy.
    pub fn to_owned(&self) -> ForwardedMessage {
        ForwardedMessage {
            seq: self.seq,
            topic: self.topic.to_owned(),
            received_ms: self.received_ms,
            qos: self.qos,
            retain: self.retain,
            content_type: self.content_type.map(str::to_owned),
            user_properties: self.user_properties.to_vec(),
            payload: self.payload.to_vec(),
        }
    }
}

pub(crate) fn validate_header(gateway: &str, coverage: Coverage) -> Result<(), EnvelopeError> {
    if gateway.is_empty() {
        return Err(EnvelopeError::Invalid("empty gateway"));
    }
    if coverage
        .prev_seq
        .is_some_and(|prev| prev > coverage.last_seq)
    {
        return Err(EnvelopeError::Invalid("prev_seq is greater than last_seq"));
    }
    Ok(())
}

/// Checks messages one at a time against the seq-order invariants; the upper bound is
/// checked once at the end ([`Self::finish`]) so a writer may extend `last_seq` as it goes.
pub(crate) struct SeqOrder {
    prev_seq: Option<u64>,
    last_message: Option<u64>,
}

impl SeqOrder {
    pub(crate) fn new(prev_seq: Option<u64>) -> Self {
        Self {
            prev_seq,
            last_message: None,
        }
    }

    /// Checks one message that follows the ones already checked.
    pub(crate) fn check(&mut self, seq: u64, qos: u8) -> Result<(), EnvelopeError> {
        if qos > 2 {
            return Err(EnvelopeError::Invalid("QoS above 2"));
        }
        if self.last_message.is_some_and(|last| seq <= last) {
            return Err(EnvelopeError::Invalid(
                "message seqs not strictly increasing",
            ));
        }
        if self.prev_seq.is_some_and(|prev| seq <= prev) {
            return Err(EnvelopeError::Invalid("message seq not above prev_seq"));
        }
        self.last_message = Some(seq);
        Ok(())
    }

    /// Seq of the last message checked.
    pub(crate) fn last_message(&self) -> Option<u64> {
        self.last_message
    }

    /// Checks that every message checked lies at or below `last_seq`.
    pub(crate) fn finish(&self, last_seq: u64) -> Result<(), EnvelopeError> {
        if self.last_message.is_some_and(|last| last > last_seq) {
            return Err(EnvelopeError::Invalid("message seq above last_seq"));
        }
        Ok(())
    }
}

/// Payload bytes as a postcard byte string (length + raw bytes, the same wire form as a
/// sequence of `u8`) rather than one serde call per byte.
mod bytes {
    use std::fmt;

    use serde::de::{self, SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer, T: AsRef<[u8]>>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v.as_ref())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_byte_buf(BytesVisitor)
    }

    struct BytesVisitor;

    impl<'de> Visitor<'de> for BytesVisitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a byte string")
        }

        fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }

        fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
            while let Some(b) = seq.next_element()? {
                out.push(b);
            }
            Ok(out)
        }
    }
}
