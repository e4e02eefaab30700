//! One attestation round, the I/O around the appraisal: issue the nonce, fetch the
//! evidence (or take it pushed), decode it once, load the context (node, reference
//! values), call `custody_appraisal::Appraiser::appraise` (whose module doc lists the
//! stages and their checks in order), decide the node's new state, commit the result
//! with its audit entry, respond.

use crate::store::{Event, NodeRecord, NodeState, ReferenceSource, ResultRecord};
use crate::{now, Service, ServiceError};
use custody_audit::entry::{self, Entry};
use custody_formats::api::{self, RoundRequest};
use custody_formats::binding::Nonce;
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

pub use custody_appraisal::{
    Appraisal, Appraiser, Arrived, Context, Extras, LandmarkOutcome, LocalityFailure, Received,
    REFERENCE_PENDING,
};

/// The appraisal's view of a node record.
pub fn node_facts(node: &NodeRecord) -> custody_appraisal::Node<'_> {
    custody_appraisal::Node {
        id: &node.id,
        name: &node.name,
        group: &node.group,
        state: node.state.as_str(),
        ak_public: &node.ak_public,
        ek_cert_sha256: node.ek_cert_sha256.as_deref(),
        tpm_clock: node.tpm_clock,
    }
}

/// The revocation collateral in use and when each item is due to be replaced, for
/// `/metrics` (`custody_collateral_next_update_timestamp_seconds`).
pub fn collateral(a: &Appraiser) -> Vec<crate::metrics::Collateral> {
    let mut out: Vec<_> = a
        .snp_crls()
        .iter()
        .map(|c| crate::metrics::Collateral {
            kind: "amd_crl",
            issuer: c.issuer().to_owned(),
            next_update: c.next_update,
        })
        .collect();
    if let Some(t) = a.tdx() {
        for set in t.collateral().iter() {
            out.push(crate::metrics::Collateral {
                kind: "tdx_collateral",
                issuer: format!("Intel PCS FMSPC {}", hex::encode_upper(set.fmspc())),
                next_update: Some(set.window().until),
            });
        }
    }
    out
}

/// A round appraised and its node's new state decided, waiting for its writes.
#[derive(Debug)]
pub(crate) struct Concluding {
    node: NodeRecord,
    previous: NodeState,
    passed: bool,
    a: Appraisal,
    at: i64,
    started: Instant,
}

/// What `custody attest` and the API print for a round.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct RoundSummary {
    pub node_id: String,
    pub name: String,
    pub state: NodeState,
    pub status: String,
    pub failed_check: Option<String>,
    pub reasons: Vec<String>,
    pub reference: Option<ReferenceSource>,
    pub result_id: i64,
    pub at: i64,
    pub duration_ms: u64,
}

/// The check of a round whose appraisal itself failed (see `prepare_conclusion`).
pub const APPRAISAL_ERROR: &str = "appraisal_error";
/// The check of a round the verifier could not run for its own reasons (out of file
/// descriptors, memory): recorded, never charged to the node.
pub const VERIFIER_ERROR: &str = "verifier_error";

/// Whose failure a failed round is, which decides what it does to the node's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Blame {
    /// Evidence was refused (or nothing a node sent could be appraised): counted towards
    /// revocation.
    Node,
    /// The node was silent, unreachable or refused the round, or its group's baseline
    /// awaits approval: the node is `failed`, but this never revokes it.
    NotCounted,
    /// The verifier's own trouble: nothing changes for the node.
    Verifier,
}

impl Blame {
    fn of(a: &Appraisal) -> Self {
        match a.failed_check.as_deref() {
            Some(VERIFIER_ERROR) => Self::Verifier,
            Some("agent_reachable" | "agent_round") => Self::NotCounted,
            // The verifier's TDX collateral is missing or out of date: the quote could not
            // be appraised, which is no evidence against the node.
            Some(custody_appraisal::tdx::COLLATERAL) => Self::NotCounted,
            _ if a.awaits_approval => Self::NotCounted,
            _ => Self::Node,
        }
    }
}

/// Releases a node's in-flight mark when the round ends, however it ends.
pub(crate) struct InFlight<'a> {
    svc: &'a Service,
    node: String,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.svc
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.node);
    }
}

impl Service {
    pub(crate) fn claim_round(&self, node_id: &str) -> Option<InFlight<'_>> {
        let mut set = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        set.insert(node_id.to_owned()).then(|| InFlight {
            svc: self,
            node: node_id.to_owned(),
        })
    }

    /// Pull one round from the node's agent now.
    #[tracing::instrument(skip(self), fields(node = %node_id))]
    pub async fn attest(self: &Arc<Self>, node_id: &str) -> Result<RoundSummary, ServiceError> {
        self.attest_appraised(node_id).await.map(|(s, _)| s)
    }

    /// [`Service::attest`], with the round's typed appraisal: what a migration decides
    /// on (this round's, not whichever round of the node was stored last).
    pub async fn attest_appraised(
        self: &Arc<Self>,
        node_id: &str,
    ) -> Result<(RoundSummary, Appraisal), ServiceError> {
        let node = self
            .store
            .node(node_id)?
            .ok_or_else(|| ServiceError::NoNode(node_id.into()))?;
        let started = Instant::now();
        let Some(_guard) = self.claim_round(&node.id) else {
            return Err(ServiceError::Busy(format!(
                "a round with `{}` is already running",
                node.name
            )));
        };
        let nonce = self
            .nonces
            .issue(&node.id)
            .map_err(|e| ServiceError::Core(e.to_string()))?;
        // The deny list rides along (see `deny`); without one the round still runs.
        let deny = match self.deny_list() {
            Ok(l) => Some(l.as_ref().clone()),
            Err(e) => {
                tracing::error!(error = %e, "no deny list for the round request");
                None
            }
        };
        let body = api::to_cbor("round request", &RoundRequest { nonce, deny })
            .map_err(|e| ServiceError::Core(e.to_string()))?;
        let url = format!("https://{}/v1/round", node.endpoint);
        let reply = match self.agents.for_node(&node.id) {
            Ok(c) => c.request(http::Method::POST, &url, Some(api::CBOR), body).await,
            Err(e) => Err(e),
        };
        // The nonce is spent whatever happened; evidence after its TTL is refused.
        let nonce_state = self.nonces.take(&nonce, &node.id);
        let arrived = match reply {
            // Out of descriptors or memory here: the verifier's trouble, not the node's.
            Err(e) if e.is_local() => Arrived::Nothing {
                check: VERIFIER_ERROR,
                detail: e.to_string(),
            },
            Err(e) => Arrived::Nothing {
                check: "agent_reachable",
                detail: e.to_string(),
            },
            Ok(r) if r.status != http::StatusCode::OK => Arrived::Nothing {
                check: "agent_round",
                detail: match api::from_cbor::<api::Refusal>("refusal", &r.body) {
                    Ok(f) => format!("agent refused the round: {}: {}", f.check, f.detail),
                    Err(_) => format!("agent answered HTTP {}", r.status),
                },
            },
            Ok(r) => match nonce_state {
                Err(e) => Arrived::Nothing {
                    check: "nonce",
                    detail: e.to_string(),
                },
                // Decoded once, here: the locality measurement and every stage read it.
                Ok(()) => Arrived::Bundle(Received::decode(&r.body)),
            },
        };
        let extras = match &arrived {
            Arrived::Bundle(b) => self.measure_locality(&node, b).await,
            Arrived::Nothing { .. } => Extras::default(),
        };
        // The appraisal runs here, as before; the commit is awaited without blocking
        // this worker thread.
        let (concluding, write) = self.prepare_conclusion(node, nonce, arrived, &extras, started)?;
        let result_id = self.commit_round_async(write).await?;
        self.finish_conclusion(concluding, result_id)
    }

    /// Locality proofs for the session key the bundle names: this verifier's own
    /// measurement and every remote landmark's, all at the same time. The appraisal
    /// checks each statement against the bundle's attested key; here the key is only
    /// read to know whom to expect.
    async fn measure_locality(&self, node: &NodeRecord, received: &Received) -> Extras {
        let Some(endpoint) = node.locality_endpoint.as_ref() else {
            return Extras::default();
        };
        let Ok(b) = &received.bundle else {
            return Extras::default();
        };
        let key = b.session_keys.ed25519;
        // Spawned first, so they run while this task measures.
        let mut remotes = tokio::task::JoinSet::new();
        for (i, l) in self.cfg.landmarks.iter().enumerate() {
            let req = custody_locality::remote::MeasureRequest::new(&node.id, endpoint, &key);
            let (url, id) = (l.url.clone(), l.id.clone());
            let timeout = Duration::from_millis(l.timeout_ms);
            let span = tracing::info_span!("remote_landmark", landmark = %id, %url);
            remotes.spawn(
                async move {
                    let outcome = custody_locality::remote::request_measurement(&url, &req, timeout)
                        .await
                        .map_err(|e| {
                            tracing::warn!(check = e.check(), error = %e, "remote landmark failed");
                            (e.check().to_owned(), e.to_string())
                        });
                    (
                        i,
                        LandmarkOutcome {
                            landmark: id,
                            outcome,
                        },
                    )
                }
                .instrument(span),
            );
        }
        let locality = match self.cfg.landmark.as_ref() {
            Some(landmark) => Some(self.measure_own(landmark, node, endpoint, key).await),
            None => None,
        };
        let mut remote = Vec::with_capacity(self.cfg.landmarks.len());
        while let Some(r) = remotes.join_next().await {
            if let Ok(r) = r {
                remote.push(r);
            }
        }
        remote.sort_by_key(|(i, _)| *i);
        Extras {
            locality,
            remote: remote.into_iter().map(|(_, o)| o).collect(),
        }
    }

    /// As a landmark: time challenges answered by the session key and sign what was
    /// measured.
    async fn measure_own(
        &self,
        landmark: &crate::config::Landmark,
        node: &NodeRecord,
        endpoint: &str,
        key: [u8; 32],
    ) -> LandmarkOutcome {
        let checked = |e: custody_locality::LocalityError| (e.check().to_owned(), e.to_string());
        let m = custody_locality::net::measure(
            endpoint,
            &landmark.id,
            &key,
            landmark.probes,
            Duration::from_secs(self.cfg.round_timeout_secs),
        )
        .await;
        let outcome = m.map_err(checked).and_then(|m| {
            m.statement(
                &landmark.id,
                custody_locality::LatLon::new(landmark.lat, landmark.lon),
                &node.id,
                key,
                // No processing time is subtracted: the bound errs on the far side.
                Duration::ZERO,
                now(),
            )
            .sign(&self.landmark_key)
            .map_err(checked)
        });
        LandmarkOutcome {
            landmark: landmark.id.clone(),
            outcome,
        }
    }

    /// Push mode: appraise a bundle the node sent with a nonce it asked for, and record
    /// it (blocking until written).
    pub fn appraise_pushed(
        &self,
        node_id: &str,
        bundle: &[u8],
    ) -> Result<(RoundSummary, Vec<u8>), ServiceError> {
        let (concluding, write) = self.prepare_pushed(node_id, bundle)?;
        let result_id = self.commit_round(write)?;
        self.finish_conclusion(concluding, result_id)
            .map(|(s, a)| (s, a.ear))
    }

    /// Push mode as the API runs it: the appraisal on a blocking thread, then the
    /// group commit awaited without holding that thread, then the rest.
    pub async fn push_round(
        self: Arc<Self>,
        node_id: String,
        bundle: axum::body::Bytes,
    ) -> Result<(RoundSummary, Vec<u8>), ServiceError> {
        // One round per node at a time, pushed or pulled; taken before the nonce is
        // spent, so a refused push costs the node nothing.
        let this = self.clone();
        let Some(_guard) = this.claim_round(&node_id) else {
            return Err(ServiceError::Busy(format!(
                "a round with node `{node_id}` is already running"
            )));
        };
        let svc = self.clone();
        let (concluding, write) = tokio::task::spawn_blocking(move || svc.prepare_pushed(&node_id, &bundle))
            .await
            .map_err(|e| ServiceError::Core(format!("appraisal task: {e}")))??;
        let result_id = self.commit_round_async(write).await?;
        if concluding.node.state == concluding.previous {
            // No event and no revocation entry to write: nothing here blocks.
            return self
                .finish_conclusion(concluding, result_id)
                .map(|(s, a)| (s, a.ear));
        }
        tokio::task::spawn_blocking(move || self.finish_conclusion(concluding, result_id))
            .await
            .map_err(|e| ServiceError::Core(format!("round task: {e}")))?
            .map(|(s, a)| (s, a.ear))
    }

    #[tracing::instrument(skip(self, bundle), fields(node = %node_id))]
    fn prepare_pushed(
        &self,
        node_id: &str,
        bundle: &[u8],
    ) -> Result<(Concluding, crate::commit::RoundWrite), ServiceError> {
        let started = Instant::now();
        let node = self
            .store
            .node(node_id)?
            .ok_or_else(|| ServiceError::NoNode(node_id.into()))?;
        // Decoded once. The nonce is read from the bundle only to find the issued one;
        // appraisal then checks the whole bundle against it. A bundle that does not decode
        // has no nonce to spend and fails `bundle_format`.
        let received = Received::decode(bundle);
        let (nonce, arrived) = match &received.bundle {
            Err(_) => (Nonce([0; 32]), Arrived::Bundle(received)),
            Ok(b) => {
                let nonce = b.nonce;
                match self.nonces.take(&nonce, &node.id) {
                    Ok(()) => (nonce, Arrived::Bundle(received)),
                    Err(e) => (
                        nonce,
                        Arrived::Nothing {
                            check: "nonce",
                            detail: e.to_string(),
                        },
                    ),
                }
            }
        };
        // Push rounds carry no locality proof: the verifier measures only rounds it pulls.
        // This round's own EAR is returned (not re-read from the store: another round of
        // the same node may have been stored meanwhile, and the read cost 7 % of a round).
        self.prepare_conclusion(node, nonce, arrived, &Extras::default(), started)
    }

    /// Appraise and decide the node's new state: what the round will write, and what is
    /// left to do once it is written ([`Service::finish_conclusion`]).
    fn prepare_conclusion(
        &self,
        mut node: NodeRecord,
        nonce: Nonce,
        arrived: Arrived,
        extras: &Extras,
        started: Instant,
    ) -> Result<(Concluding, crate::commit::RoundWrite), ServiceError> {
        let at = now();
        let reference = self.store.reference(&node.group)?;
        let cx = Context {
            node: node_facts(&node),
            nonce: &nonce,
            reference: reference.as_ref(),
            mode: self.cfg.reference,
            at,
            ear_ttl: self.cfg.ear_ttl_secs,
        };
        let appraise = |arrived: &Arrived| self.appraiser.appraise(&cx, arrived, extras, &self.ear_key);
        // Nothing a node sends may end its round without a result: an error anywhere in
        // the appraisal (a policy past its limits, a claim that will not encode) is a
        // failed round at `appraisal_error`, recorded and counted like any other.
        let a = match appraise(&arrived) {
            Ok(a) => a,
            Err(e) => {
                self.metrics
                    .appraisal_errors
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(node = %node.name, error = %e, "appraisal failed; recorded as a failed round");
                appraise(&Arrived::Nothing {
                    check: APPRAISAL_ERROR,
                    detail: e.to_string(),
                })
                .map_err(|e| ServiceError::Core(e.to_string()))?
            }
        };
        let previous = node.state;
        let passed = a.failed_check.is_none();
        let blame = Blame::of(&a);
        if passed {
            node.failures = 0;
            node.reason = None;
            if node.state != NodeState::Revoked {
                node.state = NodeState::Trusted;
            }
        } else if blame == Blame::Verifier {
            // The node's state stays what it was; the result records what happened.
        } else if blame == Blame::NotCounted {
            // Failed (untrusted: no moves to it, the reason says why) but never revoked
            // for it: being silent or unreachable, or waiting for the operator's approval.
            node.reason = Some(a.reasons.join("; "));
            if node.state != NodeState::Revoked {
                node.state = NodeState::Failed;
            }
        } else {
            node.failures = node.failures.saturating_add(1);
            node.reason = Some(a.reasons.join("; "));
            if node.state != NodeState::Revoked {
                node.state = if node.failures >= self.cfg.revoke_after {
                    NodeState::Revoked
                } else {
                    NodeState::Failed
                };
            }
        }
        if let Some(c) = a.tpm_clock {
            if passed {
                node.tpm_clock = Some(c);
            }
        }
        if passed {
            node.session_keys = a.session_keys.as_ref().map(|k| {
                let mut b = k.x25519.to_vec();
                b.extend_from_slice(&k.ed25519);
                hex::encode(b)
            });
        }
        node.last_round_at = Some(at);
        node.updated_at = at;
        if let (Some(learned), true) = (&a.learned, passed || a.awaits_approval) {
            // Only if still absent (one statement): two nodes of a new group racing their
            // first round must not both define the baseline.
            if self.store.learn_reference(&node.group, learned)? {
                self.emit(
                    &node,
                    "reference_learned",
                    serde_json::json!({
                        "group": node.group,
                        "source": "tofu",
                        "pending": learned.pending,
                        "note": if learned.pending {
                            "proposed on first use: decides nothing until an operator approves it"
                        } else {
                            "trust on first use: these PCR values were not provisioned by the operator"
                        },
                    }),
                )?;
            }
        }
        let record = ResultRecord {
            id: 0,
            node_id: node.id.clone(),
            at,
            status: a.status.as_str().into(),
            failed_check: a.failed_check.clone(),
            reasons: a.reasons.clone(),
            ear: a.ear.clone(),
            evidence_sha256: a.evidence_sha256.clone(),
            input: Some(a.input.to_string()),
        };
        let entry = Entry::AttestationResult(entry::ResultEntry {
            node: node.id.clone(),
            name: node.name.clone(),
            at,
            status: a.status.as_str().into(),
            failed_check: a.failed_check.clone(),
            policy_id: self.appraiser.policy.id().into(),
            policy_digest: self.appraiser.policy.digest().into(),
            registry_version: a
                .input
                .pointer("/sovereignty/registry/version")
                .and_then(serde_json::Value::as_u64),
            registry_digest: a
                .input
                .pointer("/sovereignty/registry/digest")
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned),
            reference: a.reference_source.map(|r| r.as_str().to_owned()),
            evidence_sha256: a.evidence_sha256.clone(),
            ear_sha256: hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &a.ear).as_ref()),
        });
        let mut audit = vec![entry];
        if node.state == NodeState::Revoked && previous != NodeState::Revoked {
            // The revocation is a decision too: its entry commits with the state change.
            audit.push(Entry::Revocation(entry::RevocationEntry {
                node: node.id.clone(),
                name: node.name.clone(),
                at,
                action: None,
                reason: node.reason.clone(),
                failed_check: a.failed_check.clone(),
                state: None,
                by: None,
                ek_cert_sha256: None,
            }));
        }
        let write = crate::commit::RoundWrite {
            node: node.clone(),
            record,
            audit,
        };
        Ok((
            Concluding {
                node,
                previous,
                passed,
                a,
                at,
                started,
            },
            write,
        ))
    }

    /// After the round's writes (which carried a revocation's audit entry): metrics, the
    /// state-change event, the log line, the summary.
    fn finish_conclusion(
        &self,
        c: Concluding,
        result_id: i64,
    ) -> Result<(RoundSummary, Appraisal), ServiceError> {
        let Concluding {
            node,
            previous,
            passed,
            a,
            at,
            started,
        } = c;
        let elapsed = started.elapsed();
        self.metrics.observe_round(passed, elapsed);
        if node.state == NodeState::Revoked && previous != NodeState::Revoked {
            self.deny_changed();
            self.metrics
                .revocations
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        if node.state != previous {
            self.emit(
                &node,
                node.state.as_str(),
                serde_json::json!({
                    "previous": previous.as_str(),
                    "reason": node.reason,
                    "failed_check": a.failed_check,
                }),
            )?;
        }
        match &a.failed_check {
            None => tracing::info!(node = %node.name, status = a.status.as_str(), "round passed"),
            Some(c) => {
                tracing::warn!(node = %node.name, check = %c, state = node.state.as_str(), "round failed")
            }
        }
        Ok((
            RoundSummary {
                node_id: node.id,
                name: node.name,
                state: node.state,
                status: a.status.as_str().into(),
                failed_check: a.failed_check.clone(),
                reasons: a.reasons.clone(),
                reference: a.reference_source,
                result_id,
                at,
                duration_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            },
            a,
        ))
    }

    /// Store an event, log it and send it to the webhooks.
    pub fn emit(&self, node: &NodeRecord, kind: &str, detail: serde_json::Value) -> Result<(), ServiceError> {
        let ev = Event {
            id: 0,
            at: now(),
            node_id: node.id.clone(),
            kind: kind.into(),
            detail,
        };
        let id = self.store.add_event(&ev)?;
        tracing::info!(node = %node.name, event = kind, detail = %ev.detail, "node event");
        self.events.send(Event { id, ..ev }, &node.name);
        Ok(())
    }
}

/// Continuous attestation: every node that is not revoked gets a round once per interval.
pub async fn schedule(svc: Arc<Service>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let interval = svc.cfg.interval_secs;
    let tick = Duration::from_secs(interval.clamp(1, 5));
    // Rounds in flight at most; the rest wait for the next tick.
    let limit = Arc::new(tokio::sync::Semaphore::new(256));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = stop.changed() => return,
        }
        let nodes = match svc.store.nodes() {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(error = %e, "cannot list nodes");
                continue;
            }
        };
        let t = now();
        for n in nodes {
            let due = n
                .last_round_at
                .is_none_or(|l| t.saturating_sub(l) >= i64::try_from(interval).unwrap_or(i64::MAX));
            if n.state == NodeState::Revoked || !due {
                continue;
            }
            let Ok(permit) = limit.clone().try_acquire_owned() else {
                break;
            };
            let s = svc.clone();
            tokio::spawn(async move {
                match s.attest(&n.id).await {
                    Ok(_) => {}
                    // Another round of this node is running: it records its own result.
                    Err(ServiceError::Busy(_)) => {}
                    Err(e) => tracing::warn!(node = %n.name, error = %e, "scheduled round not recorded"),
                }
                drop(permit);
            });
        }
    }
}
