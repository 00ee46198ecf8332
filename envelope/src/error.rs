//! The crate's one error type: everything [`decode`](crate::decode),
//! [`encode`](crate::encode) and the id parsers can reject.

/// Why bytes are not a valid envelope, or an envelope cannot be encoded.
///
/// Decoding returns one of these for every malformed input; it never panics.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// The input is empty.
    #[error("empty input")]
    Empty,
    /// Neither the binary magic `TERN` nor a JSON object (`{`) starts the input.
    #[error("not a Tern envelope: starts with neither b\"TERN\" nor '{{'")]
    UnknownFormat,
    /// The binary header ends before its version and flags bytes.
    #[error("truncated binary header")]
    TruncatedHeader,
    /// A format version this decoder does not know (it knows version 1).
    #[error("unsupported envelope version {0} (this decoder reads version 1)")]
    UnsupportedVersion(u64),
    /// Flags this decoder does not know, e.g. compression added by a later version.
    #[error("unsupported envelope flags {0:#04x}")]
    UnsupportedFlags(u8),
    /// The postcard body does not decode.
    #[error("malformed binary body: {0}")]
    Binary(#[from] postcard::Error),
    /// Bytes follow a complete binary body.
    #[error("{0} trailing bytes after the binary body")]
    TrailingBytes(usize),
    /// A JSON line does not parse as the expected object.
    #[error("line {line}: {reason}")]
    Json {
        /// 1-based line number (line 1 is the header).
        line: usize,
        /// What serde_json said.
        reason: String,
    },
    /// The JSON header announces a different number of message lines than follow.
    #[error("header announces {announced} messages, {found} lines follow")]
    CountMismatch {
        /// `count` in the header line.
        announced: u64,
        /// Message lines present.
        found: u64,
    },
    /// A JSON message has neither or both of `payload` and `payload_b64`, or bad base64.
    #[error("message seq {seq}: {reason}")]
    Payload {
        /// Seq of the offending message.
        seq: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// The envelope decodes but breaks an invariant of the format (seq order, range, QoS...).
    #[error("invalid envelope: {0}")]
    Invalid(&'static str),
    /// A zstd frame does not decompress (or, when encoding, the compressor failed).
    #[error("zstd: {0}")]
    Compression(String),
    /// A compressed envelope decompresses to more than this many bytes.
    #[error("compressed envelope larger than {0} bytes once decompressed")]
    DecompressedTooLarge(usize),
    /// A compressed envelope, and this build has no zstd support (crate feature `zstd`).
    #[error("compressed envelope, but this decoder was built without the zstd feature")]
    CompressionUnsupported,
    /// A `tern-id` / `tern-prev` value does not parse.
    #[error("invalid message id {0:?}: expected \"<gateway>:<seq>\"")]
    InvalidId(String),
}
