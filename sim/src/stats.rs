//! Loss, duplicate and latency accounting.

use hdrhistogram::Histogram;
use serde::Serialize;

/// A growable set of sequence numbers (a bitmap).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeqSet {
    words: Vec<u64>,
    len: u64,
}

impl SeqSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    fn index(seq: u64) -> (usize, u64) {
        (
            usize::try_from(seq / 64).unwrap_or(usize::MAX),
            1 << (seq % 64),
        )
    }

    /// Adds `seq`; `false` when it was already present.
    pub fn insert(&mut self, seq: u64) -> bool {
        let (w, bit) = Self::index(seq);
        if w >= self.words.len() {
            self.words.resize(w + 1, 0);
        }
        let word = &mut self.words[w];
        if *word & bit != 0 {
            return false;
        }
        *word |= bit;
        self.len += 1;
        true
    }

    /// Whether `seq` is present.
    pub fn contains(&self, seq: u64) -> bool {
        let (w, bit) = Self::index(seq);
        self.words.get(w).is_some_and(|word| word & bit != 0)
    }

    /// Number of members.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Members of `self` missing from `other`.
    pub fn missing_from(&self, other: &SeqSet) -> u64 {
        self.words
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let o = other.words.get(i).copied().unwrap_or(0);
                u64::from((w & !o).count_ones())
            })
            .sum()
    }
}

/// What one subscriber saw.
#[derive(Debug, Clone)]
pub struct Ledger {
    /// Sequence numbers received, per device.
    pub received: Vec<SeqSet>,
    /// Messages received, duplicates included.
    pub total: u64,
    unique: u64,
    /// Messages whose sequence number had already been received.
    pub duplicates: u64,
    /// Messages of another run, of an unknown device or not decodable.
    pub foreign: u64,
    /// End-to-end latency, microseconds.
    pub latency_us: Histogram<u64>,
}

impl Ledger {
    /// An empty ledger for `devices` devices.
    pub fn new(devices: usize) -> Self {
        Self {
            received: vec![SeqSet::new(); devices],
            total: 0,
            unique: 0,
            duplicates: 0,
            foreign: 0,
            latency_us: new_histogram(),
        }
    }

    /// Records one message of `device` with sequence `seq`, `latency_us` after
    /// it was sent.
    pub fn record(&mut self, device: u32, seq: u64, latency_us: u64) {
        let Some(set) = usize::try_from(device)
            .ok()
            .and_then(|d| self.received.get_mut(d))
        else {
            self.foreign += 1;
            return;
        };
        self.total += 1;
        if set.insert(seq) {
            self.unique += 1;
        } else {
            self.duplicates += 1;
        }
        self.latency_us.saturating_record(latency_us.max(1));
    }

    /// Unique messages received.
    pub fn unique(&self) -> u64 {
        self.unique
    }

    /// Acknowledged messages (per device) this subscriber never received.
    pub fn lost(&self, acked: &[SeqSet]) -> u64 {
        acked
            .iter()
            .enumerate()
            .map(|(d, a)| match self.received.get(d) {
                Some(r) => a.missing_from(r),
                None => a.len(),
            })
            .sum()
    }
}

/// A histogram for microsecond latencies up to one hour, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap_or_else(|_| {
        Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant digits are valid"))
    })
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Latency {
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

impl Latency {
    /// Percentiles of `h` (microseconds); zeros when empty.
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        #[allow(
            clippy::cast_precision_loss,
            reason = "latencies are far below 2^52 microseconds"
        )]
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            max_ms: ms(h.max()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seqset_insert_and_difference() {
        let mut a = SeqSet::new();
        assert!(a.insert(0));
        assert!(a.insert(63));
        assert!(a.insert(64));
        assert!(a.insert(1000));
        assert!(!a.insert(64));
        assert_eq!(a.len(), 4);
        assert!(a.contains(1000) && !a.contains(999));
        let mut b = SeqSet::new();
        b.insert(0);
        b.insert(64);
        assert_eq!(a.missing_from(&b), 2);
        assert_eq!(b.missing_from(&a), 0);
        assert_eq!(a.missing_from(&SeqSet::new()), 4);
    }

    #[test]
    fn ledger_counts_loss_and_duplicates() {
        let mut acked = vec![SeqSet::new(), SeqSet::new()];
        for s in 0..10 {
            acked[0].insert(s);
            acked[1].insert(s);
        }
        let mut l = Ledger::new(2);
        for s in 0..10 {
            if s != 4 {
                l.record(0, s, 1500);
            }
            l.record(1, s, 2500);
        }
        // A redelivery, a message never acknowledged (still in flight at the
        // end), an unknown device.
        l.record(1, 3, 100);
        l.record(1, 10, 100);
        l.record(9, 0, 100);
        assert_eq!(l.total, 21);
        assert_eq!(l.unique(), 20);
        assert_eq!(l.duplicates, 1);
        assert_eq!(l.foreign, 1);
        assert_eq!(l.lost(&acked), 1);
        let lat = Latency::of(&l.latency_us);
        assert!(lat.p50_ms > 1.4 && lat.p50_ms < 2.6, "{lat:?}");
        assert!(lat.max_ms >= 2.49);
    }
}
