//! `cargo bench -p custody-policy --bench policy`: one policy decision on a realistic
//! input (TPM + SEV-SNP + 2 H100 GPUs in CC mode, registry attributes, two locality
//! proofs: tests/fixtures/node-fr-pass.json).
//!
//! - `eu-sovereign/decision`: `Policy::evaluate` as the service calls it: input checked
//!   against the typed shape, converted to a regorus value, one wrapper rule evaluated on
//!   a pooled engine (prepared once, reused across decisions).
//! - `eu-sovereign/decision-clone`: the same with a fresh clone of the prepared engine per
//!   decision, the pre-pool behaviour, for comparison.
//! - `eu-sovereign/decision-typed`: from a `PolicyInput` instead of JSON.
//! - `eu-sovereign/compile`: `Policy::shipped` (parse, analyse, prepare).
//! - `default/decision`: the default policy on the same input.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion};
use custody_policy::{Policy, PolicyInput};
use std::hint::black_box;

const INPUT: &str = include_str!("../tests/fixtures/node-fr-pass.json");

fn bench(c: &mut Criterion) {
    let input: serde_json::Value = serde_json::from_str(INPUT).unwrap();
    let typed = PolicyInput::from_json(&input).unwrap();

    let mut g = c.benchmark_group("eu-sovereign");
    let p = Policy::shipped("eu-sovereign").unwrap();
    assert!(p.evaluate(&input).unwrap().allow);
    g.bench_function("decision", |b| {
        b.iter(|| black_box(p.evaluate(black_box(&input)).unwrap()))
    });
    g.bench_function("decision-clone", |b| {
        b.iter(|| black_box(p.evaluate_cloned(black_box(&input)).unwrap()))
    });
    g.bench_function("decision-typed", |b| {
        b.iter(|| black_box(p.evaluate_input(black_box(&typed)).unwrap()))
    });
    g.bench_function("compile", |b| {
        b.iter(|| black_box(Policy::shipped(black_box("eu-sovereign")).unwrap()))
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
