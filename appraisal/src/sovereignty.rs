//! The sovereignty stage: the hardware identities the round proved, and what the signed
//! registry in force says about them (site, operator, its jurisdictions and control).

use crate::context::Node;
use custody_registry::derive::Derived;
use custody_registry::model::HardwareId;
use custody_registry::signed::VerifiedRegistry;

/// Hardware identities a round proved: the registry binds them to sites. Each is
/// `kind:hex` as the registry writes them (`ek_sha256`, `snp_chip_id`, `tdx_ppid`,
/// `gpu_serial`).
pub fn attested_hardware(
    node: &Node<'_>,
    devices: &serde_json::Map<String, serde_json::Value>,
) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(ek) = node.ek_cert_sha256 {
        out.push(format!("{}:{ek}", HardwareId::EK));
    }
    for d in devices.values() {
        if d.get("verified").and_then(serde_json::Value::as_bool) != Some(true) {
            continue;
        }
        let claim = |k: &str| {
            d.pointer(&format!("/claims/{k}"))
                .and_then(serde_json::Value::as_str)
        };
        match d.get("kind").and_then(serde_json::Value::as_str) {
            Some("snp") => {
                if let Some(c) = claim("chip_id") {
                    out.push(format!("{}:{}", HardwareId::SNP, c.to_ascii_lowercase()));
                }
            }
            Some("azure") => {
                if let Some(c) = claim("snp/chip_id") {
                    out.push(format!("{}:{}", HardwareId::SNP, c.to_ascii_lowercase()));
                }
            }
            Some("tdx") => {
                if let Some(c) = claim("ppid") {
                    out.push(format!("{}:{}", HardwareId::TDX, c.to_ascii_lowercase()));
                }
            }
            Some("nvgpu") => {
                if let Some(c) = claim("leaf_serial") {
                    out.push(format!("{}:{}", HardwareId::GPU, c.to_ascii_lowercase()));
                }
            }
            _ => {}
        }
    }
    out
}

/// The registry's attributes for the attested hardware; `None` without a registry.
pub fn derive(registry: Option<&VerifiedRegistry>, hardware: &[String]) -> Option<Derived> {
    registry.map(|r| {
        let ids: Vec<HardwareId> = hardware
            .iter()
            .filter_map(|h| HardwareId::parse(h).ok())
            .collect();
        r.derive(&ids)
    })
}
