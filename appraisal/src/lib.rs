//! The appraisal of one attestation round, pure: no I/O, no clock, no database. The
//! service loads the [`Context`] (node, nonce, reference values, time), decodes what
//! arrived once ([`Received`]), calls [`Appraiser::appraise`], and stores the typed
//! [`Appraisal`] it gets back.
//!
//! Stages, in order; the first failure names the round's failed check:
//! 1. the bundle ([`bundle`]): `bundle_format` -> `nonce`;
//! 2. the TPM ([`tpm`]): `tpm_present` -> `ak_enrolled` -> the quote's checks ->
//!    `clock_monotonic` -> `pcr_selection` -> `reference_values` / `reference_pending`;
//! 3. SEV-SNP ([`snp`]): `snp.*`, and whether the report vouches for this node ([`cvm`]);
//!    Intel TDX ([`tdx`]): `tdx.*`, the same question for a TD; an Azure CVM ([`azure`]):
//!    `azure.*`, the paravisor's SNP report, its vTPM key and that key's quote;
//! 4. GPUs ([`gpu`]): `gpuN.*`;
//! 5. sovereignty ([`sovereignty`]): the registry's site and operator of the hardware;
//! 6. locality ([`locality`]): landmark proofs, `locality_consistency`;
//! 7. the policy input ([`input`]) and the decision (`policy`);
//! 8. the EAR ([`claims`]), signed.
//!
//! Adding an evidence kind is one stage module here (its verifier lives in
//! `custody-verifier`), one bundle field and one agent collector: see
//! docs/architecture (`../shared/ARCHITECTURE.md` in the workspace) for the steps.
#![forbid(unsafe_code)]

pub mod azure;
pub mod bundle;
pub mod claims;
pub mod context;
pub mod cvm;
pub mod findings;
pub mod gpu;
pub mod input;
pub mod locality;
pub mod snp;
pub mod sovereignty;
pub mod tdx;
pub mod tpm;

pub use context::{
    Arrived, Context, Extras, LandmarkOutcome, LocalityFailure, Masked64, MinTcb, Node, Received, Reference,
    ReferenceMode, ReferenceSource, SnpReferenceValues, TdxReferenceValues, TpmClock, POLICY_BITS,
};
pub use findings::REFERENCE_PENDING;
pub use tdx::TdxSetup;

use custody_formats::binding::{Binding, SessionKeys};
use custody_policy::{Policy, PolicyError};
use custody_registry::signed::VerifiedRegistry;
use custody_verifier::azure::AzureVerifier;
use custody_verifier::crl::Crl;
use custody_verifier::ear::{self, AttestationResult, EarError, EarSigningKey, TrustTier, VerifierId};
use custody_verifier::nvgpu::{NvgpuVerifier, RIM_ROOT_PEM};
use custody_verifier::rim::library::RimLibrary;
use custody_verifier::snp::SnpVerifier;
use custody_verifier::tpm::TpmVerifier;
use custody_verifier::x509::TrustAnchor;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};
use thiserror::Error;

/// The appraisal itself could not finish (the service records the round as failed at
/// `appraisal_error` with this reason: nothing a node sends ends a round without a result).
#[derive(Debug, Error)]
pub enum AppraisalError {
    /// A claim would not encode into the EAR, or the EAR would not sign.
    #[error(transparent)]
    Ear(#[from] EarError),
    /// The policy failed (past its instruction limit, a malformed input).
    #[error(transparent)]
    Policy(#[from] PolicyError),
}

/// A verifier setting that cannot be used (a root, a CRL, a RIM library).
#[derive(Debug, Error)]
#[error("{0}")]
pub struct SetupError(pub String);

/// The appraisal of one round, before it is stored.
#[derive(Debug, Clone)]
pub struct Appraisal {
    /// When it was appraised (the EAR's `iat`).
    pub at: i64,
    pub status: TrustTier,
    pub failed_check: Option<String>,
    pub reasons: Vec<String>,
    /// The signed EAR (COSE_Sign1).
    pub ear: Vec<u8>,
    pub evidence_sha256: String,
    pub tpm_clock: Option<TpmClock>,
    /// Reference values learnt from this round (trust on first use).
    pub learned: Option<Reference>,
    /// What the PCRs were compared with, when they were.
    pub reference_source: Option<ReferenceSource>,
    /// The node's GPUs: attested ones named by their signed reports.
    pub gpus: Vec<gpu::Gpu>,
    /// The site, country and operator the registry puts the node's hardware at.
    pub place: claims::Place,
    /// What the policy decided on (JSON): kept with the result for `custody policy explain`.
    pub input: serde_json::Value,
    /// The session keys this round's evidence vouched for (only when it passed).
    pub session_keys: Option<SessionKeys>,
    /// The round failed only because its group's baseline awaits an operator's approval
    /// (`reference_pending`): not counted towards revocation.
    pub awaits_approval: bool,
}

/// The appraisal engines and the verifier's appraisal settings, built once.
#[derive(Debug)]
pub struct Appraiser {
    tpm: TpmVerifier,
    snp: SnpVerifier,
    /// Azure CVMs: the same SNP roots and CRLs as `snp`.
    azure: AzureVerifier,
    gpu: NvgpuVerifier,
    pub policy: Policy,
    /// PCRs every quote must cover, per bank (config `min_pcrs`), checked at
    /// `pcr_selection`: a node cannot quote less and so learn or pass a baseline that
    /// compares nothing.
    pub min_pcrs: BTreeMap<String, BTreeSet<u32>>,
    /// The landmarks whose statements count, and the consistency tolerance.
    pub landmarks: locality::Landmarks,
    /// The signed registry in force; replaced whole when a newer version is adopted.
    pub registry: RwLock<Option<Arc<VerifiedRegistry>>>,
    /// The operator's NVIDIA RIMs (`gpu_rims`): GPU measurements are compared with them.
    pub gpu_rims: Option<RimLibrary>,
    /// `[snp]` reference values: without them no SNP report makes the key `cvm`.
    pub snp_reference: Option<SnpReferenceValues>,
    /// `[tdx]`: Intel's root, the collateral and the reference values. Without it a TDX
    /// quote fails at `tdx.collateral`. Set with [`Appraiser::use_tdx`].
    tdx: Option<TdxSetup>,
}

impl Appraiser {
    pub fn new(policy: Policy) -> Result<Self, SetupError> {
        let snp = SnpVerifier::builtin().map_err(|e| SetupError(format!("SNP roots: {e}")))?;
        Ok(Self {
            tpm: TpmVerifier::new(),
            azure: AzureVerifier {
                snp: snp.clone(),
                tdx: custody_verifier::tdx::TdxVerifier::new()
                    .map_err(|e| SetupError(format!("Intel root: {e}")))?,
                tpm: TpmVerifier::new(),
            },
            snp,
            gpu: NvgpuVerifier::new().map_err(|e| SetupError(format!("NVIDIA roots: {e}")))?,
            policy,
            min_pcrs: BTreeMap::from([("sha256".to_owned(), (0..=7).collect())]),
            landmarks: locality::Landmarks {
                tolerance_km: 50.0,
                ..Default::default()
            },
            registry: RwLock::new(None),
            gpu_rims: None,
            snp_reference: None,
            tdx: None,
        })
    }

    /// Trust a test ARK beside AMD's (`[snp] test_ark`, for tests only).
    pub fn trust_snp_test_ark(&mut self, pem: &[u8]) -> Result<(), SetupError> {
        self.snp = self
            .snp
            .clone()
            .with_test_ark(pem)
            .map_err(|e| SetupError(e.to_string()))?;
        self.azure.snp = self.snp.clone();
        Ok(())
    }

    /// AMD KDS CRLs for the SEV-SNP chains (`[snp] crls`); each is checked against its
    /// ARK when a chain uses it.
    pub fn use_snp_crls(&mut self, crls: Vec<Crl>, grace_secs: i64) {
        self.snp = self.snp.clone().with_crls(crls, grace_secs);
        self.azure.snp = self.snp.clone();
    }

    /// `[tdx]`: bare-metal TDX quotes and Azure's TD quotes are appraised with it (one
    /// verifier: the same root and warm cache).
    pub fn use_tdx(&mut self, setup: Option<TdxSetup>) {
        if let Some(s) = &setup {
            self.azure.tdx = s.verifier.clone();
        }
        self.tdx = setup;
    }

    pub fn tdx(&self) -> Option<&TdxSetup> {
        self.tdx.as_ref()
    }

    /// The AMD CRLs in use (for the collateral freshness metric).
    pub fn snp_crls(&self) -> &[Crl] {
        self.snp.crls()
    }

    /// Trust a test device-identity root beside NVIDIA's (`[nvgpu] test_root`, for tests
    /// only).
    pub fn trust_gpu_test_root(&mut self, pem: &[u8]) -> Result<(), SetupError> {
        let mut device = self.gpu.device_roots().to_vec();
        device.extend(TrustAnchor::from_pem_or_der(pem).map_err(|e| SetupError(e.to_string()))?);
        let rim = TrustAnchor::from_pem_or_der(RIM_ROOT_PEM).map_err(|e| SetupError(e.to_string()))?;
        self.gpu = NvgpuVerifier::with_roots(device, rim);
        Ok(())
    }

    /// The registry in force (a snapshot: a newer one adopted meanwhile does not change
    /// a round under way).
    pub fn registry(&self) -> Option<Arc<VerifiedRegistry>> {
        self.registry
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Appraise one round. Pure: the time is `cx.at`; the only side effect is the
    /// signature with `key`.
    pub fn appraise(
        &self,
        cx: &Context<'_>,
        arrived: &Arrived,
        extras: &Extras,
        key: &EarSigningKey,
    ) -> Result<Appraisal, AppraisalError> {
        let mut f = findings::Findings::default();
        let registry = self.registry();
        let reg = registry.as_deref().map(VerifiedRegistry::registry);
        let (received, bundle) = bundle::open(cx, arrived, &mut f);
        let mut tpm = tpm::TpmStage::default();
        let mut key_protection = None;
        if let Some(b) = bundle {
            let binding = Binding::compute(cx.nonce, &b.session_keys);
            tpm = tpm::appraise(&self.tpm, &self.min_pcrs, cx, b, &binding, &mut f)?;
            let snp = match &b.snp {
                Some(s) => snp::appraise(
                    &self.snp,
                    self.snp_reference.as_ref(),
                    reg,
                    cx,
                    s,
                    &binding,
                    &mut f,
                )?,
                None => false,
            };
            let tdx = match &b.tdx {
                Some(t) => tdx::appraise(self.tdx.as_ref(), reg, cx, t, &binding, &mut f)?,
                None => false,
            };
            let azure = match (&b.azure, &b.tpm) {
                (Some(a), Some(t)) => azure::appraise(
                    &self.azure,
                    self.snp_reference.as_ref(),
                    self.tdx.as_ref(),
                    reg,
                    cx,
                    a,
                    t,
                    &binding,
                    &mut f,
                )?,
                // Without a TPM quote the round has failed at `tpm_present` already.
                _ => false,
            };
            if b.snp.is_none() && b.tdx.is_none() && b.azure.is_none() {
                f.key_protection_reasons
                    .push("no confidential-VM evidence (SEV-SNP or TDX)".into());
            }
            let cvm = snp || tdx || azure;
            gpu::appraise(&self.gpu, self.gpu_rims.as_ref(), reg, cx, b, &binding, &mut f)?;
            key_protection = Some(input::KeyProtection {
                cvm,
                reasons: std::mem::take(&mut f.key_protection_reasons),
            });
        }
        if let Some(fl) = &f.failure {
            let sub = findings::failed_submod(&fl.check, &fl.reason);
            f.submods.entry("tpm".into()).or_insert(sub);
        }

        let hardware = sovereignty::attested_hardware(&cx.node, &f.devices);
        let derived = sovereignty::derive(registry.as_deref(), &hardware);
        let loc = match (bundle, &key_protection) {
            (Some(b), Some(k)) => {
                let protection = if k.cvm {
                    custody_locality::KeyProtection::Cvm
                } else {
                    custody_locality::KeyProtection::Process
                };
                let key = locality::SessionKey {
                    ed25519: &b.session_keys.ed25519,
                    protection,
                };
                locality::appraise(
                    &self.landmarks,
                    registry.as_deref(),
                    derived.as_ref(),
                    cx,
                    key,
                    extras,
                    &mut f,
                )
            }
            _ => locality::LocalityStage::default(),
        };
        let gpus = gpu::inventory(bundle, &f.devices);
        let policy_input = input::build(&input::Parts {
            node: &cx.node,
            findings: &f,
            reference_source: tpm.reference_source,
            hardware: &hardware,
            gpus: &gpus,
            sovereignty: derived.as_ref(),
            locality: &loc,
            key_protection: key_protection.as_ref(),
        });
        let decision = self.policy.evaluate(&policy_input)?;

        let mut reasons = Vec::new();
        if let Some(fl) = &f.failure {
            reasons.push(format!("{}: {}", fl.check, fl.reason));
        }
        for r in &decision.reasons {
            if !reasons.iter().any(|x| x.contains(r.as_str())) {
                reasons.push(r.clone());
            }
        }
        let failed_check = f
            .failure
            .as_ref()
            .map(|fl| fl.check.clone())
            .or_else(|| (!decision.allow).then(|| "policy".to_owned()));
        // Only the operator's pending approval stands between this round and a pass: the
        // node is not trusted, but this is not its failure.
        let awaits_approval = failed_check.as_deref() == Some(REFERENCE_PENDING)
            && decision.reasons.iter().all(|r| r.contains(REFERENCE_PENDING));
        let mut status = f
            .submods
            .values()
            .map(|s| s.status)
            .max()
            .unwrap_or(TrustTier::None);
        if !decision.allow || failed_check.is_some() {
            status = TrustTier::Contraindicated;
        }
        let (attributes, place) = claims::attributes(
            tpm.reference_source,
            derived.as_ref(),
            &gpus,
            key_protection.as_ref(),
            &loc,
        );
        let result = AttestationResult {
            iat: cx.at,
            exp: cx.at + cx.ear_ttl,
            nonce: cx.nonce.as_bytes().to_vec(),
            status,
            verifier_id: VerifierId {
                build: concat!("custody-verifier ", env!("CARGO_PKG_VERSION")).into(),
                developer: "https://example.invalid/custody".into(),
            },
            submods: f.submods,
            node_id: cx.node.id.to_owned(),
            site: place.site.clone(),
            country: place.country.clone(),
            operator: place.operator.clone(),
            policy_id: Some(decision.policy_id.clone()),
            policy_digest: hex::decode(&decision.policy_digest)
                .ok()
                .filter(|d| d.len() == 32),
            attributes,
        };
        let ear = ear::sign(&result, key)?;
        let keys_vouched = failed_check.is_none();
        Ok(Appraisal {
            at: cx.at,
            status,
            failed_check,
            reasons,
            ear,
            evidence_sha256: received.map(|r| r.sha256.clone()).unwrap_or_default(),
            tpm_clock: tpm.clock,
            learned: tpm.learned,
            reference_source: tpm.reference_source,
            gpus,
            place,
            input: policy_input,
            session_keys: bundle.filter(|_| keys_vouched).map(|b| b.session_keys),
            awaits_approval,
        })
    }
}
