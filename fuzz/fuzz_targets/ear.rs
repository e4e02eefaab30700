#![no_main]
//! The EAR claims decoder and the COSE_Sign1 verifier never panic; accepted claims
//! round-trip through the deterministic encoder.
use custody_verifier::check::UnixTime;
use custody_verifier::ear::{verify, AttestationResult, VerifierKey};
use libfuzzer_sys::fuzz_target;

/// A fixed valid P-256 point (the generator), so verify reaches the signature check.
const G: &str = "046b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c2964fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5";

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = AttestationResult::from_cbor(data) {
        let again = r.to_cbor().expect("encode accepted claims");
        assert_eq!(AttestationResult::from_cbor(&again).expect("decode re-encoded"), r);
    }
    let point: Vec<u8> = (0..G.len() / 2)
        .map(|i| u8::from_str_radix(&G[2 * i..2 * i + 2], 16).expect("hex"))
        .collect();
    let key = VerifierKey::from_sec1(&point).expect("point");
    let _ = verify(data, &key, UnixTime(0));
});
