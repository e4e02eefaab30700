//! Pure data: parsers and encoders for every evidence format Custody handles.
//!
//! Nothing here does I/O, spawns tasks or reads the clock. Every parser takes a byte
//! slice, rejects input of the wrong length instead of padding or cutting it, and
//! returns a typed error naming what was wrong. Each parser has a cargo-fuzz target
//! in `fuzz/`.
#![forbid(unsafe_code)]

pub mod alg;
pub mod api;
pub mod binding;
pub mod bundle;
pub mod corim;
pub mod eventlog;
pub mod reader;
pub mod snp;
pub mod spdm;
pub mod tdx;
pub mod tpm;
