//! `custody verify tpm|snp|nvgpu|tdx|azure-cvm|gcp-vtpm`.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use custody_verifier::{FailedCheck, Outcome, Report, UnixTime};
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub enum VerifyCmd {
    /// A TPM 2.0 quote as `tpm2_quote -m/-s/-o` writes it.
    Tpm(TpmArgs),
    /// An AMD SEV-SNP attestation report with its VCEK or VLEK.
    Snp(SnpArgs),
    /// An NVIDIA confidential-GPU SPDM measurement report with its certificate chain.
    Nvgpu(NvgpuArgs),
    /// An Intel TDX quote (v4 or v5) with its collateral as Intel PCS serves it.
    Tdx(TdxArgs),
    /// An Azure confidential VM on SEV-SNP: the paravisor's HCL report and the vTPM quote.
    AzureCvm(AzureArgs),
    /// A Google Cloud VM's vTPM quote under the AK certificate Google issued to it.
    GcpVtpm(GcpArgs),
}

#[derive(Debug, Args)]
pub struct GcpArgs {
    /// The AK certificate (DER or PEM; vTPM NV index 0x01C10000, or the GCE API).
    #[arg(long)]
    ak_cert: PathBuf,
    /// The AK (PEM/DER SPKI) the caller expects; must be the certificate's key.
    #[arg(long)]
    ak: Option<PathBuf>,
    #[command(flatten)]
    q: QuoteFiles,
    /// The TCG event log, replayed against the quoted PCRs.
    #[arg(long)]
    eventlog: Option<PathBuf>,
    /// Roots to trust instead of Google's built-in ones (PEM or DER).
    #[arg(long)]
    root: Option<PathBuf>,
    /// More intermediates (PEM or DER), e.g. one Google issued after this release.
    #[arg(long)]
    intermediates: Option<PathBuf>,
    /// Appraisal time (RFC 3339); default now.
    #[arg(long)]
    at: Option<String>,
}

#[derive(Debug, Args)]
pub struct AzureArgs {
    /// The HCL report (vTPM NV index 0x01400001, `tpm2_nvread 0x01400001`).
    #[arg(long)]
    hcl_report: PathBuf,
    /// SEV-SNP: the VCEK (DER or PEM), as Azure's IMDS or AMD KDS serves it.
    #[arg(long, required_unless_present = "td_quote", conflicts_with = "td_quote")]
    vcek: Option<PathBuf>,
    /// ASK/ARK (PEM) to use instead of the built-in ones.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// TDX: the TD quote of the HCL's TDREPORT (from Azure's quoting service).
    #[arg(long, requires = "collateral")]
    td_quote: Option<PathBuf>,
    /// TDX: the Intel PCS collateral directory, as for `verify tdx`.
    #[arg(long, requires = "td_quote")]
    collateral: Option<PathBuf>,
    #[command(flatten)]
    q: QuoteFiles,
    /// The AK (PEM/DER SPKI) the caller expects; must be the runtime data's HCLAkPub.
    #[arg(long)]
    ak: Option<PathBuf>,
    /// Also require the nonce in the runtime data's user-data (check `user_data`).
    #[arg(long)]
    require_user_data: bool,
    #[command(flatten)]
    crl: CrlArgs,
    /// Appraisal time (RFC 3339); default now.
    #[arg(long)]
    at: Option<String>,
}

#[derive(Debug, Args)]
pub struct TdxArgs {
    /// The quote (binary).
    #[arg(long)]
    quote: PathBuf,
    /// The collateral directory: tcb_info.pcs.json, tcb_info_issuer_chain.pem,
    /// qe_identity.pcs.json, qe_identity_issuer_chain.pem, pck_crl.der, root_ca_crl.der.
    #[arg(long)]
    collateral: PathBuf,
    /// Expected REPORT_DATA, 64 bytes of hex.
    #[arg(long)]
    report_data: Option<String>,
    /// Fail (check `tcb`) unless the TCB status is UpToDate.
    #[arg(long)]
    require_up_to_date: bool,
    /// The Intel SGX Root CA to pin instead of the built-in one (DER or PEM).
    #[arg(long)]
    root: Option<PathBuf>,
    /// Appraisal time (RFC 3339); default now.
    #[arg(long)]
    at: Option<String>,
}

/// A quote as `tpm2_quote -m/-s/-o` writes it, and the nonce it must carry.
#[derive(Debug, Args)]
pub struct QuoteFiles {
    /// TPMS_ATTEST (`tpm2_quote -m`).
    #[arg(long)]
    quote: PathBuf,
    /// TPMT_SIGNATURE (`tpm2_quote -s`); azure-cvm also takes the raw RSA signature.
    #[arg(long)]
    sig: PathBuf,
    /// PCR values: `tpm2_quote -o`, or text lines `INDEX HEX` (one bank) as cloud tools print.
    #[arg(long)]
    pcrs: PathBuf,
    /// Expected extraData, hex (exact bytes; may be empty).
    #[arg(long)]
    nonce: String,
}

/// The quote's files read: (quote, signature, PCRs, nonce).
type Quote = (Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>);

impl QuoteFiles {
    fn read(&self) -> Result<Quote, Usage> {
        Ok((
            read(&self.quote, "quote")?,
            read(&self.sig, "signature")?,
            read(&self.pcrs, "PCR file")?,
            hex_arg(&self.nonce, "--nonce")?,
        ))
    }
}

#[derive(Debug, Args)]
pub struct TpmArgs {
    #[command(flatten)]
    q: QuoteFiles,
    /// Attestation key: PEM/DER SubjectPublicKeyInfo, or TPMT_PUBLIC / TPM2B_PUBLIC.
    #[arg(long)]
    ak: PathBuf,
    /// TCG PC Client measured-boot event log to replay against the quoted PCRs.
    #[arg(long)]
    eventlog: Option<PathBuf>,
    /// Appraisal time (RFC 3339); default now.
    #[arg(long)]
    at: Option<String>,
}

#[derive(Debug, Args)]
pub struct SnpArgs {
    /// The 0x4A0-byte report (.bin) or its hex (.hex/.txt).
    #[arg(long)]
    report: PathBuf,
    /// VCEK or VLEK certificate (DER or PEM).
    #[arg(long)]
    vcek: PathBuf,
    /// ASK/ASVK and ARK (PEM); the ARK must be one of the built-in AMD roots.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Expected report_data, hex: 32 bytes (binding; the rest must be zero) or 64 bytes.
    #[arg(long)]
    report_data: Option<String>,
    /// Accept guests launched with the debug policy bit set.
    #[arg(long)]
    allow_debug: bool,
    #[command(flatten)]
    crl: CrlArgs,
    /// Appraisal time (RFC 3339); default now.
    #[arg(long)]
    at: Option<String>,
}

#[derive(Debug, Args)]
pub struct NvgpuArgs {
    /// SPDM GET_MEASUREMENTS request||response, hex (.hex/.txt) or binary (.bin).
    #[arg(long)]
    report: PathBuf,
    /// Device certificate chain, PEM (leaf first).
    #[arg(long)]
    certs: PathBuf,
    /// Expected requester nonce, hex (32 bytes).
    #[arg(long)]
    nonce: String,
    /// Signed RIM (driver or VBIOS), repeatable.
    #[arg(long)]
    rim: Vec<PathBuf>,
    /// Pinned NVIDIA Device Identity root (PEM); default: the built-in one.
    #[arg(long)]
    root: Option<PathBuf>,
    /// Pinned NVIDIA RIM signing root (PEM); default: the built-in one.
    #[arg(long)]
    rim_root: Option<PathBuf>,
    /// Appraisal time (RFC 3339); default now.
    #[arg(long)]
    at: Option<String>,
}

/// Unusable input: exit 2.
#[derive(Debug)]
struct Usage(anyhow::Error);

pub fn run(cmd: VerifyCmd) -> ExitCode {
    let r = match cmd {
        VerifyCmd::Tpm(a) => tpm(a),
        VerifyCmd::Snp(a) => snp(a),
        VerifyCmd::Nvgpu(a) => nvgpu(a),
        VerifyCmd::Tdx(a) => tdx(a),
        VerifyCmd::AzureCvm(a) => azure(a),
        VerifyCmd::GcpVtpm(a) => gcp(a),
    };
    match r {
        Ok(code) => code,
        Err(Usage(e)) => {
            eprintln!("custody: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn read(p: &Path, what: &str) -> Result<Vec<u8>, Usage> {
    std::fs::read(p)
        .with_context(|| format!("cannot read {what} {}", p.display()))
        .map_err(Usage)
}

/// Binary evidence that may also come as a hex text file (`.hex`, `.txt`, or all hex digits).
fn read_maybe_hex(p: &Path, what: &str) -> Result<Vec<u8>, Usage> {
    let raw = read(p, what)?;
    let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
    let looks_hex = !raw.is_empty()
        && raw
            .iter()
            .all(|b| b.is_ascii_hexdigit() || b.is_ascii_whitespace());
    if ext == "hex" || ext == "txt" || (ext != "bin" && looks_hex) {
        let s: String = raw
            .iter()
            .filter(|b| !b.is_ascii_whitespace())
            .map(|&b| char::from(b))
            .collect();
        return hex::decode(&s)
            .with_context(|| format!("{what} {} is not valid hex", p.display()))
            .map_err(Usage);
    }
    Ok(raw)
}

fn hex_arg(s: &str, what: &str) -> Result<Vec<u8>, Usage> {
    hex::decode(s.trim())
        .with_context(|| format!("{what} is not valid hex"))
        .map_err(Usage)
}

fn at_arg(at: Option<&str>) -> Result<UnixTime, Usage> {
    match at {
        Some(s) => {
            let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                .with_context(|| format!("--at {s:?} is not an RFC 3339 time"))
                .map_err(Usage)?;
            Ok(UnixTime(t.unix_timestamp()))
        }
        None => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .context("system clock is before 1970")
                .map_err(Usage)?;
            Ok(UnixTime(i64::try_from(now.as_secs()).unwrap_or(i64::MAX)))
        }
    }
}

/// Print the report and map the outcome to the exit code.
fn emit<C: Serialize, E: FailedCheck>(kind: &str, outcome: Outcome<C, E>) -> Result<ExitCode, Usage> {
    let (report, rejected) = Report::from_outcome(kind, outcome);
    let json = serde_json::to_string_pretty(&report)
        .context("encode report")
        .map_err(Usage)?;
    // A closed stdout (`custody verify ... | head -0`) must not panic; the exit code still
    // carries the verdict.
    let _ = writeln!(std::io::stdout().lock(), "{json}");
    match rejected {
        None => Ok(ExitCode::SUCCESS),
        Some(r) => {
            eprintln!("custody: {kind} evidence rejected: {r}");
            Ok(ExitCode::from(1))
        }
    }
}

/// The six files of an Intel PCS collateral directory, in `TdxCollateral::from_files`'s
/// order.
fn read_collateral(dir: &Path) -> Result<[Vec<u8>; 6], Usage> {
    let c = |name: &str| read(&dir.join(name), name);
    let [a, b, d, e, f, g] = custody_verifier::tdx::COLLATERAL_FILES;
    Ok([c(a)?, c(b)?, c(d)?, c(e)?, c(f)?, c(g)?])
}

fn tdx(a: TdxArgs) -> Result<ExitCode, Usage> {
    use custody_verifier::tdx::{TdxCollateral, TdxEvidence, TdxVerifier};
    use custody_verifier::EvidenceVerifier;
    let quote = read(&a.quote, "quote")?;
    let collateral = read_collateral(&a.collateral)?;
    let report_data = match &a.report_data {
        Some(h) => {
            let b = hex_arg(h, "--report-data")?;
            if b.len() != 64 {
                return Err(Usage(anyhow::anyhow!("--report-data must be 64 bytes of hex")));
            }
            Some(b)
        }
        None => None,
    };
    let at = at_arg(a.at.as_deref())?;
    let verifier = match &a.root {
        Some(p) => TdxVerifier::with_root(&read(p, "root")?),
        None => TdxVerifier::new(),
    }
    .context("Intel SGX Root CA")
    .map_err(Usage)?;
    let mut outcome = verifier.verify(
        TdxEvidence {
            quote: &quote,
            collateral: TdxCollateral::from_files(&collateral),
            expected_report_data: report_data.as_deref(),
        },
        at,
    );
    // --require-up-to-date: any other status fails at `tcb`, after the checks that passed.
    if a.require_up_to_date {
        if let Ok(v) = &outcome {
            if v.claims.tcb_status != "UpToDate" {
                let mut log = custody_verifier::check::CheckLog::new();
                for c in v.checks.iter().filter(|c| c.name != "tcb") {
                    log.pass(c.name, c.detail.clone());
                }
                outcome = Err(log.reject(custody_verifier::tdx::TdxError::Tcb(format!(
                    "status {} (advisories {:?}); --require-up-to-date",
                    v.claims.tcb_status, v.claims.advisory_ids
                ))));
            }
        }
    }
    emit(TdxVerifier::KIND, outcome)
}

/// AMD KDS CRLs for the SNP chain (`verify snp`, `verify azure-cvm`).
#[derive(Debug, Args)]
pub struct CrlArgs {
    /// An AMD KDS CRL (DER or PEM; repeatable, one per ARK): the chain's revocation is
    /// `good`, `revoked` (exit 1, check `revocation`), `stale` or, without one, `unchecked`.
    #[arg(long = "crl")]
    crls: Vec<PathBuf>,
    /// Days past a CRL's nextUpdate it still counts as fresh (default 0).
    #[arg(long, default_value_t = 0)]
    crl_grace_days: u32,
}

impl CrlArgs {
    /// The SNP verifier with the built-in AMD roots and these CRLs.
    fn snp_verifier(&self) -> Result<custody_verifier::snp::SnpVerifier, Usage> {
        let mut crls = Vec::new();
        for p in &self.crls {
            let bytes = read(p, "CRL")?;
            crls.push(
                custody_verifier::crl::Crl::parse(&bytes)
                    .with_context(|| format!("--crl {}", p.display()))
                    .map_err(Usage)?,
            );
        }
        Ok(custody_verifier::snp::SnpVerifier::builtin()
            .context("built-in AMD roots")
            .map_err(Usage)?
            .with_crls(crls, i64::from(self.crl_grace_days) * 86_400))
    }
}

fn azure(a: AzureArgs) -> Result<ExitCode, Usage> {
    use custody_verifier::azure::{AzureEvidence, AzureHardware, AzureVerifier};
    use custody_verifier::tdx::{TdxCollateral, TdxVerifier};
    use custody_verifier::tpm::TpmVerifier;
    use custody_verifier::EvidenceVerifier;
    let hcl_report = read(&a.hcl_report, "HCL report")?;
    let vcek = a.vcek.as_deref().map(|p| read(p, "VCEK")).transpose()?;
    let ca = a.ca.as_deref().map(|p| read(p, "CA chain")).transpose()?;
    let td_quote = a.td_quote.as_deref().map(|p| read(p, "TD quote")).transpose()?;
    let collateral = a.collateral.as_deref().map(read_collateral).transpose()?;
    let (quote, signature, pcrs, nonce) = a.q.read()?;
    let ak = a.ak.as_deref().map(|p| read(p, "attestation key")).transpose()?;
    let at = at_arg(a.at.as_deref())?;
    let verifier = AzureVerifier {
        snp: a.crl.snp_verifier()?,
        tdx: TdxVerifier::new().context("Intel SGX Root CA").map_err(Usage)?,
        tpm: TpmVerifier::new(),
    };
    // clap guarantees one of --vcek and --td-quote, and --collateral with the latter.
    let hardware = match (&vcek, &td_quote, &collateral) {
        (Some(vcek), _, _) => AzureHardware::Snp {
            vcek,
            ca_chain: ca.as_deref(),
        },
        (None, Some(quote), Some(collateral)) => AzureHardware::Tdx {
            quote,
            collateral: TdxCollateral::from_files(collateral),
        },
        _ => {
            return Err(Usage(anyhow::anyhow!(
                "give --vcek, or --td-quote with --collateral"
            )))
        }
    };
    let outcome = verifier.verify(
        AzureEvidence {
            hcl_report: &hcl_report,
            hardware,
            quote: &quote,
            signature: &signature,
            pcrs: &pcrs,
            nonce: &nonce,
            ak: ak.as_deref(),
            require_user_data: a.require_user_data,
        },
        at,
    );
    emit(AzureVerifier::KIND, outcome)
}

fn gcp(a: GcpArgs) -> Result<ExitCode, Usage> {
    use custody_verifier::gcp::{GcpEvidence, GcpVerifier};
    use custody_verifier::EvidenceVerifier;
    let ak_cert = read(&a.ak_cert, "AK certificate")?;
    let ak = a.ak.as_deref().map(|p| read(p, "attestation key")).transpose()?;
    let (quote, signature, pcrs, nonce) = a.q.read()?;
    let event_log = a.eventlog.as_deref().map(|p| read(p, "event log")).transpose()?;
    let intermediates = a
        .intermediates
        .as_deref()
        .map(|p| read(p, "intermediates"))
        .transpose()?;
    let at = at_arg(a.at.as_deref())?;
    let verifier = match &a.root {
        Some(p) => GcpVerifier::with_roots(&read(p, "root")?, intermediates.as_deref()),
        None => match &intermediates {
            Some(i) => GcpVerifier::builtin().and_then(|v| v.with_intermediates(i)),
            None => GcpVerifier::builtin(),
        },
    }
    .context("Google roots")
    .map_err(Usage)?;
    let outcome = verifier.verify(
        GcpEvidence {
            ak_cert: &ak_cert,
            ak: ak.as_deref(),
            quote: &quote,
            signature: &signature,
            pcrs: &pcrs,
            nonce: &nonce,
            event_log: event_log.as_deref(),
        },
        at,
    );
    emit(GcpVerifier::KIND, outcome)
}

fn tpm(a: TpmArgs) -> Result<ExitCode, Usage> {
    use custody_verifier::tpm::{TpmEvidence, TpmVerifier};
    use custody_verifier::EvidenceVerifier;
    let (quote, signature, pcrs, nonce) = a.q.read()?;
    let pcrs = custody_verifier::tpm::pcr_file_or_text(&pcrs)
        .context("--pcrs")
        .map_err(Usage)?;
    let ak = read(&a.ak, "attestation key")?;
    let event_log = a.eventlog.as_deref().map(|p| read(p, "event log")).transpose()?;
    let at = at_arg(a.at.as_deref())?;
    let evidence = TpmEvidence {
        quote: &quote,
        signature: &signature,
        ak: &ak,
        pcrs: &pcrs,
        nonce: &nonce,
        event_log: event_log.as_deref(),
    };
    emit(TpmVerifier::KIND, TpmVerifier::new().verify(evidence, at))
}

fn snp(a: SnpArgs) -> Result<ExitCode, Usage> {
    use custody_verifier::snp::{ExpectedReportData, SnpEvidence, SnpVerifier};
    use custody_verifier::EvidenceVerifier;
    let at = at_arg(a.at.as_deref())?;
    let report = read_maybe_hex(&a.report, "report")?;
    let vek = read(&a.vcek, "VCEK/VLEK certificate")?;
    let ca = a.ca.as_deref().map(|p| read(p, "CA chain")).transpose()?;
    let expected_report_data = match a.report_data.as_deref() {
        Some(h) => Some(
            ExpectedReportData::from_slice(&hex_arg(h, "--report-data")?)
                .context("--report-data")
                .map_err(Usage)?,
        ),
        None => None,
    };
    let verifier = a.crl.snp_verifier()?;
    let outcome = verifier.verify(
        SnpEvidence {
            report: &report,
            vek: &vek,
            ca_chain: ca.as_deref(),
            expected_report_data,
            allow_debug: a.allow_debug,
        },
        at,
    );
    emit(SnpVerifier::KIND, outcome)
}

fn nvgpu(a: NvgpuArgs) -> Result<ExitCode, Usage> {
    use custody_verifier::nvgpu::{NvgpuEvidence, NvgpuVerifier, DEVICE_IDENTITY_ROOT_PEM, RIM_ROOT_PEM};
    use custody_verifier::x509::TrustAnchor;
    use custody_verifier::EvidenceVerifier;

    let report = read_maybe_hex(&a.report, "report")?;
    let certs = read(&a.certs, "certificate chain")?;
    let nonce = hex_arg(&a.nonce, "--nonce")?;
    if nonce.len() != 32 {
        return Err(Usage(anyhow::anyhow!(
            "--nonce must be exactly 32 bytes (64 hex digits), got {}",
            nonce.len()
        )));
    }
    let rims = a
        .rim
        .iter()
        .map(|p| read(p, "RIM"))
        .collect::<Result<Vec<_>, _>>()?;
    let anchors = |path: Option<&PathBuf>, builtin: &[u8], what: &str| -> Result<Vec<TrustAnchor>, Usage> {
        let bytes = match path {
            Some(p) => read(p, what)?,
            None => builtin.to_vec(),
        };
        TrustAnchor::from_pem_or_der(&bytes)
            .with_context(|| format!("{what} is not a usable certificate"))
            .map_err(Usage)
    };
    let device_roots = anchors(a.root.as_ref(), DEVICE_IDENTITY_ROOT_PEM, "--root")?;
    let rim_roots = anchors(a.rim_root.as_ref(), RIM_ROOT_PEM, "--rim-root")?;
    let at = at_arg(a.at.as_deref())?;

    let verifier = NvgpuVerifier::with_roots(device_roots, rim_roots);
    let rim_refs: Vec<&[u8]> = rims.iter().map(Vec::as_slice).collect();
    let outcome = verifier.verify(
        NvgpuEvidence {
            report: &report,
            cert_chain: &certs,
            nonce: &nonce,
            rims: &rim_refs,
            library: None,
        },
        at,
    );
    emit(NvgpuVerifier::KIND, outcome)
}
