//! The binary form: `b"TERN"`, a version byte, a flags byte, then the postcard encoding of
//! [`Envelope`]. The writer encodes the header fields last but emits them
//! first, so it can append messages before it knows their count and `last_seq`.
//!
//! Flags (version 1): bit 0 ([`FLAG_ZSTD`]) says the bytes after the prefix are a zstd
//! frame holding the postcard body ([`crate::compress`]); bit 1 ([`FLAG_REPLAY`]) marks a
//! replayed envelope. Other bits are reserved: a decoder rejects them.

use crate::model::MessageRef;
use crate::writer::Head;
use crate::{Envelope, EnvelopeError};

/// First four bytes of every binary envelope.
pub const MAGIC: [u8; 4] = *b"TERN";
/// Binary format version this crate writes and reads.
pub const VERSION: u8 = 1;
/// Flags byte of an uncompressed envelope.
pub const FLAGS: u8 = 0;
/// Flag bit: the body after the prefix is zstd-compressed.
pub const FLAG_ZSTD: u8 = 0x01;
/// Flag bit: a replayed envelope ([`Envelope::replay`]).
pub const FLAG_REPLAY: u8 = 0x02;
/// Every flag bit this decoder knows.
pub const KNOWN_FLAGS: u8 = FLAG_ZSTD | FLAG_REPLAY;
/// Bytes before the postcard body.
pub const PREFIX_LEN: usize = 6;

/// Appends one message's postcard encoding to `body`.
pub(crate) fn push_message(
    body: &mut Vec<u8>,
    message: &MessageRef<'_>,
) -> Result<(), EnvelopeError> {
    *body = postcard::to_extend(message, std::mem::take(body))?;
    Ok(())
}

/// Prefix + head + `body` (the already encoded messages).
pub(crate) fn assemble(head: &Head<'_>, body: &[u8]) -> Result<Vec<u8>, EnvelopeError> {
    let mut out = Vec::with_capacity(PREFIX_LEN + max_head_len(head.gateway) + body.len());
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(if head.replay { FLAG_REPLAY } else { FLAGS });
    let fields = (
        head.gateway,
        head.prev_seq,
        head.last_seq,
        head.created_ms,
        head.count,
    );
    let mut out = postcard::to_extend(&fields, out)?;
    out.extend_from_slice(body);
    Ok(out)
}

/// Upper bound of the head's encoded length: five varints of at most 10 bytes, an
/// option tag, the gateway.
pub(crate) fn max_head_len(gateway: &str) -> usize {
    5 * 10 + 1 + gateway.len()
}

pub(crate) fn decode(bytes: &[u8]) -> Result<Envelope, EnvelopeError> {
    let rest = bytes
        .strip_prefix(&MAGIC)
        .ok_or(EnvelopeError::UnknownFormat)?;
    let [version, flags, body @ ..] = rest else {
        return Err(EnvelopeError::TruncatedHeader);
    };
    if *version != VERSION {
        return Err(EnvelopeError::UnsupportedVersion(u64::from(*version)));
    }
    if flags & !KNOWN_FLAGS != 0 {
        return Err(EnvelopeError::UnsupportedFlags(*flags));
    }
    let decompressed;
    let body = if flags & FLAG_ZSTD != 0 {
        decompressed = crate::compress::decompress(body)?;
        decompressed.as_slice()
    } else {
        body
    };
    let (mut envelope, tail) = postcard::take_from_bytes::<Envelope>(body)?;
    envelope.replay = flags & FLAG_REPLAY != 0;
    if !tail.is_empty() {
        return Err(EnvelopeError::TrailingBytes(tail.len()));
    }
    envelope.validate()?;
    Ok(envelope)
}
