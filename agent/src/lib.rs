//! The node agent's core: per-boot session keys, the collector seam every evidence source
//! implements, and the assembly of one attestation round into an evidence bundle.
//!
//! Collectors plug into [`collector::Collector`], one per evidence source, each behind a
//! Cargo feature (all on by default):
//!
//! | module | kind | feature | talks to | links |
//! |---|---|---|---|---|
//! | `tpm` | `tpm` | `tpm` | TPM 2.0 via tss-esapi (`/dev/tpmrm0`, swtpm) | system tpm2-tss |
//! | `snp` | `snp` | `snp` | `/dev/sev-guest` via the `sev` crate (SNP extended report) | nothing |
//! | `tsm` | `tdx` | none (plain files) | Linux configfs-tsm, `/sys/kernel/config/tsm/report` (TDX quote) | nothing |
//! | `azure` | `azure` | `tpm` | the vTPM's NV index 0x01400001 (Azure's HCL report), through the TPM collector | system tpm2-tss |
//! | `nvml` | `nvgpu` | `nvml` | NVIDIA GPUs via NVML (SPDM report + cert chain, identity) | nothing: `libnvidia-ml.so.1` is loaded at run time |
//!
//! A collector whose hardware or driver is missing answers `NotAvailable` and the round goes
//! on without it; one whose hardware is there but fails answers `Failed` and fails the
//! round. [`collector::collect_round`] puts every answer into one
//! [`custody_formats::bundle::EvidenceBundle`], all bound to the same round binding.
//! [`pem`] holds the certificate framing helpers the collectors and the `probe` example
//! share. The daemon and its mTLS endpoint arrive with the services issue.
//!
//! `examples/probe.rs` runs the NVML, SNP and TDX collectors once and prints what the drivers
//! returned (and can write a GPU report for `custody verify nvgpu`).
#![forbid(unsafe_code)]

#[cfg(feature = "tpm")]
pub mod azure;
pub mod collector;
#[cfg(feature = "tpm")]
pub mod config;
#[cfg(feature = "tpm")]
pub mod daemon;
#[cfg(feature = "tpm")]
pub mod mover;
#[cfg(feature = "nvml")]
pub mod nvml;
pub mod pem;
pub mod session;
#[cfg(feature = "snp")]
pub mod snp;
#[cfg(feature = "tpm")]
pub mod tpm;
pub mod tsm;
