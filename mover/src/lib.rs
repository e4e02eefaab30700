//! Custody's migration core: what a checkpoint needs (safetensors dtypes) against what a
//! destination chip runs, the checkpoint manifest, the verifier-signed ticket, the data
//! key wrapped with HPKE to the destination's attested key, the STREAM chunked AEAD, the
//! staged receiver with resume and atomic placement, signed receipts, and the export file
//! for air-gapped moves. The wire protocol is specified in docs/migration-protocol.md.
//!
//! [`send::Sender`] and [`receive::Receiver`] work chunk by chunk and can start at chunk
//! k; [`wire`] runs them as one protocol over any byte stream (the agents use mutual TLS).

#![forbid(unsafe_code)]

pub mod chips;
pub mod deny;
pub mod direct;
pub mod error;
pub mod export;
pub mod keywrap;
pub mod manifest;
pub mod receipt;
pub mod receive;
pub mod safetensors;
pub mod send;
pub mod stream;
pub mod ticket;
#[cfg(test)]
mod vector;
pub mod wire;

pub use error::MoverError;
