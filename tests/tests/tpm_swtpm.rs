//! `custody verify tpm` against live quotes from a real swtpm driven by tpm2-tools.
//! swtpm and tpm2-tools are required: these tests fail (not skip) without them.
// Test helpers outside #[test] fns: a failed unwrap is a failed test here.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use custody_e2e::{assert_rejected, custody, testvectors, Run, Swtpm};
use std::path::{Path, PathBuf};

fn random_nonce() -> String {
    use std::io::Read;
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut b)
        .unwrap();
    hex::encode(b)
}

fn verify(quote: &Path, sig: &Path, ak: &Path, pcrs: &Path, nonce: &str, log: Option<&Path>) -> Run {
    let mut args: Vec<std::ffi::OsString> = vec![
        "verify".into(),
        "tpm".into(),
        "--quote".into(),
        quote.into(),
        "--sig".into(),
        sig.into(),
        "--ak".into(),
        ak.into(),
        "--pcrs".into(),
        pcrs.into(),
        "--nonce".into(),
        nonce.into(),
    ];
    if let Some(l) = log {
        args.push("--eventlog".into());
        args.push(l.into());
    }
    custody(args)
}

#[track_caller]
fn assert_accepted(r: &Run, checks: &[&str]) {
    assert_eq!(r.code, 0, "stdout: {}\nstderr: {}", r.stdout, r.stderr);
    let v = r.json();
    assert_eq!(v["kind"], "tpm");
    assert_eq!(v["verified"], true);
    let got: Vec<(&str, bool)> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c["ok"].as_bool().unwrap()))
        .collect();
    let want: Vec<(&str, bool)> = checks.iter().map(|c| (*c, true)).collect();
    assert_eq!(got, want);
}

const CHECKS: [&str; 5] = ["parse", "signature", "nonce", "pcr_selection", "pcr_digest"];

fn tampered(src: &Path, name: &str, f: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let mut b = std::fs::read(src).unwrap();
    f(&mut b);
    let p = src.with_file_name(name);
    std::fs::write(&p, b).unwrap();
    p
}

#[test]
fn swtpm_quotes_verify_and_tampering_is_named() {
    let t = Swtpm::start();
    t.create_aks();
    let m = "66d2b1a2e0c8f4b7a0f1d3c5e7a9b1c3d5e7f9a1b3c5d7e9f1a3b5c7d9e1f3a5";
    t.tool(&["tpm2_pcrextend", &format!("16:sha256={m}")]);
    let nonce = random_nonce();
    let sel = "sha256:0,1,2,3,7,16";
    t.quote("rsa.ctx", sel, &nonce, "rsa");
    t.quote("ecc.ctx", sel, &nonce, "ecc");

    let (q, s, p) = (
        t.path("rsa-quote.bin"),
        t.path("rsa-sig.bin"),
        t.path("rsa-pcrs.bin"),
    );
    let ak = t.path("ak-rsa.pem");
    let ok = verify(&q, &s, &ak, &p, &nonce, None);
    assert_accepted(&ok, &CHECKS);
    let claims = &ok.json()["claims"];
    assert_eq!(claims["pcrs"]["sha256"].as_object().unwrap().len(), 6);
    assert_eq!(claims["extra_data"], nonce.as_str());
    assert_eq!(claims["signature"]["scheme"], "rsassa");

    let ecc = verify(
        &t.path("ecc-quote.bin"),
        &t.path("ecc-sig.bin"),
        &t.path("ak-ecc.pub"),
        &t.path("ecc-pcrs.bin"),
        &nonce,
        None,
    );
    assert_accepted(&ecc, &CHECKS);
    let ecc_claims = &ecc.json()["claims"];
    assert_eq!(ecc_claims["signature"]["scheme"], "ecdsa");
    assert_eq!(
        ecc_claims["ak"]["name"].as_str().unwrap(),
        hex::encode(std::fs::read(t.path("ak-ecc.name")).unwrap())
    );

    // One bit of the quote (inside pcrDigest, so it still parses).
    let bad_q = tampered(&q, "bad-quote.bin", |b| *b.last_mut().unwrap() ^= 1);
    assert_rejected(&verify(&bad_q, &s, &ak, &p, &nonce, None), "signature");
    // One bit of the signature, RSA and ECDSA.
    let bad_s = tampered(&s, "bad-sig.bin", |b| *b.last_mut().unwrap() ^= 1);
    assert_rejected(&verify(&q, &bad_s, &ak, &p, &nonce, None), "signature");
    let bad_es = tampered(&t.path("ecc-sig.bin"), "bad-ecc-sig.bin", |b| b[10] ^= 1);
    assert_rejected(
        &verify(
            &t.path("ecc-quote.bin"),
            &bad_es,
            &t.path("ak-ecc.pub"),
            &t.path("ecc-pcrs.bin"),
            &nonce,
            None,
        ),
        "signature",
    );
    // A PCR value in the PCR file (first digest's first byte: header 136 + count 4 + size 2).
    let bad_p = tampered(&p, "bad-pcrs.bin", |b| b[142] ^= 1);
    assert_rejected(&verify(&q, &s, &ak, &bad_p, &nonce, None), "pcr_digest");
    // Another round's nonce.
    assert_rejected(&verify(&q, &s, &ak, &p, &random_nonce(), None), "nonce");
    // Truncated quote.
    let short_q = tampered(&q, "short-quote.bin", |b| {
        b.pop();
    });
    assert_rejected(&verify(&short_q, &s, &ak, &p, &nonce, None), "parse");
    // Unreadable input and bad hex are usage errors.
    let missing = verify(&t.path("missing.bin"), &s, &ak, &p, &nonce, None);
    assert_eq!(missing.code, 2, "{}", missing.stderr);
    let bad_hex = verify(&q, &s, &ak, &p, "zz", None);
    assert_eq!(bad_hex.code, 2, "{}", bad_hex.stderr);
}

/// Replays Keylime's real UEFI log into swtpm (PCRs 1-9, 14: PCR 0 starts at locality 3 on
/// that machine, which swtpm cannot reproduce), quotes, and checks the log against it.
#[test]
fn swtpm_event_log_replay() {
    use custody_formats::alg::HashAlg;
    use custody_formats::eventlog;
    use custody_formats::eventlog::EV_NO_ACTION;

    let log_path = testvectors().join("eventlog/keylime-binary_bios_measurements");
    let log_bytes = std::fs::read(&log_path).unwrap();
    let log = eventlog::parse(&log_bytes).unwrap();
    let t = Swtpm::start();
    t.create_aks();
    assert!(t.replay_event_log(&log) > 100);
    let nonce = random_nonce();
    t.quote("rsa.ctx", "sha256:1,2,3,4,5,6,7,8,9,14", &nonce, "el");
    let (q, s, p, ak) = (
        t.path("el-quote.bin"),
        t.path("el-sig.bin"),
        t.path("el-pcrs.bin"),
        t.path("ak-rsa.pem"),
    );
    let all: Vec<&str> = CHECKS.iter().copied().chain(["event_log"]).collect();
    let ok = verify(&q, &s, &ak, &p, &nonce, Some(&log_path));
    assert_accepted(&ok, &all);
    let el = &ok.json()["claims"]["event_log"];
    assert_eq!(
        el["pcrs_replayed"]["sha256"],
        serde_json::json!([1, 2, 3, 4, 5, 6, 7, 8, 9, 14])
    );

    // The same log with one PCR 4 event's sha256 digest changed.
    let victim = log
        .events
        .iter()
        .find(|e| e.pcr == 4 && e.event_type != EV_NO_ACTION)
        .unwrap()
        .digest(HashAlg::Sha256)
        .unwrap()
        .to_vec();
    let at = log_bytes
        .windows(victim.len())
        .position(|w| w == victim.as_slice())
        .unwrap();
    let bad_log = t.path("bad-log.bin");
    let mut b = log_bytes.clone();
    b[at] ^= 1;
    std::fs::write(&bad_log, b).unwrap();
    let r = verify(&q, &s, &ak, &p, &nonce, Some(&bad_log));
    assert_rejected(&r, "event_log");
    assert!(r.stdout.contains("sha256:4"), "{}", r.stdout);

    let bogus = testvectors().join("eventlog/keylime-binary_bios_measurements-bogus");
    assert_rejected(&verify(&q, &s, &ak, &p, &nonce, Some(&bogus)), "event_log");
}
