use super::*;
use crate::send::read_record;
use crate::stream::{Opener, TAG_LEN};
use crate::ticket::tests::{key, ticket};
use aws_lc_rs::signature::KeyPair;
use custody_types::FailedCheck;

/// Seeds are small: libFuzzer mutates them as a whole.
const MAX_SEED: usize = 64 * 1024;

/// A fuzz seed for `fuzz/fuzz_targets/<target>.rs`: checked for size, and written to
/// `$CUSTODY_WRITE_FUZZ_SEEDS/<target>/<name>` when that variable names a directory
/// (`CUSTODY_WRITE_FUZZ_SEEDS=$PWD/fuzz/seeds cargo test -p custody-mover --lib fuzz_seeds`).
pub(crate) fn write_fuzz_seed(target: &str, name: &str, bytes: &[u8]) {
    assert!(
        bytes.len() < MAX_SEED,
        "{target}/{name}: {} bytes, a seed stays under {MAX_SEED}",
        bytes.len()
    );
    let Some(root) = std::env::var_os("CUSTODY_WRITE_FUZZ_SEEDS") else {
        return;
    };
    let dir = Path::new(&root).join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

/// The key and ticket id `fuzz/fuzz_targets/mover_export.rs` opens every file with.
const FUZZ_KEY: [u8; 32] = [0x42; 32];
const FUZZ_TICKET_ID: [u8; 16] = [0; 16];

/// An export file of a checkpoint of `files` as `export_checked` writes it (a real
/// ticket for its manifest, a data key wrapped to the ticket's X25519 key), except that
/// the data key is the fuzz target's fixed one. Also returns the destination's X25519
/// secret and the verifier's public key, to import it.
fn export_seed(files: &[(&str, Vec<u8>)], chunk_size: u32) -> (Vec<u8>, HpkePrivateKey, Vec<u8>) {
    let d = tempfile::tempdir().unwrap();
    for (rel, bytes) in files {
        let p = d.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }
    let manifest = Manifest::build(d.path()).unwrap();
    assert_eq!(manifest.files.len(), files.len());
    let md = manifest.digest().unwrap();
    let sh = StreamHeader::new(FUZZ_TICKET_ID, md, chunk_size, manifest.total_bytes()).unwrap();
    let data_key = DataKey::from_bytes(FUZZ_KEY);
    let (x_pub, x_sec) = keywrap::generate_x25519().unwrap();
    let verifier = key();
    let ticket_bytes = Ticket {
        id: FUZZ_TICKET_ID,
        dst_x25519: x_pub,
        manifest_digest: md,
        ..ticket()
    }
    .sign(&verifier)
    .unwrap();
    let header = ExportHeader {
        ticket: ticket_bytes,
        wrapped: keywrap::wrap(&data_key, &x_pub, &FUZZ_TICKET_ID, &sh.to_bytes()).unwrap(),
        manifest: manifest.to_cbor().unwrap(),
        chunk_size,
    }
    .to_cbor()
    .unwrap();
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&u32::try_from(header.len()).unwrap().to_be_bytes());
    out.extend_from_slice(&header);
    let mut sender = Sender::new(d.path(), manifest, sh, &data_key).unwrap();
    assert_eq!(sender.write_records(&mut out).unwrap(), sh.chunk_count());
    (out, x_sec, verifier.public_key().as_ref().to_vec())
}

/// What the fuzz target's loop saw: chunks opened, their plaintext, what `finish` said.
struct Opened {
    chunks: u64,
    want: u64,
    plain: Vec<u8>,
    finish: Result<(), MoverError>,
}

/// `fuzz/fuzz_targets/mover_export.rs` step for step, except that the manifest must
/// decode (the target falls back to a zero digest, under which nothing opens).
fn open_as_fuzz_target(data: &[u8]) -> Opened {
    let target = include_str!("../../../fuzz/fuzz_targets/mover_export.rs");
    assert!(
        target.contains("DataKey::from_bytes([0x42; 32])") && target.contains("StreamHeader::new([0; 16],"),
        "the fuzz target's key or ticket id changed: update these seeds"
    );
    let mut r = data;
    let h = read_header(&mut r).unwrap();
    let m = Manifest::from_cbor(&h.manifest).unwrap();
    let (digest, total) = (m.digest().unwrap(), m.total_bytes());
    let sh = StreamHeader::new(FUZZ_TICKET_ID, digest, h.chunk_size, total).unwrap();
    let mut o = Opener::new(&DataKey::from_bytes(FUZZ_KEY), sh).unwrap();
    let max = h.chunk_size as usize + TAG_LEN;
    let mut plain = Vec::new();
    while let Ok(Some(ct)) = read_record(&mut r, max) {
        let next = o.next_index();
        match o.open_chunk(next, &ct) {
            Ok(p) => plain.extend(p),
            Err(_) => break,
        }
    }
    Opened {
        chunks: o.next_index(),
        want: sh.chunk_count(),
        plain,
        finish: o.finish(),
    }
}

fn pattern(n: usize, mul: usize) -> Vec<u8> {
    (0..n).map(|i| (i * mul % 251) as u8).collect()
}

/// Seeds for the `mover_export` fuzz target: export files whose every record the
/// target opens under its fixed key, up to a `finish` that succeeds (and two that stop
/// short, so the truncation paths have a seed too).
#[test]
fn fuzz_seeds_for_mover_export_are_well_formed() {
    let files = [
        ("meta.json", b"{\"step\": 42, \"epoch\": 3}".to_vec()),
        ("shards/a.safetensors", pattern(3000, 7)),
        ("tokenizer.txt", pattern(700, 13)),
    ];
    // Manifest order is by path: these are in it.
    let whole: Vec<u8> = files.iter().flat_map(|(_, b)| b.clone()).collect();
    let seeds = [
        ("three_files_chunk_1024", files.to_vec(), 1024),
        ("three_files_chunk_4096", files.to_vec(), 4096),
        // The last chunk is full: the last flag on a chunk of chunk_size bytes.
        (
            "exact_chunks",
            vec![("a.bin", pattern(1024, 3)), ("b.bin", pattern(1024, 5))],
            1024,
        ),
        // A checkpoint of one empty file: one empty (tag-only) chunk.
        ("empty_file", vec![("empty.bin", Vec::new())], 1024),
    ];
    for (name, files, chunk_size) in seeds {
        let (seed, _, _) = export_seed(&files, chunk_size);
        let o = open_as_fuzz_target(&seed);
        assert_eq!(o.chunks, o.want, "{name}: every record opens");
        o.finish.unwrap_or_else(|e| panic!("{name}: finish: {e}"));
        let plain: Vec<u8> = files.iter().flat_map(|(_, b)| b.clone()).collect();
        assert_eq!(o.plain, plain, "{name}: the checkpoint's bytes");
        write_fuzz_seed("mover_export", name, &seed);
    }

    // The main seed is a real export file: the ticket's destination imports it.
    let (seed, x_sec, verifier_pub) = export_seed(&files, 1024);
    let dest = tempfile::tempdir().unwrap();
    let mut seen = SeenTickets::open(&dest.path().join("seen")).unwrap();
    let h = read_header(&mut &seed[..]).unwrap();
    let t = Ticket::verify(&h.ticket, &verifier_pub, 1_100).unwrap();
    let checks = ImportChecks {
        verifier_public_sec1: &verifier_pub,
        now: 1_100,
        me: "node-b",
        my_x25519: t.dst_x25519,
        seen: &mut seen,
        deny: None,
    };
    let (target, _) = import(&mut &seed[..], checks, &x_sec, dest.path(), None).unwrap();
    assert_eq!(
        std::fs::read(target.join("shards/a.safetensors")).unwrap(),
        files[1].1
    );

    // The last record cut short: every chunk before it opens, then `stream_truncated`.
    let o = open_as_fuzz_target(&seed);
    assert_eq!((o.chunks, o.plain), (4, whole.clone()));
    let last_record = 4 + (whole.len() - 3 * 1024) + TAG_LEN;
    let cut = &seed[..seed.len() - last_record / 2];
    let o = open_as_fuzz_target(cut);
    assert_eq!(o.chunks, 3);
    assert_eq!(o.plain, whole[..3 * 1024]);
    assert_eq!(o.finish.unwrap_err().check(), "stream_truncated");
    write_fuzz_seed("mover_export", "truncated_last_record", cut);

    // The last record gone: the same, at a record boundary.
    let cut = &seed[..seed.len() - last_record];
    let o = open_as_fuzz_target(cut);
    assert_eq!(o.chunks, 3);
    assert_eq!(o.finish.unwrap_err().check(), "stream_truncated");
    write_fuzz_seed("mover_export", "missing_last_record", cut);
}
