//! The attack bench in miniature (debug build, a few seconds): the attacker opens its
//! connections, stops by itself, and the summary line has the documented shape.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::PathBuf;
use std::process::Command;

fn target_dir() -> PathBuf {
    std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"))
}

#[test]
fn tiny_attack_runs_and_stops_by_itself() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = Command::new(cargo)
        .args([
            "build",
            "--quiet",
            "-p",
            "custody-service",
            "--bin",
            "custody-verifier",
        ])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .status()
        .unwrap();
    assert!(st.success(), "building custody-verifier failed");
    let t = std::time::Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_custody-loadgen"))
        .args([
            "--spawn",
            "--attack",
            "--attesters",
            "2",
            "--duration",
            "1",
            "--concurrency",
            "2",
            "--service-log",
            "warn",
            "--json",
            "--attack-args",
            "--idle-tls 20 --raw-tcp 4 --slow 4 --slow-byte-ms 50 --big 1 --big-kib 3072 --garbage 1 --garbage-max 512",
        ])
        .arg("--verifier-bin")
        .arg(target_dir().join("debug/custody-verifier"))
        .arg("--attacker-bin")
        .arg(env!("CARGO_BIN_EXE_custody-attacker"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    let last = lines[lines.len() - 1];
    assert!(last.starts_with("attack: clean "), "{last}");
    assert!(
        last.contains("/s p99 ") && last.contains("; under attack "),
        "{last}"
    );
    assert!(last.contains("; revoked 0; errors 0"), "{last}");
    let r: serde_json::Value = serde_json::from_str(lines[lines.len() - 3]).unwrap();
    let done = &r["attacker_done"];
    assert_eq!(done["idle_tls_open_peak"], 20, "{r}");
    assert_eq!(done["raw_tcp_open_peak"], 4, "{r}");
    assert_eq!(done["slow_open_peak"], 4, "{r}");
    assert!(done["slow_header_bytes"].as_u64().unwrap() > 4, "{r}");
    assert!(!done["big_body"].as_object().unwrap().is_empty(), "{r}");
    assert!(!done["garbage_evidence"].as_object().unwrap().is_empty(), "{r}");
    // The verifier held the attack's sockets: 28 more descriptors at least.
    let clean = r["verifier_fds_clean_peak"].as_u64().unwrap();
    assert!(
        r["verifier_fds_attack_peak"].as_u64().unwrap() >= clean + 28,
        "{r}"
    );
    assert!(r["attacked"]["appraisals"].as_u64().unwrap() >= 1, "{r}");
    // Bounded: 1 s clean + 1 s attacked + the attacker's 3 s margin, plus enrollment.
    assert!(t.elapsed() < std::time::Duration::from_secs(120));
}
