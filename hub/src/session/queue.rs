//! Per-session message queue: a bounded window of loaded messages, and for persistent
//! sessions the rest as log positions paged in from the store.
//!
//! # What it owns
//!
//! Every message routed to a session that is not in flight yet: the backlog of an online
//! client behind its in-flight window, and everything queued for an offline persistent
//! session. A [`SessionQueue`] is two parts in one FIFO order:
//!
//! - the **window**, entries holding `Arc<Message>`: online delivery pops them without
//!   reading the store;
//! - the **spill**, behind the window, only for persistent (store-tracked) sessions: entries
//!   the store already has (the message in the log, the queue record in `queue`) are kept
//!   as log positions in runs of consecutive seqs (`Segment`, 16 bytes per run, however
//!   long), with their delivery details interned once per distinct value.
//!
//! A tracked entry (QoS 1/2 for a persistent session, `seq` set) joins the window while
//! nothing is spilled and the window is under `[session] queue_window` bytes
//! ([`QueuedMessage::approx_size`]). Otherwise it joins the spill: still loaded (held) while
//! the loaded entries of window and spill together stay under `queue_window`, so a
//! subscriber just behind its publishers reads nothing back; beyond that as a log position,
//! its `Arc<Message>` released. Entries the store does not track (QoS 0 while online,
//! retained messages sent on subscribe) that arrive while something is spilled are held
//! in the spill too, in order, at most `max_queued_messages` of them.
//!
//! # Paging
//!
//! When the window is empty and the spill starts with log positions,
//! [`SessionQueue::page_request`] hands out the first positions (at most
//! [`PAGE_MAX_ENTRIES`]) and marks the queue loading; the caller (`broker::Mailbox::pop`)
//! reads them from the store in one read transaction *without* holding the queue's lock, up
//! to a window's worth of bytes, and [`SessionQueue::install`] moves what was read into the
//! window. While loading, pushes only append to the spill, so the page's positions stay at
//! its front. A position whose record has expired is counted as expired; one whose record
//! is gone (deleted by retention, commit failed) is counted as lost and logged by the
//! caller; both are reported through [`SessionQueue::take_discarded`] so the owner removes
//! their queue records. A position whose append has not committed yet (a queue receives a
//! message before its commit) stalls paging until the store ticket the read returned has
//! resolved ([`crate::store::Store::read_queued`]).
//!
//! # Limits and overflow
//!
//! - Clean sessions: at most `max_queued_messages` entries, all in memory (as before paging
//!   existed).
//! - Persistent sessions: `max_queued_messages` is where publishers to a *connected* session
//!   start waiting under `backpressure` ([`SessionQueue::try_push`]); the queue itself grows
//!   to `max_backlog_messages` entries, in the store beyond the window. The store's
//!   retention budget (bytes and age, with its `when_full` policy) normally binds first.
//!
//! At the cap the overflow policy applies: `drop-new` discards the new message,
//! `drop-oldest` (and `backpressure` after a vain wait, or for an offline session) the
//! oldest. Every tracked entry that leaves the queue other than by a pop (overflow, expiry,
//! gone) is reported through [`SessionQueue::take_discarded`].
//!
//! Under policy `backpressure` a publisher that finds the queue of a connected session full
//! waits (bounded) for room: [`SessionQueue::try_push`] hands the message back and
//! [`SessionQueue::room`] is notified once the queue has drained to its resume level
//! ([`SessionQueue::resume_level`], an eighth of `max_queued_messages` below it). Waking the
//! waiting publishers at every pop of a full queue woke all of them per delivered message,
//! for one of them to fill the one free entry; at the resume level each has room for its
//! batch.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::config::QueueOverflow;
use crate::message::{Message, QueuedMessage};
use crate::metrics::Counter;
use crate::store::{DeliveryInfo, QueuedRecord, Seq, Ticket, now_millis};

/// A drained queue whose room grew beyond this many entries gives it back to the allocator,
/// keeping [`KEEP_CAPACITY`]. A backlog of a slow subscriber grows the queue to its full
/// capacity; smaller swings keep their room, so a queue that empties and refills often does
/// not reallocate each time.
const SHRINK_ABOVE: usize = 4096;
/// Entries of room a queue keeps when it gives back a backlog's room.
const KEEP_CAPACITY: usize = 256;

/// Publishers waiting for room are woken once the queue is this share of
/// `max_queued_messages` (at least one entry) below it: `capacity / RESUME_SHARE`.
const RESUME_SHARE: usize = 8;

/// The length at or below which publishers waiting at `limit` are woken: an eighth of it
/// (at least one entry) below.
fn resume_level(limit: usize) -> usize {
    limit - (limit / RESUME_SHARE).max(1)
}

/// Most log positions one page read asks the store for. A page also stops at a window's
/// worth of bytes.
pub const PAGE_MAX_ENTRIES: usize = 512;

/// Memory of a loaded entry besides its record's encoded bytes, to size a page in the
/// window's unit ([`QueuedMessage::approx_size`]).
const ENTRY_OVERHEAD: usize = std::mem::size_of::<QueuedMessage>()
    + std::mem::size_of::<Message>()
    + 2 * std::mem::size_of::<usize>();

/// Delivery index marking a segment of held (in-memory) entries.
const HELD: u32 = u32::MAX;

/// Most entries in one segment (a longer run starts a new segment).
const SEGMENT_MAX: u32 = u32::MAX - 1;

/// The bounds of one queue, from `[session]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// `max_queued_messages`: every entry of a clean session; for a persistent session the
    /// length at which connected publishers wait, and the most held (untracked) entries.
    pub capacity: usize,
    /// `max_backlog_messages`: most entries of a persistent session's queue, window and
    /// spill together.
    pub backlog: usize,
    /// `queue_window`: bytes of loaded messages a persistent session's window holds
    /// (at least one entry).
    pub window_bytes: usize,
    /// Policy at the cap.
    pub overflow: QueueOverflow,
    /// `queue_wait_level`: where publishers start waiting while the session is draining
    /// its queue (at most `capacity`).
    pub wait_level: usize,
    /// `queue_full_wait`: a session that took a message this recently is draining.
    pub draining_for: Duration,
    /// `queue_in_store`, for a clean session's queue: publishers to it wait only at
    /// `backlog` for messages the store holds (they wait in the store, not in memory).
    /// Persistent sessions' publishers wait as without it: their backlog costs a store
    /// record per message, and the memory measured under it was over budget.
    pub in_store: bool,
}

impl QueueLimits {
    /// The limits of `[session]`.
    pub fn of(session: &crate::config::SessionConfig) -> Self {
        Self {
            capacity: session.max_queued_messages,
            backlog: session.max_backlog_messages,
            window_bytes: usize::try_from(session.queue_window.0).unwrap_or(usize::MAX),
            overflow: session.queue_overflow,
            wait_level: session.queue_wait_level,
            draining_for: session.queue_full_wait.0,
            // Per queue: clean sessions only (`Mailbox::new`).
            in_store: false,
        }
    }
}

/// What [`SessionQueue::push`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// Queued; nothing dropped.
    Queued,
    /// Queued after dropping the oldest queued message (policy `drop-oldest`).
    DroppedOldest,
    /// Not queued: the queue was full (policy `drop-new`).
    DroppedNew,
}

impl PushOutcome {
    /// Whether a message was lost.
    pub fn dropped(self) -> bool {
        !matches!(self, Self::Queued)
    }
}

/// Queue paging counters, published as `$SYS/broker/queues/...` and
/// `tern_queues_*_total`.
#[derive(Debug, Default)]
pub struct QueueMetrics {
    /// Page reads from the store (one read transaction each).
    pub pages_read: Counter,
    /// Messages loaded from the store into session windows.
    pub messages_paged: Counter,
    /// Queued messages whose log record was gone when paged in (deleted by retention under
    /// `drop-oldest` or `max_age`, or their commit failed).
    pub messages_lost: Counter,
    /// Page reads that failed (the queue is left as it was and read again later).
    pub page_errors: Counter,
    /// Page reads that met a message not committed yet and waited for its commit.
    pub page_waits: Counter,
}

impl QueueMetrics {
    /// `$SYS/broker/queues/...` topics and payloads.
    pub fn sys_topics(&self) -> [(&'static str, String); 5] {
        let c = |counter: &Counter| counter.get().to_string();
        [
            ("$SYS/broker/queues/pages_read", c(&self.pages_read)),
            ("$SYS/broker/queues/messages_paged", c(&self.messages_paged)),
            ("$SYS/broker/queues/messages_lost", c(&self.messages_lost)),
            ("$SYS/broker/queues/page_errors", c(&self.page_errors)),
            ("$SYS/broker/queues/page_waits", c(&self.page_waits)),
        ]
    }
}

/// A run of spilled entries: `len` consecutive log positions from `first` delivered with
/// `Spill::deliveries[delivery]`, or (`delivery == HELD`) the next `len` held entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Segment {
    first: Seq,
    len: u32,
    delivery: u32,
}

/// One entry taken from the front of the spill.
#[derive(Debug)]
enum Spilled {
    Stored { seq: Seq },
    Held(QueuedMessage),
}

/// The part of a queue behind the window.
#[derive(Debug, Default)]
struct Spill {
    segments: VecDeque<Segment>,
    /// Entries of the `HELD` segments, in order.
    held: VecDeque<QueuedMessage>,
    /// Sum of [`QueuedMessage::approx_size`] over `held`.
    held_bytes: usize,
    /// Distinct delivery details of the stored segments; cleared when the spill empties.
    deliveries: Vec<DeliveryInfo>,
    /// Entries in all segments.
    len: usize,
}

impl Spill {
    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn intern(&mut self, delivery: DeliveryInfo) -> u32 {
        if let Some(last) = self.segments.back()
            && let Some(known) = self.deliveries.get(last.delivery as usize)
            && *known == delivery
        {
            return last.delivery;
        }
        match self.deliveries.iter().rposition(|d| *d == delivery) {
            Some(i) => u32::try_from(i).unwrap_or(HELD - 1),
            None => {
                self.deliveries.push(delivery);
                u32::try_from(self.deliveries.len() - 1).unwrap_or(HELD - 1)
            }
        }
    }

    fn push_stored(&mut self, seq: Seq, delivery: DeliveryInfo) {
        let delivery = self.intern(delivery);
        self.len += 1;
        if let Some(last) = self.segments.back_mut()
            && last.delivery == delivery
            && last.len < SEGMENT_MAX
            && last.first.checked_add(u64::from(last.len)) == Some(seq)
        {
            last.len += 1;
            return;
        }
        self.segments.push_back(Segment {
            first: seq,
            len: 1,
            delivery,
        });
    }

    fn push_held(&mut self, item: QueuedMessage) {
        self.held_bytes += item.approx_size();
        self.held.push_back(item);
        self.len += 1;
        if let Some(last) = self.segments.back_mut()
            && last.delivery == HELD
            && last.len < SEGMENT_MAX
        {
            last.len += 1;
            return;
        }
        self.segments.push_back(Segment {
            first: 0,
            len: 1,
            delivery: HELD,
        });
    }

    fn front_is_held(&self) -> bool {
        self.segments.front().is_some_and(|s| s.delivery == HELD)
    }

    fn pop_front(&mut self) -> Option<Spilled> {
        let front = self.segments.front_mut()?;
        let out = if front.delivery == HELD {
            let item = self.held.pop_front()?;
            self.held_bytes = self.held_bytes.saturating_sub(item.approx_size());
            Spilled::Held(item)
        } else {
            Spilled::Stored { seq: front.first }
        };
        front.first += 1;
        front.len -= 1;
        if front.len == 0 {
            self.segments.pop_front();
        }
        self.len -= 1;
        if self.len == 0 {
            self.release();
        }
        Some(out)
    }

    /// The first positions of the leading stored segments, at most `max`.
    fn front_positions(&self, max: usize) -> Vec<Seq> {
        let mut out = Vec::new();
        for segment in self.segments.iter() {
            if segment.delivery == HELD || out.len() >= max {
                break;
            }
            let take = (segment.len as usize).min(max - out.len());
            out.extend((0..take as u64).map(|i| segment.first + i));
        }
        out
    }

    fn delivery(&self, index: u32) -> Option<&DeliveryInfo> {
        self.deliveries.get(index as usize)
    }

    /// Keeps the held entries `keep` accepts; segments that end up empty go.
    fn retain_held(&mut self, keep: impl FnMut(&QueuedMessage) -> bool) {
        self.split_held(keep, drop);
    }

    /// Keeps the held entries `keep` accepts and hands the others, in order, to `removed`.
    fn split_held(
        &mut self,
        mut keep: impl FnMut(&QueuedMessage) -> bool,
        mut removed: impl FnMut(QueuedMessage),
    ) {
        let mut old = std::mem::take(&mut self.held);
        for segment in self.segments.iter_mut().filter(|s| s.delivery == HELD) {
            let mut kept = 0;
            for item in old.drain(..segment.len as usize) {
                if keep(&item) {
                    self.held.push_back(item);
                    kept += 1;
                } else {
                    removed(item);
                }
            }
            self.len -= (segment.len - kept) as usize;
            segment.len = kept;
        }
        self.segments.retain(|s| s.len > 0);
        self.held_bytes = self.held.iter().map(QueuedMessage::approx_size).sum();
        if self.len == 0 {
            self.release();
        }
    }

    /// Forgets interned deliveries and gives back grown room (call when empty).
    fn release(&mut self) {
        self.deliveries.clear();
        if self.segments.capacity() > SHRINK_ABOVE {
            self.segments.shrink_to(KEEP_CAPACITY);
        }
        if self.held.capacity() > SHRINK_ABOVE {
            self.held.shrink_to(KEEP_CAPACITY);
        }
    }
}

/// Positions to read from the store for a queue's window ([`SessionQueue::page_request`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    /// The positions at the front of the spill, in queue order.
    pub seqs: Vec<Seq>,
    /// Stop reading once this many bytes (encoded records plus `per_record` each) are read.
    pub max_bytes: usize,
    /// Memory of a loaded entry besides its record.
    pub per_record: usize,
    /// The first position and the ticket an earlier read of it waited for (see
    /// [`crate::store::Store::read_queued`]).
    pub settled: Option<(Seq, Ticket)>,
}

/// What [`SessionQueue::install`] did with a page.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PageOutcome {
    /// Messages moved into the window.
    pub loaded: usize,
    /// Positions whose message had expired.
    pub expired: usize,
    /// Positions whose record was gone.
    pub lost: usize,
    /// The read stopped at a message not committed yet: read again once this ticket has
    /// resolved.
    pub wait_for: Option<Ticket>,
}

/// FIFO of messages for one session; see the module docs.
#[derive(Debug)]
pub struct SessionQueue {
    /// Loaded entries, oldest first.
    window: VecDeque<QueuedMessage>,
    /// Sum of [`QueuedMessage::approx_size`] over `window`; kept only while `paged` (the
    /// only case that reads it), computed when paging is switched on.
    window_bytes: usize,
    /// Entries behind the window (persistent sessions only).
    spill: Spill,
    limits: QueueLimits,
    /// Tracked entries beyond the window are spilled (the session is persistent and the
    /// hub has a store).
    paged: bool,
    /// A page request is out: the spill's front positions belong to it until
    /// [`SessionQueue::install`].
    loading: bool,
    /// The front position a read waited on, and the ticket it waited for.
    stall: Option<(Seq, Ticket)>,
    /// Seqs of tracked entries dropped by overflow, expiry or loss, not yet removed from the
    /// store.
    discarded: Vec<Seq>,
    /// Notified when a pop makes room in a full queue (publishers waiting under
    /// `backpressure`).
    room: Arc<Notify>,
    /// When the session last took a message ([`SessionQueue::pop`]).
    last_pop: Option<Instant>,
}

impl SessionQueue {
    /// An empty queue; `paged` for a persistent session of a hub with a store.
    pub fn new(limits: QueueLimits, paged: bool) -> Self {
        Self {
            window: VecDeque::new(),
            window_bytes: 0,
            spill: Spill::default(),
            limits: QueueLimits {
                capacity: limits.capacity.max(1),
                backlog: limits.backlog.max(limits.capacity).max(1),
                wait_level: limits.wait_level.clamp(1, limits.capacity.max(1)),
                ..limits
            },
            paged,
            loading: false,
            stall: None,
            discarded: Vec::new(),
            room: Arc::new(Notify::new()),
            last_pop: None,
        }
    }

    /// Spills tracked entries from now on (a session that became persistent). Paging is
    /// never switched off: a spilled entry can only be delivered by paging it in.
    pub fn enable_paging(&mut self) {
        if !self.paged {
            self.window_bytes = self.window.iter().map(QueuedMessage::approx_size).sum();
        }
        self.paged = true;
    }

    /// Adds a loaded entry's size to `window_bytes` (paged queues only).
    fn count_loaded(&mut self, item: &QueuedMessage) {
        if self.paged {
            self.window_bytes += item.approx_size();
        }
    }

    /// Takes a loaded entry's size off `window_bytes` (paged queues only).
    fn uncount_loaded(&mut self, item: &QueuedMessage) {
        if self.paged {
            self.window_bytes = self.window_bytes.saturating_sub(item.approx_size());
        }
    }

    /// Most entries the queue holds.
    fn cap(&self) -> usize {
        if self.paged {
            self.limits.backlog
        } else {
            self.limits.capacity
        }
    }

    /// Queues `item` if the queue is below the length where publishers wait: for a message
    /// the store holds, in a paged queue under `queue_in_store`, `max_backlog_messages`;
    /// otherwise the wait level while the session is draining its queue (it took a message
    /// within `queue_full_wait` of `now`), else `max_queued_messages`. Otherwise hands it
    /// back (nothing is dropped).
    pub fn try_push(&mut self, item: QueuedMessage, now: Instant) -> Result<(), QueuedMessage> {
        let limit = if self.paged && self.limits.in_store && item.seq.is_some() {
            // Beyond the window it is a log position: the store is where it waits.
            self.cap()
        } else {
            self.wait_limit(now)
        };
        if self.len() < limit {
            let outcome = self.push(item);
            debug_assert_eq!(outcome, PushOutcome::Queued);
            Ok(())
        } else {
            Err(item)
        }
    }

    /// What a publisher waiting for room awaits (see the module docs).
    pub fn room(&self) -> Arc<Notify> {
        Arc::clone(&self.room)
    }

    /// The overflow policy.
    pub fn overflow(&self) -> QueueOverflow {
        self.limits.overflow
    }

    /// Appends a message, applying the overflow policy when full.
    pub fn push(&mut self, item: QueuedMessage) -> PushOutcome {
        match item.seq {
            Some(seq) if self.paged => {
                let outcome = match self.make_room_for(seq) {
                    Ok(outcome) => outcome,
                    Err(dropped) => return dropped,
                };
                let size = item.approx_size();
                let in_memory = self.window_bytes + self.spill.held_bytes;
                let fits = in_memory.saturating_add(size) <= self.limits.window_bytes;
                if self.spill.is_empty() && !self.loading && (self.window.is_empty() || fits) {
                    self.window_bytes += size;
                    self.window.push_back(item);
                } else if fits {
                    // Behind spilled entries but within the window's bytes: kept loaded
                    // (a subscriber just behind its publishers reads nothing back).
                    self.spill.push_held(item);
                } else if item.share.is_some() && self.spill.held.len() < self.limits.capacity {
                    // A shared subscription's message stays loaded (up to
                    // `max_queued_messages` of them): a position alone would not say which
                    // group to hand it to should this session end first.
                    self.spill.push_held(item);
                } else {
                    self.spill.push_stored(seq, item.delivery_info());
                }
                outcome
            }
            _ if !self.spill.is_empty() || self.loading => {
                // Not in the store, behind spilled entries: held in memory, in order.
                if self.spill.held.len() >= self.limits.capacity || self.len() >= self.cap() {
                    self.discarded.extend(item.seq);
                    return PushOutcome::DroppedNew;
                }
                self.spill.push_held(item);
                PushOutcome::Queued
            }
            _ => self.push_window(item),
        }
    }

    /// Appends to the window of a queue with nothing spilled, bounded by
    /// `max_queued_messages`.
    fn push_window(&mut self, item: QueuedMessage) -> PushOutcome {
        let mut outcome = PushOutcome::Queued;
        if self.window.len() >= self.limits.capacity || self.len() >= self.cap() {
            match self.limits.overflow {
                QueueOverflow::DropNew => {
                    self.discarded.extend(item.seq);
                    return PushOutcome::DroppedNew;
                }
                // A publisher that waited in vain (or an offline session) falls back to
                // dropping the oldest message.
                QueueOverflow::DropOldest | QueueOverflow::Backpressure => {
                    if !self.drop_oldest() {
                        self.discarded.extend(item.seq);
                        return PushOutcome::DroppedNew;
                    }
                    outcome = PushOutcome::DroppedOldest;
                }
            }
        }
        self.count_loaded(&item);
        self.window.push_back(item);
        outcome
    }

    /// Queues a position the store holds without its message (a queue recovered at start):
    /// it joins the spill and is paged in when its turn comes. For paged queues only;
    /// returns what the overflow policy did.
    pub fn push_stored(&mut self, seq: Seq, delivery: DeliveryInfo) -> PushOutcome {
        let outcome = match self.make_room_for(seq) {
            Ok(outcome) => outcome,
            Err(dropped) => return dropped,
        };
        self.spill.push_stored(seq, delivery);
        outcome
    }

    /// Applies the overflow policy before the tracked entry `seq` joins a paged queue: what
    /// was done to make room, or `Err` when the new entry is the one dropped (its position
    /// is then reported as discarded).
    fn make_room_for(&mut self, seq: Seq) -> Result<PushOutcome, PushOutcome> {
        if self.len() < self.cap() {
            return Ok(PushOutcome::Queued);
        }
        match self.limits.overflow {
            QueueOverflow::DropNew => {}
            QueueOverflow::DropOldest | QueueOverflow::Backpressure => {
                if self.drop_oldest() {
                    return Ok(PushOutcome::DroppedOldest);
                }
            }
        }
        self.discarded.push(seq);
        Err(PushOutcome::DroppedNew)
    }

    /// Drops the oldest entry; `false` if none may be dropped (the only ones are being
    /// paged in).
    fn drop_oldest(&mut self) -> bool {
        if let Some(old) = self.window.pop_front() {
            self.uncount_loaded(&old);
            self.discarded.extend(old.seq);
            return true;
        }
        if self.loading {
            return false;
        }
        match self.spill.pop_front() {
            Some(Spilled::Stored { seq }) => {
                self.discarded.push(seq);
                true
            }
            Some(Spilled::Held(old)) => {
                self.discarded.extend(old.seq);
                true
            }
            None => false,
        }
    }

    /// Hands back seqs taken with [`SessionQueue::take_discarded`] for the owner to remove.
    pub fn return_discarded(&mut self, seqs: Vec<Seq>) {
        self.discarded.extend(seqs);
    }

    /// Takes the seqs of tracked entries dropped since the last call (overflow, expiry,
    /// loss).
    pub fn take_discarded(&mut self) -> Vec<Seq> {
        std::mem::take(&mut self.discarded)
    }

    /// Takes the oldest message that has not expired at `now`; expired ones are discarded
    /// and counted in `expired`. `None` when the queue is empty, or when the next entry must
    /// be paged in first ([`SessionQueue::page_request`]).
    pub fn pop(&mut self, now: Instant, expired: &mut u64) -> Option<QueuedMessage> {
        let before = self.len();
        let item = self.take_front(now, expired);
        if item.is_some() {
            self.last_pop = Some(now);
        }
        self.wake_if_drained(before);
        item
    }

    /// The queue length from which publishers wait for room at `now` (see
    /// [`try_push`](Self::try_push)).
    fn wait_limit(&self, now: Instant) -> usize {
        let draining = self
            .last_pop
            .is_some_and(|at| now.saturating_duration_since(at) <= self.limits.draining_for);
        if draining {
            self.limits.wait_level
        } else {
            self.limits.capacity
        }
    }

    /// The queue length at or below which publishers waiting for room are woken: an
    /// eighth of `max_queued_messages` (at least one entry) below it.
    pub fn resume_level(&self) -> usize {
        resume_level(self.limits.capacity)
    }

    /// Wakes the publishers waiting for room if the queue went from above a resume level
    /// (`before` entries) to at or below it: the one below `max_queued_messages`, or the
    /// one below the wait level of a draining session. A waiter registered while the queue
    /// was at one of those limits, above its resume level, so the queue cannot reach room
    /// for it without crossing that level.
    fn wake_if_drained(&self, before: usize) {
        let len = self.len();
        let crossed = |limit: usize| {
            let level = resume_level(limit);
            before > level && len <= level
        };
        if crossed(self.limits.capacity) || crossed(self.limits.wait_level) {
            self.room.notify_waiters();
        }
    }

    /// [`SessionQueue::pop`] without the wake-up of waiting publishers.
    fn take_front(&mut self, now: Instant, expired: &mut u64) -> Option<QueuedMessage> {
        loop {
            if let Some(item) = self.window.pop_front() {
                self.uncount_loaded(&item);
                if item.message.is_expired(now) {
                    *expired += 1;
                    self.discarded.extend(item.seq);
                    continue;
                }
                if self.window.is_empty() {
                    self.release_backlog_room();
                }
                return Some(item);
            }
            // Held entries need no read: move the front run of them into the window.
            if self.loading || !self.spill.front_is_held() {
                self.release_backlog_room();
                return None;
            }
            while self.spill.front_is_held() {
                if let Some(Spilled::Held(item)) = self.spill.pop_front() {
                    self.count_loaded(&item);
                    self.window.push_back(item);
                }
            }
        }
    }

    /// When the window is empty and the spill starts with log positions: the positions to
    /// read next. The queue is then loading until [`SessionQueue::install`] or
    /// [`SessionQueue::abandon_page`].
    pub fn page_request(&mut self) -> Option<PageRequest> {
        if self.loading || !self.window.is_empty() || self.spill.front_is_held() {
            return None;
        }
        let seqs = self.spill.front_positions(PAGE_MAX_ENTRIES);
        let first = *seqs.first()?;
        self.loading = true;
        Some(PageRequest {
            seqs,
            max_bytes: self.limits.window_bytes,
            per_record: ENTRY_OVERHEAD,
            settled: self.stall.filter(|(seq, _)| *seq == first),
        })
    }

    /// Moves a page read for `request` into the window: `records` correspond to the first
    /// `records.len()` positions of the request; `wait_for` is the ticket the read stopped
    /// at, if it did. Expired positions are counted in `expired`; expired and lost ones
    /// are reported through [`SessionQueue::take_discarded`].
    pub fn install(
        &mut self,
        request: &PageRequest,
        records: Vec<QueuedRecord>,
        wait_for: Option<Ticket>,
        now: Instant,
        expired: &mut u64,
    ) -> PageOutcome {
        self.loading = false;
        let before = self.len();
        let now_ms = now_millis();
        let mut outcome = PageOutcome::default();
        for (record, &wanted) in records.into_iter().zip(&request.seqs) {
            // The front cannot change while loading; check anyway rather than misdeliver.
            let (seq, delivery) = match self.spill.segments.front() {
                Some(s) if s.delivery != HELD && s.first == wanted => (s.first, s.delivery),
                _ => break,
            };
            let Some(info) = self.spill.delivery(delivery).cloned() else {
                break;
            };
            self.spill.pop_front();
            match record {
                QueuedRecord::Message(stored) => {
                    let item = QueuedMessage {
                        message: Arc::new(Message::from_stored(*stored, now, now_ms)),
                        qos: info.qos,
                        retain: info.retain,
                        subscription_ids: info.subscription_ids,
                        seq: Some(seq),
                        // Paged queues belong to persistent sessions, which keep their
                        // messages when they go (no redelivery to another share member).
                        share: None,
                    };
                    self.count_loaded(&item);
                    self.window.push_back(item);
                    outcome.loaded += 1;
                }
                QueuedRecord::Expired => {
                    *expired += 1;
                    outcome.expired += 1;
                    self.discarded.push(seq);
                }
                QueuedRecord::Gone => {
                    outcome.lost += 1;
                    self.discarded.push(seq);
                }
            }
        }
        self.stall = match (wait_for, self.spill.segments.front()) {
            (Some(ticket), Some(front)) if front.delivery != HELD => {
                // Keep the first ticket waited for: a later read must not move the goal.
                let ticket = match self.stall {
                    Some((seq, earlier)) if seq == front.first => earlier,
                    _ => ticket,
                };
                outcome.wait_for = Some(ticket);
                Some((front.first, ticket))
            }
            _ => None,
        };
        // Expired and lost positions left the queue without a pop.
        self.wake_if_drained(before);
        outcome
    }

    /// Ends a page request whose read failed; the positions stay queued.
    pub fn abandon_page(&mut self) {
        self.loading = false;
    }

    /// Gives back the room of a worked-off backlog (see [`SHRINK_ABOVE`]).
    fn release_backlog_room(&mut self) {
        if self.window.capacity() > SHRINK_ABOVE {
            self.window.shrink_to(KEEP_CAPACITY);
        }
    }

    /// Takes the loaded messages a shared subscription chose this session for
    /// ([`QueuedMessage::share`]), in queue order: the session is ending, and another member
    /// should get them.
    pub fn take_shared(&mut self) -> Vec<QueuedMessage> {
        let (shared, rest): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut self.window)
            .into_iter()
            .partition(|item| item.share.is_some());
        self.window = rest;
        self.window_bytes = self.window.iter().map(QueuedMessage::approx_size).sum();
        let mut taken = Vec::from(shared);
        self.spill
            .split_held(|item| item.share.is_none(), |item| taken.push(item));
        self.room.notify_waiters();
        taken
    }

    /// Drops every QoS 0 message (they are not kept for an offline session).
    pub fn retain_qos_above_zero(&mut self) {
        let above_zero = |item: &QueuedMessage| item.qos != tern_mqtt::QoS::AtMostOnce;
        self.window.retain(above_zero);
        self.window_bytes = self.window.iter().map(QueuedMessage::approx_size).sum();
        self.spill.retain_held(above_zero);
        self.room.notify_waiters();
    }

    /// Number of queued messages, loaded or not.
    pub fn len(&self) -> usize {
        self.window.len() + self.spill.len
    }

    /// Number of queued messages kept only as log positions.
    pub fn spilled(&self) -> usize {
        self.spill.len - self.spill.held.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::time::Duration;

    use bytes::Bytes;
    use tern_mqtt::QoS;

    use super::*;
    use crate::message::{Expiry, Message, MessageProperties};
    use crate::store::StoredMessage;

    fn limits(capacity: usize, overflow: QueueOverflow) -> QueueLimits {
        QueueLimits {
            capacity,
            backlog: capacity,
            window_bytes: usize::MAX,
            overflow,
            wait_level: capacity,
            draining_for: Duration::from_secs(1),
            in_store: false,
        }
    }

    fn message(payload: &str, expiry: Option<Expiry>) -> Message {
        Message {
            topic: "t".into(),
            payload: Bytes::copy_from_slice(payload.as_bytes()),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: MessageProperties::default(),
            expiry,
            publisher: Arc::from("p"),
        }
    }

    fn item(payload: &str, expiry: Option<Expiry>) -> QueuedMessage {
        QueuedMessage {
            message: Arc::new(message(payload, expiry)),
            qos: QoS::AtLeastOnce,
            retain: false,
            subscription_ids: Default::default(),
            seq: None,
            share: None,
        }
    }

    fn tracked(payload: &str, seq: Seq) -> QueuedMessage {
        QueuedMessage {
            seq: Some(seq),
            ..item(payload, None)
        }
    }

    #[test]
    fn dropped_tracked_entries_are_reported() {
        let mut queue = SessionQueue::new(limits(1, QueueOverflow::DropOldest), false);
        queue.push(tracked("a", 1));
        queue.push(tracked("b", 2));
        assert_eq!(queue.take_discarded(), [1]);
        let mut queue = SessionQueue::new(limits(1, QueueOverflow::DropNew), false);
        queue.push(tracked("a", 1));
        queue.push(tracked("b", 2));
        assert_eq!(queue.take_discarded(), [2]);
        assert!(queue.take_discarded().is_empty());
    }

    fn drain(queue: &mut SessionQueue) -> Vec<Bytes> {
        let mut expired = 0;
        std::iter::from_fn(|| queue.pop(Instant::now(), &mut expired))
            .map(|i| i.message.payload.clone())
            .collect()
    }

    #[test]
    fn a_worked_off_backlog_gives_its_room_back() {
        let mut queue = SessionQueue::new(limits(10_000, QueueOverflow::Backpressure), false);
        for _ in 0..10_000 {
            assert_eq!(queue.push(item("m", None)), PushOutcome::Queued);
        }
        let grown = queue.window.capacity();
        assert!(grown >= 10_000);
        assert_eq!(drain(&mut queue).len(), 10_000);
        assert!(queue.window.capacity() <= KEEP_CAPACITY);
        // Still a queue of the same capacity afterwards.
        for _ in 0..10_000 {
            assert_eq!(queue.push(item("n", None)), PushOutcome::Queued);
        }
        assert_eq!(queue.push(item("o", None)), PushOutcome::DroppedOldest);
    }

    #[test]
    fn waiting_publishers_are_woken_at_the_resume_level_not_at_every_pop() {
        use std::future::Future as _;
        use std::task::{Context, Waker};

        let mut queue = SessionQueue::new(limits(16, QueueOverflow::Backpressure), false);
        for _ in 0..16 {
            assert!(queue.try_push(item("m", None), Instant::now()).is_ok());
        }
        assert!(queue.try_push(item("x", None), Instant::now()).is_err());
        assert_eq!(queue.resume_level(), 14);
        let room = queue.room();
        let mut notified = std::pin::pin!(room.notified());
        notified.as_mut().enable();
        let mut cx = Context::from_waker(Waker::noop());
        let mut expired = 0;
        assert!(queue.pop(Instant::now(), &mut expired).is_some());
        assert!(notified.as_mut().poll(&mut cx).is_pending());
        assert!(queue.pop(Instant::now(), &mut expired).is_some());
        assert!(notified.as_mut().poll(&mut cx).is_ready());
        // Room for the woken publisher's batch, not for one message.
        assert!(queue.try_push(item("x", None), Instant::now()).is_ok());
        assert!(queue.try_push(item("y", None), Instant::now()).is_ok());
        assert!(queue.try_push(item("z", None), Instant::now()).is_err());
        // A queue of one wakes its waiter once it is empty.
        let one = SessionQueue::new(limits(1, QueueOverflow::Backpressure), false);
        assert_eq!(one.resume_level(), 0);
    }

    #[test]
    fn a_draining_session_makes_publishers_wait_at_the_wait_level() {
        use std::future::Future as _;
        use std::task::{Context, Waker};

        let low = QueueLimits {
            wait_level: 4,
            ..limits(16, QueueOverflow::Backpressure)
        };
        let mut queue = SessionQueue::new(low, false);
        let start = Instant::now();
        // A session that has taken nothing makes publishers wait only at the capacity.
        for _ in 0..8 {
            assert!(queue.try_push(item("m", None), start).is_ok());
        }
        // Once it takes messages, from the wait level on.
        let mut expired = 0;
        assert!(queue.pop(start, &mut expired).is_some());
        assert!(queue.try_push(item("x", None), start).is_err());
        // A session that took nothing for longer than `queue_full_wait` is stalled again.
        let later = start + Duration::from_secs(2);
        assert!(queue.try_push(item("x", None), later).is_ok());
        assert_eq!(queue.len(), 8);
        // Waiters of a draining session wake at the wait level's resume level (3).
        let room = queue.room();
        let mut notified = std::pin::pin!(room.notified());
        notified.as_mut().enable();
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..4 {
            assert!(queue.pop(later, &mut expired).is_some());
        }
        assert!(notified.as_mut().poll(&mut cx).is_pending(), "woken at 4");
        assert!(queue.pop(later, &mut expired).is_some());
        assert!(notified.as_mut().poll(&mut cx).is_ready(), "not woken at 3");
        assert!(queue.try_push(item("y", None), later).is_ok());
        // A wait level above the capacity counts as the capacity.
        let high = QueueLimits {
            wait_level: 100,
            ..limits(2, QueueOverflow::Backpressure)
        };
        let mut queue = SessionQueue::new(high, false);
        assert!(queue.try_push(item("a", None), start).is_ok());
        assert!(queue.pop(start, &mut expired).is_some());
        for _ in 0..2 {
            assert!(queue.try_push(item("b", None), start).is_ok());
        }
        assert!(queue.try_push(item("c", None), start).is_err());
    }

    #[test]
    fn drop_oldest_keeps_the_newest() {
        let mut queue = SessionQueue::new(limits(2, QueueOverflow::DropOldest), false);
        assert_eq!(queue.push(item("a", None)), PushOutcome::Queued);
        assert_eq!(queue.push(item("b", None)), PushOutcome::Queued);
        assert_eq!(queue.push(item("c", None)), PushOutcome::DroppedOldest);
        assert_eq!(drain(&mut queue), ["b", "c"]);
    }

    #[test]
    fn drop_new_keeps_the_oldest() {
        let mut queue = SessionQueue::new(limits(2, QueueOverflow::DropNew), false);
        queue.push(item("a", None));
        queue.push(item("b", None));
        assert_eq!(queue.push(item("c", None)), PushOutcome::DroppedNew);
        assert_eq!(drain(&mut queue), ["a", "b"]);
    }

    #[test]
    fn expired_messages_are_skipped_and_counted() {
        let long_ago = Instant::now().checked_sub(Duration::from_secs(10));
        let Some(received_at) = long_ago else { return };
        let mut queue = SessionQueue::new(limits(10, QueueOverflow::DropOldest), false);
        queue.push(item(
            "old",
            Some(Expiry {
                received_at,
                interval_secs: 5,
            }),
        ));
        queue.push(item(
            "fresh",
            Some(Expiry {
                received_at,
                interval_secs: 60,
            }),
        ));
        let mut expired = 0;
        let next = queue
            .pop(Instant::now(), &mut expired)
            .expect("fresh message");
        assert_eq!(next.message.payload, "fresh");
        assert_eq!(expired, 1);
    }

    /// A model of the log for paging tests: records by seq, some not committed yet.
    #[derive(Default)]
    struct Log {
        records: BTreeMap<Seq, StoredMessage>,
        expired: Vec<Seq>,
        uncommitted: Vec<Seq>,
        reads: usize,
    }

    impl Log {
        fn append(&mut self, seq: Seq) -> QueuedMessage {
            let item = tracked(&format!("m{seq}"), seq);
            self.records
                .insert(seq, item.message.to_stored(Instant::now(), now_millis()));
            item
        }

        /// What `Store::read_queued` does, against the model.
        fn read(&mut self, request: &PageRequest) -> (Vec<QueuedRecord>, Option<Ticket>) {
            self.reads += 1;
            let mut out = Vec::new();
            let mut bytes = 0usize;
            for seq in &request.seqs {
                if bytes >= request.max_bytes && !out.is_empty() {
                    break;
                }
                if self.uncommitted.contains(seq) {
                    return (out, Some(Ticket(7)));
                }
                match self.records.get(seq) {
                    _ if self.expired.contains(seq) => out.push(QueuedRecord::Expired),
                    Some(m) => {
                        bytes += m.payload.len() + request.per_record;
                        out.push(QueuedRecord::Message(Box::new(m.clone())));
                    }
                    None => out.push(QueuedRecord::Gone),
                }
            }
            (out, None)
        }
    }

    /// Pops like `broker::Mailbox::pop`, paging through `log` (bounded); the seq of a
    /// tracked entry, `u64::MAX` for an untracked one.
    fn pop_paged(queue: &mut SessionQueue, log: &mut Log, expired: &mut u64) -> Option<Seq> {
        for _ in 0..1000 {
            if let Some(item) = queue.pop(Instant::now(), expired) {
                return Some(item.seq.unwrap_or(u64::MAX));
            }
            let request = queue.page_request()?;
            let (records, wait_for) = log.read(&request);
            let outcome = queue.install(&request, records, wait_for, Instant::now(), expired);
            if outcome.wait_for.is_some() && outcome.loaded == 0 {
                return None;
            }
        }
        None
    }

    fn paged(window_entries: usize, capacity: usize, backlog: usize) -> SessionQueue {
        let size = item("m0", None).approx_size();
        SessionQueue::new(
            QueueLimits {
                capacity,
                backlog,
                window_bytes: size * window_entries,
                overflow: QueueOverflow::Backpressure,
                wait_level: capacity,
                draining_for: Duration::from_secs(1),
                in_store: false,
            },
            true,
        )
    }

    /// An ending session hands over its loaded shared-subscription entries, in queue order,
    /// from the window and from behind spilled positions; everything else stays queued.
    #[test]
    fn shared_entries_are_taken_in_order_from_window_and_spill() {
        let shared = |payload: &str| QueuedMessage {
            share: Some(Arc::from("$share/g/t")),
            ..item(payload, None)
        };
        let payloads = |items: &[QueuedMessage]| -> Vec<String> {
            items
                .iter()
                .map(|q| String::from_utf8_lossy(&q.message.payload).into_owned())
                .collect()
        };
        let mut queue = SessionQueue::new(limits(10, QueueOverflow::DropNew), false);
        for q in [shared("a"), item("b", None), shared("c")] {
            queue.push(q);
        }
        assert_eq!(payloads(&queue.take_shared()), ["a", "c"]);
        assert_eq!(queue.len(), 1);

        // Paged: a window of one, tracked entries spilled behind it, untracked ones held.
        let mut log = Log::default();
        let mut queue = paged(1, 10, 100);
        queue.push(shared("w"));
        queue.push(log.append(1));
        queue.push(log.append(2));
        queue.push(shared("h1"));
        queue.push(item("h2", None));
        queue.push(shared("h3"));
        assert!(queue.spilled() > 0, "positions behind the window");
        // A tracked shared entry beyond the window stays loaded too.
        let mut beyond = log.append(3);
        beyond.share = Some(Arc::from("$share/g/t"));
        queue.push(beyond);
        let before = queue.len();
        let taken = queue.take_shared();
        assert_eq!(payloads(&taken), ["w", "h1", "h3", "m3"]);
        assert_eq!(taken[3].seq, Some(3));
        assert_eq!(queue.len(), before - 4);
    }

    #[test]
    fn entries_beyond_the_window_are_spilled_and_paged_in_order() {
        let mut log = Log::default();
        let mut queue = paged(4, 10, 100_000);
        for seq in 0..50_000 {
            assert_eq!(queue.push(log.append(seq)), PushOutcome::Queued);
        }
        assert_eq!(queue.len(), 50_000);
        assert_eq!(queue.window.len(), 4);
        assert_eq!(queue.spilled(), 49_996);
        // One run of consecutive positions: one segment, whatever its length.
        assert_eq!(queue.spill.segments.len(), 1);
        let mut expired = 0;
        let got: Vec<Seq> =
            std::iter::from_fn(|| pop_paged(&mut queue, &mut log, &mut expired)).collect();
        assert_eq!(got, (0..50_000).collect::<Vec<_>>());
        assert!(queue.is_empty());
        // Pages of the window's size (4 entries here), one read each.
        assert!(
            (49_996 / 5..=49_996 / 4 + 2).contains(&log.reads),
            "{} reads",
            log.reads
        );
        assert!(queue.take_discarded().is_empty());
    }

    #[test]
    fn entries_behind_the_spill_stay_loaded_while_the_window_has_room() {
        let mut log = Log::default();
        let mut queue = paged(4, 100, 1000);
        for seq in 0..6 {
            queue.push(log.append(seq));
        }
        assert_eq!(queue.spilled(), 2);
        let mut expired = 0;
        let mut got: Vec<Seq> = (0..3)
            .filter_map(|_| pop_paged(&mut queue, &mut log, &mut expired))
            .collect();
        // One entry loaded: room for three more, kept in memory behind the spilled two.
        for seq in 6..10 {
            queue.push(log.append(seq));
        }
        assert_eq!(
            queue.spilled(),
            3,
            "4 and 5, then 9 beyond the window's bytes"
        );
        got.extend(std::iter::from_fn(|| {
            pop_paged(&mut queue, &mut log, &mut expired)
        }));
        assert_eq!(got, (0..10).collect::<Vec<_>>());
        assert_eq!(log.reads, 2, "one page for 4 and 5, one for 9");
    }

    #[test]
    fn pushes_while_a_page_is_read_stay_behind_it() {
        let mut log = Log::default();
        let mut queue = paged(2, 10, 1000);
        for seq in 0..6 {
            queue.push(log.append(seq));
        }
        let mut expired = 0;
        assert_eq!(pop_paged(&mut queue, &mut log, &mut expired), Some(0));
        assert_eq!(pop_paged(&mut queue, &mut log, &mut expired), Some(1));
        let request = queue.page_request().expect("front is spilled");
        assert_eq!(request.seqs, [2, 3, 4, 5]);
        // A publisher pushes while the read runs without the lock.
        queue.push(log.append(6));
        queue.push(item("qos0-like", None));
        let (records, wait_for) = log.read(&request);
        queue.install(&request, records, wait_for, Instant::now(), &mut expired);
        let mut rest = Vec::new();
        while let Some(seq) = pop_paged(&mut queue, &mut log, &mut expired) {
            rest.push(seq);
        }
        // The untracked entry came last, from memory.
        assert_eq!(rest, [2, 3, 4, 5, 6, u64::MAX]);
    }

    #[test]
    fn gone_and_expired_positions_are_discarded_and_counted() {
        let mut log = Log::default();
        let mut queue = paged(1, 10, 1000);
        for seq in 0..5 {
            queue.push(log.append(seq));
        }
        log.records.remove(&2);
        log.expired.push(3);
        let mut expired = 0;
        let got: Vec<Seq> =
            std::iter::from_fn(|| pop_paged(&mut queue, &mut log, &mut expired)).collect();
        assert_eq!(got, [0, 1, 4]);
        assert_eq!(expired, 1);
        let mut discarded = queue.take_discarded();
        discarded.sort_unstable();
        assert_eq!(discarded, [2, 3]);
    }

    #[test]
    fn an_uncommitted_position_stalls_until_its_ticket_resolves() {
        let mut log = Log::default();
        let mut queue = paged(1, 10, 1000);
        for seq in 0..3 {
            queue.push(log.append(seq));
        }
        log.uncommitted.push(1);
        let mut expired = 0;
        assert_eq!(pop_paged(&mut queue, &mut log, &mut expired), Some(0));
        // Not committed yet: nothing is dropped, the queue waits.
        assert_eq!(pop_paged(&mut queue, &mut log, &mut expired), None);
        assert_eq!(queue.len(), 2);
        let request = queue.page_request().expect("still spilled");
        assert_eq!(request.settled, Some((1, Ticket(7))));
        queue.abandon_page();
        log.uncommitted.clear();
        let rest: Vec<Seq> =
            std::iter::from_fn(|| pop_paged(&mut queue, &mut log, &mut expired)).collect();
        assert_eq!(rest, [1, 2]);
        assert!(queue.take_discarded().is_empty());
    }

    #[test]
    fn connected_publishers_wait_at_capacity_but_the_backlog_grows_to_its_cap() {
        let mut log = Log::default();
        let mut queue = paged(2, 3, 5);
        for seq in 0..3 {
            assert!(queue.try_push(log.append(seq), Instant::now()).is_ok());
        }
        assert!(queue.try_push(log.append(3), Instant::now()).is_err());
        // After a vain wait (or offline) the store keeps it, up to the backlog cap.
        assert_eq!(queue.push(log.append(3)), PushOutcome::Queued);
        assert_eq!(queue.push(log.append(4)), PushOutcome::Queued);
        assert_eq!(queue.push(log.append(5)), PushOutcome::DroppedOldest);
        assert_eq!(queue.take_discarded(), [0]);
        let mut expired = 0;
        let got: Vec<Seq> =
            std::iter::from_fn(|| pop_paged(&mut queue, &mut log, &mut expired)).collect();
        assert_eq!(got, [1, 2, 3, 4, 5]);
    }

    /// `queue_in_store`: publishers do not wait for a paged queue's messages the store
    /// holds until the backlog cap; messages the store does not hold still wait as before.
    #[test]
    fn in_store_publishers_wait_only_at_the_backlog_cap() {
        let mut log = Log::default();
        let mut queue = SessionQueue::new(
            QueueLimits {
                in_store: true,
                ..paged(2, 3, 6).limits
            },
            true,
        );
        let now = Instant::now();
        for seq in 0..6 {
            assert!(queue.try_push(log.append(seq), now).is_ok(), "{seq}");
        }
        assert!(
            queue.try_push(log.append(6), now).is_err(),
            "at the backlog cap"
        );
        assert!(queue.spilled() > 0, "beyond the window as positions");
        assert!(
            queue.try_push(item("not stored", None), now).is_err(),
            "past max_queued_messages"
        );
        let mut expired = 0;
        let got: Vec<Seq> =
            std::iter::from_fn(|| pop_paged(&mut queue, &mut log, &mut expired)).collect();
        assert_eq!(got, [0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn recovered_positions_and_mixed_deliveries_page_in_with_their_details() {
        let mut log = Log::default();
        let mut queue = paged(2, 10, 1000);
        for seq in [3, 4, 9, 10] {
            log.append(seq);
            let delivery = DeliveryInfo {
                qos: if seq < 9 {
                    QoS::AtLeastOnce
                } else {
                    QoS::ExactlyOnce
                },
                retain: false,
                subscription_ids: if seq == 10 { vec![7] } else { Vec::new() },
            };
            assert_eq!(queue.push_stored(seq, delivery), PushOutcome::Queued);
        }
        assert_eq!(queue.spill.segments.len(), 3);
        assert_eq!(queue.spill.deliveries.len(), 3);
        let mut expired = 0;
        let mut got = Vec::new();
        for _ in 0..4 {
            let item = loop {
                if let Some(item) = queue.pop(Instant::now(), &mut expired) {
                    break item;
                }
                let request = queue.page_request().expect("spilled");
                let (records, wait_for) = log.read(&request);
                queue.install(&request, records, wait_for, Instant::now(), &mut expired);
            };
            got.push((item.seq, item.qos, item.subscription_ids));
        }
        assert_eq!(
            got,
            [
                (Some(3), QoS::AtLeastOnce, vec![]),
                (Some(4), QoS::AtLeastOnce, vec![]),
                (Some(9), QoS::ExactlyOnce, vec![]),
                (Some(10), QoS::ExactlyOnce, vec![7]),
            ]
        );
        assert!(queue.spill.deliveries.is_empty());
    }

    #[test]
    fn going_offline_drops_held_qos0_entries_only() {
        let mut log = Log::default();
        let mut queue = paged(1, 10, 1000);
        queue.push(log.append(0));
        queue.push(log.append(1));
        let mut qos0 = item("q0", None);
        qos0.qos = QoS::AtMostOnce;
        queue.push(qos0);
        queue.push(log.append(2));
        assert_eq!(queue.len(), 4);
        queue.retain_qos_above_zero();
        assert_eq!(queue.len(), 3);
        let mut expired = 0;
        let got: Vec<Seq> =
            std::iter::from_fn(|| pop_paged(&mut queue, &mut log, &mut expired)).collect();
        assert_eq!(got, [0, 1, 2]);
    }
}
