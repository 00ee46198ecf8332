//! What a bridge still has to send beyond the messages it holds in memory: the *ledger*, a
//! summary of the log range the bridge has counted but not loaded, in segments.
//!
//! The bridge reads the log once to count it (the scan) and, for the part it cannot keep
//! in memory, a second time when it is about to send it (the refill). The ledger keeps,
//! for each stretch of at most one read chunk of log positions, how many messages of this
//! bridge it holds, their bytes and the reception time of the first, so the backlog's
//! count, bytes and age are known without holding the messages, in memory bounded by the
//! number of stretches (one per chunk of 4096 log entries or fewer).
//!
//! Sans-IO: the bridge task feeds it what it read.

use std::collections::VecDeque;

use crate::store::Seq;

/// The selected messages of one stretch of the log, `[first, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// First log position of the stretch.
    pub first: Seq,
    /// One past its last log position.
    pub end: Seq,
    /// Messages of this bridge in it.
    pub messages: u64,
    /// Their bytes ([`super::select::Forward::size`]).
    pub bytes: u64,
    /// Reception time (Unix ms) of the first of them; 0 when there is none.
    pub oldest_ms: u64,
    /// Seq of the last of them (meaningless when there is none).
    pub last_seq: Seq,
}

/// Counted, not loaded: contiguous segments, oldest first.
#[derive(Debug, Default)]
pub struct Ledger {
    segments: VecDeque<Segment>,
    messages: u64,
    bytes: u64,
}

/// What a refill of the front segment found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refilled {
    /// The whole front segment is loaded (it left the ledger).
    pub complete: bool,
    /// Messages the ledger counted there that the read did not return (trimmed by the
    /// store or expired); counted only once the segment is complete.
    pub missing: u64,
}

impl Ledger {
    /// An empty ledger.
    pub fn new() -> Self {
        Self::default()
    }

    /// Messages counted.
    pub fn messages(&self) -> u64 {
        self.messages
    }

    /// Their bytes.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Whether nothing is counted (no segment).
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// The oldest segment.
    pub fn front(&self) -> Option<&Segment> {
        self.segments.front()
    }

    /// The segment after the oldest.
    pub fn second(&self) -> Option<&Segment> {
        self.segments.get(1)
    }

    /// Reception time of the oldest message counted (0 if none).
    pub fn oldest_ms(&self) -> u64 {
        self.segments
            .iter()
            .find(|s| s.messages > 0)
            .map_or(0, |s| s.oldest_ms)
    }

    /// Appends a scanned stretch right after the last one. It merges into the last segment
    /// while the merged stretch spans at most `span` log positions, so a refill of `span`
    /// records always loads a whole segment.
    pub fn push_back(&mut self, segment: Segment, span: u64) {
        self.messages += segment.messages;
        self.bytes += segment.bytes;
        if let Some(last) = self.segments.back_mut()
            && last.end == segment.first
            && segment.end - last.first <= span
        {
            last.end = segment.end;
            if last.messages == 0 {
                last.oldest_ms = segment.oldest_ms;
            }
            if segment.messages > 0 {
                last.last_seq = segment.last_seq;
            }
            last.messages += segment.messages;
            last.bytes += segment.bytes;
            return;
        }
        self.segments.push_back(segment);
    }

    /// Seq of the last message counted, if any.
    pub fn last_seq(&self) -> Option<Seq> {
        self.segments
            .iter()
            .rev()
            .find(|s| s.messages > 0)
            .map(|s| s.last_seq)
    }

    /// Puts a stretch back in front (messages unloaded after a lost connection).
    pub fn push_front(&mut self, segment: Segment) {
        self.messages += segment.messages;
        self.bytes += segment.bytes;
        self.segments.push_front(segment);
    }

    /// Gives up the front segment whole.
    pub fn pop_front(&mut self) -> Option<Segment> {
        let segment = self.segments.pop_front()?;
        self.messages -= segment.messages;
        self.bytes -= segment.bytes;
        Some(segment)
    }

    /// A refill read the front segment from its start up to `next` (one past the last
    /// record examined) and loaded `found` messages of `found_bytes` bytes below its end.
    pub fn refilled(&mut self, next: Seq, found: u64, found_bytes: u64) -> Refilled {
        let Some(front) = self.segments.front_mut() else {
            return Refilled {
                complete: true,
                missing: 0,
            };
        };
        if next >= front.end {
            let missing = front.messages.saturating_sub(found);
            self.pop_front();
            return Refilled {
                complete: true,
                missing,
            };
        }
        let found = found.min(front.messages);
        let found_bytes = found_bytes.min(front.bytes);
        front.first = next.max(front.first);
        front.messages -= found;
        front.bytes -= found_bytes;
        self.messages -= found;
        self.bytes -= found_bytes;
        Refilled {
            complete: false,
            missing: 0,
        }
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.segments.clear();
        self.messages = 0;
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(first: Seq, end: Seq, messages: u64) -> Segment {
        Segment {
            first,
            end,
            messages,
            bytes: messages * 10,
            oldest_ms: first * 1000,
            last_seq: end - 1,
        }
    }

    #[test]
    fn scans_merge_up_to_the_span() {
        let mut l = Ledger::new();
        l.push_back(seg(0, 10, 5), 100);
        l.push_back(seg(10, 50, 0), 100);
        l.push_back(seg(50, 100, 7), 100);
        assert_eq!(l.segments.len(), 1);
        assert_eq!((l.messages(), l.bytes()), (12, 120));
        l.push_back(seg(100, 101, 1), 100);
        assert_eq!(l.segments.len(), 2, "would span 101 positions");
        assert_eq!(l.oldest_ms(), 0);
        assert_eq!(
            l.front().map(|s| (s.first, s.end, s.messages)),
            Some((0, 100, 12))
        );
    }

    #[test]
    fn an_empty_front_takes_the_age_of_what_merges_into_it() {
        let mut l = Ledger::new();
        l.push_back(seg(5, 10, 0), 100);
        l.push_back(seg(10, 20, 2), 100);
        assert_eq!(l.oldest_ms(), 10_000);
    }

    #[test]
    fn refills_shrink_then_complete_and_report_what_is_missing() {
        let mut l = Ledger::new();
        l.push_back(seg(0, 100, 10), 100);
        l.push_back(seg(100, 200, 4), 100);
        let r = l.refilled(40, 3, 30);
        assert_eq!(
            r,
            Refilled {
                complete: false,
                missing: 0
            }
        );
        assert_eq!(l.front().map(|s| (s.first, s.messages)), Some((40, 7)));
        assert_eq!(l.messages(), 11);
        // The rest of the stretch: two of the seven were trimmed meanwhile.
        let r = l.refilled(100, 5, 50);
        assert_eq!(
            r,
            Refilled {
                complete: true,
                missing: 2
            }
        );
        assert_eq!((l.messages(), l.bytes()), (4, 40));
        assert_eq!(l.pop_front(), Some(seg(100, 200, 4)));
        assert!(l.is_empty());
        assert_eq!((l.messages(), l.bytes()), (0, 0));
    }

    #[test]
    fn a_stretch_put_back_in_front_is_refilled_first() {
        let mut l = Ledger::new();
        l.push_back(seg(50, 60, 2), 100);
        l.push_front(seg(10, 50, 8));
        assert_eq!(l.front().map(|s| s.first), Some(10));
        assert_eq!(l.second().map(|s| s.first), Some(50));
        assert_eq!(l.messages(), 10);
        l.clear();
        assert!(l.is_empty() && l.messages() == 0);
    }
}
