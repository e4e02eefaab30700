//! Where the verifier keeps nodes, results, reference values and events. [`Store`] is the
//! seam (a PostgreSQL implementation can follow for replicated verifiers); [`SqliteStore`]
//! is the embedded default: one file, WAL, versioned schema migrations applied at open.

use rusqlite::OptionalExtension;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("stored value is corrupt: {0}")]
    Corrupt(String),
    #[error("database schema version {found} is newer than this build knows ({known})")]
    FutureSchema { found: i64, known: i64 },
    #[error("conflict: {0}")]
    Conflict(String),
    /// The node was removed while a round for it ran: the round is not recorded, so a
    /// removal cannot be undone by a late result.
    #[error("node `{0}` was removed")]
    NodeGone(String),
    /// Another node (another TPM) holds this name.
    #[error("`{0}` is enrolled with another TPM")]
    NameTaken(String),
    /// The TPM's node is revoked: nothing but an operator's removal changes that.
    #[error("node `{name}` ({id}) is revoked ({reason})")]
    Revoked {
        id: String,
        name: String,
        reason: String,
    },
    /// The transaction that carried this round with others failed; none was recorded.
    #[error("the group commit failed: {0}")]
    GroupCommit(String),
    /// The decision's audit entry could not be written: the decision is not recorded.
    #[error("audit_append: {0}")]
    Audit(#[from] custody_audit::store::StoreError),
}

/// The audit log that decisions are appended to, in the same transaction.
pub type AuditLog = custody_audit::store::Store;

/// When a node was last attested, for `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeTimes {
    pub name: String,
    pub state: NodeState,
    pub last_round_at: Option<i64>,
    pub last_pass_at: Option<i64>,
}

/// A write that is a decision, for [`Store::decide`]: it commits with its audit entries
/// or not at all.
#[derive(Debug, Clone, Copy)]
pub enum Decision<'a> {
    /// A group's reference values (set by an operator, or approved).
    Reference {
        group: &'a str,
        reference: &'a Reference,
    },
    /// A group's reference values removed (its next round learns or fails, by the
    /// configured `reference` mode).
    RemoveReference { group: &'a str },
    /// A node's reference-value group.
    Group { id: &'a str, group: &'a str },
    /// A signed registry adopted.
    Registry(&'a RegistryRecord),
    /// A remembered setting (the policy in force).
    Setting { key: &'a str, value: &'a str },
    /// A migration's ticket issued, or its outcome.
    Migration(&'a MigrationRecord),
}

/// One round's writes for [`Store::record_rounds`]: the node's new state, its result
/// and the audit entries that record the decision (committed with it or not at all).
pub type RoundRows<'a> = (&'a NodeRecord, &'a ResultRecord, &'a [custody_audit::Entry]);

/// A node's life: enrolled -> trusted <-> failed -> revoked (terminal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// Enrolled, no round passed yet.
    Enrolled,
    /// The latest round passed.
    Trusted,
    /// The latest round failed (evidence refused, policy denied or agent unreachable).
    Failed,
    /// Failed `revoke_after` rounds in a row; no longer attested until re-enrolled by
    /// the operator.
    Revoked,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enrolled => "enrolled",
            Self::Trusted => "trusted",
            Self::Failed => "failed",
            Self::Revoked => "revoked",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        Ok(match s {
            "enrolled" => Self::Enrolled,
            "trusted" => Self::Trusted,
            "failed" => Self::Failed,
            "revoked" => Self::Revoked,
            other => return Err(StoreError::Corrupt(format!("node state `{other}`"))),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub id: String,
    pub name: String,
    /// Reference values are shared by a group.
    pub group: String,
    /// `host:port` of the agent's round endpoint.
    pub endpoint: String,
    pub state: NodeState,
    /// Why the node is failed or revoked.
    pub reason: Option<String>,
    /// SHA-256 of the EK certificate (DER): the TPM's hardware identity.
    pub ek_cert_sha256: Option<String>,
    #[serde(with = "hex_bytes")]
    pub ek_public: Vec<u8>,
    #[serde(with = "hex_bytes")]
    pub ak_public: Vec<u8>,
    pub enrolled_at: i64,
    pub updated_at: i64,
    pub last_round_at: Option<i64>,
    /// Consecutive failed rounds.
    pub failures: u32,
    pub tpm_clock: Option<TpmClock>,
    /// `host:port` of the agent's locality responder, when it runs one.
    #[serde(default)]
    pub locality_endpoint: Option<String>,
    /// `host:port` where the agent takes checkpoint moves, when it does.
    #[serde(default)]
    pub move_endpoint: Option<String>,
    /// The session keys (X25519 || Ed25519, hex) the last passing round's evidence vouched
    /// for: what a migration ticket seals a checkpoint to.
    #[serde(default)]
    pub session_keys: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultRecord {
    pub id: i64,
    pub node_id: String,
    pub at: i64,
    /// EAR status: affirming, warning, contraindicated.
    pub status: String,
    pub failed_check: Option<String>,
    /// Human-readable reasons for a refusal.
    pub reasons: Vec<String>,
    /// The signed EAR (COSE_Sign1).
    #[serde(with = "hex_bytes")]
    pub ear: Vec<u8>,
    /// SHA-256 of the evidence bundle appraised, hex (empty when none arrived).
    pub evidence_sha256: String,
    /// The policy input this result was decided on (JSON), so `custody policy explain`
    /// can replay it under another policy.
    #[serde(default)]
    pub input: Option<String>,
}

pub use custody_appraisal::{Reference, ReferenceSource, TpmClock};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub id: i64,
    pub at: i64,
    pub node_id: String,
    /// `enrolled`, `trusted`, `failed`, `revoked`, `reference_learned`, ...
    pub kind: String,
    pub detail: serde_json::Value,
}

/// The storage seam.
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Insert or replace a node by id (tests and tools; enrollment uses [`Store::enroll_node`]).
    fn put_node(&self, node: &NodeRecord) -> Result<(), StoreError>;
    /// Record an enrollment in one transaction: a new node is inserted; the node of a TPM
    /// that enrolled before keeps its state, failures, reason and group (they belong to the
    /// TPM, not to the agent's run) and takes the request's name, keys and endpoints. Refused
    /// when the TPM's node is revoked ([`StoreError::Revoked`]) or the name belongs to
    /// another node ([`StoreError::NameTaken`]), both checked inside the transaction. When
    /// the AK changed (a credential activation proved a new AK on the same EK: a cleared
    /// TPM, which sets its reset counters back), the TPM clock baseline restarts. Returns
    /// the node as it was before, if any.
    /// The audit entry, built from the node as it was (`None`: a new node), is appended in
    /// the same transaction: an enrollment that cannot be logged does not happen.
    fn enroll_node(
        &self,
        node: &NodeRecord,
        entry: &dyn Fn(Option<&NodeRecord>) -> custody_audit::Entry,
        log: &mut AuditLog,
    ) -> Result<Option<NodeRecord>, StoreError>;
    /// Apply an operator's or the verifier's decision and append its entries in one
    /// transaction. Returns whether it changed anything (a group change for a node that
    /// is gone does not; nothing is appended then).
    fn decide(
        &self,
        decision: Decision<'_>,
        entries: &[custody_audit::Entry],
        log: &mut AuditLog,
    ) -> Result<bool, StoreError>;
    /// Put a node in a reference-value group (the operator's `custody nodes group`).
    fn set_group(&self, id: &str, group: &str) -> Result<bool, StoreError>;
    fn node(&self, id: &str) -> Result<Option<NodeRecord>, StoreError>;
    fn node_by_name(&self, name: &str) -> Result<Option<NodeRecord>, StoreError>;
    fn nodes(&self) -> Result<Vec<NodeRecord>, StoreError>;
    /// Remove a node (the operator's `custody nodes remove`) and append `entry` to `log`
    /// in the same transaction; its results and events stay as history. Returns whether
    /// it existed (nothing is appended when it did not).
    fn remove_node(
        &self,
        id: &str,
        entry: &custody_audit::Entry,
        log: &mut AuditLog,
    ) -> Result<bool, StoreError>;
    /// Nodes removed at or after `since` (seconds), and revoked nodes whose revocation
    /// (their last update) is at or after it: the verifier's deny list.
    fn denied_since(&self, since: i64) -> Result<Vec<custody_mover::deny::DeniedNode>, StoreError>;
    /// Every node's name, state, and when it last had a round and last passed one.
    fn node_times(&self) -> Result<Vec<NodeTimes>, StoreError>;
    /// When node `id` was removed, if it was and has not enrolled again since.
    fn removed_at(&self, id: &str) -> Result<Option<i64>, StoreError>;
    /// The node's new state, the round's result and its audit entries, in one
    /// transaction; returns the result id. [`StoreError::NodeGone`] when the node was
    /// removed meanwhile.
    fn record_round(&self, round: RoundRows<'_>, log: &mut AuditLog) -> Result<i64, StoreError> {
        let mut out = self.record_rounds(&[round], log)?;
        out.pop()
            .unwrap_or_else(|| Err(StoreError::Corrupt("no outcome for the round".into())))
    }
    /// Several rounds' [`Store::record_round`] at once (a group commit): one outcome per
    /// round, in order. A round whose node is gone fails alone (and its entries are not
    /// appended); the outer error is a failure of the whole write, which then recorded
    /// none of them, neither results nor entries.
    fn record_rounds(
        &self,
        rounds: &[RoundRows<'_>],
        log: &mut AuditLog,
    ) -> Result<Vec<Result<i64, StoreError>>, StoreError>;
    fn latest_result(&self, node_id: &str) -> Result<Option<ResultRecord>, StoreError>;
    fn results(&self, node_id: &str, limit: u32) -> Result<Vec<ResultRecord>, StoreError>;
    fn reference(&self, group: &str) -> Result<Option<Reference>, StoreError>;
    /// Every group's reference values, by group name.
    fn references(&self) -> Result<Vec<(String, Reference)>, StoreError>;
    fn set_reference(&self, group: &str, reference: &Reference) -> Result<(), StoreError>;
    /// Store a learnt reference unless the group already has one; whether it was stored.
    fn learn_reference(&self, group: &str, reference: &Reference) -> Result<bool, StoreError>;
    fn add_event(&self, event: &Event) -> Result<i64, StoreError>;
    /// Latest events first; all nodes when `node_id` is `None`.
    fn events(&self, node_id: Option<&str>, limit: u32) -> Result<Vec<Event>, StoreError>;
    /// Keep a signed registry the verifier accepted (its version is the key: a version is
    /// never replaced by other bytes).
    fn put_registry(&self, r: &RegistryRecord) -> Result<(), StoreError>;
    /// The newest accepted registry.
    fn latest_registry(&self) -> Result<Option<RegistryRecord>, StoreError>;
    /// Small named values the service remembers across restarts (the policy digest last used).
    fn setting(&self, key: &str) -> Result<Option<String>, StoreError>;
    fn set_setting(&self, key: &str, value: &str) -> Result<(), StoreError>;
    /// Insert or replace a migration by id (the ticket is kept from the first insert).
    fn put_migration(&self, m: &MigrationRecord) -> Result<(), StoreError>;
    fn migration(&self, id: &str) -> Result<Option<MigrationRecord>, StoreError>;
    /// The newest `limit` migrations, oldest first.
    fn migrations(&self, limit: u32) -> Result<Vec<MigrationRecord>, StoreError>;
    /// Migrations still `running` or `exported` (to watch again after a restart).
    fn unfinished_migrations(&self) -> Result<Vec<MigrationRecord>, StoreError>;
}

/// A migration the verifier ran: the operator's view (JSON) and the signed ticket, so the
/// list and an unfinished move's watcher survive a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationRecord {
    pub id: String,
    pub state: String,
    pub issued_at: i64,
    pub doc: String,
    pub ticket: Vec<u8>,
}

/// A signed registry (COSE_Sign1 bytes) the verifier accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryRecord {
    pub version: u64,
    pub digest: String,
    pub kid: String,
    pub body: Vec<u8>,
    pub loaded_at: i64,
}

/// Schema migrations, applied in order; the index + 1 is the schema version. Never edit
/// a shipped entry: append a new one.
const MIGRATIONS: &[&str] = &[
    // 1: nodes, results, reference values, events.
    "CREATE TABLE nodes (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        grp TEXT NOT NULL,
        endpoint TEXT NOT NULL,
        state TEXT NOT NULL,
        reason TEXT,
        ek_cert_sha256 TEXT,
        ek_public BLOB NOT NULL,
        ak_public BLOB NOT NULL,
        enrolled_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        last_round_at INTEGER,
        failures INTEGER NOT NULL,
        tpm_clock TEXT
    );
    CREATE TABLE results (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        node_id TEXT NOT NULL,
        at INTEGER NOT NULL,
        status TEXT NOT NULL,
        failed_check TEXT,
        reasons TEXT NOT NULL,
        ear BLOB NOT NULL,
        evidence_sha256 TEXT NOT NULL
    );
    CREATE INDEX results_node ON results(node_id, id);
    CREATE TABLE reference_values (
        grp TEXT PRIMARY KEY,
        body TEXT NOT NULL
    );
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at INTEGER NOT NULL,
        node_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        detail TEXT NOT NULL
    );
    CREATE INDEX events_node ON events(node_id, id);",
    // 2: sovereignty and migration: the locality responder and attested session keys of a
    // node, the policy input of each result (for `custody policy explain`), the registry
    // versions the verifier has used.
    "ALTER TABLE nodes ADD COLUMN locality_endpoint TEXT;
    ALTER TABLE nodes ADD COLUMN session_keys TEXT;
    ALTER TABLE results ADD COLUMN input TEXT;
    CREATE TABLE registries (
        version INTEGER PRIMARY KEY,
        digest TEXT NOT NULL,
        kid TEXT NOT NULL,
        body BLOB NOT NULL,
        loaded_at INTEGER NOT NULL
    );
    CREATE TABLE settings (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );",
    // 3: where an agent takes checkpoint moves.
    "ALTER TABLE nodes ADD COLUMN move_endpoint TEXT;",
    // 4: migrations outlive the process that ran them.
    "CREATE TABLE migrations (
        id TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        issued_at INTEGER NOT NULL,
        doc TEXT NOT NULL,
        ticket BLOB NOT NULL
    );
    CREATE INDEX migrations_state ON migrations(state);
    CREATE INDEX migrations_issued ON migrations(issued_at);",
    // 5: removed nodes, until their certificates and tickets are past (the deny list).
    "CREATE TABLE removed_nodes (
        id TEXT PRIMARY KEY,
        removed_at INTEGER NOT NULL
    );",
    // 6: when each node last passed a round (for `/metrics` and alerts).
    "ALTER TABLE nodes ADD COLUMN last_pass_at INTEGER;",
];

#[derive(Debug)]
pub struct SqliteStore {
    conn: Mutex<rusqlite::Connection>,
    /// A second connection for reads: in WAL mode it reads the last commit while the
    /// writer works, so a round's lookups do not queue behind another round's write.
    read: Mutex<rusqlite::Connection>,
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = rusqlite::Connection::open(path)?;
        // WAL: readers (operator API) never block the writer (rounds); NORMAL: a commit
        // survives a process crash; a power cut may lose the last commits, never corrupt.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let read = rusqlite::Connection::open(path)?;
        read.busy_timeout(std::time::Duration::from_secs(5))?;
        let s = Self {
            conn: Mutex::new(conn),
            read: Mutex::new(read),
        };
        s.migrate()?;
        Ok(s)
    }

    fn read(&self) -> MutexGuard<'_, rusqlite::Connection> {
        // Reads only: a panic cannot leave anything half done.
        self.read.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Current schema version (number of migrations applied).
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        Ok(self.lock().query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            [],
            |r| r.get(0),
        )?)
    }

    fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = self.lock();
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
        )?;
        let have: i64 = conn.query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            [],
            |r| r.get(0),
        )?;
        let known = MIGRATIONS.len() as i64;
        if have > known {
            return Err(StoreError::FutureSchema { found: have, known });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(have as usize) {
            let tx = conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.execute(
                "INSERT INTO schema_migrations(version, applied_at) VALUES (?1, ?2)",
                rusqlite::params![i as i64 + 1, crate::now()],
            )?;
            tx.commit()?;
        }
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, rusqlite::Connection> {
        // A panic while holding the lock cannot leave a half-applied write: every write
        // is one SQLite transaction.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

const NODE_COLS: &str = "id, name, grp, endpoint, state, reason, ek_cert_sha256, ek_public, ak_public, enrolled_at, updated_at, last_round_at, failures, tpm_clock, locality_endpoint, session_keys, move_endpoint";

fn node_from_row(r: &rusqlite::Row<'_>) -> Result<NodeRecord, StoreError> {
    let state: String = r.get(4)?;
    let clock: Option<String> = r.get(13)?;
    let failures: i64 = r.get(12)?;
    Ok(NodeRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        group: r.get(2)?,
        endpoint: r.get(3)?,
        state: NodeState::parse(&state)?,
        reason: r.get(5)?,
        ek_cert_sha256: r.get(6)?,
        ek_public: r.get(7)?,
        ak_public: r.get(8)?,
        enrolled_at: r.get(9)?,
        updated_at: r.get(10)?,
        last_round_at: r.get(11)?,
        failures: u32::try_from(failures).map_err(|_| StoreError::Corrupt("failures".into()))?,
        tpm_clock: clock
            .map(|c| serde_json::from_str(&c).map_err(|e| StoreError::Corrupt(format!("tpm_clock: {e}"))))
            .transpose()?,
        locality_endpoint: r.get(14)?,
        session_keys: r.get(15)?,
        move_endpoint: r.get(16)?,
    })
}

fn result_from_row(r: &rusqlite::Row<'_>) -> Result<ResultRecord, StoreError> {
    let reasons: String = r.get(5)?;
    Ok(ResultRecord {
        id: r.get(0)?,
        node_id: r.get(1)?,
        at: r.get(2)?,
        status: r.get(3)?,
        failed_check: r.get(4)?,
        reasons: serde_json::from_str(&reasons).map_err(|e| StoreError::Corrupt(format!("reasons: {e}")))?,
        ear: r.get(6)?,
        evidence_sha256: r.get(7)?,
        input: r.get(8)?,
    })
}

fn put_node_in(conn: &rusqlite::Connection, n: &NodeRecord) -> Result<(), StoreError> {
    let clock = n
        .tpm_clock
        .map(|c| serde_json::to_string(&c).map_err(|e| StoreError::Corrupt(e.to_string())))
        .transpose()?;
    conn.prepare_cached(&format!(
        "INSERT OR REPLACE INTO nodes ({NODE_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)"
    ))?
    .execute(rusqlite::params![
        n.id,
        n.name,
        n.group,
        n.endpoint,
        n.state.as_str(),
        n.reason,
        n.ek_cert_sha256,
        n.ek_public,
        n.ak_public,
        n.enrolled_at,
        n.updated_at,
        n.last_round_at,
        i64::from(n.failures),
        clock,
        n.locality_endpoint,
        n.session_keys,
        n.move_endpoint
    ])?;
    Ok(())
}

/// One round's writes inside the caller's transaction: the node's round-owned columns
/// (an UPDATE, so a re-enrollment that landed while the round ran keeps its keys and
/// endpoints, and the id and name indexes are not rewritten), then the result row.
fn record_round_in(
    conn: &rusqlite::Connection,
    node: &NodeRecord,
    result: &ResultRecord,
) -> Result<i64, StoreError> {
    let clock = node
        .tpm_clock
        .map(|c| serde_json::to_string(&c).map_err(|e| StoreError::Corrupt(e.to_string())))
        .transpose()?;
    let updated = conn
        .prepare_cached(
            // Revoked is terminal: a round concluded from a read taken before a revocation
            // committed must not write `trusted` (or a cleared reason) over it.
            "UPDATE nodes SET state = CASE WHEN state = 'revoked' THEN 'revoked' ELSE ?2 END, \
             reason = CASE WHEN state = 'revoked' THEN reason ELSE ?3 END, failures = ?4, tpm_clock = ?5, \
             session_keys = CASE WHEN state = 'revoked' THEN NULL ELSE ?6 END, last_round_at = ?7, updated_at = ?8, \
             last_pass_at = CASE WHEN ?9 THEN ?7 ELSE last_pass_at END WHERE id = ?1",
        )?
        .execute(rusqlite::params![
            node.id,
            node.state.as_str(),
            node.reason,
            i64::from(node.failures),
            clock,
            node.session_keys,
            node.last_round_at,
            node.updated_at,
            result.failed_check.is_none()
        ])?;
    if updated == 0 {
        return Err(StoreError::NodeGone(node.id.clone()));
    }
    let reasons = serde_json::to_string(&result.reasons).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    conn.prepare_cached(
        "INSERT INTO results (node_id, at, status, failed_check, reasons, ear, evidence_sha256, input) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(rusqlite::params![
        result.node_id,
        result.at,
        result.status,
        result.failed_check,
        reasons,
        result.ear,
        result.evidence_sha256,
        result.input
    ])?;
    Ok(conn.last_insert_rowid())
}

/// A plain trusted node for unit tests elsewhere in the crate.
#[cfg(test)]
impl NodeRecord {
    pub(crate) fn sample(id: &str) -> Self {
        NodeRecord {
            id: id.into(),
            name: format!("name-{id}"),
            group: "default".into(),
            endpoint: "127.0.0.1:1".into(),
            state: NodeState::Trusted,
            reason: None,
            ek_cert_sha256: None,
            ek_public: vec![1],
            ak_public: vec![2],
            enrolled_at: 1,
            updated_at: 1,
            last_round_at: None,
            failures: 0,
            tpm_clock: None,
            locality_endpoint: None,
            session_keys: None,
            move_endpoint: None,
        }
    }
}

fn migration_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<MigrationRecord> {
    Ok(MigrationRecord {
        id: r.get(0)?,
        state: r.get(1)?,
        issued_at: r.get(2)?,
        doc: r.get(3)?,
        ticket: r.get(4)?,
    })
}

impl Store for SqliteStore {
    fn put_node(&self, node: &NodeRecord) -> Result<(), StoreError> {
        put_node_in(&self.lock(), node)
    }

    fn enroll_node(
        &self,
        node: &NodeRecord,
        entry: &dyn Fn(Option<&NodeRecord>) -> custody_audit::Entry,
        log: &mut AuditLog,
    ) -> Result<Option<NodeRecord>, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let previous = {
            let mut st = tx.prepare_cached(&format!("SELECT {NODE_COLS} FROM nodes WHERE id = ?1"))?;
            let mut rows = st.query([&node.id])?;
            rows.next()?.map(node_from_row).transpose()?
        };
        if let Some(p) = &previous {
            if p.state == NodeState::Revoked {
                return Err(StoreError::Revoked {
                    id: p.id.clone(),
                    name: p.name.clone(),
                    reason: p.reason.clone().unwrap_or_default(),
                });
            }
        }
        let holder: Option<String> = tx
            .prepare_cached("SELECT id FROM nodes WHERE name = ?1 AND id != ?2")?
            .query_row(rusqlite::params![node.name, node.id], |r| r.get(0))
            .optional()?;
        if holder.is_some() {
            return Err(StoreError::NameTaken(node.name.clone()));
        }
        // Enrolled again after a removal: no longer denied.
        tx.prepare_cached("DELETE FROM removed_nodes WHERE id = ?1")?
            .execute([&node.id])?;
        match &previous {
            None => put_node_in(&tx, node)?,
            Some(_) => {
                // An upsert by id of what the enrollment proved; state, failures, reason and
                // group stay the TPM's. The last round's session keys belonged to the
                // previous agent run: gone until the next passing round.
                let changed = tx
                    .prepare_cached(
                        "UPDATE nodes SET name = ?2, endpoint = ?3, ek_cert_sha256 = ?4, ek_public = ?5, ak_public = ?6, \
                         enrolled_at = ?7, updated_at = ?8, locality_endpoint = ?9, move_endpoint = ?10, session_keys = NULL, \
                         tpm_clock = CASE WHEN ak_public = ?6 THEN tpm_clock ELSE NULL END \
                         WHERE id = ?1 AND state != 'revoked'",
                    )?
                    .execute(rusqlite::params![
                        node.id,
                        node.name,
                        node.endpoint,
                        node.ek_cert_sha256,
                        node.ek_public,
                        node.ak_public,
                        node.enrolled_at,
                        node.updated_at,
                        node.locality_endpoint,
                        node.move_endpoint
                    ])?;
                if changed != 1 {
                    return Err(StoreError::Conflict(format!(
                        "node `{}` changed during enrollment",
                        node.id
                    )));
                }
            }
        }
        let pending = log.append_in(&tx, &[entry(previous.as_ref())])?;
        crate::fault_point("abort_before_commit");
        tx.commit()?;
        log.applied(pending)?;
        Ok(previous)
    }

    fn decide(
        &self,
        decision: Decision<'_>,
        entries: &[custody_audit::Entry],
        log: &mut AuditLog,
    ) -> Result<bool, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let changed = match decision {
            Decision::Reference { group, reference } => set_reference_in(&tx, group, reference)?,
            Decision::RemoveReference { group } => {
                tx.execute("DELETE FROM reference_values WHERE grp = ?1", [group])? == 1
            }
            Decision::Group { id, group } => set_group_in(&tx, id, group)?,
            Decision::Registry(r) => put_registry_in(&tx, r)?,
            Decision::Setting { key, value } => set_setting_in(&tx, key, value)?,
            Decision::Migration(m) => put_migration_in(&tx, m)?,
        };
        if !changed {
            return Ok(false);
        }
        let pending = log.append_in(&tx, entries)?;
        crate::fault_point("abort_before_commit");
        tx.commit()?;
        log.applied(pending)?;
        Ok(true)
    }

    fn set_group(&self, id: &str, group: &str) -> Result<bool, StoreError> {
        set_group_in(&self.lock(), id, group)
    }

    fn node(&self, id: &str) -> Result<Option<NodeRecord>, StoreError> {
        let conn = self.read();
        let mut st = conn.prepare_cached(&format!("SELECT {NODE_COLS} FROM nodes WHERE id = ?1"))?;
        let mut rows = st.query([id])?;
        rows.next()?.map(node_from_row).transpose()
    }

    fn node_by_name(&self, name: &str) -> Result<Option<NodeRecord>, StoreError> {
        let conn = self.read();
        let mut st = conn.prepare_cached(&format!("SELECT {NODE_COLS} FROM nodes WHERE name = ?1"))?;
        let mut rows = st.query([name])?;
        rows.next()?.map(node_from_row).transpose()
    }

    fn nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        let conn = self.read();
        let mut st = conn.prepare_cached(&format!("SELECT {NODE_COLS} FROM nodes ORDER BY name"))?;
        let mut rows = st.query([])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            out.push(node_from_row(r)?);
        }
        Ok(out)
    }

    fn remove_node(
        &self,
        id: &str,
        entry: &custody_audit::Entry,
        log: &mut AuditLog,
    ) -> Result<bool, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let n = tx
            .prepare_cached("DELETE FROM nodes WHERE id = ?1")?
            .execute([id])?;
        if n == 0 {
            return Ok(false);
        }
        tx.prepare_cached("INSERT OR REPLACE INTO removed_nodes (id, removed_at) VALUES (?1, ?2)")?
            .execute(rusqlite::params![id, crate::now()])?;
        let pending = log.append_in(&tx, std::slice::from_ref(entry))?;
        crate::fault_point("abort_before_commit");
        tx.commit()?;
        log.applied(pending)?;
        Ok(true)
    }

    fn node_times(&self) -> Result<Vec<NodeTimes>, StoreError> {
        let conn = self.read();
        let mut st =
            conn.prepare_cached("SELECT name, state, last_round_at, last_pass_at FROM nodes ORDER BY name")?;
        let mut rows = st.query([])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let state: String = r.get(1)?;
            out.push(NodeTimes {
                name: r.get(0)?,
                state: NodeState::parse(&state)?,
                last_round_at: r.get(2)?,
                last_pass_at: r.get(3)?,
            });
        }
        Ok(out)
    }

    fn removed_at(&self, id: &str) -> Result<Option<i64>, StoreError> {
        Ok(self
            .read()
            .prepare_cached("SELECT removed_at FROM removed_nodes WHERE id = ?1")?
            .query_row([id], |r| r.get(0))
            .optional()?)
    }

    fn denied_since(&self, since: i64) -> Result<Vec<custody_mover::deny::DeniedNode>, StoreError> {
        use custody_mover::deny::{Denial, DeniedNode};
        let conn = self.read();
        let mut out = Vec::new();
        let mut st =
            conn.prepare_cached("SELECT id, removed_at FROM removed_nodes WHERE removed_at >= ?1")?;
        let mut rows = st.query([since])?;
        while let Some(r) = rows.next()? {
            out.push(DeniedNode {
                id: r.get(0)?,
                denial: Denial::Removed,
                since: r.get(1)?,
            });
        }
        let mut st = conn.prepare_cached(
            "SELECT id, updated_at FROM nodes WHERE state = 'revoked' AND updated_at >= ?1",
        )?;
        let mut rows = st.query([since])?;
        while let Some(r) = rows.next()? {
            out.push(DeniedNode {
                id: r.get(0)?,
                denial: Denial::Revoked,
                since: r.get(1)?,
            });
        }
        Ok(out)
    }

    fn record_rounds(
        &self,
        rounds: &[RoundRows<'_>],
        log: &mut AuditLog,
    ) -> Result<Vec<Result<i64, StoreError>>, StoreError> {
        let mut conn = self.lock();
        // IMMEDIATE: take the write lock at BEGIN. A deferred transaction starts as a
        // reader, and upgrading it fails at once (SQLITE_BUSY, no busy wait) when the
        // audit log's connection to the same file committed in between.
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut out = Vec::with_capacity(rounds.len());
        let mut entries = Vec::new();
        for (node, result, audit) in rounds {
            // A gone node writes nothing, so it fails alone; any SQLite error fails the
            // whole transaction (and so every round in it).
            match record_round_in(&tx, node, result) {
                Err(StoreError::NodeGone(id)) => out.push(Err(StoreError::NodeGone(id))),
                other => {
                    out.push(Ok(other?));
                    entries.extend(audit.iter().cloned());
                }
            }
        }
        // A decision that cannot be logged is not a decision: the entries ride in the
        // same transaction, and a failed append fails every round in it.
        let pending = log.append_in(&tx, &entries)?;
        crate::fault_point("abort_before_commit");
        tx.commit()?;
        log.applied(pending)?;
        Ok(out)
    }

    fn latest_result(&self, node_id: &str) -> Result<Option<ResultRecord>, StoreError> {
        Ok(self.results(node_id, 1)?.into_iter().next())
    }

    fn results(&self, node_id: &str, limit: u32) -> Result<Vec<ResultRecord>, StoreError> {
        let conn = self.read();
        let mut st = conn.prepare_cached(
            "SELECT id, node_id, at, status, failed_check, reasons, ear, evidence_sha256, input FROM results WHERE node_id = ?1 ORDER BY id DESC LIMIT ?2",
        )?;
        let mut rows = st.query(rusqlite::params![node_id, limit])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            out.push(result_from_row(r)?);
        }
        Ok(out)
    }

    fn reference(&self, group: &str) -> Result<Option<Reference>, StoreError> {
        let conn = self.read();
        let mut st = conn.prepare_cached("SELECT body FROM reference_values WHERE grp = ?1")?;
        let mut rows = st.query([group])?;
        match rows.next()? {
            None => Ok(None),
            Some(r) => {
                let body: String = r.get(0)?;
                serde_json::from_str(&body)
                    .map(Some)
                    .map_err(|e| StoreError::Corrupt(format!("reference values: {e}")))
            }
        }
    }

    fn references(&self) -> Result<Vec<(String, Reference)>, StoreError> {
        let conn = self.read();
        let mut st = conn.prepare_cached("SELECT grp, body FROM reference_values ORDER BY grp")?;
        let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (group, body) = row?;
            let r = serde_json::from_str(&body)
                .map_err(|e| StoreError::Corrupt(format!("reference values of {group}: {e}")))?;
            out.push((group, r));
        }
        Ok(out)
    }

    fn set_reference(&self, group: &str, reference: &Reference) -> Result<(), StoreError> {
        set_reference_in(&self.lock(), group, reference).map(drop)
    }

    fn learn_reference(&self, group: &str, reference: &Reference) -> Result<bool, StoreError> {
        let body = serde_json::to_string(reference).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let n = self.lock().execute(
            "INSERT OR IGNORE INTO reference_values (grp, body) VALUES (?1, ?2)",
            rusqlite::params![group, body],
        )?;
        Ok(n == 1)
    }

    fn add_event(&self, e: &Event) -> Result<i64, StoreError> {
        let conn = self.lock();
        conn.prepare_cached("INSERT INTO events (at, node_id, kind, detail) VALUES (?1, ?2, ?3, ?4)")?
            .execute(rusqlite::params![e.at, e.node_id, e.kind, e.detail.to_string()])?;
        Ok(conn.last_insert_rowid())
    }

    fn events(&self, node_id: Option<&str>, limit: u32) -> Result<Vec<Event>, StoreError> {
        let conn = self.read();
        let mut st = conn.prepare_cached(
            "SELECT id, at, node_id, kind, detail FROM events WHERE (?1 IS NULL OR node_id = ?1) ORDER BY id DESC LIMIT ?2",
        )?;
        let mut rows = st.query(rusqlite::params![node_id, limit])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let detail: String = r.get(4)?;
            out.push(Event {
                id: r.get(0)?,
                at: r.get(1)?,
                node_id: r.get(2)?,
                kind: r.get(3)?,
                detail: serde_json::from_str(&detail)
                    .map_err(|e| StoreError::Corrupt(format!("event: {e}")))?,
            });
        }
        Ok(out)
    }

    fn put_registry(&self, r: &RegistryRecord) -> Result<(), StoreError> {
        put_registry_in(&self.lock(), r).map(drop)
    }

    fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(rusqlite::OptionalExtension::optional(self.read().query_row(
            "SELECT value FROM settings WHERE key = ?1",
            [key],
            |r| r.get(0),
        ))?)
    }

    fn set_setting(&self, key: &str, value: &str) -> Result<(), StoreError> {
        set_setting_in(&self.lock(), key, value).map(drop)
    }

    fn put_migration(&self, m: &MigrationRecord) -> Result<(), StoreError> {
        put_migration_in(&self.lock(), m).map(drop)
    }

    fn migration(&self, id: &str) -> Result<Option<MigrationRecord>, StoreError> {
        let conn = self.read();
        let mut st =
            conn.prepare_cached("SELECT id, state, issued_at, doc, ticket FROM migrations WHERE id = ?1")?;
        let r = rusqlite::OptionalExtension::optional(st.query_row([id], migration_row))?;
        Ok(r)
    }

    fn migrations(&self, limit: u32) -> Result<Vec<MigrationRecord>, StoreError> {
        let conn = self.read();
        let mut st = conn.prepare_cached(
            "SELECT id, state, issued_at, doc, ticket FROM
               (SELECT rowid AS seq, * FROM migrations ORDER BY issued_at DESC, seq DESC LIMIT ?1)
             ORDER BY issued_at, seq",
        )?;
        let rows = st.query_map([limit], migration_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn unfinished_migrations(&self) -> Result<Vec<MigrationRecord>, StoreError> {
        let conn = self.read();
        let mut st = conn.prepare_cached(
            "SELECT id, state, issued_at, doc, ticket FROM migrations WHERE state IN ('running', 'exported') ORDER BY issued_at",
        )?;
        let rows = st.query_map([], migration_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn latest_registry(&self) -> Result<Option<RegistryRecord>, StoreError> {
        let conn = self.read();
        let mut st = conn.prepare_cached(
            "SELECT version, digest, kid, body, loaded_at FROM registries ORDER BY version DESC LIMIT 1",
        )?;
        let mut rows = st.query([])?;
        match rows.next()? {
            Some(r) => Ok(Some(Self::registry_row(r)?)),
            None => Ok(None),
        }
    }
}

impl SqliteStore {
    fn registry_row(r: &rusqlite::Row<'_>) -> Result<RegistryRecord, StoreError> {
        let version: i64 = r.get(0)?;
        Ok(RegistryRecord {
            version: u64::try_from(version).map_err(|_| StoreError::Corrupt("registry version".into()))?,
            digest: r.get(1)?,
            kid: r.get(2)?,
            body: r.get(3)?,
            loaded_at: r.get(4)?,
        })
    }
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        hex::decode(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

// The writes that can be decisions, on a connection or inside a transaction (both deref
// to `rusqlite::Connection`); each says whether it changed anything.

fn set_group_in(conn: &rusqlite::Connection, id: &str, group: &str) -> Result<bool, StoreError> {
    let n = conn
        .prepare_cached("UPDATE nodes SET grp = ?2 WHERE id = ?1")?
        .execute([id, group])?;
    Ok(n == 1)
}

fn set_reference_in(
    conn: &rusqlite::Connection,
    group: &str,
    reference: &Reference,
) -> Result<bool, StoreError> {
    let body = serde_json::to_string(reference).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    conn.execute(
        "INSERT OR REPLACE INTO reference_values (grp, body) VALUES (?1, ?2)",
        rusqlite::params![group, body],
    )?;
    Ok(true)
}

/// A version is never replaced by other bytes (`Conflict`); the same bytes again change
/// nothing.
fn put_registry_in(conn: &rusqlite::Connection, r: &RegistryRecord) -> Result<bool, StoreError> {
    let version = i64::try_from(r.version).map_err(|_| StoreError::Corrupt("registry version".into()))?;
    let existing: Option<String> = rusqlite::OptionalExtension::optional(conn.query_row(
        "SELECT digest FROM registries WHERE version = ?1",
        [version],
        |row| row.get(0),
    ))?;
    match existing {
        Some(d) if d == r.digest => Ok(false),
        Some(d) => Err(StoreError::Conflict(format!(
            "registry version {} is already stored with digest {d}",
            r.version
        ))),
        None => {
            conn.execute(
                "INSERT INTO registries (version, digest, kid, body, loaded_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                rusqlite::params![version, r.digest, r.kid, r.body, r.loaded_at],
            )?;
            Ok(true)
        }
    }
}

fn set_setting_in(conn: &rusqlite::Connection, key: &str, value: &str) -> Result<bool, StoreError> {
    conn.execute(
        "INSERT OR REPLACE INTO settings (key, value) VALUES (?1, ?2)",
        [key, value],
    )?;
    Ok(true)
}

fn put_migration_in(conn: &rusqlite::Connection, m: &MigrationRecord) -> Result<bool, StoreError> {
    conn.execute(
        "INSERT INTO migrations (id, state, issued_at, doc, ticket) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT(id) DO UPDATE SET state = excluded.state, doc = excluded.doc",
        rusqlite::params![m.id, m.state, m.issued_at, m.doc, m.ticket],
    )?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn node(id: &str) -> NodeRecord {
        NodeRecord {
            id: id.into(),
            name: format!("name-{id}"),
            group: "default".into(),
            endpoint: "127.0.0.1:1".into(),
            state: NodeState::Enrolled,
            reason: None,
            ek_cert_sha256: Some("ab".into()),
            ek_public: vec![1, 2, 3],
            ak_public: vec![4, 5],
            enrolled_at: 10,
            updated_at: 10,
            last_round_at: None,
            failures: 0,
            tpm_clock: Some(TpmClock {
                reset_count: 1,
                restart_count: 2,
                clock: 3,
            }),
            locality_endpoint: None,
            session_keys: Some("00".repeat(64)),
            move_endpoint: Some("127.0.0.1:7001".into()),
        }
    }

    fn result_for(node_id: &str, at: i64) -> ResultRecord {
        ResultRecord {
            id: 0,
            node_id: node_id.into(),
            at,
            status: "affirming".into(),
            failed_check: None,
            reasons: vec![],
            ear: vec![9; 4],
            evidence_sha256: "00".into(),
            input: Some("{}".into()),
        }
    }

    /// A group commit records every round in order with its own id; a node removed
    /// meanwhile fails alone and writes nothing, and the others still land.
    #[test]
    fn a_group_commit_records_each_round_and_a_gone_node_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("g.db")).unwrap();
        let mut log = AuditLog::open(&dir.path().join("g.db")).unwrap();
        for id in ["a", "c"] {
            s.put_node(&node(id)).unwrap();
        }
        let mut a = node("a");
        a.state = NodeState::Trusted;
        a.last_round_at = Some(20);
        let mut c = node("c");
        c.state = NodeState::Failed;
        c.failures = 1;
        c.reason = Some("policy".into());
        let (ra, rb, rc) = (result_for("a", 20), result_for("b", 20), result_for("c", 21));
        let e = |n: &str| {
            vec![custody_audit::Entry::AttestationResult(
                custody_audit::entry::ResultEntry::example(n, 20),
            )]
        };
        let (ea, eb, ec) = (e("a"), e("b"), e("c"));
        let out = s
            .record_rounds(
                &[(&a, &ra, &ea), (&node("b"), &rb, &eb), (&c, &rc, &ec)],
                &mut log,
            )
            .unwrap();
        // The gone node's entry is not appended either.
        assert_eq!(log.size(), 2);
        assert_eq!(log.leaf(1).unwrap().unwrap(), ec[0].to_leaf().unwrap());
        assert_eq!(out.len(), 3);
        let id_a = *out[0].as_ref().unwrap();
        assert!(matches!(&out[1], Err(StoreError::NodeGone(id)) if id == "b"));
        let id_c = *out[2].as_ref().unwrap();
        assert!(id_c > id_a);
        assert!(s.node("b").unwrap().is_none(), "a gone node is not brought back");
        assert!(s.results("b", 10).unwrap().is_empty());
        let got_a = s.node("a").unwrap().unwrap();
        assert_eq!((got_a.state, got_a.last_round_at), (NodeState::Trusted, Some(20)));
        let got_c = s.node("c").unwrap().unwrap();
        assert_eq!(
            (got_c.state, got_c.failures, got_c.reason.as_deref()),
            (NodeState::Failed, 1, Some("policy"))
        );
        assert_eq!(s.latest_result("a").unwrap().unwrap().id, id_a);
        assert_eq!(s.latest_result("c").unwrap().unwrap().id, id_c);
    }

    /// A round writes only what a round decides (state, failures, reason, clock, session
    /// keys, times): a re-enrollment that landed while the round ran keeps its AK and
    /// endpoints.
    #[test]
    fn a_round_does_not_overwrite_a_re_enrollment_that_landed_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("r.db")).unwrap();
        let mut log = AuditLog::open(&dir.path().join("r.db")).unwrap();
        let before = node("a");
        s.put_node(&before).unwrap();
        let mut enrolled_again = node("a");
        enrolled_again.ak_public = vec![7, 7, 7];
        enrolled_again.endpoint = "127.0.0.1:2".into();
        enrolled_again.enrolled_at = 15;
        s.put_node(&enrolled_again).unwrap();
        // The round started from the record read before the re-enrollment.
        let mut concluded = before.clone();
        concluded.state = NodeState::Trusted;
        concluded.updated_at = 16;
        s.record_round((&concluded, &result_for("a", 16), &[]), &mut log)
            .unwrap();
        let got = s.node("a").unwrap().unwrap();
        assert_eq!(got.ak_public, vec![7, 7, 7]);
        assert_eq!(got.endpoint, "127.0.0.1:2");
        assert_eq!(got.enrolled_at, 15);
        assert_eq!((got.state, got.updated_at), (NodeState::Trusted, 16));
    }

    /// Issue 19 item 6: a round concluded from a read taken before a revocation must not
    /// write `trusted` over it (failed before the conditional UPDATE: the row said trusted).
    #[test]
    fn a_late_passing_round_does_not_overwrite_a_revocation() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("v.db")).unwrap();
        let mut log = AuditLog::open(&dir.path().join("v.db")).unwrap();
        let before = node("a");
        s.put_node(&before).unwrap();
        let mut revoked = before.clone();
        revoked.state = NodeState::Revoked;
        revoked.reason = Some("reference_values: PCR 14".into());
        s.record_round((&revoked, &result_for("a", 11), &[]), &mut log)
            .unwrap();
        let mut late = before.clone();
        late.state = NodeState::Trusted;
        late.reason = None;
        s.record_round((&late, &result_for("a", 12), &[]), &mut log)
            .unwrap();
        let got = s.node("a").unwrap().unwrap();
        assert_eq!(got.state, NodeState::Revoked);
        assert_eq!(got.reason.as_deref(), Some("reference_values: PCR 14"));
        assert_eq!(
            got.session_keys, None,
            "a revoked node vouches for no session key"
        );
        assert_eq!(
            s.results("a", 10).unwrap().len(),
            2,
            "the late round is still recorded"
        );
    }

    /// Issue 19 items 4, 5 and 6 at the store: an enrollment keeps the TPM's state,
    /// failures and group, restarts the clock baseline only for a new AK, never replaces
    /// another node that holds the name, and never overwrites a revocation.
    #[test]
    fn enrollment_is_an_upsert_by_id_that_keeps_what_belongs_to_the_tpm() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("e.db")).unwrap();
        let mut log = AuditLog::open(&dir.path().join("e.db")).unwrap();
        let enrolled = |_: Option<&NodeRecord>| {
            custody_audit::Entry::AttestationResult(custody_audit::entry::ResultEntry::example("a", 1))
        };
        let mut a = node("a");
        assert_eq!(s.enroll_node(&a, &enrolled, &mut log).unwrap(), None);
        let mut failing = a.clone();
        failing.state = NodeState::Failed;
        failing.failures = 2;
        failing.reason = Some("reference_values".into());
        s.record_round((&failing, &result_for("a", 11), &[]), &mut log)
            .unwrap();
        assert!(s.set_group("a", "gpu-hosts").unwrap());
        // The same TPM enrolls again (its agent restarted), same AK, new endpoint.
        a.endpoint = "127.0.0.1:9".into();
        a.enrolled_at = 20;
        let prev = s.enroll_node(&a, &enrolled, &mut log).unwrap().unwrap();
        assert_eq!((prev.state, prev.failures), (NodeState::Failed, 2));
        let got = s.node("a").unwrap().unwrap();
        assert_eq!((got.state, got.failures), (NodeState::Failed, 2));
        assert_eq!(got.group, "gpu-hosts");
        assert_eq!(got.endpoint, "127.0.0.1:9");
        assert_eq!(got.session_keys, None);
        assert!(got.tpm_clock.is_some(), "same AK: the clock baseline stays");
        // A new AK on the same EK: the clock baseline restarts.
        a.ak_public = vec![9, 9];
        s.enroll_node(&a, &enrolled, &mut log).unwrap();
        assert_eq!(s.node("a").unwrap().unwrap().tpm_clock, None);
        // Another TPM asking for the same name is refused and deletes nothing.
        let mut b = node("b");
        b.name = a.name.clone();
        assert!(matches!(
            s.enroll_node(&b, &enrolled, &mut log),
            Err(StoreError::NameTaken(_))
        ));
        assert!(s.node("a").unwrap().is_some());
        assert!(s.node("b").unwrap().is_none());
        // Revoked stays revoked.
        let mut revoked = s.node("a").unwrap().unwrap();
        revoked.state = NodeState::Revoked;
        s.record_round((&revoked, &result_for("a", 30), &[]), &mut log)
            .unwrap();
        assert!(matches!(
            s.enroll_node(&a, &enrolled, &mut log),
            Err(StoreError::Revoked { .. })
        ));
        assert_eq!(s.node("a").unwrap().unwrap().state, NodeState::Revoked);
    }

    /// Issue 19 item 10 for enrollments: the node and its entry commit together, so an
    /// enrollment whose entry cannot be written leaves no node behind.
    #[test]
    fn an_enrollment_that_cannot_be_logged_enrolls_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("x.db");
        let s = SqliteStore::open(&db).unwrap();
        let mut log = AuditLog::open(&db).unwrap();
        let enrolled = |_: Option<&NodeRecord>| {
            custody_audit::Entry::AttestationResult(custody_audit::entry::ResultEntry::example("a", 1))
        };
        // A stray row where the next entry goes: the append fails.
        rusqlite::Connection::open(&db)
            .unwrap()
            .execute("INSERT INTO entries(idx, leaf) VALUES (0, x'7b7d')", [])
            .unwrap();
        assert!(s.enroll_node(&node("a"), &enrolled, &mut log).is_err());
        assert!(
            s.node("a").unwrap().is_none(),
            "a node enrolled without its entry"
        );
        assert!(
            !s.decide(Decision::Group { id: "a", group: "g" }, &[], &mut log)
                .unwrap(),
            "no node, nothing changed"
        );
    }

    #[test]
    fn a_learnt_reference_never_replaces_one_that_exists() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("l.db")).unwrap();
        let r = |from: &str| Reference {
            pcrs: BTreeMap::new(),
            source: ReferenceSource::Tofu,
            at: 1,
            learned_from: Some(from.into()),
            pending: true,
        };
        assert!(s.learn_reference("g", &r("first")).unwrap());
        assert!(!s.learn_reference("g", &r("second")).unwrap());
        let got = s.reference("g").unwrap().unwrap();
        assert_eq!(got.learned_from.as_deref(), Some("first"));
        assert!(got.pending);
    }

    #[test]
    fn a_removed_node_keeps_its_history_and_a_late_round_does_not_bring_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("c.db")).unwrap();
        let mut log = AuditLog::open(&dir.path().join("c.db")).unwrap();
        let removed = custody_audit::Entry::Revocation(custody_audit::entry::RevocationEntry {
            node: "a".into(),
            name: "a".into(),
            at: 1,
            action: Some(custody_audit::entry::RevocationAction::Removed),
            reason: Some("retired".into()),
            failed_check: None,
            state: Some("trusted".into()),
            by: Some("operator".into()),
            ek_cert_sha256: None,
        });
        s.put_node(&node("a")).unwrap();
        let r = ResultRecord {
            id: 0,
            node_id: "a".into(),
            at: 11,
            status: "affirming".into(),
            failed_check: None,
            reasons: vec![],
            ear: vec![9; 4],
            evidence_sha256: "00".into(),
            input: None,
        };
        s.record_round((&node("a"), &r, &[]), &mut log).unwrap();
        assert!(s.remove_node("a", &removed, &mut log).unwrap());
        assert_eq!(log.size(), 1, "the removal and its entry commit together");
        assert!(
            !s.remove_node("a", &removed, &mut log).unwrap(),
            "removing twice reports nothing removed"
        );
        assert_eq!(log.size(), 1, "and logs nothing");
        assert!(s.node("a").unwrap().is_none());
        assert!(s.node_by_name("name-a").unwrap().is_none());
        // History stays: the result is still there for an auditor.
        assert_eq!(s.results("a", 10).unwrap().len(), 1);
        // A round that finishes after the removal is refused and leaves no node behind.
        assert!(
            matches!(s.record_round((&node("a"), &r, &[]), &mut log), Err(StoreError::NodeGone(id)) if id == "a")
        );
        assert!(s.node("a").unwrap().is_none());
        assert_eq!(s.results("a", 10).unwrap().len(), 1);
        // The same id can enroll again.
        s.put_node(&node("a")).unwrap();
        assert!(s.node("a").unwrap().is_some());
    }

    #[test]
    fn survives_reopen_and_keeps_history() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.db");
        {
            let s = SqliteStore::open(&p).unwrap();
            let mut log = AuditLog::open(&p).unwrap();
            assert_eq!(s.schema_version().unwrap(), MIGRATIONS.len() as i64);
            s.put_node(&node("a")).unwrap();
            let mut n = node("a");
            n.state = NodeState::Failed;
            n.reason = Some("pcr changed".into());
            n.failures = 1;
            let r = ResultRecord {
                id: 0,
                node_id: "a".into(),
                at: 11,
                status: "contraindicated".into(),
                failed_check: Some("reference_values".into()),
                reasons: vec!["PCR 14 changed".into()],
                ear: vec![9; 4],
                evidence_sha256: "00".into(),
                input: Some(r#"{"node":{"id":"a"}}"#.into()),
            };
            let id = s.record_round((&n, &r, &[]), &mut log).unwrap();
            assert!(id > 0);
            s.add_event(&Event {
                id: 0,
                at: 11,
                node_id: "a".into(),
                kind: "failed".into(),
                detail: serde_json::json!({"reason": "pcr changed"}),
            })
            .unwrap();
            s.set_reference(
                "default",
                &Reference {
                    pcrs: BTreeMap::from([("sha256".into(), BTreeMap::from([(0, "00".into())]))]),
                    source: ReferenceSource::Tofu,
                    at: 1,
                    learned_from: Some("a".into()),
                    pending: false,
                },
            )
            .unwrap();
        }
        let s = SqliteStore::open(&p).unwrap();
        let n = s.node("a").unwrap().unwrap();
        assert_eq!(n.state, NodeState::Failed);
        assert_eq!(n.tpm_clock.unwrap().clock, 3);
        assert_eq!(s.node_by_name("name-a").unwrap().unwrap().id, "a");
        let r = s.latest_result("a").unwrap().unwrap();
        assert_eq!(r.failed_check.as_deref(), Some("reference_values"));
        assert_eq!(r.reasons, vec!["PCR 14 changed".to_string()]);
        assert_eq!(r.input.as_deref(), Some(r#"{"node":{"id":"a"}}"#));
        assert_eq!(n.session_keys.as_deref(), Some("00".repeat(64).as_str()));
        assert_eq!(s.events(Some("a"), 10).unwrap().len(), 1);
        assert_eq!(s.events(None, 10).unwrap().len(), 1);
        assert_eq!(
            s.reference("default").unwrap().unwrap().source,
            ReferenceSource::Tofu
        );
        assert!(s.node("b").unwrap().is_none());
        let mode: String = s
            .lock()
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }

    #[test]
    fn a_version_1_database_migrates_and_keeps_its_nodes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.db");
        {
            // What the first release created, with one node in it.
            let c = rusqlite::Connection::open(&p).unwrap();
            c.execute_batch(
                "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
            )
            .unwrap();
            c.execute_batch(MIGRATIONS[0]).unwrap();
            c.execute("INSERT INTO schema_migrations VALUES (1, 0)", [])
                .unwrap();
            c.execute(
                "INSERT INTO nodes VALUES ('a', 'old', 'default', 'h:1', 'trusted', NULL, NULL, x'01', x'02', 1, 1, NULL, 0, NULL)",
                [],
            )
            .unwrap();
        }
        let s = SqliteStore::open(&p).unwrap();
        assert_eq!(s.schema_version().unwrap(), MIGRATIONS.len() as i64);
        let n = s.node("a").unwrap().unwrap();
        assert_eq!(n.name, "old");
        assert_eq!(n.session_keys, None);
        assert_eq!(n.locality_endpoint, None);
    }

    #[test]
    fn registry_versions_are_kept_and_never_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("c.db")).unwrap();
        assert!(s.latest_registry().unwrap().is_none());
        let r = |v: u64, d: &str| RegistryRecord {
            version: v,
            digest: d.into(),
            kid: "k".into(),
            body: vec![1, 2],
            loaded_at: 5,
        };
        s.put_registry(&r(1, "aa")).unwrap();
        s.put_registry(&r(2, "bb")).unwrap();
        // The same bytes again are fine (a restart reloads the configured file).
        s.put_registry(&r(2, "bb")).unwrap();
        assert!(matches!(
            s.put_registry(&r(2, "cc")),
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(s.latest_registry().unwrap().unwrap(), r(2, "bb"));
        assert_eq!(s.setting("policy_digest").unwrap(), None);
        s.set_setting("policy_digest", "d1").unwrap();
        s.set_setting("policy_digest", "d2").unwrap();
        assert_eq!(s.setting("policy_digest").unwrap().as_deref(), Some("d2"));
    }

    #[test]
    fn refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.db");
        drop(SqliteStore::open(&p).unwrap());
        let c = rusqlite::Connection::open(&p).unwrap();
        c.execute("INSERT INTO schema_migrations VALUES (99, 0)", [])
            .unwrap();
        drop(c);
        assert!(matches!(
            SqliteStore::open(&p),
            Err(StoreError::FutureSchema { found: 99, .. })
        ));
    }

    #[test]
    fn migrations_survive_reopen_keep_their_ticket_and_list_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.db");
        let rec = |id: &str, state: &str, at: i64, ticket: &[u8]| MigrationRecord {
            id: id.into(),
            state: state.into(),
            issued_at: at,
            doc: format!("{{\"id\":\"{id}\",\"state\":\"{state}\"}}"),
            ticket: ticket.to_vec(),
        };
        {
            let s = SqliteStore::open(&p).unwrap();
            s.put_migration(&rec("b", "running", 20, b"tb")).unwrap();
            s.put_migration(&rec("a", "running", 10, b"ta")).unwrap();
            s.put_migration(&rec("c", "running", 30, b"tc")).unwrap();
            // The final state replaces state and doc, never the ticket.
            s.put_migration(&rec("a", "done", 10, b"")).unwrap();
        }
        let s = SqliteStore::open(&p).unwrap();
        let a = s.migration("a").unwrap().unwrap();
        assert_eq!((a.state.as_str(), a.ticket.as_slice()), ("done", &b"ta"[..]));
        assert!(a.doc.contains("done"));
        assert_eq!(s.migration("zz").unwrap(), None);
        let ids = |v: Vec<MigrationRecord>| v.into_iter().map(|m| m.id).collect::<Vec<_>>();
        assert_eq!(ids(s.migrations(10).unwrap()), ["a", "b", "c"]);
        // The newest two, still oldest first.
        assert_eq!(ids(s.migrations(2).unwrap()), ["b", "c"]);
        assert_eq!(ids(s.unfinished_migrations().unwrap()), ["b", "c"]);
    }
}
