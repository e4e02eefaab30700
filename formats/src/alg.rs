//! TPM hash algorithms (TPM_ALG_ID), shared by the quote, PCR and event-log parsers.

use aws_lc_rs::digest;
use serde::Serialize;

/// A hash algorithm a TPM PCR bank or event-log digest can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HashAlg {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

impl HashAlg {
    pub const ALL: [HashAlg; 4] = [Self::Sha1, Self::Sha256, Self::Sha384, Self::Sha512];

    /// From a TPM_ALG_ID; `None` for algorithms Custody does not handle (SM3, SHA3, ...).
    pub fn from_tpm_alg_id(id: u16) -> Option<Self> {
        match id {
            0x0004 => Some(Self::Sha1),
            0x000B => Some(Self::Sha256),
            0x000C => Some(Self::Sha384),
            0x000D => Some(Self::Sha512),
            _ => None,
        }
    }

    pub fn tpm_alg_id(self) -> u16 {
        match self {
            Self::Sha1 => 0x0004,
            Self::Sha256 => 0x000B,
            Self::Sha384 => 0x000C,
            Self::Sha512 => 0x000D,
        }
    }

    /// Digest length in bytes.
    pub fn digest_len(self) -> usize {
        match self {
            Self::Sha1 => 20,
            Self::Sha256 => 32,
            Self::Sha384 => 48,
            Self::Sha512 => 64,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Sha1 => "sha1",
            Self::Sha256 => "sha256",
            Self::Sha384 => "sha384",
            Self::Sha512 => "sha512",
        }
    }

    fn algorithm(self) -> &'static digest::Algorithm {
        match self {
            Self::Sha1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
            Self::Sha256 => &digest::SHA256,
            Self::Sha384 => &digest::SHA384,
            Self::Sha512 => &digest::SHA512,
        }
    }

    /// Hash of the concatenation of `parts`.
    pub fn hash(self, parts: &[&[u8]]) -> Vec<u8> {
        let mut ctx = digest::Context::new(self.algorithm());
        for p in parts {
            ctx.update(p);
        }
        ctx.finish().as_ref().to_vec()
    }

    /// PCR extend: `H(old || new)`.
    pub fn extend(self, pcr: &[u8], measurement: &[u8]) -> Vec<u8> {
        self.hash(&[pcr, measurement])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_lengths_match() {
        for a in HashAlg::ALL {
            assert_eq!(HashAlg::from_tpm_alg_id(a.tpm_alg_id()), Some(a));
            assert_eq!(a.hash(&[b"x"]).len(), a.digest_len());
        }
        assert_eq!(HashAlg::from_tpm_alg_id(0x0012), None); // SM3_256
    }

    #[test]
    fn extend_known_answer() {
        // sha256(32 zero bytes || sha256("abc")), computed independently with Python hashlib.
        let m = HashAlg::Sha256.hash(&[b"abc"]);
        let pcr = HashAlg::Sha256.extend(&[0u8; 32], &m);
        assert_eq!(
            hex::encode(pcr),
            "589f9ffed4c477966bfb8d41f37895b08c69047df8f911d6f3b57fbe08faee8d"
        );
    }
}
