//! `custody verify snp` end to end on the shared SEV-SNP vectors.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

use custody_e2e::{custody, testvectors, Run};
use std::path::PathBuf;

/// Inside the VCEK (2023-01-24..2030-01-24) and VLEK (2024-12-10..2025-12-10) validity.
const AT: &str = "2025-06-01T00:00:00Z";
const VCEK_REPORT_DATA: &str = "ec6c52d7533cc2c4f45be7849cf112ab82b2009fe7bd43e71ed08c14400ad7e2";

fn snp(name: &str) -> String {
    testvectors().join("snp").join(name).display().to_string()
}

/// A scratch file unique to this test process.
fn scratch(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("custody-snp-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn verify(extra: &[&str]) -> Run {
    let mut args = vec!["verify", "snp"];
    args.extend_from_slice(extra);
    custody(args)
}

fn vcek_args<'a>(report: &'a str, vcek: &'a str) -> Vec<&'a str> {
    vec!["--report", report, "--vcek", vcek, "--at", AT]
}

#[test]
fn vcek_report_verifies_with_builtin_roots() {
    let (r, v) = (snp("trustee-test-report.bin"), snp("trustee-test-vcek.der"));
    let mut a = vcek_args(&r, &v);
    a.extend(["--report-data", VCEK_REPORT_DATA]);
    let run = verify(&a);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let j = run.json();
    assert_eq!(j["kind"], "snp");
    assert_eq!(j["verified"], true);
    let names = run.check_names();
    assert_eq!(
        names,
        [
            "parse",
            "cert_chain",
            "cert_validity",
            "revocation",
            "signature",
            "key_kind",
            "tcb",
            "report_data",
            "policy"
        ]
    );
    assert_eq!(j["claims"]["revocation"]["status"], "unchecked");
    assert_eq!(j["claims"]["product"], "Milan");
    assert_eq!(j["claims"]["signer"], "vcek");
    assert_eq!(j["claims"]["policy"]["debug"], false);
    assert_eq!(j["claims"]["reported_tcb"]["snp"], 8);
}

#[test]
fn hex_report_verifies() {
    let bin = std::fs::read(snp("trustee-test-report.bin")).unwrap();
    let p = scratch("report.hex", hex::encode(bin).as_bytes());
    let (r, v) = (p.display().to_string(), snp("trustee-test-vcek.der"));
    let run = verify(&vcek_args(&r, &v));
    assert_eq!(run.code, 0, "{}", run.stderr);
}

#[test]
fn vlek_report_verifies_via_asvk() {
    let (r, v, ca) = (
        snp("trustee-test-vlek-report.bin"),
        snp("trustee-test-vlek.der"),
        snp("trustee-milan_ask_ark_asvk.pem"),
    );
    let mut a = vcek_args(&r, &v);
    a.extend(["--ca", &ca]);
    let run = verify(&a);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let j = run.json();
    assert_eq!(j["claims"]["signer"], "vlek");
    assert_eq!(j["claims"]["version"], 3);
}

#[test]
fn invalid_vceks_are_rejected_at_cert_chain() {
    let r = snp("trustee-test-report.bin");
    for f in [
        "trustee-test-vcek-invalid-legacy.der",
        "trustee-test-vcek-invalid-new.der",
    ] {
        let v = snp(f);
        let run = verify(&vcek_args(&r, &v));
        assert_eq!(run.code, 1, "{f}");
        assert_eq!(run.failed_check().as_deref(), Some("cert_chain"), "{f}");
        assert!(run.stderr.contains("cert_chain"), "{}", run.stderr);
    }
}

#[test]
fn tampered_report_fails_signature() {
    let mut bin = std::fs::read(snp("trustee-test-report.bin")).unwrap();
    bin[0x90] ^= 1; // measurement
    let p = scratch("tampered.bin", &bin);
    let (r, v) = (p.display().to_string(), snp("trustee-test-vcek.der"));
    let run = verify(&vcek_args(&r, &v));
    assert_eq!(run.code, 1);
    assert_eq!(run.failed_check().as_deref(), Some("signature"));
}

#[test]
fn truncated_report_fails_parse() {
    let bin = std::fs::read(snp("trustee-test-report.bin")).unwrap();
    let p = scratch("short.bin", &bin[..bin.len() - 1]);
    let (r, v) = (p.display().to_string(), snp("trustee-test-vcek.der"));
    let run = verify(&vcek_args(&r, &v));
    assert_eq!(run.code, 1);
    assert_eq!(run.failed_check().as_deref(), Some("parse"));
}

#[test]
fn wrong_report_data_and_time_are_rejections() {
    let (r, v) = (snp("trustee-test-report.bin"), snp("trustee-test-vcek.der"));
    let wrong = "00".repeat(32);
    let mut a = vcek_args(&r, &v);
    a.extend(["--report-data", &wrong]);
    let run = verify(&a);
    assert_eq!(run.code, 1);
    assert_eq!(run.failed_check().as_deref(), Some("report_data"));

    let run = verify(&["--report", &r, "--vcek", &v, "--at", "2031-01-01T00:00:00Z"]);
    assert_eq!(run.code, 1);
    assert_eq!(run.failed_check().as_deref(), Some("cert_validity"));
}

#[test]
fn vcek_for_vlek_report_fails_signature() {
    let (r, v) = (snp("trustee-test-vlek-report.bin"), snp("trustee-test-vcek.der"));
    let run = verify(&vcek_args(&r, &v));
    assert_eq!(run.code, 1);
    assert_eq!(run.failed_check().as_deref(), Some("signature"));
}

#[test]
fn usage_errors_exit_2() {
    let (r, v) = (snp("trustee-test-report.bin"), snp("trustee-test-vcek.der"));
    // --report-data of 16 bytes, not 32 or 64.
    let short = "11".repeat(16);
    let mut a = vcek_args(&r, &v);
    a.extend(["--report-data", &short]);
    assert_eq!(verify(&a).code, 2);
    // Not hex.
    let mut a = vcek_args(&r, &v);
    a.extend(["--report-data", "zz"]);
    assert_eq!(verify(&a).code, 2);
    // Bad time.
    assert_eq!(
        verify(&["--report", &r, "--vcek", &v, "--at", "yesterday"]).code,
        2
    );
    // Unreadable file.
    assert_eq!(
        verify(&["--report", "/nonexistent/report.bin", "--vcek", &v, "--at", AT]).code,
        2
    );
    // A .hex report that is not hex.
    let p = scratch("bad.hex", b"not hex at all");
    let p = p.display().to_string();
    assert_eq!(verify(&vcek_args(&p, &v)).code, 2);
}

fn amd_crl(name: &str) -> String {
    testvectors()
        .join("amd-crl/amd-kds-crl-openpcc")
        .join(name)
        .display()
        .to_string()
}

/// `--crl` with AMD's real KDS CRLs (shared vectors): the Milan chain is `good` inside the
/// Milan CRL's window, `stale` after its nextUpdate (or `good` within the grace), and
/// `unchecked` with only Genoa's CRL; a CRL whose signature was altered fails at
/// `revocation`, exit 1; a file that is no CRL is a usage error, exit 2.
#[test]
fn amd_crls_give_the_chain_its_revocation_status() {
    let (r, v) = (snp("trustee-test-report.bin"), snp("trustee-test-vcek.der"));
    let (milan, genoa) = (amd_crl("milan_crl.der"), amd_crl("genoa_crl.pem"));
    let status = |crls: &[&str], at: &str, grace: &str| {
        let mut a = vec![
            "--report",
            r.as_str(),
            "--vcek",
            v.as_str(),
            "--at",
            at,
            "--crl-grace-days",
            grace,
        ];
        for c in crls {
            a.extend(["--crl", c]);
        }
        let run = verify(&a);
        assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
        run.json()["claims"]["revocation"]["status"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(status(&[&milan, &genoa], AT, "0"), "good");
    assert_eq!(status(&[&milan], "2026-06-01T00:00:00Z", "0"), "stale");
    assert_eq!(status(&[&milan], "2026-06-01T00:00:00Z", "30"), "good");
    assert_eq!(status(&[&genoa], AT, "0"), "unchecked");

    let mut der = std::fs::read(amd_crl("milan_crl.der")).unwrap();
    let n = der.len();
    der[n - 5] ^= 1;
    let bad = scratch("milan-altered.crl", &der);
    let mut a = vcek_args(&r, &v);
    a.extend(["--crl", bad.to_str().unwrap()]);
    let run = verify(&a);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(
        run.failed_check().as_deref(),
        Some("revocation"),
        "{}",
        run.stdout
    );

    let mut a = vcek_args(&r, &v);
    let ark = amd_crl("milan_ark.pem");
    a.extend(["--crl", ark.as_str()]);
    assert_eq!(verify(&a).code, 2);
}
