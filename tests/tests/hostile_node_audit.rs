//! Issue 19 findings end to end: real `custody-verifier` and `custody-agent` processes on
//! swtpm, one test per finding, named after it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use custody_e2e::fleet::*;
use custody_e2e::{eventually, service_bin, Swtpm};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b))
}

/// The EAR digests of every stored result, and those the log's attestation-result
/// entries name.
fn results_and_entries(db: &Path) -> (BTreeSet<String>, BTreeSet<String>) {
    let c = rusqlite::Connection::open(db).unwrap();
    let mut st = c.prepare("SELECT ear FROM results").unwrap();
    let results = st
        .query_map([], |r| r.get::<_, Vec<u8>>(0))
        .unwrap()
        .map(|e| sha256_hex(&e.unwrap()))
        .collect();
    let mut st = c.prepare("SELECT leaf FROM entries ORDER BY idx").unwrap();
    let entries = st
        .query_map([], |r| r.get::<_, Vec<u8>>(0))
        .unwrap()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_slice(&l.unwrap()).unwrap();
            (v["kind"] == "attestation_result").then(|| v["body"]["ear_sha256"].as_str().unwrap().to_owned())
        })
        .collect();
    (results, entries)
}

/// Item 10, "a result can be recorded with no log entry": the verifier is killed inside
/// a round's write (after the result and its entry are written, before the commit). After
/// a restart the store and the log agree: no result without its entry, no entry without
/// its result, and the interrupted round left neither.
#[test]
fn a_result_can_be_recorded_with_no_log_entry() {
    let t = Swtpm::start();
    let mut v = Verifier::start(&[&t], Opts::every(3600));
    let mut a = Agent::start(&v, &t, "node-a");
    enrolled(&v, &mut a, "node-a");
    let r = v.attest("node-a");
    assert_eq!(r.code, 0, "{}\n{}\n{}", r.stdout, r.stderr, v.log());
    v.stop();
    let db = v.data().join("custody.db");
    let before = results_and_entries(&db);
    assert_eq!(before.0, before.1);
    assert!(!before.0.is_empty());

    // Restart with the fault armed; the next round's commit aborts the process.
    let log = std::fs::OpenOptions::new()
        .append(true)
        .open(v.path("verifier.log"))
        .unwrap();
    v.child = Some(
        Command::new(service_bin("custody-verifier"))
            .args(["run", "--config"])
            .arg(v.path("verifier.toml"))
            .env("RUST_LOG", "info")
            .env("CUSTODY_FAULT", "abort_before_commit")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap(),
    );
    let st = eventually("the verifier to abort inside a round's commit", 60, || {
        if let Some(st) = v.child.as_mut().unwrap().try_wait().unwrap() {
            return Some(st);
        }
        let _ = v.cli(&["attest", "node-a"]);
        None
    });
    v.child = None;
    assert!(!st.success(), "{st}");
    assert!(v.log().contains("CUSTODY_FAULT: aborting"), "{}", v.log());

    v.spawn();
    let after = results_and_entries(&db);
    assert_eq!(
        after.0, after.1,
        "results and attestation-result entries disagree after the crash"
    );
    assert_eq!(after, before, "the interrupted round left a trace");
    // And the verifier goes on deciding (and logging) normally.
    let r = v.attest("node-a");
    assert_eq!(r.code, 0, "{}\n{}\n{}", r.stdout, r.stderr, v.log());
    let (res, ent) = results_and_entries(&db);
    assert_eq!(res, ent);
    assert_eq!(res.len(), before.0.len() + 1);
}
