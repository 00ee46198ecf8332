//! Drive the sans-IO session with arbitrary broker bytes interleaved with
//! client operations. Nothing may panic, the in-flight window never exceeds
//! its capacity, and every stored publish still decodes as a PUBLISH with DUP
//! set when it is resent.
//!
//! Input layout: byte 0 picks the protocol version (bit 0) and whether the
//! broker resumed the session (bit 1); then a sequence of operations, each an
//! opcode byte followed by its arguments.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tern_client::{Buffers, ConfigBuilder, ProtocolVersion, QoS, Session};
use tern_mqtt::{DecodeOptions, Packet, decode};

const WINDOW: usize = 3;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, mut ops)) = data.split_first() else {
        return;
    };
    let version = if mode & 1 == 0 {
        ProtocolVersion::V5
    } else {
        ProtocolVersion::V311
    };
    let Ok(builder) = ConfigBuilder::new("fuzz") else {
        return;
    };
    let config = builder.protocol(version).keep_alive(1).build();
    let (mut rx, mut tx) = ([0u8; 96], [0u8; 160]);
    let mut s: Session<'_, WINDOW> = Session::new(config, Buffers::new(&mut rx, &mut tx));
    let mut now = 0u64;
    if s.connect(now).is_err() {
        return;
    }
    // CONNACK: 5.0 adds an empty property section.
    let connack = |present: u8| -> ([u8; 5], usize) {
        match version {
            ProtocolVersion::V5 => ([0x20, 0x03, present, 0x00, 0x00], 5),
            ProtocolVersion::V311 => ([0x20, 0x02, present, 0x00, 0x00], 4),
        }
    };
    let (ack, len) = connack((mode >> 1) & 1);
    let _ = s.receive(&ack[..len]);
    let _ = s.handle(now);

    while let Some((&op, rest)) = ops.split_first() {
        ops = rest;
        match op % 8 {
            // Broker bytes: a length byte, then that many bytes.
            0 | 1 | 2 => {
                let len =
                    usize::from(ops.first().copied().unwrap_or(0)).min(ops.len().saturating_sub(1));
                let chunk = ops.get(1..1 + len).unwrap_or_default();
                ops = ops.get(1 + len..).unwrap_or_default();
                if s.receive(chunk).is_err() {
                    return;
                }
                // Handle every complete packet.
                for _ in 0..8 {
                    match s.handle(now) {
                        Ok(step) if step.event.is_none() && step.reply.is_empty() => break,
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
            }
            3 => {
                let _ = s.publish(
                    "f/t",
                    ops.get(..4).unwrap_or_default(),
                    QoS::AtLeastOnce,
                    &[("k", "v")],
                    now,
                );
            }
            4 => {
                let _ = s.publish("f/t", b"0", QoS::AtMostOnce, &[], now);
            }
            5 => {
                let _ = s.subscribe(&[("f/#", QoS::ExactlyOnce)], now);
            }
            6 => {
                now += 700;
                let _ = s.poll_keepalive(now);
            }
            _ => {
                // Reconnect; the resends must be valid DUP publishes.
                let (ack, len) = connack(1);
                if s.connect(now).is_ok() && s.receive(&ack[..len]).is_ok() {
                    let _ = s.handle(now);
                }
                let opts = DecodeOptions::new(version);
                let mut i = 0;
                while let Some(bytes) = s.resend(i) {
                    match decode(bytes, &opts) {
                        Ok((Packet::Publish(p), _)) => assert!(p.dup),
                        other => panic!("stored bytes are not a PUBLISH: {other:?}"),
                    }
                    i += 1;
                }
            }
        }
        assert!(s.inflight_len() <= WINDOW);
    }
});
