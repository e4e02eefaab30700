#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use super::*;
use custody_formats::binding::{Nonce, SessionKeys};
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
        tdx: None,
        azure: None,
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
    let inv = inventory(Some(&bundle), &devices);
    // The chip table reads this as an H100 (mover::chips tests `GH100 A01 GSP FMC LF`).
    assert_eq!(inv[0].model, "GH100 A01 GSP FMC LF");
    assert!(inv[0].attested);
    assert_eq!(inv[1].model, "NVIDIA B200");
    assert!(!inv[1].attested);
}
