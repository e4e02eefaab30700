//! TPM 2.0 structures for quote verification: TPMS_ATTEST (quotes only), TPMT_SIGNATURE,
//! TPMT_PUBLIC / TPM2B_PUBLIC (RSA and ECC keys), and the PCR file `tpm2_quote -o` writes.
//!
//! TPM structures are big-endian (TPM 2.0 Part 2). The PCR file is not: tpm2-tools 5.x
//! dumps its C structs in host layout (little-endian on every platform it ships for):
//!
//! ```text
//! TPML_PCR_SELECTION   u32 count, then 16 x TPMS_PCR_SELECTION of 8 bytes each
//!                      (u16 hash, u8 sizeofSelect, u8 pcrSelect[4], u8 padding)   132 bytes
//! u32 n                number of TPML_DIGEST that follow (one per TPM2_PCR_Read)
//! n x TPML_DIGEST      u32 count (<= 8), then 8 x TPM2B_DIGEST (u16 size, u8 buffer[64]) 532 bytes
//! ```
//!
//! The digests, in order, are the selected PCRs in selection order (bank by bank, PCR
//! index ascending); Keylime reads the file the same way. Confirmed with tpm2-tools 5.4
//! against swtpm 0.7.

use crate::alg::HashAlg;
use crate::reader::{Reader, Truncated};
use thiserror::Error;

/// TPM_GENERATED_VALUE: every structure the TPM signs starts with it.
pub const TPM_GENERATED_VALUE: u32 = 0xff54_4347;
/// TPM_ST_ATTEST_QUOTE.
pub const TPM_ST_ATTEST_QUOTE: u16 = 0x8018;
/// Most PCR banks in one selection (TPM2_NUM_PCR_BANKS in the TSS headers).
pub const MAX_PCR_BANKS: usize = 16;
/// Most bytes in a pcrSelect bitmap: 32 PCRs.
pub const PCR_SELECT_MAX: usize = 4;
/// Largest TPMU_HA (SHA-512): bound for TPM2B_DIGEST.
pub const MAX_DIGEST: usize = 64;
/// TPM2B_NAME / TPM2B_DATA bound: sizeof(TPMT_HA).
pub const MAX_NAME: usize = 2 + MAX_DIGEST;
/// Largest RSA modulus accepted (4096 bits; the TPM's MAX_RSA_KEY_BYTES is 512).
pub const MAX_RSA_BYTES: usize = 512;
/// Largest ECC coordinate for any curve a TPM defines (P-521 rounds to 66 bytes).
pub const MAX_ECC_BYTES: usize = 66;
/// Most digests in one TPML_DIGEST.
pub const PCR_FILE_DIGESTS_PER_LIST: usize = 8;

const ALG_NULL: u16 = 0x0010;
const ALG_RSA: u16 = 0x0001;
const ALG_ECC: u16 = 0x0023;
const ALG_RSASSA: u16 = 0x0014;
const ALG_RSAES: u16 = 0x0015;
const ALG_RSAPSS: u16 = 0x0016;
const ALG_OAEP: u16 = 0x0017;
const ALG_ECDSA: u16 = 0x0018;
const ALG_ECDH: u16 = 0x0019;
const ALG_ECDAA: u16 = 0x001A;
const ALG_SM2: u16 = 0x001B;
const ALG_ECSCHNORR: u16 = 0x001C;
const ALG_ECMQV: u16 = 0x001D;
const ECC_NIST_P256: u16 = 0x0003;
const ECC_NIST_P384: u16 = 0x0004;

/// Size of the fixed part of the PCR file before the digest lists.
const PCR_FILE_SELECTION_LEN: usize = 4 + MAX_PCR_BANKS * 8;
const PCR_FILE_DIGEST_LIST_LEN: usize = 4 + PCR_FILE_DIGESTS_PER_LIST * (2 + MAX_DIGEST);
/// 16 banks x 32 PCRs, 8 per list.
const PCR_FILE_MAX_LISTS: usize = MAX_PCR_BANKS * 32 / PCR_FILE_DIGESTS_PER_LIST;

/// Why TPM bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TpmError {
    #[error(transparent)]
    Truncated(#[from] Truncated),
    #[error("magic {0:#010x} is not TPM_GENERATED_VALUE (0xff544347)")]
    BadMagic(u32),
    #[error("attestation type {0:#06x} is not TPM_ST_ATTEST_QUOTE (0x8018)")]
    NotQuote(u16),
    #[error("{0} trailing bytes after the structure")]
    TrailingBytes(usize),
    #[error("{field}: hash algorithm {alg:#06x} is not supported")]
    UnsupportedHash { field: &'static str, alg: u16 },
    #[error("{field}: {len} bytes, at most {max} allowed")]
    TooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{field}: {len} bytes, expected {expected}")]
    WrongLength {
        field: &'static str,
        len: usize,
        expected: usize,
    },
    #[error("{field}: {count} PCR banks selected, at most {MAX_PCR_BANKS}")]
    TooManyBanks { field: &'static str, count: u32 },
    #[error("{field}: sizeofSelect {size}, at most {PCR_SELECT_MAX}")]
    BadSizeofSelect { field: &'static str, size: u8 },
    #[error("{field}: bank {bank} selected twice")]
    DuplicateBank { field: &'static str, bank: &'static str },
    #[error("clockInfo.safe is {0}, not 0 or 1")]
    BadYesNo(u8),
    #[error("signature algorithm {0:#06x} is not RSASSA, RSAPSS or ECDSA")]
    UnsupportedSignatureAlg(u16),
    #[error("key type {0:#06x} is not RSA or ECC")]
    UnsupportedKeyType(u16),
    #[error("{field}: algorithm {alg:#06x} is not supported")]
    UnsupportedAlg { field: &'static str, alg: u16 },
    #[error("ECC curve {0:#06x} is not NIST P-256 or P-384")]
    UnsupportedCurve(u16),
    #[error("RSA keyBits {key_bits} does not match a {modulus_len}-byte modulus")]
    KeyBitsMismatch { key_bits: u16, modulus_len: usize },
    #[error("TPM2B_PUBLIC size {declared} does not match the {actual} bytes of TPMT_PUBLIC")]
    PublicSizeMismatch { declared: usize, actual: usize },
    #[error("PCR file: {0}")]
    PcrFile(String),
    #[error("key blob: {0}")]
    KeyBlob(&'static str),
}

/// One bank of a TPML_PCR_SELECTION: the bank and its selected PCR indices, ascending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrSelection {
    pub bank: HashAlg,
    pub pcrs: Vec<u32>,
}

/// TPMS_CLOCK_INFO.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockInfo {
    pub clock: u64,
    pub reset_count: u32,
    pub restart_count: u32,
    pub safe: bool,
}

/// A TPMS_ATTEST of type TPM_ST_ATTEST_QUOTE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attest {
    pub qualified_signer: Vec<u8>,
    pub extra_data: Vec<u8>,
    pub clock_info: ClockInfo,
    pub firmware_version: u64,
    pub pcr_select: Vec<PcrSelection>,
    pub pcr_digest: Vec<u8>,
}

/// Number of selected PCRs over all banks.
pub fn selection_len(sel: &[PcrSelection]) -> usize {
    sel.iter().map(|s| s.pcrs.len()).sum()
}

fn hash_alg(r: &mut Reader<'_>, field: &'static str) -> Result<HashAlg, TpmError> {
    let alg = r.u16_be(field)?;
    HashAlg::from_tpm_alg_id(alg).ok_or(TpmError::UnsupportedHash { field, alg })
}

fn bounded_tpm2b<'a>(r: &mut Reader<'a>, field: &'static str, max: usize) -> Result<&'a [u8], TpmError> {
    let len = usize::from(r.u16_be(field)?);
    if len > max {
        return Err(TpmError::TooLong { field, len, max });
    }
    Ok(r.take(len, field)?)
}

fn no_trailing(r: &Reader<'_>) -> Result<(), TpmError> {
    if r.is_empty() {
        Ok(())
    } else {
        Err(TpmError::TrailingBytes(r.remaining()))
    }
}

/// PCR indices set in a pcrSelect bitmap (bit i of byte j = PCR 8j+i).
fn bitmap_pcrs(bits: &[u8]) -> Vec<u32> {
    let mut out = Vec::new();
    for (byte_idx, b) in (0u32..).zip(bits) {
        for bit in 0..8u32 {
            if b & (1 << bit) != 0 {
                out.push(byte_idx * 8 + bit);
            }
        }
    }
    out
}

fn check_banks(field: &'static str, sel: &[PcrSelection]) -> Result<(), TpmError> {
    for (i, s) in sel.iter().enumerate() {
        if sel.iter().take(i).any(|p| p.bank == s.bank) {
            return Err(TpmError::DuplicateBank {
                field,
                bank: s.bank.name(),
            });
        }
    }
    Ok(())
}

/// TPML_PCR_SELECTION (big-endian, as inside TPMS_ATTEST).
fn pcr_selection_be(r: &mut Reader<'_>) -> Result<Vec<PcrSelection>, TpmError> {
    const F: &str = "pcrSelect";
    let count = r.u32_be("pcrSelect.count")?;
    if count as usize > MAX_PCR_BANKS {
        return Err(TpmError::TooManyBanks { field: F, count });
    }
    let mut out = Vec::new();
    for _ in 0..count {
        let bank = hash_alg(r, "pcrSelect.hash")?;
        let size = r.u8("pcrSelect.sizeofSelect")?;
        if usize::from(size) > PCR_SELECT_MAX {
            return Err(TpmError::BadSizeofSelect { field: F, size });
        }
        let bits = r.take(usize::from(size), "pcrSelect.pcrSelect")?;
        out.push(PcrSelection {
            bank,
            pcrs: bitmap_pcrs(bits),
        });
    }
    check_banks(F, &out)?;
    Ok(out)
}

/// Parse a TPMS_ATTEST that must be a quote; the whole input, nothing after it.
pub fn parse_attest(bytes: &[u8]) -> Result<Attest, TpmError> {
    let mut r = Reader::new(bytes);
    let magic = r.u32_be("magic")?;
    if magic != TPM_GENERATED_VALUE {
        return Err(TpmError::BadMagic(magic));
    }
    let ty = r.u16_be("type")?;
    if ty != TPM_ST_ATTEST_QUOTE {
        return Err(TpmError::NotQuote(ty));
    }
    let qualified_signer = bounded_tpm2b(&mut r, "qualifiedSigner", MAX_NAME)?.to_vec();
    let extra_data = bounded_tpm2b(&mut r, "extraData", MAX_NAME)?.to_vec();
    let clock = r.u64_be("clockInfo.clock")?;
    let reset_count = r.u32_be("clockInfo.resetCount")?;
    let restart_count = r.u32_be("clockInfo.restartCount")?;
    let safe = match r.u8("clockInfo.safe")? {
        0 => false,
        1 => true,
        v => return Err(TpmError::BadYesNo(v)),
    };
    let firmware_version = r.u64_be("firmwareVersion")?;
    let pcr_select = pcr_selection_be(&mut r)?;
    let pcr_digest = bounded_tpm2b(&mut r, "pcrDigest", MAX_DIGEST)?.to_vec();
    no_trailing(&r)?;
    Ok(Attest {
        qualified_signer,
        extra_data,
        clock_info: ClockInfo {
            clock,
            reset_count,
            restart_count,
            safe,
        },
        firmware_version,
        pcr_select,
        pcr_digest,
    })
}

/// RSA signature padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RsaPadding {
    Pkcs1v15,
    Pss,
}

/// TPMT_SIGNATURE for the schemes a quote can carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signature {
    Rsa {
        padding: RsaPadding,
        hash: HashAlg,
        sig: Vec<u8>,
    },
    Ecdsa {
        hash: HashAlg,
        r: Vec<u8>,
        s: Vec<u8>,
    },
}

impl Signature {
    pub fn hash(&self) -> HashAlg {
        match self {
            Self::Rsa { hash, .. } | Self::Ecdsa { hash, .. } => *hash,
        }
    }

    /// TPM_ALG_ID of the scheme.
    pub fn scheme_alg(&self) -> u16 {
        match self {
            Self::Rsa {
                padding: RsaPadding::Pkcs1v15,
                ..
            } => ALG_RSASSA,
            Self::Rsa {
                padding: RsaPadding::Pss,
                ..
            } => ALG_RSAPSS,
            Self::Ecdsa { .. } => ALG_ECDSA,
        }
    }

    /// `rsassa`, `rsapss` or `ecdsa`.
    pub fn scheme_name(&self) -> &'static str {
        match self {
            Self::Rsa {
                padding: RsaPadding::Pkcs1v15,
                ..
            } => "rsassa",
            Self::Rsa {
                padding: RsaPadding::Pss,
                ..
            } => "rsapss",
            Self::Ecdsa { .. } => "ecdsa",
        }
    }
}

/// Parse a TPMT_SIGNATURE (RSASSA, RSAPSS or ECDSA); the whole input.
pub fn parse_signature(bytes: &[u8]) -> Result<Signature, TpmError> {
    let mut r = Reader::new(bytes);
    let alg = r.u16_be("sigAlg")?;
    let sig = match alg {
        ALG_RSASSA | ALG_RSAPSS => {
            let hash = hash_alg(&mut r, "signature.hash")?;
            let sig = bounded_tpm2b(&mut r, "signature.sig", MAX_RSA_BYTES)?.to_vec();
            let padding = if alg == ALG_RSASSA {
                RsaPadding::Pkcs1v15
            } else {
                RsaPadding::Pss
            };
            Signature::Rsa { padding, hash, sig }
        }
        ALG_ECDSA => {
            let hash = hash_alg(&mut r, "signature.hash")?;
            let sr = bounded_tpm2b(&mut r, "signature.r", MAX_ECC_BYTES)?.to_vec();
            let ss = bounded_tpm2b(&mut r, "signature.s", MAX_ECC_BYTES)?.to_vec();
            Signature::Ecdsa { hash, r: sr, s: ss }
        }
        other => return Err(TpmError::UnsupportedSignatureAlg(other)),
    };
    no_trailing(&r)?;
    Ok(sig)
}

/// An ECC curve Custody verifies with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EccCurve {
    P256,
    P384,
}

impl EccCurve {
    /// Coordinate size in bytes.
    pub fn coord_len(self) -> usize {
        match self {
            Self::P256 => 32,
            Self::P384 => 48,
        }
    }

    pub fn tpm_id(self) -> u16 {
        match self {
            Self::P256 => ECC_NIST_P256,
            Self::P384 => ECC_NIST_P384,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::P256 => "p256",
            Self::P384 => "p384",
        }
    }
}

/// A TPMT_SYM_DEF_OBJECT, TPMT_*_SCHEME or TPMT_KDF_SCHEME as raw algorithm ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlgSpec {
    /// Algorithm (TPM_ALG_NULL = 0x0010 when none).
    pub alg: u16,
    /// Hash of a scheme, or keyBits of a symmetric definition.
    pub detail: Option<u16>,
    /// ECDAA count, or the mode of a symmetric definition.
    pub extra: Option<u16>,
}

impl AlgSpec {
    pub fn is_null(&self) -> bool {
        self.alg == ALG_NULL
    }
}

/// Type-specific part of a TPMT_PUBLIC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    Rsa {
        symmetric: AlgSpec,
        scheme: AlgSpec,
        key_bits: u16,
        /// As stored: 0 means the default 65537.
        exponent: u32,
        modulus: Vec<u8>,
    },
    Ecc {
        symmetric: AlgSpec,
        scheme: AlgSpec,
        curve: EccCurve,
        kdf: AlgSpec,
        x: Vec<u8>,
        y: Vec<u8>,
    },
}

/// objectAttributes bits an attestation key must carry.
pub const ATTR_FIXED_TPM: u32 = 1 << 1;
pub const ATTR_RESTRICTED: u32 = 1 << 16;
pub const ATTR_SIGN: u32 = 1 << 18;

/// A TPMT_PUBLIC for an RSA or ECC key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Public {
    pub name_alg: HashAlg,
    pub object_attributes: u32,
    pub auth_policy: Vec<u8>,
    pub key: PublicKey,
    /// The exact TPMT_PUBLIC bytes, for the Name.
    pub raw: Vec<u8>,
}

/// A public key in the forms aws-lc-rs verifies with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyingKey {
    /// PKCS#1 RSAPublicKey DER.
    Rsa { pkcs1_der: Vec<u8>, bits: usize },
    /// Uncompressed SEC1 point (0x04 || x || y).
    Ec { curve: EccCurve, point: Vec<u8> },
}

fn sym_def(r: &mut Reader<'_>) -> Result<AlgSpec, TpmError> {
    let alg = r.u16_be("parameters.symmetric")?;
    if alg == ALG_NULL {
        return Ok(AlgSpec {
            alg,
            detail: None,
            extra: None,
        });
    }
    // AES, SM4, CAMELLIA: keyBits then mode.
    match alg {
        0x0006 | 0x0013 | 0x0026 => {
            let bits = r.u16_be("parameters.symmetric.keyBits")?;
            let mode = r.u16_be("parameters.symmetric.mode")?;
            Ok(AlgSpec {
                alg,
                detail: Some(bits),
                extra: Some(mode),
            })
        }
        _ => Err(TpmError::UnsupportedAlg {
            field: "parameters.symmetric",
            alg,
        }),
    }
}

fn scheme(r: &mut Reader<'_>, allowed: &[u16]) -> Result<AlgSpec, TpmError> {
    let alg = r.u16_be("parameters.scheme")?;
    if alg == ALG_NULL || alg == ALG_RSAES {
        // TPMS_ENC_SCHEME_RSAES is empty.
        return Ok(AlgSpec {
            alg,
            detail: None,
            extra: None,
        });
    }
    if !allowed.contains(&alg) {
        return Err(TpmError::UnsupportedAlg {
            field: "parameters.scheme",
            alg,
        });
    }
    let hash = r.u16_be("parameters.scheme.hashAlg")?;
    let extra = if alg == ALG_ECDAA {
        Some(r.u16_be("parameters.scheme.count")?)
    } else {
        None
    };
    Ok(AlgSpec {
        alg,
        detail: Some(hash),
        extra,
    })
}

fn kdf(r: &mut Reader<'_>) -> Result<AlgSpec, TpmError> {
    let alg = r.u16_be("parameters.kdf")?;
    match alg {
        ALG_NULL => Ok(AlgSpec {
            alg,
            detail: None,
            extra: None,
        }),
        // MGF1, KDF1_SP800_56A, KDF2, KDF1_SP800_108
        0x0007 | 0x0020..=0x0022 => Ok(AlgSpec {
            alg,
            detail: Some(r.u16_be("parameters.kdf.hashAlg")?),
            extra: None,
        }),
        _ => Err(TpmError::UnsupportedAlg {
            field: "parameters.kdf",
            alg,
        }),
    }
}

/// Parse a TPMT_PUBLIC (RSA or ECC); the whole input.
pub fn parse_public(bytes: &[u8]) -> Result<Public, TpmError> {
    let mut r = Reader::new(bytes);
    let ty = r.u16_be("type")?;
    if ty != ALG_RSA && ty != ALG_ECC {
        return Err(TpmError::UnsupportedKeyType(ty));
    }
    let name_alg = hash_alg(&mut r, "nameAlg")?;
    let object_attributes = r.u32_be("objectAttributes")?;
    let auth_policy = bounded_tpm2b(&mut r, "authPolicy", MAX_DIGEST)?.to_vec();
    let key = if ty == ALG_RSA {
        let symmetric = sym_def(&mut r)?;
        let scheme = scheme(&mut r, &[ALG_RSASSA, ALG_RSAPSS, ALG_OAEP])?;
        let key_bits = r.u16_be("parameters.keyBits")?;
        let exponent = r.u32_be("parameters.exponent")?;
        let modulus = bounded_tpm2b(&mut r, "unique.rsa", MAX_RSA_BYTES)?.to_vec();
        if usize::from(key_bits) != modulus.len() * 8 {
            return Err(TpmError::KeyBitsMismatch {
                key_bits,
                modulus_len: modulus.len(),
            });
        }
        PublicKey::Rsa {
            symmetric,
            scheme,
            key_bits,
            exponent,
            modulus,
        }
    } else {
        let symmetric = sym_def(&mut r)?;
        let scheme = scheme(
            &mut r,
            &[ALG_ECDSA, ALG_ECDH, ALG_ECDAA, ALG_SM2, ALG_ECSCHNORR, ALG_ECMQV],
        )?;
        let curve = match r.u16_be("parameters.curveID")? {
            ECC_NIST_P256 => EccCurve::P256,
            ECC_NIST_P384 => EccCurve::P384,
            other => return Err(TpmError::UnsupportedCurve(other)),
        };
        let kdf = kdf(&mut r)?;
        let x = bounded_tpm2b(&mut r, "unique.ecc.x", MAX_ECC_BYTES)?.to_vec();
        let y = bounded_tpm2b(&mut r, "unique.ecc.y", MAX_ECC_BYTES)?.to_vec();
        for (field, c) in [("unique.ecc.x", &x), ("unique.ecc.y", &y)] {
            if c.len() != curve.coord_len() {
                return Err(TpmError::WrongLength {
                    field,
                    len: c.len(),
                    expected: curve.coord_len(),
                });
            }
        }
        PublicKey::Ecc {
            symmetric,
            scheme,
            curve,
            kdf,
            x,
            y,
        }
    };
    no_trailing(&r)?;
    Ok(Public {
        name_alg,
        object_attributes,
        auth_policy,
        key,
        raw: bytes.to_vec(),
    })
}

/// Parse a TPM2B_PUBLIC: its size must equal the TPMT_PUBLIC that follows, exactly.
pub fn parse_public_2b(bytes: &[u8]) -> Result<Public, TpmError> {
    let mut r = Reader::new(bytes);
    let size = usize::from(r.u16_be("size")?);
    let rest = r.rest();
    if size != rest.len() {
        return Err(TpmError::PublicSizeMismatch {
            declared: size,
            actual: rest.len(),
        });
    }
    parse_public(rest)
}

impl Public {
    /// The TPM Name: nameAlg (big-endian) || H_nameAlg(TPMT_PUBLIC).
    pub fn name(&self) -> Vec<u8> {
        let mut n = self.name_alg.tpm_alg_id().to_be_bytes().to_vec();
        n.extend(self.name_alg.hash(&[&self.raw]));
        n
    }

    /// The key's signing scheme (TPM_ALG_NULL when the key leaves it to the caller).
    pub fn scheme(&self) -> AlgSpec {
        match &self.key {
            PublicKey::Rsa { scheme, .. } | PublicKey::Ecc { scheme, .. } => *scheme,
        }
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        match &self.key {
            PublicKey::Rsa {
                exponent, modulus, ..
            } => {
                let e = if *exponent == 0 { 65537 } else { *exponent };
                VerifyingKey::Rsa {
                    pkcs1_der: der::rsa_public_key(modulus, &e.to_be_bytes()),
                    bits: modulus.len() * 8,
                }
            }
            PublicKey::Ecc { curve, x, y, .. } => {
                let mut point = Vec::with_capacity(1 + x.len() + y.len());
                point.push(0x04);
                point.extend_from_slice(x);
                point.extend_from_slice(y);
                VerifyingKey::Ec { curve: *curve, point }
            }
        }
    }
}

impl VerifyingKey {
    /// DER SubjectPublicKeyInfo, so a key given as TPMT_PUBLIC and as PEM fingerprint alike.
    pub fn spki_der(&self) -> Vec<u8> {
        match self {
            Self::Rsa { pkcs1_der, .. } => der::spki(der::RSA_ALG_ID, pkcs1_der),
            Self::Ec { curve, point } => {
                let alg = match curve {
                    EccCurve::P256 => der::EC_P256_ALG_ID,
                    EccCurve::P384 => der::EC_P384_ALG_ID,
                };
                der::spki(alg, point)
            }
        }
    }
}

/// Just enough DER writing for public keys and ECDSA signatures.
pub mod der {
    /// AlgorithmIdentifier { rsaEncryption, NULL }.
    pub const RSA_ALG_ID: &[u8] = &[
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    /// AlgorithmIdentifier { id-ecPublicKey, prime256v1 }.
    pub const EC_P256_ALG_ID: &[u8] = &[
        0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce,
        0x3d, 0x03, 0x01, 0x07,
    ];
    /// AlgorithmIdentifier { id-ecPublicKey, secp384r1 }.
    pub const EC_P384_ALG_ID: &[u8] = &[
        0x30, 0x10, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x05, 0x2b, 0x81, 0x04, 0x00,
        0x22,
    ];

    pub fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let n = content.len();
        if n < 0x80 {
            out.push(n as u8);
        } else {
            let be = n.to_be_bytes();
            let skip = be.iter().take_while(|&&b| b == 0).count();
            let len_bytes = be.get(skip..).unwrap_or_default();
            out.push(0x80 | len_bytes.len() as u8);
            out.extend_from_slice(len_bytes);
        }
        out.extend_from_slice(content);
        out
    }

    /// INTEGER from an unsigned big-endian magnitude (minimal encoding).
    pub fn uint(be: &[u8]) -> Vec<u8> {
        let skip = be.iter().take_while(|&&b| b == 0).count();
        let mag = be.get(skip..).unwrap_or_default();
        let mut c = Vec::with_capacity(mag.len() + 1);
        if mag.first().is_none_or(|&b| b & 0x80 != 0) {
            c.push(0);
        }
        c.extend_from_slice(mag);
        tlv(0x02, &c)
    }

    /// PKCS#1 RSAPublicKey.
    pub fn rsa_public_key(n: &[u8], e: &[u8]) -> Vec<u8> {
        let mut c = uint(n);
        c.extend(uint(e));
        tlv(0x30, &c)
    }

    /// ECDSA-Sig-Value { r, s }.
    pub fn ecdsa_sig(r: &[u8], s: &[u8]) -> Vec<u8> {
        let mut c = uint(r);
        c.extend(uint(s));
        tlv(0x30, &c)
    }

    pub fn spki(alg_id: &[u8], key: &[u8]) -> Vec<u8> {
        let mut bits = vec![0u8];
        bits.extend_from_slice(key);
        let mut c = alg_id.to_vec();
        c.extend(tlv(0x03, &bits));
        tlv(0x30, &c)
    }
}

/// PCR values as `tpm2_quote -o` writes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrFile {
    pub selection: Vec<PcrSelection>,
    /// (bank, PCR index, value) in selection order.
    pub values: Vec<(HashAlg, u32, Vec<u8>)>,
}

impl PcrFile {
    /// PCR values as text lines `INDEX HEX` (one bank, told by the digest length), as cloud
    /// tools (Azure's, go-tpm-tools') print them; blank lines are skipped. Strict: PCRs
    /// 0-23, each once, all of one bank. Fuzzed (`tpm_pcrs`).
    pub fn from_text(text: &str) -> Result<Self, TpmError> {
        let bad = |m: String| TpmError::PcrFile(m);
        let mut values: Vec<(HashAlg, u32, Vec<u8>)> = Vec::new();
        let mut bank = None;
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if values.len() >= 24 {
                return Err(bad("more than 24 PCR lines".into()));
            }
            let mut parts = line.split_whitespace();
            let (Some(i), Some(h), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(bad("a line is not `INDEX HEX`".into()));
            };
            let i: u32 = i
                .parse()
                .ok()
                .filter(|i| *i <= 23)
                .ok_or_else(|| bad("a PCR index is not 0-23".into()))?;
            let v = hex::decode(h).map_err(|_| bad(format!("PCR {i}: not hex")))?;
            let b = HashAlg::ALL
                .into_iter()
                .find(|b| b.digest_len() == v.len())
                .ok_or_else(|| bad(format!("PCR {i}: {} bytes is no bank's digest", v.len())))?;
            if *bank.get_or_insert(b) != b {
                return Err(bad(format!("PCR {i}: banks mixed in one file")));
            }
            if values.iter().any(|(_, j, _)| *j == i) {
                return Err(bad(format!("PCR {i} twice")));
            }
            values.push((b, i, v));
        }
        let bank = bank.ok_or_else(|| bad("no PCR lines".into()))?;
        values.sort_by_key(|(_, i, _)| *i);
        Ok(PcrFile {
            selection: vec![PcrSelection {
                bank,
                pcrs: values.iter().map(|(_, i, _)| *i).collect(),
            }],
            values,
        })
    }

    pub fn get(&self, bank: HashAlg, pcr: u32) -> Option<&[u8]> {
        self.values
            .iter()
            .find(|(b, i, _)| *b == bank && *i == pcr)
            .map(|(_, _, v)| v.as_slice())
    }

    /// Encode in tpm2-tools' layout (8 digests per list), e.g. for tests and the agent.
    pub fn to_bytes(&self) -> Result<Vec<u8>, TpmError> {
        let bad = |m: &str| TpmError::PcrFile(m.to_owned());
        if self.selection.len() > MAX_PCR_BANKS {
            return Err(bad("too many banks"));
        }
        let mut out = Vec::new();
        out.extend((self.selection.len() as u32).to_le_bytes());
        for i in 0..MAX_PCR_BANKS {
            let mut entry = [0u8; 8];
            if let Some(s) = self.selection.get(i) {
                let mut bits = [0u8; PCR_SELECT_MAX];
                for &p in &s.pcrs {
                    let slot = bits
                        .get_mut((p / 8) as usize)
                        .ok_or_else(|| bad("PCR index above 31"))?;
                    *slot |= 1 << (p % 8);
                }
                let [h0, h1] = s.bank.tpm_alg_id().to_le_bytes();
                let [b0, b1, b2, b3] = bits;
                // tpm2-tools writes 3 (24 PCRs); PCRs 24..31 need the fourth byte.
                let size = if b3 != 0 { 4 } else { 3 };
                entry = [h0, h1, size, b0, b1, b2, b3, 0];
            }
            out.extend(entry);
        }
        let lists: Vec<_> = self.values.chunks(PCR_FILE_DIGESTS_PER_LIST).collect();
        out.extend((lists.len() as u32).to_le_bytes());
        for list in lists {
            out.extend((list.len() as u32).to_le_bytes());
            for i in 0..PCR_FILE_DIGESTS_PER_LIST {
                let mut d = Vec::with_capacity(2 + MAX_DIGEST);
                if let Some((_, _, v)) = list.get(i) {
                    if v.len() > MAX_DIGEST {
                        return Err(bad("digest longer than 64 bytes"));
                    }
                    d.extend((v.len() as u16).to_le_bytes());
                    d.extend_from_slice(v);
                }
                d.resize(2 + MAX_DIGEST, 0);
                out.extend(d);
            }
        }
        Ok(out)
    }
}

/// Parse the PCR file `tpm2_quote -o` writes (tpm2-tools 5.x "values" format).
pub fn parse_pcr_file(bytes: &[u8]) -> Result<PcrFile, TpmError> {
    let bad = |m: String| TpmError::PcrFile(m);
    let mut r = Reader::new(bytes);
    let count = r.u32_le("pcrs.selection.count")?;
    if count as usize > MAX_PCR_BANKS {
        return Err(TpmError::TooManyBanks {
            field: "pcrs.selection",
            count,
        });
    }
    let mut selection = Vec::new();
    for i in 0..MAX_PCR_BANKS {
        let alg = r.u16_le("pcrs.selection.hash")?;
        let size = r.u8("pcrs.selection.sizeofSelect")?;
        let bits: [u8; PCR_SELECT_MAX] = r.array("pcrs.selection.pcrSelect")?;
        let _padding = r.u8("pcrs.selection.padding")?;
        // Entries past `count` are unused struct space.
        if i >= count as usize {
            continue;
        }
        let bank = HashAlg::from_tpm_alg_id(alg).ok_or(TpmError::UnsupportedHash {
            field: "pcrs.selection.hash",
            alg,
        })?;
        if usize::from(size) > PCR_SELECT_MAX {
            return Err(TpmError::BadSizeofSelect {
                field: "pcrs.selection",
                size,
            });
        }
        let used = bits.get(..usize::from(size)).unwrap_or_default();
        selection.push(PcrSelection {
            bank,
            pcrs: bitmap_pcrs(used),
        });
    }
    check_banks("pcrs.selection", &selection)?;

    let lists = r.u32_le("pcrs.digests.count")? as usize;
    if lists > PCR_FILE_MAX_LISTS {
        return Err(bad(format!("{lists} digest lists, at most {PCR_FILE_MAX_LISTS}")));
    }
    let expected_len = PCR_FILE_SELECTION_LEN + 4 + lists * PCR_FILE_DIGEST_LIST_LEN;
    if bytes.len() != expected_len {
        return Err(TpmError::WrongLength {
            field: "pcr file",
            len: bytes.len(),
            expected: expected_len,
        });
    }
    let mut digests: Vec<&[u8]> = Vec::new();
    for l in 0..lists {
        let n = r.u32_le("pcrs.digests.list.count")? as usize;
        if n > PCR_FILE_DIGESTS_PER_LIST {
            return Err(bad(format!(
                "digest list {l} has {n} entries, at most {PCR_FILE_DIGESTS_PER_LIST}"
            )));
        }
        for i in 0..PCR_FILE_DIGESTS_PER_LIST {
            let size = usize::from(r.u16_le("pcrs.digest.size")?);
            let buf = r.take(MAX_DIGEST, "pcrs.digest.buffer")?;
            if i >= n {
                continue;
            }
            let v = buf.get(..size).ok_or(TpmError::TooLong {
                field: "pcrs.digest",
                len: size,
                max: MAX_DIGEST,
            })?;
            digests.push(v);
        }
    }
    no_trailing(&r)?;

    let want = selection_len(&selection);
    if digests.len() != want {
        return Err(bad(format!(
            "{} PCR values for {want} selected PCRs",
            digests.len()
        )));
    }
    let mut values = Vec::with_capacity(want);
    let mut it = digests.into_iter();
    for s in &selection {
        for &p in &s.pcrs {
            let v = it
                .next()
                .ok_or_else(|| bad("fewer values than selected PCRs".into()))?;
            if v.len() != s.bank.digest_len() {
                return Err(bad(format!(
                    "{}:{p} value is {} bytes, the bank needs {}",
                    s.bank.name(),
                    v.len(),
                    s.bank.digest_len()
                )));
            }
            values.push((s.bank, p, v.to_vec()));
        }
    }
    Ok(PcrFile { selection, values })
}

/// pcrDigest as TPM2_Quote computes it: H over the selected PCR values in selection order.
/// `None` when a selected PCR has no value.
pub fn pcr_digest(
    hash: HashAlg,
    selection: &[PcrSelection],
    value: impl Fn(HashAlg, u32) -> Option<Vec<u8>>,
) -> Option<Vec<u8>> {
    let mut parts = Vec::with_capacity(selection_len(selection));
    for s in selection {
        for &p in &s.pcrs {
            parts.push(value(s.bank, p)?);
        }
    }
    let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    Some(hash.hash(&refs))
}

/// A key the TPM created and wrapped, as the agent keeps its attestation key between
/// starts: the key's TPMT_PUBLIC and the contents of its TPM2B_PRIVATE. The private part
/// is encrypted and integrity-protected by the TPM under the key's parent (the EK), so
/// only the TPM that created it can load it; the file needs no secrecy of its own, but a
/// changed public part is caught when the TPM refuses the load.
///
/// Layout: [`KEY_BLOB_MAGIC`], then the public area and the private contents, each as a
/// big-endian u16 size and that many bytes, and nothing after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyBlob {
    /// TPMT_PUBLIC, marshalled.
    pub public: Vec<u8>,
    /// TPM2B_PRIVATE contents (without the size).
    pub private: Vec<u8>,
}

/// The first bytes of a [`KeyBlob`] file.
pub const KEY_BLOB_MAGIC: &[u8; 16] = b"custody-tpm-key1";
/// TPM2B_PRIVATE holds at most sizeof(_PRIVATE): under 1.5 KiB for every key type the
/// reference implementation supports.
const KEY_BLOB_PRIVATE_MAX: usize = 2048;

impl KeyBlob {
    pub fn to_bytes(&self) -> Result<Vec<u8>, TpmError> {
        let public_len =
            u16::try_from(self.public.len()).map_err(|_| TpmError::KeyBlob("public area too long"))?;
        if self.private.len() > KEY_BLOB_PRIVATE_MAX {
            return Err(TpmError::TooLong {
                field: "key_blob.private",
                len: self.private.len(),
                max: KEY_BLOB_PRIVATE_MAX,
            });
        }
        let private_len =
            u16::try_from(self.private.len()).map_err(|_| TpmError::KeyBlob("private too long"))?;
        let mut out = Vec::with_capacity(KEY_BLOB_MAGIC.len() + 4 + self.public.len() + self.private.len());
        out.extend_from_slice(KEY_BLOB_MAGIC);
        out.extend(public_len.to_be_bytes());
        out.extend_from_slice(&self.public);
        out.extend(private_len.to_be_bytes());
        out.extend_from_slice(&self.private);
        Ok(out)
    }

    /// The parsed public area, e.g. to check it is the key expected.
    pub fn public_key(&self) -> Result<Public, TpmError> {
        parse_public(&self.public)
    }
}

/// Parse a [`KeyBlob`] file. The public area must parse as a TPMT_PUBLIC this crate
/// knows; the private part is opaque (only the TPM can read it) but must be non-empty
/// and within TPM2B_PRIVATE's size.
pub fn parse_key_blob(bytes: &[u8]) -> Result<KeyBlob, TpmError> {
    let mut r = Reader::new(bytes);
    if r.take(KEY_BLOB_MAGIC.len(), "key_blob.magic")? != KEY_BLOB_MAGIC {
        return Err(TpmError::KeyBlob("not a custody TPM key blob (magic)"));
    }
    let public = r.tpm2b("key_blob.public")?;
    parse_public(public)?;
    let private = r.tpm2b("key_blob.private")?;
    if private.is_empty() {
        return Err(TpmError::KeyBlob("empty private part"));
    }
    if private.len() > KEY_BLOB_PRIVATE_MAX {
        return Err(TpmError::TooLong {
            field: "key_blob.private",
            len: private.len(),
            max: KEY_BLOB_PRIVATE_MAX,
        });
    }
    if r.remaining() != 0 {
        return Err(TpmError::TrailingBytes(r.remaining()));
    }
    Ok(KeyBlob {
        public: public.to_vec(),
        private: private.to_vec(),
    })
}

#[cfg(test)]
mod tests;
