//! Mutual TLS on rustls's blocking API with the aws-lc-rs provider: B requires and
//! verifies a client certificate from the test CA; a node's id is its certificate's CN
//! without the `node:` prefix.

use anyhow::{anyhow, Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::path::Path;
use std::sync::Arc;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    CertificateDer::pem_file_iter(path)
        .with_context(|| path.display().to_string())?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| path.display().to_string())
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path).with_context(|| path.display().to_string())
}

fn roots(dir: &Path) -> Result<Arc<RootCertStore>> {
    let mut r = RootCertStore::empty();
    for c in certs(&dir.join(crate::pki::CA))? {
        r.add(c)?;
    }
    Ok(Arc::new(r))
}

/// B: its leaf `<stem>.pem`, client certificates required and chained to the test CA.
pub fn server_config(dir: &Path, stem: &str) -> Result<Arc<ServerConfig>> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(dir)?, provider()).build()?;
    let cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            certs(&dir.join(format!("{stem}.pem")))?,
            key(&dir.join(format!("{stem}.key")))?,
        )?;
    Ok(Arc::new(cfg))
}

/// A: its leaf `<stem>.pem` as the client certificate, the test CA as the only root.
pub fn client_config(dir: &Path, stem: &str) -> Result<Arc<ClientConfig>> {
    let cfg = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots(dir)?)
        .with_client_auth_cert(
            certs(&dir.join(format!("{stem}.pem")))?,
            key(&dir.join(format!("{stem}.key")))?,
        )?;
    Ok(Arc::new(cfg))
}

/// The node id of a verified peer certificate chain: CN `node:<id>` of the leaf.
pub fn peer_node(chain: Option<&[CertificateDer<'static>]>) -> Result<String> {
    let leaf = chain
        .and_then(|c| c.first())
        .ok_or_else(|| anyhow!("the peer presented no certificate"))?;
    let (_, cert) =
        x509_parser::parse_x509_certificate(leaf).map_err(|e| anyhow!("peer certificate: {e}"))?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .ok_or_else(|| anyhow!("the peer certificate has no CN"))?;
    match cn.strip_prefix("node:") {
        Some(id) if !id.is_empty() => Ok(id.to_owned()),
        _ => Err(anyhow!("the peer certificate's CN {cn:?} is not node:<id>")),
    }
}
