//! The `custody-agent` daemon: enrollment with the verifier, then the mutual-TLS round
//! endpoint the verifier calls (see `custody_formats::api` for the exchange).
//!
//! State directory (`AgentConfig::state_dir`):
//! - `tls-key.pem`: the agent's P-256 TLS key, generated on first start, mode 0600; a key
//!   readable by group or others is refused;
//! - `node-cert.pem`, `ca.pem`, `node-id`: the last enrollment's (or renewal's) result;
//! - `verifier-key`: the verifier's result key (hex) pinned at the first enrollment
//!   (unless `verifier_key` in agent.toml pins it); a later enrollment that brings
//!   another key is refused;
//! - `ak.tpm`: the attestation key as the TPM wrapped it ([`AK_FILE`]), so a restarted
//!   agent quotes with the same AK.
//!
//! The agent enrolls on every start, with the AK it loaded (or created, when the TPM was
//! cleared): the credential activation proves again that the AK sits in the TPM that holds
//! the EK, the verifier records whether the AK changed, and the agent gets a fresh TLS
//! certificate. Node certificates are short-lived: the daemon renews its certificate at
//! about half its lifetime (`POST /v1/renew` over mutual TLS) and serves the new one from
//! the next handshake on. The per-boot [`Session`] lives as long as the process.

use crate::collector::{collect_round, CollectError, Collector, Evidence, RoundError};
use crate::config::{AgentConfig, ConfigError};
use crate::mover::Mover;
use crate::session::{Session, SessionError};
use crate::tpm::{TpmCollector, TpmKeys};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use custody_formats::api::{
    self, ActivateRequest, EnrollChallenge, EnrollRequest, Enrolled, MoveExport, MovePrepare, MoveSend,
    Refusal, RenewRequest, Renewed, RoundRequest, CBOR, MAX_MESSAGE_LEN,
};
use custody_formats::binding::{Binding, Nonce};
use custody_formats::bundle::EvidenceBundle;
use custody_net::{
    ClientAuth, ClientCert, HttpsClient, Identity, NetError, PeerCert, ReloadableIdentity, RemoteAddr,
    ServerCert,
};
use custody_types::FailedCheck;
use rcgen::PublicKeyData;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use thiserror::Error;
use tokio::net::TcpListener;
use tracing::Instrument;

pub const TLS_KEY_FILE: &str = "tls-key.pem";
pub const NODE_CERT_FILE: &str = "node-cert.pem";
pub const CA_FILE: &str = "ca.pem";
pub const NODE_ID_FILE: &str = "node-id";
pub const VERIFIER_KEY_FILE: &str = "verifier-key";
/// The AK blob in the state directory (see `custody_agent::tpm`).
pub const AK_FILE: &str = "ak.tpm";
/// The only peer common name allowed to ask for a round.
pub const VERIFIER_CN: &str = "verifier";
pub const ENROLL_PATH: &str = "/v1/enroll";
pub const ACTIVATE_PATH: &str = "/v1/enroll/activate";
pub const RENEW_PATH: &str = "/v1/renew";
pub const ROUND_PATH: &str = "/v1/round";
pub const HEALTH_PATH: &str = "/healthz";
pub const MOVE_PREPARE_PATH: &str = "/v1/move/prepare";
pub const MOVE_SEND_PATH: &str = "/v1/move/send";
pub const MOVE_STATUS_PATH: &str = "/v1/move/{id}";
pub const MOVE_EXPORT_PATH: &str = "/v1/move/export";
pub const DENY_PATH: &str = "/v1/deny";
/// Bound on one enrollment request (connect and answer).
const ENROLL_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest state file read (certificates, ids).
const MAX_STATE_FILE: u64 = 1024 * 1024;

#[derive(Debug, Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("state directory {path}: {reason}")]
    State { path: PathBuf, reason: String },
    #[error("TLS key {path}: {reason}")]
    TlsKey { path: PathBuf, reason: String },
    #[error("verifier CA {path}: {reason}")]
    VerifierCa { path: PathBuf, reason: String },
    #[error("session keys: {0}")]
    Session(#[from] SessionError),
    #[error("enrollment needs the TPM: {0}")]
    Tpm(CollectError),
    #[error("enrollment: {0}")]
    Transport(NetError),
    #[error("enrollment refused: {check}: {detail}")]
    Refused {
        status: u16,
        check: String,
        detail: String,
    },
    #[error("enrollment: {what} answered HTTP {status} without a CBOR refusal")]
    UnexpectedStatus { what: &'static str, status: u16 },
    #[error("enrollment: bad {what} from the verifier: {reason}")]
    BadResponse { what: &'static str, reason: String },
    #[error("enrollment: the verifier sent a CA certificate other than the pinned `verifier_ca`")]
    CaMismatch,
    #[error("enrollment: the verifier's result key is not the one pinned {pinned_by}; refusing it (a moved or replaced verifier needs the operator to change the pin)")]
    VerifierKeyMismatch { pinned_by: &'static str },
    #[error("node certificate: {0}")]
    NodeCert(String),
    #[error("listen on {addr}: {reason}")]
    Listen { addr: String, reason: String },
    #[error("TLS configuration: {0}")]
    Tls(NetError),
    #[error("blocking task: {0}")]
    Task(String),
}

impl DaemonError {
    /// Stable name of what failed.
    pub fn check(&self) -> &'static str {
        match self {
            Self::Config(_) => "config",
            Self::State { .. } => "state_dir",
            Self::TlsKey { .. } => "tls_key",
            Self::VerifierCa { .. } => "verifier_ca",
            Self::Session(_) => "session",
            Self::Tpm(_) => "tpm",
            Self::Transport(_) => "transport",
            Self::Refused { .. } => "refused",
            Self::UnexpectedStatus { .. } => "unexpected_status",
            Self::BadResponse { .. } => "bad_response",
            Self::CaMismatch => "ca_mismatch",
            Self::VerifierKeyMismatch { .. } => "verifier_key",
            Self::NodeCert(_) => "node_cert",
            Self::Listen { .. } => "listen",
            Self::Tls(_) => "tls",
            Self::Task(_) => "task",
        }
    }
}

/// TPM credential activation, as enrollment needs it.
pub trait Activator {
    /// TPM2_ActivateCredential with the EK and the AK: the secret the verifier sealed.
    fn activate(&self, id_object: &[u8], encrypted_secret: &[u8]) -> Result<Vec<u8>, CollectError>;
    /// EK certificate and EK/AK public areas.
    fn keys(&self) -> Result<TpmKeys, CollectError>;
}

impl Activator for TpmCollector {
    fn activate(&self, id_object: &[u8], encrypted_secret: &[u8]) -> Result<Vec<u8>, CollectError> {
        self.activate_credential(id_object, encrypted_secret)
    }

    fn keys(&self) -> Result<TpmKeys, CollectError> {
        TpmCollector::keys(self)
    }
}

/// A collector the daemon shares between rounds and blocking threads.
pub type SharedCollector = Arc<dyn Collector + Send + Sync>;
/// The activator the daemon runs on a blocking thread.
pub type SharedActivator = Arc<dyn Activator + Send + Sync>;

/// Stands in for a collector this build does not include, so the bundle says why its
/// evidence is missing (`unavailable.<kind>`).
#[derive(Debug, Clone, Copy)]
pub struct NotBuilt(pub &'static str);

impl Collector for NotBuilt {
    fn kind(&self) -> &'static str {
        self.0
    }
    fn collect(&self, _: &Binding) -> Result<Evidence, CollectError> {
        Err(CollectError::NotAvailable {
            kind: self.0,
            reason: "this agent was built without this collector".into(),
        })
    }
}

// ---------------------------------------------------------------------------------------
// State directory

fn state_err(path: &Path, e: impl fmt::Display) -> DaemonError {
    DaemonError::State {
        path: path.to_owned(),
        reason: e.to_string(),
    }
}

/// Create the state directory (mode 0700) if needed.
pub fn ensure_state_dir(dir: &Path) -> Result<(), DaemonError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| state_err(dir, e))
}

/// Write `name` in `dir` atomically (temporary file, fsync, rename) with `mode`.
fn write_state_file(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> Result<(), DaemonError> {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    // A leftover from a crash would make create_new fail.
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| state_err(&tmp, e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| state_err(&tmp, e))?;
    drop(f);
    std::fs::rename(&tmp, &path).map_err(|e| state_err(&path, e))
}

fn read_state_file(path: &Path) -> Result<String, DaemonError> {
    let meta = std::fs::metadata(path).map_err(|e| state_err(path, e))?;
    if meta.len() > MAX_STATE_FILE {
        return Err(state_err(path, format!("larger than {MAX_STATE_FILE} bytes")));
    }
    std::fs::read_to_string(path).map_err(|e| state_err(path, e))
}

// ---------------------------------------------------------------------------------------
// TLS key

/// The agent's TLS key (P-256). `Debug` shows the public key only.
#[derive(Clone)]
pub struct TlsKey {
    pem: String,
    spki: Vec<u8>,
}

impl fmt::Debug for TlsKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsKey")
            .field("spki_len", &self.spki.len())
            .finish_non_exhaustive()
    }
}

impl TlsKey {
    /// `state_dir/tls-key.pem`, generated (mode 0600) if absent. An existing key readable
    /// by group or others is refused rather than used.
    pub fn load_or_generate(state_dir: &Path) -> Result<Self, DaemonError> {
        let path = state_dir.join(TLS_KEY_FILE);
        let err = |reason: String| DaemonError::TlsKey {
            path: path.clone(),
            reason,
        };
        match std::fs::metadata(&path) {
            Ok(meta) => {
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    return Err(err(format!(
                        "mode is {mode:04o}; the key must be readable by its owner only (0600)"
                    )));
                }
                let pem = read_state_file(&path)?;
                let kp = rcgen::KeyPair::from_pem(&pem).map_err(|e| err(e.to_string()))?;
                if kp.algorithm() != &rcgen::PKCS_ECDSA_P256_SHA256 {
                    return Err(err("not a P-256 key".into()));
                }
                Ok(Self {
                    spki: kp.subject_public_key_info(),
                    pem,
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                ensure_state_dir(state_dir)?;
                let kp = rcgen::KeyPair::generate().map_err(|e| err(e.to_string()))?;
                let pem = kp.serialize_pem();
                write_state_file(state_dir, TLS_KEY_FILE, pem.as_bytes(), 0o600)?;
                tracing::info!(path = %path.display(), "generated the TLS key");
                Ok(Self {
                    spki: kp.subject_public_key_info(),
                    pem,
                })
            }
            Err(e) => Err(err(e.to_string())),
        }
    }

    /// SubjectPublicKeyInfo, DER: what the node certificate must carry.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki
    }
}

// ---------------------------------------------------------------------------------------
// Node identity

/// An enrolled node: its id, its certificate for the TLS key, and the verifier CA.
#[derive(Clone)]
pub struct NodeIdentity {
    pub node_id: String,
    /// Node certificate, PEM.
    pub certificate_pem: String,
    /// Verifier CA, PEM: the only roots for mTLS peers.
    pub ca_pem: String,
    /// The verifier's result key (SEC1 P-256) from this enrollment: checks move tickets.
    /// For an identity loaded from the state directory: the pinned key, if any.
    pub verifier_key: Vec<u8>,
    key: TlsKey,
}

impl fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeIdentity")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

fn valid_node_id(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'))
}

impl NodeIdentity {
    /// Check that the certificate is for `key` and the CA parses.
    pub fn new(
        node_id: String,
        certificate_pem: String,
        ca_pem: String,
        key: TlsKey,
    ) -> Result<Self, DaemonError> {
        if !valid_node_id(&node_id) {
            return Err(DaemonError::NodeCert(format!(
                "node id {node_id:?} is not 1-128 characters of A-Z a-z 0-9 . _ - :"
            )));
        }
        let chain = custody_net::certs_from_pem(certificate_pem.as_bytes())
            .map_err(|e| DaemonError::NodeCert(e.to_string()))?;
        let leaf = chain
            .first()
            .ok_or_else(|| DaemonError::NodeCert("no certificate".into()))?;
        let (_, cert) = x509_parser::parse_x509_certificate(leaf)
            .map_err(|e| DaemonError::NodeCert(format!("not X.509: {e}")))?;
        if cert.public_key().raw != key.spki_der() {
            return Err(DaemonError::NodeCert(
                "the certificate is not for this agent's TLS key".into(),
            ));
        }
        custody_net::roots_from_pem(ca_pem.as_bytes())
            .map_err(|e| DaemonError::NodeCert(format!("CA: {e}")))?;
        Ok(Self {
            node_id,
            certificate_pem,
            ca_pem,
            verifier_key: Vec::new(),
            key,
        })
    }

    /// The identity a previous enrollment stored in `state_dir`.
    pub fn load(state_dir: &Path) -> Result<Self, DaemonError> {
        let key = TlsKey::load_or_generate(state_dir)?;
        let node_id = read_state_file(&state_dir.join(NODE_ID_FILE))?.trim().to_owned();
        let cert = read_state_file(&state_dir.join(NODE_CERT_FILE))?;
        let ca = read_state_file(&state_dir.join(CA_FILE))?;
        let mut id = Self::new(node_id, cert, ca, key)?;
        id.verifier_key = stored_verifier_key(state_dir)?.unwrap_or_default();
        Ok(id)
    }

    /// Store the certificate, CA and node id in `state_dir` (the key is already there).
    pub fn store(&self, state_dir: &Path) -> Result<(), DaemonError> {
        ensure_state_dir(state_dir)?;
        write_state_file(state_dir, NODE_CERT_FILE, self.certificate_pem.as_bytes(), 0o644)?;
        write_state_file(state_dir, CA_FILE, self.ca_pem.as_bytes(), 0o644)?;
        write_state_file(
            state_dir,
            NODE_ID_FILE,
            format!("{}\n", self.node_id).as_bytes(),
            0o644,
        )
    }

    /// Node certificate and TLS key for rustls.
    pub fn tls_identity(&self) -> Result<Identity, DaemonError> {
        Identity::from_pem(self.certificate_pem.as_bytes(), self.key.pem.as_bytes()).map_err(DaemonError::Tls)
    }

    /// The round endpoint's TLS: this node's certificate, client certificates required
    /// and verified against the verifier CA only.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, DaemonError> {
        let roots = custody_net::roots_from_pem(self.ca_pem.as_bytes()).map_err(DaemonError::Tls)?;
        custody_net::server_config(self.tls_identity()?, ClientAuth::Required(roots))
            .map_err(DaemonError::Tls)
    }

    /// [`Self::server_config`] serving whatever certificate `tls` holds now (renewals
    /// replace it).
    pub fn reloadable_server_config(
        &self,
        tls: Arc<ReloadableIdentity>,
    ) -> Result<Arc<rustls::ServerConfig>, DaemonError> {
        let roots = custody_net::roots_from_pem(self.ca_pem.as_bytes()).map_err(DaemonError::Tls)?;
        custody_net::server_config_with(ServerCert::Reloadable(tls), ClientAuth::Required(roots))
            .map_err(DaemonError::Tls)
    }

    /// When to renew: half way through the certificate's validity (now, if past it).
    pub fn renew_in(&self) -> Result<Duration, DaemonError> {
        let der = custody_net::certs_from_pem(self.certificate_pem.as_bytes())
            .map_err(|e| DaemonError::NodeCert(e.to_string()))?;
        let leaf = der
            .first()
            .ok_or_else(|| DaemonError::NodeCert("no certificate".into()))?;
        let (_, c) = x509_parser::parse_x509_certificate(leaf)
            .map_err(|e| DaemonError::NodeCert(format!("not X.509: {e}")))?;
        let (nb, na) = (
            c.validity().not_before.timestamp(),
            c.validity().not_after.timestamp(),
        );
        let half = nb.saturating_add(na.saturating_sub(nb) / 2);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        Ok(Duration::from_secs(
            u64::try_from(half.saturating_sub(now)).unwrap_or(0),
        ))
    }
}

fn stored_verifier_key(state_dir: &Path) -> Result<Option<Vec<u8>>, DaemonError> {
    let path = state_dir.join(VERIFIER_KEY_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let text = read_state_file(&path)?;
    hex::decode(text.trim())
        .map(Some)
        .map_err(|e| state_err(&path, format!("not hex: {e}")))
}

/// The verifier result key this enrollment may accept: the configured pin, else the one
/// stored at the first enrollment (stored now when there is none). A different key is
/// refused, never taken silently: it checks every move ticket.
fn pin_verifier_key(cfg: &AgentConfig, got: &[u8]) -> Result<(), DaemonError> {
    let (want, pinned_by) = match cfg.pinned_verifier_key()? {
        Some(k) => (k, "in agent.toml (`verifier_key`)"),
        None => match stored_verifier_key(&cfg.state_dir)? {
            Some(k) => (k, "in the state directory at the first enrollment"),
            None => {
                if !got.is_empty() {
                    ensure_state_dir(&cfg.state_dir)?;
                    write_state_file(
                        &cfg.state_dir,
                        VERIFIER_KEY_FILE,
                        format!("{}\n", hex::encode(got)).as_bytes(),
                        0o644,
                    )?;
                }
                return Ok(());
            }
        },
    };
    if want != got {
        return Err(DaemonError::VerifierKeyMismatch { pinned_by });
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Enrollment

/// The pinned verifier CA (PEM) from `cfg.verifier_ca`.
pub fn pinned_ca(cfg: &AgentConfig) -> Result<String, DaemonError> {
    let path = cfg.verifier_ca_path()?;
    let err = |reason: String| DaemonError::VerifierCa {
        path: path.to_owned(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
    if meta.len() > MAX_STATE_FILE {
        return Err(err(format!("larger than {MAX_STATE_FILE} bytes")));
    }
    let pem = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    custody_net::roots_from_pem(pem.as_bytes()).map_err(|e| err(e.to_string()))?;
    Ok(pem)
}

/// The enrollment client: server-authenticated TLS trusting only the pinned CA, and only
/// a server certified as `verifier` (a node's certificate from the same CA is refused),
/// no client certificate.
pub fn enrollment_client(cfg: &AgentConfig) -> Result<HttpsClient, DaemonError> {
    let path = cfg.verifier_ca_path()?.to_owned();
    let roots =
        custody_net::roots_from_pem(pinned_ca(cfg)?.as_bytes()).map_err(|e| DaemonError::VerifierCa {
            path,
            reason: e.to_string(),
        })?;
    let tls = custody_net::client_config_for_role(roots, None, VERIFIER_CN).map_err(DaemonError::Tls)?;
    Ok(HttpsClient::new(tls, ENROLL_TIMEOUT, MAX_MESSAGE_LEN))
}

async fn post_cbor<T: DeserializeOwned>(
    client: &HttpsClient,
    url: &str,
    what: &'static str,
    body: Vec<u8>,
) -> Result<T, DaemonError> {
    let r = client
        .request(Method::POST, url, Some(CBOR), body)
        .await
        .map_err(DaemonError::Transport)?;
    if r.status == StatusCode::OK {
        return api::from_cbor(what, &r.body).map_err(|e| DaemonError::BadResponse {
            what,
            reason: e.to_string(),
        });
    }
    match api::from_cbor::<Refusal>("Refusal", &r.body) {
        Ok(Refusal { check, detail }) => Err(DaemonError::Refused {
            status: r.status.as_u16(),
            check: printable(&check),
            detail: printable(&detail),
        }),
        Err(_) => Err(DaemonError::UnexpectedStatus {
            what,
            status: r.status.as_u16(),
        }),
    }
}

/// The peer's text with control characters replaced, so it cannot forge log lines.
fn printable(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, CollectError> + Send + 'static,
) -> Result<T, DaemonError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| DaemonError::Task(e.to_string()))?
        .map_err(DaemonError::Tpm)
}

/// The first enrollment message: the TPM's keys, this agent's TLS key and endpoints.
pub fn enroll_request(cfg: &AgentConfig, keys: TpmKeys, key: &TlsKey) -> Result<EnrollRequest, DaemonError> {
    Ok(EnrollRequest {
        name: cfg.name.clone(),
        endpoint: cfg.endpoint()?,
        ek_cert: keys.ek_certificate,
        ek_public: keys.ek_public,
        ak_public: keys.ak_public,
        tls_spki: key.spki_der().to_vec(),
        locality_endpoint: cfg.locality_endpoint()?,
        move_endpoint: cfg.move_endpoint()?,
    })
}

fn encode_err(what: &'static str, e: api::ApiError) -> DaemonError {
    DaemonError::BadResponse {
        what,
        reason: e.to_string(),
    }
}

/// The answer to a credential challenge: the TPM activates it, and the agent proves it
/// with an HMAC keyed by the secret over `sent`, the request it sent. The secret never
/// leaves the agent, and a proof fits only that request (see
/// [`custody_formats::api::enrollment_proof`]).
pub async fn activate(
    activator: SharedActivator,
    ch: EnrollChallenge,
    sent: &EnrollRequest,
) -> Result<ActivateRequest, DaemonError> {
    let EnrollChallenge {
        enrollment_id,
        id_object,
        encrypted_secret,
    } = ch;
    let secret = blocking(move || activator.activate(&id_object, &encrypted_secret)).await?;
    let proof = api::enrollment_proof(&secret, sent).map_err(|e| encode_err("EnrollRequest", e))?;
    Ok(ActivateRequest {
        enrollment_id,
        proof: proof.to_vec(),
    })
}

/// Enroll with the verifier: send the TPM keys and the TLS key, activate the credential
/// the verifier sealed to them, check and store the node certificate. Needs `keys()`
/// before `activate` (the AK must exist); both run on a blocking thread.
/// `d` plus up to half of it again, at random.
fn jitter(d: Duration) -> Duration {
    let mut b = [0u8; 2];
    let r = aws_lc_rs::rand::fill(&mut b).map_or(0, |()| u16::from_le_bytes(b));
    d + d.mul_f64(f64::from(r) / f64::from(u16::MAX) / 2.0)
}

pub async fn enroll(
    cfg: &AgentConfig,
    activator: SharedActivator,
    client: &HttpsClient,
) -> Result<NodeIdentity, DaemonError> {
    let base = cfg.verifier_base_url()?;
    let pinned = pinned_ca(cfg)?;
    let key = TlsKey::load_or_generate(&cfg.state_dir)?;
    let a = activator.clone();
    let keys = blocking(move || a.keys()).await?;
    let req = enroll_request(cfg, keys, &key)?;
    let body = api::to_cbor("EnrollRequest", &req).map_err(|e| encode_err("EnrollRequest", e))?;
    tracing::info!(name = %req.name, endpoint = %req.endpoint, "enrolling");
    let ch: EnrollChallenge =
        post_cbor(client, &format!("{base}{ENROLL_PATH}"), "EnrollChallenge", body).await?;
    let answer = activate(activator, ch, &req).await?;
    let body = api::to_cbor("ActivateRequest", &answer).map_err(|e| encode_err("ActivateRequest", e))?;
    let done: Enrolled = post_cbor(client, &format!("{base}{ACTIVATE_PATH}"), "Enrolled", body).await?;
    // The CA the node will trust for mTLS peers must be the one the operator pinned: a
    // verifier cannot widen the agent's trust.
    let same = |a: &str| custody_net::certs_from_pem(a.as_bytes()).ok();
    match (same(&done.ca_pem), same(&pinned)) {
        (Some(got), Some(want)) if got == want => {}
        _ => return Err(DaemonError::CaMismatch),
    }
    if !done.verifier_key.is_empty()
        && (done.verifier_key.len() != 65 || done.verifier_key.first() != Some(&4))
    {
        return Err(DaemonError::BadResponse {
            what: "Enrolled",
            reason: "verifier_key is not an uncompressed P-256 point".into(),
        });
    }
    pin_verifier_key(cfg, &done.verifier_key)?;
    let mut id = NodeIdentity::new(done.node_id, done.certificate_pem, done.ca_pem, key)?;
    id.verifier_key = done.verifier_key;
    id.store(&cfg.state_dir)?;
    tracing::info!(node_id = %id.node_id, "enrolled");
    Ok(id)
}

/// Renew `id`'s certificate over mutual TLS with its current one (`POST /v1/renew`):
/// the same TLS key, a new certificate for the same node, stored in the state directory.
pub async fn renew(cfg: &AgentConfig, id: &NodeIdentity) -> Result<NodeIdentity, DaemonError> {
    let base = cfg.verifier_base_url()?;
    let roots = custody_net::roots_from_pem(id.ca_pem.as_bytes()).map_err(DaemonError::Tls)?;
    let tls = custody_net::client_config_for_role(roots, Some(id.tls_identity()?), VERIFIER_CN)
        .map_err(DaemonError::Tls)?;
    let client = HttpsClient::new(tls, ENROLL_TIMEOUT, MAX_MESSAGE_LEN);
    let body = api::to_cbor(
        "RenewRequest",
        &RenewRequest {
            tls_spki: id.key.spki_der().to_vec(),
        },
    )
    .map_err(|e| encode_err("RenewRequest", e))?;
    let done: Renewed = post_cbor(&client, &format!("{base}{RENEW_PATH}"), "Renewed", body).await?;
    let cn = custody_net::certs_from_pem(done.certificate_pem.as_bytes())
        .ok()
        .and_then(|c| c.first().and_then(|l| custody_net::subject_cn(l)));
    if cn.as_deref() != Some(format!("node:{}", id.node_id).as_str()) {
        return Err(DaemonError::NodeCert(format!(
            "the renewed certificate is for {cn:?}, not node:{}",
            id.node_id
        )));
    }
    let mut new = NodeIdentity::new(
        id.node_id.clone(),
        done.certificate_pem,
        id.ca_pem.clone(),
        id.key.clone(),
    )?;
    new.verifier_key = id.verifier_key.clone();
    new.store(&cfg.state_dir)?;
    tracing::info!(node_id = %new.node_id, "node certificate renewed");
    Ok(new)
}

/// Renew at half of each certificate's lifetime and serve the new one through `tls`;
/// failures are retried with back-off (a removed or revoked node keeps being refused,
/// and its certificate runs out).
async fn keep_renewed(cfg: AgentConfig, mut id: NodeIdentity, tls: Arc<ReloadableIdentity>) {
    loop {
        let wait = id.renew_in().unwrap_or(Duration::from_secs(60));
        tokio::time::sleep(wait).await;
        let mut backoff = Duration::from_secs(10);
        loop {
            match renew(&cfg, &id).await.and_then(|n| {
                tls.replace(n.tls_identity()?).map_err(DaemonError::Tls)?;
                Ok(n)
            }) {
                Ok(n) => {
                    id = n;
                    break;
                }
                Err(e) => {
                    tracing::warn!(check = e.check(), error = %e, retry_in = ?backoff, "certificate renewal failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(600));
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Rounds

/// Unattested platform facts every bundle carries.
pub fn platform_facts(name: &str) -> BTreeMap<String, String> {
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    BTreeMap::from([
        ("hostname".to_owned(), hostname),
        ("node_name".to_owned(), name.to_owned()),
        ("agent_version".to_owned(), env!("CARGO_PKG_VERSION").to_owned()),
    ])
}

/// Why a round produced no bundle.
#[derive(Debug, Error)]
pub enum RoundFailure {
    #[error(transparent)]
    Round(#[from] RoundError),
    #[error("the round took longer than {0:?}")]
    Timeout(Duration),
    #[error("round task: {0}")]
    Task(String),
    #[error("encode the bundle: {0}")]
    Encode(String),
}

impl RoundFailure {
    /// The refusal's check: `collect.<kind>` for a collector, else what failed.
    pub fn check(&self) -> String {
        match self {
            Self::Round(RoundError::Collect(CollectError::Failed { kind, .. }))
            | Self::Round(RoundError::Collect(CollectError::NotAvailable { kind, .. }))
            | Self::Round(RoundError::Duplicate(kind)) => format!("collect.{kind}"),
            Self::Timeout(_) => "round_timeout".into(),
            Self::Task(_) => "round_task".into(),
            Self::Encode(_) => "encode".into(),
        }
    }
}

/// Everything a round needs; one round at a time (a TPM serves one command at a time,
/// and swtpm one client).
pub struct Rounds {
    session: Session,
    collectors: Vec<SharedCollector>,
    platform: BTreeMap<String, String>,
    timeout: Duration,
    one_at_a_time: Mutex<()>,
}

impl fmt::Debug for Rounds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kinds: Vec<&str> = self.collectors.iter().map(|c| c.kind()).collect();
        f.debug_struct("Rounds")
            .field("session", &self.session)
            .field("collectors", &kinds)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Rounds {
    pub fn new(
        session: Session,
        collectors: Vec<SharedCollector>,
        platform: BTreeMap<String, String>,
        timeout: Duration,
    ) -> Self {
        Self {
            session,
            collectors,
            platform,
            timeout,
            one_at_a_time: Mutex::new(()),
        }
    }

    pub fn session(&self) -> &Session {
        &self.session
    }

    /// One round for `nonce` on a blocking thread, bounded by the round timeout. A round
    /// that times out still holds the lock until its collectors return.
    pub async fn round(self: &Arc<Self>, nonce: Nonce) -> Result<EvidenceBundle, RoundFailure> {
        let me = Arc::clone(self);
        let task = tokio::task::spawn_blocking(move || {
            let _one = me.one_at_a_time.lock().unwrap_or_else(|p| p.into_inner());
            let refs: Vec<&dyn Collector> = me
                .collectors
                .iter()
                .map(|c| c.as_ref() as &dyn Collector)
                .collect();
            collect_round(nonce, &me.session, &refs, me.platform.clone())
        });
        let round = tokio::time::timeout(self.timeout, task)
            .await
            .map_err(|_| RoundFailure::Timeout(self.timeout))?
            .map_err(|e| RoundFailure::Task(e.to_string()))??;
        let mut bundle = round.bundle;
        for (kind, reason) in round.unavailable {
            bundle.platform.insert(format!("unavailable.{kind}"), reason);
        }
        Ok(bundle)
    }
}

fn cbor_response(status: StatusCode, body: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, CBOR)], body).into_response()
}

fn refuse(status: StatusCode, check: &str, detail: impl Into<String>) -> Response {
    let r = Refusal {
        check: check.to_owned(),
        detail: detail.into(),
    };
    match api::to_cbor("Refusal", &r) {
        Ok(b) => cbor_response(status, b),
        Err(_) => status.into_response(),
    }
}

fn is_cbor(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(CBOR))
}

/// The CBOR body of a request only the verifier may make, or the refusal to send.
async fn verifier_request<T: DeserializeOwned>(
    peer: Option<&str>,
    req: Request,
    what: &'static str,
) -> Result<T, Response> {
    if peer != Some(VERIFIER_CN) {
        tracing::warn!(what, "refused: peer is not the verifier");
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "peer_role",
            format!("only a `{VERIFIER_CN}` certificate may send a {what}"),
        ));
    }
    if !is_cbor(req.headers()) {
        return Err(refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content_type",
            format!("the body must be {CBOR}"),
        ));
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = || {
        refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("a {what} is at most {MAX_MESSAGE_LEN} bytes"),
        )
    };
    if declared.is_some_and(|n| n > MAX_MESSAGE_LEN as u64) {
        return Err(too_large());
    }
    let body = match axum::body::to_bytes(req.into_body(), MAX_MESSAGE_LEN).await {
        Ok(b) => b,
        Err(e) => {
            let e = e.into_inner();
            if e.is::<http_body_util::LengthLimitError>() {
                return Err(too_large());
            }
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "request",
                format!("read the body: {e}"),
            ));
        }
    };
    api::from_cbor(what, &body).map_err(|e| refuse(StatusCode::BAD_REQUEST, "request", e.to_string()))
}

async fn round_handler(
    State((rounds, mover)): State<(Arc<Rounds>, Option<Arc<Mover>>)>,
    req: Request,
) -> Response {
    let peer = req.extensions().get::<PeerCert>().and_then(PeerCert::common_name);
    let remote = req
        .extensions()
        .get::<RemoteAddr>()
        .map(|r| r.0.to_string())
        .unwrap_or_default();
    let span = tracing::info_span!("round", peer = peer.as_deref().unwrap_or("-"), %remote);
    async move {
        let rr: RoundRequest = match verifier_request(peer.as_deref(), req, "RoundRequest").await {
            Ok(r) => r,
            Err(refusal) => return refusal,
        };
        // The deny list rides along; a bad one is logged and never costs the round.
        if let (Some(list), Some(m)) = (&rr.deny, &mover) {
            match m.deny().offer(list, crate::mover::now()) {
                Ok(true) => tracing::info!(issued_at_ms = m.deny().issued_at_ms(), "deny list updated"),
                Ok(false) => {}
                Err(e) => tracing::warn!(check = e.check(), error = %e, "deny list refused"),
            }
        }
        match rounds.round(rr.nonce).await.and_then(|b| {
            b.to_cbor()
                .map(|c| (c, b))
                .map_err(|e| RoundFailure::Encode(e.to_string()))
        }) {
            Ok((cbor, b)) => {
                let missing: Vec<&str> = b
                    .platform
                    .keys()
                    .filter_map(|k| k.strip_prefix("unavailable."))
                    .collect();
                tracing::info!(bytes = cbor.len(), unavailable = ?missing, "round served");
                cbor_response(StatusCode::OK, cbor)
            }
            Err(e) => {
                tracing::error!(error = %e, "round failed");
                refuse(StatusCode::INTERNAL_SERVER_ERROR, &e.check(), e.to_string())
            }
        }
    }
    .instrument(span)
    .await
}

fn peer_of(req: &Request) -> Option<String> {
    req.extensions().get::<PeerCert>().and_then(PeerCert::common_name)
}

fn move_refusal(e: &custody_mover::MoverError) -> Response {
    use custody_types::FailedCheck;
    let status = match e {
        custody_mover::MoverError::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        custody_mover::MoverError::TransferActive(_) => StatusCode::CONFLICT,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    };
    refuse(status, e.check(), e.to_string())
}

async fn move_prepare(State(mover): State<Arc<Mover>>, req: Request) -> Response {
    let peer = peer_of(&req);
    let p: MovePrepare = match verifier_request(peer.as_deref(), req, "MovePrepare").await {
        Ok(r) => r,
        Err(refusal) => return refusal,
    };
    let span = tracing::info_span!("move_prepare", checkpoint = %p.checkpoint);
    move_blocking(StatusCode::OK, "MovePrepared", move || {
        mover.prepare(&p.checkpoint)
    })
    .instrument(span)
    .await
}

/// Mover work on a blocking thread (it reads and hashes checkpoints), answered as CBOR
/// with `ok`, or the refusal naming the check.
async fn move_blocking<T: serde::Serialize + Send + 'static>(
    ok: StatusCode,
    what: &'static str,
    work: impl FnOnce() -> Result<T, custody_mover::MoverError> + Send + 'static,
) -> Response {
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(v)) => match api::to_cbor(what, &v) {
            Ok(b) => cbor_response(ok, b),
            Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, "encode", e.to_string()),
        },
        Ok(Err(e)) => move_refusal(&e),
        Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, "task", e.to_string()),
    }
}

async fn move_send(State(mover): State<Arc<Mover>>, req: Request) -> Response {
    let peer = peer_of(&req);
    let s: MoveSend = match verifier_request(peer.as_deref(), req, "MoveSend").await {
        Ok(r) => r,
        Err(refusal) => return refusal,
    };
    // Checks the ticket and hashes the checkpoint before answering.
    move_blocking(StatusCode::ACCEPTED, "MoveStarted", move || {
        mover.start_send(s.ticket, &s.checkpoint, s.to, s.chunk_size, s.release)
    })
    .await
}

async fn move_export(State(mover): State<Arc<Mover>>, req: Request) -> Response {
    let peer = peer_of(&req);
    let s: MoveExport = match verifier_request(peer.as_deref(), req, "MoveExport").await {
        Ok(r) => r,
        Err(refusal) => return refusal,
    };
    move_blocking(StatusCode::ACCEPTED, "MoveStarted", move || {
        mover.start_export(s.ticket, &s.checkpoint, s.chunk_size)
    })
    .await
}

/// `PUT /v1/deny`: the verifier's deny list, taken if it verifies and is newer.
async fn deny_update(State(mover): State<Arc<Mover>>, req: Request) -> Response {
    let peer = peer_of(&req);
    let u: api::DenyListUpdate = match verifier_request(peer.as_deref(), req, "DenyListUpdate").await {
        Ok(r) => r,
        Err(refusal) => return refusal,
    };
    let deny = mover.deny();
    match deny.offer(&u.list, crate::mover::now()) {
        Ok(replaced) => {
            let held = api::DenyListHeld {
                replaced,
                issued_at_ms: deny.issued_at_ms(),
            };
            if replaced {
                tracing::info!(issued_at_ms = held.issued_at_ms, "deny list updated");
            }
            match api::to_cbor("DenyListHeld", &held) {
                Ok(b) => cbor_response(StatusCode::OK, b),
                Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, "encode", e.to_string()),
            }
        }
        Err(e) => {
            tracing::warn!(check = e.check(), error = %e, "deny list refused");
            refuse(StatusCode::BAD_REQUEST, e.check(), e.to_string())
        }
    }
}

async fn move_status(
    State(mover): State<Arc<Mover>>,
    axum::extract::Path(id): axum::extract::Path<String>,
    req: Request,
) -> Response {
    if peer_of(&req).as_deref() != Some(VERIFIER_CN) {
        return refuse(
            StatusCode::FORBIDDEN,
            "peer_role",
            "only the verifier asks for transfers",
        );
    }
    match mover.status(&id) {
        Some(s) => match api::to_cbor("MoveStatus", &s) {
            Ok(b) => cbor_response(StatusCode::OK, b),
            Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, "encode", e.to_string()),
        },
        None => refuse(StatusCode::NOT_FOUND, "no_transfer", format!("no transfer {id}")),
    }
}

/// The round endpoint's routes: `POST /v1/round`, `GET /healthz`, and with a mover
/// `POST /v1/move/prepare`, `POST /v1/move/send`, `GET /v1/move/{ticket id}`.
pub fn router(rounds: Arc<Rounds>, mover: Option<Arc<Mover>>) -> axum::Router {
    let r = axum::Router::new()
        .route(ROUND_PATH, post(round_handler))
        .route(HEALTH_PATH, get(|| async { "ok" }))
        .with_state((rounds, mover.clone()));
    match mover {
        Some(m) => r.merge(
            axum::Router::new()
                .route(MOVE_PREPARE_PATH, post(move_prepare))
                .route(MOVE_SEND_PATH, post(move_send))
                .route(MOVE_EXPORT_PATH, post(move_export))
                .route(MOVE_STATUS_PATH, get(move_status))
                .route(DENY_PATH, axum::routing::put(deny_update))
                .with_state(m),
        ),
        None => r,
    }
}

/// Serve rounds for an already-enrolled node on `listener` until `shutdown`.
pub async fn serve_rounds(
    listener: TcpListener,
    identity: &NodeIdentity,
    rounds: Arc<Rounds>,
    mover: Option<Arc<Mover>>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), DaemonError> {
    let tls = identity.server_config()?;
    if let Ok(a) = listener.local_addr() {
        tracing::info!(listen = %a, node_id = %identity.node_id, "serving rounds");
    }
    custody_net::serve(listener, tls, router(rounds, mover), shutdown).await;
    Ok(())
}

/// The daemon: bind, enroll (retrying while the verifier is unreachable), serve rounds
/// with one per-boot session until `shutdown`.
pub async fn run(
    cfg: AgentConfig,
    collectors: Vec<SharedCollector>,
    activator: SharedActivator,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), DaemonError> {
    cfg.validate()?;
    let session = Session::generate()?;
    let addr = cfg.listen_addr()?;
    // Bound before enrolling: a taken port fails now, and a verifier that calls right
    // after enrollment finds the port open.
    let listener = TcpListener::bind(addr).await.map_err(|e| DaemonError::Listen {
        addr: addr.to_string(),
        reason: e.to_string(),
    })?;
    let client = enrollment_client(&cfg)?;
    tokio::pin!(shutdown);
    let mut backoff = Duration::from_secs(1);
    let identity = loop {
        let attempt = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            r = enroll(&cfg, activator.clone(), &client) => r,
        };
        let wait = match attempt {
            Ok(id) => break id,
            Err(DaemonError::Transport(e)) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "verifier unreachable");
                backoff
            }
            // The verifier is momentarily full (pending enrollments): try again later,
            // at a jittered time so that a fleet restarting together does not return in step.
            Err(DaemonError::Refused { ref check, .. }) if check == "busy" => {
                let wait = jitter(backoff);
                tracing::warn!(retry_in = ?wait, "verifier busy; enrollment retried later");
                wait
            }
            Err(e) => return Err(e),
        };
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            _ = tokio::time::sleep(wait) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(60));
    };
    let rounds = Arc::new(Rounds::new(
        session,
        collectors,
        platform_facts(&cfg.name),
        cfg.round_timeout()?,
    ));
    let locality = spawn_locality(&cfg, &rounds).await?;
    let tls = ReloadableIdentity::new(identity.tls_identity()?).map_err(DaemonError::Tls)?;
    let mover = spawn_mover(&cfg, &identity, &rounds, &tls)?;
    let server = identity.reloadable_server_config(tls.clone())?;
    let renewal = tokio::spawn(keep_renewed(cfg.clone(), identity.clone(), tls));
    tracing::info!(listen = %addr, node_id = %identity.node_id, "serving rounds");
    custody_net::serve(listener, server, router(rounds, mover), shutdown).await;
    renewal.abort();
    if let Some(t) = locality {
        t.abort();
    }
    Ok(())
}

impl AsRef<Session> for Rounds {
    fn as_ref(&self) -> &Session {
        &self.session
    }
}

/// The move receiver, when `move_listen` is set: checkpoints from other enrolled nodes,
/// sealed to this boot's session key; and the sender the verifier drives.
fn spawn_mover(
    cfg: &AgentConfig,
    identity: &NodeIdentity,
    rounds: &Arc<Rounds>,
    tls: &Arc<ReloadableIdentity>,
) -> Result<Option<Arc<Mover>>, DaemonError> {
    let Some(addr) = cfg.move_listen_addr()? else {
        return Ok(None);
    };
    if identity.verifier_key.is_empty() {
        return Err(DaemonError::BadResponse {
            what: "Enrolled",
            reason: "the verifier sent no result key: moves need it to check tickets".into(),
        });
    }
    let listener = std::net::TcpListener::bind(addr).map_err(|e| DaemonError::Listen {
        addr: addr.to_string(),
        reason: e.to_string(),
    })?;
    let roots = custody_net::roots_from_pem(identity.ca_pem.as_bytes()).map_err(DaemonError::Tls)?;
    // The destination's role is checked after the handshake, against the ticket.
    let client =
        custody_net::client_config(roots, ClientCert::Reloadable(tls.clone())).map_err(DaemonError::Tls)?;
    let session: Arc<dyn AsRef<Session> + Send + Sync> = rounds.clone();
    let mover = Mover::new(
        identity.node_id.clone(),
        cfg.checkpoints_dir.clone(),
        identity.verifier_key.clone(),
        client,
        session,
    )
    .map_err(|e| state_err(&cfg.checkpoints_dir, e))?;
    let mover = Arc::new(mover);
    mover.serve(listener, identity.reloadable_server_config(tls.clone())?);
    if let Some(sock) = &cfg.admin_socket {
        mover.serve_admin(sock).map_err(|e| state_err(sock, e))?;
        tracing::info!(socket = %sock.display(), "admin socket: custody import");
    }
    tracing::info!(listen = %addr, dir = %cfg.checkpoints_dir.display(), "taking checkpoint moves");
    Ok(Some(mover))
}

/// The locality responder, when `locality_listen` is set: landmark challenges answered
/// with this boot's attested session key.
async fn spawn_locality(
    cfg: &AgentConfig,
    rounds: &Arc<Rounds>,
) -> Result<Option<tokio::task::JoinHandle<()>>, DaemonError> {
    let Some(addr) = cfg.locality_listen_addr()? else {
        return Ok(None);
    };
    let listener = TcpListener::bind(addr).await.map_err(|e| DaemonError::Listen {
        addr: addr.to_string(),
        reason: e.to_string(),
    })?;
    let session_pub = rounds.session().public_keys().ed25519;
    let r = Arc::clone(rounds);
    let signer: custody_locality::net::Signer = Arc::new(move |m: &[u8]| r.session().sign_challenge(m));
    let serve = custody_locality::net::serve(listener, signer, session_pub, std::future::pending());
    Ok(Some(tokio::spawn(serve)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_key_is_generated_private_and_reused() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("state");
        let k1 = TlsKey::load_or_generate(&dir).unwrap();
        let meta = std::fs::metadata(dir.join(TLS_KEY_FILE)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(
            std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let k2 = TlsKey::load_or_generate(&dir).unwrap();
        assert_eq!(k1.spki_der(), k2.spki_der());
        // SPKI DER of a P-256 key: SEQUENCE, 91 bytes.
        assert_eq!(k1.spki_der().len(), 91);
        assert!(!format!("{k1:?}").contains("PRIVATE"));
        // A key others can read is refused, not used.
        std::fs::set_permissions(dir.join(TLS_KEY_FILE), std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = TlsKey::load_or_generate(&dir).unwrap_err();
        assert_eq!(e.check(), "tls_key");
        assert!(e.to_string().contains("0640"), "{e}");
    }

    #[test]
    fn node_identity_must_match_the_key() {
        let d = tempfile::tempdir().unwrap();
        let key = TlsKey::load_or_generate(d.path()).unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
        let other = rcgen::KeyPair::generate().unwrap();
        let p = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        let wrong = p.signed_by(&other, &issuer).unwrap();
        let e = NodeIdentity::new("n1".into(), wrong.pem(), ca.pem(), key).unwrap_err();
        assert!(e.to_string().contains("not for this agent's TLS key"), "{e}");

        let key = TlsKey::load_or_generate(d.path()).unwrap();
        let spki = rcgen::SubjectPublicKeyInfo::from_der(key.spki_der()).unwrap();
        let right = p.signed_by(&spki, &issuer).unwrap();
        let e = NodeIdentity::new("bad id\n".into(), right.pem(), ca.pem(), key).unwrap_err();
        assert_eq!(e.check(), "node_cert");
        let key = TlsKey::load_or_generate(d.path()).unwrap();
        let id = NodeIdentity::new("n1".into(), right.pem(), ca.pem(), key).unwrap();
        id.store(d.path()).unwrap();
        let back = NodeIdentity::load(d.path()).unwrap();
        assert_eq!(back.node_id, "n1");
        assert_eq!(back.certificate_pem, right.pem());
        assert!(back.server_config().is_ok());
        assert!(!format!("{back:?}").contains("PRIVATE"));
    }

    #[test]
    fn content_type_and_failure_checks() {
        let mut h = HeaderMap::new();
        assert!(!is_cbor(&h));
        h.insert(header::CONTENT_TYPE, "application/CBOR; x=1".parse().unwrap());
        assert!(is_cbor(&h));
        h.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        assert!(!is_cbor(&h));
        let f = RoundFailure::Round(RoundError::Collect(CollectError::Failed {
            kind: "tpm",
            reason: "x".into(),
        }));
        assert_eq!(f.check(), "collect.tpm");
        assert_eq!(
            RoundFailure::Timeout(Duration::from_secs(1)).check(),
            "round_timeout"
        );
        assert_eq!(printable("a\nb\u{1b}[31m"), "a b [31m");
    }

    #[tokio::test]
    async fn unavailable_kinds_reach_the_platform_map() {
        let rounds = Arc::new(Rounds::new(
            Session::generate().unwrap(),
            vec![Arc::new(NotBuilt("snp")), Arc::new(NotBuilt("nvgpu"))],
            platform_facts("n1"),
            Duration::from_secs(5),
        ));
        let b = rounds.round(Nonce([5; 32])).await.unwrap();
        assert_eq!(b.nonce, Nonce([5; 32]));
        assert_eq!(b.session_keys, *rounds.session().public_keys());
        assert_eq!(b.platform["node_name"], "n1");
        assert_eq!(b.platform["agent_version"], env!("CARGO_PKG_VERSION"));
        assert!(b.platform["unavailable.snp"].contains("built without"));
        assert!(b.platform.contains_key("unavailable.nvgpu"));
    }
}
