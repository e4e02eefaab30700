use super::*;
use custody_formats::alg::HashAlg;

/// Real Compute Engine vTPM evidence (go-tpm-tools' COS 85 attestations:
/// testdata/gcp/PROVENANCE.md).
struct Files {
    ak_cert: Vec<u8>,
    ak: Vec<u8>,
    quote: Vec<u8>,
    sig: Vec<u8>,
    pcrs: Vec<u8>,
    event_log: Vec<u8>,
}

fn read(path: &str) -> Vec<u8> {
    std::fs::read(format!("{}/testdata/gcp/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn files(dir: &str, quote: usize) -> Files {
    let r = |f: &str| read(&format!("{dir}/{f}"));
    Files {
        ak_cert: r("ak_cert.der"),
        ak: r("ak_pub.pem"),
        quote: r(&format!("quote{quote}_msg.bin")),
        sig: r(&format!("quote{quote}_sig.tpmt_signature")),
        pcrs: r(&format!("quote{quote}_pcrs.txt")),
        event_log: r("event_log.bin"),
    }
}

/// Inside the AK certificate's validity (2021-08-31 .. 2051-08-24).
const AT: UnixTime = UnixTime(1_767_225_600); // 2026-01-01

/// The files as evidence, without the caller's AK and event log.
fn evidence<'a>(f: &'a Files, nonce: &'a [u8]) -> GcpEvidence<'a> {
    GcpEvidence {
        ak_cert: &f.ak_cert,
        ak: None,
        quote: &f.quote,
        signature: &f.sig,
        pcrs: &f.pcrs,
        nonce,
        event_log: None,
    }
}

fn run(f: &Files, nonce: &[u8], event_log: bool) -> Outcome<GcpClaims, GcpError> {
    GcpVerifier::builtin().unwrap().verify(
        GcpEvidence {
            ak: Some(&f.ak),
            event_log: event_log.then_some(f.event_log.as_slice()),
            ..evidence(f, nonce)
        },
        AT,
    )
}

fn failed(o: Outcome<GcpClaims, GcpError>) -> String {
    match o {
        Ok(_) => panic!("verified"),
        Err(r) => format!("{}: {}", r.error.check(), r.error),
    }
}

/// Both attestations, each of their three quotes (SHA-1, SHA-256, SHA-384 banks), are
/// accepted under the built-in Google root, and the certificate names the instance.
#[test]
fn every_shared_gce_quote_is_accepted() {
    for (dir, nonce) in [("cos85-nonce9009", vec![0x90, 0x09]), ("cos85-no-nonce", vec![])] {
        for (q, bank) in [(0, HashAlg::Sha1), (1, HashAlg::Sha256), (2, HashAlg::Sha384)] {
            let v = run(&files(dir, q), &nonce, false)
                .unwrap_or_else(|r| panic!("{dir} quote{q}: {}: {}", r.error.check(), r.error));
            let c = &v.claims;
            assert_eq!(c.tpm, "gce-vtpm");
            assert_eq!(c.quote.pcrs[&bank].len(), 24, "{dir} quote{q}");
            assert!(c.ak_root.contains("tpm_ek_v1_cloud_host_root"), "{}", c.ak_root);
            let i = &c.instance;
            assert_eq!(
                (
                    i.zone.as_str(),
                    i.region.as_str(),
                    i.project_id.as_str(),
                    i.instance_name.as_str()
                ),
                (
                    "us-central1-a",
                    "us-central1",
                    "google.com:wuale-gcp-testing",
                    "cos-test"
                )
            );
            assert_eq!(i.project_number, 0x1B5A475C69);
            assert_eq!(i.instance_id, 0x5E53E3FBBF8306C5);
            let s = i.security.as_ref().unwrap();
            assert!(s.is_production && !s.tpm_data_always_encrypted);
            assert_eq!(s.security_version, Some(0));
            let names: Vec<&str> = v.checks.iter().map(|c| c.name).collect();
            assert_eq!(
                &names[..4],
                ["ak_cert_chain", "ak_cert_validity", "instance", "ak"],
                "{names:?}"
            );
            assert!(names.contains(&"tpm_signature") && names.contains(&"tpm_pcr_digest"));
        }
    }
}

#[test]
fn the_event_log_is_replayed_against_the_quoted_pcrs() {
    let f = files("cos85-nonce9009", 1);
    match run(&f, &[0x90, 0x09], true) {
        Ok(v) => {
            assert!(v.checks.iter().any(|c| c.name == "tpm_event_log"));
            assert!(v.claims.quote.event_log.is_some());
        }
        Err(r) => panic!("{}: {}", r.error.check(), r.error),
    }
    // A changed PCR 0 no longer matches the log's replay (and the quote's digest).
    let mut f = files("cos85-nonce9009", 1);
    let text = String::from_utf8(f.pcrs.clone()).unwrap();
    let first = text.lines().next().unwrap().to_string();
    let changed = format!("0 {}", "11".repeat(32));
    f.pcrs = text.replacen(&first, &changed, 1).into_bytes();
    assert!(failed(run(&f, &[0x90, 0x09], true)).starts_with("tpm_"));
}

#[test]
fn a_wrong_nonce_fails_at_tpm_nonce() {
    let f = files("cos85-nonce9009", 1);
    assert!(failed(run(&f, &[0x90, 0x0a], false)).starts_with("tpm_nonce:"));
    let f = files("cos85-no-nonce", 1);
    assert!(failed(run(&f, &[0x90, 0x09], false)).starts_with("tpm_nonce:"));
}

#[test]
fn a_tampered_signature_or_pcr_is_refused() {
    let mut f = files("cos85-nonce9009", 1);
    let last = f.sig.len() - 1;
    f.sig[last] ^= 1;
    assert!(failed(run(&f, &[0x90, 0x09], false)).starts_with("tpm_signature:"));
    let mut f = files("cos85-nonce9009", 2);
    let text = String::from_utf8(f.pcrs.clone()).unwrap();
    f.pcrs = text.replacen("0 46ce", "0 56ce", 1).into_bytes();
    assert!(failed(run(&f, &[0x90, 0x09], false)).starts_with("tpm_pcr_digest:"));
}

/// The AK certificate vouches for one key: another AK, or another certificate, fails.
#[test]
fn a_swapped_ak_or_certificate_is_refused() {
    let mut f = files("cos85-nonce9009", 1);
    f.ak = read("../azure/milan-v1/ak_pub.pem");
    assert!(failed(run(&f, &[0x90, 0x09], false)).starts_with("ak:"));
    // openpcc's AK certificate (another VM, under the EK/AK CA): its chain is good, its
    // key did not sign this quote.
    let mut f = files("cos85-nonce9009", 1);
    f.ak_cert = read("openpcc-ak-cert/ak_cert.pem");
    let o = GcpVerifier::builtin()
        .unwrap()
        .verify(evidence(&f, &[0x90, 0x09]), AT);
    let e = failed(o);
    assert!(e.starts_with("tpm_"), "{e}");
}

/// openpcc's 2025 certificate chains through the 2024 `EK/AK CA Intermediate`, which
/// shares its subject with the 2022 one: the verifier tries both.
#[test]
fn the_2024_intermediate_is_found_among_same_named_ones() {
    let v = GcpVerifier::builtin().unwrap();
    let leaf = one_cert(&read("openpcc-ak-cert/ak_cert.pem")).unwrap();
    let (_, cert) = X509Certificate::from_der(&leaf).unwrap();
    let chain = v.chain(&leaf, cert.issuer().as_raw(), AT).unwrap();
    assert!(chain.anchor.contains("EK/AK CA Root"), "{}", chain.anchor);
    let ext = cert
        .extensions()
        .iter()
        .find(|e| e.oid.to_id_string() == GCE_INSTANCE_OID)
        .unwrap();
    let i = parse_gce_instance(ext.value).unwrap();
    assert_eq!((i.zone.as_str(), i.region.as_str()), ("us-west1-b", "us-west1"));
    assert!(i.security.unwrap().tpm_data_always_encrypted);
}

#[test]
fn outside_the_certificate_window_or_under_another_root_fails() {
    let f = files("cos85-nonce9009", 1);
    let o = GcpVerifier::builtin()
        .unwrap()
        .verify(evidence(&f, &[0x90, 0x09]), UnixTime(1_600_000_000)); // 2020
    assert!(failed(o).starts_with("ak_cert_validity:"));
    // Only the AMD Milan ARK trusted: Google's chain ends nowhere.
    let amd = std::fs::read(format!("{}/roots/amd/milan-ark.pem", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let o = GcpVerifier::with_roots(&amd, None)
        .unwrap()
        .verify(evidence(&f, &[0x90, 0x09]), AT);
    assert!(failed(o).starts_with("ak_cert_chain:"));
}

/// The instance extension parser: every truncation and a few wrong shapes fail with a
/// message, never a panic.
#[test]
fn malformed_instance_extensions_are_refused() {
    let leaf = read("cos85-nonce9009/ak_cert.der");
    let (_, cert) = X509Certificate::from_der(&leaf).unwrap();
    let ext = cert
        .extensions()
        .iter()
        .find(|e| e.oid.to_id_string() == GCE_INSTANCE_OID)
        .unwrap()
        .value
        .to_vec();
    parse_gce_instance(&ext).unwrap();
    for cut in 0..ext.len() {
        assert!(parse_gce_instance(&ext[..cut]).is_err(), "cut {cut}");
    }
    // The zone as an INTEGER.
    let mut bad = ext.clone();
    bad[2] = 0x02;
    assert!(parse_gce_instance(&bad).unwrap_err().contains("zone"));
    // A negative project number.
    let mut bad = ext.clone();
    let at = 2 + 2 + usize::from(ext[3]) + 2;
    bad[at] |= 0x80;
    assert!(parse_gce_instance(&bad).unwrap_err().contains("project number"));
}
