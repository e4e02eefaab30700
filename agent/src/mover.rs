//! Checkpoint moves on the agent (docs/migration-protocol.md): the destination's receiver
//! on `move_listen`, and the source's sender the verifier starts with a ticket.
//!
//! Both ends speak [`custody_mover::wire`] over mutual TLS with their node certificates
//! (the verifier CA is the only root): the destination takes a move only from the node
//! the ticket names as its source, the source sends only to a peer whose certificate is
//! the ticket's destination. The checkpoint itself is sealed to the destination's attested
//! X25519 session key, so TLS adds peer authentication, not the payload's secrecy: by
//! default the sealed chunks go on a second, plain TCP connection to the same port, bound
//! to the TLS session by an exporter token (protocol section 9), so they are not
//! encrypted twice. The listener tells the two apart by the first byte.
//! Transfers run on blocking threads: a few chunks of memory per side.

use crate::session::Session;
use custody_formats::api::{MovePrepared, MoveState, MoveStatus};
use custody_mover::manifest::Manifest;
use custody_mover::ticket::Ticket;
use custody_mover::wire::{self, Destination, SourceChecks};
use custody_mover::MoverError;
use custody_net::PeerCert;
use custody_types::FailedCheck;
use rustls::pki_types::{CertificateDer, ServerName};
use std::collections::HashMap;
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A stalled peer is dropped after this long without progress.
const IO_TIMEOUT: Duration = Duration::from_secs(60);
/// Move connections served at once; more are closed as they arrive.
pub const MAX_MOVE_CONNECTIONS: usize = 64;
/// Time a peer has to complete its TLS handshake on the move listener.
const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(10);

/// One of the move listener's connection places, given back when dropped.
struct Slot(Arc<std::sync::atomic::AtomicUsize>);

impl Slot {
    fn take(open: &Arc<std::sync::atomic::AtomicUsize>, max: usize) -> Option<Self> {
        use std::sync::atomic::Ordering::SeqCst;
        open.fetch_update(SeqCst, SeqCst, |n| (n < max).then_some(n + 1))
            .ok()
            .map(|_| Self(Arc::clone(open)))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}
/// Connect timeout to the destination.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The moves this agent takes part in.
pub struct Mover {
    node_id: String,
    dir: PathBuf,
    verifier_key: Vec<u8>,
    client_tls: Arc<rustls::ClientConfig>,
    dest: Arc<Destination>,
    transfers: Mutex<HashMap<String, MoveStatus>>,
    /// Manifests built by `prepare`, by checkpoint name: the send that follows does not
    /// hash the checkpoint again (the destination checks every file's digest; an export
    /// checks them while streaming).
    prepared: Mutex<HashMap<String, Manifest>>,
    /// Send the chunks on a bulk connection bound to the TLS session (default) rather
    /// than on the TLS connection itself.
    bulk_channel: std::sync::atomic::AtomicBool,
}

/// Where exports are written, inside the checkpoint store (a dot name: never a checkpoint).
pub const EXPORTS_DIR: &str = ".custody-exports";

/// What the admin socket takes.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum AdminRequest {
    /// Import this export file.
    Import(PathBuf),
}

/// An import done: what `custody import` prints.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Imported {
    pub ticket: String,
    pub job: String,
    pub target: String,
    pub bytes: u64,
    pub receipt_sha256: String,
}

/// Counts and hashes what goes through to the file.
struct HashingWriter<W> {
    inner: W,
    hash: aws_lc_rs::digest::Context,
    n: u64,
}

impl<W: std::io::Write> std::io::Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let k = self.inner.write(buf)?;
        let done = buf.get(..k).unwrap_or_default();
        self.hash.update(done);
        self.n += done.len() as u64;
        Ok(k)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Prepared manifests kept at most (a verifier prepares one per migration it plans).
const PREPARED_MAX: usize = 64;

impl std::fmt::Debug for Mover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mover")
            .field("node_id", &self.node_id)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// The node id of a verified `node:<id>` client certificate.
fn node_of(cert: Option<&CertificateDer<'static>>) -> Option<String> {
    let cn = PeerCert::new(cert.cloned()).common_name()?;
    cn.strip_prefix("node:").map(str::to_owned)
}

/// Make `dir` a directory only this user can enter: created mode 0700 when absent;
/// when present it must be a real directory (not a symlink), owned by this user, with no
/// group or other access. The admin socket lives inside, so no other user can reach it
/// in the moment between bind and chmod, nor point its path somewhere else.
pub(crate) fn private_dir(dir: &Path) -> Result<(), MoverError> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    let refuse = |why: String| MoverError::AdminSocketDir {
        path: dir.display().to_string(),
        why,
    };
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(up) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(up).map_err(|e| MoverError::io(up, e))?;
            }
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(dir)
                .map_err(|e| MoverError::io(dir, e))?;
            // The umask can only remove bits; set exactly 0700 anyway.
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| MoverError::io(dir, e))?;
            Ok(())
        }
        Err(e) => Err(MoverError::io(dir, e)),
        Ok(m) if m.file_type().is_symlink() => Err(refuse("is a symlink".into())),
        Ok(m) if !m.is_dir() => Err(refuse("is not a directory".into())),
        Ok(m) => {
            // This process's effective uid, without unsafe code: /proc/self belongs to it.
            let me = std::fs::metadata("/proc/self")
                .map_err(|e| MoverError::io(Path::new("/proc/self"), e))?
                .uid();
            if m.uid() != me {
                return Err(refuse(format!("owned by uid {}, not {me}", m.uid())));
            }
            if m.mode() & 0o077 != 0 {
                return Err(refuse(format!(
                    "mode {:o}, want no group or other access",
                    m.mode() & 0o7777
                )));
            }
            Ok(())
        }
    }
}

/// Release a sent checkpoint after B's receipt: delete only the manifest's files whose
/// size and SHA-256 still match (the bytes the receipt vouches for). A file changed or
/// added after the manifest was never sent, so it stays; each kept path is returned with
/// why. Directories left empty are removed, the checkpoint's own included.
fn release_copy(dir: &Path, manifest: &Manifest) -> Result<Vec<String>, MoverError> {
    let mut kept = Vec::new();
    let mut changed = std::collections::BTreeSet::new();
    for f in &manifest.files {
        let p = custody_mover::manifest::join(dir, &f.path)?;
        match custody_mover::manifest::hash_file(&p) {
            Ok((size, d)) if size == f.size && d == f.sha256 => {
                std::fs::remove_file(&p).map_err(|e| MoverError::io(&p, e))?;
            }
            Ok(_) => {
                changed.insert(f.path.clone());
                kept.push(format!("{}: changed after the manifest", f.path));
            }
            // Gone or unreadable: nothing of it is deleted.
            Err(e) => kept.push(format!("{}: {e}", f.path)),
        }
    }
    let mut rest = Vec::new();
    prune(dir, "", &mut rest)?;
    kept.extend(
        rest.into_iter()
            .filter(|r| !changed.contains(r))
            .map(|r| format!("{r}: added after the manifest")),
    );
    Ok(kept)
}

/// Remove empty directories under and including `dir` (never following symlinks);
/// collect the relative paths of what remains.
fn prune(dir: &Path, rel: &str, rest: &mut Vec<String>) -> Result<(), MoverError> {
    let rd = std::fs::read_dir(dir).map_err(|e| MoverError::io(dir, e))?;
    for e in rd {
        let e = e.map_err(|e| MoverError::io(dir, e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let r = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        let ft = e.file_type().map_err(|err| MoverError::io(&e.path(), err))?;
        if ft.is_dir() {
            prune(&e.path(), &r, rest)?;
        } else {
            rest.push(r);
        }
    }
    // Refused while anything remains inside: that is the point.
    let _ = std::fs::remove_dir(dir);
    Ok(())
}

fn status(state: MoveState, bytes: u64, total: u64) -> MoveStatus {
    MoveStatus {
        state,
        bytes,
        total,
        resumed_at: 0,
        receipt: Vec::new(),
        released: false,
        kept: Vec::new(),
        export_path: None,
        export_sha256: None,
        check: None,
        detail: None,
    }
}

impl Mover {
    /// `session` signs receipts and opens data keys; `verifier_key` (SEC1) checks tickets.
    pub fn new(
        node_id: String,
        dir: PathBuf,
        verifier_key: Vec<u8>,
        client_tls: Arc<rustls::ClientConfig>,
        session: Arc<dyn AsRef<Session> + Send + Sync>,
    ) -> Result<Self, MoverError> {
        std::fs::create_dir_all(&dir).map_err(|e| MoverError::io(&dir, e))?;
        let keys = *session.as_ref().as_ref().public_keys();
        let secret = session
            .as_ref()
            .as_ref()
            .x25519_secret_for_hpke()
            .map_err(|e| MoverError::KeyWrap(e.to_string()))?;
        let signer = session.clone();
        let dest = Destination::new(
            node_id.clone(),
            keys.x25519,
            secret,
            verifier_key.clone(),
            dir.clone(),
            Box::new(move |m| signer.as_ref().as_ref().sign_challenge(m)),
        )?;
        Ok(Self {
            node_id,
            dir,
            verifier_key,
            client_tls,
            dest: Arc::new(dest),
            transfers: Mutex::new(HashMap::new()),
            prepared: Mutex::new(HashMap::new()),
            bulk_channel: std::sync::atomic::AtomicBool::new(true),
        })
    }

    /// Whether this agent sends chunks on a bound bulk connection (true, the default) or
    /// everything over TLS (false: the same checks, TLS encrypts the sealed chunks again).
    /// Receiving takes either.
    pub fn set_bulk_channel(&self, on: bool) {
        self.bulk_channel.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// The verifier's deny list as this agent holds it (kept beside the checkpoints).
    pub fn deny(&self) -> &custody_mover::deny::DenyState {
        &self.dest.deny
    }

    /// `<checkpoints_dir>/<name>`, one path component only.
    fn checkpoint_path(&self, name: &str) -> Result<PathBuf, MoverError> {
        if name.is_empty() || name.contains('/') || name.starts_with('.') || name.contains('\0') {
            return Err(MoverError::ManifestPath(format!(
                "checkpoint {name:?} must be one directory name in the checkpoint store"
            )));
        }
        Ok(self.dir.join(name))
    }

    /// Manifest and dtype needs of a stored checkpoint.
    pub fn prepare(&self, checkpoint: &str) -> Result<MovePrepared, MoverError> {
        let dir = self.checkpoint_path(checkpoint)?;
        let manifest = Manifest::build(&dir)?;
        let req = custody_mover::safetensors::scan_checkpoint(&dir)?;
        {
            let mut p = self.prepared.lock().unwrap_or_else(|p| p.into_inner());
            if p.len() >= PREPARED_MAX {
                p.clear();
            }
            p.insert(checkpoint.to_owned(), manifest.clone());
        }
        Ok(MovePrepared {
            manifest: manifest.to_cbor()?,
            files: manifest.files.len() as u64,
            total_bytes: manifest.total_bytes(),
            dtypes: req
                .dtypes
                .into_iter()
                .map(|(d, t)| (d.name().to_owned(), t))
                .collect(),
        })
    }

    /// Start sending; the transfer runs on a blocking thread and reports through
    /// [`Mover::status`] under the ticket id. Ticket and checkpoint are checked first.
    pub fn start_send(
        self: &Arc<Self>,
        ticket: Vec<u8>,
        checkpoint: &str,
        to: String,
        chunk_size: u32,
        release: bool,
    ) -> Result<String, MoverError> {
        let dir = self.checkpoint_path(checkpoint)?;
        let (t, manifest) = self.source_checks(&ticket, checkpoint, &dir)?;
        let id = t.id_hex();
        let total = manifest.total_bytes();
        {
            let mut map = self.transfers.lock().unwrap_or_else(|p| p.into_inner());
            if map.get(&id).is_some_and(|s| s.state == MoveState::Running) {
                return Err(MoverError::TransferActive(id));
            }
            map.insert(id.clone(), status(MoveState::Running, 0, total));
        }
        let me = Arc::clone(self);
        let tid = id.clone();
        let sent_manifest = manifest.clone();
        std::thread::spawn(move || {
            let span = tracing::info_span!("move_send", ticket = %tid, job = %t.job, to = %t.destination);
            let _e = span.enter();
            let r = me.send_now(&ticket, t, manifest, &dir, &to, chunk_size);
            let mut map = me.transfers.lock().unwrap_or_else(|p| p.into_inner());
            let Some(s) = map.get_mut(&tid) else { return };
            match r {
                Ok(sent) => {
                    tracing::info!(
                        bytes = sent.total_bytes,
                        resumed_at = sent.resumed_at,
                        receipt_resent = sent.receipt_resent,
                        "move sent, receipt verified"
                    );
                    s.state = MoveState::Done;
                    s.bytes = sent.total_bytes;
                    s.receipt = sent.receipt_bytes;
                    if release {
                        // Only now: B's signed receipt says the checkpoint is placed there.
                        match release_copy(&dir, &sent_manifest) {
                            Ok(kept) => {
                                tracing::info!(kept = ?kept, "source copy released after the receipt");
                                s.released = true;
                                s.kept = kept;
                            }
                            Err(e) => tracing::warn!(error = %e, "could not release the source copy"),
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(check = e.check(), error = %e, "move failed");
                    s.state = MoveState::Failed;
                    s.check = Some(e.check().into());
                    s.detail = Some(e.to_string());
                }
            }
        });
        Ok(id)
    }

    fn send_now(
        &self,
        ticket_bytes: &[u8],
        ticket: Ticket,
        manifest: Manifest,
        dir: &Path,
        to: &str,
        chunk_size: u32,
    ) -> Result<wire::Sent, MoverError> {
        let id = ticket.id_hex();
        let destination = ticket.destination.as_str();
        let io = |e: std::io::Error| MoverError::io(Path::new(to), e);
        let addr = to
            .to_socket_addrs()
            .map_err(io)?
            .next()
            .ok_or_else(|| MoverError::Wire(format!("{to}: no address")))?;
        let tcp = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).map_err(io)?;
        tcp.set_read_timeout(Some(IO_TIMEOUT)).map_err(io)?;
        tcp.set_write_timeout(Some(IO_TIMEOUT)).map_err(io)?;
        let host = to
            .rsplit_once(':')
            .map_or(to, |(h, _)| h)
            .trim_matches(['[', ']']);
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| MoverError::Wire(format!("server name {host:?}: {e}")))?;
        let conn = rustls::ClientConnection::new(self.client_tls.clone(), name)
            .map_err(|e| MoverError::Wire(format!("TLS: {e}")))?;
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        while tls.conn.is_handshaking() {
            tls.conn
                .complete_io(&mut tls.sock)
                .map_err(|e| MoverError::Wire(format!("TLS handshake with {to}: {e}")))?;
        }
        let peer = node_of(tls.conn.peer_certificates().and_then(|c| c.first()));
        if peer.as_deref() != Some(destination) {
            return Err(MoverError::TicketDestination {
                ticket: destination.to_owned(),
                why: format!("the peer at {to} is {peer:?}"),
            });
        }
        let mut last = std::time::Instant::now();
        let mut report = |p: wire::Progress| {
            // A lock per progress report is cheap next to a chunk; throttle anyway.
            if last.elapsed() >= Duration::from_millis(100) || p.bytes == p.total {
                last = std::time::Instant::now();
                let mut map = self.transfers.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(s) = map.get_mut(&id) {
                    s.bytes = p.bytes;
                    s.total = p.total;
                    s.resumed_at = p.resumed_at;
                }
            }
        };
        let sent = if self.bulk_channel.load(std::sync::atomic::Ordering::Relaxed) {
            // The bulk connection: plain TCP to the same port, bound by the exporter token
            // send_bound writes first; it carries only AEAD-sealed chunks.
            let mut connect = || -> std::io::Result<Box<dyn std::io::Write>> {
                let s = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
                s.set_write_timeout(Some(IO_TIMEOUT))?;
                Ok(Box::new(s))
            };
            wire::send_bound(
                &mut tls,
                ticket_bytes,
                ticket,
                manifest,
                dir,
                chunk_size,
                &mut connect,
                &mut report,
            )?
        } else {
            wire::send_checked(
                &mut tls,
                ticket_bytes,
                ticket,
                manifest,
                dir,
                chunk_size,
                &mut report,
            )?
        };
        if !sent.bulk && sent.chunks_sent > 0 {
            tracing::info!("chunks sent on the TLS connection (no bulk connection)");
        }
        tls.conn.send_close_notify();
        let _ = tls.conn.complete_io(&mut tls.sock);
        Ok(sent)
    }

    /// Write the checkpoint as an export file for an air-gapped move (the same sealed
    /// stream, to the ticket's destination key): `<checkpoints_dir>/.custody-exports/
    /// <checkpoint>.<ticket id>.custody`, written aside, fsynced, renamed. Runs on a
    /// thread; [`Mover::status`] says `exported` with the path and the file's SHA-256.
    pub fn start_export(
        self: &Arc<Self>,
        ticket: Vec<u8>,
        checkpoint: &str,
        chunk_size: u32,
    ) -> Result<String, MoverError> {
        let dir = self.checkpoint_path(checkpoint)?;
        let (t, manifest) = self.source_checks(&ticket, checkpoint, &dir)?;
        let id = t.id_hex();
        let out_dir = self.dir.join(EXPORTS_DIR);
        std::fs::create_dir_all(&out_dir).map_err(|e| MoverError::io(&out_dir, e))?;
        let path = out_dir.join(format!("{checkpoint}.{id}.custody"));
        {
            let mut map = self.transfers.lock().unwrap_or_else(|p| p.into_inner());
            if map.get(&id).is_some_and(|s| s.state == MoveState::Running) {
                return Err(MoverError::TransferActive(id));
            }
            map.insert(id.clone(), status(MoveState::Running, 0, 0));
        }
        let me = Arc::clone(self);
        let tid = id.clone();
        std::thread::spawn(move || {
            let span = tracing::info_span!("move_export", ticket = %tid, job = %t.job, to = %t.destination);
            let _e = span.enter();
            let r = me.export_now(&ticket, t.clone(), manifest, &dir, &path, chunk_size);
            let mut map = me.transfers.lock().unwrap_or_else(|p| p.into_inner());
            let Some(s) = map.get_mut(&tid) else { return };
            match r {
                Ok((bytes, sha256)) => {
                    tracing::info!(path = %path.display(), bytes, "checkpoint exported");
                    s.state = MoveState::Exported;
                    s.bytes = bytes;
                    s.total = bytes;
                    s.export_path = Some(path.display().to_string());
                    s.export_sha256 = Some(sha256);
                }
                Err(e) => {
                    tracing::warn!(check = e.check(), error = %e, "export failed");
                    s.state = MoveState::Failed;
                    s.check = Some(e.check().into());
                    s.detail = Some(e.to_string());
                }
            }
        });
        Ok(id)
    }

    /// The source's checks for a send or an export: the ticket, and the manifest this
    /// agent built when the move was prepared if the ticket names it (sizes checked now;
    /// digests by the destination, or while streaming for an export); otherwise the
    /// checkpoint is hashed first.
    fn source_checks(
        &self,
        ticket: &[u8],
        checkpoint: &str,
        dir: &Path,
    ) -> Result<(Ticket, Manifest), MoverError> {
        let checks = SourceChecks {
            verifier_public_sec1: &self.verifier_key,
            now: now(),
            me: &self.node_id,
        };
        let known = self
            .prepared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(checkpoint);
        let (t, m) = match known.map(|m| wire::check_source_with(ticket, checks, dir, m)) {
            Some(Err(MoverError::ManifestDigest(_))) | None => wire::check_source(ticket, checks, dir)?,
            Some(r) => r?,
        };
        // node_removed / revoked: nothing goes to a destination the verifier has since
        // removed or revoked, whatever the ticket issued before says.
        self.dest.deny.check(&t.destination)?;
        Ok((t, m))
    }

    fn export_now(
        &self,
        ticket: &[u8],
        t: Ticket,
        manifest: Manifest,
        dir: &Path,
        path: &Path,
        chunk_size: u32,
    ) -> Result<(u64, String), MoverError> {
        let tmp = path.with_extension("custody.partial");
        let io = |p: &Path| {
            let p = p.to_owned();
            move |e: std::io::Error| MoverError::io(&p, e)
        };
        let f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        let mut w = HashingWriter {
            inner: std::io::BufWriter::with_capacity(1 << 20, f),
            hash: aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256),
            n: 0,
        };
        let r = custody_mover::export::export_checked(ticket, t, manifest, dir, chunk_size, &mut w);
        if let Err(e) = r {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        let HashingWriter { inner, hash, n } = w;
        let f = inner
            .into_inner()
            .map_err(|e| MoverError::io(&tmp, e.into_error()))?;
        f.sync_all().map_err(io(&tmp))?;
        std::fs::rename(&tmp, path).map_err(io(path))?;
        if let Some(parent) = path.parent() {
            std::fs::File::open(parent)
                .and_then(|d| d.sync_all())
                .map_err(io(parent))?;
        }
        Ok((n, hex::encode(hash.finish().as_ref())))
    }

    /// Import an export file (from the local admin socket): the destination's checks as
    /// for a move on the wire, the checkpoint placed under `checkpoints_dir`, the receipt
    /// signed with this boot's session key and kept for the verifier (`GET /v1/move/{id}`).
    pub fn import_file(&self, file: &Path) -> Result<Imported, MoverError> {
        let f = std::fs::File::open(file).map_err(|e| MoverError::io(file, e))?;
        let mut r = std::io::BufReader::with_capacity(1 << 20, f);
        let (target, receipt) = {
            let mut seen = self.dest.seen.lock().unwrap_or_else(|p| p.into_inner());
            custody_mover::export::import(
                &mut r,
                custody_mover::export::ImportChecks {
                    verifier_public_sec1: &self.verifier_key,
                    now: now(),
                    me: &self.node_id,
                    my_x25519: self.dest.my_x25519,
                    seen: &mut seen,
                    deny: Some(&self.dest.deny),
                },
                &self.dest.my_x25519_secret,
                &self.dest.dir,
                None,
            )?
        };
        let signed = receipt.sign_with(|m| (self.dest.sign)(m))?;
        let id = hex::encode(receipt.ticket_id);
        let mut s = status(MoveState::Done, receipt.bytes, receipt.bytes);
        s.receipt = signed.clone();
        self.transfers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), s);
        tracing::info!(ticket = %id, job = %receipt.job, target = %target.display(), "checkpoint imported");
        Ok(Imported {
            ticket: id,
            job: receipt.job.clone(),
            target: target.display().to_string(),
            bytes: receipt.bytes,
            receipt_sha256: hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &signed)),
        })
    }

    /// Serve import requests on a Unix socket only this user can open (mode 0600): one
    /// JSON line `{"import": "/path/to/file"}` in, one JSON line out.
    pub fn serve_admin(self: &Arc<Self>, path: &Path) -> Result<(), MoverError> {
        use std::os::unix::fs::PermissionsExt;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        private_dir(dir)?;
        // Only this user can enter `dir`, so what is at `path` is ours (a stale socket).
        if std::fs::symlink_metadata(path).is_ok() {
            std::fs::remove_file(path).map_err(|e| MoverError::io(path, e))?;
        }
        let listener = std::os::unix::net::UnixListener::bind(path).map_err(|e| MoverError::io(path, e))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| MoverError::io(path, e))?;
        let me = Arc::clone(self);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(s) = stream else { continue };
                let me = Arc::clone(&me);
                std::thread::spawn(move || me.admin_one(s));
            }
        });
        Ok(())
    }

    fn admin_one(&self, s: std::os::unix::net::UnixStream) {
        use std::io::{BufRead, Write};
        let span = tracing::info_span!("admin");
        let _e = span.enter();
        let mut line = String::new();
        let mut r = std::io::BufReader::new(std::io::Read::take(&s, 64 * 1024));
        if r.read_line(&mut line).is_err() {
            return;
        }
        let answer = match serde_json::from_str::<AdminRequest>(&line) {
            Ok(AdminRequest::Import(p)) => match self.import_file(&p) {
                Ok(i) => serde_json::json!({"imported": i}),
                Err(e) => {
                    tracing::warn!(check = e.check(), error = %e, "import refused");
                    serde_json::json!({"refused": {"check": e.check(), "detail": e.to_string()}})
                }
            },
            Err(e) => serde_json::json!({"refused": {"check": "request", "detail": e.to_string()}}),
        };
        let mut w = &s;
        let _ = writeln!(w, "{answer}");
    }

    /// A transfer's status by ticket id (hex).
    pub fn status(&self, id: &str) -> Option<MoveStatus> {
        self.transfers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    /// Accept moves on `listener` until the process ends: a thread per connection, at
    /// most [`MAX_MOVE_CONNECTIONS`] at once (more are closed at once), each handshake
    /// done within [`HANDSHAKE_DEADLINE`]. A thread the OS refuses costs that connection
    /// only, never the accept loop.
    pub fn serve(self: &Arc<Self>, listener: TcpListener, tls: Arc<rustls::ServerConfig>) {
        let me = Arc::clone(self);
        let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let spawned = std::thread::Builder::new()
            .name("move-accept".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    let tcp = match stream {
                        Ok(t) => t,
                        Err(e) => {
                            // Out of descriptors and the like: back off instead of spinning.
                            tracing::warn!(error = %e, "move listener: accept failed");
                            std::thread::sleep(Duration::from_millis(50));
                            continue;
                        }
                    };
                    let Some(slot) = Slot::take(&open, MAX_MOVE_CONNECTIONS) else {
                        tracing::warn!(
                            limit = MAX_MOVE_CONNECTIONS,
                            "move listener full: connection closed"
                        );
                        continue;
                    };
                    let me = Arc::clone(&me);
                    let tls = tls.clone();
                    let r = std::thread::Builder::new()
                        .name("move-conn".into())
                        .spawn(move || {
                            let _slot = slot;
                            me.serve_one(tcp, tls);
                        });
                    if let Err(e) = r {
                        tracing::warn!(error = %e, "move listener: no thread for a connection; closed");
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "move listener: no accept thread");
        }
    }

    fn serve_one(&self, tcp: TcpStream, tls: Arc<rustls::ServerConfig>) {
        let remote = tcp.peer_addr().map(|a| a.to_string()).unwrap_or_default();
        let span = tracing::info_span!("move_receive", %remote);
        let _e = span.enter();
        if tcp.set_read_timeout(Some(IO_TIMEOUT)).is_err() || tcp.set_write_timeout(Some(IO_TIMEOUT)).is_err()
        {
            return;
        }
        // A TLS connection starts with a handshake record (0x16), a bulk connection with
        // its magic: the transfer it names takes it only with its session's token.
        let mut first = [0u8; 1];
        match tcp.peek(&mut first) {
            Ok(1) if wire::is_bulk_start(first[0]) => {
                match self.dest.accept_bulk(tcp) {
                    Ok(id) => tracing::debug!(ticket = %hex::encode(id), "bulk connection bound"),
                    Err(e) => tracing::warn!(check = e.check(), error = %e, "bulk connection refused"),
                }
                return;
            }
            Ok(1) => {}
            _ => return,
        }
        let Ok(conn) = rustls::ServerConnection::new(tls) else {
            return;
        };
        let mut s = rustls::StreamOwned::new(conn, tcp);
        let started = std::time::Instant::now();
        while s.conn.is_handshaking() {
            // Each read waits IO_TIMEOUT at most; a peer trickling bytes still has to
            // finish the whole handshake in time.
            if started.elapsed() > HANDSHAKE_DEADLINE {
                tracing::warn!("move: TLS handshake took too long; closed");
                return;
            }
            if let Err(e) = s.conn.complete_io(&mut s.sock) {
                tracing::warn!(error = %e, "move: TLS handshake failed");
                return;
            }
        }
        let Some(peer) = node_of(s.conn.peer_certificates().and_then(|c| c.first())) else {
            tracing::warn!("move refused: the peer is not an enrolled node");
            return;
        };
        match self.dest.serve_bound(&mut s, &peer, now()) {
            Ok(r) => tracing::info!(
                job = %r.ticket.job,
                from = %peer,
                ticket = %r.ticket.id_hex(),
                resumed_at = r.resumed_at,
                receipt_resent = r.receipt_resent,
                target = %r.target.display(),
                "checkpoint received and placed"
            ),
            Err(e) => tracing::warn!(from = %peer, check = e.check(), error = %e, "move refused"),
        }
        s.conn.send_close_notify();
        let _ = s.conn.complete_io(&mut s.sock);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_names_stay_inside_the_store() {
        let d = tempfile::tempdir().unwrap();
        let m = mover(d.path());
        for bad in ["", "../etc", "a/b", ".custody-staging-x", "a\0"] {
            let e = m.prepare(bad).unwrap_err();
            assert_eq!(e.check(), "manifest_path", "{bad:?}");
        }
        std::fs::create_dir_all(d.path().join("ckpt/job1")).unwrap();
        std::fs::write(d.path().join("ckpt/job1/w.bin"), [1u8; 100]).unwrap();
        let p = m.prepare("job1").unwrap();
        assert_eq!((p.files, p.total_bytes), (1, 100));
        assert!(p.dtypes.is_empty());
        // A ticket that does not verify never starts a transfer.
        let e = m
            .start_send(vec![0xd2], "job1", "127.0.0.1:1".into(), 1024, false)
            .unwrap_err();
        assert_eq!(e.check(), "ticket_format");
    }

    /// Issue 20 finding 5: the move listener took a thread per connection without a cap.
    #[test]
    fn connection_places_are_capped_and_given_back() {
        let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let held: Vec<Slot> = (0..3).map(|_| Slot::take(&open, 3).unwrap()).collect();
        assert!(Slot::take(&open, 3).is_none(), "a fourth connection is closed");
        drop(held);
        assert_eq!(open.load(std::sync::atomic::Ordering::SeqCst), 0);
        assert!(Slot::take(&open, 3).is_some());
    }

    /// A full listener closes new connections at once and keeps accepting.
    #[test]
    fn a_full_move_listener_closes_new_connections() {
        use std::io::Read;
        let d = tempfile::tempdir().unwrap();
        let m = mover(d.path());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let ca = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .self_signed(&ca)
            .unwrap();
        let id =
            custody_net::Identity::from_pem(cert.pem().as_bytes(), ca.serialize_pem().as_bytes()).unwrap();
        let tls = custody_net::server_config(id, custody_net::ClientAuth::None).unwrap();
        m.serve(listener, tls);
        // Idle connections that never send a byte hold every place.
        let idle: Vec<TcpStream> = (0..MAX_MOVE_CONNECTIONS)
            .map(|_| TcpStream::connect(addr).unwrap())
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        let mut extra = TcpStream::connect(addr).unwrap();
        extra.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut b = [0u8; 1];
        match extra.read(&mut b) {
            Ok(0) => {}
            Ok(n) => panic!("{n} bytes from a listener that should have closed"),
            // Held open (waiting for a handshake) instead of closed: the old behaviour.
            Err(e) => panic!("the 65th connection was held, not closed: {e}"),
        }
        drop(idle);
    }

    fn mover(d: &Path) -> Arc<Mover> {
        let roots = custody_net::roots_from_pem(
            rcgen::CertificateParams::new(Vec::<String>::new())
                .unwrap()
                .self_signed(&rcgen::KeyPair::generate().unwrap())
                .unwrap()
                .pem()
                .as_bytes(),
        )
        .unwrap();
        let tls = custody_net::client_config(roots, None).unwrap();
        let session: Arc<dyn AsRef<Session> + Send + Sync> = Arc::new(Holder(Session::generate().unwrap()));
        Arc::new(Mover::new("n1".into(), d.join("ckpt"), vec![4; 65], tls, session).unwrap())
    }

    /// The admin socket is made inside a directory only the agent can enter: created
    /// 0700 when absent; a pre-existing one open to others, or a symlink, is refused
    /// (`admin_socket_dir`) before anything is bound.
    #[test]
    fn the_admin_socket_lives_in_a_private_directory() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let m = mover(d.path());
        let fresh = d.path().join("run/custody-agent/admin.sock");
        m.serve_admin(&fresh).unwrap();
        let mode = |p: &Path| std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(fresh.parent().unwrap()), 0o700);
        assert_eq!(mode(&fresh), 0o600);
        // Started again (a restart): the directory is ours, the stale socket replaced.
        m.serve_admin(&fresh).unwrap();

        let open = d.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
        let e = m.serve_admin(&open.join("admin.sock")).unwrap_err();
        assert_eq!(e.check(), "admin_socket_dir", "{e}");
        assert!(!open.join("admin.sock").exists());

        let link = d.path().join("link");
        std::os::unix::fs::symlink(fresh.parent().unwrap(), &link).unwrap();
        let e = m.serve_admin(&link.join("admin.sock")).unwrap_err();
        assert_eq!(e.check(), "admin_socket_dir", "{e}");
    }

    /// `--delete-source` deletes only the manifest's files whose digest still matches:
    /// a file changed after the manifest and a file added after it survive, and are named.
    #[test]
    fn delete_source_keeps_files_changed_or_added_after_the_manifest() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("job");
        std::fs::create_dir_all(dir.join("shards")).unwrap();
        std::fs::write(dir.join("a.bin"), [1u8; 10]).unwrap();
        std::fs::write(dir.join("b.bin"), [2u8; 10]).unwrap();
        std::fs::write(dir.join("shards/s0.bin"), [3u8; 10]).unwrap();
        let manifest = Manifest::build(&dir).unwrap();
        std::fs::write(dir.join("b.bin"), [9u8; 10]).unwrap();
        std::fs::write(dir.join("late.log"), b"written after the manifest").unwrap();
        let kept = release_copy(&dir, &manifest).unwrap();
        assert_eq!(
            kept,
            vec![
                "b.bin: changed after the manifest".to_owned(),
                "late.log: added after the manifest".to_owned()
            ]
        );
        assert!(!dir.join("a.bin").exists());
        assert!(!dir.join("shards").exists(), "an emptied directory is removed");
        assert_eq!(std::fs::read(dir.join("b.bin")).unwrap(), [9u8; 10]);
        assert!(dir.join("late.log").exists());

        // Nothing changed: the whole checkpoint goes.
        let clean = d.path().join("clean");
        std::fs::create_dir_all(&clean).unwrap();
        std::fs::write(clean.join("w.bin"), [1u8; 10]).unwrap();
        let manifest = Manifest::build(&clean).unwrap();
        assert!(release_copy(&clean, &manifest).unwrap().is_empty());
        assert!(!clean.exists());
    }

    struct Holder(Session);
    impl AsRef<Session> for Holder {
        fn as_ref(&self) -> &Session {
            &self.0
        }
    }
}
