//! X.509 certificate chains to pinned roots, checked at a given time.
//!
//! Used by the NVIDIA (device identity) and SEV-SNP (VCEK/VLEK -> ASK/ASVK -> ARK) verifiers.
//! Signatures are verified with aws-lc-rs over the raw TBS bytes. A chain is accepted when
//! it ends in a pinned root (same bytes), or when its last certificate is signed by a
//! pinned root (a chain shipped without its root). Unknown critical extensions are
//! refused (RFC 5280 4.2).
//!
//! [`ChainCache`] remembers chains already validated (keyed by the exact bytes); a cache
//! hit still checks the time window, so a cached chain expires like a fresh one.

use crate::cache::{cache_key, BoundedCache};
use crate::check::UnixTime;
use aws_lc_rs::signature;
use std::sync::Arc;
use thiserror::Error;
use x509_parser::prelude::*;
use x509_parser::signature_algorithm::SignatureAlgorithm;

/// Longest chain accepted, root included.
pub const MAX_CHAIN_LEN: usize = 8;

const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const OID_RSA_ENCRYPTION: &str = "1.2.840.113549.1.1.1";
const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_P384: &str = "1.3.132.0.34";
const OID_ECDSA_SHA256: &str = "1.2.840.10045.4.3.2";
const OID_ECDSA_SHA384: &str = "1.2.840.10045.4.3.3";
const OID_RSA_SHA256: &str = "1.2.840.113549.1.1.11";
const OID_RSA_SHA384: &str = "1.2.840.113549.1.1.12";
const OID_RSA_PSS: &str = "1.2.840.113549.1.1.10";
const OID_SHA256: &str = "2.16.840.1.101.3.4.2.1";
const OID_SHA384: &str = "2.16.840.1.101.3.4.2.2";

/// Critical extensions this module understands (others make a certificate unusable).
const KNOWN_CRITICAL: &[&str] = &[
    "2.5.29.15",      // keyUsage
    "2.5.29.19",      // basicConstraints
    "2.5.29.37",      // extKeyUsage
    "2.5.29.17",      // subjectAltName
    "2.5.29.32",      // certificatePolicies
    "2.23.133.5.4.1", // TCG DICE TcbInfo: read by the NVIDIA verifier (FWID)
    "2.23.133.5.4.4", // TCG DICE UEID
    "2.23.133.5.4.5", // TCG DICE MultiTcbInfo
];

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ChainError {
    #[error("no certificate found in the input")]
    Empty,
    #[error("chain has {0} certificates, more than {MAX_CHAIN_LEN}")]
    TooLong(usize),
    #[error("certificate {index} does not parse: {reason}")]
    Parse { index: usize, reason: String },
    #[error("certificate {index} ({subject}): issuer does not match the subject of certificate {next}")]
    IssuerMismatch {
        index: usize,
        subject: String,
        next: usize,
    },
    #[error("certificate {index} ({subject}): signature does not verify with its issuer's key")]
    Signature { index: usize, subject: String },
    #[error("certificate {index}: unsupported signature algorithm or key ({what})")]
    Unsupported { index: usize, what: String },
    #[error("certificate {index} ({subject}) is not valid before {not_before} (appraisal time {at})")]
    NotYetValid {
        index: usize,
        subject: String,
        not_before: i64,
        at: i64,
    },
    #[error("certificate {index} ({subject}) expired at {not_after} (appraisal time {at})")]
    Expired {
        index: usize,
        subject: String,
        not_after: i64,
        at: i64,
    },
    #[error(
        "certificate {index} ({subject}) issues certificates but is not a CA (basicConstraints/keyUsage)"
    )]
    NotCa { index: usize, subject: String },
    #[error("certificate {index} ({subject}): path length constraint exceeded")]
    PathLen { index: usize, subject: String },
    #[error("certificate {index} has an unknown critical extension {oid}")]
    UnknownCritical { index: usize, oid: String },
    #[error("chain does not end at a pinned root (last: {last_issuer})")]
    UntrustedRoot { last_issuer: String },
}

impl ChainError {
    /// Check name: time failures are told apart from structural ones.
    pub fn check(&self) -> &'static str {
        match self {
            ChainError::Expired { .. } | ChainError::NotYetValid { .. } => "cert_validity",
            _ => "cert_chain",
        }
    }
}

/// Split PEM (one or more CERTIFICATE blocks) or concatenated DER into DER certificates.
pub fn split_certs(input: &[u8]) -> Result<Vec<Vec<u8>>, ChainError> {
    let trimmed = input
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .and_then(|i| input.get(i..));
    let Some(body) = trimmed else {
        return Err(ChainError::Empty);
    };
    let mut out = Vec::new();
    if body.starts_with(b"-----BEGIN") {
        for (index, pem) in Pem::iter_from_buffer(body).enumerate() {
            let pem = pem.map_err(|e| ChainError::Parse {
                index,
                reason: format!("PEM: {e}"),
            })?;
            if pem.label != "CERTIFICATE" {
                continue;
            }
            out.push(pem.contents);
            if out.len() > MAX_CHAIN_LEN {
                return Err(ChainError::TooLong(out.len()));
            }
        }
    } else {
        let mut rest = body;
        while !rest.is_empty() {
            let index = out.len();
            let (tail, _) = X509Certificate::from_der(rest).map_err(|e| ChainError::Parse {
                index,
                reason: e.to_string(),
            })?;
            let used = rest.len() - tail.len();
            out.push(rest.get(..used).unwrap_or_default().to_vec());
            rest = tail;
            if out.len() > MAX_CHAIN_LEN {
                return Err(ChainError::TooLong(out.len()));
            }
        }
    }
    if out.is_empty() {
        return Err(ChainError::Empty);
    }
    Ok(out)
}

/// A public key usable to verify signatures (certificate leaf keys, roots).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// Uncompressed SEC1 point.
    EcP256(Vec<u8>),
    EcP384(Vec<u8>),
    /// PKCS#1 RSAPublicKey DER.
    Rsa(Vec<u8>),
}

impl PublicKey {
    pub fn from_spki(spki: &SubjectPublicKeyInfo<'_>) -> Result<Self, String> {
        let alg = spki.algorithm.algorithm.to_id_string();
        let bits = spki.subject_public_key.data.to_vec();
        match alg.as_str() {
            OID_EC_PUBLIC_KEY => {
                let curve = spki
                    .algorithm
                    .parameters
                    .as_ref()
                    .and_then(|p| p.as_oid().ok())
                    .map(|o| o.to_id_string())
                    .unwrap_or_default();
                match curve.as_str() {
                    OID_P256 => Ok(Self::EcP256(bits)),
                    OID_P384 => Ok(Self::EcP384(bits)),
                    c => Err(format!("EC curve {c}")),
                }
            }
            OID_RSA_ENCRYPTION => Ok(Self::Rsa(bits)),
            a => Err(format!("key algorithm {a}")),
        }
    }

    /// Parse a DER SubjectPublicKeyInfo.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, String> {
        let (rest, spki) = SubjectPublicKeyInfo::from_der(der).map_err(|e| e.to_string())?;
        if !rest.is_empty() {
            return Err("trailing bytes after SubjectPublicKeyInfo".into());
        }
        Self::from_spki(&spki)
    }

    fn verify_with(
        &self,
        alg: &'static dyn signature::VerificationAlgorithm,
        msg: &[u8],
        sig: &[u8],
    ) -> bool {
        let key = match self {
            Self::EcP256(k) | Self::EcP384(k) | Self::Rsa(k) => k,
        };
        signature::UnparsedPublicKey::new(alg, key)
            .verify(msg, sig)
            .is_ok()
    }

    /// ECDSA P-384 with SHA-384 over `msg`, signature as raw r||s (96 bytes), as SPDM uses.
    /// A fixed-length (r||s) ECDSA signature under a P-256 key with `alg`.
    pub fn verify_with_fixed(
        &self,
        alg: &'static aws_lc_rs::signature::EcdsaVerificationAlgorithm,
        msg: &[u8],
        sig: &[u8],
    ) -> bool {
        matches!(self, Self::EcP256(_)) && self.verify_with(alg, msg, sig)
    }

    pub fn verify_p384_fixed(&self, msg: &[u8], sig: &[u8]) -> bool {
        matches!(self, Self::EcP384(_)) && self.verify_with(&signature::ECDSA_P384_SHA384_FIXED, msg, sig)
    }

    /// Verify an X.509-style signature given the algorithm identifier of the signed object.
    pub(crate) fn verify_x509(
        &self,
        alg: &AlgorithmIdentifier<'_>,
        msg: &[u8],
        sig: &[u8],
    ) -> Result<bool, String> {
        use signature as s;
        let oid = alg.algorithm.to_id_string();
        let algo: &'static dyn s::VerificationAlgorithm = match (oid.as_str(), self) {
            (OID_ECDSA_SHA256, Self::EcP256(_)) => &s::ECDSA_P256_SHA256_ASN1,
            (OID_ECDSA_SHA256, Self::EcP384(_)) => &s::ECDSA_P384_SHA256_ASN1,
            (OID_ECDSA_SHA384, Self::EcP384(_)) => &s::ECDSA_P384_SHA384_ASN1,
            (OID_ECDSA_SHA384, Self::EcP256(_)) => &s::ECDSA_P256_SHA384_ASN1,
            (OID_RSA_SHA256, Self::Rsa(_)) => &s::RSA_PKCS1_2048_8192_SHA256,
            (OID_RSA_SHA384, Self::Rsa(_)) => &s::RSA_PKCS1_2048_8192_SHA384,
            (OID_RSA_PSS, Self::Rsa(_)) => {
                // aws-lc-rs checks PSS with MGF1 of the same hash and salt = hash length;
                // anything else is refused rather than verified under other parameters.
                let Ok(SignatureAlgorithm::RSASSA_PSS(p)) = SignatureAlgorithm::try_from(alg) else {
                    return Err("RSASSA-PSS without parameters".into());
                };
                let hash = p.hash_algorithm_oid().to_id_string();
                let mgf_ok = p
                    .mask_gen_algorithm()
                    .map(|m| m.hash.to_id_string() == hash)
                    .unwrap_or(false);
                match (hash.as_str(), p.salt_length(), mgf_ok) {
                    (OID_SHA384, 48, true) => &s::RSA_PSS_2048_8192_SHA384,
                    (OID_SHA256, 32, true) => &s::RSA_PSS_2048_8192_SHA256,
                    (h, salt, _) => return Err(format!("RSASSA-PSS hash {h} salt {salt}")),
                }
            }
            (o, k) => return Err(format!("signature {o} with key {}", k.kind())),
        };
        Ok(self.verify_with(algo, msg, sig))
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::EcP256(_) => "EC P-256",
            Self::EcP384(_) => "EC P-384",
            Self::Rsa(_) => "RSA",
        }
    }
}

/// A pinned root certificate.
#[derive(Debug, Clone)]
pub struct TrustAnchor {
    der: Vec<u8>,
    subject: Vec<u8>,
    key: PublicKey,
    name: String,
}

impl TrustAnchor {
    pub fn from_der(der: Vec<u8>) -> Result<Self, ChainError> {
        let (subject, key, name) = {
            let (_, c) = X509Certificate::from_der(&der).map_err(|e| ChainError::Parse {
                index: 0,
                reason: e.to_string(),
            })?;
            let key = PublicKey::from_spki(c.public_key())
                .map_err(|what| ChainError::Unsupported { index: 0, what })?;
            (c.subject().as_raw().to_vec(), key, c.subject().to_string())
        };
        Ok(Self {
            der,
            subject,
            key,
            name,
        })
    }

    /// Every certificate in a PEM/DER input becomes an anchor.
    pub fn from_pem_or_der(input: &[u8]) -> Result<Vec<Self>, ChainError> {
        split_certs(input)?.into_iter().map(Self::from_der).collect()
    }

    pub fn der(&self) -> &[u8] {
        &self.der
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The subject name as DER (compared byte for byte).
    pub fn subject_raw(&self) -> &[u8] {
        &self.subject
    }

    pub fn key(&self) -> &PublicKey {
        &self.key
    }
}

/// A chain that validated: who the leaf is, which anchor it ends at, and the time window
/// in which every certificate is valid.
#[derive(Debug, Clone)]
pub struct ValidatedChain {
    pub leaf_key: PublicKey,
    pub leaf_subject: String,
    pub anchor: String,
    /// Certificates including the anchor.
    pub len: usize,
    /// Latest notBefore and earliest notAfter over the chain.
    pub valid_from: i64,
    pub valid_until: i64,
    /// Served from [`ChainCache`] rather than verified now.
    pub cached: bool,
}

impl ValidatedChain {
    fn check_time(&self, at: UnixTime) -> Result<(), ChainError> {
        if at.0 < self.valid_from {
            return Err(ChainError::NotYetValid {
                index: 0,
                subject: self.leaf_subject.clone(),
                not_before: self.valid_from,
                at: at.0,
            });
        }
        if at.0 > self.valid_until {
            return Err(ChainError::Expired {
                index: 0,
                subject: self.leaf_subject.clone(),
                not_after: self.valid_until,
                at: at.0,
            });
        }
        Ok(())
    }
}

fn check_critical(index: usize, c: &X509Certificate<'_>) -> Result<(), ChainError> {
    for ext in c.extensions() {
        let oid = ext.oid.to_id_string();
        if ext.critical && !KNOWN_CRITICAL.contains(&oid.as_str()) {
            return Err(ChainError::UnknownCritical { index, oid });
        }
    }
    Ok(())
}

fn check_issuer_is_ca(index: usize, c: &X509Certificate<'_>, below: usize) -> Result<(), ChainError> {
    let subject = c.subject().to_string();
    let bc = c.basic_constraints().map_err(|e| ChainError::Parse {
        index,
        reason: e.to_string(),
    })?;
    let Some(bc) = bc else {
        return Err(ChainError::NotCa { index, subject });
    };
    if !bc.value.ca {
        return Err(ChainError::NotCa { index, subject });
    }
    // `below` = number of intermediate CAs between this one and the leaf.
    if let Some(max) = bc.value.path_len_constraint {
        if below > max as usize {
            return Err(ChainError::PathLen { index, subject });
        }
    }
    if let Ok(Some(ku)) = c.key_usage() {
        if !ku.value.key_cert_sign() {
            return Err(ChainError::NotCa { index, subject });
        }
    }
    Ok(())
}

/// Validate `chain` (DER, leaf first) against `anchors` at time `at`.
pub fn verify_chain(
    chain: &[Vec<u8>],
    anchors: &[TrustAnchor],
    at: UnixTime,
) -> Result<ValidatedChain, ChainError> {
    if chain.is_empty() {
        return Err(ChainError::Empty);
    }
    if chain.len() > MAX_CHAIN_LEN {
        return Err(ChainError::TooLong(chain.len()));
    }
    let certs = chain
        .iter()
        .enumerate()
        .map(|(index, der)| match X509Certificate::from_der(der) {
            Ok(([], c)) => Ok(c),
            Ok(_) => Err(ChainError::Parse {
                index,
                reason: "trailing bytes after certificate".into(),
            }),
            Err(e) => Err(ChainError::Parse {
                index,
                reason: e.to_string(),
            }),
        })
        .collect::<Result<Vec<_>, _>>()?;

    let mut valid_from = i64::MIN;
    let mut valid_until = i64::MAX;
    for (index, c) in certs.iter().enumerate() {
        check_critical(index, c)?;
        let nb = c.validity().not_before.timestamp();
        let na = c.validity().not_after.timestamp();
        let subject = c.subject().to_string();
        if at.0 < nb {
            return Err(ChainError::NotYetValid {
                index,
                subject,
                not_before: nb,
                at: at.0,
            });
        }
        if at.0 > na {
            return Err(ChainError::Expired {
                index,
                subject,
                not_after: na,
                at: at.0,
            });
        }
        valid_from = valid_from.max(nb);
        valid_until = valid_until.min(na);
    }

    // Each certificate signed by the next one.
    for (index, pair) in certs.windows(2).enumerate() {
        let [c, issuer] = pair else { continue };
        if c.issuer().as_raw() != issuer.subject().as_raw() {
            return Err(ChainError::IssuerMismatch {
                index,
                subject: c.subject().to_string(),
                next: index + 1,
            });
        }
        // Intermediates between `issuer` and the leaf: index (0 for the leaf's issuer).
        check_issuer_is_ca(index + 1, issuer, index)?;
        let key = PublicKey::from_spki(issuer.public_key()).map_err(|what| ChainError::Unsupported {
            index: index + 1,
            what,
        })?;
        verify_cert_sig(index, c, &key)?;
    }

    // The chain must end at a pinned root: either it includes it (same bytes) or its
    // last certificate is signed by one.
    let last_i = certs.len() - 1;
    let last_der = chain.get(last_i).map(Vec::as_slice).unwrap_or_default();
    let last = certs.get(last_i).ok_or(ChainError::Empty)?;
    let anchor = if let Some(a) = anchors.iter().find(|a| a.der == last_der) {
        a
    } else {
        let a = anchors
            .iter()
            .find(|a| a.subject == last.issuer().as_raw())
            .ok_or_else(|| ChainError::UntrustedRoot {
                last_issuer: last.issuer().to_string(),
            })?;
        let (_, root) = X509Certificate::from_der(&a.der).map_err(|e| ChainError::Parse {
            index: last_i + 1,
            reason: e.to_string(),
        })?;
        check_issuer_is_ca(last_i + 1, &root, last_i)?;
        let nb = root.validity().not_before.timestamp();
        let na = root.validity().not_after.timestamp();
        if at.0 < nb || at.0 > na {
            return Err(ChainError::Expired {
                index: last_i + 1,
                subject: a.name.clone(),
                not_after: na,
                at: at.0,
            });
        }
        valid_from = valid_from.max(nb);
        valid_until = valid_until.min(na);
        verify_cert_sig(last_i, last, &a.key)?;
        a
    };

    let leaf = certs.first().ok_or(ChainError::Empty)?;
    let leaf_key =
        PublicKey::from_spki(leaf.public_key()).map_err(|what| ChainError::Unsupported { index: 0, what })?;
    let len = if anchor.der == last_der {
        certs.len()
    } else {
        certs.len() + 1
    };
    Ok(ValidatedChain {
        leaf_key,
        leaf_subject: leaf.subject().to_string(),
        anchor: anchor.name.clone(),
        len,
        valid_from,
        valid_until,
        cached: false,
    })
}

fn verify_cert_sig(index: usize, c: &X509Certificate<'_>, key: &PublicKey) -> Result<(), ChainError> {
    // The outer and inner (TBS) algorithm identifiers must agree (RFC 5280 4.1.1.2).
    if c.signature_algorithm != c.tbs_certificate.signature {
        return Err(ChainError::Unsupported {
            index,
            what: "signatureAlgorithm differs from TBS signature".into(),
        });
    }
    let ok = key
        .verify_x509(
            &c.signature_algorithm,
            c.tbs_certificate.as_ref(),
            &c.signature_value.data,
        )
        .map_err(|what| ChainError::Unsupported { index, what })?;
    if ok {
        Ok(())
    } else {
        Err(ChainError::Signature {
            index,
            subject: c.subject().to_string(),
        })
    }
}

/// Bounded cache of validated chains, keyed by a SHA-256 over the exact certificate bytes
/// and the anchor set. Oldest entries are evicted first.
#[derive(Debug)]
pub struct ChainCache(BoundedCache<Arc<ValidatedChain>>);

impl ChainCache {
    pub fn new(capacity: usize) -> Self {
        Self(BoundedCache::new(capacity))
    }

    /// Validate through the cache. Only successes are cached; failures are recomputed.
    pub fn verify(
        &self,
        chain: &[Vec<u8>],
        anchors: &[TrustAnchor],
        at: UnixTime,
    ) -> Result<ValidatedChain, ChainError> {
        let key = cache_key(
            chain
                .iter()
                .map(Vec::as_slice)
                .chain(anchors.iter().map(|a| a.der.as_slice())),
        );
        if let Some(v) = self.0.get(&key) {
            v.check_time(at)?;
            let mut v = (*v).clone();
            v.cached = true;
            return Ok(v);
        }
        let v = verify_chain(chain, anchors, at)?;
        self.0.insert(key, Arc::new(v.clone()));
        Ok(v)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
    use super::*;

    const TV: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/nvidia");
    // 2025-01-01T00:00:00Z
    const AT: UnixTime = UnixTime(1_735_689_600);

    fn read(name: &str) -> Vec<u8> {
        std::fs::read(format!("{TV}/{name}")).unwrap()
    }

    fn root() -> Vec<TrustAnchor> {
        TrustAnchor::from_pem_or_der(&read("nvidia-device-identity-root.pem")).unwrap()
    }

    #[test]
    fn hopper_chain_validates_to_pinned_root() {
        let chain = split_certs(&read("sdk-hopperCertChain.txt")).unwrap();
        assert_eq!(chain.len(), 5);
        let v = verify_chain(&chain, &root(), AT).unwrap();
        assert_eq!(v.len, 5);
        assert!(matches!(v.leaf_key, PublicKey::EcP384(_)));
        assert!(
            v.leaf_subject.contains("GH100 A01 GSP FMC LF"),
            "{}",
            v.leaf_subject
        );
    }

    #[test]
    fn four_cert_chain_completed_by_root() {
        let chain = split_certs(&read("sdk-hopperCertChain.txt")).unwrap();
        let v = verify_chain(&chain[..4], &root(), AT).unwrap();
        assert_eq!(v.len, 5);
    }

    #[test]
    fn rejects_broken_links_wrong_root_and_time() {
        let chain = split_certs(&read("sdk-hopperCertChain.txt")).unwrap();
        // Leaf alone: its issuer is not a pinned root.
        assert!(matches!(
            verify_chain(&chain[..1], &root(), AT),
            Err(ChainError::UntrustedRoot { .. })
        ));
        // A link removed.
        let gap = vec![
            chain[0].clone(),
            chain[2].clone(),
            chain[3].clone(),
            chain[4].clone(),
        ];
        assert!(matches!(
            verify_chain(&gap, &root(), AT),
            Err(ChainError::IssuerMismatch { index: 0, .. })
        ));
        // Wrong root pinned.
        let amd = TrustAnchor::from_pem_or_der(&read("../snp-milan-ark.pem")).unwrap();
        assert!(matches!(
            verify_chain(&chain, &amd, AT),
            Err(ChainError::UntrustedRoot { .. })
        ));
        // Before the intermediate CA existed.
        let e = verify_chain(&chain, &root(), UnixTime(1_600_000_000)).unwrap_err();
        assert_eq!(e.check(), "cert_validity");
        // One bit flipped in the leaf's signature.
        let mut bad = chain.clone();
        let n = bad[0].len();
        bad[0][n - 5] ^= 1;
        let e = verify_chain(&bad, &root(), AT).unwrap_err();
        assert!(
            matches!(
                e,
                ChainError::Signature { index: 0, .. } | ChainError::Parse { index: 0, .. }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn cache_hits_still_check_time() {
        let chain = split_certs(&read("sdk-hopperCertChain.txt")).unwrap();
        let cache = ChainCache::new(2);
        assert!(!cache.verify(&chain, &root(), AT).unwrap().cached);
        assert!(cache.verify(&chain, &root(), AT).unwrap().cached);
        assert!(cache.verify(&chain, &root(), UnixTime(1_600_000_000)).is_err());
        // Different bytes miss the cache and fail on their own merits.
        let mut bad = chain.clone();
        let n = bad[1].len();
        bad[1][n - 5] ^= 1;
        assert!(cache.verify(&bad, &root(), AT).is_err());
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn garbage_is_an_error() {
        for g in [
            &b""[..],
            b"   ",
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            &[0x30, 0x82, 0xff, 0xff],
        ] {
            assert!(split_certs(g)
                .and_then(|c| verify_chain(&c, &root(), AT))
                .is_err());
        }
    }
}
