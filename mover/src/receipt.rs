//! The destination's receipt: COSE_Sign1 (tag 18), alg EdDSA (-8), signed by the
//! destination's attested Ed25519 session key. Payload: canonical CBOR map
//! `{1: ticket id bstr(16), 2: job, 3: destination, 4: manifest digest bstr(32), 5: bytes,
//! 6: completed_at}`; protected header `{1: -8, 3: CONTENT_TYPE}`. The COSE Sig_structure ("Signature1" context) separates these
//! signatures from the session key's other uses (raw locality challenges).

use crate::error::MoverError;
use crate::ticket::fixed;
use aws_lc_rs::signature::Ed25519KeyPair;
use ciborium::value::Value;
use custody_types::envelope::{self, Alg, EnvelopeError, Profile};

/// The protected content type of a receipt.
pub const CONTENT_TYPE: &str = "application/vnd.custody.receipt+cbor";

/// Proof that a checkpoint arrived and verified at the destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub ticket_id: [u8; 16],
    pub job: String,
    pub destination: String,
    pub manifest_digest: [u8; 32],
    pub bytes: u64,
    pub completed_at: i64,
}

fn fmt_err(msg: impl Into<String>) -> MoverError {
    MoverError::ReceiptFormat(msg.into())
}

impl Receipt {
    pub fn payload(&self) -> Result<Vec<u8>, MoverError> {
        let m = Value::Map(vec![
            (Value::Integer(1.into()), Value::Bytes(self.ticket_id.to_vec())),
            (Value::Integer(2.into()), Value::Text(self.job.clone())),
            (Value::Integer(3.into()), Value::Text(self.destination.clone())),
            (
                Value::Integer(4.into()),
                Value::Bytes(self.manifest_digest.to_vec()),
            ),
            (Value::Integer(5.into()), Value::Integer(self.bytes.into())),
            (Value::Integer(6.into()), Value::Integer(self.completed_at.into())),
        ]);
        let mut out = Vec::new();
        ciborium::into_writer(&m, &mut out).map_err(|e| fmt_err(e.to_string()))?;
        Ok(out)
    }

    fn from_payload(bytes: &[u8]) -> Result<Self, MoverError> {
        let v: Value = ciborium::from_reader(bytes).map_err(|e| fmt_err(format!("CBOR: {e}")))?;
        let Value::Map(m) = v else {
            return Err(fmt_err("not a map"));
        };
        let vals: Vec<&Value> = m
            .iter()
            .enumerate()
            .map(|(i, (k, v))| match k {
                Value::Integer(k) if i128::from(*k) == i as i128 + 1 => Ok(v),
                _ => Err(fmt_err(format!("key {} missing or out of order", i + 1))),
            })
            .collect::<Result<_, _>>()?;
        let [id, job, dst, md, bytes_v, at] = vals.as_slice() else {
            return Err(fmt_err("want 6 keys"));
        };
        let text = |v: &Value, w: &str| match v {
            Value::Text(s) => Ok(s.clone()),
            _ => Err(fmt_err(format!("{w} is not text"))),
        };
        let r = Self {
            ticket_id: fixed(id, "ticket id").map_err(|e| fmt_err(e.to_string()))?,
            job: text(job, "job")?,
            destination: text(dst, "destination")?,
            manifest_digest: fixed(md, "manifest digest").map_err(|e| fmt_err(e.to_string()))?,
            bytes: match bytes_v {
                Value::Integer(i) => u64::try_from(*i).map_err(|_| fmt_err("bytes out of range"))?,
                _ => return Err(fmt_err("bytes is not an integer")),
            },
            completed_at: match at {
                Value::Integer(i) => i64::try_from(*i).map_err(|_| fmt_err("completed_at out of range"))?,
                _ => return Err(fmt_err("completed_at is not an integer")),
            },
        };
        if r.payload()? != bytes {
            return Err(fmt_err("not the canonical encoding"));
        }
        Ok(r)
    }

    /// Sign with a signer over the COSE Sig_structure (the agent passes its session
    /// key's Ed25519 signature function).
    pub fn sign_with(&self, sign: impl FnOnce(&[u8]) -> [u8; 64]) -> Result<Vec<u8>, MoverError> {
        envelope::seal(&PROFILE, Vec::new(), self.payload()?, |tbs| {
            Some(sign(tbs).to_vec())
        })
        .map_err(envelope_err)
    }

    pub fn sign(&self, key: &Ed25519KeyPair) -> Result<Vec<u8>, MoverError> {
        self.sign_with(|m| {
            let mut out = [0u8; 64];
            out.copy_from_slice(key.sign(m).as_ref());
            out
        })
    }

    /// Verify with the destination's Ed25519 key (the ticket's `dst_ed25519`).
    pub fn verify(bytes: &[u8], dst_ed25519: &[u8; 32]) -> Result<Self, MoverError> {
        let payload = envelope::open_ed25519(bytes, &PROFILE, dst_ed25519).map_err(envelope_err)?;
        Self::from_payload(&payload)
    }
}

/// A receipt's envelope (see `custody_types::envelope`): EdDSA with the destination's
/// attested session key, no kid (the ticket names the key).
pub const PROFILE: Profile = Profile {
    content_type: CONTENT_TYPE,
    alg: Alg::EdDsa,
    max_len: 64 * 1024,
    require_tag: false,
    require_kid: false,
    foreign: false,
};

fn envelope_err(e: EnvelopeError) -> MoverError {
    match e {
        EnvelopeError::Format(m) => fmt_err(m),
        EnvelopeError::ContentType { want, found } => MoverError::ContentType { want, found },
        EnvelopeError::Algorithm(_) | EnvelopeError::KeyId(_) | EnvelopeError::Signature(_) => {
            MoverError::ReceiptSignature
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::signature::KeyPair;
    use coset::{iana, CoseSign1Builder, HeaderBuilder, TaggedCborSerializable};

    #[test]
    fn sign_verify_tamper() {
        let k = Ed25519KeyPair::generate().unwrap();
        let pk: [u8; 32] = k.public_key().as_ref().try_into().unwrap();
        let r = Receipt {
            ticket_id: [1; 16],
            job: "j".into(),
            destination: "node-b".into(),
            manifest_digest: [2; 32],
            bytes: 123,
            completed_at: 1_700_000_000,
        };
        let b = r.sign(&k).unwrap();
        assert_eq!(Receipt::verify(&b, &pk).unwrap(), r);
        let other: [u8; 32] = Ed25519KeyPair::generate()
            .unwrap()
            .public_key()
            .as_ref()
            .try_into()
            .unwrap();
        assert!(matches!(
            Receipt::verify(&b, &other),
            Err(MoverError::ReceiptSignature)
        ));
        for i in 0..b.len() {
            let mut t = b.clone();
            t[i] ^= 1;
            assert!(Receipt::verify(&t, &pk).is_err(), "byte {i}");
        }
        // Without its content type (as every receipt before issue 19 item 11): refused.
        let bare = CoseSign1Builder::new()
            .protected(HeaderBuilder::new().algorithm(iana::Algorithm::EdDSA).build())
            .payload(r.payload().unwrap())
            .create_signature(b"", |tbs| k.sign(tbs).as_ref().to_vec())
            .build()
            .to_tagged_vec()
            .unwrap();
        let e = Receipt::verify(&bare, &pk).unwrap_err();
        assert!(matches!(e, MoverError::ContentType { .. }), "{e}");
    }
}
