//! The locality stage through a whole appraisal: which landmark statements count.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use crate::context::{Arrived, Context, Extras, LandmarkOutcome, Node, Received, ReferenceMode};
use crate::Appraiser;
use custody_formats::binding::{Nonce, SessionKeys};
use custody_formats::bundle::EvidenceBundle;
use custody_locality::{LandmarkKey, LandmarkStatement, PinnedLandmark};
use custody_policy::Policy;
use custody_verifier::ear;

const SESSION: [u8; 32] = [7; 32];

fn node() -> Node<'static> {
    Node {
        id: "node-1",
        name: "n1",
        group: "g",
        state: "trusted",
        ak_public: &[],
        ek_cert_sha256: None,
        tpm_clock: None,
    }
}

fn cx(nonce: &Nonce, at: i64) -> Context<'_> {
    Context {
        node: node(),
        nonce,
        reference: None,
        mode: ReferenceMode::Tofu,
        at,
        ear_ttl: 600,
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
    a.landmarks.own = vec![own.public_key()];
    let pin = |id: &str, key: [u8; 32]| PinnedLandmark { id: id.into(), key };
    a.landmarks.remote = vec![
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
        tdx: None,
        azure: None,
        gpus: vec![],
        gpu_identities: vec![],
        platform: Default::default(),
    }
    .to_cbor()
    .unwrap();
    let bundle = Arrived::Bundle(Received::decode(&bundle));
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
    let r = a.appraise(&cx(&nonce, at), &bundle, &extras, &key).unwrap();
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
    let r = a.appraise(&cx(&nonce, at), &bundle, &extras, &key).unwrap();
    assert!(r.input.get("locality").is_none(), "{}", r.input);
    assert_eq!(r.input["locality_failures"][0]["check"], "locality_node");
}
