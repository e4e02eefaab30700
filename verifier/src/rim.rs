//! NVIDIA Reference Integrity Manifests (RIMs): SWID tags signed with an enveloped XML-DSig,
//! for the GPU driver and the VBIOS. A RIM is accepted only when its signature verifies
//! (libxmlsec1, through `custody-xmldsig`), its signer chains to the pinned RIM root at the
//! appraisal time, and the signature covers the whole document.
//!
//! Checks, in order: `rim_format`, `rim_cert_chain` / `rim_cert_validity`,
//! `rim_signature`; [`compare`] adds `rim_measurements`; `rim_version` is the caller's.
//!
//! Layout read here (as NVIDIA publishes them, and as NVIDIA's verifier reads them):
//! `SoftwareIdentity@tagId`; `Meta@colloquialVersion` is the firmware version (driver
//! `550.144.03`, VBIOS `96.00.5E.00.01`; `SoftwareIdentity@version` is only the tag's own
//! version, `1.0`); `Meta@product` the chip; `Payload/Resource[@type="Measurement"]` with
//! `index`, `name`, `active`, `alternatives`, `size` and `Hash0..Hash{alternatives-1}` in
//! the `http://www.w3.org/2001/04/xmlenc#sha384` namespace; `ds:Signature/ds:KeyInfo/
//! ds:X509Data/ds:X509Certificate`, signer first.
//!
//! The tag does not say whether it describes a driver or a VBIOS; the version's shape
//! does (five dot-separated hex bytes for a VBIOS, dotted decimals for a driver), which
//! is how NVIDIA's own RIM names (`NV_GPU_DRIVER_*` / `NV_GPU_VBIOS_*`) line up.
//!
//! Measurement indices are RIM indices: SPDM measurement block index minus one.

use crate::check::{FailedCheck, UnixTime};
use crate::x509::{verify_chain, ChainError, TrustAnchor, MAX_CHAIN_LEN};
use base64::Engine;
use custody_xmldsig::{self as xmldsig, XmlDsigError};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use thiserror::Error;

const SWID_NS: &str = "http://standards.iso.org/iso/19770/-2/2015/schema.xsd";
/// Namespace of the `HashN` attributes (SHA-384 digests, 48 bytes).
const SHA384_NS: &str = "http://www.w3.org/2001/04/xmlenc#sha384";
const SHA384_LEN: usize = 48;
/// Bounds that keep a hostile tag cheap to refuse.
const MAX_MEASUREMENTS: usize = 256;
const MAX_ALTERNATIVES: usize = 16;
/// SPDM block indices are 1..=254, so RIM indices are 0..=253.
const MAX_INDEX: u32 = 253;
const MAX_TEXT: usize = 256;
const MAX_NODES: u32 = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RimError {
    /// Kept for callers written against the first contract; never returned.
    #[error("RIM support is not available in this build")]
    Unsupported,
    #[error("RIM is not an acceptable SWID tag: {0}")]
    Format(String),
    #[error("RIM signature: {0}")]
    Signature(XmlDsigError),
    #[error("RIM signing certificate chain: {0}")]
    Chain(ChainError),
    #[error("no RIM to compare measurements against")]
    NoRims,
    #[error("measurement index {index} is active in both RIM {first} and RIM {second}")]
    Conflict {
        index: u32,
        first: String,
        second: String,
    },
    #[error("measurement index {index} is reported twice")]
    DuplicateMeasured { index: u32 },
    #[error("measurement index {index} ({name}) is required by RIM {rim} but was not reported")]
    Missing { index: u32, name: String, rim: String },
    #[error(
        "measurement index {index} ({name}): reported {measured} matches none of the {alternatives} reference values of RIM {rim}"
    )]
    Mismatch {
        index: u32,
        name: String,
        rim: String,
        measured: String,
        alternatives: usize,
    },
    #[error("measurement index {index} is reported but described by no RIM")]
    Unreferenced { index: u32 },
}

impl FailedCheck for RimError {
    fn check(&self) -> &'static str {
        match self {
            RimError::Unsupported | RimError::Format(_) => "rim_format",
            RimError::Signature(e) if e.is_format() => "rim_format",
            RimError::Signature(_) => "rim_signature",
            RimError::Chain(e) if e.check() == "cert_validity" => "rim_cert_validity",
            RimError::Chain(_) => "rim_cert_chain",
            RimError::NoRims
            | RimError::Conflict { .. }
            | RimError::DuplicateMeasured { .. }
            | RimError::Missing { .. }
            | RimError::Mismatch { .. }
            | RimError::Unreferenced { .. } => "rim_measurements",
        }
    }
}

fn format_err(msg: impl Into<String>) -> RimError {
    RimError::Format(msg.into())
}

/// Which firmware a RIM describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RimKind {
    Driver,
    Vbios,
}

impl RimKind {
    /// From `Meta@colloquialVersion`: `96.00.5E.00.01` (five hex bytes) is a VBIOS,
    /// `550.144.03` (two to four decimal groups) a driver.
    fn from_version(v: &str) -> Option<Self> {
        let parts: Vec<&str> = v.split('.').collect();
        let hex_byte = |p: &&str| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit());
        let decimal = |p: &&str| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit());
        if parts.len() == 5 && parts.iter().all(hex_byte) {
            Some(Self::Vbios)
        } else if (2..=4).contains(&parts.len()) && parts.iter().all(decimal) {
            Some(Self::Driver)
        } else {
            None
        }
    }
}

/// One reference measurement: the SPDM measurement block `index` must equal one of `digests`
/// when `active`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RimMeasurement {
    pub index: u32,
    pub name: String,
    pub active: bool,
    #[serde(serialize_with = "hex_list")]
    pub digests: Vec<Vec<u8>>,
}

/// A RIM whose signature and signer chain verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rim {
    /// SWID `tagId`.
    pub id: String,
    pub kind: RimKind,
    /// Firmware version the RIM is for (driver `550.144.03`, VBIOS `96.00.5E.00.01`), as
    /// written in `Meta@colloquialVersion`; compare with [`Rim::version_matches`].
    pub version: String,
    pub measurements: Vec<RimMeasurement>,
    /// Subject of the signing certificate.
    pub signer: String,
    /// `Meta@product` (chip, e.g. `GH100`).
    pub product: String,
    /// XML-DSig SignatureMethod URI that verified.
    pub signature_algorithm: String,
    /// Window (Unix seconds) in which the signer chain is valid.
    pub valid_from: i64,
    pub valid_until: i64,
}

impl Rim {
    /// NVIDIA compares versions case-insensitively (`96.00.5E.00.01` = `96.00.5e.00.01`).
    pub fn version_matches(&self, reported: &str) -> bool {
        self.version.eq_ignore_ascii_case(reported)
    }
}

/// A SWID tag as read, before any signature check. Only for inspection and fuzzing:
/// nothing in it is trustworthy until [`verify_rim`] accepted the same bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwidTag {
    pub id: String,
    pub kind: RimKind,
    pub version: String,
    pub product: String,
    pub measurements: Vec<RimMeasurement>,
    /// `KeyInfo` certificates (DER), in document order (signer first).
    pub certs: Vec<Vec<u8>>,
}

/// Outcome of comparing measured blocks against RIMs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RimComparison {
    /// Indices whose measured digest matched a reference value.
    pub matched: Vec<u32>,
    /// Indices the RIMs mark inactive (not compared).
    pub inactive: Vec<u32>,
    /// Active indices the caller asked not to compare (see [`compare_skipping`]).
    pub skipped: Vec<u32>,
}

fn is_elem(n: &roxmltree::Node<'_, '_>, ns: &str, name: &str) -> bool {
    n.is_element() && n.tag_name().namespace() == Some(ns) && n.tag_name().name() == name
}

/// The single child element `ns:name` of `parent`.
fn one_child<'a, 'i>(
    parent: roxmltree::Node<'a, 'i>,
    ns: &str,
    name: &str,
) -> Result<roxmltree::Node<'a, 'i>, RimError> {
    let mut it = parent.children().filter(|c| is_elem(c, ns, name));
    match (it.next(), it.next()) {
        (Some(c), None) => Ok(c),
        (None, _) => Err(format_err(format!("no {name} element"))),
        (Some(_), Some(_)) => Err(format_err(format!("more than one {name} element"))),
    }
}

fn attr<'a>(n: &roxmltree::Node<'a, '_>, name: &str) -> Result<&'a str, RimError> {
    let v = n
        .attribute(name)
        .ok_or_else(|| format_err(format!("{} has no {name} attribute", n.tag_name().name())))?;
    if v.is_empty() || v.len() > MAX_TEXT {
        return Err(format_err(format!(
            "{} attribute {name} is empty or longer than {MAX_TEXT}",
            n.tag_name().name()
        )));
    }
    Ok(v)
}

fn parse_u32(what: &str, v: &str) -> Result<u32, RimError> {
    // Plain decimal digits only (no sign, no spaces).
    if v.is_empty() || v.len() > 9 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format_err(format!("{what} `{v}` is not a small decimal number")));
    }
    v.parse()
        .map_err(|_| format_err(format!("{what} `{v}` is not a number")))
}

fn parse_measurement(r: roxmltree::Node<'_, '_>) -> Result<RimMeasurement, RimError> {
    if attr(&r, "type")? != "Measurement" {
        return Err(format_err("Payload Resource whose type is not Measurement"));
    }
    let index = parse_u32("index", attr(&r, "index")?)?;
    if index > MAX_INDEX {
        return Err(format_err(format!("measurement index {index} above {MAX_INDEX}")));
    }
    let name = attr(&r, "name")?.to_string();
    let active = match attr(&r, "active")? {
        a if a.eq_ignore_ascii_case("true") => true,
        a if a.eq_ignore_ascii_case("false") => false,
        a => {
            return Err(format_err(format!(
                "index {index}: active `{a}` is not True/False"
            )))
        }
    };
    let alternatives = parse_u32("alternatives", attr(&r, "alternatives")?)? as usize;
    if alternatives == 0 || alternatives > MAX_ALTERNATIVES {
        return Err(format_err(format!(
            "index {index}: {alternatives} alternatives (1..={MAX_ALTERNATIVES} accepted)"
        )));
    }
    let size = parse_u32("size", attr(&r, "size")?)? as usize;
    if size != SHA384_LEN {
        return Err(format_err(format!(
            "index {index}: size {size}, only SHA-384 ({SHA384_LEN}) is supported"
        )));
    }
    // Exactly Hash0..Hash{alternatives-1} in the SHA-384 namespace; any other HashN is
    // an inconsistency, refused rather than guessed about.
    let hash_attrs: Vec<_> = r
        .attributes()
        .filter(|a| a.namespace() == Some(SHA384_NS))
        .collect();
    if hash_attrs.len() != alternatives {
        return Err(format_err(format!(
            "index {index}: {} hash attributes for {alternatives} alternatives",
            hash_attrs.len()
        )));
    }
    let mut digests = Vec::with_capacity(alternatives);
    for k in 0..alternatives {
        let want = format!("Hash{k}");
        let v = hash_attrs
            .iter()
            .find(|a| a.name() == want)
            .map(|a| a.value())
            .ok_or_else(|| format_err(format!("index {index}: no {want}")))?;
        let d = hex::decode(v).map_err(|_| format_err(format!("index {index}: {want} is not hex")))?;
        if d.len() != size {
            return Err(format_err(format!(
                "index {index}: {want} is {} bytes, size says {size}",
                d.len()
            )));
        }
        digests.push(d);
    }
    Ok(RimMeasurement {
        index,
        name,
        active,
        digests,
    })
}

fn parse_certs(sig: roxmltree::Node<'_, '_>) -> Result<Vec<Vec<u8>>, RimError> {
    let key_info = one_child(sig, xmldsig::DSIG_NS, "KeyInfo")?;
    let x509 = one_child(key_info, xmldsig::DSIG_NS, "X509Data")?;
    let mut certs = Vec::new();
    for c in x509
        .children()
        .filter(|c| is_elem(c, xmldsig::DSIG_NS, "X509Certificate"))
    {
        if certs.len() >= MAX_CHAIN_LEN {
            return Err(format_err(format!("more than {MAX_CHAIN_LEN} certificates")));
        }
        let b64: String = c
            .text()
            .unwrap_or_default()
            .chars()
            .filter(|ch| !ch.is_ascii_whitespace())
            .collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| format_err("X509Certificate is not base64"))?;
        certs.push(der);
    }
    if certs.is_empty() {
        return Err(format_err("no X509Certificate in KeyInfo"));
    }
    Ok(certs)
}

/// Read a RIM's SWID fields and KeyInfo certificates without checking the signature.
/// Pure and total: any input gives a value or a `rim_format` error.
pub fn parse_swid(xml: &[u8]) -> Result<SwidTag, RimError> {
    xmldsig::refuse_dtd(xml).map_err(|e| format_err(e.to_string()))?;
    let text = std::str::from_utf8(xml).map_err(|_| format_err("not UTF-8"))?;
    let opts = roxmltree::ParsingOptions {
        allow_dtd: false,
        nodes_limit: MAX_NODES,
        ..roxmltree::ParsingOptions::default()
    };
    let doc =
        roxmltree::Document::parse_with_options(text, opts).map_err(|e| format_err(format!("XML: {e}")))?;
    let root = doc.root_element();
    if !is_elem(&root, SWID_NS, "SoftwareIdentity") {
        return Err(format_err("document element is not a SWID SoftwareIdentity"));
    }
    let id = attr(&root, "tagId")?.to_string();

    let meta = one_child(root, SWID_NS, "Meta")?;
    let version = attr(&meta, "colloquialVersion")?.to_string();
    if !version.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format_err("colloquialVersion has non-printable characters"));
    }
    let kind = RimKind::from_version(&version).ok_or_else(|| {
        format_err(format!(
            "colloquialVersion `{version}` is neither a driver nor a VBIOS version"
        ))
    })?;
    let product = match meta.attribute("product") {
        Some(p) => p,
        None => attr(&root, "name")?,
    }
    .to_string();

    let payload = one_child(root, SWID_NS, "Payload")?;
    let mut measurements: Vec<RimMeasurement> = Vec::new();
    let mut seen = BTreeSet::new();
    for r in payload.children().filter(|c| c.is_element()) {
        if !is_elem(&r, SWID_NS, "Resource") {
            return Err(format_err(format!(
                "unexpected element {} in Payload",
                r.tag_name().name()
            )));
        }
        if measurements.len() >= MAX_MEASUREMENTS {
            return Err(format_err(format!("more than {MAX_MEASUREMENTS} measurements")));
        }
        let m = parse_measurement(r)?;
        if !seen.insert(m.index) {
            return Err(format_err(format!("measurement index {} appears twice", m.index)));
        }
        measurements.push(m);
    }
    if measurements.is_empty() {
        return Err(format_err("no measurements in Payload"));
    }

    // The one signature xmldsig will verify: a child of the document element, and no
    // other ds:Signature anywhere (the same rule custody-xmldsig applies).
    let sig = one_child(root, xmldsig::DSIG_NS, "Signature")?;
    let all_sigs = root
        .descendants()
        .filter(|n| is_elem(n, xmldsig::DSIG_NS, "Signature"))
        .count();
    if all_sigs != 1 {
        return Err(format_err(format!("{all_sigs} ds:Signature elements")));
    }
    let certs = parse_certs(sig)?;

    Ok(SwidTag {
        id,
        kind,
        version,
        product,
        measurements,
        certs,
    })
}

/// Verify one RIM (XML bytes) against the pinned RIM roots at time `at`:
/// 1. the SWID fields and KeyInfo certificates parse (`rim_format`);
/// 2. the KeyInfo certificates, signer first, chain to a pinned root at `at`
///    (`rim_cert_chain`, `rim_cert_validity`);
/// 3. the enveloped signature verifies with that signer's key, covering the whole
///    document (`rim_signature`).
///
/// The chain comes before the signature: a signature proves something only once its key
/// is trusted. Version matching is the caller's (`rim_version`).
pub fn verify_rim(xml: &[u8], anchors: &[TrustAnchor], at: UnixTime) -> Result<Rim, RimError> {
    let tag = parse_swid(xml)?;
    let signer = tag
        .certs
        .first()
        .ok_or_else(|| format_err("no X509Certificate in KeyInfo"))?;
    let chain = verify_chain(&tag.certs, anchors, at).map_err(RimError::Chain)?;
    let verified = xmldsig::verify_enveloped(xml, signer).map_err(RimError::Signature)?;
    Ok(Rim {
        id: tag.id,
        kind: tag.kind,
        version: tag.version,
        measurements: tag.measurements,
        signer: chain.leaf_subject,
        product: tag.product,
        signature_algorithm: verified.signature.uri().to_string(),
        valid_from: chain.valid_from,
        valid_until: chain.valid_until,
    })
}

/// Compare measured SPDM blocks `(index, digest)` with the verified RIMs (driver + VBIOS).
/// Indices are RIM indices (SPDM block index - 1).
///
/// As NVIDIA's verifier: the active measurements of all RIMs are merged (an index active
/// in two RIMs is a conflict) and each must be reported with a digest equal to one of its
/// alternatives. Stricter: a reported index that no RIM describes (active or not), or one
/// reported twice, is refused too.
pub fn compare(rims: &[Rim], measured: &[(u32, &[u8])]) -> Result<RimComparison, RimError> {
    compare_skipping(rims, measured, &[])
}

/// [`compare`], leaving the active indices in `skip` uncompared. NVIDIA's verifier skips
/// index 35 when the report's opaque data says NVDEC0 is disabled; the caller decides.
pub fn compare_skipping(
    rims: &[Rim],
    measured: &[(u32, &[u8])],
    skip: &[u32],
) -> Result<RimComparison, RimError> {
    if rims.is_empty() {
        return Err(RimError::NoRims);
    }
    let mut active: BTreeMap<u32, (&Rim, &RimMeasurement)> = BTreeMap::new();
    let mut described = BTreeSet::new();
    for rim in rims {
        for m in &rim.measurements {
            described.insert(m.index);
            if !m.active {
                continue;
            }
            if let Some((first, _)) = active.get(&m.index) {
                return Err(RimError::Conflict {
                    index: m.index,
                    first: first.id.clone(),
                    second: rim.id.clone(),
                });
            }
            active.insert(m.index, (rim, m));
        }
    }
    let mut reported: BTreeMap<u32, &[u8]> = BTreeMap::new();
    for (index, digest) in measured {
        if reported.insert(*index, digest).is_some() {
            return Err(RimError::DuplicateMeasured { index: *index });
        }
    }

    let mut out = RimComparison {
        matched: Vec::new(),
        inactive: described
            .iter()
            .filter(|i| !active.contains_key(i))
            .copied()
            .collect(),
        skipped: Vec::new(),
    };
    for (&index, (rim, m)) in &active {
        if skip.contains(&index) {
            out.skipped.push(index);
            continue;
        }
        let Some(digest) = reported.get(&index) else {
            return Err(RimError::Missing {
                index,
                name: m.name.clone(),
                rim: rim.id.clone(),
            });
        };
        if m.digests.iter().any(|d| d.as_slice() == *digest) {
            out.matched.push(index);
        } else {
            return Err(RimError::Mismatch {
                index,
                name: m.name.clone(),
                rim: rim.id.clone(),
                measured: crate::hex(digest),
                alternatives: m.digests.len(),
            });
        }
    }
    if let Some(&index) = reported.keys().find(|i| !described.contains(i)) {
        return Err(RimError::Unreferenced { index });
    }
    Ok(out)
}

fn hex_list<S: serde::Serializer>(v: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(hex::encode))
}

pub mod library;

#[cfg(test)]
mod tests;
