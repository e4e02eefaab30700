//! Azure confidential VMs on SEV-SNP: the paravisor (HCL) report and the vTPM quote.
//!
//! The guest does not hold the SNP report's REPORT_DATA: Azure's paravisor does, and puts
//! there the SHA-256 of a runtime-data JSON that carries the vTPM's attestation key
//! (`HCLAkPub`). So the chain of trust is: AMD signs the report (the SNP checks), the
//! report commits to the runtime data (`runtime_data`), the runtime data names the AK
//! (`ak`), the AK signs the quote over the round's nonce (the TPM checks). The trust in
//! the paravisor is explicit: the vTPM is software inside it, and the claims say
//! `tpm: paravisor-vtpm`.
//!
//! Checks, in order: `hcl_report` (the HCLA envelope: header, SNP report, IGVM request
//! header, runtime data), the SNP checks under `snp_*` names (`snp_cert_chain`, ...,
//! `snp_report_data`: SHA-256 of the runtime data then zeros), `runtime_data`, `user_data`
//! (if asked: the nonce is in the runtime data too), `ak` (the runtime data's
//! `HCLAkPub`, an RSA key; a caller's AK must be the same), then the TPM checks under
//! `tpm_*` names (`tpm_parse`, `tpm_signature`, `tpm_nonce`, `tpm_pcr_selection`,
//! `tpm_pcr_digest`).

use crate::check::{Check, CheckLog, EvidenceVerifier, FailedCheck, Outcome, UnixTime};
use crate::snp::{ExpectedReportData, SnpClaims, SnpEvidence, SnpVerifier};
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
            Self::UserData(_) => "user_data",
            Self::Ak(_) => "ak",
            Self::Tpm(e) => prefixed("tpm", e.check()),
        }
    }
}

/// One round of Azure SNP CVM evidence.
#[derive(Debug, Clone, Copy)]
pub struct AzureEvidence<'a> {
    /// The HCL report, as read from the vTPM's NV index 0x01400001.
    pub hcl_report: &'a [u8],
    /// The VCEK (DER or PEM) and, optionally, the ASK/ARK.
    pub vcek: &'a [u8],
    pub ca_chain: Option<&'a [u8]>,
    /// TPMS_ATTEST, and the signature: a TPMT_SIGNATURE or the raw RSASSA-PKCS1-v1_5
    /// signature Azure's tools write.
    pub quote: &'a [u8],
    pub signature: &'a [u8],
    /// PCR values: `tpm2_quote -o` binary, or text lines `INDEX HEX` (one bank).
    pub pcrs: &'a [u8],
    /// The quote's expected extraData.
    pub nonce: &'a [u8],
    /// An AK the caller expects (PEM/DER SPKI); it must be the runtime data's.
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
    /// SNP report attests; trust in the paravisor is part of this result.
    pub tpm: &'static str,
    pub snp: SnpClaims,
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

/// The HCL report's SNP report and runtime data. Pure; fuzzed (`fuzz_targets/azure_hcl.rs`).
pub fn split_hcl(b: &[u8]) -> Result<(&[u8], &[u8]), AzureError> {
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
    match report_type {
        REPORT_TYPE_SNP => {}
        REPORT_TYPE_TDX => return Err(err("a TDX HCL report (not yet appraised here)".into())),
        t => return Err(err(format!("report type {t}, want 2 (SEV-SNP)"))),
    }
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
    Ok((snp, var))
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

/// Verifies Azure SNP CVM evidence with the AMD roots and a TPM quote verifier.
#[derive(Debug)]
pub struct AzureVerifier {
    pub snp: SnpVerifier,
    pub tpm: TpmVerifier,
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
        let (snp_report, runtime) = match split_hcl(ev.hcl_report) {
            Ok(x) => x,
            Err(e) => return Err(log.reject(e)),
        };
        log.pass(
            "hcl_report",
            format!("HCLA, SEV-SNP report, {} bytes of runtime data", runtime.len()),
        );
        // The SNP report must commit to the runtime data: SHA-256, then 32 zero bytes.
        let mut want = [0u8; 64];
        want[..32].copy_from_slice(digest::digest(&digest::SHA256, runtime).as_ref());
        let snp = self.snp.verify(
            SnpEvidence {
                report: snp_report,
                vek: ev.vcek,
                ca_chain: ev.ca_chain,
                expected_report_data: Some(ExpectedReportData::Exact(want)),
                allow_debug: false,
            },
            at,
        );
        let snp = match snp {
            Ok(v) => {
                carry(&mut log, "snp", &v.checks);
                v.claims
            }
            Err(r) => {
                carry(&mut log, "snp", &r.passed);
                return Err(log.reject(AzureError::Snp(r.error)));
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
            let given = crate::x509::PublicKey::from_spki_der(&pem_or_der(given));
            let ours = crate::x509::PublicKey::from_spki_der(&spki);
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
