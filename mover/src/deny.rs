//! The deny list: the verifier's signed word that nodes were removed or revoked, so
//! that agents refuse them on their own. A ticket is checked offline by the agents, and
//! a ticket issued before a node's removal would otherwise stay good until it expires
//! (15 minutes for a live move, a day for an export file).
//!
//! COSE_Sign1 like a ticket (see [`crate::envelope`]), content type [`CONTENT_TYPE`].
//! Payload: canonical CBOR map `{0: version 1, 1: issued_at_ms, 2: [[id tstr, "removed" /
//! "revoked", since int], ...]}` with the ids in strictly ascending order. A newer list
//! replaces the whole older one; an older or equal one is ignored, so a list replayed
//! from the past cannot take a node off.
//!
//! Checks: `deny_list` (format, signature, a list from the future); then, where a move
//! meets a listed node, `node_removed` or `revoked`.

use crate::error::MoverError;
use aws_lc_rs::signature::EcdsaKeyPair;
use ciborium::value::Value;
use custody_types::envelope::{self, Alg, EnvelopeError, Profile};
use custody_types::VerifierKey;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

/// The protected content type of a deny list.
pub const CONTENT_TYPE: &str = "application/vnd.custody.deny-list+cbor";
/// Payload version.
pub const DENY_LIST_VERSION: u64 = 1;
/// Largest signed list accepted (bounds parsing; it rides in a 256 KiB round request).
pub const MAX_DENY_LIST_LEN: usize = 192 * 1024;
/// Most nodes in one list. A node needs listing only while a certificate or a ticket
/// issued before its removal could still be good (a day), so this bounds removals and
/// revocations per day, not the fleet.
pub const MAX_DENIED: usize = 4096;
/// Longest node id in a list (ids are `n-` and 16 hex digits).
pub const MAX_ID_LEN: usize = 64;
/// Tolerated clock skew for `issued_at`, seconds.
pub const CLOCK_SKEW: i64 = 300;

/// Why a node is on the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// An operator removed it.
    Removed,
    /// Its rounds failed until the verifier revoked it.
    Revoked,
}

impl Denial {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Removed => "removed",
            Self::Revoked => "revoked",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "removed" => Some(Self::Removed),
            "revoked" => Some(Self::Revoked),
            _ => None,
        }
    }
}

/// One listed node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeniedNode {
    pub id: String,
    pub denial: Denial,
    /// When it was removed or revoked (seconds).
    pub since: i64,
}

/// The verifier's list at one instant.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DenyList {
    /// Milliseconds since the epoch: orders lists.
    pub issued_at_ms: i64,
    /// Strictly ascending by id.
    pub nodes: Vec<DeniedNode>,
}

fn fmt_err(msg: impl Into<String>) -> MoverError {
    MoverError::DenyList(msg.into())
}

impl DenyList {
    /// A list of `nodes` (any order, ids unique) issued at `issued_at_ms`.
    pub fn new(issued_at_ms: i64, mut nodes: Vec<DeniedNode>) -> Result<Self, MoverError> {
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        if nodes.windows(2).any(|w| matches!(w, [a, b] if a.id == b.id)) {
            return Err(fmt_err("a node is listed twice"));
        }
        if nodes.len() > MAX_DENIED {
            return Err(fmt_err(format!("{} nodes, more than {MAX_DENIED}", nodes.len())));
        }
        Ok(Self { issued_at_ms, nodes })
    }

    /// The canonical CBOR payload.
    pub fn payload(&self) -> Result<Vec<u8>, MoverError> {
        let nodes = self
            .nodes
            .iter()
            .map(|n| {
                Value::Array(vec![
                    Value::Text(n.id.clone()),
                    Value::Text(n.denial.as_str().into()),
                    Value::Integer(n.since.into()),
                ])
            })
            .collect();
        let m = Value::Map(vec![
            (Value::Integer(0.into()), Value::Integer(DENY_LIST_VERSION.into())),
            (Value::Integer(1.into()), Value::Integer(self.issued_at_ms.into())),
            (Value::Integer(2.into()), Value::Array(nodes)),
        ]);
        let mut out = Vec::new();
        ciborium::into_writer(&m, &mut out).map_err(|e| fmt_err(e.to_string()))?;
        Ok(out)
    }

    /// Decode a payload; only the canonical encoding is accepted.
    pub fn from_payload(bytes: &[u8]) -> Result<Self, MoverError> {
        let v: Value = ciborium::from_reader(bytes).map_err(|e| fmt_err(format!("CBOR: {e}")))?;
        let Value::Map(entries) = v else {
            return Err(fmt_err("payload is not a map"));
        };
        let [(k0, ver), (k1, iat), (k2, Value::Array(list))] = entries.as_slice() else {
            return Err(fmt_err("payload has the wrong shape"));
        };
        for (i, k) in [k0, k1, k2].into_iter().enumerate() {
            if !matches!(k, Value::Integer(k) if i128::from(*k) == i as i128) {
                return Err(fmt_err(format!("key {i} missing or out of order")));
            }
        }
        if !matches!(ver, Value::Integer(v) if i128::from(*v) == i128::from(DENY_LIST_VERSION)) {
            return Err(fmt_err("unsupported deny list version"));
        }
        let int = |v: &Value, what: &str| match v {
            Value::Integer(i) => i64::try_from(*i).map_err(|_| fmt_err(format!("{what} out of range"))),
            _ => Err(fmt_err(format!("{what} is not an integer"))),
        };
        if list.len() > MAX_DENIED {
            return Err(fmt_err(format!("{} nodes, more than {MAX_DENIED}", list.len())));
        }
        let mut nodes = Vec::with_capacity(list.len());
        for e in list {
            let Value::Array(f) = e else {
                return Err(fmt_err("an entry is not an array"));
            };
            let [Value::Text(id), Value::Text(d), since] = f.as_slice() else {
                return Err(fmt_err("an entry is not [id, denial, since]"));
            };
            if id.is_empty() || id.len() > MAX_ID_LEN {
                return Err(fmt_err(format!("a node id of {} bytes", id.len())));
            }
            let denial = Denial::parse(d).ok_or_else(|| fmt_err(format!("unknown denial {d:?}")))?;
            nodes.push(DeniedNode {
                id: id.clone(),
                denial,
                since: int(since, "since")?,
            });
        }
        if nodes.windows(2).any(|w| matches!(w, [a, b] if a.id >= b.id)) {
            return Err(fmt_err("ids are not strictly ascending"));
        }
        let l = Self {
            issued_at_ms: int(iat, "issued_at")?,
            nodes,
        };
        if l.payload()? != bytes {
            return Err(fmt_err("payload is not the canonical encoding"));
        }
        Ok(l)
    }

    /// Sign with the verifier's result key.
    pub fn sign(&self, key: &EcdsaKeyPair) -> Result<Vec<u8>, MoverError> {
        envelope::seal_es256(&PROFILE, key, self.payload()?).map_err(envelope_err)
    }

    /// Verify a signed list against the pinned verifier key; `now` (seconds) refuses a
    /// list issued in the future.
    pub fn verify(bytes: &[u8], verifier_public_sec1: &[u8], now: i64) -> Result<Self, MoverError> {
        let key = VerifierKey::from_sec1(verifier_public_sec1)
            .map_err(|e| MoverError::DenyList(format!("verifier key: {e}")))?;
        let payload = envelope::open_es256(bytes, &PROFILE, &key).map_err(envelope_err)?;
        let l = Self::from_payload(&payload)?;
        if l.issued_at_ms / 1000 > now.saturating_add(CLOCK_SKEW) {
            return Err(fmt_err(format!(
                "issued at {} ms, in the future (now {now} s)",
                l.issued_at_ms
            )));
        }
        Ok(l)
    }

    /// The entry for node `id`, if listed.
    pub fn find(&self, id: &str) -> Option<&DeniedNode> {
        self.nodes
            .binary_search_by(|n| n.id.as_str().cmp(id))
            .ok()
            .and_then(|i| self.nodes.get(i))
    }
}

fn envelope_err(e: EnvelopeError) -> MoverError {
    match e {
        EnvelopeError::ContentType { want, found } => MoverError::ContentType { want, found },
        other => MoverError::DenyList(other.to_string()),
    }
}

/// A deny list's envelope (see `custody_types::envelope`).
pub const PROFILE: Profile = Profile {
    content_type: CONTENT_TYPE,
    alg: Alg::Es256,
    max_len: MAX_DENY_LIST_LEN,
    require_tag: false,
    require_kid: false,
    foreign: false,
};

/// What an agent knows: the newest list it verified, kept in a file so that a restart
/// does not forget a removal.
#[derive(Debug)]
pub struct DenyState {
    path: PathBuf,
    verifier_public_sec1: Vec<u8>,
    current: RwLock<DenyList>,
}

impl DenyState {
    /// Load the list at `path` (none yet: empty). A file that does not verify under the
    /// pinned key is refused, not ignored: a damaged list must not silently forget nodes.
    pub fn open(path: &Path, verifier_public_sec1: Vec<u8>) -> Result<Self, MoverError> {
        let current = match std::fs::read(path) {
            Ok(b) => DenyList::verify(&b, &verifier_public_sec1, i64::MAX)
                .map_err(|e| MoverError::Staging(format!("{}: {e}", path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => DenyList::default(),
            Err(e) => return Err(MoverError::io(path, e)),
        };
        Ok(Self {
            path: path.to_path_buf(),
            verifier_public_sec1,
            current: RwLock::new(current),
        })
    }

    /// Take a signed list if it verifies and is newer than the one held (written to the
    /// file first, then used). Returns whether it replaced the held one.
    pub fn offer(&self, bytes: &[u8], now: i64) -> Result<bool, MoverError> {
        let l = DenyList::verify(bytes, &self.verifier_public_sec1, now)?;
        let mut cur = self.current.write().unwrap_or_else(|p| p.into_inner());
        if l.issued_at_ms <= cur.issued_at_ms {
            return Ok(false);
        }
        let tmp = self.path.with_extension("tmp");
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            std::io::Write::write_all(&mut f, bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)
        };
        write().map_err(|e| MoverError::io(&self.path, e))?;
        *cur = l;
        Ok(true)
    }

    /// `node_removed` or `revoked` when `node` is listed.
    pub fn check(&self, node: &str) -> Result<(), MoverError> {
        let cur = self.current.read().unwrap_or_else(|p| p.into_inner());
        match cur.find(node) {
            None => Ok(()),
            Some(n) => Err(MoverError::NodeDenied {
                node: n.id.clone(),
                denial: n.denial,
                since: n.since,
            }),
        }
    }

    /// When the held list was issued (0: none yet).
    pub fn issued_at_ms(&self) -> i64 {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .issued_at_ms
    }
}

#[cfg(test)]
mod tests;
