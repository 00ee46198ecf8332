//! The JSON-lines form, for consumers in languages without a postcard decoder: a header
//! object on the first line, then one object per message, each line ended by `\n`.
//! Payloads that are valid UTF-8 travel as the string `payload`, others as standard padded
//! base64 in `payload_b64` (exactly one of the two is present). Decoders ignore unknown
//! fields, so later versions may add some without breaking them.

use serde::{Deserialize, Serialize};

use crate::model::{MessageRef, SeqOrder, validate_header};
use crate::{Coverage, Envelope, EnvelopeError, ForwardedMessage, base64};

/// Value of the header's `tern` field (the format version).
pub const VERSION: u64 = 1;

#[derive(Serialize)]
struct HeaderOut<'a> {
    tern: u64,
    gateway: &'a str,
    prev_seq: Option<u64>,
    last_seq: u64,
    created_ms: u64,
    count: u64,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    replay: bool,
}

#[derive(Serialize)]
struct MessageOut<'a> {
    seq: u64,
    topic: &'a str,
    received_ms: u64,
    qos: u8,
    retain: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    content_type: Option<&'a str>,
    user_properties: &'a [(String, String)],
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload_b64: Option<String>,
}

#[derive(Deserialize)]
struct VersionProbe {
    tern: u64,
}

#[derive(Deserialize)]
struct HeaderIn {
    gateway: String,
    prev_seq: Option<u64>,
    last_seq: u64,
    created_ms: u64,
    count: u64,
    #[serde(default)]
    replay: bool,
}

#[derive(Deserialize)]
struct MessageIn {
    seq: u64,
    topic: String,
    received_ms: u64,
    qos: u8,
    retain: bool,
    #[serde(default)]
    content_type: Option<String>,
    #[serde(default)]
    user_properties: Vec<(String, String)>,
    #[serde(default)]
    payload: Option<String>,
    #[serde(default)]
    payload_b64: Option<String>,
}

fn json_error(line: usize, err: &serde_json::Error) -> EnvelopeError {
    EnvelopeError::Json {
        line,
        reason: err.to_string(),
    }
}

/// Appends one message line to `body`.
pub(crate) fn push_message(body: &mut Vec<u8>, m: &MessageRef<'_>) -> Result<(), EnvelopeError> {
    let (payload, payload_b64) = match std::str::from_utf8(m.payload) {
        Ok(text) => (Some(text), None),
        Err(_) => (None, Some(base64::encode(m.payload))),
    };
    let out = MessageOut {
        seq: m.seq,
        topic: m.topic,
        received_ms: m.received_ms,
        qos: m.qos,
        retain: m.retain,
        content_type: m.content_type,
        user_properties: m.user_properties,
        payload,
        payload_b64,
    };
    serde_json::to_writer(&mut *body, &out).map_err(|e| json_error(0, &e))?;
    body.push(b'\n');
    Ok(())
}

/// Header line + `body` (the message lines).
pub(crate) fn assemble(
    head: &crate::writer::Head<'_>,
    body: &[u8],
) -> Result<Vec<u8>, EnvelopeError> {
    let header = HeaderOut {
        tern: VERSION,
        gateway: head.gateway,
        prev_seq: head.prev_seq,
        last_seq: head.last_seq,
        created_ms: head.created_ms,
        count: head.count,
        replay: head.replay,
    };
    let mut out = Vec::with_capacity(128 + head.gateway.len() + body.len());
    serde_json::to_writer(&mut out, &header).map_err(|e| json_error(1, &e))?;
    out.push(b'\n');
    out.extend_from_slice(body);
    Ok(out)
}

pub(crate) fn decode(bytes: &[u8]) -> Result<Envelope, EnvelopeError> {
    // Every line ends with '\n'; tolerate a missing final one and "\r\n".
    let bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let mut lines = bytes
        .split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line));
    let header_line = lines.next().ok_or(EnvelopeError::Empty)?;
    let probe: VersionProbe = serde_json::from_slice(header_line).map_err(|e| json_error(1, &e))?;
    if probe.tern != VERSION {
        return Err(EnvelopeError::UnsupportedVersion(probe.tern));
    }
    let header: HeaderIn = serde_json::from_slice(header_line).map_err(|e| json_error(1, &e))?;
    let coverage = Coverage {
        prev_seq: header.prev_seq,
        last_seq: header.last_seq,
    };
    validate_header(&header.gateway, coverage)?;
    let mut order = SeqOrder::new(header.prev_seq);
    let mut messages = Vec::new();
    for (index, line) in lines.enumerate() {
        let number = index + 2;
        let m: MessageIn = serde_json::from_slice(line).map_err(|e| json_error(number, &e))?;
        order.check(m.seq, m.qos)?;
        let payload = match (m.payload, m.payload_b64) {
            (Some(text), None) => text.into_bytes(),
            (None, Some(coded)) => base64::decode(&coded).ok_or(EnvelopeError::Payload {
                seq: m.seq,
                reason: "payload_b64 is not canonical padded base64",
            })?,
            (None, None) => {
                return Err(EnvelopeError::Payload {
                    seq: m.seq,
                    reason: "neither payload nor payload_b64",
                });
            }
            (Some(_), Some(_)) => {
                return Err(EnvelopeError::Payload {
                    seq: m.seq,
                    reason: "both payload and payload_b64",
                });
            }
        };
        messages.push(ForwardedMessage {
            seq: m.seq,
            topic: m.topic,
            received_ms: m.received_ms,
            qos: m.qos,
            retain: m.retain,
            content_type: m.content_type,
            user_properties: m.user_properties,
            payload,
        });
    }
    order.finish(header.last_seq)?;
    let found = u64::try_from(messages.len()).unwrap_or(u64::MAX);
    if found != header.count {
        return Err(EnvelopeError::CountMismatch {
            announced: header.count,
            found,
        });
    }
    Ok(Envelope {
        gateway: header.gateway,
        prev_seq: header.prev_seq,
        last_seq: header.last_seq,
        created_ms: header.created_ms,
        messages,
        replay: header.replay,
    })
}
