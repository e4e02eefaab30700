//! `custody-verifier`, the service around the pure appraisal core:
//!
//! - enrollment: EK certificate chain to a manufacturer CA, AK proven to share the TPM
//!   by credential activation, then a node certificate from the verifier's CA ([`enroll`]);
//! - rounds: single-use nonces with a TTL, evidence pulled from the agent over mutual TLS
//!   (or pushed by it), decoded once and appraised by `custody-appraisal` (per-kind
//!   verifiers, reference values, registry, locality, Rego policy, an EAR signed as
//!   COSE_Sign1); the round commits the result and its audit entry ([`round`]);
//! - continuous attestation: every node re-attested on an interval; failing nodes move to
//!   `failed`, then `revoked`, with the reason stored and an event emitted ([`events`]);
//! - storage behind the [`store::Store`] trait (SQLite, WAL) and the audit log
//!   (`custody-audit`) in the same database file;
//! - the HTTP/2 API over rustls ([`api`]) with `/metrics` and an OpenAPI document.
#![forbid(unsafe_code)]

pub mod api;
mod collateral;
mod commit;
pub mod config;
pub mod deny;
pub mod enroll;
pub mod events;
pub mod metrics;
pub mod migrate;
pub mod nonce;
pub mod pki;
pub mod rate;
pub mod round;
pub mod store;

use config::Config;
use custody_audit::entry::{self, Entry};
use custody_audit::note::Signer;
use custody_net::{ClientAuth, HttpsClient};
use custody_verifier::ear::EarSigningKey;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use store::{SqliteStore, Store};
use thiserror::Error;

/// The verifier's clients to agents: one pooled client per node id, each accepting only
/// a server whose certificate is `node:<that id>`, so a node's certificate at another
/// node's endpoint gets no round, no nonce and no move order.
#[derive(Debug)]
pub struct AgentClients {
    roots: rustls::RootCertStore,
    identity: custody_net::Identity,
    timeout: Duration,
    clients: Mutex<std::collections::HashMap<String, HttpsClient>>,
}

impl AgentClients {
    pub fn new(
        roots: rustls::RootCertStore,
        identity: custody_net::Identity,
        timeout: Duration,
    ) -> Result<Self, ServiceError> {
        // Built once here so a bad identity fails at start, not at the first round.
        custody_net::client_config_for_role(roots.clone(), Some(identity.clone()), "node:check")?;
        Ok(Self {
            roots,
            identity,
            timeout,
            clients: Mutex::default(),
        })
    }

    /// The client that calls node `id`.
    pub fn for_node(&self, id: &str) -> Result<HttpsClient, custody_net::NetError> {
        let mut m = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = m.get(id) {
            return Ok(c.clone());
        }
        let tls = custody_net::client_config_for_role(
            self.roots.clone(),
            Some(self.identity.clone()),
            &format!("node:{id}"),
        )?;
        let c = HttpsClient::new(tls, self.timeout, custody_formats::bundle::MAX_BUNDLE_LEN);
        m.insert(id.to_owned(), c.clone());
        Ok(c)
    }

    /// Drop a removed node's client (and its pooled connections).
    pub fn forget(&self, id: &str) {
        self.clients.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }
}

/// Fault injection for crash tests: with `CUSTODY_FAULT=NAME` in the environment the
/// process aborts at the point named NAME (`abort_before_commit`: inside a decision's
/// transaction after its writes, before the commit). Unset in production: a no-op.
pub(crate) fn fault_point(name: &str) {
    if std::env::var_os("CUSTODY_FAULT").is_some_and(|v| v == name) {
        tracing::error!(fault = name, "CUSTODY_FAULT: aborting");
        std::process::abort();
    }
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[derive(Debug, Error)]
pub enum ServiceError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
    #[error(transparent)]
    Net(#[from] custody_net::NetError),
    #[error("audit log: {0}")]
    Audit(String),
    #[error("policy: {0}")]
    Policy(#[from] custody_policy::PolicyError),
    #[error("key file {path}: {reason}")]
    Key { path: String, reason: String },
    #[error("EK CA directory {path}: {reason}")]
    EkCas { path: String, reason: String },
    #[error("verifier core: {0}")]
    Core(String),
    #[error("no node `{0}`")]
    NoNode(String),
    /// A round with this node is already running (pulled or pushed): rounds of one node
    /// are serialised, so a pass cannot race a failure that revokes.
    #[error("busy: {0}")]
    Busy(String),
    /// An operator's request was refused; `check` names why.
    #[error("{check}: {detail}")]
    Refused { check: &'static str, detail: String },
    /// A registry was refused; `check` names why (`registry_signature`, `registry_version`, ...).
    #[error("{check}: {detail}")]
    Registry { check: &'static str, detail: String },
}

/// Everything a request handler or the scheduler needs.
#[derive(Debug)]
pub struct Service {
    pub cfg: Config,
    pub store: Arc<dyn Store>,
    pub pki: pki::Pki,
    pub appraiser: round::Appraiser,
    pub ear_key: EarSigningKey,
    audit: Mutex<custody_audit::store::Store>,
    log_signer: Signer,
    pub nonces: nonce::Nonces,
    /// Nonces a node asks for itself, and bundles it pushes, per minute
    /// (`push_rounds_per_minute` each): garbage is recorded, but not without bound.
    pub push_nonces: rate::PerNode,
    pub pushes: rate::PerNode,
    pub enrollments: enroll::Pending,
    /// TPM manufacturer CA certificates (DER).
    pub ek_cas: Vec<Vec<u8>>,
    /// Asks agents for evidence, presenting the `verifier` identity.
    pub agents: AgentClients,
    pub events: events::Emitter,
    pub metrics: metrics::Metrics,
    /// Signs this verifier's locality statements when it acts as a landmark.
    pub landmark_key: custody_locality::LandmarkKey,
    /// Registry authority keys: only registries they signed are adopted.
    pub authorities: Vec<custody_registry::signed::AuthorityKey>,
    /// One round per node at a time: a scheduled round and `custody attest` don't race.
    pub in_flight: Mutex<std::collections::HashSet<String>>,
    /// Migrations since this process started (the audit log keeps them all).
    pub migrations: migrate::Migrations,
    /// See [`Service::db_writes`].
    db_writes: Mutex<()>,
    /// Concluded rounds waiting for the writer thread's next group commit ([`commit`]).
    commits: Arc<commit::Queue>,
    /// The signed deny list for agents ([`deny`]), and whether it changed since the last push.
    deny: Mutex<deny::DenyCache>,
    deny_dirty: std::sync::atomic::AtomicBool,
}

impl Drop for Service {
    fn drop(&mut self) {
        // The writer thread answers what is queued, then ends.
        self.commits.close();
    }
}

fn load_or_create_key<T>(
    path: &Path,
    load: impl FnOnce(&[u8]) -> Result<T, String>,
    create: impl FnOnce() -> Result<(T, Vec<u8>), String>,
) -> Result<T, ServiceError> {
    let err = |reason: String| ServiceError::Key {
        path: path.display().to_string(),
        reason,
    };
    if path.exists() {
        let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        load(&bytes).map_err(err)
    } else {
        let (key, bytes) = create().map_err(err)?;
        pki::write_file(path, &bytes, true)?;
        Ok(key)
    }
}

/// Every certificate (PEM or DER) in the files of `dir`.
pub fn load_ek_cas(dir: &Path) -> Result<Vec<Vec<u8>>, ServiceError> {
    let err = |reason: String| ServiceError::EkCas {
        path: dir.display().to_string(),
        reason,
    };
    let mut out = Vec::new();
    let rd = std::fs::read_dir(dir).map_err(|e| err(e.to_string()))?;
    let mut paths: Vec<_> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    for p in paths {
        let bytes = std::fs::read(&p).map_err(|e| err(format!("{}: {e}", p.display())))?;
        if bytes.starts_with(b"-----BEGIN") {
            let certs =
                custody_net::certs_from_pem(&bytes).map_err(|e| err(format!("{}: {e}", p.display())))?;
            out.extend(certs.into_iter().map(|c| c.as_ref().to_vec()));
        } else {
            out.push(bytes);
        }
    }
    if out.is_empty() {
        return Err(err(
            "no CA certificate found: EK certificates could never verify".into()
        ));
    }
    Ok(out)
}

impl Service {
    /// Open (creating on first start) the data directory: CA, EAR key, log key, database.
    pub fn open(cfg: Config) -> Result<Arc<Self>, ServiceError> {
        cfg.validate()?;
        std::fs::create_dir_all(&cfg.data_dir).map_err(|e| ServiceError::Key {
            path: cfg.data_dir.display().to_string(),
            reason: e.to_string(),
        })?;
        let pki = pki::Pki::open(&cfg.data_dir)?;
        let ear_key = load_or_create_key(
            &cfg.data_dir.join("ear-key.pk8"),
            |b| EarSigningKey::from_pkcs8(b).map_err(|e| e.to_string()),
            || {
                let k = EarSigningKey::generate().map_err(|e| e.to_string())?;
                let b = k.to_pkcs8().map_err(|e| e.to_string())?;
                Ok((k, b))
            },
        )?;
        // The log key is separate from the EAR key: a leaked EAR key cannot rewrite history.
        let log_signer = load_or_create_key(
            &cfg.data_dir.join("log-key"),
            |b| {
                let s = std::str::from_utf8(b).map_err(|e| e.to_string())?;
                Signer::parse(s.trim()).map_err(|e| e.to_string())
            },
            || {
                let s = Signer::generate("custody-verifier").map_err(|e| e.to_string())?;
                let b = s.to_private_key_string().map_err(|e| e.to_string())?.into_bytes();
                Ok((s, b))
            },
        )?;
        let landmark_key = load_or_create_key(
            &cfg.data_dir.join("landmark-key.pk8"),
            |b| custody_locality::LandmarkKey::from_pkcs8(b).map_err(|e| e.to_string()),
            || custody_locality::LandmarkKey::generate().map_err(|e| e.to_string()),
        )?;
        pki::write_file(
            &cfg.data_dir.join("log-key.pub"),
            format!("{}\n", log_signer.verifier().to_key_string()).as_bytes(),
            false,
        )?;
        pki::write_file(
            &cfg.data_dir.join("ear-key.jwk"),
            ear_key.public_key().to_jwk().as_bytes(),
            false,
        )?;
        let db = cfg.db_path();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&db)?);
        let audit = custody_audit::store::Store::open(&db).map_err(|e| ServiceError::Audit(e.to_string()))?;
        let ek_cas = load_ek_cas(&cfg.ek_ca_dir)?;
        let policy = load_policy(&cfg)?;
        let roots = custody_net::roots_from_pem(pki.ca_pem().as_bytes())?;
        let agents = AgentClients::new(
            roots,
            pki.client_identity()?,
            Duration::from_secs(cfg.round_timeout_secs),
        )?;
        let events = events::Emitter::new(&cfg)?;
        let mut appraiser = round::Appraiser::new(policy).map_err(|e| ServiceError::Core(e.to_string()))?;
        appraiser.landmarks.own = vec![landmark_key.public_key()];
        appraiser.landmarks.tolerance_km = cfg.locality_tolerance_km;
        appraiser.min_pcrs = cfg
            .min_pcrs
            .iter()
            .map(|(bank, pcrs)| (bank.clone(), pcrs.iter().copied().collect()))
            .collect();
        appraiser.landmarks.remote = cfg
            .landmarks
            .iter()
            .map(config::RemoteLandmark::pinned)
            .collect::<Result<_, _>>()?;
        if let Some(dir) = &cfg.gpu_rims {
            let roots =
                custody_verifier::x509::TrustAnchor::from_pem_or_der(custody_verifier::nvgpu::RIM_ROOT_PEM)
                    .map_err(|e| ServiceError::Core(format!("NVIDIA RIM root: {e}")))?;
            let lib = custody_verifier::rim::library::RimLibrary::load_dir(
                dir,
                &roots,
                custody_verifier::check::UnixTime(now()),
            )
            .map_err(|e| ServiceError::Core(format!("gpu_rims: {e}")))?;
            tracing::info!(dir = %dir.display(), rims = lib.len(), "NVIDIA RIM library loaded");
            appraiser.gpu_rims = Some(lib);
        }
        let read = |what: &str, p: &std::path::Path| {
            std::fs::read(p).map_err(|e| ServiceError::Core(format!("{what} {}: {e}", p.display())))
        };
        if let Some(p) = &cfg.snp.test_ark {
            appraiser
                .trust_snp_test_ark(&read("snp.test_ark", p)?)
                .map_err(|e| ServiceError::Core(format!("snp.test_ark {}: {e}", p.display())))?;
            tracing::warn!(path = %p.display(), "snp.test_ark: a TEST root is trusted for SEV-SNP reports (tests only)");
        }
        if let Some(p) = &cfg.nvgpu.test_root {
            appraiser
                .trust_gpu_test_root(&read("nvgpu.test_root", p)?)
                .map_err(|e| ServiceError::Core(format!("nvgpu.test_root {}: {e}", p.display())))?;
            tracing::warn!(path = %p.display(), "nvgpu.test_root: a TEST root is trusted for NVIDIA GPU reports (tests only)");
        }
        if !cfg.snp.crls.is_empty() {
            let mut crls = Vec::new();
            for p in &cfg.snp.crls {
                crls.push(
                    custody_verifier::crl::Crl::parse(&read("snp.crls", p)?)
                        .map_err(|e| ServiceError::Core(format!("snp.crls {}: {e}", p.display())))?,
                );
            }
            appraiser.use_snp_crls(crls, i64::from(cfg.snp.crl_grace_days) * 86_400);
            tracing::info!(crls = cfg.snp.crls.len(), "AMD CRLs loaded for SEV-SNP chains");
        }
        appraiser.snp_reference = cfg.snp.values()?;
        appraiser.use_tdx(load_tdx(&cfg.tdx)?);
        let authorities = load_authorities(&cfg)?;
        let svc = Arc::new(Self {
            nonces: nonce::Nonces::new(Duration::from_secs(cfg.nonce_ttl_secs)),
            push_nonces: rate::PerNode::new(cfg.push_rounds_per_minute, Duration::from_secs(60)),
            pushes: rate::PerNode::new(cfg.push_rounds_per_minute, Duration::from_secs(60)),
            enrollments: enroll::Pending::default(),
            cfg,
            store,
            pki,
            appraiser,
            ear_key,
            audit: Mutex::new(audit),
            log_signer,
            ek_cas,
            agents,
            events,
            metrics: metrics::Metrics::default(),
            landmark_key,
            authorities,
            in_flight: Mutex::new(Default::default()),
            migrations: migrate::Migrations::default(),
            db_writes: Mutex::new(()),
            commits: Arc::default(),
            deny: Mutex::default(),
            deny_dirty: std::sync::atomic::AtomicBool::new(false),
        });
        commit::start(&svc).map_err(|e| ServiceError::Core(format!("cannot start the round writer: {e}")))?;
        svc.load_registry()?;
        svc.note_policy()?;
        Ok(svc)
    }

    /// Adopt the newest registry that verifies: the configured file or the last one
    /// uploaded, whichever has the higher version (a restart never goes back).
    fn load_registry(&self) -> Result<(), ServiceError> {
        if let Some(path) = &self.cfg.registry {
            let bytes = std::fs::read(path).map_err(|e| ServiceError::Registry {
                check: "registry_format",
                detail: format!("{}: {e}", path.display()),
            })?;
            self.adopt_registry(&bytes, false)?;
        }
        if let Some(stored) = self.store.latest_registry()? {
            if !self.authorities.is_empty() {
                self.adopt_registry(&stored.body, false)?;
            }
        }
        Ok(())
    }

    /// Verify a signed registry against the configured authorities and put it in force if
    /// its version is newer than the one in force. `strict`: an upload, which must be
    /// newer (an equal version with the same bytes is accepted as already in force).
    pub fn adopt_registry(
        &self,
        bytes: &[u8],
        strict: bool,
    ) -> Result<Arc<custody_registry::signed::VerifiedRegistry>, ServiceError> {
        let refuse = |e: custody_registry::RegistryError| ServiceError::Registry {
            check: e.check(),
            detail: e.to_string(),
        };
        let v = Arc::new(
            custody_registry::signed::SignedRegistry::verify(bytes, &self.authorities).map_err(refuse)?,
        );
        let mut slot = self
            .appraiser
            .registry
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(cur) = slot.as_ref() {
            if cur.version() == v.version() && cur.digest() == v.digest() {
                return Ok(cur.clone());
            }
            if v.version() <= cur.version() {
                if strict {
                    return Err(ServiceError::Registry {
                        check: "registry_version",
                        detail: format!(
                            "version {} is not newer than version {} in force",
                            v.version(),
                            cur.version()
                        ),
                    });
                }
                return Ok(cur.clone());
            }
        }
        let previous = slot.as_ref().map(|c| c.version());
        let r = v.registry();
        let entry = Entry::RegistryChange(entry::RegistryEntry {
            version: v.version(),
            previous,
            digest: v.digest().to_owned(),
            kid: v.kid().to_owned(),
            authority: r.authority.clone(),
            entities: r.entities.len(),
            sites: r.sites.len(),
            hardware: r.hardware.len(),
            at: now(),
            places: Some(places(&v)),
        });
        let record = store::RegistryRecord {
            version: v.version(),
            digest: v.digest().to_owned(),
            kid: v.kid().to_owned(),
            body: bytes.to_vec(),
            loaded_at: now(),
        };
        // A new version and its entry commit together; the stored version put back in
        // force at start is logged as such (it was decided before).
        let stored = self
            .decide(store::Decision::Registry(&record), std::slice::from_ref(&entry))
            .map_err(|e| match e {
                ServiceError::Store(store::StoreError::Conflict(d)) => ServiceError::Registry {
                    check: "registry_version",
                    detail: d,
                },
                other => other,
            })?;
        *slot = Some(v.clone());
        drop(slot);
        if !stored && previous.is_none_or(|p| p < v.version()) {
            self.log(entry);
        }
        if previous.is_none_or(|p| p < v.version()) {
            tracing::info!(version = v.version(), digest = v.digest(), "registry adopted");
        }
        Ok(v)
    }

    /// Log the policy in force when it differs from the one the last start used.
    fn note_policy(&self) -> Result<(), ServiceError> {
        let p = &self.appraiser.policy;
        let last = self.store.setting("policy_digest")?;
        if last.as_deref() != Some(p.digest()) {
            let entry = Entry::PolicyChange(entry::PolicyEntry::Policy(entry::PolicyInForce {
                policy_id: p.id().into(),
                policy_digest: p.digest().into(),
                previous_digest: last,
                at: now(),
            }));
            self.decide(
                store::Decision::Setting {
                    key: "policy_digest",
                    value: p.digest(),
                },
                &[entry],
            )?;
        }
        Ok(())
    }

    /// Taken around the round's store write and every audit write (appends,
    /// checkpoints). The store and the audit log are two SQLite
    /// connections to one file; when they meet at SQLite's write lock, the loser sleeps
    /// in SQLite's busy handler (1 ms, then longer), which left CPU idle under load.
    /// Queued here instead, a writer wakes as soon as the other is done.
    pub(crate) fn db_writes(&self) -> MutexGuard<'_, ()> {
        self.db_writes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Record a concluded round (the node's new state and its result) and append its
    /// audit entry, through the writer thread's group commit ([`commit`]); blocks until
    /// it is written. Returns the result id; [`store::StoreError::NodeGone`] for a node
    /// removed while the round ran (its entry is then not appended). Must not be called
    /// while holding the write gate (the writer needs it).
    pub(crate) fn commit_round(&self, write: commit::RoundWrite) -> Result<i64, ServiceError> {
        let (done, outcome) = std::sync::mpsc::sync_channel(1);
        self.queue_round(write, commit::Done::Blocking(done))?;
        outcome
            .recv()
            .map_err(|_| ServiceError::Core("the round's group commit was lost".into()))?
            .map_err(ServiceError::from)
    }

    /// [`Service::commit_round`] for async callers: the calling thread is free while the
    /// writer works.
    pub(crate) async fn commit_round_async(&self, write: commit::RoundWrite) -> Result<i64, ServiceError> {
        let (done, outcome) = tokio::sync::oneshot::channel();
        self.queue_round(write, commit::Done::Async(done))?;
        outcome
            .await
            .map_err(|_| ServiceError::Core("the round's group commit was lost".into()))?
            .map_err(ServiceError::from)
    }

    fn queue_round(&self, write: commit::RoundWrite, done: commit::Done) -> Result<(), ServiceError> {
        self.commits
            .push(commit::Queued { write, done })
            .map_err(|_| ServiceError::Core("the verifier is shutting down: round not recorded".into()))
    }

    /// One group commit; the caller holds the write gate. The rounds' results and their
    /// audit entries commit in one transaction: a round is recorded with its entries or
    /// not at all, and a failed append fails every round of the batch.
    pub(crate) fn write_rounds(&self, batch: Vec<commit::Queued>) {
        if batch.is_empty() {
            return;
        }
        let rounds: Vec<store::RoundRows<'_>> = batch
            .iter()
            .map(|q| (&q.write.node, &q.write.record, q.write.audit.as_slice()))
            .collect();
        let outcomes = match self.store.record_rounds(&rounds, &mut self.audit()) {
            Ok(o) => o,
            Err(e) => {
                if matches!(e, store::StoreError::Audit(_)) {
                    self.metrics
                        .audit_errors
                        .fetch_add(rounds.len() as u64, std::sync::atomic::Ordering::Relaxed);
                }
                tracing::error!(rounds = batch.len(), error = %e, "group commit of rounds failed: none recorded");
                let e = e.to_string();
                rounds
                    .iter()
                    .map(|_| Err(store::StoreError::GroupCommit(e.clone())))
                    .collect()
            }
        };
        drop(rounds);
        self.metrics.observe_group_commit(batch.len());
        // One outcome per round is the store's contract; a round it left out gets an error.
        let mut outcomes = outcomes.into_iter();
        for q in batch {
            let outcome = outcomes.next().unwrap_or_else(|| {
                Err(store::StoreError::Corrupt(
                    "the store gave no outcome for a round".into(),
                ))
            });
            q.done.send(outcome);
        }
    }

    pub(crate) fn audit(&self) -> MutexGuard<'_, custody_audit::store::Store> {
        // Appends are single transactions; a poisoned lock holds a consistent log.
        self.audit.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A node by id, else by name.
    pub fn find_node(&self, key: &str) -> Result<store::NodeRecord, ServiceError> {
        if let Some(n) = self.store.node(key)? {
            return Ok(n);
        }
        self.store
            .node_by_name(key)?
            .ok_or_else(|| ServiceError::NoNode(key.into()))
    }

    /// Remove a node on an operator's word: it is no longer attested, its TLS
    /// certificate no longer reaches any route that needs a node, and its TPM may enroll
    /// again (a revoked node's only way back). Results and events stay as history; the
    /// audit log records who removed it and why.
    pub fn remove_node(&self, key: &str, reason: &str, by: &str) -> Result<store::NodeRecord, ServiceError> {
        let node = self.find_node(key)?;
        let entry = Entry::Revocation(entry::RevocationEntry {
            node: node.id.clone(),
            name: node.name.clone(),
            at: now(),
            action: Some(entry::RevocationAction::Removed),
            reason: Some(reason.to_owned()),
            failed_check: None,
            state: Some(node.state.as_str().into()),
            by: Some(by.to_owned()),
            ek_cert_sha256: node.ek_cert_sha256.clone(),
        });
        // The removal and its entry commit together: an unlogged removal does not happen.
        let removed = {
            let _gate = self.db_writes();
            self.store.remove_node(&node.id, &entry, &mut self.audit())?
        };
        if !removed {
            return Err(ServiceError::NoNode(key.into()));
        }
        self.agents.forget(&node.id);
        self.deny_changed();
        self.metrics
            .removals
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.emit(
            &node,
            "removed",
            serde_json::json!({"previous": node.state.as_str(), "reason": reason, "by": by}),
        )?;
        Ok(node)
    }

    /// Approve the pending baseline of `group` (learnt under `reference = "tofu-approve"`).
    pub fn approve_reference(&self, group: &str, by: &str) -> Result<store::Reference, ServiceError> {
        let Some(mut r) = self.store.reference(group)? else {
            return Err(ServiceError::Refused {
                check: "reference_values",
                detail: format!("group `{group}` has no reference values to approve"),
            });
        };
        if !r.pending {
            return Err(ServiceError::Refused {
                check: "reference_values",
                detail: format!(
                    "the reference values of group `{group}` are not pending (source `{}`)",
                    r.source
                ),
            });
        }
        r.pending = false;
        r.source = store::ReferenceSource::Approved;
        let entry = Entry::PolicyChange(entry::PolicyEntry::ReferenceValues(entry::ReferenceChange {
            reference_values: group.to_owned(),
            source: "approved".into(),
            learned_from: r.learned_from.clone(),
            by: Some(by.to_owned()),
            at: now(),
            pcrs: r.pcrs.clone(),
        }));
        self.decide(store::Decision::Reference { group, reference: &r }, &[entry])?;
        Ok(r)
    }

    /// Propose as `group`'s baseline the PCRs of `node`'s latest round whose TPM quote
    /// verified (whatever the comparison with the values in force said: learning after
    /// an image update is the point). It decides nothing until `approve_reference`.
    pub fn learn_reference(
        &self,
        group: &str,
        node: &str,
        by: &str,
    ) -> Result<store::Reference, ServiceError> {
        check_group_name(group)?;
        let n = self.find_node(node)?;
        let refuse = |detail: String| ServiceError::Refused {
            check: "reference_learn",
            detail,
        };
        let r = self
            .store
            .latest_result(&n.id)?
            .ok_or_else(|| refuse(format!("node `{}` has no round yet", n.name)))?;
        let pcrs = quoted_pcrs(r.input.as_deref()).ok_or_else(|| {
            refuse(format!(
                "node `{}`'s latest round has no verified TPM quote",
                n.name
            ))
        })?;
        let reference = store::Reference {
            pcrs,
            source: store::ReferenceSource::Tofu,
            at: now(),
            learned_from: Some(n.id.clone()),
            pending: true,
        };
        let entry = Entry::PolicyChange(entry::PolicyEntry::ReferenceValues(entry::ReferenceChange {
            reference_values: group.to_owned(),
            source: "proposed".into(),
            learned_from: Some(n.id.clone()),
            by: Some(by.to_owned()),
            at: reference.at,
            pcrs: reference.pcrs.clone(),
        }));
        self.decide(
            store::Decision::Reference {
                group,
                reference: &reference,
            },
            &[entry],
        )?;
        Ok(reference)
    }

    /// Remove `group`'s reference values; its next round learns or fails by the
    /// configured `reference` mode.
    pub fn remove_reference(&self, group: &str, by: &str) -> Result<(), ServiceError> {
        let entry = Entry::PolicyChange(entry::PolicyEntry::ReferenceValues(entry::ReferenceChange {
            reference_values: group.to_owned(),
            source: "removed".into(),
            learned_from: None,
            by: Some(by.to_owned()),
            at: now(),
            pcrs: Default::default(),
        }));
        if self.decide(store::Decision::RemoveReference { group }, &[entry])? {
            Ok(())
        } else {
            Err(ServiceError::Refused {
                check: "reference_values",
                detail: format!("group `{group}` has no reference values"),
            })
        }
    }

    /// Move a node to another reference-value group (its next round compares against
    /// that group's values).
    pub fn set_group(&self, key: &str, group: &str, by: &str) -> Result<store::NodeRecord, ServiceError> {
        check_group_name(group)?;
        let node = self.find_node(key)?;
        let entry = Entry::PolicyChange(entry::PolicyEntry::Group(entry::GroupChange {
            node: node.id.clone(),
            name: node.name.clone(),
            group: group.to_owned(),
            previous_group: node.group.clone(),
            by: by.to_owned(),
            at: now(),
        }));
        if !self.decide(store::Decision::Group { id: &node.id, group }, &[entry])? {
            return Err(ServiceError::NoNode(key.into()));
        }
        self.emit(
            &node,
            "group_changed",
            serde_json::json!({"group": group, "previous": node.group, "by": by}),
        )?;
        self.find_node(&node.id)
    }

    /// Apply a decision with its audit entries in one transaction ([`store::Store::decide`]):
    /// one that cannot be logged is not made.
    pub fn decide(
        &self,
        d: store::Decision<'_>,
        entries: &[custody_audit::Entry],
    ) -> Result<bool, ServiceError> {
        let r = {
            let _gate = self.db_writes();
            self.store.decide(d, entries, &mut self.audit())
        };
        if let Err(e) = &r {
            self.metrics
                .audit_errors
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::error!(error = %e, "a decision and its audit entry could not be written");
        }
        Ok(r?)
    }

    /// Append an entry that records an observation, not a decision of the verifier's
    /// (a refused migration, an export written, a policy re-stated at start; see
    /// docs/threat-model.md). A failure is logged and counted; decisions (enrollments,
    /// rounds, revocations, removals, reference values, groups, registries, tickets) go
    /// through the store with their entry instead and fail when it cannot be written.
    pub fn log(&self, entry: custody_audit::Entry) {
        let kind = entry.kind();
        let appended = {
            let _gate = self.db_writes();
            self.audit().append(&entry)
        };
        if let Err(e) = appended {
            self.metrics
                .audit_errors
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::error!(kind, error = %e, "audit append failed");
        }
    }

    /// Sign a checkpoint if the log grew since the last one.
    pub fn checkpoint(&self) -> Result<Option<String>, ServiceError> {
        let _gate = self.db_writes();
        let mut a = self.audit();
        let last = a
            .checkpoints()
            .map_err(|e| ServiceError::Audit(e.to_string()))?
            .last()
            .map(|(size, _)| *size);
        let covered = |m: &metrics::Metrics| {
            m.last_checkpoint_at
                .store(now(), std::sync::atomic::Ordering::Relaxed)
        };
        if last == Some(a.size()) || a.size() == 0 {
            covered(&self.metrics);
            return Ok(None);
        }
        let signed = a
            .checkpoint(&self.log_signer)
            .map_err(|e| ServiceError::Audit(e.to_string()))?;
        covered(&self.metrics);
        Ok(Some(signed))
    }

    /// Entries in the audit log.
    pub fn audit_size(&self) -> u64 {
        self.audit().size()
    }

    pub fn log_public_key(&self) -> String {
        self.log_signer.verifier().to_key_string()
    }

    /// TLS for the API: the verifier's certificate, client certificates optional at the
    /// handshake (enrollment has none yet) and checked per route.
    pub fn tls(&self) -> Result<Arc<rustls::ServerConfig>, ServiceError> {
        let roots = custody_net::roots_from_pem(self.pki.ca_pem().as_bytes())?;
        Ok(custody_net::server_config(
            self.pki.server_identity(&self.cfg.server_names)?,
            ClientAuth::Optional(roots),
        )?)
    }
}

/// Run the service until `shutdown` resolves: API listener, continuous attestation,
/// checkpoints.
pub async fn run(
    svc: Arc<Service>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServiceError> {
    let tls = svc.tls()?;
    let router = api::router(svc.clone());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let scheduler = tokio::spawn(round::schedule(svc.clone(), stop_rx.clone()));
    let checkpoints = tokio::spawn(checkpoint_loop(svc.clone(), stop_rx.clone()));
    let tdx = tokio::spawn(tdx_collateral_loop(svc.clone(), stop_rx.clone()));
    let deny = tokio::spawn(deny::push_loop(svc.clone(), stop_rx));
    svc.resume_migrations();
    tracing::info!(addr = ?listener.local_addr().ok(), "custody-verifier listening");
    let limits = svc.cfg.limits.serve_limits();
    tracing::info!(?limits, "listener limits");
    custody_net::serve_with(listener, tls, router, limits, shutdown).await;
    let _ = stop_tx.send(true);
    let _ = scheduler.await;
    let _ = checkpoints.await;
    let _ = deny.await;
    let _ = tdx.await;
    // A final checkpoint so everything appended is covered by a signature.
    if let Err(e) = svc.checkpoint() {
        tracing::error!(error = %e, "final checkpoint failed");
    }
    Ok(())
}

async fn checkpoint_loop(svc: Arc<Service>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(svc.cfg.checkpoint_secs.max(1)));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let s = svc.clone();
        match tokio::task::spawn_blocking(move || s.checkpoint()).await {
            Ok(Ok(Some(_))) => tracing::debug!("checkpoint signed"),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "checkpoint failed"),
            Err(e) => tracing::error!(error = %e, "checkpoint task failed"),
        }
    }
}

/// The configured policy: a shipped one by name or a Rego file by path, with its data.
fn load_policy(cfg: &Config) -> Result<custody_policy::Policy, ServiceError> {
    load_policy_named(cfg, None)
}

/// `name` (a shipped policy or a Rego file) with the configured data; the configured
/// policy when `None`.
pub(crate) fn load_policy_named(
    cfg: &Config,
    name: Option<&str>,
) -> Result<custody_policy::Policy, ServiceError> {
    let read = |p: &std::path::Path| {
        std::fs::read_to_string(p).map_err(|e| ServiceError::Key {
            path: p.display().to_string(),
            reason: e.to_string(),
        })
    };
    let data = match &cfg.policy_data {
        Some(p) => {
            Some(
                serde_json::from_str::<serde_json::Value>(&read(p)?).map_err(|e| ServiceError::Key {
                    path: p.display().to_string(),
                    reason: format!("not JSON: {e}"),
                })?,
            )
        }
        None => None,
    };
    let name = name.or(cfg.policy.as_deref()).unwrap_or("default");
    let shipped = custody_policy::SHIPPED.iter().any(|(n, _)| *n == name);
    let policy = match (shipped, data) {
        (true, None) => custody_policy::Policy::shipped(name)?,
        (true, Some(d)) => custody_policy::Policy::shipped_with_data(name, d)?,
        (false, data) => {
            let path = std::path::Path::new(name);
            let id = path.file_stem().and_then(|s| s.to_str()).unwrap_or("policy");
            let text = read(path)?;
            match data {
                Some(d) => custody_policy::Policy::with_data(id, &text, d)?,
                None => custody_policy::Policy::new(id, &text)?,
            }
        }
    };
    Ok(policy)
}

/// `[tdx]`: the verifier (Intel's root, or a test root), the collateral directory's six
/// files, the reference values. No collateral, no setup: TDX quotes then fail at
/// `tdx.collateral`.
fn load_tdx(cfg: &config::TdxConfig) -> Result<Option<custody_appraisal::TdxSetup>, ServiceError> {
    use custody_verifier::tdx::TdxVerifier;
    let reference = cfg.values()?;
    let Some(dir) = &cfg.collateral else {
        if cfg.test_root.is_some() || reference.is_some() {
            return Err(ServiceError::Core(
                "`[tdx]` settings need `tdx.collateral` (the Intel PCS collateral directory)".into(),
            ));
        }
        return Ok(None);
    };
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| ServiceError::Core(format!("tdx {}: {e}", p.display())))
    };
    let verifier = match &cfg.test_root {
        Some(p) => {
            tracing::warn!(path = %p.display(), "tdx.test_root: a TEST root replaces Intel's for TDX quotes (tests only)");
            TdxVerifier::with_root(&read(p)?)
        }
        None => TdxVerifier::new(),
    }
    .map_err(|e| ServiceError::Core(format!("tdx root: {e}")))?;
    let sets = collateral::load(dir).map_err(|e| ServiceError::Core(format!("tdx.collateral: {e}")))?;
    tracing::info!(dir = %dir.display(), sets = %collateral::describe(&sets), "Intel TDX collateral loaded");
    Ok(Some(custody_appraisal::TdxSetup::new(
        verifier,
        sets,
        reference,
        cfg.allow_debug,
    )))
}

/// Re-read `[tdx] collateral` when its files change (every `collateral_check_secs`): the
/// newer sets go in force whole; a directory that does not load leaves the old ones.
async fn tdx_collateral_loop(svc: Arc<Service>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let (Some(dir), Some(_)) = (svc.cfg.tdx.collateral.clone(), svc.appraiser.tdx()) else {
        return;
    };
    if svc.cfg.tdx.collateral_check_secs == 0 {
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_secs(svc.cfg.tdx.collateral_check_secs));
    let mut seen = collateral::fingerprint(&dir).ok();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let d = dir.clone();
        let Ok(now) = tokio::task::spawn_blocking(move || collateral::fingerprint(&d)).await else {
            continue;
        };
        if now.as_ref().ok() == seen.as_ref() {
            continue;
        }
        seen = now.ok();
        let d = dir.clone();
        match tokio::task::spawn_blocking(move || collateral::load(&d)).await {
            Ok(Ok(sets)) => {
                tracing::info!(dir = %dir.display(), sets = %collateral::describe(&sets), "Intel TDX collateral reloaded");
                if let Some(t) = svc.appraiser.tdx() {
                    t.replace_collateral(sets);
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "Intel TDX collateral not reloaded: the sets in force stay")
            }
            Err(e) => tracing::error!(error = %e, "TDX collateral task failed"),
        }
    }
}

/// The registry authorities' public keys (PEM files).
fn load_authorities(cfg: &Config) -> Result<Vec<custody_registry::signed::AuthorityKey>, ServiceError> {
    cfg.registry_authorities
        .iter()
        .map(|p| {
            let err = |reason: String| ServiceError::Key {
                path: p.display().to_string(),
                reason,
            };
            let pem = std::fs::read_to_string(p).map_err(|e| err(e.to_string()))?;
            custody_registry::signed::AuthorityKey::from_pem(&pem).map_err(|e| err(e.to_string()))
        })
        .collect()
}

/// Group names: 1-64 characters of A-Z a-z 0-9 . _ -.
fn check_group_name(group: &str) -> Result<(), ServiceError> {
    let valid = (1..=64).contains(&group.len())
        && group
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if valid {
        Ok(())
    } else {
        Err(ServiceError::Refused {
            check: "group",
            detail: "group names are 1-64 characters of A-Z a-z 0-9 . _ -".into(),
        })
    }
}

/// The quoted PCRs of a stored policy input whose TPM quote verified: it passed, or it
/// failed only the comparison with the values in force (what learning after an image
/// update is for). A quote refused for its clock or its PCR selection teaches nothing.
fn quoted_pcrs(
    input: Option<&str>,
) -> Option<std::collections::BTreeMap<String, std::collections::BTreeMap<u32, String>>> {
    #[derive(serde::Deserialize)]
    struct Quoted {
        pcrs: std::collections::BTreeMap<String, std::collections::BTreeMap<u32, String>>,
    }
    let input: custody_policy::input::PolicyInput = serde_json::from_str(input?).ok()?;
    let tpm = input.devices.get("tpm").filter(|d| {
        d.verified
            || matches!(
                d.failed_check.as_deref(),
                Some("reference_values" | round::REFERENCE_PENDING)
            )
    })?;
    let q: Quoted = serde_json::from_value(tpm.claims.clone()).ok()?;
    (!q.pcrs.is_empty()).then_some(q.pcrs)
}

/// What the log keeps of a registry's places: sites with their operator's derived
/// exposure, and hardware bindings (the auditor's map and per-node registry history).
fn places(v: &custody_registry::signed::VerifiedRegistry) -> entry::RegistryPlaces {
    let r = v.registry();
    entry::RegistryPlaces {
        sites: r
            .sites
            .iter()
            .map(|s| {
                let op = v.site_operator(&s.id);
                entry::PlacedSite {
                    id: s.id.clone(),
                    name: s.name.clone(),
                    country: s.country.to_string(),
                    lat_e6: s.lat_e6,
                    lon_e6: s.lon_e6,
                    operator: s.operator.clone(),
                    operator_name: op.as_ref().map(|o| o.name.clone()).unwrap_or_default(),
                    cloud_act_exposed: op.is_some_and(|o| o.cloud_act_exposed),
                }
            })
            .collect(),
        hardware: r
            .hardware
            .iter()
            .map(|h| entry::PlacedHardware {
                site: h.site.clone(),
                id: h.id.to_string(),
            })
            .collect(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const RIMS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../verifier/testdata/nvidia/rims");

    /// A verifier configuration in `dir` with the swtpm test EK CA; defaults otherwise.
    pub(crate) fn config(dir: &Path) -> Config {
        let ek = dir.join("ek-ca");
        std::fs::create_dir_all(&ek).unwrap();
        std::fs::copy(
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../verifier/testdata/enroll/swtpm-localca-root.pem"
            ),
            ek.join("root.pem"),
        )
        .unwrap();
        Config {
            data_dir: dir.join("data"),
            ek_ca_dir: ek,
            ..Default::default()
        }
    }

    fn node(id: &str) -> store::NodeRecord {
        store::NodeRecord::sample(id)
    }

    fn result(id: &str) -> store::ResultRecord {
        store::ResultRecord {
            id: 0,
            node_id: id.into(),
            at: 2,
            status: "affirming".into(),
            failed_check: None,
            reasons: vec![],
            ear: vec![1, 2, 3],
            evidence_sha256: "00".into(),
            input: Some("{}".into()),
        }
    }

    fn write(id: &str) -> commit::RoundWrite {
        commit::RoundWrite {
            node: node(id),
            record: result(id),
            audit: vec![custody_audit::Entry::AttestationResult(
                custody_audit::entry::ResultEntry::example(id, 1),
            )],
        }
    }

    fn metric(svc: &Service, name: &str) -> u64 {
        let text = svc.metrics.render(&metrics::Snapshot::default());
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("{name} not in {text}"))
            .parse()
            .unwrap()
    }

    /// Rounds that conclude while another write holds the gate queue up, and the writer
    /// thread, once it has the gate, writes them all in one group commit: each gets its
    /// own result id and audit entry; a node removed meanwhile fails alone, without an
    /// entry. Async waiters are answered the same way, and a closed service refuses.
    #[test]
    fn rounds_queued_behind_the_write_gate_share_one_group_commit() {
        let d = tempfile::tempdir().unwrap();
        let svc = Service::open(config(d.path())).unwrap();
        let ids: Vec<String> = (0..8).map(|i| format!("n{i}")).collect();
        // n7 is never stored: it stands for a node removed while its round ran.
        for id in &ids[..7] {
            svc.store.put_node(&node(id)).unwrap();
        }
        let entries_before = svc.audit().size();
        let gate = svc.db_writes();
        let waiters: Vec<_> = ids
            .iter()
            .map(|id| {
                let (svc, id) = (svc.clone(), id.clone());
                std::thread::spawn(move || svc.commit_round(write(&id)))
            })
            .collect();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while svc.commits.len() < ids.len() {
            assert!(std::time::Instant::now() < deadline, "rounds did not queue");
            std::thread::sleep(Duration::from_millis(2));
        }
        drop(gate);
        let outcomes: Vec<_> = waiters.into_iter().map(|w| w.join().unwrap()).collect();
        let mut result_ids: Vec<i64> = outcomes[..7].iter().map(|o| *o.as_ref().unwrap()).collect();
        assert!(
            matches!(&outcomes[7], Err(ServiceError::Store(store::StoreError::NodeGone(n))) if n == "n7"),
            "{:?}",
            outcomes[7]
        );
        result_ids.sort_unstable();
        result_ids.dedup();
        assert_eq!(result_ids.len(), 7, "every round has its own result");
        for id in &ids[..7] {
            assert_eq!(svc.store.results(id, 5).unwrap().len(), 1, "{id}");
        }
        assert_eq!(svc.audit().size(), entries_before + 7);
        assert_eq!(metric(&svc, "custody_round_group_commits_total"), 1);
        assert_eq!(metric(&svc, "custody_round_group_committed_total"), 8);
        assert_eq!(metric(&svc, "custody_audit_append_errors_total"), 0);

        // Alone, a round is its own group commit.
        svc.commit_round(write("n0")).unwrap();
        assert_eq!(metric(&svc, "custody_round_group_commits_total"), 2);
        assert_eq!(svc.audit().size(), entries_before + 8);

        // An async waiter, on a runtime of its own.
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let id = rt.block_on(svc.commit_round_async(write("n1"))).unwrap();
        assert!(id > *result_ids.last().unwrap());
        assert_eq!(svc.store.results("n1", 5).unwrap().len(), 2);
        assert_eq!(metric(&svc, "custody_round_group_committed_total"), 10);

        // Once closed (as on drop), a round is refused, not left waiting.
        svc.commits.close();
        let e = svc.commit_round(write("n2")).unwrap_err().to_string();
        assert!(e.contains("shutting down"), "{e}");
    }

    /// A stray row where the next audit entry goes: the service's next append fails.
    fn break_the_log(svc: &Service) {
        let size = svc.audit().size();
        rusqlite::Connection::open(svc.cfg.db_path())
            .unwrap()
            .execute(
                "INSERT INTO entries(idx, leaf) VALUES (?1, x'7b7d')",
                [i64::try_from(size).unwrap()],
            )
            .unwrap();
    }

    /// Issue 19 item 10: a decision that cannot be logged is not a decision. When the
    /// audit append fails (here the log's file moved on behind the service's tree), the
    /// round fails and neither its result nor its node state is recorded.
    #[test]
    fn a_round_whose_audit_entry_cannot_be_written_is_not_recorded() {
        let d = tempfile::tempdir().unwrap();
        let svc = Service::open(config(d.path())).unwrap();
        svc.store.put_node(&node("n0")).unwrap();
        break_the_log(&svc);
        let outcome = svc.commit_round(write("n0"));
        assert!(outcome.is_err(), "the round must fail: {outcome:?}");
        assert!(
            svc.store.results("n0", 5).unwrap().is_empty(),
            "a result was recorded without its audit entry"
        );
        assert_eq!(metric(&svc, "custody_audit_append_errors_total"), 1);
    }

    /// Issue 19 item 10 beyond rounds: an operator's decision (a node's group, a group's
    /// reference values, the policy in force) commits with its entry or not at all.
    #[test]
    fn a_decision_that_cannot_be_logged_is_not_made() {
        let d = tempfile::tempdir().unwrap();
        let svc = Service::open(config(d.path())).unwrap();
        svc.store.put_node(&node("n0")).unwrap();
        break_the_log(&svc);
        assert!(svc.set_group("n0", "gpu-hosts", "operator").is_err());
        assert_eq!(svc.store.node("n0").unwrap().unwrap().group, "default");
        let r = store::Reference {
            pcrs: Default::default(),
            source: store::ReferenceSource::Operator,
            at: 1,
            learned_from: None,
            pending: false,
        };
        let e = custody_audit::Entry::AttestationResult(custody_audit::entry::ResultEntry::example("n0", 1));
        assert!(svc
            .decide(
                store::Decision::Reference {
                    group: "g",
                    reference: &r
                },
                &[e]
            )
            .is_err());
        assert!(svc.store.reference("g").unwrap().is_none());
        assert_eq!(metric(&svc, "custody_audit_append_errors_total"), 2);
    }

    fn with_rims(dir: &Path, rims: &Path) -> Config {
        Config {
            gpu_rims: Some(rims.to_path_buf()),
            ..config(dir)
        }
    }

    #[test]
    fn gpu_rims_are_checked_at_start_up() {
        let d = tempfile::tempdir().unwrap();
        let rims = d.path().join("rims");
        std::fs::create_dir(&rims).unwrap();
        // A validly signed VBIOS RIM whose signer is within its validity until 2025-12:
        // loading keeps an expired signer (the rounds that select it refuse it), so this
        // start-up succeeds whatever today's date is.
        let good = "NV_GPU_VBIOS_1010_0200_882_96005E0001_measurement_mismatch.xml";
        std::fs::copy(format!("{RIMS}/{good}"), rims.join(good)).unwrap();
        let svc = Service::open(with_rims(d.path(), &rims)).unwrap();
        assert_eq!(svc.appraiser.gpu_rims.as_ref().map(|l| l.len()), Some(1));
        drop(svc);

        // A RIM whose signature does not verify stops the verifier, naming the file and
        // the check.
        let bad = "incorrect_signature_driver_rim.xml";
        std::fs::copy(format!("{RIMS}/{bad}"), rims.join(bad)).unwrap();
        let d2 = tempfile::tempdir().unwrap();
        let e = Service::open(with_rims(d2.path(), &rims))
            .unwrap_err()
            .to_string();
        assert!(e.contains(bad) && e.contains("rim_signature"), "{e}");
    }
}
