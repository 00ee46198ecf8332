//! Byte-string helpers for short strings (topic levels, property keys and values) that are
//! cheap inside a WebAssembly guest.
//!
//! Inside a guest every loop iteration carries the runtime's interruption check, and a
//! comparison becomes a call into a byte-at-a-time `memcmp` whose set-up costs more than
//! the dozen bytes at hand. These helpers work eight bytes per step with plain 64-bit loads,
//! and finish the last 0–7 bytes with at most three fixed-size loads and no loop. They are
//! exact on any input (they only ever read within the slices given) and never panic.

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// `tail` (fewer than eight bytes) as a little-endian word, zero-padded: one branch on the
/// length, no loop, no bounds checks.
#[inline(always)]
fn load_tail(tail: &[u8]) -> u64 {
    let w = |bytes: [u8; 8]| u64::from_le_bytes(bytes);
    match *tail {
        [a] => u64::from(a),
        [a, b] => w([a, b, 0, 0, 0, 0, 0, 0]),
        [a, b, c] => w([a, b, c, 0, 0, 0, 0, 0]),
        [a, b, c, d] => w([a, b, c, d, 0, 0, 0, 0]),
        [a, b, c, d, e] => w([a, b, c, d, e, 0, 0, 0]),
        [a, b, c, d, e, f] => w([a, b, c, d, e, f, 0, 0]),
        [a, b, c, d, e, f, g] => w([a, b, c, d, e, f, g, 0]),
        _ => 0,
    }
}

/// Bit 7 of each byte of the result is set where `word` holds `byte`, exactly for the
/// lowest such byte (higher ones may carry false positives, which callers never read).
#[inline(always)]
fn byte_mask(word: u64, byte: u8) -> u64 {
    let x = word ^ (ONES * u64::from(byte));
    x.wrapping_sub(ONES) & !x & HIGHS
}

/// Offset of the first `needle` in `haystack`. `needle` must not be 0 (the zero padding of
/// the last word would match it); a 0 needle falls back to a plain search.
#[inline]
pub fn find_byte(haystack: &[u8], needle: u8) -> Option<usize> {
    if needle == 0 {
        return haystack.iter().position(|&b| b == 0);
    }
    let (words, tail) = haystack.as_chunks::<8>();
    for (i, word) in words.iter().enumerate() {
        let mask = byte_mask(u64::from_le_bytes(*word), needle);
        if mask != 0 {
            return Some(i * 8 + (mask.trailing_zeros() / 8) as usize);
        }
    }
    let mask = byte_mask(load_tail(tail), needle);
    (mask != 0).then(|| words.len() * 8 + (mask.trailing_zeros() / 8) as usize)
}

/// Whether `a` and `b` hold the same bytes. Lengths from 2 on are compared as two
/// overlapping words (the first and the last 2, 4 or 8 bytes), after the whole words beyond
/// 16 bytes: no loop for short keys, no per-byte assembly of the tail.
#[inline]
pub fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    match a.len() {
        0 => true,
        1 => a.first() == b.first(),
        2..=3 => same_ends::<2>(a, b),
        4..=7 => same_ends::<4>(a, b),
        // The first and last eight bytes cover it all: no loop.
        8..=16 => same_ends::<8>(a, b),
        _ => {
            let (a_words, _) = a.as_chunks::<8>();
            let (b_words, _) = b.as_chunks::<8>();
            a_words.iter().zip(b_words).all(|(x, y)| x == y) && same_ends::<8>(a, b)
        }
    }
}

/// Whether the first `N` and the last `N` bytes of `a` and `b` (both at least `N` long, of
/// the same length) are equal.
#[inline(always)]
fn same_ends<const N: usize>(a: &[u8], b: &[u8]) -> bool {
    a.first_chunk::<N>() == b.first_chunk::<N>() && a.last_chunk::<N>() == b.last_chunk::<N>()
}

/// Whether any byte of `bytes` is one of `+`, `#` or NUL (not allowed in a topic name).
#[inline]
pub fn has_wildcard_or_nul(bytes: &[u8]) -> bool {
    let (words, tail) = bytes.as_chunks::<8>();
    let bad = |word: u64, padding: u64| {
        byte_mask(word, b'+') | byte_mask(word, b'#') | (byte_mask(word, 0) & !padding) != 0
    };
    if words.iter().any(|w| bad(u64::from_le_bytes(*w), 0)) {
        return true;
    }
    // The zero padding of the last word is not a NUL of the input: mask its bytes out (and
    // every byte above the first padding byte, where `byte_mask` may report false hits).
    let padding = match tail.len() {
        0 => return false,
        n => HIGHS << (8 * n),
    };
    bad(load_tail(tail), padding)
}

#[cfg(test)]
mod tests {
    use alloc::vec::Vec;

    use super::*;

    fn samples() -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for len in 0..40 {
            let base: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
            out.push(base.clone());
            for at in 0..len {
                for b in [b'/', b'+', b'#', 0, 0x80, 0xff] {
                    let mut v = base.clone();
                    v[at] = b;
                    out.push(v.clone());
                    if at + 3 < len {
                        v[at + 3] = b'/';
                        out.push(v);
                    }
                }
            }
        }
        out
    }

    #[test]
    fn find_byte_agrees_with_position() {
        for s in samples() {
            for needle in [b'/', b'+', b'a', 0, 0x80, 0xff] {
                assert_eq!(
                    find_byte(&s, needle),
                    s.iter().position(|&b| b == needle),
                    "{s:?} {needle}"
                );
            }
        }
    }

    #[test]
    fn same_bytes_agrees_with_eq() {
        let all = samples();
        for a in all.iter().step_by(7) {
            for b in all.iter().step_by(11) {
                assert_eq!(same_bytes(a, b), a == b, "{a:?} {b:?}");
            }
            assert!(same_bytes(a, a));
        }
    }

    #[test]
    fn wildcards_and_nul_are_found_anywhere() {
        for s in samples() {
            let expected = s.iter().any(|&b| matches!(b, b'+' | b'#' | 0));
            assert_eq!(has_wildcard_or_nul(&s), expected, "{s:?}");
        }
    }
}
