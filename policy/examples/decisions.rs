//! `decisions [N] [POLICY]`: N decisions (default 1000) of a shipped policy (default
//! eu-sovereign) on the benchmark's input, tests/fixtures/node-production.json (a real
//! round's, recorded by the e2e test `policy_input`; `small` as a third argument: the
//! earlier hand-written node-fr-pass.json). A driver for
//! instruction counts that, unlike the criterion bench's times, do not vary from run to
//! run: `scripts/policy-instructions.sh` runs it under callgrind with N and with 1
//! decisions and prints the difference per decision.
#![allow(clippy::expect_used)]

// The allocator of `custody-verifier`, where every production decision runs.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(1000);
    let name = args.next().unwrap_or_else(|| "eu-sovereign".to_owned());
    let text = match args.next().as_deref() {
        Some("small") => include_str!("../tests/fixtures/node-fr-pass.json"),
        _ => include_str!("../tests/fixtures/node-production.json"),
    };
    let input: serde_json::Value = serde_json::from_str(text).expect("fixture");
    let policy = custody_policy::Policy::shipped(&name).expect("a shipped policy");
    let mut allowed = 0;
    for _ in 0..n {
        if policy
            .evaluate(std::hint::black_box(&input))
            .expect("decides")
            .allow
        {
            allowed += 1;
        }
    }
    println!("{name}: {allowed} of {n} decisions allowed");
}
