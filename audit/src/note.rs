//! C2SP tlog-checkpoint bodies inside C2SP signed notes, Ed25519 only. Pure: no I/O.
//!
//! A checkpoint body is `origin\nsize\nbase64(root)\n` followed by optional extension
//! lines. A signed note is `text` (ending in `\n`), a blank line, then one line per
//! signature: `— name base64(key_id || signature)\n`, key_id being the first four bytes of
//! `SHA-256(name || 0x0A || 0x01 || public_key)`. Keys use the Go sumdb/note text forms,
//! `name+hex(key_id)+base64(0x01 || key)` (the private one prefixed `PRIVATE+KEY+`), so
//! existing transparency tooling can read them.

use crate::tree::Hash;
use aws_lc_rs::digest::{self, SHA256};
use aws_lc_rs::encoding::AsBigEndian;
use aws_lc_rs::signature::{self, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use custody_types::FailedCheck;
use std::fmt;
use thiserror::Error;

/// Signature type byte for Ed25519 in signed-note key IDs and key encodings.
const ALG_ED25519: u8 = 0x01;
/// The em dash and space that open a signature line.
const SIG_PREFIX: &str = "\u{2014} ";
/// Go's sumdb/note limits: a note is at most 1 MB with at most 100 signatures.
const MAX_NOTE: usize = 1 << 20;
const MAX_SIGS: usize = 100;

/// A malformed checkpoint, note or key, or a signature that does not verify.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NoteError {
    #[error("note malformed: {0}")]
    Malformed(&'static str),
    #[error("checkpoint body malformed: {0}")]
    Checkpoint(&'static str),
    #[error("key malformed: {0}")]
    Key(&'static str),
    #[error("no signature by {name}+{key_id:08x}")]
    Unsigned { name: String, key_id: u32 },
    #[error("signature by {name}+{key_id:08x} does not verify")]
    BadSignature { name: String, key_id: u32 },
    #[error("key generation failed")]
    KeyGen,
}

impl FailedCheck for NoteError {
    fn check(&self) -> &'static str {
        match self {
            NoteError::Malformed(_) | NoteError::Checkpoint(_) | NoteError::Key(_) => "parse",
            NoteError::Unsigned { .. } | NoteError::BadSignature { .. } | NoteError::KeyGen => "signature",
        }
    }
}

/// A key name as signed notes allow: non-empty, valid text, no whitespace and no `+`.
fn check_name(name: &str) -> Result<(), NoteError> {
    if name.is_empty()
        || name
            .chars()
            .any(|c| c.is_whitespace() || c == '+' || c.is_control())
    {
        return Err(NoteError::Key("name empty or with space, '+' or control"));
    }
    Ok(())
}

/// First four bytes of `SHA-256(name || 0x0A || 0x01 || public_key)`, big-endian.
pub fn key_id(name: &str, public_key: &[u8; 32]) -> u32 {
    let mut ctx = digest::Context::new(&SHA256);
    ctx.update(name.as_bytes());
    ctx.update(&[0x0A, ALG_ED25519]);
    ctx.update(public_key);
    let d = ctx.finish();
    let mut id = [0u8; 4];
    id.copy_from_slice(d.as_ref().get(..4).unwrap_or(&[0; 4]));
    u32::from_be_bytes(id)
}

/// Parse `name+hex8+base64(type || key)`; `prefix` is `""` or `"PRIVATE+KEY+"`.
fn parse_key_string<'a>(s: &'a str, prefix: &str) -> Result<(&'a str, u32, [u8; 32]), NoteError> {
    let s = s.strip_prefix(prefix).ok_or(NoteError::Key("wrong key prefix"))?;
    // The base64 part may itself contain '+', so split at most twice.
    let mut parts = s.splitn(3, '+');
    let (Some(name), Some(id), Some(b64)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(NoteError::Key("expected name+keyid+key"));
    };
    check_name(name)?;
    if id.len() != 8
        || !id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(NoteError::Key("key id is not 8 lower-case hex digits"));
    }
    let id = u32::from_str_radix(id, 16).map_err(|_| NoteError::Key("key id"))?;
    let raw = B64.decode(b64).map_err(|_| NoteError::Key("key is not base64"))?;
    let (Some(&ALG_ED25519), Some(key)) = (raw.first(), raw.get(1..)) else {
        return Err(NoteError::Key("not an Ed25519 key"));
    };
    let key: [u8; 32] = key
        .try_into()
        .map_err(|_| NoteError::Key("Ed25519 key is not 32 bytes"))?;
    Ok((name, id, key))
}

/// The log's public key: verifies checkpoint signatures.
#[derive(Clone, PartialEq, Eq)]
pub struct Verifier {
    name: String,
    key_id: u32,
    public_key: [u8; 32],
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_key_string())
    }
}

impl Verifier {
    /// Parse a verifier key `name+hex8+base64(0x01 || key)`; the key id must match.
    pub fn parse(vkey: &str) -> Result<Self, NoteError> {
        let (name, id, public_key) = parse_key_string(vkey.trim_end_matches('\n'), "")?;
        if key_id(name, &public_key) != id {
            return Err(NoteError::Key("key id does not match name and key"));
        }
        Ok(Self {
            name: name.to_owned(),
            key_id: id,
            public_key,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// `name+hex8+base64(0x01 || key)`.
    pub fn to_key_string(&self) -> String {
        let mut raw = vec![ALG_ED25519];
        raw.extend_from_slice(&self.public_key);
        format!("{}+{:08x}+{}", self.name, self.key_id, B64.encode(raw))
    }

    /// Check that `note` carries a valid signature by this key and return its text.
    /// Signatures by other keys (witness cosignatures) are ignored; a line with this
    /// key's name and id but a bad signature is an error, never skipped.
    pub fn open<'a>(&self, note: &'a str) -> Result<&'a str, NoteError> {
        let parsed = parse_note(note)?;
        let mut found = false;
        for sig in &parsed.signatures {
            if sig.name != self.name || sig.key_id != self.key_id {
                continue;
            }
            let key = UnparsedPublicKey::new(&signature::ED25519, &self.public_key);
            key.verify(parsed.text.as_bytes(), &sig.signature)
                .map_err(|_| NoteError::BadSignature {
                    name: self.name.clone(),
                    key_id: self.key_id,
                })?;
            found = true;
        }
        if !found {
            return Err(NoteError::Unsigned {
                name: self.name.clone(),
                key_id: self.key_id,
            });
        }
        Ok(parsed.text)
    }
}

/// The log's signing key. Debug never prints the seed.
pub struct Signer {
    name: String,
    key_id: u32,
    pair: Ed25519KeyPair,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signer({}+{:08x})", self.name, self.key_id)
    }
}

impl Signer {
    /// A fresh random key named `name` (the log's origin, by convention).
    pub fn generate(name: &str) -> Result<Self, NoteError> {
        check_name(name)?;
        let pair = Ed25519KeyPair::generate().map_err(|_| NoteError::KeyGen)?;
        Ok(Self::from_pair(name, pair))
    }

    fn from_pair(name: &str, pair: Ed25519KeyPair) -> Self {
        let mut pk = [0u8; 32];
        pk.copy_from_slice(pair.public_key().as_ref());
        Self {
            name: name.to_owned(),
            key_id: key_id(name, &pk),
            pair,
        }
    }

    /// Parse `PRIVATE+KEY+name+hex8+base64(0x01 || seed)`; the key id must match.
    pub fn parse(skey: &str) -> Result<Self, NoteError> {
        let (name, id, seed) = parse_key_string(skey.trim_end_matches('\n'), "PRIVATE+KEY+")?;
        let pair = Ed25519KeyPair::from_seed_unchecked(&seed).map_err(|_| NoteError::Key("bad seed"))?;
        let s = Self::from_pair(name, pair);
        if s.key_id != id {
            return Err(NoteError::Key("key id does not match name and key"));
        }
        Ok(s)
    }

    /// The private key string. Secret: write it only to a file the operator protects.
    pub fn to_private_key_string(&self) -> Result<String, NoteError> {
        let seed = self.pair.seed().map_err(|_| NoteError::KeyGen)?;
        let seed = seed.as_be_bytes().map_err(|_| NoteError::KeyGen)?;
        let mut raw = vec![ALG_ED25519];
        raw.extend_from_slice(seed.as_ref());
        Ok(format!(
            "PRIVATE+KEY+{}+{:08x}+{}",
            self.name,
            self.key_id,
            B64.encode(raw)
        ))
    }

    pub fn verifier(&self) -> Verifier {
        let mut pk = [0u8; 32];
        pk.copy_from_slice(self.pair.public_key().as_ref());
        Verifier {
            name: self.name.clone(),
            key_id: self.key_id,
            public_key: pk,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sign `text` (which must be a valid note text) into a signed note.
    pub fn sign(&self, text: &str) -> Result<String, NoteError> {
        check_text(text)?;
        let sig = self.pair.sign(text.as_bytes());
        let mut blob = self.key_id.to_be_bytes().to_vec();
        blob.extend_from_slice(sig.as_ref());
        Ok(format!(
            "{text}\n{SIG_PREFIX}{} {}\n",
            self.name,
            B64.encode(blob)
        ))
    }
}

/// One signature line of a note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature<'a> {
    pub name: &'a str,
    pub key_id: u32,
    pub signature: Vec<u8>,
}

/// A note split into its text and signature lines, signatures not yet verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedNote<'a> {
    pub text: &'a str,
    pub signatures: Vec<NoteSignature<'a>>,
}

/// Note text: non-empty, ends in a newline, no control characters but newline.
fn check_text(text: &str) -> Result<(), NoteError> {
    if !text.ends_with('\n') {
        return Err(NoteError::Malformed("text does not end in a newline"));
    }
    if text.chars().any(|c| c != '\n' && c.is_control()) {
        return Err(NoteError::Malformed("control character in text"));
    }
    Ok(())
}

/// Split a signed note at its last blank line and parse the signature lines.
pub fn parse_note(note: &str) -> Result<ParsedNote<'_>, NoteError> {
    if note.len() > MAX_NOTE {
        return Err(NoteError::Malformed("note larger than 1 MB"));
    }
    let split = note
        .rfind("\n\n")
        .ok_or(NoteError::Malformed("no blank line before signatures"))?;
    let text = note.get(..split + 1).ok_or(NoteError::Malformed("split"))?;
    let sigs = note.get(split + 2..).ok_or(NoteError::Malformed("split"))?;
    check_text(text)?;
    if !sigs.ends_with('\n') {
        return Err(NoteError::Malformed("signature block does not end in a newline"));
    }
    let mut signatures = Vec::new();
    for line in sigs.split_terminator('\n') {
        if signatures.len() == MAX_SIGS {
            return Err(NoteError::Malformed("more than 100 signatures"));
        }
        let rest = line.strip_prefix(SIG_PREFIX).ok_or(NoteError::Malformed(
            "signature line does not start with an em dash",
        ))?;
        let (name, b64) = rest
            .split_once(' ')
            .ok_or(NoteError::Malformed("signature line has no space"))?;
        check_name(name).map_err(|_| NoteError::Malformed("bad signer name"))?;
        let blob = B64
            .decode(b64)
            .map_err(|_| NoteError::Malformed("signature is not base64"))?;
        let (Some(id), Some(sig)) = (blob.get(..4), blob.get(4..)) else {
            return Err(NoteError::Malformed("signature shorter than a key id"));
        };
        if sig.is_empty() {
            return Err(NoteError::Malformed("empty signature"));
        }
        let mut idb = [0u8; 4];
        idb.copy_from_slice(id);
        signatures.push(NoteSignature {
            name,
            key_id: u32::from_be_bytes(idb),
            signature: sig.to_vec(),
        });
    }
    if signatures.is_empty() {
        return Err(NoteError::Malformed("no signature lines"));
    }
    Ok(ParsedNote { text, signatures })
}

/// A C2SP tlog-checkpoint body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
    /// Extension lines after the root, kept verbatim.
    pub extensions: Vec<String>,
}

impl Checkpoint {
    /// `origin\nsize\nbase64(root)\n` then the extension lines.
    pub fn to_body(&self) -> String {
        let mut s = format!("{}\n{}\n{}\n", self.origin, self.size, B64.encode(self.root));
        for e in &self.extensions {
            s.push_str(e);
            s.push('\n');
        }
        s
    }

    /// Parse a checkpoint body (the text of a note).
    pub fn parse(body: &str) -> Result<Self, NoteError> {
        let lines = body
            .strip_suffix('\n')
            .ok_or(NoteError::Checkpoint("does not end in a newline"))?;
        let mut it = lines.split('\n');
        let (Some(origin), Some(size), Some(root)) = (it.next(), it.next(), it.next()) else {
            return Err(NoteError::Checkpoint("fewer than three lines"));
        };
        if origin.is_empty() {
            return Err(NoteError::Checkpoint("empty origin"));
        }
        // Decimal, no sign, no leading zero (one spelling per size).
        if size.is_empty()
            || !size.bytes().all(|b| b.is_ascii_digit())
            || (size.len() > 1 && size.starts_with('0'))
        {
            return Err(NoteError::Checkpoint("size is not canonical decimal"));
        }
        let size: u64 = size
            .parse()
            .map_err(|_| NoteError::Checkpoint("size out of range"))?;
        let root = B64
            .decode(root)
            .map_err(|_| NoteError::Checkpoint("root is not base64"))?;
        let root: Hash = root
            .try_into()
            .map_err(|_| NoteError::Checkpoint("root is not 32 bytes"))?;
        let mut extensions = Vec::new();
        for e in it {
            if e.is_empty() {
                return Err(NoteError::Checkpoint("empty extension line"));
            }
            extensions.push(e.to_owned());
        }
        Ok(Self {
            origin: origin.to_owned(),
            size,
            root,
            extensions,
        })
    }

    /// Sign this checkpoint into a note.
    pub fn sign(&self, signer: &Signer) -> Result<String, NoteError> {
        signer.sign(&self.to_body())
    }

    /// Verify a signed checkpoint note with the log key and parse it; the origin must be
    /// the key's name.
    pub fn open(note: &str, verifier: &Verifier) -> Result<Self, NoteError> {
        let text = verifier.open(note)?;
        let cp = Self::parse(text)?;
        if cp.origin != verifier.name() {
            return Err(NoteError::Checkpoint("origin is not the log key's name"));
        }
        Ok(cp)
    }
}

#[cfg(test)]
mod tests {
    //! The signed-note known answers are the golang.org/x/mod/sumdb/note example
    //! (note.go package documentation and note_test.go): PeterNeumann's keys, text and
    //! signature. Ed25519 is deterministic, so signing the text with the private key must
    //! reproduce the signature line byte for byte.
    use super::*;

    const VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const SKEY: &str = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                        then you don't know what your problem is.\n";
    const NOTE: &str = "If you think cryptography is the answer to your problem,\n\
                        then you don't know what your problem is.\n\
                        \n\
                        \u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

    #[test]
    fn go_note_vector_verifies_and_reproduces() {
        let v = Verifier::parse(VKEY).unwrap();
        assert_eq!(v.key_id(), 0xc74f20a3);
        assert_eq!(v.to_key_string(), VKEY);
        assert_eq!(v.open(NOTE).unwrap(), TEXT);
        let s = Signer::parse(SKEY).unwrap();
        assert_eq!(s.verifier(), v);
        assert_eq!(s.sign(TEXT).unwrap(), NOTE);
        assert_eq!(s.to_private_key_string().unwrap(), SKEY);
    }

    #[test]
    fn tampered_notes_are_refused() {
        let v = Verifier::parse(VKEY).unwrap();
        let e = v.open(&NOTE.replace("cryptography", "cryptographY")).unwrap_err();
        assert!(matches!(e, NoteError::BadSignature { .. }), "{e}");
        assert_eq!(e.check(), "signature");
        // Another key's signature only: unsigned by ours.
        let other = Signer::generate("PeterNeumann").unwrap();
        let e = v.open(&other.sign(TEXT).unwrap()).unwrap_err();
        assert!(matches!(e, NoteError::Unsigned { .. }), "{e}");
        // Structural damage.
        for bad in [
            TEXT,
            &NOTE.replace("\u{2014}", "-"),
            &NOTE[..NOTE.len() - 1],
            &NOTE.replace("x08go", "x08g"),
            "\n\n\u{2014} a AAAAAAAA\n",
        ] {
            assert!(v.open(bad).is_err(), "{bad:?}");
        }
        // Wrong key strings (cases from Go's TestNewVerifier).
        for bad in [
            "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "PeterNeumann+C74F20A3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "PeterNeumann+c74f20a3",
            "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",
            "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        ] {
            assert!(Verifier::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn checkpoint_roundtrip_and_strictness() {
        let s = Signer::generate("custody.example/log").unwrap();
        let cp = Checkpoint {
            origin: "custody.example/log".into(),
            size: 8,
            root: [7; 32],
            extensions: vec![],
        };
        let note = cp.sign(&s).unwrap();
        assert_eq!(Checkpoint::open(&note, &s.verifier()).unwrap(), cp);
        let body = cp.to_body();
        for bad in [
            body.replace("\n8\n", "\n08\n"),
            body.replace("\n8\n", "\n+8\n"),
            body.replace("\n8\n", "\n\n"),
            body.trim_end().to_owned(),
            format!("{body}\n"),
            "custody.example/log\n8\nAAAA\n".to_owned(),
        ] {
            assert!(Checkpoint::parse(&bad).is_err(), "{bad:?}");
        }
        // The body from the C2SP tlog-checkpoint example parses, extension kept.
        let ex = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\nextension\n";
        let c = Checkpoint::parse(ex).unwrap();
        assert_eq!(c.size, 20852163);
        assert_eq!(c.extensions, vec!["extension".to_owned()]);
        assert_eq!(c.to_body(), ex);
        // Signed by the right key but for a different origin.
        let other = Signer::generate("other").unwrap();
        let n = Checkpoint {
            origin: "x".into(),
            ..cp
        }
        .sign(&other)
        .unwrap();
        assert!(Checkpoint::open(&n, &other.verifier()).is_err());
    }
}
