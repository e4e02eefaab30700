//! The collector seam: one implementation per evidence source. A collector receives the
//! round's binding and returns its evidence with the binding inside (TPM2_Quote extraData,
//! SNP and TDX report_data, SPDM requester nonce), or says cleanly that its hardware is not here,
//! so a node without a GPU or outside a CVM still attests with what it has.

use crate::session::Session;
use custody_formats::binding::{Binding, Nonce};
use custody_formats::bundle::{
    AzureEvidence, EvidenceBundle, GpuEvidence, GpuIdentity, SnpEvidence, TdxEvidence, TpmEvidence,
    BUNDLE_VERSION,
};
use std::collections::BTreeMap;
use thiserror::Error;

/// Evidence one collector produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Evidence {
    Tpm(TpmEvidence),
    Snp(SnpEvidence),
    Tdx(TdxEvidence),
    Azure(AzureEvidence),
    /// One entry per GPU on the node.
    Gpus(Vec<GpuEvidence>),
    /// What the NVML collector returns: reports of the GPUs in confidential-computing mode
    /// and the unattested identity of every GPU it saw (both may be empty on their own).
    Nvgpu(GpuRound),
}

/// The GPU part of a round: `evidence` goes to the bundle's `gpus`, `identities` to
/// `gpu_identities`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GpuRound {
    pub evidence: Vec<GpuEvidence>,
    pub identities: Vec<GpuIdentity>,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CollectError {
    /// The hardware or its driver is absent here (no `/dev/tpmrm0`, not a CVM, no NVML):
    /// the round goes on without this kind, and the result says so.
    #[error("{kind}: not available here: {reason}")]
    NotAvailable { kind: &'static str, reason: String },
    /// The hardware is there but collection failed: the round fails.
    #[error("{kind}: collection failed: {reason}")]
    Failed { kind: &'static str, reason: String },
}

/// One evidence source.
pub trait Collector {
    /// `tpm`, `snp`, `tdx`, `azure`, `nvgpu`.
    fn kind(&self) -> &'static str;
    fn collect(&self, binding: &Binding) -> Result<Evidence, CollectError>;
}

/// A round's bundle and the kinds that were not available.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Round {
    pub bundle: EvidenceBundle,
    pub unavailable: Vec<(&'static str, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RoundError {
    #[error(transparent)]
    Collect(CollectError),
    #[error("two collectors produced {0} evidence")]
    Duplicate(&'static str),
}

/// Run every collector for the verifier's `nonce` and assemble the bundle.
pub fn collect_round(
    nonce: Nonce,
    session: &Session,
    collectors: &[&dyn Collector],
    platform: BTreeMap<String, String>,
) -> Result<Round, RoundError> {
    let binding = session.binding(&nonce);
    let mut bundle = EvidenceBundle {
        version: BUNDLE_VERSION,
        nonce,
        session_keys: *session.public_keys(),
        tpm: None,
        snp: None,
        tdx: None,
        azure: None,
        gpus: Vec::new(),
        gpu_identities: Vec::new(),
        platform,
    };
    let mut unavailable = Vec::new();
    // A GPU collector may rightly return no reports (no GPU in CC mode), so "already seen"
    // is tracked here, not read off an empty `gpus`.
    let mut gpus_seen = false;
    for c in collectors {
        match c.collect(&binding) {
            Ok(Evidence::Tpm(t)) if bundle.tpm.is_none() => bundle.tpm = Some(t),
            Ok(Evidence::Snp(s)) if bundle.snp.is_none() => bundle.snp = Some(s),
            Ok(Evidence::Tdx(t)) if bundle.tdx.is_none() => bundle.tdx = Some(t),
            Ok(Evidence::Azure(a)) if bundle.azure.is_none() => bundle.azure = Some(a),
            Ok(Evidence::Gpus(g)) if !gpus_seen => {
                gpus_seen = true;
                bundle.gpus = g;
            }
            Ok(Evidence::Nvgpu(g)) if !gpus_seen => {
                gpus_seen = true;
                bundle.gpus = g.evidence;
                bundle.gpu_identities = g.identities;
            }
            Ok(_) => return Err(RoundError::Duplicate(c.kind())),
            Err(CollectError::NotAvailable { kind, reason }) => unavailable.push((kind, reason)),
            Err(e) => return Err(RoundError::Collect(e)),
        }
    }
    Ok(Round { bundle, unavailable })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// Test double for a GPU collector (no GPU here): records the binding it was given and
    /// returns it as the report, as the SPDM requester nonce would carry it.
    struct Gpu(RefCell<Option<Binding>>);
    impl Collector for Gpu {
        fn kind(&self) -> &'static str {
            "nvgpu"
        }
        fn collect(&self, b: &Binding) -> Result<Evidence, CollectError> {
            *self.0.borrow_mut() = Some(*b);
            Ok(Evidence::Gpus(vec![GpuEvidence {
                index: 0,
                report: b.as_bytes().to_vec(),
                cert_chain: Vec::new(),
            }]))
        }
    }

    struct Absent;
    impl Collector for Absent {
        fn kind(&self) -> &'static str {
            "snp"
        }
        fn collect(&self, _: &Binding) -> Result<Evidence, CollectError> {
            Err(CollectError::NotAvailable {
                kind: "snp",
                reason: "/dev/sev-guest: no such device".into(),
            })
        }
    }

    struct Broken;
    impl Collector for Broken {
        fn kind(&self) -> &'static str {
            "tpm"
        }
        fn collect(&self, _: &Binding) -> Result<Evidence, CollectError> {
            Err(CollectError::Failed {
                kind: "tpm",
                reason: "TPM_RC_LOCKOUT".into(),
            })
        }
    }

    #[test]
    fn round_binds_every_collector_and_reports_absent_hardware() {
        let s = Session::generate().unwrap();
        let nonce = Nonce([3; 32]);
        let gpu = Gpu(RefCell::new(None));
        let r = collect_round(nonce, &s, &[&gpu, &Absent], BTreeMap::new()).unwrap();
        let given = gpu.0.borrow().unwrap();
        assert_eq!(given, Binding::compute(&nonce, s.public_keys()));
        assert_eq!(r.bundle.gpus[0].report, given.as_bytes());
        assert_eq!(r.bundle.session_keys, *s.public_keys());
        assert_eq!(
            r.unavailable,
            vec![("snp", "/dev/sev-guest: no such device".to_string())]
        );
        assert!(r.bundle.snp.is_none() && r.bundle.tpm.is_none());
        // The bundle survives CBOR unchanged.
        let cbor = r.bundle.to_cbor().unwrap();
        assert_eq!(EvidenceBundle::from_cbor(&cbor).unwrap(), r.bundle);
    }

    /// A GPU collector that saw GPUs but none in CC mode: identities only.
    struct CcOff;
    impl Collector for CcOff {
        fn kind(&self) -> &'static str {
            "nvgpu"
        }
        fn collect(&self, _: &Binding) -> Result<Evidence, CollectError> {
            Ok(Evidence::Nvgpu(GpuRound {
                evidence: Vec::new(),
                identities: vec![GpuIdentity::named(0, "NVIDIA L4", false)],
            }))
        }
    }

    #[test]
    fn identities_fill_the_bundle_and_an_empty_gpu_answer_still_counts() {
        let s = Session::generate().unwrap();
        let r = collect_round(Nonce([1; 32]), &s, &[&CcOff], BTreeMap::new()).unwrap();
        assert!(r.bundle.gpus.is_empty());
        assert_eq!(r.bundle.gpu_identities.len(), 1);
        assert!(!r.bundle.gpu_identities[0].attested);
        let cbor = r.bundle.to_cbor().unwrap();
        assert_eq!(EvidenceBundle::from_cbor(&cbor).unwrap(), r.bundle);
        // No reports from the first GPU collector must not let a second one in.
        let gpu = Gpu(RefCell::new(None));
        for pair in [[&CcOff as &dyn Collector, &gpu], [&gpu, &CcOff], [&CcOff, &CcOff]] {
            let e = collect_round(Nonce([1; 32]), &s, &pair, BTreeMap::new()).unwrap_err();
            assert_eq!(e, RoundError::Duplicate("nvgpu"));
        }
    }

    #[test]
    fn failures_and_duplicates_fail_the_round() {
        let s = Session::generate().unwrap();
        let e = collect_round(Nonce([0; 32]), &s, &[&Broken], BTreeMap::new()).unwrap_err();
        assert!(matches!(
            e,
            RoundError::Collect(CollectError::Failed { kind: "tpm", .. })
        ));
        let (g1, g2) = (Gpu(RefCell::new(None)), Gpu(RefCell::new(None)));
        let e = collect_round(Nonce([0; 32]), &s, &[&g1, &g2], BTreeMap::new()).unwrap_err();
        assert_eq!(e, RoundError::Duplicate("nvgpu"));
    }
}
