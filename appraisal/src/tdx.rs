//! The Intel TDX stage: the quote's own checks (`tdx.*`) against the round's binding and
//! the verifier's collateral, then whether it vouches for this node (as for SEV-SNP in
//! [`crate::cvm`]): the operator's TD image, not debuggable, on a platform (PPID)
//! registered at the node's site. Only then is the session key in CVM memory.
//!
//! The collateral (TCB info, QE identity, CRLs) is the verifier's, not the node's: a
//! round it cannot appraise because that collateral is missing or out of date fails at
//! [`COLLATERAL`], which never counts towards revocation (the service's blame rule).

use crate::context::{Context, TdxReferenceValues};
use crate::cvm::{self, CvmError};
use crate::findings::{failed_submod, mark_failed, Findings};
use crate::AppraisalError;
use custody_formats::binding::Binding;
use custody_formats::bundle::TdxEvidence as TdxBundle;
use custody_registry::model::{HardwareId, Registry};
use custody_verifier::check::{EvidenceVerifier, UnixTime};
use custody_verifier::ear::TrustTier;
use custody_verifier::tdx::{CollateralWindow, TdxClaims, TdxCollateral, TdxEvidence, TdxVerifier};
use std::sync::{Arc, RwLock};

/// The check of a round whose TDX quote the verifier could not appraise because its own
/// collateral is missing or not current: the node is not trusted, but not blamed.
pub const COLLATERAL: &str = "tdx.collateral";

/// One platform model's collateral: the six files of an Intel PCS collateral directory,
/// in [`custody_verifier::tdx::COLLATERAL_FILES`] order, for the FMSPC its TCB info names.
/// Its FMSPC and window are read once, when it is built (rounds and metrics read them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollateralSet {
    fmspc: [u8; 6],
    window: CollateralWindow,
    files: [Vec<u8>; 6],
}

impl CollateralSet {
    /// From the six files; the TCB info must name its FMSPC and every item its dates
    /// (signatures are checked with each quote).
    pub fn new(files: [Vec<u8>; 6]) -> Result<Self, String> {
        let c = TdxCollateral::from_files(&files);
        Ok(Self {
            window: c.window()?,
            fmspc: c.fmspc()?,
            files,
        })
    }

    pub fn fmspc(&self) -> [u8; 6] {
        self.fmspc
    }

    /// When this set can serve an appraisal.
    pub fn window(&self) -> CollateralWindow {
        self.window
    }

    pub fn collateral(&self) -> TdxCollateral<'_> {
        TdxCollateral::from_files(&self.files)
    }
}

/// What the verifier appraises TDX quotes with (`[tdx]`).
#[derive(Debug)]
pub struct TdxSetup {
    pub verifier: TdxVerifier,
    /// The collateral in force, one set per FMSPC; replaced whole when the operator's
    /// directory changes (a round under way keeps the snapshot it took).
    collateral: RwLock<Arc<Vec<CollateralSet>>>,
    pub reference: Option<TdxReferenceValues>,
    /// Accept debuggable TDs (never in production: the host can read their memory).
    pub allow_debug: bool,
}

impl TdxSetup {
    pub fn new(
        verifier: TdxVerifier,
        collateral: Vec<CollateralSet>,
        reference: Option<TdxReferenceValues>,
        allow_debug: bool,
    ) -> Self {
        Self {
            verifier,
            collateral: RwLock::new(Arc::new(collateral)),
            reference,
            allow_debug,
        }
    }

    /// The collateral in force (a snapshot).
    pub fn collateral(&self) -> Arc<Vec<CollateralSet>> {
        self.collateral
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Put newer collateral in force.
    pub fn replace_collateral(&self, sets: Vec<CollateralSet>) {
        *self
            .collateral
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(sets);
    }
}

/// Appraise the bundle's TDX quote; whether it makes the session key `cvm`.
pub fn appraise(
    setup: Option<&TdxSetup>,
    registry: Option<&Registry>,
    cx: &Context<'_>,
    t: &TdxBundle,
    binding: &Binding,
    f: &mut Findings,
) -> Result<bool, AppraisalError> {
    let refuse = |f: &mut Findings, check: &str, reason: String| {
        f.key_protection_reasons
            .push(format!("tdx: evidence not appraised (`{check}`)"));
        let mut device = serde_json::json!({"kind": "tdx", "verified": false});
        mark_failed(&mut device, check.trim_start_matches("tdx."));
        f.device("tdx", device, failed_submod(check, &reason));
        f.fail(check, reason);
    };
    let sets = setup.map(TdxSetup::collateral).unwrap_or_default();
    let (setup, set) = match setup.ok_or_else(no_collateral).and_then(|s| {
        let set = collateral_for(s, &sets, &t.quote, cx.at)?;
        Ok((s, set))
    }) {
        Ok(x) => x,
        Err(reason) => {
            refuse(f, COLLATERAL, reason);
            return Ok(false);
        }
    };
    let collateral = set.collateral();
    let mut expected = [0u8; 64];
    expected[..32].copy_from_slice(binding.as_bytes());
    let outcome = setup.verifier.verify(
        TdxEvidence {
            quote: &t.quote,
            collateral,
            expected_report_data: Some(&expected),
        },
        UnixTime(cx.at),
    );
    let tie = |c: &TdxClaims| tie(setup, registry, cx, c);
    let cvm = cvm::record("tdx", &outcome, tie, UNVOUCHED, f)?;
    // A TCB Intel no longer calls up to date is genuine but not affirmed.
    if let (Ok(v), Some(sub)) = (&outcome, f.submods.get_mut("tdx")) {
        if v.claims.tcb_status != "UpToDate" && sub.status < TrustTier::Warning {
            sub.status = TrustTier::Warning;
        }
    }
    Ok(cvm)
}

/// Whether a verified TD vouches for this node: the operator's image (`[tdx]` reference
/// values, not debuggable), on a platform (PPID) the registry puts at the node's site.
pub(crate) fn tie(
    setup: &TdxSetup,
    registry: Option<&Registry>,
    cx: &Context<'_>,
    c: &TdxClaims,
) -> Result<(bool, cvm::Binding), CvmError> {
    let matched = compare_reference(setup.reference.as_ref(), setup.allow_debug, c)?;
    let ppid = hex::decode(&c.ppid)
        .ok()
        .and_then(|b| HardwareId::from_parts(HardwareId::TDX, &b).ok());
    let platform = match &ppid {
        Some(id) => cvm::platform(registry, cx.node.ek_cert_sha256, id)?,
        None => cvm::Binding::Unbound,
    };
    Ok((matched, platform))
}

pub(crate) fn no_collateral() -> String {
    "this verifier has no TDX collateral (`[tdx] collateral`): it cannot appraise TDX quotes".into()
}

/// The collateral set `quote` is appraised with at `at`, or why this verifier cannot
/// appraise it (check [`COLLATERAL`]: the verifier's gap, never counted against the node).
///
/// The set for the quote's platform model. The common case, a set for the FMSPC the PCK
/// certificate claims, verifies the chain once, inside the quote's verification. Only a
/// claim of a model the verifier has no set for has its chain verified here first, to tell
/// the verifier's gap (not counted) from a forged certificate (counted): a quote whose PCK
/// chain does not verify goes on to the verifier with any set, which names its fault.
pub(crate) fn collateral_for<'s>(
    setup: &TdxSetup,
    sets: &'s [CollateralSet],
    quote: &[u8],
    at: i64,
) -> Result<&'s CollateralSet, String> {
    let first = sets.first().ok_or_else(no_collateral)?;
    let claimed = TdxVerifier::claimed_fmspc(quote).ok();
    let known = claimed.and_then(|c| sets.iter().find(|s| s.fmspc == c));
    let set = match known {
        Some(s) => s,
        // A genuine chain's FMSPC is the claim, which has no set: the verifier's gap.
        None => match setup.verifier.pck_fmspc(quote, UnixTime(at)) {
            Ok(fmspc) => {
                return Err(format!(
                    "the verifier has no TDX collateral for FMSPC {} (it has {}): add Intel PCS's TCB info for it to `[tdx] collateral`",
                    hex::encode_upper(fmspc),
                    sets.iter().map(|s| hex::encode_upper(s.fmspc)).collect::<Vec<_>>().join(", ")
                ));
            }
            Err(_) => first,
        },
    };
    let w = set.window();
    if !(w.from..=w.until).contains(&at) {
        return Err(format!(
            "the verifier's TDX collateral for FMSPC {} is current {} .. {}, not at {}: refresh `[tdx] collateral`",
            hex::encode_upper(set.fmspc),
            w.from,
            w.until,
            at
        ));
    }
    Ok(set)
}

const UNVOUCHED: cvm::Unvouched = cvm::Unvouched {
    unconfigured: "tdx_reference: unconfigured (no `[tdx] mr_td`: the quote may come from any TD)",
    unbound: "tdx_platform: unbound (no registry, or the node's EK is not in it: the platform cannot be tied to this node)",
};

/// `Ok(true)`: matched; `Ok(false)`: nothing configured (the key stays `process`). A
/// debuggable TD fails whether or not reference values are configured.
pub fn compare_reference(
    r: Option<&TdxReferenceValues>,
    allow_debug: bool,
    c: &TdxClaims,
) -> Result<bool, CvmError> {
    if c.debug && !allow_debug {
        return Err(CvmError::TdDebug(c.td_attributes.clone()));
    }
    let Some(r) = r else { return Ok(false) };
    let differs = |what: &'static str, expected: String, got: &str| CvmError::TdMeasurement {
        what,
        expected,
        got: got.to_ascii_lowercase(),
    };
    if !r
        .mr_td
        .iter()
        .any(|m| hex::encode(m).eq_ignore_ascii_case(&c.mr_td))
    {
        let list = r.mr_td.iter().map(hex::encode).collect::<Vec<_>>().join(", ");
        return Err(differs("mr_td", list, &c.mr_td));
    }
    const RTMR: [&str; 4] = ["rtmr0", "rtmr1", "rtmr2", "rtmr3"];
    for ((want, got), what) in r.rtmr.iter().zip(&c.rtmr).zip(RTMR) {
        if let Some(w) = want {
            if !hex::encode(w).eq_ignore_ascii_case(got) {
                return Err(differs(what, hex::encode(w), got));
            }
        }
    }
    for (want, got, what) in [
        (&r.mr_config_id, &c.mr_config_id, "mr_config_id"),
        (&r.mr_owner, &c.mr_owner, "mr_owner"),
    ] {
        if let Some(w) = want {
            if !hex::encode(w).eq_ignore_ascii_case(got) {
                return Err(differs(what, hex::encode(w), got));
            }
        }
    }
    for (want, got, what) in [
        (&r.td_attributes, &c.td_attributes, "td_attributes"),
        (&r.xfam, &c.xfam, "xfam"),
    ] {
        let Some(w) = want else { continue };
        // The claims carry the quote's 8 bytes as hex; anything else matches nothing.
        let bytes = hex::decode(got)
            .ok()
            .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok());
        let differ = bytes.map_or([0xff; 8], |b| w.differs(&b));
        if differ != [0; 8] {
            return Err(CvmError::TdMasked {
                what,
                expected: w.to_string(),
                got: got.to_ascii_lowercase(),
                differ: hex::encode(differ),
            });
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests;
