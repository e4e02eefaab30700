//! Custody's appraisal core. Pure: evidence bytes, endorsements and the appraisal time in;
//! typed claims or a typed error naming the failed check out. No I/O, no clock.
//!
//! One module per evidence kind, each implementing [`check::EvidenceVerifier`].
#![forbid(unsafe_code)]

pub mod azure;
pub mod cache;
pub mod check;
pub mod crl;
mod der;
pub mod ear;
pub mod enroll;
pub mod gcp;
pub mod nvgpu;
pub mod rim;
pub mod snp;
pub mod tdx;
pub mod tpm;
pub mod x509;

pub use check::{Check, EvidenceVerifier, FailedCheck, Outcome, Rejected, Report, UnixTime, Verified};
pub use enroll::{check_ak, make_credential, verify_ek, AkInfo, Credential, EkIdentity, EnrollError};

/// Lower-case hex. The `hex` crate's `encode` goes a char at a time; claims hex-encode
/// every PCR and digest on the hot path, so this uses its table-based slice encoder.
pub fn hex(bytes: impl AsRef<[u8]>) -> String {
    let bytes = bytes.as_ref();
    let mut buf = vec![0u8; bytes.len() * 2];
    // Cannot fail: the buffer is exactly twice the input length.
    let _ = ::hex::encode_to_slice(bytes, &mut buf);
    String::from_utf8(buf).unwrap_or_default()
}

#[cfg(test)]
mod hex_tests {
    #[test]
    fn hex_matches_the_hex_crate() {
        let b: Vec<u8> = (0..=255u8).collect();
        assert_eq!(super::hex(&b), ::hex::encode(&b));
        assert_eq!(super::hex([]), "");
    }
}
