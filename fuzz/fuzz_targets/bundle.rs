#![no_main]
//! The CBOR evidence bundle decoder never panics and round-trips what it accepts.
use custody_formats::bundle::EvidenceBundle;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(b) = EvidenceBundle::from_cbor(data) {
        let again = b.to_cbor().expect("encode accepted bundle");
        assert_eq!(EvidenceBundle::from_cbor(&again).expect("decode re-encoded"), b);
    }
});
