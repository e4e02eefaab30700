//! The byte-exact test vector of docs/migration-protocol.md (mover/testdata/vector-v1.txt):
//! every deterministic message of one move with fixed keys and ids. The HPKE part uses the
//! RFC 9180 A.1 ephemeral and recipient keys with the independent key schedule of
//! `keywrap::tests`, and is opened by the mover's own unwrap. Regenerate (only when the
//! protocol version changes) with `MOVER_WRITE_VECTOR=1`.

use crate::keywrap::tests::{h, schedule, x25519};
use crate::keywrap::{unwrap, DataKey, WrappedKey, HPKE_INFO_PREFIX};
use crate::manifest::{sha256, FileEntry, Manifest};
use crate::receipt::Receipt;
use crate::stream::{nonce, Opener, Sealer, StreamHeader};
use crate::ticket::Ticket;
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use rustls::crypto::hpke::HpkePrivateKey;

fn vector() -> Vec<(&'static str, String)> {
    let ticket_id: [u8; 16] = core::array::from_fn(|i| i as u8);
    let file_a = vec![0x61u8; 1024 + 5];
    let manifest = Manifest {
        files: vec![
            FileEntry {
                path: "a.bin".into(),
                size: file_a.len() as u64,
                sha256: sha256(&file_a),
            },
            FileEntry {
                path: "sub/empty".into(),
                size: 0,
                sha256: sha256(b""),
            },
        ],
    };
    let mcbor = manifest.to_cbor().unwrap();
    let md = manifest.digest().unwrap();
    let pkr = h("3948cfe0ad1ddb695d780e59077195da6c56506b027329794ab02bca80815c4d");
    let ticket = Ticket {
        id: ticket_id,
        job: "job-1".into(),
        source: "node-a".into(),
        destination: "node-b".into(),
        dst_x25519: pkr.clone().try_into().unwrap(),
        dst_ed25519: [0xed; 32],
        policy_id: "policy-1".into(),
        policy_digest: [0xcc; 32],
        manifest_digest: md,
        issued_at: 1_700_000_000,
        expires_at: 1_700_000_600,
    };
    let sh = StreamHeader::new(ticket_id, md, 1024, manifest.total_bytes()).unwrap();
    let data_key: [u8; 32] = core::array::from_fn(|i| 0x20 + i as u8);
    let key = DataKey::from_bytes(data_key);
    let sealer = Sealer::new(&key, sh).unwrap();
    let c0 = sealer.seal_chunk(0, &file_a[..1024], false).unwrap();
    let c1 = sealer.seal_chunk(1, &file_a[1024..], true).unwrap();

    // HPKE with A.1's fixed ephemeral key (skEm) and recipient key (pkRm).
    let ske = h("52c4a758a802cd8b936eceea314432798d5baf2d7e9235dc084ab1b9cfa2f736");
    let enc = h("37fda3567bdbd628e88668c3c8d7e97d1d1253b6d4ea6d44c150f741f1bf4431");
    let info = [HPKE_INFO_PREFIX, &ticket_id].concat();
    let [_, hk, hn] = schedule(&x25519(&ske, &pkr), &enc, &pkr, &info, 2, 32);
    let k = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &hk).unwrap());
    let mut wrapped = data_key.to_vec();
    k.seal_in_place_append_tag(
        Nonce::try_assume_unique_for_key(&hn).unwrap(),
        Aad::from(&sh.to_bytes()),
        &mut wrapped,
    )
    .unwrap();

    let receipt = Receipt {
        ticket_id,
        job: "job-1".into(),
        destination: "node-b".into(),
        manifest_digest: md,
        bytes: manifest.total_bytes(),
        completed_at: 1_700_000_300,
    };
    let export_header = crate::export::ExportHeader {
        ticket: b"<ticket COSE_Sign1 bytes>".to_vec(),
        wrapped: WrappedKey {
            enc: enc.clone().try_into().unwrap(),
            ciphertext: wrapped.clone().try_into().unwrap(),
        },
        manifest: mcbor.clone(),
        chunk_size: 1024,
    }
    .to_cbor()
    .unwrap();

    vec![
        ("manifest_cbor", hex::encode(&mcbor)),
        ("manifest_digest", hex::encode(md)),
        ("ticket_payload", hex::encode(ticket.payload().unwrap())),
        ("stream_header", hex::encode(sh.to_bytes())),
        ("stream_aad", hex::encode(sh.aad())),
        ("data_key", hex::encode(data_key)),
        ("nonce_0", hex::encode(nonce(0, false))),
        ("nonce_1_last", hex::encode(nonce(1, true))),
        ("chunk_0_sha256", hex::encode(sha256(&c0))),
        ("chunk_1", hex::encode(&c1)),
        ("hpke_info", hex::encode(&info)),
        ("hpke_key", hex::encode(&hk)),
        ("hpke_base_nonce", hex::encode(&hn)),
        ("hpke_enc", hex::encode(&enc)),
        ("hpke_wrapped_key", hex::encode(&wrapped)),
        ("receipt_payload", hex::encode(receipt.payload().unwrap())),
        ("export_header_cbor", hex::encode(&export_header)),
    ]
}

#[test]
fn byte_exact_vector() {
    let v = vector();
    let text: String = v.iter().map(|(k, x)| format!("{k} = {x}\n")).collect();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/vector-v1.txt");
    if std::env::var_os("MOVER_WRITE_VECTOR").is_some() {
        std::fs::write(path, &text).unwrap();
    }
    assert_eq!(std::fs::read_to_string(path).unwrap(), text);

    // And the committed values work: the wrapped key opens with A.1's skRm to the data
    // key, and the chunks open to the file.
    let get = |name: &str| h(&v.iter().find(|(k, _)| *k == name).unwrap().1);
    let sk = HpkePrivateKey::from(h(
        "4612c550263fc8ad58375df3f557aac531d26850903e55a9f23f21d8534e8ac8",
    ));
    let sh = StreamHeader::from_bytes(&get("stream_header")).unwrap();
    let w = WrappedKey {
        enc: get("hpke_enc").try_into().unwrap(),
        ciphertext: get("hpke_wrapped_key").try_into().unwrap(),
    };
    let key = unwrap(&w, &sk, &sh.ticket_id, &get("stream_header")).unwrap();
    assert_eq!(key, DataKey::from_bytes(get("data_key").try_into().unwrap()));
    let mut o = Opener::resume(&key, sh, 1).unwrap();
    assert_eq!(o.open_chunk(1, &get("chunk_1")).unwrap(), vec![0x61; 5]);
    o.finish().unwrap();
}
