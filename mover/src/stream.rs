//! STREAM chunked AEAD (Hoang, Reyhanitabar, Rogaway, Vizár, "Online Authenticated-
//! Encryption and its Nonce-Reuse Misuse-Resistance", CRYPTO 2015) over AES-256-GCM.
//!
//! - nonce(i, last) = i as u64 big-endian || 00 00 00 || last (0 or 1): 12 bytes
//! - AAD = SHA-256(stream header bytes), the same for every chunk
//! - every chunk but the last holds exactly `chunk_size` plaintext bytes; the last holds
//!   the remainder (`total_bytes - (n-1) * chunk_size`, 0 only when the stream is empty);
//!   n = max(1, ceil(total_bytes / chunk_size))
//!
//! A reordered or duplicated chunk fails authentication (its nonce is another index's); a
//! truncated stream never shows the chunk sealed with last = 1; a chunk after that one is
//! refused by index. The [`Opener`] authenticates a chunk before returning any plaintext.

use crate::error::MoverError;
use crate::keywrap::DataKey;
use crate::manifest::sha256;
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};

/// Header label (first bytes of the header).
pub const STREAM_LABEL: &[u8; 17] = b"custody-stream-v1";
/// Header length: label 17 + ticket id 16 + manifest digest 32 + chunk size 4 + total 8.
pub const HEADER_LEN: usize = 77;
/// Default plaintext bytes per chunk.
pub const DEFAULT_CHUNK_SIZE: u32 = 1 << 20;
/// Chunk size bounds (memory: one chunk at a time).
pub const MIN_CHUNK_SIZE: u32 = 1 << 10;
pub const MAX_CHUNK_SIZE: u32 = 16 << 20;
/// AES-GCM tag length.
pub const TAG_LEN: usize = 16;

/// What every chunk's AAD commits to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamHeader {
    pub ticket_id: [u8; 16],
    pub manifest_digest: [u8; 32],
    pub chunk_size: u32,
    pub total_bytes: u64,
}

impl StreamHeader {
    pub fn new(
        ticket_id: [u8; 16],
        manifest_digest: [u8; 32],
        chunk_size: u32,
        total_bytes: u64,
    ) -> Result<Self, MoverError> {
        let h = Self {
            ticket_id,
            manifest_digest,
            chunk_size,
            total_bytes,
        };
        h.validate()?;
        Ok(h)
    }

    fn validate(&self) -> Result<(), MoverError> {
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&self.chunk_size) {
            return Err(MoverError::StreamHeader(format!(
                "chunk size {} outside {MIN_CHUNK_SIZE}..={MAX_CHUNK_SIZE}",
                self.chunk_size
            )));
        }
        Ok(())
    }

    /// The fixed 77-byte encoding.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        let parts: [&[u8]; 5] = [
            STREAM_LABEL,
            &self.ticket_id,
            &self.manifest_digest,
            &self.chunk_size.to_be_bytes(),
            &self.total_bytes.to_be_bytes(),
        ];
        let mut at = 0;
        for p in parts {
            if let Some(dst) = out.get_mut(at..at + p.len()) {
                dst.copy_from_slice(p);
            }
            at += p.len();
        }
        out
    }

    pub fn from_bytes(b: &[u8]) -> Result<Self, MoverError> {
        let e = |m: &str| MoverError::StreamHeader(m.into());
        if b.len() != HEADER_LEN {
            return Err(MoverError::StreamHeader(format!(
                "{} bytes, want {HEADER_LEN}",
                b.len()
            )));
        }
        let r = |at: usize, n: usize| b.get(at..at + n).ok_or_else(|| e("truncated"));
        if r(0, 17)? != STREAM_LABEL {
            return Err(e("label"));
        }
        let ticket_id = r(17, 16)?.try_into().map_err(|_| e("ticket id"))?;
        let manifest_digest = r(33, 32)?.try_into().map_err(|_| e("manifest digest"))?;
        let chunk_size = u32::from_be_bytes(r(65, 4)?.try_into().map_err(|_| e("chunk size"))?);
        let total_bytes = u64::from_be_bytes(r(69, 8)?.try_into().map_err(|_| e("total"))?);
        Self::new(ticket_id, manifest_digest, chunk_size, total_bytes)
    }

    /// Number of chunks: max(1, ceil(total / chunk_size)).
    pub fn chunk_count(&self) -> u64 {
        let cs = u64::from(self.chunk_size.max(1));
        self.total_bytes.div_ceil(cs).max(1)
    }

    /// Plaintext length of chunk `index` (None past the end).
    pub fn plain_len(&self, index: u64) -> Option<usize> {
        let n = self.chunk_count();
        if index >= n {
            return None;
        }
        let cs = u64::from(self.chunk_size);
        let len = if index + 1 == n {
            self.total_bytes - index * cs
        } else {
            cs
        };
        usize::try_from(len).ok()
    }

    /// The AAD of every chunk.
    pub fn aad(&self) -> [u8; 32] {
        sha256(&self.to_bytes())
    }
}

/// STREAM nonce for chunk `index`.
pub fn nonce(index: u64, last: bool) -> [u8; 12] {
    let [a, b, c, d, e, f, g, h] = index.to_be_bytes();
    [a, b, c, d, e, f, g, h, 0, 0, 0, u8::from(last)]
}

fn aead_key(key: &DataKey) -> Result<LessSafeKey, MoverError> {
    UnboundKey::new(&AES_256_GCM, key.bytes())
        .map(LessSafeKey::new)
        .map_err(|_| MoverError::KeyWrap("AES-256-GCM key".into()))
}

/// Seals chunks; stateless per chunk, so a resumed sender can start at any index.
pub struct Sealer {
    key: LessSafeKey,
    header: StreamHeader,
    aad: [u8; 32],
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

impl Sealer {
    pub fn new(key: &DataKey, header: StreamHeader) -> Result<Self, MoverError> {
        Ok(Self {
            key: aead_key(key)?,
            aad: header.aad(),
            header,
        })
    }

    pub fn header(&self) -> &StreamHeader {
        &self.header
    }

    /// Seal chunk `index`. `plain` must have the length the header gives that index, and
    /// `last` must be true exactly for the final index (both checked).
    pub fn seal_chunk(&self, index: u64, plain: &[u8], last: bool) -> Result<Vec<u8>, MoverError> {
        let mut out = Vec::with_capacity(plain.len() + TAG_LEN);
        out.extend_from_slice(plain);
        self.seal_in_place(index, &mut out, last)?;
        Ok(out)
    }

    /// [`Sealer::seal_chunk`] without a copy: `buf` holds the plaintext and becomes the
    /// ciphertext (the tag appended; reserve `TAG_LEN` to avoid a reallocation).
    pub fn seal_in_place(&self, index: u64, buf: &mut Vec<u8>, last: bool) -> Result<(), MoverError> {
        let plain = buf.as_slice();
        let want = self.header.plain_len(index).ok_or(MoverError::StreamExtra {
            index,
            last: self.header.chunk_count() - 1,
        })?;
        if plain.len() != want {
            return Err(MoverError::ChunkLength {
                index,
                got: plain.len(),
                want,
            });
        }
        if last != (index + 1 == self.header.chunk_count()) {
            return Err(MoverError::ChunkSequence {
                want: self.header.chunk_count() - 1,
                got: index,
            });
        }
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce(index, last)),
                Aad::from(&self.aad),
                buf,
            )
            .map_err(|_| MoverError::KeyWrap("AES-GCM seal".into()))
    }
}

/// Opens chunks strictly in order from a start index; authenticates before returning.
pub struct Opener {
    key: LessSafeKey,
    header: StreamHeader,
    aad: [u8; 32],
    next: u64,
}

impl std::fmt::Debug for Opener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opener")
            .field("header", &self.header)
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl Opener {
    pub fn new(key: &DataKey, header: StreamHeader) -> Result<Self, MoverError> {
        Self::resume(key, header, 0)
    }

    /// Start at chunk `next` (a resumed transfer).
    pub fn resume(key: &DataKey, header: StreamHeader, next: u64) -> Result<Self, MoverError> {
        if next > header.chunk_count() {
            return Err(MoverError::StreamHeader(format!(
                "resume at {next} past the {} chunks",
                header.chunk_count()
            )));
        }
        Ok(Self {
            key: aead_key(key)?,
            aad: header.aad(),
            header,
            next,
        })
    }

    pub fn header(&self) -> &StreamHeader {
        &self.header
    }

    /// The index the next chunk must have.
    pub fn next_index(&self) -> u64 {
        self.next
    }

    /// True once the last chunk has been opened.
    pub fn is_done(&self) -> bool {
        self.next == self.header.chunk_count()
    }

    /// Authenticate and decrypt the next chunk (its position is `index`; transports that
    /// carry no index pass [`Opener::next_index`]). On error nothing is returned and the
    /// opener does not advance.
    pub fn open_chunk(&mut self, index: u64, ciphertext: &[u8]) -> Result<Vec<u8>, MoverError> {
        let mut buf = ciphertext.to_vec();
        let plain_len = self.open_in_place(index, &mut buf)?;
        buf.truncate(plain_len);
        Ok(buf)
    }

    /// [`Opener::open_chunk`] on the chunk (ciphertext and tag, exactly) in `buf`,
    /// decrypted where it is; returns the plaintext's length (the plaintext is then
    /// `buf[..len]`). On error the contents of `buf` are unspecified.
    pub fn open_in_place(&mut self, index: u64, buf: &mut [u8]) -> Result<usize, MoverError> {
        let n = self.header.chunk_count();
        if self.next >= n || index >= n {
            return Err(MoverError::StreamExtra { index, last: n - 1 });
        }
        if index != self.next {
            return Err(MoverError::ChunkSequence {
                want: self.next,
                got: index,
            });
        }
        let want = self.header.plain_len(index).unwrap_or(0) + TAG_LEN;
        if buf.len() != want {
            // A wrong length is as much a failed authentication as a wrong tag, but say why.
            return Err(MoverError::ChunkLength {
                index,
                got: buf.len(),
                want,
            });
        }
        let last = index + 1 == n;
        let plain_len = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce(index, last)),
                Aad::from(&self.aad),
                buf,
            )
            .map_err(|_| MoverError::ChunkAuthentication { index })?
            .len();
        self.next += 1;
        Ok(plain_len)
    }

    /// stream_truncated unless the last chunk was opened.
    pub fn finish(&self) -> Result<(), MoverError> {
        if self.is_done() {
            Ok(())
        } else {
            Err(MoverError::StreamTruncated {
                got: self.next,
                want: self.header.chunk_count(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use custody_types::FailedCheck;

    fn setup(total: u64) -> (DataKey, StreamHeader, Vec<u8>) {
        let key = DataKey::from_bytes([9; 32]);
        let h = StreamHeader::new([1; 16], [2; 32], 1024, total).unwrap();
        let plain: Vec<u8> = (0..total).map(|i| (i * 7 % 251) as u8).collect();
        (key, h, plain)
    }

    fn seal_all(key: &DataKey, h: StreamHeader, plain: &[u8]) -> Vec<Vec<u8>> {
        let s = Sealer::new(key, h).unwrap();
        let n = h.chunk_count();
        (0..n)
            .map(|i| {
                let a = (i * 1024) as usize;
                let b = (a + h.plain_len(i).unwrap()).min(plain.len());
                s.seal_chunk(i, &plain[a..b], i + 1 == n).unwrap()
            })
            .collect()
    }

    fn open_all(key: &DataKey, h: StreamHeader, chunks: &[Vec<u8>]) -> Result<Vec<u8>, MoverError> {
        let mut o = Opener::new(key, h)?;
        let mut out = Vec::new();
        for c in chunks {
            out.extend(o.open_chunk(o.next_index(), c)?);
        }
        o.finish()?;
        Ok(out)
    }

    #[test]
    fn header_roundtrip_and_bounds() {
        let h = StreamHeader::new([1; 16], [2; 32], 4096, 12345).unwrap();
        assert_eq!(StreamHeader::from_bytes(&h.to_bytes()).unwrap(), h);
        assert!(StreamHeader::new([1; 16], [2; 32], 10, 1).is_err());
        assert!(StreamHeader::new([1; 16], [2; 32], MAX_CHUNK_SIZE + 1, 1).is_err());
        assert!(StreamHeader::from_bytes(&h.to_bytes()[..76]).is_err());
        assert_eq!(
            StreamHeader::new([0; 16], [0; 32], 1024, 0)
                .unwrap()
                .chunk_count(),
            1
        );
        assert_eq!(
            StreamHeader::new([0; 16], [0; 32], 1024, 1024)
                .unwrap()
                .chunk_count(),
            1
        );
        assert_eq!(
            StreamHeader::new([0; 16], [0; 32], 1024, 1025)
                .unwrap()
                .chunk_count(),
            2
        );
        assert_eq!(nonce(0x0102, true), [0, 0, 0, 0, 0, 0, 1, 2, 0, 0, 0, 1]);
    }

    #[test]
    fn roundtrip_including_empty() {
        for total in [0u64, 1, 1023, 1024, 1025, 5000] {
            let (k, h, p) = setup(total);
            let c = seal_all(&k, h, &p);
            assert_eq!(open_all(&k, h, &c).unwrap(), p, "total {total}");
        }
    }

    #[test]
    fn tampering_detected() {
        let (k, h, p) = setup(5000); // 5 chunks
        let c = seal_all(&k, h, &p);
        let name = |r: Result<Vec<u8>, MoverError>| r.unwrap_err().check();

        let mut flip = c.clone();
        flip[2][100] ^= 0x80;
        assert_eq!(name(open_all(&k, h, &flip)), "chunk_authentication");

        let mut reorder = c.clone();
        reorder.swap(1, 2);
        assert_eq!(name(open_all(&k, h, &reorder)), "chunk_authentication");

        let mut dup = c.clone();
        dup[2] = dup[1].clone();
        assert_eq!(name(open_all(&k, h, &dup)), "chunk_authentication");

        let truncated = c[..4].to_vec();
        assert_eq!(name(open_all(&k, h, &truncated)), "stream_truncated");

        let mut extra = c.clone();
        extra.push(c[4].clone());
        assert_eq!(name(open_all(&k, h, &extra)), "stream_extra");

        let mut cut = c.clone();
        cut[4].pop();
        assert_eq!(name(open_all(&k, h, &cut)), "chunk_length");

        // The same chunks under another header (other ticket) do not open.
        let h2 = StreamHeader::new([3; 16], [2; 32], 1024, 5000).unwrap();
        assert_eq!(name(open_all(&k, h2, &c)), "chunk_authentication");
        // Or another key.
        assert_eq!(
            name(open_all(&DataKey::from_bytes([8; 32]), h, &c)),
            "chunk_authentication"
        );
        // A last chunk sealed as non-last (a stream cut at a chunk boundary and
        // re-declared shorter) does not open as last.
        let h3 = StreamHeader::new([1; 16], [2; 32], 1024, 2048).unwrap();
        assert_eq!(name(open_all(&k, h3, &c[..2])), "chunk_authentication");
    }

    #[test]
    fn resume_from_k() {
        let (k, h, p) = setup(5000);
        let c = seal_all(&k, h, &p);
        let mut o = Opener::resume(&k, h, 3).unwrap();
        assert_eq!(o.open_chunk(3, &c[3]).unwrap(), &p[3072..4096]);
        assert!(o.open_chunk(3, &c[3]).is_err());
        assert_eq!(o.open_chunk(4, &c[4]).unwrap(), &p[4096..]);
        o.finish().unwrap();
    }
}
