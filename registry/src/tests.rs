use crate::derive::{pct, Derived};
use crate::model::lei_problem;
use crate::*;
use aws_lc_rs::digest;
use coset::iana;

fn cc(c: &str) -> Country {
    Country::new(c).unwrap()
}

fn ent(id: &str, country: &str, holders: &[(&str, u32, u32)]) -> Entity {
    Entity {
        id: id.into(),
        name: format!("{id} name"),
        lei: None,
        registered_office: cc(country),
        central_administration: cc(country),
        principal_establishment: cc(country),
        us_nexus: false,
        holders: holders
            .iter()
            .map(|&(h, c, v)| Holding {
                entity: h.into(),
                capital_bp: c,
                voting_bp: v,
            })
            .collect(),
    }
}

fn site(id: &str, country: &str, operator: &str) -> Site {
    Site {
        id: id.into(),
        name: format!("{id} site"),
        country: cc(country),
        region: "Region".into(),
        lat_e6: 48_856_600,
        lon_e6: 2_352_200,
        operator: operator.into(),
    }
}

fn ek(n: u8) -> HardwareId {
    HardwareId::EkCertSha256([n; 32])
}

fn hw(site: &str, id: HardwareId) -> Hardware {
    Hardware {
        site: site.into(),
        id,
        label: None,
    }
}

fn reg(entities: Vec<Entity>, sites: Vec<Site>, hardware: Vec<Hardware>) -> Registry {
    Registry {
        version: 1,
        issued_at: 1_700_000_000,
        authority: "Test authority".into(),
        entities,
        sites,
        hardware,
    }
}

/// One operator `op` at site `s1` with hardware ek(1), plus the given holders.
fn owned(mut others: Vec<Entity>, op_country: &str, op_holders: &[(&str, u32, u32)]) -> Registry {
    others.push(ent("op", op_country, op_holders));
    reg(others, vec![site("s1", "FR", "op")], vec![hw("s1", ek(1))])
}

fn verified(r: &Registry) -> (VerifiedRegistry, RegistryKey) {
    let key = RegistryKey::generate().unwrap();
    let signed = SignedRegistry::sign(r, &key).unwrap();
    let v = SignedRegistry::verify(&signed, &[key.public().clone()]).unwrap();
    (v, key)
}

fn derive(r: &Registry) -> Derived {
    verified(r).0.derive(&[ek(1)])
}

fn holder<'a>(d: &'a Derived, id: &str) -> &'a crate::derive::Controller {
    d.operator
        .as_ref()
        .unwrap()
        .controllers
        .iter()
        .find(|c| c.id == id)
        .unwrap_or_else(|| panic!("no holder {id}"))
}

/// A small registry whose encoding is pinned below.
fn small() -> Registry {
    let mut e = ent("acme", "FR", &[]);
    e.name = "ACME SAS".into();
    e.lei = Some("HWUPKR0MPOU8FGXBT394".into());
    let mut p = ent("parent", "US", &[]);
    p.name = "P".into();
    e.holders.push(Holding {
        entity: "parent".into(),
        capital_bp: 6000,
        voting_bp: 6000,
    });
    let mut s = site("par1", "FR", "acme");
    s.name = "Paris".into();
    s.region = "IDF".into();
    let mut h = hw("par1", HardwareId::GpuCertSerial(vec![0x01, 0x02]));
    h.label = Some("gpu0".into());
    reg(vec![e, p], vec![s], vec![h])
}

/// `registry/testdata/small.cbor.hex`: the encoding of [`small`], checked by hand against
/// RFC 8949 (diagnostic notation in that folder's README).
const SMALL_HEX: &str = include_str!("../testdata/small.cbor.hex");

#[test]
fn cbor_is_byte_exact() {
    let bytes = small().to_cbor().unwrap();
    assert_eq!(hex::encode(&bytes), SMALL_HEX.trim());
    assert_eq!(Registry::from_cbor(&bytes).unwrap(), small());
}

#[test]
fn round_trip() {
    let r = owned(vec![ent("us", "US", &[])], "FR", &[("us", 100, 200)]);
    let bytes = r.to_cbor().unwrap();
    assert_eq!(Registry::from_cbor(&bytes).unwrap(), r);
    let mut r2 = r.clone();
    r2.hardware.push(hw("s1", HardwareId::SnpChipId([7; 64])));
    r2.hardware.push(hw("s1", HardwareId::GpuCertSerial(vec![0; 20])));
    assert_eq!(Registry::from_cbor(&r2.to_cbor().unwrap()).unwrap(), r2);
}

fn decode_err(bytes: &[u8]) -> RegistryError {
    let e = Registry::from_cbor(bytes).unwrap_err();
    assert_eq!(e.check(), "registry_format", "{e}");
    e
}

/// Re-encode `small()` through a generic CBOR value after `f` changed it.
fn mutated(f: impl FnOnce(&mut Vec<(ciborium::Value, ciborium::Value)>)) -> Vec<u8> {
    let v: ciborium::Value = ciborium::from_reader(small().to_cbor().unwrap().as_slice()).unwrap();
    let ciborium::Value::Map(mut m) = v else { panic!() };
    f(&mut m);
    let mut out = Vec::new();
    ciborium::into_writer(&ciborium::Value::Map(m), &mut out).unwrap();
    out
}

fn hw_entry(m: &mut [(ciborium::Value, ciborium::Value)]) -> &mut Vec<(ciborium::Value, ciborium::Value)> {
    let (_, ciborium::Value::Array(a)) = m
        .iter_mut()
        .find(|(k, _)| k.as_text() == Some("hardware"))
        .unwrap()
    else {
        panic!()
    };
    let ciborium::Value::Map(h) = &mut a[0] else {
        panic!()
    };
    h
}

#[test]
fn decoding_is_strict() {
    use ciborium::Value as V;
    let good = small().to_cbor().unwrap();
    // The value re-encoded generically is the same bytes: the mutations below isolate one change.
    assert_eq!(mutated(|_| {}), good);

    let mut trailing = good.clone();
    trailing.push(0);
    assert!(decode_err(&trailing).to_string().contains("trailing"));
    assert!(matches!(
        decode_err(&good[..good.len() - 1]),
        RegistryError::Format(_)
    ));
    decode_err(&[]);

    let unknown = mutated(|m| m.push((V::Text("extra".into()), V::Integer(1.into()))));
    assert!(decode_err(&unknown).to_string().contains("extra"));

    let reordered = mutated(|m| m.swap(0, 1));
    assert!(decode_err(&reordered).to_string().contains("canonical"));

    let null_label = mutated(|m| {
        hw_entry(m).retain(|(k, _)| k.as_text() != Some("label"));
        hw_entry(m).push((V::Text("label".into()), V::Null));
    });
    assert!(decode_err(&null_label).to_string().contains("canonical"));

    // A 31-byte EK digest, a byte string spelled as an array, an unknown kind, a third element.
    let id = |v: V| {
        mutated(move |m| {
            for (k, val) in hw_entry(m).iter_mut() {
                if k.as_text() == Some("id") {
                    *val = v.clone();
                }
            }
        })
    };
    let e = decode_err(&id(V::Array(vec![
        V::Text("ek_sha256".into()),
        V::Bytes(vec![0; 31]),
    ])));
    assert!(e.to_string().contains("must be 32 bytes, got 31"), "{e}");
    let e = decode_err(&id(V::Array(vec![
        V::Text("snp_chip_id".into()),
        V::Bytes(vec![0; 65]),
    ])));
    assert!(e.to_string().contains("must be 64 bytes, got 65"), "{e}");
    let e = decode_err(&id(V::Array(vec![
        V::Text("tdx_ppid".into()),
        V::Bytes(vec![0; 17]),
    ])));
    assert!(e.to_string().contains("must be 16 bytes, got 17"), "{e}");
    decode_err(&id(V::Array(vec![
        V::Text("gpu_serial".into()),
        V::Bytes(vec![]),
    ])));
    decode_err(&id(V::Array(vec![
        V::Text("gpu_serial".into()),
        V::Bytes(vec![1; 21]),
    ])));
    decode_err(&id(V::Array(vec![
        V::Text("gpu_serial".into()),
        V::Array(vec![V::Integer(1.into()), V::Integer(2.into())]),
    ])));
    decode_err(&id(V::Array(vec![V::Text("tpm".into()), V::Bytes(vec![1])])));
    decode_err(&id(V::Array(vec![
        V::Text("gpu_serial".into()),
        V::Bytes(vec![1]),
        V::Null,
    ])));
    decode_err(&id(V::Array(vec![V::Text("gpu_serial".into())])));

    let lower_country = mutated(|m| {
        let (_, V::Array(sites)) = m.iter_mut().find(|(k, _)| k.as_text() == Some("sites")).unwrap() else {
            panic!()
        };
        let V::Map(s) = &mut sites[0] else { panic!() };
        for (k, v) in s.iter_mut() {
            if k.as_text() == Some("country") {
                *v = V::Text("fr".into());
            }
        }
    });
    let e = decode_err(&lower_country);
    assert!(e.to_string().contains("\"fr\""), "{e}");
}

#[test]
fn hardware_id_text_form() {
    let id = HardwareId::parse(&format!("ek_sha256:{}", "ab".repeat(32))).unwrap();
    assert_eq!(id, HardwareId::EkCertSha256([0xab; 32]));
    assert_eq!(HardwareId::parse(&id.to_string()).unwrap(), id);
    assert!(matches!(
        HardwareId::parse(&format!("ek_sha256:{}", "ab".repeat(33))),
        Err(RegistryError::HardwareIdLength { got: 33, .. })
    ));
    let ppid = HardwareId::parse(&format!("tdx_ppid:{}", "cd".repeat(16))).unwrap();
    assert_eq!(ppid, HardwareId::TdxPpid([0xcd; 16]));
    assert_eq!(HardwareId::parse(&ppid.to_string()).unwrap(), ppid);
    assert!(HardwareId::parse(&format!("tdx_ppid:{}", "cd".repeat(15))).is_err());
    assert!(HardwareId::parse("gpu_serial:0g").is_err());
    assert!(HardwareId::parse("gpu_serial").is_err());
    assert_eq!(
        HardwareId::parse("gpu:01"),
        Err(RegistryError::HardwareKind("gpu".into()))
    );
}

#[test]
fn lei_check() {
    // Apple Inc. and Google LLC, from the GLEIF database.
    assert_eq!(lei_problem("HWUPKR0MPOU8FGXBT394"), None);
    assert_eq!(lei_problem("7ZW8QJWVPR4P1J1KQY45"), None);
    assert!(lei_problem("HWUPKR0MPOU8FGXBT395").unwrap().contains("MOD 97"));
    assert!(lei_problem("HWUPKR0MPOU8FGXBT39").unwrap().contains("20"));
    assert!(lei_problem("hwupkr0mpou8fgxbt394").is_some());
    assert!(lei_problem("HWUPKR0MPOU8FGXBT3A4").is_some());
}

// ---- signing ----

#[test]
fn sign_verify_ok() {
    let r = small();
    let key = RegistryKey::generate().unwrap();
    let signed = SignedRegistry::sign(&r, &key).unwrap();
    let other = RegistryKey::generate().unwrap();
    let v = SignedRegistry::verify(&signed, &[other.public().clone(), key.public().clone()]).unwrap();
    assert_eq!(v.registry(), &r);
    assert_eq!(v.kid(), key.public().kid_hex());
    let payload = r.to_cbor().unwrap();
    assert_eq!(v.digest(), hex::encode(digest::digest(&digest::SHA256, &payload)));
    assert_eq!(
        key.public().kid().as_slice(),
        digest::digest(&digest::SHA256, key.public().as_sec1()).as_ref()
    );
    let (shown, kid) = SignedRegistry::inspect_unverified(&signed).unwrap();
    assert_eq!((shown, kid), (r, key.public().kid_hex()));
    assert!(SignedRegistry::looks_signed(&signed));
    assert!(!SignedRegistry::looks_signed(&payload));
}

fn verify_err(bytes: &[u8], keys: &[AuthorityKey], check: &str) -> RegistryError {
    let e = SignedRegistry::verify(bytes, keys).unwrap_err();
    assert_eq!(e.check(), check, "{e}");
    e
}

#[test]
fn tampered_payload_is_rejected() {
    let key = RegistryKey::generate().unwrap();
    let signed = SignedRegistry::sign(&small(), &key).unwrap();
    let at = signed.windows(8).position(|w| w == b"ACME SAS").unwrap();
    let mut bad = signed.clone();
    bad[at] = b'X';
    let e = verify_err(&bad, &[key.public().clone()], "registry_signature");
    assert!(matches!(e, RegistryError::Signature { .. }));
    // Flipping a signature bit too.
    let mut bad = signed.clone();
    *bad.last_mut().unwrap() ^= 1;
    verify_err(&bad, &[key.public().clone()], "registry_signature");
    // Truncated.
    verify_err(
        &signed[..signed.len() - 1],
        &[key.public().clone()],
        "registry_format",
    );
}

#[test]
fn wrong_or_missing_authority_is_rejected() {
    let key = RegistryKey::generate().unwrap();
    let other = RegistryKey::generate().unwrap();
    let signed = SignedRegistry::sign(&small(), &key).unwrap();
    let e = verify_err(&signed, &[other.public().clone()], "registry_authority");
    assert!(e.to_string().contains(&key.public().kid_hex()), "{e}");
    verify_err(&signed, &[], "registry_authority");
}

#[test]
fn substituted_key_with_claimed_kid_fails_signature() {
    // Signed by `other` but labelled with the authority's kid: the signature check refuses it.
    let key = RegistryKey::generate().unwrap();
    let other = RegistryKey::generate().unwrap();
    let signed = SignedRegistry::sign(&small(), &other).unwrap();
    let (o, k) = (other.public().kid(), key.public().kid());
    let at = signed.windows(32).position(|w| w == o).unwrap();
    let mut forged = signed.clone();
    forged[at..at + 32].copy_from_slice(k);
    verify_err(&forged, &[key.public().clone()], "registry_signature");
}

#[test]
fn unsigned_bytes_are_rejected() {
    let key = RegistryKey::generate().unwrap();
    let payload = small().to_cbor().unwrap();
    verify_err(&payload, &[key.public().clone()], "registry_format");
    verify_err(b"", &[key.public().clone()], "registry_format");
    verify_err(b"\xd2\x84", &[key.public().clone()], "registry_format");
}

#[test]
fn wrong_alg_is_rejected() {
    let key = RegistryKey::generate().unwrap();
    let payload = small().to_cbor().unwrap();
    let signed = SignedRegistry::sign_payload(payload, &key, iana::Algorithm::ES384).unwrap();
    let e = verify_err(&signed, &[key.public().clone()], "registry_signature");
    assert!(matches!(e, RegistryError::Algorithm(_)), "{e}");
}

#[test]
fn signed_inconsistent_payload_is_rejected() {
    // A registry the tool would refuse to sign, signed by hand: verify still refuses it.
    let key = RegistryKey::generate().unwrap();
    let mut r = small();
    r.sites[0].operator = "nobody".into();
    let signed = SignedRegistry::sign_payload(r.to_cbor().unwrap(), &key, iana::Algorithm::ES256).unwrap();
    verify_err(&signed, &[key.public().clone()], "registry_consistency");
    assert_eq!(
        SignedRegistry::sign(&r, &key).unwrap_err().check(),
        "registry_consistency"
    );
}

#[test]
fn keys_round_trip() {
    let key = RegistryKey::generate().unwrap();
    let again = RegistryKey::from_pkcs8(&key.to_pkcs8().unwrap()).unwrap();
    assert_eq!(again.public(), key.public());
    let pem = key.public().to_pem();
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
    assert_eq!(&AuthorityKey::from_pem(&pem).unwrap(), key.public());
    let der = key.public().to_spki_der();
    assert_eq!(der.len(), 91);
    assert_eq!(
        AuthorityKey::from_spki_der(&der[..90]).unwrap_err().check(),
        "registry_key"
    );
    let mut long = der.clone();
    long.push(0);
    assert!(AuthorityKey::from_spki_der(&long).is_err());
    assert!(AuthorityKey::from_sec1(&key.public().as_sec1()[..64]).is_err());
    assert!(RegistryKey::from_pkcs8(b"not a key").is_err());
    assert!(!format!("{key:?}").contains("pair"));
}

// ---- validation ----

fn invalid(r: &Registry) -> RegistryError {
    let e = r.validate().unwrap_err();
    assert_eq!(e.check(), "registry_consistency", "{e}");
    e
}

#[test]
fn every_validation_error() {
    let base = owned(vec![ent("us", "US", &[])], "FR", &[("us", 6000, 6000)]);
    base.validate().unwrap();

    let mut r = base.clone();
    r.entities[0].id = "has space".into();
    assert!(matches!(
        invalid(&r),
        RegistryError::InvalidId { kind: "entity", .. }
    ));
    let mut r = base.clone();
    r.sites[0].id = String::new();
    assert!(matches!(
        invalid(&r),
        RegistryError::InvalidId { kind: "site", .. }
    ));
    let mut r = base.clone();
    r.entities[0].name = " ".into();
    assert!(matches!(
        invalid(&r),
        RegistryError::EmptyField { field: "name", .. }
    ));
    let mut r = base.clone();
    r.sites[0].region = String::new();
    assert!(matches!(
        invalid(&r),
        RegistryError::EmptyField { field: "region", .. }
    ));

    let mut r = base.clone();
    r.entities.push(ent("us", "US", &[]));
    assert_eq!(
        invalid(&r),
        RegistryError::DuplicateId {
            kind: "entity",
            id: "us".into()
        }
    );
    let mut r = base.clone();
    r.sites.push(site("s1", "FR", "op"));
    assert_eq!(
        invalid(&r),
        RegistryError::DuplicateId {
            kind: "site",
            id: "s1".into()
        }
    );

    let mut r = base.clone();
    r.entities[1].holders[0].entity = "ghost".into();
    assert!(
        matches!(invalid(&r), RegistryError::UnknownReference { kind: "entity", ref id, .. } if id == "ghost")
    );
    let mut r = base.clone();
    r.sites[0].operator = "ghost".into();
    assert!(matches!(
        invalid(&r),
        RegistryError::UnknownReference { kind: "entity", .. }
    ));
    let mut r = base.clone();
    r.hardware[0].site = "ghost".into();
    assert!(matches!(
        invalid(&r),
        RegistryError::UnknownReference { kind: "site", .. }
    ));

    let mut r = base.clone();
    r.entities[0].lei = Some("HWUPKR0MPOU8FGXBT395".into());
    assert!(matches!(invalid(&r), RegistryError::Lei { .. }));

    let mut r = base.clone();
    r.entities[1].holders[0].voting_bp = 10_001;
    assert!(matches!(
        invalid(&r),
        RegistryError::BasisPoints {
            what: "voting",
            value: 10_001,
            ..
        }
    ));
    let mut r = base.clone();
    r.entities[1].holders.push(Holding {
        entity: "op".into(),
        capital_bp: 1,
        voting_bp: 1,
    });
    assert_eq!(invalid(&r), RegistryError::SelfHolding { entity: "op".into() });
    let mut r = base.clone();
    r.entities[1].holders.push(Holding {
        entity: "us".into(),
        capital_bp: 1,
        voting_bp: 1,
    });
    assert!(matches!(invalid(&r), RegistryError::DuplicateHolder { .. }));

    // Sums: exactly 10000 is fine, 10001 is not, for capital and for voting separately.
    let mut r = base.clone();
    r.entities.push(ent("b", "FR", &[]));
    r.entities[1].holders.push(Holding {
        entity: "b".into(),
        capital_bp: 4000,
        voting_bp: 4000,
    });
    r.validate().unwrap();
    r.entities[1].holders[1].capital_bp = 4001;
    assert_eq!(
        invalid(&r),
        RegistryError::HoldingsExceed {
            entity: "op".into(),
            what: "capital",
            total_bp: 10_001
        }
    );
    r.entities[1].holders[1].capital_bp = 4000;
    r.entities[1].holders[1].voting_bp = 4001;
    assert!(matches!(
        invalid(&r),
        RegistryError::HoldingsExceed { what: "voting", .. }
    ));

    // A 3-cycle, named.
    let r = reg(
        vec![
            ent("a", "FR", &[("c", 1, 1)]),
            ent("b", "FR", &[("a", 1, 1)]),
            ent("c", "FR", &[("b", 1, 1)]),
        ],
        vec![],
        vec![],
    );
    let e = invalid(&r);
    let RegistryError::OwnershipCycle(path) = &e else {
        panic!("{e}")
    };
    assert_eq!(path.split(" holds ").count(), 4, "{path}");
    assert!(["a", "b", "c"].iter().all(|id| path.contains(id)), "{path}");

    for (lat, lon) in [
        (90_000_001, 0),
        (-90_000_001, 0),
        (0, 180_000_001),
        (0, -180_000_001),
    ] {
        let mut r = base.clone();
        r.sites[0].lat_e6 = lat;
        r.sites[0].lon_e6 = lon;
        assert!(matches!(invalid(&r), RegistryError::Coordinates { .. }));
    }
    let mut r = base.clone();
    r.sites[0].lat_e6 = -90_000_000;
    r.sites[0].lon_e6 = 180_000_000;
    r.validate().unwrap();

    let mut r = base.clone();
    r.sites.push(site("s2", "DE", "op"));
    r.hardware.push(hw("s2", ek(1)));
    assert_eq!(
        invalid(&r),
        RegistryError::HardwareBoundTwice {
            id: ek(1).to_string(),
            first: "s1".into(),
            second: "s2".into()
        }
    );

    let mut r = base.clone();
    r.hardware.push(hw("s1", HardwareId::GpuCertSerial(vec![])));
    assert_eq!(r.validate().unwrap_err().check(), "registry_format");
}

// ---- derivation ----

#[test]
fn indirect_capital_multiplies() {
    // A 50 % of B, B 60 % of op: A has 30 %.
    let r = owned(
        vec![ent("a", "FR", &[]), ent("b", "FR", &[("a", 5000, 5000)])],
        "FR",
        &[("b", 6000, 6000)],
    );
    let d = derive(&r);
    assert_eq!(holder(&d, "a").capital_bp, 3000);
    assert_eq!(holder(&d, "b").capital_bp, 6000);
    // A does not control B (50 % is not more than half): voting multiplies too.
    assert_eq!(holder(&d, "a").voting_bp, 3000);
    assert!(!holder(&d, "a").controls);
    assert!(holder(&d, "b").controls);
}

#[test]
fn control_attributes_full_voting_stake() {
    // X has 60 % of B's votes but 10 % of its capital; B holds 40 % of op.
    let r = owned(
        vec![ent("x", "FR", &[]), ent("b", "FR", &[("x", 1000, 6000)])],
        "FR",
        &[("b", 4000, 4000)],
    );
    let d = derive(&r);
    assert_eq!(holder(&d, "x").voting_bp, 4000);
    assert_eq!(holder(&d, "x").capital_bp, 400);
    // 30 % of B's votes: multiplied, 12 %.
    let r = owned(
        vec![ent("x", "FR", &[]), ent("b", "FR", &[("x", 3000, 3000)])],
        "FR",
        &[("b", 4000, 4000)],
    );
    assert_eq!(holder(&derive(&r), "x").voting_bp, 1200);
}

#[test]
fn control_chain_and_two_paths() {
    // top controls mid (70 %), mid controls b (80 %), b holds 55 % of op: top controls op.
    // top also holds 10 % of op directly: two paths to the same holder add up.
    let r = owned(
        vec![
            ent("top", "FR", &[]),
            ent("mid", "FR", &[("top", 7000, 7000)]),
            ent("b", "FR", &[("mid", 8000, 8000)]),
        ],
        "FR",
        &[("b", 5500, 5500), ("top", 1000, 1000)],
    );
    let d = derive(&r);
    let top = holder(&d, "top");
    // capital: 0.7 * 0.8 * 0.55 + 0.10 = 40.8 %
    assert_eq!(top.capital_bp, 4080);
    // voting: full 55 % through the control chain, plus 10 % directly
    assert_eq!(top.voting_bp, 6500);
    assert!(top.controls);
    let op = d.operator.as_ref().unwrap();
    // sorted by voting descending
    let ids: Vec<&str> = op.controllers.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["top", "b", "mid"]);
    assert_eq!(holder(&d, "mid").voting_bp, 5500);
}

#[test]
fn rounding_is_up_and_documented() {
    // 1 bp of 1 bp of op = 10^-8 exactly: 1 unit, shown as 1 bp (rounded up, never 0).
    let r = owned(
        vec![ent("a", "FR", &[]), ent("b", "FR", &[("a", 1, 1)])],
        "FR",
        &[("b", 1, 1)],
    );
    assert_eq!(holder(&derive(&r), "a").capital_bp, 1);
    // 3 levels of 33.33 %: 3.7025927037 % -> 370.26 bp -> 371 bp.
    let r = owned(
        vec![
            ent("a", "FR", &[]),
            ent("b", "FR", &[("a", 3333, 3333)]),
            ent("c", "FR", &[("b", 3333, 3333)]),
        ],
        "FR",
        &[("c", 3333, 3333)],
    );
    assert_eq!(holder(&derive(&r), "a").capital_bp, 371);
    assert_eq!(pct(2401), "24.01");
    assert_eq!(pct(2450), "24.5");
    assert_eq!(pct(6000), "60");
}

#[test]
fn cloud_act_through_two_level_chain() {
    // ACME Inc (US) controls ACME Holding SAS (60 %), which controls the operator (70 %).
    let mut inc = ent("inc", "US", &[]);
    inc.name = "ACME Inc".into();
    let r = owned(
        vec![inc, ent("hold", "FR", &[("inc", 6000, 6000)])],
        "FR",
        &[("hold", 7000, 7000)],
    );
    let mut r = r;
    r.entities[2].name = "ACME SAS".into();
    let d = derive(&r);
    let op = d.operator.as_ref().unwrap();
    assert!(op.cloud_act_exposed);
    assert_eq!(
        op.cloud_act_reasons,
        ["operator ACME SAS is controlled 70 % by ACME Inc (US): cloud_act_exposed"]
    );
    assert_eq!(op.jurisdictions, ["EU", "FR", "US"]);
    let inc = holder(&d, "inc");
    assert!(inc.us && inc.controls);
    assert_eq!(inc.capital_bp, 4200);

    // Same chain, but the US parent has 50 % of the holding's votes: no control, no exposure.
    r.entities[1].holders[0].voting_bp = 5000;
    let op = derive(&r).operator.unwrap();
    assert!(!op.cloud_act_exposed, "{:?}", op.cloud_act_reasons);
    assert_eq!(op.jurisdictions, ["EU", "FR"]);
}

#[test]
fn cloud_act_us_nexus_and_us_operator() {
    let mut de = ent("de", "DE", &[]);
    de.us_nexus = true;
    let d = derive(&owned(vec![de], "FR", &[("de", 5100, 5100)]));
    let op = d.operator.unwrap();
    assert!(op.cloud_act_exposed);
    assert!(
        op.cloud_act_reasons[0].contains("(DE), which has a US nexus"),
        "{:?}",
        op.cloud_act_reasons
    );

    let op = derive(&owned(vec![], "US", &[])).operator.unwrap();
    assert!(op.cloud_act_exposed);
    assert!(op.cloud_act_reasons[0].contains("incorporated in the US"));
    assert!(!op.secnumcloud_immune);
    assert_eq!(op.secnumcloud_reasons.len(), 3, "{:?}", op.secnumcloud_reasons);

    let op = derive(&owned(vec![], "FR", &[])).operator.unwrap();
    assert!(!op.cloud_act_exposed && op.secnumcloud_immune);
    assert_eq!(op.jurisdictions, ["EU", "FR"]);
}

#[test]
fn secnumcloud_single_holder_threshold() {
    let at = |bp: u32| {
        derive(&owned(vec![ent("cn", "CN", &[])], "FR", &[("cn", bp, 0)]))
            .operator
            .unwrap()
    };
    let ok = at(2400);
    assert!(ok.secnumcloud_immune, "{:?}", ok.secnumcloud_reasons);
    assert_eq!(ok.non_eu_capital_max_bp, 2400);
    let bad = at(2401);
    assert!(!bad.secnumcloud_immune);
    assert_eq!(bad.non_eu_capital_max_bp, 2401);
    assert_eq!(
        bad.secnumcloud_reasons,
        ["operator op name is held 24.01 % (capital) by cn name (CN), a non-EU holder, above the 24 % limit of SecNumCloud 19.6"]
    );
    // Voting alone, and through an EU intermediate: 50 % of a holding with 48.02 % = 24.01 %.
    let r = owned(
        vec![ent("us", "US", &[]), ent("h", "DE", &[("us", 0, 5000)])],
        "FR",
        &[("h", 0, 4802)],
    );
    let op = derive(&r).operator.unwrap();
    assert_eq!(op.non_eu_voting_max_bp, 2401);
    assert!(!op.secnumcloud_immune);
    assert!(op.secnumcloud_reasons[0].contains("(voting rights)"));
    // EEA holders are not non-EU.
    let op = derive(&owned(vec![ent("no", "NO", &[])], "FR", &[("no", 9000, 9000)]))
        .operator
        .unwrap();
    assert!(op.secnumcloud_immune);
    assert_eq!(op.non_eu_capital_total_bp, 0);
}

#[test]
fn secnumcloud_total_threshold() {
    let at = |third: u32| {
        derive(&owned(
            vec![ent("us", "US", &[]), ent("cn", "CN", &[]), ent("ch", "CH", &[])],
            "FR",
            &[("us", 1300, 1300), ("cn", 1300, 1300), ("ch", third, third)],
        ))
        .operator
        .unwrap()
    };
    let ok = at(1300);
    assert!(ok.secnumcloud_immune, "{:?}", ok.secnumcloud_reasons);
    assert_eq!(
        (ok.non_eu_capital_total_bp, ok.non_eu_voting_total_bp),
        (3900, 3900)
    );
    let bad = at(1301);
    assert!(!bad.secnumcloud_immune);
    assert_eq!(bad.non_eu_capital_total_bp, 3901);
    assert_eq!(bad.secnumcloud_reasons.len(), 2, "{:?}", bad.secnumcloud_reasons);
    assert!(bad.secnumcloud_reasons[0].contains("together hold 39.01 % of the capital"));
}

#[test]
fn secnumcloud_total_stops_at_first_non_eu() {
    // US parent owns 100 % of a CN intermediate that holds 20 %: counted once, 20 %.
    // Plus a US holder of 25 % of an EU holding that holds 80 %: 20 % more, through EU.
    let r = owned(
        vec![
            ent("us", "US", &[]),
            ent("cn", "CN", &[("us", 10_000, 10_000)]),
            ent("us2", "US", &[]),
            ent("eu", "DE", &[("us2", 2500, 2500)]),
        ],
        "FR",
        &[("cn", 2000, 2000), ("eu", 8000, 8000)],
    );
    let op = derive(&r).operator.unwrap();
    assert_eq!(op.non_eu_capital_total_bp, 4000);
    assert_eq!(op.non_eu_capital_max_bp, 2000);
    assert!(!op.secnumcloud_immune);
    assert_eq!(op.secnumcloud_reasons.len(), 2, "{:?}", op.secnumcloud_reasons);
}

#[test]
fn hardware_binding() {
    let mut r = owned(vec![], "FR", &[]);
    r.sites.push(site("s2", "DE", "op"));
    r.hardware.push(hw("s2", ek(2)));
    r.hardware.push(hw("s1", HardwareId::SnpChipId([3; 64])));
    let (v, _) = verified(&r);

    let d = v.derive(&[ek(1), HardwareId::SnpChipId([3; 64]), ek(1)]);
    assert!(d.hardware.bound);
    assert_eq!(d.hardware.matched.len(), 2);
    assert_eq!(d.hardware.sites, ["s1"]);
    assert_eq!(d.site.as_ref().unwrap().country, "FR");
    assert!((d.site.as_ref().unwrap().lat - 48.8566).abs() < 1e-9);
    assert_eq!(d.operator.as_ref().unwrap().id, "op");
    assert_eq!(d.registry.version, 1);
    assert_eq!(d.registry.digest, v.digest());

    // Two sites: a conflict, no site, no operator.
    let d = v.derive(&[ek(1), ek(2)]);
    assert!(!d.hardware.bound);
    assert_eq!(d.hardware.sites, ["s1", "s2"]);
    assert_eq!(d.hardware.conflicts.len(), 2);
    assert!(d.site.is_none() && d.operator.is_none());

    // One registered, one not: site known, not bound.
    let d = v.derive(&[ek(1), ek(9)]);
    assert!(!d.hardware.bound);
    assert_eq!(d.hardware.unmatched, [ek(9).to_string()]);
    assert_eq!(d.site.unwrap().id, "s1");

    // Nothing registered, or nothing attested.
    for hw in [vec![ek(9)], vec![]] {
        let d = v.derive(&hw);
        assert!(!d.hardware.bound);
        assert!(d.site.is_none() && d.operator.is_none());
    }
}

#[test]
fn derived_json_shape() {
    let d = derive(&owned(vec![ent("us", "US", &[])], "FR", &[("us", 6000, 6000)]));
    let j = serde_json::to_value(&d).unwrap();
    for k in ["version", "digest", "kid"] {
        assert!(j["registry"][k].is_string() || j["registry"][k].is_u64(), "{k}");
    }
    for k in ["id", "name", "country", "region", "lat", "lon"] {
        assert!(!j["site"][k].is_null(), "{k}");
    }
    let op = &j["operator"];
    for k in [
        "id",
        "name",
        "lei",
        "country",
        "jurisdictions",
        "cloud_act_exposed",
        "cloud_act_reasons",
        "secnumcloud_immune",
        "secnumcloud_reasons",
        "non_eu_capital_max_bp",
        "non_eu_capital_total_bp",
        "non_eu_voting_max_bp",
        "non_eu_voting_total_bp",
        "controllers",
    ] {
        assert!(op.get(k).is_some(), "{k}");
    }
    for k in ["id", "name", "country", "capital_bp", "voting_bp", "us"] {
        assert!(op["controllers"][0].get(k).is_some(), "{k}");
    }
    for k in ["bound", "matched", "unmatched", "sites"] {
        assert!(j["hardware"].get(k).is_some(), "{k}");
    }
    assert_eq!(op["cloud_act_exposed"], true);
    let back: Derived = serde_json::from_value(j).unwrap();
    assert_eq!(back, d);
}

#[test]
fn hostile_lengths_are_refused_cheaply() {
    // Huge declared lengths (array, text, byte string) and deep nesting: errors, no panic,
    // no giant allocation.
    let mut prefix =
        hex::decode("a66776657273696f6e01696973737565645f61741a6553f10069617574686f72697479").unwrap();
    for tail in [
        "7bffffffffffffffff",
        "9bffffffffffffffff",
        "5bffffffffffffffff",
        "7a7fffffff",
    ] {
        let mut b = prefix.clone();
        b.extend(hex::decode(tail).unwrap());
        assert_eq!(
            Registry::from_cbor(&b).unwrap_err().check(),
            "registry_format",
            "{tail}"
        );
    }
    prefix.truncate(1);
    let deep = [vec![0x81u8; 100_000], vec![0]].concat();
    assert_eq!(Registry::from_cbor(&deep).unwrap_err().check(), "registry_format");
    let key = RegistryKey::generate().unwrap();
    assert_eq!(
        SignedRegistry::verify(&deep, &[key.public().clone()])
            .unwrap_err()
            .check(),
        "registry_format"
    );
    // A hardware id with a huge byte string inside a valid prefix.
    let small_bytes = small().to_cbor().unwrap();
    let at = small_bytes
        .windows(3)
        .position(|w| w == [0x42, 0x01, 0x02])
        .unwrap();
    let mut b = small_bytes[..at].to_vec();
    b.extend(hex::decode("5bffffffffffffffff").unwrap());
    assert_eq!(Registry::from_cbor(&b).unwrap_err().check(), "registry_format");
}
