//! Standard base64 (RFC 4648 §4 alphabet `A-Z a-z 0-9 + /`, `=` padding), for payloads
//! that are not UTF-8 in the JSON-lines format. Strict decoding: padding required, no
//! whitespace, unused bits zero, so every payload has exactly one text form.

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Appends the base64 form of `bytes` to `out`.
pub fn encode_into(bytes: &[u8], out: &mut String) {
    out.reserve(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        let digits = [(n >> 18) & 63, (n >> 12) & 63, (n >> 6) & 63, n & 63];
        for (i, d) in digits.into_iter().enumerate() {
            // i <= chunk.len() keeps the digits that carry input bits.
            out.push(if i <= chunk.len() {
                char::from(ALPHABET[usize::try_from(d).unwrap_or(0)])
            } else {
                '='
            });
        }
    }
}

/// Base64 form of `bytes`.
pub fn encode(bytes: &[u8]) -> String {
    let mut out = String::new();
    encode_into(bytes, &mut out);
    out
}

/// Decodes strict base64; `None` when `text` is not the canonical form of some bytes.
pub fn decode(text: &str) -> Option<Vec<u8>> {
    let text = text.as_bytes();
    if !text.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let chunks = text.chunks_exact(4);
    let last = chunks.len().checked_sub(1);
    for (index, chunk) in chunks.enumerate() {
        let padding = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if padding > 2 || (padding > 0 && Some(index) != last) {
            return None;
        }
        let mut n: u32 = 0;
        for &c in &chunk[..4 - padding] {
            n = n << 6 | u32::from(value(c)?);
        }
        n <<= 6 * u32::try_from(padding).ok()?;
        let [_, d0, d1, d2] = n.to_be_bytes();
        let decoded = [d0, d1, d2];
        let keep = 3 - padding;
        // Canonical: the bits the padding hides must be zero.
        if decoded[keep..].iter().any(|&b| b != 0) {
            return None;
        }
        out.extend_from_slice(&decoded[..keep]);
    }
    Some(out)
}

fn value(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4648 §10 test vectors.
    #[test]
    fn rfc_vectors() {
        let vectors = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, coded) in vectors {
            assert_eq!(encode(plain.as_bytes()), coded);
            assert_eq!(decode(coded).as_deref(), Some(plain.as_bytes()));
        }
        assert_eq!(encode(&[0xff, 0xfe, 0x00]), "//4A");
    }

    #[test]
    fn non_canonical_text_is_rejected() {
        for bad in [
            "Zg=", "Zg", "Zh==", "Zm9=", "Z===", "Zg==Zg==", "Zm9v\n", "Zm 9", "====", "Zm-v",
        ] {
            assert_eq!(decode(bad), None, "{bad:?}");
        }
    }
}
