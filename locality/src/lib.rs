//! Latency-bound locality proofs (ARCHITECTURE.md, "Sovereignty and locality";
//! docs/locality.md has the protocol and byte layouts).
//!
//! A landmark with known coordinates sends fresh challenges to a node; the node answers
//! each with a signature by its attested per-boot Ed25519 session key. Light in fibre
//! covers about 200 km per millisecond one way, and delay can be added but never removed,
//! so the fastest answer bounds how far the key is from the landmark. The landmark signs
//! a [`statement::LandmarkStatement`] with the bound; the verifier checks it and derives
//! per-site upper distances ([`geo::upper_bounds`]) for policy.
//!
//! Everything except [`net`] and [`remote`] (feature `remote`: the HTTP landmark
//! service and its client) is pure: no I/O, no clock (the caller passes `now`).
#![forbid(unsafe_code)]

pub mod error;
pub mod geo;
pub mod net;
pub mod proof;
#[cfg(feature = "remote")]
pub mod remote;
pub mod statement;
pub mod wire;

pub use error::LocalityError;
pub use geo::{bound_km, consistent, contradictions, haversine_km, upper_bounds, LatLon, FIBRE_KM_PER_MS};
pub use proof::{KeyProtection, Locality, Proof};
pub use statement::{LandmarkKey, LandmarkStatement, PinnedLandmark};
pub use wire::{Challenge, Response, CHALLENGE_LEN, RESPONSE_LEN};

#[cfg(test)]
mod tests;
