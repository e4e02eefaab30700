//! `custody-loadgen`: drives the verifier service's real HTTP API with many simulated
//! attesters (software-held EKs and AKs enrolled through a test CA, TPM-format quotes).
//! A benchmark tool, not part of the product.
#![forbid(unsafe_code)]

pub mod attack;
pub mod attester;
pub mod driver;
pub mod ekca;
pub mod stages;
