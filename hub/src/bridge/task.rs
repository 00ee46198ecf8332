//! The task of one bridge: reads the log from the bridge's cursor, selects, publishes
//! upstream through its window, moves the cursor over what the upstream acknowledged, and
//! handles connection loss by replaying from the cursor.
//!
//! # Lanes
//!
//! The log is read through [`Lane`]s: normally one, `Live`, following the log in order.
//! With `replay = "live-first"` a reconnect with a backlog turns it into a `Replay` lane
//! ending where the backlog ended, and a new `Live` lane sends what arrives from then on
//! first; the replay gets the rest of the window (at most three quarters of it) and its
//! units carry the replay marker. A link lost again during a replay keeps both lanes:
//! the replay goes on where it was; the messages of the second outage are sent in order
//! before newer ones. Each lane keeps its own `tern-prev` / `prev_seq` chain.
//!
//! # Invariants
//!
//! - The cursor is the replay lane's cursor while there is one (its range lies below the
//!   live lane's), else the live lane's; it never moves back.
//! - Nothing is published while the link is not [`Link::Up`]. A lost connection puts each
//!   lane's unacknowledged publishes, and what it loaded behind them, back into its ledger
//!   ([`Lane::unload`]), so the next connection resends them in order.
//! - Durable state: the cursor (`bridge:<name>`), and during a live-first replay the
//!   replay's end (`bridge:<name>/split`) and the live lane's cursor (`bridge:<name>/live`).
//!   After a crash the replay resumes on `[cursor, split)` and the live lane at its cursor:
//!   what both had not acknowledged is sent again with the same ids.
//!
//! # Outbox bound
//!
//! The backlog (window + lanes) is known in messages, bytes and age. Beyond
//! `outbox.max_bytes` the bridge gives up its oldest messages until the backlog is back at
//! 90 % of the bound; messages older than `outbox.max_age` are given up too. It does so with
//! nothing in flight (it stops publishing until the window is empty), moving the cursor
//! past them; the lane's next unit then starts after the hole, so consumers see a gap.
//! Messages the store no longer holds when the bridge loads them (trimmed or expired) are
//! counted as `trimmed`, and a trim shows as a gap the same way.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rumqttc::v5::mqttbytes::v5::PublishProperties;
use tokio::time::sleep_until;
use tracing::{debug, info, warn};

use super::config::{BridgeConfig, Mode, OutboxBound, ReplayPolicy};
use super::envelope;
use super::lane::Lane;
use super::outbox::Segment;
use super::select::{Forward, Selector};
use super::status::BridgeStatus;
use super::upstream::{Publication, UpEvent, Upstream};
use super::window::{Covered, LaneId, Window};
use crate::shutdown::Shutdown;
use crate::store::{Seq, Store, StoredMessage, Ticket, WriteOp, now_millis};

/// Log entries read back at start-up to find where a resumed stream continues.
const CHAIN_SCAN: u64 = 65_536;
/// Messages read from the log at a time (more in envelope mode when batches are bigger).
const READ_CHUNK: usize = 4096;
/// The cursor is written to the store at most this often while it moves (and at shutdown).
const PERSIST_EVERY: Duration = Duration::from_millis(100);
/// Period of the summary line (while disconnected or behind) and of the stall check.
const SUMMARY_EVERY: Duration = Duration::from_secs(30);
/// A connected bridge with publishes in flight and no acknowledgement for this long is
/// reported as stalled.
const STALL_AFTER: Duration = Duration::from_secs(60);
/// Wait after a failed log read before trying again.
const READ_RETRY: Duration = Duration::from_secs(1);
/// Upstream events handled per wake-up before the loop looks at anything else.
const EVENT_BURST: usize = 512;
/// How long shutdown waits for the final cursor to be durable, and for DISCONNECT.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// Messages given up or lost are logged at most this often (summed in between).
const LOSS_LOG_EVERY: Duration = Duration::from_secs(10);

/// What one log read returned.
struct Read {
    entries: Vec<(Seq, StoredMessage)>,
    /// One past the last record examined (`from` when there was none).
    next: Seq,
    /// The store's first log position right after the read: below it, everything is gone.
    head: Seq,
}

/// Losses since the last log line (rate-limited logging).
#[derive(Debug, Default)]
struct LossLog {
    last: Option<Instant>,
    dropped: u64,
    dropped_bytes: u64,
    trimmed: u64,
}

/// Where a bridge starts: its cursor, and a live-first replay to resume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Resume {
    /// The durable cursor.
    pub cursor: Seq,
    /// `(split, live)`: the replay covers `[cursor, split)`, the live lane resumes at
    /// `live`.
    pub replay: Option<(Seq, Seq)>,
    /// The bridge has a stored cursor (its stream continues).
    pub resumed: bool,
}

/// The durable state last submitted to the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Durable {
    cursor: Seq,
    replay: Option<(Seq, Seq)>,
}

/// State of the upstream link as the bridge sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    /// Never connected yet.
    Starting,
    /// Connected: publishing.
    Up,
    /// The bridge asked for a disconnect (out-of-step client, refused message); waiting
    /// for the connection to close.
    Closing,
    /// Lost; the driver retries after the backoff.
    Down,
}

/// Exponential backoff with jitter.
#[derive(Debug)]
struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
    /// xorshift state for the jitter (no need for a real RNG).
    seed: u64,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Self {
        let seed = now_millis() | 1;
        Self {
            min,
            max,
            next: min,
            seed,
        }
    }

    /// The delay before the next attempt: the current step ±25 %; the step then doubles up
    /// to `max`. A connection that made progress starts over from `min`.
    fn delay(&mut self, progressed: bool) -> Duration {
        if progressed {
            self.next = self.min;
        }
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        // Jitter in [0.75, 1.25).
        let permille = 750 + self.seed % 500;
        base * u32::try_from(permille).unwrap_or(1000) / 1000
    }
}

/// One bridge's task state.
#[derive(Debug)]
pub(super) struct BridgeTask {
    pub(super) cfg: Arc<BridgeConfig>,
    /// Key of the durable cursor in the store.
    pub(super) cursor_key: String,
    pub(super) selector: Selector,
    pub(super) store: Store,
    pub(super) status: Arc<BridgeStatus>,
    pub(super) stop: Shutdown,
    pub(super) upstream: Upstream,
    window: Window,
    /// The lane following the log.
    live: Lane,
    /// A live-first replay draining behind `live`.
    replay: Option<Lane>,
    /// The outbox bound in force.
    bound: OutboxBound,
    /// Over the byte bound: giving up messages until back at 90 % of it.
    giving_up: bool,
    /// Over the bound with publishes in flight: publish nothing until the window is empty.
    holding: bool,
    loss_log: LossLog,
    /// No read before this instant (after a failed read).
    read_retry: Option<Instant>,
    /// The durable state last submitted to the store.
    persisted: Durable,
    last_persist: Instant,
    link: Link,
    backoff: Backoff,
    /// Something was acknowledged on the current connection.
    progressed: bool,
    /// When the bridge last saw an acknowledgement (or connected).
    last_progress: Instant,
    /// A stall was reported and not yet cleared.
    stalled: bool,
    /// When the link went down (for the log line on recovery).
    down_since: Option<Instant>,
    /// The bridge resumes from a stored cursor (its stream continues).
    resumed: bool,
    /// `envelope` mode: upstream topic of envelopes.
    envelope_topic: String,
}

impl BridgeTask {
    /// A task starting from `resume` (already persisted).
    pub(super) fn new(
        cfg: Arc<BridgeConfig>,
        store: Store,
        status: Arc<BridgeStatus>,
        stop: Shutdown,
        upstream: Upstream,
        resume: Resume,
    ) -> Self {
        let selector = Selector::new(&cfg.name, &cfg.topics, &cfg.remote_prefix);
        let backoff = Backoff::new(cfg.reconnect.min.0, cfg.reconnect.max.0);
        let envelope_topic = cfg.envelope_topic();
        let store_cfg = store.config();
        let bound = cfg.outbox.resolve(store_cfg.max_bytes, store_cfg.max_age);
        let (live, replay) = match resume.replay {
            Some((split, live)) => (
                Lane::new(LaneId::Live, live, None),
                Some(Lane::new(LaneId::Replay, resume.cursor, Some(split))),
            ),
            None => (Lane::new(LaneId::Live, resume.cursor, None), None),
        };
        Self {
            cursor_key: super::cursor_key(&cfg.name),
            selector,
            store,
            status,
            stop,
            upstream,
            window: Window::new(),
            live,
            replay,
            bound,
            giving_up: false,
            holding: false,
            loss_log: LossLog::default(),
            read_retry: None,
            persisted: Durable {
                cursor: resume.cursor,
                replay: resume.replay,
            },
            last_persist: Instant::now(),
            link: Link::Starting,
            backoff,
            progressed: false,
            last_progress: Instant::now(),
            stalled: false,
            down_since: None,
            resumed: resume.resumed,
            envelope_topic,
            cfg,
        }
    }

    fn name(&self) -> &str {
        &self.cfg.name
    }

    /// Messages read per chunk.
    fn chunk(&self) -> usize {
        match self.cfg.mode {
            Mode::Each => READ_CHUNK,
            Mode::Envelope => READ_CHUNK.max(self.cfg.batch.max_messages * 2),
        }
    }

    /// Read more once `pending` is below this.
    fn low_water(&self) -> usize {
        let window = usize::from(self.cfg.inflight());
        match self.cfg.mode {
            Mode::Each => READ_CHUNK.max(window),
            Mode::Envelope => READ_CHUNK.max(self.cfg.batch.max_messages * 2),
        }
    }

    fn lane(&self, id: LaneId) -> Option<&Lane> {
        match id {
            LaneId::Live => Some(&self.live),
            LaneId::Replay => self.replay.as_ref(),
        }
    }

    fn lane_mut(&mut self, id: LaneId) -> Option<&mut Lane> {
        match id {
            LaneId::Live => Some(&mut self.live),
            LaneId::Replay => self.replay.as_mut(),
        }
    }

    /// The cursor: the first log position not known to be forwarded.
    fn done(&self) -> Seq {
        match &self.replay {
            Some(replay) => replay
                .cursor(&self.window)
                .min(self.live.cursor(&self.window)),
            None => self.live.cursor(&self.window),
        }
    }

    /// The durable state now.
    fn durable(&self) -> Durable {
        Durable {
            cursor: self.done(),
            replay: self
                .replay
                .as_ref()
                .and_then(|r| r.end)
                .map(|end| (end, self.live.cursor(&self.window))),
        }
    }

    fn may_read(&self, now: Instant) -> bool {
        self.read_retry.is_none_or(|t| now >= t)
    }

    /// Lane `id`'s `pending` runs low and there is something to load: from its ledger, or
    /// by counting new entries straight into `pending`.
    fn wants_fill(&self, id: LaneId, now: Instant) -> bool {
        self.lane(id).is_some_and(|lane| {
            lane.pending.len() < self.low_water() && (!lane.ledger.is_empty() || lane.more)
        }) && self.may_read(now)
    }

    /// A lane's `pending` is full and the log has entries of it not counted yet: count them
    /// into its ledger (one chunk per turn of the loop, between upstream events).
    fn scan_ahead_lane(&self, now: Instant) -> Option<LaneId> {
        if !self.may_read(now) {
            return None;
        }
        [LaneId::Replay, LaneId::Live].into_iter().find(|&id| {
            self.lane(id)
                .is_some_and(|lane| lane.more && lane.pending.len() >= self.low_water())
        })
    }

    /// Where the stream continues before `cursor`: the last message the bridge forwarded
    /// before it (found by reading back at most [`CHAIN_SCAN`] log entries), else the entry
    /// right before it. A new bridge starts a stream (`None`).
    async fn find_chain(&self, cursor: Seq) -> Option<Seq> {
        if !self.resumed || cursor == 0 {
            return None;
        }
        let store = self.store.clone();
        let selector = self.selector.clone();
        let scan = tokio::task::spawn_blocking(move || {
            let mut pos = cursor.saturating_sub(CHAIN_SCAN).max(store.head());
            let mut last = None;
            let mut buf = Vec::new();
            while pos < cursor {
                let max = usize::try_from(cursor - pos)
                    .unwrap_or(usize::MAX)
                    .min(READ_CHUNK);
                let Ok(next) = store.read_log(pos, max, &mut buf) else {
                    break;
                };
                for (seq, message) in buf.drain(..) {
                    if seq < cursor && selector.select(seq, message).is_some() {
                        last = Some(seq);
                    }
                }
                if next <= pos {
                    break;
                }
                pos = next;
            }
            last
        })
        .await;
        scan.ok().flatten().or(Some(cursor - 1))
    }

    /// Runs until its stop handle is triggered (the hub shuts down, or a reload stops or
    /// restarts the bridge). Returns where a restarted bridge resumes: the durable state
    /// it saved on the way out.
    pub(super) async fn run(mut self) -> Resume {
        if let Some(replay) = &self.replay {
            let from = replay.fill_pos;
            let chain = self.find_chain(from).await;
            if let Some(replay) = &mut self.replay {
                replay.chain_prev = chain;
            }
            info!(
                bridge = self.name(),
                cursor = from,
                split = replay_end(self.replay.as_ref()),
                live = self.live.fill_pos,
                "bridge resuming a live-first replay"
            );
        }
        self.live.chain_prev = self.find_chain(self.live.fill_pos).await;
        let mut committed = self.store.committed();
        let mut summary =
            tokio::time::interval_at(tokio::time::Instant::now() + SUMMARY_EVERY, SUMMARY_EVERY);
        summary.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if self.stop.is_triggered() {
                break;
            }
            let now = Instant::now();
            if self.wants_fill(LaneId::Live, now) {
                if self.live.ledger.is_empty() {
                    // Marked seen before reading: a commit after this point wakes us again.
                    committed.borrow_and_update();
                }
                self.fill(LaneId::Live).await;
            }
            if self.wants_fill(LaneId::Replay, Instant::now()) {
                self.fill(LaneId::Replay).await;
            }
            self.enforce_bound();
            self.publish_ready().await;
            self.advance().await;
            let now = Instant::now();
            if self.wants_fill(LaneId::Live, now) || self.wants_fill(LaneId::Replay, now) {
                continue;
            }
            let scan_ahead = self.scan_ahead_lane(now);
            let persist_at =
                (self.durable() != self.persisted).then(|| self.last_persist + PERSIST_EVERY);
            let linger_at = self.linger_deadline();
            let retry_at = self.read_retry;
            tokio::select! {
                () = self.stop.triggered() => break,
                event = self.upstream.events.recv() => {
                    let Some(event) = event else {
                        warn!(bridge = self.name(), "bridge upstream driver ended");
                        break;
                    };
                    self.on_event(event).await;
                    for _ in 0..EVENT_BURST {
                        match self.upstream.events.try_recv() {
                            Ok(event) => self.on_event(event).await,
                            Err(_) => break,
                        }
                    }
                }
                changed = committed.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    self.live.more = true;
                }
                () = sleep_at(persist_at), if persist_at.is_some() => {}
                () = sleep_at(linger_at), if linger_at.is_some() => {}
                () = sleep_at(retry_at), if retry_at.is_some() => {
                    self.read_retry = None;
                }
                _ = summary.tick() => self.summary(),
                () = std::future::ready(()), if scan_ahead.is_some() => {
                    if scan_ahead == Some(LaneId::Live) {
                        committed.borrow_and_update();
                    }
                    if let Some(id) = scan_ahead {
                        self.scan(id, false).await;
                    }
                }
            }
        }
        self.shutdown().await
    }

    /// Reads up to `max` log records from `from`, and the log's head after the read.
    async fn read(&mut self, from: Seq, max: usize) -> Option<Read> {
        let store = self.store.clone();
        let read = tokio::task::spawn_blocking(move || {
            let mut entries = Vec::with_capacity(max.min(READ_CHUNK));
            store.read_log(from, max, &mut entries).map(|next| Read {
                entries,
                next,
                head: store.head(),
            })
        })
        .await;
        match read {
            Ok(Ok(read)) => {
                self.read_retry = None;
                Some(read)
            }
            Ok(Err(err)) => {
                warn!(bridge = self.name(), cause = %err, "bridge cannot read the log; retrying");
                self.read_retry = Some(Instant::now() + READ_RETRY);
                None
            }
            Err(err) => {
                warn!(bridge = self.name(), cause = %err, "bridge log read failed; retrying");
                self.read_retry = Some(Instant::now() + READ_RETRY);
                None
            }
        }
    }

    /// Loads more into lane `id`'s `pending`: its ledger's oldest stretch, or new entries.
    async fn fill(&mut self, id: LaneId) {
        let Some(lane) = self.lane(id) else {
            return;
        };
        match lane.ledger.front().copied() {
            Some(front) => self.refill(id, front).await,
            None => self.scan(id, true).await,
        }
    }

    /// Loads lane `id`'s oldest ledger stretch (`front`, starting at its `fill_pos`).
    async fn refill(&mut self, id: LaneId, front: Segment) {
        let Some(from) = self.lane(id).map(|l| l.fill_pos) else {
            return;
        };
        let max = self.chunk();
        let Some(read) = self.read(from, max).await else {
            return;
        };
        let selector = self.selector.clone();
        let Some(lane) = self.lane_mut(id) else {
            return;
        };
        // Positions below the head are gone: the first message loaded follows a loss.
        lane.gap_next |= read.head > from;
        let (mut found, mut found_bytes) = (0u64, 0u64);
        for (seq, message) in read.entries {
            if seq >= front.end {
                break;
            }
            if let Some(forward) = selector.select(seq, message) {
                found += 1;
                found_bytes += forward.size() as u64;
                lane.push_pending(forward);
            }
        }
        let mut reached = read.next.max(read.head);
        if reached <= from {
            // Nothing at or after `from` any more: the whole stretch is gone.
            reached = front.end;
        }
        let refilled = lane.ledger.refilled(reached, found, found_bytes);
        lane.fill_pos = if refilled.complete {
            front.end
        } else {
            reached
        };
        if refilled.missing > 0 {
            self.lost(refilled.missing);
        }
    }

    /// Counts the next chunk of lane `id` from its `scan_pos`: into `pending` (`load`, with
    /// an empty ledger), or into the ledger.
    async fn scan(&mut self, id: LaneId, load: bool) {
        let Some((from, end)) = self.lane(id).map(|l| (l.scan_pos, l.end)) else {
            return;
        };
        let max = self.chunk();
        let Some(read) = self.read(from, max).await else {
            return;
        };
        let selector = self.selector.clone();
        let Some(lane) = self.lane_mut(id) else {
            return;
        };
        // Seqs may have gaps, so a span of `max` or more may hold fewer than `max` entries:
        // read again until a read comes back short of its span.
        let full = read.next > from && read.next - from >= u64::try_from(max).unwrap_or(u64::MAX);
        let mut reached = read.next.max(read.head).max(from);
        match end {
            // A replay lane ends at `end`; a short read means nothing else exists below it.
            Some(end) => {
                if !full || reached >= end {
                    reached = end;
                }
                lane.more = reached < end;
            }
            None => lane.more = full,
        }
        let lost = read.head.min(reached).saturating_sub(from);
        if lost > 0 {
            // Loaded now: the next message follows the hole. Counted into the ledger: its
            // refill sees the head past its start and marks the gap then.
            lane.gap_next |= load;
        }
        let load = load && lane.ledger.is_empty();
        let mut segment = Segment {
            first: from,
            end: reached,
            messages: 0,
            bytes: 0,
            oldest_ms: 0,
            last_seq: from,
        };
        for (seq, message) in read.entries {
            if seq >= reached {
                break;
            }
            if let Some(forward) = selector.select(seq, message) {
                if load {
                    lane.push_pending(forward);
                } else {
                    if segment.messages == 0 {
                        segment.oldest_ms = forward.message.received_ms;
                    }
                    segment.messages += 1;
                    segment.bytes += forward.size() as u64;
                    segment.last_seq = seq;
                }
            }
        }
        lane.scan_pos = reached;
        if load {
            lane.fill_pos = reached;
        } else if reached > from {
            let span = u64::try_from(max).unwrap_or(u64::MAX);
            lane.ledger.push_back(segment, span);
        }
        if lost > 0 {
            // Trimmed before the bridge counted them: log positions, an upper bound of the
            // messages of this bridge among them.
            self.lost(lost);
        }
    }

    /// Counts `n` messages the store no longer held when the bridge came to them.
    fn lost(&mut self, n: u64) {
        self.status.trimmed.fetch_add(n, Ordering::Relaxed);
        self.loss_log.trimmed += n;
        self.log_losses(false);
    }

    /// The backlog's oldest reception time (Unix ms), 0 if nothing waits.
    fn oldest_ms(&self) -> u64 {
        let lanes = [self.replay.as_ref(), Some(&self.live)];
        self.window
            .front()
            .map(|c| c.received_ms)
            .into_iter()
            .chain(lanes.into_iter().flatten().map(Lane::oldest_ms))
            .filter(|&ms| ms != 0)
            .min()
            .unwrap_or(0)
    }

    /// Messages and bytes waiting (window and lanes).
    fn waiting(&self) -> (u64, u64) {
        let (mut messages, mut bytes) = (self.window.messages(), self.window.bytes());
        for lane in [self.replay.as_ref(), Some(&self.live)]
            .into_iter()
            .flatten()
        {
            let (m, b) = lane.waiting();
            messages += m;
            bytes += b;
        }
        (messages, bytes)
    }

    /// Applies the outbox bound: gives up the oldest messages while the backlog is over it.
    fn enforce_bound(&mut self) {
        let (_, total) = self.waiting();
        if total > self.bound.max_bytes {
            self.giving_up = true;
        }
        let cutoff = now_millis()
            .saturating_sub(u64::try_from(self.bound.max_age.as_millis()).unwrap_or(u64::MAX));
        let oldest = self.oldest_ms();
        let too_old = oldest != 0 && oldest < cutoff;
        if !self.giving_up && !too_old {
            self.holding = false;
            return;
        }
        if !self.window.is_empty() {
            // Give up nothing in flight: wait for the window to empty.
            self.holding = true;
            return;
        }
        self.holding = false;
        let target = self.bound.max_bytes - self.bound.max_bytes / 10;
        let giving_up = self.giving_up;
        let (mut dropped, mut dropped_bytes) = (0u64, 0u64);
        // Oldest first: the replay lane, then the live lane once the replay is gone.
        for id in [LaneId::Replay, LaneId::Live] {
            let others = match id {
                LaneId::Replay => self.live.waiting().1,
                LaneId::Live => {
                    if self.replay.as_ref().is_some_and(Lane::has_backlog) {
                        break;
                    }
                    0
                }
            };
            let Some(lane) = self.lane_mut(id) else {
                continue;
            };
            let (d, b) = lane.give_up(
                |received_ms, waiting| {
                    (giving_up && waiting + others > target) || received_ms < cutoff
                },
                |front, next, waiting| {
                    front.messages == 0
                        || (giving_up && waiting + others - front.bytes >= target)
                        || next.is_some_and(|n| n.messages > 0 && n.oldest_ms < cutoff)
                },
            );
            if d > 0 {
                // The lane's next unit starts after the hole, so consumers see a gap.
                let cursor = lane.pending.front().map_or(lane.fill_pos, |f| f.seq);
                lane.chain_prev = lane.chain_prev.max(cursor.checked_sub(1));
            }
            dropped += d;
            dropped_bytes += b;
        }
        if self.waiting().1 <= target {
            self.giving_up = false;
        }
        if dropped == 0 {
            return;
        }
        self.status.dropped.fetch_add(dropped, Ordering::Relaxed);
        self.status
            .dropped_bytes
            .fetch_add(dropped_bytes, Ordering::Relaxed);
        self.loss_log.dropped += dropped;
        self.loss_log.dropped_bytes += dropped_bytes;
        self.log_losses(false);
    }

    /// Logs the losses summed since the last line, at most every [`LOSS_LOG_EVERY`]
    /// (`force`: whatever is pending, at the periodic summary).
    fn log_losses(&mut self, force: bool) {
        let l = &self.loss_log;
        if l.dropped == 0 && l.trimmed == 0 {
            return;
        }
        if !force && l.last.is_some_and(|t| t.elapsed() < LOSS_LOG_EVERY) {
            return;
        }
        warn!(
            bridge = self.name(),
            dropped = l.dropped,
            dropped_bytes = l.dropped_bytes,
            trimmed = l.trimmed,
            max_bytes = self.bound.max_bytes,
            max_age_s = self.bound.max_age.as_secs(),
            dropped_total = self.status.dropped.load(Ordering::Relaxed),
            trimmed_total = self.status.trimmed.load(Ordering::Relaxed),
            "bridge lost messages before forwarding them: dropped = outbox bound exceeded, trimmed = gone from the store"
        );
        self.loss_log = LossLog {
            last: Some(Instant::now()),
            ..LossLog::default()
        };
    }

    /// The window has room for one more publish.
    fn room(&self) -> bool {
        self.link == Link::Up
            && !self.holding
            && self.window.len() < usize::from(self.cfg.inflight())
    }

    /// The lane to publish from next: live first; the replay while it holds less than
    /// three quarters of the window.
    fn next_lane(&self) -> Option<LaneId> {
        if !self.live.pending.is_empty() {
            return Some(LaneId::Live);
        }
        self.replay
            .as_ref()
            .filter(|r| !r.pending.is_empty())
            .filter(|_| self.replay_has_room())
            .map(|_| LaneId::Replay)
    }

    /// Publishes what the window has room for.
    async fn publish_ready(&mut self) {
        match self.cfg.mode {
            Mode::Each => self.publish_each().await,
            Mode::Envelope => self.publish_envelopes().await,
        }
    }

    async fn publish_each(&mut self) {
        while self.room() {
            let Some(id) = self.next_lane() else {
                break;
            };
            let Some(lane) = self.lane_mut(id) else {
                break;
            };
            let Some(forward) = lane.pop_pending() else {
                break;
            };
            if forward.gap_before {
                lane.chain_prev = lane.chain_prev.max(forward.seq.checked_sub(1));
            }
            let prev = lane.chain_prev;
            let covered = Covered {
                lane: id,
                prev,
                last: forward.seq,
                first: forward.seq,
                end: forward.seq + 1,
                messages: 1,
                bytes: forward.size() as u64,
                received_ms: forward.message.received_ms,
            };
            let publication = self.publication(forward, prev, id == LaneId::Replay);
            if let Err(err) = self.upstream.publish(publication).await {
                // The message is gone with the request: keep the cursor before it.
                if let Some(lane) = self.lane_mut(id) {
                    lane.retry_from = Some(covered.first);
                }
                self.client_gone(&err.to_string());
                return;
            }
            if let Some(lane) = self.lane_mut(id) {
                lane.chain_prev = Some(covered.first);
            }
            self.window.push(covered);
        }
    }

    /// The upstream PUBLISH of one message (`each` mode); it covers `(prev, seq]`.
    fn publication(&self, forward: Forward, prev: Option<Seq>, replay: bool) -> Publication {
        let Forward { seq, message, .. } = forward;
        let mut properties = PublishProperties::default();
        if self.upstream.has_properties() {
            let now_ms = now_millis();
            let p = message.properties;
            properties.payload_format_indicator = p.payload_format_indicator;
            properties.content_type = p.content_type;
            properties.response_topic = p.response_topic;
            properties.correlation_data = p.correlation_data;
            properties.message_expiry_interval = message.expires_ms.map(|e| {
                u32::try_from(e.saturating_sub(now_ms).div_ceil(1000))
                    .unwrap_or(u32::MAX)
                    .max(1)
            });
            properties.user_properties = p.user_properties;
            let id = tern_envelope::MessageId::new(self.cfg.gateway_id(), seq);
            properties
                .user_properties
                .extend(tern_envelope::each::properties(&id, prev));
            if replay {
                properties
                    .user_properties
                    .push(tern_envelope::each::replay_property());
            }
        }
        Publication {
            topic: message.topic,
            payload: message.payload,
            retain: message.retain,
            properties,
        }
    }

    /// When a partial envelope must go out, if one is waiting.
    fn linger_deadline(&self) -> Option<Instant> {
        if self.cfg.mode != Mode::Envelope || !self.room() {
            return None;
        }
        [Some(&self.live), self.replay.as_ref()]
            .into_iter()
            .flatten()
            .filter(|l| !l.pending.is_empty())
            .filter_map(|l| l.batch_started)
            .map(|t| t + self.cfg.batch.linger.0)
            .min()
    }

    /// Messages of lane `lane`'s next envelope, and whether it is complete (full, or more
    /// is ready behind it).
    fn batch_extent(&self, lane: &Lane) -> (usize, bool) {
        let max_messages = self.cfg.batch.max_messages;
        let max_bytes = usize::try_from(self.cfg.batch.max_bytes.0).unwrap_or(usize::MAX);
        let mut bytes = 0;
        let mut count = 0;
        for forward in &lane.pending {
            if count == max_messages
                || (count > 0 && (bytes + forward.size() > max_bytes || forward.gap_before))
            {
                return (count, true);
            }
            bytes += forward.size();
            count += 1;
        }
        (count, count == max_messages || bytes >= max_bytes)
    }

    /// Whether the replay may take one more slot of the window.
    fn replay_has_room(&self) -> bool {
        let inflight = usize::from(self.cfg.inflight());
        self.window.lane_slots(LaneId::Replay) < (inflight - inflight / 4).max(1)
    }

    /// The size of lane `id`'s next envelope if it should go out now: complete, or partial
    /// with the lane caught up and its linger over.
    fn ready_batch(&mut self, id: LaneId) -> Option<usize> {
        let lane = self.lane(id)?;
        if lane.pending.is_empty() {
            return None;
        }
        let (count, complete) = self.batch_extent(lane);
        if complete {
            return Some(count);
        }
        if !lane.caught_up() {
            // Read first: the batch may fill up.
            return None;
        }
        let linger = self.cfg.batch.linger.0;
        let lane = self.lane_mut(id)?;
        let started = *lane.batch_started.get_or_insert_with(Instant::now);
        (Instant::now() >= started + linger).then_some(count)
    }

    async fn publish_envelopes(&mut self) {
        while self.room() {
            // Live first; the replay when the live batch is not ready (or empty).
            let mut next = None;
            for id in [LaneId::Live, LaneId::Replay] {
                if id == LaneId::Replay && !self.replay_has_room() {
                    continue;
                }
                if let Some(count) = self.ready_batch(id) {
                    next = Some((id, count));
                    break;
                }
            }
            let Some((id, count)) = next else {
                return;
            };
            let gateway = self.cfg.gateway_id().to_owned();
            let format = self.cfg.envelope_format;
            let compression = self.cfg.compression;
            let level = self
                .cfg
                .compression_level
                .unwrap_or(tern_envelope::compress::DEFAULT_LEVEL);
            let Some(lane) = self.lane_mut(id) else {
                return;
            };
            let batch: Vec<Forward> = (0..count).filter_map(|_| lane.pop_pending()).collect();
            lane.batch_started = (!lane.pending.is_empty()).then(Instant::now);
            let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
                return;
            };
            // Caught up: the envelope also vouches for the other topics read behind it.
            let cover_through = (lane.pending.is_empty() && lane.caught_up())
                .then(|| lane.scan_pos.checked_sub(1))
                .flatten()
                .filter(|&through| through > last.seq);
            let prev = if first.gap_before {
                lane.chain_prev.max(first.seq.checked_sub(1))
            } else {
                lane.chain_prev
            };
            let covered = Covered {
                lane: id,
                prev,
                last: last.seq,
                first: first.seq,
                end: cover_through.unwrap_or(last.seq) + 1,
                messages: batch.len(),
                bytes: batch.iter().map(|f| f.size() as u64).sum(),
                received_ms: first.message.received_ms,
            };
            let encoded = envelope::encode(&envelope::Batch {
                gateway: &gateway,
                format,
                compression,
                level,
                prev_seq: prev,
                messages: &batch,
                cover_through,
                created_ms: now_millis(),
                replay: id == LaneId::Replay,
            });
            let payload = match encoded {
                Ok(payload) => payload,
                Err(err) => {
                    // Cannot happen for messages read in log order; never skip silently.
                    warn!(bridge = self.name(), cause = %err, first = covered.first, "envelope not encoded; retrying after a reconnect");
                    if let Some(lane) = self.lane_mut(id) {
                        lane.unpop(batch);
                    }
                    self.client_gone(&err.to_string());
                    return;
                }
            };
            let mut properties = PublishProperties::default();
            if self.upstream.has_properties() {
                properties.content_type = Some(
                    envelope::content_type(self.cfg.envelope_format, self.cfg.compression)
                        .to_owned(),
                );
            }
            let publication = Publication {
                topic: self.envelope_topic.clone(),
                payload: payload.into(),
                retain: false,
                properties,
            };
            if let Err(err) = self.upstream.publish(publication).await {
                // Put the batch back in front, in order.
                if let Some(lane) = self.lane_mut(id) {
                    lane.unpop(batch);
                }
                self.client_gone(&err.to_string());
                return;
            }
            if let Some(lane) = self.lane_mut(id) {
                lane.chain_prev = Some(covered.end - 1);
            }
            self.window.push(covered);
        }
    }

    /// The client no longer takes requests: treat it like a lost connection.
    fn client_gone(&mut self, error: &str) {
        warn!(
            bridge = self.name(),
            error, "upstream client refused a request; reconnecting"
        );
        self.status.set_error(error.to_owned());
        self.request_reset();
    }

    /// Asks the client to drop the connection (the driver then reports `Disconnected`).
    fn request_reset(&mut self) {
        if self.link == Link::Up {
            self.link = Link::Closing;
            self.upstream.disconnect();
        }
    }

    /// Pops acknowledged publishes, ends a finished replay, updates the status and
    /// persists the durable state.
    async fn advance(&mut self) {
        self.window.pop_done();
        if self
            .replay
            .as_ref()
            .is_some_and(|r| r.finished(&self.window))
        {
            self.replay = None;
            info!(
                bridge = self.name(),
                "bridge replay finished: the backlog is forwarded"
            );
        }
        let state = self.durable();
        let s = &self.status;
        s.cursor.store(state.cursor, Ordering::Relaxed);
        s.oldest_pending_ms
            .store(self.oldest_ms(), Ordering::Relaxed);
        let (messages, bytes) = self.waiting();
        s.backlog.store(messages, Ordering::Relaxed);
        s.backlog_bytes.store(bytes, Ordering::Relaxed);
        if state != self.persisted && self.last_persist.elapsed() >= PERSIST_EVERY {
            self.persist(state).await;
        }
    }

    /// Counts an acknowledged (QoS 0: written) publish.
    fn count_forwarded(&self, covered: &Covered) {
        let s = &self.status;
        s.forwarded
            .fetch_add(covered.messages as u64, Ordering::Relaxed);
        s.publishes.fetch_add(1, Ordering::Relaxed);
    }

    /// Submits the durable state. Not waited for: after a crash the bridge resends from an
    /// older state and the ids let consumers drop the duplicates.
    async fn persist(&mut self, state: Durable) -> Option<Ticket> {
        self.last_persist = Instant::now();
        let mut ops = vec![WriteOp::CursorSet {
            name: self.cursor_key.clone(),
            seq: state.cursor,
        }];
        match state.replay {
            Some((split, live)) => ops.extend([
                WriteOp::CursorSet {
                    name: super::split_key(&self.cfg.name),
                    seq: split,
                },
                WriteOp::CursorSet {
                    name: super::live_key(&self.cfg.name),
                    seq: live,
                },
            ]),
            None if self.persisted.replay.is_some() => ops.extend([
                WriteOp::CursorDelete {
                    name: super::split_key(&self.cfg.name),
                },
                WriteOp::CursorDelete {
                    name: super::live_key(&self.cfg.name),
                },
            ]),
            None => {}
        }
        match self.store.submit(ops).await {
            Ok(submitted) => {
                self.persisted = state;
                Some(submitted.ticket)
            }
            Err(err) => {
                warn!(bridge = self.name(), cause = %err, "bridge cursor not saved");
                None
            }
        }
    }

    /// A reconnect with a backlog under `replay = "live-first"`: the backlog becomes the
    /// replay lane, and a new live lane starts where it ends.
    fn start_replay(&mut self) {
        if self.cfg.replay != ReplayPolicy::LiveFirst
            || self.replay.is_some()
            || !self.live.has_backlog()
        {
            return;
        }
        let end = self.live.scan_pos;
        let mut live = Lane::new(LaneId::Live, end, None);
        live.more = true;
        let mut replay = std::mem::replace(&mut self.live, live);
        replay.id = LaneId::Replay;
        replay.end = Some(end);
        replay.more = false;
        // The live lane's chain starts after the replay's last message: the two tile.
        self.live.chain_prev = replay.last_selected().max(replay.chain_prev);
        let (messages, bytes) = replay.waiting();
        info!(
            bridge = self.name(),
            backlog = messages,
            backlog_bytes = bytes,
            split = end,
            "bridge replaying the backlog behind live messages"
        );
        self.replay = Some(replay);
    }

    async fn on_event(&mut self, event: UpEvent) {
        match event {
            UpEvent::Connected => {
                if let Some(since) = self.down_since.take() {
                    info!(
                        bridge = self.name(),
                        down_ms = u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX),
                        backlog = self.status.backlog(),
                        "bridge reconnected; draining the backlog"
                    );
                } else {
                    info!(bridge = self.name(), address = %self.cfg.address, "bridge connected");
                }
                self.link = Link::Up;
                self.progressed = false;
                self.last_progress = Instant::now();
                self.status.connected.store(true, Ordering::Relaxed);
                self.start_replay();
            }
            UpEvent::Written(pkid) => match self.window.on_written(pkid) {
                Ok(Some(done)) => self.count_forwarded(&done),
                Ok(None) => {}
                Err(err) => {
                    warn!(bridge = self.name(), cause = %err, "bridge out of step with its client; reconnecting");
                    self.status.set_error(err.to_string());
                    self.request_reset();
                }
            },
            UpEvent::Acked {
                pkid,
                refused: None,
            } => {
                if let Some(done) = self.window.on_acked(pkid) {
                    self.count_forwarded(&done);
                    self.progressed = true;
                    self.last_progress = Instant::now();
                    if self.stalled {
                        self.stalled = false;
                        info!(bridge = self.name(), "bridge moving again");
                    }
                } else {
                    debug!(bridge = self.name(), pkid, "stray PUBACK ignored");
                }
            }
            UpEvent::Acked {
                pkid,
                refused: Some(reason),
            } => {
                self.status.refused.fetch_add(1, Ordering::Relaxed);
                let error = format!("upstream refused a publish (packet id {pkid}): {reason}");
                if self.link == Link::Up {
                    warn!(
                        bridge = self.name(),
                        pkid,
                        reason,
                        "upstream refused a message; it will be sent again after a reconnect"
                    );
                }
                self.status.set_error(error);
                // Never skip it: reconnect (with backoff) and replay from the cursor.
                self.request_reset();
            }
            UpEvent::DisconnectSent => {}
            UpEvent::Disconnected(error) => self.on_disconnected(error).await,
        }
    }

    async fn on_disconnected(&mut self, error: String) {
        let was = self.link;
        self.window.pop_done();
        let cursor = self.done();
        self.live.unload(&self.window);
        if let Some(replay) = &mut self.replay {
            replay.unload(&self.window);
        }
        self.window.clear();
        self.status.connected.store(false, Ordering::Relaxed);
        self.status.reconnects.fetch_add(1, Ordering::Relaxed);
        self.status.set_error(error.clone());
        match was {
            Link::Up | Link::Closing => {
                warn!(
                    bridge = self.name(),
                    error, cursor, "bridge disconnected; will retry"
                );
                self.down_since = Some(Instant::now());
            }
            Link::Starting => {
                warn!(
                    bridge = self.name(),
                    error, "bridge cannot connect; will retry"
                );
                self.down_since = Some(Instant::now());
            }
            Link::Down => debug!(bridge = self.name(), error, "bridge reconnect failed"),
        }
        self.link = Link::Down;
        let delay = self.backoff.delay(self.progressed);
        self.progressed = false;
        self.upstream.resume(delay).await;
    }

    /// The periodic summary line and the stall check.
    fn summary(&mut self) {
        let s = &self.status;
        let connected = s.connected.load(Ordering::Relaxed);
        let oldest_age = s.oldest_age_secs();
        if !connected || oldest_age >= 5 {
            info!(
                bridge = self.name(),
                connected,
                backlog = s.backlog(),
                backlog_bytes = s.backlog_bytes.load(Ordering::Relaxed),
                dropped = s.dropped.load(Ordering::Relaxed),
                trimmed = s.trimmed.load(Ordering::Relaxed),
                replaying = self.replay.is_some(),
                oldest_age_s = oldest_age,
                forwarded = s.forwarded.load(Ordering::Relaxed),
                reconnects = s.reconnects.load(Ordering::Relaxed),
                last_error = s.last_error().unwrap_or_default(),
                "bridge status"
            );
        }
        if connected
            && !self.window.is_empty()
            && !self.stalled
            && self.last_progress.elapsed() >= STALL_AFTER
        {
            self.stalled = true;
            warn!(
                bridge = self.name(),
                in_flight = self.window.len(),
                "bridge stalled: connected but nothing acknowledged for 60s"
            );
        }
        self.log_losses(true);
    }

    /// Takes the acknowledgements that already arrived, saves the durable state and
    /// disconnects.
    async fn shutdown(mut self) -> Resume {
        while let Ok(event) = self.upstream.events.try_recv() {
            match event {
                UpEvent::Written(_) | UpEvent::Acked { .. } => self.on_event(event).await,
                _ => break,
            }
        }
        self.window.pop_done();
        let state = self.durable();
        if state != self.persisted
            && let Some(ticket) = self.persist(state).await
        {
            match tokio::time::timeout(SHUTDOWN_GRACE, self.store.wait_durable(ticket)).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => {
                    warn!(bridge = self.name(), cause = %err, "bridge cursor not saved")
                }
                Err(_) => warn!(bridge = self.name(), "bridge cursor not durable in time"),
            }
        }
        if self.link == Link::Up {
            self.upstream.disconnect();
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
                while let Some(event) = self.upstream.events.recv().await {
                    if matches!(event, UpEvent::DisconnectSent | UpEvent::Disconnected(_)) {
                        break;
                    }
                }
            })
            .await;
        }
        self.upstream.abort();
        info!(
            bridge = self.name(),
            cursor = state.cursor,
            "bridge stopped"
        );
        self.status.connected.store(false, Ordering::Relaxed);
        Resume {
            cursor: state.cursor,
            replay: state.replay,
            resumed: true,
        }
    }
}

/// The end of a replay lane, for log lines.
fn replay_end(replay: Option<&Lane>) -> Option<Seq> {
    replay.and_then(|r| r.end)
}

/// Sleeps until `at` (callers guard the branch with `at.is_some()`).
async fn sleep_at(at: Option<Instant>) {
    match at {
        Some(at) => sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_resets_on_progress() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let steps: Vec<Duration> = (0..6).map(|_| b.delay(false)).collect();
        let bases = [100, 200, 400, 800, 1000, 1000];
        for (d, base) in steps.iter().zip(bases) {
            let base = Duration::from_millis(base);
            assert!(*d >= base * 3 / 4 && *d < base * 5 / 4, "{d:?} vs {base:?}");
        }
        let d = b.delay(true);
        assert!(d < Duration::from_millis(125), "{d:?}");
    }
}
