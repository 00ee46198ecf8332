//! Read arbitrary bytes as a batch and as verdicts (the first two bytes are the expected
//! message count, little-endian). Any panic is a bug: readers must return `AbiError`. What a
//! reader accepts must re-encode to the same bytes through the writers, so the readers accept
//! nothing the writers could not have produced. The layout-only record reader the guest SDK
//! uses (`Batch::records`) must never panic either, whatever the strings hold, and its quick
//! path (`RecordViews::next_quick`) must take only records the checked path accepts. The
//! host's verdict reader (`Verdicts::parse_lazy`, destination strings checked as they are
//! read) must decide exactly as the eager `Verdicts::parse`, and its single-template fast
//! path (`LazyEdits::next_single_template`) must read exactly what the general path reads.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tern_filter_abi::{Batch, BatchWriter, Destination, VerdictWriter, Verdicts};

fuzz_target!(|data: &[u8]| {
    let Some((count, buf)) = data.split_first_chunk::<2>() else {
        return;
    };
    let count = usize::from(u16::from_le_bytes(*count));
    batch(buf);
    quick_records(buf);
    verdicts(buf, count);
    lazy_verdicts(buf, count);
    single_templates(buf, count);
});

/// Reading edits with the single-template fast path first gives the same edits as the
/// general path alone.
fn single_templates(buf: &[u8], count: usize) {
    let Ok(v) = Verdicts::parse_lazy(buf, count) else {
        return;
    };
    let general: Vec<_> = v
        .edits()
        .map(|e| (e.index, e.routes.map(|r| r.collect::<Vec<_>>())))
        .collect();
    let mut mixed = Vec::new();
    let mut edits = v.edits();
    loop {
        if let Some(single) = edits.next_single_template() {
            let dest = Destination::Template {
                template: single.template,
                spans: single.spans,
            };
            mixed.push((single.index, Some(vec![Ok(dest)])));
            continue;
        }
        let Some(e) = edits.next() else { break };
        mixed.push((e.index, e.routes.map(|r| r.collect::<Vec<_>>())));
    }
    assert_eq!(general, mixed, "the single-template path reads differently");
}

/// The quick record reader agrees with the checked one record by record.
fn quick_records(buf: &[u8]) {
    let Ok(batch) = Batch::parse(buf) else {
        return;
    };
    let mut quick = batch.records();
    let mut checked = batch.records();
    while let Some(view) = quick.next_quick() {
        let Some(Ok(expected)) = checked.next() else {
            panic!("the quick reader took a record the checked reader refuses");
        };
        assert_eq!(format!("{view:?}"), format!("{expected:?}"));
    }
}

/// `parse_lazy` accepts a buffer, and reads every destination, exactly when `parse` does.
fn lazy_verdicts(buf: &[u8], count: usize) {
    let eager = Verdicts::parse(buf, count);
    let lazy = Verdicts::parse_lazy(buf, count).map(|v| {
        let edits: Result<Vec<_>, _> = v
            .edits()
            .map(|e| {
                let routes = e.routes.map(Iterator::collect::<Result<Vec<_>, _>>);
                routes.transpose().map(|r| (e.index, r))
            })
            .collect();
        edits.map(|edits| ((0..count).map(|i| v.is_kept(i)).collect::<Vec<_>>(), edits))
    });
    match (eager, lazy) {
        (Ok(v), Ok(Ok((kept, edits)))) => {
            let eager_kept: Vec<bool> = (0..count).map(|i| v.is_kept(i)).collect();
            assert_eq!(kept, eager_kept);
            let eager_edits: Vec<_> = v
                .edits()
                .map(|e| (e.index, e.routes.map(Iterator::collect::<Vec<_>>)))
                .collect();
            assert_eq!(edits, eager_edits);
        }
        (Err(_), Err(_) | Ok(Err(_))) => {}
        (eager, lazy) => panic!(
            "parse and parse_lazy disagree: {:?} vs {:?}",
            eager.map(|_| ()),
            lazy.map(|r| r.map(|_| ()))
        ),
    }
}

fn batch(buf: &[u8]) {
    let Ok(batch) = Batch::parse(buf) else {
        return;
    };
    for record in batch.records() {
        let Ok(record) = record else {
            break;
        };
        let _ = (record.topic(), record.client_id(), record.content_type());
        let _ = (record.property("k"), record.properties().count());
        let _ = format!("{record:?}");
        let _ = record.validate();
    }
    let mut writer = BatchWriter::with_contents(Vec::new(), batch.contents());
    for record in batch.iter() {
        let Ok(msg) = record else {
            return;
        };
        let _ = msg.property("k");
        let _ = format!("{msg:?}");
        writer
            .push(&msg.record(), msg.properties())
            .expect("a record that was read can be written");
    }
    assert_eq!(writer.finish(), buf, "batch re-encodes differently");
}

fn verdicts(buf: &[u8], count: usize) {
    let verdicts = match Verdicts::parse(buf, count) {
        Ok(v) => v,
        Err(err) => {
            let _ = err.to_string();
            return;
        }
    };
    let mut writer = VerdictWriter::new(Vec::new(), count);
    for i in 0..count {
        if !verdicts.is_kept(i) {
            writer.drop_message(i);
        }
    }
    for edit in verdicts.edits() {
        assert!(verdicts.is_kept(edit.index));
        if let Some(msg) = &edit.replacement {
            writer
                .replace(edit.index, &msg.record(), msg.properties())
                .expect("a replacement that was read can be written");
        }
        if let Some(routes) = edit.routes {
            let routes: Vec<_> = routes.collect();
            writer
                .route(edit.index, &routes)
                .expect("routes that were read can be written");
        }
    }
    let again = writer.finish();
    if verdicts.unchanged() {
        assert_eq!(again, [1, 0]);
    } else {
        assert_eq!(again, buf, "verdicts re-encode differently");
    }
}
