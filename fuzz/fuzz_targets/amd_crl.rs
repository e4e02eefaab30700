#![no_main]
//! CRL parsing never panics; a parsed CRL answers serial lookups and signature checks
//! under the built-in Milan ARK without panicking.
use custody_verifier::crl::{status, Crl};
use custody_verifier::x509::TrustAnchor;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn milan() -> &'static TrustAnchor {
    static A: OnceLock<TrustAnchor> = OnceLock::new();
    A.get_or_init(|| {
        TrustAnchor::from_pem_or_der(include_bytes!("../../verifier/testdata/amd-crl/milan_ark.pem"))
            .expect("ark")
            .remove(0)
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = Crl::parse(data) {
        let _ = c.revoked(&[2, 0, 1]);
        let _ = status(&[c], milan(), &[vec![2, 0, 2]], 1_750_000_000, 0);
    }
});
