#![no_main]
//! The `tpm2_quote -o` PCR file parser never panics; an accepted file has one value of the
//! bank's length per selected PCR and re-encodes to the same bytes' meaning; likewise the
//! text form (`PcrFile::from_text`).
use custody_formats::tpm;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(f) = tpm::parse_pcr_file(data) {
        assert_eq!(f.values.len(), tpm::selection_len(&f.selection));
        assert!(f.values.iter().all(|(b, _, v)| v.len() == b.digest_len()));
        let again = f.to_bytes().expect("re-encode");
        assert_eq!(tpm::parse_pcr_file(&again).expect("re-parse"), f);
    }
    // The text form cloud tools print: what it accepts encodes and parses back the same.
    if let Ok(f) = std::str::from_utf8(data).map_err(|_| ()).and_then(|t| tpm::PcrFile::from_text(t).map_err(|_| ())) {
        let again = f.to_bytes().expect("encode");
        assert_eq!(tpm::parse_pcr_file(&again).expect("re-parse"), f);
    }
});
