//! The destination's side of a move: check the offer and the ticket, stage and
//! authenticate every chunk, place the checkpoint atomically, sign and keep the receipt.

use super::*;

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

    pub(crate) fn receipt_path(&self, id: &[u8; 16]) -> PathBuf {
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
