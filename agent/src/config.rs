//! `custody-agent` configuration: one TOML file, every key optional except `verifier_ca`
//! (the agent trusts no CA by default). Unknown keys are refused so a typo cannot silently
//! fall back to a default. `docs/agent.toml` documents every key.

use crate::tpm::{TpmConfig, TpmConfigError, DEFAULT_EVENT_LOG, DEFAULT_TCTI};
use custody_formats::alg::HashAlg;
use custody_formats::tpm::PcrSelection;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;
use thiserror::Error;

/// Default round endpoint listen address.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8443";
/// Default verifier base URL.
pub const DEFAULT_VERIFIER_URL: &str = "https://127.0.0.1:8442";
/// Default state directory (TLS key, node certificate, pinned CA, node id).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/custody-agent";
/// Default checkpoint store.
pub const DEFAULT_CHECKPOINTS_DIR: &str = "/var/lib/custody-agent/checkpoints";
/// Default bound on one attestation round.
pub const DEFAULT_ROUND_TIMEOUT_SECS: u64 = 30;
/// Longest round timeout accepted.
pub const MAX_ROUND_TIMEOUT_SECS: u64 = 600;
/// Largest configuration file read.
const MAX_CONFIG_LEN: u64 = 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("config is not valid TOML for the agent: {0}")]
    Parse(String),
    #[error(
        "`verifier_ca` is required: the PEM file of the verifier's CA (the agent trusts no CA by default)"
    )]
    MissingVerifierCa,
    #[error("`name` {0:?} must be 1-64 characters of A-Z a-z 0-9 . _ -")]
    Name(String),
    #[error("`listen` {value:?} is not an IP socket address (ip:port): {reason}")]
    Listen { value: String, reason: String },
    #[error("`endpoint` {value:?} must be host:port with a port 1-65535")]
    Endpoint { value: String },
    #[error("`verifier_url` {value:?}: {reason}")]
    VerifierUrl { value: String, reason: String },
    #[error("`tpm.pcrs` entry {value:?}: {reason} (expected e.g. \"sha256:0,1,2,3,4,5,6,7,14\")")]
    Pcrs { value: String, reason: String },
    #[error("`tpm`: {0}")]
    Tpm(#[from] TpmConfigError),
    #[error("`tpm.ak_handle` {0:?} is not a persistent handle (hex, 0x81000000-0x81FFFFFF)")]
    AkHandle(String),
    #[error("`collectors.tpm` cannot be false: enrollment proves the node by TPM credential activation")]
    TpmRequired,
    #[error("`round_timeout_secs` {0} must be 1-{MAX_ROUND_TIMEOUT_SECS}")]
    RoundTimeout(u64),
    #[error("`locality_listen` {value:?} is not an IP socket address (ip:port): {reason}")]
    LocalityListen { value: String, reason: String },
    #[error("`locality_delay_ms` {0} must be 0-1000")]
    LocalityDelay(u64),
    #[error("`move_listen` {value:?} is not an IP socket address (ip:port): {reason}")]
    MoveListen { value: String, reason: String },
    #[error("`verifier_key` must be the verifier's result key as 130 hex digits (SEC1 uncompressed P-256, `04...`)")]
    VerifierKey,
}

/// The agent's configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Node name, unique per verifier (default: `/etc/hostname`, else `node`).
    pub name: String,
    /// Where the round endpoint listens (default `0.0.0.0:8443`).
    pub listen: String,
    /// What the verifier dials, `host:port` (default: `listen`, with 127.0.0.1 for an
    /// unspecified address: set it on any multi-host deployment).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Verifier base URL, `https://` only (default `https://127.0.0.1:8442`).
    pub verifier_url: String,
    /// PEM file of the verifier CA: the only CA trusted for enrollment and for mTLS peers.
    /// Required.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verifier_ca: Option<PathBuf>,
    /// The verifier's result-signing key (SEC1 uncompressed P-256, hex) this agent accepts
    /// tickets from. Unset: the key of the first enrollment is pinned in the state
    /// directory. Either way an enrollment that brings another key is refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verifier_key: Option<String>,
    /// Where the TLS key, node certificate, pinned CA and node id live
    /// (default `/var/lib/custody-agent`).
    pub state_dir: PathBuf,
    pub tpm: TpmSection,
    pub collectors: CollectorsSection,
    /// `[azure]`: the certificates an Azure CVM's HCL report verifies under.
    pub azure: AzureSection,
    /// Upper bound on one attestation round, seconds (default 30, at most 600).
    pub round_timeout_secs: u64,
    /// Where the locality responder (docs/locality.md) listens, `ip:port`; off when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locality_listen: Option<String>,
    /// Milliseconds the locality responder waits before each answer (default 0, at most
    /// 1000): demos and tests simulate distance with it. A delay only makes the node look
    /// farther, never nearer.
    pub locality_delay_ms: u64,
    /// Where other agents deliver checkpoint moves (docs/migration-protocol.md), `ip:port`;
    /// off when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub move_listen: Option<String>,
    /// The agent's checkpoint store: jobs it sends are `<checkpoints_dir>/<checkpoint>`,
    /// jobs it receives arrive as `<checkpoints_dir>/<job>` (default
    /// `/var/lib/custody-agent/checkpoints`).
    pub checkpoints_dir: PathBuf,
    /// Local admin socket (mode 0600, inside a directory of mode 0700 the agent creates or
    /// that must already be its own and closed to others) for `custody import FILE`: air-gapped moves are
    /// opened with this boot's session key, so they go through the agent; off when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_socket: Option<PathBuf>,
}

/// `[tpm]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TpmSection {
    /// tpm2-tss TCTI (default `device:/dev/tpmrm0`).
    pub tcti: String,
    /// One entry per bank, `bank:pcr,pcr,...` (default `["sha256:0,1,2,3,4,5,6,7,14"]`).
    pub pcrs: Vec<String>,
    /// Measured-boot event log, carried when the file exists; `""` carries none
    /// (default: the securityfs log).
    pub event_log: PathBuf,
    /// A key persisted in the TPM to use as the AK (hex, `0x81000003` on an Azure CVM:
    /// the paravisor's key its HCL report names); unset: the agent creates its own AK.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ak_handle: Option<String>,
}

/// `[azure]`: files the operator's provisioning writes from Azure's instance metadata
/// service (`/metadata/THIM/amd/certification`): the agent makes no network requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AzureSection {
    /// The VCEK of the CVM's SEV-SNP report (PEM or DER).
    pub vcek: PathBuf,
    /// The ASK and ARK (PEM); the verifier's built-in roots otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_chain: Option<PathBuf>,
    /// A TDX CVM: the TD quote of the HCL report's TDREPORT (IMDS `/acc/tdquote`), sent
    /// instead of the VCEK.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub td_quote: Option<PathBuf>,
}

impl Default for AzureSection {
    fn default() -> Self {
        Self {
            vcek: PathBuf::from("/etc/custody/azure/vcek.pem"),
            ca_chain: None,
            td_quote: None,
        }
    }
}

/// `[collectors]`: which evidence sources to use. A source enabled but absent on this
/// node is reported in the bundle (`unavailable.<kind>`), not an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CollectorsSection {
    pub tpm: bool,
    pub snp: bool,
    /// Intel TDX quotes through configfs-tsm.
    pub tdx: bool,
    /// An Azure CVM's HCL report from the vTPM (off by default: it needs `[tpm]
    /// ak_handle` and `[azure] vcek`).
    pub azure: bool,
    pub nvml: bool,
}

/// An optional `ip:port` setting, parsed; `err(value, reason)` names the key.
fn optional_addr(
    value: Option<&str>,
    err: impl Fn(String, String) -> ConfigError,
) -> Result<Option<SocketAddr>, ConfigError> {
    value
        .map(|v| {
            v.parse()
                .map_err(|e: std::net::AddrParseError| err(v.to_owned(), e.to_string()))
        })
        .transpose()
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            name: default_name(),
            listen: DEFAULT_LISTEN.into(),
            endpoint: None,
            verifier_url: DEFAULT_VERIFIER_URL.into(),
            verifier_ca: None,
            verifier_key: None,
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            tpm: TpmSection::default(),
            collectors: CollectorsSection::default(),
            azure: AzureSection::default(),
            round_timeout_secs: DEFAULT_ROUND_TIMEOUT_SECS,
            locality_listen: None,
            locality_delay_ms: 0,
            move_listen: None,
            checkpoints_dir: PathBuf::from(DEFAULT_CHECKPOINTS_DIR),
            admin_socket: None,
        }
    }
}

impl Default for TpmSection {
    fn default() -> Self {
        Self {
            tcti: DEFAULT_TCTI.into(),
            pcrs: vec!["sha256:0,1,2,3,4,5,6,7,14".into()],
            event_log: PathBuf::from(DEFAULT_EVENT_LOG),
            ak_handle: None,
        }
    }
}

impl Default for CollectorsSection {
    fn default() -> Self {
        Self {
            tpm: true,
            snp: true,
            tdx: true,
            azure: false,
            nvml: true,
        }
    }
}

/// The host name from `/etc/hostname` when it is a valid node name, else `node`.
fn default_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| valid_name(s))
        .unwrap_or_else(|| "node".into())
}

fn valid_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl AgentConfig {
    /// Parse and validate a TOML document.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let cfg: Self = toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Read, parse and validate a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let read_err = |reason: String| ConfigError::Read {
            path: path.to_owned(),
            reason,
        };
        let meta = std::fs::metadata(path).map_err(|e| read_err(e.to_string()))?;
        if meta.len() > MAX_CONFIG_LEN {
            return Err(read_err(format!("larger than {MAX_CONFIG_LEN} bytes")));
        }
        let text = std::fs::read_to_string(path).map_err(|e| read_err(e.to_string()))?;
        Self::from_toml(&text)
    }

    /// The defaults as TOML (without `verifier_ca`, which has none).
    pub fn defaults_toml() -> Result<String, ConfigError> {
        toml::to_string(&Self::default()).map_err(|e| ConfigError::Parse(e.to_string()))
    }

    /// Every check the agent would otherwise fail on later, at load time.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !valid_name(&self.name) {
            return Err(ConfigError::Name(self.name.clone()));
        }
        self.listen_addr()?;
        self.endpoint()?;
        self.verifier_base_url()?;
        self.verifier_ca_path()?;
        self.pinned_verifier_key()?;
        self.persistent_ak()?;
        if !self.collectors.tpm {
            return Err(ConfigError::TpmRequired);
        }
        // Builds the collector's own validation too (banks, PCR range, TCTI syntax).
        crate::tpm::TpmCollector::new(self.tpm_config()?)?;
        self.round_timeout()?;
        self.locality_listen_addr()?;
        if self.locality_delay_ms > 1000 {
            return Err(ConfigError::LocalityDelay(self.locality_delay_ms));
        }
        self.move_listen_addr()?;
        Ok(())
    }

    /// The operator-pinned verifier result key (SEC1 bytes), if configured.
    pub fn pinned_verifier_key(&self) -> Result<Option<Vec<u8>>, ConfigError> {
        let Some(h) = &self.verifier_key else {
            return Ok(None);
        };
        match hex::decode(h.trim()) {
            Ok(k) if k.len() == 65 && k.first() == Some(&4) => Ok(Some(k)),
            _ => Err(ConfigError::VerifierKey),
        }
    }

    /// The locality responder's address, if enabled.
    pub fn locality_listen_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        optional_addr(self.locality_listen.as_deref(), |value, reason| {
            ConfigError::LocalityListen { value, reason }
        })
    }

    /// The move receiver's address, if enabled.
    pub fn move_listen_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        optional_addr(self.move_listen.as_deref(), |value, reason| {
            ConfigError::MoveListen { value, reason }
        })
    }

    /// Where other agents deliver moves, sent at enrollment (host of [`Self::endpoint`],
    /// port of `move_listen`); `None` when off.
    pub fn move_endpoint(&self) -> Result<Option<String>, ConfigError> {
        self.move_listen_addr()?
            .map(|a| self.endpoint_with_port(a.port()))
            .transpose()
    }

    /// The host of [`Self::endpoint`] with another port.
    fn endpoint_with_port(&self, port: u16) -> Result<String, ConfigError> {
        let endpoint = self.endpoint()?;
        let host = endpoint.rsplit_once(':').map_or(endpoint.as_str(), |(h, _)| h);
        Ok(format!("{host}:{port}"))
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.listen
            .parse()
            .map_err(|e: std::net::AddrParseError| ConfigError::Listen {
                value: self.listen.clone(),
                reason: e.to_string(),
            })
    }

    /// Where landmarks reach the locality responder, sent at enrollment: the host of
    /// [`Self::endpoint`] with the port of `locality_listen`; `None` when it is off.
    pub fn locality_endpoint(&self) -> Result<Option<String>, ConfigError> {
        self.locality_listen_addr()?
            .map(|a| self.endpoint_with_port(a.port()))
            .transpose()
    }

    /// The endpoint sent at enrollment: the configured one, else `listen` with 127.0.0.1
    /// in place of an unspecified address.
    pub fn endpoint(&self) -> Result<String, ConfigError> {
        match &self.endpoint {
            Some(e) => {
                let bad = || ConfigError::Endpoint { value: e.clone() };
                let (host, port) = e.rsplit_once(':').ok_or_else(bad)?;
                let port_ok = port.parse::<u16>().is_ok_and(|p| p != 0);
                let host_ok = !host.is_empty()
                    && host.len() <= 253
                    && host
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'[' | b']' | b':'));
                if !port_ok || !host_ok {
                    return Err(bad());
                }
                Ok(e.clone())
            }
            None => {
                let mut a = self.listen_addr()?;
                if a.ip().is_unspecified() {
                    a.set_ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
                }
                Ok(a.to_string())
            }
        }
    }

    /// `verifier_url` without a trailing slash; `https://` only.
    pub fn verifier_base_url(&self) -> Result<String, ConfigError> {
        let bad = |reason: &str| ConfigError::VerifierUrl {
            value: self.verifier_url.clone(),
            reason: reason.into(),
        };
        let rest = self
            .verifier_url
            .strip_prefix("https://")
            .ok_or_else(|| bad("must start with https://"))?;
        let rest = rest.trim_end_matches('/');
        if rest.is_empty() {
            return Err(bad("has no host"));
        }
        if rest.contains(['?', '#', '@']) || rest.chars().any(char::is_whitespace) {
            return Err(bad("must be a plain https://host[:port][/path] base URL"));
        }
        Ok(format!("https://{rest}"))
    }

    pub fn verifier_ca_path(&self) -> Result<&Path, ConfigError> {
        match &self.verifier_ca {
            Some(p) if !p.as_os_str().is_empty() => Ok(p),
            _ => Err(ConfigError::MissingVerifierCa),
        }
    }

    /// The TPM collector's configuration.
    pub fn tpm_config(&self) -> Result<TpmConfig, ConfigError> {
        let pcrs = self
            .tpm
            .pcrs
            .iter()
            .map(|s| parse_pcrs(s))
            .collect::<Result<Vec<_>, _>>()?;
        let event_log = if self.tpm.event_log.as_os_str().is_empty() {
            None
        } else {
            Some(self.tpm.event_log.clone())
        };
        Ok(TpmConfig {
            tcti: self.tpm.tcti.clone(),
            pcrs,
            event_log,
        })
    }

    /// `[tpm] ak_handle`, parsed: a persistent handle (0x81000000-0x81FFFFFF).
    pub fn persistent_ak(&self) -> Result<Option<u32>, ConfigError> {
        self.tpm
            .ak_handle
            .as_deref()
            .map(|h| {
                u32::from_str_radix(h.trim_start_matches("0x"), 16)
                    .ok()
                    .filter(|v| (0x8100_0000..=0x81FF_FFFF).contains(v))
                    .ok_or_else(|| ConfigError::AkHandle(h.to_owned()))
            })
            .transpose()
    }

    pub fn round_timeout(&self) -> Result<Duration, ConfigError> {
        if !(1..=MAX_ROUND_TIMEOUT_SECS).contains(&self.round_timeout_secs) {
            return Err(ConfigError::RoundTimeout(self.round_timeout_secs));
        }
        Ok(Duration::from_secs(self.round_timeout_secs))
    }
}

/// `sha256:0,1,2` -> one bank's selection. Order and duplicates are checked by the TPM
/// collector's own validation.
pub fn parse_pcrs(s: &str) -> Result<PcrSelection, ConfigError> {
    let bad = |reason: &str| ConfigError::Pcrs {
        value: s.to_owned(),
        reason: reason.into(),
    };
    let (bank, list) = s.split_once(':').ok_or_else(|| bad("no `bank:` prefix"))?;
    let bank = HashAlg::ALL
        .into_iter()
        .find(|h| h.name() == bank.trim())
        .ok_or_else(|| bad("unknown bank (sha1, sha256, sha384, sha512)"))?;
    let pcrs = list
        .split(',')
        .map(|p| {
            p.trim()
                .parse::<u32>()
                .map_err(|_| bad("PCR indices must be decimal numbers"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(PcrSelection { bank, pcrs })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let c = AgentConfig::default();
        assert_eq!(c.listen, "0.0.0.0:8443");
        assert_eq!(c.endpoint().unwrap(), "127.0.0.1:8443");
        assert_eq!(c.verifier_base_url().unwrap(), "https://127.0.0.1:8442");
        assert_eq!(c.state_dir, PathBuf::from("/var/lib/custody-agent"));
        assert_eq!(c.round_timeout().unwrap(), Duration::from_secs(30));
        assert!(c.collectors.tpm && c.collectors.snp && c.collectors.nvml);
        assert!(valid_name(&c.name), "{}", c.name);
        let t = c.tpm_config().unwrap();
        assert_eq!(t, TpmConfig::default());
        // No default trust: the defaults alone do not validate.
        assert_eq!(c.validate().unwrap_err(), ConfigError::MissingVerifierCa);
        assert_eq!(
            AgentConfig::from_toml("").unwrap_err(),
            ConfigError::MissingVerifierCa
        );
        // With the CA, an almost empty file is the defaults.
        let c2 = AgentConfig::from_toml("verifier_ca = \"/etc/custody/ca.pem\"").unwrap();
        assert_eq!(
            c2,
            AgentConfig {
                verifier_ca: Some("/etc/custody/ca.pem".into()),
                ..AgentConfig::default()
            }
        );
        // The printed defaults parse back to the defaults.
        let text = AgentConfig::defaults_toml().unwrap();
        let back: AgentConfig = toml::from_str(&text).unwrap();
        assert_eq!(back, AgentConfig::default());
    }

    /// The documented example is the defaults plus the required CA, and names every key.
    #[test]
    fn documented_example_is_the_defaults() {
        let text = include_str!("../../docs/agent.toml");
        let c = AgentConfig::from_toml(text).unwrap();
        assert_eq!(
            c,
            AgentConfig {
                verifier_ca: Some("/etc/custody/verifier-ca.pem".into()),
                ..AgentConfig::default()
            }
        );
        for key in [
            "name =",
            "listen =",
            "endpoint =",
            "verifier_url =",
            "verifier_ca =",
            "state_dir =",
            "round_timeout_secs =",
            "locality_listen =",
            "move_listen =",
            "checkpoints_dir =",
            "admin_socket =",
            "[tpm]",
            "tcti =",
            "pcrs =",
            "event_log =",
            "[collectors]",
            "tpm =",
            "snp =",
            "tdx =",
            "azure =",
            "nvml =",
            "ak_handle =",
            "[azure]",
            "vcek =",
            "ca_chain =",
            "td_quote =",
        ] {
            assert!(text.contains(key), "{key}");
        }
    }

    #[test]
    fn full_file() {
        let c = AgentConfig::from_toml(
            r#"
            name = "gpu-node-7"
            listen = "[::]:9443"
            endpoint = "gpu-node-7.example.net:9443"
            verifier_url = "https://verifier.example.net:8442/"
            verifier_ca = "/etc/custody/verifier-ca.pem"
            state_dir = "/tmp/agent"
            round_timeout_secs = 45

            [tpm]
            tcti = "swtpm:host=127.0.0.1,port=2321"
            pcrs = ["sha256:0,1,2,3,4,5,6,7", "sha1:0"]
            event_log = ""

            [collectors]
            tpm = true
            snp = false
            nvml = false
            "#,
        )
        .unwrap();
        assert_eq!(c.name, "gpu-node-7");
        assert_eq!(c.listen_addr().unwrap().port(), 9443);
        assert_eq!(c.endpoint().unwrap(), "gpu-node-7.example.net:9443");
        assert_eq!(
            c.verifier_base_url().unwrap(),
            "https://verifier.example.net:8442"
        );
        assert_eq!(c.round_timeout().unwrap(), Duration::from_secs(45));
        assert!(!c.collectors.snp && !c.collectors.nvml);
        let t = c.tpm_config().unwrap();
        assert_eq!(t.tcti, "swtpm:host=127.0.0.1,port=2321");
        assert_eq!(t.event_log, None);
        assert_eq!(
            t.pcrs,
            vec![
                PcrSelection {
                    bank: HashAlg::Sha256,
                    pcrs: (0..8).collect()
                },
                PcrSelection {
                    bank: HashAlg::Sha1,
                    pcrs: vec![0]
                }
            ]
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        for text in [
            "verifier_ca = \"/ca.pem\"\nverifer_url = \"https://x\"",
            "verifier_ca = \"/ca.pem\"\n[tpm]\npcr = [\"sha256:0\"]",
            "verifier_ca = \"/ca.pem\"\n[collectors]\ngpu = true",
            "verifier_ca = \"/ca.pem\"\n[extra]\n",
        ] {
            match AgentConfig::from_toml(text) {
                Err(ConfigError::Parse(m)) => assert!(m.contains("unknown field"), "{m}"),
                other => panic!("{text}: expected a parse error, got {other:?}"),
            }
        }
    }

    #[test]
    fn bad_values_are_refused() {
        let with = |extra: &str| AgentConfig::from_toml(&format!("verifier_ca = \"/ca.pem\"\n{extra}"));
        for p in [
            "sha256",
            "sha256:",
            "sha256:0,x",
            "md5:0",
            "sha256:-1",
            "sha256:0;1",
        ] {
            assert!(
                matches!(
                    with(&format!("[tpm]\npcrs = [\"{p}\"]")),
                    Err(ConfigError::Pcrs { .. })
                ),
                "{p}"
            );
        }
        // Range, order and duplicate banks: the TPM collector's checks.
        for p in [
            "[\"sha256:0,24\"]",
            "[\"sha256:3,2\"]",
            "[\"sha256:0\", \"sha256:1\"]",
            "[]",
        ] {
            assert!(
                matches!(with(&format!("[tpm]\npcrs = {p}")), Err(ConfigError::Tpm(_))),
                "{p}"
            );
        }
        for h in ["0x01400001", "81000003x", "0x82000000", ""] {
            assert!(
                matches!(
                    with(&format!("[tpm]\nak_handle = \"{h}\"")),
                    Err(ConfigError::AkHandle(_))
                ),
                "{h}"
            );
        }
        assert_eq!(
            with("[tpm]\nak_handle = \"0x81000003\"")
                .unwrap()
                .persistent_ak()
                .unwrap(),
            Some(0x8100_0003)
        );
        assert!(matches!(
            with("[tpm]\ntcti = \"bogus:x\""),
            Err(ConfigError::Tpm(TpmConfigError::Tcti { .. }))
        ));
        assert!(matches!(with("name = \"a b\""), Err(ConfigError::Name(_))));
        assert!(matches!(with("name = \"\""), Err(ConfigError::Name(_))));
        assert!(matches!(
            with("listen = \"localhost:8443\""),
            Err(ConfigError::Listen { .. })
        ));
        assert!(matches!(
            with("endpoint = \"host-without-port\""),
            Err(ConfigError::Endpoint { .. })
        ));
        assert!(matches!(
            with("endpoint = \"host:0\""),
            Err(ConfigError::Endpoint { .. })
        ));
        assert!(matches!(
            with("verifier_url = \"http://127.0.0.1:8442\""),
            Err(ConfigError::VerifierUrl { .. })
        ));
        assert!(matches!(
            with("verifier_url = \"https://\""),
            Err(ConfigError::VerifierUrl { .. })
        ));
        assert_eq!(
            with("[collectors]\ntpm = false").unwrap_err(),
            ConfigError::TpmRequired
        );
        assert_eq!(
            with("round_timeout_secs = 0").unwrap_err(),
            ConfigError::RoundTimeout(0)
        );
        assert_eq!(
            with("locality_listen = \"0.0.0.0:8444\"\nendpoint = \"node-7.example:9443\"")
                .unwrap()
                .locality_endpoint()
                .unwrap()
                .as_deref(),
            Some("node-7.example:8444")
        );
        assert_eq!(with("").unwrap().locality_endpoint().unwrap(), None);
        assert!(matches!(
            with("locality_listen = \"localhost:8444\""),
            Err(ConfigError::LocalityListen { .. })
        ));
        assert_eq!(
            with("locality_listen = \"10.0.0.7:8444\"")
                .unwrap()
                .locality_listen_addr()
                .unwrap(),
            Some("10.0.0.7:8444".parse().unwrap())
        );
        assert_eq!(
            AgentConfig::from_toml("verifier_ca = \"\"").unwrap_err(),
            ConfigError::MissingVerifierCa
        );
        // Wrong types are parse errors, not silently defaulted.
        assert!(matches!(
            with("round_timeout_secs = \"30\""),
            Err(ConfigError::Parse(_))
        ));
    }
}
