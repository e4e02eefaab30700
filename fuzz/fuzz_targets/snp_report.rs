#![no_main]
//! The SEV-SNP report parser never panics; what it accepts is exactly 0x4A0 bytes, and
//! the signature extraction and TCB decoding run on it without panicking either.
use custody_formats::snp::{SnpReport, TcbLayout, REPORT_LEN, SIGNED_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(r) = SnpReport::parse(data) else {
        return;
    };
    assert_eq!(data.len(), REPORT_LEN);
    assert_eq!(r.signed_bytes(), &data[..SIGNED_LEN]);
    if let Ok(sig) = r.signature_p384() {
        // Big-endian r is the little-endian field reversed.
        assert_eq!(sig[47], r.sig_r[0]);
        assert_eq!(sig[95], r.sig_s[0]);
    }
    for layout in [TcbLayout::Legacy, TcbLayout::Turin, r.tcb_layout_hint()] {
        let _ = r.reported_tcb(layout);
        let _ = r.current_tcb(layout);
    }
    let _ = r.cpuid_generation();
    // The sev crate's own parser on the same bytes must not panic either.
    let _ = r.sev();
});
