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
    hcl_of("milan-v1")
}

fn hcl_of(vector: &str) -> Vec<u8> {
    std::fs::read(crate::repo_root().join(format!("verifier/testdata/azure/{vector}/hcl_report.bin")))
        .unwrap()
}

/// The runtime data of the real report with `HCLAkPub` set to `ak` (TPMT_PUBLIC, RSA).
pub fn runtime_data(ak: &[u8]) -> Vec<u8> {
    runtime_data_keeping(ak, true)
}

/// The same; without `others`, only `HCLAkPub` is kept of the keys (swtpm's NV indices
/// hold at most 2,048 bytes, Azure's hold the whole report).
fn runtime_data_keeping(ak: &[u8], others: bool) -> Vec<u8> {
    runtime_data_of(&real_hcl(), ak, others)
}

fn runtime_data_of(real: &[u8], ak: &[u8], others: bool) -> Vec<u8> {
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
    let keys = rt["keys"].as_array_mut().unwrap();
    if !others {
        keys.retain(|k| k["kid"] == "HCLAkPub");
    }
    for k in keys {
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
        td_quote: None,
    }
}

/// A TDX CVM's evidence: the real Azure TDX HCL report (verifier/testdata/azure/tdx) with
/// `HCLAkPub` set to `ak`, its TDREPORT's REPORTDATA = SHA-256(runtime data) || zeros and
/// its measured TDINFO (attributes, XFAM, MRTD, MRCONFIGID, MROWNER, MROWNERCONFIG, RTMRs)
/// those of `td`'s quote, which [`crate::tdx`] writes under the **test** Intel-shaped
/// root; a verifier accepts it only with `[tdx] test_root`.
pub fn tdx_evidence(ak: &[u8], td: &crate::tdx::Td) -> AzureEvidence {
    tdx_evidence_keeping(ak, td, true)
}

fn tdx_evidence_keeping(ak: &[u8], td: &crate::tdx::Td, others: bool) -> AzureEvidence {
    let real = hcl_of("tdx");
    let runtime = runtime_data_of(&real, ak, others);
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &runtime);
    let quote = crate::tdx::quote(digest.as_ref().try_into().unwrap(), td);
    let mut slot = real[HEADER..HEADER + SNP_REPORT].to_vec();
    slot[128..192].fill(0);
    slot[128..160].copy_from_slice(digest.as_ref());
    // The quote's TD report body starts after the 48-byte header; its bytes 120..520 are
    // TDINFO's measured fields in the same order.
    slot[512..912].copy_from_slice(&quote[48 + 120..48 + 520]);
    let mut igvm = real[HEADER + SNP_REPORT..HEADER + SNP_REPORT + IGVM].to_vec();
    igvm[16..20].copy_from_slice(&u32::try_from(runtime.len()).unwrap().to_le_bytes());
    AzureEvidence {
        hcl_report: [&real[..HEADER], &slot, &igvm, &runtime].concat(),
        vcek: Vec::new(),
        ca_chain: None,
        td_quote: Some(quote),
    }
}

/// Where the paravisor keeps its key and report, as on Azure.
pub const AK_HANDLE: u32 = 0x8100_0003;
pub const HCL_NV_INDEX: u32 = 0x0140_0001;

/// Provision `tcti`'s TPM as Azure's paravisor provisions its vTPM: an RSA AK persisted at
/// [`AK_HANDLE`] and, in NV index [`HCL_NV_INDEX`], an HCL report from `guest` naming that
/// AK. Returns the report's evidence (the agent reads the report from NV; the VCEK and
/// ASK/ARK come from [`vcek_files`]).
pub fn provision_vtpm(tcti: &str, guest: &Guest) -> AzureEvidence {
    provision_vtpm_with(tcti, |ak| evidence_with(&runtime_data_keeping(ak, false), guest))
}

/// The same on a TDX CVM: the HCL report carries `td`'s TDREPORT; its TD quote is in the
/// evidence returned (the operator's provisioning writes it to `[azure] td_quote`).
pub fn provision_vtpm_tdx(tcti: &str, td: &crate::tdx::Td) -> AzureEvidence {
    provision_vtpm_with(tcti, |ak| tdx_evidence_keeping(ak, td, false))
}

/// Provision as Azure's paravisor does, the HCL report made by `make` from the AK
/// (TPMT_PUBLIC).
fn provision_vtpm_with(tcti: &str, make: impl FnOnce(&[u8]) -> AzureEvidence) -> AzureEvidence {
    use std::str::FromStr;
    use tss_esapi::abstraction::{ak, ek, AsymmetricAlgorithmSelection, DefaultKey};
    use tss_esapi::attributes::NvIndexAttributesBuilder;
    use tss_esapi::handles::{NvIndexTpmHandle, PersistentTpmHandle};
    use tss_esapi::interface_types::algorithm::{HashingAlgorithm, SignatureSchemeAlgorithm};
    use tss_esapi::interface_types::dynamic_handles::Persistent;
    use tss_esapi::interface_types::key_bits::RsaKeyBits;
    use tss_esapi::interface_types::resource_handles::{NvAuth, Provision};
    use tss_esapi::interface_types::session_handles::AuthSession;
    use tss_esapi::structures::{MaxNvBuffer, NvPublicBuilder};
    use tss_esapi::traits::Marshall;

    let mut ctx = tss_esapi::Context::new(tss_esapi::TctiNameConf::from_str(tcti).unwrap()).unwrap();
    let ek = ek::create_ek_object_2(
        &mut ctx,
        AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa2048),
        DefaultKey,
    )
    .unwrap();
    let created = ak::create_ak(
        &mut ctx,
        ek,
        HashingAlgorithm::Sha256,
        SignatureSchemeAlgorithm::RsaSsa,
        None,
        DefaultKey,
    )
    .unwrap();
    let loaded = ak::load_ak(
        &mut ctx,
        ek,
        None,
        created.out_private,
        created.out_public.clone(),
    )
    .unwrap();
    ctx.execute_with_session(Some(AuthSession::Password), |c| {
        c.evict_control(
            Provision::Owner,
            loaded.into(),
            Persistent::Persistent(PersistentTpmHandle::new(AK_HANDLE).unwrap()),
        )
    })
    .unwrap();
    ctx.flush_context(loaded.into()).unwrap();
    ctx.flush_context(ek.into()).unwrap();

    let ak_public = created.out_public.marshall().unwrap();
    let e = make(&ak_public);
    let size = e.hcl_report.len();
    assert!(
        size <= 2048,
        "an HCL report of {size} bytes does not fit swtpm's NV index"
    );
    let public = NvPublicBuilder::new()
        .with_nv_index(NvIndexTpmHandle::new(HCL_NV_INDEX).unwrap())
        .with_index_name_algorithm(HashingAlgorithm::Sha256)
        .with_index_attributes(
            NvIndexAttributesBuilder::new()
                .with_owner_write(true)
                .with_owner_read(true)
                .build()
                .unwrap(),
        )
        .with_data_area_size(size)
        .build()
        .unwrap();
    let nv = ctx
        .execute_with_session(Some(AuthSession::Password), |c| {
            c.nv_define_space(Provision::Owner, None, public)
        })
        .unwrap();
    for (i, chunk) in e.hcl_report.chunks(1024).enumerate() {
        ctx.execute_with_session(Some(AuthSession::Password), |c| {
            c.nv_write(
                NvAuth::Owner,
                nv,
                MaxNvBuffer::try_from(chunk.to_vec()).unwrap(),
                u16::try_from(i * 1024).unwrap(),
            )
        })
        .unwrap();
    }
    e
}

/// The test VCEK (DER) and the test ASK + ARK (PEM), as files an operator writes from
/// Azure's instance metadata.
pub fn vcek_files() -> (std::path::PathBuf, std::path::PathBuf) {
    (
        crate::repo_root().join("tests/testdata/snp-test-root/vcek.der"),
        snp::test_ark(),
    )
}
