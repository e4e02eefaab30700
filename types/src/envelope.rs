//! The one COSE_Sign1 envelope (RFC 9052) of every message Custody signs: attestation
//! results (EAR), migration tickets, deny lists, receipts, registries. Each message type
//! has a [`Profile`]: its content type, its algorithm, its size bound. The checks are the
//! same for all, in this order:
//!
//! 1. `Format`: at most `max_len` bytes, a COSE_Sign1 (tag 18, or untagged unless the
//!    profile requires the tag), nothing after it;
//! 2. `Algorithm`: the protected `alg` is the profile's, no `alg` unprotected, no `crit`;
//! 3. `ContentType`: the protected content type is the profile's (a `foreign` profile
//!    also takes none: EARs from other issuers such as Veraison's `ear` crate name none),
//!    none unprotected; so a signature over one message type never verifies as another
//!    signed by the same key;
//! 4. `KeyId`: a kid only in the protected header (a `foreign` profile also takes it
//!    unprotected), present when the profile requires one, and the key's;
//! 5. `Format`: the payload is attached;
//! 6. `Signature` over the Sig_structure with no external AAD.
//!
//! Each message type maps these to its own named checks (`ticket_signature`,
//! `ear_format`, ...).

use crate::key::VerifierKey;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, UnparsedPublicKey, ECDSA_P256_SHA256_FIXED, ED25519};
use coset::{iana, CborSerializable, CoseSign1, CoseSign1Builder, HeaderBuilder, TaggedCborSerializable};

/// The signature algorithms Custody uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    /// ECDSA P-256 SHA-256: the verifier's key, registry authorities.
    Es256,
    /// Ed25519: a node's attested session key (receipts).
    EdDsa,
}

impl Alg {
    fn iana(self) -> iana::Algorithm {
        match self {
            Self::Es256 => iana::Algorithm::ES256,
            Self::EdDsa => iana::Algorithm::EdDSA,
        }
    }
}

/// How one message type is enveloped.
#[derive(Debug, Clone, Copy)]
pub struct Profile {
    pub content_type: &'static str,
    pub alg: Alg,
    /// Largest envelope accepted, bytes.
    pub max_len: usize,
    /// Refuse an untagged COSE_Sign1.
    pub require_tag: bool,
    /// Refuse a message without a protected kid.
    pub require_kid: bool,
    /// Messages other issuers sign too (EAR): no content type, or a kid in the
    /// unprotected header, are accepted.
    pub foreign: bool,
}

/// Why an envelope was refused.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("{0}")]
    Format(String),
    #[error("{0}")]
    Algorithm(String),
    #[error("content type {found}, want {want}")]
    ContentType { want: &'static str, found: String },
    #[error("{0}")]
    KeyId(String),
    #[error("{0}")]
    Signature(String),
}

/// An envelope whose headers and signature verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The kid it named (empty when none).
    pub kid: Vec<u8>,
    pub payload: Vec<u8>,
}

/// Sign `payload` as a tagged COSE_Sign1 of `profile` with `kid` (empty: none); `sign`
/// signs the Sig_structure.
pub fn seal(
    profile: &Profile,
    kid: Vec<u8>,
    payload: Vec<u8>,
    sign: impl FnOnce(&[u8]) -> Option<Vec<u8>>,
) -> Result<Vec<u8>, EnvelopeError> {
    let mut h = HeaderBuilder::new()
        .algorithm(profile.alg.iana())
        .content_type(profile.content_type.to_owned());
    if !kid.is_empty() {
        h = h.key_id(kid);
    }
    let sign1 = CoseSign1Builder::new()
        .protected(h.build())
        .payload(payload)
        .try_create_signature(b"", |tbs| {
            sign(tbs).ok_or_else(|| EnvelopeError::Signature("signing failed".into()))
        })?
        .build();
    sign1
        .to_tagged_vec()
        .map_err(|e| EnvelopeError::Format(e.to_string()))
}

/// Check an envelope of `profile` (steps 1-5 of the module doc), then `verify(kid, tbs,
/// signature)`.
pub fn open(
    bytes: &[u8],
    profile: &Profile,
    verify: impl FnOnce(&[u8], &[u8], &[u8]) -> Result<(), EnvelopeError>,
) -> Result<Opened, EnvelopeError> {
    if bytes.len() > profile.max_len {
        return Err(EnvelopeError::Format(format!(
            "{} bytes, more than {}",
            bytes.len(),
            profile.max_len
        )));
    }
    let sign1 = match CoseSign1::from_tagged_slice(bytes) {
        Ok(s) => s,
        Err(_) if !profile.require_tag => CoseSign1::from_slice(bytes)
            .map_err(|e| EnvelopeError::Format(format!("not a COSE_Sign1: {e}")))?,
        Err(e) => return Err(EnvelopeError::Format(format!("not a tagged COSE_Sign1: {e}"))),
    };
    let (p, u) = (&sign1.protected.header, &sign1.unprotected);
    if p.alg != Some(coset::RegisteredLabelWithPrivate::Assigned(profile.alg.iana())) {
        return Err(EnvelopeError::Algorithm(format!(
            "protected alg {:?}, want {:?}",
            p.alg, profile.alg
        )));
    }
    if u.alg.is_some() {
        return Err(EnvelopeError::Algorithm("alg in the unprotected header".into()));
    }
    if !p.crit.is_empty() || !u.crit.is_empty() {
        return Err(EnvelopeError::Algorithm(
            "critical header parameters not understood".into(),
        ));
    }
    let named = match &p.content_type {
        None => profile.foreign,
        Some(t) => *t == coset::ContentType::Text(profile.content_type.to_owned()),
    };
    if !named || u.content_type.is_some() {
        return Err(EnvelopeError::ContentType {
            want: profile.content_type,
            found: format!("{:?} (unprotected {:?})", p.content_type, u.content_type),
        });
    }
    let kid = match (p.key_id.is_empty(), u.key_id.is_empty()) {
        (_, true) => p.key_id.clone(),
        (true, false) if profile.foreign => u.key_id.clone(),
        _ => return Err(EnvelopeError::KeyId("a kid in the unprotected header".into())),
    };
    if profile.require_kid && p.key_id.is_empty() {
        return Err(EnvelopeError::KeyId("no protected kid".into()));
    }
    if sign1.payload.is_none() {
        return Err(EnvelopeError::Format("detached payload".into()));
    }
    sign1.verify_signature(b"", |sig, tbs| verify(&kid, tbs, sig))?;
    let payload = sign1.payload.unwrap_or_default();
    Ok(Opened { kid, payload })
}

/// Sign with the verifier's key (ES256, kid = its RFC 7638 thumbprint).
pub fn seal_es256(profile: &Profile, key: &EcdsaKeyPair, payload: Vec<u8>) -> Result<Vec<u8>, EnvelopeError> {
    let kid = VerifierKey::from_sec1(key.public_key().as_ref())
        .map_err(|e| EnvelopeError::Signature(e.to_string()))?
        .kid()
        .to_vec();
    let rng = SystemRandom::new();
    seal(profile, kid, payload, |tbs| {
        key.sign(&rng, tbs).ok().map(|s| s.as_ref().to_vec())
    })
}

/// Open an envelope signed with `key` (ES256); a kid, if named, must be the key's.
pub fn open_es256(bytes: &[u8], profile: &Profile, key: &VerifierKey) -> Result<Vec<u8>, EnvelopeError> {
    open(bytes, profile, |kid, tbs, sig| {
        if !kid.is_empty() && kid != key.kid() {
            return Err(EnvelopeError::KeyId("the kid is not the verifier key's".into()));
        }
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, key.as_sec1())
            .verify(tbs, sig)
            .map_err(|_| EnvelopeError::Signature("signature does not verify".into()))
    })
    .map(|o| o.payload)
}

/// Open an envelope signed with an Ed25519 public key (EdDSA).
pub fn open_ed25519(bytes: &[u8], profile: &Profile, key: &[u8; 32]) -> Result<Vec<u8>, EnvelopeError> {
    open(bytes, profile, |_, tbs, sig| {
        UnparsedPublicKey::new(&ED25519, key)
            .verify(tbs, sig)
            .map_err(|_| EnvelopeError::Signature("signature does not verify".into()))
    })
    .map(|o| o.payload)
}

#[cfg(test)]
mod tests;
