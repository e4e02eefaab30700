//! Intel TDX quotes (DCAP, ECDSA P-256 attestation key), versions 4 and 5: pure parsing,
//! no cryptography. What is signed by whom is for the verifier; this module finds the
//! bytes exactly.
//!
//! ```text
//! header (48)       version u16 (4|5), att_key_type u16 (2: ECDSA P-256), tee_type u32
//!                   (0x81: TDX), qe_svn u16, pce_svn u16, qe_vendor_id [16], user_data [20]
//! v5 only           body_type u16 (2: TD report 1.0, 3: TD report 1.5), body_size u32
//! body              TD report 1.0 (584) or 1.5 (648: + tee_tcb_svn_2 [16], mr_servicetd [48])
//! sig_data_len u32, then that many bytes:
//!   signature [64] (r||s over header||[v5 type,size]||body), attestation_key [64] (x||y),
//!   certification data: type u16 (6: QE report certification data), size u32, then
//!     qe_report [384] (an SGX report body), qe_report_signature [64],
//!     qe_auth_data: size u16, bytes, certification data: type u16 (5: PCK chain PEM), size u32, bytes
//! ```
//! Little-endian throughout. Every length is checked against what remains; bytes after the
//! signature data are accepted only when they are all zero (real quotes carry zero padding
//! up to a fixed buffer size) and their count is reported.

use crate::reader::{Reader, Truncated};
use thiserror::Error;

/// Header length.
pub const HEADER_LEN: usize = 48;
/// TD report body 1.0 and 1.5.
pub const TD10_LEN: usize = 584;
pub const TD15_LEN: usize = 648;
/// An SGX report body (the QE's report).
pub const SGX_REPORT_LEN: usize = 384;
/// TEE type of TDX.
pub const TEE_TDX: u32 = 0x81;
/// Attestation key type ECDSA-256-with-P-256.
pub const ATT_KEY_ECDSA_P256: u16 = 2;
/// Certification data types.
pub const CERT_PCK_CHAIN: u16 = 5;
pub const CERT_QE_REPORT: u16 = 6;
/// Largest quote accepted (real ones are about 5 KiB, padded buffers 8 KiB).
pub const MAX_QUOTE_LEN: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TdxParseError {
    #[error(transparent)]
    Truncated(#[from] Truncated),
    #[error("quote of {0} bytes, more than {MAX_QUOTE_LEN}")]
    TooLarge(usize),
    #[error("quote version {0}, want 4 or 5")]
    Version(u16),
    #[error("attestation key type {0}, want 2 (ECDSA P-256)")]
    AttKeyType(u16),
    #[error("TEE type {0:#x}, want 0x81 (TDX)")]
    TeeType(u32),
    #[error("v5 body type {ty} of {size} bytes, want 2 (TD report 1.0, 584) or 3 (1.5, 648)")]
    BodyType { ty: u16, size: u32 },
    #[error("certification data type {got}, want {want}")]
    CertType { got: u16, want: u16 },
    #[error("{field} declares {declared} bytes but {actual} are there")]
    Length {
        field: &'static str,
        declared: usize,
        actual: usize,
    },
    #[error("{0} non-zero bytes after the signature data")]
    Trailing(usize),
}

/// The TD report body (1.0, and the 1.5 additions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TdReport<'a> {
    pub tee_tcb_svn: [u8; 16],
    pub mr_seam: &'a [u8],
    pub mr_signer_seam: &'a [u8],
    pub seam_attributes: [u8; 8],
    pub td_attributes: [u8; 8],
    pub xfam: [u8; 8],
    pub mr_td: &'a [u8],
    pub mr_config_id: &'a [u8],
    pub mr_owner: &'a [u8],
    pub mr_owner_config: &'a [u8],
    pub rtmr: [&'a [u8]; 4],
    pub report_data: &'a [u8],
    /// TD report 1.5 only.
    pub tee_tcb_svn_2: Option<[u8; 16]>,
    pub mr_servicetd: Option<&'a [u8]>,
}

/// The quoting enclave's SGX report body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QeReport<'a> {
    /// The whole 384 bytes (what the PCK key signed).
    pub raw: &'a [u8],
    pub cpu_svn: [u8; 16],
    pub misc_select: u32,
    pub attributes: [u8; 16],
    pub mr_enclave: &'a [u8],
    pub mr_signer: &'a [u8],
    pub isv_prod_id: u16,
    pub isv_svn: u16,
    pub report_data: &'a [u8],
}

/// A parsed quote, borrowing the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TdxQuote<'a> {
    pub version: u16,
    pub qe_svn: u16,
    pub pce_svn: u16,
    pub qe_vendor_id: [u8; 16],
    pub user_data: &'a [u8],
    pub body: TdReport<'a>,
    /// What the attestation key signed: header, [v5 type and size], body.
    pub signed: &'a [u8],
    /// ECDSA P-256 signature, r||s.
    pub signature: &'a [u8],
    /// The attestation key, x||y (prefix 0x04 for SEC1).
    pub attestation_key: &'a [u8],
    pub qe_report: QeReport<'a>,
    pub qe_report_signature: &'a [u8],
    pub qe_auth_data: &'a [u8],
    /// The PCK certificate chain, PEM, leaf first.
    pub pck_chain_pem: &'a [u8],
    /// Zero bytes after the signature data.
    pub trailing_zeros: usize,
}

fn td_report<'a>(r: &mut Reader<'a>, v15: bool) -> Result<TdReport<'a>, Truncated> {
    Ok(TdReport {
        tee_tcb_svn: r.array("tee_tcb_svn")?,
        mr_seam: r.take(48, "mr_seam")?,
        mr_signer_seam: r.take(48, "mr_signer_seam")?,
        seam_attributes: r.array("seam_attributes")?,
        td_attributes: r.array("td_attributes")?,
        xfam: r.array("xfam")?,
        mr_td: r.take(48, "mr_td")?,
        mr_config_id: r.take(48, "mr_config_id")?,
        mr_owner: r.take(48, "mr_owner")?,
        mr_owner_config: r.take(48, "mr_owner_config")?,
        rtmr: [
            r.take(48, "rtmr0")?,
            r.take(48, "rtmr1")?,
            r.take(48, "rtmr2")?,
            r.take(48, "rtmr3")?,
        ],
        report_data: r.take(64, "report_data")?,
        tee_tcb_svn_2: if v15 {
            Some(r.array("tee_tcb_svn_2")?)
        } else {
            None
        },
        mr_servicetd: if v15 {
            Some(r.take(48, "mr_servicetd")?)
        } else {
            None
        },
    })
}

fn qe_report<'a>(raw: &'a [u8]) -> Result<QeReport<'a>, Truncated> {
    let mut r = Reader::new(raw);
    let cpu_svn = r.array("qe cpu_svn")?;
    let misc_select = r.u32_le("qe misc_select")?;
    r.take(28, "qe reserved1")?;
    let attributes = r.array("qe attributes")?;
    let mr_enclave = r.take(32, "qe mr_enclave")?;
    r.take(32, "qe reserved2")?;
    let mr_signer = r.take(32, "qe mr_signer")?;
    r.take(96, "qe reserved3")?;
    let isv_prod_id = r.u16_le("qe isv_prod_id")?;
    let isv_svn = r.u16_le("qe isv_svn")?;
    r.take(60, "qe reserved4")?;
    let report_data = r.take(64, "qe report_data")?;
    Ok(QeReport {
        raw,
        cpu_svn,
        misc_select,
        attributes,
        mr_enclave,
        mr_signer,
        isv_prod_id,
        isv_svn,
        report_data,
    })
}

/// A length field's bytes: exactly `declared` must remain in `r` for it.
fn sized<'a>(r: &mut Reader<'a>, declared: usize, field: &'static str) -> Result<&'a [u8], TdxParseError> {
    if declared > r.remaining() {
        return Err(TdxParseError::Length {
            field,
            declared,
            actual: r.remaining(),
        });
    }
    Ok(r.take(declared, field)?)
}

impl<'a> TdxQuote<'a> {
    /// Parse a quote (v4 or v5, ECDSA P-256, TDX).
    pub fn parse(input: &'a [u8]) -> Result<Self, TdxParseError> {
        if input.len() > MAX_QUOTE_LEN {
            return Err(TdxParseError::TooLarge(input.len()));
        }
        let mut r = Reader::new(input);
        let version = r.u16_le("version")?;
        if version != 4 && version != 5 {
            return Err(TdxParseError::Version(version));
        }
        let att = r.u16_le("att_key_type")?;
        if att != ATT_KEY_ECDSA_P256 {
            return Err(TdxParseError::AttKeyType(att));
        }
        let tee = r.u32_le("tee_type")?;
        if tee != TEE_TDX {
            return Err(TdxParseError::TeeType(tee));
        }
        let qe_svn = r.u16_le("qe_svn")?;
        let pce_svn = r.u16_le("pce_svn")?;
        let qe_vendor_id = r.array("qe_vendor_id")?;
        let user_data = r.take(20, "user_data")?;
        let v15 = if version == 5 {
            let ty = r.u16_le("body_type")?;
            let size = r.u32_le("body_size")?;
            match (ty, size) {
                (2, 584) => false,
                (3, 648) => true,
                _ => return Err(TdxParseError::BodyType { ty, size }),
            }
        } else {
            false
        };
        let body = td_report(&mut r, v15)?;
        let signed = r.consumed();
        let sig_len = r.u32_le("sig_data_len")? as usize;
        let sig_data = sized(&mut r, sig_len, "sig_data")?;
        // Padding only: anything else after the signature data is refused.
        let rest = r.rest();
        if rest.iter().any(|b| *b != 0) {
            return Err(TdxParseError::Trailing(rest.iter().filter(|b| **b != 0).count()));
        }
        let trailing_zeros = rest.len();

        let mut s = Reader::new(sig_data);
        let signature = s.take(64, "quote signature")?;
        let attestation_key = s.take(64, "attestation key")?;
        let ty = s.u16_le("certification data type")?;
        if ty != CERT_QE_REPORT {
            return Err(TdxParseError::CertType {
                got: ty,
                want: CERT_QE_REPORT,
            });
        }
        let size = s.u32_le("certification data size")? as usize;
        let outer = sized(&mut s, size, "QE report certification data")?;
        if !s.is_empty() {
            return Err(TdxParseError::Length {
                field: "sig_data",
                declared: sig_len,
                actual: sig_len - s.remaining(),
            });
        }
        let mut q = Reader::new(outer);
        let qe_raw = q.take(SGX_REPORT_LEN, "qe report")?;
        let qe_report_signature = q.take(64, "qe report signature")?;
        let auth_len = usize::from(q.u16_le("qe auth data size")?);
        let qe_auth_data = sized(&mut q, auth_len, "qe auth data")?;
        let inner_ty = q.u16_le("pck certification data type")?;
        if inner_ty != CERT_PCK_CHAIN {
            return Err(TdxParseError::CertType {
                got: inner_ty,
                want: CERT_PCK_CHAIN,
            });
        }
        let inner_len = q.u32_le("pck certification data size")? as usize;
        let pck_chain_pem = sized(&mut q, inner_len, "pck chain")?;
        if !q.is_empty() {
            return Err(TdxParseError::Length {
                field: "QE report certification data",
                declared: size,
                actual: size - q.remaining(),
            });
        }
        Ok(Self {
            version,
            qe_svn,
            pce_svn,
            qe_vendor_id,
            user_data,
            body,
            signed,
            signature,
            attestation_key,
            qe_report: qe_report(qe_raw)?,
            qe_report_signature,
            qe_auth_data,
            pck_chain_pem,
            trailing_zeros,
        })
    }
}

#[cfg(test)]
mod tests;
