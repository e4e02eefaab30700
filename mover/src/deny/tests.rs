use super::*;
use crate::ticket::tests::{key, ticket};
use aws_lc_rs::signature::KeyPair;
use custody_types::FailedCheck;

fn list(at: i64, ids: &[(&str, Denial)]) -> DenyList {
    DenyList::new(
        at,
        ids.iter()
            .map(|(id, d)| DeniedNode {
                id: (*id).into(),
                denial: *d,
                since: 1_700_000_000,
            })
            .collect(),
    )
    .unwrap()
}

#[test]
fn a_signed_list_round_trips_and_names_each_denial() {
    let k = key();
    let l = list(5_000, &[("n-b", Denial::Revoked), ("n-a", Denial::Removed)]);
    assert_eq!(l.nodes[0].id, "n-a", "sorted");
    let signed = l.sign(&k).unwrap();
    let back = DenyList::verify(&signed, k.public_key().as_ref(), 10).unwrap();
    assert_eq!(back, l);
    assert_eq!(back.find("n-a").unwrap().denial, Denial::Removed);
    assert!(back.find("n-c").is_none());
}

#[test]
fn a_list_under_another_key_or_type_is_refused() {
    let (k, other) = (key(), key());
    let signed = list(5_000, &[]).sign(&k).unwrap();
    let e = DenyList::verify(&signed, other.public_key().as_ref(), 10).unwrap_err();
    assert_eq!(e.check(), "deny_list", "{e}");
    // A ticket is signed by the same key, and is no deny list.
    let t = ticket().sign(&k).unwrap();
    let e = DenyList::verify(&t, k.public_key().as_ref(), 10).unwrap_err();
    assert_eq!(e.check(), "content_type", "{e}");
    // Nor is a deny list a ticket.
    let e = crate::ticket::Ticket::verify(&signed, k.public_key().as_ref(), 10).unwrap_err();
    assert_eq!(e.check(), "content_type", "{e}");
    // A flipped bit in the payload breaks the signature.
    let mut bad = list(5_000, &[("n-a", Denial::Removed)]).sign(&k).unwrap();
    let i = bad.iter().rposition(|b| *b == b'a').unwrap();
    bad[i] = b'b';
    let e = DenyList::verify(&bad, k.public_key().as_ref(), 10).unwrap_err();
    assert_eq!(e.check(), "deny_list", "{e}");
}

#[test]
fn a_list_from_the_future_is_refused() {
    let k = key();
    let signed = list(10_000_000, &[]).sign(&k).unwrap();
    let e = DenyList::verify(&signed, k.public_key().as_ref(), 10).unwrap_err();
    assert_eq!(e.check(), "deny_list");
    assert!(DenyList::verify(&signed, k.public_key().as_ref(), 10_000).is_ok());
}

#[test]
fn only_the_canonical_payload_is_accepted() {
    let l = list(1, &[("n-a", Denial::Removed), ("n-b", Denial::Revoked)]);
    let p = l.payload().unwrap();
    assert_eq!(DenyList::from_payload(&p).unwrap(), l);
    // Out of order ids.
    let swapped = DenyList {
        issued_at_ms: 1,
        nodes: vec![l.nodes[1].clone(), l.nodes[0].clone()],
    };
    let e = DenyList::from_payload(&swapped.payload().unwrap()).unwrap_err();
    assert_eq!(e.check(), "deny_list");
    for bad in [&b""[..], &[0xa0], &[0x80], &p[..p.len() - 1]] {
        assert_eq!(DenyList::from_payload(bad).unwrap_err().check(), "deny_list");
    }
    assert!(DenyList::new(1, vec![l.nodes[0].clone(), l.nodes[0].clone()]).is_err());
}

#[test]
fn an_agent_keeps_the_newest_list_across_restarts() {
    let k = key();
    let pk = k.public_key().as_ref().to_vec();
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("deny");
    let s = DenyState::open(&path, pk.clone()).unwrap();
    assert!(s.check("n-a").is_ok());
    let removed = list(2_000, &[("n-a", Denial::Removed)]).sign(&k).unwrap();
    assert!(s.offer(&removed, 10).unwrap());
    assert_eq!(s.check("n-a").unwrap_err().check(), "node_removed");
    // An older list (replayed from before the removal) does not take the node off.
    let older = list(1_000, &[]).sign(&k).unwrap();
    assert!(!s.offer(&older, 10).unwrap());
    assert_eq!(s.check("n-a").unwrap_err().check(), "node_removed");
    // A restart reads it back.
    drop(s);
    let s = DenyState::open(&path, pk.clone()).unwrap();
    assert_eq!(s.issued_at_ms(), 2_000);
    assert_eq!(s.check("n-a").unwrap_err().check(), "node_removed");
    // A newer list replaces it whole: n-a enrolled again, n-b revoked.
    let newer = list(3_000, &[("n-b", Denial::Revoked)]).sign(&k).unwrap();
    assert!(s.offer(&newer, 10).unwrap());
    assert!(s.check("n-a").is_ok());
    assert_eq!(s.check("n-b").unwrap_err().check(), "revoked");
    // A damaged file is refused at start, not read as "nobody denied".
    std::fs::write(&path, b"junk").unwrap();
    assert!(DenyState::open(&path, pk).is_err());
}
