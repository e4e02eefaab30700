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

mod enrollment;
mod serve;
mod state;
pub use enrollment::*;
pub use serve::*;
pub use state::*;

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
    let limits = custody_locality::net::Limits {
        added_delay: Duration::from_millis(cfg.locality_delay_ms),
        ..Default::default()
    };
    let serve =
        custody_locality::net::serve_with(listener, signer, session_pub, limits, std::future::pending());
    Ok(Some(tokio::spawn(serve)))
}

#[cfg(test)]
mod tests;
