//! `custody verify tdx` end to end on the shared TDX vectors (../shared/testvectors/tdx),
//! each at a time inside its collateral's window, with the outcome its PROVENANCE.md states.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

use custody_e2e::{custody, testvectors, Run};

fn verify(name: &str, at: &str, extra: &[&str]) -> Run {
    let dir = testvectors().join("tdx").join(name);
    let collateral = if dir.join("collateral").is_dir() {
        dir.join("collateral")
    } else {
        dir.join("collateral_from_dcap-qvl_2026-02")
    };
    let (q, c) = (dir.join("quote.bin"), collateral);
    let mut args = vec![
        "verify",
        "tdx",
        "--quote",
        q.to_str().unwrap(),
        "--collateral",
        c.to_str().unwrap(),
        "--at",
        at,
    ];
    args.extend_from_slice(extra);
    custody(args)
}

#[test]
fn shared_quotes_give_their_expected_outcomes() {
    for (name, at, status) in [
        ("tdx-dcap-qvl-uptodate", "2025-07-01T00:00:00Z", "UpToDate"),
        ("tdx-dcap-qvl-near-20a06f", "2025-09-10T00:00:00Z", "UpToDate"),
        ("tdx-automata-alibaba-v5", "2025-06-15T00:00:00Z", "UpToDate"),
        ("tdx-go-tdx-guest-v5", "2026-03-01T00:00:00Z", "UpToDate"),
        ("tdx-zkdcap-00806f05", "2025-01-21T13:44:20Z", "OutOfDate"),
    ] {
        let r = verify(name, at, &[]);
        assert_eq!(r.code, 0, "{name}: {}\n{}", r.stdout, r.stderr);
        assert_eq!(r.json()["claims"]["tcb_status"], status, "{name}");
    }
    let r = verify("tdx-zkdcap-00806f05", "2025-01-21T13:44:20Z", &[]);
    assert_eq!(
        r.json()["claims"]["advisory_ids"],
        serde_json::json!(["INTEL-SA-00960", "INTEL-SA-00982", "INTEL-SA-00986"])
    );
    // --require-up-to-date: OutOfDate fails at `tcb`, exit 1.
    let r = verify(
        "tdx-zkdcap-00806f05",
        "2025-01-21T13:44:20Z",
        &["--require-up-to-date"],
    );
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert_eq!(r.failed_check().as_deref(), Some("tcb"));
    // Genuine but no TCB level matches.
    let r = verify("tdx-dcap-qvl-outdated", "2026-03-01T00:00:00Z", &[]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert_eq!(r.failed_check().as_deref(), Some("tcb"));
    // Text after the signature data.
    let r = verify("tdx-go-tdx-guest-spr-v4", "2023-07-01T01:00:00Z", &[]);
    assert_eq!(r.failed_check().as_deref(), Some("parse"), "{}", r.stdout);
}

#[test]
fn report_data_time_and_usage_errors() {
    let at = "2025-07-01T00:00:00Z";
    let rd = "00".repeat(64);
    let r = verify("tdx-dcap-qvl-uptodate", at, &["--report-data", &rd]);
    assert_eq!(r.code, 1);
    assert_eq!(r.failed_check().as_deref(), Some("report_data"));
    // After the PCK CRL's next update: the collateral is stale.
    let r = verify("tdx-dcap-qvl-uptodate", "2025-08-01T00:00:00Z", &[]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    // Usage: a report data of the wrong length, a missing collateral directory.
    assert_eq!(
        verify("tdx-dcap-qvl-uptodate", at, &["--report-data", "abcd"]).code,
        2
    );
    let r = custody([
        "verify",
        "tdx",
        "--quote",
        "/nonexistent",
        "--collateral",
        "/nonexistent",
    ]);
    assert_eq!(r.code, 2);
}
