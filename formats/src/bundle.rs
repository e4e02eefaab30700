//! The evidence bundle an agent sends for one attestation round (CBOR, RATS CMW-collection
//! shaped): `{ version, nonce, session_keys, tpm?, snp?, tdx?, azure?, gpus[],
//! gpu_identities[]?, platform }`.
//!
//! Every evidence entry carries the raw vendor bytes unchanged, so signatures are checked
//! over exactly the bytes the hardware signed. `gpu_identities` and `platform` are what the
//! node says about itself, signed by nothing: for display and for matching against attested
//! values, never a basis for a decision on their own. `gpu_identities` is omitted when empty,
//! and bundles written before it existed decode unchanged.

use crate::binding::{serde_bytes_vec, Nonce, SessionKeys};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use thiserror::Error;

/// Bundle format version this code writes and accepts.
pub const BUNDLE_VERSION: u32 = 1;

/// Upper bound on an encoded bundle; larger input is refused before decoding.
pub const MAX_BUNDLE_LEN: usize = 16 * 1024 * 1024;

/// GPU reports (and GPU identities) per bundle: an 8-GPU board with room to spare. The
/// shipped policies walk every device, so without a bound a node could push the policy
/// past its instruction limit with junk entries and make its own rounds error out.
pub const MAX_GPUS: usize = 16;
/// Bytes of a TDX quote: a v4 or v5 quote with its PCK chain is 5-8 KB; this leaves room
/// for longer chains and QE authentication data.
pub const MAX_TDX_QUOTE_LEN: usize = 64 * 1024;
/// Bytes of an Azure HCL report: headers, the hardware report and the runtime data (Azure's
/// are about 1 KiB; the verifier bounds them at 64 KiB).
pub const MAX_HCL_REPORT_LEN: usize = 72 * 1024;
/// Bytes of a VCEK (DER or PEM) or of a CA chain (PEM) carried with a report.
pub const MAX_CERT_LEN: usize = 16 * 1024;
/// Entries of `platform` and of each GPU identity's `cc` map.
pub const MAX_MAP_ENTRIES: usize = 64;
/// Bytes of any string the node says about itself (names, versions, map keys and values).
pub const MAX_TEXT_LEN: usize = 256;

#[derive(Debug, Error)]
pub enum BundleError {
    #[error("bundle is {0} bytes, more than the {MAX_BUNDLE_LEN}-byte limit")]
    TooLarge(usize),
    #[error("bundle is not valid CBOR for this schema: {0}")]
    Decode(String),
    #[error("bundle version {0} is not supported (expected {BUNDLE_VERSION})")]
    Version(u32),
    #[error("bundle has trailing bytes after the CBOR item")]
    Trailing,
    #[error("could not encode bundle: {0}")]
    Encode(String),
    /// A list or string beyond its bound ([`MAX_GPUS`], [`MAX_MAP_ENTRIES`], [`MAX_TEXT_LEN`]).
    #[error("bundle field `{field}` has {got}, more than the limit of {limit}")]
    Limit {
        field: &'static str,
        limit: usize,
        got: usize,
    },
}

/// TPM 2.0 evidence: what `TPM2_Quote` returned plus the PCR values it covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TpmEvidence {
    /// TPMS_ATTEST, marshalled, exactly as signed.
    #[serde(with = "serde_bytes_vec")]
    pub quote: Vec<u8>,
    /// TPMT_SIGNATURE, marshalled.
    #[serde(with = "serde_bytes_vec")]
    pub signature: Vec<u8>,
    /// PCR values in the layout `tpm2_quote -o` writes (TPML_PCR_SELECTION + TPML_DIGEST list).
    #[serde(with = "serde_bytes_vec")]
    pub pcrs: Vec<u8>,
    /// The attestation key, TPMT_PUBLIC (marshalled, no TPM2B size prefix).
    #[serde(with = "serde_bytes_vec")]
    pub ak_public: Vec<u8>,
    /// TCG PC Client measured-boot event log, when the node exposes one.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_bytes")]
    pub event_log: Option<Vec<u8>>,
}

/// AMD SEV-SNP evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnpEvidence {
    /// The 0x4A0-byte attestation report.
    #[serde(with = "serde_bytes_vec")]
    pub report: Vec<u8>,
    /// VCEK or VLEK certificate, DER.
    #[serde(with = "serde_bytes_vec")]
    pub vcek: Vec<u8>,
    /// Optional ASK/ASVK + ARK (PEM); the built-in roots are used when absent.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_bytes")]
    pub ca_chain: Option<Vec<u8>>,
}

/// Intel TDX evidence: a DCAP quote (v4 or v5) whose REPORT_DATA is the round's binding
/// followed by 32 zero bytes. Its PCK chain rides in the quote (certification data type
/// 5); the rest of the collateral (TCB info, QE identity, CRLs) is the verifier's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TdxEvidence {
    /// The quote, exactly as the quoting enclave produced it.
    #[serde(with = "serde_bytes_vec")]
    pub quote: Vec<u8>,
}

/// Azure confidential-VM evidence: the paravisor's HCL report, read from the vTPM's NV
/// index 0x01400001. Its hardware report (SEV-SNP report, or TDX TDREPORT) commits to
/// runtime data naming the vTPM key (`HCLAkPub`) that must be the node's enrolled AK,
/// whose quote (the bundle's `tpm`) carries the round's binding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureEvidence {
    #[serde(with = "serde_bytes_vec")]
    pub hcl_report: Vec<u8>,
    /// SEV-SNP: the VCEK of the report (DER or PEM), as Azure's IMDS serves it; empty for
    /// TDX.
    #[serde(with = "serde_bytes_vec")]
    pub vcek: Vec<u8>,
    /// Optional ASK + ARK (PEM); the built-in roots are used when absent.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_bytes")]
    pub ca_chain: Option<Vec<u8>>,
    /// TDX: the TD quote Azure's quoting service (IMDS `/acc/tdquote`) made of the HCL's
    /// TDREPORT; the collateral is the verifier's, as for [`TdxEvidence`].
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_bytes")]
    pub td_quote: Option<Vec<u8>>,
}

/// One NVIDIA GPU's evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuEvidence {
    /// Index of the GPU on the node (submod name `gpu<index>`).
    pub index: u32,
    /// SPDM GET_MEASUREMENTS request || response, as the driver returns it.
    #[serde(with = "serde_bytes_vec")]
    pub report: Vec<u8>,
    /// The device certificate chain (concatenated PEM or DER), leaf first.
    #[serde(with = "serde_bytes_vec")]
    pub cert_chain: Vec<u8>,
}

/// What NVML says about one GPU: **unattested** (the driver answers, nothing signs it).
/// Every field NVML may decline to answer is an `Option`; `cc` maps each confidential
/// computing query to its answer or to `"error: ..."`, so a reader sees what was asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuIdentity {
    /// NVML device index; equals [`GpuEvidence::index`] of this GPU's report, if any.
    pub index: u32,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub uuid: Option<String>,
    /// System driver version (the same for every GPU of a node).
    #[serde(default)]
    pub driver_version: Option<String>,
    #[serde(default)]
    pub vbios_version: Option<String>,
    /// NVML's architecture name (`Hopper`, `Blackwell`, ...).
    #[serde(default)]
    pub architecture: Option<String>,
    /// CUDA compute capability, `major.minor`.
    #[serde(default)]
    pub compute_capability: Option<String>,
    /// Total framebuffer memory.
    #[serde(default)]
    pub memory_bytes: Option<u64>,
    /// Board serial; not supported on every board.
    #[serde(default)]
    pub serial: Option<String>,
    /// PCI bus id (`00000000:1A:00.0`).
    #[serde(default)]
    pub pci_bus_id: Option<String>,
    /// Confidential-computing queries: name -> answer, or `error: <NVML error>`.
    #[serde(default, deserialize_with = "bounded::map")]
    pub cc: BTreeMap<String, String>,
    /// Whether this GPU's attestation report is in the bundle's `gpus`.
    pub attested: bool,
}

impl GpuIdentity {
    /// An identity with only an index and a name (what NVML answered when nothing else).
    pub fn named(index: u32, name: &str, attested: bool) -> Self {
        Self {
            index,
            name: Some(name.into()),
            uuid: None,
            driver_version: None,
            vbios_version: None,
            architecture: None,
            compute_capability: None,
            memory_bytes: None,
            serial: None,
            pci_bus_id: None,
            cc: BTreeMap::new(),
            attested,
        }
    }
}

/// All evidence of one round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvidenceBundle {
    pub version: u32,
    pub nonce: Nonce,
    pub session_keys: SessionKeys,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<TpmEvidence>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snp: Option<SnpEvidence>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tdx: Option<TdxEvidence>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure: Option<AzureEvidence>,
    #[serde(default, deserialize_with = "bounded::gpus")]
    pub gpus: Vec<GpuEvidence>,
    /// Unattested identity of every GPU NVML listed, attested or not.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "bounded::gpus"
    )]
    pub gpu_identities: Vec<GpuIdentity>,
    /// Unattested platform facts (hostname, agent version, ...), for display only.
    #[serde(default, deserialize_with = "bounded::map")]
    pub platform: BTreeMap<String, String>,
}

impl EvidenceBundle {
    pub fn to_cbor(&self) -> Result<Vec<u8>, BundleError> {
        let mut out = Vec::new();
        ciborium::into_writer(self, &mut out).map_err(|e| BundleError::Encode(e.to_string()))?;
        Ok(out)
    }

    pub fn from_cbor(bytes: &[u8]) -> Result<Self, BundleError> {
        if bytes.len() > MAX_BUNDLE_LEN {
            return Err(BundleError::TooLarge(bytes.len()));
        }
        let mut rd = bytes;
        let b: Self = ciborium::from_reader(&mut rd).map_err(|e| BundleError::Decode(e.to_string()))?;
        if !rd.is_empty() {
            return Err(BundleError::Trailing);
        }
        if b.version != BUNDLE_VERSION {
            return Err(BundleError::Version(b.version));
        }
        b.check_text()?;
        b.check_sizes()?;
        Ok(b)
    }

    /// Byte strings whose kind has a known size, bounded (each is also inside the bundle's
    /// own bound).
    fn check_sizes(&self) -> Result<(), BundleError> {
        let bound = |field: &'static str, b: &[u8], limit: usize| {
            if b.len() > limit {
                Err(BundleError::Limit {
                    field,
                    limit,
                    got: b.len(),
                })
            } else {
                Ok(())
            }
        };
        if let Some(t) = &self.tdx {
            bound("tdx.quote", &t.quote, MAX_TDX_QUOTE_LEN)?;
        }
        if let Some(a) = &self.azure {
            bound("azure.hcl_report", &a.hcl_report, MAX_HCL_REPORT_LEN)?;
            bound("azure.vcek", &a.vcek, MAX_CERT_LEN)?;
            bound(
                "azure.ca_chain",
                a.ca_chain.as_deref().unwrap_or_default(),
                MAX_CERT_LEN,
            )?;
            bound(
                "azure.td_quote",
                a.td_quote.as_deref().unwrap_or_default(),
                MAX_TDX_QUOTE_LEN,
            )?;
        }
        Ok(())
    }

    /// Every string the node says about itself is at most [`MAX_TEXT_LEN`] bytes. (List
    /// and map lengths are bounded while decoding, before anything is allocated for them.)
    fn check_text(&self) -> Result<(), BundleError> {
        let long = |field: &'static str, s: &str| {
            if s.len() > MAX_TEXT_LEN {
                Err(BundleError::Limit {
                    field,
                    limit: MAX_TEXT_LEN,
                    got: s.len(),
                })
            } else {
                Ok(())
            }
        };
        for (k, v) in &self.platform {
            long("platform", k)?;
            long("platform", v)?;
        }
        for g in &self.gpu_identities {
            let fields = [
                &g.name,
                &g.uuid,
                &g.driver_version,
                &g.vbios_version,
                &g.architecture,
                &g.compute_capability,
                &g.serial,
                &g.pci_bus_id,
            ];
            for f in fields.into_iter().flatten() {
                long("gpu_identities", f)?;
            }
            for (k, v) in &g.cc {
                long("gpu_identities.cc", k)?;
                long("gpu_identities.cc", v)?;
            }
        }
        Ok(())
    }
}

/// Lists and maps whose length is checked as they decode: a longer one is refused at its
/// `MAX + 1`-th element, so a flood of tiny entries costs no memory.
mod bounded {
    use serde::de::{Deserialize, Deserializer, Error, MapAccess, SeqAccess, Visitor};
    use std::collections::BTreeMap;
    use std::marker::PhantomData;

    struct SeqMax<T>(usize, PhantomData<T>);

    impl<'de, T: Deserialize<'de>> Visitor<'de> for SeqMax<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "a list of at most {} entries", self.0)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut out = Vec::new();
            while let Some(x) = seq.next_element()? {
                if out.len() == self.0 {
                    return Err(A::Error::custom(format!("more than {} entries (limit)", self.0)));
                }
                out.push(x);
            }
            Ok(out)
        }
    }

    pub fn gpus<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
        d.deserialize_seq(SeqMax(super::MAX_GPUS, PhantomData))
    }

    struct MapMax(usize);

    impl<'de> Visitor<'de> for MapMax {
        type Value = BTreeMap<String, String>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "a map of at most {} text entries", self.0)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some((k, v)) = map.next_entry::<String, String>()? {
                if out.len() == self.0 {
                    return Err(A::Error::custom(format!("more than {} entries (limit)", self.0)));
                }
                out.insert(k, v);
            }
            Ok(out)
        }
    }

    pub fn map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
        d.deserialize_map(MapMax(super::MAX_MAP_ENTRIES))
    }
}

pub(crate) mod opt_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_bytes(b),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        type Buf = crate::binding::serde_bytes_array::serde_bytes_vec::ByteBuf;
        let b: Option<Buf> = Option::deserialize(d)?;
        Ok(b.map(|b| b.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Byte strings above ciborium's 4 KiB scratch buffer decode (a CA chain of an ASK
    /// and an ARK in PEM is about 4.3 KB).
    #[test]
    fn large_byte_strings_decode() {
        let mut b = sample();
        b.snp = Some(SnpEvidence {
            report: vec![1; 0x4A0],
            vcek: vec![2; 5000],
            ca_chain: Some(vec![3; 9000]),
        });
        assert_eq!(EvidenceBundle::from_cbor(&b.to_cbor().unwrap()).unwrap(), b);
    }

    /// A TDX quote rides as one byte string, bounded by [`MAX_TDX_QUOTE_LEN`]; a bundle
    /// without one is encoded exactly as before the field existed.
    #[test]
    fn tdx_quotes_are_carried_and_bounded() {
        let without = sample().to_cbor().unwrap();
        assert!(
            !without.windows(3).any(|w| w == b"tdx"),
            "an absent quote adds no key"
        );
        let mut b = sample();
        b.tdx = Some(TdxEvidence {
            quote: vec![4; MAX_TDX_QUOTE_LEN],
        });
        assert_eq!(EvidenceBundle::from_cbor(&b.to_cbor().unwrap()).unwrap(), b);
        b.tdx = Some(TdxEvidence {
            quote: vec![4; MAX_TDX_QUOTE_LEN + 1],
        });
        assert!(matches!(
            EvidenceBundle::from_cbor(&b.to_cbor().unwrap()),
            Err(BundleError::Limit {
                field: "tdx.quote",
                ..
            })
        ));
    }

    /// Azure's HCL report and its certificates ride bounded.
    #[test]
    fn azure_evidence_is_carried_and_bounded() {
        let mut b = sample();
        b.azure = Some(AzureEvidence {
            hcl_report: vec![1; MAX_HCL_REPORT_LEN],
            vcek: vec![2; 1300],
            ca_chain: None,
            td_quote: None,
        });
        let cbor = b.to_cbor().unwrap();
        assert_eq!(EvidenceBundle::from_cbor(&cbor).unwrap(), b);
        assert!(
            !cbor.windows(8).any(|w| w == b"td_quote"),
            "an SNP bundle is as before"
        );
        b.azure = Some(AzureEvidence {
            hcl_report: vec![1; 100],
            vcek: vec![2; 100],
            ca_chain: Some(vec![3; MAX_CERT_LEN + 1]),
            td_quote: None,
        });
        assert!(matches!(
            EvidenceBundle::from_cbor(&b.to_cbor().unwrap()),
            Err(BundleError::Limit {
                field: "azure.ca_chain",
                ..
            })
        ));
        // TDX behind the paravisor: the TD quote instead of a VCEK, bounded as a quote.
        b.azure = Some(AzureEvidence {
            hcl_report: vec![1; 100],
            vcek: vec![],
            ca_chain: None,
            td_quote: Some(vec![4; MAX_TDX_QUOTE_LEN]),
        });
        assert_eq!(EvidenceBundle::from_cbor(&b.to_cbor().unwrap()).unwrap(), b);
        b.azure.as_mut().unwrap().td_quote = Some(vec![4; MAX_TDX_QUOTE_LEN + 1]);
        assert!(matches!(
            EvidenceBundle::from_cbor(&b.to_cbor().unwrap()),
            Err(BundleError::Limit {
                field: "azure.td_quote",
                ..
            })
        ));
    }

    fn sample() -> EvidenceBundle {
        EvidenceBundle {
            version: BUNDLE_VERSION,
            nonce: Nonce([7; 32]),
            session_keys: SessionKeys {
                x25519: [1; 32],
                ed25519: [2; 32],
            },
            tpm: Some(TpmEvidence {
                quote: vec![0xff, 0x54, 0x43, 0x47],
                signature: vec![0, 0x14],
                pcrs: vec![],
                ak_public: vec![0, 1],
                event_log: None,
            }),
            snp: None,
            tdx: None,
            azure: None,
            gpus: vec![GpuEvidence {
                index: 0,
                report: vec![0x11, 0xe0],
                cert_chain: vec![],
            }],
            gpu_identities: vec![],
            platform: BTreeMap::from([("hostname".into(), "node-a".into())]),
        }
    }

    #[test]
    fn lists_and_strings_beyond_their_bounds_are_refused() {
        let mut b = sample();
        b.gpus = (0..MAX_GPUS as u32)
            .map(|index| GpuEvidence {
                index,
                report: vec![1],
                cert_chain: vec![],
            })
            .collect();
        let ok = b.to_cbor().unwrap();
        assert_eq!(EvidenceBundle::from_cbor(&ok).unwrap().gpus.len(), MAX_GPUS);
        b.gpus.push(b.gpus[0].clone());
        let e = EvidenceBundle::from_cbor(&b.to_cbor().unwrap()).unwrap_err();
        assert!(e.to_string().contains("more than 16 entries"), "{e}");

        let mut b = sample();
        b.platform = (0..=MAX_MAP_ENTRIES)
            .map(|i| (format!("k{i}"), "v".into()))
            .collect();
        assert!(EvidenceBundle::from_cbor(&b.to_cbor().unwrap()).is_err());

        let mut b = sample();
        b.platform.insert("hostname".into(), "x".repeat(MAX_TEXT_LEN));
        assert!(EvidenceBundle::from_cbor(&b.to_cbor().unwrap()).is_ok());
        b.platform.insert("hostname".into(), "x".repeat(MAX_TEXT_LEN + 1));
        assert!(matches!(
            EvidenceBundle::from_cbor(&b.to_cbor().unwrap()),
            Err(BundleError::Limit {
                field: "platform",
                ..
            })
        ));

        let mut b = sample();
        let mut id = GpuIdentity::named(0, "NVIDIA H100", false);
        b.gpu_identities = vec![id.clone()];
        assert!(EvidenceBundle::from_cbor(&b.to_cbor().unwrap()).is_ok());
        id.cc.insert("x".repeat(MAX_TEXT_LEN + 1), "on".into());
        b.gpu_identities = vec![id];
        assert!(matches!(
            EvidenceBundle::from_cbor(&b.to_cbor().unwrap()),
            Err(BundleError::Limit {
                field: "gpu_identities.cc",
                ..
            })
        ));
    }

    #[test]
    fn round_trips_and_uses_byte_strings() {
        let b = sample();
        let cbor = b.to_cbor().unwrap();
        assert_eq!(EvidenceBundle::from_cbor(&cbor).unwrap(), b);
        // The nonce is a CBOR byte string of 32 bytes (major type 2, 0x58 0x20), not an array.
        let needle = [&[0x58u8, 0x20][..], &[7u8; 32][..]].concat();
        assert!(cbor.windows(needle.len()).any(|w| w == needle.as_slice()));
    }

    #[test]
    fn rejects_trailing_wrong_version_and_wrong_lengths() {
        let mut cbor = sample().to_cbor().unwrap();
        cbor.push(0);
        assert!(matches!(
            EvidenceBundle::from_cbor(&cbor),
            Err(BundleError::Trailing)
        ));

        let mut b = sample();
        b.version = 2;
        assert!(matches!(
            EvidenceBundle::from_cbor(&b.to_cbor().unwrap()),
            Err(BundleError::Version(2))
        ));

        // A 31-byte nonce must not be padded.
        let cbor = sample().to_cbor().unwrap();
        let needle = [&[0x58u8, 0x20][..], &[7u8; 32][..]].concat();
        let at = cbor
            .windows(needle.len())
            .position(|w| w == needle.as_slice())
            .unwrap();
        let mut short = cbor[..at].to_vec();
        short.extend_from_slice(&[0x58, 0x1f]);
        short.extend_from_slice(&[7u8; 31]);
        short.extend_from_slice(&cbor[at + 34..]);
        assert!(matches!(
            EvidenceBundle::from_cbor(&short),
            Err(BundleError::Decode(_))
        ));
    }

    /// `sample()` as encoded before `gpu_identities` existed (captured from that code).
    const OLD_SAMPLE_HEX: &str = "a66776657273696f6e01656e6f6e6365582007070707070707070707070707070707070707070707070707070707070707076c73657373696f6e5f6b657973a266783235353139582001010101010101010101010101010101010101010101010101010101010101016765643235353139582002020202020202020202020202020202020202020202020202020202020202026374706da46571756f746544ff544347697369676e617475726542001464706372734069616b5f7075626c6963420001646770757381a365696e64657800667265706f72744211e06a636572745f636861696e4068706c6174666f726da168686f73746e616d65666e6f64652d61";

    fn identity() -> GpuIdentity {
        GpuIdentity {
            index: 0,
            name: Some("NVIDIA H100 80GB HBM3".into()),
            uuid: Some("GPU-00000000-1111-2222-3333-444444444444".into()),
            driver_version: Some("550.90.07".into()),
            vbios_version: None,
            architecture: Some("Hopper".into()),
            compute_capability: Some("9.0".into()),
            memory_bytes: Some(85_520_809_984),
            serial: None,
            pci_bus_id: Some("00000000:1A:00.0".into()),
            cc: BTreeMap::from([
                ("cc_enabled".into(), "true".into()),
                ("cc_dev_mode".into(), "error: NotSupported".into()),
            ]),
            attested: true,
        }
    }

    #[test]
    fn bundles_without_gpu_identities_still_decode_and_encode_the_same() {
        let old = hex::decode(OLD_SAMPLE_HEX).unwrap();
        let b = EvidenceBundle::from_cbor(&old).unwrap();
        assert_eq!(b, sample());
        assert!(b.gpu_identities.is_empty());
        // Empty identities are omitted, so an old bundle re-encodes byte for byte.
        assert_eq!(b.to_cbor().unwrap(), old);
    }

    #[test]
    fn gpu_identities_round_trip_and_refuse_unknown_fields() {
        let mut b = sample();
        b.gpu_identities = vec![identity()];
        let cbor = b.to_cbor().unwrap();
        assert_eq!(EvidenceBundle::from_cbor(&cbor).unwrap(), b);

        // An identity field this code does not know is refused, not skipped.
        let mut map = ciborium::Value::serialized(&identity()).unwrap();
        if let ciborium::Value::Map(m) = &mut map {
            m.push(("extra".into(), true.into()));
        }
        let mut enc = Vec::new();
        ciborium::into_writer(&map, &mut enc).unwrap();
        assert!(ciborium::from_reader::<GpuIdentity, _>(enc.as_slice()).is_err());

        // Absent optional answers decode as None; `attested` is required.
        let mut enc = Vec::new();
        ciborium::into_writer(
            &ciborium::Value::Map(vec![
                ("index".into(), 1.into()),
                ("attested".into(), false.into()),
            ]),
            &mut enc,
        )
        .unwrap();
        let id: GpuIdentity = ciborium::from_reader(enc.as_slice()).unwrap();
        assert_eq!((id.index, id.name, id.cc.len(), id.attested), (1, None, 0, false));
        let mut enc = Vec::new();
        ciborium::into_writer(&ciborium::Value::Map(vec![("index".into(), 1.into())]), &mut enc).unwrap();
        assert!(ciborium::from_reader::<GpuIdentity, _>(enc.as_slice()).is_err());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for g in [&[][..], &[0xff], &[0xa1, 0x61], &[0x9f; 64]] {
            assert!(EvidenceBundle::from_cbor(g).is_err());
        }
    }
}
