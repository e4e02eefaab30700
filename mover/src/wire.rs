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

mod destination;
mod source;
pub use destination::*;
pub use source::*;

#[cfg(test)]
mod tests;
