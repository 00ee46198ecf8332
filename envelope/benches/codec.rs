//! Envelope codec throughput for the bridge's largest batch (500 messages of 100 B,
//! realistic topics and one user property), per format:
//! - `encode/<format>`: `EnvelopeWriter` from borrowed messages, as the bridge does;
//! - `decode/<format>`: `decode` as a cloud consumer does.
//!
//! Throughput is reported in messages, to compare with the bridge's 100k messages/s target.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tern_envelope::{EnvelopeWriter, Format, ForwardedMessage, decode};

const BATCH: u64 = 500;
const PAYLOAD: usize = 100;

fn messages() -> Vec<ForwardedMessage> {
    (0..BATCH)
        .map(|i| ForwardedMessage {
            seq: 1_000_000 + 2 * i,
            topic: format!("site-7/sensors/device-{:04}/temperature", i % 64),
            received_ms: 1_700_000_000_000 + i,
            qos: 1,
            retain: false,
            content_type: None,
            user_properties: vec![("unit".into(), "celsius".into())],
            payload: vec![b'7'; PAYLOAD],
        })
        .collect()
}

fn encode(messages: &[ForwardedMessage], format: Format) -> Vec<u8> {
    let mut writer = EnvelopeWriter::new(format, "gw-17", Some(999_999));
    writer.reserve(messages.len() * (PAYLOAD + 80));
    for m in messages {
        writer.push(&m.as_ref()).expect("valid message");
    }
    writer.finish(1_700_000_001_000).expect("valid envelope")
}

fn bench(c: &mut Criterion) {
    let messages = messages();
    let formats = [
        ("postcard", Format::Postcard),
        ("json-lines", Format::JsonLines),
    ];
    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Elements(BATCH));
    for (name, format) in formats {
        group.bench_with_input(BenchmarkId::from_parameter(name), &format, |b, &format| {
            b.iter(|| encode(black_box(&messages), format));
        });
    }
    group.finish();
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(BATCH));
    for (name, format) in formats {
        let bytes = encode(&messages, format);
        group.bench_with_input(BenchmarkId::from_parameter(name), &bytes, |b, bytes| {
            b.iter(|| decode(black_box(bytes)).expect("decodes"));
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
