//! TCG PC Client measured-boot event logs: the crypto-agile format (a SHA-1 style header
//! event carrying the Spec ID event, then TCG_PCR_EVENT2 entries with one digest per bank)
//! and legacy SHA-1 logs; parsing and replay to PCR values.
//!
//! Reference: TCG PC Client Platform Firmware Profile, section "Event Logging".
//!
//! Rules this parser enforces (all rejections are [`EventLogError`]s, never panics):
//! - Event numbers in errors count every record in file order from 0, the Spec ID header
//!   included, so they match `tpm2_eventlog`'s `EventNum`; offsets are the event's start.
//! - Crypto-agile: digest sizes come from the Spec ID table, so unknown algorithms are
//!   skipped by size; a known algorithm whose table size differs from its real length is
//!   rejected. Every TCG_PCR_EVENT2 must carry exactly one digest per table algorithm (the
//!   spec says each event extends every active bank), in any order; a digest whose
//!   algorithm is not in the table, or a repeated one, is rejected.
//! - PCR indices must be below 24; at most [`MAX_EVENTS`] events of at most
//!   [`MAX_EVENT_SIZE`] bytes each; the input must end exactly after the last event (no
//!   trailing padding).
//! - A `StartupLocality` EV_NO_ACTION event must be on PCR 0, 17 bytes long, appear at
//!   most once and precede every measurement into PCR 0.

use crate::alg::HashAlg;
use crate::reader::{Reader, Truncated};
use std::collections::BTreeMap;
use std::fmt;
use thiserror::Error;

/// Most events a log may hold; real firmware logs have a few hundred.
pub const MAX_EVENTS: usize = 100_000;
/// Largest single event body accepted.
pub const MAX_EVENT_SIZE: usize = 16 << 20;
/// PCR indices must be below this (PC Client TPMs have 24 PCRs).
pub const PCR_COUNT: u32 = 24;

/// Event types (TCG PC Client Platform Firmware Profile, "Event Types").
pub const EV_PREBOOT_CERT: u32 = 0x0;
pub const EV_POST_CODE: u32 = 0x1;
pub const EV_NO_ACTION: u32 = 0x3;
pub const EV_SEPARATOR: u32 = 0x4;
pub const EV_ACTION: u32 = 0x5;
pub const EV_EVENT_TAG: u32 = 0x6;
pub const EV_S_CRTM_CONTENTS: u32 = 0x7;
pub const EV_S_CRTM_VERSION: u32 = 0x8;
pub const EV_CPU_MICROCODE: u32 = 0x9;
pub const EV_PLATFORM_CONFIG_FLAGS: u32 = 0xA;
pub const EV_TABLE_OF_DEVICES: u32 = 0xB;
pub const EV_COMPACT_HASH: u32 = 0xC;
pub const EV_IPL: u32 = 0xD;
pub const EV_IPL_PARTITION_DATA: u32 = 0xE;
pub const EV_NONHOST_CODE: u32 = 0xF;
pub const EV_NONHOST_CONFIG: u32 = 0x10;
pub const EV_NONHOST_INFO: u32 = 0x11;
pub const EV_OMIT_BOOT_DEVICE_EVENTS: u32 = 0x12;
pub const EV_EFI_VARIABLE_DRIVER_CONFIG: u32 = 0x8000_0001;
pub const EV_EFI_VARIABLE_BOOT: u32 = 0x8000_0002;
pub const EV_EFI_BOOT_SERVICES_APPLICATION: u32 = 0x8000_0003;
pub const EV_EFI_BOOT_SERVICES_DRIVER: u32 = 0x8000_0004;
pub const EV_EFI_RUNTIME_SERVICES_DRIVER: u32 = 0x8000_0005;
pub const EV_EFI_GPT_EVENT: u32 = 0x8000_0006;
pub const EV_EFI_ACTION: u32 = 0x8000_0007;
pub const EV_EFI_PLATFORM_FIRMWARE_BLOB: u32 = 0x8000_0008;
pub const EV_EFI_HANDOFF_TABLES: u32 = 0x8000_0009;
pub const EV_EFI_PLATFORM_FIRMWARE_BLOB2: u32 = 0x8000_000A;
pub const EV_EFI_HANDOFF_TABLES2: u32 = 0x8000_000B;
pub const EV_EFI_VARIABLE_BOOT2: u32 = 0x8000_000C;
pub const EV_EFI_GPT_EVENT2: u32 = 0x8000_000D;
pub const EV_EFI_HCRTM_EVENT: u32 = 0x8000_0010;
pub const EV_EFI_VARIABLE_AUTHORITY: u32 = 0x8000_00E0;
pub const EV_EFI_SPDM_FIRMWARE_BLOB: u32 = 0x8000_00E1;
pub const EV_EFI_SPDM_FIRMWARE_CONFIG: u32 = 0x8000_00E2;

const SPEC_ID_SIGNATURE: &[u8; 16] = b"Spec ID Event03\0";
const STARTUP_LOCALITY_SIGNATURE: &[u8; 16] = b"StartupLocality\0";
/// EFI_GLOBAL_VARIABLE {8BE4DF61-93CA-11D2-AA0D-00E098032B8C} as stored (mixed endian).
const EFI_GLOBAL_VARIABLE: [u8; 16] = [
    0x61, 0xdf, 0xe4, 0x8b, 0xca, 0x93, 0xd2, 0x11, 0xaa, 0x0d, 0x00, 0xe0, 0x98, 0x03, 0x2b, 0x8c,
];

/// The spec's name for an event type, if it is one the PC Client profile defines.
pub fn event_type_name(event_type: u32) -> Option<&'static str> {
    Some(match event_type {
        EV_PREBOOT_CERT => "EV_PREBOOT_CERT",
        EV_POST_CODE => "EV_POST_CODE",
        EV_NO_ACTION => "EV_NO_ACTION",
        EV_SEPARATOR => "EV_SEPARATOR",
        EV_ACTION => "EV_ACTION",
        EV_EVENT_TAG => "EV_EVENT_TAG",
        EV_S_CRTM_CONTENTS => "EV_S_CRTM_CONTENTS",
        EV_S_CRTM_VERSION => "EV_S_CRTM_VERSION",
        EV_CPU_MICROCODE => "EV_CPU_MICROCODE",
        EV_PLATFORM_CONFIG_FLAGS => "EV_PLATFORM_CONFIG_FLAGS",
        EV_TABLE_OF_DEVICES => "EV_TABLE_OF_DEVICES",
        EV_COMPACT_HASH => "EV_COMPACT_HASH",
        EV_IPL => "EV_IPL",
        EV_IPL_PARTITION_DATA => "EV_IPL_PARTITION_DATA",
        EV_NONHOST_CODE => "EV_NONHOST_CODE",
        EV_NONHOST_CONFIG => "EV_NONHOST_CONFIG",
        EV_NONHOST_INFO => "EV_NONHOST_INFO",
        EV_OMIT_BOOT_DEVICE_EVENTS => "EV_OMIT_BOOT_DEVICE_EVENTS",
        EV_EFI_VARIABLE_DRIVER_CONFIG => "EV_EFI_VARIABLE_DRIVER_CONFIG",
        EV_EFI_VARIABLE_BOOT => "EV_EFI_VARIABLE_BOOT",
        EV_EFI_BOOT_SERVICES_APPLICATION => "EV_EFI_BOOT_SERVICES_APPLICATION",
        EV_EFI_BOOT_SERVICES_DRIVER => "EV_EFI_BOOT_SERVICES_DRIVER",
        EV_EFI_RUNTIME_SERVICES_DRIVER => "EV_EFI_RUNTIME_SERVICES_DRIVER",
        EV_EFI_GPT_EVENT => "EV_EFI_GPT_EVENT",
        EV_EFI_ACTION => "EV_EFI_ACTION",
        EV_EFI_PLATFORM_FIRMWARE_BLOB => "EV_EFI_PLATFORM_FIRMWARE_BLOB",
        EV_EFI_HANDOFF_TABLES => "EV_EFI_HANDOFF_TABLES",
        EV_EFI_PLATFORM_FIRMWARE_BLOB2 => "EV_EFI_PLATFORM_FIRMWARE_BLOB2",
        EV_EFI_HANDOFF_TABLES2 => "EV_EFI_HANDOFF_TABLES2",
        EV_EFI_VARIABLE_BOOT2 => "EV_EFI_VARIABLE_BOOT2",
        EV_EFI_GPT_EVENT2 => "EV_EFI_GPT_EVENT2",
        EV_EFI_HCRTM_EVENT => "EV_EFI_HCRTM_EVENT",
        EV_EFI_VARIABLE_AUTHORITY => "EV_EFI_VARIABLE_AUTHORITY",
        EV_EFI_SPDM_FIRMWARE_BLOB => "EV_EFI_SPDM_FIRMWARE_BLOB",
        EV_EFI_SPDM_FIRMWARE_CONFIG => "EV_EFI_SPDM_FIRMWARE_CONFIG",
        _ => return None,
    })
}

/// A TPM_ALG_ID as it appears in a log, shown by name where Custody knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlgId(pub u16);

impl fmt::Display for AlgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match HashAlg::from_tpm_alg_id(self.0) {
            Some(a) => f.write_str(a.name()),
            None => write!(f, "algorithm {:#06x}", self.0),
        }
    }
}

/// What was wrong with one event.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Malformed {
    #[error("{field} truncated at offset {at:#x}: needs {needed} bytes, {available} left")]
    Truncated {
        field: &'static str,
        at: usize,
        needed: usize,
        available: usize,
    },
    #[error("digest for {alg} truncated at offset {at:#x}: needs {needed} bytes, {available} left")]
    DigestTruncated {
        alg: AlgId,
        at: usize,
        needed: usize,
        available: usize,
    },
    #[error("PCR index {0} out of range (must be below 24)")]
    PcrIndex(u32),
    #[error("event size {size} exceeds the {max}-byte limit")]
    EventTooLarge { size: u32, max: usize },
    #[error("Spec ID header: {0}")]
    SpecIdHeader(&'static str),
    #[error("Spec ID event is {declared} bytes but its fields take {actual}")]
    SpecIdSize { declared: usize, actual: usize },
    #[error("Spec ID event lists no algorithms")]
    NoAlgorithms,
    #[error("Spec ID event lists {0} twice")]
    DuplicateAlgorithm(AlgId),
    #[error("Spec ID event gives {alg} a digest size of {table} bytes; it is {real}")]
    DigestSizeMismatch { alg: AlgId, table: u16, real: usize },
    #[error("Spec ID event gives {0} a digest size of 0")]
    ZeroDigestSize(AlgId),
    #[error("event carries {found} digests; the Spec ID table has {expected} algorithms")]
    DigestCount { found: u32, expected: usize },
    #[error("digest for {0}, which the Spec ID table does not list")]
    DigestNotInTable(AlgId),
    #[error("two digests for {0}")]
    DuplicateDigest(AlgId),
    #[error("StartupLocality event on PCR {0}; it belongs on PCR 0")]
    StartupLocalityPcr(u32),
    #[error("StartupLocality event is {0} bytes; it must be 17")]
    StartupLocalitySize(usize),
    #[error("StartupLocality event after PCR 0 was extended or set")]
    StartupLocalityLate,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EventLogError {
    #[error("event log is empty")]
    Empty,
    #[error("event {event} at offset {offset:#x}: {error}")]
    Event {
        /// Record number in file order, 0-based, the Spec ID header being event 0.
        event: usize,
        /// Offset of the event's first byte.
        offset: usize,
        error: Malformed,
    },
    #[error("event log holds more than {max} events")]
    TooManyEvents { max: usize },
    #[error("the event log records no {} digests", .0.name())]
    BankNotInLog(HashAlg),
    #[error("event {event}: no {} digest of the right length to replay", .alg.name())]
    MissingDigest { event: usize, alg: HashAlg },
    #[error("event {event}: StartupLocality event after PCR 0 was extended or set")]
    StartupLocalityLate { event: usize },
    #[error("event {event}: UEFI_VARIABLE_DATA malformed: {reason}")]
    VariableData { event: usize, reason: &'static str },
    #[error("event {event}: {} digest does not match the event data", .alg.name())]
    EventDataDigest { event: usize, alg: HashAlg },
}

impl EventLogError {
    /// Stable check name for reports (the verifier's `FailedCheck` delegates here).
    pub fn check(&self) -> &'static str {
        match self {
            Self::Empty | Self::Event { .. } | Self::TooManyEvents { .. } => "eventlog_parse",
            Self::BankNotInLog(_) => "eventlog_bank",
            Self::MissingDigest { .. } | Self::StartupLocalityLate { .. } => "eventlog_replay",
            Self::VariableData { .. } | Self::EventDataDigest { .. } => "eventlog_secure_boot",
        }
    }
}

/// One measured event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub pcr: u32,
    pub event_type: u32,
    /// One digest per bank the log records. Digests of algorithms Custody does not know
    /// (SM3, SHA3, ...) are checked for size and skipped.
    pub digests: Vec<(HashAlg, Vec<u8>)>,
    pub data: Vec<u8>,
}

impl Event {
    /// The event's digest for one bank.
    pub fn digest(&self, alg: HashAlg) -> Option<&[u8]> {
        self.digests
            .iter()
            .find(|(a, _)| *a == alg)
            .map(|(_, d)| d.as_slice())
    }

    /// The spec's name for the event type, if known.
    pub fn type_name(&self) -> Option<&'static str> {
        event_type_name(self.event_type)
    }

    /// The locality byte of a `StartupLocality` EV_NO_ACTION event (signature matched
    /// and exactly 17 bytes), else `None`.
    pub fn startup_locality(&self) -> Option<u8> {
        if self.event_type != EV_NO_ACTION {
            return None;
        }
        match self.data.split_first_chunk::<16>() {
            Some((sig, [loc])) if sig == STARTUP_LOCALITY_SIGNATURE => Some(*loc),
            _ => None,
        }
    }

    fn is_startup_locality_candidate(&self) -> bool {
        self.event_type == EV_NO_ACTION && self.data.starts_with(STARTUP_LOCALITY_SIGNATURE)
    }
}

/// One row of the Spec ID event's algorithm table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlgorithmSize {
    pub alg_id: u16,
    pub digest_size: u16,
}

/// The TCG_EfiSpecIDEvent that opens a crypto-agile log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecId {
    pub platform_class: u32,
    pub spec_version_minor: u8,
    pub spec_version_major: u8,
    pub spec_errata: u8,
    pub uintn_size: u8,
    /// Every algorithm the log carries, known to Custody or not, in table order.
    pub algorithms: Vec<AlgorithmSize>,
    pub vendor_info: Vec<u8>,
}

/// A parsed event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventLog {
    /// True for the crypto-agile (TCG_PCR_EVENT2) format.
    pub crypto_agile: bool,
    /// The Spec ID header of a crypto-agile log; `None` for legacy SHA-1 logs.
    pub spec_id: Option<SpecId>,
    /// Measured events in order. For crypto-agile logs the Spec ID header is not among
    /// them (it is `spec_id`), so `events[i]` is file event `i + 1`.
    pub events: Vec<Event>,
}

/// Locates errors: which event, starting where.
#[derive(Clone, Copy)]
struct At {
    event: usize,
    offset: usize,
}

impl At {
    fn err(self, error: Malformed) -> EventLogError {
        EventLogError::Event {
            event: self.event,
            offset: self.offset,
            error,
        }
    }

    fn trunc(self, t: Truncated) -> EventLogError {
        self.err(Malformed::Truncated {
            field: t.field,
            at: t.offset,
            needed: t.needed,
            available: t.available,
        })
    }
}

/// A Spec ID table row with the algorithm resolved where known.
struct Bank {
    id: u16,
    size: usize,
    alg: Option<HashAlg>,
}

/// Parse a log as `/sys/kernel/security/tpm0/binary_bios_measurements` exposes it.
pub fn parse(bytes: &[u8]) -> Result<EventLog, EventLogError> {
    if bytes.is_empty() {
        return Err(EventLogError::Empty);
    }
    let mut r = Reader::new(bytes);
    let at = At { event: 0, offset: 0 };
    // Both formats open with a TCG_PCClientPCREvent; a crypto-agile log's first one is the
    // Spec ID event.
    let first = read_legacy_event(&mut r, at)?;
    let log = if first.event_type == EV_NO_ACTION && first.data.starts_with(SPEC_ID_SIGNATURE) {
        if first.pcr != 0 {
            return Err(at.err(Malformed::SpecIdHeader("not on PCR 0")));
        }
        if first.digests.iter().any(|(_, d)| d.iter().any(|&b| b != 0)) {
            return Err(at.err(Malformed::SpecIdHeader("digest is not zero")));
        }
        let spec = parse_spec_id(&first.data).map_err(|e| at.err(e))?;
        let banks = spec
            .algorithms
            .iter()
            .map(|a| Bank {
                id: a.alg_id,
                size: usize::from(a.digest_size),
                alg: HashAlg::from_tpm_alg_id(a.alg_id),
            })
            .collect::<Vec<_>>();
        let mut events = Vec::new();
        let mut rule = LocalityRule::default();
        while !r.is_empty() {
            let at = next_at(&r, events.len() + 1)?;
            let e = read_event2(&mut r, at, &banks)?;
            rule.see(&e, at)?;
            events.push(e);
        }
        EventLog {
            crypto_agile: true,
            spec_id: Some(spec),
            events,
        }
    } else {
        let mut rule = LocalityRule::default();
        rule.see(&first, at)?;
        let mut events = vec![first];
        while !r.is_empty() {
            let at = next_at(&r, events.len())?;
            let e = read_legacy_event(&mut r, at)?;
            rule.see(&e, at)?;
            events.push(e);
        }
        EventLog {
            crypto_agile: false,
            spec_id: None,
            events,
        }
    };
    Ok(log)
}

fn next_at(r: &Reader<'_>, event: usize) -> Result<At, EventLogError> {
    if event >= MAX_EVENTS {
        return Err(EventLogError::TooManyEvents { max: MAX_EVENTS });
    }
    Ok(At {
        event,
        offset: r.position(),
    })
}

fn read_pcr(r: &mut Reader<'_>, at: At) -> Result<u32, EventLogError> {
    let pcr = r.u32_le("pcrIndex").map_err(|t| at.trunc(t))?;
    if pcr >= PCR_COUNT {
        return Err(at.err(Malformed::PcrIndex(pcr)));
    }
    Ok(pcr)
}

/// eventSize then the event body, capped before anything is read.
fn read_body(r: &mut Reader<'_>, at: At) -> Result<Vec<u8>, EventLogError> {
    let size = r.u32_le("eventSize").map_err(|t| at.trunc(t))?;
    let n = usize::try_from(size)
        .ok()
        .filter(|&n| n <= MAX_EVENT_SIZE)
        .ok_or(at.err(Malformed::EventTooLarge {
            size,
            max: MAX_EVENT_SIZE,
        }))?;
    Ok(r.take(n, "event data").map_err(|t| at.trunc(t))?.to_vec())
}

/// TCG_PCClientPCREvent: pcrIndex, eventType, SHA-1 digest, eventSize, event.
fn read_legacy_event(r: &mut Reader<'_>, at: At) -> Result<Event, EventLogError> {
    let pcr = read_pcr(r, at)?;
    let event_type = r.u32_le("eventType").map_err(|t| at.trunc(t))?;
    let digest: [u8; 20] = r.array("SHA-1 digest").map_err(|t| at.trunc(t))?;
    let data = read_body(r, at)?;
    Ok(Event {
        pcr,
        event_type,
        digests: vec![(HashAlg::Sha1, digest.to_vec())],
        data,
    })
}

/// TCG_PCR_EVENT2: pcrIndex, eventType, TPML_DIGEST_VALUES, eventSize, event.
fn read_event2(r: &mut Reader<'_>, at: At, banks: &[Bank]) -> Result<Event, EventLogError> {
    let pcr = read_pcr(r, at)?;
    let event_type = r.u32_le("eventType").map_err(|t| at.trunc(t))?;
    let count = r.u32_le("digest count").map_err(|t| at.trunc(t))?;
    // Checked against the table before the loop, so the count never sizes anything.
    if usize::try_from(count).ok() != Some(banks.len()) {
        return Err(at.err(Malformed::DigestCount {
            found: count,
            expected: banks.len(),
        }));
    }
    let mut seen = vec![false; banks.len()];
    let mut digests = Vec::with_capacity(banks.iter().filter(|b| b.alg.is_some()).count());
    for _ in 0..banks.len() {
        let id = r.u16_le("digest algorithm").map_err(|t| at.trunc(t))?;
        let idx = banks
            .iter()
            .position(|b| b.id == id)
            .ok_or(at.err(Malformed::DigestNotInTable(AlgId(id))))?;
        let (Some(bank), Some(slot)) = (banks.get(idx), seen.get_mut(idx)) else {
            return Err(at.err(Malformed::DigestNotInTable(AlgId(id))));
        };
        if *slot {
            return Err(at.err(Malformed::DuplicateDigest(AlgId(id))));
        }
        *slot = true;
        let d = r.take(bank.size, "digest").map_err(|t| {
            at.err(Malformed::DigestTruncated {
                alg: AlgId(id),
                at: t.offset,
                needed: t.needed,
                available: t.available,
            })
        })?;
        if let Some(alg) = bank.alg {
            digests.push((alg, d.to_vec()));
        }
    }
    let data = read_body(r, at)?;
    Ok(Event {
        pcr,
        event_type,
        digests,
        data,
    })
}

/// TCG_EfiSpecIDEvent; the event size must equal what its fields take.
fn parse_spec_id(data: &[u8]) -> Result<SpecId, Malformed> {
    let mut r = Reader::new(data);
    let t = |t: Truncated| Malformed::Truncated {
        field: t.field,
        // Offsets inside the header event body: 32 bytes of event header precede it.
        at: t.offset + 32,
        needed: t.needed,
        available: t.available,
    };
    r.take(SPEC_ID_SIGNATURE.len(), "Spec ID signature").map_err(t)?;
    let platform_class = r.u32_le("platformClass").map_err(t)?;
    let spec_version_minor = r.u8("specVersionMinor").map_err(t)?;
    let spec_version_major = r.u8("specVersionMajor").map_err(t)?;
    let spec_errata = r.u8("specErrata").map_err(t)?;
    let uintn_size = r.u8("uintnSize").map_err(t)?;
    let n = r.u32_le("numberOfAlgorithms").map_err(t)?;
    if n == 0 {
        return Err(Malformed::NoAlgorithms);
    }
    // Each row takes 4 bytes; a count the body cannot hold is rejected before sizing a Vec.
    let n = usize::try_from(n)
        .ok()
        .filter(|&n| n <= r.remaining() / 4)
        .ok_or(Malformed::Truncated {
            field: "algorithm table",
            at: r.position() + 32,
            needed: usize::try_from(n).unwrap_or(usize::MAX).saturating_mul(4),
            available: r.remaining(),
        })?;
    let mut algorithms: Vec<AlgorithmSize> = Vec::with_capacity(n);
    for _ in 0..n {
        let alg_id = r.u16_le("algorithmId").map_err(t)?;
        let digest_size = r.u16_le("digestSize").map_err(t)?;
        if algorithms.iter().any(|a| a.alg_id == alg_id) {
            return Err(Malformed::DuplicateAlgorithm(AlgId(alg_id)));
        }
        if digest_size == 0 {
            return Err(Malformed::ZeroDigestSize(AlgId(alg_id)));
        }
        if let Some(alg) = HashAlg::from_tpm_alg_id(alg_id) {
            if usize::from(digest_size) != alg.digest_len() {
                return Err(Malformed::DigestSizeMismatch {
                    alg: AlgId(alg_id),
                    table: digest_size,
                    real: alg.digest_len(),
                });
            }
        }
        algorithms.push(AlgorithmSize { alg_id, digest_size });
    }
    let vendor_size = r.u8("vendorInfoSize").map_err(t)?;
    let vendor_info = r
        .take(usize::from(vendor_size), "vendorInfo")
        .map_err(t)?
        .to_vec();
    if !r.is_empty() {
        return Err(Malformed::SpecIdSize {
            declared: data.len(),
            actual: r.position(),
        });
    }
    Ok(SpecId {
        platform_class,
        spec_version_minor,
        spec_version_major,
        spec_errata,
        uintn_size,
        algorithms,
        vendor_info,
    })
}

/// StartupLocality: on PCR 0, 17 bytes, at most once, before any PCR 0 measurement.
#[derive(Default)]
struct LocalityRule {
    pcr0_set: bool,
}

impl LocalityRule {
    fn see(&mut self, e: &Event, at: At) -> Result<(), EventLogError> {
        if e.is_startup_locality_candidate() {
            if e.pcr != 0 {
                return Err(at.err(Malformed::StartupLocalityPcr(e.pcr)));
            }
            if e.data.len() != 17 {
                return Err(at.err(Malformed::StartupLocalitySize(e.data.len())));
            }
            if self.pcr0_set {
                return Err(at.err(Malformed::StartupLocalityLate));
            }
            self.pcr0_set = true;
        } else if e.pcr == 0 && e.event_type != EV_NO_ACTION {
            self.pcr0_set = true;
        }
        Ok(())
    }
}

impl EventLog {
    /// File event number of `events[i]` (the Spec ID header is event 0).
    fn file_event_number(&self, i: usize) -> usize {
        i + usize::from(self.crypto_agile)
    }

    /// The banks Custody can replay from this log.
    pub fn banks(&self) -> Vec<HashAlg> {
        match &self.spec_id {
            Some(s) => s
                .algorithms
                .iter()
                .filter_map(|a| HashAlg::from_tpm_alg_id(a.alg_id))
                .collect(),
            None if self.crypto_agile => Vec::new(),
            None => vec![HashAlg::Sha1],
        }
    }

    /// Replay the log for one bank: PCR index -> final value.
    ///
    /// PCRs start at zero, except that a StartupLocality event sets PCR 0 to the locality
    /// in its last byte. EV_NO_ACTION events are not extended. Only PCRs the log extended
    /// (or PCR 0 set by StartupLocality) are returned.
    pub fn replay(&self, bank: HashAlg) -> Result<BTreeMap<u32, Vec<u8>>, EventLogError> {
        if !self.banks().contains(&bank) {
            return Err(EventLogError::BankNotInLog(bank));
        }
        let zero = vec![0u8; bank.digest_len()];
        let mut pcrs: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
        for (i, e) in self.events.iter().enumerate() {
            if e.event_type == EV_NO_ACTION {
                if let Some(locality) = e.startup_locality() {
                    if e.pcr != 0 || pcrs.contains_key(&0) {
                        return Err(EventLogError::StartupLocalityLate {
                            event: self.file_event_number(i),
                        });
                    }
                    let mut v = zero.clone();
                    if let Some(last) = v.last_mut() {
                        *last = locality;
                    }
                    pcrs.insert(0, v);
                }
                continue;
            }
            let d = e.digest(bank).filter(|d| d.len() == bank.digest_len()).ok_or(
                EventLogError::MissingDigest {
                    event: self.file_event_number(i),
                    alg: bank,
                },
            )?;
            let pcr = pcrs.entry(e.pcr).or_insert_with(|| zero.clone());
            *pcr = bank.extend(pcr, d);
        }
        Ok(pcrs)
    }

    /// Secure Boot state from the first EV_EFI_VARIABLE_DRIVER_CONFIG event on PCR 7 that
    /// measures EFI_GLOBAL_VARIABLE `SecureBoot`: `Some(true)` enabled, `Some(false)`
    /// disabled, `None` when the log has no such event. The event's digests must equal the
    /// hash of its data (as the spec requires for this type), so data edited after the
    /// fact is refused rather than believed; pair this with a replay checked against a
    /// quote.
    pub fn secure_boot(&self) -> Result<Option<bool>, EventLogError> {
        for (i, e) in self.events.iter().enumerate() {
            if e.pcr != 7 || e.event_type != EV_EFI_VARIABLE_DRIVER_CONFIG {
                continue;
            }
            let event = self.file_event_number(i);
            let var = UefiVariable::parse(&e.data)
                .map_err(|reason| EventLogError::VariableData { event, reason })?;
            if var.guid != EFI_GLOBAL_VARIABLE || !var.name_is("SecureBoot") {
                continue;
            }
            for (alg, d) in &e.digests {
                if alg.hash(&[&e.data]) != *d {
                    return Err(EventLogError::EventDataDigest { event, alg: *alg });
                }
            }
            return match var.data {
                [0] => Ok(Some(false)),
                [1] => Ok(Some(true)),
                _ => Err(EventLogError::VariableData {
                    event,
                    reason: "SecureBoot value is not a single 0 or 1 byte",
                }),
            };
        }
        Ok(None)
    }
}

/// UEFI_VARIABLE_DATA: VariableName GUID, UnicodeNameLength (chars), VariableDataLength,
/// UnicodeName (UTF-16LE), VariableData.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UefiVariable<'a> {
    pub guid: [u8; 16],
    /// UTF-16LE name bytes, not NUL-terminated.
    pub name_utf16le: &'a [u8],
    pub data: &'a [u8],
}

impl<'a> UefiVariable<'a> {
    /// Parse exactly one UEFI_VARIABLE_DATA; trailing bytes are an error.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, &'static str> {
        let mut r = Reader::new(bytes);
        let guid = r.array("VariableName").map_err(|_| "truncated GUID")?;
        let name_len = r
            .u64_le("UnicodeNameLength")
            .map_err(|_| "truncated UnicodeNameLength")?;
        let data_len = r
            .u64_le("VariableDataLength")
            .map_err(|_| "truncated VariableDataLength")?;
        let name_bytes = usize::try_from(name_len)
            .ok()
            .and_then(|n| n.checked_mul(2))
            .ok_or("UnicodeNameLength too large")?;
        let name_utf16le = r
            .take(name_bytes, "UnicodeName")
            .map_err(|_| "UnicodeName truncated")?;
        let data_len = usize::try_from(data_len).map_err(|_| "VariableDataLength too large")?;
        let data = r
            .take(data_len, "VariableData")
            .map_err(|_| "VariableData truncated")?;
        if !r.is_empty() {
            return Err("trailing bytes after VariableData");
        }
        Ok(Self {
            guid,
            name_utf16le,
            data,
        })
    }

    /// Whether the name is exactly `name` (compared as UTF-16 code units).
    pub fn name_is(&self, name: &str) -> bool {
        let units = self
            .name_utf16le
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c.first().copied().unwrap_or(0), c.get(1).copied().unwrap_or(0)]));
        units.eq(name.encode_utf16())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAIN: &[u8] = include_bytes!("../testdata/eventlog/keylime-binary_bios_measurements");
    const SECUREBOOT: &[u8] =
        include_bytes!("../testdata/eventlog/keylime-binary_bios_measurements-secureboot");
    const BOGUS: &[u8] = include_bytes!("../testdata/eventlog/keylime-binary_bios_measurements-bogus");
    const EMPTY: &[u8] = include_bytes!("../testdata/eventlog/keylime-binary_bios_measurements-empty");

    fn pcrs(values: &[(u32, &str)]) -> BTreeMap<u32, Vec<u8>> {
        values
            .iter()
            .map(|(i, h)| (*i, hex::decode(h).unwrap()))
            .collect()
    }

    // Expected values: the "pcrs:" section printed by `tpm2_eventlog` (tpm2-tools 5.4) for
    // the same files, an independent implementation, except PCR 0 of the keylime log:
    // tpm2-tools 5.4 extends EV_NO_ACTION digests and ignores StartupLocality
    // (tpm2-software/tpm2-tools#3224, #3146; fixed by PRs #3230, #3242), so for that log it
    // prints ab3e9fd3.. (sha1) / 1877eacb.. (sha256). The PCR 0 values below start from
    // 00..03 (StartupLocality 3) and skip EV_NO_ACTION, as the PC Client spec says; they
    // were computed with Python hashlib from the per-event digests tpm2_eventlog prints.
    // `tpm2_tools_5_4_pcr0_quirk_reproduced` checks our digests against its value too.
    fn main_sha1() -> BTreeMap<u32, Vec<u8>> {
        pcrs(&[
            (0, "78f3e576d5da8873860e557535d181f4a37e2963"),
            (1, "7120c684347e60261ac85383014ea0f21423a78f"),
            (2, "081983639b4e5cce287d3d907fd813f306436fd7"),
            (3, "b2a83b0ebf2f8374299a5b2bdfc31ea955ad7236"),
            (4, "60ea1bd941d44196a6e0e793d3b3ef675a07bcb8"),
            (5, "68afe01cbc6b45e7a4a950661a80a4ad85d60540"),
            (6, "b2a83b0ebf2f8374299a5b2bdfc31ea955ad7236"),
            (7, "b7e9b0d88de19a6f949457be8b6aeb7a4d28fd0a"),
            (8, "e4aa684b1a9ee105b63495efe7b9ad376e648a0c"),
            (9, "08bdebbac6f5d9be59e98a5cf5ae90e83970b548"),
            (14, "ffaf5dfab351dc9b3b7a3cf748759e137f1601a8"),
        ])
    }

    fn main_sha256() -> BTreeMap<u32, Vec<u8>> {
        pcrs(&[
            (
                0,
                "0ee9a7feba8f4172f1a7451594aa5731665a4d353ac61814042ce107a00742f2",
            ),
            (
                1,
                "d268196b8d9585b41e6de98d7b2af9cc2fcc5b8ae5923b354105bf7c4d73b9cc",
            ),
            (
                2,
                "4aa7ce1fed66fdadf81a0cf06a47f14625f72fb4ff5fb5d6aa5d0632c9407878",
            ),
            (
                3,
                "3d458cfe55cc03ea1f443f1562beec8df51c75e14a9fcf9a7234a13f198e7969",
            ),
            (
                4,
                "a77ff9ab296e10186dd7e7082eab94e795b1ba9d84e920b09cf6272f68c2711c",
            ),
            (
                5,
                "569e53aee038897b12b1a0842c1edb67435d53c831bdce67f6440dd2a903925f",
            ),
            (
                6,
                "3d458cfe55cc03ea1f443f1562beec8df51c75e14a9fcf9a7234a13f198e7969",
            ),
            (
                7,
                "741fd028c51b4d2fbdcc7f28014cc758d17ccc1fe2ea7ca17b0e8009480a557c",
            ),
            (
                8,
                "f5dc3feeda9a15dbcc11c6d99572bd063e8b0a435c222b4352c466726b0f5daf",
            ),
            (
                9,
                "e0bde30667767849f70f6f1f5b561bc3d25d8aff186b8db0ac405d652f80e3c4",
            ),
            (
                14,
                "17cdefd9548f4383b67a37a901673bf3c8ded6f619d36c8007562de1d93c81cc",
            ),
        ])
    }

    fn secureboot_sha256() -> BTreeMap<u32, Vec<u8>> {
        pcrs(&[
            (
                0,
                "0d993cf4baec1dc2a47013c8bcc13e1593d5e6ba9cc4630f422e98d310212aff",
            ),
            (
                1,
                "77092bbdc52a5beab54967053d9ccc8d254f882ccb9c3dd1ae81f0378b3a7db2",
            ),
            (
                2,
                "7551ef5fcd14f30f8087b631c90869ec55f71bd4e791bd370855ea1d48d2100a",
            ),
            (
                3,
                "3d458cfe55cc03ea1f443f1562beec8df51c75e14a9fcf9a7234a13f198e7969",
            ),
            (
                4,
                "ce5e8ef15f4c1db94e24b2f458dc21c96dd3a530ecf4ee4c9d70bd9a3517088e",
            ),
            (
                5,
                "4316832e478197a3729fcaed54ec97989dcd67bc00ca2ac58230a414ff2b5277",
            ),
            (
                6,
                "3d458cfe55cc03ea1f443f1562beec8df51c75e14a9fcf9a7234a13f198e7969",
            ),
            (
                7,
                "2f96e1f1bf7f91b6f17e1bcb823e717e43782ff75481237711f2ed7bf8a8edb1",
            ),
            (
                8,
                "79019cc5ebc05767cff5469087b629f58c52f0a3380a33a89414f56939197e19",
            ),
            (
                9,
                "acd038dd8ec2f7e42a7c5c68e07ae6713962d8835412b1f5632c7e63da36ffc2",
            ),
            (
                14,
                "66c465262f16d108fd77f2f94c4ae0040f81b3168242a827fcf5efcd812de053",
            ),
        ])
    }

    #[test]
    fn keylime_log_parses_and_replays_to_reference_pcrs() {
        let log = parse(MAIN).unwrap();
        assert!(log.crypto_agile);
        // tpm2_eventlog lists EventNum 0..=120; event 0 is the Spec ID header.
        assert_eq!(log.events.len(), 120);
        let spec = log.spec_id.as_ref().unwrap();
        assert_eq!(
            spec.algorithms,
            [
                AlgorithmSize {
                    alg_id: 0x0004,
                    digest_size: 20
                },
                AlgorithmSize {
                    alg_id: 0x000B,
                    digest_size: 32
                },
            ]
        );
        assert_eq!((spec.spec_version_major, spec.uintn_size), (2, 2));
        assert_eq!(log.banks(), [HashAlg::Sha1, HashAlg::Sha256]);
        assert!(log.events.iter().all(|e| e.digests.len() == 2));
        assert_eq!(log.events[0].startup_locality(), Some(3));
        assert_eq!(log.events[1].type_name(), Some("EV_S_CRTM_CONTENTS"));
        assert_eq!(log.replay(HashAlg::Sha1).unwrap(), main_sha1());
        assert_eq!(log.replay(HashAlg::Sha256).unwrap(), main_sha256());
        assert_eq!(
            log.replay(HashAlg::Sha384).unwrap_err(),
            EventLogError::BankNotInLog(HashAlg::Sha384)
        );
        assert_eq!(log.secure_boot().unwrap(), Some(false));
    }

    #[test]
    fn tpm2_tools_5_4_pcr0_quirk_reproduced() {
        // Replaying PCR 0 the way tpm2-tools 5.4 does (zero start, EV_NO_ACTION digests
        // extended) must give exactly what it printed, so our parsed digests agree with it.
        let log = parse(MAIN).unwrap();
        for (bank, printed) in [
            (HashAlg::Sha1, "ab3e9fd3b9b9911a2496db14911214f7fd0a115c"),
            (
                HashAlg::Sha256,
                "1877eacbf0290c67521de489ae1ca5d04de12150e522f472f3fb3daeb35e8e43",
            ),
        ] {
            let mut pcr = vec![0u8; bank.digest_len()];
            for e in log.events.iter().filter(|e| e.pcr == 0) {
                pcr = bank.extend(&pcr, e.digest(bank).unwrap());
            }
            assert_eq!(hex::encode(pcr), printed);
        }
    }

    #[test]
    fn secureboot_log_parses_and_replays_like_tpm2_eventlog() {
        let log = parse(SECUREBOOT).unwrap();
        assert!(log.crypto_agile);
        assert_eq!(log.events.len(), 98);
        assert_eq!(log.banks(), [HashAlg::Sha256]);
        assert_eq!(log.replay(HashAlg::Sha256).unwrap(), secureboot_sha256());
        let e = log.replay(HashAlg::Sha1).unwrap_err();
        assert_eq!(e, EventLogError::BankNotInLog(HashAlg::Sha1));
        assert_eq!(e.check(), "eventlog_bank");
        assert_eq!(log.secure_boot().unwrap(), Some(true));
    }

    #[test]
    fn edited_secureboot_value_is_refused() {
        // Event 4 (PCR 7, SecureBoot = 01) has its value as the event's last byte; flipping
        // it to 00 leaves the digests (and so the replay) unchanged but must not be believed.
        let mut log = parse(SECUREBOOT).unwrap();
        let e = &mut log.events[3];
        assert_eq!(e.data.last(), Some(&1));
        *e.data.last_mut().unwrap() = 0;
        let err = log.secure_boot().unwrap_err();
        assert_eq!(
            err,
            EventLogError::EventDataDigest {
                event: 4,
                alg: HashAlg::Sha256
            }
        );
        assert_eq!(err.check(), "eventlog_secure_boot");
    }

    #[test]
    fn bogus_and_empty_logs_fail_clearly() {
        assert_eq!(parse(EMPTY).unwrap_err(), EventLogError::Empty);
        let e = parse(BOGUS).unwrap_err();
        // "bogu" read as a little-endian PCR index.
        assert_eq!(
            e,
            EventLogError::Event {
                event: 0,
                offset: 0,
                error: Malformed::PcrIndex(0x7567_6f62)
            }
        );
        assert_eq!(e.check(), "eventlog_parse");
        assert_eq!(
            e.to_string(),
            "event 0 at offset 0x0: PCR index 1969712994 out of range (must be below 24)"
        );
    }

    #[test]
    fn truncated_digest_error_names_event_offset_and_bank() {
        // Header event is 0x45 bytes; event 1's SHA-256 digest starts at 0x45 + 36 = 0x69.
        let e = parse(&MAIN[..0x69 + 5]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "event 1 at offset 0x45: digest for sha256 truncated at offset 0x69: needs 32 bytes, 5 left"
        );
    }

    #[test]
    fn every_prefix_is_an_error_or_a_shorter_log() {
        for full in [MAIN, SECUREBOOT] {
            let n_full = parse(full).unwrap().events.len();
            // Every length in the first 400 bytes (header and first events), then a stride.
            let lens = (0..400.min(full.len())).chain((400..full.len()).step_by(97));
            let mut ok = 0;
            for len in lens {
                match parse(&full[..len]) {
                    Ok(log) => {
                        ok += 1;
                        assert!(log.events.len() < n_full, "prefix {len}");
                        for bank in log.banks() {
                            log.replay(bank).unwrap();
                        }
                    }
                    Err(e) => assert!(!e.to_string().is_empty()),
                }
            }
            assert!(ok > 0, "some prefixes end on an event boundary");
        }
    }

    #[test]
    fn flipped_digest_changes_only_its_pcr() {
        // Event 2 (PCR 0, EV_S_CRTM_CONTENTS) starts at 0x9e; its SHA-256 digest at 0xc2.
        let mut bytes = MAIN.to_vec();
        assert_eq!(bytes[0xc0..0xc3], [0x0b, 0x00, 0x0c]);
        bytes[0xc2] ^= 1;
        let log = parse(&bytes).unwrap();
        let sha256 = log.replay(HashAlg::Sha256).unwrap();
        let expected = main_sha256();
        assert_ne!(sha256[&0], expected[&0]);
        for pcr in 1..24 {
            assert_eq!(sha256.get(&pcr), expected.get(&pcr));
        }
        assert_eq!(log.replay(HashAlg::Sha1).unwrap(), main_sha1());
    }

    fn legacy_event(pcr: u32, ty: u32, digest: &[u8; 20], data: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&pcr.to_le_bytes());
        v.extend_from_slice(&ty.to_le_bytes());
        v.extend_from_slice(digest);
        v.extend_from_slice(&u32::try_from(data.len()).unwrap().to_le_bytes());
        v.extend_from_slice(data);
        v
    }

    fn h20(s: &str) -> [u8; 20] {
        hex::decode(s).unwrap().try_into().unwrap()
    }

    #[test]
    fn legacy_sha1_log_replays_to_hand_computed_values() {
        // sha1("a"), sha1(00000000), sha1("b"), computed with Python hashlib.
        let a = h20("86f7e437faa5a7fce15d1ddcb9eaeaea377667b8");
        let sep = h20("9069ca78e7450a285173431b3e52c5c25299e473");
        let b = hex::decode("e9d71f5ee7c92d6dc9e92ffdad17b8bd49418f98").unwrap();
        let mut log = Vec::new();
        log.extend(legacy_event(0, EV_S_CRTM_VERSION, &a, b"v1"));
        log.extend(legacy_event(0, EV_NO_ACTION, &[0xff; 20], b"ignored"));
        log.extend(legacy_event(4, EV_SEPARATOR, &sep, &[0; 4]));
        log.extend(legacy_event(4, EV_IPL, &b.clone().try_into().unwrap(), b""));
        let parsed = parse(&log).unwrap();
        assert!(!parsed.crypto_agile);
        assert!(parsed.spec_id.is_none());
        assert_eq!(parsed.events.len(), 4);
        assert_eq!(parsed.banks(), [HashAlg::Sha1]);
        // PCR0 = sha1(0^20 || sha1("a")); PCR4 = sha1(sha1(0^20 || sep) || sha1("b")),
        // computed with Python hashlib. The EV_NO_ACTION event is not extended.
        assert_eq!(
            parsed.replay(HashAlg::Sha1).unwrap(),
            pcrs(&[
                (0, "b311ff7e540d671f5b54ed190d402a1d064fbecb"),
                (4, "b19c65a2ab0654736c1dd966f17734a54d5e64fb"),
            ])
        );
        assert_eq!(
            parsed.replay(HashAlg::Sha256).unwrap_err(),
            EventLogError::BankNotInLog(HashAlg::Sha256)
        );
        // A legacy event with a PCR index of 24 is refused, naming event and offset.
        let mut bad = log.clone();
        bad.extend(legacy_event(24, EV_IPL, &a, b""));
        assert_eq!(
            parse(&bad).unwrap_err(),
            EventLogError::Event {
                event: 4,
                offset: log.len(),
                error: Malformed::PcrIndex(24)
            }
        );
    }

    /// A crypto-agile log: header with `table`, then `events`.
    fn agile(table: &[(u16, u16)], events: &[Vec<u8>]) -> Vec<u8> {
        let mut spec = SPEC_ID_SIGNATURE.to_vec();
        spec.extend_from_slice(&0u32.to_le_bytes());
        spec.extend_from_slice(&[0, 2, 0, 2]);
        spec.extend_from_slice(&u32::try_from(table.len()).unwrap().to_le_bytes());
        for (id, size) in table {
            spec.extend_from_slice(&id.to_le_bytes());
            spec.extend_from_slice(&size.to_le_bytes());
        }
        spec.push(0);
        let mut v = legacy_event(0, EV_NO_ACTION, &[0; 20], &spec);
        for e in events {
            v.extend_from_slice(e);
        }
        v
    }

    fn event2(pcr: u32, ty: u32, digests: &[(u16, Vec<u8>)], data: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&pcr.to_le_bytes());
        v.extend_from_slice(&ty.to_le_bytes());
        v.extend_from_slice(&u32::try_from(digests.len()).unwrap().to_le_bytes());
        for (id, d) in digests {
            v.extend_from_slice(&id.to_le_bytes());
            v.extend_from_slice(d);
        }
        v.extend_from_slice(&u32::try_from(data.len()).unwrap().to_le_bytes());
        v.extend_from_slice(data);
        v
    }

    fn event_err(bytes: &[u8]) -> Malformed {
        match parse(bytes).unwrap_err() {
            EventLogError::Event { error, .. } => error,
            other => panic!("unexpected {other:?}"),
        }
    }

    const SM3: u16 = 0x0012;

    #[test]
    fn unknown_algorithms_are_skipped_by_table_size() {
        let d = vec![7u8; 32];
        let ev = event2(5, EV_IPL, &[(SM3, vec![1; 32]), (0x000B, d.clone())], b"x");
        let log = parse(&agile(&[(0x000B, 32), (SM3, 32)], &[ev])).unwrap();
        assert_eq!(log.banks(), [HashAlg::Sha256]);
        assert_eq!(log.events[0].digests, [(HashAlg::Sha256, d.clone())]);
        let expected = HashAlg::Sha256.extend(&[0; 32], &d);
        assert_eq!(
            log.replay(HashAlg::Sha256).unwrap(),
            BTreeMap::from([(5, expected)])
        );
    }

    #[test]
    fn spec_id_and_digest_rules_are_enforced() {
        let sha256 = |b: u8| (0x000Bu16, vec![b; 32]);
        let good = event2(1, EV_IPL, &[sha256(1)], b"");
        assert!(parse(&agile(&[(0x000B, 32)], std::slice::from_ref(&good))).is_ok());
        // A known algorithm with the wrong table size.
        assert_eq!(
            event_err(&agile(&[(0x000B, 31)], &[])),
            Malformed::DigestSizeMismatch {
                alg: AlgId(0x000B),
                table: 31,
                real: 32
            }
        );
        assert_eq!(event_err(&agile(&[], &[])), Malformed::NoAlgorithms);
        assert_eq!(
            event_err(&agile(&[(0x000B, 32), (0x000B, 32)], &[])),
            Malformed::DuplicateAlgorithm(AlgId(0x000B))
        );
        assert_eq!(
            event_err(&agile(&[(SM3, 0)], &[])),
            Malformed::ZeroDigestSize(AlgId(SM3))
        );
        // Digest count must cover every bank in the table.
        let one = event2(1, EV_IPL, &[sha256(1)], b"");
        assert_eq!(
            event_err(&agile(&[(0x000B, 32), (SM3, 32)], &[one])),
            Malformed::DigestCount {
                found: 1,
                expected: 2
            }
        );
        let two = event2(1, EV_IPL, &[sha256(1), sha256(2)], b"");
        assert_eq!(
            event_err(&agile(&[(0x000B, 32), (SM3, 32)], &[two])),
            Malformed::DuplicateDigest(AlgId(0x000B))
        );
        let stray = event2(1, EV_IPL, &[(0x0004, vec![0; 20])], b"");
        assert_eq!(
            event_err(&agile(&[(0x000B, 32)], &[stray])),
            Malformed::DigestNotInTable(AlgId(0x0004))
        );
        // PCR index, event size cap, trailing bytes.
        assert_eq!(
            event_err(&agile(&[(0x000B, 32)], &[event2(24, EV_IPL, &[sha256(1)], b"")])),
            Malformed::PcrIndex(24)
        );
        let mut huge = event2(1, EV_IPL, &[sha256(1)], b"");
        let n = huge.len();
        huge[n - 4..].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            event_err(&agile(&[(0x000B, 32)], &[huge])),
            Malformed::EventTooLarge {
                size: u32::MAX,
                max: MAX_EVENT_SIZE
            }
        );
        let mut trailing = agile(&[(0x000B, 32)], &[good]);
        trailing.extend_from_slice(&[0; 3]);
        assert!(matches!(
            event_err(&trailing),
            Malformed::Truncated {
                field: "pcrIndex",
                ..
            }
        ));
    }

    #[test]
    fn startup_locality_sets_pcr0_and_must_come_first() {
        let t = [(0x000Bu16, 32u16)];
        let zero = || vec![(0x000Bu16, vec![0u8; 32])];
        let d = vec![9u8; 32];
        let loc = |l: u8| {
            let mut data = STARTUP_LOCALITY_SIGNATURE.to_vec();
            data.push(l);
            event2(0, EV_NO_ACTION, &zero(), &data)
        };
        let crtm = event2(0, EV_S_CRTM_VERSION, &[(0x000B, d.clone())], b"");
        let log = parse(&agile(&t, &[loc(3), crtm.clone()])).unwrap();
        let mut init = [0u8; 32];
        init[31] = 3;
        assert_eq!(
            log.replay(HashAlg::Sha256).unwrap(),
            BTreeMap::from([(0, HashAlg::Sha256.extend(&init, &d))])
        );
        assert_eq!(
            event_err(&agile(&t, &[crtm, loc(3)])),
            Malformed::StartupLocalityLate
        );
        assert_eq!(
            event_err(&agile(&t, &[loc(3), loc(0)])),
            Malformed::StartupLocalityLate
        );
        let mut long = STARTUP_LOCALITY_SIGNATURE.to_vec();
        long.extend_from_slice(&[3, 3]);
        assert_eq!(
            event_err(&agile(&t, &[event2(0, EV_NO_ACTION, &zero(), &long)])),
            Malformed::StartupLocalitySize(18)
        );
    }

    #[test]
    fn event_count_is_capped() {
        let one = legacy_event(1, EV_IPL, &[0; 20], b"");
        let log = one.repeat(MAX_EVENTS + 1);
        assert_eq!(
            parse(&log).unwrap_err(),
            EventLogError::TooManyEvents { max: MAX_EVENTS }
        );
        assert_eq!(parse(&one.repeat(MAX_EVENTS)).unwrap().events.len(), MAX_EVENTS);
    }

    #[test]
    fn event_type_names() {
        assert_eq!(event_type_name(EV_POST_CODE), Some("EV_POST_CODE"));
        assert_eq!(
            event_type_name(0x8000_0001),
            Some("EV_EFI_VARIABLE_DRIVER_CONFIG")
        );
        assert_eq!(event_type_name(0x1234), None);
    }

    #[test]
    fn uefi_variable_rejects_bad_lengths() {
        let mut v = EFI_GLOBAL_VARIABLE.to_vec();
        v.extend_from_slice(&u64::MAX.to_le_bytes());
        v.extend_from_slice(&1u64.to_le_bytes());
        assert_eq!(UefiVariable::parse(&v), Err("UnicodeNameLength too large"));
        let mut v = EFI_GLOBAL_VARIABLE.to_vec();
        v.extend_from_slice(&1u64.to_le_bytes());
        v.extend_from_slice(&(1u64 << 40).to_le_bytes());
        v.extend_from_slice(&[b'A', 0]);
        assert_eq!(UefiVariable::parse(&v), Err("VariableData truncated"));
    }
}
