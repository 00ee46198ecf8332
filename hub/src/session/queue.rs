//! Bounded per-session message queue and its overflow policy.
//!
//! The queue holds messages routed to a session that are not in flight yet: the backlog of an
//! online client behind its in-flight window, and everything queued for an offline persistent
//! session. Entries hold `Arc<Message>`, so online delivery never reads the store; entries of
//! persistent sessions also carry their log position (`seq`), which the store's queue table
//! mirrors. Every tracked entry that leaves the queue other than by [`SessionQueue::pop`]
//! (overflow, expiry) is reported through [`SessionQueue::take_discarded`], so its owner
//! can remove the store's copy too.
//!
//! Under policy `backpressure` a publisher that finds the queue of a connected session full
//! waits (bounded) for room: [`SessionQueue::try_push`] hands the message back and
//! [`SessionQueue::room`] is notified whenever a pop takes the queue below its capacity.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Notify;

use crate::config::QueueOverflow;
use crate::message::QueuedMessage;
use crate::store::Seq;

/// A drained queue whose room grew beyond this many entries gives it back to the allocator,
/// keeping [`KEEP_CAPACITY`]. A backlog of a slow subscriber grows the queue to its full
/// capacity (10 000 entries by default, ~0.9 MB of entries, kept until the session ends);
/// smaller swings keep their room, so a queue that empties and refills often does not
/// reallocate each time.
const SHRINK_ABOVE: usize = 4096;
/// Entries of room a queue keeps when it gives back a backlog's room.
const KEEP_CAPACITY: usize = 256;

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

/// FIFO of messages for one session, never longer than its capacity.
#[derive(Debug)]
pub struct SessionQueue {
    items: VecDeque<QueuedMessage>,
    capacity: usize,
    overflow: QueueOverflow,
    /// Seqs of tracked entries dropped by overflow or expiry, not yet removed from the store.
    discarded: Vec<Seq>,
    /// Notified when a pop makes room in a full queue (publishers waiting under
    /// `backpressure`).
    room: Arc<Notify>,
}

impl SessionQueue {
    /// An empty queue holding at most `capacity` messages (at least one).
    pub fn new(capacity: usize, overflow: QueueOverflow) -> Self {
        Self {
            items: VecDeque::new(),
            capacity: capacity.max(1),
            overflow,
            discarded: Vec::new(),
            room: Arc::new(Notify::new()),
        }
    }

    /// Queues `item` if there is room; otherwise hands it back (nothing is dropped).
    pub fn try_push(&mut self, item: QueuedMessage) -> Result<(), QueuedMessage> {
        if self.items.len() < self.capacity {
            self.items.push_back(item);
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
        self.overflow
    }

    /// Appends a message, applying the overflow policy when full.
    pub fn push(&mut self, item: QueuedMessage) -> PushOutcome {
        if self.items.len() < self.capacity {
            self.items.push_back(item);
            return PushOutcome::Queued;
        }
        match self.overflow {
            QueueOverflow::DropNew => {
                self.discarded.extend(item.seq);
                PushOutcome::DroppedNew
            }
            // A publisher that waited in vain (or an offline session) falls back to dropping
            // the oldest message.
            QueueOverflow::DropOldest | QueueOverflow::Backpressure => {
                if let Some(old) = self.items.pop_front() {
                    self.discarded.extend(old.seq);
                }
                self.items.push_back(item);
                PushOutcome::DroppedOldest
            }
        }
    }

    /// Hands back seqs taken with [`SessionQueue::take_discarded`] for the owner to remove.
    pub fn return_discarded(&mut self, seqs: Vec<Seq>) {
        self.discarded.extend(seqs);
    }

    /// Takes the seqs of tracked entries dropped since the last call (overflow, expiry).
    pub fn take_discarded(&mut self) -> Vec<Seq> {
        std::mem::take(&mut self.discarded)
    }

    /// Takes the oldest message that has not expired at `now`; expired ones are discarded
    /// and counted in `expired`.
    pub fn pop(&mut self, now: Instant, expired: &mut u64) -> Option<QueuedMessage> {
        if self.items.len() >= self.capacity {
            // Room after this pop: wake publishers waiting for it.
            self.room.notify_waiters();
        }
        let mut next = None;
        while let Some(item) = self.items.pop_front() {
            if item.message.is_expired(now) {
                *expired += 1;
                self.discarded.extend(item.seq);
                continue;
            }
            next = Some(item);
            break;
        }
        if self.items.is_empty() {
            self.release_backlog_room();
        }
        next
    }

    /// Gives back the room of a worked-off backlog (see [`SHRINK_ABOVE`]).
    fn release_backlog_room(&mut self) {
        if self.items.capacity() > SHRINK_ABOVE {
            self.items.shrink_to(KEEP_CAPACITY);
        }
    }

    /// Drops every QoS 0 message (they are not kept for an offline session).
    pub fn retain_qos_above_zero(&mut self) {
        self.items
            .retain(|item| item.qos != tern_mqtt::QoS::AtMostOnce);
        self.room.notify_waiters();
    }

    /// Number of queued messages.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use bytes::Bytes;
    use tern_mqtt::QoS;

    use super::*;
    use crate::message::{Expiry, Message, MessageProperties};

    fn item(payload: &'static str, expiry: Option<Expiry>) -> QueuedMessage {
        QueuedMessage {
            message: Arc::new(Message {
                topic: "t".into(),
                payload: Bytes::from_static(payload.as_bytes()),
                qos: QoS::AtLeastOnce,
                retain: false,
                properties: MessageProperties::default(),
                expiry,
                publisher: Arc::from("p"),
            }),
            qos: QoS::AtLeastOnce,
            retain: false,
            subscription_ids: Default::default(),
            seq: None,
        }
    }

    #[test]
    fn dropped_tracked_entries_are_reported() {
        let tracked = |payload, seq| QueuedMessage {
            seq: Some(seq),
            ..item(payload, None)
        };
        let mut queue = SessionQueue::new(1, QueueOverflow::DropOldest);
        queue.push(tracked("a", 1));
        queue.push(tracked("b", 2));
        assert_eq!(queue.take_discarded(), [1]);
        let mut queue = SessionQueue::new(1, QueueOverflow::DropNew);
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
        let mut queue = SessionQueue::new(10_000, QueueOverflow::Backpressure);
        for _ in 0..10_000 {
            assert_eq!(queue.push(item("m", None)), PushOutcome::Queued);
        }
        let grown = queue.items.capacity();
        assert!(grown >= 10_000);
        assert_eq!(drain(&mut queue).len(), 10_000);
        assert!(queue.items.capacity() <= KEEP_CAPACITY);
        // Still a queue of the same capacity afterwards.
        for _ in 0..10_000 {
            assert_eq!(queue.push(item("n", None)), PushOutcome::Queued);
        }
        assert_eq!(queue.push(item("o", None)), PushOutcome::DroppedOldest);
    }

    #[test]
    fn drop_oldest_keeps_the_newest() {
        let mut queue = SessionQueue::new(2, QueueOverflow::DropOldest);
        assert_eq!(queue.push(item("a", None)), PushOutcome::Queued);
        assert_eq!(queue.push(item("b", None)), PushOutcome::Queued);
        assert_eq!(queue.push(item("c", None)), PushOutcome::DroppedOldest);
        assert_eq!(drain(&mut queue), ["b", "c"]);
    }

    #[test]
    fn drop_new_keeps_the_oldest() {
        let mut queue = SessionQueue::new(2, QueueOverflow::DropNew);
        queue.push(item("a", None));
        queue.push(item("b", None));
        assert_eq!(queue.push(item("c", None)), PushOutcome::DroppedNew);
        assert_eq!(drain(&mut queue), ["a", "b"]);
    }

    #[test]
    fn expired_messages_are_skipped_and_counted() {
        let long_ago = Instant::now().checked_sub(Duration::from_secs(10));
        let Some(received_at) = long_ago else { return };
        let mut queue = SessionQueue::new(10, QueueOverflow::DropOldest);
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
}
