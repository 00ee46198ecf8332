//! The message record shared by batches and replacements: [`RecordRef`] (what a writer
//! packs), [`RecordView`] (a record whose layout is checked, strings checked on access),
//! [`MessageView`] (a fully validated, borrowed record) and its [`Properties`].

use alloc::vec::Vec;
use core::fmt;

use crate::bytes::same_bytes;
use crate::error::{AbiError, Field, Part};
use crate::wire::{Reader, patch_u16, patch_u32, put_bytes32};

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
    let topic_len = len16(rec.topic, Field::Topic)?;
    let client_len = len16(rec.client_id, Field::ClientId)?;
    let content_type = rec
        .content_type
        .map(|ct| len16(ct, Field::ContentType).map(|len| (ct, len)))
        .transpose()?;
    // The body without its properties. A record without properties (a batch for a filter
    // that does not read them) is then written front to back with its final length: no
    // placeholders to patch. With properties, the length and count are patched below.
    let bare_body = MIN_RECORD_LEN - 4
        + rec.topic.len()
        + rec.client_id.len()
        + content_type.map_or(0, |(ct, _)| 2 + ct.len())
        + payload.map_or(0, |p| 4 + p.len());
    // Room for everything but the properties, so the writes below do not regrow the buffer.
    buf.reserve(4 + bare_body);
    // Record length, flags, received_ms and the topic's length: one write. A length that
    // does not fit is reported below, after the payload's own check.
    let mut head = [0u8; 15];
    head[..4].copy_from_slice(&u32::try_from(bare_body).unwrap_or(0).to_le_bytes());
    head[4] = flags;
    head[5..13].copy_from_slice(&rec.received_ms.to_le_bytes());
    head[13..15].copy_from_slice(&topic_len.to_le_bytes());
    buf.extend_from_slice(&head);
    buf.extend_from_slice(rec.topic.as_bytes());
    buf.extend_from_slice(&client_len.to_le_bytes());
    buf.extend_from_slice(rec.client_id.as_bytes());
    if let Some((ct, len)) = content_type {
        buf.extend_from_slice(&len.to_le_bytes());
        buf.extend_from_slice(ct.as_bytes());
    }
    let count_at = buf.len();
    buf.extend_from_slice(&[0, 0]); // property count, patched below if not 0
    let mut count: u16 = 0;
    for (key, value) in properties {
        count = count.checked_add(1).ok_or(AbiError::TooMany {
            field: Field::PropertyCount,
            count: usize::from(u16::MAX) + 1,
            max: usize::from(u16::MAX),
        })?;
        let key_len = len16(key, Field::PropertyKey)?;
        let value_len = len16(value, Field::PropertyValue)?;
        buf.reserve(4 + key.len() + value.len());
        buf.extend_from_slice(&key_len.to_le_bytes());
        buf.extend_from_slice(key.as_bytes());
        buf.extend_from_slice(&value_len.to_le_bytes());
        buf.extend_from_slice(value.as_bytes());
    }
    if count != 0 {
        patch_u16(buf, count_at, count);
    }
    if let Some(p) = payload {
        put_bytes32(buf, p, Field::Payload)?;
    }
    // The length written up front is right unless properties were written (or it does not
    // fit a `u32`, which is then the error).
    let body = buf.len() - start - 4;
    if body != bare_body || u32::try_from(body).is_err() {
        let body = u32::try_from(body).map_err(|_| AbiError::TooLong {
            field: Field::Record,
            len: body,
            max: crate::wire::U32_MAX,
        })?;
        patch_u32(buf, start, body);
    }
    Ok(())
}

/// The `str16` length of `s`, or the error for a string too long for it.
fn len16(s: &str, field: Field) -> Result<u16, AbiError> {
    u16::try_from(s.len()).map_err(|_| AbiError::TooLong {
        field,
        len: s.len(),
        max: usize::from(u16::MAX),
    })
}

/// Reads one length-prefixed record from `r`, validating every field.
pub(crate) fn read_record<'a>(r: &mut Reader<'a>) -> Result<MessageView<'a>, AbiError> {
    read_record_layout(r)?.validate()
}

/// Reads one length-prefixed record from `r`, checking its layout but not its UTF-8.
pub(crate) fn read_record_layout<'a>(r: &mut Reader<'a>) -> Result<RecordView<'a>, AbiError> {
    if let Some((view, rest)) = quick_record(r.rest, r.part) {
        r.rest = rest;
        return Ok(view);
    }
    checked_record_layout(r)
}

/// The checked path of [`read_record_layout`], out of line: it runs only for a record the
/// quick path gave up on, to say what is wrong with it.
#[cold]
#[inline(never)]
fn checked_record_layout<'a>(r: &mut Reader<'a>) -> Result<RecordView<'a>, AbiError> {
    let len = r.len32(Field::RecordLength)?;
    let body = r.take(len, Field::Record)?;
    split_body(body, r.part)
}

/// [`read_record_layout`] without error reporting: the record at the front of `buf` and the
/// bytes after it, or `None` for anything [`split_body`] would refuse (and nothing else it
/// accepts is refused here), so the caller then runs the checked path to say what is wrong.
/// Every batch record takes this path; it is a straight run of slice splits. Inline: in a
/// guest's batch loop the view then stays in locals instead of being copied through memory
/// on its way out.
#[inline]
pub(crate) fn quick_record(buf: &[u8], part: Part) -> Option<(RecordView<'_>, &[u8])> {
    let (len, after) = buf.split_first_chunk::<4>()?;
    let (body, after) = after.split_at_checked(usize::try_from(u32::from_le_bytes(*len)).ok()?)?;
    let (&flags, b) = body.split_first()?;
    if flags & RECORD_RESERVED != 0 || flags & QOS_MASK == 3 {
        return None;
    }
    let (received_ms, b) = b.split_first_chunk::<8>()?;
    let (topic, b) = split16(b)?;
    let (client_id, b) = split16(b)?;
    let (content_type, b) = if flags & CONTENT_TYPE != 0 {
        let (ct, b) = split16(b)?;
        (Some(ct), b)
    } else {
        (None, b)
    };
    let (count, props_start) = b.split_first_chunk::<2>()?;
    let property_count = u16::from_le_bytes(*count);
    let mut b = props_start;
    for _ in 0..property_count {
        let (_, after_key) = split16(b)?;
        let (_, after_value) = split16(after_key)?;
        b = after_value;
    }
    let properties = props_start.get(..props_start.len() - b.len())?;
    let (payload, b) = if flags & PAYLOAD != 0 {
        let (len, b) = b.split_first_chunk::<4>()?;
        let (payload, b) = b.split_at_checked(usize::try_from(u32::from_le_bytes(*len)).ok()?)?;
        (Some(payload), b)
    } else {
        (None, b)
    };
    if !b.is_empty() {
        return None;
    }
    let view = RecordView {
        part,
        flags,
        received_ms: u64::from_le_bytes(*received_ms),
        topic,
        client_id,
        content_type,
        properties,
        property_count,
        payload,
    };
    Some((view, after))
}

/// Checks the layout of a record body (the bytes after its length field): flags, lengths,
/// counts, no trailing bytes. Strings stay unchecked bytes.
fn split_body(body: &[u8], part: Part) -> Result<RecordView<'_>, AbiError> {
    let mut r = Reader::new(body, part);
    let flags = r.u8(Field::RecordFlags)?;
    if flags & RECORD_RESERVED != 0 {
        return Err(AbiError::Reserved {
            part,
            field: Field::RecordFlags,
        });
    }
    if flags & QOS_MASK == 3 {
        return Err(AbiError::InvalidQos { part });
    }
    let received_ms = r.u64(Field::ReceivedMs)?;
    let topic = r.raw16(Field::Topic)?;
    let client_id = r.raw16(Field::ClientId)?;
    let content_type = if flags & CONTENT_TYPE != 0 {
        Some(r.raw16(Field::ContentType)?)
    } else {
        None
    };
    let property_count = r.u16(Field::PropertyCount)?;
    let props_start = r.rest;
    for _ in 0..property_count {
        r.raw16(Field::PropertyKey)?;
        r.raw16(Field::PropertyValue)?;
    }
    let props_len = props_start.len() - r.rest.len();
    let properties = props_start.get(..props_len).unwrap_or_default();
    let payload = if flags & PAYLOAD != 0 {
        Some(r.bytes32(Field::Payload)?)
    } else {
        None
    };
    r.finish()?;
    Ok(RecordView {
        part,
        flags,
        received_ms,
        topic,
        client_id,
        content_type,
        properties,
        property_count,
        payload,
    })
}

fn utf8(bytes: &[u8], part: Part, field: Field) -> Result<&str, AbiError> {
    core::str::from_utf8(bytes).map_err(|_| AbiError::InvalidUtf8 { part, field })
}

/// A record whose layout has been checked but whose strings have not been checked for
/// UTF-8 yet: each string accessor checks the string it returns, so a reader pays only for
/// the fields it reads. [`validate`](Self::validate) checks every string at once and gives
/// the [`MessageView`]. Cheap to copy.
#[derive(Clone, Copy)]
pub struct RecordView<'a> {
    part: Part,
    flags: u8,
    received_ms: u64,
    topic: &'a [u8],
    client_id: &'a [u8],
    content_type: Option<&'a [u8]>,
    /// The encoded property pairs; their lengths are checked, their UTF-8 is not.
    properties: &'a [u8],
    property_count: u16,
    payload: Option<&'a [u8]>,
}

impl<'a> RecordView<'a> {
    pub fn topic(&self) -> Result<&'a str, AbiError> {
        utf8(self.topic, self.part, Field::Topic)
    }

    /// The publisher's client id; empty for messages the hub itself publishes.
    pub fn client_id(&self) -> Result<&'a str, AbiError> {
        utf8(self.client_id, self.part, Field::ClientId)
    }

    /// The topic's bytes, not checked for UTF-8.
    pub fn topic_bytes(&self) -> &'a [u8] {
        self.topic
    }

    /// The client id's bytes, not checked for UTF-8.
    pub fn client_id_bytes(&self) -> &'a [u8] {
        self.client_id
    }

    pub fn qos(&self) -> u8 {
        self.flags & QOS_MASK
    }

    pub fn retain(&self) -> bool {
        self.flags & RETAIN != 0
    }

    /// When the hub received the message, Unix milliseconds.
    pub fn received_ms(&self) -> u64 {
        self.received_ms
    }

    pub fn content_type(&self) -> Result<Option<&'a str>, AbiError> {
        self.content_type
            .map(|ct| utf8(ct, self.part, Field::ContentType))
            .transpose()
    }

    /// The payload (see [`MessageView::payload`]).
    pub fn payload(&self) -> Option<&'a [u8]> {
        self.payload
    }

    /// The number of user properties.
    pub fn property_count(&self) -> usize {
        usize::from(self.property_count)
    }

    /// The value of the first user property named `key`. Keys are compared as bytes; only
    /// the value returned is checked for UTF-8.
    pub fn property(&self, key: &str) -> Result<Option<&'a str>, AbiError> {
        self.property_bytes(key)
            .map(|v| utf8(v, self.part, Field::PropertyValue))
            .transpose()
    }

    /// The bytes of the first user property named `key`, not checked for UTF-8: for readers
    /// that only compare the value with a string they hold or parse it as ASCII digits,
    /// where checking it first would be wasted work (equal bytes are as valid as the string
    /// they equal).
    #[inline]
    pub fn property_bytes(&self, key: &str) -> Option<&'a [u8]> {
        let mut rest = self.properties;
        for _ in 0..self.property_count {
            let (k, after_key) = split16(rest)?;
            let (v, after_value) = split16(after_key)?;
            if same_bytes(k, key.as_bytes()) {
                return Some(v);
            }
            rest = after_value;
        }
        None
    }

    /// User properties in order, duplicates kept, each pair checked as it is read.
    pub fn properties(&self) -> RawProperties<'a> {
        RawProperties {
            rest: self.properties,
            remaining: self.property_count,
            part: self.part,
        }
    }

    /// Checks every string and returns the validated view.
    pub fn validate(&self) -> Result<MessageView<'a>, AbiError> {
        for pair in self.properties() {
            pair?;
        }
        Ok(MessageView {
            topic: self.topic()?,
            client_id: self.client_id()?,
            qos: self.qos(),
            retain: self.retain(),
            received_ms: self.received_ms,
            content_type: self.content_type()?,
            payload: self.payload,
            properties: self.properties,
            property_count: self.property_count,
        })
    }
}

impl fmt::Debug for RecordView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordView")
            .field("topic", &self.topic())
            .field("client_id", &self.client_id())
            .field("qos", &self.qos())
            .field("retain", &self.retain())
            .field("received_ms", &self.received_ms)
            .field("content_type", &self.content_type())
            .field("properties", &self.properties())
            .field("payload", &self.payload)
            .finish()
    }
}

/// A `str16` at the front of `buf` (length already checked): its bytes and the rest.
fn split16(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = buf.split_first_chunk::<2>()?;
    rest.split_at_checked(usize::from(u16::from_le_bytes(*len)))
}

/// The user properties of a [`RecordView`]: `(key, value)` pairs in order, each checked
/// for UTF-8 as it is read. Stops after the first error.
#[derive(Clone)]
pub struct RawProperties<'a> {
    rest: &'a [u8],
    remaining: u16,
    part: Part,
}

impl<'a> Iterator for RawProperties<'a> {
    type Item = Result<(&'a str, &'a str), AbiError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.remaining = self.remaining.checked_sub(1)?;
        let mut r = Reader::new(self.rest, self.part);
        let pair = r
            .str16(Field::PropertyKey)
            .and_then(|k| Ok((k, r.str16(Field::PropertyValue)?)));
        if pair.is_err() {
            self.remaining = 0;
        }
        self.rest = r.rest;
        Some(pair)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = usize::from(self.remaining);
        (0, Some(n))
    }
}

impl fmt::Debug for RawProperties<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.clone()).finish()
    }
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
            if same_bytes(k, key.as_bytes()) {
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

#[cfg(test)]
mod tests {
    use alloc::vec::Vec;

    use proptest::prelude::*;

    use super::*;

    /// The fields of a view, for comparing the quick and the checked reader.
    type Fields<'a> = (
        u8,
        u64,
        &'a [u8],
        &'a [u8],
        Option<&'a [u8]>,
        &'a [u8],
        u16,
        Option<&'a [u8]>,
    );

    fn fields<'a>(v: &RecordView<'a>) -> Fields<'a> {
        (
            v.flags,
            v.received_ms,
            v.topic,
            v.client_id,
            v.content_type,
            v.properties,
            v.property_count,
            v.payload,
        )
    }

    fn checked(buf: &[u8]) -> Result<(RecordView<'_>, &[u8]), AbiError> {
        let mut r = Reader::new(buf, Part::Record(0));
        let len = r.len32(Field::RecordLength)?;
        let body = r.take(len, Field::Record)?;
        split_body(body, r.part).map(|view| (view, r.rest))
    }

    /// A record as a writer packs it, then possibly damaged at one byte and cut short.
    fn record_bytes() -> impl Strategy<Value = Vec<u8>> {
        (
            "[a-z/]{0,12}",
            "[a-z]{0,4}",
            proptest::option::of("[a-z/]{0,6}"),
            proptest::collection::vec(("[a-z]{0,5}", "[0-9a-z]{0,5}"), 0..4),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)),
            0u8..3,
            any::<(usize, u8, usize)>(),
        )
            .prop_map(
                |(topic, client_id, ct, props, payload, qos, (at, byte, cut))| {
                    let rec = RecordRef {
                        topic: &topic,
                        client_id: &client_id,
                        qos,
                        retain: false,
                        received_ms: 7,
                        content_type: ct.as_deref(),
                        payload: payload.as_deref(),
                    };
                    let mut buf = Vec::new();
                    let props = props.iter().map(|(k, v)| (k.as_str(), v.as_str()));
                    write_record(&mut buf, &rec, props, payload.as_deref()).expect("writable");
                    buf.extend_from_slice(b"next");
                    match byte % 3 {
                        0 => {}
                        1 => {
                            let i = at % buf.len();
                            buf[i] = byte;
                        }
                        _ => buf.truncate(cut % (buf.len() + 1)),
                    }
                    buf
                },
            )
    }

    proptest! {
        #[test]
        fn quick_reader_accepts_only_what_the_checked_reader_accepts(
            buf in prop_oneof![record_bytes(), proptest::collection::vec(any::<u8>(), 0..64)],
        ) {
            let quick = quick_record(&buf, Part::Record(0));
            let slow = checked(&buf);
            match (quick, slow) {
                (Some((q, q_rest)), Ok((s, s_rest))) => {
                    prop_assert_eq!(fields(&q), fields(&s));
                    prop_assert_eq!(q_rest, s_rest);
                }
                (Some(_), Err(e)) => prop_assert!(false, "quick accepted what the checked reader refuses: {e}"),
                // The quick reader may give up on anything; undamaged records it must take.
                (None, _) => {}
            }
        }

        #[test]
        fn quick_reader_takes_every_well_formed_record(topic in "[a-z/]{0,12}", n in 0usize..4) {
            let rec = RecordRef { topic: &topic, client_id: "c", qos: 1, retain: true, received_ms: 9, content_type: None, payload: Some(b"p") };
            let mut buf = Vec::new();
            let props = (0..n).map(|_| ("k", "v"));
            write_record(&mut buf, &rec, props, Some(b"p")).expect("writable");
            prop_assert!(quick_record(&buf, Part::Record(0)).is_some());
        }
    }
}
