//! Where one appraisal's time goes, measured in process without touching the service:
//! a `Service` opened on a throwaway data directory, one attester enrolled through
//! `enroll_begin`/`enroll_finish`, then each stage of a push round timed in a loop on
//! one thread (no HTTP, no TLS, no contention).

use crate::attester::SoftTpm;
use crate::ekca::EkCa;
use anyhow::{anyhow, Context, Result};
use custody_formats::api::{ActivateRequest, EnrollRequest};
use custody_formats::binding::Binding;
use custody_formats::bundle::EvidenceBundle;
use custody_service::config::{Config, ReferenceMode};
use custody_service::store::ResultRecord;
use custody_verifier::check::{EvidenceVerifier, UnixTime};
use custody_verifier::ear::{self, AttestationResult, Corroboration, Submod, TrustTier, VerifierId};
use custody_verifier::tpm::{TpmEvidence, TpmVerifier};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Instant;

#[derive(Debug, Clone, Serialize)]
pub struct Stage {
    pub name: &'static str,
    pub mean_us: f64,
    /// What the stage is, and whether `appraise_pushed` runs it.
    pub note: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct Stages {
    pub iterations: usize,
    pub stages: Vec<Stage>,
}

fn time(n: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?; // warm
    let t = Instant::now();
    for _ in 0..n {
        f()?;
    }
    Ok(t.elapsed().as_secs_f64() * 1e6 / n.max(1) as f64)
}

pub fn run(iterations: usize) -> Result<Stages> {
    let n = iterations.max(1);
    let dir = tempfile::tempdir()?;
    let ca = EkCa::generate()?;
    ca.write(&dir.path().join("ek-ca"))?;
    let cfg = Config {
        data_dir: dir.path().join("data"),
        ek_ca_dir: dir.path().join("ek-ca"),
        interval_secs: 1_000_000_000,
        ..Config::default()
    };
    let svc = custody_service::Service::open(cfg).map_err(|e| anyhow!("open service: {e}"))?;
    let tpm = SoftTpm::generate()?;
    let tls_key = rcgen::KeyPair::generate()?;
    let req = EnrollRequest {
        name: "stages".into(),
        endpoint: "127.0.0.1:9".into(),
        ek_cert: Some(ca.issue_ek(&tpm.ek.spki, 1)?),
        ek_public: tpm.ek.public.clone(),
        ak_public: tpm.ak_public.clone(),
        tls_spki: rcgen::PublicKeyData::subject_public_key_info(&tls_key),
        locality_endpoint: None,
        move_endpoint: None,
    };
    let ch = svc
        .enroll_begin(req.clone())
        .map_err(|r| anyhow!("enroll: {}: {}", r.check, r.detail))?;
    let secret = tpm.activate_credential(&ch.id_object, &ch.encrypted_secret, &tpm.ak_name)?;
    let done = svc
        .enroll_finish(ActivateRequest {
            enrollment_id: ch.enrollment_id,
            proof: custody_formats::api::enrollment_proof(&secret, &req)?.to_vec(),
        })
        .map_err(|r| anyhow!("activate: {}: {}", r.check, r.detail))?;
    let id = done.node_id.clone();
    let push = || -> Result<()> {
        let nonce = svc.nonces.issue(&id).map_err(|e| anyhow!("{e}"))?;
        let body = tpm.bundle(nonce)?.to_cbor()?;
        let (s, _) = svc.appraise_pushed(&id, &body).map_err(|e| anyhow!("{e}"))?;
        if s.status != "affirming" {
            return Err(anyhow!(
                "round: {} {:?} {:?}",
                s.status,
                s.failed_check,
                s.reasons
            ));
        }
        Ok(())
    };
    push().context("first round (learns the reference)")?;

    let mut out = Vec::new();
    let mut add = |name, note, us| {
        out.push(Stage {
            name,
            mean_us: us,
            note,
        })
    };

    add(
        "attester: quote + bundle CBOR",
        "client side (the load generator's cost per round)",
        time(n, || {
            let nonce = svc.nonces.issue(&id).map_err(|e| anyhow!("{e}"))?;
            tpm.bundle(nonce)?.to_cbor()?;
            Ok(())
        })?,
    );
    add(
        "appraise_pushed (whole round, no HTTP)",
        "nonce issue + everything below that the service runs",
        time(n, push)?,
    );
    let nonce = svc.nonces.issue(&id).map_err(|e| anyhow!("{e}"))?;
    let body = tpm.bundle(nonce)?.to_cbor()?;
    add(
        "EvidenceBundle::from_cbor",
        "runs twice per round (appraise_pushed, then appraise)",
        time(n, || {
            EvidenceBundle::from_cbor(&body)?;
            Ok(())
        })?,
    );
    add(
        "store reads: node + reference",
        "SQLite, one mutex (a push round no longer re-reads its EAR: it was 7 % of a round)",
        time(n, || {
            svc.store.node(&id)?;
            svc.store.reference("default")?;
            Ok(())
        })?,
    );
    let node = svc.store.node(&id)?.ok_or_else(|| anyhow!("node gone"))?;
    let reference = svc.store.reference(&node.group)?;
    let bundle = EvidenceBundle::from_cbor(&body)?;
    let binding = Binding::compute(&nonce, &bundle.session_keys);
    let t = bundle.tpm.as_ref().ok_or_else(|| anyhow!("no tpm"))?;
    let verifier = TpmVerifier::new();
    let at = custody_service::now();
    let ev = TpmEvidence {
        quote: &t.quote,
        signature: &t.signature,
        ak: &t.ak_public,
        pcrs: &t.pcrs,
        nonce: binding.as_bytes(),
        event_log: None,
    };
    add(
        "TpmVerifier::verify (ECDSA P-256 verify, PCR digest)",
        "AK parse cached",
        time(n, || {
            verifier
                .verify(ev, UnixTime(at))
                .map_err(|r| anyhow!("{}", r.error))?;
            Ok(())
        })?,
    );
    let outcome = verifier.verify(ev, UnixTime(at));
    let claims = outcome
        .as_ref()
        .map(|v| serde_json::to_value(&v.claims).unwrap_or_default())
        .map_err(|r| anyhow!("{}", r.error))?;
    let input = serde_json::json!({
        "devices": {"tpm": {"kind": "tpm", "verified": true, "claims": claims}},
        "node": {"id": node.id, "name": node.name, "group": node.group, "state": node.state.as_str()},
        "reference": {"source": "tofu"},
    });
    add(
        "Policy::evaluate (default Rego policy)",
        "regorus engine clone + JSON input + rule evaluation",
        time(n, || {
            svc.appraiser.policy.evaluate(&input)?;
            Ok(())
        })?,
    );
    let sub = Submod::from_outcome(
        &outcome,
        Corroboration {
            identity_key_endorsed: true,
            executables_matched: true,
            configuration_matched: true,
        },
    )?;
    let result = AttestationResult {
        iat: at,
        exp: at + 600,
        nonce: nonce.as_bytes().to_vec(),
        status: TrustTier::Affirming,
        verifier_id: VerifierId {
            build: "custody-verifier".into(),
            developer: "https://example.invalid/custody".into(),
        },
        submods: BTreeMap::from([("tpm".to_owned(), sub)]),
        node_id: node.id.clone(),
        site: None,
        country: None,
        operator: None,
        policy_id: Some("default".into()),
        policy_digest: Some(vec![0; 32]),
        attributes: Default::default(),
    };
    add(
        "ear::sign (EAR claims -> COSE_Sign1)",
        "one signature per round",
        time(n, || {
            ear::sign(&result, &svc.ear_key)?;
            Ok(())
        })?,
    );
    let cx = custody_service::round::Context {
        node: custody_service::round::node_facts(&node),
        nonce: &nonce,
        reference: reference.as_ref(),
        mode: ReferenceMode::Tofu,
        at,
        ear_ttl: 600,
    };
    add(
        "Appraiser::appraise (all of the above but store)",
        "bundle decode + TPM verify + claims JSON + policy + EAR",
        time(n, || {
            // The service decodes the bundle once per round, before the appraisal.
            let arrived = custody_service::round::Arrived::Bundle(custody_service::round::Received::decode(
                std::hint::black_box(&body),
            ));
            svc.appraiser
                .appraise(
                    &cx,
                    &arrived,
                    &custody_service::round::Extras::default(),
                    &svc.ear_key,
                )
                .map_err(|e| anyhow!("{e}"))?;
            Ok(())
        })?,
    );
    let rec = svc
        .store
        .latest_result(&id)?
        .ok_or_else(|| anyhow!("no result"))?;
    // The store's write without entries (the append is timed next), on a log handle of
    // its own: writing no entry, it leaves the service's tree in step.
    let mut log = custody_service::store::AuditLog::open(&svc.cfg.db_path())?;
    add(
        "Store::record_round (node + result, one transaction)",
        "SQLite WAL, synchronous=NORMAL",
        time(n, || {
            svc.store
                .record_round((&node, &ResultRecord { id: 0, ..rec.clone() }, &[]), &mut log)?;
            Ok(())
        })?,
    );
    add(
        "audit log append (AttestationResult entry)",
        "second SQLite transaction per round",
        time(n, || {
            let mut e = custody_audit::entry::ResultEntry::example(&node.id, at);
            e.name = node.name.clone();
            e.evidence_sha256 = rec.evidence_sha256.clone();
            svc.log(custody_audit::Entry::AttestationResult(e));
            Ok(())
        })?,
    );
    let der = custody_net::certs_from_pem(done.certificate_pem.as_bytes())?
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("no node certificate"))?;
    let peer = custody_net::PeerCert::new(Some(der));
    add(
        "PeerCert::common_name",
        "twice per request (trace middleware + role check); the CN is parsed once per connection",
        time(n, || {
            peer.common_name().ok_or_else(|| anyhow!("no CN"))?;
            Ok(())
        })?,
    );
    Ok(Stages {
        iterations: n,
        stages: out,
    })
}

pub fn table(s: &Stages) -> String {
    let mut t = format!(
        "stage timings, mean of {} iterations, one thread:\n",
        s.iterations
    );
    for st in &s.stages {
        t.push_str(&format!("{:>10.1} us  {}  ({})\n", st.mean_us, st.name, st.note));
    }
    t
}
