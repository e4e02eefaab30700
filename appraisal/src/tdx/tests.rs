#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use super::*;
use crate::context::{Masked64, Node, ReferenceMode};
use custody_formats::binding::{Nonce, SessionKeys};
use custody_verifier::tdx::COLLATERAL_FILES;

const VECTOR: &str = "tdx-dcap-qvl-uptodate";

fn read_from(vector: &str, f: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/../verifier/testdata/tdx/{vector}/{f}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn read(f: &str) -> Vec<u8> {
    read_from(VECTOR, f)
}

fn set() -> CollateralSet {
    CollateralSet::new(COLLATERAL_FILES.map(read)).unwrap()
}

fn setup() -> TdxSetup {
    TdxSetup::new(TdxVerifier::new().unwrap(), vec![set()], None, false)
}

/// A real quote inside its collateral's window, for a round whose binding it does not
/// carry (a captured quote cannot carry a fresh one).
fn run(setup: Option<&TdxSetup>, at: i64) -> Findings {
    run_quote(setup, at, read("quote.bin"))
}

fn run_quote(setup: Option<&TdxSetup>, at: i64, quote: Vec<u8>) -> Findings {
    let nonce = Nonce([1; 32]);
    let cx = Context {
        node: Node {
            id: "n1",
            name: "n1",
            group: "default",
            state: "trusted",
            ak_public: &[],
            ek_cert_sha256: None,
            tpm_clock: None,
        },
        nonce: &nonce,
        reference: None,
        mode: ReferenceMode::Tofu,
        at,
        ear_ttl: 600,
    };
    let keys = SessionKeys {
        x25519: [2; 32],
        ed25519: [3; 32],
    };
    let binding = Binding::compute(&nonce, &keys);
    let mut f = Findings::default();
    let cvm = appraise(setup, None, &cx, &TdxBundle { quote }, &binding, &mut f).unwrap();
    assert!(!cvm);
    f
}

fn failed(f: &Findings) -> (&str, &str) {
    let fl = f.failure.as_ref().expect("the round failed");
    (fl.check.as_str(), fl.reason.as_str())
}

/// A genuine quote checked against the verifier's current collateral reaches the binding
/// check, and a captured quote's REPORT_DATA is not this round's binding.
#[test]
fn a_genuine_quote_for_another_round_fails_at_report_data() {
    let s = setup();
    let w = set().window();
    let f = run(Some(&s), w.from);
    assert_eq!(failed(&f).0, "tdx.report_data", "{:?}", f.failure);
    assert_eq!(f.devices["tdx"]["failed_check"], "report_data");
    assert_eq!(f.devices["tdx"]["kind"], "tdx");
}

/// The verifier's own collateral, missing or out of date, fails at `tdx.collateral` (not
/// blamed on the node) before the quote is looked at.
#[test]
fn missing_or_stale_collateral_fails_at_collateral() {
    let f = run(None, 1_800_000_000);
    assert_eq!(failed(&f).0, COLLATERAL);
    let s = setup();
    let w = set().window();
    let f = run(Some(&s), w.until + 1);
    let (check, reason) = failed(&f);
    assert_eq!(check, COLLATERAL);
    assert!(reason.contains("refresh `[tdx] collateral`"), "{reason}");
    assert_eq!(f.devices["tdx"]["verified"], false);
    // A set whose dates do not parse is never built, so never in force.
    let mut broken = COLLATERAL_FILES.map(read);
    broken[4] = b"not a CRL".to_vec();
    assert!(CollateralSet::new(broken).is_err());
    s.replace_collateral(vec![]);
    let f = run(Some(&s), w.from);
    assert!(failed(&f).1.contains("no TDX collateral"), "{:?}", f.failure);
}

/// A genuine quote from a platform model (FMSPC) the verifier holds no collateral for is
/// the verifier's gap (`tdx.collateral`); with that model's set added it is appraised.
/// A quote whose PCK chain does not verify is the node's fault, whatever its FMSPC.
#[test]
fn collateral_is_chosen_by_the_quotes_fmspc() {
    let at = 1_751_328_000; // 2025-07-01: both vectors' chains and collateral are current.
    let s = setup();
    let other = read_from("tdx-automata-alibaba-v5", "quote.bin");
    let f = run_quote(Some(&s), at, other.clone());
    let (check, reason) = failed(&f);
    assert_eq!(check, COLLATERAL);
    assert!(
        reason.contains("FMSPC 90C06F000000 (it has B0C06F000000)"),
        "{reason}"
    );
    let alibaba =
        CollateralSet::new(COLLATERAL_FILES.map(|f| read_from("tdx-automata-alibaba-v5", f))).unwrap();
    s.replace_collateral(vec![set(), alibaba]);
    let f = run_quote(Some(&s), at, other.clone());
    assert_eq!(failed(&f).0, "tdx.report_data", "{:?}", f.failure);
    let mut forged = other;
    let pem = forged.windows(5).position(|w| w == b"-----").unwrap();
    forged[pem + 40] ^= 1;
    let f = run_quote(Some(&s), at, forged);
    assert!(failed(&f).0 != COLLATERAL, "{:?}", f.failure);
}

fn claims() -> TdxClaims {
    TdxClaims {
        version: 4,
        tcb_status: "UpToDate".into(),
        advisory_ids: vec![],
        tcb_date: "2024-03-13T00:00:00Z".into(),
        qe_tcb_status: "UpToDate".into(),
        fmspc: "B0C06F000000".into(),
        ppid: "11".repeat(16),
        tee_tcb_svn: "00".repeat(16),
        mr_seam: "00".repeat(48),
        mr_td: "aa".repeat(48),
        mr_config_id: "00".repeat(48),
        mr_owner: "00".repeat(48),
        mr_owner_config: "00".repeat(48),
        rtmr: ["b0".repeat(48), "b1".repeat(48), "b2".repeat(48), "b3".repeat(48)],
        td_attributes: "0000001000000000".into(),
        debug: false,
        xfam: "e702060000000000".into(),
        report_data: "00".repeat(64),
    }
}

/// Each reference value, when given, must match; each mismatch names its register.
#[test]
fn reference_values_name_the_register_that_differs() {
    let c = claims();
    assert_eq!(compare_reference(None, false, &c), Ok(false));
    let mut r = TdxReferenceValues {
        mr_td: vec![[0xaa; 48]],
        ..Default::default()
    };
    assert_eq!(compare_reference(Some(&r), false, &c), Ok(true));
    r.rtmr[2] = Some([0xb2; 48]);
    r.mr_owner = Some([0; 48]);
    assert_eq!(compare_reference(Some(&r), false, &c), Ok(true));
    r.rtmr[2] = Some([0xb1; 48]);
    let e = compare_reference(Some(&r), false, &c).unwrap_err();
    assert_eq!(e.check(), "rtmr2");
    r.rtmr[2] = None;
    r.mr_config_id = Some([1; 48]);
    assert_eq!(
        compare_reference(Some(&r), false, &c).unwrap_err().check(),
        "mr_config_id"
    );
    r.mr_config_id = None;
    r.mr_td = vec![[0xab; 48], [0xac; 48]];
    let e = compare_reference(Some(&r), false, &c).unwrap_err();
    assert_eq!(e.check(), "mr_td");
    assert!(e.to_string().contains(&"aa".repeat(48)), "{e}");
}

/// TD attributes and XFAM compare under their masks; a mismatch names the field, both
/// values and the bits that differ.
#[test]
fn td_attributes_and_xfam_compare_under_their_masks() {
    let c = claims(); // SEPT_VE_DISABLE on; XFAM e702060000000000.
    let mut r = TdxReferenceValues {
        mr_td: vec![[0xaa; 48]],
        // SEPT_VE_DISABLE on, DEBUG and PERFMON off, the rest free.
        td_attributes: Some(Masked64::parse("0000001000000000/0100001000000080").unwrap()),
        xfam: Some(Masked64::parse("e702060000000000").unwrap()),
        ..Default::default()
    };
    assert_eq!(compare_reference(Some(&r), false, &c), Ok(true));
    // A free bit (PKS, bit 30) may differ; a masked one (SEPT_VE_DISABLE) may not.
    let mut pks = claims();
    pks.td_attributes = "0000005000000000".into();
    assert_eq!(compare_reference(Some(&r), false, &pks), Ok(true));
    let mut no_sept = claims();
    no_sept.td_attributes = "0000000000000000".into();
    let e = compare_reference(Some(&r), false, &no_sept).unwrap_err();
    assert_eq!(e.check(), "td_attributes");
    let text = e.to_string();
    assert!(text.contains("0000001000000000/0100001000000080"), "{text}");
    assert!(text.contains("bits 0000001000000000 differ"), "{text}");
    // PERFMON (bit 63) on, though the reference says off.
    let mut perfmon = claims();
    perfmon.td_attributes = "0000001000000080".into();
    assert_eq!(
        compare_reference(Some(&r), false, &perfmon).unwrap_err().check(),
        "td_attributes"
    );
    // Every XFAM bit is compared: the same TD without AMX (bits 17, 18) is another
    // configuration.
    let mut amx = claims();
    amx.xfam = "e702000000000000".into();
    let e = compare_reference(Some(&r), false, &amx).unwrap_err();
    assert_eq!(e.check(), "xfam");
    assert!(e.to_string().contains("bits 0000060000000000 differ"), "{e}");
    // Claims that are not 8 bytes match nothing.
    let mut short = claims();
    short.xfam = "e702".into();
    assert_eq!(
        compare_reference(Some(&r), false, &short).unwrap_err().check(),
        "xfam"
    );
    r.xfam = None;
    assert_eq!(compare_reference(Some(&r), false, &short), Ok(true));
}

/// `VALUE` or `VALUE/MASK`, 16 hex digits each, no value bit outside the mask.
#[test]
fn masked_values_parse() {
    let m = Masked64::parse("0000001000000000").unwrap();
    assert_eq!((m.value[3], m.mask), (0x10, [0xff; 8]));
    assert_eq!(m.to_string(), "0000001000000000/ffffffffffffffff");
    for bad in [
        "",
        "00",
        "000000100000000g",
        "0000001000000000/",
        "0000001000000000/00",
        "0000001000000000/0000000000000000",
        "00000010000000000000001000000000",
    ] {
        assert!(Masked64::parse(bad).is_err(), "{bad:?}");
    }
}

/// A debuggable TD is refused unless the operator allows it, reference or not.
#[test]
fn a_debuggable_td_is_refused_unless_allowed() {
    let mut c = claims();
    c.debug = true;
    assert_eq!(compare_reference(None, false, &c).unwrap_err().check(), "debug");
    assert_eq!(compare_reference(None, true, &c), Ok(false));
}
