//! Reference values an operator manages (issue 22): `custody reference
//! list|show|add|import|export|remove|learn|approve` against a real verifier in
//! `reference = "operator"` mode (nothing is learnt on its own), with a node on swtpm that
//! pushes its rounds. CoRIM in and out: Veraison's parsec TPM sample is imported, and a
//! group's values go out as a CoRIM and come back.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use custody_e2e::fleet::*;
use custody_e2e::{testvectors, Swtpm};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_imports_learns_approves_exports_and_removes_reference_values() {
    let t = Swtpm::start();
    let v = Verifier::start(
        &[&t],
        Opts {
            interval_secs: 3600,
            revoke_after: 10,
            extra: "reference = \"operator\"\n".into(),
            ..Opts::default()
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = Pusher::enroll(&agent_config(&v, &t, "a", dir.path()), collector(&t)).await;
    let push = |want: Option<&'static str>| {
        let (a, v) = (&a, &v);
        async move {
            let r = a.push(v, &a.bundle(v).await).await;
            assert_eq!(r.failed_check.as_deref(), want, "{r:?}");
            r
        }
    };

    // No values provisioned: the operator mode refuses, and learning has nothing to learn
    // from until a round has run.
    let r = v.cli(&["reference", "learn", "default", "--node", "a"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("reference_learn"), "{}", r.stderr);
    push(Some("reference_values")).await;

    // Veraison's parsec TPM CoRIM: PCRs 0-2 in sha256 and sha384. This node's quote does
    // not match them (it quotes no sha384 bank), and the reason names the PCR.
    let parsec = testvectors().join("corim/tpm-parsec-veraison-services");
    let file = std::fs::read_dir(&parsec)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "cbor"))
        .unwrap();
    let imported = v.cli_json(&["reference", "import", "default", file.to_str().unwrap()]);
    assert_eq!(imported["reference"]["source"], "operator", "{imported}");
    assert_eq!(
        imported["reference"]["pcrs"]["sha384"]["2"],
        "2107bbe761fca52d95136a1354db7a4dd57b1b26be0d3da71d9eb23986b34ba615abf6514cf35e5a9ea55a032d068a78"
    );
    push(Some("reference_values")).await;
    let reason = v.node("a")["node"]["reason"].as_str().unwrap().to_owned();
    assert!(reason.contains("sha384 PCR 0"), "{reason}");

    // Learn from the node's latest verified quote: proposed, pending, decides nothing.
    let proposed = v.cli_json(&["reference", "learn", "default", "--node", "a"]);
    assert_eq!(proposed["reference"]["pending"], true, "{proposed}");
    let quoted = proposed["reference"]["pcrs"]["sha256"].as_object().unwrap().len();
    assert!(quoted >= 8, "{proposed}");
    push(Some("reference_pending")).await;
    let approved = v.cli_json(&["reference", "approve", "default"]);
    assert_eq!(approved["reference"]["source"], "approved", "{approved}");
    push(None).await;

    // Out as a CoRIM, and back: remove, refused again, import the export, passes.
    let corim = dir.path().join("default.corim");
    let out = v.cli_json(&["reference", "export", "default", "--out", corim.to_str().unwrap()]);
    assert!(out["bytes"].as_u64().unwrap() > 100, "{out}");
    let listed = v.cli_json(&["reference", "list"]);
    assert_eq!(listed["groups"].as_array().unwrap().len(), 1, "{listed}");
    v.cli_json(&["reference", "remove", "default"]);
    assert!(v.cli_json(&["reference", "list"])["groups"]
        .as_array()
        .unwrap()
        .is_empty());
    let r = v.cli(&["reference", "remove", "default"]);
    assert_ne!(r.code, 0, "nothing left to remove");
    push(Some("reference_values")).await;
    let back = v.cli_json(&["reference", "import", "default", corim.to_str().unwrap()]);
    assert_eq!(
        back["reference"]["pcrs"], approved["reference"]["pcrs"],
        "the export round-trips"
    );
    push(None).await;

    // Operator values by hand; a SHA-1 bank has no CoRIM algorithm, so it cannot go out.
    v.cli_json(&[
        "reference",
        "add",
        "lab",
        "--pcr",
        &format!("sha1:0={}", "00".repeat(20)),
    ]);
    let r = v.cli(&[
        "reference",
        "export",
        "lab",
        "--out",
        dir.path().join("lab.corim").to_str().unwrap(),
    ]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.to_lowercase().contains("sha1") || r.stderr.contains("SHA-1"),
        "{}",
        r.stderr
    );
    for bad in ["sha256:7", "sha256=ab", "sha256:x=ab"] {
        let r = v.cli(&["reference", "add", "lab", "--pcr", bad]);
        assert_ne!(r.code, 0, "{bad}");
        assert!(r.stderr.contains("BANK:INDEX=HEX"), "{bad}: {}", r.stderr);
    }
    // A name the API cannot carry is refused by the CLI; before, its bad characters were
    // dropped and `no spaces` acted on group `nospaces`.
    let r = v.cli(&["reference", "learn", "no spaces", "--node", "a"]);
    assert_ne!(r.code, 0, "{}", r.stdout);
    assert!(r.stderr.contains("not a valid name"), "{}", r.stderr);
    assert_ne!(v.cli(&["reference", "show", "nospaces"]).code, 0);
    let r = v.cli(&["nodes", "remove", "a ", "--reason", "typo"]);
    assert!(r.stderr.contains("not a valid name"), "{}", r.stderr);
    assert_eq!(v.node("a")["node"]["state"], "trusted");
    let r = v.cli(&["reference", "learn", "default", "--node", "nobody"]);
    assert!(r.stderr.contains("node"), "{}", r.stderr);

    // Every change is in the audit log, with its source, in order.
    let export = dir.path().join("audit");
    let r = custody_e2e::custody([
        "audit",
        "export",
        "--all",
        "--db",
        v.data().join("custody.db").to_str().unwrap(),
        "--out",
        export.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let sources: Vec<(String, String)> = std::fs::read_to_string(export.join("entries.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["kind"] == "policy_change" && e["body"]["reference_values"].is_string())
        .map(|e| {
            (
                e["body"]["reference_values"].as_str().unwrap().to_owned(),
                e["body"]["source"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = [
        ("default", "operator"),
        ("default", "proposed"),
        ("default", "approved"),
        ("default", "removed"),
        ("default", "operator"),
        ("lab", "operator"),
    ]
    .iter()
    .map(|(g, s)| (g.to_string(), s.to_string()))
    .collect();
    assert_eq!(sources, want);
}
