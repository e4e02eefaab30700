//! Wire messages between `custody-agent` and `custody-verifier` (CBOR on the wire,
//! `application/cbor`). People-facing endpoints speak JSON and are described in the
//! verifier's OpenAPI document; these are the machine-to-machine ones.
//!
//! ```text
//! agent -> verifier  POST /v1/enroll            EnrollRequest    -> EnrollChallenge
//! agent -> verifier  POST /v1/enroll/activate   ActivateRequest  -> Enrolled
//! agent -> verifier  POST /v1/renew             RenewRequest     -> Renewed         (mTLS)
//! verifier -> agent  POST /v1/round             RoundRequest     -> EvidenceBundle  (mTLS)
//! agent -> verifier  POST /v1/nonce             (empty)          -> NonceGrant      (mTLS, push mode)
//! agent -> verifier  POST /v1/evidence          EvidenceBundle   -> PushResult      (mTLS, push mode)
//! ```
//!
//! Enrollment runs over server-authenticated TLS (the agent pins the verifier's CA); it
//! ends with the verifier issuing the node a certificate for the TLS key the agent
//! generated, and every later exchange is mutual TLS with that certificate.

use crate::binding::{serde_bytes_vec, Nonce};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Upper bound on an agent-facing message other than an evidence bundle.
pub const MAX_MESSAGE_LEN: usize = 256 * 1024;

/// CBOR media type used by every message here.
pub const CBOR: &str = "application/cbor";

#[derive(Debug, Error)]
pub enum ApiError {
    #[error("message is {0} bytes, more than the {MAX_MESSAGE_LEN}-byte limit")]
    TooLarge(usize),
    #[error("message is not valid CBOR for {what}: {reason}")]
    Decode { what: &'static str, reason: String },
    #[error("message has trailing bytes after the CBOR item")]
    Trailing,
    #[error("could not encode {what}: {reason}")]
    Encode { what: &'static str, reason: String },
}

/// Encode any wire message as CBOR.
pub fn to_cbor<T: Serialize>(what: &'static str, msg: &T) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::new();
    ciborium::into_writer(msg, &mut out).map_err(|e| ApiError::Encode {
        what,
        reason: e.to_string(),
    })?;
    Ok(out)
}

/// Decode one wire message, refusing oversized input and trailing bytes.
pub fn from_cbor<T: for<'de> Deserialize<'de>>(what: &'static str, bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.len() > MAX_MESSAGE_LEN {
        return Err(ApiError::TooLarge(bytes.len()));
    }
    let mut rd = bytes;
    let v: T = ciborium::from_reader(&mut rd).map_err(|e| ApiError::Decode {
        what,
        reason: e.to_string(),
    })?;
    if !rd.is_empty() {
        return Err(ApiError::Trailing);
    }
    Ok(v)
}

/// First enrollment message: who the node says it is and which TPM keys it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// Operator-chosen node name (unique; `[A-Za-z0-9._-]{1,64}`).
    pub name: String,
    /// Where the verifier reaches the agent's round endpoint: `host:port`.
    pub endpoint: String,
    /// EK certificate as read from NV (DER, possibly zero-padded), when the TPM has one.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::bundle::opt_bytes"
    )]
    pub ek_cert: Option<Vec<u8>>,
    /// EK TPMT_PUBLIC, marshalled.
    #[serde(with = "serde_bytes_vec")]
    pub ek_public: Vec<u8>,
    /// AK TPMT_PUBLIC, marshalled.
    #[serde(with = "serde_bytes_vec")]
    pub ak_public: Vec<u8>,
    /// The agent's TLS key (SubjectPublicKeyInfo, DER) the node certificate will carry.
    #[serde(with = "serde_bytes_vec")]
    pub tls_spki: Vec<u8>,
    /// Where landmarks reach the agent's locality responder (`host:port`), if it runs one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality_endpoint: Option<String>,
    /// Where other agents deliver checkpoints to this one (`host:port`), if it takes them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub move_endpoint: Option<String>,
}

/// The verifier's answer: a credential only the TPM holding both the EK and the AK can
/// open (TPM2_MakeCredential outputs, marshalled with their size prefixes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollChallenge {
    /// Opaque handle of this pending enrollment (16 random bytes, hex).
    pub enrollment_id: String,
    #[serde(with = "serde_bytes_vec")]
    pub id_object: Vec<u8>,
    #[serde(with = "serde_bytes_vec")]
    pub encrypted_secret: Vec<u8>,
}

/// Proof that the TPM released the secret, bound to the request the agent sent:
/// `proof = HMAC-SHA256(secret, "custody-enroll-v1" || SHA-256(CBOR(EnrollRequest)))`
/// ([`enrollment_proof`]). The secret itself never travels, so a relay that altered the
/// request (its TLS key, its endpoints) cannot turn the activation into its own enrollment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivateRequest {
    pub enrollment_id: String,
    #[serde(with = "serde_bytes_vec")]
    pub proof: Vec<u8>,
}

/// Domain separation of [`enrollment_proof`].
pub const ENROLL_PROOF_LABEL: &[u8] = b"custody-enroll-v1";

/// The activation proof over `request`, keyed by the activated `secret`. The request is
/// hashed as this crate encodes it, so both sides compute it over the same bytes whatever
/// encoding travelled.
pub fn enrollment_proof(secret: &[u8], request: &EnrollRequest) -> Result<[u8; 32], ApiError> {
    use aws_lc_rs::{digest, hmac};
    let cbor = to_cbor("EnrollRequest", request)?;
    let h = digest::digest(&digest::SHA256, &cbor);
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(ENROLL_PROOF_LABEL);
    ctx.update(h.as_ref());
    let tag = ctx.sign();
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    Ok(out)
}

/// A node asks for a new certificate before its current one expires, over mutual TLS
/// with that certificate (`POST /v1/renew`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenewRequest {
    /// The TLS key (SubjectPublicKeyInfo, DER) the new certificate will carry.
    #[serde(with = "serde_bytes_vec")]
    pub tls_spki: Vec<u8>,
}

/// The renewed node certificate, PEM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Renewed {
    pub certificate_pem: String,
}

/// Enrollment done: the node's identity and its mTLS certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enrolled {
    pub node_id: String,
    /// Node certificate, PEM, issued by the verifier CA for `EnrollRequest::tls_spki`.
    pub certificate_pem: String,
    /// The verifier CA certificate, PEM (the agent trusts only it for mTLS peers).
    pub ca_pem: String,
    /// The verifier's result key (SEC1 P-256): agents check migration tickets with it.
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "serde_bytes_vec")]
    pub verifier_key: Vec<u8>,
}

/// The verifier asks a source agent to describe a checkpoint it holds (`POST
/// /v1/move/prepare`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MovePrepare {
    /// Directory name in the agent's checkpoint store.
    pub checkpoint: String,
}

/// The checkpoint's manifest and what it needs of a chip.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MovePrepared {
    /// The manifest, deterministic CBOR (docs/migration-protocol.md section 2).
    #[serde(with = "serde_bytes_vec")]
    pub manifest: Vec<u8>,
    pub files: u64,
    pub total_bytes: u64,
    /// safetensors dtype name -> tensors (`file:tensor`) that use it.
    pub dtypes: std::collections::BTreeMap<String, Vec<String>>,
}

/// The verifier tells the source agent to send (`POST /v1/move/send`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoveSend {
    /// The verifier-signed ticket (COSE_Sign1).
    #[serde(with = "serde_bytes_vec")]
    pub ticket: Vec<u8>,
    pub checkpoint: String,
    /// The destination agent's move endpoint, `host:port`.
    pub to: String,
    pub chunk_size: u32,
    /// Delete the source copy once the destination's receipt has verified.
    #[serde(default)]
    pub release: bool,
}

/// The verifier tells the source agent to write an export file (`POST /v1/move/export`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoveExport {
    /// The verifier-signed ticket (COSE_Sign1).
    #[serde(with = "serde_bytes_vec")]
    pub ticket: Vec<u8>,
    pub checkpoint: String,
    pub chunk_size: u32,
}

/// Where a move stands, at the source agent and at the verifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MoveState {
    /// Sending (or writing the export file).
    Running,
    /// The export file is written; it waits to be imported at the destination.
    Exported,
    /// Placed at the destination, its receipt verified.
    Done,
    /// Ended without a placement (`check` says why).
    Failed,
}

impl MoveState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Exported => "exported",
            Self::Done => "done",
            Self::Failed => "failed",
        }
    }

    /// Ended: nothing more happens to the move.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Done | Self::Failed)
    }
}

/// A transfer as the source agent sees it (`GET /v1/move/{ticket id hex}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoveStatus {
    pub state: MoveState,
    pub bytes: u64,
    pub total: u64,
    pub resumed_at: u64,
    /// The destination's receipt once `done`.
    #[serde(default, with = "serde_bytes_vec")]
    pub receipt: Vec<u8>,
    /// The source copy was deleted after the receipt verified (`release`).
    #[serde(default)]
    pub released: bool,
    /// What the release left in place (`PATH: why`): files changed or added after the
    /// manifest, which the receipt does not cover.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kept: Vec<String>,
    /// An export (`exported`): the file on the source node and its SHA-256 (hex).
    #[serde(default)]
    pub export_path: Option<String>,
    #[serde(default)]
    pub export_sha256: Option<String>,
    #[serde(default)]
    pub check: Option<String>,
    #[serde(default)]
    pub detail: Option<String>,
}

/// The verifier asks the agent for one round of evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoundRequest {
    pub nonce: Nonce,
    /// The verifier's signed deny list (COSE_Sign1, see `custody_mover::deny`): nodes
    /// this agent must refuse in moves. A round carries it so that an agent that missed
    /// the verifier's push learns it at its next round.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::bundle::opt_bytes"
    )]
    pub deny: Option<Vec<u8>>,
}

/// The verifier sends its deny list to an agent (`PUT /v1/deny`) as soon as a node is
/// removed or revoked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenyListUpdate {
    /// COSE_Sign1 (see `custody_mover::deny`).
    #[serde(with = "serde_bytes_vec")]
    pub list: Vec<u8>,
}

/// The agent's answer: whether the list replaced its own, and the issue time (ms) of the
/// list it now holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenyListHeld {
    pub replaced: bool,
    pub issued_at_ms: i64,
}

/// Push mode: a fresh nonce the node must use within `ttl_seconds`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NonceGrant {
    pub nonce: Nonce,
    pub ttl_seconds: u64,
}

/// Push mode: the appraisal outcome and the signed result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushResult {
    /// `affirming`, `warning`, `contraindicated` (AR4SI / EAR status).
    pub status: String,
    /// The failed check when the evidence was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_check: Option<String>,
    /// EAR, COSE_Sign1 bytes.
    #[serde(with = "serde_bytes_vec")]
    pub ear: Vec<u8>,
}

/// Refusal body for agent-facing endpoints (CBOR), naming the check that failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Refusal {
    pub check: String,
    pub detail: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let m = EnrollRequest {
            name: "n1".into(),
            endpoint: "127.0.0.1:1".into(),
            ek_cert: None,
            ek_public: vec![1, 2],
            ak_public: vec![3],
            tls_spki: vec![4],
            locality_endpoint: None,
            move_endpoint: None,
        };
        let b = to_cbor("enroll", &m).unwrap();
        assert_eq!(from_cbor::<EnrollRequest>("enroll", &b).unwrap(), m);
        // The proof changes with any field of the request and with the secret.
        let p = enrollment_proof(&[1; 32], &m).unwrap();
        let mut other = m.clone();
        other.tls_spki = vec![5];
        assert_ne!(enrollment_proof(&[1; 32], &other).unwrap(), p);
        assert_ne!(enrollment_proof(&[2; 32], &m).unwrap(), p);
        assert_eq!(enrollment_proof(&[1; 32], &m).unwrap(), p);
        let mut t = b.clone();
        t.push(0);
        assert!(matches!(
            from_cbor::<EnrollRequest>("enroll", &t),
            Err(ApiError::Trailing)
        ));
        for n in 0..b.len() {
            assert!(from_cbor::<EnrollRequest>("enroll", &b[..n]).is_err());
        }
        let big = vec![0u8; MAX_MESSAGE_LEN + 1];
        assert!(matches!(
            from_cbor::<RoundRequest>("round", &big),
            Err(ApiError::TooLarge(_))
        ));
        // Unknown fields are refused, so a message cannot smuggle extra claims.
        let r = RoundRequest {
            nonce: Nonce([7; 32]),
            deny: None,
        };
        let mut v: ciborium::Value = ciborium::Value::serialized(&r).unwrap();
        if let ciborium::Value::Map(m) = &mut v {
            m.push(("extra".into(), 1.into()));
        }
        let mut b = Vec::new();
        ciborium::into_writer(&v, &mut b).unwrap();
        assert!(from_cbor::<RoundRequest>("round", &b).is_err());
    }
}
