use super::*;

/// Leaves as the verifier wrote them before the bodies were typed (`json!`, keys in
/// sorted order): every kind still reads, so logs written then still audit.
const EARLIER: &[&str] = &[
    r#"{"kind":"attestation_result","body":{"at":10,"ear_sha256":"aa","evidence_sha256":"ee","failed_check":null,"name":"n1","node":"n-1","policy_digest":"pd","policy_id":"default","reference":"tofu","registry_digest":null,"registry_version":null,"status":"affirming"}}"#,
    r#"{"kind":"enrollment","body":{"ak_changed":null,"ak_sha256":"ak","at":1,"ek_cert_sha256":"ek","endpoint":"127.0.0.1:1","failures":0,"name":"n1","node":"n-1","re_enrollment":false,"state":"enrolled"}}"#,
    r#"{"kind":"revocation","body":{"at":5,"failed_check":"pcr_values","name":"n1","node":"n-1","reason":"3 failed rounds"}}"#,
    r#"{"kind":"revocation","body":{"action":"removed","at":6,"by":"operator","ek_cert_sha256":"ek","name":"n1","node":"n-1","reason":"retired","state":"revoked"}}"#,
    r#"{"kind":"registry_change","body":{"at":2,"authority":"EU Registry","digest":"dd","entities":3,"hardware":4,"kid":"kk","previous":null,"sites":2,"version":1}}"#,
    r#"{"kind":"policy_change","body":{"at":0,"policy_digest":"pd","policy_id":"eu-sovereign","previous_digest":null}}"#,
    r#"{"kind":"policy_change","body":{"at":7,"by":"operator","learned_from":"n-1","pcrs":{"sha256":{"0":"00"}},"reference_values":"default","source":"approved"}}"#,
    r#"{"kind":"policy_change","body":{"at":8,"by":"operator","group":"gpu","name":"n1","node":"n-1","previous_group":"default"}}"#,
    r#"{"kind":"migration","body":{"at":9,"check":"destination_attestation","destination":"us","detail":"d","job":"j","outcome":"refused","reasons":["CLOUD Act"],"source":"a"}}"#,
    r#"{"kind":"migration","body":{"at":9,"bytes":42,"delete_source":false,"destination":"n-2","destination_at":{"appraised_at":8,"country":"DE","ear_sha256":"ea","evidence_sha256":"ev","name":"b","node":"n-2","operator":"Op","operator_country":"DE","site":"fra-1","site_name":"Frankfurt","status":"affirming"},"dst_x25519":"xx","expires_at":900,"job":"j","manifest_sha256":"md","outcome":"ticket_issued","policy_digest":"pd","policy_id":"eu-sovereign","source":"n-1","source_at":null,"ticket":"t1","ticket_cose":"d2","transport":"wire"}}"#,
    r#"{"kind":"migration","body":{"at":10,"bytes":42,"completed_at":10,"destination":"n-2","job":"j","manifest_sha256":"md","outcome":"placed","receipt":"d2","receipt_sha256":"rr","source":"n-1","source_kept":[],"source_released":false,"ticket":"t1"}}"#,
    r#"{"kind":"migration","body":{"at":10,"check":"chunk_authentication","destination":"n-2","detail":"flipped","job":"j","outcome":"failed","source":"n-1","ticket":"t1"}}"#,
    r#"{"kind":"migration","body":{"at":10,"bytes":42,"destination":"n-2","file":"/x","file_sha256":"ff","job":"j","outcome":"exported","source":"n-1","ticket":"t1"}}"#,
];

#[test]
fn entries_written_before_the_bodies_were_typed_still_read() {
    for leaf in EARLIER {
        let e = Entry::from_leaf(leaf.as_bytes()).unwrap_or_else(|err| panic!("{leaf}: {err}"));
        // And what reads back writes back to the same meaning.
        let again = Entry::from_leaf(&e.to_leaf().unwrap()).unwrap();
        assert_eq!(again, e, "{leaf}");
    }
    let kinds: Vec<_> = EARLIER
        .iter()
        .map(|l| match Entry::from_leaf(l.as_bytes()).unwrap() {
            Entry::PolicyChange(PolicyEntry::Group(_)) => "group",
            Entry::PolicyChange(PolicyEntry::ReferenceValues(_)) => "reference",
            Entry::PolicyChange(PolicyEntry::Policy(_)) => "policy",
            Entry::Migration(MigrationEntry::Refused(_)) => "refused",
            Entry::Migration(MigrationEntry::TicketIssued(_)) => "ticket",
            Entry::Migration(MigrationEntry::Placed(_)) => "placed",
            Entry::Migration(MigrationEntry::Failed(_)) => "failed",
            Entry::Migration(MigrationEntry::Exported(_)) => "exported",
            other => other.kind(),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "attestation_result",
            "enrollment",
            "revocation",
            "revocation",
            "registry_change",
            "policy",
            "reference",
            "group",
            "refused",
            "ticket",
            "placed",
            "failed",
            "exported"
        ]
    );
}

#[test]
fn an_entry_says_exactly_what_its_kind_says() {
    // An unknown field, an unknown kind, an unknown outcome, a missing field.
    for bad in [
        r#"{"kind":"revocation","body":{"at":5,"name":"n1","node":"n-1","reason":"r","extra":1}}"#,
        r#"{"kind":"revocation","body":{"at":5,"name":"n1","node":"n-1","reason":"r"},"more":1}"#,
        r#"{"kind":"coronation","body":{}}"#,
        r#"{"kind":"migration","body":{"outcome":"teleported","job":"j","at":1}}"#,
        r#"{"kind":"migration","body":{"at":9,"check":"c","destination":"us","detail":"d","job":"j","outcome":"refused","reasons":[],"source":"a","to":"x"}}"#,
        r#"{"kind":"enrollment","body":{"node":"n-1"}}"#,
        r#"{"kind":"policy_change","body":{"k":1}}"#,
    ] {
        assert!(Entry::from_leaf(bad.as_bytes()).is_err(), "{bad}");
    }
}

#[test]
fn a_leaf_is_compact_json_on_one_line() {
    let e = Entry::Revocation(RevocationEntry {
        node: "n-1".into(),
        name: "line\nbreak".into(),
        at: 1,
        action: Some(RevocationAction::Removed),
        reason: Some("r".into()),
        failed_check: None,
        state: Some("trusted".into()),
        by: Some("operator".into()),
        ek_cert_sha256: None,
    });
    let leaf = e.to_leaf().unwrap();
    assert!(!leaf.contains(&b'\n'));
    assert_eq!(
        String::from_utf8(leaf).unwrap(),
        r#"{"kind":"revocation","body":{"node":"n-1","name":"line\nbreak","at":1,"action":"removed","reason":"r","state":"trusted","by":"operator"}}"#
    );
    assert_eq!(e.node(), Some("n-1"));
    assert_eq!(e.at(), 1);
}
