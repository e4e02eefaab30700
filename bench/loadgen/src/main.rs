//! `custody-loadgen`: see the crate documentation.

use anyhow::Result;
use clap::Parser;
use custody_loadgen::driver::{self, AttackRun, Options, Report};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "custody-loadgen",
    about = "Drive custody-verifier's push API with simulated attesters and report appraisals/s and latency"
)]
struct Cli {
    /// Verifier base URL, e.g. https://127.0.0.1:8442 (ignored with --spawn).
    #[arg(long)]
    verifier: Option<String>,
    /// The verifier's CA certificate (PEM), to trust its server certificate.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Directory the test EK CA certificates are written to (the verifier's `ek_ca_dir`).
    #[arg(long)]
    ek_ca_out: Option<PathBuf>,
    /// Write the test EK CA to --ek-ca-out and exit (for a verifier started by hand;
    /// the CA is fresh on every start, so run the load with --spawn or restart it).
    #[arg(long)]
    prepare: bool,
    #[arg(long, default_value_t = 100)]
    attesters: usize,
    /// Seconds of measured load (after enrollment).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Concurrent round loops (at most one per attester).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Open loop: start rounds at this fixed rate per second (on free attesters), latency
    /// from each round's scheduled start; --concurrency is then unused.
    #[arg(long)]
    rate: Option<f64>,
    /// Start custody-verifier (next to this executable) with a throwaway data directory.
    #[arg(long)]
    spawn: bool,
    /// The custody-verifier binary for --spawn.
    #[arg(long)]
    verifier_bin: Option<PathBuf>,
    /// RUST_LOG of the spawned verifier (its default is info: one line per round).
    #[arg(long, default_value = "info")]
    service_log: String,
    /// Worker threads of this process's runtime (default: available cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Instead of HTTP load: time each stage of one appraisal in process, N iterations.
    #[arg(long, value_name = "N")]
    stages: Option<usize>,
    #[arg(long)]
    json: bool,
    /// The attack bench: the same load clean, then again while `custody-attacker` (another
    /// process) attacks the verifier; the last line compares the two.
    #[arg(long)]
    attack: bool,
    /// The custody-attacker binary for --attack (default: next to this executable).
    #[arg(long)]
    attacker_bin: Option<PathBuf>,
    /// Extra custody-attacker arguments, split at spaces, e.g. "--idle-tls 20 --slow 5".
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    attack_args: String,
    /// Seconds the attacker may take to open its connections before the measured phase.
    #[arg(long, default_value_t = 60.0)]
    attack_ramp: f64,
}

fn print(r: &Report, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string(r)?);
    } else {
        let l = &r.latency;
        println!(
            "latency ms: p50 {:.2} p90 {:.2} p99 {:.2} max {:.2} | nonce p50 {:.2} p99 {:.2} | bundle p50 {:.2} | evidence p50 {:.2} p99 {:.2}",
            l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms,
            r.nonce_request.p50_ms, r.nonce_request.p99_ms,
            r.build_bundle.p50_ms,
            r.evidence_request.p50_ms, r.evidence_request.p99_ms,
        );
        if let Some(v) = &r.verifier_cpu {
            println!(
                "verifier cpu: user {:.2} s sys {:.2} s = {:.2} cores",
                v.user_s, v.sys_s, v.cores
            );
        }
        println!(
            "loadgen cpu: user {:.2} s sys {:.2} s = {:.2} cores; enrollment took {:.1} s",
            r.loadgen_cpu.user_s, r.loadgen_cpu.sys_s, r.loadgen_cpu.cores, r.enroll_s
        );
        if let Some(n) = r.rounds_per_commit {
            println!("verifier group commit: {n:.2} rounds per store transaction");
        }
        for e in &r.first_errors {
            println!("error: {e}");
        }
    }
    // The summary is always the last line.
    if let (Some(offered), Some(late)) = (r.offered_per_s, r.started_late) {
        print!("loadgen (open loop, {offered:.0}/s offered, {late} started late): ");
    } else {
        print!("loadgen: ");
    }
    println!(
        "{} attesters, {:.0} appraisals/s, p50 {:.2} ms, p99 {:.2} ms, errors {}, audit errors {}",
        r.attesters,
        r.appraisals_per_s,
        r.latency.p50_ms,
        r.latency.p99_ms,
        r.errors,
        r.audit_errors
            .map_or_else(|| "unknown".to_owned(), |n| n.to_string())
    );
    Ok(())
}

fn print_attack(r: &AttackRun, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string(r)?);
    } else {
        println!("== clean");
        print(&r.clean, false)?;
        println!("== under attack");
        print(&r.attacked, false)?;
        if let Some(c) = &r.attacker_cpu {
            println!(
                "attacker cpu (measured phase): user {:.2} s sys {:.2} s = {:.2} cores",
                c.user_s, c.sys_s, c.cores
            );
        }
        println!(
            "attacker ready: {}",
            r.attacker_ready
                .as_ref()
                .map_or_else(|| "-".into(), ToString::to_string)
        );
        println!(
            "attacker done: {}",
            r.attacker_done
                .as_ref()
                .map_or_else(|| "-".into(), ToString::to_string)
        );
    }
    let n = |v: Option<u64>| v.map_or_else(|| "unknown".to_owned(), |n| n.to_string());
    println!(
        "verifier open fds: clean peak {}, under attack peak {} (limit {})",
        n(r.verifier_fds_clean_peak),
        n(r.verifier_fds_attack_peak),
        r.verifier_fd_limit.as_deref().unwrap_or("unknown")
    );
    // The summary is always the last line.
    println!(
        "attack: clean {:.0}/s p99 {:.2} ms; under attack {:.0}/s p99 {:.2} ms; revoked {}; errors {}",
        r.clean.appraisals_per_s,
        r.clean.latency.p99_ms,
        r.attacked.appraisals_per_s,
        r.attacked.latency.p99_ms,
        n(r.revoked),
        r.errors
    );
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Some(n) = cli.stages {
        let r = custody_loadgen::stages::run(n)?;
        if cli.json {
            println!("{}", serde_json::to_string_pretty(&r)?);
        } else {
            print!("{}", custody_loadgen::stages::table(&r));
        }
        return Ok(());
    }
    if cli.prepare {
        let dir = cli
            .ek_ca_out
            .ok_or_else(|| anyhow::anyhow!("--prepare needs --ek-ca-out"))?;
        driver::prepare_ca(&dir)?;
        println!("{}", dir.display());
        return Ok(());
    }
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(t) = cli.threads {
        rt.worker_threads(t.max(1));
    }
    let rt = rt.enable_all().build()?;
    let opt = Options {
        verifier: cli.verifier,
        ca: cli.ca,
        ek_ca_out: cli.ek_ca_out,
        attesters: cli.attesters.max(1),
        duration: Duration::from_secs_f64(cli.duration.max(0.1)),
        concurrency: cli.concurrency.max(1),
        spawn: cli.spawn,
        verifier_bin: cli.verifier_bin,
        service_log: cli.service_log,
        rate: cli.rate.filter(|r| *r > 0.0),
    };
    if cli.attack {
        let a = driver::AttackSettings {
            attacker_bin: cli.attacker_bin,
            attacker_args: cli.attack_args.split_whitespace().map(str::to_owned).collect(),
            ramp_max_s: cli.attack_ramp,
        };
        let r = rt.block_on(driver::run_attack(opt, a))?;
        print_attack(&r, cli.json)?;
        if r.clean.appraisals == 0 || r.attacked.appraisals == 0 || r.attacker_done.is_none() {
            std::process::exit(1);
        }
        return Ok(());
    }
    let r = rt.block_on(driver::run(opt))?;
    print(&r, cli.json)?;
    if r.errors > 0 || r.appraisals == 0 {
        std::process::exit(1);
    }
    Ok(())
}
