#![no_main]
//! The signed-registry verifier and the unsigned-registry decoder never panic; a decoded
//! registry re-encodes to the same bytes (one encoding per registry).
use custody_registry::{AuthorityKey, Registry, SignedRegistry};
use libfuzzer_sys::fuzz_target;

/// A fixed valid P-256 point (the generator), so verify gets past the key lookup when the
/// input's kid names it.
const G: &str = "046b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c2964fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5";

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = Registry::from_cbor(data) {
        assert_eq!(r.to_cbor().expect("encode accepted registry"), data);
    }
    let point: Vec<u8> = (0..G.len() / 2)
        .map(|i| u8::from_str_radix(&G[2 * i..2 * i + 2], 16).expect("hex"))
        .collect();
    let key = AuthorityKey::from_sec1(&point).expect("point");
    if let Ok(v) = SignedRegistry::verify(data, &[key]) {
        // Unreachable without the generator's private key (1), but derive must not panic.
        let _ = v.derive(&[]);
    }
    let _ = SignedRegistry::inspect_unverified(data);
});
