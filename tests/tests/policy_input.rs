//! The policy bench's input comes from a real round (issue 21): a node quoting all 24
//! SHA-256 PCRs on its TPM (swtpm), an SEV-SNP report of the operator's guest with every
//! claim, two GPUs with their SPDM measurements, all bound by a signed registry to one
//! site of an EU operator, appraised by a real verifier under `eu-sovereign`. Pushed
//! rounds carry no locality proof (the verifier measures only the rounds it pulls), so
//! two landmark proofs about the round's session key are added here, through the same
//! `Locality::new` the locality stage uses.
//!
//! The test checks the committed fixture (`policy/tests/fixtures/node-production.json`)
//! still has the shape of what the verifier produces now (every key, every list's length)
//! and that `eu-sovereign` allows it. `CUSTODY_WRITE_FIXTURES=1` rewrites the fixture.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use custody_e2e::nvgpu::Gpu;
use custody_e2e::pushed::node_quoting;
use custody_e2e::snp::{self, Guest};
use custody_formats::alg::HashAlg;
use custody_formats::tpm::PcrSelection;
use custody_locality::{KeyProtection, LandmarkKey, LandmarkStatement, LatLon, Locality, Proof};
use custody_registry::model::{Hardware, HardwareId};
use serde_json::Value;

const FIXTURE: &str = "policy/tests/fixtures/node-production.json";

/// Every path to a leaf, with each list's length in its path: two inputs of the same
/// shape give the same set whatever their values.
fn shape(v: &Value, at: String, out: &mut std::collections::BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                // PCR indices and per-site bounds are keys that name values: keep them.
                shape(x, format!("{at}/{k}"), out);
            }
        }
        Value::Array(a) => {
            out.insert(format!("{at}[{}]", a.len()));
            for x in a {
                shape(x, format!("{at}[]"), out);
            }
        }
        _ => {
            out.insert(at);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_production_shaped_round_is_the_policy_bench_input() {
    let gpus = [Gpu::new(&[0x4e, 0x01]), Gpu::new(&[0x4e, 0x02])];
    let all = vec![PcrSelection {
        bank: HashAlg::Sha256,
        pcrs: (0..24).collect(),
    }];
    let reference = format!(
        "measurements = [\"{}\"]\nhost_data = \"{}\"\nvmpl = 0\n",
        hex::encode(snp::real_measurement()),
        hex::encode(snp::real_host_data())
    );
    let n = node_quoting(Some("par1"), &reference, all, |dir| {
        let roots: String = gpus.iter().map(|g| g.root_pem.clone()).collect();
        let p = dir.join("gpu-roots.pem");
        std::fs::write(&p, roots).unwrap();
        let hw = gpus
            .iter()
            .map(|g| Hardware {
                site: "par1".into(),
                id: HardwareId::GpuCertSerial(g.serial.clone()),
                label: None,
            })
            .collect();
        (
            hw,
            format!(
                "policy = \"eu-sovereign\"\n[nvgpu]\ntest_root = \"{}\"\n",
                p.display()
            ),
        )
    })
    .await;
    let (r, mut input) = n
        .push_with(|binding, b| {
            b.snp = Some(snp::evidence(binding, &Guest::default()));
            b.gpus = vec![gpus[0].evidence(0, binding), gpus[1].evidence(1, binding)];
            b.gpu_identities = vec![
                Gpu::identity(0, "NVIDIA H100 80GB HBM3"),
                Gpu::identity(1, "NVIDIA H100 80GB HBM3"),
            ];
        })
        .await;
    assert_eq!(r.failed_check, None, "{:?} {input}", r.reasons);
    let d = &input["devices"];
    assert_eq!(
        d["tpm"]["claims"]["pcrs"]["sha256"].as_object().unwrap().len(),
        24,
        "{input}"
    );
    assert_eq!(d["snp"]["verified"], true);
    assert_eq!(d["snp"]["guest"]["reference"], "matched");
    for g in ["gpu0", "gpu1"] {
        assert_eq!(d[g]["verified"], true, "{input}");
        assert_eq!(d[g]["platform"], "bound");
        assert!(
            !d[g]["claims"]["measurements"].as_object().unwrap().is_empty(),
            "{input}"
        );
    }
    assert_eq!(input["key_protection"]["level"], "cvm", "{input}");
    assert_eq!(input["sovereignty"]["site"]["id"], "par1", "{input}");

    // Two landmark proofs about this round's session key, as a pulled round gets them.
    let session = n.session.public_keys().ed25519;
    let at = input["sovereignty"]["registry"]["issued_at"].as_i64().unwrap() + 60;
    let proof = |seed: u8, id: &str, lat: f64, lon: f64, bound_km: f64| {
        let st = LandmarkStatement {
            landmark: id.into(),
            lat,
            lon,
            node: input["node"]["id"].as_str().unwrap().into(),
            session_ed25519: session,
            rtt_us: (bound_km * 10.0) as u64,
            probes: 8,
            bound_km,
            measured_at: at,
        };
        let key = LandmarkKey::from_seed(&[seed; 32]).unwrap();
        let st = LandmarkStatement::verify(&st.sign(&key).unwrap(), &[key.public_key()], &session, at, 120)
            .unwrap();
        Proof::from_statement(&st, KeyProtection::Cvm)
    };
    let sites = [
        ("par1".to_owned(), LatLon::new(48.8566, 2.3522)),
        ("fra1".to_owned(), LatLon::new(48.8566, 2.3522)),
    ];
    let locality = Locality::new(
        vec![
            proof(1, "lm-paris", 48.8566, 2.3522, 42.0),
            proof(2, "lm-frankfurt", 50.1109, 8.6821, 590.0),
        ],
        &sites,
    );
    input["locality"] = serde_json::to_value(locality).unwrap();

    // eu-sovereign allows it, as the verifier did without the proofs.
    let policy = custody_policy::Policy::shipped("eu-sovereign").unwrap();
    let decision = policy.evaluate(&input).unwrap();
    assert!(decision.allow, "{:?}", decision.reasons);

    let path = custody_e2e::repo_root().join(FIXTURE);
    if std::env::var_os("CUSTODY_WRITE_FIXTURES").is_some() {
        std::fs::write(&path, serde_json::to_string_pretty(&input).unwrap() + "\n").unwrap();
    }
    let committed: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let (mut want, mut got) = (Default::default(), Default::default());
    shape(&committed, String::new(), &mut want);
    shape(&input, String::new(), &mut got);
    let missing: Vec<_> = got.difference(&want).collect();
    let extra: Vec<_> = want.difference(&got).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{FIXTURE} is no longer shaped like a real round's input (rewrite it with CUSTODY_WRITE_FIXTURES=1): \
         the round has {missing:?} the fixture lacks; the fixture has {extra:?} the round lacks"
    );
}
