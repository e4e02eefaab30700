#![no_main]
//! Deny list payload decoding and COSE verification never panic; accepted payloads
//! round-trip byte for byte.
use custody_mover::deny::DenyList;
use libfuzzer_sys::fuzz_target;

/// A fixed valid P-256 point (the generator), so verify reaches the signature check.
const G: &str = "046b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c2964fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5";

fuzz_target!(|data: &[u8]| {
    if let Ok(l) = DenyList::from_payload(data) {
        assert_eq!(l.payload().expect("encode"), data);
    }
    let point: Vec<u8> = (0..G.len() / 2)
        .map(|i| u8::from_str_radix(&G[2 * i..2 * i + 2], 16).expect("hex"))
        .collect();
    let _ = DenyList::verify(data, &point, 0);
});
