//! `custody audit export|verify|prove|where`: the tamper-evident log, offline.
//!
//! `verify` follows the CLI contract: one JSON report on stdout, exit 0 verified, 1 the
//! log failed a check (named on stderr, with the entry or checkpoint), 2 bad usage or an
//! unreadable export.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use custody_audit::history::{job_history, JobHistory, Outcome};
use custody_audit::note::Verifier;
use custody_audit::store::Store;
use custody_audit::verify::{verified_entries, verify_dir, AuditSummary};
use custody_audit::Entry;
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
    /// Where a job's checkpoint has been: stays with sites and countries, every move and
    /// refusal, from an audited export (or, unaudited, the log database).
    Where(WhereArgs),
    /// The auditor's report: audit the export, then write one self-contained HTML file
    /// (verification, sites, each job's stays, moves and refusals, each node's results).
    Report(ReportArgs),
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The export directory; audited with --key before anything is read from it.
    #[arg(long)]
    dir: PathBuf,
    /// The log's public key (a file or the key string).
    #[arg(long)]
    key: String,
    /// A signed checkpoint kept from an earlier audit; the log must extend it.
    #[arg(long)]
    since: Option<PathBuf>,
    /// Only these jobs (repeatable); default every job the log names.
    #[arg(long = "job")]
    jobs: Vec<String>,
    /// The HTML file to write (not written when the audit fails).
    #[arg(long)]
    out: PathBuf,
}

#[derive(Debug, Args)]
pub struct WhereArgs {
    /// The job name.
    job: String,
    /// An export directory; audited with --key before anything is read from it.
    #[arg(long, conflicts_with = "db", required_unless_present = "db", requires = "key")]
    dir: Option<PathBuf>,
    /// The log's public key (a file or the key string), for --dir.
    #[arg(long)]
    key: Option<String>,
    /// A signed checkpoint kept from an earlier audit; the log must extend it.
    #[arg(long, requires = "dir")]
    since: Option<PathBuf>,
    /// The log database instead of an export: the operator's quick look, NOT audited.
    #[arg(long)]
    db: Option<PathBuf>,
    /// Print the history as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The log database (SQLite).
    #[arg(long)]
    db: PathBuf,
    /// Output directory (must not exist or be empty).
    #[arg(long)]
    out: PathBuf,
    /// Also write entries appended after the latest checkpoint (the auditor will report
    /// them as not covered). By default the export stops at the latest signed size.
    #[arg(long)]
    all: bool,
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
        AuditCmd::Where(a) => where_job(a),
        AuditCmd::Report(a) => report(a),
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
    let s = custody_audit::export::export_with(&store, &a.out, !a.all)
        .with_context(|| format!("cannot export to {}", a.out.display()))?;
    print_json(&serde_json::json!({
        "out": a.out.display().to_string(),
        "entries": s.entries,
        "unsigned_left_out": s.unsigned_left_out,
        "checkpoints": s.checkpoints,
        "latest_size": s.latest_size,
    }))?;
    Ok(ExitCode::SUCCESS)
}

/// `--key`: a file holding the key, or the key string itself.
fn read_key(key: &str) -> Result<Verifier> {
    let p = PathBuf::from(key);
    let key_text = if p.is_file() {
        std::fs::read_to_string(&p).with_context(|| format!("cannot read key {}", p.display()))?
    } else {
        key.to_owned()
    };
    Verifier::parse(key_text.trim_end()).context("--key is not a log public key")
}

fn read_since(since: Option<&std::path::Path>) -> Result<Option<String>> {
    since
        .map(|p| std::fs::read_to_string(p).with_context(|| format!("cannot read --since {}", p.display())))
        .transpose()
}

fn verify(a: VerifyArgs) -> Result<ExitCode> {
    let key = read_key(&a.key)?;
    let since = read_since(a.since.as_deref())?;
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

fn report(a: ReportArgs) -> Result<ExitCode> {
    let key = read_key(&a.key)?;
    let since = read_since(a.since.as_deref())?;
    let (v, entries, leaves) = match custody_audit::verify::verified_log(&a.dir, &key, since.as_deref()) {
        Ok(x) => x,
        Err(r) if r.error.check() == "read" => {
            eprintln!("custody: {}", r.error);
            return Ok(ExitCode::from(2));
        }
        Err(r) => {
            eprintln!("custody: audit log rejected, no report written: {r}");
            return Ok(ExitCode::from(1));
        }
    };
    let mut r = custody_audit::report::build(&v.claims, &key.to_key_string(), &entries, &a.jobs);
    r.prove(&leaves);
    let html = custody_audit::report::render(&r);
    // Written aside and renamed: a reader never opens half a report.
    let tmp = a.out.with_extension("html.partial");
    std::fs::write(&tmp, html).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &a.out).with_context(|| format!("cannot write {}", a.out.display()))?;
    println!("{}", a.out.display());
    Ok(ExitCode::SUCCESS)
}

fn where_job(a: WhereArgs) -> Result<ExitCode> {
    let (entries, audited) = match (&a.dir, &a.db) {
        (Some(dir), _) => {
            let key = read_key(a.key.as_deref().unwrap_or_default())?;
            let since = read_since(a.since.as_deref())?;
            match verified_entries(dir, &key, since.as_deref()) {
                Ok((v, entries)) => (entries, Some(v.claims)),
                Err(r) if r.error.check() == "read" => {
                    eprintln!("custody: {}", r.error);
                    return Ok(ExitCode::from(2));
                }
                Err(r) => {
                    eprintln!("custody: audit log rejected, no history read from it: {r}");
                    return Ok(ExitCode::from(1));
                }
            }
        }
        (None, Some(db)) => {
            let store = open_store(db)?;
            let mut entries = Vec::new();
            store.for_each_leaf(|i, leaf| {
                match Entry::from_leaf(leaf) {
                    Ok(e) => entries.push(e),
                    Err(e) => eprintln!("custody: entry {i} is not a log entry ({e}); skipped"),
                }
                Ok(())
            })?;
            eprintln!(
                "custody: read from the log database, not audited (export and use --dir --key for that)"
            );
            (entries, None)
        }
        (None, None) => anyhow::bail!("give --dir DIR --key KEY, or --db DB"),
    };
    let h = job_history(&a.job, (0u64..).zip(entries.iter()));
    if a.json {
        print_json(&serde_json::json!({
            "job": h.job,
            "audited": audited.is_some(),
            "log": audited,
            "stays": h.stays,
            "moves": h.moves,
            "refused": h.refused,
            "unexplained": h.unexplained,
        }))?;
    } else {
        let _ = write!(
            std::io::stdout().lock(),
            "{}",
            render_history(&h, audited.as_ref())
        );
    }
    // No entry about the job: say so by the exit code too, so scripts can tell.
    if h.moves.is_empty() && h.refused.is_empty() {
        eprintln!("custody: the log has no migration of job `{}`", a.job);
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

fn ts(t: Option<i64>) -> String {
    t.and_then(|t| time::OffsetDateTime::from_unix_timestamp(t).ok())
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| "-".into())
}

fn render_history(h: &JobHistory, audited: Option<&AuditSummary>) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = match audited {
        Some(s) => writeln!(
            o,
            "job {}: audited log of {} entries (root {}, {} checkpoints)",
            h.job, s.entries, s.root, s.checkpoints
        ),
        None => writeln!(o, "job {}: from the log database, NOT audited", h.job),
    };
    let _ = writeln!(o, "\nstays ({}):", h.stays.len());
    let _ = writeln!(
        o,
        "  {:<21} {:<21} {:<16} {:<28} {:<7} {:<26} entry",
        "since", "until", "node", "site", "country", "operator"
    );
    for s in &h.stays {
        let since = match s.since {
            None => "(before the log)".to_owned(),
            t => ts(t),
        };
        let until = match s.until {
            None => "now".to_owned(),
            t => ts(t),
        };
        let p = &s.place;
        let site = if p.site_name.is_empty() || p.site_name == p.site {
            p.site.clone()
        } else {
            format!("{} {}", p.site, p.site_name)
        };
        let op = if p.operator_country.is_empty() {
            p.operator.clone()
        } else {
            format!("{} ({})", p.operator, p.operator_country)
        };
        let name = if p.name.is_empty() { &p.node } else { &p.name };
        let _ = writeln!(
            o,
            "  {since:<21} {until:<21} {name:<16} {site:<28} {:<7} {op:<26} #{}",
            p.country, s.entry
        );
    }
    let _ = writeln!(o, "\nmoves ({}):", h.moves.len());
    for m in &h.moves {
        let end = match m.outcome {
            Outcome::Placed => format!(
                "placed {} bytes at {}, receipt sha256 {}{}",
                m.bytes.unwrap_or_default(),
                ts(m.completed_at),
                m.receipt_sha256.as_deref().unwrap_or("-"),
                if m.source_released {
                    "; source copy deleted"
                } else {
                    "; source copy kept"
                }
            ),
            Outcome::Failed => format!(
                "FAILED at {}: {} ({})",
                ts(m.completed_at),
                m.check.as_deref().unwrap_or("-"),
                m.detail.as_deref().unwrap_or("-")
            ),
            Outcome::Open => "no outcome logged".to_owned(),
        };
        let _ = writeln!(
            o,
            "  #{} {} ticket {}: {} -> {} under {}; {end}",
            m.entry,
            ts(m.issued_at),
            m.ticket,
            m.source.label(),
            m.destination.label(),
            m.policy_id
        );
        let _ = writeln!(
            o,
            "      manifest sha256 {}; destination evidence sha256 {}, result sha256 {}",
            m.manifest_sha256, m.destination.evidence_sha256, m.destination.ear_sha256
        );
    }
    if !h.refused.is_empty() {
        let _ = writeln!(o, "\nrefused ({}):", h.refused.len());
        for r in &h.refused {
            let _ = writeln!(
                o,
                "  #{} {} {} -> {}: {} ({})",
                r.entry,
                ts(r.at),
                r.source,
                r.destination,
                r.check,
                r.detail
            );
            for reason in &r.reasons {
                let _ = writeln!(o, "      - {reason}");
            }
        }
    }
    if !h.unexplained.is_empty() {
        let _ = writeln!(
            o,
            "\nWARNING: moves at entries {:?} start where the log never saw the job arrive",
            h.unexplained
        );
    }
    o
}
