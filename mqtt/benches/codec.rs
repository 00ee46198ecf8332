//! Decode and encode of PUBLISH, the packet on the hot path of every session:
//! MQTT 3.1.1 and 5.0 (with a typical property set), 64 B and 1 KiB payloads.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tern_mqtt::{
    DecodeOptions, List, Packet, PayloadFormat, ProtocolVersion, Publish, PublishProperties, QoS,
    decode,
};

const PAYLOAD_SIZES: [usize; 2] = [64, 1024];
const USER_PROPERTIES: [(&str, &str); 1] = [("site", "north")];

fn publish(version: ProtocolVersion, payload: &[u8]) -> Packet<'_> {
    let properties = match version {
        ProtocolVersion::V311 => PublishProperties::default(),
        ProtocolVersion::V5 => PublishProperties {
            payload_format_indicator: Some(PayloadFormat::Unspecified),
            message_expiry_interval: Some(3600),
            content_type: Some("application/octet-stream"),
            user_properties: List::new(&USER_PROPERTIES),
            ..Default::default()
        },
    };
    Packet::Publish(Publish {
        qos: QoS::AtLeastOnce,
        packet_id: 4242,
        topic: "sensors/gw-17/device-0042/temperature",
        payload,
        properties,
        ..Default::default()
    })
}

fn label(version: ProtocolVersion, size: usize) -> String {
    let v = match version {
        ProtocolVersion::V311 => "v311",
        ProtocolVersion::V5 => "v5",
    };
    format!("{v}/{size}B")
}

fn bench_publish(c: &mut Criterion) {
    let mut group = c.benchmark_group("publish");
    for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
        for size in PAYLOAD_SIZES {
            let payload = vec![0xA5u8; size];
            let packet = publish(version, &payload);
            let len = packet.encoded_len(version).expect("bench packet encodes");
            let mut wire = vec![0u8; len];
            packet
                .encode(version, &mut wire)
                .expect("bench packet encodes");
            let opts = DecodeOptions::new(version);
            group.throughput(Throughput::Bytes(u64::try_from(len).unwrap_or(u64::MAX)));

            group.bench_with_input(
                BenchmarkId::new("decode", label(version, size)),
                &wire,
                |b, wire| b.iter(|| decode(black_box(wire), &opts)),
            );
            let mut out = vec![0u8; len];
            group.bench_with_input(
                BenchmarkId::new("encode", label(version, size)),
                &packet,
                |b, packet| b.iter(|| black_box(packet).encode(version, &mut out)),
            );
        }
    }
    group.finish();
}

criterion_group!(benches, bench_publish);
criterion_main!(benches);
