use super::*;
use base64::Engine as _;
use custody_formats::tpm::parse_attest;

macro_rules! fx {
    ($name:literal) => {
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../formats/testdata/tpm/",
            $name
        ))
        .as_slice()
    };
}

const AT: UnixTime = UnixTime(1_750_000_000);

fn nonce() -> Vec<u8> {
    hex::decode(fx!("nonce.hex").trim_ascii()).unwrap()
}

/// The trustee vector, with its PCRs written as a `tpm2_quote -o` file.
struct Trustee {
    quote: Vec<u8>,
    sig: Vec<u8>,
    ak: Vec<u8>,
    pcrs: Vec<u8>,
    nonce: Vec<u8>,
}

fn trustee() -> Trustee {
    let v: serde_json::Value = serde_json::from_slice(include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/tpm/trustee-tpm_evidence.json"
    )))
    .unwrap();
    let b64 = |s: &serde_json::Value| {
        base64::engine::general_purpose::STANDARD
            .decode(s.as_str().unwrap())
            .unwrap()
    };
    let quote = b64(&v["tpm_quote"]["message"]);
    let sig = b64(&v["tpm_quote"]["signature"]);
    let ak = b64(&v["ak_public"]);
    let hexes: Vec<Vec<u8>> = v["tpm_quote"]["pcrs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| hex::decode(h.as_str().unwrap()).unwrap())
        .collect();
    assert_eq!(hexes.len(), 24);
    let a = parse_attest(&quote).unwrap();
    let values = a
        .pcr_select
        .iter()
        .flat_map(|s| s.pcrs.iter().map(|&p| (s.bank, p)))
        .map(|(b, p)| (b, p, hexes[p as usize].clone()))
        .collect();
    let pcrs = PcrFile {
        selection: a.pcr_select.clone(),
        values,
    }
    .to_bytes()
    .unwrap();
    Trustee {
        nonce: a.extra_data.clone(),
        quote,
        sig,
        ak,
        pcrs,
    }
}

fn ev<'a>(
    quote: &'a [u8],
    signature: &'a [u8],
    ak: &'a [u8],
    pcrs: &'a [u8],
    nonce: &'a [u8],
) -> TpmEvidence<'a> {
    TpmEvidence {
        quote,
        signature,
        ak,
        pcrs,
        nonce,
        event_log: None,
    }
}

fn verify(e: TpmEvidence<'_>) -> Outcome<TpmClaims, TpmVerifyError> {
    TpmVerifier::new().verify(e, AT)
}

fn names(checks: &[crate::Check]) -> Vec<&'static str> {
    checks.iter().map(|c| c.name).collect()
}

#[track_caller]
fn rejected_at(o: Outcome<TpmClaims, TpmVerifyError>, check: &str) -> TpmVerifyError {
    match o {
        Ok(v) => panic!("accepted, expected rejection at {check}: {:?}", v.checks),
        Err(r) => {
            assert_eq!(r.error.check(), check, "{}", r.error);
            r.error
        }
    }
}

const ALL: [&str; 5] = ["parse", "signature", "nonce", "pcr_selection", "pcr_digest"];

#[test]
fn trustee_vector_verifies() {
    let t = trustee();
    let v = verify(ev(&t.quote, &t.sig, &t.ak, &t.pcrs, &t.nonce)).unwrap();
    assert_eq!(names(&v.checks), ALL);
    let c = &v.claims;
    assert_eq!(c.pcrs[&HashAlg::Sha256].len(), 24);
    assert_eq!(c.signature.scheme, "rsassa");
    assert_eq!(c.signature.hash, HashAlg::Sha256);
    assert_eq!(c.ak.format, AkFormat::SpkiDer);
    assert_eq!(c.ak.key, "rsa-2048");
    assert!(c.ak.name.is_none());
    // Surprise in the vector: extraData is 64 bytes, not a 32-byte binding.
    assert_eq!(t.nonce.len(), 64);
    let json = serde_json::to_value(c).unwrap();
    assert_eq!(json["pcrs"]["sha256"].as_object().unwrap().len(), 24);
}

#[test]
fn trustee_vector_tampering() {
    let t = trustee();
    // Every bit of pcrDigest, the clock and the nonce area is covered by the signature.
    for i in [10, 50, 100, t.quote.len() - 1] {
        let mut q = t.quote.clone();
        q[i] ^= 1;
        rejected_at(verify(ev(&q, &t.sig, &t.ak, &t.pcrs, &t.nonce)), "signature");
    }
    let mut s = t.sig.clone();
    *s.last_mut().unwrap() ^= 0x80;
    rejected_at(verify(ev(&t.quote, &s, &t.ak, &t.pcrs, &t.nonce)), "signature");
    let mut n = t.nonce.clone();
    n[0] ^= 1;
    rejected_at(verify(ev(&t.quote, &t.sig, &t.ak, &t.pcrs, &n)), "nonce");
    // Never pad or cut: the first 32 bytes of a 64-byte extraData are not a match.
    rejected_at(
        verify(ev(&t.quote, &t.sig, &t.ak, &t.pcrs, &t.nonce[..32])),
        "nonce",
    );
    // A PCR value changed in the PCR file.
    let mut f = parse_pcr_file(&t.pcrs);
    f.values[7].2[0] ^= 1;
    let p = f.to_bytes().unwrap();
    let e = rejected_at(verify(ev(&t.quote, &t.sig, &t.ak, &p, &t.nonce)), "pcr_digest");
    assert!(matches!(e, TpmVerifyError::PcrDigest { .. }));
}

fn parse_pcr_file(b: &[u8]) -> PcrFile {
    tpm::parse_pcr_file(b).unwrap()
}

#[test]
fn swtpm_rsa_ak_in_every_format() {
    let (q, s, p, n) = (
        fx!("rsa-quote.bin"),
        fx!("rsa-sig.bin"),
        fx!("rsa-pcrs.bin"),
        nonce(),
    );
    let tpm2b = fx!("ak-rsa.tpm2b");
    let pem = fx!("ak-rsa.pem");
    let der = x509_parser::pem::parse_x509_pem(pem).unwrap().1.contents;
    let mut fps = Vec::new();
    for (ak, fmt) in [
        (tpm2b, AkFormat::Tpm2bPublic),
        (&tpm2b[2..], AkFormat::TpmtPublic),
        (pem, AkFormat::SpkiPem),
        (der.as_slice(), AkFormat::SpkiDer),
    ] {
        let v = verify(ev(q, s, ak, p, &n)).unwrap();
        assert_eq!(names(&v.checks), ALL);
        assert_eq!(v.claims.ak.format, fmt);
        assert_eq!(v.claims.extra_data, hex::encode(&n));
        fps.push(v.claims.ak.fingerprint_sha256.clone());
        if matches!(fmt, AkFormat::Tpm2bPublic | AkFormat::TpmtPublic) {
            assert_eq!(
                v.claims.ak.name.as_deref(),
                Some(hex::encode(fx!("ak-rsa.name")).as_str())
            );
        }
    }
    assert!(fps.windows(2).all(|w| w[0] == w[1]));
}

#[test]
fn swtpm_ecc_and_pss_verify() {
    let n = nonce();
    for ak in [fx!("ak-ecc.tpm2b"), fx!("ak-ecc.pem")] {
        let v = verify(ev(
            fx!("ecc-quote.bin"),
            fx!("ecc-sig.bin"),
            ak,
            fx!("ecc-pcrs.bin"),
            &n,
        ))
        .unwrap();
        assert_eq!(v.claims.signature.scheme, "ecdsa");
        assert_eq!(v.claims.ak.key, "ecc-p256");
    }
    for ak in [fx!("ak-pss.tpm2b"), fx!("ak-pss.pem")] {
        let v = verify(ev(
            fx!("pss-quote.bin"),
            fx!("pss-sig.bin"),
            ak,
            fx!("pss-pcrs.bin"),
            &n,
        ))
        .unwrap();
        assert_eq!(v.claims.signature.scheme, "rsapss");
    }
}

#[test]
fn pss_max_salt_is_rejected_hash_length_salt_accepted() {
    let n = nonce();
    let (q, p, ak) = (fx!("pss-quote.bin"), fx!("pss-pcrs.bin"), fx!("maxsalt-ak.pem"));
    verify(ev(q, fx!("maxsalt-control-sig.bin"), ak, p, &n)).unwrap();
    let e = rejected_at(verify(ev(q, fx!("maxsalt-sig.bin"), ak, p, &n)), "signature");
    assert!(matches!(e, TpmVerifyError::BadSignature));
}

#[test]
fn ecdsa_tampering_and_short_components() {
    let n = nonce();
    let (q, s, p, ak) = (
        fx!("ecc-quote.bin"),
        fx!("ecc-sig.bin"),
        fx!("ecc-pcrs.bin"),
        fx!("ak-ecc.tpm2b"),
    );
    let mut bad = s.to_vec();
    bad[10] ^= 1;
    rejected_at(verify(ev(q, &bad, ak, p, &n)), "signature");
    // r with one more byte than P-256 has: parse ok, signature refuses it.
    let sig = tpm::parse_signature(s).unwrap();
    let Signature::Ecdsa { r, s: sv, .. } = sig else {
        panic!()
    };
    let mut long = vec![0x00, 0x18, 0x00, 0x0b];
    long.extend(33u16.to_be_bytes());
    long.push(0);
    long.extend(&r);
    long.extend(32u16.to_be_bytes());
    long.extend(&sv);
    let e = rejected_at(verify(ev(q, &long, ak, p, &n)), "signature");
    assert!(matches!(e, TpmVerifyError::EcdsaComponentTooLong { .. }));
}

#[test]
fn wrong_keys_are_rejected_at_signature() {
    let n = nonce();
    let (q, s, p) = (fx!("rsa-quote.bin"), fx!("rsa-sig.bin"), fx!("rsa-pcrs.bin"));
    // ECC key for an RSA signature.
    let e = rejected_at(verify(ev(q, s, fx!("ak-ecc.pem"), p, &n)), "signature");
    assert!(matches!(e, TpmVerifyError::SchemeKeyMismatch { .. }));
    // Another RSA key.
    let e = rejected_at(verify(ev(q, s, fx!("ak-pss.pem"), p, &n)), "signature");
    assert!(matches!(e, TpmVerifyError::BadSignature));
    // An RSAPSS-only TPM key for an RSASSA signature.
    let e = rejected_at(verify(ev(q, s, fx!("ak-pss.tpm2b"), p, &n)), "signature");
    assert!(matches!(e, TpmVerifyError::SchemeMismatch { .. }));
    // The right key with `restricted` cleared: not an AK.
    let mut ak = fx!("ak-rsa.tpm2b").to_vec();
    ak[2 + 2 + 2 + 1] &= !0x01; // objectAttributes bit 16
    let e = rejected_at(verify(ev(q, s, &ak, p, &n)), "signature");
    assert!(matches!(e, TpmVerifyError::AkNotRestrictedSigning(_)));
}

#[test]
fn pcr_file_disagreeing_with_quote() {
    let n = nonce();
    let (q, s, ak) = (fx!("rsa-quote.bin"), fx!("rsa-sig.bin"), fx!("ak-rsa.tpm2b"));
    let mut f = parse_pcr_file(fx!("rsa-pcrs.bin"));
    // One PCR fewer.
    f.selection[0].pcrs.pop();
    f.values.pop();
    let p = f.to_bytes().unwrap();
    let e = rejected_at(verify(ev(q, s, ak, &p, &n)), "pcr_selection");
    assert!(e.to_string().contains("sha256:0,1,2,3,7"), "{e}");
    // Same PCRs in another bank.
    let mut f = parse_pcr_file(fx!("rsa-pcrs.bin"));
    f.selection[0].bank = HashAlg::Sha384;
    for v in &mut f.values {
        v.0 = HashAlg::Sha384;
        v.2 = vec![0; 48];
    }
    let p = f.to_bytes().unwrap();
    rejected_at(verify(ev(q, s, ak, &p, &n)), "pcr_selection");
    // Values swapped: same selection, digest differs.
    let mut f = parse_pcr_file(fx!("rsa-pcrs.bin"));
    let last = f.values.len() - 1;
    let tmp = f.values[0].2.clone();
    f.values[0].2 = f.values[last].2.clone();
    f.values[last].2 = tmp;
    let p = f.to_bytes().unwrap();
    rejected_at(verify(ev(q, s, ak, &p, &n)), "pcr_digest");
}

#[test]
fn unallocated_bank_quote_verifies() {
    let n = nonce();
    let v = verify(ev(
        fx!("unalloc-quote.bin"),
        fx!("unalloc-sig.bin"),
        fx!("ak-rsa.tpm2b"),
        fx!("unalloc-pcrs.bin"),
        &n,
    ))
    .unwrap();
    assert_eq!(v.claims.pcrs[&HashAlg::Sha256].len(), 3);
}

#[test]
fn malformed_inputs_are_parse_rejections_never_panics() {
    let n = nonce();
    let (q, s, p, ak) = (
        fx!("rsa-quote.bin"),
        fx!("rsa-sig.bin"),
        fx!("rsa-pcrs.bin"),
        fx!("ak-rsa.tpm2b"),
    );
    for i in 0..q.len() {
        rejected_at(verify(ev(&q[..i], s, ak, p, &n)), "parse");
    }
    for i in 0..s.len() {
        rejected_at(verify(ev(q, &s[..i], ak, p, &n)), "parse");
    }
    for i in 0..ak.len() {
        rejected_at(verify(ev(q, s, &ak[..i], p, &n)), "parse");
    }
    for i in (0..p.len()).step_by(7) {
        rejected_at(verify(ev(q, s, ak, &p[..i], &n)), "parse");
    }
    let mut long = q.to_vec();
    long.push(0);
    rejected_at(verify(ev(&long, s, ak, p, &n)), "parse");
    rejected_at(verify(ev(q, s, b"-----BEGIN CERTIFICATE-----\n", p, &n)), "parse");
    rejected_at(verify(ev(q, s, &[0x30, 0x03, 1, 2, 3], p, &n)), "parse");
}

#[test]
fn event_log_failure_is_named() {
    let n = nonce();
    let bogus = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/tpm/keylime-binary_bios_measurements-bogus"
    ));
    let mut e = ev(
        fx!("rsa-quote.bin"),
        fx!("rsa-sig.bin"),
        fx!("ak-rsa.tpm2b"),
        fx!("rsa-pcrs.bin"),
        &n,
    );
    e.event_log = Some(bogus);
    let r = verify(e).unwrap_err();
    assert_eq!(r.error.check(), "event_log");
    assert_eq!(names(&r.checks()), [&ALL[..], &["event_log"]].concat());
    e.event_log = Some(&[]);
    assert_eq!(verify(e).unwrap_err().error.check(), "event_log");
}

/// One verifier across rounds, as the service uses it: the AK's parsed key comes from the
/// cache after the first round, and every evidence check still runs on every round.
#[test]
fn cached_ak_still_checks_everything() {
    let v = TpmVerifier::new();
    let n = nonce();
    let (q, s, ak, p) = (
        fx!("rsa-quote.bin"),
        fx!("rsa-sig.bin"),
        fx!("ak-rsa.pem"),
        fx!("rsa-pcrs.bin"),
    );
    let first = v.verify(ev(q, s, ak, p, &n), AT).unwrap();
    assert_eq!((v.aks.len(), v.keys.len()), (1, 1));
    let again = v.verify(ev(q, s, ak, p, &n), AT).unwrap();
    assert_eq!(
        first.claims.ak.fingerprint_sha256,
        again.claims.ak.fingerprint_sha256
    );
    // Same AK (cached), tampered signature / other nonce / other PCR value: all refused.
    let mut bad_sig = s.to_vec();
    let last = bad_sig.len() - 1;
    bad_sig[last] ^= 1;
    rejected_at(v.verify(ev(q, &bad_sig, ak, p, &n), AT), "signature");
    let mut other = n.clone();
    other[0] ^= 1;
    rejected_at(v.verify(ev(q, s, ak, p, &other), AT), "nonce");
    let mut bad_pcrs = p.to_vec();
    let pcr16 = hex::decode("7f0cc2bc7786a5e57a372d18fea5a9ac").unwrap();
    let at = bad_pcrs.windows(16).position(|w| w == pcr16.as_slice()).unwrap();
    bad_pcrs[at] ^= 1;
    rejected_at(v.verify(ev(q, s, ak, &bad_pcrs, &n), AT), "pcr_digest");
    // A different AK (ECC) is a different cache entry, and the RSA quote does not verify
    // with it.
    rejected_at(v.verify(ev(q, s, fx!("ak-ecc.pem"), p, &n), AT), "signature");
    assert_eq!(v.aks.len(), 2);
    // The ECC AK's own quote verifies through the same verifier.
    v.verify(
        ev(
            fx!("ecc-quote.bin"),
            fx!("ecc-sig.bin"),
            fx!("ak-ecc.pem"),
            fx!("ecc-pcrs.bin"),
            &n,
        ),
        AT,
    )
    .unwrap();
}
