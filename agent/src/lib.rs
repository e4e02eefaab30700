//! The node agent's core: per-boot session keys, the collector seam every evidence source
//! implements, and the assembly of one attestation round into an evidence bundle.
//!
//! Collectors plug into [`collector::Collector`]: the TPM 2.0 one ([`tpm`], through
//! tss-esapi) is here; SNP (`/dev/sev-guest`), NVIDIA GPUs (NVML), the daemon and its mTLS
//! endpoint arrive with the services issue.
#![forbid(unsafe_code)]

pub mod collector;
pub mod config;
pub mod daemon;
pub mod session;
pub mod tpm;
