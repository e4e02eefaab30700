//! Keys, signing and verification.
//!
//! # Wire format
//!
//! `COSE_Sign1` (RFC 9052, tag 18) with protected header `{1: -7 (ES256), 3:
//! "application/vnd.custody.registry+cbor", 4: kid}` and an empty unprotected header. kid is
//! the SHA-256 of the authority's SEC1 uncompressed public key (65 bytes). The payload is
//! the registry's canonical CBOR ([`Registry::to_cbor`]); the registry digest is the
//! SHA-256 of those payload bytes.

use crate::model::{Registry, MAX_REGISTRY_BYTES};
use crate::RegistryError;
use aws_lc_rs::digest;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    EcdsaKeyPair, KeyPair, UnparsedPublicKey, ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING,
};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use coset::{iana, CoseSign1, CoseSign1Builder, HeaderBuilder, TaggedCborSerializable};
use custody_types::envelope::{self, Alg, EnvelopeError, Opened, Profile};
use std::fmt;

/// The protected content type of a signed registry.
pub const CONTENT_TYPE: &str = "application/vnd.custody.registry+cbor";

/// DER prefix of a P-256 SubjectPublicKeyInfo (id-ecPublicKey, prime256v1, BIT STRING of
/// 66 bytes); the 65-byte point follows.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86,
    0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// The registry authority's signing key: ECDSA P-256.
pub struct RegistryKey {
    pair: EcdsaKeyPair,
    public: AuthorityKey,
}

impl fmt::Debug for RegistryKey {
    // Never the private half.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryKey")
            .field("kid", &self.public.kid_hex())
            .finish()
    }
}

impl RegistryKey {
    /// A fresh random key.
    pub fn generate() -> Result<Self, RegistryError> {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
            .map_err(|_| RegistryError::Key("P-256 key generation failed".into()))?;
        Self::from_pair(pair)
    }

    /// Import a PKCS#8 (v1 or v2) DER P-256 private key.
    pub fn from_pkcs8(der: &[u8]) -> Result<Self, RegistryError> {
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der)
            .map_err(|e| RegistryError::Key(format!("not a P-256 PKCS#8 key: {e}")))?;
        Self::from_pair(pair)
    }

    /// Export as PKCS#8 v1 DER. This is the secret: store it as one.
    pub fn to_pkcs8(&self) -> Result<Vec<u8>, RegistryError> {
        self.pair
            .to_pkcs8v1()
            .map(|d| d.as_ref().to_vec())
            .map_err(|_| RegistryError::Key("PKCS#8 export failed".into()))
    }

    fn from_pair(pair: EcdsaKeyPair) -> Result<Self, RegistryError> {
        let public = AuthorityKey::from_sec1(pair.public_key().as_ref())?;
        Ok(Self { pair, public })
    }

    /// The public half, as verifiers configure it.
    pub fn public(&self) -> &AuthorityKey {
        &self.public
    }
}

/// A registry authority's public key (P-256).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorityKey {
    point: Vec<u8>,
    kid: [u8; 32],
}

impl AuthorityKey {
    /// From the 65-byte uncompressed SEC1 point `04 || x || y`.
    pub fn from_sec1(point: &[u8]) -> Result<Self, RegistryError> {
        if point.len() != 65 || point.first() != Some(&0x04) {
            return Err(RegistryError::Key(format!(
                "P-256 public key must be a 65-byte uncompressed point, got {} bytes",
                point.len()
            )));
        }
        let mut kid = [0u8; 32];
        kid.copy_from_slice(digest::digest(&digest::SHA256, point).as_ref());
        Ok(Self {
            point: point.to_vec(),
            kid,
        })
    }

    /// From a DER SubjectPublicKeyInfo; only P-256 (prime256v1) keys, exactly 91 bytes.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, RegistryError> {
        match der.strip_prefix(&P256_SPKI_PREFIX[..]) {
            Some(point) if der.len() == 91 => Self::from_sec1(point),
            _ => Err(RegistryError::Key(
                "not a P-256 SubjectPublicKeyInfo (91 bytes, id-ecPublicKey prime256v1)".into(),
            )),
        }
    }

    /// From a PEM `PUBLIC KEY` block (SPKI).
    pub fn from_pem(pem: &str) -> Result<Self, RegistryError> {
        let body = pem
            .trim()
            .strip_prefix("-----BEGIN PUBLIC KEY-----")
            .and_then(|r| r.strip_suffix("-----END PUBLIC KEY-----"))
            .ok_or_else(|| RegistryError::Key("not a PEM PUBLIC KEY block".into()))?;
        let b64: String = body.split_whitespace().collect();
        let der = STANDARD
            .decode(b64)
            .map_err(|e| RegistryError::Key(format!("PEM base64: {e}")))?;
        Self::from_spki_der(&der)
    }

    pub fn as_sec1(&self) -> &[u8] {
        &self.point
    }

    pub fn to_spki_der(&self) -> Vec<u8> {
        let mut der = P256_SPKI_PREFIX.to_vec();
        der.extend_from_slice(&self.point);
        der
    }

    pub fn to_pem(&self) -> String {
        let b64 = STANDARD.encode(self.to_spki_der());
        let mut out = String::from("-----BEGIN PUBLIC KEY-----\n");
        for chunk in b64.as_bytes().chunks(64) {
            out.push_str(&String::from_utf8_lossy(chunk));
            out.push('\n');
        }
        out.push_str("-----END PUBLIC KEY-----\n");
        out
    }

    /// The COSE kid: SHA-256 of the SEC1 point.
    pub fn kid(&self) -> &[u8; 32] {
        &self.kid
    }

    pub fn kid_hex(&self) -> String {
        hex::encode(self.kid)
    }
}

/// Signing and verification of registries.
#[derive(Debug)]
pub struct SignedRegistry;

impl SignedRegistry {
    /// Validate, encode and sign. An inconsistent registry is refused, not signed.
    pub fn sign(reg: &Registry, key: &RegistryKey) -> Result<Vec<u8>, RegistryError> {
        reg.validate()?;
        let payload = reg.to_cbor()?;
        Self::sign_payload(payload, key, iana::Algorithm::ES256)
    }

    /// Sign these payload bytes, labelled with `alg` (tests label a wrong one).
    pub(crate) fn sign_payload(
        payload: Vec<u8>,
        key: &RegistryKey,
        alg: iana::Algorithm,
    ) -> Result<Vec<u8>, RegistryError> {
        let protected = HeaderBuilder::new()
            .algorithm(alg)
            .content_type(CONTENT_TYPE.to_owned())
            .key_id(key.public.kid.to_vec())
            .build();
        let rng = SystemRandom::new();
        let sign1 = CoseSign1Builder::new()
            .protected(protected)
            .payload(payload)
            .try_create_signature(b"", |tbs| {
                key.pair
                    .sign(&rng, tbs)
                    .map(|s| s.as_ref().to_vec())
                    .map_err(|_| RegistryError::Key("ECDSA signing failed".into()))
            })?
            .build();
        sign1
            .to_tagged_vec()
            .map_err(|e| RegistryError::Cose(e.to_string()))
    }

    /// Verify a signed registry against the configured authorities (checks in the crate
    /// doc). The only way to a [`VerifiedRegistry`].
    pub fn verify(bytes: &[u8], authorities: &[AuthorityKey]) -> Result<VerifiedRegistry, RegistryError> {
        if authorities.is_empty() {
            // Headers first, so a malformed file says so even where no authority is set.
            parse(bytes)?;
            return Err(RegistryError::NoAuthority);
        }
        // The authority the kid names, found inside the envelope's checks (after the
        // headers, before the signature).
        let mut found: Option<&AuthorityKey> = None;
        let mut unknown: Option<String> = None;
        let opened = envelope::open(bytes, &PROFILE, |kid, tbs, sig| {
            let Some(a) = authorities.iter().find(|a| a.kid.as_slice() == kid) else {
                unknown = Some(hex::encode(kid));
                return Err(EnvelopeError::KeyId(
                    "no configured authority has this kid".into(),
                ));
            };
            found = Some(a);
            UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, a.as_sec1())
                .verify(tbs, sig)
                .map_err(|_| EnvelopeError::Signature("signature does not verify".into()))
        });
        let opened = match (opened, unknown, found) {
            (Ok(o), _, Some(a)) => (o, a),
            (Err(EnvelopeError::KeyId(_)), Some(kid), _) => {
                return Err(RegistryError::UnknownAuthority { kid })
            }
            (Err(EnvelopeError::Signature(_)), _, Some(a)) => {
                return Err(RegistryError::Signature { kid: a.kid_hex() })
            }
            (Err(EnvelopeError::Format(m)), _, _) => return Err(RegistryError::Cose(m)),
            (Err(e), _, _) => return Err(RegistryError::Algorithm(e.to_string())),
            (Ok(_), _, None) => {
                return Err(RegistryError::Algorithm(
                    "no authority checked the signature".into(),
                ))
            }
        };
        let (Opened { payload, .. }, authority) = opened;
        let payload = payload.as_slice();
        let registry = Registry::decode(payload)?;
        registry.validate()?;
        let order = registry.ownership_order()?;
        Ok(VerifiedRegistry {
            digest: hex::encode(digest::digest(&digest::SHA256, payload)),
            kid: authority.kid_hex(),
            registry,
            order,
        })
    }

    /// The registry inside a signed file and the kid it claims, WITHOUT verifying anything
    /// but its encoding: for display marked unverified, never for decisions.
    pub fn inspect_unverified(bytes: &[u8]) -> Result<(Registry, String), RegistryError> {
        let sign1 = parse(bytes)?;
        let kid = hex::encode(&sign1.protected.header.key_id);
        let payload = sign1
            .payload
            .as_deref()
            .ok_or_else(|| RegistryError::Cose("detached payload".into()))?;
        Ok((Registry::decode(payload)?, kid))
    }

    /// True when the bytes are a tagged COSE_Sign1 (a signed registry), not a bare one.
    pub fn looks_signed(bytes: &[u8]) -> bool {
        bytes.len() <= MAX_REGISTRY_BYTES + 4096 && CoseSign1::from_tagged_slice(bytes).is_ok()
    }
}

fn parse(bytes: &[u8]) -> Result<CoseSign1, RegistryError> {
    // Room for the headers and signature around the largest payload.
    if bytes.len() > MAX_REGISTRY_BYTES + 4096 {
        return Err(RegistryError::Cose(format!("{} bytes, too large", bytes.len())));
    }
    // Tag 18 required: sign always writes it. coset refuses trailing bytes.
    CoseSign1::from_tagged_slice(bytes).map_err(|e| RegistryError::Cose(e.to_string()))
}

/// A registry's envelope (see `custody_types::envelope`): tag 18 and a protected kid
/// required.
pub const PROFILE: Profile = Profile {
    content_type: CONTENT_TYPE,
    alg: Alg::Es256,
    // Room for the headers and signature around the largest payload.
    max_len: MAX_REGISTRY_BYTES + 4096,
    require_tag: true,
    require_kid: true,
    foreign: false,
};

/// A registry whose signature by a configured authority verified and whose content is
/// consistent.
#[derive(Debug, Clone)]
pub struct VerifiedRegistry {
    registry: Registry,
    digest: String,
    kid: String,
    /// Entities, each after every entity it holds (for the derivation).
    pub(crate) order: Vec<usize>,
}

impl VerifiedRegistry {
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// SHA-256 of the signed payload, hex.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// The authority's kid that verified it, hex.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn version(&self) -> u64 {
        self.registry.version
    }
}
