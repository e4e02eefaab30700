//! End-to-end moves on real files: sender -> (tampering) -> receiver, resume, export and
//! import, receipts.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use custody_mover::export::{self, ImportChecks};
use custody_mover::keywrap::{self, DataKey};
use custody_mover::manifest::Manifest;
use custody_mover::receipt::Receipt;
use custody_mover::receive::{staging_dir, Receiver};
use custody_mover::send::Sender;
use custody_mover::stream::StreamHeader;
use custody_mover::ticket::{SeenTickets, Ticket};
use custody_mover::MoverError;
use custody_types::FailedCheck;
use std::path::Path;

const CHUNK: u32 = 64 * 1024;
const NOW: i64 = 1_800_000_000;

fn random(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    SystemRandom::new().fill(&mut v).unwrap();
    v
}

/// A checkpoint: a few-MB random shard, small files, an empty file, a nested directory.
fn checkpoint(dir: &Path) {
    std::fs::create_dir_all(dir.join("shards/deep")).unwrap();
    std::fs::write(
        dir.join("shards/model-00001.safetensors"),
        random(3 * 1024 * 1024 + 12345),
    )
    .unwrap();
    std::fs::write(dir.join("shards/deep/optimizer.pt"), random(200_000)).unwrap();
    std::fs::write(dir.join("config.json"), br#"{"hidden": 4096}"#).unwrap();
    std::fs::write(dir.join("EMPTY"), b"").unwrap();
    std::fs::write(dir.join("zz-last.bin"), random(CHUNK as usize)).unwrap();
}

fn same_tree(a: &Path, b: &Path) {
    let ma = Manifest::build(a).unwrap();
    let mb = Manifest::build(b).unwrap();
    assert_eq!(ma, mb);
    for f in &ma.files {
        assert_eq!(
            std::fs::read(a.join(&f.path)).unwrap(),
            std::fs::read(b.join(&f.path)).unwrap()
        );
    }
}

struct Setup {
    _tmp: tempfile::TempDir,
    src: std::path::PathBuf,
    dest: std::path::PathBuf,
    manifest: Manifest,
    ticket: Ticket,
    header: StreamHeader,
    key: DataKey,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let dest = tmp.path().join("dest");
    std::fs::create_dir(&src).unwrap();
    std::fs::create_dir(&dest).unwrap();
    checkpoint(&src);
    let manifest = Manifest::build(&src).unwrap();
    let ticket = ticket_for(&manifest, [0x5a; 16], [1; 32], [2; 32]);
    let header = StreamHeader::new(
        ticket.id,
        manifest.digest().unwrap(),
        CHUNK,
        manifest.total_bytes(),
    )
    .unwrap();
    Setup {
        _tmp: tmp,
        src,
        dest,
        manifest,
        ticket,
        header,
        key: DataKey::generate().unwrap(),
    }
}

fn ticket_for(m: &Manifest, id: [u8; 16], x: [u8; 32], ed: [u8; 32]) -> Ticket {
    Ticket {
        id,
        job: "job-7".into(),
        source: "node-a".into(),
        destination: "node-b".into(),
        dst_x25519: x,
        dst_ed25519: ed,
        policy_id: "p".into(),
        policy_digest: [3; 32],
        manifest_digest: m.digest().unwrap(),
        issued_at: NOW - 10,
        expires_at: NOW + 600,
    }
}

fn sealed(s: &Setup) -> Vec<Vec<u8>> {
    let mut tx = Sender::new(&s.src, s.manifest.clone(), s.header, &s.key).unwrap();
    let mut out = Vec::new();
    while let Some((i, c)) = tx.next_chunk().unwrap() {
        assert_eq!(i as usize, out.len());
        out.push(c);
    }
    out
}

fn receiver(s: &Setup) -> Receiver {
    Receiver::create(&s.dest, None, &s.ticket, s.manifest.clone(), s.header, &s.key).unwrap()
}

/// Feed chunks in the given order; return the first error (from a chunk or the finish).
fn deliver(s: &Setup, chunks: &[Vec<u8>]) -> Result<(), MoverError> {
    let mut rx = receiver(s);
    rx.set_sync_every(3);
    for c in chunks {
        rx.write_chunk(rx.resume_point(), c)?;
    }
    rx.finish(NOW).map(|_| ())
}

/// After a refused stream: no target, and every staged file is a prefix of the real one
/// (authenticated bytes only).
fn nothing_damaged_visible(s: &Setup) {
    assert!(!s.dest.join("job-7").exists(), "target must not exist");
    let data = staging_dir(&s.dest, &s.ticket.id).join("data");
    for f in &s.manifest.files {
        let staged = data.join(&f.path);
        if staged.exists() {
            let got = std::fs::read(&staged).unwrap();
            let want = std::fs::read(s.src.join(&f.path)).unwrap();
            assert!(want.starts_with(&got), "{} holds unauthenticated bytes", f.path);
        }
    }
}

/// Chunks handed over as owned buffers, as the network receiver does, written past the
/// page cache (the default) or through it: the same files either way, and the writer
/// hands spent buffers back for the next frames.
#[test]
fn owned_chunks_arrive_identical_past_the_page_cache_or_through_it() {
    for direct in [true, false] {
        let s = setup();
        let chunks = sealed(&s);
        let mut rx = receiver(&s);
        rx.set_direct_io(direct);
        rx.set_sync_every(7);
        for (i, c) in chunks.iter().enumerate() {
            let mut buf = rx.spare_buffer();
            assert!(buf.is_empty());
            buf.extend_from_slice(c);
            rx.write_chunk_owned(i as u64, buf).unwrap();
            if i == chunks.len() / 2 {
                // Every write before it is done, so its buffer came back.
                rx.make_durable().unwrap();
                assert!(
                    rx.spare_buffer().capacity() >= c.len() - 16,
                    "no buffer came back"
                );
            }
        }
        let (target, _) = rx.finish(NOW).unwrap();
        same_tree(&s.src, &target);
    }
}

#[test]
fn round_trip_with_receipt() {
    let s = setup();
    let chunks = sealed(&s);
    assert_eq!(chunks.len() as u64, s.header.chunk_count());
    assert!(chunks.len() > 50);
    let mut rx = receiver(&s);
    for (i, c) in chunks.iter().enumerate() {
        rx.write_chunk(i as u64, c).unwrap();
    }
    let (target, receipt) = rx.finish(NOW).unwrap();
    assert_eq!(target, s.dest.join("job-7"));
    same_tree(&s.src, &target);
    assert!(!staging_dir(&s.dest, &s.ticket.id).exists());
    assert_eq!(receipt.bytes, s.manifest.total_bytes());
    assert_eq!(receipt.manifest_digest, s.ticket.manifest_digest);

    let ed = Ed25519KeyPair::generate().unwrap();
    let pk: [u8; 32] = ed.public_key().as_ref().try_into().unwrap();
    let signed = receipt.sign(&ed).unwrap();
    assert_eq!(Receipt::verify(&signed, &pk).unwrap(), receipt);

    // A second transfer into the same place is refused (never overwrites).
    assert!(Receiver::create(&s.dest, None, &s.ticket, s.manifest.clone(), s.header, &s.key).is_err());
}

#[test]
fn tampering_detected_before_anything_is_placed() {
    let s = setup();
    let good = sealed(&s);
    let n = good.len();
    let cases: Vec<(&str, Vec<Vec<u8>>, &str)> = vec![
        (
            "flip",
            {
                let mut c = good.clone();
                c[10][1000] ^= 0x04;
                c
            },
            "chunk_authentication",
        ),
        (
            "truncate last chunk",
            {
                let mut c = good.clone();
                let l = c[n - 1].len();
                c[n - 1].truncate(l - 1);
                c
            },
            "chunk_length",
        ),
        ("drop last chunk", good[..n - 1].to_vec(), "stream_truncated"),
        (
            "reorder",
            {
                let mut c = good.clone();
                c.swap(5, 6);
                c
            },
            "chunk_authentication",
        ),
        (
            "duplicate",
            {
                let mut c = good.clone();
                c.insert(8, c[7].clone());
                c
            },
            "chunk_authentication",
        ),
        (
            "extra after last",
            {
                let mut c = good.clone();
                c.push(good[n - 1].clone());
                c
            },
            "stream_extra",
        ),
    ];
    for (what, chunks, want) in cases {
        let s2 = Setup {
            _tmp: tempfile::tempdir().unwrap(),
            src: s.src.clone(),
            dest: tempfile::tempdir().unwrap().keep(),
            manifest: s.manifest.clone(),
            ticket: s.ticket.clone(),
            header: s.header,
            key: s.key.clone(),
        };
        let e = deliver(&s2, &chunks).unwrap_err();
        assert_eq!(e.check(), want, "{what}: {e}");
        nothing_damaged_visible(&s2);
        std::fs::remove_dir_all(&s2.dest).unwrap();
    }
}

#[test]
fn sender_lying_about_content_is_caught_by_file_digest() {
    // An authenticated stream whose bytes are not the manifest's (a buggy or hostile
    // source): the per-file SHA-256 refuses it before placement.
    let s = setup();
    std::fs::write(s.src.join("config.json"), br#"{"hidden": 4097}"#).unwrap();
    // Our Sender checks digests while reading and stops first (manifest_changed)...
    let mut tx = Sender::new(&s.src, s.manifest.clone(), s.header, &s.key).unwrap();
    let e = loop {
        match tx.next_chunk() {
            Ok(Some(_)) => {}
            Ok(None) => panic!("the sender streamed a changed file"),
            Err(e) => break e,
        }
    };
    assert_eq!(e.check(), "manifest_changed");
    // ...so seal the files' current bytes directly, as a hostile source would.
    let mut plain = Vec::new();
    for f in &s.manifest.files {
        plain.extend(std::fs::read(s.src.join(&f.path)).unwrap());
    }
    let sealer = custody_mover::stream::Sealer::new(&s.key, s.header).unwrap();
    let n = s.header.chunk_count();
    let cs = s.header.chunk_size as usize;
    let chunks: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            let a = i as usize * cs;
            let b = (a + cs).min(plain.len());
            sealer.seal_chunk(i, &plain[a..b], i + 1 == n).unwrap()
        })
        .collect();
    let e = deliver(&s, &chunks).unwrap_err();
    assert_eq!(e.check(), "file_digest");
    assert!(!s.dest.join("job-7").exists());
}

#[test]
fn resume_after_interruption_gives_identical_files() {
    let s = setup();
    let chunks = sealed(&s);
    let mut rx = receiver(&s);
    rx.set_sync_every(1_000);
    for (i, c) in chunks.iter().enumerate().take(20) {
        rx.write_chunk(i as u64, c).unwrap();
    }
    assert_eq!(rx.make_durable().unwrap(), 20);
    // More chunks arrive but the process dies before they are durable.
    for (i, c) in chunks.iter().enumerate().skip(20).take(7) {
        rx.write_chunk(i as u64, c).unwrap();
    }
    drop(rx);

    // Resume with a fresh data key (the source re-wraps; already-written bytes are
    // plaintext at rest in staging and need no key).
    let key2 = DataKey::generate().unwrap();
    let mut rx = Receiver::resume(&s.dest, None, &s.ticket, s.manifest.clone(), s.header, &key2).unwrap();
    assert_eq!(rx.resume_point(), 20);
    let mut tx = Sender::new(&s.src, s.manifest.clone(), s.header, &key2).unwrap();
    tx.seek_to_chunk(rx.resume_point()).unwrap();
    while let Some((i, c)) = tx.next_chunk().unwrap() {
        rx.write_chunk(i, &c).unwrap();
    }
    let (target, _) = rx.finish(NOW).unwrap();
    same_tree(&s.src, &target);
}

#[test]
fn resume_at_many_points_including_file_boundaries() {
    let s = setup();
    let chunks = sealed(&s);
    let n = chunks.len() as u64;
    for k in [0, 1, 48, 49, 50, 51, n - 1, n] {
        let dest = tempfile::tempdir().unwrap();
        let mut rx =
            Receiver::create(dest.path(), None, &s.ticket, s.manifest.clone(), s.header, &s.key).unwrap();
        for i in 0..k {
            rx.write_chunk(i, &chunks[i as usize]).unwrap();
        }
        rx.make_durable().unwrap();
        drop(rx);
        let mut rx =
            Receiver::resume(dest.path(), None, &s.ticket, s.manifest.clone(), s.header, &s.key).unwrap();
        assert_eq!(rx.resume_point(), k);
        for i in k..n {
            rx.write_chunk(i, &chunks[i as usize]).unwrap();
        }
        let (target, _) = rx.finish(NOW).unwrap();
        same_tree(&s.src, &target);
    }
}

struct Node {
    name: &'static str,
    x25519: [u8; 32],
    secret: rustls::crypto::hpke::HpkePrivateKey,
}

fn node(name: &'static str) -> Node {
    let (x25519, secret) = keywrap::generate_x25519().unwrap();
    Node { name, x25519, secret }
}

fn export_for(src: &Path, verifier: &EcdsaKeyPair, b: &Node, expires_at: i64) -> (Vec<u8>, Vec<u8>) {
    let m = Manifest::build(src).unwrap();
    let mut t = ticket_for(&m, [0x77; 16], b.x25519, [9; 32]);
    t.expires_at = expires_at;
    let tb = t.sign(verifier).unwrap();
    let mut file = Vec::new();
    let sum = export::export(&tb, verifier.public_key().as_ref(), NOW, src, CHUNK, &mut file).unwrap();
    assert_eq!(sum.bytes, m.total_bytes());
    (tb, file)
}

#[test]
fn export_import_only_the_ticketed_destination() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    checkpoint(&src);
    let verifier = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let vpub = verifier.public_key().as_ref().to_vec();
    let b = node("node-b");
    let c = node("node-c");
    let (_, file) = export_for(&src, &verifier, &b, NOW + 600);

    let try_import =
        |who: &Node, claims_key: [u8; 32], me: &str, now: i64, seen: &mut SeenTickets, bytes: &[u8]| {
            let dest = tmp
                .path()
                .join(format!("dest-{}-{}", who.name, hex::encode(random(4))));
            std::fs::create_dir(&dest).unwrap();
            let checks = ImportChecks {
                verifier_public_sec1: &vpub,
                now,
                me,
                my_x25519: claims_key,
                seen,
                deny: None,
            };
            let r = export::import(&mut &bytes[..], checks, &who.secret, &dest, None);
            (dest, r)
        };
    let seen_path = tmp.path().join("seen-c");
    let mut seen_c = SeenTickets::open(&seen_path).unwrap();

    // C with its own identity: the ticket is not for it.
    let (dest, r) = try_import(&c, c.x25519, "node-c", NOW, &mut seen_c, &file);
    assert_eq!(r.unwrap_err().check(), "ticket_destination");
    assert!(!dest.join("job-7").exists());
    // C pretending to be B (B's name and public key) still cannot open the data key.
    let (dest, r) = try_import(&c, b.x25519, "node-b", NOW, &mut seen_c, &file);
    assert_eq!(r.unwrap_err().check(), "wrong_recipient");
    assert!(!dest.join("job-7").exists());

    // B: expired ticket refused.
    let mut seen_b = SeenTickets::open(&tmp.path().join("seen-b")).unwrap();
    let (_, r) = try_import(&b, b.x25519, "node-b", NOW + 601, &mut seen_b, &file);
    assert_eq!(r.unwrap_err().check(), "ticket_expired");

    // B: a tampered export file (one flipped byte in a record) is refused, nothing placed;
    // then the good file imports, and a replay is refused.
    let mut bad = file.clone();
    let at = bad.len() - 1000;
    bad[at] ^= 0x10;
    let (dest, r) = try_import(&b, b.x25519, "node-b", NOW, &mut seen_b, &bad);
    assert_eq!(r.unwrap_err().check(), "chunk_authentication");
    assert!(!dest.join("job-7").exists());
    let mut short = file.clone();
    short.truncate(file.len() - 70_000);
    let (dest, r) = try_import(&b, b.x25519, "node-b", NOW, &mut seen_b, &short);
    assert!(matches!(
        r.unwrap_err().check(),
        "export_format" | "stream_truncated"
    ));
    assert!(!dest.join("job-7").exists());

    let (dest, r) = try_import(&b, b.x25519, "node-b", NOW, &mut seen_b, &file);
    let (target, receipt) = r.unwrap();
    same_tree(&src, &target);
    assert_eq!(receipt.ticket_id, [0x77; 16]);
    assert!(dest.join("job-7").is_dir());
    let (_, r) = try_import(&b, b.x25519, "node-b", NOW, &mut seen_b, &file);
    assert_eq!(r.unwrap_err().check(), "ticket_replayed");
    // The replay list survives a restart.
    let mut reopened = SeenTickets::open(&tmp.path().join("seen-b")).unwrap();
    let (_, r) = try_import(&b, b.x25519, "node-b", NOW, &mut reopened, &file);
    assert_eq!(r.unwrap_err().check(), "ticket_replayed");

    // Not an export file at all.
    let (_, r) = try_import(&b, b.x25519, "node-b", NOW, &mut seen_b, b"CUSTODYMV2\0\0garbage");
    assert_eq!(r.unwrap_err().check(), "export_format");
}

#[test]
fn export_refuses_a_changed_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    checkpoint(tmp.path());
    let verifier = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let m = Manifest::build(tmp.path()).unwrap();
    let t = ticket_for(&m, [1; 16], [1; 32], [2; 32]).sign(&verifier).unwrap();
    std::fs::write(tmp.path().join("config.json"), b"changed").unwrap();
    let e = export::export(
        &t,
        verifier.public_key().as_ref(),
        NOW,
        tmp.path(),
        CHUNK,
        &mut Vec::new(),
    )
    .unwrap_err();
    assert_eq!(e.check(), "manifest_digest");
}

/// The source agent exports with the manifest it built at prepare time, without hashing
/// the checkpoint first: a file changed in between (same size, so the listing still
/// matches) stops the export with `manifest_changed`; an untouched checkpoint exports a
/// file the destination imports bit-identical.
#[test]
fn export_with_the_prepared_manifest_checks_digests_while_streaming() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    checkpoint(&src);
    let verifier = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let vpub = verifier.public_key().as_ref().to_vec();
    let b = node("node-b");
    let m = Manifest::build(&src).unwrap();
    let tb = ticket_for(&m, [0x42; 16], b.x25519, [9; 32])
        .sign(&verifier)
        .unwrap();
    let t = Ticket::verify(&tb, &vpub, NOW).unwrap();

    let mut file = Vec::new();
    let sum = export::export_checked(&tb, t.clone(), m.clone(), &src, CHUNK, &mut file).unwrap();
    assert_eq!(sum.bytes, m.total_bytes());
    let dest = tmp.path().join("dest");
    std::fs::create_dir(&dest).unwrap();
    let mut seen = SeenTickets::open(&tmp.path().join("seen")).unwrap();
    let checks = ImportChecks {
        verifier_public_sec1: &vpub,
        now: NOW,
        me: "node-b",
        my_x25519: b.x25519,
        seen: &mut seen,
        deny: None,
    };
    let (target, _) = export::import(&mut &file[..], checks, &b.secret, &dest, None).unwrap();
    same_tree(&src, &target);

    // The largest file, same length, one byte different.
    let big = m.files.iter().max_by_key(|f| f.size).unwrap();
    let path = src.join(&big.path);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[0] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    let e = export::export_checked(&tb, t, m, &src, CHUNK, &mut Vec::new()).unwrap_err();
    assert_eq!(e.check(), "manifest_changed");
}

#[test]
fn a_source_that_skips_digests_is_stopped_by_the_destination_and_progress_stops_there() {
    // A network move's source does not hash (Sender::set_verify_digests(false)): a file
    // changed in place since the manifest streams, authenticated. The destination hashes
    // on its writer thread and refuses with `file_digest`; its durable points, which run
    // behind the stream on another thread, never record progress past that file.
    let s = setup();
    let bad = "shards/model-00001.safetensors";
    let p = s.src.join(bad);
    let mut bytes = std::fs::read(&p).unwrap();
    bytes[100] ^= 1;
    std::fs::write(&p, &bytes).unwrap();
    let mut tx = Sender::new(&s.src, s.manifest.clone(), s.header, &s.key).unwrap();
    tx.set_verify_digests(false);
    let mut rx = receiver(&s);
    rx.set_sync_every(1);
    let mut failed = None;
    while let Some((i, c)) = tx.next_chunk().unwrap() {
        if let Err(e) = rx.write_chunk(i, &c) {
            failed = Some(e);
            break;
        }
    }
    let e = match failed {
        Some(e) => {
            // What the wire does after a failure: keep what is durable. It reports the
            // same failure and records nothing more.
            assert_eq!(rx.make_durable().unwrap_err().check(), "file_digest");
            drop(rx);
            e
        }
        None => rx.finish(NOW).map(|_| ()).unwrap_err(),
    };
    assert_eq!(e.check(), "file_digest", "{e}");
    assert!(!s.dest.join("job-7").exists(), "nothing placed");
    // The bad file ends at this offset: no durable point after the chunk holding it.
    let mut end = 0u64;
    for f in &s.manifest.files {
        end += f.size;
        if f.path == bad {
            break;
        }
    }
    let progress: u64 = std::fs::read_to_string(staging_dir(&s.dest, &s.ticket.id).join("progress"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        progress <= end.div_ceil(u64::from(CHUNK)),
        "progress {progress} past the bad file's last chunk"
    );
    // A resume re-hashes what is durable: it either refuses the bad file or continues
    // before its end; either way the changed bytes are refused again.
    let key2 = DataKey::generate().unwrap();
    if let Ok(mut rx) = Receiver::resume(&s.dest, None, &s.ticket, s.manifest.clone(), s.header, &key2) {
        let mut tx = Sender::new(&s.src, s.manifest.clone(), s.header, &key2).unwrap();
        tx.set_verify_digests(false);
        tx.seek_to_chunk(rx.resume_point()).unwrap();
        let mut r = Ok(());
        while let Some((i, c)) = tx.next_chunk().unwrap() {
            r = rx.write_chunk(i, &c);
            if r.is_err() {
                break;
            }
        }
        let e = r.and_then(|()| rx.finish(NOW).map(|_| ())).unwrap_err();
        assert_eq!(e.check(), "file_digest", "{e}");
    }
    assert!(!s.dest.join("job-7").exists(), "nothing placed");
}

#[test]
fn durable_points_behind_the_stream_record_what_is_on_disk() {
    // Durable points run on the receiver's sync thread; make_durable waits for them.
    let s = setup();
    let chunks = sealed(&s);
    let mut rx = receiver(&s);
    rx.set_sync_every(4);
    for (i, c) in chunks.iter().enumerate().take(30) {
        rx.write_chunk(i as u64, c).unwrap();
    }
    assert!(rx.durable_point() <= 28, "at most the last due point");
    assert_eq!(rx.make_durable().unwrap(), 30);
    assert_eq!(rx.durable_point(), 30);
    drop(rx);
    let progress = std::fs::read_to_string(staging_dir(&s.dest, &s.ticket.id).join("progress")).unwrap();
    assert_eq!(progress.trim(), "30");
    let mut rx = Receiver::resume(&s.dest, None, &s.ticket, s.manifest.clone(), s.header, &s.key).unwrap();
    assert_eq!(rx.resume_point(), 30);
    for (i, c) in chunks.iter().enumerate().skip(30) {
        rx.write_chunk(i as u64, c).unwrap();
    }
    let (target, _) = rx.finish(NOW).unwrap();
    same_tree(&s.src, &target);
}
