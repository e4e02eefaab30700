//! Custody's shared vocabulary, for every crate, including those that appraise nothing
//! (the agent, the mover, the audit log, locality): named checks ([`check`]), the
//! verifier's P-256 key ([`key::VerifierKey`]), and the one COSE_Sign1 envelope of what
//! that key signs ([`envelope`]). Kept small and free of parsers and FFI, so that only
//! what appraises links libxmlsec1.

#![forbid(unsafe_code)]

pub mod check;
pub mod envelope;
pub mod key;

pub use check::FailedCheck;
pub use key::VerifierKey;
