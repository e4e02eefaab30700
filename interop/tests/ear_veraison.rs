//! Interop with Veraison's `ear` crate (the RATS EAR reference implementation): a Custody
//! EAR verifies and decodes with it, and an EAR it signs verifies in Custody.
//!
//! Its own workspace: `ear` brings reqwest, tokio, ring and a vendored OpenSSL (through
//! cose-rust), none of which Custody itself may depend on. `scripts/test.sh` runs it.
#![allow(clippy::unwrap_used)]

use base64::Engine as _;
use custody_verifier::ear::*;
use custody_verifier::UnixTime;
use std::collections::BTreeMap;

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

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn veraison_ear_verifies_and_decodes_a_custody_ear() {
    // `ear` checks `exp` against the wall clock, so this result is issued now.
    let r = simple(unix_now());
    let key = EarSigningKey::generate().unwrap();
    let token = sign(&r, &key).unwrap();
    let jwk = key.public_key().to_jwk();

    let e = ear::Ear::from_cose_jwk(&token, ear::Algorithm::ES256, jwk.as_bytes()).unwrap();
    assert_eq!(e.profile, EAR_PROFILE);
    assert_eq!(e.iat, r.iat);
    assert_eq!(e.exp, Some(r.exp));
    assert_eq!(e.vid.build, "custody 0.1.0");
    assert_eq!(e.vid.developer, "https://example.invalid/custody");
    assert_eq!(e.status, Some(ear::TrustTier::Contraindicated));
    assert!(e.nonce.is_some());
    assert_eq!(e.submods.len(), 2);
    let tpm = &e.submods["tpm"];
    assert_eq!(tpm.status, ear::TrustTier::Affirming);
    assert_eq!(tpm.trust_vector.instance_identity.value(), 2);
    assert_eq!(tpm.trust_vector.hardware.value(), 2);
    assert!(!tpm.trust_vector.executables.is_set());
    assert_eq!(tpm.policy_ids, ["eu-sovereign"]);
    assert_eq!(
        tpm.attester_claims.get("clock"),
        Some(&ear::RawValue::Integer(42))
    );
    let gpu0 = &e.submods["gpu0"];
    assert_eq!(gpu0.status, ear::TrustTier::Contraindicated);
    assert_eq!(gpu0.trust_vector.executables.value(), 96);
    assert_eq!(
        gpu0.verifier_claims.get("failed-check"),
        Some(&ear::RawValue::String("rim".into()))
    );
    assert!(e.validate().is_ok());

    // `ear` really checks the signature: a flipped payload byte makes it fail. Its
    // `from_cose` unwraps the verification result, so the failure is a panic, not an Err.
    let payload = r.to_cbor().unwrap();
    let at = token
        .windows(payload.len())
        .position(|w| w == payload.as_slice())
        .unwrap();
    let mut bad = token.clone();
    bad[at + 3] ^= 1;
    let res =
        std::panic::catch_unwind(|| ear::Ear::from_cose_jwk(&bad, ear::Algorithm::ES256, jwk.as_bytes()));
    assert!(!matches!(res, Ok(Ok(_))), "ear accepted a tampered token");
}

#[test]
fn custody_verifies_an_ear_signed_by_veraison_ear() {
    // The other direction: `ear` decodes a Custody EAR, then signs it again (tag 18, no
    // kid) with the same key, and Custody verifies that token.
    let r = simple(unix_now());
    // ear 0.6 hands the private scalar to cose-rust as `BigNum::to_vec()`, which drops
    // leading zero bytes; for the 1 key in 256 whose scalar starts with 0x00, signing
    // then fails (`CryptoStackError`) before any of Custody's bytes matter. Such a key is
    // replaced by another: whether `ear` can sign depends on the key alone.
    let (key, pem, mut e, token) = (0..32)
        .find_map(|_| {
            let key = EarSigningKey::generate().unwrap();
            let pem = format!(
                "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
                base64::engine::general_purpose::STANDARD.encode(key.to_pkcs8().unwrap())
            );
            let jwk = key.public_key().to_jwk();
            let e = ear::Ear::from_cose_jwk(&sign(&r, &key).unwrap(), ear::Algorithm::ES256, jwk.as_bytes())
                .unwrap();
            let token = e.sign_cose_pem(ear::Algorithm::ES256, pem.as_bytes()).ok()?;
            Some((key, pem, e, token))
        })
        .expect("ear could sign with none of 32 fresh P-256 keys");

    // `ear` keeps unregistered claims aside and does not re-encode them...
    let err = verify(&token, key.public_key(), UnixTime(unix_now())).unwrap_err();
    assert!(err.to_string().contains("custody.node-id"), "{err}");

    // ...until Custody's keys are registered as extensions, which picks the values up.
    use ear::RawValueKind as K;
    for (name, k, kind) in [
        ("custody.node-id", claim_key::CUSTODY_NODE_ID, K::String),
        ("custody.site", claim_key::CUSTODY_SITE, K::String),
        ("custody.country", claim_key::CUSTODY_COUNTRY, K::String),
        ("custody.operator", claim_key::CUSTODY_OPERATOR, K::String),
        ("custody.policy-id", claim_key::CUSTODY_POLICY_ID, K::String),
        (
            "custody.policy-digest",
            claim_key::CUSTODY_POLICY_DIGEST,
            K::Bytes,
        ),
        ("custody.attributes", claim_key::CUSTODY_ATTRIBUTES, K::Map),
    ] {
        e.extensions
            .register(name, i32::try_from(k).unwrap(), kind)
            .unwrap();
    }
    assert_eq!(
        e.extensions.get_by_name("custody.node-id"),
        Some(ear::RawValue::String("node-a".into()))
    );
    let token = e.sign_cose_pem(ear::Algorithm::ES256, pem.as_bytes()).unwrap();
    assert_eq!(token.first(), Some(&0xD2), "ear signs tagged COSE_Sign1 too");
    let back = verify(&token, key.public_key(), UnixTime(unix_now())).unwrap();
    assert_eq!(back, r);
}
