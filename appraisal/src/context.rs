//! What a round is appraised against, besides its evidence: the node as enrolled, the
//! nonce issued, its group's reference values, the time; and what arrived.

use custody_formats::binding::Nonce;
use custody_formats::bundle::EvidenceBundle;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Everything a round is appraised against. The caller loads it (store, config, clock);
/// the appraisal only reads it.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub node: Node<'a>,
    /// The nonce issued for this round: the bundle must carry it.
    pub nonce: &'a Nonce,
    /// The node's group's reference values, if any.
    pub reference: Option<&'a Reference>,
    /// What happens without reference values.
    pub mode: ReferenceMode,
    /// Now (seconds since the epoch): certificates, CRLs and landmark statements are
    /// checked at this time, and the EAR is issued at it.
    pub at: i64,
    /// Lifetime of the signed result.
    pub ear_ttl: i64,
}

/// The node as the verifier enrolled it: what its evidence must match.
#[derive(Debug, Clone, Copy)]
pub struct Node<'a> {
    pub id: &'a str,
    pub name: &'a str,
    /// Its reference-value group.
    pub group: &'a str,
    /// Its state before this round (`enrolled`, `trusted`, `failed`, `revoked`): the
    /// policy sees it.
    pub state: &'a str,
    /// The AK credential activation bound to its EK (TPM2B_PUBLIC).
    pub ak_public: &'a [u8],
    /// SHA-256 of its EK certificate (hex): its identity in the registry.
    pub ek_cert_sha256: Option<&'a str>,
    /// The last TPM clock of a round it passed.
    pub tpm_clock: Option<TpmClock>,
}

/// The last TPM clock seen from a node: a later quote with the same reset count must not
/// go back in time (replayed or forged old quote).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TpmClock {
    pub reset_count: u32,
    pub restart_count: u32,
    pub clock: u64,
}

/// Golden PCR values of a group: bank -> PCR -> hex digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reference {
    pub pcrs: BTreeMap<String, BTreeMap<u32, String>>,
    pub source: ReferenceSource,
    pub at: i64,
    /// For TOFU: the node whose round the values were learned from.
    pub learned_from: Option<String>,
    /// Learnt under `reference = "tofu-approve"` and not yet approved by an operator: it
    /// decides nothing (rounds that match it fail `reference_pending`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pending: bool,
}

/// Where a group's reference values came from (and, in results, what decided).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReferenceSource {
    /// Learnt from the group's first trusted round (trust on first use).
    Tofu,
    /// Learnt, awaiting an operator's approval (`reference = "tofu-approve"`): decides
    /// nothing. Only in results; a stored baseline says `tofu` and `pending`.
    TofuPending,
    /// A learnt baseline an operator approved.
    Approved,
    /// Provisioned by an operator.
    Operator,
}

impl ReferenceSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tofu => "tofu",
            Self::TofuPending => "tofu-pending",
            Self::Approved => "approved",
            Self::Operator => "operator",
        }
    }
}

impl std::fmt::Display for ReferenceSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How reference values (golden PCRs) come to exist for a node group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReferenceMode {
    /// The first round of a group whose evidence verifies is trusted and its PCRs become
    /// the group's reference values. Every result says `reference: tofu` so nobody
    /// mistakes it for a provisioned baseline.
    Tofu,
    /// Only values the operator provisioned (`PUT /v1/groups/{group}/reference`) count;
    /// a group without them fails `reference_values`.
    Operator,
    /// As `tofu`, but a learnt baseline is `pending` and decides nothing until an operator
    /// approves it (`custody reference approve GROUP`): rounds that match it fail
    /// `reference_pending` (not counted towards revocation), rounds that differ fail
    /// `reference_values`.
    TofuApprove,
}

/// The lowest platform TCB accepted (security patch levels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MinTcb {
    pub bootloader: u8,
    pub tee: u8,
    pub snp: u8,
    pub microcode: u8,
}

/// Guest policy bits `[snp] forbid_policy` may name.
pub const POLICY_BITS: [&str; 5] = ["smt", "migrate_ma", "debug", "cxl_allow", "single_socket"];

/// The operator's SEV-SNP guest reference values (`[snp]`, parsed): without them no SNP
/// report makes the session key `cvm`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SnpReferenceValues {
    pub measurements: Vec<[u8; 48]>,
    pub host_data: Option<[u8; 32]>,
    pub vmpl: u32,
    pub id_key_digests: Vec<[u8; 48]>,
    pub min_tcb: Option<MinTcb>,
    pub forbid_policy: Vec<String>,
}

/// The operator's Intel TDX reference values (`[tdx]`, parsed): without them no TDX quote
/// makes the session key `cvm`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TdxReferenceValues {
    /// MRTDs (the TD's initial contents: its virtual firmware) of the approved images.
    pub mr_td: Vec<[u8; 48]>,
    /// RTMR0-3: each one given must equal the quote's.
    pub rtmr: [Option<[u8; 48]>; 4],
    /// MRCONFIGID and MROWNER, when the operator launches its TDs with them.
    pub mr_config_id: Option<[u8; 48]>,
    pub mr_owner: Option<[u8; 48]>,
    /// TDATTRIBUTES and XFAM (the TD's launch configuration: debug, SEPT_VE_DISABLE, PKS,
    /// KL, PERFMON; the CPU extended features it may use), each compared under a mask.
    pub td_attributes: Option<Masked64>,
    pub xfam: Option<Masked64>,
}

/// A 64-bit field compared under a mask, as CoRIM's masked raw values are: the bits set
/// in `mask` must equal `value`'s, the others are free. Bytes in the quote's order
/// (little-endian), as `custody verify tdx` prints them: `0000001000000000` is
/// TDATTRIBUTES bit 28, SEPT_VE_DISABLE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Masked64 {
    pub value: [u8; 8],
    pub mask: [u8; 8],
}

impl Masked64 {
    /// `VALUE` (every bit compared) or `VALUE/MASK`, 16 hex digits each; a value with a
    /// bit outside its mask is refused (a reference that can never be what it says).
    pub fn parse(s: &str) -> Result<Self, String> {
        let hex8 = |h: &str| {
            hex::decode(h)
                .ok()
                .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
                .ok_or_else(|| format!("{h:?} is not 16 hex digits"))
        };
        let (value, mask) = match s.split_once('/') {
            Some((v, m)) => (hex8(v)?, hex8(m)?),
            None => (hex8(s)?, [0xff; 8]),
        };
        if value.iter().zip(&mask).any(|(v, m)| v & !m != 0) {
            return Err(format!("{s:?} sets bits outside its mask"));
        }
        Ok(Self { value, mask })
    }

    /// The bits under the mask where `got` differs (all zero: it matches).
    pub fn differs(&self, got: &[u8; 8]) -> [u8; 8] {
        let mut d = [0; 8];
        for (((d, g), v), m) in d.iter_mut().zip(got).zip(&self.value).zip(&self.mask) {
            *d = (g ^ v) & m;
        }
        d
    }
}

impl std::fmt::Display for Masked64 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", hex::encode(self.value), hex::encode(self.mask))
    }
}

/// An evidence bundle as it arrived, decoded once: the round's stages, the locality
/// measurement and the stored result all read this.
#[derive(Debug)]
pub struct Received {
    /// SHA-256 of the bytes (hex), kept with the result.
    pub sha256: String,
    /// The decoded bundle, or why it does not decode (`bundle_format`).
    pub bundle: Result<EvidenceBundle, String>,
}

impl Received {
    pub fn decode(bytes: &[u8]) -> Self {
        Self {
            sha256: hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes).as_ref()),
            bundle: EvidenceBundle::from_cbor(bytes).map_err(|e| e.to_string()),
        }
    }
}

/// What arrived for appraisal.
// One per round, moved once: boxing the bundle would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Arrived {
    /// A bundle, decoded once.
    Bundle(Received),
    /// No evidence: the agent could not be reached, refused, or the nonce was unusable;
    /// the check that says why.
    Nothing { check: &'static str, detail: String },
}

/// What a round learnt besides the bundle.
#[derive(Debug, Default)]
pub struct Extras {
    /// This verifier's signed landmark statement about the node's session key, or why
    /// the measurement failed; `None` when no measurement was attempted.
    pub locality: Option<LandmarkOutcome>,
    /// What each remote landmark answered, in configuration order.
    pub remote: Vec<LandmarkOutcome>,
}

/// One landmark's answer: its signed statement, or the check that failed and why.
#[derive(Debug, Clone)]
pub struct LandmarkOutcome {
    /// The configured landmark id (the statement must name the same).
    pub landmark: String,
    pub outcome: Result<Vec<u8>, (String, String)>,
}

/// A landmark whose statement did not count, kept with the round (policy input
/// `locality_failures`, EAR attribute `locality-failures`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LocalityFailure {
    pub landmark: String,
    pub check: String,
    pub detail: String,
}
