#![no_main]
//! TPMT_PUBLIC / TPM2B_PUBLIC parsers never panic; an accepted key converts to a
//! verifying key, an SPKI and a Name; the AK detector in the verifier never panics.
use custody_formats::tpm;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for p in [tpm::parse_public(data), tpm::parse_public_2b(data)]
        .into_iter()
        .flatten()
    {
        let _ = p.verifying_key().spki_der();
        assert_eq!(p.name().len(), 2 + p.name_alg.digest_len());
    }
    let _ = custody_verifier::tpm::AttestationKey::parse(data);
});
