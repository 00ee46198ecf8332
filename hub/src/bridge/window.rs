//! The in-flight window of one upstream connection: which log positions each upstream
//! PUBLISH carries, which packet id it got, and how far the contiguous acknowledged prefix
//! reaches. Sans-IO: the bridge feeds it the client's events, in order, and reads back
//! where its cursor may move.
//!
//! rumqttc assigns packet ids itself. It emits `Outgoing::Publish(pkid)` for publish
//! requests strictly in request order (a request whose id collides is held back, announced
//! with `AwaitAck`, and emitted as `Outgoing::Publish` once its id is free, still before any
//! later request), so the n-th `Outgoing::Publish` of a connection belongs to the n-th
//! publish requested on it. QoS 0 publishes carry packet id 0 and count as done once
//! written. A PUBACK frees its packet id; a later publish may reuse it.

use std::collections::{HashMap, VecDeque};

use crate::store::Seq;

/// Which reading lane of the bridge a publish comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LaneId {
    /// The log in order (and, during a live-first replay, the messages that arrived after
    /// the reconnect).
    #[default]
    Live,
    /// The backlog drained behind live messages (`replay = "live-first"`).
    Replay,
}

impl LaneId {
    fn index(self) -> usize {
        match self {
            LaneId::Live => 0,
            LaneId::Replay => 1,
        }
    }
}

/// What one upstream PUBLISH carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Covered {
    /// The lane it was read by.
    pub lane: LaneId,
    /// The `prev_seq` / `tern-prev` it was sent with: where its lane's chain resumes if it
    /// has to be sent again.
    pub prev: Option<Seq>,
    /// Seq of the last message carried.
    pub last: Seq,
    /// First log position carried.
    pub first: Seq,
    /// One past the last log position carried.
    pub end: Seq,
    /// Messages carried (1 in `each` mode).
    pub messages: usize,
    /// Their bytes ([`super::select::Forward::size`]).
    pub bytes: u64,
    /// Reception time (Unix ms) of the first message carried.
    pub received_ms: u64,
}

/// Publishes popped by [`Window::pop_done`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Popped {
    /// Log position right after the last publish popped.
    pub end: Seq,
    /// Publishes popped.
    pub publishes: usize,
    /// Messages they carried.
    pub messages: usize,
    /// Their bytes.
    pub bytes: u64,
}

/// One upstream PUBLISH in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    covered: Covered,
    state: SlotState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    /// Handed to the client, not written yet.
    Requested,
    /// Written with this packet id, waiting for PUBACK.
    Sent,
    /// Acknowledged (or written, for QoS 0).
    Done,
}

/// What the client reported that the window cannot place: the connection is out of step
/// and must be reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    /// `Outgoing::Publish` with no publish requested.
    #[error("upstream client wrote a publish the bridge did not request (packet id {0})")]
    UnexpectedPublish(u16),
    /// A packet id reused while its previous publish is unacknowledged.
    #[error("upstream client reused packet id {0} before its acknowledgement")]
    PacketIdInUse(u16),
}

/// Publishes of one connection, oldest first.
#[derive(Debug, Default)]
pub struct Window {
    slots: VecDeque<Slot>,
    /// Id of `slots[0]`; slot ids grow by one per publish and never repeat.
    front_id: u64,
    /// Slots from the front that have left the `Requested` state.
    written: usize,
    /// Packet id → slot id of publishes awaiting PUBACK.
    by_pkid: HashMap<u16, u64>,
    /// Slots per lane.
    lane_slots: [usize; 2],
    /// Messages carried by the slots.
    messages: u64,
    /// Their bytes.
    bytes: u64,
}

impl Window {
    /// An empty window.
    pub fn new() -> Self {
        Self::default()
    }

    /// Publishes in flight (requested or written, not yet popped).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Messages carried by the publishes in flight (acknowledged ones behind an
    /// unacknowledged one included: they are sent again after a lost connection).
    pub fn messages(&self) -> u64 {
        self.messages
    }

    /// Their bytes.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Publishes of `lane` in the window.
    pub fn lane_slots(&self, lane: LaneId) -> usize {
        self.lane_slots[lane.index()]
    }

    /// First log position of `lane` not yet known to be forwarded, if the window holds one.
    pub fn first_pending_of(&self, lane: LaneId) -> Option<Seq> {
        self.slots
            .iter()
            .find(|s| s.covered.lane == lane && s.state != SlotState::Done)
            .map(|s| s.covered.first)
    }

    /// What a lost connection leaves of `lane`: its publishes from the first one not
    /// acknowledged on (they are sent again).
    pub fn lane_summary(&self, lane: LaneId) -> LaneSummary {
        let mut out = LaneSummary::default();
        let mut open = false;
        for slot in self.slots.iter().filter(|s| s.covered.lane == lane) {
            let c = &slot.covered;
            if !open && slot.state != SlotState::Done {
                open = true;
                out.resume_prev = Some(c.prev);
                out.oldest_ms = c.received_ms;
            }
            if open {
                out.messages += c.messages as u64;
                out.bytes += c.bytes;
                out.last = Some(c.last);
            }
        }
        out
    }

    /// The oldest publish in flight (not yet known to be forwarded).
    pub fn front(&self) -> Option<&Covered> {
        self.slots.front().map(|s| &s.covered)
    }

    /// First log position not yet known to be forwarded, if anything is in flight.
    pub fn first_pending(&self) -> Option<Seq> {
        self.front().map(|c| c.first)
    }

    /// Records a publish request.
    pub fn push(&mut self, covered: Covered) {
        self.lane_slots[covered.lane.index()] += 1;
        self.messages += covered.messages as u64;
        self.bytes += covered.bytes;
        self.slots.push_back(Slot {
            covered,
            state: SlotState::Requested,
        });
    }

    /// The client wrote the oldest requested publish with packet id `pkid` (0 = QoS 0,
    /// which is done once written: then it comes back).
    pub fn on_written(&mut self, pkid: u16) -> Result<Option<Covered>, WindowError> {
        let index = self.written;
        let Some(slot) = self.slots.get_mut(index) else {
            return Err(WindowError::UnexpectedPublish(pkid));
        };
        self.written += 1;
        if pkid == 0 {
            slot.state = SlotState::Done;
            return Ok(Some(slot.covered));
        }
        slot.state = SlotState::Sent;
        let id = self.front_id + index as u64;
        if self.by_pkid.insert(pkid, id).is_some() {
            return Err(WindowError::PacketIdInUse(pkid));
        }
        Ok(None)
    }

    /// A PUBACK for `pkid` arrived. Returns the publish it acknowledged; `None` for a stray
    /// acknowledgement (ignored).
    pub fn on_acked(&mut self, pkid: u16) -> Option<Covered> {
        let id = self.by_pkid.remove(&pkid)?;
        let index = id.checked_sub(self.front_id)?;
        match usize::try_from(index)
            .ok()
            .and_then(|i| self.slots.get_mut(i))
        {
            Some(slot) if slot.state == SlotState::Sent => {
                slot.state = SlotState::Done;
                Some(slot.covered)
            }
            _ => None,
        }
    }

    /// Pops the done publishes at the front; `None` if the front is not done.
    pub fn pop_done(&mut self) -> Option<Popped> {
        let mut popped: Option<Popped> = None;
        while let Some(slot) = self.slots.front()
            && slot.state == SlotState::Done
        {
            let c = slot.covered;
            let p = popped.get_or_insert(Popped {
                end: c.end,
                publishes: 0,
                messages: 0,
                bytes: 0,
            });
            p.end = c.end;
            p.publishes += 1;
            p.messages += c.messages;
            p.bytes += c.bytes;
            self.messages -= c.messages as u64;
            self.bytes -= c.bytes;
            self.lane_slots[c.lane.index()] -= 1;
            self.slots.pop_front();
            self.front_id += 1;
            self.written -= 1;
        }
        popped
    }

    /// Forgets everything (the connection is gone; the bridge replays from its cursor).
    pub fn clear(&mut self) {
        self.front_id += self.slots.len() as u64;
        self.slots.clear();
        self.written = 0;
        self.by_pkid.clear();
        self.messages = 0;
        self.bytes = 0;
        self.lane_slots = [0; 2];
    }
}

/// See [`Window::lane_summary`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LaneSummary {
    /// `prev` of the lane's first unacknowledged publish: `None` when all of the lane's
    /// publishes are acknowledged.
    pub resume_prev: Option<Option<Seq>>,
    /// Messages of the lane from there on.
    pub messages: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Reception time of the first of them.
    pub oldest_ms: u64,
    /// Seq of the last message of the lane's last publish.
    pub last: Option<Seq>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(seq: Seq) -> Covered {
        Covered {
            lane: LaneId::Live,
            prev: seq.checked_sub(1),
            last: seq,
            first: seq,
            end: seq + 1,
            messages: 1,
            bytes: 10,
            received_ms: 0,
        }
    }

    fn ends(p: Option<Popped>) -> Option<(Seq, usize)> {
        p.map(|p| (p.end, p.publishes))
    }

    #[test]
    fn in_order_acks_advance_one_by_one() {
        let mut w = Window::new();
        for seq in 10..13 {
            w.push(one(seq));
        }
        assert_eq!(w.first_pending(), Some(10));
        w.on_written(1).unwrap();
        w.on_written(2).unwrap();
        assert_eq!(ends(w.pop_done()), None);
        assert!(w.on_acked(1).is_some());
        assert_eq!(ends(w.pop_done()), Some((11, 1)));
        w.on_written(3).unwrap();
        assert!(w.on_acked(2).is_some());
        assert!(w.on_acked(3).is_some());
        assert_eq!(ends(w.pop_done()), Some((13, 2)));
        assert!(w.is_empty());
    }

    #[test]
    fn out_of_order_ack_waits_for_the_gap() {
        let mut w = Window::new();
        w.push(one(0));
        w.push(one(5)); // seqs 1..5 were not selected
        w.on_written(7).unwrap();
        w.on_written(8).unwrap();
        assert!(w.on_acked(8).is_some());
        assert_eq!(ends(w.pop_done()), None, "seq 0 is not acknowledged yet");
        assert_eq!(w.first_pending(), Some(0));
        assert!(w.on_acked(7).is_some());
        assert_eq!(ends(w.pop_done()), Some((6, 2)));
    }

    #[test]
    fn packet_ids_are_reused_after_their_ack() {
        let mut w = Window::new();
        w.push(one(0));
        w.on_written(1).unwrap();
        assert!(w.on_acked(1).is_some());
        w.push(one(1));
        w.on_written(1).unwrap();
        assert_eq!(ends(w.pop_done()), Some((1, 1)));
        assert!(w.on_acked(2).is_none(), "unknown packet id");
        assert!(w.on_acked(1).is_some());
        assert_eq!(ends(w.pop_done()), Some((2, 1)));
        assert!(w.on_acked(1).is_none(), "duplicate ack is ignored");
    }

    #[test]
    fn reuse_before_ack_is_an_error() {
        let mut w = Window::new();
        w.push(one(0));
        w.push(one(1));
        w.on_written(4).unwrap();
        assert_eq!(w.on_written(4), Err(WindowError::PacketIdInUse(4)));
    }

    #[test]
    fn qos0_is_done_when_written_and_unrequested_writes_fail() {
        let mut w = Window::new();
        w.push(Covered {
            lane: LaneId::Live,
            prev: Some(2),
            last: 9,
            first: 3,
            end: 10,
            messages: 5,
            bytes: 50,
            received_ms: 0,
        }); // an envelope of 5 messages covering 3..10
        assert_eq!(ends(w.pop_done()), None);
        w.on_written(0).unwrap();
        assert_eq!(
            w.pop_done(),
            Some(Popped {
                end: 10,
                publishes: 1,
                messages: 5,
                bytes: 50,
            })
        );
        assert_eq!(w.on_written(0), Err(WindowError::UnexpectedPublish(0)));
    }

    #[test]
    fn lanes_have_their_own_first_pending_and_resume_point() {
        let mut w = Window::new();
        let replay = |seq: Seq, prev: Option<Seq>| Covered {
            lane: LaneId::Replay,
            prev,
            ..one(seq)
        };
        w.push(replay(3, Some(1)));
        w.push(one(100));
        w.push(replay(5, Some(3)));
        for pkid in 1..=3 {
            w.on_written(pkid).unwrap();
        }
        assert_eq!(
            (w.lane_slots(LaneId::Replay), w.lane_slots(LaneId::Live)),
            (2, 1)
        );
        assert!(w.on_acked(2).is_some(), "the live publish");
        assert!(w.on_acked(1).is_some());
        assert_eq!(w.first_pending_of(LaneId::Live), None);
        assert_eq!(w.first_pending_of(LaneId::Replay), Some(5));
        let s = w.lane_summary(LaneId::Replay);
        assert_eq!(
            (s.resume_prev, s.messages, s.last),
            (Some(Some(3)), 1, Some(5))
        );
        assert_eq!(w.lane_summary(LaneId::Live).resume_prev, None);
        assert_eq!(w.pop_done().map(|p| p.end), Some(101));
        assert_eq!(w.lane_slots(LaneId::Replay), 1);
    }

    #[test]
    fn clear_forgets_acks_of_the_old_connection() {
        let mut w = Window::new();
        w.push(one(0));
        w.on_written(1).unwrap();
        w.clear();
        assert!(w.is_empty());
        w.push(one(0));
        assert!(
            w.on_acked(1).is_none(),
            "ack for the previous connection's publish"
        );
        w.on_written(1).unwrap();
        assert!(w.on_acked(1).is_some());
        assert_eq!(ends(w.pop_done()), Some((1, 1)));
    }

    /// Property: with acks in any order, `pop_done` only ever reports the end of a
    /// contiguous prefix of acknowledged publishes, and reaches the end once all are acked.
    #[test]
    fn cursor_never_passes_an_unacked_publish() {
        use proptest::prelude::*;
        proptest!(|(order in Just((1u16..=40).collect::<Vec<_>>()).prop_shuffle())| {
            let mut w = Window::new();
            for seq in 0..40u64 {
                w.push(one(seq));
                w.on_written(u16::try_from(seq + 1).unwrap()).unwrap();
            }
            let mut acked = std::collections::BTreeSet::new();
            let mut cursor = 0u64;
            for pkid in order {
                prop_assert!(w.on_acked(pkid).is_some());
                acked.insert(u64::from(pkid) - 1);
                if let Some(Popped { end, .. }) = w.pop_done() {
                    prop_assert!(end > cursor);
                    cursor = end;
                }
                prop_assert!((0..cursor).all(|s| acked.contains(&s)));
                prop_assert!(cursor == 40 || !acked.contains(&cursor));
            }
            prop_assert_eq!(cursor, 40);
        });
    }
}
