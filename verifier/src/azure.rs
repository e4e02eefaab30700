//! Azure confidential VMs (SEV-SNP or TDX): the paravisor (HCL) report and the vTPM quote.
//!
//! The guest does not hold the hardware report's REPORT_DATA: Azure's paravisor does, and
//! puts there the SHA-256 of a runtime-data JSON that carries the vTPM's attestation key
//! (`HCLAkPub`). So the chain of trust is: AMD signs the SNP report (the SNP checks), or
//! Intel's quoting enclave signs a TD quote of the HCL's TDREPORT (the TDX checks, then
//! `td_report`: the quote is of that TD), the report commits to the runtime data
//! (`runtime_data`), the runtime data names the AK
//! (`ak`), the AK signs the quote over the round's nonce (the TPM checks). The trust in
//! the paravisor is explicit: the vTPM is software inside it, and the claims say
//! `tpm: paravisor-vtpm`.
//!
//! Checks, in order: `hcl_report` (the HCLA envelope: header, hardware report, IGVM
//! request header, runtime data), the SNP checks under `snp_*` names (`snp_cert_chain`,
//! ..., `snp_report_data`: SHA-256 of the runtime data then zeros) or the TDX checks under
//! `tdx_*` names and `td_report`, `runtime_data`, `user_data`
//! (if asked: the nonce is in the runtime data too), `ak` (the runtime data's
//! `HCLAkPub`, an RSA key; a caller's AK must be the same), then the TPM checks under
//! `tpm_*` names (`tpm_parse`, `tpm_signature`, `tpm_nonce`, `tpm_pcr_selection`,
//! `tpm_pcr_digest`).

use crate::check::{Check, CheckLog, EvidenceVerifier, FailedCheck, Outcome, UnixTime};
use crate::snp::{ExpectedReportData, SnpClaims, SnpEvidence, SnpVerifier};
use crate::tdx::{TdxClaims, TdxCollateral, TdxEvidence, TdxVerifier};
use crate::tpm::{TpmClaims, TpmEvidence, TpmVerifier};
use aws_lc_rs::digest;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The HCL report's fixed parts.
const HCL_HEADER_LEN: usize = 32;
const SNP_REPORT_LEN: usize = 0x4A0;
const IGVM_HEADER_LEN: usize = 20;
/// A TDX TDREPORT, at the start of the hardware report's space.
const TDREPORT_LEN: usize = 1024;
/// In a TDREPORT: REPORTDATA, and TDINFO's attributes through RTMR3 (what a TD quote's
/// body repeats, contiguous in both).
const TDREPORT_DATA: std::ops::Range<usize> = 128..192;
const TDINFO_MEASURED: std::ops::Range<usize> = 512..912;
/// IGVM report types.
const REPORT_TYPE_SNP: u32 = 2;
const REPORT_TYPE_TDX: u32 = 4;
/// The runtime data is bounded (Azure's are about 1 KiB).
const MAX_RUNTIME_DATA: usize = 64 * 1024;

#[derive(Debug, Error)]
pub enum AzureError {
    #[error("HCL report: {0}")]
    Hcl(String),
    #[error("SEV-SNP report: {0}")]
    Snp(#[from] crate::snp::SnpError),
    #[error("runtime data: {0}")]
    RuntimeData(String),
    #[error("TD quote: {0}")]
    Tdx(#[from] crate::tdx::TdxError),
    #[error("TD report: {0}")]
    TdReport(String),
    #[error("user data: {0}")]
    UserData(String),
    #[error("attestation key: {0}")]
    Ak(String),
    #[error("vTPM quote: {0}")]
    Tpm(#[from] crate::tpm::TpmVerifyError),
}

/// A sub-verifier's check, under its Azure name.
fn prefixed(kind: &str, check: &str) -> &'static str {
    match (kind, check) {
        ("snp", "parse") => "snp_parse",
        ("snp", "cert_chain") => "snp_cert_chain",
        ("snp", "cert_validity") => "snp_cert_validity",
        ("snp", "revocation") => "snp_revocation",
        ("snp", "signature") => "snp_signature",
        ("snp", "key_kind") => "snp_key_kind",
        ("snp", "tcb") => "snp_tcb",
        ("snp", "report_data") => "snp_report_data",
        ("snp", "policy") => "snp_policy",
        ("tpm", "parse") => "tpm_parse",
        ("tpm", "signature") => "tpm_signature",
        ("tpm", "nonce") => "tpm_nonce",
        ("tpm", "pcr_selection") => "tpm_pcr_selection",
        ("tpm", "pcr_digest") => "tpm_pcr_digest",
        ("tpm", "event_log") => "tpm_event_log",
        ("tdx", "parse") => "tdx_parse",
        ("tdx", "cert_chain") => "tdx_cert_chain",
        ("tdx", "cert_validity") => "tdx_cert_validity",
        ("tdx", "revocation") => "tdx_revocation",
        ("tdx", "qe_report_signature") => "tdx_qe_report_signature",
        ("tdx", "qe_report_data") => "tdx_qe_report_data",
        ("tdx", "quote_signature") => "tdx_quote_signature",
        ("tdx", "qe_identity") => "tdx_qe_identity",
        ("tdx", "tcb_info") => "tdx_tcb_info",
        ("tdx", "tcb") => "tdx_tcb",
        ("tdx", "report_data") => "tdx_report_data",
        ("tdx", _) => "tdx",
        ("snp", _) => "snp",
        _ => "tpm",
    }
}

/// A TPM check under its cloud name (`tpm_signature`, ...), for the cloud vTPM kinds.
pub(crate) fn tpm_check(check: &str) -> &'static str {
    prefixed("tpm", check)
}

impl FailedCheck for AzureError {
    fn check(&self) -> &'static str {
        match self {
            Self::Hcl(_) => "hcl_report",
            Self::Snp(e) => prefixed("snp", e.check()),
            Self::RuntimeData(_) => "runtime_data",
            Self::Tdx(e) => prefixed("tdx", e.check()),
            Self::TdReport(_) => "td_report",
            Self::UserData(_) => "user_data",
            Self::Ak(_) => "ak",
            Self::Tpm(e) => prefixed("tpm", e.check()),
        }
    }
}

/// What vouches for the HCL report's hardware part.
#[derive(Debug, Clone, Copy)]
pub enum AzureHardware<'a> {
    /// SEV-SNP: the VCEK (DER or PEM) and, optionally, the ASK/ARK.
    Snp {
        vcek: &'a [u8],
        ca_chain: Option<&'a [u8]>,
    },
    /// TDX: the TD quote Azure's quoting service made of the HCL's TDREPORT, and its
    /// Intel PCS collateral.
    Tdx {
        quote: &'a [u8],
        collateral: TdxCollateral<'a>,
    },
}

/// One round of Azure CVM evidence.
#[derive(Debug, Clone, Copy)]
pub struct AzureEvidence<'a> {
    /// The HCL report, as read from the vTPM's NV index 0x01400001.
    pub hcl_report: &'a [u8],
    pub hardware: AzureHardware<'a>,
    /// TPMS_ATTEST, and the signature: a TPMT_SIGNATURE or the raw RSASSA-PKCS1-v1_5
    /// signature Azure's tools write.
    pub quote: &'a [u8],
    pub signature: &'a [u8],
    /// PCR values: `tpm2_quote -o` binary, or text lines `INDEX HEX` (one bank).
    pub pcrs: &'a [u8],
    /// The quote's expected extraData.
    pub nonce: &'a [u8],
    /// An AK the caller expects (SPKI PEM or DER, TPMT_PUBLIC or TPM2B_PUBLIC); it must
    /// be the runtime data's.
    pub ak: Option<&'a [u8]>,
    /// Also require the nonce in the runtime data's `user-data` (its first bytes, then
    /// zeros), so the SNP report itself is fresh, not only the vTPM quote. Azure's newer
    /// guest tools put it there; older ones leave `user-data` zero.
    pub require_user_data: bool,
}

/// What a verified Azure CVM round says.
#[derive(Debug, Clone, Serialize)]
pub struct AzureClaims {
    /// `paravisor-vtpm`: the quote comes from a vTPM inside Azure's paravisor, which the
    /// hardware report attests; trust in the paravisor is part of this result.
    pub tpm: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snp: Option<SnpClaims>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tdx: Option<TdxClaims>,
    pub quote: TpmClaims,
    /// Whether the runtime data's `user-data` carries the nonce (then zeros).
    pub user_data_binds_nonce: bool,
    /// The runtime data's VM configuration, as the paravisor reported it.
    pub vm_configuration: serde_json::Value,
}

#[derive(Debug, Deserialize)]
struct Jwk {
    kid: String,
    kty: String,
    #[serde(default)]
    n: String,
    #[serde(default)]
    e: String,
}

#[derive(Debug, Deserialize)]
struct RuntimeData {
    keys: Vec<Jwk>,
    #[serde(default, rename = "vm-configuration")]
    vm_configuration: serde_json::Value,
    /// Hex, 64 bytes, any case.
    #[serde(default, rename = "user-data")]
    user_data: String,
}

/// `user-data` is the nonce, then zeros.
fn user_data_binds(user_data: &str, nonce: &[u8]) -> bool {
    match hex::decode(user_data.trim()) {
        Ok(u) => {
            !nonce.is_empty()
                && u.len() >= nonce.len()
                && u.get(..nonce.len()) == Some(nonce)
                && u.iter().skip(nonce.len()).all(|b| *b == 0)
        }
        Err(_) => false,
    }
}

/// The HCL report's hardware report: an SNP report, or a TDX TDREPORT (which only the
/// platform can check; its TD quote is what verifies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HclHardware<'a> {
    Snp(&'a [u8]),
    TdReport(&'a [u8]),
}

/// The HCL report's hardware report and runtime data. Pure; fuzzed
/// (`fuzz_targets/azure_hcl.rs`).
pub fn split_hcl(b: &[u8]) -> Result<(HclHardware<'_>, &[u8]), AzureError> {
    let err = |m: String| AzureError::Hcl(m);
    if b.get(..4) != Some(b"HCLA") {
        return Err(err("no HCLA signature".into()));
    }
    let snp = b
        .get(HCL_HEADER_LEN..HCL_HEADER_LEN + SNP_REPORT_LEN)
        .ok_or_else(|| err("shorter than its SNP report".into()))?;
    let igvm_at = HCL_HEADER_LEN + SNP_REPORT_LEN;
    let igvm = b
        .get(igvm_at..igvm_at + IGVM_HEADER_LEN)
        .ok_or_else(|| err("no IGVM request header".into()))?;
    let u32_at = |i: usize| {
        igvm.get(i..i + 4)
            .and_then(|s| s.try_into().ok())
            .map(u32::from_le_bytes)
            .unwrap_or_default()
    };
    let (report_type, hash_type, var_size) = (u32_at(8), u32_at(12), u32_at(16) as usize);
    let hardware = match report_type {
        REPORT_TYPE_SNP => HclHardware::Snp(snp),
        REPORT_TYPE_TDX => HclHardware::TdReport(snp.get(..TDREPORT_LEN).unwrap_or(snp)),
        t => return Err(err(format!("report type {t}, want 2 (SEV-SNP) or 4 (TDX)"))),
    };
    if hash_type != 1 {
        return Err(err(format!(
            "runtime data hash type {hash_type}, want 1 (SHA-256)"
        )));
    }
    if var_size > MAX_RUNTIME_DATA {
        return Err(err(format!("runtime data of {var_size} bytes")));
    }
    let var_at = igvm_at + IGVM_HEADER_LEN;
    let var = b
        .get(var_at..var_at + var_size)
        .ok_or_else(|| err(format!("runtime data of {var_size} bytes past the end")))?;
    Ok((hardware, var))
}

fn parse_runtime_data(runtime: &[u8]) -> Result<RuntimeData, AzureError> {
    serde_json::from_slice(runtime).map_err(|e| AzureError::RuntimeData(e.to_string()))
}

/// RSA moduli this accepts for `HCLAkPub`, in bytes (2048 to 8192 bits).
const AK_MODULUS: std::ops::RangeInclusive<usize> = 256..=1024;

/// `HCLAkPub` as an RSA SubjectPublicKeyInfo (DER), and its modulus bits.
fn akpub(rt: &RuntimeData) -> Result<(Vec<u8>, usize), AzureError> {
    let jwk = rt
        .keys
        .iter()
        .find(|k| k.kid == "HCLAkPub")
        .ok_or_else(|| AzureError::Ak("no HCLAkPub in the runtime data".into()))?;
    match (URL_SAFE_NO_PAD.decode(&jwk.n), URL_SAFE_NO_PAD.decode(&jwk.e)) {
        (Ok(n), Ok(e)) if jwk.kty == "RSA" && AK_MODULUS.contains(&n.len()) && (1..=8).contains(&e.len()) => {
            Ok((rsa_spki(&n, &e), n.len() * 8))
        }
        _ => Err(AzureError::Ak(
            "HCLAkPub is not an RSA key of 2048 to 8192 bits".into(),
        )),
    }
}

/// The runtime data's `HCLAkPub` as an RSA SubjectPublicKeyInfo (DER). Pure; fuzzed.
pub fn runtime_data_ak(runtime: &[u8]) -> Result<Vec<u8>, AzureError> {
    akpub(&parse_runtime_data(runtime)?).map(|(spki, _)| spki)
}

/// DER: a TLV with a definite length.
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let n = content.len();
    let mut out = vec![tag];
    match n {
        0..=0x7f => out.push(n as u8),
        0x80..=0xff => out.extend([0x81, n as u8]),
        _ => out.extend([0x82, (n >> 8) as u8, n as u8]),
    }
    out.extend_from_slice(content);
    out
}

/// An unsigned big-endian integer as DER INTEGER.
fn der_uint(b: &[u8]) -> Vec<u8> {
    let first = b
        .iter()
        .position(|x| *x != 0)
        .unwrap_or(b.len().saturating_sub(1));
    let mut v = b.get(first..).unwrap_or_default().to_vec();
    if v.first().is_some_and(|x| x & 0x80 != 0) {
        v.insert(0, 0);
    }
    tlv(0x02, &v)
}

/// The RSA JWK as a SubjectPublicKeyInfo (DER).
fn rsa_spki(n: &[u8], e: &[u8]) -> Vec<u8> {
    let rsa_key = tlv(0x30, &[der_uint(n), der_uint(e)].concat());
    // rsaEncryption, NULL parameters.
    let alg = tlv(
        0x30,
        &[
            tlv(0x06, &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01]),
            vec![0x05, 0x00],
        ]
        .concat(),
    );
    let bits = tlv(0x03, &[&[0u8][..], &rsa_key].concat());
    tlv(0x30, &[alg, bits].concat())
}

/// A raw RSASSA-PKCS1-v1_5/SHA-256 signature as a TPMT_SIGNATURE.
fn tpmt_rsassa_sha256(raw: &[u8]) -> Vec<u8> {
    let mut out = vec![0x00, 0x14, 0x00, 0x0b];
    out.extend((raw.len() as u16).to_be_bytes());
    out.extend_from_slice(raw);
    out
}

/// Verifies Azure CVM evidence with the AMD and Intel roots and a TPM quote verifier.
#[derive(Debug)]
pub struct AzureVerifier {
    pub snp: SnpVerifier,
    pub tdx: TdxVerifier,
    pub tpm: TpmVerifier,
}

/// The TD quote is of the HCL's TD: same REPORTDATA, attributes, XFAM, MRTD, MRCONFIGID,
/// MROWNER, MROWNERCONFIG and RTMRs.
fn same_td(td_report: &[u8], quote: &TdxClaims) -> Result<(), AzureError> {
    let field = |r: std::ops::Range<usize>| td_report.get(r).map(hex::encode).unwrap_or_default();
    let measured = field(TDINFO_MEASURED);
    let ours = [
        quote.td_attributes.as_str(),
        &quote.xfam,
        &quote.mr_td,
        &quote.mr_config_id,
        &quote.mr_owner,
        &quote.mr_owner_config,
        &quote.rtmr[0],
        &quote.rtmr[1],
        &quote.rtmr[2],
        &quote.rtmr[3],
    ]
    .concat();
    if field(TDREPORT_DATA) != quote.report_data {
        return Err(AzureError::TdReport(
            "the HCL's TDREPORT has another REPORTDATA than the TD quote".into(),
        ));
    }
    if measured != ours {
        return Err(AzureError::TdReport(
            "the HCL's TDREPORT measures another TD than the TD quote (attributes, XFAM, MRTD, MRCONFIGID, MROWNER, MROWNERCONFIG or RTMRs differ)".into(),
        ));
    }
    Ok(())
}

fn carry(log: &mut CheckLog, kind: &str, checks: &[Check]) {
    for c in checks {
        log.pass(prefixed(kind, c.name), c.detail.clone());
    }
}

impl EvidenceVerifier for AzureVerifier {
    type Evidence<'a> = AzureEvidence<'a>;
    type Claims = AzureClaims;
    type Error = AzureError;
    const KIND: &'static str = "azure-cvm";

    fn verify(&self, ev: AzureEvidence<'_>, at: UnixTime) -> Outcome<AzureClaims, AzureError> {
        let mut log = CheckLog::new();
        let (hardware, runtime) = match split_hcl(ev.hcl_report) {
            Ok(x) => x,
            Err(e) => return Err(log.reject(e)),
        };
        // The hardware report must commit to the runtime data: SHA-256, then 32 zeros.
        let mut want = [0u8; 64];
        want[..32].copy_from_slice(digest::digest(&digest::SHA256, runtime).as_ref());
        let (snp, tdx) = match (hardware, ev.hardware) {
            (HclHardware::Snp(report), AzureHardware::Snp { vcek, ca_chain }) => {
                log.pass(
                    "hcl_report",
                    format!("HCLA, SEV-SNP report, {} bytes of runtime data", runtime.len()),
                );
                let snp = self.snp.verify(
                    SnpEvidence {
                        report,
                        vek: vcek,
                        ca_chain,
                        expected_report_data: Some(ExpectedReportData::Exact(want)),
                        allow_debug: false,
                    },
                    at,
                );
                match snp {
                    Ok(v) => {
                        carry(&mut log, "snp", &v.checks);
                        (Some(v.claims), None)
                    }
                    Err(r) => {
                        carry(&mut log, "snp", &r.passed);
                        return Err(log.reject(AzureError::Snp(r.error)));
                    }
                }
            }
            (HclHardware::TdReport(td_report), AzureHardware::Tdx { quote, collateral }) => {
                log.pass(
                    "hcl_report",
                    format!("HCLA, TDX TDREPORT, {} bytes of runtime data", runtime.len()),
                );
                let tdx = self.tdx.verify(
                    TdxEvidence {
                        quote,
                        collateral,
                        expected_report_data: Some(&want),
                    },
                    at,
                );
                let claims = match tdx {
                    Ok(v) => {
                        carry(&mut log, "tdx", &v.checks);
                        v.claims
                    }
                    Err(r) => {
                        carry(&mut log, "tdx", &r.passed);
                        return Err(log.reject(AzureError::Tdx(r.error)));
                    }
                };
                if let Err(e) = same_td(td_report, &claims) {
                    return Err(log.reject(e));
                }
                log.pass(
                    "td_report",
                    "the TD quote is of the HCL's TDREPORT (REPORTDATA, TDINFO)",
                );
                (None, Some(claims))
            }
            (HclHardware::Snp(_), AzureHardware::Tdx { .. }) => {
                return Err(log.reject(AzureError::Hcl(
                    "an SEV-SNP HCL report, but TDX evidence was given".into(),
                )))
            }
            (HclHardware::TdReport(_), AzureHardware::Snp { .. }) => {
                return Err(log.reject(AzureError::Hcl(
                    "a TDX HCL report, but SEV-SNP evidence was given".into(),
                )))
            }
        };
        // runtime_data, ak
        let rt = match parse_runtime_data(runtime) {
            Ok(r) => r,
            Err(e) => return Err(log.reject(e)),
        };
        log.pass("runtime_data", "SHA-256 in the SNP report's REPORT_DATA; JSON");
        let user_data_binds_nonce = user_data_binds(&rt.user_data, ev.nonce);
        if ev.require_user_data {
            if !user_data_binds_nonce {
                return Err(log.reject(AzureError::UserData(format!(
                    "the runtime data's user-data does not carry the nonce ({} bytes) then zeros",
                    ev.nonce.len()
                ))));
            }
            log.pass(
                "user_data",
                "the runtime data's user-data is the nonce, then zeros",
            );
        }
        let (spki, bits) = match akpub(&rt) {
            Ok(x) => x,
            Err(e) => return Err(log.reject(e)),
        };
        if let Some(given) = ev.ak {
            // Any form a TPM AK comes in: SPKI (PEM, DER), TPMT_PUBLIC, TPM2B_PUBLIC.
            let given = crate::tpm::AttestationKey::parse(given).map(|k| k.key);
            let ours = crate::tpm::AttestationKey::parse(&spki).map(|k| k.key);
            if given.is_err() || given.ok() != ours.ok() {
                return Err(log.reject(AzureError::Ak(
                    "the given AK is not the runtime data's HCLAkPub".into(),
                )));
            }
        }
        log.pass("ak", format!("HCLAkPub, RSA-{bits}"));
        // The vTPM quote.
        let pcrs = match crate::tpm::pcr_file_or_text(ev.pcrs) {
            Ok(p) => p,
            Err(e) => return Err(log.reject(AzureError::Tpm(e))),
        };
        let sig = if ev.signature.len() * 8 == bits {
            tpmt_rsassa_sha256(ev.signature)
        } else {
            ev.signature.to_vec()
        };
        let quote = self.tpm.verify(
            TpmEvidence {
                quote: ev.quote,
                signature: &sig,
                ak: &spki,
                pcrs: &pcrs,
                nonce: ev.nonce,
                event_log: None,
            },
            at,
        );
        let quote = match quote {
            Ok(v) => {
                carry(&mut log, "tpm", &v.checks);
                v.claims
            }
            Err(r) => {
                carry(&mut log, "tpm", &r.passed);
                return Err(log.reject(AzureError::Tpm(r.error)));
            }
        };
        Ok(log.finish(AzureClaims {
            tpm: "paravisor-vtpm",
            snp,
            tdx,
            quote,
            user_data_binds_nonce,
            vm_configuration: rt.vm_configuration,
        }))
    }
}

/// PEM (`PUBLIC KEY`) to DER, or DER as is.
pub(crate) fn pem_or_der(b: &[u8]) -> Vec<u8> {
    let Ok(s) = std::str::from_utf8(b) else {
        return b.to_vec();
    };
    if !s.contains("-----BEGIN") {
        return b.to_vec();
    }
    let body: String = s
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat();
    base64::engine::general_purpose::STANDARD
        .decode(body.trim())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
