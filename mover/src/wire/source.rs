//! The source's side of a move: check the ticket and the manifest, offer, send the
//! sealed chunks (on the control connection or a bound bulk one), check the receipt.

use super::*;

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
