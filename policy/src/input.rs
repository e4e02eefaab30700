//! The policy input document, typed. The verifier service builds it per round; a policy
//! reads it as `input`. Every field is documented in docs/policy.md.
//!
//! The types deserialize leniently (unknown fields are kept out, absent optional parts
//! default) so the service may pass either this typed form or the equivalent JSON, and a
//! newer service can add fields without breaking an older policy crate.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Everything a policy sees about one node in one round.
///
/// `J` is the type of the free-form JSON parts (device claims, registry identities):
/// `serde_json::Value` as the service builds it; [`serde::de::IgnoredAny`] only to check
/// an input's shape without copying those parts, which accept any JSON either way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound(deserialize = "J: Deserialize<'de> + Default"))]
pub struct PolicyInput<J = serde_json::Value> {
    pub node: NodeInfo,
    /// Per-device verification results, keyed `tpm`, `snp`, `gpu0`, `gpu1`, ...
    #[serde(default)]
    pub devices: BTreeMap<String, DeviceResult<J>>,
    /// The node's GPUs, one entry per attested or reported GPU.
    #[serde(default)]
    pub gpus: Vec<GpuInfo>,
    /// Attributes derived from the signed registry (site, operator, hardware binding).
    /// Absent when the verifier has no registry configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sovereignty: Option<Derived<J>>,
    /// Latency-bound locality proofs. Absent when no landmark measured the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality: Option<Locality>,
    /// Where the TPM reference values came from (`tofu`, `operator`, ...), as today.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<ReferenceInfo>,
    /// Where the session key lives: `cvm` only when SNP evidence ties the agent to the
    /// node's own attested guest. Absent when no evidence arrived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_protection: Option<KeyProtectionInfo>,
}

/// The session key's protection as the verifier labels it, and why it is not stronger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyProtectionInfo {
    /// `cvm` or `process`.
    pub level: String,
    /// Why the key is not `cvm` (`snp_reference: unconfigured`, ...); empty when it is.
    #[serde(default)]
    pub reasons: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    pub state: NodeState,
}

/// The node's state in the verifier's store before this round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    Enrolled,
    Trusted,
    Failed,
    Revoked,
}

/// One device's evidence appraisal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound(deserialize = "J: Deserialize<'de> + Default"))]
pub struct DeviceResult<J = serde_json::Value> {
    /// `tpm`, `snp` or `nvgpu`.
    pub kind: String,
    pub verified: bool,
    /// Stable name of the check that rejected the evidence, when `verified` is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_check: Option<String>,
    /// The verifier's claims for this device (its `*Claims` type as JSON); null when rejected.
    #[serde(default)]
    pub claims: J,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuInfo {
    pub index: u32,
    pub model: String,
    /// The GPU's attestation report verified in this round.
    pub attested: bool,
    pub cc_mode: CcMode,
}

/// The GPU's confidential-computing mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CcMode {
    On,
    Off,
    Devtools,
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReferenceInfo {
    #[serde(default)]
    pub source: Option<String>,
}

/// Attributes the registry crate derives from the signed registry and the attested
/// hardware identity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound(deserialize = "J: Deserialize<'de> + Default"))]
pub struct Derived<J = serde_json::Value> {
    pub registry: RegistryRef,
    #[serde(default)]
    pub site: Option<Site>,
    #[serde(default)]
    pub operator: Option<Operator>,
    pub hardware: HardwareBinding<J>,
}

/// Which registry document the attributes come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryRef {
    pub version: u64,
    /// SHA-256 of the signed registry, hex.
    pub digest: String,
    /// Key id of the registry authority that signed it.
    pub kid: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Site {
    pub id: String,
    pub name: String,
    /// ISO 3166-1 alpha-2.
    pub country: String,
    #[serde(default)]
    pub region: Option<String>,
    pub lat: f64,
    pub lon: f64,
}

/// The legal entity operating the node's site, with what its control chain implies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operator {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub lei: Option<String>,
    pub country: String,
    /// Every country whose law reaches the operator (its own and its controllers').
    pub jurisdictions: Vec<String>,
    pub cloud_act_exposed: bool,
    /// Why it is exposed, one phrase per cause; empty when not exposed.
    #[serde(default)]
    pub cloud_act_reasons: Vec<String>,
    /// SecNumCloud 3.2 criterion 19.6: no non-EU holder above 24 %, all together <= 39 %.
    pub secnumcloud_immune: bool,
    #[serde(default)]
    pub secnumcloud_reasons: Vec<String>,
    /// Basis points (1/100 %) of capital / voting rights held outside the EU, direct and
    /// indirect: largest single holder and all together.
    #[serde(default)]
    pub non_eu_capital_max_bp: u32,
    #[serde(default)]
    pub non_eu_capital_total_bp: u32,
    #[serde(default)]
    pub non_eu_voting_max_bp: u32,
    #[serde(default)]
    pub non_eu_voting_total_bp: u32,
    #[serde(default)]
    pub controllers: Vec<Controller>,
}

/// An entity holding part of the operator, directly or through the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Controller {
    pub id: String,
    pub name: String,
    pub country: String,
    pub capital_bp: u32,
    pub voting_bp: u32,
    /// US-incorporated or with a US nexus.
    pub us: bool,
}

/// Whether the attested hardware identities are bound to registry sites.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound(deserialize = "J: Deserialize<'de> + Default"))]
pub struct HardwareBinding<J = serde_json::Value> {
    /// Every attested identity is listed in the registry, all at the same site.
    pub bound: bool,
    /// Identities found in the registry, as the registry crate names them.
    #[serde(default)]
    pub matched: Vec<J>,
    /// Identities not found in the registry.
    #[serde(default)]
    pub unmatched: Vec<J>,
    /// Site ids the matched identities are bound to.
    #[serde(default)]
    pub sites: Vec<String>,
}

/// Results of latency-bound locality proofs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Locality {
    #[serde(default)]
    pub proofs: Vec<LocalityProof>,
    /// Proven upper bound of the node's distance to each registry site, km: the minimum
    /// over landmarks of d(landmark, site) + bound.
    #[serde(default)]
    pub upper_km: BTreeMap<String, f64>,
    /// At least one proof whose session key cannot leave the boundary (cvm or tpm).
    pub strong: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocalityProof {
    pub landmark: String,
    pub lat: f64,
    pub lon: f64,
    pub rtt_ms: f64,
    /// The node is within this many km of the landmark.
    pub bound_km: f64,
    pub key_protection: KeyProtection,
    /// The session key lives in plain process memory: a copy elsewhere could answer.
    pub weak: bool,
}

/// Where the session key that signed the locality answer lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyProtection {
    Cvm,
    Tpm,
    Process,
}

impl PolicyInput {
    /// Check a JSON input against the typed shape; the error names the offending field.
    pub fn from_json(v: &serde_json::Value) -> Result<Self, serde_json::Error> {
        Self::deserialize(v)
    }

    /// Check a JSON input against the typed shape, as [`PolicyInput::from_json`] does,
    /// without building it: the free-form parts are skipped rather than copied (they
    /// were most of the cost of the check).
    pub fn check_json(v: &serde_json::Value) -> Result<(), serde_json::Error> {
        PolicyInput::<serde::de::IgnoredAny>::deserialize(v).map(drop)
    }
}

/// A JSON document as the regorus value a policy reads, walked directly rather than
/// through serde's visitor: the same value, somewhat faster (the visitor checks allocator
/// limits and interns keys per entry). Integers become regorus
/// integers as the visitor makes them; any other number (a float, or a big number
/// under serde_json's `arbitrary_precision`) goes through the visitor itself, so no
/// number reads differently.
#[doc(hidden)]
pub fn to_regorus(v: &serde_json::Value) -> Result<regorus::Value, serde_json::Error> {
    use serde_json::Value as J;
    Ok(match v {
        J::Null => regorus::Value::Null,
        J::Bool(b) => regorus::Value::Bool(*b),
        J::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => regorus::Value::from(u),
            (None, Some(i)) => regorus::Value::from(i),
            (None, None) => regorus::Value::deserialize(v)?,
        },
        J::String(s) => regorus::Value::from(s.as_str()),
        J::Array(a) => {
            let mut out = Vec::with_capacity(a.len());
            for x in a {
                out.push(to_regorus(x)?);
            }
            regorus::Value::from(out)
        }
        J::Object(o) => {
            // Entries first, then one object: serde_json's keys come sorted, and the
            // vendored regorus (third_party/regorus/CUSTODY.md) builds an object from
            // sorted entries straight into its compact storage, with no tree between.
            let mut out = Vec::with_capacity(o.len());
            for (k, x) in o {
                out.push((regorus::Value::from(k.as_str()), to_regorus(x)?));
            }
            regorus::Value::from(out.into_iter().collect::<regorus::value::Object>())
        }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn shape_check_agrees_with_from_json() {
        let node = json!({"id": "n", "name": "x", "state": "trusted"});
        for v in [
            serde_json::from_str(include_str!("../tests/fixtures/node-fr-pass.json")).unwrap(),
            serde_json::from_str(include_str!("../tests/fixtures/node-us-controlled.json")).unwrap(),
            serde_json::from_str(include_str!("../tests/fixtures/malformed-state.json")).unwrap(),
            serde_json::from_str(include_str!("../tests/fixtures/malformed-missing-node.json")).unwrap(),
            json!({"node": node, "devices": {"t": {"kind": "tpm", "verified": true, "claims": [1, {"a": null}]}}}),
            json!({"node": node, "devices": {"t": {"kind": "tpm", "verified": "yes"}}}),
            json!({"node": node, "devices": {"t": {"kind": "tpm", "verified": true, "failed_check": 3}}}),
            json!({"node": node, "devices": []}),
            json!({"node": node, "gpus": [{"index": -1}]}),
            json!({"node": node, "locality": {"proofs": [], "strong": "yes"}}),
            json!({"node": node, "sovereignty": {"registry": {}, "hardware": {"bound": true}}}),
            json!({"node": node, "sovereignty": {"registry": {"version": 1, "digest": "", "kid": ""},
                   "hardware": {"bound": true, "matched": [{"x": 1}, "y"], "unmatched": 5}}}),
            json!({"node": node, "extra": {"anything": [1]}}),
            json!([1]),
            json!(null),
        ] {
            let full = PolicyInput::from_json(&v).map(drop).map_err(|e| e.to_string());
            let shape = PolicyInput::check_json(&v).map_err(|e| e.to_string());
            assert_eq!(full, shape, "{v}");
        }
    }

    #[test]
    fn direct_conversion_matches_serde() {
        let fixture: serde_json::Value =
            serde_json::from_str(include_str!("../tests/fixtures/node-fr-pass.json")).unwrap();
        for v in [
            fixture,
            json!({"n": [0, 1, -1, u64::MAX, i64::MIN, 0.5, -2.5e300, 1e-7], "e": {}, "a": [],
                   "s": "é", "b": [true, false, null], "k": {"z": 1, "a": {"y": [{}]}}}),
        ] {
            let want = regorus::Value::deserialize(&v).unwrap();
            assert_eq!(to_regorus(&v).unwrap(), want);
        }
    }
}
