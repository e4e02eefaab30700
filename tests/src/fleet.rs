//! A verifier process and agent processes for end-to-end tests: `custody-verifier` and
//! `custody-agent` on real swtpm, each with its own temporary directory and free port,
//! driven through the `custody` CLI and in-process clients. Everything started is killed
//! on drop.

use crate::{custody, eventually, free_port, service_bin, verifier_init, Run, Swtpm};
use axum::http::{Method, StatusCode};
use base64::Engine as _;
use custody_agent::collector::{collect_round, Collector};
use custody_agent::config::{AgentConfig, CollectorsSection, TpmSection};
use custody_agent::daemon::{self, NodeIdentity};
use custody_agent::session::Session;
use custody_agent::tpm::{default_pcrs, TpmCollector, TpmConfig};
use custody_formats::api::{self, NonceGrant, PushResult, Refusal, CBOR};
use custody_formats::bundle::MAX_BUNDLE_LEN;
pub use custody_net::Response;
use custody_net::{client_config_for_role, roots_from_pem, HttpsClient, Identity};
use custody_verifier::ear::VerifierKey;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

pub const T: Duration = Duration::from_secs(20);

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// SIGTERM `child` and wait up to 10 s for it to exit.
pub fn terminate(child: &mut Child) -> ExitStatus {
    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    eventually("the process to exit after SIGTERM", 10, || {
        child.try_wait().unwrap()
    })
}

// ---------------------------------------------------------------------------------------
// A verifier process

#[derive(Debug)]
pub struct Opts {
    pub interval_secs: u64,
    pub revoke_after: u32,
    /// Webhook URL and the CA file its certificate chains to.
    pub webhook: Option<(String, PathBuf)>,
    /// More lines for verifier.toml (top-level keys first, then any tables).
    pub extra: String,
}

impl Opts {
    /// The defaults with continuous attestation every `interval_secs`.
    pub fn every(interval_secs: u64) -> Self {
        Self {
            interval_secs,
            ..Self::default()
        }
    }

    /// Revoke after `n` rounds whose evidence is refused.
    pub fn revoke_after(self, n: u32) -> Self {
        Self {
            revoke_after: n,
            ..self
        }
    }
}

impl Default for Opts {
    fn default() -> Self {
        Self {
            interval_secs: 2,
            revoke_after: 2,
            webhook: None,
            extra: String::new(),
        }
    }
}

#[derive(Debug)]
pub struct Verifier {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub child: Option<Child>,
}

impl Verifier {
    /// `custody-verifier init` then `run`, trusting the EK CAs of `ek_ca_of` only; waits
    /// until it answers.
    pub fn start(ek_ca_of: &[&Swtpm], o: Opts) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ek = dir.path().join("ek-ca");
        std::fs::create_dir_all(&ek).unwrap();
        // Every swtpm's CA files have the same names: prefix them per instance.
        for (i, t) in ek_ca_of.iter().enumerate() {
            for p in t.ek_ca_certs() {
                let name = format!("{i}-{}", p.file_name().unwrap().to_str().unwrap());
                std::fs::copy(&p, ek.join(name)).unwrap();
            }
        }
        let port = free_port();
        let mut cfg = format!(
            "listen = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\nek_ca_dir = \"{}\"\n\
             interval_secs = {}\nrevoke_after = {}\nnonce_ttl_secs = 30\nround_timeout_secs = 5\n\
             checkpoint_secs = 1\n",
            dir.path().join("data").display(),
            ek.display(),
            o.interval_secs,
            o.revoke_after,
        );
        if let Some((url, ca)) = &o.webhook {
            cfg.push_str(&format!(
                "webhooks = [\"{url}\"]\nwebhook_ca = \"{}\"\n",
                ca.display()
            ));
        }
        cfg.push_str(&o.extra);
        std::fs::write(dir.path().join("verifier.toml"), cfg).unwrap();
        verifier_init(&dir.path().join("verifier.toml"), &dir.path().join("operator"));
        let mut v = Self {
            dir,
            port,
            child: None,
        };
        v.spawn();
        v
    }

    /// Start `custody-verifier run` on the existing data directory and wait until it serves.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("verifier.log"))
            .unwrap();
        let child = Command::new(service_bin("custody-verifier"))
            .args(["run", "--config"])
            .arg(self.path("verifier.toml"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        self.child = Some(child);
        eventually("the verifier to listen", 20, || {
            std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()
        });
    }

    /// SIGTERM and wait: the verifier signs a final checkpoint on the way out.
    pub fn stop(&mut self) -> ExitStatus {
        let mut c = self.child.take().unwrap();
        terminate(&mut c)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn data(&self) -> PathBuf {
        self.path("data")
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("verifier.log")).unwrap_or_default()
    }

    /// `custody ARGS --verifier URL --identity OPERATOR --json`.
    pub fn cli(&self, args: &[&str]) -> Run {
        let id = self.path("operator");
        let mut a: Vec<&str> = args.to_vec();
        let url = self.url();
        a.extend(["--verifier", &url, "--identity", id.to_str().unwrap(), "--json"]);
        custody(a)
    }

    /// `custody ARGS --json`, which must succeed: its JSON.
    #[track_caller]
    pub fn cli_json(&self, args: &[&str]) -> Value {
        let r = self.cli(args);
        assert_eq!(
            r.code,
            0,
            "custody {args:?}: {}\n{}\nverifier log:\n{}",
            r.stdout,
            r.stderr,
            self.log()
        );
        r.json()
    }

    /// `custody attest NAME`, again while a scheduled round with the node is in flight
    /// (the verifier answers 409 `busy` then).
    pub fn attest(&self, name: &str) -> Run {
        eventually("a round not colliding with a scheduled one", 20, || {
            let r = self.cli(&["attest", name]);
            (!(r.code == 2 && r.stderr.contains("busy"))).then_some(r)
        })
    }

    pub fn node(&self, name: &str) -> Value {
        self.cli_json(&["nodes", "show", name])
    }

    pub fn node_listed(&self, name: &str) -> Option<Value> {
        let l = self.cli_json(&["nodes", "list"]);
        l.as_array().unwrap().iter().find(|n| n["name"] == name).cloned()
    }

    pub fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(self.data().join("ca.pem")).unwrap()
    }

    /// An HTTPS client that trusts this verifier's CA, accepts only its `verifier`
    /// certificate, and presents `id`.
    pub fn client(&self, id: Option<Identity>) -> HttpsClient {
        let roots = roots_from_pem(&self.ca_pem()).unwrap();
        HttpsClient::new(
            client_config_for_role(roots, id, "verifier").unwrap(),
            T,
            MAX_BUNDLE_LEN,
        )
    }

    pub fn operator_client(&self) -> HttpsClient {
        let read = |f: &str| std::fs::read(self.path("operator").join(f)).unwrap();
        self.client(Some(
            Identity::from_pem(&read("cert.pem"), &read("key.pem")).unwrap(),
        ))
    }

    pub async fn request(
        &self,
        c: &HttpsClient,
        method: Method,
        path: &str,
        ct: Option<&str>,
        body: Vec<u8>,
    ) -> Response {
        c.request(method, &format!("{}{path}", self.url()), ct, body)
            .await
            .unwrap()
    }

    /// The open /metrics, as text.
    pub fn metrics_text(&self) -> String {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let r = rt.block_on(self.request(&self.client(None), Method::GET, "/metrics", None, vec![]));
        assert_eq!(r.status, StatusCode::OK);
        String::from_utf8(r.body).unwrap()
    }

    /// The open /metrics, as text, from async code.
    pub async fn metrics(&self) -> String {
        let r = self
            .request(&self.client(None), Method::GET, "/metrics", None, vec![])
            .await;
        assert_eq!(r.status, StatusCode::OK);
        String::from_utf8(r.body).unwrap()
    }

    /// `custody_enrollments_total{outcome="OUTCOME"}` from the open /metrics.
    pub async fn enrollments(&self, outcome: &str) -> u64 {
        let text = self.metrics().await;
        let key = format!("custody_enrollments_total{{outcome=\"{outcome}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&key))
            .unwrap_or_else(|| panic!("no {key} in\n{text}"))
            .parse()
            .unwrap()
    }
}

impl Drop for Verifier {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------
// An agent process

#[derive(Debug)]
pub struct Agent {
    pub child: Child,
    pub dir: tempfile::TempDir,
}

pub fn agent_toml(v: &Verifier, t: &Swtpm, name: &str, listen: &str, state: &Path) -> String {
    format!(
        "name = \"{name}\"\nlisten = \"{listen}\"\nverifier_url = \"{}\"\nverifier_ca = \"{}\"\n\
         state_dir = \"{}\"\nround_timeout_secs = 10\n\n[tpm]\ntcti = \"{}\"\nevent_log = \"\"\n\n\
         [collectors]\nsnp = false\nnvml = false\n",
        v.url(),
        v.data().join("ca.pem").display(),
        state.display(),
        t.tcti()
    )
}

impl Agent {
    /// `custody-agent run` on swtpm `t`, enrolling with `v` as `name`.
    pub fn start(v: &Verifier, t: &Swtpm, name: &str) -> Self {
        Self::start_with(v, t, name, "")
    }

    /// [`Agent::start`] with `top` (top-level agent.toml lines) added.
    pub fn start_with(v: &Verifier, t: &Swtpm, name: &str, top: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let listen = format!("127.0.0.1:{}", free_port());
        let cfg = dir.path().join("agent.toml");
        let toml = format!(
            "{top}{}",
            agent_toml(v, t, name, &listen, &dir.path().join("state"))
        );
        std::fs::write(&cfg, toml).unwrap();
        let child = Self::spawn(dir.path());
        Self { child, dir }
    }

    pub fn spawn(dir: &Path) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("agent.log"))
            .unwrap();
        Command::new(service_bin("custody-agent"))
            .args(["run", "--config"])
            .arg(dir.join("agent.toml"))
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap()
    }

    /// Stop the agent (SIGTERM) and start it again with the same configuration and state.
    pub fn restart(&mut self) {
        terminate(&mut self.child);
        self.child = Self::spawn(self.dir.path());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Wait until `name` is listed; its node JSON. An agent that exits fails the test at once.
pub fn enrolled(v: &Verifier, a: &mut Agent, name: &str) -> Value {
    eventually(&format!("{name} to enroll"), 60, || {
        if let Some(st) = a.child.try_wait().unwrap() {
            panic!("the agent exited ({st}):\n{}", a.log());
        }
        v.node_listed(name)
    })
}

// ---------------------------------------------------------------------------------------
// In-process pieces: a TPM collector, enrollment and push mode

pub fn collector(t: &Swtpm) -> Arc<TpmCollector> {
    Arc::new(
        TpmCollector::new(TpmConfig {
            tcti: t.tcti(),
            pcrs: default_pcrs(),
            event_log: None,
        })
        .unwrap(),
    )
}

/// The agent's configuration for an in-process enrollment (its round endpoint is not
/// served: the address is free, so a pull from the verifier finds nobody).
pub fn agent_config(v: &Verifier, t: &Swtpm, name: &str, state: &Path) -> AgentConfig {
    let cfg = AgentConfig {
        name: name.into(),
        listen: format!("127.0.0.1:{}", free_port()),
        endpoint: None,
        verifier_url: v.url(),
        verifier_ca: Some(v.data().join("ca.pem")),
        state_dir: state.to_owned(),
        tpm: TpmSection {
            tcti: t.tcti(),
            event_log: PathBuf::new(),
            ..TpmSection::default()
        },
        collectors: CollectorsSection {
            tpm: true,
            snp: false,
            tdx: false,
            azure: false,
            nvml: false,
        },
        ..AgentConfig::default()
    };
    cfg.validate().unwrap();
    cfg
}

pub async fn enroll_in_process(cfg: &AgentConfig, tpm: Arc<TpmCollector>) -> NodeIdentity {
    let client = daemon::enrollment_client(cfg).unwrap();
    daemon::enroll(cfg, tpm, &client).await.unwrap()
}

/// A CBOR answer of the type the binding asks for.
#[macro_export]
macro_rules! decode {
    ($what:expr, $r:expr) => {{
        let r: &$crate::fleet::Response = $r;
        assert_eq!(
            r.content_type.as_deref(),
            Some(custody_formats::api::CBOR),
            "{}: {:?}",
            $what,
            r.status
        );
        custody_formats::api::from_cbor($what, &r.body).unwrap()
    }};
}

#[track_caller]
pub fn assert_refusal(r: &Response, status: StatusCode, check: &str) -> Refusal {
    assert_eq!(r.status, status, "{}", String::from_utf8_lossy(&r.body));
    let f: Refusal = decode!("refusal", r);
    assert_eq!(f.check, check, "{f:?}");
    f
}

/// The EAR verification key the verifier publishes (`GET /v1/keys`, a JWK).
pub async fn ear_key(v: &Verifier) -> VerifierKey {
    let r = v
        .request(&v.client(None), Method::GET, "/v1/keys", None, vec![])
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let keys: Value = serde_json::from_slice(&r.body).unwrap();
    let jwk = &keys["ear_jwk"];
    assert_eq!(
        (jwk["kty"].as_str(), jwk["crv"].as_str()),
        (Some("EC"), Some("P-256"))
    );
    let coord = |k: &str| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(jwk[k].as_str().unwrap())
            .unwrap()
    };
    let mut sec1 = vec![0x04];
    sec1.extend(coord("x"));
    sec1.extend(coord("y"));
    VerifierKey::from_sec1(&sec1).unwrap()
}

/// A node that pushes its own rounds (`/v1/nonce`, `/v1/evidence`), enrolled in process.
#[derive(Debug)]
pub struct Pusher {
    pub tpm: Arc<TpmCollector>,
    pub session: Session,
    pub client: HttpsClient,
    pub name: String,
}

impl Pusher {
    /// Enroll `cfg`'s node with `tpm`; the pusher and its node identity.
    pub async fn enroll(cfg: &AgentConfig, tpm: Arc<TpmCollector>) -> (Self, NodeIdentity) {
        let id = enroll_in_process(cfg, tpm.clone()).await;
        let roots = roots_from_pem(id.ca_pem.as_bytes()).unwrap();
        let p = Self {
            tpm,
            session: Session::generate().unwrap(),
            client: HttpsClient::new(
                client_config_for_role(roots, Some(id.tls_identity().unwrap()), "verifier").unwrap(),
                T,
                MAX_BUNDLE_LEN,
            ),
            name: cfg.name.clone(),
        };
        (p, id)
    }

    pub async fn nonce(&self, v: &Verifier) -> NonceGrant {
        let r = v
            .request(&self.client, Method::POST, "/v1/nonce", Some(CBOR), vec![])
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", String::from_utf8_lossy(&r.body));
        decode!("nonce grant", &r)
    }

    /// A fresh bundle for a fresh nonce.
    pub async fn bundle(&self, v: &Verifier) -> Vec<u8> {
        let g = self.nonce(v).await;
        let c: &dyn Collector = self.tpm.as_ref();
        let round = collect_round(g.nonce, &self.session, &[c], daemon::platform_facts(&self.name)).unwrap();
        assert_eq!(round.bundle.nonce, g.nonce);
        round.bundle.to_cbor().unwrap()
    }

    pub async fn push(&self, v: &Verifier, bundle: &[u8]) -> PushResult {
        let r = v
            .request(
                &self.client,
                Method::POST,
                "/v1/evidence",
                Some(CBOR),
                bundle.to_vec(),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", String::from_utf8_lossy(&r.body));
        decode!("push result", &r)
    }
}

/// A fresh TLS public key (SubjectPublicKeyInfo DER), as an agent would send it.
pub fn tls_spki() -> Vec<u8> {
    use rcgen::PublicKeyData;
    rcgen::KeyPair::generate().unwrap().subject_public_key_info()
}

/// The enrollment request a TPM with `keys` would send (a fresh TLS key each time): what
/// an attacker replays, since every field but the TLS key is public.
pub fn enroll_request(keys: &custody_agent::tpm::TpmKeys, name: &str, endpoint: &str) -> api::EnrollRequest {
    api::EnrollRequest {
        name: name.into(),
        endpoint: endpoint.into(),
        ek_cert: keys.ek_certificate.clone(),
        ek_public: keys.ek_public.clone(),
        ak_public: keys.ak_public.clone(),
        tls_spki: tls_spki(),
        locality_endpoint: None,
        move_endpoint: None,
    }
}

/// `POST /v1/enroll` without a client certificate.
pub async fn begin_enrollment(v: &Verifier, req: &api::EnrollRequest) -> Response {
    let body = api::to_cbor("enroll", req).unwrap();
    v.request(&v.client(None), Method::POST, "/v1/enroll", Some(CBOR), body)
        .await
}

/// `POST /v1/enroll/activate` without a client certificate, with the proof a TPM that
/// released `secret` computes over the request it `sent`.
pub async fn finish_enrollment(
    v: &Verifier,
    enrollment_id: String,
    secret: &[u8],
    sent: &api::EnrollRequest,
) -> Response {
    let proof = api::enrollment_proof(secret, sent).unwrap().to_vec();
    post_activation(v, &api::ActivateRequest { enrollment_id, proof }).await
}

/// `POST /v1/enroll/activate` of `req` as it is, without a client certificate.
pub async fn post_activation(v: &Verifier, req: &api::ActivateRequest) -> Response {
    let body = api::to_cbor("activate", req).unwrap();
    v.request(
        &v.client(None),
        Method::POST,
        "/v1/enroll/activate",
        Some(CBOR),
        body,
    )
    .await
}
