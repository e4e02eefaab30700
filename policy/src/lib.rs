//! Appraisal policy: typed input (claims per device, derived attributes) in, a decision with
//! human-readable reasons out. Policies are Rego (the convention of OPA, Trustee and
//! NVIDIA's relying-party policy), evaluated by regorus.
//!
//! A policy is a Rego module in package `custody.<name>` with a boolean rule `allow` and a
//! set `deny` of reason strings. The decision allows only when `allow` is true *and* `deny`
//! is empty, so a policy that forgets a reason still cannot allow by accident.
//!
//! The parsed engine is built once per policy and cloned for each decision: cloning is
//! cheap (reference-counted modules) and keeps decisions independent of each other.
#![forbid(unsafe_code)]

use aws_lc_rs::digest;
use serde::Serialize;
use thiserror::Error;

/// The policy shipped with Custody and used when none is configured.
pub const DEFAULT_POLICY: &str = include_str!("../policies/default.rego");

#[derive(Debug, Error)]
pub enum PolicyError {
    #[error("policy `{id}` does not compile: {reason}")]
    Compile { id: String, reason: String },
    #[error("policy `{id}` has no `package custody.<name>` declaration")]
    Package { id: String },
    #[error("policy input is not valid: {0}")]
    Input(String),
    #[error("policy `{id}` failed to evaluate `{rule}`: {reason}")]
    Eval {
        id: String,
        rule: String,
        reason: String,
    },
    #[error("policy `{id}`: rule `{rule}` has the wrong type ({found})")]
    Type { id: String, rule: String, found: String },
}

/// The outcome of one policy evaluation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub allow: bool,
    /// Why the node was refused; empty when allowed.
    pub reasons: Vec<String>,
    pub policy_id: String,
    /// SHA-256 of the Rego source, hex: results say exactly which policy decided.
    pub policy_digest: String,
}

/// A compiled policy, ready to evaluate many inputs.
#[derive(Debug, Clone)]
pub struct Policy {
    id: String,
    package: String,
    digest: String,
    engine: regorus::Engine,
}

impl Policy {
    /// Compile `rego` under the name `id` (a file name or policy id, for messages).
    pub fn new(id: &str, rego: &str) -> Result<Self, PolicyError> {
        let package = rego
            .lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix("package "))
            .map(|p| p.trim().to_owned())
            .filter(|p| p.starts_with("custody."))
            .ok_or_else(|| PolicyError::Package { id: id.to_owned() })?;
        let mut engine = regorus::Engine::new();
        engine.set_strict_builtin_errors(true);
        engine
            .add_policy(format!("{id}.rego"), rego.to_owned())
            .map_err(|e| PolicyError::Compile {
                id: id.to_owned(),
                reason: e.to_string(),
            })?;
        let d = digest::digest(&digest::SHA256, rego.as_bytes());
        Ok(Self {
            id: id.to_owned(),
            package,
            digest: hex::encode(d.as_ref()),
            engine,
        })
    }

    pub fn default_policy() -> Result<Self, PolicyError> {
        Self::new("default", DEFAULT_POLICY)
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// Evaluate against a JSON input document.
    pub fn evaluate(&self, input: &serde_json::Value) -> Result<Decision, PolicyError> {
        let mut engine = self.engine.clone();
        let json = serde_json::to_string(input).map_err(|e| PolicyError::Input(e.to_string()))?;
        let value = regorus::Value::from_json_str(&json).map_err(|e| PolicyError::Input(e.to_string()))?;
        engine.set_input(value);

        let allow_rule = format!("data.{}.allow", self.package);
        let allow = match engine.eval_rule(allow_rule.clone()) {
            Ok(v) => match v.as_bool() {
                Ok(b) => *b,
                Err(_) if v == regorus::Value::Undefined => false,
                Err(_) => {
                    return Err(PolicyError::Type {
                        id: self.id.clone(),
                        rule: allow_rule,
                        found: v.to_string(),
                    })
                }
            },
            Err(e) => {
                return Err(PolicyError::Eval {
                    id: self.id.clone(),
                    rule: allow_rule,
                    reason: e.to_string(),
                })
            }
        };

        // `deny` is optional in a policy: query it (undefined -> no reasons) rather than
        // evaluating it as a rule, which fails when the policy declares none.
        let deny_rule = format!("data.{}.deny", self.package);
        let results = engine
            .eval_query(deny_rule.clone(), false)
            .map_err(|e| PolicyError::Eval {
                id: self.id.clone(),
                rule: deny_rule.clone(),
                reason: e.to_string(),
            })?;
        let mut reasons = Vec::new();
        for v in results
            .result
            .iter()
            .flat_map(|r| r.expressions.iter())
            .map(|e| &e.value)
        {
            let set = v.as_set().map_err(|_| PolicyError::Type {
                id: self.id.clone(),
                rule: deny_rule.clone(),
                found: v.to_string(),
            })?;
            reasons.extend(set.iter().map(|r| {
                r.as_string()
                    .map(|s| s.to_string())
                    .unwrap_or_else(|_| r.to_string())
            }));
        }
        reasons.sort();
        if !allow && reasons.is_empty() {
            reasons.push(format!("policy `{}` did not allow this node", self.id));
        }
        Ok(Decision {
            allow: allow && reasons.is_empty(),
            reasons,
            policy_id: self.id.clone(),
            policy_digest: self.digest.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use serde_json::json;

    fn tpm_ok() -> serde_json::Value {
        json!({"kind": "tpm", "verified": true, "claims": {"pcrs": {}}})
    }

    #[test]
    fn default_allows_verified_evidence() {
        let p = Policy::default_policy().unwrap();
        let d = p.evaluate(&json!({"devices": {"tpm": tpm_ok()}})).unwrap();
        assert!(d.allow, "{d:?}");
        assert!(d.reasons.is_empty());
        assert_eq!(d.policy_digest.len(), 64);
    }

    #[test]
    fn default_denies_with_reasons() {
        let p = Policy::default_policy().unwrap();
        let d = p.evaluate(&json!({"devices": {}})).unwrap();
        assert!(!d.allow);
        assert_eq!(d.reasons, vec!["no evidence was presented"]);

        let d = p
            .evaluate(&json!({"devices": {
                "tpm": tpm_ok(),
                "gpu0": {"kind": "nvgpu", "verified": false, "failed_check": "signature", "claims": null},
                "snp": {"kind": "snp", "verified": true, "claims": {"policy": {"debug_allowed": true}}}
            }}))
            .unwrap();
        assert!(!d.allow);
        assert_eq!(
            d.reasons,
            vec![
                "gpu0: evidence rejected by check `signature`",
                "snp: SEV-SNP guest policy allows debugging"
            ]
        );
    }

    #[test]
    fn allow_without_reasons_is_still_explained() {
        let p = Policy::new(
            "strict",
            "package custody.strict\nimport rego.v1\ndefault allow := false\n",
        )
        .unwrap();
        let d = p.evaluate(&json!({})).unwrap();
        assert!(!d.allow);
        assert_eq!(d.reasons, vec!["policy `strict` did not allow this node"]);
    }

    #[test]
    fn bad_policies_are_errors() {
        assert!(matches!(
            Policy::new("x", "package other\nallow := true"),
            Err(PolicyError::Package { .. })
        ));
        assert!(matches!(
            Policy::new("x", "package custody.x\nallow := {"),
            Err(PolicyError::Compile { .. })
        ));
        let p = Policy::new("t", "package custody.t\nallow := \"yes\"\n").unwrap();
        assert!(matches!(p.evaluate(&json!({})), Err(PolicyError::Type { .. })));
    }
}
