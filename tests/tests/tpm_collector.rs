//! The agent's TPM collector (tss-esapi) against a real swtpm, its evidence appraised by
//! the real verifier. swtpm and tpm2-tools are required: these tests fail (not skip)
//! without them. tpm2-tools serve as the independent implementation (EK template, PCR
//! reads); swtpm serves one client at a time, so the collector is released before them.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use custody_agent::collector::{CollectError, Collector, Evidence};
use custody_agent::session::Session;
use custody_agent::tpm::{default_pcrs, TpmCollector, TpmConfig};
use custody_e2e::{free_port_pair, random_nonce, testvectors, Swtpm};
use custody_formats::alg::HashAlg;
use custody_formats::binding::{Binding, Nonce};
use custody_formats::bundle::TpmEvidence;
use custody_formats::tpm::{self, PcrSelection, PublicKey, ATTR_FIXED_TPM, ATTR_RESTRICTED, ATTR_SIGN};
use custody_verifier::check::{EvidenceVerifier, Outcome, UnixTime};
use custody_verifier::tpm::{TpmClaims, TpmVerifier, TpmVerifyError};
use std::path::PathBuf;

const CHECKS: [&str; 5] = ["parse", "signature", "nonce", "pcr_selection", "pcr_digest"];

fn collector(t: &Swtpm, pcrs: Vec<PcrSelection>, event_log: Option<PathBuf>) -> TpmCollector {
    TpmCollector::new(TpmConfig {
        tcti: t.tcti(),
        pcrs,
        event_log,
    })
    .unwrap()
}

fn collect(c: &TpmCollector, b: &Binding) -> TpmEvidence {
    match c.collect(b) {
        Ok(Evidence::Tpm(e)) => e,
        other => panic!("expected TPM evidence, got {other:?}"),
    }
}

fn appraise(e: &TpmEvidence, expected: &Binding, with_log: bool) -> Outcome<TpmClaims, TpmVerifyError> {
    TpmVerifier::new().verify(
        custody_verifier::tpm::TpmEvidence {
            quote: &e.quote,
            signature: &e.signature,
            ak: &e.ak_public,
            pcrs: &e.pcrs,
            nonce: expected.as_bytes(),
            event_log: if with_log { e.event_log.as_deref() } else { None },
        },
        UnixTime(1_767_225_600),
    )
}

#[track_caller]
fn assert_verified(o: &Outcome<TpmClaims, TpmVerifyError>, checks: &[&str]) {
    match o {
        Ok(v) => {
            let got: Vec<(&str, bool)> = v.checks.iter().map(|c| (c.name, c.ok)).collect();
            let want: Vec<(&str, bool)> = checks.iter().map(|c| (*c, true)).collect();
            assert_eq!(got, want);
        }
        Err(r) => panic!("rejected: {r}"),
    }
}

/// `tpm2_pcrread` of one sha256 PCR, as raw bytes.
fn pcrread(t: &Swtpm, pcr: u32) -> Vec<u8> {
    let out = format!("pcr{pcr}.bin");
    t.tool(&["tpm2_pcrread", &format!("sha256:{pcr}"), "-o", &out]);
    std::fs::read(t.path(&out)).unwrap()
}

#[test]
fn collected_quote_verifies_and_binds_the_round() {
    let t = Swtpm::start();
    let c = collector(&t, default_pcrs(), Some(t.path("no-such-event-log")));
    let session = Session::generate().unwrap();
    let binding = session.binding(&random_nonce());
    let e = collect(&c, &binding);

    // Every check passes with the binding as the expected extraData.
    let o = appraise(&e, &binding, false);
    assert_verified(&o, &CHECKS);
    let claims = o.unwrap().claims;
    assert_eq!(claims.extra_data, hex::encode(binding.as_bytes()));
    let quoted: Vec<u32> = claims.pcrs[&HashAlg::Sha256].keys().copied().collect();
    assert_eq!(quoted, vec![0, 1, 2, 3, 4, 5, 6, 7, 14]);
    assert_eq!(claims.signature.scheme, "rsassa");
    assert!(e.event_log.is_none(), "an absent log file is no log");

    // The AK: restricted, fixedTPM, signing, RSA-2048 RSASSA-SHA256; what keys() reports.
    assert_eq!(e.ak_public, c.ak_public().unwrap());
    let ak = tpm::parse_public(&e.ak_public).unwrap();
    let need = ATTR_RESTRICTED | ATTR_SIGN | ATTR_FIXED_TPM;
    assert_eq!(ak.object_attributes & need, need);
    match &ak.key {
        PublicKey::Rsa { key_bits, scheme, .. } => {
            assert_eq!(*key_bits, 2048);
            assert_eq!((scheme.alg, scheme.detail), (0x0014, Some(0x000B))); // RSASSA, SHA-256
        }
        other => panic!("AK is not RSA: {other:?}"),
    }

    // Another round's binding (same session, other nonce; other session, same nonce).
    for other in [
        session.binding(&random_nonce()),
        Session::generate().unwrap().binding(&Nonce([0; 32])),
    ] {
        let r = appraise(&e, &other, false).unwrap_err();
        assert_eq!(r.checks().last().unwrap().name, "nonce", "{r}");
    }

    // The PCR file's values are what tpm2-tools reads (collector released: swtpm serves one
    // client at a time).
    c.release();
    let file = tpm::parse_pcr_file(&e.pcrs).unwrap();
    for p in [0, 7, 14] {
        assert_eq!(file.get(HashAlg::Sha256, p).unwrap(), pcrread(&t, p), "PCR {p}");
    }

    // Extending PCR 14 between two rounds changes the quoted value and nothing else; the
    // second round reopens the TPM and reloads the same AK.
    let m = "66d2b1a2e0c8f4b7a0f1d3c5e7a9b1c3d5e7f9a1b3c5d7e9f1a3b5c7d9e1f3a5";
    t.tool(&["tpm2_pcrextend", &format!("14:sha256={m}")]);
    let b2 = session.binding(&random_nonce());
    let e2 = collect(&c, &b2);
    assert_eq!(e2.ak_public, e.ak_public, "the AK survives release");
    let o2 = appraise(&e2, &b2, false);
    assert_verified(&o2, &CHECKS);
    let p1 = &claims.pcrs[&HashAlg::Sha256];
    let p2 = &o2.unwrap().claims.pcrs[&HashAlg::Sha256];
    assert_ne!(p1[&14], p2[&14]);
    let mut expected14 = hex::decode(&p1[&14]).unwrap();
    expected14.extend(hex::decode(m).unwrap());
    assert_eq!(p2[&14], hex::encode(HashAlg::Sha256.hash(&[&expected14])));
    for p in 0..8 {
        assert_eq!(p1[&p], p2[&p], "PCR {p}");
    }
    // The first quote does not vouch for the second round's PCR values.
    let mixed = TpmEvidence {
        pcrs: e2.pcrs.clone(),
        ..e.clone()
    };
    let r = appraise(&mixed, &binding, false).unwrap_err();
    assert_eq!(r.checks().last().unwrap().name, "pcr_digest", "{r}");
}

#[test]
fn ek_certificate_matches_the_ek() {
    let t = Swtpm::start();
    let c = collector(&t, default_pcrs(), None);
    let keys = c.keys().unwrap();
    let cert_der = keys
        .ek_certificate
        .clone()
        .expect("swtpm_setup --create-ek-cert provisions NV 0x01C00002");
    assert_eq!(c.ek_certificate().unwrap(), Some(cert_der.clone()));
    assert_eq!(c.ek_public().unwrap(), keys.ek_public);

    let (_, cert) = x509_parser::parse_x509_certificate(&cert_der).unwrap();
    let spki_key = match cert.public_key().parsed().unwrap() {
        x509_parser::public_key::PublicKey::RSA(k) => k,
        other => panic!("EK certificate key is not RSA: {other:?}"),
    };
    let ek = tpm::parse_public(&keys.ek_public).unwrap();
    let PublicKey::Rsa {
        key_bits,
        exponent,
        modulus,
        ..
    } = &ek.key
    else {
        panic!("EK is not RSA")
    };
    assert_eq!(*key_bits, 2048);
    let strip = |b: &[u8]| b.iter().skip_while(|&&x| x == 0).copied().collect::<Vec<u8>>();
    assert_eq!(strip(spki_key.modulus), strip(modulus));
    let e = if *exponent == 0 { 65537 } else { *exponent };
    assert_eq!(strip(spki_key.exponent), strip(&e.to_be_bytes()));
    // Not restricted-signing: the EK is a restricted decryption key.
    assert_eq!(ek.object_attributes & ATTR_SIGN, 0);

    // tpm2-tools builds the same EK from the TCG template: identical TPMT_PUBLIC.
    c.release();
    t.tool(&["tpm2_createek", "-c", "ek.ctx", "-G", "rsa", "-u", "ek.pub"]);
    let tools_ek = tpm::parse_public_2b(&std::fs::read(t.path("ek.pub")).unwrap()).unwrap();
    assert_eq!(tools_ek.raw, keys.ek_public);
    // And it is the same key after a reopen (the EK derives from the endorsement seed).
    assert_eq!(c.ek_public().unwrap(), keys.ek_public);
}

/// The decision for a TCTI that cannot be opened: NotAvailable (the round goes on without
/// TPM evidence and the result says why), never Failed. A TPM that goes away after it was
/// opened is Failed, naming the TPM command and the TSS response code.
#[test]
fn unreachable_tpm_is_not_available_and_a_lost_one_fails() {
    let port = free_port_pair();
    let c = TpmCollector::new(TpmConfig {
        tcti: format!("swtpm:host=127.0.0.1,port={port}"),
        pcrs: default_pcrs(),
        event_log: None,
    })
    .unwrap();
    let b = Binding([7; 32]);
    match c.collect(&b) {
        Err(CollectError::NotAvailable { kind, reason }) => {
            assert_eq!(kind, "tpm");
            assert!(reason.contains(&format!("port={port}")), "{reason}");
        }
        other => panic!("expected NotAvailable, got {other:?}"),
    }
    assert!(matches!(c.keys(), Err(CollectError::NotAvailable { .. })));

    let mut t = Swtpm::start();
    let c = collector(&t, default_pcrs(), None);
    collect(&c, &b);
    t.kill();
    match c.collect(&b) {
        Err(CollectError::Failed { kind, reason }) => {
            assert_eq!(kind, "tpm");
            // swtpm serves one client, so the collector reconnects every round and the
            // loss shows when it reopens the TCTI; on a kept connection, at TPM2_Quote.
            assert!(
                reason.contains("TPM2_Quote") || reason.contains("cannot open TCTI"),
                "{reason}"
            );
            assert!(
                reason.contains("TSS2 response code 0xa000a (TCTI layer: TSS2_BASE_RC_IO_ERROR)"),
                "{reason}"
            );
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    // A TPM this collector has used stays a failure while it is gone, never "absent".
    assert!(matches!(c.collect(&b), Err(CollectError::Failed { .. })));
}

/// Keylime's real UEFI log replayed into swtpm (PCRs 1-9, 14, as in tpm_swtpm.rs): the
/// collector carries the log file byte for byte and the verifier replays it against the
/// quote.
#[test]
fn event_log_is_carried_and_replays() {
    use custody_formats::eventlog;
    let log_path = testvectors().join("eventlog/keylime-binary_bios_measurements");
    let log_bytes = std::fs::read(&log_path).unwrap();
    let log = eventlog::parse(&log_bytes).unwrap();
    let t = Swtpm::start();
    t.replay_event_log(&log);
    let sel = vec![PcrSelection {
        bank: HashAlg::Sha256,
        pcrs: vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 14],
    }];
    let c = collector(&t, sel, Some(log_path));
    let b = Session::generate().unwrap().binding(&random_nonce());
    let e = collect(&c, &b);
    assert_eq!(e.event_log.as_deref(), Some(log_bytes.as_slice()));
    let all: Vec<&str> = CHECKS.iter().copied().chain(["event_log"]).collect();
    let o = appraise(&e, &b, true);
    assert_verified(&o, &all);
    let replayed = &o.unwrap().claims.event_log.unwrap().pcrs_replayed[&HashAlg::Sha256];
    assert_eq!(replayed, &vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 14]);
}

/// Failures after the TPM was opened name the step and the TPM's own response code.
#[test]
fn tpm_errors_name_the_step_and_response_code() {
    let t = Swtpm::start();
    // swtpm_setup allocates only the SHA-256 bank: the TPM quotes nothing for SHA-384.
    let c = collector(
        &t,
        vec![PcrSelection {
            bank: HashAlg::Sha384,
            pcrs: vec![0, 1],
        }],
        None,
    );
    match c.collect(&Binding([1; 32])) {
        Err(CollectError::Failed { reason, .. }) => {
            assert!(
                reason.contains("asked for sha384:0,1: bank not allocated?"),
                "{reason}"
            );
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    c.release();

    // An endorsement hierarchy with a password the agent does not have.
    t.tool(&["tpm2_changeauth", "-c", "e", "not-the-agents"]);
    let c = collector(&t, default_pcrs(), None);
    match c.collect(&Binding([1; 32])) {
        Err(CollectError::Failed { kind, reason }) => {
            assert_eq!(kind, "tpm");
            assert!(
                reason.starts_with(
                    "create the EK (TPM2_CreatePrimary): TPM response code 0x9a2 (TPM_RC BadAuth"
                ),
                "{reason}"
            );
        }
        other => panic!("expected Failed, got {other:?}"),
    }
}

/// The agent keeps its AK in `state_dir/ak.tpm`: a new collector (a restarted agent) on
/// the same TPM quotes with the same AK; the file is owner-only and holds the AK the
/// quotes verify with.
#[test]
fn the_ak_outlives_the_process_through_its_file() {
    use std::os::unix::fs::PermissionsExt as _;
    let t = Swtpm::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("state").join("ak.tpm");
    let first = collector(&t, default_pcrs(), None).with_ak_file(file.clone());
    let ak = first.ak_public().unwrap();
    first.release();
    drop(first);
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let stored = tpm::parse_key_blob(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(stored.public, ak);

    let again = collector(&t, default_pcrs(), None).with_ak_file(file.clone());
    let binding = Session::generate().unwrap().binding(&random_nonce());
    let e = collect(&again, &binding);
    assert_eq!(e.ak_public, ak, "a restarted collector must load the stored AK");
    assert_verified(&appraise(&e, &binding, false), &CHECKS);
    again.release();

    // Without the file, every process has its own AK: what the file is for.
    let no_file = collector(&t, default_pcrs(), None);
    assert_ne!(no_file.ak_public().unwrap(), ak);
    no_file.release();
}

/// An AK file this TPM does not load (another TPM's, or tampered) is replaced by a new
/// AK; a file that is not an AK blob at all is an error that names it, and is kept.
#[test]
fn an_ak_file_the_tpm_refuses_is_replaced_and_a_damaged_one_is_an_error() {
    let (a, b) = (Swtpm::start(), Swtpm::start());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ak.tpm");
    let on_a = collector(&a, default_pcrs(), None).with_ak_file(file.clone());
    let ak_a = on_a.ak_public().unwrap();
    on_a.release();

    // TPM b cannot load a's AK (its EK is another key): a new AK, stored.
    let on_b = collector(&b, default_pcrs(), None).with_ak_file(file.clone());
    let ak_b = on_b.ak_public().unwrap();
    assert_ne!(ak_b, ak_a);
    on_b.release();
    let stored = tpm::parse_key_blob(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(stored.public, ak_b);

    // A flipped bit in the private part fails the TPM's integrity check: a new AK again.
    let mut tampered = stored.clone();
    let last = tampered.private.len() - 1;
    tampered.private[last] ^= 1;
    std::fs::write(&file, tampered.to_bytes().unwrap()).unwrap();
    let after = collector(&b, default_pcrs(), None).with_ak_file(file.clone());
    let ak_new = after.ak_public().unwrap();
    assert_ne!(ak_new, ak_b);
    after.release();
    assert_eq!(
        tpm::parse_key_blob(&std::fs::read(&file).unwrap())
            .unwrap()
            .public,
        ak_new
    );

    // Not an AK blob: refused with the file's name, and left as it was.
    std::fs::write(&file, b"not a key").unwrap();
    let damaged = collector(&b, default_pcrs(), None).with_ak_file(file.clone());
    match damaged.ak_public() {
        Err(CollectError::Failed { reason, .. }) => {
            assert!(reason.contains("ak.tpm"), "{reason}");
            assert!(reason.contains("remove it"), "{reason}");
        }
        other => panic!("a damaged AK file was accepted: {other:?}"),
    }
    damaged.release();
    assert_eq!(std::fs::read(&file).unwrap(), b"not a key");
}
