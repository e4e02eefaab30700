//! `custody-agent`: the node daemon. `run --config FILE` enrolls with the verifier and
//! serves attestation rounds over mutual TLS; `config --defaults` prints the defaults.

use anyhow::Context;
use clap::{Parser, Subcommand};
use custody_agent::config::AgentConfig;
#[cfg(not(all(feature = "snp", feature = "nvml")))]
use custody_agent::daemon::NotBuilt;
use custody_agent::daemon::{self, SharedCollector};
use custody_agent::tpm::TpmCollector;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, Parser)]
#[command(name = "custody-agent", version, about = "Custody node agent")]
struct Cli {
    /// Log filter (`info`, `debug`, `custody_agent=debug,...`); overrides RUST_LOG.
    #[arg(long, global = true)]
    log: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Enroll with the verifier and serve attestation rounds until SIGTERM or ctrl-c.
    Run {
        #[arg(long)]
        config: PathBuf,
    },
    /// Print the default configuration, or check a configuration file.
    Config {
        /// Print every key with its default value (TOML).
        #[arg(long, conflicts_with = "check")]
        defaults: bool,
        /// Validate FILE and print the configuration in effect.
        #[arg(long, value_name = "FILE")]
        check: Option<PathBuf>,
    },
}

fn init_logging(level: Option<&str>) -> anyhow::Result<()> {
    use tracing_subscriber::EnvFilter;
    let filter = match level {
        Some(l) => EnvFilter::try_new(l).with_context(|| format!("--log {l:?}"))?,
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    Ok(())
}

/// Completes on SIGTERM or ctrl-c.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            // Without a SIGTERM handler, ctrl-c still stops the agent.
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = term => tracing::info!("SIGTERM: shutting down"),
        r = tokio::signal::ctrl_c() => match r {
            Ok(()) => tracing::info!("interrupt: shutting down"),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for ctrl-c");
                std::future::pending::<()>().await;
            }
        },
    }
}

async fn run(config: PathBuf) -> anyhow::Result<()> {
    let cfg = AgentConfig::load(&config)?;
    let tpm = TpmCollector::new(cfg.tpm_config()?)?;
    let tpm = Arc::new(match cfg.persistent_ak()? {
        Some(handle) => tpm.with_persistent_ak(handle),
        None => tpm.with_ak_file(cfg.state_dir.join(custody_agent::daemon::AK_FILE)),
    });
    let mut collectors: Vec<SharedCollector> = vec![tpm.clone()];
    // Collectors left out of this build still show in every round as unavailable.
    if cfg.collectors.snp {
        #[cfg(feature = "snp")]
        collectors.push(Arc::new(custody_agent::snp::SnpCollector::new()));
        #[cfg(not(feature = "snp"))]
        collectors.push(Arc::new(NotBuilt("snp")));
    }
    if cfg.collectors.tdx {
        collectors.push(Arc::new(custody_agent::tsm::TsmCollector::new()));
    }
    if cfg.collectors.azure {
        collectors.push(Arc::new(
            custody_agent::azure::AzureCollector::new(
                tpm.clone(),
                cfg.azure.vcek.clone(),
                cfg.azure.ca_chain.clone(),
            )
            .with_td_quote(cfg.azure.td_quote.clone()),
        ));
    }
    if cfg.collectors.nvml {
        #[cfg(feature = "nvml")]
        collectors.push(Arc::new(custody_agent::nvml::NvmlCollector::new()));
        #[cfg(not(feature = "nvml"))]
        collectors.push(Arc::new(NotBuilt("nvgpu")));
    }
    tracing::info!(
        config = %config.display(),
        name = %cfg.name,
        verifier = %cfg.verifier_url,
        "custody-agent starting"
    );
    daemon::run(cfg, collectors, tpm, shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Config {
            check: Some(path), ..
        } => {
            let cfg = AgentConfig::load(&path)?;
            print!("{}", toml::to_string(&cfg)?);
            Ok(())
        }
        Cmd::Config { defaults: true, .. } => {
            println!("# verifier_ca = \"/etc/custody/verifier-ca.pem\"  # required, no default");
            print!("{}", AgentConfig::defaults_toml()?);
            Ok(())
        }
        Cmd::Config { .. } => anyhow::bail!("`config` needs --defaults or --check FILE"),
        Cmd::Run { config } => {
            init_logging(cli.log.as_deref())?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("start the async runtime")?;
            rt.block_on(run(config))
        }
    }
}
