//! The attack bench's attackers (issue 20), run as their own process
//! (`custody-attacker`) next to the load generator. Loopback only, bounded in count and
//! in time: every task stops at the deadline and the process then exits by itself.
//!
//! - idle TLS: connections that complete the handshake and then send nothing;
//! - raw TCP: connections that never start TLS;
//! - slow headers: TLS, then an HTTP/1.1 request whose headers arrive one byte at a time;
//! - big bodies: oversized bodies (16 MiB by default) to the unauthenticated
//!   `/v1/enroll` and `/v1/enroll/activate`;
//! - garbage: one enrolled node asks for nonces and pushes random bytes as evidence.
//!
//! A connection the server closes is counted and opened again, so the pressure stays.

use anyhow::{anyhow, bail, Context, Result};
use custody_formats::api as wire;
use custody_net::{client_config, roots_from_pem, Bytes, HttpsClient, Identity};
use http::Method;
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::time::{sleep_until, timeout_at, Instant};
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

#[derive(Debug, Clone)]
pub struct AttackOptions {
    /// The verifier, `https://127.0.0.1:PORT`; must be a loopback address.
    pub url: String,
    /// The verifier's CA certificate (PEM).
    pub ca_pem: String,
    /// An enrolled node's certificate chain and key (PEM), for the garbage pusher.
    pub node: Option<(String, String)>,
    pub idle_tls: usize,
    pub raw_tcp: usize,
    pub slow: usize,
    /// Pause between two header bytes of a slow client.
    pub slow_byte_every: Duration,
    /// Concurrent senders of oversized bodies.
    pub big: usize,
    pub big_bytes: usize,
    /// Concurrent garbage pushers of the one node (0: none).
    pub garbage: usize,
    /// Garbage evidence is 1 to this many random bytes.
    pub garbage_max: usize,
    /// Handshakes in flight at once while the connections are opened.
    pub connect_parallel: usize,
    /// At most this long to open the connections before the hold starts.
    pub ramp_max: Duration,
    /// How long to keep up the attack once ready; then everything stops.
    pub hold: Duration,
}

impl AttackOptions {
    /// The issue-20 profile.
    pub fn new(url: String, ca_pem: String) -> Self {
        Self {
            url,
            ca_pem,
            node: None,
            idle_tls: 2000,
            raw_tcp: 200,
            slow: 200,
            slow_byte_every: Duration::from_millis(500),
            big: 2,
            big_bytes: 16 << 20,
            garbage: 2,
            garbage_max: 64 << 10,
            connect_parallel: 32,
            ramp_max: Duration::from_secs(30),
            hold: Duration::from_secs(30),
        }
    }
}

/// Open connections now and at the peak.
#[derive(Debug, Default)]
struct Gauge {
    now: AtomicU64,
    peak: AtomicU64,
}

impl Gauge {
    fn up(&self) {
        let n = self.now.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak.fetch_max(n, Ordering::Relaxed);
    }
    fn down(&self) {
        self.now.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Debug, Default)]
struct Stats {
    idle: Gauge,
    idle_handshakes: AtomicU64,
    idle_failed: AtomicU64,
    idle_closed: AtomicU64,
    raw: Gauge,
    raw_connects: AtomicU64,
    raw_failed: AtomicU64,
    raw_closed: AtomicU64,
    slow: Gauge,
    slow_connects: AtomicU64,
    slow_failed: AtomicU64,
    slow_bytes: AtomicU64,
    slow_closed: AtomicU64,
    big_bytes_offered: AtomicU64,
    big: Mutex<BTreeMap<String, u64>>,
    garbage_nonce: Mutex<BTreeMap<String, u64>>,
    garbage_evidence: Mutex<BTreeMap<String, u64>>,
    /// Tasks that made their first connection attempt (the ramp).
    started: AtomicU64,
}

fn bump(m: &Mutex<BTreeMap<String, u64>>, key: String) {
    let mut m = m.lock().unwrap_or_else(|p| p.into_inner());
    *m.entry(key).or_default() += 1;
}

/// What the attackers did: JSON on the attacker's stdout.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AttackReport {
    pub ramp_s: f64,
    pub elapsed_s: f64,
    pub idle_tls_open: u64,
    pub idle_tls_open_peak: u64,
    pub idle_tls_handshakes: u64,
    pub idle_tls_failed: u64,
    pub idle_tls_closed_by_server: u64,
    pub raw_tcp_open: u64,
    pub raw_tcp_open_peak: u64,
    pub raw_tcp_connects: u64,
    pub raw_tcp_failed: u64,
    pub raw_tcp_closed_by_server: u64,
    pub slow_open: u64,
    pub slow_open_peak: u64,
    pub slow_connects: u64,
    pub slow_failed: u64,
    pub slow_header_bytes: u64,
    pub slow_closed_by_server: u64,
    pub big_body_bytes_offered: u64,
    /// Oversized-body requests by outcome (HTTP status or `error`).
    pub big_body: BTreeMap<String, u64>,
    pub garbage_nonce: BTreeMap<String, u64>,
    pub garbage_evidence: BTreeMap<String, u64>,
}

impl Stats {
    fn report(&self, ramp_s: f64, elapsed_s: f64) -> AttackReport {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let m = |m: &Mutex<BTreeMap<String, u64>>| m.lock().unwrap_or_else(|p| p.into_inner()).clone();
        AttackReport {
            ramp_s,
            elapsed_s,
            idle_tls_open: g(&self.idle.now),
            idle_tls_open_peak: g(&self.idle.peak),
            idle_tls_handshakes: g(&self.idle_handshakes),
            idle_tls_failed: g(&self.idle_failed),
            idle_tls_closed_by_server: g(&self.idle_closed),
            raw_tcp_open: g(&self.raw.now),
            raw_tcp_open_peak: g(&self.raw.peak),
            raw_tcp_connects: g(&self.raw_connects),
            raw_tcp_failed: g(&self.raw_failed),
            raw_tcp_closed_by_server: g(&self.raw_closed),
            slow_open: g(&self.slow.now),
            slow_open_peak: g(&self.slow.peak),
            slow_connects: g(&self.slow_connects),
            slow_failed: g(&self.slow_failed),
            slow_header_bytes: g(&self.slow_bytes),
            slow_closed_by_server: g(&self.slow_closed),
            big_body_bytes_offered: g(&self.big_bytes_offered),
            big_body: m(&self.big),
            garbage_nonce: m(&self.garbage_nonce),
            garbage_evidence: m(&self.garbage_evidence),
        }
    }
}

/// `https://127.0.0.1:PORT` -> its socket address; anything but loopback is refused.
pub fn loopback_addr(url: &str) -> Result<SocketAddr> {
    let hostport = url
        .strip_prefix("https://")
        .ok_or_else(|| anyhow!("{url}: not https://"))?
        .trim_end_matches('/');
    let addr: SocketAddr = hostport
        .parse()
        .with_context(|| format!("{url}: want https://IP:PORT"))?;
    if !addr.ip().is_loopback() {
        bail!("{url}: the attackers only target loopback (127.0.0.0/8, ::1)");
    }
    Ok(addr)
}

/// Wait a little before the next try, never past the deadline.
async fn pause(d: Duration, deadline: Instant) {
    sleep_until((Instant::now() + d).min(deadline)).await;
}

/// Read (and drop) whatever comes until the peer closes (true) or the deadline (false).
async fn until_closed<R: AsyncReadExt + Unpin>(r: &mut R, deadline: Instant) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        match timeout_at(deadline, r.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

#[derive(Clone)]
struct Target {
    addr: SocketAddr,
    name: ServerName<'static>,
    tls: TlsConnector,
    tls_h1: TlsConnector,
    sem: Arc<Semaphore>,
    st: Arc<Stats>,
}

impl Target {
    async fn tls(
        &self,
        h1: bool,
        deadline: Instant,
    ) -> Option<std::io::Result<tokio_rustls::client::TlsStream<TcpStream>>> {
        let _p = self.sem.acquire().await.ok()?;
        let c = if h1 { &self.tls_h1 } else { &self.tls };
        timeout_at(deadline, async {
            let tcp = TcpStream::connect(self.addr).await?;
            c.connect(self.name.clone(), tcp).await
        })
        .await
        .ok()
    }
}

async fn idle_tls(t: Target, deadline: Instant) {
    let mut first = true;
    while Instant::now() < deadline {
        let conn = t.tls(false, deadline).await;
        if std::mem::take(&mut first) {
            t.st.started.fetch_add(1, Ordering::Relaxed);
        }
        match conn {
            None => return,
            Some(Err(_)) => {
                t.st.idle_failed.fetch_add(1, Ordering::Relaxed);
                pause(Duration::from_millis(200), deadline).await;
            }
            Some(Ok(mut s)) => {
                t.st.idle_handshakes.fetch_add(1, Ordering::Relaxed);
                t.st.idle.up();
                let closed = until_closed(&mut s, deadline).await;
                t.st.idle.down();
                if closed {
                    t.st.idle_closed.fetch_add(1, Ordering::Relaxed);
                    pause(Duration::from_millis(100), deadline).await;
                }
            }
        }
    }
}

async fn raw_tcp(t: Target, deadline: Instant) {
    let mut first = true;
    while Instant::now() < deadline {
        let conn = {
            let Ok(_p) = t.sem.acquire().await else { return };
            timeout_at(deadline, TcpStream::connect(t.addr)).await
        };
        if std::mem::take(&mut first) {
            t.st.started.fetch_add(1, Ordering::Relaxed);
        }
        match conn {
            Err(_) => return,
            Ok(Err(_)) => {
                t.st.raw_failed.fetch_add(1, Ordering::Relaxed);
                pause(Duration::from_millis(200), deadline).await;
            }
            Ok(Ok(mut s)) => {
                t.st.raw_connects.fetch_add(1, Ordering::Relaxed);
                t.st.raw.up();
                let closed = until_closed(&mut s, deadline).await;
                t.st.raw.down();
                if closed {
                    t.st.raw_closed.fetch_add(1, Ordering::Relaxed);
                    pause(Duration::from_millis(100), deadline).await;
                }
            }
        }
    }
}

/// An HTTP/1.1 request head that never ends: the request line, then header after header.
fn slow_header_byte(i: u64) -> u8 {
    const HEAD: &[u8] =
        b"POST /v1/enroll HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/cbor\r\nContent-Length: 16\r\n";
    const LINE: &[u8] = b"X-Slow: aaaaaaaaaaaaaaaaaaaaaaaa\r\n";
    let i = usize::try_from(i).unwrap_or(usize::MAX);
    match HEAD.get(i) {
        Some(&b) => b,
        None => LINE.get((i - HEAD.len()) % LINE.len()).copied().unwrap_or(b'a'),
    }
}

async fn slow_headers(t: Target, every: Duration, deadline: Instant) {
    let mut first = true;
    while Instant::now() < deadline {
        let conn = t.tls(true, deadline).await;
        if std::mem::take(&mut first) {
            t.st.started.fetch_add(1, Ordering::Relaxed);
        }
        let s = match conn {
            None => return,
            Some(Err(_)) => {
                t.st.slow_failed.fetch_add(1, Ordering::Relaxed);
                pause(Duration::from_millis(200), deadline).await;
                continue;
            }
            Some(Ok(s)) => s,
        };
        t.st.slow_connects.fetch_add(1, Ordering::Relaxed);
        t.st.slow.up();
        let (mut r, mut w) = tokio::io::split(s);
        let mut buf = [0u8; 1024];
        let mut sent = 0u64;
        let mut next = Instant::now();
        let closed = loop {
            tokio::select! {
                _ = sleep_until(deadline) => break false,
                n = r.read(&mut buf) => match n {
                    // An answer (408, 431, ...) or a close: either way this one is done.
                    Ok(_) | Err(_) => break true,
                },
                _ = sleep_until(next) => {
                    let b = [slow_header_byte(sent)];
                    if w.write_all(&b).await.is_err() || w.flush().await.is_err() {
                        break true;
                    }
                    sent += 1;
                    t.st.slow_bytes.fetch_add(1, Ordering::Relaxed);
                    next = Instant::now() + every;
                }
            }
        };
        t.st.slow.down();
        if closed {
            t.st.slow_closed.fetch_add(1, Ordering::Relaxed);
            pause(Duration::from_millis(100), deadline).await;
        }
    }
}

async fn big_bodies(
    url: String,
    client: HttpsClient,
    body: Bytes,
    st: Arc<Stats>,
    k: usize,
    deadline: Instant,
) {
    let routes = ["/v1/enroll", "/v1/enroll/activate"];
    let mut i = k;
    while Instant::now() < deadline {
        let route = routes.get(i % routes.len()).copied().unwrap_or("/v1/enroll");
        i += 1;
        let r = timeout_at(
            deadline,
            client.request_bytes(
                Method::POST,
                &format!("{url}{route}"),
                Some(wire::CBOR),
                body.clone(),
            ),
        )
        .await;
        let Ok(r) = r else { return };
        st.big_bytes_offered
            .fetch_add(body.len() as u64, Ordering::Relaxed);
        let failed = r.is_err();
        let key = match r {
            Ok(resp) => format!("{route} {}", resp.status.as_u16()),
            Err(_) => format!("{route} error"),
        };
        bump(&st.big, key);
        if failed {
            pause(Duration::from_millis(50), deadline).await;
        }
    }
}

fn random_bytes(max: usize) -> Vec<u8> {
    let mut n = [0u8; 4];
    let _ = aws_lc_rs::rand::fill(&mut n);
    let len = (u32::from_le_bytes(n) as usize % max.max(1)) + 1;
    let mut v = vec![0u8; len];
    let _ = aws_lc_rs::rand::fill(&mut v);
    v
}

async fn garbage(url: String, client: HttpsClient, max: usize, st: Arc<Stats>, deadline: Instant) {
    while Instant::now() < deadline {
        let status = |r: Result<custody_net::Response, custody_net::NetError>| match r {
            Ok(r) => r.status.as_u16().to_string(),
            Err(_) => "error".to_owned(),
        };
        let Ok(n) = timeout_at(
            deadline,
            client.request(Method::POST, &format!("{url}/v1/nonce"), Some(wire::CBOR), vec![]),
        )
        .await
        else {
            return;
        };
        bump(&st.garbage_nonce, status(n));
        let Ok(e) = timeout_at(
            deadline,
            client.request(
                Method::POST,
                &format!("{url}/v1/evidence"),
                Some(wire::CBOR),
                random_bytes(max),
            ),
        )
        .await
        else {
            return;
        };
        let e = status(e);
        let failed = e == "error";
        bump(&st.garbage_evidence, e);
        if failed {
            pause(Duration::from_millis(50), deadline).await;
        }
    }
}

/// Run the attack: open the connections (at most `ramp_max`), call `ready` once, keep it
/// up for `hold`, then stop everything and report.
pub async fn run(opt: AttackOptions, ready: impl FnOnce(&AttackReport)) -> Result<AttackReport> {
    let addr = loopback_addr(&opt.url)?;
    let url = opt.url.trim_end_matches('/').to_owned();
    let roots = roots_from_pem(opt.ca_pem.as_bytes())?;
    let anon_cfg = client_config(roots.clone(), None)?;
    let mut h1 = (*anon_cfg).clone();
    h1.alpn_protocols = vec![b"http/1.1".to_vec()];
    let st = Arc::new(Stats::default());
    let t = Target {
        addr,
        name: ServerName::IpAddress(addr.ip().into()),
        tls: TlsConnector::from(anon_cfg.clone()),
        tls_h1: TlsConnector::from(Arc::new(h1)),
        sem: Arc::new(Semaphore::new(opt.connect_parallel.max(1))),
        st: st.clone(),
    };
    let start = Instant::now();
    // Until the hold starts the deadline is the ramp's end plus the hold; it is moved
    // nowhere later: tasks see one fixed deadline, so everything stops by itself.
    let ramp_end = start + opt.ramp_max;
    let deadline = ramp_end + opt.hold;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..opt.raw_tcp {
        tasks.spawn(raw_tcp(t.clone(), deadline));
    }
    for _ in 0..opt.slow {
        tasks.spawn(slow_headers(t.clone(), opt.slow_byte_every, deadline));
    }
    for _ in 0..opt.idle_tls {
        tasks.spawn(idle_tls(t.clone(), deadline));
    }
    let conns = (opt.raw_tcp + opt.slow + opt.idle_tls) as u64;
    while st.started.load(Ordering::Relaxed) < conns && Instant::now() < ramp_end {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ramp_s = start.elapsed().as_secs_f64();
    // The hold: `hold` from now; the connection tasks stop at `deadline` (later, when the
    // ramp was quick), the others below at `hold_end`.
    let hold_end = Instant::now() + opt.hold;
    if opt.big > 0 {
        let c = HttpsClient::new(anon_cfg.clone(), Duration::from_secs(30), 1 << 20);
        // One shared body: a clone per request copies no data (a 16 MiB copy per request
        // cost the attacker, on the verifier's own two cores, most of what it spent).
        let body = Bytes::from(vec![0xa5u8; opt.big_bytes]);
        for k in 0..opt.big {
            tasks.spawn(big_bodies(
                url.clone(),
                c.clone(),
                body.clone(),
                st.clone(),
                k,
                hold_end,
            ));
        }
    }
    if let (Some((cert, key)), true) = (&opt.node, opt.garbage > 0) {
        let id = Identity::from_pem(cert.as_bytes(), key.as_bytes())?;
        let c = HttpsClient::new(client_config(roots, Some(id))?, Duration::from_secs(30), 1 << 20);
        for _ in 0..opt.garbage {
            tasks.spawn(garbage(
                url.clone(),
                c.clone(),
                opt.garbage_max,
                st.clone(),
                hold_end,
            ));
        }
    }
    ready(&st.report(ramp_s, start.elapsed().as_secs_f64()));
    sleep_until(hold_end).await;
    let out = st.report(ramp_s, start.elapsed().as_secs_f64());
    // Connections close as the process ends; no task outlives the hold.
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_is_a_target() {
        assert_eq!(
            loopback_addr("https://127.0.0.1:8442/").unwrap(),
            "127.0.0.1:8442".parse::<SocketAddr>().unwrap()
        );
        assert!(loopback_addr("https://127.3.4.5:1").is_ok());
        assert!(loopback_addr("https://10.0.0.1:8442").is_err());
        assert!(loopback_addr("http://127.0.0.1:8442").is_err());
        assert!(loopback_addr("https://localhost:8442").is_err());
    }

    #[test]
    fn slow_head_is_a_request_line_then_headers_forever() {
        let head: Vec<u8> = (0..200).map(slow_header_byte).collect();
        let s = String::from_utf8(head).unwrap();
        assert!(s.starts_with("POST /v1/enroll HTTP/1.1\r\nHost: 127.0.0.1\r\n"));
        assert!(!s.contains("\r\n\r\n"), "the head never ends");
        assert!(s.ends_with("aaaa") || s.contains("X-Slow: "));
    }

    #[test]
    fn garbage_is_bounded() {
        for _ in 0..100 {
            let v = random_bytes(64);
            assert!((1..=64).contains(&v.len()));
        }
    }
}
