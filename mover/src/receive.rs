//! The destination side: authenticated plaintext only, into a staging directory, split
//! into files by the manifest; durable progress for resume; every file's SHA-256 checked;
//! one atomic rename into place at the end.
//!
//! Layout: `<dest>/.custody-staging-<ticket id hex>/` holds `data/` (the checkpoint tree
//! as it grows) and `progress` (the next chunk index whose bytes are not yet durable, as
//! decimal text, replaced atomically after the data was fsynced). The target (default
//! `<dest>/<job>`) appears only by `rename(data, target)` after every file verified, so a
//! checkpoint is never half-visible; a damaged or incomplete stream leaves the target
//! absent and the staging directory holding only authenticated bytes.

use crate::direct::Staged;
use crate::error::MoverError;
use crate::keywrap::DataKey;
use crate::manifest::{join, sha256_of, Manifest};
use crate::receipt::Receipt;
use crate::stream::{Opener, StreamHeader};
use crate::ticket::Ticket;
use aws_lc_rs::digest;
use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;

/// Plaintext chunks queued for the hasher thread, and again between it and the writer.
const WRITE_AHEAD: usize = 4;

/// Spent chunk buffers kept for reuse: the chunks in flight in the pipeline, and two more.
const SPARE_BUFFERS: usize = 2 * WRITE_AHEAD + 2;

/// Completed files held open for the next durable point's fsync, at most.
const MAX_UNSYNCED: usize = 256;

/// Chunks between durable progress points by default (64 MiB at 1 MiB chunks).
pub const DEFAULT_SYNC_EVERY: u64 = 64;

fn staging_err(msg: impl Into<String>) -> MoverError {
    MoverError::Staging(msg.into())
}

/// The staging directory of a ticket under `dest`.
pub fn staging_dir(dest: &Path, ticket_id: &[u8; 16]) -> PathBuf {
    dest.join(format!(".custody-staging-{}", hex::encode(ticket_id)))
}

fn fsync_dir(p: &Path) -> Result<(), MoverError> {
    File::open(p)
        .and_then(|d| d.sync_all())
        .map_err(|e| MoverError::io(p, e))
}

/// Authenticated plaintext on its way to a file: `buf[at]`, in the buffer the chunk was
/// received and decrypted in (no copy), or a copy of part of one.
struct Plain {
    buf: Vec<u8>,
    at: std::ops::Range<usize>,
}

impl Plain {
    fn bytes(&self) -> &[u8] {
        self.buf.get(self.at.clone()).unwrap_or_default()
    }
}

enum WriteJob {
    /// Hash, then append authenticated plaintext to a file.
    Write(Arc<File>, PathBuf, Plain),
    /// The running digest of the file being written (a resumed file's prefix).
    SetDigest(digest::Context),
    /// The current file is complete: compare its digest with the manifest's (sticky
    /// `file_digest` failure otherwise) and start a fresh digest for the next file.
    EndFile { path: String, want: [u8; 32] },
    /// Passed to the sync thread once every earlier write is done.
    Durable(SyncJob),
}

/// What the hasher passes on to the writer: digests stay with the hasher.
enum WriterJob {
    Write(Arc<File>, PathBuf, Plain),
    Durable(SyncJob),
}

/// A durable point, run on the sync thread while the next chunks are received and written:
/// fsync the files and directories, then (with `progress`) record the resume point.
struct SyncJob {
    /// Completed files (`sync_all`) and the file being written (`sync_data`, flag true).
    files: Vec<(Arc<File>, PathBuf, bool)>,
    dirs: Vec<PathBuf>,
    /// The staging directory and the chunk index to record in its `progress`.
    progress: Option<(PathBuf, u64)>,
    /// Told when the job is done (a synchronous durable point).
    reply: Option<SyncSender<Result<(), MoverError>>>,
}

impl SyncJob {
    fn run(self, durable: &AtomicU64) -> Result<(), MoverError> {
        for (f, path, data_only) in &self.files {
            if *data_only { f.sync_data() } else { f.sync_all() }.map_err(|e| MoverError::io(path, e))?;
        }
        for d in &self.dirs {
            fsync_dir(d)?;
        }
        if let Some((staging, k)) = &self.progress {
            write_progress(staging, *k)?;
            durable.store(*k, Ordering::Release);
        }
        Ok(())
    }
}

/// The writer's state for `f`: the current file's, or, for the next file, a fresh one
/// (the current file written out, its gather buffer kept).
fn staged_for(cur: Option<Staged>, f: Arc<File>, path: &Path, direct: bool) -> Result<Staged, MoverError> {
    match cur {
        Some(s) if s.is(&f) => Ok(s),
        Some(done) => done.next_file(f, path, direct),
        None => Staged::open(f, path, direct),
    }
}

/// Record `k` as the durable point: written to `progress.tmp`, fsynced, renamed over
/// `progress`, directory fsynced.
fn write_progress(staging: &Path, k: u64) -> Result<(), MoverError> {
    let tmp = staging.join("progress.tmp");
    let fin = staging.join("progress");
    let mut f = File::create(&tmp).map_err(|e| MoverError::io(&tmp, e))?;
    f.write_all(format!("{k}\n").as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| MoverError::io(&tmp, e))?;
    std::fs::rename(&tmp, &fin).map_err(|e| MoverError::io(&fin, e))?;
    fsync_dir(staging)
}

/// The first failure of the writer thread; every later call reports it.
#[derive(Debug, Clone)]
enum Failure {
    Io(PathBuf, std::io::ErrorKind, String),
    Digest(String),
    Staging(String),
}

impl Failure {
    fn of(e: &MoverError) -> Self {
        match e {
            MoverError::FileDigest { path } => Self::Digest(path.clone()),
            MoverError::Io { path, source } => {
                Self::Io(PathBuf::from(path), source.kind(), source.to_string())
            }
            other => Self::Staging(other.to_string()),
        }
    }

    fn error(&self) -> MoverError {
        match self {
            Self::Io(p, k, m) => MoverError::io(p, std::io::Error::new(*k, m.clone())),
            Self::Digest(path) => MoverError::FileDigest { path: path.clone() },
            Self::Staging(m) => staging_err(m.clone()),
        }
    }
}

type SharedFailure = Arc<std::sync::Mutex<Option<Failure>>>;

/// Three threads behind the connection's, a pipeline: one hashes the plaintext, one
/// writes it, one runs the durable points (fsync, progress). SHA-256 and the copy into
/// the page cache are most of the destination's work, and one thread doing both was the
/// slowest stage of a move (`perf`, bench/mover.sh); split, they run on both cores while
/// the connection's thread reads and authenticates the next chunks. Jobs run in order: a
/// file's digest is checked before any later job reaches the writer, and a durable point
/// reaches the sync thread only after every write before it is done. A failure (a write or
/// fsync error, a file whose digest is not the manifest's) sticks and is reported by the
/// next call; after it no progress is recorded.
struct Writer {
    tx: Option<SyncSender<WriteJob>>,
    hasher: Option<std::thread::JoinHandle<()>>,
    handle: Option<std::thread::JoinHandle<()>>,
    syncer: Option<std::thread::JoinHandle<()>>,
    failed: SharedFailure,
    /// The last durable point the sync thread recorded.
    durable: Arc<AtomicU64>,
    /// Chunk buffers the writer is done with, for the next frames (no fresh 1 MiB
    /// allocation, page faults and zeroing per chunk: 3 % of a move's CPU here).
    spare: std::sync::mpsc::Receiver<Vec<u8>>,
    /// Files opened from now on are written past the page cache where possible.
    direct: Arc<AtomicBool>,
}

impl Writer {
    fn spawn(durable_at: u64) -> Self {
        let (tx, rx) = sync_channel::<WriteJob>(WRITE_AHEAD);
        let failed: SharedFailure = Arc::default();
        let durable = Arc::new(AtomicU64::new(durable_at));
        let fail_of = |shared: &SharedFailure, f: Failure| {
            let mut slot = shared.lock().unwrap_or_else(|p| p.into_inner());
            slot.get_or_insert(f);
        };
        let failed_of = |shared: &SharedFailure| shared.lock().unwrap_or_else(|p| p.into_inner()).clone();

        // One durable point in flight while the next one's chunks arrive.
        let (sync_tx, sync_rx) = sync_channel::<SyncJob>(1);
        let (shared, point) = (Arc::clone(&failed), Arc::clone(&durable));
        let syncer = std::thread::spawn(move || {
            for mut job in sync_rx {
                let reply = job.reply.take();
                let r = match failed_of(&shared) {
                    Some(f) => Err(f.error()),
                    None => job.run(&point).inspect_err(|e| fail_of(&shared, Failure::of(e))),
                };
                if let Some(reply) = reply {
                    let _ = reply.send(r);
                }
            }
        });

        // The hasher: digests every write, checks each file's digest at its end, and passes
        // writes and durable points on to the writer in order.
        let (write_tx, write_rx) = sync_channel::<WriterJob>(WRITE_AHEAD);
        let shared = Arc::clone(&failed);
        let hasher = std::thread::spawn(move || {
            let mut ctx = digest::Context::new(&digest::SHA256);
            for job in rx {
                match job {
                    WriteJob::Write(f, path, data) => {
                        if failed_of(&shared).is_none() {
                            ctx.update(data.bytes());
                        }
                        if write_tx.send(WriterJob::Write(f, path, data)).is_err() {
                            return;
                        }
                    }
                    WriteJob::SetDigest(c) => ctx = c,
                    WriteJob::EndFile { path, want } => {
                        let done = std::mem::replace(&mut ctx, digest::Context::new(&digest::SHA256));
                        if failed_of(&shared).is_none() && sha256_of(done) != want {
                            fail_of(&shared, Failure::Digest(path));
                        }
                    }
                    WriteJob::Durable(job) => {
                        if let Err(std::sync::mpsc::SendError(WriterJob::Durable(SyncJob {
                            reply: Some(reply),
                            ..
                        }))) = write_tx.send(WriterJob::Durable(job))
                        {
                            let _ = reply.send(Err(staging_err("the writer thread stopped")));
                        }
                    }
                }
            }
        });

        // The writer: each file's bytes through a `direct::Staged` (past the page cache
        // where the filesystem allows), every durable point preceded by a flush; spent
        // chunk buffers go back to the connection's thread for the next frames.
        let shared = Arc::clone(&failed);
        let (spare_tx, spare) = sync_channel::<Vec<u8>>(SPARE_BUFFERS);
        let direct = Arc::new(AtomicBool::new(true));
        let use_direct = Arc::clone(&direct);
        let handle = std::thread::spawn(move || {
            let fail = |e: MoverError| fail_of(&shared, Failure::of(&e));
            let failed_now = || failed_of(&shared);
            let mut cur: Option<Staged> = None;
            for job in write_rx {
                match job {
                    WriterJob::Write(f, path, data) => {
                        if failed_now().is_none() {
                            let direct = use_direct.load(Ordering::Relaxed);
                            let r = staged_for(cur.take(), f, &path, direct)
                                .and_then(|s| cur.insert(s).write(data.bytes()));
                            if let Err(e) = r {
                                fail(e);
                            }
                        }
                        let mut spent = data.buf;
                        spent.clear();
                        let _ = spare_tx.try_send(spent);
                    }
                    WriterJob::Durable(job) => {
                        if failed_now().is_none() {
                            if let Some(Err(e)) = cur.as_mut().map(Staged::flush) {
                                fail(e);
                            }
                        }
                        if let Err(std::sync::mpsc::SendError(job)) = sync_tx.send(job) {
                            if let Some(reply) = job.reply {
                                let _ = reply.send(Err(staging_err("the sync thread stopped")));
                            }
                        }
                    }
                }
            }
            // Queued writes all reach the file before a resume of the same staging reads it.
            if failed_now().is_none() {
                if let Some(Err(e)) = cur.as_mut().map(Staged::flush) {
                    fail(e);
                }
            }
        });
        Self {
            tx: Some(tx),
            hasher: Some(hasher),
            handle: Some(handle),
            syncer: Some(syncer),
            failed,
            durable,
            spare,
            direct,
        }
    }

    fn gone() -> MoverError {
        staging_err("the writer thread stopped")
    }

    fn send(&self, job: WriteJob) -> Result<(), MoverError> {
        if let Some(f) = self.failed.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            return Err(f.error());
        }
        self.tx
            .as_ref()
            .ok_or_else(Self::gone)?
            .send(job)
            .map_err(|_| Self::gone())
    }

    fn write(&self, f: &Arc<File>, path: &Path, data: Plain) -> Result<(), MoverError> {
        self.send(WriteJob::Write(Arc::clone(f), path.to_path_buf(), data))
    }

    /// Queue a durable point; with `wait`, return once it is done (its result).
    fn durable(&self, mut job: SyncJob, wait: bool) -> Result<(), MoverError> {
        if !wait {
            return self.send(WriteJob::Durable(job));
        }
        let (reply, done) = sync_channel(1);
        job.reply = Some(reply);
        self.send(WriteJob::Durable(job))?;
        done.recv().map_err(|_| Self::gone())?
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Finish the queued writes and durable points before a resume of the same staging
        // can start (each thread holds the next one's queue: joined in pipeline order).
        self.tx = None;
        if let Some(h) = self.hasher.take() {
            let _ = h.join();
        }
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        if let Some(h) = self.syncer.take() {
            let _ = h.join();
        }
    }
}

/// Writes one incoming checkpoint.
pub struct Receiver {
    staging: PathBuf,
    data: PathBuf,
    target: PathBuf,
    ticket_id: [u8; 16],
    job: String,
    destination: String,
    manifest: Manifest,
    opener: Opener,
    /// The file being written: manifest index, handle (None until its first byte),
    /// bytes written, running digest.
    file_idx: usize,
    file: Option<Arc<File>>,
    file_off: u64,
    writer: Writer,
    /// Files completed since the last durable point, to fsync at the next one.
    unsynced: Vec<(Arc<File>, PathBuf)>,
    /// Directories whose entries changed since the last durable point.
    dirty_dirs: BTreeSet<PathBuf>,
    sync_every: u64,
    since_sync: u64,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("staging", &self.staging)
            .field("target", &self.target)
            .field("next", &self.opener.next_index())
            .field("durable", &self.durable_point())
            .finish_non_exhaustive()
    }
}

impl Receiver {
    fn check_inputs(ticket: &Ticket, manifest: &Manifest, header: &StreamHeader) -> Result<(), MoverError> {
        let md = manifest.digest()?;
        if md != ticket.manifest_digest || md != header.manifest_digest {
            return Err(MoverError::ManifestDigest(
                "the manifest is not the one the ticket and stream header name".into(),
            ));
        }
        if header.ticket_id != ticket.id {
            return Err(MoverError::StreamHeader(
                "stream header names another ticket".into(),
            ));
        }
        if header.total_bytes != manifest.total_bytes() {
            return Err(MoverError::StreamHeader(
                "total bytes differ from the manifest".into(),
            ));
        }
        Ok(())
    }

    fn default_target(dest: &Path, ticket: &Ticket, target: Option<&Path>) -> Result<PathBuf, MoverError> {
        match target {
            Some(t) => Ok(t.to_path_buf()),
            None => {
                if ticket.job.contains('/') {
                    return Err(MoverError::ManifestPath(format!(
                        "job name {:?} is not one path component",
                        ticket.job
                    )));
                }
                join(dest, &ticket.job)
            }
        }
    }

    fn build(dest: &Path, target: PathBuf, ticket: &Ticket, manifest: Manifest, opener: Opener) -> Self {
        let staging = staging_dir(dest, &ticket.id);
        let data = staging.join("data");
        let durable_at = opener.next_index();
        Self {
            staging,
            data,
            target,
            ticket_id: ticket.id,
            job: ticket.job.clone(),
            destination: ticket.destination.clone(),
            manifest,
            opener,
            file_idx: 0,
            file: None,
            file_off: 0,
            writer: Writer::spawn(durable_at),
            unsynced: Vec::new(),
            dirty_dirs: BTreeSet::new(),
            sync_every: DEFAULT_SYNC_EVERY,
            since_sync: 0,
        }
    }

    /// Start a fresh transfer. The caller has verified the ticket (signature, expiry,
    /// destination, replay) and unwrapped the key. Refuses if the target exists or a
    /// staging directory for this ticket exists (use [`Receiver::resume`]).
    pub fn create(
        dest: &Path,
        target: Option<&Path>,
        ticket: &Ticket,
        manifest: Manifest,
        header: StreamHeader,
        key: &DataKey,
    ) -> Result<Self, MoverError> {
        Self::check_inputs(ticket, &manifest, &header)?;
        let target = Self::default_target(dest, ticket, target)?;
        if target.symlink_metadata().is_ok() {
            return Err(staging_err(format!("target {} already exists", target.display())));
        }
        let staging = staging_dir(dest, &ticket.id);
        // create_dir (not _all) is exclusive: two transfers of one ticket cannot share it.
        std::fs::create_dir(&staging).map_err(|e| MoverError::io(&staging, e))?;
        let data = staging.join("data");
        std::fs::create_dir(&data).map_err(|e| MoverError::io(&data, e))?;
        fsync_dir(dest)?;
        write_progress(&staging, 0)?;
        Ok(Self::build(
            dest,
            target,
            ticket,
            manifest,
            Opener::new(key, header)?,
        ))
    }

    /// Continue an interrupted transfer from its last durable chunk: files before it are
    /// re-hashed from disk (and must match), the partial file is cut back to the durable
    /// offset, anything after it is removed.
    pub fn resume(
        dest: &Path,
        target: Option<&Path>,
        ticket: &Ticket,
        manifest: Manifest,
        header: StreamHeader,
        key: &DataKey,
    ) -> Result<Self, MoverError> {
        Self::check_inputs(ticket, &manifest, &header)?;
        let target = Self::default_target(dest, ticket, target)?;
        let staging = staging_dir(dest, &ticket.id);
        let progress = staging.join("progress");
        let text = std::fs::read_to_string(&progress).map_err(|e| MoverError::io(&progress, e))?;
        let k: u64 = text
            .trim()
            .parse()
            .map_err(|_| staging_err(format!("{}: not a chunk index", progress.display())))?;
        if k > header.chunk_count() {
            return Err(staging_err("progress past the end of the stream"));
        }
        let pos = (k * u64::from(header.chunk_size)).min(header.total_bytes);
        let mut r = Self::build(dest, target, ticket, manifest, Opener::resume(key, header, k)?);

        let mut start = 0u64;
        let mut found_current = false;
        let files = r.manifest.files.clone();
        for (i, f) in files.iter().enumerate() {
            let path = join(&r.data, &f.path)?;
            let end = start + f.size;
            if found_current {
                // After the durable point: nothing may remain.
                if path.symlink_metadata().is_ok() {
                    std::fs::remove_file(&path).map_err(|e| MoverError::io(&path, e))?;
                }
            } else if end < pos || (end == pos && f.size > 0) {
                // Wholly durable: verify from disk (empty files are created if missing).
                if f.size == 0 {
                    r.create_file(&path)?;
                }
                let (size, sha) = crate::manifest::hash_file(&path)?;
                if size != f.size || sha != f.sha256 {
                    return Err(MoverError::FileDigest { path: f.path.clone() });
                }
                r.file_idx = i + 1;
            } else {
                // The partial file: cut back to the durable offset, hash its prefix.
                found_current = true;
                r.file_idx = i;
                let local = pos - start;
                if local > 0 {
                    let mut file = OpenOptions::new()
                        .read(true)
                        .write(true)
                        .open(&path)
                        .map_err(|e| MoverError::io(&path, e))?;
                    let have = file.metadata().map_err(|e| MoverError::io(&path, e))?.len();
                    if have < local {
                        return Err(staging_err(format!(
                            "{:?} has {have} bytes, fewer than the durable {local}",
                            f.path
                        )));
                    }
                    file.set_len(local).map_err(|e| MoverError::io(&path, e))?;
                    file.seek(SeekFrom::Start(0))
                        .map_err(|e| MoverError::io(&path, e))?;
                    let mut buf = vec![0u8; 1 << 20];
                    let mut ctx = digest::Context::new(&digest::SHA256);
                    loop {
                        let n = file.read(&mut buf).map_err(|e| MoverError::io(&path, e))?;
                        if n == 0 {
                            break;
                        }
                        ctx.update(buf.get(..n).unwrap_or_default());
                    }
                    r.writer.send(WriteJob::SetDigest(ctx))?;
                    file.seek(SeekFrom::End(0))
                        .map_err(|e| MoverError::io(&path, e))?;
                    r.file = Some(Arc::new(file));
                    r.file_off = local;
                } else if path.symlink_metadata().is_ok() {
                    std::fs::remove_file(&path).map_err(|e| MoverError::io(&path, e))?;
                }
            }
            start = end;
        }
        if !found_current {
            r.file_idx = r.manifest.files.len();
        }
        Ok(r)
    }

    /// The chunk the sender should continue from.
    pub fn resume_point(&self) -> u64 {
        self.opener.next_index()
    }

    /// The last chunk index whose bytes are durable (+1), as recorded in `progress`.
    pub fn durable_point(&self) -> u64 {
        self.writer.durable.load(Ordering::Acquire)
    }

    pub fn header(&self) -> &StreamHeader {
        self.opener.header()
    }

    /// A spent chunk buffer to read the next frame into (empty; its capacity kept), or a
    /// new one.
    pub fn spare_buffer(&self) -> Vec<u8> {
        self.writer.spare.try_recv().unwrap_or_default()
    }

    /// Write files past the page cache where the filesystem allows (`O_DIRECT`, the
    /// default), or always through it. Applies to files the writer starts after this.
    pub fn set_direct_io(&mut self, on: bool) {
        self.writer.direct.store(on, Ordering::Relaxed);
    }

    /// Durable progress every `n` chunks (>= 1); fewer fsyncs, more to resend on a crash.
    pub fn set_sync_every(&mut self, n: u64) {
        self.sync_every = n.max(1);
    }

    pub fn staging_path(&self) -> &Path {
        &self.staging
    }

    pub fn target_path(&self) -> &Path {
        &self.target
    }

    fn create_file(&mut self, path: &Path) -> Result<File, MoverError> {
        if let Some(parent) = path.parent() {
            if !parent.exists() {
                std::fs::create_dir_all(parent).map_err(|e| MoverError::io(parent, e))?;
                // Every new directory level's parent needs its entry made durable.
                let mut p = parent.to_path_buf();
                while p.starts_with(&self.data) {
                    self.dirty_dirs.insert(p.clone());
                    if !p.pop() {
                        break;
                    }
                }
            }
            self.dirty_dirs.insert(parent.to_path_buf());
        }
        File::create(path).map_err(|e| MoverError::io(path, e))
    }

    /// Close out finished files (including empty ones) up to the next file with room.
    fn advance(&mut self) -> Result<(), MoverError> {
        while let Some(entry) = self.manifest.files.get(self.file_idx) {
            if self.file_off < entry.size {
                return Ok(());
            }
            let entry = entry.clone();
            let path = join(&self.data, &entry.path)?;
            let file = match self.file.take() {
                Some(f) => f,
                None => Arc::new(self.create_file(&path)?),
            };
            // The writer checks the digest after the file's last write; the file is
            // fsynced with the next durable point (always before the rename).
            self.writer.send(WriteJob::EndFile {
                path: entry.path.clone(),
                want: entry.sha256,
            })?;
            self.unsynced.push((file, path));
            if self.unsynced.len() >= MAX_UNSYNCED {
                // Many small files: bound the open descriptors.
                self.sync_finished()?;
            }
            self.file_idx += 1;
            self.file_off = 0;
        }
        Ok(())
    }

    /// Authenticate chunk `index` and write its plaintext. Nothing of a chunk that fails
    /// authentication is written. After any error drop the receiver; a later
    /// [`Receiver::resume`] continues from the last durable chunk.
    pub fn write_chunk(&mut self, index: u64, ciphertext: &[u8]) -> Result<(), MoverError> {
        self.write_chunk_owned(index, ciphertext.to_vec())
    }

    /// [`Receiver::write_chunk`] decrypting in the caller's buffer, which then goes to the
    /// writer thread as is (no copy of the chunk at all).
    pub fn write_chunk_owned(&mut self, index: u64, ciphertext: Vec<u8>) -> Result<(), MoverError> {
        self.write_chunk_at(index, ciphertext, 0)
    }

    /// [`Receiver::write_chunk_owned`] with the chunk at `buf[start..]`: a network
    /// receiver reads each frame at an offset that puts the plaintext on a 4 KiB
    /// boundary in memory, so that the writer can hand it to the disk as is (`O_DIRECT`
    /// needs aligned memory; `custody_mover::direct`).
    pub fn write_chunk_at(&mut self, index: u64, mut buf: Vec<u8>, start: usize) -> Result<(), MoverError> {
        let ct = buf
            .get_mut(start..)
            .ok_or_else(|| staging_err("chunk offset past its buffer"))?;
        let plain_len = self.opener.open_in_place(index, ct)?;
        let at = start..start + plain_len;
        // The usual case, the whole chunk inside one file: hand the buffer over as is.
        self.advance()?;
        if let Some(entry) = self.manifest.files.get(self.file_idx) {
            if plain_len > 0 && entry.size - self.file_off >= plain_len as u64 {
                let path = join(&self.data, &entry.path)?;
                let file = match self.file.take() {
                    Some(f) => f,
                    None => Arc::new(self.create_file(&path)?),
                };
                self.file_off += plain_len as u64;
                self.writer.write(&file, &path, Plain { buf, at })?;
                self.file = Some(file);
                return self.chunk_done();
            }
        }
        let mut rest: &[u8] = buf.get(at).unwrap_or_default();
        while !rest.is_empty() {
            self.advance()?;
            let entry = self
                .manifest
                .files
                .get(self.file_idx)
                .cloned()
                .ok_or_else(|| staging_err("more plaintext than the manifest holds"))?;
            let room = usize::try_from(entry.size - self.file_off).unwrap_or(usize::MAX);
            let (now, later) = rest.split_at(room.min(rest.len()));
            let path = join(&self.data, &entry.path)?;
            if self.file.is_none() {
                self.file = Some(Arc::new(self.create_file(&path)?));
            }
            if let Some(f) = self.file.as_ref() {
                let piece = Plain {
                    buf: now.to_vec(),
                    at: 0..now.len(),
                };
                self.writer.write(f, &path, piece)?;
            }
            self.file_off += now.len() as u64;
            rest = later;
        }
        self.chunk_done()
    }

    /// After a chunk's plaintext is queued: close finished files, durable point if due.
    fn chunk_done(&mut self) -> Result<(), MoverError> {
        self.advance()?;
        self.since_sync += 1;
        if self.since_sync >= self.sync_every {
            // Runs on the sync thread while the next chunks arrive.
            let job = self.durable_job();
            self.writer.durable(job, false)?;
            self.since_sync = 0;
        }
        Ok(())
    }

    /// The durable point at the current chunk: every file written since the last one and
    /// the directories whose entries changed, then `progress`.
    fn durable_job(&mut self) -> SyncJob {
        let mut files: Vec<_> = std::mem::take(&mut self.unsynced)
            .into_iter()
            .map(|(f, p)| (f, p, false))
            .collect();
        if let Some(f) = self.file.as_ref() {
            files.push((Arc::clone(f), self.staging.clone(), true));
        }
        SyncJob {
            files,
            dirs: std::mem::take(&mut self.dirty_dirs).into_iter().collect(),
            progress: Some((self.staging.clone(), self.opener.next_index())),
            reply: None,
        }
    }

    /// Read records (u32 big-endian length || chunk ciphertext) until a clean end of input,
    /// writing each; returns how many were written. The caller then calls [`Receiver::finish`].
    pub fn read_records<R: Read>(&mut self, r: &mut R) -> Result<u64, MoverError> {
        let max = self.header().chunk_size as usize + crate::stream::TAG_LEN;
        let mut n = 0;
        while let Some(ct) = crate::send::read_record(r, max)? {
            self.write_chunk_owned(self.resume_point(), ct)?;
            n += 1;
        }
        Ok(n)
    }

    /// fsync the files completed since the last durable point (on the sync thread).
    fn sync_finished(&mut self) -> Result<(), MoverError> {
        let files = std::mem::take(&mut self.unsynced)
            .into_iter()
            .map(|(f, p)| (f, p, false))
            .collect();
        let job = SyncJob {
            files,
            dirs: Vec::new(),
            progress: None,
            reply: None,
        };
        self.writer.durable(job, false)
    }

    /// fsync what was written and record the resume point; returns it once it is durable.
    pub fn make_durable(&mut self) -> Result<u64, MoverError> {
        let job = self.durable_job();
        let k = self.opener.next_index();
        self.writer.durable(job, true)?;
        self.since_sync = 0;
        Ok(k)
    }

    /// After the last chunk: every file verified, everything fsynced, then one rename into
    /// place. Returns the receipt to sign.
    pub fn finish(self, completed_at: i64) -> Result<(PathBuf, Receipt), MoverError> {
        self.finish_with(completed_at, |_| Ok(()))
    }

    /// [`Receiver::finish`], calling `before_place` with the receipt after every file
    /// verified and everything is durable, just before the rename that makes the target
    /// visible. A network receiver signs and stores the receipt there, so that a placed
    /// checkpoint always has a durable receipt to resend (protocol section 9). An error
    /// from it leaves the staging durable and the target absent.
    pub fn finish_with(
        mut self,
        completed_at: i64,
        before_place: impl FnOnce(&Receipt) -> Result<(), MoverError>,
    ) -> Result<(PathBuf, Receipt), MoverError> {
        self.opener.finish()?;
        self.advance()?;
        if self.file_idx != self.manifest.files.len() {
            return Err(staging_err("stream complete but files missing"));
        }
        self.make_durable()?;
        // Directory entries of every level, deepest first, before the rename.
        let mut dirs: Vec<PathBuf> = self
            .manifest
            .files
            .iter()
            .filter_map(|f| join(&self.data, &f.path).ok()?.parent().map(Path::to_path_buf))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for d in &dirs {
            fsync_dir(d)?;
        }
        fsync_dir(&self.data)?;
        if self.target.symlink_metadata().is_ok() {
            return Err(staging_err(format!(
                "target {} appeared meanwhile",
                self.target.display()
            )));
        }
        let receipt = Receipt {
            ticket_id: self.ticket_id,
            job: self.job.clone(),
            destination: self.destination.clone(),
            manifest_digest: self.opener.header().manifest_digest,
            bytes: self.manifest.total_bytes(),
            completed_at,
        };
        before_place(&receipt)?;
        std::fs::rename(&self.data, &self.target).map_err(|e| MoverError::io(&self.target, e))?;
        if let Some(parent) = self.target.parent() {
            fsync_dir(parent)?;
        }
        std::fs::remove_dir_all(&self.staging).map_err(|e| MoverError::io(&self.staging, e))?;
        Ok((self.target.clone(), receipt))
    }
}
