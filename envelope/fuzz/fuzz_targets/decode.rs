//! Decode arbitrary bytes as an envelope. The decoder must never panic; every envelope it
//! accepts is valid, re-encodes in both formats, and decodes from them to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tern_envelope::{Format, decode, encode};

fuzz_target!(|data: &[u8]| {
    let Ok(envelope) = decode(data) else {
        return;
    };
    assert_eq!(envelope.validate(), Ok(()));
    for format in [Format::Postcard, Format::JsonLines] {
        let bytes = encode(&envelope, format).expect("a decoded envelope encodes");
        assert_eq!(decode(&bytes).as_ref(), Ok(&envelope));
    }
});
