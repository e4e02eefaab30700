//! The encrypted stream as a file, for air-gapped moves on removable media.
//!
//! ```text
//! "CUSTODYMV1\0\0"            12 bytes
//! header length               u32 big-endian, at most MAX_EXPORT_HEADER
//! header                      canonical CBOR map {1: ticket (COSE_Sign1 bytes),
//!                               2: enc bstr(32), 3: wrapped key bstr(48),
//!                               4: manifest (canonical CBOR bytes), 5: chunk size}
//! records                     (u32 big-endian length || chunk ciphertext) x n
//! ```
//! The stream header is not stored: it is rebuilt from the ticket id, the manifest's
//! digest and total size and the chunk size, so nothing in the file can disagree with it.
//! Only the ticketed destination can import: anyone else fails `ticket_destination`, or
//! with a forged destination name `wrong_recipient` (the HPKE open).

use crate::error::MoverError;
use crate::keywrap::{self, DataKey, WrappedKey, ENC_LEN, WRAPPED_LEN};
use crate::manifest::Manifest;
use crate::receipt::Receipt;
use crate::receive::{staging_dir, Receiver};
use crate::send::Sender;
use crate::stream::StreamHeader;
use crate::ticket::{SeenTickets, Ticket};
use ciborium::value::Value;
use rustls::crypto::hpke::HpkePrivateKey;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

pub const MAGIC: &[u8; 12] = b"CUSTODYMV1\0\0";
/// Largest header accepted (a manifest of about half a million files).
pub const MAX_EXPORT_HEADER: u32 = 64 << 20;

fn fmt_err(msg: impl Into<String>) -> MoverError {
    MoverError::ExportFormat(msg.into())
}

fn io_err(e: std::io::Error) -> MoverError {
    MoverError::io(Path::new("<export file>"), e)
}

/// The export file's header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportHeader {
    pub ticket: Vec<u8>,
    pub wrapped: WrappedKey,
    pub manifest: Vec<u8>,
    pub chunk_size: u32,
}

impl ExportHeader {
    pub fn to_cbor(&self) -> Result<Vec<u8>, MoverError> {
        let m = Value::Map(vec![
            (Value::Integer(1.into()), Value::Bytes(self.ticket.clone())),
            (Value::Integer(2.into()), Value::Bytes(self.wrapped.enc.to_vec())),
            (
                Value::Integer(3.into()),
                Value::Bytes(self.wrapped.ciphertext.to_vec()),
            ),
            (Value::Integer(4.into()), Value::Bytes(self.manifest.clone())),
            (Value::Integer(5.into()), Value::Integer(self.chunk_size.into())),
        ]);
        let mut out = Vec::new();
        ciborium::into_writer(&m, &mut out).map_err(|e| fmt_err(e.to_string()))?;
        Ok(out)
    }

    /// Parse the CBOR header (pure; canonical encoding only).
    pub fn from_cbor(bytes: &[u8]) -> Result<Self, MoverError> {
        let v: Value = ciborium::from_reader(bytes).map_err(|e| fmt_err(format!("CBOR: {e}")))?;
        let Value::Map(m) = v else {
            return Err(fmt_err("header is not a map"));
        };
        let vals: Vec<&Value> = m
            .iter()
            .enumerate()
            .map(|(i, (k, v))| match k {
                Value::Integer(k) if i128::from(*k) == i as i128 + 1 => Ok(v),
                _ => Err(fmt_err(format!("key {} missing or out of order", i + 1))),
            })
            .collect::<Result<_, _>>()?;
        let [Value::Bytes(ticket), Value::Bytes(enc), Value::Bytes(ct), Value::Bytes(manifest), Value::Integer(cs)] =
            vals.as_slice()
        else {
            return Err(fmt_err("want {1: bstr, 2: bstr, 3: bstr, 4: bstr, 5: uint}"));
        };
        let h = Self {
            ticket: ticket.clone(),
            wrapped: WrappedKey {
                enc: enc
                    .as_slice()
                    .try_into()
                    .map_err(|_| fmt_err(format!("enc has {} bytes, want {ENC_LEN}", enc.len())))?,
                ciphertext: ct.as_slice().try_into().map_err(|_| {
                    fmt_err(format!("wrapped key has {} bytes, want {WRAPPED_LEN}", ct.len()))
                })?,
            },
            manifest: manifest.clone(),
            chunk_size: u32::try_from(*cs).map_err(|_| fmt_err("chunk size out of range"))?,
        };
        if h.to_cbor()? != bytes {
            return Err(fmt_err("header is not the canonical encoding"));
        }
        Ok(h)
    }
}

/// Read magic, length and header from the start of an export file.
pub fn read_header<R: Read>(r: &mut R) -> Result<ExportHeader, MoverError> {
    let mut magic = [0u8; 12];
    r.read_exact(&mut magic)
        .map_err(|_| fmt_err("shorter than the magic"))?;
    if &magic != MAGIC {
        return Err(fmt_err("not a Custody export file (magic)"));
    }
    let mut len = [0u8; 4];
    r.read_exact(&mut len).map_err(|_| fmt_err("no header length"))?;
    let len = u32::from_be_bytes(len);
    if len > MAX_EXPORT_HEADER {
        return Err(fmt_err(format!(
            "header of {len} bytes, at most {MAX_EXPORT_HEADER}"
        )));
    }
    let mut buf = Vec::new();
    r.take(u64::from(len)).read_to_end(&mut buf).map_err(io_err)?;
    if buf.len() != len as usize {
        return Err(fmt_err("input ends inside the header"));
    }
    ExportHeader::from_cbor(&buf)
}

/// What an export wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSummary {
    pub ticket_id: [u8; 16],
    pub files: usize,
    pub bytes: u64,
    pub chunks: u64,
}

/// Write an export file for a verified ticket: the checkpoint's manifest must be the one
/// the ticket names; the data key is wrapped to the ticket's destination key.
pub fn export<W: Write>(
    ticket_bytes: &[u8],
    verifier_public_sec1: &[u8],
    now: i64,
    checkpoint_dir: &Path,
    chunk_size: u32,
    w: &mut W,
) -> Result<ExportSummary, MoverError> {
    let ticket = Ticket::verify(ticket_bytes, verifier_public_sec1, now)?;
    let manifest = Manifest::build(checkpoint_dir)?;
    export_checked(ticket_bytes, ticket, manifest, checkpoint_dir, chunk_size, w)
}

/// [`export`] for a ticket already verified and a manifest already built (the source
/// agent's, from when the move was prepared: see `wire::check_source_with`), so the
/// checkpoint is read once. The manifest must be the one the ticket names; every file's
/// digest is checked again while it is streamed, and a file that changed stops the export
/// with `manifest_changed` before the chunk that ends it is written.
pub fn export_checked<W: Write>(
    ticket_bytes: &[u8],
    ticket: Ticket,
    manifest: Manifest,
    checkpoint_dir: &Path,
    chunk_size: u32,
    w: &mut W,
) -> Result<ExportSummary, MoverError> {
    let md = manifest.digest()?;
    if md != ticket.manifest_digest {
        return Err(MoverError::ManifestDigest(
            "the checkpoint is not the one the ticket names".into(),
        ));
    }
    let sh = StreamHeader::new(ticket.id, md, chunk_size, manifest.total_bytes())?;
    let key = DataKey::generate()?;
    let wrapped = keywrap::wrap(&key, &ticket.dst_x25519, &ticket.id, &sh.to_bytes())?;
    let header = ExportHeader {
        ticket: ticket_bytes.to_vec(),
        wrapped,
        manifest: manifest.to_cbor()?,
        chunk_size,
    }
    .to_cbor()?;
    let hlen = u32::try_from(header.len()).map_err(|_| fmt_err("header too long"))?;
    w.write_all(MAGIC)
        .and_then(|_| w.write_all(&hlen.to_be_bytes()))
        .and_then(|_| w.write_all(&header))
        .map_err(io_err)?;
    let files = manifest.files.len();
    let bytes = manifest.total_bytes();
    let mut sender = Sender::new(checkpoint_dir, manifest, sh, &key)?;
    let chunks = sender.write_records(w)?;
    w.flush().map_err(io_err)?;
    Ok(ExportSummary {
        ticket_id: ticket.id,
        files,
        bytes,
        chunks,
    })
}

/// The importing node's identity and replay state.
#[derive(Debug)]
pub struct ImportChecks<'a> {
    pub verifier_public_sec1: &'a [u8],
    pub now: i64,
    /// This node's id (the ticket's destination must equal it).
    pub me: &'a str,
    pub my_x25519: [u8; 32],
    pub seen: &'a mut SeenTickets,
    /// The verifier's deny list as this node knows it: a file from a removed or
    /// revoked source is refused (`node_removed`, `revoked`) even with a good ticket.
    pub deny: Option<&'a crate::deny::DenyState>,
}

/// Import an export file into `dest_dir` (target `<dest_dir>/<job>` unless given).
/// Checks, in order: `export_format`, `ticket_format`, `ticket_signature`,
/// `ticket_expired`, `ticket_destination`, `node_removed` / `revoked`, `ticket_replayed`, `manifest_format`,
/// `manifest_digest`, `stream_header`, `wrong_recipient`, then per chunk
/// `chunk_length`/`chunk_authentication`, `stream_extra`, `stream_truncated`,
/// `file_digest`. The ticket id is recorded as used once the checkpoint is in place.
/// On failure the target does not exist; the staging directory holds only authenticated
/// bytes (a later import of the same ticket starts it afresh).
pub fn import<R: Read>(
    r: &mut R,
    checks: ImportChecks<'_>,
    my_x25519_secret: &HpkePrivateKey,
    dest_dir: &Path,
    target: Option<&Path>,
) -> Result<(PathBuf, Receipt), MoverError> {
    let h = read_header(r)?;
    let ticket = Ticket::verify(&h.ticket, checks.verifier_public_sec1, checks.now)?;
    ticket.verify_for(checks.me, &checks.my_x25519)?;
    if let Some(d) = checks.deny {
        d.check(&ticket.source)?;
    }
    if checks.seen.contains(&ticket.id) {
        return Err(MoverError::TicketReplayed(ticket.id_hex()));
    }
    let manifest = Manifest::from_cbor(&h.manifest)?;
    let md = manifest.digest()?;
    if md != ticket.manifest_digest {
        return Err(MoverError::ManifestDigest(
            "the file's manifest is not the one the ticket names".into(),
        ));
    }
    let sh = StreamHeader::new(ticket.id, md, h.chunk_size, manifest.total_bytes())?;
    let key = keywrap::unwrap(&h.wrapped, my_x25519_secret, &ticket.id, &sh.to_bytes())?;

    // An earlier failed import of this (unused) ticket left authenticated bytes only;
    // an import is not resumable, so start afresh.
    let staging = staging_dir(dest_dir, &ticket.id);
    if staging.symlink_metadata().is_ok() {
        std::fs::remove_dir_all(&staging).map_err(|e| MoverError::io(&staging, e))?;
    }
    let mut rx = Receiver::create(dest_dir, target, &ticket, manifest, sh, &key)?;
    rx.read_records(r)?;
    let done = rx.finish(checks.now)?;
    checks.seen.check_and_record(&ticket.id)?;
    Ok(done)
}

#[cfg(test)]
pub(crate) mod tests;
