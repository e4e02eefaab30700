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

fn enrolled(node: &str, ek: &str) -> Entry {
    leaf(&format!(
        r#"{{"kind":"enrollment","body":{{"ak_changed":null,"ak_sha256":"aa","at":1,"ek_cert_sha256":"{ek}","endpoint":"https://{node}:8443","failures":0,"name":"{node}-name","node":"{node}","re_enrollment":false,"state":"trusted"}}}}"#
    ))
}

/// A registry version placing `ek -> site` with `par-1`'s operator exposed or not.
fn registry(version: u64, at: i64, bindings: &[(&str, &str)], par_exposed: bool) -> Entry {
    let site = |id: &str, cc: &str, lat: i32, lon: i32, op: &str, exposed: bool| {
        format!(
            r#"{{"cloud_act_exposed":{exposed},"country":"{cc}","id":"{id}","lat_e6":{lat},"lon_e6":{lon},"name":"{id} DC","operator":"{op}","operator_name":"{op} SAS"}}"#
        )
    };
    let hw = bindings
        .iter()
        .map(|(ek, s)| format!(r#"{{"id":"ek_sha256:{ek}","site":"{s}"}}"#))
        .collect::<Vec<_>>()
        .join(",");
    leaf(&format!(
        r#"{{"kind":"registry_change","body":{{"at":{at},"authority":"EU Registry","digest":"dd{version}","entities":2,"hardware":{},"kid":"kk","previous":null,"sites":3,"version":{version},"places":{{"sites":[{},{},{}],"hardware":[{hw}]}}}}}}"#,
        bindings.len(),
        site("par-1", "FR", 48_856_600, 2_352_200, "eurocloud", par_exposed),
        site("fra-1", "DE", 50_110_900, 8_682_100, "rhein", false),
        site("ams-1", "NL", 52_367_600, 4_904_100, "rhein", false),
    ))
}

/// The log the map and the registry history are drawn from: n-1 stays at par-1 whose
/// operator comes under US control in v2; n-2 moves fra-1 -> ams-1 in v2 and leaves the
/// registry in v3; n-3 never is in it.
fn placed_log() -> Vec<Entry> {
    let (ek1, ek2, ek3) = ("11".repeat(32), "22".repeat(32), "33".repeat(32));
    let mut passed = ResultEntry::example("n-1", 30);
    passed.name = "n-1-name".into();
    vec![
        enrolled("n-1", &ek1),
        enrolled("n-2", &ek2),
        enrolled("n-3", &ek3),
        registry(1, 10, &[(&ek1, "par-1"), (&ek2, "fra-1")], false),
        registry(2, 20, &[(&ek1, "par-1"), (&ek2, "ams-1")], true),
        registry(3, 25, &[(&ek1, "par-1")], true),
        Entry::AttestationResult(passed),
    ]
}

#[test]
fn each_node_lists_the_registry_versions_that_changed_where_it_is_or_who_runs_it() {
    let r = build(&summary(), "k", &placed_log(), &[]);
    let node = |id: &str| r.nodes.iter().find(|n| n.node == id).unwrap();
    let whats = |id: &str| {
        node(id)
            .registry
            .iter()
            .map(|c| (c.entry, c.version, c.what.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        whats("n-1"),
        vec![
            (
                3,
                1,
                "bound to site par-1 (par-1 DC, FR), operated by eurocloud SAS".to_owned()
            ),
            (
                4,
                2,
                "operator eurocloud SAS now exposed to the US CLOUD Act".to_owned()
            ),
        ]
    );
    assert_eq!(
        whats("n-2"),
        vec![
            (
                3,
                1,
                "bound to site fra-1 (fra-1 DC, DE), operated by rhein SAS".to_owned()
            ),
            (
                4,
                2,
                "moved from site fra-1 (DE) to site ams-1 (ams-1 DC, NL), operated by rhein SAS".to_owned()
            ),
            (5, 3, "no longer in the registry (was at site ams-1)".to_owned()),
        ]
    );
    assert!(whats("n-3").is_empty());
    assert_eq!(node("n-1").state(), "affirming");
    assert_eq!(node("n-2").state(), "enrolled");
}

#[test]
fn the_sites_are_the_latest_registrys_with_their_places_and_bound_nodes() {
    let r = build(&summary(), "k", &placed_log(), &[]);
    assert_eq!(r.sites.len(), 3);
    let par = r.sites.iter().find(|s| s.site == "par-1").unwrap();
    assert_eq!(par.lat_lon_e6, Some((48_856_600, 2_352_200)));
    assert_eq!(par.cloud_act_exposed, Some(true));
    assert_eq!(par.bound, vec!["n-1".to_owned()]);
    let ams = r.sites.iter().find(|s| s.site == "ams-1").unwrap();
    assert!(ams.bound.is_empty(), "v3 took n-2 out");

    let html = render(&r);
    for want in [
        "<svg class=\"map\"",
        "data-dots=\"3\"",
        "data-site=\"par-1\"><circle class=\"ok\"",
        "data-site=\"ams-1\"><circle class=\"none\"",
        "class=\"land sited\" data-country=\"FR\"",
        "data-node=\"n-2\" data-state=\"enrolled\" data-registry-changes=\"3\"",
        "<span class=\"bad\">exposed</span>",
    ] {
        assert!(html.contains(want), "{want} not in the report");
    }
    assert!(!html.contains("http://") && !html.contains("https://") && !html.contains("src="));
}

#[test]
fn a_log_without_recorded_places_gets_its_ticket_sites_and_no_map() {
    let r = build(&summary(), "k", &log(), &[]);
    assert!(r.sites.iter().all(|s| s.lat_lon_e6.is_none()));
    let html = render(&r);
    assert!(!html.contains("<svg"));
    assert!(html.contains("No registry change in this log records site locations"));
}

#[test]
fn a_revocation_after_the_last_result_is_the_nodes_state() {
    let r = build(&summary(), "k", &log(), &[]);
    let n2 = r.nodes.iter().find(|n| n.node == "n-2").unwrap();
    assert_eq!(n2.state(), "revoked");
    assert!(render(&r).contains("data-node=\"n-2\" data-state=\"revoked\""));
}

#[test]
fn each_cited_entry_carries_an_inclusion_proof_that_checks_against_the_root() {
    let entries = log();
    let mut t = crate::tree::Tree::new();
    for e in &entries {
        t.push(crate::tree::leaf_hash(&e.to_leaf().unwrap()));
    }
    let mut s = summary();
    s.entries = entries.len() as u64;
    s.root = hex::encode(t.root());
    let mut r = build(&s, "k", &entries, &[]);
    r.prove(&t);
    // The stays cite entries 1 (ticket) and 2 (placed), the refusal entry 5.
    assert_eq!(r.proofs.keys().copied().collect::<Vec<_>>(), vec![1, 2, 5]);
    for (i, (leaf, path)) in &r.proofs {
        crate::tree::verify_inclusion(*i, s.entries, leaf, path, &t.root()).unwrap();
    }
    let html = render(&r);
    assert!(html.contains("data-proofs=\"3\""));
    let (leaf, path) = &r.proofs[&5];
    assert!(html.contains(&format!(
        "<td class=\"mono\">{}</td><td class=\"mono path\">{}</td>",
        hex::encode(leaf),
        path.iter().map(hex::encode).collect::<Vec<_>>().join(" ")
    )));
}

#[test]
fn a_stay_shows_the_cloud_act_exposure_of_the_registry_in_force_when_it_began() {
    let mut entries = vec![registry(1, 5, &[], false)];
    entries.extend(log());
    entries.push(registry(2, 20, &[], true));
    let r = build(&summary(), "k", &entries, &[]);
    assert_eq!(r.exposed_at("par-1", 2), Some((false, 1)));
    assert_eq!(r.exposed_at("par-1", 8), Some((true, 2)));
    assert_eq!(
        r.exposed_at("par-1", 0),
        None,
        "nothing in force before the first version"
    );
    assert_eq!(r.exposed_at("nowhere", 2), None);
    let html = render(&r);
    assert!(html.contains("<span class=\"ok\">not exposed</span> (registry v1)"));
}

#[test]
fn a_nodes_results_over_time_are_buckets_coloured_by_their_worst_status() {
    // 0..=230 s in 24 buckets of 10 s: two passes, then a failure in the last bucket.
    let s = strip(&[(0, 0), (5, 0), (230, 2), (231, 0)], 0, 230);
    assert_eq!(s.len(), 24);
    assert_eq!(s[0], Some((0, [2, 0, 0])));
    assert_eq!(s[23], Some((2, [1, 0, 1])));
    assert!(s[1..23].iter().all(Option::is_none));
    // A result outside the span lands in the nearest end; one instant spans one bucket.
    assert_eq!(strip(&[(-5, 1)], 0, 100)[0], Some((1, [0, 1, 0])));
    assert_eq!(strip(&[(7, 0)], 7, 7)[0], Some((0, [1, 0, 0])));

    let r = build(&summary(), "k", &log(), &[]);
    let html = render(&r);
    assert_eq!(
        html.matches("<span class=\"strip\"").count(),
        2,
        "one strip per node"
    );
    // n-1 passed at the start of the log's results, n-2 failed at its end: runs of cells.
    assert!(html.contains("1970-01-01T00:00:10Z .. 1970-01-01T00:00:12Z, each cell 1/24"));
    assert!(
        html.contains(
            "<i class=\"a\" style=\"width:6px\"></i><i class=\"n\" style=\"width:138px\"></i></span>"
        ),
        "n-1: one green cell, then 23 without a result"
    );
    assert!(
        html.contains(
            "<i class=\"n\" style=\"width:138px\"></i><i class=\"c\" style=\"width:6px\"></i></span>"
        ),
        "n-2: red last"
    );
}
