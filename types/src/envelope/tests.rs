use super::*;
use aws_lc_rs::signature::{Ed25519KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

const P: Profile = Profile {
    content_type: "application/vnd.custody.test+cbor",
    alg: Alg::Es256,
    max_len: 1024,
    require_tag: false,
    require_kid: false,
    foreign: false,
};

fn key() -> (EcdsaKeyPair, VerifierKey) {
    let k = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let v = VerifierKey::from_sec1(k.public_key().as_ref()).unwrap();
    (k, v)
}

/// Build an envelope by hand, to send what `seal` never writes.
fn raw(
    tagged: bool,
    p: HeaderBuilder,
    u: HeaderBuilder,
    payload: Option<Vec<u8>>,
    k: &EcdsaKeyPair,
) -> Vec<u8> {
    let b = CoseSign1Builder::new()
        .protected(p.build())
        .unprotected(u.build());
    let rng = SystemRandom::new();
    let sig = |tbs: &[u8]| k.sign(&rng, tbs).unwrap().as_ref().to_vec();
    let s = match payload {
        Some(pl) => b.payload(pl).create_signature(b"", sig).build(),
        None => b.create_detached_signature(b"", b"x", sig).build(),
    };
    if tagged {
        s.to_tagged_vec().unwrap()
    } else {
        s.to_vec().unwrap()
    }
}

fn ours(kid: &VerifierKey) -> HeaderBuilder {
    HeaderBuilder::new()
        .algorithm(iana::Algorithm::ES256)
        .content_type(P.content_type.to_owned())
        .key_id(kid.kid().to_vec())
}

fn err(r: Result<Vec<u8>, EnvelopeError>) -> String {
    match r.unwrap_err() {
        EnvelopeError::Format(_) => "format",
        EnvelopeError::Algorithm(_) => "algorithm",
        EnvelopeError::ContentType { .. } => "content_type",
        EnvelopeError::KeyId(_) => "kid",
        EnvelopeError::Signature(_) => "signature",
    }
    .into()
}

#[test]
fn a_sealed_payload_opens_with_the_key_and_only_with_it() {
    let (k, v) = key();
    let b = seal_es256(&P, &k, b"payload".to_vec()).unwrap();
    assert_eq!(open_es256(&b, &P, &v).unwrap(), b"payload");
    let (_, other) = key();
    assert_eq!(err(open_es256(&b, &P, &other)), "kid");
    // The same key's signature, another message type: refused before the signature.
    let q = Profile {
        content_type: "application/vnd.custody.other+cbor",
        ..P
    };
    assert_eq!(err(open_es256(&b, &q, &v)), "content_type");
    let mut t = b.clone();
    let n = t.len();
    t[n - 1] ^= 1;
    assert_eq!(err(open_es256(&t, &P, &v)), "signature");
    assert_eq!(err(open_es256(&b, &Profile { max_len: 10, ..P }, &v)), "format");
    assert_eq!(err(open_es256(&[0xd2, 0x84], &P, &v)), "format");
    let mut trailing = b.clone();
    trailing.push(0);
    assert_eq!(err(open_es256(&trailing, &P, &v)), "format");
}

#[test]
fn headers_are_checked_before_the_signature() {
    let (k, v) = key();
    let pl = Some(b"x".to_vec());
    let none = HeaderBuilder::new;
    // Untagged: accepted unless the profile requires the tag.
    let b = raw(false, ours(&v), none(), pl.clone(), &k);
    assert!(open_es256(&b, &P, &v).is_ok());
    let tagged = Profile {
        require_tag: true,
        ..P
    };
    assert_eq!(err(open_es256(&b, &tagged, &v)), "format");
    // Another algorithm named.
    let b = raw(
        true,
        ours(&v).algorithm(iana::Algorithm::ES384),
        none(),
        pl.clone(),
        &k,
    );
    assert_eq!(err(open_es256(&b, &P, &v)), "algorithm");
    // alg or crit unprotected.
    let b = raw(
        true,
        ours(&v),
        none().algorithm(iana::Algorithm::ES256),
        pl.clone(),
        &k,
    );
    assert_eq!(err(open_es256(&b, &P, &v)), "algorithm");
    let b = raw(
        true,
        ours(&v).add_critical(iana::HeaderParameter::Alg),
        none(),
        pl.clone(),
        &k,
    );
    assert_eq!(err(open_es256(&b, &P, &v)), "algorithm");
    // Content type unprotected, or none.
    let b = raw(
        true,
        ours(&v),
        none().content_type(P.content_type.to_owned()),
        pl.clone(),
        &k,
    );
    assert_eq!(err(open_es256(&b, &P, &v)), "content_type");
    let bare = HeaderBuilder::new()
        .algorithm(iana::Algorithm::ES256)
        .key_id(v.kid().to_vec());
    let b = raw(true, bare, none(), pl.clone(), &k);
    assert_eq!(err(open_es256(&b, &P, &v)), "content_type");
    let foreign = Profile { foreign: true, ..P };
    assert!(open_es256(&b, &foreign, &v).is_ok(), "a foreign EAR names none");
    // The kid unprotected: only a foreign profile takes it.
    let p = || {
        HeaderBuilder::new()
            .algorithm(iana::Algorithm::ES256)
            .content_type(P.content_type.to_owned())
    };
    let b = raw(true, p(), none().key_id(v.kid().to_vec()), pl.clone(), &k);
    assert_eq!(err(open_es256(&b, &P, &v)), "kid");
    assert!(open_es256(&b, &foreign, &v).is_ok());
    // No kid: fine unless required.
    let b = raw(true, p(), none(), pl.clone(), &k);
    assert!(open_es256(&b, &P, &v).is_ok());
    let kid = Profile {
        require_kid: true,
        ..P
    };
    assert_eq!(err(open_es256(&b, &kid, &v)), "kid");
    // Detached payload.
    let b = raw(true, ours(&v), none(), None, &k);
    assert_eq!(err(open_es256(&b, &P, &v)), "format");
}

/// Ed25519 signatures are deterministic, so the envelope is byte-exact: a change to the
/// headers or their encoding shows here.
#[test]
fn an_ed25519_envelope_is_byte_exact() {
    let p = Profile {
        content_type: "application/vnd.custody.receipt+cbor",
        alg: Alg::EdDsa,
        ..P
    };
    let k = Ed25519KeyPair::from_seed_unchecked(&[7; 32]).unwrap();
    let b = seal(&p, Vec::new(), vec![0xa0], |tbs| {
        Some(k.sign(tbs).as_ref().to_vec())
    })
    .unwrap();
    assert_eq!(hex(&b), VECTOR, "{}", hex(&b));
    let pk: [u8; 32] = k.public_key().as_ref().try_into().unwrap();
    assert_eq!(open_ed25519(&b, &p, &pk).unwrap(), vec![0xa0]);
    assert!(open_ed25519(&b, &P, &pk).is_err(), "not ES256");
}

const VECTOR: &str = "d284582aa201270378246170706c69636174696f6e2f766e642e637573746f64792e726563656970742b63626f72a041a05840021bc2bccd35ca425b9c4c358d63df85f9ce07969fbeea75ad285c5c94b79a0b883b1e880c0be1e795fc02e2a282605c7e25752406b921145c71321f080c1b05";

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
