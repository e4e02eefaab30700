//! Enrollment with the verifier (credential activation) and certificate renewal.

use super::*;

/// The pinned verifier CA (PEM) from `cfg.verifier_ca`.
pub fn pinned_ca(cfg: &AgentConfig) -> Result<String, DaemonError> {
    let path = cfg.verifier_ca_path()?;
    let err = |reason: String| DaemonError::VerifierCa {
        path: path.to_owned(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
    if meta.len() > MAX_STATE_FILE {
        return Err(err(format!("larger than {MAX_STATE_FILE} bytes")));
    }
    let pem = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    custody_net::roots_from_pem(pem.as_bytes()).map_err(|e| err(e.to_string()))?;
    Ok(pem)
}

/// The enrollment client: server-authenticated TLS trusting only the pinned CA, and only
/// a server certified as `verifier` (a node's certificate from the same CA is refused),
/// no client certificate.
pub fn enrollment_client(cfg: &AgentConfig) -> Result<HttpsClient, DaemonError> {
    let path = cfg.verifier_ca_path()?.to_owned();
    let roots =
        custody_net::roots_from_pem(pinned_ca(cfg)?.as_bytes()).map_err(|e| DaemonError::VerifierCa {
            path,
            reason: e.to_string(),
        })?;
    let tls = custody_net::client_config_for_role(roots, None, VERIFIER_CN).map_err(DaemonError::Tls)?;
    Ok(HttpsClient::new(tls, ENROLL_TIMEOUT, MAX_MESSAGE_LEN))
}

pub(super) async fn post_cbor<T: DeserializeOwned>(
    client: &HttpsClient,
    url: &str,
    what: &'static str,
    body: Vec<u8>,
) -> Result<T, DaemonError> {
    let r = client
        .request(Method::POST, url, Some(CBOR), body)
        .await
        .map_err(DaemonError::Transport)?;
    if r.status == StatusCode::OK {
        return api::from_cbor(what, &r.body).map_err(|e| DaemonError::BadResponse {
            what,
            reason: e.to_string(),
        });
    }
    match api::from_cbor::<Refusal>("Refusal", &r.body) {
        Ok(Refusal { check, detail }) => Err(DaemonError::Refused {
            status: r.status.as_u16(),
            check: printable(&check),
            detail: printable(&detail),
        }),
        Err(_) => Err(DaemonError::UnexpectedStatus {
            what,
            status: r.status.as_u16(),
        }),
    }
}

/// The peer's text with control characters replaced, so it cannot forge log lines.
pub(super) fn printable(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, CollectError> + Send + 'static,
) -> Result<T, DaemonError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| DaemonError::Task(e.to_string()))?
        .map_err(DaemonError::Tpm)
}

/// The first enrollment message: the TPM's keys, this agent's TLS key and endpoints.
pub fn enroll_request(cfg: &AgentConfig, keys: TpmKeys, key: &TlsKey) -> Result<EnrollRequest, DaemonError> {
    Ok(EnrollRequest {
        name: cfg.name.clone(),
        endpoint: cfg.endpoint()?,
        ek_cert: keys.ek_certificate,
        ek_public: keys.ek_public,
        ak_public: keys.ak_public,
        tls_spki: key.spki_der().to_vec(),
        locality_endpoint: cfg.locality_endpoint()?,
        move_endpoint: cfg.move_endpoint()?,
    })
}

pub(super) fn encode_err(what: &'static str, e: api::ApiError) -> DaemonError {
    DaemonError::BadResponse {
        what,
        reason: e.to_string(),
    }
}

/// The answer to a credential challenge: the TPM activates it, and the agent proves it
/// with an HMAC keyed by the secret over `sent`, the request it sent. The secret never
/// leaves the agent, and a proof fits only that request (see
/// [`custody_formats::api::enrollment_proof`]).
pub async fn activate(
    activator: SharedActivator,
    ch: EnrollChallenge,
    sent: &EnrollRequest,
) -> Result<ActivateRequest, DaemonError> {
    let EnrollChallenge {
        enrollment_id,
        id_object,
        encrypted_secret,
    } = ch;
    let secret = blocking(move || activator.activate(&id_object, &encrypted_secret)).await?;
    let proof = api::enrollment_proof(&secret, sent).map_err(|e| encode_err("EnrollRequest", e))?;
    Ok(ActivateRequest {
        enrollment_id,
        proof: proof.to_vec(),
    })
}

/// Enroll with the verifier: send the TPM keys and the TLS key, activate the credential
/// the verifier sealed to them, check and store the node certificate. Needs `keys()`
/// before `activate` (the AK must exist); both run on a blocking thread.
/// `d` plus up to half of it again, at random.
pub(super) fn jitter(d: Duration) -> Duration {
    let mut b = [0u8; 2];
    let r = aws_lc_rs::rand::fill(&mut b).map_or(0, |()| u16::from_le_bytes(b));
    d + d.mul_f64(f64::from(r) / f64::from(u16::MAX) / 2.0)
}

pub async fn enroll(
    cfg: &AgentConfig,
    activator: SharedActivator,
    client: &HttpsClient,
) -> Result<NodeIdentity, DaemonError> {
    let base = cfg.verifier_base_url()?;
    let pinned = pinned_ca(cfg)?;
    let key = TlsKey::load_or_generate(&cfg.state_dir)?;
    let a = activator.clone();
    let keys = blocking(move || a.keys()).await?;
    let req = enroll_request(cfg, keys, &key)?;
    let body = api::to_cbor("EnrollRequest", &req).map_err(|e| encode_err("EnrollRequest", e))?;
    tracing::info!(name = %req.name, endpoint = %req.endpoint, "enrolling");
    let ch: EnrollChallenge =
        post_cbor(client, &format!("{base}{ENROLL_PATH}"), "EnrollChallenge", body).await?;
    let answer = activate(activator, ch, &req).await?;
    let body = api::to_cbor("ActivateRequest", &answer).map_err(|e| encode_err("ActivateRequest", e))?;
    let done: Enrolled = post_cbor(client, &format!("{base}{ACTIVATE_PATH}"), "Enrolled", body).await?;
    // The CA the node will trust for mTLS peers must be the one the operator pinned: a
    // verifier cannot widen the agent's trust.
    let same = |a: &str| custody_net::certs_from_pem(a.as_bytes()).ok();
    match (same(&done.ca_pem), same(&pinned)) {
        (Some(got), Some(want)) if got == want => {}
        _ => return Err(DaemonError::CaMismatch),
    }
    if !done.verifier_key.is_empty()
        && (done.verifier_key.len() != 65 || done.verifier_key.first() != Some(&4))
    {
        return Err(DaemonError::BadResponse {
            what: "Enrolled",
            reason: "verifier_key is not an uncompressed P-256 point".into(),
        });
    }
    pin_verifier_key(cfg, &done.verifier_key)?;
    let mut id = NodeIdentity::new(done.node_id, done.certificate_pem, done.ca_pem, key)?;
    id.verifier_key = done.verifier_key;
    id.store(&cfg.state_dir)?;
    tracing::info!(node_id = %id.node_id, "enrolled");
    Ok(id)
}

/// Renew `id`'s certificate over mutual TLS with its current one (`POST /v1/renew`):
/// the same TLS key, a new certificate for the same node, stored in the state directory.
pub async fn renew(cfg: &AgentConfig, id: &NodeIdentity) -> Result<NodeIdentity, DaemonError> {
    let base = cfg.verifier_base_url()?;
    let roots = custody_net::roots_from_pem(id.ca_pem.as_bytes()).map_err(DaemonError::Tls)?;
    let tls = custody_net::client_config_for_role(roots, Some(id.tls_identity()?), VERIFIER_CN)
        .map_err(DaemonError::Tls)?;
    let client = HttpsClient::new(tls, ENROLL_TIMEOUT, MAX_MESSAGE_LEN);
    let body = api::to_cbor(
        "RenewRequest",
        &RenewRequest {
            tls_spki: id.key.spki_der().to_vec(),
        },
    )
    .map_err(|e| encode_err("RenewRequest", e))?;
    let done: Renewed = post_cbor(&client, &format!("{base}{RENEW_PATH}"), "Renewed", body).await?;
    let cn = custody_net::certs_from_pem(done.certificate_pem.as_bytes())
        .ok()
        .and_then(|c| c.first().and_then(|l| custody_net::subject_cn(l)));
    if cn.as_deref() != Some(format!("node:{}", id.node_id).as_str()) {
        return Err(DaemonError::NodeCert(format!(
            "the renewed certificate is for {cn:?}, not node:{}",
            id.node_id
        )));
    }
    let mut new = NodeIdentity::new(
        id.node_id.clone(),
        done.certificate_pem,
        id.ca_pem.clone(),
        id.key.clone(),
    )?;
    new.verifier_key = id.verifier_key.clone();
    new.store(&cfg.state_dir)?;
    tracing::info!(node_id = %new.node_id, "node certificate renewed");
    Ok(new)
}

/// Renew at half of each certificate's lifetime and serve the new one through `tls`;
/// failures are retried with back-off (a removed or revoked node keeps being refused,
/// and its certificate runs out).
pub(super) async fn keep_renewed(cfg: AgentConfig, mut id: NodeIdentity, tls: Arc<ReloadableIdentity>) {
    loop {
        let wait = id.renew_in().unwrap_or(Duration::from_secs(60));
        tokio::time::sleep(wait).await;
        let mut backoff = Duration::from_secs(10);
        loop {
            match renew(&cfg, &id).await.and_then(|n| {
                tls.replace(n.tls_identity()?).map_err(DaemonError::Tls)?;
                Ok(n)
            }) {
                Ok(n) => {
                    id = n;
                    break;
                }
                Err(e) => {
                    tracing::warn!(check = e.check(), error = %e, retry_in = ?backoff, "certificate renewal failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(600));
                }
            }
        }
    }
}
