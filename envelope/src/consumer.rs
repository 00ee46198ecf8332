//! Cloud-side de-duplication and gap detection: [`Deduplicator`].
//!
//! Per gateway (forwarding stream) it keeps the seqs *covered* by the units received so
//! far as a set of disjoint inclusive ranges. A unit (an envelope, or one `each`-mode
//! message) covering `(prev_seq, last_seq]` vouches for every message the bridge forwarded
//! in that range, so a message whose seq is already covered was received before: a
//! duplicate. A hole between two covered ranges is a *gap*: some unit covering it has not
//! arrived (yet: units may arrive out of order, and a gap that fills is no longer reported).
//!
//! Memory is bounded by the number of open gaps, not by the number of messages: once the
//! stream is complete up to a seq, everything below collapses into one range (its end is
//! the *watermark*). When a gateway has more than [`Limits::max_gaps`] open gaps, the
//! lowest is given up (counted in [`GatewayReport::abandoned_gaps`]) and treated as
//! covered, so a message in it arriving later counts as a duplicate.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::{Coverage, Envelope, MessageId, SeqRange};

/// Bounds on a [`Deduplicator`]'s memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Open gaps kept per gateway before the lowest is abandoned.
    pub max_gaps: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_gaps: 4096 }
    }
}

/// Whether a message is new.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not seen before: process it.
    New,
    /// Its seq was already covered: a resend; drop it.
    Duplicate,
}

/// De-duplicates and detects gaps across any number of gateways. Feed it every unit in
/// arrival order.
#[derive(Debug, Default)]
pub struct Deduplicator {
    limits: Limits,
    streams: BTreeMap<String, Stream>,
}

#[derive(Debug, Default)]
struct Stream {
    /// Covered seqs: start -> end (inclusive), disjoint and never adjacent.
    covered: BTreeMap<u64, u64>,
    accepted: u64,
    duplicates: u64,
    unchained: u64,
    abandoned_gaps: u64,
}

/// What a [`Deduplicator`] knows about one gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GatewayReport {
    /// The gateway (stream) name.
    pub gateway: String,
    /// Messages seen for the first time.
    pub accepted: u64,
    /// Messages seen again.
    pub duplicates: u64,
    /// `each`-mode messages without `tern-prev`: when non-zero, gaps are not meaningful.
    pub unchained: u64,
    /// Lowest and highest covered seq, `None` before the first unit.
    pub covered: Option<SeqRange>,
    /// Last seq of the lowest covered range: the stream is complete from its first covered
    /// seq through here.
    pub watermark: Option<u64>,
    /// Open gaps, lowest first: seq ranges no received unit covers, between covered ones.
    pub gaps: Vec<SeqRange>,
    /// Gaps given up because of [`Limits::max_gaps`].
    pub abandoned_gaps: u64,
}

impl Deduplicator {
    /// A de-duplicator with default [`Limits`].
    pub fn new() -> Self {
        Self::default()
    }

    /// A de-duplicator with the given limits (`max_gaps` at least 1).
    pub fn with_limits(limits: Limits) -> Self {
        Self {
            limits: Limits {
                max_gaps: limits.max_gaps.max(1),
            },
            streams: BTreeMap::new(),
        }
    }

    /// One `each`-mode message: its id and, when the sender gave `tern-prev`, the range it
    /// covers (see [`crate::each::provenance`]).
    pub fn observe(&mut self, id: &MessageId, coverage: Option<Coverage>) -> Verdict {
        let max_gaps = self.limits.max_gaps;
        let stream = self.stream(&id.gateway);
        let verdict = stream.message(id.seq);
        match coverage {
            Some(coverage) => stream.cover(coverage),
            None => stream.unchained += 1,
        }
        stream.enforce(max_gaps);
        verdict
    }

    /// A whole envelope: one verdict per message, in order.
    pub fn observe_envelope(&mut self, envelope: &Envelope) -> Vec<Verdict> {
        let max_gaps = self.limits.max_gaps;
        let stream = self.stream(&envelope.gateway);
        let verdicts = envelope
            .messages
            .iter()
            .map(|m| stream.message(m.seq))
            .collect();
        stream.cover(envelope.coverage());
        stream.enforce(max_gaps);
        verdicts
    }

    /// Whether `id` was seen (or lies in a covered range).
    pub fn is_duplicate(&self, id: &MessageId) -> bool {
        self.streams
            .get(&id.gateway)
            .is_some_and(|s| s.contains(id.seq))
    }

    /// The report of one gateway, `None` if nothing of it arrived.
    pub fn gateway(&self, gateway: &str) -> Option<GatewayReport> {
        self.streams.get(gateway).map(|s| s.report(gateway))
    }

    /// Reports of every gateway, by name.
    pub fn reports(&self) -> Vec<GatewayReport> {
        self.streams.iter().map(|(g, s)| s.report(g)).collect()
    }

    fn stream(&mut self, gateway: &str) -> &mut Stream {
        if !self.streams.contains_key(gateway) {
            self.streams.insert(gateway.to_owned(), Stream::default());
        }
        self.streams.get_mut(gateway).expect("inserted above")
    }
}

impl Stream {
    fn contains(&self, seq: u64) -> bool {
        self.covered
            .range(..=seq)
            .next_back()
            .is_some_and(|(_, &end)| end >= seq)
    }

    /// Classifies one message and covers its own seq.
    fn message(&mut self, seq: u64) -> Verdict {
        if self.contains(seq) {
            self.duplicates += 1;
            Verdict::Duplicate
        } else {
            self.accepted += 1;
            self.insert(SeqRange {
                first: seq,
                last: seq,
            });
            Verdict::New
        }
    }

    fn cover(&mut self, coverage: Coverage) {
        if let Some(range) = coverage.range() {
            self.insert(range);
        }
    }

    /// Adds `range`, merging it with every range it overlaps or touches.
    fn insert(&mut self, range: SeqRange) {
        let (mut first, mut last) = (range.first, range.last);
        let mut merged = Vec::new();
        for (&start, &end) in self.covered.range(..=last.saturating_add(1)).rev() {
            if end.saturating_add(1) < first {
                break;
            }
            merged.push(start);
            first = first.min(start);
            last = last.max(end);
        }
        for start in merged {
            self.covered.remove(&start);
        }
        self.covered.insert(first, last);
    }

    /// Gives up the lowest gaps until at most `max_gaps` remain.
    fn enforce(&mut self, max_gaps: usize) {
        while self.covered.len() > max_gaps.saturating_add(1) {
            let (Some((start, _)), Some((_, next_end))) =
                (self.covered.pop_first(), self.covered.pop_first())
            else {
                return;
            };
            self.covered.insert(start, next_end);
            self.abandoned_gaps += 1;
        }
    }

    fn report(&self, gateway: &str) -> GatewayReport {
        let first = self.covered.first_key_value();
        let last = self.covered.last_key_value();
        let gaps = self
            .covered
            .iter()
            .zip(self.covered.iter().skip(1))
            .map(|((_, &end), (&next_start, _))| SeqRange {
                first: end + 1,
                last: next_start - 1,
            })
            .collect();
        GatewayReport {
            gateway: gateway.to_owned(),
            accepted: self.accepted,
            duplicates: self.duplicates,
            unchained: self.unchained,
            covered: first
                .zip(last)
                .map(|((&first, _), (_, &last))| SeqRange { first, last }),
            watermark: first.map(|(_, &end)| end),
            gaps,
            abandoned_gaps: self.abandoned_gaps,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn each(d: &mut Deduplicator, seq: u64, prev: Option<u64>) -> Verdict {
        let coverage = Coverage {
            prev_seq: prev,
            last_seq: seq,
        };
        d.observe(&MessageId::new("gw", seq), Some(coverage))
    }

    fn range(first: u64, last: u64) -> SeqRange {
        SeqRange { first, last }
    }

    /// The log holds other topics: forwarded seqs 2, 5, 9 chain without gaps.
    #[test]
    fn sparse_seqs_chain_without_gaps() {
        let mut d = Deduplicator::new();
        assert_eq!(each(&mut d, 2, None), Verdict::New);
        assert_eq!(each(&mut d, 5, Some(2)), Verdict::New);
        assert_eq!(each(&mut d, 9, Some(5)), Verdict::New);
        assert_eq!(each(&mut d, 5, Some(2)), Verdict::Duplicate);
        let r = d.gateway("gw").unwrap();
        assert_eq!((r.accepted, r.duplicates, r.watermark), (3, 1, Some(9)));
        assert_eq!(r.gaps, []);
        assert_eq!(r.covered, Some(range(0, 9)));
    }

    #[test]
    fn a_lost_message_is_a_gap_until_it_arrives() {
        let mut d = Deduplicator::new();
        each(&mut d, 2, None);
        each(&mut d, 9, Some(5)); // 5 lost (for now)
        assert_eq!(d.gateway("gw").unwrap().gaps, [range(3, 5)]);
        assert!(!d.is_duplicate(&MessageId::new("gw", 5)));
        assert_eq!(each(&mut d, 5, Some(2)), Verdict::New);
        let r = d.gateway("gw").unwrap();
        assert_eq!((r.gaps, r.watermark), (vec![], Some(9)));
    }

    #[test]
    fn unchained_ids_still_deduplicate() {
        let mut d = Deduplicator::new();
        let id = MessageId::new("other", 7);
        assert_eq!(d.observe(&id, None), Verdict::New);
        assert_eq!(d.observe(&id, None), Verdict::Duplicate);
        let r = d.gateway("other").unwrap();
        assert_eq!((r.accepted, r.duplicates, r.unchained), (1, 1, 2));
        assert!(d.gateway("gw").is_none());
    }

    #[test]
    fn gateways_are_independent() {
        let mut d = Deduplicator::new();
        assert_eq!(d.observe(&MessageId::new("a", 1), None), Verdict::New);
        assert_eq!(d.observe(&MessageId::new("b", 1), None), Verdict::New);
        let names: Vec<String> = d.reports().into_iter().map(|r| r.gateway).collect();
        assert_eq!(names, ["a", "b"]);
    }

    #[test]
    fn the_lowest_gaps_are_abandoned_beyond_the_limit() {
        let mut d = Deduplicator::with_limits(Limits { max_gaps: 2 });
        for seq in [10, 20, 30, 40] {
            each(&mut d, seq, Some(seq - 1));
        }
        let r = d.gateway("gw").unwrap();
        assert_eq!(r.gaps, [range(21, 29), range(31, 39)]);
        assert_eq!(r.abandoned_gaps, 1);
        // The abandoned gap counts as covered now.
        assert_eq!(each(&mut d, 15, Some(14)), Verdict::Duplicate);
    }
}
