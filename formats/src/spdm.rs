//! NVIDIA confidential-GPU attestation reports: an SPDM 1.1 `GET_MEASUREMENTS` request
//! followed by the device's signed `MEASUREMENTS` response (DMTF DSP0274 1.1.x, 10.11).
//!
//! ```text
//! request  (37): SPDMVersion 0x11 | 0xE0 | param1 (bit0: signature) | param2 (operation)
//!                | nonce[32] | SlotIDParam
//! response     : SPDMVersion | 0x60 | param1 | param2 (slot) | NumberOfBlocks u8
//!                | MeasurementRecordLength u24 LE | MeasurementRecord
//!                | Nonce[32] | OpaqueDataLength u16 LE | OpaqueData | Signature[96]
//! ```
//!
//! The signature (ECDSA P-384, r||s big-endian) covers every byte before it. Its offset
//! is found by walking the length fields, never by counting back from the end of the
//! buffer: a report with appended bytes must not shift what is checked. Only zero bytes
//! may follow the signature (some collectors pad); their count is kept.
//!
//! NVIDIA's opaque data is a list of TLVs (`type u16 LE, size u16 LE, value`), optionally
//! behind a 12-byte `NVDAOD` header whose entries carry an extra `value_type u16`. Field
//! ids follow NVIDIA's attestation SDK (`GpuOpaqueDataType`); known fields are decoded to
//! typed values, unknown ones are kept raw.

use crate::reader::{Reader, Truncated};
use thiserror::Error;

/// Length of the GET_MEASUREMENTS request with a signature requested.
pub const REQUEST_LEN: usize = 37;
/// Requester and responder nonce length.
pub const NONCE_LEN: usize = 32;
/// ECDSA P-384 raw r||s.
pub const SIGNATURE_LEN: usize = 96;
/// SPDM 1.1.
pub const SPDM_VERSION_11: u8 = 0x11;
/// Request code GET_MEASUREMENTS.
pub const GET_MEASUREMENTS: u8 = 0xE0;
/// Response code MEASUREMENTS.
pub const MEASUREMENTS: u8 = 0x60;
/// FWID digest length (SHA-384).
pub const FWID_LEN: usize = 48;
/// Magic of the headered opaque-data format.
pub const NVDAOD_MAGIC: &[u8; 6] = b"NVDAOD";
const NVDAOD_HEADER_LEN: usize = 12;

/// NVIDIA's status byte convention (NVDEC0, protected PCIe).
pub const STATUS_ENABLED: u8 = 0xAA;
pub const STATUS_DISABLED: u8 = 0x55;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SpdmError {
    #[error(transparent)]
    Truncated(#[from] Truncated),
    #[error("request SPDMVersion {0:#04x}, expected 0x11 (SPDM 1.1)")]
    RequestVersion(u8),
    #[error("request code {0:#04x}, expected GET_MEASUREMENTS (0xE0)")]
    RequestCode(u8),
    #[error("request param1 {0:#04x} does not ask for a signature")]
    SignatureNotRequested(u8),
    #[error("request param2 0 asks only for a block count; a report needs measurements")]
    CountOnlyRequest,
    #[error("response SPDMVersion {response:#04x} differs from the request's {request:#04x}")]
    ResponseVersion { request: u8, response: u8 },
    #[error("response code {0:#04x}, expected MEASUREMENTS (0x60)")]
    ResponseCode(u8),
    #[error("measurement block at record offset {offset}: {reason}")]
    Block { offset: usize, reason: String },
    #[error("NumberOfBlocks is {declared} but the record holds {found} blocks")]
    BlockCount { declared: u8, found: usize },
    #[error("measurement index {0} appears twice")]
    DuplicateBlock(u8),
    #[error("opaque data at offset {offset}: {reason}")]
    Opaque { offset: usize, reason: String },
    #[error("opaque field {name} ({id}): {reason}")]
    OpaqueField {
        id: u16,
        name: &'static str,
        reason: String,
    },
    #[error("{count} bytes after the signature, not all zero")]
    TrailingData { count: usize },
}

/// The requester's half.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeasurementsRequest {
    pub version: u8,
    /// Bit 0: signature requested.
    pub param1: u8,
    /// Measurement operation (0xFF = all blocks).
    pub param2: u8,
    pub nonce: [u8; NONCE_LEN],
    pub slot_id: u8,
}

/// One DMTF measurement block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeasurementBlock<'a> {
    pub index: u8,
    pub specification: u8,
    /// DMTFSpecMeasurementValueType: bit 7 = raw bit stream, bits 0..6 = what was measured.
    pub value_type: u8,
    pub value: &'a [u8],
}

impl MeasurementBlock<'_> {
    /// The value is a digest (not a raw bit stream).
    pub fn is_digest(&self) -> bool {
        self.value_type & 0x80 == 0
    }
}

/// NVIDIA's status byte (0xAA enabled, 0x55 disabled).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Enabled,
    Disabled,
    Other(u8),
}

impl Status {
    fn from_byte(b: u8) -> Self {
        match b {
            STATUS_ENABLED => Self::Enabled,
            STATUS_DISABLED => Self::Disabled,
            o => Self::Other(o),
        }
    }

    pub fn as_str(&self) -> String {
        match self {
            Self::Enabled => "enabled".into(),
            Self::Disabled => "disabled".into(),
            Self::Other(b) => format!("{b:#04x}"),
        }
    }
}

/// A decoded opaque-data value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpaqueValue<'a> {
    /// NUL-terminated text fields (driver version, SKUs, project, issuer name).
    Text(String),
    /// VBIOS version as NVIDIA prints it (`96.00.5e.00.01`).
    Vbios(String),
    /// Little-endian integers (board id, GPU info, opaque data version, feature flag).
    Int(u64),
    /// SHA-384 firmware id.
    Fwid([u8; FWID_LEN]),
    Status(Status),
    /// Measurement counters (MSRSCNT).
    Counters(Vec<u32>),
    /// Switch PDIs (8 bytes each).
    Pdis(Vec<[u8; 8]>),
    /// Known but opaque, or unknown ids.
    Raw(&'a [u8]),
}

/// One opaque-data entry: id, the raw bytes as signed, and the decoded value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpaqueField<'a> {
    pub id: u16,
    /// `value_type` of the NVDAOD format; `None` in the legacy format.
    pub value_type: Option<u16>,
    pub raw: &'a [u8],
    pub value: OpaqueValue<'a>,
}

impl OpaqueField<'_> {
    pub fn name(&self) -> &'static str {
        field_name(self.id)
    }
}

/// Layout of the opaque data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpaqueFormat {
    Legacy,
    Nvdaod { major: u8, minor: u8 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpaqueData<'a> {
    pub format: OpaqueFormat,
    pub fields: Vec<OpaqueField<'a>>,
}

/// NVIDIA opaque-data field ids (attestation SDK `GpuOpaqueDataType`).
pub mod field {
    pub const CERT_ISSUER_NAME: u16 = 1;
    pub const CERT_AUTHORITY_KEY_IDENTIFIER: u16 = 2;
    pub const DRIVER_VERSION: u16 = 3;
    pub const GPU_INFO: u16 = 4;
    pub const SKU: u16 = 5;
    pub const VBIOS_VERSION: u16 = 6;
    pub const MANUFACTURER_ID: u16 = 7;
    pub const TAMPER_DETECTION: u16 = 8;
    pub const SMC: u16 = 9;
    pub const VPR: u16 = 10;
    pub const NVDEC0_STATUS: u16 = 11;
    pub const MSRSCNT: u16 = 12;
    pub const CPRINFO: u16 = 13;
    pub const BOARD_ID: u16 = 14;
    pub const CHIP_SKU: u16 = 15;
    pub const CHIP_SKU_MOD: u16 = 16;
    pub const PROJECT: u16 = 17;
    pub const PROJECT_SKU: u16 = 18;
    pub const PROJECT_SKU_MOD: u16 = 19;
    pub const FWID: u16 = 20;
    pub const PROTECTED_PCIE_STATUS: u16 = 21;
    pub const SWITCH_PDI: u16 = 22;
    pub const FLOORSWEPT_PORTS: u16 = 23;
    pub const POSITION_ID: u16 = 24;
    pub const LOCK_SWITCH_STATUS: u16 = 25;
    pub const GPU_LINK_CONN: u16 = 32;
    pub const SYS_ENABLE_STATUS: u16 = 33;
    pub const OPAQUE_DATA_VERSION: u16 = 34;
    pub const CHIP_INFO: u16 = 35;
    pub const FEATURE_FLAG: u16 = 36;
}

/// NVIDIA's name for a field id (`UNKNOWN` for ids not in the SDK's list).
pub fn field_name(id: u16) -> &'static str {
    use field::*;
    match id {
        CERT_ISSUER_NAME => "CERT_ISSUER_NAME",
        CERT_AUTHORITY_KEY_IDENTIFIER => "CERT_AUTHORITY_KEY_IDENTIFIER",
        DRIVER_VERSION => "DRIVER_VERSION",
        GPU_INFO => "GPU_INFO",
        SKU => "SKU",
        VBIOS_VERSION => "VBIOS_VERSION",
        MANUFACTURER_ID => "MANUFACTURER_ID",
        TAMPER_DETECTION => "TAMPER_DETECTION",
        SMC => "SMC",
        VPR => "VPR",
        NVDEC0_STATUS => "NVDEC0_STATUS",
        MSRSCNT => "MSRSCNT",
        CPRINFO => "CPRINFO",
        BOARD_ID => "BOARD_ID",
        CHIP_SKU => "CHIP_SKU",
        CHIP_SKU_MOD => "CHIP_SKU_MOD",
        PROJECT => "PROJECT",
        PROJECT_SKU => "PROJECT_SKU",
        PROJECT_SKU_MOD => "PROJECT_SKU_MOD",
        FWID => "FWID",
        PROTECTED_PCIE_STATUS => "PROTECTED_PCIE_STATUS",
        SWITCH_PDI => "SWITCH_PDI",
        FLOORSWEPT_PORTS => "FLOORSWEPT_PORTS",
        POSITION_ID => "POSITION_ID",
        LOCK_SWITCH_STATUS => "LOCK_SWITCH_STATUS",
        GPU_LINK_CONN => "GPU_LINK_CONN",
        SYS_ENABLE_STATUS => "SYS_ENABLE_STATUS",
        OPAQUE_DATA_VERSION => "OPAQUE_DATA_VERSION",
        CHIP_INFO => "CHIP_INFO",
        FEATURE_FLAG => "FEATURE_FLAG",
        _ => "UNKNOWN",
    }
}

impl<'a> OpaqueData<'a> {
    /// First field with this id.
    pub fn get(&self, id: u16) -> Option<&OpaqueField<'a>> {
        self.fields.iter().find(|f| f.id == id)
    }

    fn text(&self, id: u16) -> Option<&str> {
        match self.get(id).map(|f| &f.value) {
            Some(OpaqueValue::Text(s)) => Some(s),
            _ => None,
        }
    }

    fn int(&self, id: u16) -> Option<u64> {
        match self.get(id).map(|f| &f.value) {
            Some(OpaqueValue::Int(v)) => Some(*v),
            _ => None,
        }
    }

    fn status(&self, id: u16) -> Option<Status> {
        match self.get(id).map(|f| &f.value) {
            Some(OpaqueValue::Status(s)) => Some(*s),
            _ => None,
        }
    }

    pub fn driver_version(&self) -> Option<&str> {
        self.text(field::DRIVER_VERSION)
    }

    pub fn vbios_version(&self) -> Option<&str> {
        match self.get(field::VBIOS_VERSION).map(|f| &f.value) {
            Some(OpaqueValue::Vbios(s)) => Some(s),
            _ => None,
        }
    }

    pub fn fwid(&self) -> Option<&[u8; FWID_LEN]> {
        match self.get(field::FWID).map(|f| &f.value) {
            Some(OpaqueValue::Fwid(f)) => Some(f),
            _ => None,
        }
    }

    pub fn gpu_info(&self) -> Option<u64> {
        self.int(field::GPU_INFO)
    }

    pub fn board_id(&self) -> Option<u64> {
        self.int(field::BOARD_ID)
    }

    pub fn chip_sku(&self) -> Option<&str> {
        self.text(field::CHIP_SKU)
    }

    pub fn chip_sku_mod(&self) -> Option<&str> {
        self.text(field::CHIP_SKU_MOD)
    }

    pub fn project(&self) -> Option<&str> {
        self.text(field::PROJECT)
    }

    pub fn project_sku(&self) -> Option<&str> {
        self.text(field::PROJECT_SKU)
    }

    pub fn project_sku_mod(&self) -> Option<&str> {
        self.text(field::PROJECT_SKU_MOD)
    }

    pub fn cert_issuer_name(&self) -> Option<&str> {
        self.text(field::CERT_ISSUER_NAME)
    }

    pub fn nvdec0_status(&self) -> Option<Status> {
        self.status(field::NVDEC0_STATUS)
    }

    pub fn protected_pcie_status(&self) -> Option<Status> {
        self.status(field::PROTECTED_PCIE_STATUS)
    }

    pub fn opaque_data_version(&self) -> Option<u64> {
        self.int(field::OPAQUE_DATA_VERSION)
    }

    pub fn feature_flag(&self) -> Option<u64> {
        self.int(field::FEATURE_FLAG)
    }

    pub fn msrscnt(&self) -> Option<&[u32]> {
        match self.get(field::MSRSCNT).map(|f| &f.value) {
            Some(OpaqueValue::Counters(c)) => Some(c),
            _ => None,
        }
    }
}

/// A parsed report. Borrowed slices point into the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NvidiaReport<'a> {
    pub request: MeasurementsRequest,
    pub response_version: u8,
    pub response_param1: u8,
    /// SlotIDParam of the response.
    pub response_param2: u8,
    pub blocks: Vec<MeasurementBlock<'a>>,
    pub responder_nonce: [u8; NONCE_LEN],
    pub opaque_raw: &'a [u8],
    pub opaque: OpaqueData<'a>,
    /// Every byte before the signature: what the signature covers.
    pub signed: &'a [u8],
    pub signature: [u8; SIGNATURE_LEN],
    /// Zero bytes found after the signature.
    pub trailing_zeros: usize,
}

impl NvidiaReport<'_> {
    /// The requester nonce (where Custody puts the round's binding).
    pub fn nonce(&self) -> &[u8; NONCE_LEN] {
        &self.request.nonce
    }

    /// Block by SPDM index.
    pub fn block(&self, index: u8) -> Option<&MeasurementBlock<'_>> {
        self.blocks.iter().find(|b| b.index == index)
    }
}

/// Parse request||response||signature. Pure; never panics.
pub fn parse(input: &[u8]) -> Result<NvidiaReport<'_>, SpdmError> {
    let mut r = Reader::new(input);

    let version = r.u8("request SPDMVersion")?;
    if version != SPDM_VERSION_11 {
        return Err(SpdmError::RequestVersion(version));
    }
    let code = r.u8("request code")?;
    if code != GET_MEASUREMENTS {
        return Err(SpdmError::RequestCode(code));
    }
    let param1 = r.u8("request param1")?;
    if param1 & 0x01 == 0 {
        return Err(SpdmError::SignatureNotRequested(param1));
    }
    let param2 = r.u8("request param2")?;
    if param2 == 0 {
        return Err(SpdmError::CountOnlyRequest);
    }
    let nonce = r.array::<NONCE_LEN>("request nonce")?;
    let slot_id = r.u8("request SlotIDParam")?;
    let request = MeasurementsRequest {
        version,
        param1,
        param2,
        nonce,
        slot_id,
    };

    let response_version = r.u8("response SPDMVersion")?;
    if response_version != version {
        return Err(SpdmError::ResponseVersion {
            request: version,
            response: response_version,
        });
    }
    let rcode = r.u8("response code")?;
    if rcode != MEASUREMENTS {
        return Err(SpdmError::ResponseCode(rcode));
    }
    let response_param1 = r.u8("response param1")?;
    let response_param2 = r.u8("response param2")?;
    let declared = r.u8("NumberOfBlocks")?;
    let record_len = r.u24_le("MeasurementRecordLength")?;
    let record = r.take(record_len as usize, "MeasurementRecord")?;
    let blocks = parse_record(record, declared)?;
    let responder_nonce = r.array::<NONCE_LEN>("response nonce")?;
    let opaque_len = r.u16_le("OpaqueDataLength")?;
    let opaque_start = r.position();
    let opaque_raw = r.take(usize::from(opaque_len), "OpaqueData")?;
    let opaque = parse_opaque(opaque_raw, opaque_start)?;
    let signed = r.consumed();
    let signature = r.array::<SIGNATURE_LEN>("Signature")?;
    let rest = r.rest();
    if rest.iter().any(|&b| b != 0) {
        return Err(SpdmError::TrailingData { count: rest.len() });
    }
    Ok(NvidiaReport {
        request,
        response_version,
        response_param1,
        response_param2,
        blocks,
        responder_nonce,
        opaque_raw,
        opaque,
        signed,
        signature,
        trailing_zeros: rest.len(),
    })
}

fn parse_record(record: &[u8], declared: u8) -> Result<Vec<MeasurementBlock<'_>>, SpdmError> {
    let mut r = Reader::new(record);
    let mut blocks: Vec<MeasurementBlock<'_>> = Vec::new();
    while !r.is_empty() {
        let offset = r.position();
        let bad = |reason: String| SpdmError::Block { offset, reason };
        let index = r.u8("block Index")?;
        let specification = r.u8("block MeasurementSpecification")?;
        let size = r.u16_le("block MeasurementSize")?;
        let measurement = r.take(usize::from(size), "block Measurement")?;
        if index == 0 || index == 0xFF {
            return Err(bad(format!("index {index} is reserved")));
        }
        // Only the DMTF measurement format (bit 0) is defined for these devices.
        if specification != 0x01 {
            return Err(bad(format!(
                "MeasurementSpecification {specification:#04x}, only DMTF (0x01) is supported"
            )));
        }
        let mut m = Reader::new(measurement);
        let value_type = m.u8("DMTFSpecMeasurementValueType")?;
        let value_size = m.u16_le("DMTFSpecMeasurementValueSize")?;
        let value = m.take(usize::from(value_size), "DMTFSpecMeasurementValue")?;
        if !m.is_empty() {
            return Err(bad(format!(
                "MeasurementSize {size} but the DMTF value needs {}",
                3 + usize::from(value_size)
            )));
        }
        if blocks.iter().any(|b| b.index == index) {
            return Err(SpdmError::DuplicateBlock(index));
        }
        blocks.push(MeasurementBlock {
            index,
            specification,
            value_type,
            value,
        });
    }
    if blocks.len() != usize::from(declared) {
        return Err(SpdmError::BlockCount {
            declared,
            found: blocks.len(),
        });
    }
    Ok(blocks)
}

fn parse_opaque(raw: &[u8], base: usize) -> Result<OpaqueData<'_>, SpdmError> {
    let mut r = Reader::new(raw);
    let headered = raw.len() >= NVDAOD_HEADER_LEN && raw.starts_with(NVDAOD_MAGIC);
    let format = if headered {
        r.take(NVDAOD_MAGIC.len(), "NVDAOD magic")?;
        let profile = r.u16_le("NVDAOD profile")?;
        let major = r.u8("NVDAOD major")?;
        let minor = r.u8("NVDAOD minor")?;
        r.take(2, "NVDAOD reserved")?;
        if profile != 0 {
            return Err(SpdmError::Opaque {
                offset: base + 6,
                reason: format!("NVDAOD profile {profile}, only 0 is defined"),
            });
        }
        OpaqueFormat::Nvdaod { major, minor }
    } else {
        OpaqueFormat::Legacy
    };
    let mut fields = Vec::new();
    while !r.is_empty() {
        let id = r.u16_le("opaque DataType")?;
        let value_type = if headered {
            Some(r.u16_le("opaque DataValueType")?)
        } else {
            None
        };
        let size = r.u16_le("opaque DataSize")?;
        let raw = r.take(usize::from(size), "opaque Data")?;
        let value = decode_field(id, raw)?;
        fields.push(OpaqueField {
            id,
            value_type,
            raw,
            value,
        });
    }
    Ok(OpaqueData { format, fields })
}

fn field_err(id: u16, reason: impl Into<String>) -> SpdmError {
    SpdmError::OpaqueField {
        id,
        name: field_name(id),
        reason: reason.into(),
    }
}

/// Text is NUL-terminated and may be NUL-padded; nothing but NULs may follow the text.
fn decode_text(id: u16, raw: &[u8]) -> Result<String, SpdmError> {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    let (text, pad) = raw.split_at(end);
    if pad.iter().any(|&b| b != 0) {
        return Err(field_err(id, "bytes after the terminating NUL"));
    }
    let s = std::str::from_utf8(text).map_err(|_| field_err(id, "not UTF-8"))?;
    if s.chars().any(char::is_control) {
        return Err(field_err(id, "control characters in text"));
    }
    Ok(s.to_owned())
}

fn decode_le_int(id: u16, raw: &[u8]) -> Result<u64, SpdmError> {
    if raw.is_empty() || raw.len() > 8 {
        return Err(field_err(id, format!("{} bytes, expected 1..=8", raw.len())));
    }
    let mut b = [0u8; 8];
    for (dst, src) in b.iter_mut().zip(raw) {
        *dst = *src;
    }
    Ok(u64::from_le_bytes(b))
}

/// NVIDIA prints the 8-byte VBIOS version as the little-endian value's hex digits, upper
/// half first then the byte below it: `00 5e 00 96 01 00 00 00` -> `96.00.5e.00.01`.
fn decode_vbios(id: u16, raw: &[u8]) -> Result<String, SpdmError> {
    let b: [u8; 8] = raw
        .try_into()
        .map_err(|_| field_err(id, format!("{} bytes, expected 8", raw.len())))?;
    let [b0, b1, b2, b3, b4, ..] = b;
    Ok(format!("{b3:02x}.{b2:02x}.{b1:02x}.{b0:02x}.{b4:02x}"))
}

fn decode_field(id: u16, raw: &[u8]) -> Result<OpaqueValue<'_>, SpdmError> {
    use field::*;
    Ok(match id {
        CERT_ISSUER_NAME | DRIVER_VERSION | CHIP_SKU | CHIP_SKU_MOD | PROJECT | PROJECT_SKU
        | PROJECT_SKU_MOD => OpaqueValue::Text(decode_text(id, raw)?),
        VBIOS_VERSION => OpaqueValue::Vbios(decode_vbios(id, raw)?),
        GPU_INFO | BOARD_ID | OPAQUE_DATA_VERSION | FEATURE_FLAG => OpaqueValue::Int(decode_le_int(id, raw)?),
        FWID => OpaqueValue::Fwid(
            raw.try_into()
                .map_err(|_| field_err(id, format!("{} bytes, expected {FWID_LEN}", raw.len())))?,
        ),
        NVDEC0_STATUS | PROTECTED_PCIE_STATUS => match raw {
            [b] => OpaqueValue::Status(Status::from_byte(*b)),
            _ => return Err(field_err(id, format!("{} bytes, expected 1", raw.len()))),
        },
        MSRSCNT => {
            if !raw.chunks_exact(4).remainder().is_empty() {
                return Err(field_err(id, format!("{} bytes, not a multiple of 4", raw.len())));
            }
            OpaqueValue::Counters(
                raw.chunks_exact(4)
                    .map(|c| {
                        let mut b = [0u8; 4];
                        b.copy_from_slice(c);
                        u32::from_le_bytes(b)
                    })
                    .collect(),
            )
        }
        SWITCH_PDI => {
            if !raw.chunks_exact(8).remainder().is_empty() {
                return Err(field_err(id, format!("{} bytes, not a multiple of 8", raw.len())));
            }
            OpaqueValue::Pdis(
                raw.chunks_exact(8)
                    .map(|c| {
                        let mut b = [0u8; 8];
                        b.copy_from_slice(c);
                        b
                    })
                    .collect(),
            )
        }
        _ => OpaqueValue::Raw(raw),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TV: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/nvidia");

    fn load(name: &str) -> Vec<u8> {
        let s = std::fs::read_to_string(format!("{TV}/{name}")).unwrap();
        hex::decode(s.trim()).unwrap()
    }

    #[test]
    fn hopper_sdk_report() {
        let b = load("sdk-hopperAttestationReport.txt");
        let r = parse(&b).unwrap();
        assert_eq!(
            hex::encode(r.nonce()),
            "27a328247bf7935c993341cf587be6f05986ccce4fe7ba2c54100bd616a58f66"
        );
        assert_eq!(r.request.param2, 0xFF);
        assert_eq!(r.blocks.len(), 64);
        assert!(r.blocks.iter().all(|b| b.value.len() == 48 && b.is_digest()));
        assert_eq!(r.signed.len() + SIGNATURE_LEN, b.len());
        assert_eq!(r.trailing_zeros, 0);
        let o = &r.opaque;
        assert_eq!(o.format, OpaqueFormat::Legacy);
        assert_eq!(o.driver_version(), Some("535.86.09"));
        assert_eq!(o.vbios_version(), Some("96.00.5e.00.01"));
        assert_eq!(o.chip_sku(), Some("882"));
        assert_eq!(o.project(), Some("1010"));
        assert_eq!(o.project_sku(), Some("0200"));
        assert_eq!(o.project_sku_mod(), Some(""));
        assert_eq!(o.board_id(), Some(0x3b1));
        assert_eq!(o.gpu_info(), Some(0x180));
        assert_eq!(o.nvdec0_status(), Some(Status::Disabled));
        // This driver predates the FWID field.
        assert_eq!(o.fwid(), None);
        assert_eq!(o.msrscnt().map(<[u32]>::len), Some(64));
    }

    #[test]
    fn blackwell_sdk_report() {
        let b = load("sdk-blackwellAttestationReport.txt");
        let r = parse(&b).unwrap();
        let o = &r.opaque;
        assert_eq!(o.driver_version(), Some("575.32"));
        assert_eq!(o.vbios_version(), Some("97.00.88.00.0f"));
        assert_eq!(o.gpu_info(), Some(0x1a0));
        assert_eq!(o.project(), Some("G525"));
        assert_eq!(o.opaque_data_version(), Some(0));
        assert_eq!(
            hex::encode(o.fwid().unwrap()),
            "d090cab1b6e6ffddca83d1781e25b3f040fa1f3c7608230cb5f41b1c1b99f5f748349e59d0ef8eb830c9bc79ccf77502"
        );
        // SYS_ENABLE_STATUS is kept raw.
        assert_eq!(
            o.get(field::SYS_ENABLE_STATUS).unwrap().value,
            OpaqueValue::Raw(&[7, 7])
        );
    }

    #[test]
    fn trustee_report_with_trailing_zero() {
        let b = load("trustee-hopper_coco_report1.txt");
        let r = parse(&b).unwrap();
        assert_eq!(r.trailing_zeros, 1);
        assert_eq!(r.signed.len() + SIGNATURE_LEN + 1, b.len());
        assert_eq!(r.opaque.driver_version(), Some("580.95.05"));
        assert_eq!(r.opaque.protected_pcie_status(), Some(Status::Disabled));
        assert_eq!(r.opaque.opaque_data_version(), Some(1));
        assert_eq!(r.opaque.feature_flag(), Some(0));
        // Non-zero trailing data is refused.
        let mut bad = b.clone();
        *bad.last_mut().unwrap() = 1;
        assert_eq!(parse(&bad), Err(SpdmError::TrailingData { count: 1 }));
    }

    #[test]
    fn every_truncation_is_an_error() {
        for name in [
            "sdk-hopperAttestationReport.txt",
            "sdk-blackwellAttestationReport.txt",
            "trustee-hopper_coco_report1.txt",
        ] {
            let b = load(name);
            let full = parse(&b).unwrap();
            let sig_end = full.signed.len() + SIGNATURE_LEN;
            for n in 0..b.len() {
                let res = parse(&b[..n]);
                if n >= sig_end {
                    // Only the trailing zero may be dropped.
                    assert!(res.is_ok(), "{name} cut at {n}");
                } else {
                    assert!(res.is_err(), "{name} cut at {n} parsed");
                }
            }
        }
    }

    #[test]
    fn length_fields_are_checked() {
        let b = load("sdk-hopperAttestationReport.txt");
        // NumberOfBlocks one too many.
        let mut x = b.clone();
        x[REQUEST_LEN + 4] = 65;
        assert_eq!(
            parse(&x),
            Err(SpdmError::BlockCount {
                declared: 65,
                found: 64
            })
        );
        // DMTF value size disagreeing with MeasurementSize.
        let mut x = b.clone();
        x[REQUEST_LEN + 8 + 5] = 47;
        assert!(matches!(parse(&x), Err(SpdmError::Block { offset: 0, .. })));
        // Not a GET_MEASUREMENTS request / response.
        let mut x = b.clone();
        x[1] = 0xE1;
        assert_eq!(parse(&x), Err(SpdmError::RequestCode(0xE1)));
        let mut x = b.clone();
        x[REQUEST_LEN + 1] = 0x61;
        assert_eq!(parse(&x), Err(SpdmError::ResponseCode(0x61)));
        let mut x = b.clone();
        x[2] = 0;
        assert_eq!(parse(&x), Err(SpdmError::SignatureNotRequested(0)));
        // An appended non-zero byte does not move the signature; it is refused.
        let mut x = b.clone();
        x.extend_from_slice(&[0, 0, 7]);
        assert_eq!(parse(&x), Err(SpdmError::TrailingData { count: 3 }));
        assert!(parse(&[]).is_err());
    }

    #[test]
    fn vbios_format_matches_nvidia() {
        assert_eq!(
            decode_vbios(6, &[0x00, 0x5e, 0x00, 0x96, 0x01, 0, 0, 0]).unwrap(),
            "96.00.5e.00.01"
        );
        assert!(decode_vbios(6, &[0; 7]).is_err());
    }

    #[test]
    fn nvdaod_header_is_understood() {
        // header, then one entry: DRIVER_VERSION, value_type 1, "1.2\0"
        let mut o = b"NVDAOD".to_vec();
        o.extend_from_slice(&[0, 0, 2, 0, 0, 0]);
        o.extend_from_slice(&[3, 0, 1, 0, 4, 0, b'1', b'.', b'2', 0]);
        let d = parse_opaque(&o, 0).unwrap();
        assert_eq!(d.format, OpaqueFormat::Nvdaod { major: 2, minor: 0 });
        assert_eq!(d.driver_version(), Some("1.2"));
        assert_eq!(d.fields[0].value_type, Some(1));
        // Unknown profile.
        o[6] = 1;
        assert!(parse_opaque(&o, 0).is_err());
        // Legacy entry overrunning the data.
        assert!(parse_opaque(&[3, 0, 9, 0, b'x'], 0).is_err());
    }
}
