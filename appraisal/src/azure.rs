//! The Azure confidential-VM stage (SEV-SNP behind Azure's paravisor). The vTPM the agent
//! quotes with lives inside the paravisor; the paravisor's HCL report carries an SEV-SNP
//! report whose REPORT_DATA commits to runtime data naming the vTPM's key (`HCLAkPub`).
//! So: the report's checks (`azure.snp_*`), the runtime data (`azure.runtime_data`), the
//! key it names is the node's enrolled AK (`azure.ak`), and that key's quote over the
//! round's binding (`azure.tpm_*`, the bundle's TPM quote). Then, as for bare-metal SNP
//! ([`crate::cvm`]): the paravisor's launch measurement against `[snp]` and its chip
//! registered at the node's site. The trust in Azure's paravisor is explicit in the claims
//! (`tpm: paravisor-vtpm`).

use crate::context::{Context, SnpReferenceValues};
use crate::cvm;
use crate::findings::Findings;
use crate::AppraisalError;
use custody_formats::binding::Binding;
use custody_formats::bundle::{AzureEvidence as AzureBundle, TpmEvidence};
use custody_registry::model::Registry;
use custody_verifier::azure::{AzureClaims, AzureEvidence, AzureHardware, AzureVerifier};
use custody_verifier::check::{EvidenceVerifier, UnixTime};

/// Appraise the bundle's Azure evidence with its TPM quote; whether it makes the session
/// key `cvm`.
#[allow(clippy::too_many_arguments)]
pub fn appraise(
    verifier: &AzureVerifier,
    reference: Option<&SnpReferenceValues>,
    registry: Option<&Registry>,
    cx: &Context<'_>,
    a: &AzureBundle,
    tpm: &TpmEvidence,
    binding: &Binding,
    f: &mut Findings,
) -> Result<bool, AppraisalError> {
    let outcome = verifier.verify(
        AzureEvidence {
            hcl_report: &a.hcl_report,
            hardware: AzureHardware::Snp {
                vcek: &a.vcek,
                ca_chain: a.ca_chain.as_deref(),
            },
            quote: &tpm.quote,
            signature: &tpm.signature,
            pcrs: &tpm.pcrs,
            nonce: binding.as_bytes(),
            // HCLAkPub must be the AK this node enrolled with (credential activation
            // against its EK): the paravisor's vTPM is the node's TPM.
            ak: Some(cx.node.ak_public),
            require_user_data: false,
        },
        UnixTime(cx.at),
    );
    // No SNP claims means no SNP report verified (the outcome failed before them).
    let tie = |c: &AzureClaims| match &c.snp {
        Some(s) => crate::snp::tie(reference, registry, cx, s),
        None => Ok((false, cvm::Binding::Unbound)),
    };
    cvm::record("azure", &outcome, tie, UNVOUCHED, f)
}

const UNVOUCHED: cvm::Unvouched = cvm::Unvouched {
    unconfigured: "azure_reference: unconfigured (no `[snp] measurements`: the paravisor's report may come from any guest)",
    unbound: "azure_platform: unbound (no registry, or the node's EK is not in it: the chip cannot be tied to this node)",
};
