//! The two wire messages of a locality probe. Fixed sizes so that the responder reads
//! exactly one frame, answers at once and allocates nothing per probe.
//!
//! ```text
//! challenge (69 bytes) = "CLOC" (4) || version 0x01 (1) || challenge (32) || SHA-256(landmark id) (32)
//! response  (64 bytes) = Ed25519 signature by the session key over
//!                        "custody-locality-v1" || SHA-256(landmark id) || challenge || session Ed25519 public key
//! ```
//!
//! Any other length, magic or version is refused; nothing is padded or cut.

use crate::error::LocalityError;
use aws_lc_rs::digest::{digest, SHA256};
use aws_lc_rs::signature::{UnparsedPublicKey, ED25519};

/// Frame magic.
pub const MAGIC: [u8; 4] = *b"CLOC";
/// Protocol version.
pub const VERSION: u8 = 1;
/// Domain separation label of the signed message.
pub const LABEL: &[u8; 19] = b"custody-locality-v1";
/// Challenge frame length.
pub const CHALLENGE_LEN: usize = 4 + 1 + 32 + 32;
/// Response frame length (an Ed25519 signature).
pub const RESPONSE_LEN: usize = 64;
/// Length of the message the session key signs.
pub const SIGNED_LEN: usize = LABEL.len() + 32 + 32 + 32;

/// SHA-256 of a landmark id (UTF-8): what a challenge names the landmark by, so the
/// frame has a fixed size whatever the id.
pub fn landmark_hash(landmark_id: &str) -> [u8; 32] {
    let d = digest(&SHA256, landmark_id.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// One challenge: 32 fresh random bytes for one landmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Challenge {
    pub challenge: [u8; 32],
    pub landmark_hash: [u8; 32],
}

impl Challenge {
    pub fn new(landmark_id: &str, challenge: [u8; 32]) -> Self {
        Self {
            challenge,
            landmark_hash: landmark_hash(landmark_id),
        }
    }

    /// A challenge with 32 bytes from the system CSPRNG (aws-lc).
    pub fn random(landmark_hash: [u8; 32]) -> Result<Self, LocalityError> {
        let mut challenge = [0u8; 32];
        aws_lc_rs::rand::fill(&mut challenge)
            .map_err(|_| LocalityError::Network("the CSPRNG failed".into()))?;
        Ok(Self {
            challenge,
            landmark_hash,
        })
    }

    pub fn encode(&self) -> [u8; CHALLENGE_LEN] {
        let mut out = [0u8; CHALLENGE_LEN];
        let (magic, rest) = out.split_at_mut(MAGIC.len());
        magic.copy_from_slice(&MAGIC);
        let (version, rest) = rest.split_at_mut(1);
        version.fill(VERSION);
        let (challenge, hash) = rest.split_at_mut(32);
        challenge.copy_from_slice(&self.challenge);
        hash.copy_from_slice(&self.landmark_hash);
        out
    }

    /// Exactly [`CHALLENGE_LEN`] bytes with the right magic and version.
    pub fn decode(b: &[u8]) -> Result<Self, LocalityError> {
        if b.len() != CHALLENGE_LEN {
            return Err(LocalityError::Format(format!(
                "challenge must be exactly {CHALLENGE_LEN} bytes, got {}",
                b.len()
            )));
        }
        let short = || LocalityError::Format("challenge truncated".into());
        let (magic, rest) = b.split_first_chunk::<4>().ok_or_else(short)?;
        if magic != &MAGIC {
            return Err(LocalityError::Format("challenge magic is not CLOC".into()));
        }
        let (version, rest) = rest.split_first().ok_or_else(short)?;
        if *version != VERSION {
            return Err(LocalityError::Format(format!(
                "challenge version {version}, only {VERSION} is known"
            )));
        }
        let (challenge, rest) = rest.split_first_chunk::<32>().ok_or_else(short)?;
        let hash = <[u8; 32]>::try_from(rest).map_err(|_| short())?;
        Ok(Self {
            challenge: *challenge,
            landmark_hash: hash,
        })
    }

    /// `"custody-locality-v1" || landmark hash || challenge || session public key`.
    pub fn signed_message(&self, session_pub: &[u8; 32]) -> [u8; SIGNED_LEN] {
        let mut out = [0u8; SIGNED_LEN];
        let (label, rest) = out.split_at_mut(LABEL.len());
        label.copy_from_slice(LABEL);
        let (hash, rest) = rest.split_at_mut(32);
        hash.copy_from_slice(&self.landmark_hash);
        let (challenge, key) = rest.split_at_mut(32);
        challenge.copy_from_slice(&self.challenge);
        key.copy_from_slice(session_pub);
        out
    }
}

/// The node's answer: an Ed25519 signature over [`Challenge::signed_message`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response(pub [u8; RESPONSE_LEN]);

impl Response {
    pub fn encode(&self) -> [u8; RESPONSE_LEN] {
        self.0
    }

    /// Exactly [`RESPONSE_LEN`] bytes.
    pub fn decode(b: &[u8]) -> Result<Self, LocalityError> {
        <[u8; RESPONSE_LEN]>::try_from(b).map(Self).map_err(|_| {
            LocalityError::Format(format!(
                "response must be exactly {RESPONSE_LEN} bytes, got {}",
                b.len()
            ))
        })
    }

    /// The signature verifies under `session_pub` for this challenge.
    pub fn verify(&self, challenge: &Challenge, session_pub: &[u8; 32]) -> Result<(), LocalityError> {
        UnparsedPublicKey::new(&ED25519, session_pub)
            .verify(&challenge.signed_message(session_pub), &self.0)
            .map_err(|_| {
                LocalityError::Signature(
                    "the challenge response does not verify under the expected session key".into(),
                )
            })
    }
}
