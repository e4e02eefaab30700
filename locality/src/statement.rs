//! The landmark's signed statement: "I measured session key K answering from at most
//! `bound_km` away". CBOR, signed by the landmark's Ed25519 key.
//!
//! ```text
//! signed    = [ statement: bstr, landmark_key: bstr .size 32, signature: bstr .size 64 ]
//! signature = Ed25519(landmark key, "custody-locality-statement-v1" || statement)
//! statement = { "landmark": tstr, "lat": float, "lon": float, "node": tstr,
//!               "session_ed25519": bstr .size 32, "rtt_us": uint, "probes": uint,
//!               "bound_km": float, "measured_at": int }
//! ```
//!
//! The signature covers the statement's bytes as sent; decoding is strict (exact keys,
//! no duplicates, no trailing bytes) so one statement has one meaning.

use crate::error::{hex32, LocalityError};
use crate::geo::{bound_km, LatLon};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use ciborium::Value;
use std::fmt;
use std::time::Duration;

/// Domain separation label of the statement signature.
pub const STATEMENT_LABEL: &[u8] = b"custody-locality-statement-v1";
/// Largest signed statement accepted.
pub const MAX_SIGNED_LEN: usize = 4096;
/// Longest landmark or node id.
pub const MAX_ID_LEN: usize = 256;
/// How far in the future a statement may be dated (clock skew between hosts), seconds.
pub const MAX_FUTURE_SKEW_SECS: i64 = 60;

const FIELDS: [&str; 9] = [
    "landmark",
    "lat",
    "lon",
    "node",
    "session_ed25519",
    "rtt_us",
    "probes",
    "bound_km",
    "measured_at",
];

/// A landmark's Ed25519 signing key.
pub struct LandmarkKey(Ed25519KeyPair);

impl fmt::Debug for LandmarkKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LandmarkKey")
            .field("public", &hex32(&self.public_key()))
            .finish_non_exhaustive()
    }
}

impl LandmarkKey {
    /// A fresh key and its PKCS#8 (v2) encoding, for storing.
    pub fn generate() -> Result<(Self, Vec<u8>), LocalityError> {
        let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|_| LocalityError::Format("could not generate an Ed25519 key".into()))?;
        let key = Self::from_pkcs8(doc.as_ref())?;
        Ok((key, doc.as_ref().to_vec()))
    }

    pub fn from_pkcs8(der: &[u8]) -> Result<Self, LocalityError> {
        Ed25519KeyPair::from_pkcs8(der)
            .map(Self)
            .map_err(|_| LocalityError::Format("not an Ed25519 PKCS#8 private key".into()))
    }

    /// From a 32-byte seed (test vectors).
    pub fn from_seed(seed: &[u8; 32]) -> Result<Self, LocalityError> {
        Ed25519KeyPair::from_seed_unchecked(seed)
            .map(Self)
            .map_err(|_| LocalityError::Format("not an Ed25519 seed".into()))
    }

    pub fn public_key(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.0.public_key().as_ref());
        out
    }

    fn sign(&self, msg: &[u8]) -> [u8; 64] {
        let mut out = [0u8; 64];
        out.copy_from_slice(self.0.sign(msg).as_ref());
        out
    }
}

/// What a landmark measured.
#[derive(Debug, Clone, PartialEq)]
pub struct LandmarkStatement {
    /// Landmark id (the one hashed into every challenge).
    pub landmark: String,
    /// Landmark position, decimal degrees.
    pub lat: f64,
    pub lon: f64,
    /// The node the landmark was asked to measure (informative; the session key is what
    /// the proof is about).
    pub node: String,
    /// The session key that answered every probe.
    pub session_ed25519: [u8; 32],
    /// Fastest round trip over all probes, microseconds.
    pub rtt_us: u64,
    pub probes: u32,
    /// Distance bound, km ([`bound_km`] of `rtt_us` less the processing floor).
    pub bound_km: f64,
    /// Unix time of the measurement, seconds.
    pub measured_at: i64,
}

fn fmt_err(m: impl Into<String>) -> LocalityError {
    LocalityError::Format(m.into())
}

impl LandmarkStatement {
    pub fn position(&self) -> LatLon {
        LatLon::new(self.lat, self.lon)
    }

    /// Field ranges: ids, coordinates, at least one probe, and a bound no larger than
    /// the round trip allows (a landmark may subtract processing time, never add).
    pub fn validate(&self) -> Result<(), LocalityError> {
        if self.landmark.is_empty() || self.landmark.len() > MAX_ID_LEN {
            return Err(fmt_err(format!("landmark id must be 1-{MAX_ID_LEN} bytes")));
        }
        if self.node.len() > MAX_ID_LEN {
            return Err(fmt_err(format!("node id must be at most {MAX_ID_LEN} bytes")));
        }
        if !self.position().is_valid() {
            return Err(fmt_err(format!(
                "landmark position ({}, {}) is not a valid latitude/longitude",
                self.lat, self.lon
            )));
        }
        if self.probes == 0 {
            return Err(fmt_err("a statement needs at least one probe"));
        }
        let max = bound_km(Duration::from_micros(self.rtt_us), Duration::ZERO);
        if !self.bound_km.is_finite() || self.bound_km < 0.0 || self.bound_km > max * (1.0 + 1e-12) {
            return Err(fmt_err(format!(
                "bound {} km is outside 0..={max} km allowed by rtt {} us",
                self.bound_km, self.rtt_us
            )));
        }
        Ok(())
    }

    /// The statement's CBOR (a map with the nine keys in a fixed order).
    pub fn encode(&self) -> Result<Vec<u8>, LocalityError> {
        let t = |s: &str| Value::Text(s.to_owned());
        let map = vec![
            (t("landmark"), Value::Text(self.landmark.clone())),
            (t("lat"), Value::Float(self.lat)),
            (t("lon"), Value::Float(self.lon)),
            (t("node"), Value::Text(self.node.clone())),
            (t("session_ed25519"), Value::Bytes(self.session_ed25519.to_vec())),
            (t("rtt_us"), Value::Integer(self.rtt_us.into())),
            (t("probes"), Value::Integer(self.probes.into())),
            (t("bound_km"), Value::Float(self.bound_km)),
            (t("measured_at"), Value::Integer(self.measured_at.into())),
        ];
        let mut out = Vec::new();
        ciborium::into_writer(&Value::Map(map), &mut out)
            .map_err(|e| fmt_err(format!("cannot encode statement: {e}")))?;
        Ok(out)
    }

    /// Strict decode of [`Self::encode`]'s output, then [`Self::validate`].
    pub fn decode(b: &[u8]) -> Result<Self, LocalityError> {
        let Value::Map(entries) = decode_one(b, "statement")? else {
            return Err(fmt_err("statement is not a CBOR map"));
        };
        if entries.len() != FIELDS.len() {
            return Err(fmt_err(format!(
                "statement has {} fields, expected {}",
                entries.len(),
                FIELDS.len()
            )));
        }
        let mut seen = [false; FIELDS.len()];
        let mut s = LandmarkStatement {
            landmark: String::new(),
            lat: 0.0,
            lon: 0.0,
            node: String::new(),
            session_ed25519: [0; 32],
            rtt_us: 0,
            probes: 0,
            bound_km: 0.0,
            measured_at: 0,
        };
        for (k, v) in entries {
            let Value::Text(k) = k else {
                return Err(fmt_err("statement keys must be text"));
            };
            let i = FIELDS
                .iter()
                .position(|f| *f == k)
                .ok_or_else(|| fmt_err(format!("unknown statement field {k:?}")))?;
            match seen.get_mut(i) {
                Some(x) if !*x => *x = true,
                _ => return Err(fmt_err(format!("duplicate statement field {k:?}"))),
            }
            let bad = |what: &str| fmt_err(format!("statement field {k:?} must be {what}"));
            match (k.as_str(), v) {
                ("landmark", Value::Text(x)) => s.landmark = x,
                ("node", Value::Text(x)) => s.node = x,
                ("lat", Value::Float(x)) => s.lat = x,
                ("lon", Value::Float(x)) => s.lon = x,
                ("bound_km", Value::Float(x)) => s.bound_km = x,
                ("session_ed25519", Value::Bytes(x)) => {
                    s.session_ed25519 =
                        <[u8; 32]>::try_from(x.as_slice()).map_err(|_| bad("exactly 32 bytes"))?;
                }
                ("rtt_us", Value::Integer(x)) => {
                    s.rtt_us = u64::try_from(x).map_err(|_| bad("an unsigned 64-bit integer"))?;
                }
                ("probes", Value::Integer(x)) => {
                    s.probes = u32::try_from(x).map_err(|_| bad("an unsigned 32-bit integer"))?;
                }
                ("measured_at", Value::Integer(x)) => {
                    s.measured_at = i64::try_from(x).map_err(|_| bad("a 64-bit integer"))?;
                }
                _ => return Err(bad("of its documented CBOR type")),
            }
        }
        s.validate()?;
        Ok(s)
    }

    /// Encode and sign with the landmark's key: the `signed` envelope.
    pub fn sign(&self, key: &LandmarkKey) -> Result<Vec<u8>, LocalityError> {
        self.validate()?;
        let statement = self.encode()?;
        let sig = key.sign(&signed_message(&statement));
        let envelope = Value::Array(vec![
            Value::Bytes(statement),
            Value::Bytes(key.public_key().to_vec()),
            Value::Bytes(sig.to_vec()),
        ]);
        let mut out = Vec::new();
        ciborium::into_writer(&envelope, &mut out)
            .map_err(|e| fmt_err(format!("cannot encode signed statement: {e}")))?;
        Ok(out)
    }

    /// Check a signed statement, in this order: `locality_format` (envelope),
    /// `locality_landmark` (signer is one of `trusted`), `locality_signature`,
    /// `locality_format` (statement), `locality_session_key` (it is about
    /// `expected_session_key`), `locality_stale` (older than `max_age_secs` at `now`, or
    /// dated more than [`MAX_FUTURE_SKEW_SECS`] ahead).
    pub fn verify(
        bytes: &[u8],
        trusted: &[[u8; 32]],
        expected_session_key: &[u8; 32],
        now: i64,
        max_age_secs: u64,
    ) -> Result<Self, LocalityError> {
        let env = SignedEnvelope::decode(bytes)?;
        if !trusted.contains(&env.landmark_key) {
            return Err(LocalityError::Landmark(format!(
                "signer {} is not among the {} trusted landmark keys",
                hex32(&env.landmark_key),
                trusted.len()
            )));
        }
        UnparsedPublicKey::new(&ED25519, &env.landmark_key)
            .verify(&signed_message(&env.statement), &env.signature)
            .map_err(|_| {
                LocalityError::Signature("statement signature does not verify under the landmark key".into())
            })?;
        let s = Self::decode(&env.statement)?;
        if &s.session_ed25519 != expected_session_key {
            return Err(LocalityError::SessionKey {
                got: hex32(&s.session_ed25519),
                expected: hex32(expected_session_key),
            });
        }
        let age = i128::from(now) - i128::from(s.measured_at);
        if age > i128::from(max_age_secs) || age < -i128::from(MAX_FUTURE_SKEW_SECS) {
            return Err(LocalityError::Stale {
                measured_at: s.measured_at,
                now,
                max_age_secs,
            });
        }
        Ok(s)
    }
}

/// A landmark the verifier trusts by name: only statements that this key signed *and*
/// that carry this id count for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedLandmark {
    pub id: String,
    pub key: [u8; 32],
}

impl LandmarkStatement {
    /// [`Self::verify`] against one pinned landmark, then two more checks: the statement
    /// names the pinned id (`locality_landmark`: a landmark cannot speak for another),
    /// and it is about `node_id` (`locality_node`: a statement for another node, even
    /// with the same session key, does not count).
    pub fn verify_pinned(
        bytes: &[u8],
        pinned: &PinnedLandmark,
        node_id: &str,
        expected_session_key: &[u8; 32],
        now: i64,
        max_age_secs: u64,
    ) -> Result<Self, LocalityError> {
        let s = Self::verify(
            bytes,
            std::slice::from_ref(&pinned.key),
            expected_session_key,
            now,
            max_age_secs,
        )?;
        if s.landmark != pinned.id {
            return Err(LocalityError::Landmark(format!(
                "statement names landmark {:?}, but key {} is pinned for {:?}",
                s.landmark,
                hex32(&pinned.key),
                pinned.id
            )));
        }
        s.check_node(node_id)?;
        Ok(s)
    }

    /// `locality_node`: the statement is about `node_id`.
    pub fn check_node(&self, node_id: &str) -> Result<(), LocalityError> {
        if self.node != node_id {
            return Err(LocalityError::Node {
                got: self.node.clone(),
                expected: node_id.to_owned(),
            });
        }
        Ok(())
    }
}

fn signed_message(statement: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(STATEMENT_LABEL.len() + statement.len());
    m.extend_from_slice(STATEMENT_LABEL);
    m.extend_from_slice(statement);
    m
}

/// One CBOR item and nothing after it.
fn decode_one(b: &[u8], what: &str) -> Result<Value, LocalityError> {
    if b.len() > MAX_SIGNED_LEN {
        return Err(fmt_err(format!("{what} larger than {MAX_SIGNED_LEN} bytes")));
    }
    let mut cur = std::io::Cursor::new(b);
    let v: Value =
        ciborium::from_reader(&mut cur).map_err(|e| fmt_err(format!("{what} is not CBOR: {e}")))?;
    if usize::try_from(cur.position()).ok() != Some(b.len()) {
        return Err(fmt_err(format!("trailing bytes after the {what}")));
    }
    Ok(v)
}

/// The parts of a signed statement, undecoded statement included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedEnvelope {
    pub statement: Vec<u8>,
    pub landmark_key: [u8; 32],
    pub signature: [u8; 64],
}

impl SignedEnvelope {
    pub fn decode(b: &[u8]) -> Result<Self, LocalityError> {
        let Value::Array(items) = decode_one(b, "signed statement")? else {
            return Err(fmt_err("signed statement is not a CBOR array"));
        };
        let [Value::Bytes(statement), Value::Bytes(key), Value::Bytes(sig)] =
            <[Value; 3]>::try_from(items)
                .map_err(|v| fmt_err(format!("signed statement has {} items, expected 3", v.len())))?
        else {
            return Err(fmt_err("signed statement items must be byte strings"));
        };
        Ok(Self {
            statement,
            landmark_key: <[u8; 32]>::try_from(key.as_slice())
                .map_err(|_| fmt_err(format!("landmark key must be 32 bytes, got {}", key.len())))?,
            signature: <[u8; 64]>::try_from(sig.as_slice())
                .map_err(|_| fmt_err(format!("signature must be 64 bytes, got {}", sig.len())))?,
        })
    }
}
