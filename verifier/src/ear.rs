//! Custody's attestation result: an EAR (EAT Attestation Result, draft-ietf-rats-ear-04)
//! carried as a CWT, i.e. the CBOR claims map signed as a COSE_Sign1 (ES256, P-256).
//!
//! Pure: no I/O, no clock. The appraisal time is an argument of [`verify`].
//!
//! # Wire format
//!
//! `COSE_Sign1` (tag 18) with protected header `{1: -7 (ES256), 3: CONTENT_TYPE, 4: kid}`
//! ([`CONTENT_TYPE`] is the EAR media type), where kid is the RFC 7638 JWK thumbprint (SHA-256) of the signing key's public half, and an empty
//! unprotected header. The payload is the claims map below, encoded deterministically
//! (RFC 8949 section 4.2.1: shortest forms, definite lengths, map keys sorted by their
//! encoded bytes), so the same result always gives the same bytes.
//!
//! | key | claim | value |
//! |---|---|---|
//! | 265 | `eat_profile` | [`EAR_PROFILE`] |
//! | 6 | `iat` | int, seconds |
//! | 4 | `exp` | int, seconds; always present (Custody results expire) |
//! | 10 | `eat_nonce` | bstr, 8..=64 bytes (the round's nonce) |
//! | 1000 | `ear_status` | overall tier, never better than the worst submod |
//! | 1004 | `ear_verifier_id` | `{0: developer, 1: build}` |
//! | 266 | `submods` | `{name: submod}`, at least one (`tpm`, `snp`, `gpu0`, ...) |
//! | -76000 | `custody.node-id` | tstr |
//! | -76001 | `custody.site` | tstr, optional |
//! | -76002 | `custody.country` | tstr, ISO 3166-1 alpha-2, optional |
//! | -76003 | `custody.operator` | tstr (operating legal entity), optional |
//! | -76004 | `custody.policy-id` | tstr, optional |
//! | -76005 | `custody.policy-digest` | bstr, SHA-256 (32 bytes), optional |
//! | -76006 | `custody.attributes` | map tstr -> value (derived sovereignty attributes), optional |
//!
//! Submod: `1000` status, `1001` AR4SI trustworthiness vector (`{0..7: int}`, omitted when
//! nothing was evaluated), `1003` appraisal policy ids (array of tstr, omitted when empty),
//! `1005` attester claims (the device's claims from verified evidence), `1006` verifier
//! claims (Custody's annotations: checks run, the failed check). The Custody keys are in
//! the CWT private-use range (below -65536), next to Veraison's own -70000 block.
//!
//! The profile is draft-04's: its `ear_appraisal_policy_ids` (1003) is an array, where the
//! earlier `tag:github.com,2023:veraison/ear` profile had one string, so claiming the old
//! profile would mislabel the encoding. Veraison's `ear` 0.6 implements draft-04.
//!
//! # From verifier outcomes to AR4SI claims ([`Submod::from_outcome`])
//!
//! Conservative: a claim is affirmed only when a check that establishes it passed; nothing
//! is affirmed for evidence that was rejected; what was not evaluated is left out (absent
//! means "no claim", AR4SI's none).
//!
//! Verified evidence:
//! - `instance-identity` = 2 (affirming) when `signature` passed and the signing key is
//!   vouched for: a `cert_chain` to a pinned root passed (SNP VCEK/VLEK, NVIDIA device
//!   certificate), or the caller says the key was endorsed at enrollment
//!   ([`Corroboration::identity_key_endorsed`], e.g. a TPM AK bound to an EK chain).
//!   A TPM quote checked against an AK nobody vouched for affirms nothing.
//! - `hardware` = 2 under the same condition (a vendor chain, or an endorsed key): the
//!   evidence comes from genuine hardware (with `tcb` passed where the kind checks it).
//! - `executables` = 2 when signed NVIDIA RIMs matched (`rim` passed) or the caller matched
//!   reference values ([`Corroboration::executables_matched`]: golden PCRs, SNP measurement).
//! - `configuration` = 2 only when the caller matched configuration reference values.
//! - status = the worst tier in the vector (`none` when the vector is empty), lowered to
//!   `warning` when a passed check reports revocation as unchecked.
//!
//! Rejected evidence: status `contraindicated`, and the claim the failed check speaks for
//! set to 96 (contraindicated): `cert_chain`, `cert_validity`, `tcb`, `key_kind`, `fwid` ->
//! `hardware`; `rim`, `event_log`, `pcr_digest`, `pcr_selection` -> `executables`; `policy`
//! -> `configuration`; anything else (`parse`, `signature`, `nonce`, `report_data`, ...) ->
//! `instance-identity`. The verifier claims name the failed check and say why.
//!
//! # Checks of [`verify`], in order
//!
//! `ear_format` (COSE_Sign1 structure), `ear_signature` (protected alg ES256, no critical
//! headers), `content_type` (the protected content type, when present, is [`CONTENT_TYPE`],
//! and none is unprotected: the key also signs migration tickets, which always name theirs), `ear_signature` (kid if present equal to the key's, ECDSA P-256 over the Sig_structure),
//! `ear_format` (claims map: profile, types, lengths, no duplicate keys, status consistent),
//! `ear_expired` (`now >= exp` is rejected).

use crate::check::{Check, FailedCheck, Outcome, UnixTime};
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use ciborium::value::{Integer, Value};
use custody_types::envelope::{self, Alg, EnvelopeError, Profile};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;

/// The EAT profile of draft-ietf-rats-ear-04.
pub const EAR_PROFILE: &str = "tag:ietf.org,2026:rats/ear#04";

/// CBOR claim keys (CWT form).
pub mod claim_key {
    /// `exp` (RFC 8392).
    pub const EXP: i64 = 4;
    /// `iat` (RFC 8392).
    pub const IAT: i64 = 6;
    /// `eat_nonce` (EAT).
    pub const EAT_NONCE: i64 = 10;
    /// `eat_profile` (EAT).
    pub const EAT_PROFILE: i64 = 265;
    /// `submods` (EAT).
    pub const SUBMODS: i64 = 266;
    /// `ear_status`.
    pub const STATUS: i64 = 1000;
    /// `ear_trustworthiness_vector`.
    pub const TRUST_VECTOR: i64 = 1001;
    /// `ear_appraisal_policy_ids`.
    pub const POLICY_IDS: i64 = 1003;
    /// `ear_verifier_id`.
    pub const VERIFIER_ID: i64 = 1004;
    /// `ear_attester_claims`.
    pub const ATTESTER_CLAIMS: i64 = 1005;
    /// `ear_verifier_claims`.
    pub const VERIFIER_CLAIMS: i64 = 1006;
    /// `ear_verifier_id` members.
    pub const VID_DEVELOPER: i64 = 0;
    pub const VID_BUILD: i64 = 1;
    /// Custody's private claims (CWT private use: below -65536).
    pub const CUSTODY_NODE_ID: i64 = -76000;
    pub const CUSTODY_SITE: i64 = -76001;
    pub const CUSTODY_COUNTRY: i64 = -76002;
    pub const CUSTODY_OPERATOR: i64 = -76003;
    pub const CUSTODY_POLICY_ID: i64 = -76004;
    pub const CUSTODY_POLICY_DIGEST: i64 = -76005;
    pub const CUSTODY_ATTRIBUTES: i64 = -76006;
}

/// Why an EAR could not be made or was refused.
#[derive(Debug, thiserror::Error)]
pub enum EarError {
    #[error("not a COSE_Sign1: {0}")]
    Cose(String),
    #[error("EAR claims: {0}")]
    Claims(String),
    #[error("unsupported algorithm: {0}")]
    Algorithm(String),
    #[error("key id does not match the verification key")]
    KeyId,
    #[error("signature does not verify")]
    Signature,
    #[error("expired at {exp}, appraisal time {now}")]
    Expired { exp: i64, now: i64 },
    #[error("key: {0}")]
    Key(String),
    /// The protected content type is not an EAR's: a message signed with the same key
    /// for another purpose (a migration ticket) never reads as a result.
    #[error("protected content type {found}, want {CONTENT_TYPE}")]
    ContentType { found: String },
}

impl FailedCheck for EarError {
    fn check(&self) -> &'static str {
        match self {
            Self::Cose(_) | Self::Claims(_) => "ear_format",
            Self::Algorithm(_) | Self::KeyId | Self::Signature => "ear_signature",
            Self::Expired { .. } => "ear_expired",
            Self::Key(_) => "ear_key",
            Self::ContentType { .. } => "content_type",
        }
    }
}

fn claims_err(msg: impl Into<String>) -> EarError {
    EarError::Claims(msg.into())
}

/// AR4SI trustworthiness tier, with its EAR integer value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TrustTier {
    #[default]
    None = 0,
    Affirming = 2,
    Warning = 32,
    Contraindicated = 96,
}

impl TrustTier {
    /// The EAR integer value.
    pub fn value(self) -> i8 {
        self as i8
    }

    /// The tier with this exact EAR value.
    pub fn from_value(v: i64) -> Option<Self> {
        match v {
            0 => Some(Self::None),
            2 => Some(Self::Affirming),
            32 => Some(Self::Warning),
            96 => Some(Self::Contraindicated),
            _ => None,
        }
    }

    /// The tier a trustworthiness claim value falls in (AR4SI bands, as `ear` maps them).
    pub fn of_claim(v: i8) -> Self {
        match v {
            -1..=1 => Self::None,
            -32..=31 => Self::Affirming,
            -96..=95 => Self::Warning,
            _ => Self::Contraindicated,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Affirming => "affirming",
            Self::Warning => "warning",
            Self::Contraindicated => "contraindicated",
        }
    }
}

impl fmt::Display for TrustTier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// AR4SI trustworthiness vector. `None` = not evaluated (no claim).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct TrustVector {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_identity: Option<i8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub configuration: Option<i8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub executables: Option<i8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_system: Option<i8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hardware: Option<i8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime_opaque: Option<i8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_opaque: Option<i8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sourced_data: Option<i8>,
}

impl TrustVector {
    /// The claims with their AR4SI CBOR keys 0..=7.
    fn slots(&self) -> [(u8, Option<i8>); 8] {
        [
            (0, self.instance_identity),
            (1, self.configuration),
            (2, self.executables),
            (3, self.file_system),
            (4, self.hardware),
            (5, self.runtime_opaque),
            (6, self.storage_opaque),
            (7, self.sourced_data),
        ]
    }

    fn slot_mut(&mut self, key: i128) -> Option<&mut Option<i8>> {
        match key {
            0 => Some(&mut self.instance_identity),
            1 => Some(&mut self.configuration),
            2 => Some(&mut self.executables),
            3 => Some(&mut self.file_system),
            4 => Some(&mut self.hardware),
            5 => Some(&mut self.runtime_opaque),
            6 => Some(&mut self.storage_opaque),
            7 => Some(&mut self.sourced_data),
            _ => None,
        }
    }

    /// True when no claim was evaluated.
    pub fn is_empty(&self) -> bool {
        self.slots().iter().all(|(_, v)| v.is_none())
    }

    /// The least trustworthy tier among the claims made (`none` when empty).
    pub fn worst_tier(&self) -> TrustTier {
        self.slots()
            .iter()
            .filter_map(|(_, v)| v.map(TrustTier::of_claim))
            .max()
            .unwrap_or(TrustTier::None)
    }
}

/// A JSON-like claim value (what the verifiers' claims serialize to), carried as CBOR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimValue {
    Bool(bool),
    Int(i128),
    Text(String),
    Bytes(Vec<u8>),
    Array(Vec<ClaimValue>),
    Map(Claims),
}

/// Text-keyed claims map.
pub type Claims = BTreeMap<String, ClaimValue>;

impl ClaimValue {
    /// From JSON. `null` gives `None` (absent); floats are refused (no claim uses them,
    /// and they have no single deterministic encoding).
    pub fn from_json(v: &serde_json::Value) -> Result<Option<Self>, EarError> {
        use serde_json::Value as J;
        Ok(Some(match v {
            J::Null => return Ok(None),
            J::Bool(b) => Self::Bool(*b),
            J::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Self::Int(i128::from(i))
                } else if let Some(u) = n.as_u64() {
                    Self::Int(i128::from(u))
                } else {
                    return Err(claims_err(format!("float claim value {n} not supported")));
                }
            }
            J::String(s) => Self::Text(s.clone()),
            J::Array(a) => Self::Array(
                a.iter()
                    .filter_map(|x| Self::from_json(x).transpose())
                    .collect::<Result<_, _>>()?,
            ),
            J::Object(o) => Self::Map(claims_from_json_object(o)?),
        }))
    }

    fn to_cbor(&self) -> Result<Value, EarError> {
        Ok(match self {
            Self::Bool(b) => Value::Bool(*b),
            Self::Int(i) => int(*i)?,
            Self::Text(s) => Value::Text(s.clone()),
            Self::Bytes(b) => Value::Bytes(b.clone()),
            Self::Array(a) => Value::Array(a.iter().map(Self::to_cbor).collect::<Result<_, _>>()?),
            Self::Map(m) => claims_to_cbor(m)?,
        })
    }

    fn from_cbor(v: Value) -> Result<Self, EarError> {
        Ok(match v {
            Value::Bool(b) => Self::Bool(b),
            Value::Integer(i) => Self::Int(i128::from(i)),
            Value::Text(s) => Self::Text(s),
            Value::Bytes(b) => Self::Bytes(b),
            Value::Array(a) => Self::Array(a.into_iter().map(Self::from_cbor).collect::<Result<_, _>>()?),
            Value::Map(_) => Self::Map(claims_from_cbor(v, "claims")?),
            other => return Err(claims_err(format!("unsupported claim value {other:?}"))),
        })
    }
}

fn claims_from_json_object(o: &serde_json::Map<String, serde_json::Value>) -> Result<Claims, EarError> {
    let mut m = Claims::new();
    for (k, v) in o {
        if let Some(v) = ClaimValue::from_json(v)? {
            m.insert(k.clone(), v);
        }
    }
    Ok(m)
}

/// The verifier's identity (`ear_verifier_id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierId {
    pub build: String,
    pub developer: String,
}

/// One attester's appraisal (an EAR submod).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Submod {
    pub status: TrustTier,
    pub trust_vector: TrustVector,
    /// `ear_appraisal_policy_ids`; empty = not encoded.
    pub policy_ids: Vec<String>,
    /// The device's claims from verified evidence (`ear_attester_claims`).
    pub device_claims: Claims,
    /// Custody's annotations: checks run, failed check (`ear_verifier_claims`).
    pub annotations: Claims,
}

/// What the caller established beyond the evidence verifier's own checks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Corroboration {
    /// The key that signed the evidence was endorsed at enrollment (e.g. a TPM AK bound by
    /// credential activation to an EK chaining to a manufacturer CA).
    pub identity_key_endorsed: bool,
    /// Measurements matched reference values for the code that ran (golden PCRs / event
    /// log digests, SNP launch measurement).
    pub executables_matched: bool,
    /// Configuration matched reference values.
    pub configuration_matched: bool,
}

const AFFIRMING: i8 = TrustTier::Affirming as i8;
const CONTRAINDICATED: i8 = TrustTier::Contraindicated as i8;

fn passed(checks: &[Check], name: &str) -> bool {
    checks.iter().any(|c| c.ok && c.name == name)
}

fn checks_annotation(checks: &[Check]) -> ClaimValue {
    ClaimValue::Array(
        checks
            .iter()
            .map(|c| {
                ClaimValue::Map(Claims::from([
                    ("name".to_owned(), ClaimValue::Text(c.name.to_owned())),
                    ("ok".to_owned(), ClaimValue::Bool(c.ok)),
                    ("detail".to_owned(), ClaimValue::Text(c.detail.clone())),
                ]))
            })
            .collect(),
    )
}

impl Submod {
    /// The submod for one evidence verifier's outcome (mapping in the module doc).
    pub fn from_outcome<C: Serialize, E: FailedCheck>(
        outcome: &Outcome<C, E>,
        corroboration: Corroboration,
    ) -> Result<Self, EarError> {
        match outcome {
            Ok(v) => {
                let checks = &v.checks;
                // A TDX quote is signed by an attestation key the QE vouches for
                // (`quote_signature` after `qe_report_data`); the others sign directly.
                let signed = passed(checks, "signature")
                    || (passed(checks, "quote_signature") && passed(checks, "qe_report_data"));
                let key_vouched =
                    signed && (passed(checks, "cert_chain") || corroboration.identity_key_endorsed);
                let mut tv = TrustVector::default();
                if key_vouched {
                    tv.instance_identity = Some(AFFIRMING);
                    tv.hardware = Some(AFFIRMING);
                }
                if passed(checks, "rim") || corroboration.executables_matched {
                    tv.executables = Some(AFFIRMING);
                }
                if corroboration.configuration_matched {
                    tv.configuration = Some(AFFIRMING);
                }
                let mut status = tv.worst_tier();
                let revocation_unchecked = checks
                    .iter()
                    .any(|c| c.name == "revocation" && c.detail.starts_with("unchecked"));
                if revocation_unchecked && status < TrustTier::Warning {
                    status = TrustTier::Warning;
                }
                let json = serde_json::to_value(&v.claims).map_err(|e| claims_err(e.to_string()))?;
                let device_claims = match &json {
                    serde_json::Value::Object(o) => claims_from_json_object(o)?,
                    _ => return Err(claims_err("device claims are not a map")),
                };
                Ok(Self {
                    status,
                    trust_vector: tv,
                    policy_ids: Vec::new(),
                    device_claims,
                    annotations: Claims::from([("checks".to_owned(), checks_annotation(checks))]),
                })
            }
            Err(r) => {
                let failed = r.error.check();
                let mut tv = TrustVector::default();
                let slot = match failed {
                    "cert_chain" | "cert_validity" | "tcb" | "tcb_info" | "qe_identity" | "key_kind"
                    | "fwid" => &mut tv.hardware,
                    "rim" | "event_log" | "pcr_digest" | "pcr_selection" => &mut tv.executables,
                    "policy" => &mut tv.configuration,
                    _ => &mut tv.instance_identity,
                };
                *slot = Some(CONTRAINDICATED);
                Ok(Self {
                    status: TrustTier::Contraindicated,
                    trust_vector: tv,
                    policy_ids: Vec::new(),
                    device_claims: Claims::new(),
                    annotations: Claims::from([
                        ("failed-check".to_owned(), ClaimValue::Text(failed.to_owned())),
                        ("failure".to_owned(), ClaimValue::Text(r.error.to_string())),
                        ("checks".to_owned(), checks_annotation(&r.checks())),
                    ]),
                })
            }
        }
    }
}

/// Custody's attestation result: EAR top-level claims plus Custody's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestationResult {
    pub iat: i64,
    pub exp: i64,
    /// The round's nonce (`eat_nonce`), 8..=64 bytes.
    pub nonce: Vec<u8>,
    /// Overall status; must be at least as severe as the worst submod's.
    pub status: TrustTier,
    pub verifier_id: VerifierId,
    pub submods: BTreeMap<String, Submod>,
    pub node_id: String,
    pub site: Option<String>,
    /// ISO 3166-1 alpha-2.
    pub country: Option<String>,
    /// The legal entity operating the node.
    pub operator: Option<String>,
    pub policy_id: Option<String>,
    /// SHA-256 of the policy, 32 bytes.
    pub policy_digest: Option<Vec<u8>>,
    /// Derived sovereignty attributes (`cloud_act_exposed`, ...); empty = not encoded.
    pub attributes: Claims,
}

impl ClaimValue {
    /// A JSON view for people (bytes as hex); not an encoding that round-trips.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Self::Bool(b) => J::Bool(*b),
            Self::Int(i) => i64::try_from(*i).map_or_else(|_| J::String(i.to_string()), J::from),
            Self::Text(t) => J::String(t.clone()),
            Self::Bytes(b) => J::String(crate::hex(b)),
            Self::Array(a) => J::Array(a.iter().map(Self::to_json).collect()),
            Self::Map(m) => claims_to_json(m),
        }
    }
}

fn claims_to_json(c: &Claims) -> serde_json::Value {
    serde_json::Value::Object(c.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
}

impl AttestationResult {
    /// A JSON view for people (`custody result`), with EAR's claim names.
    pub fn to_json(&self) -> serde_json::Value {
        let submods: serde_json::Map<String, serde_json::Value> = self
            .submods
            .iter()
            .map(|(name, s)| {
                (
                    name.clone(),
                    serde_json::json!({
                        "ear.status": s.status.as_str(),
                        "ear.trustworthiness-vector": s.trust_vector,
                        "ear.appraisal-policy-ids": s.policy_ids,
                        "ear.veraison.annotated-evidence": claims_to_json(&s.device_claims),
                        "ear.veraison.policy-claims": claims_to_json(&s.annotations),
                    }),
                )
            })
            .collect();
        serde_json::json!({
            "eat_profile": EAR_PROFILE,
            "iat": self.iat,
            "exp": self.exp,
            "eat_nonce": crate::hex(&self.nonce),
            "ear.status": self.status.as_str(),
            "ear.verifier-id": {"build": self.verifier_id.build, "developer": self.verifier_id.developer},
            "submods": submods,
            "custody.node-id": self.node_id,
            "custody.site": self.site,
            "custody.country": self.country,
            "custody.operator": self.operator,
            "custody.policy-id": self.policy_id,
            "custody.policy-digest": self.policy_digest.as_ref().map(crate::hex),
            "custody.attributes": claims_to_json(&self.attributes),
        })
    }

    /// The least trustworthy submod status.
    pub fn worst_submod_status(&self) -> TrustTier {
        self.submods
            .values()
            .map(|s| s.status)
            .max()
            .unwrap_or(TrustTier::None)
    }

    /// The rules both encoding and decoding enforce.
    fn validate(&self) -> Result<(), EarError> {
        if !(8..=64).contains(&self.nonce.len()) {
            return Err(claims_err(format!(
                "eat_nonce is {} bytes, want 8..=64",
                self.nonce.len()
            )));
        }
        if self.exp <= self.iat {
            return Err(claims_err("exp is not after iat"));
        }
        if self.submods.is_empty() {
            return Err(claims_err("no submods"));
        }
        if self.submods.keys().any(String::is_empty) {
            return Err(claims_err("empty submod name"));
        }
        if self.status < self.worst_submod_status() {
            return Err(claims_err(format!(
                "status {} is more trustworthy than the worst submod ({})",
                self.status,
                self.worst_submod_status()
            )));
        }
        if self.verifier_id.build.is_empty() || self.verifier_id.developer.is_empty() {
            return Err(claims_err("empty verifier id"));
        }
        if self.node_id.is_empty() {
            return Err(claims_err("empty node id"));
        }
        if let Some(c) = &self.country {
            if c.len() != 2 || !c.bytes().all(|b| b.is_ascii_uppercase()) {
                return Err(claims_err(format!("country {c:?} is not ISO 3166-1 alpha-2")));
            }
        }
        if let Some(d) = &self.policy_digest {
            if d.len() != 32 {
                return Err(claims_err(format!("policy digest is {} bytes, want 32", d.len())));
            }
        }
        for (name, s) in &self.submods {
            if s.policy_ids.iter().any(String::is_empty) {
                return Err(claims_err(format!("submod {name}: empty policy id")));
            }
        }
        Ok(())
    }

    /// The deterministic CBOR claims map (the COSE payload).
    pub fn to_cbor(&self) -> Result<Vec<u8>, EarError> {
        self.validate()?;
        use claim_key as k;
        let mut top = vec![
            (int(k::EAT_PROFILE.into())?, Value::Text(EAR_PROFILE.to_owned())),
            (int(k::IAT.into())?, int(self.iat.into())?),
            (int(k::EXP.into())?, int(self.exp.into())?),
            (int(k::EAT_NONCE.into())?, Value::Bytes(self.nonce.clone())),
            (int(k::STATUS.into())?, int(self.status.value().into())?),
            (
                int(k::VERIFIER_ID.into())?,
                canonical_map(vec![
                    (
                        int(k::VID_DEVELOPER.into())?,
                        Value::Text(self.verifier_id.developer.clone()),
                    ),
                    (
                        int(k::VID_BUILD.into())?,
                        Value::Text(self.verifier_id.build.clone()),
                    ),
                ])?,
            ),
            (
                int(k::SUBMODS.into())?,
                canonical_map(
                    self.submods
                        .iter()
                        .map(|(n, s)| Ok((Value::Text(n.clone()), submod_to_cbor(s)?)))
                        .collect::<Result<_, EarError>>()?,
                )?,
            ),
            (int(k::CUSTODY_NODE_ID.into())?, Value::Text(self.node_id.clone())),
        ];
        let texts = [
            (k::CUSTODY_SITE, &self.site),
            (k::CUSTODY_COUNTRY, &self.country),
            (k::CUSTODY_OPERATOR, &self.operator),
            (k::CUSTODY_POLICY_ID, &self.policy_id),
        ];
        for (key, v) in texts {
            if let Some(v) = v {
                top.push((int(key.into())?, Value::Text(v.clone())));
            }
        }
        if let Some(d) = &self.policy_digest {
            top.push((int(k::CUSTODY_POLICY_DIGEST.into())?, Value::Bytes(d.clone())));
        }
        if !self.attributes.is_empty() {
            top.push((
                int(k::CUSTODY_ATTRIBUTES.into())?,
                claims_to_cbor(&self.attributes)?,
            ));
        }
        let mut out = Vec::new();
        ciborium::into_writer(&canonical_map(top)?, &mut out).map_err(|e| claims_err(e.to_string()))?;
        Ok(out)
    }

    /// Decode a claims map (no signature check: use [`verify`] for signed results).
    pub fn from_cbor(bytes: &[u8]) -> Result<Self, EarError> {
        let mut rest = bytes;
        let v: Value = ciborium::from_reader(&mut rest).map_err(|e| claims_err(e.to_string()))?;
        if !rest.is_empty() {
            return Err(claims_err(format!(
                "{} trailing bytes after the claims map",
                rest.len()
            )));
        }
        let mut top = int_keyed(v, "claims")?;
        use claim_key as k;
        let profile = text(take(&mut top, k::EAT_PROFILE, "eat_profile")?, "eat_profile")?;
        if profile != EAR_PROFILE {
            return Err(claims_err(format!(
                "eat_profile {profile:?}, want {EAR_PROFILE:?}"
            )));
        }
        let mut vid = int_keyed(
            take(&mut top, k::VERIFIER_ID, "ear_verifier_id")?,
            "ear_verifier_id",
        )?;
        let verifier_id = VerifierId {
            developer: text(take(&mut vid, k::VID_DEVELOPER, "developer")?, "developer")?,
            build: text(take(&mut vid, k::VID_BUILD, "build")?, "build")?,
        };
        let submods = match take(&mut top, k::SUBMODS, "submods")? {
            Value::Map(entries) => {
                let mut m = BTreeMap::new();
                for (name, s) in entries {
                    let name = text(name, "submod name")?;
                    let s = submod_from_cbor(s).map_err(|e| claims_err(format!("submod {name}: {e}")))?;
                    if m.insert(name.clone(), s).is_some() {
                        return Err(claims_err(format!("duplicate submod {name}")));
                    }
                }
                m
            }
            _ => return Err(claims_err("submods is not a map")),
        };
        let opt_text =
            |top: &mut BTreeMap<i128, Value>, key: i64, what: &str| -> Result<Option<String>, EarError> {
                top.remove(&i128::from(key)).map(|v| text(v, what)).transpose()
            };
        let r = Self {
            iat: int_of(take(&mut top, k::IAT, "iat")?, "iat")?,
            exp: int_of(take(&mut top, k::EXP, "exp")?, "exp")?,
            nonce: bytes_of(take(&mut top, k::EAT_NONCE, "eat_nonce")?, "eat_nonce")?,
            status: tier(take(&mut top, k::STATUS, "ear_status")?)?,
            verifier_id,
            submods,
            node_id: text(
                take(&mut top, k::CUSTODY_NODE_ID, "custody.node-id")?,
                "custody.node-id",
            )?,
            site: opt_text(&mut top, k::CUSTODY_SITE, "custody.site")?,
            country: opt_text(&mut top, k::CUSTODY_COUNTRY, "custody.country")?,
            operator: opt_text(&mut top, k::CUSTODY_OPERATOR, "custody.operator")?,
            policy_id: opt_text(&mut top, k::CUSTODY_POLICY_ID, "custody.policy-id")?,
            policy_digest: top
                .remove(&i128::from(k::CUSTODY_POLICY_DIGEST))
                .map(|v| bytes_of(v, "custody.policy-digest"))
                .transpose()?,
            attributes: top
                .remove(&i128::from(k::CUSTODY_ATTRIBUTES))
                .map(|v| claims_from_cbor(v, "custody.attributes"))
                .transpose()?
                .unwrap_or_default(),
        };
        // Unknown claims are ignored, as EAT requires; duplicates were refused above.
        r.validate()?;
        Ok(r)
    }
}

fn submod_to_cbor(s: &Submod) -> Result<Value, EarError> {
    use claim_key as k;
    let mut m = vec![(int(k::STATUS.into())?, int(s.status.value().into())?)];
    if !s.trust_vector.is_empty() {
        let tv = s
            .trust_vector
            .slots()
            .iter()
            .filter_map(|(key, v)| v.map(|v| Ok((int((*key).into())?, int(v.into())?))))
            .collect::<Result<_, EarError>>()?;
        m.push((int(k::TRUST_VECTOR.into())?, canonical_map(tv)?));
    }
    if !s.policy_ids.is_empty() {
        m.push((
            int(k::POLICY_IDS.into())?,
            Value::Array(s.policy_ids.iter().map(|p| Value::Text(p.clone())).collect()),
        ));
    }
    if !s.device_claims.is_empty() {
        m.push((int(k::ATTESTER_CLAIMS.into())?, claims_to_cbor(&s.device_claims)?));
    }
    if !s.annotations.is_empty() {
        m.push((int(k::VERIFIER_CLAIMS.into())?, claims_to_cbor(&s.annotations)?));
    }
    canonical_map(m)
}

fn submod_from_cbor(v: Value) -> Result<Submod, EarError> {
    use claim_key as k;
    let mut m = int_keyed(v, "submod")?;
    let status = tier(take(&mut m, k::STATUS, "ear_status")?)?;
    let mut trust_vector = TrustVector::default();
    if let Some(tv) = m.remove(&i128::from(k::TRUST_VECTOR)) {
        let tv = int_keyed(tv, "ear_trustworthiness_vector")?;
        if tv.is_empty() {
            return Err(claims_err("empty ear_trustworthiness_vector"));
        }
        for (key, v) in tv {
            let slot = trust_vector
                .slot_mut(key)
                .ok_or_else(|| claims_err(format!("unknown trustworthiness claim {key}")))?;
            let v = int_of(v, "trustworthiness claim")?;
            *slot = Some(
                i8::try_from(v).map_err(|_| claims_err(format!("trustworthiness claim {v} out of range")))?,
            );
        }
    }
    let policy_ids = match m.remove(&i128::from(k::POLICY_IDS)) {
        None => Vec::new(),
        Some(Value::Array(a)) if !a.is_empty() => a
            .into_iter()
            .map(|p| text(p, "policy id"))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(claims_err("ear_appraisal_policy_ids is not a non-empty array")),
    };
    let claims = |m: &mut BTreeMap<i128, Value>, key: i64, what: &str| -> Result<Claims, EarError> {
        match m.remove(&i128::from(key)) {
            None => Ok(Claims::new()),
            Some(v) => {
                let c = claims_from_cbor(v, what)?;
                if c.is_empty() {
                    return Err(claims_err(format!("empty {what}")));
                }
                Ok(c)
            }
        }
    };
    let device_claims = claims(&mut m, k::ATTESTER_CLAIMS, "ear_attester_claims")?;
    let annotations = claims(&mut m, k::VERIFIER_CLAIMS, "ear_verifier_claims")?;
    let s = Submod {
        status,
        trust_vector,
        policy_ids,
        device_claims,
        annotations,
    };
    if s.status < s.trust_vector.worst_tier() {
        return Err(claims_err(format!(
            "status {} is more trustworthy than its trust vector ({})",
            s.status,
            s.trust_vector.worst_tier()
        )));
    }
    Ok(s)
}

fn int(i: i128) -> Result<Value, EarError> {
    Integer::try_from(i)
        .map(Value::Integer)
        .map_err(|_| claims_err(format!("integer {i} out of CBOR range")))
}

fn claims_to_cbor(c: &Claims) -> Result<Value, EarError> {
    canonical_map(
        c.iter()
            .map(|(k, v)| Ok((Value::Text(k.clone()), v.to_cbor()?)))
            .collect::<Result<_, EarError>>()?,
    )
}

fn claims_from_cbor(v: Value, what: &str) -> Result<Claims, EarError> {
    let Value::Map(entries) = v else {
        return Err(claims_err(format!("{what} is not a map")));
    };
    let mut m = Claims::new();
    for (k, v) in entries {
        let k = text(k, what)?;
        let v = ClaimValue::from_cbor(v)?;
        if m.insert(k.clone(), v).is_some() {
            return Err(claims_err(format!("{what}: duplicate key {k:?}")));
        }
    }
    Ok(m)
}

/// RFC 8949 4.2.1 deterministic order: keys sorted by their encoded bytes.
fn canonical_map(entries: Vec<(Value, Value)>) -> Result<Value, EarError> {
    let mut keyed = entries
        .into_iter()
        .map(|(k, v)| {
            let mut enc = Vec::new();
            ciborium::into_writer(&k, &mut enc).map_err(|e| claims_err(e.to_string()))?;
            Ok((enc, k, v))
        })
        .collect::<Result<Vec<_>, EarError>>()?;
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    if keyed.windows(2).any(|w| matches!(w, [a, b] if a.0 == b.0)) {
        return Err(claims_err("duplicate map key"));
    }
    Ok(Value::Map(keyed.into_iter().map(|(_, k, v)| (k, v)).collect()))
}

/// An integer-keyed map; duplicate or non-integer keys are refused.
fn int_keyed(v: Value, what: &str) -> Result<BTreeMap<i128, Value>, EarError> {
    let Value::Map(entries) = v else {
        return Err(claims_err(format!("{what} is not a map")));
    };
    let mut m = BTreeMap::new();
    for (k, v) in entries {
        let Value::Integer(k) = k else {
            return Err(claims_err(format!("{what}: non-integer key")));
        };
        let k = i128::from(k);
        if m.insert(k, v).is_some() {
            return Err(claims_err(format!("{what}: duplicate key {k}")));
        }
    }
    Ok(m)
}

fn take(m: &mut BTreeMap<i128, Value>, key: i64, what: &str) -> Result<Value, EarError> {
    m.remove(&i128::from(key))
        .ok_or_else(|| claims_err(format!("missing {what} ({key})")))
}

fn text(v: Value, what: &str) -> Result<String, EarError> {
    match v {
        Value::Text(s) => Ok(s),
        _ => Err(claims_err(format!("{what} is not a text string"))),
    }
}

fn bytes_of(v: Value, what: &str) -> Result<Vec<u8>, EarError> {
    match v {
        Value::Bytes(b) => Ok(b),
        _ => Err(claims_err(format!("{what} is not a byte string"))),
    }
}

fn int_of(v: Value, what: &str) -> Result<i64, EarError> {
    match v {
        Value::Integer(i) => i64::try_from(i).map_err(|_| claims_err(format!("{what} out of range"))),
        _ => Err(claims_err(format!("{what} is not an integer"))),
    }
}

fn tier(v: Value) -> Result<TrustTier, EarError> {
    let i = int_of(v, "ear_status")?;
    TrustTier::from_value(i).ok_or_else(|| claims_err(format!("ear_status {i} is not a tier")))
}

/// The EAR signing key: ECDSA P-256 (ES256).
pub struct EarSigningKey {
    pair: EcdsaKeyPair,
    public: VerifierKey,
}

impl fmt::Debug for EarSigningKey {
    // Never the private half.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EarSigningKey")
            .field("kid", &crate::hex(self.public.kid()))
            .finish()
    }
}

impl EarSigningKey {
    /// A fresh random key.
    pub fn generate() -> Result<Self, EarError> {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
            .map_err(|_| EarError::Key("P-256 key generation failed".into()))?;
        Self::from_pair(pair)
    }

    /// Import a PKCS#8 (v1 or v2) DER P-256 private key.
    pub fn from_pkcs8(der: &[u8]) -> Result<Self, EarError> {
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der)
            .map_err(|e| EarError::Key(format!("not a P-256 PKCS#8 key: {e}")))?;
        Self::from_pair(pair)
    }

    /// Export as PKCS#8 v1 DER. This is the secret: store it as one.
    pub fn to_pkcs8(&self) -> Result<Vec<u8>, EarError> {
        self.pair
            .to_pkcs8v1()
            .map(|d| d.as_ref().to_vec())
            .map_err(|_| EarError::Key("PKCS#8 export failed".into()))
    }

    fn from_pair(pair: EcdsaKeyPair) -> Result<Self, EarError> {
        let public =
            VerifierKey::from_sec1(pair.public_key().as_ref()).map_err(|e| EarError::Key(e.to_string()))?;
        Ok(Self { pair, public })
    }

    pub fn public_key(&self) -> &VerifierKey {
        &self.public
    }

    /// The key pair, for the verifier's other COSE objects (migration tickets): one
    /// verifier identity, one kid.
    pub fn key_pair(&self) -> &EcdsaKeyPair {
        &self.pair
    }
}

/// The key that verifies EARs: the verifier's key (it also signs tickets and deny lists).
pub use custody_types::key::{KeyError, VerifierKey};

/// The protected content type of an EAR: the EAT media type for a CWT (RFC 9782). The
/// `eat_profile` parameter is left out because COSE (coset, and so Veraison's `ear`
/// crate) accepts only `type/subtype` text, and the profile URI has a `/`; the claims
/// carry the profile. The EAR key also signs migration tickets; each message type names
/// itself so that a signature for one never verifies as the other.
pub const CONTENT_TYPE: &str = "application/eat+cwt";

/// An EAR's envelope (see `custody_types::envelope`). `foreign`: EARs of other issuers,
/// such as Veraison's `ear` crate, name no content type and may carry the kid unprotected;
/// every other message the verifier's key signs names its own protected type, so none of
/// them passes here.
pub const PROFILE: Profile = Profile {
    content_type: CONTENT_TYPE,
    alg: Alg::Es256,
    max_len: MAX_EAR_LEN,
    require_tag: false,
    require_kid: false,
    foreign: true,
};

/// Largest EAR accepted, bytes (a result with 16 GPUs' submods is a few KiB).
pub const MAX_EAR_LEN: usize = 256 * 1024;

/// Sign a result: COSE_Sign1 (tag 18), ES256, content type, kid, payload = the CBOR
/// claims map.
pub fn sign(result: &AttestationResult, key: &EarSigningKey) -> Result<Vec<u8>, EarError> {
    envelope::seal_es256(&PROFILE, &key.pair, result.to_cbor()?).map_err(envelope_err)
}

fn envelope_err(e: EnvelopeError) -> EarError {
    match e {
        EnvelopeError::Format(m) => EarError::Cose(m),
        EnvelopeError::Algorithm(m) => EarError::Algorithm(m),
        EnvelopeError::ContentType { found, .. } => EarError::ContentType { found },
        EnvelopeError::KeyId(_) => EarError::KeyId,
        EnvelopeError::Signature(_) => EarError::Signature,
    }
}

/// Verify and decode a signed result at appraisal time `now` (checks in the module doc).
pub fn verify(bytes: &[u8], key: &VerifierKey, now: UnixTime) -> Result<AttestationResult, EarError> {
    // ear_format (structure), ear_signature (alg, crit, kid, signature), content_type
    let payload = envelope::open_es256(bytes, &PROFILE, key).map_err(envelope_err)?;
    // ear_format (claims)
    let result = AttestationResult::from_cbor(&payload)?;
    // ear_expired
    if now.0 >= result.exp {
        return Err(EarError::Expired {
            exp: result.exp,
            now: now.0,
        });
    }
    Ok(result)
}

#[cfg(test)]
mod tests;
