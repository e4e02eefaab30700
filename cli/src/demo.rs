//! `custody demo`: the whole system on one machine, from real parts.
//!
//! A verifier on embedded SQLite in a temporary directory; two agents, each with its own
//! software TPM (swtpm) whose EK certificate comes from swtpm's local CA; enrollment with
//! credential activation; rounds over mutual TLS; then one node's PCR 14 is extended
//! behind its back, the next rounds fail and the verifier revokes it with the reason.
//! Appraisal runs the shipped `eu-sovereign` policy over a signed registry of sites and
//! operators, with the verifier timing each agent's session key as a landmark in Paris;
//! a registry update then records that the Paris operator was bought by a US company,
//! and the next round is refused with that reason. In between, a job's checkpoint moves
//! from Paris to Frankfurt while both pass, and is refused the way back once Paris fails.
//! It ends with the audit log exported and verified offline, and the job's history read
//! from it (`custody audit where`).

// Indexing here is into serde_json::Value, whose Index gives Null for a missing key or a
// non-object and never panics.
#![allow(clippy::indexing_slicing)]
use crate::ops::{Client, Conn};
use anyhow::{bail, Context, Result};
use clap::Args;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Work here instead of a fresh temporary directory (kept afterwards).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Keep the temporary directory (logs, database, audit export).
    #[arg(long)]
    keep: bool,
}

/// Children killed when the demo ends, however it ends.
#[derive(Default)]
struct Procs(Vec<(String, Child)>);

impl Drop for Procs {
    fn drop(&mut self) {
        for (_, c) in self.0.iter_mut().rev() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A port `p` with `p + 1` also free (swtpm's server and control ports).
fn free_port_pair() -> Result<u16> {
    for _ in 0..100 {
        let p = free_port()?;
        if p < u16::MAX && TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return Ok(p);
        }
    }
    bail!("no free port pair")
}

fn sibling(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let p = exe.with_file_name(name);
    if p.is_file() {
        return Ok(p);
    }
    bail!(
        "{} not found next to {} (build the workspace: cargo build --release)",
        name,
        exe.display()
    )
}

fn run(cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd.output().with_context(|| format!("{what}: cannot start"))?;
    if !out.status.success() {
        bail!("{what} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn log_file(dir: &Path, name: &str) -> Result<Stdio> {
    Ok(Stdio::from(std::fs::File::create(
        dir.join(format!("{name}.log")),
    )?))
}

struct Tpm {
    port: u16,
}

impl Tpm {
    fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }
}

/// Provision a swtpm (EK certificate from the shared local CA under `xdg`) and start it.
fn start_swtpm(dir: &Path, xdg: &Path, name: &str, procs: &mut Procs) -> Result<Tpm> {
    let state = dir.join(name);
    std::fs::create_dir_all(&state)?;
    let setup = |args: &[&str]| {
        Command::new("swtpm_setup")
            .args(args)
            .env("XDG_CONFIG_HOME", xdg)
            .output()
    };
    let plain = ["--tpm2", "--create-config-files", "skip-if-exist"];
    let ok = setup(&plain).map(|o| o.status.success()).unwrap_or(false);
    if !ok {
        // As root, swtpm_setup wants the `root` flag to write configs shadowing /etc's.
        let o = setup(&["--tpm2", "--create-config-files", "skip-if-exist,root"])
            .context("swtpm_setup is required (scripts/setup.sh installs it)")?;
        if !o.status.success() {
            bail!(
                "swtpm_setup --create-config-files: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
    }
    let state_s = state.display().to_string();
    let o = setup(&[
        "--tpm2",
        "--tpmstate",
        &state_s,
        "--create-ek-cert",
        "--create-platform-cert",
    ])?;
    if !o.status.success() {
        bail!("swtpm_setup: {}", String::from_utf8_lossy(&o.stderr));
    }
    let port = free_port_pair()?;
    let child = Command::new("swtpm")
        .args([
            "socket",
            "--tpm2",
            "--tpmstate",
            &format!("dir={state_s}"),
            "--server",
            &format!("type=tcp,port={port}"),
            "--ctrl",
            &format!("type=tcp,port={}", port + 1),
            "--flags",
            "not-need-init,startup-clear",
        ])
        .stdout(Stdio::null())
        .stderr(log_file(dir, name)?)
        .spawn()
        .context("swtpm is required (scripts/setup.sh installs it)")?;
    procs.0.push((name.into(), child));
    let t = Tpm { port };
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("{name} did not come up");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(t)
}

/// The local CA's root and issuing certificates, read from its configuration.
fn local_ca_certs(xdg: &Path) -> Result<Vec<PathBuf>> {
    let conf = std::fs::read_to_string(xdg.join("swtpm-localca.conf")).context("swtpm-localca.conf")?;
    let value = |key: &str| {
        conf.lines()
            .filter_map(|l| l.split_once('='))
            .find(|(k, _)| k.trim() == key)
            .map(|(_, v)| PathBuf::from(v.trim()))
    };
    let statedir = value("statedir").context("statedir in swtpm-localca.conf")?;
    let issuer = value("issuercert").unwrap_or_else(|| statedir.join("issuercert.pem"));
    Ok(vec![statedir.join("swtpm-localca-rootca-cert.pem"), issuer])
}

fn step(n: u32, s: &str) {
    println!("\n[{n}] {s}");
}

async fn wait_for<F, Fut>(what: &str, secs: u64, mut f: F) -> Result<serde_json::Value>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<serde_json::Value>>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        match f().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) | Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(250)).await
            }
            Ok(None) => bail!("timed out waiting for {what}"),
            Err(e) => return Err(e.context(format!("waiting for {what}"))),
        }
    }
}

fn node_by_name(list: &serde_json::Value, name: &str) -> Option<serde_json::Value> {
    list.as_array()?.iter().find(|n| n["name"] == name).cloned()
}

pub fn run_demo(a: DemoArgs) -> ExitCode {
    let keep = a.keep || a.dir.is_some();
    let dir = a
        .dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("custody-demo-{}", std::process::id())));
    let r = demo(&dir);
    if keep || r.is_err() {
        println!("\nfiles kept in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("custody demo: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// SHA-256 of the EK certificate as stored in NV (what the verifier records at enrollment).
fn ek_sha256(tpm: &Tpm, dir: &Path) -> Result<[u8; 32]> {
    let out = dir.join(format!("ek-{}.der", tpm.port));
    run(
        Command::new("tpm2_nvread")
            .args(["0x1c00002", "-o"])
            .arg(&out)
            .env("TPM2TOOLS_TCTI", tpm.tcti()),
        "tpm2_nvread (the EK certificate)",
    )?;
    let der = std::fs::read(&out)?;
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &der);
    <[u8; 32]>::try_from(d.as_ref()).context("SHA-256 length")
}

/// The registry of the demo: who runs which site, and which TPM is installed where.
/// Version 2 records that a US company bought 60 % of the Paris operator.
fn demo_registry(version: u64, eks: [[u8; 32]; 2]) -> Result<custody_registry::model::Registry> {
    use custody_registry::model::{Entity, Hardware, HardwareId, Holding, Registry, Site};
    use custody_registry::Country;
    let entity = |id: &str, name: &str, c: &str, us: bool, holders: Vec<Holding>| -> Result<Entity> {
        let c = Country::new(c)?;
        Ok(Entity {
            id: id.into(),
            name: name.into(),
            lei: None,
            registered_office: c.clone(),
            central_administration: c.clone(),
            principal_establishment: c,
            us_nexus: us,
            holders,
        })
    };
    let acquired = if version >= 2 {
        vec![Holding {
            entity: "nimbus-inc".into(),
            capital_bp: 6000,
            voting_bp: 6000,
        }]
    } else {
        vec![]
    };
    let [paris, frankfurt] = eks;
    Ok(Registry {
        version,
        issued_at: 1_767_225_600,
        authority: "demo registry authority".into(),
        entities: vec![
            entity("eurocloud", "EuroCloud SAS", "FR", false, acquired)?,
            entity("rhein", "Rhein Compute GmbH", "DE", false, vec![])?,
            entity("nimbus-inc", "Nimbus Inc", "US", true, vec![])?,
        ],
        sites: vec![
            Site {
                id: "par-1".into(),
                name: "Paris Aubervilliers".into(),
                country: Country::new("FR")?,
                region: "Ile-de-France".into(),
                lat_e6: 48_914_000,
                lon_e6: 2_383_000,
                operator: "eurocloud".into(),
            },
            Site {
                id: "fra-1".into(),
                name: "Frankfurt Ostend".into(),
                country: Country::new("DE")?,
                region: "Hessen".into(),
                lat_e6: 50_111_000,
                lon_e6: 8_682_000,
                operator: "rhein".into(),
            },
        ],
        hardware: vec![
            Hardware {
                site: "par-1".into(),
                id: HardwareId::EkCertSha256(paris),
                label: Some("paris-gpu-1 TPM".into()),
            },
            Hardware {
                site: "fra-1".into(),
                id: HardwareId::EkCertSha256(frankfurt),
                label: Some("frankfurt-gpu-2 TPM".into()),
            },
        ],
    })
}

/// A checkpoint directory of random bytes: (relative path, size, SHA-256) per file.
fn demo_checkpoint(dir: &Path) -> Result<Vec<(String, u64, Vec<u8>)>> {
    let files = [
        ("model-00001-of-00002.bin", 40u64 << 20),
        ("model-00002-of-00002.bin", 16 << 20),
        ("optimizer/rank0.bin", 8 << 20),
        ("config.json", 0),
    ];
    let mut out = Vec::new();
    for (name, size) in files {
        let p = dir.join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut f = std::io::BufWriter::new(std::fs::File::create(&p)?);
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        if size == 0 {
            let cfg = br#"{"architectures":["LlamaForCausalLM"],"step":12000}"#;
            f.write_all(cfg)?;
            ctx.update(cfg);
        }
        let mut block = vec![0u8; 1 << 20];
        for _ in 0..size >> 20 {
            aws_lc_rs::rand::fill(&mut block).map_err(|_| anyhow::anyhow!("no randomness"))?;
            f.write_all(&block)?;
            ctx.update(&block);
        }
        f.flush()?;
        let len = std::fs::metadata(&p)?.len();
        out.push((name.to_owned(), len, ctx.finish().as_ref().to_vec()));
    }
    Ok(out)
}

fn sha256_file(p: &Path) -> Result<Vec<u8>> {
    let mut f = std::fs::File::open(p).with_context(|| format!("open {}", p.display()))?;
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = std::io::Read::read(&mut f, &mut buf)?;
        let Some(chunk) = buf.get(..n).filter(|c| !c.is_empty()) else {
            break;
        };
        ctx.update(chunk);
    }
    Ok(ctx.finish().as_ref().to_vec())
}

fn demo(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let dir = dir.canonicalize()?;
    let verifier_bin = sibling("custody-verifier")?;
    let agent_bin = sibling("custody-agent")?;
    let custody_bin = std::env::current_exe()?;
    let mut procs = Procs::default();
    let xdg = dir.join("xdg");
    std::fs::create_dir_all(&xdg)?;

    step(1, "two software TPMs, EK certificates from swtpm's local CA");
    let tpms = [
        start_swtpm(&dir, &xdg, "tpm-paris", &mut procs)?,
        start_swtpm(&dir, &xdg, "tpm-frankfurt", &mut procs)?,
    ];
    let ek_ca = dir.join("ek-ca");
    std::fs::create_dir_all(&ek_ca)?;
    for p in local_ca_certs(&xdg)? {
        let name = p.file_name().context("CA file name")?;
        std::fs::copy(&p, ek_ca.join(name)).with_context(|| format!("copy {}", p.display()))?;
    }
    println!(
        "    swtpm on ports {} and {}; EK CA: {}",
        tpms[0].port,
        tpms[1].port,
        ek_ca.display()
    );
    let eks = [ek_sha256(&tpms[0], &dir)?, ek_sha256(&tpms[1], &dir)?];
    let registry_key = custody_registry::signed::RegistryKey::generate()?;
    let authority = dir.join("registry-authority.pub.pem");
    std::fs::write(&authority, registry_key.public().to_pem())?;
    let registry_file = dir.join("registry-v1.cose");
    std::fs::write(
        &registry_file,
        custody_registry::signed::SignedRegistry::sign(&demo_registry(1, eks)?, &registry_key)?,
    )?;
    println!(
        "    signed registry v1: EuroCloud SAS (FR) runs par-1, Rhein Compute GmbH (DE) runs fra-1; each TPM bound to its site"
    );

    step(
        2,
        "verifier on embedded SQLite, policy eu-sovereign, landmark in Paris; rounds every 2 s, revoke after 2 failures",
    );
    let vport = free_port()?;
    let vdir = dir.join("verifier");
    let vcfg = dir.join("verifier.toml");
    // One landmark, in Paris: a node in Frankfurt (478 km away) can be proven within
    // 478 km + its bound of its site at best, about 1,000 km with the delay its agent
    // adds (below). eu-sovereign's default 1,000 km would refuse it on jitter; the demo
    // allows 1,500 km. A landmark per site proves far less: docs/locality.md.
    let policy_params = dir.join("policy-params.json");
    std::fs::write(
        &policy_params,
        r#"{"custody": {"params": {"locality_km": 1500}}}"#,
    )?;
    std::fs::write(
        &vcfg,
        format!(
            "listen = \"127.0.0.1:{vport}\"\ndata_dir = \"{}\"\nek_ca_dir = \"{}\"\ninterval_secs = 2\nrevoke_after = 2\nnonce_ttl_secs = 10\ncheckpoint_secs = 2\n\
             reference = \"tofu-approve\"\npolicy = \"eu-sovereign\"\npolicy_data = \"{}\"\nregistry = \"{}\"\nregistry_authorities = [\"{}\"]\n\n\
             [landmark]\nid = \"paris-verifier\"\nlat = 48.8566\nlon = 2.3522\nprobes = 5\n",
            vdir.display(),
            ek_ca.display(),
            policy_params.display(),
            registry_file.display(),
            authority.display()
        ),
    )?;
    let opdir = dir.join("operator");
    run(
        Command::new(&verifier_bin)
            .args(["init", "--config"])
            .arg(&vcfg)
            .arg("--operator-dir")
            .arg(&opdir),
        "custody-verifier init",
    )?;
    let child = Command::new(&verifier_bin)
        .args(["run", "--config"])
        .arg(&vcfg)
        .stdout(Stdio::null())
        .stderr(log_file(&dir, "verifier")?)
        .spawn()?;
    procs.0.push(("verifier".into(), child));
    println!(
        "    https://127.0.0.1:{vport} (HTTP/2, rustls); data in {}",
        vdir.display()
    );

    step(
        3,
        "two agents enroll: EK chain, credential activation, node certificates",
    );
    let names = ["paris-gpu-1", "frankfurt-gpu-2"];
    let checkpoints = |i: usize| dir.join(format!("agent-{i}-checkpoints"));
    // Every agent runs on this machine, next to the Paris landmark: the Frankfurt agent
    // answers 5 ms late, the round trip of ~500 km of fibre, or its sub-millisecond bound
    // would contradict the registry's Frankfurt site (check `locality_consistency`).
    let delays = [0u64, 5];
    for (i, (name, tpm)) in names.iter().zip(&tpms).enumerate() {
        let aport = free_port()?;
        let lport = free_port()?;
        let mport = free_port()?;
        let cfg = dir.join(format!("agent-{i}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "name = \"{name}\"\nlisten = \"127.0.0.1:{aport}\"\nlocality_listen = \"127.0.0.1:{lport}\"\nlocality_delay_ms = {delay}\nmove_listen = \"127.0.0.1:{mport}\"\ncheckpoints_dir = \"{}\"\nverifier_url = \"https://127.0.0.1:{vport}\"\nverifier_ca = \"{}\"\nstate_dir = \"{}\"\n\n[tpm]\ntcti = \"{}\"\nevent_log = \"\"\n\n[collectors]\nsnp = false\nnvml = false\n",
                checkpoints(i).display(),
                vdir.join("ca.pem").display(),
                dir.join(format!("agent-{i}")).display(),
                tpm.tcti(),
                delay = delays[i],
            ),
        )?;
        let child = Command::new(&agent_bin)
            .args(["run", "--config"])
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(log_file(&dir, &format!("agent-{i}"))?)
            .spawn()?;
        procs.0.push((name.to_string(), child));
    }

    let conn = Conn {
        verifier: format!("https://127.0.0.1:{vport}"),
        identity: opdir.clone(),
        json: false,
    };
    // `custody migrate ... --json` as the operator runs it: (exit code, stdout, stderr).
    let migrate = |job: &str, from: &str, to: &str| -> Result<(i32, String, String)> {
        let out = Command::new(&custody_bin)
            .args([
                "migrate",
                job,
                "--from",
                from,
                "--to",
                to,
                "--delete-source",
                "--json",
            ])
            .env("CUSTODY_VERIFIER", &conn.verifier)
            .env("CUSTODY_IDENTITY", &conn.identity)
            .output()
            .context("run custody migrate")?;
        Ok((
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let client = Client::new(&conn)?;
        let c = &client;
        wait_for("the verifier", 20, || async move {
            Ok(c.call(http::Method::GET, "/v1/nodes", None).await.ok())
        })
        .await?;
        let list = wait_for("both agents to enroll", 60, || async move {
            let l = c.call(http::Method::GET, "/v1/nodes", None).await?;
            Ok(names.iter().all(|n| node_by_name(&l, n).is_some()).then_some(l))
        })
        .await?;
        for n in names {
            let node = node_by_name(&list, n).context("enrolled node")?;
            println!(
                "    {n}: enrolled as {} (EK certificate sha256:{}...)",
                node["id"].as_str().unwrap_or(""),
                node["ek_cert_sha256"]
                    .as_str()
                    .unwrap_or("")
                    .get(..16)
                    .unwrap_or("")
            );
        }

        step(
            4,
            "the operator approves the reference values: the first round proposes them, nothing passes until then",
        );
        // Under `reference = "tofu-approve"` a learnt baseline decides nothing: the first
        // verified quote of the group proposes it (`reference_pending`, not counted towards
        // revocation) and the operator approves what they reviewed.
        let first = c
            .call(http::Method::POST, "/v1/nodes/paris-gpu-1/attest", None)
            .await?;
        println!(
            "    paris-gpu-1: {} ({}): its PCRs are proposed as group default's baseline",
            first["status"].as_str().unwrap_or(""),
            first["failed_check"].as_str().unwrap_or("passed")
        );
        if first["failed_check"] != "reference_pending" {
            bail!("the first round did not propose the baseline: {}", first["reasons"]);
        }
        let shown = c
            .call(http::Method::GET, "/v1/groups/default/reference", None)
            .await?;
        let pcrs = shown["reference"]["pcrs"]["sha256"].as_object().map_or(0, |m| m.len());
        println!("    custody reference show default: {pcrs} sha256 PCRs, pending approval");
        let approved = c
            .call(http::Method::POST, "/v1/groups/default/reference/approve", None)
            .await?;
        println!(
            "    custody reference approve default: source {} (audit-logged with the operator)",
            approved["reference"]["source"].as_str().unwrap_or("?")
        );
        println!("  a round with each node now (custody attest)");
        for n in names {
            let v = c
                .call(http::Method::POST, &format!("/v1/nodes/{n}/attest"), None)
                .await?;
            println!(
                "    {n}: {} -> node {}{}",
                v["status"].as_str().unwrap_or(""),
                v["state"].as_str().unwrap_or(""),
                if v["reference"] == "approved" {
                    " (reference PCRs approved by the operator)"
                } else {
                    ""
                }
            );
            if !v["failed_check"].is_null() {
                bail!("{n} failed its first round: {}", v["reasons"]);
            }
            let r = c
                .call(http::Method::GET, &format!("/v1/nodes/{n}/result"), None)
                .await?;
            let e = &r["ear_claims"];
            let a = &e["custody.attributes"];
            let l = &a["locality"][0];
            println!(
                "      EAR: site {} ({}), operator {}, cloud_act_exposed {}, registry v{}; within {} km of {} (rtt {} us, key in {} memory: weak proof)",
                e["custody.site"].as_str().unwrap_or("?"),
                e["custody.country"].as_str().unwrap_or("?"),
                e["custody.operator"].as_str().unwrap_or("?"),
                a["cloud-act-exposed"],
                a["registry-version"],
                l["bound-km"],
                l["landmark"].as_str().unwrap_or("?"),
                l["rtt-us"],
                l["key-protection"].as_str().unwrap_or("?"),
            );
        }

        step(
            5,
            "a training job's checkpoint moves paris-gpu-1 (FR) -> frankfurt-gpu-2 (DE): both pass eu-sovereign now",
        );
        let src = checkpoints(0).join("llama-ft");
        let digests = demo_checkpoint(&src)?;
        let total: u64 = digests.iter().map(|(_, n, _)| n).sum();
        println!(
            "    llama-ft at paris-gpu-1: {} files, {:.1} MiB (custody migrate llama-ft --from paris-gpu-1 --to frankfurt-gpu-2 --delete-source)",
            digests.len(),
            total as f64 / f64::from(1u32 << 20)
        );
        let started = Instant::now();
        let (code, out, err) = migrate("llama-ft", "paris-gpu-1", "frankfurt-gpu-2")?;
        if code != 0 {
            bail!("the move to frankfurt-gpu-2 failed (exit {code}): {err}");
        }
        let secs = started.elapsed().as_secs_f64();
        let m: serde_json::Value = serde_json::from_str(&out).context("custody migrate --json output")?;
        let dst = checkpoints(1).join("llama-ft");
        for (f, _, d) in &digests {
            if &sha256_file(&dst.join(f))? != d {
                bail!("{f} differs at frankfurt-gpu-2");
            }
        }
        println!(
            "    placed in {secs:.1} s (fresh rounds with both, ticket, transfer, receipt): {} bytes, policy {}, ticket {}",
            m["bytes"], m["policy_id"].as_str().unwrap_or(""), m["id"].as_str().unwrap_or("")
        );
        println!(
            "    chunks sealed to frankfurt-gpu-2's attested HPKE key; its signed receipt sha256:{}...; every file's SHA-256 matches",
            m["receipt_sha256"].as_str().unwrap_or("").get(..16).unwrap_or("")
        );
        if m["source_released"] != true || src.exists() {
            bail!("paris-gpu-1 should have deleted its copy after the receipt (--delete-source): {m}");
        }
        println!("    --delete-source: paris-gpu-1 deleted its copy once the receipt verified");

        step(
            6,
            "someone changes frankfurt-gpu-2's boot state: PCR 14 extended behind the agent's back",
        );
        let tcti = tpms[1].tcti();
        let mut extended = false;
        for _ in 0..100 {
            // swtpm serves one client at a time; the agent releases the TPM between rounds.
            let out = Command::new("tpm2_pcrextend")
                .arg(format!("14:sha256={}", "ab".repeat(32)))
                .env("TPM2TOOLS_TCTI", &tcti)
                .stderr(Stdio::null())
                .output()
                .context("tpm2_pcrextend is required (scripts/setup.sh installs tpm2-tools)")?;
            if out.status.success() {
                extended = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if !extended {
            bail!("could not reach frankfurt-gpu-2's TPM to extend PCR 14");
        }
        println!("    tpm2_pcrextend 14:sha256=abab...ab");

        step(
            7,
            "continuous attestation notices; the node fails, then is revoked",
        );
        let seen_failed = std::cell::Cell::new(false);
        let seen = &seen_failed;
        let revoked = wait_for("frankfurt-gpu-2 to be revoked", 40, || async move {
            let v = c
                .call(http::Method::GET, "/v1/nodes/frankfurt-gpu-2", None)
                .await?;
            let state = v["node"]["state"].as_str().unwrap_or("").to_owned();
            if state == "failed" && !seen.get() {
                seen.set(true);
                println!("    frankfurt-gpu-2: failed");
            }
            Ok((state == "revoked").then_some(v))
        })
        .await?;
        println!("    frankfurt-gpu-2: revoked");
        println!("    reason: {}", revoked["node"]["reason"].as_str().unwrap_or(""));
        let paris = c.call(http::Method::GET, "/v1/nodes/paris-gpu-1", None).await?;
        println!(
            "    paris-gpu-1 meanwhile: {}",
            paris["node"]["state"].as_str().unwrap_or("")
        );
        if paris["node"]["state"] != "trusted" {
            bail!("paris-gpu-1 should still be trusted: {}", paris["node"]);
        }
        let r = c
            .call(http::Method::GET, "/v1/nodes/frankfurt-gpu-2/result", None)
            .await?;
        println!(
            "    latest EAR for frankfurt-gpu-2: status {}, failed check {}, signed COSE_Sign1 of {} bytes",
            r["ear_claims"]["ear.status"].as_str().unwrap_or(""),
            r["result"]["failed_check"].as_str().unwrap_or(""),
            r["ear"].as_str().map_or(0, |s| s.len() * 3 / 4)
        );

        step(
            8,
            "registry v2, signed by the authority: Nimbus Inc (US) bought 60 % of EuroCloud SAS",
        );
        let v2 = custody_registry::signed::SignedRegistry::sign(&demo_registry(2, eks)?, &registry_key)?;
        let adopted = c.put_bytes("/v1/registry", "application/cose", v2).await?;
        println!(
            "    adopted registry version {} (digest {}...)",
            adopted["version"],
            adopted["digest"].as_str().unwrap_or("").get(..16).unwrap_or("")
        );
        let v = wait_for("a round with paris-gpu-1", 20, || async move {
            Ok(c
                .call(http::Method::POST, "/v1/nodes/paris-gpu-1/attest", None)
                .await
                .ok())
        })
        .await?;
        println!(
            "    paris-gpu-1: {} -> node {} (failed check `{}`)",
            v["status"].as_str().unwrap_or(""),
            v["state"].as_str().unwrap_or(""),
            v["failed_check"].as_str().unwrap_or("")
        );
        for r in v["reasons"].as_array().into_iter().flatten() {
            println!("    reason: {}", r.as_str().unwrap_or(""));
        }
        if v["failed_check"] != "policy" {
            bail!("paris-gpu-1 should be refused by policy under registry v2: {v}");
        }
        println!("    the operator tries to bring llama-ft home from the revoked frankfurt-gpu-2 to paris-gpu-1:");
        let (code, _, err) = migrate("llama-ft", "frankfurt-gpu-2", "paris-gpu-1")?;
        if code != 1 || !err.contains("destination_attestation") {
            bail!("the move to paris-gpu-1 should be refused (exit {code}): {err}");
        }
        for line in err.lines().filter(|l| !l.trim().is_empty()) {
            println!("    {}", line.trim_start_matches("custody: "));
        }
        if checkpoints(0).join("llama-ft").exists() {
            bail!("paris-gpu-1 received llama-ft although the move was refused");
        }
        c.call(http::Method::GET, "/v1/audit/checkpoint", None).await?;
        Ok::<(), anyhow::Error>(())
    })?;

    step(
        9,
        "the auditor: export the log and verify it offline with only the log's public key",
    );
    // Stop the verifier first: it signs a final checkpoint on shutdown.
    if let Some((_, v)) = procs.0.iter_mut().find(|(n, _)| n == "verifier") {
        let _ = Command::new("kill").arg("-TERM").arg(v.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while v.try_wait()?.is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let export = dir.join("audit-export");
    let _ = std::fs::remove_dir_all(&export);
    run(
        Command::new(&custody_bin)
            .args(["audit", "export", "--db"])
            .arg(vdir.join("custody.db"))
            .arg("--out")
            .arg(&export),
        "custody audit export",
    )?;
    let out = run(
        Command::new(&custody_bin)
            .args(["audit", "verify"])
            .arg(&export)
            .arg("--key")
            .arg(vdir.join("log-key.pub")),
        "custody audit verify",
    )?;
    let v: serde_json::Value = serde_json::from_str(&out).context("audit verify output")?;
    if v["verified"] != true {
        bail!("the audit log did not verify: {out}");
    }
    let c = &v["claims"];
    println!(
        "    verified: {} entries (enrollments, results, revocation, registry change, migrations), {} signed checkpoints, root {}",
        c["entries"],
        c["checkpoints"],
        c["root"].as_str().unwrap_or("")
    );
    println!("    export: {}", export.display());
    println!(
        "    custody audit where llama-ft --dir {} --key log-key.pub",
        export.display()
    );
    let out = run(
        Command::new(&custody_bin)
            .args(["audit", "where", "llama-ft", "--dir"])
            .arg(&export)
            .arg("--key")
            .arg(vdir.join("log-key.pub")),
        "custody audit where",
    )?;
    for line in out.lines() {
        println!("    | {line}");
    }
    let report = dir.join("report.html");
    run(
        Command::new(&custody_bin)
            .args(["audit", "report", "--dir"])
            .arg(&export)
            .arg("--key")
            .arg(vdir.join("log-key.pub"))
            .arg("--out")
            .arg(&report),
        "custody audit report",
    )?;
    println!(
        "    the auditor's report (one HTML file, opens offline): {}",
        report.display()
    );

    println!("\nsummary: 2 nodes enrolled by credential activation and appraised under eu-sovereign with a signed registry and a Paris landmark; frankfurt-gpu-2 revoked after its PCR 14 changed; paris-gpu-1 refused once its operator came under US control (cloud_act_exposed); a checkpoint moved FR -> DE to a passing node with a verified receipt and was refused the way back to the failing one; audit log verified offline, and it says where the job has been (report.html).");
    Ok(())
}
