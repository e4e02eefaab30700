//! A hostile node against the identities Custody's CA hands out (issue 19): a node
//! certificate posing as the verifier or as another node, an enrollment relayed by a man
//! in the middle, certificates that outlive a removed or revoked node, and a locality
//! endpoint pointing elsewhere. Real verifier, real swtpm, in-process agent pieces.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use axum::http::{Method, StatusCode};
use custody_agent::daemon::{self, NodeIdentity};
use custody_e2e::fleet::*;
use custody_e2e::{decode, free_port, Swtpm};
use custody_formats::api::{self, EnrollChallenge, CBOR};
use custody_net::{ClientAuth, HttpsClient};
use rcgen::PublicKeyData;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A TLS server presenting `id`'s node certificate that counts every request reaching it.
struct Impostor {
    port: u16,
    hits: Arc<AtomicUsize>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Impostor {
    async fn start(id: &NodeIdentity) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let tls = custody_net::server_config(id.tls_identity().unwrap(), ClientAuth::None).unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        let router = axum::Router::new().fallback(move || {
            let h = h.clone();
            async move {
                h.fetch_add(1, Ordering::SeqCst);
                (StatusCode::IM_A_TEAPOT, "impostor")
            }
        });
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(custody_net::serve(listener, tls, router, async {
            let _ = rx.await;
        }));
        Self {
            port,
            hits,
            stop: Some(tx),
        }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Impostor {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

fn node_client(v: &Verifier, id: &NodeIdentity) -> HttpsClient {
    v.client(Some(id.tls_identity().unwrap()))
}

// ---------------------------------------------------------------------------------------
// 1. A node certificate posing as the verifier, or as another node

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_certificate_cannot_serve_as_the_verifiers() {
    let (ta, tb) = (Swtpm::start(), Swtpm::start());
    // Rounds only when the test asks: nothing serves the in-process nodes' endpoints.
    let v = Verifier::start(&[&ta, &tb], Opts::every(3600).revoke_after(10));
    let (sa, sb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let ca = agent_config(&v, &ta, "node-a", sa.path());
    let a = enroll_in_process(&ca, collector(&ta)).await;
    let keys_b = collector(&tb).keys().unwrap();

    // The verifier's own names, wildcards and URL syntax are no endpoint a certificate
    // may name.
    for endpoint in [
        "localhost:8443",
        "*.custody.test:8443",
        "evil@custody.test:8443",
        "a.test?x=1:8443",
        "bad_label.test:8443",
        "-lead.test:8443",
    ] {
        let r = begin_enrollment(&v, &enroll_request(&keys_b, "node-b", endpoint)).await;
        let f = assert_refusal(&r, StatusCode::FORBIDDEN, "endpoint");
        assert!(!f.detail.is_empty(), "{endpoint}");
    }

    // Node A's certificate served where an agent expects the verifier: the enrollment
    // client refuses the handshake, nothing reaches the impostor.
    let fake = Impostor::start(&a).await;
    let sb2 = tempfile::tempdir().unwrap();
    let mut cb = agent_config(&v, &tb, "node-b", sb2.path());
    cb.verifier_url = format!("https://127.0.0.1:{}", fake.port);
    let client = daemon::enrollment_client(&cb).unwrap();
    let e = daemon::enroll(&cb, collector(&tb), &client)
        .await
        .expect_err("an enrollment with a node posing as the verifier");
    assert_eq!(e.check(), "transport", "{e}");
    assert!(e.to_string().contains("verifier"), "{e}");
    assert_eq!(fake.hits(), 0, "the enrollment client talked to a node");

    // The operator CLI refuses it too.
    let url = format!("https://127.0.0.1:{}", fake.port);
    let op = v.path("operator");
    let r = custody_e2e::custody([
        "nodes",
        "list",
        "--verifier",
        &url,
        "--identity",
        op.to_str().unwrap(),
    ]);
    assert_ne!(r.code, 0, "{}", r.stdout);
    assert_eq!(fake.hits(), 0, "the CLI talked to a node: {}", r.stderr);
    drop(fake);

    // Node B's certificate at node A's endpoint: the verifier wanted `node:<A>` and
    // sends it no round.
    let cb = agent_config(&v, &tb, "node-b", sb.path());
    let b = enroll_in_process(&cb, collector(&tb)).await;
    let at_a = Impostor::start(&b).await;
    // Node A re-enrolls at the impostor's address (the port nobody else serves).
    let mut ca2 = ca.clone();
    ca2.endpoint = Some(format!("127.0.0.1:{}", at_a.port));
    let a = enroll_in_process(&ca2, collector(&ta)).await;
    let r = v.attest("node-a");
    assert_ne!(r.code, 0, "{}", r.stdout);
    assert_eq!(at_a.hits(), 0, "the verifier sent node A's round to node B");
    let s = v.node("node-a");
    assert!(
        s["node"]["reason"]
            .as_str()
            .unwrap_or_default()
            .starts_with("agent_reachable"),
        "{s}"
    );
    drop(at_a);

    // One endpoint host, one node: B cannot take a name A's certificate carries.
    let mut ca3 = ca.clone();
    ca3.endpoint = Some(format!("node-a.custody.test:{}", free_port()));
    enroll_in_process(&ca3, collector(&ta)).await;
    let r = begin_enrollment(&v, &enroll_request(&keys_b, "node-b", "node-a.custody.test:9")).await;
    let f = assert_refusal(&r, StatusCode::FORBIDDEN, "endpoint");
    assert!(f.detail.contains("node-a.custody.test"), "{}", f.detail);
    drop(a);
}

/// A verifier (or whoever holds a certificate from its CA) that brings another result key
/// than the one pinned: refused, never taken silently, since the key checks move tickets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enrollment_bringing_another_verifier_key_is_refused() {
    let t = Swtpm::start();
    let v = Verifier::start(&[&t], Opts::default());
    let state = tempfile::tempdir().unwrap();
    let cfg = agent_config(&v, &t, "pinned", state.path());
    let id = enroll_in_process(&cfg, collector(&t)).await;
    let pinned = std::fs::read_to_string(state.path().join(daemon::VERIFIER_KEY_FILE)).unwrap();
    assert_eq!(pinned.trim(), hex::encode(&id.verifier_key));
    // The same verifier again: accepted.
    enroll_in_process(&cfg, collector(&t)).await;

    let other = custody_verifier::ear::EarSigningKey::generate().unwrap();
    let other_hex = hex::encode(other.public_key().as_sec1());
    // Pinned in the state directory at the first enrollment ...
    std::fs::write(
        state.path().join(daemon::VERIFIER_KEY_FILE),
        format!("{other_hex}\n"),
    )
    .unwrap();
    let client = daemon::enrollment_client(&cfg).unwrap();
    let e = daemon::enroll(&cfg, collector(&t), &client).await.unwrap_err();
    assert_eq!(e.check(), "verifier_key", "{e}");
    // ... or by the operator in agent.toml.
    let fresh = tempfile::tempdir().unwrap();
    let mut cfg2 = agent_config(&v, &t, "pinned", fresh.path());
    cfg2.verifier_key = Some(other_hex);
    let e = daemon::enroll(&cfg2, collector(&t), &client).await.unwrap_err();
    assert_eq!(e.check(), "verifier_key", "{e}");
    assert!(e.to_string().contains("agent.toml"), "{e}");
}

// ---------------------------------------------------------------------------------------
// 2. A relayed enrollment

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relayed_enrollment_is_refused() {
    let t = Swtpm::start();
    let v = Verifier::start(&[&t], Opts::default());
    let state = tempfile::tempdir().unwrap();
    let cfg = agent_config(&v, &t, "victim", state.path());
    let tpm = collector(&t);

    // The victim's agent builds its request; the man in the middle swaps the TLS key for
    // its own before passing it on.
    let key = daemon::TlsKey::load_or_generate(state.path()).unwrap();
    let honest = daemon::enroll_request(&cfg, tpm.keys().unwrap(), &key).unwrap();
    let attacker_key = rcgen::KeyPair::generate().unwrap();
    let mut forged = honest.clone();
    forged.tls_spki = attacker_key.subject_public_key_info();
    let r = begin_enrollment(&v, &forged).await;
    assert_eq!(r.status, StatusCode::OK, "{}", String::from_utf8_lossy(&r.body));
    let ch: EnrollChallenge = decode!("challenge", &r);

    // The challenge goes to the victim's real TPM, which activates it; the victim's
    // agent answers for the request it sent.
    let activate = daemon::activate(tpm.clone(), ch.clone(), &honest).await.unwrap();
    let r = post_activation(&v, &activate).await;
    let f = assert_refusal(&r, StatusCode::FORBIDDEN, "enrollment_binding");
    assert!(f.detail.contains("request"), "{}", f.detail);
    assert!(v.node_listed("victim").is_none(), "the relay enrolled a node");

    // The same victim enrolling directly still works.
    let id = enroll_in_process(&cfg, tpm).await;
    assert!(id.node_id.starts_with("n-"));
}

// ---------------------------------------------------------------------------------------
// 3. Certificates that outlive the node

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_node_certificate_opens_no_route() {
    let t = Swtpm::start();
    let v = Verifier::start(
        &[&t],
        Opts {
            // No round before the removal: the node stays `enrolled`.
            interval_secs: 3600,
            ..Opts::default()
        },
    );
    let state = tempfile::tempdir().unwrap();
    let cfg = agent_config(&v, &t, "gone", state.path());
    let id = enroll_in_process(&cfg, collector(&t)).await;
    let c = node_client(&v, &id);
    let r = v.request(&c, Method::POST, "/v1/nonce", None, vec![]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", String::from_utf8_lossy(&r.body));

    let out = v.cli_json(&["nodes", "remove", "gone", "--reason", "decommissioned"]);
    assert_eq!(out["removed"], id.node_id.as_str());

    let r = v.request(&c, Method::POST, "/v1/nonce", None, vec![]).await;
    assert_refusal(&r, StatusCode::FORBIDDEN, "node_removed");
    let r = v
        .request(&c, Method::POST, "/v1/evidence", Some(CBOR), vec![0xa0])
        .await;
    assert_refusal(&r, StatusCode::FORBIDDEN, "node_removed");
    let r = v
        .request(&c, Method::POST, "/v1/renew", Some(CBOR), renew_body(&tls_spki()))
        .await;
    assert_refusal(&r, StatusCode::FORBIDDEN, "node_removed");
}

fn renew_body(spki: &[u8]) -> Vec<u8> {
    api::to_cbor(
        "renew",
        &api::RenewRequest {
            tls_spki: spki.to_vec(),
        },
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_node_certificate_opens_no_route() {
    let t = Swtpm::start();
    let v = Verifier::start(&[&t], Opts::every(3600));
    let state = tempfile::tempdir().unwrap();
    let cfg = agent_config(&v, &t, "failing", state.path());
    let id = enroll_in_process(&cfg, collector(&t)).await;
    let c = node_client(&v, &id);
    // The node pushes evidence that does not decode, `revoke_after` (2) times: revoked.
    // (Being unreachable never revokes.)
    for _ in 0..2 {
        let r = v
            .request(&c, Method::POST, "/v1/evidence", Some(CBOR), vec![0xa0])
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", String::from_utf8_lossy(&r.body));
    }
    custody_e2e::eventually("the node to be revoked", 60, || {
        (v.node_listed("failing").unwrap()["state"] == "revoked").then_some(())
    });
    let r = v.request(&c, Method::POST, "/v1/nonce", None, vec![]).await;
    assert_refusal(&r, StatusCode::FORBIDDEN, "revoked");
    let r = v
        .request(&c, Method::POST, "/v1/evidence", Some(CBOR), vec![0xa0])
        .await;
    assert_refusal(&r, StatusCode::FORBIDDEN, "revoked");
    let r = v
        .request(&c, Method::POST, "/v1/renew", Some(CBOR), renew_body(&tls_spki()))
        .await;
    assert_refusal(&r, StatusCode::FORBIDDEN, "revoked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_certificates_are_short_lived_and_renewed_over_mtls() {
    let t = Swtpm::start();
    let v = Verifier::start(
        &[&t],
        Opts {
            interval_secs: 3600,
            extra: "node_cert_hours = 2\n".into(),
            ..Opts::default()
        },
    );
    let state = tempfile::tempdir().unwrap();
    let cfg = agent_config(&v, &t, "renewer", state.path());
    let id = enroll_in_process(&cfg, collector(&t)).await;
    let life = |pem: &str| {
        let der = custody_net::certs_from_pem(pem.as_bytes()).unwrap();
        let (_, c) = x509_parser::parse_x509_certificate(&der[0]).unwrap();
        let v = c.validity();
        (v.not_before.timestamp(), v.not_after.timestamp())
    };
    let (nb, na) = life(&id.certificate_pem);
    // Two hours, and the five minutes of clock slack before `now`.
    assert!(na - nb <= 2 * 3600 + 300, "{nb}..{na}");
    assert!(na - now() > 3600, "{na}");

    // The agent's renewal: same key, a new certificate, stored and reloaded.
    let renewed = daemon::renew(&cfg, &id).await.unwrap();
    assert_eq!(renewed.node_id, id.node_id);
    assert_ne!(renewed.certificate_pem, id.certificate_pem);
    let stored = NodeIdentity::load(state.path()).unwrap();
    assert_eq!(stored.certificate_pem, renewed.certificate_pem);

    // Only for the node's own current key: a request without a node certificate is
    // refused.
    let r = v
        .request(
            &v.client(None),
            Method::POST,
            "/v1/renew",
            Some(CBOR),
            renew_body(&tls_spki()),
        )
        .await;
    assert_refusal(&r, StatusCode::FORBIDDEN, "peer_role");
}

// ---------------------------------------------------------------------------------------
// Smaller: the node-chosen locality endpoint

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locality_endpoint_elsewhere_is_refused() {
    let t = Swtpm::start();
    let v = Verifier::start(
        &[&t],
        Opts {
            extra: "allowed_locality_hosts = [\"192.0.2.7\"]\n".into(),
            ..Opts::default()
        },
    );
    let keys = collector(&t).keys().unwrap();
    let port = free_port();
    let mut req = enroll_request(&keys, "loc", &format!("127.0.0.1:{port}"));
    for elsewhere in ["10.1.2.3:22", "169.254.169.254:80", "verifier.test:8442"] {
        req.locality_endpoint = Some(elsewhere.into());
        let r = begin_enrollment(&v, &req).await;
        assert_refusal(&r, StatusCode::FORBIDDEN, "locality_endpoint");
    }
    // The node's own host, or one the operator allowed.
    for fine in [format!("127.0.0.1:{}", free_port()), "192.0.2.7:8450".into()] {
        req.locality_endpoint = Some(fine.clone());
        let r = begin_enrollment(&v, &req).await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "{fine}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
}
