//! A remote landmark over plain HTTP/1.1 (docs/locality.md, "Remote landmarks"): the
//! verifier asks a landmark elsewhere to time a node's session key and gets back the
//! landmark's signed statement.
//!
//! ```text
//! POST /v1/measure   {"node_id": tstr, "endpoint": "HOST:PORT", "session_key": hex(32)}
//!   200              {"landmark": tstr, "signed": hex(signed statement), "rtt_max_us": uint}
//!   4xx/5xx          {"check": tstr, "detail": tstr}
//! GET  /v1/landmark  {"landmark": tstr, "lat": float, "lon": float, "public_key": hex(32)}
//! ```
//!
//! No TLS: everything the verifier relies on is inside the statement, which the landmark
//! signs and the verifier checks against the key it pinned for that landmark id, the
//! node's attested session key, the node id and the clock. An attacker on the path can
//! only withhold or delay an answer (no proof), never make one say less distance.

use crate::error::LocalityError;
use crate::geo::LatLon;
use crate::net::{measure, MAX_PROBES};
use crate::statement::{LandmarkKey, MAX_ID_LEN, MAX_SIGNED_LEN};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{header, Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::{Deserialize, Serialize};
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use thiserror::Error;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::Instrument;

/// Path of the measurement endpoint.
pub const MEASURE_PATH: &str = "/v1/measure";
/// Path of the landmark's self-description (id, position, public key: what to pin).
pub const INFO_PATH: &str = "/v1/landmark";
/// Largest request body the landmark reads.
pub const MAX_REQUEST_LEN: usize = 4096;
/// Largest response body the verifier reads (a hex statement plus a little JSON).
pub const MAX_RESPONSE_LEN: usize = 2 * MAX_SIGNED_LEN + 1024;
/// Longest `HOST:PORT` accepted (a DNS name is at most 253 bytes).
pub const MAX_ENDPOINT_LEN: usize = 260;

/// Why a remote measurement was refused or failed. Each names a stable check.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RemoteError {
    /// The request to the landmark is malformed (landmark side), or the landmark URL is.
    #[error("malformed landmark request: {0}")]
    Request(String),
    /// The landmark is measuring as many nodes as it allows.
    #[error("the landmark is busy ({0} measurements in flight)")]
    Busy(usize),
    /// Connect, HTTP or timeout talking to the landmark (verifier side).
    #[error("landmark {url} unreachable: {reason}")]
    Unreachable { url: String, reason: String },
    /// The landmark answered with an error: its own check and detail.
    #[error("landmark answered HTTP {status}: {check}: {detail}")]
    Refused {
        status: u16,
        check: String,
        detail: String,
    },
    /// The landmark's answer is not the documented JSON.
    #[error("malformed landmark answer: {0}")]
    Response(String),
    /// The measurement itself failed on the landmark (`locality_network`, ...).
    #[error(transparent)]
    Measure(LocalityError),
}

impl RemoteError {
    /// Stable, machine-readable check name.
    pub fn check(&self) -> &'static str {
        match self {
            Self::Request(_) => "landmark_request",
            Self::Busy(_) => "landmark_busy",
            Self::Unreachable { .. } => "landmark_unreachable",
            Self::Refused { .. } => "landmark_refused",
            Self::Response(_) => "landmark_response",
            Self::Measure(e) => e.check(),
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            Self::Request(_) => StatusCode::BAD_REQUEST,
            Self::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            // The node did not answer well: the landmark's upstream failed.
            Self::Measure(_) => StatusCode::BAD_GATEWAY,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl custody_types::FailedCheck for RemoteError {
    fn check(&self) -> &'static str {
        RemoteError::check(self)
    }
}

/// What the verifier asks a landmark to measure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeasureRequest {
    /// Recorded in the statement; the verifier refuses a statement about another node.
    pub node_id: String,
    /// The node's locality responder, `HOST:PORT`.
    pub endpoint: String,
    /// The node's attested Ed25519 session key, 64 hex digits.
    pub session_key: String,
}

/// A [`MeasureRequest`] whose fields passed [`MeasureRequest::parse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedRequest {
    pub node_id: String,
    pub endpoint: String,
    pub session_key: [u8; 32],
}

impl MeasureRequest {
    pub fn new(node_id: &str, endpoint: &str, session_key: &[u8; 32]) -> Self {
        Self {
            node_id: node_id.to_owned(),
            endpoint: endpoint.to_owned(),
            session_key: hex::encode(session_key),
        }
    }

    /// Strict parse of a request body (pure): size, JSON shape, field ranges.
    pub fn parse(body: &[u8]) -> Result<CheckedRequest, RemoteError> {
        let bad = |m: String| RemoteError::Request(m);
        if body.len() > MAX_REQUEST_LEN {
            return Err(bad(format!("body larger than {MAX_REQUEST_LEN} bytes")));
        }
        let r: Self = serde_json::from_slice(body).map_err(|e| bad(format!("not the request JSON: {e}")))?;
        if r.node_id.len() > MAX_ID_LEN {
            return Err(bad(format!("node_id longer than {MAX_ID_LEN} bytes")));
        }
        check_host_port(&r.endpoint).map_err(|m| bad(format!("endpoint: {m}")))?;
        let key = hex::decode(&r.session_key).map_err(|_| bad("session_key is not hex".into()))?;
        let session_key = <[u8; 32]>::try_from(key.as_slice())
            .map_err(|_| bad(format!("session_key must be 32 bytes, got {}", key.len())))?;
        Ok(CheckedRequest {
            node_id: r.node_id,
            endpoint: r.endpoint,
            session_key,
        })
    }
}

/// The landmark's answer to a measurement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeasureResponse {
    pub landmark: String,
    /// The signed statement (docs/locality.md, "Landmark statement"), hex.
    pub signed: String,
    /// Slowest probe, microseconds (jitter indication only; not signed).
    pub rtt_max_us: u64,
}

impl MeasureResponse {
    /// Strict parse of a response body (pure); the signed statement's bytes. Whether
    /// they say anything trustworthy is [`crate::LandmarkStatement::verify_pinned`]'s job.
    pub fn parse(body: &[u8]) -> Result<Vec<u8>, RemoteError> {
        let bad = |m: String| RemoteError::Response(m);
        if body.len() > MAX_RESPONSE_LEN {
            return Err(bad(format!("body larger than {MAX_RESPONSE_LEN} bytes")));
        }
        let r: Self = serde_json::from_slice(body).map_err(|e| bad(format!("not the answer JSON: {e}")))?;
        let signed = hex::decode(&r.signed).map_err(|_| bad("signed is not hex".into()))?;
        if signed.len() > MAX_SIGNED_LEN {
            return Err(bad(format!(
                "signed statement larger than {MAX_SIGNED_LEN} bytes"
            )));
        }
        Ok(signed)
    }
}

/// An error body: the check that failed and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub check: String,
    pub detail: String,
}

/// `HOST:PORT` with a non-zero port and a host of DNS/IP characters (IPv6 in brackets).
pub fn check_host_port(s: &str) -> Result<(), String> {
    if s.len() > MAX_ENDPOINT_LEN {
        return Err(format!("longer than {MAX_ENDPOINT_LEN} bytes"));
    }
    let (host, port) = s.rsplit_once(':').ok_or("not HOST:PORT")?;
    if !port.parse::<u16>().is_ok_and(|p| p != 0) {
        return Err(format!("port {port:?} is not 1-65535"));
    }
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'[' | b']' | b':'));
    if !host_ok {
        return Err(format!("host {host:?} is not a name or an IP address"));
    }
    Ok(())
}

/// The `HOST:PORT` of a landmark URL: `http://HOST:PORT`, optionally with a trailing
/// `/`; nothing else (no path, user info, query or https: the statement is what is
/// trusted, and it is signed).
pub fn landmark_authority(url: &str) -> Result<&str, RemoteError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| RemoteError::Request(format!("landmark URL {url:?} is not http://HOST:PORT")))?;
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    check_host_port(authority).map_err(|m| RemoteError::Request(format!("landmark URL {url:?}: {m}")))?;
    Ok(authority)
}

/// A landmark service: who it is, where, how it signs and how it measures.
#[derive(Debug)]
pub struct LandmarkService {
    pub id: String,
    pub position: LatLon,
    pub key: LandmarkKey,
    /// Challenges per measurement; the fastest answer counts.
    pub probes: u32,
    /// Subtracted from the RTT (docs/locality.md: a measured floor, default zero).
    pub processing_floor: Duration,
    /// Bound on one measurement.
    pub measure_timeout: Duration,
    /// Measurements at once; more are answered `landmark_busy`.
    pub max_measurements: usize,
    /// Connections at once; more are closed on accept.
    pub max_connections: usize,
}

impl LandmarkService {
    pub fn new(id: &str, position: LatLon, key: LandmarkKey, probes: u32) -> Result<Self, LocalityError> {
        if id.is_empty() || id.len() > MAX_ID_LEN {
            return Err(LocalityError::Format(format!(
                "landmark id must be 1-{MAX_ID_LEN} bytes"
            )));
        }
        if !position.is_valid() {
            return Err(LocalityError::Format(format!(
                "landmark position ({}, {}) is not a valid latitude/longitude",
                position.lat, position.lon
            )));
        }
        if !(1..=MAX_PROBES).contains(&probes) {
            return Err(LocalityError::Format(format!("probes must be 1-{MAX_PROBES}")));
        }
        Ok(Self {
            id: id.to_owned(),
            position,
            key,
            probes,
            processing_floor: Duration::ZERO,
            measure_timeout: Duration::from_secs(10),
            max_measurements: 16,
            max_connections: 64,
        })
    }

    /// One measurement, signed: what `POST /v1/measure` returns.
    pub async fn measure(&self, req: &CheckedRequest) -> Result<MeasureResponse, RemoteError> {
        let m = measure(
            req.endpoint.as_str(),
            &self.id,
            &req.session_key,
            self.probes,
            self.measure_timeout,
        )
        .await
        .map_err(RemoteError::Measure)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .ok()
            .and_then(|d| i64::try_from(d.as_secs()).ok())
            .unwrap_or(0);
        let signed = m
            .statement(
                &self.id,
                self.position,
                &req.node_id,
                req.session_key,
                self.processing_floor,
                now,
            )
            .sign(&self.key)
            .map_err(RemoteError::Measure)?;
        Ok(MeasureResponse {
            landmark: self.id.clone(),
            signed: hex::encode(signed),
            rtt_max_us: u64::try_from(m.rtt_max.as_micros()).unwrap_or(u64::MAX),
        })
    }
}

/// Longest wait for a request's headers, and for its body.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serve `POST /v1/measure` and `GET /v1/landmark` over HTTP/1.1 on `listener` until
/// `shutdown` completes. Connection tasks live in a `JoinSet` and end with this future.
pub async fn serve(listener: TcpListener, svc: Arc<LandmarkService>, shutdown: impl Future<Output = ()>) {
    let conn_slots = Arc::new(Semaphore::new(svc.max_connections));
    let measure_slots = Arc::new(Semaphore::new(svc.max_measurements));
    // A connection lives at most one measurement plus reading and writing it.
    let conn_lifetime = svc.measure_timeout + 2 * READ_TIMEOUT;
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => {
                let (stream, remote) = match accepted {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(slot) = Arc::clone(&conn_slots).try_acquire_owned() else {
                    tracing::debug!(%remote, "connection limit reached; closing");
                    continue;
                };
                let svc = Arc::clone(&svc);
                let measure_slots = Arc::clone(&measure_slots);
                conns.spawn(async move {
                    let _slot = slot;
                    let handler = hyper::service::service_fn(move |req| {
                        handle(req, Arc::clone(&svc), Arc::clone(&measure_slots), remote)
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(READ_TIMEOUT)
                        .max_buf_size(16 * 1024)
                        .serve_connection(TokioIo::new(stream), handler);
                    if tokio::time::timeout(conn_lifetime, conn).await.is_err() {
                        tracing::debug!(%remote, "connection lifetime exceeded; closed");
                    }
                });
            }
        }
    }
    conns.shutdown().await;
}

fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Response<Full<Bytes>> {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut r = Response::new(Full::new(Bytes::from(bytes)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

fn refusal(e: &RemoteError) -> Response<Full<Bytes>> {
    json_response(
        e.status(),
        &Refusal {
            check: e.check().into(),
            detail: e.to_string(),
        },
    )
}

async fn handle(
    req: Request<Incoming>,
    svc: Arc<LandmarkService>,
    slots: Arc<Semaphore>,
    remote: std::net::SocketAddr,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let span = tracing::info_span!(
        "landmark_request",
        %remote,
        method = %req.method(),
        path = %req.uri().path(),
        node = tracing::field::Empty,
        endpoint = tracing::field::Empty,
    );
    let r = async {
        match (req.method(), req.uri().path()) {
            (&Method::GET, INFO_PATH) => json_response(
                StatusCode::OK,
                &serde_json::json!({
                    "landmark": svc.id,
                    "lat": svc.position.lat,
                    "lon": svc.position.lon,
                    "public_key": hex::encode(svc.key.public_key()),
                }),
            ),
            (&Method::POST, MEASURE_PATH) => match measure_request(req, &svc, &slots).await {
                Ok(ok) => json_response(StatusCode::OK, &ok),
                Err(e) => {
                    tracing::info!(check = e.check(), error = %e, "measurement refused");
                    refusal(&e)
                }
            },
            (_, MEASURE_PATH | INFO_PATH) => {
                let mut r = refusal(&RemoteError::Request("method not allowed".into()));
                *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
                r
            }
            _ => {
                let mut r = refusal(&RemoteError::Request("no such path".into()));
                *r.status_mut() = StatusCode::NOT_FOUND;
                r
            }
        }
    }
    .instrument(span)
    .await;
    Ok(r)
}

async fn measure_request(
    req: Request<Incoming>,
    svc: &LandmarkService,
    slots: &Arc<Semaphore>,
) -> Result<MeasureResponse, RemoteError> {
    let Ok(_slot) = Arc::clone(slots).try_acquire_owned() else {
        return Err(RemoteError::Busy(svc.max_measurements));
    };
    let body = tokio::time::timeout(
        READ_TIMEOUT,
        Limited::new(req.into_body(), MAX_REQUEST_LEN).collect(),
    )
    .await
    .map_err(|_| RemoteError::Request("body not received in time".into()))?
    .map_err(|e| RemoteError::Request(format!("body: {e}")))?
    .to_bytes();
    let checked = MeasureRequest::parse(&body)?;
    let span = tracing::Span::current();
    span.record("node", checked.node_id.as_str());
    span.record("endpoint", checked.endpoint.as_str());
    let started = std::time::Instant::now();
    let out = svc.measure(&checked).await?;
    tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "measured");
    Ok(out)
}

/// Ask the landmark at `url` (`http://HOST:PORT`) to measure; the signed statement's
/// bytes, unverified. The whole exchange is bounded by `timeout`.
pub async fn request_measurement(
    url: &str,
    req: &MeasureRequest,
    timeout: Duration,
) -> Result<Vec<u8>, RemoteError> {
    let authority = landmark_authority(url)?;
    let body = serde_json::to_vec(req).map_err(|e| RemoteError::Request(e.to_string()))?;
    let unreachable = |reason: String| RemoteError::Unreachable {
        url: url.to_owned(),
        reason,
    };
    let exchange = async {
        let stream = TcpStream::connect(authority)
            .await
            .map_err(|e| unreachable(format!("connect: {e}")))?;
        let _ = stream.set_nodelay(true);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| unreachable(format!("HTTP handshake: {e}")))?;
        // Drives the connection; aborted when this exchange ends or times out.
        let driver = AbortOnDrop(tokio::spawn(async move {
            let _ = conn.await;
        }));
        let request = Request::builder()
            .method(Method::POST)
            .uri(MEASURE_PATH)
            .header(header::HOST, authority)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| RemoteError::Request(e.to_string()))?;
        let (status, bytes) = {
            let resp = sender
                .send_request(request)
                .await
                .map_err(|e| unreachable(format!("HTTP: {e}")))?;
            let status = resp.status();
            let bytes = Limited::new(resp.into_body(), MAX_RESPONSE_LEN)
                .collect()
                .await
                .map_err(|e| RemoteError::Response(format!("body: {e}")))?
                .to_bytes();
            (status, bytes)
        };
        drop(driver);
        if status != StatusCode::OK {
            let r: Refusal = serde_json::from_slice(&bytes)
                .map_err(|_| RemoteError::Response(format!("HTTP {status} without a refusal body")))?;
            return Err(RemoteError::Refused {
                status: status.as_u16(),
                check: r.check.chars().take(64).collect(),
                detail: r.detail.chars().take(512).collect(),
            });
        }
        MeasureResponse::parse(&bytes)
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| unreachable(format!("no answer within {timeout:?}")))?
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
