#![no_main]
//! The NVIDIA SPDM report parser never panics, and what it accepts is self-consistent:
//! the signature sits right after the signed bytes, only zeros follow it, and the
//! opaque data lies inside the signed part.
use custody_formats::spdm::{self, NONCE_LEN, SIGNATURE_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = spdm::parse(data) {
        assert_eq!(r.signed.len() + SIGNATURE_LEN + r.trailing_zeros, data.len());
        assert_eq!(&data[r.signed.len()..r.signed.len() + SIGNATURE_LEN], &r.signature[..]);
        assert!(data[r.signed.len() + SIGNATURE_LEN..].iter().all(|&b| b == 0));
        assert_eq!(&data[4..4 + NONCE_LEN], &r.request.nonce[..]);
        assert!(r.signed.len() >= spdm::REQUEST_LEN + 8 + NONCE_LEN + 2 + r.opaque_raw.len());
        assert_eq!(r.blocks.len(), usize::from(data[spdm::REQUEST_LEN + 4]));
        // Accessors never panic on what was accepted.
        let _ = (r.opaque.driver_version(), r.opaque.vbios_version(), r.opaque.fwid());
    }
});
