//! Decode arbitrary bytes with both protocol versions and several maximum packet
//! sizes. The decoder must never panic; every packet it accepts must encode, and
//! decoding that encoding must give the same packet back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tern_mqtt::{DecodeOptions, MAX_PACKET_SIZE, Packet, ProtocolVersion, decode, frame_len};

const MAX_SIZES: [u32; 3] = [MAX_PACKET_SIZE, 256, 16];

fuzz_target!(|data: &[u8]| {
    for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
        for max_packet_size in MAX_SIZES {
            check(
                data,
                DecodeOptions {
                    version,
                    max_packet_size,
                },
            );
        }
    }
});

fn check(data: &[u8], opts: DecodeOptions) {
    let header = frame_len(data, opts.max_packet_size);
    let (packet, used) = match decode(data, &opts) {
        Ok(ok) => ok,
        Err(err) => {
            let _ = err.reason_code();
            // frame_len agrees with decode on everything the fixed header decides:
            // incomplete input, malformed remaining length, oversize packets.
            match header {
                Ok(_) => assert!(!err.is_incomplete(), "{err:?} for a whole frame"),
                Err(header_err) => assert_eq!(header_err, err),
            }
            return;
        }
    };
    assert_eq!(header, Ok(used));
    assert!(used <= data.len());

    // CONNECT carries its own version; everything else uses the connection's.
    let version = match packet {
        Packet::Connect(c) => c.protocol_version,
        _ => opts.version,
    };
    let len = packet
        .encoded_len(version)
        .expect("a decoded packet encodes");
    assert!(len <= used, "re-encoding grew the packet: {len} > {used}");
    let mut buf = vec![0u8; len];
    let written = packet
        .encode(version, &mut buf)
        .expect("a decoded packet encodes");
    assert_eq!(written, len);
    let (again, used_again) = decode(&buf, &opts).expect("an encoded packet decodes");
    assert_eq!(used_again, len);
    assert_eq!(again, packet);
}
