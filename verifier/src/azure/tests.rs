use super::*;
use custody_formats::alg::HashAlg;

/// Real Azure SEV-SNP CVM evidence (trustee's test data: testdata/azure/*/PROVENANCE.md).
struct Files {
    hcl: Vec<u8>,
    vcek: Vec<u8>,
    quote: Vec<u8>,
    sig: Vec<u8>,
    pcrs: Vec<u8>,
    nonce: Vec<u8>,
    ak: Vec<u8>,
}

fn files(name: &str) -> Files {
    let r = |f: &str| {
        std::fs::read(format!(
            "{}/testdata/azure/{name}/{f}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    };
    let nonce = hex::decode(String::from_utf8(r("tpm_nonce.hex")).unwrap().trim()).unwrap();
    Files {
        hcl: r("hcl_report.bin"),
        vcek: r("vcek.der"),
        quote: r("tpm_quote_msg.bin"),
        sig: r("tpm_quote_sig.bin"),
        pcrs: r("pcrs.txt"),
        nonce,
        ak: r("ak_pub.pem"),
    }
}

/// Inside every VCEK's validity (2025-01-28 .. 2032-01-28).
const AT: UnixTime = UnixTime(1_748_736_000); // 2025-06-01

fn verifier() -> AzureVerifier {
    AzureVerifier {
        snp: SnpVerifier::builtin().unwrap(),
        tdx: TdxVerifier::new().unwrap(),
        tpm: TpmVerifier::new(),
    }
}

/// The files as SNP evidence, without a caller's AK.
fn evidence(f: &Files) -> AzureEvidence<'_> {
    AzureEvidence {
        hcl_report: &f.hcl,
        hardware: AzureHardware::Snp {
            vcek: &f.vcek,
            ca_chain: None,
        },
        quote: &f.quote,
        signature: &f.sig,
        pcrs: &f.pcrs,
        nonce: &f.nonce,
        ak: None,
        require_user_data: false,
    }
}

fn run(f: &Files, require_user_data: bool) -> Outcome<AzureClaims, AzureError> {
    verifier().verify(
        AzureEvidence {
            ak: Some(&f.ak),
            require_user_data,
            ..evidence(f)
        },
        AT,
    )
}

fn failed(o: Outcome<AzureClaims, AzureError>) -> String {
    match o {
        Ok(_) => panic!("verified"),
        Err(r) => format!("{}: {}", r.error.check(), r.error),
    }
}

/// Each vector is accepted, with PCR 0 as upstream's tests assert it, through every
/// named check in order.
#[test]
fn every_shared_azure_vector_is_accepted() {
    for (name, pcr0, binds) in [
        (
            "milan-v1",
            "e15c44796beabf46abcec7c57e590942041e47497e4ec27571c8b7664f48dced",
            false,
        ),
        ("milan-v2", "84275b2f", true),
        ("genoa", "afd689d0", false),
    ] {
        let v =
            run(&files(name), false).unwrap_or_else(|r| panic!("{name}: {}: {}", r.error.check(), r.error));
        let c = &v.claims;
        assert_eq!(c.tpm, "paravisor-vtpm");
        let got = &c.quote.pcrs[&HashAlg::Sha256][&0];
        assert!(got.starts_with(pcr0), "{name}: pcr0 {got}");
        assert_eq!(c.quote.pcrs[&HashAlg::Sha256].len(), 24, "{name}");
        assert_eq!(c.user_data_binds_nonce, binds, "{name}");
        assert_eq!(c.vm_configuration["secure-boot"], true, "{name}");
        let names: Vec<&str> = v.checks.iter().map(|c| c.name).collect();
        for want in [
            "hcl_report",
            "snp_cert_chain",
            "snp_signature",
            "snp_report_data",
            "runtime_data",
            "ak",
        ] {
            assert!(names.contains(&want), "{name}: {names:?}");
        }
        for want in ["tpm_signature", "tpm_nonce", "tpm_pcr_digest"] {
            assert!(names.contains(&want), "{name}: {names:?}");
        }
        let pos = |n: &str| names.iter().position(|x| *x == n).unwrap();
        assert!(
            pos("snp_report_data") < pos("ak") && pos("ak") < pos("tpm_signature"),
            "{names:?}"
        );
    }
}

/// The v2 sample binds the nonce in the SNP report too; v1 does not and fails when the
/// caller asks for it (trustee's evidence-version >= 2 rule).
#[test]
fn user_data_binding_is_checked_when_asked() {
    let v = run(&files("milan-v2"), true).unwrap();
    assert!(v.checks.iter().any(|c| c.name == "user_data"));
    assert!(failed(run(&files("milan-v1"), true)).starts_with("user_data:"));
    let mut f = files("milan-v2");
    f.nonce = hex::decode("123abc").unwrap();
    assert!(failed(run(&f, true)).starts_with("user_data:"));
}

#[test]
fn a_wrong_nonce_fails_at_tpm_nonce() {
    let mut f = files("milan-v1");
    f.nonce = b"challengf".to_vec();
    assert!(failed(run(&f, false)).starts_with("tpm_nonce:"));
}

#[test]
fn a_tampered_quote_or_signature_fails_at_tpm_signature() {
    let mut f = files("genoa");
    let last = f.sig.len() - 1;
    f.sig[last] ^= 1;
    assert!(failed(run(&f, false)).starts_with("tpm_signature:"));
    let mut f = files("genoa");
    // A byte of the clock info.
    let at = f.quote.len() - 40;
    f.quote[at] ^= 1;
    assert!(
        failed(run(&f, false)).starts_with("tpm_"),
        "{}",
        failed(run(&f, false))
    );
}

#[test]
fn a_changed_pcr_fails_at_tpm_pcr_digest() {
    let mut f = files("milan-v1");
    let text = String::from_utf8(f.pcrs.clone()).unwrap();
    f.pcrs = text.replacen("0 e15c", "0 f15c", 1).into_bytes();
    assert!(failed(run(&f, false)).starts_with("tpm_pcr_digest:"));
}

/// The AK is trusted only through the runtime data's hash in the signed SNP report, so
/// swapping the key in the runtime data breaks the report binding; a caller's AK that is
/// not the runtime data's fails at `ak`.
#[test]
fn a_swapped_attestation_key_is_refused() {
    let mut f = files("milan-v1");
    let var = std::fs::read(format!(
        "{}/testdata/azure/milan-v1/var_data.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let at = f
        .hcl
        .windows(var.len())
        .position(|w| w == var.as_slice())
        .unwrap();
    let n_at = at + var.windows(5).position(|w| w == b"\"n\":\"").unwrap() + 10;
    f.hcl[n_at] = if f.hcl[n_at] == b'A' { b'B' } else { b'A' };
    assert!(failed(run(&f, false)).starts_with("snp_report_data:"));

    let mut f = files("milan-v1");
    f.ak = files("genoa").ak;
    assert!(failed(run(&f, false)).starts_with("ak:"));
}

#[test]
fn a_tampered_snp_report_fails_at_snp_signature() {
    let mut f = files("milan-v2");
    // Inside the SNP report's measurement (report offset 0x90).
    f.hcl[HCL_HEADER_LEN + 0x90] ^= 1;
    assert!(failed(run(&f, false)).starts_with("snp_signature:"));
}

/// The Genoa VCEK under the Milan report, and the Milan ASK offered for the Genoa VCEK.
#[test]
fn the_wrong_vcek_or_chain_is_refused() {
    let mut f = files("milan-v1");
    f.vcek = files("genoa").vcek;
    let e = failed(run(&f, false));
    assert!(e.starts_with("snp_"), "{e}");

    let f = files("genoa");
    let milan = std::fs::read(format!("{}/roots/amd/milan-ask.pem", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let o = verifier().verify(
        AzureEvidence {
            hardware: AzureHardware::Snp {
                vcek: &f.vcek,
                ca_chain: Some(&milan),
            },
            ..evidence(&f)
        },
        AT,
    );
    assert!(failed(o).starts_with("snp_cert_chain:"));
}

#[test]
fn before_the_vcek_is_valid_fails_at_snp_cert_validity() {
    let f = files("genoa");
    let o = verifier().verify(evidence(&f), UnixTime(1_700_000_000));
    assert!(failed(o).starts_with("snp_cert_validity:"));
}

/// Malformed HCL reports: a clear `hcl_report` error, never a panic, at every length.
#[test]
fn a_malformed_hcl_report_fails_at_hcl_report() {
    let f = files("milan-v1");
    let mut bad = f.hcl.clone();
    bad[0] = b'X';
    assert!(split_hcl(&bad).is_err());
    for cut in [
        0,
        3,
        31,
        100,
        HCL_HEADER_LEN + SNP_REPORT_LEN + 10,
        f.hcl.len() - 1,
    ] {
        let e = split_hcl(&f.hcl[..cut]);
        if cut < f.hcl.len() - 1 {
            assert!(matches!(e, Err(AzureError::Hcl(_))), "cut {cut}");
        }
    }
    // Report type 4 is a TDX TDREPORT.
    let mut tdx = f.hcl.clone();
    tdx[HCL_HEADER_LEN + SNP_REPORT_LEN + 8] = 4;
    assert!(matches!(split_hcl(&tdx), Ok((HclHardware::TdReport(r), _)) if r.len() == TDREPORT_LEN));
    tdx[HCL_HEADER_LEN + SNP_REPORT_LEN + 8] = 3;
    let e = split_hcl(&tdx).unwrap_err().to_string();
    assert!(e.contains("report type 3"), "{e}");
    // A runtime data size past the end.
    let mut big = f.hcl.clone();
    big[HCL_HEADER_LEN + SNP_REPORT_LEN + 16..HCL_HEADER_LEN + SNP_REPORT_LEN + 20]
        .copy_from_slice(&60_000u32.to_le_bytes());
    assert!(split_hcl(&big).is_err());
}

/// The JWK to SPKI conversion gives the same key as the PEM the vectors carry.
#[test]
fn the_hclakpub_jwk_is_the_published_ak() {
    let f = files("milan-v1");
    let (_, var) = split_hcl(&f.hcl).unwrap();
    let rt: RuntimeData = serde_json::from_slice(var).unwrap();
    let jwk = rt.keys.iter().find(|k| k.kid == "HCLAkPub").unwrap();
    let spki = rsa_spki(
        &URL_SAFE_NO_PAD.decode(&jwk.n).unwrap(),
        &URL_SAFE_NO_PAD.decode(&jwk.e).unwrap(),
    );
    assert_eq!(spki, pem_or_der(&f.ak));
}

/// Azure TDX (trustee's `az-tdx-vtpm` evidence): the HCL's TDREPORT, the TD quote of it
/// under Intel PCS collateral (automata's 2025-06 set for FMSPC 00806F050000), the vTPM
/// quote. testdata/azure/tdx/PROVENANCE.md: accept, TCB status OutOfDate.
struct TdxFiles {
    hcl: Vec<u8>,
    td_quote: Vec<u8>,
    c: [Vec<u8>; 6],
    quote: Vec<u8>,
    sig: Vec<u8>,
    pcrs: Vec<u8>,
    nonce: Vec<u8>,
}

fn tdx_files() -> TdxFiles {
    let r =
        |f: &str| std::fs::read(format!("{}/testdata/azure/tdx/{f}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    TdxFiles {
        hcl: r("hcl_report.bin"),
        td_quote: r("td_quote.bin"),
        c: crate::tdx::COLLATERAL_FILES.map(|n| r(&format!("collateral/{n}"))),
        quote: r("tpm_quote_msg.bin"),
        sig: r("tpm_quote_sig.bin"),
        pcrs: r("pcrs.txt"),
        nonce: hex::decode(String::from_utf8(r("tpm_nonce.hex")).unwrap().trim()).unwrap(),
    }
}

fn run_tdx(f: &TdxFiles, at: UnixTime) -> Outcome<AzureClaims, AzureError> {
    verifier().verify(
        AzureEvidence {
            hcl_report: &f.hcl,
            hardware: AzureHardware::Tdx {
                quote: &f.td_quote,
                collateral: TdxCollateral::from_files(&f.c),
            },
            quote: &f.quote,
            signature: &f.sig,
            pcrs: &f.pcrs,
            nonce: &f.nonce,
            ak: None,
            require_user_data: false,
        },
        at,
    )
}

/// Inside the collateral's window (2025-06-04 .. 2025-07-04).
const TDX_AT: UnixTime = UnixTime(1_749_945_600); // 2025-06-15

#[test]
fn an_azure_tdx_cvm_is_accepted_with_its_tcb_status() {
    let v = run_tdx(&tdx_files(), TDX_AT).unwrap_or_else(|r| panic!("{}: {}", r.error.check(), r.error));
    let tdx = v.claims.tdx.as_ref().unwrap();
    assert_eq!(tdx.tcb_status, "OutOfDate");
    assert!(v.claims.snp.is_none());
    assert_eq!(v.claims.tpm, "paravisor-vtpm");
    let names: Vec<&str> = v.checks.iter().map(|c| c.name).collect();
    for want in [
        "hcl_report",
        "tdx_cert_chain",
        "tdx_quote_signature",
        "tdx_report_data",
        "td_report",
        "runtime_data",
        "ak",
        "tpm_signature",
        "tpm_nonce",
    ] {
        assert!(names.contains(&want), "{want}: {names:?}");
    }
}

#[test]
fn azure_tdx_tamperings_fail_at_their_checks() {
    // The TDREPORT measures another TD (a byte of its MRTD).
    let mut f = tdx_files();
    f.hcl[HCL_HEADER_LEN + TDINFO_MEASURED.start + 16] ^= 1;
    assert!(failed(run_tdx(&f, TDX_AT)).starts_with("td_report:"));
    // The runtime data changed: the TD quote's REPORTDATA no longer commits to it.
    let mut f = tdx_files();
    let (_, var) = split_hcl(&f.hcl).unwrap();
    let at = HCL_HEADER_LEN + SNP_REPORT_LEN + IGVM_HEADER_LEN + var.len() / 2;
    f.hcl[at] ^= 0x20;
    assert!(failed(run_tdx(&f, TDX_AT)).starts_with("tdx_report_data:"));
    // A bit of the TD quote's body.
    let mut f = tdx_files();
    f.td_quote[48 + 200] ^= 1;
    assert!(failed(run_tdx(&f, TDX_AT)).starts_with("tdx_quote_signature:"));
    // Collateral out of date.
    assert!(failed(run_tdx(&tdx_files(), UnixTime(1_800_000_000))).starts_with("tdx_"));
    // SNP evidence for a TDX HCL report.
    let f = tdx_files();
    let snp = files("milan-v1");
    let o = verifier().verify(
        AzureEvidence {
            hcl_report: &f.hcl,
            ..evidence(&snp)
        },
        TDX_AT,
    );
    assert!(failed(o).starts_with("hcl_report:"));
}
