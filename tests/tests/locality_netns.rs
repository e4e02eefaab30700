//! Locality proofs over a real network path: two network namespaces joined by a veth
//! pair, the responder in the node's namespace, `custody landmark measure` in the
//! landmark's (docs/locality.md). A node with no added delay is within 1,000 km of a
//! Paris landmark; the same node behind 20 ms of delay is not; a relay adds delay and
//! never removes it. A real verifier round with a remote `custody landmark serve` in a
//! namespace: both proofs in the result, and the per-site bound is their intersection.
//!
//! Needs root, iproute2 (`ip`, `tc`) and iptables: without them these tests fail and say
//! so. The 20 ms delay is `tc qdisc ... netem delay 20ms` on the node's veth. Where the
//! kernel has no `sch_netem` (CONFIG_NET_SCH_NETEM unset, as on this project's CI VM) the
//! node's egress packets are queued to user space instead (`iptables -j NFQUEUE` in the
//! node's namespace) and let through 20 ms later by `examples/nfqdelay`: the same packets
//! on the same connection wait in the kernel, as behind netem, and the test prints that it
//! did; set `CUSTODY_REQUIRE_NETEM=1` to make a missing netem a failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use custody_e2e::{custody, custody_bin, repo_root, target_dir, verifier_init};
use custody_locality::{consistent, LatLon, Locality, Proof};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

const PARIS: LatLon = LatLon {
    lat: 48.8566,
    lon: 2.3522,
};
const NODE_IP: &str = "10.77.0.1";
const LANDMARK_IP: &str = "10.77.0.2";
const RESPONDER_PORT: u16 = 7000;

static SEQ: AtomicUsize = AtomicUsize::new(0);

fn sh(cmd: &str, args: &[&str]) -> std::process::Output {
    Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e} (these tests need iproute2: ip, tc)"))
}

#[track_caller]
fn must(cmd: &str, args: &[&str]) {
    let o = sh(cmd, args);
    assert!(
        o.status.success(),
        "{cmd} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Root and iproute2, or a failure that says what is missing.
fn require_root_and_iproute2() {
    let uid = sh("id", &["-u"]);
    let uid = String::from_utf8_lossy(&uid.stdout).trim().to_owned();
    assert_eq!(
        uid, "0",
        "locality_netns needs root (network namespaces, veth, tc): run `sudo -E cargo test -p custody-e2e --test locality_netns`; these tests are not skipped"
    );
    for (tool, arg) in [("ip", "-V"), ("tc", "-V")] {
        assert!(sh(tool, &[arg]).status.success(), "{tool} (iproute2) is required");
    }
}

/// The responder and delay-line examples, built once per test process.
fn example(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let st = Command::new(cargo)
            .args(["build", "--quiet", "-p", "custody-locality", "--examples"])
            .current_dir(repo_root())
            .status()
            .expect("run cargo build");
        assert!(st.success(), "building the locality examples failed");
    });
    target_dir().join("debug/examples").join(name)
}

/// Kills and reaps a child on drop; keeps its stdout open meanwhile (a closed pipe
/// would fail the child's later prints).
struct Proc(Child, #[allow(dead_code)] BufReader<ChildStdout>);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Two namespaces, `node` and `landmark`, joined by a veth pair; removed on drop, also
/// when a test fails (deleting a namespace deletes its veth end and its qdiscs).
struct Topology {
    /// Declared first so processes die before their namespaces go.
    procs: Vec<Proc>,
    node: String,
    landmark: String,
    node_veth: String,
    dir: tempfile::TempDir,
}

impl Drop for Topology {
    fn drop(&mut self) {
        self.procs.clear();
        for ns in [&self.node, &self.landmark] {
            let _ = sh("ip", &["netns", "del", ns]);
        }
    }
}

impl Topology {
    fn new() -> Self {
        require_root_and_iproute2();
        let tag = format!("{}x{}", std::process::id(), SEQ.fetch_add(1, Ordering::SeqCst));
        let t = Topology {
            procs: Vec::new(),
            node: format!("cust-node-{tag}"),
            landmark: format!("cust-lm-{tag}"),
            // Interface names are at most 15 bytes.
            node_veth: format!("cn{tag}"),
            dir: tempfile::tempdir().unwrap(),
        };
        let lm_veth = format!("cl{tag}");
        assert!(t.node_veth.len() <= 15, "{}", t.node_veth);
        must("ip", &["netns", "add", &t.node]);
        must("ip", &["netns", "add", &t.landmark]);
        must(
            "ip",
            &[
                "link",
                "add",
                &t.node_veth,
                "type",
                "veth",
                "peer",
                "name",
                &lm_veth,
            ],
        );
        must("ip", &["link", "set", &t.node_veth, "netns", &t.node]);
        must("ip", &["link", "set", &lm_veth, "netns", &t.landmark]);
        for (ns, dev, ip) in [
            (&t.node, &t.node_veth, NODE_IP),
            (&t.landmark, &lm_veth, LANDMARK_IP),
        ] {
            must("ip", &["-n", ns, "addr", "add", &format!("{ip}/24"), "dev", dev]);
            must("ip", &["-n", ns, "link", "set", dev, "up"]);
            must("ip", &["-n", ns, "link", "set", "lo", "up"]);
        }
        t
    }

    fn spawn_in(&mut self, ns: &str, program: &Path, args: &[&str]) -> String {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(program)
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let line = line.trim().to_owned();
        self.procs.push(Proc(child, out));
        assert!(!line.is_empty(), "{} printed nothing", program.display());
        line
    }

    /// The responder in the node namespace; its session public key (hex).
    fn start_node(&mut self) -> String {
        let ns = self.node.clone();
        let addr = format!("{NODE_IP}:{RESPONDER_PORT}");
        self.spawn_in(&ns, &example("responder"), &[&addr])
    }

    /// A delay line `listen -> target` in namespace `ns`, adding `up_ms` towards the
    /// target and `down_ms` back.
    fn delay_line(&mut self, ns: &str, listen: &str, target: &str, up_ms: u32, down_ms: u32) {
        let ns = ns.to_owned();
        self.spawn_in(
            &ns,
            &example("delayline"),
            &[listen, target, &up_ms.to_string(), &down_ms.to_string()],
        );
    }

    /// 20 ms on the node side's egress; returns the address the node is now reached at.
    fn delay_node_20ms(&mut self) -> String {
        let o = sh(
            "tc",
            &[
                "-n",
                &self.node,
                "qdisc",
                "add",
                "dev",
                &self.node_veth,
                "root",
                "netem",
                "delay",
                "20ms",
            ],
        );
        if o.status.success() {
            return format!("{NODE_IP}:{RESPONDER_PORT}");
        }
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(
            err.contains("unknown") && std::env::var_os("CUSTODY_REQUIRE_NETEM").is_none(),
            "tc netem delay 20ms failed: {err}"
        );
        eprintln!(
            "locality_netns: this kernel has no sch_netem ({}); the 20 ms is added to the node's egress packets by NFQUEUE instead (iptables + examples/nfqdelay)",
            err.trim()
        );
        // The queue is bound before the rule sends packets to it: a packet queued to an
        // unbound queue is dropped.
        let node = self.node.clone();
        let ready = self.spawn_in(&node, &example("nfqdelay"), &["0", "20"]);
        assert_eq!(ready, "ready");
        let o = sh(
            "ip",
            &[
                "netns",
                "exec",
                &self.node,
                "iptables",
                "-A",
                "OUTPUT",
                "-o",
                &self.node_veth,
                "-j",
                "NFQUEUE",
                "--queue-num",
                "0",
            ],
        );
        assert!(
            o.status.success(),
            "iptables -j NFQUEUE in the node namespace failed (scripts/setup.sh installs iptables): {}",
            String::from_utf8_lossy(&o.stderr)
        );
        // The node keeps its own address: no relay, the same connection, a longer path.
        format!("{NODE_IP}:{RESPONDER_PORT}")
    }

    fn landmark_key(&self) -> (PathBuf, PathBuf) {
        let (k, p) = (self.dir.path().join("lm.key"), self.dir.path().join("lm.pub"));
        if !k.exists() {
            landmark_keygen(&k, &p);
        }
        (k, p)
    }

    /// `custody landmark measure` run inside the landmark namespace, then `verify`; the
    /// verified proof.
    fn measure(&self, addr: &str, session: &str) -> Proof {
        let (key, public) = self.landmark_key();
        let out = Command::new("ip")
            .args(["netns", "exec", &self.landmark])
            .arg(custody_bin())
            .args([
                "landmark",
                "measure",
                "--addr",
                addr,
                "--session-key",
                session,
                "--id",
                "paris-1",
                "--lat",
                "48.8566",
                "--lon",
                "2.3522",
                "--key",
                key.to_str().unwrap(),
                "--node",
                "node-1",
                "--probes",
                "20",
            ])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "measure: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let m: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        let r = custody([
            "landmark",
            "verify",
            "--statement",
            m["signed"].as_str().unwrap(),
            "--trust",
            public.to_str().unwrap(),
            "--session-key",
            session,
        ]);
        assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
        let v = r.json();
        assert_eq!(v["statement"]["node"], "node-1");
        assert_eq!(v["statement"]["probes"], 20);
        serde_json::from_value(v["proof"].clone()).unwrap()
    }
}

fn km_to_paris(p: &Proof) -> f64 {
    Locality::new(vec![p.clone()], &[("paris".to_string(), PARIS)]).upper_km["paris"]
}

/// `custody landmark keygen` into `key` and `public`.
fn landmark_keygen(key: &Path, public: &Path) {
    let r = custody([
        "landmark",
        "keygen",
        "--key",
        key.to_str().unwrap(),
        "--pub",
        public.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
}

#[test]
fn delay_moves_the_node_out_of_1000_km_of_paris() {
    let mut t = Topology::new();
    let session = t.start_node();

    let near = t.measure(&format!("{NODE_IP}:{RESPONDER_PORT}"), &session);
    eprintln!(
        "no added delay: rtt {} ms, bound {} km",
        near.rtt_ms, near.bound_km
    );
    assert!(near.bound_km < 1000.0, "{near:?}");
    assert!(km_to_paris(&near) < 1000.0);
    assert!(consistent(std::slice::from_ref(&near), PARIS));
    // A plain process key: the proof says it is weak.
    assert_eq!(near.key_protection, custody_locality::KeyProtection::Process);
    assert!(near.weak);

    let addr = t.delay_node_20ms();
    let far = t.measure(&addr, &session);
    eprintln!(
        "20 ms node-side delay: rtt {} ms, bound {} km",
        far.rtt_ms, far.bound_km
    );
    assert!(far.rtt_ms >= 20.0, "{far:?}");
    assert!(far.bound_km >= 2000.0, "{far:?}");
    // "Within 1,000 km of Paris" now fails.
    assert!(km_to_paris(&far) >= 1000.0);
    // A Paris site is outside this disk only if more than 2,000 km away; the bound
    // alone fails the policy.
    assert!(far.bound_km > near.bound_km);
}

#[test]
fn a_relay_adds_delay_and_cannot_remove_it() {
    let mut t = Topology::new();
    let session = t.start_node();
    let node = format!("{NODE_IP}:{RESPONDER_PORT}");
    let direct = t.measure(&node, &session);
    assert!(direct.bound_km < 1000.0, "{direct:?}");

    // A relay next to the landmark, forwarding to the node, with 5 ms of its own path
    // each way: the landmark sees the node further away, never closer.
    let lm = t.landmark.clone();
    t.delay_line(&lm, "127.0.0.1:9000", &node, 5, 5);
    let relayed = t.measure("127.0.0.1:9000", &session);
    eprintln!(
        "direct bound {} km, through a 5 ms relay {} km",
        direct.bound_km, relayed.bound_km
    );
    assert!(relayed.bound_km >= 1000.0, "{relayed:?}");
    assert!(relayed.bound_km > direct.bound_km);

    // A node 20 ms away behind a zero-delay relay at the landmark: the relay forwards
    // the challenge and the answer but cannot take the node's own delay out.
    let far = t.delay_node_20ms();
    t.delay_line(&lm, "127.0.0.1:9001", &far, 0, 0);
    let relayed_far = t.measure("127.0.0.1:9001", &session);
    eprintln!("20 ms node through a 0 ms relay: {} km", relayed_far.bound_km);
    assert!(relayed_far.bound_km >= 2000.0, "{relayed_far:?}");
    assert!(km_to_paris(&relayed_far) >= 1000.0);
}

#[test]
fn topology_is_removed_on_drop_even_after_a_failure() {
    let names = std::panic::catch_unwind(|| {
        let t = Topology::new();
        let names = (t.node.clone(), t.landmark.clone());
        assert!(ns_exists(&names.0) && ns_exists(&names.1));
        // A failing test, without the panic hook's noise.
        std::panic::resume_unwind(Box::new(format!("{}|{}", names.0, names.1)));
    })
    .unwrap_err();
    let msg = names.downcast_ref::<String>().unwrap();
    let (node, landmark) = msg.split_once('|').unwrap();
    assert!(!ns_exists(node), "{node} left behind");
    assert!(!ns_exists(landmark), "{landmark} left behind");
}

fn ns_exists(name: &str) -> bool {
    let o = sh("ip", &["netns", "list"]);
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .any(|l| l.split_whitespace().next() == Some(name))
}

// ---------------------------------------------------------------------------------------
// A real verifier round with two landmarks: the verifier itself (loopback) and a remote
// `custody landmark serve` in its own namespace, reached over a veth pair from the host.

use custody_e2e::registry::{entity, site};
use custody_e2e::{eventually, free_port, service_bin, Kill, Swtpm};
use custody_registry::model::{Hardware, HardwareId, Registry};
use custody_registry::signed::{RegistryKey, SignedRegistry};

const FRANKFURT: LatLon = LatLon {
    lat: 50.1109,
    lon: 8.6821,
};

/// One namespace joined to the host's by a veth pair: the host end is `host_ip`, the
/// namespace end `ns_ip`. Removed on drop (deleting the namespace deletes both ends).
struct HostLink {
    procs: Vec<Proc>,
    ns: String,
    host_ip: String,
    ns_ip: String,
}

impl Drop for HostLink {
    fn drop(&mut self) {
        self.procs.clear();
        let _ = sh("ip", &["netns", "del", &self.ns]);
    }
}

impl HostLink {
    fn new() -> Self {
        require_root_and_iproute2();
        let seq = SEQ.fetch_add(1, Ordering::SeqCst);
        let tag = format!("{}x{seq}", std::process::id());
        // A /30 of its own per test process and link: no route clashes on the host.
        let net = format!("10.{}.{}", 100 + std::process::id() % 100, seq % 250);
        let l = HostLink {
            procs: Vec::new(),
            ns: format!("cust-rlm-{tag}"),
            host_ip: format!("{net}.1"),
            ns_ip: format!("{net}.2"),
        };
        let (host_veth, ns_veth) = (format!("ch{tag}"), format!("cr{tag}"));
        assert!(host_veth.len() <= 15, "{host_veth}");
        must("ip", &["netns", "add", &l.ns]);
        must(
            "ip",
            &[
                "link", "add", &host_veth, "type", "veth", "peer", "name", &ns_veth,
            ],
        );
        must("ip", &["link", "set", &ns_veth, "netns", &l.ns]);
        must(
            "ip",
            &["addr", "add", &format!("{}/30", l.host_ip), "dev", &host_veth],
        );
        must("ip", &["link", "set", &host_veth, "up"]);
        must(
            "ip",
            &[
                "-n",
                &l.ns,
                "addr",
                "add",
                &format!("{}/30", l.ns_ip),
                "dev",
                &ns_veth,
            ],
        );
        must("ip", &["-n", &l.ns, "link", "set", &ns_veth, "up"]);
        must("ip", &["-n", &l.ns, "link", "set", "lo", "up"]);
        l
    }

    fn spawn(&mut self, program: &Path, args: &[&str]) -> String {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .arg(program)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        self.procs.push(Proc(child, out));
        assert!(!line.trim().is_empty(), "{} printed nothing", program.display());
        line.trim().to_owned()
    }
}

struct Round {
    dir: tempfile::TempDir,
    port: u16,
    _agent: Kill,
    _verifier: Kill,
}

impl Round {
    fn cli(&self, args: &[&str]) -> custody_e2e::Run {
        let url = format!("https://127.0.0.1:{}", self.port);
        let id = self.dir.path().join("operator");
        let mut a: Vec<&str> = args.to_vec();
        a.extend(["--verifier", &url, "--identity", id.to_str().unwrap(), "--json"]);
        custody(a)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("verifier.log")).unwrap_or_default()
    }

    /// One round, then its EAR claims and the policy input behind them.
    fn attest(&self) -> (serde_json::Value, serde_json::Value) {
        let r = eventually("a round not colliding with a scheduled one", 30, || {
            let r = self.cli(&["attest", "node-1"]);
            (!(r.code == 2 && r.stderr.contains("busy"))).then_some(r)
        });
        assert_eq!(r.code, 0, "{}\n{}\n{}", r.stdout, r.stderr, self.log());
        let res = self.cli(&["result", "node-1"]);
        assert_eq!(res.code, 0, "{}", res.stderr);
        (res.json()["ear_claims"].clone(), self.input())
    }

    fn input(&self) -> serde_json::Value {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let p = |f: &str| self.dir.path().join(f);
        let read = |f: &str| std::fs::read(p("operator").join(f)).unwrap();
        let id = custody_net::Identity::from_pem(&read("cert.pem"), &read("key.pem")).unwrap();
        let roots = custody_net::roots_from_pem(&std::fs::read(p("data").join("ca.pem")).unwrap()).unwrap();
        let c = custody_net::HttpsClient::new(
            custody_net::client_config(roots, Some(id)).unwrap(),
            std::time::Duration::from_secs(20),
            1 << 20,
        );
        let url = format!("https://127.0.0.1:{}/v1/nodes/node-1/input", self.port);
        let r = rt
            .block_on(c.request(axum::http::Method::GET, &url, None, Vec::new()))
            .unwrap();
        assert_eq!(r.status.as_u16(), 200);
        serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["input"].clone()
    }
}

/// A verifier in Frankfurt (itself a landmark, on loopback) that also pins the remote
/// Paris landmark; an agent whose locality responder is reached by the remote landmark
/// only through `127.0.0.1:locality_port` in the landmark's namespace (a delay line
/// there forwards over the veth).
///
/// The node's site is registered in Paris while the Frankfurt landmark reaches it over
/// loopback: by construction its small bound excludes the site, which would fail
/// `locality_consistency`. This test is about intersecting proofs, so the tolerance is the
/// planet (`locality_tolerance_km = 20000`); the consistency check has its own tests.
fn start_round(tpm: &Swtpm, landmark_url: &str, landmark_pub: &str, locality_port: u16) -> Round {
    let dir = tempfile::tempdir().unwrap();
    let p = |s: &str| dir.path().join(s);
    let ek = p("ek-ca");
    std::fs::create_dir_all(&ek).unwrap();
    for c in tpm.ek_ca_certs() {
        std::fs::copy(&c, ek.join(c.file_name().unwrap())).unwrap();
    }
    let key = RegistryKey::generate().unwrap();
    std::fs::write(p("authority.pem"), key.public().to_pem()).unwrap();
    let registry = Registry {
        version: 1,
        issued_at: 1_767_225_600,
        authority: "test registry authority".into(),
        entities: vec![entity("eurocloud", "EuroCloud SAS", "FR", false, vec![])],
        sites: vec![site("par-eu", "eurocloud")],
        hardware: vec![Hardware {
            site: "par-eu".into(),
            id: HardwareId::EkCertSha256(tpm.ek_cert_sha256()),
            label: None,
        }],
    };
    std::fs::write(p("registry.cose"), SignedRegistry::sign(&registry, &key).unwrap()).unwrap();
    let port = free_port();
    let cfg = format!(
        "listen = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\nek_ca_dir = \"{}\"\ninterval_secs = 300\n\
         nonce_ttl_secs = 10\nround_timeout_secs = 5\n\
         registry = \"{}\"\nregistry_authorities = [\"{}\"]\n\
         locality_tolerance_km = 20000\n\n\
         [landmark]\nid = \"fra-verifier\"\nlat = {}\nlon = {}\nprobes = 5\n\n\
         [[landmarks]]\nurl = \"{landmark_url}\"\nid = \"paris-remote\"\npublic_key = \"{landmark_pub}\"\ntimeout_ms = 4000\n",
        p("data").display(),
        ek.display(),
        p("registry.cose").display(),
        p("authority.pem").display(),
        FRANKFURT.lat,
        FRANKFURT.lon,
    );
    std::fs::write(p("verifier.toml"), cfg).unwrap();
    verifier_init(&p("verifier.toml"), &p("operator"));
    let log = std::fs::File::create(p("verifier.log")).unwrap();
    let verifier = Kill(
        Command::new(service_bin("custody-verifier"))
            .args(["run", "--config"])
            .arg(p("verifier.toml"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap(),
    );
    eventually("the verifier to listen", 20, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    // The responder listens on every host address: the verifier reaches it on loopback,
    // the remote landmark over the veth (`link.host_ip`, through its delay line).
    let toml = format!(
        "name = \"node-1\"\nlisten = \"127.0.0.1:{}\"\nlocality_listen = \"0.0.0.0:{locality_port}\"\n\
         verifier_url = \"https://127.0.0.1:{port}\"\nverifier_ca = \"{}\"\nstate_dir = \"{}\"\n\
         round_timeout_secs = 10\n\n[tpm]\ntcti = \"{}\"\nevent_log = \"\"\n\n[collectors]\nsnp = false\nnvml = false\n",
        free_port(),
        p("data").join("ca.pem").display(),
        p("agent-state").display(),
        tpm.tcti()
    );
    std::fs::write(p("agent.toml"), toml).unwrap();
    let log = std::fs::File::create(p("agent.log")).unwrap();
    let agent = Kill(
        Command::new(service_bin("custody-agent"))
            .args(["run", "--config"])
            .arg(p("agent.toml"))
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap(),
    );
    let r = Round {
        dir,
        port,
        _agent: agent,
        _verifier: verifier,
    };
    eventually("node-1 to enroll", 60, || {
        let l = r.cli(&["nodes", "list"]);
        (l.code == 0 && l.stdout.contains("node-1")).then_some(())
    });
    r
}

fn proof_of(input: &serde_json::Value, landmark: &str) -> Proof {
    let p = input["locality"]["proofs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["landmark"] == landmark)
        .unwrap_or_else(|| panic!("no proof from {landmark}: {input}"));
    serde_json::from_value(p.clone()).unwrap()
}

#[test]
fn a_remote_landmark_and_the_verifier_intersect_in_one_round() {
    let tpm = Swtpm::start();
    let mut link = HostLink::new();
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = (dir.path().join("lm.key"), dir.path().join("lm.pub"));
    landmark_keygen(&key, &public);
    let landmark_pub = std::fs::read_to_string(&public).unwrap().trim().to_owned();
    let listen = format!("{}:8450", link.ns_ip);
    let line = link.spawn(
        custody_bin(),
        &[
            "landmark",
            "serve",
            "--listen",
            &listen,
            "--id",
            "paris-remote",
            "--lat",
            "48.8566",
            "--lon",
            "2.3522",
            "--key",
            key.to_str().unwrap(),
            "--probes",
            "10",
        ],
    );
    let ready: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(ready["public_key"], landmark_pub.as_str());

    // The agent's locality endpoint is 127.0.0.1:P; in the landmark's namespace that is
    // a delay line to the host end of the veth, with no added delay for now.
    let locality_port = free_port();
    let endpoint = format!("127.0.0.1:{locality_port}");
    let upstream = format!("{}:{locality_port}", link.host_ip);
    link.spawn(&example("delayline"), &[&endpoint, &upstream, "0", "0"]);

    let round = start_round(&tpm, &format!("http://{listen}"), &landmark_pub, locality_port);
    let par = LatLon::new(48.8566, 2.3522);

    // Near: both landmarks prove a small disk. The Paris site's bound is the smaller of
    // "Frankfurt + the verifier's bound" and "Paris + the remote landmark's bound".
    let (ear, input) = round.attest();
    let entries = ear["custody.attributes"]["locality"].as_array().unwrap().clone();
    assert_eq!(entries.len(), 2, "{ear}\n{}", round.log());
    let names: Vec<_> = entries.iter().map(|e| e["landmark"].as_str().unwrap()).collect();
    assert_eq!(names, ["fra-verifier", "paris-remote"], "{ear}");
    for e in &entries {
        assert_eq!(e["key-protection"], "process", "{ear}");
        assert_eq!(e["weak"], true, "{ear}");
        assert!(e["rtt-us"].as_i64().unwrap() > 0, "{ear}");
    }
    let own = proof_of(&input, "fra-verifier");
    let remote = proof_of(&input, "paris-remote");
    eprintln!(
        "near: verifier {} km, remote {} km, par-eu {}",
        own.bound_km, remote.bound_km, input["locality"]["upper_km"]["par-eu"]
    );
    // Loopback and a veth on a busy test machine: well under 10 ms either way.
    assert!(own.bound_km < 1000.0 && remote.bound_km < 1000.0, "{input}");
    let upper = input["locality"]["upper_km"]["par-eu"].as_f64().unwrap();
    let via_own = custody_locality::haversine_km(FRANKFURT, par) + own.bound_km;
    let via_remote = remote.bound_km;
    assert!((upper - via_own.min(via_remote)).abs() < 1e-6, "{input}");
    assert!(input.get("locality_failures").is_none(), "{input}");

    // Far: the remote landmark's path to the node now has 20 ms on it (the node side of
    // the delay line). Its disk grows past 2,000 km; the intersection keeps the
    // verifier's small one.
    link.procs.pop();
    link.spawn(&example("delayline"), &[&endpoint, &upstream, "0", "20"]);
    let (ear, input) = round.attest();
    let entries = ear["custody.attributes"]["locality"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{ear}");
    let own = proof_of(&input, "fra-verifier");
    let remote = proof_of(&input, "paris-remote");
    eprintln!(
        "far: verifier {} km, remote {} km, par-eu {}",
        own.bound_km, remote.bound_km, input["locality"]["upper_km"]["par-eu"]
    );
    assert!(remote.rtt_ms >= 20.0 && remote.bound_km >= 2000.0, "{input}");
    assert!(own.bound_km < 1000.0, "{input}");
    let upper = input["locality"]["upper_km"]["par-eu"].as_f64().unwrap();
    let via_own = custody_locality::haversine_km(FRANKFURT, par) + own.bound_km;
    assert!((upper - via_own).abs() < 1e-6, "{input}");
    assert!(upper < remote.bound_km, "{input}");
    let remote_claim = entries.iter().find(|e| e["landmark"] == "paris-remote").unwrap();
    assert!(remote_claim["bound-km"].as_i64().unwrap() >= 2000, "{ear}");

    // The remote landmark gone: the round still passes on the verifier's own proof, and
    // the failure is recorded by landmark and check.
    link.procs.clear();
    let (ear, input) = round.attest();
    assert_eq!(
        ear["custody.attributes"]["locality"].as_array().unwrap().len(),
        1,
        "{ear}"
    );
    let f = &input["locality_failures"][0];
    assert_eq!(f["landmark"], "paris-remote", "{input}");
    assert_eq!(f["check"], "landmark_unreachable", "{input}");
    assert_eq!(
        ear["custody.attributes"]["locality-failures"][0]["check"], "landmark_unreachable",
        "{ear}"
    );
}
