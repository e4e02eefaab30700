//! `custody verify azure-cvm` end to end on the shared Azure SEV-SNP CVM vectors
//! (../shared/testvectors/azure/az-snp-vtpm-trustee-*), with and without AMD's CRLs.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

use custody_e2e::{custody, testvectors, Run};

fn verify(name: &str, nonce: Option<&str>, extra: &[&str]) -> Run {
    let dir = testvectors().join("azure").join(name).join("split");
    let p = |f: &str| dir.join(f).to_str().unwrap().to_string();
    let nonce = match nonce {
        Some(n) => n.to_string(),
        None => std::fs::read_to_string(dir.join("tpm_nonce.hex"))
            .unwrap()
            .trim()
            .to_string(),
    };
    let mut args: Vec<String> = [
        "verify",
        "azure-cvm",
        "--hcl-report",
        &p("hcl_report.bin"),
        "--vcek",
        &p("vcek.der"),
        "--quote",
        &p("tpm_quote_msg.bin"),
        "--sig",
        &p("tpm_quote_sig.bin"),
        "--pcrs",
        &p("pcrs.txt"),
        "--ak",
        &p("ak_pub.pem"),
        "--nonce",
        &nonce,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    custody(args.iter().map(String::as_str).collect::<Vec<_>>())
}

fn crl(name: &str) -> String {
    testvectors()
        .join("amd-crl/amd-kds-crl-openpcc")
        .join(name)
        .to_str()
        .unwrap()
        .to_string()
}

#[test]
fn azure_snp_cvms_verify_with_their_expected_outcomes() {
    // Each vector, inside its CRL's window, with the CRL of its ARK.
    for (name, at, crl_file, pcr0) in [
        (
            "az-snp-vtpm-trustee-milan-v1",
            "2025-06-01T00:00:00Z",
            "milan_crl.der",
            "e15c4479",
        ),
        (
            "az-snp-vtpm-trustee-milan-v2",
            "2025-06-01T00:00:00Z",
            "milan_crl.der",
            "84275b2f",
        ),
        (
            "az-snp-vtpm-trustee-genoa",
            "2025-06-01T00:00:00Z",
            "genoa_crl.der",
            "afd689d0",
        ),
    ] {
        let c = crl(crl_file);
        let r = verify(name, None, &["--at", at, "--crl", &c]);
        assert_eq!(r.code, 0, "{name}: {}\n{}", r.stdout, r.stderr);
        let j = r.json();
        assert_eq!(j["claims"]["tpm"], "paravisor-vtpm", "{name}");
        assert!(
            j["claims"]["quote"]["pcrs"]["sha256"]["0"]
                .as_str()
                .unwrap()
                .starts_with(pcr0),
            "{name}: {j}"
        );
        assert_eq!(j["claims"]["snp"]["revocation"]["status"], "good", "{name}: {j}");
    }
}

#[test]
fn azure_cvm_rejections_name_their_check() {
    let at = ["--at", "2025-06-01T00:00:00Z"];
    // Wrong nonce: the vTPM quote is not this round's.
    let r = verify("az-snp-vtpm-trustee-milan-v1", Some("6368616c6c656e6766"), &at);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert_eq!(r.failed_check().as_deref(), Some("tpm_nonce"));
    // v1 leaves user-data zero: freshness of the SNP report itself cannot be shown.
    let r = verify(
        "az-snp-vtpm-trustee-milan-v1",
        None,
        &[at[0], at[1], "--require-user-data"],
    );
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert_eq!(r.failed_check().as_deref(), Some("user_data"));
    // v2 binds it.
    let r = verify(
        "az-snp-vtpm-trustee-milan-v2",
        None,
        &[at[0], at[1], "--require-user-data"],
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    // The Genoa VCEK does not chain to the Milan ASK it is offered with.
    let ask = crl("milan_ask.pem");
    let r = verify("az-snp-vtpm-trustee-genoa", None, &[at[0], at[1], "--ca", &ask]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert_eq!(r.failed_check().as_deref(), Some("snp_cert_chain"));
    // A CRL past its nextUpdate (no grace) is not taken as fresh: the claims say `stale`,
    // for a policy to refuse (defense-restricted requires `good`).
    let c = crl("milan_crl.der");
    let r = verify(
        "az-snp-vtpm-trustee-milan-v1",
        None,
        &["--at", "2027-01-01T00:00:00Z", "--crl", &c],
    );
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert_eq!(r.json()["claims"]["snp"]["revocation"]["status"], "stale");
    // Unreadable input is a usage error (exit 2), not a verdict.
    let r = custody([
        "verify",
        "azure-cvm",
        "--hcl-report",
        "/nonexistent",
        "--vcek",
        "/x",
        "--quote",
        "/x",
        "--sig",
        "/x",
        "--pcrs",
        "/x",
        "--nonce",
        "00",
    ]);
    assert_eq!(r.code, 2, "{}", r.stderr);
}

/// Azure TDX: the HCL's TDREPORT, the TD quote of it with Intel PCS collateral, the vTPM
/// quote (trustee's az-tdx-vtpm, automata's 2025-06 collateral): accepted, OutOfDate.
#[test]
fn an_azure_tdx_cvm_verifies_through_its_td_quote() {
    let dir = testvectors().join("azure/az-tdx-vtpm-trustee");
    let p = |f: &str| dir.join(f).to_str().unwrap().to_string();
    let args = |at: &str, td_quote: &str| -> Vec<String> {
        vec![
            "verify".into(),
            "azure-cvm".into(),
            "--hcl-report".into(),
            p("split/hcl_report.bin"),
            "--td-quote".into(),
            p(td_quote),
            "--collateral".into(),
            p("collateral_automata_2025-06"),
            "--quote".into(),
            p("split/tpm_quote_msg.bin"),
            "--sig".into(),
            p("split/tpm_quote_sig.bin"),
            "--pcrs".into(),
            p("split/pcrs.txt"),
            "--nonce".into(),
            "6368616c6c656e6765".into(),
            "--at".into(),
            at.into(),
        ]
    };
    let r = custody(args("2025-06-15T00:00:00Z", "split/td_quote.bin"));
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let j = r.json();
    assert_eq!(j["claims"]["tdx"]["tcb_status"], "OutOfDate", "{j}");
    assert!(j["claims"].get("snp").is_none(), "{j}");
    // Another TD's quote (a TDX quote of Google's, valid in itself) is not this HCL's TD.
    let gcp = testvectors().join("gcp/gcp-tdx-openpcc/quote.bin");
    let mut a = args("2025-06-15T00:00:00Z", "split/td_quote.bin");
    let i = a.iter().position(|x| x == "--td-quote").unwrap();
    a[i + 1] = gcp.to_str().unwrap().into();
    let r = custody(a);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert_eq!(r.failed_check().as_deref(), Some("tdx_report_data"));
    // --vcek and --td-quote together: usage.
    let mut a = args("2025-06-15T00:00:00Z", "split/td_quote.bin");
    a.extend(["--vcek".into(), p("split/td_quote.bin")]);
    assert_eq!(custody(a).code, 2);
}
