use super::*;

fn quote(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/testdata/tdx/{name}.bin", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Every shared vector parses, with the fields its sanity.txt printed: version, body,
/// MRTD, TEE_TCB_SVN, the trailing zero padding, and a three-certificate PCK chain.
#[test]
fn every_shared_quote_parses_with_its_known_fields() {
    for (name, version, v15, trailing, svn, mrtd_head) in [
        (
            "tdx-automata-alibaba-v5",
            5,
            true,
            0,
            "05010200000000000000000000000000",
            "157768a71a6a31f5",
        ),
        (
            "tdx-dcap-qvl-near-20a06f",
            4,
            false,
            70,
            "06010400000000000000000000000000",
            "f06dfda6dce1cf90",
        ),
        (
            "tdx-dcap-qvl-outdated",
            5,
            true,
            0,
            "07010300000000000000000000000000",
            "273828c46252fcbd",
        ),
        (
            "tdx-dcap-qvl-uptodate",
            4,
            false,
            70,
            "06010300000000000000000000000000",
            "91eb2b44d141d4ec",
        ),
        (
            "tdx-go-tdx-guest-v5",
            5,
            true,
            0,
            "0b010400000000000000000000000000",
            "7348651a34b2d2d3",
        ),
        (
            "tdx-zkdcap-00806f05",
            4,
            false,
            3065,
            "04010700000000000000000000000000",
            "935be7742dd89c6a",
        ),
    ] {
        let bytes = quote(name);
        let q = TdxQuote::parse(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(q.version, version, "{name}");
        assert_eq!(q.body.tee_tcb_svn_2.is_some(), v15, "{name}");
        assert_eq!(q.trailing_zeros, trailing, "{name}");
        assert_eq!(hex(&q.body.tee_tcb_svn), svn, "{name}");
        assert!(hex(q.body.mr_td).starts_with(mrtd_head), "{name}");
        assert_eq!(
            q.signed.len(),
            HEADER_LEN + if v15 { 6 + TD15_LEN } else { TD10_LEN }
        );
        let pem = std::str::from_utf8(q.pck_chain_pem).unwrap();
        assert_eq!(pem.matches("BEGIN CERTIFICATE").count(), 3, "{name}");
        assert_eq!(hex(&q.qe_vendor_id), "939a7233f79c4ca9940a0db3957f0607", "{name}");
        assert_eq!(q.qe_report.raw.len(), SGX_REPORT_LEN);
    }
}

/// go-tdx-guest's Sapphire Rapids quote carries 39 bytes after its signature data that are
/// not padding but text, `"\nextra bytes(only for testing purpose)\n"` (its PROVENANCE.md
/// calls them zero bytes). Bytes outside every signature and not zero are refused, so this
/// vector fails at parse rather than at `tcb`.
#[test]
fn a_quote_with_text_after_its_signature_data_is_refused() {
    let b = quote("tdx-go-tdx-guest-spr-v4");
    assert!(b.ends_with(b"\nextra bytes(only for testing purpose)\n"));
    assert_eq!(TdxQuote::parse(&b), Err(TdxParseError::Trailing(39)));
    // The same quote without its tail parses, with its known fields.
    let q = TdxQuote::parse(&b[..b.len() - 39]).unwrap();
    assert_eq!(q.version, 4);
    assert_eq!(hex(&q.body.tee_tcb_svn), "03000400000000000000000000000000");
    assert!(hex(q.body.mr_td).starts_with("6363b8043668a3ad"));
}

#[test]
fn wrong_lengths_types_and_trailing_bytes_are_refused() {
    let good = quote("tdx-dcap-qvl-uptodate");
    let q = TdxQuote::parse(&good).unwrap();
    let sig_at = q.signed.len();
    // A non-zero byte in the padding.
    let mut bad = good.clone();
    let n = bad.len();
    bad[n - 1] = 1;
    assert_eq!(TdxQuote::parse(&bad), Err(TdxParseError::Trailing(1)));
    // Every truncation fails cleanly (and never panics).
    for cut in [
        0,
        1,
        47,
        48,
        100,
        sig_at,
        sig_at + 3,
        sig_at + 100,
        good.len() - 71,
    ] {
        assert!(TdxQuote::parse(&good[..cut]).is_err(), "cut at {cut}");
    }
    // Version, key type, TEE type.
    for (at, v, want) in [
        (0usize, 3u8, "version"),
        (2, 3, "attestation key"),
        (4, 0, "TEE type"),
    ] {
        let mut b = good.clone();
        b[at] = v;
        let e = TdxQuote::parse(&b).unwrap_err().to_string();
        assert!(e.contains(want), "{e}");
    }
    // A signature data length past the end.
    let mut b = good.clone();
    b[sig_at..sig_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(TdxQuote::parse(&b), Err(TdxParseError::Length { .. })));
    // Another certification data type.
    let mut b = good.clone();
    b[sig_at + 4 + 128] = 5;
    assert!(matches!(
        TdxQuote::parse(&b),
        Err(TdxParseError::CertType { got: 5, .. })
    ));
    // A v5 body type that is not a TD report.
    let mut v5 = quote("tdx-go-tdx-guest-v5");
    v5[HEADER_LEN] = 9;
    assert!(matches!(
        TdxQuote::parse(&v5),
        Err(TdxParseError::BodyType { ty: 9, .. })
    ));
    assert!(matches!(
        TdxQuote::parse(&vec![0u8; MAX_QUOTE_LEN + 1]),
        Err(TdxParseError::TooLarge(_))
    ));
}
