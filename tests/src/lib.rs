//! Helpers for Custody's end-to-end tests: locate the built binaries and the shared test
//! vectors, run the CLI and capture its JSON.
#![forbid(unsafe_code)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// Repository root (the workspace directory).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
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
        let target = std::env::var("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| repo_root().join("target"));
        target.join("debug/custody")
    })
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
