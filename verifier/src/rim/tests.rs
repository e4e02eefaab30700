#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
use super::*;

const TV: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/nvidia/rims");
/// 2025-06-01T00:00:00Z: inside the validity of the 550.144.03 driver RIM signer
/// (2024-12-30T16:56:50Z .. 2026-12-30T16:56:50Z), the 535.86.09 signer
/// (2025-05-24 .. 2027-05-24) and the VBIOS RIM signer (2023-12-13 .. 2025-12-12).
const AT: UnixTime = UnixTime(1_748_736_000);

const DRIVER: &str = "NV_GPU_DRIVER_GH100_550.144.03.xml";
const DRIVER_535: &str = "NV_GPU_DRIVER_GH100_535.86.09_measurement_mismatch.xml";
const VBIOS: &str = "NV_GPU_VBIOS_1010_0200_882_96005E0001_measurement_mismatch.xml";
const EXPIRED: &str = "NV_GPU_DRIVER_GH100_570.124.03_expired.xml";

fn read(name: &str) -> Vec<u8> {
    std::fs::read(format!("{TV}/{name}")).unwrap()
}

fn read_str(name: &str) -> String {
    String::from_utf8(read(name)).unwrap()
}

fn root() -> Vec<TrustAnchor> {
    TrustAnchor::from_pem_or_der(&read("nvidia-rim-root.pem")).unwrap()
}

fn verify(xml: &[u8]) -> Result<Rim, RimError> {
    verify_rim(xml, &root(), AT)
}

fn active(rim: &Rim) -> Vec<u32> {
    rim.measurements
        .iter()
        .filter(|m| m.active)
        .map(|m| m.index)
        .collect()
}

/// Reported blocks that satisfy `rims` exactly: Hash0 for each active index, a dummy
/// digest for every inactive one.
fn reported(rims: &[&Rim]) -> Vec<(u32, Vec<u8>)> {
    let mut v: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
    for r in rims {
        for m in &r.measurements {
            if m.active {
                v.insert(m.index, m.digests[0].clone());
            } else {
                v.entry(m.index).or_insert_with(|| vec![0xab; 48]);
            }
        }
    }
    v.into_iter().collect()
}

fn borrow(v: &[(u32, Vec<u8>)]) -> Vec<(u32, &[u8])> {
    v.iter().map(|(i, d)| (*i, d.as_slice())).collect()
}

#[test]
fn driver_rim_verifies_and_parses() {
    let rim = verify(&read(DRIVER)).unwrap();
    assert_eq!(rim.kind, RimKind::Driver);
    assert_eq!(rim.version, "550.144.03");
    assert!(rim.version_matches("550.144.03"));
    assert_eq!(rim.product, "GH100");
    assert_eq!(
        rim.id,
        "8aa5c875798aecff29b7e3ca2e564ccbda4d47c37276f44f927ffc2ca17d84b1ec3198c69854bbe1556270c1feb493cd"
    );
    assert!(rim.signer.contains("HCC RIM L4 Signer"), "{}", rim.signer);
    assert_eq!(
        rim.signature_algorithm,
        "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384"
    );
    // Leaf window: 2024-12-30T16:56:50Z .. 2026-12-30T16:56:50Z.
    assert_eq!(rim.valid_from, 1_735_577_810);
    assert_eq!(rim.valid_until, 1_798_649_810);
    assert_eq!(rim.measurements.len(), 64);
    assert!(rim
        .measurements
        .iter()
        .enumerate()
        .all(|(i, m)| m.index == i as u32 && m.digests.iter().all(|d| d.len() == 48)));
    let mut want = vec![7];
    want.extend(21..=40);
    assert_eq!(active(&rim), want);
    let m7 = &rim.measurements[7];
    assert_eq!(m7.name, "Measurement_7");
    assert_eq!(
        hex::encode(&m7.digests[0]),
        "4a5e4b3d501fe31f91bd8b6f2921b58437704a504dbedba971440e840c938c805612689ae3ac04b1009515a179063d49"
    );
    // Two alternatives at index 23.
    assert_eq!(rim.measurements[23].digests.len(), 2);
    assert_eq!(rim.measurements[23].digests[1], vec![0u8; 48]);
}

#[test]
fn driver_rim_outside_signer_validity() {
    let xml = read(DRIVER);
    // Before the leaf's notBefore, and after its notAfter.
    for at in [1_733_011_200, 1_798_761_600] {
        let e = verify_rim(&xml, &root(), UnixTime(at)).unwrap_err();
        assert_eq!(e.check(), "rim_cert_validity", "{e}");
    }
}

#[test]
fn incorrect_signature() {
    let e = verify(&read("incorrect_signature_driver_rim.xml")).unwrap_err();
    assert_eq!(e.check(), "rim_signature");
    assert_eq!(e, RimError::Signature(XmlDsigError::Invalid));
}

#[test]
fn incorrect_cert_chain() {
    let e = verify(&read("incorrect_cert_chain_driver_rim.xml")).unwrap_err();
    assert_eq!(e.check(), "rim_cert_chain", "{e}");
    // The signer was issued by "L3 GH100 001 Debug Only", but the next certificate is
    // the debug-only L1 root.
    assert!(
        matches!(e, RimError::Chain(ChainError::IssuerMismatch { index: 0, .. })),
        "{e:?}"
    );
}

#[test]
fn wrong_root_is_a_chain_error() {
    let device_root = TrustAnchor::from_pem_or_der(
        &std::fs::read(format!("{TV}/../nvidia-device-identity-root.pem")).unwrap(),
    )
    .unwrap();
    let e = verify_rim(&read(DRIVER), &device_root, AT).unwrap_err();
    assert_eq!(e.check(), "rim_cert_chain");
}

#[test]
fn expired_signer() {
    let xml = read(EXPIRED);
    let e = verify(&xml).unwrap_err();
    assert_eq!(e.check(), "rim_cert_validity");
    // The "RIM L4 Signer" leaf was valid for one day: 2025-01-01 .. 2025-01-02.
    match e {
        RimError::Chain(ChainError::Expired { index, not_after, .. }) => {
            assert_eq!(index, 0);
            assert_eq!(not_after, 1_735_776_000);
        }
        other => panic!("{other:?}"),
    }
    // Inside that day the chain is good, and the file turns out to be edited after
    // signing as well: its reference digest does not match (xmlsec: "data and digest
    // do not match"). Either way it is rejected.
    let e = verify_rim(&xml, &root(), UnixTime(1_735_732_800)).unwrap_err();
    assert_eq!(e, RimError::Signature(XmlDsigError::Invalid));
    let tag = parse_swid(&xml).unwrap();
    assert_eq!(tag.version, "570.124.03");
}

#[test]
fn mismatch_rims() {
    // The VBIOS one is validly signed; its values are what differ from the sdk-hopper
    // report.
    let v = verify(&read(VBIOS)).unwrap();
    assert_eq!((v.kind, v.version.as_str()), (RimKind::Vbios, "96.00.5E.00.01"));
    assert!(v.version_matches("96.00.5e.00.01"));
    assert!(v.signer.contains("HCC RIM L4 Signer"));
    assert_eq!(active(&v), vec![0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12]);
    // The 535.86.09 driver one was edited after signing (reference digest mismatch), so
    // it never reaches a measurement comparison.
    let e = verify(&read(DRIVER_535)).unwrap_err();
    assert_eq!(e, RimError::Signature(XmlDsigError::Invalid));
    let d = parse_swid(&read(DRIVER_535)).unwrap();
    assert_eq!((d.kind, d.version.as_str()), (RimKind::Driver, "535.86.09"));
    // Against the real sdk-hopper report (VBIOS 96.00.5e.00.01, as the RIM says): the
    // VBIOS RIM's reference for RIM index 9 (SPDM block 10) differs from what the GPU
    // measured, and the comparison names that index.
    let hex_report: String = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/nvidia/sdk-hopperAttestationReport.txt"
    ))
    .unwrap()
    .split_whitespace()
    .collect();
    let report_bytes = hex::decode(hex_report).unwrap();
    let report = custody_formats::spdm::parse(&report_bytes).unwrap();
    assert!(v.version_matches(report.opaque.vbios_version().unwrap()));
    let measured: Vec<(u32, &[u8])> = report
        .blocks
        .iter()
        .map(|b| (u32::from(b.index) - 1, b.value))
        .collect();
    let e = compare(std::slice::from_ref(&v), &measured).unwrap_err();
    assert!(matches!(e, RimError::Mismatch { index: 9, .. }), "{e:?}");
    assert_eq!(e.check(), "rim_measurements");
}

#[test]
fn compare_exact_match() {
    let d = verify(&read(DRIVER)).unwrap();
    let v = verify(&read(VBIOS)).unwrap();
    let rep = reported(&[&d, &v]);
    let c = compare(&[d.clone(), v.clone()], &borrow(&rep)).unwrap();
    let mut want: Vec<u32> = active(&d).into_iter().chain(active(&v)).collect();
    want.sort_unstable();
    assert_eq!(c.matched, want);
    assert_eq!(c.matched.len() + c.inactive.len(), 64);
    assert!(c.skipped.is_empty());
    // The second alternative matches too.
    let mut rep2 = rep.clone();
    rep2.iter_mut().find(|(i, _)| *i == 23).unwrap().1 = vec![0; 48];
    assert!(compare(&[d, v], &borrow(&rep2)).is_ok());
}

#[test]
fn compare_flipped_digest_names_the_index() {
    let d = verify(&read(DRIVER)).unwrap();
    let v = verify(&read(VBIOS)).unwrap();
    let mut rep = reported(&[&d, &v]);
    rep.iter_mut().find(|(i, _)| *i == 25).unwrap().1[47] ^= 1;
    let e = compare(&[d.clone(), v.clone()], &borrow(&rep)).unwrap_err();
    assert_eq!(e.check(), "rim_measurements");
    assert!(matches!(e, RimError::Mismatch { index: 25, .. }), "{e:?}");
    assert!(e.to_string().contains("index 25"), "{e}");
    // A skipped index is not compared.
    let c = compare_skipping(&[d, v], &borrow(&rep), &[25]).unwrap();
    assert_eq!(c.skipped, vec![25]);
    assert!(!c.matched.contains(&25));
}

#[test]
fn compare_missing_and_unreferenced() {
    let d = verify(&read(DRIVER)).unwrap();
    let v = verify(&read(VBIOS)).unwrap();
    let rep = reported(&[&d, &v]);
    let without: Vec<_> = rep.iter().filter(|(i, _)| *i != 8).cloned().collect();
    let e = compare(&[d.clone(), v.clone()], &borrow(&without)).unwrap_err();
    assert!(matches!(e, RimError::Missing { index: 8, .. }), "{e:?}");
    assert_eq!(e.check(), "rim_measurements");
    // An inactive index may be absent.
    let without: Vec<_> = rep.iter().filter(|(i, _)| *i != 63).cloned().collect();
    assert!(compare(&[d.clone(), v.clone()], &borrow(&without)).is_ok());
    // Index 100 is described by neither RIM.
    let mut extra = rep.clone();
    extra.push((100, vec![0; 48]));
    let e = compare(&[d.clone(), v.clone()], &borrow(&extra)).unwrap_err();
    assert_eq!(e, RimError::Unreferenced { index: 100 });
    // Reported twice.
    let mut twice = rep.clone();
    twice.push(rep[0].clone());
    let e = compare(&[d.clone(), v.clone()], &borrow(&twice)).unwrap_err();
    assert!(matches!(e, RimError::DuplicateMeasured { .. }));
    // Driver RIM alone: the VBIOS indices become unchecked-but-required? No: they are
    // inactive in the driver RIM, so only the driver's active ones are compared.
    assert!(compare(&[d], &borrow(&rep)).is_ok());
    assert_eq!(compare(&[], &borrow(&rep)), Err(RimError::NoRims));
}

#[test]
fn compare_conflict_between_rims() {
    let d = verify(&read(DRIVER)).unwrap();
    let mut v = verify(&read(VBIOS)).unwrap();
    let rep = reported(&[&d, &v]);
    // The same driver RIM twice: every active index conflicts, the first is named.
    let e = compare(&[d.clone(), d.clone()], &borrow(&rep)).unwrap_err();
    assert!(matches!(e, RimError::Conflict { index: 7, .. }), "{e:?}");
    assert_eq!(e.check(), "rim_measurements");
    // A VBIOS RIM that also claims index 30.
    v.measurements[30].active = true;
    let e = compare(&[d, v], &borrow(&rep)).unwrap_err();
    assert!(matches!(e, RimError::Conflict { index: 30, .. }), "{e:?}");
}

#[test]
fn edited_hash_fails_the_signature() {
    let xml = read_str(DRIVER);
    let h =
        "4a5e4b3d501fe31f91bd8b6f2921b58437704a504dbedba971440e840c938c805612689ae3ac04b1009515a179063d49";
    let bad = xml.replacen(h, &h.replacen("4a5e", "4a5f", 1), 1);
    assert_ne!(bad, xml);
    // The tag still parses (it is well-formed) ...
    assert_eq!(
        parse_swid(bad.as_bytes()).unwrap().measurements[7].digests[0][1],
        0x5f
    );
    // ... but the signature no longer covers it.
    let e = verify(bad.as_bytes()).unwrap_err();
    assert_eq!(e.check(), "rim_signature");
    // Same for the active flag and the version.
    let bad = xml.replacen("active=\"False\"", "active=\"True\"", 1);
    assert_eq!(verify(bad.as_bytes()).unwrap_err().check(), "rim_signature");
    let bad = xml.replacen(
        "colloquialVersion=\"550.144.03\"",
        "colloquialVersion=\"550.144.04\"",
        1,
    );
    assert_eq!(verify(bad.as_bytes()).unwrap_err().check(), "rim_signature");
}

#[test]
fn dtd_is_a_format_error() {
    let xml = read_str(DRIVER);
    let with = format!("<!DOCTYPE SoftwareIdentity [<!ENTITY v \"550.144.03\">]>\n{xml}");
    let e = verify(with.as_bytes()).unwrap_err();
    assert_eq!(e.check(), "rim_format", "{e}");
    let e = parse_swid(with.as_bytes()).unwrap_err();
    assert_eq!(e.check(), "rim_format");
}

#[test]
fn wrapped_or_moved_signature_is_rejected() {
    let xml = read_str(DRIVER);
    // The reference points at one element instead of the whole document.
    let wrapped = xml
        .replacen("<ds:Reference URI=\"\">", "<ds:Reference URI=\"#p\">", 1)
        .replacen("<ns0:Payload ", "<ns0:Payload Id=\"p\" ", 1);
    let e = verify(wrapped.as_bytes()).unwrap_err();
    assert_eq!(e.check(), "rim_signature", "{e}");
    // The signature moved into the Payload (its digest would still match).
    let start = xml.find("<ds:Signature").unwrap();
    let end = xml.find("</ds:Signature>").unwrap() + "</ds:Signature>".len();
    let sig = &xml[start..end];
    let rest = format!("{}{}", &xml[..start], &xml[end..]);
    let moved = rest.replacen("</ns0:Payload>", &format!("{sig}</ns0:Payload>"), 1);
    assert!(verify(moved.as_bytes()).is_err());
    // A second copy of the signed content next to forged content: two Signatures.
    let twice = xml.replacen("</SoftwareIdentity>", &format!("{sig}</SoftwareIdentity>"), 1);
    assert_eq!(verify(twice.as_bytes()).unwrap_err().check(), "rim_format");
}

#[test]
fn swid_format_errors() {
    let xml = read_str(DRIVER);
    let cases = [
        // Duplicate index.
        xml.replacen("index=\"1\"", "index=\"0\"", 1),
        // Hash not hex.
        xml.replacen("ns2:Hash0=\"0000", "ns2:Hash0=\"zz00", 1),
        // Wrong length.
        xml.replacen("ns2:Hash0=\"0000", "ns2:Hash0=\"00", 1),
        // alternatives says 2, one hash present.
        xml.replacen("alternatives=\"1\"", "alternatives=\"2\"", 1),
        // active neither True nor False.
        xml.replacen("active=\"False\"", "active=\"maybe\"", 1),
        // Not a Measurement.
        xml.replacen("type=\"Measurement\"", "type=\"File\"", 1),
        // Unknown version shape.
        xml.replacen(
            "colloquialVersion=\"550.144.03\"",
            "colloquialVersion=\"latest\"",
            1,
        ),
        // No certificates.
        {
            let s = xml.find("<ds:KeyInfo>").unwrap();
            let e = xml.find("</ds:KeyInfo>").unwrap() + "</ds:KeyInfo>".len();
            format!("{}{}", &xml[..s], &xml[e..])
        },
    ];
    for (i, c) in cases.iter().enumerate() {
        assert_ne!(c, &xml, "case {i} did not edit");
        let e = verify(c.as_bytes()).unwrap_err();
        assert_eq!(e.check(), "rim_format", "case {i}: {e}");
    }
}

#[test]
fn garbage_is_an_error() {
    let xml = read(DRIVER);
    for g in [
        &b""[..],
        b"\xff\xfe",
        b"<",
        b"<SoftwareIdentity/>",
        b"garbage \x00 bytes",
    ] {
        assert!(verify(g).is_err());
    }
    // Every truncation is refused, none panics.
    for n in (0..xml.len()).step_by(97) {
        assert!(verify(&xml[..n]).is_err(), "prefix {n}");
    }
}

#[test]
fn check_names() {
    assert_eq!(RimError::Format(String::new()).check(), "rim_format");
    assert_eq!(
        RimError::Signature(XmlDsigError::Invalid).check(),
        "rim_signature"
    );
    assert_eq!(RimError::Signature(XmlDsigError::Doctype).check(), "rim_format");
    assert_eq!(RimError::Chain(ChainError::Empty).check(), "rim_cert_chain");
    assert_eq!(RimError::NoRims.check(), "rim_measurements");
}
