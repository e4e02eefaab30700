//! A forged-but-structurally-real Intel TDX quote for machines without TDX hardware.
//!
//! The quote is a real v4 quote (verifier/testdata/tdx/tdx-dcap-qvl-uptodate/quote.bin,
//! from Phala's dcap-qvl, MIT; see its PROVENANCE.md) with the fields a test changes
//! (REPORT_DATA, MRTD, RTMRs, TD attributes, XFAM) rewritten, optionally as a v5 quote
//! (TD report 1.5), a **test** attestation key in place
//! of the real one, the QE report re-signed by a **test** PCK key and the quote re-signed
//! by the test attestation key. NOT Intel: the PCK chain is tests/testdata/tdx-test-root
//! (built by its make.py, shaped like Intel's SGX Root CA / PCK Platform CA / PCK
//! certificate, the PCK's SGX extension copied from the real one), and so is the
//! collateral (Intel's TCB info and QE identity bodies, re-signed by a test TCB Signing
//! key). A verifier accepts it only with `TdxVerifier::with_root` given that root.

use aws_lc_rs::digest;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use custody_formats::tdx::{TdxQuote, CERT_PCK_CHAIN, CERT_QE_REPORT, HEADER_LEN, TD10_LEN, TD15_LEN};
use std::path::PathBuf;

// Offsets in a v4 quote (header 48 bytes, then the TD report 1.0).
const TD_ATTRIBUTES: usize = HEADER_LEN + 120;
const XFAM: usize = HEADER_LEN + 128;
const MR_TD: usize = HEADER_LEN + 136;
const RTMR: usize = HEADER_LEN + 328;
const REPORT_DATA: usize = HEADER_LEN + 520;
/// What the attestation key signs: header and TD report.
const SIGNED: usize = HEADER_LEN + TD10_LEN;
/// REPORT_DATA in the QE's SGX report body (384 bytes).
const QE_REPORT_DATA: usize = 320;

fn root() -> PathBuf {
    crate::repo_root().join("tests/testdata/tdx-test-root")
}

/// The test root CA (PEM) for `TdxVerifier::with_root`.
pub fn test_root() -> PathBuf {
    root().join("root.pem")
}

/// Collateral (the six `COLLATERAL_FILES`) signed under the test root, valid 2024..2049.
pub fn collateral() -> PathBuf {
    root().join("collateral")
}

/// The same, but the PCK CRL lists the test PCK certificate: fails at `revocation`.
pub fn collateral_pck_revoked() -> PathBuf {
    root().join("collateral-pck-revoked")
}

/// The same, but every TCB level of the TCB info is `Revoked`: fails at `tcb`.
pub fn collateral_tcb_revoked() -> PathBuf {
    root().join("collateral-tcb-revoked")
}

/// The captured quote, as Intel's QE signed it.
pub fn real_quote() -> Vec<u8> {
    std::fs::read(crate::repo_root().join("verifier/testdata/tdx/tdx-dcap-qvl-uptodate/quote.bin")).unwrap()
}

/// What the forged quote's TD report says.
#[derive(Debug, Clone)]
pub struct Td {
    pub mr_td: [u8; 48],
    pub rtmr: [[u8; 48]; 4],
    pub td_attributes: [u8; 8],
    pub xfam: [u8; 8],
}

impl Default for Td {
    /// The captured TD.
    fn default() -> Self {
        real_td()
    }
}

/// The captured quote's MRTD, RTMRs, TD attributes and XFAM.
pub fn real_td() -> Td {
    let q = real_quote();
    let at = |o: usize| -> [u8; 48] { q[o..o + 48].try_into().unwrap() };
    Td {
        mr_td: at(MR_TD),
        rtmr: [at(RTMR), at(RTMR + 48), at(RTMR + 96), at(RTMR + 144)],
        td_attributes: q[TD_ATTRIBUTES..TD_ATTRIBUTES + 8].try_into().unwrap(),
        xfam: q[XFAM..XFAM + 8].try_into().unwrap(),
    }
}

fn key(file: &str) -> EcdsaKeyPair {
    EcdsaKeyPair::from_pkcs8(
        &ECDSA_P256_SHA256_FIXED_SIGNING,
        &std::fs::read(root().join(file)).unwrap(),
    )
    .unwrap()
}

fn sign(key: &EcdsaKeyPair, msg: &[u8]) -> Vec<u8> {
    key.sign(&SystemRandom::new(), msg).unwrap().as_ref().to_vec()
}

fn u16_le(n: usize) -> [u8; 2] {
    u16::try_from(n).unwrap().to_le_bytes()
}

fn u32_le(n: usize) -> [u8; 4] {
    u32::try_from(n).unwrap().to_le_bytes()
}

/// A v4 quote for `binding` (REPORT_DATA = binding || 32 zero bytes) from `td`: the test
/// attestation key in it, vouched for by the QE report (its REPORT_DATA = SHA-256(key ||
/// QE auth data) || zeros) re-signed by the test PCK key, the test PCK chain as its
/// certification data, and the quote signed by the test attestation key.
pub fn quote(binding: &[u8; 32], td: &Td) -> Vec<u8> {
    quote_version(binding, td, 4)
}

/// The same as a v5 quote: header version 5, body type 3 (TD report 1.5: the 1.0 fields,
/// then TEE_TCB_SVN2 and MRSERVICETD, zero here), what TDX module 1.5 platforms write.
pub fn quote_v5(binding: &[u8; 32], td: &Td) -> Vec<u8> {
    quote_version(binding, td, 5)
}

fn quote_version(binding: &[u8; 32], td: &Td, version: u16) -> Vec<u8> {
    let real = real_quote();
    let parsed = TdxQuote::parse(&real).unwrap();
    assert_eq!(parsed.version, 4, "the base quote is v4");
    assert_eq!(parsed.signed.len(), SIGNED);

    let mut signed = real[..SIGNED].to_vec();
    signed[TD_ATTRIBUTES..TD_ATTRIBUTES + 8].copy_from_slice(&td.td_attributes);
    signed[XFAM..XFAM + 8].copy_from_slice(&td.xfam);
    signed[MR_TD..MR_TD + 48].copy_from_slice(&td.mr_td);
    for (i, r) in td.rtmr.iter().enumerate() {
        signed[RTMR + 48 * i..RTMR + 48 * (i + 1)].copy_from_slice(r);
    }
    signed[REPORT_DATA..REPORT_DATA + 64].fill(0);
    signed[REPORT_DATA..REPORT_DATA + 32].copy_from_slice(binding);
    if version == 5 {
        let body = signed.split_off(HEADER_LEN);
        signed[..2].copy_from_slice(&5u16.to_le_bytes());
        signed.extend_from_slice(&3u16.to_le_bytes());
        signed.extend_from_slice(&u32_le(TD15_LEN));
        signed.extend_from_slice(&body);
        signed.resize(HEADER_LEN + 6 + TD15_LEN, 0);
    }

    let ak = key("ak.p8.der");
    // SEC1 uncompressed (0x04 || x || y); the quote carries x || y.
    let ak_pub = &ak.public_key().as_ref()[1..];
    assert_eq!(ak_pub.len(), 64);

    // The QE vouches for the attestation key: REPORT_DATA = SHA-256(key || auth data).
    let auth = parsed.qe_auth_data;
    let mut qe_report = parsed.qe_report.raw.to_vec();
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(ak_pub);
    ctx.update(auth);
    qe_report[QE_REPORT_DATA..].fill(0);
    qe_report[QE_REPORT_DATA..QE_REPORT_DATA + 32].copy_from_slice(ctx.finish().as_ref());
    let qe_sig = sign(&key("pck.p8.der"), &qe_report);

    // Leaf, platform CA, root; NUL-terminated like the chain Intel's QE writes.
    let mut pem = std::fs::read(root().join("pck_chain.pem")).unwrap();
    pem.push(0);

    let mut cert_data = qe_report;
    cert_data.extend_from_slice(&qe_sig);
    cert_data.extend_from_slice(&u16_le(auth.len()));
    cert_data.extend_from_slice(auth);
    cert_data.extend_from_slice(&CERT_PCK_CHAIN.to_le_bytes());
    cert_data.extend_from_slice(&u32_le(pem.len()));
    cert_data.extend_from_slice(&pem);

    let mut sig_data = sign(&ak, &signed);
    sig_data.extend_from_slice(ak_pub);
    sig_data.extend_from_slice(&CERT_QE_REPORT.to_le_bytes());
    sig_data.extend_from_slice(&u32_le(cert_data.len()));
    sig_data.extend_from_slice(&cert_data);

    // No zero padding after the signature data (the captured quote has 70 bytes of it).
    let mut out = signed;
    out.extend_from_slice(&u32_le(sig_data.len()));
    out.extend_from_slice(&sig_data);
    out
}

/// The PPID the forged quotes' PCK certificate carries (the real platform's: its SGX
/// extension is copied): what a registry binds to a site as `tdx_ppid`.
pub fn ppid() -> [u8; 16] {
    use custody_verifier::tdx::{TdxCollateral, TdxEvidence, TdxVerifier, COLLATERAL_FILES};
    use custody_verifier::{EvidenceVerifier, UnixTime};
    let files = COLLATERAL_FILES.map(|f| std::fs::read(collateral().join(f)).unwrap());
    let v = TdxVerifier::with_root(&std::fs::read(test_root()).unwrap()).unwrap();
    let q = quote(&[0; 32], &Td::default());
    let ok = v
        .verify(
            TdxEvidence {
                quote: &q,
                collateral: TdxCollateral::from_files(&files),
                expected_report_data: None,
            },
            UnixTime(crate::fleet::now()),
        )
        .unwrap_or_else(|r| panic!("{}", r.error));
    hex::decode(&ok.claims.ppid).unwrap().try_into().unwrap()
}

/// The `[tdx]` lines that make a verifier appraise these quotes: the test root, the test
/// collateral (`dir`), and `more` (reference values).
pub fn config(dir: &std::path::Path, more: &str) -> String {
    format!(
        "[tdx]\ntest_root = \"{}\"\ncollateral = \"{}\"\n{more}",
        test_root().display(),
        dir.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use custody_verifier::tdx::{
        TdxClaims, TdxCollateral, TdxError, TdxEvidence, TdxVerifier, COLLATERAL_FILES,
    };
    use custody_verifier::{EvidenceVerifier, FailedCheck, Outcome, UnixTime};
    use std::path::Path;

    fn files(dir: &Path) -> [Vec<u8>; 6] {
        COLLATERAL_FILES.map(|f| std::fs::read(dir.join(f)).unwrap())
    }

    fn test_verifier() -> TdxVerifier {
        TdxVerifier::with_root(&std::fs::read(test_root()).unwrap()).unwrap()
    }

    fn report_data(binding: &[u8; 32]) -> [u8; 64] {
        let mut r = [0u8; 64];
        r[..32].copy_from_slice(binding);
        r
    }

    fn run(v: &TdxVerifier, quote: &[u8], dir: &Path, expected: &[u8; 64]) -> Outcome<TdxClaims, TdxError> {
        let f = files(dir);
        v.verify(
            TdxEvidence {
                quote,
                collateral: TdxCollateral::from_files(&f),
                expected_report_data: Some(expected),
            },
            UnixTime(crate::fleet::now()),
        )
    }

    /// `check: reason` of the failed check (panics when the quote verified).
    fn failed(o: Outcome<TdxClaims, TdxError>) -> String {
        match o {
            Ok(v) => panic!("verified: {:?}", v.claims.tcb_status),
            Err(r) => format!("{}: {}", r.error.check(), r.error),
        }
    }

    #[track_caller]
    fn assert_fails(o: Outcome<TdxClaims, TdxError>, check: &str, reason: &str) {
        let e = failed(o);
        assert!(e.starts_with(&format!("{check}: ")), "{e}");
        assert!(e.contains(reason), "{e}");
    }

    #[test]
    fn a_forged_quote_verifies_under_the_test_root() {
        let binding = crate::random_nonce().0;
        let q = quote(&binding, &Td::default());
        let want = report_data(&binding);
        let v = run(&test_verifier(), &q, &collateral(), &want)
            .unwrap_or_else(|r| panic!("{}: {}", r.error.check(), r.error));
        let c = &v.claims;
        assert_eq!(c.tcb_status, "UpToDate");
        assert_eq!(c.qe_tcb_status, "UpToDate");
        assert!(c.advisory_ids.is_empty(), "{:?}", c.advisory_ids);
        assert_eq!(c.version, 4);
        assert_eq!(c.fmspc, "B0C06F000000", "the real PCK's SGX extension");
        assert_eq!(c.report_data, hex::encode(want));
        let real = real_td();
        assert_eq!(c.mr_td, hex::encode(real.mr_td));
        assert_eq!(c.rtmr, real.rtmr.map(hex::encode));
        assert_eq!(c.td_attributes, hex::encode(real.td_attributes));
        assert_eq!(c.xfam, hex::encode(real.xfam));
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
                "tcb",
                "report_data"
            ]
        );
    }

    /// The TD fields land where the parser reads them.
    #[test]
    fn the_claims_are_the_forged_td() {
        let td = Td {
            mr_td: [0xA1; 48],
            rtmr: [[0xB0; 48], [0xB1; 48], [0xB2; 48], [0xB3; 48]],
            td_attributes: [1, 0, 0, 0, 0, 0, 0, 0x10],
            xfam: [0xe7, 0x02, 0x06, 0, 0, 0, 0, 0x01],
        };
        let binding = [0x5A; 32];
        for (q, version) in [(quote(&binding, &td), 4), (quote_v5(&binding, &td), 5)] {
            let v = run(&test_verifier(), &q, &collateral(), &report_data(&binding))
                .unwrap_or_else(|r| panic!("v{version}: {}: {}", r.error.check(), r.error));
            let c = &v.claims;
            assert_eq!(c.version, version);
            assert_eq!(c.mr_td, hex::encode(td.mr_td));
            assert_eq!(c.rtmr, td.rtmr.map(hex::encode));
            assert_eq!(c.td_attributes, "0100000000000010");
            assert_eq!(c.xfam, "e702060000000001");
            assert!(c.debug);
        }
        // The v5 body is a TD report 1.5 (type 3, 648 bytes) after the header.
        let q = TdxQuote::parse(&quote_v5(&binding, &td)).unwrap().signed.to_vec();
        assert_eq!(q.len(), HEADER_LEN + 6 + TD15_LEN);
        assert_eq!(q[HEADER_LEN..HEADER_LEN + 6], [3, 0, 0x88, 2, 0, 0]);
    }

    #[test]
    fn the_intel_root_refuses_the_test_chain() {
        let binding = [7; 32];
        let q = quote(&binding, &Td::default());
        let intel = TdxVerifier::new().unwrap();
        let o = run(&intel, &q, &collateral(), &report_data(&binding));
        assert_fails(o, "cert_chain", "does not end at a pinned root");
    }

    #[test]
    fn a_revoked_pck_fails_at_revocation() {
        let binding = [7; 32];
        let q = quote(&binding, &Td::default());
        let o = run(
            &test_verifier(),
            &q,
            &collateral_pck_revoked(),
            &report_data(&binding),
        );
        assert_fails(o, "revocation", "the PCK certificate was revoked");
    }

    #[test]
    fn a_revoked_tcb_fails_at_tcb() {
        let binding = [7; 32];
        let q = quote(&binding, &Td::default());
        let o = run(
            &test_verifier(),
            &q,
            &collateral_tcb_revoked(),
            &report_data(&binding),
        );
        assert_fails(o, "tcb", "TCB status Revoked");
    }

    #[test]
    fn a_flipped_bit_in_the_td_report_fails_at_quote_signature() {
        let binding = [7; 32];
        let mut q = quote(&binding, &Td::default());
        q[MR_TD + 3] ^= 1;
        let o = run(&test_verifier(), &q, &collateral(), &report_data(&binding));
        assert_fails(o, "quote_signature", "attestation key");
    }

    #[test]
    fn other_report_data_fails_at_report_data() {
        let binding = [7; 32];
        let q = quote(&binding, &Td::default());
        let o = run(&test_verifier(), &q, &collateral(), &report_data(&[8; 32]));
        assert_fails(o, "report_data", &hex::encode(report_data(&binding)));
    }

    /// Collateral signed by a PCK key (the PCK chain given as its issuer chain) is refused
    /// at `qe_identity`: only the TCB signing certificate signs TCB info and QE
    /// identities. Before the fix the verifier took any chain to the root, and this quote
    /// verified UpToDate.
    #[test]
    fn collateral_signed_by_a_pck_key_is_refused() {
        let binding = [7; 32];
        let q = quote(&binding, &Td::default());
        let mut f = files(&collateral());
        let pck = key("pck.p8.der");
        let resign = |json: &[u8], field: &str| -> Vec<u8> {
            let v: serde_json::Value = serde_json::from_slice(json).unwrap();
            let body = serde_json::to_string(&v[field]).unwrap();
            let sig = hex::encode(sign(&pck, body.as_bytes()));
            format!("{{\"{field}\":{body},\"signature\":\"{sig}\"}}").into_bytes()
        };
        let chain = std::fs::read(root().join("pck_chain.pem")).unwrap();
        f[0] = resign(&f[0], "tcbInfo");
        f[1] = chain.clone();
        f[2] = resign(&f[2], "enclaveIdentity");
        f[3] = chain;
        let o = test_verifier().verify(
            TdxEvidence {
                quote: &q,
                collateral: TdxCollateral::from_files(&f),
                expected_report_data: Some(&report_data(&binding)),
            },
            UnixTime(crate::fleet::now()),
        );
        assert_fails(o, "qe_identity", "not the TCB signing certificate");
    }
}
