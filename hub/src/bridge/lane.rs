//! A reading lane of a bridge: one stretch of the log the bridge sends in order, with the
//! messages it has loaded (`pending`) and the ones it has only counted (the [`Ledger`]).
//!
//! A bridge has one lane, `Live`, that follows the log to its tail. With
//! `replay = "live-first"`, a reconnect with a backlog turns the lane into a `Replay` lane
//! bounded by `end` (the log position the backlog reached), and a fresh `Live` lane starts
//! at `end`: new messages go out first while the replay drains behind them.
//!
//! Sans-IO: the task reads the log and feeds the lane.
//!
//! # Invariants
//!
//! - The lane's publishes in the window come first, then `pending` (covering the log up to
//!   `fill_pos`), then the ledger (`[fill_pos, scan_pos)`), in log order. With an empty
//!   ledger, `fill_pos == scan_pos`.
//! - A replay lane never reads at or past `end`.

use std::collections::VecDeque;
use std::time::Instant;

use super::outbox::{Ledger, Segment};
use super::select::Forward;
use super::window::{LaneId, Window};
use crate::store::Seq;

/// One reading lane.
#[derive(Debug)]
pub struct Lane {
    /// Which lane.
    pub id: LaneId,
    /// Messages loaded and not yet published, in log order.
    pub pending: VecDeque<Forward>,
    /// Bytes of `pending`.
    pub pending_bytes: u64,
    /// `pending` covers the log up to here (exclusive); the ledger starts here.
    pub fill_pos: Seq,
    /// Messages counted beyond `pending`, not loaded.
    pub ledger: Ledger,
    /// Next log position to count.
    pub scan_pos: Seq,
    /// The log may hold entries of this lane at or after `scan_pos`.
    pub more: bool,
    /// A replay lane's end (exclusive); `None` for the live lane.
    pub end: Option<Seq>,
    /// The next message loaded follows a loss ([`Forward::gap_before`]).
    pub gap_next: bool,
    /// Last seq covered by the lane's newest unit sent (`tern-prev` / `prev_seq` of its
    /// next one); `None` at the start of the stream.
    pub chain_prev: Option<Seq>,
    /// A message the client did not take (neither in the window nor in `pending`): the
    /// lane's cursor stays before it until it is sent again.
    pub retry_from: Option<Seq>,
    /// When the oldest message of the current partial envelope became ready.
    pub batch_started: Option<Instant>,
}

impl Lane {
    /// A lane reading from `pos` (to `end`, for a replay lane).
    pub fn new(id: LaneId, pos: Seq, end: Option<Seq>) -> Self {
        Self {
            id,
            pending: VecDeque::new(),
            pending_bytes: 0,
            fill_pos: pos,
            ledger: Ledger::new(),
            scan_pos: pos,
            more: end.is_none_or(|end| pos < end),
            end,
            gap_next: false,
            chain_prev: None,
            retry_from: None,
            batch_started: None,
        }
    }

    /// The lane's cursor: its first log position not known to be forwarded (`end` once a
    /// replay lane is done).
    pub fn cursor(&self, window: &Window) -> Seq {
        let done = window
            .first_pending_of(self.id)
            .or_else(|| self.pending.front().map(|f| f.seq))
            .unwrap_or(self.fill_pos);
        self.retry_from.map_or(done, |r| r.min(done))
    }

    /// Everything counted is loaded and nothing new is known.
    pub fn caught_up(&self) -> bool {
        self.ledger.is_empty() && !self.more
    }

    /// A replay lane with nothing left to send or acknowledge.
    pub fn finished(&self, window: &Window) -> bool {
        self.end.is_some_and(|end| self.cursor(window) >= end) && self.pending.is_empty()
    }

    /// Messages waiting in `pending` and the ledger, and their bytes.
    pub fn waiting(&self) -> (u64, u64) {
        (
            self.pending.len() as u64 + self.ledger.messages(),
            self.pending_bytes + self.ledger.bytes(),
        )
    }

    /// Whether anything waits (loaded, counted, or refused by the client).
    pub fn has_backlog(&self) -> bool {
        !self.pending.is_empty() || !self.ledger.is_empty() || self.retry_from.is_some()
    }

    /// Reception time (Unix ms) of the oldest message waiting outside the window, 0 if none.
    pub fn oldest_ms(&self) -> u64 {
        self.pending
            .front()
            .map_or_else(|| self.ledger.oldest_ms(), |f| f.message.received_ms)
    }

    /// Seq of the last message the lane holds or counted.
    pub fn last_selected(&self) -> Option<Seq> {
        self.pending
            .back()
            .map(|f| f.seq)
            .or_else(|| self.ledger.last_seq())
    }

    /// Loads one message at the end of `pending`.
    pub fn push_pending(&mut self, mut forward: Forward) {
        if std::mem::take(&mut self.gap_next) {
            forward.gap_before = true;
        }
        if self.pending.is_empty() {
            self.batch_started = Some(Instant::now());
        }
        self.pending_bytes += forward.size() as u64;
        self.pending.push_back(forward);
    }

    /// Takes the oldest message of `pending`.
    pub fn pop_pending(&mut self) -> Option<Forward> {
        let forward = self.pending.pop_front()?;
        self.pending_bytes -= forward.size() as u64;
        Some(forward)
    }

    /// Puts messages back in front of `pending`, in order.
    pub fn unpop(&mut self, batch: Vec<Forward>) {
        for forward in batch.into_iter().rev() {
            self.pending_bytes += forward.size() as u64;
            self.pending.push_front(forward);
        }
    }

    /// The connection is lost: what the lane had in flight (and everything loaded behind
    /// it) becomes the front stretch of its ledger, sent again in order; the chain resumes
    /// at the first unacknowledged publish. With nothing in flight, `pending` stays.
    pub fn unload(&mut self, window: &Window) {
        let cursor = self.cursor(window);
        let summary = window.lane_summary(self.id);
        if self.fill_pos > cursor && (summary.resume_prev.is_some() || self.retry_from.is_some()) {
            let retried = u64::from(self.retry_from.is_some());
            let oldest_ms = match summary.resume_prev {
                Some(_) => summary.oldest_ms,
                None => self.oldest_ms(),
            };
            self.ledger.push_front(Segment {
                first: cursor,
                end: self.fill_pos,
                messages: summary.messages + self.pending.len() as u64 + retried,
                bytes: summary.bytes + self.pending_bytes,
                oldest_ms,
                last_seq: self
                    .pending
                    .back()
                    .map(|f| f.seq)
                    .or(summary.last)
                    .unwrap_or(cursor),
            });
            self.fill_pos = cursor;
            self.pending.clear();
            self.pending_bytes = 0;
        }
        if let Some(prev) = summary.resume_prev {
            self.chain_prev = prev;
        }
        self.retry_from = None;
        self.batch_started = None;
    }

    /// Gives up the lane's oldest waiting messages while `must_go` says so, given the
    /// bytes waiting in it; returns (messages, bytes) given up. Stretches of the ledger go
    /// whole while all of them must go (`whole_ok` decides from the stretch and the one
    /// after it); the last one is left for a refill and given up message by message later.
    pub fn give_up(
        &mut self,
        mut must_go: impl FnMut(u64, u64) -> bool,
        whole_ok: impl Fn(&Segment, Option<&Segment>, u64) -> bool,
    ) -> (u64, u64) {
        let (mut dropped, mut bytes) = (0u64, 0u64);
        loop {
            let waiting = self.pending_bytes + self.ledger.bytes();
            if let Some(front) = self.pending.front() {
                if !must_go(front.message.received_ms, waiting) {
                    break;
                }
                let size = front.size() as u64;
                self.pending.pop_front();
                self.pending_bytes -= size;
                dropped += 1;
                bytes += size;
                continue;
            }
            let Some(front) = self.ledger.front().copied() else {
                break;
            };
            let due = front.messages == 0 || must_go(front.oldest_ms, waiting);
            if !(due && whole_ok(&front, self.ledger.second(), waiting)) {
                break;
            }
            self.ledger.pop_front();
            self.fill_pos = front.end;
            dropped += front.messages;
            bytes += front.bytes;
        }
        if self.pending.is_empty() {
            self.batch_started = None;
        }
        (dropped, bytes)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use tern_mqtt::QoS;

    use super::*;
    use crate::bridge::window::Covered;
    use crate::store::{StoredMessage, StoredProperties};

    fn forward(seq: Seq, received_ms: u64) -> Forward {
        Forward {
            seq,
            message: StoredMessage {
                received_ms,
                topic: "t".into(),
                payload: Bytes::from_static(b"0123456789"),
                qos: QoS::AtLeastOnce,
                retain: false,
                properties: StoredProperties::default(),
                publisher: "dev".into(),
                expires_ms: None,
                bridge: None,
            },
            gap_before: false,
        }
    }

    fn covered(lane: LaneId, seq: Seq, prev: Option<Seq>) -> Covered {
        Covered {
            lane,
            prev,
            last: seq,
            first: seq,
            end: seq + 1,
            messages: 1,
            bytes: 35,
            received_ms: seq,
        }
    }

    #[test]
    fn unload_puts_the_unacknowledged_and_the_loaded_back_in_order() {
        let mut lane = Lane::new(LaneId::Live, 10, None);
        for seq in 10..14 {
            lane.push_pending(forward(seq, seq));
        }
        lane.fill_pos = 14;
        lane.scan_pos = 14;
        let mut window = Window::new();
        for seq in [10u64, 11] {
            let f = lane.pop_pending().expect("loaded");
            window.push(covered(LaneId::Live, f.seq, seq.checked_sub(1)));
        }
        window.on_written(1).unwrap();
        window.on_written(2).unwrap();
        assert!(window.on_acked(1).is_some(), "10 is through");
        window.pop_done();
        lane.unload(&window);
        assert!(lane.pending.is_empty());
        assert_eq!(lane.fill_pos, 11, "resent from the first unacknowledged");
        assert_eq!(
            lane.chain_prev,
            Some(10),
            "chain resumes after the acknowledged"
        );
        let front = *lane.ledger.front().expect("a stretch");
        assert_eq!((front.first, front.end, front.messages), (11, 14, 3));
        assert_eq!(lane.cursor(&Window::new()), 11);
    }

    #[test]
    fn a_failed_attempt_keeps_what_is_loaded() {
        let mut lane = Lane::new(LaneId::Live, 0, None);
        lane.push_pending(forward(0, 1));
        lane.fill_pos = 1;
        lane.unload(&Window::new());
        assert_eq!(lane.pending.len(), 1);
        assert!(lane.ledger.is_empty());
    }

    #[test]
    fn give_up_takes_the_oldest_first_and_stops_at_a_partial_stretch() {
        let mut lane = Lane::new(LaneId::Replay, 0, Some(100));
        lane.push_pending(forward(0, 1));
        lane.push_pending(forward(1, 2));
        lane.fill_pos = 2;
        for (first, end) in [(2, 50), (50, 100)] {
            lane.ledger.push_back(
                Segment {
                    first,
                    end,
                    messages: 10,
                    bytes: 350,
                    oldest_ms: first,
                    last_seq: end - 1,
                },
                48,
            );
        }
        lane.scan_pos = 100;
        // Older than 60 must go: the first stretch whole (the one after it is older than 60
        // too, so all of it is), the second one only message by message after a refill.
        let (dropped, bytes) = lane.give_up(
            |received_ms, _| received_ms < 60,
            |_, next, _| next.is_some_and(|n| n.oldest_ms < 60),
        );
        assert_eq!((dropped, bytes), (12, 2 * 35 + 350));
        assert_eq!(lane.fill_pos, 50);
        assert_eq!(
            lane.ledger.messages(),
            10,
            "the last stretch waits for its refill"
        );
        assert_eq!(lane.cursor(&Window::new()), 50);
        assert!(!lane.finished(&Window::new()));
    }
}
