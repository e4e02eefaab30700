//! The AMD SEV-SNP collector (kind `snp`), through `/dev/sev-guest` and the `sev` crate's
//! guest API (the ioctls and their `unsafe` live in `sev`, not here).
//!
//! Outside an SNP guest there is no `/dev/sev-guest` and the collector answers
//! [`CollectError::NotAvailable`]. Inside one it requests an *extended* report
//! (`SNP_GET_EXT_REPORT`, VMPL 0, message version 1) with
//! `report_data = binding || 32 zero bytes`: the architecture fixes that layout, and the
//! verifier rejects any other, so nothing here pads or cuts the binding.
//!
//! The endorsement comes from the extended report's certificate table, which the host
//! fills (`snphost import`, or the hypervisor's cert blob): the VCEK, or the VLEK where the
//! host provisioned one, is required; the ASK (or ASVK) and ARK are carried as PEM in
//! `ca_chain` when present (the verifier has built-in AMD roots otherwise). A table without
//! a VCEK/VLEK is [`CollectError::Failed`]. Fetching the VCEK from AMD's Key Distribution
//! Service (KDS) is deliberately out of scope: the agent makes no outbound internet
//! requests; a site that needs it provisions the host's cert table instead.
//!
//! Certificates are carried as the host stored them (the VCEK unchanged, DER or PEM; the
//! verifier accepts both); DER ASK/ARK entries are PEM-encoded for `ca_chain`.

use crate::collector::{CollectError, Collector, Evidence};
use crate::pem;
use custody_formats::binding::Binding;
use custody_formats::bundle::SnpEvidence;
use sev::firmware::guest::Firmware;
use sev::firmware::host::{CertTableEntry, CertType};
use std::io::ErrorKind;

const KIND: &str = "snp";

/// The SNP guest device.
pub const SEV_GUEST_DEVICE: &str = "/dev/sev-guest";

/// Size of an SNP attestation report (ABI 0x4A0 bytes); any other size is refused.
pub const REPORT_LEN: usize = 0x4A0;

/// Requests SNP extended reports from `/dev/sev-guest`.
#[derive(Debug, Default, Clone, Copy)]
pub struct SnpCollector;

impl SnpCollector {
    pub fn new() -> Self {
        Self
    }
}

impl Collector for SnpCollector {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn collect(&self, binding: &Binding) -> Result<Evidence, CollectError> {
        let mut fw = Firmware::open().map_err(|e| match e.kind() {
            ErrorKind::NotFound => CollectError::NotAvailable {
                kind: KIND,
                reason: format!("{SEV_GUEST_DEVICE}: {e} (not an SEV-SNP guest)"),
            },
            // The device is there but unusable (permissions, busy): that is a failure.
            _ => failed(format!("{SEV_GUEST_DEVICE}: {e}")),
        })?;
        let (report, certs) = fw
            .get_ext_report(None, Some(report_data(binding)), None)
            .map_err(|e| failed(format!("SNP_GET_EXT_REPORT: {e}")))?;
        evidence(report, certs.unwrap_or_default()).map(Evidence::Snp)
    }
}

/// The 64-byte `report_data` for a binding: the binding, then 32 zero bytes.
pub fn report_data(binding: &Binding) -> [u8; 64] {
    binding.snp_report_data()
}

/// Assemble evidence from the report and the certificate table (pure).
pub fn evidence(report: Vec<u8>, certs: Vec<CertTableEntry>) -> Result<SnpEvidence, CollectError> {
    if report.len() != REPORT_LEN {
        return Err(failed(format!(
            "the firmware returned a {}-byte report, expected {REPORT_LEN}",
            report.len()
        )));
    }
    let find = |t: &CertType| certs.iter().find(|c| &c.cert_type == t && !c.data.is_empty());
    let vcek = find(&CertType::VCEK)
        .or_else(|| find(&CertType::VLEK))
        .ok_or_else(|| {
            failed(
                "the extended report's certificate table has no VCEK or VLEK (the host \
                 provides none; fetching it from AMD KDS is not done by the agent)"
                    .into(),
            )
        })?;
    let mut ca = Vec::new();
    for entry in [find(&CertType::ASK), find(&CertType::ARK)].into_iter().flatten() {
        let pem = pem::chain_to_pem(&entry.data).ok_or_else(|| {
            failed(format!(
                "the {} certificate in the table is neither PEM nor DER",
                entry.cert_type
            ))
        })?;
        ca.extend_from_slice(&pem);
    }
    Ok(SnpEvidence {
        report,
        vcek: vcek.data.clone(),
        ca_chain: (!ca.is_empty()).then_some(ca),
    })
}

fn failed(reason: String) -> CollectError {
    CollectError::Failed { kind: KIND, reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn der(fill: u8) -> Vec<u8> {
        [&[0x30, 0x03][..], &[fill; 3]].concat()
    }

    fn entry(t: CertType, data: Vec<u8>) -> CertTableEntry {
        CertTableEntry { cert_type: t, data }
    }

    #[test]
    fn report_data_is_the_binding_then_zeros() {
        let b = Binding(core::array::from_fn(|i| i as u8 + 1));
        let rd = report_data(&b);
        assert_eq!(rd.len(), 64);
        assert_eq!(&rd[..32], b.as_bytes());
        assert_eq!(rd[32..], [0u8; 32]);
    }

    #[test]
    fn outside_an_snp_guest_it_is_not_available() {
        if std::path::Path::new(SEV_GUEST_DEVICE).exists() {
            return;
        }
        let e = SnpCollector::new().collect(&Binding([1; 32])).unwrap_err();
        match e {
            CollectError::NotAvailable { kind, reason } => {
                assert_eq!(kind, "snp");
                assert!(reason.contains(SEV_GUEST_DEVICE), "{reason}");
            }
            other => panic!("expected NotAvailable, got {other:?}"),
        }
    }

    #[test]
    fn cert_table_gives_vcek_and_pem_ca_chain() {
        let report = vec![0u8; REPORT_LEN];
        let ev = evidence(
            report.clone(),
            vec![
                entry(CertType::ARK, der(0xa)),
                entry(CertType::VCEK, der(0xc)),
                entry(CertType::ASK, der(0xb)),
            ],
        )
        .unwrap();
        assert_eq!(ev.report, report);
        assert_eq!(ev.vcek, der(0xc));
        let ca = ev.ca_chain.unwrap();
        // ASK first, then ARK, both PEM.
        assert_eq!(pem::classify(&ca), pem::ChainEncoding::Pem(2));
        let expected = [pem::der_to_pem(&der(0xb)), pem::der_to_pem(&der(0xa))].concat();
        assert_eq!(ca, expected.into_bytes());

        // VLEK is accepted where there is no VCEK; no CA entries -> no ca_chain.
        let ev = evidence(report.clone(), vec![entry(CertType::VLEK, der(0xd))]).unwrap();
        assert_eq!((ev.vcek, ev.ca_chain), (der(0xd), None));
    }

    #[test]
    fn missing_vcek_wrong_report_size_and_bad_ca_fail() {
        let report = vec![0u8; REPORT_LEN];
        for certs in [
            vec![],
            vec![entry(CertType::ASK, der(1)), entry(CertType::VCEK, vec![])],
        ] {
            match evidence(report.clone(), certs).unwrap_err() {
                CollectError::Failed { kind, reason } => {
                    assert_eq!(kind, "snp");
                    assert!(reason.contains("VCEK") && reason.contains("KDS"), "{reason}");
                }
                other => panic!("expected Failed, got {other:?}"),
            }
        }
        for len in [REPORT_LEN - 1, REPORT_LEN + 1, 0] {
            let certs = vec![entry(CertType::VCEK, der(1))];
            assert!(matches!(
                evidence(vec![0; len], certs),
                Err(CollectError::Failed { kind: "snp", .. })
            ));
        }
        let certs = vec![entry(CertType::VCEK, der(1)), entry(CertType::ASK, vec![1, 2, 3])];
        assert!(matches!(
            evidence(report, certs),
            Err(CollectError::Failed { kind: "snp", .. })
        ));
    }
}
