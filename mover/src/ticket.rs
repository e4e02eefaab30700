//! Migration tickets: the verifier's permission for one move, as a COSE_Sign1 (ES256,
//! P-256, protected header `{1: -7, 3: CONTENT_TYPE, 4: kid}` with the same RFC 7638 kid
//! as the EAR key). The EAR key signs both: the content type keeps them apart.
//!
//! Payload: canonical CBOR map with integer keys (see docs/migration-protocol.md):
//! `0` version (1), `1` id bstr(16), `2` job, `3` source, `4` destination (tstr), `5`
//! dst_x25519 bstr(32), `6` dst_ed25519 bstr(32), `7` policy_id tstr, `8` policy_digest
//! bstr(32), `9` manifest_digest bstr(32), `10` issued_at, `11` expires_at (int, seconds).
//!
//! Checks of [`Ticket::verify`], in order: `ticket_format` (COSE structure),
//! `ticket_signature` (algorithm), `content_type`, `ticket_signature`, `ticket_format` (payload), `ticket_expired`. Then the receiver's
//! [`Ticket::verify_for`] (`ticket_destination`) and [`SeenTickets::check_and_record`]
//! (`ticket_replayed`).

use crate::error::MoverError;
use aws_lc_rs::signature::EcdsaKeyPair;
use ciborium::value::Value;
use custody_types::envelope::{self, Alg, EnvelopeError, Profile};
use custody_types::VerifierKey;
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The protected content type of a ticket.
pub const CONTENT_TYPE: &str = "application/vnd.custody.ticket+cbor";

/// A ticket's envelope (see `custody_types::envelope`).
pub const PROFILE: Profile = Profile {
    content_type: CONTENT_TYPE,
    alg: Alg::Es256,
    max_len: MAX_TICKET_LEN,
    require_tag: false,
    require_kid: false,
    foreign: false,
};

/// Payload version.
pub const TICKET_VERSION: u64 = 1;
/// Largest ticket accepted (bounds parsing).
pub const MAX_TICKET_LEN: usize = 64 * 1024;
/// Tolerated clock skew before `issued_at`, seconds.
pub const CLOCK_SKEW: i64 = 300;

/// One move's permission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    pub id: [u8; 16],
    pub job: String,
    pub source: String,
    pub destination: String,
    /// The destination's attested X25519 session key: the HPKE recipient.
    pub dst_x25519: [u8; 32],
    /// The destination's attested Ed25519 session key: verifies the receipt.
    pub dst_ed25519: [u8; 32],
    pub policy_id: String,
    pub policy_digest: [u8; 32],
    pub manifest_digest: [u8; 32],
    pub issued_at: i64,
    pub expires_at: i64,
}

fn fmt_err(msg: impl Into<String>) -> MoverError {
    MoverError::TicketFormat(msg.into())
}

fn envelope_err(e: EnvelopeError) -> MoverError {
    match e {
        EnvelopeError::Format(m) => MoverError::TicketFormat(m),
        EnvelopeError::Algorithm(m) | EnvelopeError::KeyId(m) | EnvelopeError::Signature(m) => {
            MoverError::TicketSignature(m)
        }
        EnvelopeError::ContentType { want, found } => MoverError::ContentType { want, found },
    }
}

/// RFC 8949 4.2.1: integer keys 0..=11 are already in encoded-byte order when sorted
/// numerically (all non-negative and below 24).
fn payload_map(entries: Vec<(u64, Value)>) -> Value {
    Value::Map(
        entries
            .into_iter()
            .map(|(k, v)| (Value::Integer(k.into()), v))
            .collect(),
    )
}

pub(crate) fn fixed<const N: usize>(v: &Value, what: &str) -> Result<[u8; N], MoverError> {
    match v {
        Value::Bytes(b) => b
            .as_slice()
            .try_into()
            .map_err(|_| fmt_err(format!("{what} has {} bytes, want {N}", b.len()))),
        _ => Err(fmt_err(format!("{what} is not a byte string"))),
    }
}

fn text(v: &Value, what: &str) -> Result<String, MoverError> {
    match v {
        Value::Text(s) => Ok(s.clone()),
        _ => Err(fmt_err(format!("{what} is not a text string"))),
    }
}

fn int(v: &Value, what: &str) -> Result<i64, MoverError> {
    match v {
        Value::Integer(i) => i64::try_from(*i).map_err(|_| fmt_err(format!("{what} out of range"))),
        _ => Err(fmt_err(format!("{what} is not an integer"))),
    }
}

impl Ticket {
    /// The canonical CBOR payload.
    pub fn payload(&self) -> Result<Vec<u8>, MoverError> {
        let m = payload_map(vec![
            (0, Value::Integer(TICKET_VERSION.into())),
            (1, Value::Bytes(self.id.to_vec())),
            (2, Value::Text(self.job.clone())),
            (3, Value::Text(self.source.clone())),
            (4, Value::Text(self.destination.clone())),
            (5, Value::Bytes(self.dst_x25519.to_vec())),
            (6, Value::Bytes(self.dst_ed25519.to_vec())),
            (7, Value::Text(self.policy_id.clone())),
            (8, Value::Bytes(self.policy_digest.to_vec())),
            (9, Value::Bytes(self.manifest_digest.to_vec())),
            (10, Value::Integer(self.issued_at.into())),
            (11, Value::Integer(self.expires_at.into())),
        ]);
        let mut out = Vec::new();
        ciborium::into_writer(&m, &mut out).map_err(|e| fmt_err(e.to_string()))?;
        Ok(out)
    }

    /// Decode a payload; only the canonical encoding of exactly these keys is accepted.
    pub fn from_payload(bytes: &[u8]) -> Result<Self, MoverError> {
        let v: Value = ciborium::from_reader(bytes).map_err(|e| fmt_err(format!("CBOR: {e}")))?;
        let Value::Map(entries) = v else {
            return Err(fmt_err("payload is not a map"));
        };
        if entries.len() != 12 {
            return Err(fmt_err(format!("payload has {} keys, want 12", entries.len())));
        }
        let mut vals: Vec<&Value> = Vec::with_capacity(12);
        for (i, (k, v)) in entries.iter().enumerate() {
            match k {
                Value::Integer(k) if i128::from(*k) == i as i128 => vals.push(v),
                _ => return Err(fmt_err(format!("key {i} missing or out of order"))),
            }
        }
        let [ver, id, job, source, destination, x, ed, pid, pd, md, iat, exp] = vals.as_slice() else {
            return Err(fmt_err("payload shape"));
        };
        if int(ver, "version")? != TICKET_VERSION as i64 {
            return Err(fmt_err("unsupported ticket version"));
        }
        let t = Self {
            id: fixed(id, "id")?,
            job: text(job, "job")?,
            source: text(source, "source")?,
            destination: text(destination, "destination")?,
            dst_x25519: fixed(x, "dst_x25519")?,
            dst_ed25519: fixed(ed, "dst_ed25519")?,
            policy_id: text(pid, "policy_id")?,
            policy_digest: fixed(pd, "policy_digest")?,
            manifest_digest: fixed(md, "manifest_digest")?,
            issued_at: int(iat, "issued_at")?,
            expires_at: int(exp, "expires_at")?,
        };
        if t.expires_at <= t.issued_at {
            return Err(fmt_err("expires_at is not after issued_at"));
        }
        if t.payload()? != bytes {
            return Err(fmt_err("payload is not the canonical encoding"));
        }
        Ok(t)
    }

    /// Sign with the verifier's P-256 key: COSE_Sign1 (tag 18), ES256, kid.
    pub fn sign(&self, key: &EcdsaKeyPair) -> Result<Vec<u8>, MoverError> {
        envelope::seal_es256(&PROFILE, key, self.payload()?).map_err(envelope_err)
    }

    /// Verify a signed ticket against the pinned verifier key (uncompressed SEC1 P-256
    /// point) at time `now` (seconds).
    pub fn verify(bytes: &[u8], verifier_public_sec1: &[u8], now: i64) -> Result<Self, MoverError> {
        // ticket_format (structure), ticket_signature, content_type (an EAR signed by
        // the same key is not a ticket), ticket_signature
        let key = VerifierKey::from_sec1(verifier_public_sec1)
            .map_err(|e| MoverError::TicketSignature(format!("verifier key: {e}")))?;
        let payload = envelope::open_es256(bytes, &PROFILE, &key).map_err(envelope_err)?;
        // ticket_format (payload)
        let t = Self::from_payload(&payload)?;

        // ticket_expired
        if now >= t.expires_at || now < t.issued_at.saturating_sub(CLOCK_SKEW) {
            return Err(MoverError::TicketExpired {
                issued_at: t.issued_at,
                expires_at: t.expires_at,
                now,
            });
        }
        Ok(t)
    }

    /// ticket_destination: the ticket names this node and its current X25519 key.
    pub fn verify_for(&self, me: &str, my_x25519: &[u8; 32]) -> Result<(), MoverError> {
        if self.destination != me {
            return Err(MoverError::TicketDestination {
                ticket: self.destination.clone(),
                why: format!("this node is {me:?}"),
            });
        }
        if &self.dst_x25519 != my_x25519 {
            return Err(MoverError::TicketDestination {
                ticket: self.destination.clone(),
                why: "the ticket's X25519 key is not this node's current session key".into(),
            });
        }
        Ok(())
    }

    pub fn id_hex(&self) -> String {
        hex::encode(self.id)
    }
}

/// Ticket ids a receiver has accepted, persisted as a file of hex ids, one per line.
/// Tickets are single use: an id is recorded when a transfer first starts; a resumed
/// transfer of the same ticket goes through [`crate::receive::Receiver::resume`] instead.
#[derive(Debug)]
pub struct SeenTickets {
    path: PathBuf,
    ids: BTreeSet<[u8; 16]>,
}

impl SeenTickets {
    /// Load (or start) the set at `path`. Malformed lines are refused, not skipped: a
    /// damaged replay list must not silently forget ids.
    pub fn open(path: &Path) -> Result<Self, MoverError> {
        let mut ids = BTreeSet::new();
        match std::fs::read_to_string(path) {
            Ok(s) => {
                for line in s.lines().filter(|l| !l.is_empty()) {
                    let id: [u8; 16] = hex::decode(line)
                        .ok()
                        .and_then(|b| b.try_into().ok())
                        .ok_or_else(|| {
                            MoverError::Staging(format!("{}: bad ticket id line", path.display()))
                        })?;
                    ids.insert(id);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(MoverError::io(path, e)),
        }
        Ok(Self {
            path: path.to_path_buf(),
            ids,
        })
    }

    pub fn contains(&self, id: &[u8; 16]) -> bool {
        self.ids.contains(id)
    }

    /// ticket_replayed: refuse a seen id; otherwise record it durably (append + fsync)
    /// before the caller acts on the ticket.
    pub fn check_and_record(&mut self, id: &[u8; 16]) -> Result<(), MoverError> {
        if self.ids.contains(id) {
            return Err(MoverError::TicketReplayed(hex::encode(id)));
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| MoverError::io(&self.path, e))?;
        writeln!(f, "{}", hex::encode(id)).map_err(|e| MoverError::io(&self.path, e))?;
        f.sync_all().map_err(|e| MoverError::io(&self.path, e))?;
        self.ids.insert(*id);
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
    use coset::{iana, CoseSign1Builder, HeaderBuilder, TaggedCborSerializable};

    pub fn key() -> EcdsaKeyPair {
        EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap()
    }

    pub fn ticket() -> Ticket {
        Ticket {
            id: [7; 16],
            job: "llama-ft-42".into(),
            source: "node-a".into(),
            destination: "node-b".into(),
            dst_x25519: [1; 32],
            dst_ed25519: [2; 32],
            policy_id: "eu-sovereign".into(),
            policy_digest: [3; 32],
            manifest_digest: [4; 32],
            issued_at: 1_000,
            expires_at: 1_600,
        }
    }

    #[test]
    fn sign_verify_and_refusals() {
        let k = key();
        let pubk = k.public_key().as_ref().to_vec();
        let t = ticket();
        let bytes = t.sign(&k).unwrap();
        assert_eq!(Ticket::verify(&bytes, &pubk, 1_100).unwrap(), t);

        let check = |r: Result<Ticket, MoverError>| {
            use custody_types::FailedCheck;
            r.unwrap_err().check()
        };
        // Expired, and not yet valid.
        assert_eq!(check(Ticket::verify(&bytes, &pubk, 1_600)), "ticket_expired");
        assert_eq!(check(Ticket::verify(&bytes, &pubk, 600)), "ticket_expired");
        // Another verifier's key.
        let other = key();
        assert_eq!(
            check(Ticket::verify(&bytes, other.public_key().as_ref(), 1_100)),
            "ticket_signature"
        );
        // A flipped byte anywhere: format or signature, never accepted.
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            assert!(Ticket::verify(&b, &pubk, 1_100).is_err(), "byte {i}");
        }
        assert_eq!(
            check(Ticket::verify(b"\x00garbage", &pubk, 1_100)),
            "ticket_format"
        );

        // Destination.
        assert!(t.verify_for("node-b", &[1; 32]).is_ok());
        let e = t.verify_for("node-c", &[1; 32]).unwrap_err();
        assert!(matches!(e, MoverError::TicketDestination { .. }));
        assert!(t.verify_for("node-b", &[9; 32]).is_err());
    }

    /// Issue 19 item 11: the EAR key signs results and tickets. A ticket's COSE bytes
    /// presented as an EAR, and an EAR's presented as a ticket, are refused naming
    /// `content_type`, though each signature is good under the shared key.
    #[test]
    fn a_ticket_is_never_an_ear_and_an_ear_never_a_ticket() {
        use custody_verifier::check::{FailedCheck, UnixTime};
        use custody_verifier::ear::{self, EarSigningKey};
        let ear_key = EarSigningKey::generate().unwrap();
        let pubk = ear_key.public_key().as_sec1().to_vec();
        let t = ticket();
        let ticket_bytes = t.sign(ear_key.key_pair()).unwrap();
        assert_eq!(Ticket::verify(&ticket_bytes, &pubk, 1_100).unwrap(), t);
        let e = ear::verify(&ticket_bytes, ear_key.public_key(), UnixTime(1_100)).unwrap_err();
        assert_eq!(e.check(), "content_type", "{e}");

        // An EAR signed by the same key, with a ticket's payload (the worst case: the
        // payload would parse as a ticket).
        let forged = CoseSign1Builder::new()
            .protected(
                HeaderBuilder::new()
                    .algorithm(iana::Algorithm::ES256)
                    .content_type(ear::CONTENT_TYPE.to_owned())
                    .key_id(ear_key.public_key().kid().to_vec())
                    .build(),
            )
            .payload(t.payload().unwrap())
            .create_signature(b"", |tbs| {
                ear_key
                    .key_pair()
                    .sign(&SystemRandom::new(), tbs)
                    .unwrap()
                    .as_ref()
                    .to_vec()
            })
            .build()
            .to_tagged_vec()
            .unwrap();
        let e = Ticket::verify(&forged, &pubk, 1_100).unwrap_err();
        assert!(matches!(e, MoverError::ContentType { .. }), "{e}");
        assert_eq!(e.check(), "content_type");
    }

    #[test]
    fn replay_set_persists() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("seen");
        let mut s = SeenTickets::open(&p).unwrap();
        s.check_and_record(&[1; 16]).unwrap();
        let e = s.check_and_record(&[1; 16]).unwrap_err();
        assert!(matches!(e, MoverError::TicketReplayed(_)));
        let mut s2 = SeenTickets::open(&p).unwrap();
        assert!(s2.contains(&[1; 16]));
        assert!(s2.check_and_record(&[1; 16]).is_err());
        s2.check_and_record(&[2; 16]).unwrap();
        std::fs::write(&p, "zz\n").unwrap();
        assert!(SeenTickets::open(&p).is_err());
    }
}
