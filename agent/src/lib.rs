//! The node agent's core: per-boot session keys, the collector seam every evidence source
//! implements, and the assembly of one attestation round into an evidence bundle.
//!
//! The hardware collectors (TPM through tss-esapi, SNP through `/dev/sev-guest`, NVIDIA
//! GPUs through NVML), the daemon and its mTLS endpoint arrive with the services issue;
//! they plug into [`collector::Collector`].
#![forbid(unsafe_code)]

pub mod collector;
pub mod session;
pub mod tpm;
