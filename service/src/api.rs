//! The HTTP API (HTTP/2 over rustls; HTTP/1.1 for clients without ALPN h2).
//!
//! Authorization is by the role in the mTLS client certificate's CN (issued by this
//! verifier's CA): enrollment needs none; `node:<id>` may push its own evidence;
//! `operator` reads and drives everything else. `/healthz`, `/metrics`, `/openapi.json`
//! and `/v1/keys` (public keys) are open. Agents speak CBOR, people JSON.

// Handlers return axum `Response`s as their error type: large, but built once per
// refused request, and it keeps each refusal next to the check that made it.
#![allow(clippy::result_large_err)]

use crate::round::RoundSummary;
use crate::store::{NodeRecord, NodeState, Reference};
use crate::{now, Service, ServiceError};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Extension, Json, Router};
use base64::Engine as _;
use custody_formats::api::{self as wire, Refusal};
use custody_net::PeerCert;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The OpenAPI document served at `/openapi.json`.
pub const OPENAPI: &str = include_str!("../openapi.json");

/// Body limit of the enrollment routes (anyone may call them).
pub const SMALL_BODY: usize = 256 * 1024;

/// Every route, for the router and for the test that the OpenAPI document lists them all.
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/healthz"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
    ("get", "/v1/keys"),
    ("post", "/v1/enroll"),
    ("post", "/v1/enroll/activate"),
    ("post", "/v1/renew"),
    ("post", "/v1/nonce"),
    ("post", "/v1/evidence"),
    ("get", "/v1/nodes"),
    ("get", "/v1/nodes/{node}"),
    ("delete", "/v1/nodes/{node}"),
    ("post", "/v1/nodes/{node}/attest"),
    ("get", "/v1/nodes/{node}/result"),
    ("get", "/v1/events"),
    ("put", "/v1/groups/{group}/reference"),
    ("get", "/v1/groups/{group}/reference"),
    ("delete", "/v1/groups/{group}/reference"),
    ("post", "/v1/groups/{group}/reference/approve"),
    ("post", "/v1/groups/{group}/reference/learn"),
    ("get", "/v1/references"),
    ("put", "/v1/nodes/{node}/group"),
    ("get", "/v1/audit/checkpoint"),
    ("get", "/v1/registry"),
    ("put", "/v1/registry"),
    ("get", "/v1/nodes/{node}/input"),
    ("post", "/v1/migrations"),
    ("get", "/v1/migrations"),
    ("get", "/v1/migrations/{id}"),
];

pub fn router(svc: Arc<Service>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .route(
            "/openapi.json",
            get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI) }),
        )
        .route("/v1/keys", get(keys))
        // Unauthenticated and small: their messages are a few KiB, so a client without a
        // certificate cannot make the verifier read 16 MiB per request.
        .route(
            "/v1/enroll",
            post(enroll).layer(DefaultBodyLimit::max(SMALL_BODY)),
        )
        .route(
            "/v1/enroll/activate",
            post(activate).layer(DefaultBodyLimit::max(SMALL_BODY)),
        )
        .route("/v1/renew", post(renew))
        .route("/v1/nonce", post(push_nonce))
        .route("/v1/evidence", post(push_evidence))
        .route("/v1/nodes", get(nodes))
        .route("/v1/nodes/{node}", get(node).delete(remove_node))
        .route("/v1/nodes/{node}/attest", post(attest))
        .route("/v1/nodes/{node}/result", get(result))
        .route("/v1/events", get(events))
        .route("/v1/references", get(list_references))
        .route(
            "/v1/groups/{group}/reference",
            put(set_reference).get(get_reference).delete(remove_reference),
        )
        .route("/v1/groups/{group}/reference/approve", post(approve_reference))
        .route("/v1/groups/{group}/reference/learn", post(learn_reference))
        .route("/v1/nodes/{node}/group", put(set_group))
        .route("/v1/audit/checkpoint", get(checkpoint))
        .route("/v1/registry", get(registry).put(put_registry))
        .route("/v1/nodes/{node}/input", get(node_input))
        .route("/v1/migrations", post(start_migration).get(migrations))
        .route("/v1/migrations/{id}", get(migration))
        .layer(DefaultBodyLimit::max(custody_formats::bundle::MAX_BUNDLE_LEN))
        .layer(axum::middleware::from_fn(body_allowance))
        .layer(axum::middleware::from_fn(trace))
        .with_state(svc)
}

/// How many body bytes a request may send: `SMALL_BODY` to the enrollment routes and to
/// every caller without a client certificate (the API's anonymous callers only enroll and
/// read), `MAX_BUNDLE_LEN` to nodes and operators elsewhere. Enforced before the handler
/// runs, so a route that checks the caller's role first still never reads an anonymous
/// 16 MiB body: a body that declares more (Content-Length, or HTTP/2's) is refused on its
/// headers, `body_size`, with none of it read; one that does not declare its size is cut
/// off at the allowance.
async fn body_allowance(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    use axum::body::HttpBody as _;
    let anonymous = req
        .extensions()
        .get::<PeerCert>()
        .and_then(PeerCert::certificate)
        .is_none();
    let enrollment = matches!(req.uri().path(), "/v1/enroll" | "/v1/enroll/activate");
    let allowance = if anonymous || enrollment {
        SMALL_BODY
    } else {
        custody_formats::bundle::MAX_BUNDLE_LEN
    };
    let declared = req.body().size_hint().lower();
    if declared > allowance as u64 {
        let who = if enrollment {
            "this route"
        } else {
            "a caller without a client certificate"
        };
        return refusal(
            StatusCode::PAYLOAD_TOO_LARGE,
            &Refusal {
                check: "body_size".into(),
                detail: format!("the body declares {declared} bytes; {who} may send at most {allowance}"),
            },
        );
    }
    let req = req.map(|b| axum::body::Body::new(http_body_util::Limited::new(b, allowance)));
    next.run(req).await
}

/// One span per request, with method, path, peer role and outcome.
async fn trace(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    use tracing::Instrument;
    let role = req
        .extensions()
        .get::<PeerCert>()
        .and_then(PeerCert::common_name)
        .unwrap_or_else(|| "anonymous".into());
    let span = tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), peer = %role);
    async move {
        let t = std::time::Instant::now();
        let resp = next.run(req).await;
        tracing::debug!(
            status = resp.status().as_u16(),
            micros = t.elapsed().as_micros() as u64,
            "done"
        );
        resp
    }
    .instrument(span)
    .await
}

fn cbor<T: serde::Serialize>(status: StatusCode, what: &'static str, v: &T) -> Response {
    match wire::to_cbor(what, v) {
        Ok(b) => (status, [(header::CONTENT_TYPE, wire::CBOR)], b).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

fn refusal(status: StatusCode, r: &Refusal) -> Response {
    cbor(status, "refusal", r)
}

/// JSON error for people: `{"error": ..., "check": ...}`.
fn json_error(status: StatusCode, check: &str, detail: impl std::fmt::Display) -> Response {
    (
        status,
        Json(serde_json::json!({"check": check, "error": detail.to_string()})),
    )
        .into_response()
}

fn service_error(e: ServiceError) -> Response {
    match e {
        ServiceError::NoNode(n) => json_error(StatusCode::NOT_FOUND, "node", format!("no node `{n}`")),
        ServiceError::Store(crate::store::StoreError::NodeGone(n)) => json_error(
            StatusCode::NOT_FOUND,
            "node",
            format!("node `{n}` was removed while its round ran; the round was not recorded"),
        ),
        ServiceError::Registry { check, detail } => {
            json_error(StatusCode::UNPROCESSABLE_ENTITY, check, detail)
        }
        ServiceError::Refused { check, detail } => json_error(StatusCode::BAD_REQUEST, check, detail),
        ServiceError::Busy(m) => json_error(StatusCode::CONFLICT, "busy", m),
        other => json_error(StatusCode::INTERNAL_SERVER_ERROR, "internal", other),
    }
}

fn role(peer: &PeerCert) -> Option<String> {
    peer.common_name()
}

/// An operator's JSON body: the peer must be the operator and the body must parse
/// (refused at `check` otherwise).
fn operator_body<T: serde::de::DeserializeOwned>(
    peer: &PeerCert,
    body: &[u8],
    check: &'static str,
) -> Result<T, Response> {
    require_operator(peer)?;
    serde_json::from_slice(body).map_err(|e| json_error(StatusCode::BAD_REQUEST, check, e))
}

fn require_operator(peer: &PeerCert) -> Result<(), Response> {
    match role(peer).as_deref() {
        Some("operator") => Ok(()),
        Some(other) => Err(json_error(
            StatusCode::FORBIDDEN,
            "peer_role",
            format!("`{other}` is not an operator"),
        )),
        None => Err(json_error(
            StatusCode::UNAUTHORIZED,
            "peer_role",
            "an operator client certificate is required",
        )),
    }
}

fn require_node(peer: &PeerCert) -> Result<String, Response> {
    match role(peer).as_deref().and_then(|r| r.strip_prefix("node:")) {
        Some(id) => Ok(id.to_owned()),
        None => Err(refusal(
            StatusCode::FORBIDDEN,
            &Refusal {
                check: "peer_role".into(),
                detail: "an enrolled node's client certificate is required".into(),
            },
        )),
    }
}

fn decode<T: for<'de> Deserialize<'de>>(what: &'static str, body: &[u8]) -> Result<T, Response> {
    wire::from_cbor(what, body).map_err(|e| {
        refusal(
            StatusCode::BAD_REQUEST,
            &Refusal {
                check: "message_format".into(),
                detail: e.to_string(),
            },
        )
    })
}

/// Run blocking work (SQLite, signing) off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Response> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| json_error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e))
}

/// An operator-only JSON endpoint whose work blocks (SQLite, signing).
async fn operator_json<T, F>(peer: &PeerCert, work: F) -> Response
where
    T: serde::Serialize + Send + 'static,
    F: FnOnce() -> Result<T, ServiceError> + Send + 'static,
{
    if let Err(r) = require_operator(peer) {
        return r;
    }
    match blocking(work).await {
        Ok(Ok(v)) => Json(v).into_response(),
        Ok(Err(e)) => service_error(e),
        Err(r) => r,
    }
}

async fn metrics(State(svc): State<Arc<Service>>) -> Response {
    let s = svc.clone();
    let text = blocking(move || {
        let nodes = s.store.node_times().unwrap_or_default();
        let mut by_state: BTreeMap<&str, usize> = BTreeMap::new();
        for st in [
            NodeState::Enrolled,
            NodeState::Trusted,
            NodeState::Failed,
            NodeState::Revoked,
        ] {
            by_state.insert(st.as_str(), 0);
        }
        for n in &nodes {
            *by_state.entry(n.state.as_str()).or_default() += 1;
        }
        let states: Vec<(&str, usize)> = by_state.into_iter().collect();
        let mut migrations: BTreeMap<&str, usize> = BTreeMap::new();
        for m in s.migrations.list() {
            *migrations.entry(m.state.as_str()).or_default() += 1;
        }
        let migrations: Vec<(&str, usize)> = migrations.into_iter().collect();
        s.metrics.render(&crate::metrics::Snapshot {
            states: &states,
            nodes: &nodes,
            nonces: s.nonces.outstanding(),
            migrations: &migrations,
            audit_entries: s.audit_size(),
            interval_secs: s.cfg.interval_secs,
            checkpoint_secs: s.cfg.checkpoint_secs,
            collateral: &crate::round::collateral(&s.appraiser),
        })
    })
    .await;
    match text {
        Ok(t) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], t).into_response(),
        Err(r) => r,
    }
}

async fn keys(State(svc): State<Arc<Service>>) -> Response {
    Json(serde_json::json!({
        "ear_jwk": serde_json::from_str::<serde_json::Value>(&svc.ear_key.public_key().to_jwk()).unwrap_or_default(),
        "log_key": svc.log_public_key(),
        "ca_pem": svc.pki.ca_pem(),
    }))
    .into_response()
}

/// An agent-facing CBOR exchange: decode the request, run the blocking step, answer
/// with its message or its refusal.
async fn cbor_exchange<Req, Resp, F>(what: (&'static str, &'static str), body: &[u8], step: F) -> Response
where
    Req: for<'de> Deserialize<'de> + Send + 'static,
    Resp: serde::Serialize + Send + 'static,
    F: FnOnce(Req) -> Result<Resp, Refusal> + Send + 'static,
{
    let req: Req = match decode(what.0, body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    match blocking(move || step(req)).await {
        Ok(Ok(m)) => cbor(StatusCode::OK, what.1, &m),
        Ok(Err(f)) => refusal(StatusCode::FORBIDDEN, &f),
        Err(r) => r,
    }
}

async fn enroll(State(svc): State<Arc<Service>>, body: Bytes) -> Response {
    cbor_exchange(("enroll request", "enroll challenge"), &body, move |r| {
        svc.enroll_begin(r)
    })
    .await
}

async fn activate(State(svc): State<Arc<Service>>, body: Bytes) -> Response {
    cbor_exchange(("activate request", "enrolled"), &body, move |r| {
        svc.enroll_finish(r)
    })
    .await
}

/// A node route's caller: the node its certificate names, while that node is neither
/// removed nor revoked (its certificate may outlive either).
async fn node_in_standing(svc: &Arc<Service>, peer: &PeerCert) -> Result<String, Response> {
    let id = require_node(peer)?;
    let s = svc.clone();
    let lookup = id.clone();
    match blocking(move || s.node_in_standing(&lookup)).await? {
        Ok(_) => Ok(id),
        Err(f) => Err(refusal(StatusCode::FORBIDDEN, &f)),
    }
}

async fn renew(
    State(svc): State<Arc<Service>>,
    Extension(peer): Extension<PeerCert>,
    body: Bytes,
) -> Response {
    let id = match node_in_standing(&svc, &peer).await {
        Ok(id) => id,
        Err(r) => return r,
    };
    cbor_exchange(("renew request", "renewed"), &body, move |r| svc.renew(&id, r)).await
}

/// 429 for a node over its per-minute share (check `rate_limit`).
fn too_many(detail: String) -> Response {
    refusal(
        StatusCode::TOO_MANY_REQUESTS,
        &Refusal {
            check: "rate_limit".into(),
            detail,
        },
    )
}

async fn push_nonce(State(svc): State<Arc<Service>>, Extension(peer): Extension<PeerCert>) -> Response {
    let id = match node_in_standing(&svc, &peer).await {
        Ok(id) => id,
        Err(r) => return r,
    };
    if let Err(limit) = svc.push_nonces.admit(&id) {
        return too_many(format!(
            "this node asked for {limit} nonces in the last minute, its limit"
        ));
    }
    match svc.nonces.issue(&id) {
        Ok(nonce) => cbor(
            StatusCode::OK,
            "nonce grant",
            &wire::NonceGrant {
                nonce,
                ttl_seconds: svc.nonces.ttl().as_secs(),
            },
        ),
        Err(e) => refusal(
            match e {
                crate::nonce::NonceError::PerNode => StatusCode::TOO_MANY_REQUESTS,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            },
            &Refusal {
                check: "nonce".into(),
                detail: e.to_string(),
            },
        ),
    }
}

async fn push_evidence(
    State(svc): State<Arc<Service>>,
    Extension(peer): Extension<PeerCert>,
    body: Bytes,
) -> Response {
    let id = match node_in_standing(&svc, &peer).await {
        Ok(id) => id,
        Err(r) => return r,
    };
    // Before anything is appraised or stored: a node pushing faster than its share gets
    // no round (and so no write), only this answer.
    if let Err(limit) = svc.pushes.admit(&id) {
        return too_many(format!(
            "this node pushed {limit} rounds in the last minute, its limit"
        ));
    }
    match svc.push_round(id, body).await {
        Ok((s, ear)) => cbor(
            StatusCode::OK,
            "push result",
            &wire::PushResult {
                status: s.status,
                failed_check: s.failed_check,
                ear,
            },
        ),
        Err(ServiceError::Busy(m)) => refusal(
            StatusCode::CONFLICT,
            &Refusal {
                check: "busy".into(),
                detail: m,
            },
        ),
        Err(e) => refusal(
            StatusCode::FORBIDDEN,
            &Refusal {
                check: "node".into(),
                detail: e.to_string(),
            },
        ),
    }
}

/// The node view people see: no key bytes.
fn node_json(n: &NodeRecord) -> serde_json::Value {
    serde_json::json!({
        "id": n.id,
        "name": n.name,
        "group": n.group,
        "endpoint": n.endpoint,
        "state": n.state.as_str(),
        "reason": n.reason,
        "ek_cert_sha256": n.ek_cert_sha256,
        "enrolled_at": n.enrolled_at,
        "updated_at": n.updated_at,
        "last_round_at": n.last_round_at,
        "consecutive_failures": n.failures,
    })
}

/// A node by id or by name.
async fn nodes(State(svc): State<Arc<Service>>, Extension(peer): Extension<PeerCert>) -> Response {
    operator_json(&peer, move || {
        Ok(svc.store.nodes()?.iter().map(node_json).collect::<Vec<_>>())
    })
    .await
}

fn result_json(r: &crate::store::ResultRecord) -> serde_json::Value {
    serde_json::json!({
        "id": r.id,
        "at": r.at,
        "status": r.status,
        "failed_check": r.failed_check,
        "reasons": r.reasons,
        "evidence_sha256": r.evidence_sha256,
    })
}

async fn node(
    State(svc): State<Arc<Service>>,
    Extension(peer): Extension<PeerCert>,
    Path(key): Path<String>,
) -> Response {
    operator_json(&peer, move || {
        let n = svc.find_node(&key)?;
        let results = svc.store.results(&n.id, 20)?;
        let events = svc.store.events(Some(&n.id), 50)?;
        Ok(serde_json::json!({
            "node": node_json(&n),
            "results": results.iter().map(result_json).collect::<Vec<_>>(),
            "events": events,
        }))
    })
    .await
}

async fn start_migration(
    State(svc): State<Arc<Service>>,
    Extension(peer): Extension<PeerCert>,
    body: Bytes,
) -> Response {
    if let Err(r) = require_operator(&peer) {
        return r;
    }
    // Parsed here rather than by axum's `Json`, whose refusals (415 without a JSON
    // content type, 400/422 in plain text) name no check.
    let req: crate::migrate::MigrationRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            let refused = crate::migrate::MigrationRefused {
                check: "migration_format".into(),
                detail: e.to_string(),
                reasons: Vec::new(),
            };
            return (StatusCode::BAD_REQUEST, Json(refused)).into_response();
        }
    };
    match svc.migrate(req).await {
        Ok(m) => (StatusCode::ACCEPTED, Json(m)).into_response(),
        Err(e) => {
            let status = match e.check.as_str() {
                "node" => StatusCode::NOT_FOUND,
                "internal" => StatusCode::INTERNAL_SERVER_ERROR,
                "agent_reachable" => StatusCode::BAD_GATEWAY,
                _ => StatusCode::UNPROCESSABLE_ENTITY,
            };
            (status, Json(e)).into_response()
        }
    }
}

async fn migrations(State(svc): State<Arc<Service>>, Extension(peer): Extension<PeerCert>) -> Response {
    operator_json(&peer, move || Ok(svc.migration_list())).await
}

async fn migration(
    State(svc): State<Arc<Service>>,
    Extension(peer): Extension<PeerCert>,
    Path(id): Path<String>,
) -> Response {
    if let Err(r) = require_operator(&peer) {
        return r;
    }
    match svc.migration(&id) {
        Some(m) => Json(m).into_response(),
        None => json_error(StatusCode::NOT_FOUND, "migration", format!("no migration {id}")),
    }
}

async fn attest(
    State(svc): State<Arc<Service>>,
    Extension(peer): Extension<PeerCert>,
    Path(key): Path<String>,
) -> Response {
    if let Err(r) = require_operator(&peer) {
        return r;
    }
    let s2 = svc.clone();
    let id = match blocking(move || s2.find_node(&key)).await {
        Ok(Ok(n)) => n.id,
        Ok(Err(e)) => return service_error(e),
        Err(r) => return r,
    };
    match svc.attest(&id).await {
        Ok(s) => Json::<RoundSummary>(s).into_response(),
        Err(ServiceError::Busy(m)) => json_error(StatusCode::CONFLICT, "busy", m),
        Err(e) => service_error(e),
    }
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoveBody {
    reason: String,
}

/// `DELETE /v1/nodes/{node}` with `{"reason": "..."}`: the operator removes a node.
async fn remove_node(
    State(svc): State<Arc<Service>>,
    Extension(peer): Extension<PeerCert>,
    Path(key): Path<String>,
    body: Bytes,
) -> Response {
    let b: RemoveBody = match operator_body(&peer, &body, "remove_format") {
        Ok(b) => b,
        Err(r) => return r,
    };
    let reason = b.reason.trim().to_owned();
    // Characters, as the refusal says, not UTF-8 bytes.
    if reason.is_empty() || reason.chars().count() > 1024 {
        return json_error(
            StatusCode::BAD_REQUEST,
            "remove_reason",
            "a removal needs a reason of 1-1024 characters: the audit log keeps it",
        );
    }
    let by = role(&peer).unwrap_or_default();
    if let Err(r) = require_operator(&peer) {
        return r;
    }
    let s = svc.clone();
    let n = match blocking(move || s.remove_node(&key, &reason, &by).map(|n| (n, reason))).await {
        Ok(Ok(n)) => n,
        Ok(Err(e)) => return service_error(e),
        Err(r) => return r,
    };
    // Agents check tickets offline: they hear of the removal now, and the operator sees
    // how many did (the others at their next round).
    let pushed = match svc.push_deny_list().await {
        Ok(p) => serde_json::json!(p),
        Err(e) => serde_json::json!({"error": e.to_string()}),
    };
    Json(serde_json::json!({
        "removed": n.0.id,
        "name": n.0.name,
        "previous_state": n.0.state.as_str(),
        "reason": n.1,
        "deny_list": pushed,
    }))
    .into_response()
}

async fn result(
    State(svc): State<Arc<Service>>,
    Extension(peer): Extension<PeerCert>,
    Path(key): Path<String>,
) -> Response {
    if let Err(r) = require_operator(&peer) {
        return r;
    }
    let out = blocking(move || -> Result<serde_json::Value, ServiceError> {
        let n = svc.find_node(&key)?;
        let r = svc
            .store
            .latest_result(&n.id)?
            .ok_or_else(|| ServiceError::Core(format!("`{}` has no result yet", n.name)))?;
        // Decoded through the same verification a relying party runs (at the time it
        // was issued, so an expired result still displays).
        let decoded = custody_verifier::ear::verify(
            &r.ear,
            svc.ear_key.public_key(),
            custody_verifier::check::UnixTime(r.at),
        )
        .map(|a| a.to_json())
        .map_err(|e| ServiceError::Core(format!("stored EAR does not verify: {e}")))?;
        Ok(serde_json::json!({
            "node": node_json(&n),
            "result": result_json(&r),
            "expired": now() > decoded.get("exp").and_then(serde_json::Value::as_i64).unwrap_or(0),
            "ear": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&r.ear),
            "ear_claims": decoded,
        }))
    })
    .await;
    match out {
        Ok(Ok(v)) => Json(v).into_response(),
        Ok(Err(ServiceError::Core(m))) => json_error(StatusCode::NOT_FOUND, "result", m),
        Ok(Err(e)) => service_error(e),
        Err(r) => r,
    }
}

#[derive(Debug, Deserialize)]
struct EventQuery {
    node: Option<String>,
    limit: Option<u32>,
}

async fn events(
    State(svc): State<Arc<Service>>,
    Extension(peer): Extension<PeerCert>,
    q: Result<Query<EventQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if let Err(r) = require_operator(&peer) {
        return r;
    }
    // axum's own refusal of a bad query is plain text naming no check.
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, "events_query", e.body_text()),
    };
    let limit = q.limit.unwrap_or(100).min(10_000);
    operator_json(&peer, move || {
        let node = q.node.map(|k| svc.find_node(&k)).transpose()?;
        Ok(svc.store.events(node.as_ref().map(|n| n.id.as_str()), limit)?)
    })
    .await
}

/// Operator-provisioned golden PCRs: `{"pcrs": {"sha256": {"0": "hex", ...}}}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReferenceBody {
    pcrs: BTreeMap<String, BTreeMap<u32, String>>,
}

async fn set_reference(
    State(svc): State<Arc<Service>>,
    Extension(peer): Extension<PeerCert>,
    Path(group): Path<String>,
    body: Bytes,
) -> Response {
    let b: ReferenceBody = match operator_body(&peer, &body, "reference_format") {
        Ok(b) => b,
        Err(r) => return r,
    };
    for (bank, pcrs) in &b.pcrs {
        let want = match bank.as_str() {
            "sha1" => 20,
            "sha256" => 32,
            "sha384" => 48,
            "sha512" => 64,
            _ => {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    "reference_format",
                    format!("unknown bank `{bank}`"),
                )
            }
        };
        for (i, d) in pcrs {
            if *i > 23 || hex::decode(d).map(|v| v.len()) != Ok(want) {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    "reference_format",
                    format!("{bank} PCR {i}: want an index 0-23 and {want} bytes of hex"),
                );
            }
        }
    }
    let r = Reference {
        pcrs: b.pcrs,
        source: crate::store::ReferenceSource::Operator,
        at: now(),
        learned_from: None,
        pending: false,
    };
    let g = group.clone();
    match blocking(move || -> Result<(), ServiceError> {
        let entry = custody_audit::Entry::PolicyChange(custody_audit::entry::PolicyEntry::ReferenceValues(
            custody_audit::entry::ReferenceChange {
                reference_values: g.clone(),
                source: "operator".into(),
                learned_from: None,
                by: Some(role(&peer).unwrap_or_default()),
                at: r.at,
                pcrs: r.pcrs.clone(),
            },
        ));
        svc.decide(
            crate::store::Decision::Reference {
                group: &g,
                reference: &r,
            },
            &[entry],
        )?;
        Ok(())
    })
    .await
    {
        Ok(Ok(())) => Json(serde_json::json!({"group": group, "source": "operator"})).into_response(),
        Ok(Err(e)) => service_error(e),
        Err(r) => r,
    }
}

/// A group's reference values as stored (operator only).
async fn get_reference(
    State(svc): State<Arc<Service>>,
    Extension(peer): Extension<PeerCert>,
    Path(group): Path<String>,
) -> Response {
    if let Err(r) = require_operator(&peer) {
        return r;
    }
    let g = group.clone();
    match blocking(move || svc.store.reference(&g)).await {
        Ok(Ok(Some(r))) => Json(serde_json::json!({"group": group, "reference": r})).into_response(),
        Ok(Ok(None)) => json_error(
            StatusCode::NOT_FOUND,
            "reference_values",
            format!("group `{group}` has no reference values"),
        ),
        Ok(Err(e)) => service_error(e.into()),
        Err(r) => r,
    }
}

/// Every group's reference values (operator only).
async fn list_references(State(svc): State<Arc<Service>>, Extension(peer): Extension<PeerCert>) -> Response {
    operator_json(&peer, move || {
        let groups: Vec<serde_json::Value> = svc
            .store
            .references()?
            .into_iter()
            .map(|(group, r)| serde_json::json!({"group": group, "reference": r}))
            .collect();
        Ok(serde_json::json!({ "groups": groups }))
    })
    .await
}

/// Remove a group's reference values (operator only).
async fn remove_reference(
    State(svc): State<Arc<Service>>,
    Extension(peer): Extension<PeerCert>,
    Path(group): Path<String>,
) -> Response {
    let by = peer.common_name().unwrap_or_default();
    operator_json(&peer, move || {
        svc.remove_reference(&group, &by)?;
        Ok(serde_json::json!({"group": group, "removed": true}))
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LearnBody {
    node: String,
}

/// Propose a node's latest verified PCRs as a group's baseline, pending approval.
async fn learn_reference(
    State(svc): State<Arc<Service>>,
    Extension(peer): Extension<PeerCert>,
    Path(group): Path<String>,
    body: Bytes,
) -> Response {
    let b: LearnBody = match operator_body(&peer, &body, "reference_format") {
        Ok(b) => b,
        Err(r) => return r,
    };
    let by = peer.common_name().unwrap_or_default();
    operator_json(&peer, move || {
        let r = svc.learn_reference(&group, &b.node, &by)?;
        Ok(serde_json::json!({"group": group, "reference": r}))
    })
    .await
}

/// Approve a baseline learnt under `reference = "tofu-approve"`: from now on it decides.
async fn approve_reference(
    State(svc): State<Arc<Service>>,
    Extension(peer): Extension<PeerCert>,
    Path(group): Path<String>,
) -> Response {
    if let Err(r) = require_operator(&peer) {
        return r;
    }
    let g = group.clone();
    let by = peer.common_name().unwrap_or_default();
    match blocking(move || svc.approve_reference(&g, &by)).await {
        Ok(Ok(r)) => Json(serde_json::json!({"group": group, "reference": r})).into_response(),
        Ok(Err(e)) => service_error(e),
        Err(r) => r,
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupBody {
    group: String,
}

/// Put a node in a reference-value group.
async fn set_group(
    State(svc): State<Arc<Service>>,
    Extension(peer): Extension<PeerCert>,
    Path(key): Path<String>,
    body: Bytes,
) -> Response {
    let b: GroupBody = match operator_body(&peer, &body, "group") {
        Ok(b) => b,
        Err(r) => return r,
    };
    let by = peer.common_name().unwrap_or_default();
    match blocking(move || svc.set_group(&key, &b.group, &by)).await {
        Ok(Ok(n)) => Json(node_json(&n)).into_response(),
        Ok(Err(e)) => service_error(e),
        Err(r) => r,
    }
}

fn registry_json(v: &custody_registry::signed::VerifiedRegistry) -> serde_json::Value {
    let r = v.registry();
    serde_json::json!({
        "version": v.version(),
        "digest": v.digest(),
        "kid": v.kid(),
        "authority": r.authority,
        "issued_at": r.issued_at,
        "entities": r.entities.len(),
        "sites": r.sites.iter().map(|s| &s.id).collect::<Vec<_>>(),
        "hardware": r.hardware.len(),
    })
}

/// The registry in force (404 `registry` when none is).
async fn registry(State(svc): State<Arc<Service>>, Extension(peer): Extension<PeerCert>) -> Response {
    if let Err(r) = require_operator(&peer) {
        return r;
    }
    let current = svc
        .appraiser
        .registry
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    match current {
        Some(v) => Json(registry_json(&v)).into_response(),
        None => json_error(StatusCode::NOT_FOUND, "registry", "no registry is in force"),
    }
}

/// Adopt a newer signed registry (the COSE_Sign1 bytes `custody registry sign` writes).
async fn put_registry(
    State(svc): State<Arc<Service>>,
    Extension(peer): Extension<PeerCert>,
    body: Bytes,
) -> Response {
    operator_json(&peer, move || {
        let v = svc.adopt_registry(&body, true)?;
        Ok(registry_json(&v))
    })
    .await
}

/// What the node's latest result was decided on: `custody policy explain` replays it.
async fn node_input(
    State(svc): State<Arc<Service>>,
    Extension(peer): Extension<PeerCert>,
    Path(key): Path<String>,
) -> Response {
    operator_json(&peer, move || {
        let n = svc.find_node(&key)?;
        let r = svc.store.latest_result(&n.id)?;
        let input = r
            .as_ref()
            .and_then(|r| r.input.as_deref())
            .map(serde_json::from_str::<serde_json::Value>)
            .transpose()
            .map_err(|e| ServiceError::Core(format!("stored policy input: {e}")))?;
        Ok(serde_json::json!({
            "node": n.id,
            "name": n.name,
            "result_id": r.as_ref().map(|r| r.id),
            "at": r.as_ref().map(|r| r.at),
            "policy_id": svc.appraiser.policy.id(),
            "policy_digest": svc.appraiser.policy.digest(),
            "input": input,
        }))
    })
    .await
}

async fn checkpoint(State(svc): State<Arc<Service>>, Extension(peer): Extension<PeerCert>) -> Response {
    operator_json(&peer, move || {
        Ok(serde_json::json!({"new_checkpoint": svc.checkpoint()?}))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_lists_every_route_and_nothing_else() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        for (method, path) in ROUTES {
            assert!(
                paths.get(*path).and_then(|p| p.get(*method)).is_some(),
                "{method} {path} missing from openapi.json"
            );
        }
        let documented: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
        assert_eq!(
            documented,
            ROUTES.len(),
            "openapi.json documents a route the router lacks"
        );
        assert_eq!(doc["openapi"], "3.1.0");
    }

    #[tokio::test]
    async fn the_router_serves_every_listed_route() {
        use tower::ServiceExt;
        let dir = tempfile::tempdir().unwrap();
        let svc = Service::open(crate::tests::config(dir.path())).unwrap();
        let app = router(svc);
        for (method, path) in ROUTES {
            let uri = path.replace("{node}", "nobody").replace("{group}", "g");
            let mut req = axum::http::Request::builder()
                .method(method.to_uppercase().as_str())
                .uri(&uri)
                .body(axum::body::Body::empty())
                .unwrap();
            req.extensions_mut().insert(PeerCert::default());
            let status = app.clone().oneshot(req).await.unwrap().status();
            assert!(
                status != StatusCode::NOT_FOUND || uri.contains("nobody"),
                "{method} {uri}: {status}"
            );
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {uri}");
            // Operator routes refuse an anonymous peer before looking anything up.
            if uri.starts_with("/v1/nodes")
                || uri.starts_with("/v1/events")
                || uri.starts_with("/v1/groups")
                || uri.starts_with("/v1/audit")
            {
                assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {uri}");
            }
        }
    }

    /// A peer whose (already verified) client certificate names `cn`.
    fn peer(cn: &str) -> PeerCert {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate().unwrap();
        PeerCert::new(Some(p.self_signed(&key).unwrap().der().clone()))
    }

    /// `method uri` with `body` (and `content_type`, if any) as `who`: status and JSON body.
    async fn call(
        app: &Router,
        who: &PeerCert,
        method: &str,
        uri: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> (StatusCode, Option<String>, serde_json::Value) {
        use tower::ServiceExt;
        let mut b = axum::http::Request::builder().method(method).uri(uri);
        if let Some(t) = content_type {
            b = b.header(header::CONTENT_TYPE, t);
        }
        let mut req = b.body(axum::body::Body::from(body.to_vec())).unwrap();
        req.extensions_mut().insert(who.clone());
        let resp = app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let ct = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned());
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        let v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&bytes).into()));
        (status, ct, v)
    }

    fn app() -> (tempfile::TempDir, Router) {
        let dir = tempfile::tempdir().unwrap();
        let svc = Service::open(crate::tests::config(dir.path())).unwrap();
        (dir, router(svc))
    }

    /// schemathesis: `POST /v1/migrations` without a JSON content type was refused by
    /// axum's `Json` with 415 in plain text, a malformed body with 400/422 in plain text:
    /// neither named a check nor was documented. Now 400 `migration_format`, in the
    /// migration refusal's shape, whatever the content type says.
    #[tokio::test]
    async fn a_malformed_migration_request_names_its_check() {
        let (_d, app) = app();
        let op = peer("operator");
        for (ct, body) in [
            (None, &b""[..]),
            (None, b"{}"),
            (Some("application/json"), b"\x00"),
            (Some("application/json"), b"{\"job\": 1}"),
            (
                Some("text/plain"),
                b"{\"job\":\"j\",\"source\":\"a\",\"destination\":\"b\",\"x\":1}",
            ),
        ] {
            let (status, ct_out, v) = call(&app, &op, "POST", "/v1/migrations", ct, body).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{ct:?} {body:?}: {v}");
            assert_eq!(ct_out.as_deref(), Some("application/json"), "{v}");
            assert_eq!(v["check"], "migration_format", "{v}");
            assert!(v["detail"].is_string() && v["reasons"].is_array(), "{v}");
        }
        // A well-formed request with no JSON content type is read: its nodes are unknown.
        let body = br#"{"job":"j","source":"nobody","destination":"none"}"#;
        let (status, _, v) = call(&app, &op, "POST", "/v1/migrations", None, body).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
        assert_eq!(v["check"], "node", "{v}");
        // Still operator only, before the body is looked at.
        let (status, _, v) = call(&app, &PeerCert::default(), "POST", "/v1/migrations", None, b"").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{v}");
        assert_eq!(v["check"], "peer_role", "{v}");
    }

    /// schemathesis: `GET /v1/events?limit=x` was refused by axum's `Query` in plain text
    /// naming no check, and before the caller's role was looked at.
    #[tokio::test]
    async fn a_bad_events_query_names_its_check_after_the_role() {
        let (_d, app) = app();
        for q in ["limit=x", "limit=-1", "limit=4294967296", "limit=1.5"] {
            let uri = format!("/v1/events?{q}");
            let (status, ct, v) = call(&app, &peer("operator"), "GET", &uri, None, b"").await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{q}: {v}");
            assert_eq!(ct.as_deref(), Some("application/json"), "{q}: {v}");
            assert_eq!(v["check"], "events_query", "{q}: {v}");
            let (status, _, v) = call(&app, &PeerCert::default(), "GET", &uri, None, b"").await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{q}: {v}");
            assert_eq!(v["check"], "peer_role", "{v}");
        }
        let (status, _, v) = call(&app, &peer("operator"), "GET", "/v1/events?limit=3", None, b"").await;
        assert_eq!(status, StatusCode::OK, "{v}");
    }

    /// schemathesis: a removal reason of 1024 characters (as openapi.json and the refusal
    /// say) was refused when they took more than 1024 bytes of UTF-8.
    #[tokio::test]
    async fn a_removal_reason_is_counted_in_characters() {
        let (_d, app) = app();
        let op = peer("operator");
        let reason = |n: usize| serde_json::json!({"reason": "é".repeat(n)}).to_string();
        let (status, _, v) = call(
            &app,
            &op,
            "DELETE",
            "/v1/nodes/nobody",
            None,
            reason(1024).as_bytes(),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
        assert_eq!(v["check"], "node", "{v}");
        let (status, _, v) = call(
            &app,
            &op,
            "DELETE",
            "/v1/nodes/nobody",
            None,
            reason(1025).as_bytes(),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
        assert_eq!(v["check"], "remove_reason", "{v}");
    }
}
