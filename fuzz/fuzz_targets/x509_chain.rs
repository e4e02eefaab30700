#![no_main]
//! Splitting PEM/DER certificate input and validating it against the pinned NVIDIA
//! Device Identity CA never panics; anything accepted ends at that root.
use custody_verifier::nvgpu::DEVICE_IDENTITY_ROOT_PEM;
use custody_verifier::x509::{split_certs, verify_chain, TrustAnchor, MAX_CHAIN_LEN};
use custody_verifier::UnixTime;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

/// 2025-01-01T00:00:00Z: a fixed appraisal time keeps runs reproducible.
const AT: UnixTime = UnixTime(1_735_689_600);

fn anchors() -> &'static [TrustAnchor] {
    static A: OnceLock<Vec<TrustAnchor>> = OnceLock::new();
    A.get_or_init(|| TrustAnchor::from_pem_or_der(DEVICE_IDENTITY_ROOT_PEM).expect("built-in root parses"))
}

fuzz_target!(|data: &[u8]| {
    let Ok(chain) = split_certs(data) else { return };
    assert!(!chain.is_empty() && chain.len() <= MAX_CHAIN_LEN);
    if let Ok(v) = verify_chain(&chain, anchors(), AT) {
        assert!(v.len >= chain.len() && v.len <= chain.len() + 1);
        assert!(v.valid_from <= AT.0 && AT.0 <= v.valid_until);
        assert!(!v.cached);
    }
});
