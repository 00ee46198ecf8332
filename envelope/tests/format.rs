//! Byte-level fixtures of both formats, the writer against the serde layout, and every
//! rejection the decoder documents.

use tern_envelope::{
    Envelope, EnvelopeError, EnvelopeWriter, Format, ForwardedMessage, MessageId, MessageRef,
    decode, detect, encode,
};

fn sample() -> Envelope {
    Envelope {
        gateway: "gw".into(),
        prev_seq: Some(3),
        last_seq: 9,
        created_ms: 300,
        messages: vec![
            ForwardedMessage {
                seq: 5,
                topic: "a/b".into(),
                received_ms: 200,
                qos: 1,
                retain: false,
                content_type: Some("text/plain".into()),
                user_properties: vec![("k".into(), "v".into())],
                payload: b"hi".to_vec(),
            },
            ForwardedMessage {
                seq: 8,
                topic: "c".into(),
                received_ms: 1,
                qos: 0,
                retain: true,
                content_type: None,
                user_properties: vec![],
                payload: vec![0xff, 0x00],
            },
        ],
        replay: false,
    }
}

#[test]
fn binary_fixture() {
    let bytes = encode(&sample(), Format::Postcard).unwrap();
    #[rustfmt::skip]
    let expected: &[u8] = &[
        b'T', b'E', b'R', b'N', 1, 0,       // magic, version 1, flags 0
        2, b'g', b'w',                      // gateway
        1, 3,                               // prev_seq Some(3)
        9,                                  // last_seq
        0xac, 0x02,                         // created_ms 300 (varint)
        2,                                  // 2 messages
        5, 3, b'a', b'/', b'b', 0xc8, 0x01, 1, 0, // seq, topic, received_ms 200, qos, retain
        1, 10, b't', b'e', b'x', b't', b'/', b'p', b'l', b'a', b'i', b'n', // content_type
        1, 1, b'k', 1, b'v',                // user_properties
        2, b'h', b'i',                      // payload
        8, 1, b'c', 1, 0, 1, 0, 0, 2, 0xff, 0x00,
    ];
    assert_eq!(bytes, expected);
    assert_eq!(decode(&bytes).unwrap(), sample());
}

#[test]
fn json_lines_fixture() {
    let bytes = encode(&sample(), Format::JsonLines).unwrap();
    let expected = concat!(
        r#"{"tern":1,"gateway":"gw","prev_seq":3,"last_seq":9,"created_ms":300,"count":2}"#,
        "\n",
        r#"{"seq":5,"topic":"a/b","received_ms":200,"qos":1,"retain":false,"content_type":"text/plain","user_properties":[["k","v"]],"payload":"hi"}"#,
        "\n",
        r#"{"seq":8,"topic":"c","received_ms":1,"qos":0,"retain":true,"user_properties":[],"payload_b64":"/wA="}"#,
        "\n",
    );
    assert_eq!(std::str::from_utf8(&bytes).unwrap(), expected);
    assert_eq!(decode(&bytes).unwrap(), sample());
}

#[test]
fn json_decoder_is_lenient_about_line_ends_and_unknown_fields() {
    let text = concat!(
        r#"{"tern":1,"gateway":"gw","prev_seq":null,"last_seq":2,"created_ms":0,"count":1,"later":true}"#,
        "\r\n",
        r#"{"seq":2,"topic":"t","received_ms":0,"qos":2,"retain":false,"payload":"x","extra":[1]}"#,
    );
    let envelope = decode(text.as_bytes()).unwrap();
    assert_eq!(envelope.prev_seq, None);
    assert_eq!(envelope.messages[0].payload, b"x");
    assert_eq!(envelope.messages[0].user_properties, []);
}

/// The writer emits the header last; its bytes must equal serde's derived layout of
/// `Envelope`, which is what the decoder reads.
#[test]
fn writer_matches_the_derived_serde_layout() {
    let envelope = sample();
    let mut derived = b"TERN\x01\x00".to_vec();
    derived.extend(postcard::to_allocvec(&envelope).unwrap());
    assert_eq!(encode(&envelope, Format::Postcard).unwrap(), derived);
}

#[test]
fn writer_extends_coverage_and_rejects_out_of_order_pushes() {
    let m = |seq| MessageRef {
        seq,
        topic: "t",
        received_ms: 0,
        qos: 0,
        retain: false,
        content_type: None,
        user_properties: &[],
        payload: b"",
    };
    let mut writer = EnvelopeWriter::new(Format::Postcard, "gw", None);
    writer.push(&m(0)).unwrap();
    writer.push(&m(4)).unwrap();
    assert!(writer.push(&m(4)).is_err());
    assert!(writer.push(&m(3)).is_err());
    assert!(writer.cover_through(3).is_err());
    writer.cover_through(10).unwrap();
    assert!(writer.push(&m(10)).is_err());
    assert!(writer.push(&MessageRef { qos: 3, ..m(11) }).is_err());
    assert_eq!(writer.len(), 2);
    let bound = writer.max_encoded_len();
    let bytes = writer.finish(5).unwrap();
    assert!(bytes.len() <= bound);
    let envelope = decode(&bytes).unwrap();
    assert_eq!((envelope.prev_seq, envelope.last_seq), (None, 10));
    let ids: Vec<MessageId> = envelope.ids().collect();
    assert_eq!(ids, [MessageId::new("gw", 0), MessageId::new("gw", 4)]);

    assert!(
        EnvelopeWriter::new(Format::Postcard, "gw", None)
            .finish(0)
            .is_err()
    );
    let heartbeat = EnvelopeWriter::new(Format::JsonLines, "gw", Some(7))
        .finish(0)
        .unwrap();
    let heartbeat = decode(&heartbeat).unwrap();
    assert_eq!(
        (
            heartbeat.prev_seq,
            heartbeat.last_seq,
            heartbeat.messages.len()
        ),
        (Some(7), 7, 0)
    );
}

#[test]
fn invalid_envelopes_are_not_encoded() {
    let mut e = sample();
    e.messages.swap(0, 1);
    assert!(matches!(
        encode(&e, Format::Postcard),
        Err(EnvelopeError::Invalid(_))
    ));
    let mut e = sample();
    e.last_seq = 7;
    assert!(matches!(
        encode(&e, Format::JsonLines),
        Err(EnvelopeError::Invalid(_))
    ));
    let mut e = sample();
    e.prev_seq = Some(5);
    assert!(encode(&e, Format::Postcard).is_err());
    let mut e = sample();
    e.gateway.clear();
    assert!(encode(&e, Format::Postcard).is_err());
}

#[test]
fn binary_rejections() {
    let good = encode(&sample(), Format::Postcard).unwrap();
    assert_eq!(decode(b""), Err(EnvelopeError::Empty));
    assert_eq!(decode(b"TER"), Err(EnvelopeError::UnknownFormat));
    assert_eq!(decode(b"xyz"), Err(EnvelopeError::UnknownFormat));
    assert_eq!(decode(b"TERN\x01"), Err(EnvelopeError::TruncatedHeader));
    assert_eq!(
        decode(b"TERN\x02\x00"),
        Err(EnvelopeError::UnsupportedVersion(2))
    );
    assert_eq!(
        decode(b"TERN\x01\x80"),
        Err(EnvelopeError::UnsupportedFlags(0x80))
    );
    let mut trailing = good.clone();
    trailing.push(0);
    assert_eq!(decode(&trailing), Err(EnvelopeError::TrailingBytes(1)));
    for cut in 6..good.len() {
        assert!(
            matches!(decode(&good[..cut]), Err(EnvelopeError::Binary(_))),
            "cut at {cut}"
        );
    }
    // last_seq (byte 11) below the last message.
    let mut bad = good.clone();
    bad[11] = 7;
    assert!(matches!(decode(&bad), Err(EnvelopeError::Invalid(_))));
    // A message count far beyond the input does not allocate it up front.
    let huge = b"TERN\x01\x00\x02gw\x00\x09\x00\xff\xff\xff\xff\x0f";
    assert!(matches!(decode(huge), Err(EnvelopeError::Binary(_))));
}

#[test]
fn json_rejections() {
    let header =
        r#"{"tern":1,"gateway":"gw","prev_seq":null,"last_seq":9,"created_ms":0,"count":1}"#;
    type Check = fn(&EnvelopeError) -> bool;
    let cases: &[(&str, Check)] = &[
        ("{", |e| matches!(e, EnvelopeError::Json { line: 1, .. })),
        (r#"{"tern":2}"#, |e| {
            matches!(e, EnvelopeError::UnsupportedVersion(2))
        }),
        (r#"{"tern":1,"gateway":"gw"}"#, |e| {
            matches!(e, EnvelopeError::Json { line: 1, .. })
        }),
        (header, |e| {
            matches!(
                e,
                EnvelopeError::CountMismatch {
                    announced: 1,
                    found: 0
                }
            )
        }),
    ];
    for (text, check) in cases {
        let err = decode(text.as_bytes()).unwrap_err();
        assert!(check(&err), "{text}: {err}");
    }
    let with = |line: &str| format!("{header}\n{line}\n");
    let message_cases = [
        r#"{"seq":1,"topic":"t","received_ms":0,"qos":0,"retain":false}"#,
        r#"{"seq":1,"topic":"t","received_ms":0,"qos":0,"retain":false,"payload":"","payload_b64":""}"#,
        r#"{"seq":1,"topic":"t","received_ms":0,"qos":0,"retain":false,"payload_b64":"Zg="}"#,
        r#"{"seq":10,"topic":"t","received_ms":0,"qos":0,"retain":false,"payload":""}"#,
        r#"{"seq":1,"topic":"t","received_ms":0,"qos":3,"retain":false,"payload":""}"#,
        r#"{"seq":1,"topic":"t","received_ms":0,"qos":300,"retain":false,"payload":""}"#,
        r#"{"seq":1,"topic":"t","received_ms":0,"qos":0,"retain":false,"payload":""} x"#,
        "",
    ];
    for line in message_cases {
        assert!(decode(with(line).as_bytes()).is_err(), "{line}");
    }
    assert!(decode(b"{\"tern\":1}\xff").is_err());
}

#[test]
fn detection() {
    assert_eq!(detect(b"TERN\x01\x00"), Ok(Format::Postcard));
    assert_eq!(detect(b"{}"), Ok(Format::JsonLines));
    assert_eq!(detect(b" {}"), Err(EnvelopeError::UnknownFormat));
}

/// zstd: both forms round-trip; the binary prefix stays readable with the flag set, the
/// JSON form is a bare zstd frame; a repetitive batch gets much smaller.
#[cfg(feature = "zstd")]
#[test]
fn zstd_round_trips_in_both_formats() {
    use tern_envelope::binary::{FLAG_ZSTD, MAGIC, VERSION};
    use tern_envelope::compress::{DEFAULT_LEVEL, ZSTD_MAGIC, compress};
    let mut big = sample();
    big.last_seq = 5000;
    big.messages = (10..1010)
        .map(|seq| ForwardedMessage {
            seq,
            topic: "site-7/sensors/t1".into(),
            received_ms: 1_700_000_000_000 + seq,
            qos: 1,
            retain: false,
            content_type: None,
            user_properties: vec![],
            payload: format!("{{\"t\":21.{},\"unit\":\"C\"}}", seq % 10).into_bytes(),
        })
        .collect();
    for envelope in [sample(), big] {
        for format in [Format::Postcard, Format::JsonLines] {
            let plain = encode(&envelope, format).unwrap();
            let packed = compress(&plain, DEFAULT_LEVEL).unwrap();
            assert_eq!(decode(&packed).as_ref(), Ok(&envelope), "{format:?}");
            match format {
                Format::Postcard => {
                    assert_eq!(&packed[..4], &MAGIC);
                    assert_eq!((packed[4], packed[5]), (VERSION, FLAG_ZSTD));
                }
                Format::JsonLines => assert_eq!(&packed[..4], &ZSTD_MAGIC),
            }
            if envelope.messages.len() > 100 {
                assert!(
                    packed.len() * 4 < plain.len(),
                    "{format:?}: {} -> {} bytes",
                    plain.len(),
                    packed.len()
                );
            }
            // Compressing twice is refused, not nested.
            assert!(compress(&packed, DEFAULT_LEVEL).is_err());
        }
    }
}

/// Broken compressed input is an error, never a panic.
#[cfg(feature = "zstd")]
#[test]
fn zstd_rejections() {
    use tern_envelope::compress::{DEFAULT_LEVEL, compress};
    let packed = compress(&encode(&sample(), Format::Postcard).unwrap(), DEFAULT_LEVEL).unwrap();
    for cut in 6..packed.len() {
        assert!(decode(&packed[..cut]).is_err(), "cut at {cut}");
    }
    assert!(matches!(
        decode(b"TERN\x01\x01garbage"),
        Err(EnvelopeError::Compression(_))
    ));
    // A frame holding a binary envelope is not a valid form.
    let plain = encode(&sample(), Format::Postcard).unwrap();
    let frame = zstd_frame(&plain);
    assert!(matches!(decode(&frame), Err(EnvelopeError::Invalid(_))));
}

#[cfg(feature = "zstd")]
fn zstd_frame(bytes: &[u8]) -> Vec<u8> {
    zstd::bulk::compress(bytes, 1).unwrap()
}

/// The replay marker: flag 0x02 in the binary prefix, `"replay":true` in the JSON header
/// (absent when false), kept through compression.
#[test]
fn replay_marker_round_trips() {
    let mut replayed = sample();
    replayed.replay = true;
    let binary = encode(&replayed, Format::Postcard).unwrap();
    assert_eq!(&binary[..6], b"TERN\x01\x02");
    assert_eq!(decode(&binary).as_ref(), Ok(&replayed));
    let json = encode(&replayed, Format::JsonLines).unwrap();
    let header = json.split(|&b| b == b'\n').next().unwrap();
    assert!(
        std::str::from_utf8(header)
            .unwrap()
            .contains("\"replay\":true")
    );
    assert_eq!(decode(&json).as_ref(), Ok(&replayed));
    let plain = encode(&sample(), Format::JsonLines).unwrap();
    assert!(!std::str::from_utf8(&plain).unwrap().contains("replay"));
    #[cfg(feature = "zstd")]
    for bytes in [binary, json] {
        let packed = tern_envelope::compress::compress(&bytes, 3).unwrap();
        assert_eq!(decode(&packed).as_ref(), Ok(&replayed));
    }
    assert_eq!(
        decode(b"TERN\x01\x04"),
        Err(EnvelopeError::UnsupportedFlags(4))
    );
}
