//! The load driver: optionally start a verifier, enroll N software attesters through the
//! real API, then run C concurrent push rounds (nonce -> quote -> evidence) for a while.

use crate::attester::SoftTpm;
use crate::ekca::EkCa;
use anyhow::{anyhow, bail, Context, Result};
use custody_formats::api::{
    self as wire, ActivateRequest, EnrollChallenge, EnrollRequest, Enrolled, NonceGrant, PushResult,
};
use custody_formats::bundle::MAX_BUNDLE_LEN;
use custody_net::{client_config, roots_from_pem, HttpsClient, Identity};
use http::{Method, StatusCode};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Options {
    pub verifier: Option<String>,
    pub ca: Option<PathBuf>,
    pub ek_ca_out: Option<PathBuf>,
    pub attesters: usize,
    pub duration: Duration,
    pub concurrency: usize,
    pub spawn: bool,
    pub verifier_bin: Option<PathBuf>,
    /// RUST_LOG for a spawned verifier.
    pub service_log: String,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Cpu {
    pub user_s: f64,
    pub sys_s: f64,
    /// (user + sys) / wall: how many cores it kept busy on average.
    pub cores: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Percentiles {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub attesters: usize,
    pub concurrency: usize,
    pub duration_s: f64,
    pub enroll_s: f64,
    pub appraisals: u64,
    pub errors: u64,
    pub appraisals_per_s: f64,
    /// Nonce request + evidence request, per appraisal.
    pub latency: Percentiles,
    /// The parts of it: POST /v1/nonce, building the bundle (quote + CBOR), POST /v1/evidence.
    pub nonce_request: Percentiles,
    pub build_bundle: Percentiles,
    pub evidence_request: Percentiles,
    /// Only when the verifier was spawned.
    pub verifier_cpu: Option<Cpu>,
    pub loadgen_cpu: Cpu,
    pub first_errors: Vec<String>,
    /// The verifier's `custody_audit_append_errors_total` after the run: a round whose
    /// audit entry was not written does not fail the round (the decision stands, the gap
    /// is counted), so the load generator reads the counter. None when unreadable.
    pub audit_errors: Option<u64>,
    /// Rounds per store transaction over the verifier's life (its group commit), from
    /// `custody_round_group_committed_total / custody_round_group_commits_total`.
    pub rounds_per_commit: Option<f64>,
}

fn percentiles(v: &mut [u64]) -> Percentiles {
    if v.is_empty() {
        return Percentiles::default();
    }
    v.sort_unstable();
    let at = |q: f64| {
        let i = ((v.len() as f64 * q).ceil() as usize)
            .saturating_sub(1)
            .min(v.len() - 1);
        v.get(i).copied().unwrap_or(0) as f64 / 1000.0
    };
    Percentiles {
        p50_ms: at(0.50),
        p90_ms: at(0.90),
        p99_ms: at(0.99),
        max_ms: v.last().copied().unwrap_or(0) as f64 / 1000.0,
        mean_ms: v.iter().sum::<u64>() as f64 / v.len() as f64 / 1000.0,
    }
}

/// utime + stime of a process, in seconds, from /proc.
fn proc_cpu(pid: u32) -> Option<(f64, f64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = s.get(s.rfind(')')? + 2..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tck = clock_ticks();
    let ut: f64 = f.get(11)?.parse().ok()?;
    let st: f64 = f.get(12)?.parse().ok()?;
    Some((ut / tck, st / tck))
}

fn clock_ticks() -> f64 {
    static T: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *T.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

fn cpu_delta(before: Option<(f64, f64)>, after: Option<(f64, f64)>, wall: f64) -> Option<Cpu> {
    let (u0, s0) = before?;
    let (u1, s1) = after?;
    Some(Cpu {
        user_s: u1 - u0,
        sys_s: s1 - s0,
        cores: if wall > 0.0 {
            (u1 - u0 + s1 - s0) / wall
        } else {
            0.0
        },
    })
}

/// A verifier this process started; stopped (SIGTERM, then SIGKILL) on drop.
#[derive(Debug)]
pub struct Spawned {
    child: Child,
    pub url: String,
    pub ca_pem: String,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Spawned {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(10) {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        self.stop();
    }
}

fn verifier_bin(opt: &Options) -> Result<PathBuf> {
    if let Some(p) = &opt.verifier_bin {
        return Ok(p.clone());
    }
    let exe = std::env::current_exe().context("own executable")?;
    let p = exe
        .parent()
        .ok_or_else(|| anyhow!("executable has no directory"))?
        .join("custody-verifier");
    if !p.exists() {
        bail!(
            "{} not found: build it (cargo build -p custody-service) or pass --verifier-bin",
            p.display()
        );
    }
    Ok(p)
}

/// Start `custody-verifier` with a throwaway data directory trusting `ek_ca_dir`.
pub async fn spawn(opt: &Options, ek_ca_dir: &Path) -> Result<Spawned> {
    let bin = verifier_bin(opt)?;
    let dir = tempfile::tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let q = |p: &Path| serde_json::to_string(&p.display().to_string()).unwrap_or_default();
    // interval_secs: the scheduler must never pull from the attesters' fake endpoints;
    // revoke_after: should it ever, no node is revoked for it.
    let cfg = format!(
        "listen = \"127.0.0.1:{port}\"\nserver_names = [\"127.0.0.1\", \"localhost\"]\ndata_dir = {}\nek_ca_dir = {}\ninterval_secs = 1000000000\nnonce_ttl_secs = 60\npush_rounds_per_minute = 1000000000\nrevoke_after = 1000000\ncheckpoint_secs = 3600\n",
        q(&dir.path().join("data")),
        q(ek_ca_dir),
    );
    let cfg_path = dir.path().join("verifier.toml");
    std::fs::write(&cfg_path, cfg)?;
    let out = Command::new(&bin)
        .args(["init", "--config"])
        .arg(&cfg_path)
        .env("RUST_LOG", "warn")
        .output()
        .with_context(|| format!("run {}", bin.display()))?;
    if !out.status.success() {
        bail!(
            "custody-verifier init failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let log = dir.path().join("verifier.log");
    let child = Command::new(&bin)
        .args(["run", "--config"])
        .arg(&cfg_path)
        .env("RUST_LOG", &opt.service_log)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .with_context(|| format!("start {}", bin.display()))?;
    let ca_pem = std::fs::read_to_string(dir.path().join("data/ca.pem"))?;
    let mut s = Spawned {
        child,
        url: format!("https://127.0.0.1:{port}"),
        ca_pem,
        log,
        _dir: dir,
    };
    let anon = HttpsClient::new(
        client_config(roots_from_pem(s.ca_pem.as_bytes())?, None)?,
        Duration::from_secs(5),
        1 << 20,
    );
    let t = Instant::now();
    loop {
        if let Ok(Some(st)) = s.child.try_wait() {
            bail!(
                "custody-verifier exited ({st}): {}",
                std::fs::read_to_string(&s.log).unwrap_or_default()
            );
        }
        if let Ok(r) = anon
            .request(Method::GET, &format!("{}/healthz", s.url), None, vec![])
            .await
        {
            if r.status == StatusCode::OK {
                return Ok(s);
            }
        }
        if t.elapsed() > Duration::from_secs(30) {
            s.stop();
            bail!("custody-verifier did not answer /healthz within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One enrolled attester: its TPM and its own mTLS client (one HTTP/2 connection).
#[derive(Debug)]
pub struct Node {
    pub tpm: SoftTpm,
    pub id: String,
    pub client: HttpsClient,
}

async fn post<T: for<'de> serde::Deserialize<'de>>(
    c: &HttpsClient,
    url: &str,
    what: &'static str,
    body: Vec<u8>,
) -> Result<T> {
    let r = c.request(Method::POST, url, Some(wire::CBOR), body).await?;
    if r.status != StatusCode::OK {
        let detail = match wire::from_cbor::<wire::Refusal>("refusal", &r.body) {
            Ok(f) => format!("{}: {}", f.check, f.detail),
            Err(_) => String::from_utf8_lossy(&r.body).into_owned(),
        };
        bail!("{what}: HTTP {}: {detail}", r.status);
    }
    Ok(wire::from_cbor(what, &r.body)?)
}

/// Enroll one attester: EK certificate from the test CA, credential activation in
/// software, then a node certificate for a fresh P-256 TLS key.
pub async fn enroll(
    url: &str,
    anon: &HttpsClient,
    ca: &EkCa,
    roots_pem: &str,
    name: String,
    serial: u64,
) -> Result<Node> {
    let tpm = tokio::task::spawn_blocking(SoftTpm::generate).await??;
    let ek_cert = ca.issue_ek(&tpm.ek.spki, serial)?;
    let tls_key = rcgen::KeyPair::generate()?;
    let req = EnrollRequest {
        name,
        // Never dialled: the verifier's scheduler interval is set beyond the run.
        endpoint: "127.0.0.1:9".into(),
        ek_cert: Some(ek_cert),
        ek_public: tpm.ek.public.clone(),
        ak_public: tpm.ak_public.clone(),
        tls_spki: rcgen::PublicKeyData::subject_public_key_info(&tls_key),
        locality_endpoint: None,
        move_endpoint: None,
    };
    let ch: EnrollChallenge = post(
        anon,
        &format!("{url}/v1/enroll"),
        "enroll challenge",
        wire::to_cbor("enroll", &req)?,
    )
    .await?;
    let secret = tpm.activate_credential(&ch.id_object, &ch.encrypted_secret, &tpm.ak_name)?;
    let done: Enrolled = post(
        anon,
        &format!("{url}/v1/enroll/activate"),
        "enrolled",
        wire::to_cbor(
            "activate",
            &ActivateRequest {
                enrollment_id: ch.enrollment_id,
                proof: wire::enrollment_proof(&secret, &req)?.to_vec(),
            },
        )?,
    )
    .await?;
    let id = Identity::from_pem(
        done.certificate_pem.as_bytes(),
        tls_key.serialize_pem().as_bytes(),
    )?;
    let client = HttpsClient::new(
        client_config(roots_from_pem(roots_pem.as_bytes())?, Some(id))?,
        Duration::from_secs(30),
        MAX_BUNDLE_LEN,
    );
    Ok(Node {
        tpm,
        id: done.node_id,
        client,
    })
}

/// Timings of one push round, in microseconds.
#[derive(Debug, Clone, Copy)]
pub struct RoundTimes {
    pub nonce_us: u64,
    pub build_us: u64,
    pub evidence_us: u64,
}

/// One push-mode round: nonce, bundle, evidence; an error unless the result affirms.
pub async fn push_round(url: &str, node: &Node) -> Result<RoundTimes> {
    let t0 = Instant::now();
    let grant: NonceGrant = post(&node.client, &format!("{url}/v1/nonce"), "nonce grant", vec![]).await?;
    let t1 = Instant::now();
    let body = node.tpm.bundle(grant.nonce)?.to_cbor()?;
    let t2 = Instant::now();
    let res: PushResult = post(&node.client, &format!("{url}/v1/evidence"), "push result", body).await?;
    let t3 = Instant::now();
    if res.status != "affirming" || res.ear.is_empty() {
        bail!(
            "node {}: status {} failed_check {}",
            node.id,
            res.status,
            res.failed_check.as_deref().unwrap_or("-")
        );
    }
    let us = |a: Instant, b: Instant| u64::try_from(b.duration_since(a).as_micros()).unwrap_or(u64::MAX);
    Ok(RoundTimes {
        nonce_us: us(t0, t1),
        build_us: us(t1, t2),
        evidence_us: us(t2, t3),
    })
}

/// The EK CA: fresh, written to `dir` (the verifier's `ek_ca_dir`).
pub fn prepare_ca(dir: &Path) -> Result<EkCa> {
    let ca = EkCa::generate()?;
    ca.write(dir)?;
    Ok(ca)
}

pub async fn run(opt: Options) -> Result<Report> {
    let tmp_ca = tempfile::tempdir()?;
    let ca_dir = opt
        .ek_ca_out
        .clone()
        .unwrap_or_else(|| tmp_ca.path().to_path_buf());
    let ca = Arc::new(prepare_ca(&ca_dir)?);
    let spawned = if opt.spawn {
        Some(spawn(&opt, &ca_dir).await?)
    } else {
        None
    };
    let (url, roots_pem) = match &spawned {
        Some(s) => (s.url.clone(), s.ca_pem.clone()),
        None => {
            let url = opt
                .verifier
                .clone()
                .ok_or_else(|| anyhow!("--verifier URL (or --spawn) is required"))?;
            let ca = opt
                .ca
                .as_ref()
                .ok_or_else(|| anyhow!("--ca is required without --spawn"))?;
            (
                url,
                std::fs::read_to_string(ca).with_context(|| format!("read {}", ca.display()))?,
            )
        }
    };
    let url = url.trim_end_matches('/').to_owned();
    let anon = HttpsClient::new(
        client_config(roots_from_pem(roots_pem.as_bytes())?, None)?,
        Duration::from_secs(30),
        1 << 20,
    );

    // Enroll, a few at a time, each followed by one round so the node has a result (and
    // the group its trust-on-first-use reference) before the measured phase.
    let t_enroll = Instant::now();
    let mut tag = [0u8; 4];
    aws_lc_rs::rand::fill(&mut tag).map_err(|e| anyhow!("rng: {e}"))?;
    let tag = hex::encode(tag);
    let sem = Arc::new(tokio::sync::Semaphore::new(8));
    let mut tasks = Vec::new();
    for i in 0..opt.attesters {
        let (url, anon, ca, roots, sem) = (
            url.clone(),
            anon.clone(),
            ca.clone(),
            roots_pem.clone(),
            sem.clone(),
        );
        let name = format!("lg-{tag}-{i}");
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await?;
            let node = enroll(&url, &anon, &ca, &roots, name, i as u64 + 1).await?;
            push_round(&url, &node).await.context("first round")?;
            anyhow::Ok(node)
        }));
    }
    let mut nodes = Vec::with_capacity(opt.attesters);
    for t in tasks {
        nodes.push(t.await??);
    }
    let enroll_s = t_enroll.elapsed().as_secs_f64();

    // The measured phase. Loop k owns attesters k, k+C, ...: an attester is never in two
    // rounds at once (its TPM clock must be seen to move forward).
    let nodes: Arc<Vec<Node>> = Arc::new(nodes);
    let c = opt.concurrency.clamp(1, nodes.len().max(1));
    let errors = Arc::new(AtomicU64::new(0));
    let first_errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let vpid = spawned.as_ref().map(Spawned::pid);
    let cpu0 = (vpid.and_then(proc_cpu), proc_cpu(std::process::id()));
    let start = Instant::now();
    let deadline = start + opt.duration;
    let mut loops = Vec::new();
    for k in 0..c {
        let (nodes, url, errors, first) = (nodes.clone(), url.clone(), errors.clone(), first_errors.clone());
        loops.push(tokio::spawn(async move {
            let mine: Vec<usize> = (k..nodes.len()).step_by(c).collect();
            let mut times = Vec::new();
            let mut i = 0usize;
            while Instant::now() < deadline && !mine.is_empty() {
                let Some(node) = mine.get(i % mine.len()).and_then(|&n| nodes.get(n)) else {
                    break;
                };
                i += 1;
                match push_round(&url, node).await {
                    Ok(t) => times.push(t),
                    Err(e) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        let mut f = first.lock().unwrap_or_else(|p| p.into_inner());
                        if f.len() < 5 {
                            f.push(format!("{e:#}"));
                        }
                    }
                }
            }
            times
        }));
    }
    let mut times = Vec::new();
    for l in loops {
        times.extend(l.await?);
    }
    let wall = start.elapsed().as_secs_f64();
    let cpu1 = (vpid.and_then(proc_cpu), proc_cpu(std::process::id()));
    let metrics = verifier_metrics(&anon, &url).await;
    let audit_errors = metrics
        .as_deref()
        .and_then(|m| metric(m, "custody_audit_append_errors_total"));
    let rounds_per_commit = metrics.as_deref().and_then(|m| {
        let commits = metric(m, "custody_round_group_commits_total")?;
        let rounds = metric(m, "custody_round_group_committed_total")?;
        (commits > 0).then(|| rounds as f64 / commits as f64)
    });
    drop(spawned);

    let mut total: Vec<u64> = times.iter().map(|t| t.nonce_us + t.evidence_us).collect();
    let mut nonce: Vec<u64> = times.iter().map(|t| t.nonce_us).collect();
    let mut build: Vec<u64> = times.iter().map(|t| t.build_us).collect();
    let mut evidence: Vec<u64> = times.iter().map(|t| t.evidence_us).collect();
    let first_errors = first_errors.lock().unwrap_or_else(|p| p.into_inner()).clone();
    Ok(Report {
        attesters: nodes.len(),
        concurrency: c,
        duration_s: wall,
        enroll_s,
        appraisals: times.len() as u64,
        errors: errors.load(Ordering::Relaxed),
        appraisals_per_s: times.len() as f64 / wall,
        latency: percentiles(&mut total),
        nonce_request: percentiles(&mut nonce),
        build_bundle: percentiles(&mut build),
        evidence_request: percentiles(&mut evidence),
        verifier_cpu: cpu_delta(cpu0.0, cpu1.0, wall),
        loadgen_cpu: cpu_delta(cpu0.1, cpu1.1, wall).unwrap_or_default(),
        first_errors,
        audit_errors,
        rounds_per_commit,
    })
}

/// The verifier's `/metrics` text.
async fn verifier_metrics(anon: &HttpsClient, url: &str) -> Option<String> {
    let r = anon
        .request(http::Method::GET, &format!("{url}/metrics"), None, vec![])
        .await
        .ok()?;
    String::from_utf8(r.body.to_vec()).ok()
}

/// One unlabelled counter from the metrics text.
fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}
