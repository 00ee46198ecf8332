//! Primitive field readers and writers: fixed-size integers, variable byte integers,
//! length-prefixed UTF-8 strings and binary data (MQTT 5.0 §1.5, 3.1.1 §1.5).
//!
//! [`Reader`] walks a slice that is already known to hold a whole packet, so running
//! out of bytes here means a field claims more than the packet holds: that is a
//! malformed packet ([`Error::UnexpectedEnd`]), never [`Error::Incomplete`], which only
//! the fixed-header parser in `packet.rs` reports. [`Writer`] never indexes out of
//! bounds: every write is checked and reports [`EncodeError::BufferTooSmall`].

use crate::error::{EncodeError, Error};

/// Largest value a variable byte integer can carry (four bytes of seven bits).
pub const MAX_VARINT: u32 = 268_435_455;

/// Largest length of a two-byte-length-prefixed string or binary field.
pub(crate) const MAX_FIELD_LEN: usize = 65_535;

/// Outcome of parsing a variable byte integer at the start of a slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VarInt {
    /// The value and how many bytes encoded it.
    Value { value: u32, len: usize },
    /// The slice ends before the last byte of the integer.
    Incomplete,
    /// More than four bytes, or not the shortest encoding.
    Malformed,
}

/// Parses a variable byte integer, rejecting encodings longer than four bytes and
/// non-minimal ones (MQTT 5.0 §1.5.5: "MUST use the minimum number of bytes").
pub(crate) fn parse_varint(buf: &[u8]) -> VarInt {
    let mut value: u32 = 0;
    for (i, &byte) in buf.iter().enumerate().take(4) {
        value |= u32::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            if i > 0 && byte == 0 {
                return VarInt::Malformed;
            }
            return VarInt::Value { value, len: i + 1 };
        }
    }
    if buf.len() >= 4 {
        VarInt::Malformed
    } else {
        VarInt::Incomplete
    }
}

/// Number of bytes the variable byte integer encoding of `value` takes.
pub(crate) const fn varint_len(value: u32) -> usize {
    if value < 128 {
        1
    } else if value < 16_384 {
        2
    } else if value < 2_097_152 {
        3
    } else {
        4
    }
}

/// Encoded size of a length-prefixed string or binary field.
pub(crate) fn field_len(len: usize) -> Result<usize, EncodeError> {
    if len > MAX_FIELD_LEN {
        return Err(EncodeError::FieldTooLong { len });
    }
    Ok(2 + len)
}

/// Checks the content rules of an MQTT UTF-8 string that `core::str` does not:
/// U+0000 MUST NOT appear (MQTT 5.0 §1.5.4, 3.1.1 §1.5.3). Surrogates and ill-formed
/// sequences are already rejected by `core::str::from_utf8`.
pub(crate) fn check_mqtt_str(s: &str) -> Result<(), Error> {
    // A plain loop: `contains` would link the word-at-a-time `memchr` into firmware.
    if s.bytes().any(|b| b == 0) {
        return Err(Error::NullCharacter);
    }
    Ok(())
}

/// Cursor over the bytes of one complete packet (or one field inside it). Public only
/// so the sealed [`crate::list::Item`] trait can name it; the module is private.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) const fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    pub(crate) const fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Takes everything that is left.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        core::mem::take(&mut self.buf)
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        if n > self.buf.len() {
            return Err(Error::UnexpectedEnd);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        let bytes = self.take(N)?;
        let mut out = [0; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, Error> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, Error> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, Error> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub(crate) fn varint(&mut self) -> Result<u32, Error> {
        match parse_varint(self.buf) {
            VarInt::Value { value, len } => {
                self.take(len)?;
                Ok(value)
            }
            VarInt::Incomplete => Err(Error::UnexpectedEnd),
            VarInt::Malformed => Err(Error::MalformedVarInt),
        }
    }

    /// Two-byte length followed by that many bytes.
    pub(crate) fn binary(&mut self) -> Result<&'a [u8], Error> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }

    /// Two-byte length followed by well-formed UTF-8 without U+0000.
    pub(crate) fn string(&mut self) -> Result<&'a str, Error> {
        let bytes = self.binary()?;
        let s = core::str::from_utf8(bytes).map_err(|_| Error::InvalidUtf8)?;
        check_mqtt_str(s)?;
        Ok(s)
    }
}

/// Bounds-checked cursor over an output buffer.
#[derive(Debug)]
pub(crate) struct Writer<'b> {
    buf: &'b mut [u8],
    pos: usize,
}

impl<'b> Writer<'b> {
    pub(crate) fn new(buf: &'b mut [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Bytes written so far.
    pub(crate) const fn position(&self) -> usize {
        self.pos
    }

    pub(crate) fn bytes(&mut self, bytes: &[u8]) -> Result<(), EncodeError> {
        let end = self
            .pos
            .checked_add(bytes.len())
            .ok_or(EncodeError::BufferTooSmall {
                needed: usize::MAX,
                available: self.buf.len(),
            })?;
        let available = self.buf.len();
        let dst = self
            .buf
            .get_mut(self.pos..end)
            .ok_or(EncodeError::BufferTooSmall {
                needed: end,
                available,
            })?;
        dst.copy_from_slice(bytes);
        self.pos = end;
        Ok(())
    }

    pub(crate) fn u8(&mut self, v: u8) -> Result<(), EncodeError> {
        self.bytes(&[v])
    }

    pub(crate) fn u16(&mut self, v: u16) -> Result<(), EncodeError> {
        self.bytes(&v.to_be_bytes())
    }

    pub(crate) fn u32(&mut self, v: u32) -> Result<(), EncodeError> {
        self.bytes(&v.to_be_bytes())
    }

    pub(crate) fn varint(&mut self, v: u32) -> Result<(), EncodeError> {
        if v > MAX_VARINT {
            return Err(EncodeError::VarIntTooLarge { value: v });
        }
        let mut rest = v;
        loop {
            // Seven low bits per byte: the low byte of `rest & 0x7F` is all of it.
            let mut byte = (rest & 0x7F).to_le_bytes()[0];
            rest >>= 7;
            if rest > 0 {
                byte |= 0x80;
            }
            self.u8(byte)?;
            if rest == 0 {
                return Ok(());
            }
        }
    }

    pub(crate) fn binary(&mut self, data: &[u8]) -> Result<(), EncodeError> {
        let len =
            u16::try_from(data.len()).map_err(|_| EncodeError::FieldTooLong { len: data.len() })?;
        self.u16(len)?;
        self.bytes(data)
    }

    pub(crate) fn string(&mut self, s: &str) -> Result<(), EncodeError> {
        self.binary(s.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode_varint(v: u32) -> ([u8; 4], usize) {
        let mut buf = [0u8; 4];
        let mut w = Writer::new(&mut buf);
        w.varint(v).unwrap();
        let n = w.position();
        (buf, n)
    }

    #[test]
    fn varint_boundaries_match_the_spec_table() {
        // MQTT 5.0 table 1-1: the largest value of each width.
        for (value, bytes) in [
            (0u32, &[0x00][..]),
            (127, &[0x7F]),
            (128, &[0x80, 0x01]),
            (16_383, &[0xFF, 0x7F]),
            (16_384, &[0x80, 0x80, 0x01]),
            (2_097_151, &[0xFF, 0xFF, 0x7F]),
            (2_097_152, &[0x80, 0x80, 0x80, 0x01]),
            (MAX_VARINT, &[0xFF, 0xFF, 0xFF, 0x7F]),
        ] {
            let (buf, n) = encode_varint(value);
            assert_eq!(&buf[..n], bytes, "encoding {value}");
            assert_eq!(varint_len(value), bytes.len());
            assert_eq!(
                parse_varint(bytes),
                VarInt::Value {
                    value,
                    len: bytes.len()
                }
            );
        }
    }

    #[test]
    fn varint_rejects_five_bytes_and_non_minimal_forms() {
        assert_eq!(
            parse_varint(&[0xFF, 0xFF, 0xFF, 0xFF, 0x01]),
            VarInt::Malformed
        );
        assert_eq!(parse_varint(&[0x80, 0x80, 0x80, 0x80]), VarInt::Malformed);
        assert_eq!(parse_varint(&[0x80, 0x00]), VarInt::Malformed);
        assert_eq!(parse_varint(&[0x80, 0x80]), VarInt::Incomplete);
        assert_eq!(parse_varint(&[]), VarInt::Incomplete);
    }

    #[test]
    fn varint_above_maximum_is_an_encode_error() {
        let mut buf = [0u8; 8];
        let mut w = Writer::new(&mut buf);
        assert_eq!(
            w.varint(MAX_VARINT + 1),
            Err(EncodeError::VarIntTooLarge {
                value: MAX_VARINT + 1
            })
        );
    }

    #[test]
    fn strings_reject_null_and_invalid_utf8() {
        assert_eq!(
            Reader::new(&[0, 2, b'a', 0]).string(),
            Err(Error::NullCharacter)
        );
        assert_eq!(
            Reader::new(&[0, 2, 0xC3, 0x28]).string(),
            Err(Error::InvalidUtf8)
        );
        // An encoded surrogate (U+D800) is ill-formed UTF-8.
        assert_eq!(
            Reader::new(&[0, 3, 0xED, 0xA0, 0x80]).string(),
            Err(Error::InvalidUtf8)
        );
        assert_eq!(
            Reader::new(&[0, 3, b'a']).string(),
            Err(Error::UnexpectedEnd)
        );
        assert_eq!(Reader::new(&[0, 2, b'h', b'i']).string(), Ok("hi"));
    }

    #[test]
    fn writer_reports_a_full_buffer() {
        let mut buf = [0u8; 3];
        let mut w = Writer::new(&mut buf);
        assert_eq!(
            w.string("abc"),
            Err(EncodeError::BufferTooSmall {
                needed: 5,
                available: 3
            })
        );
    }
}
