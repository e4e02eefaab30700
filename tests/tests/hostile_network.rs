//! A hostile network and hostile evidence (issue 20): each test is one finding, played end
//! to end against a real `custody-verifier` with nodes on swtpm, named after what it shows.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use axum::http::{Method, StatusCode};
use custody_e2e::fleet::*;
use custody_e2e::{decode, eventually, Swtpm};
use custody_formats::api::{PushResult, CBOR};
use custody_formats::bundle::{EvidenceBundle, GpuEvidence};
use serde_json::Value;
use std::time::Duration;

fn results(v: &Verifier, name: &str) -> Vec<Value> {
    v.node(name)["results"].as_array().unwrap().clone()
}

/// Finding 1. Before: 2,000 junk GPU entries pushed the policy past its instruction limit,
/// the appraisal errored, and the round ended with no result, no failure count and no log
/// entry: the node stayed `trusted` forever. Now lists are bounded while the bundle
/// decodes (16 GPUs), so the round is a recorded failure at `bundle_format`, counted
/// towards revocation like any refused evidence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_gpu_entries_cannot_make_rounds_vanish() {
    let t = Swtpm::start();
    let v = Verifier::start(&[&t], Opts::every(3600).revoke_after(2));
    let state = tempfile::tempdir().unwrap();
    let (p, _) = Pusher::enroll(&agent_config(&v, &t, "junk", state.path()), collector(&t)).await;
    let honest = p.push(&v, &p.bundle(&v).await).await;
    assert_eq!(honest.failed_check, None, "{honest:?}");
    let before = results(&v, "junk").len();

    for round in 1..=2 {
        let mut b = EvidenceBundle::from_cbor(&p.bundle(&v).await).unwrap();
        b.gpus = (0..2000)
            .map(|index| GpuEvidence {
                index,
                report: vec![0x11, 0xe0],
                cert_chain: vec![],
            })
            .collect();
        let r = v
            .request(
                &p.client,
                Method::POST,
                "/v1/evidence",
                Some(CBOR),
                b.to_cbor().unwrap(),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", String::from_utf8_lossy(&r.body));
        let res: PushResult = decode!("push result", &r);
        assert_eq!(res.failed_check.as_deref(), Some("bundle_format"), "{res:?}");
        let n = v.node("junk");
        assert!(
            n["node"]["reason"]
                .as_str()
                .unwrap()
                .contains("more than 16 entries"),
            "{n}"
        );
        assert_eq!(
            results(&v, "junk").len(),
            before + round,
            "every round is recorded"
        );
    }
    assert_eq!(v.node("junk")["node"]["state"], "revoked");
}

/// Finding 3, first half. Before: a node that was silent or unreachable was charged
/// `agent_reachable`, and after `revoke_after` such rounds it was revoked, which is
/// terminal (a network outage could revoke a fleet). Now it is `failed` (untrusted, the
/// reason says why) and never revoked for being unreachable.
#[test]
fn an_unreachable_node_is_failed_but_never_revoked() {
    let t = Swtpm::start();
    let v = Verifier::start(&[&t], Opts::every(1).revoke_after(2));
    let mut a = Agent::start(&v, &t, "silent");
    enrolled(&v, &mut a, "silent");
    eventually("a scheduled round to pass", 20, || {
        (v.node("silent")["node"]["state"] == "trusted").then_some(())
    });
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    let n = eventually("four unreachable rounds", 30, || {
        let n = v.node("silent");
        let unreachable = n["results"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["failed_check"] == "agent_reachable")
            .count();
        (unreachable >= 4).then_some(n)
    });
    assert_eq!(n["node"]["state"], "failed", "{n}");
    assert_eq!(n["node"]["consecutive_failures"], 0, "{n}");
    assert!(
        n["node"]["reason"]
            .as_str()
            .unwrap()
            .starts_with("agent_reachable"),
        "{n}"
    );
    // The agent comes back: the next round passes and the node is trusted again.
    a.child = Agent::spawn(a.dir.path());
    eventually("the node to be trusted again", 60, || {
        (v.node("silent")["node"]["state"] == "trusted").then_some(())
    });
}

/// Finding 3, second half. Before: when the verifier ran out of file descriptors, its
/// failed connects were charged to the nodes (`agent_reachable`) and every node was
/// revoked. Now the verifier's own exhaustion is recorded as `verifier_error` and changes
/// nothing for the node.
#[test]
fn verifier_file_descriptor_exhaustion_is_not_charged_to_nodes() {
    let t = Swtpm::start();
    let v = Verifier::start(&[&t], Opts::every(1).revoke_after(2));
    let mut a = Agent::start(&v, &t, "victim");
    enrolled(&v, &mut a, "victim");
    eventually("a scheduled round to pass", 20, || {
        (v.node("victim")["node"]["state"] == "trusted").then_some(())
    });
    let pid = v.child.as_ref().unwrap().id().to_string();
    let prlimit = |n: usize| {
        let st = std::process::Command::new("prlimit")
            .args(["--pid", &pid, &format!("--nofile={n}:")])
            .status()
            .unwrap();
        assert!(st.success(), "prlimit");
    };
    // No descriptor left for a new socket: the limit bounds descriptor numbers, so at 3
    // (stdin, stdout and stderr are open) nothing new fits, whatever closes meanwhile,
    // while open ones keep working. The agent goes too, so that the pooled connection to
    // it closes and every round needs a new one.
    let t0 = now();
    prlimit(3);
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    std::thread::sleep(Duration::from_secs(6));
    let t1 = now();
    prlimit(4096);
    let n = eventually("the verifier to answer again", 20, || {
        let r = v.cli(&["nodes", "show", "victim"]);
        (r.code == 0).then(|| r.json())
    });
    // What was recorded while the verifier had no descriptor (afterwards the dead agent
    // is merely unreachable).
    let inside = |x: &Value| x["at"].as_i64().is_some_and(|at| at > t0 && at < t1);
    let window: Vec<&Value> = n["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| inside(r))
        .collect();
    assert!(window.len() >= 2, "rounds recorded while out of descriptors: {n}");
    for r in &window {
        assert_eq!(r["failed_check"], "verifier_error", "{r}\n{n}");
    }
    let changes: Vec<&Value> = n["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| inside(e))
        .collect();
    assert!(
        changes
            .iter()
            .all(|e| e["kind"] != "failed" && e["kind"] != "revoked"),
        "the node's state changed for the verifier's trouble: {changes:?}"
    );
}

/// A TLS connection to the verifier that presents no certificate and says nothing yet.
async fn raw_tls(v: &Verifier) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let roots = custody_net::roots_from_pem(&v.ca_pem()).unwrap();
    let cfg = custody_net::client_config(roots, None).unwrap();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", v.port))
        .await
        .unwrap();
    tokio_rustls::TlsConnector::from(cfg)
        .connect(rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap()
}

/// Whether the server closes `s` within `within` (EOF, an error, or an answer such as 408
/// followed by EOF).
async fn closed_within<S: tokio::io::AsyncRead + Unpin>(s: &mut S, within: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 1024];
    let until = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(until, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

/// Finding 2. Before: hyper's header read timeout was silently off (no timer was set), so
/// a client that trickled its headers held a connection and a task for as long as it
/// liked. Now the headers must arrive within `header_read_secs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickled_headers_do_not_hold_a_connection() {
    use tokio::io::AsyncWriteExt;
    // A TPM only for its EK CA: the verifier refuses to start without one.
    let t = Swtpm::start();
    let v = Verifier::start(
        &[&t],
        Opts {
            interval_secs: 3600,
            extra: "[limits]\nheader_read_secs = 2\n".into(),
            ..Opts::default()
        },
    );
    let s = raw_tls(&v).await;
    let (mut rd, mut wr) = tokio::io::split(s);
    let trickle = tokio::spawn(async move {
        let _ = wr
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            .await;
        for _ in 0..40 {
            if wr.write_all(b"X").await.is_err() || wr.flush().await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let started = std::time::Instant::now();
    assert!(
        closed_within(&mut rd, Duration::from_secs(6)).await,
        "a client trickling its headers kept the connection for 6 s"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    trickle.abort();
}

/// Finding 2. Before: one task per connection with no cap and no idle timeout, so idle
/// TLS connections (no certificate needed) piled up until descriptors ran out. Now the
/// listener serves at most `max_connections` (more are closed as they arrive) and closes
/// a connection with no request in flight after `idle_secs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_excess_connections_are_closed() {
    // A TPM only for its EK CA: the verifier refuses to start without one.
    let t = Swtpm::start();
    let v = Verifier::start(
        &[&t],
        Opts {
            interval_secs: 3600,
            extra: "[limits]\nmax_connections = 8\nidle_secs = 2\n".into(),
            ..Opts::default()
        },
    );
    let mut idle = Vec::new();
    for _ in 0..8 {
        idle.push(raw_tls(&v).await);
    }
    // The ninth is closed before any TLS: the handshake cannot complete.
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", v.port))
        .await
        .unwrap();
    let roots = custody_net::roots_from_pem(&v.ca_pem()).unwrap();
    let cfg = custody_net::client_config(roots, None).unwrap();
    let ninth = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_rustls::TlsConnector::from(cfg)
            .connect(rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap(), tcp),
    )
    .await
    .expect("the ninth connection was held, not closed");
    assert!(ninth.is_err(), "a ninth connection was served");
    // The idle ones are closed after idle_secs, and the listener serves again.
    for s in &mut idle {
        assert!(
            closed_within(s, Duration::from_secs(6)).await,
            "an idle connection stayed open"
        );
    }
    let r = v
        .request(&v.client(None), Method::GET, "/healthz", None, vec![])
        .await;
    assert_eq!(r.status, StatusCode::OK);
}

/// Finding 2. Before: the unauthenticated enrollment routes read bodies up to 16 MiB (and
/// with 200 streams per connection, 3.2 GiB per connection). Now they take 256 KiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_enrollment_bodies_are_refused() {
    // A TPM only for its EK CA: the verifier refuses to start without one.
    let t = Swtpm::start();
    let v = Verifier::start(&[&t], Opts::every(3600));
    let anon = v.client(None);
    for path in ["/v1/enroll", "/v1/enroll/activate"] {
        let r = v
            .request(&anon, Method::POST, path, Some(CBOR), vec![0x40; 1024 * 1024])
            .await;
        assert_eq!(
            r.status,
            StatusCode::PAYLOAD_TOO_LARGE,
            "{path}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
}

/// Finding 2, found again at the attack bench. Before: an enrollment body that declared
/// 16 MiB was read (and decrypted) up to the 256 KiB limit before the 413, and the node and
/// operator routes, which check the caller's role in the handler, read an anonymous
/// caller's body in full first: 16 MiB per request to `/v1/evidence` without a
/// certificate. A client that sent only the headers held the connection until the body
/// deadline (30 s). Now a caller without a certificate may send 256 KiB anywhere, and a
/// body that declares more than its allowance is refused on its headers alone,
/// `body_size`; one that does not declare its size is cut off at the allowance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_anonymous_bodies_are_refused_on_their_headers() {
    // A TPM only for its EK CA: the verifier refuses to start without one.
    let t = Swtpm::start();
    let v = Verifier::start(&[&t], Opts::every(3600));
    for path in ["/v1/enroll", "/v1/enroll/activate", "/v1/evidence", "/v1/renew"] {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {CBOR}\r\nContent-Length: {}\r\n\r\n",
            16 << 20
        );
        let answer = raw_exchange(&v, &[head.as_bytes()], Duration::from_secs(5)).await;
        let answer = answer.unwrap_or_else(|| panic!("{path}: no answer in 5 s to headers declaring 16 MiB"));
        assert!(answer.starts_with("HTTP/1.1 413"), "{path}: {answer}");
    }
    // The refusal names its check, to anonymous evidence too (before: 403 after reading
    // all of it).
    for path in ["/v1/enroll", "/v1/evidence"] {
        let body = vec![0; 300 * 1024];
        let r = v
            .request(&v.client(None), Method::POST, path, Some(CBOR), body)
            .await;
        assert_refusal(&r, StatusCode::PAYLOAD_TOO_LARGE, "body_size");
    }
    // A body that does not declare its size (chunked) is cut off at the allowance: 256 KiB
    // and one byte are sent, all of which the verifier reads before it answers.
    let head = format!(
        "POST /v1/evidence HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {CBOR}\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    let chunk = [b"10000\r\n".as_slice(), &[0u8; 0x10000], b"\r\n"].concat();
    let parts = [head.as_bytes(), &chunk, &chunk, &chunk, &chunk, b"1\r\n\0\r\n"];
    let answer = raw_exchange(&v, &parts, Duration::from_secs(10)).await;
    let answer = answer.expect("no answer to a 256 KiB + 1 anonymous chunked body");
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
}

/// Writes `parts` on a fresh TLS connection and reads the answer's head, if one comes
/// within `limit`.
async fn raw_exchange(v: &Verifier, parts: &[&[u8]], limit: Duration) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = raw_tls(v).await;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(limit, async {
        for p in parts {
            s.write_all(p).await.unwrap();
        }
        s.flush().await.unwrap();
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(buf.get(..n).unwrap()),
            }
        }
    })
    .await
    .ok()?;
    Some(String::from_utf8_lossy(&got).into_owned())
}

/// Finding 4. Before: pushed garbage was appraised, stored and logged every time, as fast
/// as a node could send it. Now a node gets `push_rounds_per_minute` pushes (each a
/// recorded round); beyond, 429 `rate_limit` and nothing is appraised or stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cannot_make_the_verifier_store_without_bound() {
    let t = Swtpm::start();
    let v = Verifier::start(
        &[&t],
        Opts {
            extra: "push_rounds_per_minute = 5\n".into(),
            ..Opts::every(3600).revoke_after(100)
        },
    );
    let state = tempfile::tempdir().unwrap();
    let (p, _) = Pusher::enroll(&agent_config(&v, &t, "noisy", state.path()), collector(&t)).await;
    let mut statuses = Vec::new();
    for _ in 0..8 {
        let r = v
            .request(&p.client, Method::POST, "/v1/evidence", Some(CBOR), vec![0xa0])
            .await;
        if r.status == StatusCode::TOO_MANY_REQUESTS {
            let f: custody_formats::api::Refusal = decode!("refusal", &r);
            assert_eq!(f.check, "rate_limit", "{f:?}");
        }
        statuses.push(r.status.as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429, 429]);
    assert_eq!(results(&v, "noisy").len(), 5, "only admitted pushes are recorded");
}

/// Finding 4. Before: anyone could fill the global table of pending enrollments (10,000)
/// without authentication by replaying one certified EK certificate, which is public, and
/// then no TPM could enroll. Now one EK holds at most two pending enrollments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_ek_certificate_cannot_fill_the_pending_enrollments() {
    use custody_formats::api::{EnrollChallenge, Refusal};
    let (ta, tb) = (Swtpm::start(), Swtpm::start());
    let v = Verifier::start(&[&ta, &tb], Opts::every(3600));
    let ka = collector(&ta).keys().unwrap();
    let replay = |i: u16| enroll_request(&ka, &format!("flood-{i}"), &format!("127.0.0.1:{}", 20000 + i));
    for i in 0..2 {
        let r = begin_enrollment(&v, &replay(i)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", String::from_utf8_lossy(&r.body));
        let _: EnrollChallenge = decode!("challenge", &r);
    }
    let r = begin_enrollment(&v, &replay(2)).await;
    let f: Refusal = decode!("refusal", &r);
    assert_eq!(f.check, "busy", "{f:?}");
    assert!(f.detail.contains("this TPM"), "{}", f.detail);
    // Another TPM enrolls as usual.
    let mut b = Agent::start(&v, &tb, "honest");
    enrolled(&v, &mut b, "honest");
}
