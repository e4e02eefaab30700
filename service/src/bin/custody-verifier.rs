//! `custody-verifier`: the verifier service.

// A round makes many small short-lived allocations (JSON and CBOR trees, HTTP/2 frames):
// glibc malloc was about 12 % of the verifier's CPU under load; with mimalloc, 8 % more
// rounds per second (README, "Verifier under load").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use custody_service::config::Config;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "custody-verifier", version, about = "Custody verifier service")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the service.
    Run {
        #[arg(long)]
        config: PathBuf,
    },
    /// Create the data directory (CA, EAR key, log key, database) and write an operator
    /// identity for the CLI into DIR (default: <data_dir>/operator).
    Init {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        operator_dir: Option<PathBuf>,
    },
    /// Print the default configuration.
    Config,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Config => {
            print!("{}", Config::defaults_toml());
            Ok(())
        }
        Cmd::Init { config, operator_dir } => {
            let cfg = Config::load(&config)?;
            let dir = operator_dir.unwrap_or_else(|| cfg.data_dir.join("operator"));
            let svc = custody_service::Service::open(cfg)?;
            svc.pki.write_operator_identity(&dir)?;
            println!("{}", dir.display());
            Ok(())
        }
        Cmd::Run { config } => {
            let cfg = Config::load(&config)?;
            // Every blocking task is short CPU or SQLite work (appraisal, signing, a store
            // read). A pool of twice the cores queues them in order instead of letting
            // hundreds of threads contend for the cores and the store's lock: at 64 rounds
            // in flight on 2 cores, p99 fell from 150-175 ms to 70-77 ms with the same
            // throughput (bench/load.sh 200 64 20).
            let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
            let rt = tokio::runtime::Builder::new_multi_thread()
                .max_blocking_threads((2 * cores).max(4))
                .enable_all()
                .build()
                .context("tokio runtime")?;
            rt.block_on(async move {
                let listen = cfg.listen.clone();
                let svc = custody_service::Service::open(cfg)?;
                let listener = tokio::net::TcpListener::bind(&listen)
                    .await
                    .with_context(|| format!("bind {listen}"))?;
                let shutdown = async {
                    let mut term =
                        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                            Ok(s) => s,
                            Err(_) => {
                                let _ = tokio::signal::ctrl_c().await;
                                return;
                            }
                        };
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = term.recv() => {}
                    }
                    tracing::info!("shutting down");
                };
                custody_service::run(svc, listener, shutdown).await?;
                Ok(())
            })
        }
    }
}
