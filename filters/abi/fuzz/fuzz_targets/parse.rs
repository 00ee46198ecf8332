//! Read arbitrary bytes as a batch and as verdicts (the first two bytes are the expected
//! message count, little-endian). Any panic is a bug: readers must return `AbiError`. What a
//! reader accepts must re-encode to the same bytes through the writers, so the readers accept
//! nothing the writers could not have produced. The layout-only record reader the guest SDK
//! uses (`Batch::records`) must never panic either, whatever the strings hold.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tern_filter_abi::{Batch, BatchWriter, VerdictWriter, Verdicts};

fuzz_target!(|data: &[u8]| {
    let Some((count, buf)) = data.split_first_chunk::<2>() else {
        return;
    };
    let count = usize::from(u16::from_le_bytes(*count));
    batch(buf);
    verdicts(buf, count);
});

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
    let mut writer = BatchWriter::new(Vec::new(), batch.payloads_included());
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
