//! Distance arithmetic: RTT to a distance bound, great-circle distance, and the
//! intersection of the landmarks' disks.

use crate::proof::Proof;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Light in optical fibre covers about 2/3 c, about 200 km per millisecond one way.
pub const FIBRE_KM_PER_MS: f64 = 200.0;

/// Mean Earth radius (IUGG), km.
pub const EARTH_RADIUS_KM: f64 = 6371.0088;

/// A position in decimal degrees.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LatLon {
    pub lat: f64,
    pub lon: f64,
}

impl LatLon {
    pub fn new(lat: f64, lon: f64) -> Self {
        Self { lat, lon }
    }

    /// Finite, latitude in [-90, 90], longitude in [-180, 180].
    pub fn is_valid(&self) -> bool {
        self.lat.is_finite()
            && self.lon.is_finite()
            && (-90.0..=90.0).contains(&self.lat)
            && (-180.0..=180.0).contains(&self.lon)
    }
}

/// Distance bound in km: `(rtt - processing) / 2 x 200 km/ms`, never negative.
///
/// `processing` must be a measured *floor* of the node's time to answer (the fastest
/// signature seen on the fastest hardware, or zero), never an estimate of the typical
/// time: every microsecond subtracted is 100 m the node is allowed to be further away
/// without showing it, so overestimating it would let a distant node pass as near.
pub fn bound_km(rtt: Duration, processing: Duration) -> f64 {
    let one_way_ms = rtt.saturating_sub(processing).as_secs_f64() * 1000.0 / 2.0;
    one_way_ms * FIBRE_KM_PER_MS
}

/// Great-circle distance (haversine), km.
pub fn haversine_km(a: LatLon, b: LatLon) -> f64 {
    let (p1, p2) = (a.lat.to_radians(), b.lat.to_radians());
    let dp = p2 - p1;
    let dl = (b.lon - a.lon).to_radians();
    let h = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_KM * h.sqrt().min(1.0).asin()
}

/// For each site, an upper bound on the node's distance to it: the node lies within
/// `bound_km` of every landmark, so its distance to a site is at most
/// `d(landmark, site) + bound_km`; the tightest landmark wins. With no proofs nothing is
/// known and the map is empty (a policy asking for a site then finds no bound).
pub fn upper_bounds(proofs: &[Proof], sites: &[(String, LatLon)]) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for (id, site) in sites {
        let best = proofs
            .iter()
            .map(|p| haversine_km(p.position(), *site) + p.bound_km)
            .fold(f64::INFINITY, f64::min);
        if best.is_finite() {
            out.insert(id.clone(), best);
        }
    }
    out
}

/// The proofs that exclude `site`: the site lies farther from the landmark than the
/// proven bound plus `tolerance_km` (coordinates name a site, not a rack), so the key
/// that answered is not where the hardware is registered (a relay, or a wrong registry).
/// Each with the site's distance from its landmark.
pub fn contradictions(proofs: &[Proof], site: LatLon, tolerance_km: f64) -> Vec<(&Proof, f64)> {
    proofs
        .iter()
        .map(|p| (p, haversine_km(p.position(), site)))
        .filter(|(p, d)| *d > p.bound_km + tolerance_km)
        .collect()
}

/// The claimed position lies inside every landmark's disk (the intersection test). No
/// proofs prove nothing: `false`.
pub fn consistent(proofs: &[Proof], claimed: LatLon) -> bool {
    !proofs.is_empty()
        && claimed.is_valid()
        && proofs
            .iter()
            .all(|p| haversine_km(p.position(), claimed) <= p.bound_km)
}
