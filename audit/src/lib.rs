//! Custody's tamper-evident audit log: an append-only RFC 9162 Merkle log of custody
//! decisions with C2SP signed checkpoints, stored in SQLite, exported to a directory and
//! verified offline with only the log's public key.
#![forbid(unsafe_code)]

pub mod entry;
pub mod export;
pub mod history;
pub mod note;
pub mod report;
pub mod store;
pub mod tree;
pub mod verify;

pub use entry::Entry;
