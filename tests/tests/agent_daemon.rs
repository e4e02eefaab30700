//! The agent daemon: its mTLS round endpoint against a real swtpm, appraised by the real
//! TPM verifier; its enrollment client against a stand-in verifier speaking the wire
//! messages of `custody_formats::api`; the binary's config and signal handling.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use axum::body::Bytes;
use axum::http::{Method, StatusCode};
use custody_agent::collector::CollectError;
use custody_agent::config::AgentConfig;
use custody_agent::daemon::{
    self, Activator, DaemonError, NodeIdentity, NotBuilt, Rounds, SharedCollector, TlsKey, CA_FILE,
    NODE_CERT_FILE, NODE_ID_FILE,
};
use custody_agent::session::Session;
use custody_agent::tpm::{default_pcrs, TpmCollector, TpmConfig, TpmKeys};
use custody_e2e::{random_nonce, repo_root, Swtpm};
use custody_formats::api::{
    self, ActivateRequest, EnrollChallenge, EnrollRequest, Enrolled, Refusal, RoundRequest, CBOR,
    MAX_MESSAGE_LEN,
};
use custody_formats::binding::{Binding, Nonce};
use custody_formats::bundle::{EvidenceBundle, MAX_BUNDLE_LEN};
use custody_net::{client_config, roots_from_pem, HttpsClient, Identity, Response};
use custody_verifier::check::{EvidenceVerifier, UnixTime};
use custody_verifier::tpm::TpmVerifier;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const CHECKS: [&str; 5] = ["parse", "signature", "nonce", "pcr_selection", "pcr_digest"];
const T: Duration = Duration::from_secs(30);

struct Ca {
    params: rcgen::CertificateParams,
    key: rcgen::KeyPair,
    cert: rcgen::Certificate,
}

impl Ca {
    fn new(cn: &str) -> Self {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        let cert = params.self_signed(&key).unwrap();
        Self { params, key, cert }
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A certificate with `cn` for `key` (valid for 127.0.0.1).
    fn sign(&self, cn: &str, key: &impl rcgen::PublicKeyData) -> rcgen::Certificate {
        let mut p = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        let issuer = rcgen::Issuer::from_params(&self.params, &self.key);
        p.signed_by(key, &issuer).unwrap()
    }

    fn issue(&self, cn: &str) -> Identity {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = self.sign(cn, &key);
        Identity::from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes()).unwrap()
    }

    /// An HTTPS client trusting this CA, presenting a certificate with `cn` from `from`.
    fn client(&self, from: Option<(&Ca, &str)>) -> HttpsClient {
        let roots = roots_from_pem(self.pem().as_bytes()).unwrap();
        let id = from.map(|(ca, cn)| ca.issue(cn));
        HttpsClient::new(client_config(roots, id).unwrap(), T, MAX_BUNDLE_LEN)
    }
}

/// What an enrollment would have left in `dir`: a node certificate for the agent's own
/// TLS key, issued by `ca`.
fn provision(dir: &Path, ca: &Ca) -> NodeIdentity {
    let key = TlsKey::load_or_generate(dir).unwrap();
    let spki = rcgen::SubjectPublicKeyInfo::from_der(key.spki_der()).unwrap();
    let cert = ca.sign("node:n1", &spki);
    std::fs::write(dir.join(NODE_CERT_FILE), cert.pem()).unwrap();
    std::fs::write(dir.join(CA_FILE), ca.pem()).unwrap();
    std::fs::write(dir.join(NODE_ID_FILE), "n1\n").unwrap();
    NodeIdentity::load(dir).unwrap()
}

/// A round endpoint serving `rounds` on 127.0.0.1; stops when dropped.
struct Endpoint {
    url: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), DaemonError>>>,
}

impl Endpoint {
    async fn start(identity: NodeIdentity, rounds: Arc<Rounds>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            daemon::serve_rounds(listener, &identity, rounds, None, async {
                let _ = rx.await;
            })
            .await
        });
        Self {
            url: format!("https://{addr}"),
            stop: Some(tx),
            task: Some(task),
        }
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap().unwrap();
        }
    }
}

async fn post_round(c: &HttpsClient, url: &str, content_type: Option<&str>, body: Vec<u8>) -> Response {
    c.request(Method::POST, &format!("{url}/v1/round"), content_type, body)
        .await
        .unwrap()
}

fn refusal(r: &Response) -> Refusal {
    assert_eq!(r.content_type.as_deref(), Some(CBOR));
    api::from_cbor::<Refusal>("Refusal", &r.body).unwrap()
}

#[track_caller]
fn assert_refused(r: &Response, status: StatusCode, check: &str) -> Refusal {
    assert_eq!(r.status, status, "{:?}", String::from_utf8_lossy(&r.body));
    let f = refusal(r);
    assert_eq!(f.check, check, "{f:?}");
    f
}

fn round_body(nonce: Nonce) -> Vec<u8> {
    api::to_cbor("RoundRequest", &RoundRequest { nonce, deny: None }).unwrap()
}

fn appraise(b: &EvidenceBundle, expected: &Binding) -> Vec<&'static str> {
    let e = b.tpm.as_ref().expect("the bundle carries TPM evidence");
    let o = TpmVerifier::new().verify(
        custody_verifier::tpm::TpmEvidence {
            quote: &e.quote,
            signature: &e.signature,
            ak: &e.ak_public,
            pcrs: &e.pcrs,
            nonce: expected.as_bytes(),
            event_log: None,
        },
        UnixTime(1_767_225_600),
    );
    match o {
        Ok(v) => v.checks.iter().filter(|c| c.ok).map(|c| c.name).collect(),
        Err(r) => panic!("rejected: {r}"),
    }
}

/// The verifier asks for a round over mTLS; the bundle the agent returns is the round's:
/// its nonce, the agent's session keys, a quote over the binding of both that the real
/// TPM verifier accepts. Everyone else is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_endpoint_serves_the_verifier_only() {
    let mut t = Swtpm::start();
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("custody test CA");
    let identity = provision(dir.path(), &ca);
    let tpm = Arc::new(
        TpmCollector::new(TpmConfig {
            tcti: t.tcti(),
            pcrs: default_pcrs(),
            event_log: None,
        })
        .unwrap(),
    );
    let session = Session::generate().unwrap();
    let keys = *session.public_keys();
    let collectors: Vec<SharedCollector> = vec![tpm.clone(), Arc::new(NotBuilt("snp"))];
    let rounds = Arc::new(Rounds::new(session, collectors, daemon::platform_facts("n1"), T));
    let ep = Endpoint::start(identity, rounds.clone()).await;
    let verifier = ca.client(Some((&ca, "verifier")));

    let r = verifier
        .request(Method::GET, &format!("{}/healthz", ep.url), None, vec![])
        .await
        .unwrap();
    assert_eq!((r.status, r.body.as_slice()), (StatusCode::OK, b"ok".as_slice()));

    let mut aks = Vec::new();
    for _ in 0..2 {
        let nonce = random_nonce();
        let r = post_round(&verifier, &ep.url, Some(CBOR), round_body(nonce)).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.content_type.as_deref(), Some(CBOR));
        let b = EvidenceBundle::from_cbor(&r.body).unwrap();
        assert_eq!(b.nonce, nonce);
        assert_eq!(b.session_keys, keys, "one session for the life of the process");
        let binding = Binding::compute(&nonce, &b.session_keys);
        assert_eq!(binding, rounds.session().binding(&nonce));
        assert_eq!(appraise(&b, &binding), CHECKS);
        // Another round's binding does not verify.
        let other = Binding::compute(&random_nonce(), &keys);
        let e = b.tpm.as_ref().unwrap();
        let rej = TpmVerifier::new()
            .verify(
                custody_verifier::tpm::TpmEvidence {
                    quote: &e.quote,
                    signature: &e.signature,
                    ak: &e.ak_public,
                    pcrs: &e.pcrs,
                    nonce: other.as_bytes(),
                    event_log: None,
                },
                UnixTime(1_767_225_600),
            )
            .unwrap_err();
        assert_eq!(rej.checks().last().unwrap().name, "nonce");
        assert_eq!(b.platform["agent_version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(b.platform["node_name"], "n1");
        assert!(b.platform.contains_key("hostname"));
        assert!(b.platform["unavailable.snp"].contains("built without"));
        assert!(!b.platform.contains_key("unavailable.tpm"));
        assert!(b.snp.is_none() && b.gpus.is_empty());
        aks.push(e.ak_public.clone());
    }
    assert_eq!(aks[0], aks[1], "one AK per process");

    // An operator's certificate from the same CA: authenticated, not authorized.
    let operator = ca.client(Some((&ca, "operator")));
    let r = post_round(&operator, &ep.url, Some(CBOR), round_body(random_nonce())).await;
    assert_refused(&r, StatusCode::FORBIDDEN, "peer_role");
    // The node's own role is not the verifier's either.
    let node = ca.client(Some((&ca, "node:n1")));
    let r = post_round(&node, &ep.url, Some(CBOR), round_body(random_nonce())).await;
    assert_refused(&r, StatusCode::FORBIDDEN, "peer_role");

    // No client certificate, or one from another CA: the handshake is refused.
    let anonymous = ca.client(None);
    assert!(anonymous
        .request(
            Method::POST,
            &format!("{}/v1/round", ep.url),
            Some(CBOR),
            round_body(random_nonce())
        )
        .await
        .is_err());
    let stranger_ca = Ca::new("stranger CA");
    let stranger = ca.client(Some((&stranger_ca, "verifier")));
    assert!(stranger
        .request(
            Method::POST,
            &format!("{}/v1/round", ep.url),
            Some(CBOR),
            round_body(random_nonce())
        )
        .await
        .is_err());
    // A client that pins another CA does not accept the node's certificate.
    let wrong_pin = stranger_ca.client(Some((&ca, "verifier")));
    assert!(wrong_pin
        .request(Method::GET, &format!("{}/healthz", ep.url), None, vec![])
        .await
        .is_err());

    // Malformed bodies, from the verifier: 400 with a refusal, never a round.
    for body in [
        b"not cbor".to_vec(),
        vec![],
        {
            let mut b = round_body(random_nonce());
            b.push(0);
            b
        },
        api::to_cbor(
            "x",
            &Refusal {
                check: "a".into(),
                detail: "b".into(),
            },
        )
        .unwrap(),
    ] {
        let r = post_round(&verifier, &ep.url, Some(CBOR), body).await;
        assert_refused(&r, StatusCode::BAD_REQUEST, "request");
    }
    // A nonce of the wrong length is refused, not padded.
    let short: ciborium_like::Short = ciborium_like::Short;
    let r = post_round(&verifier, &ep.url, Some(CBOR), short.encode()).await;
    assert_refused(&r, StatusCode::BAD_REQUEST, "request");
    let r = post_round(
        &verifier,
        &ep.url,
        Some("application/json"),
        round_body(random_nonce()),
    )
    .await;
    assert_refused(&r, StatusCode::UNSUPPORTED_MEDIA_TYPE, "content_type");
    let r = post_round(&verifier, &ep.url, Some(CBOR), vec![0xa1; MAX_MESSAGE_LEN + 1]).await;
    assert_refused(&r, StatusCode::PAYLOAD_TOO_LARGE, "too_large");

    // The TPM goes away mid-life: the round fails naming the collector.
    t.kill();
    let r = post_round(&verifier, &ep.url, Some(CBOR), round_body(random_nonce())).await;
    let f = assert_refused(&r, StatusCode::INTERNAL_SERVER_ERROR, "collect.tpm");
    // swtpm serves one client, so the collector reconnects each round: the loss shows
    // when it reopens the TCTI (or, on a kept connection, at TPM2_Quote).
    assert!(
        f.detail.contains("TPM2_Quote") || f.detail.contains("cannot open TCTI"),
        "{}",
        f.detail
    );
    ep.stop().await;
}

/// A CBOR map `{"nonce": h'00 * 31'}` built by hand (the test has no CBOR encoder of its
/// own beyond the wire types, which cannot hold a short nonce).
mod ciborium_like {
    pub struct Short;
    impl Short {
        pub fn encode(&self) -> Vec<u8> {
            let mut b = vec![0xa1, 0x65];
            b.extend_from_slice(b"nonce");
            b.push(0x58);
            b.push(31);
            b.extend_from_slice(&[0u8; 31]);
            b
        }
    }
}

// ---------------------------------------------------------------------------------------
// Enrollment against a stand-in verifier

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Accept,
    RefuseEk,
    WrongCa,
    /// `busy` to the first enrollment, then accept.
    BusyOnce,
}

struct Stub {
    mode: Mode,
    ca: Ca,
    other_ca: Ca,
    requests: Mutex<Vec<EnrollRequest>>,
    secrets: Mutex<Vec<Vec<u8>>>,
}

fn cbor(status: StatusCode, body: Vec<u8>) -> axum::response::Response {
    use axum::response::IntoResponse;
    (status, [(axum::http::header::CONTENT_TYPE, CBOR)], body).into_response()
}

async fn stub_enroll(
    axum::extract::State(s): axum::extract::State<Arc<Stub>>,
    body: Bytes,
) -> axum::response::Response {
    let req: EnrollRequest = api::from_cbor("EnrollRequest", &body).unwrap();
    let first = {
        let mut r = s.requests.lock().unwrap();
        r.push(req.clone());
        r.len() == 1
    };
    if s.mode == Mode::BusyOnce && first {
        let r = Refusal {
            check: "busy".into(),
            detail: "too many enrollments in progress".into(),
        };
        return cbor(
            StatusCode::SERVICE_UNAVAILABLE,
            api::to_cbor("Refusal", &r).unwrap(),
        );
    }
    if s.mode == Mode::RefuseEk {
        let r = Refusal {
            check: "ek_cert_chain".into(),
            detail: "EK certificate does not chain to a manufacturer CA".into(),
        };
        return cbor(StatusCode::FORBIDDEN, api::to_cbor("Refusal", &r).unwrap());
    }
    let ch = EnrollChallenge {
        enrollment_id: "00112233445566778899aabbccddeeff".into(),
        id_object: req.ak_public.clone(),
        encrypted_secret: req.ek_public.clone(),
    };
    cbor(StatusCode::OK, api::to_cbor("EnrollChallenge", &ch).unwrap())
}

async fn stub_activate(
    axum::extract::State(s): axum::extract::State<Arc<Stub>>,
    body: Bytes,
) -> axum::response::Response {
    let req: ActivateRequest = api::from_cbor("ActivateRequest", &body).unwrap();
    assert_eq!(req.enrollment_id, "00112233445566778899aabbccddeeff");
    s.secrets.lock().unwrap().push(req.proof.clone());
    let spki = s.requests.lock().unwrap().last().unwrap().tls_spki.clone();
    let spki = rcgen::SubjectPublicKeyInfo::from_der(&spki).unwrap();
    let cert = s.ca.sign("node:n1", &spki);
    let ca_pem = if s.mode == Mode::WrongCa {
        s.other_ca.pem()
    } else {
        s.ca.pem()
    };
    let done = Enrolled {
        node_id: "n1".into(),
        certificate_pem: cert.pem(),
        ca_pem,
        verifier_key: Vec::new(),
    };
    cbor(StatusCode::OK, api::to_cbor("Enrolled", &done).unwrap())
}

/// Stands in for the TPM: fixed keys, and a "secret" derived from the challenge so the
/// stub can tell the activation's output reached it.
struct FakeTpm;
impl Activator for FakeTpm {
    fn activate(&self, id_object: &[u8], encrypted_secret: &[u8]) -> Result<Vec<u8>, CollectError> {
        Ok([id_object, encrypted_secret].concat())
    }
    fn keys(&self) -> Result<TpmKeys, CollectError> {
        Ok(TpmKeys {
            ek_certificate: Some(vec![0x30, 0x00]),
            ek_public: vec![1, 2, 3],
            ak_public: vec![4, 5],
        })
    }
}

/// The stand-in verifier on 127.0.0.1 (server certificate from `stub.ca`), and an agent
/// configuration pointing at it that pins `pinned`.
async fn stub_verifier(stub: Arc<Stub>, pinned: &str, dir: &Path) -> (AgentConfig, oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tls = custody_net::server_config(stub.ca.issue("verifier"), custody_net::ClientAuth::None).unwrap();
    let router = axum::Router::new()
        .route("/v1/enroll", axum::routing::post(stub_enroll))
        .route("/v1/enroll/activate", axum::routing::post(stub_activate))
        .with_state(stub);
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(custody_net::serve(listener, tls, router, async {
        let _ = rx.await;
    }));
    let ca_path = dir.join("pinned-ca.pem");
    std::fs::write(&ca_path, pinned).unwrap();
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = free.local_addr().unwrap().to_string();
    drop(free);
    let cfg = AgentConfig {
        name: "n1".into(),
        listen,
        verifier_url: format!("https://{addr}/"),
        verifier_ca: Some(ca_path),
        state_dir: dir.join("state"),
        ..AgentConfig::default()
    };
    (cfg, tx)
}

fn stub(mode: Mode) -> Arc<Stub> {
    Arc::new(Stub {
        mode,
        ca: Ca::new("custody test CA"),
        other_ca: Ca::new("other CA"),
        requests: Mutex::new(Vec::new()),
        secrets: Mutex::new(Vec::new()),
    })
}

/// `daemon::run` end to end: enroll (keys and TLS key sent, activation output returned,
/// node certificate stored), then serve rounds with the enrolled identity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_enrolls_then_serves_rounds() {
    let dir = tempfile::tempdir().unwrap();
    let s = stub(Mode::Accept);
    let (cfg, _stop) = stub_verifier(s.clone(), &s.ca.pem(), dir.path()).await;
    let listen = cfg.listen.clone();
    let state = cfg.state_dir.clone();
    let (tx, rx) = oneshot::channel::<()>();
    let agent = tokio::spawn(daemon::run(
        cfg,
        vec![Arc::new(NotBuilt("snp"))],
        Arc::new(FakeTpm),
        async {
            let _ = rx.await;
        },
    ));
    let verifier = s.ca.client(Some((&s.ca, "verifier")));
    let url = format!("https://{listen}");
    let mut up = false;
    for _ in 0..100 {
        if verifier
            .request(Method::GET, &format!("{url}/healthz"), None, vec![])
            .await
            .is_ok_and(|r| r.status == StatusCode::OK)
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "the agent did not come up");

    let req = s.requests.lock().unwrap()[0].clone();
    let key = TlsKey::load_or_generate(&state).unwrap();
    assert_eq!(req.name, "n1");
    assert_eq!(req.endpoint, listen);
    assert_eq!(req.tls_spki, key.spki_der());
    assert_eq!(
        (req.ek_public.as_slice(), req.ak_public.as_slice()),
        (&[1u8, 2, 3][..], &[4u8, 5][..])
    );
    assert_eq!(req.ek_cert, Some(vec![0x30, 0x00]));
    // The activation's output keys the proof over the request sent; it never travels.
    assert_eq!(
        s.secrets.lock().unwrap()[0],
        api::enrollment_proof(&[4, 5, 1, 2, 3], &req).unwrap().to_vec()
    );
    assert_eq!(std::fs::read_to_string(state.join(NODE_ID_FILE)).unwrap(), "n1\n");
    assert_eq!(std::fs::read_to_string(state.join(CA_FILE)).unwrap(), s.ca.pem());
    let stored = NodeIdentity::load(&state).unwrap();
    assert_eq!(stored.node_id, "n1");

    let nonce = random_nonce();
    let r = post_round(&verifier, &url, Some(CBOR), round_body(nonce)).await;
    assert_eq!(r.status, StatusCode::OK);
    let b = EvidenceBundle::from_cbor(&r.body).unwrap();
    assert_eq!(b.nonce, nonce);
    assert!(b.tpm.is_none());
    assert!(b.platform.contains_key("unavailable.snp"));
    let _ = tx.send(());
    agent.await.unwrap().unwrap();
}

/// Issue 20 finding 4: an agent that got `busy` at start exited. Now it waits (backoff
/// with jitter) and enrolls on a later try.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_retries_a_busy_verifier_later() {
    let dir = tempfile::tempdir().unwrap();
    let s = stub(Mode::BusyOnce);
    let (cfg, _stop) = stub_verifier(s.clone(), &s.ca.pem(), dir.path()).await;
    let state = cfg.state_dir.clone();
    let (tx, rx) = oneshot::channel::<()>();
    let started = std::time::Instant::now();
    let agent = tokio::spawn(daemon::run(
        cfg,
        vec![Arc::new(NotBuilt("snp"))],
        Arc::new(FakeTpm),
        async {
            let _ = rx.await;
        },
    ));
    let mut enrolled = false;
    for _ in 0..100 {
        if state.join(NODE_ID_FILE).exists() {
            enrolled = true;
            break;
        }
        assert!(!agent.is_finished(), "the agent gave up: {:?}", agent.await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(enrolled, "the agent did not enroll after a busy answer");
    assert_eq!(s.requests.lock().unwrap().len(), 2, "one busy answer, one retry");
    assert!(started.elapsed() >= Duration::from_secs(1), "the retry waited");
    let _ = tx.send(());
    agent.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrollment_refusals_and_a_foreign_ca_are_errors() {
    // The verifier's refusal reaches the operator with its check name.
    let dir = tempfile::tempdir().unwrap();
    let s = stub(Mode::RefuseEk);
    let (cfg, _stop) = stub_verifier(s.clone(), &s.ca.pem(), dir.path()).await;
    let client = daemon::enrollment_client(&cfg).unwrap();
    let e = daemon::enroll(&cfg, Arc::new(FakeTpm), &client)
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "enrollment refused: ek_cert_chain: EK certificate does not chain to a manufacturer CA"
    );
    assert!(matches!(e, DaemonError::Refused { status: 403, .. }));
    assert!(!cfg.state_dir.join(NODE_CERT_FILE).exists());

    // A verifier that hands back another CA than the pinned one is not believed.
    let dir = tempfile::tempdir().unwrap();
    let s = stub(Mode::WrongCa);
    let (cfg, _stop) = stub_verifier(s.clone(), &s.ca.pem(), dir.path()).await;
    let client = daemon::enrollment_client(&cfg).unwrap();
    let e = daemon::enroll(&cfg, Arc::new(FakeTpm), &client)
        .await
        .unwrap_err();
    assert!(matches!(e, DaemonError::CaMismatch), "{e}");
    assert!(!cfg.state_dir.join(NODE_CERT_FILE).exists());

    // A server whose certificate is not from the pinned CA: no enrollment request is sent.
    let dir = tempfile::tempdir().unwrap();
    let s = stub(Mode::Accept);
    let (cfg, _stop) = stub_verifier(s.clone(), &s.other_ca.pem(), dir.path()).await;
    let client = daemon::enrollment_client(&cfg).unwrap();
    let e = daemon::enroll(&cfg, Arc::new(FakeTpm), &client)
        .await
        .unwrap_err();
    assert!(matches!(e, DaemonError::Transport(_)), "{e}");
    assert!(s.requests.lock().unwrap().is_empty());

    // The TPM placeholder until activation is merged fails enrollment, cleanly.
    let t = Swtpm::start();
    let dir = tempfile::tempdir().unwrap();
    let s = stub(Mode::Accept);
    let (cfg, _stop) = stub_verifier(s.clone(), &s.ca.pem(), dir.path()).await;
    let client = daemon::enrollment_client(&cfg).unwrap();
    let tpm = TpmCollector::new(TpmConfig {
        tcti: t.tcti(),
        pcrs: default_pcrs(),
        event_log: None,
    })
    .unwrap();
    match daemon::enroll(&cfg, Arc::new(tpm), &client).await {
        // The stand-in's fake challenge fails in the real TPM.
        Err(DaemonError::Tpm(CollectError::Failed { kind: "tpm", .. })) => {}
        other => panic!("expected a TPM failure, got {other:?}"),
    }
    // The request carried the swtpm's real EK certificate and keys.
    let req = s.requests.lock().unwrap()[0].clone();
    assert!(req.ek_cert.is_some());
    assert!(!req.ak_public.is_empty());
}

// ---------------------------------------------------------------------------------------
// The binary

fn agent_bin() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = std::process::Command::new(cargo)
        .args([
            "build",
            "--quiet",
            "-p",
            "custody-agent",
            "--bin",
            "custody-agent",
        ])
        .current_dir(repo_root())
        .status()
        .unwrap();
    assert!(st.success(), "building custody-agent failed");
    std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo_root().join("target"))
        .join("debug/custody-agent")
}

#[test]
fn binary_prints_defaults_checks_configs_and_stops_on_sigterm() {
    use std::process::{Command, Stdio};
    let bin = agent_bin();
    let out = Command::new(&bin)
        .args(["config", "--defaults"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    // The printed defaults, with the required CA filled in, are a valid configuration.
    assert!(text.starts_with("# verifier_ca = "), "{text}");
    let filled = format!("verifier_ca = \"/ca.pem\"\n{text}");
    let cfg = AgentConfig::from_toml(&filled).unwrap();
    assert_eq!(cfg.listen, "0.0.0.0:8443");

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "verifier_ca = \"/ca.pem\"\nlisten = \"nowhere\"\n").unwrap();
    let out = Command::new(&bin)
        .args(["config", "--check"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("`listen` \"nowhere\""));

    // Verifier down: the agent retries; SIGTERM stops it cleanly (exit 0), and nothing
    // secret reaches the log.
    let t = Swtpm::start();
    let ca = Ca::new("custody test CA");
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, ca.pem()).unwrap();
    let port = custody_e2e::free_port_pair();
    let conf = dir.path().join("agent.toml");
    std::fs::write(
        &conf,
        format!(
            "name = \"n1\"\nlisten = \"127.0.0.1:0\"\nverifier_url = \"https://127.0.0.1:{port}\"\n\
             verifier_ca = \"{}\"\nstate_dir = \"{}\"\n[tpm]\ntcti = \"{}\"\nevent_log = \"\"\n",
            ca_path.display(),
            dir.path().join("state").display(),
            t.tcti()
        ),
    )
    .unwrap();
    let mut child = Command::new(&bin)
        .args(["run", "--log", "debug", "--config"])
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Wait until the first enrollment attempt (TPM keys created, verifier dialled) failed.
    let mut log = String::new();
    while !log.contains("verifier unreachable") {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(l) => {
                log.push_str(&l);
                log.push('\n');
            }
            Err(e) => {
                let _ = child.kill();
                panic!("no retry message ({e}):\n{log}");
            }
        }
    }
    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let mut status = None;
    for _ in 0..100 {
        if let Some(s) = child.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = status.unwrap_or_else(|| {
        let _ = child.kill();
        panic!("the agent did not stop on SIGTERM")
    });
    reader.join().unwrap();
    log.extend(rx.try_iter().map(|l| l + "\n"));
    let key = dir.path().join("state/tls-key.pem");
    assert!(status.success(), "{status:?}\n{log}");
    assert!(log.contains("verifier unreachable"), "{log}");
    assert!(log.contains("SIGTERM"), "{log}");
    let key_pem = std::fs::read_to_string(&key).unwrap();
    let key_body: String = key_pem.lines().filter(|l| !l.starts_with("-----")).collect();
    assert!(
        !log.contains("PRIVATE KEY") && !log.contains(&key_body[..40]),
        "{log}"
    );
}

/// `locality_listen`: the daemon answers landmark challenges with the session key that
/// its round evidence binds (docs/locality.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_answers_locality_challenges_with_the_bound_session_key() {
    let dir = tempfile::tempdir().unwrap();
    let s = stub(Mode::Accept);
    let (mut cfg, _stop) = stub_verifier(s.clone(), &s.ca.pem(), dir.path()).await;
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let locality = free.local_addr().unwrap().to_string();
    drop(free);
    cfg.locality_listen = Some(locality.clone());
    let url = format!("https://{}", cfg.listen);
    let (tx, rx) = oneshot::channel::<()>();
    let agent = tokio::spawn(daemon::run(
        cfg,
        vec![Arc::new(NotBuilt("snp"))],
        Arc::new(FakeTpm),
        async {
            let _ = rx.await;
        },
    ));
    let verifier = s.ca.client(Some((&s.ca, "verifier")));
    let mut bundle = None;
    for _ in 0..100 {
        if let Ok(r) = verifier
            .request(
                Method::POST,
                &format!("{url}/v1/round"),
                Some(CBOR),
                round_body(random_nonce()),
            )
            .await
        {
            if r.status == StatusCode::OK {
                bundle = Some(EvidenceBundle::from_cbor(&r.body).unwrap());
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let session = bundle.expect("the agent did not come up").session_keys.ed25519;
    let m = custody_locality::net::measure(
        locality.as_str(),
        "paris-1",
        &session,
        10,
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert_eq!(m.probes, 10);
    assert!(m.rtt_min < Duration::from_millis(10), "{m:?}");
    // Any other key: the answers do not verify.
    let e =
        custody_locality::net::measure(locality.as_str(), "paris-1", &[7; 32], 2, Duration::from_secs(10))
            .await
            .unwrap_err();
    assert_eq!(e.check(), "locality_signature");
    let _ = tx.send(());
    agent.await.unwrap().unwrap();
    // Stopped with the daemon.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(std::net::TcpStream::connect(&locality).is_err());
}
