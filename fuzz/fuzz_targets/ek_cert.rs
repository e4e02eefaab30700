#![no_main]
//! Enrollment never panics on any EK certificate, EK public area or AK. Input layout:
//! byte 0 = EK certificate length / 8, byte 1 = EK TPMT_PUBLIC length / 2, then the
//! certificate, the EK area, and the rest is the AK (seed: the swtpm vectors in
//! verifier/testdata/enroll, whose CA set is built in here so the fuzzer reaches the key
//! and attribute checks). An accepted AK has a Name of its nameAlg's size, and a
//! credential to an accepted EK area has consistent TPM2B sizes.
use custody_verifier::check::UnixTime;
use custody_verifier::enroll::{check_ak, make_credential, verify_ek};
use custody_verifier::x509::split_certs;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

/// 2026-11-25T00:00:00Z: inside the swtpm CA's validity; fixed for reproducible runs.
const AT: UnixTime = UnixTime(1_795_564_800);

const ROOT: &[u8] = include_bytes!("../../verifier/testdata/enroll/swtpm-localca-root.pem");
const ISSUER: &[u8] = include_bytes!("../../verifier/testdata/enroll/swtpm-localca-issuer.pem");

fn cas() -> &'static [Vec<u8>] {
    static C: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    C.get_or_init(|| {
        let mut v = split_certs(ROOT).expect("root parses");
        v.extend(split_certs(ISSUER).expect("issuer parses"));
        v
    })
}

fuzz_target!(|data: &[u8]| {
    let Some(([a, b], rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let (cert, rest) = rest.split_at((usize::from(*a) * 8).min(rest.len()));
    let (ek, ak) = rest.split_at((usize::from(*b) * 2).min(rest.len()));
    let _ = verify_ek(cert, ek, cas(), AT);
    let _ = verify_ek(cert, ek, &[cert.to_vec(), ak.to_vec()], AT);
    if let Ok(info) = check_ak(ak) {
        assert_eq!(info.name.len(), 2 + info.name_alg.digest_len());
        if let Ok(c) = make_credential(ek, &info.name, &[0x42; 32]) {
            for t in [&c.id_object, &c.encrypted_secret] {
                let n = u16::from_be_bytes([t[0], t[1]]);
                assert_eq!(usize::from(n), t.len() - 2);
            }
        }
    }
    let _ = make_credential(ek, ak, &[1; 16]);
    let _ = check_ak(ek);
});
