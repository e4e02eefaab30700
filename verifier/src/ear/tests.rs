use super::*;
use crate::check::EvidenceVerifier;
use crate::nvgpu::{NvgpuEvidence, NvgpuVerifier};
use crate::snp::{SnpEvidence, SnpVerifier};
use aws_lc_rs::digest;
use aws_lc_rs::rand::SystemRandom;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use coset::{iana, CoseSign1, CoseSign1Builder, HeaderBuilder, TaggedCborSerializable};

const NOW: UnixTime = UnixTime(1_750_000_000);

fn snp_testdata(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/testdata/snp/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn nvidia_testdata(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/testdata/nvidia/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// A fixed result: every field set, hand-made submods.
fn fixed() -> AttestationResult {
    let tpm = Submod {
        status: TrustTier::Affirming,
        trust_vector: TrustVector {
            instance_identity: Some(2),
            hardware: Some(2),
            ..TrustVector::default()
        },
        policy_ids: vec!["eu-sovereign".into()],
        device_claims: Claims::from([("clock".into(), ClaimValue::Int(42))]),
        annotations: Claims::new(),
    };
    let gpu0 = Submod {
        status: TrustTier::Contraindicated,
        trust_vector: TrustVector {
            executables: Some(96),
            ..TrustVector::default()
        },
        policy_ids: vec![],
        device_claims: Claims::new(),
        annotations: Claims::from([("failed-check".into(), ClaimValue::Text("rim".into()))]),
    };
    AttestationResult {
        iat: 1_750_000_000,
        exp: 1_750_003_600,
        nonce: vec![0xAA; 32],
        status: TrustTier::Contraindicated,
        verifier_id: VerifierId {
            build: "custody 0.1.0".into(),
            developer: "https://example.invalid/custody".into(),
        },
        submods: BTreeMap::from([("tpm".into(), tpm), ("gpu0".into(), gpu0)]),
        node_id: "node-a".into(),
        site: Some("par1".into()),
        country: Some("FR".into()),
        operator: Some("Example SAS".into()),
        policy_id: Some("eu-sovereign".into()),
        policy_digest: Some(vec![0x11; 32]),
        attributes: Claims::from([("cloud_act_exposed".into(), ClaimValue::Bool(false))]),
    }
}

/// A result whose status is consistent, expiring an hour after `iat`.
fn simple(iat: i64) -> AttestationResult {
    let mut r = fixed();
    r.iat = iat;
    r.exp = iat + 3600;
    r
}

#[test]
fn round_trip() {
    let key = EarSigningKey::generate().unwrap();
    let r = fixed();
    let token = sign(&r, &key).unwrap();
    // COSE_Sign1 tag 18.
    assert_eq!(token.first(), Some(&0xD2));
    let back = verify(&token, key.public_key(), NOW).unwrap();
    assert_eq!(back, r);
}

#[test]
fn every_payload_byte_is_covered_by_the_signature() {
    let key = EarSigningKey::generate().unwrap();
    let r = fixed();
    let token = sign(&r, &key).unwrap();
    let payload = r.to_cbor().unwrap();
    let at = token
        .windows(payload.len())
        .position(|w| w == payload.as_slice())
        .unwrap();
    for i in at..at + payload.len() {
        let mut t = token.clone();
        t[i] ^= 0x01;
        let e = verify(&t, key.public_key(), NOW).unwrap_err();
        assert_eq!(e.check(), "ear_signature", "byte {i}: {e}");
        assert!(matches!(e, EarError::Signature), "byte {i}: {e}");
    }
    // The signature itself.
    let mut t = token.clone();
    let last = t.len() - 1;
    t[last] ^= 0x80;
    assert!(matches!(
        verify(&t, key.public_key(), NOW),
        Err(EarError::Signature)
    ));
}

#[test]
fn wrong_key_is_refused() {
    let key = EarSigningKey::generate().unwrap();
    let other = EarSigningKey::generate().unwrap();
    let token = sign(&fixed(), &key).unwrap();
    // The kid names the signer, so another key fails before the ECDSA check...
    let e = verify(&token, other.public_key(), NOW).unwrap_err();
    assert!(matches!(e, EarError::KeyId));
    assert_eq!(e.check(), "ear_signature");
    // ...and a token without a kid fails at the signature.
    let mut s = CoseSign1::from_tagged_slice(&token).unwrap();
    s.protected = coset::ProtectedHeader {
        original_data: None,
        header: HeaderBuilder::new()
            .algorithm(iana::Algorithm::ES256)
            .content_type(CONTENT_TYPE.to_owned())
            .build(),
    };
    let no_kid = s.to_tagged_vec().unwrap();
    assert!(matches!(
        verify(&no_kid, other.public_key(), NOW),
        Err(EarError::Signature)
    ));
}

#[test]
fn expired_is_refused() {
    let key = EarSigningKey::generate().unwrap();
    let r = fixed();
    let token = sign(&r, &key).unwrap();
    assert!(verify(&token, key.public_key(), UnixTime(r.exp - 1)).is_ok());
    for now in [r.exp, r.exp + 1, i64::MAX] {
        let e = verify(&token, key.public_key(), UnixTime(now)).unwrap_err();
        assert_eq!(e.check(), "ear_expired");
        assert!(matches!(e, EarError::Expired { exp, .. } if exp == r.exp));
    }
}

#[test]
fn malformed_tokens_are_format_errors() {
    let key = EarSigningKey::generate().unwrap();
    let token = sign(&fixed(), &key).unwrap();
    for bad in [&token[..token.len() - 1], &[][..], &[0xD2, 0x84][..]] {
        assert_eq!(
            verify(bad, key.public_key(), NOW).unwrap_err().check(),
            "ear_format"
        );
    }
    let mut trailing = token.clone();
    trailing.push(0);
    assert_eq!(
        verify(&trailing, key.public_key(), NOW).unwrap_err().check(),
        "ear_format"
    );
}

#[test]
fn other_algorithms_and_critical_headers_are_refused() {
    let key = EarSigningKey::generate().unwrap();
    let token = sign(&fixed(), &key).unwrap();
    let resign = |protected: coset::Header| {
        let s = CoseSign1::from_tagged_slice(&token).unwrap();
        CoseSign1Builder::new()
            .protected(protected)
            .payload(s.payload.unwrap())
            .create_signature(b"", |tbs| {
                key.pair
                    .sign(&SystemRandom::new(), tbs)
                    .unwrap()
                    .as_ref()
                    .to_vec()
            })
            .build()
            .to_tagged_vec()
            .unwrap()
    };
    let es384 = resign(HeaderBuilder::new().algorithm(iana::Algorithm::ES384).build());
    let e = verify(&es384, key.public_key(), NOW).unwrap_err();
    assert!(matches!(e, EarError::Algorithm(_)), "{e}");
    assert_eq!(e.check(), "ear_signature");
    let crit = resign(
        HeaderBuilder::new()
            .algorithm(iana::Algorithm::ES256)
            .add_critical(iana::HeaderParameter::CounterSignature)
            .build(),
    );
    assert!(matches!(
        verify(&crit, key.public_key(), NOW),
        Err(EarError::Algorithm(_))
    ));
    // The same payload, correctly re-signed, still verifies: the refusals are the headers.
    let ok = resign(
        HeaderBuilder::new()
            .algorithm(iana::Algorithm::ES256)
            .content_type(CONTENT_TYPE.to_owned())
            .build(),
    );
    assert!(verify(&ok, key.public_key(), NOW).is_ok());
}

/// Issue 19 item 11: the EAR key also signs migration tickets. A message whose protected
/// content type is another type's, or that puts one in the unprotected header, is
/// refused naming `content_type`, however good its signature.
#[test]
fn a_message_of_another_type_signed_with_the_ear_key_is_refused() {
    let key = EarSigningKey::generate().unwrap();
    let token = sign(&fixed(), &key).unwrap();
    let s = CoseSign1::from_tagged_slice(&token).unwrap();
    assert_eq!(
        s.protected.header.content_type,
        Some(coset::ContentType::Text(CONTENT_TYPE.to_owned()))
    );
    let resign = |protected: coset::Header, unprotected: coset::Header| {
        CoseSign1Builder::new()
            .protected(protected)
            .unprotected(unprotected)
            .payload(s.payload.clone().unwrap())
            .create_signature(b"", |tbs| {
                key.pair
                    .sign(&SystemRandom::new(), tbs)
                    .unwrap()
                    .as_ref()
                    .to_vec()
            })
            .build()
            .to_tagged_vec()
            .unwrap()
    };
    let es256 = || HeaderBuilder::new().algorithm(iana::Algorithm::ES256);
    let ticket = es256()
        .content_type("application/vnd.custody.ticket+cbor".to_owned())
        .build();
    // None at all is accepted (other issuers' EARs, see `verify`).
    assert!(verify(
        &resign(es256().build(), coset::Header::default()),
        key.public_key(),
        NOW
    )
    .is_ok());
    let cases = [
        (ticket, coset::Header::default()),
        (
            es256().build(),
            HeaderBuilder::new().content_type(CONTENT_TYPE.to_owned()).build(),
        ),
    ];
    for (protected, unprotected) in cases {
        let bytes = resign(protected, unprotected);
        let e = verify(&bytes, key.public_key(), NOW).unwrap_err();
        assert!(matches!(e, EarError::ContentType { .. }), "{e}");
        assert_eq!(e.check(), "content_type");
    }
}

#[test]
fn invalid_results_are_not_signed() {
    let key = EarSigningKey::generate().unwrap();
    type Edit = Box<dyn Fn(&mut AttestationResult)>;
    let cases: Vec<(&str, Edit)> = vec![
        ("short nonce", Box::new(|r| r.nonce = vec![1; 7])),
        ("long nonce", Box::new(|r| r.nonce = vec![1; 65])),
        ("exp before iat", Box::new(|r| r.exp = r.iat)),
        ("no submods", Box::new(|r| r.submods.clear())),
        (
            "status better than a submod",
            Box::new(|r| r.status = TrustTier::Warning),
        ),
        ("country", Box::new(|r| r.country = Some("fra".into()))),
        (
            "policy digest length",
            Box::new(|r| r.policy_digest = Some(vec![0; 31])),
        ),
        ("empty node id", Box::new(|r| r.node_id.clear())),
    ];
    for (what, f) in cases {
        let mut r = fixed();
        f(&mut r);
        let e = sign(&r, &key).unwrap_err();
        assert_eq!(e.check(), "ear_format", "{what}: {e}");
    }
}

/// The payload encoding, byte for byte. Computed once from this implementation and
/// checked independently below by decoding it with ciborium.
const FIXED_PAYLOAD_HEX: &str = concat!(
    "ae", // map(14)
    "04",
    "1a684eef90", // 4 (exp): 1750003600
    "06",
    "1a684ee180", // 6 (iat): 1750000000
    "0a",
    "5820",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", // 10 (eat_nonce)
    "190109",
    "781d",
    "7461673a696574662e6f72672c323032363a726174732f656172233034", // 265: profile
    "19010a",
    "a2", // 266 (submods): map(2)
    "63",
    "74706d", // "tpm" (shorter keys sort first)
    "a4",
    "1903e8",
    "02", // 1000: affirming
    "1903e9",
    "a2",
    "0002",
    "0402", // 1001: {0: 2, 4: 2}
    "1903eb",
    "81",
    "6c",
    "65752d736f7665726569676e", // 1003: ["eu-sovereign"]
    "1903ed",
    "a1",
    "65",
    "636c6f636b",
    "182a", // 1005: {"clock": 42}
    "64",
    "67707530", // "gpu0"
    "a3",
    "1903e8",
    "1860", // 1000: contraindicated
    "1903e9",
    "a1",
    "021860", // 1001: {2: 96}
    "1903ee",
    "a1",
    "6c",
    "6661696c65642d636865636b",
    "63",
    "72696d", // 1006: {"failed-check": "rim"}
    "1903e8",
    "1860", // 1000 (ear_status): contraindicated
    "1903ec",
    "a2", // 1004 (ear_verifier_id)
    "00",
    "781f",
    "68747470733a2f2f6578616d706c652e696e76616c69642f637573746f6479", // 0: developer
    "01",
    "6d",
    "637573746f647920302e312e30", // 1: build
    "3a000128df",
    "66",
    "6e6f64652d61", // -76000: "node-a"
    "3a000128e0",
    "64",
    "70617231", // -76001: "par1"
    "3a000128e1",
    "62",
    "4652", // -76002: "FR"
    "3a000128e2",
    "6b",
    "4578616d706c6520534153", // -76003: "Example SAS"
    "3a000128e3",
    "6c",
    "65752d736f7665726569676e", // -76004: "eu-sovereign"
    "3a000128e4",
    "5820",
    "1111111111111111111111111111111111111111111111111111111111111111", // -76005
    "3a000128e5",
    "a1",
    "71",
    "636c6f75645f6163745f6578706f736564",
    "f4", // -76006: {"cloud_act_exposed": false}
);

#[test]
fn payload_known_answer() {
    let enc = fixed().to_cbor().unwrap();
    assert_eq!(hex::encode(&enc), FIXED_PAYLOAD_HEX);

    // Independent check of the keys with ciborium's generic Value.
    let v: Value = ciborium::from_reader(enc.as_slice()).unwrap();
    let Value::Map(top) = v else { panic!("not a map") };
    let keys: Vec<i128> = top
        .iter()
        .map(|(k, _)| i128::from(k.as_integer().unwrap()))
        .collect();
    assert_eq!(
        keys,
        [4, 6, 10, 265, 266, 1000, 1004, -76000, -76001, -76002, -76003, -76004, -76005, -76006]
    );
    let get = |k: i128| {
        &top.iter()
            .find(|(key, _)| i128::from(key.as_integer().unwrap()) == k)
            .unwrap()
            .1
    };
    assert_eq!(get(265).as_text(), Some(EAR_PROFILE));
    assert_eq!(get(6).as_integer().map(i128::from), Some(1_750_000_000));
    assert_eq!(get(4).as_integer().map(i128::from), Some(1_750_003_600));
    assert_eq!(get(10).as_bytes(), Some(&vec![0xAA; 32]));
    assert_eq!(get(1000).as_integer().map(i128::from), Some(96));
    let vid = get(1004).as_map().unwrap();
    assert_eq!(vid[0].0.as_integer().map(i128::from), Some(0));
    assert_eq!(vid[0].1.as_text(), Some("https://example.invalid/custody"));
    let submods = get(266).as_map().unwrap();
    let (name, tpm) = &submods[0];
    assert_eq!(name.as_text(), Some("tpm"));
    let tpm_keys: Vec<i128> = tpm
        .as_map()
        .unwrap()
        .iter()
        .map(|(k, _)| i128::from(k.as_integer().unwrap()))
        .collect();
    assert_eq!(tpm_keys, [1000, 1001, 1003, 1005]);
    // The encoding decodes back to the same result.
    assert_eq!(AttestationResult::from_cbor(&enc).unwrap(), fixed());
}

#[test]
fn decoder_refuses_duplicates_trailing_bytes_and_bad_values() {
    let enc = fixed().to_cbor().unwrap();
    let mut trailing = enc.clone();
    trailing.push(0xF6);
    assert!(matches!(
        AttestationResult::from_cbor(&trailing),
        Err(EarError::Claims(_))
    ));
    // Duplicate top-level key: the map header says 15 entries, then `6: iat` twice.
    let mut dup = vec![0xAF];
    dup.extend_from_slice(&enc[1..]);
    dup.extend_from_slice(&hex::decode("061a684ee180").unwrap());
    let e = AttestationResult::from_cbor(&dup).unwrap_err();
    assert!(e.to_string().contains("duplicate"), "{e}");
    // Another profile.
    let other = hex::encode(&enc).replace(
        "7461673a696574662e6f72672c323032363a726174732f656172233034",
        "7461673a696574662e6f72672c323032363a726174732f656172233033",
    );
    assert!(AttestationResult::from_cbor(&hex::decode(other).unwrap()).is_err());
    // A status that is not a tier (96 -> 95).
    let bad_tier = hex::encode(&enc).replacen("1903e81860", "1903e8185f", 1);
    assert!(AttestationResult::from_cbor(&hex::decode(bad_tier).unwrap()).is_err());
    assert!(AttestationResult::from_cbor(&[]).is_err());
}

#[test]
fn pkcs8_export_import_keeps_the_key() {
    let key = EarSigningKey::generate().unwrap();
    let der = key.to_pkcs8().unwrap();
    let again = EarSigningKey::from_pkcs8(&der).unwrap();
    assert_eq!(again.public_key(), key.public_key());
    let token = sign(&fixed(), &again).unwrap();
    assert!(verify(&token, key.public_key(), NOW).is_ok());
    assert!(EarSigningKey::from_pkcs8(&der[..der.len() - 1]).is_err());
    assert!(!format!("{key:?}").contains(&hex::encode(&der)));
    assert!(VerifierKey::from_sec1(&key.public_key().as_sec1()[..64]).is_err());
}

#[test]
fn kid_is_the_rfc7638_thumbprint() {
    // RFC 7638 over {"crv","kty","x","y"}; checked against the JWK we publish.
    let key = EarSigningKey::generate().unwrap();
    let jwk: serde_json::Value = serde_json::from_str(&key.public_key().to_jwk()).unwrap();
    let canonical = format!(
        r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
        jwk["x"].as_str().unwrap(),
        jwk["y"].as_str().unwrap()
    );
    let d = digest::digest(&digest::SHA256, canonical.as_bytes());
    assert_eq!(key.public_key().kid(), d.as_ref());
    assert_eq!(jwk["kid"].as_str().unwrap(), URL_SAFE_NO_PAD.encode(d.as_ref()));
}

// --- submods from real verifier outcomes ---

/// 2025-06-01: inside the Trustee VCEK's validity (as in snp.rs's tests).
const SNP_AT: UnixTime = UnixTime(1_748_736_000);

fn snp(vcek: &str) -> Outcome<crate::snp::SnpClaims, crate::snp::SnpError> {
    let report = snp_testdata("trustee-test-report.bin");
    let vek = snp_testdata(vcek);
    SnpVerifier::builtin().unwrap().verify(
        SnpEvidence {
            report: &report,
            vek: &vek,
            ca_chain: None,
            expected_report_data: None,
            allow_debug: false,
        },
        SNP_AT,
    )
}

#[test]
fn verified_snp_affirms_identity_and_hardware_only() {
    let o = snp("trustee-test-vcek.der");
    assert!(o.is_ok());
    let s = Submod::from_outcome(&o, Corroboration::default()).unwrap();
    // No CRL given: the chain's revocation is unchecked, so never better than warning.
    assert_eq!(s.status, TrustTier::Warning);
    assert_eq!(
        s.trust_vector,
        TrustVector {
            instance_identity: Some(2),
            hardware: Some(2),
            ..TrustVector::default()
        }
    );
    // The report's claims travel as attester claims.
    assert!(matches!(s.device_claims.get("chip_id"), Some(ClaimValue::Text(h)) if h.len() == 128));
    assert!(matches!(s.annotations.get("checks"), Some(ClaimValue::Array(a)) if !a.is_empty()));
    // Reference values matched by the caller add executables/configuration.
    let s = Submod::from_outcome(
        &o,
        Corroboration {
            executables_matched: true,
            configuration_matched: true,
            ..Corroboration::default()
        },
    )
    .unwrap();
    assert_eq!(s.trust_vector.executables, Some(2));
    assert_eq!(s.trust_vector.configuration, Some(2));
}

#[test]
fn rejected_snp_is_contraindicated_naming_the_check() {
    let o = snp("trustee-test-vcek-invalid-new.der");
    let s = Submod::from_outcome(&o, Corroboration::default()).unwrap();
    assert_eq!(s.status, TrustTier::Contraindicated);
    assert_eq!(
        s.trust_vector,
        TrustVector {
            hardware: Some(96),
            ..TrustVector::default()
        }
    );
    assert_eq!(
        s.annotations.get("failed-check"),
        Some(&ClaimValue::Text("cert_chain".into()))
    );
    assert!(s.device_claims.is_empty());
    // Even an enrolled key affirms nothing for rejected evidence.
    let s2 = Submod::from_outcome(
        &o,
        Corroboration {
            identity_key_endorsed: true,
            executables_matched: true,
            configuration_matched: true,
        },
    )
    .unwrap();
    assert_eq!(s2, s);
}

#[test]
fn verified_gpu_without_revocation_data_is_a_warning() {
    let report = hex::decode(
        String::from_utf8(nvidia_testdata("sdk-hopperAttestationReport.txt"))
            .unwrap()
            .trim(),
    )
    .unwrap();
    let certs = nvidia_testdata("sdk-hopperCertChain.txt");
    let nonce = hex::decode("27a328247bf7935c993341cf587be6f05986ccce4fe7ba2c54100bd616a58f66").unwrap();
    let o = NvgpuVerifier::new().unwrap().verify(
        NvgpuEvidence {
            report: &report,
            cert_chain: &certs,
            nonce: &nonce,
            rims: &[],
            library: None,
        },
        UnixTime(1_735_689_600),
    );
    assert!(o.is_ok());
    let s = Submod::from_outcome(&o, Corroboration::default()).unwrap();
    assert_eq!(s.trust_vector.instance_identity, Some(2));
    assert_eq!(s.trust_vector.hardware, Some(2));
    assert_eq!(
        s.trust_vector.executables, None,
        "no RIMs given: executables not evaluated"
    );
    assert_eq!(s.status, TrustTier::Warning, "revocation unchecked");

    // A full result with this submod signs, verifies, and keeps the device claims.
    let mut r = simple(1_750_000_000);
    r.submods = BTreeMap::from([("gpu0".into(), s)]);
    r.status = TrustTier::Warning;
    let key = EarSigningKey::generate().unwrap();
    let back = verify(&sign(&r, &key).unwrap(), key.public_key(), NOW).unwrap();
    assert_eq!(back, r);
}

// Interop with Veraison's `ear` crate: `interop/tests/ear_veraison.rs` (its own workspace,
// so `ear`'s dependencies stay out of Custody's lock file).
