//! Property tests: both formats round-trip every valid envelope; decoding arbitrary or
//! corrupted bytes returns an error instead of panicking; the de-duplicator agrees with a
//! naive model that remembers every seq.

use std::collections::BTreeSet;

use proptest::prelude::*;
use tern_envelope::consumer::{Deduplicator, Limits, Verdict};
use tern_envelope::{Envelope, Format, ForwardedMessage, SeqRange, decode, encode};

fn message(seq: u64) -> impl Strategy<Value = ForwardedMessage> {
    (
        "[a-z/+#]{0,12}",
        any::<u64>(),
        0u8..=2,
        any::<bool>(),
        proptest::option::of("[ -~]{0,8}"),
        proptest::collection::vec(("\\PC{0,4}", "\\PC{0,4}"), 0..3),
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..64),
            "\\PC{0,16}".prop_map(String::into_bytes),
        ],
    )
        .prop_map(
            move |(topic, received_ms, qos, retain, content_type, user_properties, payload)| {
                ForwardedMessage {
                    seq,
                    topic,
                    received_ms,
                    qos,
                    retain,
                    content_type,
                    user_properties,
                    payload,
                }
            },
        )
}

fn envelope() -> impl Strategy<Value = Envelope> {
    (
        "[!-~]{1,12}",
        proptest::option::of(0u64..u64::MAX / 2),
        proptest::collection::btree_set(1u64..1_000_000, 0..8),
        0u64..1000,
        any::<u64>(),
    )
        .prop_flat_map(|(gateway, prev, offsets, tail, created_ms)| {
            let base = prev.unwrap_or(0);
            let seqs: Vec<u64> = offsets
                .iter()
                .map(|o| if prev.is_some() { base + o } else { o - 1 })
                .collect();
            let last_seq = seqs.last().copied().unwrap_or(base) + tail;
            let messages: Vec<_> = seqs.into_iter().map(message).collect();
            (
                Just(gateway),
                Just(prev),
                Just(last_seq),
                Just(created_ms),
                messages,
            )
        })
        .prop_map(
            |(gateway, prev_seq, last_seq, created_ms, messages)| Envelope {
                gateway,
                prev_seq,
                last_seq,
                created_ms,
                messages,
                // Both values of the replay marker, from the generated time.
                replay: created_ms % 2 == 1,
            },
        )
}

proptest! {
    /// Every valid envelope decodes to itself from both formats.
    #[test]
    fn round_trip(envelope in envelope()) {
        prop_assert_eq!(envelope.validate(), Ok(()));
        for format in [Format::Postcard, Format::JsonLines] {
            let bytes = encode(&envelope, format).unwrap();
            prop_assert_eq!(decode(&bytes), Ok(envelope.clone()));
        }
    }

    /// Arbitrary bytes, with or without a valid prefix, never panic the decoder.
    #[test]
    fn arbitrary_bytes_never_panic(prefix in prop_oneof![Just(&b""[..]), Just(&b"TERN\x01\x00"[..]), Just(&b"{"[..])],
                                    tail in proptest::collection::vec(any::<u8>(), 0..256)) {
        let mut bytes = prefix.to_vec();
        bytes.extend(tail);
        let _ = decode(&bytes);
    }

    /// Corrupting a valid encoding (one byte changed, or truncated) yields an error or a
    /// valid envelope, never a panic.
    #[test]
    fn corrupted_encodings_never_panic(envelope in envelope(), json in any::<bool>(),
                                        at in any::<prop::sample::Index>(), byte in any::<u8>(),
                                        cut in any::<prop::sample::Index>()) {
        let format = if json { Format::JsonLines } else { Format::Postcard };
        let mut bytes = encode(&envelope, format).unwrap();
        let i = at.index(bytes.len());
        bytes[i] = byte;
        if let Ok(decoded) = decode(&bytes) {
            prop_assert_eq!(decoded.validate(), Ok(()));
        }
        let _ = decode(&bytes[..cut.index(bytes.len())]);
    }

    /// Against a model that stores every covered seq: the sender splits the forwarded seqs
    /// of one stream into chained units; the network loses, repeats and reorders them.
    /// Verdicts, counts and gaps must match the model.
    #[test]
    fn deduplicator_matches_a_naive_model(
        forwarded in proptest::collection::btree_set(0u64..120, 1..40),
        cuts in proptest::collection::vec(any::<bool>(), 40),
        deliveries in proptest::collection::vec(0usize..3, 40),
        order in Just(()).prop_perturb(|_, rng| rng),
    ) {
        // Units: consecutive runs of forwarded seqs, chained by prev_seq.
        let seqs: Vec<u64> = forwarded.into_iter().collect();
        let mut units: Vec<Envelope> = Vec::new();
        let mut prev = None;
        let mut current = Vec::new();
        for (i, &seq) in seqs.iter().enumerate() {
            current.push(seq);
            if cuts[i] || i + 1 == seqs.len() {
                let last_seq = *current.last().unwrap();
                units.push(Envelope {
                    gateway: "gw".into(),
                    prev_seq: prev,
                    last_seq,
                    created_ms: 0,
                    messages: current.drain(..).map(|seq| ForwardedMessage {
                        seq, topic: "t".into(), received_ms: 0, qos: 1, retain: false,
                        content_type: None, user_properties: vec![], payload: vec![],
                    }).collect(),
                    replay: false,
                });
                prev = Some(last_seq);
            }
        }
        let mut arrivals: Vec<&Envelope> = units
            .iter()
            .zip(&deliveries)
            .flat_map(|(u, &n)| std::iter::repeat_n(u, n))
            .collect();
        let mut rng = order;
        for i in (1..arrivals.len()).rev() {
            arrivals.swap(i, rng.random_range(0..=i));
        }

        let mut dedup = Deduplicator::with_limits(Limits { max_gaps: usize::MAX });
        let mut seen = BTreeSet::new();
        let mut covered = BTreeSet::new();
        let (mut accepted, mut duplicates) = (0, 0);
        for unit in &arrivals {
            let verdicts = dedup.observe_envelope(unit);
            for (m, verdict) in unit.messages.iter().zip(verdicts) {
                let expected = if seen.insert(m.seq) { Verdict::New } else { Verdict::Duplicate };
                prop_assert_eq!(verdict, expected);
                if expected == Verdict::New { accepted += 1 } else { duplicates += 1 }
            }
            let range = unit.coverage().range().unwrap();
            covered.extend(range.first..=range.last);
        }
        let report = dedup.gateway("gw");
        if arrivals.is_empty() {
            prop_assert!(report.is_none());
            return Ok(());
        }
        let report = report.unwrap();
        prop_assert_eq!((report.accepted, report.duplicates), (accepted, duplicates));
        let lo = *covered.first().unwrap();
        let hi = *covered.last().unwrap();
        let mut gaps = Vec::new();
        let mut open: Option<u64> = None;
        for seq in lo..=hi {
            match (covered.contains(&seq), open) {
                (false, None) => open = Some(seq),
                (true, Some(first)) => { gaps.push(SeqRange { first, last: seq - 1 }); open = None; }
                _ => {}
            }
        }
        prop_assert_eq!(report.gaps, gaps);
        prop_assert_eq!(report.covered, Some(SeqRange { first: lo, last: hi }));
    }
}
