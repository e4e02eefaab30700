//! Sovereignty attributes derived from a verified registry and the hardware identities
//! attested in one round.
//!
//! # Hardware binding
//!
//! Each attested identity is looked up. `bound` is true only when at least one identity
//! is registered, every attested identity is registered (an unregistered device in the
//! round could be anywhere), and all of them are bound to the same site. Site and operator
//! are given when the registered identities name exactly one site, even if `bound` is
//! false because another identity is unregistered; with no match or a conflict between
//! sites they are `null`.
//!
//! # Effective holdings
//!
//! Holdings form a DAG (validation refuses cycles). The effective stake of holder X in the
//! operator O sums, over every path X -> ... -> O, the product of a factor per edge:
//! - capital: the edge's capital share (A 50 % of B, B 60 % of O: A has 30 % of O);
//! - voting: the edge's voting share, except that an edge into an intermediate (not O)
//!   whose holder has more than 50 % of the intermediate's votes counts as 100 %: who
//!   controls an intermediate casts all of its votes.
//!
//! Arithmetic is integer, in units of 10^-8 (100 % = 10^8, 1 bp = 10^4 units): each product
//! is rounded up (`ceil(a * b / 10^8)`), each entity's stake is capped at 100 %, and bp in
//! the output are `ceil(units / 10^4)`. Rounding up never under-reports a foreign stake,
//! and comparisons against thresholds use the units, so 24 % exactly passes and 24.01 %
//! fails. With the voting rule a minority co-holder of a controlled intermediate is still
//! counted by multiplication: conservative, it can over-report, never under-report.
//!
//! X controls O when X's effective voting stake in O is above 50 %; control chains follow
//! (X controls B, B controls O: X's stake is at least B's).
//!
//! # Cloud Act exposure
//!
//! Exposed when the operator, or any entity controlling it, has its registered office in
//! the US or declares a US nexus (office, branch or subsidiary).
//!
//! # SecNumCloud 19.6 (v3.2)
//!
//! A non-EU holder is an entity whose registered office is outside the EU/EEA
//! ([`crate::country`]). Immune when no single non-EU holder has more than 24 % (2400 bp)
//! of the operator's effective capital or voting rights, all non-EU holders together have
//! at most 39 % of capital and of voting rights, and the operator's own registered office,
//! central administration and principal establishment are in the EU/EEA. For the total,
//! a path counts only up to the first non-EU entity on it (seen from the operator), so a
//! non-EU parent holding through a non-EU intermediate is not counted twice.
//!
//! This is arithmetic over the operator's declaration as signed by the registry authority,
//! not a legal opinion.

use crate::model::{Entity, HardwareId, Registry};
use crate::signed::VerifiedRegistry;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};

/// 100 % in internal units.
pub const UNIT: u64 = 100_000_000;
const BP_UNITS: u64 = 10_000;
/// More than this (exclusive) of votes is control.
const CONTROL: u64 = UNIT / 2;
/// SecNumCloud 19.6 thresholds, in units: a single non-EU holder, all non-EU holders.
const SNC_SINGLE: u64 = 2_400 * BP_UNITS;
const SNC_TOTAL: u64 = 3_900 * BP_UNITS;

/// Everything a policy needs about where a node is and whose law its operator answers to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Derived {
    pub registry: RegistryRef,
    pub site: Option<SiteInfo>,
    pub operator: Option<OperatorInfo>,
    pub hardware: HardwareBinding,
}

/// Which registry the attributes come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryRef {
    pub version: u64,
    /// SHA-256 of the signed payload, hex.
    pub digest: String,
    /// kid of the authority that signed it, hex.
    pub kid: String,
    pub authority: String,
    pub issued_at: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SiteInfo {
    pub id: String,
    pub name: String,
    pub country: String,
    pub region: String,
    /// Degrees (microdegrees in the registry).
    pub lat: f64,
    pub lon: f64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorInfo {
    pub id: String,
    pub name: String,
    pub lei: Option<String>,
    /// Registered office.
    pub country: String,
    /// Registered office, central administration and principal establishment of the
    /// operator and of every controlling parent, sorted, deduplicated, plus `EU` when any
    /// is an EU member state.
    pub jurisdictions: Vec<String>,
    pub cloud_act_exposed: bool,
    pub cloud_act_reasons: Vec<String>,
    pub secnumcloud_immune: bool,
    pub secnumcloud_reasons: Vec<String>,
    pub non_eu_capital_max_bp: u32,
    pub non_eu_capital_total_bp: u32,
    pub non_eu_voting_max_bp: u32,
    pub non_eu_voting_total_bp: u32,
    /// Every direct or indirect holder with its effective stake, by voting then capital,
    /// descending, then id.
    pub controllers: Vec<Controller>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Controller {
    pub id: String,
    pub name: String,
    /// Registered office.
    pub country: String,
    pub capital_bp: u32,
    pub voting_bp: u32,
    /// Registered office in the US, or a US nexus.
    pub us: bool,
    /// Registered office outside the EU/EEA.
    pub non_eu: bool,
    /// More than 50 % of the effective votes.
    pub controls: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardwareBinding {
    pub bound: bool,
    /// Attested identities found in the registry (`KIND:HEX`).
    pub matched: Vec<String>,
    /// Attested identities not in the registry.
    pub unmatched: Vec<String>,
    /// Sites the matched identities are bound to.
    pub sites: Vec<String>,
    /// When they name more than one site: `KIND:HEX is bound to site S`, one per match.
    pub conflicts: Vec<String>,
}

impl VerifiedRegistry {
    /// The attributes for the hardware identities attested in one round.
    pub fn derive(&self, hw: &[HardwareId]) -> Derived {
        let reg = self.registry();
        let hardware = bind(reg, hw);
        let site = match hardware.sites.as_slice() {
            [one] => reg.site(one),
            _ => None,
        };
        let operator = site.and_then(|s| {
            let o = reg.entities.iter().position(|e| e.id == s.operator)?;
            operator_info(reg, &self.order, o)
        });
        Derived {
            registry: RegistryRef {
                version: reg.version,
                digest: self.digest().to_owned(),
                kid: self.kid().to_owned(),
                authority: reg.authority.clone(),
                issued_at: reg.issued_at,
            },
            site: site.map(|s| SiteInfo {
                id: s.id.clone(),
                name: s.name.clone(),
                country: s.country.to_string(),
                region: s.region.clone(),
                lat: f64::from(s.lat_e6) / 1e6,
                lon: f64::from(s.lon_e6) / 1e6,
            }),
            operator,
            hardware,
        }
    }
}

impl VerifiedRegistry {
    /// The operator of site `site` with its derived jurisdiction, as a round at that site
    /// would see it.
    pub fn site_operator(&self, site: &str) -> Option<OperatorInfo> {
        let reg = self.registry();
        let s = reg.site(site)?;
        let o = reg.entities.iter().position(|e| e.id == s.operator)?;
        operator_info(reg, &self.order, o)
    }
}

fn bind(reg: &Registry, hw: &[HardwareId]) -> HardwareBinding {
    let mut seen = BTreeSet::new();
    let (mut matched, mut unmatched, mut hits) = (Vec::new(), Vec::new(), Vec::new());
    for id in hw {
        if !seen.insert(id) {
            continue;
        }
        match reg.hardware.iter().find(|h| &h.id == id) {
            Some(h) => {
                matched.push(id.to_string());
                hits.push((id.to_string(), h.site.clone()));
            }
            None => unmatched.push(id.to_string()),
        }
    }
    let sites: BTreeSet<&String> = hits.iter().map(|(_, s)| s).collect();
    let sites: Vec<String> = sites.into_iter().cloned().collect();
    let conflicts = if sites.len() > 1 {
        hits.iter()
            .map(|(id, s)| format!("{id} is bound to site {s}"))
            .collect()
    } else {
        Vec::new()
    };
    HardwareBinding {
        bound: !matched.is_empty() && unmatched.is_empty() && sites.len() == 1,
        matched,
        unmatched,
        sites,
        conflicts,
    }
}

fn mul(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    u64::try_from(p.div_ceil(u128::from(UNIT))).unwrap_or(UNIT)
}

fn bp(units: u64) -> u32 {
    u32::try_from(units.min(UNIT).div_ceil(BP_UNITS)).unwrap_or(10_000)
}

/// `60`, `24.01`, `24.5`: a basis-point value as a percentage.
pub fn pct(bp: u32) -> String {
    let (whole, frac) = (bp / 100, bp % 100);
    match frac {
        0 => whole.to_string(),
        f if f % 10 == 0 => format!("{whole}.{}", f / 10),
        f => format!("{whole}.{f:02}"),
    }
}

fn non_eu(e: &Entity) -> bool {
    !e.registered_office.is_eu_eea()
}

fn us(e: &Entity) -> bool {
    e.registered_office.is_us() || e.us_nexus
}

/// Effective stakes in entity `o` of every entity: (capital, voting), in units. With
/// `eu_only_through`, paths go only through EU/EEA intermediates (the SecNumCloud total).
pub(crate) fn stakes(reg: &Registry, order: &[usize], o: usize, eu_only_through: bool) -> Vec<(u64, u64)> {
    let n = reg.entities.len();
    let index: HashMap<&str, usize> = reg
        .entities
        .iter()
        .enumerate()
        .map(|(i, e)| (e.id.as_str(), i))
        .collect();
    // holds[h] = (owned index, capital bp, voting bp)
    let mut holds: Vec<Vec<(usize, u32, u32)>> = vec![Vec::new(); n];
    for (t, e) in reg.entities.iter().enumerate() {
        for h in &e.holders {
            if let Some(&hi) = index.get(h.entity.as_str()) {
                if let Some(v) = holds.get_mut(hi) {
                    v.push((t, h.capital_bp, h.voting_bp));
                }
            }
        }
    }
    let mut up = vec![(0u64, 0u64); n];
    if let Some(x) = up.get_mut(o) {
        *x = (UNIT, UNIT);
    }
    // Owned before holders: every up[t] a holder needs is final when it is read.
    for &h in order {
        if h == o {
            continue;
        }
        let (mut cap, mut vote) = (0u64, 0u64);
        for &(t, c, v) in holds.get(h).map(Vec::as_slice).unwrap_or_default() {
            let through_ok = t == o || !eu_only_through || reg.entities.get(t).is_some_and(|e| !non_eu(e));
            if !through_ok {
                continue;
            }
            let (ucap, uvote) = up.get(t).copied().unwrap_or_default();
            let vf = if t != o && u64::from(v) * BP_UNITS > CONTROL {
                UNIT
            } else {
                u64::from(v) * BP_UNITS
            };
            cap = cap.saturating_add(mul(u64::from(c) * BP_UNITS, ucap));
            vote = vote.saturating_add(mul(vf, uvote));
        }
        if let Some(x) = up.get_mut(h) {
            *x = (cap.min(UNIT), vote.min(UNIT));
        }
    }
    if let Some(x) = up.get_mut(o) {
        *x = (0, 0);
    }
    up
}

fn operator_info(reg: &Registry, order: &[usize], o: usize) -> Option<OperatorInfo> {
    let op = reg.entities.get(o)?;
    let all = stakes(reg, order, o, false);
    let eu_paths = stakes(reg, order, o, true);

    let mut controllers: Vec<(Controller, &Entity, u64, u64)> = reg
        .entities
        .iter()
        .zip(all.iter())
        .filter(|(_, &(c, v))| c > 0 || v > 0)
        .map(|(e, &(c, v))| {
            (
                Controller {
                    id: e.id.clone(),
                    name: e.name.clone(),
                    country: e.registered_office.to_string(),
                    capital_bp: bp(c),
                    voting_bp: bp(v),
                    us: us(e),
                    non_eu: non_eu(e),
                    controls: v > CONTROL,
                },
                e,
                c,
                v,
            )
        })
        .collect();
    controllers.sort_by(|a, b| b.3.cmp(&a.3).then(b.2.cmp(&a.2)).then(a.0.id.cmp(&b.0.id)));

    // Jurisdictions: the operator and every controlling parent.
    let mut juris = BTreeSet::new();
    let ruling = std::iter::once(op).chain(controllers.iter().filter(|c| c.0.controls).map(|c| c.1));
    for e in ruling {
        for c in [
            &e.registered_office,
            &e.central_administration,
            &e.principal_establishment,
        ] {
            juris.insert(c.to_string());
            if c.is_eu() {
                juris.insert("EU".to_owned());
            }
        }
    }

    // Cloud Act.
    let mut cloud = Vec::new();
    if op.registered_office.is_us() {
        cloud.push(format!(
            "operator {} is incorporated in the US (registered office US): cloud_act_exposed",
            op.name
        ));
    }
    if op.us_nexus {
        cloud.push(format!(
            "operator {} has a US nexus (office, branch or subsidiary): cloud_act_exposed",
            op.name
        ));
    }
    for (c, e, _, _) in controllers.iter().filter(|c| c.0.controls && c.0.us) {
        let nexus = if e.registered_office.is_us() {
            ""
        } else {
            ", which has a US nexus"
        };
        cloud.push(format!(
            "operator {} is controlled {} % by {} ({}){nexus}: cloud_act_exposed",
            op.name,
            pct(c.voting_bp),
            c.name,
            c.country
        ));
    }

    // SecNumCloud 19.6.
    let mut snc = Vec::new();
    for (what, c) in [
        ("registered office", &op.registered_office),
        ("central administration", &op.central_administration),
        ("principal establishment", &op.principal_establishment),
    ] {
        if !c.is_eu_eea() {
            snc.push(format!(
                "operator {} has its {what} in {c}, outside the EU/EEA (SecNumCloud 19.6)",
                op.name
            ));
        }
    }
    let (mut cap_max, mut vote_max) = (0u64, 0u64);
    for (c, _, cu, vu) in controllers.iter().filter(|c| c.0.non_eu) {
        cap_max = cap_max.max(*cu);
        vote_max = vote_max.max(*vu);
        for (what, units, b) in [
            ("capital", *cu, c.capital_bp),
            ("voting rights", *vu, c.voting_bp),
        ] {
            if units > SNC_SINGLE {
                snc.push(format!(
                    "operator {} is held {} % ({what}) by {} ({}), a non-EU holder, above the 24 % limit of SecNumCloud 19.6",
                    op.name,
                    pct(b),
                    c.name,
                    c.country
                ));
            }
        }
    }
    let (mut cap_total, mut vote_total) = (0u64, 0u64);
    for (e, &(c, v)) in reg.entities.iter().zip(eu_paths.iter()) {
        if non_eu(e) {
            cap_total = cap_total.saturating_add(c);
            vote_total = vote_total.saturating_add(v);
        }
    }
    let (cap_total, vote_total) = (cap_total.min(UNIT), vote_total.min(UNIT));
    for (what, units) in [("capital", cap_total), ("voting rights", vote_total)] {
        if units > SNC_TOTAL {
            snc.push(format!(
                "non-EU holders together hold {} % of the {what} of operator {}, above the 39 % limit of SecNumCloud 19.6",
                pct(bp(units)),
                op.name
            ));
        }
    }

    Some(OperatorInfo {
        id: op.id.clone(),
        name: op.name.clone(),
        lei: op.lei.clone(),
        country: op.registered_office.to_string(),
        jurisdictions: juris.into_iter().collect(),
        cloud_act_exposed: !cloud.is_empty(),
        cloud_act_reasons: cloud,
        secnumcloud_immune: snc.is_empty(),
        secnumcloud_reasons: snc,
        non_eu_capital_max_bp: bp(cap_max),
        non_eu_capital_total_bp: bp(cap_total),
        non_eu_voting_max_bp: bp(vote_max),
        non_eu_voting_total_bp: bp(vote_total),
        controllers: controllers.into_iter().map(|c| c.0).collect(),
    })
}
