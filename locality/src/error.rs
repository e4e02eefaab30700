//! Every rejection names a stable check.

use thiserror::Error;

/// Why a locality message, statement or measurement was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LocalityError {
    /// Wrong length, magic, version, encoding or an out-of-range field.
    #[error("malformed locality message: {0}")]
    Format(String),
    /// A signature that does not verify (statement or challenge response).
    #[error("signature does not verify: {0}")]
    Signature(String),
    /// A statement signed by a key that is not a trusted landmark.
    #[error("statement is not signed by a trusted landmark: {0}")]
    Landmark(String),
    /// A statement about another session key than the node's attested one.
    #[error("statement is for session key {got}, expected {expected}")]
    SessionKey { got: String, expected: String },
    /// A statement older than the accepted age, or dated in the future.
    #[error("statement measured at {measured_at} is stale at {now} (max age {max_age_secs} s)")]
    Stale {
        measured_at: i64,
        now: i64,
        max_age_secs: u64,
    },
    /// A statement about another node than the one being appraised.
    #[error("statement is about node {got:?}, expected {expected:?}")]
    Node { got: String, expected: String },
    /// Connect, read, write or timeout while measuring.
    #[error("network: {0}")]
    Network(String),
}

impl LocalityError {
    /// Stable, machine-readable check name.
    pub fn check(&self) -> &'static str {
        match self {
            Self::Format(_) => "locality_format",
            Self::Signature(_) => "locality_signature",
            Self::Landmark(_) => "locality_landmark",
            Self::SessionKey { .. } => "locality_session_key",
            Self::Stale { .. } => "locality_stale",
            Self::Node { .. } => "locality_node",
            Self::Network(_) => "locality_network",
        }
    }
}

impl custody_types::FailedCheck for LocalityError {
    fn check(&self) -> &'static str {
        LocalityError::check(self)
    }
}

/// Lower-case hex without a dependency (keys in error messages).
pub(crate) fn hex32(b: &[u8; 32]) -> String {
    let mut s = String::with_capacity(64);
    for x in b {
        s.push_str(&format!("{x:02x}"));
    }
    s
}
