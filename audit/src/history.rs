//! Where has a job been? The answer read from the log's `migration` entries alone, so an
//! auditor gets it from a verified export without the operator's database.
//!
//! The verifier writes, per move: `ticket_issued` (source and destination as appraised
//! just before: node, site, country, operator, evidence and result digests), then
//! `placed` (the destination's signed receipt) or `failed`; a move refused before any
//! ticket is one `refused` entry. A job's stays follow from the placed moves: it was at
//! the first move's source before the log saw it, and at each destination from the
//! receipt's completion time until the next placed move.

use crate::entry::{Appraised, MigrationEntry};
use crate::Entry;
use serde::Serialize;

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
    /// From a ticket's appraised place; only the node id when the entry has none.
    fn from_entry(a: Option<&Appraised>, node: &str) -> Self {
        let s = |v: Option<&String>| v.cloned().unwrap_or_default();
        match a {
            None => Place {
                node: node.to_owned(),
                name: String::new(),
                site: String::new(),
                site_name: String::new(),
                country: String::new(),
                operator: String::new(),
                operator_country: String::new(),
                evidence_sha256: String::new(),
                ear_sha256: String::new(),
                appraised_at: None,
            },
            Some(a) => Place {
                node: a.node.clone(),
                name: a.name.clone(),
                site: s(a.site.as_ref()),
                site_name: s(a.site_name.as_ref()),
                country: s(a.country.as_ref()),
                operator: s(a.operator.as_ref()),
                operator_country: s(a.operator_country.as_ref()),
                evidence_sha256: s(a.evidence_sha256.as_ref()),
                ear_sha256: s(a.ear_sha256.as_ref()),
                appraised_at: a.appraised_at,
            },
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

/// The history of `job` from `(index, entry)` pairs in log order.
pub fn job_history<'a>(job: &str, entries: impl IntoIterator<Item = (u64, &'a Entry)>) -> JobHistory {
    let mut h = JobHistory {
        job: job.to_owned(),
        ..JobHistory::default()
    };
    for (index, entry) in entries {
        let Entry::Migration(m) = entry else { continue };
        if m.job() != job {
            continue;
        }
        match m {
            MigrationEntry::TicketIssued(t) => h.moves.push(Move {
                ticket: t.ticket.clone(),
                entry: index,
                issued_at: Some(t.at),
                source: Place::from_entry(t.source_at.as_ref(), &t.source),
                destination: Place::from_entry(t.destination_at.as_ref(), &t.destination),
                policy_id: t.policy_id.clone(),
                policy_digest: t.policy_digest.clone(),
                manifest_sha256: t.manifest_sha256.clone(),
                outcome: Outcome::Open,
                outcome_entry: None,
                completed_at: None,
                bytes: None,
                receipt_sha256: None,
                source_released: false,
                check: None,
                detail: None,
            }),
            MigrationEntry::Placed(_) | MigrationEntry::Failed(_) => {
                let ticket = match m {
                    MigrationEntry::Placed(p) => &p.ticket,
                    MigrationEntry::Failed(f) => &f.ticket,
                    _ => continue,
                };
                // The latest open move with this ticket; a second ending for one ticket
                // is ignored (the verifier writes one).
                let Some(mv) = h
                    .moves
                    .iter_mut()
                    .rev()
                    .find(|mv| mv.ticket == *ticket && mv.outcome == Outcome::Open)
                else {
                    continue;
                };
                mv.outcome_entry = Some(index);
                match m {
                    MigrationEntry::Placed(p) => {
                        mv.outcome = Outcome::Placed;
                        mv.completed_at = Some(p.completed_at);
                        mv.bytes = Some(p.bytes);
                        mv.receipt_sha256 = Some(p.receipt_sha256.clone());
                        mv.source_released = p.source_released;
                    }
                    MigrationEntry::Failed(f) => {
                        mv.outcome = Outcome::Failed;
                        mv.completed_at = Some(f.at);
                        mv.check = Some(f.check.clone());
                        mv.detail = Some(f.detail.clone());
                    }
                    _ => {}
                }
            }
            MigrationEntry::Refused(r) => h.refused.push(RefusedMove {
                entry: index,
                at: Some(r.at),
                source: r.source.clone(),
                destination: r.destination.clone(),
                check: r.check.clone(),
                detail: r.detail.clone(),
                reasons: r.reasons.clone(),
            }),
            MigrationEntry::Exported(_) => {}
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
mod tests;
