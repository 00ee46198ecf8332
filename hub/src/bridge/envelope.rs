//! `envelope` mode: one upstream PUBLISH per batch, encoded with `tern-envelope` straight
//! from the stored messages (no owned copy of topics or payloads), optionally
//! zstd-compressed (`compression = "zstd"`).

use tern_envelope::{EnvelopeError, EnvelopeWriter, Format, MessageRef};

use super::config::{Compression, EnvelopeFormat};
use super::select::Forward;
use crate::store::Seq;

/// The crate's format for a configured one.
pub fn format(format: EnvelopeFormat) -> Format {
    match format {
        EnvelopeFormat::Postcard => Format::Postcard,
        EnvelopeFormat::JsonLines => Format::JsonLines,
    }
}

/// MQTT 5 Content Type of an envelope publish.
pub fn content_type(format: EnvelopeFormat, compression: Compression) -> &'static str {
    match (format, compression) {
        (EnvelopeFormat::Postcard, Compression::None) => "application/vnd.tern.envelope+postcard",
        (EnvelopeFormat::Postcard, Compression::Zstd) => {
            "application/vnd.tern.envelope+postcard+zstd"
        }
        (EnvelopeFormat::JsonLines, Compression::None) => "application/vnd.tern.envelope+jsonl",
        (EnvelopeFormat::JsonLines, Compression::Zstd) => {
            "application/vnd.tern.envelope+jsonl+zstd"
        }
    }
}

/// One envelope to build.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    /// The stream (gateway id).
    pub gateway: &'a str,
    /// Encoding.
    pub format: EnvelopeFormat,
    /// Compression and its zstd level.
    pub compression: Compression,
    /// zstd level (with `Compression::Zstd`).
    pub level: i32,
    /// Last seq covered by the previous unit of the stream (`None` at its start).
    pub prev_seq: Option<Seq>,
    /// The messages, in log order.
    pub messages: &'a [Forward],
    /// Extend the covered range to this seq (the log was read through it and nothing else
    /// at or below it is forwarded).
    pub cover_through: Option<Seq>,
    /// Creation time stamped on the envelope (Unix ms).
    pub created_ms: u64,
    /// Mark it replayed (`replay = "live-first"`).
    pub replay: bool,
}

/// Encodes `batch`.
pub fn encode(batch: &Batch<'_>) -> Result<Vec<u8>, EnvelopeError> {
    let mut writer = EnvelopeWriter::new(format(batch.format), batch.gateway, batch.prev_seq);
    writer.set_replay(batch.replay);
    writer.reserve(batch.messages.iter().map(Forward::size).sum());
    for forward in batch.messages {
        let m = &forward.message;
        writer.push(&MessageRef {
            seq: forward.seq,
            topic: &m.topic,
            received_ms: m.received_ms,
            qos: m.qos as u8,
            retain: m.retain,
            content_type: m.properties.content_type.as_deref(),
            user_properties: &m.properties.user_properties,
            payload: &m.payload,
        })?;
    }
    if let Some(last) = batch.cover_through {
        writer.cover_through(last)?;
    }
    let encoded = writer.finish(batch.created_ms)?;
    match batch.compression {
        Compression::None => Ok(encoded),
        Compression::Zstd => tern_envelope::compress::compress(&encoded, batch.level),
    }
}
