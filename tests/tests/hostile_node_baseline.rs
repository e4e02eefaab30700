//! A hostile node against the reference baseline (issue 19, item 8): with trust on first
//! use, the first node of a group set the baseline for everyone, and the PCR selection was
//! the node's choice. Each test is one attack, end to end against a real verifier with
//! nodes on swtpm that push their rounds.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use custody_agent::tpm::{TpmCollector, TpmConfig};
use custody_e2e::fleet::*;
use custody_e2e::Swtpm;
use custody_formats::alg::HashAlg;
use custody_formats::tpm::PcrSelection;
use serde_json::Value;
use std::sync::Arc;

/// A TPM collector that quotes only the PCRs the attacker chooses.
fn quoting(t: &Swtpm, pcrs: Vec<u32>) -> Arc<TpmCollector> {
    Arc::new(
        TpmCollector::new(TpmConfig {
            tcti: t.tcti(),
            pcrs: vec![PcrSelection {
                bank: HashAlg::Sha256,
                pcrs,
            }],
            event_log: None,
        })
        .unwrap(),
    )
}

fn tamper(p: &Pusher, t: &Swtpm) {
    p.tpm.release();
    t.tool(&["tpm2_pcrextend", &format!("14:sha256={}", "ab".repeat(32))]);
}

/// Before: the first node quoted only PCR 23, that became the group's baseline, and a
/// second node whose boot chain (PCR 14) was tampered with passed by quoting PCR 23 too.
/// Now every quote must cover the verifier's minimum selection (default sha256 0-7), or
/// the round fails at `pcr_selection` and nothing is learnt from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_node_cannot_set_a_baseline_that_compares_nothing() {
    let (t1, t2) = (Swtpm::start(), Swtpm::start());
    let v = Verifier::start(&[&t1, &t2], Opts::every(3600).revoke_after(5));
    let s1 = tempfile::tempdir().unwrap();
    let s2 = tempfile::tempdir().unwrap();
    let (first, _) = Pusher::enroll(&agent_config(&v, &t1, "first", s1.path()), quoting(&t1, vec![23])).await;
    let (second, _) = Pusher::enroll(
        &agent_config(&v, &t2, "second", s2.path()),
        quoting(&t2, vec![23]),
    )
    .await;
    tamper(&second, &t2);
    for p in [&first, &second] {
        let r = p.push(&v, &p.bundle(&v).await).await;
        assert_eq!(
            (r.status.as_str(), r.failed_check.as_deref()),
            ("contraindicated", Some("pcr_selection")),
            "{}",
            p.name
        );
        let n = v.node(&p.name);
        let reason = n["node"]["reason"].as_str().unwrap();
        assert!(reason.contains("sha256 PCRs 0,1,2,3,4,5,6,7 missing"), "{reason}");
    }
    // Nothing was learnt from them: the group has no baseline yet.
    let r = v.cli(&["reference", "show", "default"]);
    assert_ne!(r.code, 0, "{}", r.stdout);
    assert!(r.stderr.contains("reference_values"), "{}", r.stderr);

    // An honest quote (0-7 and 14) now sets the baseline, and the tampered node fails it.
    first.tpm.release();
    drop(first);
    let (honest, _) = Pusher::enroll(&agent_config(&v, &t1, "first", s1.path()), collector(&t1)).await;
    first_pass(&v, &honest).await;
    second.tpm.release();
    drop(second);
    let (second, _) = {
        let s = tempfile::tempdir().unwrap();
        let cfg = agent_config(&v, &t2, "second", s.path());
        Pusher::enroll(&cfg, collector(&t2)).await
    };
    let r = second.push(&v, &second.bundle(&v).await).await;
    assert_eq!(r.failed_check.as_deref(), Some("reference_values"), "{r:?}");
}

async fn first_pass(v: &Verifier, p: &Pusher) {
    let r = p.push(v, &p.bundle(v).await).await;
    assert_eq!(
        (r.status.as_str(), r.failed_check.as_deref()),
        ("affirming", None),
        "{}",
        p.name
    );
}

/// Under `reference = "tofu-approve"` a learnt baseline is pending: it decides nothing
/// (rounds that match it fail `reference_pending`, which does not count towards
/// revocation; rounds that differ fail `reference_values`) until an operator approves it.
/// Operators put nodes in groups, and a new group learns its own baseline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learnt_baseline_decides_nothing_until_an_operator_approves_it() {
    let (t1, t2, t3) = (Swtpm::start(), Swtpm::start(), Swtpm::start());
    let v = Verifier::start(
        &[&t1, &t2, &t3],
        Opts {
            interval_secs: 3600,
            revoke_after: 2,
            extra: "reference = \"tofu-approve\"\n".into(),
            ..Opts::default()
        },
    );
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (a, _) = Pusher::enroll(&agent_config(&v, &t1, "a", dirs[0].path()), collector(&t1)).await;
    let (b, _) = Pusher::enroll(&agent_config(&v, &t2, "b", dirs[1].path()), collector(&t2)).await;
    let (c, _) = Pusher::enroll(&agent_config(&v, &t3, "c", dirs[2].path()), collector(&t3)).await;

    // The first round proposes the baseline; three rounds later `a` is still not revoked
    // (revoke_after = 2): waiting for the operator is not the node's failure.
    for _ in 0..3 {
        let r = a.push(&v, &a.bundle(&v).await).await;
        assert_eq!(r.failed_check.as_deref(), Some("reference_pending"), "{r:?}");
    }
    let n = v.node("a");
    assert_eq!(n["node"]["state"], "failed", "{n}");
    assert_eq!(n["node"]["consecutive_failures"], 0, "{n}");
    let shown = v.cli_json(&["reference", "show", "default"]);
    assert_eq!(shown["reference"]["pending"], true, "{shown}");
    assert_eq!(shown["reference"]["learned_from"], n["node"]["id"], "{shown}");

    // A tampered node differs from the pending baseline: a real failure.
    tamper(&b, &t2);
    let r = b.push(&v, &b.bundle(&v).await).await;
    assert_eq!(r.failed_check.as_deref(), Some("reference_values"), "{r:?}");
    assert_eq!(v.node("b")["node"]["consecutive_failures"], 1);

    // The operator approves: the baseline decides from now on, and says where it came from.
    let approved = v.cli_json(&["reference", "approve", "default"]);
    assert_eq!(approved["reference"]["source"], "approved", "{approved}");
    assert_eq!(approved["reference"]["pending"], Value::Null, "{approved}");
    first_pass(&v, &a).await;
    let r = v.cli(&["reference", "approve", "default"]);
    assert_ne!(r.code, 0, "nothing is pending any more");

    // The operator moves `c` to its own group: that group proposes its own baseline.
    let moved = v.cli_json(&["nodes", "group", "c", "lab"]);
    assert_eq!(moved["group"], "lab", "{moved}");
    let r = c.push(&v, &c.bundle(&v).await).await;
    assert_eq!(r.failed_check.as_deref(), Some("reference_pending"), "{r:?}");
    assert_eq!(
        v.cli_json(&["reference", "show", "lab"])["reference"]["pending"],
        true
    );
    // Bad group names are refused with the check named.
    let r = v.cli(&["nodes", "group", "c", "no spaces"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("group"), "{}", r.stderr);
}
