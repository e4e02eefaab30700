//! The operator's alert rules and dashboard against a live verifier: `promtool` checks
//! the rules and runs their unit tests (each alert fires on the series that should fire
//! it, and only then), lints the verifier's exposition, and every `custody_*` metric the
//! rules and the dashboard name is one the running verifier serves.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use custody_e2e::fleet::*;
use custody_e2e::{repo_root, Swtpm};
use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};

fn promtool(args: &[&str], dir: &std::path::Path, stdin: Option<&str>) -> (bool, String) {
    let mut c = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package; scripts/setup.sh installs it)");
    if let Some(s) = stdin {
        c.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    }
    drop(c.stdin.take());
    let o = c.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), text)
}

/// The `custody_*` names in `text`, with histogram suffixes folded into their family.
fn names_in(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let b = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("custody_") {
        let start = i + at;
        let mut end = start;
        while end < b.len() && (b[end].is_ascii_lowercase() || b[end].is_ascii_digit() || b[end] == b'_') {
            end += 1;
        }
        let name = &text[start..end];
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| f.ends_with("_seconds")))
            .unwrap_or(name);
        out.insert(family.to_owned());
        i = end;
    }
    out
}

#[test]
fn alert_rules_and_dashboard_name_only_metrics_a_live_verifier_serves() {
    let deploy = repo_root().join("deploy");
    let prom = deploy.join("prometheus");
    let (ok, out) = promtool(&["check", "rules", "custody-rules.yml"], &prom, None);
    assert!(ok, "{out}");
    let (ok, out) = promtool(&["test", "rules", "custody-rules.test.yml"], &prom, None);
    assert!(ok, "{out}");

    // A verifier with a node that passed a round (so every per-node series exists).
    let t = Swtpm::start();
    let v = Verifier::start(&[&t], Opts::every(3600));
    let mut a = Agent::start(&v, &t, "n1");
    enrolled(&v, &mut a, "n1");
    let r = v.attest("n1");
    assert_eq!(r.code, 0, "{}", r.stderr);
    let scrape = v.metrics_text();

    // The exposition is well formed by Prometheus' own linter.
    let (ok, out) = promtool(&["check", "metrics"], &prom, Some(&scrape));
    assert!(ok, "{out}\n{scrape}");
    let served: BTreeSet<String> = scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    for needed in [
        "custody_node_last_pass_timestamp_seconds",
        "custody_node_last_round_timestamp_seconds",
        "custody_last_round_timestamp_seconds",
    ] {
        let sample = scrape
            .lines()
            .find(|l| l.starts_with(needed) && !l.starts_with('#'))
            .unwrap_or_else(|| panic!("no sample of {needed}:\n{scrape}"));
        let value: f64 = sample.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(value > 1.7e9, "{sample}: not a recent time");
    }

    let rules = std::fs::read_to_string(prom.join("custody-rules.yml")).unwrap();
    let dashboard = std::fs::read_to_string(deploy.join("grafana/custody.json")).unwrap();
    let d: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    assert_eq!(d["uid"], "custody-verifier");
    let exprs: Vec<&str> = d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter())
        .map(|t| t["expr"].as_str().unwrap())
        .collect();
    assert!(exprs.len() >= 10, "{exprs:?}");
    let named: BTreeSet<String> = names_in(&rules)
        .union(&names_in(&exprs.join("\n")))
        .cloned()
        .collect();
    assert!(named.len() >= 12, "{named:?}");
    let missing: Vec<&String> = named.iter().filter(|n| !served.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "named but not served: {missing:?}\nserved: {served:?}"
    );
}
