//! Agent-to-agent transport (protocol section 9): the export file's messages as frames
//! over one byte stream, which the agents run over mutual TLS with their node
//! certificates. Blocking I/O on any `Read + Write`: a transfer is one thread and one
//! chunk of memory on each side.
//!
//! ```text
//! frame = kind u8 || u32be length || body
//! A -> B  HELLO    "custody-move-v1"                       (kind 1)
//! A -> B  OFFER    export header CBOR (section 8)          (kind 2)
//! B -> A  ACCEPT   u64be first chunk B wants (its durable point; 0 when new)   (kind 3)
//! A -> B  CHUNK    C_i, for i = first .. n-1 (the index is implied)            (kind 4)
//! B -> A  RECEIPT  the receipt COSE_Sign1 (section 6)      (kind 5)
//! B -> A  REFUSE   CBOR [check tstr, detail tstr]          (kind 6)
//! A -> B  BULK     empty: the CHUNKs come on the bound bulk connection      (kind 7)
//! bulk connection (A -> B): "custody-bulk-v1\n" || ticket id || token(32) || CHUNK...
//! ```
//! The bulk connection ([`send_bound`], [`Destination::serve_bound`],
//! [`Destination::accept_bulk`]) keeps TLS from encrypting the already-sealed chunks a
//! second time. Its token is the control session's TLS exporter (label
//! [`BULK_EXPORTER_LABEL`], context the ticket id), compared in constant time with B's own:
//! only a holder of the authenticated session's secrets gets the transfer's single-use
//! slot (`bulk_binding` otherwise). Nothing read from it is trusted: every chunk is
//! authenticated by the STREAM AEAD (index and last flag in the nonce, under the data key
//! that came on the control connection) before any byte is written, so tampering there
//! can only make B refuse. Confidentiality of the payload is the AEAD's, as over TLS.
//! B refuses at any point with REFUSE and closes. A connection that ends early leaves
//! B's staging durable at the last synced chunk; the next OFFER of the same ticket is
//! answered with that index and A continues from there (with a fresh data key: the key
//! only has to protect bytes on the wire, the staged bytes are already at B).
//!
//! B stores each signed receipt durably before the rename that places the checkpoint, so
//! an OFFER of a ticket whose checkpoint is already placed (A lost the RECEIPT to a crash
//! or a cut connection) is answered with that stored RECEIPT instead of ACCEPT, when it
//! comes from the same peer for the same manifest; any other replay is `ticket_replayed`.

use crate::deny::DenyState;
use crate::error::MoverError;
use crate::export::ExportHeader;
use crate::keywrap::{self, DataKey};
use crate::manifest::Manifest;
use crate::receipt::Receipt;
use crate::receive::{staging_dir, Receiver};
use crate::send::Sender;
use crate::stream::{StreamHeader, TAG_LEN};
use crate::ticket::{SeenTickets, Ticket};
use custody_types::FailedCheck;
use rustls::crypto::hpke::HpkePrivateKey;
use std::collections::{BTreeSet, HashMap};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub const HELLO: &[u8; 15] = b"custody-move-v1";
const K_HELLO: u8 = 1;
const K_OFFER: u8 = 2;
const K_ACCEPT: u8 = 3;
const K_CHUNK: u8 = 4;
const K_RECEIPT: u8 = 5;
const K_REFUSE: u8 = 6;
const K_BULK: u8 = 7;
/// First bytes of a bulk connection. Its first byte, `c`, is neither a TLS record's
/// (handshake 0x16) nor a frame kind, so a listener tells the two apart by one byte.
pub const BULK_MAGIC: &[u8; 16] = b"custody-bulk-v1\n";
/// Bulk preamble: magic 16 || ticket id 16 || binding token 32.
pub const BULK_PREAMBLE_LEN: usize = 64;
/// TLS exporter label of the binding token (RFC 8446 section 7.5; RFC 5705 for TLS 1.2);
/// the context is the ticket id.
pub const BULK_EXPORTER_LABEL: &[u8] = b"EXPORTER-custody-move-bulk-v1";
/// How long B waits for the bulk connection A announced (A opens it before announcing).
pub const DEFAULT_BULK_WAIT: std::time::Duration = std::time::Duration::from_secs(20);
/// Largest OFFER (the export header bound) and REFUSE/RECEIPT bodies.
const MAX_OFFER: usize = crate::export::MAX_EXPORT_HEADER as usize;
const MAX_SMALL: usize = 64 * 1024;
/// Sealed chunks the source's reader thread may hold ready ahead of the socket.
const PIPELINE_DEPTH: usize = 4;

/// Derives a control connection's binding token for a ticket id.
type TokenOf<S> = fn(&S, &[u8; 16]) -> Result<[u8; 32], MoverError>;

/// Whether a connection whose first byte is `b` is a bulk connection (else: control).
pub fn is_bulk_start(b: u8) -> bool {
    b == BULK_MAGIC[0]
}

/// A control connection that can derive the binding token of a bulk connection: the
/// TLS session's exporter (RFC 8446 section 7.5) under [`BULK_EXPORTER_LABEL`] with the
/// ticket id as context, 32 bytes. Both ends derive the same value from the session's
/// secrets; nobody without them can.
pub trait Exporter {
    fn bulk_token(&self, ticket_id: &[u8; 16]) -> Result<[u8; 32], MoverError>;
}

/// The binding token of a rustls connection (either side).
pub fn tls_bulk_token<D>(
    conn: &rustls::ConnectionCommon<D>,
    ticket_id: &[u8; 16],
) -> Result<[u8; 32], MoverError> {
    conn.export_keying_material([0u8; 32], BULK_EXPORTER_LABEL, Some(ticket_id))
        .map_err(|e| MoverError::BulkBinding(format!("TLS exporter: {e}")))
}

impl<T: Read + Write> Exporter for rustls::StreamOwned<rustls::ClientConnection, T> {
    fn bulk_token(&self, ticket_id: &[u8; 16]) -> Result<[u8; 32], MoverError> {
        tls_bulk_token(&self.conn, ticket_id)
    }
}

impl<T: Read + Write> Exporter for rustls::StreamOwned<rustls::ServerConnection, T> {
    fn bulk_token(&self, ticket_id: &[u8; 16]) -> Result<[u8; 32], MoverError> {
        tls_bulk_token(&self.conn, ticket_id)
    }
}

fn wire_err(msg: impl Into<String>) -> MoverError {
    MoverError::Wire(msg.into())
}

fn io(e: std::io::Error) -> MoverError {
    MoverError::io(Path::new("<move connection>"), e)
}

/// Write one frame.
pub fn write_frame<W: Write + ?Sized>(w: &mut W, kind: u8, body: &[u8]) -> Result<(), MoverError> {
    let len = u32::try_from(body.len()).map_err(|_| wire_err("frame too long"))?;
    let mut head = [0u8; 5];
    head[0] = kind;
    head[1..].copy_from_slice(&len.to_be_bytes());
    // One gather write for header and body: a chunk on a socket is one system call.
    let mut bufs = [std::io::IoSlice::new(&head), std::io::IoSlice::new(body)];
    let mut left: &mut [std::io::IoSlice<'_>] = &mut bufs;
    while !left.is_empty() {
        match w.write_vectored(left) {
            Ok(0) => return Err(io(std::io::ErrorKind::WriteZero.into())),
            Ok(n) => std::io::IoSlice::advance_slices(&mut left, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io(e)),
        }
    }
    Ok(())
}

/// Read one frame of at most `max` body bytes into `buf`; `None` at a clean end of input
/// (before the first byte of a frame).
pub fn read_frame<R: Read + ?Sized>(
    r: &mut R,
    max: usize,
    buf: &mut Vec<u8>,
) -> Result<Option<u8>, MoverError> {
    let Some((kind, len)) = read_head(r, max)? else {
        return Ok(None);
    };
    buf.clear();
    buf.reserve_exact(len);
    read_body(r, len, buf)?;
    Ok(Some(kind))
}

/// [`read_frame`], with the body at the offset of `buf` that is on a
/// [`crate::direct::ALIGN`] boundary in memory; returns the kind and that offset. A
/// chunk is decrypted where it lies, so its plaintext starts on the boundary too, and the
/// destination's writer gives it to the disk without copying it (`O_DIRECT` needs
/// aligned memory).
pub fn read_frame_aligned<R: Read + ?Sized>(
    r: &mut R,
    max: usize,
    buf: &mut Vec<u8>,
) -> Result<Option<(u8, usize)>, MoverError> {
    let Some((kind, len)) = read_head(r, max)? else {
        return Ok(None);
    };
    let align = crate::direct::ALIGN;
    buf.clear();
    // A reused buffer has the room already, so its address, and the offset, stay put.
    buf.reserve_exact(len + align);
    let at = buf.as_ptr().align_offset(align).min(align);
    buf.resize(at, 0);
    read_body(r, len, buf)?;
    Ok(Some((kind, at)))
}

/// A frame's header: kind and body length (at most `max`); `None` at a clean end.
fn read_head<R: Read + ?Sized>(r: &mut R, max: usize) -> Result<Option<(u8, usize)>, MoverError> {
    let mut head = [0u8; 5];
    let mut got = 0;
    while got < head.len() {
        let Some(dst) = head.get_mut(got..) else {
            return Err(wire_err("frame header"));
        };
        match r.read(dst) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(wire_err("connection ended inside a frame header")),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if got == 0 && is_close(&e) => return Ok(None),
            Err(e) => return Err(io(e)),
        }
    }
    let [kind, a, b, c, d] = head;
    let len = u32::from_be_bytes([a, b, c, d]) as usize;
    if len > max {
        return Err(wire_err(format!("frame of {len} bytes, at most {max} here")));
    }
    Ok(Some((kind, len)))
}

/// Append exactly `len` body bytes to `buf`, into its spare capacity: `read_to_end` does
/// not zero it first (a chunk is 1 MiB).
fn read_body<R: Read + ?Sized>(r: &mut R, len: usize, buf: &mut Vec<u8>) -> Result<(), MoverError> {
    let got = r
        .take(len as u64)
        .read_to_end(buf)
        .map_err(|e| wire_err(format!("connection ended inside a frame: {e}")))?;
    if got != len {
        return Err(wire_err(format!(
            "connection ended inside a frame ({got} of {len} bytes)"
        )));
    }
    Ok(())
}

/// A peer that went away without a TLS close_notify reads as an unexpected EOF.
fn is_close(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::UnexpectedEof
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::BrokenPipe
    )
}

fn refusal_body(e: &MoverError) -> Vec<u8> {
    let v = ciborium::Value::Array(vec![
        ciborium::Value::Text(e.check().to_owned()),
        ciborium::Value::Text(e.to_string()),
    ]);
    let mut out = Vec::new();
    // A two-text array always encodes; an empty body reads as an unnamed refusal.
    let _ = ciborium::into_writer(&v, &mut out);
    out
}

fn parse_refusal(body: &[u8]) -> MoverError {
    let printable = |s: &str| -> String {
        s.chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(1024)
            .collect()
    };
    match ciborium::from_reader::<ciborium::Value, _>(body) {
        Ok(ciborium::Value::Array(a)) => match a.as_slice() {
            [ciborium::Value::Text(c), ciborium::Value::Text(d)] => MoverError::Refused {
                check: printable(c),
                detail: printable(d),
            },
            _ => wire_err("malformed REFUSE"),
        },
        _ => wire_err("malformed REFUSE"),
    }
}

// ---------------------------------------------------------------------------------------
// Source

/// What the source knows and checks before sending.
#[derive(Debug, Clone, Copy)]
pub struct SourceChecks<'a> {
    pub verifier_public_sec1: &'a [u8],
    pub now: i64,
    /// This node's id: the ticket's source must equal it (`ticket_source`).
    pub me: &'a str,
}

/// Progress of a transfer as the source sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Plaintext bytes the destination holds or has been sent.
    pub bytes: u64,
    pub total: u64,
    /// Chunk the destination asked to start from (resume point of this connection).
    pub resumed_at: u64,
}

/// A completed move, as the source saw it.
#[derive(Debug, Clone)]
pub struct Sent {
    pub ticket: Ticket,
    pub receipt_bytes: Vec<u8>,
    pub receipt: Receipt,
    pub total_bytes: u64,
    /// Chunks this connection sent (fewer than the stream's after a resume).
    pub chunks_sent: u64,
    pub resumed_at: u64,
    /// The destination had already placed the checkpoint (an earlier connection's
    /// receipt was lost) and answered the OFFER with its stored receipt.
    pub receipt_resent: bool,
    /// The chunks went on the bound bulk connection (not on the control connection).
    pub bulk: bool,
}

/// The ticket as the source checks it: signed by the verifier, unexpired, naming this
/// node as the source.
pub fn source_ticket(ticket_bytes: &[u8], checks: SourceChecks<'_>) -> Result<Ticket, MoverError> {
    let ticket = Ticket::verify(ticket_bytes, checks.verifier_public_sec1, checks.now)?;
    if ticket.source != checks.me {
        return Err(MoverError::TicketSource(format!(
            "the ticket moves from {:?}, this node is {:?}",
            ticket.source, checks.me
        )));
    }
    Ok(ticket)
}

/// Verify the ticket and the checkpoint's manifest against it (the source's checks).
pub fn check_source(
    ticket_bytes: &[u8],
    checks: SourceChecks<'_>,
    checkpoint_dir: &Path,
) -> Result<(Ticket, Manifest), MoverError> {
    let ticket = source_ticket(ticket_bytes, checks)?;
    let manifest = Manifest::build(checkpoint_dir)?;
    if manifest.digest()? != ticket.manifest_digest {
        return Err(MoverError::ManifestDigest(
            "the checkpoint changed since the ticket was issued".into(),
        ));
    }
    Ok((ticket, manifest))
}

/// The source's checks for a caller that already holds the checkpoint's manifest (built
/// when the move was prepared, before the ticket was issued): the ticket as in
/// [`check_source`], the manifest's digest equal to the ticket's, and the checkpoint's
/// files and sizes still the manifest's. Nothing is hashed here, nor while sending: B
/// checks every file's digest as it arrives and refuses (`file_digest`) before placing
/// anything (an export checks them at the source instead, see `export::export_checked`).
pub fn check_source_with(
    ticket_bytes: &[u8],
    checks: SourceChecks<'_>,
    checkpoint_dir: &Path,
    manifest: Manifest,
) -> Result<(Ticket, Manifest), MoverError> {
    let ticket = source_ticket(ticket_bytes, checks)?;
    if manifest.digest()? != ticket.manifest_digest {
        return Err(MoverError::ManifestDigest(
            "the manifest is not the one the ticket names".into(),
        ));
    }
    let listed = crate::manifest::list_files(checkpoint_dir)?;
    if listed.len() != manifest.files.len() {
        return Err(MoverError::ManifestChanged(
            "the checkpoint's files are not the manifest's".into(),
        ));
    }
    for (rel, f) in listed.iter().zip(&manifest.files) {
        let path = crate::manifest::join(checkpoint_dir, rel)?;
        let size = std::fs::symlink_metadata(&path)
            .map_err(|e| MoverError::io(&path, e))?
            .len();
        if *rel != f.path || size != f.size {
            return Err(MoverError::ManifestChanged(format!(
                "{rel:?} is not the manifest's {:?} of {} bytes",
                f.path, f.size
            )));
        }
    }
    Ok((ticket, manifest))
}

/// Send a checkpoint over `conn` (already authenticated as the ticket's destination by
/// the caller). Returns once the destination's receipt arrived and verified.
pub fn send<S: Read + Write>(
    conn: &mut S,
    ticket_bytes: &[u8],
    checks: SourceChecks<'_>,
    checkpoint_dir: &Path,
    chunk_size: u32,
    progress: &mut dyn FnMut(Progress),
) -> Result<Sent, MoverError> {
    let (ticket, manifest) = check_source(ticket_bytes, checks, checkpoint_dir)?;
    send_checked(
        conn,
        ticket_bytes,
        ticket,
        manifest,
        checkpoint_dir,
        chunk_size,
        progress,
    )
}

/// [`send`] for a ticket and manifest [`check_source`] already produced (a caller that
/// checked before starting the transfer need not hash the checkpoint again: B checks every
/// file's digest whatever happens in between).
pub fn send_checked<S: Read + Write>(
    conn: &mut S,
    ticket_bytes: &[u8],
    ticket: Ticket,
    manifest: Manifest,
    checkpoint_dir: &Path,
    chunk_size: u32,
    progress: &mut dyn FnMut(Progress),
) -> Result<Sent, MoverError> {
    send_inner(
        conn,
        ticket_bytes,
        ticket,
        manifest,
        checkpoint_dir,
        chunk_size,
        None,
        progress,
    )
}

/// Opens the bulk connection to the destination (the same address as the control
/// connection); the mover writes the BULK preamble and the CHUNK frames to it.
pub type BulkConnect<'a> = dyn FnMut() -> std::io::Result<Box<dyn Write + 'a>> + 'a;

/// [`send_checked`] with the chunks on a second, plain connection bound to `conn`'s TLS
/// session (the agents' default; see the module docs and protocol section 9): the control
/// messages stay on `conn`, the already-sealed chunks are not encrypted a second time. If
/// `connect` fails the chunks go on `conn` as in [`send_checked`] (slower, as safe).
#[allow(clippy::too_many_arguments)]
pub fn send_bound<S: Read + Write + Exporter>(
    conn: &mut S,
    ticket_bytes: &[u8],
    ticket: Ticket,
    manifest: Manifest,
    checkpoint_dir: &Path,
    chunk_size: u32,
    connect: &mut BulkConnect<'_>,
    progress: &mut dyn FnMut(Progress),
) -> Result<Sent, MoverError> {
    let token = conn.bulk_token(&ticket.id)?;
    send_inner(
        conn,
        ticket_bytes,
        ticket,
        manifest,
        checkpoint_dir,
        chunk_size,
        Some((token, connect)),
        progress,
    )
}

#[allow(clippy::too_many_arguments)]
fn send_inner<S: Read + Write>(
    conn: &mut S,
    ticket_bytes: &[u8],
    ticket: Ticket,
    manifest: Manifest,
    checkpoint_dir: &Path,
    chunk_size: u32,
    bulk: Option<([u8; 32], &mut BulkConnect<'_>)>,
    progress: &mut dyn FnMut(Progress),
) -> Result<Sent, MoverError> {
    let md = manifest.digest()?;
    let total = manifest.total_bytes();
    let sh = StreamHeader::new(ticket.id, md, chunk_size, total)?;
    let key = DataKey::generate()?;
    let wrapped = keywrap::wrap(&key, &ticket.dst_x25519, &ticket.id, &sh.to_bytes())?;
    let offer = ExportHeader {
        ticket: ticket_bytes.to_vec(),
        wrapped,
        manifest: manifest.to_cbor()?,
        chunk_size,
    }
    .to_cbor()?;
    write_frame(conn, K_HELLO, HELLO)?;
    write_frame(conn, K_OFFER, &offer)?;
    conn.flush().map_err(io)?;

    let mut buf = Vec::new();
    let resumed_at = match read_frame(conn, MAX_SMALL, &mut buf)? {
        Some(K_ACCEPT) => {
            let b: [u8; 8] = buf
                .as_slice()
                .try_into()
                .map_err(|_| wire_err("ACCEPT is not 8 bytes"))?;
            u64::from_be_bytes(b)
        }
        // Already placed by an earlier connection whose receipt A never read: the same
        // checks as a receipt after the last chunk.
        Some(K_RECEIPT) => {
            let receipt = Receipt::verify(&buf, &ticket.dst_ed25519)?;
            check_receipt(&receipt, &ticket, total)?;
            progress(Progress {
                bytes: total,
                total,
                resumed_at: sh.chunk_count(),
            });
            return Ok(Sent {
                ticket,
                receipt_bytes: buf,
                receipt,
                total_bytes: total,
                chunks_sent: 0,
                resumed_at: sh.chunk_count(),
                receipt_resent: true,
                bulk: false,
            });
        }
        Some(K_REFUSE) => return Err(parse_refusal(&buf)),
        Some(k) => return Err(wire_err(format!("expected ACCEPT, got frame kind {k}"))),
        None => return Err(wire_err("destination closed before accepting")),
    };
    let mut sender = Sender::new(checkpoint_dir, manifest, sh, &key)?;
    // B hashes every file as it arrives and refuses before placing anything: the same
    // check at A would only pay for it twice (Sender::set_verify_digests).
    sender.set_verify_digests(false);
    sender.seek_to_chunk(resumed_at)?;
    // The bound bulk connection: opened, its preamble written, then announced on the
    // control connection (B holds the slot from before its ACCEPT, so the order of the
    // two arrivals does not matter). Nothing to send after a resume at the end: none.
    let mut bulk_conn: Option<Box<dyn Write + '_>> = None;
    if resumed_at < sh.chunk_count() {
        if let Some((token, connect)) = bulk {
            // On failure the chunks go on the control connection instead: as safe,
            // slower (`Sent::bulk` tells the caller).
            if let Ok(mut w) = connect() {
                let mut pre = Vec::with_capacity(BULK_PREAMBLE_LEN);
                pre.extend_from_slice(BULK_MAGIC);
                pre.extend_from_slice(&ticket.id);
                pre.extend_from_slice(&token);
                w.write_all(&pre).and_then(|()| w.flush()).map_err(io)?;
                write_frame(conn, K_BULK, &[])?;
                conn.flush().map_err(io)?;
                bulk_conn = Some(w);
            }
        }
    }
    let on_bulk = bulk_conn.is_some();
    let cs = u64::from(chunk_size);
    progress(Progress {
        bytes: (resumed_at * cs).min(total),
        total,
        resumed_at,
    });
    // Reading, hashing and sealing run on a second thread, a bounded number of chunks
    // ahead of this one, which writes them to the connection: the disk, the CPU work and
    // the socket overlap. Memory stays bounded (PIPELINE_DEPTH + 2 chunks). When this side
    // stops early it drops the receiver and the reader stops at its next chunk.
    let streamed = std::thread::scope(|scope| -> Result<u64, (MoverError, bool)> {
        let (tx, rx) = std::sync::mpsc::sync_channel(PIPELINE_DEPTH);
        scope.spawn(move || loop {
            let item = sender.next_chunk().transpose();
            let stop = !matches!(item, Some(Ok(_)));
            if let Some(item) = item {
                if tx.send(item).is_err() {
                    return;
                }
            }
            if stop {
                return;
            }
        });
        let out: &mut dyn Write = match bulk_conn.as_mut() {
            Some(w) => w,
            None => conn,
        };
        let mut sent = 0u64;
        for item in rx {
            let (i, ct) = item.map_err(|e| (e, false))?;
            write_frame(out, K_CHUNK, &ct).map_err(|e| (e, true))?;
            sent += 1;
            progress(Progress {
                bytes: ((i + 1) * cs).min(total),
                total,
                resumed_at,
            });
        }
        out.flush().map_err(|e| (io(e), true))?;
        Ok(sent)
    });
    // Closing the bulk connection tells B nothing: it counts chunks.
    drop(bulk_conn);
    let sent = match streamed {
        Ok(n) => n,
        // The destination may have refused mid-stream: its reason beats EPIPE.
        Err((e, true)) => return Err(read_refusal_after(conn).unwrap_or(e)),
        Err((e, false)) => return Err(e),
    };
    if resumed_at + sent != sh.chunk_count() {
        return Err(wire_err("the reader stopped before the last chunk"));
    }
    conn.flush().map_err(io)?;
    let receipt_bytes = match read_frame(conn, MAX_SMALL, &mut buf)? {
        Some(K_RECEIPT) => buf.clone(),
        Some(K_REFUSE) => return Err(parse_refusal(&buf)),
        Some(k) => return Err(wire_err(format!("expected RECEIPT, got frame kind {k}"))),
        None => return Err(wire_err("destination closed without a receipt")),
    };
    let receipt = Receipt::verify(&receipt_bytes, &ticket.dst_ed25519)?;
    check_receipt(&receipt, &ticket, total)?;
    Ok(Sent {
        ticket,
        receipt_bytes,
        receipt,
        total_bytes: total,
        chunks_sent: sent,
        resumed_at,
        receipt_resent: false,
        bulk: on_bulk,
    })
}

/// The receipt must be for this ticket's job, destination, manifest and size.
pub fn check_receipt(r: &Receipt, t: &Ticket, total: u64) -> Result<(), MoverError> {
    if r.ticket_id != t.id
        || r.job != t.job
        || r.destination != t.destination
        || r.manifest_digest != t.manifest_digest
        || r.bytes != total
    {
        return Err(MoverError::ReceiptFormat(
            "the receipt is not for this ticket (id, job, destination, manifest or size)".into(),
        ));
    }
    Ok(())
}

fn read_refusal_after<S: Read>(conn: &mut S) -> Option<MoverError> {
    let mut buf = Vec::new();
    match read_frame(conn, MAX_SMALL, &mut buf) {
        Ok(Some(K_REFUSE)) => Some(parse_refusal(&buf)),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------
// Destination

/// Read CHUNK frames into `rx` until its last chunk.
fn read_chunks<R: Read + ?Sized>(
    r: &mut R,
    rx: &mut Receiver,
    max: usize,
    buf: &mut Vec<u8>,
) -> Result<(), MoverError> {
    let want = rx.header().chunk_count();
    while rx.resume_point() < want {
        match read_frame_aligned(r, max, buf)? {
            // The frame's buffer is decrypted in place and handed to the writer thread.
            Some((K_CHUNK, at)) => {
                let ct = std::mem::replace(buf, rx.spare_buffer());
                rx.write_chunk_at(rx.resume_point(), ct, at)?
            }
            Some((k, _)) => return Err(wire_err(format!("expected CHUNK, got frame kind {k}"))),
            None => {
                return Err(MoverError::StreamTruncated {
                    got: rx.resume_point(),
                    want,
                })
            }
        }
    }
    Ok(())
}

/// Signs a receipt payload with the destination's Ed25519 session key.
pub type ReceiptSigner = Box<dyn Fn(&[u8]) -> [u8; 64] + Send + Sync>;

/// The destination node's identity, keys and state, shared by its connections.
pub struct Destination {
    pub me: String,
    pub my_x25519: [u8; 32],
    pub my_x25519_secret: HpkePrivateKey,
    pub verifier_public_sec1: Vec<u8>,
    /// Where checkpoints arrive: `<dir>/<job>`, staging beside it.
    pub dir: PathBuf,
    pub seen: Mutex<SeenTickets>,
    /// The verifier's deny list: a source it lists is refused whatever its ticket says.
    pub deny: Arc<DenyState>,
    /// Signs receipts with the attested Ed25519 session key.
    pub sign: ReceiptSigner,
    /// Chunks between durable points.
    pub sync_every: u64,
    /// Write checkpoints past the page cache where the filesystem allows (`O_DIRECT`;
    /// default true). See `custody_mover::receive::Receiver::set_direct_io`.
    pub direct_io: bool,
    /// How long a transfer waits for the bulk connection its source announced.
    pub bulk_wait: std::time::Duration,
    active: Mutex<BTreeSet<[u8; 16]>>,
    /// Transfers waiting for their bulk connection, by ticket id.
    bulk: Mutex<HashMap<[u8; 16], BulkSlot>>,
}

/// The bulk connection's byte stream, handed from the listener to the transfer.
pub type BulkStream = Box<dyn Read + Send>;

/// A transfer's expected binding token and where its bulk connection goes.
struct BulkSlot {
    token: [u8; 32],
    tx: std::sync::mpsc::SyncSender<BulkStream>,
}

/// Removes a transfer's bulk slot when its connection ends.
struct SlotGuard<'a>(&'a Mutex<HashMap<[u8; 16], BulkSlot>>, [u8; 16]);

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.1);
    }
}

impl std::fmt::Debug for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Destination")
            .field("me", &self.me)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// A completed move, as the destination saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub ticket: Ticket,
    pub target: PathBuf,
    pub receipt_bytes: Vec<u8>,
    pub resumed_at: u64,
    /// Placed by an earlier connection; this one was answered with the stored receipt.
    pub receipt_resent: bool,
}

/// The destination's copy of the verifier's deny list: `<dir>/.custody-deny-list`.
pub const DENY_LIST_FILE: &str = ".custody-deny-list";

/// Receipts of placed checkpoints at the destination: `<dir>/.custody-receipts/<id hex>`,
/// each the CBOR array `[peer tstr, manifest_digest bstr(32), receipt bstr]`.
const RECEIPTS_DIR: &str = ".custody-receipts";
/// A stored record: the receipt (at most 64 KiB) and a little framing.
const MAX_RECEIPT_RECORD: u64 = MAX_SMALL as u64 + 4096;

fn fsync_dir(p: &Path) -> Result<(), MoverError> {
    std::fs::File::open(p)
        .and_then(|d| d.sync_all())
        .map_err(|e| MoverError::io(p, e))
}

/// Removes a ticket from the active set when its connection ends.
struct ActiveGuard<'a>(&'a Mutex<BTreeSet<[u8; 16]>>, [u8; 16]);

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.1);
    }
}

impl Destination {
    pub fn new(
        me: String,
        my_x25519: [u8; 32],
        my_x25519_secret: HpkePrivateKey,
        verifier_public_sec1: Vec<u8>,
        dir: PathBuf,
        sign: ReceiptSigner,
    ) -> Result<Self, MoverError> {
        let seen = SeenTickets::open(&dir.join(".custody-seen-tickets"))?;
        let deny = DenyState::open(&dir.join(DENY_LIST_FILE), verifier_public_sec1.clone())?;
        Ok(Self {
            me,
            my_x25519,
            my_x25519_secret,
            verifier_public_sec1,
            dir,
            seen: Mutex::new(seen),
            deny: Arc::new(deny),
            sign,
            sync_every: crate::receive::DEFAULT_SYNC_EVERY,
            direct_io: true,
            bulk_wait: DEFAULT_BULK_WAIT,
            active: Mutex::new(BTreeSet::new()),
            bulk: Mutex::new(HashMap::new()),
        })
    }

    /// Serve one connection from `peer` (the source node id the caller authenticated
    /// from the TLS client certificate). Every refusal is also sent to the peer.
    /// The chunks must come on this connection (a CHUNK frame after ACCEPT); a source
    /// that announces a bulk connection is refused (`wire_format`).
    pub fn serve<S: Read + Write>(&self, conn: &mut S, peer: &str, now: i64) -> Result<Received, MoverError> {
        self.serve_with(conn, peer, now, None)
    }

    /// [`Destination::serve`] for a TLS control connection: the chunks may also come on a
    /// bulk connection bound to this one's session, which the listener hands over with
    /// [`Destination::accept_bulk`].
    pub fn serve_bound<S: Read + Write + Exporter>(
        &self,
        conn: &mut S,
        peer: &str,
        now: i64,
    ) -> Result<Received, MoverError> {
        self.serve_with(conn, peer, now, Some(|c: &S, id: &[u8; 16]| c.bulk_token(id)))
    }

    /// A connection that started with [`BULK_MAGIC`] (see [`is_bulk_start`]): read its
    /// preamble and hand it to the transfer of its ticket, if one waits for it and the
    /// token is that transfer's control session's (compared in constant time). Anything
    /// else is refused (`bulk_binding`) and the connection dropped: nothing it carries is
    /// read, let alone written. The slot is single use. Returns the ticket id.
    pub fn accept_bulk<R: Read + Send + 'static>(&self, mut r: R) -> Result<[u8; 16], MoverError> {
        let mut pre = [0u8; BULK_PREAMBLE_LEN];
        r.read_exact(&mut pre)
            .map_err(|e| MoverError::BulkBinding(format!("preamble: {e}")))?;
        let (magic, rest) = pre.split_at(BULK_MAGIC.len());
        let (id, token) = rest.split_at(16);
        if magic != BULK_MAGIC {
            return Err(MoverError::BulkBinding("not a custody-bulk-v1 preamble".into()));
        }
        let id: [u8; 16] = id
            .try_into()
            .map_err(|_| MoverError::BulkBinding("ticket id".into()))?;
        let mut slots = self.bulk.lock().unwrap_or_else(|p| p.into_inner());
        let Some(slot) = slots.get(&id) else {
            return Err(MoverError::BulkBinding(format!(
                "no transfer of ticket {} waits for a bulk connection",
                hex::encode(id)
            )));
        };
        if aws_lc_rs::constant_time::verify_slices_are_equal(&slot.token, token).is_err() {
            return Err(MoverError::BulkBinding(format!(
                "the binding token is not the one of ticket {}'s control session",
                hex::encode(id)
            )));
        }
        let slot = slots
            .remove(&id)
            .ok_or_else(|| MoverError::BulkBinding("slot".into()))?;
        slot.tx
            .try_send(Box::new(r))
            .map_err(|_| MoverError::BulkBinding("the transfer ended".into()))?;
        Ok(id)
    }

    fn serve_with<S: Read + Write>(
        &self,
        conn: &mut S,
        peer: &str,
        now: i64,
        export: Option<TokenOf<S>>,
    ) -> Result<Received, MoverError> {
        match self.serve_inner(conn, peer, now, export) {
            Ok(r) => Ok(r),
            Err(e) => {
                if !matches!(e, MoverError::Io { .. }) {
                    let _ = write_frame(conn, K_REFUSE, &refusal_body(&e));
                    let _ = conn.flush();
                }
                Err(e)
            }
        }
    }

    fn serve_inner<S: Read + Write>(
        &self,
        conn: &mut S,
        peer: &str,
        now: i64,
        export: Option<TokenOf<S>>,
    ) -> Result<Received, MoverError> {
        let mut buf = Vec::new();
        match read_frame(conn, MAX_SMALL, &mut buf)? {
            Some(K_HELLO) if buf.as_slice() == HELLO => {}
            _ => return Err(wire_err("expected HELLO custody-move-v1")),
        }
        match read_frame(conn, MAX_OFFER, &mut buf)? {
            Some(K_OFFER) => {}
            _ => return Err(wire_err("expected OFFER")),
        }
        let offer = ExportHeader::from_cbor(&buf)?;
        let ticket = Ticket::verify(&offer.ticket, &self.verifier_public_sec1, now)?;
        ticket.verify_for(&self.me, &self.my_x25519)?;
        if ticket.source != peer {
            return Err(MoverError::TicketSource(format!(
                "the ticket moves from {:?}, the connection is from {peer:?}",
                ticket.source
            )));
        }
        // node_removed / revoked: a ticket issued before the source's removal is good
        // until it expires; the verifier's deny list is not.
        self.deny.check(&ticket.source)?;
        let manifest = Manifest::from_cbor(&offer.manifest)?;
        let md = manifest.digest()?;
        if md != ticket.manifest_digest {
            return Err(MoverError::ManifestDigest(
                "the offered manifest is not the one the ticket names".into(),
            ));
        }
        let sh = StreamHeader::new(ticket.id, md, offer.chunk_size, manifest.total_bytes())?;
        let key = keywrap::unwrap(&offer.wrapped, &self.my_x25519_secret, &ticket.id, &sh.to_bytes())?;

        if !self
            .active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(ticket.id)
        {
            return Err(MoverError::TransferActive(ticket.id_hex()));
        }
        let _guard = ActiveGuard(&self.active, ticket.id);

        // A staging directory with a progress record means a transfer of this ticket
        // started and did not finish: continue it. Otherwise the ticket must be unused. The
        // id is recorded only once the staging directory and its first progress record are
        // durable: recording it first would turn a crash in between into a permanent
        // `ticket_replayed` with nothing staged (seen in the movepeer kill test).
        let staging = staging_dir(&self.dir, &ticket.id);
        let completed = !ticket.job.contains('/')
            && crate::manifest::join(&self.dir, &ticket.job).is_ok_and(|t| t.symlink_metadata().is_ok())
            && !staging.join("data").exists();
        // The active set keeps other connections of this ticket out; the lock is not held
        // while a resume re-hashes staged files.
        let was_seen = self
            .seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&ticket.id);
        if completed && was_seen {
            // This ticket's checkpoint was placed (its staging data renamed into the
            // target); a crash before the staging directory was removed leaves the rest.
            if staging.symlink_metadata().is_ok() {
                std::fs::remove_dir_all(&staging).map_err(|e| MoverError::io(&staging, e))?;
            }
            // The receipt may never have reached A: resend the stored one, but only to the
            // peer that sent it, for the same manifest. Anything else is a replay.
            let Some(receipt_bytes) = self.stored_receipt(&ticket, peer, &md, sh.total_bytes)? else {
                return Err(MoverError::TicketReplayed(ticket.id_hex()));
            };
            write_frame(conn, K_RECEIPT, &receipt_bytes)?;
            conn.flush().map_err(io)?;
            let target = crate::manifest::join(&self.dir, &ticket.job)?;
            return Ok(Received {
                ticket,
                target,
                receipt_bytes,
                resumed_at: sh.chunk_count(),
                receipt_resent: true,
            });
        }
        let mut rx = if staging.join("progress").is_file() {
            Receiver::resume(&self.dir, None, &ticket, manifest, sh, &key)?
        } else {
            let crashed_start = staging.symlink_metadata().is_ok();
            if was_seen && !crashed_start {
                return Err(MoverError::TicketReplayed(ticket.id_hex()));
            }
            if crashed_start {
                // Created but crashed before its first progress file: nothing staged.
                std::fs::remove_dir_all(&staging).map_err(|e| MoverError::io(&staging, e))?;
            }
            Receiver::create(&self.dir, None, &ticket, manifest, sh, &key)?
        };
        if !was_seen {
            self.seen
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .check_and_record(&ticket.id)?;
        }
        rx.set_sync_every(self.sync_every.max(1));
        rx.set_direct_io(self.direct_io);
        let resumed_at = rx.resume_point();
        // The bulk slot exists before ACCEPT: A may connect it before announcing it.
        let mut slot = None;
        let _slot_guard = match export {
            Some(export) if resumed_at < sh.chunk_count() => {
                let token = export(conn, &ticket.id)?;
                let (tx, slot_rx) = std::sync::mpsc::sync_channel(1);
                self.bulk
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(ticket.id, BulkSlot { token, tx });
                slot = Some(slot_rx);
                Some(SlotGuard(&self.bulk, ticket.id))
            }
            _ => None,
        };
        write_frame(conn, K_ACCEPT, &resumed_at.to_be_bytes())?;
        conn.flush().map_err(io)?;

        let max = sh.chunk_size as usize + TAG_LEN;
        let result = (|| {
            if rx.resume_point() >= sh.chunk_count() {
                return Ok(());
            }
            // The first frame says where the chunks come: here (CHUNK), or on the bound
            // bulk connection (BULK).
            match read_frame_aligned(conn, max, &mut buf)? {
                Some((K_CHUNK, at)) => {
                    let ct = std::mem::replace(&mut buf, rx.spare_buffer());
                    rx.write_chunk_at(rx.resume_point(), ct, at)?;
                    read_chunks(conn, &mut rx, max, &mut buf)
                }
                Some((K_BULK, _)) => {
                    let slot = slot.take().ok_or_else(|| {
                        wire_err("BULK on a connection without a bound bulk channel (not TLS)")
                    })?;
                    let mut bulk = slot.recv_timeout(self.bulk_wait).map_err(|_| {
                        MoverError::BulkBinding(format!(
                            "no bulk connection with this session's binding token within {:?}",
                            self.bulk_wait
                        ))
                    })?;
                    read_chunks(&mut bulk, &mut rx, max, &mut buf)
                }
                Some((k, _)) => Err(wire_err(format!("expected CHUNK or BULK, got frame kind {k}"))),
                None => Err(MoverError::StreamTruncated {
                    got: rx.resume_point(),
                    want: sh.chunk_count(),
                }),
            }
        })();
        if let Err(e) = result {
            // Keep what was authenticated so the next offer resumes after it.
            let _ = rx.make_durable();
            return Err(e);
        }
        // The signed receipt is durable before the rename makes the checkpoint visible:
        // a crash after the rename then always leaves a receipt to resend. A crash between
        // the two leaves a stored receipt for an unplaced checkpoint, which is never sent
        // (only a placed ticket's receipt is, see above) and is replaced when the resumed
        // transfer finishes. The other order would reopen the lost-receipt window.
        let mut signed = None;
        let (target, _) = rx.finish_with(now, |receipt| {
            let bytes = receipt.sign_with(|m| (self.sign)(m))?;
            self.store_receipt(&ticket.id, peer, &md, &bytes)?;
            signed = Some(bytes);
            Ok(())
        })?;
        let receipt_bytes = signed.ok_or_else(|| wire_err("receipt not signed"))?;
        write_frame(conn, K_RECEIPT, &receipt_bytes)?;
        conn.flush().map_err(io)?;
        Ok(Received {
            ticket,
            target,
            receipt_bytes,
            resumed_at,
            receipt_resent: false,
        })
    }

    fn receipt_path(&self, id: &[u8; 16]) -> PathBuf {
        self.dir.join(RECEIPTS_DIR).join(hex::encode(id))
    }

    /// Write the receipt record atomically and durably (temp file, fsync, rename, fsync
    /// the directory).
    fn store_receipt(
        &self,
        id: &[u8; 16],
        peer: &str,
        md: &[u8; 32],
        receipt: &[u8],
    ) -> Result<(), MoverError> {
        let dir = self.dir.join(RECEIPTS_DIR);
        if !dir.is_dir() {
            std::fs::create_dir_all(&dir).map_err(|e| MoverError::io(&dir, e))?;
            fsync_dir(&self.dir)?;
        }
        let v = ciborium::Value::Array(vec![
            ciborium::Value::Text(peer.to_owned()),
            ciborium::Value::Bytes(md.to_vec()),
            ciborium::Value::Bytes(receipt.to_vec()),
        ]);
        let mut body = Vec::new();
        ciborium::into_writer(&v, &mut body)
            .map_err(|e| MoverError::Staging(format!("receipt record: {e}")))?;
        let fin = self.receipt_path(id);
        let tmp = fin.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp).map_err(|e| MoverError::io(&tmp, e))?;
        f.write_all(&body)
            .and_then(|()| f.sync_all())
            .map_err(|e| MoverError::io(&tmp, e))?;
        std::fs::rename(&tmp, &fin).map_err(|e| MoverError::io(&fin, e))?;
        fsync_dir(&dir)
    }

    /// The stored receipt of a placed ticket, if one exists for this peer and manifest and
    /// it is a receipt A will accept for this ticket (signed with the ticket's Ed25519 key,
    /// naming its id, job, destination, manifest and size). `None` means a replay.
    fn stored_receipt(
        &self,
        ticket: &Ticket,
        peer: &str,
        md: &[u8; 32],
        total: u64,
    ) -> Result<Option<Vec<u8>>, MoverError> {
        let path = self.receipt_path(&ticket.id);
        let f = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(MoverError::io(&path, e)),
        };
        let mut body = Vec::new();
        f.take(MAX_RECEIPT_RECORD + 1)
            .read_to_end(&mut body)
            .map_err(|e| MoverError::io(&path, e))?;
        let bad = || MoverError::Staging(format!("{}: malformed receipt record", path.display()));
        if body.len() as u64 > MAX_RECEIPT_RECORD {
            return Err(bad());
        }
        let v: ciborium::Value = ciborium::from_reader(body.as_slice()).map_err(|_| bad())?;
        let ciborium::Value::Array(a) = v else {
            return Err(bad());
        };
        let [ciborium::Value::Text(p), ciborium::Value::Bytes(m), ciborium::Value::Bytes(r)] = a.as_slice()
        else {
            return Err(bad());
        };
        if p != peer || m.as_slice() != md.as_slice() {
            return Ok(None);
        }
        let usable = Receipt::verify(r, &ticket.dst_ed25519).and_then(|rc| check_receipt(&rc, ticket, total));
        Ok(usable.is_ok().then(|| r.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ticket::tests::key;
    use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
    use std::io::Cursor;

    type Tamper = Box<dyn FnMut(usize, &mut Vec<u8>) + Send>;

    /// An in-memory full-duplex pipe between two threads.
    struct Pipe {
        rx: std::sync::mpsc::Receiver<Vec<u8>>,
        tx: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
        pending: Cursor<Vec<u8>>,
        /// Bytes after which the writer fails (a cut connection).
        cut_after: Option<usize>,
        written: usize,
        tamper: Option<Tamper>,
        /// Stands for the TLS session's secrets: both ends of one pipe share it.
        session: [u8; 32],
    }

    fn pipe() -> (Pipe, Pipe) {
        let (a_tx, b_rx) = std::sync::mpsc::sync_channel(64);
        let (b_tx, a_rx) = std::sync::mpsc::sync_channel(64);
        let mut session = [0u8; 32];
        aws_lc_rs::rand::fill(&mut session).unwrap();
        let mk = |rx, tx| Pipe {
            rx,
            tx: Some(tx),
            pending: Cursor::new(Vec::new()),
            cut_after: None,
            written: 0,
            tamper: None,
            session,
        };
        (mk(a_rx, a_tx), mk(b_rx, b_tx))
    }

    /// An exporter stand-in: a function of the session secret and the context.
    impl Exporter for Pipe {
        fn bulk_token(&self, ticket_id: &[u8; 16]) -> Result<[u8; 32], MoverError> {
            let mut m = self.session.to_vec();
            m.extend_from_slice(ticket_id);
            Ok(crate::manifest::sha256(&m))
        }
    }

    /// What an attacker on the bulk connection does to the CHUNK frames (by the index
    /// of the frame on this connection).
    #[derive(Clone, Copy, Debug)]
    enum FrameOp {
        Clean,
        Flip(usize),
        /// Frames k and k+1 swapped.
        Swap(usize),
        Duplicate(usize),
        /// The connection closes before frame k.
        Truncate(usize),
        /// Everything after the preamble cut off after this many bytes.
        CutAfter(usize),
    }

    /// Passes the bulk preamble through, then rewrites whole frames per [`FrameOp`].
    struct FrameTamper {
        inner: Option<Pipe>,
        op: FrameOp,
        pre: usize,
        pending: Vec<u8>,
        held: Option<Vec<u8>>,
        frames: usize,
        bytes: usize,
    }

    impl Write for FrameTamper {
        fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
            let Some(inner) = self.inner.as_mut() else {
                return Err(std::io::ErrorKind::BrokenPipe.into());
            };
            let mut rest = data;
            if self.pre < BULK_PREAMBLE_LEN {
                let n = (BULK_PREAMBLE_LEN - self.pre).min(rest.len());
                inner.write_all(&rest[..n])?;
                self.pre += n;
                rest = &rest[n..];
            }
            self.pending.extend_from_slice(rest);
            loop {
                if self.pending.len() < 5 {
                    break;
                }
                let len = u32::from_be_bytes(self.pending[1..5].try_into().unwrap()) as usize;
                if self.pending.len() < 5 + len {
                    break;
                }
                let mut f: Vec<u8> = self.pending.drain(..5 + len).collect();
                let k = self.frames;
                self.frames += 1;
                let out: Vec<Vec<u8>> = match self.op {
                    FrameOp::Flip(i) if i == k => {
                        f[50] ^= 1;
                        vec![f]
                    }
                    FrameOp::Swap(i) if i == k => {
                        self.held = Some(f);
                        vec![]
                    }
                    FrameOp::Swap(i) if i + 1 == k => vec![f, self.held.take().unwrap()],
                    FrameOp::Duplicate(i) if i == k => vec![f.clone(), f],
                    FrameOp::Truncate(i) if i == k => {
                        self.inner = None;
                        return Err(std::io::ErrorKind::BrokenPipe.into());
                    }
                    _ => vec![f],
                };
                for f in out {
                    if let FrameOp::CutAfter(c) = self.op {
                        if self.bytes + f.len() > c {
                            self.inner = None;
                            return Err(std::io::ErrorKind::BrokenPipe.into());
                        }
                    }
                    self.bytes += f.len();
                    inner.write_all(&f)?;
                }
            }
            Ok(data.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Read for Pipe {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            loop {
                let n = self.pending.read(out)?;
                if n > 0 || out.is_empty() {
                    return Ok(n);
                }
                match self.rx.recv() {
                    Ok(v) => self.pending = Cursor::new(v),
                    Err(_) => return Ok(0),
                }
            }
        }
    }

    impl Write for Pipe {
        fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
            if let Some(c) = self.cut_after {
                if self.written >= c {
                    // A cut connection: the peer sees the end of input too.
                    self.tx = None;
                    return Err(std::io::ErrorKind::BrokenPipe.into());
                }
            }
            let mut v = data.to_vec();
            if let Some(t) = self.tamper.as_mut() {
                t(self.written, &mut v);
            }
            self.written += data.len();
            self.tx
                .as_ref()
                .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::BrokenPipe))?
                .send(v)
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))?;
            Ok(data.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    type BoundRun = (
        Result<Sent, MoverError>,
        Result<Received, MoverError>,
        Vec<Result<[u8; 16], MoverError>>,
    );

    struct World {
        _d: tempfile::TempDir,
        src: PathBuf,
        verifier: aws_lc_rs::signature::EcdsaKeyPair,
        dest: std::sync::Arc<Destination>,
        ed_pub: [u8; 32],
    }

    const NOW: i64 = 1_800_000_000;

    fn world(size: usize) -> World {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        std::fs::create_dir_all(src.join("shards")).unwrap();
        let data: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(src.join("shards/a.bin"), &data).unwrap();
        std::fs::write(src.join("meta.json"), b"{\"step\": 42}").unwrap();
        let verifier = key();
        let (x_pub, x_sec) = keywrap::generate_x25519().unwrap();
        let ed = Ed25519KeyPair::generate().unwrap();
        let ed_pub: [u8; 32] = ed.public_key().as_ref().try_into().unwrap();
        let dir = d.path().join("inbox");
        std::fs::create_dir_all(&dir).unwrap();
        let dest = Destination::new(
            "node-b".into(),
            x_pub,
            x_sec,
            aws_lc_rs::signature::KeyPair::public_key(&verifier)
                .as_ref()
                .to_vec(),
            dir,
            Box::new(move |m| ed.sign(m).as_ref().try_into().unwrap()),
        )
        .unwrap();
        World {
            _d: d,
            src,
            verifier,
            dest: std::sync::Arc::new(dest),
            ed_pub,
        }
    }

    impl World {
        fn ticket(&self, id: u8, source: &str, expires_at: i64) -> Vec<u8> {
            self.ticket_for(id, "job-1", source, expires_at)
        }

        fn ticket_for(&self, id: u8, job: &str, source: &str, expires_at: i64) -> Vec<u8> {
            let m = Manifest::build(&self.src).unwrap();
            Ticket {
                id: [id; 16],
                job: job.into(),
                source: source.into(),
                destination: "node-b".into(),
                dst_x25519: self.dest.my_x25519,
                dst_ed25519: self.ed_pub,
                policy_id: "eu-sovereign".into(),
                policy_digest: [3; 32],
                manifest_digest: m.digest().unwrap(),
                issued_at: NOW - 10,
                expires_at,
            }
            .sign(&self.verifier)
            .unwrap()
        }

        fn checks(&self) -> (Vec<u8>, &'static str) {
            (
                aws_lc_rs::signature::KeyPair::public_key(&self.verifier)
                    .as_ref()
                    .to_vec(),
                "node-a",
            )
        }

        /// Run one transfer; `setup` adjusts A's end of the pipe.
        fn run(
            &self,
            ticket: &[u8],
            peer: &str,
            setup: impl FnOnce(&mut Pipe),
        ) -> (Result<Sent, MoverError>, Result<Received, MoverError>) {
            self.run_as("node-a", ticket, peer, setup, |_| {})
        }

        /// [`World::run`] with the source's node id and both ends' pipes adjustable.
        fn run_as(
            &self,
            me: &str,
            ticket: &[u8],
            peer: &str,
            setup: impl FnOnce(&mut Pipe),
            setup_b: impl FnOnce(&mut Pipe),
        ) -> (Result<Sent, MoverError>, Result<Received, MoverError>) {
            let (mut a, mut b) = pipe();
            setup(&mut a);
            setup_b(&mut b);
            let dest = self.dest.clone();
            let peer = peer.to_owned();
            let h = std::thread::spawn(move || {
                let r = dest.serve(&mut b, &peer, NOW);
                drop(b);
                r
            });
            let (pk, _) = self.checks();
            let sent = send(
                &mut a,
                ticket,
                SourceChecks {
                    verifier_public_sec1: &pk,
                    now: NOW,
                    me,
                },
                &self.src,
                1024,
                &mut |_| {},
            );
            drop(a);
            (sent, h.join().unwrap())
        }

        fn target(&self) -> PathBuf {
            self.dest.dir.join("job-1")
        }

        /// One transfer with the chunks on a bound bulk connection; `setup` adjusts A's
        /// control pipe, `op` the bulk connection. Also returns what the listener's
        /// [`Destination::accept_bulk`] said of each bulk connection.
        fn run_bound(&self, ticket: &[u8], setup: impl FnOnce(&mut Pipe), op: FrameOp) -> BoundRun {
            let (mut a, mut b) = pipe();
            setup(&mut a);
            let dest = self.dest.clone();
            let h = std::thread::spawn(move || {
                let r = dest.serve_bound(&mut b, "node-a", NOW);
                drop(b);
                r
            });
            let accepts = std::sync::Arc::new(Mutex::new(Vec::new()));
            let (dest, acc) = (self.dest.clone(), accepts.clone());
            let mut connect = move || -> std::io::Result<Box<dyn Write>> {
                let (bulk_a, bulk_b) = pipe();
                let (dest, acc) = (dest.clone(), acc.clone());
                acc.lock()
                    .unwrap()
                    .push(std::thread::spawn(move || dest.accept_bulk(bulk_b)));
                Ok(Box::new(FrameTamper {
                    inner: Some(bulk_a),
                    op,
                    pre: 0,
                    pending: Vec::new(),
                    held: None,
                    frames: 0,
                    bytes: 0,
                }))
            };
            let (pk, _) = self.checks();
            let checks = SourceChecks {
                verifier_public_sec1: &pk,
                now: NOW,
                me: "node-a",
            };
            let sent = check_source(ticket, checks, &self.src).and_then(|(t, m)| {
                send_bound(&mut a, ticket, t, m, &self.src, 1024, &mut connect, &mut |_| {})
            });
            drop(a);
            let r = h.join().unwrap();
            let accepted = std::mem::take(&mut *accepts.lock().unwrap())
                .into_iter()
                .map(|h| h.join().unwrap())
                .collect();
            (sent, r, accepted)
        }
    }

    #[test]
    fn a_file_changed_after_prepare_is_refused_by_the_destination() {
        // A sends with the manifest from the prepare step and does not hash (B does): a
        // file changed in place since then (same size, so A's size checks pass) streams,
        // and B refuses it by name before anything is placed.
        let w = world(10_000);
        let t = w.ticket(30, "node-a", NOW + 600);
        let prepared = Manifest::build(&w.src).unwrap();
        let mut bytes = std::fs::read(w.src.join("shards/a.bin")).unwrap();
        bytes[5_000] ^= 1;
        std::fs::write(w.src.join("shards/a.bin"), &bytes).unwrap();
        let (mut a, mut b) = pipe();
        let dest = w.dest.clone();
        let h = std::thread::spawn(move || {
            let r = dest.serve(&mut b, "node-a", NOW);
            drop(b);
            r
        });
        let (pk, _) = w.checks();
        let checks = SourceChecks {
            verifier_public_sec1: &pk,
            now: NOW,
            me: "node-a",
        };
        let (ticket, manifest) = check_source_with(&t, checks, &w.src, prepared).unwrap();
        let e = send_checked(&mut a, &t, ticket, manifest, &w.src, 1024, &mut |_| {}).unwrap_err();
        drop(a);
        assert!(
            matches!(&e, MoverError::Refused { check, .. } if check == "file_digest"),
            "{e}"
        );
        let r = h.join().unwrap().unwrap_err();
        assert_eq!(r.check(), "file_digest", "{r}");
        assert!(!w.target().exists(), "nothing placed");
    }

    #[test]
    fn bound_bulk_connection_moves_the_chunks() {
        let w = world(10_000);
        let t = w.ticket(20, "node-a", NOW + 600);
        let (s, r, acc) = w.run_bound(&t, |_| {}, FrameOp::Clean);
        let (s, r) = (s.unwrap(), r.unwrap());
        assert!(s.bulk);
        assert_eq!(acc.len(), 1);
        assert_eq!(acc[0].as_ref().unwrap(), &[20; 16]);
        assert_eq!(s.receipt_bytes, r.receipt_bytes);
        assert_eq!(s.chunks_sent, 10);
        assert_eq!(
            std::fs::read(w.target().join("shards/a.bin")).unwrap(),
            std::fs::read(w.src.join("shards/a.bin")).unwrap()
        );
        // Placed already: the stored receipt comes back on the control connection and no
        // bulk connection is opened.
        let (s, r, acc) = w.run_bound(&t, |_| {}, FrameOp::Clean);
        assert!(s.unwrap().receipt_resent && r.unwrap().receipt_resent);
        assert!(acc.is_empty());
    }

    #[test]
    fn a_bulk_connection_of_another_session_is_refused_and_nothing_is_written() {
        let mut w = world(6000);
        std::sync::Arc::get_mut(&mut w.dest).unwrap().bulk_wait = std::time::Duration::from_millis(300);
        let t = w.ticket(21, "node-a", NOW + 600);
        // A's control connection is another TLS session than B's (a relay, or a bulk
        // connection spliced from elsewhere): its token is not the one B expects.
        let (s, r, acc) = w.run_bound(&t, |a| a.session = [9; 32], FrameOp::Clean);
        assert_eq!(acc.len(), 1);
        assert_eq!(acc[0].as_ref().unwrap_err().check(), "bulk_binding");
        assert_eq!(r.unwrap_err().check(), "bulk_binding");
        let e = s.unwrap_err();
        assert!(e.to_string().contains("bulk_binding"), "{e}");
        assert!(!w.target().exists());
        let staging = staging_dir(&w.dest.dir, &[21; 16]);
        assert!(!staging.join("data/shards/a.bin").exists(), "nothing written");
        assert!(!staging.join("data/meta.json").exists(), "nothing written");
        // The slot is gone with its transfer: a late connection with B's own token is
        // refused too.
        let mut pre = BULK_MAGIC.to_vec();
        pre.extend_from_slice(&[21; 16]);
        pre.extend_from_slice(&[0; 32]);
        let e = w.dest.accept_bulk(Cursor::new(pre.clone())).unwrap_err();
        assert_eq!(e.check(), "bulk_binding");
        pre[0] = 0x16;
        assert_eq!(
            w.dest.accept_bulk(Cursor::new(pre)).unwrap_err().check(),
            "bulk_binding"
        );
        assert_eq!(
            w.dest
                .accept_bulk(Cursor::new(BULK_MAGIC.to_vec()))
                .unwrap_err()
                .check(),
            "bulk_binding"
        );
        // The real session then moves it, from chunk 0.
        let (s, r, _) = w.run_bound(&t, |_| {}, FrameOp::Clean);
        let s = s.unwrap();
        assert!(s.bulk);
        assert_eq!(s.resumed_at, 0);
        assert!(r.unwrap().target.join("shards/a.bin").is_file());
    }

    #[test]
    fn tampering_on_the_bulk_connection_never_reaches_the_target() {
        for (n, (op, check)) in [
            (FrameOp::Flip(2), "chunk_authentication"),
            (FrameOp::Swap(2), "chunk_authentication"),
            (FrameOp::Duplicate(2), "chunk_authentication"),
            (FrameOp::Truncate(3), "stream_truncated"),
        ]
        .into_iter()
        .enumerate()
        {
            let w = world(8000);
            let t = w.ticket(30 + n as u8, "node-a", NOW + 600);
            let (s, r, _) = w.run_bound(&t, |_| {}, op);
            assert!(s.is_err(), "{op:?}");
            assert_eq!(r.unwrap_err().check(), check, "{op:?}");
            assert!(!w.target().exists(), "{op:?}");
            // The staging holds only authenticated bytes; a clean resend completes.
            let (s, r, _) = w.run_bound(&t, |_| {}, FrameOp::Clean);
            let (s, r) = (s.unwrap(), r.unwrap());
            assert!(s.bulk);
            assert_eq!(
                std::fs::read(r.target.join("shards/a.bin")).unwrap(),
                std::fs::read(w.src.join("shards/a.bin")).unwrap(),
                "{op:?}"
            );
        }
    }

    #[test]
    fn a_cut_bulk_connection_resumes_from_the_durable_chunk() {
        let mut w = world(50_000);
        std::sync::Arc::get_mut(&mut w.dest).unwrap().sync_every = 4;
        let t = w.ticket(40, "node-a", NOW + 600);
        let (s, r, _) = w.run_bound(&t, |_| {}, FrameOp::CutAfter(30_000));
        assert!(s.is_err());
        assert_eq!(r.unwrap_err().check(), "stream_truncated");
        assert!(!w.target().exists());
        let (s, r, _) = w.run_bound(&t, |_| {}, FrameOp::Clean);
        let (s, r) = (s.unwrap(), r.unwrap());
        assert!(s.resumed_at >= 20, "resumed at {}", s.resumed_at);
        assert_eq!(s.chunks_sent, 49 - s.resumed_at);
        assert_eq!(
            std::fs::read(r.target.join("shards/a.bin")).unwrap(),
            std::fs::read(w.src.join("shards/a.bin")).unwrap()
        );
    }

    #[test]
    fn a_destination_without_bulk_refuses_an_announced_bulk_connection() {
        // serve (no TLS session to bind to) refuses BULK; A's chunks never go anywhere.
        let w = world(3000);
        let t = w.ticket(41, "node-a", NOW + 600);
        let (mut a, mut b) = pipe();
        let dest = w.dest.clone();
        let h = std::thread::spawn(move || dest.serve(&mut b, "node-a", NOW));
        let (pk, _) = w.checks();
        let checks = SourceChecks {
            verifier_public_sec1: &pk,
            now: NOW,
            me: "node-a",
        };
        let (tk, m) = check_source(&t, checks, &w.src).unwrap();
        let mut connect = || -> std::io::Result<Box<dyn Write>> { Ok(Box::new(std::io::sink())) };
        let s = send_bound(&mut a, &t, tk, m, &w.src, 1024, &mut connect, &mut |_| {});
        drop(a);
        assert_eq!(h.join().unwrap().unwrap_err().check(), "wire_format");
        assert!(s.is_err());
        assert!(!w.target().exists());
    }

    #[test]
    fn moves_bit_identical_with_a_receipt() {
        let w = world(10_000);
        let t = w.ticket(1, "node-a", NOW + 600);
        let (s, r) = w.run(&t, "node-a", |_| {});
        let s = s.unwrap();
        let r = r.unwrap();
        assert_eq!(s.receipt_bytes, r.receipt_bytes);
        assert_eq!(s.total_bytes, 10_012);
        assert_eq!(s.chunks_sent, 10);
        assert_eq!(
            std::fs::read(w.target().join("shards/a.bin")).unwrap(),
            std::fs::read(w.src.join("shards/a.bin")).unwrap()
        );
        Receipt::verify(&s.receipt_bytes, &w.ed_pub).unwrap();
        assert!(!s.receipt_resent && !r.receipt_resent);
        // Single use: the same ticket again moves nothing; B answers with the stored
        // receipt (what a source that lost it needs).
        let (s2, r2) = w.run(&t, "node-a", |_| {});
        let (s2, r2) = (s2.unwrap(), r2.unwrap());
        assert!(s2.receipt_resent && r2.receipt_resent);
        assert_eq!(s2.chunks_sent, 0);
        assert_eq!(s2.receipt_bytes, s.receipt_bytes);
    }

    #[test]
    fn a_lost_receipt_is_resent_to_the_same_source_only() {
        let w = world(10_000);
        let t = w.ticket(8, "node-a", NOW + 600);
        // B places the checkpoint, then the connection breaks before the RECEIPT frame
        // (B's writes after ACCEPT, 13 bytes, fail): A holds no receipt.
        let (s, r) = w.run_as("node-a", &t, "node-a", |_| {}, |b| b.cut_after = Some(13));
        let e = s.unwrap_err();
        assert_eq!(e.check(), "wire_format", "{e}");
        assert_eq!(r.unwrap_err().check(), "io");
        assert!(w.target().join("shards/a.bin").is_file(), "placed");
        // The resend gets the stored receipt, verified by A as usual.
        let (s, r) = w.run(&t, "node-a", |_| {});
        let (s, r) = (s.unwrap(), r.unwrap());
        assert!(s.receipt_resent && r.receipt_resent);
        assert_eq!(s.chunks_sent, 0);
        assert_eq!(s.receipt_bytes, r.receipt_bytes);
        let rc = Receipt::verify(&s.receipt_bytes, &w.ed_pub).unwrap();
        assert_eq!(rc.ticket_id, [8; 16]);
        assert_eq!(rc.bytes, 10_012);
        // Asked again: the same receipt, byte for byte.
        let (s2, _) = w.run(&t, "node-a", |_| {});
        assert_eq!(s2.unwrap().receipt_bytes, s.receipt_bytes);

        // Another node presenting the ticket is refused before anything else.
        let (s2, r2) = w.run(&t, "node-c", |_| {});
        assert!(s2.is_err());
        assert_eq!(r2.unwrap_err().check(), "ticket_source");
        // A ticket with the same id naming another source (which the verifier never
        // issues), presented by that source: not the peer the receipt was for.
        let t_c = w.ticket_for(8, "job-1", "node-c", NOW + 600);
        let (s2, r2) = w.run_as("node-c", &t_c, "node-c", |_| {}, |_| {});
        assert_eq!(r2.unwrap_err().check(), "ticket_replayed");
        assert!(s2.unwrap_err().to_string().contains("ticket_replayed"));
        // The same ticket id over another manifest: a replay, not a receipt.
        std::fs::write(w.src.join("meta.json"), b"{\"step\": 43}").unwrap();
        let t2 = w.ticket(8, "node-a", NOW + 600);
        let (s2, r2) = w.run(&t2, "node-a", |_| {});
        assert_eq!(r2.unwrap_err().check(), "ticket_replayed");
        let e = s2.unwrap_err();
        assert_eq!(e.check(), "destination_refused");
        assert!(e.to_string().contains("ticket_replayed"), "{e}");
        // Without a stored receipt (a placement before receipts were stored): a replay.
        std::fs::remove_file(w.dest.receipt_path(&[8; 16])).unwrap();
        std::fs::write(w.src.join("meta.json"), b"{\"step\": 42}").unwrap();
        let (_, r2) = w.run(&t, "node-a", |_| {});
        assert_eq!(r2.unwrap_err().check(), "ticket_replayed");
    }

    #[test]
    fn a_crash_between_storing_the_receipt_and_the_rename_resumes() {
        let w = world(6000);
        let t = w.ticket(9, "node-a", NOW + 600);
        // Receipt stored, target never renamed into place: B crashed in between.
        let (_, r) = w.run_as("node-a", &t, "node-a", |_| {}, |b| b.cut_after = Some(13));
        assert_eq!(r.unwrap_err().check(), "io");
        let staging = staging_dir(&w.dest.dir, &[9; 16]);
        std::fs::create_dir_all(staging.join("data")).unwrap();
        std::fs::rename(w.target(), staging.join("data")).unwrap();
        std::fs::write(staging.join("progress"), "6\n").unwrap();
        let stale = std::fs::read(w.dest.receipt_path(&[9; 16])).unwrap();
        // The resend resumes at the end (nothing to send), places, and stores and sends a
        // freshly signed receipt.
        let (s, r) = w.run(&t, "node-a", |_| {});
        let (s, r) = (s.unwrap(), r.unwrap());
        assert!(!s.receipt_resent);
        assert_eq!((s.resumed_at, s.chunks_sent), (6, 0));
        assert!(r.target.join("shards/a.bin").is_file());
        assert!(!staging.exists());
        // (The same bytes here: the same time and a deterministic Ed25519 signature.)
        assert_eq!(std::fs::read(w.dest.receipt_path(&[9; 16])).unwrap(), stale);
        assert!(stale.ends_with(&s.receipt_bytes));
        Receipt::verify(&s.receipt_bytes, &w.ed_pub).unwrap();
    }

    #[test]
    fn refusals_name_their_check() {
        let w = world(3000);
        // Another node presenting the ticket.
        let (_, r) = w.run(&w.ticket(2, "node-a", NOW + 600), "node-c", |_| {});
        assert_eq!(r.unwrap_err().check(), "ticket_source");
        // Expired: the source refuses before sending.
        let (s, _) = w.run(&w.ticket(3, "node-a", NOW), "node-a", |_| {});
        assert_eq!(s.unwrap_err().check(), "ticket_expired");
        // A ticket for another source is refused by the source itself.
        let (s, _) = w.run(&w.ticket(4, "node-x", NOW + 600), "node-x", |_| {});
        assert_eq!(s.unwrap_err().check(), "ticket_source");
        assert!(!w.target().exists());
    }

    /// Issue 19 item 3: a ticket issued before its source was removed stayed good at
    /// the destination until it expired. The verifier's deny list ends it at once, and
    /// the source is told why.
    #[test]
    fn a_removed_source_is_refused_whatever_its_ticket() {
        use crate::deny::{Denial, DeniedNode, DenyList};
        let w = world(3000);
        let ticket = w.ticket(5, "node-a", NOW + 600);
        let list =
            |at: i64, nodes: Vec<DeniedNode>| DenyList::new(at, nodes).unwrap().sign(&w.verifier).unwrap();
        let removed = DeniedNode {
            id: "node-a".into(),
            denial: Denial::Removed,
            since: NOW - 5,
        };
        assert!(w.dest.deny.offer(&list(NOW * 1000, vec![removed]), NOW).unwrap());
        let (s, r) = w.run(&ticket, "node-a", |_| {});
        assert_eq!(r.unwrap_err().check(), "node_removed");
        let s = s.unwrap_err();
        assert!(
            matches!(&s, MoverError::Refused { check, .. } if check == "node_removed"),
            "{s}"
        );
        assert!(!w.target().exists());
        // Enrolled again (a newer list without it): the same ticket, unused, goes through.
        assert!(w.dest.deny.offer(&list(NOW * 1000 + 1, vec![]), NOW).unwrap());
        let (s, r) = w.run(&ticket, "node-a", |_| {});
        s.unwrap();
        r.unwrap();
    }

    #[test]
    fn tampered_chunks_never_reach_the_target() {
        let w = world(8000);
        // Flip one byte inside the third chunk frame (after HELLO+OFFER, which are small).
        let t = w.ticket(5, "node-a", NOW + 600);
        let offer_len = 5 + HELLO.len() + 5 + 600;
        let (s, r) = w.run(&t, "node-a", |a| {
            let mut done = false;
            a.tamper = Some(Box::new(move |at, v| {
                if !done && at > offer_len + 2 * 1045 && v.len() > 100 {
                    v[50] ^= 1;
                    done = true;
                }
            }));
        });
        assert!(s.is_err());
        assert_eq!(r.unwrap_err().check(), "chunk_authentication");
        assert!(!w.target().exists());
        // The staging holds only authenticated bytes; a clean resend resumes and completes.
        let (s, r) = w.run(&t, "node-a", |_| {});
        let r = r.unwrap();
        assert!(s.is_ok());
        assert_eq!(
            std::fs::read(r.target.join("shards/a.bin")).unwrap(),
            std::fs::read(w.src.join("shards/a.bin")).unwrap()
        );
    }

    #[test]
    fn cut_connection_resumes_from_the_durable_chunk() {
        let mut w = world(50_000);
        std::sync::Arc::get_mut(&mut w.dest).unwrap().sync_every = 4;
        let t = w.ticket(6, "node-a", NOW + 600);
        let (s, r) = w.run(&t, "node-a", |a| a.cut_after = Some(30_000));
        assert!(s.is_err());
        assert_eq!(r.unwrap_err().check(), "stream_truncated");
        assert!(!w.target().exists());
        let (s, r) = w.run(&t, "node-a", |_| {});
        let (s, r) = (s.unwrap(), r.unwrap());
        assert!(s.resumed_at >= 20, "resumed at {}", s.resumed_at);
        assert_eq!(s.chunks_sent, 49 - s.resumed_at);
        assert_eq!(
            std::fs::read(r.target.join("shards/a.bin")).unwrap(),
            std::fs::read(w.src.join("shards/a.bin")).unwrap()
        );
    }

    #[test]
    fn crashes_around_the_replay_record_neither_block_nor_reopen_a_ticket() {
        let w = world(5000);
        // A start that crashed after recording the id (the old order) and creating the
        // staging directory, before its first progress file: the resend starts over.
        let t = w.ticket(7, "node-a", NOW + 600);
        let id = [7u8; 16];
        w.dest.seen.lock().unwrap().check_and_record(&id).unwrap();
        std::fs::create_dir(staging_dir(&w.dest.dir, &id)).unwrap();
        let (s, r) = w.run(&t, "node-a", |_| {});
        assert_eq!(s.unwrap().resumed_at, 0);
        r.unwrap();
        // A completed move that crashed before removing its staging directory (progress
        // record left, data already renamed into the target): the stored receipt, and the
        // leftover goes.
        let staging = staging_dir(&w.dest.dir, &id);
        std::fs::create_dir(&staging).unwrap();
        std::fs::write(staging.join("progress"), "5\n").unwrap();
        let (s, r) = w.run(&t, "node-a", |_| {});
        assert!(s.unwrap().receipt_resent && r.unwrap().receipt_resent);
        assert!(!staging.exists());
        assert!(w.target().join("shards/a.bin").is_file());
    }

    #[test]
    fn an_aligned_frame_body_starts_on_a_block_boundary_and_reuse_keeps_it() {
        let mut wire = Vec::new();
        for body in [vec![7u8; 5000], vec![9u8; 4096]] {
            wire.push(K_CHUNK);
            wire.extend_from_slice(&(body.len() as u32).to_be_bytes());
            wire.extend_from_slice(&body);
        }
        let mut r = Cursor::new(&wire);
        let mut buf = Vec::new();
        let (kind, at) = read_frame_aligned(&mut r, 5000, &mut buf).unwrap().unwrap();
        assert_eq!(kind, K_CHUNK);
        assert!(at < crate::direct::ALIGN);
        assert_eq!(buf[at..].as_ptr().align_offset(crate::direct::ALIGN), 0);
        assert_eq!(&buf[at..], &[7u8; 5000][..]);
        let (_, again) = read_frame_aligned(&mut r, 5000, &mut buf).unwrap().unwrap();
        assert_eq!((again, &buf[again..]), (at, &[9u8; 4096][..]));
        assert_eq!(read_frame_aligned(&mut r, 5000, &mut buf).unwrap(), None);
        // Over the limit: refused before any body byte is read.
        let mut r = Cursor::new(&wire);
        assert!(read_frame_aligned(&mut r, 4999, &mut buf).is_err());
    }

    #[test]
    fn frames_are_bounded() {
        let mut buf = Vec::new();
        let mut big = Vec::new();
        write_frame(&mut big, K_CHUNK, &[0u8; 100]).unwrap();
        let e = read_frame(&mut Cursor::new(&big), 99, &mut buf).unwrap_err();
        assert_eq!(e.check(), "wire_format");
        assert_eq!(
            read_frame(&mut Cursor::new(&big), 100, &mut buf).unwrap(),
            Some(K_CHUNK)
        );
        assert_eq!(
            read_frame(&mut Cursor::new(&[] as &[u8]), 10, &mut buf).unwrap(),
            None
        );
        let e = read_frame(&mut Cursor::new(&big[..3]), 10, &mut buf).unwrap_err();
        assert_eq!(e.check(), "wire_format");
        assert_eq!(parse_refusal(b"\x01").check(), "wire_format");
        let r = parse_refusal(&refusal_body(&MoverError::WrongRecipient));
        assert_eq!(r.check(), "destination_refused");
        assert!(r.to_string().contains("wrong_recipient"));
    }
}
