//! [`AbiError`]: everything that can be wrong with a buffer being read or a value being
//! written, with [`Part`] and [`Field`] naming where.

use core::fmt;

use crate::VERSION;

/// Which part of a buffer an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Part {
    /// The batch as a whole (its header, or bytes after its last record).
    Batch,
    /// The batch record at this index.
    Record(usize),
    /// The verdict buffer as a whole (its header, bitmap, edit count or trailing bytes).
    Verdicts,
    /// The edit at this position in the edit list (not the message index it names).
    Edit(usize),
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Batch => f.write_str("batch"),
            Self::Record(i) => write!(f, "record {i}"),
            Self::Verdicts => f.write_str("verdicts"),
            Self::Edit(i) => write!(f, "edit {i}"),
        }
    }
}

/// A field of the layout in `docs/filter-abi.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Field {
    Version,
    BatchFlags,
    Reserved,
    MessageCount,
    RecordLength,
    Record,
    RecordFlags,
    ReceivedMs,
    Topic,
    ClientId,
    ContentType,
    PropertyCount,
    PropertyKey,
    PropertyValue,
    Payload,
    Form,
    Bitmap,
    EditCount,
    EditIndex,
    EditFlags,
    RouteCount,
    DestinationKind,
    BridgeName,
    DestinationTopic,
    TemplateIndex,
    SpanCount,
    Spans,
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Version => "version",
            Self::BatchFlags => "batch flags",
            Self::Reserved => "reserved field",
            Self::MessageCount => "message count",
            Self::RecordLength => "record length",
            Self::Record => "record",
            Self::RecordFlags => "record flags",
            Self::ReceivedMs => "received_ms",
            Self::Topic => "topic",
            Self::ClientId => "client id",
            Self::ContentType => "content type",
            Self::PropertyCount => "user property count",
            Self::PropertyKey => "user property key",
            Self::PropertyValue => "user property value",
            Self::Payload => "payload",
            Self::Form => "form",
            Self::Bitmap => "keep bitmap",
            Self::EditCount => "edit count",
            Self::EditIndex => "edit index",
            Self::EditFlags => "edit flags",
            Self::RouteCount => "route count",
            Self::DestinationKind => "destination kind",
            Self::BridgeName => "bridge name",
            Self::DestinationTopic => "destination topic",
            Self::TemplateIndex => "template index",
            Self::SpanCount => "span count",
            Self::Spans => "spans",
        })
    }
}

/// The two halves of an edit, for errors about writing them in the wrong order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EditPart {
    Replacement,
    Routes,
}

impl fmt::Display for EditPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Replacement => "a replacement",
            Self::Routes => "routes",
        })
    }
}

/// A malformed buffer (reading) or a value the layout cannot carry (writing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AbiError {
    // ---- reading ----
    #[error("unsupported ABI version {found} (this build reads version {VERSION})")]
    Version { found: u8 },
    #[error("{part}: {field} runs past the end of the buffer")]
    Truncated { part: Part, field: Field },
    #[error("{part}: {field} is not valid UTF-8")]
    InvalidUtf8 { part: Part, field: Field },
    #[error("{part}: reserved bits set in {field}")]
    Reserved { part: Part, field: Field },
    #[error("{part}: QoS bits hold 3, which is not a QoS level")]
    InvalidQos { part: Part },
    #[error("{part}: {count} unexpected bytes after the last field")]
    TrailingBytes { part: Part, count: usize },
    #[error("batch: {count} messages cannot fit in the {available} bytes that follow the header")]
    ImplausibleCount { count: u32, available: usize },
    #[error("record {index}: payload presence does not match the batch's payloads-included flag")]
    PayloadFlag { index: usize },
    #[error("record {index}: carries user properties in a batch whose flags omit them")]
    PropertiesOmitted { index: usize },
    #[error("verdicts: unknown form {form}")]
    UnknownForm { form: u8 },
    #[error("verdicts: message count {found} does not match the batch's {expected}")]
    CountMismatch { expected: usize, found: u32 },
    #[error("edit {ordinal}: message index {index} is out of range for {count} messages")]
    EditIndexOutOfRange {
        ordinal: usize,
        index: u32,
        count: usize,
    },
    #[error("edit {ordinal}: message {index} does not come after message {previous}")]
    EditOrder {
        ordinal: usize,
        index: u32,
        previous: u32,
    },
    #[error("edit {ordinal}: message {index} is dropped, so it cannot carry an edit")]
    EditOnDropped { ordinal: usize, index: u32 },
    #[error("edit {ordinal}: carries neither a replacement nor routes")]
    EmptyEdit { ordinal: usize },
    #[error("edit {ordinal}: unknown destination kind {kind}")]
    UnknownDestination { ordinal: usize, kind: u8 },

    // ---- reading or writing ----
    #[error("message {index}: a route list must name at least one destination")]
    NoRoutes { index: usize },

    // ---- writing ----
    #[error("{field} is {len} bytes; the ABI allows at most {max}")]
    TooLong {
        field: Field,
        len: usize,
        max: usize,
    },
    #[error("{field} {count} exceeds the ABI's maximum of {max}")]
    TooMany {
        field: Field,
        count: usize,
        max: usize,
    },
    #[error("QoS {qos} is not 0, 1 or 2")]
    QosOutOfRange { qos: u8 },
    #[error("message index {index} is out of range for a batch of {count}")]
    IndexOutOfRange { index: usize, count: usize },
    #[error("message {index} is dropped, so it cannot carry an edit")]
    DroppedMessageEdit { index: usize },
    #[error(
        "edit for message {index} written after one for message {last}; edits go in ascending order"
    )]
    OutOfOrder { index: usize, last: usize },
    #[error("message {index}: the replacement must be written before its routes")]
    ReplaceAfterRoute { index: usize },
    #[error("message {index} already has {what}")]
    DuplicateEdit { index: usize, what: EditPart },
}
