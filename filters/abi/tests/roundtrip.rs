//! Round trips: whatever the writers accept, the readers give back unchanged. Properties
//! are checked on arbitrary messages and verdicts, and on every kind of arbitrary input.

mod common;

use common::{Dest, Msg, V, check_canonical, read_verdicts, write_batch, write_verdicts};
use proptest::prelude::*;
use tern_filter_abi::{
    AbiError, Batch, BatchWriter, Destination, EditPart, RecordRef, TemplateRoute, TopicSpan,
    VerdictWriter, Verdicts,
};

fn text() -> impl Strategy<Value = String> {
    "\\PC{0,10}"
}

fn msg() -> impl Strategy<Value = Msg> {
    (
        (text(), text(), 0u8..3, any::<bool>(), any::<u64>()),
        proptest::option::of(text()),
        proptest::collection::vec((text(), text()), 0..4),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..16)),
    )
        .prop_map(
            |((topic, client_id, qos, retain, received_ms), content_type, properties, payload)| {
                Msg {
                    topic,
                    client_id,
                    qos,
                    retain,
                    received_ms,
                    content_type,
                    properties,
                    payload,
                }
            },
        )
}

fn dest() -> impl Strategy<Value = Dest> {
    prop_oneof![
        text().prop_map(Dest::Local),
        (text(), text()).prop_map(|(b, t)| Dest::Bridge(b, t)),
        (
            any::<u16>(),
            proptest::collection::vec(any::<[u8; 4]>(), 0..4)
        )
            .prop_map(|(t, spans)| Dest::Template(t, spans.concat())),
    ]
}

fn verdict() -> impl Strategy<Value = V> {
    let routes = || proptest::collection::vec(dest(), 1..4);
    prop_oneof![
        3 => Just(V::Keep),
        3 => Just(V::Drop),
        1 => msg().prop_map(V::Replace),
        1 => routes().prop_map(V::Route),
        1 => (msg(), routes()).prop_map(|(m, r)| V::Both(m, r)),
    ]
}

proptest! {
    /// A batch written from arbitrary messages reads back as the same messages (with the
    /// payload present exactly when the batch includes payloads, empty when it had none).
    #[test]
    fn batch_round_trip(msgs in proptest::collection::vec(msg(), 0..6), payloads in any::<bool>()) {
        let buf = write_batch(&msgs, payloads);
        let batch = Batch::parse(&buf).unwrap();
        prop_assert_eq!(batch.len(), msgs.len());
        prop_assert_eq!(batch.payloads_included(), payloads);
        let read: Vec<Msg> = batch.iter().map(|m| Msg::from_view(&m.unwrap())).collect();
        let expected: Vec<Msg> = msgs.iter().cloned().map(|mut m| {
            m.payload = payloads.then(|| m.payload.unwrap_or_default());
            m
        }).collect();
        prop_assert_eq!(read, expected);
        for (view, m) in batch.iter().zip(&msgs) {
            let view = view.unwrap();
            for (k, _) in &m.properties {
                let first = m.properties.iter().find(|(k2, _)| k2 == k).map(|(_, v)| v.as_str());
                prop_assert_eq!(view.property(k), first);
            }
        }
        check_canonical(&buf, 0);
    }

    /// Verdicts written from arbitrary per-message decisions read back as the same decisions.
    #[test]
    fn verdict_round_trip(vs in proptest::collection::vec(verdict(), 0..20)) {
        let buf = write_verdicts(&vs);
        let parsed = Verdicts::parse(&buf, vs.len()).unwrap();
        prop_assert_eq!(read_verdicts(&parsed), vs.clone());
        let unchanged = vs.iter().all(|v| *v == V::Keep);
        prop_assert_eq!(parsed.unchanged(), unchanged);
        prop_assert_eq!(buf == [1, 0], unchanged);
        prop_assert_eq!(parsed.all_kept(), vs.iter().all(|v| *v != V::Drop));
        check_canonical(&buf, vs.len());
        // Any other count is rejected (form 0 carries no count, so it matches any).
        if !unchanged {
            prop_assert!(Verdicts::parse(&buf, vs.len() + 1).is_err());
        }
    }

    /// Arbitrary bytes never panic a reader, and whatever they accept is canonical.
    /// The single-template fast path reads exactly the edits the general path reads, and
    /// takes every edit that routes to one template only.
    #[test]
    fn single_template_edits_read_as_the_general_path(vs in proptest::collection::vec(verdict(), 0..20)) {
        let buf = write_verdicts(&vs);
        let v = Verdicts::parse_lazy(&buf, vs.len()).expect("valid");
        let mut edits = v.edits();
        let mut model = vs.iter().enumerate().filter(|(_, x)| !matches!(x, V::Keep | V::Drop));
        loop {
            let single = edits.next_single_template();
            let Some((i, expected)) = model.next() else {
                prop_assert!(single.is_none());
                prop_assert!(edits.next().is_none());
                break;
            };
            match (expected, single) {
                (V::Route(ds), Some(s)) => {
                    prop_assert_eq!(ds.len(), 1);
                    prop_assert_eq!(s.index, i);
                    prop_assert_eq!(&ds[0], &Dest::Template(s.template, s.spans.as_bytes().to_vec()));
                }
                (expected, None) => {
                    prop_assert!(
                        !matches!(expected, V::Route(ds) if matches!(ds[..], [Dest::Template(..)])),
                        "a single-template edit took the general path"
                    );
                    prop_assert_eq!(edits.next().map(|e| e.index), Some(i));
                }
                (expected, Some(s)) => prop_assert!(false, "{:?} read as {:?}", expected, s),
            }
        }
    }

    #[test]
    fn arbitrary_bytes(buf in proptest::collection::vec(any::<u8>(), 0..64), count in 0usize..12) {
        check_canonical(&buf, count);
    }

    /// One changed byte in a valid buffer never panics a reader; what still parses is
    /// canonical.
    #[test]
    fn mutated_buffers(
        msgs in proptest::collection::vec(msg(), 1..4),
        vs in proptest::collection::vec(verdict(), 1..8),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        for (mut buf, count) in [(write_batch(&msgs, true), 0), (write_verdicts(&vs), vs.len())] {
            let i = at.index(buf.len());
            buf[i] = byte;
            check_canonical(&buf, count);
        }
    }
}

#[test]
fn writer_reuses_and_clears_the_buffer() {
    let old = vec![9u8; 100];
    let cap = old.capacity();
    let w = BatchWriter::new(old, false);
    assert!(w.is_empty());
    let buf = w.finish();
    assert_eq!(buf, [1, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(buf.capacity(), cap);
    assert_eq!(VerdictWriter::new(buf, 3).finish(), [1, 0]);
}

#[test]
fn batch_bytes_match_the_documented_layout() {
    let mut m = Msg::new("t").with("k", "v");
    m.qos = 1;
    m.retain = true;
    m.received_ms = 0x0102;
    m.payload = Some(b"P".to_vec());
    let buf = write_batch(&[m], true);
    #[rustfmt::skip]
    let expected: &[u8] = &[
        1, 1, 0, 0, 1, 0, 0, 0,                 // version, payloads, reserved, count 1
        27, 0, 0, 0,                            // record length
        0b0000_1101,                            // QoS 1, RETAIN, payload
        0x02, 0x01, 0, 0, 0, 0, 0, 0,           // received_ms
        1, 0, b't',                             // topic
        0, 0,                                   // client id
        1, 0, 1, 0, b'k', 1, 0, b'v',           // one property
        1, 0, 0, 0, b'P',                       // payload
    ];
    assert_eq!(buf, expected);
}

#[test]
fn verdict_bytes_match_the_documented_layout() {
    let buf = write_verdicts(&[
        V::Keep,
        V::Drop,
        V::Route(vec![Dest::Bridge("b".into(), "t".into())]),
    ]);
    #[rustfmt::skip]
    let expected: &[u8] = &[
        1, 1, 3, 0, 0, 0,         // version, form 1, count 3
        0b101,                    // keep bitmap
        1, 0, 0, 0,               // one edit
        2, 0, 0, 0, 0b10,         // message 2: routes
        1, 0, 1, 1, 0, b'b', 1, 0, b't',
    ];
    assert_eq!(buf, expected);
}

#[test]
fn property_returns_the_first_of_duplicates() {
    let buf = write_batch(
        &[Msg::new("t").with("k", "1").with("x", "").with("k", "2")],
        false,
    );
    let batch = Batch::parse(&buf).unwrap();
    let m = batch.iter().next().unwrap().unwrap();
    assert_eq!(m.property("k"), Some("1"));
    assert_eq!(m.property("x"), Some(""));
    assert_eq!(m.property("missing"), None);
    assert_eq!(m.properties().len(), 3);
    assert_eq!(m.payload(), None);
}

fn rec(topic: &str) -> RecordRef<'_> {
    RecordRef {
        topic,
        client_id: "",
        qos: 0,
        retain: false,
        received_ms: 0,
        content_type: None,
        payload: None,
    }
}

const LOCAL: Destination<'static> = Destination::Local { topic: "x" };

#[test]
fn dropping_removes_edits_anywhere_in_the_list() {
    let mut w = VerdictWriter::new(Vec::new(), 4);
    w.replace(0, &rec("a"), [].into_iter()).unwrap();
    w.route(1, &[LOCAL]).unwrap();
    w.replace(2, &rec("c"), [("k", "v")].into_iter()).unwrap();
    w.route(2, &[LOCAL, LOCAL]).unwrap();
    w.route(3, &[LOCAL]).unwrap();
    w.drop_message(1); // middle
    w.drop_message(3); // tail
    w.drop_message(3); // again: no effect
    w.drop_message(9); // out of range: no effect
    let buf = w.finish();
    let v = Verdicts::parse(&buf, 4).unwrap();
    let got = read_verdicts(&v);
    assert_eq!(got[1], V::Drop);
    assert_eq!(got[3], V::Drop);
    assert!(matches!(&got[0], V::Replace(m) if m.topic == "a"));
    assert!(matches!(&got[2], V::Both(m, r) if m.topic == "c" && r.len() == 2));
}

#[test]
fn writer_rejects_misordered_and_invalid_edits() {
    let mut w = VerdictWriter::new(Vec::new(), 3);
    w.route(1, &[LOCAL]).unwrap();
    assert_eq!(
        w.replace(1, &rec("a"), [].into_iter()),
        Err(AbiError::ReplaceAfterRoute { index: 1 })
    );
    assert_eq!(
        w.route(1, &[LOCAL]),
        Err(AbiError::DuplicateEdit {
            index: 1,
            what: EditPart::Routes
        })
    );
    assert_eq!(
        w.route(0, &[LOCAL]),
        Err(AbiError::OutOfOrder { index: 0, last: 1 })
    );
    assert_eq!(
        w.route(3, &[LOCAL]),
        Err(AbiError::IndexOutOfRange { index: 3, count: 3 })
    );
    assert_eq!(w.route(2, &[]), Err(AbiError::NoRoutes { index: 2 }));
    w.replace(2, &rec("b"), [].into_iter()).unwrap();
    assert_eq!(
        w.replace(2, &rec("b"), [].into_iter()),
        Err(AbiError::DuplicateEdit {
            index: 2,
            what: EditPart::Replacement
        })
    );
    let bad_qos = RecordRef { qos: 3, ..rec("b") };
    let mut w2 = VerdictWriter::new(Vec::new(), 1);
    assert_eq!(
        w2.replace(0, &bad_qos, [].into_iter()),
        Err(AbiError::QosOutOfRange { qos: 3 })
    );
    w2.drop_message(0);
    assert_eq!(
        w2.route(0, &[LOCAL]),
        Err(AbiError::DroppedMessageEdit { index: 0 })
    );
    // The failed calls left both buffers valid.
    let buf = w.finish();
    let v = Verdicts::parse(&buf, 3).unwrap();
    assert_eq!(v.edits().len(), 2);
    assert_eq!(
        read_verdicts(&Verdicts::parse(&w2.finish(), 1).unwrap()),
        [V::Drop]
    );
}

#[test]
fn oversized_values_are_errors_that_leave_the_buffer_unchanged() {
    let long = "x".repeat(65_536);
    let mut w = BatchWriter::new(Vec::new(), true);
    w.push(&rec("ok"), [].into_iter()).unwrap();
    let err = w.push(&rec(&long), [].into_iter()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "topic is 65536 bytes; the ABI allows at most 65535"
    );
    let err = w
        .push(&rec("t"), [("k", long.as_str())].into_iter())
        .unwrap_err();
    assert!(matches!(err, AbiError::TooLong { .. }));
    let many: Vec<(&str, &str)> = vec![("", ""); 65_536];
    let err = w.push(&rec("t"), many.into_iter()).unwrap_err();
    assert!(matches!(err, AbiError::TooMany { .. }), "{err}");
    let routes = vec![LOCAL; 65_536];
    let mut v = VerdictWriter::new(Vec::new(), 1);
    assert!(matches!(v.route(0, &routes), Err(AbiError::TooMany { .. })));
    let long_dest = [Destination::Bridge {
        bridge: "b",
        topic: &long,
    }];
    assert!(matches!(
        v.route(0, &long_dest),
        Err(AbiError::TooLong { .. })
    ));
    assert_eq!(v.finish(), [1, 0]);
    assert_eq!(w.len(), 1);
    let buf = w.finish();
    assert_eq!(common::reencode_batch(&buf).unwrap(), buf);
}

/// One call on a `VerdictWriter`, for the sequence model below.
#[derive(Debug, Clone)]
enum Op {
    Drop(usize),
    Replace(usize, Msg),
    Route(usize, Vec<Dest>),
    /// `route_template`: one template route, spans as (start, end).
    RouteTemplate(usize, u16, Vec<(u16, u16)>),
}

fn op(n: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..n).prop_map(Op::Drop),
        (0..n, msg()).prop_map(|(i, m)| Op::Replace(i, m)),
        (0..n, proptest::collection::vec(dest(), 1..3)).prop_map(|(i, d)| Op::Route(i, d)),
        (
            0..n,
            any::<u16>(),
            proptest::collection::vec(any::<(u16, u16)>(), 0..3)
        )
            .prop_map(|(i, t, s)| Op::RouteTemplate(i, t, s)),
    ]
}

proptest! {
    /// Any sequence of calls, in any order: each call succeeds exactly when the model says
    /// (ascending indices, replacement before routes, nothing on dropped messages), failed
    /// calls change nothing, and the finished buffer reads back as the model's state.
    #[test]
    fn verdict_writer_matches_its_model(
        ops in (1usize..6).prop_flat_map(|n| (Just(n), proptest::collection::vec(op(n), 0..12)))
    ) {
        let (n, ops) = ops;
        let mut w = VerdictWriter::new(Vec::new(), n);
        let mut kept = vec![true; n];
        let mut edits: std::collections::BTreeMap<usize, (Option<Msg>, Option<Vec<Dest>>)> =
            Default::default();
        for op in ops {
            let last = edits.keys().next_back().copied();
            match op {
                Op::Drop(i) => {
                    w.drop_message(i);
                    kept[i] = false;
                    edits.remove(&i);
                }
                Op::Replace(i, m) => {
                    let ok = kept[i] && last.is_none_or(|l| l < i);
                    let result = w.replace(i, &m.rec(), m.props());
                    prop_assert_eq!(result.is_ok(), ok, "{:?}", result);
                    if ok {
                        edits.insert(i, (Some(m), None));
                    }
                }
                Op::Route(i, d) => {
                    let extends = last == Some(i)
                        && edits.get(&i).is_some_and(|(_, routes)| routes.is_none());
                    let ok = kept[i] && (last.is_none_or(|l| l < i) || extends);
                    let result = w.route(i, &common::borrow_all(&d));
                    prop_assert_eq!(result.is_ok(), ok, "{:?}", result);
                    if ok {
                        edits.entry(i).or_default().1 = Some(d);
                    }
                }
                Op::RouteTemplate(i, template, spans) => {
                    let extends = last == Some(i)
                        && edits.get(&i).is_some_and(|(_, routes)| routes.is_none());
                    let ok = kept[i] && (last.is_none_or(|l| l < i) || extends);
                    let spans: Vec<TopicSpan> = spans
                        .into_iter()
                        .map(|(start, end)| TopicSpan { start, end })
                        .collect();
                    let route = TemplateRoute {
                        template,
                        spans: &spans,
                    };
                    let result = w.route_template(i, route);
                    prop_assert_eq!(result.is_ok(), ok, "{:?}", result);
                    if ok {
                        let bytes = spans
                            .iter()
                            .flat_map(|s| [s.start.to_le_bytes(), s.end.to_le_bytes()].concat())
                            .collect();
                        let dest = Dest::Template(template, bytes);
                        edits.entry(i).or_default().1 = Some(vec![dest]);
                    }
                }
            }
        }
        let buf = w.finish();
        let expected: Vec<V> = (0..n)
            .map(|i| match (kept[i], edits.get(&i).cloned()) {
                (false, _) => V::Drop,
                (true, None) => V::Keep,
                (true, Some((Some(m), Some(d)))) => V::Both(m, d),
                (true, Some((Some(m), None))) => V::Replace(m),
                (true, Some((None, Some(d)))) => V::Route(d),
                (true, Some((None, None))) => unreachable!("the model never stores an empty edit"),
            })
            .collect();
        let parsed = Verdicts::parse(&buf, n).unwrap();
        prop_assert_eq!(read_verdicts(&parsed), expected);
        check_canonical(&buf, n);
    }
}
