//! The round endpoint the verifier calls, and the move and deny-list routes.

use super::*;

/// Unattested platform facts every bundle carries.
pub fn platform_facts(name: &str) -> BTreeMap<String, String> {
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    BTreeMap::from([
        ("hostname".to_owned(), hostname),
        ("node_name".to_owned(), name.to_owned()),
        ("agent_version".to_owned(), env!("CARGO_PKG_VERSION").to_owned()),
    ])
}

/// Why a round produced no bundle.
#[derive(Debug, Error)]
pub enum RoundFailure {
    #[error(transparent)]
    Round(#[from] RoundError),
    #[error("the round took longer than {0:?}")]
    Timeout(Duration),
    #[error("round task: {0}")]
    Task(String),
    #[error("encode the bundle: {0}")]
    Encode(String),
}

impl RoundFailure {
    /// The refusal's check: `collect.<kind>` for a collector, else what failed.
    pub fn check(&self) -> String {
        match self {
            Self::Round(RoundError::Collect(CollectError::Failed { kind, .. }))
            | Self::Round(RoundError::Collect(CollectError::NotAvailable { kind, .. }))
            | Self::Round(RoundError::Duplicate(kind)) => format!("collect.{kind}"),
            Self::Timeout(_) => "round_timeout".into(),
            Self::Task(_) => "round_task".into(),
            Self::Encode(_) => "encode".into(),
        }
    }
}

/// Everything a round needs; one round at a time (a TPM serves one command at a time,
/// and swtpm one client).
pub struct Rounds {
    pub(super) session: Session,
    collectors: Vec<SharedCollector>,
    platform: BTreeMap<String, String>,
    timeout: Duration,
    one_at_a_time: Mutex<()>,
}

impl fmt::Debug for Rounds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kinds: Vec<&str> = self.collectors.iter().map(|c| c.kind()).collect();
        f.debug_struct("Rounds")
            .field("session", &self.session)
            .field("collectors", &kinds)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Rounds {
    pub fn new(
        session: Session,
        collectors: Vec<SharedCollector>,
        platform: BTreeMap<String, String>,
        timeout: Duration,
    ) -> Self {
        Self {
            session,
            collectors,
            platform,
            timeout,
            one_at_a_time: Mutex::new(()),
        }
    }

    pub fn session(&self) -> &Session {
        &self.session
    }

    /// One round for `nonce` on a blocking thread, bounded by the round timeout. A round
    /// that times out still holds the lock until its collectors return.
    pub async fn round(self: &Arc<Self>, nonce: Nonce) -> Result<EvidenceBundle, RoundFailure> {
        let me = Arc::clone(self);
        let task = tokio::task::spawn_blocking(move || {
            let _one = me.one_at_a_time.lock().unwrap_or_else(|p| p.into_inner());
            let refs: Vec<&dyn Collector> = me
                .collectors
                .iter()
                .map(|c| c.as_ref() as &dyn Collector)
                .collect();
            collect_round(nonce, &me.session, &refs, me.platform.clone())
        });
        let round = tokio::time::timeout(self.timeout, task)
            .await
            .map_err(|_| RoundFailure::Timeout(self.timeout))?
            .map_err(|e| RoundFailure::Task(e.to_string()))??;
        let mut bundle = round.bundle;
        for (kind, reason) in round.unavailable {
            bundle.platform.insert(format!("unavailable.{kind}"), reason);
        }
        Ok(bundle)
    }
}

pub(super) fn cbor_response(status: StatusCode, body: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, CBOR)], body).into_response()
}

pub(super) fn refuse(status: StatusCode, check: &str, detail: impl Into<String>) -> Response {
    let r = Refusal {
        check: check.to_owned(),
        detail: detail.into(),
    };
    match api::to_cbor("Refusal", &r) {
        Ok(b) => cbor_response(status, b),
        Err(_) => status.into_response(),
    }
}

pub(super) fn is_cbor(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(CBOR))
}

/// The CBOR body of a request only the verifier may make, or the refusal to send.
pub(super) async fn verifier_request<T: DeserializeOwned>(
    peer: Option<&str>,
    req: Request,
    what: &'static str,
) -> Result<T, Response> {
    if peer != Some(VERIFIER_CN) {
        tracing::warn!(what, "refused: peer is not the verifier");
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "peer_role",
            format!("only a `{VERIFIER_CN}` certificate may send a {what}"),
        ));
    }
    if !is_cbor(req.headers()) {
        return Err(refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content_type",
            format!("the body must be {CBOR}"),
        ));
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = || {
        refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("a {what} is at most {MAX_MESSAGE_LEN} bytes"),
        )
    };
    if declared.is_some_and(|n| n > MAX_MESSAGE_LEN as u64) {
        return Err(too_large());
    }
    let body = match axum::body::to_bytes(req.into_body(), MAX_MESSAGE_LEN).await {
        Ok(b) => b,
        Err(e) => {
            let e = e.into_inner();
            if e.is::<http_body_util::LengthLimitError>() {
                return Err(too_large());
            }
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "request",
                format!("read the body: {e}"),
            ));
        }
    };
    api::from_cbor(what, &body).map_err(|e| refuse(StatusCode::BAD_REQUEST, "request", e.to_string()))
}

pub(super) async fn round_handler(
    State((rounds, mover)): State<(Arc<Rounds>, Option<Arc<Mover>>)>,
    req: Request,
) -> Response {
    let peer = req.extensions().get::<PeerCert>().and_then(PeerCert::common_name);
    let remote = req
        .extensions()
        .get::<RemoteAddr>()
        .map(|r| r.0.to_string())
        .unwrap_or_default();
    let span = tracing::info_span!("round", peer = peer.as_deref().unwrap_or("-"), %remote);
    async move {
        let rr: RoundRequest = match verifier_request(peer.as_deref(), req, "RoundRequest").await {
            Ok(r) => r,
            Err(refusal) => return refusal,
        };
        // The deny list rides along; a bad one is logged and never costs the round.
        if let (Some(list), Some(m)) = (&rr.deny, &mover) {
            match m.deny().offer(list, crate::mover::now()) {
                Ok(true) => tracing::info!(issued_at_ms = m.deny().issued_at_ms(), "deny list updated"),
                Ok(false) => {}
                Err(e) => tracing::warn!(check = e.check(), error = %e, "deny list refused"),
            }
        }
        match rounds.round(rr.nonce).await.and_then(|b| {
            b.to_cbor()
                .map(|c| (c, b))
                .map_err(|e| RoundFailure::Encode(e.to_string()))
        }) {
            Ok((cbor, b)) => {
                let missing: Vec<&str> = b
                    .platform
                    .keys()
                    .filter_map(|k| k.strip_prefix("unavailable."))
                    .collect();
                tracing::info!(bytes = cbor.len(), unavailable = ?missing, "round served");
                cbor_response(StatusCode::OK, cbor)
            }
            Err(e) => {
                tracing::error!(error = %e, "round failed");
                refuse(StatusCode::INTERNAL_SERVER_ERROR, &e.check(), e.to_string())
            }
        }
    }
    .instrument(span)
    .await
}

pub(super) fn peer_of(req: &Request) -> Option<String> {
    req.extensions().get::<PeerCert>().and_then(PeerCert::common_name)
}

pub(super) fn move_refusal(e: &custody_mover::MoverError) -> Response {
    use custody_types::FailedCheck;
    let status = match e {
        custody_mover::MoverError::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        custody_mover::MoverError::TransferActive(_) => StatusCode::CONFLICT,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    };
    refuse(status, e.check(), e.to_string())
}

pub(super) async fn move_prepare(State(mover): State<Arc<Mover>>, req: Request) -> Response {
    let peer = peer_of(&req);
    let p: MovePrepare = match verifier_request(peer.as_deref(), req, "MovePrepare").await {
        Ok(r) => r,
        Err(refusal) => return refusal,
    };
    let span = tracing::info_span!("move_prepare", checkpoint = %p.checkpoint);
    move_blocking(StatusCode::OK, "MovePrepared", move || {
        mover.prepare(&p.checkpoint)
    })
    .instrument(span)
    .await
}

/// Mover work on a blocking thread (it reads and hashes checkpoints), answered as CBOR
/// with `ok`, or the refusal naming the check.
pub(super) async fn move_blocking<T: serde::Serialize + Send + 'static>(
    ok: StatusCode,
    what: &'static str,
    work: impl FnOnce() -> Result<T, custody_mover::MoverError> + Send + 'static,
) -> Response {
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(v)) => match api::to_cbor(what, &v) {
            Ok(b) => cbor_response(ok, b),
            Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, "encode", e.to_string()),
        },
        Ok(Err(e)) => move_refusal(&e),
        Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, "task", e.to_string()),
    }
}

pub(super) async fn move_send(State(mover): State<Arc<Mover>>, req: Request) -> Response {
    let peer = peer_of(&req);
    let s: MoveSend = match verifier_request(peer.as_deref(), req, "MoveSend").await {
        Ok(r) => r,
        Err(refusal) => return refusal,
    };
    // Checks the ticket and hashes the checkpoint before answering.
    move_blocking(StatusCode::ACCEPTED, "MoveStarted", move || {
        mover.start_send(s.ticket, &s.checkpoint, s.to, s.chunk_size, s.release)
    })
    .await
}

pub(super) async fn move_export(State(mover): State<Arc<Mover>>, req: Request) -> Response {
    let peer = peer_of(&req);
    let s: MoveExport = match verifier_request(peer.as_deref(), req, "MoveExport").await {
        Ok(r) => r,
        Err(refusal) => return refusal,
    };
    move_blocking(StatusCode::ACCEPTED, "MoveStarted", move || {
        mover.start_export(s.ticket, &s.checkpoint, s.chunk_size)
    })
    .await
}

/// `PUT /v1/deny`: the verifier's deny list, taken if it verifies and is newer.
pub(super) async fn deny_update(State(mover): State<Arc<Mover>>, req: Request) -> Response {
    let peer = peer_of(&req);
    let u: api::DenyListUpdate = match verifier_request(peer.as_deref(), req, "DenyListUpdate").await {
        Ok(r) => r,
        Err(refusal) => return refusal,
    };
    let deny = mover.deny();
    match deny.offer(&u.list, crate::mover::now()) {
        Ok(replaced) => {
            let held = api::DenyListHeld {
                replaced,
                issued_at_ms: deny.issued_at_ms(),
            };
            if replaced {
                tracing::info!(issued_at_ms = held.issued_at_ms, "deny list updated");
            }
            match api::to_cbor("DenyListHeld", &held) {
                Ok(b) => cbor_response(StatusCode::OK, b),
                Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, "encode", e.to_string()),
            }
        }
        Err(e) => {
            tracing::warn!(check = e.check(), error = %e, "deny list refused");
            refuse(StatusCode::BAD_REQUEST, e.check(), e.to_string())
        }
    }
}

pub(super) async fn move_status(
    State(mover): State<Arc<Mover>>,
    axum::extract::Path(id): axum::extract::Path<String>,
    req: Request,
) -> Response {
    if peer_of(&req).as_deref() != Some(VERIFIER_CN) {
        return refuse(
            StatusCode::FORBIDDEN,
            "peer_role",
            "only the verifier asks for transfers",
        );
    }
    match mover.status(&id) {
        Some(s) => match api::to_cbor("MoveStatus", &s) {
            Ok(b) => cbor_response(StatusCode::OK, b),
            Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, "encode", e.to_string()),
        },
        None => refuse(StatusCode::NOT_FOUND, "no_transfer", format!("no transfer {id}")),
    }
}

/// The round endpoint's routes: `POST /v1/round`, `GET /healthz`, and with a mover
/// `POST /v1/move/prepare`, `POST /v1/move/send`, `GET /v1/move/{ticket id}`.
pub fn router(rounds: Arc<Rounds>, mover: Option<Arc<Mover>>) -> axum::Router {
    let r = axum::Router::new()
        .route(ROUND_PATH, post(round_handler))
        .route(HEALTH_PATH, get(|| async { "ok" }))
        .with_state((rounds, mover.clone()));
    match mover {
        Some(m) => r.merge(
            axum::Router::new()
                .route(MOVE_PREPARE_PATH, post(move_prepare))
                .route(MOVE_SEND_PATH, post(move_send))
                .route(MOVE_EXPORT_PATH, post(move_export))
                .route(MOVE_STATUS_PATH, get(move_status))
                .route(DENY_PATH, axum::routing::put(deny_update))
                .with_state(m),
        ),
        None => r,
    }
}

/// Serve rounds for an already-enrolled node on `listener` until `shutdown`.
pub async fn serve_rounds(
    listener: TcpListener,
    identity: &NodeIdentity,
    rounds: Arc<Rounds>,
    mover: Option<Arc<Mover>>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), DaemonError> {
    let tls = identity.server_config()?;
    if let Ok(a) = listener.local_addr() {
        tracing::info!(listen = %a, node_id = %identity.node_id, "serving rounds");
    }
    custody_net::serve(listener, tls, router(rounds, mover), shutdown).await;
    Ok(())
}
