//! `custody landmark keygen|measure|verify|serve`: run a locality landmark by hand
//! (docs/locality.md). `measure` times a node's session-key answers and prints the
//! landmark's signed statement; `verify` checks one; `serve` is a remote landmark that
//! verifiers ask to measure their nodes (`POST /v1/measure`). One JSON object on stdout; exit 0
//! ok, 1 statement or measurement rejected (the failed check on stderr), 2 bad usage or
//! unreadable input.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use custody_locality::net::measure;
use custody_locality::remote::LandmarkService;
use custody_locality::{KeyProtection, LandmarkKey, LandmarkStatement, LatLon, LocalityError, Proof};
use serde_json::json;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, Subcommand)]
pub enum LandmarkCmd {
    /// Generate a landmark signing key (Ed25519, PKCS#8 DER, mode 0600) and its public
    /// key (hex).
    Keygen {
        /// Private key file to create (refuses to overwrite).
        #[arg(long)]
        key: PathBuf,
        /// Public key file to write (64 hex digits).
        #[arg(long = "pub")]
        public: PathBuf,
    },
    /// Time a node's locality responder and sign the statement.
    Measure(MeasureArgs),
    /// Check a signed statement against trusted landmark keys and the node's session key.
    Verify(VerifyArgs),
    /// Serve as a remote landmark: `POST /v1/measure` over HTTP measures the node a
    /// verifier names and answers with this landmark's signed statement.
    Serve(ServeArgs),
}

/// Who the landmark is and how it measures: shared by `measure` and `serve`.
#[derive(Debug, Args)]
pub struct LandmarkArgs {
    /// This landmark's id (verifiers pin it with the public key).
    #[arg(long)]
    id: String,
    /// This landmark's latitude, decimal degrees.
    #[arg(long, allow_hyphen_values = true)]
    lat: f64,
    /// This landmark's longitude, decimal degrees.
    #[arg(long, allow_hyphen_values = true)]
    lon: f64,
    /// The landmark's private key (from `keygen`).
    #[arg(long)]
    key: PathBuf,
    /// Challenges per measurement; the fastest answer counts.
    #[arg(long, default_value_t = 10)]
    probes: u32,
    /// Processing-time floor subtracted from the RTT, microseconds (default 0: see
    /// docs/locality.md before raising it).
    #[arg(long, default_value_t = 0)]
    processing_us: u64,
    /// Bound on one measurement, milliseconds.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
}

impl LandmarkArgs {
    /// The landmark's position (checked) and signing key.
    fn load(&self) -> Result<(LatLon, LandmarkKey)> {
        let position = LatLon::new(self.lat, self.lon);
        if !position.is_valid() {
            bail!("--lat/--lon ({}, {}) is not a valid position", self.lat, self.lon);
        }
        let der = std::fs::read(&self.key).with_context(|| format!("read {}", self.key.display()))?;
        let key =
            LandmarkKey::from_pkcs8(&der).map_err(|e| anyhow::anyhow!("{}: {e}", self.key.display()))?;
        Ok((position, key))
    }
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on, IP:PORT.
    #[arg(long)]
    listen: String,
    #[command(flatten)]
    landmark: LandmarkArgs,
    /// Measurements at once; more are refused `landmark_busy`.
    #[arg(long, default_value_t = 16)]
    max_measurements: usize,
}

#[derive(Debug, Args)]
pub struct MeasureArgs {
    /// The node's locality responder, HOST:PORT.
    #[arg(long)]
    addr: String,
    /// The node's attested Ed25519 session key, hex (32 bytes).
    #[arg(long)]
    session_key: String,
    #[command(flatten)]
    landmark: LandmarkArgs,
    /// Node id recorded in the statement.
    #[arg(long, default_value = "")]
    node: String,
    /// Also write the signed statement (binary CBOR) here.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Signed statement: a file (binary CBOR, or hex) or hex on the command line.
    #[arg(long)]
    statement: String,
    /// Trusted landmark public key: a file from `keygen --pub`, or hex. Repeatable.
    #[arg(long, required = true)]
    trust: Vec<String>,
    /// The node's attested Ed25519 session key, hex (32 bytes).
    #[arg(long)]
    session_key: String,
    /// Oldest statement accepted, seconds.
    #[arg(long, default_value_t = 300)]
    max_age: u64,
    /// Appraisal time, Unix seconds (default now).
    #[arg(long)]
    now: Option<i64>,
    /// How the node's session key is protected (from its attestation): cvm, tpm, process.
    #[arg(long, default_value = "process")]
    key_protection: String,
}

pub fn run(cmd: LandmarkCmd) -> ExitCode {
    let r = match cmd {
        LandmarkCmd::Keygen { key, public } => keygen(&key, &public),
        LandmarkCmd::Measure(a) => run_measure(a),
        LandmarkCmd::Verify(a) => run_verify(a),
        LandmarkCmd::Serve(a) => run_serve(a),
    };
    match r {
        Ok(code) => code,
        Err(e) => {
            eprintln!("custody: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn rejected(e: &LocalityError) -> ExitCode {
    eprintln!("custody: check `{}` failed: {e}", e.check());
    let _ = writeln!(
        std::io::stdout().lock(),
        "{}",
        json!({ "ok": false, "check": e.check(), "detail": e.to_string() })
    );
    ExitCode::from(1)
}

fn print_json(v: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(v).context("encode JSON")?;
    let _ = writeln!(std::io::stdout().lock(), "{text}");
    Ok(())
}

fn key32(what: &str, s: &str) -> Result<[u8; 32]> {
    let b = hex::decode(s.trim()).with_context(|| format!("{what} is not hex"))?;
    <[u8; 32]>::try_from(b.as_slice())
        .map_err(|_| anyhow::anyhow!("{what} must be exactly 32 bytes, got {}", b.len()))
}

fn unix_now() -> Result<i64> {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("system clock before 1970")?;
    Ok(i64::try_from(d.as_secs())?)
}

fn keygen(key: &Path, public: &Path) -> Result<ExitCode> {
    let (k, pkcs8) = LandmarkKey::generate().map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(key)
        .with_context(|| format!("create {}", key.display()))?;
    f.write_all(&pkcs8)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("write {}", key.display()))?;
    let hex_pub = hex::encode(k.public_key());
    std::fs::write(public, format!("{hex_pub}\n")).with_context(|| format!("write {}", public.display()))?;
    print_json(&json!({ "public_key": hex_pub }))?;
    Ok(ExitCode::SUCCESS)
}

fn statement_json(s: &LandmarkStatement) -> serde_json::Value {
    json!({
        "landmark": s.landmark,
        "lat": s.lat,
        "lon": s.lon,
        "node": s.node,
        "session_ed25519": hex::encode(s.session_ed25519),
        "rtt_us": s.rtt_us,
        "probes": s.probes,
        "bound_km": s.bound_km,
        "measured_at": s.measured_at,
    })
}

fn run_measure(a: MeasureArgs) -> Result<ExitCode> {
    let session = key32("--session-key", &a.session_key)?;
    let (position, key) = a.landmark.load()?;
    let l = &a.landmark;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let m = match rt.block_on(measure(
        a.addr.as_str(),
        &l.id,
        &session,
        l.probes,
        Duration::from_millis(l.timeout_ms),
    )) {
        Ok(m) => m,
        Err(e) => return Ok(rejected(&e)),
    };
    let s = m.statement(
        &l.id,
        position,
        &a.node,
        session,
        Duration::from_micros(l.processing_us),
        unix_now()?,
    );
    let signed = match s.sign(&key) {
        Ok(b) => b,
        Err(e) => return Ok(rejected(&e)),
    };
    if let Some(out) = &a.out {
        std::fs::write(out, &signed).with_context(|| format!("write {}", out.display()))?;
    }
    print_json(&json!({
        "ok": true,
        "signed": hex::encode(&signed),
        "statement": statement_json(&s),
        "rtt_max_us": u64::try_from(m.rtt_max.as_micros()).unwrap_or(u64::MAX),
    }))?;
    Ok(ExitCode::SUCCESS)
}

/// A file's bytes (binary, or hex text) or the argument itself as hex.
fn bytes_arg(s: &str) -> Result<Vec<u8>> {
    let p = Path::new(s);
    if p.is_file() {
        let b = std::fs::read(p).with_context(|| format!("read {s}"))?;
        return Ok(
            match std::str::from_utf8(&b)
                .ok()
                .and_then(|t| hex::decode(t.trim()).ok())
            {
                Some(h) => h,
                None => b,
            },
        );
    }
    hex::decode(s.trim()).with_context(|| format!("{s:?} is neither a file nor hex"))
}

fn run_verify(a: VerifyArgs) -> Result<ExitCode> {
    let session = key32("--session-key", &a.session_key)?;
    let trusted = a
        .trust
        .iter()
        .map(|t| key32("--trust", &hex::encode(bytes_arg(t)?)))
        .collect::<Result<Vec<_>>>()?;
    let protection = match a.key_protection.as_str() {
        "cvm" => KeyProtection::Cvm,
        "tpm" => KeyProtection::Tpm,
        "process" => KeyProtection::Process,
        other => bail!("--key-protection {other:?}: expected cvm, tpm or process"),
    };
    let signed = bytes_arg(&a.statement)?;
    let now = match a.now {
        Some(t) => t,
        None => unix_now()?,
    };
    match LandmarkStatement::verify(&signed, &trusted, &session, now, a.max_age) {
        Ok(s) => {
            print_json(&json!({
                "ok": true,
                "statement": statement_json(&s),
                "proof": Proof::from_statement(&s, protection),
            }))?;
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Ok(rejected(&e)),
    }
}

fn run_serve(a: ServeArgs) -> Result<ExitCode> {
    let listen: std::net::SocketAddr = a
        .listen
        .parse()
        .with_context(|| format!("--listen {:?} is not IP:PORT", a.listen))?;
    let l = &a.landmark;
    let (position, key) = l.load()?;
    let public = hex::encode(key.public_key());
    let mut svc = LandmarkService::new(&l.id, position, key, l.probes).map_err(|e| anyhow::anyhow!("{e}"))?;
    svc.processing_floor = Duration::from_micros(l.processing_us);
    svc.measure_timeout = Duration::from_millis(l.timeout_ms);
    svc.max_measurements = a.max_measurements;
    // One line per request span on stderr (RUST_LOG overrides the level).
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .try_init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("listen on {listen}"))?;
        let bound = listener.local_addr()?;
        // One line on stdout when ready: what a verifier pins.
        let line = json!({ "listening": bound.to_string(), "landmark": l.id, "public_key": public });
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{line}")?;
            out.flush()?;
        }
        custody_locality::remote::serve(listener, std::sync::Arc::new(svc), async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}
