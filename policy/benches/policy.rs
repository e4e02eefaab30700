//! `cargo bench -p custody-policy --bench policy`: one policy decision on a production-
//! shaped input recorded from a real round (tests/fixtures/node-production.json, written
//! by the e2e test `policy_input`: TPM quoting 24 PCRs, SEV-SNP with every claim, two GPUs
//! with their 64 SPDM measurements each, a signed registry's attributes, two locality
//! proofs).
//!
//! - `eu-sovereign/decision`: `Policy::evaluate` as the service calls it: input checked
//!   against the typed shape, converted to a regorus value, one wrapper rule run by a
//!   pooled RVM (the policy compiled once to regorus's register VM).
//! - `eu-sovereign/decision-small`: the same on the earlier, hand-written input
//!   (tests/fixtures/node-fr-pass.json: 2 PCRs, some SNP claims, no GPU measurements), to
//!   compare with figures measured on it.
//! - `eu-sovereign/decision-clone`: the same input through the interpreter, on a fresh
//!   clone of the prepared engine per decision.
//! - `eu-sovereign/decision-typed`: from a `PolicyInput` instead of JSON.
//! - `eu-sovereign/decision-before`: what `evaluate` did before the pool, rebuilt here
//!   with regorus directly: clone the engine as compiled (never evaluated, so each clone
//!   re-runs analysis and rule gathering), JSON round trip of the input, `allow` rule,
//!   then a `deny` query.
//! - `engine/clone-unprepared`, `engine/clone-prepared`, `engine/eval-reused`: the parts:
//!   cloning an engine before and after its first evaluation, and one evaluation of the
//!   `allow` rule on an engine kept across iterations.
//! - `input/validate`, `input/check`: the typed-shape check, building a `PolicyInput`
//!   and (what `evaluate` does) without copying claims.
//! - `input/to-regorus`, `input/to-regorus-direct`: JSON to regorus value through serde's
//!   visitor and (what `evaluate` does) by walking the JSON.
//! - `eu-sovereign/rvm-run`: the engine's share of `decision`: a pooled RVM runs the
//!   wrapper rule on an input already converted (the clone of that value included).
//! - `eu-sovereign/compile`: `Policy::shipped` (parse, analyse, prepare).
//! - `default/decision`: the default policy on the same input.
//!
//! Before the timings it prints how many RVM instructions one eu-sovereign decision takes
//! (`Policy::instructions`): a figure that, unlike time, does not vary between runs.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion};

// Every decision in production runs inside `custody-verifier`, which allocates with
// mimalloc; so does this bench, so it measures a decision as the service makes it (a
// decision allocates a few hundred values: converting the input, then dropping it).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use custody_policy::{Policy, PolicyInput, EU_SOVEREIGN, LIB};
use std::hint::black_box;

const INPUT: &str = include_str!("../tests/fixtures/node-production.json");
const SMALL: &str = include_str!("../tests/fixtures/node-fr-pass.json");

fn bench(c: &mut Criterion) {
    let input: serde_json::Value = serde_json::from_str(INPUT).unwrap();
    let typed = PolicyInput::from_json(&input).unwrap();

    let mut g = c.benchmark_group("eu-sovereign");
    let p = Policy::shipped("eu-sovereign").unwrap();
    assert!(p.evaluate(&input).unwrap().allow);
    // Time per decision varies 20-30 % between runs on a shared 2-vCPU machine; the
    // RVM's instruction count does not, and the RVM's time is mostly per instruction.
    eprintln!(
        "eu-sovereign: {} RVM instructions per decision on this input",
        p.instructions(&input).unwrap_or(0)
    );
    g.bench_function("decision", |b| {
        b.iter(|| black_box(p.evaluate(black_box(&input)).unwrap()))
    });
    let small: serde_json::Value = serde_json::from_str(SMALL).unwrap();
    assert!(p.evaluate(&small).unwrap().allow);
    g.bench_function("decision-small", |b| {
        b.iter(|| black_box(p.evaluate(black_box(&small)).unwrap()))
    });
    g.bench_function("decision-clone", |b| {
        b.iter(|| black_box(p.evaluate_cloned(black_box(&input)).unwrap()))
    });
    g.bench_function("decision-typed", |b| {
        b.iter(|| black_box(p.evaluate_input(black_box(&typed)).unwrap()))
    });
    let mut before = regorus::Engine::new();
    before.set_strict_builtin_errors(true);
    before.add_policy("lib.rego".into(), LIB.into()).unwrap();
    before
        .add_policy("eu-sovereign.rego".into(), EU_SOVEREIGN.into())
        .unwrap();
    g.bench_function("decision-before", |b| {
        b.iter(|| {
            let mut e = before.clone();
            let json = serde_json::to_string(black_box(&input)).unwrap();
            e.set_input(regorus::Value::from_json_str(&json).unwrap());
            let allow = e.eval_rule("data.custody.eu_sovereign.allow".into()).unwrap();
            let deny = e
                .eval_query("data.custody.eu_sovereign.deny".into(), false)
                .unwrap();
            black_box((allow, deny))
        })
    });
    let value = custody_policy::input::to_regorus(&input).unwrap();
    g.bench_function("rvm-run", |b| {
        b.iter(|| black_box(p.evaluate_value(black_box(value.clone())).unwrap()))
    });
    g.bench_function("compile", |b| {
        b.iter(|| black_box(Policy::shipped(black_box("eu-sovereign")).unwrap()))
    });
    g.finish();

    let mut g = c.benchmark_group("engine");
    let input_value = regorus::Value::from_json_str(INPUT).unwrap();
    let mut prepared = before.clone();
    prepared.set_input(input_value.clone());
    prepared
        .eval_rule("data.custody.eu_sovereign.allow".into())
        .unwrap();
    g.bench_function("clone-unprepared", |b| b.iter(|| black_box(before.clone())));
    g.bench_function("clone-prepared", |b| b.iter(|| black_box(prepared.clone())));
    g.bench_function("eval-reused", |b| {
        b.iter(|| {
            prepared.set_input(black_box(input_value.clone()));
            black_box(
                prepared
                    .eval_rule("data.custody.eu_sovereign.allow".into())
                    .unwrap(),
            )
        })
    });
    g.finish();

    let mut g = c.benchmark_group("input");
    g.bench_function("validate", |b| {
        b.iter(|| black_box(PolicyInput::from_json(black_box(&input)).unwrap()))
    });
    g.bench_function("check", |b| {
        b.iter(|| PolicyInput::check_json(black_box(&input)).unwrap())
    });
    g.bench_function("to-regorus", |b| {
        b.iter(|| black_box(<regorus::Value as serde::Deserialize>::deserialize(black_box(&input)).unwrap()))
    });
    g.bench_function("to-regorus-direct", |b| {
        b.iter(|| black_box(custody_policy::input::to_regorus(black_box(&input)).unwrap()))
    });
    g.finish();

    let mut g = c.benchmark_group("default");
    let p = Policy::default_policy().unwrap();
    assert!(p.evaluate(&input).unwrap().allow);
    g.bench_function("decision", |b| {
        b.iter(|| black_box(p.evaluate(black_box(&input)).unwrap()))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
