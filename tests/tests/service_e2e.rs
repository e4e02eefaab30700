//! The verifier service end to end: real `custody-verifier` and `custody-agent` processes,
//! each agent on its own swtpm (each swtpm with its own local CA), driven through the
//! `custody` CLI and through in-process clients that speak the wire messages of
//! `custody_formats::api` where a test needs to forge or replay one. Every test starts its
//! own verifier (temporary data directory, free port) and kills what it started on drop.
//! swtpm, swtpm_setup and tpm2-tools are required: these tests fail (not skip) without them.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use axum::http::{Method, StatusCode};
use custody_agent::collector::CollectError;
use custody_agent::daemon;
use custody_e2e::decode;
use custody_e2e::fleet::*;
use custody_e2e::{custody, eventually, Swtpm};
use custody_formats::api::{self, ActivateRequest, EnrollChallenge, EnrollRequest, Enrolled, CBOR};
use custody_formats::bundle::EvidenceBundle;
use custody_net::Identity;
use custody_verifier::check::{FailedCheck, UnixTime};
use custody_verifier::ear::{self, ClaimValue, EarSigningKey, TrustTier};
use serde_json::Value;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------
// 1. Enrollment accepted, a round, the signed result

#[test]
fn real_agent_enrolls_and_passes_a_round() {
    let t = Swtpm::start();
    let v = Verifier::start(&[&t], Opts::default());
    let mut a = Agent::start(&v, &t, "node-a");
    let n = enrolled(&v, &mut a, "node-a");
    let id = n["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("n-"), "{n}");
    assert_eq!(n["ek_cert_sha256"].as_str().unwrap().len(), 64);
    // Enrolled and not yet attested, or already through a scheduled round that passed.
    match n["state"].as_str().unwrap() {
        "enrolled" => assert!(n["last_round_at"].is_null(), "{n}"),
        "trusted" => assert!(n["last_round_at"].is_i64(), "{n}"),
        other => panic!("state {other}: {n}\n{}", v.log()),
    }

    let r = v.attest("node-a");
    assert_eq!(r.code, 0, "{}\n{}\n{}", r.stdout, r.stderr, v.log());
    let s = r.json();
    assert_eq!(s["status"], "affirming", "{s}");
    assert_eq!(s["reference"], "tofu", "{s}");
    assert_eq!(s["state"], "trusted", "{s}");
    assert!(s["failed_check"].is_null(), "{s}");
    assert_eq!(s["node_id"], id.as_str());

    let res = v.cli_json(&["result", "node-a"]);
    let e = &res["ear_claims"];
    assert_eq!(e["ear.status"], "affirming", "{res}");
    assert_eq!(e["custody.node-id"], id.as_str());
    assert_eq!(e["submods"]["tpm"]["ear.status"], "affirming", "{res}");
    assert_eq!(
        e["submods"]["tpm"]["ear.veraison.policy-claims"]["reference"],
        "tofu"
    );
    assert_eq!(res["expired"], false);
    assert!(res["result"]["failed_check"].is_null());

    let show = v.node("node-a");
    assert_eq!(show["node"]["state"], "trusted");
    let results = show["results"].as_array().unwrap();
    assert!(
        results
            .iter()
            .any(|x| x["id"] == s["result_id"] && x["status"] == "affirming"),
        "{show}"
    );
    let kinds: Vec<&str> = show["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"enrolled"), "{kinds:?}");
    assert!(kinds.contains(&"reference_learned"), "{kinds:?}");
    assert!(kinds.contains(&"trusted"), "{kinds:?}");

    let rt = tokio::runtime::Runtime::new().unwrap();
    assert_eq!(rt.block_on(v.enrollments("enrolled")), 1);
    assert_eq!(rt.block_on(v.enrollments("refused")), 0);

    // A restarted agent loads its AK from state_dir/ak.tpm: it re-enrolls (a fresh
    // credential activation and TLS certificate) with the same AK, and the verifier says so.
    let ak_file = a.dir.path().join("state/ak.tpm");
    let stored = std::fs::read(&ak_file).unwrap();
    a.restart();
    let re = eventually("the restarted agent to re-enroll", 60, || {
        if let Some(st) = a.child.try_wait().unwrap() {
            panic!("the agent exited ({st}):\n{}", a.log());
        }
        let show = v.node("node-a");
        let ev = show["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["kind"] == "re_enrolled")
            .cloned();
        ev.map(|e| (show, e))
    });
    assert_eq!(re.1["detail"]["ak_changed"], false, "{}", re.0);
    assert_eq!(std::fs::read(&ak_file).unwrap(), stored);
    assert!(a.log().contains("loaded the stored AK"), "{}", a.log());
    let r = v.attest("node-a");
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.json()["status"], "affirming");
    assert_eq!(rt.block_on(v.enrollments("enrolled")), 2);
}

// ---------------------------------------------------------------------------------------
// 2. An EK certificate from a CA the verifier does not trust

#[test]
fn ek_from_an_untrusted_ca_is_refused() {
    // The verifier trusts swtpm A's CA; the agent runs on B, whose CA has the same subject
    // names but other keys.
    let a = Swtpm::start();
    let b = Swtpm::start();
    let v = Verifier::start(&[&a], Opts::default());
    let mut agent = Agent::start(&v, &b, "node-b");
    let st = eventually("the agent to give up", 60, || agent.child.try_wait().unwrap());
    let log = agent.log();
    assert!(!st.success(), "{log}");
    assert!(log.contains("enrollment refused: ek_cert_chain"), "{log}");
    assert!(v.log().contains("enrollment refused"), "{}", v.log());
    assert_eq!(v.cli_json(&["nodes", "list"]), serde_json::json!([]));
    let r = v.cli(&["nodes", "show", "node-b"]);
    assert_eq!(r.code, 2, "{}", r.stdout);
    assert!(
        r.stderr.contains("404") && r.stderr.contains("node"),
        "{}",
        r.stderr
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    assert!(rt.block_on(v.enrollments("refused")) >= 1);
    assert_eq!(rt.block_on(v.enrollments("enrolled")), 0);
}

// ---------------------------------------------------------------------------------------
// 3. An AK from another TPM than the EK's

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ak_from_another_tpm_is_refused() {
    let (ta, tb) = (Swtpm::start(), Swtpm::start());
    let v = Verifier::start(&[&ta, &tb], Opts::default());
    let (ca, cb) = (collector(&ta), collector(&tb));
    let (ka, kb) = (ca.keys().unwrap(), cb.keys().unwrap());
    let tls_spki = {
        use rcgen::PublicKeyData;
        rcgen::KeyPair::generate().unwrap().subject_public_key_info()
    };
    let anon = v.client(None);
    let enroll = |ak_public: Vec<u8>| {
        api::to_cbor(
            "enroll",
            &EnrollRequest {
                name: "mixed".into(),
                endpoint: "127.0.0.1:9".into(),
                ek_cert: ka.ek_certificate.clone(),
                ek_public: ka.ek_public.clone(),
                ak_public,
                tls_spki: tls_spki.clone(),
                locality_endpoint: None,
                move_endpoint: None,
            },
        )
        .unwrap()
    };

    // A's EK (its certificate verifies) with B's AK: the verifier cannot tell yet and
    // answers with a credential for A's EK and B's AK Name.
    let r = v
        .request(
            &anon,
            Method::POST,
            "/v1/enroll",
            Some(CBOR),
            enroll(kb.ak_public.clone()),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", String::from_utf8_lossy(&r.body));
    let ch: EnrollChallenge = decode!("challenge", &r);
    // Neither TPM can open it: A holds the EK but not an AK of that Name, B the AK but not
    // the EK.
    for c in [&ca, &cb] {
        match c.activate_credential(&ch.id_object, &ch.encrypted_secret) {
            Err(CollectError::Failed { kind: "tpm", reason }) => {
                assert!(reason.contains("TPM2_ActivateCredential"), "{reason}")
            }
            other => panic!("activation should fail, got {other:?}"),
        }
    }
    // So the secret must be guessed: refused, and the challenge is spent.
    let guess = |id: &str| {
        api::to_cbor(
            "activate",
            &ActivateRequest {
                enrollment_id: id.into(),
                proof: vec![0x5a; 32],
            },
        )
        .unwrap()
    };
    let r = v
        .request(
            &anon,
            Method::POST,
            "/v1/enroll/activate",
            Some(CBOR),
            guess(&ch.enrollment_id),
        )
        .await;
    let f = assert_refusal(&r, StatusCode::FORBIDDEN, "enrollment_binding");
    assert!(f.detail.contains("AK is not in the TPM"), "{}", f.detail);
    let r = v
        .request(
            &anon,
            Method::POST,
            "/v1/enroll/activate",
            Some(CBOR),
            guess(&ch.enrollment_id),
        )
        .await;
    assert_refusal(&r, StatusCode::FORBIDDEN, "enrollment");
    assert_eq!(v.cli_json(&["nodes", "list"]), serde_json::json!([]));
    assert_eq!(v.enrollments("refused").await, 2);

    // The control: A's EK with A's own AK activates on A and enrolls.
    let r = v
        .request(
            &anon,
            Method::POST,
            "/v1/enroll",
            Some(CBOR),
            enroll(ka.ak_public.clone()),
        )
        .await;
    let ch: EnrollChallenge = decode!("challenge", &r);
    let secret = ca
        .activate_credential(&ch.id_object, &ch.encrypted_secret)
        .unwrap();
    assert_eq!(secret.len(), 32);
    let sent: EnrollRequest = api::from_cbor("enroll", &enroll(ka.ak_public.clone())).unwrap();
    let r = finish_enrollment(&v, ch.enrollment_id, &secret, &sent).await;
    assert_eq!(r.status, StatusCode::OK, "{}", String::from_utf8_lossy(&r.body));
    let done: Enrolled = decode!("enrolled", &r);
    assert_eq!(done.ca_pem.as_bytes(), v.ca_pem());
    let n = v.node_listed("mixed").unwrap();
    assert_eq!(n["id"], done.node_id.as_str());
    // Enrolled, or already through the scheduler's first round, which cannot reach the
    // endpoint this test gave (nothing listens on port 9).
    match n["state"].as_str().unwrap() {
        "enrolled" => {}
        "failed" => assert!(
            n["reason"].as_str().unwrap().starts_with("agent_reachable"),
            "{n}"
        ),
        other => panic!("state {other}: {n}"),
    }
    assert_eq!(v.enrollments("enrolled").await, 1);
}

// ---------------------------------------------------------------------------------------
// 4. Push mode: a replayed bundle, then a changed PCR

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_mode_refuses_a_replay_and_detects_a_pcr_change() {
    let t = Swtpm::start();
    // Pulls would find no agent here (the round endpoint is not served): a long interval
    // keeps the scheduler to at most one pull, and `revoke_after` above the failures this
    // test causes keeps the node from being revoked by it.
    let v = Verifier::start(
        &[&t],
        Opts {
            interval_secs: 3600,
            revoke_after: 5,
            ..Opts::default()
        },
    );
    let state = tempfile::tempdir().unwrap();
    let cfg = agent_config(&v, &t, "pusher", state.path());
    let (p, id) = Pusher::enroll(&cfg, collector(&t)).await;
    let key = ear_key(&v).await;

    // Push needs a node's certificate: neither anonymous nor the operator may.
    for c in [v.client(None), v.operator_client()] {
        let r = v.request(&c, Method::POST, "/v1/nonce", Some(CBOR), vec![]).await;
        assert_refusal(&r, StatusCode::FORBIDDEN, "peer_role");
    }

    let first = p.bundle(&v).await;
    let r = p.push(&v, &first).await;
    assert_eq!(
        (r.status.as_str(), r.failed_check.as_deref()),
        ("affirming", None)
    );
    let ear = ear::verify(&r.ear, &key, UnixTime(now())).unwrap();
    assert_eq!(ear.status, TrustTier::Affirming);
    assert_eq!(ear.node_id, id.node_id);
    assert_eq!(v.node("pusher")["node"]["state"], "trusted");

    // The same bundle again: its nonce was spent.
    let r = p.push(&v, &first).await;
    assert_eq!(r.status, "contraindicated");
    assert_eq!(r.failed_check.as_deref(), Some("nonce"));
    let n = v.node("pusher");
    assert_eq!(n["node"]["state"], "failed", "{n}");
    assert!(
        n["node"]["reason"].as_str().unwrap().starts_with("nonce: "),
        "{n}"
    );

    // A fresh nonce and bundle: trusted again.
    let r = p.push(&v, &p.bundle(&v).await).await;
    assert_eq!(
        (r.status.as_str(), r.failed_check.as_deref()),
        ("affirming", None)
    );
    let n = v.node("pusher");
    assert_eq!(n["node"]["state"], "trusted", "{n}");
    assert!(n["node"]["reason"].is_null());

    // PCR 14 changes behind the agent's back (swtpm serves one client: let go first).
    p.tpm.release();
    t.tool(&["tpm2_pcrextend", &format!("14:sha256={}", "ab".repeat(32))]);
    let b = p.bundle(&v).await;
    let nonce = EvidenceBundle::from_cbor(&b).unwrap().nonce;
    let r = p.push(&v, &b).await;
    assert_eq!(r.status, "contraindicated");
    assert_eq!(r.failed_check.as_deref(), Some("reference_values"));
    // The signed result says so too, under the key the verifier publishes.
    let ear = ear::verify(&r.ear, &key, UnixTime(now())).unwrap();
    assert_eq!(ear.status, TrustTier::Contraindicated);
    assert_eq!(ear.nonce, nonce.as_bytes().to_vec());
    assert_eq!(ear.node_id, id.node_id);
    let tpm_sub = &ear.submods["tpm"];
    assert_eq!(tpm_sub.status, TrustTier::Contraindicated);
    assert_eq!(
        tpm_sub.annotations.get("failed-check"),
        Some(&ClaimValue::Text("reference_values".into()))
    );
    match tpm_sub.annotations.get("failure") {
        Some(ClaimValue::Text(f)) => assert!(f.contains("sha256 PCR 14 is "), "{f}"),
        other => panic!("{other:?}"),
    }
    // ... and not under another key.
    let other = EarSigningKey::generate().unwrap();
    let e = ear::verify(&r.ear, other.public_key(), UnixTime(now())).unwrap_err();
    assert_eq!(e.check(), "ear_signature");
    let n = v.node("pusher");
    assert_eq!(n["node"]["state"], "failed", "{n}");
    assert!(
        n["node"]["reason"].as_str().unwrap().contains("sha256 PCR 14 is"),
        "{n}"
    );

    // Not a bundle at all: refused as such, with a signed result saying so.
    let r = p.push(&v, b"not a bundle").await;
    assert_eq!(r.status, "contraindicated");
    assert_eq!(r.failed_check.as_deref(), Some("bundle_format"));
    let ear = ear::verify(&r.ear, &key, UnixTime(now())).unwrap();
    assert_eq!(ear.status, TrustTier::Contraindicated);
    assert_eq!(
        ear.submods["tpm"].annotations.get("failed-check"),
        Some(&ClaimValue::Text("bundle_format".into()))
    );
}

// ---------------------------------------------------------------------------------------
// 5. A restart keeps nodes, results, events, reference values and the audit log

#[test]
fn verifier_restart_keeps_nodes_and_history() {
    let t = Swtpm::start();
    let mut v = Verifier::start(
        &[&t],
        Opts {
            interval_secs: 60,
            ..Opts::default()
        },
    );
    let mut a = Agent::start(&v, &t, "node-r");
    let id = enrolled(&v, &mut a, "node-r")["id"].as_str().unwrap().to_owned();
    let r = v.attest("node-r");
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let result_id = r.json()["result_id"].clone();
    let before = v.node("node-r");

    let st = v.stop();
    assert!(st.success(), "{st}\n{}", v.log());
    // Offline audit of what the first run wrote, with only the log's public key.
    let export = v.path("audit-export");
    let db = v.data().join("custody.db");
    let r = custody([
        "audit".as_ref(),
        "export".as_ref(),
        "--db".as_ref(),
        db.as_os_str(),
        "--out".as_ref(),
        export.as_os_str(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let key = v.data().join("log-key.pub");
    let r = custody([
        "audit".as_ref(),
        "verify".as_ref(),
        export.as_os_str(),
        "--key".as_ref(),
        key.as_os_str(),
    ]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let j = r.json();
    assert_eq!(j["verified"], true, "{j}");
    assert!(j["claims"]["entries"].as_u64().unwrap() >= 2, "{j}");
    assert!(j["claims"]["checkpoints"].as_u64().unwrap() >= 1, "{j}");

    v.spawn();
    let after = v.node("node-r");
    assert_eq!(after["node"]["id"], id.as_str());
    assert_eq!(after["node"]["ek_cert_sha256"], before["node"]["ek_cert_sha256"]);
    assert!(
        after["results"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["id"] == result_id),
        "{after}"
    );
    let kinds = |n: &Value| -> Vec<String> {
        n["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["kind"].as_str().unwrap().to_owned())
            .collect()
    };
    assert!(kinds(&after).contains(&"enrolled".to_string()), "{after}");
    // Same CA and keys: the running agent accepts the restarted verifier, and the
    // reference values learnt before the restart are the ones compared (not learnt again).
    let r = v.attest("node-r");
    assert_eq!(r.code, 0, "{}\n{}\n{}", r.stdout, r.stderr, v.log());
    assert_eq!(r.json()["reference"], "tofu");
    let n = v.node("node-r");
    let learnt = kinds(&n).iter().filter(|k| *k == "reference_learned").count();
    assert_eq!(learnt, 1, "{n}");
    let res = v.cli_json(&["result", "node-r"]);
    assert_eq!(res["ear_claims"]["ear.status"], "affirming");
}

// ---------------------------------------------------------------------------------------
// 6. Revocation: terminal until an operator removes the node

#[test]
fn rejected_evidence_revokes_for_good_until_the_operator_removes_the_node() {
    let t = Swtpm::start();
    let v = Verifier::start(
        &[&t],
        Opts {
            interval_secs: 1,
            revoke_after: 2,
            ..Opts::default()
        },
    );
    let mut a = Agent::start(&v, &t, "node-gone");
    enrolled(&v, &mut a, "node-gone");
    eventually("a scheduled round to pass", 20, || {
        (v.node("node-gone")["node"]["state"] == "trusted").then_some(())
    });
    // PCR 14 changes behind the agent's back: every round's evidence is now refused.
    let m = format!("14:sha256={}", "ab".repeat(32));
    eventually("swtpm to take a PCR extend", 20, || {
        t.try_tool(&["tpm2_pcrextend", &m]).then_some(())
    });
    let killed = Instant::now();
    let n = eventually("the node to be revoked", 15, || {
        let n = v.node("node-gone");
        (n["node"]["state"] == "revoked").then_some(n)
    });
    assert!(
        killed.elapsed() < Duration::from_secs(12),
        "{:?}",
        killed.elapsed()
    );
    let reason = n["node"]["reason"].as_str().unwrap();
    assert!(reason.starts_with("reference_values: "), "{reason}");
    // Events, newest first: revoked after failed, both naming the check.
    let events: Vec<&Value> = n["events"].as_array().unwrap().iter().collect();
    let pos = |kind: &str| {
        events
            .iter()
            .position(|e| e["kind"] == kind)
            .unwrap_or_else(|| panic!("no `{kind}` event: {n}\nverifier log:\n{}", v.log()))
    };
    let (failed, revoked) = (pos("failed"), pos("revoked"));
    assert!(revoked < failed, "{n}");
    for i in [failed, revoked] {
        assert_eq!(events[i]["detail"]["failed_check"], "reference_values", "{n}");
    }
    assert_eq!(events[failed]["detail"]["previous"], "trusted");
    assert_eq!(events[revoked]["detail"]["previous"], "failed");
    assert_eq!(n["node"]["consecutive_failures"], 2);
    // A revoked node is no longer attested.
    let rounds = n["results"].as_array().unwrap().len();
    std::thread::sleep(Duration::from_millis(2500));
    let later = v.node("node-gone");
    assert_eq!(later["results"].as_array().unwrap().len(), rounds);
    assert_eq!(later["node"]["state"], "revoked");

    a.child.kill().unwrap();
    a.child.wait().unwrap();
    // The same TPM cannot come back under the same name or another one: the node id is
    // the EK certificate's, and a revoked id stays revoked.
    let rt = tokio::runtime::Runtime::new().unwrap();
    for name in ["node-gone", "node-renamed"] {
        let state = tempfile::tempdir().unwrap();
        let cfg = agent_config(&v, &t, name, state.path());
        let client = daemon::enrollment_client(&cfg).unwrap();
        match rt.block_on(daemon::enroll(&cfg, collector(&t), &client)) {
            Err(daemon::DaemonError::Refused { check, detail, .. }) => {
                assert_eq!(check, "revoked", "{name}: {detail}");
                assert!(detail.contains("custody nodes remove"), "{detail}");
            }
            other => panic!("{name}: a revoked TPM enrolled: {other:?}"),
        }
    }
    assert!(v.node_listed("node-renamed").is_none());

    // The operator removes it (a reason is required), and then it may enroll again.
    let r = v.cli(&["nodes", "remove", "node-gone", "--reason", ""]);
    assert_ne!(r.code, 0, "an empty reason is refused: {}", r.stdout);
    assert!(r.stderr.contains("remove_reason"), "{}", r.stderr);
    let removed = v.cli_json(&[
        "nodes",
        "remove",
        "node-gone",
        "--reason",
        "agent host rebuilt (ticket OPS-1234)",
    ]);
    assert_eq!(removed["name"], "node-gone");
    assert_eq!(removed["previous_state"], "revoked");
    let id = removed["removed"].as_str().unwrap().to_owned();
    assert!(v.node_listed("node-gone").is_none());
    let again = v.cli(&["nodes", "remove", "node-gone", "--reason", "twice"]);
    assert_ne!(again.code, 0);
    assert!(again.stderr.contains("no node"), "{}", again.stderr);

    // The machine reboots (PCRs back to their values) and its agent enrolls again.
    t.power_cycle();
    let mut a = Agent::start(&v, &t, "node-gone");
    enrolled(&v, &mut a, "node-gone");
    let n = eventually("the re-enrolled node to pass a round", 20, || {
        let n = v.node("node-gone");
        (n["node"]["state"] == "trusted").then_some(n)
    });
    // Same TPM, same id; its history (results, the removal) is kept.
    assert_eq!(n["node"]["id"], id.as_str());
    assert!(n["results"].as_array().unwrap().len() > rounds, "{n}");
    let events: Vec<&str> = n["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    let removed_at = events.iter().position(|k| *k == "removed").unwrap();
    let revoked_at = events.iter().position(|k| *k == "revoked").unwrap();
    let enrolled_at = events
        .iter()
        .position(|k| *k == "re_enrolled" || *k == "enrolled")
        .unwrap();
    assert!(enrolled_at < removed_at && removed_at < revoked_at, "{events:?}");
}

// ---------------------------------------------------------------------------------------
// 7. Webhooks

/// A CA and a leaf for 127.0.0.1 it signed, PEM: (ca, leaf chain, leaf key).
fn test_ca() -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "webhook test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    (ca.pem(), leaf.pem(), key.serialize_pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrollment_is_posted_to_the_webhook() {
    let (ca, leaf, key) = test_ca();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let router = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(serde_json::from_slice(&body).unwrap_or(Value::Null));
                StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let tls = custody_net::server_config(
        Identity::from_pem(leaf.as_bytes(), key.as_bytes()).unwrap(),
        custody_net::ClientAuth::None,
    )
    .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(custody_net::serve(listener, tls, router, async {
        let _ = stopped.await;
    }));

    let t = Swtpm::start();
    let hook_dir = tempfile::tempdir().unwrap();
    let ca_path = hook_dir.path().join("webhook-ca.pem");
    std::fs::write(&ca_path, ca).unwrap();
    let v = Verifier::start(
        &[&t],
        Opts {
            interval_secs: 3600,
            webhook: Some((format!("https://127.0.0.1:{port}/hook"), ca_path)),
            ..Opts::default()
        },
    );
    let state = tempfile::tempdir().unwrap();
    let cfg = agent_config(&v, &t, "hooked", state.path());
    let id = enroll_in_process(&cfg, collector(&t)).await;
    let ev = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            let e = rx.recv().await.unwrap();
            if e["event"] == "enrolled" {
                return e;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no `enrolled` event posted\n{}", v.log()));
    assert_eq!(ev["node"], "hooked", "{ev}");
    assert_eq!(ev["node_id"], id.node_id.as_str(), "{ev}");
    assert_eq!(ev["detail"]["endpoint"], cfg.listen.as_str(), "{ev}");
    assert!(
        ev["id"].as_i64().unwrap() >= 1 && ev["at"].as_i64().unwrap() > 0,
        "{ev}"
    );
    let _ = stop.send(());
}
