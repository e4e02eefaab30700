//! NVIDIA Reference Integrity Manifests (RIMs): SWID tags signed with an enveloped XML-DSig,
//! for the GPU driver and the VBIOS. A RIM is accepted only when its signature verifies
//! (libxmlsec1, through `custody-xmldsig`), its signer chains to the pinned RIM root at the
//! appraisal time, and the signature covers the whole document.
//!
//! API contract (implementation in progress on a branch; other modules code against it).

use crate::check::{FailedCheck, UnixTime};
use crate::x509::TrustAnchor;
use serde::Serialize;
use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RimError {
    #[error("RIM support is not available in this build")]
    Unsupported,
}

impl FailedCheck for RimError {
    fn check(&self) -> &'static str {
        "rim"
    }
}

/// Which firmware a RIM describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RimKind {
    Driver,
    Vbios,
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
    /// Firmware version the RIM is for (driver `550.144.03`, VBIOS `96.00.5e.00.01`), as written.
    pub version: String,
    pub measurements: Vec<RimMeasurement>,
    /// Subject of the signing certificate.
    pub signer: String,
}

/// Outcome of comparing measured blocks against RIMs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RimComparison {
    /// Indices whose measured digest matched a reference value.
    pub matched: Vec<u32>,
    /// Indices the RIMs mark inactive (not compared).
    pub inactive: Vec<u32>,
}

/// Verify one RIM (XML bytes) against the pinned RIM roots at time `at`.
pub fn verify_rim(_xml: &[u8], _anchors: &[TrustAnchor], _at: UnixTime) -> Result<Rim, RimError> {
    Err(RimError::Unsupported)
}

/// Compare measured SPDM blocks `(index, digest)` with the verified RIMs (driver + VBIOS).
pub fn compare(_rims: &[Rim], _measured: &[(u32, &[u8])]) -> Result<RimComparison, RimError> {
    Err(RimError::Unsupported)
}

fn hex_list<S: serde::Serializer>(v: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(hex::encode))
}
