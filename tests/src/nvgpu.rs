//! A structurally real NVIDIA GPU report for machines without a confidential GPU.
//!
//! The report is NVIDIA's SDK Hopper sample (verifier/testdata/nvidia), an SPDM 1.1
//! GET_MEASUREMENTS exchange, with the requester nonce rewritten to the round's binding
//! and re-signed by a **test** device key. The key's chain is built here like NVIDIA's:
//! five P-384 certificates, a leaf named as the real one (`GH100 A01 GSP FMC LF`) that
//! carries the real leaf's TCG DICE extensions (so the report's FWID still matches), three
//! intermediates and a self-signed test root. A verifier accepts it only with
//! `[nvgpu] test_root` pointing at that root.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, ECDSA_P384_SHA384_FIXED_SIGNING};
use custody_formats::bundle::{GpuEvidence, GpuIdentity};
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SerialNumber, PKCS_ECDSA_P384_SHA384,
};
use std::path::{Path, PathBuf};
use x509_parser::prelude::{FromDer, X509Certificate};

fn testdata(name: &str) -> PathBuf {
    crate::repo_root().join("verifier/testdata/nvidia").join(name)
}

/// The SDK's Hopper report bytes.
fn real_report() -> Vec<u8> {
    let text = std::fs::read_to_string(testdata("sdk-hopperAttestationReport.txt")).unwrap();
    hex::decode(text.trim()).unwrap()
}

/// The SDK's Hopper leaf certificate (DER).
fn real_leaf() -> Vec<u8> {
    let pem = std::fs::read(testdata("sdk-hopperCertChain.txt")).unwrap();
    custody_net::certs_from_pem(&pem).unwrap()[0].to_vec()
}

/// One test GPU: its chain (leaf first, PEM), its root and its leaf key.
#[allow(missing_debug_implementations)]
pub struct Gpu {
    pub chain_pem: Vec<u8>,
    pub root_pem: String,
    /// The leaf's serial number: the registry's `gpu:` hardware id.
    pub serial: Vec<u8>,
    leaf_key: EcdsaKeyPair,
}

fn ca(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.distinguished_name
        .push(DnType::OrganizationName, "Custody test NVIDIA-shaped CA");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p
}

impl Gpu {
    /// A new device: its own root, intermediates and leaf; `serial` distinguishes GPUs.
    pub fn new(serial: &[u8]) -> Self {
        let key = || KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap();
        let root_key = key();
        let root_params = ca("Custody TEST NVIDIA Device Identity CA");
        let root = root_params.self_signed(&root_key).unwrap();
        let mut issuer = Issuer::new(root_params, root_key);
        let mut pems = vec![root.pem()];
        for name in [
            "TEST GH100 Provisioner ICA",
            "TEST GH100 A01 GSP BROM",
            "TEST GH100 A01 GSP FMC",
        ] {
            let k = key();
            let p = ca(name);
            let c = p.signed_by(&k, &issuer).unwrap();
            pems.push(c.pem());
            issuer = Issuer::new(p, k);
        }
        // The leaf: the real one's name and DICE extensions, a test key and serial.
        let der = real_leaf();
        let (_, real) = X509Certificate::from_der(&der).unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        let cn = real
            .subject()
            .iter_common_name()
            .next()
            .and_then(|c| c.as_str().ok())
            .unwrap()
            .to_owned();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.serial_number = Some(SerialNumber::from_slice(serial));
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        for ext in real.extensions() {
            let oid: Vec<u64> = ext.oid.iter().unwrap().collect();
            if oid.starts_with(&[2, 23, 133, 5, 4]) {
                p.custom_extensions
                    .push(CustomExtension::from_oid_content(&oid, ext.value.to_vec()));
            }
        }
        let leaf_key = key();
        let leaf = p.signed_by(&leaf_key, &issuer).unwrap();
        pems.push(leaf.pem());
        pems.reverse();
        Self {
            chain_pem: pems.concat().into_bytes(),
            root_pem: root.pem(),
            serial: serial.to_vec(),
            leaf_key: EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &leaf_key.serialize_der())
                .unwrap(),
        }
    }

    /// Write the root for `[nvgpu] test_root`.
    pub fn write_root(&self, dir: &Path) -> PathBuf {
        let p = dir.join(format!("gpu-root-{}.pem", hex::encode(&self.serial)));
        std::fs::write(&p, &self.root_pem).unwrap();
        p
    }

    /// The GPU's evidence for a round whose binding is `nonce`, as GPU `index`.
    pub fn evidence(&self, index: u32, nonce: &[u8; 32]) -> GpuEvidence {
        let mut r = real_report();
        // GET_MEASUREMENTS request: version, code, param1, param2, then the nonce.
        r[4..36].copy_from_slice(nonce);
        let signed = custody_formats::spdm::parse(&r).unwrap().signed.len();
        let sig = self.leaf_key.sign(&SystemRandom::new(), &r[..signed]).unwrap();
        r[signed..signed + 96].copy_from_slice(sig.as_ref());
        GpuEvidence {
            index,
            report: r,
            cert_chain: self.chain_pem.clone(),
        }
    }

    /// What NVML says about it (unattested): the name the agent chooses.
    pub fn identity(index: u32, name: &str) -> GpuIdentity {
        GpuIdentity {
            cc: [("cc_enabled".to_owned(), "true".to_owned())].into(),
            ..GpuIdentity::named(index, name, true)
        }
    }
}
