//! Node events (state changes, reference values learnt) go to the store, the log and
//! every configured webhook: an HTTPS POST of the event as JSON, retried a few times,
//! never blocking the round that caused it.

use crate::config::Config;
use crate::store::Event;
use crate::ServiceError;
use custody_net::HttpsClient;
use std::time::Duration;

#[derive(Debug)]
pub struct Emitter {
    urls: Vec<String>,
    client: Option<HttpsClient>,
}

impl Emitter {
    pub fn new(cfg: &Config) -> Result<Self, ServiceError> {
        if cfg.webhooks.is_empty() {
            return Ok(Self {
                urls: Vec::new(),
                client: None,
            });
        }
        let Some(ca) = &cfg.webhook_ca else {
            return Err(crate::config::ConfigError::Invalid(
                "`webhooks` need `webhook_ca`: the receivers' certificates must chain to a configured CA"
                    .into(),
            )
            .into());
        };
        let pem = std::fs::read(ca).map_err(|e| ServiceError::Key {
            path: ca.display().to_string(),
            reason: e.to_string(),
        })?;
        let roots = custody_net::roots_from_pem(&pem)?;
        Ok(Self {
            urls: cfg.webhooks.clone(),
            client: Some(HttpsClient::new(
                custody_net::client_config(roots, None)?,
                Duration::from_secs(5),
                64 * 1024,
            )),
        })
    }

    /// Send `event` to every webhook in the background (needs a tokio runtime; without
    /// one the event is only stored and logged).
    pub fn send(&self, event: Event, node_name: &str) {
        let Some(client) = &self.client else { return };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let body = serde_json::json!({
            "id": event.id,
            "at": event.at,
            "node_id": event.node_id,
            "node": node_name,
            "event": event.kind,
            "detail": event.detail,
        })
        .to_string()
        .into_bytes();
        for url in &self.urls {
            let (client, url, body) = (client.clone(), url.clone(), body.clone());
            rt.spawn(async move {
                for attempt in 0..3u32 {
                    match client
                        .request(http::Method::POST, &url, Some("application/json"), body.clone())
                        .await
                    {
                        Ok(r) if r.status.is_success() => return,
                        Ok(r) => {
                            tracing::warn!(%url, status = %r.status, attempt, "webhook refused the event")
                        }
                        Err(e) => tracing::warn!(%url, error = %e, attempt, "webhook unreachable"),
                    }
                    tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
                }
                tracing::error!(%url, "webhook gave up after 3 attempts");
            });
        }
    }
}
