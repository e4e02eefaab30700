//! The locality stage. Every landmark statement must be about the session key this very
//! bundle binds and about this node; the key is only as far from copying as the memory
//! it lives in (a CVM when SNP evidence ties the agent to the node's own attested guest,
//! see `crate::cvm`; else plain process memory: a weak proof, and it says so). Own and
//! remote proofs intersect: the per-site upper bound is the smallest any landmark proves.
//! A landmark that fails is recorded and simply does not count; only a policy that
//! requires locality turns that into a refusal. `locality_consistency` fails the round
//! when a proof excludes the site the registry puts the node's hardware at.

use crate::context::{Context, Extras, LocalityFailure};
use crate::findings::Findings;
use custody_locality::{
    KeyProtection, LandmarkStatement, LatLon, Locality, LocalityError, PinnedLandmark, Proof,
};
use custody_registry::derive::Derived;
use custody_registry::signed::VerifiedRegistry;
use custody_verifier::ear::{ClaimValue, Claims};

/// How old a landmark statement may be when the round is appraised.
pub const MAX_AGE_SECS: u64 = 120;

/// The landmarks a verifier trusts and how far a proof may miss the registered site.
#[derive(Debug, Clone, Default)]
pub struct Landmarks {
    /// Keys whose statements count as this verifier's own measurement.
    pub own: Vec<[u8; 32]>,
    /// Remote landmarks: a statement counts only under the key pinned for its id.
    pub remote: Vec<PinnedLandmark>,
    /// How far (km) a proof's disc may miss the registered site before
    /// `locality_consistency` fails.
    pub tolerance_km: f64,
}

/// What the stage found.
#[derive(Debug, Default)]
pub struct LocalityStage {
    /// The proofs and per-site bounds (policy input `locality`), when any proof counted.
    pub locality: Option<Locality>,
    /// Landmarks whose statements did not count.
    pub failures: Vec<LocalityFailure>,
    /// One EAR claim per counted proof.
    pub claims: Vec<ClaimValue>,
}

impl LocalityStage {
    /// The first failure as one line (`check: detail`).
    pub fn error(&self) -> Option<String> {
        self.failures
            .first()
            .map(|f| format!("{}: {}", f.check, f.detail))
    }
}

/// The session key the statements must be about, and where it lives.
#[derive(Debug, Clone, Copy)]
pub struct SessionKey<'a> {
    /// The bundle's Ed25519 session key.
    pub ed25519: &'a [u8; 32],
    pub protection: KeyProtection,
}

/// Check every landmark's statement about the round's session key.
pub fn appraise(
    landmarks: &Landmarks,
    registry: Option<&VerifiedRegistry>,
    sovereignty: Option<&Derived>,
    cx: &Context<'_>,
    key: SessionKey<'_>,
    extras: &Extras,
    f: &mut Findings,
) -> LocalityStage {
    let (session, protection) = (key.ed25519, key.protection);
    let mut stage = LocalityStage::default();
    let checked = |e: LocalityError| (e.check().to_owned(), e.to_string());
    let mut verified = Vec::new();
    if let Some(own) = &extras.locality {
        verified.push((
            own.landmark.clone(),
            own.outcome.clone().and_then(|bytes| {
                LandmarkStatement::verify(&bytes, &landmarks.own, session, cx.at, MAX_AGE_SECS)
                    .and_then(|st| st.check_node(cx.node.id).map(|()| st))
                    .map_err(checked)
            }),
        ));
    }
    for r in &extras.remote {
        let pinned = landmarks.remote.iter().find(|p| p.id == r.landmark);
        verified.push((
            r.landmark.clone(),
            r.outcome.clone().and_then(|bytes| match pinned {
                None => Err((
                    "locality_landmark".to_owned(),
                    format!("no landmark `{}` is configured", r.landmark),
                )),
                Some(p) => {
                    LandmarkStatement::verify_pinned(&bytes, p, cx.node.id, session, cx.at, MAX_AGE_SECS)
                        .map_err(checked)
                }
            }),
        ));
    }
    let mut proofs = Vec::new();
    for (landmark, v) in verified {
        match v {
            Ok(st) => {
                let mut c = Claims::new();
                c.insert("landmark".into(), ClaimValue::Text(st.landmark.clone()));
                c.insert("rtt-us".into(), ClaimValue::Int(i128::from(st.rtt_us)));
                // Rounded up: a claim never makes the node look nearer than measured.
                c.insert("bound-km".into(), ClaimValue::Int(st.bound_km.ceil() as i128));
                c.insert(
                    "key-protection".into(),
                    ClaimValue::Text(protection.as_str().into()),
                );
                c.insert("weak".into(), ClaimValue::Bool(protection.weak()));
                stage.claims.push(ClaimValue::Map(c));
                proofs.push(Proof::from_statement(&st, protection));
            }
            Err((check, detail)) => stage.failures.push(LocalityFailure {
                landmark,
                check,
                detail,
            }),
        }
    }
    // locality_consistency: the registry says where the node's hardware is; a bound that
    // excludes that site means the attested key answered from elsewhere.
    if let Some(site) = sovereignty.and_then(|d| d.site.as_ref()) {
        let at_site = LatLon::new(site.lat, site.lon);
        for (p, d) in custody_locality::contradictions(&proofs, at_site, landmarks.tolerance_km) {
            f.fail(
                "locality_consistency",
                format!(
                    "landmark {} at ({:.4}, {:.4}) proves the node's key within {:.0} km, but its hardware is registered at site {} ({}) at ({:.4}, {:.4}), {:.0} km away (tolerance {} km): the key answered from elsewhere than the hardware",
                    p.landmark, p.lat, p.lon, p.bound_km, site.id, site.name, site.lat, site.lon, d, landmarks.tolerance_km
                ),
            );
        }
    }
    if !proofs.is_empty() {
        // Upper bounds to every registry site, only when there is a proof.
        let sites: Vec<(String, LatLon)> = registry
            .map(|r| {
                r.registry()
                    .sites
                    .iter()
                    .map(|s| {
                        (
                            s.id.clone(),
                            LatLon::new(f64::from(s.lat_e6) / 1e6, f64::from(s.lon_e6) / 1e6),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        stage.locality = Some(Locality::new(proofs, &sites));
    }
    stage
}

#[cfg(test)]
mod tests;
