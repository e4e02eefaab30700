//! Operator commands against a running verifier: `custody nodes list|show`,
//! `custody attest NODE`, `custody result NODE`. They speak JSON over mutual TLS with the
//! operator identity `custody-verifier init` wrote (ca.pem, cert.pem, key.pem).
//!
//! Exit codes: 0 success (for `attest`: the node passed), 1 the node failed the round or
//! the verifier refused, 2 usage or connection problems.

// Indexing here is into serde_json::Value, whose Index gives Null for a missing key or a
// non-object and never panics.
#![allow(clippy::indexing_slicing)]
use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use custody_net::{HttpsClient, Identity};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, Args, Clone)]
pub struct Conn {
    /// Verifier base URL.
    #[arg(
        long,
        env = "CUSTODY_VERIFIER",
        default_value = "https://127.0.0.1:8442",
        global = true
    )]
    pub verifier: String,
    /// Directory with the operator identity: ca.pem, cert.pem, key.pem.
    #[arg(
        long,
        env = "CUSTODY_IDENTITY",
        default_value = "/var/lib/custody-verifier/operator",
        global = true
    )]
    pub identity: PathBuf,
    /// Print the verifier's JSON instead of a summary.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum NodesCmd {
    /// Every enrolled node with its state.
    List {
        #[command(flatten)]
        conn: Conn,
    },
    /// One node: state, reason, recent results and events.
    Show {
        /// Node id or name.
        node: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Remove a node: it is no longer attested and its TPM may enroll again (the only
    /// way back from `revoked`). Its results and events stay; the audit log keeps the
    /// reason.
    Remove {
        /// Node id or name.
        node: String,
        /// Why, for the audit log (required).
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Put a node in a reference-value group: its next round compares against that
    /// group's values (the audit log records the change).
    Group {
        /// Node id or name.
        node: String,
        /// Group name (A-Z a-z 0-9 . _ -).
        group: String,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Debug, Subcommand)]
pub enum ReferenceCmd {
    /// A group's reference values: source, whether pending approval, PCRs.
    Show {
        group: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Approve the baseline a group learnt on first use (`reference = "tofu-approve"`):
    /// from now on it decides the group's rounds.
    Approve {
        group: String,
        #[command(flatten)]
        conn: Conn,
    },
}

pub struct Client {
    http: HttpsClient,
    base: String,
}

impl Client {
    pub fn new(conn: &Conn) -> anyhow::Result<Self> {
        let read = |f: &str| {
            let p = conn.identity.join(f);
            std::fs::read(&p).with_context(|| format!("operator identity: cannot read {}", p.display()))
        };
        let roots = custody_net::roots_from_pem(&read("ca.pem")?)?;
        let id = Identity::from_pem(&read("cert.pem")?, &read("key.pem")?)?;
        // Only the verifier's certificate: a node's, from the same CA, is refused.
        let tls = custody_net::client_config_for_role(roots, Some(id), "verifier")?;
        Ok(Self {
            http: HttpsClient::new(tls, Duration::from_secs(60), 16 * 1024 * 1024),
            base: conn.verifier.trim_end_matches('/').to_owned(),
        })
    }

    /// PUT raw bytes of content type `ct`; the JSON answer, or an error naming the check.
    pub async fn put_bytes(&self, path: &str, ct: &str, body: Vec<u8>) -> anyhow::Result<serde_json::Value> {
        self.send(http::Method::PUT, path, Some(ct), body).await
    }

    /// Request a path; the JSON body on success, an error naming the failed check otherwise.
    pub async fn call(
        &self,
        method: http::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<serde_json::Value> {
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let ct = (!bytes.is_empty()).then_some("application/json");
        self.send(method, path, ct, bytes).await
    }

    /// Request a path with a JSON body; the status and the JSON answer, whatever the status
    /// (for refusals that carry more than a check and a message).
    pub async fn call_status(
        &self,
        method: http::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<(http::StatusCode, serde_json::Value)> {
        let url = format!("{}{}", self.base, path);
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let ct = (!bytes.is_empty()).then_some("application/json");
        let r = self.http.request(method, &url, ct, bytes).await?;
        let v: serde_json::Value = serde_json::from_slice(&r.body)
            .with_context(|| format!("{url}: HTTP {} and a body that is not JSON", r.status))?;
        Ok((r.status, v))
    }

    async fn send(
        &self,
        method: http::Method,
        path: &str,
        ct: Option<&str>,
        body: Vec<u8>,
    ) -> anyhow::Result<serde_json::Value> {
        let url = format!("{}{}", self.base, path);
        let r = self.http.request(method, &url, ct, body).await?;
        let v: serde_json::Value = serde_json::from_slice(&r.body)
            .with_context(|| format!("{url}: HTTP {} and a body that is not JSON", r.status))?;
        if !r.status.is_success() {
            bail!(
                "{url}: HTTP {}: {}: {}",
                r.status,
                v["check"].as_str().unwrap_or("?"),
                v["error"].as_str().unwrap_or("")
            );
        }
        Ok(v)
    }
}

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

pub(crate) fn enc(s: &str) -> String {
    // Node names are [A-Za-z0-9._-]; anything else is refused rather than escaped.
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || "._-".contains(*c))
        .collect()
}

fn print_json(v: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

fn finish(r: anyhow::Result<ExitCode>) -> ExitCode {
    match r {
        Ok(c) => c,
        Err(e) => {
            eprintln!("custody: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn ts(v: &serde_json::Value) -> String {
    v.as_i64()
        .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t).ok())
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| "-".into())
}

pub fn nodes(cmd: NodesCmd) -> ExitCode {
    finish((|| {
        let rt = runtime()?;
        match cmd {
            NodesCmd::List { conn } => {
                let c = Client::new(&conn)?;
                let v = rt.block_on(c.call(http::Method::GET, "/v1/nodes", None))?;
                if conn.json {
                    print_json(&v);
                } else {
                    println!(
                        "{:<20} {:<20} {:<9} {:<22} REASON",
                        "ID", "NAME", "STATE", "LAST ROUND"
                    );
                    for n in v.as_array().into_iter().flatten() {
                        println!(
                            "{:<20} {:<20} {:<9} {:<22} {}",
                            n["id"].as_str().unwrap_or(""),
                            n["name"].as_str().unwrap_or(""),
                            n["state"].as_str().unwrap_or(""),
                            ts(&n["last_round_at"]),
                            n["reason"].as_str().unwrap_or("")
                        );
                    }
                }
            }
            NodesCmd::Show { node, conn } => {
                let c = Client::new(&conn)?;
                let v = rt.block_on(c.call(http::Method::GET, &format!("/v1/nodes/{}", enc(&node)), None))?;
                if conn.json {
                    print_json(&v);
                } else {
                    let n = &v["node"];
                    println!(
                        "node      {} ({})",
                        n["name"].as_str().unwrap_or(""),
                        n["id"].as_str().unwrap_or("")
                    );
                    println!("state     {}", n["state"].as_str().unwrap_or(""));
                    if let Some(r) = n["reason"].as_str() {
                        println!("reason    {r}");
                    }
                    println!("endpoint  {}", n["endpoint"].as_str().unwrap_or(""));
                    println!("EK cert   sha256:{}", n["ek_cert_sha256"].as_str().unwrap_or(""));
                    println!("enrolled  {}", ts(&n["enrolled_at"]));
                    println!("results (newest first):");
                    for r in v["results"].as_array().into_iter().flatten().take(10) {
                        println!(
                            "  {}  {:<15} {}",
                            ts(&r["at"]),
                            r["status"].as_str().unwrap_or(""),
                            r["failed_check"].as_str().unwrap_or("")
                        );
                    }
                    println!("events (newest first):");
                    for e in v["events"].as_array().into_iter().flatten().take(10) {
                        println!(
                            "  {}  {:<18} {}",
                            ts(&e["at"]),
                            e["kind"].as_str().unwrap_or(""),
                            e["detail"]
                        );
                    }
                }
            }
            NodesCmd::Group { node, group, conn } => {
                let c = Client::new(&conn)?;
                let v = rt.block_on(c.call(
                    http::Method::PUT,
                    &format!("/v1/nodes/{}/group", enc(&node)),
                    Some(serde_json::json!({ "group": group })),
                ))?;
                if conn.json {
                    print_json(&v);
                } else {
                    println!(
                        "{} ({}) is in group {}",
                        v["name"].as_str().unwrap_or(""),
                        v["id"].as_str().unwrap_or(""),
                        v["group"].as_str().unwrap_or("")
                    );
                }
            }
            NodesCmd::Remove { node, reason, conn } => {
                let c = Client::new(&conn)?;
                let v = rt.block_on(c.call(
                    http::Method::DELETE,
                    &format!("/v1/nodes/{}", enc(&node)),
                    Some(serde_json::json!({ "reason": reason })),
                ))?;
                if conn.json {
                    print_json(&v);
                } else {
                    println!(
                        "removed {} ({}), was {}: {}",
                        v["name"].as_str().unwrap_or(""),
                        v["removed"].as_str().unwrap_or(""),
                        v["previous_state"].as_str().unwrap_or(""),
                        v["reason"].as_str().unwrap_or("")
                    );
                    let d = &v["deny_list"];
                    match (d["sent"].as_u64(), d["held"].as_u64()) {
                        (Some(sent), Some(held)) => println!(
                            "deny list: {held} of {sent} agents hold it (the others learn it at their next round)"
                        ),
                        _ => println!(
                            "deny list not pushed ({}); agents learn it at their next round",
                            d["error"].as_str().unwrap_or("unknown error")
                        ),
                    }
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })())
}

pub fn reference(cmd: ReferenceCmd) -> ExitCode {
    finish((|| {
        let rt = runtime()?;
        let (method, path, conn, verb) = match &cmd {
            ReferenceCmd::Show { group, conn } => (
                http::Method::GET,
                format!("/v1/groups/{}/reference", enc(group)),
                conn,
                "",
            ),
            ReferenceCmd::Approve { group, conn } => (
                http::Method::POST,
                format!("/v1/groups/{}/reference/approve", enc(group)),
                conn,
                "approved: ",
            ),
        };
        let c = Client::new(conn)?;
        let v = rt.block_on(c.call(method, &path, None))?;
        if conn.json {
            print_json(&v);
            return Ok(ExitCode::SUCCESS);
        }
        let r = &v["reference"];
        let pending = if r["pending"].as_bool() == Some(true) {
            " (pending approval: decides nothing yet)"
        } else {
            ""
        };
        println!(
            "{verb}group {}: source {}{pending}, learnt from {}",
            v["group"].as_str().unwrap_or(""),
            r["source"].as_str().unwrap_or("?"),
            r["learned_from"].as_str().unwrap_or("-")
        );
        if let Some(banks) = r["pcrs"].as_object() {
            for (bank, pcrs) in banks {
                for (i, d) in pcrs.as_object().into_iter().flatten() {
                    println!("  {bank} PCR {i}: {}", d.as_str().unwrap_or(""));
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })())
}

pub fn attest(node: String, conn: Conn) -> ExitCode {
    finish((|| {
        let c = Client::new(&conn)?;
        let v = runtime()?.block_on(c.call(
            http::Method::POST,
            &format!("/v1/nodes/{}/attest", enc(&node)),
            None,
        ))?;
        let passed = v["failed_check"].is_null();
        if conn.json {
            print_json(&v);
        } else {
            println!(
                "{}: {} (node {}, {} ms{})",
                v["name"].as_str().unwrap_or(&node),
                v["status"].as_str().unwrap_or(""),
                v["state"].as_str().unwrap_or(""),
                v["duration_ms"],
                match v["reference"].as_str() {
                    Some("tofu") => ", reference values learnt on first use",
                    Some("operator") => ", reference values provisioned",
                    _ => "",
                }
            );
            for r in v["reasons"].as_array().into_iter().flatten() {
                println!("  - {}", r.as_str().unwrap_or(""));
            }
        }
        if !passed {
            eprintln!(
                "custody: round failed: {}",
                v["failed_check"].as_str().unwrap_or("?")
            );
        }
        Ok(if passed {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        })
    })())
}

pub fn result(node: String, conn: Conn) -> ExitCode {
    finish((|| {
        let c = Client::new(&conn)?;
        let v = runtime()?.block_on(c.call(
            http::Method::GET,
            &format!("/v1/nodes/{}/result", enc(&node)),
            None,
        ))?;
        if conn.json {
            print_json(&v);
        } else {
            let e = &v["ear_claims"];
            println!(
                "node      {} ({})",
                v["node"]["name"].as_str().unwrap_or(""),
                e["custody.node-id"].as_str().unwrap_or("")
            );
            println!("status    {}", e["ear.status"].as_str().unwrap_or(""));
            println!("issued    {}", ts(&e["iat"]));
            println!(
                "expires   {}{}",
                ts(&e["exp"]),
                if v["expired"] == true { " (expired)" } else { "" }
            );
            println!(
                "policy    {} sha256:{}",
                e["custody.policy-id"].as_str().unwrap_or("-"),
                e["custody.policy-digest"].as_str().unwrap_or("-")
            );
            for (name, s) in e["submods"].as_object().into_iter().flatten() {
                println!(
                    "submod {name}: {} {}",
                    s["ear.status"].as_str().unwrap_or(""),
                    s["ear.trustworthiness-vector"]
                );
                let pc = &s["ear.veraison.policy-claims"];
                if let Some(f) = pc["failed-check"].as_str() {
                    println!("  failed check: {f}: {}", pc["failure"].as_str().unwrap_or(""));
                }
                if let Some(r) = pc["reference"].as_str() {
                    println!("  reference values: {r}");
                }
            }
            for r in v["result"]["reasons"].as_array().into_iter().flatten() {
                println!("  - {}", r.as_str().unwrap_or(""));
            }
            println!("EAR (COSE_Sign1, base64url): {}", v["ear"].as_str().unwrap_or(""));
        }
        Ok(ExitCode::SUCCESS)
    })())
}

/// `custody migrations [ID]`: exit 0 listed or found, 1 no such migration, 2 the verifier
/// could not be asked.
pub fn migrations(id: Option<String>, conn: Conn) -> ExitCode {
    finish((|| {
        let rt = runtime()?;
        let c = Client::new(&conn)?;
        let path = match &id {
            Some(id) => format!("/v1/migrations/{}", enc(id)),
            None => "/v1/migrations".to_owned(),
        };
        let (status, v) = rt.block_on(c.call_status(http::Method::GET, &path, None))?;
        if status == http::StatusCode::NOT_FOUND {
            eprintln!(
                "custody: {}",
                v["message"].as_str().unwrap_or("no such migration")
            );
            return Ok(ExitCode::from(1));
        }
        if !status.is_success() {
            anyhow::bail!("{path}: HTTP {status}: {v}");
        }
        if conn.json {
            print_json(&v);
            return Ok(ExitCode::SUCCESS);
        }
        let list = match v {
            serde_json::Value::Array(a) => a,
            one => vec![one],
        };
        println!(
            "{:<32} {:<16} {:<20} {:<20} {:<7} {:>14} {:<22} CHECK",
            "TICKET", "JOB", "FROM", "TO", "STATE", "BYTES", "ISSUED"
        );
        for m in &list {
            println!(
                "{:<32} {:<16} {:<20} {:<20} {:<7} {:>14} {:<22} {}",
                m["id"].as_str().unwrap_or(""),
                m["job"].as_str().unwrap_or(""),
                m["source"].as_str().unwrap_or(""),
                m["destination"].as_str().unwrap_or(""),
                m["state"].as_str().unwrap_or(""),
                m["bytes"],
                ts(&m["issued_at"]),
                m["check"].as_str().unwrap_or("")
            );
        }
        Ok(ExitCode::SUCCESS)
    })())
}
