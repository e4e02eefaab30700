//! Helpers for Custody's end-to-end tests: locate the built binaries and the shared test
//! vectors, run the CLI and capture its JSON, run a real swtpm.
#![forbid(unsafe_code)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

pub mod azure;
pub mod fleet;
pub mod nvgpu;
pub mod pushed;
pub mod snp;
pub mod tdx;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// Repository root (the workspace directory).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Open `html` in Debian's chromium, headless, with its own profile directory, and return
/// what it printed (`--dump-dom` gives the DOM; `--screenshot=F` writes F). Panics when
/// chromium fails.
pub fn chromium(html: &Path, profile: &Path, extra: &[&str]) -> String {
    let o = Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(format!("file://{}", html.display()))
        .output()
        .expect("chromium (Debian's chromium; scripts/setup.sh installs it)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A page that loads nothing: no script, image, stylesheet link or URL in its DOM.
pub fn assert_self_contained(dom: &str) {
    for outside in ["<script", "<img", "<link", "http://", "https://"] {
        assert!(!dom.contains(outside), "{outside} on the page");
    }
}

/// A screenshot of `html` at 1200 x `height` into `target/custody-artifacts/NAME`,
/// checked not to be empty.
pub fn screenshot(html: &Path, profile: &Path, name: &str, height: u32) -> PathBuf {
    let shot = artifacts().join(name);
    let _ = std::fs::remove_file(&shot);
    chromium(
        html,
        profile,
        &[
            &format!("--screenshot={}", shot.display()),
            &format!("--window-size=1200,{height}"),
            "--hide-scrollbars",
        ],
    );
    let len = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    assert!(
        len > 10_000,
        "an empty screenshot: {} ({len} bytes)",
        shot.display()
    );
    shot
}

/// Where tests keep what a person may want to look at (screenshots).
pub fn artifacts() -> PathBuf {
    let d = repo_root().join("target/custody-artifacts");
    std::fs::create_dir_all(&d).expect("create target/custody-artifacts");
    d
}

/// `../shared/testvectors` beside the checkout, or `CUSTODY_TESTVECTORS` if set.
pub fn testvectors() -> PathBuf {
    if let Ok(p) = std::env::var("CUSTODY_TESTVECTORS") {
        return PathBuf::from(p);
    }
    repo_root().parent().unwrap().join("shared/testvectors")
}

/// Path to the `custody` binary, built once per test process with the same cargo.
pub fn custody_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let st = Command::new(cargo)
            .args(["build", "--quiet", "-p", "custody-cli", "--bin", "custody"])
            .current_dir(repo_root())
            .status()
            .expect("run cargo build");
        assert!(st.success(), "building custody failed");
        target_dir().join("debug/custody")
    })
}

/// The cargo target directory these tests were built into.
pub fn target_dir() -> PathBuf {
    std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo_root().join("target"))
}

/// Path to `custody-verifier` or `custody-agent`. Cargo builds only the tested package's
/// binaries for integration tests, so both are built once per test process here.
pub fn service_bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let st = Command::new(cargo)
            .args([
                "build",
                "--quiet",
                "-p",
                "custody-service",
                "-p",
                "custody-agent",
                "--bins",
            ])
            .current_dir(repo_root())
            .status()
            .expect("run cargo build");
        assert!(st.success(), "building custody-verifier and custody-agent failed");
    });
    target_dir().join("debug").join(name)
}

/// `custody-verifier init` for the verifier configured by `config` (its CA, keys and the
/// operator's client identity in `operator_dir`); panics with its stderr on failure.
pub fn verifier_init(config: &Path, operator_dir: &Path) {
    let out = Command::new(service_bin("custody-verifier"))
        .args(["init", "--config"])
        .arg(config)
        .arg("--operator-dir")
        .arg(operator_dir)
        .output()
        .expect("run custody-verifier init");
    assert!(
        out.status.success(),
        "custody-verifier init: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A TCP port free on 127.0.0.1 at the time of the call.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Result of one CLI run.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}): {}\nstderr: {}",
                self.stdout, self.stderr
            )
        })
    }

    /// Names of the checks in the JSON report, in order.
    pub fn check_names(&self) -> Vec<String> {
        self.json()["checks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Name of the failed check in the JSON report, if any.
    pub fn failed_check(&self) -> Option<String> {
        let v = self.json();
        v["checks"]
            .as_array()?
            .iter()
            .find(|c| c["ok"] == false)
            .and_then(|c| c["name"].as_str().map(str::to_owned))
    }
}

/// The CLI contract for a rejection: exit 1, the failed check named in the JSON and on
/// stderr, `verified: false` and no claims.
#[track_caller]
pub fn assert_rejected(r: &Run, check: &str) {
    assert_eq!(r.code, 1, "stdout: {}\nstderr: {}", r.stdout, r.stderr);
    assert_eq!(r.failed_check().as_deref(), Some(check), "{}", r.stdout);
    assert!(r.stderr.contains(&format!("`{check}`")), "{}", r.stderr);
    let j = r.json();
    assert_eq!(j["verified"], false);
    assert!(j["claims"].is_null());
}

pub fn custody<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(custody_bin())
        .args(args)
        .output()
        .expect("run custody");
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A running swtpm in its own temp dir, with an EK certificate (RSA, NV 0x01C00002) and a
/// platform certificate; killed and removed on drop. swtpm serves one client at a time.
#[derive(Debug)]
pub struct Swtpm {
    child: Child,
    dir: PathBuf,
    port: u16,
}

/// A port `p` with `p` and `p + 1` free (swtpm's server and control ports) at the time of
/// the call.
pub fn free_port_pair() -> u16 {
    for _ in 0..100 {
        let a = TcpListener::bind("127.0.0.1:0").unwrap();
        let p = a.local_addr().unwrap().port();
        if p < u16::MAX && TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
    panic!("no free port pair");
}

impl Swtpm {
    pub fn start() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "custody-swtpm-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("state")).unwrap();
        std::fs::create_dir_all(dir.join("xdg")).unwrap();
        let setup = |args: &[&str]| {
            Command::new("swtpm_setup")
                .args(args)
                .env("XDG_CONFIG_HOME", dir.join("xdg"))
                .output()
                .unwrap_or_else(|e| panic!("swtpm_setup is required (CI installs it): {e}"))
        };
        let ok = |args: &[&str], out: std::process::Output| {
            assert!(
                out.status.success(),
                "swtpm_setup {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        // As root, swtpm_setup wants the `root` flag to write configs that shadow /etc's.
        let plain = ["--tpm2", "--create-config-files", "skip-if-exist"];
        let out = setup(&plain);
        if out.status.success() {
            ok(&plain, out);
        } else {
            let as_root = ["--tpm2", "--create-config-files", "skip-if-exist,root"];
            ok(&as_root, setup(&as_root));
        }
        let state = dir.join("state");
        let args = [
            "--tpm2",
            "--tpmstate",
            state.to_str().unwrap(),
            "--create-ek-cert",
            "--create-platform-cert",
        ];
        ok(&args, setup(&args));
        let port = free_port_pair();
        let child = Command::new("swtpm")
            .args([
                "socket",
                "--tpm2",
                "--tpmstate",
                &format!("dir={}", state.display()),
                "--server",
                &format!("type=tcp,port={port}"),
                "--ctrl",
                &format!("type=tcp,port={}", port + 1),
                "--flags",
                "not-need-init,startup-clear",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("swtpm is required (CI installs it): {e}"));
        let t = Self { child, dir, port };
        for _ in 0..100 {
            if t.try_tool(&["tpm2_pcrread", "sha256:0"]) {
                return t;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("swtpm did not come up on port {port}");
    }

    /// A TPM Reset, as after a power cycle: `_TPM_Init` through swtpm's control channel,
    /// then `TPM2_Startup(CLEAR)`. The reset count goes up by one.
    pub fn power_cycle(&self) {
        let ctrl = format!("127.0.0.1:{}", self.port + 1);
        let out = Command::new("swtpm_ioctl")
            .args(["--tcp", &ctrl, "-i"])
            .output()
            .unwrap_or_else(|e| panic!("swtpm_ioctl is required (CI installs swtpm-tools): {e}"));
        assert!(
            out.status.success(),
            "swtpm_ioctl -i: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.tool(&["tpm2_startup", "-c"]);
    }

    /// `(resetCount, restartCount)` as TPM2_ReadClock reports them.
    pub fn reset_counts(&self) -> (u64, u64) {
        let out = self.cmd(&["tpm2_readclock"]).output().unwrap();
        assert!(
            out.status.success(),
            "tpm2_readclock: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let field = |name: &str| -> u64 {
            text.lines()
                .find_map(|l| l.trim().strip_prefix(name))
                .and_then(|v| v.trim_start_matches(':').trim().parse().ok())
                .unwrap_or_else(|| panic!("no {name} in tpm2_readclock output:\n{text}"))
        };
        (field("reset_count"), field("restart_count"))
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(args[0]);
        c.args(&args[1..])
            .current_dir(&self.dir)
            .env("TPM2TOOLS_TCTI", self.tcti())
            .env("XDG_CONFIG_HOME", self.dir.join("xdg"));
        c
    }

    pub fn try_tool(&self, args: &[&str]) -> bool {
        self.cmd(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Run a tpm2-tools command, then flush transient objects: swtpm has no resource
    /// manager and runs out of object slots otherwise.
    pub fn tool(&self, args: &[&str]) {
        let out = self
            .cmd(args)
            .output()
            .unwrap_or_else(|e| panic!("{} is required (CI installs tpm2-tools): {e}", args[0]));
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(self.try_tool(&["tpm2_flushcontext", "-t"]));
    }

    /// Extend every sha256 measurement of `log` into this TPM, except EV_NO_ACTION events
    /// and PCR 0 (whose StartupLocality start value a swtpm cannot reproduce). Returns the
    /// number of extends.
    pub fn replay_event_log(&self, log: &custody_formats::eventlog::EventLog) -> usize {
        use custody_formats::alg::HashAlg;
        use custody_formats::eventlog::EV_NO_ACTION;
        let specs: Vec<String> = log
            .events
            .iter()
            .filter(|e| e.event_type != EV_NO_ACTION && e.pcr != 0)
            .map(|e| {
                format!(
                    "{}:sha256={}",
                    e.pcr,
                    hex::encode(e.digest(HashAlg::Sha256).unwrap())
                )
            })
            .collect();
        for chunk in specs.chunks(16) {
            let mut args = vec!["tpm2_pcrextend"];
            args.extend(chunk.iter().map(String::as_str));
            self.tool(&args);
        }
        specs.len()
    }

    /// PEM files of the swtpm local CA that signed this instance's EK certificate: root
    /// first, then the issuing CA. `swtpm_setup --create-config-files` points the CA's
    /// statedir into this instance's XDG_CONFIG_HOME, so every instance has its own CA
    /// (all with the same subject names: only the keys tell them apart).
    pub fn ek_ca_certs(&self) -> Vec<PathBuf> {
        let conf = std::fs::read_to_string(self.dir.join("xdg/swtpm-localca.conf"))
            .expect("swtpm-localca.conf in this instance's XDG_CONFIG_HOME");
        let value = |key: &str| {
            conf.lines()
                .filter_map(|l| l.split_once('='))
                .find(|(k, _)| k.trim() == key)
                .map(|(_, v)| PathBuf::from(v.trim()))
        };
        let statedir = value("statedir").expect("statedir in swtpm-localca.conf");
        assert!(
            statedir.starts_with(&self.dir),
            "swtpm local CA at {} is shared, not per instance",
            statedir.display()
        );
        let issuer = value("issuercert").unwrap_or_else(|| statedir.join("issuercert.pem"));
        let root = statedir.join("swtpm-localca-rootca-cert.pem");
        for p in [&root, &issuer] {
            assert!(p.is_file(), "{} missing", p.display());
        }
        vec![root, issuer]
    }

    /// The RSA EK certificate exactly as stored in NV index 0x01C00002 (`tpm2_nvread`).
    /// SHA-256 of the EK certificate: the registry's `ek_sha256` hardware id.
    pub fn ek_cert_sha256(&self) -> [u8; 32] {
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &self.ek_cert_der());
        d.as_ref().try_into().unwrap()
    }

    pub fn ek_cert_der(&self) -> Vec<u8> {
        self.tool(&["tpm2_nvread", "0x1c00002", "-o", "ek-cert.der"]);
        std::fs::read(self.path("ek-cert.der")).unwrap()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The tpm2-tss TCTI string for this swtpm.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// Stop swtpm now (the directory stays until drop).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// EK plus RSA (PEM) and ECC P-256 (TPM2B_PUBLIC) AKs: `rsa.ctx`, `ecc.ctx`.
    pub fn create_aks(&self) {
        self.tool(&["tpm2_createek", "-c", "ek.ctx", "-G", "rsa", "-u", "ek.pub"]);
        self.tool(&[
            "tpm2_createak",
            "-C",
            "ek.ctx",
            "-c",
            "rsa.ctx",
            "-G",
            "rsa",
            "-g",
            "sha256",
            "-s",
            "rsassa",
            "-u",
            "ak-rsa.pem",
            "-f",
            "pem",
            "-n",
            "ak-rsa.name",
        ]);
        self.tool(&[
            "tpm2_createak",
            "-C",
            "ek.ctx",
            "-c",
            "ecc.ctx",
            "-G",
            "ecc",
            "-g",
            "sha256",
            "-s",
            "ecdsa",
            "-u",
            "ak-ecc.pub",
            "-f",
            "tss",
            "-n",
            "ak-ecc.name",
        ]);
    }

    /// Quote with `ctx` over `pcrs`; writes `<prefix>-quote.bin`, `-sig.bin`, `-pcrs.bin`.
    pub fn quote(&self, ctx: &str, pcrs: &str, nonce: &str, prefix: &str) {
        let (m, s, o) = (
            format!("{prefix}-quote.bin"),
            format!("{prefix}-sig.bin"),
            format!("{prefix}-pcrs.bin"),
        );
        self.tool(&[
            "tpm2_quote",
            "-c",
            ctx,
            "-l",
            pcrs,
            "-q",
            nonce,
            "-m",
            &m,
            "-s",
            &s,
            "-o",
            &o,
            "-g",
            "sha256",
        ]);
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A fresh random round nonce.
pub fn random_nonce() -> custody_formats::binding::Nonce {
    use std::io::Read;
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut b)
        .unwrap();
    custody_formats::binding::Nonce(b)
}

/// Poll `f` every 100 ms until it returns `Some`, for at most `secs`.
pub fn eventually<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A child process killed (and reaped) when the test ends, however it ends.
#[derive(Debug)]
pub struct Kill(pub Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Registry fixtures for the sovereignty and migration tests: entities and Paris sites.
pub mod registry {
    use custody_registry::model::{Entity, Holding, Site};
    use custody_registry::Country;

    /// An entity whose three seats are all in `country`.
    pub fn entity(id: &str, name: &str, country: &str, us_nexus: bool, holders: Vec<Holding>) -> Entity {
        let c = Country::new(country).unwrap();
        Entity {
            id: id.into(),
            name: name.into(),
            lei: None,
            registered_office: c.clone(),
            central_administration: c.clone(),
            principal_establishment: c,
            us_nexus,
            holders,
        }
    }

    /// A site in Paris run by `operator`.
    pub fn site(id: &str, operator: &str) -> Site {
        Site {
            id: id.into(),
            name: format!("Paris {id}"),
            country: Country::new("FR").unwrap(),
            region: "Ile-de-France".into(),
            lat_e6: 48_856_600,
            lon_e6: 2_352_200,
            operator: operator.into(),
        }
    }
}
