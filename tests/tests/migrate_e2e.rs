//! Migration end to end: a real verifier under `eu-sovereign` with a signed registry and
//! three real agents on their own swtpm. node-a and node-b run in an EU-operated site,
//! node-us in a site a US parent controls. `custody migrate` moves a few hundred MB from
//! node-a to node-b over the agents' mutual-TLS mover: it arrives bit-identical, the
//! receipt verifies, the source keeps its copy. A move to node-us is refused by policy with
//! the reason; a checkpoint of FP8 tensors is refused by the chip check (node-b shows no
//! GPU); every decision is in the audit log.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use custody_e2e::registry::{entity, site};
use custody_e2e::{custody, eventually, free_port, service_bin, verifier_init, Kill, Run, Swtpm};
use custody_registry::model::{Hardware, HardwareId, Holding, Registry};
use custody_registry::signed::{RegistryKey, SignedRegistry};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn registry(version: u64, a: &Swtpm, b: &Swtpm, us: &Swtpm) -> Registry {
    Registry {
        version,
        issued_at: 1_767_225_600,
        authority: "test registry authority".into(),
        entities: vec![
            entity("eurocloud", "EuroCloud SAS", "FR", false, vec![]),
            entity("nimbus-inc", "Nimbus Inc", "US", true, vec![]),
            entity(
                "nimbus-fr",
                "Nimbus France SAS",
                "FR",
                false,
                vec![Holding {
                    entity: "nimbus-inc".into(),
                    capital_bp: 6000,
                    voting_bp: 6000,
                }],
            ),
        ],
        sites: vec![site("par-eu", "eurocloud"), site("par-us", "nimbus-fr")],
        hardware: vec![
            Hardware {
                site: "par-eu".into(),
                id: HardwareId::EkCertSha256(a.ek_cert_sha256()),
                label: None,
            },
            Hardware {
                site: "par-eu".into(),
                id: HardwareId::EkCertSha256(b.ek_cert_sha256()),
                label: None,
            },
            Hardware {
                site: "par-us".into(),
                id: HardwareId::EkCertSha256(us.ek_cert_sha256()),
                label: None,
            },
        ],
    }
}

struct World {
    dir: tempfile::TempDir,
    port: u16,
    verifier: Option<Kill>,
    _agents: Vec<Kill>,
}

impl World {
    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn cli(&self, args: &[&str]) -> Run {
        let url = format!("https://127.0.0.1:{}", self.port);
        let id = self.path("operator");
        let mut a: Vec<&str> = args.to_vec();
        a.extend(["--verifier", &url, "--identity", id.to_str().unwrap()]);
        custody(a)
    }

    /// SIGKILL the verifier (no final checkpoint, no goodbye) and start it again.
    fn crash_and_restart_verifier(&mut self) {
        drop(self.verifier.take());
        self.verifier = Some(run_verifier(self.dir.path(), self.port));
    }

    fn logs(&self) -> String {
        ["verifier.log", "node-a.log", "node-b.log"]
            .iter()
            .map(|f| {
                format!(
                    "--- {f}\n{}",
                    std::fs::read_to_string(self.path(f)).unwrap_or_default()
                )
            })
            .collect()
    }

    /// `custody migrate JOB --from A --to B --via-file`, which must succeed: its JSON.
    fn export(&self, job: &str, from: &str, to: &str) -> serde_json::Value {
        let r = self.cli(&["migrate", job, "--from", from, "--to", to, "--via-file", "--json"]);
        assert_eq!(r.code, 0, "{}\n{}\n{}", r.stdout, r.stderr, self.logs());
        r.json()
    }

    fn store(&self, node: &str) -> PathBuf {
        self.path(&format!("{node}-checkpoints"))
    }
}

/// `custody-verifier run` on the world's config (appending to its log); waits until it
/// listens.
fn run_verifier(dir: &Path, port: u16) -> Kill {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("verifier.log"))
        .unwrap();
    let v = Command::new(service_bin("custody-verifier"))
        .args(["run", "--config"])
        .arg(dir.join("verifier.toml"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    let verifier = Kill(v);
    eventually("the verifier to listen", 20, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    verifier
}

fn start(tpms: [&Swtpm; 3], key: &RegistryKey) -> World {
    let dir = tempfile::tempdir().unwrap();
    let p = |s: &str| dir.path().join(s);
    let ek = p("ek-ca");
    std::fs::create_dir_all(&ek).unwrap();
    for (i, t) in tpms.iter().enumerate() {
        for c in t.ek_ca_certs() {
            std::fs::copy(
                &c,
                ek.join(format!("{i}-{}", c.file_name().unwrap().to_str().unwrap())),
            )
            .unwrap();
        }
    }
    std::fs::write(p("authority.pem"), key.public().to_pem()).unwrap();
    std::fs::write(
        p("registry.cose"),
        SignedRegistry::sign(&registry(1, tpms[0], tpms[1], tpms[2]), key).unwrap(),
    )
    .unwrap();
    let port = free_port();
    let cfg = format!(
        "listen = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\nek_ca_dir = \"{}\"\ninterval_secs = 300\n\
         nonce_ttl_secs = 10\nround_timeout_secs = 5\npolicy = \"eu-sovereign\"\n\
         registry = \"{}\"\nregistry_authorities = [\"{}\"]\n",
        p("data").display(),
        ek.display(),
        p("registry.cose").display(),
        p("authority.pem").display(),
    );
    std::fs::write(p("verifier.toml"), cfg).unwrap();
    verifier_init(&p("verifier.toml"), &p("operator"));
    let verifier = run_verifier(dir.path(), port);
    let mut agents = Vec::new();
    for (t, name) in tpms.iter().zip(["node-a", "node-b", "node-us"]) {
        let state = p(&format!("{name}-state"));
        let toml = format!(
            "name = \"{name}\"\nlisten = \"127.0.0.1:{}\"\nmove_listen = \"127.0.0.1:{}\"\n\
             checkpoints_dir = \"{}\"\nadmin_socket = \"{}\"\n\
             verifier_url = \"https://127.0.0.1:{port}\"\nverifier_ca = \"{}\"\nstate_dir = \"{}\"\n\
             round_timeout_secs = 10\n\n[tpm]\ntcti = \"{}\"\nevent_log = \"\"\n\n[collectors]\nsnp = false\nnvml = false\n",
            free_port(),
            free_port(),
            p(&format!("{name}-checkpoints")).display(),
            p(&format!("{name}-admin/admin.sock")).display(),
            p("data").join("ca.pem").display(),
            state.display(),
            t.tcti()
        );
        let cfg = p(&format!("{name}.toml"));
        std::fs::write(&cfg, toml).unwrap();
        let log = std::fs::File::create(p(&format!("{name}.log"))).unwrap();
        let c = Command::new(service_bin("custody-agent"))
            .args(["run", "--config"])
            .arg(&cfg)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        agents.push(Kill(c));
    }
    let w = World {
        dir,
        port,
        verifier: Some(verifier),
        _agents: agents,
    };
    for name in ["node-a", "node-b", "node-us"] {
        eventually(&format!("{name} to enroll"), 60, || {
            let l = w.cli(&["nodes", "list", "--json"]);
            (l.code == 0 && l.stdout.contains(name)).then_some(())
        });
    }
    w
}

fn sha256_file(p: &Path) -> Vec<u8> {
    let mut f = std::fs::File::open(p).unwrap();
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = std::io::Read::read(&mut f, &mut buf).unwrap();
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
    }
    ctx.finish().as_ref().to_vec()
}

/// A checkpoint of `mb` MiB: a large sparse shard (zeros after a random head), a random
/// shard, an optimizer state in a subdirectory, and a small JSON file.
fn checkpoint(dir: &Path, mb: u64) -> Vec<(String, Vec<u8>)> {
    std::fs::create_dir_all(dir.join("optim")).unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut random = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    };
    let big = std::fs::File::create(dir.join("shard-00.bin")).unwrap();
    std::io::Write::write_all(&mut &big, &random(3 << 20)).unwrap();
    big.set_len((mb - 8) << 20).unwrap();
    std::fs::write(dir.join("shard-01.bin"), random(5 << 20)).unwrap();
    std::fs::write(dir.join("optim/state.bin"), random((3 << 20) + 17)).unwrap();
    std::fs::write(dir.join("config.json"), b"{\"step\": 1200, \"arch\": \"llama\"}").unwrap();
    ["config.json", "optim/state.bin", "shard-00.bin", "shard-01.bin"]
        .iter()
        .map(|f| (f.to_string(), sha256_file(&dir.join(f))))
        .collect()
}

/// A safetensors file with one FP8 (OCP E4M3) tensor: 8-byte length, JSON, data.
fn fp8_safetensors() -> Vec<u8> {
    let mut json = br#"{"w1":{"dtype":"F8_E4M3","shape":[2,2],"data_offsets":[0,4]}}"#.to_vec();
    while !json.len().is_multiple_of(8) {
        json.push(b' ');
    }
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&json);
    out.extend_from_slice(&[1, 2, 3, 4]);
    out
}

#[test]
fn checkpoint_moves_only_to_a_passing_node_and_arrives_bit_identical() {
    let (a, b, us) = (Swtpm::start(), Swtpm::start(), Swtpm::start());
    let key = RegistryKey::generate().unwrap();
    let mut w = start([&a, &b, &us], &key);

    let mb: u64 = std::env::var("CUSTODY_MOVE_TEST_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let src = w.store("node-a").join("llama-ft");
    let digests = checkpoint(&src, mb);

    // A passing EU node: the move completes, the receipt verifies, the bytes are the same.
    let r = w.cli(&[
        "migrate", "llama-ft", "--from", "node-a", "--to", "node-b", "--json",
    ]);
    assert_eq!(r.code, 0, "{}\n{}\n{}", r.stdout, r.stderr, w.logs());
    let m = r.json();
    assert_eq!(m["state"], "done", "{m}");
    assert_eq!(m["policy_id"], "eu-sovereign", "{m}");
    assert_eq!(m["files"], 4, "{m}");
    let size: u64 = digests
        .iter()
        .map(|(f, _)| std::fs::metadata(src.join(f)).unwrap().len())
        .sum();
    assert!(size > mb << 20, "{size}");
    assert_eq!(m["bytes"].as_u64(), Some(size), "{m}");
    assert_eq!(m["receipt_sha256"].as_str().map(str::len), Some(64), "{m}");
    let dst = w.store("node-b").join("llama-ft");
    for (f, d) in &digests {
        assert_eq!(&sha256_file(&dst.join(f)), d, "{f} differs at the destination");
        assert_eq!(&sha256_file(&src.join(f)), d, "{f} changed at the source");
    }
    // Nothing staged is left behind at B.
    let leftovers: Vec<_> = std::fs::read_dir(w.store("node-b"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".custody-staging"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // The same job again: B already holds it, the move is refused and B's copy untouched.
    let r = w.cli(&["migrate", "llama-ft", "--from", "node-a", "--to", "node-b"]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("staging") && r.stderr.contains("already exists"),
        "{}",
        r.stderr
    );

    // The operator releases A's copy after the receipt; the job then moves back to A,
    // and this time B deletes its copy once A's receipt has verified.
    std::fs::remove_dir_all(&src).unwrap();
    let r = w.cli(&[
        "migrate",
        "llama-ft",
        "--from",
        "node-b",
        "--to",
        "node-a",
        "--delete-source",
        "--json",
    ]);
    assert_eq!(r.code, 0, "{}\n{}\n{}", r.stdout, r.stderr, w.logs());
    assert_eq!(r.json()["source_released"], true, "{}", r.stdout);
    for (f, d) in &digests {
        assert_eq!(&sha256_file(&src.join(f)), d, "{f} differs back at A");
    }
    assert!(!dst.exists(), "B kept its copy despite --delete-source");
    // Nothing half-deleted left behind either (B's seen-tickets and receipts stay).
    let left: Vec<_> = std::fs::read_dir(w.store("node-b"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != ".custody-seen-tickets" && n != ".custody-receipts" && n != ".custody-deny-list")
        .collect();
    assert!(left.is_empty(), "B's store is not empty: {left:?}");

    // A US-controlled operator: refused by the policy, with the reason, before any byte.
    std::fs::create_dir_all(w.store("node-a").join("job-2")).unwrap();
    std::fs::write(w.store("node-a").join("job-2/w.bin"), [7u8; 4096]).unwrap();
    let r = w.cli(&["migrate", "job-2", "--from", "node-a", "--to", "node-us"]);
    assert_eq!(r.code, 1, "{}\n{}\n{}", r.stdout, r.stderr, w.logs());
    assert!(
        r.stderr.contains("migration refused: destination_attestation") && r.stderr.contains("policy"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("Nimbus Inc (US)"), "{}", r.stderr);
    assert!(!w.store("node-us").join("job-2").exists());

    // FP8 tensors to a node whose evidence shows no GPU: the chip check refuses, naming them.
    std::fs::create_dir_all(w.store("node-a").join("fp8-job")).unwrap();
    std::fs::write(
        w.store("node-a").join("fp8-job/model.safetensors"),
        fp8_safetensors(),
    )
    .unwrap();
    let r = w.cli(&["migrate", "fp8-job", "--from", "node-a", "--to", "node-b"]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("chip_mismatch") && r.stderr.contains("F8_E4M3"),
        "{}",
        r.stderr
    );
    assert!(!w.store("node-b").join("fp8-job").exists());

    // Unknown policy, unknown node: named.
    let r = w.cli(&[
        "migrate",
        "job-2",
        "--from",
        "node-a",
        "--to",
        "node-b",
        "--policy",
        "/etc/passwd",
    ]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("policy_unknown"), "{}", r.stderr);
    let r = w.cli(&["migrate", "job-2", "--from", "node-a", "--to", "nowhere"]);
    assert_eq!(r.code, 2, "{}", r.stderr);

    // The audit log holds the ticket, the placement and the refusals.
    let out = w.path("audit-export");
    let e = custody([
        "audit",
        "export",
        "--db",
        w.path("data").join("custody.db").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(e.code, 0, "{}", e.stderr);
    let log = std::fs::read_to_string(out.join("entries.jsonl")).unwrap_or_default();
    for want in [
        "\"ticket_issued\"",
        "\"placed\"",
        "\"refused\"",
        "chip_mismatch",
        // Every attestation result names the registry version it was decided under.
        "\"registry_version\":1",
        "\"ticket_cose\":\"d2",
    ] {
        assert!(log.contains(want), "audit log lacks {want}");
    }

    // The auditor, offline, with the verifier's log key: where has llama-ft been? Every
    // migration entry was checkpointed at once, so the export (signed entries only)
    // already covers them while the verifier keeps running.
    let key = w.path("data").join("log-key.pub");
    let r = custody([
        "audit",
        "where",
        "llama-ft",
        "--dir",
        out.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let h = r.json();
    assert_eq!(h["audited"], true, "{h}");
    let stays: Vec<(&str, &str, &str)> = h["stays"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["place"]["name"].as_str().unwrap(),
                s["place"]["site"].as_str().unwrap(),
                s["place"]["country"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        stays,
        [
            ("node-a", "par-eu", "FR"),
            ("node-b", "par-eu", "FR"),
            ("node-a", "par-eu", "FR")
        ],
        "{h}"
    );
    // Three tickets: placed, failed (B already held the job: the destination refused), placed.
    let moves = h["moves"].as_array().unwrap();
    let outcomes: Vec<_> = moves.iter().map(|m| m["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["placed", "failed", "placed"], "{h}");
    assert_eq!(moves[1]["check"], "destination_refused", "{h}");
    assert!(
        moves[1]["detail"].as_str().unwrap().contains("already exists"),
        "{h}"
    );
    assert_eq!(moves[0]["source_released"], false, "{h}");
    assert_eq!(moves[2]["source_released"], true, "{h}");
    for m in [&moves[0], &moves[2]] {
        assert_eq!(m["policy_id"], "eu-sovereign", "{m}");
        assert_eq!(m["destination"]["operator"], "EuroCloud SAS", "{m}");
        assert_eq!(
            m["destination"]["evidence_sha256"].as_str().map(str::len),
            Some(64),
            "{m}"
        );
        assert_eq!(m["receipt_sha256"].as_str().map(str::len), Some(64), "{m}");
    }
    let r = custody([
        "audit",
        "where",
        "job-2",
        "--dir",
        out.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains("destination_attestation") && r.stdout.contains("Nimbus Inc (US)"),
        "{}",
        r.stdout
    );

    // The verifier crashes (SIGKILL) right after it told A to send job-3; the restarted
    // verifier finds the move in its store, watches A again, verifies B's receipt and
    // logs the placement; the migrations it ran before are still listed.
    let job3 = w.store("node-a").join("job-3");
    let job3_digests = checkpoint(&job3, 64);
    let r = w.cli(&[
        "migrate",
        "job-3",
        "--from",
        "node-a",
        "--to",
        "node-b",
        "--no-wait",
        "--json",
    ]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let id = r.json()["id"].as_str().unwrap().to_owned();
    w.crash_and_restart_verifier();
    let db = w.path("data").join("custody.db");
    let placed = eventually("the restarted verifier to log job-3's placement", 60, || {
        let r = custody(["audit", "where", "job-3", "--db", db.to_str().unwrap(), "--json"]);
        let h = r.json();
        (h["moves"][0]["outcome"] == "placed").then_some(h)
    });
    assert_eq!(placed["moves"][0]["ticket"], id.as_str(), "{placed}");
    for (f, d) in &job3_digests {
        assert_eq!(&sha256_file(&w.store("node-b").join("job-3").join(f)), d, "{f}");
    }
    let list = w.cli(&["migrations", "--json"]);
    assert_eq!(list.code, 0, "{}", list.stderr);
    let states: Vec<(String, String)> = list
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["job"].as_str().unwrap().to_owned(),
                m["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            ("llama-ft".to_owned(), "done".to_owned()),
            ("llama-ft".to_owned(), "failed".to_owned()),
            ("llama-ft".to_owned(), "done".to_owned()),
            ("job-3".to_owned(), "done".to_owned()),
        ],
        "{}",
        list.stdout
    );
    let one = w.cli(&["migrations", &id, "--json"]);
    assert_eq!(one.code, 0, "{}", one.stderr);
    assert_eq!(
        one.json()["receipt_sha256"].as_str().map(str::len),
        Some(64),
        "{}",
        one.stdout
    );
    let none = w.cli(&["migrations", "00000000000000000000000000000000"]);
    assert_eq!(none.code, 1, "{}", none.stderr);

    // Air-gapped: A writes an export file sealed to B's attested key; only B's agent
    // imports it, a flipped byte is caught before anything is placed, the verifier
    // collects B's receipt, and the file cannot be imported twice.
    let job4 = w.store("node-a").join("job-4");
    let job4_digests = checkpoint(&job4, 16);
    let m = w.export("job-4", "node-a", "node-b");
    assert_eq!(m["state"], "exported", "{m}");
    let id4 = m["id"].as_str().unwrap().to_owned();
    let file = PathBuf::from(m["export_path"].as_str().unwrap());
    assert!(file.starts_with(w.store("node-a")), "{}", file.display());
    assert_eq!(
        hex::encode(sha256_file(&file)),
        m["export_sha256"].as_str().unwrap(),
        "the export's digest"
    );
    let import = |node: &str, f: &Path| {
        let sock = w.path(&format!("{node}-admin/admin.sock"));
        custody([
            "import".as_ref(),
            f.as_os_str(),
            "--socket".as_ref(),
            sock.as_os_str(),
            "--json".as_ref(),
        ])
    };
    // Another node cannot import it.
    let r = import("node-us", &file);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("ticket_destination"), "{}", r.stderr);
    // A flipped byte in the last chunk: refused by the chunk's authentication, nothing placed.
    let mut bad = std::fs::read(&file).unwrap();
    let n = bad.len();
    bad[n - 20] ^= 1;
    let bad_file = w.path("job-4.tampered.custody");
    std::fs::write(&bad_file, bad).unwrap();
    let r = import("node-b", &bad_file);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("chunk_authentication"), "{}", r.stderr);
    assert!(!w.store("node-b").join("job-4").exists());
    // The real file: placed bit-identical; the verifier verifies B's receipt.
    let r = import("node-b", &file);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.json()["imported"]["ticket"], id4.as_str(), "{}", r.stdout);
    for (f, d) in &job4_digests {
        assert_eq!(&sha256_file(&w.store("node-b").join("job-4").join(f)), d, "{f}");
    }
    let done = eventually("the verifier to collect job-4's receipt", 30, || {
        let r = w.cli(&["migrations", &id4, "--json"]);
        (r.code == 0 && r.json()["state"] == "done").then(|| r.json())
    });
    assert_eq!(done["receipt_sha256"].as_str().map(str::len), Some(64), "{done}");
    let r = import("node-b", &file);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("ticket_replayed"), "{}", r.stderr);
}

/// Issue 19 item 3: tickets are checked offline, so a ticket issued before its source
/// was removed stayed good until it expired (a day for an export file). The verifier
/// pushes its signed deny list when the operator removes a node; the destination then
/// refuses the removed node's file at `node_removed`, with nothing placed.
#[test]
fn a_ticket_issued_before_a_removal_moves_nothing() {
    let (a, b, us) = (Swtpm::start(), Swtpm::start(), Swtpm::start());
    let key = RegistryKey::generate().unwrap();
    let w = start([&a, &b, &us], &key);
    let job = w.store("node-a").join("job-r");
    checkpoint(&job, 9);
    let m = w.export("job-r", "node-a", "node-b");
    let file = PathBuf::from(m["export_path"].as_str().unwrap());

    // The operator removes node-a; the removal waits for the agents to hold the list.
    let r = w.cli(&[
        "nodes",
        "remove",
        "node-a",
        "--reason",
        "decommissioned",
        "--json",
    ]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let pushed = &r.json()["deny_list"];
    assert_eq!(pushed["sent"], 2, "node-b and node-us: {pushed}");
    assert_eq!(pushed["held"], 2, "{pushed}\n{}", w.logs());

    // The file's ticket is still within its day, and B refuses it.
    let sock = w.path("node-b-admin/admin.sock");
    let r = custody([
        "import".as_ref(),
        file.as_os_str(),
        "--socket".as_ref(),
        sock.as_os_str(),
        "--json".as_ref(),
    ]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("node_removed"), "{}", r.stderr);
    assert!(!w.store("node-b").join("job-r").exists(), "nothing placed");
    // B's agent keeps the list across a restart (it is a file beside the checkpoints).
    assert!(w.store("node-b").join(".custody-deny-list").exists());
}
