//! Enrollment: is this AK in a genuine TPM?
//!
//! 1. [`verify_ek`]: the EK certificate (as read from NV 0x01C00002) chains to a configured
//!    TPM manufacturer CA, is valid at the appraisal time, certifies exactly the key of the
//!    EK public area the agent sent, and that area is a restricted decryption key.
//! 2. [`check_ak`]: the AK public area is a restricted signing key that never left its TPM.
//! 3. [`make_credential`]: TPM2_MakeCredential in software (TPM 2.0 Part 1 §24, Part 3
//!    §12.6): a secret that only the TPM holding both the EK and an object with the AK's
//!    Name can recover (TPM2_ActivateCredential). Getting the secret back proves the AK
//!    lives beside the certified EK.
//!
//! Everything is pure: bytes and the appraisal time in, typed results out.

use crate::check::{FailedCheck, UnixTime};
use crate::x509::{verify_chain, ChainError, TrustAnchor, MAX_CHAIN_LEN};
use aws_lc_rs::{agreement, cipher, hmac, rand, rsa};
use custody_formats::alg::HashAlg;
use custody_formats::tpm::{self as tpmfmt, EccCurve, Public, PublicKey, TpmError};
use serde::Serialize;
use thiserror::Error;
use x509_parser::prelude::*;
use x509_parser::public_key::PublicKey as X509Key;

/// Largest EK certificate accepted, padding included (NV indices hold at most a few KiB).
pub const MAX_EK_CERT: usize = 8192;
/// Most candidate paths tried while building the EK chain (bounds the search).
const MAX_PATHS: usize = 32;

/// objectAttributes bits (TPM 2.0 Part 2, TPMA_OBJECT).
pub const ATTR_FIXED_TPM: u32 = 1 << 1;
pub const ATTR_FIXED_PARENT: u32 = 1 << 4;
pub const ATTR_SENSITIVE_DATA_ORIGIN: u32 = 1 << 5;
pub const ATTR_RESTRICTED: u32 = 1 << 16;
pub const ATTR_DECRYPT: u32 = 1 << 17;
pub const ATTR_SIGN: u32 = 1 << 18;

const ALG_AES: u16 = 0x0006;
const ALG_CFB: u16 = 0x0043;

/// Why enrollment refused a node. Each variant names its check.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EnrollError {
    #[error("EK certificate: {0}")]
    EkCertFormat(String),
    #[error("EK public area: {0}")]
    EkPublicFormat(TpmError),
    #[error("EK certificate chain: {0}")]
    EkCertChain(ChainError),
    #[error("EK certificate validity: {0}")]
    EkCertValidity(ChainError),
    #[error("the EK certificate's key is not the EK public area's key: {0}")]
    EkKeyMismatch(String),
    #[error("EK public area: {0}")]
    EkAttributes(String),
    #[error("AK public area: {0}")]
    AkFormat(TpmError),
    #[error("AK public area: {0}")]
    AkAttributes(String),
    #[error("credential: {0}")]
    Credential(String),
}

impl FailedCheck for EnrollError {
    fn check(&self) -> &'static str {
        match self {
            Self::EkCertFormat(_) | Self::EkPublicFormat(_) => "ek_format",
            Self::EkCertChain(_) => "ek_cert_chain",
            Self::EkCertValidity(_) => "ek_cert_validity",
            Self::EkKeyMismatch(_) => "ek_key_match",
            Self::EkAttributes(_) => "ek_attributes",
            Self::AkFormat(_) => "ak_format",
            Self::AkAttributes(_) => "ak_attributes",
            Self::Credential(_) => "credential",
        }
    }
}

/// An asymmetric key type as enrollment reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyKind {
    Rsa2048,
    Rsa3072,
    Rsa4096,
    EccP256,
    EccP384,
}

impl KeyKind {
    fn of(p: &Public) -> Option<Self> {
        match &p.key {
            PublicKey::Rsa { modulus, .. } => match modulus.len() * 8 {
                2048 => Some(Self::Rsa2048),
                3072 => Some(Self::Rsa3072),
                4096 => Some(Self::Rsa4096),
                _ => None,
            },
            PublicKey::Ecc { curve, .. } => Some(match curve {
                EccCurve::P256 => Self::EccP256,
                EccCurve::P384 => Self::EccP384,
            }),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Rsa2048 => "rsa-2048",
            Self::Rsa3072 => "rsa-3072",
            Self::Rsa4096 => "rsa-4096",
            Self::EccP256 => "ecc-p256",
            Self::EccP384 => "ecc-p384",
        }
    }
}

/// A verified EK: who certified it and the digest the registry knows the hardware by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EkIdentity {
    /// SHA-256 of the EK certificate's DER (padding removed): the hardware identity.
    pub cert_sha256: [u8; 32],
    pub issuer: String,
    /// Often empty: TPM EK certificates name the TPM in subjectAltName instead.
    pub subject: String,
    /// Subject of the configured root the chain ends at.
    pub anchor: String,
    pub kind: KeyKind,
    /// The EK's TPM Name (nameAlg || H(TPMT_PUBLIC)).
    pub name: Vec<u8>,
}

/// A checked AK.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AkInfo {
    /// nameAlg (u16 big-endian) || H_nameAlg(TPMT_PUBLIC): what the credential is bound to.
    pub name: Vec<u8>,
    pub name_alg: HashAlg,
    pub kind: KeyKind,
}

/// TPM2_MakeCredential's output, each a marshalled TPM2B (u16 size first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// TPM2B_ID_OBJECT: TPM2B(TPM2B_DIGEST(outerHMAC) || encIdentity).
    pub id_object: Vec<u8>,
    /// TPM2B_ENCRYPTED_SECRET: the seed, RSA-OAEP encrypted, or the ephemeral ECC point.
    pub encrypted_secret: Vec<u8>,
}

/// The DER certificate at the start of `input`: one complete SEQUENCE, then only zero
/// bytes (NV indices are often larger than the certificate). Nothing is ever cut from the
/// DER itself, and any non-zero byte after it is refused.
pub fn strip_nv_padding(input: &[u8]) -> Result<&[u8], EnrollError> {
    let bad = |m: &str| EnrollError::EkCertFormat(m.to_owned());
    let (&tag, rest) = input.split_first().ok_or_else(|| bad("empty"))?;
    if tag != 0x30 {
        return Err(bad("does not start with a DER SEQUENCE"));
    }
    let (&first, rest) = rest.split_first().ok_or_else(|| bad("truncated length"))?;
    let (len, header) = if first < 0x80 {
        (usize::from(first), 2usize)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return Err(bad("indefinite or oversized DER length"));
        }
        let bytes = rest.get(..n).ok_or_else(|| bad("truncated length"))?;
        let len = bytes.iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, 2 + n)
    };
    let end = header
        .checked_add(len)
        .filter(|&e| e <= input.len())
        .ok_or_else(|| bad("DER SEQUENCE longer than the input"))?;
    let (der, padding) = input.split_at(end);
    if padding.iter().any(|&b| b != 0) {
        return Err(bad("non-zero bytes after the DER certificate"));
    }
    Ok(der)
}

/// A certificate of the CA set, with the names used to build paths.
struct Ca<'a> {
    der: &'a [u8],
    subject: Vec<u8>,
    issuer: Vec<u8>,
}

fn parse_cas<C: AsRef<[u8]>>(cas: &[C]) -> Result<Vec<Ca<'_>>, EnrollError> {
    cas.iter()
        .enumerate()
        .map(|(i, der)| {
            let der = der.as_ref();
            match X509Certificate::from_der(der) {
                Ok(([], c)) => Ok(Ca {
                    der,
                    subject: c.subject().as_raw().to_vec(),
                    issuer: c.issuer().as_raw().to_vec(),
                }),
                _ => Err(EnrollError::EkCertChain(ChainError::Parse {
                    index: i,
                    reason: "configured CA certificate does not parse".into(),
                })),
            }
        })
        .collect()
}

fn chain_error(e: ChainError) -> EnrollError {
    if e.check() == "cert_validity" {
        EnrollError::EkCertValidity(e)
    } else {
        EnrollError::EkCertChain(e)
    }
}

/// A path being extended: its certificates, the issuer its last one names, and which
/// intermediates it already uses.
struct Partial<'a> {
    path: Vec<&'a [u8]>,
    issuer: Vec<u8>,
    used: Vec<usize>,
}

/// Every path leaf -> intermediates (by issuer/subject) up to the chain limit, shortest
/// first, at most [`MAX_PATHS`]. Several CAs may share a subject (every swtpm's local CA
/// does), so all candidates are tried and the signatures decide.
fn candidate_paths<'a>(leaf: &'a [u8], leaf_issuer: &[u8], inter: &[&Ca<'a>]) -> Vec<Vec<&'a [u8]>> {
    let mut out = Vec::new();
    let mut frontier = vec![Partial {
        path: vec![leaf],
        issuer: leaf_issuer.to_vec(),
        used: Vec::new(),
    }];
    while !frontier.is_empty() && out.len() < MAX_PATHS {
        let mut next = Vec::new();
        for p in frontier {
            if out.len() >= MAX_PATHS {
                break;
            }
            if p.path.len() < MAX_CHAIN_LEN - 1 {
                for (i, ca) in inter.iter().enumerate() {
                    if ca.subject == p.issuer && !p.used.contains(&i) {
                        let mut path = p.path.clone();
                        path.push(ca.der);
                        let mut used = p.used.clone();
                        used.push(i);
                        next.push(Partial {
                            path,
                            issuer: ca.issuer.clone(),
                            used,
                        });
                    }
                }
            }
            out.push(p.path);
        }
        frontier = next;
    }
    out
}

/// Verify the EK certificate against `cas` (DER: roots, i.e. self-issued certificates, and
/// intermediates) at `at`, and that it certifies the EK public area `ek_public`
/// (TPMT_PUBLIC), which must be a restricted decryption key.
pub fn verify_ek<C: AsRef<[u8]>>(
    ek_cert: &[u8],
    ek_public: &[u8],
    cas: &[C],
    at: UnixTime,
) -> Result<EkIdentity, EnrollError> {
    // ek_format
    if ek_cert.len() > MAX_EK_CERT {
        return Err(EnrollError::EkCertFormat(format!(
            "{} bytes, at most {MAX_EK_CERT}",
            ek_cert.len()
        )));
    }
    let der = strip_nv_padding(ek_cert)?;
    let cert = match X509Certificate::from_der(der) {
        Ok(([], c)) => c,
        Ok(_) => return Err(EnrollError::EkCertFormat("trailing bytes inside the DER".into())),
        Err(e) => return Err(EnrollError::EkCertFormat(e.to_string())),
    };
    let public = tpmfmt::parse_public(ek_public).map_err(EnrollError::EkPublicFormat)?;

    // ek_cert_chain / ek_cert_validity
    let anchor = verify_ek_chain(der, &cert, cas, at)?;

    // ek_key_match
    key_matches(&cert, &public)?;

    // ek_attributes
    let kind = ek_attributes(&public)?;

    Ok(EkIdentity {
        cert_sha256: sha256(der),
        issuer: cert.issuer().to_string(),
        subject: cert.subject().to_string(),
        anchor,
        kind,
        name: public.name(),
    })
}

fn sha256(b: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b).as_ref());
    out
}

fn verify_ek_chain<C: AsRef<[u8]>>(
    der: &[u8],
    cert: &X509Certificate<'_>,
    cas: &[C],
    at: UnixTime,
) -> Result<String, EnrollError> {
    if cert
        .basic_constraints()
        .ok()
        .flatten()
        .is_some_and(|bc| bc.value.ca)
    {
        return Err(EnrollError::EkCertChain(ChainError::Unsupported {
            index: 0,
            what: "the EK certificate is a CA certificate".into(),
        }));
    }
    let cas = parse_cas(cas)?;
    let (roots, inter): (Vec<&Ca<'_>>, Vec<&Ca<'_>>) = cas.iter().partition(|c| c.subject == c.issuer);
    let paths = candidate_paths(der, cert.issuer().as_raw(), &inter);
    // The error of the attempt that got furthest is the one reported.
    let mut best: Option<(usize, ChainError)> = None;
    let mut note = |depth: usize, e: ChainError| {
        if best.as_ref().is_none_or(|(d, _)| depth > *d) {
            best = Some((depth, e));
        }
    };
    for path in paths {
        let owned: Vec<Vec<u8>> = path.iter().map(|c| c.to_vec()).collect();
        let last_issuer = path
            .last()
            .and_then(|d| X509Certificate::from_der(d).ok())
            .map(|(_, c)| c.issuer().as_raw().to_vec())
            .unwrap_or_default();
        let mut tried = false;
        for root in roots.iter().filter(|r| r.subject == last_issuer) {
            tried = true;
            let anchor = match TrustAnchor::from_der(root.der.to_vec()) {
                Ok(a) => a,
                Err(e) => {
                    note(path.len() + 1, e);
                    continue;
                }
            };
            match verify_chain(&owned, std::slice::from_ref(&anchor), at) {
                Ok(v) => return Ok(v.anchor),
                // Depth + 1: a root was found, so this attempt got further than one without.
                Err(e) => note(path.len() + 1, e),
            }
        }
        if !tried {
            // No root by that name: let the chain code say what is wrong (time, links, root).
            match verify_chain(&owned, &[], at) {
                Ok(v) => return Ok(v.anchor),
                Err(e) => note(path.len(), e),
            }
        }
    }
    Err(chain_error(best.map(|(_, e)| e).unwrap_or(ChainError::Empty)))
}

/// Unsigned big-endian integer without leading zeros.
fn trim(b: &[u8]) -> &[u8] {
    let skip = b.iter().take_while(|&&x| x == 0).count();
    b.get(skip..).unwrap_or_default()
}

fn key_matches(cert: &X509Certificate<'_>, public: &Public) -> Result<(), EnrollError> {
    let mismatch = |m: &str| EnrollError::EkKeyMismatch(m.to_owned());
    let parsed = cert
        .public_key()
        .parsed()
        .map_err(|e| mismatch(&format!("certificate key does not parse: {e}")))?;
    match (&parsed, &public.key) {
        (
            X509Key::RSA(k),
            PublicKey::Rsa {
                exponent, modulus, ..
            },
        ) => {
            let e = if *exponent == 0 { 65537 } else { *exponent };
            let e_bytes = e.to_be_bytes();
            if trim(k.modulus) != trim(modulus) {
                return Err(mismatch("RSA modulus differs"));
            }
            if trim(k.exponent) != trim(&e_bytes) {
                return Err(mismatch("RSA exponent differs"));
            }
            Ok(())
        }
        (X509Key::EC(point), PublicKey::Ecc { curve, x, y, .. }) => {
            let curve_oid = cert
                .public_key()
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| o.to_id_string())
                .unwrap_or_default();
            let want_oid = match curve {
                EccCurve::P256 => "1.2.840.10045.3.1.7",
                EccCurve::P384 => "1.3.132.0.34",
            };
            if curve_oid != want_oid {
                return Err(mismatch("EC curve differs"));
            }
            let mut want = vec![0x04];
            want.extend_from_slice(x);
            want.extend_from_slice(y);
            if point.data() != want.as_slice() {
                return Err(mismatch("EC point differs"));
            }
            Ok(())
        }
        _ => Err(mismatch("key types differ")),
    }
}

/// The symmetric definition a credential is encrypted under: AES-128/256 in CFB mode.
fn aes_cfb_bits(p: &Public) -> Option<usize> {
    let sym = match &p.key {
        PublicKey::Rsa { symmetric, .. } | PublicKey::Ecc { symmetric, .. } => symmetric,
    };
    match (sym.alg, sym.detail, sym.extra) {
        (ALG_AES, Some(bits @ (128 | 256)), Some(ALG_CFB)) => Some(usize::from(bits)),
        _ => None,
    }
}

fn strong_name_alg(h: HashAlg) -> bool {
    matches!(h, HashAlg::Sha256 | HashAlg::Sha384 | HashAlg::Sha512)
}

fn ek_attributes(p: &Public) -> Result<KeyKind, EnrollError> {
    let bad = |m: String| EnrollError::EkAttributes(m);
    let a = p.object_attributes;
    if a & ATTR_RESTRICTED == 0 || a & ATTR_DECRYPT == 0 {
        return Err(bad(format!(
            "objectAttributes {a:#010x}: an EK must be restricted and decrypt"
        )));
    }
    if a & ATTR_SIGN != 0 {
        return Err(bad(format!("objectAttributes {a:#010x}: an EK must not sign")));
    }
    if !strong_name_alg(p.name_alg) {
        return Err(bad(format!("nameAlg {} is too weak", p.name_alg.name())));
    }
    if aes_cfb_bits(p).is_none() {
        return Err(bad("symmetric definition is not AES-128/256-CFB".into()));
    }
    KeyKind::of(p).ok_or_else(|| bad("RSA key size is not 2048, 3072 or 4096 bits".into()))
}

/// Check that `ak_public` (TPMT_PUBLIC) is an attestation key: restricted, signing, not
/// decrypting, fixed to its TPM and parent, generated inside the TPM; RSA of at least
/// 2048 bits or ECC P-256/P-384; SHA-256 or stronger nameAlg.
pub fn check_ak(ak_public: &[u8]) -> Result<AkInfo, EnrollError> {
    let p = tpmfmt::parse_public(ak_public).map_err(EnrollError::AkFormat)?;
    let bad = |m: String| EnrollError::AkAttributes(m);
    let a = p.object_attributes;
    let required = [
        (ATTR_RESTRICTED, "restricted"),
        (ATTR_SIGN, "sign"),
        (ATTR_FIXED_TPM, "fixedTPM"),
        (ATTR_FIXED_PARENT, "fixedParent"),
        (ATTR_SENSITIVE_DATA_ORIGIN, "sensitiveDataOrigin"),
    ];
    for (bit, name) in required {
        if a & bit == 0 {
            return Err(bad(format!("objectAttributes {a:#010x}: {name} is not set")));
        }
    }
    if a & ATTR_DECRYPT != 0 {
        return Err(bad(format!(
            "objectAttributes {a:#010x}: decrypt is set (an AK only signs)"
        )));
    }
    if !strong_name_alg(p.name_alg) {
        return Err(bad(format!("nameAlg {} is too weak", p.name_alg.name())));
    }
    let kind = KeyKind::of(&p).ok_or_else(|| bad("RSA key size is not 2048, 3072 or 4096 bits".into()))?;
    Ok(AkInfo {
        name: p.name(),
        name_alg: p.name_alg,
        kind,
    })
}

fn tpm2b(body: &[u8]) -> Result<Vec<u8>, EnrollError> {
    let n = u16::try_from(body.len()).map_err(|_| EnrollError::Credential("TPM2B over 64 KiB".into()))?;
    let mut out = Vec::with_capacity(2 + body.len());
    out.extend(n.to_be_bytes());
    out.extend_from_slice(body);
    Ok(out)
}

fn hmac_alg(h: HashAlg) -> hmac::Algorithm {
    match h {
        HashAlg::Sha1 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        HashAlg::Sha256 => hmac::HMAC_SHA256,
        HashAlg::Sha384 => hmac::HMAC_SHA384,
        HashAlg::Sha512 => hmac::HMAC_SHA512,
    }
}

/// KDFa (TPM 2.0 Part 1 §11.4.10.2, SP 800-108 counter mode with HMAC):
/// HMAC(key, [i]32 || label || 0x00 || contextU || contextV || [bits]32) for i = 1, 2, ...
/// `bits` must be a multiple of 8 (every use here is).
pub fn kdfa(
    hash: HashAlg,
    key: &[u8],
    label: &[u8],
    context_u: &[u8],
    context_v: &[u8],
    bits: u32,
) -> Vec<u8> {
    let k = hmac::Key::new(hmac_alg(hash), key);
    let want = (bits as usize).div_ceil(8);
    let mut out = Vec::with_capacity(want + hash.digest_len());
    let mut counter: u32 = 0;
    while out.len() < want {
        counter += 1;
        let mut ctx = hmac::Context::with_key(&k);
        ctx.update(&counter.to_be_bytes());
        ctx.update(label);
        ctx.update(&[0]);
        ctx.update(context_u);
        ctx.update(context_v);
        ctx.update(&bits.to_be_bytes());
        out.extend_from_slice(ctx.sign().as_ref());
    }
    out.truncate(want);
    out
}

/// KDFe (TPM 2.0 Part 1 §11.4.10.3, SP 800-56A concatenation KDF):
/// H([i]32 || Z || label || 0x00 || partyUInfo || partyVInfo) for i = 1, 2, ...
pub fn kdfe(hash: HashAlg, z: &[u8], label: &[u8], party_u: &[u8], party_v: &[u8], bits: u32) -> Vec<u8> {
    let want = (bits as usize).div_ceil(8);
    let mut out = Vec::with_capacity(want + hash.digest_len());
    let mut counter: u32 = 0;
    while out.len() < want {
        counter += 1;
        out.extend(hash.hash(&[&counter.to_be_bytes(), z, label, &[0], party_u, party_v]));
    }
    out.truncate(want);
    out
}

/// The symmetric half of MakeCredential, given the seed: TPM2B_ID_OBJECT (with size).
pub fn wrap_identity(
    name_alg: HashAlg,
    sym_bits: usize,
    seed: &[u8],
    ak_name: &[u8],
    secret: &[u8],
) -> Result<Vec<u8>, EnrollError> {
    let fail = |m: &str| EnrollError::Credential(m.to_owned());
    let sym_key = kdfa(name_alg, seed, b"STORAGE", ak_name, &[], sym_bits as u32);
    let alg = match sym_bits {
        128 => &cipher::AES_128,
        256 => &cipher::AES_256,
        _ => return Err(fail("symmetric key size is not 128 or 256 bits")),
    };
    let key = cipher::UnboundCipherKey::new(alg, &sym_key).map_err(|_| fail("AES key"))?;
    let enc = cipher::EncryptingKey::cfb128(key).map_err(|_| fail("AES-CFB key"))?;
    // encIdentity = CFB(symKey, IV = 0, TPM2B_DIGEST(secret)) (Part 1 §24.4).
    let mut enc_identity = tpm2b(secret)?;
    enc.less_safe_encrypt(
        &mut enc_identity,
        cipher::EncryptionContext::Iv128(aws_lc_rs::iv::FixedLength::from([0u8; 16])),
    )
    .map_err(|_| fail("AES-CFB encryption"))?;
    let hmac_key = kdfa(
        name_alg,
        seed,
        b"INTEGRITY",
        &[],
        &[],
        (name_alg.digest_len() * 8) as u32,
    );
    let mut ctx = hmac::Context::with_key(&hmac::Key::new(hmac_alg(name_alg), &hmac_key));
    ctx.update(&enc_identity);
    ctx.update(ak_name);
    let outer_hmac = ctx.sign();
    let mut body = tpm2b(outer_hmac.as_ref())?;
    body.extend(enc_identity);
    tpm2b(&body)
}

/// TPM2_MakeCredential in software: `secret` protected to the EK `ek_public` (TPMT_PUBLIC,
/// restricted decrypt, RSA or ECC P-256/P-384) for the object named `ak_name`.
pub fn make_credential(ek_public: &[u8], ak_name: &[u8], secret: &[u8]) -> Result<Credential, EnrollError> {
    let fail = |m: String| EnrollError::Credential(m);
    let ek = tpmfmt::parse_public(ek_public).map_err(EnrollError::EkPublicFormat)?;
    ek_attributes(&ek)?;
    let name_alg = ek.name_alg;
    let digest_len = name_alg.digest_len();
    // The AK Name: a known nameAlg and exactly its digest.
    let ak_alg = match ak_name {
        [a, b, ..] => HashAlg::from_tpm_alg_id(u16::from_be_bytes([*a, *b])),
        _ => None,
    }
    .ok_or_else(|| fail("AK Name does not start with a supported nameAlg".into()))?;
    if ak_name.len() != 2 + ak_alg.digest_len() {
        return Err(fail(format!(
            "AK Name is {} bytes, {} expected for {}",
            ak_name.len(),
            2 + ak_alg.digest_len(),
            ak_alg.name()
        )));
    }
    // The TPM refuses a credential longer than the EK nameAlg digest (TPM_RC_SIZE).
    if secret.is_empty() || secret.len() > digest_len {
        return Err(fail(format!(
            "secret is {} bytes, 1 to {digest_len} allowed",
            secret.len()
        )));
    }
    let sym_bits = aes_cfb_bits(&ek).ok_or_else(|| fail("EK symmetric is not AES-CFB".into()))?;
    let rng = rand::SystemRandom::new();
    let (seed, encrypted_secret) = match &ek.key {
        PublicKey::Rsa { .. } => {
            let mut seed = vec![0u8; digest_len];
            rand::SecureRandom::fill(&rng, &mut seed).map_err(|_| fail("random seed".into()))?;
            let spki = ek.verifying_key().spki_der();
            let key = rsa::PublicEncryptingKey::from_der(&spki)
                .map_err(|e| fail(format!("EK RSA key rejected: {e}")))?;
            let oaep = rsa::OaepPublicEncryptingKey::new(key).map_err(|_| fail("RSA-OAEP key".into()))?;
            let alg = match name_alg {
                HashAlg::Sha256 => &rsa::OAEP_SHA256_MGF1SHA256,
                HashAlg::Sha384 => &rsa::OAEP_SHA384_MGF1SHA384,
                HashAlg::Sha512 => &rsa::OAEP_SHA512_MGF1SHA512,
                HashAlg::Sha1 => return Err(fail("SHA-1 EK".into())),
            };
            let mut ct = vec![0u8; oaep.ciphertext_size()];
            // The label includes its terminating NUL (Part 1 §24.4, "IDENTITY\0").
            let n = oaep
                .encrypt(alg, &seed, &mut ct, Some(b"IDENTITY\0"))
                .map_err(|_| fail("RSA-OAEP encryption".into()))?
                .len();
            ct.truncate(n);
            (seed, tpm2b(&ct)?)
        }
        PublicKey::Ecc { curve, x, y, .. } => {
            let alg = match curve {
                EccCurve::P256 => &agreement::ECDH_P256,
                EccCurve::P384 => &agreement::ECDH_P384,
            };
            let eph = agreement::EphemeralPrivateKey::generate(alg, &rng)
                .map_err(|_| fail("ephemeral ECC key".into()))?;
            let eph_pub = eph
                .compute_public_key()
                .map_err(|_| fail("ephemeral ECC public key".into()))?;
            let c = curve.coord_len();
            // Uncompressed SEC1: 0x04 || x || y.
            let (ex, ey) = eph_pub
                .as_ref()
                .get(1..)
                .filter(|r| r.len() == 2 * c)
                .map(|r| r.split_at(c))
                .ok_or_else(|| fail("ephemeral point encoding".into()))?;
            let mut ek_point = vec![0x04];
            ek_point.extend_from_slice(x);
            ek_point.extend_from_slice(y);
            let z = agreement::agree_ephemeral(
                eph,
                agreement::UnparsedPublicKey::new(alg, &ek_point),
                fail("ECDH with the EK point (not on the curve?)".into()),
                |z| Ok(z.to_vec()),
            )?;
            // seed = KDFe(nameAlg, Z, "IDENTITY", ephemeral.x, EK.x, digest bits).
            let seed = kdfe(name_alg, &z, b"IDENTITY", ex, x, (digest_len * 8) as u32);
            let mut point = tpm2b(ex)?;
            point.extend(tpm2b(ey)?);
            (seed, tpm2b(&point)?)
        }
    };
    let id_object = wrap_identity(name_alg, sym_bits, &seed, ak_name, secret)?;
    Ok(Credential {
        id_object,
        encrypted_secret,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
    use super::*;
    use crate::x509::split_certs;
    use aws_lc_rs::encoding::AsDer;

    const TV: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/enroll");
    // 2026-11-25T00:00:00Z, after the swtpm EK certificate's notBefore.
    const AT: UnixTime = UnixTime(1_795_564_800);
    const NOT_BEFORE: i64 = 1_795_502_526;

    fn read(name: &str) -> Vec<u8> {
        std::fs::read(format!("{TV}/{name}")).unwrap()
    }

    fn cas() -> Vec<Vec<u8>> {
        let mut v = split_certs(&read("swtpm-localca-root.pem")).unwrap();
        v.extend(split_certs(&read("swtpm-localca-issuer.pem")).unwrap());
        v
    }

    #[track_caller]
    fn check_of<T: std::fmt::Debug>(r: Result<T, EnrollError>) -> &'static str {
        r.unwrap_err().check()
    }

    #[test]
    fn kdfa_matches_the_reference_self_test() {
        // libtpms/TCG reference KdfTestData.h: key, "KDFSELFTESTLABEL" (its NUL is the one
        // KDFa adds), contextU, contextV, 160 bits.
        let key = hex::decode("271fa08bbdc5060ec3dfa928ff9b73123a12da0c").unwrap();
        let u = hex::decode("ce244f395dca7391").unwrap();
        let v = hex::decode("da504031ddf12e83").unwrap();
        for (h, want) in [
            (HashAlg::Sha1, "55b5a7184aa07423c47dae766c26a2377d7cf851"),
            (HashAlg::Sha256, "bb0259e1c8ba607e6a2cd704b69a902e9ade84c4"),
            (HashAlg::Sha384, "1dce70c9113eb2dba47bd9cfc72bf46f45b09312"),
            (HashAlg::Sha512, "8be2c1b85b78569b9fa759f5857c56d684810fd3"),
        ] {
            assert_eq!(hex::encode(kdfa(h, &key, b"KDFSELFTESTLABEL", &u, &v, 160)), want);
        }
        // Longer than one block: the counter goes on.
        let long = kdfa(HashAlg::Sha256, &key, b"L", &u, &v, 512);
        assert_eq!(long.len(), 64);
        assert_ne!(long[..32], long[32..]);
    }

    #[test]
    fn kdfe_is_the_concatenation_kdf() {
        let z = [7u8; 32];
        let one = kdfe(HashAlg::Sha256, &z, b"IDENTITY", b"U", b"V", 256);
        let want = HashAlg::Sha256.hash(&[&1u32.to_be_bytes(), &z, b"IDENTITY\0", b"U", b"V"]);
        assert_eq!(one, want);
        let two = kdfe(HashAlg::Sha256, &z, b"IDENTITY", b"U", b"V", 384);
        assert_eq!(two[..32], want[..]);
        assert_eq!(two.len(), 48);
    }

    #[test]
    fn swtpm_ek_verifies_and_ak_name_is_the_tpms() {
        let id = verify_ek(
            &read("swtpm-ek-cert.der"),
            &read("swtpm-ek-public.bin"),
            &cas(),
            AT,
        )
        .unwrap();
        assert_eq!(id.kind, KeyKind::Rsa2048);
        assert_eq!(id.issuer, "CN=swtpm-localca");
        assert_eq!(id.subject, "CN=unknown");
        assert_eq!(id.anchor, "CN=swtpm-localca-rootca");
        assert_eq!(id.cert_sha256, sha256(&read("swtpm-ek-cert.der")));
        let ak = check_ak(&read("swtpm-ak-public.bin")).unwrap();
        assert_eq!(ak.name, read("swtpm-ak-name.bin"));
        assert_eq!(ak.kind, KeyKind::Rsa2048);
        // CA order does not matter.
        let mut rev = cas();
        rev.reverse();
        assert!(verify_ek(&read("swtpm-ek-cert.der"), &read("swtpm-ek-public.bin"), &rev, AT).is_ok());
    }

    #[test]
    fn padding_rule() {
        let cert = read("swtpm-ek-cert.der");
        assert_eq!(strip_nv_padding(&cert).unwrap(), &cert[..]);
        let mut padded = cert.clone();
        padded.resize(2048, 0);
        assert_eq!(strip_nv_padding(&padded).unwrap(), &cert[..]);
        let ek = read("swtpm-ek-public.bin");
        let a = verify_ek(&cert, &ek, &cas(), AT).unwrap();
        assert_eq!(verify_ek(&padded, &ek, &cas(), AT).unwrap(), a);
        // Non-zero after the DER, 0xff padding, a cut DER, no DER at all.
        for bad in [
            {
                let mut p = padded.clone();
                p[2047] = 1;
                p
            },
            {
                let mut p = cert.clone();
                p.extend([0xff; 8]);
                p
            },
            cert[..cert.len() - 1].to_vec(),
            vec![0; 16],
            vec![],
            vec![0x30],
            vec![0x30, 0x80, 0, 0],
            vec![0x30, 0x85, 1, 1, 1, 1, 1],
            vec![0x30, 0x84, 0xff, 0xff, 0xff, 0xff],
        ] {
            assert_eq!(
                check_of(verify_ek(&bad, &ek, &cas(), AT)),
                "ek_format",
                "{bad:02x?}"
            );
        }
        let huge = vec![0u8; MAX_EK_CERT + 1];
        assert_eq!(check_of(verify_ek(&huge, &ek, &cas(), AT)), "ek_format");
    }

    #[test]
    fn chain_time_key_and_attribute_failures() {
        let cert = read("swtpm-ek-cert.der");
        let ek = read("swtpm-ek-public.bin");
        let ak = read("swtpm-ak-public.bin");
        assert_eq!(
            check_of(verify_ek(&cert, &ek, &cas(), UnixTime(NOT_BEFORE - 1))),
            "ek_cert_validity"
        );
        assert_eq!(
            check_of(verify_ek(&cert, &ek, &cas(), UnixTime(253_402_300_800))),
            "ek_cert_validity"
        );
        assert_eq!(check_of(verify_ek(&cert, &ek, &cas()[..1], AT)), "ek_cert_chain");
        assert_eq!(check_of(verify_ek(&cert, &ek, &cas()[1..], AT)), "ek_cert_chain");
        let nv = read("../nvidia/nvidia-device-identity-root.pem");
        assert_eq!(
            check_of(verify_ek(&cert, &ek, &split_certs(&nv).unwrap(), AT)),
            "ek_cert_chain"
        );
        // A CA that does not parse is a chain (configuration) failure, not a panic.
        assert_eq!(
            check_of(verify_ek(&cert, &ek, &[vec![1u8, 2, 3]], AT)),
            "ek_cert_chain"
        );
        // One bit of the signature flipped.
        let mut tampered = cert.clone();
        let n = tampered.len();
        tampered[n - 3] ^= 1;
        assert_eq!(check_of(verify_ek(&tampered, &ek, &cas(), AT)), "ek_cert_chain");
        // Another key in the EK public area (the AK's modulus is another RSA-2048 key).
        assert_eq!(check_of(verify_ek(&cert, &ak, &cas(), AT)), "ek_key_match");
        let mut other = ek.clone();
        let m = other.len() - 10;
        other[m] ^= 1;
        assert_eq!(check_of(verify_ek(&cert, &other, &cas(), AT)), "ek_key_match");
        // EK public garbage, and attributes that are not a storage key's.
        assert_eq!(check_of(verify_ek(&cert, &ek[..100], &cas(), AT)), "ek_format");
        let mut sign = ek.clone();
        sign[5] |= 0x04; // sign (bit 18)
        assert_eq!(check_of(verify_ek(&cert, &sign, &cas(), AT)), "ek_attributes");
        let mut unrestricted = ek.clone();
        unrestricted[5] &= !0x01; // restricted (bit 16)
        assert_eq!(
            check_of(verify_ek(&cert, &unrestricted, &cas(), AT)),
            "ek_attributes"
        );
    }

    #[test]
    fn ak_attribute_checks() {
        let ak = read("swtpm-ak-public.bin");
        let attrs = u32::from_be_bytes(ak[4..8].try_into().unwrap());
        let with = |v: u32| {
            let mut p = ak.clone();
            p[4..8].copy_from_slice(&v.to_be_bytes());
            p
        };
        for bit in [
            ATTR_RESTRICTED,
            ATTR_SIGN,
            ATTR_FIXED_TPM,
            ATTR_FIXED_PARENT,
            ATTR_SENSITIVE_DATA_ORIGIN,
        ] {
            assert_eq!(
                check_of(check_ak(&with(attrs & !bit))),
                "ak_attributes",
                "{bit:#x}"
            );
        }
        assert_eq!(check_of(check_ak(&with(attrs | ATTR_DECRYPT))), "ak_attributes");
        assert_eq!(check_of(check_ak(&read("swtpm-ek-public.bin"))), "ak_attributes");
        // SHA-1 nameAlg.
        let mut sha1 = ak.clone();
        sha1[2..4].copy_from_slice(&[0x00, 0x04]);
        assert_eq!(check_of(check_ak(&sha1)), "ak_attributes");
    }

    #[test]
    fn garbage_never_panics() {
        let cert = read("swtpm-ek-cert.der");
        let ek = read("swtpm-ek-public.bin");
        let ak = read("swtpm-ak-public.bin");
        for n in 0..ak.len() {
            assert_eq!(check_of(check_ak(&ak[..n])), "ak_format");
        }
        let mut long = ak.clone();
        long.push(0);
        assert_eq!(check_of(check_ak(&long)), "ak_format");
        for n in (0..cert.len()).step_by(7) {
            assert!(verify_ek(&cert[..n], &ek, &cas(), AT).is_err());
        }
        for n in (0..ek.len()).step_by(3) {
            assert!(verify_ek(&cert, &ek[..n], &cas(), AT).is_err());
            assert!(make_credential(&ek[..n], &[0; 34], &[1; 32]).is_err());
        }
        // Bytes flipped one at a time through the EK public area and the AK.
        for i in 0..ek.len() {
            let mut e = ek.clone();
            e[i] ^= 0xa5;
            let _ = verify_ek(&cert, &e, &cas(), AT);
            let _ = make_credential(&e, &check_ak(&ak).unwrap().name, &[1; 32]);
        }
        for i in 0..ak.len() {
            let mut a = ak.clone();
            a[i] ^= 0xa5;
            let _ = check_ak(&a);
        }
    }

    /// TPMT_PUBLIC of an EK-like storage key (TCG template attributes and policy).
    fn ek_template(unique: &[u8], ecc: Option<EccCurve>) -> Vec<u8> {
        let mut p = Vec::new();
        p.extend(if ecc.is_some() { 0x0023u16 } else { 0x0001 }.to_be_bytes());
        p.extend(0x000bu16.to_be_bytes());
        p.extend(0x0003_00b2u32.to_be_bytes());
        p.extend(32u16.to_be_bytes());
        p.extend([0x83; 32]);
        p.extend([0x00, 0x06, 0x00, 0x80, 0x00, 0x43]); // AES-128-CFB
        p.extend([0x00, 0x10]); // scheme NULL
        match ecc {
            None => {
                p.extend(2048u16.to_be_bytes());
                p.extend(0u32.to_be_bytes());
            }
            Some(c) => {
                p.extend(c.tpm_id().to_be_bytes());
                p.extend([0x00, 0x10]); // kdf NULL
            }
        }
        p.extend_from_slice(unique);
        p
    }

    /// The TPM's side in software: outer HMAC, then decrypt, as TPM2_ActivateCredential.
    fn unwrap_identity(seed: &[u8], ak_name: &[u8], id_object: &[u8]) -> Option<Vec<u8>> {
        let body = id_object.get(2..)?;
        let hl = usize::from(u16::from_be_bytes([body[0], body[1]]));
        let (mac, enc) = body.get(2..)?.split_at(hl);
        let hmac_key = kdfa(HashAlg::Sha256, seed, b"INTEGRITY", &[], &[], 256);
        let mut msg = enc.to_vec();
        msg.extend_from_slice(ak_name);
        hmac::verify(&hmac::Key::new(hmac::HMAC_SHA256, &hmac_key), &msg, mac).ok()?;
        let sym = kdfa(HashAlg::Sha256, seed, b"STORAGE", ak_name, &[], 128);
        let key = cipher::DecryptingKey::cfb128(cipher::UnboundCipherKey::new(&cipher::AES_128, &sym).ok()?)
            .ok()?;
        let mut buf = enc.to_vec();
        let plain = key
            .decrypt(
                &mut buf,
                cipher::DecryptionContext::Iv128(aws_lc_rs::iv::FixedLength::from([0u8; 16])),
            )
            .ok()?;
        let n = usize::from(u16::from_be_bytes([plain[0], plain[1]]));
        (plain.len() == 2 + n).then(|| plain[2..].to_vec())
    }

    #[test]
    fn rsa_credential_opens_with_the_private_key_and_name_only() {
        let sk = rsa::PrivateDecryptingKey::generate(rsa::KeySize::Rsa2048).unwrap();
        let spki = sk.public_key().as_der().unwrap();
        let (_, info) = SubjectPublicKeyInfo::from_der(spki.as_ref()).unwrap();
        let X509Key::RSA(k) = info.parsed().unwrap() else {
            panic!()
        };
        let mut unique = 256u16.to_be_bytes().to_vec();
        unique.extend_from_slice(trim(k.modulus));
        let ek = ek_template(&unique, None);
        let name = check_ak(&read("swtpm-ak-public.bin")).unwrap().name;
        let secret = [0x5a; 32];
        let cred = make_credential(&ek, &name, &secret).unwrap();
        assert_eq!(cred.encrypted_secret.len(), 2 + 256);
        let oaep = rsa::OaepPrivateDecryptingKey::new(sk).unwrap();
        let mut seed = vec![0u8; 256];
        let seed = oaep
            .decrypt(
                &rsa::OAEP_SHA256_MGF1SHA256,
                &cred.encrypted_secret[2..],
                &mut seed,
                Some(b"IDENTITY\0"),
            )
            .unwrap()
            .to_vec();
        assert_eq!(seed.len(), 32);
        assert_eq!(unwrap_identity(&seed, &name, &cred.id_object).unwrap(), secret);
        // Another Name fails the integrity check.
        let mut other = name.clone();
        other[33] ^= 1;
        assert!(unwrap_identity(&seed, &other, &cred.id_object).is_none());
        // Sizes: TPM2B(TPM2B(hmac 32) || TPM2B(secret 32) encrypted).
        assert_eq!(cred.id_object.len(), 2 + 2 + 32 + 2 + 32);
        assert_eq!(
            usize::from(u16::from_be_bytes([cred.id_object[0], cred.id_object[1]])),
            cred.id_object.len() - 2
        );
    }

    #[test]
    fn ecc_credential_opens_with_the_private_key() {
        let sk = agreement::PrivateKey::generate(&agreement::ECDH_P256).unwrap();
        let pk = sk.compute_public_key().unwrap();
        let (x, y) = pk.as_ref()[1..].split_at(32);
        let mut unique = 32u16.to_be_bytes().to_vec();
        unique.extend_from_slice(x);
        unique.extend(32u16.to_be_bytes());
        unique.extend_from_slice(y);
        let ek = ek_template(&unique, Some(EccCurve::P256));
        let name = check_ak(&read("swtpm-ak-public.bin")).unwrap().name;
        let cred = make_credential(&ek, &name, b"abc").unwrap();
        // TPM2B_ENCRYPTED_SECRET(TPMS_ECC_POINT(TPM2B x, TPM2B y)).
        let es = &cred.encrypted_secret;
        assert_eq!(es.len(), 2 + 2 + 32 + 2 + 32);
        let (ex, ey) = (&es[4..36], &es[38..70]);
        let mut point = vec![0x04];
        point.extend_from_slice(ex);
        point.extend_from_slice(ey);
        let z = agreement::agree(
            &sk,
            agreement::UnparsedPublicKey::new(&agreement::ECDH_P256, &point),
            (),
            |z| Ok(z.to_vec()),
        )
        .unwrap();
        let seed = kdfe(HashAlg::Sha256, &z, b"IDENTITY", ex, x, 256);
        assert_eq!(unwrap_identity(&seed, &name, &cred.id_object).unwrap(), b"abc");
        // An EK point that is not on the curve is refused, not panicked on.
        let mut bad = unique.clone();
        bad[5] ^= 1;
        let e = make_credential(&ek_template(&bad, Some(EccCurve::P256)), &name, b"abc").unwrap_err();
        assert_eq!(e.check(), "credential");
    }

    #[test]
    fn credential_input_lengths() {
        let ek = read("swtpm-ek-public.bin");
        let name = read("swtpm-ak-name.bin");
        assert!(make_credential(&ek, &name, &[1; 32]).is_ok());
        for (n, s) in [
            (&name[..33], &[1u8; 32][..]),
            (&name[..], &[1u8; 33][..]),
            (&name[..], &[][..]),
            (&[0x00, 0x0b][..], &[1u8; 32][..]),
            (&[][..], &[1u8; 32][..]),
            (&[0x00, 0x12, 0, 0][..], &[1u8; 32][..]), // SM3: unknown nameAlg
        ] {
            assert_eq!(check_of(make_credential(&ek, n, s)), "credential", "{n:02x?}");
        }
        // A longer Name of a known algorithm (SHA-384 Name) is fine.
        let mut n384 = vec![0x00, 0x0c];
        n384.extend([9u8; 48]);
        assert!(make_credential(&ek, &n384, &[1; 32]).is_ok());
    }
}
