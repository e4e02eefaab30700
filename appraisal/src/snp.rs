//! The SEV-SNP stage: the report's own checks (`snp.*`) against the round's binding, then
//! whether it vouches for this node (`crate::cvm`): the operator's guest image on a chip
//! registered at the node's site. Only then is the session key in CVM memory.

use crate::context::{Context, SnpReferenceValues};
use crate::cvm::{self, SnpGuest};
use crate::findings::Findings;
use crate::AppraisalError;
use custody_formats::binding::Binding;
use custody_formats::bundle::SnpEvidence as SnpBundle;
use custody_registry::model::{HardwareId, Registry};
use custody_verifier::check::{EvidenceVerifier, UnixTime};
use custody_verifier::snp::{ExpectedReportData, SnpClaims, SnpEvidence, SnpVerifier};

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
    let tie = |c: &SnpClaims| tie(reference, registry, cx, c);
    cvm::record("snp", &outcome, tie, UNVOUCHED, f)
}

/// Whether a genuine SNP report is this node's: its guest against the `[snp]` reference
/// values, its CHIP_ID against the registry (also an Azure paravisor's report).
pub fn tie(
    reference: Option<&SnpReferenceValues>,
    registry: Option<&Registry>,
    cx: &Context<'_>,
    c: &SnpClaims,
) -> Result<(bool, cvm::Binding), cvm::CvmError> {
    let guest = SnpGuest {
        vmpl: c.vmpl,
        measurement: &c.measurement,
        host_data: &c.host_data,
        id_key_digest: &c.id_key_digest,
        reported_tcb: c.reported_tcb,
        policy: c.policy,
    };
    let matched = cvm::compare_snp_reference(reference, &guest)?;
    let chip = hex::decode(&c.chip_id)
        .ok()
        .and_then(|b| HardwareId::from_parts(HardwareId::SNP, &b).ok());
    let platform = match &chip {
        Some(id) => cvm::platform(registry, cx.node.ek_cert_sha256, id)?,
        None => cvm::Binding::Unbound,
    };
    Ok((matched, platform))
}

const UNVOUCHED: cvm::Unvouched = cvm::Unvouched {
    unconfigured: "snp_reference: unconfigured (no `[snp] measurements`: the report may come from any guest)",
    unbound: "snp_platform: unbound (no registry, or the node's EK is not in it: the chip cannot be tied to this node)",
};
