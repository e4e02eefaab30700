#![no_main]
//! The agent's AK blob file parser never panics, and what it accepts encodes back to the
//! same bytes.
use custody_formats::tpm;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(blob) = tpm::parse_key_blob(data) {
        assert_eq!(blob.to_bytes().as_deref(), Ok(data));
        let _ = blob.public_key();
    }
});
