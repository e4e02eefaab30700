//! Whether hardware evidence of a round vouches for *this* node, and whether the
//! session key counts as held in confidential-VM memory.
//!
//! The round binding (SHA-256 over the nonce and the session keys) is computable from
//! public values, so a genuine SEV-SNP report or NVIDIA GPU report only proves that
//! *some* guest or GPU saw the round. It vouches for the node only when:
//! - SNP: the report comes from the operator's guest image (MEASUREMENT, HOST_DATA and
//!   VMPL equal the `[snp]` reference values) and its CHIP_ID is registered at the same
//!   site as the node's TPM EK;
//! - GPU: its device certificate serial is registered at the node's site.
//!
//! Evidence that contradicts a configured value fails the round at a named check
//! (`snp.vmpl`, `snp.measurement`, `snp.host_data`, `snp.platform`, `gpuN.platform`).
//! Evidence that verifies but cannot be tied to the node (no reference configured, no
//! registry, the node's EK not registered) is kept but does not count: the session key
//! is labelled `process` and the reasons say why. A GPU never strengthens key protection
//! (the session key does not live in GPU memory).

use crate::context::SnpReferenceValues;
use crate::findings::{device_json, failed_submod, mark_failed, Findings};
use crate::AppraisalError;
use custody_registry::model::{HardwareId, Registry};
use custody_verifier::check::{FailedCheck, Outcome};
use custody_verifier::ear::{Corroboration, Submod};
use serde::Serialize;
use thiserror::Error;

/// Evidence that contradicts a configured reference or the registry.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CvmError {
    #[error(
        "report VMPL is {got}, expected {expected} (the agent does not run at the attested privilege level)"
    )]
    Vmpl { expected: u32, got: u32 },
    #[error("report MEASUREMENT {got} is none of the configured measurements [{expected}]")]
    Measurement { expected: String, got: String },
    #[error("report HOST_DATA is {got}, expected {expected}")]
    HostData { expected: String, got: String },
    #[error("report ID key digest {got} is none of the configured digests [{expected}]")]
    IdKey { expected: String, got: String },
    #[error("reported TCB is below the minimum: {0}")]
    TcbMin(String),
    #[error("guest policy has {0} on, which the reference forbids")]
    GuestPolicy(String),
    #[error("TD {what} {got} is not the reference ({expected})")]
    TdMeasurement {
        what: &'static str,
        expected: String,
        got: String,
    },
    #[error("the TD is debuggable (TD attributes {0}): its memory is open to the host")]
    TdDebug(String),
    #[error("TD {what} {got} is not the reference {expected} (value/mask): bits {differ} differ")]
    TdMasked {
        what: &'static str,
        expected: String,
        got: String,
        differ: String,
    },
    #[error("{id} is {got}, but the node's TPM EK is registered at site {expected}: the evidence comes from another platform")]
    Platform {
        id: String,
        expected: String,
        got: String,
    },
}

impl CvmError {
    /// The check's stable name (prefixed with the device: `snp.vmpl`, `gpu0.platform`).
    pub fn check(&self) -> &'static str {
        match self {
            Self::Vmpl { .. } => "vmpl",
            Self::Measurement { .. } => "measurement",
            Self::HostData { .. } => "host_data",
            Self::IdKey { .. } => "id_key_digest",
            Self::TcbMin(_) => "tcb_min",
            Self::GuestPolicy(_) => "guest_policy",
            Self::TdMeasurement { what, .. } => what,
            Self::TdDebug(_) => "debug",
            Self::TdMasked { what, .. } => what,
            Self::Platform { .. } => "platform",
        }
    }
}

/// How a device's evidence relates to the node (policy input, per device).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Binding {
    /// Registered at the node's site.
    Bound,
    /// Cannot be tied to the node: no registry, or the node's EK is not in it.
    Unbound,
}

/// The SNP claims the reference comparison reads (hex as the verifier writes them).
#[derive(Debug, Clone, Copy)]
pub struct SnpGuest<'a> {
    pub vmpl: u32,
    pub measurement: &'a str,
    pub host_data: &'a str,
    pub id_key_digest: &'a str,
    pub reported_tcb: custody_formats::snp::Tcb,
    pub policy: custody_formats::snp::GuestPolicy,
}

/// `Ok(true)`: matched; `Ok(false)`: nothing configured (the key stays `process`).
pub fn compare_snp_reference(r: Option<&SnpReferenceValues>, g: &SnpGuest<'_>) -> Result<bool, CvmError> {
    let Some(r) = r else { return Ok(false) };
    if g.vmpl != r.vmpl {
        return Err(CvmError::Vmpl {
            expected: r.vmpl,
            got: g.vmpl,
        });
    }
    let got = g.measurement.to_ascii_lowercase();
    if !r.measurements.iter().any(|m| hex::encode(m) == got) {
        return Err(CvmError::Measurement {
            expected: r
                .measurements
                .iter()
                .map(hex::encode)
                .collect::<Vec<_>>()
                .join(", "),
            got,
        });
    }
    if let Some(h) = &r.host_data {
        let got = g.host_data.to_ascii_lowercase();
        if hex::encode(h) != got {
            return Err(CvmError::HostData {
                expected: hex::encode(h),
                got,
            });
        }
    }
    if !r.id_key_digests.is_empty() {
        let got = g.id_key_digest.to_ascii_lowercase();
        if !r.id_key_digests.iter().any(|d| hex::encode(d) == got) {
            return Err(CvmError::IdKey {
                expected: r
                    .id_key_digests
                    .iter()
                    .map(hex::encode)
                    .collect::<Vec<_>>()
                    .join(", "),
                got,
            });
        }
    }
    if let Some(min) = &r.min_tcb {
        let t = &g.reported_tcb;
        let below: Vec<String> = [
            ("bootloader", t.bootloader, min.bootloader),
            ("tee", t.tee, min.tee),
            ("snp", t.snp, min.snp),
            ("microcode", t.microcode, min.microcode),
        ]
        .iter()
        .filter(|(_, got, want)| got < want)
        .map(|(name, got, want)| format!("{name} {got} < {want}"))
        .collect();
        if !below.is_empty() {
            return Err(CvmError::TcbMin(below.join(", ")));
        }
    }
    let p = &g.policy;
    let on: Vec<&str> = r
        .forbid_policy
        .iter()
        .map(String::as_str)
        .filter(|b| match *b {
            "smt" => p.smt,
            "migrate_ma" => p.migrate_ma,
            "debug" => p.debug,
            "cxl_allow" => p.cxl_allow,
            "single_socket" => p.single_socket,
            _ => false,
        })
        .collect();
    if !on.is_empty() {
        return Err(CvmError::GuestPolicy(on.join(", ")));
    }
    Ok(true)
}

/// Is `id` registered at the site of the node's EK (`ek_sha256`, hex)?
pub fn platform(
    registry: Option<&Registry>,
    node_ek: Option<&str>,
    id: &HardwareId,
) -> Result<Binding, CvmError> {
    let Some(reg) = registry else {
        return Ok(Binding::Unbound);
    };
    let ek = node_ek
        .and_then(|e| hex::decode(e).ok())
        .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
        .map(HardwareId::EkCertSha256);
    let site_of = |want: &HardwareId| {
        reg.hardware
            .iter()
            .find(|h| &h.id == want)
            .map(|h| h.site.clone())
    };
    let Some(node_site) = ek.as_ref().and_then(site_of) else {
        return Ok(Binding::Unbound);
    };
    match site_of(id) {
        Some(s) if s == node_site => Ok(Binding::Bound),
        other => Err(CvmError::Platform {
            id: id.to_string(),
            expected: node_site,
            got: other.map_or_else(
                || "not in the registry".to_owned(),
                |s| format!("registered at site {s}"),
            ),
        }),
    }
}

/// Why a genuine report of a kind does not vouch for the session key, as the reasons
/// say it.
#[derive(Debug, Clone, Copy)]
pub struct Unvouched {
    /// No reference values configured.
    pub unconfigured: &'static str,
    /// The hardware cannot be tied to the node.
    pub unbound: &'static str,
}

/// The common end of a confidential-VM stage (SNP, TDX): the verifier's outcome becomes
/// device `kind` (a failure named `<kind>.<check>`). For a genuine report `tie` compares
/// the reference values and asks the registry; a mismatch fails at `<kind>.<field>`.
/// Returns whether the session key counts as in CVM memory.
pub fn record<C: Serialize, E: FailedCheck>(
    kind: &str,
    outcome: &Outcome<C, E>,
    tie: impl FnOnce(&C) -> Result<(bool, Binding), CvmError>,
    why: Unvouched,
    f: &mut Findings,
) -> Result<bool, AppraisalError> {
    let rejected = |f: &mut Findings, check: &str| {
        f.key_protection_reasons
            .push(format!("{kind}: evidence rejected by `{check}`"));
    };
    let mut device = device_json(kind, outcome);
    let mut sub = Submod::from_outcome(outcome, Corroboration::default())?;
    let mut cvm = false;
    match outcome.as_ref().map(|v| tie(&v.claims)) {
        Err(r) => {
            let check = format!("{kind}.{}", r.error.check());
            rejected(f, &check);
            f.fail(&check, r.error.to_string());
        }
        // The binding is public: a genuine report proves only that *some* guest saw this
        // round. It vouches for this node's key only from the operator's image on
        // hardware registered at the node's site.
        Ok(Ok((matched, platform))) => {
            if !matched {
                f.key_protection_reasons.push(why.unconfigured.into());
            }
            if platform != Binding::Bound {
                f.key_protection_reasons.push(why.unbound.into());
            }
            cvm = matched && platform == Binding::Bound;
            if let Some(o) = device.as_object_mut() {
                o.insert(
                    "guest".into(),
                    serde_json::json!({
                        "reference": if matched { "matched" } else { "unconfigured" },
                        "platform": platform,
                    }),
                );
            }
        }
        Ok(Err(e)) => {
            let check = format!("{kind}.{}", e.check());
            rejected(f, &check);
            mark_failed(&mut device, e.check());
            sub = failed_submod(&check, &e.to_string());
            f.fail(&check, e.to_string());
        }
    }
    f.device(kind, device, sub);
    Ok(cvm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use custody_registry::model::Hardware;

    fn reference() -> SnpReferenceValues {
        SnpReferenceValues {
            measurements: vec![[0xaa; 48]],
            host_data: Some([0x11; 32]),
            vmpl: 0,
            id_key_digests: vec![[0xcc; 48]],
            min_tcb: Some(crate::context::MinTcb {
                bootloader: 3,
                tee: 0,
                snp: 8,
                microcode: 0x73,
            }),
            forbid_policy: vec!["migrate_ma".into(), "debug".into()],
        }
    }

    fn tcb(snp: u8, microcode: u8) -> custody_formats::snp::Tcb {
        custody_formats::snp::Tcb {
            raw: 0,
            fmc: None,
            bootloader: 3,
            tee: 0,
            snp,
            microcode,
        }
    }

    #[test]
    fn each_snp_field_is_named_when_it_differs() {
        let (m, h, k) = (
            hex::encode([0xaa; 48]),
            hex::encode([0x11; 32]),
            hex::encode([0xcc; 48]),
        );
        let ok = SnpGuest {
            vmpl: 0,
            measurement: &m.to_ascii_uppercase(),
            host_data: &h,
            id_key_digest: &k,
            reported_tcb: tcb(8, 0x73),
            policy: custody_formats::snp::GuestPolicy::from_raw(0x30000),
        };
        assert_eq!(compare_snp_reference(Some(&reference()), &ok), Ok(true));
        assert_eq!(compare_snp_reference(None, &ok), Ok(false));
        let other_m = hex::encode([0xbb; 48]);
        let other_h = hex::encode([0x22; 32]);
        for (g, check) in [
            (SnpGuest { vmpl: 3, ..ok }, "vmpl"),
            (
                SnpGuest {
                    measurement: &other_m,
                    ..ok
                },
                "measurement",
            ),
            (
                SnpGuest {
                    host_data: &other_h,
                    ..ok
                },
                "host_data",
            ),
            (
                SnpGuest {
                    id_key_digest: &other_m,
                    ..ok
                },
                "id_key_digest",
            ),
            (
                SnpGuest {
                    reported_tcb: tcb(7, 0x73),
                    ..ok
                },
                "tcb_min",
            ),
            (
                SnpGuest {
                    reported_tcb: tcb(8, 0x72),
                    ..ok
                },
                "tcb_min",
            ),
            (
                SnpGuest {
                    // Bit 18: a migration agent may move the guest.
                    policy: custody_formats::snp::GuestPolicy::from_raw(0x30000 | 1 << 18),
                    ..ok
                },
                "guest_policy",
            ),
        ] {
            let e = compare_snp_reference(Some(&reference()), &g).unwrap_err();
            assert_eq!(e.check(), check, "{e}");
        }
        // Each mismatch names the field, what was expected and what came.
        let e = compare_snp_reference(
            Some(&reference()),
            &SnpGuest {
                reported_tcb: tcb(7, 0x70),
                ..ok
            },
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "reported TCB is below the minimum: snp 7 < 8, microcode 112 < 115"
        );
        // A higher TCB than the minimum passes.
        assert_eq!(
            compare_snp_reference(
                Some(&reference()),
                &SnpGuest {
                    reported_tcb: tcb(9, 0x80),
                    ..ok
                }
            ),
            Ok(true)
        );
    }

    #[test]
    fn hardware_counts_only_at_the_node_s_site() {
        let ek = [1u8; 32];
        let reg = Registry {
            hardware: vec![
                Hardware {
                    site: "par1".into(),
                    id: HardwareId::EkCertSha256(ek),
                    label: None,
                },
                Hardware {
                    site: "par1".into(),
                    id: HardwareId::SnpChipId([2; 64]),
                    label: None,
                },
                Hardware {
                    site: "fra1".into(),
                    id: HardwareId::SnpChipId([3; 64]),
                    label: None,
                },
            ],
            version: 1,
            issued_at: 0,
            authority: "test".into(),
            entities: vec![],
            sites: vec![],
        };
        let ek_hex = hex::encode(ek);
        let ek = Some(ek_hex.as_str());
        assert_eq!(
            platform(Some(&reg), ek, &HardwareId::SnpChipId([2; 64])),
            Ok(Binding::Bound)
        );
        for foreign in [HardwareId::SnpChipId([3; 64]), HardwareId::SnpChipId([4; 64])] {
            assert_eq!(
                platform(Some(&reg), ek, &foreign).unwrap_err().check(),
                "platform"
            );
        }
        assert_eq!(
            platform(None, ek, &HardwareId::SnpChipId([3; 64])),
            Ok(Binding::Unbound)
        );
        let other_ek = hex::encode([9u8; 32]);
        assert_eq!(
            platform(Some(&reg), Some(&other_ek), &HardwareId::SnpChipId([3; 64])),
            Ok(Binding::Unbound)
        );
    }
}
