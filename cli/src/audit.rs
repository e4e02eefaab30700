//! `custody audit export|verify|prove`: the tamper-evident log, offline.
//!
//! `verify` follows the CLI contract: one JSON report on stdout, exit 0 verified, 1 the
//! log failed a check (named on stderr, with the entry or checkpoint), 2 bad usage or an
//! unreadable export.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use custody_audit::note::Verifier;
use custody_audit::store::Store;
use custody_audit::verify::verify_dir;
use custody_verifier::{FailedCheck, Report};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// Write entries, checkpoints and the log's public key into a new directory.
    Export(ExportArgs),
    /// Check an export offline with only the log's public key.
    Verify(VerifyArgs),
    /// Print an inclusion or consistency proof from the log database.
    #[command(subcommand)]
    Prove(ProveCmd),
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The log database (SQLite).
    #[arg(long)]
    db: PathBuf,
    /// Output directory (must not exist or be empty).
    #[arg(long)]
    out: PathBuf,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The export directory.
    dir: PathBuf,
    /// The log's public key: a file holding `name+keyid+base64key`, or that string.
    #[arg(long)]
    key: String,
    /// A signed checkpoint kept from an earlier audit; the log must extend it.
    #[arg(long)]
    since: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum ProveCmd {
    /// Entry INDEX is in the tree of SIZE entries (default: all).
    Inclusion {
        #[arg(long)]
        db: PathBuf,
        #[arg(long)]
        index: u64,
        #[arg(long)]
        size: Option<u64>,
    },
    /// The tree of OLD entries is a prefix of the tree of NEW entries (default: all).
    Consistency {
        #[arg(long)]
        db: PathBuf,
        #[arg(long)]
        old: u64,
        #[arg(long)]
        new: Option<u64>,
    },
}

pub fn run(cmd: AuditCmd) -> ExitCode {
    let r = match cmd {
        AuditCmd::Export(a) => export(a),
        AuditCmd::Verify(a) => verify(a),
        AuditCmd::Prove(p) => prove(p),
    };
    match r {
        Ok(code) => code,
        Err(e) => {
            eprintln!("custody: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn print_json(v: &impl serde::Serialize) -> Result<()> {
    let json = serde_json::to_string_pretty(v).context("encode JSON")?;
    // A closed stdout must not panic; the exit code still carries the verdict.
    let _ = writeln!(std::io::stdout().lock(), "{json}");
    Ok(())
}

fn open_store(db: &std::path::Path) -> Result<Store> {
    if !db.exists() {
        anyhow::bail!("no log database at {}", db.display());
    }
    Store::open(db).with_context(|| format!("cannot open log {}", db.display()))
}

fn export(a: ExportArgs) -> Result<ExitCode> {
    let store = open_store(&a.db)?;
    let s = custody_audit::export::export(&store, &a.out)
        .with_context(|| format!("cannot export to {}", a.out.display()))?;
    print_json(&serde_json::json!({
        "out": a.out.display().to_string(),
        "entries": s.entries,
        "checkpoints": s.checkpoints,
        "latest_size": s.latest_size,
    }))?;
    Ok(ExitCode::SUCCESS)
}

fn verify(a: VerifyArgs) -> Result<ExitCode> {
    let p = PathBuf::from(&a.key);
    let key_text = if p.is_file() {
        std::fs::read_to_string(&p).with_context(|| format!("cannot read key {}", p.display()))?
    } else {
        a.key.clone()
    };
    let key = Verifier::parse(key_text.trim_end()).context("--key is not a log public key")?;
    let since = match &a.since {
        Some(p) => {
            Some(std::fs::read_to_string(p).with_context(|| format!("cannot read --since {}", p.display()))?)
        }
        None => None,
    };
    let outcome = verify_dir(&a.dir, &key, since.as_deref());
    let (report, rejected) = Report::from_outcome("audit", outcome);
    print_json(&report)?;
    match rejected {
        None => Ok(ExitCode::SUCCESS),
        Some(r) if r.error.check() == "read" => {
            eprintln!("custody: {}", r.error);
            Ok(ExitCode::from(2))
        }
        Some(r) => {
            eprintln!("custody: audit log rejected: {r}");
            Ok(ExitCode::from(1))
        }
    }
}

fn prove(p: ProveCmd) -> Result<ExitCode> {
    let hexes = |v: &[[u8; 32]]| v.iter().map(hex::encode).collect::<Vec<_>>();
    match p {
        ProveCmd::Inclusion { db, index, size } => {
            let store = open_store(&db)?;
            let size = size.unwrap_or(store.size());
            let (leaf, root, proof) = store.inclusion_proof(index, size)?;
            print_json(&serde_json::json!({
                "index": index,
                "size": size,
                "leaf_hash": hex::encode(leaf),
                "root": hex::encode(root),
                "proof": hexes(&proof),
            }))?;
        }
        ProveCmd::Consistency { db, old, new } => {
            let store = open_store(&db)?;
            let new = new.unwrap_or(store.size());
            let (old_root, new_root, proof) = store.consistency_proof(old, new)?;
            print_json(&serde_json::json!({
                "old": old,
                "new": new,
                "old_root": hex::encode(old_root),
                "new_root": hex::encode(new_root),
                "proof": hexes(&proof),
            }))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
