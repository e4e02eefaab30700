//! CoRIM / CoMID reader (draft-ietf-rats-corim): reference values as Veraison, AMD,
//! Arm, Intel and NVIDIA publish them.
//!
//! # Why a reader of our own
//! `corim-rs` 0.2.0 (crates.io, one maintainer) was considered and not taken: about 28k
//! lines built on serde derives, with its own dependency set (coset 0.3 next to the
//! workspace's 0.4, serde_json, derive_more, either, oid, uuid, base64, optional vendored
//! OpenSSL), no size limits, and the profile extensions met in these vectors (Intel's
//! negative mval keys with expression tags 60010/60020) would have to be added around it
//! anyway. The subset read here is small, so it is written on [`ciborium::Value`] (already a
//! dependency); the COSE_Sign1 envelope is four array items, taken apart by hand, which
//! keeps `custody-formats` free of a coset dependency. ES256 verification uses aws-lc-rs,
//! which this crate already depends on.
//!
//! # What is read
//! - `#6.501` unsigned CoRIM (`corim-map`: id, tags, profile, validity, entities);
//!   `#6.506` CoMIDs inside it (a bstr holding the CoMID map); a bare CoMID, tagged
//!   `#6.506` or untagged; a `#6.18` COSE_Sign1 CoRIM ([`Corim::from_signed`]) whose
//!   protected header says `application/rim+cbor`, verified before its payload is read.
//! - In a CoMID: language, tag identity, entities, and **reference-value triples** in full
//!   (environment: class, instance, group; measurements: mkey, version, svn, digests,
//!   flags, raw value and mask, MAC/IP address, serial number, UEID, UUID, name,
//!   cryptokeys, authorized-by). Profile extension keys (negative keys in a
//!   measurement-values map, e.g. Intel's TDX profile) are kept as raw CBOR values, with
//!   [`Expression`] to read the numeric and set-membership expressions they use.
//! - Every other triple kind (endorsed, identity, attest-key, domain, CoSWID,
//!   conditional endorsement...) and other concise tags (CoSWID `#6.505`, CoTL `#6.508`)
//!   are checked to be of the right CBOR type and *counted*, not decoded.
//! - Unknown non-negative map keys are counted in `unrecognised` fields, never refused;
//!   known keys with the wrong shape, duplicate keys, missing mandatory keys, truncated
//!   input, trailing bytes and lists over the limits below are typed errors naming where.
//!   Locators (corim-map key 2) are type-checked and counted only.
//!
//! Nothing here panics; all sizes are bounded by the named limits.

use ciborium::value::Value;
use thiserror::Error;

pub mod tpm;

/// Longest accepted document (signed or not).
pub const MAX_INPUT_LEN: usize = 1 << 20;
/// Deepest CBOR nesting accepted by the decoder.
pub const MAX_DEPTH: usize = 32;
/// Most concise tags in one CoRIM.
pub const MAX_TAGS: usize = 64;
/// Most triples of all kinds in one CoMID.
pub const MAX_TRIPLES: usize = 1024;
/// Most measurements in one reference triple.
pub const MAX_MEASUREMENTS: usize = 1024;
/// Most measurements in the whole document.
pub const MAX_TOTAL_MEASUREMENTS: usize = 8192;
/// Most digests in one measurement.
pub const MAX_DIGESTS: usize = 16;
/// Longest digest value (SHA-512).
pub const MAX_DIGEST_LEN: usize = 64;
/// Most entries in any map, and items in any other list (entities, roles, keys, flags).
pub const MAX_ENTRIES: usize = 64;
/// Longest raw value, mask, identifier or key in bytes.
pub const MAX_BYTES_LEN: usize = 16 * 1024;

/// CBOR tags used by CoRIM.
pub mod tags {
    pub const COSE_SIGN1: u64 = 18;
    pub const URI: u64 = 32;
    pub const UUID: u64 = 37;
    pub const OID: u64 = 111;
    pub const CORIM: u64 = 501;
    pub const COSWID: u64 = 505;
    pub const COMID: u64 = 506;
    pub const COTL: u64 = 508;
    pub const UEID: u64 = 550;
    pub const SVN: u64 = 552;
    pub const MIN_SVN: u64 = 553;
    pub const PKIX_BASE64_KEY: u64 = 554;
    pub const PKIX_BASE64_CERT: u64 = 555;
    pub const BYTES: u64 = 560;
    pub const MASKED_RAW_VALUE: u64 = 563;
    pub const TIME: u64 = 1;
}

/// The content type a signed CoRIM's protected header must carry.
pub const CONTENT_TYPE: &str = "application/rim+cbor";
/// COSE algorithm id of ES256.
pub const COSE_ES256: i64 = -7;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CorimError {
    #[error("input is {0} bytes, more than {MAX_INPUT_LEN}")]
    TooLong(usize),
    #[error("{at}: CBOR does not decode: {msg}")]
    Cbor { at: String, msg: String },
    #[error("{at}: {n} bytes after the CBOR item")]
    Trailing { at: String, n: usize },
    #[error("{at}: expected {expected}")]
    Type { at: String, expected: &'static str },
    #[error("{at}: tag {found:?}, expected {expected}")]
    Tag {
        at: String,
        found: Option<u64>,
        expected: &'static str,
    },
    #[error("{at}: mandatory key {key} missing")]
    Missing { at: String, key: i64 },
    #[error("{at}: key {key} appears more than once")]
    Duplicate { at: String, key: String },
    #[error("{at}: {n} entries, more than the limit {max}")]
    TooMany { at: String, n: usize, max: usize },
    #[error("{at}: {why}")]
    Invalid { at: String, why: &'static str },
    #[error("COSE_Sign1: content type {0:?}, expected {CONTENT_TYPE}")]
    ContentType(Option<String>),
    #[error("COSE_Sign1: detached payload is not supported")]
    DetachedPayload,
    #[error("COSE_Sign1: signature does not verify")]
    Signature,
}

type Result<T> = std::result::Result<T, CorimError>;

/// A CoRIM id, a CoMID tag id, or a UUID-or-text identifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagId {
    Text(String),
    Uuid([u8; 16]),
}

/// An object identifier, as its DER content bytes and dotted text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Oid {
    pub der: Vec<u8>,
    pub dotted: String,
}

/// A key or certificate, by its CBOR tag (554 PEM key, 555 PEM cert, ..., 558 COSE key,
/// 560 key identifier bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CryptoKey {
    pub tag: u64,
    pub value: KeyData,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyData {
    Text(String),
    Bytes(Vec<u8>),
    /// A thumbprint array or COSE key map: type-checked as a tagged item, not decoded.
    Structured,
}

/// class-id, instance-id and group-id choices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ident {
    Oid(Oid),
    Uuid([u8; 16]),
    Ueid(Vec<u8>),
    Bytes(Vec<u8>),
    Key(CryptoKey),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entity {
    pub name: String,
    pub reg_id: Option<String>,
    pub roles: Vec<u64>,
}

/// Validity in seconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: Option<i64>,
    pub not_after: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Corim {
    /// `None` for a bare CoMID.
    pub id: Option<TagId>,
    pub tags: Vec<Comid>,
    /// The profile: a URI, or an OID in dotted text.
    pub profile: Option<String>,
    pub validity: Option<Validity>,
    pub entities: Vec<Entity>,
    /// CoSWID and CoTL tags, counted, not decoded.
    pub other_tags: usize,
    /// Locators, counted.
    pub locators: usize,
    /// Unknown corim-map keys.
    pub unrecognised: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Comid {
    pub language: Option<String>,
    pub tag_id: TagId,
    pub tag_version: u64,
    pub entities: Vec<Entity>,
    pub triples: Triples,
    /// Unknown concise-mid-tag keys (linked tags, key 3, are counted here too).
    pub unrecognised: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Triples {
    pub reference_values: Vec<ReferenceValue>,
    /// Other triple kinds: (triples-map key, number of records).
    pub other: Vec<(i64, usize)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ReferenceValue {
    pub environment: Environment,
    pub measurements: Vec<Measurement>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Environment {
    pub class: Option<Class>,
    pub instance: Option<Ident>,
    pub group: Option<Ident>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Class {
    pub id: Option<Ident>,
    pub vendor: Option<String>,
    pub model: Option<String>,
    pub layer: Option<u64>,
    pub index: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mkey {
    Uint(u64),
    Text(String),
    Uuid([u8; 16]),
    Oid(Oid),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Alg {
    /// A named-information hash algorithm id (1 sha-256, 7 sha-384, 8 sha-512).
    Id(i64),
    Name(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    pub alg: Alg,
    pub value: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub version: String,
    pub scheme: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Svn {
    Exact(u64),
    Min(u64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawValue {
    pub value: Vec<u8>,
    pub mask: Option<Vec<u8>>,
}

/// A measurement-values-map extension (negative key), kept as CBOR.
#[derive(Debug, Clone, PartialEq)]
pub struct Extension {
    pub key: i64,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Measurement {
    pub mkey: Option<Mkey>,
    pub version: Option<Version>,
    pub svn: Option<Svn>,
    pub digests: Vec<Digest>,
    /// flags-map: (flag key, value); 0 is-configured, 1 is-secure, 2 is-recovery,
    /// 3 is-debug, ... 9 is-confidential.
    pub flags: Vec<(i64, bool)>,
    pub raw_value: Option<RawValue>,
    pub mac_addr: Option<Vec<u8>>,
    pub ip_addr: Option<Vec<u8>>,
    pub serial_number: Option<String>,
    pub ueid: Option<Vec<u8>>,
    pub uuid: Option<[u8; 16]>,
    pub name: Option<String>,
    pub cryptokeys: Vec<CryptoKey>,
    pub authorized_by: Vec<CryptoKey>,
    pub extensions: Vec<Extension>,
    /// Unknown non-negative keys in the measurement or its values map (integrity
    /// registers, 14, and int-range, 15, are counted here too).
    pub unrecognised: usize,
}

impl Measurement {
    /// The profile extension under `key`, if present.
    pub fn extension(&self, key: i64) -> Option<&Value> {
        self.extensions.iter().find(|e| e.key == key).map(|e| &e.value)
    }
}

/// The expressions of the Intel profile: `#6.60010([op, uint])` (numeric) and
/// `#6.60020/60021([op, [+ digest]])` (set of digests / of other values).
#[derive(Debug, Clone, PartialEq)]
pub enum Expression {
    Numeric { op: i64, value: u64 },
    DigestSet { op: i64, digests: Vec<Digest> },
}

impl Expression {
    pub const NUMERIC: u64 = 60010;
    pub const DIGEST_SET: u64 = 60020;

    /// Reads an expression; `None` when `v` is not one of the two shapes.
    pub fn from_value(v: &Value) -> Option<Expression> {
        let Value::Tag(tag, inner) = v else { return None };
        let Value::Array(a) = inner.as_ref() else {
            return None;
        };
        let [op, operand] = a.as_slice() else { return None };
        let op = int(op)?;
        match *tag {
            Self::NUMERIC => Some(Expression::Numeric {
                op,
                value: uint(operand)?,
            }),
            Self::DIGEST_SET => {
                let digests = digests(operand.clone(), "expression").ok()?;
                Some(Expression::DigestSet { op, digests })
            }
            _ => None,
        }
    }
}

/// What the verify callback of [`Corim::from_signed`] is given about the signer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoseHeader {
    pub alg: i64,
    pub kid: Option<Vec<u8>>,
    /// corim-meta signer name, if present.
    pub signer: Option<String>,
    /// corim-meta signature validity, if present.
    pub validity: Option<Validity>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SignedCorim {
    pub header: CoseHeader,
    pub corim: Corim,
}

impl Corim {
    /// Reads an unsigned CoRIM (`#6.501`) or a bare CoMID (`#6.506` or an untagged
    /// CoMID map).
    pub fn from_cbor(bytes: &[u8]) -> Result<Corim> {
        let v = decode(bytes, "document")?;
        let mut budget = Budget::default();
        match v {
            Value::Tag(tags::CORIM, inner) => corim_map(*inner, &mut budget),
            Value::Tag(tags::COMID, inner) => {
                let comid = comid_value(*inner, "comid", &mut budget)?;
                Ok(Corim::bare(comid))
            }
            Value::Map(_) => Ok(Corim::bare(comid_map(v, "comid", &mut budget)?)),
            Value::Tag(t, _) => Err(CorimError::Tag {
                at: "document".into(),
                found: Some(t),
                expected: "501 (CoRIM) or 506 (CoMID)",
            }),
            _ => Err(CorimError::Tag {
                at: "document".into(),
                found: None,
                expected: "501 (CoRIM) or 506 (CoMID)",
            }),
        }
    }

    /// Reads a `#6.18` COSE_Sign1 CoRIM. `verify(header, tbs, signature)` must return true
    /// for the signature over `tbs` (the COSE Sig_structure); only then is the payload read.
    pub fn from_signed(
        bytes: &[u8],
        verify: impl FnOnce(&CoseHeader, &[u8], &[u8]) -> bool,
    ) -> Result<SignedCorim> {
        let v = decode(bytes, "cose")?;
        let Value::Tag(tags::COSE_SIGN1, inner) = v else {
            let found = if let Value::Tag(t, _) = v { Some(t) } else { None };
            return Err(CorimError::Tag {
                at: "cose".into(),
                found,
                expected: "18 (COSE_Sign1)",
            });
        };
        let Value::Array(items) = *inner else {
            return Err(ty("cose", "a 4-item array"));
        };
        let [protected, unprotected, payload, signature]: [Value; 4] =
            items.try_into().map_err(|_| ty("cose", "a 4-item array"))?;
        let protected = bytes_of(protected, "cose.protected", MAX_INPUT_LEN)?;
        let Value::Map(_) = unprotected else {
            return Err(ty("cose.unprotected", "a map"));
        };
        let payload = match payload {
            Value::Null => return Err(CorimError::DetachedPayload),
            p => bytes_of(p, "cose.payload", MAX_INPUT_LEN)?,
        };
        let signature = bytes_of(signature, "cose.signature", 1024)?;
        let header = cose_header(&protected)?;

        let tbs = Value::Array(vec![
            Value::Text("Signature1".into()),
            Value::Bytes(protected),
            Value::Bytes(Vec::new()),
            Value::Bytes(payload),
        ]);
        let mut tbs_bytes = Vec::new();
        ciborium::into_writer(&tbs, &mut tbs_bytes).map_err(|_| CorimError::Invalid {
            at: "cose".into(),
            why: "Sig_structure does not encode",
        })?;
        if !verify(&header, &tbs_bytes, &signature) {
            return Err(CorimError::Signature);
        }
        let Value::Array(mut tbs_items) = tbs else {
            return Err(CorimError::Invalid {
                at: "cose".into(),
                why: "Sig_structure",
            });
        };
        let Some(Value::Bytes(payload)) = tbs_items.pop() else {
            return Err(CorimError::Invalid {
                at: "cose".into(),
                why: "Sig_structure",
            });
        };
        let v = decode(&payload, "cose.payload")?;
        let mut budget = Budget::default();
        let corim = match v {
            Value::Tag(tags::CORIM, inner) => corim_map(*inner, &mut budget)?,
            Value::Tag(t, _) => {
                return Err(CorimError::Tag {
                    at: "cose.payload".into(),
                    found: Some(t),
                    expected: "501 (CoRIM)",
                })
            }
            _ => {
                return Err(CorimError::Tag {
                    at: "cose.payload".into(),
                    found: None,
                    expected: "501 (CoRIM)",
                })
            }
        };
        Ok(SignedCorim { header, corim })
    }

    /// [`Corim::from_signed`] with an ES256 check against `sec1_point` (an uncompressed
    /// P-256 point); the header's alg must be ES256.
    pub fn from_signed_es256(bytes: &[u8], sec1_point: &[u8]) -> Result<SignedCorim> {
        Corim::from_signed(bytes, |h, tbs, sig| es256_verify(h, sec1_point, tbs, sig))
    }

    fn bare(comid: Comid) -> Corim {
        Corim {
            id: None,
            tags: vec![comid],
            profile: None,
            validity: None,
            entities: Vec::new(),
            other_tags: 0,
            locators: 0,
            unrecognised: 0,
        }
    }

    /// Every reference value of every CoMID.
    pub fn reference_values(&self) -> impl Iterator<Item = &ReferenceValue> {
        self.tags.iter().flat_map(|c| c.triples.reference_values.iter())
    }
}

/// ES256 (ECDSA P-256 SHA-256, fixed 64-byte signature) check for [`Corim::from_signed`].
pub fn es256_verify(header: &CoseHeader, sec1_point: &[u8], tbs: &[u8], sig: &[u8]) -> bool {
    use aws_lc_rs::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_FIXED};
    header.alg == COSE_ES256
        && UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, sec1_point)
            .verify(tbs, sig)
            .is_ok()
}

// ---- decoding helpers ----

#[derive(Default)]
struct Budget {
    measurements: usize,
}

fn decode(bytes: &[u8], at: &str) -> Result<Value> {
    if bytes.len() > MAX_INPUT_LEN {
        return Err(CorimError::TooLong(bytes.len()));
    }
    let mut rd = bytes;
    let v: Value =
        ciborium::de::from_reader_with_recursion_limit(&mut rd, MAX_DEPTH).map_err(|e| CorimError::Cbor {
            at: at.into(),
            msg: e.to_string(),
        })?;
    if !rd.is_empty() {
        return Err(CorimError::Trailing {
            at: at.into(),
            n: rd.len(),
        });
    }
    Ok(v)
}

fn ty(at: &str, expected: &'static str) -> CorimError {
    CorimError::Type {
        at: at.into(),
        expected,
    }
}

fn invalid(at: &str, why: &'static str) -> CorimError {
    CorimError::Invalid { at: at.into(), why }
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Integer(i) => i64::try_from(*i).ok(),
        _ => None,
    }
}

fn uint(v: &Value) -> Option<u64> {
    match v {
        Value::Integer(i) => u64::try_from(*i).ok(),
        _ => None,
    }
}

fn key_text(k: &Value) -> String {
    match k {
        Value::Integer(i) => i128::from(*i).to_string(),
        Value::Text(t) => format!("{t:?}"),
        _ => "(non-scalar)".into(),
    }
}

/// A map with integer keys, checked for size and duplicates.
fn int_map(v: Value, at: &str) -> Result<Vec<(i64, Value)>> {
    let Value::Map(entries) = v else {
        return Err(ty(at, "a map"));
    };
    if entries.len() > MAX_ENTRIES {
        return Err(CorimError::TooMany {
            at: at.into(),
            n: entries.len(),
            max: MAX_ENTRIES,
        });
    }
    let mut out: Vec<(i64, Value)> = Vec::with_capacity(entries.len());
    for (k, val) in entries {
        let Some(key) = int(&k) else {
            return Err(CorimError::Invalid {
                at: format!("{at} key {}", key_text(&k)),
                why: "map key is not an integer",
            });
        };
        if out.iter().any(|(seen, _)| *seen == key) {
            return Err(CorimError::Duplicate {
                at: at.into(),
                key: key.to_string(),
            });
        }
        out.push((key, val));
    }
    Ok(out)
}

fn take(map: &mut Vec<(i64, Value)>, key: i64) -> Option<Value> {
    let i = map.iter().position(|(k, _)| *k == key)?;
    Some(map.swap_remove(i).1)
}

fn need(map: &mut Vec<(i64, Value)>, key: i64, at: &str) -> Result<Value> {
    take(map, key).ok_or_else(|| CorimError::Missing { at: at.into(), key })
}

fn array(v: Value, at: &str, max: usize) -> Result<Vec<Value>> {
    let Value::Array(a) = v else {
        return Err(ty(at, "an array"));
    };
    if a.len() > max {
        return Err(CorimError::TooMany {
            at: at.into(),
            n: a.len(),
            max,
        });
    }
    Ok(a)
}

fn nonempty_array(v: Value, at: &str, max: usize) -> Result<Vec<Value>> {
    let a = array(v, at, max)?;
    if a.is_empty() {
        return Err(invalid(at, "empty list where one or more items are required"));
    }
    Ok(a)
}

fn text(v: Value, at: &str) -> Result<String> {
    match v {
        Value::Text(t) if t.len() <= MAX_BYTES_LEN => Ok(t),
        Value::Text(_) => Err(invalid(at, "text too long")),
        _ => Err(ty(at, "a text string")),
    }
}

fn bytes_of(v: Value, at: &str, max: usize) -> Result<Vec<u8>> {
    match v {
        Value::Bytes(b) if b.len() <= max => Ok(b),
        Value::Bytes(_) => Err(invalid(at, "byte string too long")),
        _ => Err(ty(at, "a byte string")),
    }
}

fn u64_of(v: Value, at: &str) -> Result<u64> {
    uint(&v).ok_or_else(|| ty(at, "an unsigned integer"))
}

fn uuid(v: Value, at: &str) -> Result<[u8; 16]> {
    bytes_of(v, at, 16)?
        .try_into()
        .map_err(|_| invalid(at, "UUID is not 16 bytes"))
}

fn untag(v: Value, tag: u64, at: &str, expected: &'static str) -> Result<Value> {
    match v {
        Value::Tag(t, inner) if t == tag => Ok(*inner),
        Value::Tag(t, _) => Err(CorimError::Tag {
            at: at.into(),
            found: Some(t),
            expected,
        }),
        _ => Err(CorimError::Tag {
            at: at.into(),
            found: None,
            expected,
        }),
    }
}

fn tag_id(v: Value, at: &str) -> Result<TagId> {
    match v {
        Value::Text(_) => Ok(TagId::Text(text(v, at)?)),
        Value::Bytes(_) => Ok(TagId::Uuid(uuid(v, at)?)),
        Value::Tag(tags::UUID, inner) => Ok(TagId::Uuid(uuid(*inner, at)?)),
        _ => Err(ty(at, "a text or UUID identifier")),
    }
}

/// DER OID content bytes to dotted text; arcs must fit a u64 and use minimal encoding.
fn oid(v: Value, at: &str) -> Result<Oid> {
    let der = bytes_of(v, at, 256)?;
    let mut arcs: Vec<u64> = Vec::new();
    let mut cur: u64 = 0;
    let mut started = false;
    for &b in &der {
        if !started && b == 0x80 {
            return Err(invalid(at, "OID arc not minimally encoded"));
        }
        started = true;
        if cur > (u64::MAX >> 7) {
            return Err(invalid(at, "OID arc larger than 64 bits"));
        }
        cur = (cur << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            arcs.push(cur);
            cur = 0;
            started = false;
        }
    }
    if started || arcs.is_empty() {
        return Err(invalid(at, "OID is empty or truncated"));
    }
    let mut dotted = String::new();
    for (i, a) in arcs.iter().enumerate() {
        if i == 0 {
            let (x, y) = match *a {
                a if a < 40 => (0, a),
                a if a < 80 => (1, a - 40),
                a => (2, a - 80),
            };
            dotted = format!("{x}.{y}");
        } else {
            dotted.push('.');
            dotted.push_str(&a.to_string());
        }
    }
    Ok(Oid { der, dotted })
}

fn crypto_key(v: Value, at: &str) -> Result<CryptoKey> {
    let Value::Tag(tag, inner) = v else {
        return Err(ty(at, "a tagged key or certificate"));
    };
    if !(554..=562).contains(&tag) {
        return Err(CorimError::Tag {
            at: at.into(),
            found: Some(tag),
            expected: "a crypto key tag (554-562)",
        });
    }
    let value = match *inner {
        Value::Text(t) if t.len() <= MAX_BYTES_LEN => KeyData::Text(t),
        Value::Bytes(b) if b.len() <= MAX_BYTES_LEN => KeyData::Bytes(b),
        Value::Array(_) | Value::Map(_) => KeyData::Structured,
        _ => return Err(ty(at, "key data (text, bytes, array or map)")),
    };
    Ok(CryptoKey { tag, value })
}

fn crypto_keys(v: Value, at: &str) -> Result<Vec<CryptoKey>> {
    nonempty_array(v, at, MAX_ENTRIES)?
        .into_iter()
        .enumerate()
        .map(|(i, k)| crypto_key(k, &format!("{at}[{i}]")))
        .collect()
}

/// class-id / instance-id / group-id.
fn ident(v: Value, at: &str) -> Result<Ident> {
    match v {
        Value::Tag(tags::OID, inner) => Ok(Ident::Oid(oid(*inner, at)?)),
        Value::Tag(tags::UUID, inner) => Ok(Ident::Uuid(uuid(*inner, at)?)),
        Value::Tag(tags::UEID, inner) => Ok(Ident::Ueid(bytes_of(*inner, at, MAX_BYTES_LEN)?)),
        Value::Tag(tags::BYTES, inner) => Ok(Ident::Bytes(bytes_of(*inner, at, MAX_BYTES_LEN)?)),
        v @ Value::Tag(..) => Ok(Ident::Key(crypto_key(v, at)?)),
        _ => Err(ty(at, "a tagged identifier (111, 37, 550, 560 or a key)")),
    }
}

fn entities(v: Value, at: &str) -> Result<Vec<Entity>> {
    let items = nonempty_array(v, at, MAX_ENTRIES)?;
    let mut out = Vec::with_capacity(items.len());
    for (i, e) in items.into_iter().enumerate() {
        let at = format!("{at}[{i}]");
        let mut m = int_map(e, &at)?;
        let name = text(need(&mut m, 0, &at)?, &format!("{at}.name"))?;
        let reg_id = match take(&mut m, 1) {
            Some(r) => Some(text(
                untag(r, tags::URI, &at, "32 (URI)")?,
                &format!("{at}.reg-id"),
            )?),
            None => None,
        };
        let roles = match take(&mut m, 2) {
            Some(r) => nonempty_array(r, &format!("{at}.roles"), MAX_ENTRIES)?
                .into_iter()
                .map(|x| u64_of(x, &format!("{at}.roles")))
                .collect::<Result<Vec<_>>>()?,
            None => return Err(CorimError::Missing { at, key: 2 }),
        };
        out.push(Entity { name, reg_id, roles });
    }
    Ok(out)
}

fn time(v: Value, at: &str) -> Result<i64> {
    let v = untag(v, tags::TIME, at, "1 (epoch time)")?;
    int(&v).ok_or_else(|| ty(at, "an integer time"))
}

fn validity(v: Value, at: &str) -> Result<Validity> {
    let mut m = int_map(v, at)?;
    let not_before = take(&mut m, 0)
        .map(|t| time(t, &format!("{at}.not-before")))
        .transpose()?;
    let not_after = time(need(&mut m, 1, at)?, &format!("{at}.not-after"))?;
    Ok(Validity {
        not_before,
        not_after,
    })
}

fn corim_map(v: Value, budget: &mut Budget) -> Result<Corim> {
    let at = "corim";
    let mut m = int_map(v, at)?;
    let id = tag_id(need(&mut m, 0, at)?, "corim.id")?;
    let tag_list = nonempty_array(need(&mut m, 1, at)?, "corim.tags", MAX_TAGS)?;
    let locators = match take(&mut m, 2) {
        Some(l) => nonempty_array(l, "corim.locators", MAX_ENTRIES)?.len(),
        None => 0,
    };
    let profile = match take(&mut m, 3) {
        Some(Value::Tag(tags::URI, u)) => Some(text(*u, "corim.profile")?),
        Some(Value::Tag(tags::OID, o)) => Some(oid(*o, "corim.profile")?.dotted),
        Some(_) => return Err(ty("corim.profile", "a tagged URI (32) or OID (111)")),
        None => None,
    };
    let validity = take(&mut m, 4)
        .map(|v| validity(v, "corim.validity"))
        .transpose()?;
    let entities = take(&mut m, 5)
        .map(|v| entities(v, "corim.entities"))
        .transpose()?
        .unwrap_or_default();
    let unrecognised = m.len();

    let mut comids = Vec::new();
    let mut other_tags = 0;
    for (i, t) in tag_list.into_iter().enumerate() {
        let at = format!("corim.tags[{i}]");
        match t {
            Value::Tag(tags::COMID, inner) => comids.push(comid_value(*inner, &at, budget)?),
            Value::Tag(tags::COSWID | tags::COTL, inner) => {
                bytes_of(*inner, &at, MAX_INPUT_LEN)?;
                other_tags += 1;
            }
            Value::Tag(t, _) => {
                return Err(CorimError::Tag {
                    at,
                    found: Some(t),
                    expected: "505, 506 or 508 (concise tag)",
                })
            }
            _ => {
                return Err(CorimError::Tag {
                    at,
                    found: None,
                    expected: "505, 506 or 508 (concise tag)",
                })
            }
        }
    }
    Ok(Corim {
        id: Some(id),
        tags: comids,
        profile,
        validity,
        entities,
        other_tags,
        locators,
        unrecognised,
    })
}

/// The content of a `#6.506`: a bstr holding the CoMID (as in a corim-map), or the map
/// itself (a bare tagged CoMID).
fn comid_value(v: Value, at: &str, budget: &mut Budget) -> Result<Comid> {
    match v {
        Value::Bytes(b) => {
            let inner = decode(&b, at)?;
            comid_map(inner, at, budget)
        }
        m @ Value::Map(_) => comid_map(m, at, budget),
        _ => Err(ty(at, "a CoMID (bstr .cbor map)")),
    }
}

fn comid_map(v: Value, at: &str, budget: &mut Budget) -> Result<Comid> {
    let mut m = int_map(v, at)?;
    let language = take(&mut m, 0)
        .map(|l| text(l, &format!("{at}.language")))
        .transpose()?;
    let tid_at = format!("{at}.tag-identity");
    let mut tid = int_map(need(&mut m, 1, at)?, &tid_at)?;
    let tag_id = tag_id(need(&mut tid, 0, &tid_at)?, &format!("{tid_at}.tag-id"))?;
    let tag_version = take(&mut tid, 1)
        .map(|v| u64_of(v, &format!("{tid_at}.tag-version")))
        .transpose()?
        .unwrap_or(0);
    let entities = take(&mut m, 2)
        .map(|e| entities(e, &format!("{at}.entities")))
        .transpose()?
        .unwrap_or_default();
    let triples = triples(need(&mut m, 4, at)?, &format!("{at}.triples"), budget)?;
    Ok(Comid {
        language,
        tag_id,
        tag_version,
        entities,
        triples,
        unrecognised: m.len() + tid.len(),
    })
}

fn triples(v: Value, at: &str, budget: &mut Budget) -> Result<Triples> {
    let m = int_map(v, at)?;
    if m.is_empty() {
        return Err(invalid(at, "triples-map is empty"));
    }
    let mut out = Triples {
        reference_values: Vec::new(),
        other: Vec::new(),
    };
    let mut total = 0usize;
    for (key, val) in m {
        let at = format!("{at}[{key}]");
        let records = nonempty_array(val, &at, MAX_TRIPLES)?;
        total += records.len();
        if total > MAX_TRIPLES {
            return Err(CorimError::TooMany {
                at,
                n: total,
                max: MAX_TRIPLES,
            });
        }
        if key == 0 {
            for (i, r) in records.into_iter().enumerate() {
                out.reference_values
                    .push(reference_triple(r, &format!("{at}.reference[{i}]"), budget)?);
            }
        } else {
            out.other.push((key, records.len()));
        }
    }
    Ok(out)
}

fn reference_triple(v: Value, at: &str, budget: &mut Budget) -> Result<ReferenceValue> {
    let Value::Array(a) = v else {
        return Err(ty(at, "a [environment, measurements] array"));
    };
    let [env, claims]: [Value; 2] = a
        .try_into()
        .map_err(|_| ty(at, "a [environment, measurements] array"))?;
    let environment = environment(env, &format!("{at}.environment"))?;
    let claims = nonempty_array(claims, &format!("{at}.measurements"), MAX_MEASUREMENTS)?;
    budget.measurements += claims.len();
    if budget.measurements > MAX_TOTAL_MEASUREMENTS {
        return Err(CorimError::TooMany {
            at: at.into(),
            n: budget.measurements,
            max: MAX_TOTAL_MEASUREMENTS,
        });
    }
    let measurements = claims
        .into_iter()
        .enumerate()
        .map(|(i, c)| measurement(c, &format!("{at}.measurements[{i}]")))
        .collect::<Result<Vec<_>>>()?;
    Ok(ReferenceValue {
        environment,
        measurements,
    })
}

fn environment(v: Value, at: &str) -> Result<Environment> {
    let mut m = int_map(v, at)?;
    let class = take(&mut m, 0)
        .map(|c| class(c, &format!("{at}.class")))
        .transpose()?;
    let instance = take(&mut m, 1)
        .map(|i| ident(i, &format!("{at}.instance")))
        .transpose()?;
    let group = take(&mut m, 2)
        .map(|g| ident(g, &format!("{at}.group")))
        .transpose()?;
    if let Some((k, _)) = m.first() {
        return Err(CorimError::Invalid {
            at: format!("{at} key {k}"),
            why: "unknown environment-map key",
        });
    }
    if class.is_none() && instance.is_none() && group.is_none() {
        return Err(invalid(at, "environment-map is empty"));
    }
    Ok(Environment {
        class,
        instance,
        group,
    })
}

fn class(v: Value, at: &str) -> Result<Class> {
    let mut m = int_map(v, at)?;
    let c = Class {
        id: take(&mut m, 0)
            .map(|x| ident(x, &format!("{at}.class-id")))
            .transpose()?,
        vendor: take(&mut m, 1)
            .map(|x| text(x, &format!("{at}.vendor")))
            .transpose()?,
        model: take(&mut m, 2)
            .map(|x| text(x, &format!("{at}.model")))
            .transpose()?,
        layer: take(&mut m, 3)
            .map(|x| u64_of(x, &format!("{at}.layer")))
            .transpose()?,
        index: take(&mut m, 4)
            .map(|x| u64_of(x, &format!("{at}.index")))
            .transpose()?,
    };
    if let Some((k, _)) = m.first() {
        return Err(CorimError::Invalid {
            at: format!("{at} key {k}"),
            why: "unknown class-map key",
        });
    }
    if c == Class::default() {
        return Err(invalid(at, "class-map is empty"));
    }
    Ok(c)
}

fn mkey(v: Value, at: &str) -> Result<Mkey> {
    match v {
        Value::Integer(_) => Ok(Mkey::Uint(u64_of(v, at)?)),
        Value::Text(_) => Ok(Mkey::Text(text(v, at)?)),
        Value::Tag(tags::UUID, inner) => Ok(Mkey::Uuid(uuid(*inner, at)?)),
        Value::Tag(tags::OID, inner) => Ok(Mkey::Oid(oid(*inner, at)?)),
        _ => Err(ty(at, "an mkey (uint, text, #6.37 UUID or #6.111 OID)")),
    }
}

fn digests(v: Value, at: &str) -> Result<Vec<Digest>> {
    let items = nonempty_array(v, at, MAX_DIGESTS)?;
    let mut out = Vec::with_capacity(items.len());
    for (i, d) in items.into_iter().enumerate() {
        let at = format!("{at}[{i}]");
        let Value::Array(pair) = d else {
            return Err(ty(&at, "an [alg, value] pair"));
        };
        let [alg, value]: [Value; 2] = pair.try_into().map_err(|_| ty(&at, "an [alg, value] pair"))?;
        let alg = match alg {
            Value::Integer(i) => {
                Alg::Id(i64::try_from(i).map_err(|_| invalid(&at, "algorithm id out of range"))?)
            }
            Value::Text(_) => Alg::Name(text(alg, &at)?),
            _ => return Err(ty(&at, "an algorithm id or name")),
        };
        let value = bytes_of(value, &at, MAX_DIGEST_LEN)?;
        if value.is_empty() {
            return Err(invalid(&at, "empty digest"));
        }
        out.push(Digest { alg, value });
    }
    Ok(out)
}

fn measurement(v: Value, at: &str) -> Result<Measurement> {
    let mut m = int_map(v, at)?;
    let mut out = Measurement {
        mkey: take(&mut m, 0)
            .map(|k| mkey(k, &format!("{at}.mkey")))
            .transpose()?,
        authorized_by: take(&mut m, 2)
            .map(|k| crypto_keys(k, &format!("{at}.authorized-by")))
            .transpose()?
            .unwrap_or_default(),
        ..Measurement::default()
    };
    let mval_at = format!("{at}.mval");
    let mval = need(&mut m, 1, at)?;
    out.unrecognised += m.len();
    let vals = int_map(mval, &mval_at)?;
    if vals.is_empty() {
        return Err(invalid(&mval_at, "measurement-values-map is empty"));
    }
    let mut deprecated_mask = None;
    for (key, val) in vals {
        let at = format!("{mval_at}[{key}]");
        match key {
            0 => {
                let mut vm = int_map(val, &at)?;
                let version = text(need(&mut vm, 0, &at)?, &at)?;
                let scheme = match take(&mut vm, 1) {
                    Some(s) => Some(int(&s).ok_or_else(|| ty(&at, "an integer version scheme"))?),
                    None => None,
                };
                out.version = Some(Version { version, scheme });
            }
            1 => {
                out.svn = Some(match val {
                    Value::Integer(_) => Svn::Exact(u64_of(val, &at)?),
                    Value::Tag(tags::SVN, s) => Svn::Exact(u64_of(*s, &at)?),
                    Value::Tag(tags::MIN_SVN, s) => Svn::Min(u64_of(*s, &at)?),
                    _ => return Err(ty(&at, "an svn (uint, #6.552 or #6.553)")),
                })
            }
            2 => out.digests = digests(val, &at)?,
            3 => {
                for (f, b) in int_map(val, &at)? {
                    let Value::Bool(b) = b else {
                        return Err(ty(&at, "a boolean flag"));
                    };
                    out.flags.push((f, b));
                }
            }
            4 => {
                out.raw_value = Some(match val {
                    Value::Tag(tags::BYTES, b) => RawValue {
                        value: bytes_of(*b, &at, MAX_BYTES_LEN)?,
                        mask: None,
                    },
                    Value::Tag(tags::MASKED_RAW_VALUE, pair) => {
                        let Value::Array(pair) = *pair else {
                            return Err(ty(&at, "a [value, mask] pair"));
                        };
                        let [v, mk]: [Value; 2] =
                            pair.try_into().map_err(|_| ty(&at, "a [value, mask] pair"))?;
                        let value = bytes_of(v, &at, MAX_BYTES_LEN)?;
                        let mask = bytes_of(mk, &at, MAX_BYTES_LEN)?;
                        if mask.len() != value.len() {
                            return Err(invalid(&at, "mask and value differ in length"));
                        }
                        RawValue {
                            value,
                            mask: Some(mask),
                        }
                    }
                    _ => return Err(ty(&at, "a raw value (#6.560 bytes or #6.563 [value, mask])")),
                })
            }
            5 => deprecated_mask = Some(bytes_of(val, &at, MAX_BYTES_LEN)?),
            6 => out.mac_addr = Some(bytes_of(val, &at, 8)?),
            7 => out.ip_addr = Some(bytes_of(val, &at, 16)?),
            8 => out.serial_number = Some(text(val, &at)?),
            9 => out.ueid = Some(bytes_of(val, &at, MAX_BYTES_LEN)?),
            10 => out.uuid = Some(uuid(val, &at)?),
            11 => out.name = Some(text(val, &at)?),
            13 => out.cryptokeys = crypto_keys(val, &at)?,
            k if k < 0 => out.extensions.push(Extension { key: k, value: val }),
            _ => out.unrecognised += 1,
        }
    }
    if let Some(mask) = deprecated_mask {
        match &mut out.raw_value {
            Some(rv) if rv.mask.is_none() => rv.mask = Some(mask),
            Some(_) => return Err(invalid(&mval_at, "raw-value-mask (5) next to a masked raw value")),
            None => return Err(invalid(&mval_at, "raw-value-mask (5) without a raw value (4)")),
        }
    }
    Ok(out)
}

fn cose_header(protected: &[u8]) -> Result<CoseHeader> {
    let at = "cose.protected";
    let mut m = int_map(decode(protected, at)?, at)?;
    let alg = int(&need(&mut m, 1, at)?).ok_or_else(|| ty("cose.protected.alg", "an integer algorithm"))?;
    match take(&mut m, 3) {
        Some(Value::Text(ct)) if ct == CONTENT_TYPE => {}
        Some(Value::Text(ct)) => return Err(CorimError::ContentType(Some(ct))),
        _ => return Err(CorimError::ContentType(None)),
    }
    let kid = take(&mut m, 4)
        .map(|k| bytes_of(k, "cose.protected.kid", 1024))
        .transpose()?;
    let (mut signer, mut validity_out) = (None, None);
    if let Some(meta) = take(&mut m, 8) {
        let meta_at = "cose.protected.corim-meta";
        let meta = match meta {
            Value::Bytes(b) => decode(&b, meta_at)?,
            other => other,
        };
        let mut meta = int_map(meta, meta_at)?;
        let mut s = int_map(need(&mut meta, 0, meta_at)?, "cose.protected.corim-meta.signer")?;
        signer = Some(text(
            need(&mut s, 0, meta_at)?,
            "cose.protected.corim-meta.signer.name",
        )?);
        validity_out = take(&mut meta, 1)
            .map(|v| validity(v, "cose.protected.corim-meta.validity"))
            .transpose()?;
    }
    Ok(CoseHeader {
        alg,
        kid,
        signer,
        validity: validity_out,
    })
}

#[cfg(test)]
pub(crate) mod tests;
