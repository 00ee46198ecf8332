//! The batch buffer (host → guest): [`BatchWriter`] packs records, [`Batch`] reads them
//! back lazily, as fully validated [`MessageView`]s ([`Batch::iter`]) or as [`RecordView`]s
//! whose strings are checked only when read ([`Batch::records`]).

use alloc::vec::Vec;

use crate::VERSION;
use crate::error::{AbiError, Field, Part};
use crate::record::{
    MIN_RECORD_LEN, MessageView, RecordRef, RecordView, quick_record, read_record_layout,
    write_record,
};
use crate::wire::{Reader, patch_u32, put_u32};

/// Batch flag bit 0: every record carries its payload.
const PAYLOADS_INCLUDED: u8 = 1;
/// Batch flag bit 1: no record carries user properties (every property count is 0).
const PROPERTIES_OMITTED: u8 = 1 << 1;

/// What the records of a batch carry beyond the message headers: the filter's WIT `needs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Contents {
    /// Every record carries its payload (`needs.payload`).
    pub payloads: bool,
    /// Records carry their user properties (`needs.properties`).
    pub properties: bool,
}

impl Contents {
    /// Properties, and payloads if `payloads`: what [`BatchWriter::new`] packs.
    pub const fn with_properties(payloads: bool) -> Self {
        Self {
            payloads,
            properties: true,
        }
    }

    fn flags(self) -> u8 {
        let mut flags = 0;
        if self.payloads {
            flags |= PAYLOADS_INCLUDED;
        }
        if !self.properties {
            flags |= PROPERTIES_OMITTED;
        }
        flags
    }
}
/// version, flags, reserved u16, count u32.
const HEADER_LEN: usize = 8;
const COUNT_AT: usize = 4;

/// Packs a batch. Reuses the allocation of the buffer it is given.
#[derive(Debug)]
pub struct BatchWriter {
    buf: Vec<u8>,
    contents: Contents,
    count: usize,
}

impl BatchWriter {
    /// Starts a batch in `buf` (cleared first) whose records carry their user properties.
    /// `include_payloads` is the filter's `needs.payload`: without it, records carry no
    /// payload bytes.
    pub fn new(buf: Vec<u8>, include_payloads: bool) -> Self {
        Self::with_contents(buf, Contents::with_properties(include_payloads))
    }

    /// Starts a batch in `buf` (cleared first) whose records carry `contents`. Without
    /// properties, [`push`](Self::push) ignores the properties it is given.
    pub fn with_contents(mut buf: Vec<u8>, contents: Contents) -> Self {
        buf.clear();
        buf.push(VERSION);
        buf.push(contents.flags());
        buf.extend_from_slice(&[0, 0]);
        put_u32(&mut buf, 0); // message count, patched by `finish`
        Self {
            buf,
            contents,
            count: 0,
        }
    }

    /// Appends one message. A string longer than 65,535 bytes, more than 65,535 properties,
    /// a QoS above 2 or a payload over 4 GiB is an error, and leaves the batch unchanged.
    pub fn push<'p>(
        &mut self,
        rec: &RecordRef<'_>,
        properties: impl ExactSizeIterator<Item = (&'p str, &'p str)>,
    ) -> Result<(), AbiError> {
        let count = self.count + 1;
        if u32::try_from(count).is_err() {
            return Err(AbiError::TooMany {
                field: Field::MessageCount,
                count,
                max: crate::wire::U32_MAX,
            });
        }
        let payload = self
            .contents
            .payloads
            .then(|| rec.payload.unwrap_or_default());
        let written = if self.contents.properties {
            write_record(&mut self.buf, rec, properties, payload)
        } else {
            write_record(&mut self.buf, rec, core::iter::empty(), payload)
        };
        written?;
        self.count = count;
        Ok(())
    }

    /// Messages pushed so far.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The packed batch.
    pub fn finish(mut self) -> Vec<u8> {
        // `push` keeps `count` within u32.
        let count = u32::try_from(self.count).unwrap_or(u32::MAX);
        patch_u32(&mut self.buf, COUNT_AT, count);
        self.buf
    }
}

/// A batch buffer whose header has been checked; records are decoded (and validated) as
/// they are iterated.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    records: &'a [u8],
    count: usize,
    contents: Contents,
}

impl<'a> Batch<'a> {
    /// Checks the header: version, flags, reserved bytes, and a message count the rest of
    /// the buffer could hold (so [`len`](Self::len) is safe to preallocate from).
    pub fn parse(buf: &'a [u8]) -> Result<Self, AbiError> {
        let mut r = Reader::new(buf, Part::Batch);
        let version = r.u8(Field::Version)?;
        if version != VERSION {
            return Err(AbiError::Version { found: version });
        }
        let flags = r.u8(Field::BatchFlags)?;
        if flags & !(PAYLOADS_INCLUDED | PROPERTIES_OMITTED) != 0 {
            return Err(AbiError::Reserved {
                part: Part::Batch,
                field: Field::BatchFlags,
            });
        }
        if r.u16(Field::Reserved)? != 0 {
            return Err(AbiError::Reserved {
                part: Part::Batch,
                field: Field::Reserved,
            });
        }
        let count = r.u32(Field::MessageCount)?;
        let available = r.rest.len();
        let plausible = usize::try_from(count)
            .ok()
            .filter(|&n| n <= available / MIN_RECORD_LEN);
        let Some(count) = plausible else {
            return Err(AbiError::ImplausibleCount { count, available });
        };
        debug_assert_eq!(buf.len() - r.rest.len(), HEADER_LEN);
        Ok(Self {
            records: r.rest,
            count,
            contents: Contents {
                payloads: flags & PAYLOADS_INCLUDED != 0,
                properties: flags & PROPERTIES_OMITTED == 0,
            },
        })
    }

    /// The message count from the header.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Whether every record carries its payload (the filter's `needs.payload`).
    pub fn payloads_included(&self) -> bool {
        self.contents.payloads
    }

    /// What the records carry (the filter's `needs`).
    pub fn contents(&self) -> Contents {
        self.contents
    }

    /// The records in order, every field validated. A valid batch yields
    /// [`len`](Self::len) `Ok`s. A malformed one yields an `Err` where decoding failed
    /// (possibly after the last record, for trailing bytes) and then stops.
    pub fn iter(&self) -> Records<'a> {
        Records {
            layout: self.records(),
        }
    }

    /// The records in order with their layout checked (lengths, flags, counts, trailing
    /// bytes, as [`iter`](Self::iter)) but not their UTF-8: each string is checked when it
    /// is read, so a reader that looks at few fields pays for those only. Yields an `Err`
    /// where the layout is broken, then stops.
    pub fn records(&self) -> RecordViews<'a> {
        RecordViews {
            rest: self.records,
            index: 0,
            count: self.count,
            contents: self.contents,
            done: false,
        }
    }
}

impl<'a> IntoIterator for &Batch<'a> {
    type Item = Result<MessageView<'a>, AbiError>;
    type IntoIter = Records<'a>;

    fn into_iter(self) -> Records<'a> {
        self.iter()
    }
}

/// Iterator over the validated records of a [`Batch`].
#[derive(Debug, Clone)]
pub struct Records<'a> {
    layout: RecordViews<'a>,
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<MessageView<'a>, AbiError>;

    fn next(&mut self) -> Option<Self::Item> {
        let view = self.layout.next()?.and_then(|record| record.validate());
        if view.is_err() {
            self.layout.done = true;
        }
        Some(view)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.layout.size_hint()
    }
}

impl core::iter::FusedIterator for Records<'_> {}

/// Iterator over the [`RecordView`]s of a [`Batch`] (layout checked, UTF-8 on access).
#[derive(Debug, Clone)]
pub struct RecordViews<'a> {
    rest: &'a [u8],
    index: usize,
    count: usize,
    contents: Contents,
    /// Set after the last record, or after the first error.
    done: bool,
}

impl<'a> RecordViews<'a> {
    /// The next record when it is well formed (the common case), without building a
    /// `Result`. `None` at the end, and for a record the quick reader gives up on: then
    /// [`next`](Iterator::next) says what is wrong (or checks the end for trailing bytes).
    #[inline]
    pub fn next_quick(&mut self) -> Option<RecordView<'a>> {
        if self.done || self.index == self.count {
            return None;
        }
        let (view, rest) = quick_record(self.rest, Part::Record(self.index))?;
        if !self.fits(&view) {
            return None;
        }
        self.rest = rest;
        self.index += 1;
        Some(view)
    }

    /// Whether a record's payload and properties are as the batch flags say.
    #[inline]
    fn fits(&self, view: &RecordView<'_>) -> bool {
        view.payload().is_some() == self.contents.payloads
            && (self.contents.properties || view.property_count() == 0)
    }

    fn fail(&mut self, err: AbiError) -> Option<Result<RecordView<'a>, AbiError>> {
        self.done = true;
        Some(Err(err))
    }
}

impl<'a> Iterator for RecordViews<'a> {
    type Item = Result<RecordView<'a>, AbiError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if self.index == self.count {
            self.done = true;
            if !self.rest.is_empty() {
                return self.fail(AbiError::TrailingBytes {
                    part: Part::Batch,
                    count: self.rest.len(),
                });
            }
            return None;
        }
        let index = self.index;
        let mut r = Reader::new(self.rest, Part::Record(index));
        let view = match read_record_layout(&mut r) {
            Ok(view) => view,
            Err(err) => return self.fail(err),
        };
        if view.payload().is_some() != self.contents.payloads {
            return self.fail(AbiError::PayloadFlag { index });
        }
        if !self.fits(&view) {
            return self.fail(AbiError::PropertiesOmitted { index });
        }
        self.rest = r.rest;
        self.index += 1;
        Some(Ok(view))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        if self.done {
            (0, Some(0))
        } else {
            // At most one extra item: the trailing-bytes error.
            let left = self.count - self.index;
            (left.min(1), Some(left + 1))
        }
    }
}

impl core::iter::FusedIterator for RecordViews<'_> {}
