//! The source side: the checkpoint files concatenated in manifest order, read one chunk
//! at a time and sealed. Start at any chunk (resume).
//!
//! Each file's SHA-256 is computed as it is read and compared with the manifest when its
//! last byte is in: a mismatch (the file changed after the manifest was built) stops the
//! stream before the chunk holding that byte is sealed, so a source that took its
//! manifest from the ticket's preparation need not read the checkpoint twice. (The
//! destination checks every digest before placing anything whatever the source does.)

use crate::error::MoverError;
use crate::keywrap::DataKey;
use crate::manifest::{join, sha256_of, Manifest};
use crate::stream::{Sealer, StreamHeader, TAG_LEN};
use aws_lc_rs::digest;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Reads and seals chunk after chunk; memory is one chunk.
pub struct Sender {
    dir: PathBuf,
    manifest: Manifest,
    sealer: Sealer,
    next: u64,
    /// Index into the manifest of the open file, with the file, the offset in it and the
    /// digest of its bytes before that offset.
    current: Option<(usize, File, u64, digest::Context)>,
    /// Check every file's SHA-256 against the manifest while reading (see
    /// [`Sender::set_verify_digests`]).
    verify: bool,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender")
            .field("dir", &self.dir)
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl Sender {
    /// `header` must name this manifest (digest, total size).
    pub fn new(
        dir: &Path,
        manifest: Manifest,
        header: StreamHeader,
        key: &DataKey,
    ) -> Result<Self, MoverError> {
        if header.manifest_digest != manifest.digest()? || header.total_bytes != manifest.total_bytes() {
            return Err(MoverError::StreamHeader(
                "header does not name this manifest (digest or total size)".into(),
            ));
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            manifest,
            sealer: Sealer::new(key, header)?,
            next: 0,
            current: None,
            verify: true,
        })
    }

    /// Whether to hash each file while reading it and stop with `manifest_changed` before
    /// sealing the chunk that ends a file that changed (default: on). A network move turns
    /// it off: the destination hashes every file as it arrives and refuses (`file_digest`)
    /// before placing anything, so hashing at both ends pays for the same check twice (a
    /// third of the CPU of a move on one 2-core machine, bench/mover.sh). An export keeps
    /// it on: nobody checks the file until it is imported. Off, a resume seeks instead of
    /// re-reading the file's prefix.
    pub fn set_verify_digests(&mut self, on: bool) {
        self.verify = on;
    }

    pub fn header(&self) -> &StreamHeader {
        self.sealer.header()
    }

    pub fn chunk_count(&self) -> u64 {
        self.header().chunk_count()
    }

    /// The index [`Sender::next_chunk`] will seal.
    pub fn next_index(&self) -> u64 {
        self.next
    }

    /// Continue from chunk `k` (what the receiver reported durable).
    pub fn seek_to_chunk(&mut self, k: u64) -> Result<(), MoverError> {
        if k > self.chunk_count() {
            return Err(MoverError::StreamHeader(format!("chunk {k} past the end")));
        }
        self.next = k;
        self.current = None;
        Ok(())
    }

    /// Open the file holding global offset `pos`, positioned there (its bytes before `pos`
    /// read and hashed: a resumed stream still checks the whole file).
    fn open_at(&mut self, pos: u64) -> Result<(), MoverError> {
        let mut start = 0u64;
        for (i, f) in self.manifest.files.iter().enumerate() {
            if pos < start + f.size {
                let path = join(&self.dir, &f.path)?;
                let mut file = File::open(&path).map_err(|e| MoverError::io(&path, e))?;
                let len = file.metadata().map_err(|e| MoverError::io(&path, e))?.len();
                if len != f.size {
                    return Err(MoverError::ManifestChanged(format!(
                        "{:?} has {len} bytes, the manifest says {}",
                        f.path, f.size
                    )));
                }
                let mut ctx = digest::Context::new(&digest::SHA256);
                let skip = pos - start;
                if skip > 0 && !self.verify {
                    file.seek(SeekFrom::Start(skip))
                        .map_err(|e| MoverError::io(&path, e))?;
                } else if skip > 0 {
                    let mut buf = vec![0u8; 1 << 20];
                    let mut left = skip;
                    while left > 0 {
                        let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                        let dst = buf.get_mut(..n).unwrap_or_default();
                        file.read_exact(dst).map_err(|e| MoverError::io(&path, e))?;
                        ctx.update(dst);
                        left -= n as u64;
                    }
                }
                self.current = Some((i, file, skip, ctx));
                return Ok(());
            }
            start += f.size;
        }
        Err(MoverError::ManifestChanged(format!(
            "offset {pos} past the checkpoint"
        )))
    }

    /// Seal the next chunk, or `None` after the last. Returns (index, ciphertext).
    pub fn next_chunk(&mut self) -> Result<Option<(u64, Vec<u8>)>, MoverError> {
        let index = self.next;
        let Some(want) = self.header().plain_len(index) else {
            return Ok(None);
        };
        let mut pos = index * u64::from(self.header().chunk_size);
        // Read straight into the buffer that becomes the ciphertext (tag room reserved;
        // `read_to_end` fills spare capacity without zeroing it first).
        let mut buf = Vec::with_capacity(want + TAG_LEN);
        let mut filled = 0usize;
        while filled < want {
            if self.current.is_none() {
                self.open_at(pos)?;
            }
            let Some((i, file, off, ctx)) = self.current.as_mut() else {
                return Err(MoverError::ManifestChanged("no file at offset".into()));
            };
            let entry = self
                .manifest
                .files
                .get(*i)
                .ok_or_else(|| MoverError::ManifestChanged("file index".into()))?;
            let left_in_file = entry.size - *off;
            let take = (want - filled).min(usize::try_from(left_in_file).unwrap_or(usize::MAX));
            let got = (&mut *file)
                .take(take as u64)
                .read_to_end(&mut buf)
                .map_err(|e| MoverError::ManifestChanged(format!("{:?}: {e}", entry.path)))?;
            if got != take {
                return Err(MoverError::ManifestChanged(format!(
                    "{:?} shorter than its manifest size",
                    entry.path
                )));
            }
            if self.verify {
                ctx.update(buf.get(filled..).unwrap_or_default());
            }
            filled += take;
            *off += take as u64;
            pos += take as u64;
            if *off == entry.size {
                if let Some((_, _, _, ctx)) = self.current.take() {
                    if self.verify && sha256_of(ctx) != entry.sha256 {
                        return Err(MoverError::ManifestChanged(format!(
                            "{:?} does not match its manifest digest",
                            entry.path
                        )));
                    }
                }
            }
        }
        let last = index + 1 == self.chunk_count();
        self.sealer.seal_in_place(index, &mut buf, last)?;
        self.next += 1;
        Ok(Some((index, buf)))
    }

    /// Write the remaining chunks as records (u32 big-endian length || ciphertext).
    pub fn write_records<W: Write>(&mut self, w: &mut W) -> Result<u64, MoverError> {
        let mut n = 0;
        while let Some((_, ct)) = self.next_chunk()? {
            write_record(w, &ct)?;
            n += 1;
        }
        Ok(n)
    }
}

/// One record: u32 big-endian length || ciphertext.
pub fn write_record<W: Write>(w: &mut W, ct: &[u8]) -> Result<(), MoverError> {
    let len = u32::try_from(ct.len()).map_err(|_| MoverError::ExportFormat("record too long".into()))?;
    w.write_all(&len.to_be_bytes())
        .and_then(|_| w.write_all(ct))
        .map_err(|e| MoverError::io(Path::new("<record stream>"), e))
}

/// Read one record of at most `max` bytes; `None` at a clean end of input.
pub fn read_record<R: Read>(r: &mut R, max: usize) -> Result<Option<Vec<u8>>, MoverError> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = r
            .read(len.get_mut(got..).unwrap_or_default())
            .map_err(|e| MoverError::io(Path::new("<record stream>"), e))?;
        if n == 0 {
            if got == 0 {
                return Ok(None);
            }
            return Err(MoverError::ExportFormat(
                "input ends inside a record length".into(),
            ));
        }
        got += n;
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(MoverError::ExportFormat(format!(
            "record of {len} bytes, at most {max}"
        )));
    }
    // Into spare capacity, not zeroed first.
    let mut ct = Vec::with_capacity(len);
    let got = r
        .take(len as u64)
        .read_to_end(&mut ct)
        .map_err(|e| MoverError::io(Path::new("<record stream>"), e))?;
    if got != len {
        return Err(MoverError::ExportFormat("input ends inside a record".into()));
    }
    Ok(Some(ct))
}
