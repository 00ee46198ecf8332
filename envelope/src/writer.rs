//! [`EnvelopeWriter`]: builds an encoded envelope message by message from borrowed
//! [`MessageRef`]s, so the bridge never builds an owned [`Envelope`](crate::Envelope) and
//! knows the encoded size as it goes (for batching by bytes).

use crate::model::{MessageRef, SeqOrder, validate_header};
use crate::{Coverage, EnvelopeError, Format, binary, jsonl};

/// The fields the encoded header carries, encoded after the messages are known.
///
/// Its postcard encoding (as a tuple, in this order) is exactly the bytes the derived
/// encoding of `Envelope` has before the first message: postcard writes structs and tuples
/// as their fields in order, and a sequence length as a varint like any `u64`.
pub(crate) struct Head<'a> {
    pub gateway: &'a str,
    pub prev_seq: Option<u64>,
    pub last_seq: u64,
    pub created_ms: u64,
    pub count: u64,
    pub replay: bool,
}

/// Builds one envelope: create it with the stream's `prev_seq`, [`push`](Self::push)
/// messages in seq order, optionally [`cover_through`](Self::cover_through) the last log
/// seq read, then [`finish`](Self::finish).
///
/// ```
/// use tern_envelope::{EnvelopeWriter, Format, MessageRef, decode};
///
/// let mut writer = EnvelopeWriter::new(Format::Postcard, "gw-17", Some(41));
/// writer.push(&MessageRef {
///     seq: 42,
///     topic: "gw-17/sensors/t1",
///     received_ms: 1_700_000_000_000,
///     qos: 1,
///     retain: false,
///     content_type: None,
///     user_properties: &[],
///     payload: b"21.5",
/// })?;
/// writer.cover_through(45)?; // seqs 43..=45 were other topics
/// let bytes = writer.finish(1_700_000_000_100)?;
/// let envelope = decode(&bytes)?;
/// assert_eq!((envelope.prev_seq, envelope.last_seq), (Some(41), 45));
/// # Ok::<(), tern_envelope::EnvelopeError>(())
/// ```
#[derive(Debug)]
pub struct EnvelopeWriter {
    format: Format,
    gateway: String,
    prev_seq: Option<u64>,
    /// Set by `cover_through`; otherwise the last message's seq closes the range.
    covered_through: Option<u64>,
    order_last: Option<u64>,
    count: u64,
    /// Encoded messages; the header is put in front by `finish`.
    body: Vec<u8>,
    /// Mark the envelope as replayed.
    replay: bool,
}

impl EnvelopeWriter {
    /// A writer for one envelope of `gateway`'s stream, whose previous envelope covered up
    /// to `prev_seq` (`None`: nothing was forwarded before).
    pub fn new(format: Format, gateway: impl Into<String>, prev_seq: Option<u64>) -> Self {
        Self {
            format,
            gateway: gateway.into(),
            prev_seq,
            covered_through: None,
            order_last: None,
            count: 0,
            body: Vec::new(),
            replay: false,
        }
    }

    /// Marks the envelope as replayed ([`Envelope::replay`](crate::Envelope::replay)).
    pub fn set_replay(&mut self, replay: bool) {
        self.replay = replay;
    }

    /// Reserves room for `additional` more encoded bytes.
    pub fn reserve(&mut self, additional: usize) {
        self.body.reserve(additional);
    }

    /// Appends a message. Its seq must be above `prev_seq`, above every message pushed
    /// before and above the range set by `cover_through`; QoS at most 2. On error nothing
    /// is appended.
    pub fn push(&mut self, message: &MessageRef<'_>) -> Result<(), EnvelopeError> {
        let mut order = SeqOrder::new(self.prev_seq.max(self.covered_through).max(self.order_last));
        order.check(message.seq, message.qos)?;
        let mark = self.body.len();
        let pushed = match self.format {
            Format::Postcard => binary::push_message(&mut self.body, message),
            Format::JsonLines => jsonl::push_message(&mut self.body, message),
        };
        if let Err(err) = pushed {
            self.body.truncate(mark);
            return Err(err);
        }
        self.order_last = order.last_message();
        self.count += 1;
        Ok(())
    }

    /// Extends the covered range to `last_seq`: the bridge read the log through `last_seq`
    /// and forwards nothing else at or below it. Must not be below a pushed message.
    pub fn cover_through(&mut self, last_seq: u64) -> Result<(), EnvelopeError> {
        if self.order_last.is_some_and(|last| last > last_seq)
            || self.covered_through.is_some_and(|c| c > last_seq)
            || self.prev_seq.is_some_and(|prev| prev > last_seq)
        {
            return Err(EnvelopeError::Invalid(
                "cover_through below what is already covered",
            ));
        }
        self.covered_through = Some(last_seq);
        Ok(())
    }

    /// Messages pushed so far.
    pub fn len(&self) -> usize {
        usize::try_from(self.count).unwrap_or(usize::MAX)
    }

    /// Whether no message was pushed.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Upper bound of the size [`finish`](Self::finish) returns (exact for the messages,
    /// a bound for the header): what the bridge compares to its batch byte limit.
    pub fn max_encoded_len(&self) -> usize {
        binary::PREFIX_LEN + binary::max_head_len(&self.gateway) + 64 + self.body.len()
    }

    /// The range the envelope covers if finished now; `None` when it would be invalid
    /// (no message, no `cover_through` and no `prev_seq`).
    pub fn coverage(&self) -> Option<Coverage> {
        let last_seq = self.covered_through.or(self.order_last).or(self.prev_seq)?;
        Some(Coverage {
            prev_seq: self.prev_seq,
            last_seq,
        })
    }

    /// The encoded envelope, stamped `created_ms`.
    pub fn finish(self, created_ms: u64) -> Result<Vec<u8>, EnvelopeError> {
        let coverage = self.coverage().ok_or(EnvelopeError::Invalid(
            "an empty envelope at the stream's start covers nothing",
        ))?;
        validate_header(&self.gateway, coverage)?;
        let head = Head {
            gateway: &self.gateway,
            prev_seq: coverage.prev_seq,
            last_seq: coverage.last_seq,
            created_ms,
            count: self.count,
            replay: self.replay,
        };
        match self.format {
            Format::Postcard => binary::assemble(&head, &self.body),
            Format::JsonLines => jsonl::assemble(&head, &self.body),
        }
    }
}
