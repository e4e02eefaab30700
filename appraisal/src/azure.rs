//! The Azure confidential-VM stage (SEV-SNP or Intel TDX behind Azure's paravisor). The
//! vTPM the agent quotes with lives inside the paravisor; the paravisor's HCL report
//! carries a hardware report (an SEV-SNP report, or a TDX TDREPORT with the TD quote
//! Azure's quoting service made of it) whose REPORT_DATA commits to runtime data naming
//! the vTPM's key (`HCLAkPub`). So: the report's checks (`azure.snp_*`, or `azure.tdx_*`
//! and `azure.td_report`), the runtime data (`azure.runtime_data`), the key it names is
//! the node's enrolled AK (`azure.ak`), and that key's quote over the round's binding
//! (`azure.tpm_*`, the bundle's TPM quote). Then, as for bare-metal SNP and TDX
//! ([`crate::cvm`]): the paravisor's image against `[snp]` or `[tdx]` reference values and
//! its chip or platform registered at the node's site. A TD quote needs the verifier's
//! TDX collateral: without it the round fails at `tdx.collateral`, which is never the
//! node's fault. The trust in Azure's paravisor is explicit in the claims (`tpm:
//! paravisor-vtpm`).

use crate::context::{Context, SnpReferenceValues};
use crate::cvm;
use crate::findings::{failed_submod, mark_failed, Findings};
use crate::tdx::TdxSetup;
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
    tdx: Option<&TdxSetup>,
    registry: Option<&Registry>,
    cx: &Context<'_>,
    a: &AzureBundle,
    tpm: &TpmEvidence,
    binding: &Binding,
    f: &mut Findings,
) -> Result<bool, AppraisalError> {
    let evidence = |hardware| AzureEvidence {
        hcl_report: &a.hcl_report,
        hardware,
        quote: &tpm.quote,
        signature: &tpm.signature,
        pcrs: &tpm.pcrs,
        nonce: binding.as_bytes(),
        // HCLAkPub must be the AK this node enrolled with (credential activation
        // against its EK): the paravisor's vTPM is the node's TPM.
        ak: Some(cx.node.ak_public),
        require_user_data: false,
    };
    let Some(td_quote) = &a.td_quote else {
        let outcome = verifier.verify(
            evidence(AzureHardware::Snp {
                vcek: &a.vcek,
                ca_chain: a.ca_chain.as_deref(),
            }),
            UnixTime(cx.at),
        );
        // No SNP claims means no SNP report verified (the outcome failed before them).
        let tie = |c: &AzureClaims| match &c.snp {
            Some(s) => crate::snp::tie(reference, registry, cx, s),
            None => Ok((false, cvm::Binding::Unbound)),
        };
        return cvm::record("azure", &outcome, tie, UNVOUCHED, f);
    };
    // TDX: the verifier's collateral for the TD quote's platform, as for bare-metal TDX
    // (`verifier.tdx` is `setup.verifier`: [`crate::Appraiser::use_tdx`]).
    let sets = tdx.map(TdxSetup::collateral).unwrap_or_default();
    let chosen = tdx
        .ok_or_else(crate::tdx::no_collateral)
        .and_then(|s| Ok((s, crate::tdx::collateral_for(s, &sets, td_quote, cx.at)?)));
    let (setup, set) = match chosen {
        Ok(x) => x,
        Err(reason) => {
            let check = crate::tdx::COLLATERAL;
            f.key_protection_reasons
                .push(format!("azure: evidence not appraised (`{check}`)"));
            let mut device = serde_json::json!({"kind": "azure", "verified": false});
            mark_failed(&mut device, check);
            f.device("azure", device, failed_submod(check, &reason));
            f.fail(check, reason);
            return Ok(false);
        }
    };
    let outcome = verifier.verify(
        evidence(AzureHardware::Tdx {
            quote: td_quote,
            collateral: set.collateral(),
        }),
        UnixTime(cx.at),
    );
    let tie = |c: &AzureClaims| match &c.tdx {
        Some(t) => crate::tdx::tie(setup, registry, cx, t),
        None => Ok((false, cvm::Binding::Unbound)),
    };
    cvm::record("azure", &outcome, tie, UNVOUCHED_TDX, f)
}

const UNVOUCHED_TDX: cvm::Unvouched = cvm::Unvouched {
    unconfigured: "azure_reference: unconfigured (no `[tdx] mr_td`: the paravisor's TD may be any)",
    unbound: "azure_platform: unbound (no registry, or the node's EK is not in it: the platform cannot be tied to this node)",
};

const UNVOUCHED: cvm::Unvouched = cvm::Unvouched {
    unconfigured: "azure_reference: unconfigured (no `[snp] measurements`: the paravisor's report may come from any guest)",
    unbound: "azure_platform: unbound (no registry, or the node's EK is not in it: the chip cannot be tied to this node)",
};
