//! Migrations (docs/migration-protocol.md section 1): the verifier lets a checkpoint move
//! from A to B only if B passes the job's policy now, the checkpoint's dtypes run on B's
//! GPU, and then only to B's attested session key.
//!
//! `POST /v1/migrations` runs fresh rounds with B and A, asks A for the checkpoint's
//! manifest and dtypes, checks the chip, signs a ticket with the verifier's result key and
//! tells A to send; a watcher polls A until B's receipt arrives, verifies it against the
//! key the ticket named and appends the placement to the audit log. Every refusal is
//! logged too, with the check that failed.

use crate::round::Appraisal;
use crate::store::{MigrationRecord, NodeRecord};
use crate::{now, Service, ServiceError};
use custody_audit::entry::{self, Entry, MigrationEntry};
use custody_formats::api::{
    self, MoveExport, MovePrepare, MovePrepared, MoveSend, MoveState, MoveStatus, Refusal,
};
use custody_mover::chips::{self, Chip};
use custody_mover::manifest::Manifest;
use custody_mover::receipt::Receipt;
use custody_mover::safetensors::{Dtype, Requirements};
use custody_mover::ticket::Ticket;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Default ticket lifetime.
pub const DEFAULT_TICKET_TTL: i64 = 900;
/// The longest ticket (and the default for an air-gapped move).
pub const MAX_TICKET_TTL: i64 = 86_400;
/// How often an air-gapped move's watcher asks A for its file, then B for its receipt.
const FILE_POLL: Duration = Duration::from_secs(2);
/// How often the watcher asks the source how far it is.
const POLL: Duration = Duration::from_millis(250);

/// What the operator asks for.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MigrationRequest {
    pub job: String,
    /// Node id or name.
    pub source: String,
    pub destination: String,
    /// Directory in A's checkpoint store (default: the job name).
    #[serde(default)]
    pub checkpoint: Option<String>,
    /// A shipped policy the destination must pass (default: the verifier's policy).
    #[serde(default)]
    pub policy: Option<String>,
    #[serde(default)]
    pub chunk_size: Option<u32>,
    #[serde(default)]
    pub ttl_secs: Option<i64>,
    /// Delete A's copy once B's receipt has verified (at A, by A's agent).
    #[serde(default)]
    pub delete_source: bool,
    /// Air-gapped: A writes the sealed stream to an export file; the operator carries it
    /// to B and runs `custody import` there; the verifier waits for B's receipt.
    #[serde(default)]
    pub via_file: bool,
}

/// A migration as the operator sees it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Migration {
    /// The ticket id, hex.
    pub id: String,
    pub job: String,
    pub source: String,
    pub destination: String,
    pub policy_id: String,
    pub policy_digest: String,
    pub manifest_sha256: String,
    pub files: u64,
    pub state: MoveState,
    pub bytes: u64,
    pub total: u64,
    pub resumed_at: u64,
    /// Destination GPUs the chip check used (`model`, attested or not).
    pub gpus: Vec<String>,
    pub dtypes: Vec<String>,
    pub issued_at: i64,
    pub expires_at: i64,
    pub completed_at: Option<i64>,
    pub receipt_sha256: Option<String>,
    pub check: Option<String>,
    pub detail: Option<String>,
    /// Asked to delete A's copy after the receipt; and whether A reported it done.
    #[serde(default)]
    pub delete_source: bool,
    #[serde(default)]
    pub source_released: bool,
    /// Files A kept at the release (changed or added after the manifest), `PATH: why`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_kept: Vec<String>,
    /// An air-gapped move: the export file on A and its SHA-256 once written.
    #[serde(default)]
    pub via_file: bool,
    #[serde(default)]
    pub export_path: Option<String>,
    #[serde(default)]
    pub export_sha256: Option<String>,
}

/// A refused migration: the check, what failed, and the policy's reasons if it was one.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, thiserror::Error)]
#[error("{check}: {detail}")]
pub struct MigrationRefused {
    pub check: String,
    pub detail: String,
    #[serde(default)]
    pub reasons: Vec<String>,
}

/// How long a move waits for a round already running with a node (a round is bounded by
/// the agent timeouts, well under this).
const ROUND_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

fn refused(check: &str, detail: impl Into<String>) -> MigrationRefused {
    MigrationRefused {
        check: check.into(),
        detail: detail.into(),
        reasons: Vec::new(),
    }
}

impl From<ServiceError> for MigrationRefused {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::NoNode(n) => refused("node", format!("no node `{n}`")),
            other => refused("internal", other.to_string()),
        }
    }
}

/// The migrations this verifier runs or ran since it started (the audit log keeps them for
/// good).
#[derive(Debug, Default)]
pub struct Migrations(Mutex<HashMap<String, Migration>>);

impl Migrations {
    pub fn get(&self, id: &str) -> Option<Migration> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).get(id).cloned()
    }

    pub fn list(&self) -> Vec<Migration> {
        let mut v: Vec<Migration> = self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        v.sort_by_key(|m| m.issued_at);
        v
    }

    fn put(&self, m: Migration) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(m.id.clone(), m);
    }

    fn remove(&self, id: &str) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }

    fn update(&self, id: &str, f: impl FnOnce(&mut Migration)) {
        if let Some(m) = self.0.lock().unwrap_or_else(|p| p.into_inner()).get_mut(id) {
            f(m);
        }
    }
}

/// B's receipt: signed by the session key the ticket names, for this ticket and size.
fn verify_receipt(
    ticket: &Ticket,
    bytes: Vec<u8>,
    total: u64,
) -> Result<(Receipt, Vec<u8>), MigrationRefused> {
    let r = Receipt::verify(&bytes, &ticket.dst_ed25519)
        .map_err(|e| refused("receipt_signature", e.to_string()))?;
    custody_mover::wire::check_receipt(&r, ticket, total)
        .map_err(|e| refused("receipt_format", e.to_string()))?;
    Ok((r, bytes))
}

fn valid_job(j: &str) -> bool {
    (1..=128).contains(&j.len())
        && !j.starts_with('.')
        && j.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn chip_check(needs: &MovePrepared, gpus: &[(String, bool)]) -> Result<(), MigrationRefused> {
    let mut req = Requirements::default();
    for (name, tensors) in &needs.dtypes {
        let d = Dtype::from_name(name).ok_or_else(|| {
            refused(
                "safetensors_dtype",
                format!("the source reported unknown dtype {name:?}"),
            )
        })?;
        req.dtypes.insert(d, tensors.clone());
    }
    if req.dtypes.is_empty() {
        return Ok(());
    }
    if gpus.is_empty() {
        let names: Vec<&str> = needs.dtypes.keys().map(String::as_str).collect();
        return Err(refused(
            "chip_mismatch",
            format!(
                "the checkpoint has tensors ({}) and the destination's evidence shows no GPU",
                names.join(", ")
            ),
        ));
    }
    for (model, attested) in gpus {
        // An attested GPU's model comes from its signed report; another's is the agent's
        // unsigned NVML name, and the refusal says so.
        let whose = if *attested {
            ""
        } else {
            " (unattested: the agent's NVML name)"
        };
        let chip = Chip::from_model(model).ok_or_else(|| {
            refused(
                "chip_unknown",
                format!("destination GPU {model:?}{whose} is not in the chip table"),
            )
        })?;
        chips::check(&req, chip).map_err(|e| refused("chip_mismatch", format!("{e}{whose}")))?;
    }
    Ok(())
}

/// The session keys the destination's fresh round vouched for: what the ticket seals to.
fn keys_of(node: &NodeRecord, a: &Appraisal) -> Result<([u8; 32], [u8; 32]), MigrationRefused> {
    let k = a.session_keys.ok_or_else(|| {
        refused(
            "destination_keys",
            format!(
                "`{}` has no session keys vouched for by a passing round",
                node.name
            ),
        )
    })?;
    Ok((k.x25519, k.ed25519))
}

impl Service {
    /// The job's policy: the verifier's own unless another is named. Cloning shares the
    /// compiled engines.
    fn migration_policy(&self, name: Option<&str>) -> Result<custody_policy::Policy, MigrationRefused> {
        match name {
            None => Ok(self.appraiser.policy.clone()),
            Some(n) if n == self.appraiser.policy.id() => Ok(self.appraiser.policy.clone()),
            Some(n) if !custody_policy::SHIPPED.iter().any(|(s, _)| *s == n) => Err(refused(
                "policy_unknown",
                format!("{n:?} is neither the verifier's policy nor a shipped one"),
            )),
            Some(n) => crate::load_policy_named(&self.cfg, Some(n))
                .map_err(|e| refused("policy_unknown", e.to_string())),
        }
    }

    /// Ask an agent (verifier identity) and decode its CBOR answer.
    async fn ask_agent<T: for<'de> Deserialize<'de>>(
        &self,
        node: &NodeRecord,
        method: http::Method,
        path: &str,
        body: Option<Vec<u8>>,
        what: &'static str,
    ) -> Result<(http::StatusCode, T), MigrationRefused> {
        let url = format!("https://{}{path}", node.endpoint);
        let has_body = body.is_some();
        let reachable =
            |e: custody_net::NetError| refused("agent_reachable", format!("`{}`: {e}", node.name));
        let r = self
            .agents
            .for_node(&node.id)
            .map_err(reachable)?
            .request(
                method,
                &url,
                has_body.then_some(api::CBOR),
                body.unwrap_or_default(),
            )
            .await
            .map_err(reachable)?;
        if r.status.is_success() {
            let v = api::from_cbor(what, &r.body).map_err(|e| refused("agent_answer", e.to_string()))?;
            return Ok((r.status, v));
        }
        Err(match api::from_cbor::<Refusal>("refusal", &r.body) {
            Ok(f) => refused(&f.check, format!("`{}` refused: {}", node.name, f.detail)),
            Err(_) => refused(
                "agent_answer",
                format!("`{}` answered HTTP {}", node.name, r.status),
            ),
        })
    }

    /// A round with `node` now; refused as `check` with its reasons when it fails.
    /// A round already running with the node (the scheduler's, or the node's push) is
    /// waited for, up to `ROUND_WAIT`: the move needs a round of its own, after it.
    async fn passes_now(
        self: &Arc<Self>,
        node: &NodeRecord,
        check: &str,
    ) -> Result<Appraisal, MigrationRefused> {
        let deadline = std::time::Instant::now() + ROUND_WAIT;
        let (r, a) = loop {
            match self.attest_appraised(&node.id).await {
                Err(ServiceError::Busy(m)) if std::time::Instant::now() < deadline => {
                    tracing::debug!(node = %node.name, "{m}; waiting");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                Err(ServiceError::Busy(m)) => return Err(refused("busy", m)),
                other => break other?,
            }
        };
        match r.failed_check {
            None => Ok(a),
            Some(c) => Err(MigrationRefused {
                check: check.into(),
                detail: format!("`{}` failed its round now: {c}", node.name),
                reasons: r.reasons,
            }),
        }
    }

    /// Check everything, issue the ticket, start the transfer. Refusals are logged.
    #[tracing::instrument(skip(self, req), fields(job = %req.job, from = %req.source, to = %req.destination))]
    pub async fn migrate(self: &Arc<Self>, req: MigrationRequest) -> Result<Migration, MigrationRefused> {
        let r = self.migrate_inner(&req).await;
        if let Err(e) = &r {
            tracing::warn!(check = %e.check, detail = %e.detail, "migration refused");
            self.log(Entry::Migration(MigrationEntry::Refused(entry::MoveRefused {
                job: req.job.clone(),
                source: req.source.clone(),
                destination: req.destination.clone(),
                at: now(),
                check: e.check.clone(),
                detail: e.detail.clone(),
                reasons: e.reasons.clone(),
            })));
            self.checkpoint_now();
        }
        r
    }

    /// Where the move's own fresh round placed `node`: node, site, country, operator, and
    /// the digests of the evidence and the signed result, so `custody audit where`
    /// answers from the log alone.
    fn whereabouts(node: &NodeRecord, a: &Appraisal) -> entry::Appraised {
        let p = &a.place;
        entry::Appraised {
            node: node.id.clone(),
            name: node.name.clone(),
            site: p.site.clone(),
            site_name: p.site_name.clone(),
            country: p.country.clone(),
            operator: p.operator.clone(),
            operator_country: p.operator_country.clone(),
            appraised_at: Some(a.at),
            status: Some(a.status.as_str().to_owned()),
            evidence_sha256: Some(a.evidence_sha256.clone()),
            ear_sha256: Some(hex::encode(aws_lc_rs::digest::digest(
                &aws_lc_rs::digest::SHA256,
                &a.ear,
            ))),
        }
    }

    /// Sign a checkpoint now, so a migration's entries are covered by a signature at
    /// once rather than at the next interval.
    fn checkpoint_now(&self) {
        if let Err(e) = self.checkpoint() {
            tracing::error!(error = %e, "checkpoint after a migration failed");
        }
    }

    async fn migrate_inner(self: &Arc<Self>, req: &MigrationRequest) -> Result<Migration, MigrationRefused> {
        if !valid_job(&req.job) {
            return Err(refused(
                "job_name",
                "a job is 1-128 characters of A-Z a-z 0-9 . _ -, not starting with .",
            ));
        }
        let (a, b) = (self.find_node(&req.source)?, self.find_node(&req.destination)?);
        if a.id == b.id {
            return Err(refused("destination", "source and destination are the same node"));
        }
        let b_move = b.move_endpoint.clone().ok_or_else(|| {
            refused(
                "destination_endpoint",
                format!("`{}` takes no moves (no move_listen)", b.name),
            )
        })?;
        let policy = self.migration_policy(req.policy.as_deref())?;

        // Fresh evidence from both ends, now. Everything below decides on these two
        // appraisals, not on whatever round of either node was stored last (a scheduled
        // round that finished meanwhile could have placed it elsewhere, or vouched for
        // other session keys).
        let b_round = self.passes_now(&b, "destination_attestation").await?;
        let a_round = self.passes_now(&a, "source_attestation").await?;
        let b_place = Self::whereabouts(&b, &b_round);
        let a_place = Self::whereabouts(&a, &a_round);
        // The job's policy on the evidence just appraised.
        let decision = policy
            .evaluate(&b_round.input)
            .map_err(|e| refused("policy", e.to_string()))?;
        if !decision.allow {
            return Err(MigrationRefused {
                check: "policy".into(),
                detail: format!("`{}` does not pass {}", b.name, decision.policy_id),
                reasons: decision.reasons,
            });
        }
        let (dst_x25519, dst_ed25519) = keys_of(&b, &b_round)?;

        let checkpoint = req.checkpoint.clone().unwrap_or_else(|| req.job.clone());
        let body = api::to_cbor(
            "MovePrepare",
            &MovePrepare {
                checkpoint: checkpoint.clone(),
            },
        )
        .map_err(|e| refused("internal", e.to_string()))?;
        let (_, prepared): (_, MovePrepared) = self
            .ask_agent(
                &a,
                http::Method::POST,
                "/v1/move/prepare",
                Some(body),
                "MovePrepared",
            )
            .await?;
        let gpus: Vec<(String, bool)> = b_round
            .gpus
            .iter()
            .map(|g| (g.model.clone(), g.attested))
            .collect();
        chip_check(&prepared, &gpus)?;
        let manifest =
            Manifest::from_cbor(&prepared.manifest).map_err(|e| refused("manifest_format", e.to_string()))?;
        let manifest_digest = manifest
            .digest()
            .map_err(|e| refused("manifest_format", e.to_string()))?;

        let issued_at = now();
        // A file travels by hand: its ticket lives a day unless asked otherwise.
        let default_ttl = if req.via_file {
            MAX_TICKET_TTL
        } else {
            DEFAULT_TICKET_TTL
        };
        let ttl = req.ttl_secs.unwrap_or(default_ttl).clamp(1, MAX_TICKET_TTL);
        let mut id = [0u8; 16];
        aws_lc_rs::rand::fill(&mut id).map_err(|_| refused("internal", "no randomness"))?;
        let policy_digest: [u8; 32] = hex::decode(decision.policy_digest.as_str())
            .ok()
            .and_then(|d| d.try_into().ok())
            .ok_or_else(|| refused("internal", "policy digest is not 32 bytes of hex"))?;
        let ticket = Ticket {
            id,
            job: req.job.clone(),
            source: a.id.clone(),
            destination: b.id.clone(),
            dst_x25519,
            dst_ed25519,
            policy_id: decision.policy_id.clone(),
            policy_digest,
            manifest_digest,
            issued_at,
            expires_at: issued_at + ttl,
        };
        let signed = ticket
            .sign(self.ear_key.key_pair())
            .map_err(|e| refused("internal", e.to_string()))?;
        let chunk_size = req
            .chunk_size
            .unwrap_or(custody_mover::stream::DEFAULT_CHUNK_SIZE);
        let m = Migration {
            id: ticket.id_hex(),
            job: req.job.clone(),
            source: a.id.clone(),
            destination: b.id.clone(),
            policy_id: decision.policy_id.clone(),
            policy_digest: decision.policy_digest.clone(),
            manifest_sha256: hex::encode(manifest_digest),
            files: prepared.files,
            state: MoveState::Running,
            bytes: 0,
            total: prepared.total_bytes,
            resumed_at: 0,
            gpus: gpus
                .iter()
                .map(|(m, att)| format!("{m} ({})", if *att { "attested" } else { "unattested" }))
                .collect(),
            dtypes: prepared.dtypes.keys().cloned().collect(),
            issued_at,
            expires_at: ticket.expires_at,
            completed_at: None,
            receipt_sha256: None,
            check: None,
            detail: None,
            delete_source: req.delete_source,
            source_released: false,
            source_kept: Vec::new(),
            via_file: req.via_file,
            export_path: None,
            export_sha256: None,
        };
        let entry = Entry::Migration(MigrationEntry::TicketIssued(Box::new(entry::TicketIssued {
            ticket: m.id.clone(),
            job: m.job.clone(),
            source: m.source.clone(),
            destination: m.destination.clone(),
            policy_id: m.policy_id.clone(),
            policy_digest: m.policy_digest.clone(),
            manifest_sha256: m.manifest_sha256.clone(),
            bytes: m.total,
            dst_x25519: hex::encode(dst_x25519),
            at: issued_at,
            expires_at: m.expires_at,
            delete_source: req.delete_source,
            transport: if req.via_file { "file" } else { "wire" }.into(),
            // The signed ticket itself, so the placed entry's receipt can be checked
            // against the key the ticket names, offline.
            ticket_cose: hex::encode(&signed),
            source_at: Some(a_place),
            destination_at: Some(b_place),
        })));
        // The ticket is a decision: stored with its entry before A is told to send (so a
        // verifier that restarts from here on watches the move again,
        // `resume_migrations`), or not issued at all.
        self.persist_logged(&m, &signed, &[entry])
            .map_err(|e| refused("audit", format!("the ticket could not be recorded: {e}")))?;
        self.migrations.put(m.clone());
        self.checkpoint_now();
        let (path, body) = if req.via_file {
            let export = MoveExport {
                ticket: signed,
                checkpoint,
                chunk_size,
            };
            ("/v1/move/export", api::to_cbor("MoveExport", &export))
        } else {
            let send = MoveSend {
                ticket: signed,
                checkpoint,
                to: b_move,
                chunk_size,
                release: req.delete_source,
            };
            ("/v1/move/send", api::to_cbor("MoveSend", &send))
        };
        let body = body.map_err(|e| refused("internal", e.to_string()))?;
        if let Err(e) = self
            .ask_agent::<String>(&a, http::Method::POST, path, Some(body), "MoveStarted")
            .await
        {
            // Nothing was sent; `migrate` logs the refusal.
            self.end_migration(&m.id, None, |m| {
                m.state = MoveState::Failed;
                m.check = Some(e.check.clone());
                m.detail = Some(e.detail.clone());
            });
            return Err(e);
        }
        self.spawn_watch(a, ticket, req.via_file);
        Ok(m)
    }

    fn persist_migration(&self, m: &Migration, ticket: &[u8]) {
        if let Err(e) = self.persist_logged(m, ticket, &[]) {
            tracing::error!(ticket = %m.id, error = %e, "could not store the migration");
        }
    }

    /// Store the migration and append `entries` in one transaction.
    fn persist_logged(
        &self,
        m: &Migration,
        ticket: &[u8],
        entries: &[custody_audit::Entry],
    ) -> Result<(), ServiceError> {
        let doc = serde_json::to_string(m).map_err(|e| ServiceError::Core(e.to_string()))?;
        let rec = MigrationRecord {
            id: m.id.clone(),
            state: m.state.as_str().into(),
            issued_at: m.issued_at,
            doc,
            ticket: ticket.to_vec(),
        };
        if entries.is_empty() {
            return Ok(self.store.put_migration(&rec)?);
        }
        self.decide(crate::store::Decision::Migration(&rec), entries)
            .map(drop)
    }

    /// Final state: stored with its audit entry, then dropped from memory (the store
    /// answers from now on). The placement or failure already happened: a write that
    /// fails is logged and counted, and the migration stays in memory.
    fn end_migration(&self, id: &str, entry: Option<custody_audit::Entry>, f: impl FnOnce(&mut Migration)) {
        self.migrations.update(id, f);
        if let Some(m) = self.migrations.get(id) {
            use std::sync::atomic::Ordering::Relaxed;
            match m.state {
                MoveState::Done => {
                    self.metrics.migrations_done.fetch_add(1, Relaxed);
                    self.metrics.migration_bytes.fetch_add(m.bytes, Relaxed);
                }
                MoveState::Failed => {
                    self.metrics.migrations_failed.fetch_add(1, Relaxed);
                }
                MoveState::Running | MoveState::Exported => {}
            }
            // The ticket was stored with the first insert and is kept.
            match self.persist_logged(&m, &[], entry.as_slice()) {
                Ok(()) => self.migrations.remove(id),
                Err(e) => tracing::error!(ticket = %id, error = %e, "could not record the migration's end"),
            }
        }
    }

    /// One migration: live progress if it runs here, else as stored.
    pub fn migration(&self, id: &str) -> Option<Migration> {
        self.migrations.get(id).or_else(|| {
            let r = self.store.migration(id).ok().flatten()?;
            serde_json::from_str(&r.doc).ok()
        })
    }

    /// The latest migrations (stored, with live progress for running ones), oldest first
    /// in the order they were issued.
    pub fn migration_list(&self) -> Vec<Migration> {
        let mut live: HashMap<String, Migration> = self
            .migrations
            .list()
            .into_iter()
            .map(|m| (m.id.clone(), m))
            .collect();
        let mut v: Vec<Migration> = self
            .store
            .migrations(1000)
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "could not read migrations");
                Vec::new()
            })
            .into_iter()
            .filter_map(|r| live.remove(&r.id).or_else(|| serde_json::from_str(&r.doc).ok()))
            .collect();
        // Running here but not stored (the store refused the write): still shown.
        let mut rest: Vec<Migration> = live.into_values().collect();
        rest.sort_by_key(|m| m.issued_at);
        v.extend(rest);
        v
    }

    /// After a restart: watch again every move that was still running, so its receipt
    /// is verified and logged (or its failure is) even though this process issued none.
    pub fn resume_migrations(self: &Arc<Self>) {
        let unfinished = match self.store.unfinished_migrations() {
            Ok(u) => u,
            Err(e) => {
                tracing::error!(error = %e, "could not read unfinished migrations");
                return;
            }
        };
        let key = self.ear_key.public_key().as_sec1().to_vec();
        for r in unfinished {
            let resumed = serde_json::from_str::<Migration>(&r.doc)
                .map_err(|e| refused("internal", format!("stored migration: {e}")))
                .and_then(|m| {
                    // Our own signature, checked as of issue: the ticket may have expired
                    // since, and A may still hold the receipt.
                    let t = Ticket::verify(&r.ticket, &key, r.issued_at)
                        .map_err(|e| refused("ticket_signature", e.to_string()))?;
                    let a = self.find_node(&t.source)?;
                    Ok((m, t, a))
                });
            match resumed {
                Ok((m, t, a)) => {
                    tracing::info!(ticket = %r.id, job = %m.job, "watching an unfinished migration again");
                    let via_file = m.via_file;
                    self.migrations.put(m);
                    self.spawn_watch(a, t, via_file);
                }
                Err(e) => {
                    tracing::warn!(ticket = %r.id, check = %e.check, "an unfinished migration cannot be resumed");
                    if let Ok(m) = serde_json::from_str::<Migration>(&r.doc) {
                        let (id, job, source, destination) = (
                            m.id.clone(),
                            m.job.clone(),
                            m.source.clone(),
                            m.destination.clone(),
                        );
                        self.migrations.put(m);
                        let e = refused(&e.check, format!("after a verifier restart: {}", e.detail));
                        self.fail_migration(&id, &job, &source, &destination, e);
                    }
                }
            }
        }
    }

    fn spawn_watch(self: &Arc<Self>, source: NodeRecord, ticket: Ticket, via_file: bool) {
        let me = Arc::clone(self);
        if via_file {
            tokio::spawn(async move { me.watch_file(source, ticket).await });
        } else {
            tokio::spawn(async move { me.watch(source, ticket).await });
        }
    }

    /// An air-gapped move: wait for A's export file (logged as `exported`), then for B's
    /// receipt of its import, until the ticket expires. Unreachable nodes are asked again.
    async fn watch_file(self: Arc<Self>, source: NodeRecord, ticket: Ticket) {
        let id = ticket.id_hex();
        let path = format!("/v1/move/{id}");
        let mut exported = self
            .migrations
            .get(&id)
            .is_some_and(|m| m.state == MoveState::Exported);
        loop {
            tokio::time::sleep(if exported { FILE_POLL } else { POLL }).await;
            if now() > ticket.expires_at.saturating_add(60) {
                let e = refused(
                    "ticket_expired",
                    if exported {
                        "the export file was not imported at the destination before the ticket expired"
                    } else {
                        "the source wrote no export file before the ticket expired"
                    },
                );
                self.finish(&id, Err(e), &ticket);
                return;
            }
            if !exported {
                let Ok((_, s)) = self
                    .ask_agent::<MoveStatus>(&source, http::Method::GET, &path, None, "MoveStatus")
                    .await
                else {
                    continue;
                };
                match s.state {
                    MoveState::Running => continue,
                    MoveState::Exported => {
                        tracing::info!(ticket = %id, file = ?s.export_path, "export written at the source");
                        self.log(Entry::Migration(MigrationEntry::Exported(entry::MoveExported {
                            ticket: id.clone(),
                            job: ticket.job.clone(),
                            source: ticket.source.clone(),
                            destination: ticket.destination.clone(),
                            file: s.export_path.clone(),
                            file_sha256: s.export_sha256.clone(),
                            bytes: s.bytes,
                            at: now(),
                        })));
                        self.migrations.update(&id, |m| {
                            m.state = MoveState::Exported;
                            m.bytes = s.bytes;
                            m.export_path = s.export_path.clone();
                            m.export_sha256 = s.export_sha256.clone();
                        });
                        if let Some(m) = self.migrations.get(&id) {
                            self.persist_migration(&m, &[]);
                        }
                        exported = true;
                    }
                    _ => {
                        let e = refused(
                            s.check.as_deref().unwrap_or("export"),
                            s.detail
                                .unwrap_or_else(|| "the source could not write the export".into()),
                        );
                        self.finish(&id, Err(e), &ticket);
                        return;
                    }
                }
            } else {
                // B answers 404 until the file is imported there.
                let Ok(dest) = self.find_node(&ticket.destination) else {
                    continue;
                };
                let Ok((_, s)) = self
                    .ask_agent::<MoveStatus>(&dest, http::Method::GET, &path, None, "MoveStatus")
                    .await
                else {
                    continue;
                };
                if s.state == MoveState::Done {
                    let total = s.total;
                    let r = verify_receipt(&ticket, s.receipt, total);
                    self.finish(&id, r, &ticket);
                    return;
                }
            }
        }
    }

    /// Poll the source until the transfer ends; verify the receipt; log the placement.
    async fn watch(self: Arc<Self>, source: NodeRecord, ticket: Ticket) {
        let id = ticket.id_hex();
        let path = format!("/v1/move/{id}");
        let mut unreachable = 0u32;
        loop {
            tokio::time::sleep(POLL).await;
            let s: MoveStatus = match self
                .ask_agent(&source, http::Method::GET, &path, None, "MoveStatus")
                .await
            {
                Ok((_, s)) => {
                    unreachable = 0;
                    s
                }
                Err(e) => {
                    unreachable += 1;
                    // A source that restarted lost its transfer: the ticket is still good
                    // until it expires, and B kept its staged chunks.
                    if unreachable < 40 && now() < ticket.expires_at {
                        continue;
                    }
                    self.finish(&id, Err(e), &ticket);
                    return;
                }
            };
            self.migrations.update(&id, |m| {
                m.bytes = s.bytes;
                m.total = s.total;
                m.resumed_at = s.resumed_at;
            });
            match s.state {
                MoveState::Running => continue,
                MoveState::Done => {
                    self.migrations.update(&id, |m| {
                        m.source_released = s.released;
                        m.source_kept = s.kept.clone();
                    });
                    let r = verify_receipt(&ticket, s.receipt, s.total);
                    self.finish(&id, r, &ticket);
                    return;
                }
                _ => {
                    let e = refused(
                        s.check.as_deref().unwrap_or("transfer"),
                        s.detail.unwrap_or_else(|| "the source reported a failure".into()),
                    );
                    self.finish(&id, Err(e), &ticket);
                    return;
                }
            }
        }
    }

    fn finish(&self, id: &str, r: Result<(Receipt, Vec<u8>), MigrationRefused>, t: &Ticket) {
        let at = now();
        match r {
            Ok((receipt, bytes)) => {
                let digest = hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &bytes));
                tracing::info!(ticket = %id, job = %t.job, to = %t.destination, "migration placed, receipt verified");
                let entry = Entry::Migration(MigrationEntry::Placed(entry::MovePlaced {
                    ticket: id.to_owned(),
                    job: t.job.clone(),
                    source: t.source.clone(),
                    destination: t.destination.clone(),
                    manifest_sha256: hex::encode(t.manifest_digest),
                    bytes: receipt.bytes,
                    completed_at: receipt.completed_at,
                    receipt_sha256: digest.clone(),
                    receipt: hex::encode(&bytes),
                    source_released: self.migrations.get(id).is_some_and(|m| m.source_released),
                    source_kept: self.migrations.get(id).map(|m| m.source_kept).unwrap_or_default(),
                    at,
                }));
                self.end_migration(id, Some(entry), |m| {
                    m.state = MoveState::Done;
                    m.bytes = receipt.bytes;
                    m.completed_at = Some(receipt.completed_at);
                    m.receipt_sha256 = Some(digest);
                });
                self.checkpoint_now();
            }
            Err(e) => self.fail_migration(id, &t.job, &t.source, &t.destination, e),
        }
    }

    /// A ticketed migration that ended without a placement: logged, signed, stored.
    fn fail_migration(&self, id: &str, job: &str, source: &str, destination: &str, e: MigrationRefused) {
        tracing::warn!(ticket = %id, check = %e.check, detail = %e.detail, "migration failed");
        let entry = Entry::Migration(MigrationEntry::Failed(entry::MoveFailed {
            ticket: id.to_owned(),
            job: job.to_owned(),
            source: source.to_owned(),
            destination: destination.to_owned(),
            check: e.check.clone(),
            detail: e.detail.clone(),
            at: now(),
        }));
        self.end_migration(id, Some(entry), |m| {
            m.state = MoveState::Failed;
            m.check = Some(e.check);
            m.detail = Some(e.detail);
        });
        self.checkpoint_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prepared(dtypes: &[(&str, &[&str])]) -> MovePrepared {
        MovePrepared {
            manifest: Vec::new(),
            files: 1,
            total_bytes: 1,
            dtypes: dtypes
                .iter()
                .map(|(d, t)| (d.to_string(), t.iter().map(|s| s.to_string()).collect()))
                .collect(),
        }
    }

    #[test]
    fn chip_check_names_tensors_and_dtypes() {
        let fp8 = prepared(&[
            ("F8_E4M3", &["model.safetensors:w1"]),
            ("BF16", &["model.safetensors:emb"]),
        ]);
        let a100 = vec![("NVIDIA A100-SXM4-80GB".to_string(), true)];
        let e = chip_check(&fp8, &a100).unwrap_err();
        assert_eq!(e.check, "chip_mismatch");
        assert!(
            e.detail.contains("F8_E4M3") && e.detail.contains("model.safetensors:w1"),
            "{e}"
        );
        let h100 = vec![("NVIDIA H100 80GB HBM3".to_string(), false)];
        chip_check(&fp8, &h100).unwrap();
        let e = chip_check(&fp8, &[]).unwrap_err();
        assert_eq!(e.check, "chip_mismatch");
        assert!(e.detail.contains("no GPU"), "{e}");
        let e = chip_check(&fp8, &[("Voodoo 3".into(), true)]).unwrap_err();
        assert_eq!(e.check, "chip_unknown");
        // No tensors: any destination, GPU or not.
        chip_check(&prepared(&[]), &[]).unwrap();
        let e = chip_check(&prepared(&[("F9", &["x"])]), &h100).unwrap_err();
        assert_eq!(e.check, "safetensors_dtype");
    }

    /// A destination whose scheduled round (or its own push) is running when a move asks
    /// for a fresh one: the move waits for it and runs its own round, instead of failing
    /// as `internal: busy` (seen in CI: migrate_e2e failed when the scheduler's round
    /// with `node-us` overlapped the move's).
    #[tokio::test]
    async fn a_move_waits_for_a_round_already_running_then_runs_its_own() {
        let d = tempfile::tempdir().unwrap();
        let svc = Arc::new(Service::open(crate::tests::config(d.path())).unwrap());
        svc.store
            .put_node(&crate::store::NodeRecord::sample("n1"))
            .unwrap();
        let node = svc.store.node("n1").unwrap().unwrap();
        let guard = svc.claim_round("n1").unwrap();
        let s2 = svc.clone();
        let t = tokio::spawn(async move { s2.passes_now(&node, "destination_attestation").await });
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(!t.is_finished(), "gave up while another round ran: {:?}", t.await);
        drop(guard);
        // Its own round then ran: the sample node's endpoint answers nothing, so the
        // round fails, and the move is refused for that, not for `busy`.
        let e = t.await.unwrap().unwrap_err();
        assert_eq!(e.check, "destination_attestation", "{e:?}");
    }

    #[test]
    fn job_names_are_read_strictly() {
        assert!(valid_job("llama-ft_42.v2") && !valid_job("../x") && !valid_job(".hidden") && !valid_job(""));
    }
}
