//! One enrolled node that pushes its own rounds to a real verifier, in process: the
//! node's real TPM quote (swtpm) plus whatever SNP or GPU evidence a test adds for the
//! round's binding. The fixture of the hostile-node appraisal tests and of the
//! production-shaped policy input.

use crate::fleet::*;
use crate::registry::{entity, site};
use crate::snp::{self, Guest};
use crate::{decode, Swtpm};
use axum::http::{Method, StatusCode};
use custody_agent::collector::{collect_round, Collector};
use custody_agent::daemon;
use custody_agent::session::Session;
use custody_agent::tpm::TpmCollector;
use custody_formats::api::{NonceGrant, PushResult, CBOR};
use custody_formats::bundle::{EvidenceBundle, MAX_BUNDLE_LEN};
use custody_net::{client_config, roots_from_pem, HttpsClient};
use custody_registry::model::{Hardware, HardwareId, Registry};
use custody_registry::signed::{RegistryKey, SignedRegistry};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

const T: Duration = Duration::from_secs(10);

#[allow(missing_debug_implementations)]
pub struct Node {
    pub v: Verifier,
    pub tpm: Arc<TpmCollector>,
    pub session: Session,
    pub client: HttpsClient,
    _t: Swtpm,
    _state: tempfile::TempDir,
    _dir: tempfile::TempDir,
}

/// The signed registry: the node's EK at `par1`, the SNP chip at `chip_site`, and any
/// `more` hardware.
pub fn write_registry_with(dir: &std::path::Path, t: &Swtpm, chip_site: &str, more: Vec<Hardware>) -> String {
    let key = RegistryKey::generate().unwrap();
    let reg = Registry {
        version: 1,
        issued_at: 1_767_225_600,
        authority: "test registry authority".into(),
        entities: vec![entity("eurocloud", "EuroCloud SAS", "FR", false, vec![])],
        sites: vec![site("par1", "eurocloud"), site("fra1", "eurocloud")],
        hardware: vec![
            Hardware {
                site: "par1".into(),
                id: HardwareId::EkCertSha256(t.ek_cert_sha256()),
                label: None,
            },
            Hardware {
                site: chip_site.into(),
                id: HardwareId::SnpChipId(snp::chip_id()),
                label: None,
            },
        ]
        .into_iter()
        .chain(more)
        .collect(),
    };
    let (r, a) = (dir.join("registry.cose"), dir.join("authority.pem"));
    std::fs::write(&r, SignedRegistry::sign(&reg, &key).unwrap()).unwrap();
    std::fs::write(&a, key.public().to_pem()).unwrap();
    format!(
        "registry = \"{}\"\nregistry_authorities = [\"{}\"]\n",
        r.display(),
        a.display()
    )
}

/// A verifier that trusts the test SNP root, with `registry_at` (the chip's site) when
/// given and the `[snp]` lines `snp`; one enrolled node pushing its own rounds.
pub async fn node(registry_at: Option<&str>, snp: &str) -> Node {
    node_with(registry_at, snp, |_| (vec![], String::new())).await
}

/// [`node`], with `more(dir)` giving extra registry hardware and extra configuration.
pub async fn node_with(
    registry_at: Option<&str>,
    snp: &str,
    more: impl FnOnce(&std::path::Path) -> (Vec<Hardware>, String),
) -> Node {
    node_quoting(registry_at, snp, custody_agent::tpm::default_pcrs(), more).await
}

/// [`node_with`], quoting `pcrs` instead of the agent's default selection.
pub async fn node_quoting(
    registry_at: Option<&str>,
    snp: &str,
    pcrs: Vec<custody_formats::tpm::PcrSelection>,
    more: impl FnOnce(&std::path::Path) -> (Vec<Hardware>, String),
) -> Node {
    node_prepared(registry_at, snp, pcrs, more, |_| None).await
}

/// [`node_quoting`], with `prepare` run on the TPM before the agent opens it; the agent
/// quotes with the persistent key it returns, if any (as on an Azure CVM).
pub async fn node_prepared(
    registry_at: Option<&str>,
    snp: &str,
    pcrs: Vec<custody_formats::tpm::PcrSelection>,
    more: impl FnOnce(&std::path::Path) -> (Vec<Hardware>, String),
    prepare: impl FnOnce(&Swtpm) -> Option<u32>,
) -> Node {
    let t = Swtpm::start();
    let persistent_ak = prepare(&t);
    let dir = tempfile::tempdir().unwrap();
    let (hardware, config) = more(dir.path());
    let mut extra = registry_at
        .map(|s| write_registry_with(dir.path(), &t, s, hardware))
        .unwrap_or_default();
    extra.push_str(&config);
    extra.push_str(&format!(
        "[snp]\ntest_ark = \"{}\"\n{snp}",
        snp::test_ark().display()
    ));
    let v = Verifier::start(
        &[&t],
        Opts {
            interval_secs: 3600,
            revoke_after: 10,
            extra,
            ..Opts::default()
        },
    );
    let state = tempfile::tempdir().unwrap();
    let cfg = agent_config(&v, &t, "hostile", state.path());
    let tpm = TpmCollector::new(custody_agent::tpm::TpmConfig {
        tcti: t.tcti(),
        pcrs,
        event_log: None,
    })
    .unwrap();
    let tpm = Arc::new(match persistent_ak {
        Some(h) => tpm.with_persistent_ak(h),
        None => tpm,
    });
    let id = enroll_in_process(&cfg, tpm.clone()).await;
    // The scheduler pulls a new node once (and finds no agent): let that round pass first,
    // so that its nonce does not race the pushed ones.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while v.node("hostile")["node"]["last_round_at"].is_null() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let roots = roots_from_pem(id.ca_pem.as_bytes()).unwrap();
    Node {
        client: HttpsClient::new(
            client_config(roots, Some(id.tls_identity().unwrap())).unwrap(),
            T,
            MAX_BUNDLE_LEN,
        ),
        v,
        tpm,
        session: Session::generate().unwrap(),
        _t: t,
        _state: state,
        _dir: dir,
    }
}

impl Node {
    /// A round with the node's real TPM quote and an SNP report from `guest` for the
    /// same binding; the result and the policy input the verifier kept.
    pub async fn push(&self, guest: &Guest) -> (Pushed, Value) {
        self.push_with(|binding, b| b.snp = Some(snp::evidence(binding, guest)))
            .await
    }

    /// A round with the node's real TPM quote and what `add` puts in the bundle for the
    /// round's binding.
    pub async fn push_with(&self, add: impl FnOnce(&[u8; 32], &mut EvidenceBundle)) -> (Pushed, Value) {
        let r = self
            .v
            .request(&self.client, Method::POST, "/v1/nonce", Some(CBOR), vec![])
            .await;
        assert_eq!(r.status, StatusCode::OK);
        let g: NonceGrant = decode!("nonce grant", &r);
        let c: &dyn Collector = self.tpm.as_ref();
        let mut round =
            collect_round(g.nonce, &self.session, &[c], daemon::platform_facts("hostile")).unwrap();
        let binding = self.session.binding(&g.nonce);
        add(binding.as_bytes(), &mut round.bundle);
        let r = self
            .v
            .request(
                &self.client,
                Method::POST,
                "/v1/evidence",
                Some(CBOR),
                round.bundle.to_cbor().unwrap(),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", String::from_utf8_lossy(&r.body));
        let result: PushResult = decode!("push result", &r);
        let r = self
            .v
            .request(
                &self.v.operator_client(),
                Method::GET,
                "/v1/nodes/hostile/input",
                None,
                vec![],
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
        let input: Value = serde_json::from_slice(&r.body).unwrap();
        let reasons = match self.v.node("hostile")["node"]["reason"].as_str() {
            Some(r) => vec![r.to_owned()],
            None => vec![],
        };
        (
            Pushed {
                failed_check: result.failed_check,
                reasons,
            },
            input["input"].clone(),
        )
    }
}

/// What a push came back with, and the reason the node's state gives.
#[derive(Debug)]
pub struct Pushed {
    pub failed_check: Option<String>,
    pub reasons: Vec<String>,
}
