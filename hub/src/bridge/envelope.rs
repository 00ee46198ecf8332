//! `envelope` mode: one upstream PUBLISH per batch, encoded with `tern-envelope` straight
//! from the stored messages (no owned copy of topics or payloads).

use tern_envelope::{EnvelopeError, EnvelopeWriter, Format, MessageRef};

use super::config::EnvelopeFormat;
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
pub fn content_type(format: EnvelopeFormat) -> &'static str {
    match format {
        EnvelopeFormat::Postcard => "application/vnd.tern.envelope+postcard",
        EnvelopeFormat::JsonLines => "application/vnd.tern.envelope+jsonl",
    }
}

/// One envelope to build.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    /// The stream (gateway id).
    pub gateway: &'a str,
    /// Encoding.
    pub format: EnvelopeFormat,
    /// Last seq covered by the previous unit of the stream (`None` at its start).
    pub prev_seq: Option<Seq>,
    /// The messages, in log order.
    pub messages: &'a [Forward],
    /// Extend the covered range to this seq (the log was read through it and nothing else
    /// at or below it is forwarded).
    pub cover_through: Option<Seq>,
    /// Creation time stamped on the envelope (Unix ms).
    pub created_ms: u64,
}

/// Encodes `batch`.
pub fn encode(batch: &Batch<'_>) -> Result<Vec<u8>, EnvelopeError> {
    let mut writer = EnvelopeWriter::new(format(batch.format), batch.gateway, batch.prev_seq);
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
    writer.finish(batch.created_ms)
}
