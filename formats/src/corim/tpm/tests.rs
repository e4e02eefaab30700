#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use super::*;
use crate::corim::{Digest, Measurement, ReferenceValue};

use crate::corim::tests::{h, read, vector};

const CLASS: [u8; 16] = [
    0xcd, 0x1f, 0x0e, 0x55, 0x26, 0xf9, 0x46, 0x0d, 0xb9, 0xd8, 0xf7, 0xfd, 0xe1, 0x71, 0x78, 0x7c,
];

fn pcrs(entries: &[(&str, u32, Vec<u8>)]) -> Pcrs {
    let mut p = Pcrs::new();
    for (bank, i, v) in entries {
        p.entry((*bank).to_owned()).or_default().insert(*i, v.clone());
    }
    p
}

fn invalid_why(e: CorimError) -> (String, &'static str) {
    match e {
        CorimError::Invalid { at, why } => (at, why),
        other => panic!("expected Invalid, got {other:?}"),
    }
}

fn round_trip(p: &Pcrs) -> Pcrs {
    let bytes = pcrs_to_corim("corim-1", "tag-1", CLASS, p).unwrap();
    let c = Corim::from_cbor(&bytes).unwrap();
    let (back, ignored) = pcrs_from_corim(&c).unwrap();
    assert_eq!(ignored, 0);
    back
}

/// A one-CoMID CoRIM with the given measurements in one reference triple.
fn corim_with(measurements: Vec<Measurement>) -> Corim {
    let mut c =
        Corim::from_cbor(&pcrs_to_corim("c", "t", CLASS, &pcrs(&[("sha256", 0, vec![1; 32])])).unwrap())
            .unwrap();
    c.tags[0].triples.reference_values = vec![ReferenceValue {
        environment: c.tags[0].triples.reference_values[0].environment.clone(),
        measurements,
    }];
    c
}

fn pcr(index: u64, digests: Vec<Digest>) -> Measurement {
    Measurement {
        mkey: Some(Mkey::Uint(index)),
        digests,
        ..Measurement::default()
    }
}

fn d(alg: Alg, value: Vec<u8>) -> Digest {
    Digest { alg, value }
}

#[test]
fn parsec_vector_pcrs() {
    let c = Corim::from_cbor(&read(vector!(
        "tpm-parsec-veraison-services/corim-parsec-tpm-valid.cbor"
    )))
    .unwrap();
    let (p, ignored) = pcrs_from_corim(&c).unwrap();
    assert_eq!(ignored, 0);
    let pcr01 = h(
        "4284b5694ca6c0d2cf4789a0b95ac8025c818de52304364be7cd2981b2d2edc685b322277ec25819962413d8c9b2c1f5",
    );
    let pcr2 = h(
        "2107bbe761fca52d95136a1354db7a4dd57b1b26be0d3da71d9eb23986b34ba615abf6514cf35e5a9ea55a032d068a78",
    );
    let want = pcrs(&[
        ("sha256", 0, vec![0; 32]),
        ("sha256", 1, vec![0; 32]),
        ("sha256", 2, vec![0; 32]),
        ("sha384", 0, pcr01.clone()),
        ("sha384", 1, pcr01),
        ("sha384", 2, pcr2),
    ]);
    assert_eq!(p, want);
    // Written back in the scheme's shape, it reads the same and carries the same profile
    // and class-id as the Veraison vector.
    let bytes = pcrs_to_corim("00000000-0000-0000-6768-0000000000001", "x", CLASS, &p).unwrap();
    let again = Corim::from_cbor(&bytes).unwrap();
    assert_eq!(again.profile, c.profile);
    assert_eq!(
        again.tags[0].triples.reference_values[0].environment,
        c.tags[0].triples.reference_values[0].environment
    );
    assert_eq!(
        again.tags[0].triples.reference_values[0].measurements,
        c.tags[0].triples.reference_values[0].measurements
    );
    assert_eq!(pcrs_from_corim(&again).unwrap(), (want, 0));
}

#[test]
fn enacttrust_vector_has_no_pcr() {
    // One reference measurement with no mkey (a PCR-composite quote digest): ignored, so
    // the CoRIM holds no PCR, which is an error.
    let c = Corim::from_cbor(&read(vector!(
        "tpm-enacttrust-veraison-services/corim-enacttrust-valid.cbor"
    )))
    .unwrap();
    let (at, why) = invalid_why(pcrs_from_corim(&c).unwrap_err());
    assert_eq!(at, "corim");
    assert!(why.contains("no TPM PCR"), "{why}");
}

#[test]
fn round_trip_several_banks() {
    let p = pcrs(&[
        ("sha256", 0, vec![0x10; 32]),
        ("sha256", 7, vec![0x17; 32]),
        ("sha256", 23, vec![0x23; 32]),
        ("sha384", 7, vec![0x37; 48]),
        ("sha384", 10, vec![0x3a; 48]),
        ("sha512", 0, vec![0x50; 64]),
        ("sha512", 23, vec![0x5f; 64]),
    ]);
    assert_eq!(round_trip(&p), p);
    // All 24 PCRs in all three banks.
    let mut all = Vec::new();
    for i in 0..=23u32 {
        all.push(("sha256", i, vec![i as u8; 32]));
        all.push(("sha384", i, vec![i as u8 + 1; 48]));
        all.push(("sha512", i, vec![i as u8 + 2; 64]));
    }
    let p = pcrs(&all);
    assert_eq!(round_trip(&p), p);
    // One bank only.
    let p = pcrs(&[("sha512", 4, vec![9; 64])]);
    assert_eq!(round_trip(&p), p);
}

#[test]
fn writer_shape() {
    let p = pcrs(&[
        ("sha384", 3, vec![3; 48]),
        ("sha256", 3, vec![2; 32]),
        ("sha256", 1, vec![1; 32]),
    ]);
    let c = Corim::from_cbor(&pcrs_to_corim("id", "tag", CLASS, &p).unwrap()).unwrap();
    assert_eq!(c.id, Some(crate::corim::TagId::Text("id".into())));
    assert_eq!(c.profile.as_deref(), Some(PARSEC_TPM_PROFILE));
    assert_eq!(c.tags.len(), 1);
    assert_eq!(c.tags[0].tag_id, crate::corim::TagId::Text("tag".into()));
    assert!(c.tags[0].triples.other.is_empty());
    let rv = &c.tags[0].triples.reference_values;
    assert_eq!(rv.len(), 1);
    let env = &rv[0].environment;
    assert_eq!(env.instance, None);
    assert_eq!(env.group, None);
    assert_eq!(
        env.class.as_ref().unwrap().id,
        Some(crate::corim::Ident::Uuid(CLASS))
    );
    let m = &rv[0].measurements;
    assert_eq!(
        m.iter().map(|m| m.mkey.clone()).collect::<Vec<_>>(),
        vec![Some(Mkey::Uint(1)), Some(Mkey::Uint(3))]
    );
    assert_eq!(
        m[1].digests,
        vec![d(Alg::Id(1), vec![2; 32]), d(Alg::Id(7), vec![3; 48])]
    );
}

/// Built independently with Python cbor2 5.x (`cbor2.dumps` of the same structure):
/// 501({0: "c", 1: [506(bstr comid)], 3: 32(profile)}) with comid
/// {1: {0: "t"}, 4: {0: [[{0: {0: 37(class)}}, [{0: 0, 1: {2: [[1, aa*32]]}},
/// {0: 7, 1: {2: [[1, bb*32], [7, cc*48]]}}]]]}}.
const FIXED: &str = "d901f5a30061630181d901fa58ada201a100617404a1008182a100a100d82550cd1f0e5526f9460db9d8f7fde171787c82a2000001a1028182015820aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa2000701a1028282015820bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb82075830cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc03d820782c7461673a6769746875622e636f6d2f706172616c6c61787365636f6e642c323032332d30332d30333a74706d";

#[test]
fn byte_exact() {
    let p = pcrs(&[
        ("sha256", 0, vec![0xaa; 32]),
        ("sha256", 7, vec![0xbb; 32]),
        ("sha384", 7, vec![0xcc; 48]),
    ]);
    let bytes = pcrs_to_corim("c", "t", CLASS, &p).unwrap();
    assert_eq!(hex::encode(&bytes), FIXED);
    let c = Corim::from_cbor(&bytes).unwrap();
    assert_eq!(pcrs_from_corim(&c).unwrap(), (p, 0));
}

#[test]
fn sha1_bank_refused() {
    let p = pcrs(&[("sha1", 0, vec![0; 20]), ("sha256", 0, vec![0; 32])]);
    let (at, why) = invalid_why(pcrs_to_corim("c", "t", CLASS, &p).unwrap_err());
    assert_eq!(at, "pcrs[\"sha1\"]");
    assert!(why.contains("SHA-1"), "{why}");
    // Unknown bank names too.
    let p = pcrs(&[("sm3_256", 0, vec![0; 32])]);
    let (at, _) = invalid_why(pcrs_to_corim("c", "t", CLASS, &p).unwrap_err());
    assert_eq!(at, "pcrs[\"sm3_256\"]");
}

#[test]
fn wrong_digest_length_refused_on_write() {
    let p = pcrs(&[("sha256", 0, vec![0; 32]), ("sha384", 5, vec![0; 32])]);
    let (at, why) = invalid_why(pcrs_to_corim("c", "t", CLASS, &p).unwrap_err());
    assert_eq!(at, "pcrs[\"sha384\"][5]");
    assert!(why.contains("length"), "{why}");
}

#[test]
fn wrong_digest_length_refused_on_read() {
    let c = corim_with(vec![
        pcr(0, vec![d(Alg::Id(1), vec![0; 32])]),
        pcr(1, vec![d(Alg::Id(1), vec![0; 32]), d(Alg::Id(8), vec![0; 48])]),
    ]);
    let (at, why) = invalid_why(pcrs_from_corim(&c).unwrap_err());
    assert_eq!(at, "corim.tags[0].reference[0].measurements[1].mval.digests[1]");
    assert!(why.contains("length"), "{why}");
}

#[test]
fn index_24_refused() {
    let p = pcrs(&[("sha256", 24, vec![0; 32])]);
    let (at, why) = invalid_why(pcrs_to_corim("c", "t", CLASS, &p).unwrap_err());
    assert_eq!(at, "pcrs[\"sha256\"][24]");
    assert!(why.contains("over 23"), "{why}");
    let c = corim_with(vec![pcr(24, vec![d(Alg::Id(1), vec![0; 32])])]);
    let (at, why) = invalid_why(pcrs_from_corim(&c).unwrap_err());
    assert_eq!(at, "corim.tags[0].reference[0].measurements[0].mkey");
    assert!(why.contains("over 23"), "{why}");
}

#[test]
fn conflicting_duplicate_refused() {
    let c = corim_with(vec![
        pcr(4, vec![d(Alg::Id(1), vec![1; 32])]),
        pcr(4, vec![d(Alg::Name("sha-256".into()), vec![2; 32])]),
    ]);
    let (at, why) = invalid_why(pcrs_from_corim(&c).unwrap_err());
    assert_eq!(at, "corim.tags[0].reference[0].measurements[1].mval.digests[0]");
    assert!(why.contains("two different values"), "{why}");
    // An equal repeat is accepted, text algorithm names included.
    let c = corim_with(vec![
        pcr(4, vec![d(Alg::Id(7), vec![1; 48])]),
        pcr(4, vec![d(Alg::Name("sha-384".into()), vec![1; 48])]),
    ]);
    assert_eq!(
        pcrs_from_corim(&c).unwrap(),
        (pcrs(&[("sha384", 4, vec![1; 48])]), 0)
    );
}

#[test]
fn no_pcr_refused() {
    // Only non-integer mkeys and a uint mkey without digests: nothing to read.
    let c = corim_with(vec![
        Measurement {
            mkey: Some(Mkey::Text("firmware".into())),
            digests: vec![d(Alg::Id(1), vec![0; 32])],
            ..Measurement::default()
        },
        pcr(3, vec![]),
    ]);
    let (at, why) = invalid_why(pcrs_from_corim(&c).unwrap_err());
    assert_eq!(at, "corim");
    assert!(why.contains("no TPM PCR"), "{why}");
    // Writing nothing is refused too.
    let p = pcrs(&[("sha256", 0, vec![0; 32])][..0]);
    assert_eq!(
        invalid_why(pcrs_to_corim("c", "t", CLASS, &p).unwrap_err()).0,
        "pcrs"
    );
    let mut p = Pcrs::new();
    p.insert("sha256".into(), Default::default());
    assert_eq!(
        invalid_why(pcrs_to_corim("c", "t", CLASS, &p).unwrap_err()).0,
        "pcrs"
    );
}

#[test]
fn other_measurements_ignored_and_counted() {
    let c = corim_with(vec![
        Measurement {
            mkey: Some(Mkey::Text("firmware".into())),
            digests: vec![d(Alg::Id(1), vec![0; 32])],
            ..Measurement::default()
        },
        Measurement {
            mkey: None,
            digests: vec![d(Alg::Id(1), vec![0; 32])],
            ..Measurement::default()
        },
        pcr(2, vec![d(Alg::Id(8), vec![8; 64])]),
    ]);
    assert_eq!(
        pcrs_from_corim(&c).unwrap(),
        (pcrs(&[("sha512", 2, vec![8; 64])]), 2)
    );
}

#[test]
fn unknown_algorithm_refused_on_read() {
    let c = corim_with(vec![pcr(0, vec![d(Alg::Name("sha-1".into()), vec![0; 20])])]);
    let (at, _) = invalid_why(pcrs_from_corim(&c).unwrap_err());
    assert_eq!(at, "corim.tags[0].reference[0].measurements[0].mval.digests[0]");
}

#[test]
fn bad_ids_refused() {
    let p = pcrs(&[("sha256", 0, vec![0; 32])]);
    assert_eq!(
        invalid_why(pcrs_to_corim("", "t", CLASS, &p).unwrap_err()).0,
        "corim.id"
    );
    let long = "x".repeat(MAX_BYTES_LEN + 1);
    assert_eq!(
        invalid_why(pcrs_to_corim("c", &long, CLASS, &p).unwrap_err()).0,
        "comid.tag-identity.tag-id"
    );
    // The longest accepted ids still read back.
    let max = "y".repeat(MAX_BYTES_LEN);
    let bytes = pcrs_to_corim(&max, &max, CLASS, &p).unwrap();
    assert_eq!(pcrs_from_corim(&Corim::from_cbor(&bytes).unwrap()).unwrap().0, p);
}
