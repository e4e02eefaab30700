//! The deny list the verifier gives agents (see `custody_mover::deny`): nodes removed or
//! revoked recently enough that a certificate or a ticket issued before could still be
//! good. Agents check tickets offline; this is how they learn that one no longer counts.
//!
//! It reaches them three ways: pushed to every node's agent as soon as a node is removed
//! (the operator's `DELETE` waits for it and says how many agents hold it) or revoked
//! (a background task), and carried by every round request, so that an agent that was
//! down at the push learns it at its next round.

use crate::store::NodeState;
use crate::{now, Service, ServiceError};
use custody_formats::api;
use custody_mover::deny::{DenyList, MAX_DENIED};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// The signed list is rebuilt at least this often, so that entries age out.
const REBUILD_SECS: i64 = 3600;
/// How long the push to one agent may take.
const PUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// Agents pushed to at once.
const PUSH_CONCURRENCY: usize = 32;

/// The signed list and when it was built.
#[derive(Debug, Default)]
pub struct DenyCache {
    signed: Option<(Arc<Vec<u8>>, i64)>,
    last_ms: i64,
}

/// What a push reached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Pushed {
    /// Agents the list was sent to (enrolled, not revoked, taking moves).
    pub sent: usize,
    /// Agents that answered holding this list or a newer one.
    pub held: usize,
}

impl Service {
    /// How long a node stays listed: as long as a certificate issued to it (renewed at
    /// most until its removal) or a ticket naming it could still be good.
    pub fn deny_window_secs(&self) -> i64 {
        let cert = i64::from(self.cfg.node_cert_hours) * 3600;
        cert.max(crate::migrate::MAX_TICKET_TTL) + custody_mover::deny::CLOCK_SKEW
    }

    /// The current signed list (cached; rebuilt after a change or every hour).
    pub fn deny_list(&self) -> Result<Arc<Vec<u8>>, ServiceError> {
        let mut c = self.deny.lock().unwrap_or_else(|p| p.into_inner());
        let t = now();
        if let Some((signed, built)) = &c.signed {
            if t - built < REBUILD_SECS {
                return Ok(signed.clone());
            }
        }
        let mut nodes = self.store.denied_since(t - self.deny_window_secs())?;
        if nodes.len() > MAX_DENIED {
            // Newest first: an older entry's certificates and tickets are closer to expiry.
            tracing::error!(
                listed = nodes.len(),
                limit = MAX_DENIED,
                "more nodes removed or revoked in the window than a deny list holds; the oldest are left out"
            );
            nodes.sort_by_key(|n| std::cmp::Reverse(n.since));
            nodes.truncate(MAX_DENIED);
        }
        let ms = (t.saturating_mul(1000)).max(c.last_ms + 1);
        let list = DenyList::new(ms, nodes).map_err(|e| ServiceError::Core(e.to_string()))?;
        let signed = Arc::new(
            list.sign(self.ear_key.key_pair())
                .map_err(|e| ServiceError::Core(e.to_string()))?,
        );
        c.last_ms = ms;
        c.signed = Some((signed.clone(), t));
        Ok(signed)
    }

    /// A node was removed, revoked or enrolled again: the next list is rebuilt, and the
    /// background pusher sends it.
    pub fn deny_changed(&self) {
        self.deny.lock().unwrap_or_else(|p| p.into_inner()).signed = None;
        self.deny_dirty.store(true, Ordering::SeqCst);
    }

    /// Send the current list to every enrolled, unrevoked node's agent that takes moves, a
    /// few at a time.
    pub async fn push_deny_list(self: &Arc<Self>) -> Result<Pushed, ServiceError> {
        // Cleared before the list is read: a change after this marks it again.
        self.deny_dirty.store(false, Ordering::SeqCst);
        let svc = self.clone();
        let (list, nodes) = tokio::task::spawn_blocking(move || -> Result<_, ServiceError> {
            Ok((svc.deny_list()?, svc.store.nodes()?))
        })
        .await
        .map_err(|e| ServiceError::Core(e.to_string()))??;
        let body = api::to_cbor(
            "DenyListUpdate",
            &api::DenyListUpdate {
                list: list.as_ref().clone(),
            },
        )
        .map_err(|e| ServiceError::Core(e.to_string()))?;
        // Only agents that take moves check tickets (the route is theirs).
        let targets: Vec<_> = nodes
            .into_iter()
            .filter(|n| n.state != NodeState::Revoked && n.move_endpoint.is_some())
            .collect();
        let limit = Arc::new(tokio::sync::Semaphore::new(PUSH_CONCURRENCY));
        let mut tasks = tokio::task::JoinSet::new();
        for n in &targets {
            let (svc, body, limit) = (self.clone(), body.clone(), limit.clone());
            let (id, name, url) = (
                n.id.clone(),
                n.name.clone(),
                format!("https://{}/v1/deny", n.endpoint),
            );
            tasks.spawn(async move {
                let _permit = limit.acquire_owned().await.ok()?;
                let client = svc.agents.for_node(&id).ok()?;
                let r = tokio::time::timeout(
                    PUSH_TIMEOUT,
                    client.request(http::Method::PUT, &url, Some(api::CBOR), body),
                )
                .await;
                match r {
                    Ok(Ok(r)) if r.status == http::StatusCode::OK => {
                        api::from_cbor::<api::DenyListHeld>("DenyListHeld", &r.body).ok()
                    }
                    Ok(Ok(r)) => {
                        tracing::warn!(node = %name, status = %r.status, "deny list push refused");
                        None
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(node = %name, error = %e, "deny list push failed");
                        None
                    }
                    Err(_) => {
                        tracing::warn!(node = %name, "deny list push timed out");
                        None
                    }
                }
            });
        }
        let mut held = 0;
        let mut issued = 0;
        if let Ok(l) = DenyList::verify(&list, self.ear_key.public_key().as_sec1(), now()) {
            issued = l.issued_at_ms;
        }
        while let Some(r) = tasks.join_next().await {
            if matches!(r, Ok(Some(h)) if h.issued_at_ms >= issued) {
                held += 1;
            }
        }
        let p = Pushed {
            sent: targets.len(),
            held,
        };
        tracing::info!(sent = p.sent, held = p.held, "deny list pushed");
        Ok(p)
    }
}

/// Push the list whenever a round revoked a node (or anything else marked it changed).
pub async fn push_loop(svc: Arc<Service>, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.changed() => return,
        }
        if svc.deny_dirty.swap(false, Ordering::SeqCst) {
            if let Err(e) = svc.push_deny_list().await {
                tracing::error!(error = %e, "deny list push failed");
            }
        }
    }
}
