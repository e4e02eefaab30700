//! Custody's registry: the legal entities, sites and hardware an operator declares, signed
//! by the operator's registry authority, and the sovereignty attributes derived from it for
//! the hardware attested in one round.
//!
//! Pure: no I/O, no clock, no async. The only way to a [`VerifiedRegistry`] is
//! [`SignedRegistry::verify`], so derived attributes always come from a registry signed by
//! a configured authority.
//!
//! - [`model`]: the data model, its CBOR encoding and its validation.
//! - [`signed`]: keys, COSE_Sign1 (ES256) signing and verification.
//! - [`derive`]: hardware binding, effective holdings, Cloud Act and SecNumCloud 19.6.
//!
//! # Checks, in the order [`SignedRegistry::verify`] runs them
//!
//! `registry_format` (COSE_Sign1 structure, size), `registry_signature` (protected header:
//! ES256, kid, content type, no critical headers), `registry_authority` (the kid names a
//! configured authority), `registry_signature` (ECDSA P-256 over the Sig_structure),
//! `registry_format` (the payload decodes, with no unknown field, wrong length or
//! non-canonical byte), `registry_consistency` (ids, references, holdings, cycles,
//! coordinates, hardware bound once). Key import and export failures are `registry_key`.
#![forbid(unsafe_code)]

pub mod country;
pub mod derive;
pub mod model;
pub mod signed;

#[cfg(test)]
mod tests;

pub use country::Country;
pub use derive::Derived;
pub use model::{Entity, Hardware, HardwareId, Holding, Registry, Site};
pub use signed::{AuthorityKey, RegistryKey, SignedRegistry, VerifiedRegistry};

/// Why a registry was refused (or could not be made). [`RegistryError::check`] names the
/// stable check each variant fails.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    // registry_format
    #[error("registry encoding: {0}")]
    Format(String),
    #[error("country code {0:?} is not an assigned ISO 3166-1 alpha-2 code (two uppercase letters)")]
    Country(String),
    #[error("unknown hardware id kind {0:?} (want ek_sha256, snp_chip_id, gpu_serial or tdx_ppid)")]
    HardwareKind(String),
    #[error("{kind} hardware id must be {want} bytes, got {got}")]
    HardwareIdLength {
        kind: &'static str,
        want: &'static str,
        got: usize,
    },
    #[error("not a COSE_Sign1: {0}")]
    Cose(String),

    // registry_signature
    #[error("unsupported signature header: {0}")]
    Algorithm(String),
    #[error("signature does not verify under authority {kid}")]
    Signature { kid: String },

    // registry_authority
    #[error("no registry authority is configured")]
    NoAuthority,
    #[error("signed by key id {kid}, which is not a configured registry authority")]
    UnknownAuthority { kid: String },

    // registry_key
    #[error("key: {0}")]
    Key(String),

    // registry_consistency
    #[error("{kind} id {id:?} is not 1 to 64 characters of A-Z a-z 0-9 . _ -")]
    InvalidId { kind: &'static str, id: String },
    #[error("{kind} {id:?} has an empty {field}")]
    EmptyField {
        kind: &'static str,
        id: String,
        field: &'static str,
    },
    #[error("duplicate {kind} id {id:?}")]
    DuplicateId { kind: &'static str, id: String },
    #[error("{context} refers to unknown {kind} {id:?}")]
    UnknownReference {
        context: String,
        kind: &'static str,
        id: String,
    },
    #[error("entity {entity:?}: LEI {lei:?} {reason}")]
    Lei {
        entity: String,
        lei: String,
        reason: &'static str,
    },
    #[error("entity {entity:?}: holder {holder:?} {what} {value} bp is above 10000")]
    BasisPoints {
        entity: String,
        holder: String,
        what: &'static str,
        value: u32,
    },
    #[error("entity {entity:?} holds itself")]
    SelfHolding { entity: String },
    #[error("entity {entity:?} lists holder {holder:?} twice")]
    DuplicateHolder { entity: String, holder: String },
    #[error("entity {entity:?}: holders' {what} sums to {total_bp} bp, above 10000")]
    HoldingsExceed {
        entity: String,
        what: &'static str,
        total_bp: u64,
    },
    #[error("ownership cycle: {0}")]
    OwnershipCycle(String),
    #[error("site {site:?}: coordinates lat_e6 {lat_e6}, lon_e6 {lon_e6} out of range")]
    Coordinates { site: String, lat_e6: i32, lon_e6: i32 },
    #[error("hardware {id} is bound to site {first:?} and again to site {second:?}")]
    HardwareBoundTwice {
        id: String,
        first: String,
        second: String,
    },
}

impl RegistryError {
    /// Stable, machine-readable name of the check this error fails.
    pub fn check(&self) -> &'static str {
        match self {
            Self::Format(_)
            | Self::Country(_)
            | Self::HardwareKind(_)
            | Self::HardwareIdLength { .. }
            | Self::Cose(_) => "registry_format",
            Self::Algorithm(_) | Self::Signature { .. } => "registry_signature",
            Self::NoAuthority | Self::UnknownAuthority { .. } => "registry_authority",
            Self::Key(_) => "registry_key",
            Self::InvalidId { .. }
            | Self::EmptyField { .. }
            | Self::DuplicateId { .. }
            | Self::UnknownReference { .. }
            | Self::Lei { .. }
            | Self::BasisPoints { .. }
            | Self::SelfHolding { .. }
            | Self::DuplicateHolder { .. }
            | Self::HoldingsExceed { .. }
            | Self::OwnershipCycle(_)
            | Self::Coordinates { .. }
            | Self::HardwareBoundTwice { .. } => "registry_consistency",
        }
    }
}
