#![no_main]
//! The agent<->verifier wire decoders never panic, and what they accept re-encodes to an
//! equal message (the first byte picks the message type).
use custody_formats::api::{self, ActivateRequest, EnrollChallenge, EnrollRequest, Enrolled, NonceGrant, PushResult, Refusal, RoundRequest};
use libfuzzer_sys::fuzz_target;

fn check<T>(data: &[u8])
where
    T: serde::Serialize + for<'de> serde::Deserialize<'de> + PartialEq + std::fmt::Debug,
{
    if let Ok(m) = api::from_cbor::<T>("fuzz", data) {
        let again = api::to_cbor("fuzz", &m).expect("encode accepted message");
        assert_eq!(api::from_cbor::<T>("fuzz", &again).expect("decode re-encoded"), m);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else { return };
    match sel % 8 {
        0 => check::<EnrollRequest>(rest),
        1 => check::<EnrollChallenge>(rest),
        2 => check::<ActivateRequest>(rest),
        3 => check::<Enrolled>(rest),
        4 => check::<RoundRequest>(rest),
        5 => check::<NonceGrant>(rest),
        6 => check::<PushResult>(rest),
        _ => check::<Refusal>(rest),
    }
});
