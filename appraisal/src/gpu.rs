//! The GPU stage: each NVIDIA report's own checks (`gpuN.*`) against the round's binding
//! and the RIM library, then whether the registry puts its serial at the node's site
//! (`gpuN.platform`). And the node's GPU inventory: what policy and migrations read.

use crate::context::Context;
use crate::cvm;
use crate::findings::{device_json, failed_submod, mark_failed, Findings};
use crate::AppraisalError;
use custody_formats::binding::Binding;
use custody_formats::bundle::EvidenceBundle;
use custody_registry::model::{HardwareId, Registry};
use custody_verifier::check::{EvidenceVerifier, FailedCheck, UnixTime};
use custody_verifier::ear::{Corroboration, Submod};
use custody_verifier::nvgpu::{NvgpuEvidence, NvgpuVerifier};
use custody_verifier::rim::library::RimLibrary;
use serde::Serialize;

/// Appraise every GPU report in the bundle.
pub fn appraise(
    verifier: &NvgpuVerifier,
    rims: Option<&RimLibrary>,
    registry: Option<&Registry>,
    cx: &Context<'_>,
    bundle: &EvidenceBundle,
    binding: &Binding,
    f: &mut Findings,
) -> Result<(), AppraisalError> {
    for g in &bundle.gpus {
        let name = format!("gpu{}", g.index);
        let outcome = verifier.verify(
            NvgpuEvidence {
                report: &g.report,
                cert_chain: &g.cert_chain,
                nonce: binding.as_bytes(),
                rims: &[],
                library: rims,
            },
            UnixTime(cx.at),
        );
        if let Err(r) = &outcome {
            f.fail(&format!("{name}.{}", r.error.check()), r.error.to_string());
        }
        let mut device = device_json("nvgpu", &outcome);
        let mut sub = Submod::from_outcome(&outcome, Corroboration::default())?;
        if let Ok(v) = &outcome {
            // Any CC-mode GPU can sign for this round (the nonce is public): it counts as
            // this node's only where the registry puts its serial at the node's site. It
            // never makes the session key stronger.
            let serial = hex::decode(&v.claims.leaf_serial)
                .ok()
                .and_then(|b| HardwareId::from_parts(HardwareId::GPU, &b).ok());
            let platform = match &serial {
                Some(id) => cvm::platform(registry, cx.node.ek_cert_sha256, id),
                None => Ok(cvm::Binding::Unbound),
            };
            match platform {
                Ok(p) => {
                    if let Some(o) = device.as_object_mut() {
                        o.insert("platform".into(), serde_json::to_value(p).unwrap_or_default());
                    }
                }
                Err(e) => {
                    let check = format!("{name}.{}", e.check());
                    mark_failed(&mut device, e.check());
                    sub = failed_submod(&check, &e.to_string());
                    f.fail(&check, e.to_string());
                }
            }
        }
        f.device(&name, device, sub);
    }
    Ok(())
}

/// One GPU of the node, as policy and migrations see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gpu {
    pub index: u32,
    /// The signed report's hardware model (`GH100 A01 GSP FMC LF`) when attested; else
    /// the agent's NVML name, which nothing signs.
    pub model: String,
    /// Its report verified and the registry puts it at the node's site.
    pub attested: bool,
    /// `on`, `off`, `devtools` or `unknown`.
    pub cc_mode: String,
}

/// One entry per GPU the node has: attested ones from their verified reports, the rest
/// from the agent's unattested NVML identity (marked so: policy may refuse them by name).
pub fn inventory(
    bundle: Option<&EvidenceBundle>,
    devices: &serde_json::Map<String, serde_json::Value>,
) -> Vec<Gpu> {
    let mut out = Vec::new();
    let Some(b) = bundle else { return out };
    let mut seen = std::collections::BTreeSet::new();
    for g in &b.gpus {
        let d = devices.get(&format!("gpu{}", g.index));
        // Attested as *this node's* GPU: genuine and registered at the node's site (any
        // CC GPU can sign for a round; see `crate::cvm`).
        let verified = d
            .and_then(|d| d.get("verified"))
            .and_then(serde_json::Value::as_bool)
            == Some(true)
            && d.and_then(|d| d.get("platform"))
                .and_then(serde_json::Value::as_str)
                == Some("bound");
        // The model as the signed evidence says it: the leaf certificate's hardware
        // model, which the chip table reads. The NVML name is the agent's word, signed
        // by nothing: used only for a GPU whose report did not verify, which is then
        // unattested.
        let signed = d
            .and_then(|d| d.pointer("/claims/hwmodel"))
            .and_then(serde_json::Value::as_str)
            .filter(|m| !m.is_empty());
        let name = b
            .gpu_identities
            .iter()
            .find(|i| i.index == g.index)
            .and_then(|i| i.name.clone());
        let model = match (verified, signed) {
            (true, Some(m)) => m.to_owned(),
            _ => name
                .or_else(|| signed.map(str::to_owned))
                .unwrap_or_else(|| "unknown".into()),
        };
        seen.insert(g.index);
        out.push(Gpu {
            index: g.index,
            model,
            attested: verified && signed.is_some(),
            cc_mode: "on".into(),
        });
    }
    for i in b.gpu_identities.iter().filter(|i| !seen.contains(&i.index)) {
        let cc = match (
            i.cc.get("cc_enabled").map(String::as_str),
            i.cc.get("cc_dev_mode").map(String::as_str),
        ) {
            (_, Some("true")) => "devtools",
            (Some("true"), _) => "on",
            (Some("false"), _) => "off",
            _ => "unknown",
        };
        out.push(Gpu {
            index: i.index,
            model: i.name.as_deref().unwrap_or("unknown").to_owned(),
            attested: false,
            cc_mode: cc.into(),
        });
    }
    out
}

#[cfg(test)]
mod tests;
