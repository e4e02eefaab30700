//! Where has a job been? The answer read from the log's `migration` entries alone, so an
//! auditor gets it from a verified export without the operator's database.
//!
//! The verifier writes, per move: `ticket_issued` (source and destination as appraised
//! just before: node, site, country, operator, evidence and result digests), then
//! `placed` (the destination's signed receipt) or `failed`; a move refused before any
//! ticket is one `refused` entry. A job's stays follow from the placed moves: it was at
//! the first move's source before the log saw it, and at each destination from the
//! receipt's completion time until the next placed move.

use crate::Entry;
use serde::Serialize;
use serde_json::Value;

/// A node as the verifier appraised it when it issued a ticket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Place {
    pub node: String,
    pub name: String,
    pub site: String,
    pub site_name: String,
    pub country: String,
    pub operator: String,
    pub operator_country: String,
    /// Digest of the evidence bundle of that appraisal (hex).
    pub evidence_sha256: String,
    /// Digest of the signed attestation result (EAR) of that appraisal (hex).
    pub ear_sha256: String,
    pub appraised_at: Option<i64>,
}

impl Place {
    fn from_json(v: Option<&Value>, fallback_node: Option<&Value>) -> Self {
        let get = |k: &str| v.and_then(|v| v.get(k));
        let s = |k: &str| get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
        let node = match get("node").and_then(Value::as_str) {
            Some(n) => n.to_owned(),
            None => fallback_node
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
        };
        Place {
            node,
            name: s("name"),
            site: s("site"),
            site_name: s("site_name"),
            country: s("country"),
            operator: s("operator"),
            operator_country: s("operator_country"),
            evidence_sha256: s("evidence_sha256"),
            ear_sha256: s("ear_sha256"),
            appraised_at: get("appraised_at").and_then(Value::as_i64),
        }
    }

    /// `name (site, country)`, or the node id where the entry named no more.
    pub fn label(&self) -> String {
        let who = if self.name.is_empty() {
            &self.node
        } else {
            &self.name
        };
        match (self.site.is_empty(), self.country.is_empty()) {
            (true, true) => who.clone(),
            (false, true) => format!("{who} ({})", self.site),
            (true, false) => format!("{who} ({})", self.country),
            (false, false) => format!("{who} ({}, {})", self.site, self.country),
        }
    }
}

/// How a ticketed move ended, as far as the log knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The destination's receipt was verified.
    Placed,
    /// The transfer failed; the job stayed at the source.
    Failed,
    /// A ticket was issued and nothing more is logged (in flight, or the verifier stopped).
    Open,
}

/// One ticketed move.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Move {
    pub ticket: String,
    /// Log index of the `ticket_issued` entry.
    pub entry: u64,
    pub issued_at: Option<i64>,
    pub source: Place,
    pub destination: Place,
    pub policy_id: String,
    pub policy_digest: String,
    pub manifest_sha256: String,
    pub outcome: Outcome,
    /// Log index of the `placed` or `failed` entry.
    pub outcome_entry: Option<u64>,
    pub completed_at: Option<i64>,
    pub bytes: Option<u64>,
    pub receipt_sha256: Option<String>,
    /// The source deleted its copy after the receipt verified (`--delete-source`).
    pub source_released: bool,
    /// For a failed move: the check that failed and why.
    pub check: Option<String>,
    pub detail: Option<String>,
}

/// A move refused before a ticket existed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RefusedMove {
    pub entry: u64,
    pub at: Option<i64>,
    pub source: String,
    pub destination: String,
    pub check: String,
    pub detail: String,
    pub reasons: Vec<String>,
}

/// A period the job's checkpoint was held at one place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stay {
    pub place: Place,
    /// When it arrived (receipt time); `None`: before the first move the log records.
    pub since: Option<i64>,
    /// When the next placed move completed; `None`: still there.
    pub until: Option<i64>,
    /// The log entry that shows the job here (the `placed` entry, or the first
    /// `ticket_issued` naming this place as source).
    pub entry: u64,
}

/// Everything the log says about one job.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct JobHistory {
    pub job: String,
    pub stays: Vec<Stay>,
    pub moves: Vec<Move>,
    pub refused: Vec<RefusedMove>,
    /// Places a move started from that the log never showed the job arriving at
    /// (a checkpoint brought there outside the verifier, e.g. before the log began).
    pub unexplained: Vec<u64>,
}

fn str_of(v: &Value, k: &str) -> String {
    v.get(k).and_then(Value::as_str).unwrap_or_default().to_owned()
}

/// The history of `job` from `(index, entry)` pairs in log order.
pub fn job_history<'a>(job: &str, entries: impl IntoIterator<Item = (u64, &'a Entry)>) -> JobHistory {
    let mut h = JobHistory {
        job: job.to_owned(),
        ..JobHistory::default()
    };
    for (index, entry) in entries {
        let Entry::Migration(v) = entry else { continue };
        if v.get("job").and_then(Value::as_str) != Some(job) {
            continue;
        }
        let at = v.get("at").and_then(Value::as_i64);
        match v.get("outcome").and_then(Value::as_str).unwrap_or_default() {
            "ticket_issued" => h.moves.push(Move {
                ticket: str_of(v, "ticket"),
                entry: index,
                issued_at: at,
                source: Place::from_json(v.get("source_at"), v.get("source")),
                destination: Place::from_json(v.get("destination_at"), v.get("destination")),
                policy_id: str_of(v, "policy_id"),
                policy_digest: str_of(v, "policy_digest"),
                manifest_sha256: str_of(v, "manifest_sha256"),
                outcome: Outcome::Open,
                outcome_entry: None,
                completed_at: None,
                bytes: None,
                receipt_sha256: None,
                source_released: false,
                check: None,
                detail: None,
            }),
            outcome @ ("placed" | "failed") => {
                let ticket = str_of(v, "ticket");
                // The latest open move with this ticket; a second ending for one ticket
                // is ignored (the verifier writes one).
                let Some(m) = h
                    .moves
                    .iter_mut()
                    .rev()
                    .find(|m| m.ticket == ticket && m.outcome == Outcome::Open)
                else {
                    continue;
                };
                m.outcome_entry = Some(index);
                if outcome == "placed" {
                    m.outcome = Outcome::Placed;
                    m.completed_at = v.get("completed_at").and_then(Value::as_i64).or(at);
                    m.bytes = v.get("bytes").and_then(Value::as_u64);
                    m.receipt_sha256 = v.get("receipt_sha256").and_then(Value::as_str).map(str::to_owned);
                    m.source_released = v.get("source_released").and_then(Value::as_bool) == Some(true);
                } else {
                    m.outcome = Outcome::Failed;
                    m.completed_at = at;
                    m.check = v.get("check").and_then(Value::as_str).map(str::to_owned);
                    m.detail = v.get("detail").and_then(Value::as_str).map(str::to_owned);
                }
            }
            "refused" => h.refused.push(RefusedMove {
                entry: index,
                at,
                source: str_of(v, "source"),
                destination: str_of(v, "destination"),
                check: str_of(v, "check"),
                detail: str_of(v, "detail"),
                reasons: v
                    .get("reasons")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
                    .unwrap_or_default(),
            }),
            _ => {}
        }
    }
    // Stays from the placed moves, in the order their receipts were logged.
    let mut placed: Vec<&Move> = h.moves.iter().filter(|m| m.outcome == Outcome::Placed).collect();
    placed.sort_by_key(|m| m.outcome_entry);
    for m in placed {
        let here = h.stays.last().map(|s| s.place.node.clone());
        if here.as_deref() != Some(m.source.node.as_str()) {
            if here.is_some() {
                h.unexplained.push(m.entry);
            }
            if let Some(last) = h.stays.last_mut() {
                last.until.get_or_insert(m.issued_at.unwrap_or_default());
            }
            h.stays.push(Stay {
                place: m.source.clone(),
                since: None,
                until: None,
                entry: m.entry,
            });
        }
        if let Some(last) = h.stays.last_mut() {
            last.until = m.completed_at;
        }
        h.stays.push(Stay {
            place: m.destination.clone(),
            since: m.completed_at,
            until: None,
            entry: m.outcome_entry.unwrap_or(m.entry),
        });
    }
    // A job that never moved but had a ticket issued: it is known at the source.
    if h.stays.is_empty() {
        if let Some(m) = h.moves.first() {
            h.stays.push(Stay {
                place: m.source.clone(),
                since: None,
                until: None,
                entry: m.entry,
            });
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn place(node: &str, site: &str, country: &str) -> Value {
        json!({"node": node, "name": format!("{node}-name"), "site": site, "site_name": site,
               "country": country, "operator": "Op", "operator_country": country,
               "evidence_sha256": "ee", "ear_sha256": "aa", "appraised_at": 5})
    }

    fn issued(job: &str, t: &str, a: (&str, &str, &str), b: (&str, &str, &str), at: i64) -> Entry {
        Entry::Migration(json!({"outcome": "ticket_issued", "ticket": t, "job": job,
            "source": a.0, "destination": b.0, "policy_id": "eu-sovereign", "policy_digest": "pd",
            "manifest_sha256": "md", "at": at,
            "source_at": place(a.0, a.1, a.2), "destination_at": place(b.0, b.1, b.2)}))
    }

    fn placed(job: &str, t: &str, at: i64) -> Entry {
        Entry::Migration(json!({"outcome": "placed", "ticket": t, "job": job, "bytes": 42,
            "completed_at": at, "receipt_sha256": "rr", "at": at}))
    }

    const PAR: (&str, &str, &str) = ("a", "par-1", "FR");
    const FRA: (&str, &str, &str) = ("b", "fra-1", "DE");
    const AMS: (&str, &str, &str) = ("c", "ams-1", "NL");

    fn history(job: &str, log: &[Entry]) -> JobHistory {
        job_history(job, log.iter().enumerate().map(|(i, e)| (i as u64, e)))
    }

    #[test]
    fn two_moves_give_three_stays() {
        let log = vec![
            Entry::Enrollment(json!({"node": "a"})),
            issued("j", "t1", PAR, FRA, 10),
            issued("other", "t9", FRA, AMS, 11),
            placed("j", "t1", 12),
            issued("j", "t2", FRA, AMS, 20),
            Entry::Migration(
                json!({"outcome": "placed", "ticket": "t2", "job": "j", "bytes": 42,
                "completed_at": 22, "receipt_sha256": "rr", "source_released": true, "at": 22}),
            ),
        ];
        let h = history("j", &log);
        assert_eq!(h.moves.len(), 2);
        assert!(!h.moves[0].source_released && h.moves[1].source_released);
        assert!(h.moves.iter().all(|m| m.outcome == Outcome::Placed));
        let stays: Vec<_> = h
            .stays
            .iter()
            .map(|s| {
                (
                    s.place.site.as_str(),
                    s.place.country.as_str(),
                    s.since,
                    s.until,
                    s.entry,
                )
            })
            .collect();
        assert_eq!(
            stays,
            vec![
                ("par-1", "FR", None, Some(12), 1),
                ("fra-1", "DE", Some(12), Some(22), 3),
                ("ams-1", "NL", Some(22), None, 5),
            ]
        );
        assert!(h.unexplained.is_empty());
        assert_eq!(h.stays[0].place.label(), "a-name (par-1, FR)");
    }

    #[test]
    fn failed_and_open_moves_leave_the_job_at_the_source() {
        let log = vec![
            issued("j", "t1", PAR, FRA, 10),
            Entry::Migration(json!({"outcome": "failed", "ticket": "t1", "job": "j",
                "check": "chunk_authentication", "detail": "flipped", "at": 11})),
            issued("j", "t2", PAR, AMS, 20),
        ];
        let h = history("j", &log);
        assert_eq!(h.moves[0].outcome, Outcome::Failed);
        assert_eq!(h.moves[0].check.as_deref(), Some("chunk_authentication"));
        assert_eq!(h.moves[1].outcome, Outcome::Open);
        assert_eq!(h.stays.len(), 1);
        assert_eq!(h.stays[0].place.node, "a");
        assert_eq!(h.stays[0].until, None);
    }

    #[test]
    fn refusals_are_listed_and_do_not_move_the_job() {
        let log = vec![Entry::Migration(
            json!({"outcome": "refused", "job": "j", "source": "a",
            "destination": "us", "check": "destination_attestation", "detail": "d",
            "reasons": ["operator Nimbus Inc (US) is exposed to the CLOUD Act"], "at": 3}),
        )];
        let h = history("j", &log);
        assert!(h.stays.is_empty() && h.moves.is_empty());
        assert_eq!(h.refused.len(), 1);
        assert_eq!(h.refused[0].check, "destination_attestation");
        assert_eq!(h.refused[0].reasons.len(), 1);
    }

    #[test]
    fn a_move_from_somewhere_the_job_never_arrived_is_flagged() {
        let log = vec![
            issued("j", "t1", PAR, FRA, 10),
            placed("j", "t1", 12),
            issued("j", "t2", AMS, PAR, 20),
            placed("j", "t2", 22),
        ];
        let h = history("j", &log);
        assert_eq!(h.unexplained, vec![2]);
        let nodes: Vec<_> = h.stays.iter().map(|s| s.place.node.as_str()).collect();
        assert_eq!(nodes, vec!["a", "b", "c", "a"]);
        // The stay at b ends when the unexplained move was ticketed.
        assert_eq!(h.stays[1].until, Some(20));
    }

    #[test]
    fn an_ending_without_a_ticket_or_a_second_ending_is_ignored() {
        let log = vec![
            placed("j", "nope", 5),
            issued("j", "t1", PAR, FRA, 10),
            placed("j", "t1", 12),
            Entry::Migration(json!({"outcome": "failed", "ticket": "t1", "job": "j", "at": 13})),
        ];
        let h = history("j", &log);
        assert_eq!(h.moves.len(), 1);
        assert_eq!(h.moves[0].outcome, Outcome::Placed);
        assert_eq!(h.moves[0].outcome_entry, Some(2));
        assert_eq!(h.stays.len(), 2);
    }

    #[test]
    fn an_unknown_job_has_no_history() {
        let log = vec![issued("j", "t1", PAR, FRA, 10)];
        assert_eq!(
            history("k", &log),
            JobHistory {
                job: "k".into(),
                ..JobHistory::default()
            }
        );
    }
}
