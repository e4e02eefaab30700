//! The JSON view of locality results that policies read (`input.locality` in the Rego
//! policies): keep these field names and values exactly.

use crate::geo::{upper_bounds, LatLon};
use crate::statement::LandmarkStatement;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Where the session key that answered the challenges lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyProtection {
    /// Confidential VM memory (SEV-SNP): the key cannot leave the attested guest.
    Cvm,
    /// Bound to the TPM: the key cannot leave the chip.
    Tpm,
    /// Plain process memory: a host operator can copy it next to a landmark.
    Process,
}

impl KeyProtection {
    /// A process-memory key can be copied to a machine next to a landmark, so a fast
    /// answer proves only where *a copy* of the key is.
    pub fn weak(self) -> bool {
        matches!(self, Self::Process)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cvm => "cvm",
            Self::Tpm => "tpm",
            Self::Process => "process",
        }
    }
}

/// One verified landmark statement, as policy sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Proof {
    pub landmark: String,
    pub lat: f64,
    pub lon: f64,
    pub rtt_ms: f64,
    pub bound_km: f64,
    pub key_protection: KeyProtection,
    pub weak: bool,
}

impl Proof {
    /// The view of a statement that [`LandmarkStatement::verify`] accepted.
    pub fn from_statement(s: &LandmarkStatement, key_protection: KeyProtection) -> Self {
        Self {
            landmark: s.landmark.clone(),
            lat: s.lat,
            lon: s.lon,
            rtt_ms: s.rtt_us as f64 / 1000.0,
            bound_km: s.bound_km,
            key_protection,
            weak: key_protection.weak(),
        }
    }

    pub fn position(&self) -> LatLon {
        LatLon::new(self.lat, self.lon)
    }
}

/// All locality proofs of a node and what they imply for the registry's sites.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Locality {
    pub proofs: Vec<Proof>,
    /// Site id -> upper bound on the node's distance to it, km.
    pub upper_km: BTreeMap<String, f64>,
    /// At least one proof, and none rests on a weakly protected key.
    pub strong: bool,
}

impl Locality {
    pub fn new(proofs: Vec<Proof>, sites: &[(String, LatLon)]) -> Self {
        let upper_km = upper_bounds(&proofs, sites);
        let strong = !proofs.is_empty() && proofs.iter().all(|p| !p.weak);
        Self {
            proofs,
            upper_km,
            strong,
        }
    }
}
