//! `custody-verifier` configuration: one TOML file, every key optional with the default
//! documented here (`custody-verifier config --defaults` prints them).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("configuration: {0}")]
    Invalid(String),
    /// A `[[landmarks]]` entry is unusable; `field` names the key.
    #[error("configuration: `landmarks[{index}].{field}`: {reason}")]
    Landmarks {
        index: usize,
        field: &'static str,
        reason: String,
    },
}

impl ConfigError {
    /// Stable name of what was refused.
    pub fn check(&self) -> &'static str {
        match self {
            Self::Read { .. } => "config_read",
            Self::Parse { .. } => "config_parse",
            Self::Invalid(_) => "config_invalid",
            Self::Landmarks { .. } => "config_landmarks",
        }
    }
}

pub use custody_appraisal::{
    Masked64, MinTcb, ReferenceMode, SnpReferenceValues, TdxReferenceValues, POLICY_BITS,
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the HTTPS API listens on.
    pub listen: String,
    /// Names and IP addresses agents and operators use to reach this verifier; they go
    /// into its server certificate.
    pub server_names: Vec<String>,
    /// Database, CA, EAR and log keys live here (created by `custody-verifier init`).
    pub data_dir: PathBuf,
    /// TPM manufacturer CA certificates (PEM or DER files) an EK certificate must chain to.
    pub ek_ca_dir: PathBuf,
    /// Seconds between continuous attestation rounds of each node.
    pub interval_secs: u64,
    /// Lifetime of a round nonce.
    pub nonce_ttl_secs: u64,
    /// Nonces a node may ask for itself (push mode) per minute; beyond it `/v1/nonce`
    /// answers 429 (check `nonce`). A node pushing once per interval needs one.
    pub push_rounds_per_minute: u32,
    /// How long the verifier waits for an agent's evidence.
    pub round_timeout_secs: u64,
    /// Consecutive rounds whose evidence was refused after which a node is revoked. A
    /// node that is silent or unreachable is `failed`, never revoked for that; a round the
    /// verifier could not run itself (`verifier_error`) changes nothing.
    pub revoke_after: u32,
    /// Lifetime of a signed attestation result.
    pub ear_ttl_secs: i64,
    /// Signed checkpoint of the audit log every this many seconds (when it grew).
    pub checkpoint_secs: u64,
    pub reference: ReferenceMode,
    /// PCRs every quote must cover, per bank (`[min_pcrs] sha256 = [0, 1, ...]`); a smaller
    /// selection fails `pcr_selection`. Without it a node could quote nothing, and a
    /// baseline learnt from it would compare nothing. Default: sha256 PCRs 0-7 (firmware,
    /// option ROMs, boot loader, Secure Boot policy).
    pub min_pcrs: BTreeMap<String, Vec<u32>>,
    /// The appraisal policy: a shipped policy's name (`default`, `eu-sovereign`,
    /// `secnumcloud`, `defense-restricted`) or the path of a Rego file; `default` when absent.
    pub policy: Option<String>,
    /// JSON parameters handed to the policy as `data` (e.g. `{"custody":{"params":{"locality_km":500}}}`).
    pub policy_data: Option<PathBuf>,
    /// The signed registry of legal entities, sites and hardware (`custody registry sign`).
    /// Without it results carry no sovereignty claims and sovereignty policies refuse.
    pub registry: Option<PathBuf>,
    /// Public keys (PEM) of the registry authority: a registry signed by any other key is
    /// refused at start-up and on upload.
    pub registry_authorities: Vec<PathBuf>,
    /// This verifier as a locality landmark. With it, every round measures the round-trip
    /// time to agents that run a locality responder and bounds their distance.
    pub landmark: Option<Landmark>,
    /// Remote landmarks (`custody landmark serve`), each pinned by id and public key.
    /// Every pulled round asks each of them, at the same time as this verifier's own
    /// measurement, to time the node's attested session key; every statement that
    /// verifies against its pinned key is one more locality proof.
    pub landmarks: Vec<RemoteLandmark>,
    /// Directory of NVIDIA-signed RIMs (driver and VBIOS SWID tags, `*.xml`). With it,
    /// every GPU's measurements must match the RIMs for its product and its reported
    /// driver and VBIOS versions (`rim`); without it GPU measurements are not compared.
    /// Every file is checked at start-up (a bad one stops the verifier, naming it).
    pub gpu_rims: Option<PathBuf>,
    /// SEV-SNP reference values (`[snp]`): which guest the agent must run in for its
    /// session key to count as CVM-protected.
    pub snp: SnpReference,
    /// Intel TDX appraisal (`[tdx]`): Intel's collateral and the TD reference values.
    pub tdx: TdxConfig,
    /// NVIDIA GPU appraisal (`[nvgpu]`).
    pub nvgpu: NvgpuConfig,
    /// What the API listener allows each peer (connections, deadlines, streams).
    pub limits: Limits,
    /// Event receivers (HTTPS URLs): each state change is POSTed as JSON.
    pub webhooks: Vec<String>,
    /// CA certificates (PEM) webhook receivers' certificates must chain to.
    pub webhook_ca: Option<PathBuf>,
    /// Lifetime of a node certificate, hours (1-720). Agents renew at about half of it
    /// (`POST /v1/renew`) while their node is neither removed nor revoked, so a node
    /// taken out loses its TLS identity within this time.
    pub node_cert_hours: u32,
    /// Hosts other than a node's own endpoint host that its locality endpoint may name
    /// (a responder on another interface). Anything else is refused at enrollment: the
    /// verifier and remote landmarks connect there.
    pub allowed_locality_hosts: Vec<String>,
    /// How far (km) a registered site may lie outside a locality bound before the round
    /// fails `locality_consistency`: registry coordinates name a site, not a rack.
    pub locality_tolerance_km: f64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8442".into(),
            server_names: vec!["localhost".into(), "127.0.0.1".into()],
            data_dir: PathBuf::from("/var/lib/custody-verifier"),
            ek_ca_dir: PathBuf::from("/etc/custody/ek-ca"),
            interval_secs: 60,
            nonce_ttl_secs: 30,
            push_rounds_per_minute: 60,
            round_timeout_secs: 15,
            revoke_after: 3,
            ear_ttl_secs: 600,
            checkpoint_secs: 60,
            reference: ReferenceMode::Tofu,
            min_pcrs: BTreeMap::from([("sha256".to_owned(), (0..=7).collect())]),
            policy: None,
            policy_data: None,
            registry: None,
            registry_authorities: Vec::new(),
            landmark: None,
            landmarks: Vec::new(),
            gpu_rims: None,
            snp: SnpReference::default(),
            tdx: TdxConfig::default(),
            nvgpu: NvgpuConfig::default(),
            webhooks: Vec::new(),
            webhook_ca: None,
            node_cert_hours: 24,
            allowed_locality_hosts: Vec::new(),
            locality_tolerance_km: 50.0,
            limits: Limits::default(),
        }
    }
}

/// `[snp]`: reference values for the SEV-SNP guest the agent runs in. Without
/// `measurements` an SNP report that verifies still only says "some guest saw this
/// round" (anyone can compute the binding), so the session key is labelled `process`
/// (`snp_reference: unconfigured`). With them, a report whose VMPL, MEASUREMENT or
/// HOST_DATA differ fails the round at `snp.vmpl`, `snp.measurement` or `snp.host_data`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SnpReference {
    /// Launch MEASUREMENTs (96 hex digits each) of the guest image(s) the agent runs in.
    pub measurements: Vec<String>,
    /// HOST_DATA (64 hex digits) the guest must be launched with; unchecked when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_data: Option<String>,
    /// The VMPL the report must be requested from (0: the guest's most privileged level,
    /// where an agent in the guest kernel's trust boundary runs).
    pub vmpl: u32,
    /// ID key digests (96 hex digits each, SHA-384 of the ID key the guest was launched
    /// with) the operator signs its images with; unchecked when empty.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub id_key_digests: Vec<String>,
    /// The lowest TCB the platform may report (`[snp.min_tcb]`: `bootloader`, `tee`,
    /// `snp`, `microcode` SPLs); unchecked when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_tcb: Option<MinTcb>,
    /// Guest policy bits that must be off (`smt`, `migrate_ma`, `debug`, `cxl_allow`,
    /// `single_socket`); e.g. `["migrate_ma"]` refuses guests a migration agent may move.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub forbid_policy: Vec<String>,
    /// FOR TESTS ONLY: a PEM file with a self-signed test ARK (and its ASK) trusted
    /// beside AMD's built-in roots, so tests can re-sign captured reports for hardware
    /// the test machine lacks. Never set it in production: whoever holds that root's
    /// key can forge any SNP report.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_ark: Option<PathBuf>,
    /// AMD KDS CRLs (DER or PEM), one per ARK (`https://kdsintf.amd.com/vcek/v1/{Milan,
    /// Genoa,Turin}/crl`, fetched on a connected machine): each SNP chain's revocation is
    /// then `good`, `revoked` (the round fails at `snp.revocation`) or `stale`; without
    /// one it is `unchecked`. Read at start; each is checked against its ARK when used.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub crls: Vec<PathBuf>,
    /// Days past a CRL's nextUpdate it still counts as fresh (default 0).
    pub crl_grace_days: u32,
}

/// `[tdx]`: Intel TDX appraisal. Without `collateral` a TDX quote fails at
/// `tdx.collateral`; without `mr_td` a quote that verifies still only says "some TD saw
/// this round", so the session key is labelled `process` (`tdx_reference: unconfigured`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TdxConfig {
    /// A directory of Intel PCS v4 collateral, as `custody verify tdx --collateral` reads
    /// it (`tcb_info.pcs.json`, `tcb_info_issuer_chain.pem`, `qe_identity.pcs.json`,
    /// `qe_identity_issuer_chain.pem`, `pck_crl.der`, `root_ca_crl.der`): one platform
    /// model's (FMSPC) in the directory itself and/or one per subdirectory. Read at start
    /// and whenever its files change; a quote is appraised with its FMSPC's set. Out of date, it fails rounds at `tdx.collateral`
    /// (never charged to the node) and shows in
    /// `custody_collateral_next_update_timestamp_seconds{kind="tdx_collateral"}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub collateral: Option<PathBuf>,
    /// MRTDs (96 hex digits each) of the TD images the agent runs in.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mr_td: Vec<String>,
    /// RTMR0-3 values (96 hex digits each) that must match, when given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtmr0: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtmr1: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtmr2: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtmr3: Option<String>,
    /// MRCONFIGID and MROWNER (96 hex digits), when TDs are launched with them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mr_config_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mr_owner: Option<String>,
    /// TDATTRIBUTES and XFAM as `VALUE` or `VALUE/MASK` (16 hex digits each, the quote's
    /// byte order): the bits under the mask must match (`tdx.td_attributes`, `tdx.xfam`).
    /// E.g. `td_attributes = "0000001000000000/0100001000000080"`: SEPT_VE_DISABLE on,
    /// DEBUG and PERFMON off, the rest free.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub td_attributes: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub xfam: Option<String>,
    /// Accept debuggable TDs (`tdx.debug` otherwise). Never in production.
    pub allow_debug: bool,
    /// How often (seconds) the collateral directory is checked for newer files, which then
    /// go in force without a restart; 0: read at start only.
    pub collateral_check_secs: u64,
    /// FOR TESTS ONLY: a PEM test root used instead of the built-in Intel SGX Root CA for
    /// TDX quotes and collateral, so tests can sign quotes for hardware the test machine
    /// lacks. Never set it in production: whoever holds that root's key can forge any
    /// TDX quote.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_root: Option<PathBuf>,
}

impl Default for TdxConfig {
    fn default() -> Self {
        Self {
            collateral: None,
            mr_td: Vec::new(),
            rtmr0: None,
            rtmr1: None,
            rtmr2: None,
            rtmr3: None,
            mr_config_id: None,
            mr_owner: None,
            td_attributes: None,
            xfam: None,
            allow_debug: false,
            collateral_check_secs: 60,
            test_root: None,
        }
    }
}

impl TdxConfig {
    /// The typed reference values; `None` when no MRTD is configured.
    pub fn values(&self) -> Result<Option<TdxReferenceValues>, ConfigError> {
        let hex48 = |what: &str, m: &str| -> Result<[u8; 48], ConfigError> {
            hex::decode(m)
                .ok()
                .and_then(|b| <[u8; 48]>::try_from(b.as_slice()).ok())
                .ok_or_else(|| ConfigError::Invalid(format!("`tdx.{what}`: {m:?} is not 96 hex digits")))
        };
        let opt = |what: &str, m: &Option<String>| m.as_deref().map(|m| hex48(what, m)).transpose();
        let rtmr = [
            opt("rtmr0", &self.rtmr0)?,
            opt("rtmr1", &self.rtmr1)?,
            opt("rtmr2", &self.rtmr2)?,
            opt("rtmr3", &self.rtmr3)?,
        ];
        let mr_config_id = opt("mr_config_id", &self.mr_config_id)?;
        let mr_owner = opt("mr_owner", &self.mr_owner)?;
        let masked = |what: &str, m: &Option<String>| {
            m.as_deref()
                .map(|m| Masked64::parse(m).map_err(|e| ConfigError::Invalid(format!("`tdx.{what}`: {e}"))))
                .transpose()
        };
        let td_attributes = masked("td_attributes", &self.td_attributes)?;
        let xfam = masked("xfam", &self.xfam)?;
        if self.mr_td.is_empty() {
            if rtmr.iter().any(Option::is_some)
                || mr_config_id.is_some()
                || mr_owner.is_some()
                || td_attributes.is_some()
                || xfam.is_some()
            {
                return Err(ConfigError::Invalid(
                    "`tdx.rtmr0`-`rtmr3`, `mr_config_id`, `mr_owner`, `td_attributes` and `xfam` need `tdx.mr_td`"
                        .into(),
                ));
            }
            return Ok(None);
        }
        Ok(Some(TdxReferenceValues {
            mr_td: self
                .mr_td
                .iter()
                .map(|m| hex48("mr_td", m))
                .collect::<Result<_, _>>()?,
            rtmr,
            mr_config_id,
            mr_owner,
            td_attributes,
            xfam,
        }))
    }
}

/// `[nvgpu]`: NVIDIA GPU appraisal.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NvgpuConfig {
    /// FOR TESTS ONLY: a PEM file with a self-signed test device-identity root trusted
    /// beside NVIDIA's built-in one, so tests can sign GPU reports for hardware the test
    /// machine lacks. Never set it in production: whoever holds that root's key can forge
    /// any GPU report.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_root: Option<PathBuf>,
}

impl SnpReference {
    /// The typed values; `None` when no measurement is configured.
    pub fn values(&self) -> Result<Option<SnpReferenceValues>, ConfigError> {
        let bad = |s: String| ConfigError::Invalid(s);
        if self.vmpl > 3 {
            return Err(bad(format!("`snp.vmpl` must be 0-3, got {}", self.vmpl)));
        }
        if self.measurements.is_empty() {
            if self.host_data.is_some()
                || self.vmpl != 0
                || !self.id_key_digests.is_empty()
                || self.min_tcb.is_some()
                || !self.forbid_policy.is_empty()
            {
                return Err(bad(
                    "`snp.host_data`, `vmpl`, `id_key_digests`, `min_tcb` and `forbid_policy` need `snp.measurements`".into(),
                ));
            }
            return Ok(None);
        }
        let hex48 = |what: &str, list: &[String]| -> Result<Vec<[u8; 48]>, ConfigError> {
            list.iter()
                .map(|m| {
                    hex::decode(m)
                        .ok()
                        .and_then(|b| <[u8; 48]>::try_from(b.as_slice()).ok())
                        .ok_or_else(|| bad(format!("`snp.{what}`: {m:?} is not 96 hex digits")))
                })
                .collect()
        };
        let measurements = hex48("measurements", &self.measurements)?;
        let id_key_digests = hex48("id_key_digests", &self.id_key_digests)?;
        if let Some(b) = self
            .forbid_policy
            .iter()
            .find(|b| !POLICY_BITS.contains(&b.as_str()))
        {
            return Err(bad(format!(
                "`snp.forbid_policy`: {b:?} is not one of {POLICY_BITS:?}"
            )));
        }
        let host_data = self
            .host_data
            .as_ref()
            .map(|h| {
                hex::decode(h)
                    .ok()
                    .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
                    .ok_or_else(|| bad(format!("`snp.host_data`: {h:?} is not 64 hex digits")))
            })
            .transpose()?;
        Ok(Some(SnpReferenceValues {
            measurements,
            host_data,
            vmpl: self.vmpl,
            id_key_digests,
            min_tcb: self.min_tcb,
            forbid_policy: self.forbid_policy.clone(),
        }))
    }
}

/// What the API listener allows each peer (`[limits]`): anyone who reaches the port can
/// open connections before any certificate is checked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Connections served at once (clamped below the process's open-files limit).
    pub max_connections: usize,
    /// Seconds for a TLS handshake.
    pub handshake_secs: u64,
    /// Seconds for an HTTP/1.1 request's headers.
    pub header_read_secs: u64,
    /// Seconds for a request's body after its headers.
    pub body_read_secs: u64,
    /// Seconds a connection may sit with no request in flight.
    pub idle_secs: u64,
    /// HTTP/2 keep-alive ping interval (and timeout), seconds.
    pub keep_alive_secs: u64,
    /// Concurrent HTTP/2 streams per connection.
    pub max_streams: u32,
    /// HTTP/2 receive window per stream, KiB (64 ..= 16,384): how much of a body a peer
    /// can send that the verifier must read even when it refuses the request.
    pub stream_window_kib: u32,
}

impl Default for Limits {
    fn default() -> Self {
        let d = custody_net::ServeLimits::default();
        Self {
            max_connections: d.max_connections,
            handshake_secs: d.handshake.as_secs(),
            header_read_secs: d.header_read.as_secs(),
            body_read_secs: d.body_read.as_secs(),
            idle_secs: d.idle.as_secs(),
            keep_alive_secs: d.keep_alive.as_secs(),
            max_streams: d.max_streams,
            stream_window_kib: d.stream_window / 1024,
        }
    }
}

impl Limits {
    /// The listener's limits; `max_connections` leaves 256 descriptors for everything
    /// else the verifier opens (database, agents, landmarks, webhooks).
    pub fn serve_limits(&self) -> custody_net::ServeLimits {
        use std::time::Duration;
        let fds = custody_net::open_files_limit().map_or(usize::MAX, |n| n.saturating_sub(256).max(16));
        custody_net::ServeLimits {
            max_connections: self.max_connections.min(fds),
            handshake: Duration::from_secs(self.handshake_secs),
            header_read: Duration::from_secs(self.header_read_secs),
            body_read: Duration::from_secs(self.body_read_secs),
            idle: Duration::from_secs(self.idle_secs),
            keep_alive: Duration::from_secs(self.keep_alive_secs),
            max_streams: self.max_streams,
            stream_window: self.stream_window_kib.saturating_mul(1024),
        }
    }
}

/// A landmark's identity and known position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Landmark {
    /// Name results carry (`paris-verifier`).
    pub id: String,
    /// Position in degrees (WGS 84).
    pub lat: f64,
    pub lon: f64,
    /// Challenges per measurement; the smallest round trip counts.
    #[serde(default = "default_probes")]
    pub probes: u32,
}

fn default_probes() -> u32 {
    8
}

/// A remote landmark the verifier trusts: its statements count only when signed by
/// `public_key` and naming `id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteLandmark {
    /// `http://HOST:PORT` of `custody landmark serve` (plain HTTP: the statement is
    /// signed, docs/locality.md "Remote landmarks").
    pub url: String,
    /// The landmark's id, as its statements name it.
    pub id: String,
    /// Its Ed25519 public key, 64 hex digits (`custody landmark keygen --pub`).
    pub public_key: String,
    /// Bound on the whole request (the landmark's measurement included), milliseconds;
    /// at most `round_timeout_secs`.
    #[serde(default = "default_landmark_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_landmark_timeout_ms() -> u64 {
    5000
}

impl RemoteLandmark {
    /// The pinned identity (`public_key` already checked by [`Config::validate`]).
    pub fn pinned(&self) -> Result<custody_locality::PinnedLandmark, ConfigError> {
        Ok(custody_locality::PinnedLandmark {
            id: self.id.clone(),
            key: parse_key_hex(&self.public_key).map_err(|reason| ConfigError::Landmarks {
                index: 0,
                field: "public_key",
                reason,
            })?,
        })
    }
}

fn parse_key_hex(s: &str) -> Result<[u8; 32], String> {
    let b = hex::decode(s).map_err(|_| "not hex".to_owned())?;
    <[u8; 32]>::try_from(b.as_slice())
        .map_err(|_| format!("must be 32 bytes (64 hex digits), got {}", b.len()))
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let cfg: Self = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |s: &str| Err(ConfigError::Invalid(s.to_owned()));
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return bad("`listen` must be an IP:port");
        }
        if self.interval_secs == 0 || self.nonce_ttl_secs == 0 || self.round_timeout_secs == 0 {
            return bad("`interval_secs`, `nonce_ttl_secs` and `round_timeout_secs` must be positive");
        }
        if self.push_rounds_per_minute == 0 {
            return bad("`push_rounds_per_minute` must be at least 1");
        }
        if self.revoke_after == 0 {
            return bad("`revoke_after` must be at least 1");
        }
        if self.ear_ttl_secs <= 0 {
            return bad("`ear_ttl_secs` must be positive");
        }
        if !(1..=720).contains(&self.node_cert_hours) {
            return bad("`node_cert_hours` must be 1-720");
        }
        if !(0.0..=20_000.0).contains(&self.locality_tolerance_km) {
            return bad("`locality_tolerance_km` must be 0-20000");
        }
        if self.server_names.is_empty() {
            return bad("`server_names` must name at least one host");
        }
        if self.registry.is_some() && self.registry_authorities.is_empty() {
            return bad("`registry` needs at least one key in `registry_authorities`");
        }
        if let Some(l) = &self.landmark {
            if !(-90.0..=90.0).contains(&l.lat) || !(-180.0..=180.0).contains(&l.lon) {
                return bad("`landmark` coordinates are out of range");
            }
            if l.probes == 0 || l.probes > 1000 {
                return bad("`landmark.probes` must be between 1 and 1000");
            }
        }
        for (bank, pcrs) in &self.min_pcrs {
            if !["sha1", "sha256", "sha384", "sha512"].contains(&bank.as_str()) {
                return Err(ConfigError::Invalid(format!("`min_pcrs`: unknown bank `{bank}`")));
            }
            if pcrs.iter().any(|p| *p > 23) {
                return Err(ConfigError::Invalid(format!("`min_pcrs.{bank}`: PCRs are 0-23")));
            }
        }
        let l = &self.limits;
        if l.max_connections == 0
            || l.handshake_secs == 0
            || l.header_read_secs == 0
            || l.body_read_secs == 0
            || l.idle_secs == 0
            || l.keep_alive_secs == 0
            || l.max_streams == 0
        {
            return bad("every value in `[limits]` must be positive");
        }
        if !(64..=16_384).contains(&l.stream_window_kib) {
            return bad("`[limits] stream_window_kib` must be 64 ..= 16384");
        }
        self.validate_landmarks()?;
        self.snp.values()?;
        self.tdx.values()?;
        if let Some(u) = self.webhooks.iter().find(|u| !u.starts_with("https://")) {
            return Err(ConfigError::Invalid(format!(
                "webhook `{u}` is not an https:// URL"
            )));
        }
        Ok(())
    }

    fn validate_landmarks(&self) -> Result<(), ConfigError> {
        let mut ids: Vec<&str> = self.landmark.iter().map(|l| l.id.as_str()).collect();
        let mut keys = Vec::new();
        for (index, l) in self.landmarks.iter().enumerate() {
            let err = |field: &'static str, reason: String| ConfigError::Landmarks { index, field, reason };
            custody_locality::remote::landmark_authority(&l.url).map_err(|e| err("url", e.to_string()))?;
            if l.id.is_empty() || l.id.len() > custody_locality::statement::MAX_ID_LEN {
                return Err(err("id", "must be 1-256 bytes".into()));
            }
            // One id, one key: a statement is matched to its pin by the id it names.
            if ids.contains(&l.id.as_str()) {
                return Err(err("id", format!("`{}` is used by another landmark", l.id)));
            }
            ids.push(&l.id);
            let key = parse_key_hex(&l.public_key).map_err(|r| err("public_key", r))?;
            if keys.contains(&key) {
                return Err(err("public_key", "is pinned for another landmark".into()));
            }
            keys.push(key);
            if l.timeout_ms == 0 || l.timeout_ms > self.round_timeout_secs.saturating_mul(1000) {
                return Err(err(
                    "timeout_ms",
                    format!(
                        "must be 1-{} (round_timeout_secs)",
                        self.round_timeout_secs.saturating_mul(1000)
                    ),
                ));
            }
        }
        Ok(())
    }

    pub fn defaults_toml() -> String {
        let mut s = String::from(
            "# custody-verifier configuration. Every key is optional; these are the defaults.\n",
        );
        s.push_str(&toml::to_string_pretty(&Self::default()).unwrap_or_default());
        s.push_str(
            "# policy = \"eu-sovereign\"            # or a path to a .rego file\n\
             # policy_data = \"/etc/custody/policy-params.json\"\n\
             # registry = \"/etc/custody/registry.cose\"\n\
             # registry_authorities = [\"/etc/custody/registry-authority.pub.pem\"]\n\
             # webhook_ca = \"/etc/custody/webhook-ca.pem\"\n\
             # gpu_rims = \"/etc/custody/nvidia-rims\"  # NVIDIA-signed driver and VBIOS RIMs\n\
             # [landmark]\n# id = \"paris-verifier\"\n# lat = 48.8566\n# lon = 2.3522\n# probes = 8\n\
             # [[landmarks]]                      # remote landmarks (`custody landmark serve`), pinned\n\
             # url = \"http://192.0.2.10:8450\"\n# id = \"fra-landmark\"\n\
             # public_key = \"<64 hex digits from `custody landmark keygen --pub`>\"\n# timeout_ms = 5000\n\
             # [snp]                              # the guest image the agent runs in\n\
             # measurements = [\"<96 hex digits>\"]\n# host_data = \"<64 hex digits>\"\n# vmpl = 0\n",
        );
        s
    }

    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join("custody.db")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_round_trip_and_refusals() {
        let d = Config::defaults_toml();
        let c = Config::parse(Path::new("d.toml"), &d).unwrap();
        assert_eq!(c, Config::default());
        let c = Config::parse(Path::new("x"), "interval_secs = 5\nreference = \"operator\"\n").unwrap();
        assert_eq!(c.interval_secs, 5);
        assert_eq!(c.reference, ReferenceMode::Operator);
        for bad in [
            "bogus = 1",
            "listen = \"nowhere\"",
            "interval_secs = 0",
            "node_cert_hours = 0",
            "revoke_after = 0",
            "webhooks = [\"http://plain\"]",
            "reference = \"maybe\"",
            "registry = \"/r.cose\"",
            "[landmark]\nid = \"x\"\nlat = 91.0\nlon = 0.0",
            "[landmark]\nid = \"x\"\nlat = 1.0\nlon = 0.0\nprobes = 0",
            "[snp]\nmeasurements = [\"00\"]",
            "[snp]\nvmpl = 1",
            "[snp]\nmeasurements = []\nhost_data = \"00\"",
            "[snp]\nmeasurements = [\"{m}\"]\nvmpl = 4",
            "[snp]\nmeasurements = [\"{m}\"]\nhost_data = \"abcd\"",
            "[snp]\nbogus = 1",
            "[tdx]\nmr_td = [\"00\"]",
            "[tdx]\nrtmr2 = \"{m}\"",
            "[tdx]\nmr_td = [\"{m}\"]\nmr_owner = \"abcd\"",
            "[tdx]\nxfam = \"e702060000000000\"",
            "[tdx]\nmr_td = [\"{m}\"]\nxfam = \"e70206\"",
            "[tdx]\nmr_td = [\"{m}\"]\ntd_attributes = \"0000001000000000/00000000000000ff\"",
            "[tdx]\nmr_td = [\"{m}\"]\ntd_attributes = \"0000001000000000/\"",
            "[tdx]\nbogus = 1",
        ] {
            let bad = &bad.replace("{m}", &"ab".repeat(48));
            assert!(Config::parse(Path::new("x"), bad).is_err(), "{bad}");
        }
    }

    /// `[tdx]` reference values, typed: each register where it belongs.
    #[test]
    fn tdx_reference_values_parse() {
        let m = |b: u8| hex::encode([b; 48]);
        let text = format!(
            "[tdx]\ncollateral = \"/c\"\nmr_td = [\"{}\", \"{}\"]\nrtmr1 = \"{}\"\nmr_config_id = \"{}\"\n",
            m(1),
            m(2),
            m(3),
            m(4)
        );
        let c = Config::parse(Path::new("x"), &text).unwrap();
        let v = c.tdx.values().unwrap().unwrap();
        assert_eq!(v.mr_td, vec![[1; 48], [2; 48]]);
        assert_eq!(v.rtmr, [None, Some([3; 48]), None, None]);
        assert_eq!(v.mr_config_id, Some([4; 48]));
        assert_eq!(v.mr_owner, None);
        assert_eq!((v.td_attributes, v.xfam), (None, None));
        assert_eq!(Config::default().tdx.values().unwrap(), None);
        let text = format!(
            "[tdx]\nmr_td = [\"{}\"]\ntd_attributes = \"0000001000000000/0100001000000080\"\nxfam = \"E702060000000000\"\n",
            m(1)
        );
        let v = Config::parse(Path::new("x"), &text)
            .unwrap()
            .tdx
            .values()
            .unwrap()
            .unwrap();
        let a = v.td_attributes.unwrap();
        assert_eq!(a.value, [0, 0, 0, 0x10, 0, 0, 0, 0]);
        assert_eq!(a.mask, [1, 0, 0, 0x10, 0, 0, 0, 0x80]);
        assert_eq!(v.xfam.unwrap().value, [0xe7, 2, 6, 0, 0, 0, 0, 0]);
        assert_eq!(v.xfam.unwrap().mask, [0xff; 8], "no mask: every bit compared");
    }

    const KEY_A: &str = "66ed2676291a61c8405337015c4d97a61a293b800eac25437c1ad876bc1471d7";
    const KEY_B: &str = "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c";

    fn remote(url: &str, id: &str, key: &str) -> String {
        format!("[[landmarks]]\nurl = \"{url}\"\nid = \"{id}\"\npublic_key = \"{key}\"\n")
    }

    #[test]
    fn remote_landmarks_parse_and_pin() {
        let text = format!(
            "[landmark]\nid = \"paris-verifier\"\nlat = 48.8566\nlon = 2.3522\n\n{}{}timeout_ms = 1500\n",
            remote("http://10.0.0.2:8450", "fra-1", KEY_A),
            remote("http://lm.example:80/", "ams-1", KEY_B),
        );
        let c = Config::parse(Path::new("x"), &text).unwrap();
        assert_eq!(c.landmarks.len(), 2);
        assert_eq!(c.landmarks[0].timeout_ms, 5000);
        assert_eq!(c.landmarks[1].timeout_ms, 1500);
        let p = c.landmarks[0].pinned().unwrap();
        assert_eq!(p.id, "fra-1");
        assert_eq!(hex::encode(p.key), KEY_A);
        // Round trip through TOML.
        let again = Config::parse(Path::new("x"), &toml::to_string(&c).unwrap()).unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn remote_landmark_refusals_name_the_field() {
        let own = "[landmark]\nid = \"paris-verifier\"\nlat = 48.8566\nlon = 2.3522\n\n";
        for (text, field) in [
            (remote("https://10.0.0.2:8450", "fra-1", KEY_A), "url"),
            (remote("http://10.0.0.2", "fra-1", KEY_A), "url"),
            (remote("http://10.0.0.2:8450/x", "fra-1", KEY_A), "url"),
            (remote("http://10.0.0.2:8450", "", KEY_A), "id"),
            (remote("http://10.0.0.2:8450", &"x".repeat(257), KEY_A), "id"),
            (remote("http://10.0.0.2:8450", "fra-1", "abcd"), "public_key"),
            (
                remote("http://10.0.0.2:8450", "fra-1", &"zz".repeat(32)),
                "public_key",
            ),
            (
                remote("http://10.0.0.2:8450", "fra-1", &format!("{KEY_A}00")),
                "public_key",
            ),
            (
                format!(
                    "{}{}",
                    remote("http://a:1", "fra-1", KEY_A),
                    remote("http://b:1", "fra-1", KEY_B)
                ),
                "id",
            ),
            (
                format!(
                    "{}{}",
                    remote("http://a:1", "fra-1", KEY_A),
                    remote("http://b:1", "ams-1", KEY_A)
                ),
                "public_key",
            ),
            (
                format!("{own}{}", remote("http://a:1", "paris-verifier", KEY_A)),
                "id",
            ),
            (
                format!("{}timeout_ms = 0\n", remote("http://a:1", "fra-1", KEY_A)),
                "timeout_ms",
            ),
            (
                format!("{}timeout_ms = 15001\n", remote("http://a:1", "fra-1", KEY_A)),
                "timeout_ms",
            ),
        ] {
            match Config::parse(Path::new("x"), &text) {
                Err(e @ ConfigError::Landmarks { field: f, .. }) => {
                    assert_eq!(f, field, "{text}: {e}");
                    assert_eq!(e.check(), "config_landmarks");
                }
                other => panic!("{text}: {other:?}"),
            }
        }
        // Unknown keys in an entry are a parse error.
        let extra = format!("{}color = \"red\"\n", remote("http://a:1", "fra-1", KEY_A));
        assert_eq!(
            Config::parse(Path::new("x"), &extra).unwrap_err().check(),
            "config_parse"
        );
    }
}
