//! Enrollment against real swtpms: the verifier's EK chain and AK checks and its software
//! TPM2_MakeCredential, activated by the agent's collector (TPM2_ActivateCredential in the
//! TPM). Each swtpm has its own local CA (same subject names, different keys), so one
//! instance's EK certificate must not verify against another's CA. swtpm, swtpm_setup and
//! tpm2-tools are required: these tests fail (not skip) without them.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use custody_agent::collector::CollectError;
use custody_agent::tpm::{default_pcrs, TpmCollector, TpmConfig, TpmKeys};
use custody_e2e::Swtpm;
use custody_verifier::check::{FailedCheck, UnixTime};
use custody_verifier::enroll::{
    check_ak, make_credential, verify_ek, EkIdentity, EnrollError, KeyKind, ATTR_DECRYPT, ATTR_RESTRICTED,
};
use custody_verifier::x509::split_certs;

fn now() -> UnixTime {
    let s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    UnixTime(i64::try_from(s).unwrap())
}

fn random32() -> Vec<u8> {
    use std::io::Read;
    let mut b = vec![0u8; 32];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut b)
        .unwrap();
    b
}

/// A swtpm with the agent's collector on it, and what the agent would send.
struct Node {
    // Dropped first: the collector flushes its handles while swtpm still runs.
    c: TpmCollector,
    t: Swtpm,
    keys: TpmKeys,
    cert: Vec<u8>,
    cas: Vec<Vec<u8>>,
}

fn node() -> Node {
    let t = Swtpm::start();
    let c = TpmCollector::new(TpmConfig {
        tcti: t.tcti(),
        pcrs: default_pcrs(),
        event_log: None,
    })
    .unwrap();
    let keys = c.keys().unwrap();
    let cert = keys.ek_certificate.clone().expect("swtpm_setup --create-ek-cert");
    let mut cas = Vec::new();
    for p in t.ek_ca_certs() {
        cas.extend(split_certs(&std::fs::read(p).unwrap()).unwrap());
    }
    assert_eq!(cas.len(), 2, "root and issuing CA");
    Node {
        t,
        c,
        keys,
        cert,
        cas,
    }
}

impl Node {
    fn verify(&self) -> EkIdentity {
        verify_ek(&self.cert, &self.keys.ek_public, &self.cas, now()).unwrap()
    }

    fn ak_name(&self) -> Vec<u8> {
        check_ak(&self.keys.ak_public).unwrap().name
    }
}

#[track_caller]
fn assert_check<T: std::fmt::Debug>(r: Result<T, EnrollError>, check: &str) {
    match r {
        Err(e) => assert_eq!(e.check(), check, "{e}"),
        Ok(v) => panic!("expected `{check}` to fail, got {v:?}"),
    }
}

#[track_caller]
fn assert_activation_fails(c: &TpmCollector, id_object: &[u8], encrypted_secret: &[u8]) {
    match c.activate_credential(id_object, encrypted_secret) {
        Err(CollectError::Failed { kind, reason }) => {
            assert_eq!(kind, "tpm");
            assert!(reason.contains("TPM2_ActivateCredential"), "{reason}");
        }
        other => panic!("activation should fail, got {other:?}"),
    }
}

#[test]
fn enrollment_round_trip_on_one_tpm() {
    let a = node();

    // The EK certificate chains to this swtpm's CA and certifies this EK.
    let id = a.verify();
    assert_eq!(id.kind, KeyKind::Rsa2048);
    assert_eq!(id.issuer, "CN=swtpm-localca");
    assert_eq!(id.anchor, "CN=swtpm-localca-rootca");
    let der = x509_parser::parse_x509_certificate(&a.cert).unwrap();
    assert!(der.0.iter().all(|&b| b == 0), "only zero padding after the DER");
    let der_len = a.cert.len() - der.0.len();
    let digest = aws_lc_rs_sha256(&a.cert[..der_len]);
    assert_eq!(id.cert_sha256, digest);

    // The AK is a proper AK; its Name is the TPM's (tpm2_readpublic -n).
    let ak = check_ak(&a.keys.ak_public).unwrap();
    assert_eq!(ak.kind, KeyKind::Rsa2048);
    assert_eq!(ak.name.len(), 34);
    assert_eq!(&ak.name[..2], &[0x00, 0x0b]);

    // MakeCredential in software, ActivateCredential in the TPM: the secret comes back.
    for _ in 0..2 {
        let secret = random32();
        let cred = make_credential(&a.keys.ek_public, &ak.name, &secret).unwrap();
        assert_eq!(
            usize::from(u16::from_be_bytes([
                cred.encrypted_secret[0],
                cred.encrypted_secret[1]
            ])),
            256
        );
        let got =
            a.c.activate_credential(&cred.id_object, &cred.encrypted_secret)
                .unwrap();
        assert_eq!(got, secret);
    }
    // Shorter secrets too (up to the EK nameAlg digest size).
    let cred = make_credential(&a.keys.ek_public, &ak.name, b"x").unwrap();
    assert_eq!(
        a.c.activate_credential(&cred.id_object, &cred.encrypted_secret)
            .unwrap(),
        b"x"
    );

    // One flipped bit anywhere in the credential: the TPM refuses (integrity or OAEP).
    let secret = random32();
    let cred = make_credential(&a.keys.ek_public, &ak.name, &secret).unwrap();
    for i in [2, 5, 40, cred.id_object.len() - 1] {
        let mut bad = cred.id_object.clone();
        bad[i] ^= 0x01;
        assert_activation_fails(&a.c, &bad, &cred.encrypted_secret);
    }
    for i in [2, 100, cred.encrypted_secret.len() - 1] {
        let mut bad = cred.encrypted_secret.clone();
        bad[i] ^= 0x80;
        assert_activation_fails(&a.c, &cred.id_object, &bad);
    }
    // A size field that does not match is refused before the TPM sees it.
    let mut bad = cred.id_object.clone();
    bad.push(0);
    match a.c.activate_credential(&bad, &cred.encrypted_secret) {
        Err(CollectError::Failed { reason, .. }) => assert!(reason.contains("TPM2B_ID_OBJECT"), "{reason}"),
        other => panic!("{other:?}"),
    }
    // After the failures the untouched credential still activates (the AK was reloaded).
    assert_eq!(
        a.c.activate_credential(&cred.id_object, &cred.encrypted_secret)
            .unwrap(),
        secret
    );

    // tpm2-tools agree on the AK's Name.
    a.c.release();
    std::fs::write(a.t.path("ak.pub"), with_size(&a.keys.ak_public)).unwrap();
    a.t.tool(&[
        "tpm2_loadexternal",
        "-u",
        "ak.pub",
        "-c",
        "ak-ext.ctx",
        "-n",
        "ak.name",
    ]);
    assert_eq!(std::fs::read(a.t.path("ak.name")).unwrap(), ak.name);
}

fn with_size(b: &[u8]) -> Vec<u8> {
    let mut v = u16::try_from(b.len()).unwrap().to_be_bytes().to_vec();
    v.extend_from_slice(b);
    v
}

fn aws_lc_rs_sha256(b: &[u8]) -> [u8; 32] {
    let d = custody_formats::alg::HashAlg::Sha256.hash(&[b]);
    d.try_into().unwrap()
}

#[test]
fn padding_time_and_attribute_rejections() {
    let a = node();
    let (_, cert) = x509_parser::parse_x509_certificate(&a.cert).unwrap();
    let not_before = cert.validity().not_before.timestamp();
    let not_after = cert.validity().not_after.timestamp();

    // NV padding: zeros after the DER are fine and do not change the identity; anything
    // else after it is not.
    let id = a.verify();
    let mut padded = a.cert.clone();
    padded.resize(a.cert.len() + 300, 0);
    assert_eq!(verify_ek(&padded, &a.keys.ek_public, &a.cas, now()).unwrap(), id);
    let mut junk = padded.clone();
    junk[a.cert.len() + 10] = 1;
    assert_check(verify_ek(&junk, &a.keys.ek_public, &a.cas, now()), "ek_format");
    assert_check(
        verify_ek(&a.cert[..a.cert.len() - 1], &a.keys.ek_public, &a.cas, now()),
        "ek_format",
    );

    // Before the certificate existed, and after it expired (swtpm's notAfter is 9999-12-31).
    assert_check(
        verify_ek(&a.cert, &a.keys.ek_public, &a.cas, UnixTime(not_before - 1)),
        "ek_cert_validity",
    );
    assert_check(
        verify_ek(&a.cert, &a.keys.ek_public, &a.cas, UnixTime(not_after + 1)),
        "ek_cert_validity",
    );
    assert!(verify_ek(&a.cert, &a.keys.ek_public, &a.cas, UnixTime(not_before)).is_ok());

    // Only the root, or only the issuing CA, configured: no complete chain.
    assert_check(
        verify_ek(&a.cert, &a.keys.ek_public, &a.cas[..1], now()),
        "ek_cert_chain",
    );
    assert_check(
        verify_ek(&a.cert, &a.keys.ek_public, &a.cas[1..], now()),
        "ek_cert_chain",
    );
    let none: &[Vec<u8>] = &[];
    assert_check(
        verify_ek(&a.cert, &a.keys.ek_public, none, now()),
        "ek_cert_chain",
    );

    // AK attributes: the real AK's bytes with a bit changed (objectAttributes is the u32 at
    // offset 4 of TPMT_PUBLIC), and the EK (a decryption key) offered as the AK.
    let attrs = |p: &[u8]| u32::from_be_bytes(p[4..8].try_into().unwrap());
    let with_attrs = |v: u32| {
        let mut p = a.keys.ak_public.clone();
        p[4..8].copy_from_slice(&v.to_be_bytes());
        p
    };
    let ak_attrs = attrs(&a.keys.ak_public);
    assert_check(
        check_ak(&with_attrs(ak_attrs & !ATTR_RESTRICTED)),
        "ak_attributes",
    );
    assert_check(check_ak(&with_attrs(ak_attrs | ATTR_DECRYPT)), "ak_attributes");
    assert_check(check_ak(&with_attrs(ak_attrs & !(1 << 1))), "ak_attributes"); // fixedTPM
    assert_check(check_ak(&a.keys.ek_public), "ak_attributes");
    assert_check(check_ak(&a.keys.ak_public[..20]), "ak_format");

    // The EK must be a restricted decryption key: the AK offered as the EK is refused,
    // (its certificate key check fails first), and so is an EK with restricted cleared.
    assert_check(
        verify_ek(&a.cert, &a.keys.ak_public, &a.cas, now()),
        "ek_key_match",
    );
    let mut ek = a.keys.ek_public.clone();
    let v = attrs(&ek) & !ATTR_RESTRICTED;
    ek[4..8].copy_from_slice(&v.to_be_bytes());
    assert_check(verify_ek(&a.cert, &ek, &a.cas, now()), "ek_attributes");
    assert_check(make_credential(&ek, &a.ak_name(), &random32()), "ek_attributes");

    // Credential inputs of the wrong length.
    let name = a.ak_name();
    assert_check(
        make_credential(&a.keys.ek_public, &name[..33], &random32()),
        "credential",
    );
    assert_check(make_credential(&a.keys.ek_public, &name, &[0; 33]), "credential");
    assert_check(make_credential(&a.keys.ek_public, &name, &[]), "credential");
}

#[test]
fn another_tpm_is_told_apart() {
    let a = node();
    let b = node();
    // Same CA names, different CA keys.
    assert_eq!(b.verify().issuer, a.verify().issuer);

    // A's EK certificate against B's CA.
    assert_check(
        verify_ek(&a.cert, &a.keys.ek_public, &b.cas, now()),
        "ek_cert_chain",
    );
    // Both CAs configured (as a verifier trusting several vendors would): each chains to its
    // own, whatever the order.
    let both: Vec<Vec<u8>> = b.cas.iter().chain(&a.cas).cloned().collect();
    assert_eq!(
        verify_ek(&a.cert, &a.keys.ek_public, &both, now()).unwrap(),
        a.verify()
    );
    assert_eq!(
        verify_ek(&b.cert, &b.keys.ek_public, &both, now()).unwrap(),
        b.verify()
    );
    // B's issuing CA with A's root (or the reverse): the issuing CA's signature fails.
    let mixed = vec![a.cas[0].clone(), b.cas[1].clone()];
    assert_check(
        verify_ek(&a.cert, &a.keys.ek_public, &mixed, now()),
        "ek_cert_chain",
    );

    // A's certificate with B's EK public area.
    assert_check(
        verify_ek(&a.cert, &b.keys.ek_public, &a.cas, now()),
        "ek_key_match",
    );

    // A credential for A's EK but B's AK Name, activated on A: A's AK has another Name.
    let secret = random32();
    let cred = make_credential(&a.keys.ek_public, &b.ak_name(), &secret).unwrap();
    assert_activation_fails(&a.c, &cred.id_object, &cred.encrypted_secret);
    // A credential for B's EK and A's AK Name, activated on A: A's EK cannot open the seed.
    let cred = make_credential(&b.keys.ek_public, &a.ak_name(), &secret).unwrap();
    assert_activation_fails(&a.c, &cred.id_object, &cred.encrypted_secret);
    // Each TPM activates its own.
    for n in [&a, &b] {
        let cred = make_credential(&n.keys.ek_public, &n.ak_name(), &secret).unwrap();
        assert_eq!(
            n.c.activate_credential(&cred.id_object, &cred.encrypted_secret)
                .unwrap(),
            secret
        );
    }
}

/// An ECC P-256 EK (TCG template L-2, tpm2-tools) and an ECC AK: the ECDH/KDFe credential
/// made in software is activated by the TPM (tpm2-tools' credential file: magic, version,
/// TPM2B_ID_OBJECT, TPM2B_ENCRYPTED_SECRET).
#[test]
fn ecc_ek_credential_activates_in_the_tpm() {
    let t = Swtpm::start();
    t.tool(&["tpm2_createek", "-c", "ek.ctx", "-G", "ecc", "-u", "ek.pub"]);
    t.tool(&[
        "tpm2_createak",
        "-C",
        "ek.ctx",
        "-c",
        "ak.ctx",
        "-G",
        "ecc",
        "-g",
        "sha256",
        "-s",
        "ecdsa",
        "-u",
        "ak.pub",
        "-f",
        "tss",
        "-n",
        "ak.name",
    ]);
    let ek_public = std::fs::read(t.path("ek.pub")).unwrap()[2..].to_vec();
    let ak_public = std::fs::read(t.path("ak.pub")).unwrap()[2..].to_vec();
    let ak = check_ak(&ak_public).unwrap();
    assert_eq!(ak.kind, KeyKind::EccP256);
    assert_eq!(ak.name, std::fs::read(t.path("ak.name")).unwrap());
    let secret = random32();
    let activate = |ak_name: &[u8]| {
        let cred = make_credential(&ek_public, ak_name, &secret).unwrap();
        let mut file = 0xBADC_C0DEu32.to_be_bytes().to_vec();
        file.extend(1u32.to_be_bytes());
        file.extend(&cred.id_object);
        file.extend(&cred.encrypted_secret);
        std::fs::write(t.path("cred.bin"), file).unwrap();
        let _ = std::fs::remove_file(t.path("secret.bin"));
        t.tool(&["tpm2_startauthsession", "--policy-session", "-S", "s.ctx"]);
        t.tool(&["tpm2_policysecret", "-S", "s.ctx", "-c", "e"]);
        let ok = t.try_tool(&[
            "tpm2_activatecredential",
            "-c",
            "ak.ctx",
            "-C",
            "ek.ctx",
            "-i",
            "cred.bin",
            "-o",
            "secret.bin",
            "-P",
            "session:s.ctx",
        ]);
        let _ = t.try_tool(&["tpm2_flushcontext", "s.ctx"]);
        assert!(t.try_tool(&["tpm2_flushcontext", "-t"]));
        ok.then(|| std::fs::read(t.path("secret.bin")).unwrap())
    };
    assert_eq!(activate(&ak.name).as_deref(), Some(&secret[..]));
    let mut other = ak.name.clone();
    other[10] ^= 1;
    assert_eq!(activate(&other), None);
}
