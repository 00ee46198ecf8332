//! zstd compression of encoded envelopes, for metered links.
//!
//! - Binary form: the prefix stays readable (`b"TERN"`, version 1, flags with
//!   [`FLAG_ZSTD`](crate::binary::FLAG_ZSTD) set) and everything after it is one zstd frame
//!   holding the postcard body.
//! - JSON-lines form: the whole text is one zstd frame (it starts with the zstd magic
//!   `28 B5 2F FD`), so any zstd tool restores the plain JSON lines.
//!
//! [`decode`](crate::decode) recognises both. Decompression stops at
//! [`MAX_DECOMPRESSED`] bytes, so a small hostile frame cannot make a consumer allocate
//! without bound.
//!
//! Without the crate feature `zstd`, compressed input is rejected with
//! [`EnvelopeError::CompressionUnsupported`] and [`compress`] is absent.

use crate::EnvelopeError;

/// First four bytes of a zstd frame.
pub const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];

/// Most bytes one compressed envelope may decompress to (256 MiB, twice the bridge's
/// largest batch).
pub const MAX_DECOMPRESSED: usize = 256 << 20;

/// Default zstd level of [`compress`]: fast, and most of the gain on repetitive telemetry.
pub const DEFAULT_LEVEL: i32 = 3;

/// Whether `bytes` start with the zstd magic (a compressed JSON-lines envelope).
pub fn is_zstd_frame(bytes: &[u8]) -> bool {
    bytes.starts_with(&ZSTD_MAGIC)
}

/// Compresses an envelope encoded by [`encode`](crate::encode) or
/// [`EnvelopeWriter`](crate::EnvelopeWriter) (either format) at zstd `level` (1 to 22;
/// 0 means the library default).
#[cfg(feature = "zstd")]
pub fn compress(encoded: &[u8], level: i32) -> Result<Vec<u8>, EnvelopeError> {
    use crate::binary::{FLAG_REPLAY, FLAG_ZSTD, MAGIC, PREFIX_LEN, VERSION};
    let zstd_err = |e: std::io::Error| EnvelopeError::Compression(e.to_string());
    match crate::detect(encoded)? {
        crate::Format::Postcard => {
            let (prefix, body) = encoded
                .split_at_checked(PREFIX_LEN)
                .ok_or(EnvelopeError::TruncatedHeader)?;
            if prefix[4] != VERSION {
                return Err(EnvelopeError::UnsupportedVersion(u64::from(prefix[4])));
            }
            if prefix[5] & !FLAG_REPLAY != 0 {
                return Err(EnvelopeError::UnsupportedFlags(prefix[5]));
            }
            let mut out = Vec::with_capacity(PREFIX_LEN + body.len() / 2);
            out.extend_from_slice(&MAGIC);
            out.push(VERSION);
            out.push(prefix[5] | FLAG_ZSTD);
            let mut encoder = zstd::stream::Encoder::new(out, level).map_err(zstd_err)?;
            std::io::Write::write_all(&mut encoder, body).map_err(zstd_err)?;
            encoder.finish().map_err(zstd_err)
        }
        crate::Format::JsonLines => zstd::bulk::compress(encoded, level).map_err(zstd_err),
    }
}

/// Decompresses one zstd frame of at most [`MAX_DECOMPRESSED`] bytes.
#[cfg(feature = "zstd")]
pub(crate) fn decompress(frame: &[u8]) -> Result<Vec<u8>, EnvelopeError> {
    use std::io::Read as _;
    let zstd_err = |e: std::io::Error| EnvelopeError::Compression(e.to_string());
    let decoder = zstd::stream::Decoder::with_buffer(frame).map_err(zstd_err)?;
    let mut out = Vec::with_capacity(frame.len().saturating_mul(4).min(MAX_DECOMPRESSED));
    let limit = u64::try_from(MAX_DECOMPRESSED).unwrap_or(u64::MAX);
    decoder
        .take(limit + 1)
        .read_to_end(&mut out)
        .map_err(zstd_err)?;
    if out.len() > MAX_DECOMPRESSED {
        return Err(EnvelopeError::DecompressedTooLarge(MAX_DECOMPRESSED));
    }
    Ok(out)
}

/// Without the `zstd` feature: compressed input cannot be read.
#[cfg(not(feature = "zstd"))]
pub(crate) fn decompress(_frame: &[u8]) -> Result<Vec<u8>, EnvelopeError> {
    Err(EnvelopeError::CompressionUnsupported)
}
