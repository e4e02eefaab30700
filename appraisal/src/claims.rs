//! The EAR's attributes: what the result says besides the per-device submodules
//! (reference source, registry and operator, GPUs, key protection, locality).

use crate::context::ReferenceSource;
use crate::gpu::Gpu;
use crate::input::KeyProtection;
use crate::locality::LocalityStage;
use custody_registry::derive::Derived;
use custody_verifier::ear::{ClaimValue, Claims};

/// The site, country and operator the result names (EAR `site`, `country`, `operator`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Place {
    /// The site's id and name.
    pub site: Option<String>,
    pub site_name: Option<String>,
    pub country: Option<String>,
    /// The operator's name and country of incorporation.
    pub operator: Option<String>,
    pub operator_country: Option<String>,
}

/// The attributes and the place.
pub fn attributes(
    reference_source: Option<ReferenceSource>,
    sovereignty: Option<&Derived>,
    gpus: &[Gpu],
    key_protection: Option<&KeyProtection>,
    locality: &LocalityStage,
) -> (Claims, Place) {
    let mut a = Claims::new();
    let mut place = Place::default();
    if let Some(src) = reference_source {
        a.insert("reference-source".into(), ClaimValue::Text(src.as_str().into()));
    }
    if let Some(d) = sovereignty {
        a.insert(
            "registry-version".into(),
            ClaimValue::Int(i128::from(d.registry.version)),
        );
        a.insert(
            "registry-digest".into(),
            ClaimValue::Text(d.registry.digest.clone()),
        );
        a.insert("hardware-bound".into(), ClaimValue::Bool(d.hardware.bound));
        if let Some(s) = &d.site {
            place.site = Some(s.id.clone());
            place.site_name = Some(s.name.clone());
            place.country = Some(s.country.clone());
        }
        if let Some(o) = &d.operator {
            place.operator = Some(o.name.clone());
            place.operator_country = Some(o.country.clone());
            a.insert("operator-country".into(), ClaimValue::Text(o.country.clone()));
            a.insert(
                "jurisdictions".into(),
                ClaimValue::Array(o.jurisdictions.iter().cloned().map(ClaimValue::Text).collect()),
            );
            a.insert("cloud-act-exposed".into(), ClaimValue::Bool(o.cloud_act_exposed));
            a.insert(
                "secnumcloud-immune".into(),
                ClaimValue::Bool(o.secnumcloud_immune),
            );
        }
    }
    if !gpus.is_empty() {
        let models = gpus
            .iter()
            .map(|g| {
                let mut c = Claims::new();
                c.insert("model".into(), ClaimValue::Text(g.model.clone()));
                c.insert("cc-mode".into(), ClaimValue::Text(g.cc_mode.clone()));
                c.insert("attested".into(), ClaimValue::Bool(g.attested));
                ClaimValue::Map(c)
            })
            .collect();
        a.insert("gpus".into(), ClaimValue::Array(models));
    }
    if let Some(k) = key_protection {
        a.insert("key-protection".into(), ClaimValue::Text(k.level().into()));
    }
    if !locality.claims.is_empty() {
        a.insert("locality".into(), ClaimValue::Array(locality.claims.clone()));
    }
    if let Some(e) = locality.error() {
        a.insert("locality-error".into(), ClaimValue::Text(e));
        let failures = locality
            .failures
            .iter()
            .map(|f| {
                let mut c = Claims::new();
                c.insert("landmark".into(), ClaimValue::Text(f.landmark.clone()));
                c.insert("check".into(), ClaimValue::Text(f.check.clone()));
                ClaimValue::Map(c)
            })
            .collect();
        a.insert("locality-failures".into(), ClaimValue::Array(failures));
    }
    (a, place)
}
