#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use super::*;

/// A shared CoRIM vector's path (`../shared/testvectors/corim/...`).
macro_rules! vector {
    ($p:literal) => {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/testvectors/corim/", $p)
    };
}
pub(crate) use vector;

pub(crate) fn read(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

pub(crate) fn h(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

/// The signer-pub.jwk point (x || y after 0x04), decoded from its base64url x and y.
const SIGNER_PUB: &str = "0430a0424cd21c2944838a2d75c92b37e76ea20d9f00893a3b4eee8a3c0aafec3e\
e04b65e92456d9888b52b379bdfbd51ee869ef1f0fc65b6659695b6cce081723";

const SIGNED: &str = vector!("signed-generic-veraison-corim/signed-good-corim.cbor");

fn measurement<'a>(c: &'a Corim, mkey: &Mkey) -> &'a Measurement {
    c.reference_values()
        .flat_map(|r| r.measurements.iter())
        .find(|m| m.mkey.as_ref() == Some(mkey))
        .unwrap()
}

#[test]
fn sevsnp_measurement_and_tcb() {
    let c = Corim::from_cbor(&read(vector!(
        "sevsnp-genoa-veraison-services/corim-sevsnp-valid.cbor"
    )))
    .unwrap();
    assert_eq!(
        c.id,
        Some(TagId::Text("00000000-0000-0000-5596-0000000000001".into()))
    );
    assert_eq!(c.profile.as_deref(), Some("tag:amd.com,2024:snp-corim-profile"));
    assert_eq!(c.tags.len(), 2);
    assert_eq!(c.tags[0].language.as_deref(), Some("en-GB"));
    let rv = &c.tags[0].triples.reference_values;
    assert_eq!(rv.len(), 1);
    let class = rv[0].environment.class.as_ref().unwrap();
    let Some(Ident::Oid(oid)) = &class.id else {
        panic!("class-id")
    };
    assert_eq!(oid.dotted, "1.3.6.1.4.1.3704.3.1");
    // PROVENANCE.md says 19; the document holds 18 (mkeys 0-7, 640, 641, 645-647,
    // 3328-3330, 3936, 3968).
    assert_eq!(rv[0].measurements.len(), 18);
    let measurement_bytes = h(
        "7699e6ac12ccdfd1dfac70e649ce1f046cb2afbb003438f4cdddfe2ccbe182fa5ffbe8dcdb930454324e10c52c788980",
    );
    assert_eq!(
        rv[0].environment.instance,
        Some(Ident::Bytes(measurement_bytes.clone()))
    );
    let m = measurement(&c, &Mkey::Uint(641));
    assert_eq!(
        m.digests,
        vec![Digest {
            alg: Alg::Id(7),
            value: measurement_bytes
        }]
    );
    assert_eq!(
        measurement(&c, &Mkey::Uint(2)).raw_value,
        Some(RawValue {
            value: h("0000000000030000"),
            mask: None
        })
    );
    assert_eq!(
        measurement(&c, &Mkey::Uint(6)).svn,
        Some(Svn::Exact(0xd30e000000000003))
    );
    assert_eq!(measurement(&c, &Mkey::Uint(1)).svn, Some(Svn::Min(0)));
    assert_eq!(
        measurement(&c, &Mkey::Uint(0)).version,
        Some(Version {
            version: "2".into(),
            scheme: Some(4)
        })
    );
    assert_eq!(
        measurement(&c, &Mkey::Uint(3330)).version,
        Some(Version {
            version: "1.55.8".into(),
            scheme: Some(16384)
        })
    );
    assert_eq!(
        measurement(&c, &Mkey::Uint(646))
            .raw_value
            .as_ref()
            .unwrap()
            .value,
        vec![0xff; 32]
    );
    // The second CoMID is an attest-key/trust-anchor triple (key 3): counted, not decoded.
    assert!(c.tags[1].triples.reference_values.is_empty());
    assert_eq!(c.tags[1].triples.other, vec![(3, 1)]);
}

#[test]
fn tpm_parsec_pcrs() {
    let c = Corim::from_cbor(&read(vector!(
        "tpm-parsec-veraison-services/corim-parsec-tpm-valid.cbor"
    )))
    .unwrap();
    assert_eq!(
        c.profile.as_deref(),
        Some("tag:github.com/parallaxsecond,2023-03-03:tpm")
    );
    assert_eq!(c.tags[0].entities[0].name, "Parsec");
    assert_eq!(c.tags[0].entities[0].roles, vec![0, 1, 2]);
    let rv: Vec<_> = c.reference_values().collect();
    assert_eq!(rv.len(), 1);
    assert_eq!(
        rv[0].environment.class.as_ref().unwrap().id,
        Some(Ident::Uuid(
            h("cd1f0e5526f9460db9d8f7fde171787c").try_into().unwrap()
        ))
    );
    let pcrs: Vec<_> = rv[0].measurements.iter().map(|m| m.mkey.clone()).collect();
    assert_eq!(
        pcrs,
        vec![Some(Mkey::Uint(0)), Some(Mkey::Uint(1)), Some(Mkey::Uint(2))]
    );
    let pcr0 =
        "4284b5694ca6c0d2cf4789a0b95ac8025c818de52304364be7cd2981b2d2edc685b322277ec25819962413d8c9b2c1f5";
    let pcr2 =
        "2107bbe761fca52d95136a1354db7a4dd57b1b26be0d3da71d9eb23986b34ba615abf6514cf35e5a9ea55a032d068a78";
    for (i, want) in [pcr0, pcr0, pcr2].iter().enumerate() {
        let d = &rv[0].measurements[i].digests;
        assert_eq!(
            d[0],
            Digest {
                alg: Alg::Id(1),
                value: vec![0; 32]
            }
        );
        assert_eq!(
            d[1],
            Digest {
                alg: Alg::Id(7),
                value: h(want)
            }
        );
    }
    assert_eq!(c.tags[1].triples.other, vec![(3, 1)]);
}

#[test]
fn tpm_enacttrust_quote_digest() {
    let c = Corim::from_cbor(&read(vector!(
        "tpm-enacttrust-veraison-services/corim-enacttrust-valid.cbor"
    )))
    .unwrap();
    assert_eq!(c.tags.len(), 2);
    assert_eq!(
        c.tags[0].tag_id,
        TagId::Uuid(h("00000000000000000000000000000001").try_into().unwrap())
    );
    let rv: Vec<_> = c.reference_values().collect();
    assert_eq!(rv.len(), 1);
    assert_eq!(rv[0].environment.class, None);
    assert_eq!(
        rv[0].environment.instance,
        Some(Ident::Uuid(
            h("7df7714eaa044638bcbf434b1dd720f1").try_into().unwrap()
        ))
    );
    assert_eq!(rv[0].measurements[0].mkey, None);
    assert_eq!(
        rv[0].measurements[0].digests,
        vec![Digest {
            alg: Alg::Id(1),
            value: h("87428fc522803d31065e7bce3cf03fe475096631e5e07bbd7a0fde60c4cf25c7")
        }]
    );
}

#[test]
fn tdx_seam_bare_comid() {
    let c = Corim::from_cbor(&read(vector!("tdx-seam-veraison-corim/comid_seam_refval.cbor"))).unwrap();
    assert_eq!(c.id, None);
    assert_eq!(c.tags.len(), 1);
    assert_eq!(c.tags[0].entities[0].name, "INTEL");
    assert_eq!(c.tags[0].entities[0].reg_id.as_deref(), Some("https://intel.com"));
    let rv = &c.tags[0].triples.reference_values[0];
    let class = rv.environment.class.as_ref().unwrap();
    assert_eq!(class.vendor.as_deref(), Some("Intel Corporation"));
    assert_eq!(class.model.as_deref(), Some("TDX SEAM"));
    let Some(Ident::Oid(oid)) = &class.id else {
        panic!("class-id")
    };
    assert_eq!(oid.dotted, "2.16.840.1.113741.1.2.3.4.3");
    let m = &rv.measurements[0];
    assert_eq!(m.extensions.len(), 6);
    assert_eq!(m.authorized_by.len(), 1);
    assert_eq!(m.authorized_by[0].tag, tags::PKIX_BASE64_KEY);
    // isvsvn (-73): greater-or-equal (2) 6; tcb-eval-num (-86): >= 11.
    assert_eq!(
        Expression::from_value(m.extension(-73).unwrap()),
        Some(Expression::Numeric { op: 2, value: 6 })
    );
    assert_eq!(
        Expression::from_value(m.extension(-86).unwrap()),
        Some(Expression::Numeric { op: 2, value: 11 })
    );
    // mrsigner (-84): member of {sha-256 a314..., sha-512 a314...a314...}.
    let d256 = "a314fc2dc663ae7a6b6bc6787594057396e6b3f569cd50fd5ddb4d1bbafd2b6a";
    let Some(Expression::DigestSet { op: 6, digests }) = Expression::from_value(m.extension(-84).unwrap())
    else {
        panic!("mrsigner")
    };
    assert_eq!(
        digests[0],
        Digest {
            alg: Alg::Id(1),
            value: h(d256)
        }
    );
    assert_eq!(
        digests[1],
        Digest {
            alg: Alg::Id(8),
            value: h(&format!("{d256}{d256}"))
        }
    );
    assert_eq!(m.extension(-85), Some(&Value::Bytes(h("abcd"))));
}

#[test]
fn cca_platform_and_realm() {
    let p = Corim::from_cbor(&read(vector!(
        "cca-platform-veraison-services/corim-cca-platform-valid.cbor"
    )))
    .unwrap();
    assert_eq!(p.profile.as_deref(), Some("tag:arm.com,2025:cca_platform#1.0.0"));
    assert_eq!(p.entities[0].name, "Veraison Project");
    let rv = &p.tags[0].triples.reference_values[0];
    assert_eq!(
        rv.environment.class.as_ref().unwrap().id,
        Some(Ident::Bytes(vec![0; 32]))
    );
    let names: Vec<_> = rv.measurements.iter().filter_map(|m| m.name.as_deref()).collect();
    assert_eq!(names, ["BL", "M1", "M2", "M3"]);
    assert_eq!(
        rv.measurements[0].mkey,
        Some(Mkey::Text("cca.software-component".into()))
    );
    assert_eq!(rv.measurements[0].cryptokeys.len(), 1);
    assert_eq!(rv.measurements[0].cryptokeys[0].tag, tags::BYTES);
    let cfg = &rv.measurements[4];
    assert_eq!(cfg.mkey, Some(Mkey::Text("cca.platform-config".into())));
    // The deprecated raw-value-mask (key 5) is folded into the raw value.
    assert_eq!(
        cfg.raw_value,
        Some(RawValue {
            value: h("010203"),
            mask: Some(h("010203"))
        })
    );

    let r = Corim::from_cbor(&read(vector!(
        "cca-realm-veraison-services/corim-cca-realm-valid.cbor"
    )))
    .unwrap();
    let rv: Vec<_> = r.reference_values().collect();
    let keys: Vec<_> = rv[0]
        .measurements
        .iter()
        .map(|m| m.mkey.clone().unwrap())
        .collect();
    assert_eq!(keys.len(), 6);
    assert_eq!(keys[0], Mkey::Text("cca.rim".into()));
    assert_eq!(
        rv[0].measurements[0].digests[0],
        Digest {
            alg: Alg::Id(8),
            value: vec![0x43; 64]
        }
    );
    assert_eq!(rv[0].measurements[5].raw_value.as_ref().unwrap().value.len(), 64);
}

#[test]
fn nvidia_blackwell_fsp() {
    let c = Corim::from_cbor(&read(vector!(
        "nvidia-gpu-blackwell-fsp-sdkfixture/blackwell_fsp_real.cbor"
    )))
    .unwrap();
    assert_eq!(c.id, Some(TagId::Text("blackwell-fsp-real-evidence".into())));
    assert_eq!(
        c.tags[0].tag_id,
        TagId::Text("10de294110de2046-000005f1-97.00.F3.00.07".into())
    );
    let rv = &c.tags[0].triples.reference_values;
    assert_eq!(rv.len(), 2);
    let class0 = rv[0].environment.class.as_ref().unwrap();
    assert_eq!(
        (class0.vendor.as_deref(), class0.model.as_deref(), class0.layer),
        (Some("NVIDIA"), Some("GB100 A01 FSP"), Some(0))
    );
    assert_eq!(rv[0].measurements[0].svn, Some(Svn::Exact(3)));
    assert_eq!(
        rv[0].measurements[0].digests,
        vec![Digest {
            alg: Alg::Id(7),
            value: h("769b8c7f81c28153a9524b753f40d8d1bef238e39cd2cb74372b09cdd250a07c1bedbe43a552f71027cc9764ee831f9c")
        }]
    );
    assert_eq!(rv[1].environment.class.as_ref().unwrap().layer, Some(1));
    assert_eq!(rv[1].measurements.len(), 13);
    let idx: Vec<_> = rv[1]
        .measurements
        .iter()
        .map(|m| m.mkey.clone().unwrap())
        .collect();
    assert_eq!(idx.first(), Some(&Mkey::Uint(1)));
    assert_eq!(idx.last(), Some(&Mkey::Uint(52)));
    assert_eq!(
        measurement(&c, &Mkey::Uint(1)).raw_value.as_ref().unwrap().value,
        h("00000001")
    );
    assert_eq!(
        measurement(&c, &Mkey::Uint(52))
            .raw_value
            .as_ref()
            .unwrap()
            .value
            .len(),
        73
    );
    assert_eq!(
        rv[1]
            .measurements
            .iter()
            .filter(|m| !m.digests.is_empty())
            .count(),
        9
    );
}

#[test]
fn nvidia_rubin_vbios() {
    let c = Corim::from_cbor(&read(vector!(
        "nvidia-gpu-rubin-vbios-sdkfixture/rubin_vbios_example.cbor"
    )))
    .unwrap();
    assert_eq!(
        c.id,
        Some(TagId::Text("example-rubin-vbios-GR100_081D_9900230000".into()))
    );
    let rv = &c.tags[0].triples.reference_values;
    assert_eq!(rv.len(), 11);
    assert_eq!(rv.iter().map(|r| r.measurements.len()).sum::<usize>(), 14);
    let Some(Ident::Oid(oid)) = &rv[1].environment.class.as_ref().unwrap().id else {
        panic!("class-id")
    };
    assert_eq!(oid.dotted, "1.3.6.1.4.1.5703.1300.1.1.11.1.10.100.4");
    let ffmc = measurement(&c, &Mkey::Text("FFMC".into()));
    assert_eq!(
        ffmc.digests[0].value,
        h("ddc7cab4e9eb3fe060a3e0d99d27ded2ac6f685f55d2acde518f5ae44d26eb67ed825b152e3966ec428db074ec8fc660")
    );
    assert_eq!(
        measurement(&c, &Mkey::Text("NVLC".into())).digests[0].value,
        vec![0; 48]
    );
    assert_eq!(
        measurement(&c, &Mkey::Text("JTGS".into()))
            .raw_value
            .as_ref()
            .unwrap()
            .value,
        vec![2]
    );
    assert_eq!(
        measurement(&c, &Mkey::Text("L0CSVN".into())).svn,
        Some(Svn::Exact(1))
    );
}

#[test]
fn signed_generic_verifies_es256() {
    let s = Corim::from_signed_es256(&read(SIGNED), &h(SIGNER_PUB)).unwrap();
    assert_eq!(s.header.alg, COSE_ES256);
    assert_eq!(s.header.kid, Some(b"1".to_vec()));
    assert_eq!(s.header.signer.as_deref(), Some("ACME Ltd signing key"));
    assert_eq!(
        s.header.validity,
        Some(Validity {
            not_before: Some(1640908800),
            not_after: 1767139200
        })
    );
    assert_eq!(s.corim.id, Some(TagId::Text("test corim id".into())));
    let rv: Vec<_> = s.corim.reference_values().collect();
    let class = rv[0].environment.class.as_ref().unwrap();
    assert_eq!(
        (class.vendor.as_deref(), class.model.as_deref()),
        (Some("ACME"), Some("RoadRunner"))
    );
    assert_eq!(
        class.id,
        Some(Ident::Bytes(b"acme-implementation-id-000000001".to_vec()))
    );
    let uuid: [u8; 16] = h("31fb5abf023e4992aa4e95f9c1503bfa").try_into().unwrap();
    assert_eq!(rv[0].measurements.len(), 3);
    assert!(rv[0]
        .measurements
        .iter()
        .all(|m| m.mkey == Some(Mkey::Uuid(uuid))));
    assert_eq!(
        rv[0].measurements[0].digests[0].value,
        h("87428fc522803d31065e7bce3cf03fe475096631e5e07bbd7a0fde60c4cf25c7")
    );
    // The unsigned reader does not take a signed document.
    assert!(matches!(
        Corim::from_cbor(&read(SIGNED)),
        Err(CorimError::Tag { found: Some(18), .. })
    ));
}

#[test]
fn signed_tampered_or_wrong_key_fails() {
    let good = read(SIGNED);
    let digest = h("87428fc522803d31065e7bce3cf03fe475096631e5e07bbd7a0fde60c4cf25c7");
    let pos = good.windows(32).position(|w| w == digest.as_slice()).unwrap();
    let mut bad = good.clone();
    bad[pos] ^= 1;
    assert_eq!(
        Corim::from_signed_es256(&bad, &h(SIGNER_PUB)),
        Err(CorimError::Signature)
    );
    // Another key (the generator of P-256) refuses the good document.
    let g = "046b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c2964fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5";
    assert_eq!(Corim::from_signed_es256(&good, &h(g)), Err(CorimError::Signature));
    // A flipped signature byte.
    let mut bad_sig = good.clone();
    let last = bad_sig.len() - 1;
    bad_sig[last] ^= 0x80;
    assert_eq!(
        Corim::from_signed_es256(&bad_sig, &h(SIGNER_PUB)),
        Err(CorimError::Signature)
    );
    // The callback is never asked when the envelope is malformed, and a refusing callback fails.
    assert!(Corim::from_signed(&good[..good.len() - 1], |_, _, _| panic!("called")).is_err());
    assert_eq!(
        Corim::from_signed(&good, |_, _, _| false),
        Err(CorimError::Signature)
    );
}

fn all_vectors() -> Vec<Vec<u8>> {
    [
        vector!("sevsnp-genoa-veraison-services/corim-sevsnp-valid.cbor"),
        vector!("tpm-parsec-veraison-services/corim-parsec-tpm-valid.cbor"),
        vector!("tpm-enacttrust-veraison-services/corim-enacttrust-valid.cbor"),
        vector!("tdx-seam-veraison-corim/comid_seam_refval.cbor"),
        vector!("cca-platform-veraison-services/corim-cca-platform-valid.cbor"),
        vector!("cca-realm-veraison-services/corim-cca-realm-valid.cbor"),
        vector!("nvidia-gpu-blackwell-fsp-sdkfixture/blackwell_fsp_real.cbor"),
        vector!("nvidia-gpu-rubin-vbios-sdkfixture/rubin_vbios_example.cbor"),
    ]
    .iter()
    .map(|p| read(p))
    .collect()
}

#[test]
fn truncated_inputs_fail() {
    for v in all_vectors().iter().chain([read(SIGNED)].iter()) {
        for n in 0..v.len() {
            assert!(Corim::from_cbor(&v[..n]).is_err(), "prefix {n} accepted");
            assert!(
                Corim::from_signed(&v[..n], |_, _, _| true).is_err(),
                "signed prefix {n} accepted"
            );
        }
    }
}

#[test]
fn trailing_bytes_fail() {
    for v in all_vectors() {
        let mut t = v.clone();
        t.push(0);
        assert!(matches!(
            Corim::from_cbor(&t),
            Err(CorimError::Trailing { n: 1, .. })
        ));
    }
    let mut s = read(SIGNED);
    s.push(0xf6);
    assert!(matches!(
        Corim::from_signed_es256(&s, &h(SIGNER_PUB)),
        Err(CorimError::Trailing { .. })
    ));
}

fn enc(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(v, &mut out).unwrap();
    out
}

fn tagged(t: u64, v: Value) -> Value {
    Value::Tag(t, Box::new(v))
}

fn imap(entries: Vec<(i64, Value)>) -> Value {
    Value::Map(entries.into_iter().map(|(k, v)| (Value::from(k), v)).collect())
}

fn small_comid(measurements: Vec<Value>) -> Value {
    let env = imap(vec![(0, imap(vec![(1, Value::Text("V".into()))]))]);
    imap(vec![
        (1, imap(vec![(0, Value::Text("t".into()))])),
        (
            4,
            imap(vec![(
                0,
                Value::Array(vec![Value::Array(vec![env, Value::Array(measurements)])]),
            )]),
        ),
    ])
}

fn digest_measurement(n_digests: usize, len: usize) -> Value {
    let d = Value::Array(vec![Value::from(1), Value::Bytes(vec![0xaa; len])]);
    imap(vec![(1, imap(vec![(2, Value::Array(vec![d; n_digests]))]))])
}

#[test]
fn wrong_tags_fail() {
    let comid = small_comid(vec![digest_measurement(1, 32)]);
    assert!(Corim::from_cbor(&enc(&comid)).is_ok());
    assert!(Corim::from_cbor(&enc(&tagged(506, Value::Bytes(enc(&comid))))).is_ok());
    assert!(matches!(
        Corim::from_cbor(&enc(&tagged(500, comid.clone()))),
        Err(CorimError::Tag { found: Some(500), .. })
    ));
    assert!(matches!(
        Corim::from_cbor(&enc(&Value::Array(vec![]))),
        Err(CorimError::Tag { found: None, .. })
    ));
    // A tag inside the CoRIM that is no concise tag.
    let corim = |t: u64| {
        tagged(
            501,
            imap(vec![
                (0, Value::Text("id".into())),
                (1, Value::Array(vec![tagged(t, Value::Bytes(enc(&comid)))])),
            ]),
        )
    };
    assert_eq!(Corim::from_cbor(&enc(&corim(506))).unwrap().tags.len(), 1);
    assert_eq!(Corim::from_cbor(&enc(&corim(505))).unwrap().other_tags, 1);
    let err = Corim::from_cbor(&enc(&corim(507))).unwrap_err();
    assert!(
        matches!(&err, CorimError::Tag { at, found: Some(507), .. } if at == "corim.tags[0]"),
        "{err}"
    );
    // A signed reader refuses an unsigned document.
    assert!(matches!(
        Corim::from_signed(&enc(&corim(506)), |_, _, _| true),
        Err(CorimError::Tag { found: Some(501), .. })
    ));
}

#[test]
fn oversize_lists_fail() {
    let many = small_comid(vec![digest_measurement(1, 32); MAX_MEASUREMENTS + 1]);
    assert!(matches!(
        Corim::from_cbor(&enc(&many)),
        Err(CorimError::TooMany {
            max: MAX_MEASUREMENTS,
            ..
        })
    ));
    let digests = small_comid(vec![digest_measurement(MAX_DIGESTS + 1, 32)]);
    assert!(matches!(
        Corim::from_cbor(&enc(&digests)),
        Err(CorimError::TooMany { max: MAX_DIGESTS, .. })
    ));
    let long = small_comid(vec![digest_measurement(1, MAX_DIGEST_LEN + 1)]);
    assert!(matches!(
        Corim::from_cbor(&enc(&long)),
        Err(CorimError::Invalid { .. })
    ));
    let comid = Value::Bytes(enc(&small_comid(vec![digest_measurement(1, 32)])));
    let tags = Value::Array(vec![tagged(506, comid); MAX_TAGS + 1]);
    let corim = tagged(501, imap(vec![(0, Value::Text("id".into())), (1, tags)]));
    assert!(matches!(
        Corim::from_cbor(&enc(&corim)),
        Err(CorimError::TooMany { max: MAX_TAGS, .. })
    ));
    assert!(matches!(
        Corim::from_cbor(&vec![0; MAX_INPUT_LEN + 1]),
        Err(CorimError::TooLong(_))
    ));
    // Nesting deeper than MAX_DEPTH.
    let mut deep = vec![0x81; MAX_DEPTH + 8];
    deep.push(0);
    assert!(matches!(Corim::from_cbor(&deep), Err(CorimError::Cbor { .. })));
}

#[test]
fn malformed_structure_names_where() {
    // A digest that is a text string.
    let bad = imap(vec![(
        1,
        imap(vec![(2, Value::Array(vec![Value::Text("x".into())]))]),
    )]);
    let err = Corim::from_cbor(&enc(&small_comid(vec![bad]))).unwrap_err();
    let CorimError::Type { at, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(at, "comid.triples[0].reference[0].measurements[0].mval[2][0]");
    // Duplicate keys.
    let dup = Value::Map(vec![
        (Value::from(1), Value::from(0)),
        (Value::from(1), Value::from(1)),
    ]);
    assert!(matches!(
        Corim::from_cbor(&enc(&dup)),
        Err(CorimError::Duplicate { .. })
    ));
    // Missing triples.
    let no_triples = imap(vec![(1, imap(vec![(0, Value::Text("t".into()))]))]);
    assert!(matches!(
        Corim::from_cbor(&enc(&no_triples)),
        Err(CorimError::Missing { key: 4, .. })
    ));
    // An unknown key in a measurement-values map is counted, not refused.
    let extra = imap(vec![(1, imap(vec![(99, Value::from(1)), (-1, Value::from(2))]))]);
    let c = Corim::from_cbor(&enc(&small_comid(vec![extra]))).unwrap();
    let m = &c.tags[0].triples.reference_values[0].measurements[0];
    assert_eq!(m.unrecognised, 1);
    assert_eq!(m.extension(-1), Some(&Value::from(2)));
}
