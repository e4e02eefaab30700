//! A test TPM manufacturer CA, shaped like swtpm's local CA: a self-signed root, an
//! issuing CA under it, and EK certificates like the ones swtpm_setup writes (empty-ish
//! subject, critical subjectAltName directoryName with TPM manufacturer/model/version,
//! EKU tcg-kp-EKCertificate, keyEncipherment, CA:FALSE, no expiry).

use anyhow::{anyhow, Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
    IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use std::path::Path;
use time::{Duration, OffsetDateTime};

/// File names written into the EK CA directory (the verifier reads every file there).
pub const ROOT_FILE: &str = "loadgen-ek-root.pem";
pub const ISSUER_FILE: &str = "loadgen-ek-issuer.pem";

#[derive(Debug)]
pub struct EkCa {
    pub root_pem: String,
    pub issuer_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn dn(cn: &str) -> DistinguishedName {
    let mut d = DistinguishedName::new();
    d.push(DnType::CommonName, cn);
    d
}

fn ca_params(cn: &str) -> Result<CertificateParams> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name = dn(cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.not_before = OffsetDateTime::now_utc() - Duration::days(1);
    p.not_after = OffsetDateTime::now_utc() + Duration::days(3650);
    Ok(p)
}

/// DER TLV with a short or long length.
fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = body.len();
    if n < 0x80 {
        out.push(n as u8);
    } else if n < 0x100 {
        out.extend([0x81, n as u8]);
    } else {
        out.extend([0x82, (n >> 8) as u8, n as u8]);
    }
    out.extend_from_slice(body);
    out
}

/// subjectAltName = GeneralNames { directoryName [4] { tpmManufacturer, tpmModel,
/// tpmVersion } } as TCG's EK credential profile (and swtpm) writes it.
fn tpm_san() -> Vec<u8> {
    // 2.23.133.2.1 / .2 / .3
    let attr = |last: u8, value: &str| {
        let mut b = tlv(0x06, &[0x67, 0x81, 0x05, 0x02, last]);
        b.extend(tlv(0x0c, value.as_bytes()));
        tlv(0x31, &tlv(0x30, &b))
    };
    let mut rdns = attr(1, "id:00001014");
    rdns.extend(attr(2, "swtpm"));
    rdns.extend(attr(3, "id:20191023"));
    let name = tlv(0x30, &rdns);
    tlv(0x30, &tlv(0xa4, &name))
}

impl EkCa {
    pub fn generate() -> Result<Self> {
        let root_key = KeyPair::generate()?;
        let root_params = ca_params("custody-loadgen-ek-rootca")?;
        let root_cert = root_params.self_signed(&root_key)?;
        let root = Issuer::new(root_params, root_key);
        let issuer_key = KeyPair::generate()?;
        let issuer_params = ca_params("custody-loadgen-ek-issuer")?;
        let issuer_cert = issuer_params.signed_by(&issuer_key, &root)?;
        Ok(Self {
            root_pem: root_cert.pem(),
            issuer_pem: issuer_cert.pem(),
            issuer: Issuer::new(issuer_params, issuer_key),
        })
    }

    /// Write the two CA certificates (no keys) into `dir`, the verifier's `ek_ca_dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        std::fs::write(dir.join(ROOT_FILE), &self.root_pem)?;
        std::fs::write(dir.join(ISSUER_FILE), &self.issuer_pem)?;
        Ok(())
    }

    /// An EK certificate (DER) for the RSA key `ek_spki` (SubjectPublicKeyInfo DER).
    pub fn issue_ek(&self, ek_spki: &[u8], serial: u64) -> Result<Vec<u8>> {
        let spki = rcgen::SubjectPublicKeyInfo::from_der(ek_spki).map_err(|e| anyhow!("EK SPKI: {e}"))?;
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        p.distinguished_name = dn("unknown");
        p.serial_number = Some(serial.into());
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::KeyEncipherment];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::Other(vec![2, 23, 133, 8, 1])];
        p.use_authority_key_identifier_extension = true;
        let mut san = CustomExtension::from_oid_content(&[2, 5, 29, 17], tpm_san());
        san.set_criticality(true);
        p.custom_extensions = vec![san];
        p.not_before = OffsetDateTime::now_utc() - Duration::days(1);
        // swtpm's EK certificates never expire (99991231235959Z).
        p.not_after = OffsetDateTime::from_unix_timestamp(253_402_300_799)?;
        Ok(p.signed_by(&spki, &self.issuer)?.der().to_vec())
    }

    /// Both CA certificates as DER, as the verifier loads them.
    pub fn ders(&self) -> Result<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        for pem in [&self.root_pem, &self.issuer_pem] {
            for c in custody_net::certs_from_pem(pem.as_bytes())? {
                out.push(c.as_ref().to_vec());
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attester::SoftTpm;
    use custody_verifier::check::{FailedCheck, UnixTime};

    #[test]
    fn ek_certificate_passes_verify_ek() {
        let ca = EkCa::generate().unwrap();
        let tpm = SoftTpm::generate().unwrap();
        let cert = ca.issue_ek(&tpm.ek.spki, 7).unwrap();
        let now = UnixTime(custody_service::now());
        let id = custody_verifier::verify_ek(&cert, &tpm.ek.public, &ca.ders().unwrap(), now).unwrap();
        assert_eq!(id.issuer, "CN=custody-loadgen-ek-issuer");
        assert_eq!(id.anchor, "CN=custody-loadgen-ek-rootca");
        // Another TPM's EK public area does not match the certificate.
        let other = SoftTpm::generate().unwrap();
        let e = custody_verifier::verify_ek(&cert, &other.ek.public, &ca.ders().unwrap(), now).unwrap_err();
        assert_eq!(e.check(), "ek_key_match");
        // Another CA does not anchor it.
        let stranger = EkCa::generate().unwrap();
        let e =
            custody_verifier::verify_ek(&cert, &tpm.ek.public, &stranger.ders().unwrap(), now).unwrap_err();
        assert_eq!(e.check(), "ek_cert_chain");
    }
}
