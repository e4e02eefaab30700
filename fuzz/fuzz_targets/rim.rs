#![no_main]
//! NVIDIA RIMs: the SWID reader never panics on any input, and `verify_rim` (libxmlsec1
//! under the fuzzer) with the pinned RIM root at a fixed time never panics either. What
//! verifies must agree with what the reader saw, and compare against itself.
use custody_verifier::rim::{compare, parse_swid, verify_rim};
use custody_verifier::x509::TrustAnchor;
use custody_verifier::UnixTime;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

const ROOT: &[u8] = include_bytes!("../../verifier/testdata/nvidia/rims/nvidia-rim-root.pem");
/// 2025-06-01T00:00:00Z, inside the validity of the sample RIMs' signers.
const AT: UnixTime = UnixTime(1_748_736_000);

fn anchors() -> &'static [TrustAnchor] {
    static A: OnceLock<Vec<TrustAnchor>> = OnceLock::new();
    A.get_or_init(|| TrustAnchor::from_pem_or_der(ROOT).expect("pinned RIM root parses"))
}

fuzz_target!(|data: &[u8]| {
    let tag = parse_swid(data);
    if let Ok(rim) = verify_rim(data, anchors(), AT) {
        let tag = tag.expect("a verified RIM parses");
        assert_eq!(tag.measurements, rim.measurements);
        assert_eq!(tag.version, rim.version);
        let measured: Vec<(u32, &[u8])> = rim
            .measurements
            .iter()
            .map(|m| (m.index, m.digests.first().map(Vec::as_slice).unwrap_or_default()))
            .collect();
        compare(std::slice::from_ref(&rim), &measured).expect("a RIM matches its own values");
    }
});
