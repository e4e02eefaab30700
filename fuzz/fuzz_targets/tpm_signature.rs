#![no_main]
//! TPMT_SIGNATURE parser never panics.
use custody_formats::tpm;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = tpm::parse_signature(data) {
        let _ = (s.hash(), s.scheme_alg(), s.scheme_name());
    }
});
