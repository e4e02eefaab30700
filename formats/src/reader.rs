//! A bounds-checked big/little-endian cursor shared by the binary parsers.
//!
//! Every read either returns exactly the bytes asked for or a [`Truncated`] error that
//! says what was being read and where; nothing indexes a slice directly.

use thiserror::Error;

/// Input ended before a field was complete.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("truncated: {field} needs {needed} bytes at offset {offset}, {available} left")]
pub struct Truncated {
    pub field: &'static str,
    pub offset: usize,
    pub needed: usize,
    pub available: usize,
}

/// A cursor over a byte slice.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Current offset from the start of the input.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Bytes not yet consumed.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// The unconsumed rest of the input.
    pub fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or_default()
    }

    /// The bytes consumed so far.
    pub fn consumed(&self) -> &'a [u8] {
        self.buf.get(..self.pos).unwrap_or_default()
    }

    pub fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], Truncated> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        match end.and_then(|e| self.buf.get(self.pos..e).map(|s| (s, e))) {
            Some((s, e)) => {
                self.pos = e;
                Ok(s)
            }
            None => Err(Truncated {
                field,
                offset: self.pos,
                needed: n,
                available: self.remaining(),
            }),
        }
    }

    pub fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], Truncated> {
        let s = self.take(N, field)?;
        let mut out = [0u8; N];
        out.copy_from_slice(s);
        Ok(out)
    }

    pub fn u8(&mut self, field: &'static str) -> Result<u8, Truncated> {
        Ok(self.array::<1>(field)?[0])
    }

    pub fn u16_be(&mut self, field: &'static str) -> Result<u16, Truncated> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    pub fn u32_be(&mut self, field: &'static str) -> Result<u32, Truncated> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    pub fn u64_be(&mut self, field: &'static str) -> Result<u64, Truncated> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }

    pub fn u16_le(&mut self, field: &'static str) -> Result<u16, Truncated> {
        Ok(u16::from_le_bytes(self.array(field)?))
    }

    pub fn u24_le(&mut self, field: &'static str) -> Result<u32, Truncated> {
        let b: [u8; 3] = self.array(field)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], 0]))
    }

    pub fn u32_le(&mut self, field: &'static str) -> Result<u32, Truncated> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }

    pub fn u64_le(&mut self, field: &'static str) -> Result<u64, Truncated> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }

    /// A TPM2B: big-endian u16 size, then that many bytes.
    pub fn tpm2b(&mut self, field: &'static str) -> Result<&'a [u8], Truncated> {
        let n = self.u16_be(field)?;
        self.take(usize::from(n), field)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_reports_truncation() {
        let mut r = Reader::new(&[0, 3, 1, 2, 3, 9]);
        assert_eq!(r.tpm2b("x").unwrap(), &[1, 2, 3]);
        assert_eq!(r.remaining(), 1);
        let e = r.u16_be("size").unwrap_err();
        assert_eq!(e.field, "size");
        assert_eq!(e.offset, 5);
        assert_eq!(e.available, 1);
        // A failed read consumes nothing.
        assert_eq!(r.u8("last").unwrap(), 9);
    }

    #[test]
    fn huge_length_does_not_overflow() {
        let mut r = Reader::new(&[1, 2]);
        r.take(1, "a").unwrap();
        assert!(r.take(usize::MAX, "b").is_err());
    }
}
