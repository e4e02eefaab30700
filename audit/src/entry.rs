//! The log's entries, one typed body per kind, shared by the verifier that writes them
//! and the auditor that reads them back (`history`, `custody audit`). A leaf is the
//! compact JSON `{"kind": ..., "body": {...}}`; bodies refuse unknown fields, so an entry
//! says exactly what its kind says. Fields added after the first release are optional,
//! so logs written before still read.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One log record. The leaf is the exact JSON bytes written when it was appended;
/// verification hashes those bytes, never a re-encoding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    content = "body",
    rename_all = "snake_case",
    deny_unknown_fields
)]
pub enum Entry {
    /// A round's attestation result.
    AttestationResult(ResultEntry),
    /// A step of a checkpoint's move.
    Migration(MigrationEntry),
    /// A node enrolled (or enrolled again).
    Enrollment(EnrollmentEntry),
    /// A node revoked by its rounds, or removed by an operator.
    Revocation(RevocationEntry),
    /// A signed registry adopted.
    RegistryChange(RegistryEntry),
    /// The policy in force, a group's reference values, or a node's group changed.
    PolicyChange(PolicyEntry),
}

impl Entry {
    /// The stable kind name as it appears in the JSON.
    pub fn kind(&self) -> &'static str {
        match self {
            Entry::AttestationResult(_) => "attestation_result",
            Entry::Migration(_) => "migration",
            Entry::Enrollment(_) => "enrollment",
            Entry::Revocation(_) => "revocation",
            Entry::RegistryChange(_) => "registry_change",
            Entry::PolicyChange(_) => "policy_change",
        }
    }

    /// The leaf bytes: compact JSON, which never contains a raw newline.
    pub fn to_leaf(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }

    /// Parse leaf bytes back into an entry.
    pub fn from_leaf(leaf: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(leaf)
    }

    /// The node the entry is about, if it is about one.
    pub fn node(&self) -> Option<&str> {
        match self {
            Entry::AttestationResult(r) => Some(&r.node),
            Entry::Enrollment(e) => Some(&e.node),
            Entry::Revocation(r) => Some(&r.node),
            Entry::PolicyChange(PolicyEntry::Group(g)) => Some(&g.node),
            _ => None,
        }
    }

    /// When it happened (Unix seconds).
    pub fn at(&self) -> i64 {
        match self {
            Entry::AttestationResult(r) => r.at,
            Entry::Migration(m) => m.at(),
            Entry::Enrollment(e) => e.at,
            Entry::Revocation(r) => r.at,
            Entry::RegistryChange(r) => r.at,
            Entry::PolicyChange(PolicyEntry::Policy(p)) => p.at,
            Entry::PolicyChange(PolicyEntry::ReferenceValues(r)) => r.at,
            Entry::PolicyChange(PolicyEntry::Group(g)) => g.at,
        }
    }
}

/// `attestation_result`: what a round decided and from what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultEntry {
    pub node: String,
    pub name: String,
    pub at: i64,
    /// `affirming`, `warning` or `contraindicated`.
    pub status: String,
    pub failed_check: Option<String>,
    pub policy_id: String,
    /// SHA-256 of the policy in force (hex).
    pub policy_digest: String,
    pub registry_version: Option<u64>,
    pub registry_digest: Option<String>,
    /// Where the reference values came from (`tofu`, `approved`, `operator`).
    pub reference: Option<String>,
    pub evidence_sha256: String,
    pub ear_sha256: String,
}

impl ResultEntry {
    /// A passing result for `node` at `at`, with placeholder digests: for tests and
    /// examples.
    pub fn example(node: &str, at: i64) -> Self {
        Self {
            node: node.into(),
            name: node.into(),
            at,
            status: "affirming".into(),
            failed_check: None,
            policy_id: "default".into(),
            policy_digest: "00".repeat(32),
            registry_version: None,
            registry_digest: None,
            reference: Some("tofu".into()),
            evidence_sha256: "00".repeat(32),
            ear_sha256: "00".repeat(32),
        }
    }
}

/// `enrollment`: a TPM proved itself and its node is (again) enrolled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollmentEntry {
    pub node: String,
    pub name: String,
    pub at: i64,
    pub ek_cert_sha256: Option<String>,
    pub ak_sha256: String,
    pub endpoint: String,
    pub re_enrollment: bool,
    /// On re-enrollment: whether the AK changed (a cleared TPM or lost agent state).
    pub ak_changed: Option<bool>,
    /// The node's state after enrolling (it survives re-enrollment).
    pub state: String,
    pub failures: u32,
    #[serde(default)]
    pub clock_baseline_restarted: bool,
}

/// What ended a node's trust.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevocationAction {
    /// An operator removed the node (`custody nodes remove`).
    Removed,
}

/// `revocation`: failed rounds revoked a node (no `action`), or an operator removed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationEntry {
    pub node: String,
    pub name: String,
    pub at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<RevocationAction>,
    pub reason: Option<String>,
    /// A revocation: the check that failed last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_check: Option<String>,
    /// A removal: the state the node was in, who removed it, its EK certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ek_cert_sha256: Option<String>,
}

/// `registry_change`: a signed registry put in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryEntry {
    pub version: u64,
    pub previous: Option<u64>,
    /// SHA-256 of the signed payload (hex).
    pub digest: String,
    /// The signing authority's kid (hex) and name.
    pub kid: String,
    pub authority: String,
    pub entities: usize,
    pub sites: usize,
    pub hardware: usize,
    pub at: i64,
    /// Where the registry puts things (added in round 2; absent in older logs): what an
    /// auditor's map and a node's registry history are drawn from, with nothing fetched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub places: Option<RegistryPlaces>,
}

/// A registry version's sites and hardware bindings, as the verifier read them from the
/// signed registry it put in force.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryPlaces {
    pub sites: Vec<PlacedSite>,
    pub hardware: Vec<PlacedHardware>,
}

/// One site and who runs it, with the jurisdiction the registry's ownership derives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlacedSite {
    pub id: String,
    pub name: String,
    /// ISO 3166-1 alpha-2.
    pub country: String,
    /// Microdegrees, as in the registry.
    pub lat_e6: i32,
    pub lon_e6: i32,
    /// The operating entity's id and name.
    pub operator: String,
    pub operator_name: String,
    /// The operator, or an entity controlling it, is within reach of the US CLOUD Act.
    pub cloud_act_exposed: bool,
}

/// A hardware identity bound to a site: `KIND:HEX` (`ek_sha256:…`, `snp_chip_id:…`,
/// `gpu_serial:…`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlacedHardware {
    pub site: String,
    pub id: String,
}

/// `policy_change`: one of three changes, told apart by their fields (`group`,
/// `reference_values`, or neither: the policy in force).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum PolicyEntry {
    /// A node moved to another reference-value group.
    Group(GroupChange),
    /// A group's reference values set by an operator, or a learnt baseline approved.
    ReferenceValues(ReferenceChange),
    /// The policy in force differs from the last start's.
    Policy(PolicyInForce),
}

// By hand rather than `untagged`: serde's untagged buffering cannot read the PCR map's
// integer keys, and the discriminating field names the variant in the error.
impl<'de> Deserialize<'de> for PolicyEntry {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let v = serde_json::Value::deserialize(d)?;
        let r = if v.get("group").is_some() {
            serde_json::from_value(v).map(Self::Group)
        } else if v.get("reference_values").is_some() {
            serde_json::from_value(v).map(Self::ReferenceValues)
        } else {
            serde_json::from_value(v).map(Self::Policy)
        };
        r.map_err(D::Error::custom)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupChange {
    pub node: String,
    pub name: String,
    pub group: String,
    pub previous_group: String,
    pub by: String,
    pub at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferenceChange {
    /// The group.
    pub reference_values: String,
    /// `operator` or `approved`.
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learned_from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    pub at: i64,
    /// Bank -> PCR index -> digest (hex).
    pub pcrs: BTreeMap<String, BTreeMap<u32, String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyInForce {
    pub policy_id: String,
    pub policy_digest: String,
    pub previous_digest: Option<String>,
    pub at: i64,
}

/// A node as the verifier appraised it just before it issued a ticket: where the
/// registry placed it and which evidence and result said so.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Appraised {
    pub node: String,
    pub name: String,
    pub site: Option<String>,
    pub site_name: Option<String>,
    pub country: Option<String>,
    pub operator: Option<String>,
    pub operator_country: Option<String>,
    pub appraised_at: Option<i64>,
    pub status: Option<String>,
    pub evidence_sha256: Option<String>,
    pub ear_sha256: Option<String>,
}

/// `migration`: one step of a move, by `outcome`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum MigrationEntry {
    /// Refused before any ticket (policy, attestation, chip, ...).
    Refused(MoveRefused),
    /// The verifier's permission for one move.
    TicketIssued(Box<TicketIssued>),
    /// An export file written at the source (an air-gapped move).
    Exported(MoveExported),
    /// The destination's signed receipt verified.
    Placed(MovePlaced),
    /// The transfer failed after the ticket; the job stayed at the source.
    Failed(MoveFailed),
}

impl MigrationEntry {
    pub fn job(&self) -> &str {
        match self {
            Self::Refused(m) => &m.job,
            Self::TicketIssued(m) => &m.job,
            Self::Exported(m) => &m.job,
            Self::Placed(m) => &m.job,
            Self::Failed(m) => &m.job,
        }
    }

    pub fn at(&self) -> i64 {
        match self {
            Self::Refused(m) => m.at,
            Self::TicketIssued(m) => m.at,
            Self::Exported(m) => m.at,
            Self::Placed(m) => m.at,
            Self::Failed(m) => m.at,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoveRefused {
    pub job: String,
    /// As the operator named them (node names or ids).
    pub source: String,
    pub destination: String,
    pub at: i64,
    pub check: String,
    pub detail: String,
    #[serde(default)]
    pub reasons: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TicketIssued {
    /// Ticket id (hex).
    pub ticket: String,
    pub job: String,
    /// Node ids.
    pub source: String,
    pub destination: String,
    pub policy_id: String,
    pub policy_digest: String,
    pub manifest_sha256: String,
    pub bytes: u64,
    /// The destination's attested X25519 key the checkpoint is sealed to (hex).
    pub dst_x25519: String,
    pub at: i64,
    pub expires_at: i64,
    pub delete_source: bool,
    /// `wire` or `file`.
    pub transport: String,
    /// The signed ticket (hex), so the receipt can be checked offline against the key it
    /// names.
    pub ticket_cose: String,
    pub source_at: Option<Appraised>,
    pub destination_at: Option<Appraised>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoveExported {
    pub ticket: String,
    pub job: String,
    pub source: String,
    pub destination: String,
    pub file: Option<String>,
    pub file_sha256: Option<String>,
    pub bytes: u64,
    pub at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MovePlaced {
    pub ticket: String,
    pub job: String,
    pub source: String,
    pub destination: String,
    pub manifest_sha256: String,
    pub bytes: u64,
    pub completed_at: i64,
    pub receipt_sha256: String,
    /// The signed receipt (hex).
    pub receipt: String,
    #[serde(default)]
    pub source_released: bool,
    /// Files the source kept despite `--delete-source` (changed after the manifest).
    #[serde(default)]
    pub source_kept: Vec<String>,
    pub at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoveFailed {
    pub ticket: String,
    pub job: String,
    pub source: String,
    pub destination: String,
    pub check: String,
    pub detail: String,
    pub at: i64,
}

#[cfg(test)]
mod tests;
