//! A tiny load against a spawned verifier (debug build): every round must affirm.
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

/// The spawned verifier (debug build), built with the same cargo.
fn verifier() -> PathBuf {
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
    target_dir().join("debug/custody-verifier")
}

/// Run the load generator against a spawned verifier with `args` and `--json`: its last
/// line (the summary), the JSON report before it, and whether it exited 0.
fn run(args: &[&str]) -> (String, serde_json::Value, bool) {
    let out = Command::new(env!("CARGO_BIN_EXE_custody-loadgen"))
        .args(["--spawn", "--json"])
        .args(args)
        .arg("--verifier-bin")
        .arg(verifier())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines.len() >= 2,
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = serde_json::from_str(lines[lines.len() - 2]).unwrap();
    (lines[lines.len() - 1].to_owned(), r, out.status.success())
}

#[test]
fn two_attesters_two_seconds_no_errors() {
    let (last, r, ok) = run(&["--attesters", "2", "--duration", "2", "--concurrency", "2"]);
    assert!(last.starts_with("loadgen: 2 attesters,"), "{last}");
    assert_eq!(r["errors"], 0, "{r}");
    // Every round's audit entry was written too (a failed append does not fail a round).
    assert_eq!(r["audit_errors"], 0, "{r}");
    assert!(r["appraisals"].as_u64().unwrap() >= 1, "{r}");
    assert!(r["latency"]["p99_ms"].as_f64().unwrap() > 0.0, "{r}");
    assert!(r["verifier_cpu"]["user_s"].as_f64().is_some(), "{r}");
    assert!(ok);
}

/// Open loop: 10 rounds a second for 2 s, scheduled whatever the verifier answers; every
/// scheduled round is answered, its latency counted from its scheduled start.
#[test]
fn an_open_loop_answers_every_scheduled_round() {
    let (last, r, ok) = run(&["--attesters", "4", "--duration", "2", "--rate", "10"]);
    assert!(last.starts_with("loadgen (open loop, 10/s offered, "), "{last}");
    assert_eq!(r["errors"], 0, "{r}");
    assert_eq!(r["offered_per_s"], 10.0, "{r}");
    assert_eq!(r["appraisals"], 20, "rounds at 0, 0.1, ... 1.9 s: {r}");
    assert!(r["started_late"].as_u64().is_some(), "{r}");
    // From the scheduled start: at least the round itself.
    assert!(
        r["latency"]["p50_ms"].as_f64().unwrap() >= r["evidence_request"]["p50_ms"].as_f64().unwrap(),
        "{r}"
    );
    assert!(ok);
}
