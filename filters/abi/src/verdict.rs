//! The verdict buffer (guest → host): [`VerdictWriter`] packs the keep bitmap and the edit
//! list, [`Verdicts`] validates a buffer in full and then reads it infallibly.

use alloc::vec::Vec;

use crate::VERSION;
use crate::error::{AbiError, EditPart, Field, Part};
use crate::record::{MessageView, RecordRef, read_record, read_record_layout, write_record};
use crate::template::{MAX_TEMPLATE_SPANS, Spans, TemplateRoute};
use crate::wire::{Reader, patch_u16, patch_u32, put_bytes16, put_str16, put_u16, put_u32};

const FORM_ALL_KEPT: u8 = 0;
const FORM_EDITS: u8 = 1;
/// version, form, count u32: the bitmap starts here.
const BITMAP_AT: usize = 6;
const HAS_REPLACEMENT: u8 = 1 << 0;
const HAS_ROUTES: u8 = 1 << 1;
const KIND_LOCAL: u8 = 0;
const KIND_BRIDGE: u8 = 1;
const KIND_TEMPLATE: u8 = 2;

/// Where a message goes instead of its own topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Destination<'a> {
    /// Republish locally under `topic`.
    Local { topic: &'a str },
    /// Forward upstream through the bridge named `bridge`, under `topic`.
    Bridge { bridge: &'a str, topic: &'a str },
    /// The filter's declared template `template`, rendered by the host from these spans of
    /// the message's topic (`crate::template`).
    Template { template: u16, spans: Spans<'a> },
}

/// What a guest writes as one destination: a topic it built ([`RawDestination`]), or a
/// route to one of its declared templates ([`TemplateRoute`]), which the host renders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AnyDestination<'a> {
    Raw(RawDestination<'a>),
    Template(TemplateRoute<'a>),
    /// A template route with its spans already encoded (as a reader returns them).
    Spans {
        template: u16,
        spans: Spans<'a>,
    },
}

impl<'a> From<RawDestination<'a>> for AnyDestination<'a> {
    fn from(dest: RawDestination<'a>) -> Self {
        Self::Raw(dest)
    }
}

impl<'a> From<TemplateRoute<'a>> for AnyDestination<'a> {
    fn from(route: TemplateRoute<'a>) -> Self {
        Self::Template(route)
    }
}

/// A [`Destination`] whose topic is bytes, for a guest that builds topics from pieces of
/// the batch (which it has not checked for UTF-8): the bytes are written as given, and the
/// reader checks them like any destination topic ([`Verdicts::parse`] rejects a topic that
/// is not UTF-8, and the hub also rejects invalid topic names), so a bad one fails the batch
/// instead of reaching the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RawDestination<'a> {
    /// `None`: republish locally; `Some(name)`: forward through that bridge.
    pub bridge: Option<&'a str>,
    pub topic: &'a [u8],
}

impl<'a> From<Destination<'a>> for AnyDestination<'a> {
    fn from(dest: Destination<'a>) -> Self {
        match dest {
            Destination::Local { topic } => Self::Raw(RawDestination {
                bridge: None,
                topic: topic.as_bytes(),
            }),
            Destination::Bridge { bridge, topic } => Self::Raw(RawDestination {
                bridge: Some(bridge),
                topic: topic.as_bytes(),
            }),
            Destination::Template { template, spans } => Self::Spans { template, spans },
        }
    }
}

/// One edit already written, so later calls can extend, check or remove it.
#[derive(Debug, Clone, Copy)]
struct EditMark {
    index: usize,
    /// Offset of the edit's index field in the buffer.
    start: usize,
    flags: u8,
}

/// Packs verdicts for a batch of `count` messages. Every message starts kept and unedited.
///
/// Edits must be written in ascending message order, and a message's replacement before
/// its routes; a guest deciding messages in order appends to the end of the buffer, so each
/// call is O(size of what it writes). Dropping a message removes any edit it had.
#[derive(Debug)]
pub struct VerdictWriter {
    buf: Vec<u8>,
    count: usize,
    /// Offset of the edit count field (right after the bitmap).
    edit_count_at: usize,
    dropped_any: bool,
    /// The edits written, ascending by index. Stays unallocated while nothing is edited.
    marks: Vec<EditMark>,
}

impl VerdictWriter {
    /// Starts verdicts for `count` messages in `buf` (cleared first, allocation reused).
    /// `count` must fit a `u32` (a batch's count always does).
    pub fn new(mut buf: Vec<u8>, count: usize) -> Self {
        buf.clear();
        buf.push(VERSION);
        buf.push(FORM_EDITS);
        put_u32(&mut buf, u32::try_from(count).unwrap_or(u32::MAX));
        // Keep bitmap: all kept; bits past `count` in the last byte stay 0.
        buf.resize(BITMAP_AT + count / 8, 0xff);
        if !count.is_multiple_of(8) {
            buf.push((1u8 << (count % 8)) - 1);
        }
        let edit_count_at = buf.len();
        put_u32(&mut buf, 0); // edit count, patched by `finish`
        Self {
            buf,
            count,
            edit_count_at,
            dropped_any: false,
            marks: Vec::new(),
        }
    }

    /// The message count this writer was created for.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Whether message `index` is currently kept (false when out of range).
    pub fn is_kept(&self, index: usize) -> bool {
        index < self.count
            && self
                .buf
                .get(BITMAP_AT + index / 8)
                .is_some_and(|byte| byte & (1 << (index % 8)) != 0)
    }

    /// Drops message `index`, discarding any edit written for it. Out of range: no effect.
    #[inline]
    pub fn drop_message(&mut self, index: usize) {
        if index >= self.count {
            return;
        }
        if let Some(byte) = self.buf.get_mut(BITMAP_AT + index / 8) {
            *byte &= !(1 << (index % 8));
        }
        self.dropped_any = true;
        // Edits are written in ascending order: a message past the last edit has none.
        if self.marks.last().is_none_or(|last| last.index < index) {
            return;
        }
        if let Ok(pos) = self.marks.binary_search_by_key(&index, |m| m.index) {
            let start = self.marks[pos].start;
            let end = self.marks.get(pos + 1).map_or(self.buf.len(), |m| m.start);
            self.buf.drain(start..end);
            self.marks.remove(pos);
            for mark in &mut self.marks[pos..] {
                mark.start -= end - start;
            }
        }
    }

    /// Replaces message `index` as it continues through the chain. `rec.payload == None`
    /// leaves the payload unchanged; `received_ms` and `client_id` are ignored by the host.
    pub fn replace<'p>(
        &mut self,
        index: usize,
        rec: &RecordRef<'_>,
        properties: impl ExactSizeIterator<Item = (&'p str, &'p str)>,
    ) -> Result<(), AbiError> {
        self.check_editable(index)?;
        if let Some(last) = self.marks.last()
            && last.index == index
        {
            return Err(if last.flags & HAS_ROUTES != 0 {
                AbiError::ReplaceAfterRoute { index }
            } else {
                AbiError::DuplicateEdit {
                    index,
                    what: EditPart::Replacement,
                }
            });
        }
        let start = self.begin_edit(index, HAS_REPLACEMENT)?;
        let result = write_record(&mut self.buf, rec, properties, rec.payload);
        self.end_edit(index, start, HAS_REPLACEMENT, result)
    }

    /// Sets the destinations of message `index` (at least one).
    pub fn route(
        &mut self,
        index: usize,
        destinations: &[Destination<'_>],
    ) -> Result<(), AbiError> {
        self.route_iter(index, destinations.iter().copied())
    }

    /// [`route`](Self::route) from an iterator: the destinations are written as they come,
    /// so a caller producing them one by one needs no collection of its own.
    pub fn route_iter<'d>(
        &mut self,
        index: usize,
        destinations: impl IntoIterator<Item = Destination<'d>>,
    ) -> Result<(), AbiError> {
        self.route_any(index, destinations.into_iter().map(AnyDestination::from))
    }

    /// [`route_iter`](Self::route_iter) with topics as bytes ([`RawDestination`]).
    pub fn route_raw<'d>(
        &mut self,
        index: usize,
        destinations: impl IntoIterator<Item = RawDestination<'d>>,
    ) -> Result<(), AbiError> {
        self.route_any(index, destinations.into_iter().map(AnyDestination::Raw))
    }

    /// [`route_raw`](Self::route_raw) for destinations that may also be routes to the
    /// filter's declared templates.
    pub fn route_any<'d>(
        &mut self,
        index: usize,
        destinations: impl IntoIterator<Item = AnyDestination<'d>>,
    ) -> Result<(), AbiError> {
        self.check_editable(index)?;
        if let Some(last) = self.marks.last_mut()
            && last.index == index
        {
            if last.flags & HAS_ROUTES != 0 {
                return Err(AbiError::DuplicateEdit {
                    index,
                    what: EditPart::Routes,
                });
            }
            // Extend the replacement edit just written for this message.
            let end = self.buf.len();
            if let Err(err) = write_routes(&mut self.buf, index, destinations) {
                self.buf.truncate(end);
                return Err(err);
            }
            last.flags |= HAS_ROUTES;
            if let Some(flags) = self.buf.get_mut(last.start + 4) {
                *flags = last.flags;
            }
            return Ok(());
        }
        let start = self.begin_edit(index, HAS_ROUTES)?;
        let result = write_routes(&mut self.buf, index, destinations);
        self.end_edit(index, start, HAS_ROUTES, result)
    }

    /// Routes message `index` to one template: the same bytes as [`route_any`](Self::route_any)
    /// with that single destination, written in one step (a router's common case). Inline:
    /// its caller already holds the route in locals, and a call would pass it through memory.
    #[inline]
    pub fn route_template(
        &mut self,
        index: usize,
        route: TemplateRoute<'_>,
    ) -> Result<(), AbiError> {
        let after_last = self.marks.last().is_none_or(|last| last.index < index);
        let (Ok(count), Ok(index32), true, true) = (
            u8::try_from(route.spans.len()),
            u32::try_from(index),
            after_last,
            self.is_kept(index),
        ) else {
            // Out of range, dropped, out of order, extending an edit already written or too
            // many spans: the general path does it or says what is wrong.
            return self.route_any(index, [AnyDestination::Template(route)]);
        };
        let start = self.buf.len();
        let [i0, i1, i2, i3] = index32.to_le_bytes();
        let [t0, t1] = route.template.to_le_bytes();
        // Edit index, flags, route count 1, then the destination's head.
        let head = [
            i0,
            i1,
            i2,
            i3,
            HAS_ROUTES,
            1,
            0,
            KIND_TEMPLATE,
            t0,
            t1,
            count,
        ];
        if let [span] = route.spans {
            // One span (a route using one capture, the common case): the whole edit in one
            // fixed-size write.
            let [s0, s1] = span.start.to_le_bytes();
            let [e0, e1] = span.end.to_le_bytes();
            let [h0, h1, h2, h3, h4, h5, h6, h7, h8, h9, h10] = head;
            self.buf
                .extend([h0, h1, h2, h3, h4, h5, h6, h7, h8, h9, h10, s0, s1, e0, e1]);
        } else {
            self.buf.extend(head);
            for span in route.spans {
                let [s0, s1] = span.start.to_le_bytes();
                let [e0, e1] = span.end.to_le_bytes();
                self.buf.extend([s0, s1, e0, e1]);
            }
        }
        self.marks.push(EditMark {
            index,
            start,
            flags: HAS_ROUTES,
        });
        Ok(())
    }

    /// The packed verdicts: form 0 when every message is kept with no edits.
    pub fn finish(mut self) -> Vec<u8> {
        if !self.dropped_any && self.marks.is_empty() {
            self.buf.truncate(2);
            if let Some(form) = self.buf.get_mut(1) {
                *form = FORM_ALL_KEPT;
            }
            return self.buf;
        }
        // At most `count` edits, and `count` fits u32.
        let edits = u32::try_from(self.marks.len()).unwrap_or(u32::MAX);
        patch_u32(&mut self.buf, self.edit_count_at, edits);
        self.buf
    }

    fn check_editable(&self, index: usize) -> Result<(), AbiError> {
        if index >= self.count {
            return Err(AbiError::IndexOutOfRange {
                index,
                count: self.count,
            });
        }
        if !self.is_kept(index) {
            return Err(AbiError::DroppedMessageEdit { index });
        }
        match self.marks.last() {
            Some(last) if last.index > index => Err(AbiError::OutOfOrder {
                index,
                last: last.index,
            }),
            _ => Ok(()),
        }
    }

    /// Writes the edit header; returns its start offset.
    fn begin_edit(&mut self, index: usize, flags: u8) -> Result<usize, AbiError> {
        let index32 = u32::try_from(index).map_err(|_| AbiError::IndexOutOfRange {
            index,
            count: self.count,
        })?;
        let start = self.buf.len();
        put_u32(&mut self.buf, index32);
        self.buf.push(flags);
        Ok(start)
    }

    fn end_edit(
        &mut self,
        index: usize,
        start: usize,
        flags: u8,
        result: Result<(), AbiError>,
    ) -> Result<(), AbiError> {
        match result {
            Ok(()) => {
                self.marks.push(EditMark {
                    index,
                    start,
                    flags,
                });
                Ok(())
            }
            Err(err) => {
                self.buf.truncate(start);
                Err(err)
            }
        }
    }
}

/// Appends a route list (count, then destinations). On error the caller truncates.
fn write_routes<'d>(
    buf: &mut Vec<u8>,
    index: usize,
    destinations: impl IntoIterator<Item = AnyDestination<'d>>,
) -> Result<(), AbiError> {
    let count_at = buf.len();
    put_u16(buf, 0); // route count, patched below
    let mut count = 0usize;
    for dest in destinations {
        count += 1;
        if count > usize::from(u16::MAX) {
            return Err(AbiError::TooMany {
                field: Field::RouteCount,
                count,
                max: usize::from(u16::MAX),
            });
        }
        match dest {
            AnyDestination::Raw(dest) => write_raw(buf, dest)?,
            AnyDestination::Template(route) => {
                write_template_head(buf, route.template, route.spans.len())?;
                for span in route.spans {
                    put_u16(buf, span.start);
                    put_u16(buf, span.end);
                }
            }
            AnyDestination::Spans { template, spans } => {
                write_template_head(buf, template, spans.len())?;
                buf.extend_from_slice(spans.as_bytes());
            }
        }
    }
    let count = u16::try_from(count).ok().filter(|&n| n > 0);
    let Some(count) = count else {
        return Err(AbiError::NoRoutes { index });
    };
    patch_u16(buf, count_at, count);
    Ok(())
}

fn write_raw(buf: &mut Vec<u8>, dest: RawDestination<'_>) -> Result<(), AbiError> {
    match dest.bridge {
        None => buf.push(KIND_LOCAL),
        Some(bridge) => {
            buf.push(KIND_BRIDGE);
            put_str16(buf, bridge, Field::BridgeName)?;
        }
    }
    put_bytes16(buf, dest.topic, Field::DestinationTopic)
}

/// Kind, template index and span count; the caller writes the `spans` spans.
fn write_template_head(buf: &mut Vec<u8>, template: u16, spans: usize) -> Result<(), AbiError> {
    let count = u8::try_from(spans).map_err(|_| AbiError::TooMany {
        field: Field::SpanCount,
        count: spans,
        max: MAX_TEMPLATE_SPANS,
    })?;
    buf.reserve(4 + 4 * spans);
    buf.push(KIND_TEMPLATE);
    put_u16(buf, template);
    buf.push(count);
    Ok(())
}

/// A fully validated verdict buffer. Every accessor is infallible.
#[derive(Debug, Clone, Copy)]
pub struct Verdicts<'a> {
    count: usize,
    /// `None` for form 0 (every message kept).
    bitmap: Option<&'a [u8]>,
    all_kept: bool,
    /// The encoded edit list, validated.
    edits: &'a [u8],
    edit_count: usize,
}

impl<'a> Verdicts<'a> {
    /// Validates `buf` as the verdicts for a batch of `expected_count` messages: version,
    /// form, count, bitmap (bits past the count must be 0), edit indices strictly ascending,
    /// in range and kept, edit flags, replacement records, destinations, no trailing bytes.
    pub fn parse(buf: &'a [u8], expected_count: usize) -> Result<Self, AbiError> {
        Self::parse_with(buf, expected_count, DestinationStrings::Checked)
    }

    /// [`parse`](Self::parse), except that the strings of route destinations (bridge names
    /// and topics) are checked for UTF-8 only as [`LazyVerdicts::edits`] reads them: for a
    /// reader that reads every destination once anyway (the hub), so that each string is
    /// checked once instead of twice. Everything else is validated here.
    pub fn parse_lazy(buf: &'a [u8], expected_count: usize) -> Result<LazyVerdicts<'a>, AbiError> {
        Self::parse_with(buf, expected_count, DestinationStrings::Deferred).map(LazyVerdicts)
    }

    fn parse_with(
        buf: &'a [u8],
        expected_count: usize,
        strings: DestinationStrings,
    ) -> Result<Self, AbiError> {
        let mut r = Reader::new(buf, Part::Verdicts);
        let version = r.u8(Field::Version)?;
        if version != VERSION {
            return Err(AbiError::Version { found: version });
        }
        match r.u8(Field::Form)? {
            FORM_ALL_KEPT => {
                r.finish()?;
                return Ok(Self {
                    count: expected_count,
                    bitmap: None,
                    all_kept: true,
                    edits: &[],
                    edit_count: 0,
                });
            }
            FORM_EDITS => {}
            form => return Err(AbiError::UnknownForm { form }),
        }
        let found = r.u32(Field::MessageCount)?;
        if usize::try_from(found).ok() != Some(expected_count) {
            return Err(AbiError::CountMismatch {
                expected: expected_count,
                found,
            });
        }
        let count = expected_count;
        let bitmap = r.take(count.div_ceil(8), Field::Bitmap)?;
        if !count.is_multiple_of(8) {
            let last = bitmap.last().copied().unwrap_or(0);
            if last >> (count % 8) != 0 {
                return Err(AbiError::Reserved {
                    part: Part::Verdicts,
                    field: Field::Bitmap,
                });
            }
        }
        let edit_count = r.len32(Field::EditCount)?;
        let edits = r.rest;
        let mut previous: Option<u32> = None;
        for ordinal in 0..edit_count {
            // A router's common edit, checked in place; anything else (or anything wrong with
            // it) takes the general path, which says what is wrong.
            if let Some((single, after)) = single_template(r.rest) {
                let index = single.index;
                let in_order = previous.is_none_or(|p| usize::try_from(p).is_ok_and(|p| p < index));
                if index < count && in_order && bit(bitmap, index) {
                    previous = u32::try_from(index).ok();
                    r.rest = after;
                    continue;
                }
            }
            let mut e = Reader::new(r.rest, Part::Edit(ordinal));
            let index = e.u32(Field::EditIndex)?;
            let at = usize::try_from(index).ok().filter(|&i| i < count);
            let Some(at) = at else {
                return Err(AbiError::EditIndexOutOfRange {
                    ordinal,
                    index,
                    count,
                });
            };
            if let Some(previous) = previous.filter(|&p| p >= index) {
                return Err(AbiError::EditOrder {
                    ordinal,
                    index,
                    previous,
                });
            }
            previous = Some(index);
            if !bit(bitmap, at) {
                return Err(AbiError::EditOnDropped { ordinal, index });
            }
            let flags = e.u8(Field::EditFlags)?;
            if flags & !(HAS_REPLACEMENT | HAS_ROUTES) != 0 {
                return Err(AbiError::Reserved {
                    part: Part::Edit(ordinal),
                    field: Field::EditFlags,
                });
            }
            if flags == 0 {
                return Err(AbiError::EmptyEdit { ordinal });
            }
            if flags & HAS_REPLACEMENT != 0 {
                read_record(&mut e)?;
            }
            if flags & HAS_ROUTES != 0 {
                let mut routes = read_routes(&mut e, at)?;
                match strings {
                    DestinationStrings::Checked => {
                        for dest in routes.by_ref() {
                            dest?;
                        }
                    }
                    DestinationStrings::Deferred => routes.skip_all()?,
                }
                e.rest = routes.rest;
            }
            r.rest = e.rest;
        }
        r.finish()?;
        let edits = edits.get(..edits.len() - r.rest.len()).unwrap_or_default();
        let all_kept = all_set(bitmap, count);
        Ok(Self {
            count,
            bitmap: Some(bitmap),
            all_kept,
            edits,
            edit_count,
        })
    }

    /// The message count.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Whether message `index` is kept (false when out of range).
    pub fn is_kept(&self, index: usize) -> bool {
        index < self.count && self.bitmap.is_none_or(|b| bit(b, index))
    }

    /// Whether every message is kept (edits may still be present).
    pub fn all_kept(&self) -> bool {
        self.all_kept
    }

    /// Whether every message is kept unchanged (form 0, or form 1 saying the same).
    pub fn unchanged(&self) -> bool {
        self.all_kept && self.edit_count == 0
    }

    /// The edits, ascending by message index, only for kept messages.
    pub fn edits(&self) -> Edits<'a> {
        Edits {
            rest: self.edits,
            remaining: self.edit_count,
        }
    }
}

/// Whether the first `count` bits of `bitmap` are all set, a byte at a time (the bits past
/// `count` are known to be 0).
fn all_set(bitmap: &[u8], count: usize) -> bool {
    let (full, partial) = bitmap.split_at((count / 8).min(bitmap.len()));
    let last = match count % 8 {
        0 => 0,
        bits => (1u8 << bits) - 1,
    };
    full.iter().all(|&byte| byte == 0xff) && partial.first().copied().unwrap_or(0) == last
}

fn bit(bitmap: &[u8], index: usize) -> bool {
    bitmap
        .get(index / 8)
        .is_some_and(|byte| byte & (1 << (index % 8)) != 0)
}

/// Reads the route count and returns the (unvalidated) destination iterator positioned at
/// the first destination; the caller validates by iterating.
fn read_routes<'a>(e: &mut Reader<'a>, index: usize) -> Result<RouteReader<'a>, AbiError> {
    let count = e.u16(Field::RouteCount)?;
    if count == 0 {
        return Err(AbiError::NoRoutes { index });
    }
    Ok(RouteReader {
        rest: e.rest,
        part: e.part,
        remaining: count,
    })
}

/// Whether [`Verdicts::parse_with`] checks destination strings for UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DestinationStrings {
    Checked,
    /// Left to the reader of [`LazyVerdicts::edits`].
    Deferred,
}

/// Fallible destination decoding, shared by validation, [`Routes`] and [`CheckedRoutes`].
#[derive(Debug, Clone)]
struct RouteReader<'a> {
    rest: &'a [u8],
    part: Part,
    remaining: u16,
}

impl RouteReader<'_> {
    /// Steps over the remaining destinations checking their layout (kinds and lengths) but
    /// not their strings.
    fn skip_all(&mut self) -> Result<(), AbiError> {
        let mut r = Reader::new(self.rest, self.part);
        for _ in 0..self.remaining {
            match r.u8(Field::DestinationKind)? {
                KIND_LOCAL => {
                    r.raw16(Field::DestinationTopic)?;
                }
                KIND_BRIDGE => {
                    r.raw16(Field::BridgeName)?;
                    r.raw16(Field::DestinationTopic)?;
                }
                KIND_TEMPLATE => {
                    read_template(&mut r)?;
                }
                kind => return Err(unknown_destination(self.part, kind)),
            }
        }
        self.remaining = 0;
        self.rest = r.rest;
        Ok(())
    }
}

fn unknown_destination(part: Part, kind: u8) -> AbiError {
    let ordinal = match part {
        Part::Edit(ordinal) => ordinal,
        _ => 0,
    };
    AbiError::UnknownDestination { ordinal, kind }
}

impl<'a> Iterator for RouteReader<'a> {
    type Item = Result<Destination<'a>, AbiError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.remaining = self.remaining.checked_sub(1)?;
        let mut r = Reader::new(self.rest, self.part);
        let result = read_destination(&mut r);
        self.rest = r.rest;
        Some(result)
    }
}

fn read_destination<'a>(r: &mut Reader<'a>) -> Result<Destination<'a>, AbiError> {
    match r.u8(Field::DestinationKind)? {
        KIND_LOCAL => Ok(Destination::Local {
            topic: r.str16(Field::DestinationTopic)?,
        }),
        KIND_BRIDGE => Ok(Destination::Bridge {
            bridge: r.str16(Field::BridgeName)?,
            topic: r.str16(Field::DestinationTopic)?,
        }),
        KIND_TEMPLATE => read_template(r),
        kind => Err(unknown_destination(r.part, kind)),
    }
}

/// A template destination after its kind byte: template index, span count, spans.
fn read_template<'a>(r: &mut Reader<'a>) -> Result<Destination<'a>, AbiError> {
    let template = r.u16(Field::TemplateIndex)?;
    let count = r.u8(Field::SpanCount)?;
    let bytes = r.take(4 * usize::from(count), Field::Spans)?;
    let spans = Spans::from_bytes(bytes).ok_or(AbiError::Truncated {
        part: r.part,
        field: Field::Spans,
    })?;
    Ok(Destination::Template { template, spans })
}

/// One message's edit: its replacement, its routes, or both.
#[derive(Debug, Clone)]
pub struct Edit<'a> {
    pub index: usize,
    /// The message as it continues through the chain. Its `payload()` is `None` when the
    /// payload is unchanged; its `received_ms` and `client_id` are to be ignored.
    pub replacement: Option<MessageView<'a>>,
    pub routes: Option<Routes<'a>>,
}

/// Iterator over the edits of validated [`Verdicts`].
#[derive(Debug, Clone)]
pub struct Edits<'a> {
    rest: &'a [u8],
    remaining: usize,
}

/// One edit as laid out: its index, its replacement record's bytes, its destinations'
/// bytes and count.
struct RawEdit<'a> {
    index: usize,
    replacement: Option<&'a [u8]>,
    routes: Option<(&'a [u8], u16)>,
}

/// The replacement record of a [`LazyEdit`], validated with the verdicts and decoded when
/// read: an edit that only routes (the common case) stays a few words to move.
#[derive(Debug, Clone, Copy)]
pub struct ReplacementRecord<'a> {
    bytes: &'a [u8],
}

impl<'a> ReplacementRecord<'a> {
    /// The message as it continues through the chain (see [`Edit::replacement`]). Never
    /// `Err` for verdicts [`Verdicts::parse_lazy`] accepted.
    pub fn view(&self) -> Result<MessageView<'a>, AbiError> {
        read_record(&mut Reader::new(self.bytes, Part::Verdicts))
    }
}

/// Reads the next edit of a list `parse_with` validated (so none of these reads fail; a
/// failure ends the iteration).
fn next_edit<'a>(rest: &mut &'a [u8]) -> Option<RawEdit<'a>> {
    let mut e = Reader::new(rest, Part::Verdicts);
    let index = usize::try_from(e.u32(Field::EditIndex).ok()?).ok()?;
    let flags = e.u8(Field::EditFlags).ok()?;
    let replacement = if flags & HAS_REPLACEMENT != 0 {
        let start = e.rest;
        read_record_layout(&mut e).ok()?;
        start.get(..start.len() - e.rest.len())
    } else {
        None
    };
    let routes = if flags & HAS_ROUTES != 0 {
        let count = e.u16(Field::RouteCount).ok()?;
        let start = e.rest;
        // Skip the destinations by their lengths; the route iterators read them.
        for _ in 0..count {
            match e.u8(Field::DestinationKind).ok()? {
                KIND_TEMPLATE => {
                    read_template(&mut e).ok()?;
                }
                kind => {
                    if kind == KIND_BRIDGE {
                        e.raw16(Field::BridgeName).ok()?;
                    }
                    e.raw16(Field::DestinationTopic).ok()?;
                }
            }
        }
        let len = start.len() - e.rest.len();
        Some((start.get(..len)?, count))
    } else {
        None
    };
    *rest = e.rest;
    Some(RawEdit {
        index,
        replacement,
        routes,
    })
}

impl<'a> Iterator for Edits<'a> {
    type Item = Edit<'a>;

    fn next(&mut self) -> Option<Edit<'a>> {
        self.remaining = self.remaining.checked_sub(1)?;
        let raw = next_edit(&mut self.rest)?;
        let replacement = match raw.replacement {
            Some(bytes) => Some(ReplacementRecord { bytes }.view().ok()?),
            None => None,
        };
        Some(Edit {
            index: raw.index,
            replacement,
            routes: raw
                .routes
                .map(|(rest, remaining)| Routes { rest, remaining }),
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for Edits<'_> {}

/// The destinations of one edit, in order (at least one).
#[derive(Clone)]
pub struct Routes<'a> {
    rest: &'a [u8],
    remaining: u16,
}

impl<'a> Iterator for Routes<'a> {
    type Item = Destination<'a>;

    fn next(&mut self) -> Option<Destination<'a>> {
        self.remaining = self.remaining.checked_sub(1)?;
        let mut r = Reader::new(self.rest, Part::Verdicts);
        let dest = read_destination(&mut r).ok()?;
        self.rest = r.rest;
        Some(dest)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = usize::from(self.remaining);
        (n, Some(n))
    }
}

impl ExactSizeIterator for Routes<'_> {}

impl core::fmt::Debug for Routes<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_list().entries(self.clone()).finish()
    }
}

/// Verdicts from [`Verdicts::parse_lazy`]: validated except for the strings of route
/// destinations, which [`CheckedRoutes`] checks as it reads them.
#[derive(Debug, Clone, Copy)]
pub struct LazyVerdicts<'a>(Verdicts<'a>);

impl<'a> LazyVerdicts<'a> {
    /// The message count.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether message `index` is kept (false when out of range).
    pub fn is_kept(&self, index: usize) -> bool {
        self.0.is_kept(index)
    }

    /// Whether every message is kept unchanged.
    pub fn unchanged(&self) -> bool {
        self.0.unchanged()
    }

    /// Whether every message is kept (edits may still be present).
    pub fn all_kept(&self) -> bool {
        self.0.all_kept()
    }

    /// The edits, ascending by message index, only for kept messages.
    pub fn edits(&self) -> LazyEdits<'a> {
        LazyEdits {
            rest: self.0.edits,
            remaining: self.0.edit_count,
            ordinal: 0,
        }
    }
}

/// One message's edit from [`LazyVerdicts`].
#[derive(Debug, Clone)]
pub struct LazyEdit<'a> {
    pub index: usize,
    /// As [`Edit::replacement`] (fully validated, decoded when read).
    pub replacement: Option<ReplacementRecord<'a>>,
    pub routes: Option<CheckedRoutes<'a>>,
}

/// Iterator over the edits of [`LazyVerdicts`].
#[derive(Debug, Clone)]
pub struct LazyEdits<'a> {
    rest: &'a [u8],
    remaining: usize,
    ordinal: usize,
}

impl<'a> Iterator for LazyEdits<'a> {
    type Item = LazyEdit<'a>;

    fn next(&mut self) -> Option<LazyEdit<'a>> {
        self.remaining = self.remaining.checked_sub(1)?;
        let raw = next_edit(&mut self.rest)?;
        let part = Part::Edit(self.ordinal);
        self.ordinal += 1;
        Some(LazyEdit {
            index: raw.index,
            replacement: raw.replacement.map(|bytes| ReplacementRecord { bytes }),
            routes: raw.routes.map(|(rest, remaining)| {
                CheckedRoutes(RouteReader {
                    rest,
                    part,
                    remaining,
                })
            }),
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for LazyEdits<'_> {}

/// An edit that only routes its message to one template (what a router writes for most
/// messages), as [`LazyEdits::next_single_template`] reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SingleTemplate<'a> {
    pub index: usize,
    pub template: u16,
    pub spans: Spans<'a>,
}

impl<'a> LazyEdits<'a> {
    /// The next edit if it only routes its message to one template, consumed; `None`
    /// (nothing consumed) for any other edit and at the end, to be read with
    /// [`next`](Iterator::next). Reads the few fixed fields in place, without the general
    /// path's per-field results.
    #[inline]
    pub fn next_single_template(&mut self) -> Option<SingleTemplate<'a>> {
        if self.remaining == 0 {
            return None;
        }
        let (single, rest) = single_template(self.rest)?;
        self.rest = rest;
        self.remaining -= 1;
        self.ordinal += 1;
        Some(single)
    }
}

/// The edit at the front of `buf` if it only routes to one template, and the bytes after it.
#[inline]
fn single_template(buf: &[u8]) -> Option<(SingleTemplate<'_>, &[u8])> {
    let (head, rest) = buf.split_first_chunk::<11>()?;
    let [i0, i1, i2, i3, flags, c0, c1, kind, t0, t1, count] = *head;
    if flags != HAS_ROUTES || [c0, c1] != [1, 0] || kind != KIND_TEMPLATE {
        return None;
    }
    let (bytes, rest) = rest.split_at_checked(4 * usize::from(count))?;
    let single = SingleTemplate {
        index: usize::try_from(u32::from_le_bytes([i0, i1, i2, i3])).ok()?,
        template: u16::from_le_bytes([t0, t1]),
        spans: Spans::from_bytes(bytes)?,
    };
    Some((single, rest))
}

/// The destinations of one [`LazyEdit`], in order (at least one), each string checked for
/// UTF-8 as it is read: an `Err` is a destination the verdicts must be rejected for.
#[derive(Debug, Clone)]
pub struct CheckedRoutes<'a>(RouteReader<'a>);

impl<'a> Iterator for CheckedRoutes<'a> {
    type Item = Result<Destination<'a>, AbiError>;

    /// Ends after the first `Err`.
    fn next(&mut self) -> Option<Self::Item> {
        let item = self.0.next()?;
        if item.is_err() {
            self.0.remaining = 0;
        }
        Some(item)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = usize::from(self.0.remaining);
        (n, Some(n))
    }
}

impl ExactSizeIterator for CheckedRoutes<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_set_agrees_with_every_bit() {
        for count in 0..40usize {
            let len = count.div_ceil(8);
            // Every bit pattern of the bytes is too many; one cleared bit anywhere, or none.
            for cleared in (0..count).map(Some).chain([None]) {
                let mut bitmap = alloc::vec![0u8; len];
                for i in (0..count).filter(|&i| Some(i) != cleared) {
                    bitmap[i / 8] |= 1 << (i % 8);
                }
                let expected = (0..count).all(|i| bit(&bitmap, i));
                assert_eq!(all_set(&bitmap, count), expected, "{count} {cleared:?}");
            }
        }
    }
}
