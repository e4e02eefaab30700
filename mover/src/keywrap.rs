//! The per-move data key and its wrapping to the destination with HPKE (RFC 9180) base
//! mode: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM (suite 0x0020/0x0001/0x0002),
//! rustls's maintained aws-lc-rs implementation.
//!
//! `info = "custody-mover-v1" || ticket id (16 bytes)`, `aad` = the stream header bytes,
//! plaintext = the 32-byte data key. Wire: `enc` (32 bytes) and the ciphertext (48 bytes).

use crate::error::MoverError;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use rustls::crypto::aws_lc_rs::hpke::DH_KEM_X25519_HKDF_SHA256_AES_256;
use rustls::crypto::hpke::{EncapsulatedSecret, Hpke, HpkePrivateKey, HpkePublicKey};
use std::fmt;

/// HPKE info prefix.
pub const HPKE_INFO_PREFIX: &[u8] = b"custody-mover-v1";
/// `enc` length for DHKEM(X25519).
pub const ENC_LEN: usize = 32;
/// Wrapped key length: 32-byte key + 16-byte tag.
pub const WRAPPED_LEN: usize = 48;

/// A move's 32-byte AES-256-GCM data key. Never printed; zeroed on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct DataKey([u8; 32]);

impl DataKey {
    /// A fresh key from the system CSPRNG.
    pub fn generate() -> Result<Self, MoverError> {
        let mut k = [0u8; 32];
        SystemRandom::new()
            .fill(&mut k)
            .map_err(|_| MoverError::KeyWrap("random data key".into()))?;
        Ok(Self(k))
    }

    /// A known key (tests, test vectors).
    pub fn from_bytes(k: [u8; 32]) -> Self {
        Self(k)
    }

    pub(crate) fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl Drop for DataKey {
    fn drop(&mut self) {
        self.0 = [0; 32];
        std::hint::black_box(&self.0);
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(..)")
    }
}

/// The data key sealed to the destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedKey {
    pub enc: [u8; ENC_LEN],
    pub ciphertext: [u8; WRAPPED_LEN],
}

fn info(ticket_id: &[u8; 16]) -> Vec<u8> {
    let mut i = HPKE_INFO_PREFIX.to_vec();
    i.extend_from_slice(ticket_id);
    i
}

/// Seal `key` to the destination's X25519 public key.
pub fn wrap(
    key: &DataKey,
    dst_x25519: &[u8; 32],
    ticket_id: &[u8; 16],
    stream_header: &[u8],
) -> Result<WrappedKey, MoverError> {
    let (enc, ct) = DH_KEM_X25519_HKDF_SHA256_AES_256
        .seal(
            &info(ticket_id),
            stream_header,
            key.bytes(),
            &HpkePublicKey(dst_x25519.to_vec()),
        )
        .map_err(|e| MoverError::KeyWrap(format!("HPKE seal: {e}")))?;
    Ok(WrappedKey {
        enc: enc
            .0
            .as_slice()
            .try_into()
            .map_err(|_| MoverError::KeyWrap("enc length".into()))?,
        ciphertext: ct
            .as_slice()
            .try_into()
            .map_err(|_| MoverError::KeyWrap("wrapped key length".into()))?,
    })
}

/// Open with this node's X25519 private key (`wrong_recipient` when it does not open).
pub fn unwrap(
    wrapped: &WrappedKey,
    my_x25519_secret: &HpkePrivateKey,
    ticket_id: &[u8; 16],
    stream_header: &[u8],
) -> Result<DataKey, MoverError> {
    let pt = DH_KEM_X25519_HKDF_SHA256_AES_256
        .open(
            &EncapsulatedSecret(wrapped.enc.to_vec()),
            &info(ticket_id),
            stream_header,
            &wrapped.ciphertext,
            my_x25519_secret,
        )
        .map_err(|_| MoverError::WrongRecipient)?;
    let k: [u8; 32] = pt.as_slice().try_into().map_err(|_| MoverError::WrongRecipient)?;
    Ok(DataKey(k))
}

/// A fresh X25519 key pair in HPKE form (tests and tools; agents use their session key).
pub fn generate_x25519() -> Result<([u8; 32], HpkePrivateKey), MoverError> {
    let (pk, sk) = DH_KEM_X25519_HKDF_SHA256_AES_256
        .generate_key_pair()
        .map_err(|e| MoverError::KeyWrap(format!("X25519 key generation: {e}")))?;
    let pk: [u8; 32] =
        pk.0.as_slice()
            .try_into()
            .map_err(|_| MoverError::KeyWrap("X25519 public key length".into()))?;
    Ok((pk, sk))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use aws_lc_rs::hmac;

    pub(crate) fn h(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    #[test]
    fn wrap_unwrap_and_refusals() {
        let (pk, sk) = generate_x25519().unwrap();
        let (_, other_sk) = generate_x25519().unwrap();
        let key = DataKey::generate().unwrap();
        let w = wrap(&key, &pk, &[5; 16], b"header").unwrap();
        assert_eq!(unwrap(&w, &sk, &[5; 16], b"header").unwrap(), key);
        let wrong = |r: Result<DataKey, MoverError>| matches!(r, Err(MoverError::WrongRecipient));
        assert!(wrong(unwrap(&w, &other_sk, &[5; 16], b"header")));
        assert!(
            wrong(unwrap(&w, &sk, &[6; 16], b"header")),
            "other ticket id (info)"
        );
        assert!(
            wrong(unwrap(&w, &sk, &[5; 16], b"headeR")),
            "other stream header (aad)"
        );
        let mut t = w.clone();
        t.ciphertext[0] ^= 1;
        assert!(wrong(unwrap(&t, &sk, &[5; 16], b"header")));
        assert_eq!(format!("{key:?}"), "DataKey(..)");
    }

    /// rustls's X25519 opener takes the raw RFC 7748 private key bytes: it opens the RFC
    /// 9180 A.1.1 vector (the same KEM and KDF; AES-128-GCM is A.1's AEAD).
    #[test]
    fn rfc9180_a1_opens_with_raw_x25519_secret() {
        use rustls::crypto::aws_lc_rs::hpke::DH_KEM_X25519_HKDF_SHA256_AES_128;
        let sk = HpkePrivateKey::from(h(
            "4612c550263fc8ad58375df3f557aac531d26850903e55a9f23f21d8534e8ac8",
        ));
        let pt = DH_KEM_X25519_HKDF_SHA256_AES_128
            .open(
                &EncapsulatedSecret(h("37fda3567bdbd628e88668c3c8d7e97d1d1253b6d4ea6d44c150f741f1bf4431")),
                &h("4f6465206f6e2061204772656369616e2055726e"),
                &h("436f756e742d30"),
                &h("f938558b5d72f1a23810b4be2ab4f84331acc02fc97babc53a52ae8218a355a96d8770ac83d07bea87e13c512a"),
                &sk,
            )
            .unwrap();
        assert_eq!(pt, b"Beauty is truth, truth beauty");
    }

    // An independent RFC 9180 base-mode sender (HMAC-SHA256 from aws-lc-rs, X25519 from a
    // fixed ephemeral key), checked against A.1.1's published key schedule, then used with
    // Nk = 32 (AES-256-GCM, aead_id 2) to produce a known answer the mover's unwrap opens.
    fn extract(salt: &[u8], ikm: &[u8]) -> Vec<u8> {
        let k = hmac::Key::new(hmac::HMAC_SHA256, if salt.is_empty() { &[0u8; 32] } else { salt });
        hmac::sign(&k, ikm).as_ref().to_vec()
    }
    fn expand(prk: &[u8], info: &[u8], len: usize) -> Vec<u8> {
        let k = hmac::Key::new(hmac::HMAC_SHA256, prk);
        let (mut out, mut t, mut i) = (Vec::new(), Vec::new(), 1u8);
        while out.len() < len {
            let mut m = t.clone();
            m.extend_from_slice(info);
            m.push(i);
            t = hmac::sign(&k, &m).as_ref().to_vec();
            out.extend_from_slice(&t);
            i += 1;
        }
        out.truncate(len);
        out
    }
    fn labeled_extract(suite: &[u8], salt: &[u8], label: &[u8], ikm: &[u8]) -> Vec<u8> {
        extract(salt, &[b"HPKE-v1", suite, label, ikm].concat())
    }
    fn labeled_expand(suite: &[u8], prk: &[u8], label: &[u8], info: &[u8], len: usize) -> Vec<u8> {
        let l = u16::try_from(len).unwrap().to_be_bytes();
        expand(prk, &[&l[..], b"HPKE-v1", suite, label, info].concat(), len)
    }
    /// (shared_secret, key, base_nonce) for base mode.
    pub(crate) fn schedule(
        dh: &[u8],
        enc: &[u8],
        pkr: &[u8],
        info: &[u8],
        aead_id: u16,
        nk: usize,
    ) -> [Vec<u8>; 3] {
        let kem_suite = [b"KEM".as_slice(), &[0x00, 0x20]].concat();
        let eae = labeled_extract(&kem_suite, b"", b"eae_prk", dh);
        let ss = labeled_expand(&kem_suite, &eae, b"shared_secret", &[enc, pkr].concat(), 32);
        let suite = [b"HPKE".as_slice(), &[0, 0x20, 0, 1], &aead_id.to_be_bytes()].concat();
        let psk_id_hash = labeled_extract(&suite, b"", b"psk_id_hash", b"");
        let info_hash = labeled_extract(&suite, b"", b"info_hash", info);
        let ctx = [&[0u8][..], &psk_id_hash, &info_hash].concat();
        let secret = labeled_extract(&suite, &ss, b"secret", b"");
        let key = labeled_expand(&suite, &secret, b"key", &ctx, nk);
        let nonce = labeled_expand(&suite, &secret, b"base_nonce", &ctx, 12);
        [ss, key, nonce]
    }
    pub(crate) fn x25519(sk: &[u8], pk: &[u8]) -> Vec<u8> {
        use aws_lc_rs::agreement;
        let sk = agreement::PrivateKey::from_private_key(&agreement::X25519, sk).unwrap();
        agreement::agree(
            &sk,
            agreement::UnparsedPublicKey::new(&agreement::X25519, pk),
            (),
            |s| Ok(s.to_vec()),
        )
        .unwrap()
    }

    #[test]
    fn independent_key_schedule_matches_rfc9180_a1_and_opens_with_aes256() {
        let ske = h("52c4a758a802cd8b936eceea314432798d5baf2d7e9235dc084ab1b9cfa2f736");
        let enc = h("37fda3567bdbd628e88668c3c8d7e97d1d1253b6d4ea6d44c150f741f1bf4431");
        let pkr = h("3948cfe0ad1ddb695d780e59077195da6c56506b027329794ab02bca80815c4d");
        let skr = h("4612c550263fc8ad58375df3f557aac531d26850903e55a9f23f21d8534e8ac8");
        let dh = x25519(&ske, &pkr);
        // A.1.1 (AES-128-GCM): shared_secret, key, base_nonce as published.
        let [ss, key, nonce] = schedule(
            &dh,
            &enc,
            &pkr,
            &h("4f6465206f6e2061204772656369616e2055726e"),
            1,
            16,
        );
        assert_eq!(
            hex::encode(ss),
            "fe0e18c9f024ce43799ae393c7e8fe8fce9d218875e8227b0187c04e7d2ea1fc"
        );
        assert_eq!(hex::encode(key), "4531685d41d65f03dc48f6b8302c05b0");
        assert_eq!(hex::encode(nonce), "56d890e5accaaf011cff4b7d");

        // The mover's suite (AES-256-GCM) and info: seal a known data key with the
        // independent schedule; the mover's unwrap must open it.
        let ticket_id = [0x11u8; 16];
        let info = [HPKE_INFO_PREFIX, &ticket_id].concat();
        let [_, key, nonce] = schedule(&dh, &enc, &pkr, &info, 2, 32);
        use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
        let k = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &key).unwrap());
        let mut data = [0x42u8; 32].to_vec();
        k.seal_in_place_append_tag(
            Nonce::try_assume_unique_for_key(&nonce).unwrap(),
            Aad::from(b"stream-header"),
            &mut data,
        )
        .unwrap();
        let w = WrappedKey {
            enc: enc.clone().try_into().unwrap(),
            ciphertext: data.try_into().unwrap(),
        };
        let sk = HpkePrivateKey::from(skr);
        assert_eq!(
            unwrap(&w, &sk, &ticket_id, b"stream-header").unwrap(),
            DataKey([0x42; 32])
        );
    }
}
