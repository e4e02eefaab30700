use super::*;
use crate::x509::TrustAnchor;

fn data(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/testdata/amd-crl/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn ark(name: &str) -> TrustAnchor {
    TrustAnchor::from_pem_or_der(&data(name)).unwrap().remove(0)
}

/// 2025-06-01: inside both CRLs' windows.
const JUNE_2025: i64 = 1_748_736_000;
const DAY: i64 = 86_400;

/// AMD's real KDS CRLs (openpcc's copies, see testdata/amd-crl/PROVENANCE.md): Milan
/// lists nothing, Genoa revokes the old Genoa ASK, serial 02 00 01.
#[test]
fn amds_crls_verify_under_their_arks_and_say_what_they_revoke() {
    let milan = Crl::parse(&data("milan_crl.der")).unwrap();
    let genoa = Crl::parse(&data("genoa_crl.pem")).unwrap();
    assert_eq!(
        Crl::parse(&data("genoa_crl.der")).unwrap().der,
        genoa.der,
        "PEM and DER"
    );
    let (ark_m, ark_g) = (ark("milan_ark.pem"), ark("genoa_ark.pem"));
    assert!(milan.issued_by(&ark_m) && !milan.issued_by(&ark_g));
    milan.verify_signature(&ark_m).unwrap();
    genoa.verify_signature(&ark_g).unwrap();
    assert_eq!(milan.this_update, 1_746_535_146); // 2025-05-06T12:39:06Z
    assert_eq!(genoa.next_update, Some(1_762_131_600)); // 2025-11-03T01:00:00Z
    assert!(milan.revoked(&[0x02, 0x00, 0x01]).is_none());
    assert_eq!(genoa.revoked(&[0x02, 0x00, 0x01]), Some(1_667_217_600));
    assert_eq!(
        genoa.revoked(&[0x00, 0x02, 0x00, 0x01]),
        Some(1_667_217_600),
        "leading zero"
    );
    assert!(
        genoa.revoked(&[0x02, 0x00, 0x02]).is_none(),
        "the current Genoa ASK"
    );
}

#[test]
fn a_chain_is_good_revoked_stale_or_unchecked() {
    let crls = vec![
        Crl::parse(&data("milan_crl.der")).unwrap(),
        Crl::parse(&data("genoa_crl.der")).unwrap(),
    ];
    let (ark_m, ark_g) = (ark("milan_ark.pem"), ark("genoa_ark.pem"));
    let current_ask = vec![vec![0x02, 0x00, 0x02]];
    let old_ask = vec![vec![0x02, 0x00, 0x01]];
    let s = status(&crls, &ark_g, &current_ask, JUNE_2025, 0).unwrap();
    assert_eq!(s.as_str(), "good", "{s:?}");
    // A chain through the revoked Genoa ASK.
    let s = status(&crls, &ark_g, &old_ask, JUNE_2025, 0).unwrap();
    assert_eq!(
        s,
        Revocation::Revoked {
            serial: "020001".into(),
            revoked_at: 1_667_217_600
        }
    );
    // Past the Genoa CRL's nextUpdate: stale, unless within the grace.
    let late = 1_762_131_600 + 10 * DAY;
    assert_eq!(
        status(&crls, &ark_g, &current_ask, late, 0).unwrap().as_str(),
        "stale"
    );
    assert_eq!(
        status(&crls, &ark_g, &current_ask, late, 30 * DAY)
            .unwrap()
            .as_str(),
        "good"
    );
    // A revoked ASK stays revoked on a stale CRL.
    assert_eq!(
        status(&crls, &ark_g, &old_ask, late, 0).unwrap().as_str(),
        "revoked"
    );
    // No CRL of this ARK: unchecked (the Milan CRL says nothing about Genoa).
    assert_eq!(
        status(&crls[..1], &ark_g, &current_ask, JUNE_2025, 0).unwrap(),
        Revocation::Unchecked
    );
    // A CRL from before it was issued.
    let e = status(&crls, &ark_m, &current_ask, 1_700_000_000, 0).unwrap_err();
    assert!(matches!(e, CrlError::NotYetValid { .. }), "{e}");
}

#[test]
fn a_tampered_crl_or_one_under_another_key_is_refused() {
    let ark_g = ark("genoa_ark.pem");
    // One byte of the signed list changed (the revoked serial's last byte).
    let mut der = data("genoa_crl.der");
    let at = der.windows(3).position(|w| w == [0x02, 0x00, 0x01]).unwrap();
    der[at + 2] = 0x05;
    let c = Crl::parse(&der).unwrap();
    let e = status(&[c], &ark_g, &[vec![2, 0, 2]], JUNE_2025, 0).unwrap_err();
    assert!(matches!(e, CrlError::Signature { .. }), "{e}");
    // Milan's CRL checked under Genoa's key.
    let m = Crl::parse(&data("milan_crl.der")).unwrap();
    assert!(matches!(
        m.verify_signature(&ark_g),
        Err(CrlError::Signature { .. })
    ));
    // Not a CRL at all, or too long.
    assert!(Crl::parse(b"junk").is_err());
    assert!(Crl::parse(&data("genoa_ark.pem")).is_err());
    assert!(Crl::parse(&vec![0u8; MAX_CRL_LEN + 1]).is_err());
    let mut trailing = data("genoa_crl.der");
    trailing.push(0);
    assert!(Crl::parse(&trailing).is_err());
}
