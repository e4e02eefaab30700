//! `custody-attacker`: the attack bench's attackers, as a process of their own (see
//! `custody_loadgen::attack`). Prints `ready {json}` once the connections are open and
//! `done {json}` when it stops by itself, `--ramp-max` + `--hold` seconds at most.

use anyhow::{Context, Result};
use clap::Parser;
use custody_loadgen::attack::{self, AttackOptions};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "custody-attacker",
    about = "Attack a custody-verifier on loopback: idle TLS and raw TCP connections, slow headers, oversized enrollment bodies, garbage evidence"
)]
struct Cli {
    /// The verifier, https://127.0.0.1:PORT (loopback only).
    #[arg(long)]
    url: String,
    /// The verifier's CA certificate (PEM).
    #[arg(long)]
    ca: PathBuf,
    /// An enrolled node's certificate chain (PEM), for the garbage pushers.
    #[arg(long, requires = "node_key")]
    node_cert: Option<PathBuf>,
    #[arg(long, requires = "node_cert")]
    node_key: Option<PathBuf>,
    /// Idle TLS connections (handshake done, no request).
    #[arg(long, default_value_t = 2000)]
    idle_tls: usize,
    /// Raw TCP connections that never start TLS.
    #[arg(long, default_value_t = 200)]
    raw_tcp: usize,
    /// Slow clients sending HTTP/1.1 request headers one byte at a time.
    #[arg(long, default_value_t = 200)]
    slow: usize,
    /// Milliseconds between two header bytes of a slow client.
    #[arg(long, default_value_t = 500)]
    slow_byte_ms: u64,
    /// Concurrent senders of oversized bodies to /v1/enroll and /v1/enroll/activate.
    #[arg(long, default_value_t = 2)]
    big: usize,
    /// Size of an oversized body, in KiB.
    #[arg(long, default_value_t = 16384)]
    big_kib: usize,
    /// Concurrent garbage-evidence pushers of the node (needs --node-cert/--node-key).
    #[arg(long, default_value_t = 2)]
    garbage: usize,
    /// Garbage evidence is 1 to this many random bytes.
    #[arg(long, default_value_t = 65536)]
    garbage_max: usize,
    /// Handshakes in flight at once while opening connections.
    #[arg(long, default_value_t = 32)]
    connect_parallel: usize,
    /// Seconds at most to open the connections.
    #[arg(long, default_value_t = 30.0)]
    ramp_max: f64,
    /// Seconds to keep the attack up once the connections are open.
    #[arg(long, default_value_t = 30.0)]
    hold: f64,
    /// Worker threads (1 keeps the attackers to about one core).
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let read = |p: &PathBuf| std::fs::read_to_string(p).with_context(|| format!("read {}", p.display()));
    let node = match (&cli.node_cert, &cli.node_key) {
        (Some(c), Some(k)) => Some((read(c)?, read(k)?)),
        _ => None,
    };
    let mut o = AttackOptions::new(cli.url.clone(), read(&cli.ca)?);
    o.node = node;
    o.idle_tls = cli.idle_tls;
    o.raw_tcp = cli.raw_tcp;
    o.slow = cli.slow;
    o.slow_byte_every = Duration::from_millis(cli.slow_byte_ms.max(1));
    o.big = cli.big;
    o.big_bytes = cli.big_kib.saturating_mul(1024);
    o.garbage = cli.garbage;
    o.garbage_max = cli.garbage_max.max(1);
    o.connect_parallel = cli.connect_parallel.max(1);
    o.ramp_max = Duration::from_secs_f64(cli.ramp_max.max(0.0));
    o.hold = Duration::from_secs_f64(cli.hold.max(0.0));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads.max(1))
        .enable_all()
        .build()?;
    let r = rt.block_on(attack::run(o, |r| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "ready {}", serde_json::to_string(r).unwrap_or_default());
        let _ = out.flush();
    }))?;
    println!("done {}", serde_json::to_string(&r)?);
    // Open sockets close with the process.
    rt.shutdown_timeout(Duration::from_millis(100));
    Ok(())
}
