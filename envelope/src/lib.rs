//! # tern-envelope
//!
//! The format in which the Tern hub's upstream bridge forwards messages to a cloud MQTT
//! broker, and the tools a cloud ingestion service needs to read it: [`decode`] (detects the
//! format itself), [`MessageId`] (the stable id that makes resends harmless) and
//! [`consumer::Deduplicator`] (drops resends, reports lost units). The bridge uses
//! [`EnvelopeWriter`] (or [`encode`]) and [`each::properties`].
//!
//! The specification, with byte layouts and the id and gap scheme, is
//! `docs/bridge-envelope.md` in the Tern repository.
//!
//! # Layout
//! - `error`: [`EnvelopeError`], everything decoding can reject.
//! - `id`: [`MessageId`], `"<gateway>:<seq>"`.
//! - `model`: [`Envelope`], [`ForwardedMessage`], [`MessageRef`], [`Coverage`], invariants.
//! - `binary`: the postcard form behind the `TERN` magic.
//! - `compress`: zstd compression of either form (crate feature `zstd`, on by default).
//! - `jsonl`: the JSON-lines form.
//! - `base64`: the JSON form's encoding of non-UTF-8 payloads.
//! - `writer`: [`EnvelopeWriter`], the copy-free encoder.
//! - `each`: the user properties of `each` mode.
//! - `consumer`: the de-duplicator and gap detector.
//!
//! # Example
//! ```
//! use tern_envelope::{Envelope, Format, ForwardedMessage, consumer::{Deduplicator, Verdict}};
//!
//! let message = ForwardedMessage {
//!     seq: 7,
//!     topic: "gw-17/sensors/t1".into(),
//!     received_ms: 1_700_000_000_000,
//!     qos: 1,
//!     retain: false,
//!     content_type: None,
//!     user_properties: vec![],
//!     payload: b"21.5".to_vec(),
//! };
//! let envelope = Envelope {
//!     gateway: "gw-17".into(),
//!     prev_seq: Some(3),
//!     last_seq: 7,
//!     created_ms: 1_700_000_000_050,
//!     messages: vec![message],
//!     replay: false,
//! };
//! for format in [Format::Postcard, Format::JsonLines] {
//!     let bytes = tern_envelope::encode(&envelope, format)?;
//!     assert_eq!(tern_envelope::decode(&bytes)?, envelope);
//! }
//! let mut dedup = Deduplicator::new();
//! assert_eq!(dedup.observe_envelope(&envelope), [Verdict::New]);
//! assert_eq!(dedup.observe_envelope(&envelope), [Verdict::Duplicate]);
//! # Ok::<(), tern_envelope::EnvelopeError>(())
//! ```

pub mod base64;
pub mod binary;
pub mod compress;
pub mod consumer;
pub mod each;
mod error;
mod id;
pub mod jsonl;
mod model;
mod writer;

pub use error::EnvelopeError;
pub use id::MessageId;
pub use model::{Coverage, Envelope, ForwardedMessage, MessageRef, SeqRange};
pub use writer::EnvelopeWriter;

/// The two encodings of an envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// `b"TERN"`, version, flags, postcard body: compact, the default.
    Postcard,
    /// One JSON object per line (header first), for consumers in any language.
    JsonLines,
}

/// Encodes a valid envelope (see [`Envelope::validate`]) in `format`.
pub fn encode(envelope: &Envelope, format: Format) -> Result<Vec<u8>, EnvelopeError> {
    envelope.validate()?;
    let mut writer = EnvelopeWriter::new(format, envelope.gateway.as_str(), envelope.prev_seq);
    writer.set_replay(envelope.replay);
    for message in &envelope.messages {
        writer.push(&message.as_ref())?;
    }
    writer.cover_through(envelope.last_seq)?;
    writer.finish(envelope.created_ms)
}

/// Which format `bytes` are in: the binary magic, or a JSON object's `{`. A zstd frame
/// (compressed JSON lines) is [`EnvelopeError::UnknownFormat`] here; [`decode`] opens it.
pub fn detect(bytes: &[u8]) -> Result<Format, EnvelopeError> {
    match bytes.first() {
        None => Err(EnvelopeError::Empty),
        Some(_) if bytes.starts_with(&binary::MAGIC) => Ok(Format::Postcard),
        Some(b'{') => Ok(Format::JsonLines),
        Some(_) => Err(EnvelopeError::UnknownFormat),
    }
}

/// Decodes an envelope in either format, compressed ([`compress`]) or not, and checks its
/// invariants. Never panics; any malformed input is an [`EnvelopeError`].
pub fn decode(bytes: &[u8]) -> Result<Envelope, EnvelopeError> {
    if compress::is_zstd_frame(bytes) {
        let text = compress::decompress(bytes)?;
        // Only JSON lines travel as a bare frame; a frame inside a frame is refused.
        return match detect(&text)? {
            Format::JsonLines => jsonl::decode(&text),
            Format::Postcard => Err(EnvelopeError::Invalid(
                "a zstd frame holding a binary envelope (binary envelopes flag compression)",
            )),
        };
    }
    match detect(bytes)? {
        Format::Postcard => binary::decode(bytes),
        Format::JsonLines => jsonl::decode(bytes),
    }
}
