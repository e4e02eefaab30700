//! `custody policy test|list`: evaluate an appraisal policy offline against an input
//! document (docs/policy.md), or list the shipped policies. `test` exits 0 when the policy
//! allows, 1 when it refuses (reasons on stdout), 2 on bad usage, an unreadable file, a
//! policy that does not compile or an input that is not a policy input.
//!
//! `evaluate_and_print` is the reusable part: `custody policy explain NODE POLICY` fetches
//! the node's input from the verifier and hands it here.

use anyhow::{Context, Result};
use clap::Subcommand;
use custody_policy::{Decision, Policy, TrustVector, SHIPPED};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub enum PolicyCmd {
    /// Evaluate POLICY against an input document and print the decision and why.
    Test {
        /// A shipped policy name (see `custody policy list`) or the path of a .rego file.
        policy: String,
        /// The policy input, JSON (docs/policy.md).
        #[arg(long)]
        input: PathBuf,
        /// A data document, JSON, e.g. {"custody": {"params": {"locality_km": 300}}}.
        #[arg(long)]
        data: Option<PathBuf>,
        /// Print the decision as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Replay NODE's latest policy input (kept by the verifier with each result) under
    /// POLICY: what another policy would decide about the same evidence, and why.
    Explain {
        /// Node id or name.
        node: String,
        /// A shipped policy name or the path of a .rego file.
        policy: String,
        /// A data document, JSON.
        #[arg(long)]
        data: Option<PathBuf>,
        #[command(flatten)]
        conn: crate::ops::Conn,
    },
    /// The shipped policies with their digests.
    List {
        /// Print a JSON array.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: PolicyCmd) -> ExitCode {
    let r = match cmd {
        PolicyCmd::Test {
            policy,
            input,
            data,
            json,
        } => test(&policy, &input, data.as_deref(), json),
        PolicyCmd::Explain {
            node,
            policy,
            data,
            conn,
        } => explain(&node, &policy, data.as_deref(), &conn),
        PolicyCmd::List { json } => list(json),
    };
    r.unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        ExitCode::from(2)
    })
}

fn read_json(p: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(p).with_context(|| format!("read {}", p.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", p.display()))
}

/// A shipped policy by name, or a .rego file by path (its id is the file stem).
pub fn load_policy(spec: &str, data: Option<serde_json::Value>) -> Result<Policy> {
    if SHIPPED.iter().any(|(n, _)| *n == spec) {
        return Ok(match data {
            Some(d) => Policy::shipped_with_data(spec, d)?,
            None => Policy::shipped(spec)?,
        });
    }
    let path = Path::new(spec);
    if !path.exists() {
        anyhow::bail!(
            "`{spec}` is neither a shipped policy ({}) nor a file",
            SHIPPED.map(|(n, _)| n).join(", ")
        );
    }
    let rego = std::fs::read_to_string(path).with_context(|| format!("read {spec}"))?;
    let id = path.file_stem().and_then(|s| s.to_str()).unwrap_or("policy");
    Ok(match data {
        Some(d) => Policy::with_data(id, &rego, d)?,
        None => Policy::new(id, &rego)?,
    })
}

// serde_json::Value's Index gives Null for a missing key and never panics.
#[allow(clippy::indexing_slicing)]
fn explain(node: &str, spec: &str, data: Option<&Path>, conn: &crate::ops::Conn) -> Result<ExitCode> {
    let data = data.map(read_json).transpose()?;
    let policy = load_policy(spec, data)?;
    let client = crate::ops::Client::new(conn)?;
    let path = format!("/v1/nodes/{}/input", crate::ops::enc(node)?);
    let v = crate::ops::runtime()?.block_on(client.call(http::Method::GET, &path, None))?;
    let input = v
        .get("input")
        .filter(|i| !i.is_null())
        .ok_or_else(|| anyhow::anyhow!("node `{node}` has no appraised round yet: nothing to explain"))?;
    if !conn.json {
        println!(
            "node {} ({}), result {} decided by {} {}; replayed under {} {}",
            v["name"].as_str().unwrap_or("?"),
            v["node"].as_str().unwrap_or("?"),
            v["result_id"],
            v["policy_id"].as_str().unwrap_or("?"),
            v["policy_digest"].as_str().unwrap_or("?"),
            policy.id(),
            policy.digest()
        );
    }
    evaluate_and_print(&policy, input, conn.json)
}

fn test(spec: &str, input: &Path, data: Option<&Path>, json: bool) -> Result<ExitCode> {
    let data = data.map(read_json).transpose()?;
    let policy = load_policy(spec, data)?;
    let input = read_json(input)?;
    evaluate_and_print(&policy, &input, json)
}

/// Evaluate `policy` on `input`, print the decision (JSON or text) and return the exit
/// code: 0 allow, 1 deny. An input that is not a policy input is an error (exit 2).
pub fn evaluate_and_print(policy: &Policy, input: &serde_json::Value, json: bool) -> Result<ExitCode> {
    let d = policy.evaluate(input)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&d)?);
    } else {
        print!("{}", render(&d));
    }
    Ok(if d.allow {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The decision as operators read it.
pub fn render(d: &Decision) -> String {
    let mut s = format!(
        "{}  policy {} (sha256 {})\n",
        if d.allow { "ALLOW" } else { "DENY" },
        d.policy_id,
        d.policy_digest
    );
    for r in &d.reasons {
        s.push_str(&format!("  - {r}\n"));
    }
    if let Some(tv) = &d.trust_vector {
        s.push_str(&format!("trust vector: {}\n", trust_vector(tv)));
    }
    s
}

fn trust_vector(tv: &TrustVector) -> String {
    let values = [
        tv.instance_identity,
        tv.configuration,
        tv.executables,
        tv.file_system,
        tv.hardware,
        tv.runtime_opaque,
        tv.storage_opaque,
        tv.sourced_data,
    ];
    TrustVector::CLAIMS
        .iter()
        .zip(values)
        .map(|(n, v)| format!("{n}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn list(json: bool) -> Result<ExitCode> {
    let mut rows = Vec::new();
    for (name, _) in SHIPPED {
        let p = Policy::shipped(name)?;
        rows.push(serde_json::json!({"id": name, "package": p.package(), "digest": p.digest()}));
        if !json {
            println!("{name:<20} {}  {}", p.digest(), p.package());
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    }
    Ok(ExitCode::SUCCESS)
}
