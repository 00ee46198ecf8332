//! Malformed buffers: every way a buffer can be wrong comes back as an `Err` with a useful
//! message, never a panic — checked exhaustively for truncations and single-byte changes of
//! small valid buffers, and by hand for each rule of the layout.

mod common;

use common::{check_canonical, sample_messages, sample_verdicts, write_batch, write_verdicts};
use tern_filter_abi::{AbiError, Batch, Field, MessageView, Part, Verdicts};

/// Parses and iterates a batch, returning the first error.
fn batch_err(buf: &[u8]) -> Option<AbiError> {
    let batch = match Batch::parse(buf) {
        Ok(b) => b,
        Err(e) => return Some(e),
    };
    let results: Vec<Result<MessageView<'_>, AbiError>> = batch.iter().collect();
    let err = results.iter().find_map(|r| r.as_ref().err().copied());
    if err.is_none() {
        assert_eq!(results.len(), batch.len());
    }
    err
}

#[test]
fn every_truncated_batch_is_an_error() {
    for payloads in [false, true] {
        let buf = write_batch(&sample_messages(), payloads);
        assert_eq!(batch_err(&buf), None);
        for len in 0..buf.len() {
            assert!(
                batch_err(&buf[..len]).is_some(),
                "prefix of {len} bytes accepted"
            );
        }
        let mut longer = buf.clone();
        longer.push(0);
        assert_eq!(
            batch_err(&longer),
            Some(AbiError::TrailingBytes {
                part: Part::Batch,
                count: 1
            })
        );
    }
}

#[test]
fn every_truncated_verdict_buffer_is_an_error() {
    let vs = sample_verdicts();
    let buf = write_verdicts(&vs);
    assert!(Verdicts::parse(&buf, vs.len()).is_ok());
    for len in 0..buf.len() {
        assert!(
            Verdicts::parse(&buf[..len], vs.len()).is_err(),
            "prefix of {len} bytes accepted"
        );
    }
    let mut longer = buf.clone();
    longer.push(0);
    assert_eq!(
        Verdicts::parse(&longer, vs.len()).unwrap_err(),
        AbiError::TrailingBytes {
            part: Part::Verdicts,
            count: 1
        }
    );
    assert!(Verdicts::parse(&[1, 0, 0], 5).is_err());
}

/// Every value of every byte of the sample buffers: no panic, and whatever still parses
/// re-encodes to the same bytes.
#[test]
fn every_single_byte_change_is_handled() {
    let vs = sample_verdicts();
    for (buf, count) in [
        (write_batch(&sample_messages(), true), 0),
        (write_batch(&sample_messages(), false), 0),
        (write_verdicts(&vs), vs.len()),
    ] {
        for i in 0..buf.len() {
            for byte in 0..=u8::MAX {
                let mut changed = buf.clone();
                changed[i] = byte;
                check_canonical(&changed, count);
                let _ = batch_err(&changed);
            }
        }
    }
}

fn one_record_batch() -> Vec<u8> {
    write_batch(&[common::Msg::new("t")], false)
}

/// Offset of the first record's flags byte in a batch.
const FLAGS_AT: usize = 8 + 4;

#[test]
fn batch_header_rules() {
    let buf = one_record_batch();
    let mut b = buf.clone();
    b[0] = 2;
    assert_eq!(batch_err(&b), Some(AbiError::Version { found: 2 }));
    assert_eq!(
        AbiError::Version { found: 2 }.to_string(),
        "unsupported ABI version 2 (this build reads version 1)"
    );
    let mut b = buf.clone();
    b[1] = 0b100;
    assert_eq!(
        batch_err(&b),
        Some(AbiError::Reserved {
            part: Part::Batch,
            field: Field::BatchFlags
        })
    );
    let mut b = buf.clone();
    b[3] = 1;
    assert_eq!(
        batch_err(&b),
        Some(AbiError::Reserved {
            part: Part::Batch,
            field: Field::Reserved
        })
    );
    let mut b = buf.clone();
    b[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        batch_err(&b),
        Some(AbiError::ImplausibleCount { .. })
    ));
    // Payload flag set on the batch but not on the record.
    let mut b = buf.clone();
    b[1] = 1;
    assert_eq!(batch_err(&b), Some(AbiError::PayloadFlag { index: 0 }));
}

#[test]
fn record_rules() {
    let buf = one_record_batch();
    let mut b = buf.clone();
    b[FLAGS_AT] = 3;
    assert_eq!(
        batch_err(&b),
        Some(AbiError::InvalidQos {
            part: Part::Record(0)
        })
    );
    let mut b = buf.clone();
    b[FLAGS_AT] = 0b0010_0000;
    assert_eq!(
        batch_err(&b),
        Some(AbiError::Reserved {
            part: Part::Record(0),
            field: Field::RecordFlags
        })
    );
    // Topic bytes: not UTF-8.
    let mut b = buf.clone();
    b[FLAGS_AT + 1 + 8 + 2] = 0xff;
    let err = batch_err(&b).unwrap();
    assert_eq!(err.to_string(), "record 0: topic is not valid UTF-8");
    // Topic length longer than the record.
    let mut b = buf.clone();
    b[FLAGS_AT + 1 + 8] = 200;
    assert_eq!(
        batch_err(&b).unwrap().to_string(),
        "record 0: topic runs past the end of the buffer"
    );
    // Record length one longer (one trailing byte inside the record).
    let mut b = buf.clone();
    b[8] += 1;
    b.push(0);
    assert_eq!(
        batch_err(&b),
        Some(AbiError::TrailingBytes {
            part: Part::Record(0),
            count: 1
        })
    );
}

/// Sample verdicts: count 5, message 0 dropped, edits for 1, 3 and 4.
fn sample() -> (Vec<u8>, usize) {
    let vs = sample_verdicts();
    (write_verdicts(&vs), vs.len())
}

/// Offset of the first edit's index in the sample verdicts (header 6 + bitmap 1 + count 4).
const EDIT_AT: usize = 11;

#[test]
fn verdict_rules() {
    let (buf, n) = sample();
    assert_eq!(
        Verdicts::parse(&buf, n + 1).unwrap_err(),
        AbiError::CountMismatch {
            expected: n + 1,
            found: 5
        }
    );
    let mut b = buf.clone();
    b[1] = 2;
    assert_eq!(
        Verdicts::parse(&b, n).unwrap_err(),
        AbiError::UnknownForm { form: 2 }
    );
    // Bit past the count set in the bitmap.
    let mut b = buf.clone();
    b[6] |= 0b1000_0000;
    assert_eq!(
        Verdicts::parse(&b, n).unwrap_err(),
        AbiError::Reserved {
            part: Part::Verdicts,
            field: Field::Bitmap
        }
    );
    // Edit on a dropped message (drop message 1, which carries the first edit).
    let mut b = buf.clone();
    b[6] &= !0b10;
    assert_eq!(
        Verdicts::parse(&b, n).unwrap_err(),
        AbiError::EditOnDropped {
            ordinal: 0,
            index: 1
        }
    );
    // Edit index out of range.
    let mut b = buf.clone();
    b[EDIT_AT] = 9;
    assert!(matches!(
        Verdicts::parse(&b, n).unwrap_err(),
        AbiError::EditIndexOutOfRange {
            ordinal: 0,
            index: 9,
            ..
        }
    ));
    // Empty and reserved edit flags.
    let mut b = buf.clone();
    b[EDIT_AT + 4] = 0;
    assert_eq!(
        Verdicts::parse(&b, n).unwrap_err(),
        AbiError::EmptyEdit { ordinal: 0 }
    );
    let mut b = buf.clone();
    b[EDIT_AT + 4] |= 0b100;
    assert_eq!(
        Verdicts::parse(&b, n).unwrap_err(),
        AbiError::Reserved {
            part: Part::Edit(0),
            field: Field::EditFlags
        }
    );
    // Form 0 with anything after it.
    assert!(Verdicts::parse(&[1, 0, 0], n).is_err());
    let all = Verdicts::parse(&[1, 0], n).unwrap();
    assert!(all.all_kept() && all.is_kept(n - 1) && !all.is_kept(n));
    assert_eq!(all.edits().count(), 0);
}

#[test]
fn edits_out_of_order_are_rejected() {
    // Two route edits for messages 1 then 0.
    #[rustfmt::skip]
    let buf: &[u8] = &[
        1, 1, 2, 0, 0, 0, 0b11, 2, 0, 0, 0,
        1, 0, 0, 0, 0b10, 1, 0, 0, 1, 0, b'a',
        0, 0, 0, 0, 0b10, 1, 0, 0, 1, 0, b'b',
    ];
    assert_eq!(
        Verdicts::parse(buf, 2).unwrap_err(),
        AbiError::EditOrder {
            ordinal: 1,
            index: 0,
            previous: 1
        }
    );
    // The same index twice.
    let mut dup = buf.to_vec();
    dup[22] = 1;
    assert_eq!(
        Verdicts::parse(&dup, 2).unwrap_err(),
        AbiError::EditOrder {
            ordinal: 1,
            index: 1,
            previous: 1
        }
    );
    // Zero routes, unknown destination kind.
    let mut none = buf.to_vec();
    none.truncate(22);
    none[7] = 1;
    none[16] = 0;
    none.truncate(18);
    assert_eq!(
        Verdicts::parse(&none, 2).unwrap_err(),
        AbiError::NoRoutes { index: 1 }
    );
    let mut kind = buf.to_vec();
    kind[18] = 7;
    assert_eq!(
        Verdicts::parse(&kind, 2).unwrap_err(),
        AbiError::UnknownDestination {
            ordinal: 0,
            kind: 7
        }
    );
}

#[test]
fn invalid_utf8_is_caught_when_the_string_is_read() {
    let msg = common::Msg::new("tt").with("k", "v").with("bad", "ok");
    let mut buf = write_batch(&[msg], false);
    // Topic bytes start after the record flags, received_ms and the topic's length.
    let topic_at = FLAGS_AT + 1 + 8 + 2;
    assert_eq!(&buf[topic_at..topic_at + 2], b"tt");
    buf[topic_at] = 0xff;
    let expected = AbiError::InvalidUtf8 {
        part: Part::Record(0),
        field: Field::Topic,
    };
    assert_eq!(batch_err(&buf), Some(expected));
    assert_eq!(expected.to_string(), "record 0: topic is not valid UTF-8");
    // The layout reader hands the record over; only reading the topic fails.
    let batch = Batch::parse(&buf).unwrap();
    let records: Vec<_> = batch.records().collect();
    assert_eq!(records.len(), 1);
    let record = records[0].as_ref().expect("layout is fine");
    assert_eq!(record.topic(), Err(expected));
    assert_eq!(record.client_id(), Ok(""));
    assert_eq!(record.property("k"), Ok(Some("v")));
    assert_eq!(record.property("missing"), Ok(None));
    assert_eq!(record.validate().err(), Some(expected));
}

#[test]
fn raw_destination_topics_that_are_not_utf8_are_refused_by_the_reader() {
    use tern_filter_abi::{RawDestination, VerdictWriter};
    for bridge in [None, Some("cloud")] {
        let mut w = VerdictWriter::new(Vec::new(), 1);
        w.route_raw(
            0,
            [RawDestination {
                bridge,
                topic: b"up/\xff",
            }],
        )
        .expect("the writer does not check topic bytes");
        let buf = w.finish();
        assert!(
            matches!(
                Verdicts::parse(&buf, 1),
                Err(AbiError::InvalidUtf8 {
                    field: Field::DestinationTopic,
                    ..
                })
            ),
            "{bridge:?}: {:?}",
            Verdicts::parse(&buf, 1)
        );
        // The same bytes as UTF-8 are fine.
        let mut w = VerdictWriter::new(Vec::new(), 1);
        w.route_raw(
            0,
            [RawDestination {
                bridge,
                topic: b"up/1",
            }],
        )
        .expect("writable");
        assert!(Verdicts::parse(&w.finish(), 1).is_ok());
    }
}

/// `parse_lazy` accepts what `parse` accepts, with the same decisions and destinations, and
/// what `parse` refuses is refused either by `parse_lazy` or while reading its routes.
#[test]
fn lazy_verdicts_agree_with_eager_ones_on_every_single_byte_change() {
    let vs = sample_verdicts();
    let buf = write_verdicts(&vs);
    let count = vs.len();
    for i in 0..buf.len() {
        for byte in 0..=u8::MAX {
            let mut changed = buf.clone();
            changed[i] = byte;
            let eager = Verdicts::parse(&changed, count);
            let lazy = Verdicts::parse_lazy(&changed, count);
            let lazily_read = lazy.map(|v| {
                let kept: Vec<bool> = (0..count).map(|i| v.is_kept(i)).collect();
                let edits: Result<Vec<_>, AbiError> = v
                    .edits()
                    .map(|e| {
                        let routes = e.routes.map(Iterator::collect::<Result<Vec<_>, _>>);
                        routes
                            .transpose()
                            .map(|routes| (e.index, e.replacement.is_some(), routes))
                    })
                    .collect();
                edits.map(|edits| (kept, edits))
            });
            match (eager, lazily_read) {
                (Ok(v), Ok(Ok((kept, edits)))) => {
                    let eager_kept: Vec<bool> = (0..count).map(|i| v.is_kept(i)).collect();
                    assert_eq!(kept, eager_kept);
                    let eager_edits: Vec<_> = v
                        .edits()
                        .map(|e| {
                            let routes = e.routes.map(Iterator::collect::<Vec<_>>);
                            (e.index, e.replacement.is_some(), routes)
                        })
                        .collect();
                    assert_eq!(edits, eager_edits, "byte {i} = {byte}");
                }
                (Err(_), Err(_) | Ok(Err(_))) => {}
                (eager, lazy) => panic!(
                    "byte {i} = {byte}: eager {:?}, lazy {:?}",
                    eager.map(|_| ()),
                    lazy.map(|r| r.map(|_| ()))
                ),
            }
        }
    }
}
