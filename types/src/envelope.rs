//! The COSE_Sign1 envelope of what the verifier's key signs: migration tickets and deny
//! lists (and, in their own modules, attestation results). ES256, protected header
//! `{1: -7, 3: content type, 4: kid}` with the RFC 7638 kid, empty unprotected header,
//! no external AAD, the payload attached; the content type tells the messages apart, so
//! a signature over one never verifies as another.

use crate::key::VerifierKey;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, UnparsedPublicKey, ECDSA_P256_SHA256_FIXED};
use coset::{iana, CborSerializable, CoseSign1, CoseSign1Builder, HeaderBuilder, TaggedCborSerializable};

/// Why an envelope was refused; each message type maps it to its own named checks.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("{0}")]
    /// Not a COSE_Sign1 within the size bound, or no payload.
    Format(String),
    /// Algorithm, header or signature.
    #[error("{0}")]
    Signature(String),
    /// Another message type's content type.
    #[error("content type {found}, want {want}")]
    ContentType { want: &'static str, found: String },
}

/// Sign `payload` as a tagged COSE_Sign1 of `content_type`.
pub fn sign(
    key: &EcdsaKeyPair,
    content_type: &'static str,
    payload: Vec<u8>,
) -> Result<Vec<u8>, EnvelopeError> {
    let kid = VerifierKey::from_sec1(key.public_key().as_ref())
        .map_err(|e| EnvelopeError::Signature(e.to_string()))?
        .kid()
        .to_vec();
    let protected = HeaderBuilder::new()
        .algorithm(iana::Algorithm::ES256)
        .content_type(content_type.to_owned())
        .key_id(kid)
        .build();
    let rng = SystemRandom::new();
    let sign1 = CoseSign1Builder::new()
        .protected(protected)
        .payload(payload)
        .try_create_signature(b"", |tbs| {
            key.sign(&rng, tbs)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| EnvelopeError::Signature("ECDSA signing failed".into()))
        })?
        .build();
    sign1
        .to_tagged_vec()
        .map_err(|e| EnvelopeError::Format(e.to_string()))
}

/// Check an envelope against the pinned verifier key (uncompressed SEC1 P-256 point) and
/// return its payload. Order: structure, algorithm, content type, kid, signature.
pub fn open(
    bytes: &[u8],
    verifier_public_sec1: &[u8],
    content_type: &'static str,
    max_len: usize,
) -> Result<Vec<u8>, EnvelopeError> {
    if bytes.len() > max_len {
        return Err(EnvelopeError::Format(format!(
            "{} bytes, more than {max_len}",
            bytes.len()
        )));
    }
    let sign1 = CoseSign1::from_tagged_slice(bytes)
        .or_else(|_| CoseSign1::from_slice(bytes))
        .map_err(|e| EnvelopeError::Format(format!("not a COSE_Sign1: {e}")))?;
    let key = VerifierKey::from_sec1(verifier_public_sec1)
        .map_err(|e| EnvelopeError::Signature(format!("verifier key: {e}")))?;
    let p = &sign1.protected.header;
    if p.alg
        != Some(coset::RegisteredLabelWithPrivate::Assigned(
            iana::Algorithm::ES256,
        ))
    {
        return Err(EnvelopeError::Signature(format!(
            "protected alg {:?}, want ES256",
            p.alg
        )));
    }
    if sign1.unprotected.alg.is_some() || !p.crit.is_empty() {
        return Err(EnvelopeError::Signature(
            "alg in the unprotected header or critical parameters".into(),
        ));
    }
    if p.content_type != Some(coset::ContentType::Text(content_type.to_owned()))
        || sign1.unprotected.content_type.is_some()
    {
        return Err(EnvelopeError::ContentType {
            want: content_type,
            found: format!("{:?}", p.content_type),
        });
    }
    if !p.key_id.is_empty() && p.key_id.as_slice() != key.kid() {
        return Err(EnvelopeError::Signature("kid is not the verifier key's".into()));
    }
    let pk = UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, key.as_sec1());
    sign1.verify_signature(b"", |sig, tbs| {
        pk.verify(tbs, sig)
            .map_err(|_| EnvelopeError::Signature("signature does not verify".into()))
    })?;
    sign1
        .payload
        .ok_or_else(|| EnvelopeError::Format("detached payload".into()))
}
