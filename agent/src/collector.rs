//! The collector seam: one implementation per evidence source. A collector receives the
//! round's binding and returns its evidence with the binding inside (TPM2_Quote extraData,
//! SNP report_data, SPDM requester nonce), or says cleanly that its hardware is not here,
//! so a node without a GPU or outside a CVM still attests with what it has.

use crate::session::Session;
use custody_formats::binding::{Binding, Nonce};
use custody_formats::bundle::{EvidenceBundle, GpuEvidence, SnpEvidence, TpmEvidence, BUNDLE_VERSION};
use std::collections::BTreeMap;
use thiserror::Error;

/// Evidence one collector produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Evidence {
    Tpm(TpmEvidence),
    Snp(SnpEvidence),
    /// One entry per GPU on the node.
    Gpus(Vec<GpuEvidence>),
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
    /// `tpm`, `snp`, `nvgpu`.
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
        gpus: Vec::new(),
        platform,
    };
    let mut unavailable = Vec::new();
    for c in collectors {
        match c.collect(&binding) {
            Ok(Evidence::Tpm(t)) if bundle.tpm.is_none() => bundle.tpm = Some(t),
            Ok(Evidence::Snp(s)) if bundle.snp.is_none() => bundle.snp = Some(s),
            Ok(Evidence::Gpus(g)) if bundle.gpus.is_empty() => bundle.gpus = g,
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
