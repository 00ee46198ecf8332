//! Decode arbitrary bytes with both protocol versions and several maximum packet
//! sizes. The decoder must never panic; every packet it accepts must encode, and
//! decoding that encoding must give the same packet back. The client-role decoder
//! (`decode_from_server`) must accept and reject exactly what `decode` does for the
//! packet types a server sends, with the same error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tern_mqtt::{
    DecodeOptions, Error, Incoming, MAX_PACKET_SIZE, Packet, PacketType, ProtocolVersion, decode,
    decode_from_server, frame_len,
};

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
    check_client_role(data, opts);
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

/// `decode_from_server` against `decode`.
fn check_client_role(data: &[u8], opts: DecodeOptions) {
    let general = decode(data, &opts);
    let client = decode_from_server(data, &opts);
    let client_only = data
        .first()
        .and_then(|b| PacketType::from_u8(b >> 4))
        .is_some_and(|t| {
            matches!(
                t,
                PacketType::Connect
                    | PacketType::Subscribe
                    | PacketType::Unsubscribe
                    | PacketType::PingReq
            )
        });
    match (general, client) {
        (Ok((packet, used)), Ok((incoming, used_too))) => {
            assert!(!client_only, "{packet:?} decoded as {incoming:?}");
            assert_eq!(used, used_too);
            assert_eq!(packet.packet_type(), incoming.packet_type());
            match (packet, incoming) {
                (Packet::Publish(a), Incoming::Publish(b)) => assert_eq!(a, b),
                (Packet::ConnAck(a), Incoming::ConnAck(b)) => {
                    assert_eq!(a.session_present, b.session_present);
                    assert_eq!(a.reason_code, b.reason_code);
                    assert_eq!(a.properties.receive_maximum, b.receive_maximum);
                    assert_eq!(a.properties.maximum_qos, b.maximum_qos);
                    assert_eq!(a.properties.maximum_packet_size, b.maximum_packet_size);
                    assert_eq!(a.properties.server_keep_alive, b.server_keep_alive);
                }
                (Packet::PubAck(a), Incoming::PubAck(b)) => {
                    assert_eq!((a.packet_id, a.reason_code), (b.packet_id, b.reason_code));
                }
                (Packet::SubAck(a), Incoming::SubAck(b)) => {
                    assert_eq!((a.packet_id, a.reason_codes), (b.packet_id, b.reason_codes));
                }
                (Packet::Disconnect(a), Incoming::Disconnect(b)) => assert_eq!(a.reason_code, b),
                _ => {}
            }
        }
        (Ok((packet, _)), Err(err)) => {
            assert!(
                client_only,
                "{packet:?} rejected by the client role: {err:?}"
            );
            assert_eq!(err, Error::NotFromServer(packet.packet_type()));
        }
        (Err(err), Ok((incoming, _))) => {
            panic!("{incoming:?} accepted by the client role, rejected by decode: {err:?}")
        }
        (Err(err), Err(client_err)) => {
            if !client_only {
                assert_eq!(err, client_err);
            }
        }
    }
}
