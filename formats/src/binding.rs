//! The round nonce, the agent's session keys and the binding value that ties every piece
//! of hardware evidence of one round together (ARCHITECTURE.md, "Evidence and binding"):
//!
//! ```text
//! binding = SHA-256("custody-binding-v1" || nonce || x25519_public || ed25519_public)
//! ```
//!
//! The binding goes, unchanged, into TPM2_Quote `extraData`, SNP `report_data[0..32]`
//! (the other 32 bytes zero) and the NVIDIA SPDM requester nonce.

use aws_lc_rs::digest;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Domain separation label of the binding hash.
pub const BINDING_LABEL: &[u8] = b"custody-binding-v1";

/// Length of a verifier nonce and of the binding value.
pub const NONCE_LEN: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BindingError {
    #[error("{what} must be exactly {expected} bytes, got {got}")]
    Length {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("{what} is not valid hex: {reason}")]
    Hex { what: &'static str, reason: String },
}

fn exact<const N: usize>(what: &'static str, b: &[u8]) -> Result<[u8; N], BindingError> {
    <[u8; N]>::try_from(b).map_err(|_| BindingError::Length {
        what,
        expected: N,
        got: b.len(),
    })
}

/// A verifier nonce: 32 random bytes, single use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Nonce(#[serde(with = "serde_bytes_array")] pub [u8; NONCE_LEN]);

impl Nonce {
    pub fn from_slice(b: &[u8]) -> Result<Self, BindingError> {
        exact("nonce", b).map(Self)
    }

    /// Parse hex, rejecting any length other than 32 bytes (64 hex digits).
    pub fn from_hex(s: &str) -> Result<Self, BindingError> {
        let b = hex::decode(s.trim()).map_err(|e| BindingError::Hex {
            what: "nonce",
            reason: e.to_string(),
        })?;
        Self::from_slice(&b)
    }

    pub fn as_bytes(&self) -> &[u8; NONCE_LEN] {
        &self.0
    }
}

/// The agent's per-boot public session keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionKeys {
    /// X25519 public key that checkpoints are sealed to (HPKE, RFC 9180).
    #[serde(with = "serde_bytes_array")]
    pub x25519: [u8; 32],
    /// Ed25519 public key that answers timed locality challenges.
    #[serde(with = "serde_bytes_array")]
    pub ed25519: [u8; 32],
}

impl SessionKeys {
    pub fn from_slices(x25519: &[u8], ed25519: &[u8]) -> Result<Self, BindingError> {
        Ok(Self {
            x25519: exact("x25519 public key", x25519)?,
            ed25519: exact("ed25519 public key", ed25519)?,
        })
    }
}

/// The 32-byte value every piece of evidence of a round must carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Binding(pub [u8; 32]);

impl Binding {
    pub fn compute(nonce: &Nonce, keys: &SessionKeys) -> Self {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(BINDING_LABEL);
        ctx.update(&nonce.0);
        ctx.update(&keys.x25519);
        ctx.update(&keys.ed25519);
        let d = ctx.finish();
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        Self(out)
    }

    /// The 64-byte SNP `report_data` this binding expects: binding, then 32 zero bytes.
    pub fn snp_report_data(&self) -> [u8; 64] {
        let mut rd = [0u8; 64];
        rd[..32].copy_from_slice(&self.0);
        rd
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// Serde for fixed-size byte arrays as CBOR byte strings (not arrays of integers).
pub(crate) mod serde_bytes_array {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer, const N: usize>(v: &[u8; N], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(d: D) -> Result<[u8; N], D::Error> {
        let v: serde_bytes_vec::ByteBuf = Deserialize::deserialize(d)?;
        <[u8; N]>::try_from(v.0.as_slice())
            .map_err(|_| D::Error::invalid_length(v.0.len(), &"a byte string of the exact length"))
    }

    pub(crate) mod serde_bytes_vec {
        use serde::de::{Deserialize, Deserializer, SeqAccess, Visitor};
        use std::fmt;

        /// A byte buffer that deserializes from a CBOR byte string.
        #[derive(Debug)]
        pub struct ByteBuf(pub Vec<u8>);

        impl<'de> Deserialize<'de> for ByteBuf {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = ByteBuf;
                    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                        f.write_str("a byte string")
                    }
                    fn visit_bytes<E>(self, v: &[u8]) -> Result<ByteBuf, E> {
                        Ok(ByteBuf(v.to_vec()))
                    }
                    fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<ByteBuf, E> {
                        Ok(ByteBuf(v))
                    }
                    // Byte strings only: an array of integers is a different encoding.
                    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<ByteBuf, A::Error> {
                        Err(serde::de::Error::custom("expected a byte string, found an array"))
                    }
                }
                // `deserialize_byte_buf`: ciborium's `deserialize_bytes` refuses a byte
                // string longer than its 4 KiB scratch buffer (an AMD ASK+ARK PEM is more).
                d.deserialize_byte_buf(V)
            }
        }
    }
}

/// Serde for `Vec<u8>` as a CBOR byte string.
pub(crate) mod serde_bytes_vec {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let b: super::serde_bytes_array::serde_bytes_vec::ByteBuf = Deserialize::deserialize(d)?;
        Ok(b.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binding_known_answer() {
        // Independent computation: printf 'custody-binding-v1' + 32x00 + 32x11 + 32x22 | sha256sum
        let n = Nonce([0u8; 32]);
        let k = SessionKeys {
            x25519: [0x11; 32],
            ed25519: [0x22; 32],
        };
        let b = Binding::compute(&n, &k);
        assert_eq!(
            hex::encode(b.0),
            "8801173da8c29cab9363dc51766cb024845cff90b0cdf31ed64a6f5a5e116288"
        );
        let rd = b.snp_report_data();
        assert_eq!(&rd[..32], &b.0);
        assert_eq!(rd[32..], [0u8; 32]);
    }

    #[test]
    fn nonce_rejects_wrong_lengths() {
        assert!(Nonce::from_hex(&"ab".repeat(32)).is_ok());
        for n in [0usize, 31, 33, 64] {
            let e = Nonce::from_hex(&"ab".repeat(n)).unwrap_err();
            assert!(matches!(e, BindingError::Length { got, .. } if got == n), "{n}");
        }
        assert!(matches!(Nonce::from_hex("zz"), Err(BindingError::Hex { .. })));
    }
}
