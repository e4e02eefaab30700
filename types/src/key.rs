//! The verifier's key: one P-256 key that signs attestation results (EAR), migration
//! tickets and deny lists, told apart by their content types (see [`crate::envelope`]).

use aws_lc_rs::digest;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

/// A key that is not a P-256 uncompressed point.
#[derive(Debug, thiserror::Error)]
#[error("P-256 public key must be a 65-byte uncompressed point, got {0} bytes")]
pub struct KeyError(pub usize);

/// The verifier's public key: a P-256 point (uncompressed SEC1) and its COSE kid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierKey {
    point: Vec<u8>,
    kid: Vec<u8>,
}

impl VerifierKey {
    /// From the 65-byte uncompressed point `04 || x || y`.
    pub fn from_sec1(point: &[u8]) -> Result<Self, KeyError> {
        if point.len() != 65 || point.first() != Some(&0x04) {
            return Err(KeyError(point.len()));
        }
        let kid = digest::digest(&digest::SHA256, Self::thumbprint_input(point).as_bytes())
            .as_ref()
            .to_vec();
        Ok(Self {
            point: point.to_vec(),
            kid,
        })
    }

    fn coords(point: &[u8]) -> (&[u8], &[u8]) {
        (
            point.get(1..33).unwrap_or_default(),
            point.get(33..65).unwrap_or_default(),
        )
    }

    /// RFC 7638 canonical JWK members, in order.
    fn thumbprint_input(point: &[u8]) -> String {
        let (x, y) = Self::coords(point);
        format!(
            r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
            URL_SAFE_NO_PAD.encode(x),
            URL_SAFE_NO_PAD.encode(y)
        )
    }

    pub fn as_sec1(&self) -> &[u8] {
        &self.point
    }

    /// The COSE kid: the RFC 7638 JWK thumbprint (SHA-256).
    pub fn kid(&self) -> &[u8] {
        &self.kid
    }

    /// The key as a JWK (what relying parties and Veraison's `ear` crate take).
    pub fn to_jwk(&self) -> String {
        let (x, y) = Self::coords(&self.point);
        format!(
            r#"{{"kty":"EC","crv":"P-256","alg":"ES256","kid":"{}","x":"{}","y":"{}"}}"#,
            URL_SAFE_NO_PAD.encode(&self.kid),
            URL_SAFE_NO_PAD.encode(x),
            URL_SAFE_NO_PAD.encode(y)
        )
    }
}
