//! The task of one bridge: reads the log from the bridge's cursor, selects, publishes
//! upstream through its window, moves the cursor over what the upstream acknowledged, and
//! handles connection loss by replaying from the cursor.
//!
//! # Invariants
//!
//! - `window` (published, oldest first) is followed by `pending` (read, not published) in
//!   log order; everything before the first of them (or before `read_pos` when both are
//!   empty) is forwarded or not for this bridge. That position is the cursor
//!   ([`BridgeTask::done`]); it never moves back.
//! - Nothing is published while the link is not [`Link::Up`]. A lost connection clears the
//!   window and `pending` and rewinds `read_pos` to the cursor, so the next connection
//!   replays in order from there.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rumqttc::v5::mqttbytes::v5::PublishProperties;
use tokio::time::sleep_until;
use tracing::{debug, info, warn};

use super::config::{BridgeConfig, Mode};
use super::envelope;
use super::select::{Forward, Selector};
use super::status::BridgeStatus;
use super::upstream::{Publication, UpEvent, Upstream};
use super::window::{Covered, Window};
use crate::shutdown::Shutdown;
use crate::store::{Seq, Store, WriteOp, now_millis};

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
    /// Selected messages read and not yet published, in log order.
    pending: VecDeque<Forward>,
    /// Next log position to read.
    read_pos: Seq,
    /// The log may hold entries at or after `read_pos`.
    more: bool,
    /// No read before this instant (after a failed read).
    read_retry: Option<Instant>,
    /// The cursor last submitted to the store.
    persisted: Seq,
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
    /// A message the client did not take (and that is neither in the window nor in
    /// `pending`): the cursor stays before it until the next replay.
    replay_from: Option<Seq>,
    /// Last seq covered by the newest unit published on this connection (`tern-prev` /
    /// `prev_seq` of the next one); `None` at the start of the stream.
    chain_prev: Option<Seq>,
    /// Last seq covered by the newest acknowledged unit: where the chain resumes after a
    /// replay.
    acked_through: Option<Seq>,
    /// The bridge resumes from a stored cursor (its stream continues).
    resumed: bool,
    /// When the oldest message of the current partial envelope became ready.
    batch_started: Option<Instant>,
    /// `envelope` mode: upstream topic of envelopes.
    envelope_topic: String,
}

impl BridgeTask {
    /// A task starting at log position `cursor` (already persisted).
    pub(super) fn new(
        cfg: Arc<BridgeConfig>,
        store: Store,
        status: Arc<BridgeStatus>,
        stop: Shutdown,
        upstream: Upstream,
        cursor: Seq,
        resumed: bool,
    ) -> Self {
        let selector = Selector::new(&cfg.name, &cfg.topics, &cfg.remote_prefix);
        let backoff = Backoff::new(cfg.reconnect.min.0, cfg.reconnect.max.0);
        let envelope_topic = cfg.envelope_topic();
        Self {
            cursor_key: super::cursor_key(&cfg.name),
            selector,
            store,
            status,
            stop,
            upstream,
            window: Window::new(),
            pending: VecDeque::new(),
            read_pos: cursor,
            more: true,
            read_retry: None,
            persisted: cursor,
            last_persist: Instant::now(),
            link: Link::Starting,
            backoff,
            progressed: false,
            last_progress: Instant::now(),
            stalled: false,
            down_since: None,
            replay_from: None,
            chain_prev: None,
            acked_through: None,
            resumed,
            batch_started: None,
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

    /// The cursor: the first log position not known to be forwarded.
    fn done(&self) -> Seq {
        let done = self
            .window
            .first_pending()
            .or_else(|| self.pending.front().map(|f| f.seq))
            .unwrap_or(self.read_pos);
        self.replay_from.map_or(done, |r| r.min(done))
    }

    fn wants_read(&self, now: Instant) -> bool {
        self.more
            && self.pending.len() < self.low_water()
            && self.read_retry.is_none_or(|t| now >= t)
    }

    /// Where the stream of a resumed bridge continues: the last message it forwarded before
    /// its cursor (found by reading back at most [`CHAIN_SCAN`] log entries), else the entry
    /// right before the cursor. A new bridge starts a stream (`None`).
    async fn find_chain(&self) -> Option<Seq> {
        let cursor = self.read_pos;
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

    /// Runs until the hub shuts down.
    pub(super) async fn run(mut self) {
        self.chain_prev = self.find_chain().await;
        self.acked_through = self.chain_prev;
        let mut committed = self.store.committed();
        let mut summary =
            tokio::time::interval_at(tokio::time::Instant::now() + SUMMARY_EVERY, SUMMARY_EVERY);
        summary.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if self.stop.is_triggered() {
                break;
            }
            let now = Instant::now();
            if self.wants_read(now) {
                // Marked seen before reading: a commit after this point wakes us again.
                committed.borrow_and_update();
                self.read_chunk().await;
            }
            self.publish_ready().await;
            self.advance().await;
            if self.wants_read(Instant::now()) {
                continue;
            }
            let persist_at =
                (self.done() > self.persisted).then(|| self.last_persist + PERSIST_EVERY);
            let linger_at = self.linger_deadline();
            let retry_at = self.read_retry.filter(|_| self.more);
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
                    self.more = true;
                }
                () = sleep_at(persist_at), if persist_at.is_some() => {}
                () = sleep_at(linger_at), if linger_at.is_some() => {}
                () = sleep_at(retry_at), if retry_at.is_some() => {
                    self.read_retry = None;
                }
                _ = summary.tick() => self.summary(),
            }
        }
        self.shutdown().await;
    }

    /// Reads the next chunk of the log into `pending` (selected messages only).
    async fn read_chunk(&mut self) {
        let store = self.store.clone();
        let from = self.read_pos;
        let max = self.chunk();
        let read = tokio::task::spawn_blocking(move || {
            let mut out = Vec::with_capacity(max.min(READ_CHUNK));
            store.read_log(from, max, &mut out).map(|next| (out, next))
        })
        .await;
        let (entries, next) = match read {
            Ok(Ok(read)) => read,
            Ok(Err(err)) => {
                warn!(bridge = self.name(), cause = %err, "bridge cannot read the log; retrying");
                self.read_retry = Some(Instant::now() + READ_RETRY);
                return;
            }
            Err(err) => {
                warn!(bridge = self.name(), cause = %err, "bridge log read failed; retrying");
                self.read_retry = Some(Instant::now() + READ_RETRY);
                return;
            }
        };
        self.read_retry = None;
        // Seqs may have gaps, so a span of `max` or more may hold fewer than `max` entries:
        // read again until a read comes back short of its span.
        self.more = next > from && next - from >= u64::try_from(max).unwrap_or(u64::MAX);
        self.read_pos = next.max(self.read_pos);
        let was_empty = self.pending.is_empty();
        for (seq, message) in entries {
            if let Some(forward) = self.selector.select(seq, message) {
                self.pending.push_back(forward);
            }
        }
        if was_empty && !self.pending.is_empty() {
            self.batch_started = Some(Instant::now());
        }
    }

    /// Publishes what the window has room for.
    async fn publish_ready(&mut self) {
        match self.cfg.mode {
            Mode::Each => self.publish_each().await,
            Mode::Envelope => self.publish_envelopes().await,
        }
    }

    fn room(&self) -> bool {
        self.link == Link::Up && self.window.len() < usize::from(self.cfg.inflight())
    }

    async fn publish_each(&mut self) {
        while self.room() {
            let Some(forward) = self.pending.pop_front() else {
                break;
            };
            let covered = Covered {
                first: forward.seq,
                end: forward.seq + 1,
                messages: 1,
                received_ms: forward.message.received_ms,
            };
            let publication = self.publication(forward);
            if let Err(err) = self.upstream.publish(publication).await {
                // The message is gone with the request: keep the cursor before it.
                self.replay_from = Some(covered.first);
                self.client_gone(&err.to_string());
                return;
            }
            self.chain_prev = Some(covered.first);
            self.window.push(covered);
        }
    }

    /// The upstream PUBLISH of one message (`each` mode); it covers `(chain_prev, seq]`.
    fn publication(&self, forward: Forward) -> Publication {
        let Forward { seq, message } = forward;
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
                .extend(tern_envelope::each::properties(&id, self.chain_prev));
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
        if self.cfg.mode != Mode::Envelope || !self.room() || self.pending.is_empty() {
            return None;
        }
        self.batch_started.map(|t| t + self.cfg.batch.linger.0)
    }

    /// Messages of the next envelope, and whether it is complete (full, or more is ready
    /// behind it).
    fn batch_extent(&self) -> (usize, bool) {
        let max_messages = self.cfg.batch.max_messages;
        let max_bytes = usize::try_from(self.cfg.batch.max_bytes.0).unwrap_or(usize::MAX);
        let mut bytes = 0;
        let mut count = 0;
        for forward in &self.pending {
            if count == max_messages || (count > 0 && bytes + forward.size() > max_bytes) {
                return (count, true);
            }
            bytes += forward.size();
            count += 1;
        }
        (count, count == max_messages || bytes >= max_bytes)
    }

    async fn publish_envelopes(&mut self) {
        while self.room() && !self.pending.is_empty() {
            let (count, complete) = self.batch_extent();
            if !complete {
                if self.more {
                    // Read first: the batch may fill up.
                    return;
                }
                let started = *self.batch_started.get_or_insert_with(Instant::now);
                if Instant::now() < started + self.cfg.batch.linger.0 {
                    return;
                }
            }
            let batch: Vec<Forward> = self.pending.drain(..count).collect();
            self.batch_started = (!self.pending.is_empty()).then(Instant::now);
            let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
                return;
            };
            // Caught up: the envelope also vouches for the other topics read behind it.
            let cover_through = (self.pending.is_empty() && !self.more)
                .then(|| self.read_pos.checked_sub(1))
                .flatten()
                .filter(|&through| through > last.seq);
            let covered = Covered {
                first: first.seq,
                end: cover_through.unwrap_or(last.seq) + 1,
                messages: batch.len(),
                received_ms: first.message.received_ms,
            };
            let encoded = envelope::encode(&envelope::Batch {
                gateway: self.cfg.gateway_id(),
                format: self.cfg.envelope_format,
                prev_seq: self.chain_prev,
                messages: &batch,
                cover_through,
                created_ms: now_millis(),
            });
            let payload = match encoded {
                Ok(payload) => payload,
                Err(err) => {
                    // Cannot happen for messages read in log order; never skip silently.
                    warn!(bridge = self.name(), cause = %err, first = covered.first, "envelope not encoded; retrying after a reconnect");
                    for forward in batch.into_iter().rev() {
                        self.pending.push_front(forward);
                    }
                    self.client_gone(&err.to_string());
                    return;
                }
            };
            let mut properties = PublishProperties::default();
            if self.upstream.has_properties() {
                properties.content_type =
                    Some(envelope::content_type(self.cfg.envelope_format).to_owned());
            }
            let publication = Publication {
                topic: self.envelope_topic.clone(),
                payload: payload.into(),
                retain: false,
                properties,
            };
            if let Err(err) = self.upstream.publish(publication).await {
                // Put the batch back in front, in order.
                for forward in batch.into_iter().rev() {
                    self.pending.push_front(forward);
                }
                self.client_gone(&err.to_string());
                return;
            }
            self.chain_prev = Some(covered.end - 1);
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

    /// Pops acknowledged publishes, updates the status and persists the cursor.
    async fn advance(&mut self) {
        self.pop_acked();
        let cursor = self.done();
        self.status.cursor.store(cursor, Ordering::Relaxed);
        let oldest = self
            .window
            .front()
            .map(|c| c.received_ms)
            .or_else(|| self.pending.front().map(|f| f.message.received_ms))
            .unwrap_or(0);
        self.status
            .oldest_pending_ms
            .store(oldest, Ordering::Relaxed);
        if cursor > self.persisted && self.last_persist.elapsed() >= PERSIST_EVERY {
            self.persist(cursor).await;
        }
    }

    /// Pops the acknowledged prefix of the window and counts it.
    fn pop_acked(&mut self) {
        if let Some(popped) = self.window.pop_done() {
            self.acked_through = Some(popped.end - 1);
            let s = &self.status;
            s.forwarded.fetch_add(
                u64::try_from(popped.messages).unwrap_or(u64::MAX),
                Ordering::Relaxed,
            );
            s.publishes.fetch_add(
                u64::try_from(popped.publishes).unwrap_or(u64::MAX),
                Ordering::Relaxed,
            );
        }
    }

    /// Submits the cursor. Not waited for: after a crash the bridge resends from an older
    /// cursor and the ids let consumers drop the duplicates.
    async fn persist(&mut self, cursor: Seq) -> Option<crate::store::Ticket> {
        self.last_persist = Instant::now();
        match self
            .store
            .submit(vec![WriteOp::CursorSet {
                name: self.cursor_key.clone(),
                seq: cursor,
            }])
            .await
        {
            Ok(submitted) => {
                self.persisted = cursor;
                Some(submitted.ticket)
            }
            Err(err) => {
                warn!(bridge = self.name(), cause = %err, "bridge cursor not saved");
                None
            }
        }
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
            }
            UpEvent::Written(pkid) => {
                if let Err(err) = self.window.on_written(pkid) {
                    warn!(bridge = self.name(), cause = %err, "bridge out of step with its client; reconnecting");
                    self.status.set_error(err.to_string());
                    self.request_reset();
                }
            }
            UpEvent::Acked {
                pkid,
                refused: None,
            } => {
                if self.window.on_acked(pkid) {
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
        self.pop_acked();
        let cursor = self.done();
        self.window.clear();
        self.pending.clear();
        self.replay_from = None;
        self.chain_prev = self.acked_through;
        self.read_pos = cursor;
        self.more = true;
        self.batch_started = None;
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
    }

    /// Takes the acknowledgements that already arrived, saves the cursor and disconnects.
    async fn shutdown(mut self) {
        while let Ok(event) = self.upstream.events.try_recv() {
            match event {
                UpEvent::Written(_) | UpEvent::Acked { .. } => self.on_event(event).await,
                _ => break,
            }
        }
        self.pop_acked();
        let cursor = self.done();
        if cursor > self.persisted
            && let Some(ticket) = self.persist(cursor).await
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
        info!(bridge = self.name(), cursor, "bridge stopped");
    }
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
