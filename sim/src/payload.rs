//! The telemetry payload every simulated device publishes, encoded with postcard.

use serde::{Deserialize, Serialize};

/// One telemetry reading. `pad` brings the encoded size up to the requested
/// payload size.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Telemetry<'a> {
    /// Identifies the run, so late messages of an earlier run are not counted.
    pub run: u32,
    /// Device index, `0..devices`.
    pub device: u32,
    /// Per-device sequence number, from 0.
    pub seq: u64,
    /// Send time, microseconds since the Unix epoch (monotonic within a run).
    pub sent_us: u64,
    /// Simulated temperature, °C.
    pub temperature: f32,
    /// Filler bytes.
    #[serde(borrow)]
    pub pad: &'a [u8],
}

/// Largest filler a payload can carry.
pub const MAX_PAD: usize = 64 * 1024;

static ZEROS: [u8; MAX_PAD] = [0; MAX_PAD];

/// Bytes of the postcard length prefix of `n`.
fn varint_len(n: usize) -> usize {
    let mut len = 1;
    let mut n = n >> 7;
    while n > 0 {
        len += 1;
        n >>= 7;
    }
    len
}

impl Telemetry<'static> {
    /// A reading padded so that its encoding is `target` bytes long (or the
    /// minimum size, when `target` is smaller than the header).
    pub fn padded(
        run: u32,
        device: u32,
        seq: u64,
        sent_us: u64,
        temperature: f32,
        target: usize,
    ) -> Self {
        let mut t = Telemetry {
            run,
            device,
            seq,
            sent_us,
            temperature,
            pad: &[],
        };
        let mut scratch = [0u8; 64];
        // The header without the one-byte length of the empty filler.
        let base = postcard::to_slice(&t, &mut scratch).map_or(0, |b| b.len() - 1);
        t.pad = filler(base, target);
        t
    }
}

/// Zero filler for a message that encodes to `base` bytes without its filler field, so
/// that the whole, the filler's length prefix included, encodes to `target` bytes: at
/// most [`MAX_PAD`] bytes, none when `target` leaves no room.
pub(crate) fn filler(base: usize, target: usize) -> &'static [u8] {
    let avail = target.saturating_sub(base);
    let mut pad = avail.saturating_sub(1).min(MAX_PAD);
    while pad > 0 && pad + varint_len(pad) > avail {
        pad -= 1;
    }
    ZEROS.get(..pad).unwrap_or_default()
}

/// Decodes a payload.
pub fn decode(bytes: &[u8]) -> Option<Telemetry<'_>> {
    postcard::from_bytes(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padded_to_exact_size() {
        for target in [0, 10, 32, 64, 127, 128, 130, 200, 1024, 20_000] {
            let t = Telemetry::padded(7, 3, 123_456, 1_700_000_000_000_000, 21.5, target);
            let mut buf = vec![0u8; target + 64];
            let bytes = postcard::to_slice(&t, &mut buf).unwrap();
            if target >= 32 {
                assert_eq!(bytes.len(), target, "target {target}");
            } else {
                assert!(bytes.len() <= 32);
            }
            let back = decode(bytes).unwrap();
            assert_eq!(back, t);
        }
    }
}
