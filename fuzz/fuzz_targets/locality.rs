//! Locality wire messages and signed landmark statements from arbitrary bytes: decoding
//! never panics, and verification against a fixed trusted key never accepts a forgery.
#![no_main]

use custody_locality::statement::SignedEnvelope;
use custody_locality::wire::{Challenge, Response};
use custody_locality::LandmarkStatement;
use libfuzzer_sys::fuzz_target;

/// Public key of the landmark seed `[1; 32]` (locality/testdata/statement.hex).
const TRUSTED: [u8; 32] = [
    0x8a, 0x88, 0xe3, 0xdd, 0x74, 0x09, 0xf1, 0x95, 0xfd, 0x52, 0xdb, 0x2d, 0x3c, 0xba, 0x5d,
    0x72, 0xca, 0x67, 0x09, 0xbf, 0x1d, 0x94, 0x12, 0x1b, 0xf3, 0x74, 0x88, 0x01, 0xb4, 0x0f,
    0x6f, 0x5c,
];

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = Challenge::decode(data) {
        assert_eq!(c.encode().as_slice(), data);
    }
    if let Ok(r) = Response::decode(data) {
        assert_eq!(r.encode().as_slice(), data);
        let c = Challenge::new("fuzz", [0; 32]);
        let _ = r.verify(&c, &TRUSTED);
    }
    if let Ok(s) = LandmarkStatement::decode(data) {
        // A decoded statement is valid and encodes again.
        assert!(s.validate().is_ok());
        let _ = s.encode();
    }
    let _ = SignedEnvelope::decode(data);
    let session = data.get(..32).and_then(|b| <[u8; 32]>::try_from(b).ok()).unwrap_or([0; 32]);
    let _ = LandmarkStatement::verify(data, &[TRUSTED], &session, 1_790_000_100, 300);
});
