//! `custody verify gcp-vtpm` end to end on the shared Compute Engine vTPM attestations
//! (../shared/testvectors/gcp/gcp-vtpm-go-tpm-tools-cos85).
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

use custody_e2e::{custody, testvectors, Run};

fn verify(split: &str, quote: u8, nonce: &str, extra: &[&str]) -> Run {
    let dir = testvectors().join("gcp/gcp-vtpm-go-tpm-tools-cos85").join(split);
    let p = |f: String| dir.join(f).to_str().unwrap().to_string();
    let mut args: Vec<String> = vec![
        "verify".into(),
        "gcp-vtpm".into(),
        "--ak-cert".into(),
        p("ak_cert.der".into()),
        "--quote".into(),
        p(format!("quote{quote}_msg.bin")),
        "--sig".into(),
        p(format!("quote{quote}_sig.tpmt_signature")),
        "--nonce".into(),
        nonce.into(),
        "--at".into(),
        "2026-01-01T00:00:00Z".into(),
    ];
    if !extra.contains(&"--pcrs") {
        args.extend(["--pcrs".into(), p(format!("quote{quote}_pcrs.txt"))]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    custody(args)
}

#[test]
fn gce_vtpm_quotes_verify_and_name_the_instance() {
    let dir = testvectors().join("gcp/gcp-vtpm-go-tpm-tools-cos85/split-nonce9009");
    let log = dir.join("event_log.bin");
    let ak = dir.join("ak_pub.pem");
    let r = verify(
        "split-nonce9009",
        1,
        "9009",
        &["--eventlog", log.to_str().unwrap(), "--ak", ak.to_str().unwrap()],
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let j = r.json();
    assert_eq!(j["claims"]["tpm"], "gce-vtpm");
    assert_eq!(j["claims"]["instance"]["zone"], "us-central1-a");
    assert_eq!(j["claims"]["instance"]["region"], "us-central1");
    assert_eq!(j["claims"]["instance"]["instance_name"], "cos-test");
    assert!(j["claims"]["quote"]["event_log"].is_object(), "{j}");
    // The empty nonce of the second attestation, SHA-384 bank.
    let r = verify("split-no-nonce", 2, "", &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
}

#[test]
fn gce_vtpm_rejections_name_their_check() {
    let r = verify("split-nonce9009", 1, "9008", &[]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert_eq!(r.failed_check().as_deref(), Some("tpm_nonce"));
    // Trusting only another root (the AMD Milan ARK): the chain ends nowhere.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../verifier/roots/amd/milan-ark.pem");
    let r = verify("split-nonce9009", 1, "9009", &["--root", root.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert_eq!(r.failed_check().as_deref(), Some("ak_cert_chain"));
    // The SHA-256 quote with the SHA-384 bank's values: not what was quoted.
    let dir = testvectors().join("gcp/gcp-vtpm-go-tpm-tools-cos85/split-nonce9009");
    let other = dir.join("quote2_pcrs.txt");
    let r = verify("split-nonce9009", 1, "9009", &["--pcrs", other.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    let check = r.failed_check().unwrap_or_default();
    assert!(check.starts_with("tpm_pcr"), "{check}");
}

/// The same quote as a plain TPM quote, its PCRs in the text form: `verify tpm` reads it
/// too, and only the cloud kind knows whose vTPM it is.
#[test]
fn a_gce_quote_verifies_as_a_plain_tpm_quote_with_text_pcrs() {
    let dir = testvectors().join("gcp/gcp-vtpm-go-tpm-tools-cos85/split-nonce9009");
    let p = |f: &str| dir.join(f).to_str().unwrap().to_string();
    let r = custody([
        "verify".to_string(),
        "tpm".into(),
        "--quote".into(),
        p("quote1_msg.bin"),
        "--sig".into(),
        p("quote1_sig.tpmt_signature"),
        "--pcrs".into(),
        p("quote1_pcrs.txt"),
        "--ak".into(),
        p("ak_pub.tpmt_public"),
        "--nonce".into(),
        "9009".into(),
    ]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.json()["claims"].get("instance").is_none());
}
