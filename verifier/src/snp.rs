//! AMD SEV-SNP: an attestation report, its VCEK or VLEK, and the AMD chain.
//!
//! Checks, in order (stable names):
//! 1. `parse`: exactly 0x4A0 bytes, known version ([`custody_formats::snp`]).
//! 2. `cert_chain` / `cert_validity`: VCEK -> ASK -> ARK or VLEK -> ASVK -> ARK, ending at
//!    a built-in ARK (Milan, Genoa, Turin). A CA file may supply the ASK/ASVK; any
//!    self-signed certificate in it must be byte-identical to a built-in ARK.
//! 3. `revocation`: with the ARK's CRL given ([`SnpVerifier::with_crls`], AMD KDS), the
//!    ASK/ASVK it issued is not listed (`revoked` fails here, as does a CRL that does not
//!    verify under the ARK); a CRL past its nextUpdate (plus the grace) says `stale`, none
//!    says `unchecked`: both pass, named in the claims, for policies to decide.
//! 4. `signature`: SIGNATURE_ALGO = 1, ECDSA P-384/SHA-384 over bytes `[0, 0x2A0)`.
//! 5. `key_kind`: the report's SIGNING_KEY (VCEK/VLEK) matches the certificate's kind.
//! 6. `tcb`: the certificate's SPL extensions equal the report's REPORTED_TCB (decoded
//!    with the generation the chain proves); a VCEK's hwID equals CHIP_ID.
//! 7. `report_data` (only when an expected value is given).
//! 8. `policy`: debug off unless allowed ([`evaluate_policy`]).

use crate::check::{CheckLog, EvidenceVerifier, FailedCheck, Outcome, UnixTime};
use crate::x509::{split_certs, verify_chain, ChainError, TrustAnchor};
use custody_formats::snp::{
    FwVersion, Generation, GuestPolicy, KeyInfo, PlatformInfo, SigningKey, SnpParseError, SnpReport,
    SnpSignatureError, Tcb, TcbLayout, SIG_ALGO_ECDSA_P384_SHA384,
};
use serde::Serialize;
use thiserror::Error;
use x509_parser::prelude::*;

/// Built-in AMD roots and intermediates, copied from the `sev` crate 8.0.0
/// (`src/certs/snp/builtin/*`) and, for the Milan ASVK, from AMD KDS via trustee's test
/// data; see `roots/amd/README.md`.
const BUILTIN: &[(Generation, Role, &[u8])] = &[
    (
        Generation::Milan,
        Role::Ark,
        include_bytes!("../roots/amd/milan-ark.pem"),
    ),
    (
        Generation::Milan,
        Role::Intermediate,
        include_bytes!("../roots/amd/milan-ask.pem"),
    ),
    (
        Generation::Milan,
        Role::Intermediate,
        include_bytes!("../roots/amd/milan-asvk.pem"),
    ),
    (
        Generation::Genoa,
        Role::Ark,
        include_bytes!("../roots/amd/genoa-ark.pem"),
    ),
    (
        Generation::Genoa,
        Role::Intermediate,
        include_bytes!("../roots/amd/genoa-ask.pem"),
    ),
    (
        Generation::Turin,
        Role::Ark,
        include_bytes!("../roots/amd/turin-ark.pem"),
    ),
    (
        Generation::Turin,
        Role::Intermediate,
        include_bytes!("../roots/amd/turin-ask.pem"),
    ),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Ark,
    Intermediate,
}

const OID_BL_SPL: &str = "1.3.6.1.4.1.3704.1.3.1";
const OID_TEE_SPL: &str = "1.3.6.1.4.1.3704.1.3.2";
const OID_SNP_SPL: &str = "1.3.6.1.4.1.3704.1.3.3";
const OID_UCODE_SPL: &str = "1.3.6.1.4.1.3704.1.3.8";
const OID_FMC_SPL: &str = "1.3.6.1.4.1.3704.1.3.9";
const OID_HW_ID: &str = "1.3.6.1.4.1.3704.1.4";
const OID_PRODUCT_NAME: &str = "1.3.6.1.4.1.3704.1.2";

/// Expected REPORT_DATA: a 32-byte binding (the other 32 bytes must be zero) or all 64.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedReportData {
    Binding([u8; 32]),
    Exact([u8; 64]),
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("expected report_data must be 32 or 64 bytes, got {0}")]
pub struct ReportDataLength(pub usize);

impl ExpectedReportData {
    pub fn from_slice(b: &[u8]) -> Result<Self, ReportDataLength> {
        if let Ok(a) = <[u8; 32]>::try_from(b) {
            return Ok(Self::Binding(a));
        }
        <[u8; 64]>::try_from(b)
            .map(Self::Exact)
            .map_err(|_| ReportDataLength(b.len()))
    }

    /// The 64 bytes the report must hold.
    pub fn expected(&self) -> [u8; 64] {
        match self {
            Self::Exact(a) => *a,
            Self::Binding(b) => {
                let mut a = [0u8; 64];
                let (head, _) = a.split_at_mut(32);
                head.copy_from_slice(b);
                a
            }
        }
    }
}

/// Evidence for one report.
#[derive(Debug, Clone, Copy)]
pub struct SnpEvidence<'a> {
    /// The 0x4A0-byte report.
    pub report: &'a [u8],
    /// VCEK or VLEK certificate, DER or PEM (exactly one certificate).
    pub vek: &'a [u8],
    /// ASK/ASVK (and optionally ARK), PEM or DER; built-in intermediates when absent.
    pub ca_chain: Option<&'a [u8]>,
    pub expected_report_data: Option<ExpectedReportData>,
    /// Accept a guest whose policy allows debugging.
    pub allow_debug: bool,
}

/// Why a policy was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PolicyError {
    #[error("guest policy {policy:#x} allows debugging (bit 19) and debug is not allowed")]
    Debug { policy: u64 },
}

/// The guest-policy rules, separate from the rest so they can be tested alone.
pub fn evaluate_policy(policy: &GuestPolicy, allow_debug: bool) -> Result<(), PolicyError> {
    if policy.debug && !allow_debug {
        return Err(PolicyError::Debug { policy: policy.raw });
    }
    Ok(())
}

#[derive(Debug, Error)]
pub enum SnpError {
    #[error("report: {0}")]
    Parse(#[from] SnpParseError),
    #[error("VEK certificate: {0}")]
    VekCert(String),
    #[error("CA chain: {0}")]
    CaChain(String),
    #[error("self-signed certificate {subject:?} in the CA chain is not a built-in AMD ARK")]
    UntrustedArk { subject: String },
    #[error("no ASK/ASVK found for the VEK issuer {issuer:?}")]
    NoIntermediate { issuer: String },
    #[error("chain ends at {anchor:?}, which is not a built-in AMD ARK")]
    UnknownGeneration { anchor: String },
    #[error(transparent)]
    Chain(#[from] ChainError),
    #[error("SIGNATURE_ALGO is {0}, not 1 (ECDSA P-384 with SHA-384)")]
    SigAlgo(u32),
    #[error(transparent)]
    SigEncoding(#[from] SnpSignatureError),
    #[error("report signature does not verify with the {0} public key")]
    Signature(&'static str),
    #[error("certificate subject CN {0:?} is neither SEV-VCEK nor SEV-VLEK")]
    UnknownVekKind(String),
    #[error("report is signed by {report:?} but the certificate is a {cert}")]
    KeyKind { report: SigningKey, cert: &'static str },
    #[error("certificate extension {name} ({oid}): {reason}")]
    Extension {
        name: &'static str,
        oid: &'static str,
        reason: String,
    },
    #[error("{what}: certificate says {cert}, report says {report}")]
    TcbMismatch {
        what: &'static str,
        cert: String,
        report: String,
    },
    #[error("report_data differs from the expected value (expected {expected}, got {got})")]
    ReportData { expected: String, got: String },
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("certificate serial {serial} of the chain was revoked at {revoked_at} (the ARK's CRL)")]
    Revoked { serial: String, revoked_at: i64 },
    #[error(transparent)]
    Crl(#[from] crate::crl::CrlError),
}

impl FailedCheck for SnpError {
    fn check(&self) -> &'static str {
        match self {
            Self::Parse(_) => "parse",
            Self::Chain(e) => e.check(),
            Self::VekCert(_)
            | Self::CaChain(_)
            | Self::UntrustedArk { .. }
            | Self::NoIntermediate { .. }
            | Self::UnknownGeneration { .. } => "cert_chain",
            Self::SigAlgo(_) | Self::SigEncoding(_) | Self::Signature(_) => "signature",
            Self::UnknownVekKind(_) | Self::KeyKind { .. } => "key_kind",
            Self::Extension { .. } | Self::TcbMismatch { .. } => "tcb",
            Self::ReportData { .. } => "report_data",
            Self::Policy(_) => "policy",
            Self::Revoked { .. } | Self::Crl(_) => "revocation",
        }
    }
}

/// CPUID identification (v3+ reports).
#[derive(Debug, Clone, Serialize)]
pub struct Cpuid {
    pub family: u8,
    pub model: u8,
    pub stepping: u8,
}

/// What a verified report says.
#[derive(Debug, Clone, Serialize)]
pub struct SnpClaims {
    /// Generation proven by the chain: Milan, Genoa or Turin.
    pub product: &'static str,
    /// The VEK's productName extension (e.g. "Milan-B0").
    pub product_name: Option<String>,
    /// `vcek` or `vlek`.
    pub signer: &'static str,
    pub version: u32,
    pub measurement: String,
    pub host_data: String,
    pub report_data: String,
    pub chip_id: String,
    pub reported_tcb: Tcb,
    pub current_tcb: Tcb,
    pub committed_tcb: Tcb,
    pub launch_tcb: Tcb,
    pub policy: GuestPolicy,
    pub vmpl: u32,
    pub guest_svn: u32,
    pub family_id: String,
    pub image_id: String,
    pub id_key_digest: String,
    pub author_key_digest: String,
    pub report_id: String,
    pub platform_info: PlatformInfo,
    pub key_info: KeyInfo,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpuid: Option<Cpuid>,
    pub current_version: String,
    pub committed_version: String,
    /// The chain's revocation status (`good`, `revoked`, `stale`, `unchecked`).
    pub revocation: crate::crl::Revocation,
}

#[derive(Debug, Clone)]
struct Intermediate {
    der: Vec<u8>,
    subject: Vec<u8>,
}

/// Verifies SEV-SNP evidence against the built-in AMD roots.
#[derive(Debug, Clone)]
pub struct SnpVerifier {
    arks: Vec<(Generation, TrustAnchor)>,
    intermediates: Vec<Intermediate>,
    /// AMD KDS CRLs (one per ARK), and the seconds past nextUpdate still taken as fresh.
    crls: Vec<crate::crl::Crl>,
    crl_grace: i64,
}

impl SnpVerifier {
    /// With the built-in ARKs and ASK/ASVKs.
    pub fn builtin() -> Result<Self, ChainError> {
        let mut arks = Vec::new();
        let mut intermediates = Vec::new();
        for (generation, role, pem) in BUILTIN {
            for der in split_certs(pem)? {
                match role {
                    Role::Ark => arks.push((*generation, TrustAnchor::from_der(der)?)),
                    Role::Intermediate => intermediates.push(Intermediate {
                        subject: subject_raw(&der).ok_or(ChainError::Parse {
                            index: 0,
                            reason: "built-in intermediate".into(),
                        })?,
                        der,
                    }),
                }
            }
        }
        Ok(Self {
            arks,
            intermediates,
            crls: Vec::new(),
            crl_grace: 0,
        })
    }

    /// Check chains against these CRLs (AMD KDS, one per ARK), taking a CRL as fresh up
    /// to `grace` seconds past its nextUpdate. Each is checked against its ARK when used.
    pub fn with_crls(mut self, crls: Vec<crate::crl::Crl>, grace: i64) -> Self {
        self.crls = crls;
        self.crl_grace = grace;
        self
    }

    /// The CRLs chains are checked against (`with_crls`).
    pub fn crls(&self) -> &[crate::crl::Crl] {
        &self.crls
    }

    /// Also trust a **test** root: `pem` holds one self-signed ARK and any ASK/ASVKs under
    /// it. For tests only (the verifier's `[snp] test_ark`): reports from hardware that
    /// a test machine cannot have are re-signed under it. The generation comes from the
    /// ARK's common name as AMD spells it (`ARK-Milan...`, `ARK-Genoa...`, `ARK-Turin...`),
    /// since it decides how the TCB is read.
    pub fn with_test_ark(mut self, pem: &[u8]) -> Result<Self, SnpError> {
        let mut ark = None;
        for der in split_certs(pem).map_err(|e| SnpError::CaChain(e.to_string()))? {
            let (subject, issuer) =
                names(&der).ok_or_else(|| SnpError::CaChain("a test certificate does not parse".into()))?;
            if subject != issuer {
                self.intermediates.push(Intermediate { der, subject });
                continue;
            }
            let anchor = TrustAnchor::from_der(der)?;
            let cn = anchor.name().rsplit("CN=").next().unwrap_or_default().to_owned();
            let generation = [Generation::Milan, Generation::Genoa, Generation::Turin]
                .into_iter()
                .find(|g| cn.starts_with(&format!("ARK-{}", g.name())))
                .ok_or_else(|| {
                    SnpError::CaChain(format!(
                        "test ARK {cn:?}: its CN must start with ARK-Milan, ARK-Genoa or ARK-Turin"
                    ))
                })?;
            ark = Some((generation, anchor));
        }
        let ark = ark.ok_or_else(|| SnpError::CaChain("no self-signed test ARK in the file".into()))?;
        self.arks.push(ark);
        Ok(self)
    }

    /// The built-in ARKs (DER), for callers that pin them elsewhere.
    pub fn arks(&self) -> impl Iterator<Item = (Generation, &[u8])> {
        self.arks.iter().map(|(g, a)| (*g, a.der()))
    }

    /// Leaf, its ASK/ASVK and (if supplied) the ARK, leaf first.
    fn build_chain(
        &self,
        leaf: &[u8],
        leaf_issuer: &[u8],
        ca: Option<&[u8]>,
    ) -> Result<Vec<Vec<u8>>, SnpError> {
        let mut chain = vec![leaf.to_vec()];
        let Some(ca) = ca else {
            let inter = self
                .intermediates
                .iter()
                .find(|i| i.subject == leaf_issuer)
                .ok_or_else(|| SnpError::NoIntermediate {
                    issuer: name_string(leaf_issuer),
                })?;
            chain.push(inter.der.clone());
            return Ok(chain);
        };
        let certs = split_certs(ca).map_err(|e| SnpError::CaChain(e.to_string()))?;
        let mut parsed = Vec::new();
        for der in &certs {
            let (subject, issuer) =
                names(der).ok_or_else(|| SnpError::CaChain("a certificate does not parse".into()))?;
            // A root we were handed is only acceptable if it is one we already pin.
            if subject == issuer && !self.arks.iter().any(|(_, a)| a.der() == der.as_slice()) {
                return Err(SnpError::UntrustedArk {
                    subject: name_string(&subject),
                });
            }
            parsed.push((der, subject, issuer));
        }
        let (inter, _, inter_issuer) = parsed
            .iter()
            .find(|(_, s, i)| s == leaf_issuer && s != i)
            .ok_or_else(|| SnpError::NoIntermediate {
                issuer: name_string(leaf_issuer),
            })?;
        chain.push((*inter).clone());
        if let Some((ark, _, _)) = parsed.iter().find(|(_, s, i)| s == inter_issuer && s == i) {
            chain.push((*ark).clone());
        }
        Ok(chain)
    }
}

impl EvidenceVerifier for SnpVerifier {
    type Evidence<'a> = SnpEvidence<'a>;
    type Claims = SnpClaims;
    type Error = SnpError;
    const KIND: &'static str = "snp";

    fn verify(&self, ev: SnpEvidence<'_>, at: UnixTime) -> Outcome<SnpClaims, SnpError> {
        let mut log = CheckLog::new();
        macro_rules! tri {
            ($e:expr) => {
                match $e {
                    Ok(v) => v,
                    Err(e) => return Err(log.reject(SnpError::from(e))),
                }
            };
        }

        // parse
        let report = tri!(SnpReport::parse(ev.report));
        log.pass(
            "parse",
            format!(
                "version {}, signing key {:?}, {} bytes",
                report.version,
                report.key_info.signing_key,
                ev.report.len()
            ),
        );

        // cert_chain / cert_validity
        let leaf = tri!(one_cert(ev.vek));
        let vek = tri!(VekInfo::from_der(&leaf));
        let chain = tri!(self.build_chain(&leaf, &vek.issuer, ev.ca_chain));
        let anchors: Vec<TrustAnchor> = self.arks.iter().map(|(_, a)| a.clone()).collect();
        let validated = tri!(verify_chain(&chain, &anchors, at));
        let generation = tri!(self
            .arks
            .iter()
            .find(|(_, a)| a.name() == validated.anchor)
            .map(|(g, _)| *g)
            .ok_or_else(|| SnpError::UnknownGeneration {
                anchor: validated.anchor.clone(),
            }));
        log.pass(
            "cert_chain",
            format!(
                "{} -> {} certificates -> built-in ARK-{}",
                vek.cn,
                validated.len,
                generation.name()
            ),
        );
        log.pass(
            "cert_validity",
            format!(
                "appraisal time {} within [{}, {}]",
                at.0, validated.valid_from, validated.valid_until
            ),
        );

        // revocation: the certificates the ARK issued, against the ARK's CRL.
        let revocation = {
            let anchor = self
                .arks
                .iter()
                .find(|(_, a)| a.name() == validated.anchor)
                .map(|(_, a)| a);
            match anchor {
                None => crate::crl::Revocation::Unchecked,
                Some(a) => {
                    let issued: Vec<Vec<u8>> = chain
                        .iter()
                        .filter_map(|der| X509Certificate::from_der(der).ok().map(|(_, c)| c))
                        .filter(|c| {
                            c.issuer().as_raw() == a.subject_raw() && c.subject().as_raw() != a.subject_raw()
                        })
                        .map(|c| c.raw_serial().to_vec())
                        .collect();
                    tri!(crate::crl::status(&self.crls, a, &issued, at.0, self.crl_grace))
                }
            }
        };
        if let crate::crl::Revocation::Revoked { serial, revoked_at } = &revocation {
            return Err(log.reject(SnpError::Revoked {
                serial: serial.clone(),
                revoked_at: *revoked_at,
            }));
        }
        log.pass(
            "revocation",
            match &revocation {
                crate::crl::Revocation::Good { crl_next_update, .. } => format!(
                    "not listed by the ARK's CRL (next update {})",
                    crl_next_update.map_or("none".into(), |n| n.to_string())
                ),
                crate::crl::Revocation::Stale { crl_next_update } => {
                    format!("stale: the ARK's newest CRL was due for update at {crl_next_update}")
                }
                _ => "unchecked: no CRL of this ARK was given".into(),
            },
        );

        // signature
        if report.sig_algo != SIG_ALGO_ECDSA_P384_SHA384 {
            return Err(log.reject(SnpError::SigAlgo(report.sig_algo)));
        }
        let sig = tri!(report.signature_p384());
        if !validated.leaf_key.verify_p384_fixed(report.signed_bytes(), &sig) {
            return Err(log.reject(SnpError::Signature(vek.kind_name())));
        }
        log.pass(
            "signature",
            format!("ECDSA P-384/SHA-384 over [0, 0x2A0) by the {}", vek.kind_name()),
        );

        // key_kind
        let cert_kind = tri!(check_key_kind(report.key_info.signing_key, &vek));
        log.pass(
            "key_kind",
            format!("report and certificate agree: {}", vek.kind_name()),
        );

        // tcb
        let layout = generation.tcb_layout();
        tri!(check_tcb(&report, &vek, generation, cert_kind));
        let reported = report.reported_tcb(layout);
        log.pass(
            "tcb",
            format!(
                "reported TCB {:016x} (bl {} tee {} snp {} ucode {}{}) matches the {}",
                reported.raw,
                reported.bootloader,
                reported.tee,
                reported.snp,
                reported.microcode,
                reported.fmc.map(|f| format!(" fmc {f}")).unwrap_or_default(),
                vek.kind_name()
            ),
        );

        // report_data
        if let Some(exp) = ev.expected_report_data {
            let want = exp.expected();
            if want != report.report_data {
                return Err(log.reject(SnpError::ReportData {
                    expected: crate::hex(want),
                    got: crate::hex(report.report_data),
                }));
            }
            log.pass(
                "report_data",
                match exp {
                    ExpectedReportData::Binding(_) => "binding in report_data[0..32], rest zero",
                    ExpectedReportData::Exact(_) => "all 64 bytes as expected",
                },
            );
        }

        // policy
        tri!(evaluate_policy(&report.policy, ev.allow_debug));
        log.pass(
            "policy",
            format!(
                "guest policy {:#x}: debug {}{}",
                report.policy.raw,
                if report.policy.debug { "on" } else { "off" },
                if ev.allow_debug { " (allowed)" } else { "" }
            ),
        );

        Ok(log.finish(claims(&report, &vek, generation, layout, revocation)))
    }
}

fn claims(
    r: &SnpReport,
    vek: &VekInfo,
    generation: Generation,
    layout: TcbLayout,
    revocation: crate::crl::Revocation,
) -> SnpClaims {
    let ver = |v: FwVersion| format!("{}.{}.{}", v.major, v.minor, v.build);
    SnpClaims {
        product: generation.name(),
        product_name: vek.product_name.clone(),
        signer: match r.key_info.signing_key {
            SigningKey::Vlek => "vlek",
            _ => "vcek",
        },
        version: r.version,
        measurement: crate::hex(r.measurement),
        host_data: crate::hex(r.host_data),
        report_data: crate::hex(r.report_data),
        chip_id: crate::hex(r.chip_id),
        reported_tcb: r.reported_tcb(layout),
        current_tcb: r.current_tcb(layout),
        committed_tcb: r.committed_tcb(layout),
        launch_tcb: r.launch_tcb(layout),
        policy: r.policy,
        vmpl: r.vmpl,
        guest_svn: r.guest_svn,
        family_id: crate::hex(r.family_id),
        image_id: crate::hex(r.image_id),
        id_key_digest: crate::hex(r.id_key_digest),
        author_key_digest: crate::hex(r.author_key_digest),
        report_id: crate::hex(r.report_id),
        platform_info: r.platform_info,
        key_info: r.key_info,
        cpuid: r.cpuid.map(|(family, model, stepping)| Cpuid {
            family,
            model,
            stepping,
        }),
        current_version: ver(r.current_version),
        committed_version: ver(r.committed_version),
        revocation,
    }
}

/// The report's SIGNING_KEY must name the kind of certificate presented.
fn check_key_kind(report: SigningKey, vek: &VekInfo) -> Result<SigningKey, SnpError> {
    let cert = vek.kind()?;
    if report != cert {
        return Err(SnpError::KeyKind {
            report,
            cert: vek.kind_name(),
        });
    }
    Ok(cert)
}

fn check_tcb(r: &SnpReport, vek: &VekInfo, generation: Generation, kind: SigningKey) -> Result<(), SnpError> {
    // The report's CPUID (v3+) must name the generation the chain proves.
    if let Some((fam, model, _)) = r.cpuid {
        let from_cpuid = Generation::from_cpuid(fam, model);
        if from_cpuid != Some(generation) {
            return Err(SnpError::TcbMismatch {
                what: "product",
                cert: generation.name().into(),
                report: format!("CPUID family {fam:#x} model {model:#x}"),
            });
        }
    }
    if let Some(name) = &vek.product_name {
        if !name.starts_with(generation.name()) {
            return Err(SnpError::TcbMismatch {
                what: "product",
                cert: name.clone(),
                report: generation.name().into(),
            });
        }
    }
    let t = r.reported_tcb(generation.tcb_layout());
    let spls: [(&'static str, &'static str, u8); 4] = [
        ("blSPL", OID_BL_SPL, t.bootloader),
        ("teeSPL", OID_TEE_SPL, t.tee),
        ("snpSPL", OID_SNP_SPL, t.snp),
        ("ucodeSPL", OID_UCODE_SPL, t.microcode),
    ];
    for (name, oid, have) in spls {
        let want = vek.spl(name, oid)?.ok_or_else(|| SnpError::Extension {
            name,
            oid,
            reason: "missing".into(),
        })?;
        if want != have {
            return Err(SnpError::TcbMismatch {
                what: name,
                cert: want.to_string(),
                report: have.to_string(),
            });
        }
    }
    // Turin adds the FMC SPL; elsewhere it must not appear.
    match (vek.spl("fmcSPL", OID_FMC_SPL)?, t.fmc) {
        (None, None) => {}
        (Some(c), Some(f)) if c == f => {}
        (c, f) => {
            return Err(SnpError::TcbMismatch {
                what: "fmcSPL",
                cert: format!("{c:?}"),
                report: format!("{f:?}"),
            })
        }
    }
    if kind == SigningKey::Vcek {
        let hwid = vek.hwid()?;
        if hwid != r.chip_id {
            return Err(SnpError::TcbMismatch {
                what: "hwID",
                cert: crate::hex(hwid),
                report: crate::hex(r.chip_id),
            });
        }
    }
    Ok(())
}

fn one_cert(input: &[u8]) -> Result<Vec<u8>, SnpError> {
    let mut certs = split_certs(input).map_err(|e| SnpError::VekCert(e.to_string()))?;
    if certs.len() != 1 {
        return Err(SnpError::VekCert(format!(
            "expected one certificate, got {}",
            certs.len()
        )));
    }
    certs.pop().ok_or_else(|| SnpError::VekCert("empty".into()))
}

fn names(der: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let (_, c) = X509Certificate::from_der(der).ok()?;
    Some((c.subject().as_raw().to_vec(), c.issuer().as_raw().to_vec()))
}

fn subject_raw(der: &[u8]) -> Option<Vec<u8>> {
    names(der).map(|(s, _)| s)
}

fn name_string(raw: &[u8]) -> String {
    X509Name::from_der(raw)
        .map(|(_, n)| n.to_string())
        .unwrap_or_else(|_| crate::hex(raw))
}

/// What the verifier reads from the VCEK/VLEK.
#[derive(Debug, Clone)]
struct VekInfo {
    issuer: Vec<u8>,
    cn: String,
    product_name: Option<String>,
    /// (OID, extnValue content) of the AMD extensions.
    exts: Vec<(String, Vec<u8>)>,
}

impl VekInfo {
    fn from_der(der: &[u8]) -> Result<Self, SnpError> {
        let (_, c) = X509Certificate::from_der(der).map_err(|e| SnpError::VekCert(e.to_string()))?;
        let cn = c
            .subject()
            .iter_common_name()
            .next()
            .and_then(|a| a.as_str().ok())
            .unwrap_or_default()
            .to_owned();
        let exts: Vec<(String, Vec<u8>)> = c
            .extensions()
            .iter()
            .map(|e| (e.oid.to_id_string(), e.value.to_vec()))
            .filter(|(o, _)| o.starts_with("1.3.6.1.4.1.3704."))
            .collect();
        let product_name = exts
            .iter()
            .find(|(o, _)| o == OID_PRODUCT_NAME)
            .and_then(|(_, v)| der_ia5(v));
        Ok(Self {
            issuer: c.issuer().as_raw().to_vec(),
            cn,
            product_name,
            exts,
        })
    }

    fn kind(&self) -> Result<SigningKey, SnpError> {
        match self.cn.as_str() {
            "SEV-VCEK" => Ok(SigningKey::Vcek),
            "SEV-VLEK" => Ok(SigningKey::Vlek),
            other => Err(SnpError::UnknownVekKind(other.to_owned())),
        }
    }

    fn kind_name(&self) -> &'static str {
        match self.cn.as_str() {
            "SEV-VLEK" => "VLEK",
            "SEV-VCEK" => "VCEK",
            _ => "VEK",
        }
    }

    fn ext(&self, oid: &str) -> Option<&[u8]> {
        self.exts
            .iter()
            .find(|(o, _)| o == oid)
            .map(|(_, v)| v.as_slice())
    }

    /// An SPL extension: a DER INTEGER in 0..=255.
    fn spl(&self, name: &'static str, oid: &'static str) -> Result<Option<u8>, SnpError> {
        let Some(v) = self.ext(oid) else {
            return Ok(None);
        };
        der_u8(v).map(Some).ok_or_else(|| SnpError::Extension {
            name,
            oid,
            reason: format!("not a DER INTEGER in 0..=255: {}", crate::hex(v)),
        })
    }

    /// hwID: 64 raw bytes (as AMD KDS issues it) or the same wrapped in an OCTET STRING.
    fn hwid(&self) -> Result<[u8; 64], SnpError> {
        let err = |reason: String| SnpError::Extension {
            name: "hwID",
            oid: OID_HW_ID,
            reason,
        };
        let v = self.ext(OID_HW_ID).ok_or_else(|| err("missing".into()))?;
        let body = match v {
            [0x04, 0x40, rest @ ..] if rest.len() == 64 => rest,
            _ => v,
        };
        <[u8; 64]>::try_from(body).map_err(|_| err(format!("{} bytes, not 64", v.len())))
    }
}

/// A short-form DER INTEGER holding a value 0..=255 (one leading zero allowed for 128..).
fn der_u8(v: &[u8]) -> Option<u8> {
    match v {
        [0x02, 0x01, b] if *b < 0x80 => Some(*b),
        [0x02, 0x02, 0x00, b] if *b >= 0x80 => Some(*b),
        _ => None,
    }
}

/// A short-form DER IA5String.
fn der_ia5(v: &[u8]) -> Option<String> {
    match v {
        [0x16, n, rest @ ..] if usize::from(*n) == rest.len() && rest.is_ascii() => {
            String::from_utf8(rest.to_vec()).ok()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use custody_formats::snp::REPORT_LEN;

    const TV: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/snp");
    /// 2025-06-01T00:00:00Z: inside the VCEK (2023-01-24..2030-01-24) and the VLEK
    /// (2024-12-10..2025-12-10) validity.
    const AT: UnixTime = UnixTime(1_748_736_000);

    fn read(name: &str) -> Vec<u8> {
        std::fs::read(format!("{TV}/{name}")).unwrap()
    }

    fn v() -> SnpVerifier {
        SnpVerifier::builtin().unwrap()
    }

    struct Ev {
        report: Vec<u8>,
        vek: Vec<u8>,
        ca: Option<Vec<u8>>,
        rd: Option<ExpectedReportData>,
        debug: bool,
    }

    impl Ev {
        fn vcek() -> Self {
            Self {
                report: read("trustee-test-report.bin"),
                vek: read("trustee-test-vcek.der"),
                ca: None,
                rd: None,
                debug: false,
            }
        }
        fn vlek() -> Self {
            Self {
                report: read("trustee-test-vlek-report.bin"),
                vek: read("trustee-test-vlek.der"),
                ca: Some(read("trustee-milan_ask_ark_asvk.pem")),
                rd: None,
                debug: false,
            }
        }
        fn run_at(&self, at: UnixTime) -> Outcome<SnpClaims, SnpError> {
            v().verify(
                SnpEvidence {
                    report: &self.report,
                    vek: &self.vek,
                    ca_chain: self.ca.as_deref(),
                    expected_report_data: self.rd,
                    allow_debug: self.debug,
                },
                at,
            )
        }
        fn run(&self) -> Outcome<SnpClaims, SnpError> {
            self.run_at(AT)
        }
        /// The failed check, and the names of the ones that passed.
        fn fails(&self) -> (&'static str, Vec<&'static str>) {
            match self.run() {
                Ok(_) => panic!("expected a rejection"),
                Err(r) => (r.error.check(), r.passed.iter().map(|c| c.name).collect()),
            }
        }
    }

    fn names(o: &Outcome<SnpClaims, SnpError>) -> Vec<&'static str> {
        match o {
            Ok(v) => v.checks.iter().map(|c| c.name).collect(),
            Err(r) => panic!("rejected: {r}"),
        }
    }

    #[test]
    fn vcek_report_passes_with_builtin_milan_roots() {
        let mut ev = Ev::vcek();
        let rd = SnpReport::parse(&ev.report).unwrap().report_data;
        ev.rd = Some(ExpectedReportData::Exact(rd));
        let o = ev.run();
        assert_eq!(
            names(&o),
            [
                "parse",
                "cert_chain",
                "cert_validity",
                "revocation",
                "signature",
                "key_kind",
                "tcb",
                "report_data",
                "policy"
            ]
        );
        let c = o.unwrap().claims;
        assert_eq!(c.revocation.as_str(), "unchecked");
        assert_eq!(c.product, "Milan");
        assert_eq!(c.product_name.as_deref(), Some("Milan-B0"));
        assert_eq!(c.signer, "vcek");
        assert_eq!(c.version, 2);
        assert!(!c.policy.debug);
        assert_eq!(c.reported_tcb.snp, 8);
        assert_eq!(c.reported_tcb.microcode, 0x73);
        assert_eq!(c.chip_id.len(), 128);
        assert!(c.chip_id.starts_with("c38427a3"));
        assert_eq!(c.current_version, "1.52.4");
        let j = serde_json::to_value(&c).unwrap();
        assert_eq!(j["reported_tcb"]["raw"], "7308000000000003");
    }

    #[test]
    fn vcek_report_passes_with_ca_file_too() {
        let mut ev = Ev::vcek();
        ev.ca = Some(read("trustee-milan_ask_ark_asvk.pem"));
        assert!(ev.run().is_ok());
    }

    #[test]
    fn vlek_report_passes_via_asvk() {
        let ev = Ev::vlek();
        let c = ev.run().unwrap().claims;
        assert_eq!(c.signer, "vlek");
        assert_eq!(c.product, "Milan");
        assert_eq!(c.product_name.as_deref(), Some("Milan"));
        assert_eq!(c.version, 3);
        assert_eq!(c.vmpl, 1);
        assert_eq!(c.cpuid.unwrap().family, 0x19);
        // The built-in Milan ASVK serves when no CA file is given.
        let mut ev = Ev::vlek();
        ev.ca = None;
        assert!(ev.run().is_ok());
    }

    #[test]
    fn invalid_vceks_are_rejected_at_the_chain() {
        for f in [
            "trustee-test-vcek-invalid-legacy.der",
            "trustee-test-vcek-invalid-new.der",
        ] {
            let mut ev = Ev::vcek();
            ev.vek = read(f);
            let (check, passed) = ev.fails();
            assert_eq!(check, "cert_chain", "{f}");
            assert_eq!(passed, ["parse"]);
            let e = ev.run().unwrap_err().error;
            assert!(
                matches!(e, SnpError::Chain(ChainError::Signature { index: 0, .. })),
                "{f}: {e:?}"
            );
        }
    }

    #[test]
    fn flipped_bit_in_signed_area_fails_signature() {
        for off in [0x50, 0x90, 0x1A0, 0x29F] {
            let mut ev = Ev::vcek();
            ev.report[off] ^= 1;
            assert_eq!(ev.fails().0, "signature", "offset {off:#x}");
        }
        // Flipping the version byte makes it unparsable instead.
        let mut ev = Ev::vcek();
        ev.report[0] ^= 0x10;
        assert_eq!(ev.fails().0, "parse");
    }

    #[test]
    fn flipped_bit_in_r_or_s_fails_signature() {
        for off in [0x2A0, 0x2A0 + 47, 0x2E8, 0x2E8 + 20] {
            let mut ev = Ev::vcek();
            ev.report[off] ^= 1;
            assert_eq!(ev.fails().0, "signature", "offset {off:#x}");
        }
        // A byte beyond the 48-byte scalar.
        let mut ev = Ev::vcek();
        ev.report[0x2A0 + 60] = 1;
        let e = ev.run().unwrap_err().error;
        assert!(matches!(e, SnpError::SigEncoding(_)), "{e:?}");
        assert_eq!(e.check(), "signature");
    }

    /// No single-byte change anywhere in the report yields a verified report: the signed
    /// area and r/s fail the signature, the unsigned reserved tail must be zero.
    #[test]
    fn every_byte_is_covered() {
        for off in (0..REPORT_LEN).step_by(3) {
            let mut ev = Ev::vcek();
            ev.report[off] ^= 0x40;
            let e = ev.run().unwrap_err().error;
            assert!(matches!(e.check(), "parse" | "signature"), "{off:#x}: {e}");
        }
        assert!(Ev::vcek().run().is_ok());
    }

    #[test]
    fn sig_algo_must_be_p384() {
        let mut ev = Ev::vcek();
        ev.report[0x34] = 2;
        let e = ev.run().unwrap_err().error;
        assert!(matches!(e, SnpError::SigAlgo(2)), "{e:?}");
    }

    #[test]
    fn truncated_or_extended_report_fails_parse() {
        let mut ev = Ev::vcek();
        ev.report.pop();
        assert_eq!(ev.fails(), ("parse", vec![]));
        let mut ev = Ev::vcek();
        ev.report.push(0);
        assert_eq!(ev.fails(), ("parse", vec![]));
    }

    #[test]
    fn wrong_report_data_fails() {
        // The VCEK report holds a 32-byte value and 32 zero bytes: a binding.
        let mut ev = Ev::vcek();
        let rd = SnpReport::parse(&ev.report).unwrap().report_data;
        let mut b = [0u8; 32];
        b.copy_from_slice(&rd[..32]);
        ev.rd = Some(ExpectedReportData::Binding(b));
        assert!(ev.run().is_ok());
        b[0] ^= 1;
        ev.rd = Some(ExpectedReportData::Binding(b));
        let (check, passed) = ev.fails();
        assert_eq!(check, "report_data");
        assert_eq!(passed.last(), Some(&"tcb"));
        let mut wrong = rd;
        wrong[63] ^= 1;
        ev.rd = Some(ExpectedReportData::Exact(wrong));
        assert_eq!(ev.fails().0, "report_data");
        // The VLEK report uses all 64 bytes, so its first half is not a binding.
        let mut ev = Ev::vlek();
        let rd = SnpReport::parse(&ev.report).unwrap().report_data;
        b.copy_from_slice(&rd[..32]);
        ev.rd = Some(ExpectedReportData::Binding(b));
        assert_eq!(ev.fails().0, "report_data");
        ev.rd = Some(ExpectedReportData::Exact(rd));
        assert!(ev.run().is_ok());
    }

    #[test]
    fn report_data_length_is_exact() {
        assert!(ExpectedReportData::from_slice(&[0; 32]).is_ok());
        assert!(ExpectedReportData::from_slice(&[0; 64]).is_ok());
        for n in [0, 31, 33, 48, 63, 65] {
            assert_eq!(
                ExpectedReportData::from_slice(&vec![0; n]),
                Err(ReportDataLength(n))
            );
        }
        let e = ExpectedReportData::from_slice(&[7; 32]).unwrap().expected();
        assert_eq!(e[..32], [7; 32]);
        assert_eq!(e[32..], [0; 32]);
    }

    #[test]
    fn appraisal_time_outside_validity_fails_cert_validity() {
        let ev = Ev::vcek();
        // 2022-01-01, before the VCEK; 2031-01-01, after it.
        for at in [1_640_995_200, 1_924_992_000] {
            let e = ev.run_at(UnixTime(at)).unwrap_err();
            assert_eq!(e.error.check(), "cert_validity", "{at}");
        }
        // The VLEK expires 2025-12-10.
        let e = Ev::vlek().run_at(UnixTime(1_767_225_600)).unwrap_err();
        assert_eq!(e.error.check(), "cert_validity");
    }

    #[test]
    fn ca_file_with_foreign_ark_fails_cert_chain() {
        // Genoa's ARK is built in but does not issue SEV-Milan; a non-AMD self-signed
        // root is refused outright.
        let mut ev = Ev::vcek();
        let mut ca = read("trustee-milan_ask_ark_asvk.pem");
        ca.extend(read("../nvidia/nvidia-device-identity-root.pem"));
        ev.ca = Some(ca);
        let e = ev.run().unwrap_err().error;
        assert!(matches!(e, SnpError::UntrustedArk { .. }), "{e:?}");
        assert_eq!(e.check(), "cert_chain");
        // The Milan ASK alone with the Genoa ARK: the chain cannot end at a root that
        // signed it.
        let genoa = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/roots/amd/genoa-ark.pem")).unwrap();
        let ask = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/roots/amd/milan-ask.pem")).unwrap();
        let mut ev = Ev::vcek();
        ev.ca = Some([ask, genoa].concat());
        assert!(
            ev.run().is_ok(),
            "the unused Genoa ARK is a pinned root; the ASK still chains to Milan"
        );
        // An ARK that is not byte-identical: the pinned Milan ARK with one bit changed.
        let milan_ark = split_certs(
            &std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/roots/amd/milan-ark.pem")).unwrap(),
        )
        .unwrap();
        let mut fake = milan_ark[0].clone();
        let n = fake.len();
        fake[n - 10] ^= 1;
        let ask = split_certs(
            &std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/roots/amd/milan-ask.pem")).unwrap(),
        )
        .unwrap();
        let mut ev = Ev::vcek();
        ev.ca = Some([ask[0].clone(), fake].concat());
        let e = ev.run().unwrap_err().error;
        assert!(matches!(e, SnpError::UntrustedArk { .. }), "{e:?}");
    }

    #[test]
    fn vcek_for_the_vlek_report_fails_signature() {
        let mut ev = Ev::vlek();
        ev.vek = read("trustee-test-vcek.der");
        let (check, passed) = ev.fails();
        assert_eq!(check, "signature");
        assert_eq!(passed, ["parse", "cert_chain", "cert_validity", "revocation"]);
    }

    /// AMD's real Milan CRL (testdata/amd-crl) against the real Milan chain: good inside
    /// its window, stale after it; the Genoa CRL says nothing about a Milan chain; a CRL
    /// from an ARK that does not verify fails at `revocation`.
    #[test]
    fn amds_real_crls_give_the_chain_its_revocation_status() {
        let crl = |n: &str| {
            crate::crl::Crl::parse(
                &std::fs::read(format!("{}/testdata/amd-crl/{n}", env!("CARGO_MANIFEST_DIR"))).unwrap(),
            )
            .unwrap()
        };
        let run = |crls: Vec<crate::crl::Crl>, at: UnixTime| {
            let ev = Ev::vcek();
            SnpVerifier::builtin().unwrap().with_crls(crls, 0).verify(
                SnpEvidence {
                    report: &ev.report,
                    vek: &ev.vek,
                    ca_chain: None,
                    expected_report_data: None,
                    allow_debug: false,
                },
                at,
            )
        };
        let good = run(vec![crl("milan_crl.der"), crl("genoa_crl.der")], AT).unwrap();
        assert_eq!(good.claims.revocation.as_str(), "good");
        let after = UnixTime(1_778_544_000 + 86_400); // 2026-05-13, past Milan's nextUpdate
                                                      // (The VCEK is valid until 2030.)
        let stale = run(vec![crl("milan_crl.der")], after).unwrap();
        assert_eq!(stale.claims.revocation.as_str(), "stale");
        let other = run(vec![crl("genoa_crl.der")], AT).unwrap();
        assert_eq!(other.claims.revocation.as_str(), "unchecked");
        // The Milan CRL with one byte of its signature changed.
        let mut der = std::fs::read(format!(
            "{}/testdata/amd-crl/milan_crl.der",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let n = der.len();
        der[n - 5] ^= 1;
        let e = run(vec![crate::crl::Crl::parse(&der).unwrap()], AT).unwrap_err();
        assert_eq!(e.error.check(), "revocation", "{e}");
    }

    #[test]
    fn vek_must_be_one_certificate() {
        let mut ev = Ev::vcek();
        ev.vek = read("trustee-milan_ask_ark_asvk.pem");
        assert_eq!(ev.fails().0, "cert_chain");
        ev.vek = b"not a cert".to_vec();
        assert_eq!(ev.fails().0, "cert_chain");
    }

    #[test]
    fn policy_debug_bit() {
        let off = GuestPolicy::from_raw(0x3_0000);
        let on = GuestPolicy::from_raw(0x3_0000 | 1 << 19);
        assert_eq!(evaluate_policy(&off, false), Ok(()));
        assert_eq!(evaluate_policy(&on, true), Ok(()));
        assert_eq!(
            evaluate_policy(&on, false),
            Err(PolicyError::Debug { policy: 0xb_0000 })
        );
    }

    /// key_kind and tcb sit behind the signature, so real vectors cannot reach them with
    /// a mismatch; the pure helpers are tested on the real certificates instead.
    #[test]
    fn key_kind_mismatch() {
        let vcek = VekInfo::from_der(&read("trustee-test-vcek.der")).unwrap();
        let vlek = VekInfo::from_der(&read("trustee-test-vlek.der")).unwrap();
        assert_eq!(check_key_kind(SigningKey::Vcek, &vcek).unwrap(), SigningKey::Vcek);
        assert_eq!(check_key_kind(SigningKey::Vlek, &vlek).unwrap(), SigningKey::Vlek);
        for (k, c) in [
            (SigningKey::Vlek, &vcek),
            (SigningKey::Vcek, &vlek),
            (SigningKey::None, &vcek),
            (SigningKey::Reserved(3), &vlek),
        ] {
            let e = check_key_kind(k, c).unwrap_err();
            assert_eq!(e.check(), "key_kind");
        }
        let mut odd = vcek.clone();
        odd.cn = "SEV-Milan".into();
        assert!(matches!(
            check_key_kind(SigningKey::Vcek, &odd),
            Err(SnpError::UnknownVekKind(_))
        ));
    }

    #[test]
    fn tcb_mismatches() {
        let report = SnpReport::parse(&read("trustee-test-report.bin")).unwrap();
        let vek = |f: &str| VekInfo::from_der(&read(f)).unwrap();
        let m = Generation::Milan;
        assert!(check_tcb(&report, &vek("trustee-test-vcek.der"), m, SigningKey::Vcek).is_ok());
        // invalid-legacy: snpSPL 10 (report 8); invalid-new: blSPL 0 (report 3).
        let e = check_tcb(
            &report,
            &vek("trustee-test-vcek-invalid-legacy.der"),
            m,
            SigningKey::Vcek,
        )
        .unwrap_err();
        assert!(matches!(e, SnpError::TcbMismatch { what: "snpSPL", .. }), "{e}");
        let e = check_tcb(
            &report,
            &vek("trustee-test-vcek-invalid-new.der"),
            m,
            SigningKey::Vcek,
        )
        .unwrap_err();
        assert!(matches!(e, SnpError::TcbMismatch { what: "blSPL", .. }), "{e}");
        assert_eq!(e.check(), "tcb");
        // The "new" hwID encoding (OCTET STRING inside the extension) is read too.
        let hw = vek("trustee-test-vcek-invalid-new.der").hwid().unwrap();
        assert_eq!(hw[..3], [0, 1, 2]);
        // chip_id differing from hwID.
        let mut r2 = report.clone();
        r2.chip_id[5] ^= 1;
        let e = check_tcb(&r2, &vek("trustee-test-vcek.der"), m, SigningKey::Vcek).unwrap_err();
        assert!(matches!(e, SnpError::TcbMismatch { what: "hwID", .. }), "{e}");
        // Under the Genoa chain the productName "Milan-B0" does not fit.
        let e = check_tcb(
            &report,
            &vek("trustee-test-vcek.der"),
            Generation::Genoa,
            SigningKey::Vcek,
        )
        .unwrap_err();
        assert!(matches!(e, SnpError::TcbMismatch { what: "product", .. }), "{e}");
        // A v3 report whose CPUID says Milan cannot pass under another generation.
        let vr = SnpReport::parse(&read("trustee-test-vlek-report.bin")).unwrap();
        let e = check_tcb(
            &vr,
            &vek("trustee-test-vlek.der"),
            Generation::Turin,
            SigningKey::Vlek,
        )
        .unwrap_err();
        assert!(matches!(e, SnpError::TcbMismatch { what: "product", .. }), "{e}");
        assert!(check_tcb(&vr, &vek("trustee-test-vlek.der"), m, SigningKey::Vlek).is_ok());
    }

    #[test]
    fn der_helpers() {
        assert_eq!(der_u8(&[2, 1, 0x73]), Some(0x73));
        assert_eq!(der_u8(&[2, 2, 0, 0xd9]), Some(0xd9));
        assert_eq!(der_u8(&[2, 2, 0, 0x09]), None);
        assert_eq!(der_u8(&[2, 1, 0x80]), None);
        assert_eq!(der_u8(&[2, 2, 1, 0]), None);
        assert_eq!(der_ia5(b"\x16\x05Milan").as_deref(), Some("Milan"));
        assert_eq!(der_ia5(b"\x16\x06Milan"), None);
    }

    #[test]
    fn builtin_roots() {
        let v = v();
        let gens: Vec<Generation> = v.arks().map(|(g, _)| g).collect();
        assert_eq!(gens, [Generation::Milan, Generation::Genoa, Generation::Turin]);
        // The Milan ARK shipped in testdata is the built-in one.
        let t = split_certs(&read("../snp-milan-ark.pem")).unwrap();
        assert_eq!(v.arks().next().unwrap().1, t[0].as_slice());
    }
}
