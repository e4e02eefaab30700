//! A forged-but-structurally-real Azure confidential-VM HCL report, for machines that are
//! not Azure CVMs.
//!
//! The envelope and runtime data are a real Azure HCL report's
//! (verifier/testdata/azure/milan-v1, see its PROVENANCE.md) with `HCLAkPub` replaced by
//! the test node's own AK (swtpm's), and the SEV-SNP report inside is the forged one of
//! [`crate::snp`] (re-signed by the **test** VCEK under the test ARK) with REPORT_DATA =
//! SHA-256(runtime data) || 32 zero bytes, as Azure's paravisor writes it. NOT Microsoft's
//! or AMD's: a verifier accepts it only with `[snp] test_ark`.

use crate::snp::{self, Guest};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use custody_formats::bundle::AzureEvidence;
use custody_formats::tpm::{parse_public, PublicKey};

const HEADER: usize = 32;
const SNP_REPORT: usize = 0x4A0;
const IGVM: usize = 20;

fn real_hcl() -> Vec<u8> {
    std::fs::read(crate::repo_root().join("verifier/testdata/azure/milan-v1/hcl_report.bin")).unwrap()
}

/// The runtime data of the real report with `HCLAkPub` set to `ak` (TPMT_PUBLIC, RSA).
pub fn runtime_data(ak: &[u8]) -> Vec<u8> {
    let real = real_hcl();
    let at = HEADER + SNP_REPORT;
    let size = u32::from_le_bytes(real[at + 16..at + 20].try_into().unwrap()) as usize;
    let mut rt: serde_json::Value = serde_json::from_slice(&real[at + IGVM..at + IGVM + size]).unwrap();
    let PublicKey::Rsa {
        exponent, modulus, ..
    } = parse_public(ak).unwrap().key
    else {
        panic!("the Azure vTPM's AK is RSA")
    };
    let e = if exponent == 0 { 65_537 } else { exponent };
    let e: Vec<u8> = e.to_be_bytes().into_iter().skip_while(|b| *b == 0).collect();
    for k in rt["keys"].as_array_mut().unwrap() {
        if k["kid"] == "HCLAkPub" {
            k["n"] = URL_SAFE_NO_PAD.encode(&modulus).into();
            k["e"] = URL_SAFE_NO_PAD.encode(&e).into();
        }
    }
    serde_json::to_vec(&rt).unwrap()
}

/// An HCL report from `guest` (the paravisor's SNP report) naming `ak` as `HCLAkPub`, with
/// the test VCEK and ARK/ASK it verifies under.
pub fn evidence(ak: &[u8], guest: &Guest) -> AzureEvidence {
    evidence_with(&runtime_data(ak), guest)
}

/// The same, with the runtime data given (a test changes it after the report is signed).
pub fn evidence_with(runtime: &[u8], guest: &Guest) -> AzureEvidence {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, runtime);
    let s = snp::evidence(digest.as_ref().try_into().unwrap(), guest);
    let real = real_hcl();
    let mut igvm = real[HEADER + SNP_REPORT..HEADER + SNP_REPORT + IGVM].to_vec();
    igvm[16..20].copy_from_slice(&u32::try_from(runtime.len()).unwrap().to_le_bytes());
    let hcl_report = [&real[..HEADER], &s.report, &igvm, runtime].concat();
    AzureEvidence {
        hcl_report,
        vcek: s.vcek,
        ca_chain: s.ca_chain,
    }
}
