//! Custody's transport, shared by the agent and the verifier service so both speak the
//! same TLS: rustls on aws-lc-rs only (TLS 1.3 preferred, 1.2 allowed for operators'
//! proxies), HTTP/2 negotiated by ALPN with HTTP/1.1 as fallback, and mutual TLS where the
//! peer's certificate reaches every handler as a [`PeerCert`] request extension so
//! authorization is decided per route, not per listener.
#![forbid(unsafe_code)]

pub use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

#[derive(Debug, Error)]
pub enum NetError {
    #[error("PEM: {0}")]
    Pem(String),
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("client certificate verifier: {0}")]
    Verifier(String),
    #[error("request to {url}: {reason}")]
    Request { url: String, reason: String },
    #[error("request to {url} timed out after {secs} s")]
    Timeout { url: String, secs: u64 },
    #[error("response from {url} is larger than {limit} bytes")]
    TooLarge { url: String, limit: usize },
    /// This process ran out of something (file descriptors, memory, socket buffers)
    /// before the peer had a say: the caller's trouble, not the peer's.
    #[error("request to {url} failed here, not at the peer: {reason}")]
    Local { url: String, reason: String },
}

impl NetError {
    /// Whether the failure was this process's own (see [`NetError::Local`]).
    pub fn is_local(&self) -> bool {
        matches!(self, Self::Local { .. })
    }
}

/// Whether an error chain holds an OS error that says this process is out of resources.
fn local_exhaustion(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(x) = src {
        if let Some(io) = x.downcast_ref::<std::io::Error>() {
            // EMFILE, ENFILE, ENOMEM, ENOBUFS (Linux numbers; the verifier runs on Linux).
            if matches!(io.raw_os_error(), Some(24 | 23 | 12 | 105)) {
                return true;
            }
        }
        src = x.source();
    }
    false
}

/// The one crypto provider: aws-lc-rs.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A certificate chain (leaf first) and its private key.
#[derive(Debug)]
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Self {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl Identity {
    pub fn from_pem(chain_pem: &[u8], key_pem: &[u8]) -> Result<Self, NetError> {
        let chain = certs_from_pem(chain_pem)?;
        let key =
            PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| NetError::Pem(format!("private key: {e}")))?;
        Ok(Self { chain, key })
    }
}

/// Every certificate in a PEM bundle; an empty bundle is an error.
pub fn certs_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, NetError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| NetError::Pem(format!("certificate: {e}")))?;
    if certs.is_empty() {
        return Err(NetError::Pem("no certificate in PEM".into()));
    }
    Ok(certs)
}

/// A root store holding exactly the certificates of `pem` (a private CA: no system roots).
pub fn roots_from_pem(pem: &[u8]) -> Result<RootCertStore, NetError> {
    let mut roots = RootCertStore::empty();
    for c in certs_from_pem(pem)? {
        roots.add(c)?;
    }
    Ok(roots)
}

/// Whether a server asks for client certificates.
#[derive(Debug, Clone)]
pub enum ClientAuth {
    /// No client certificates.
    None,
    /// Accept connections without one (enrollment), verify any that is offered: routes
    /// that need a peer check [`PeerCert`].
    Optional(RootCertStore),
    /// Refuse the handshake without a certificate from these roots.
    Required(RootCertStore),
}

const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

pub fn server_config(id: Identity, auth: ClientAuth) -> Result<Arc<ServerConfig>, NetError> {
    server_config_with(ServerCert::Static(id), auth)
}

/// A server's certificate: fixed, or replaced in place on renewal.
#[derive(Debug)]
pub enum ServerCert {
    Static(Identity),
    Reloadable(Arc<ReloadableIdentity>),
}

pub fn server_config_with(id: ServerCert, auth: ClientAuth) -> Result<Arc<ServerConfig>, NetError> {
    let provider = provider();
    let builder =
        ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
    let builder = match auth {
        ClientAuth::None => builder.with_no_client_auth(),
        ClientAuth::Optional(roots) | ClientAuth::Required(roots) if roots.is_empty() => {
            return Err(NetError::Verifier("client CA store is empty".into()));
        }
        ClientAuth::Optional(roots) => builder.with_client_cert_verifier(
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| NetError::Verifier(e.to_string()))?,
        ),
        ClientAuth::Required(roots) => builder.with_client_cert_verifier(
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| NetError::Verifier(e.to_string()))?,
        ),
    };
    let mut cfg = match id {
        ServerCert::Static(id) => builder.with_single_cert(id.chain, id.key)?,
        ServerCert::Reloadable(r) => builder.with_cert_resolver(r),
    };
    cfg.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(cfg))
}

/// The certificate a client presents, if any.
#[derive(Debug, Clone)]
pub enum ClientCert {
    None,
    Static(Identity),
    /// Replaced in place when the node's certificate is renewed.
    Reloadable(Arc<ReloadableIdentity>),
}

impl From<Option<Identity>> for ClientCert {
    fn from(id: Option<Identity>) -> Self {
        id.map_or(Self::None, Self::Static)
    }
}

fn with_client_cert(
    builder: rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert>,
    id: ClientCert,
) -> Result<Arc<ClientConfig>, NetError> {
    // ALPN is left empty: the HTTPS connector fills it (h2, http/1.1).
    let cfg = match id {
        ClientCert::Static(id) => builder.with_client_auth_cert(id.chain, id.key)?,
        ClientCert::Reloadable(r) => builder.with_client_cert_resolver(r),
        ClientCert::None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(cfg))
}

/// A client that checks the server's chain and host name only. For peers whose role is
/// checked after the handshake (the mover) and for servers outside Custody's CA
/// (webhooks); a client calling the verifier or an agent uses [`client_config_for_role`].
pub fn client_config(roots: RootCertStore, id: impl Into<ClientCert>) -> Result<Arc<ClientConfig>, NetError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    with_client_cert(builder, id.into())
}

/// A certificate and key that can be replaced while servers and clients hold them: a
/// renewed node certificate takes effect on the next handshake.
#[derive(Debug)]
pub struct ReloadableIdentity(std::sync::RwLock<Arc<rustls::sign::CertifiedKey>>);

impl ReloadableIdentity {
    fn certified(id: Identity) -> Result<Arc<rustls::sign::CertifiedKey>, NetError> {
        let key = provider().key_provider.load_private_key(id.key)?;
        Ok(Arc::new(rustls::sign::CertifiedKey::new(id.chain, key)))
    }

    pub fn new(id: Identity) -> Result<Arc<Self>, NetError> {
        Ok(Arc::new(Self(std::sync::RwLock::new(Self::certified(id)?))))
    }

    /// Use `id` from the next handshake on.
    pub fn replace(&self, id: Identity) -> Result<(), NetError> {
        let c = Self::certified(id)?;
        *self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner) = c;
        Ok(())
    }

    fn current(&self) -> Arc<rustls::sign::CertifiedKey> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl rustls::server::ResolvesServerCert for ReloadableIdentity {
    fn resolve(&self, _: rustls::server::ClientHello<'_>) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.current())
    }
}

impl rustls::client::ResolvesClientCert for ReloadableIdentity {
    fn resolve(&self, _: &[&[u8]], _: &[rustls::SignatureScheme]) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The role a server must hold: the subject CN of its certificate, as Custody's CA names
/// roles (`verifier`, `node:<id>`). Host-name checks alone let any certificate of the CA
/// that names the dialled host pass, and the CA certifies node-chosen hosts.
#[derive(Debug)]
struct RoleVerifier {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    role: String,
}

/// The subject common name of a certificate, if it parses and has one.
pub fn subject_cn(der: &[u8]) -> Option<String> {
    let (_, c) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = c.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}

/// The server presented a certificate of the CA for another role.
#[derive(Error)]
#[error("the server is `{got}`, not the `{want}` this client called")]
pub struct WrongPeerRole {
    pub want: String,
    pub got: String,
}

// rustls shows the cause with `Debug`: make that the sentence.
impl std::fmt::Debug for WrongPeerRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl rustls::client::danger::ServerCertVerifier for RoleVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &rustls_pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let ok = self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)?;
        let got = subject_cn(end_entity).unwrap_or_default();
        if got != self.role {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Other(rustls::OtherError(Arc::new(WrongPeerRole {
                    want: self.role.clone(),
                    got,
                }))),
            ));
        }
        Ok(ok)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A client that trusts `roots` and, beyond the host name, accepts only a server whose
/// certificate names `role` as its subject CN (`verifier`, `node:<id>`).
pub fn client_config_for_role(
    roots: RootCertStore,
    id: impl Into<ClientCert>,
    role: &str,
) -> Result<Arc<ClientConfig>, NetError> {
    let id: ClientCert = id.into();
    let provider = provider();
    let inner =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| NetError::Verifier(e.to_string()))?;
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(RoleVerifier {
            inner,
            role: role.to_owned(),
        }));
    with_client_cert(builder, id)
}

/// The verified client certificate of the connection a request came on, if any, with its
/// subject CN read once per connection (handlers and the request span both ask for it).
#[derive(Debug, Clone, Default)]
pub struct PeerCert {
    cert: Option<Arc<CertificateDer<'static>>>,
    cn: Option<Arc<str>>,
}

impl PeerCert {
    pub fn new(cert: Option<CertificateDer<'static>>) -> Self {
        let cn = cert.as_ref().and_then(|der| subject_cn(der)).map(Arc::from);
        Self {
            cert: cert.map(Arc::new),
            cn,
        }
    }

    pub fn certificate(&self) -> Option<&CertificateDer<'static>> {
        self.cert.as_deref()
    }

    /// The subject's common name (Custody's CA names roles there: `node:<id>`,
    /// `verifier`, `operator`). Only meaningful because the TLS layer verified the chain.
    pub fn common_name(&self) -> Option<String> {
        self.cn.as_deref().map(str::to_owned)
    }
}

/// What one listener allows each peer, so that connections cannot be held or filled for
/// free: anyone who can reach the port can open them, before any certificate is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeLimits {
    /// Connections served at once; more are closed as they are accepted.
    pub max_connections: usize,
    /// Time for the whole TLS handshake.
    pub handshake: Duration,
    /// Time for an HTTP/1.1 request's headers (trickled headers are cut off).
    pub header_read: Duration,
    /// Time for a request's body, from the moment its headers arrived.
    pub body_read: Duration,
    /// A connection with no request in flight for this long is closed.
    pub idle: Duration,
    /// HTTP/2 pings at this interval; a peer that does not answer within it is dropped.
    pub keep_alive: Duration,
    /// Concurrent HTTP/2 streams per connection.
    pub max_streams: u32,
    /// HTTP/2 receive window per stream, bytes: what a peer may send before the verifier
    /// has read any of it. A body refused on its headers (413) still arrives, up to this
    /// much, and is decrypted and thrown away; evidence is a few KiB to a few hundred.
    pub stream_window: u32,
}

impl Default for ServeLimits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            handshake: Duration::from_secs(10),
            header_read: Duration::from_secs(10),
            body_read: Duration::from_secs(30),
            idle: Duration::from_secs(120),
            keep_alive: Duration::from_secs(30),
            max_streams: 64,
            stream_window: 64 * 1024,
        }
    }
}

/// The soft limit on this process's open files, from /proc (Linux), if readable.
pub fn open_files_limit() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Serve `router` over TLS on `listener` until `shutdown` completes, with the default
/// [`ServeLimits`]. Each connection's verified client certificate is attached to its
/// requests as [`PeerCert`].
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send,
) {
    serve_with(listener, tls, router, ServeLimits::default(), shutdown).await;
}

/// A request body that must arrive by a deadline: a client trickling its body holds a
/// connection and a task only that long.
struct DeadlineBody {
    inner: hyper::body::Incoming,
    deadline: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl hyper::body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        use std::task::Poll;
        if let Poll::Ready(r) = std::pin::Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(r.map(|f| f.map_err(Into::into)));
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err("request body not received in time".into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Requests in flight on one connection and when the last one ended.
#[derive(Debug)]
struct Activity {
    in_flight: std::sync::atomic::AtomicUsize,
    last: std::sync::Mutex<tokio::time::Instant>,
}

impl Activity {
    fn begin(self: &Arc<Self>) -> ActivityGuard {
        self.in_flight.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        ActivityGuard(self.clone())
    }

    fn idle_for(&self) -> Option<Duration> {
        if self.in_flight.load(std::sync::atomic::Ordering::SeqCst) > 0 {
            return None;
        }
        Some(self.last.lock().unwrap_or_else(|p| p.into_inner()).elapsed())
    }
}

struct ActivityGuard(Arc<Activity>);

impl Drop for ActivityGuard {
    fn drop(&mut self) {
        *self.0.last.lock().unwrap_or_else(|p| p.into_inner()) = tokio::time::Instant::now();
        self.0.in_flight.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// [`serve`] with explicit limits.
pub async fn serve_with(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    router: axum::Router,
    limits: ServeLimits,
    shutdown: impl Future<Output = ()> + Send,
) {
    let acceptor = TlsAcceptor::from(tls);
    let places = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let limits = Arc::new(limits);
    tokio::pin!(shutdown);
    loop {
        let (tcp, remote) = tokio::select! {
            _ = &mut shutdown => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(place) = places.clone().try_acquire_owned() else {
            // Full: closed at once (dropped), before any TLS work is spent on it.
            tracing::debug!(%remote, limit = limits.max_connections, "connection limit reached; closed");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let router = router.clone();
        let limits = limits.clone();
        tokio::spawn(async move {
            let _place = place;
            let tls = match tokio::time::timeout(limits.handshake, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%remote, error = %e, "TLS handshake refused");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%remote, "TLS handshake timed out");
                    return;
                }
            };
            let peer = PeerCert::new(
                tls.get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(|c| c.clone().into_owned()),
            );
            let activity = Arc::new(Activity {
                in_flight: std::sync::atomic::AtomicUsize::new(0),
                last: std::sync::Mutex::new(tokio::time::Instant::now()),
            });
            let body_read = limits.body_read;
            let act = activity.clone();
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let guard = act.begin();
                let (mut parts, inner) = req.into_parts();
                parts.extensions.insert(peer.clone());
                parts.extensions.insert(RemoteAddr(remote));
                let body = DeadlineBody {
                    inner,
                    deadline: Box::pin(tokio::time::sleep(body_read)),
                };
                let req = Request::from_parts(parts, axum::body::Body::new(body));
                let router = router.clone();
                async move {
                    let r = router.oneshot(req).await;
                    drop(guard);
                    r
                }
            });
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits.header_read);
            builder
                .http2()
                .timer(hyper_util::rt::TokioTimer::new())
                .keep_alive_interval(Some(limits.keep_alive))
                .keep_alive_timeout(limits.keep_alive)
                .max_concurrent_streams(limits.max_streams)
                .initial_stream_window_size(limits.stream_window)
                .initial_connection_window_size(limits.stream_window.max(1 << 20));
            let conn = builder.serve_connection(TokioIo::new(tls), svc);
            tokio::pin!(conn);
            let tick = (limits.idle / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
            let mut closing = false;
            loop {
                tokio::select! {
                    r = conn.as_mut() => {
                        if let Err(e) = r {
                            tracing::debug!(%remote, error = %e, "connection ended with an error");
                        }
                        return;
                    }
                    _ = tokio::time::sleep(tick), if !closing => {
                        if activity.idle_for().is_some_and(|d| d >= limits.idle) {
                            tracing::debug!(%remote, "idle connection closed");
                            conn.as_mut().graceful_shutdown();
                            closing = true;
                        }
                    }
                }
            }
        });
    }
}

/// The TCP peer of a request.
#[derive(Debug, Clone, Copy)]
pub struct RemoteAddr(pub std::net::SocketAddr);

type Connector = hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>;

/// An HTTPS-only client (HTTP/2 where the server offers it) with bounded responses.
#[derive(Debug, Clone)]
pub struct HttpsClient {
    inner: hyper_util::client::legacy::Client<Connector, Full<Bytes>>,
    timeout: Duration,
    max_response: usize,
}

/// A response: status, content type and body.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: StatusCode,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

impl HttpsClient {
    pub fn new(tls: Arc<ClientConfig>, timeout: Duration, max_response: usize) -> Self {
        let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(timeout));
        let conn = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*tls).clone())
            .https_only()
            .enable_all_versions()
            .wrap_connector(http);
        let inner = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(conn);
        Self {
            inner,
            timeout,
            max_response,
        }
    }

    pub async fn request(
        &self,
        method: Method,
        url: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Result<Response, NetError> {
        self.request_bytes(method, url, content_type, Bytes::from(body))
            .await
    }

    /// `request` with a shared body: cloning a `Bytes` copies no data, so a caller that
    /// sends the same large body many times (the attack bench) does not copy it each time.
    pub async fn request_bytes(
        &self,
        method: Method,
        url: &str,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<Response, NetError> {
        let err = |reason: String| NetError::Request {
            url: url.to_owned(),
            reason,
        };
        let mut req = Request::builder().method(method).uri(url);
        if let Some(ct) = content_type {
            req = req
                .header(http::header::CONTENT_TYPE, ct)
                .header(http::header::ACCEPT, ct);
        }
        let req = req.body(Full::new(body)).map_err(|e| err(e.to_string()))?;
        let fut = async {
            let resp = self.inner.request(req).await.map_err(|e| {
                // The source chain carries the TLS alert or connect error worth showing.
                let mut s = e.to_string();
                let mut src = std::error::Error::source(&e);
                while let Some(x) = src {
                    s.push_str(": ");
                    s.push_str(&x.to_string());
                    src = x.source();
                }
                if local_exhaustion(&e) {
                    return NetError::Local {
                        url: url.to_owned(),
                        reason: s,
                    };
                }
                err(s)
            })?;
            let status = resp.status();
            let content_type = resp
                .headers()
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = Limited::new(resp.into_body(), self.max_response)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        NetError::TooLarge {
                            url: url.to_owned(),
                            limit: self.max_response,
                        }
                    } else {
                        err(e.to_string())
                    }
                })?
                .to_bytes()
                .to_vec();
            Ok(Response {
                status,
                content_type,
                body,
            })
        };
        tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| NetError::Timeout {
                url: url.to_owned(),
                secs: self.timeout.as_secs(),
            })?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;

    struct Ca {
        params: rcgen::CertificateParams,
        key: rcgen::KeyPair,
        cert: rcgen::Certificate,
    }

    fn ca() -> Ca {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "test ca");
        let cert = params.clone().self_signed(&key).unwrap();
        Ca { params, key, cert }
    }

    fn issue(ca: &Ca, cn: &str) -> Identity {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        let issuer = rcgen::Issuer::from_params(&ca.params, &ca.key);
        let cert = p.signed_by(&key, &issuer).unwrap();
        Identity::from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes()).unwrap()
    }

    async fn who(axum::Extension(p): axum::Extension<PeerCert>) -> String {
        p.common_name().unwrap_or_else(|| "anonymous".into())
    }

    #[tokio::test]
    async fn mtls_peer_reaches_handler_and_strangers_are_refused() {
        let ca1 = ca();
        let stranger_ca = ca();
        let roots = roots_from_pem(ca1.cert.pem().as_bytes()).unwrap();
        let server = server_config(issue(&ca1, "server"), ClientAuth::Optional(roots.clone())).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let router = axum::Router::new().route("/who", get(who));
        let task = tokio::spawn(serve(listener, server, router, async {
            let _ = rx.await;
        }));
        let url = format!("https://{addr}/who");
        let t = Duration::from_secs(5);

        let c = HttpsClient::new(
            client_config(roots.clone(), Some(issue(&ca1, "node:a"))).unwrap(),
            t,
            1024,
        );
        let r = c.request(Method::GET, &url, None, vec![]).await.unwrap();
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.body, b"node:a");

        // A client that called the role `server` gets it; one that called `verifier`
        // refuses the same certificate before sending anything.
        let right = HttpsClient::new(
            client_config_for_role(roots.clone(), None, "server").unwrap(),
            t,
            1024,
        );
        assert_eq!(
            right.request(Method::GET, &url, None, vec![]).await.unwrap().body,
            b"anonymous"
        );
        let wrong = HttpsClient::new(
            client_config_for_role(roots.clone(), None, "verifier").unwrap(),
            t,
            1024,
        );
        let e = wrong.request(Method::GET, &url, None, vec![]).await.unwrap_err();
        assert!(e.to_string().contains("not the `verifier`"), "{e}");

        let anon = HttpsClient::new(client_config(roots.clone(), None).unwrap(), t, 1024);
        let r = anon.request(Method::GET, &url, None, vec![]).await.unwrap();
        assert_eq!(r.body, b"anonymous");

        // A client certificate from another CA fails the handshake.
        let bad = HttpsClient::new(
            client_config(roots, Some(issue(&stranger_ca, "node:x"))).unwrap(),
            t,
            1024,
        );
        assert!(bad.request(Method::GET, &url, None, vec![]).await.is_err());

        // A client that does not trust the server's CA refuses it.
        let other_roots = roots_from_pem(stranger_ca.cert.pem().as_bytes()).unwrap();
        let c2 = HttpsClient::new(client_config(other_roots, None).unwrap(), t, 1024);
        let e = c2.request(Method::GET, &url, None, vec![]).await.unwrap_err();
        assert!(
            e.to_string().contains("UnknownIssuer") || e.to_string().contains("certificate"),
            "{e}"
        );

        // Oversized responses are cut off with an error, not buffered.
        let tiny = HttpsClient::new(
            client_config(
                roots_from_pem(ca1.cert.pem().as_bytes()).unwrap(),
                Some(issue(&ca1, "node:long-name")),
            )
            .unwrap(),
            t,
            4,
        );
        assert!(matches!(
            tiny.request(Method::GET, &url, None, vec![]).await,
            Err(NetError::TooLarge { .. })
        ));
        let _ = tx.send(());
        task.await.unwrap();
    }

    #[test]
    fn pem_errors() {
        assert!(certs_from_pem(b"").is_err());
        assert!(Identity::from_pem(b"junk", b"junk").is_err());
        assert!(server_config(
            Identity {
                chain: vec![],
                key: PrivateKeyDer::from_pem_slice(
                    rcgen::KeyPair::generate().unwrap().serialize_pem().as_bytes()
                )
                .unwrap()
            },
            ClientAuth::Optional(RootCertStore::empty())
        )
        .is_err());
    }
}
