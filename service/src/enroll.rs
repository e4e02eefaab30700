//! Enrollment: a node proves its TPM, then gets a certificate.
//!
//! 1. `POST /v1/enroll`: the EK certificate must chain to a configured manufacturer CA and
//!    carry the EK public key presented; the AK must be a restricted, TPM-resident signing
//!    key. The verifier makes a credential (TPM2_MakeCredential, in software) of a random
//!    secret to that EK and the AK's Name, and keeps the pending enrollment for 60 s.
//! 2. `POST /v1/enroll/activate`: only a TPM holding both the EK and the AK can release
//!    the secret (TPM2_ActivateCredential). On a match the node is registered and its TLS
//!    key certified as `node:<id>`. The agent never sends the secret itself but an HMAC
//!    keyed by it over the request it sent (`custody_formats::api::enrollment_proof`), so
//!    a relay that altered the request gets nothing.
//! 3. `POST /v1/renew` (mutual TLS, the node's current certificate): a new short-lived
//!    certificate, only while the node is neither removed nor revoked.
//!
//! A node certificate names the node's endpoint host. That host must be a strict host
//! name or IP address, none of this verifier's `server_names`, and no other node's, so a
//! node's certificate is never valid for the verifier's or another node's name. Loopback
//! addresses are exempt from the last two: they name "this host", which co-located
//! processes share; Custody's clients also check the role (subject CN) of every server.

use crate::store::{NodeRecord, NodeState, StoreError};
use crate::{now, Service, ServiceError};
use custody_formats::api::{
    enrollment_proof, ActivateRequest, EnrollChallenge, EnrollRequest, Enrolled, Refusal, RenewRequest,
    Renewed,
};
use custody_verifier::check::{FailedCheck, UnixTime};
use custody_verifier::enroll as core;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long a credential challenge stays open.
const PENDING_TTL: Duration = Duration::from_secs(60);
/// Pending enrollments held at most (a flood cannot grow memory without bound).
const MAX_PENDING: usize = 10_000;
/// Pending enrollments per EK certificate.
const MAX_PENDING_PER_EK: usize = 2;

#[derive(Debug)]
struct PendingEnrollment {
    request: EnrollRequest,
    secret: [u8; 32],
    ek_cert_sha256: String,
    expires: Instant,
}

#[derive(Debug, Default)]
pub struct Pending(Mutex<HashMap<String, PendingEnrollment>>);

impl Pending {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, PendingEnrollment>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn refuse(check: &str, detail: impl Into<String>) -> Refusal {
    Refusal {
        check: check.into(),
        detail: detail.into(),
    }
}

fn valid_name(n: &str) -> bool {
    (1..=64).contains(&n.len())
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && !looks_like_node_id(n)
}

/// `n-` and 16 hex digits: the shape of a node id. The API and the CLI find a node by id
/// first, then by name, so such a name could shadow another node's id.
fn looks_like_node_id(n: &str) -> bool {
    n.strip_prefix("n-")
        .is_some_and(|h| h.len() == 16 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The host of `host:port`, as a node certificate may name it: an IP address (IPv6 in
/// brackets or bare), or a host name of LDH labels (letters, digits, inner hyphens; no
/// wildcard, no `@`, `?`, `_`), lowercased. `None` for anything else.
pub fn endpoint_host(endpoint: &str) -> Option<String> {
    let (host, port) = endpoint.rsplit_once(':')?;
    port.parse::<u16>().ok().filter(|p| *p != 0)?;
    canonical_host(host)
}

fn canonical_host(host: &str) -> Option<String> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
        return Some(ip.to_string());
    }
    (bare.len() == host.len() && valid_host_name(host)).then(|| host.to_ascii_lowercase())
}

fn valid_host_name(h: &str) -> bool {
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    // An all-digit last label would read as a (malformed) IPv4 address.
    (1..=253).contains(&h.len())
        && h.split('.').all(label_ok)
        && !h
            .rsplit('.')
            .next()
            .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()))
}

/// Node ids derive from the EK certificate, so re-enrolling the same TPM keeps its id.
fn node_id(ek_cert_sha256: &str) -> String {
    format!("n-{}", ek_cert_sha256.get(..16).unwrap_or(ek_cert_sha256))
}

impl Service {
    /// Step 1: check the TPM's identity and answer with a credential challenge.
    #[tracing::instrument(skip_all, fields(name = %req.name))]
    pub fn enroll_begin(&self, req: EnrollRequest) -> Result<EnrollChallenge, Refusal> {
        let r = self.enroll_begin_inner(req);
        if let Err(f) = &r {
            self.metrics
                .enrollments_refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(check = %f.check, detail = %f.detail, "enrollment refused");
        }
        r
    }

    fn enroll_begin_inner(&self, req: EnrollRequest) -> Result<EnrollChallenge, Refusal> {
        if !valid_name(&req.name) {
            return Err(refuse(
                "node_name",
                "names are 1-64 characters of A-Z a-z 0-9 . _ - and not of a node id's shape (n- and 16 hex digits)",
            ));
        }
        if endpoint_host(&req.endpoint).is_none() {
            return Err(refuse(
                "endpoint",
                format!(
                    "`{}` is not host:port with an IP address or a host name of letters, digits and hyphens",
                    req.endpoint
                ),
            ));
        }
        let Some(ek_cert) = &req.ek_cert else {
            return Err(refuse("ek_cert_chain", "the TPM has no EK certificate; this verifier enrolls only TPMs whose EK a manufacturer CA certified"));
        };
        let cas: Vec<&[u8]> = self.ek_cas.iter().map(Vec::as_slice).collect();
        let ek = core::verify_ek(ek_cert, &req.ek_public, &cas, UnixTime(now()))
            .map_err(|e| refuse(e.check(), e.to_string()))?;
        let ak = core::check_ak(&req.ak_public).map_err(|e| refuse(e.check(), e.to_string()))?;
        let ek_cert_sha256 = hex::encode(ek.cert_sha256);
        match self.store.node_by_name(&req.name) {
            Ok(Some(n)) if n.ek_cert_sha256.as_deref() != Some(ek_cert_sha256.as_str()) => {
                return Err(refuse(
                    "node_name",
                    format!("`{}` is enrolled with another TPM", req.name),
                ))
            }
            Ok(_) => {}
            Err(e) => return Err(refuse("store", e.to_string())),
        }
        // By the EK-derived node id, not the name: a revoked TPM stays revoked under any
        // name it asks for.
        refuse_revoked(self.store.node(&node_id(&ek_cert_sha256)))?;
        self.certifiable_host(&req, &node_id(&ek_cert_sha256))?;
        let mut secret = [0u8; 32];
        aws_lc_rs::rand::fill(&mut secret).map_err(|e| refuse("rng", e.to_string()))?;
        let cred = core::make_credential(&req.ek_public, &ak.name, &secret)
            .map_err(|e| refuse(e.check(), e.to_string()))?;
        let mut id = [0u8; 16];
        aws_lc_rs::rand::fill(&mut id).map_err(|e| refuse("rng", e.to_string()))?;
        let enrollment_id = hex::encode(id);
        let mut pending = self.enrollments.lock();
        let t = Instant::now();
        let of_this_ek = |pending: &HashMap<String, PendingEnrollment>| {
            pending
                .values()
                .filter(|p| p.ek_cert_sha256 == ek_cert_sha256 && p.expires > t)
                .count()
        };
        // Per EK: replaying one certified EK certificate (public) cannot fill the table
        // every enrolling node shares. A TPM needs one; a second covers a retry.
        if pending.len() >= MAX_PENDING || of_this_ek(&pending) >= MAX_PENDING_PER_EK {
            pending.retain(|_, p| p.expires > t);
            if of_this_ek(&pending) >= MAX_PENDING_PER_EK {
                return Err(refuse(
                    "busy",
                    format!(
                        "this TPM has {MAX_PENDING_PER_EK} enrollments in progress; finish one or wait {} s",
                        PENDING_TTL.as_secs()
                    ),
                ));
            }
            if pending.len() >= MAX_PENDING {
                return Err(refuse("busy", "too many enrollments in progress"));
            }
        }
        pending.insert(
            enrollment_id.clone(),
            PendingEnrollment {
                request: req,
                secret,
                ek_cert_sha256,
                expires: Instant::now() + PENDING_TTL,
            },
        );
        Ok(EnrollChallenge {
            enrollment_id,
            id_object: cred.id_object,
            encrypted_secret: cred.encrypted_secret,
        })
    }

    /// Step 2: the TPM released the secret; register the node and certify its TLS key.
    #[tracing::instrument(skip_all)]
    pub fn enroll_finish(&self, req: ActivateRequest) -> Result<Enrolled, Refusal> {
        let r = self.enroll_finish_inner(req);
        let counter = match &r {
            Ok(_) => &self.metrics.enrollments_ok,
            Err(_) => &self.metrics.enrollments_refused,
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Err(f) = &r {
            tracing::warn!(check = %f.check, detail = %f.detail, "enrollment refused");
        }
        r
    }

    fn enroll_finish_inner(&self, req: ActivateRequest) -> Result<Enrolled, Refusal> {
        // Single use: removed before anything else, so a wrong guess burns the challenge.
        let p = self
            .enrollments
            .lock()
            .remove(&req.enrollment_id)
            .ok_or_else(|| {
                refuse(
                    "enrollment",
                    "no such pending enrollment (unknown, used or expired)",
                )
            })?;
        if Instant::now() > p.expires {
            return Err(refuse("enrollment", "the credential challenge expired"));
        }
        // The proof binds the activation to the request this verifier holds: a relay
        // that swapped the TLS key or an endpoint fails here.
        let want =
            enrollment_proof(&p.secret, &p.request).map_err(|e| refuse("message_format", e.to_string()))?;
        if aws_lc_rs::constant_time::verify_slices_are_equal(&req.proof, &want).is_err() {
            return Err(refuse(
                "enrollment_binding",
                "the activation proof does not match: the request was altered on its way here, or the AK is not in the TPM that holds this EK",
            ));
        }
        let at = now();
        let id = node_id(&p.ek_cert_sha256);
        // Checked early for a clear answer; enroll_node checks again in its transaction,
        // where a revocation that committed meanwhile is seen.
        refuse_revoked(self.store.node(&id))?;
        // Checked again: another node may have taken the host meanwhile.
        let host = self.certifiable_host(&p.request, &id)?;
        let cert = self
            .pki
            .issue_node(&id, &host, &p.request.tls_spki, self.cfg.node_cert_hours)
            .map_err(|e| refuse("tls_key", e.to_string()))?;
        let fresh = NodeRecord {
            id: id.clone(),
            name: p.request.name.clone(),
            group: "default".to_owned(),
            endpoint: p.request.endpoint.clone(),
            state: NodeState::Enrolled,
            reason: None,
            ek_cert_sha256: Some(p.ek_cert_sha256.clone()),
            ek_public: p.request.ek_public.clone(),
            ak_public: p.request.ak_public.clone(),
            enrolled_at: at,
            updated_at: at,
            last_round_at: None,
            failures: 0,
            tpm_clock: None,
            locality_endpoint: p.request.locality_endpoint.clone(),
            move_endpoint: p.request.move_endpoint.clone(),
            session_keys: None,
        };
        let was_removed = self
            .store
            .removed_at(&fresh.id)
            .map_err(|e| refuse("store", e.to_string()))?
            .is_some();
        let ek_cert_sha256 = p.ek_cert_sha256.clone();
        let entry = |previous: Option<&NodeRecord>| {
            let (node, restart_clock) = merge(&fresh, previous);
            // An agent keeps its AK across restarts (state_dir/ak.tpm); a new AK on the
            // same EK means the TPM was cleared or the agent's state lost, worth an
            // auditor's look.
            let ak_changed = previous.map(|n| n.ak_public != node.ak_public);
            custody_audit::Entry::Enrollment(custody_audit::entry::EnrollmentEntry {
                node: node.id.clone(),
                name: node.name.clone(),
                at,
                ek_cert_sha256: Some(ek_cert_sha256.clone()),
                ak_sha256: hex::encode(
                    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &node.ak_public).as_ref(),
                ),
                endpoint: node.endpoint.clone(),
                re_enrollment: previous.is_some(),
                ak_changed,
                state: node.state.as_str().into(),
                failures: node.failures,
                clock_baseline_restarted: restart_clock,
            })
        };
        // The enrollment and its entry commit together: one that cannot be logged fails.
        let enrolled = {
            let _gate = self.db_writes();
            self.store.enroll_node(&fresh, &entry, &mut self.audit())
        };
        let previous = match enrolled {
            Ok(prev) => prev,
            Err(StoreError::Revoked { id, name, reason }) => {
                return Err(refuse(
                    "revoked",
                    format!("this TPM's node `{name}` ({id}) was revoked ({reason}); an operator must remove it first (custody nodes remove)"),
                ))
            }
            Err(StoreError::NameTaken(name)) => {
                return Err(refuse("node_name", format!("`{name}` is enrolled with another TPM")))
            }
            Err(e) => return Err(refuse("store", e.to_string())),
        };
        if was_removed {
            // Off the deny list: the agents hear it now, not at their next round.
            self.deny_changed();
        }
        let (node, restart_clock) = merge(&fresh, previous.as_ref());
        let ak_changed = previous.as_ref().map(|n| n.ak_public != node.ak_public);
        let kind = if previous.is_some() {
            "re_enrolled"
        } else {
            "enrolled"
        };
        self.emit(
            &node,
            kind,
            serde_json::json!({
                "endpoint": node.endpoint,
                "ak_changed": ak_changed,
                "state": node.state.as_str(),
                "failures": node.failures,
                "clock_baseline_restarted": restart_clock,
            }),
        )
        .map_err(|e: ServiceError| refuse("store", e.to_string()))?;
        Ok(Enrolled {
            node_id: id,
            certificate_pem: cert,
            ca_pem: self.pki.ca_pem().to_owned(),
            verifier_key: self.ear_key.public_key().as_sec1().to_vec(),
        })
    }
}

impl Service {
    /// The endpoint host node `node` may have in its certificate (see the module
    /// documentation), and its locality endpoint checked against it.
    fn certifiable_host(&self, req: &EnrollRequest, node: &str) -> Result<String, Refusal> {
        let host = endpoint_host(&req.endpoint)
            .ok_or_else(|| refuse("endpoint", format!("`{}` is not host:port", req.endpoint)))?;
        let loopback = host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
        if !loopback {
            if self
                .cfg
                .server_names
                .iter()
                .any(|n| canonical_host(n).as_deref() == Some(host.as_str()))
            {
                return Err(refuse(
                    "endpoint",
                    format!("`{host}` is one of this verifier's own names"),
                ));
            }
            let nodes = self.store.nodes().map_err(|e| refuse("store", e.to_string()))?;
            if let Some(other) = nodes
                .iter()
                .find(|n| n.id != node && endpoint_host(&n.endpoint).as_deref() == Some(host.as_str()))
            {
                return Err(refuse(
                    "endpoint",
                    format!("`{host}` is the endpoint host of node `{}`", other.name),
                ));
            }
        }
        if let Some(l) = &req.locality_endpoint {
            let lh = endpoint_host(l)
                .ok_or_else(|| refuse("locality_endpoint", format!("`{l}` is not host:port")))?;
            let allowed = lh == host
                || self
                    .cfg
                    .allowed_locality_hosts
                    .iter()
                    .any(|a| canonical_host(a).as_deref() == Some(lh.as_str()));
            if !allowed {
                return Err(refuse(
                    "locality_endpoint",
                    format!(
                        "`{l}` is not on the node's endpoint host `{host}` nor in `allowed_locality_hosts`: the verifier and landmarks would connect there"
                    ),
                ));
            }
        }
        Ok(host)
    }

    /// The node a node certificate names, if it may still use it: not removed, not
    /// revoked. Every node route asks, so a certificate outliving its node opens nothing.
    pub fn node_in_standing(&self, id: &str) -> Result<NodeRecord, Refusal> {
        match self.store.node(id) {
            Ok(None) => Err(refuse(
                "node_removed",
                format!("node `{id}` was removed; its certificate no longer opens any route"),
            )),
            Ok(Some(n)) if n.state == NodeState::Revoked => Err(refuse(
                "revoked",
                format!(
                    "node `{}` ({id}) is revoked ({})",
                    n.name,
                    n.reason.clone().unwrap_or_default()
                ),
            )),
            Ok(Some(n)) => Ok(n),
            Err(e) => Err(refuse("store", e.to_string())),
        }
    }

    /// `POST /v1/renew`: a new certificate for node `id` (from its current mTLS
    /// certificate) and the TLS key it sends, while the node is in standing.
    pub fn renew(&self, id: &str, req: RenewRequest) -> Result<Renewed, Refusal> {
        let n = self.node_in_standing(id)?;
        let host = endpoint_host(&n.endpoint).ok_or_else(|| {
            refuse(
                "endpoint",
                format!("stored endpoint `{}` is not certifiable", n.endpoint),
            )
        })?;
        let certificate_pem = self
            .pki
            .issue_node(&n.id, &host, &req.tls_spki, self.cfg.node_cert_hours)
            .map_err(|e| refuse("tls_key", e.to_string()))?;
        tracing::info!(node = %n.id, "node certificate renewed");
        Ok(Renewed { certificate_pem })
    }
}

/// The stored node, unless it is revoked: then the refusal every enrollment of that TPM
/// gets until an operator removes the node (`custody nodes remove`).
fn refuse_revoked(
    stored: Result<Option<NodeRecord>, crate::store::StoreError>,
) -> Result<Option<NodeRecord>, Refusal> {
    match stored {
        Ok(Some(n)) if n.state == NodeState::Revoked => Err(refuse(
            "revoked",
            format!(
                "this TPM's node `{}` ({}) was revoked ({}); an operator must remove it first (custody nodes remove)",
                n.name,
                n.id,
                n.reason.unwrap_or_default()
            ),
        )),
        Ok(n) => Ok(n),
        Err(e) => Err(refuse("store", e.to_string())),
    }
}

/// What a node is once enrolled: the request's name, keys and endpoints; the TPM's
/// state, failures and group, which survive re-enrollment; and whether the TPM clock
/// baseline restarted (the credential was activated with a new AK on the same EK: a
/// cleared TPM, or lost agent state, proves the TPM anew, and TPM2_Clear sets the reset
/// counters back, so the old baseline would fail every round).
fn merge(fresh: &NodeRecord, previous: Option<&NodeRecord>) -> (NodeRecord, bool) {
    let restart_clock = previous.is_some_and(|n| n.ak_public != fresh.ak_public);
    let node = match previous {
        None => fresh.clone(),
        Some(prev) => NodeRecord {
            state: prev.state,
            reason: prev.reason.clone(),
            failures: prev.failures,
            group: prev.group.clone(),
            last_round_at: prev.last_round_at,
            tpm_clock: if restart_clock { None } else { prev.tpm_clock },
            ..fresh.clone()
        },
    };
    (node, restart_clock)
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_endpoints() {
        assert!(valid_name("node-1.eu_west"));
        assert!(!valid_name(""));
        assert!(!valid_name("a b"));
        assert!(!valid_name(&"x".repeat(65)));
        assert!(!valid_name("n-0123456789abcdef"), "the shape of a node id");
        assert!(!valid_name("n-0123456789ABCDEF"));
        assert!(valid_name("n-01234567"));
        assert!(valid_name("n-0123456789abcdefg"));
        assert_eq!(endpoint_host("127.0.0.1:8443").as_deref(), Some("127.0.0.1"));
        assert_eq!(endpoint_host("[::1]:8443").as_deref(), Some("::1"));
        assert_eq!(endpoint_host("node.example:1").as_deref(), Some("node.example"));
        assert_eq!(endpoint_host("nohost"), None);
        assert_eq!(endpoint_host("h:0"), None);
        assert_eq!(endpoint_host(":80"), None);
        assert_eq!(endpoint_host("Node.Example:1").as_deref(), Some("node.example"));
        for bad in [
            "*.example:1",
            "a@b:1",
            "a?b:1",
            "a_b:1",
            "-a.example:1",
            "a-.example:1",
            "a..b:1",
            "[node.example]:1",
            "1.2.3:1",
            "a/b:1",
        ] {
            assert_eq!(endpoint_host(bad), None, "{bad}");
        }
        assert_eq!(node_id("0123456789abcdef0123"), "n-0123456789abcdef");
    }
}
