//! The test PKI and session keys of `keys`: one CA, node leaves (CN `node:<id>`, SAN IP
//! 127.0.0.1), the verifier's P-256 ticket key and B's X25519/Ed25519 session keys, all
//! as files so a restarted process keeps them.

use anyhow::{anyhow, Context, Result};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyUsagePurpose,
    SanType,
};
use rustls::crypto::hpke::HpkePrivateKey;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

pub const CA: &str = "ca.pem";
pub const VERIFIER_PK8: &str = "verifier.pk8";
pub const VERIFIER_PUB: &str = "verifier.pub";
pub const B_X25519: &str = "b.x25519";
pub const B_X25519_PUB: &str = "b.x25519.pub";
pub const B_ED25519: &str = "b.ed25519.pk8";

/// Private keys are written owner-only.
fn write_secret(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| path.display().to_string())?;
    f.write_all(bytes).with_context(|| path.display().to_string())
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).with_context(|| path.display().to_string())
}

/// File stem of a node's leaf: `a`/`b` for node-a/node-b, the node id otherwise.
pub fn leaf_stem(node: &str) -> &str {
    match node {
        "node-a" => "a",
        "node-b" => "b",
        other => other,
    }
}

/// Write the whole test PKI into `dir`; `extra` nodes get a leaf each (`<id>.pem/.key`).
pub fn generate(dir: &Path, extra: &[String]) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    let ca_key = rcgen::KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "custody movepeer test ca");
    let ca_cert = ca_params.clone().self_signed(&ca_key)?;
    write(&dir.join(CA), ca_cert.pem().as_bytes())?;
    let issuer = Issuer::from_params(&ca_params, &ca_key);

    let nodes = ["node-a".to_owned(), "node-b".to_owned()];
    for node in nodes.iter().chain(extra) {
        if node.is_empty() || node.contains(['/', '.']) {
            return Err(anyhow!("node id {node:?} is not a plain name"));
        }
        let key = rcgen::KeyPair::generate()?;
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        p.subject_alt_names = vec![SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST))];
        p.distinguished_name
            .push(DnType::CommonName, format!("node:{node}"));
        // Each node is a TLS server (destination) and a TLS client (source).
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = p.signed_by(&key, &issuer)?;
        let stem = leaf_stem(node);
        write(&dir.join(format!("{stem}.pem")), cert.pem().as_bytes())?;
        write_secret(&dir.join(format!("{stem}.key")), key.serialize_pem().as_bytes())?;
    }

    let rng = SystemRandom::new();
    let pk8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .map_err(|_| anyhow!("verifier key generation"))?;
    write_secret(&dir.join(VERIFIER_PK8), pk8.as_ref())?;
    write(&dir.join(VERIFIER_PUB), verifier_key(dir)?.public_key().as_ref())?;

    let (x_pub, x_sec) = custody_mover::keywrap::generate_x25519()?;
    write_secret(&dir.join(B_X25519), x_sec.secret_bytes())?;
    write(&dir.join(B_X25519_PUB), &x_pub)?;
    let ed = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| anyhow!("Ed25519 key generation"))?;
    write_secret(&dir.join(B_ED25519), ed.as_ref())?;
    Ok(())
}

fn read(dir: &Path, name: &str) -> Result<Vec<u8>> {
    let p = dir.join(name);
    std::fs::read(&p).with_context(|| p.display().to_string())
}

pub fn verifier_key(dir: &Path) -> Result<EcdsaKeyPair> {
    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &read(dir, VERIFIER_PK8)?)
        .map_err(|e| anyhow!("{VERIFIER_PK8}: {e}"))
}

pub fn verifier_public(dir: &Path) -> Result<Vec<u8>> {
    read(dir, VERIFIER_PUB)
}

/// B's session keys: X25519 (public, HPKE private) and the Ed25519 receipt key.
pub struct BKeys {
    pub x25519: [u8; 32],
    pub x25519_secret: HpkePrivateKey,
    pub ed25519: Ed25519KeyPair,
}

impl std::fmt::Debug for BKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BKeys")
            .field("x25519", &hex::encode(self.x25519))
            .finish_non_exhaustive()
    }
}

impl BKeys {
    pub fn load(dir: &Path) -> Result<Self> {
        let x25519: [u8; 32] = read(dir, B_X25519_PUB)?
            .try_into()
            .map_err(|_| anyhow!("{B_X25519_PUB} is not 32 bytes"))?;
        let secret = read(dir, B_X25519)?;
        if secret.len() != 32 {
            return Err(anyhow!("{B_X25519} is not 32 bytes"));
        }
        let ed25519 =
            Ed25519KeyPair::from_pkcs8(&read(dir, B_ED25519)?).map_err(|e| anyhow!("{B_ED25519}: {e}"))?;
        Ok(Self {
            x25519,
            x25519_secret: HpkePrivateKey::from(secret),
            ed25519,
        })
    }

    pub fn ed25519_public(&self) -> Result<[u8; 32]> {
        self.ed25519
            .public_key()
            .as_ref()
            .try_into()
            .map_err(|_| anyhow!("Ed25519 public key length"))
    }
}
