//! TCG PC Client measured-boot event logs: the crypto-agile format (a SHA-1 style header
//! event carrying the Spec ID event, then TCG_PCR_EVENT2 entries with one digest per bank)
//! and legacy SHA-1 logs; parsing and replay to PCR values.
//!
//! API contract (implementation in progress on a branch; other modules code against it).

use crate::alg::HashAlg;
use std::collections::BTreeMap;
use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EventLogError {
    #[error("event log is empty")]
    Empty,
    #[error("event log parsing is not available in this build")]
    Unsupported,
}

/// One measured event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub pcr: u32,
    pub event_type: u32,
    /// One digest per bank the log records.
    pub digests: Vec<(HashAlg, Vec<u8>)>,
    pub data: Vec<u8>,
}

/// A parsed event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventLog {
    /// True for the crypto-agile (TCG_PCR_EVENT2) format.
    pub crypto_agile: bool,
    pub events: Vec<Event>,
}

/// Parse a log as `/sys/kernel/security/tpm0/binary_bios_measurements` exposes it.
pub fn parse(bytes: &[u8]) -> Result<EventLog, EventLogError> {
    if bytes.is_empty() {
        return Err(EventLogError::Empty);
    }
    Err(EventLogError::Unsupported)
}

impl EventLog {
    /// Replay the log for one bank: PCR index -> final value.
    pub fn replay(&self, _bank: HashAlg) -> Result<BTreeMap<u32, Vec<u8>>, EventLogError> {
        Err(EventLogError::Unsupported)
    }
}
