#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
use super::*;
use base64::Engine;

const GOOD: &str = include_str!("../testdata/NV_GPU_DRIVER_GH100_550.144.03.xml");
const BAD_SIG: &str = include_str!("../testdata/incorrect_signature_driver_rim.xml");

/// The KeyInfo certificates (DER), leaf first.
fn certs(xml: &str) -> Vec<Vec<u8>> {
    xml.split("<ds:X509Certificate>")
        .skip(1)
        .map(|s| {
            let b64: String = s
                .split("</ds:X509Certificate>")
                .next()
                .unwrap()
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect();
            base64::engine::general_purpose::STANDARD.decode(b64).unwrap()
        })
        .collect()
}

fn leaf() -> Vec<u8> {
    certs(GOOD).remove(0)
}

#[test]
fn real_rim_verifies_with_its_signer() {
    let v = verify_enveloped(GOOD.as_bytes(), &leaf()).unwrap();
    assert_eq!(v.signature, SignatureAlgorithm::EcdsaSha384);
    assert_eq!(v.digest, DigestAlgorithm::Sha384);
    assert_eq!(v.canonicalization, Canonicalization::C14n11);
}

#[test]
fn corrupted_signature_value_is_invalid() {
    assert_eq!(
        verify_enveloped(BAD_SIG.as_bytes(), &leaf()),
        Err(XmlDsigError::Invalid)
    );
}

#[test]
fn other_key_is_invalid() {
    // The intermediate CA's P-384 key did not sign the document.
    let inter = certs(GOOD).remove(1);
    assert_eq!(
        verify_enveloped(GOOD.as_bytes(), &inter),
        Err(XmlDsigError::Invalid)
    );
}

#[test]
fn edited_hash_breaks_the_digest() {
    let h =
        "4a5e4b3d501fe31f91bd8b6f2921b58437704a504dbedba971440e840c938c805612689ae3ac04b1009515a179063d49";
    assert!(GOOD.contains(h));
    let bad = GOOD.replacen(h, &h.replacen('4', "5", 1), 1);
    assert_eq!(
        verify_enveloped(bad.as_bytes(), &leaf()),
        Err(XmlDsigError::Invalid)
    );
    // Whitespace outside the signature changes the canonical form too.
    let bad = GOOD.replacen("<ns0:Payload", "<ns0:Payload ", 1);
    assert!(
        verify_enveloped(bad.as_bytes(), &leaf()).is_ok(),
        "attribute whitespace is not significant"
    );
    let bad = GOOD.replacen("    <ns0:Payload", "  <ns0:Payload", 1);
    assert_eq!(
        verify_enveloped(bad.as_bytes(), &leaf()),
        Err(XmlDsigError::Invalid)
    );
}

#[test]
fn dtd_and_entities_are_refused() {
    let with_doctype = format!("<!DOCTYPE SoftwareIdentity>\n{GOOD}");
    assert_eq!(
        verify_enveloped(with_doctype.as_bytes(), &leaf()),
        Err(XmlDsigError::Doctype)
    );
    let xxe = format!(
        "<!DOCTYPE r [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>\n{}",
        GOOD.replacen("name=\"Measurement_0\"", "name=\"&x;\"", 1)
    );
    assert_eq!(
        verify_enveloped(xxe.as_bytes(), &leaf()),
        Err(XmlDsigError::Doctype)
    );
    assert_eq!(refuse_dtd(b"<a><!entity x 'y'></a>"), Err(XmlDsigError::Doctype));
    // An undeclared entity is not expanded: the document is not well-formed.
    let undeclared = GOOD.replacen("name=\"Measurement_0\"", "name=\"&x;\"", 1);
    assert_eq!(
        verify_enveloped(undeclared.as_bytes(), &leaf()),
        Err(XmlDsigError::Parse)
    );
}

#[test]
fn non_utf8_is_refused() {
    let mut utf16 = vec![0xff, 0xfe];
    for u in GOOD.encode_utf16() {
        utf16.extend_from_slice(&u.to_le_bytes());
    }
    assert_eq!(verify_enveloped(&utf16, &leaf()), Err(XmlDsigError::NotUtf8));
}

#[test]
fn signature_count_and_position() {
    let start = GOOD.find("<ds:Signature").unwrap();
    let end = GOOD.find("</ds:Signature>").unwrap() + "</ds:Signature>".len();
    let sig = &GOOD[start..end];
    let without = format!("{}{}", &GOOD[..start], &GOOD[end..]);
    assert_eq!(
        verify_enveloped(without.as_bytes(), &leaf()),
        Err(XmlDsigError::NoSignature)
    );
    let twice = GOOD.replacen("</SoftwareIdentity>", &format!("{sig}</SoftwareIdentity>"), 1);
    assert_eq!(
        verify_enveloped(twice.as_bytes(), &leaf()),
        Err(XmlDsigError::MultipleSignatures(2))
    );
    // Moved inside Payload: the enveloped transform would still produce the same bytes,
    // but a signature that is not the document element's child is refused.
    let moved = without.replacen("</ns0:Payload>", &format!("{sig}</ns0:Payload>"), 1);
    assert_eq!(
        verify_enveloped(moved.as_bytes(), &leaf()),
        Err(XmlDsigError::SignatureNotEnveloped)
    );
}

#[test]
fn reference_to_a_fragment_is_refused() {
    // Classic wrapping set-up: the reference points at one element by Id.
    let wrapped = GOOD
        .replacen("<ds:Reference URI=\"\">", "<ds:Reference URI=\"#p\">", 1)
        .replacen("<ns0:Payload ", "<ns0:Payload Id=\"p\" ", 1);
    let e = verify_enveloped(wrapped.as_bytes(), &leaf()).unwrap_err();
    assert!(
        matches!(e, XmlDsigError::Processing | XmlDsigError::Invalid),
        "{e:?}"
    );
    // Absent URI.
    let absent = GOOD.replacen("<ds:Reference URI=\"\">", "<ds:Reference>", 1);
    assert!(verify_enveloped(absent.as_bytes(), &leaf()).is_err());
}

#[test]
fn disallowed_algorithm_is_refused() {
    let xslt = GOOD.replacen(
        "<ds:Transform Algorithm=\"http://www.w3.org/2006/12/xml-c14n11\"/></ds:Transforms>",
        "<ds:Transform Algorithm=\"http://www.w3.org/TR/1999/REC-xslt-19991116\"/></ds:Transforms>",
        1,
    );
    assert_ne!(xslt, GOOD);
    assert_eq!(
        verify_enveloped(xslt.as_bytes(), &leaf()),
        Err(XmlDsigError::Processing)
    );
    let no_enveloped = GOOD.replacen(
        "<ds:Transform Algorithm=\"http://www.w3.org/2000/09/xmldsig#enveloped-signature\"/>",
        "",
        1,
    );
    assert!(verify_enveloped(no_enveloped.as_bytes(), &leaf()).is_err());
}

#[test]
fn garbage_is_an_error() {
    for g in [&b""[..], b"<", b"not xml", b"<a>", &[0u8, 1, 2, 0xff], b"<a/>"] {
        assert!(verify_enveloped(g, &leaf()).is_err());
    }
    assert_eq!(
        verify_enveloped(GOOD.as_bytes(), b"not a certificate"),
        Err(XmlDsigError::Key)
    );
    assert_eq!(verify_enveloped(GOOD.as_bytes(), b""), Err(XmlDsigError::Key));
}

#[test]
fn concurrent_verifies() {
    let leaf = leaf();
    std::thread::scope(|s| {
        for i in 0..8 {
            let leaf = &leaf;
            s.spawn(move || {
                for _ in 0..5 {
                    let doc = if i % 2 == 0 { GOOD } else { BAD_SIG };
                    assert_eq!(verify_enveloped(doc.as_bytes(), leaf).is_ok(), i % 2 == 0);
                }
            });
        }
    });
}
