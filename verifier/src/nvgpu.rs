//! NVIDIA confidential GPUs (Hopper H100/H200, Blackwell B100/B200/GB200): an SPDM 1.1
//! `GET_MEASUREMENTS` report signed by the GPU's device key, whose certificate chains to
//! the NVIDIA Device Identity CA.
//!
//! Checks, in order (stable names): `parse`, `nonce`, `cert_chain` / `cert_validity`,
//! `signature`, `fwid`, `rim` (only when RIMs are given), `revocation`.
//!
//! - `fwid` binds the signing key to the measured firmware: the report's opaque-data FWID
//!   must equal the FWID the device CA put in the leaf's TCG DICE extension. Hopper
//!   leaves carry 2.23.133.5.4.1 in the early DICE "composite device id" form
//!   (`SEQUENCE { version, SubjectPublicKeyInfo, FWID }`); Blackwell leaves carry a
//!   `DiceTcbInfo` under 2.23.133.5.4.1.1; `MultiTcbInfo` (2.23.133.5.4.5) is read too.
//!   Reports from drivers older than the FWID field carry none: like NVIDIA's verifier,
//!   the comparison is then skipped, but visibly (`fwid_checked: false`).
//! - `revocation` is never claimed good here: with no OCSP collateral it is recorded as
//!   `unchecked`, for the policy to weigh.

use crate::check::{CheckLog, EvidenceVerifier, FailedCheck, Outcome, UnixTime};
use crate::rim::library::{product_of, LibraryRim, RimLibrary};
use crate::rim::{self, Rim, RimComparison, RimError, RimKind};
use crate::x509::{split_certs, ChainCache, ChainError, PublicKey, TrustAnchor, ValidatedChain};
use custody_formats::spdm::{self, NvidiaReport, SpdmError, FWID_LEN, NONCE_LEN};
use serde::Serialize;
use std::collections::BTreeMap;
use thiserror::Error;
use x509_parser::prelude::*;

/// NVIDIA Device Identity CA, pinned (see `roots/nvidia/README.md`).
pub const DEVICE_IDENTITY_ROOT_PEM: &[u8] = include_bytes!("../roots/nvidia/nvidia-device-identity-root.pem");
/// NVIDIA CoRIM signing root, pinned for RIM signatures.
pub const RIM_ROOT_PEM: &[u8] = include_bytes!("../roots/nvidia/nvidia-rim-root.pem");

/// NVIDIA device chains: leaf (FMC), BROM, provisioner ICA, per-chip identity CA, root.
pub const DEVICE_CHAIN_LEN: usize = 5;

/// RIM index of the NVDEC0 measurement.
const NVDEC0_RIM_INDEX: u32 = 35;

const CACHE_CAPACITY: usize = 256;

const OID_DICE_TCB_INFO: &str = "2.23.133.5.4.1";
const OID_DICE_TCB_INFO_ALIAS: &str = "2.23.133.5.4.1.1";
const OID_DICE_MULTI_TCB_INFO: &str = "2.23.133.5.4.5";
const OID_DICE_UEID: &str = "2.23.133.5.4.4";
/// DER of the SHA-384 OID (2.16.840.1.101.3.4.2.2), content octets.
const SHA384_OID_DER: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02];

/// Why a leaf's FWID could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FwidError {
    #[error("leaf certificate has no TCG DICE TcbInfo extension")]
    Missing,
    #[error("leaf TcbInfo extension {oid}: {reason}")]
    Malformed { oid: &'static str, reason: String },
}

#[derive(Debug, Error)]
pub enum NvgpuError {
    #[error("malformed report: {0}")]
    Parse(#[from] SpdmError),
    #[error("expected nonce must be exactly {NONCE_LEN} bytes, got {0}")]
    NonceLength(usize),
    #[error("request nonce {got} differs from the expected {expected}")]
    NonceMismatch { expected: String, got: String },
    #[error("{0}")]
    Chain(#[from] ChainError),
    #[error(
        "device chain has {0} certificates including the root, NVIDIA device chains have {DEVICE_CHAIN_LEN}"
    )]
    ChainLength(usize),
    #[error("leaf certificate: {0}")]
    Leaf(String),
    #[error("{0}")]
    LeafFwid(FwidError),
    #[error("report FWID {report} differs from the leaf certificate's {leaf}")]
    FwidMismatch { report: String, leaf: String },
    #[error("report signature does not verify with the leaf certificate's P-384 key")]
    Signature,
    #[error("RIM {index}: {source}")]
    Rim {
        index: usize,
        #[source]
        source: RimError,
    },
    #[error("{kind:?} RIM is for version {rim}, the report says {report}")]
    RimVersion {
        kind: RimKind,
        rim: String,
        report: String,
    },
    #[error("{kind:?} RIM given but the report has no {kind:?} version field")]
    RimVersionMissing { kind: RimKind },
    #[error("measurements do not match the RIMs: {0}")]
    RimCompare(RimError),
    #[error("no {kind:?} RIM for {product} {version} in the RIM library")]
    RimMissing {
        kind: RimKind,
        product: String,
        version: String,
    },
}

impl FailedCheck for NvgpuError {
    fn check(&self) -> &'static str {
        match self {
            Self::Parse(_) => "parse",
            Self::NonceLength(_) | Self::NonceMismatch { .. } => "nonce",
            Self::Chain(e) => e.check(),
            Self::ChainLength(_) | Self::Leaf(_) => "cert_chain",
            Self::LeafFwid(_) | Self::FwidMismatch { .. } => "fwid",
            Self::Signature => "signature",
            Self::Rim { .. }
            | Self::RimVersion { .. }
            | Self::RimVersionMissing { .. }
            | Self::RimCompare(_)
            | Self::RimMissing { .. } => "rim",
        }
    }
}

/// One GPU's evidence, borrowed.
#[derive(Debug, Clone, Copy)]
pub struct NvgpuEvidence<'a> {
    /// SPDM request||response||signature (binary).
    pub report: &'a [u8],
    /// Device certificate chain, PEM or concatenated DER, leaf first.
    pub cert_chain: &'a [u8],
    /// Expected requester nonce (the round's binding), exactly 32 bytes.
    pub nonce: &'a [u8],
    /// Signed RIMs (driver, VBIOS) as XML; may be empty.
    pub rims: &'a [&'a [u8]],
    /// When `rims` is empty: the operator's RIM library, from which the driver and VBIOS
    /// RIMs of this GPU's product and reported versions are taken. Both must be there
    /// (`rim`: "no driver RIM for GH100 550.144.03 in the library" otherwise).
    pub library: Option<&'a RimLibrary>,
}

/// Typed claims of a verified GPU report.
#[derive(Debug, Clone, Serialize)]
pub struct NvgpuClaims {
    /// `hopper`, `blackwell` or `unknown`.
    pub architecture: &'static str,
    /// Hardware model from the leaf subject (`GH100 A01 GSP FMC LF`).
    pub hwmodel: String,
    pub driver_version: Option<String>,
    pub vbios_version: Option<String>,
    pub gpu_info: Option<u64>,
    pub chip_sku: Option<String>,
    pub chip_sku_mod: Option<String>,
    pub project: Option<String>,
    pub project_sku: Option<String>,
    pub project_sku_mod: Option<String>,
    pub board_id: Option<u64>,
    pub nvdec0_status: Option<String>,
    pub protected_pcie_status: Option<String>,
    pub opaque_data_version: Option<u64>,
    pub feature_flag: Option<u64>,
    /// SPDM measurement index -> hex digest.
    pub measurements: BTreeMap<u8, String>,
    /// Report FWID (hex), when the report carries one.
    pub fwid: Option<String>,
    /// Whether the FWID was compared with the leaf certificate.
    pub fwid_checked: bool,
    pub leaf_subject: String,
    /// Leaf certificate serial number (hex).
    pub leaf_serial: String,
    /// TCG DICE UEID (2.23.133.5.4.4) of the leaf, hex, when present.
    pub ueid: Option<String>,
    /// The chain validation came from the cache (its time window still checked now).
    pub chain_cached: bool,
    /// `unchecked` (no OCSP collateral): never `good` without evidence.
    pub revocation: &'static str,
    /// RIM comparison when RIMs were given.
    pub rim: Option<RimComparison>,
    /// Zero bytes that followed the signature.
    pub trailing_zero_bytes: usize,
}

/// Verifier holding the pinned NVIDIA roots and a cache of validated device chains.
#[derive(Debug)]
pub struct NvgpuVerifier {
    device_roots: Vec<TrustAnchor>,
    rim_roots: Vec<TrustAnchor>,
    cache: ChainCache,
}

impl NvgpuVerifier {
    /// With the built-in NVIDIA Device Identity CA and RIM root.
    pub fn new() -> Result<Self, ChainError> {
        Ok(Self::with_roots(
            TrustAnchor::from_pem_or_der(DEVICE_IDENTITY_ROOT_PEM)?,
            TrustAnchor::from_pem_or_der(RIM_ROOT_PEM)?,
        ))
    }

    /// With other pinned roots (tests, private deployments).
    pub fn with_roots(device_roots: Vec<TrustAnchor>, rim_roots: Vec<TrustAnchor>) -> Self {
        Self {
            device_roots,
            rim_roots,
            cache: ChainCache::new(CACHE_CAPACITY),
        }
    }

    pub fn device_roots(&self) -> &[TrustAnchor] {
        &self.device_roots
    }

    /// Validate a device chain (PEM/DER, leaf first) through the cache: a pinned root at
    /// its end (included or completing it), exactly five certificates, a P-384 leaf.
    pub fn verify_device_chain(
        &self,
        chain_bytes: &[u8],
        at: UnixTime,
    ) -> Result<ValidatedChain, NvgpuError> {
        let chain = split_certs(chain_bytes)?;
        verify_device_chain_with(&chain, &self.device_roots, Some(&self.cache), at)
    }
}

/// Validate split device-chain certificates against `anchors` (without cache when `None`).
pub fn verify_device_chain_with(
    chain: &[Vec<u8>],
    anchors: &[TrustAnchor],
    cache: Option<&ChainCache>,
    at: UnixTime,
) -> Result<ValidatedChain, NvgpuError> {
    let v = match cache {
        Some(c) => c.verify(chain, anchors, at)?,
        None => crate::x509::verify_chain(chain, anchors, at)?,
    };
    if v.len != DEVICE_CHAIN_LEN {
        return Err(NvgpuError::ChainLength(v.len));
    }
    if !matches!(v.leaf_key, PublicKey::EcP384(_)) {
        return Err(NvgpuError::Leaf(format!(
            "key is {}, SPDM reports here are signed with P-384",
            v.leaf_key.kind()
        )));
    }
    Ok(v)
}

/// Whether `report`'s signature verifies with `key` (ECDSA P-384/SHA-384, raw r||s).
pub fn report_signature_valid(report: &NvidiaReport<'_>, key: &PublicKey) -> bool {
    key.verify_p384_fixed(report.signed, &report.signature)
}

/// The FWID the device CA certified in the leaf: the first SHA-384 FWID of its TCG DICE
/// extension.
pub fn leaf_fwid(leaf: &X509Certificate<'_>) -> Result<[u8; FWID_LEN], FwidError> {
    for ext in leaf.extensions() {
        let oid = ext.oid.to_id_string();
        let (name, found) = match oid.as_str() {
            OID_DICE_TCB_INFO => (OID_DICE_TCB_INFO, tcb_info_or_composite_fwid(ext.value)),
            OID_DICE_TCB_INFO_ALIAS => (OID_DICE_TCB_INFO_ALIAS, tcb_info_fwid(ext.value)),
            OID_DICE_MULTI_TCB_INFO => (OID_DICE_MULTI_TCB_INFO, multi_tcb_info_fwid(ext.value)),
            _ => continue,
        };
        return found.map_err(|reason| FwidError::Malformed { oid: name, reason });
    }
    Err(FwidError::Missing)
}

/// The leaf's TCG DICE UEID (`SEQUENCE { OCTET STRING }`), if present and well formed.
pub fn leaf_ueid(leaf: &X509Certificate<'_>) -> Option<Vec<u8>> {
    let ext = leaf
        .extensions()
        .iter()
        .find(|e| e.oid.to_id_string() == OID_DICE_UEID)?;
    let (seq, _) = der::expect(ext.value, der::SEQUENCE).ok()?;
    let (ueid, rest) = der::expect(seq, der::OCTET_STRING).ok()?;
    rest.is_empty().then(|| ueid.to_vec())
}

/// Minimal bounded DER reader for the DICE extensions (definite lengths, low tag numbers).
mod der {
    pub const INTEGER: u8 = 0x02;
    pub const OCTET_STRING: u8 = 0x04;
    pub const OID: u8 = 0x06;
    pub const SEQUENCE: u8 = 0x30;
    /// `[6] IMPLICIT SEQUENCE OF FWID` inside DiceTcbInfo.
    pub const TCB_FWIDS: u8 = 0xA6;

    /// One TLV: (tag, content, rest).
    pub fn tlv(input: &[u8]) -> Result<(u8, &[u8], &[u8]), String> {
        let (&tag, rest) = input.split_first().ok_or("empty input")?;
        if tag & 0x1F == 0x1F {
            return Err("high tag numbers are not used here".into());
        }
        let (&first, mut rest) = rest.split_first().ok_or("missing length")?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let n = usize::from(first & 0x7F);
            if n == 0 || n > 3 {
                return Err(format!("unsupported length form {first:#04x}"));
            }
            let (bytes, r) = rest.split_at_checked(n).ok_or("truncated length")?;
            rest = r;
            let len = bytes.iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
            // DER: minimal length encoding.
            if len < 0x80 || bytes.first() == Some(&0) {
                return Err("non-minimal length".into());
            }
            len
        };
        let (content, rest) = rest
            .split_at_checked(len)
            .ok_or("content runs past its container")?;
        Ok((tag, content, rest))
    }

    /// A TLV with the expected tag: (content, rest).
    pub fn expect(input: &[u8], tag: u8) -> Result<(&[u8], &[u8]), String> {
        let (t, content, rest) = tlv(input)?;
        if t != tag {
            return Err(format!("tag {t:#04x}, expected {tag:#04x}"));
        }
        Ok((content, rest))
    }
}

/// `FWID ::= SEQUENCE { hashAlg OID, digest OCTET STRING }`; SHA-384 only.
fn parse_fwid(content: &[u8]) -> Result<[u8; FWID_LEN], String> {
    let (alg, rest) = der::expect(content, der::OID)?;
    let (digest, rest) = der::expect(rest, der::OCTET_STRING)?;
    if !rest.is_empty() {
        return Err("trailing data in FWID".into());
    }
    if alg != SHA384_OID_DER {
        return Err("FWID hash algorithm is not SHA-384".into());
    }
    digest
        .try_into()
        .map_err(|_| format!("FWID digest is {} bytes, expected {FWID_LEN}", digest.len()))
}

/// Either DiceTcbInfo or the early DICE composite device id
/// (`SEQUENCE { INTEGER version, SubjectPublicKeyInfo, FWID }`, as Hopper leaves use).
fn tcb_info_or_composite_fwid(value: &[u8]) -> Result<[u8; FWID_LEN], String> {
    let (body, rest) = der::expect(value, der::SEQUENCE)?;
    if !rest.is_empty() {
        return Err("trailing data after the extension value".into());
    }
    if body.first() != Some(&der::INTEGER) {
        return tcb_info_body_fwid(body);
    }
    let (_version, r) = der::expect(body, der::INTEGER)?;
    let (_spki, r) = der::expect(r, der::SEQUENCE)?;
    let (fwid, r) = der::expect(r, der::SEQUENCE)?;
    if !r.is_empty() {
        return Err("trailing data in the composite device id".into());
    }
    parse_fwid(fwid)
}

fn tcb_info_fwid(value: &[u8]) -> Result<[u8; FWID_LEN], String> {
    let (body, rest) = der::expect(value, der::SEQUENCE)?;
    if !rest.is_empty() {
        return Err("trailing data after DiceTcbInfo".into());
    }
    tcb_info_body_fwid(body)
}

/// First FWID of the `fwids [6]` field of a DiceTcbInfo body.
fn tcb_info_body_fwid(mut body: &[u8]) -> Result<[u8; FWID_LEN], String> {
    while !body.is_empty() {
        let (tag, content, rest) = der::tlv(body)?;
        body = rest;
        if tag == der::TCB_FWIDS {
            let (first, _) = der::expect(content, der::SEQUENCE)?;
            return parse_fwid(first);
        }
    }
    Err("DiceTcbInfo has no fwids".into())
}

/// First TcbInfo in the list that carries FWIDs.
fn multi_tcb_info_fwid(value: &[u8]) -> Result<[u8; FWID_LEN], String> {
    let (mut list, rest) = der::expect(value, der::SEQUENCE)?;
    if !rest.is_empty() {
        return Err("trailing data after MultiTcbInfo".into());
    }
    let mut last_err = "MultiTcbInfo is empty".to_string();
    while !list.is_empty() {
        let (info, r) = der::expect(list, der::SEQUENCE)?;
        list = r;
        match tcb_info_body_fwid(info) {
            Ok(f) => return Ok(f),
            Err(e) => last_err = e,
        }
    }
    Err(last_err)
}

fn architecture(hwmodel: &str, gpu_info: Option<u64>) -> &'static str {
    let chip = hwmodel.split_whitespace().next().unwrap_or_default();
    if chip.starts_with("GH1") {
        return "hopper";
    }
    if chip.starts_with("GB1") || chip.starts_with("GB2") {
        return "blackwell";
    }
    // NVIDIA architecture ids as the GPU reports them in GPU_INFO.
    match gpu_info {
        Some(0x180..=0x18F) => "hopper",
        Some(0x1A0..=0x1BF) => "blackwell",
        _ => "unknown",
    }
}

fn common_name(c: &X509Certificate<'_>) -> String {
    c.subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default()
        .to_owned()
}

impl EvidenceVerifier for NvgpuVerifier {
    type Evidence<'a> = NvgpuEvidence<'a>;
    type Claims = NvgpuClaims;
    type Error = NvgpuError;
    const KIND: &'static str = "nvgpu";

    fn verify(&self, ev: NvgpuEvidence<'_>, at: UnixTime) -> Outcome<NvgpuClaims, NvgpuError> {
        let mut log = CheckLog::new();

        // parse
        let report = match spdm::parse(ev.report) {
            Ok(r) => r,
            Err(e) => return Err(log.reject(e.into())),
        };
        log.pass(
            "parse",
            format!(
                "SPDM {}.{} GET_MEASUREMENTS: {} blocks, {} opaque bytes, signature at offset {}{}",
                report.request.version >> 4,
                report.request.version & 0x0F,
                report.blocks.len(),
                report.opaque_raw.len(),
                report.signed.len(),
                if report.trailing_zeros > 0 {
                    format!(", {} trailing zero byte(s) ignored", report.trailing_zeros)
                } else {
                    String::new()
                }
            ),
        );

        // nonce
        if ev.nonce.len() != NONCE_LEN {
            return Err(log.reject(NvgpuError::NonceLength(ev.nonce.len())));
        }
        if report.nonce().as_slice() != ev.nonce {
            return Err(log.reject(NvgpuError::NonceMismatch {
                expected: crate::hex(ev.nonce),
                got: crate::hex(report.nonce()),
            }));
        }
        log.pass("nonce", "request nonce equals the expected nonce");

        // cert_chain / cert_validity
        let chain = match split_certs(ev.cert_chain) {
            Ok(c) => c,
            Err(e) => return Err(log.reject(e.into())),
        };
        let validated = match verify_device_chain_with(&chain, &self.device_roots, Some(&self.cache), at) {
            Ok(v) => v,
            Err(e) => return Err(log.reject(e)),
        };
        log.pass(
            "cert_chain",
            format!(
                "{} certificates to pinned root {}{}",
                validated.len,
                validated.anchor,
                if validated.cached { " (cached)" } else { "" }
            ),
        );
        log.pass(
            "cert_validity",
            format!(
                "every certificate valid at {} (window {}..{})",
                at.0, validated.valid_from, validated.valid_until
            ),
        );
        let leaf_der = chain.first().map(Vec::as_slice).unwrap_or_default();
        let leaf = match X509Certificate::from_der(leaf_der) {
            Ok((_, c)) => c,
            Err(e) => return Err(log.reject(NvgpuError::Leaf(e.to_string()))),
        };

        // signature (before fwid: a report the leaf did not sign says nothing about its FWID)
        if !report_signature_valid(&report, &validated.leaf_key) {
            return Err(log.reject(NvgpuError::Signature));
        }
        log.pass(
            "signature",
            format!(
                "ECDSA P-384/SHA-384 over {} bytes by the leaf key",
                report.signed.len()
            ),
        );

        // fwid
        let report_fwid = report.opaque.fwid();
        let fwid_checked = match check_fwid(report_fwid, &leaf) {
            Ok(true) => {
                log.pass("fwid", "report FWID equals the leaf certificate's TCG DICE FWID");
                true
            }
            Ok(false) => {
                log.pass(
                    "fwid",
                    "not compared: the report carries no FWID field (driver predates it)",
                );
                false
            }
            Err(e) => return Err(log.reject(e)),
        };

        // rim
        // RIMs number measurements from 0, SPDM blocks from 1 (the parser refuses index 0),
        // as NVIDIA's verifier maps them.
        let measured: Vec<(u32, &[u8])> = report
            .blocks
            .iter()
            .map(|b| (u32::from(b.index).saturating_sub(1), b.value))
            .collect();
        let hwmodel = common_name(&leaf);
        let selected: Vec<RimSource<'_>> = match (ev.rims.is_empty(), ev.library) {
            (true, Some(lib)) => match select_rims(lib, &report, &hwmodel) {
                Ok(v) => v,
                Err(e) => return Err(log.reject(e)),
            },
            _ => ev.rims.iter().map(|x| RimSource::Xml(x)).collect(),
        };
        let rim_outcome = if selected.is_empty() {
            None
        } else {
            match self.check_rims(&report, &selected, &measured, at) {
                Ok(c) => {
                    log.pass(
                        "rim",
                        format!(
                            "{} RIM(s) verified; {} measurements matched, {} inactive",
                            selected.len(),
                            c.matched.len(),
                            c.inactive.len()
                        ),
                    );
                    Some(c)
                }
                Err(e) => return Err(log.reject(e)),
            }
        };

        // revocation
        log.pass("revocation", "unchecked: no OCSP collateral given");

        let o = &report.opaque;
        let claims = NvgpuClaims {
            architecture: architecture(&hwmodel, o.gpu_info()),
            hwmodel,
            driver_version: o.driver_version().map(str::to_owned),
            vbios_version: o.vbios_version().map(str::to_owned),
            gpu_info: o.gpu_info(),
            chip_sku: o.chip_sku().map(str::to_owned),
            chip_sku_mod: o.chip_sku_mod().map(str::to_owned),
            project: o.project().map(str::to_owned),
            project_sku: o.project_sku().map(str::to_owned),
            project_sku_mod: o.project_sku_mod().map(str::to_owned),
            board_id: o.board_id(),
            nvdec0_status: o.nvdec0_status().map(|s| s.as_str()),
            protected_pcie_status: o.protected_pcie_status().map(|s| s.as_str()),
            opaque_data_version: o.opaque_data_version(),
            feature_flag: o.feature_flag(),
            measurements: report
                .blocks
                .iter()
                .map(|b| (b.index, crate::hex(b.value)))
                .collect(),
            fwid: report_fwid.map(hex::encode),
            fwid_checked,
            leaf_subject: validated.leaf_subject.clone(),
            leaf_serial: crate::hex(leaf.raw_serial()),
            ueid: leaf_ueid(&leaf).map(hex::encode),
            chain_cached: validated.cached,
            revocation: "unchecked",
            rim: rim_outcome,
            trailing_zero_bytes: report.trailing_zeros,
        };
        Ok(log.finish(claims))
    }
}

/// The report's FWID (when it carries one) must equal the leaf's DICE FWID. `Ok(false)`:
/// the report has no FWID field, so nothing was compared.
fn check_fwid(report_fwid: Option<&[u8; FWID_LEN]>, leaf: &X509Certificate<'_>) -> Result<bool, NvgpuError> {
    let Some(rf) = report_fwid else {
        return Ok(false);
    };
    let lf = leaf_fwid(leaf).map_err(NvgpuError::LeafFwid)?;
    if &lf != rf {
        return Err(NvgpuError::FwidMismatch {
            report: crate::hex(rf),
            leaf: crate::hex(lf),
        });
    }
    Ok(true)
}

/// RIM versions are compared as NVIDIA's verifier does: the report's value against the
/// RIM's colloquialVersion, case-insensitively (VBIOS `96.00.5E.00.01` == `96.00.5e.00.01`).
fn versions_match(rim: &str, report: &str) -> bool {
    rim.trim().eq_ignore_ascii_case(report.trim())
}

/// A RIM to check: signed XML given with the evidence, or one of the operator's library
/// (verified when the library was loaded: only its signer chain's window is checked again).
enum RimSource<'a> {
    Xml(&'a [u8]),
    Library(&'a LibraryRim),
}

/// The library's driver and VBIOS RIMs for this report: the product from the device
/// certificate's model, the versions from the report's opaque data. Both are required.
fn select_rims<'l>(
    lib: &'l RimLibrary,
    report: &NvidiaReport<'_>,
    hwmodel: &str,
) -> Result<Vec<RimSource<'l>>, NvgpuError> {
    let mut out = Vec::with_capacity(2);
    for kind in [RimKind::Driver, RimKind::Vbios] {
        let reported = match kind {
            RimKind::Driver => report.opaque.driver_version(),
            RimKind::Vbios => report.opaque.vbios_version(),
        };
        let Some(version) = reported else {
            return Err(NvgpuError::RimVersionMissing { kind });
        };
        let rim = lib
            .select(kind, hwmodel, version)
            .ok_or_else(|| NvgpuError::RimMissing {
                kind,
                product: product_of(hwmodel).to_owned(),
                version: version.to_owned(),
            })?;
        out.push(RimSource::Library(rim));
    }
    Ok(out)
}

impl NvgpuVerifier {
    fn check_rims(
        &self,
        report: &NvidiaReport<'_>,
        rims: &[RimSource<'_>],
        measured: &[(u32, &[u8])],
        at: UnixTime,
    ) -> Result<RimComparison, NvgpuError> {
        let mut verified: Vec<Rim> = Vec::with_capacity(rims.len());
        for (index, source) in rims.iter().enumerate() {
            let r = match source {
                RimSource::Xml(xml) => rim::verify_rim(xml, &self.rim_roots, at),
                RimSource::Library(l) => l.verified_at(at),
            }
            .map_err(|source| NvgpuError::Rim { index, source })?;
            let reported = match r.kind {
                RimKind::Driver => report.opaque.driver_version(),
                RimKind::Vbios => report.opaque.vbios_version(),
            };
            let Some(reported) = reported else {
                return Err(NvgpuError::RimVersionMissing { kind: r.kind });
            };
            if !versions_match(&r.version, reported) {
                return Err(NvgpuError::RimVersion {
                    kind: r.kind,
                    rim: r.version.clone(),
                    report: reported.to_owned(),
                });
            }
            verified.push(r);
        }
        // NVIDIA's verifier does not compare the NVDEC0 measurement (RIM index 35) when the
        // report says NVDEC0 is disabled; the comparison result lists it as skipped.
        let skip: &[u32] = match report.opaque.nvdec0_status() {
            Some(spdm::Status::Disabled) => &[NVDEC0_RIM_INDEX],
            _ => &[],
        };
        rim::compare_skipping(&verified, measured, skip).map_err(NvgpuError::RimCompare)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TV: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/nvidia");
    /// 2025-01-01T00:00:00Z: inside every test chain's window (latest notBefore is the
    /// Blackwell chain's 2023-06-20; notAfter is 9999-12-31).
    const AT: UnixTime = UnixTime(1_735_689_600);
    /// 2020-01-01T00:00:00Z: before the Hopper leaves' notBefore (2020-10-17).
    const BEFORE: UnixTime = UnixTime(1_577_836_800);

    const HOPPER_NONCE: &str = "27a328247bf7935c993341cf587be6f05986ccce4fe7ba2c54100bd616a58f66";
    const BLACKWELL_NONCE: &str = "931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb";
    const COCO_NONCE: &str = "87d8e24ab336adafe228d49e83d745f6dba4ae505372b6a5704820856b343fec";

    fn read(name: &str) -> Vec<u8> {
        std::fs::read(format!("{TV}/{name}")).unwrap()
    }

    fn report(name: &str) -> Vec<u8> {
        hex::decode(String::from_utf8(read(name)).unwrap().trim()).unwrap()
    }

    fn run(
        v: &NvgpuVerifier,
        rep: &[u8],
        chain: &str,
        nonce: &str,
        at: UnixTime,
    ) -> Outcome<NvgpuClaims, NvgpuError> {
        let certs = read(chain);
        let nonce = hex::decode(nonce).unwrap();
        v.verify(
            NvgpuEvidence {
                report: rep,
                cert_chain: &certs,
                nonce: &nonce,
                rims: &[],
                library: None,
            },
            at,
        )
    }

    fn failed(o: Outcome<NvgpuClaims, NvgpuError>) -> &'static str {
        match o {
            Ok(_) => panic!("verified"),
            Err(r) => r.error.check(),
        }
    }

    fn names(checks: &[crate::Check]) -> Vec<&'static str> {
        checks.iter().map(|c| c.name).collect()
    }

    #[test]
    fn hopper_sdk_report_passes() {
        let v = NvgpuVerifier::new().unwrap();
        let ok = run(
            &v,
            &report("sdk-hopperAttestationReport.txt"),
            "sdk-hopperCertChain.txt",
            HOPPER_NONCE,
            AT,
        )
        .unwrap();
        assert_eq!(
            names(&ok.checks),
            [
                "parse",
                "nonce",
                "cert_chain",
                "cert_validity",
                "signature",
                "fwid",
                "revocation"
            ]
        );
        let c = &ok.claims;
        assert_eq!(c.architecture, "hopper");
        assert_eq!(c.driver_version.as_deref(), Some("535.86.09"));
        assert_eq!(c.vbios_version.as_deref(), Some("96.00.5e.00.01"));
        // That driver predates the FWID field: not compared, and said so.
        assert!(!c.fwid_checked);
        assert_eq!(c.fwid, None);
        assert_eq!(c.measurements.len(), 64);
        assert_eq!(c.revocation, "unchecked");
        assert_eq!(c.leaf_serial, "455472bb690155accc29161a19c7fe6144a8ed92");
        assert!(!c.chain_cached);
        let rev = ok.checks.last().unwrap();
        assert!(rev.ok);
        assert_eq!(rev.detail, "unchecked: no OCSP collateral given");
    }

    #[test]
    fn blackwell_sdk_report_passes_with_fwid() {
        let v = NvgpuVerifier::new().unwrap();
        let ok = run(
            &v,
            &report("sdk-blackwellAttestationReport.txt"),
            "sdk-blackwellCertChain.txt",
            BLACKWELL_NONCE,
            AT,
        )
        .unwrap();
        assert_eq!(ok.claims.architecture, "blackwell");
        assert!(ok.claims.fwid_checked);
        assert_eq!(ok.claims.driver_version.as_deref(), Some("575.32"));
        assert_eq!(ok.claims.hwmodel, "GB100 A01 GSP FMC LF");
    }

    #[test]
    fn trustee_report_with_trailing_zero_passes() {
        let v = NvgpuVerifier::new().unwrap();
        let ok = run(
            &v,
            &report("trustee-hopper_coco_report1.txt"),
            "trustee-hopper_coco_certs1.txt",
            COCO_NONCE,
            AT,
        )
        .unwrap();
        assert!(ok.claims.fwid_checked);
        assert_eq!(ok.claims.trailing_zero_bytes, 1);
        assert_eq!(ok.claims.protected_pcie_status.as_deref(), Some("disabled"));
        assert_eq!(ok.claims.nvdec0_status.as_deref(), Some("disabled"));
        assert_eq!(ok.claims.opaque_data_version, Some(1));
    }

    #[test]
    fn warm_path_reports_cached_chain() {
        let v = NvgpuVerifier::new().unwrap();
        let rep = report("trustee-hopper_coco_report1.txt");
        let first = run(&v, &rep, "trustee-hopper_coco_certs1.txt", COCO_NONCE, AT).unwrap();
        assert!(!first.claims.chain_cached);
        let second = run(&v, &rep, "trustee-hopper_coco_certs1.txt", COCO_NONCE, AT).unwrap();
        assert!(second.claims.chain_cached);
        // The cache still checks time.
        assert_eq!(
            failed(run(
                &v,
                &rep,
                "trustee-hopper_coco_certs1.txt",
                COCO_NONCE,
                BEFORE
            )),
            "cert_validity"
        );
    }

    #[test]
    fn invalid_signature_vector() {
        let v = NvgpuVerifier::new().unwrap();
        let rep = report("sdk-hopperAttestationReportInvalidSignature.txt");
        // Its signature verifies under no leaf we have: `signature` refuses it with every
        // chain (its FWID also belongs to a GPU whose chain is not among the vectors).
        for chain in [
            "sdk-hopperCertChain.txt",
            "sdk-hopperCertChainExpired.txt",
            "trustee-hopper_coco_certs1.txt",
            "trustee-hopper_cert_chain_case1.txt",
        ] {
            assert_eq!(
                failed(run(&v, &rep, chain, BLACKWELL_NONCE, AT)),
                "signature",
                "{chain}"
            );
        }
        // The signature itself verifies with no leaf key.
        let parsed = spdm::parse(&rep).unwrap();
        for chain in [
            "sdk-hopperCertChain.txt",
            "sdk-hopperCertChainExpired.txt",
            "trustee-hopper_coco_certs1.txt",
            "sdk-blackwellCertChain.txt",
        ] {
            let vc = v.verify_device_chain(&read(chain), AT).unwrap();
            assert!(!report_signature_valid(&parsed, &vc.leaf_key), "{chain}");
        }
    }

    #[test]
    fn corrupted_signature_fails_signature() {
        let v = NvgpuVerifier::new().unwrap();
        let mut rep = report("trustee-hopper_coco_report1.txt");
        let n = rep.len();
        rep[n - 10] ^= 0x01; // inside s, before the trailing zero
        let err = run(&v, &rep, "trustee-hopper_coco_certs1.txt", COCO_NONCE, AT).unwrap_err();
        assert_eq!(err.error.check(), "signature");
        assert_eq!(
            names(&err.checks()),
            ["parse", "nonce", "cert_chain", "cert_validity", "signature"]
        );
    }

    #[test]
    fn expired_case_is_about_time() {
        let v = NvgpuVerifier::new().unwrap();
        let rep = report("sdk-hopperAttestationReportExpired.txt");
        // No certificate of that chain has a past notAfter (all end 9999-12-31): at a time
        // inside the window it passes; before the leaf's notBefore it fails cert_validity.
        assert!(run(&v, &rep, "sdk-hopperCertChainExpired.txt", BLACKWELL_NONCE, AT).is_ok());
        assert_eq!(
            failed(run(
                &v,
                &rep,
                "sdk-hopperCertChainExpired.txt",
                BLACKWELL_NONCE,
                BEFORE
            )),
            "cert_validity"
        );
    }

    #[test]
    fn wrong_nonce() {
        let v = NvgpuVerifier::new().unwrap();
        let rep = report("sdk-hopperAttestationReport.txt");
        assert_eq!(
            failed(run(&v, &rep, "sdk-hopperCertChain.txt", BLACKWELL_NONCE, AT)),
            "nonce"
        );
        let certs = read("sdk-hopperCertChain.txt");
        let short = hex::decode(&HOPPER_NONCE[..62]).unwrap();
        let e = v
            .verify(
                NvgpuEvidence {
                    report: &rep,
                    cert_chain: &certs,
                    nonce: &short,
                    rims: &[],
                    library: None,
                },
                AT,
            )
            .unwrap_err();
        assert!(matches!(e.error, NvgpuError::NonceLength(31)));
    }

    #[test]
    fn trustee_chain_cases() {
        let v = NvgpuVerifier::new().unwrap();
        // case1: 5 certs, valid.
        assert_eq!(
            v.verify_device_chain(&read("trustee-hopper_cert_chain_case1.txt"), AT)
                .unwrap()
                .len,
            5
        );
        // case4: BROM..root (4 certs) is a valid chain, but it has no FMC leaf; the same
        // 4-cert shape without the root is completed by the pinned root:
        let c1 = split_certs(&read("trustee-hopper_cert_chain_case1.txt")).unwrap();
        let completed = verify_device_chain_with(&c1[..4], v.device_roots(), None, AT).unwrap();
        assert_eq!(completed.len, 5);
        let c4 = split_certs(&read("trustee-hopper_cert_chain_case4.txt")).unwrap();
        let raw = crate::x509::verify_chain(&c4, v.device_roots(), AT).unwrap();
        assert_eq!(raw.len, 4);
        assert!(raw.leaf_subject.contains("GSP BROM"));
        // ... and as a device chain it is one certificate short.
        let e = v
            .verify_device_chain(&read("trustee-hopper_cert_chain_case4.txt"), AT)
            .unwrap_err();
        assert!(matches!(e, NvgpuError::ChainLength(4)), "{e:?}");
        assert_eq!(e.check(), "cert_chain");
        // case2: a single certificate (the root itself).
        let e = v
            .verify_device_chain(&read("trustee-hopper_cert_chain_case2.txt"), AT)
            .unwrap_err();
        assert_eq!(e.check(), "cert_chain");
        // case3: the Provisioner ICA is missing.
        let e = v
            .verify_device_chain(&read("trustee-hopper_cert_chain_case3.txt"), AT)
            .unwrap_err();
        assert!(
            matches!(e, NvgpuError::Chain(ChainError::IssuerMismatch { index: 1, .. })),
            "{e:?}"
        );
        assert_eq!(e.check(), "cert_chain");
        // Paired with a report, case2 and case3 fail at cert_chain.
        let rep = report("trustee-hopper_coco_report1.txt");
        for c in [
            "trustee-hopper_cert_chain_case2.txt",
            "trustee-hopper_cert_chain_case3.txt",
        ] {
            assert_eq!(failed(run(&v, &rep, c, COCO_NONCE, AT)), "cert_chain", "{c}");
        }
    }

    #[test]
    fn fwid_mismatch() {
        let v = NvgpuVerifier::new().unwrap();
        // Blackwell chain with a Hopper report: valid chain, but the Blackwell leaf did not
        // sign it, so the pipeline stops at `signature`; the FWID comparison on its own
        // refuses the pair too.
        let rep = report("trustee-hopper_coco_report1.txt");
        let e = run(&v, &rep, "sdk-blackwellCertChain.txt", COCO_NONCE, AT).unwrap_err();
        assert_eq!(e.error.check(), "signature");
        let parsed = spdm::parse(&rep).unwrap();
        let bw = split_certs(&read("sdk-blackwellCertChain.txt")).unwrap();
        let (_, bw_leaf) = X509Certificate::from_der(&bw[0]).unwrap();
        assert!(matches!(
            check_fwid(parsed.opaque.fwid(), &bw_leaf),
            Err(NvgpuError::FwidMismatch { .. })
        ));
        let own = split_certs(&read("trustee-hopper_coco_certs1.txt")).unwrap();
        let (_, own_leaf) = X509Certificate::from_der(&own[0]).unwrap();
        assert!(check_fwid(parsed.opaque.fwid(), &own_leaf).unwrap());
        assert!(!check_fwid(None, &own_leaf).unwrap());
        // One FWID byte altered in the report: the signature (checked first) refuses it.
        let parsed = spdm::parse(&rep).unwrap();
        let fwid = parsed.opaque.get(spdm::field::FWID).unwrap().raw;
        let off = fwid.as_ptr() as usize - rep.as_ptr() as usize;
        let mut bad = rep.clone();
        bad[off] ^= 0x01;
        assert_eq!(
            failed(run(&v, &bad, "trustee-hopper_coco_certs1.txt", COCO_NONCE, AT)),
            "signature"
        );
        let vc = v
            .verify_device_chain(&read("trustee-hopper_coco_certs1.txt"), AT)
            .unwrap();
        assert!(!report_signature_valid(&spdm::parse(&bad).unwrap(), &vc.leaf_key));
        assert!(report_signature_valid(&parsed, &vc.leaf_key));
    }

    #[test]
    fn leaf_fwids_read_from_both_forms() {
        for (chain, want) in [
            (
                "sdk-hopperCertChain.txt",
                "faa77bfbd8678d4817df3ce941a3cb6dba3ae120dba3b2faae7cf0f19057c566d50d7b86afbf6aa91ab76821e8724f76",
            ),
            (
                "sdk-blackwellCertChain.txt",
                "d090cab1b6e6ffddca83d1781e25b3f040fa1f3c7608230cb5f41b1c1b99f5f748349e59d0ef8eb830c9bc79ccf77502",
            ),
        ] {
            let der = split_certs(&read(chain)).unwrap().remove(0);
            let (_, c) = X509Certificate::from_der(&der).unwrap();
            assert_eq!(crate::hex(leaf_fwid(&c).unwrap()), want);
            assert_eq!(leaf_ueid(&c), None);
        }
        // A non-leaf has no DICE extension.
        let der = split_certs(&read("sdk-hopperCertChain.txt")).unwrap().remove(2);
        let (_, c) = X509Certificate::from_der(&der).unwrap();
        assert_eq!(leaf_fwid(&c), Err(FwidError::Missing));
    }

    #[test]
    fn der_reader_is_bounded() {
        assert!(der::tlv(&[]).is_err());
        assert!(der::tlv(&[0x30]).is_err());
        assert!(der::tlv(&[0x30, 0x05, 1, 2]).is_err());
        assert!(der::tlv(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(der::tlv(&[0x30, 0x81, 0x05, 1, 2, 3, 4, 5]).is_err()); // non-minimal
        assert!(der::tlv(&[0x1f, 0x01, 0x00]).is_err());
        assert!(tcb_info_or_composite_fwid(&[0x30, 0x03, 0x02, 0x01, 0x01]).is_err());
        assert!(multi_tcb_info_fwid(&[0x30, 0x00]).is_err());
    }

    #[test]
    fn every_truncation_is_rejected_at_parse() {
        let v = NvgpuVerifier::new().unwrap();
        let rep = report("sdk-blackwellAttestationReport.txt");
        for n in 0..rep.len() {
            let e = run(&v, &rep[..n], "sdk-blackwellCertChain.txt", BLACKWELL_NONCE, AT).unwrap_err();
            assert_eq!(e.error.check(), "parse", "cut at {n}");
        }
    }

    #[test]
    fn wrong_pinned_root() {
        let amd = TrustAnchor::from_pem_or_der(&read("../snp-milan-ark.pem")).unwrap();
        let v = NvgpuVerifier::with_roots(amd, vec![]);
        let e = run(
            &v,
            &report("sdk-hopperAttestationReport.txt"),
            "sdk-hopperCertChain.txt",
            HOPPER_NONCE,
            AT,
        )
        .unwrap_err();
        assert_eq!(e.error.check(), "cert_chain");
        // The RIM root is not a device root either.
        let rim = TrustAnchor::from_pem_or_der(RIM_ROOT_PEM).unwrap();
        let v = NvgpuVerifier::with_roots(rim, vec![]);
        assert_eq!(
            failed(run(
                &v,
                &report("sdk-hopperAttestationReport.txt"),
                "sdk-hopperCertChain.txt",
                HOPPER_NONCE,
                AT,
            )),
            "cert_chain"
        );
    }

    #[test]
    fn the_rim_library_must_hold_the_reported_versions() {
        // The sdk-hopper report says driver 535.86.09, VBIOS 96.00.5e.00.01 on a GH100. A
        // library with the (validly signed) VBIOS RIM and a driver RIM for another version
        // has no driver RIM for this GPU: the round's `rim` check names what is missing.
        let v = NvgpuVerifier::new().unwrap();
        let rep = report("sdk-hopperAttestationReport.txt");
        let certs = read("sdk-hopperCertChain.txt");
        let nonce = hex::decode(HOPPER_NONCE).unwrap();
        let roots = TrustAnchor::from_pem_or_der(RIM_ROOT_PEM).unwrap();
        let mut lib = RimLibrary::default();
        for f in [
            "NV_GPU_DRIVER_GH100_550.144.03.xml",
            "NV_GPU_VBIOS_1010_0200_882_96005E0001_measurement_mismatch.xml",
        ] {
            lib.add(f.into(), read(&format!("rims/{f}")), &roots, AT).unwrap();
        }
        let ev = |library| NvgpuEvidence {
            report: &rep,
            cert_chain: &certs,
            nonce: &nonce,
            rims: &[],
            library,
        };
        let e = v.verify(ev(Some(&lib)), AT).unwrap_err();
        assert_eq!(e.error.check(), "rim");
        assert_eq!(names(&e.checks()).last(), Some(&"rim"));
        assert_eq!(
            e.error.to_string(),
            "no Driver RIM for GH100 535.86.09 in the RIM library"
        );
        // An empty library: the same refusal (RIMs are required once a library is set).
        let empty = RimLibrary::default();
        assert_eq!(v.verify(ev(Some(&empty)), AT).unwrap_err().error.check(), "rim");
        // Without a library the GPU is appraised as before, RIMs not compared.
        let o = v.verify(ev(None), AT).unwrap();
        assert!(o.claims.rim.is_none());
    }

    #[test]
    fn rims_go_through_the_rim_contract() {
        let v = NvgpuVerifier::new().unwrap();
        let rep = report("sdk-hopperAttestationReport.txt");
        let certs = read("sdk-hopperCertChain.txt");
        let nonce = hex::decode(HOPPER_NONCE).unwrap();
        let xml: &[u8] = b"<SoftwareIdentity/>";
        let e = v
            .verify(
                NvgpuEvidence {
                    report: &rep,
                    cert_chain: &certs,
                    nonce: &nonce,
                    rims: &[xml],
                    library: None,
                },
                AT,
            )
            .unwrap_err();
        assert_eq!(e.error.check(), "rim");
        assert_eq!(names(&e.checks()).last(), Some(&"rim"));
        assert!(versions_match("96.00.5E.00.01", "96.00.5e.00.01"));
        assert!(!versions_match("550.144.03", "535.86.09"));
    }
}
