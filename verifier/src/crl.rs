//! Certificate revocation lists (RFC 5280 section 5), as AMD's KDS serves them for the
//! SEV-SNP chains: one CRL per ARK (Milan, Genoa, Turin), signed by it with RSASSA-PSS,
//! listing the ASK/ASVKs it revoked. Parsing is pure and bounded; a CRL counts only once
//! its signature verifies under the anchor it names as issuer.
//!
//! A chain's revocation status ([`Revocation`]): `good` (a CRL of the anchor, current at
//! the appraisal time, does not list the certificate the anchor issued), `revoked` (it
//! does: the evidence fails at check `revocation`), `stale` (the newest CRL of the anchor
//! is past its nextUpdate plus the grace: policies decide), `unchecked` (no CRL of the
//! anchor was given: policies decide). A CRL that does not verify, or that is not yet
//! valid, fails at `revocation` too: collateral is checked item by item, never trusted
//! as a whole.

use crate::x509::{PublicKey, TrustAnchor};
use serde::Serialize;
use thiserror::Error;
use x509_parser::prelude::*;
use x509_parser::revocation_list::CertificateRevocationList;

/// Largest CRL accepted (AMD's are under 1 KiB).
pub const MAX_CRL_LEN: usize = 1 << 20;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum CrlError {
    #[error("CRL: {0}")]
    Parse(String),
    #[error("the CRL of {issuer} does not verify under that anchor's key: {reason}")]
    Signature { issuer: String, reason: String },
    #[error("the CRL of {issuer} starts at {this_update}, after the appraisal time {at}")]
    NotYetValid {
        issuer: String,
        this_update: i64,
        at: i64,
    },
}

/// One parsed CRL (not yet checked against any key).
#[derive(Debug, Clone)]
pub struct Crl {
    der: Vec<u8>,
    /// The issuer's raw DER name, compared byte for byte with the anchor's subject.
    issuer: Vec<u8>,
    issuer_text: String,
    pub this_update: i64,
    pub next_update: Option<i64>,
    /// Revoked serial numbers (big-endian, no leading zero bytes) and their dates.
    revoked: Vec<(Vec<u8>, i64)>,
}

fn serial_key(raw: &[u8]) -> Vec<u8> {
    let first = raw.iter().position(|b| *b != 0).unwrap_or(raw.len());
    raw.get(first..).unwrap_or_default().to_vec()
}

impl Crl {
    /// Parse one CRL, PEM (`X509 CRL`) or DER.
    pub fn parse(input: &[u8]) -> Result<Self, CrlError> {
        if input.len() > MAX_CRL_LEN {
            return Err(CrlError::Parse(format!(
                "{} bytes, more than {MAX_CRL_LEN}",
                input.len()
            )));
        }
        let der = if input.starts_with(b"-----BEGIN") {
            let (_, pem) =
                x509_parser::pem::parse_x509_pem(input).map_err(|e| CrlError::Parse(e.to_string()))?;
            if pem.label != "X509 CRL" {
                return Err(CrlError::Parse(format!(
                    "PEM label {:?}, want X509 CRL",
                    pem.label
                )));
            }
            pem.contents
        } else {
            input.to_vec()
        };
        let (rest, crl) =
            CertificateRevocationList::from_der(&der).map_err(|e| CrlError::Parse(e.to_string()))?;
        if !rest.is_empty() {
            return Err(CrlError::Parse("trailing bytes after the CRL".into()));
        }
        let revoked = crl
            .iter_revoked_certificates()
            .map(|r| (serial_key(r.raw_serial()), r.revocation_date.timestamp()))
            .collect();
        Ok(Self {
            issuer: crl.tbs_cert_list.issuer.as_raw().to_vec(),
            issuer_text: crl.tbs_cert_list.issuer.to_string(),
            this_update: crl.last_update().timestamp(),
            next_update: crl.next_update().map(|t| t.timestamp()),
            revoked,
            der,
        })
    }

    /// Whether `anchor` is the CRL's issuer (by name).
    pub fn issued_by(&self, anchor: &TrustAnchor) -> bool {
        anchor.subject_raw() == self.issuer.as_slice()
    }

    /// The signature, under `anchor`'s key.
    pub fn verify_signature(&self, anchor: &TrustAnchor) -> Result<(), CrlError> {
        let err = |reason: String| CrlError::Signature {
            issuer: self.issuer_text.clone(),
            reason,
        };
        let (_, crl) = CertificateRevocationList::from_der(&self.der).map_err(|e| err(e.to_string()))?;
        let tbs = crl.tbs_cert_list.as_ref();
        let key: &PublicKey = anchor.key();
        match key.verify_x509(&crl.signature_algorithm, tbs, &crl.signature_value.data) {
            Ok(true) => Ok(()),
            Ok(false) => Err(err("signature does not verify".into())),
            Err(e) => Err(err(e)),
        }
    }

    /// When `serial` (raw, big-endian) was revoked, if listed.
    pub fn revoked(&self, serial: &[u8]) -> Option<i64> {
        let k = serial_key(serial);
        self.revoked.iter().find(|(s, _)| *s == k).map(|(_, d)| *d)
    }

    pub fn issuer(&self) -> &str {
        &self.issuer_text
    }

    /// How many certificates it lists.
    pub fn len(&self) -> usize {
        self.revoked.len()
    }

    pub fn is_empty(&self) -> bool {
        self.revoked.is_empty()
    }
}

/// A chain's revocation status, in the claims and the EAR.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Revocation {
    Good {
        crl_this_update: i64,
        crl_next_update: Option<i64>,
    },
    Revoked {
        serial: String,
        revoked_at: i64,
    },
    Stale {
        crl_next_update: i64,
    },
    Unchecked,
}

impl Revocation {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Good { .. } => "good",
            Self::Revoked { .. } => "revoked",
            Self::Stale { .. } => "stale",
            Self::Unchecked => "unchecked",
        }
    }
}

/// The status of the certificates `anchor` issued in a chain (`serials`, raw), from the
/// newest of `crls` that `anchor` issued and signed, at time `at` with `grace` seconds
/// past nextUpdate tolerated.
pub fn status(
    crls: &[Crl],
    anchor: &TrustAnchor,
    serials: &[Vec<u8>],
    at: i64,
    grace: i64,
) -> Result<Revocation, CrlError> {
    let mut newest: Option<&Crl> = None;
    for c in crls.iter().filter(|c| c.issued_by(anchor)) {
        c.verify_signature(anchor)?;
        if newest.is_none_or(|n| c.this_update > n.this_update) {
            newest = Some(c);
        }
    }
    let Some(c) = newest else {
        return Ok(Revocation::Unchecked);
    };
    if c.this_update > at {
        return Err(CrlError::NotYetValid {
            issuer: c.issuer_text.clone(),
            this_update: c.this_update,
            at,
        });
    }
    // Revoked is revoked, fresh or not.
    for s in serials {
        if let Some(d) = c.revoked(s) {
            return Ok(Revocation::Revoked {
                serial: crate::hex(serial_key(s)),
                revoked_at: d,
            });
        }
    }
    match c.next_update {
        Some(n) if at > n.saturating_add(grace) => Ok(Revocation::Stale { crl_next_update: n }),
        n => Ok(Revocation::Good {
            crl_this_update: c.this_update,
            crl_next_update: n,
        }),
    }
}

#[cfg(test)]
mod tests;
