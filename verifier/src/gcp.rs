//! Google Cloud VMs (Shielded and Confidential): a vTPM quote under the AK certificate
//! Google's CA issued to the VM.
//!
//! Google's vTPM is software in Google's host, not a TPM chip: what vouches for it is the
//! AK certificate, which also names the instance (zone, project, instance id) in Google's
//! extension 1.3.6.1.4.1.11129.2.1.21. So the chain of trust is: Google's root signs the
//! AK certificate (`ak_cert_chain`, `ak_cert_validity`), the certificate names the instance
//! (`instance`) and the AK (`ak`: a caller's AK must be the certificate's key), the AK signs
//! the quote over the round's nonce (the TPM checks under `tpm_*` names). The claims say
//! `tpm: gce-vtpm`: trust in Google's host is part of this result, and the zone is
//! Google's statement, not a measurement.

use crate::check::{Check, CheckLog, EvidenceVerifier, FailedCheck, Outcome, UnixTime};
use crate::der::{tlvs, uint};
use crate::tpm::{TpmClaims, TpmEvidence, TpmVerifier};
use crate::x509::{split_certs, verify_chain, ChainError, PublicKey, TrustAnchor};
use serde::Serialize;
use thiserror::Error;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Google's instance-identity extension in vTPM EK/AK certificates.
pub const GCE_INSTANCE_OID: &str = "1.3.6.1.4.1.11129.2.1.21";
/// Names in the extension are Compute Engine names (63 bytes, domain-scoped project ids a
/// little more); anything longer is refused.
const MAX_NAME: usize = 256;

const ROOTS: &[&[u8]] = &[
    include_bytes!("../roots/google/tpm-ek-root-1.der"),
    include_bytes!("../roots/google/ek-ak-ca-root.der"),
];
const INTERMEDIATES: &[&[u8]] = &[
    include_bytes!("../roots/google/tpm-ek-intermediate-2.der"),
    include_bytes!("../roots/google/tpm-ek-intermediate-3.der"),
    include_bytes!("../roots/google/ek-ak-ca-intermediate-2022.der"),
    include_bytes!("../roots/google/ek-ak-ca-intermediate-2024.der"),
];

#[derive(Debug, Error)]
pub enum GcpError {
    #[error("AK certificate: {0}")]
    AkCert(String),
    #[error("AK certificate chain: {0}")]
    Chain(#[from] ChainError),
    #[error("instance: {0}")]
    Instance(String),
    #[error("attestation key: {0}")]
    Ak(String),
    #[error("vTPM quote: {0}")]
    Tpm(#[from] crate::tpm::TpmVerifyError),
}

impl FailedCheck for GcpError {
    fn check(&self) -> &'static str {
        match self {
            Self::AkCert(_) => "ak_cert_chain",
            Self::Chain(e) => match e.check() {
                "cert_validity" => "ak_cert_validity",
                _ => "ak_cert_chain",
            },
            Self::Instance(_) => "instance",
            Self::Ak(_) => "ak",
            Self::Tpm(e) => crate::azure::tpm_check(e.check()),
        }
    }
}

/// The instance Google's certificate names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GceInstance {
    pub zone: String,
    /// The zone without its letter (`europe-west3-a` -> `europe-west3`).
    pub region: String,
    pub project_id: String,
    pub project_number: u64,
    pub instance_id: u64,
    pub instance_name: String,
    pub security: Option<GceSecurity>,
}

/// The instance's security properties, as Google's extension states them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GceSecurity {
    pub security_version: Option<u64>,
    pub is_production: bool,
    pub tpm_data_always_encrypted: bool,
    pub suspend_resume_always_disabled: bool,
    pub vmtd_always_disabled: bool,
    pub always_in_yarn: bool,
}

/// Google's instance extension (the OCTET STRING's content). Pure, bounded; fuzzed
/// (`fuzz_targets/gcp_instance.rs`).
///
/// ```text
/// SEQUENCE { zone UTF8String, projectNumber INTEGER, projectId UTF8String,
///            instanceId INTEGER, instanceName UTF8String,
///            [0] EXPLICIT SEQUENCE { [0] INTEGER, [1]..[5] BOOLEAN } OPTIONAL }
/// ```
pub fn parse_gce_instance(der: &[u8]) -> Result<GceInstance, String> {
    let top = tlvs(der)?;
    let [(0x30, body)] = top.as_slice() else {
        return Err("not one SEQUENCE".into());
    };
    let fields = tlvs(body)?;
    let text = |i: usize, what: &str| -> Result<String, String> {
        match fields.get(i) {
            Some((0x0c, v)) if v.len() <= MAX_NAME => std::str::from_utf8(v)
                .map(str::to_owned)
                .map_err(|_| format!("{what} is not UTF-8")),
            _ => Err(format!("{what}: want a UTF8String of at most {MAX_NAME} bytes")),
        }
    };
    let int = |i: usize, what: &str| -> Result<u64, String> {
        match fields.get(i) {
            Some((0x02, v)) => uint(v).ok_or_else(|| format!("{what}: not a 64-bit unsigned integer")),
            _ => Err(format!("{what}: want an INTEGER")),
        }
    };
    let zone = text(0, "zone")?;
    let security = match fields.get(5) {
        None => None,
        Some((0xa0, v)) => Some(parse_security(v)?),
        Some((t, _)) => return Err(format!("security properties: tag {t:#04x}, want [0]")),
    };
    if fields.len() > 6 {
        return Err(format!("{} fields, want 5 or 6", fields.len()));
    }
    let region = match zone.rsplit_once('-') {
        Some((r, z)) if z.len() == 1 => r.to_owned(),
        _ => zone.clone(),
    };
    Ok(GceInstance {
        region,
        zone,
        project_number: int(1, "project number")?,
        project_id: text(2, "project id")?,
        instance_id: int(3, "instance id")?,
        instance_name: text(4, "instance name")?,
        security,
    })
}

fn parse_security(explicit: &[u8]) -> Result<GceSecurity, String> {
    let inner = tlvs(explicit)?;
    let [(0x30, body)] = inner.as_slice() else {
        return Err("security properties: not one SEQUENCE".into());
    };
    let mut s = GceSecurity::default();
    for (tag, v) in tlvs(body)? {
        let value = tlvs(v)?;
        let [(inner_tag, x)] = value.as_slice() else {
            return Err(format!("security property {tag:#04x}: not one value"));
        };
        let flag = || match (inner_tag, x) {
            (0x01, [b]) => Ok(*b != 0),
            _ => Err(format!("security property {tag:#04x}: want a BOOLEAN")),
        };
        match tag {
            0xa0 if *inner_tag == 0x02 => {
                s.security_version = Some(uint(x).ok_or("security version: not a 64-bit unsigned integer")?)
            }
            0xa1 => s.is_production = flag()?,
            0xa2 => s.tpm_data_always_encrypted = flag()?,
            0xa3 => s.suspend_resume_always_disabled = flag()?,
            0xa4 => s.vmtd_always_disabled = flag()?,
            0xa5 => s.always_in_yarn = flag()?,
            // Later properties are ignored, as go-tpm-tools does.
            t if (0xa6..=0xbe).contains(&t) => {}
            t => return Err(format!("security property tag {t:#04x}")),
        }
    }
    Ok(s)
}

/// One round of Google Cloud vTPM evidence.
#[derive(Debug, Clone, Copy)]
pub struct GcpEvidence<'a> {
    /// The AK certificate (DER or PEM), as the vTPM's NV index 0x01C10000 (RSA) holds it.
    pub ak_cert: &'a [u8],
    /// An AK the caller expects (PEM/DER SPKI); it must be the certificate's key.
    pub ak: Option<&'a [u8]>,
    /// TPMS_ATTEST and TPMT_SIGNATURE.
    pub quote: &'a [u8],
    pub signature: &'a [u8],
    /// `tpm2_quote -o`, or text lines `INDEX HEX` (one bank).
    pub pcrs: &'a [u8],
    pub nonce: &'a [u8],
    /// The TCG event log, replayed against the quoted PCRs when given.
    pub event_log: Option<&'a [u8]>,
}

/// What a verified Google Cloud vTPM round says.
#[derive(Debug, Clone, Serialize)]
pub struct GcpClaims {
    /// `gce-vtpm`: Google's host runs the vTPM and vouches for it.
    pub tpm: &'static str,
    pub instance: GceInstance,
    /// The root the AK certificate chains to.
    pub ak_root: String,
    pub quote: TpmClaims,
}

/// Verifies Google Cloud vTPM evidence against Google's roots.
#[derive(Debug)]
pub struct GcpVerifier {
    roots: Vec<TrustAnchor>,
    /// Subjects read once here, not per verify.
    intermediates: Vec<Intermediate>,
    pub tpm: TpmVerifier,
}

impl GcpVerifier {
    /// With the built-in Google roots and intermediates (`roots/google/README.md`).
    pub fn builtin() -> Result<Self, ChainError> {
        Ok(Self {
            roots: ROOTS
                .iter()
                .map(|d| TrustAnchor::from_der(d.to_vec()))
                .collect::<Result<_, _>>()?,
            intermediates: with_subjects(INTERMEDIATES.iter().map(|d| d.to_vec()))?,
            tpm: TpmVerifier::new(),
        })
    }

    /// Other roots instead of the built-in ones (tests, a private CA), and more
    /// intermediates (PEM or DER).
    pub fn with_roots(roots: &[u8], intermediates: Option<&[u8]>) -> Result<Self, ChainError> {
        let mut v = Self::builtin()?;
        v.roots = TrustAnchor::from_pem_or_der(roots)?;
        match intermediates {
            Some(i) => v.with_intermediates(i),
            None => Ok(v),
        }
    }

    /// Adds intermediates (PEM or DER) to the built-in ones.
    pub fn with_intermediates(mut self, pem_or_der: &[u8]) -> Result<Self, ChainError> {
        self.intermediates
            .extend(with_subjects(split_certs(pem_or_der)?)?);
        Ok(self)
    }

    /// The leaf under each intermediate whose subject is its issuer (or under a root
    /// directly): the first that validates, else the most telling error.
    fn chain(
        &self,
        leaf: &[u8],
        issuer: &[u8],
        at: UnixTime,
    ) -> Result<crate::x509::ValidatedChain, ChainError> {
        let mut last = None;
        let candidates = self
            .intermediates
            .iter()
            .filter(|(subject, _)| subject == issuer)
            .map(|(_, der)| der);
        for inter in candidates {
            match verify_chain(&[leaf.to_vec(), inter.clone()], &self.roots, at) {
                Ok(v) => return Ok(v),
                // A time failure says more than a sibling intermediate's key mismatch.
                Err(e)
                    if last
                        .as_ref()
                        .is_none_or(|l: &ChainError| l.check() != "cert_validity") =>
                {
                    last = Some(e)
                }
                Err(_) => {}
            }
        }
        match verify_chain(&[leaf.to_vec()], &self.roots, at) {
            Ok(v) => Ok(v),
            Err(e) => Err(last.unwrap_or(e)),
        }
    }
}

/// An intermediate CA certificate: (raw subject, DER).
type Intermediate = (Vec<u8>, Vec<u8>);

/// Each certificate with its raw subject; one that does not parse is an error.
fn with_subjects(ders: impl IntoIterator<Item = Vec<u8>>) -> Result<Vec<Intermediate>, ChainError> {
    ders.into_iter()
        .enumerate()
        .map(|(index, der)| {
            let subject = X509Certificate::from_der(&der)
                .map(|(_, c)| c.subject().as_raw().to_vec())
                .map_err(|e| ChainError::Parse {
                    index,
                    reason: e.to_string(),
                })?;
            Ok((subject, der))
        })
        .collect()
}

/// The certificate as DER (PEM accepted): exactly one.
fn one_cert(input: &[u8]) -> Result<Vec<u8>, GcpError> {
    let mut certs = split_certs(input).map_err(|e| GcpError::AkCert(e.to_string()))?;
    match certs.len() {
        1 => Ok(certs.remove(0)),
        n => Err(GcpError::AkCert(format!("{n} certificates, want the AK's alone"))),
    }
}

fn carry(log: &mut CheckLog, checks: &[Check]) {
    for c in checks {
        log.pass(crate::azure::tpm_check(c.name), c.detail.clone());
    }
}

impl EvidenceVerifier for GcpVerifier {
    type Evidence<'a> = GcpEvidence<'a>;
    type Claims = GcpClaims;
    type Error = GcpError;
    const KIND: &'static str = "gcp-vtpm";

    fn verify(&self, ev: GcpEvidence<'_>, at: UnixTime) -> Outcome<GcpClaims, GcpError> {
        let mut log = CheckLog::new();
        macro_rules! tri {
            ($e:expr) => {
                match $e {
                    Ok(v) => v,
                    Err(e) => return Err(log.reject(GcpError::from(e))),
                }
            };
        }
        let leaf = tri!(one_cert(ev.ak_cert));
        let cert = match X509Certificate::from_der(&leaf) {
            Ok((_, c)) => c,
            Err(e) => return Err(log.reject(GcpError::AkCert(e.to_string()))),
        };
        let chain = tri!(self.chain(&leaf, cert.issuer().as_raw(), at));
        log.pass(
            "ak_cert_chain",
            format!("{} certificates to {}", chain.len, chain.anchor),
        );
        log.pass(
            "ak_cert_validity",
            format!("valid {}..{} at {}", chain.valid_from, chain.valid_until, at.0),
        );
        let ext = cert
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == GCE_INSTANCE_OID);
        let instance = match ext.map(|e| parse_gce_instance(e.value)) {
            Some(Ok(i)) => i,
            Some(Err(e)) => return Err(log.reject(GcpError::Instance(e))),
            None => {
                return Err(log.reject(GcpError::Instance(format!(
                    "the AK certificate has no instance extension ({GCE_INSTANCE_OID})"
                ))))
            }
        };
        log.pass(
            "instance",
            format!(
                "{} in project {} ({}), zone {}",
                instance.instance_name, instance.project_id, instance.instance_id, instance.zone
            ),
        );
        let spki = cert.public_key().raw.to_vec();
        if let Some(given) = ev.ak {
            let given = crate::azure::pem_or_der(given);
            let ours = PublicKey::from_spki_der(&spki);
            if ours.is_err() || PublicKey::from_spki_der(&given).ok() != ours.ok() {
                return Err(log.reject(GcpError::Ak(
                    "the given AK is not the AK certificate's key".into(),
                )));
            }
        }
        log.pass("ak", "the AK certificate's key signs the quote");
        let pcrs = tri!(crate::tpm::pcr_file_or_text(ev.pcrs));
        let quote = self.tpm.verify(
            TpmEvidence {
                quote: ev.quote,
                signature: ev.signature,
                ak: &spki,
                pcrs: &pcrs,
                nonce: ev.nonce,
                event_log: ev.event_log,
            },
            at,
        );
        let quote = match quote {
            Ok(v) => {
                carry(&mut log, &v.checks);
                v.claims
            }
            Err(r) => {
                carry(&mut log, &r.passed);
                return Err(log.reject(GcpError::Tpm(r.error)));
            }
        };
        Ok(log.finish(GcpClaims {
            tpm: "gce-vtpm",
            instance,
            ak_root: chain.anchor,
            quote,
        }))
    }
}

#[cfg(test)]
mod tests;
