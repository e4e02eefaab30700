//! The policy input: every device, the node, the reference source, the attested hardware,
//! the GPU inventory, and (only when there is something) sovereignty, locality and key
//! protection. Absent, not null, when there is nothing: Rego treats `null` as a value.

use crate::context::{Node, ReferenceSource};
use crate::findings::Findings;
use crate::gpu::Gpu;
use crate::locality::LocalityStage;
use custody_registry::derive::Derived;

/// How well the session key is kept from copying, and why not better.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyProtection {
    /// The key lives in the node's own attested confidential VM.
    pub cvm: bool,
    pub reasons: Vec<String>,
}

impl KeyProtection {
    pub fn level(&self) -> &'static str {
        if self.cvm {
            "cvm"
        } else {
            "process"
        }
    }
}

/// What the stages produced, for the policy.
#[derive(Debug)]
pub struct Parts<'a> {
    pub node: &'a Node<'a>,
    pub findings: &'a Findings,
    pub reference_source: Option<ReferenceSource>,
    pub hardware: &'a [String],
    pub gpus: &'a [Gpu],
    pub sovereignty: Option<&'a Derived>,
    pub locality: &'a LocalityStage,
    /// `None` when no bundle arrived.
    pub key_protection: Option<&'a KeyProtection>,
}

/// The policy input (JSON, as the Rego policies and `custody policy explain` read it).
pub fn build(p: &Parts<'_>) -> serde_json::Value {
    let n = p.node;
    let mut input = serde_json::json!({
        "devices": p.findings.devices,
        "node": {"id": n.id, "name": n.name, "group": n.group, "state": n.state},
        "reference": {"source": p.reference_source},
        "hardware": p.hardware,
        "gpus": p.gpus,
    });
    if let Some(o) = input.as_object_mut() {
        if let Some(d) = p.sovereignty {
            o.insert("sovereignty".into(), serde_json::to_value(d).unwrap_or_default());
        }
        if let Some(l) = &p.locality.locality {
            o.insert("locality".into(), serde_json::to_value(l).unwrap_or_default());
        }
        if let Some(k) = p.key_protection {
            o.insert(
                "key_protection".into(),
                serde_json::json!({"level": k.level(), "reasons": k.reasons}),
            );
        }
        if let Some(e) = p.locality.error() {
            o.insert("locality_error".into(), e.into());
            o.insert(
                "locality_failures".into(),
                serde_json::to_value(&p.locality.failures).unwrap_or_default(),
            );
        }
    }
    input
}
