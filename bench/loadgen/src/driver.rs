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
    /// Open loop: rounds started at this fixed rate (per second) whatever the verifier
    /// answers, latency from each round's scheduled start; `None`: closed loop
    /// (`concurrency` loops, each starting its next round when the last one ends).
    pub rate: Option<f64>,
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
    /// Open loop: the offered rate (rounds scheduled per second).
    pub offered_per_s: Option<f64>,
    /// Open loop: rounds that started more than 10 ms after their scheduled time (no
    /// attester was free: the offered rate is above what the verifier answers).
    pub started_late: Option<u64>,
    /// Closed loop: nonce request + evidence request, per appraisal. Open loop: from the
    /// round's scheduled start to its result, everything included (waiting for a free
    /// attester, the nonce, building the quote and bundle, the evidence request).
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
    /// The node's certificate chain and TLS key (PEM), for another process to use.
    pub cert_pem: String,
    pub key_pem: String,
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
    let key_pem = tls_key.serialize_pem();
    let id = Identity::from_pem(done.certificate_pem.as_bytes(), key_pem.as_bytes())?;
    let client = HttpsClient::new(
        client_config(roots_from_pem(roots_pem.as_bytes())?, Some(id))?,
        Duration::from_secs(30),
        MAX_BUNDLE_LEN,
    );
    Ok(Node {
        tpm,
        id: done.node_id,
        client,
        cert_pem: done.certificate_pem,
        key_pem,
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

/// A verifier (spawned or given) with enrolled attesters, each past its first round.
struct Setup {
    spawned: Option<Spawned>,
    url: String,
    roots_pem: String,
    anon: HttpsClient,
    nodes: Vec<Node>,
    enroll_s: f64,
}

async fn setup(opt: &Options, extra: usize) -> Result<Setup> {
    let tmp_ca = tempfile::tempdir()?;
    let ca_dir = opt
        .ek_ca_out
        .clone()
        .unwrap_or_else(|| tmp_ca.path().to_path_buf());
    let ca = Arc::new(prepare_ca(&ca_dir)?);
    let spawned = if opt.spawn {
        Some(spawn(opt, &ca_dir).await?)
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
    for i in 0..opt.attesters + extra {
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
            // Right after enrollment the verifier may still hold a round of its own with
            // the node (busy, 409): try again a few times.
            let mut tries = 0;
            loop {
                match push_round(&url, &node).await {
                    Ok(_) => break,
                    Err(e) if tries < 20 && format!("{e:#}").contains("HTTP 409") => {
                        tries += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(e) => return Err(e.context("first round")),
                }
            }
            anyhow::Ok(node)
        }));
    }
    let mut nodes = Vec::with_capacity(opt.attesters + extra);
    for t in tasks {
        nodes.push(t.await??);
    }
    Ok(Setup {
        spawned,
        url,
        roots_pem,
        anon,
        nodes,
        enroll_s: t_enroll.elapsed().as_secs_f64(),
    })
}

/// A phase's failed rounds: how many, and the first few errors.
#[derive(Default)]
struct Failures {
    count: AtomicU64,
    first: Mutex<Vec<String>>,
}

impl Failures {
    fn record(&self, e: &anyhow::Error) {
        self.count.fetch_add(1, Ordering::Relaxed);
        let mut f = self.first.lock().unwrap_or_else(|p| p.into_inner());
        if f.len() < 5 {
            f.push(format!("{e:#}"));
        }
    }

    fn first(&self) -> Vec<String> {
        self.first.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// One measured phase: C loops of push rounds for `duration`, or an open loop.
struct Phase {
    times: Vec<RoundTimes>,
    /// Open loop: each round's latency from its scheduled start (us), the offered rate
    /// and the rounds started late.
    open: Option<(Vec<u64>, f64, u64)>,
    errors: u64,
    first_errors: Vec<String>,
    wall: f64,
    verifier_cpu: Option<Cpu>,
    loadgen_cpu: Cpu,
}

async fn measure(
    nodes: &Arc<Vec<Node>>,
    url: &str,
    c: usize,
    duration: Duration,
    vpid: Option<u32>,
) -> Result<Phase> {
    // Loop k owns attesters k, k+C, ...: an attester is never in two rounds at once (its
    // TPM clock must be seen to move forward).
    let failures = Arc::new(Failures::default());
    let cpu0 = (vpid.and_then(proc_cpu), proc_cpu(std::process::id()));
    let start = Instant::now();
    let deadline = start + duration;
    let mut loops = Vec::new();
    for k in 0..c {
        let (nodes, url, failures) = (nodes.clone(), url.to_owned(), failures.clone());
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
                    Err(e) => failures.record(&e),
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
    Ok(Phase {
        times,
        open: None,
        errors: failures.count.load(Ordering::Relaxed),
        first_errors: failures.first(),
        wall,
        verifier_cpu: cpu_delta(cpu0.0, cpu1.0, wall),
        loadgen_cpu: cpu_delta(cpu0.1, cpu1.1, wall).unwrap_or_default(),
    })
}

/// One open-loop phase: round k is scheduled at `start + k / rate`; it waits for a free
/// attester (an attester is never in two rounds at once), then runs. Its latency counts
/// from the scheduled time, so a verifier that falls behind shows it in the latency
/// rather than in a slower offered rate (no coordinated omission).
async fn measure_open(
    nodes: &Arc<Vec<Node>>,
    url: &str,
    rate: f64,
    duration: Duration,
    vpid: Option<u32>,
) -> Result<Phase> {
    let (free_tx, free_rx) = tokio::sync::mpsc::unbounded_channel::<usize>();
    for i in 0..nodes.len() {
        free_tx.send(i).map_err(|_| anyhow!("attester pool"))?;
    }
    let free_rx = Arc::new(tokio::sync::Mutex::new(free_rx));
    let failures = Arc::new(Failures::default());
    let late = Arc::new(AtomicU64::new(0));
    let cpu0 = (vpid.and_then(proc_cpu), proc_cpu(std::process::id()));
    let start = Instant::now();
    let period = Duration::from_secs_f64(1.0 / rate.max(0.001));
    let mut rounds = Vec::new();
    let mut k: u32 = 0;
    loop {
        let at = start + period * k;
        if at >= start + duration {
            break;
        }
        tokio::time::sleep_until(at.into()).await;
        k += 1;
        let (nodes, url, free_tx, free_rx, late, failures) = (
            nodes.clone(),
            url.to_owned(),
            free_tx.clone(),
            free_rx.clone(),
            late.clone(),
            failures.clone(),
        );
        rounds.push(tokio::spawn(async move {
            let i = free_rx.lock().await.recv().await?;
            if at.elapsed() > Duration::from_millis(10) {
                late.fetch_add(1, Ordering::Relaxed);
            }
            let node = nodes.get(i)?;
            let r = push_round(&url, node).await;
            let done = u64::try_from(at.elapsed().as_micros()).unwrap_or(u64::MAX);
            let _ = free_tx.send(i);
            match r {
                Ok(t) => Some((t, done)),
                Err(e) => {
                    failures.record(&e);
                    None
                }
            }
        }));
    }
    let mut times = Vec::new();
    let mut from_schedule = Vec::new();
    for r in rounds {
        if let Some((t, d)) = r.await? {
            times.push(t);
            from_schedule.push(d);
        }
    }
    // The wall time includes the tail: rounds scheduled before the end, answered after.
    let wall = start.elapsed().as_secs_f64();
    let cpu1 = (vpid.and_then(proc_cpu), proc_cpu(std::process::id()));
    Ok(Phase {
        times,
        open: Some((from_schedule, rate, late.load(Ordering::Relaxed))),
        errors: failures.count.load(Ordering::Relaxed),
        first_errors: failures.first(),
        wall,
        verifier_cpu: cpu_delta(cpu0.0, cpu1.0, wall),
        loadgen_cpu: cpu_delta(cpu0.1, cpu1.1, wall).unwrap_or_default(),
    })
}

impl Phase {
    fn report(self, attesters: usize, c: usize, enroll_s: f64, metrics: Option<&str>) -> Report {
        let times = self.times;
        let (mut total, offered, late) = match self.open {
            Some((from_schedule, rate, late)) => (from_schedule, Some(rate), Some(late)),
            None => (
                times.iter().map(|t| t.nonce_us + t.evidence_us).collect(),
                None,
                None,
            ),
        };
        let mut nonce: Vec<u64> = times.iter().map(|t| t.nonce_us).collect();
        let mut build: Vec<u64> = times.iter().map(|t| t.build_us).collect();
        let mut evidence: Vec<u64> = times.iter().map(|t| t.evidence_us).collect();
        Report {
            attesters,
            concurrency: c,
            duration_s: self.wall,
            enroll_s,
            appraisals: times.len() as u64,
            errors: self.errors,
            appraisals_per_s: times.len() as f64 / self.wall,
            offered_per_s: offered,
            started_late: late,
            latency: percentiles(&mut total),
            nonce_request: percentiles(&mut nonce),
            build_bundle: percentiles(&mut build),
            evidence_request: percentiles(&mut evidence),
            verifier_cpu: self.verifier_cpu,
            loadgen_cpu: self.loadgen_cpu,
            first_errors: self.first_errors,
            audit_errors: metrics.and_then(|m| metric(m, "custody_audit_append_errors_total")),
            rounds_per_commit: metrics.and_then(|m| {
                let commits = metric(m, "custody_round_group_commits_total")?;
                let rounds = metric(m, "custody_round_group_committed_total")?;
                (commits > 0).then(|| rounds as f64 / commits as f64)
            }),
        }
    }
}

pub async fn run(opt: Options) -> Result<Report> {
    let s = setup(&opt, 0).await?;
    let nodes: Arc<Vec<Node>> = Arc::new(s.nodes);
    let c = opt.concurrency.clamp(1, nodes.len().max(1));
    let vpid = s.spawned.as_ref().map(Spawned::pid);
    let phase = match opt.rate {
        Some(rate) => measure_open(&nodes, &s.url, rate, opt.duration, vpid).await?,
        None => measure(&nodes, &s.url, c, opt.duration, vpid).await?,
    };
    let metrics = verifier_metrics(&s.anon, &s.url).await;
    drop(s.spawned);
    Ok(phase.report(nodes.len(), c, s.enroll_s, metrics.as_deref()))
}

/// The attack bench's settings (see `custody_loadgen::attack`).
#[derive(Debug, Clone, Default)]
pub struct AttackSettings {
    /// The `custody-attacker` binary (default: next to this executable).
    pub attacker_bin: Option<PathBuf>,
    /// Extra arguments for it, e.g. `--idle-tls 20`.
    pub attacker_args: Vec<String>,
    /// Seconds the attacker may take to open its connections.
    pub ramp_max_s: f64,
}

/// The attack bench's outcome: the same load, clean and then under attack.
#[derive(Debug, Clone, Serialize)]
pub struct AttackRun {
    pub clean: Report,
    pub attacked: Report,
    /// The attacker's own report (`ready` when the hold began, `done` at its end).
    pub attacker_ready: Option<serde_json::Value>,
    pub attacker_done: Option<serde_json::Value>,
    pub attacker_cpu: Option<Cpu>,
    /// The verifier's open descriptors (/proc/PID/fd), highest sample of each phase.
    pub verifier_fds_clean_peak: Option<u64>,
    pub verifier_fds_attack_peak: Option<u64>,
    /// The verifier's soft and hard `Max open files`.
    pub verifier_fd_limit: Option<String>,
    /// `custody_nodes{state="revoked"}` after the run (a fresh verifier starts at 0).
    pub revoked: Option<u64>,
    /// Failed legitimate rounds, both phases.
    pub errors: u64,
}

fn fd_count(pid: u32) -> Option<u64> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64)
}

fn fd_limit(pid: u32) -> Option<String> {
    let l = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = l.lines().find(|l| l.starts_with("Max open files"))?;
    let f: Vec<&str> = line.split_whitespace().collect();
    Some(format!("{} soft, {} hard", f.get(3)?, f.get(4)?))
}

/// Samples a process's descriptor count every 100 ms until dropped; `peak()` so far.
struct FdSampler {
    stop: Arc<std::sync::atomic::AtomicBool>,
    peak: Arc<AtomicU64>,
}

impl FdSampler {
    fn start(pid: Option<u32>) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        if let Some(pid) = pid {
            let (stop, peak) = (stop.clone(), peak.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(n) = fd_count(pid) {
                        peak.fetch_max(n, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
        }
        Self { stop, peak }
    }
    fn peak(&self) -> Option<u64> {
        Some(self.peak.load(Ordering::Relaxed)).filter(|&n| n > 0)
    }
}

impl Drop for FdSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The attacker process; killed on drop should it not have stopped by itself.
struct Attacker {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Attacker {
    /// The next stdout line starting with `tag`, parsed as JSON, within `wait`.
    async fn line(&self, tag: &str, wait: Duration) -> Option<serde_json::Value> {
        let end = Instant::now() + wait;
        loop {
            let left = end.checked_duration_since(Instant::now())?;
            match self.lines.try_recv() {
                Ok(l) => {
                    if let Some(j) = l.strip_prefix(tag) {
                        return serde_json::from_str(j.trim()).ok();
                    }
                }
                Err(std::sync::mpsc::TryRecvError::Empty) => {
                    tokio::time::sleep(left.min(Duration::from_millis(50))).await;
                }
                Err(std::sync::mpsc::TryRecvError::Disconnected) => return None,
            }
        }
    }
}

impl Drop for Attacker {
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(Some(_))) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

fn sibling_bin(given: Option<&PathBuf>, name: &str) -> Result<PathBuf> {
    if let Some(p) = given {
        return Ok(p.clone());
    }
    let exe = std::env::current_exe().context("own executable")?;
    let p = exe
        .parent()
        .ok_or_else(|| anyhow!("executable has no directory"))?
        .join(name);
    if !p.exists() {
        bail!(
            "{} not found: build it (cargo build -p custody-loadgen)",
            p.display()
        );
    }
    Ok(p)
}

/// The attack bench: enroll, measure the load clean, start `custody-attacker` (another
/// process; one more enrolled node for its garbage evidence), wait until its connections
/// are open, measure the same load again while it holds them, let it stop by itself.
pub async fn run_attack(opt: Options, a: AttackSettings) -> Result<AttackRun> {
    let bin = sibling_bin(a.attacker_bin.as_ref(), "custody-attacker")?;
    let mut s = setup(&opt, 1).await?;
    let bad = s
        .nodes
        .pop()
        .ok_or_else(|| anyhow!("no node for the garbage pusher"))?;
    let nodes: Arc<Vec<Node>> = Arc::new(s.nodes);
    let c = opt.concurrency.clamp(1, nodes.len().max(1));
    let vpid = s.spawned.as_ref().map(Spawned::pid);

    let fds = FdSampler::start(vpid);
    let clean = measure(&nodes, &s.url, c, opt.duration, vpid).await?;
    let clean_fds = fds.peak();
    drop(fds);

    let dir = tempfile::tempdir()?;
    let (ca, cert, key) = (
        dir.path().join("ca.pem"),
        dir.path().join("node.pem"),
        dir.path().join("node.key"),
    );
    std::fs::write(&ca, &s.roots_pem)?;
    std::fs::write(&cert, &bad.cert_pem)?;
    std::fs::write(&key, &bad.key_pem)?;
    // The attack is held a little longer than the measured phase, so it covers all of it.
    let hold = opt.duration.as_secs_f64() + 3.0;
    let ramp = a.ramp_max_s.max(1.0);
    let fds = FdSampler::start(vpid);
    let mut cmd = Command::new(&bin);
    cmd.arg("--url")
        .arg(&s.url)
        .arg("--ca")
        .arg(&ca)
        .arg("--node-cert")
        .arg(&cert)
        .arg("--node-key")
        .arg(&key)
        .arg("--ramp-max")
        .arg(ramp.to_string())
        .arg("--hold")
        .arg(hold.to_string())
        .args(&a.attacker_args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = cmd.spawn().with_context(|| format!("start {}", bin.display()))?;
    let out = child.stdout.take().ok_or_else(|| anyhow!("attacker stdout"))?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for l in std::io::BufReader::new(out).lines() {
            let Ok(l) = l else { break };
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let attacker = Attacker { child, lines: rx };
    let apid = attacker.child.id();
    let ready = attacker
        .line("ready ", Duration::from_secs_f64(ramp + 30.0))
        .await;
    if ready.is_none() {
        bail!("custody-attacker did not get ready (see its stderr above)");
    }
    let t_att = Instant::now();
    let a_cpu0 = proc_cpu(apid);
    let attacked = measure(&nodes, &s.url, c, opt.duration, vpid).await?;
    let a_cpu1 = proc_cpu(apid);
    let a_wall = t_att.elapsed().as_secs_f64();
    let done = attacker.line("done ", Duration::from_secs_f64(hold + 30.0)).await;
    let attack_fds = fds.peak();
    drop(fds);
    drop(attacker);
    let attacker_cpu = cpu_delta(a_cpu0, a_cpu1, a_wall);

    let metrics = verifier_metrics(&s.anon, &s.url).await;
    let revoked = metrics
        .as_deref()
        .map(|m| metric(m, "custody_nodes{state=\"revoked\"}").unwrap_or(0));
    let fd_limit = vpid.and_then(fd_limit);
    drop(s.spawned);
    let errors = clean.errors + attacked.errors;
    Ok(AttackRun {
        clean: clean.report(nodes.len(), c, s.enroll_s, None),
        attacked: attacked.report(nodes.len(), c, s.enroll_s, metrics.as_deref()),
        attacker_ready: ready,
        attacker_done: done,
        attacker_cpu,
        verifier_fds_clean_peak: clean_fds,
        verifier_fds_attack_peak: attack_fds,
        verifier_fd_limit: fd_limit,
        revoked,
        errors,
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
