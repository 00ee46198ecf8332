//! The message record shared by batches and replacements: [`RecordRef`] (what a writer
//! packs), [`MessageView`] (a validated, borrowed record) and its [`Properties`].

use alloc::vec::Vec;
use core::fmt;

use crate::error::{AbiError, Field, Part};
use crate::wire::{Reader, patch_u16, patch_u32, put_bytes32, put_str16, put_u32, put_u64};

const QOS_MASK: u8 = 0b0000_0011;
const RETAIN: u8 = 1 << 2;
const PAYLOAD: u8 = 1 << 3;
const CONTENT_TYPE: u8 = 1 << 4;
const RECORD_RESERVED: u8 = 0b1110_0000;

/// Smallest encoded record: length, flags, received_ms, two empty `str16`s, property count.
pub(crate) const MIN_RECORD_LEN: usize = 4 + 1 + 8 + 2 + 2 + 2;

/// Borrowed fields of one message for writing (batch records and replacements).
///
/// In a batch, `payload` is written only when the batch includes payloads (`None` is then
/// written as an empty payload). In a replacement, `None` means "payload unchanged".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    pub topic: &'a str,
    /// The publisher's client id; empty for messages the hub itself publishes.
    pub client_id: &'a str,
    pub qos: u8,
    pub retain: bool,
    /// When the hub received the message, Unix milliseconds.
    pub received_ms: u64,
    pub content_type: Option<&'a str>,
    pub payload: Option<&'a [u8]>,
}

/// Appends one record (length prefix included). On error `buf` is left as it was.
pub(crate) fn write_record<'p>(
    buf: &mut Vec<u8>,
    rec: &RecordRef<'_>,
    properties: impl Iterator<Item = (&'p str, &'p str)>,
    payload: Option<&[u8]>,
) -> Result<(), AbiError> {
    let start = buf.len();
    let result = write_record_fields(buf, start, rec, properties, payload);
    if result.is_err() {
        buf.truncate(start);
    }
    result
}

fn write_record_fields<'p>(
    buf: &mut Vec<u8>,
    start: usize,
    rec: &RecordRef<'_>,
    properties: impl Iterator<Item = (&'p str, &'p str)>,
    payload: Option<&[u8]>,
) -> Result<(), AbiError> {
    if rec.qos > 2 {
        return Err(AbiError::QosOutOfRange { qos: rec.qos });
    }
    let mut flags = rec.qos;
    if rec.retain {
        flags |= RETAIN;
    }
    if payload.is_some() {
        flags |= PAYLOAD;
    }
    if rec.content_type.is_some() {
        flags |= CONTENT_TYPE;
    }
    put_u32(buf, 0); // record length, patched below
    buf.push(flags);
    put_u64(buf, rec.received_ms);
    put_str16(buf, rec.topic, Field::Topic)?;
    put_str16(buf, rec.client_id, Field::ClientId)?;
    if let Some(ct) = rec.content_type {
        put_str16(buf, ct, Field::ContentType)?;
    }
    let count_at = buf.len();
    buf.extend_from_slice(&[0, 0]); // property count, patched below
    let mut count: u16 = 0;
    for (key, value) in properties {
        count = count.checked_add(1).ok_or(AbiError::TooMany {
            field: Field::PropertyCount,
            count: usize::from(u16::MAX) + 1,
            max: usize::from(u16::MAX),
        })?;
        put_str16(buf, key, Field::PropertyKey)?;
        put_str16(buf, value, Field::PropertyValue)?;
    }
    patch_u16(buf, count_at, count);
    if let Some(p) = payload {
        put_bytes32(buf, p, Field::Payload)?;
    }
    let body = buf.len() - start - 4;
    let body = u32::try_from(body).map_err(|_| AbiError::TooLong {
        field: Field::Record,
        len: body,
        max: crate::wire::U32_MAX,
    })?;
    patch_u32(buf, start, body);
    Ok(())
}

/// Reads one length-prefixed record from `r`, validating every field.
pub(crate) fn read_record<'a>(r: &mut Reader<'a>) -> Result<MessageView<'a>, AbiError> {
    let len = r.len32(Field::RecordLength)?;
    let body = r.take(len, Field::Record)?;
    decode_body(body, r.part)
}

/// Decodes and validates a record body (the bytes after its length field).
fn decode_body(body: &[u8], part: Part) -> Result<MessageView<'_>, AbiError> {
    let mut r = Reader::new(body, part);
    let flags = r.u8(Field::RecordFlags)?;
    if flags & RECORD_RESERVED != 0 {
        return Err(AbiError::Reserved {
            part,
            field: Field::RecordFlags,
        });
    }
    let qos = flags & QOS_MASK;
    if qos == 3 {
        return Err(AbiError::InvalidQos { part });
    }
    let received_ms = r.u64(Field::ReceivedMs)?;
    let topic = r.str16(Field::Topic)?;
    let client_id = r.str16(Field::ClientId)?;
    let content_type = if flags & CONTENT_TYPE != 0 {
        Some(r.str16(Field::ContentType)?)
    } else {
        None
    };
    let property_count = r.u16(Field::PropertyCount)?;
    let props_start = r.rest;
    for _ in 0..property_count {
        r.str16(Field::PropertyKey)?;
        r.str16(Field::PropertyValue)?;
    }
    let props_len = props_start.len() - r.rest.len();
    let properties = props_start.get(..props_len).unwrap_or_default();
    let payload = if flags & PAYLOAD != 0 {
        Some(r.bytes32(Field::Payload)?)
    } else {
        None
    };
    r.finish()?;
    Ok(MessageView {
        topic,
        client_id,
        qos,
        retain: flags & RETAIN != 0,
        received_ms,
        content_type,
        payload,
        properties,
        property_count,
    })
}

/// A borrowed, validated view of one record. Cheap to copy.
#[derive(Clone, Copy)]
pub struct MessageView<'a> {
    topic: &'a str,
    client_id: &'a str,
    qos: u8,
    retain: bool,
    received_ms: u64,
    content_type: Option<&'a str>,
    payload: Option<&'a [u8]>,
    /// The encoded property pairs, already validated (every string is UTF-8).
    properties: &'a [u8],
    property_count: u16,
}

impl<'a> MessageView<'a> {
    pub fn topic(&self) -> &'a str {
        self.topic
    }

    /// The publisher's client id; empty for messages the hub itself publishes. In a
    /// replacement it is whatever the guest wrote (the host keeps the original).
    pub fn client_id(&self) -> &'a str {
        self.client_id
    }

    pub fn qos(&self) -> u8 {
        self.qos
    }

    pub fn retain(&self) -> bool {
        self.retain
    }

    /// When the hub received the message, Unix milliseconds.
    pub fn received_ms(&self) -> u64 {
        self.received_ms
    }

    pub fn content_type(&self) -> Option<&'a str> {
        self.content_type
    }

    /// The payload: in a batch, `Some` exactly when the batch includes payloads; in a
    /// replacement, `None` means "unchanged".
    pub fn payload(&self) -> Option<&'a [u8]> {
        self.payload
    }

    /// User properties in the order the publisher sent them, duplicates kept.
    pub fn properties(&self) -> Properties<'a> {
        Properties {
            rest: self.properties,
            remaining: self.property_count,
        }
    }

    /// The value of the first user property named `key`.
    pub fn property(&self, key: &str) -> Option<&'a str> {
        // Compare raw bytes; only the matching value is turned back into a `str`.
        let mut r = Reader::new(self.properties, Part::Batch);
        for _ in 0..self.property_count {
            let k = r.raw16(Field::PropertyKey).ok()?;
            let v = r.raw16(Field::PropertyValue).ok()?;
            if k == key.as_bytes() {
                return core::str::from_utf8(v).ok();
            }
        }
        None
    }

    /// The same fields as a [`RecordRef`], e.g. to copy this message into another buffer
    /// together with [`properties`](Self::properties).
    pub fn record(&self) -> RecordRef<'a> {
        RecordRef {
            topic: self.topic,
            client_id: self.client_id,
            qos: self.qos,
            retain: self.retain,
            received_ms: self.received_ms,
            content_type: self.content_type,
            payload: self.payload,
        }
    }
}

impl fmt::Debug for MessageView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MessageView")
            .field("topic", &self.topic)
            .field("client_id", &self.client_id)
            .field("qos", &self.qos)
            .field("retain", &self.retain)
            .field("received_ms", &self.received_ms)
            .field("content_type", &self.content_type)
            .field("properties", &self.properties())
            .field("payload", &self.payload)
            .finish()
    }
}

/// The user properties of a [`MessageView`]: `(key, value)` pairs in order, duplicates kept.
#[derive(Clone)]
pub struct Properties<'a> {
    rest: &'a [u8],
    remaining: u16,
}

impl<'a> Iterator for Properties<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        self.remaining = self.remaining.checked_sub(1)?;
        // Validated when the record was decoded, so none of these fail.
        let mut r = Reader::new(self.rest, Part::Batch);
        let key = r.str16(Field::PropertyKey).ok()?;
        let value = r.str16(Field::PropertyValue).ok()?;
        self.rest = r.rest;
        Some((key, value))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = usize::from(self.remaining);
        (n, Some(n))
    }
}

impl ExactSizeIterator for Properties<'_> {}

impl fmt::Debug for Properties<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.clone()).finish()
    }
}
