//! `custody`, the operator CLI. The `verify` subcommands follow the architecture's CLI
//! contract: one JSON object on stdout, exit 0 verified, 1 evidence rejected (the failed
//! check named on stderr), 2 bad usage or unreadable input.
#![forbid(unsafe_code)]

mod audit;
mod demo;
mod landmark;
mod migrate;
mod ops;
mod policy;
mod registry;
mod verify;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "custody",
    version,
    about = "Attested chain of custody for AI workloads"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Verify one piece of hardware evidence offline, from files.
    #[command(subcommand)]
    Verify(verify::VerifyCmd),
    /// Export or check the tamper-evident audit log offline.
    #[command(subcommand)]
    Audit(audit::AuditCmd),
    /// The whole system on this machine: a verifier, two agents with their own swtpm,
    /// enrollment, rounds, a revocation and an offline audit.
    Demo(demo::DemoArgs),
    /// Enrolled nodes, as the verifier sees them.
    #[command(subcommand)]
    Nodes(ops::NodesCmd),
    /// Reference values of node groups: show them, approve a baseline learnt on first use.
    #[command(subcommand)]
    Reference(ops::ReferenceCmd),
    /// The signed registry of legal entities, sites and hardware; derived attributes.
    #[command(subcommand)]
    Registry(registry::RegistryCmd),
    /// Run an attestation round with NODE now and print the decision and why.
    Attest {
        /// Node id or name.
        node: String,
        #[command(flatten)]
        conn: ops::Conn,
    },
    /// Migrations the verifier ran (kept across restarts), or one by ticket id.
    Migrations {
        /// A ticket id (hex): that migration only.
        id: Option<String>,
        #[command(flatten)]
        conn: ops::Conn,
    },
    /// The latest attestation result (EAR) of NODE, verified and decoded.
    Result {
        /// Node id or name.
        node: String,
        #[command(flatten)]
        conn: ops::Conn,
    },
    /// Locality landmark: key generation, timed measurement of a node, statement check.
    #[command(subcommand)]
    Landmark(landmark::LandmarkCmd),
    /// Appraisal policies: evaluate one offline against an input, list the shipped ones.
    #[command(subcommand)]
    Policy(policy::PolicyCmd),
    /// Move a job's checkpoint from node A to node B, only if B passes the policy now.
    Migrate(migrate::MigrateArgs),
    /// Import an air-gapped move's export file through this node's agent.
    Import(migrate::ImportArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Verify(cmd) => verify::run(cmd),
        Command::Audit(cmd) => audit::run(cmd),
        Command::Demo(a) => demo::run_demo(a),
        Command::Nodes(cmd) => ops::nodes(cmd),
        Command::Reference(cmd) => ops::reference(cmd),
        Command::Registry(cmd) => registry::run(cmd),
        Command::Attest { node, conn } => ops::attest(node, conn),
        Command::Result { node, conn } => ops::result(node, conn),
        Command::Migrations { id, conn } => ops::migrations(id, conn),
        Command::Landmark(cmd) => landmark::run(cmd),
        Command::Policy(cmd) => policy::run(cmd),
        Command::Migrate(a) => migrate::run(a),
        Command::Import(a) => migrate::import(a),
    }
}
