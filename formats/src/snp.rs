//! AMD SEV-SNP attestation report (SEV-SNP ABI spec 56860, table "ATTESTATION_REPORT").
//!
//! A report is exactly 0x4A0 bytes: a body signed by the VCEK or VLEK over bytes
//! `[0, 0x2A0)`, then the signature (r at 0x2A0, s at 0x2E8, each 72 bytes little-endian,
//! ECDSA P-384 / SHA-384) and reserved space.
//!
//! The fields are read here from the raw bytes at their fixed offsets, and the `sev`
//! crate's own parser (`sev::firmware::guest::AttestationReport`) is run over the same
//! bytes as a cross-check ([`SnpReport::sev`]). The raw bytes are authoritative, because
//! the `sev` parser (8.0) refuses reports that are valid per the spec:
//! - a v2 report with MaskChipId set (chip_id all zero): it guesses the CPU generation from
//!   chip_id and errors out;
//! - a v3+ report from a CPU family/model it does not know;
//! - any non-zero byte in an area it treats as reserved (newer ABIs define some of them).
//!
//! On the other hand this parser is stricter in one place: the reserved bytes after `s`
//! (0x330..0x4A0) are not signed, so they must be zero; otherwise one signed report would
//! have many accepted encodings.
//!
//! Where it does parse, every field it decodes agrees with the raw decoding on the test
//! vectors (tested below). The TCB layout differs per CPU generation (Milan/Genoa:
//! bl, tee, -, -, -, -, snp, ucode; Turin: fmc, bl, tee, snp, -, -, -, ucode), so each
//! TCB is kept raw and decoded with a [`TcbLayout`]; the verifier re-decodes it with the
//! generation proven by the certificate chain.

use crate::reader::{Reader, Truncated};
use serde::Serialize;
use sev::parser::ByteParser;
use thiserror::Error;

/// Exact size of a report.
pub const REPORT_LEN: usize = 0x4A0;
/// The signature covers bytes `[0, SIGNED_LEN)`.
pub const SIGNED_LEN: usize = 0x2A0;
/// Offsets of the little-endian signature components.
pub const SIG_R_OFFSET: usize = 0x2A0;
pub const SIG_S_OFFSET: usize = 0x2E8;
/// Size of each signature component field in the report.
pub const SIG_COMPONENT_LEN: usize = 72;
/// Size of a P-384 scalar.
pub const P384_SCALAR_LEN: usize = 48;
/// `SIGNATURE_ALGO` value for ECDSA P-384 with SHA-384.
pub const SIG_ALGO_ECDSA_P384_SHA384: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SnpParseError {
    #[error("report must be exactly {REPORT_LEN} bytes, got {0}")]
    Length(usize),
    #[error("report version {0} is not supported (2 to 5)")]
    Version(u32),
    #[error("{0} non-zero bytes in the unsigned reserved area after the signature")]
    UnsignedTail(usize),
    #[error(transparent)]
    Truncated(#[from] Truncated),
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SnpSignatureError {
    #[error("signature {component} has non-zero bytes beyond the 48-byte P-384 scalar")]
    Oversized { component: &'static str },
    #[error("signature {component} is zero (report not signed)")]
    Zero { component: &'static str },
}

/// AMD EPYC generations with SEV-SNP that Custody knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Generation {
    Milan,
    Genoa,
    Turin,
}

impl Generation {
    pub fn name(self) -> &'static str {
        match self {
            Self::Milan => "Milan",
            Self::Genoa => "Genoa",
            Self::Turin => "Turin",
        }
    }

    /// From CPUID family/model (v3+ reports), via the `sev` crate's table. Venice and
    /// unknown parts give `None`.
    pub fn from_cpuid(family: u8, model: u8) -> Option<Self> {
        match sev::Generation::identify_cpu(family, model).ok()? {
            sev::Generation::Milan => Some(Self::Milan),
            sev::Generation::Genoa => Some(Self::Genoa),
            sev::Generation::Turin => Some(Self::Turin),
            _ => None,
        }
    }

    pub fn tcb_layout(self) -> TcbLayout {
        match self {
            Self::Milan | Self::Genoa => TcbLayout::Legacy,
            Self::Turin => TcbLayout::Turin,
        }
    }
}

/// How the 8 bytes of a TCB_VERSION are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TcbLayout {
    /// Milan, Genoa: `[bl, tee, 0, 0, 0, 0, snp, ucode]`.
    Legacy,
    /// Turin: `[fmc, bl, tee, snp, 0, 0, 0, ucode]`.
    Turin,
}

/// A decoded TCB_VERSION.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Tcb {
    /// The raw little-endian u64 as hex (what AMD KDS URLs and tools print).
    #[serde(serialize_with = "ser_hex_u64")]
    pub raw: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fmc: Option<u8>,
    pub bootloader: u8,
    pub tee: u8,
    pub snp: u8,
    pub microcode: u8,
}

fn ser_hex_u64<S: serde::Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{v:016x}"))
}

impl Tcb {
    pub fn decode(raw: [u8; 8], layout: TcbLayout) -> Self {
        let [b0, b1, b2, b3, _, _, b6, b7] = raw;
        let v = u64::from_le_bytes(raw);
        match layout {
            TcbLayout::Legacy => Self {
                raw: v,
                fmc: None,
                bootloader: b0,
                tee: b1,
                snp: b6,
                microcode: b7,
            },
            TcbLayout::Turin => Self {
                raw: v,
                fmc: Some(b0),
                bootloader: b1,
                tee: b2,
                snp: b3,
                microcode: b7,
            },
        }
    }
}

/// GUEST_POLICY bits (spec table "Guest Policy Structure").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct GuestPolicy {
    #[serde(serialize_with = "ser_hex_u64")]
    pub raw: u64,
    pub abi_minor: u8,
    pub abi_major: u8,
    pub smt: bool,
    pub migrate_ma: bool,
    pub debug: bool,
    pub single_socket: bool,
    pub cxl_allow: bool,
    pub mem_aes_256_xts: bool,
    pub rapl_dis: bool,
    pub ciphertext_hiding: bool,
    pub page_swap_disable: bool,
}

impl GuestPolicy {
    /// Bit 19: the hypervisor may debug (read and write) the guest's memory.
    pub const DEBUG_BIT: u32 = 19;

    pub fn from_raw(raw: u64) -> Self {
        // Decoded through the sev crate's bitfield so both agree on bit numbers (its
        // `From<u64>` forces reserved bit 17 on, which no field read here depends on).
        let p = sev::firmware::guest::GuestPolicy::from(raw);
        Self {
            raw,
            abi_minor: u8::try_from(p.abi_minor()).unwrap_or(u8::MAX),
            abi_major: u8::try_from(p.abi_major()).unwrap_or(u8::MAX),
            smt: p.smt_allowed(),
            migrate_ma: p.migrate_ma_allowed(),
            debug: p.debug_allowed(),
            single_socket: p.single_socket_required(),
            cxl_allow: p.cxl_allowed(),
            mem_aes_256_xts: p.mem_aes_256_xts(),
            rapl_dis: p.rapl_dis(),
            ciphertext_hiding: p.ciphertext_hiding(),
            page_swap_disable: p.page_swap_disabled(),
        }
    }
}

/// PLATFORM_INFO bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PlatformInfo {
    #[serde(serialize_with = "ser_hex_u64")]
    pub raw: u64,
    pub smt_enabled: bool,
    pub tsme_enabled: bool,
    pub ecc_enabled: bool,
    pub rapl_disabled: bool,
    pub ciphertext_hiding_enabled: bool,
    pub alias_check_complete: bool,
    pub tio_enabled: bool,
}

impl PlatformInfo {
    pub fn from_raw(raw: u64) -> Self {
        let p = sev::firmware::guest::PlatformInfo::from(raw);
        Self {
            raw,
            smt_enabled: p.smt_enabled(),
            tsme_enabled: p.tsme_enabled(),
            ecc_enabled: p.ecc_enabled(),
            rapl_disabled: p.rapl_disabled(),
            ciphertext_hiding_enabled: p.ciphertext_hiding_enabled(),
            alias_check_complete: p.alias_check_complete(),
            tio_enabled: p.tio_enabled(),
        }
    }
}

/// SIGNING_KEY field of the key-info word (bits 4:2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SigningKey {
    Vcek,
    Vlek,
    /// 7: the report is not signed.
    None,
    /// 2..=6: reserved values.
    Reserved(u8),
}

impl SigningKey {
    fn from_bits(v: u32) -> Self {
        match v & 7 {
            0 => Self::Vcek,
            1 => Self::Vlek,
            7 => Self::None,
            r => Self::Reserved(u8::try_from(r).unwrap_or(u8::MAX)),
        }
    }
}

/// The key-info word at 0x48.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct KeyInfo {
    pub raw: u32,
    pub author_key_en: bool,
    pub mask_chip_key: bool,
    pub signing_key: SigningKey,
}

impl KeyInfo {
    pub fn from_raw(raw: u32) -> Self {
        let k = sev::firmware::guest::KeyInfo::from(raw);
        Self {
            raw,
            author_key_en: k.author_key_en(),
            mask_chip_key: k.mask_chip_key(),
            signing_key: SigningKey::from_bits(k.signing_key()),
        }
    }
}

/// Firmware version triple (current / committed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FwVersion {
    pub major: u8,
    pub minor: u8,
    pub build: u8,
}

/// A parsed report: a pure view of the fields the verifier needs, plus the raw bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnpReport {
    bytes: Vec<u8>,
    pub version: u32,
    pub guest_svn: u32,
    pub policy: GuestPolicy,
    pub family_id: [u8; 16],
    pub image_id: [u8; 16],
    pub vmpl: u32,
    pub sig_algo: u32,
    pub current_tcb_raw: [u8; 8],
    pub platform_info: PlatformInfo,
    pub key_info: KeyInfo,
    pub report_data: [u8; 64],
    pub measurement: [u8; 48],
    pub host_data: [u8; 32],
    pub id_key_digest: [u8; 48],
    pub author_key_digest: [u8; 48],
    pub report_id: [u8; 32],
    pub report_id_ma: [u8; 32],
    pub reported_tcb_raw: [u8; 8],
    /// CPUID family, model, stepping (v3 and later; `None` in v2).
    pub cpuid: Option<(u8, u8, u8)>,
    pub chip_id: [u8; 64],
    pub committed_tcb_raw: [u8; 8],
    pub current_version: FwVersion,
    pub committed_version: FwVersion,
    pub launch_tcb_raw: [u8; 8],
    /// LAUNCH_MIT_VECTOR / CURRENT_MIT_VECTOR (v5 and later).
    pub mit_vectors: Option<(u64, u64)>,
    pub sig_r: [u8; SIG_COMPONENT_LEN],
    pub sig_s: [u8; SIG_COMPONENT_LEN],
}

impl SnpReport {
    /// Parse exactly [`REPORT_LEN`] bytes. Never pads or cuts; never panics.
    pub fn parse(bytes: &[u8]) -> Result<Self, SnpParseError> {
        if bytes.len() != REPORT_LEN {
            return Err(SnpParseError::Length(bytes.len()));
        }
        let mut r = Reader::new(bytes);
        let version = r.u32_le("version")?;
        if !(2..=5).contains(&version) {
            return Err(SnpParseError::Version(version));
        }
        let guest_svn = r.u32_le("guest_svn")?;
        let policy = GuestPolicy::from_raw(r.u64_le("policy")?);
        let family_id = r.array("family_id")?;
        let image_id = r.array("image_id")?;
        let vmpl = r.u32_le("vmpl")?;
        let sig_algo = r.u32_le("signature_algo")?;
        let current_tcb_raw = r.array("current_tcb")?;
        let platform_info = PlatformInfo::from_raw(r.u64_le("platform_info")?);
        let key_info = KeyInfo::from_raw(r.u32_le("key_info")?);
        r.take(4, "reserved 0x4C")?;
        let report_data = r.array("report_data")?;
        let measurement = r.array("measurement")?;
        let host_data = r.array("host_data")?;
        let id_key_digest = r.array("id_key_digest")?;
        let author_key_digest = r.array("author_key_digest")?;
        let report_id = r.array("report_id")?;
        let report_id_ma = r.array("report_id_ma")?;
        let reported_tcb_raw = r.array("reported_tcb")?;
        let [fam, model, step] = r.array("cpuid")?;
        // Reserved before v3 (the sev crate requires zero there; we do not need to).
        let cpuid = (version >= 3).then_some((fam, model, step));
        r.take(0x1A0 - 0x18B, "reserved 0x18B")?;
        let chip_id = r.array("chip_id")?;
        let committed_tcb_raw = r.array("committed_tcb")?;
        let [cb, cm, cj, _] = r.array("current_version")?;
        let [mb, mm, mj, _] = r.array("committed_version")?;
        let launch_tcb_raw = r.array("launch_tcb")?;
        let lmv = r.u64_le("launch_mit_vector")?;
        let cmv = r.u64_le("current_mit_vector")?;
        let mit_vectors = (version >= 5).then_some((lmv, cmv));
        r.take(SIG_R_OFFSET - r.position(), "reserved 0x208")?;
        let sig_r = r.array("signature r")?;
        let sig_s = r.array("signature s")?;
        // Not covered by the signature: refuse anything there, so that one signed report
        // has exactly one accepted byte encoding.
        let tail = r.rest().iter().filter(|&&b| b != 0).count();
        if tail != 0 {
            return Err(SnpParseError::UnsignedTail(tail));
        }
        Ok(Self {
            bytes: bytes.to_vec(),
            version,
            guest_svn,
            policy,
            family_id,
            image_id,
            vmpl,
            sig_algo,
            current_tcb_raw,
            platform_info,
            key_info,
            report_data,
            measurement,
            host_data,
            id_key_digest,
            author_key_digest,
            report_id,
            report_id_ma,
            reported_tcb_raw,
            cpuid,
            chip_id,
            committed_tcb_raw,
            current_version: FwVersion {
                major: cj,
                minor: cm,
                build: cb,
            },
            committed_version: FwVersion {
                major: mj,
                minor: mm,
                build: mb,
            },
            launch_tcb_raw,
            mit_vectors,
            sig_r,
            sig_s,
        })
    }

    /// All 0x4A0 bytes as given.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The bytes the signature covers, `[0, 0x2A0)`.
    pub fn signed_bytes(&self) -> &[u8] {
        self.bytes.get(..SIGNED_LEN).unwrap_or_default()
    }

    /// The generation told by CPUID (v3+), if known.
    pub fn cpuid_generation(&self) -> Option<Generation> {
        self.cpuid.and_then(|(f, m, _)| Generation::from_cpuid(f, m))
    }

    /// Best guess of the TCB layout from the report alone: CPUID for v3+, otherwise the
    /// `sev` crate's heuristic (a Turin chip_id has only its first 8 bytes set). The
    /// verifier uses the generation proven by the certificate chain instead.
    pub fn tcb_layout_hint(&self) -> TcbLayout {
        match self.cpuid_generation() {
            Some(g) => g.tcb_layout(),
            None => {
                let tail_zero = self.chip_id.get(8..).is_some_and(|t| t.iter().all(|&b| b == 0));
                let all_zero = self.chip_id.iter().all(|&b| b == 0);
                if self.cpuid.is_none() && tail_zero && !all_zero {
                    TcbLayout::Turin
                } else {
                    TcbLayout::Legacy
                }
            }
        }
    }

    pub fn current_tcb(&self, layout: TcbLayout) -> Tcb {
        Tcb::decode(self.current_tcb_raw, layout)
    }
    pub fn reported_tcb(&self, layout: TcbLayout) -> Tcb {
        Tcb::decode(self.reported_tcb_raw, layout)
    }
    pub fn committed_tcb(&self, layout: TcbLayout) -> Tcb {
        Tcb::decode(self.committed_tcb_raw, layout)
    }
    pub fn launch_tcb(&self, layout: TcbLayout) -> Tcb {
        Tcb::decode(self.launch_tcb_raw, layout)
    }

    /// The signature as raw big-endian `r || s` (96 bytes) for
    /// `ECDSA_P384_SHA384_FIXED`. Each 72-byte little-endian field must fit in 48 bytes
    /// (the rest zero); a zero component means an unsigned report.
    pub fn signature_p384(&self) -> Result<[u8; 2 * P384_SCALAR_LEN], SnpSignatureError> {
        let mut out = [0u8; 2 * P384_SCALAR_LEN];
        let (r_out, s_out) = out.split_at_mut(P384_SCALAR_LEN);
        le72_to_be48(&self.sig_r, "r", r_out)?;
        le72_to_be48(&self.sig_s, "s", s_out)?;
        Ok(out)
    }

    /// The `sev` crate's parse of the same bytes, for callers that want its types. Errors
    /// where the `sev` parser refuses valid reports (see the module docs).
    pub fn sev(&self) -> Result<sev::firmware::guest::AttestationReport, String> {
        sev::firmware::guest::AttestationReport::from_bytes(&self.bytes).map_err(|e| e.to_string())
    }
}

fn le72_to_be48(
    le: &[u8; SIG_COMPONENT_LEN],
    component: &'static str,
    out: &mut [u8],
) -> Result<(), SnpSignatureError> {
    let (low, high) = le.split_at(P384_SCALAR_LEN);
    if high.iter().any(|&b| b != 0) {
        return Err(SnpSignatureError::Oversized { component });
    }
    if low.iter().all(|&b| b == 0) {
        return Err(SnpSignatureError::Zero { component });
    }
    for (o, i) in out.iter_mut().zip(low.iter().rev()) {
        *o = *i;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TV: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/snp");

    fn read(name: &str) -> Vec<u8> {
        std::fs::read(format!("{TV}/{name}")).unwrap()
    }

    #[test]
    fn milan_v2_vcek_report() {
        let r = SnpReport::parse(&read("trustee-test-report.bin")).unwrap();
        assert_eq!(r.version, 2);
        assert_eq!(r.guest_svn, 4);
        assert_eq!(r.policy.raw, 0x3001f);
        assert!(!r.policy.debug);
        assert!(r.policy.smt);
        assert_eq!(r.policy.abi_minor, 0x1f);
        assert_eq!(r.vmpl, 0);
        assert_eq!(r.sig_algo, SIG_ALGO_ECDSA_P384_SHA384);
        assert_eq!(r.key_info.signing_key, SigningKey::Vcek);
        assert_eq!(r.cpuid, None);
        assert_eq!(r.tcb_layout_hint(), TcbLayout::Legacy);
        let t = r.reported_tcb(TcbLayout::Legacy);
        assert_eq!((t.bootloader, t.tee, t.snp, t.microcode), (3, 0, 8, 0x73));
        assert_eq!(t.fmc, None);
        assert_eq!(r.signed_bytes().len(), SIGNED_LEN);
        assert_eq!(r.chip_id[..4], [0xc3, 0x84, 0x27, 0xa3]);
        assert_eq!(
            r.current_version,
            FwVersion {
                major: 1,
                minor: 0x34,
                build: 4
            }
        );
        let sig = r.signature_p384().unwrap();
        assert_eq!(sig[47], r.sig_r[0]);
        assert_eq!(sig[95], r.sig_s[0]);
    }

    #[test]
    fn milan_v3_vlek_report() {
        let r = SnpReport::parse(&read("trustee-test-vlek-report.bin")).unwrap();
        assert_eq!(r.version, 3);
        assert_eq!(r.key_info.signing_key, SigningKey::Vlek);
        assert_eq!(r.cpuid, Some((0x19, 0x01, 0x01)));
        assert_eq!(r.cpuid_generation(), Some(Generation::Milan));
        assert_eq!(r.vmpl, 1);
        assert!(r.chip_id.iter().all(|&b| b == 0));
        let t = r.reported_tcb(r.tcb_layout_hint());
        assert_eq!((t.bootloader, t.tee, t.snp, t.microcode), (4, 0, 0x18, 0xd9));
    }

    /// Where the `sev` crate parses, it agrees with the raw decoding.
    #[test]
    fn sev_crate_agrees_with_raw_bytes() {
        for f in ["trustee-test-report.bin", "trustee-test-vlek-report.bin"] {
            let r = SnpReport::parse(&read(f)).unwrap();
            let s = r.sev().unwrap();
            assert_eq!(s.version, r.version);
            assert_eq!(s.guest_svn, r.guest_svn);
            assert_eq!(u64::from(s.policy) & !(1 << 17), r.policy.raw & !(1 << 17));
            assert_eq!(s.report_data, r.report_data);
            assert_eq!(s.measurement, r.measurement);
            assert_eq!(s.host_data, r.host_data);
            assert_eq!(s.chip_id, r.chip_id);
            assert_eq!(s.vmpl, r.vmpl);
            assert_eq!(s.sig_algo, r.sig_algo);
            assert_eq!(u32::from(s.key_info), r.key_info.raw);
            assert_eq!(s.signature.r(), &r.sig_r);
            assert_eq!(s.signature.s(), &r.sig_s);
            assert_eq!(s.cpuid_fam_id, r.cpuid.map(|c| c.0));
            let t = r.reported_tcb(TcbLayout::Legacy);
            assert_eq!(
                (
                    s.reported_tcb.bootloader,
                    s.reported_tcb.tee,
                    s.reported_tcb.snp,
                    s.reported_tcb.microcode
                ),
                (t.bootloader, t.tee, t.snp, t.microcode)
            );
        }
    }

    /// A v2 report with chip_id masked is valid per spec; the sev crate refuses it.
    #[test]
    fn masked_chip_id_v2_parses_here_but_not_in_sev() {
        let mut b = read("trustee-test-report.bin");
        b[0x1A0..0x1E0].fill(0);
        let r = SnpReport::parse(&b).unwrap();
        assert!(r.sev().is_err());
        assert_eq!(r.tcb_layout_hint(), TcbLayout::Legacy);
    }

    #[test]
    fn rejects_wrong_lengths_and_versions() {
        let b = read("trustee-test-report.bin");
        assert_eq!(
            SnpReport::parse(&b[..REPORT_LEN - 1]),
            Err(SnpParseError::Length(REPORT_LEN - 1))
        );
        let mut long = b.clone();
        long.push(0);
        assert_eq!(
            SnpReport::parse(&long),
            Err(SnpParseError::Length(REPORT_LEN + 1))
        );
        assert_eq!(SnpReport::parse(&[]), Err(SnpParseError::Length(0)));
        let mut x = b.clone();
        x[REPORT_LEN - 1] = 1;
        assert_eq!(SnpReport::parse(&x), Err(SnpParseError::UnsignedTail(1)));
        for v in [0u32, 1, 6, u32::MAX] {
            let mut x = b.clone();
            x[..4].copy_from_slice(&v.to_le_bytes());
            assert_eq!(SnpReport::parse(&x), Err(SnpParseError::Version(v)));
        }
    }

    #[test]
    fn signature_components_must_fit_48_bytes() {
        let mut r = SnpReport::parse(&read("trustee-test-report.bin")).unwrap();
        r.sig_s[48] = 1;
        assert_eq!(
            r.signature_p384(),
            Err(SnpSignatureError::Oversized { component: "s" })
        );
        r.sig_s = [0; 72];
        assert_eq!(
            r.signature_p384(),
            Err(SnpSignatureError::Zero { component: "s" })
        );
    }

    #[test]
    fn turin_layout() {
        let t = Tcb::decode([1, 2, 3, 4, 0, 0, 0, 5], TcbLayout::Turin);
        assert_eq!(
            (t.fmc, t.bootloader, t.tee, t.snp, t.microcode),
            (Some(1), 2, 3, 4, 5)
        );
        assert_eq!(Generation::from_cpuid(0x1A, 0x02), Some(Generation::Turin));
        assert_eq!(Generation::from_cpuid(0x19, 0x11), Some(Generation::Genoa));
        assert_eq!(Generation::from_cpuid(0x17, 0x31), None);
    }

    #[test]
    fn debug_bit() {
        assert!(GuestPolicy::from_raw(0x3_0000 | 1 << 19).debug);
        assert!(!GuestPolicy::from_raw(0x3_0000).debug);
    }
}
