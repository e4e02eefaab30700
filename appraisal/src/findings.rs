//! What the stages found so far: per-device results (the policy's `devices`), EAR
//! submodules, the round's failure, and why the session key is not in CVM memory.

use custody_verifier::check::{FailedCheck, Outcome};
use custody_verifier::ear::{ClaimValue, Submod, TrustTier};
use serde::Serialize;
use std::collections::BTreeMap;

/// The check of a round that matched a baseline still awaiting approval: the node is not
/// trusted, but the failure is the operator's to clear, so it does not count towards
/// revocation.
pub const REFERENCE_PENDING: &str = "reference_pending";

/// The check that names a failed round, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub check: String,
    pub reason: String,
}

/// The stages' shared findings, filled in stage order.
#[derive(Debug, Default)]
pub struct Findings {
    /// Per device (`tpm`, `snp`, `gpu0`, ...): kind, verified, claims, failed check.
    pub devices: serde_json::Map<String, serde_json::Value>,
    /// Per device: the EAR submodule.
    pub submods: BTreeMap<String, Submod>,
    /// The round's failure: the first one found.
    pub failure: Option<Failure>,
    /// Why the session key is not held in CVM memory (empty when it is).
    pub key_protection_reasons: Vec<String>,
}

impl Findings {
    /// Record a failure. The first names the round, except that a baseline awaiting
    /// approval gives way to any real failure found after it.
    pub fn fail(&mut self, check: &str, reason: String) {
        if self.failure.as_ref().is_none_or(|f| f.check == REFERENCE_PENDING) {
            self.failure = Some(Failure {
                check: check.to_owned(),
                reason,
            });
        }
    }

    /// A device's entry and submodule.
    pub fn device(&mut self, name: &str, device: serde_json::Value, sub: Submod) {
        self.devices.insert(name.to_owned(), device);
        self.submods.insert(name.to_owned(), sub);
    }
}

const CONTRA: i8 = TrustTier::Contraindicated as i8;

/// The submodule of a device that failed `check` (after its verifier passed it, or for
/// a round without evidence).
pub fn failed_submod(check: &str, reason: &str) -> Submod {
    let mut s = Submod {
        status: TrustTier::Contraindicated,
        ..Default::default()
    };
    match check {
        "reference_values" | "event_log" | "pcr_digest" => s.trust_vector.executables = Some(CONTRA),
        _ => s.trust_vector.instance_identity = Some(CONTRA),
    }
    s.annotations
        .insert("failed-check".into(), ClaimValue::Text(check.into()));
    s.annotations
        .insert("failure".into(), ClaimValue::Text(reason.into()));
    s
}

/// A device's entry in the policy input from its verifier's outcome.
pub fn device_json<C: Serialize, E: FailedCheck>(kind: &str, o: &Outcome<C, E>) -> serde_json::Value {
    match o {
        Ok(v) => {
            serde_json::json!({"kind": kind, "verified": true, "claims": serde_json::to_value(&v.claims).unwrap_or_default()})
        }
        Err(r) => serde_json::json!({"kind": kind, "verified": false, "failed_check": r.error.check()}),
    }
}

/// Mark a device entry failed at `check` (after its verifier passed it).
pub fn mark_failed(device: &mut serde_json::Value, check: &str) {
    if let Some(o) = device.as_object_mut() {
        o.insert("verified".into(), false.into());
        o.insert("failed_check".into(), check.into());
    }
}
