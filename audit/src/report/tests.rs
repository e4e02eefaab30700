use super::*;
use crate::entry::{ResultEntry, RevocationEntry};

fn leaf(s: &str) -> Entry {
    Entry::from_leaf(s.as_bytes()).unwrap()
}

fn summary() -> AuditSummary {
    AuditSummary {
        origin: "custody.example/audit".into(),
        entries: 5,
        checkpoints: 2,
        root: "ab".repeat(32),
    }
}

fn log() -> Vec<Entry> {
    let place = |node: &str, site: &str, country: &str| {
        format!(
            r#"{{"appraised_at":8,"country":"{country}","ear_sha256":"ea","evidence_sha256":"ev","name":"{node}","node":"{node}","operator":"Op <b>","operator_country":"{country}","site":"{site}","site_name":"{site} DC","status":"affirming"}}"#
        )
    };
    let mut bad = ResultEntry::example("n-2", 12);
    bad.name = "<script>alert(1)</script>".into();
    bad.status = "contraindicated".into();
    vec![
        Entry::AttestationResult(ResultEntry::example("n-1", 10)),
        leaf(&format!(
            r#"{{"kind":"migration","body":{{"at":11,"bytes":42,"delete_source":false,"destination":"n-2","destination_at":{},"dst_x25519":"xx","expires_at":900,"job":"llama","manifest_sha256":"md","outcome":"ticket_issued","policy_digest":"pd","policy_id":"eu-sovereign","source":"n-1","source_at":{},"ticket":"t1aaaaaaaaaa","ticket_cose":"d2","transport":"wire"}}}}"#,
            place("n-2", "fra-1", "DE"),
            place("n-1", "par-1", "FR")
        )),
        leaf(
            r#"{"kind":"migration","body":{"at":12,"bytes":42,"completed_at":12,"destination":"n-2","job":"llama","manifest_sha256":"md","outcome":"placed","receipt":"d2","receipt_sha256":"rrrrrrrrrrrrrrrrrrrr","source":"n-1","source_kept":[],"source_released":false,"ticket":"t1aaaaaaaaaa"}}"#,
        ),
        Entry::AttestationResult(bad),
        Entry::Revocation(RevocationEntry {
            node: "n-2".into(),
            name: "<script>alert(1)</script>".into(),
            at: 13,
            action: None,
            reason: Some("reference_values: PCR 14".into()),
            failed_check: Some("reference_values".into()),
            state: None,
            by: None,
            ek_cert_sha256: None,
        }),
        leaf(
            r#"{"kind":"migration","body":{"at":14,"check":"destination_attestation","destination":"n-1","detail":"d","job":"llama","outcome":"refused","reasons":["operator under US control"],"source":"n-2"}}"#,
        ),
    ]
}

#[test]
fn the_report_holds_the_verified_numbers_and_escapes_what_the_log_says() {
    let r = build(&summary(), "custody.example/audit+abcd+KEY", &log(), &[]);
    assert_eq!(r.jobs.len(), 1);
    assert_eq!(r.jobs[0].stays.len(), 2);
    assert_eq!(r.jobs[0].refused.len(), 1);
    assert_eq!(r.sites.len(), 2);
    assert_eq!(r.nodes.len(), 2);
    let n2 = r.nodes.iter().find(|n| n.node == "n-2").unwrap();
    assert_eq!((n2.contraindicated, n2.revocations.len()), (1, 1));
    assert_eq!((r.first_at, r.last_at), (Some(10), Some(14)));

    let html = render(&r);
    for want in [
        "data-entries=\"5\"",
        "data-checkpoints=\"2\"",
        "data-stays=\"2\"",
        "data-refusals=\"1\"",
        "data-nodes=\"2\"",
        "data-sites=\"2\"",
        "operator under US control",
        "reference_values: PCR 14",
        "custody audit prove inclusion --index 4",
    ] {
        assert!(html.contains(want), "{want} not in the report");
    }
    // What a node or operator calls itself is text, never markup.
    assert!(!html.contains("<script>"), "unescaped markup");
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(html.contains("Op &lt;b&gt;"));
    // Nothing leaves the page: no URL anywhere, a CSP that forbids loading anything.
    assert!(!html.contains("http://") && !html.contains("https://") && !html.contains("src="));
    assert!(html.contains("default-src 'none'"));
}

#[test]
fn a_job_filter_keeps_only_the_jobs_asked_for() {
    let r = build(&summary(), "k", &log(), &["other".to_owned()]);
    assert_eq!(r.jobs.len(), 1);
    assert!(r.jobs[0].stays.is_empty());
}

#[test]
fn times_are_rfc3339_utc() {
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    assert_eq!(rfc3339(1_767_225_600), "2026-01-01T00:00:00Z");
    assert_eq!(rfc3339(1_709_164_799), "2024-02-28T23:59:59Z");
    assert_eq!(rfc3339(1_709_251_200), "2024-03-01T00:00:00Z");
    assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
}
