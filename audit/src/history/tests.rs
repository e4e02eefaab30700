use super::*;
use crate::entry::{EnrollmentEntry, MoveFailed, MovePlaced, MoveRefused, TicketIssued};

fn place(node: &str, site: &str, country: &str) -> Appraised {
    let s = |v: &str| Some(v.to_owned());
    Appraised {
        node: node.into(),
        name: format!("{node}-name"),
        site: s(site),
        site_name: s(site),
        country: s(country),
        operator: s("Op"),
        operator_country: s(country),
        appraised_at: Some(5),
        status: s("affirming"),
        evidence_sha256: s("ee"),
        ear_sha256: s("aa"),
    }
}

fn issued(job: &str, t: &str, a: (&str, &str, &str), b: (&str, &str, &str), at: i64) -> Entry {
    Entry::Migration(MigrationEntry::TicketIssued(Box::new(TicketIssued {
        ticket: t.into(),
        job: job.into(),
        source: a.0.into(),
        destination: b.0.into(),
        policy_id: "eu-sovereign".into(),
        policy_digest: "pd".into(),
        manifest_sha256: "md".into(),
        bytes: 42,
        dst_x25519: "xx".into(),
        at,
        expires_at: at + 900,
        delete_source: false,
        transport: "wire".into(),
        ticket_cose: "d2".into(),
        source_at: Some(place(a.0, a.1, a.2)),
        destination_at: Some(place(b.0, b.1, b.2)),
    })))
}

fn placed_released(job: &str, t: &str, at: i64, released: bool) -> Entry {
    Entry::Migration(MigrationEntry::Placed(MovePlaced {
        ticket: t.into(),
        job: job.into(),
        source: "s".into(),
        destination: "d".into(),
        manifest_sha256: "md".into(),
        bytes: 42,
        completed_at: at,
        receipt_sha256: "rr".into(),
        receipt: "d2".into(),
        source_released: released,
        source_kept: Vec::new(),
        at,
    }))
}

fn placed(job: &str, t: &str, at: i64) -> Entry {
    placed_released(job, t, at, false)
}

fn failed(job: &str, t: &str, check: &str, at: i64) -> Entry {
    Entry::Migration(MigrationEntry::Failed(MoveFailed {
        ticket: t.into(),
        job: job.into(),
        source: "s".into(),
        destination: "d".into(),
        check: check.into(),
        detail: "flipped".into(),
        at,
    }))
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
        Entry::Enrollment(EnrollmentEntry {
            node: "a".into(),
            name: "a".into(),
            at: 1,
            ek_cert_sha256: None,
            ak_sha256: "ak".into(),
            endpoint: "127.0.0.1:1".into(),
            re_enrollment: false,
            ak_changed: None,
            state: "enrolled".into(),
            failures: 0,
            clock_baseline_restarted: false,
        }),
        issued("j", "t1", PAR, FRA, 10),
        issued("other", "t9", FRA, AMS, 11),
        placed("j", "t1", 12),
        issued("j", "t2", FRA, AMS, 20),
        placed_released("j", "t2", 22, true),
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
        failed("j", "t1", "chunk_authentication", 11),
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
    let log = vec![Entry::Migration(MigrationEntry::Refused(MoveRefused {
        job: "j".into(),
        source: "a".into(),
        destination: "us".into(),
        at: 3,
        check: "destination_attestation".into(),
        detail: "d".into(),
        reasons: vec!["operator Nimbus Inc (US) is exposed to the CLOUD Act".into()],
    }))];
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
        failed("j", "t1", "late", 13),
    ];
    let h = history("j", &log);
    assert_eq!(h.moves.len(), 1);
    assert_eq!(h.moves[0].outcome, Outcome::Placed);
    assert_eq!(h.moves[0].outcome_entry, Some(2));
    assert_eq!(h.stays.len(), 2);
}

#[test]
fn a_ticket_without_its_appraisals_still_names_the_nodes() {
    let mut e = issued("j", "t1", PAR, FRA, 10);
    if let Entry::Migration(MigrationEntry::TicketIssued(t)) = &mut e {
        t.source_at = None;
    }
    let h = history("j", &[e]);
    assert_eq!(h.moves[0].source.node, "a");
    assert_eq!(h.moves[0].source.label(), "a");
    assert_eq!(h.moves[0].destination.label(), "b-name (fra-1, DE)");
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
