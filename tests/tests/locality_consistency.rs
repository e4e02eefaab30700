//! Locality that agrees with the registry (issue 22): the registry says where a node's
//! hardware is, a locality proof bounds how far its attested key is from a landmark. A
//! bound that excludes the registered site means the key answered from elsewhere (a relay,
//! or a wrong registry): the round fails at `locality_consistency`, naming both places.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use custody_e2e::fleet::*;
use custody_e2e::registry::entity;
use custody_e2e::{eventually, free_port, Swtpm};
use custody_registry::model::{Hardware, HardwareId, Registry, Site};
use custody_registry::signed::{RegistryKey, SignedRegistry};
use custody_registry::Country;

/// A verifier that is a landmark in Paris, with a registry that puts `t`'s TPM in
/// Frankfurt (about 480 km away).
fn verifier(t: &Swtpm, dir: &std::path::Path) -> Verifier {
    let key = RegistryKey::generate().unwrap();
    let reg = Registry {
        version: 1,
        issued_at: 1_767_225_600,
        authority: "test registry authority".into(),
        entities: vec![entity("rhein", "Rhein Compute GmbH", "DE", false, vec![])],
        sites: vec![Site {
            id: "fra-1".into(),
            name: "Frankfurt Ostend".into(),
            country: Country::new("DE").unwrap(),
            region: "Hessen".into(),
            lat_e6: 50_111_000,
            lon_e6: 8_682_000,
            operator: "rhein".into(),
        }],
        hardware: vec![Hardware {
            site: "fra-1".into(),
            id: HardwareId::EkCertSha256(t.ek_cert_sha256()),
            label: None,
        }],
    };
    let (r, a) = (dir.join("registry.cose"), dir.join("authority.pem"));
    std::fs::write(&r, SignedRegistry::sign(&reg, &key).unwrap()).unwrap();
    std::fs::write(&a, key.public().to_pem()).unwrap();
    Verifier::start(
        &[t],
        Opts {
            interval_secs: 3600,
            revoke_after: 10,
            extra: format!(
                "registry = \"{}\"\nregistry_authorities = [\"{}\"]\n\n\
                 [landmark]\nid = \"paris-verifier\"\nlat = 48.8566\nlon = 2.3522\nprobes = 5\n",
                r.display(),
                a.display()
            ),
            ..Opts::default()
        },
    )
}

#[test]
fn a_key_answering_far_from_its_registered_site_fails_locality_consistency() {
    let t = Swtpm::start();
    let dir = tempfile::tempdir().unwrap();
    let v = verifier(&t, dir.path());

    // The agent answers next to the Paris landmark (loopback): its key is within a few km
    // of Paris, its TPM registered in Frankfurt.
    let port = free_port();
    let mut a = Agent::start_with(&v, &t, "n1", &format!("locality_listen = \"127.0.0.1:{port}\"\n"));
    enrolled(&v, &mut a, "n1");
    let r = v.attest("n1");
    let out = r.json();
    assert_eq!(out["failed_check"], "locality_consistency", "{out}\n{}", v.log());
    let why = out["reasons"][0].as_str().unwrap();
    assert!(
        why.contains("paris-verifier") && why.contains("fra-1") && why.contains("Frankfurt Ostend"),
        "{why}"
    );
    assert!(why.contains("km away"), "{why}");
    drop(a);

    // The same node answering 5 ms late (the round trip of ~500 km of fibre): the bound
    // now includes Frankfurt, and the round passes.
    let port = free_port();
    let mut a = Agent::start_with(
        &v,
        &t,
        "n1",
        &format!("locality_listen = \"127.0.0.1:{port}\"\nlocality_delay_ms = 5\n"),
    );
    // Listed already: wait until the restarted agent re-enrolled and answers.
    let out = eventually("the restarted agent to answer a round", 60, || {
        if let Some(st) = a.child.try_wait().unwrap() {
            panic!("the agent exited ({st}):\n{}", a.log());
        }
        let out = v.attest("n1").json();
        (out["failed_check"] != "agent_reachable").then_some(out)
    });
    assert!(out["failed_check"].is_null(), "{out}\n{}", v.log());
}
