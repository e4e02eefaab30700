//! TPM 2.0 quote appraisal: TPMS_ATTEST signed by an attestation key (AK), PCR values
//! as `tpm2_quote -o` writes them, and optionally a measured-boot event log.
//!
//! Checks, in order: `parse`, `signature`, `nonce`, `pcr_selection`, `pcr_digest`,
//! `event_log` (only when a log is given).
//!
//! RSA-PSS: aws-lc-rs verifies PSS with MGF1 of the message hash and salt length equal to
//! the hash length. That is what current TPMs (the TCG reference code, libtpms/swtpm) use.
//! Signatures with the maximum salt length (some early TPM 2.0 firmware) do not verify and
//! are rejected at `signature` (see the `maxsalt` unit test).
//!
//! AK binding to an EK (credential activation, EK certificate chain) is enrollment's job;
//! this module trusts the AK it is given. An AK given as TPMT_PUBLIC must be a restricted
//! signing key: an unrestricted key can sign any digest, including one of a forged
//! TPMS_ATTEST.

use crate::cache::{cache_key, BoundedCache};
use crate::check::{CheckLog, EvidenceVerifier, FailedCheck, Outcome, UnixTime};
use aws_lc_rs::signature::{self, ParsedPublicKey, VerificationAlgorithm};
use custody_formats::alg::HashAlg;
use custody_formats::eventlog::{self, EventLogError};
use custody_formats::tpm::{
    self, Attest, EccCurve, PcrFile, PcrSelection, Public, RsaPadding, Signature, TpmError, VerifyingKey,
    ATTR_RESTRICTED, ATTR_SIGN,
};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use thiserror::Error;
use x509_parser::prelude::FromDer;
use x509_parser::x509::SubjectPublicKeyInfo;

/// Borrowed TPM evidence plus the expected extraData.
#[derive(Debug, Clone, Copy)]
pub struct TpmEvidence<'a> {
    /// TPMS_ATTEST (`tpm2_quote -m`).
    pub quote: &'a [u8],
    /// TPMT_SIGNATURE (`tpm2_quote -s`).
    pub signature: &'a [u8],
    /// AK: PEM or DER SubjectPublicKeyInfo, TPMT_PUBLIC or TPM2B_PUBLIC.
    pub ak: &'a [u8],
    /// PCR values (`tpm2_quote -o`).
    pub pcrs: &'a [u8],
    /// Expected extraData, compared exactly.
    pub nonce: &'a [u8],
    /// TCG PC Client event log to replay against the quoted PCRs.
    pub event_log: Option<&'a [u8]>,
}

/// Why TPM evidence was rejected; [`FailedCheck::check`] names the check.
#[derive(Debug, Error)]
pub enum TpmVerifyError {
    #[error("quote (TPMS_ATTEST): {0}")]
    Quote(TpmError),
    #[error("signature (TPMT_SIGNATURE): {0}")]
    SignatureFormat(TpmError),
    #[error("attestation key: {0}")]
    Ak(String),
    #[error("PCR file: {0}")]
    PcrFile(TpmError),
    #[error("attestation key is not a restricted signing key (objectAttributes {0:#010x})")]
    AkNotRestrictedSigning(u32),
    #[error("{scheme} signature cannot come from a {key} key")]
    SchemeKeyMismatch { scheme: &'static str, key: String },
    #[error(
        "signature scheme {sig:#06x}/{sig_hash} differs from the key's scheme {key:#06x}/{key_hash:#06x}"
    )]
    SchemeMismatch {
        sig: u16,
        sig_hash: &'static str,
        key: u16,
        key_hash: u16,
    },
    #[error("{0} is not accepted for quote signatures")]
    WeakHash(&'static str),
    #[error("ECDSA r or s is {len} bytes, longer than the {curve} field")]
    EcdsaComponentTooLong { len: usize, curve: &'static str },
    #[error("signature does not verify over the quote with the attestation key")]
    BadSignature,
    #[error("attestation key unusable for {alg}: {reason}")]
    KeyRejected { alg: &'static str, reason: String },
    #[error("extraData {got} does not equal the expected {expected}")]
    Nonce { got: String, expected: String },
    #[error("PCR file selects {file}, the quote selects {quote}")]
    PcrSelection { quote: String, file: String },
    #[error("{bank}:{pcr} has no value of the bank's length in the PCR file")]
    PcrValueMissing { bank: &'static str, pcr: u32 },
    #[error("pcrDigest is {len} bytes, {hash} needs {expected}")]
    PcrDigestLength {
        len: usize,
        hash: &'static str,
        expected: usize,
    },
    #[error("pcrDigest {quoted} differs from {computed} recomputed over the PCR file")]
    PcrDigest { quoted: String, computed: String },
    #[error("event log does not parse: {0}")]
    EventLogParse(EventLogError),
    #[error("event log replay for {bank}: {error}")]
    EventLogReplay {
        bank: &'static str,
        error: EventLogError,
    },
    #[error("event log replays {bank}:{pcr} to {replayed}, the quote has {quoted}")]
    EventLogMismatch {
        bank: &'static str,
        pcr: u32,
        replayed: String,
        quoted: String,
    },
}

impl FailedCheck for TpmVerifyError {
    fn check(&self) -> &'static str {
        use TpmVerifyError as E;
        match self {
            E::Quote(_) | E::SignatureFormat(_) | E::Ak(_) | E::PcrFile(_) => "parse",
            E::AkNotRestrictedSigning(_)
            | E::SchemeKeyMismatch { .. }
            | E::SchemeMismatch { .. }
            | E::WeakHash(_)
            | E::EcdsaComponentTooLong { .. }
            | E::BadSignature
            | E::KeyRejected { .. } => "signature",
            E::Nonce { .. } => "nonce",
            E::PcrSelection { .. } | E::PcrValueMissing { .. } => "pcr_selection",
            E::PcrDigestLength { .. } | E::PcrDigest { .. } => "pcr_digest",
            E::EventLogParse(_) | E::EventLogReplay { .. } | E::EventLogMismatch { .. } => "event_log",
        }
    }
}

/// How the AK was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AkFormat {
    SpkiPem,
    SpkiDer,
    TpmtPublic,
    Tpm2bPublic,
}

/// A parsed attestation key.
#[derive(Debug, Clone)]
pub struct AttestationKey {
    pub format: AkFormat,
    pub key: VerifyingKey,
    /// Present when the AK came as TPMT_PUBLIC / TPM2B_PUBLIC.
    pub public: Option<Public>,
}

impl AttestationKey {
    /// Detect and parse: PEM, TPM2B_PUBLIC (size prefix equals the rest), TPMT_PUBLIC
    /// (starts with TPM_ALG_RSA/ECC), else DER SubjectPublicKeyInfo.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        if bytes.starts_with(b"-----BEGIN") {
            let (_, pem) = x509_parser::pem::parse_x509_pem(bytes).map_err(|e| e.to_string())?;
            if pem.label != "PUBLIC KEY" {
                return Err(format!("PEM label {:?}, expected PUBLIC KEY", pem.label));
            }
            return Ok(Self {
                format: AkFormat::SpkiPem,
                key: spki_key(&pem.contents)?,
                public: None,
            });
        }
        let head = bytes
            .get(..2)
            .and_then(|h| <[u8; 2]>::try_from(h).ok())
            .map(u16::from_be_bytes)
            .ok_or("shorter than 2 bytes")?;
        let tpm = |format, r: Result<Public, TpmError>| {
            let p = r.map_err(|e| e.to_string())?;
            Ok(Self {
                format,
                key: p.verifying_key(),
                public: Some(p),
            })
        };
        if usize::from(head) + 2 == bytes.len() {
            return tpm(AkFormat::Tpm2bPublic, tpm::parse_public_2b(bytes));
        }
        if head == 0x0001 || head == 0x0023 {
            return tpm(AkFormat::TpmtPublic, tpm::parse_public(bytes));
        }
        Ok(Self {
            format: AkFormat::SpkiDer,
            key: spki_key(bytes)?,
            public: None,
        })
    }

    /// `rsa-2048`, `ecc-p256`, ...
    pub fn describe(&self) -> String {
        match &self.key {
            VerifyingKey::Rsa { bits, .. } => format!("rsa-{bits}"),
            VerifyingKey::Ec { curve, .. } => format!("ecc-{}", curve.name()),
        }
    }
}

fn spki_key(der: &[u8]) -> Result<VerifyingKey, String> {
    let (rest, spki) = SubjectPublicKeyInfo::from_der(der).map_err(|e| e.to_string())?;
    if !rest.is_empty() {
        return Err(format!(
            "{} trailing bytes after SubjectPublicKeyInfo",
            rest.len()
        ));
    }
    let key = crate::x509::PublicKey::from_spki(&spki)?;
    Ok(match key {
        crate::x509::PublicKey::Rsa(pkcs1_der) => {
            let bits = match spki.parsed() {
                Ok(x509_parser::public_key::PublicKey::RSA(k)) => k.key_size(),
                _ => return Err("RSA key does not parse".into()),
            };
            VerifyingKey::Rsa { pkcs1_der, bits }
        }
        crate::x509::PublicKey::EcP256(point) => ec_point(EccCurve::P256, point)?,
        crate::x509::PublicKey::EcP384(point) => ec_point(EccCurve::P384, point)?,
    })
}

fn ec_point(curve: EccCurve, point: Vec<u8>) -> Result<VerifyingKey, String> {
    if point.len() != 1 + 2 * curve.coord_len() || point.first() != Some(&4) {
        return Err(format!(
            "{} point is not uncompressed ({} bytes)",
            curve.name(),
            point.len()
        ));
    }
    Ok(VerifyingKey::Ec { curve, point })
}

/// Claims about the attestation key.
#[derive(Debug, Clone, Serialize)]
pub struct AkClaims {
    pub format: AkFormat,
    /// `rsa-2048`, `ecc-p256`, ...
    pub key: String,
    /// TPM Name (nameAlg || H(TPMT_PUBLIC)), hex; only for TPMT_PUBLIC / TPM2B_PUBLIC.
    pub name: Option<String>,
    /// SHA-256 of the DER SubjectPublicKeyInfo, hex (the same for every input format).
    pub fingerprint_sha256: String,
}

/// Claims about the signature.
#[derive(Debug, Clone, Serialize)]
pub struct SignatureClaims {
    /// `rsassa`, `rsapss` or `ecdsa`.
    pub scheme: &'static str,
    pub hash: HashAlg,
}

/// What an event log replay covered.
#[derive(Debug, Clone, Serialize)]
pub struct EventLogClaims {
    pub events: usize,
    pub crypto_agile: bool,
    /// Per bank, the quoted PCRs the log reproduced.
    pub pcrs_replayed: BTreeMap<HashAlg, Vec<u32>>,
}

/// Claims of a verified quote.
#[derive(Debug, Clone, Serialize)]
pub struct TpmClaims {
    /// Quoted PCR values: bank -> PCR index -> hex.
    pub pcrs: BTreeMap<HashAlg, BTreeMap<u32, String>>,
    pub clock: u64,
    pub reset_count: u32,
    pub restart_count: u32,
    pub safe: bool,
    pub firmware_version: u64,
    /// Hex.
    pub qualified_signer: String,
    /// Hex; equal to the expected nonce.
    pub extra_data: String,
    pub ak: AkClaims,
    pub signature: SignatureClaims,
    pub event_log: Option<EventLogClaims>,
}

/// PCR values as the `tpm2_quote -o` file: text lines `INDEX HEX` (one bank, as cloud
/// tools print them) are converted; anything else is taken as that file already.
pub fn pcr_file_or_text(input: &[u8]) -> Result<Vec<u8>, TpmVerifyError> {
    use custody_formats::tpm::PcrFile;
    let text = match std::str::from_utf8(input) {
        // tpm2_quote -o starts with a little-endian bank count: never a digit.
        Ok(t) if t.trim_start().starts_with(|c: char| c.is_ascii_digit()) => t,
        _ => return Ok(input.to_vec()),
    };
    PcrFile::from_text(text)
        .and_then(|f| f.to_bytes())
        .map_err(TpmVerifyError::PcrFile)
}

/// TPM quote verifier. The AK is part of the evidence (its provenance is established at
/// enrollment). A node presents the same AK every round, so parsed AKs and the aws-lc keys
/// prepared from them are kept in small bounded caches keyed by the exact AK bytes (and
/// the algorithm); the signature, nonce and PCRs are checked afresh every time.
#[derive(Debug)]
pub struct TpmVerifier {
    aks: BoundedCache<Arc<(AttestationKey, AkClaims)>>,
    keys: BoundedCache<Arc<ParsedPublicKey>>,
}

/// Distinct AKs remembered (one per enrolled node a verifier replica appraises).
const AK_CACHE: usize = 4096;

impl Default for TpmVerifier {
    fn default() -> Self {
        Self::new()
    }
}

impl TpmVerifier {
    pub fn new() -> Self {
        Self {
            aks: BoundedCache::new(AK_CACHE),
            keys: BoundedCache::new(AK_CACHE),
        }
    }

    /// The parsed AK and its claims (which depend on the AK bytes alone).
    fn attestation_key(&self, bytes: &[u8]) -> Result<Arc<(AttestationKey, AkClaims)>, String> {
        let k = cache_key([bytes]);
        if let Some(ak) = self.aks.get(&k) {
            return Ok(ak);
        }
        let ak = AttestationKey::parse(bytes)?;
        let claims = AkClaims {
            format: ak.format,
            key: ak.describe(),
            name: ak.public.as_ref().map(|p| crate::hex(p.name())),
            fingerprint_sha256: crate::hex(HashAlg::Sha256.hash(&[&ak.key.spki_der()])),
        };
        let entry = Arc::new((ak, claims));
        self.aks.insert(k, Arc::clone(&entry));
        Ok(entry)
    }

    fn check_signature(
        &self,
        quote: &[u8],
        sig: &Signature,
        ak: &AttestationKey,
    ) -> Result<(), TpmVerifyError> {
        let plan = signature_plan(sig, ak)?;
        let k = cache_key([plan.label.as_bytes(), plan.key]);
        let key = match self.keys.get(&k) {
            Some(key) => key,
            None => {
                let key = ParsedPublicKey::new(plan.alg, plan.key)
                    .map(Arc::new)
                    .map_err(|e| TpmVerifyError::KeyRejected {
                        alg: plan.label,
                        reason: e.to_string(),
                    })?;
                self.keys.insert(k, Arc::clone(&key));
                key
            }
        };
        key.verify_sig(quote, &plan.sig)
            .map_err(|_| TpmVerifyError::BadSignature)
    }
}

fn selection_text(sel: &[PcrSelection]) -> String {
    let banks: Vec<String> = sel
        .iter()
        .map(|s| {
            let pcrs: Vec<String> = s.pcrs.iter().map(u32::to_string).collect();
            format!("{}:{}", s.bank.name(), pcrs.join(","))
        })
        .collect();
    if banks.is_empty() {
        "nothing".into()
    } else {
        banks.join("+")
    }
}

/// What verifying a quote's signature takes: the algorithm (scheme, hash, key type), the
/// key bytes aws-lc parses, and the signature bytes in the form that algorithm expects.
struct SignaturePlan<'a> {
    alg: &'static dyn VerificationAlgorithm,
    /// Names `alg` in cache keys.
    label: &'static str,
    key: &'a [u8],
    sig: std::borrow::Cow<'a, [u8]>,
}

/// Checks the AK may have made `sig` (restricted signing key, matching scheme) and picks
/// the verification algorithm. The signature itself is checked by the caller.
fn signature_plan<'a>(
    sig: &'a Signature,
    ak: &'a AttestationKey,
) -> Result<SignaturePlan<'a>, TpmVerifyError> {
    use signature as s;
    if let Some(p) = &ak.public {
        let need = ATTR_RESTRICTED | ATTR_SIGN;
        if p.object_attributes & need != need {
            return Err(TpmVerifyError::AkNotRestrictedSigning(p.object_attributes));
        }
        // The TPM refuses a scheme other than the key's; a mismatch means forged bytes.
        let ks = p.scheme();
        if !ks.is_null() && (ks.alg != sig.scheme_alg() || ks.detail != Some(sig.hash().tpm_alg_id())) {
            return Err(TpmVerifyError::SchemeMismatch {
                sig: sig.scheme_alg(),
                sig_hash: sig.hash().name(),
                key: ks.alg,
                key_hash: ks.detail.unwrap_or(0),
            });
        }
    }
    let mismatch = || TpmVerifyError::SchemeKeyMismatch {
        scheme: sig.scheme_name(),
        key: ak.describe(),
    };
    let weak = |h: HashAlg| TpmVerifyError::WeakHash(h.name());
    match (sig, &ak.key) {
        (Signature::Rsa { padding, hash, sig }, VerifyingKey::Rsa { pkcs1_der, .. }) => {
            let (alg, label): (&'static dyn VerificationAlgorithm, _) = match (padding, hash) {
                (RsaPadding::Pkcs1v15, HashAlg::Sha256) => (&s::RSA_PKCS1_2048_8192_SHA256, "rsassa-sha256"),
                (RsaPadding::Pkcs1v15, HashAlg::Sha384) => (&s::RSA_PKCS1_2048_8192_SHA384, "rsassa-sha384"),
                (RsaPadding::Pkcs1v15, HashAlg::Sha512) => (&s::RSA_PKCS1_2048_8192_SHA512, "rsassa-sha512"),
                (RsaPadding::Pss, HashAlg::Sha256) => (&s::RSA_PSS_2048_8192_SHA256, "rsapss-sha256"),
                (RsaPadding::Pss, HashAlg::Sha384) => (&s::RSA_PSS_2048_8192_SHA384, "rsapss-sha384"),
                (RsaPadding::Pss, HashAlg::Sha512) => (&s::RSA_PSS_2048_8192_SHA512, "rsapss-sha512"),
                (_, h) => return Err(weak(*h)),
            };
            Ok(SignaturePlan {
                alg,
                label,
                key: pkcs1_der,
                sig: std::borrow::Cow::Borrowed(sig),
            })
        }
        (Signature::Ecdsa { hash, r, s: sv }, VerifyingKey::Ec { curve, point }) => {
            // r and s are integers: DER-encode their values (a TPM may drop leading
            // zeros) but never accept more bytes than the field has.
            for c in [r, sv] {
                if c.len() > curve.coord_len() {
                    return Err(TpmVerifyError::EcdsaComponentTooLong {
                        len: c.len(),
                        curve: curve.name(),
                    });
                }
            }
            let (alg, label): (&'static dyn VerificationAlgorithm, _) = match (curve, hash) {
                (EccCurve::P256, HashAlg::Sha256) => (&s::ECDSA_P256_SHA256_ASN1, "ecdsa-p256-sha256"),
                (EccCurve::P256, HashAlg::Sha384) => (&s::ECDSA_P256_SHA384_ASN1, "ecdsa-p256-sha384"),
                (EccCurve::P256, HashAlg::Sha512) => (&s::ECDSA_P256_SHA512_ASN1, "ecdsa-p256-sha512"),
                (EccCurve::P384, HashAlg::Sha256) => (&s::ECDSA_P384_SHA256_ASN1, "ecdsa-p384-sha256"),
                (EccCurve::P384, HashAlg::Sha384) => (&s::ECDSA_P384_SHA384_ASN1, "ecdsa-p384-sha384"),
                (EccCurve::P384, HashAlg::Sha512) => (&s::ECDSA_P384_SHA512_ASN1, "ecdsa-p384-sha512"),
                (_, h) => return Err(weak(*h)),
            };
            Ok(SignaturePlan {
                alg,
                label,
                key: point,
                sig: std::borrow::Cow::Owned(tpm::der::ecdsa_sig(r, sv)),
            })
        }
        _ => Err(mismatch()),
    }
}

fn check_pcr_selection(attest: &Attest, pcrs: &PcrFile) -> Result<(), TpmVerifyError> {
    if attest.pcr_select != pcrs.selection {
        return Err(TpmVerifyError::PcrSelection {
            quote: selection_text(&attest.pcr_select),
            file: selection_text(&pcrs.selection),
        });
    }
    for s in &attest.pcr_select {
        for &p in &s.pcrs {
            if pcrs.get(s.bank, p).is_none_or(|v| v.len() != s.bank.digest_len()) {
                return Err(TpmVerifyError::PcrValueMissing {
                    bank: s.bank.name(),
                    pcr: p,
                });
            }
        }
    }
    Ok(())
}

fn check_pcr_digest(attest: &Attest, pcrs: &PcrFile, hash: HashAlg) -> Result<(), TpmVerifyError> {
    if attest.pcr_digest.len() != hash.digest_len() {
        return Err(TpmVerifyError::PcrDigestLength {
            len: attest.pcr_digest.len(),
            hash: hash.name(),
            expected: hash.digest_len(),
        });
    }
    let computed = tpm::pcr_digest(hash, &attest.pcr_select, |b, p| {
        pcrs.get(b, p).map(<[u8]>::to_vec)
    })
    .unwrap_or_default();
    if computed != attest.pcr_digest {
        return Err(TpmVerifyError::PcrDigest {
            quoted: crate::hex(&attest.pcr_digest),
            computed: crate::hex(&computed),
        });
    }
    Ok(())
}

fn check_event_log(
    log_bytes: &[u8],
    attest: &Attest,
    pcrs: &PcrFile,
) -> Result<EventLogClaims, TpmVerifyError> {
    let log = eventlog::parse(log_bytes).map_err(TpmVerifyError::EventLogParse)?;
    let mut replayed_pcrs = BTreeMap::new();
    for s in attest.pcr_select.iter().filter(|s| !s.pcrs.is_empty()) {
        let replayed = log
            .replay(s.bank)
            .map_err(|error| TpmVerifyError::EventLogReplay {
                bank: s.bank.name(),
                error,
            })?;
        let mut covered = Vec::new();
        for &p in &s.pcrs {
            let (Some(r), Some(q)) = (replayed.get(&p), pcrs.get(s.bank, p)) else {
                continue;
            };
            if r.as_slice() != q {
                return Err(TpmVerifyError::EventLogMismatch {
                    bank: s.bank.name(),
                    pcr: p,
                    replayed: crate::hex(r),
                    quoted: crate::hex(q),
                });
            }
            covered.push(p);
        }
        replayed_pcrs.insert(s.bank, covered);
    }
    Ok(EventLogClaims {
        events: log.events.len(),
        crypto_agile: log.crypto_agile,
        pcrs_replayed: replayed_pcrs,
    })
}

impl EvidenceVerifier for TpmVerifier {
    type Evidence<'a> = TpmEvidence<'a>;
    type Claims = TpmClaims;
    type Error = TpmVerifyError;
    const KIND: &'static str = "tpm";

    fn verify(&self, ev: TpmEvidence<'_>, _at: UnixTime) -> Outcome<TpmClaims, TpmVerifyError> {
        let mut log = CheckLog::new();
        macro_rules! step {
            ($e:expr) => {
                match $e {
                    Ok(v) => v,
                    Err(err) => return Err(log.reject(err)),
                }
            };
        }

        let attest = step!(tpm::parse_attest(ev.quote).map_err(TpmVerifyError::Quote));
        let sig = step!(tpm::parse_signature(ev.signature).map_err(TpmVerifyError::SignatureFormat));
        let ak_entry = step!(self.attestation_key(ev.ak).map_err(TpmVerifyError::Ak));
        let (ak, ak_claims) = &*ak_entry;
        let pcrs = step!(tpm::parse_pcr_file(ev.pcrs).map_err(TpmVerifyError::PcrFile));
        log.pass(
            "parse",
            format!(
                "quote over {}; {} {} signature; AK {} ({:?}); {} PCR values",
                selection_text(&attest.pcr_select),
                sig.scheme_name(),
                sig.hash().name(),
                ak.describe(),
                ak.format,
                pcrs.values.len()
            ),
        );

        step!(self.check_signature(ev.quote, &sig, ak));
        log.pass(
            "signature",
            format!(
                "{}/{} by the {} AK over the TPMS_ATTEST bytes",
                sig.scheme_name(),
                sig.hash().name(),
                ak.describe()
            ),
        );

        if attest.extra_data != ev.nonce {
            step!(Err(TpmVerifyError::Nonce {
                got: crate::hex(&attest.extra_data),
                expected: crate::hex(ev.nonce),
            }));
        }
        log.pass(
            "nonce",
            format!("extraData equals the expected {} bytes", ev.nonce.len()),
        );

        step!(check_pcr_selection(&attest, &pcrs));
        log.pass(
            "pcr_selection",
            format!("PCR file matches {}", selection_text(&attest.pcr_select)),
        );

        step!(check_pcr_digest(&attest, &pcrs, sig.hash()));
        log.pass(
            "pcr_digest",
            format!("{} over the PCR values equals pcrDigest", sig.hash().name()),
        );

        let event_log = match ev.event_log {
            Some(bytes) => {
                let c = step!(check_event_log(bytes, &attest, &pcrs));
                let n: usize = c.pcrs_replayed.values().map(Vec::len).sum();
                log.pass(
                    "event_log",
                    format!("{} events replay to {n} quoted PCR values", c.events),
                );
                Some(c)
            }
            None => None,
        };

        let mut pcr_claims: BTreeMap<HashAlg, BTreeMap<u32, String>> = BTreeMap::new();
        for (bank, idx, v) in &pcrs.values {
            pcr_claims.entry(*bank).or_default().insert(*idx, crate::hex(v));
        }
        let claims = TpmClaims {
            pcrs: pcr_claims,
            clock: attest.clock_info.clock,
            reset_count: attest.clock_info.reset_count,
            restart_count: attest.clock_info.restart_count,
            safe: attest.clock_info.safe,
            firmware_version: attest.firmware_version,
            qualified_signer: crate::hex(&attest.qualified_signer),
            extra_data: crate::hex(&attest.extra_data),
            ak: ak_claims.clone(),
            signature: SignatureClaims {
                scheme: sig.scheme_name(),
                hash: sig.hash(),
            },
            event_log,
        };
        Ok(log.finish(claims))
    }
}

#[cfg(test)]
mod tests;
