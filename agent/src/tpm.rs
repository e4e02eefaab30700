//! The TPM 2.0 collector: the only place in the agent that talks to a TPM (through
//! tss-esapi and the system tpm2-tss; no unsafe code here).
//!
//! On first use it creates the RSA-2048 endorsement key (EK) from the TCG default template,
//! reads the EK certificate from NV (index 0x01C00002) and creates a restricted RSASSA-SHA256
//! attestation key (AK) under the EK. The EK is flushed once the AK is loaded, so the
//! collector holds one transient object slot (swtpm and a TPM without a resource manager
//! have only three). The AK's blob stays in memory: after [`TpmCollector::release`] or a
//! lost connection the EK is re-created (the same key: it derives from the endorsement
//! seed) and the same AK is loaded again, so enrollment sees one AK for the whole process.
//!
//! With [`TpmCollector::with_ak_file`] (the agent uses `state_dir/ak.tpm`) the AK also
//! outlives the process: the blob is written there when the AK is created and loaded from
//! there on the next start. The private part is wrapped by the TPM under the EK, so the
//! file is useless on any other TPM. When this TPM refuses to load it (the TPM was cleared,
//! or the file came from another machine) a new AK is created and replaces the file; a
//! file that is not an AK blob at all is an error naming the file, never silently replaced.
//!
//! With [`TpmCollector::with_persistent_ak`] the AK is a key already persisted in the TPM
//! instead (an Azure confidential VM's paravisor key at 0x81000003, which its HCL report
//! names): nothing is created or stored, and enrollment activates the credential for it.
//!
//! `collect` quotes the configured PCRs with the round's binding as qualifyingData, reads
//! the PCR values, and accepts them only if they hash to the quote's pcrDigest (a PCR
//! extended between the quote and the read is caught and the pair retried once).
//!
//! Availability: a TCTI that cannot be opened (no `/dev/tpmrm0`, nothing listening on the
//! swtpm port) is [`CollectError::NotAvailable`]; any failure after the TPM was opened is
//! [`CollectError::Failed`] with the TSS response code.

use crate::collector::{CollectError, Collector, Evidence};
use custody_formats::alg::HashAlg;
use custody_formats::binding::Binding;
use custody_formats::bundle::TpmEvidence;
use custody_formats::tpm::{self as tpmfmt, PcrFile, PcrSelection};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Mutex, MutexGuard};
use thiserror::Error;
use tss_esapi::abstraction::{ak, ek, AsymmetricAlgorithmSelection, DefaultKey};
use tss_esapi::constants::response_code::Tss2ResponseCode;
use tss_esapi::constants::SessionType;
use tss_esapi::handles::{AuthHandle, KeyHandle, SessionHandle};
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, SignatureSchemeAlgorithm};
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::interface_types::session_handles::{AuthSession, PolicySession};
use tss_esapi::structures::{
    Data, EncryptedSecret, HashScheme, IdObject, PcrSelectionList, PcrSelectionListBuilder, PcrSlot, Private,
    Public, SignatureScheme, SymmetricDefinition,
};
use tss_esapi::traits::{Marshall, UnMarshall};
use tss_esapi::{Context, TctiNameConf};

const KIND: &str = "tpm";

/// The production TCTI: the kernel's resource manager.
pub const DEFAULT_TCTI: &str = "device:/dev/tpmrm0";
/// Where Linux exposes the firmware's measured-boot log (securityfs, root only).
pub const DEFAULT_EVENT_LOG: &str = "/sys/kernel/security/tpm0/binary_bios_measurements";
/// Largest event log carried; a longer one is refused, never cut (bundles are at most 16 MiB).
pub const MAX_EVENT_LOG: usize = 4 * 1024 * 1024;
/// PC Client TPMs have 24 PCRs.
const PCR_COUNT: u32 = 24;
/// Quote + read attempts before PCRs that keep changing fail the round.
const QUOTE_ATTEMPTS: usize = 2;

/// The default PCR selection, SHA-256 bank:
/// - 0-7: the static root of trust (firmware code and configuration, option ROMs, boot
///   manager code and data, GPT, Secure Boot policy in 7): what the event log replays;
/// - 14: shim's MOK lists and SBAT (the distribution's Secure Boot trust).
///
/// Not selected by default: 8-9 (GRUB commands and files: change with every kernel or
/// command-line update), 10 (IMA: changes continuously at run time), 11-13 (systemd-stub
/// and others: distribution specific), 16 (debug, resettable) and 23 (application,
/// resettable). A site that appraises them adds them in [`TpmConfig::pcrs`].
pub fn default_pcrs() -> Vec<PcrSelection> {
    vec![PcrSelection {
        bank: HashAlg::Sha256,
        pcrs: vec![0, 1, 2, 3, 4, 5, 6, 7, 14],
    }]
}

/// Where the TPM is and what to quote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpmConfig {
    /// tpm2-tss TCTI string: `device:/dev/tpmrm0`, `swtpm:host=127.0.0.1,port=2321`, ...
    pub tcti: String,
    /// Banks and PCRs to quote; each bank at most once, PCRs 0-23.
    pub pcrs: Vec<PcrSelection>,
    /// Measured-boot event log, carried when the file exists.
    pub event_log: Option<PathBuf>,
}

impl Default for TpmConfig {
    fn default() -> Self {
        Self {
            tcti: DEFAULT_TCTI.into(),
            pcrs: default_pcrs(),
            event_log: Some(PathBuf::from(DEFAULT_EVENT_LOG)),
        }
    }
}

/// A configuration the collector refuses before touching the TPM.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TpmConfigError {
    #[error("TCTI `{tcti}` is not a valid tpm2-tss TCTI string: {reason}")]
    Tcti { tcti: String, reason: String },
    #[error("PCR selection: {0}")]
    Selection(String),
    #[error("PCR selection is empty")]
    EmptySelection,
    #[error("PCR selection names the {0} bank twice")]
    DuplicateBank(&'static str),
    #[error("PCR selection for {bank}: PCR {pcr} is not one of 0-23 or is repeated or unordered")]
    BadPcr { bank: &'static str, pcr: u32 },
}

/// What enrollment needs: the EK certificate and the EK and AK public areas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpmKeys {
    /// EK certificate (DER) exactly as stored in NV index 0x01C00002 (some TPMs pad it
    /// with zero bytes after the DER); `None` when the index is not defined.
    pub ek_certificate: Option<Vec<u8>>,
    /// EK TPMT_PUBLIC, marshalled.
    pub ek_public: Vec<u8>,
    /// AK TPMT_PUBLIC, marshalled (what [`TpmEvidence::ak_public`] carries).
    pub ak_public: Vec<u8>,
}

/// The AK as created: enough to load it again under the re-created EK.
struct AkBlob {
    private: Private,
    public: Public,
}

/// Where the AK comes from each time the TPM is opened.
enum AkSource {
    /// Created by this collector: loaded again from its blob.
    Blob(AkBlob),
    /// A key persisted in the TPM at this handle.
    Persistent(u32),
}

/// An open TPM connection with the AK loaded.
struct Open {
    ctx: Context,
    ak: KeyHandle,
}

#[derive(Default)]
struct State {
    keys: Option<(TpmKeys, AkSource)>,
    open: Option<Open>,
}

/// The TPM 2.0 evidence collector.
pub struct TpmCollector {
    config: TpmConfig,
    tcti: TctiNameConf,
    selection: PcrSelectionList,
    /// Where the AK blob persists between starts; None keeps it in memory only.
    ak_file: Option<PathBuf>,
    /// A persistent key to use as the AK instead of creating one.
    persistent_ak: Option<u32>,
    state: Mutex<State>,
}

impl std::fmt::Debug for TpmCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TpmCollector")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl TpmCollector {
    /// Validate the configuration; the TPM is opened on first use.
    pub fn new(config: TpmConfig) -> Result<Self, TpmConfigError> {
        let tcti = TctiNameConf::from_str(&config.tcti).map_err(|e| TpmConfigError::Tcti {
            tcti: config.tcti.clone(),
            reason: e.to_string(),
        })?;
        let selection = selection_list(&config.pcrs)?;
        Ok(Self {
            config,
            tcti,
            selection,
            ak_file: None,
            persistent_ak: None,
            state: Mutex::new(State::default()),
        })
    }

    /// Keep the AK in `path` across starts (see the module documentation).
    #[must_use]
    pub fn with_ak_file(mut self, path: PathBuf) -> Self {
        self.ak_file = Some(path);
        self
    }

    /// Use the key persisted at `handle` (0x81000000-0x81FFFFFF) as the AK.
    #[must_use]
    pub fn with_persistent_ak(mut self, handle: u32) -> Self {
        self.persistent_ak = Some(handle);
        self
    }

    /// The contents of NV index `index`, read with owner authorization (empty); `None`
    /// when the index is not defined.
    pub fn read_nv(&self, index: u32) -> Result<Option<Vec<u8>>, CollectError> {
        let nv = tss_esapi::handles::NvIndexTpmHandle::new(index)
            .map_err(|e| failed(format!("NV index {index:#010x}: {}", describe(&e))))?;
        let mut st = self.lock();
        self.ensure_open(&mut st)?;
        let Some(open) = st.open.as_mut() else {
            return Err(failed("TPM connection missing after opening it".into()));
        };
        let r = match open.ctx.execute_with_session(Some(AuthSession::Password), |c| {
            tss_esapi::abstraction::nv::read_full(
                c,
                tss_esapi::interface_types::resource_handles::NvAuth::Owner,
                nv,
            )
        }) {
            Ok(b) => Ok(Some(b.to_vec())),
            Err(tss_esapi::Error::Tss2Error(rc))
                if rc.kind() == Some(tss_esapi::constants::response_code::Tss2ResponseCodeKind::Handle) =>
            {
                Ok(None)
            }
            Err(e) => Err(failed(format!("read NV index {index:#010x}: {}", describe(&e)))),
        };
        if r.is_err() || self.single_client() {
            st.open = None;
        }
        r
    }

    pub fn config(&self) -> &TpmConfig {
        &self.config
    }

    /// TCTIs to simulators that accept one client at a time (the kernel resource manager
    /// `/dev/tpmrm0` multiplexes, so a real node keeps its connection).
    fn single_client(&self) -> bool {
        let t = self.config.tcti.trim_start();
        t.starts_with("swtpm") || t.starts_with("mssim")
    }

    /// EK certificate and EK/AK public areas, creating the keys on first use.
    pub fn keys(&self) -> Result<TpmKeys, CollectError> {
        let mut st = self.lock();
        self.ensure_open(&mut st)?;
        match &st.keys {
            Some((keys, _)) => Ok(keys.clone()),
            None => Err(failed("keys missing after opening the TPM".into())),
        }
    }

    /// The EK certificate (DER, as stored in NV), `None` when the TPM has none.
    pub fn ek_certificate(&self) -> Result<Option<Vec<u8>>, CollectError> {
        self.keys().map(|k| k.ek_certificate)
    }

    /// The EK as a marshalled TPMT_PUBLIC.
    pub fn ek_public(&self) -> Result<Vec<u8>, CollectError> {
        self.keys().map(|k| k.ek_public)
    }

    /// The AK as a marshalled TPMT_PUBLIC.
    pub fn ak_public(&self) -> Result<Vec<u8>, CollectError> {
        self.keys().map(|k| k.ak_public)
    }

    /// TPM2_ActivateCredential with the AK as the credentialed object and the EK as the
    /// decryption key: the secret the verifier protected (TPM2_MakeCredential) to this TPM's
    /// EK for the AK's Name. `id_object` and `encrypted_secret` are marshalled TPM2B_ID_OBJECT
    /// and TPM2B_ENCRYPTED_SECRET (size first). A credential made for another EK or another
    /// Name fails the TPM's integrity check and comes back as [`CollectError::Failed`].
    pub fn activate_credential(
        &self,
        id_object: &[u8],
        encrypted_secret: &[u8],
    ) -> Result<Vec<u8>, CollectError> {
        let id = tpm2b_body(id_object, "TPM2B_ID_OBJECT")?;
        let secret = tpm2b_body(encrypted_secret, "TPM2B_ENCRYPTED_SECRET")?;
        let id = tpm(
            "credential blob (TPM2B_ID_OBJECT)",
            IdObject::try_from(id.to_vec()),
        )?;
        let secret = tpm(
            "encrypted secret (TPM2B_ENCRYPTED_SECRET)",
            EncryptedSecret::try_from(secret.to_vec()),
        )?;
        let mut st = self.lock();
        self.ensure_open(&mut st)?;
        let Some(open) = st.open.as_mut() else {
            return Err(failed("TPM connection missing after opening it".into()));
        };
        let r = activate(open, id, secret);
        if r.is_err() || self.single_client() {
            // As after a round: start afresh next time (same AK, from its blob), and let
            // other clients reach a single-client simulator in between.
            st.open = None;
        }
        r
    }

    /// Close the TPM connection (flushing the AK), keeping the AK blob: the next use
    /// reopens the TPM and loads the same AK. swtpm and `/dev/tpm0` serve one client at a
    /// time; this lets another one (tpm2-tools, a test) in between rounds.
    pub fn release(&self) {
        self.lock().open = None;
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves at worst a stale connection, which the
        // next failure drops; the AK blob is never half-written.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn ensure_open(&self, st: &mut State) -> Result<(), CollectError> {
        if st.open.is_some() {
            return Ok(());
        }
        let mut ctx = Context::new(self.tcti.clone()).map_err(|e| {
            let reason = format!("cannot open TCTI `{}`: {}", self.config.tcti, describe(&e));
            // A TPM this collector has used before is not "absent" when it stops
            // answering: that is a failure, and the round must say so.
            if st.keys.is_some() {
                failed(reason)
            } else {
                CollectError::NotAvailable { kind: KIND, reason }
            }
        })?;
        let ek = tpm("create the EK (TPM2_CreatePrimary)", ek_create(&mut ctx))?;
        let loaded = match (&st.keys, self.persistent_ak) {
            (Some((_, AkSource::Blob(blob))), _) => tpm(
                "load the AK (TPM2_Load)",
                ak::load_ak(&mut ctx, ek, None, blob.private.clone(), blob.public.clone()),
            )
            .map(|h| (h, None)),
            (Some((_, AkSource::Persistent(h))), _) => persistent_handle(&mut ctx, *h).map(|k| (k, None)),
            (None, Some(h)) => {
                persistent_keys(&mut ctx, ek, h).map(|(k, keys)| (k, Some((keys, AkSource::Persistent(h)))))
            }
            (None, None) => self
                .first_keys(&mut ctx, ek)
                .map(|(h, (k, b))| (h, Some((k, AkSource::Blob(b))))),
        };
        // Flush the EK whatever happened: it is re-created from the seed when needed.
        let flushed = tpm("flush the EK (TPM2_FlushContext)", ctx.flush_context(ek.into()));
        let (ak, new_keys) = loaded?;
        flushed?;
        if let Some(k) = new_keys {
            st.keys = Some(k);
        }
        st.open = Some(Open { ctx, ak });
        Ok(())
    }

    /// The keys on first use in this process: the stored AK when there is one this TPM
    /// loads, else a new AK (stored when an AK file is configured).
    fn first_keys(
        &self,
        ctx: &mut Context,
        ek: KeyHandle,
    ) -> Result<(KeyHandle, (TpmKeys, AkBlob)), CollectError> {
        let Some(path) = &self.ak_file else {
            return create_keys(ctx, ek, None);
        };
        if let Some(stored) = read_ak_file(path)? {
            match tpm(
                "load the stored AK (TPM2_Load)",
                ak::load_ak(ctx, ek, None, stored.private.clone(), stored.public.clone()),
            ) {
                Ok(handle) => {
                    tracing::info!(path = %path.display(), "loaded the stored AK");
                    return create_keys(ctx, ek, Some((handle, stored)));
                }
                Err(e) => tracing::warn!(
                    path = %path.display(),
                    error = %e,
                    "this TPM does not load the stored AK (cleared, or another TPM's); creating a new one"
                ),
            }
        }
        let (handle, (keys, blob)) = create_keys(ctx, ek, None)?;
        if let Err(e) = write_ak_file(path, &keys.ak_public, &blob.private) {
            // The new AK is never used unsaved: the next start would present another AK.
            let _ = ctx.flush_context(handle.into());
            return Err(e);
        }
        tracing::info!(path = %path.display(), "created a new AK and stored it");
        Ok((handle, (keys, blob)))
    }

    fn collect_locked(&self, st: &mut State, binding: &Binding) -> Result<TpmEvidence, CollectError> {
        self.ensure_open(st)?;
        let ak_public = match &st.keys {
            Some((k, _)) => k.ak_public.clone(),
            None => return Err(failed("keys missing after opening the TPM".into())),
        };
        let Some(open) = st.open.as_mut() else {
            return Err(failed("TPM connection missing after opening it".into()));
        };
        // Read before quoting, so an unreadable log fails the round before any TPM work.
        let event_log = self.read_event_log()?;
        for _ in 0..QUOTE_ATTEMPTS {
            let (quote, signature, attest) = quote(open, binding, &self.selection)?;
            // A TPM leaves unallocated banks (and PCRs it lacks) out of the quote instead of
            // failing: evidence must cover what was configured, or say why not.
            if !same_selection(&attest.pcr_select, &self.config.pcrs) {
                return Err(failed(format!(
                    "the TPM quoted {} when asked for {}: bank not allocated?",
                    selection_text(&attest.pcr_select),
                    selection_text(&self.config.pcrs)
                )));
            }
            let values = read_pcrs(&mut open.ctx, &self.selection)?;
            // pcrDigest is computed with the signing scheme's hash (SHA-256 here).
            let digest = tpmfmt::pcr_digest(HashAlg::Sha256, &attest.pcr_select, |b, p| {
                values.get(&(b, p)).cloned()
            })
            .ok_or_else(|| failed("the TPM quoted a PCR it did not return in TPM2_PCR_Read".into()))?;
            if digest != attest.pcr_digest {
                // A PCR was extended between the quote and the read: quote again.
                continue;
            }
            let mut file_values = Vec::new();
            for s in &attest.pcr_select {
                for &p in &s.pcrs {
                    if let Some(v) = values.get(&(s.bank, p)) {
                        file_values.push((s.bank, p, v.clone()));
                    }
                }
            }
            let pcrs = PcrFile {
                selection: attest.pcr_select.clone(),
                values: file_values,
            }
            .to_bytes()
            .map_err(|e| failed(format!("encode the PCR file: {e}")))?;
            return Ok(TpmEvidence {
                quote,
                signature,
                pcrs,
                ak_public,
                event_log,
            });
        }
        Err(failed(format!(
            "PCR values changed between TPM2_Quote and TPM2_PCR_Read {QUOTE_ATTEMPTS} times"
        )))
    }

    fn read_event_log(&self) -> Result<Option<Vec<u8>>, CollectError> {
        let Some(path) = &self.config.event_log else {
            return Ok(None);
        };
        match std::fs::read(path) {
            Ok(b) if b.len() > MAX_EVENT_LOG => Err(failed(format!(
                "event log {} is {} bytes, more than {MAX_EVENT_LOG}",
                path.display(),
                b.len()
            ))),
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(failed(format!("read event log {}: {e}", path.display()))),
        }
    }
}

impl Collector for TpmCollector {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn collect(&self, binding: &Binding) -> Result<Evidence, CollectError> {
        let mut st = self.lock();
        let r = self.collect_locked(&mut st, binding);
        if matches!(r, Err(CollectError::Failed { .. })) || self.single_client() {
            // Failed: the connection may be broken or the AK gone, so start afresh next
            // round (the AK blob is kept: same AK). Single-client simulators (swtpm,
            // mssim) serve one connection at a time: let tools in between rounds.
            st.open = None;
        }
        r.map(Evidence::Tpm)
    }
}

fn failed(reason: String) -> CollectError {
    CollectError::Failed { kind: KIND, reason }
}

/// A TSS error after the TPM was opened, naming the step and the response code.
fn tpm<T>(step: &str, r: tss_esapi::Result<T>) -> Result<T, CollectError> {
    r.map_err(|e| failed(format!("{step}: {}", describe(&e))))
}

/// The TSS2 response code: its value, the layer that produced it and its meaning, or the
/// wrapper's error.
fn describe(e: &tss_esapi::Error) -> String {
    let rc = match e {
        tss_esapi::Error::Tss2Error(rc) => rc,
        tss_esapi::Error::WrapperError(w) => return format!("tss-esapi: {w}"),
    };
    // tss-esapi shows the raw TSS2_RC only through Display ("Response code value: 0x...").
    let shown = match rc {
        Tss2ResponseCode::FormatZero(z) => z.to_string(),
        Tss2ResponseCode::FormatOne(o) => o.to_string(),
        Tss2ResponseCode::Success => return "success".into(),
    };
    let value = shown
        .rsplit("0x")
        .next()
        .and_then(|h| u32::from_str_radix(h, 16).ok());
    let Some(value) = value else {
        return format!("TSS2 {shown}");
    };
    let layer = (value >> 16) & 0xff;
    if layer == 0 {
        return match rc.kind() {
            Some(k) => format!("TPM response code {value:#x} (TPM_RC {k:?}: {rc})"),
            None => format!("TPM response code {value:#x}"),
        };
    }
    let layer_name = match layer {
        6 => "SYS",
        7 => "ESYS",
        8 => "MU",
        10 => "TCTI",
        11 | 12 => "resource manager",
        _ => "TSS",
    };
    let base = BASE_RC
        .get((value & 0xffff) as usize)
        .copied()
        .unwrap_or("unknown");
    format!("TSS2 response code {value:#x} ({layer_name} layer: TSS2_BASE_RC_{base})")
}

/// tpm2-tss's TSS2_BASE_RC_* names, by value.
const BASE_RC: [&str; 28] = [
    "SUCCESS",
    "GENERAL_FAILURE",
    "NOT_IMPLEMENTED",
    "BAD_CONTEXT",
    "ABI_MISMATCH",
    "BAD_REFERENCE",
    "INSUFFICIENT_BUFFER",
    "BAD_SEQUENCE",
    "NO_CONNECTION",
    "TRY_AGAIN",
    "IO_ERROR",
    "BAD_VALUE",
    "NOT_PERMITTED",
    "INVALID_SESSIONS",
    "NO_DECRYPT_PARAM",
    "NO_ENCRYPT_PARAM",
    "BAD_SIZE",
    "MALFORMED_RESPONSE",
    "INSUFFICIENT_CONTEXT",
    "INSUFFICIENT_RESPONSE",
    "INCOMPATIBLE_TCTI",
    "NOT_SUPPORTED",
    "BAD_TCTI_STRUCTURE",
    "MEMORY",
    "BAD_TR",
    "MULTIPLE_DECRYPT_SESSIONS",
    "MULTIPLE_ENCRYPT_SESSIONS",
    "RSP_AUTH_FAILED",
];

fn ek_create(ctx: &mut Context) -> tss_esapi::Result<KeyHandle> {
    ek::create_ek_object_2(
        ctx,
        AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa2048),
        DefaultKey,
    )
}

/// The key persisted at `handle`, as an object of this connection.
fn persistent_handle(ctx: &mut Context, handle: u32) -> Result<KeyHandle, CollectError> {
    let h = tss_esapi::handles::PersistentTpmHandle::new(handle)
        .map_err(|e| failed(format!("persistent AK {handle:#010x}: {}", describe(&e))))?;
    let obj = tpm(
        "the persistent AK (Esys_TR_FromTPMPublic)",
        ctx.tr_from_tpm_public(tss_esapi::handles::TpmHandle::Persistent(h)),
    )?;
    Ok(KeyHandle::from(obj))
}

/// First use with a persistent AK: EK certificate and public, and the AK's public area.
fn persistent_keys(
    ctx: &mut Context,
    ek_handle: KeyHandle,
    handle: u32,
) -> Result<(KeyHandle, TpmKeys), CollectError> {
    let (ek_pub, _, _) = tpm("read the EK (TPM2_ReadPublic)", ctx.read_public(ek_handle))?;
    let ek_public = tpm("marshal the EK public area", ek_pub.marshall())?;
    let ek_certificate = read_ek_certificate(ctx)?;
    let ak = persistent_handle(ctx, handle)?;
    let (ak_pub, _, _) = tpm("read the persistent AK (TPM2_ReadPublic)", ctx.read_public(ak))?;
    let ak_public = tpm("marshal the AK public area", ak_pub.marshall())?;
    Ok((
        ak,
        TpmKeys {
            ek_certificate,
            ek_public,
            ak_public,
        },
    ))
}

/// First use: EK certificate and public, and the AK: `loaded` (a stored AK, already
/// loaded) or a new one, loaded.
fn create_keys(
    ctx: &mut Context,
    ek_handle: KeyHandle,
    loaded: Option<(KeyHandle, AkBlob)>,
) -> Result<(KeyHandle, (TpmKeys, AkBlob)), CollectError> {
    let (ek_pub, _, _) = tpm("read the EK (TPM2_ReadPublic)", ctx.read_public(ek_handle))?;
    let ek_public = tpm("marshal the EK public area", ek_pub.marshall())?;
    let ek_certificate = read_ek_certificate(ctx)?;
    let (handle, blob) = match loaded {
        Some(l) => l,
        None => {
            let created = tpm(
                "create the AK (TPM2_Create)",
                ak::create_ak(
                    ctx,
                    ek_handle,
                    HashingAlgorithm::Sha256,
                    SignatureSchemeAlgorithm::RsaSsa,
                    None,
                    DefaultKey,
                ),
            )?;
            let blob = AkBlob {
                private: created.out_private,
                public: created.out_public,
            };
            let handle = tpm(
                "load the AK (TPM2_Load)",
                ak::load_ak(ctx, ek_handle, None, blob.private.clone(), blob.public.clone()),
            )?;
            (handle, blob)
        }
    };
    let ak_public = tpm("marshal the AK public area", blob.public.marshall())?;
    let keys = TpmKeys {
        ek_certificate,
        ek_public,
        ak_public,
    };
    Ok((handle, (keys, blob)))
}

/// The stored AK blob; None when there is no file yet.
fn read_ak_file(path: &Path) -> Result<Option<AkBlob>, CollectError> {
    let bad = |reason: String| {
        failed(format!(
            "AK file {}: {reason} (remove it to create a new AK; the node then enrolls with the new one)",
            path.display()
        ))
    };
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(bad(e.to_string())),
    };
    let blob = tpmfmt::parse_key_blob(&bytes).map_err(|e| bad(e.to_string()))?;
    let public =
        Public::unmarshall(&blob.public).map_err(|e| bad(format!("public area: {}", describe(&e))))?;
    let private =
        Private::try_from(blob.private).map_err(|e| bad(format!("private part: {}", describe(&e))))?;
    Ok(Some(AkBlob { private, public }))
}

/// Store the AK (its marshalled public area and private part): written to a temporary
/// file, synced, renamed over `path`, then the directory synced, so a crash leaves the old
/// file or the new one. Mode 0600.
fn write_ak_file(path: &Path, public: &[u8], private: &Private) -> Result<(), CollectError> {
    use std::io::Write as _;
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    let bad = |what: &str, e: String| failed(format!("AK file {}: {what}: {e}", path.display()));
    let bytes = tpmfmt::KeyBlob {
        public: public.to_vec(),
        private: private.value().to_vec(),
    }
    .to_bytes()
    .map_err(|e| bad("encode", e.to_string()))?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    // As the agent's state directory: owner only.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| bad("create its directory", e.to_string()))?;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| bad("create", e.to_string()))?;
    f.write_all(&bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| bad("write", e.to_string()))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| bad("rename into place", e.to_string()))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| bad("sync its directory", e.to_string()))?;
    Ok(())
}

fn read_ek_certificate(ctx: &mut Context) -> Result<Option<Vec<u8>>, CollectError> {
    match ek::retrieve_ek_pubcert(ctx, AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa2048)) {
        Ok(c) => Ok(Some(c)),
        // TPM_RC_HANDLE from TPM2_NV_ReadPublic: the index is not defined (no EK certificate
        // provisioned, common on virtual TPMs). Enrollment then needs another EK anchor.
        Err(tss_esapi::Error::Tss2Error(rc))
            if rc.kind() == Some(tss_esapi::constants::response_code::Tss2ResponseCodeKind::Handle) =>
        {
            Ok(None)
        }
        Err(e) => Err(failed(format!(
            "read the EK certificate (NV 0x01C00002): {}",
            describe(&e)
        ))),
    }
}

/// The body of a marshalled TPM2B whose size must cover exactly the rest of the input.
fn tpm2b_body<'a>(b: &'a [u8], what: &str) -> Result<&'a [u8], CollectError> {
    match b {
        [hi, lo, body @ ..] if usize::from(u16::from_be_bytes([*hi, *lo])) == body.len() => Ok(body),
        _ => Err(failed(format!(
            "{what}: the size field does not match the {} bytes given",
            b.len()
        ))),
    }
}

/// Re-create the EK, satisfy its policy (PolicySecret on the endorsement hierarchy, as the
/// TCG EK template's authPolicy demands), activate, then flush the EK and the session.
fn activate(open: &mut Open, id: IdObject, secret: EncryptedSecret) -> Result<Vec<u8>, CollectError> {
    let ctx = &mut open.ctx;
    let ak = open.ak;
    let ek = tpm("create the EK (TPM2_CreatePrimary)", ek_create(ctx))?;
    let session = match ctx.start_auth_session(
        None,
        None,
        None,
        SessionType::Policy,
        SymmetricDefinition::AES_128_CFB,
        HashingAlgorithm::Sha256,
    ) {
        Ok(Some(s)) => Ok(s),
        Ok(None) => Err(failed("TPM2_StartAuthSession returned no session".into())),
        Err(e) => Err(failed(format!("TPM2_StartAuthSession: {}", describe(&e)))),
    };
    let result = session.and_then(|session| {
        let r = PolicySession::try_from(session)
            .map_err(|e| failed(format!("policy session: {}", describe(&e))))
            .and_then(|policy| {
                tpm(
                    "TPM2_PolicySecret (endorsement hierarchy)",
                    ctx.execute_with_session(Some(AuthSession::Password), |c| {
                        c.policy_secret(
                            policy,
                            AuthHandle::Endorsement,
                            Default::default(),
                            Default::default(),
                            Default::default(),
                            None,
                        )
                    }),
                )
            })
            .and_then(|_| {
                tpm(
                    "TPM2_ActivateCredential",
                    ctx.execute_with_sessions((Some(AuthSession::Password), Some(session), None), |c| {
                        c.activate_credential(ak, ek, id, secret)
                    }),
                )
            });
        // The session may already be gone (a failed command can end it); nothing to do then.
        let _ = ctx.flush_context(SessionHandle::from(session).into());
        r
    });
    let flushed = tpm("flush the EK (TPM2_FlushContext)", ctx.flush_context(ek.into()));
    let digest = result?;
    flushed?;
    Ok(digest.value().to_vec())
}

/// TPM2_Quote with the binding as qualifyingData; the TPMS_ATTEST and TPMT_SIGNATURE
/// marshalled back to bytes, and the attest parsed with the verifier's own parser.
fn quote(
    open: &mut Open,
    binding: &Binding,
    selection: &PcrSelectionList,
) -> Result<(Vec<u8>, Vec<u8>, tpmfmt::Attest), CollectError> {
    let data = tpm("qualifying data", Data::try_from(binding.as_bytes().to_vec()))?;
    let scheme = SignatureScheme::RsaSsa {
        hash_scheme: HashScheme::new(HashingAlgorithm::Sha256),
    };
    let ak = open.ak;
    let (attest, sig) = tpm(
        "TPM2_Quote",
        open.ctx
            .execute_with_nullauth_session(|ctx| ctx.quote(ak, data, scheme, selection.clone())),
    )?;
    // tss-esapi hands back parsed structures; marshalling them reproduces the bytes the TPM
    // signed (the verifier's signature check over these bytes is what proves it).
    let quote = tpm("marshal TPMS_ATTEST", attest.marshall())?;
    let signature = tpm("marshal TPMT_SIGNATURE", sig.marshall())?;
    let parsed = tpmfmt::parse_attest(&quote).map_err(|e| failed(format!("the TPM's TPMS_ATTEST: {e}")))?;
    if parsed.extra_data != binding.as_bytes() {
        return Err(failed(
            "the TPM's quote does not carry the binding as extraData".into(),
        ));
    }
    Ok((quote, signature, parsed))
}

/// TPM2_PCR_Read until every selected PCR is read (at most 8 digests per call), keyed by
/// (bank, PCR index).
fn read_pcrs(
    ctx: &mut Context,
    selection: &PcrSelectionList,
) -> Result<BTreeMap<(HashAlg, u32), Vec<u8>>, CollectError> {
    let mut out = BTreeMap::new();
    let mut left = selection.clone();
    // 4 banks x 24 PCRs / 8 per call, plus slack: a TPM that keeps returning nothing
    // (an unallocated bank) must not loop forever.
    for _ in 0..16 {
        if left.is_empty() {
            return Ok(out);
        }
        let (_, read, digests) = tpm(
            "TPM2_PCR_Read",
            ctx.execute_without_session(|c| c.pcr_read(left.clone())),
        )?;
        let mut values = digests.value().iter();
        let mut got = 0usize;
        for s in read.get_selections() {
            let bank = hash_alg(s.hashing_algorithm()).ok_or_else(|| {
                failed(format!(
                    "TPM2_PCR_Read returned a {:?} bank",
                    s.hashing_algorithm()
                ))
            })?;
            for slot in s.selected() {
                let v = values
                    .next()
                    .ok_or_else(|| failed("TPM2_PCR_Read returned fewer digests than PCRs".into()))?;
                out.insert((bank, u32::from(slot).trailing_zeros()), v.value().to_vec());
                got += 1;
            }
        }
        if got == 0 {
            return Err(failed(format!(
                "TPM2_PCR_Read returned none of the {} banks' PCRs still wanted: bank not allocated?",
                left.len()
            )));
        }
        tpm("PCR selection bookkeeping", left.subtract(&read))?;
    }
    Err(failed("TPM2_PCR_Read did not return every selected PCR".into()))
}

/// The configured selection, validated, as tss-esapi's list.
fn selection_list(sel: &[PcrSelection]) -> Result<PcrSelectionList, TpmConfigError> {
    if sel.iter().all(|s| s.pcrs.is_empty()) {
        return Err(TpmConfigError::EmptySelection);
    }
    let mut builder = PcrSelectionListBuilder::new();
    let mut seen = Vec::new();
    for s in sel {
        if seen.contains(&s.bank) {
            return Err(TpmConfigError::DuplicateBank(s.bank.name()));
        }
        seen.push(s.bank);
        let mut slots = Vec::new();
        let mut prev = None;
        for &p in &s.pcrs {
            let bad = TpmConfigError::BadPcr {
                bank: s.bank.name(),
                pcr: p,
            };
            if p >= PCR_COUNT || prev.is_some_and(|q| q >= p) {
                return Err(bad);
            }
            prev = Some(p);
            slots.push(PcrSlot::try_from(1u32 << p).map_err(|_| bad)?);
        }
        builder = builder.with_selection(hashing(s.bank), &slots);
    }
    builder
        .build()
        .map_err(|e| TpmConfigError::Selection(e.to_string()))
}

/// Equal as sets of (bank, PCR), ignoring empty banks and bank order.
fn same_selection(a: &[PcrSelection], b: &[PcrSelection]) -> bool {
    let set = |s: &[PcrSelection]| {
        s.iter()
            .flat_map(|x| x.pcrs.iter().map(move |p| (x.bank, *p)))
            .collect::<std::collections::BTreeSet<_>>()
    };
    set(a) == set(b)
}

fn selection_text(s: &[PcrSelection]) -> String {
    let banks: Vec<String> = s
        .iter()
        .filter(|x| !x.pcrs.is_empty())
        .map(|x| {
            let pcrs: Vec<String> = x.pcrs.iter().map(u32::to_string).collect();
            format!("{}:{}", x.bank.name(), pcrs.join(","))
        })
        .collect();
    if banks.is_empty() {
        "no PCRs".into()
    } else {
        banks.join("+")
    }
}

fn hashing(h: HashAlg) -> HashingAlgorithm {
    match h {
        HashAlg::Sha1 => HashingAlgorithm::Sha1,
        HashAlg::Sha256 => HashingAlgorithm::Sha256,
        HashAlg::Sha384 => HashingAlgorithm::Sha384,
        HashAlg::Sha512 => HashingAlgorithm::Sha512,
    }
}

fn hash_alg(h: HashingAlgorithm) -> Option<HashAlg> {
    match h {
        HashingAlgorithm::Sha1 => Some(HashAlg::Sha1),
        HashingAlgorithm::Sha256 => Some(HashAlg::Sha256),
        HashingAlgorithm::Sha384 => Some(HashAlg::Sha384),
        HashingAlgorithm::Sha512 => Some(HashAlg::Sha512),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(tcti: &str, pcrs: Vec<PcrSelection>) -> TpmConfig {
        TpmConfig {
            tcti: tcti.into(),
            pcrs,
            event_log: None,
        }
    }

    #[test]
    fn default_config_is_valid() {
        let c = TpmCollector::new(TpmConfig::default()).unwrap();
        assert_eq!(c.config().tcti, "device:/dev/tpmrm0");
        assert_eq!(c.selection.len(), 1);
        assert_eq!(c.kind(), "tpm");
    }

    #[test]
    fn bad_configs_are_refused() {
        let sha = |pcrs: Vec<u32>| PcrSelection {
            bank: HashAlg::Sha256,
            pcrs,
        };
        assert!(matches!(
            TpmCollector::new(cfg("nonsense:foo", default_pcrs())),
            Err(TpmConfigError::Tcti { .. })
        ));
        assert_eq!(
            TpmCollector::new(cfg(DEFAULT_TCTI, vec![])).unwrap_err(),
            TpmConfigError::EmptySelection
        );
        assert_eq!(
            TpmCollector::new(cfg(DEFAULT_TCTI, vec![sha(vec![1, 24])])).unwrap_err(),
            TpmConfigError::BadPcr {
                bank: "sha256",
                pcr: 24
            }
        );
        assert!(matches!(
            TpmCollector::new(cfg(DEFAULT_TCTI, vec![sha(vec![3, 2])])),
            Err(TpmConfigError::BadPcr { pcr: 2, .. })
        ));
        assert_eq!(
            TpmCollector::new(cfg(DEFAULT_TCTI, vec![sha(vec![0]), sha(vec![1])])).unwrap_err(),
            TpmConfigError::DuplicateBank("sha256")
        );
    }

    #[test]
    fn missing_device_is_not_available() {
        let c = TpmCollector::new(cfg("device:/nonexistent/tpmrm9", default_pcrs())).unwrap();
        let e = c.collect(&Binding([0; 32])).unwrap_err();
        match e {
            CollectError::NotAvailable { kind, reason } => {
                assert_eq!(kind, "tpm");
                assert!(reason.contains("/nonexistent/tpmrm9"), "{reason}");
            }
            other => panic!("expected NotAvailable, got {other:?}"),
        }
    }

    #[test]
    fn collector_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<TpmCollector>();
    }
}
