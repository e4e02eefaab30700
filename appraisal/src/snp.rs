//! The SEV-SNP stage: the report's own checks (`snp.*`) against the round's binding, then
//! whether it vouches for this node (`crate::cvm`): the operator's guest image on a chip
//! registered at the node's site. Only then is the session key in CVM memory.

use crate::context::{Context, SnpReferenceValues};
use crate::cvm::{self, SnpGuest};
use crate::findings::{device_json, failed_submod, mark_failed, Findings};
use crate::AppraisalError;
use custody_formats::binding::Binding;
use custody_formats::bundle::SnpEvidence as SnpBundle;
use custody_registry::model::{HardwareId, Registry};
use custody_verifier::check::{EvidenceVerifier, FailedCheck, UnixTime};
use custody_verifier::ear::{Corroboration, Submod};
use custody_verifier::snp::{ExpectedReportData, SnpEvidence, SnpVerifier};

/// Appraise the bundle's SNP evidence; whether it makes the session key `cvm`.
pub fn appraise(
    verifier: &SnpVerifier,
    reference: Option<&SnpReferenceValues>,
    registry: Option<&Registry>,
    cx: &Context<'_>,
    s: &SnpBundle,
    binding: &Binding,
    f: &mut Findings,
) -> Result<bool, AppraisalError> {
    let outcome = verifier.verify(
        SnpEvidence {
            report: &s.report,
            vek: &s.vcek,
            ca_chain: s.ca_chain.as_deref(),
            expected_report_data: Some(ExpectedReportData::Binding(*binding.as_bytes())),
            allow_debug: false,
        },
        UnixTime(cx.at),
    );
    if let Err(r) = &outcome {
        f.fail(&format!("snp.{}", r.error.check()), r.error.to_string());
        f.key_protection_reasons
            .push(format!("snp: evidence rejected by `snp.{}`", r.error.check()));
    }
    let mut device = device_json("snp", &outcome);
    let mut sub = Submod::from_outcome(&outcome, Corroboration::default())?;
    let mut cvm = false;
    if let Ok(v) = &outcome {
        // The binding is public: a genuine report proves only that *some* guest saw this
        // round. It vouches for this node's key only from the operator's guest image on a
        // chip registered at the node's site.
        let c = &v.claims;
        let guest = SnpGuest {
            vmpl: c.vmpl,
            measurement: &c.measurement,
            host_data: &c.host_data,
            id_key_digest: &c.id_key_digest,
            reported_tcb: c.reported_tcb,
            policy: c.policy,
        };
        let chip = hex::decode(&c.chip_id)
            .ok()
            .and_then(|b| HardwareId::from_parts(HardwareId::SNP, &b).ok());
        let checked = cvm::compare_snp_reference(reference, &guest).and_then(|matched| {
            let platform = match &chip {
                Some(id) => cvm::platform(registry, cx.node.ek_cert_sha256, id)?,
                None => cvm::Binding::Unbound,
            };
            Ok((matched, platform))
        });
        match checked {
            Ok((matched, platform)) => {
                if !matched {
                    f.key_protection_reasons.push("snp_reference: unconfigured (no `[snp] measurements`: the report may come from any guest)".into());
                }
                if platform != cvm::Binding::Bound {
                    f.key_protection_reasons.push("snp_platform: unbound (no registry, or the node's EK is not in it: the chip cannot be tied to this node)".into());
                }
                cvm = matched && platform == cvm::Binding::Bound;
                if let Some(o) = device.as_object_mut() {
                    o.insert(
                        "guest".into(),
                        serde_json::json!({
                            "reference": if matched { "matched" } else { "unconfigured" },
                            "platform": platform,
                        }),
                    );
                }
            }
            Err(e) => {
                let check = format!("snp.{}", e.check());
                f.key_protection_reasons
                    .push(format!("snp: evidence rejected by `{check}`"));
                mark_failed(&mut device, e.check());
                sub = failed_submod(&check, &e.to_string());
                f.fail(&check, e.to_string());
            }
        }
    }
    f.device("snp", device, sub);
    Ok(cvm)
}
