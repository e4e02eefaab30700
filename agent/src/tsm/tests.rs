#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

//! No TD here: the kernel's side of configfs-tsm is played by plain files (an entry
//! prepared as the kernel fills it), and the quote is a real captured one with its
//! REPORT_DATA rewritten (unsigned: the agent does not verify, the verifier does).

use super::*;
use custody_formats::binding::{Nonce, SessionKeys};
use custody_formats::tdx::HEADER_LEN;

const REPORT_DATA: usize = HEADER_LEN + 520;

fn binding() -> Binding {
    Binding::compute(
        &Nonce([9; 32]),
        &SessionKeys {
            x25519: [1; 32],
            ed25519: [2; 32],
        },
    )
}

fn inblob(b: &Binding) -> [u8; 64] {
    let mut i = [0u8; 64];
    i[..32].copy_from_slice(b.as_bytes());
    i
}

fn quote_for(inblob: &[u8; 64]) -> Vec<u8> {
    let mut q = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../verifier/testdata/tdx/tdx-dcap-qvl-uptodate/quote.bin"
    ))
    .unwrap();
    q[REPORT_DATA..REPORT_DATA + 64].copy_from_slice(inblob);
    q
}

#[test]
fn without_configfs_tsm_tdx_is_not_available() {
    let dir = tempfile::tempdir().unwrap();
    let c = TsmCollector::with_root(dir.path().join("absent"));
    let e = c.collect(&binding()).unwrap_err();
    assert!(matches!(e, CollectError::NotAvailable { kind: "tdx", .. }), "{e}");
}

/// An entry the kernel does not fill (a plain directory) fails the round, naming the
/// file, and the entry is removed.
#[test]
fn an_entry_without_a_provider_fails_and_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let c = TsmCollector::with_root(dir.path());
    let e = c.collect(&binding()).unwrap_err();
    assert!(matches!(e, CollectError::Failed { kind: "tdx", .. }), "{e}");
    assert!(e.to_string().contains("provider"), "{e}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// The request's files, in the kernel's order: the binding goes to `inblob`, the quote
/// comes from `outblob`, and it carries the binding.
#[test]
fn a_request_writes_the_binding_and_reads_the_quote() {
    let entry = tempfile::tempdir().unwrap();
    let b = binding();
    let i = inblob(&b);
    std::fs::write(entry.path().join("provider"), "tdx_guest\n").unwrap();
    std::fs::write(entry.path().join("generation"), "1\n").unwrap();
    std::fs::write(entry.path().join("outblob"), quote_for(&i)).unwrap();
    let (provider, quote) = request(entry.path(), &i).unwrap();
    assert_eq!(provider, "tdx_guest");
    assert_eq!(std::fs::read(entry.path().join("inblob")).unwrap(), i);
    let Evidence::Tdx(t) = evidence(&provider, quote, &i).unwrap() else {
        panic!("not TDX evidence")
    };
    assert_eq!(t.quote, quote_for(&i));
}

/// An SEV-SNP guest's provider is another collector's: not available here, nothing written.
#[test]
fn another_provider_is_not_tdx() {
    let entry = tempfile::tempdir().unwrap();
    std::fs::write(entry.path().join("provider"), "sev_guest\n").unwrap();
    let i = inblob(&binding());
    let (provider, quote) = request(entry.path(), &i).unwrap();
    assert!(quote.is_empty() && !entry.path().join("inblob").exists());
    let e = evidence(&provider, quote, &i).unwrap_err();
    assert!(matches!(e, CollectError::NotAvailable { .. }), "{e}");
    assert!(e.to_string().contains("sev_guest"), "{e}");
}

/// A quote that does not parse, or carries another REPORT_DATA, fails here, naming why.
#[test]
fn a_quote_for_another_binding_or_garbage_fails() {
    let i = inblob(&binding());
    let mut other = i;
    other[0] ^= 1;
    let e = evidence(TDX_PROVIDER, quote_for(&other), &i).unwrap_err();
    assert!(e.to_string().contains("is not this round's binding"), "{e}");
    let e = evidence(TDX_PROVIDER, vec![4; 100], &i).unwrap_err();
    assert!(e.to_string().contains("the driver's quote"), "{e}");
}

/// An `outblob` beyond the bundle's bound is refused while it is read.
#[test]
fn an_oversized_outblob_is_refused() {
    let entry = tempfile::tempdir().unwrap();
    std::fs::write(entry.path().join("provider"), "tdx_guest").unwrap();
    std::fs::write(entry.path().join("generation"), "1").unwrap();
    std::fs::write(entry.path().join("outblob"), vec![0; MAX_TDX_QUOTE_LEN + 1]).unwrap();
    let e = request(entry.path(), &inblob(&binding())).unwrap_err();
    assert!(e.to_string().contains("more than 65536 bytes"), "{e}");
}
