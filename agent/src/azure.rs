//! The Azure confidential-VM collector (kind `azure`): the paravisor's HCL report, read
//! from the vTPM's NV index 0x01400001 through the TPM collector's connection.
//!
//! The HCL report's SEV-SNP report commits to runtime data naming the vTPM key
//! `HCLAkPub` (persisted at 0x81000003). The agent must quote with that key
//! (`[tpm] ak_handle = "0x81000003"`), so the round's TPM quote over the binding is by the
//! key the hardware report vouches for; the verifier checks that this key is the one the
//! node enrolled. The report is the paravisor's, written at boot: freshness comes from
//! the quote, not from it.
//!
//! The VCEK (and optionally the ASK/ARK) the report verifies under comes from files the
//! operator's provisioning writes from Azure's instance metadata service
//! (`/metadata/THIM/amd/certification`): the agent makes no network requests. On a TDX
//! CVM the HCL report carries a TDREPORT, which only the platform can check: the same
//! provisioning writes the TD quote Azure's quoting service makes of it (IMDS
//! `/acc/tdquote`), and `[azure] td_quote` names that file. The report and its quote are
//! written at boot; freshness comes from the vTPM quote. Without the
//! NV index (not an Azure CVM) the kind is not available; with it, a missing VCEK file or a
//! report without the `HCLA` signature fails the round.

use crate::collector::{CollectError, Collector, Evidence};
use crate::tpm::TpmCollector;
use custody_formats::binding::Binding;
use custody_formats::bundle::{AzureEvidence, MAX_CERT_LEN, MAX_HCL_REPORT_LEN, MAX_TDX_QUOTE_LEN};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const KIND: &str = "azure";

/// The vTPM NV index Azure's paravisor keeps the HCL report in.
pub const HCL_REPORT_NV_INDEX: u32 = 0x0140_0001;
/// Where Azure's paravisor persists `HCLAkPub`.
pub const HCL_AK_HANDLE: u32 = 0x8100_0003;

/// Reads the HCL report from the vTPM.
#[derive(Debug)]
pub struct AzureCollector {
    tpm: Arc<TpmCollector>,
    vcek: PathBuf,
    ca_chain: Option<PathBuf>,
    td_quote: Option<PathBuf>,
}

impl AzureCollector {
    pub fn new(tpm: Arc<TpmCollector>, vcek: PathBuf, ca_chain: Option<PathBuf>) -> Self {
        Self {
            tpm,
            vcek,
            ca_chain,
            td_quote: None,
        }
    }

    /// A TDX CVM: the TD quote of the HCL report's TDREPORT, from a file (`[azure]
    /// td_quote`), is sent instead of a VCEK.
    pub fn with_td_quote(mut self, td_quote: Option<PathBuf>) -> Self {
        self.td_quote = td_quote;
        self
    }
}

fn failed(reason: String) -> CollectError {
    CollectError::Failed { kind: KIND, reason }
}

fn read_cert(p: &Path) -> Result<Vec<u8>, CollectError> {
    let b = std::fs::read(p).map_err(|e| failed(format!("{}: {e}", p.display())))?;
    if b.len() > MAX_CERT_LEN {
        return Err(failed(format!("{}: more than {MAX_CERT_LEN} bytes", p.display())));
    }
    Ok(b)
}

impl Collector for AzureCollector {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn collect(&self, _binding: &Binding) -> Result<Evidence, CollectError> {
        let report = match self.tpm.read_nv(HCL_REPORT_NV_INDEX) {
            Ok(Some(r)) => r,
            Ok(None) => {
                return Err(CollectError::NotAvailable {
                    kind: KIND,
                    reason: format!(
                        "vTPM NV index {HCL_REPORT_NV_INDEX:#010x} is not defined (not an Azure CVM)"
                    ),
                })
            }
            Err(CollectError::NotAvailable { reason, .. }) => {
                return Err(CollectError::NotAvailable { kind: KIND, reason })
            }
            Err(CollectError::Failed { reason, .. }) => return Err(failed(reason)),
        };
        if !report.starts_with(b"HCLA") {
            return Err(failed(format!(
                "NV index {HCL_REPORT_NV_INDEX:#010x} holds no HCL report (no HCLA signature)"
            )));
        }
        if report.len() > MAX_HCL_REPORT_LEN {
            return Err(failed(format!(
                "the HCL report is more than {MAX_HCL_REPORT_LEN} bytes"
            )));
        }
        if let Some(p) = &self.td_quote {
            let q = std::fs::read(p).map_err(|e| failed(format!("{}: {e}", p.display())))?;
            if q.len() > MAX_TDX_QUOTE_LEN {
                return Err(failed(format!(
                    "{}: more than {MAX_TDX_QUOTE_LEN} bytes",
                    p.display()
                )));
            }
            return Ok(Evidence::Azure(AzureEvidence {
                hcl_report: report,
                vcek: Vec::new(),
                ca_chain: None,
                td_quote: Some(q),
            }));
        }
        Ok(Evidence::Azure(AzureEvidence {
            hcl_report: report,
            vcek: read_cert(&self.vcek)?,
            ca_chain: self.ca_chain.as_deref().map(read_cert).transpose()?,
            td_quote: None,
        }))
    }
}
