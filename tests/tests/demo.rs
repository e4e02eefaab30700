//! `custody demo` end to end, as a new user runs it: every step must happen, in order,
//! with the outcomes it announces (the demo itself bails on any wrong outcome; this test
//! also pins what it prints).
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

use custody_e2e::{custody, service_bin};

#[test]
fn demo_runs_every_step_and_ends_with_an_audited_history() {
    // The demo runs the verifier and agent binaries found next to `custody`.
    let _ = service_bin("custody-verifier");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    let r = custody(["demo", "--dir", dir.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let out = &r.stdout;
    let mut at = 0;
    // In this order.
    for want in [
        "[1] two software TPMs",
        "paris-gpu-1: contraindicated (reference_pending): its PCRs are proposed",
        "pending approval",
        "custody reference approve default: source approved",
        "paris-gpu-1: affirming -> node trusted (reference PCRs approved by the operator)",
        "frankfurt-gpu-2: affirming -> node trusted",
        "[5] a training job's checkpoint moves",
        "every file's SHA-256 matches",
        "frankfurt-gpu-2: revoked",
        "reason: reference_values",
        // `failed`, or already `revoked` when a continuous round (every 2 s, revoke after
        // 2) saw the new registry before the demo's own round did.
        "paris-gpu-1: contraindicated -> node ",
        "(failed check `policy`)",
        "migration refused: destination_attestation",
        "Nimbus Inc (US)",
        "verified:",
        "stays (2):",
        "paris-gpu-1 (par-1, FR) -> frankfurt-gpu-2 (fra-1, DE) under eu-sovereign; placed",
        "refused (1):",
        "the auditor's report (one HTML file, opens offline):",
        "summary:",
    ] {
        let Some(i) = out[at..].find(want) else {
            panic!("demo output lacks {want:?} after byte {at}:\n{out}");
        };
        at += i + want.len();
    }
    // The moved checkpoint is at Frankfurt, not back in Paris; the export is kept.
    assert!(dir
        .join("agent-1-checkpoints/llama-ft/model-00001-of-00002.bin")
        .is_file());
    assert!(!dir.join("agent-0-checkpoints/llama-ft").exists());
    assert!(dir.join("audit-export/entries.jsonl").is_file());
    let report = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(
        report.contains("data-job=\"llama-ft\""),
        "the report names the job"
    );
    // In a real browser: the numbers on the page are the export's, nothing is loaded, and
    // a screenshot is kept (target/custody-artifacts/demo-report.png; docs/audit-report.png
    // is one).
    let entries = std::fs::read_to_string(dir.join("audit-export/entries.jsonl"))
        .unwrap()
        .lines()
        .count();
    let html = dir.join("report.html");
    let profile = tmp.path().join("chromium-profile");
    let dom = custody_e2e::chromium(&html, &profile, &["--dump-dom"]);
    for want in [
        format!("data-entries=\"{entries}\""),
        "data-stays=\"2\"".to_owned(),
        "data-refusals=\"1\"".to_owned(),
        "data-dots=\"2\"".to_owned(),
        "data-proofs=".to_owned(),
    ] {
        assert!(dom.contains(&want), "{want} not on the page");
    }
    custody_e2e::assert_self_contained(&dom);
    custody_e2e::screenshot(&html, &profile, "demo-report.png", 1500);
    // The map of the registry's two sites, and Paris's node told of registry v2.
    for want in [
        "data-dots=\"2\"",
        "class=\"land sited\" data-country=\"FR\"",
        "class=\"land sited\" data-country=\"DE\"",
        "operator EuroCloud SAS now exposed to the US CLOUD Act",
    ] {
        assert!(report.contains(want), "{want} not in the report");
    }
}
