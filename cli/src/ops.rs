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
    /// Every group's reference values: source, whether pending, PCR count.
    List {
        #[command(flatten)]
        conn: Conn,
    },
    /// A group's reference values: source, whether pending approval, PCRs.
    Show {
        group: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Set a group's reference values (`source: operator`; audit-logged): PCRs given as
    /// `--pcr BANK:INDEX=HEX`, or read from a CoRIM (`--corim FILE`: its reference-value
    /// triples with integer PCR indexes, as Veraison's TPM schemes write them).
    Add {
        group: String,
        /// `sha256:7=HEX` (repeatable).
        #[arg(long = "pcr", value_name = "BANK:INDEX=HEX")]
        pcrs: Vec<String>,
        /// A CoRIM (unsigned #6.501, or a bare CoMID) holding the PCR values.
        #[arg(long, conflicts_with = "pcrs")]
        corim: Option<PathBuf>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Import a CoRIM as a group's reference values (`add GROUP --corim FILE`).
    Import {
        group: String,
        file: PathBuf,
        #[command(flatten)]
        conn: Conn,
    },
    /// Write a group's PCR reference values as an unsigned CoRIM (one CoMID, one
    /// reference-value triple, mkey = PCR index; SHA-1 banks have no CoRIM algorithm id
    /// and are refused).
    Export {
        group: String,
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        conn: Conn,
    },
    /// Remove a group's reference values (audit-logged); its next round learns or fails
    /// by the verifier's `reference` mode.
    Remove {
        group: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Propose the PCRs of NODE's latest verified quote as the group's baseline; it
    /// decides nothing until `approve`.
    Learn {
        group: String,
        /// Node id or name.
        #[arg(long)]
        node: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Approve the group's pending baseline (learnt on first use under
    /// `reference = "tofu-approve"`, or by `learn`): from now on it decides the group's
    /// rounds.
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

/// A node name, group or migration id as a path segment. Names are [A-Za-z0-9._-]:
/// anything else is refused rather than escaped or dropped (dropping made
/// `reference learn "no spaces"` act on group `nospaces`).
pub(crate) fn enc(s: &str) -> anyhow::Result<&str> {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        Ok(s)
    } else {
        bail!("`{s}` is not a valid name (node, group or migration id: 1 or more of A-Z a-z 0-9 . _ -)")
    }
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
                let v =
                    rt.block_on(c.call(http::Method::GET, &format!("/v1/nodes/{}", enc(&node)?), None))?;
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
                    &format!("/v1/nodes/{}/group", enc(&node)?),
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
                    &format!("/v1/nodes/{}", enc(&node)?),
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
        let path = |g: &str| enc(g).map(|g| format!("/v1/groups/{g}/reference"));
        let (conn, v, verb) = match &cmd {
            ReferenceCmd::List { conn } => {
                let v = rt.block_on(Client::new(conn)?.call(http::Method::GET, "/v1/references", None))?;
                if conn.json {
                    print_json(&v);
                } else {
                    for g in v["groups"].as_array().into_iter().flatten() {
                        print_reference("", g);
                    }
                }
                return Ok(ExitCode::SUCCESS);
            }
            ReferenceCmd::Show { group, conn } => (
                conn,
                rt.block_on(Client::new(conn)?.call(http::Method::GET, &path(group)?, None))?,
                "",
            ),
            ReferenceCmd::Add {
                group,
                pcrs,
                corim,
                conn,
            } => {
                let pcrs = match corim {
                    Some(f) => pcrs_from_corim_file(f)?,
                    None => parse_pcr_args(pcrs)?,
                };
                (conn, put_reference(&rt, conn, &path(group)?, &pcrs)?, "set: ")
            }
            ReferenceCmd::Import { group, file, conn } => {
                let pcrs = pcrs_from_corim_file(file)?;
                (
                    conn,
                    put_reference(&rt, conn, &path(group)?, &pcrs)?,
                    "imported: ",
                )
            }
            ReferenceCmd::Export { group, out, conn } => {
                let v = rt.block_on(Client::new(conn)?.call(http::Method::GET, &path(group)?, None))?;
                let bytes = corim_of(group, &v["reference"]["pcrs"])?;
                std::fs::write(out, &bytes).with_context(|| format!("cannot write {}", out.display()))?;
                if conn.json {
                    print_json(
                        &serde_json::json!({"group": group, "out": out.display().to_string(), "bytes": bytes.len()}),
                    );
                } else {
                    println!(
                        "group {group}: CoRIM of {} bytes written to {}",
                        bytes.len(),
                        out.display()
                    );
                }
                return Ok(ExitCode::SUCCESS);
            }
            ReferenceCmd::Remove { group, conn } => {
                let v = rt.block_on(Client::new(conn)?.call(http::Method::DELETE, &path(group)?, None))?;
                if conn.json {
                    print_json(&v);
                } else {
                    println!("removed: group {group}'s reference values");
                }
                return Ok(ExitCode::SUCCESS);
            }
            ReferenceCmd::Learn { group, node, conn } => (
                conn,
                rt.block_on(Client::new(conn)?.call(
                    http::Method::POST,
                    &format!("{}/learn", path(group)?),
                    Some(serde_json::json!({ "node": node })),
                ))?,
                "proposed: ",
            ),
            ReferenceCmd::Approve { group, conn } => (
                conn,
                rt.block_on(Client::new(conn)?.call(
                    http::Method::POST,
                    &format!("{}/approve", path(group)?),
                    None,
                ))?,
                "approved: ",
            ),
        };
        if conn.json {
            print_json(&v);
        } else {
            print_reference(verb, &v);
        }
        Ok(ExitCode::SUCCESS)
    })())
}

/// PUT a group's PCRs, then read back what the verifier stored.
fn put_reference(
    rt: &tokio::runtime::Runtime,
    conn: &Conn,
    path: &str,
    pcrs: &HexPcrs,
) -> anyhow::Result<serde_json::Value> {
    let c = Client::new(conn)?;
    rt.block_on(c.call(http::Method::PUT, path, Some(serde_json::json!({ "pcrs": pcrs }))))?;
    rt.block_on(c.call(http::Method::GET, path, None))
}

/// One group's reference values, as `show` prints them.
fn print_reference(verb: &str, v: &serde_json::Value) {
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
    for (bank, pcrs) in r["pcrs"].as_object().into_iter().flatten() {
        for (i, d) in pcrs.as_object().into_iter().flatten() {
            println!("  {bank} PCR {i}: {}", d.as_str().unwrap_or(""));
        }
    }
}

type HexPcrs = std::collections::BTreeMap<String, std::collections::BTreeMap<u32, String>>;

/// `--pcr sha256:7=HEX`, repeatable.
fn parse_pcr_args(args: &[String]) -> anyhow::Result<HexPcrs> {
    if args.is_empty() {
        anyhow::bail!("give --pcr BANK:INDEX=HEX (repeatable) or --corim FILE");
    }
    let mut out = HexPcrs::new();
    for a in args {
        let parsed = a.split_once(':').and_then(|(bank, rest)| {
            let (i, hex) = rest.split_once('=')?;
            Some((bank, i.parse::<u32>().ok()?, hex))
        });
        let Some((bank, i, hex)) = parsed else {
            anyhow::bail!("--pcr {a}: want BANK:INDEX=HEX, e.g. sha256:7=ab12...");
        };
        out.entry(bank.to_ascii_lowercase())
            .or_default()
            .insert(i, hex.to_ascii_lowercase());
    }
    Ok(out)
}

/// The PCR values of a CoRIM file.
fn pcrs_from_corim_file(f: &std::path::Path) -> anyhow::Result<HexPcrs> {
    use custody_formats::corim::{tpm, Corim};
    let bytes = std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?;
    let c = Corim::from_cbor(&bytes).with_context(|| format!("{} is not a CoRIM", f.display()))?;
    let (pcrs, ignored) = tpm::pcrs_from_corim(&c)
        .with_context(|| format!("{}: no usable PCR reference values", f.display()))?;
    if ignored > 0 {
        eprintln!(
            "custody: {}: {ignored} measurement(s) that are not PCRs ignored",
            f.display()
        );
    }
    Ok(pcrs
        .into_iter()
        .map(|(bank, p)| (bank, p.into_iter().map(|(i, d)| (i, hex::encode(d))).collect()))
        .collect())
}

/// A group's PCRs (as the API returns them) as an unsigned CoRIM. The class id is the
/// first 16 bytes of SHA-256("custody reference group " || group), so one group's
/// exports name the same environment.
fn corim_of(group: &str, pcrs: &serde_json::Value) -> anyhow::Result<Vec<u8>> {
    use custody_formats::corim::tpm;
    let hexes: HexPcrs = serde_json::from_value(pcrs.clone()).context("the verifier's PCRs")?;
    let mut out = tpm::Pcrs::new();
    for (bank, p) in hexes {
        let bank_out = out.entry(bank.clone()).or_default();
        for (i, d) in p {
            bank_out.insert(
                i,
                hex::decode(&d).with_context(|| format!("{bank} PCR {i} is not hex"))?,
            );
        }
    }
    let digest = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        format!("custody reference group {group}").as_bytes(),
    );
    let mut class_id = [0u8; 16];
    class_id.copy_from_slice(digest.as_ref().get(..16).context("digest")?);
    tpm::pcrs_to_corim(
        &format!("custody:{group}"),
        &format!("custody:{group}:pcrs"),
        class_id,
        &out,
    )
    .context("cannot write the CoRIM")
}

pub fn attest(node: String, conn: Conn) -> ExitCode {
    finish((|| {
        let c = Client::new(&conn)?;
        let v = runtime()?.block_on(c.call(
            http::Method::POST,
            &format!("/v1/nodes/{}/attest", enc(&node)?),
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
            &format!("/v1/nodes/{}/result", enc(&node)?),
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
            Some(id) => format!("/v1/migrations/{}", enc(id)?),
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
