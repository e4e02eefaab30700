//! Sovereignty end to end: a real verifier with a signed registry, the shipped
//! `eu-sovereign` policy and itself as a locality landmark in Paris; two real agents on
//! their own swtpm, one in a site run by an EU entity, one in a site run by a French
//! company a US parent controls. The first passes with its site, operator and locality in
//! the signed result; the second is refused with the reason an operator reads. Registry
//! uploads that are older, or signed by another key, are refused by name.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use custody_e2e::registry::{entity, site};
use custody_e2e::{custody, eventually, free_port, service_bin, verifier_init, Kill, Run, Swtpm};
use custody_registry::model::{Hardware, HardwareId, Holding, Registry};
use custody_registry::signed::{RegistryKey, SignedRegistry};
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

fn registry(version: u64, eu: &Swtpm, us: &Swtpm) -> Registry {
    Registry {
        version,
        issued_at: 1_767_225_600,
        authority: "test registry authority".into(),
        entities: vec![
            entity("eurocloud", "EuroCloud SAS", "FR", false, vec![]),
            entity("nimbus-inc", "Nimbus Inc", "US", true, vec![]),
            entity(
                "nimbus-fr",
                "Nimbus France SAS",
                "FR",
                false,
                vec![Holding {
                    entity: "nimbus-inc".into(),
                    capital_bp: 6000,
                    voting_bp: 6000,
                }],
            ),
        ],
        sites: vec![site("par-eu", "eurocloud"), site("par-us", "nimbus-fr")],
        hardware: vec![
            Hardware {
                site: "par-eu".into(),
                id: HardwareId::EkCertSha256(eu.ek_cert_sha256()),
                label: None,
            },
            Hardware {
                site: "par-us".into(),
                id: HardwareId::EkCertSha256(us.ek_cert_sha256()),
                label: None,
            },
        ],
    }
}

struct World {
    dir: tempfile::TempDir,
    port: u16,
    _verifier: Kill,
    _agents: Vec<Kill>,
}

impl World {
    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn cli(&self, args: &[&str]) -> Run {
        let url = format!("https://127.0.0.1:{}", self.port);
        let id = self.path("operator");
        let mut a: Vec<&str> = args.to_vec();
        a.extend(["--verifier", &url, "--identity", id.to_str().unwrap(), "--json"]);
        custody(a)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path("verifier.log")).unwrap_or_default()
    }

    /// `custody attest NAME` until it is not refused as busy (a scheduled round in flight).
    fn attest(&self, name: &str) -> Run {
        eventually("a round not colliding with a scheduled one", 30, || {
            let r = self.cli(&["attest", name]);
            (!(r.code == 2 && r.stderr.contains("busy"))).then_some(r)
        })
    }
}

fn start(eu: &Swtpm, us: &Swtpm, key: &RegistryKey) -> World {
    let dir = tempfile::tempdir().unwrap();
    let p = |s: &str| dir.path().join(s);
    let ek = p("ek-ca");
    std::fs::create_dir_all(&ek).unwrap();
    for (i, t) in [eu, us].iter().enumerate() {
        for c in t.ek_ca_certs() {
            std::fs::copy(
                &c,
                ek.join(format!("{i}-{}", c.file_name().unwrap().to_str().unwrap())),
            )
            .unwrap();
        }
    }
    std::fs::write(p("authority.pem"), key.public().to_pem()).unwrap();
    std::fs::write(
        p("registry.cose"),
        SignedRegistry::sign(&registry(1, eu, us), key).unwrap(),
    )
    .unwrap();
    let port = free_port();
    let cfg = format!(
        "listen = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\nek_ca_dir = \"{}\"\ninterval_secs = 300\n\
         nonce_ttl_secs = 10\nround_timeout_secs = 5\npolicy = \"eu-sovereign\"\n\
         registry = \"{}\"\nregistry_authorities = [\"{}\"]\n\n[landmark]\nid = \"paris-verifier\"\n\
         lat = 48.8566\nlon = 2.3522\nprobes = 5\n",
        p("data").display(),
        ek.display(),
        p("registry.cose").display(),
        p("authority.pem").display(),
    );
    std::fs::write(p("verifier.toml"), cfg).unwrap();
    verifier_init(&p("verifier.toml"), &p("operator"));
    let log = std::fs::File::create(p("verifier.log")).unwrap();
    let v = Command::new(service_bin("custody-verifier"))
        .args(["run", "--config"])
        .arg(p("verifier.toml"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    let verifier = Kill(v);
    eventually("the verifier to listen", 20, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    let mut agents = Vec::new();
    for (t, name) in [(eu, "node-eu"), (us, "node-us")] {
        let state = p(&format!("{name}-state"));
        let toml = format!(
            "name = \"{name}\"\nlisten = \"127.0.0.1:{}\"\nlocality_listen = \"127.0.0.1:{}\"\n\
             verifier_url = \"https://127.0.0.1:{port}\"\nverifier_ca = \"{}\"\nstate_dir = \"{}\"\n\
             round_timeout_secs = 10\n\n[tpm]\ntcti = \"{}\"\nevent_log = \"\"\n\n[collectors]\nsnp = false\nnvml = false\n",
            free_port(),
            free_port(),
            p("data").join("ca.pem").display(),
            state.display(),
            t.tcti()
        );
        let cfg = p(&format!("{name}.toml"));
        std::fs::write(&cfg, toml).unwrap();
        let log = std::fs::File::create(p(&format!("{name}.log"))).unwrap();
        let c = Command::new(service_bin("custody-agent"))
            .args(["run", "--config"])
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        agents.push(Kill(c));
    }
    let w = World {
        dir,
        port,
        _verifier: verifier,
        _agents: agents,
    };
    for name in ["node-eu", "node-us"] {
        eventually(&format!("{name} to enroll"), 60, || {
            let l = w.cli(&["nodes", "list"]);
            (l.code == 0 && l.stdout.contains(name)).then_some(())
        });
    }
    w
}

fn put_registry(w: &World, bytes: Vec<u8>) -> (u16, Value) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let read = |f: &str| std::fs::read(w.path("operator").join(f)).unwrap();
    let id = custody_net::Identity::from_pem(&read("cert.pem"), &read("key.pem")).unwrap();
    let roots = custody_net::roots_from_pem(&std::fs::read(w.path("data").join("ca.pem")).unwrap()).unwrap();
    let c = custody_net::HttpsClient::new(
        custody_net::client_config(roots, Some(id)).unwrap(),
        Duration::from_secs(20),
        1 << 20,
    );
    let url = format!("https://127.0.0.1:{}/v1/registry", w.port);
    let r = rt
        .block_on(c.request(axum::http::Method::PUT, &url, Some("application/cose"), bytes))
        .unwrap();
    (
        r.status.as_u16(),
        serde_json::from_slice(&r.body).unwrap_or(Value::Null),
    )
}

#[test]
fn eu_operator_passes_us_controlled_operator_is_refused_with_its_reason() {
    let eu = Swtpm::start();
    let us = Swtpm::start();
    let key = RegistryKey::generate().unwrap();
    let w = start(&eu, &us, &key);

    // EU site, EU operator: passes, and the signed result says where and whose.
    let r = w.attest("node-eu");
    assert_eq!(r.code, 0, "{}\n{}\n{}", r.stdout, r.stderr, w.log());
    let res = w.cli(&["result", "node-eu"]);
    assert_eq!(res.code, 0, "{}", res.stderr);
    let e = &res.json()["ear_claims"];
    assert_eq!(e["ear.status"], "affirming", "{e}");
    assert_eq!(e["custody.site"], "par-eu", "{e}");
    assert_eq!(e["custody.country"], "FR", "{e}");
    assert_eq!(e["custody.operator"], "EuroCloud SAS", "{e}");
    let attrs = &e["custody.attributes"];
    assert_eq!(attrs["cloud-act-exposed"], false, "{e}");
    assert_eq!(attrs["secnumcloud-immune"], true, "{e}");
    assert_eq!(attrs["registry-version"], 1, "{e}");
    assert_eq!(attrs["hardware-bound"], true, "{e}");
    // The verifier timed the agent's attested session key from Paris over loopback: a
    // proof, weak because the key lives in process memory (no CVM here).
    let loc = &attrs["locality"][0];
    assert_eq!(loc["landmark"], "paris-verifier", "{e}");
    assert_eq!(loc["key-protection"], "process", "{e}");
    assert_eq!(loc["weak"], true, "{e}");
    assert!(loc["bound-km"].as_i64().unwrap() < 1000, "{e}");

    // US-controlled operator in the same city: refused, and the reason names the parent.
    let r = w.attest("node-us");
    assert_eq!(r.code, 1, "{}\n{}\n{}", r.stdout, r.stderr, w.log());
    let s = r.json();
    assert_eq!(s["failed_check"], "policy", "{s}");
    let reasons = s["reasons"].to_string();
    assert!(
        reasons.contains("Nimbus France SAS is controlled 60 % by Nimbus Inc (US)"),
        "{reasons}"
    );
    assert!(reasons.contains("cloud_act_exposed"), "{reasons}");
    let res = w.cli(&["result", "node-us"]);
    let e = &res.json()["ear_claims"];
    assert_eq!(e["ear.status"], "contraindicated", "{e}");
    assert_eq!(e["custody.operator"], "Nimbus France SAS", "{e}");
    assert_eq!(e["custody.attributes"]["cloud-act-exposed"], true, "{e}");

    // The policy input behind that decision is kept for replay.
    let input = w.cli(&["policy", "explain", "node-us", "secnumcloud"]);
    assert_eq!(input.code, 1, "{}\n{}", input.stdout, input.stderr);
    assert!(input.stdout.contains("SecNumCloud"), "{}", input.stdout);

    // Registry uploads: the same version again is a no-op, an older one and one signed by
    // another key are refused by name, a newer one is adopted.
    let (st, body) = put_registry(&w, SignedRegistry::sign(&registry(1, &eu, &us), &key).unwrap());
    assert_eq!((st, body["version"].as_u64()), (200, Some(1)), "{body}");
    let (st, body) = put_registry(&w, SignedRegistry::sign(&registry(0, &eu, &us), &key).unwrap());
    assert_eq!(
        (st, body["check"].as_str()),
        (422, Some("registry_version")),
        "{body}"
    );
    let other = RegistryKey::generate().unwrap();
    let (st, body) = put_registry(&w, SignedRegistry::sign(&registry(5, &eu, &us), &other).unwrap());
    assert_eq!(
        (st, body["check"].as_str()),
        (422, Some("registry_authority")),
        "{body}"
    );
    let (st, body) = put_registry(&w, SignedRegistry::sign(&registry(2, &eu, &us), &key).unwrap());
    assert_eq!((st, body["version"].as_u64()), (200, Some(2)), "{body}");
    let r = w.attest("node-eu");
    assert_eq!(r.code, 0, "{}", r.stderr);
    let e = &w.cli(&["result", "node-eu"]).json()["ear_claims"];
    assert_eq!(e["custody.attributes"]["registry-version"], 2, "{e}");
}
