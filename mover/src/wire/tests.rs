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
        let sent = check_source(ticket, checks, &self.src)
            .and_then(|(t, m)| send_bound(&mut a, ticket, t, m, &self.src, 1024, &mut connect, &mut |_| {}));
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
    let list = |at: i64, nodes: Vec<DeniedNode>| DenyList::new(at, nodes).unwrap().sign(&w.verifier).unwrap();
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

/// The fuzz target's connection (`fuzz/fuzz_targets/mover_wire.rs`): reads the seed and
/// keeps what the destination answers.
struct Replay<'a> {
    input: &'a [u8],
    answer: Vec<u8>,
}

impl Read for Replay<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.input.read(buf)
    }
}

impl Write for Replay<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.answer.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The fuzz target's verifier key: the P-256 generator, whose private key (1) signs no
/// seed.
const P256_GX: &str = "6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296";
const P256_GY: &str = "4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5";

/// The destination of the `mover_wire` fuzz target serving `seed` from node-a: its
/// error, and the check its REFUSE frame names.
fn serve_as_fuzz_target(seed: &[u8]) -> (MoverError, String) {
    let target = include_str!("../../../fuzz/fuzz_targets/mover_wire.rs");
    assert!(
        target.contains(P256_GX) && target.contains(P256_GY) && target.contains("\"node-b\""),
        "the fuzz target's destination changed: update these seeds"
    );
    let g = hex::decode(format!("04{P256_GX}{P256_GY}")).unwrap();
    // A usable key: a refusal at the signature is the signature's, not the key's.
    custody_types::VerifierKey::from_sec1(&g).unwrap();
    let d = tempfile::tempdir().unwrap();
    let (public, secret) = keywrap::generate_x25519().unwrap();
    let dest = Destination::new(
        "node-b".into(),
        public,
        secret,
        g,
        d.path().to_path_buf(),
        Box::new(|_| [0u8; 64]),
    )
    .unwrap();
    let mut conn = Replay {
        input: seed,
        answer: Vec::new(),
    };
    let e = dest.serve(&mut conn, "node-a", NOW).unwrap_err();
    let mut answer = Cursor::new(&conn.answer);
    let mut buf = Vec::new();
    assert_eq!(
        read_frame(&mut answer, MAX_SMALL, &mut buf).unwrap(),
        Some(K_REFUSE)
    );
    assert_eq!(read_frame(&mut answer, MAX_SMALL, &mut buf).unwrap(), None);
    let MoverError::Refused { check, .. } = parse_refusal(&buf) else {
        panic!("REFUSE body");
    };
    assert!(!d.path().join("job-1").exists(), "nothing placed");
    (e, check)
}

fn frames_of(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    let mut buf = Vec::new();
    while let Some(kind) = read_frame(&mut bytes, MAX_OFFER, &mut buf).unwrap() {
        out.push((kind, buf.clone()));
    }
    out
}

fn wire_of(frames: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (kind, body) in frames {
        write_frame(&mut out, *kind, body).unwrap();
    }
    out
}

/// Seeds for the `mover_wire` fuzz target: what a real source writes to a destination
/// (HELLO, an OFFER with a structurally valid ticket, the CHUNKs), with tickets signed by
/// a key other than the target's, so each is refused at the ticket's signature (or,
/// for the variants, at the check named), never past it.
#[test]
fn fuzz_seeds_for_mover_wire_are_well_formed() {
    use crate::ticket::PROFILE;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_FIXED};
    use custody_types::envelope::{self, EnvelopeError, Profile};

    // A real move of a small checkpoint (3 chunks of 1024), every byte A wrote kept.
    let w = world(3000);
    let t = w.ticket(0x5e, "node-a", NOW + 600);
    let wrote = Arc::new(Mutex::new(Vec::new()));
    let rec = wrote.clone();
    let (s, r) = w.run(&t, "node-a", |a| {
        a.tamper = Some(Box::new(move |_, v| rec.lock().unwrap().extend_from_slice(v)));
    });
    s.unwrap();
    r.unwrap();
    let real = std::mem::take(&mut *wrote.lock().unwrap());
    let frames = frames_of(&real);
    let kinds: Vec<u8> = frames.iter().map(|(k, _)| *k).collect();
    assert_eq!(kinds, [K_HELLO, K_OFFER, K_CHUNK, K_CHUNK, K_CHUNK]);
    assert_eq!(ExportHeader::from_cbor(&frames[1].1).unwrap().ticket, t);

    // The same move with its ticket sealed again: `profile`, `kid`, signed by the
    // verifier of `w` (not the generator's key).
    let (pk, _) = w.checks();
    let payload = Ticket::verify(&t, &pk, NOW).unwrap().payload().unwrap();
    let resealed = |profile: &Profile, kid: Vec<u8>| -> Vec<(u8, Vec<u8>)> {
        let ticket = envelope::seal(profile, kid, payload.clone(), |tbs| {
            w.verifier
                .sign(&SystemRandom::new(), tbs)
                .ok()
                .map(|s| s.as_ref().to_vec())
        })
        .unwrap();
        // A good signature of w's verifier, whatever kid it names.
        envelope::open(&ticket, profile, |_, tbs, sig| {
            UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &pk)
                .verify(tbs, sig)
                .map_err(|_| EnvelopeError::Signature("w's key".into()))
        })
        .unwrap();
        let mut h = ExportHeader::from_cbor(&frames[1].1).unwrap();
        h.ticket = ticket;
        let mut f = frames.clone();
        f[1].1 = h.to_cbor().unwrap();
        f
    };
    let generator = hex::decode(format!("04{P256_GX}{P256_GY}")).unwrap();
    let generator_kid = custody_types::VerifierKey::from_sec1(&generator)
        .unwrap()
        .kid()
        .to_vec();
    // Names the target's key, so the ECDSA verification itself runs and fails.
    let with_generator_kid = resealed(&PROFILE, generator_kid);
    let without_kid = resealed(&PROFILE, Vec::new());
    // Without a kid it is a good ticket of w's verifier.
    let h = ExportHeader::from_cbor(&without_kid[1].1).unwrap();
    assert_eq!(
        Ticket::verify(&h.ticket, &pk, NOW).unwrap().payload().unwrap(),
        payload
    );
    let other_type = resealed(
        &Profile {
            content_type: "application/eat+cwt",
            ..PROFILE
        },
        Vec::new(),
    );
    let mut offer_as_chunk = frames.clone();
    offer_as_chunk[1].0 = K_CHUNK;
    let mut then_garbage = wire_of(&with_generator_kid[..2]);
    then_garbage.extend_from_slice(&[K_CHUNK, 0xff, 0xff, 0xff, 0xff]);
    then_garbage.extend_from_slice(b"\x00not a frame\xff\xfe");

    let kid_mismatch = "the kid is not the verifier key's";
    let bad_signature = "signature does not verify";
    let seeds: [(&str, Vec<u8>, &str, &str); 6] = [
        ("real_source", real.clone(), "ticket_signature", kid_mismatch),
        (
            "generator_kid",
            wire_of(&with_generator_kid),
            "ticket_signature",
            bad_signature,
        ),
        ("no_kid", wire_of(&without_kid), "ticket_signature", bad_signature),
        (
            "other_content_type",
            wire_of(&other_type),
            "content_type",
            "application/eat+cwt",
        ),
        (
            "offer_as_chunk",
            wire_of(&offer_as_chunk),
            "wire_format",
            "expected OFFER",
        ),
        (
            "offer_then_garbage",
            then_garbage,
            "ticket_signature",
            bad_signature,
        ),
    ];
    for (name, seed, check, detail) in seeds {
        let (e, refused) = serve_as_fuzz_target(&seed);
        assert_eq!((e.check(), refused.as_str()), (check, check), "{name}: {e}");
        assert!(e.to_string().contains(detail), "{name}: {e}");
        crate::export::tests::write_fuzz_seed("mover_wire", name, &seed);
    }
}
