#![no_main]
//! TPMS_ATTEST (quote) parser never panics; what it accepts respects the bounds.
use custody_formats::tpm::{self, MAX_DIGEST, MAX_NAME, MAX_PCR_BANKS};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(a) = tpm::parse_attest(data) {
        assert!(a.pcr_select.len() <= MAX_PCR_BANKS);
        assert!(a.pcr_select.iter().all(|s| s.pcrs.iter().all(|&p| p < 32)));
        assert!(a.qualified_signer.len() <= MAX_NAME && a.extra_data.len() <= MAX_NAME);
        assert!(a.pcr_digest.len() <= MAX_DIGEST);
    }
});
