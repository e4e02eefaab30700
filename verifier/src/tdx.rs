//! Intel TDX quotes (DCAP v4 and v5) with their collateral, as Intel PCS serves it.
//!
//! Checks, in order (stable names):
//! 1. `parse`: [`custody_formats::tdx`] (lengths, types, only zero padding after the
//!    signature data).
//! 2. `cert_chain` / `cert_validity`: the PCK chain in the quote to the pinned Intel SGX
//!    Root CA; the PCK certificate's SGX extension read (FMSPC, PCE-ID, TCB components).
//! 3. `revocation`: the root CA CRL (signed by the root) and the PCK CRL (signed by the
//!    PCK's issuing CA), both current at the appraisal time; neither lists the chain.
//! 4. `qe_report_signature`: the QE report, signed by the PCK key (ECDSA P-256).
//! 5. `qe_report_data`: the QE report data is SHA-256(attestation key || QE auth data)
//!    followed by 32 zero bytes: the QE vouches for the attestation key.
//! 6. `quote_signature`: header and TD report, signed by the attestation key.
//! 7. `qe_identity`: Intel's QE identity (signed by the TCB signing chain to the root,
//!    current) matches the QE report (MRSIGNER, ISVPRODID, masked MISCSELECT and
//!    attributes); its TCB level from the QE's ISVSVN.
//! 8. `tcb_info`: Intel's TCB info (signed the same way, current) is TDX's and is for the
//!    PCK's FMSPC and PCE-ID.
//! 9. `tcb`: the first TCB level the PCK's SGX components, PCESVN and the TD's
//!    TEE_TCB_SVN all reach, the TDX module's identity (MRSIGNER_SEAM, SEAM attributes,
//!    its own TCB level), the QE's status folded in, as Intel's QVL does. No level, or
//!    `Revoked`, fails here; every other status (`UpToDate`, `SWHardeningNeeded`,
//!    `ConfigurationNeeded`, `OutOfDate`, ...) is a claim, with the advisory ids.
//! 10. `report_data`: only when an expected value is given.
//!
//! Warm path: a verifier keeps what it proved about exact bytes, as the NVIDIA verifier
//! does for device chains: validated PCK and TCB signing chains, CRL signatures by their
//! issuer, and TCB info and QE identity documents whose chain, signer and signature
//! verified. A hit still re-checks every window against the appraisal time (and falls
//! back to the full check, for its exact error, when one does not hold); every check
//! that depends on the quote runs each time. What remains per quote: the QE report and
//! quote signatures, the floor of two P-256 verifies.

use crate::cache::{cache_key, BoundedCache};
use crate::check::{CheckLog, EvidenceVerifier, FailedCheck, Outcome, UnixTime};
use crate::crl::Crl;
use crate::x509::{split_certs, ChainCache, ChainError, TrustAnchor};
use aws_lc_rs::digest;
use aws_lc_rs::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_FIXED};
use custody_formats::tdx::{TdxParseError, TdxQuote};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use thiserror::Error;
use x509_parser::prelude::*;

/// Intel SGX Root CA (DER), pinned: SHA-256 44:A0:19:6B:...:74:D3.
pub const INTEL_SGX_ROOT_DER: &[u8] = include_bytes!("../roots/intel/intel-sgx-root-ca.der");

const OID_SGX_EXT: &str = "1.2.840.113741.1.13.1";

#[derive(Debug, Error)]
pub enum TdxError {
    #[error(transparent)]
    Parse(#[from] TdxParseError),
    #[error(transparent)]
    Chain(#[from] ChainError),
    #[error("PCK certificate: {0}")]
    Pck(String),
    #[error("{0}")]
    Revocation(String),
    #[error("the QE report signature does not verify under the PCK key")]
    QeReportSignature,
    #[error("the QE report data does not commit to the attestation key and QE auth data")]
    QeReportData,
    #[error("the quote signature does not verify under the attestation key")]
    QuoteSignature,
    #[error("QE identity: {0}")]
    QeIdentity(String),
    #[error("TCB info: {0}")]
    TcbInfo(String),
    #[error("TCB: {0}")]
    Tcb(String),
    #[error("report_data differs from the expected value (expected {expected}, got {got})")]
    ReportData { expected: String, got: String },
}

impl FailedCheck for TdxError {
    fn check(&self) -> &'static str {
        match self {
            Self::Parse(_) => "parse",
            Self::Chain(e) => e.check(),
            Self::Pck(_) => "cert_chain",
            Self::Revocation(_) => "revocation",
            Self::QeReportSignature => "qe_report_signature",
            Self::QeReportData => "qe_report_data",
            Self::QuoteSignature => "quote_signature",
            Self::QeIdentity(_) => "qe_identity",
            Self::TcbInfo(_) => "tcb_info",
            Self::Tcb(_) => "tcb",
            Self::ReportData { .. } => "report_data",
        }
    }
}

/// The six files of an Intel PCS collateral directory, in [`TdxCollateral::from_files`]'s
/// order.
pub const COLLATERAL_FILES: [&str; 6] = [
    "tcb_info.pcs.json",
    "tcb_info_issuer_chain.pem",
    "qe_identity.pcs.json",
    "qe_identity_issuer_chain.pem",
    "pck_crl.der",
    "root_ca_crl.der",
];

/// Collateral as Intel PCS v4 serves it (bytes of each file).
#[derive(Debug, Clone, Copy)]
pub struct TdxCollateral<'a> {
    /// `{"tcbInfo": ..., "signature": hex}`.
    pub tcb_info: &'a [u8],
    /// Its issuer chain (TCB signing certificate, root), PEM.
    pub tcb_info_chain: &'a [u8],
    /// `{"enclaveIdentity": ..., "signature": hex}`.
    pub qe_identity: &'a [u8],
    pub qe_identity_chain: &'a [u8],
    /// The PCK CRL (DER or PEM) and the root CA CRL.
    pub pck_crl: &'a [u8],
    pub root_ca_crl: &'a [u8],
}

impl<'a> TdxCollateral<'a> {
    /// From the bytes of the [`COLLATERAL_FILES`], in that order.
    pub fn from_files(files: &'a [Vec<u8>; 6]) -> Self {
        let [tcb_info, tcb_info_chain, qe_identity, qe_identity_chain, pck_crl, root_ca_crl] = files;
        Self {
            tcb_info,
            tcb_info_chain,
            qe_identity,
            qe_identity_chain,
            pck_crl,
            root_ca_crl,
        }
    }
}

/// When a collateral set can serve an appraisal: the latest issue date and the earliest
/// next update of its four dated items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CollateralWindow {
    pub from: i64,
    pub until: i64,
}

impl TdxCollateral<'_> {
    /// The FMSPC the TCB info is for (unverified here, as [`Self::window`]): which
    /// platforms' quotes this collateral serves.
    pub fn fmspc(&self) -> Result<[u8; 6], String> {
        #[derive(Deserialize)]
        struct Fmspc {
            fmspc: String,
        }
        let s: Signed<'_> = serde_json::from_slice(self.tcb_info)
            .map_err(|e| format!("TCB info: not a PCS response: {e}"))?;
        let f: Fmspc = serde_json::from_str(s.body.get()).map_err(|e| format!("TCB info: {e}"))?;
        hex::decode(&f.fmspc)
            .ok()
            .and_then(|b| <[u8; 6]>::try_from(b.as_slice()).ok())
            .ok_or_else(|| format!("TCB info: fmspc {:?} is not 12 hex digits", f.fmspc))
    }

    /// The window this collateral is current in, read from the TCB info, the QE identity
    /// and the two CRLs. Nothing is verified here (the signatures are checked with every
    /// quote); it tells a verifier whether *its own* collateral is stale, so that a round
    /// it cannot appraise for that reason is not blamed on the node.
    pub fn window(&self) -> Result<CollateralWindow, String> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Dates {
            issue_date: String,
            next_update: String,
        }
        let mut w = CollateralWindow {
            from: i64::MIN,
            until: i64::MAX,
        };
        for (name, json) in [("TCB info", self.tcb_info), ("QE identity", self.qe_identity)] {
            let s: Signed<'_> =
                serde_json::from_slice(json).map_err(|e| format!("{name}: not a PCS response: {e}"))?;
            let d: Dates = serde_json::from_str(s.body.get()).map_err(|e| format!("{name}: {e}"))?;
            let from = unix(&d.issue_date).ok_or_else(|| format!("{name}: issueDate"))?;
            let until = unix(&d.next_update).ok_or_else(|| format!("{name}: nextUpdate"))?;
            w.from = w.from.max(from);
            w.until = w.until.min(until);
        }
        for (name, der) in [("PCK CRL", self.pck_crl), ("root CA CRL", self.root_ca_crl)] {
            let crl = Crl::parse(der).map_err(|e| format!("{name}: {e}"))?;
            w.from = w.from.max(crl.this_update);
            if let Some(n) = crl.next_update {
                w.until = w.until.min(n);
            }
        }
        Ok(w)
    }
}

/// One quote and its collateral.
#[derive(Debug, Clone, Copy)]
pub struct TdxEvidence<'a> {
    pub quote: &'a [u8],
    pub collateral: TdxCollateral<'a>,
    /// The 64 bytes REPORT_DATA must hold.
    pub expected_report_data: Option<&'a [u8]>,
}

/// What a verified quote says.
#[derive(Debug, Clone, Serialize)]
pub struct TdxClaims {
    pub version: u16,
    /// `UpToDate`, `SWHardeningNeeded`, `ConfigurationNeeded`,
    /// `ConfigurationAndSWHardeningNeeded`, `OutOfDate`, `OutOfDateConfigurationNeeded`.
    pub tcb_status: String,
    pub advisory_ids: Vec<String>,
    /// The matching TCB level's date.
    pub tcb_date: String,
    pub qe_tcb_status: String,
    pub fmspc: String,
    /// The PCK certificate's PPID (hex): the platform's identity, which a registry binds
    /// to a site (`tdx_ppid`).
    pub ppid: String,
    pub tee_tcb_svn: String,
    pub mr_seam: String,
    pub mr_td: String,
    pub mr_config_id: String,
    pub mr_owner: String,
    pub mr_owner_config: String,
    pub rtmr: [String; 4],
    pub td_attributes: String,
    /// TD attribute bit 0: the TD is debuggable.
    pub debug: bool,
    pub xfam: String,
    pub report_data: String,
}

/// Verifies TDX quotes against the pinned Intel SGX Root CA. Clones share one warm
/// cache.
#[derive(Debug, Clone)]
pub struct TdxVerifier {
    root: TrustAnchor,
    warm: Arc<Warm>,
}

/// Platforms (PCK chains) and collateral generations a verifier remembers; each entry is
/// a few hundred bytes (a collateral document's body: a few KiB).
const WARM_CAPACITY: usize = 256;

/// What this verifier proved about exact bytes (see the module's "Warm path").
#[derive(Debug)]
struct Warm {
    /// PCK chains and TCB signing chains.
    chains: ChainCache,
    /// CRLs, parsed, whose issuer and signature verified under an anchor (key over the
    /// CRL's bytes and the anchor's certificate).
    crls: BoundedCache<Arc<Crl>>,
    /// Signed collateral documents (bytes, issuer chain, root), parsed, with their windows
    /// and their issuer chains' windows.
    tcb_infos: BoundedCache<Arc<SignedDoc<TcbInfo>>>,
    qe_identities: BoundedCache<Arc<SignedDoc<EnclaveIdentity>>>,
}

impl Warm {
    fn new() -> Self {
        Self {
            chains: ChainCache::new(WARM_CAPACITY),
            crls: BoundedCache::new(WARM_CAPACITY),
            tcb_infos: BoundedCache::new(WARM_CAPACITY),
            qe_identities: BoundedCache::new(WARM_CAPACITY),
        }
    }
}

#[derive(Debug)]
struct SignedDoc<T> {
    doc: T,
    from: i64,
    until: i64,
    chain_from: i64,
    chain_until: i64,
}

impl TdxVerifier {
    pub fn new() -> Result<Self, ChainError> {
        Self::with_root(INTEL_SGX_ROOT_DER)
    }

    /// Another root (tests, private deployments): DER or PEM.
    pub fn with_root(root: &[u8]) -> Result<Self, ChainError> {
        let root = TrustAnchor::from_pem_or_der(root)?
            .into_iter()
            .next()
            .ok_or(ChainError::Empty)?;
        Ok(Self {
            root,
            warm: Arc::new(Warm::new()),
        })
    }

    /// The same root with nothing remembered: every check from scratch (the cold bench).
    pub fn cold(&self) -> Self {
        Self {
            root: self.root.clone(),
            warm: Arc::new(Warm::new()),
        }
    }

    /// The CRL in `der`, parsed, issued by and signed by the anchor whose certificate is
    /// `by_der` (`by` builds it, on a miss only), through the warm cache. Freshness and
    /// listings are the caller's, at each appraisal.
    fn crl(
        &self,
        name: &str,
        der: &[u8],
        by_der: &[u8],
        by: impl FnOnce() -> Result<TrustAnchor, String>,
    ) -> Result<Arc<Crl>, String> {
        let key = cache_key([der, by_der]);
        if let Some(crl) = self.warm.crls.get(&key) {
            return Ok(crl);
        }
        let crl = Crl::parse(der).map_err(|e| format!("{name}: {e}"))?;
        let by = by()?;
        if !crl.issued_by(&by) {
            return Err(format!(
                "the {name} is issued by {}, not {}",
                crl.issuer(),
                by.name()
            ));
        }
        crl.verify_signature(&by).map_err(|e| e.to_string())?;
        let crl = Arc::new(crl);
        self.warm.crls.insert(key, crl.clone());
        Ok(crl)
    }

    /// [`signed_body`], parsed, through a warm cache: a document seen before, inside its
    /// window and its chain's at `at`, is neither verified nor parsed again.
    fn signed_doc<T: serde::de::DeserializeOwned>(
        &self,
        cache: &BoundedCache<Arc<SignedDoc<T>>>,
        json: &[u8],
        chain_pem: &[u8],
        at: UnixTime,
    ) -> Result<Arc<SignedDoc<T>>, String> {
        let key = cache_key([json, chain_pem, self.root.der()]);
        if let Some(d) = cache.get(&key) {
            let inside = |a: i64, b: i64| a <= at.0 && at.0 <= b;
            if inside(d.from, d.until) && inside(d.chain_from, d.chain_until) {
                return Ok(d);
            }
        }
        let (body, from, until, chain) = signed_body(json, chain_pem, &self.root, &self.warm.chains, at)?;
        let d = Arc::new(SignedDoc {
            doc: serde_json::from_str(body).map_err(|e| e.to_string())?,
            from,
            until,
            chain_from: chain.valid_from,
            chain_until: chain.valid_until,
        });
        cache.insert(key, d.clone());
        Ok(d)
    }
}

// ---------------------------------------------------------------------------------------
// The PCK certificate's SGX extension: a DER walk, bounded by the extension's length.

use crate::der::tlvs;

fn oid_string(b: &[u8]) -> String {
    let mut parts: Vec<u64> = Vec::new();
    if let Some((&first, rest)) = b.split_first() {
        parts.push(u64::from(first / 40));
        parts.push(u64::from(first % 40));
        let mut v = 0u64;
        for &c in rest {
            v = (v << 7) | u64::from(c & 0x7f);
            if c & 0x80 == 0 {
                parts.push(v);
                v = 0;
            }
        }
    }
    parts.iter().map(u64::to_string).collect::<Vec<_>>().join(".")
}

/// Every `SEQUENCE { OID, value }` at any depth: OID -> (tag, content).
fn oid_values<'a>(b: &'a [u8], out: &mut Vec<(String, u8, &'a [u8])>, depth: usize) -> Result<(), String> {
    if depth > 8 {
        return Err("too deep".into());
    }
    for (tag, v) in tlvs(b)? {
        if tag != 0x30 {
            continue;
        }
        let items = tlvs(v)?;
        match items.as_slice() {
            [(0x06, oid), (t, val)] => {
                out.push((oid_string(oid), *t, val));
                if *t == 0x30 {
                    oid_values(val, out, depth + 1)?;
                }
            }
            _ => oid_values(v, out, depth + 1)?,
        }
    }
    Ok(())
}

/// What the PCK certificate says about the platform.
#[derive(Debug, Clone)]
struct PckTcb {
    /// The platform provisioning id: one per platform, what a registry binds to a site.
    ppid: [u8; 16],
    fmspc: [u8; 6],
    pce_id: [u8; 2],
    components: [u32; 16],
    pcesvn: u32,
}

fn pck_tcb(leaf: &X509Certificate<'_>) -> Result<PckTcb, TdxError> {
    let ext = leaf
        .extensions()
        .iter()
        .find(|e| e.oid.to_id_string() == OID_SGX_EXT)
        .ok_or_else(|| TdxError::Pck("no SGX extension".into()))?;
    // The extension's value is itself `SEQUENCE { SEQUENCE { OID, value }, ... }`.
    let mut vals = Vec::new();
    let wrapped = [&[0x30u8][..], &der_len(ext.value.len()), ext.value].concat();
    oid_values(&wrapped, &mut vals, 0).map_err(TdxError::Pck)?;
    let get = |oid: &str| {
        vals.iter()
            .find(|(o, _, _)| o == oid)
            .map(|(_, t, v)| (*t, *v))
            .ok_or_else(|| TdxError::Pck(format!("SGX extension lacks {oid}")))
    };
    let int = |oid: &str| -> Result<u32, TdxError> {
        let (t, v) = get(oid)?;
        if t != 0x02 || v.len() > 5 {
            return Err(TdxError::Pck(format!("{oid} is not a small INTEGER")));
        }
        Ok(v.iter().fold(0u32, |a, x| (a << 8) | u32::from(*x)))
    };
    let octets = |oid: &str, n: usize| -> Result<Vec<u8>, TdxError> {
        let (t, v) = get(oid)?;
        if t != 0x04 || v.len() != n {
            return Err(TdxError::Pck(format!("{oid} is not {n} bytes")));
        }
        Ok(v.to_vec())
    };
    let mut components = [0u32; 16];
    for (i, c) in components.iter_mut().enumerate() {
        *c = int(&format!("{OID_SGX_EXT}.2.{}", i + 1))?;
    }
    let fmspc = octets(&format!("{OID_SGX_EXT}.4"), 6)?;
    let ppid = octets(&format!("{OID_SGX_EXT}.1"), 16)?;
    let pce_id = octets(&format!("{OID_SGX_EXT}.3"), 2)?;
    Ok(PckTcb {
        ppid: ppid.try_into().map_err(|_| TdxError::Pck("PPID".into()))?,
        fmspc: fmspc.try_into().map_err(|_| TdxError::Pck("FMSPC".into()))?,
        pce_id: pce_id.try_into().map_err(|_| TdxError::Pck("PCE-ID".into()))?,
        components,
        pcesvn: int(&format!("{OID_SGX_EXT}.2.17"))?,
    })
}

fn der_len(n: usize) -> Vec<u8> {
    match n {
        0..=0x7f => vec![n as u8],
        0x80..=0xff => vec![0x81, n as u8],
        _ => vec![0x82, (n >> 8) as u8, n as u8],
    }
}

// ---------------------------------------------------------------------------------------
// Intel's signed JSON collateral.

#[derive(Debug, Deserialize)]
struct Signed<'a> {
    #[serde(borrow, alias = "tcbInfo", alias = "enclaveIdentity")]
    body: &'a serde_json::value::RawValue,
    signature: String,
}

#[derive(Debug, Deserialize)]
struct Svn {
    svn: u32,
}

#[derive(Debug, Deserialize)]
struct LevelTcb {
    sgxtcbcomponents: Vec<Svn>,
    pcesvn: u32,
    #[serde(default)]
    tdxtcbcomponents: Vec<Svn>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TcbLevel {
    tcb: LevelTcb,
    tcb_date: String,
    tcb_status: String,
    #[serde(default, rename = "advisoryIDs")]
    advisory_ids: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct IsvTcb {
    isvsvn: u32,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IsvLevel {
    tcb: IsvTcb,
    tcb_status: String,
    #[serde(default, rename = "advisoryIDs")]
    advisory_ids: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ModuleIdentity {
    #[serde(default)]
    id: String,
    mrsigner: String,
    attributes: String,
    attributes_mask: String,
    #[serde(default)]
    tcb_levels: Vec<IsvLevel>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TcbInfo {
    id: String,
    version: u32,
    issue_date: String,
    next_update: String,
    fmspc: String,
    pce_id: String,
    tdx_module: Option<ModuleIdentity>,
    #[serde(default)]
    tdx_module_identities: Vec<ModuleIdentity>,
    tcb_levels: Vec<TcbLevel>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EnclaveIdentity {
    id: String,
    miscselect: String,
    miscselect_mask: String,
    attributes: String,
    attributes_mask: String,
    mrsigner: String,
    isvprodid: u16,
    tcb_levels: Vec<IsvLevel>,
}

/// `YYYY-MM-DDTHH:MM:SSZ` to Unix seconds.
fn unix(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 20 || b.get(4) != Some(&b'-') || b.get(10) != Some(&b'T') || b.get(19) != Some(&b'Z') {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (n(0..4)?, n(5..7)?, n(8..10)?);
    let (hh, mm, ss) = (n(11..13)?, n(14..16)?, n(17..19)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    let (y2, m2) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * m2 + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// The subject CN of the only certificate whose key signs TCB info and QE identities.
const TCB_SIGNING_CN: &str = "Intel SGX TCB Signing";

/// Is `der` Intel's TCB signing certificate, as Intel's QVL requires: its CN, an end
/// entity (not a CA) and not a PCK certificate (no SGX extension). Every PCK certificate
/// and both PCK CAs chain to the same root, so without this anyone holding one
/// platform's PCK key could sign TCB info calling any platform up to date.
fn is_tcb_signer(der: &[u8]) -> Result<(), String> {
    let (_, c) = X509Certificate::from_der(der).map_err(|e| format!("issuer chain: {e}"))?;
    let cn = c
        .subject()
        .iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok())
        .unwrap_or_default();
    let ca = c.basic_constraints().ok().flatten().is_some_and(|b| b.value.ca);
    let pck = c.extensions().iter().any(|e| e.oid.to_id_string() == OID_SGX_EXT);
    if cn != TCB_SIGNING_CN || ca || pck {
        return Err(format!(
            "signed by {:?}, not the TCB signing certificate ({TCB_SIGNING_CN:?}, not a CA, not a PCK)",
            c.subject().to_string()
        ));
    }
    Ok(())
}

/// Check a signed collateral document: its chain to `root`, that the chain's leaf is the
/// TCB signing certificate, its signature over the exact body bytes, its window around
/// `at`. Returns the body text.
fn signed_body<'a>(
    json: &'a [u8],
    chain_pem: &[u8],
    root: &TrustAnchor,
    chains: &ChainCache,
    at: UnixTime,
) -> Result<(&'a str, i64, i64, crate::x509::ValidatedChain), String> {
    let s: Signed<'_> = serde_json::from_slice(json).map_err(|e| format!("not a PCS response: {e}"))?;
    let chain = split_certs(chain_pem).map_err(|e| format!("issuer chain: {e}"))?;
    let v = chains
        .verify(&chain, std::slice::from_ref(root), at)
        .map_err(|e| format!("issuer chain: {e}"))?;
    is_tcb_signer(chain.first().map(Vec::as_slice).unwrap_or_default())?;
    let sig = hex::decode(&s.signature).map_err(|_| "signature is not hex".to_owned())?;
    let body = s.body.get();
    if !v
        .leaf_key
        .verify_with_fixed(&ECDSA_P256_SHA256_FIXED, body.as_bytes(), &sig)
    {
        return Err("signature does not verify under the TCB signing key".into());
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Window {
        issue_date: String,
        next_update: String,
    }
    let w: Window = serde_json::from_str(body).map_err(|e| e.to_string())?;
    let (from, until) = (
        unix(&w.issue_date).ok_or("issueDate")?,
        unix(&w.next_update).ok_or("nextUpdate")?,
    );
    if at.0 < from || at.0 > until {
        return Err(format!(
            "valid {} .. {}, not at the appraisal time {}",
            w.issue_date, w.next_update, at.0
        ));
    }
    Ok((body, from, until, v))
}

fn hexeq(bytes: &[u8], hex_text: &str) -> bool {
    hex::encode(bytes).eq_ignore_ascii_case(hex_text)
}

fn masked_eq(value: &[u8], mask_hex: &str, want_hex: &str) -> bool {
    match (hex::decode(mask_hex), hex::decode(want_hex)) {
        (Ok(m), Ok(w)) if m.len() == value.len() && w.len() == value.len() => {
            value.iter().zip(&m).map(|(v, m)| v & m).eq(w.iter().copied())
        }
        _ => false,
    }
}

/// Intel QVL's folding of a component's `OutOfDate` into the platform's status.
fn out_of_date(status: &str) -> String {
    match status {
        "UpToDate" | "SWHardeningNeeded" => "OutOfDate",
        "ConfigurationNeeded" | "ConfigurationAndSWHardeningNeeded" => "OutOfDateConfigurationNeeded",
        s => s,
    }
    .to_owned()
}

impl TdxVerifier {
    /// The FMSPC the quote's PCK certificate claims, read without verifying anything: which
    /// collateral set to try first. `verify` then proves it (chain, and TCB info's FMSPC
    /// must equal the PCK's), so a false claim fails there, counted against the node.
    pub fn claimed_fmspc(quote: &[u8]) -> Result<[u8; 6], TdxError> {
        leaf_fmspc(&split_certs(TdxQuote::parse(quote)?.pck_chain_pem)?)
    }

    /// The FMSPC of the quote's PCK certificate, once that certificate's chain verifies to
    /// the root at `at`: which platform model's collateral the quote needs. Only a genuine
    /// PCK certificate can name an FMSPC a verifier has no collateral for.
    pub fn pck_fmspc(&self, quote: &[u8], at: UnixTime) -> Result<[u8; 6], TdxError> {
        let chain = split_certs(TdxQuote::parse(quote)?.pck_chain_pem)?;
        self.warm
            .chains
            .verify(&chain, std::slice::from_ref(&self.root), at)?;
        leaf_fmspc(&chain)
    }
}

/// The FMSPC in the SGX extension of a PCK chain's first certificate.
fn leaf_fmspc(chain: &[Vec<u8>]) -> Result<[u8; 6], TdxError> {
    let leaf_der = chain.first().map(Vec::as_slice).unwrap_or_default();
    let (_, leaf) = X509Certificate::from_der(leaf_der).map_err(|e| TdxError::Pck(e.to_string()))?;
    Ok(pck_tcb(&leaf)?.fmspc)
}

impl EvidenceVerifier for TdxVerifier {
    type Evidence<'a> = TdxEvidence<'a>;
    type Claims = TdxClaims;
    type Error = TdxError;
    const KIND: &'static str = "tdx";

    fn verify(&self, ev: TdxEvidence<'_>, at: UnixTime) -> Outcome<TdxClaims, TdxError> {
        let mut log = CheckLog::new();
        macro_rules! tri {
            ($e:expr) => {
                match $e {
                    Ok(v) => v,
                    Err(e) => return Err(log.reject(TdxError::from(e))),
                }
            };
        }
        // parse
        let q = tri!(TdxQuote::parse(ev.quote));
        log.pass(
            "parse",
            format!(
                "quote v{}, TD report {}, {} zero byte(s) of padding",
                q.version,
                if q.body.tee_tcb_svn_2.is_some() {
                    "1.5"
                } else {
                    "1.0"
                },
                q.trailing_zeros
            ),
        );

        // cert_chain / cert_validity
        let chain = tri!(split_certs(q.pck_chain_pem));
        let v = tri!(self
            .warm
            .chains
            .verify(&chain, std::slice::from_ref(&self.root), at));
        let leaf_der = chain.first().map(Vec::as_slice).unwrap_or_default();
        let leaf = match X509Certificate::from_der(leaf_der) {
            Ok((_, c)) => c,
            Err(e) => return Err(log.reject(TdxError::Pck(e.to_string()))),
        };
        let pck = tri!(pck_tcb(&leaf));
        log.pass(
            "cert_chain",
            format!(
                "{} certificates to the Intel SGX Root CA{}; FMSPC {}, PCESVN {}",
                v.len,
                if v.cached { " (verified before)" } else { "" },
                hex::encode_upper(pck.fmspc),
                pck.pcesvn
            ),
        );
        log.pass(
            "cert_validity",
            format!(
                "appraisal time {} within [{}, {}]",
                at.0, v.valid_from, v.valid_until
            ),
        );

        // revocation
        let c = ev.collateral;
        let revocation = (|| -> Result<String, String> {
            let root_crl = self.crl("root CA CRL", c.root_ca_crl, self.root.der(), || {
                Ok(self.root.clone())
            })?;
            let issuer_der = chain.get(1).ok_or("the PCK chain has no issuing CA")?;
            let pck_crl = self.crl("PCK CRL", c.pck_crl, issuer_der, || {
                TrustAnchor::from_der(issuer_der.clone()).map_err(|e| e.to_string())
            })?;
            for (name, crl) in [("root CA CRL", &root_crl), ("PCK CRL", &pck_crl)] {
                let fresh = crl.this_update <= at.0 && crl.next_update.is_none_or(|n| at.0 <= n);
                if !fresh {
                    return Err(format!(
                        "the {name} is valid {} .. {:?}, not at the appraisal time {}",
                        crl.this_update, crl.next_update, at.0
                    ));
                }
            }
            if let Some(d) = pck_crl.revoked(leaf.raw_serial()) {
                return Err(format!("the PCK certificate was revoked at {d}"));
            }
            let issuer_serial = X509Certificate::from_der(issuer_der)
                .map(|(_, c)| c.raw_serial().to_vec())
                .unwrap_or_default();
            if let Some(d) = root_crl.revoked(&issuer_serial) {
                return Err(format!("the PCK's issuing CA was revoked at {d}"));
            }
            Ok(format!(
                "root CA CRL and PCK CRL signed and current; the chain is not listed ({} PCK revocations)",
                pck_crl.len()
            ))
        })();
        match revocation {
            Ok(d) => log.pass("revocation", d),
            Err(e) => return Err(log.reject(TdxError::Revocation(e))),
        }

        // qe_report_signature
        if !v
            .leaf_key
            .verify_with_fixed(&ECDSA_P256_SHA256_FIXED, q.qe_report.raw, q.qe_report_signature)
        {
            return Err(log.reject(TdxError::QeReportSignature));
        }
        log.pass("qe_report_signature", "ECDSA P-256 by the PCK key");

        // qe_report_data
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(q.attestation_key);
        ctx.update(q.qe_auth_data);
        let want = ctx.finish();
        let (head, tail) = q.qe_report.report_data.split_at(32);
        if head != want.as_ref() || tail.iter().any(|b| *b != 0) {
            return Err(log.reject(TdxError::QeReportData));
        }
        log.pass(
            "qe_report_data",
            "SHA-256(attestation key || QE auth data), then zeros",
        );

        // quote_signature
        let ak = [&[0x04u8][..], q.attestation_key].concat();
        if UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &ak)
            .verify(q.signed, q.signature)
            .is_err()
        {
            return Err(log.reject(TdxError::QuoteSignature));
        }
        log.pass(
            "quote_signature",
            format!("ECDSA P-256 over {} bytes by the attestation key", q.signed.len()),
        );

        // qe_identity
        let qe = (|| -> Result<(String, Vec<String>, String), String> {
            let doc = self.signed_doc(&self.warm.qe_identities, c.qe_identity, c.qe_identity_chain, at)?;
            let id = &doc.doc;
            if id.id != "TD_QE" {
                return Err(format!("identity of {:?}, want TD_QE", id.id));
            }
            let r = &q.qe_report;
            if !hexeq(r.mr_signer, &id.mrsigner) {
                return Err("the QE's MRSIGNER is not Intel's".into());
            }
            if r.isv_prod_id != id.isvprodid {
                return Err(format!("ISVPRODID {}, want {}", r.isv_prod_id, id.isvprodid));
            }
            if !masked_eq(&r.misc_select.to_le_bytes(), &id.miscselect_mask, &id.miscselect)
                && !masked_eq(&r.misc_select.to_be_bytes(), &id.miscselect_mask, &id.miscselect)
            {
                return Err("MISCSELECT differs under its mask".into());
            }
            if !masked_eq(&r.attributes, &id.attributes_mask, &id.attributes) {
                return Err("attributes differ under their mask".into());
            }
            let level = id
                .tcb_levels
                .iter()
                .find(|l| u32::from(r.isv_svn) >= l.tcb.isvsvn)
                .map_or(("NotSupported".to_owned(), Vec::new()), |l| {
                    (l.tcb_status.clone(), l.advisory_ids.clone())
                });
            Ok((level.0, level.1, format!("QE ISVSVN {}", r.isv_svn)))
        })();
        let (qe_status, qe_advisories) = match qe {
            Ok((s, a, d)) => {
                log.pass("qe_identity", format!("signed, current, matching; {d}: {s}"));
                (s, a)
            }
            Err(e) => return Err(log.reject(TdxError::QeIdentity(e))),
        };

        // tcb_info
        let doc = (|| -> Result<Arc<SignedDoc<TcbInfo>>, String> {
            let doc = self.signed_doc(&self.warm.tcb_infos, c.tcb_info, c.tcb_info_chain, at)?;
            let info = &doc.doc;
            if info.id != "TDX" || info.version < 3 {
                return Err(format!(
                    "{} version {}, want TDX version 3",
                    info.id, info.version
                ));
            }
            if !hexeq(&pck.fmspc, &info.fmspc) {
                return Err(format!(
                    "for FMSPC {}, the PCK's is {}",
                    info.fmspc,
                    hex::encode_upper(pck.fmspc)
                ));
            }
            if !hexeq(&pck.pce_id, &info.pce_id) {
                return Err(format!(
                    "for PCE-ID {}, the PCK's is {}",
                    info.pce_id,
                    hex::encode(pck.pce_id)
                ));
            }
            Ok(doc)
        })();
        let doc = match doc {
            Ok(d) => {
                let i = &d.doc;
                log.pass(
                    "tcb_info",
                    format!(
                        "signed, current ({} .. {}), FMSPC {}",
                        i.issue_date, i.next_update, i.fmspc
                    ),
                );
                d
            }
            Err(e) => return Err(log.reject(TdxError::TcbInfo(e))),
        };
        let info = &doc.doc;

        // tcb
        let svn = q.body.tee_tcb_svn;
        let module_version = svn.get(1).copied().unwrap_or_default();
        let start = if module_version > 0 { 2 } else { 0 };
        let level = info.tcb_levels.iter().find(|l| {
            let sgx = l.tcb.sgxtcbcomponents.len() == 16
                && l.tcb
                    .sgxtcbcomponents
                    .iter()
                    .zip(pck.components)
                    .all(|(c, p)| p >= c.svn)
                && pck.pcesvn >= l.tcb.pcesvn;
            let tdx = l.tcb.tdxtcbcomponents.len() == 16
                && (start..16).all(|i| {
                    let want = l.tcb.tdxtcbcomponents.get(i).map_or(u32::MAX, |c| c.svn);
                    svn.get(i).is_some_and(|s| u32::from(*s) >= want)
                });
            sgx && tdx
        });
        let Some(level) = level else {
            return Err(log.reject(TdxError::Tcb(format!(
                "no TCB level of FMSPC {} is reached by the PCK's components {:?} / PCESVN {} and TEE_TCB_SVN {}",
                info.fmspc,
                pck.components,
                pck.pcesvn,
                hex::encode(svn)
            ))));
        };
        let mut status = level.tcb_status.clone();
        let mut advisories: Vec<String> = level.advisory_ids.clone();
        // The TDX module: its identity and, for module versions > 0, its own TCB level.
        let module = if module_version == 0 {
            info.tdx_module.as_ref().map(|m| (m, None))
        } else {
            let want = format!("TDX_{module_version:02X}");
            info.tdx_module_identities
                .iter()
                .find(|m| m.id.eq_ignore_ascii_case(&want))
                .map(|m| {
                    let l = m
                        .tcb_levels
                        .iter()
                        .find(|l| u32::from(svn.first().copied().unwrap_or_default()) >= l.tcb.isvsvn);
                    (m, Some(l))
                })
        };
        let Some((module, module_level)) = module else {
            return Err(log.reject(TdxError::Tcb(format!(
                "the TCB info has no identity for TDX module version {module_version}"
            ))));
        };
        if !hexeq(q.body.mr_signer_seam, &module.mrsigner)
            || !masked_eq(
                &q.body.seam_attributes,
                &module.attributes_mask,
                &module.attributes,
            )
        {
            return Err(log.reject(TdxError::Tcb(
                "the TDX module's MRSIGNER_SEAM or SEAM attributes are not the TCB info's".into(),
            )));
        }
        match module_level {
            Some(None) => {
                return Err(log.reject(TdxError::Tcb(
                    "the TDX module's ISVSVN reaches none of its TCB levels".into(),
                )))
            }
            Some(Some(l)) => {
                advisories.extend(l.advisory_ids.iter().cloned());
                match l.tcb_status.as_str() {
                    "OutOfDate" => status = out_of_date(&status),
                    "Revoked" => status = "Revoked".into(),
                    _ => {}
                }
            }
            None => {}
        }
        match qe_status.as_str() {
            "OutOfDate" => {
                advisories.extend(qe_advisories);
                status = out_of_date(&status);
            }
            "Revoked" => status = "Revoked".into(),
            "NotSupported" => status = "NotSupported".into(),
            _ => {}
        }
        advisories.sort();
        advisories.dedup();
        if status == "Revoked" || status == "NotSupported" {
            return Err(log.reject(TdxError::Tcb(format!(
                "TCB status {status} (level {}, advisories {advisories:?})",
                level.tcb_date
            ))));
        }
        log.pass(
            "tcb",
            format!("level {}: {status}, advisories {advisories:?}", level.tcb_date),
        );

        // report_data
        if let Some(want) = ev.expected_report_data {
            if want != q.body.report_data {
                return Err(log.reject(TdxError::ReportData {
                    expected: hex::encode(want),
                    got: hex::encode(q.body.report_data),
                }));
            }
            log.pass("report_data", "all 64 bytes as expected");
        }

        let b = &q.body;
        Ok(log.finish(TdxClaims {
            version: q.version,
            tcb_status: status,
            advisory_ids: advisories,
            tcb_date: level.tcb_date.clone(),
            qe_tcb_status: qe_status,
            fmspc: hex::encode_upper(pck.fmspc),
            ppid: hex::encode(pck.ppid),
            tee_tcb_svn: hex::encode(b.tee_tcb_svn),
            mr_seam: hex::encode(b.mr_seam),
            mr_td: hex::encode(b.mr_td),
            mr_config_id: hex::encode(b.mr_config_id),
            mr_owner: hex::encode(b.mr_owner),
            mr_owner_config: hex::encode(b.mr_owner_config),
            rtmr: b.rtmr.map(hex::encode),
            td_attributes: hex::encode(b.td_attributes),
            debug: b.td_attributes.first().is_some_and(|a| a & 1 == 1),
            xfam: hex::encode(b.xfam),
            report_data: hex::encode(b.report_data),
        }))
    }
}

#[cfg(test)]
mod tests;
