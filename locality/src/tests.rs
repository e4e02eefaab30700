//! Unit tests: byte-exact wire and statement vectors (testdata/), signature outcomes,
//! distance arithmetic, and the responder against the measurement on loopback.

use crate::net::{measure, serve, serve_with, Limits, Signer};
use crate::statement::SignedEnvelope;
use crate::wire::{landmark_hash, LABEL, SIGNED_LEN};
use crate::*;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SESSION_SEED: [u8; 32] = [7; 32];
const LANDMARK_SEED: [u8; 32] = [1; 32];
const PARIS: LatLon = LatLon {
    lat: 48.8566,
    lon: 2.3522,
};
const FRANKFURT: LatLon = LatLon {
    lat: 50.1109,
    lon: 8.6821,
};
const ASHBURN: LatLon = LatLon {
    lat: 39.0438,
    lon: -77.4874,
};

fn vector(name: &str) -> Vec<u8> {
    let path = format!("{}/testdata/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    hex::decode(text.trim()).unwrap()
}

fn session() -> Ed25519KeyPair {
    Ed25519KeyPair::from_seed_unchecked(&SESSION_SEED).unwrap()
}

fn session_pub() -> [u8; 32] {
    session().public_key().as_ref().try_into().unwrap()
}

fn fixed_challenge() -> Challenge {
    let mut c = [0u8; 32];
    for (i, b) in c.iter_mut().enumerate() {
        *b = i as u8;
    }
    Challenge::new("paris-1", c)
}

fn statement() -> LandmarkStatement {
    LandmarkStatement {
        landmark: "paris-1".into(),
        lat: PARIS.lat,
        lon: PARIS.lon,
        node: "gpu-node-7".into(),
        session_ed25519: session_pub(),
        rtt_us: 1234,
        probes: 10,
        bound_km: 123.4,
        measured_at: 1_790_000_000,
    }
}

fn landmark() -> LandmarkKey {
    LandmarkKey::from_seed(&LANDMARK_SEED).unwrap()
}

#[test]
fn challenge_layout_is_byte_exact() {
    let c = fixed_challenge();
    let bytes = c.encode();
    // Built by hand from the documented layout.
    let mut expected = b"CLOC\x01".to_vec();
    expected.extend(0u8..32);
    expected.extend(landmark_hash("paris-1"));
    assert_eq!(bytes.len(), CHALLENGE_LEN);
    assert_eq!(CHALLENGE_LEN, 69);
    assert_eq!(bytes.to_vec(), expected);
    assert_eq!(bytes.to_vec(), vector("challenge.hex"));
    assert_eq!(Challenge::decode(&bytes).unwrap(), c);

    // Exact length only, right magic and version only.
    for len in [0, 1, 68, 70, 138] {
        let mut b = bytes.to_vec();
        b.resize(len, 0);
        let e = Challenge::decode(&b).unwrap_err();
        assert_eq!(e.check(), "locality_format", "{len}: {e}");
    }
    let mut bad = bytes;
    bad[0] = b'X';
    assert_eq!(Challenge::decode(&bad).unwrap_err().check(), "locality_format");
    let mut bad = bytes;
    bad[4] = 2;
    assert!(Challenge::decode(&bad)
        .unwrap_err()
        .to_string()
        .contains("version 2"));
}

#[test]
fn response_layout_and_signature() {
    let c = fixed_challenge();
    let pk = session_pub();
    let msg = c.signed_message(&pk);
    assert_eq!(SIGNED_LEN, 115);
    let mut expected = LABEL.to_vec();
    expected.extend(landmark_hash("paris-1"));
    expected.extend(0u8..32);
    expected.extend(pk);
    assert_eq!(msg.to_vec(), expected);

    // Ed25519 is deterministic: the committed vector is this key's signature.
    let sig: [u8; 64] = session().sign(&msg).as_ref().try_into().unwrap();
    assert_eq!(sig.to_vec(), vector("response.hex"));
    let r = Response::decode(&sig).unwrap();
    assert_eq!(r.encode(), sig);
    r.verify(&c, &pk).unwrap();
    // Independently: the plain Ed25519 verification of the documented message.
    UnparsedPublicKey::new(&ED25519, pk)
        .verify(&expected, &sig)
        .unwrap();

    // Another challenge, another landmark, another key, a flipped bit: all refused.
    let mut other = c;
    other.challenge[0] ^= 1;
    assert_eq!(r.verify(&other, &pk).unwrap_err().check(), "locality_signature");
    let paris2 = Challenge::new("paris-2", c.challenge);
    assert_eq!(r.verify(&paris2, &pk).unwrap_err().check(), "locality_signature");
    let wrong: [u8; 32] = Ed25519KeyPair::from_seed_unchecked(&[8; 32])
        .unwrap()
        .public_key()
        .as_ref()
        .try_into()
        .unwrap();
    assert_eq!(r.verify(&c, &wrong).unwrap_err().check(), "locality_signature");
    let mut flipped = sig;
    flipped[10] ^= 0x40;
    assert_eq!(
        Response(flipped).verify(&c, &pk).unwrap_err().check(),
        "locality_signature"
    );
    for len in [0, 63, 65, 128] {
        assert_eq!(
            Response::decode(&vec![0; len]).unwrap_err().check(),
            "locality_format"
        );
    }
}

#[test]
fn statement_vector_and_verification() {
    let key = landmark();
    let trusted = [key.public_key()];
    let pk = session_pub();
    let now = 1_790_000_100;
    let signed = statement().sign(&key).unwrap();
    assert_eq!(signed, vector("statement.hex"));
    let env = SignedEnvelope::decode(&signed).unwrap();
    assert_eq!(env.landmark_key, key.public_key());
    assert_eq!(LandmarkStatement::decode(&env.statement).unwrap(), statement());

    let s = LandmarkStatement::verify(&signed, &trusted, &pk, now, 300).unwrap();
    assert_eq!(s, statement());

    // Signed by a landmark that is not trusted.
    let stranger = LandmarkKey::from_seed(&[2; 32]).unwrap();
    let other = statement().sign(&stranger).unwrap();
    let e = LandmarkStatement::verify(&other, &trusted, &pk, now, 300).unwrap_err();
    assert_eq!(e.check(), "locality_landmark", "{e}");
    // Claims a trusted key but was signed by another.
    let mut env2 = SignedEnvelope::decode(&other).unwrap();
    env2.landmark_key = key.public_key();
    let forged = envelope(&env2);
    let e = LandmarkStatement::verify(&forged, &trusted, &pk, now, 300).unwrap_err();
    assert_eq!(e.check(), "locality_signature", "{e}");
    // Any byte of the statement changed: the signature no longer covers it.
    let mut env3 = env.clone();
    let at = env3.statement.len() - 3;
    env3.statement[at] ^= 1;
    let e = LandmarkStatement::verify(&envelope(&env3), &trusted, &pk, now, 300).unwrap_err();
    assert_eq!(e.check(), "locality_signature", "{e}");
    // Another node's session key.
    let e = LandmarkStatement::verify(&signed, &trusted, &[9; 32], now, 300).unwrap_err();
    assert_eq!(e.check(), "locality_session_key", "{e}");
    // Too old, and too far in the future.
    let e = LandmarkStatement::verify(&signed, &trusted, &pk, now, 99).unwrap_err();
    assert_eq!(e.check(), "locality_stale", "{e}");
    LandmarkStatement::verify(&signed, &trusted, &pk, now, 100).unwrap();
    let e = LandmarkStatement::verify(&signed, &trusted, &pk, 1_790_000_000 - 61, 300).unwrap_err();
    assert_eq!(e.check(), "locality_stale", "{e}");
    // Truncated, extended, empty.
    for b in [
        &signed[..signed.len() - 1],
        &[signed.as_slice(), &[0]].concat(),
        &[][..],
    ] {
        let e = LandmarkStatement::verify(b, &trusted, &pk, now, 300).unwrap_err();
        assert_eq!(e.check(), "locality_format", "{e}");
    }
    // Wrong key and signature lengths in the envelope.
    let short_key = ciborium_array(&[&env.statement, &[0; 31], &env.signature]);
    assert_eq!(
        SignedEnvelope::decode(&short_key).unwrap_err().check(),
        "locality_format"
    );
    let short_sig = ciborium_array(&[&env.statement, &env.landmark_key, &[0; 63]]);
    assert_eq!(
        SignedEnvelope::decode(&short_sig).unwrap_err().check(),
        "locality_format"
    );
}

fn ciborium_array(items: &[&[u8]]) -> Vec<u8> {
    let v = ciborium::Value::Array(items.iter().map(|b| ciborium::Value::Bytes(b.to_vec())).collect());
    let mut out = Vec::new();
    ciborium::into_writer(&v, &mut out).unwrap();
    out
}

fn envelope(e: &SignedEnvelope) -> Vec<u8> {
    ciborium_array(&[&e.statement, &e.landmark_key, &e.signature])
}

#[test]
fn statement_fields_are_strict() {
    let key = landmark();
    // A bound larger than the RTT allows, a bad position, no probes: refused at signing.
    for s in [
        LandmarkStatement {
            bound_km: 123.5,
            ..statement()
        },
        LandmarkStatement {
            bound_km: -1.0,
            ..statement()
        },
        LandmarkStatement {
            bound_km: f64::NAN,
            ..statement()
        },
        LandmarkStatement {
            lat: 91.0,
            ..statement()
        },
        LandmarkStatement {
            lon: f64::INFINITY,
            ..statement()
        },
        LandmarkStatement {
            probes: 0,
            ..statement()
        },
        LandmarkStatement {
            landmark: String::new(),
            ..statement()
        },
    ] {
        assert_eq!(s.sign(&key).unwrap_err().check(), "locality_format", "{s:?}");
    }
    // The exact bound the RTT allows is accepted.
    let exact = LandmarkStatement {
        bound_km: bound_km(Duration::from_micros(1234), Duration::ZERO),
        ..statement()
    };
    exact.sign(&key).unwrap();

    // Decoding: unknown, duplicate and missing fields, wrong types.
    use ciborium::Value;
    let good = statement().encode().unwrap();
    let Value::Map(entries) = ciborium::from_reader::<Value, _>(good.as_slice()).unwrap() else {
        panic!()
    };
    let enc = |m: Vec<(Value, Value)>| {
        let mut out = Vec::new();
        ciborium::into_writer(&Value::Map(m), &mut out).unwrap();
        out
    };
    let mut dup = entries.clone();
    dup[1] = (Value::Text("landmark".into()), Value::Text("x".into()));
    let mut unknown = entries.clone();
    unknown[1].0 = Value::Text("latitude".into());
    let mut missing = entries.clone();
    missing.pop();
    let mut wrong_type = entries.clone();
    wrong_type[5].1 = Value::Text("1234".into());
    let mut short_key = entries.clone();
    short_key[4].1 = Value::Bytes(vec![0; 31]);
    let mut negative = entries.clone();
    negative[6].1 = Value::Integer((-1).into());
    for (name, m) in [
        ("dup", dup),
        ("unknown", unknown),
        ("missing", missing),
        ("wrong_type", wrong_type),
        ("short_key", short_key),
        ("negative", negative),
    ] {
        let e = LandmarkStatement::decode(&enc(m)).unwrap_err();
        assert_eq!(e.check(), "locality_format", "{name}: {e}");
    }
    assert_eq!(LandmarkStatement::decode(&enc(entries)).unwrap(), statement());
}

#[test]
fn bound_arithmetic() {
    let ms = Duration::from_millis;
    assert_eq!(FIBRE_KM_PER_MS, 200.0);
    assert_eq!(bound_km(ms(1), Duration::ZERO), 100.0);
    assert_eq!(bound_km(ms(10), Duration::ZERO), 1000.0);
    assert_eq!(bound_km(ms(10), ms(2)), 800.0);
    // 20 ms of added delay alone is 2,000 km.
    assert_eq!(bound_km(ms(20), Duration::ZERO), 2000.0);
    // Never negative.
    assert_eq!(bound_km(ms(1), ms(5)), 0.0);
    assert_eq!(bound_km(Duration::ZERO, Duration::ZERO), 0.0);
    // 100 us is 10 km.
    assert!((bound_km(Duration::from_micros(100), Duration::ZERO) - 10.0).abs() < 1e-9);
}

/// A bound that excludes the registered site contradicts it; one that includes it (or
/// misses it by less than the tolerance) does not.
#[test]
fn a_bound_that_excludes_the_registered_site_is_a_contradiction() {
    let pf = haversine_km(PARIS, FRANKFURT);
    let near = proof("paris", PARIS, 8.0, KeyProtection::Process);
    let far = proof("paris", PARIS, pf + 10.0, KeyProtection::Process);
    let short = proof("paris", PARIS, pf - 30.0, KeyProtection::Process);
    let all = [near.clone(), far.clone(), short.clone()];
    let c = contradictions(&all, FRANKFURT, 50.0);
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].0, &near);
    assert!((c[0].1 - pf).abs() < 1e-9);
    assert!(contradictions(&[far], FRANKFURT, 0.0).is_empty());
    assert_eq!(contradictions(&[short], FRANKFURT, 0.0).len(), 1);
    assert!(contradictions(&[near], PARIS, 0.0).is_empty());
}

/// An added delay answers later, so the measured bound only grows.
#[tokio::test]
async fn an_added_delay_makes_the_node_look_farther() {
    let limits = Limits {
        added_delay: Duration::from_millis(5),
        ..Limits::default()
    };
    let (addr, _stop) = responder(session_signer(), limits).await;
    let m = measure(addr, "l", &session_pub(), 3, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(m.rtt_min >= Duration::from_millis(5), "{m:?}");
}

#[test]
fn haversine_distances() {
    let pf = haversine_km(PARIS, FRANKFURT);
    assert!((pf - 479.0).abs() < 5.0, "Paris-Frankfurt {pf}");
    let pa = haversine_km(PARIS, ASHBURN);
    assert!((pa - 6_190.0).abs() < 60.0, "Paris-Ashburn {pa}");
    assert_eq!(haversine_km(PARIS, PARIS), 0.0);
    assert!((haversine_km(FRANKFURT, PARIS) - pf).abs() < 1e-9);
    // Antipodes: half the circumference, no NaN from rounding past 1.
    let half = haversine_km(LatLon::new(0.0, 0.0), LatLon::new(0.0, 180.0));
    assert!((half - std::f64::consts::PI * 6371.0088).abs() < 1e-6, "{half}");
}

fn proof(landmark: &str, at: LatLon, bound: f64, kp: KeyProtection) -> Proof {
    Proof {
        landmark: landmark.into(),
        lat: at.lat,
        lon: at.lon,
        rtt_ms: bound / 100.0,
        bound_km: bound,
        key_protection: kp,
        weak: kp.weak(),
    }
}

#[test]
fn upper_bounds_and_intersection() {
    let proofs = vec![
        proof("paris-1", PARIS, 100.0, KeyProtection::Cvm),
        proof("fra-1", FRANKFURT, 500.0, KeyProtection::Cvm),
    ];
    let sites = vec![
        ("paris-dc".to_string(), PARIS),
        ("fra-dc".to_string(), FRANKFURT),
        ("iad-dc".to_string(), ASHBURN),
    ];
    let up = upper_bounds(&proofs, &sites);
    assert_eq!(up["paris-dc"], 100.0);
    // Through Paris (479 + 100) beats Frankfurt's own disk (0 + 500)? No: 500 < 579.
    assert_eq!(up["fra-dc"], 500.0);
    let iad = haversine_km(PARIS, ASHBURN) + 100.0;
    assert!((up["iad-dc"] - iad).abs() < 1e-9);
    assert!(up["iad-dc"] > 6_000.0);

    // Inside both disks: Paris. Inside Frankfurt's only: Frankfurt.
    assert!(consistent(&proofs, PARIS));
    assert!(!consistent(&proofs, FRANKFURT));
    assert!(!consistent(&proofs, ASHBURN));
    // Nothing proven: no bounds and no consistency.
    assert!(upper_bounds(&[], &sites).is_empty());
    assert!(!consistent(&[], PARIS));
    assert!(!consistent(&proofs, LatLon::new(f64::NAN, 0.0)));
}

#[test]
fn proof_and_locality_json_shape() {
    let s = statement();
    let p = Proof::from_statement(&s, KeyProtection::Process);
    assert_eq!(p.rtt_ms, 1.234);
    let json = serde_json::to_value(&p).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "landmark": "paris-1", "lat": 48.8566, "lon": 2.3522, "rtt_ms": 1.234,
            "bound_km": 123.4, "key_protection": "process", "weak": true
        })
    );
    let sites = vec![("paris-dc".to_string(), PARIS)];
    let weak = Locality::new(vec![p.clone()], &sites);
    assert!(!weak.strong);
    let strong = Locality::new(vec![Proof::from_statement(&s, KeyProtection::Cvm)], &sites);
    assert!(strong.strong);
    let json = serde_json::to_value(&strong).unwrap();
    assert_eq!(json["upper_km"], serde_json::json!({"paris-dc": 123.4}));
    assert_eq!(json["proofs"][0]["key_protection"], "cvm");
    assert_eq!(json["proofs"][0]["weak"], false);
    assert_eq!(json["strong"], true);
    assert_eq!(
        serde_json::to_value(KeyProtection::Tpm).unwrap(),
        serde_json::json!("tpm")
    );
    assert!(!KeyProtection::Tpm.weak() && !KeyProtection::Cvm.weak());
    assert!(!Locality::new(vec![], &sites).strong);
    // Round trip, and unknown fields refused.
    let back: Locality = serde_json::from_value(json).unwrap();
    assert_eq!(back, strong);
    let mut extra = serde_json::to_value(&p).unwrap();
    extra["country"] = "FR".into();
    assert!(serde_json::from_value::<Proof>(extra).is_err());
}

fn session_signer() -> Signer {
    let key = Arc::new(session());
    Arc::new(move |m: &[u8]| key.sign(m).as_ref().try_into().unwrap())
}

async fn responder(
    signer: Signer,
    limits: Limits,
) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve_with(l, signer, session_pub(), limits, async {
        let _ = rx.await;
    }));
    (addr, tx)
}

#[tokio::test]
async fn loopback_measurement() {
    let (addr, stop) = responder(session_signer(), Limits::default()).await;
    let m = measure(addr, "paris-1", &session_pub(), 20, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(m.probes, 20);
    assert!(m.rtt_min <= m.rtt_max);
    // Loopback: well under a millisecond, so well under 100 km.
    let s = m.statement("paris-1", PARIS, "n", session_pub(), Duration::ZERO, 1);
    assert!(s.bound_km < 100.0, "{s:?}");
    assert!(s.rtt_us >= 1 && s.rtt_us as u128 * 1000 >= m.rtt_min.as_nanos());
    s.validate().unwrap();

    // The node's key is not the one expected: the whole measurement fails.
    let e = measure(addr, "paris-1", &[3; 32], 5, Duration::from_secs(10))
        .await
        .unwrap_err();
    assert_eq!(e.check(), "locality_signature", "{e}");
    // Probe counts out of range.
    for n in [0, net::MAX_PROBES + 1] {
        let e = measure(addr, "paris-1", &session_pub(), n, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert_eq!(e.check(), "locality_format");
    }
    // A malformed challenge is not answered: the connection closes.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut frame = fixed_challenge().encode();
    frame[0] = b'X';
    s.write_all(&frame).await.unwrap();
    let mut buf = [0u8; 64];
    assert_eq!(s.read(&mut buf).await.unwrap(), 0);
    stop.send(()).unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let e = measure(addr, "paris-1", &session_pub(), 1, Duration::from_secs(2))
        .await
        .unwrap_err();
    assert_eq!(e.check(), "locality_network", "{e}");
}

#[tokio::test]
async fn a_node_signing_anything_else_fails() {
    // Signs with the right key but not the documented message (e.g. the raw challenge).
    let key = Arc::new(session());
    let sloppy: Signer = Arc::new(move |m: &[u8]| key.sign(&m[LABEL.len()..]).as_ref().try_into().unwrap());
    let (addr, _stop) = responder(sloppy, Limits::default()).await;
    let e = measure(addr, "paris-1", &session_pub(), 3, Duration::from_secs(10))
        .await
        .unwrap_err();
    assert_eq!(e.check(), "locality_signature");
}

#[tokio::test]
async fn responder_limits() {
    let limits = Limits {
        max_connections: 1,
        max_connection_time: Duration::from_secs(5),
        idle_timeout: Duration::from_millis(200),
        max_probes: 3,
        added_delay: Duration::ZERO,
    };
    let (addr, _stop) = responder(session_signer(), limits).await;
    // At most `max_probes` per connection.
    let e = measure(addr, "l", &session_pub(), 4, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert_eq!(e.check(), "locality_network", "{e}");
    tokio::time::sleep(Duration::from_millis(50)).await;
    // One connection at a time: a second is closed while the first is held open.
    let held = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let e = measure(addr, "l", &session_pub(), 1, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert_eq!(e.check(), "locality_network", "{e}");
    // The idle timeout frees the slot.
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    measure(addr, "l", &session_pub(), 3, Duration::from_secs(5))
        .await
        .unwrap();
}

#[tokio::test]
async fn serve_stops_on_shutdown() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    tokio::time::timeout(
        Duration::from_secs(5),
        serve(l, session_signer(), session_pub(), async {}),
    )
    .await
    .unwrap();
}

/// Prints the vectors (run with `--ignored --nocapture` to regenerate testdata/).
#[test]
#[ignore]
fn print_vectors() {
    let c = fixed_challenge();
    println!("challenge {}", hex::encode(c.encode()));
    let sig = session().sign(&c.signed_message(&session_pub()));
    println!("response {}", hex::encode(sig.as_ref()));
    println!(
        "statement {}",
        hex::encode(statement().sign(&landmark()).unwrap())
    );
}

#[test]
fn pinned_landmark_acceptance_and_rejection() {
    let key = landmark();
    let pinned = PinnedLandmark {
        id: "paris-1".into(),
        key: key.public_key(),
    };
    let pk = session_pub();
    let now = 1_790_000_100;
    let signed = statement().sign(&key).unwrap();
    let ok = LandmarkStatement::verify_pinned(&signed, &pinned, "gpu-node-7", &pk, now, 300).unwrap();
    assert_eq!(ok, statement());

    let check = |bytes: &[u8], pinned: &PinnedLandmark, node: &str, session: &[u8; 32], now: i64| {
        LandmarkStatement::verify_pinned(bytes, pinned, node, session, now, 300)
            .unwrap_err()
            .check()
    };
    // Signed by a key that is not the one pinned for this id (even a trusted landmark's
    // key pinned under another id does not count here).
    let stranger = LandmarkKey::from_seed(&[2; 32]).unwrap();
    let by_stranger = statement().sign(&stranger).unwrap();
    assert_eq!(
        check(&by_stranger, &pinned, "gpu-node-7", &pk, now),
        "locality_landmark"
    );
    // The pinned key, but the statement names another landmark id.
    let mut renamed = statement();
    renamed.landmark = "fra-1".into();
    let renamed = renamed.sign(&key).unwrap();
    assert_eq!(
        check(&renamed, &pinned, "gpu-node-7", &pk, now),
        "locality_landmark"
    );
    // About another session key.
    assert_eq!(
        check(&signed, &pinned, "gpu-node-7", &[9; 32], now),
        "locality_session_key"
    );
    // Stale: measured 301 s before.
    assert_eq!(
        check(&signed, &pinned, "gpu-node-7", &pk, 1_790_000_301),
        "locality_stale"
    );
    // For another node (same session key).
    assert_eq!(check(&signed, &pinned, "gpu-node-8", &pk, now), "locality_node");
    // Tampered.
    let mut env = SignedEnvelope::decode(&signed).unwrap();
    let at = env.statement.len() - 3;
    env.statement[at] ^= 1;
    assert_eq!(
        check(&envelope(&env), &pinned, "gpu-node-7", &pk, now),
        "locality_signature"
    );
}

mod remote_service {
    use super::*;
    use crate::remote::*;

    #[test]
    fn request_and_response_parsing() {
        let good = MeasureRequest::new("node-1", "10.0.0.1:7000", &session_pub());
        let body = serde_json::to_vec(&good).unwrap();
        let c = MeasureRequest::parse(&body).unwrap();
        assert_eq!(c.session_key, session_pub());
        assert_eq!(c.endpoint, "10.0.0.1:7000");
        let mut bad = vec![
            b"{}".to_vec(),
            b"not json".to_vec(),
            vec![b' '; MAX_REQUEST_LEN + 1],
            br#"{"node_id":"n","endpoint":"h:1","session_key":"00","extra":1}"#.to_vec(),
        ];
        for (endpoint, key) in [
            ("10.0.0.1", hex::encode(session_pub())),
            ("10.0.0.1:0", hex::encode(session_pub())),
            ("10.0.0.1:99999", hex::encode(session_pub())),
            (":7000", hex::encode(session_pub())),
            ("a b:7000", hex::encode(session_pub())),
            ("h:7000", hex::encode([1u8; 31])),
            ("h:7000", hex::encode([1u8; 33])),
            ("h:7000", "zz".repeat(32)),
        ] {
            let r = MeasureRequest {
                node_id: "n".into(),
                endpoint: endpoint.into(),
                session_key: key,
            };
            bad.push(serde_json::to_vec(&r).unwrap());
        }
        let long_node = MeasureRequest::new(&"n".repeat(257), "h:1", &session_pub());
        bad.push(serde_json::to_vec(&long_node).unwrap());
        for b in bad {
            let e = MeasureRequest::parse(&b).unwrap_err();
            assert_eq!(e.check(), "landmark_request", "{}", String::from_utf8_lossy(&b));
        }
        // Responses: the hex statement, nothing else.
        let ok = br#"{"landmark":"x","signed":"a0","rtt_max_us":1}"#;
        assert_eq!(MeasureResponse::parse(ok).unwrap(), vec![0xa0]);
        for b in [
            &br#"{"landmark":"x","signed":"zz","rtt_max_us":1}"#[..],
            br#"{"landmark":"x","signed":"a0"}"#,
            br#"{"landmark":"x","signed":"a0","rtt_max_us":1,"more":2}"#,
            b"[]",
        ] {
            assert_eq!(
                MeasureResponse::parse(b).unwrap_err().check(),
                "landmark_response"
            );
        }
        // Landmark URLs.
        assert_eq!(
            landmark_authority("http://10.0.0.2:8450").unwrap(),
            "10.0.0.2:8450"
        );
        assert_eq!(
            landmark_authority("http://lm.example:80/").unwrap(),
            "lm.example:80"
        );
        for u in [
            "https://lm:1",
            "http://lm",
            "http://lm:1/v1",
            "http://user@lm:1",
            "lm:1",
            "http://lm:0",
        ] {
            assert_eq!(
                landmark_authority(u).unwrap_err().check(),
                "landmark_request",
                "{u}"
            );
        }
    }

    async fn landmark_service(
        probes: u32,
        max_measurements: usize,
    ) -> (String, tokio::sync::oneshot::Sender<()>) {
        let mut svc = LandmarkService::new("fra-1", FRANKFURT, landmark(), probes).unwrap();
        svc.max_measurements = max_measurements;
        svc.measure_timeout = Duration::from_secs(3);
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(crate::remote::serve(l, Arc::new(svc), async {
            let _ = rx.await;
        }));
        (url, tx)
    }

    #[tokio::test]
    async fn a_remote_landmark_measures_and_signs() {
        let (node, _stop_node) = responder(session_signer(), Limits::default()).await;
        let (url, stop) = landmark_service(5, 4).await;
        let pinned = PinnedLandmark {
            id: "fra-1".into(),
            key: landmark().public_key(),
        };
        let req = MeasureRequest::new("node-1", &node.to_string(), &session_pub());
        let signed = request_measurement(&url, &req, Duration::from_secs(5))
            .await
            .unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let s =
            LandmarkStatement::verify_pinned(&signed, &pinned, "node-1", &session_pub(), now, 60).unwrap();
        assert_eq!(s.probes, 5);
        assert_eq!((s.lat, s.lon), (FRANKFURT.lat, FRANKFURT.lon));
        assert!(s.bound_km < 100.0, "{s:?}");
        // The same statement for another node does not count.
        let e = LandmarkStatement::verify_pinned(&signed, &pinned, "node-2", &session_pub(), now, 60)
            .unwrap_err();
        assert_eq!(e.check(), "locality_node");

        // Asked about a key the node does not hold: the landmark's measurement fails and
        // the verifier sees the landmark's check.
        let wrong = MeasureRequest::new("node-1", &node.to_string(), &[3; 32]);
        let e = request_measurement(&url, &wrong, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(e.check(), "landmark_refused", "{e}");
        assert!(e.to_string().contains("locality_signature"), "{e}");
        // Nothing listens at the node's endpoint.
        let gone = MeasureRequest::new("node-1", "127.0.0.1:1", &session_pub());
        let e = request_measurement(&url, &gone, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("locality_network"), "{e}");
        // A malformed request is refused by name.
        let mut bad = req.clone();
        bad.endpoint = "nowhere".into();
        let e = request_measurement(&url, &bad, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("landmark_request"), "{e}");

        // The landmark stopped: unreachable.
        stop.send(()).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let e = request_measurement(&url, &req, Duration::from_secs(2))
            .await
            .unwrap_err();
        assert_eq!(e.check(), "landmark_unreachable", "{e}");
    }

    #[tokio::test]
    async fn a_silent_landmark_times_out_and_a_busy_one_says_so() {
        // Accepts and never answers.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let _hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = l.accept().await {
                held.push(s);
            }
        });
        let req = MeasureRequest::new("node-1", "127.0.0.1:9", &session_pub());
        let started = std::time::Instant::now();
        let e = request_measurement(&url, &req, Duration::from_millis(300))
            .await
            .unwrap_err();
        assert_eq!(e.check(), "landmark_unreachable", "{e}");
        assert!(started.elapsed() < Duration::from_secs(2));

        // A landmark allowing no measurement at all answers `landmark_busy`.
        let (url, _stop) = landmark_service(1, 0).await;
        let e = request_measurement(&url, &req, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("landmark_busy"), "{e}");
        // Wrong method and path are refused with a body.
        let (status, body) = raw(
            &url,
            "GET /v1/measure HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(status.contains("405"), "{status}");
        assert!(body.contains("landmark_request"), "{body}");
        let (status, _) = raw(&url, "GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
        assert!(status.contains("404"), "{status}");
        let (status, body) = raw(
            &url,
            "GET /v1/landmark HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(status.contains("200"), "{status}");
        assert!(body.contains(&hex::encode(landmark().public_key())), "{body}");
    }

    async fn raw(url: &str, request: &str) -> (String, String) {
        let mut s = tokio::net::TcpStream::connect(url.strip_prefix("http://").unwrap())
            .await
            .unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        let text = String::from_utf8_lossy(&out).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        (head.lines().next().unwrap().to_owned(), body.to_owned())
    }
}
