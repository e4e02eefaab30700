//! The helper library as changed for speed decides exactly as the library it replaced
//! (tests/fixtures/reference/lib.rego, the version before the change): every shipped
//! policy, every case input of the policy fixtures, under several data documents,
//! including parameters of the wrong type. The reference runs on regorus's interpreter
//! directly, the library under test through `Policy::evaluate` (the RVM; tests/policies.rs
//! checks the interpreter against it).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use custody_policy::{Policy, SHIPPED};
use serde_json::{json, Value};

mod common;
use common::{case_input, fixtures, load, set};

/// Every case input of every cases file.
fn inputs() -> Vec<Value> {
    let mut out = Vec::new();
    for file in [
        "cases-default.json",
        "cases-eu-sovereign.json",
        "cases-secnumcloud.json",
        "cases-defense-restricted.json",
    ] {
        for case in load(file)["cases"].as_array().unwrap() {
            let input = case_input(case);
            out.push(input);
        }
    }
    // Countries outside every list, and a site without a country list match.
    let mut far = load("node-fr-pass.json");
    set(&mut far, "/sovereignty/site/country", json!("US"));
    out.push(far);
    let mut no_site = load("node-nl-eu.json");
    set(&mut no_site, "/sovereignty/site", Value::Null);
    out.push(no_site);
    // Device mixes the trust claims and device checks read from `device_status` (sorted
    // [verified, kind] pairs), `any_failed` and the `device_flags` patterns: confidential-VM
    // kinds that disagree, a failure outside them, an unknown kind, flagged claims.
    for devices in [
        json!({"tpm": ok("tpm"), "snp": ok("snp"), "tdx": failed("tdx"), "azure": ok("azure")}),
        json!({"tpm": ok("tpm"), "azure": failed("azure")}),
        json!({"tpm": ok("tpm"), "tdx": ok("tdx")}),
        json!({"tdx": failed("tdx")}),
        json!({"tpm": ok("tpm"), "snp": ok("snp"), "snp2": failed("snp")}),
        json!({"tpm": failed("tpm"), "snp": ok("snp"), "gpu0": failed("nvgpu")}),
        json!({"tpm": ok("tpm"), "snp": ok("snp"), "gpu0": failed("nvgpu")}),
        json!({"sgx": failed("sgx")}),
        json!({}),
        json!({
            "tpm": ok("tpm"),
            "snp": {"kind": "snp", "verified": true, "claims": {"policy": {"debug_allowed": true}}},
            "gpu0": {"kind": "nvgpu", "verified": true, "claims": {"revocation": "revoked"}},
            "gpu1": {"kind": "nvgpu", "verified": true, "claims": {"revocation": {"status": "revoked"}}},
        }),
        json!({"tpm": ok("tpm"), "snp": {"kind": "snp", "verified": false, "claims": null}}),
    ] {
        let mut input = load("node-fr-pass.json");
        set(&mut input, "/devices", devices);
        out.push(input);
    }
    out
}

fn ok(kind: &str) -> Value {
    json!({"kind": kind, "verified": true, "claims": {}})
}

fn failed(kind: &str) -> Value {
    json!({"kind": kind, "verified": false, "failed_check": "signature"})
}

fn datas() -> Vec<Option<Value>> {
    let mut out = vec![None, Some(load("data-eu-strict.json"))];
    for allowed in [
        json!(["FR"]),
        json!(["DE", "NL"]),
        json!([]),
        json!({"a": "FR", "b": "NL"}),
        json!("FR"),
        json!(7),
        json!(null),
        json!(true),
    ] {
        out.push(Some(
            json!({"custody": {"params": {"allowed_countries": allowed}}}),
        ));
    }
    out.push(Some(json!({"custody": {"params": ["FR"]}})));
    // `locality_site` set (also to null), with and without a registered site in the input.
    for site in [json!("fra-1"), Value::Null] {
        out.push(Some(
            json!({"custody": {"params": {"locality_site": site, "require_locality": true}}}),
        ));
    }
    out
}

/// The reference decision: (allow, sorted reasons, trust vector as JSON), or None when
/// the reference fails to evaluate.
fn reference(
    policy: &str,
    package: &str,
    data: &Option<Value>,
    input: &Value,
) -> Option<(bool, Vec<String>, Value)> {
    reference_engine(policy, package, data).and_then(|e| decide(e, input))
}

fn reference_engine(policy: &str, package: &str, data: &Option<Value>) -> Option<regorus::Engine> {
    let mut e = regorus::Engine::new();
    e.set_strict_builtin_errors(true);
    let lib = std::fs::read_to_string(fixtures().join("reference/lib.rego")).unwrap();
    e.add_policy("custody/lib.rego".into(), lib).unwrap();
    e.add_policy("p.rego".into(), policy.into()).unwrap();
    e.add_policy(
        "w.rego".into(),
        format!(
            "package custody_ref\nimport rego.v1\ndefault allow := false\nallow := data.{package}.allow\n\
             default deny := set()\ndeny := data.{package}.deny\ndefault trust_vector := null\n\
             trust_vector := data.{package}.trust_vector\n\
             decision := {{\"allow\": allow, \"deny\": deny, \"trust_vector\": trust_vector}}\n"
        ),
    )
    .unwrap();
    if let Some(d) = data {
        e.add_data(regorus::Value::from_json_str(&d.to_string()).unwrap())
            .unwrap();
    }
    Some(e)
}

fn decide(mut e: regorus::Engine, input: &Value) -> Option<(bool, Vec<String>, Value)> {
    e.set_input(regorus::Value::from_json_str(&input.to_string()).unwrap());
    let v = e.eval_rule("data.custody_ref.decision".into()).ok()?;
    let mut reasons: Vec<String> = v["deny"]
        .as_set()
        .unwrap()
        .iter()
        .map(|r| r.as_string().unwrap().to_string())
        .collect();
    reasons.sort();
    let allow = *v["allow"].as_bool().unwrap() && reasons.is_empty();
    let tv: Value = serde_json::from_str(&v["trust_vector"].to_json_str().unwrap()).unwrap();
    Some((allow, reasons, tv))
}

#[test]
fn library_decides_as_before() {
    let inputs = inputs();
    let (mut compared, mut refused) = (0, 0);
    for (name, rego) in SHIPPED {
        let package = rego
            .lines()
            .find_map(|l| l.strip_prefix("package "))
            .unwrap()
            .trim();
        for data in datas() {
            let policy = match &data {
                Some(d) => Policy::shipped_with_data(name, d.clone()),
                None => Policy::shipped(name),
            };
            // Construction evaluates the empty input: a data document that makes that
            // fail must have failed the reference too.
            let Ok(policy) = policy else {
                assert_eq!(
                    reference(rego, package, &data, &json!({})),
                    None,
                    "{name}, {data:?}"
                );
                refused += 1;
                continue;
            };
            let engine = reference_engine(rego, package, &data).unwrap();
            for input in &inputs {
                let label = format!("{name}, data {data:?}, input node {}", input["node"]);
                let expected = decide(engine.clone(), input);
                match (&expected, policy.evaluate(input)) {
                    (None, Err(_)) => {}
                    (Some((allow, reasons, tv)), Ok(d)) => {
                        assert_eq!(d.allow, *allow, "{label}");
                        if !reasons.is_empty() || *allow {
                            assert_eq!(&d.reasons, reasons, "{label}");
                        }
                        let got_tv = d.trust_vector.map(|t| serde_json::to_value(t).unwrap());
                        assert_eq!(got_tv.unwrap_or(Value::Null), *tv, "{label}: trust vector");
                    }
                    (e, g) => panic!("{label}: reference {e:?}, got {g:?}"),
                }
                compared += 1;
            }
        }
    }
    assert!(compared > 400 && refused > 0, "{compared} {refused}");
}
