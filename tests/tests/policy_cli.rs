//! `custody policy test|list` end to end with the policy crate's JSON fixtures: exit 0 on
//! allow, 1 on deny with the reasons, 2 on bad usage, a policy that does not compile or
//! an input that is not a policy input.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

use custody_e2e::{custody, repo_root};

fn fixture(name: &str) -> String {
    repo_root()
        .join("policy/tests/fixtures")
        .join(name)
        .to_str()
        .unwrap()
        .to_owned()
}

#[test]
fn list_shows_the_shipped_policies_with_digests() {
    let r = custody(["policy", "list", "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let rows = r.json();
    let ids: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["default", "eu-sovereign", "secnumcloud", "defense-restricted"]
    );
    for p in rows.as_array().unwrap() {
        assert_eq!(p["digest"].as_str().unwrap().len(), 64);
    }
    let r = custody(["policy", "list"]);
    assert_eq!(r.code, 0);
    assert!(r.stdout.contains("eu-sovereign"), "{}", r.stdout);
}

#[test]
fn allow_deny_and_data() {
    let pass = fixture("node-fr-pass.json");
    let us = fixture("node-us-controlled.json");
    let nl = fixture("node-nl-eu.json");

    for policy in ["default", "eu-sovereign", "secnumcloud", "defense-restricted"] {
        let r = custody(["policy", "test", policy, "--input", &pass, "--json"]);
        assert_eq!(r.code, 0, "{policy}: {} {}", r.stdout, r.stderr);
        let d = r.json();
        assert_eq!(d["allow"], true);
        assert_eq!(d["policy_id"], policy);
        assert_eq!(d["trust_vector"]["hardware"], 2);
    }

    // The demo's refusal, as text.
    let r = custody(["policy", "test", "eu-sovereign", "--input", &us]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stdout.starts_with("DENY  policy eu-sovereign (sha256 "),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("  - operator ACME SAS is controlled 60 % by ACME Inc (US): cloud_act_exposed\n"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("trust vector: instance_identity=2"),
        "{}",
        r.stdout
    );

    // secnumcloud refuses the EU site outside France; a data file can widen the list.
    let r = custody(["policy", "test", "secnumcloud", "--input", &nl, "--json"]);
    assert_eq!(r.code, 1);
    assert_eq!(
        r.json()["reasons"][0],
        "site Amsterdam 1 (ams-1) is in NL, outside the allowed countries [FR]"
    );
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data.json");
    std::fs::write(
        &data,
        r#"{"custody": {"params": {"allowed_countries": ["FR", "NL"]}}}"#,
    )
    .unwrap();
    let r = custody([
        "policy",
        "test",
        "secnumcloud",
        "--input",
        &nl,
        "--data",
        data.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(r.code, 0, "{}", r.stdout);

    // eu-sovereign with the strict data fixture: GPU CC and a locality proof required.
    let r = custody([
        "policy",
        "test",
        "eu-sovereign",
        "--input",
        &nl,
        "--data",
        &fixture("data-eu-strict.json"),
        "--json",
    ]);
    assert_eq!(r.code, 1);
    let reasons = r.json()["reasons"].clone();
    assert_eq!(reasons.as_array().unwrap().len(), 2, "{reasons}");
    assert!(reasons.to_string().contains("no locality proof was presented"));
}

#[test]
fn policy_from_a_file() {
    let tmp = tempfile::tempdir().unwrap();
    let rego = tmp.path().join("only-fr.rego");
    std::fs::write(
        &rego,
        "package custody.only_fr\nimport rego.v1\nimport data.custody.lib\n\
         default allow := false\nallow if count(deny) == 0\n\
         deny contains msg if some msg in lib.country_deny([\"FR\"])\n",
    )
    .unwrap();
    let r = custody([
        "policy",
        "test",
        rego.to_str().unwrap(),
        "--input",
        &fixture("node-nl-eu.json"),
        "--json",
    ]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(r.json()["policy_id"], "only-fr");
    assert_eq!(
        r.json()["reasons"][0],
        "site Amsterdam 1 (ams-1) is in NL, outside the allowed countries [FR]"
    );

    let broken = tmp.path().join("broken.rego");
    std::fs::write(&broken, "package custody.broken\nallow := {\n").unwrap();
    let r = custody([
        "policy",
        "test",
        broken.to_str().unwrap(),
        "--input",
        &fixture("node-nl-eu.json"),
    ]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("does not compile"), "{}", r.stderr);
}

#[test]
fn bad_usage_exits_2() {
    let r = custody([
        "policy",
        "test",
        "no-such-policy",
        "--input",
        &fixture("node-fr-pass.json"),
    ]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("neither a shipped policy"), "{}", r.stderr);

    let r = custody([
        "policy",
        "test",
        "eu-sovereign",
        "--input",
        &fixture("malformed-state.json"),
    ]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("policy input is not valid"), "{}", r.stderr);

    let r = custody(["policy", "test", "eu-sovereign", "--input", "/nonexistent.json"]);
    assert_eq!(r.code, 2);

    let r = custody(["policy", "test", "eu-sovereign"]);
    assert_eq!(r.code, 2, "missing --input is a usage error");
}
