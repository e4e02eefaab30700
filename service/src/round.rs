//! One attestation round: nonce, evidence, appraisal, signed result, node state.
//!
//! Appraisal order (the first failure names the round's failed check):
//! `bundle_format` -> `nonce` (the bundle carries the nonce issued for this node) ->
//! `tpm_present` -> `ak_enrolled` (the quote's AK is the one credential activation bound
//! to the EK) -> the TPM verifier's own checks against the round's binding ->
//! `clock_monotonic` (TPM clock never goes back within one reset) -> `reference_values`
//! (golden PCRs of the node's group, learnt on first use or provisioned) -> SNP and GPU
//! evidence when present -> `policy` (Rego).

use crate::config::ReferenceMode;
use crate::store::{Event, NodeRecord, NodeState, Reference, ReferenceSource, ResultRecord, TpmClock};
use crate::{now, Service, ServiceError};
use custody_audit::entry::{self, Entry};
use custody_formats::api::{self, RoundRequest};
use custody_formats::binding::{Binding, Nonce, SessionKeys};
use custody_formats::bundle::EvidenceBundle;
use custody_policy::Policy;
use custody_registry::model::HardwareId;
use custody_verifier::check::{EvidenceVerifier, FailedCheck, UnixTime};
use custody_verifier::ear::{
    self, AttestationResult, ClaimValue, Claims, Corroboration, Submod, TrustTier, VerifierId,
};
use custody_verifier::nvgpu::{NvgpuEvidence, NvgpuVerifier, RIM_ROOT_PEM};
use custody_verifier::rim::library::RimLibrary;
use custody_verifier::snp::{ExpectedReportData, SnpEvidence, SnpVerifier};
use custody_verifier::tpm::{TpmEvidence, TpmVerifier};
use custody_verifier::x509::TrustAnchor;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

/// The appraisal engines, built once.
#[derive(Debug)]
pub struct Appraiser {
    tpm: TpmVerifier,
    snp: SnpVerifier,
    gpu: NvgpuVerifier,
    pub policy: Policy,
    /// PCRs every quote must cover, per bank (config `min_pcrs`), checked at
    /// `pcr_selection`: a node cannot quote less and so learn or pass a baseline that
    /// compares nothing.
    pub min_pcrs: BTreeMap<String, std::collections::BTreeSet<u32>>,
    /// Landmark keys whose statements count as this verifier's own measurement.
    pub landmarks: Vec<[u8; 32]>,
    /// Remote landmarks (`[[landmarks]]`): a statement counts only under the key pinned
    /// for the landmark id it came from.
    pub remote_landmarks: Vec<custody_locality::PinnedLandmark>,
    /// `locality_tolerance_km`: see [`crate::config::Config::locality_tolerance_km`].
    pub locality_tolerance_km: f64,
    /// The signed registry in force; replaced whole when a newer version is adopted.
    pub registry: std::sync::RwLock<Option<Arc<custody_registry::signed::VerifiedRegistry>>>,
    /// The operator's NVIDIA RIMs (`gpu_rims`): GPU measurements are compared with them.
    pub gpu_rims: Option<RimLibrary>,
    /// `[snp]` reference values: without them no SNP report makes the key `cvm`.
    pub snp_reference: Option<crate::config::SnpReferenceValues>,
}

/// What a round learnt besides the bundle.
#[derive(Debug, Default)]
pub struct Extras {
    /// This verifier's signed landmark statement about the node's session key, or why
    /// the measurement failed; `None` when no measurement was attempted.
    pub locality: Option<LandmarkOutcome>,
    /// What each remote landmark answered, in configuration order.
    pub remote: Vec<LandmarkOutcome>,
}

/// One landmark's answer: its signed statement, or the check that failed and why.
#[derive(Debug, Clone)]
pub struct LandmarkOutcome {
    /// The configured landmark id (the statement must name the same).
    pub landmark: String,
    pub outcome: Result<Vec<u8>, (String, String)>,
}

/// A landmark whose statement did not count, kept with the round (policy input
/// `locality_failures`, EAR attribute `locality-failures`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LocalityFailure {
    pub landmark: String,
    pub check: String,
    pub detail: String,
}

/// How old a landmark statement may be when the round is appraised.
const LOCALITY_MAX_AGE_SECS: u64 = 120;

/// What arrived for appraisal.
#[derive(Debug)]
pub enum Arrived<'a> {
    Bundle(&'a [u8]),
    /// No evidence: the agent could not be reached, refused, or the nonce was unusable.
    Nothing {
        check: &'static str,
        detail: String,
    },
}

/// A round appraised and its node's new state decided, waiting for its writes.
#[derive(Debug)]
pub(crate) struct Concluding {
    node: NodeRecord,
    previous: NodeState,
    passed: bool,
    a: Appraisal,
    at: i64,
    started: Instant,
}

/// The appraisal of one round, before it is stored.
#[derive(Debug, Clone)]
pub struct Appraisal {
    pub status: TrustTier,
    pub failed_check: Option<String>,
    pub reasons: Vec<String>,
    pub ear: Vec<u8>,
    pub evidence_sha256: String,
    pub tpm_clock: Option<TpmClock>,
    /// Reference values learnt from this round (trust on first use).
    pub learned: Option<Reference>,
    /// What the PCRs were compared with, when they were.
    pub reference_source: Option<ReferenceSource>,
    /// What the policy decided on (JSON): kept with the result for `custody policy explain`.
    pub input: serde_json::Value,
    /// The session keys this round's evidence vouched for (only when it passed).
    pub session_keys: Option<SessionKeys>,
    /// The round failed only because its group's baseline awaits an operator's approval
    /// (`reference_pending`): not counted towards revocation.
    pub awaits_approval: bool,
}

/// Hardware identities a round proved: the registry binds them to sites. Each is
/// `kind:hex` as the registry writes them (`ek_sha256`, `snp_chip_id`, `gpu_serial`).
fn attested_hardware(node: &NodeRecord, devices: &serde_json::Map<String, serde_json::Value>) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(ek) = &node.ek_cert_sha256 {
        out.push(format!("{}:{ek}", HardwareId::EK));
    }
    for d in devices.values() {
        if d.get("verified").and_then(serde_json::Value::as_bool) != Some(true) {
            continue;
        }
        let claim = |k: &str| {
            d.pointer(&format!("/claims/{k}"))
                .and_then(serde_json::Value::as_str)
        };
        match d.get("kind").and_then(serde_json::Value::as_str) {
            Some("snp") => {
                if let Some(c) = claim("chip_id") {
                    out.push(format!("{}:{}", HardwareId::SNP, c.to_ascii_lowercase()));
                }
            }
            Some("nvgpu") => {
                if let Some(c) = claim("leaf_serial") {
                    out.push(format!("{}:{}", HardwareId::GPU, c.to_ascii_lowercase()));
                }
            }
            _ => {}
        }
    }
    out
}

/// One entry per GPU the node has: attested ones from their verified reports, the rest
/// from the agent's unattested NVML identity (marked so: policy may refuse them by name).
fn gpu_inventory(
    bundle: Option<&EvidenceBundle>,
    devices: &serde_json::Map<String, serde_json::Value>,
) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let Some(b) = bundle else { return out };
    let mut seen = std::collections::BTreeSet::new();
    for g in &b.gpus {
        let d = devices.get(&format!("gpu{}", g.index));
        // Attested as *this node's* GPU: genuine and registered at the node's site (any
        // CC GPU can sign for a round; see `crate::cvm`).
        let verified = d
            .and_then(|d| d.get("verified"))
            .and_then(serde_json::Value::as_bool)
            == Some(true)
            && d.and_then(|d| d.get("platform"))
                .and_then(serde_json::Value::as_str)
                == Some("bound");
        // The model as the signed evidence says it: the leaf certificate's hardware
        // model (`GH100 A01 GSP FMC LF`), which the chip table reads. The NVML name is
        // the agent's word, signed by nothing: used only for a GPU whose report did not
        // verify, which is then unattested.
        let signed = d
            .and_then(|d| d.pointer("/claims/hwmodel"))
            .and_then(serde_json::Value::as_str)
            .filter(|m| !m.is_empty());
        let name = b
            .gpu_identities
            .iter()
            .find(|i| i.index == g.index)
            .and_then(|i| i.name.clone());
        let model = match (verified, signed) {
            (true, Some(m)) => m.to_owned(),
            _ => name
                .or_else(|| signed.map(str::to_owned))
                .unwrap_or_else(|| "unknown".into()),
        };
        seen.insert(g.index);
        out.push(serde_json::json!({
            "index": g.index,
            "model": model,
            "attested": verified && signed.is_some(),
            "cc_mode": "on",
        }));
    }
    for i in b.gpu_identities.iter().filter(|i| !seen.contains(&i.index)) {
        let cc = match (
            i.cc.get("cc_enabled").map(String::as_str),
            i.cc.get("cc_dev_mode").map(String::as_str),
        ) {
            (_, Some("true")) => "devtools",
            (Some("true"), _) => "on",
            (Some("false"), _) => "off",
            _ => "unknown",
        };
        out.push(serde_json::json!({
            "index": i.index,
            "model": i.name.as_deref().unwrap_or("unknown"),
            "attested": false,
            "cc_mode": cc,
        }));
    }
    out
}

/// What `custody attest` and the API print for a round.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct RoundSummary {
    pub node_id: String,
    pub name: String,
    pub state: NodeState,
    pub status: String,
    pub failed_check: Option<String>,
    pub reasons: Vec<String>,
    pub reference: Option<ReferenceSource>,
    pub result_id: i64,
    pub at: i64,
    pub duration_ms: u64,
}

struct Failure {
    check: String,
    reason: String,
}

const CONTRA: i8 = TrustTier::Contraindicated as i8;

fn failed_submod(check: &str, reason: &str) -> Submod {
    let mut s = Submod {
        status: TrustTier::Contraindicated,
        ..Default::default()
    };
    match check {
        "reference_values" | "event_log" | "pcr_digest" => s.trust_vector.executables = Some(CONTRA),
        _ => s.trust_vector.instance_identity = Some(CONTRA),
    }
    s.annotations
        .insert("failed-check".into(), ClaimValue::Text(check.into()));
    s.annotations
        .insert("failure".into(), ClaimValue::Text(reason.into()));
    s
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b).as_ref())
}

/// The PCRs of `min` the quote does not cover, as one sentence; None when it covers them.
fn missing_pcrs(
    min: &BTreeMap<String, std::collections::BTreeSet<u32>>,
    quoted: &BTreeMap<String, BTreeMap<u32, String>>,
) -> Option<String> {
    let missing: Vec<String> = min
        .iter()
        .filter_map(|(bank, want)| {
            let have = quoted.get(bank);
            let lacking: Vec<String> = want
                .iter()
                .filter(|p| !have.is_some_and(|h| h.contains_key(p)))
                .map(u32::to_string)
                .collect();
            (!lacking.is_empty()).then(|| format!("{bank} PCRs {}", lacking.join(",")))
        })
        .collect();
    (!missing.is_empty()).then(|| {
        format!(
            "the quote does not cover the verifier's minimum selection: {} missing",
            missing.join("; ")
        )
    })
}

/// The check of a round whose appraisal itself failed (see `prepare_conclusion`).
pub const APPRAISAL_ERROR: &str = "appraisal_error";
/// The check of a round the verifier could not run for its own reasons (out of file
/// descriptors, memory): recorded, never charged to the node.
pub const VERIFIER_ERROR: &str = "verifier_error";

/// Whose failure a failed round is, which decides what it does to the node's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Blame {
    /// Evidence was refused (or nothing a node sent could be appraised): counted towards
    /// revocation.
    Node,
    /// The node was silent, unreachable or refused the round, or its group's baseline
    /// awaits approval: the node is `failed`, but this never revokes it.
    NotCounted,
    /// The verifier's own trouble: nothing changes for the node.
    Verifier,
}

impl Blame {
    fn of(a: &Appraisal) -> Self {
        match a.failed_check.as_deref() {
            Some(VERIFIER_ERROR) => Self::Verifier,
            Some("agent_reachable" | "agent_round") => Self::NotCounted,
            _ if a.awaits_approval => Self::NotCounted,
            _ => Self::Node,
        }
    }
}

/// The check of a round that matched a baseline still awaiting approval: the node is not
/// trusted, but the failure is the operator's to clear, so it does not count towards
/// revocation.
pub const REFERENCE_PENDING: &str = "reference_pending";

/// Compare quoted PCRs with the reference; the differences, one line each.
fn compare_reference(reference: &Reference, quoted: &BTreeMap<String, BTreeMap<u32, String>>) -> Vec<String> {
    let mut diffs = Vec::new();
    for (bank, pcrs) in &reference.pcrs {
        for (idx, want) in pcrs {
            match quoted.get(bank).and_then(|b| b.get(idx)) {
                None => diffs.push(format!("{bank} PCR {idx} is not quoted")),
                Some(got) if !got.eq_ignore_ascii_case(want) => {
                    diffs.push(format!("{bank} PCR {idx} is {got}, reference {want}"))
                }
                Some(_) => {}
            }
        }
    }
    diffs
}

impl Appraiser {
    pub fn new(policy: Policy) -> Result<Self, String> {
        Ok(Self {
            tpm: TpmVerifier::new(),
            snp: SnpVerifier::builtin().map_err(|e| format!("SNP roots: {e}"))?,
            gpu: NvgpuVerifier::new().map_err(|e| format!("NVIDIA roots: {e}"))?,
            policy,
            min_pcrs: BTreeMap::from([("sha256".to_owned(), (0..=7).collect())]),
            landmarks: Vec::new(),
            remote_landmarks: Vec::new(),
            locality_tolerance_km: 50.0,
            registry: std::sync::RwLock::new(None),
            gpu_rims: None,
            snp_reference: None,
        })
    }

    /// Trust a test ARK beside AMD's (`[snp] test_ark`, for tests only).
    pub fn trust_snp_test_ark(&mut self, path: &std::path::Path) -> Result<(), String> {
        let pem = std::fs::read(path).map_err(|e| format!("snp.test_ark {}: {e}", path.display()))?;
        self.snp = self
            .snp
            .clone()
            .with_test_ark(&pem)
            .map_err(|e| format!("snp.test_ark {}: {e}", path.display()))?;
        Ok(())
    }

    /// The revocation collateral in use and when each item is due to be replaced, for
    /// `/metrics` (`custody_collateral_next_update_timestamp_seconds`).
    pub fn collateral(&self) -> Vec<crate::metrics::Collateral> {
        self.snp
            .crls()
            .iter()
            .map(|c| crate::metrics::Collateral {
                kind: "amd_crl",
                issuer: c.issuer().to_owned(),
                next_update: c.next_update,
            })
            .collect()
    }

    /// AMD KDS CRLs for the SEV-SNP chains (`[snp] crls`), parsed now; each is checked
    /// against its ARK when a chain uses it.
    pub fn load_snp_crls(&mut self, paths: &[std::path::PathBuf], grace_days: u32) -> Result<(), String> {
        let mut crls = Vec::new();
        for p in paths {
            let bytes = std::fs::read(p).map_err(|e| format!("snp.crls {}: {e}", p.display()))?;
            crls.push(
                custody_verifier::crl::Crl::parse(&bytes)
                    .map_err(|e| format!("snp.crls {}: {e}", p.display()))?,
            );
        }
        self.snp = self.snp.clone().with_crls(crls, i64::from(grace_days) * 86_400);
        Ok(())
    }

    /// Trust a test device-identity root beside NVIDIA's (`[nvgpu] test_root`, for tests
    /// only).
    pub fn trust_gpu_test_root(&mut self, path: &std::path::Path) -> Result<(), String> {
        let err = |e: String| format!("nvgpu.test_root {}: {e}", path.display());
        let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        let mut device = self.gpu.device_roots().to_vec();
        device.extend(TrustAnchor::from_pem_or_der(&pem).map_err(|e| err(e.to_string()))?);
        let rim = TrustAnchor::from_pem_or_der(RIM_ROOT_PEM).map_err(|e| err(e.to_string()))?;
        self.gpu = NvgpuVerifier::with_roots(device, rim);
        Ok(())
    }

    /// Load the RIM library in `dir`, checked now against the pinned NVIDIA RIM root.
    pub fn load_gpu_rims(&mut self, dir: &std::path::Path, at: i64) -> Result<usize, String> {
        let roots =
            TrustAnchor::from_pem_or_der(RIM_ROOT_PEM).map_err(|e| format!("NVIDIA RIM root: {e}"))?;
        let lib = RimLibrary::load_dir(dir, &roots, UnixTime(at)).map_err(|e| format!("gpu_rims: {e}"))?;
        let n = lib.len();
        self.gpu_rims = Some(lib);
        Ok(n)
    }

    /// Appraise one round for `node`. Pure but for the clock passed in and the signing.
    #[allow(clippy::too_many_arguments)]
    pub fn appraise(
        &self,
        node: &NodeRecord,
        nonce: &Nonce,
        arrived: Arrived<'_>,
        extras: &Extras,
        reference: Option<&Reference>,
        mode: ReferenceMode,
        at: i64,
        ear_ttl: i64,
        key: &ear::EarSigningKey,
    ) -> Result<Appraisal, String> {
        let mut submods: BTreeMap<String, Submod> = BTreeMap::new();
        let mut devices = serde_json::Map::new();
        let mut failure: Option<Failure> = None;
        let mut tpm_clock = None;
        let mut learned = None;
        let mut reference_source = None;
        let mut evidence_sha256 = String::new();
        // The session key is `cvm` only when SNP evidence ties the agent to the node's own
        // attested guest ([`crate::cvm`]); otherwise why not, for the policy input.
        let mut snp_cvm = false;
        let mut key_protection_reasons: Vec<String> = Vec::new();
        // The first failure names the round, except that a baseline awaiting approval
        // gives way to any real failure found after it.
        let fail = |f: &mut Option<Failure>, check: &str, reason: String| {
            if f.as_ref().is_none_or(|f| f.check == REFERENCE_PENDING) {
                *f = Some(Failure {
                    check: check.to_owned(),
                    reason,
                });
            }
        };

        let bundle = match arrived {
            Arrived::Nothing { check, detail } => {
                fail(&mut failure, check, detail);
                None
            }
            Arrived::Bundle(bytes) => {
                evidence_sha256 = sha256_hex(bytes);
                match EvidenceBundle::from_cbor(bytes) {
                    Ok(b) if b.nonce != *nonce => {
                        fail(
                            &mut failure,
                            "nonce",
                            "the bundle carries another nonce than the one issued".into(),
                        );
                        None
                    }
                    Ok(b) => Some(b),
                    Err(e) => {
                        fail(&mut failure, "bundle_format", e.to_string());
                        None
                    }
                }
            }
        };

        if let Some(b) = &bundle {
            let binding = Binding::compute(nonce, &b.session_keys);
            match &b.tpm {
                None => fail(
                    &mut failure,
                    "tpm_present",
                    "the bundle has no TPM evidence".into(),
                ),
                Some(t) if t.ak_public != node.ak_public => fail(
                    &mut failure,
                    "ak_enrolled",
                    "the quote's AK is not the one enrolled for this node".into(),
                ),
                Some(t) => {
                    let outcome = self.tpm.verify(
                        TpmEvidence {
                            quote: &t.quote,
                            signature: &t.signature,
                            ak: &t.ak_public,
                            pcrs: &t.pcrs,
                            nonce: binding.as_bytes(),
                            event_log: t.event_log.as_deref(),
                        },
                        UnixTime(at),
                    );
                    let mut extra_failure: Option<(String, String)> = None;
                    let mut matched = false;
                    match &outcome {
                        Err(r) => fail(&mut failure, r.error.check(), r.error.to_string()),
                        Ok(v) => {
                            let c = &v.claims;
                            let clock = TpmClock {
                                reset_count: c.reset_count,
                                restart_count: c.restart_count,
                                clock: c.clock,
                            };
                            tpm_clock = Some(clock);
                            if let Some(last) = node.tpm_clock {
                                let back = (clock.reset_count, clock.restart_count)
                                    < (last.reset_count, last.restart_count)
                                    || ((clock.reset_count, clock.restart_count)
                                        == (last.reset_count, last.restart_count)
                                        && clock.clock < last.clock);
                                if back {
                                    extra_failure = Some((
                                        "clock_monotonic".into(),
                                        format!(
                                            "TPM clock went back: reset {} restart {} clock {} after reset {} restart {} clock {} (an old quote?)",
                                            clock.reset_count, clock.restart_count, clock.clock,
                                            last.reset_count, last.restart_count, last.clock
                                        ),
                                    ));
                                }
                            }
                            let quoted: BTreeMap<String, BTreeMap<u32, String>> = c
                                .pcrs
                                .iter()
                                .map(|(alg, p)| (alg.name().to_owned(), p.clone()))
                                .collect();
                            if extra_failure.is_none() {
                                if let Some(m) = missing_pcrs(&self.min_pcrs, &quoted) {
                                    extra_failure = Some(("pcr_selection".into(), m));
                                }
                            }
                            if extra_failure.is_none() {
                                match (reference, mode) {
                                    (Some(r), _) => {
                                        let diffs = compare_reference(r, &quoted);
                                        if !diffs.is_empty() {
                                            reference_source = Some(r.source);
                                            extra_failure =
                                                Some(("reference_values".into(), diffs.join("; ")));
                                        } else if r.pending {
                                            reference_source = Some(ReferenceSource::TofuPending);
                                            extra_failure = Some((
                                                REFERENCE_PENDING.into(),
                                                format!(
                                                    "the baseline of group `{}` learnt on first use awaits an operator's approval (custody reference approve {})",
                                                    node.group, node.group
                                                ),
                                            ));
                                        } else {
                                            reference_source = Some(r.source);
                                            matched = true;
                                        }
                                    }
                                    (None, ReferenceMode::Tofu) => {
                                        reference_source = Some(ReferenceSource::Tofu);
                                        matched = true;
                                        learned = Some(Reference {
                                            pcrs: quoted,
                                            source: ReferenceSource::Tofu,
                                            at,
                                            learned_from: Some(node.id.clone()),
                                            pending: false,
                                        });
                                    }
                                    (None, ReferenceMode::TofuApprove) => {
                                        reference_source = Some(ReferenceSource::TofuPending);
                                        extra_failure = Some((
                                            REFERENCE_PENDING.into(),
                                            format!(
                                                "this round's PCRs were proposed as the baseline of group `{}`; they decide nothing until an operator approves them (custody reference approve {})",
                                                node.group, node.group
                                            ),
                                        ));
                                        learned = Some(Reference {
                                            pcrs: quoted,
                                            source: ReferenceSource::Tofu,
                                            at,
                                            learned_from: Some(node.id.clone()),
                                            pending: true,
                                        });
                                    }
                                    (None, ReferenceMode::Operator) => {
                                        extra_failure = Some((
                                            "reference_values".into(),
                                            format!(
                                                "no reference values are provisioned for group `{}`",
                                                node.group
                                            ),
                                        ))
                                    }
                                }
                            }
                        }
                    }
                    let corroboration = Corroboration {
                        identity_key_endorsed: true,
                        executables_matched: matched,
                        configuration_matched: matched,
                    };
                    let mut sub = Submod::from_outcome(&outcome, corroboration).map_err(|e| e.to_string())?;
                    if let Some(src) = &reference_source {
                        sub.annotations
                            .insert("reference".into(), ClaimValue::Text(src.as_str().into()));
                    }
                    let mut device = serde_json::json!({
                        "kind": "tpm",
                        "verified": outcome.is_ok() && extra_failure.is_none(),
                        "claims": outcome.as_ref().ok().map(|v| serde_json::to_value(&v.claims).unwrap_or_default()),
                    });
                    if let (Err(r), Some(o)) = (&outcome, device.as_object_mut()) {
                        o.insert("failed_check".into(), r.error.check().into());
                    }
                    if let Some((check, reason)) = extra_failure {
                        sub = failed_submod(&check, &reason);
                        if let Some(o) = device.as_object_mut() {
                            o.insert("failed_check".into(), check.clone().into());
                            o.insert("verified".into(), false.into());
                        }
                        fail(&mut failure, &check, reason);
                    }
                    devices.insert("tpm".into(), device);
                    submods.insert("tpm".into(), sub);
                }
            }
            // Hardware evidence is tied to the node through the registry in force.
            let registry_now = self
                .registry
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            if let Some(s) = &b.snp {
                let outcome = self.snp.verify(
                    SnpEvidence {
                        report: &s.report,
                        vek: &s.vcek,
                        ca_chain: s.ca_chain.as_deref(),
                        expected_report_data: Some(ExpectedReportData::Binding(*binding.as_bytes())),
                        allow_debug: false,
                    },
                    UnixTime(at),
                );
                if let Err(r) = &outcome {
                    fail(
                        &mut failure,
                        &format!("snp.{}", r.error.check()),
                        r.error.to_string(),
                    );
                    key_protection_reasons
                        .push(format!("snp: evidence rejected by `snp.{}`", r.error.check()));
                }
                let mut device = device_json("snp", &outcome);
                let mut sub =
                    Submod::from_outcome(&outcome, Corroboration::default()).map_err(|e| e.to_string())?;
                if let Ok(v) = &outcome {
                    // The binding is public: a genuine report proves only that *some* guest
                    // saw this round. It vouches for this node's key only from the
                    // operator's guest image on a chip registered at the node's site.
                    let c = &v.claims;
                    let guest = crate::cvm::SnpGuest {
                        vmpl: c.vmpl,
                        measurement: &c.measurement,
                        host_data: &c.host_data,
                        id_key_digest: &c.id_key_digest,
                        reported_tcb: c.reported_tcb,
                        policy: c.policy,
                    };
                    let chip = hex::decode(&c.chip_id)
                        .ok()
                        .and_then(|b| HardwareId::from_parts(HardwareId::SNP, &b).ok());
                    let checked = crate::cvm::compare_snp_reference(self.snp_reference.as_ref(), &guest)
                        .and_then(|matched| {
                            let platform = match &chip {
                                Some(id) => crate::cvm::platform(
                                    registry_now.as_ref().map(|r| r.registry()),
                                    node.ek_cert_sha256.as_deref(),
                                    id,
                                )?,
                                None => crate::cvm::Binding::Unbound,
                            };
                            Ok((matched, platform))
                        });
                    match checked {
                        Ok((matched, platform)) => {
                            if !matched {
                                key_protection_reasons.push("snp_reference: unconfigured (no `[snp] measurements`: the report may come from any guest)".into());
                            }
                            if platform != crate::cvm::Binding::Bound {
                                key_protection_reasons.push("snp_platform: unbound (no registry, or the node's EK is not in it: the chip cannot be tied to this node)".into());
                            }
                            snp_cvm = matched && platform == crate::cvm::Binding::Bound;
                            if let Some(o) = device.as_object_mut() {
                                o.insert(
                                    "guest".into(),
                                    serde_json::json!({
                                        "reference": if matched { "matched" } else { "unconfigured" },
                                        "platform": platform,
                                    }),
                                );
                            }
                        }
                        Err(e) => {
                            let check = format!("snp.{}", e.check());
                            key_protection_reasons.push(format!("snp: evidence rejected by `{check}`"));
                            if let Some(o) = device.as_object_mut() {
                                o.insert("verified".into(), false.into());
                                o.insert("failed_check".into(), e.check().into());
                            }
                            sub = failed_submod(&check, &e.to_string());
                            fail(&mut failure, &check, e.to_string());
                        }
                    }
                }
                devices.insert("snp".into(), device);
                submods.insert("snp".into(), sub);
            } else {
                key_protection_reasons.push("no SEV-SNP evidence".into());
            }
            for g in &b.gpus {
                let name = format!("gpu{}", g.index);
                let outcome = self.gpu.verify(
                    NvgpuEvidence {
                        report: &g.report,
                        cert_chain: &g.cert_chain,
                        nonce: binding.as_bytes(),
                        rims: &[],
                        library: self.gpu_rims.as_ref(),
                    },
                    UnixTime(at),
                );
                if let Err(r) = &outcome {
                    fail(
                        &mut failure,
                        &format!("{name}.{}", r.error.check()),
                        r.error.to_string(),
                    );
                }
                let mut device = device_json("nvgpu", &outcome);
                let mut sub =
                    Submod::from_outcome(&outcome, Corroboration::default()).map_err(|e| e.to_string())?;
                if let Ok(v) = &outcome {
                    // Any CC-mode GPU can sign for this round (the nonce is public): it
                    // counts as this node's only where the registry puts its serial at the
                    // node's site. It never makes the session key stronger.
                    let serial = hex::decode(&v.claims.leaf_serial)
                        .ok()
                        .and_then(|b| HardwareId::from_parts(HardwareId::GPU, &b).ok());
                    let platform = match &serial {
                        Some(id) => crate::cvm::platform(
                            registry_now.as_ref().map(|r| r.registry()),
                            node.ek_cert_sha256.as_deref(),
                            id,
                        ),
                        None => Ok(crate::cvm::Binding::Unbound),
                    };
                    match platform {
                        Ok(p) => {
                            if let Some(o) = device.as_object_mut() {
                                o.insert("platform".into(), serde_json::to_value(p).unwrap_or_default());
                            }
                        }
                        Err(e) => {
                            let check = format!("{name}.{}", e.check());
                            if let Some(o) = device.as_object_mut() {
                                o.insert("verified".into(), false.into());
                                o.insert("failed_check".into(), e.check().into());
                            }
                            sub = failed_submod(&check, &e.to_string());
                            fail(&mut failure, &check, e.to_string());
                        }
                    }
                }
                devices.insert(name.clone(), device);
                submods.insert(name, sub);
            }
        }
        if let Some(f) = &failure {
            submods
                .entry("tpm".into())
                .or_insert_with(|| failed_submod(&f.check, &f.reason));
        }

        // Policy sees every device, the node and the reference source; its reasons are
        // what operators read.
        // Sovereignty: the registry in force binds the attested hardware to a site and an
        // operator, and derives what the operator's ownership means.
        let registry = self
            .registry
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let hardware = attested_hardware(node, &devices);
        let sovereignty = registry.as_ref().map(|r| {
            let ids: Vec<HardwareId> = hardware
                .iter()
                .filter_map(|h| HardwareId::parse(h).ok())
                .collect();
            r.derive(&ids)
        });

        // Locality: every statement must be about the session key this very bundle binds
        // and about this node; the key is only as far from copying as the memory it lives
        // in (a CVM when SNP evidence ties the agent to the node's own attested guest, see
        // `crate::cvm`; else plain process memory: a weak proof, and it says so). Own and remote proofs intersect: the per-site upper bound is
        // the smallest any landmark proves. A landmark that fails is recorded and simply
        // does not count; only a policy that requires locality turns that into a refusal.
        let mut locality = serde_json::Value::Null;
        let mut locality_failures: Vec<LocalityFailure> = Vec::new();
        let mut locality_claims = Vec::new();
        if let Some(b) = &bundle {
            let protection = if snp_cvm {
                custody_locality::KeyProtection::Cvm
            } else {
                custody_locality::KeyProtection::Process
            };
            let session = &b.session_keys.ed25519;
            let checked = |e: custody_locality::LocalityError| (e.check().to_owned(), e.to_string());
            let mut verified = Vec::new();
            if let Some(own) = &extras.locality {
                verified.push((
                    own.landmark.clone(),
                    own.outcome.clone().and_then(|bytes| {
                        custody_locality::LandmarkStatement::verify(
                            &bytes,
                            &self.landmarks,
                            session,
                            at,
                            LOCALITY_MAX_AGE_SECS,
                        )
                        .and_then(|st| st.check_node(&node.id).map(|()| st))
                        .map_err(checked)
                    }),
                ));
            }
            for r in &extras.remote {
                let pinned = self.remote_landmarks.iter().find(|p| p.id == r.landmark);
                verified.push((
                    r.landmark.clone(),
                    r.outcome.clone().and_then(|bytes| match pinned {
                        None => Err((
                            "locality_landmark".to_owned(),
                            format!("no landmark `{}` is configured", r.landmark),
                        )),
                        Some(p) => custody_locality::LandmarkStatement::verify_pinned(
                            &bytes,
                            p,
                            &node.id,
                            session,
                            at,
                            LOCALITY_MAX_AGE_SECS,
                        )
                        .map_err(checked),
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
                        locality_claims.push(ClaimValue::Map(c));
                        proofs.push(custody_locality::Proof::from_statement(&st, protection));
                    }
                    Err((check, detail)) => locality_failures.push(LocalityFailure {
                        landmark,
                        check,
                        detail,
                    }),
                }
            }
            // locality_consistency: the registry says where the node's hardware is; a bound
            // that excludes that site means the attested key answered from elsewhere.
            if let Some(site) = sovereignty.as_ref().and_then(|d| d.site.as_ref()) {
                let at_site = custody_locality::LatLon::new(site.lat, site.lon);
                for (p, d) in custody_locality::contradictions(&proofs, at_site, self.locality_tolerance_km) {
                    fail(
                        &mut failure,
                        "locality_consistency",
                        format!(
                            "landmark {} at ({:.4}, {:.4}) proves the node's key within {:.0} km, but its hardware is registered at site {} ({}) at ({:.4}, {:.4}), {:.0} km away (tolerance {} km): the key answered from elsewhere than the hardware",
                            p.landmark, p.lat, p.lon, p.bound_km, site.id, site.name, site.lat, site.lon, d, self.locality_tolerance_km
                        ),
                    );
                }
            }
            if !proofs.is_empty() {
                // Upper bounds to every registry site, only when there is a proof.
                let sites: Vec<(String, custody_locality::LatLon)> = registry
                    .as_ref()
                    .map(|r| {
                        r.registry()
                            .sites
                            .iter()
                            .map(|s| {
                                (
                                    s.id.clone(),
                                    custody_locality::LatLon::new(
                                        f64::from(s.lat_e6) / 1e6,
                                        f64::from(s.lon_e6) / 1e6,
                                    ),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                locality =
                    serde_json::to_value(custody_locality::Locality::new(proofs, &sites)).unwrap_or_default();
            }
        }
        // The first failure as one line, as before remote landmarks existed.
        let locality_error = locality_failures
            .first()
            .map(|f| format!("{}: {}", f.check, f.detail));
        let gpus = gpu_inventory(bundle.as_ref(), &devices);
        let mut input = serde_json::json!({
            "devices": devices,
            "node": {"id": node.id, "name": node.name, "group": node.group, "state": node.state.as_str()},
            "reference": {"source": reference_source},
            "hardware": hardware,
            "gpus": gpus,
        });
        // Absent, not null, when there is nothing: Rego treats `null` as a value.
        if let Some(o) = input.as_object_mut() {
            if let Some(d) = &sovereignty {
                o.insert("sovereignty".into(), serde_json::to_value(d).unwrap_or_default());
            }
            if !locality.is_null() {
                o.insert("locality".into(), locality);
            }
            if bundle.is_some() {
                let level = if snp_cvm { "cvm" } else { "process" };
                o.insert(
                    "key_protection".into(),
                    serde_json::json!({"level": level, "reasons": key_protection_reasons}),
                );
            }
            if let Some(e) = &locality_error {
                o.insert("locality_error".into(), e.clone().into());
                o.insert(
                    "locality_failures".into(),
                    serde_json::to_value(&locality_failures).unwrap_or_default(),
                );
            }
        }
        let decision = self.policy.evaluate(&input).map_err(|e| e.to_string())?;
        let mut reasons = Vec::new();
        if let Some(f) = &failure {
            reasons.push(format!("{}: {}", f.check, f.reason));
        }
        for r in &decision.reasons {
            if !reasons.iter().any(|x| x.contains(r.as_str())) {
                reasons.push(r.clone());
            }
        }
        let failed_check = failure
            .as_ref()
            .map(|f| f.check.clone())
            .or_else(|| (!decision.allow).then(|| "policy".to_owned()));
        // Only the operator's pending approval stands between this round and a pass: the
        // node is not trusted, but this is not its failure.
        let awaits_approval = failed_check.as_deref() == Some(REFERENCE_PENDING)
            && decision.reasons.iter().all(|r| r.contains(REFERENCE_PENDING));
        let mut status = submods
            .values()
            .map(|s| s.status)
            .max()
            .unwrap_or(TrustTier::None);
        if !decision.allow || failed_check.is_some() {
            status = TrustTier::Contraindicated;
        }
        let policy_digest = hex::decode(&decision.policy_digest)
            .ok()
            .filter(|d| d.len() == 32);
        let mut attributes = Claims::new();
        if let Some(src) = &reference_source {
            attributes.insert("reference-source".into(), ClaimValue::Text(src.as_str().into()));
        }
        let (mut site, mut country, mut operator) = (None, None, None);
        if let Some(d) = &sovereignty {
            attributes.insert(
                "registry-version".into(),
                ClaimValue::Int(i128::from(d.registry.version)),
            );
            attributes.insert(
                "registry-digest".into(),
                ClaimValue::Text(d.registry.digest.clone()),
            );
            attributes.insert("hardware-bound".into(), ClaimValue::Bool(d.hardware.bound));
            if let Some(s) = &d.site {
                site = Some(s.id.clone());
                country = Some(s.country.clone());
            }
            if let Some(o) = &d.operator {
                operator = Some(o.name.clone());
                attributes.insert("operator-country".into(), ClaimValue::Text(o.country.clone()));
                attributes.insert(
                    "jurisdictions".into(),
                    ClaimValue::Array(o.jurisdictions.iter().cloned().map(ClaimValue::Text).collect()),
                );
                attributes.insert("cloud-act-exposed".into(), ClaimValue::Bool(o.cloud_act_exposed));
                attributes.insert(
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
                    for k in ["model", "cc_mode"] {
                        if let Some(v) = g.get(k).and_then(serde_json::Value::as_str) {
                            c.insert(k.replace('_', "-"), ClaimValue::Text(v.to_owned()));
                        }
                    }
                    if let Some(a) = g.get("attested").and_then(serde_json::Value::as_bool) {
                        c.insert("attested".into(), ClaimValue::Bool(a));
                    }
                    ClaimValue::Map(c)
                })
                .collect();
            attributes.insert("gpus".into(), ClaimValue::Array(models));
        }
        if bundle.is_some() {
            let level = if snp_cvm { "cvm" } else { "process" };
            attributes.insert("key-protection".into(), ClaimValue::Text(level.into()));
        }
        if !locality_claims.is_empty() {
            attributes.insert("locality".into(), ClaimValue::Array(locality_claims));
        }
        if let Some(e) = &locality_error {
            attributes.insert("locality-error".into(), ClaimValue::Text(e.clone()));
            let failures = locality_failures
                .iter()
                .map(|f| {
                    let mut c = Claims::new();
                    c.insert("landmark".into(), ClaimValue::Text(f.landmark.clone()));
                    c.insert("check".into(), ClaimValue::Text(f.check.clone()));
                    ClaimValue::Map(c)
                })
                .collect();
            attributes.insert("locality-failures".into(), ClaimValue::Array(failures));
        }
        let result = AttestationResult {
            iat: at,
            exp: at + ear_ttl,
            nonce: nonce.as_bytes().to_vec(),
            status,
            verifier_id: VerifierId {
                build: concat!("custody-verifier ", env!("CARGO_PKG_VERSION")).into(),
                developer: "https://example.invalid/custody".into(),
            },
            submods,
            node_id: node.id.clone(),
            site,
            country,
            operator,
            policy_id: Some(decision.policy_id.clone()),
            policy_digest,
            attributes,
        };
        let ear = ear::sign(&result, key).map_err(|e| e.to_string())?;
        let keys_vouched = failed_check.is_none();
        Ok(Appraisal {
            status,
            failed_check,
            reasons,
            ear,
            evidence_sha256,
            tpm_clock,
            learned,
            reference_source,
            input,
            session_keys: bundle.as_ref().filter(|_| keys_vouched).map(|b| b.session_keys),
            awaits_approval,
        })
    }
}

fn device_json<C: Serialize, E: FailedCheck>(
    kind: &str,
    o: &custody_verifier::check::Outcome<C, E>,
) -> serde_json::Value {
    match o {
        Ok(v) => {
            serde_json::json!({"kind": kind, "verified": true, "claims": serde_json::to_value(&v.claims).unwrap_or_default()})
        }
        Err(r) => serde_json::json!({"kind": kind, "verified": false, "failed_check": r.error.check()}),
    }
}

/// Releases a node's in-flight mark when the round ends, however it ends.
pub(crate) struct InFlight<'a> {
    svc: &'a Service,
    node: String,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.svc
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.node);
    }
}

impl Service {
    pub(crate) fn claim_round(&self, node_id: &str) -> Option<InFlight<'_>> {
        let mut set = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        set.insert(node_id.to_owned()).then(|| InFlight {
            svc: self,
            node: node_id.to_owned(),
        })
    }

    /// Pull one round from the node's agent now.
    #[tracing::instrument(skip(self), fields(node = %node_id))]
    pub async fn attest(self: &Arc<Self>, node_id: &str) -> Result<RoundSummary, ServiceError> {
        let node = self
            .store
            .node(node_id)?
            .ok_or_else(|| ServiceError::NoNode(node_id.into()))?;
        let started = Instant::now();
        let Some(_guard) = self.claim_round(&node.id) else {
            return Err(ServiceError::Busy(format!(
                "a round with `{}` is already running",
                node.name
            )));
        };
        let nonce = self
            .nonces
            .issue(&node.id)
            .map_err(|e| ServiceError::Core(e.to_string()))?;
        // The deny list rides along (see `deny`); without one the round still runs.
        let deny = match self.deny_list() {
            Ok(l) => Some(l.as_ref().clone()),
            Err(e) => {
                tracing::error!(error = %e, "no deny list for the round request");
                None
            }
        };
        let body = api::to_cbor("round request", &RoundRequest { nonce, deny })
            .map_err(|e| ServiceError::Core(e.to_string()))?;
        let url = format!("https://{}/v1/round", node.endpoint);
        let reply = match self.agents.for_node(&node.id) {
            Ok(c) => c.request(http::Method::POST, &url, Some(api::CBOR), body).await,
            Err(e) => Err(e),
        };
        // The nonce is spent whatever happened; evidence after its TTL is refused.
        let nonce_state = self.nonces.take(&nonce, &node.id);
        let bytes;
        let arrived = match reply {
            // Out of descriptors or memory here: the verifier's trouble, not the node's.
            Err(e) if e.is_local() => Arrived::Nothing {
                check: VERIFIER_ERROR,
                detail: e.to_string(),
            },
            Err(e) => Arrived::Nothing {
                check: "agent_reachable",
                detail: e.to_string(),
            },
            Ok(r) if r.status != http::StatusCode::OK => Arrived::Nothing {
                check: "agent_round",
                detail: match api::from_cbor::<api::Refusal>("refusal", &r.body) {
                    Ok(f) => format!("agent refused the round: {}: {}", f.check, f.detail),
                    Err(_) => format!("agent answered HTTP {}", r.status),
                },
            },
            Ok(r) => match nonce_state {
                Err(e) => Arrived::Nothing {
                    check: "nonce",
                    detail: e.to_string(),
                },
                Ok(()) => {
                    bytes = r.body;
                    Arrived::Bundle(&bytes)
                }
            },
        };
        let extras = match &arrived {
            Arrived::Bundle(b) => self.measure_locality(&node, b).await,
            Arrived::Nothing { .. } => Extras::default(),
        };
        // The appraisal runs here, as before; the commit is awaited without blocking
        // this worker thread.
        let (concluding, write) = self.prepare_conclusion(node, nonce, arrived, &extras, started)?;
        let result_id = self.commit_round_async(write).await?;
        self.finish_conclusion(concluding, result_id).map(|(s, _)| s)
    }

    /// Locality proofs for the session key the bundle names: this verifier's own
    /// measurement and every remote landmark's, all at the same time. The appraisal
    /// checks each statement against the bundle's attested key; here the key is only
    /// read to know whom to expect.
    async fn measure_locality(&self, node: &NodeRecord, bundle: &[u8]) -> Extras {
        let Some(endpoint) = node.locality_endpoint.as_ref() else {
            return Extras::default();
        };
        let Ok(b) = EvidenceBundle::from_cbor(bundle) else {
            return Extras::default();
        };
        let key = b.session_keys.ed25519;
        // Spawned first, so they run while this task measures.
        let mut remotes = tokio::task::JoinSet::new();
        for (i, l) in self.cfg.landmarks.iter().enumerate() {
            let req = custody_locality::remote::MeasureRequest::new(&node.id, endpoint, &key);
            let (url, id) = (l.url.clone(), l.id.clone());
            let timeout = Duration::from_millis(l.timeout_ms);
            let span = tracing::info_span!("remote_landmark", landmark = %id, %url);
            remotes.spawn(
                async move {
                    let outcome = custody_locality::remote::request_measurement(&url, &req, timeout)
                        .await
                        .map_err(|e| {
                            tracing::warn!(check = e.check(), error = %e, "remote landmark failed");
                            (e.check().to_owned(), e.to_string())
                        });
                    (
                        i,
                        LandmarkOutcome {
                            landmark: id,
                            outcome,
                        },
                    )
                }
                .instrument(span),
            );
        }
        let locality = match self.cfg.landmark.as_ref() {
            Some(landmark) => Some(self.measure_own(landmark, node, endpoint, key).await),
            None => None,
        };
        let mut remote = Vec::with_capacity(self.cfg.landmarks.len());
        while let Some(r) = remotes.join_next().await {
            if let Ok(r) = r {
                remote.push(r);
            }
        }
        remote.sort_by_key(|(i, _)| *i);
        Extras {
            locality,
            remote: remote.into_iter().map(|(_, o)| o).collect(),
        }
    }

    /// As a landmark: time challenges answered by the session key and sign what was
    /// measured.
    async fn measure_own(
        &self,
        landmark: &crate::config::Landmark,
        node: &NodeRecord,
        endpoint: &str,
        key: [u8; 32],
    ) -> LandmarkOutcome {
        let checked = |e: custody_locality::LocalityError| (e.check().to_owned(), e.to_string());
        let m = custody_locality::net::measure(
            endpoint,
            &landmark.id,
            &key,
            landmark.probes,
            Duration::from_secs(self.cfg.round_timeout_secs),
        )
        .await;
        let outcome = m.map_err(checked).and_then(|m| {
            m.statement(
                &landmark.id,
                custody_locality::LatLon::new(landmark.lat, landmark.lon),
                &node.id,
                key,
                // No processing time is subtracted: the bound errs on the far side.
                Duration::ZERO,
                now(),
            )
            .sign(&self.landmark_key)
            .map_err(checked)
        });
        LandmarkOutcome {
            landmark: landmark.id.clone(),
            outcome,
        }
    }

    /// Push mode: appraise a bundle the node sent with a nonce it asked for, and record
    /// it (blocking until written).
    pub fn appraise_pushed(
        &self,
        node_id: &str,
        bundle: &[u8],
    ) -> Result<(RoundSummary, Vec<u8>), ServiceError> {
        let (concluding, write) = self.prepare_pushed(node_id, bundle)?;
        let result_id = self.commit_round(write)?;
        self.finish_conclusion(concluding, result_id)
    }

    /// Push mode as the API runs it: the appraisal on a blocking thread, then the
    /// group commit awaited without holding that thread, then the rest.
    pub async fn push_round(
        self: Arc<Self>,
        node_id: String,
        bundle: axum::body::Bytes,
    ) -> Result<(RoundSummary, Vec<u8>), ServiceError> {
        // One round per node at a time, pushed or pulled; taken before the nonce is
        // spent, so a refused push costs the node nothing.
        let this = self.clone();
        let Some(_guard) = this.claim_round(&node_id) else {
            return Err(ServiceError::Busy(format!(
                "a round with node `{node_id}` is already running"
            )));
        };
        let svc = self.clone();
        let (concluding, write) = tokio::task::spawn_blocking(move || svc.prepare_pushed(&node_id, &bundle))
            .await
            .map_err(|e| ServiceError::Core(format!("appraisal task: {e}")))??;
        let result_id = self.commit_round_async(write).await?;
        if concluding.node.state == concluding.previous {
            // No event and no revocation entry to write: nothing here blocks.
            return self.finish_conclusion(concluding, result_id);
        }
        tokio::task::spawn_blocking(move || self.finish_conclusion(concluding, result_id))
            .await
            .map_err(|e| ServiceError::Core(format!("round task: {e}")))?
    }

    #[tracing::instrument(skip(self, bundle), fields(node = %node_id))]
    fn prepare_pushed(
        &self,
        node_id: &str,
        bundle: &[u8],
    ) -> Result<(Concluding, crate::commit::RoundWrite), ServiceError> {
        let started = Instant::now();
        let node = self
            .store
            .node(node_id)?
            .ok_or_else(|| ServiceError::NoNode(node_id.into()))?;
        // The nonce is read from the bundle only to find the issued one; appraisal then
        // checks the whole bundle against it.
        let nonce = match EvidenceBundle::from_cbor(bundle) {
            Ok(b) => b.nonce,
            Err(e) => {
                return self.prepare_conclusion(
                    node,
                    Nonce([0; 32]),
                    Arrived::Nothing {
                        check: "bundle_format",
                        detail: e.to_string(),
                    },
                    &Extras::default(),
                    started,
                );
            }
        };
        let arrived = match self.nonces.take(&nonce, &node.id) {
            Ok(()) => Arrived::Bundle(bundle),
            Err(e) => Arrived::Nothing {
                check: "nonce",
                detail: e.to_string(),
            },
        };
        // Push rounds carry no locality proof: the verifier measures only rounds it pulls.
        // This round's own EAR is returned (not re-read from the store: another round of
        // the same node may have been stored meanwhile, and the read cost 7 % of a round).
        self.prepare_conclusion(node, nonce, arrived, &Extras::default(), started)
    }

    /// Appraise and decide the node's new state: what the round will write, and what is
    /// left to do once it is written ([`Service::finish_conclusion`]).
    fn prepare_conclusion(
        &self,
        mut node: NodeRecord,
        nonce: Nonce,
        arrived: Arrived<'_>,
        extras: &Extras,
        started: Instant,
    ) -> Result<(Concluding, crate::commit::RoundWrite), ServiceError> {
        let at = now();
        let reference = self.store.reference(&node.group)?;
        let appraise = |arrived: Arrived<'_>| {
            self.appraiser.appraise(
                &node,
                &nonce,
                arrived,
                extras,
                reference.as_ref(),
                self.cfg.reference,
                at,
                self.cfg.ear_ttl_secs,
                &self.ear_key,
            )
        };
        // Nothing a node sends may end its round without a result: an error anywhere in
        // the appraisal (a policy past its limits, a claim that will not encode) is a
        // failed round at `appraisal_error`, recorded and counted like any other.
        let a = match appraise(arrived) {
            Ok(a) => a,
            Err(e) => {
                self.metrics
                    .appraisal_errors
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(node = %node.name, error = %e, "appraisal failed; recorded as a failed round");
                appraise(Arrived::Nothing {
                    check: APPRAISAL_ERROR,
                    detail: e,
                })
                .map_err(ServiceError::Core)?
            }
        };
        let previous = node.state;
        let passed = a.failed_check.is_none();
        let blame = Blame::of(&a);
        if passed {
            node.failures = 0;
            node.reason = None;
            if node.state != NodeState::Revoked {
                node.state = NodeState::Trusted;
            }
        } else if blame == Blame::Verifier {
            // The node's state stays what it was; the result records what happened.
        } else if blame == Blame::NotCounted {
            // Failed (untrusted: no moves to it, the reason says why) but never revoked
            // for it: being silent or unreachable, or waiting for the operator's approval.
            node.reason = Some(a.reasons.join("; "));
            if node.state != NodeState::Revoked {
                node.state = NodeState::Failed;
            }
        } else {
            node.failures = node.failures.saturating_add(1);
            node.reason = Some(a.reasons.join("; "));
            if node.state != NodeState::Revoked {
                node.state = if node.failures >= self.cfg.revoke_after {
                    NodeState::Revoked
                } else {
                    NodeState::Failed
                };
            }
        }
        if let Some(c) = a.tpm_clock {
            if passed {
                node.tpm_clock = Some(c);
            }
        }
        if passed {
            node.session_keys = a.session_keys.as_ref().map(|k| {
                let mut b = k.x25519.to_vec();
                b.extend_from_slice(&k.ed25519);
                hex::encode(b)
            });
        }
        node.last_round_at = Some(at);
        node.updated_at = at;
        if let (Some(learned), true) = (&a.learned, passed || a.awaits_approval) {
            // Only if still absent (one statement): two nodes of a new group racing their
            // first round must not both define the baseline.
            if self.store.learn_reference(&node.group, learned)? {
                self.emit(
                    &node,
                    "reference_learned",
                    serde_json::json!({
                        "group": node.group,
                        "source": "tofu",
                        "pending": learned.pending,
                        "note": if learned.pending {
                            "proposed on first use: decides nothing until an operator approves it"
                        } else {
                            "trust on first use: these PCR values were not provisioned by the operator"
                        },
                    }),
                )?;
            }
        }
        let record = ResultRecord {
            id: 0,
            node_id: node.id.clone(),
            at,
            status: a.status.as_str().into(),
            failed_check: a.failed_check.clone(),
            reasons: a.reasons.clone(),
            ear: a.ear.clone(),
            evidence_sha256: a.evidence_sha256.clone(),
            input: Some(a.input.to_string()),
        };
        let entry = Entry::AttestationResult(entry::ResultEntry {
            node: node.id.clone(),
            name: node.name.clone(),
            at,
            status: a.status.as_str().into(),
            failed_check: a.failed_check.clone(),
            policy_id: self.appraiser.policy.id().into(),
            policy_digest: self.appraiser.policy.digest().into(),
            registry_version: a
                .input
                .pointer("/sovereignty/registry/version")
                .and_then(serde_json::Value::as_u64),
            registry_digest: a
                .input
                .pointer("/sovereignty/registry/digest")
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned),
            reference: a.reference_source.map(|r| r.as_str().to_owned()),
            evidence_sha256: a.evidence_sha256.clone(),
            ear_sha256: sha256_hex(&a.ear),
        });
        let mut audit = vec![entry];
        if node.state == NodeState::Revoked && previous != NodeState::Revoked {
            // The revocation is a decision too: its entry commits with the state change.
            audit.push(Entry::Revocation(entry::RevocationEntry {
                node: node.id.clone(),
                name: node.name.clone(),
                at,
                action: None,
                reason: node.reason.clone(),
                failed_check: a.failed_check.clone(),
                state: None,
                by: None,
                ek_cert_sha256: None,
            }));
        }
        let write = crate::commit::RoundWrite {
            node: node.clone(),
            record,
            audit,
        };
        Ok((
            Concluding {
                node,
                previous,
                passed,
                a,
                at,
                started,
            },
            write,
        ))
    }

    /// After the round's writes (which carried a revocation's audit entry): metrics, the
    /// state-change event, the log line, the summary.
    fn finish_conclusion(
        &self,
        c: Concluding,
        result_id: i64,
    ) -> Result<(RoundSummary, Vec<u8>), ServiceError> {
        let Concluding {
            node,
            previous,
            passed,
            a,
            at,
            started,
        } = c;
        let elapsed = started.elapsed();
        self.metrics.observe_round(passed, elapsed);
        if node.state == NodeState::Revoked && previous != NodeState::Revoked {
            self.deny_changed();
            self.metrics
                .revocations
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        if node.state != previous {
            self.emit(
                &node,
                node.state.as_str(),
                serde_json::json!({
                    "previous": previous.as_str(),
                    "reason": node.reason,
                    "failed_check": a.failed_check,
                }),
            )?;
        }
        match &a.failed_check {
            None => tracing::info!(node = %node.name, status = a.status.as_str(), "round passed"),
            Some(c) => {
                tracing::warn!(node = %node.name, check = %c, state = node.state.as_str(), "round failed")
            }
        }
        Ok((
            RoundSummary {
                node_id: node.id,
                name: node.name,
                state: node.state,
                status: a.status.as_str().into(),
                failed_check: a.failed_check,
                reasons: a.reasons,
                reference: a.reference_source,
                result_id,
                at,
                duration_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            },
            a.ear,
        ))
    }

    /// Store an event, log it and send it to the webhooks.
    pub fn emit(&self, node: &NodeRecord, kind: &str, detail: serde_json::Value) -> Result<(), ServiceError> {
        let ev = Event {
            id: 0,
            at: now(),
            node_id: node.id.clone(),
            kind: kind.into(),
            detail,
        };
        let id = self.store.add_event(&ev)?;
        tracing::info!(node = %node.name, event = kind, detail = %ev.detail, "node event");
        self.events.send(Event { id, ..ev }, &node.name);
        Ok(())
    }
}

/// Continuous attestation: every node that is not revoked gets a round once per interval.
pub async fn schedule(svc: Arc<Service>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let interval = svc.cfg.interval_secs;
    let tick = Duration::from_secs(interval.clamp(1, 5));
    // Rounds in flight at most; the rest wait for the next tick.
    let limit = Arc::new(tokio::sync::Semaphore::new(256));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = stop.changed() => return,
        }
        let nodes = match svc.store.nodes() {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(error = %e, "cannot list nodes");
                continue;
            }
        };
        let t = now();
        for n in nodes {
            let due = n
                .last_round_at
                .is_none_or(|l| t.saturating_sub(l) >= i64::try_from(interval).unwrap_or(i64::MAX));
            if n.state == NodeState::Revoked || !due {
                continue;
            }
            let Ok(permit) = limit.clone().try_acquire_owned() else {
                break;
            };
            let s = svc.clone();
            tokio::spawn(async move {
                match s.attest(&n.id).await {
                    Ok(_) => {}
                    // Another round of this node is running: it records its own result.
                    Err(ServiceError::Busy(_)) => {}
                    Err(e) => tracing::warn!(node = %n.name, error = %e, "scheduled round not recorded"),
                }
                drop(permit);
            });
        }
    }
}

#[cfg(test)]
mod locality_tests {
    use super::*;
    use custody_locality::{LandmarkKey, LandmarkStatement, PinnedLandmark};

    const SESSION: [u8; 32] = [7; 32];

    fn node() -> NodeRecord {
        NodeRecord {
            name: "n1".into(),
            group: "g".into(),
            locality_endpoint: Some("127.0.0.1:2".into()),
            ..NodeRecord::sample("node-1")
        }
    }

    fn statement(landmark: &str, node: &str, session: [u8; 32], bound_km: f64, at: i64) -> LandmarkStatement {
        LandmarkStatement {
            landmark: landmark.into(),
            lat: 48.8566,
            lon: 2.3522,
            node: node.into(),
            session_ed25519: session,
            rtt_us: 20_000,
            probes: 4,
            bound_km,
            measured_at: at,
        }
    }

    fn ok(landmark: &str, bytes: Vec<u8>) -> LandmarkOutcome {
        LandmarkOutcome {
            landmark: landmark.into(),
            outcome: Ok(bytes),
        }
    }

    /// A bundle without TPM evidence still names its session keys: the locality part of
    /// the appraisal runs (the round fails `tpm_present`, which is not what is tested).
    #[test]
    fn each_landmark_counts_only_under_its_own_pin() {
        let at = 1_790_000_000;
        let own = LandmarkKey::from_seed(&[1; 32]).unwrap();
        let fra = LandmarkKey::from_seed(&[2; 32]).unwrap();
        let ams = LandmarkKey::from_seed(&[3; 32]).unwrap();
        let stranger = LandmarkKey::from_seed(&[4; 32]).unwrap();
        let mut a = Appraiser::new(Policy::shipped("default").unwrap()).unwrap();
        a.landmarks = vec![own.public_key()];
        let pin = |id: &str, key: [u8; 32]| PinnedLandmark { id: id.into(), key };
        a.remote_landmarks = vec![
            pin("fra-1", fra.public_key()),
            pin("ams-1", ams.public_key()),
            pin("lon-1", [10; 32]),
            pin("mad-1", [11; 32]),
        ];
        let nonce = Nonce([5; 32]);
        let bundle = EvidenceBundle {
            version: 1,
            nonce,
            session_keys: SessionKeys {
                x25519: [6; 32],
                ed25519: SESSION,
            },
            tpm: None,
            snp: None,
            gpus: vec![],
            gpu_identities: vec![],
            platform: Default::default(),
        }
        .to_cbor()
        .unwrap();
        let sign = |k: &LandmarkKey, s: LandmarkStatement| s.sign(k).unwrap();
        let extras = Extras {
            locality: Some(ok(
                "paris-verifier",
                sign(&own, statement("paris-verifier", "node-1", SESSION, 4.0, at)),
            )),
            remote: vec![
                ok(
                    "fra-1",
                    sign(&fra, statement("fra-1", "node-1", SESSION, 1500.0, at - 5)),
                ),
                // Signed by a key not pinned for ams-1.
                ok(
                    "ams-1",
                    sign(&stranger, statement("ams-1", "node-1", SESSION, 1.0, at)),
                ),
                // Pinned key of another landmark (fra's) speaking as lon-1.
                ok(
                    "lon-1",
                    sign(&fra, statement("lon-1", "node-1", SESSION, 1.0, at)),
                ),
                // ams-1's key, but about another session key, a stale one, another node.
                ok(
                    "ams-1",
                    sign(&ams, statement("ams-1", "node-1", [9; 32], 1.0, at)),
                ),
                ok(
                    "ams-1",
                    sign(&ams, statement("ams-1", "node-1", SESSION, 1.0, at - 121)),
                ),
                ok(
                    "ams-1",
                    sign(&ams, statement("ams-1", "node-2", SESSION, 1.0, at)),
                ),
                // Never configured.
                ok(
                    "nowhere",
                    sign(&ams, statement("nowhere", "node-1", SESSION, 1.0, at)),
                ),
                LandmarkOutcome {
                    landmark: "mad-1".into(),
                    outcome: Err(("landmark_unreachable".into(), "connect: refused".into())),
                },
            ],
        };
        let key = ear::EarSigningKey::generate().unwrap();
        let r = a
            .appraise(
                &node(),
                &nonce,
                Arrived::Bundle(&bundle),
                &extras,
                None,
                ReferenceMode::Tofu,
                at,
                600,
                &key,
            )
            .unwrap();
        let proofs = r.input["locality"]["proofs"].as_array().unwrap();
        let names: Vec<_> = proofs.iter().map(|p| p["landmark"].as_str().unwrap()).collect();
        assert_eq!(names, ["paris-verifier", "fra-1"], "{}", r.input);
        assert_eq!(proofs[1]["bound_km"], 1500.0);
        let failures: Vec<(String, String)> = r.input["locality_failures"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    f["landmark"].as_str().unwrap().to_owned(),
                    f["check"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let want = [
            ("ams-1", "locality_landmark"),
            ("lon-1", "locality_landmark"),
            ("ams-1", "locality_session_key"),
            ("ams-1", "locality_stale"),
            ("ams-1", "locality_node"),
            ("nowhere", "locality_landmark"),
            ("mad-1", "landmark_unreachable"),
        ];
        assert_eq!(
            failures,
            want.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect::<Vec<_>>()
        );
        assert!(r.input["locality_error"]
            .as_str()
            .unwrap()
            .starts_with("locality_landmark: "));
        // The round failed for its own reason, not for locality.
        assert_eq!(r.failed_check.as_deref(), Some("tpm_present"));
        // Own statement about another node does not count either.
        let extras = Extras {
            locality: Some(ok(
                "paris-verifier",
                sign(&own, statement("paris-verifier", "node-2", SESSION, 4.0, at)),
            )),
            remote: vec![],
        };
        let r = a
            .appraise(
                &node(),
                &nonce,
                Arrived::Bundle(&bundle),
                &extras,
                None,
                ReferenceMode::Tofu,
                at,
                600,
                &key,
            )
            .unwrap();
        assert!(r.input.get("locality").is_none(), "{}", r.input);
        assert_eq!(r.input["locality_failures"][0]["check"], "locality_node");
    }
}

#[cfg(test)]
mod gpu_tests {
    use super::*;
    use custody_formats::bundle::{GpuEvidence, GpuIdentity};

    /// Issue 21: an attested GPU was labelled with the NVML name, which nothing signs,
    /// and the migration's chip check decided on it. Its model now comes from the signed
    /// report's leaf certificate; the NVML name labels only a GPU whose report did not
    /// verify, which is then unattested.
    #[test]
    fn an_attested_gpu_is_named_by_its_signed_report_not_by_nvml() {
        let bundle = EvidenceBundle {
            version: 1,
            nonce: Nonce([5; 32]),
            session_keys: SessionKeys {
                x25519: [6; 32],
                ed25519: [7; 32],
            },
            tpm: None,
            snp: None,
            gpus: (0..2)
                .map(|index| GpuEvidence {
                    index,
                    report: vec![],
                    cert_chain: vec![],
                })
                .collect(),
            // The agent claims B200s: FP8-capable chips a Hopper checkpoint would go to.
            gpu_identities: vec![
                GpuIdentity::named(0, "NVIDIA B200", true),
                GpuIdentity::named(1, "NVIDIA B200", true),
            ],
            platform: Default::default(),
        };
        let mut devices = serde_json::Map::new();
        devices.insert(
            "gpu0".into(),
            serde_json::json!({"verified": true, "platform": "bound",
                "claims": {"hwmodel": "GH100 A01 GSP FMC LF", "architecture": "hopper"}}),
        );
        devices.insert(
            "gpu1".into(),
            serde_json::json!({"verified": false, "failed_check": "signature", "claims": null}),
        );
        let inv = gpu_inventory(Some(&bundle), &devices);
        assert_eq!(inv[0]["model"], "GH100 A01 GSP FMC LF");
        assert_eq!(inv[0]["attested"], true);
        assert_eq!(
            custody_mover::chips::Chip::from_model(inv[0]["model"].as_str().unwrap()),
            Some(custody_mover::chips::Chip::H100)
        );
        assert_eq!(inv[1]["model"], "NVIDIA B200");
        assert_eq!(inv[1]["attested"], false);
    }
}
