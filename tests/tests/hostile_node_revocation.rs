//! A hostile node against revocation and names (issue 19, items 4-7): each test is one
//! attack, played end to end against a real `custody-verifier` with real agents on swtpm,
//! and named after what it shows. The README's threat model points here.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use axum::http::{Method, StatusCode};
use custody_e2e::fleet::*;
use custody_e2e::{decode, eventually, free_port, Swtpm};
use custody_formats::api::{self, EnrollChallenge, EnrollRequest, CBOR};
use serde_json::Value;

/// Extend PCR 14 behind the agent's back (the agent lets go of swtpm between rounds).
fn tamper(t: &Swtpm) {
    let m = format!("14:sha256={}", "ab".repeat(32));
    eventually("swtpm to take a PCR extend", 20, || {
        t.try_tool(&["tpm2_pcrextend", &m]).then_some(())
    });
}

fn attest(v: &Verifier, name: &str) -> Value {
    let r = v.attest(name);
    assert!(
        r.code == 0 || r.code == 1,
        "custody attest {name}: {}\n{}",
        r.stdout,
        r.stderr
    );
    r.json()
}

/// The node's events of `kind`.
fn events(v: &Verifier, name: &str, kind: &str) -> Vec<Value> {
    let n = v.node(name);
    n["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == kind)
        .cloned()
        .collect()
}

fn node_state(v: &Verifier, name: &str) -> (String, u64) {
    let n = v.node(name);
    (
        n["node"]["state"].as_str().unwrap().to_owned(),
        n["node"]["consecutive_failures"].as_u64().unwrap(),
    )
}

/// Item 5. Before: an enrollment wrote `state: enrolled, failures: 0`, so an agent that
/// restarted before its third failure was never revoked. Now failures and state belong to
/// the TPM and only a passing round clears them.
#[test]
fn re_enrollment_does_not_reset_a_failing_node() {
    let t = Swtpm::start();
    let v = Verifier::start(&[&t], Opts::every(3600).revoke_after(3));
    let mut a = Agent::start(&v, &t, "flaky");
    enrolled(&v, &mut a, "flaky");
    let r = attest(&v, "flaky");
    assert_eq!(r["state"], "trusted", "{r}");

    tamper(&t);
    for n in 1..=2 {
        let r = attest(&v, "flaky");
        assert_eq!(r["failed_check"], "reference_values", "{r}");
        assert_eq!(node_state(&v, "flaky"), ("failed".into(), n));
    }
    // The agent restarts and enrolls again (its credential activation succeeds: same TPM).
    a.restart();
    eventually("the re-enrollment to land", 60, || {
        (!events(&v, "flaky", "re_enrolled").is_empty()).then_some(())
    });
    assert_eq!(
        node_state(&v, "flaky"),
        ("failed".into(), 2),
        "a re-enrollment keeps the TPM's failures and state"
    );
    // The third failure revokes, as it would have without the restart.
    let r = attest(&v, "flaky");
    assert_eq!(r["failed_check"], "reference_values", "{r}");
    assert_eq!(node_state(&v, "flaky").0, "revoked");
}

/// Item 4. Before: the node row was written with `INSERT OR REPLACE` and the name checked
/// at the enrollment's begin only, so a TPM that began with a free name and finished after
/// another node took it silently deleted that node. Now the name is checked in the
/// finishing transaction, nodes are upserted by id, and names shaped like node ids are
/// refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finishing_enrollment_cannot_take_another_nodes_name() {
    let (ta, tb) = (Swtpm::start(), Swtpm::start());
    let v = Verifier::start(&[&ta, &tb], Opts::every(3600));
    let anon = v.client(None);
    let ca = collector(&ta);
    let ka = ca.keys().unwrap();
    let request = |name: &str| enroll_request(&ka, name, &format!("127.0.0.1:{}", free_port()));
    let cbor = |r: &EnrollRequest| api::to_cbor("enroll", r).unwrap();
    // A name of a node id's shape is refused at once.
    let r = v
        .request(
            &anon,
            Method::POST,
            "/v1/enroll",
            Some(CBOR),
            cbor(&request("n-0123456789abcdef")),
        )
        .await;
    assert_refusal(&r, StatusCode::FORBIDDEN, "node_name");

    // TPM A begins as `shared` while the name is free ...
    let sent = request("shared");
    let r = v
        .request(&anon, Method::POST, "/v1/enroll", Some(CBOR), cbor(&sent))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", String::from_utf8_lossy(&r.body));
    let ch: EnrollChallenge = decode!("challenge", &r);
    // ... TPM B's agent enrolls as `shared` meanwhile ...
    let mut b = Agent::start(&v, &tb, "shared");
    let bn = enrolled(&v, &mut b, "shared");
    // ... and A finishes: refused, and B's node is still there.
    let secret = ca
        .activate_credential(&ch.id_object, &ch.encrypted_secret)
        .unwrap();
    let r = finish_enrollment(&v, ch.enrollment_id, &secret, &sent).await;
    let f = assert_refusal(&r, StatusCode::FORBIDDEN, "node_name");
    assert!(f.detail.contains("another TPM"), "{}", f.detail);
    let listed = v.cli_json(&["nodes", "list"]);
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![bn["id"].as_str().unwrap()], "{listed}");
}

/// Item 6. Before: push rounds were not serialised with pulled ones, so a passing push
/// could conclude from a read taken before a concurrent failing pull revoked the node and
/// write `trusted` over `revoked`. Now one round per node runs at a time, pushed or pulled
/// (the store also never overwrites `revoked`: see the store's unit tests).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_round_cannot_race_a_pulled_round_of_the_same_node() {
    let t = Swtpm::start();
    let v = Verifier::start(&[&t], Opts::every(3600).revoke_after(5));
    // The node's round endpoint accepts TCP and never answers: a pulled round hangs there
    // until the verifier's round timeout (5 s).
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let state = tempfile::tempdir().unwrap();
    let mut cfg = agent_config(&v, &t, "racer", state.path());
    cfg.endpoint = Some(silent.local_addr().unwrap().to_string());
    let (p, _) = Pusher::enroll(&cfg, collector(&t)).await;
    let _held = std::thread::spawn(move || {
        let _conns: Vec<_> = silent.incoming().take(8).collect();
    });
    // The scheduler's first pull may be running already; either way one is in flight now.
    let pull = std::thread::spawn({
        let url = v.url();
        let id = v.path("operator");
        move || {
            custody_e2e::custody([
                "attest",
                "racer",
                "--verifier",
                &url,
                "--identity",
                id.to_str().unwrap(),
                "--json",
            ])
        }
    });
    std::thread::sleep(std::time::Duration::from_millis(800));
    let bundle = p.bundle(&v).await;
    let r = v
        .request(&p.client, Method::POST, "/v1/evidence", Some(CBOR), bundle)
        .await;
    let f = assert_refusal(&r, StatusCode::CONFLICT, "busy");
    assert!(f.detail.contains("already running"), "{}", f.detail);
    let _ = pull.join();
    // Once the pull is over, pushing works again.
    let pushed = eventually("a push once no round is in flight", 20, || {
        let rt = tokio::runtime::Handle::current();
        let r = tokio::task::block_in_place(|| {
            rt.block_on(async {
                let b = p.bundle(&v).await;
                v.request(&p.client, Method::POST, "/v1/evidence", Some(CBOR), b)
                    .await
            })
        });
        (r.status == StatusCode::OK).then_some(r)
    });
    let res: api::PushResult = decode!("push result", &pushed);
    assert_eq!(res.status, "affirming", "{res:?}");
}

/// Item 7. Before: TPM2_Clear sets the reset counters back while the verifier kept the
/// node's clock baseline, so a cleared TPM failed `clock_monotonic` at every round and
/// was revoked for good. Now a credential activation that proves a new AK on the same EK
/// restarts the baseline, and the enrollment's audit entry and event say so.
#[test]
fn a_cleared_tpm_is_not_revoked_forever() {
    let t = Swtpm::start();
    // A power cycle first, so that the clear below has a reset count to set back.
    t.power_cycle();
    assert!(t.reset_counts().0 >= 1);
    let v = Verifier::start(&[&t], Opts::every(3600).revoke_after(2));
    let mut a = Agent::start(&v, &t, "cleared");
    enrolled(&v, &mut a, "cleared");
    let r = attest(&v, "cleared");
    assert_eq!(r["state"], "trusted", "{r}");

    // The owner clears the TPM (agent stopped: swtpm serves one client).
    terminate(&mut a.child);
    t.tool(&["tpm2_clear", "-c", "p"]);
    assert_eq!(t.reset_counts(), (0, 0), "TPM2_Clear sets the counters back");
    a.child = Agent::spawn(a.dir.path());
    let re = eventually("the agent to enroll again with a new AK", 60, || {
        events(&v, "cleared", "re_enrolled").into_iter().next()
    });
    assert_eq!(re["detail"]["ak_changed"], true, "{re}");
    assert_eq!(re["detail"]["clock_baseline_restarted"], true, "{re}");
    // Two rounds in a row pass: no `clock_monotonic` failure, no revocation.
    for _ in 0..2 {
        let r = attest(&v, "cleared");
        assert_eq!(r["state"], "trusted", "{r}");
        assert!(r["failed_check"].is_null(), "{r}");
    }
}
