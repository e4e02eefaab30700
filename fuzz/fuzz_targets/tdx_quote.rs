#![no_main]
//! TDX quote parsing never panics; what it accepts stays inside the input and keeps its
//! fixed field sizes.
use custody_formats::tdx::{TdxQuote, SGX_REPORT_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(q) = TdxQuote::parse(data) {
        assert_eq!(q.signature.len(), 64);
        assert_eq!(q.attestation_key.len(), 64);
        assert_eq!(q.qe_report.raw.len(), SGX_REPORT_LEN);
        assert!(q.signed.len() <= data.len());
        assert!(data[q.signed.len()..].len() >= q.trailing_zeros);
    }
});
