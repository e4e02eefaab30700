//! Custody's tamper-evident audit log: an append-only RFC 9162 Merkle log of custody
//! decisions with C2SP signed checkpoints, stored in SQLite, exported to a directory and
//! verified offline with only the log's public key.
#![forbid(unsafe_code)]

pub mod export;
pub mod history;
pub mod note;
pub mod store;
pub mod tree;
pub mod verify;

use serde::{Deserialize, Serialize};

/// One log record. The leaf is the exact JSON bytes written when it was appended
/// (`{"kind":...,"body":...}`); verification hashes those bytes, never a re-encoding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    content = "body",
    rename_all = "snake_case",
    deny_unknown_fields
)]
pub enum Entry {
    /// An attestation result issued (EAR digest, node, status).
    AttestationResult(serde_json::Value),
    /// A checkpoint moved between boundaries (ticket, receipt).
    Migration(serde_json::Value),
    /// A node enrolled (hardware identities, site).
    Enrollment(serde_json::Value),
    /// A node, key or identity revoked.
    Revocation(serde_json::Value),
    /// A signed registry document adopted.
    RegistryChange(serde_json::Value),
    /// A policy adopted or changed.
    PolicyChange(serde_json::Value),
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
}
