//! `custody migrate JOB --from A --to B`: ask the verifier for a migration, then follow it
//! to the verified receipt with a progress bar (stderr, when it is a terminal) or `--json`.
//!
//! Exit codes: 0 placed at B with a verified receipt, 1 refused or failed (the check named),
//! 2 usage or connection problems.

// Indexing into serde_json::Value gives Null for a missing key and never panics.
#![allow(clippy::indexing_slicing)]
use crate::ops::{enc, runtime, Client, Conn};
use clap::Args;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The job (the checkpoint arrives at B as `<checkpoints_dir>/<JOB>`).
    pub job: String,
    /// Source node (id or name).
    #[arg(long = "from")]
    pub from: String,
    /// Destination node (id or name).
    #[arg(long = "to")]
    pub to: String,
    /// A shipped policy B must pass now (default: the verifier's).
    #[arg(long)]
    pub policy: Option<String>,
    /// Checkpoint directory name in A's checkpoint store (default: JOB).
    #[arg(long)]
    pub checkpoint: Option<String>,
    /// STREAM chunk size in bytes (1 KiB - 16 MiB; default 1 MiB).
    #[arg(long)]
    pub chunk_size: Option<u32>,
    /// Ticket lifetime in seconds (default 900).
    #[arg(long)]
    pub ttl: Option<i64>,
    /// Return once the ticket is issued and the transfer started.
    #[arg(long)]
    pub no_wait: bool,
    /// Delete the checkpoint at A once B's signed receipt has verified.
    #[arg(long, conflicts_with = "via_file")]
    pub delete_source: bool,
    /// Air-gapped: A writes an export file (sealed to B's attested key); carry it to B and
    /// run `custody import FILE` there. Returns once the file is written.
    #[arg(long)]
    pub via_file: bool,
    #[command(flatten)]
    pub conn: Conn,
}

fn mb(b: u64) -> f64 {
    b as f64 / 1e6
}

fn bar(m: &serde_json::Value, started: Instant) -> String {
    let bytes = m["bytes"].as_u64().unwrap_or(0);
    let total = m["total"].as_u64().unwrap_or(0).max(1);
    let frac = (bytes as f64 / total as f64).clamp(0.0, 1.0);
    let secs = started.elapsed().as_secs_f64().max(1e-3);
    let rate = mb(bytes) / secs;
    let eta = if rate > 0.0 {
        (mb(total) - mb(bytes)) / rate
    } else {
        f64::NAN
    };
    let filled = (frac * 30.0) as usize;
    format!(
        "\r[{}{}] {:5.1}% {:8.1}/{:.1} MB {:7.1} MB/s ETA {:>4.0} s ",
        "#".repeat(filled),
        " ".repeat(30 - filled),
        frac * 100.0,
        mb(bytes),
        mb(total),
        rate,
        eta
    )
}

pub fn run(a: MigrateArgs) -> ExitCode {
    match runtime().and_then(|rt| rt.block_on(go(a))) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("custody: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn go(a: MigrateArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(&a.conn)?;
    let mut req = serde_json::json!({"job": a.job, "source": a.from, "destination": a.to});
    for (k, v) in [("policy", &a.policy), ("checkpoint", &a.checkpoint)] {
        if let Some(v) = v {
            req[k] = v.clone().into();
        }
    }
    if let Some(c) = a.chunk_size {
        req["chunk_size"] = c.into();
    }
    if let Some(t) = a.ttl {
        req["ttl_secs"] = t.into();
    }
    if a.delete_source {
        req["delete_source"] = true.into();
    }
    if a.via_file {
        req["via_file"] = true.into();
    }
    let (status, m) = client
        .call_status(http::Method::POST, "/v1/migrations", Some(req))
        .await?;
    if !status.is_success() {
        if a.conn.json {
            println!("{m}");
        }
        eprintln!(
            "custody: migration refused: {}: {}",
            m["check"].as_str().unwrap_or("?"),
            m["detail"].as_str().or(m["error"].as_str()).unwrap_or("")
        );
        for r in m["reasons"].as_array().into_iter().flatten() {
            eprintln!("  reason: {}", r.as_str().unwrap_or_default());
        }
        return Ok(
            if status.is_client_error() && status != http::StatusCode::NOT_FOUND {
                ExitCode::from(1)
            } else {
                ExitCode::from(2)
            },
        );
    }
    let id = m["id"].as_str().unwrap_or_default().to_owned();
    if !a.conn.json {
        eprintln!(
            "ticket {id}: {} from {} to {} under {}; {} files, {:.1} MB; destination GPUs: {}",
            m["job"].as_str().unwrap_or_default(),
            m["source"].as_str().unwrap_or_default(),
            m["destination"].as_str().unwrap_or_default(),
            m["policy_id"].as_str().unwrap_or_default(),
            m["files"],
            mb(m["total"].as_u64().unwrap_or(0)),
            m["gpus"]
                .as_array()
                .filter(|g| !g.is_empty())
                .map_or("none".into(), |g| g
                    .iter()
                    .filter_map(|x| x.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")),
        );
    }
    if a.no_wait {
        if a.conn.json {
            println!("{m}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let tty = std::io::stderr().is_terminal() && !a.conn.json;
    let started = Instant::now();
    let path = format!("/v1/migrations/{}", enc(&id)?);
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let m = client.call(http::Method::GET, &path, None).await?;
        if tty {
            let mut e = std::io::stderr();
            let _ = e.write_all(bar(&m, started).as_bytes());
            let _ = e.flush();
        }
        match m["state"].as_str() {
            Some("running") => continue,
            Some("exported") if a.via_file => {
                if tty {
                    eprintln!();
                }
                if a.conn.json {
                    println!("{m}");
                } else {
                    println!(
                        "exported on {}: {} ({:.1} MB, sha256 {})\ncarry it to {} and run there: custody import FILE; the ticket expires at {}",
                        m["source"].as_str().unwrap_or_default(),
                        m["export_path"].as_str().unwrap_or_default(),
                        mb(m["bytes"].as_u64().unwrap_or(0)),
                        m["export_sha256"].as_str().unwrap_or_default(),
                        m["destination"].as_str().unwrap_or_default(),
                        m["expires_at"]
                    );
                }
                return Ok(ExitCode::SUCCESS);
            }
            Some("done") => {
                if tty {
                    eprintln!();
                }
                if a.conn.json {
                    println!("{m}");
                } else {
                    let secs = started.elapsed().as_secs_f64();
                    println!(
                        "placed: {} at {} ({:.1} MB in {:.1} s, {:.1} MB/s{}), receipt verified, sha256 {}",
                        m["job"].as_str().unwrap_or_default(),
                        m["destination"].as_str().unwrap_or_default(),
                        mb(m["bytes"].as_u64().unwrap_or(0)),
                        secs,
                        mb(m["bytes"].as_u64().unwrap_or(0)) / secs.max(1e-3),
                        match m["resumed_at"].as_u64() {
                            Some(k) if k > 0 => format!(", resumed at chunk {k}"),
                            _ => String::new(),
                        },
                        m["receipt_sha256"].as_str().unwrap_or_default()
                    );
                }
                return Ok(ExitCode::SUCCESS);
            }
            _ => {
                if tty {
                    eprintln!();
                }
                if a.conn.json {
                    println!("{m}");
                }
                eprintln!(
                    "custody: migration failed: {}: {}",
                    m["check"].as_str().unwrap_or("?"),
                    m["detail"].as_str().unwrap_or_default()
                );
                return Ok(ExitCode::from(1));
            }
        }
    }
}

/// `custody import FILE`: hand an export file to the local agent's admin socket.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// The export file (`custody migrate --via-file` wrote it on the source node).
    pub file: std::path::PathBuf,
    /// The agent's admin socket (its `admin_socket` setting).
    #[arg(
        long,
        env = "CUSTODY_AGENT_SOCKET",
        default_value = "/run/custody-agent/admin.sock"
    )]
    pub socket: std::path::PathBuf,
    /// Print the agent's answer as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Exit 0 imported (checkpoint placed, receipt kept for the verifier), 1 refused (the check
/// named), 2 the agent could not be asked.
pub fn import(a: ImportArgs) -> ExitCode {
    use std::io::{BufRead, BufReader};
    let r = (|| -> anyhow::Result<serde_json::Value> {
        // The agent opens the file itself: give it an absolute path.
        let file =
            std::fs::canonicalize(&a.file).map_err(|e| anyhow::anyhow!("{}: {e}", a.file.display()))?;
        let mut s = std::os::unix::net::UnixStream::connect(&a.socket)
            .map_err(|e| anyhow::anyhow!("agent admin socket {}: {e}", a.socket.display()))?;
        writeln!(s, "{}", serde_json::json!({ "import": file }))?;
        let mut line = String::new();
        BufReader::new(&s).read_line(&mut line)?;
        Ok(serde_json::from_str(&line)?)
    })();
    let v = match r {
        Ok(v) => v,
        Err(e) => {
            eprintln!("custody: {e:#}");
            return ExitCode::from(2);
        }
    };
    if a.json {
        println!("{v}");
    }
    if let Some(i) = v.get("imported") {
        if !a.json {
            println!(
                "imported: {} at {} ({:.1} MB), ticket {}, receipt sha256 {}; the verifier collects the receipt",
                i["job"].as_str().unwrap_or_default(),
                i["target"].as_str().unwrap_or_default(),
                mb(i["bytes"].as_u64().unwrap_or(0)),
                i["ticket"].as_str().unwrap_or_default(),
                i["receipt_sha256"].as_str().unwrap_or_default()
            );
        }
        return ExitCode::SUCCESS;
    }
    let r = v.get("refused").cloned().unwrap_or_default();
    eprintln!(
        "custody: import refused: {}: {}",
        r["check"].as_str().unwrap_or("?"),
        r["detail"].as_str().unwrap_or_default()
    );
    ExitCode::from(1)
}
