//! A forged-but-structurally-real SEV-SNP report for machines without SNP hardware.
//!
//! The report is a real Milan report (verifier/testdata/snp/trustee-test-report.bin,
//! captured by trustee) with the fields an attack changes (REPORT_DATA, VMPL,
//! MEASUREMENT, HOST_DATA) rewritten and re-signed by a **test** VCEK
//! (tests/testdata/snp-test-root, built by its make.py like AMD's chain but under a test
//! ARK). A verifier accepts it only with `[snp] test_ark` pointing at that root.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, ECDSA_P384_SHA384_FIXED_SIGNING};
use custody_formats::bundle::SnpEvidence;
use std::path::PathBuf;

const VMPL: usize = 0x30;
const REPORT_DATA: usize = 0x50;
const MEASUREMENT: usize = 0x90;
const HOST_DATA: usize = 0xC0;
const CHIP_ID: usize = 0x1A0;
const SIGNED: usize = 0x2A0;
const SIG_S: usize = 0x2E8;
const REPORT_LEN: usize = 0x4A0;

fn root() -> PathBuf {
    crate::repo_root().join("tests/testdata/snp-test-root")
}

/// The PEM file (test ARK + ASK) for `[snp] test_ark`.
pub fn test_ark() -> PathBuf {
    root().join("ark_ask.pem")
}

/// The captured report's fields, before an attack changes them.
pub fn real_report() -> Vec<u8> {
    std::fs::read(crate::repo_root().join("verifier/testdata/snp/trustee-test-report.bin")).unwrap()
}

/// The captured report's MEASUREMENT.
pub fn real_measurement() -> [u8; 48] {
    real_report()[MEASUREMENT..MEASUREMENT + 48].try_into().unwrap()
}

/// The captured report's HOST_DATA.
pub fn real_host_data() -> [u8; 32] {
    real_report()[HOST_DATA..HOST_DATA + 32].try_into().unwrap()
}

/// The captured report's ID_KEY_DIGEST (offset 0xE0).
pub fn real_id_key_digest() -> [u8; 48] {
    real_report()[0xE0..0xE0 + 48].try_into().unwrap()
}

/// The captured report's CHIP_ID (its VCEK's hwID; the test VCEK copies it).
pub fn chip_id() -> [u8; 64] {
    real_report()[CHIP_ID..CHIP_ID + 64].try_into().unwrap()
}

/// What the forged report says.
#[derive(Debug, Clone)]
pub struct Guest {
    pub vmpl: u32,
    pub measurement: [u8; 48],
    pub host_data: [u8; 32],
}

impl Default for Guest {
    /// The captured guest at VMPL 0.
    fn default() -> Self {
        Self {
            vmpl: 0,
            measurement: real_measurement(),
            host_data: real_host_data(),
        }
    }
}

/// A report for `binding` (REPORT_DATA = binding || 32 zero bytes) from `guest`, signed
/// by the test VCEK, with that VCEK and the test ASK/ARK as the bundle carries them.
pub fn evidence(binding: &[u8; 32], guest: &Guest) -> SnpEvidence {
    let mut r = real_report();
    assert_eq!(r.len(), REPORT_LEN);
    r[VMPL..VMPL + 4].copy_from_slice(&guest.vmpl.to_le_bytes());
    r[REPORT_DATA..REPORT_DATA + 64].fill(0);
    r[REPORT_DATA..REPORT_DATA + 32].copy_from_slice(binding);
    r[MEASUREMENT..MEASUREMENT + 48].copy_from_slice(&guest.measurement);
    r[HOST_DATA..HOST_DATA + 32].copy_from_slice(&guest.host_data);
    let key = EcdsaKeyPair::from_pkcs8(
        &ECDSA_P384_SHA384_FIXED_SIGNING,
        &std::fs::read(root().join("vcek.p8.der")).unwrap(),
    )
    .unwrap();
    let sig = key.sign(&SystemRandom::new(), &r[..SIGNED]).unwrap();
    let (rb, sb) = sig.as_ref().split_at(48);
    // AMD's layout: r and s little-endian, each in a 72-byte field.
    r[SIGNED..REPORT_LEN].fill(0);
    for (i, b) in rb.iter().rev().enumerate() {
        r[SIGNED + i] = *b;
    }
    for (i, b) in sb.iter().rev().enumerate() {
        r[SIG_S + i] = *b;
    }
    SnpEvidence {
        report: r,
        vcek: std::fs::read(root().join("vcek.der")).unwrap(),
        ca_chain: Some(std::fs::read(test_ark()).unwrap()),
    }
}
