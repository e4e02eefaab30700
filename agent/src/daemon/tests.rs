use super::*;

#[test]
fn tls_key_is_generated_private_and_reused() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("state");
    let k1 = TlsKey::load_or_generate(&dir).unwrap();
    let meta = std::fs::metadata(dir.join(TLS_KEY_FILE)).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let k2 = TlsKey::load_or_generate(&dir).unwrap();
    assert_eq!(k1.spki_der(), k2.spki_der());
    // SPKI DER of a P-256 key: SEQUENCE, 91 bytes.
    assert_eq!(k1.spki_der().len(), 91);
    assert!(!format!("{k1:?}").contains("PRIVATE"));
    // A key others can read is refused, not used.
    std::fs::set_permissions(dir.join(TLS_KEY_FILE), std::fs::Permissions::from_mode(0o640)).unwrap();
    let e = TlsKey::load_or_generate(&dir).unwrap_err();
    assert_eq!(e.check(), "tls_key");
    assert!(e.to_string().contains("0640"), "{e}");
}

#[test]
fn node_identity_must_match_the_key() {
    let d = tempfile::tempdir().unwrap();
    let key = TlsKey::load_or_generate(d.path()).unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
    let other = rcgen::KeyPair::generate().unwrap();
    let p = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    let wrong = p.signed_by(&other, &issuer).unwrap();
    let e = NodeIdentity::new("n1".into(), wrong.pem(), ca.pem(), key).unwrap_err();
    assert!(e.to_string().contains("not for this agent's TLS key"), "{e}");

    let key = TlsKey::load_or_generate(d.path()).unwrap();
    let spki = rcgen::SubjectPublicKeyInfo::from_der(key.spki_der()).unwrap();
    let right = p.signed_by(&spki, &issuer).unwrap();
    let e = NodeIdentity::new("bad id\n".into(), right.pem(), ca.pem(), key).unwrap_err();
    assert_eq!(e.check(), "node_cert");
    let key = TlsKey::load_or_generate(d.path()).unwrap();
    let id = NodeIdentity::new("n1".into(), right.pem(), ca.pem(), key).unwrap();
    id.store(d.path()).unwrap();
    let back = NodeIdentity::load(d.path()).unwrap();
    assert_eq!(back.node_id, "n1");
    assert_eq!(back.certificate_pem, right.pem());
    assert!(back.server_config().is_ok());
    assert!(!format!("{back:?}").contains("PRIVATE"));
}

#[test]
fn content_type_and_failure_checks() {
    let mut h = HeaderMap::new();
    assert!(!is_cbor(&h));
    h.insert(header::CONTENT_TYPE, "application/CBOR; x=1".parse().unwrap());
    assert!(is_cbor(&h));
    h.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
    assert!(!is_cbor(&h));
    let f = RoundFailure::Round(RoundError::Collect(CollectError::Failed {
        kind: "tpm",
        reason: "x".into(),
    }));
    assert_eq!(f.check(), "collect.tpm");
    assert_eq!(
        RoundFailure::Timeout(Duration::from_secs(1)).check(),
        "round_timeout"
    );
    assert_eq!(printable("a\nb\u{1b}[31m"), "a b [31m");
}

#[tokio::test]
async fn unavailable_kinds_reach_the_platform_map() {
    let rounds = Arc::new(Rounds::new(
        Session::generate().unwrap(),
        vec![Arc::new(NotBuilt("snp")), Arc::new(NotBuilt("nvgpu"))],
        platform_facts("n1"),
        Duration::from_secs(5),
    ));
    let b = rounds.round(Nonce([5; 32])).await.unwrap();
    assert_eq!(b.nonce, Nonce([5; 32]));
    assert_eq!(b.session_keys, *rounds.session().public_keys());
    assert_eq!(b.platform["node_name"], "n1");
    assert_eq!(b.platform["agent_version"], env!("CARGO_PKG_VERSION"));
    assert!(b.platform["unavailable.snp"].contains("built without"));
    assert!(b.platform.contains_key("unavailable.nvgpu"));
}
