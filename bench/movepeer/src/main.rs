//! custody-movepeer: a test and benchmark tool, NOT the product. It runs the real
//! `custody_mover::wire` protocol (the one the agents embed) between two processes, so
//! tests can kill either end mid-transfer and benchmarks can measure it against a plain
//! TCP copy and scp.
//!
//! Transports: `tls` (what the agents do: mutual TLS with node certificates from a test CA
//! made by `keys` for the control messages, the sealed chunks on a second plain TCP
//! connection bound to the TLS session by an exporter token), `tls-only` (everything,
//! chunks too, over the TLS connection) or `tcp` (one plain TCP connection, no peer
//! authentication: a bench baseline only). The wire protocol needs no TLS for
//! confidentiality or integrity: chunks are AEAD-sealed under a data key HPKE-wrapped to
//! B's attested X25519 key, the manifest digest is in the verifier-signed ticket and every
//! file digest is checked at B. TLS adds peer authentication (which node is sending, which
//! node is receiving). Over TCP the peer is taken to be node-a.
//!
//! All I/O is blocking std I/O: a transfer is one thread on each side.

use anyhow::{anyhow, Context, Result};
use aws_lc_rs::rand::SecureRandom;
use clap::{Parser, Subcommand, ValueEnum};
use custody_mover::manifest::Manifest;
use custody_mover::ticket::Ticket;
use custody_mover::wire::{self, Destination, SourceChecks};
use custody_mover::MoverError;
use custody_types::FailedCheck;
use rustls::pki_types::ServerName;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

mod buf;
mod pki;
mod tls;

use buf::Duplex;

#[derive(Debug, Parser)]
#[command(
    name = "custody-movepeer",
    about = "Runs custody-mover's wire protocol between two processes (test/bench tool)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Transport {
    /// mTLS control connection, chunks on a bound plain TCP connection (the agents').
    Tls,
    /// Everything over the mTLS connection.
    TlsOnly,
    /// One plain TCP connection (bench baseline, no authentication).
    Tcp,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Write a test PKI, the verifier's ticket key and B's session keys into DIR.
    Keys {
        #[arg(long)]
        dir: PathBuf,
        /// One more node leaf (CN node:NAME, files NAME.pem/NAME.key); repeatable.
        #[arg(long = "extra-node")]
        extra_node: Vec<String>,
    },
    /// Issue a verifier-signed ticket moving CHECKPOINT from node-a to node-b.
    Ticket {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        checkpoint: PathBuf,
        #[arg(long)]
        job: String,
        #[arg(long, default_value_t = 3600)]
        ttl: i64,
        /// Ticket id, 32 hex digits (random when absent).
        #[arg(long)]
        id: Option<String>,
        #[arg(long)]
        out: PathBuf,
        /// Also write the checkpoint's manifest (CBOR) here, as the verifier's prepare
        /// step hands it to the source (`send --manifest`).
        #[arg(long)]
        manifest_out: Option<PathBuf>,
    },
    /// The destination (node-b): accept moves into INBOX/<job>.
    Serve {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        listen: String,
        #[arg(long)]
        inbox: PathBuf,
        /// Chunks between durable points (fsync + progress record).
        #[arg(long, default_value_t = custody_mover::receive::DEFAULT_SYNC_EVERY)]
        sync_every: u64,
        #[arg(long, value_enum, default_value_t = Transport::Tls)]
        transport: Transport,
        /// Exit after one move connection (bulk connections do not count): 0 when it
        /// completed, 2 when refused or failed.
        #[arg(long)]
        once: bool,
        /// Buffer bytes around the connection (0: unbuffered).
        #[arg(long, default_value_t = DEFAULT_BUFFER)]
        buffer: usize,
        /// Write the checkpoint through the page cache (the default writes past it with
        /// O_DIRECT where the filesystem allows).
        #[arg(long)]
        buffered_writes: bool,
    },
    /// The source (node-a): send CHECKPOINT to ADDR under TICKET.
    Send {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        to: SocketAddr,
        #[arg(long)]
        ticket: PathBuf,
        #[arg(long)]
        checkpoint: PathBuf,
        #[arg(long, default_value_t = custody_mover::stream::DEFAULT_CHUNK_SIZE)]
        chunk_size: u32,
        #[arg(long, value_enum, default_value_t = Transport::Tls)]
        transport: Transport,
        /// Print progress lines to stderr.
        #[arg(long)]
        progress: bool,
        /// Present this node's client certificate instead of node-a's (tests: a stolen ticket).
        #[arg(long, default_value = "node-a")]
        cert: String,
        /// Buffer bytes around the connection (0: unbuffered).
        #[arg(long, default_value_t = DEFAULT_BUFFER)]
        buffer: usize,
        /// The manifest from `ticket --manifest-out`: checked against the ticket and the
        /// files' sizes; B checks every file's digest (one read of the checkpoint at A).
        /// Without it the checkpoint is hashed before sending.
        #[arg(long)]
        manifest: Option<PathBuf>,
    },
    /// Plain TCP file receiver (the benchmark's ceiling): socket to FILE, fsync, ack.
    TcpServe {
        #[arg(long)]
        listen: String,
        #[arg(long)]
        out: PathBuf,
        /// Write as the mover's destination does: aligned, past the page cache (O_DIRECT),
        /// but on the receiving thread (the mover writes on its own thread).
        #[arg(long)]
        direct: bool,
    },
    /// Plain TCP file sender; prints the same JSON line as `send` after the ack.
    TcpSend {
        #[arg(long)]
        to: SocketAddr,
        #[arg(long)]
        file: PathBuf,
    },
}

/// Buffer around the connection; see bench/mover.sh for the measurement behind it.
const DEFAULT_BUFFER: usize = 256 * 1024;

/// A refusal that is not the mover's: its check name and message.
#[derive(Debug)]
struct Refusal {
    check: &'static str,
    msg: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for Refusal {}

fn refusal(check: &'static str, msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Refusal {
        check,
        msg: msg.into(),
    })
}

/// The check name of an error: the mover's, ours, or `transport` for anything else
/// (connect, TLS, local files).
fn check_of(e: &anyhow::Error) -> &'static str {
    for cause in e.chain() {
        if let Some(m) = cause.downcast_ref::<MoverError>() {
            return m.check();
        }
        if let Some(r) = cause.downcast_ref::<Refusal>() {
            return r.check;
        }
    }
    "transport"
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Keys { dir, extra_node } => pki::generate(&dir, &extra_node).map(|()| ExitCode::SUCCESS),
        Cmd::Ticket {
            dir,
            checkpoint,
            job,
            ttl,
            id,
            out,
            manifest_out,
        } => ticket(
            &dir,
            &checkpoint,
            &job,
            ttl,
            id.as_deref(),
            &out,
            manifest_out.as_deref(),
        )
        .map(|()| ExitCode::SUCCESS),
        Cmd::Serve {
            dir,
            listen,
            inbox,
            sync_every,
            transport,
            once,
            buffer,
            buffered_writes,
        } => {
            let writes = Writes {
                sync_every,
                direct_io: !buffered_writes,
            };
            serve(&dir, &listen, &inbox, writes, transport, once, buffer)
        }
        Cmd::Send {
            dir,
            to,
            ticket,
            checkpoint,
            chunk_size,
            transport,
            progress,
            cert,
            buffer,
            manifest,
        } => send(
            &dir,
            to,
            &ticket,
            &checkpoint,
            chunk_size,
            transport,
            progress,
            &cert,
            buffer,
            manifest.as_deref(),
        )
        .map(|()| ExitCode::SUCCESS),
        Cmd::TcpServe { listen, out, direct } => tcp_serve(&listen, &out, direct).map(|()| ExitCode::SUCCESS),
        Cmd::TcpSend { to, file } => tcp_send(to, &file).map(|()| ExitCode::SUCCESS),
    };
    match r {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}: {e:#}", check_of(&e));
            ExitCode::from(2)
        }
    }
}

fn ticket(
    dir: &Path,
    checkpoint: &Path,
    job: &str,
    ttl: i64,
    id: Option<&str>,
    out: &Path,
    manifest_out: Option<&Path>,
) -> Result<()> {
    let id: [u8; 16] = match id {
        Some(h) => hex::decode(h)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| anyhow!("--id must be 32 hex digits"))?,
        None => {
            let mut id = [0u8; 16];
            aws_lc_rs::rand::SystemRandom::new()
                .fill(&mut id)
                .map_err(|_| anyhow!("random ticket id"))?;
            id
        }
    };
    let b = pki::BKeys::load(dir)?;
    let now = now_unix();
    let manifest = Manifest::build(checkpoint)?;
    if let Some(p) = manifest_out {
        std::fs::write(p, manifest.to_cbor()?).with_context(|| p.display().to_string())?;
    }
    let t = Ticket {
        id,
        job: job.to_owned(),
        source: "node-a".into(),
        destination: "node-b".into(),
        dst_x25519: b.x25519,
        dst_ed25519: b.ed25519_public()?,
        policy_id: "bench".into(),
        policy_digest: [0; 32],
        manifest_digest: manifest.digest()?,
        issued_at: now,
        expires_at: now.saturating_add(ttl.max(1)),
    };
    let bytes = t.sign(&pki::verifier_key(dir)?)?;
    std::fs::write(out, bytes).with_context(|| out.display().to_string())
}

/// Bind and announce the address on stdout (tests read it to learn an ephemeral port).
fn bind(listen: &str) -> Result<TcpListener> {
    let l = TcpListener::bind(listen).with_context(|| format!("bind {listen}"))?;
    println!("listening {}", l.local_addr()?);
    std::io::stdout().flush()?;
    Ok(l)
}

/// How the destination writes: chunks between durable points, and past the page cache
/// or not.
struct Writes {
    sync_every: u64,
    direct_io: bool,
}

fn serve(
    dir: &Path,
    listen: &str,
    inbox: &Path,
    writes: Writes,
    transport: Transport,
    once: bool,
    buffer: usize,
) -> Result<ExitCode> {
    std::fs::create_dir_all(inbox).with_context(|| inbox.display().to_string())?;
    let b = pki::BKeys::load(dir)?;
    let ed = b.ed25519;
    let mut dest = Destination::new(
        "node-b".into(),
        b.x25519,
        b.x25519_secret,
        pki::verifier_public(dir)?,
        inbox.to_path_buf(),
        Box::new(move |m| <[u8; 64]>::try_from(ed.sign(m).as_ref()).unwrap_or([0; 64])),
    )?;
    dest.sync_every = writes.sync_every.max(1);
    dest.direct_io = writes.direct_io;
    let dest = Arc::new(dest);
    warm_rng();
    let tls = match transport {
        Transport::Tls | Transport::TlsOnly => Some(tls::server_config(dir, "b")?),
        Transport::Tcp => None,
    };
    let listener = bind(listen)?;
    // Every connection on its own thread: a move's bulk connection arrives while its
    // control connection is being served. With --once the first control connection's
    // outcome ends the process.
    let (done_tx, done_rx) = std::sync::mpsc::channel::<bool>();
    std::thread::spawn(move || {
        for sock in listener.incoming() {
            let sock = match sock {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("accept: {e}");
                    continue;
                }
            };
            let (dest, tls, done) = (dest.clone(), tls.clone(), done_tx.clone());
            std::thread::spawn(move || {
                let mut first = [0u8; 1];
                match sock.peek(&mut first) {
                    Ok(1) if wire::is_bulk_start(first[0]) => {
                        if let Err(e) = dest.accept_bulk(sock) {
                            eprintln!("bulk connection refused: {}: {e}", e.check());
                        }
                    }
                    Ok(1) => {
                        let _ = done.send(connection(&dest, tls, sock, buffer));
                    }
                    _ => {}
                }
            });
        }
    });
    if once {
        return Ok(match done_rx.recv() {
            Ok(true) => ExitCode::SUCCESS,
            _ => ExitCode::from(2),
        });
    }
    loop {
        std::thread::park();
    }
}

/// One connection at B; logs its outcome, true when the move completed.
fn connection(
    dest: &Destination,
    tls: Option<Arc<rustls::ServerConfig>>,
    sock: TcpStream,
    buffer: usize,
) -> bool {
    let r = match tls {
        Some(cfg) => serve_tls(dest, cfg, sock, buffer),
        None => {
            let mut s = Duplex::new(sock, buffer);
            dest.serve(&mut s, "node-a", now_unix())
                .map_err(anyhow::Error::new)
        }
    };
    match r {
        Ok(rx) => {
            eprintln!(
                "received job {} ticket {} resumed_at {} receipt_resent {} into {}",
                rx.ticket.job,
                rx.ticket.id_hex(),
                rx.resumed_at,
                rx.receipt_resent,
                rx.target.display()
            );
            true
        }
        Err(e) => {
            eprintln!("refused: {}: {e:#}", check_of(&e));
            false
        }
    }
}

fn serve_tls(
    dest: &Destination,
    cfg: Arc<rustls::ServerConfig>,
    sock: TcpStream,
    buffer: usize,
) -> Result<wire::Received> {
    let conn = rustls::ServerConnection::new(cfg)?;
    let mut s = rustls::StreamOwned::new(conn, sock);
    while s.conn.is_handshaking() {
        s.conn
            .complete_io(&mut s.sock)
            .map_err(|e| refusal("tls", format!("handshake: {e}")))?;
    }
    let peer =
        tls::peer_node(s.conn.peer_certificates()).map_err(|e| refusal("peer_identity", e.to_string()))?;
    let mut d = Duplex::new(s, buffer);
    let r = dest.serve_bound(&mut d, &peer, now_unix());
    d.inner.conn.send_close_notify();
    let _ = d.flush();
    Ok(r?)
}

#[allow(clippy::too_many_arguments)]
fn send(
    dir: &Path,
    to: SocketAddr,
    ticket_path: &Path,
    checkpoint: &Path,
    chunk_size: u32,
    transport: Transport,
    progress: bool,
    cert: &str,
    buffer: usize,
    manifest: Option<&Path>,
) -> Result<()> {
    let ticket_bytes = std::fs::read(ticket_path).with_context(|| ticket_path.display().to_string())?;
    let vpub = pki::verifier_public(dir)?;
    let checks = SourceChecks {
        verifier_public_sec1: &vpub,
        now: now_unix(),
        me: "node-a",
    };
    let mut last_pct = u64::MAX;
    let mut report = |p: wire::Progress| {
        if progress {
            let pct = (p.bytes * 100).checked_div(p.total).unwrap_or(100);
            if pct / 10 != last_pct / 10 || last_pct == u64::MAX {
                eprintln!("progress {}/{} resumed_at {}", p.bytes, p.total, p.resumed_at);
                last_pct = pct;
            }
        }
    };
    // An agent is a long-running process whose random generator was seeded long before a
    // move; seed this one (aws-lc's jitter entropy, tens of ms) before the clock starts.
    warm_rng();
    let started = Instant::now();
    // The source's checks: with a prepared manifest, no hashing before the stream.
    let (checked, manifest) = match manifest {
        Some(p) => {
            let m = Manifest::from_cbor(&std::fs::read(p).with_context(|| p.display().to_string())?)?;
            wire::check_source_with(&ticket_bytes, checks, checkpoint, m)?
        }
        None => wire::check_source(&ticket_bytes, checks, checkpoint)?,
    };
    let sock = TcpStream::connect(to).with_context(|| format!("connect {to}"))?;
    let sent = match transport {
        Transport::Tcp => {
            let mut s = Duplex::new(sock, buffer);
            wire::send_checked(
                &mut s,
                &ticket_bytes,
                checked.clone(),
                manifest.clone(),
                checkpoint,
                chunk_size,
                &mut report,
            )?
        }
        Transport::Tls | Transport::TlsOnly => {
            // The ticket names the destination; the server certificate must be that node's.
            let ticket = &checked;
            let cfg = tls::client_config(dir, pki::leaf_stem(cert))?;
            let name = ServerName::IpAddress(to.ip().into());
            let conn = rustls::ClientConnection::new(cfg, name)?;
            let mut s = rustls::StreamOwned::new(conn, sock);
            while s.conn.is_handshaking() {
                s.conn
                    .complete_io(&mut s.sock)
                    .map_err(|e| refusal("tls", format!("handshake: {e}")))?;
            }
            let peer = tls::peer_node(s.conn.peer_certificates())
                .map_err(|e| refusal("peer_identity", e.to_string()))?;
            if peer != ticket.destination {
                return Err(refusal(
                    "peer_identity",
                    format!(
                        "the server is node {peer:?}, the ticket's destination is {:?}",
                        ticket.destination
                    ),
                ));
            }
            let mut d = Duplex::new(s, buffer);
            let sent = if transport == Transport::Tls {
                // The bulk connection: the same address, plain TCP, bound by the token.
                let mut connect =
                    || -> std::io::Result<Box<dyn Write>> { Ok(Box::new(TcpStream::connect(to)?)) };
                wire::send_bound(
                    &mut d,
                    &ticket_bytes,
                    checked.clone(),
                    manifest.clone(),
                    checkpoint,
                    chunk_size,
                    &mut connect,
                    &mut report,
                )?
            } else {
                wire::send_checked(
                    &mut d,
                    &ticket_bytes,
                    checked.clone(),
                    manifest.clone(),
                    checkpoint,
                    chunk_size,
                    &mut report,
                )?
            };
            if transport == Transport::Tls && !sent.bulk && sent.chunks_sent > 0 {
                return Err(anyhow!("the bulk connection could not be opened"));
            }
            d.inner.conn.send_close_notify();
            let _ = d.flush();
            sent
        }
    };
    let secs = started.elapsed().as_secs_f64();
    let bytes = sent
        .total_bytes
        .saturating_sub(sent.resumed_at.saturating_mul(u64::from(chunk_size)));
    // A resent receipt (B had placed the checkpoint already) moved no bytes.
    let bytes = if sent.receipt_resent { 0 } else { bytes };
    let receipt_sha256 = hex::encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        &sent.receipt_bytes,
    ));
    println!(
        "{{\"bytes\":{bytes},\"total_bytes\":{},\"chunks_sent\":{},\"resumed_at\":{},\"receipt_resent\":{},\"receipt_sha256\":\"{receipt_sha256}\",\"seconds\":{secs:.6},\"mb_per_s\":{:.2}}}",
        sent.total_bytes,
        sent.chunks_sent,
        sent.resumed_at,
        u8::from(sent.receipt_resent),
        mb_per_s(bytes, secs)
    );
    Ok(())
}

fn mb_per_s(bytes: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        bytes as f64 / 1e6 / secs
    } else {
        0.0
    }
}

/// Seed the process's random generator now (what a long-running agent did at start).
fn warm_rng() {
    let mut b = [0u8; 16];
    let _ = aws_lc_rs::rand::SystemRandom::new().fill(&mut b);
}

/// A plain copy through one 1 MiB buffer: the fairest ceiling we found here. `std::io::copy`
/// (8 KiB steps, or splice) measured slower on this machine than 1 MiB reads and writes.
fn copy_big(from: &mut impl Read, to: &mut impl Write) -> std::io::Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(buf.get(..n).unwrap_or_default())?;
        total += n as u64;
    }
}

fn tcp_serve(listen: &str, out: &Path, direct: bool) -> Result<()> {
    let listener = bind(listen)?;
    let (mut sock, _) = listener.accept()?;
    let mut f = std::fs::File::create(out).with_context(|| out.display().to_string())?;
    if direct {
        // The mover's destination writes (aligned, past the page cache), on this thread.
        let mut w = custody_mover::direct::Staged::open(Arc::new(f.try_clone()?), out, true)?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = sock.read(&mut buf)?;
            if n == 0 {
                break;
            }
            w.write(buf.get(..n).unwrap_or_default())?;
        }
        w.flush()?;
    } else {
        copy_big(&mut sock, &mut f)?;
    }
    f.sync_all()?;
    // The ack: the sender's timing includes the fsync, as the mover's receipt does.
    sock.write_all(&[1])?;
    Ok(())
}

fn tcp_send(to: SocketAddr, file: &Path) -> Result<()> {
    let started = Instant::now();
    let mut f = std::fs::File::open(file).with_context(|| file.display().to_string())?;
    let mut sock = TcpStream::connect(to).with_context(|| format!("connect {to}"))?;
    let bytes = copy_big(&mut f, &mut sock)?;
    sock.shutdown(std::net::Shutdown::Write)?;
    let mut ack = [0u8; 1];
    sock.read_exact(&mut ack).context("no ack from tcp-serve")?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{{\"bytes\":{bytes},\"total_bytes\":{bytes},\"chunks_sent\":0,\"resumed_at\":0,\"seconds\":{secs:.6},\"mb_per_s\":{:.2}}}",
        mb_per_s(bytes, secs)
    );
    Ok(())
}
