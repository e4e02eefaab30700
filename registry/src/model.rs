//! The registry's data model, its CBOR encoding and its validation.
//!
//! # Encoding
//!
//! CBOR (RFC 8949) as ciborium writes these serde types: maps with text keys in the
//! declaration order below, definite lengths, shortest integer forms, absent options
//! omitted. Percentages are basis points (`u32`, 0..=10000) and coordinates microdegrees
//! (`i32`): no floats in signed data. A hardware id is a two-element array
//! `[kind, bstr]` with kind `"ek_sha256"` (32 bytes: SHA-256 of the EK certificate DER),
//! `"snp_chip_id"` (64 bytes: the SNP report's CHIP_ID), `"gpu_serial"` (1..=20 bytes:
//! the DER INTEGER content octets of the GPU device certificate's serial, as they appear
//! in the certificate) or `"tdx_ppid"` (16 bytes: the PPID in a TDX platform's PCK
//! certificate).
//!
//! Decoding is strict: unknown or duplicate fields, wrong lengths, a byte string where an
//! array is due (or the reverse) and trailing bytes are refused, and the input must be
//! exactly the bytes this crate would encode for the decoded value (one registry, one
//! encoding, so one digest).

use crate::country::Country;
use crate::RegistryError;
use serde::de::{self, IgnoredAny, SeqAccess, Visitor};
use serde::ser::SerializeTuple;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

/// Largest registry payload accepted (bytes); far above any real operator's registry.
pub const MAX_REGISTRY_BYTES: usize = 8 << 20;

/// The signed document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registry {
    /// Monotonic version; every edit bumps it.
    pub version: u64,
    /// Unix seconds.
    pub issued_at: i64,
    /// Human name of the registry authority.
    pub authority: String,
    pub entities: Vec<Entity>,
    pub sites: Vec<Site>,
    pub hardware: Vec<Hardware>,
}

/// A legal entity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entity {
    pub id: String,
    pub name: String,
    /// ISO 17442 Legal Entity Identifier, when the entity has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lei: Option<String>,
    pub registered_office: Country,
    pub central_administration: Country,
    pub principal_establishment: Country,
    /// Has a US office, branch or subsidiary.
    pub us_nexus: bool,
    /// Who owns this entity, directly.
    pub holders: Vec<Holding>,
}

/// A direct stake of `entity` in the entity that lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Holding {
    /// The holder's entity id.
    pub entity: String,
    /// Share of capital, basis points (0..=10000).
    pub capital_bp: u32,
    /// Share of voting rights, basis points (0..=10000).
    pub voting_bp: u32,
}

/// A site (data centre).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Site {
    pub id: String,
    pub name: String,
    pub country: Country,
    pub region: String,
    /// Latitude, microdegrees (-90e6..=90e6).
    pub lat_e6: i32,
    /// Longitude, microdegrees (-180e6..=180e6).
    pub lon_e6: i32,
    /// The operating entity's id.
    pub operator: String,
}

/// A piece of hardware bound to a site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hardware {
    pub site: String,
    pub id: HardwareId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// An attested hardware identity.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HardwareId {
    /// SHA-256 of the TPM EK certificate (DER).
    EkCertSha256([u8; 32]),
    /// SEV-SNP CHIP_ID.
    SnpChipId([u8; 64]),
    /// NVIDIA GPU device certificate serial (DER INTEGER content octets, 1..=20 bytes).
    GpuCertSerial(Vec<u8>),
    /// Intel TDX platform: the PPID in its PCK certificate's SGX extension.
    TdxPpid([u8; 16]),
}

impl HardwareId {
    pub const EK: &'static str = "ek_sha256";
    pub const SNP: &'static str = "snp_chip_id";
    pub const GPU: &'static str = "gpu_serial";
    pub const TDX: &'static str = "tdx_ppid";

    /// From a kind name and the identity's bytes; lengths are exact, nothing is padded.
    pub fn from_parts(kind: &str, bytes: &[u8]) -> Result<Self, RegistryError> {
        let len_err = |kind, want| RegistryError::HardwareIdLength {
            kind,
            want,
            got: bytes.len(),
        };
        match kind {
            Self::EK => bytes
                .try_into()
                .map(Self::EkCertSha256)
                .map_err(|_| len_err(Self::EK, "32")),
            Self::SNP => bytes
                .try_into()
                .map(Self::SnpChipId)
                .map_err(|_| len_err(Self::SNP, "64")),
            Self::TDX => bytes
                .try_into()
                .map(Self::TdxPpid)
                .map_err(|_| len_err(Self::TDX, "16")),
            Self::GPU => {
                let id = Self::GpuCertSerial(bytes.to_vec());
                id.check()?;
                Ok(id)
            }
            other => Err(RegistryError::HardwareKind(other.to_owned())),
        }
    }

    /// `KIND:HEX`, as the CLI and [`fmt::Display`] write it.
    pub fn parse(s: &str) -> Result<Self, RegistryError> {
        let (kind, hex_part) = s
            .split_once(':')
            .ok_or_else(|| RegistryError::Format(format!("hardware id {s:?} is not KIND:HEX")))?;
        let bytes =
            hex::decode(hex_part).map_err(|e| RegistryError::Format(format!("hardware id {s:?}: {e}")))?;
        Self::from_parts(kind, &bytes)
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::EkCertSha256(_) => Self::EK,
            Self::SnpChipId(_) => Self::SNP,
            Self::GpuCertSerial(_) => Self::GPU,
            Self::TdxPpid(_) => Self::TDX,
        }
    }

    pub fn bytes(&self) -> &[u8] {
        match self {
            Self::EkCertSha256(b) => b,
            Self::SnpChipId(b) => b,
            Self::GpuCertSerial(b) => b,
            Self::TdxPpid(b) => b,
        }
    }

    /// The variable-length kind's bounds (fixed lengths hold by construction).
    pub fn check(&self) -> Result<(), RegistryError> {
        match self {
            Self::GpuCertSerial(b) if b.is_empty() || b.len() > 20 => Err(RegistryError::HardwareIdLength {
                kind: Self::GPU,
                want: "1 to 20",
                got: b.len(),
            }),
            _ => Ok(()),
        }
    }
}

impl fmt::Display for HardwareId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind(), hex::encode(self.bytes()))
    }
}

struct RawBytes<'a>(&'a [u8]);

impl Serialize for RawBytes<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

/// A CBOR byte string and nothing else (an array of small integers is refused).
struct ByteBuf(Vec<u8>);

impl<'de> Deserialize<'de> for ByteBuf {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteBuf;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<ByteBuf, E> {
                Ok(ByteBuf(v.to_vec()))
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<ByteBuf, E> {
                Ok(ByteBuf(v))
            }
        }
        d.deserialize_byte_buf(V)
    }
}

impl Serialize for HardwareId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut t = s.serialize_tuple(2)?;
        t.serialize_element(self.kind())?;
        t.serialize_element(&RawBytes(self.bytes()))?;
        t.end()
    }
}

impl<'de> Deserialize<'de> for HardwareId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = HardwareId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a hardware id [kind, bytes]")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<HardwareId, A::Error> {
                let kind: String = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(0, &self))?;
                let bytes: ByteBuf = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(1, &self))?;
                if seq.next_element::<IgnoredAny>()?.is_some() {
                    return Err(de::Error::invalid_length(3, &self));
                }
                HardwareId::from_parts(&kind, &bytes.0).map_err(de::Error::custom)
            }
        }
        d.deserialize_tuple(2, V)
    }
}

/// ISO 17442: 18 uppercase alphanumerics then two check digits, ISO 7064 MOD 97-10
/// over the whole code (letters A=10 .. Z=35) equal to 1.
pub fn lei_problem(lei: &str) -> Option<&'static str> {
    let b = lei.as_bytes();
    if b.len() != 20 {
        return Some("is not 20 characters");
    }
    if !b.iter().all(|c| c.is_ascii_digit() || c.is_ascii_uppercase()) {
        return Some("has characters other than 0-9 A-Z");
    }
    if !b.iter().skip(18).all(u8::is_ascii_digit) {
        return Some("check digits are not digits");
    }
    let mut rem: u32 = 0;
    for &c in b {
        let v = u32::from(c.to_ascii_uppercase());
        let v = if c.is_ascii_digit() {
            v - u32::from(b'0')
        } else {
            v - u32::from(b'A') + 10
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    (rem != 1).then_some("fails the ISO 7064 MOD 97-10 check")
}

fn id_ok(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

impl Registry {
    /// The canonical CBOR encoding (the signed payload).
    pub fn to_cbor(&self) -> Result<Vec<u8>, RegistryError> {
        let mut out = Vec::new();
        ciborium::into_writer(self, &mut out).map_err(|e| RegistryError::Format(e.to_string()))?;
        Ok(out)
    }

    /// Decode and validate an unsigned registry (for editing and signing; an unsigned
    /// registry never yields derived attributes).
    pub fn from_cbor(bytes: &[u8]) -> Result<Self, RegistryError> {
        let reg = Self::decode(bytes)?;
        reg.validate()?;
        Ok(reg)
    }

    /// Decode only (registry_format): strict, canonical, no trailing bytes.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, RegistryError> {
        if bytes.len() > MAX_REGISTRY_BYTES {
            return Err(RegistryError::Format(format!(
                "{} bytes, above the {MAX_REGISTRY_BYTES}-byte limit",
                bytes.len()
            )));
        }
        let mut rest = bytes;
        let reg: Self = ciborium::from_reader(&mut rest).map_err(de_err)?;
        if !rest.is_empty() {
            return Err(RegistryError::Format(format!("{} trailing bytes", rest.len())));
        }
        if reg.to_cbor()? != bytes {
            return Err(RegistryError::Format(
                "not in canonical encoding (field order, integer or length forms, explicit null)".into(),
            ));
        }
        Ok(reg)
    }

    /// Every consistency rule (registry_consistency): ids well formed and unique, names
    /// present, LEIs valid, references resolve, holdings in range and summing to at most
    /// 10000 bp per entity for capital and for voting, no ownership cycle, coordinates in
    /// range, each hardware id bound to one site.
    pub fn validate(&self) -> Result<(), RegistryError> {
        let mut entities: HashMap<&str, usize> = HashMap::new();
        for (i, e) in self.entities.iter().enumerate() {
            check_id("entity", &e.id)?;
            if e.name.trim().is_empty() {
                return Err(empty("entity", &e.id, "name"));
            }
            if let Some(lei) = &e.lei {
                if let Some(reason) = lei_problem(lei) {
                    return Err(RegistryError::Lei {
                        entity: e.id.clone(),
                        lei: lei.clone(),
                        reason,
                    });
                }
            }
            if entities.insert(&e.id, i).is_some() {
                return Err(dup("entity", &e.id));
            }
        }
        for e in &self.entities {
            let mut seen = BTreeSet::new();
            let (mut cap, mut vote) = (0u64, 0u64);
            for h in &e.holders {
                if !entities.contains_key(h.entity.as_str()) {
                    return Err(unknown(format!("entity {:?} holders", e.id), "entity", &h.entity));
                }
                if h.entity == e.id {
                    return Err(RegistryError::SelfHolding { entity: e.id.clone() });
                }
                if !seen.insert(h.entity.as_str()) {
                    return Err(RegistryError::DuplicateHolder {
                        entity: e.id.clone(),
                        holder: h.entity.clone(),
                    });
                }
                for (what, v) in [("capital", h.capital_bp), ("voting", h.voting_bp)] {
                    if v > 10_000 {
                        return Err(RegistryError::BasisPoints {
                            entity: e.id.clone(),
                            holder: h.entity.clone(),
                            what,
                            value: v,
                        });
                    }
                }
                cap += u64::from(h.capital_bp);
                vote += u64::from(h.voting_bp);
            }
            for (what, total_bp) in [("capital", cap), ("voting", vote)] {
                if total_bp > 10_000 {
                    return Err(RegistryError::HoldingsExceed {
                        entity: e.id.clone(),
                        what,
                        total_bp,
                    });
                }
            }
        }
        self.ownership_order()?;

        let mut sites = BTreeSet::new();
        for s in &self.sites {
            check_id("site", &s.id)?;
            if s.name.trim().is_empty() {
                return Err(empty("site", &s.id, "name"));
            }
            if s.region.trim().is_empty() {
                return Err(empty("site", &s.id, "region"));
            }
            if !(-90_000_000..=90_000_000).contains(&s.lat_e6)
                || !(-180_000_000..=180_000_000).contains(&s.lon_e6)
            {
                return Err(RegistryError::Coordinates {
                    site: s.id.clone(),
                    lat_e6: s.lat_e6,
                    lon_e6: s.lon_e6,
                });
            }
            if !entities.contains_key(s.operator.as_str()) {
                return Err(unknown(
                    format!("site {:?} operator", s.id),
                    "entity",
                    &s.operator,
                ));
            }
            if !sites.insert(s.id.as_str()) {
                return Err(dup("site", &s.id));
            }
        }
        let mut bound: BTreeMap<&HardwareId, &str> = BTreeMap::new();
        for h in &self.hardware {
            h.id.check()?;
            if !sites.contains(h.site.as_str()) {
                return Err(unknown(format!("hardware {}", h.id), "site", &h.site));
            }
            if let Some(first) = bound.insert(&h.id, &h.site) {
                return Err(RegistryError::HardwareBoundTwice {
                    id: h.id.to_string(),
                    first: first.to_owned(),
                    second: h.site.clone(),
                });
            }
        }
        Ok(())
    }

    /// Entity indices with every entity after all the entities it holds (owned first), or
    /// the ownership cycle that prevents such an order. Assumes holder ids resolve.
    pub(crate) fn ownership_order(&self) -> Result<Vec<usize>, RegistryError> {
        let index: HashMap<&str, usize> = self
            .entities
            .iter()
            .enumerate()
            .map(|(i, e)| (e.id.as_str(), i))
            .collect();
        let n = self.entities.len();
        // holds[h] = entities that h holds; pending[o] = o's holders not yet placed.
        let mut holds: Vec<Vec<usize>> = vec![Vec::new(); n];
        let mut pending = vec![0usize; n];
        for (o, e) in self.entities.iter().enumerate() {
            for h in &e.holders {
                if let (Some(&hi), Some(p)) = (index.get(h.entity.as_str()), pending.get_mut(o)) {
                    if let Some(v) = holds.get_mut(hi) {
                        v.push(o);
                    }
                    *p += 1;
                }
            }
        }
        // Kahn: top holders first; reversed at the end.
        let mut ready: Vec<usize> = (0..n).filter(|&i| pending.get(i) == Some(&0)).collect();
        let mut order = Vec::with_capacity(n);
        while let Some(h) = ready.pop() {
            order.push(h);
            for &o in holds.get(h).map(Vec::as_slice).unwrap_or_default() {
                if let Some(p) = pending.get_mut(o) {
                    *p -= 1;
                    if *p == 0 {
                        ready.push(o);
                    }
                }
            }
        }
        if order.len() == n {
            order.reverse();
            return Ok(order);
        }
        // Every entity left has a holder that is also left: walk holders until one repeats.
        let left: Vec<bool> = pending.iter().map(|&p| p > 0).collect();
        let mut at = left.iter().position(|&l| l).unwrap_or_default();
        let mut path: Vec<usize> = Vec::new();
        loop {
            if let Some(pos) = path.iter().position(|&p| p == at) {
                let mut ids: Vec<&str> = path
                    .get(pos..)
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|&i| self.entities.get(i).map(|e| e.id.as_str()))
                    .collect();
                ids.push(self.entities.get(at).map(|e| e.id.as_str()).unwrap_or_default());
                // Walked from owned to holder; print holder -> owned.
                ids.reverse();
                return Err(RegistryError::OwnershipCycle(ids.join(" holds ")));
            }
            path.push(at);
            let next = self.entities.get(at).and_then(|e| {
                e.holders
                    .iter()
                    .filter_map(|h| index.get(h.entity.as_str()).copied())
                    .find(|&i| left.get(i) == Some(&true))
            });
            match next {
                Some(i) => at = i,
                None => return Err(RegistryError::OwnershipCycle("unresolved".into())),
            }
        }
    }

    pub fn entity(&self, id: &str) -> Option<&Entity> {
        self.entities.iter().find(|e| e.id == id)
    }

    pub fn site(&self, id: &str) -> Option<&Site> {
        self.sites.iter().find(|s| s.id == id)
    }
}

fn de_err<E: fmt::Debug>(e: ciborium::de::Error<E>) -> RegistryError {
    use ciborium::de::Error as D;
    RegistryError::Format(match e {
        D::Io(_) => "truncated CBOR".into(),
        D::Syntax(at) => format!("CBOR syntax error at byte {at}"),
        D::Semantic(Some(at), msg) => format!("{msg} (at byte {at})"),
        D::Semantic(None, msg) => msg,
        D::RecursionLimitExceeded => "CBOR nested too deeply".into(),
    })
}

fn check_id(kind: &'static str, id: &str) -> Result<(), RegistryError> {
    if id_ok(id) {
        Ok(())
    } else {
        Err(RegistryError::InvalidId {
            kind,
            id: id.to_owned(),
        })
    }
}

fn empty(kind: &'static str, id: &str, field: &'static str) -> RegistryError {
    RegistryError::EmptyField {
        kind,
        id: id.to_owned(),
        field,
    }
}

fn dup(kind: &'static str, id: &str) -> RegistryError {
    RegistryError::DuplicateId {
        kind,
        id: id.to_owned(),
    }
}

fn unknown(context: String, kind: &'static str, id: &str) -> RegistryError {
    RegistryError::UnknownReference {
        context,
        kind,
        id: id.to_owned(),
    }
}
