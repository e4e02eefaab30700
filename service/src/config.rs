//! `custody-verifier` configuration: one TOML file, every key optional with the default
//! documented here (`custody-verifier config --defaults` prints them).

use serde::{Deserialize, Serialize};
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
}

/// How reference values (golden PCRs) come to exist for a node group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReferenceMode {
    /// The first round of a group whose evidence verifies is trusted and its PCRs become
    /// the group's reference values. Every result says `reference: tofu` so nobody
    /// mistakes it for a provisioned baseline.
    Tofu,
    /// Only values the operator provisioned (`PUT /v1/groups/{group}/reference`) count;
    /// a group without them fails `reference_values`.
    Operator,
}

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
    /// How long the verifier waits for an agent's evidence.
    pub round_timeout_secs: u64,
    /// Consecutive failed rounds after which a failed node is revoked.
    pub revoke_after: u32,
    /// Lifetime of a signed attestation result.
    pub ear_ttl_secs: i64,
    /// Signed checkpoint of the audit log every this many seconds (when it grew).
    pub checkpoint_secs: u64,
    pub reference: ReferenceMode,
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
    /// Event receivers (HTTPS URLs): each state change is POSTed as JSON.
    pub webhooks: Vec<String>,
    /// CA certificates (PEM) webhook receivers' certificates must chain to.
    pub webhook_ca: Option<PathBuf>,
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
            round_timeout_secs: 15,
            revoke_after: 3,
            ear_ttl_secs: 600,
            checkpoint_secs: 60,
            reference: ReferenceMode::Tofu,
            policy: None,
            policy_data: None,
            registry: None,
            registry_authorities: Vec::new(),
            landmark: None,
            webhooks: Vec::new(),
            webhook_ca: None,
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
        if self.revoke_after == 0 {
            return bad("`revoke_after` must be at least 1");
        }
        if self.ear_ttl_secs <= 0 {
            return bad("`ear_ttl_secs` must be positive");
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
        if let Some(u) = self.webhooks.iter().find(|u| !u.starts_with("https://")) {
            return Err(ConfigError::Invalid(format!(
                "webhook `{u}` is not an https:// URL"
            )));
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
             # [landmark]\n# id = \"paris-verifier\"\n# lat = 48.8566\n# lon = 2.3522\n# probes = 8\n",
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
            "revoke_after = 0",
            "webhooks = [\"http://plain\"]",
            "reference = \"maybe\"",
            "registry = \"/r.cose\"",
            "[landmark]\nid = \"x\"\nlat = 91.0\nlon = 0.0",
            "[landmark]\nid = \"x\"\nlat = 1.0\nlon = 0.0\nprobes = 0",
        ] {
            assert!(Config::parse(Path::new("x"), bad).is_err(), "{bad}");
        }
    }
}
