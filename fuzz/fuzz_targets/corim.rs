#![no_main]
//! The CoRIM/CoMID reader never panics, on unsigned CoRIMs, bare CoMIDs and COSE_Sign1
//! envelopes; a verify callback that accepts everything lets the fuzzer reach the signed
//! payload, and the ES256 path runs against a fixed key.
use custody_formats::corim::{Corim, Expression};
use libfuzzer_sys::fuzz_target;

/// A fixed valid P-256 point (the generator).
const G: &str = "046b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c2964fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5";

fn walk(c: &Corim) {
    for rv in c.reference_values() {
        for m in &rv.measurements {
            for e in &m.extensions {
                let _ = Expression::from_value(&e.value);
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = Corim::from_cbor(data) {
        walk(&c);
    }
    let mut called = false;
    if let Ok(s) = Corim::from_signed(data, |_, _, _| {
        called = true;
        true
    }) {
        assert!(called, "a signed CoRIM was accepted without its signature being checked");
        walk(&s.corim);
    }
    let point = hex_point();
    let _ = Corim::from_signed_es256(data, &point);
});

fn hex_point() -> Vec<u8> {
    (0..G.len() / 2)
        .map(|i| u8::from_str_radix(&G[2 * i..2 * i + 2], 16).expect("hex"))
        .collect()
}
