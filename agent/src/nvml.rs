//! The NVIDIA GPU collector (kind `nvgpu`), through NVML (`nvml-wrapper`).
//!
//! NVML is loaded at run time (`dlopen("libnvidia-ml.so.1")`), so the agent builds and
//! runs on nodes without the NVIDIA driver: there the collector answers
//! [`CollectError::NotAvailable`] naming the library, as it does when `nvmlInit` fails or
//! NVML lists no GPU.
//!
//! For every GPU it reads an **unattested** identity ([`GpuIdentity`]: name, UUID, serial,
//! driver and VBIOS versions, architecture, compute capability, memory, PCI bus id) and the
//! confidential-computing (CC) state. Each CC query's answer, or its NVML error, is kept in
//! `GpuIdentity::cc` under a stable key ([`CC_QUERIES`]): a query the driver does not
//! support is recorded, never fatal.
//!
//! A GPU is treated as CC-on when NVML's CC settings say the CC feature is enabled (or,
//! for drivers without that query, when the combined CC status is true); see [`cc_on`].
//! For such a GPU the collector asks for the SPDM attestation report with the round's
//! binding as the 32-byte requester nonce, and for the attestation certificate chain
//! (`attestationCertChain`, passed on unchanged: PEM from current drivers). A CC-on GPU
//! whose report or chain cannot be read fails the round ([`CollectError::Failed`]): a
//! node that should attest its GPU must not silently send none. A CC-off GPU contributes
//! its identity only, with `attested: false`.
//!
//! NVML's nonce is `[u8; NVML_CC_GPU_CEC_NONCE_SIZE]`; the binding is `[u8; 32]` and is
//! passed as that array type, so a wrapper whose nonce size is not 32 fails to compile
//! instead of the binding being padded or cut.
//!
//! nvml-wrapper slices driver-filled buffers by driver-reported sizes and would panic on
//! a size larger than its buffer. Every NVML call here runs under
//! [`std::panic::catch_unwind`]; a panic becomes [`CollectError::Failed`] naming the call.
//! NVML is initialised for each collection and shut down after it (the `Nvml` handle is
//! dropped), so a driver loaded after the agent started is picked up on the next round.

use crate::collector::{CollectError, Collector, Evidence, GpuRound};
use custody_formats::binding::Binding;
use custody_formats::bundle::{GpuEvidence, GpuIdentity};
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::{Device, Nvml};
use std::collections::BTreeMap;
use std::fmt::Display;
use std::panic::{catch_unwind, AssertUnwindSafe};

const KIND: &str = "nvgpu";

/// The library NVML is loaded from (Linux).
pub const NVML_LIBRARY: &str = "libnvidia-ml.so.1";

/// Keys of `GpuIdentity::cc`, in the order they are queried.
pub const CC_QUERIES: [&str; 6] = [
    // nvmlSystemGetConfComputeSettings: CC feature on.
    "cc_enabled",
    // nvmlSystemGetConfComputeSettings: devtools (debug) mode on.
    "cc_dev_mode",
    // nvmlSystemGetConfComputeSettings: multi-GPU protected PCIe mode.
    "cc_multi_gpu_protected_pcie",
    // nvmlSystemGetConfComputeState + GpusReadyState: CC on, production, accepting work.
    "cc_status_ready",
    // nvmlSystemGetConfComputeGpusReadyState: GPUs accept CUDA work.
    "cc_gpus_ready",
    // nvmlSystemGetConfComputeCapabilities: CPU and GPU CC capabilities.
    "cc_capabilities",
];

/// Collects GPU identity and, for CC-on GPUs, SPDM attestation reports.
#[derive(Debug, Default, Clone, Copy)]
pub struct NvmlCollector;

/// A CC-on GPU's attestation material as NVML returned it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuAttestation {
    pub evidence: GpuEvidence,
    /// The CEC (HMC/ERoT) attestation report, when the driver returned one (not appraised).
    pub cec_report: Option<Vec<u8>>,
}

/// Everything read from one GPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuReading {
    pub identity: GpuIdentity,
    /// `None`: CC off, nothing asked. `Some(Err)`: CC on but the report or chain failed.
    pub attestation: Option<Result<GpuAttestation, String>>,
}

impl NvmlCollector {
    pub fn new() -> Self {
        Self
    }

    /// Read every GPU without deciding the round: the probe shows per-GPU failures that
    /// [`Collector::collect`] turns into [`CollectError::Failed`].
    pub fn read(&self, binding: &Binding) -> Result<Vec<GpuReading>, CollectError> {
        let nvml = match guarded("nvmlInit", Nvml::init)? {
            Ok(n) => n,
            Err(e) => return Err(not_available(init_reason(&e))),
        };
        let count = match guarded("nvmlDeviceGetCount", || nvml.device_count())? {
            Ok(n) => n,
            Err(e) => return Err(failed(format!("nvmlDeviceGetCount: {e}"))),
        };
        if count == 0 {
            return Err(not_available(format!(
                "{NVML_LIBRARY} loaded but NVML lists no GPU"
            )));
        }
        let driver = guarded("nvmlSystemGetDriverVersion", || nvml.sys_driver_version())?;
        let mut out = Vec::new();
        for index in 0..count {
            let device = match guarded("nvmlDeviceGetHandleByIndex", || nvml.device_by_index(index))? {
                Ok(d) => d,
                Err(e) => return Err(failed(format!("GPU {index}: nvmlDeviceGetHandleByIndex: {e}"))),
            };
            out.push(read_device(index, &device, &driver, binding)?);
        }
        Ok(out)
    }
}

impl Collector for NvmlCollector {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn collect(&self, binding: &Binding) -> Result<Evidence, CollectError> {
        assemble(self.read(binding)?).map(Evidence::Nvgpu)
    }
}

fn read_device(
    index: u32,
    d: &Device<'_>,
    driver: &Result<String, NvmlError>,
    binding: &Binding,
) -> Result<GpuReading, CollectError> {
    let cc_enabled = guarded("nvmlSystemGetConfComputeSettings", || d.is_cc_enabled())?;
    let cc_status = guarded("nvmlSystemGetConfComputeState", || {
        d.check_confidential_compute_status()
    })?;
    let mut cc = BTreeMap::new();
    cc.insert("cc_enabled".to_string(), answer(&cc_enabled));
    let dev_mode = guarded("nvmlSystemGetConfComputeSettings", || d.is_cc_dev_mode_enabled())?;
    cc.insert("cc_dev_mode".to_string(), answer(&dev_mode));
    let ppcie = guarded("nvmlSystemGetConfComputeSettings", || {
        d.is_multi_gpu_protected_pcie_enabled()
    })?;
    cc.insert("cc_multi_gpu_protected_pcie".to_string(), answer(&ppcie));
    cc.insert("cc_status_ready".to_string(), answer(&cc_status));
    let ready = guarded("nvmlSystemGetConfComputeGpusReadyState", || {
        d.get_confidential_compute_state()
    })?;
    cc.insert("cc_gpus_ready".to_string(), answer(&ready));
    let caps = guarded("nvmlSystemGetConfComputeCapabilities", || {
        d.get_confidential_compute_capabilities()
    })?
    .map(|c| format!("cpu={:?} gpus={:?}", c.cpu_caps, c.gpus_caps));
    cc.insert("cc_capabilities".to_string(), answer(&caps));

    let answers = Answers {
        name: guarded("nvmlDeviceGetName", || d.name())?.ok(),
        uuid: guarded("nvmlDeviceGetUUID", || d.uuid())?.ok(),
        driver_version: driver.as_ref().ok().cloned(),
        vbios_version: guarded("nvmlDeviceGetVbiosVersion", || d.vbios_version())?.ok(),
        architecture: guarded("nvmlDeviceGetArchitecture", || d.architecture())?
            .ok()
            .map(|a| a.to_string()),
        compute_capability: guarded("nvmlDeviceGetCudaComputeCapability", || {
            d.cuda_compute_capability()
        })?
        .ok()
        .map(|c| (c.major, c.minor)),
        memory_bytes: guarded("nvmlDeviceGetMemoryInfo_v2", || d.memory_info())?
            .ok()
            .map(|m| m.total),
        serial: guarded("nvmlDeviceGetSerial", || d.serial())?.ok(),
        pci_bus_id: guarded("nvmlDeviceGetPciInfo_v3", || d.pci_info())?
            .ok()
            .map(|p| p.bus_id),
        cc,
    };

    let on = cc_on(
        &cc_enabled.map_err(|e| e.to_string()),
        &cc_status.map_err(|e| e.to_string()),
    );
    let attestation = if on {
        Some(attest(index, d, binding)?)
    } else {
        None
    };
    let attested = matches!(attestation, Some(Ok(_)));
    Ok(GpuReading {
        identity: identity(index, answers, attested),
        attestation,
    })
}

/// Report and chain of a CC-on GPU; `Err` holds the NVML failure (a panic is `Failed`).
fn attest(
    index: u32,
    d: &Device<'_>,
    binding: &Binding,
) -> Result<Result<GpuAttestation, String>, CollectError> {
    // `*binding.as_bytes()` is `[u8; 32]`: this only compiles while NVML's nonce is 32 bytes.
    let nonce = *binding.as_bytes();
    let report = match guarded("nvmlDeviceGetConfComputeGpuAttestationReport", || {
        d.confidential_compute_gpu_attestation_report(nonce)
    })? {
        Ok(r) => r,
        Err(e) => return Ok(Err(format!("nvmlDeviceGetConfComputeGpuAttestationReport: {e}"))),
    };
    let certs = match guarded("nvmlDeviceGetConfComputeGpuCertificate", || {
        d.confidential_compute_gpu_certificate()
    })? {
        Ok(c) => c,
        Err(e) => return Ok(Err(format!("nvmlDeviceGetConfComputeGpuCertificate: {e}"))),
    };
    if report.attestation_report.is_empty() {
        return Ok(Err("the driver returned an empty attestation report".into()));
    }
    if certs.attestation_cert_chain.is_empty() {
        return Ok(Err(
            "the driver returned an empty attestation certificate chain".into()
        ));
    }
    Ok(Ok(GpuAttestation {
        evidence: GpuEvidence {
            index,
            report: report.attestation_report,
            cert_chain: certs.attestation_cert_chain,
        },
        cec_report: report
            .is_cec_attestation_report_present
            .then_some(report.cec_attestation_report),
    }))
}

/// NVML's answers for one GPU's identity (`None`: NVML did not answer).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answers {
    pub name: Option<String>,
    pub uuid: Option<String>,
    pub driver_version: Option<String>,
    pub vbios_version: Option<String>,
    pub architecture: Option<String>,
    pub compute_capability: Option<(i32, i32)>,
    pub memory_bytes: Option<u64>,
    pub serial: Option<String>,
    pub pci_bus_id: Option<String>,
    pub cc: BTreeMap<String, String>,
}

/// The bundle's identity record for GPU `index`.
pub fn identity(index: u32, a: Answers, attested: bool) -> GpuIdentity {
    GpuIdentity {
        index,
        name: a.name,
        uuid: a.uuid,
        driver_version: a.driver_version,
        vbios_version: a.vbios_version,
        architecture: a.architecture,
        compute_capability: a.compute_capability.map(|(ma, mi)| format!("{ma}.{mi}")),
        memory_bytes: a.memory_bytes,
        serial: a.serial,
        pci_bus_id: a.pci_bus_id,
        cc: a.cc,
        attested,
    }
}

/// Whether to ask a GPU for a report: the CC feature is enabled per NVML's CC settings;
/// a driver without that query is CC-on when its combined status (CC on, production,
/// ready) is true. Errors and `false` mean off.
pub fn cc_on(enabled: &Result<bool, String>, status: &Result<bool, String>) -> bool {
    match enabled {
        Ok(on) => *on,
        Err(_) => matches!(status, Ok(true)),
    }
}

/// A query's answer as recorded in `GpuIdentity::cc`.
pub fn answer<T: Display, E: Display>(r: &Result<T, E>) -> String {
    match r {
        Ok(v) => v.to_string(),
        Err(e) => format!("error: {e}"),
    }
}

/// Turn per-GPU readings into the round's GPU part: a CC-on GPU without a report fails it.
pub fn assemble(readings: Vec<GpuReading>) -> Result<GpuRound, CollectError> {
    let mut round = GpuRound::default();
    for r in readings {
        match r.attestation {
            Some(Ok(a)) => round.evidence.push(a.evidence),
            Some(Err(e)) => {
                return Err(failed(format!(
                    "GPU {} is in confidential-computing mode but gave no evidence: {e}",
                    r.identity.index
                )))
            }
            None => {}
        }
        round.identities.push(r.identity);
    }
    Ok(round)
}

fn init_reason(e: &NvmlError) -> String {
    match e {
        NvmlError::LibloadingError(l) => format!("{NVML_LIBRARY} could not be loaded: {l}"),
        other => format!("{NVML_LIBRARY}: nvmlInit failed: {other}"),
    }
}

/// Run one NVML call, turning a panic inside nvml-wrapper into `Failed` naming the call.
fn guarded<T>(call: &'static str, f: impl FnOnce() -> T) -> Result<T, CollectError> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|p| {
        let msg = p
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        failed(format!(
            "{call} panicked in nvml-wrapper (inconsistent driver answer?): {msg}"
        ))
    })
}

fn not_available(reason: String) -> CollectError {
    CollectError::NotAvailable { kind: KIND, reason }
}

fn failed(reason: String) -> CollectError {
    CollectError::Failed { kind: KIND, reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(index: u32, attestation: Option<Result<GpuAttestation, String>>) -> GpuReading {
        let attested = matches!(attestation, Some(Ok(_)));
        GpuReading {
            identity: identity(index, Answers::default(), attested),
            attestation,
        }
    }

    fn att(index: u32) -> GpuAttestation {
        GpuAttestation {
            evidence: GpuEvidence {
                index,
                report: vec![0x11, 0xe0],
                cert_chain: b"-----BEGIN CERTIFICATE-----".to_vec(),
            },
            cec_report: None,
        }
    }

    #[test]
    fn without_nvml_the_collector_is_not_available_and_names_the_library() {
        // This machine has no NVIDIA driver; on one that has, the test says nothing.
        if std::path::Path::new("/dev/nvidiactl").exists() {
            return;
        }
        let e = NvmlCollector::new().collect(&Binding([9; 32])).unwrap_err();
        match e {
            CollectError::NotAvailable { kind, reason } => {
                assert_eq!(kind, "nvgpu");
                assert!(reason.contains(NVML_LIBRARY), "{reason}");
            }
            other => panic!("expected NotAvailable, got {other:?}"),
        }
        assert_eq!(NvmlCollector::new().kind(), "nvgpu");
    }

    #[test]
    fn identity_carries_every_answer_and_none_where_nvml_declined() {
        let a = Answers {
            name: Some("NVIDIA H100 80GB HBM3".into()),
            uuid: Some("GPU-1".into()),
            driver_version: Some("550.90.07".into()),
            vbios_version: Some("96.00.99.00.01".into()),
            architecture: Some("Hopper".into()),
            compute_capability: Some((9, 0)),
            memory_bytes: Some(85_520_809_984),
            serial: None,
            pci_bus_id: Some("00000000:1A:00.0".into()),
            cc: BTreeMap::from([("cc_enabled".into(), "true".into())]),
        };
        let id = identity(3, a, true);
        assert_eq!(id.index, 3);
        assert_eq!(id.compute_capability.as_deref(), Some("9.0"));
        assert_eq!(id.memory_bytes, Some(85_520_809_984));
        assert_eq!(id.serial, None);
        assert_eq!(id.cc["cc_enabled"], "true");
        assert!(id.attested);
        let empty = identity(0, Answers::default(), false);
        assert!(empty.name.is_none() && empty.compute_capability.is_none() && !empty.attested);
    }

    #[test]
    fn cc_is_on_only_when_nvml_says_so() {
        let e = || Err::<bool, String>("NotSupported".into());
        assert!(cc_on(&Ok(true), &e()));
        assert!(
            !cc_on(&Ok(false), &Ok(true)),
            "the settings query decides when it answers"
        );
        assert!(cc_on(&e(), &Ok(true)));
        assert!(!cc_on(&e(), &Ok(false)));
        assert!(!cc_on(&e(), &e()));
    }

    #[test]
    fn answers_record_values_and_errors() {
        assert_eq!(answer(&Ok::<bool, NvmlError>(true)), "true");
        assert_eq!(
            answer(&Err::<bool, _>(NvmlError::NotSupported)),
            format!("error: {}", NvmlError::NotSupported)
        );
        assert!(answer(&Err::<bool, _>(NvmlError::NotSupported)).starts_with("error: "));
    }

    #[test]
    fn a_cc_on_gpu_without_evidence_fails_the_round() {
        let r = assemble(vec![reading(0, Some(Ok(att(0)))), reading(1, None)]).unwrap();
        assert_eq!(r.evidence, vec![att(0).evidence]);
        assert_eq!(r.identities.len(), 2);
        assert!(r.identities[0].attested && !r.identities[1].attested);

        let e = assemble(vec![
            reading(0, Some(Ok(att(0)))),
            reading(
                1,
                Some(Err("nvmlDeviceGetConfComputeGpuAttestationReport: Unknown".into())),
            ),
        ])
        .unwrap_err();
        match e {
            CollectError::Failed { kind, reason } => {
                assert_eq!(kind, "nvgpu");
                assert!(
                    reason.contains("GPU 1") && reason.contains("AttestationReport"),
                    "{reason}"
                );
            }
            other => panic!("expected Failed, got {other:?}"),
        }
        // CC off everywhere: identities only, no reports, not a failure.
        let r = assemble(vec![reading(0, None)]).unwrap();
        assert!(r.evidence.is_empty() && r.identities.len() == 1);
    }

    #[test]
    fn a_panic_in_a_call_is_a_failure_naming_it() {
        let e = guarded("nvmlDeviceGetConfComputeGpuCertificate", || -> u8 {
            let v: Vec<u8> = Vec::new();
            v[usize::from(std::hint::black_box(5u8))]
        })
        .unwrap_err();
        match e {
            CollectError::Failed { kind, reason } => {
                assert_eq!(kind, "nvgpu");
                assert!(
                    reason.starts_with("nvmlDeviceGetConfComputeGpuCertificate panicked"),
                    "{reason}"
                );
                assert!(reason.contains("index out of bounds"), "{reason}");
            }
            other => panic!("expected Failed, got {other:?}"),
        }
        assert_eq!(guarded("x", || 7).unwrap(), 7);
    }
}
