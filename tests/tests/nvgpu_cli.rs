//! `custody verify nvgpu` end to end on the real NVIDIA vectors: exit codes, the failed
//! check's name, the JSON shape.
#![allow(clippy::indexing_slicing, clippy::unwrap_used, clippy::panic)]

use custody_e2e::{assert_rejected, custody, testvectors, Run};
use std::path::PathBuf;

const HOPPER_NONCE: &str = "27a328247bf7935c993341cf587be6f05986ccce4fe7ba2c54100bd616a58f66";
const BLACKWELL_NONCE: &str = "931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb";
const COCO_NONCE: &str = "87d8e24ab336adafe228d49e83d745f6dba4ae505372b6a5704820856b343fec";
/// Inside every vector chain's validity (latest notBefore 2023-06-20, notAfter 9999).
const AT: &str = "2025-01-01T00:00:00Z";
/// Before the Hopper leaves' notBefore (2020-10-17).
const BEFORE: &str = "2020-01-01T00:00:00Z";

fn nv(name: &str) -> PathBuf {
    testvectors().join("nvidia").join(name)
}

fn verify(report: &str, certs: &str, nonce: &str, extra: &[&str]) -> Run {
    let mut args: Vec<String> = vec![
        "verify".into(),
        "nvgpu".into(),
        "--report".into(),
        nv(report).display().to_string(),
        "--certs".into(),
        nv(certs).display().to_string(),
        "--nonce".into(),
        nonce.into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    custody(args)
}

#[test]
fn hopper_sdk_report_verifies() {
    let r = verify(
        "sdk-hopperAttestationReport.txt",
        "sdk-hopperCertChain.txt",
        HOPPER_NONCE,
        &["--at", AT],
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let j = r.json();
    assert_eq!(j["kind"], "nvgpu");
    assert_eq!(j["verified"], true);
    let names = r.check_names();
    assert_eq!(
        names,
        [
            "parse",
            "nonce",
            "cert_chain",
            "cert_validity",
            "signature",
            "fwid",
            "revocation"
        ]
    );
    assert!(j["checks"].as_array().unwrap().iter().all(|c| c["ok"] == true));
    let c = &j["claims"];
    assert_eq!(c["architecture"], "hopper");
    assert_eq!(c["driver_version"], "535.86.09");
    assert_eq!(c["vbios_version"], "96.00.5e.00.01");
    assert_eq!(c["revocation"], "unchecked");
    assert_eq!(c["fwid_checked"], false);
    assert_eq!(c["chain_cached"], false);
    assert_eq!(c["measurements"].as_object().unwrap().len(), 64);
    assert!(c["leaf_subject"]
        .as_str()
        .unwrap()
        .contains("GH100 A01 GSP FMC LF"));
}

#[test]
fn blackwell_sdk_report_verifies() {
    let r = verify(
        "sdk-blackwellAttestationReport.txt",
        "sdk-blackwellCertChain.txt",
        BLACKWELL_NONCE,
        &["--at", AT],
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let c = &r.json()["claims"];
    assert_eq!(c["architecture"], "blackwell");
    assert_eq!(c["fwid_checked"], true);
    assert_eq!(c["project"], "G525");
}

#[test]
fn trustee_report_verifies_with_trailing_zero() {
    let r = verify(
        "trustee-hopper_coco_report1.txt",
        "trustee-hopper_coco_certs1.txt",
        COCO_NONCE,
        &["--at", AT],
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.json()["claims"]["trailing_zero_bytes"], 1);
}

#[test]
fn wrong_nonce_is_rejected_at_nonce() {
    let r = verify(
        "sdk-hopperAttestationReport.txt",
        "sdk-hopperCertChain.txt",
        COCO_NONCE,
        &["--at", AT],
    );
    assert_rejected(&r, "nonce");
}

#[test]
fn invalid_signature_vector_is_rejected() {
    // The shared README's expected outcome: reject at `signature`.
    let r = verify(
        "sdk-hopperAttestationReportInvalidSignature.txt",
        "sdk-hopperCertChain.txt",
        BLACKWELL_NONCE,
        &["--at", AT],
    );
    assert_rejected(&r, "signature");
}

#[test]
fn tampered_signature_is_rejected_at_signature() {
    let hex = std::fs::read_to_string(nv("trustee-hopper_coco_report1.txt")).unwrap();
    let mut bytes = hex::decode(hex.trim()).unwrap();
    let n = bytes.len();
    bytes[n - 10] ^= 1;
    let dir = std::env::temp_dir().join(format!("custody-nvgpu-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("tampered.bin");
    std::fs::write(&p, &bytes).unwrap();
    let r = custody([
        "verify",
        "nvgpu",
        "--report",
        p.to_str().unwrap(),
        "--certs",
        nv("trustee-hopper_coco_certs1.txt").to_str().unwrap(),
        "--nonce",
        COCO_NONCE,
        "--at",
        AT,
    ]);
    assert_rejected(&r, "signature");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn expired_case_depends_on_the_time() {
    let before = verify(
        "sdk-hopperAttestationReportExpired.txt",
        "sdk-hopperCertChainExpired.txt",
        BLACKWELL_NONCE,
        &["--at", BEFORE],
    );
    assert_rejected(&before, "cert_validity");
    let inside = verify(
        "sdk-hopperAttestationReportExpired.txt",
        "sdk-hopperCertChainExpired.txt",
        BLACKWELL_NONCE,
        &["--at", AT],
    );
    assert_eq!(inside.code, 0, "{}", inside.stdout);
}

#[test]
fn broken_chains_are_rejected_at_cert_chain() {
    for chain in [
        "trustee-hopper_cert_chain_case2.txt",
        "trustee-hopper_cert_chain_case3.txt",
        "trustee-hopper_cert_chain_case4.txt",
    ] {
        let r = verify(
            "trustee-hopper_coco_report1.txt",
            chain,
            COCO_NONCE,
            &["--at", AT],
        );
        assert_rejected(&r, "cert_chain");
    }
}

#[test]
fn foreign_chain_is_rejected_at_signature() {
    let r = verify(
        "trustee-hopper_coco_report1.txt",
        "sdk-blackwellCertChain.txt",
        COCO_NONCE,
        &["--at", AT],
    );
    assert_rejected(&r, "signature");
}

#[test]
fn wrong_pinned_root_is_rejected_at_cert_chain() {
    let rim_root = nv("nvidia-rim-root.pem");
    let r = verify(
        "sdk-hopperAttestationReport.txt",
        "sdk-hopperCertChain.txt",
        HOPPER_NONCE,
        &["--at", AT, "--root", rim_root.to_str().unwrap()],
    );
    assert_rejected(&r, "cert_chain");
}

#[test]
fn malformed_report_is_a_parse_rejection() {
    let dir = std::env::temp_dir().join(format!("custody-nvgpu-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("short.hex");
    std::fs::write(&p, "11e001ff").unwrap();
    let r = custody([
        "verify",
        "nvgpu",
        "--report",
        p.to_str().unwrap(),
        "--certs",
        nv("sdk-hopperCertChain.txt").to_str().unwrap(),
        "--nonce",
        HOPPER_NONCE,
    ]);
    assert_rejected(&r, "parse");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_usage_exits_2() {
    // Nonce of 31 bytes.
    let r = verify(
        "sdk-hopperAttestationReport.txt",
        "sdk-hopperCertChain.txt",
        &HOPPER_NONCE[..62],
        &[],
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stdout.is_empty());
    // Not hex.
    let r = verify(
        "sdk-hopperAttestationReport.txt",
        "sdk-hopperCertChain.txt",
        "zz",
        &[],
    );
    assert_eq!(r.code, 2);
    // Missing file.
    let r = verify("no-such-report.txt", "sdk-hopperCertChain.txt", HOPPER_NONCE, &[]);
    assert_eq!(r.code, 2);
    // Bad --at.
    let r = verify(
        "sdk-hopperAttestationReport.txt",
        "sdk-hopperCertChain.txt",
        HOPPER_NONCE,
        &["--at", "yesterday"],
    );
    assert_eq!(r.code, 2);
}

#[test]
fn rim_given_runs_the_rim_check() {
    // The RIM verifier lives on another branch; here it must at least be reached and
    // named (a RIM that is not a signed SWID tag can never pass).
    let dir = std::env::temp_dir().join(format!("custody-nvgpu-rim-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("rim.xml");
    std::fs::write(&p, "<SoftwareIdentity/>").unwrap();
    let r = verify(
        "sdk-hopperAttestationReport.txt",
        "sdk-hopperCertChain.txt",
        HOPPER_NONCE,
        &["--at", AT, "--rim", p.to_str().unwrap()],
    );
    assert_rejected(&r, "rim");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every RIM vector through the CLI with the sdk Hopper report, each rejected at `rim` for
/// its own named reason (the shared README's expected outcomes).
#[test]
fn rim_vectors_are_rejected_for_their_named_reasons() {
    let cases = [
        (
            "NV_GPU_DRIVER_GH100_535.86.09_measurement_mismatch.xml",
            "RIM signature",
        ),
        ("incorrect_signature_driver_rim.xml", "RIM signature"),
        (
            "incorrect_cert_chain_driver_rim.xml",
            "RIM signing certificate chain",
        ),
        ("NV_GPU_DRIVER_GH100_570.124.03_expired.xml", "expired"),
        (
            "NV_GPU_VBIOS_1010_0200_882_96005E0001_measurement_mismatch.xml",
            "measurement index 9",
        ),
        // Validly signed, but for another driver than the report's 535.86.09.
        ("NV_GPU_DRIVER_GH100_550.144.03.xml", "the report says 535.86.09"),
    ];
    for (rim, reason) in cases {
        let path = nv("rims").join(rim).display().to_string();
        let r = verify(
            "sdk-hopperAttestationReport.txt",
            "sdk-hopperCertChain.txt",
            HOPPER_NONCE,
            &["--at", "2025-06-01T00:00:00Z", "--rim", &path],
        );
        assert_rejected(&r, "rim");
        let j = r.json();
        let failed = j["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["ok"] == false)
            .unwrap();
        let detail = failed["detail"].as_str().unwrap();
        assert!(detail.contains(reason), "{rim}: {detail}");
        // Every check before `rim` passed: the device evidence itself is genuine.
        let passed: Vec<&str> = j["checks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["ok"] == true)
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            passed,
            [
                "parse",
                "nonce",
                "cert_chain",
                "cert_validity",
                "signature",
                "fwid"
            ],
            "{rim}"
        );
    }
}
