//! Per-boot session keys (ARCHITECTURE.md, "Evidence and binding"): an X25519 key that
//! checkpoints are sealed to (HPKE) and an Ed25519 key that answers timed locality
//! challenges. Both public keys are folded into every round's binding, so hardware
//! evidence vouches for exactly these keys. The private halves never leave this process
//! and are never printed: `Debug` shows the public keys only.

use aws_lc_rs::agreement::{self, PrivateKey, X25519};
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use custody_formats::binding::{Binding, Nonce, SessionKeys};
use std::fmt;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum SessionError {
    #[error("could not generate the {0} session key")]
    Generate(&'static str),
    #[error("the {what} public key has {got} bytes, expected 32")]
    PublicKeyLength { what: &'static str, got: usize },
}

/// The agent's session for this boot.
pub struct Session {
    x25519: PrivateKey,
    ed25519: Ed25519KeyPair,
    public: SessionKeys,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Fresh keys from the system's CSPRNG (aws-lc).
    pub fn generate() -> Result<Self, SessionError> {
        let x25519 = PrivateKey::generate(&X25519).map_err(|_| SessionError::Generate("X25519"))?;
        let xpub = x25519
            .compute_public_key()
            .map_err(|_| SessionError::Generate("X25519"))?;
        let ed25519 = Ed25519KeyPair::generate().map_err(|_| SessionError::Generate("Ed25519"))?;
        let exact = |what, b: &[u8]| {
            <[u8; 32]>::try_from(b).map_err(|_| SessionError::PublicKeyLength { what, got: b.len() })
        };
        let public = SessionKeys {
            x25519: exact("X25519", xpub.as_ref())?,
            ed25519: exact("Ed25519", ed25519.public_key().as_ref())?,
        };
        Ok(Self {
            x25519,
            ed25519,
            public,
        })
    }

    pub fn public_keys(&self) -> &SessionKeys {
        &self.public
    }

    /// The value this round's evidence must carry.
    pub fn binding(&self, nonce: &Nonce) -> Binding {
        Binding::compute(nonce, &self.public)
    }

    /// Sign a locality challenge with the attested Ed25519 key.
    pub fn sign_challenge(&self, challenge: &[u8]) -> [u8; 64] {
        let sig = self.ed25519.sign(challenge);
        let mut out = [0u8; 64];
        out.copy_from_slice(sig.as_ref());
        out
    }

    /// The X25519 private key as HPKE (RFC 9180) wants it: the raw RFC 7748 bytes, zeroed
    /// when the returned key drops. For the mover's receiver (unwrapping a data key).
    pub fn x25519_secret_for_hpke(&self) -> Result<rustls::crypto::hpke::HpkePrivateKey, SessionError> {
        use aws_lc_rs::encoding::{AsBigEndian, Curve25519SeedBin};
        let raw: Curve25519SeedBin<'static> = self
            .x25519
            .as_be_bytes()
            .map_err(|_| SessionError::Generate("X25519 export"))?;
        Ok(rustls::crypto::hpke::HpkePrivateKey::from(raw.as_ref().to_vec()))
    }

    /// X25519 Diffie-Hellman with a peer's public key (the HPKE receiver side uses it).
    pub fn x25519_agree(&self, peer_public: &[u8; 32]) -> Result<[u8; 32], SessionError> {
        let peer = agreement::UnparsedPublicKey::new(&X25519, peer_public);
        agreement::agree(
            &self.x25519,
            peer,
            SessionError::Generate("X25519 shared secret"),
            |s| {
                <[u8; 32]>::try_from(s).map_err(|_| SessionError::PublicKeyLength {
                    what: "X25519 shared secret",
                    got: s.len(),
                })
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::signature::{UnparsedPublicKey, ED25519};

    #[test]
    fn keys_are_fresh_bound_and_usable() {
        let a = Session::generate().unwrap();
        let b = Session::generate().unwrap();
        assert_ne!(a.public_keys(), b.public_keys());
        let nonce = Nonce([9; 32]);
        // The binding commits to the session's public keys: another session, another value.
        assert_eq!(a.binding(&nonce), Binding::compute(&nonce, a.public_keys()));
        assert_ne!(a.binding(&nonce), b.binding(&nonce));
        // Challenge signatures verify with the public key in the binding, and only for
        // the challenge signed.
        let sig = a.sign_challenge(b"landmark-7 challenge");
        let pk = UnparsedPublicKey::new(&ED25519, a.public_keys().ed25519);
        assert!(pk.verify(b"landmark-7 challenge", &sig).is_ok());
        assert!(pk.verify(b"landmark-8 challenge", &sig).is_err());
        // Both sides of X25519 agree.
        let ab = a.x25519_agree(&b.public_keys().x25519).unwrap();
        let ba = b.x25519_agree(&a.public_keys().x25519).unwrap();
        assert_eq!(ab, ba);
        // The HPKE form of the X25519 key is the raw scalar the public key derives from.
        let sk = a.x25519_secret_for_hpke().unwrap();
        let again = PrivateKey::from_private_key(&X25519, sk.secret_bytes()).unwrap();
        assert_eq!(
            again.compute_public_key().unwrap().as_ref(),
            &a.public_keys().x25519
        );
        // Debug never shows private material.
        let dbg = format!("{a:?}");
        assert!(dbg.contains("public") && !dbg.to_lowercase().contains("private"));
    }
}
