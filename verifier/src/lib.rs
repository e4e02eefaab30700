//! Custody's appraisal core. Pure: evidence bytes, endorsements and the appraisal time in;
//! typed claims or a typed error naming the failed check out. No I/O, no clock.
//!
//! One module per evidence kind, each implementing [`check::EvidenceVerifier`].
#![forbid(unsafe_code)]

pub mod check;
pub mod nvgpu;
pub mod rim;
pub mod snp;
pub mod tpm;
pub mod x509;

pub use check::{Check, EvidenceVerifier, FailedCheck, Outcome, Rejected, Report, UnixTime, Verified};
