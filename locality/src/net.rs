//! The two network sides of a probe: the node's responder and the landmark's measurement.
//! One TCP connection per measurement (the handshake is not timed), TCP_NODELAY on both
//! ends so a 69-byte challenge and a 64-byte answer each leave in one segment at once.

use crate::error::LocalityError;
use crate::geo::{bound_km, LatLon};
use crate::statement::LandmarkStatement;
use crate::wire::{landmark_hash, Challenge, Response, CHALLENGE_LEN, RESPONSE_LEN};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Signs the responder's message with the attested session key (`Session::sign_challenge`).
pub type Signer = Arc<dyn Fn(&[u8]) -> [u8; 64] + Send + Sync>;

/// Most probes one measurement may send.
pub const MAX_PROBES: u32 = 10_000;

/// The responder's bounds: a landmark needs one short connection; anything else is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once; more are closed on accept.
    pub max_connections: usize,
    /// Lifetime of one connection.
    pub max_connection_time: Duration,
    /// Longest wait for the next challenge.
    pub idle_timeout: Duration,
    /// Challenges answered per connection.
    pub max_probes: u32,
    /// Added before each answer (zero by default): demos and tests simulate a node's
    /// distance with it. Delay only ever makes a node look farther, never nearer.
    pub added_delay: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 32,
            max_connection_time: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(10),
            max_probes: MAX_PROBES,
            added_delay: Duration::ZERO,
        }
    }
}

/// Answer locality challenges on `listener` until `shutdown` completes, with the default
/// [`Limits`].
pub async fn serve(
    listener: TcpListener,
    signer: Signer,
    session_pub: [u8; 32],
    shutdown: impl Future<Output = ()>,
) {
    serve_with(listener, signer, session_pub, Limits::default(), shutdown).await;
}

/// [`serve`] with explicit limits. Connection tasks live in a `JoinSet`: when this future
/// ends or is dropped, they are aborted with it.
pub async fn serve_with(
    listener: TcpListener,
    signer: Signer,
    session_pub: [u8; 32],
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((s, _)) => s,
                    // Out of descriptors and the like: back off instead of spinning.
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                    continue; // over the limit: dropping the stream closes it
                };
                let signer = Arc::clone(&signer);
                conns.spawn(async move {
                    let _slot = slot;
                    let _ = tokio::time::timeout(
                        limits.max_connection_time,
                        answer(stream, signer, session_pub, limits),
                    )
                    .await;
                });
            }
        }
    }
    conns.shutdown().await;
}

/// One connection: read a fixed frame, sign, write, repeat. Stack buffers only; a
/// malformed challenge closes the connection unanswered.
async fn answer(mut stream: TcpStream, signer: Signer, session_pub: [u8; 32], limits: Limits) {
    if stream.set_nodelay(true).is_err() {
        return;
    }
    let mut frame = [0u8; CHALLENGE_LEN];
    for _ in 0..limits.max_probes {
        match tokio::time::timeout(limits.idle_timeout, stream.read_exact(&mut frame)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let Ok(challenge) = Challenge::decode(&frame) else {
            return;
        };
        let sig: [u8; RESPONSE_LEN] = signer(&challenge.signed_message(&session_pub));
        if !limits.added_delay.is_zero() {
            tokio::time::sleep(limits.added_delay).await;
        }
        if stream.write_all(&sig).await.is_err() {
            return;
        }
    }
}

/// What one measurement found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Measurement {
    /// Fastest round trip: delay can be added on the path, never removed, so the minimum
    /// is the honest estimate of the distance.
    pub rtt_min: Duration,
    /// Slowest round trip (jitter indication only).
    pub rtt_max: Duration,
    pub probes: u32,
}

impl Measurement {
    /// The statement a landmark signs. `rtt_us` is rounded up and the bound computed
    /// from it, so rounding never shrinks the bound.
    pub fn statement(
        &self,
        landmark: &str,
        position: LatLon,
        node: &str,
        session_ed25519: [u8; 32],
        processing_floor: Duration,
        measured_at: i64,
    ) -> LandmarkStatement {
        let rtt_us = u64::try_from(self.rtt_min.as_nanos().div_ceil(1000)).unwrap_or(u64::MAX);
        LandmarkStatement {
            landmark: landmark.to_owned(),
            lat: position.lat,
            lon: position.lon,
            node: node.to_owned(),
            session_ed25519,
            rtt_us,
            probes: self.probes,
            bound_km: bound_km(Duration::from_micros(rtt_us), processing_floor),
            measured_at,
        }
    }
}

/// Measure the node at `addr`: connect once (not timed), then `probes` fresh challenges
/// one at a time, each answer verified against `expected_session_pub`. Any bad answer
/// fails the whole measurement (`locality_signature`); the whole run is bounded by
/// `timeout` (`locality_network`).
pub async fn measure(
    addr: impl ToSocketAddrs,
    landmark_id: &str,
    expected_session_pub: &[u8; 32],
    probes: u32,
    timeout: Duration,
) -> Result<Measurement, LocalityError> {
    if !(1..=MAX_PROBES).contains(&probes) {
        return Err(LocalityError::Format(format!(
            "probes must be 1-{MAX_PROBES}, got {probes}"
        )));
    }
    let hash = landmark_hash(landmark_id);
    tokio::time::timeout(timeout, probe_all(addr, hash, expected_session_pub, probes))
        .await
        .map_err(|_| LocalityError::Network(format!("measurement did not finish within {timeout:?}")))?
}

async fn probe_all(
    addr: impl ToSocketAddrs,
    hash: [u8; 32],
    session_pub: &[u8; 32],
    probes: u32,
) -> Result<Measurement, LocalityError> {
    let net = |what: &str, e: std::io::Error| LocalityError::Network(format!("{what}: {e}"));
    let mut stream = TcpStream::connect(addr).await.map_err(|e| net("connect", e))?;
    stream.set_nodelay(true).map_err(|e| net("TCP_NODELAY", e))?;
    let mut rtt_min = Duration::MAX;
    let mut rtt_max = Duration::ZERO;
    let mut answer = [0u8; RESPONSE_LEN];
    for _ in 0..probes {
        let challenge = Challenge::random(hash)?;
        let frame = challenge.encode();
        let start = Instant::now();
        stream
            .write_all(&frame)
            .await
            .map_err(|e| net("send challenge", e))?;
        stream
            .read_exact(&mut answer)
            .await
            .map_err(|e| net("read response", e))?;
        let rtt = start.elapsed();
        // Verified after the clock stops: verification is the landmark's time, not the node's.
        Response(answer).verify(&challenge, session_pub)?;
        rtt_min = rtt_min.min(rtt);
        rtt_max = rtt_max.max(rtt);
    }
    Ok(Measurement {
        rtt_min,
        rtt_max,
        probes,
    })
}
