use super::*;

struct Files {
    quote: Vec<u8>,
    tcb_info: Vec<u8>,
    tcb_info_chain: Vec<u8>,
    qe_identity: Vec<u8>,
    qe_identity_chain: Vec<u8>,
    pck_crl: Vec<u8>,
    root_ca_crl: Vec<u8>,
}

fn files(name: &str) -> Files {
    let r =
        |f: &str| std::fs::read(format!("{}/testdata/tdx/{name}/{f}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    Files {
        quote: r("quote.bin"),
        tcb_info: r("tcb_info.pcs.json"),
        tcb_info_chain: r("tcb_info_issuer_chain.pem"),
        qe_identity: r("qe_identity.pcs.json"),
        qe_identity_chain: r("qe_identity_issuer_chain.pem"),
        pck_crl: r("pck_crl.der"),
        root_ca_crl: r("root_ca_crl.der"),
    }
}

fn evidence(f: &Files) -> TdxEvidence<'_> {
    TdxEvidence {
        quote: &f.quote,
        collateral: TdxCollateral {
            tcb_info: &f.tcb_info,
            tcb_info_chain: &f.tcb_info_chain,
            qe_identity: &f.qe_identity,
            qe_identity_chain: &f.qe_identity_chain,
            pck_crl: &f.pck_crl,
            root_ca_crl: &f.root_ca_crl,
        },
        expected_report_data: None,
    }
}

fn run(f: &Files, at: &str) -> Outcome<TdxClaims, TdxError> {
    TdxVerifier::new()
        .unwrap()
        .verify(evidence(f), UnixTime(unix(at).unwrap()))
}

fn failed(o: Outcome<TdxClaims, TdxError>) -> String {
    match o {
        Ok(v) => panic!("verified: {:?}", v.claims.tcb_status),
        Err(r) => format!("{}: {}", r.error.check(), r.error),
    }
}

/// Each shared vector at a time inside its collateral's window gives the outcome its
/// PROVENANCE.md states (testdata/tdx/*/PROVENANCE.md).
#[test]
fn every_shared_quote_gives_its_expected_outcome() {
    for (name, at, status, advisories) in [
        (
            "tdx-dcap-qvl-uptodate",
            "2025-07-01T00:00:00Z",
            "UpToDate",
            &[][..],
        ),
        (
            "tdx-dcap-qvl-near-20a06f",
            "2025-09-10T00:00:00Z",
            "UpToDate",
            &[],
        ),
        ("tdx-automata-alibaba-v5", "2025-06-15T00:00:00Z", "UpToDate", &[]),
        ("tdx-go-tdx-guest-v5", "2026-03-01T00:00:00Z", "UpToDate", &[]),
        (
            "tdx-zkdcap-00806f05",
            "2025-01-21T13:44:20Z",
            "OutOfDate",
            &["INTEL-SA-00960", "INTEL-SA-00982", "INTEL-SA-00986"],
        ),
    ] {
        let o = run(&files(name), at);
        let v = o.unwrap_or_else(|r| panic!("{name}: {} {}", r.error.check(), r.error));
        assert_eq!(v.claims.tcb_status, status, "{name}");
        assert_eq!(v.claims.advisory_ids, advisories, "{name}");
        let names: Vec<&str> = v.checks.iter().map(|c| c.name).collect();
        assert_eq!(
            names,
            [
                "parse",
                "cert_chain",
                "cert_validity",
                "revocation",
                "qe_report_signature",
                "qe_report_data",
                "quote_signature",
                "qe_identity",
                "tcb_info",
                "tcb"
            ],
            "{name}"
        );
    }
    // Genuine, but no TCB level matches: rejected at `tcb`.
    let e = failed(run(&files("tdx-dcap-qvl-outdated"), "2026-03-01T00:00:00Z"));
    assert!(e.starts_with("tcb: "), "{e}");
    // Text after the signature data: refused at parse (see formats' tdx tests).
    let e = failed(run(&files("tdx-go-tdx-guest-spr-v4"), "2023-07-01T01:00:00Z"));
    assert!(e.starts_with("parse: "), "{e}");
}

#[test]
fn the_claims_are_the_td_reports() {
    let v = run(&files("tdx-dcap-qvl-uptodate"), "2025-07-01T00:00:00Z").unwrap();
    let c = v.claims;
    assert_eq!(c.fmspc, "B0C06F000000");
    assert!(c.mr_td.starts_with("91eb2b44d141d4ec"));
    assert_eq!(c.tee_tcb_svn, "06010300000000000000000000000000");
    assert!(c.report_data.starts_with("9a9d48e7f6799642"));
    assert!(!c.debug);
}

/// Outside the collateral's window: the CRLs or the TCB info are not current.
#[test]
fn stale_or_early_collateral_is_refused() {
    let f = files("tdx-dcap-qvl-uptodate");
    let e = failed(run(&f, "2025-08-01T00:00:00Z"));
    assert!(
        e.starts_with("revocation: ") || e.starts_with("qe_identity: "),
        "{e}"
    );
    let e = failed(run(&f, "2025-06-01T00:00:00Z"));
    assert!(!e.starts_with("tcb: "), "{e}");
    // The alibaba PCK certificate is not valid before 2025-06-14T16:04:26Z.
    let e = failed(run(&files("tdx-automata-alibaba-v5"), "2025-06-14T00:00:00Z"));
    assert!(e.starts_with("cert_validity: "), "{e}");
}

/// The collateral's own window: a quote verifies inside it and fails outside it, so a
/// verifier can tell its stale collateral from a node's bad quote.
#[test]
fn the_collateral_window_is_where_quotes_verify() {
    let f = files("tdx-dcap-qvl-uptodate");
    let w = evidence(&f).collateral.window().unwrap();
    assert!(w.from < w.until, "{w:?}");
    let verifier = TdxVerifier::new().unwrap();
    assert!(verifier.verify(evidence(&f), UnixTime(w.from)).is_ok());
    assert!(verifier.verify(evidence(&f), UnixTime(w.until)).is_ok());
    assert!(verifier.verify(evidence(&f), UnixTime(w.until + 1)).is_err());
    assert!(verifier.verify(evidence(&f), UnixTime(w.from - 1)).is_err());
    let mut broken = evidence(&f);
    broken.collateral.pck_crl = b"not a CRL";
    assert!(broken.collateral.window().unwrap_err().starts_with("PCK CRL"));
}

/// Which collateral a quote needs: its PCK's FMSPC (after the chain verifies), and the
/// FMSPC each collateral set serves.
#[test]
fn a_quote_and_its_collateral_name_the_same_fmspc() {
    let f = files("tdx-dcap-qvl-uptodate");
    let w = evidence(&f).collateral.window().unwrap();
    let v = TdxVerifier::new().unwrap();
    let fmspc = v.pck_fmspc(&f.quote, UnixTime(w.from)).unwrap();
    assert_eq!(hex::encode_upper(fmspc), "B0C06F000000");
    assert_eq!(evidence(&f).collateral.fmspc().unwrap(), fmspc);
    let other = files("tdx-automata-alibaba-v5");
    assert_eq!(
        hex::encode_upper(evidence(&other).collateral.fmspc().unwrap()),
        "90C06F000000"
    );
    // Another root: the chain does not verify, so no FMSPC is trusted from it.
    let snp_root = TdxVerifier::with_root(include_bytes!("../../testdata/snp-milan-ark.pem")).unwrap();
    assert_eq!(
        snp_root
            .pck_fmspc(&f.quote, UnixTime(w.from))
            .unwrap_err()
            .check(),
        "cert_chain"
    );
    assert_eq!(
        v.pck_fmspc(b"short", UnixTime(w.from)).unwrap_err().check(),
        "parse"
    );
    // The claim, read without verifying (how a round picks the set to try), is the same
    // FMSPC whatever the root; `verify` is what proves it.
    assert_eq!(TdxVerifier::claimed_fmspc(&f.quote).unwrap(), fmspc);
    assert_eq!(TdxVerifier::claimed_fmspc(b"short").unwrap_err().check(), "parse");
}

/// A set for another platform model than the PCK's: `tcb_info` names both FMSPCs, so a
/// quote whose claim picked the wrong set cannot pass.
#[test]
fn collateral_for_another_fmspc_is_refused_at_tcb_info() {
    let f = files("tdx-dcap-qvl-uptodate");
    let other = files("tdx-automata-alibaba-v5");
    let mut ev = evidence(&f);
    let o = evidence(&other);
    ev.collateral.tcb_info = o.collateral.tcb_info;
    ev.collateral.tcb_info_chain = o.collateral.tcb_info_chain;
    let at = UnixTime(evidence(&f).collateral.window().unwrap().from);
    let r = TdxVerifier::new().unwrap().verify(ev, at).unwrap_err();
    assert_eq!(r.error.check(), "tcb_info", "{}", r.error);
    assert!(
        r.error.to_string().contains("the PCK's is B0C06F000000"),
        "{}",
        r.error
    );
}

/// The PCK certificate's PPID is a claim: the platform's identity for the registry.
#[test]
fn the_ppid_is_read_from_the_pck_certificate() {
    let f = files("tdx-dcap-qvl-uptodate");
    let w = evidence(&f).collateral.window().unwrap();
    let v = TdxVerifier::new()
        .unwrap()
        .verify(evidence(&f), UnixTime(w.from))
        .unwrap();
    assert_eq!(v.claims.ppid.len(), 32, "{}", v.claims.ppid);
    assert_ne!(v.claims.ppid, "0".repeat(32));
}

/// Every tampering fails at its check.
type Tamper = Box<dyn Fn(&mut Files)>;

/// One tampering per check, with the check that must catch it.
fn tamperings() -> Vec<(Tamper, &'static str)> {
    let base = files("tdx-dcap-qvl-uptodate");
    let q = custody_formats::tdx::TdxQuote::parse(&base.quote).unwrap();
    let body_at = 48 + 200; // inside the TD report (MRTD)
    let sig_data = q.signed.len() + 4;
    let qe_report_at = sig_data + 128 + 6 + 100;
    vec![
        (Box::new(move |f| f.quote[body_at] ^= 1), "quote_signature"),
        (Box::new(move |f| f.quote[sig_data + 10] ^= 1), "quote_signature"),
        (
            Box::new(move |f| f.quote[qe_report_at] ^= 1),
            "qe_report_signature",
        ),
        // The attestation key changed: the QE's report data no longer commits to it.
        (
            Box::new(move |f| f.quote[sig_data + 64 + 5] ^= 1),
            "qe_report_data",
        ),
        (
            Box::new(|f| {
                let t = String::from_utf8(f.tcb_info.clone()).unwrap();
                f.tcb_info = t
                    .replacen(
                        "\"tcbEvaluationDataNumber\":17",
                        "\"tcbEvaluationDataNumber\":18",
                        1,
                    )
                    .into_bytes();
            }),
            "tcb_info",
        ),
        (
            Box::new(|f| {
                let t = String::from_utf8(f.qe_identity.clone()).unwrap();
                f.qe_identity = t.replacen("\"isvprodid\":2", "\"isvprodid\":3", 1).into_bytes();
            }),
            "qe_identity",
        ),
        (
            Box::new(|f| {
                let n = f.pck_crl.len();
                f.pck_crl[n - 10] ^= 1;
            }),
            "revocation",
        ),
        (
            Box::new(|f| {
                let n = f.root_ca_crl.len();
                f.root_ca_crl[n - 10] ^= 1;
            }),
            "revocation",
        ),
        // Another platform's TCB info (wrong FMSPC).
        (
            Box::new(|f| {
                let other = files("tdx-dcap-qvl-near-20a06f");
                f.tcb_info = other.tcb_info;
                f.tcb_info_chain = other.tcb_info_chain;
            }),
            "tcb_info",
        ),
    ]
}

#[test]
fn each_tampering_fails_at_its_check() {
    let at = "2025-07-01T00:00:00Z";
    let base = files("tdx-dcap-qvl-uptodate");
    for (i, (tamper, check)) in tamperings().iter().enumerate() {
        let mut f = files("tdx-dcap-qvl-uptodate");
        tamper(&mut f);
        let e = failed(run(&f, at));
        assert!(e.starts_with(&format!("{check}: ")), "case {i}: {e}");
    }
    // A quote chained to another root.
    let other = TdxVerifier::with_root(include_bytes!("../../testdata/snp-milan-ark.pem")).unwrap();
    let r = other
        .verify(evidence(&base), UnixTime(unix(at).unwrap()))
        .unwrap_err();
    assert_eq!(r.error.check(), "cert_chain", "{}", r.error);
}

#[test]
fn pcs_times_read_as_unix_seconds() {
    assert_eq!(unix("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(unix("2025-07-01T00:00:00Z"), Some(1_751_328_000));
    assert_eq!(unix("2024-02-29T12:00:00Z"), Some(1_709_208_000));
    for bad in [
        "2025-07-01 00:00:00Z",
        "2025-13-01T00:00:00Z",
        "2025-07-01T00:00:00",
        "",
    ] {
        assert_eq!(unix(bad), None, "{bad}");
    }
}

/// A warm verifier (chains, CRL signatures and collateral documents it verified before)
/// decides as a cold one: the same claims, every tampering caught at the same check, and
/// outside the collateral's or a chain's window it fails as a cold one does.
#[test]
fn a_warm_verifier_decides_as_a_cold_one() {
    let at = UnixTime(unix("2025-07-01T00:00:00Z").unwrap());
    let base = files("tdx-dcap-qvl-uptodate");
    let warm = TdxVerifier::new().unwrap();
    let first = warm.verify(evidence(&base), at).unwrap();
    let again = warm.verify(evidence(&base), at).unwrap();
    let claims = |v: &crate::check::Verified<TdxClaims>| serde_json::to_value(&v.claims).unwrap();
    assert_eq!(claims(&first), claims(&again));
    let detail = |o: &crate::check::Verified<TdxClaims>, name: &str| {
        o.checks.iter().find(|c| c.name == name).unwrap().detail.clone()
    };
    assert!(!detail(&first, "cert_chain").contains("verified before"));
    assert!(detail(&again, "cert_chain").contains("verified before"));
    let cold = warm.cold().verify(evidence(&base), at).unwrap();
    assert!(!detail(&cold, "cert_chain").contains("verified before"));
    assert_eq!(claims(&cold), claims(&again));

    for (i, (tamper, check)) in tamperings().iter().enumerate() {
        let mut f = files("tdx-dcap-qvl-uptodate");
        tamper(&mut f);
        let e = failed(warm.verify(evidence(&f), at));
        assert!(e.starts_with(&format!("{check}: ")), "warm, case {i}: {e}");
        // The untampered collateral is still good after a tampered one was refused.
        assert!(warm.verify(evidence(&base), at).is_ok(), "case {i}");
    }

    // Past the collateral's window, and before the PCK certificate's: as cold.
    let w = evidence(&base).collateral.window().unwrap();
    for t in [w.until + 1, w.from - 1, 0] {
        let cold = failed(warm.cold().verify(evidence(&base), UnixTime(t)));
        let hot = failed(warm.verify(evidence(&base), UnixTime(t)));
        assert_eq!(hot, cold, "at {t}");
    }
    assert!(warm.verify(evidence(&base), UnixTime(w.until)).is_ok());
}
