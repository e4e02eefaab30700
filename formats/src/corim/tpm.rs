//! TPM PCR reference values to and from CoRIM, in the shape Veraison's Parsec TPM scheme
//! (`scheme/parsec-tpm` in veraison/services) provisions and checks:
//!
//! - an unsigned CoRIM (`#6.501`) with profile `32("tag:github.com/parallaxsecond,2023-03-03:tpm")`;
//! - a CoMID (`#6.506`, a bstr) with a reference-value triple whose environment is only a
//!   class with a `#6.37` UUID class-id (the scheme refuses a missing or non-UUID class-id,
//!   an instance or a group in a reference-value environment);
//! - one measurement per PCR: mkey = the PCR index (uint; the scheme refuses any other key
//!   type), mval = `{2: [[alg, digest], ...]}` (the scheme refuses a measurement without
//!   digests), with named-information algorithm ids (1 sha-256, 7 sha-384, 8 sha-512).
//!
//! [`pcrs_to_corim`] writes that shape; [`pcrs_from_corim`] reads the PCRs back out of any
//! CoRIM the reader accepts (environments are not compared: every reference-value triple
//! contributes, and conflicting values are refused).

use std::collections::BTreeMap;

use ciborium::value::Value;

use super::{
    tags, Alg, Corim, CorimError, Mkey, MAX_BYTES_LEN, MAX_DIGESTS, MAX_INPUT_LEN, MAX_MEASUREMENTS,
};

/// Bank name -> PCR index -> digest bytes (banks: "sha256", "sha384", "sha512").
pub type Pcrs = BTreeMap<String, BTreeMap<u32, Vec<u8>>>;

/// The CoRIM profile of Veraison's Parsec TPM scheme (its `ProfileString`).
pub const PARSEC_TPM_PROFILE: &str = "tag:github.com/parallaxsecond,2023-03-03:tpm";

/// Highest TPM 2.0 PCR index.
pub const MAX_PCR_INDEX: u32 = 23;

/// (bank name, named-information algorithm id, IANA text name, digest length).
const BANKS: [(&str, i64, &str, usize); 3] = [
    ("sha256", 1, "sha-256", 32),
    ("sha384", 7, "sha-384", 48),
    ("sha512", 8, "sha-512", 64),
];

fn bank_of_alg(alg: &Alg) -> Option<(&'static str, usize)> {
    BANKS
        .iter()
        .find(|(_, id, name, _)| match alg {
            Alg::Id(i) => i == id,
            Alg::Name(n) => n.eq_ignore_ascii_case(name),
        })
        .map(|(bank, _, _, len)| (*bank, *len))
}

fn invalid(at: String, why: &'static str) -> CorimError {
    CorimError::Invalid { at, why }
}

/// The PCR values a CoRIM's reference-value triples give.
///
/// A measurement counts as a PCR when its mkey is an unsigned integer and its mval has
/// digests; each digest's algorithm (named-information id 1 sha-256, 7 sha-384, 8 sha-512,
/// or the text names `sha-256`, `sha-384`, `sha-512`) picks the bank. Errors, each naming
/// where (`corim.tags[t].reference[r].measurements[m]...`): a uint mkey over 23, a digest
/// algorithm that is none of those three (SHA-1 included: it has no named-information id),
/// a digest whose length does not fit its algorithm, two different values for one bank and
/// index (equal repeats are accepted), and a CoRIM with no PCR at all.
///
/// Measurements without a mkey, with a non-integer mkey, or with a uint mkey but no
/// digests are ignored; the second value returned is how many there were. Environments
/// are not compared: all reference-value triples of all CoMIDs are merged.
pub fn pcrs_from_corim(c: &Corim) -> Result<(Pcrs, usize), CorimError> {
    let mut pcrs = Pcrs::new();
    let mut ignored = 0usize;
    let mut found = false;
    for (t, comid) in c.tags.iter().enumerate() {
        for (r, rv) in comid.triples.reference_values.iter().enumerate() {
            for (m, meas) in rv.measurements.iter().enumerate() {
                let at = format!("corim.tags[{t}].reference[{r}].measurements[{m}]");
                let Some(Mkey::Uint(index)) = meas.mkey else {
                    ignored += 1;
                    continue;
                };
                if meas.digests.is_empty() {
                    ignored += 1;
                    continue;
                }
                let index = match u32::try_from(index) {
                    Ok(i) if i <= MAX_PCR_INDEX => i,
                    _ => return Err(invalid(format!("{at}.mkey"), "PCR index over 23")),
                };
                for (d, digest) in meas.digests.iter().enumerate() {
                    let at = format!("{at}.mval.digests[{d}]");
                    let Some((bank, len)) = bank_of_alg(&digest.alg) else {
                        return Err(invalid(
                            at,
                            "digest algorithm is not sha-256 (1), sha-384 (7) or sha-512 (8)",
                        ));
                    };
                    if digest.value.len() != len {
                        return Err(invalid(at, "digest length does not match its algorithm"));
                    }
                    let slot = pcrs.entry(bank.to_owned()).or_default();
                    match slot.get(&index) {
                        Some(prev) if *prev != digest.value => {
                            return Err(invalid(at, "two different values for one PCR bank and index"))
                        }
                        Some(_) => {}
                        None => {
                            slot.insert(index, digest.value.clone());
                        }
                    }
                    found = true;
                }
            }
        }
    }
    if !found {
        return Err(invalid(
            "corim".into(),
            "no TPM PCR reference value (uint mkey 0..=23 with digests)",
        ));
    }
    Ok((pcrs, ignored))
}

fn id_text(s: &str, at: &str) -> Result<Value, CorimError> {
    if s.is_empty() {
        return Err(invalid(at.into(), "identifier is empty"));
    }
    if s.len() > MAX_BYTES_LEN {
        return Err(invalid(at.into(), "identifier too long"));
    }
    Ok(Value::Text(s.to_owned()))
}

fn encode(v: &Value, at: &str) -> Result<Vec<u8>, CorimError> {
    let mut out = Vec::new();
    ciborium::into_writer(v, &mut out).map_err(|e| CorimError::Cbor {
        at: at.into(),
        msg: e.to_string(),
    })?;
    if out.len() > MAX_INPUT_LEN {
        return Err(CorimError::TooLong(out.len()));
    }
    Ok(out)
}

fn int(i: i64) -> Value {
    Value::Integer(i.into())
}

/// An unsigned CoRIM (`#6.501`) holding one CoMID (`#6.506`, as a bstr) with one
/// reference-value triple, in the shape Veraison's Parsec TPM scheme expects (see the
/// module doc): corim-map `{0: corim_id, 1: [506(bstr)], 3: 32(profile)}`, CoMID
/// `{1: {0: tag_id}, 4: {0: [[{0: {0: 37(class_id)}}, [measurement, ...]]]}}`, one
/// measurement `{0: index, 1: {2: [[alg, digest], ...]}}` per PCR index in ascending order,
/// its digests in sha-256, sha-384, sha-512 order for every bank that has that index.
///
/// Refused, naming where: a `sha1` bank (SHA-1 has no named-information hash algorithm id,
/// so it cannot be written as a CoMID digest), any other bank name than `sha256`, `sha384`,
/// `sha512`, an index over 23, a digest of the wrong length for its bank, no PCR at all
/// (all banks empty), and an empty or over-long (more than [`MAX_BYTES_LEN`] bytes)
/// `corim_id` or `tag_id`. Everything written is within the reader's limits, so
/// [`Corim::from_cbor`] and [`pcrs_from_corim`] give the same map back.
pub fn pcrs_to_corim(
    corim_id: &str,
    tag_id: &str,
    class_id: [u8; 16],
    pcrs: &Pcrs,
) -> Result<Vec<u8>, CorimError> {
    let corim_id = id_text(corim_id, "corim.id")?;
    let tag_id = id_text(tag_id, "comid.tag-identity.tag-id")?;

    // index -> [(alg id, digest)], digests in alg order.
    let mut by_index: BTreeMap<u32, Vec<(i64, &[u8])>> = BTreeMap::new();
    for (bank, values) in pcrs {
        let at = format!("pcrs[{bank:?}]");
        if bank == "sha1" {
            return Err(invalid(
                at,
                "SHA-1 has no named-information algorithm id; a sha1 bank cannot be written to a CoRIM",
            ));
        }
        let Some((_, alg, _, len)) = BANKS.iter().find(|(name, ..)| name == bank) else {
            return Err(invalid(at, "unknown PCR bank (sha256, sha384 or sha512)"));
        };
        for (index, digest) in values {
            let at = format!("{at}[{index}]");
            if *index > MAX_PCR_INDEX {
                return Err(invalid(at, "PCR index over 23"));
            }
            if digest.len() != *len {
                return Err(invalid(at, "digest length does not match its bank"));
            }
            by_index.entry(*index).or_default().push((*alg, digest));
        }
    }
    if by_index.is_empty() {
        return Err(invalid("pcrs".into(), "no PCR value to write"));
    }
    // At most 24 measurements of at most 3 digests, but check the reader's limits anyway.
    if by_index.len() > MAX_MEASUREMENTS {
        return Err(CorimError::TooMany {
            at: "pcrs".into(),
            n: by_index.len(),
            max: MAX_MEASUREMENTS,
        });
    }

    let mut measurements = Vec::with_capacity(by_index.len());
    for (index, mut digests) in by_index {
        digests.sort_by_key(|(alg, _)| *alg);
        if digests.len() > MAX_DIGESTS {
            return Err(CorimError::TooMany {
                at: format!("pcrs[*][{index}]"),
                n: digests.len(),
                max: MAX_DIGESTS,
            });
        }
        let digests = digests
            .into_iter()
            .map(|(alg, d)| Value::Array(vec![int(alg), Value::Bytes(d.to_vec())]))
            .collect();
        measurements.push(Value::Map(vec![
            (int(0), int(i64::from(index))),
            (int(1), Value::Map(vec![(int(2), Value::Array(digests))])),
        ]));
    }

    let environment = Value::Map(vec![(
        int(0),
        Value::Map(vec![(
            int(0),
            Value::Tag(tags::UUID, Box::new(Value::Bytes(class_id.to_vec()))),
        )]),
    )]);
    let comid = Value::Map(vec![
        (int(1), Value::Map(vec![(int(0), tag_id)])),
        (
            int(4),
            Value::Map(vec![(
                int(0),
                Value::Array(vec![Value::Array(vec![environment, Value::Array(measurements)])]),
            )]),
        ),
    ]);
    let comid = encode(&comid, "comid")?;
    let corim = Value::Tag(
        tags::CORIM,
        Box::new(Value::Map(vec![
            (int(0), corim_id),
            (
                int(1),
                Value::Array(vec![Value::Tag(tags::COMID, Box::new(Value::Bytes(comid)))]),
            ),
            (
                int(3),
                Value::Tag(tags::URI, Box::new(Value::Text(PARSEC_TPM_PROFILE.into()))),
            ),
        ])),
    );
    encode(&corim, "corim")
}

#[cfg(test)]
mod tests;
