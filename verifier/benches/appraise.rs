//! `cargo bench -p custody-verifier --bench appraise`: full offline appraisal of real
//! evidence, one id per evidence kind and path. `bench/appraise.sh` runs this beside the
//! Keylime and NVIDIA anchors and prints the ratios.
//!
//! - `tpm/quote` (AK seen before, its parsed key cached) and `tpm/quote-cold` (fresh
//!   verifier): parse + RSASSA-SHA256 signature (RSA-2048 AK given as SPKI PEM) + nonce +
//!   PCR selection + pcrDigest of a swtpm quote over sha256:0,1,2,3,7,16 (what
//!   `tpm2_quote -m/-s/-o` wrote; Keylime's anchor quote covers one PCR).
//! - `snp/milan-cold`: VCEK -> ASK -> built-in Milan ARK (two RSA-4096 PSS verifies), the
//!   P-384 report signature, TCB and policy. SNP chains are not cached.
//! - `nvgpu/hopper-cold`: a fresh verifier (empty chain cache) per iteration: 4 P-384
//!   certificate signatures to the pinned root + the report signature.
//! - `nvgpu/hopper-warm`: the same chain bytes seen before: validated chain from the cache
//!   (time window re-checked), then the report signature.
//! - `tdx/quote-cold` and `tdx/quote-warm`: a DCAP v4 quote with its Intel PCS collateral,
//!   from a verifier that remembers nothing, and from one that has seen the chain and
//!   the collateral before (see `tdx`).
//! - `floor/p384-verify`: one ECDSA P-384/SHA-384 verify with aws-lc-rs, the physical floor;
//!   `floor/p256-verify`: one ECDSA P-256 verify (a TDX quote's floor is two).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use custody_formats::spdm;
use custody_verifier::nvgpu::{NvgpuEvidence, NvgpuVerifier};
use custody_verifier::snp::{SnpEvidence, SnpVerifier};
use custody_verifier::tpm::{TpmEvidence, TpmVerifier};
use custody_verifier::x509::split_certs;
use custody_verifier::{EvidenceVerifier, UnixTime};
use std::hint::black_box;

const TD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata");
/// 2025-06-01T00:00:00Z: inside every vector's certificate validity.
const AT: UnixTime = UnixTime(1_748_736_000);
const HOPPER_NONCE: &str = "27a328247bf7935c993341cf587be6f05986ccce4fe7ba2c54100bd616a58f66";

fn read(p: &str) -> Vec<u8> {
    std::fs::read(format!("{TD}/{p}")).unwrap()
}

fn hex_file(p: &str) -> Vec<u8> {
    let s: String = String::from_utf8(read(p))
        .unwrap()
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    hex::decode(s).unwrap()
}

fn tpm(c: &mut Criterion) {
    let fx = |n: &str| std::fs::read(format!("{TD}/../../formats/testdata/tpm/{n}")).unwrap();
    let (quote, sig, ak, pcrs) = (
        fx("rsa-quote.bin"),
        fx("rsa-sig.bin"),
        fx("ak-rsa.pem"),
        fx("rsa-pcrs.bin"),
    );
    let nonce = hex::decode(String::from_utf8(fx("nonce.hex")).unwrap().trim()).unwrap();
    let ev = TpmEvidence {
        quote: &quote,
        signature: &sig,
        ak: &ak,
        pcrs: &pcrs,
        nonce: &nonce,
        event_log: None,
    };
    let v = TpmVerifier::new();
    assert!(v.verify(ev, AT).is_ok(), "TPM fixture must verify");
    let mut g = c.benchmark_group("tpm");
    // Steady state: the node's AK was seen before (parsed key from the verifier's cache);
    // signature, nonce, selection and pcrDigest are checked in full.
    g.bench_function("quote", |b| {
        b.iter(|| assert!(v.verify(black_box(ev), AT).is_ok()))
    });
    // First sight of the AK: PEM/SPKI parse and aws-lc key preparation included.
    g.bench_function("quote-cold", |b| {
        b.iter_batched(
            TpmVerifier::new,
            |v| assert!(v.verify(black_box(ev), AT).is_ok()),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn snp(c: &mut Criterion) {
    let v = SnpVerifier::builtin().unwrap();
    let report = read("snp/trustee-test-report.bin");
    let vcek = read("snp/trustee-test-vcek.der");
    let ev = SnpEvidence {
        report: &report,
        vek: &vcek,
        ca_chain: None,
        expected_report_data: None,
        allow_debug: false,
    };
    assert!(v.verify(ev, AT).is_ok(), "SNP vector must verify");
    let mut g = c.benchmark_group("snp");
    g.bench_function("milan-cold", |b| b.iter(|| v.verify(black_box(ev), AT).is_ok()));
    g.finish();
}

fn nvgpu(c: &mut Criterion) {
    let report = hex_file("nvidia/sdk-hopperAttestationReport.txt");
    let chain = read("nvidia/sdk-hopperCertChain.txt");
    let nonce = hex::decode(HOPPER_NONCE).unwrap();
    let ev = NvgpuEvidence {
        report: &report,
        cert_chain: &chain,
        nonce: &nonce,
        rims: &[],
        library: None,
    };
    let warm = NvgpuVerifier::new().unwrap();
    let first = warm.verify(ev, AT).expect("Hopper vector must verify");
    assert!(!first.claims.chain_cached);
    assert!(warm.verify(ev, AT).unwrap().claims.chain_cached);

    let mut g = c.benchmark_group("nvgpu");
    g.bench_function("hopper-cold", |b| {
        b.iter_batched(
            || NvgpuVerifier::new().unwrap(),
            |v| {
                let r = v.verify(black_box(ev), AT).unwrap();
                assert!(!r.claims.chain_cached);
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("hopper-warm", |b| {
        b.iter(|| {
            let r = warm.verify(black_box(ev), AT).unwrap();
            debug_assert!(r.claims.chain_cached);
        })
    });
    g.finish();

    // The floor: one P-384 verify of the same report signature with the leaf key.
    let parsed = spdm::parse(&report).unwrap();
    let certs = split_certs(&chain).unwrap();
    let leaf_key = warm.verify_device_chain(&chain, AT).unwrap().leaf_key;
    assert_eq!(certs.len(), 5);
    assert!(leaf_key.verify_p384_fixed(parsed.signed, &parsed.signature));
    let mut g = c.benchmark_group("floor");
    g.bench_function("p384-verify", |b| {
        b.iter(|| leaf_key.verify_p384_fixed(black_box(parsed.signed), black_box(&parsed.signature)))
    });
    g.finish();
}

/// A TDX quote with its full collateral (chain, two CRLs, QE identity, TCB info).
/// `tdx/quote-cold`: a verifier with nothing remembered per iteration, every signature
/// checked. `tdx/quote-warm`: one verifier that has seen the platform's chain and this
/// collateral before (what a verifier appraising the same fleet does): the QE report and
/// quote signatures, and every check that depends on the quote or the time.
fn tdx(c: &mut Criterion) {
    use custody_verifier::tdx::{TdxCollateral, TdxEvidence, TdxVerifier};
    let f = |n: &str| read(&format!("tdx/tdx-dcap-qvl-uptodate/{n}"));
    let (quote, ti, tic, qi, qic, pck, root) = (
        f("quote.bin"),
        f("tcb_info.pcs.json"),
        f("tcb_info_issuer_chain.pem"),
        f("qe_identity.pcs.json"),
        f("qe_identity_issuer_chain.pem"),
        f("pck_crl.der"),
        f("root_ca_crl.der"),
    );
    let ev = TdxEvidence {
        quote: &quote,
        collateral: TdxCollateral {
            tcb_info: &ti,
            tcb_info_chain: &tic,
            qe_identity: &qi,
            qe_identity_chain: &qic,
            pck_crl: &pck,
            root_ca_crl: &root,
        },
        expected_report_data: None,
    };
    let at = UnixTime(1_751_328_000); // 2025-07-01
    let v = TdxVerifier::new().unwrap();
    assert_eq!(v.verify(ev, at).unwrap().claims.tcb_status, "UpToDate");
    let mut g = c.benchmark_group("tdx");
    g.bench_function("quote-cold", |b| {
        b.iter(|| v.cold().verify(black_box(ev), at).is_ok())
    });
    g.bench_function("quote-warm", |b| b.iter(|| v.verify(black_box(ev), at).is_ok()));
    g.finish();

    // The floor: one P-256 verify (the quote's, by its attestation key); a quote needs
    // two (the QE report's too).
    use aws_lc_rs::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_FIXED};
    let q = custody_formats::tdx::TdxQuote::parse(&quote).unwrap();
    let ak = [&[0x04u8][..], q.attestation_key].concat();
    let key = UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &ak);
    assert!(key.verify(q.signed, q.signature).is_ok());
    let mut g = c.benchmark_group("floor");
    g.bench_function("p256-verify", |b| {
        b.iter(|| key.verify(black_box(q.signed), black_box(q.signature)).is_ok())
    });
    g.finish();
}

criterion_group!(benches, tpm, snp, nvgpu, tdx);
criterion_main!(benches);
