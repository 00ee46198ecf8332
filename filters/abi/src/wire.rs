//! Bounds-checked primitives of the layout: a [`Reader`] over a byte slice that names the
//! part and field of every failure, and the little-endian writers.

use alloc::vec::Vec;

use crate::error::{AbiError, Field, Part};

/// Reads fields front to back from `rest`; every read is bounds-checked.
#[derive(Clone)]
pub(crate) struct Reader<'a> {
    pub(crate) rest: &'a [u8],
    pub(crate) part: Part,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(rest: &'a [u8], part: Part) -> Self {
        Self { rest, part }
    }

    pub(crate) fn take(&mut self, len: usize, field: Field) -> Result<&'a [u8], AbiError> {
        let (head, tail) = self.rest.split_at_checked(len).ok_or(AbiError::Truncated {
            part: self.part,
            field,
        })?;
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, field: Field) -> Result<[u8; N], AbiError> {
        let part = self.part;
        self.take(N, field)?
            .try_into()
            .map_err(|_| AbiError::Truncated { part, field })
    }

    pub(crate) fn u8(&mut self, field: Field) -> Result<u8, AbiError> {
        Ok(self.array::<1>(field)?[0])
    }

    pub(crate) fn u16(&mut self, field: Field) -> Result<u16, AbiError> {
        self.array(field).map(u16::from_le_bytes)
    }

    pub(crate) fn u32(&mut self, field: Field) -> Result<u32, AbiError> {
        self.array(field).map(u32::from_le_bytes)
    }

    pub(crate) fn u64(&mut self, field: Field) -> Result<u64, AbiError> {
        self.array(field).map(u64::from_le_bytes)
    }

    /// A `u32` length that must fit the buffer; a length beyond `usize` cannot.
    pub(crate) fn len32(&mut self, field: Field) -> Result<usize, AbiError> {
        let len = self.u32(field)?;
        usize::try_from(len).map_err(|_| AbiError::Truncated {
            part: self.part,
            field,
        })
    }

    /// A `str16`: `u16` length, then UTF-8.
    pub(crate) fn str16(&mut self, field: Field) -> Result<&'a str, AbiError> {
        let len = self.u16(field)?;
        let bytes = self.take(usize::from(len), field)?;
        core::str::from_utf8(bytes).map_err(|_| AbiError::InvalidUtf8 {
            part: self.part,
            field,
        })
    }

    /// The raw bytes of a `str16`, without UTF-8 validation (for data validated earlier).
    pub(crate) fn raw16(&mut self, field: Field) -> Result<&'a [u8], AbiError> {
        let len = self.u16(field)?;
        self.take(usize::from(len), field)
    }

    /// A `bytes32`: `u32` length, then the bytes.
    pub(crate) fn bytes32(&mut self, field: Field) -> Result<&'a [u8], AbiError> {
        let len = self.len32(field)?;
        self.take(len, field)
    }

    /// Fails unless every byte was consumed.
    pub(crate) fn finish(&self) -> Result<(), AbiError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(AbiError::TrailingBytes {
                part: self.part,
                count: self.rest.len(),
            })
        }
    }
}

// Inside a guest, fixed-size fields are pushed byte by byte: `extend_from_slice` of a small
// array is a `memory.copy` out of the sandboxed code there, several times the cost of a few
// inlined pushes. Natively `extend_from_slice` is the cheaper of the two.

pub(crate) fn put_u16(buf: &mut Vec<u8>, v: u16) {
    put_le(buf, v.to_le_bytes());
}

pub(crate) fn put_u32(buf: &mut Vec<u8>, v: u32) {
    put_le(buf, v.to_le_bytes());
}

#[inline(always)]
fn put_le<const N: usize>(buf: &mut Vec<u8>, bytes: [u8; N]) {
    if cfg!(target_family = "wasm") {
        buf.reserve(N);
        for b in bytes {
            buf.push(b);
        }
    } else {
        buf.extend_from_slice(&bytes);
    }
}

/// Overwrites the `u32` at `at` (a placeholder written earlier). Inline: a call costs as
/// much as the four-byte store.
#[inline]
pub(crate) fn patch_u32(buf: &mut [u8], at: usize, v: u32) {
    if let Some(slot) = buf.get_mut(at..at.saturating_add(4)) {
        slot.copy_from_slice(&v.to_le_bytes());
    }
}

/// Overwrites the `u16` at `at` (a placeholder written earlier).
#[inline]
pub(crate) fn patch_u16(buf: &mut [u8], at: usize, v: u16) {
    if let Some(slot) = buf.get_mut(at..at.saturating_add(2)) {
        slot.copy_from_slice(&v.to_le_bytes());
    }
}

pub(crate) fn put_str16(buf: &mut Vec<u8>, s: &str, field: Field) -> Result<(), AbiError> {
    put_bytes16(buf, s.as_bytes(), field)
}

/// A `str16` from bytes the reader checks for UTF-8.
pub(crate) fn put_bytes16(buf: &mut Vec<u8>, b: &[u8], field: Field) -> Result<(), AbiError> {
    let len = u16::try_from(b.len()).map_err(|_| AbiError::TooLong {
        field,
        len: b.len(),
        max: usize::from(u16::MAX),
    })?;
    put_u16(buf, len);
    buf.extend_from_slice(b);
    Ok(())
}

pub(crate) fn put_bytes32(buf: &mut Vec<u8>, b: &[u8], field: Field) -> Result<(), AbiError> {
    let len = u32::try_from(b.len()).map_err(|_| AbiError::TooLong {
        field,
        len: b.len(),
        max: U32_MAX,
    })?;
    put_u32(buf, len);
    buf.extend_from_slice(b);
    Ok(())
}

/// `u32::MAX` as a `usize` for error reports (saturating on 16-bit targets).
pub(crate) const U32_MAX: usize = if usize::BITS >= 32 {
    u32::MAX as usize
} else {
    usize::MAX
};
