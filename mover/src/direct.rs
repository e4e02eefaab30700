//! The destination's file writes, past the page cache where the filesystem allows.
//!
//! A checkpoint arrives once and is not read back by the mover, so copying it into the
//! page cache only to write it back costs the destination CPU (the copy, page allocation,
//! writeback: about a sixth of a move's CPU here, `perf`, bench/mover.sh) and evicts what
//! a running job has cached. So the writer gathers each file's bytes in an aligned buffer
//! and writes whole blocks with `O_DIRECT` on a second handle of the same file; only an
//! unaligned tail (a file's end, or the bytes before a durable point) goes through the
//! ordinary handle, and stays in the buffer so that the next direct write covers its
//! block again. A filesystem that refuses `O_DIRECT` (at open or at a write) gets
//! ordinary writes for the rest of the file.
//!
//! Durability is unchanged: a durable point first [`Staged::flush`]es, then the sync
//! thread `fdatasync`s the ordinary handle (one inode, so it covers both handles' writes
//! and the device cache).

use crate::error::MoverError;
use std::fs::File;
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Alignment of direct writes: offsets, lengths and memory. 4 KiB covers 512-byte and
/// 4 KiB logical blocks; a device needing more refuses (`EINVAL`) and the file falls
/// back to ordinary writes.
pub const ALIGN: usize = 4096;

/// Bytes gathered before a direct write (1-4 MiB direct writes ran at the disk's speed
/// here: `dd oflag=direct`).
const GATHER: usize = 2 << 20;

/// A buffer whose first byte is `ALIGN`-aligned in memory (safe code: a larger `Vec` and
/// an offset into it; the `Vec` never grows, so the offset stays valid).
struct AlignedBuf {
    store: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    fn new(cap: usize) -> Self {
        let store = vec![0u8; cap + ALIGN];
        let start = store.as_ptr().align_offset(ALIGN).min(ALIGN);
        Self { store, start, len: 0 }
    }

    fn cap(&self) -> usize {
        self.store.len() - ALIGN
    }

    fn filled(&self) -> &[u8] {
        self.store
            .get(self.start..self.start + self.len)
            .unwrap_or_default()
    }

    /// Append as much of `data` as fits; returns how much.
    fn push(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.cap() - self.len);
        let at = self.start + self.len;
        if let (Some(dst), Some(src)) = (self.store.get_mut(at..at + n), data.get(..n)) {
            dst.copy_from_slice(src);
            self.len += n;
            n
        } else {
            0
        }
    }

    /// Drop the first `n` bytes (written), moving the rest to the front.
    fn consume(&mut self, n: usize) {
        let n = n.min(self.len);
        let from = self.start + n..self.start + self.len;
        self.store.copy_within(from, self.start);
        self.len -= n;
    }

    fn clear(&mut self) {
        self.len = 0;
    }
}

/// The file being written: its ordinary handle, the direct one, and the bytes from
/// `base` on that are not yet written through the direct handle.
pub struct Staged {
    file: Arc<File>,
    path: PathBuf,
    direct: Option<File>,
    /// File offset of the buffer's first byte (a multiple of `ALIGN` while `direct`).
    base: u64,
    buf: AlignedBuf,
}

impl std::fmt::Debug for Staged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Staged")
            .field("path", &self.path)
            .field("direct", &self.direct.is_some())
            .field("base", &self.base)
            .field("buffered", &self.buf.len)
            .finish()
    }
}

/// Append `data` at `*base` through the ordinary handle, and advance `*base`.
fn append_plain(file: &File, path: &Path, base: &mut u64, data: &[u8]) -> Result<(), MoverError> {
    file.write_all_at(data, *base)
        .map_err(|e| MoverError::io(path, e))?;
    *base += data.len() as u64;
    Ok(())
}

/// Open `path` again for direct writes; `None` where the platform or filesystem has no
/// `O_DIRECT`.
#[cfg(target_os = "linux")]
fn open_direct(path: &Path) -> Option<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .ok()
}

#[cfg(not(target_os = "linux"))]
fn open_direct(_: &Path) -> Option<File> {
    None
}

impl Staged {
    /// Start writing `file` (at `path`) at its current length: 0 for a new file, the
    /// durable offset for a resumed one. With `direct`, the block that offset falls in is
    /// read back into the buffer, so that direct writes start on a block boundary.
    pub fn open(file: Arc<File>, path: &Path, direct: bool) -> Result<Self, MoverError> {
        Self::with_buffer(file, path, direct, AlignedBuf::new(GATHER))
    }

    /// Finish this file (everything appended written, as [`Staged::flush`]) and go on to
    /// `file`, as [`Staged::open`] does, keeping the gather buffer: a checkpoint of many
    /// small files allocates it once, not once per file.
    pub fn next_file(mut self, file: Arc<File>, path: &Path, direct: bool) -> Result<Self, MoverError> {
        self.flush()?;
        let mut buf = self.buf;
        buf.clear();
        Self::with_buffer(file, path, direct, buf)
    }

    fn with_buffer(file: Arc<File>, path: &Path, direct: bool, buf: AlignedBuf) -> Result<Self, MoverError> {
        let len = file.metadata().map_err(|e| MoverError::io(path, e))?.len();
        let mut s = Self {
            direct: if direct { open_direct(path) } else { None },
            file,
            path: path.to_path_buf(),
            base: len,
            buf,
        };
        if s.direct.is_some() {
            let head = (len % ALIGN as u64) as usize;
            if head > 0 {
                s.base = len - head as u64;
                let mut block = vec![0u8; head];
                s.file
                    .read_exact_at(&mut block, s.base)
                    .map_err(|e| MoverError::io(path, e))?;
                s.buf.push(&block);
            }
        }
        Ok(s)
    }

    /// Whether this is the state of `file`.
    pub fn is(&self, file: &Arc<File>) -> bool {
        Arc::ptr_eq(&self.file, file)
    }

    /// Whether writes bypass the page cache (false after a fallback).
    pub fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    /// Append `data` to the file.
    pub fn write(&mut self, mut data: &[u8]) -> Result<(), MoverError> {
        if self.direct.is_none() {
            return append_plain(&self.file, &self.path, &mut self.base, data);
        }
        if self.buf.len == 0
            && self.base.is_multiple_of(ALIGN as u64)
            && data.as_ptr().align_offset(ALIGN) == 0
        {
            // Nothing gathered, on a block boundary, and the caller's bytes aligned in
            // memory (a chunk read for it, `Receiver::write_chunk_at`): their whole
            // blocks go to the disk from where they are, no copy.
            let whole = data.len() / ALIGN * ALIGN;
            let (blocks, rest) = data.split_at(whole);
            if !blocks.is_empty() {
                Self::write_blocks_at(&mut self.direct, &self.file, &self.path, blocks, self.base)?;
                self.base += whole as u64;
                data = rest;
                if self.direct.is_none() {
                    // Refused just now: the rest goes out as is.
                    return append_plain(&self.file, &self.path, &mut self.base, data);
                }
            }
        }
        while !data.is_empty() {
            let n = self.buf.push(data);
            data = data.get(n..).unwrap_or_default();
            if self.buf.len == self.buf.cap() {
                self.write_blocks()?;
            }
        }
        Ok(())
    }

    /// Write the buffer's whole blocks through the direct handle (falling back to the
    /// ordinary one if the filesystem refuses).
    fn write_blocks(&mut self) -> Result<(), MoverError> {
        let whole = self.buf.len / ALIGN * ALIGN;
        if whole == 0 {
            return Ok(());
        }
        let blocks = self.buf.filled().get(..whole).unwrap_or_default();
        Self::write_blocks_at(&mut self.direct, &self.file, &self.path, blocks, self.base)?;
        self.base += whole as u64;
        self.buf.consume(whole);
        if self.direct.is_none() {
            // Buffered from here: the unaligned rest goes out as is.
            append_plain(&self.file, &self.path, &mut self.base, self.buf.filled())?;
            self.buf.clear();
        }
        Ok(())
    }

    /// Whole blocks at `at` through the direct handle, or the ordinary one without it; a
    /// direct write the filesystem refuses (`EINVAL`: alignment it does not accept) is
    /// redone through the ordinary handle, which then takes every later write.
    fn write_blocks_at(
        direct: &mut Option<File>,
        file: &File,
        path: &Path,
        blocks: &[u8],
        at: u64,
    ) -> Result<(), MoverError> {
        let wrote = match direct.as_ref() {
            Some(d) => d.write_all_at(blocks, at),
            None => file.write_all_at(blocks, at),
        };
        match wrote {
            Ok(()) => Ok(()),
            Err(e) if direct.is_some() && e.kind() == ErrorKind::InvalidInput => {
                *direct = None;
                file.write_all_at(blocks, at).map_err(|e| MoverError::io(path, e))
            }
            Err(e) => Err(MoverError::io(path, e)),
        }
    }

    /// Everything appended so far written to the file (not yet fsynced): whole blocks
    /// direct, the tail through the ordinary handle. The tail stays buffered, and the
    /// next direct write of its block rewrites it with what follows.
    pub fn flush(&mut self) -> Result<(), MoverError> {
        self.write_blocks()?;
        let tail = self.buf.filled();
        if !tail.is_empty() {
            self.file
                .write_all_at(tail, self.base)
                .map_err(|e| MoverError::io(&self.path, e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn pattern(n: usize, seed: u8) -> Vec<u8> {
        (0..n)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    /// Writes of odd sizes, flushes at odd points (durable points), a resumed file whose
    /// length is not block-aligned: the file holds exactly the bytes appended, whether or
    /// not the filesystem takes direct writes.
    #[test]
    fn odd_writes_flushes_and_a_resume_give_exactly_the_bytes() {
        // Beside the sources (not a tmpfs /tmp), where the filesystem likely has O_DIRECT.
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let path = dir.path().join("f");
        let want = pattern(5 * GATHER + 12_345, 7);
        for direct in [true, false] {
            let file = Arc::new(File::create(&path).unwrap());
            let mut s = Staged::open(Arc::clone(&file), &path, direct).unwrap();
            let mut off = 0;
            for (i, step) in [1usize, 4095, 4097, 1 << 20, 3 << 20, 77, GATHER]
                .iter()
                .cycle()
                .enumerate()
            {
                let end = (off + step).min(3 * GATHER + 1001);
                s.write(&want[off..end]).unwrap();
                off = end;
                if i % 3 == 2 {
                    s.flush().unwrap();
                    // What a durable point fsyncs is all there.
                    assert_eq!(std::fs::metadata(&path).unwrap().len(), off as u64);
                }
                if off == 3 * GATHER + 1001 {
                    break;
                }
            }
            s.flush().unwrap();
            drop(s);
            drop(file);
            // Resume at the unaligned length: the rest appended through a fresh state.
            let file = Arc::new(
                std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&path)
                    .unwrap(),
            );
            let mut s = Staged::open(Arc::clone(&file), &path, direct).unwrap();
            s.write(&want[off..]).unwrap();
            s.flush().unwrap();
            // Where the filesystem takes direct writes at all, it took every one of ours
            // (aligned as it needs): no fallback.
            let supported = open_direct(&path).is_some();
            assert_eq!(s.is_direct(), direct && supported);
            assert_eq!(std::fs::read(&path).unwrap(), want, "direct {direct}");
            std::fs::remove_file(&path).unwrap();
        }
    }

    /// Bytes aligned in memory, written on a block boundary, go to the disk from where
    /// they are: only the part past the last whole block is gathered.
    #[test]
    fn aligned_bytes_on_a_block_boundary_are_written_without_gathering() {
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let path = dir.path().join("f");
        let want = pattern((1 << 20) + 100, 3);
        let mut src = AlignedBuf::new(want.len());
        src.push(&want);
        let file = Arc::new(File::create(&path).unwrap());
        let mut s = Staged::open(Arc::clone(&file), &path, true).unwrap();
        s.write(src.filled()).unwrap();
        if s.is_direct() {
            assert_eq!(s.buf.len, 100, "whole blocks were copied into the gather buffer");
            assert_eq!(s.base, 1 << 20);
        }
        // Unaligned in memory now (one byte on): gathered, and still the right bytes.
        s.write(&src.filled()[1..]).unwrap();
        s.flush().unwrap();
        let mut all = want.clone();
        all.extend_from_slice(&want[1..]);
        assert_eq!(std::fs::read(&path).unwrap(), all);
    }

    /// A direct write the filesystem refuses (here: a length it cannot take) is redone
    /// through the ordinary handle, which then takes every later write.
    #[test]
    fn a_refused_direct_write_falls_back_to_the_ordinary_handle() {
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let path = dir.path().join("f");
        let file = File::create(&path).unwrap();
        // The checkout's filesystem (ext4 here and in CI; xfs and btrfs too) has O_DIRECT.
        let mut direct = Some(open_direct(&path).expect("O_DIRECT on the checkout's filesystem"));
        let odd = pattern(100, 5);
        Staged::write_blocks_at(&mut direct, &file, &path, &odd, 0).unwrap();
        assert!(direct.is_none(), "the refusal did not switch to ordinary writes");
        assert_eq!(std::fs::read(&path).unwrap(), odd);
    }

    /// Going on to the next file writes out the last one and keeps the gather buffer.
    #[test]
    fn the_next_file_reuses_the_gather_buffer() {
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let mut s = Staged::open(Arc::new(File::create(&a).unwrap()), &a, true).unwrap();
        let store = s.buf.store.as_ptr();
        s.write(&pattern(10_000, 1)).unwrap();
        let mut s = s
            .next_file(Arc::new(File::create(&b).unwrap()), &b, true)
            .unwrap();
        assert_eq!(s.buf.store.as_ptr(), store);
        assert_eq!(s.buf.len, 0);
        s.write(&pattern(5, 2)).unwrap();
        s.flush().unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), pattern(10_000, 1));
        assert_eq!(std::fs::read(&b).unwrap(), pattern(5, 2));
    }

    #[test]
    fn the_buffer_is_aligned_and_keeps_its_tail() {
        let mut b = AlignedBuf::new(3 * ALIGN);
        assert_eq!(b.filled().as_ptr().align_offset(ALIGN), 0);
        assert_eq!(b.push(&pattern(4 * ALIGN, 1)), 3 * ALIGN);
        b.consume(2 * ALIGN + 5);
        assert_eq!(b.filled(), &pattern(4 * ALIGN, 1)[2 * ALIGN + 5..3 * ALIGN]);
        assert_eq!(b.filled().as_ptr().align_offset(ALIGN), 0);
    }
}
