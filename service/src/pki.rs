//! The verifier's own CA. It certifies three roles, named in the subject CN so handlers
//! can authorize by route: `verifier` (this service, as TLS server and as the client that
//! asks agents for evidence), `operator` (the CLI) and `node:<id>` (an enrolled agent,
//! issued only after credential activation proved its AK and EK share a TPM).
//!
//! Keys are P-256 (aws-lc-rs through rcgen). The CA key is written once with mode 0600.

use custody_net::Identity;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, SanType,
};
use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum PkiError {
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("certificate: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("{0}")]
    Net(#[from] custody_net::NetError),
    #[error("node TLS key: {0}")]
    NodeKey(String),
}

#[derive(Debug)]
pub struct Pki {
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn read(path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path).map_err(|e| PkiError::File {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// Write `contents` to `path`, readable by the owner only when `secret`.
pub fn write_file(path: &Path, contents: &[u8], secret: bool) -> Result<(), PkiError> {
    use std::io::Write;
    let err = |e: std::io::Error| PkiError::File {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(if secret { 0o600 } else { 0o644 });
    }
    let mut f = opts.open(path).map_err(err)?;
    f.write_all(contents).map_err(err)?;
    f.sync_all().map_err(err)
}

fn validity(p: &mut CertificateParams, life: time::Duration) {
    let now = time::OffsetDateTime::now_utc();
    // A little slack for clocks that disagree by a few minutes.
    p.not_before = now - time::Duration::minutes(5);
    p.not_after = now + life;
}

fn leaf_params(
    cn: &str,
    names: &[String],
    server: bool,
    client: bool,
    life: time::Duration,
) -> Result<CertificateParams, PkiError> {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn.push(DnType::OrganizationName, "Custody");
    p.distinguished_name = dn;
    for n in names {
        p.subject_alt_names.push(match n.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(n.as_str().try_into()?),
        });
    }
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    if server {
        p.extended_key_usages.push(ExtendedKeyUsagePurpose::ServerAuth);
    }
    if client {
        p.extended_key_usages.push(ExtendedKeyUsagePurpose::ClientAuth);
    }
    validity(&mut p, life);
    Ok(p)
}

impl Pki {
    /// Load the CA from `dir`, creating it on first use.
    pub fn open(dir: &Path) -> Result<Self, PkiError> {
        let key_path = dir.join("ca-key.pem");
        let cert_path = dir.join("ca.pem");
        let (ca_key, ca_pem) = if key_path.exists() {
            let key = KeyPair::from_pem(&read(&key_path)?)?;
            (key, read(&cert_path)?)
        } else {
            let key = KeyPair::generate()?;
            let mut p = CertificateParams::default();
            p.distinguished_name
                .push(DnType::CommonName, "Custody verifier CA");
            p.distinguished_name.push(DnType::OrganizationName, "Custody");
            p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            validity(&mut p, time::Duration::days(3650));
            let cert = p.self_signed(&key)?;
            write_file(&key_path, key.serialize_pem().as_bytes(), true)?;
            write_file(&cert_path, cert.pem().as_bytes(), false)?;
            (key, cert.pem())
        };
        // The issuing parameters (subject, key identifier) come from the stored certificate.
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key)?;
        Ok(Self { ca_pem, issuer })
    }

    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    fn issuer(&self) -> &Issuer<'static, KeyPair> {
        &self.issuer
    }

    fn issue_with_new_key(
        &self,
        cn: &str,
        names: &[String],
        server: bool,
        client: bool,
        life: time::Duration,
    ) -> Result<Identity, PkiError> {
        let key = KeyPair::generate()?;
        let cert = leaf_params(cn, names, server, client, life)?.signed_by(&key, self.issuer())?;
        let chain = format!("{}{}", cert.pem(), self.ca_pem);
        Ok(Identity::from_pem(
            chain.as_bytes(),
            key.serialize_pem().as_bytes(),
        )?)
    }

    /// The verifier's TLS server identity for `names` (re-issued at every start).
    pub fn server_identity(&self, names: &[String]) -> Result<Identity, PkiError> {
        self.issue_with_new_key("verifier", names, true, true, time::Duration::days(30))
    }

    /// The identity the verifier presents to agents.
    pub fn client_identity(&self) -> Result<Identity, PkiError> {
        self.issue_with_new_key("verifier", &[], false, true, time::Duration::days(30))
    }

    /// Write an operator identity (CN `operator`) for the CLI into `dir`:
    /// `ca.pem`, `cert.pem`, `key.pem` (0600).
    pub fn write_operator_identity(&self, dir: &Path) -> Result<(), PkiError> {
        std::fs::create_dir_all(dir).map_err(|e| PkiError::File {
            path: dir.to_owned(),
            reason: e.to_string(),
        })?;
        let key = KeyPair::generate()?;
        let cert = leaf_params("operator", &[], false, true, time::Duration::days(365))?
            .signed_by(&key, self.issuer())?;
        write_file(&dir.join("key.pem"), key.serialize_pem().as_bytes(), true)?;
        write_file(&dir.join("cert.pem"), cert.pem().as_bytes(), false)?;
        write_file(&dir.join("ca.pem"), self.ca_pem.as_bytes(), false)
    }

    /// Certify an enrolled node's TLS key (SubjectPublicKeyInfo DER) as `node:<id>`,
    /// valid for the host of its endpoint (checked by the caller: a strict host name or
    /// IP address, no wildcard) for `hours`.
    pub fn issue_node(
        &self,
        node_id: &str,
        endpoint_host: &str,
        spki_der: &[u8],
        hours: u32,
    ) -> Result<String, PkiError> {
        let spki =
            rcgen::SubjectPublicKeyInfo::from_der(spki_der).map_err(|e| PkiError::NodeKey(e.to_string()))?;
        let names = [endpoint_host.to_owned()];
        let life = time::Duration::hours(i64::from(hours));
        let cert = leaf_params(&format!("node:{node_id}"), &names, true, true, life)?
            .signed_by(&spki, self.issuer())?;
        Ok(cert.pem())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::PublicKeyData;

    #[test]
    fn ca_persists_and_issues_roles() {
        let dir = tempfile::tempdir().unwrap();
        let a = Pki::open(dir.path()).unwrap();
        let b = Pki::open(dir.path()).unwrap();
        assert_eq!(a.ca_pem(), b.ca_pem(), "the CA is created once");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("ca-key.pem"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let node_key = KeyPair::generate().unwrap();
        let pem = b
            .issue_node("n1", "127.0.0.1", &node_key.subject_public_key_info(), 24)
            .unwrap();
        let der = custody_net::certs_from_pem(pem.as_bytes()).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der[0]).unwrap();
        assert_eq!(
            cert.subject()
                .iter_common_name()
                .next()
                .unwrap()
                .as_str()
                .unwrap(),
            "node:n1"
        );
        assert_eq!(
            cert.public_key().raw,
            node_key.subject_public_key_info().as_slice()
        );
        assert!(b.issue_node("n1", "127.0.0.1", b"not a key", 24).is_err());
        b.write_operator_identity(&dir.path().join("op")).unwrap();
        assert!(dir.path().join("op/key.pem").exists());
    }
}
