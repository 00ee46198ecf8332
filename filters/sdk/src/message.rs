//! [`Message`]: one record of a batch as a filter sees it, borrowed from the batch buffer.
//!
//! The SDK checks the layout of every record before the filter sees it (lengths, counts,
//! flags) and checks a string for UTF-8 only when the filter reads it, so a filter pays for
//! the fields it looks at and no more (docs/filter-abi.md, "Reading a batch"). A batch whose
//! strings are not UTF-8 breaks the ABI (the hub packs Rust strings, so only a hub bug could
//! send one); reading such a string aborts the guest, which the hub reports as a trap and
//! answers with the pipeline's failure policy. Nothing is ever read as UTF-8 unchecked.

use core::fmt;

use tern_filter_abi::{AbiError, RawProperties, RecordView};

/// One message of a batch, borrowed from the batch buffer: topic, client id, QoS, RETAIN,
/// receive time, content type, user properties (`property(key)` gives the first value),
/// and the payload when the filter declared [`Filter::NEEDS_PAYLOAD`](crate::Filter).
#[derive(Clone, Copy)]
pub struct Message<'a> {
    record: RecordView<'a>,
}

/// Aborts the guest on a batch that breaks the ABI (see the module docs).
#[cold]
#[inline(never)]
fn broken_batch(err: AbiError) -> ! {
    panic!("the hub sent a batch that breaks the filter ABI: {err}")
}

impl<'a> Message<'a> {
    pub(crate) fn new(record: RecordView<'a>) -> Self {
        Self { record }
    }

    pub fn topic(&self) -> &'a str {
        self.record.topic().unwrap_or_else(|e| broken_batch(e))
    }

    /// The topic's bytes, **not** checked for UTF-8: for a filter that matches or copies
    /// topic levels as bytes and hands the hub topics it checks anyway
    /// ([`Decision::route_raw`](crate::Decision::route_raw)).
    pub fn topic_bytes(&self) -> &'a [u8] {
        self.record.topic_bytes()
    }

    /// The publisher's client id; empty for messages the hub itself publishes.
    pub fn client_id(&self) -> &'a str {
        self.record.client_id().unwrap_or_else(|e| broken_batch(e))
    }

    /// The client id's bytes, **not** checked for UTF-8 (see [`topic_bytes`](Self::topic_bytes)).
    pub fn client_id_bytes(&self) -> &'a [u8] {
        self.record.client_id_bytes()
    }

    pub fn qos(&self) -> u8 {
        self.record.qos()
    }

    pub fn retain(&self) -> bool {
        self.record.retain()
    }

    /// When the hub received the message, Unix milliseconds.
    pub fn received_ms(&self) -> u64 {
        self.record.received_ms()
    }

    pub fn content_type(&self) -> Option<&'a str> {
        self.record
            .content_type()
            .unwrap_or_else(|e| broken_batch(e))
    }

    /// The payload: `Some` exactly when the filter declared
    /// [`NEEDS_PAYLOAD`](crate::Filter::NEEDS_PAYLOAD).
    pub fn payload(&self) -> Option<&'a [u8]> {
        self.record.payload()
    }

    /// User properties in the order the publisher sent them, duplicates kept.
    pub fn properties(&self) -> Properties<'a> {
        Properties {
            raw: self.record.properties(),
            remaining: self.record.property_count(),
        }
    }

    /// The value of the first user property named `key`. Only that value is checked for
    /// UTF-8; keys are compared as bytes.
    pub fn property(&self, key: &str) -> Option<&'a str> {
        self.record
            .property(key)
            .unwrap_or_else(|e| broken_batch(e))
    }

    /// The bytes of the first user property named `key`, **not** checked for UTF-8. For
    /// readers that compare the value with a string they hold, or parse it as ASCII
    /// digits: equal bytes are as valid as the string they equal, so checking first would
    /// be wasted work. Anything that needs the value as text uses [`property`](Self::property).
    #[inline]
    pub fn property_bytes(&self, key: &str) -> Option<&'a [u8]> {
        self.record.property_bytes(key)
    }
}

impl fmt::Debug for Message<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.record, f)
    }
}

/// The user properties of a [`Message`]: `(key, value)` pairs in order, duplicates kept.
#[derive(Clone)]
pub struct Properties<'a> {
    raw: RawProperties<'a>,
    remaining: usize,
}

impl<'a> Iterator for Properties<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        let pair = self.raw.next()?.unwrap_or_else(|e| broken_batch(e));
        self.remaining = self.remaining.saturating_sub(1);
        Some(pair)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for Properties<'_> {}

impl fmt::Debug for Properties<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.clone()).finish()
    }
}
