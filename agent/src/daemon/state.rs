//! The state directory: its files, the agent's TLS key, the enrolled node's identity and
//! the pinned verifier key.

use super::*;

pub(super) fn state_err(path: &Path, e: impl fmt::Display) -> DaemonError {
    DaemonError::State {
        path: path.to_owned(),
        reason: e.to_string(),
    }
}

/// Create the state directory (mode 0700) if needed.
pub fn ensure_state_dir(dir: &Path) -> Result<(), DaemonError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| state_err(dir, e))
}

/// Write `name` in `dir` atomically (temporary file, fsync, rename) with `mode`.
pub(super) fn write_state_file(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> Result<(), DaemonError> {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    // A leftover from a crash would make create_new fail.
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| state_err(&tmp, e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| state_err(&tmp, e))?;
    drop(f);
    std::fs::rename(&tmp, &path).map_err(|e| state_err(&path, e))
}

pub(super) fn read_state_file(path: &Path) -> Result<String, DaemonError> {
    let meta = std::fs::metadata(path).map_err(|e| state_err(path, e))?;
    if meta.len() > MAX_STATE_FILE {
        return Err(state_err(path, format!("larger than {MAX_STATE_FILE} bytes")));
    }
    std::fs::read_to_string(path).map_err(|e| state_err(path, e))
}

// ---------------------------------------------------------------------------------------
// TLS key

/// The agent's TLS key (P-256). `Debug` shows the public key only.
#[derive(Clone)]
pub struct TlsKey {
    pem: String,
    spki: Vec<u8>,
}

impl fmt::Debug for TlsKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsKey")
            .field("spki_len", &self.spki.len())
            .finish_non_exhaustive()
    }
}

impl TlsKey {
    /// `state_dir/tls-key.pem`, generated (mode 0600) if absent. An existing key readable
    /// by group or others is refused rather than used.
    pub fn load_or_generate(state_dir: &Path) -> Result<Self, DaemonError> {
        let path = state_dir.join(TLS_KEY_FILE);
        let err = |reason: String| DaemonError::TlsKey {
            path: path.clone(),
            reason,
        };
        match std::fs::metadata(&path) {
            Ok(meta) => {
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    return Err(err(format!(
                        "mode is {mode:04o}; the key must be readable by its owner only (0600)"
                    )));
                }
                let pem = read_state_file(&path)?;
                let kp = rcgen::KeyPair::from_pem(&pem).map_err(|e| err(e.to_string()))?;
                if kp.algorithm() != &rcgen::PKCS_ECDSA_P256_SHA256 {
                    return Err(err("not a P-256 key".into()));
                }
                Ok(Self {
                    spki: kp.subject_public_key_info(),
                    pem,
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                ensure_state_dir(state_dir)?;
                let kp = rcgen::KeyPair::generate().map_err(|e| err(e.to_string()))?;
                let pem = kp.serialize_pem();
                write_state_file(state_dir, TLS_KEY_FILE, pem.as_bytes(), 0o600)?;
                tracing::info!(path = %path.display(), "generated the TLS key");
                Ok(Self {
                    spki: kp.subject_public_key_info(),
                    pem,
                })
            }
            Err(e) => Err(err(e.to_string())),
        }
    }

    /// SubjectPublicKeyInfo, DER: what the node certificate must carry.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki
    }
}

// ---------------------------------------------------------------------------------------
// Node identity

/// An enrolled node: its id, its certificate for the TLS key, and the verifier CA.
#[derive(Clone)]
pub struct NodeIdentity {
    pub node_id: String,
    /// Node certificate, PEM.
    pub certificate_pem: String,
    /// Verifier CA, PEM: the only roots for mTLS peers.
    pub ca_pem: String,
    /// The verifier's result key (SEC1 P-256) from this enrollment: checks move tickets.
    /// For an identity loaded from the state directory: the pinned key, if any.
    pub verifier_key: Vec<u8>,
    pub(super) key: TlsKey,
}

impl fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeIdentity")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

pub(super) fn valid_node_id(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'))
}

impl NodeIdentity {
    /// Check that the certificate is for `key` and the CA parses.
    pub fn new(
        node_id: String,
        certificate_pem: String,
        ca_pem: String,
        key: TlsKey,
    ) -> Result<Self, DaemonError> {
        if !valid_node_id(&node_id) {
            return Err(DaemonError::NodeCert(format!(
                "node id {node_id:?} is not 1-128 characters of A-Z a-z 0-9 . _ - :"
            )));
        }
        let chain = custody_net::certs_from_pem(certificate_pem.as_bytes())
            .map_err(|e| DaemonError::NodeCert(e.to_string()))?;
        let leaf = chain
            .first()
            .ok_or_else(|| DaemonError::NodeCert("no certificate".into()))?;
        let (_, cert) = x509_parser::parse_x509_certificate(leaf)
            .map_err(|e| DaemonError::NodeCert(format!("not X.509: {e}")))?;
        if cert.public_key().raw != key.spki_der() {
            return Err(DaemonError::NodeCert(
                "the certificate is not for this agent's TLS key".into(),
            ));
        }
        custody_net::roots_from_pem(ca_pem.as_bytes())
            .map_err(|e| DaemonError::NodeCert(format!("CA: {e}")))?;
        Ok(Self {
            node_id,
            certificate_pem,
            ca_pem,
            verifier_key: Vec::new(),
            key,
        })
    }

    /// The identity a previous enrollment stored in `state_dir`.
    pub fn load(state_dir: &Path) -> Result<Self, DaemonError> {
        let key = TlsKey::load_or_generate(state_dir)?;
        let node_id = read_state_file(&state_dir.join(NODE_ID_FILE))?.trim().to_owned();
        let cert = read_state_file(&state_dir.join(NODE_CERT_FILE))?;
        let ca = read_state_file(&state_dir.join(CA_FILE))?;
        let mut id = Self::new(node_id, cert, ca, key)?;
        id.verifier_key = stored_verifier_key(state_dir)?.unwrap_or_default();
        Ok(id)
    }

    /// Store the certificate, CA and node id in `state_dir` (the key is already there).
    pub fn store(&self, state_dir: &Path) -> Result<(), DaemonError> {
        ensure_state_dir(state_dir)?;
        write_state_file(state_dir, NODE_CERT_FILE, self.certificate_pem.as_bytes(), 0o644)?;
        write_state_file(state_dir, CA_FILE, self.ca_pem.as_bytes(), 0o644)?;
        write_state_file(
            state_dir,
            NODE_ID_FILE,
            format!("{}\n", self.node_id).as_bytes(),
            0o644,
        )
    }

    /// Node certificate and TLS key for rustls.
    pub fn tls_identity(&self) -> Result<Identity, DaemonError> {
        Identity::from_pem(self.certificate_pem.as_bytes(), self.key.pem.as_bytes()).map_err(DaemonError::Tls)
    }

    /// The round endpoint's TLS: this node's certificate, client certificates required
    /// and verified against the verifier CA only.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, DaemonError> {
        let roots = custody_net::roots_from_pem(self.ca_pem.as_bytes()).map_err(DaemonError::Tls)?;
        custody_net::server_config(self.tls_identity()?, ClientAuth::Required(roots))
            .map_err(DaemonError::Tls)
    }

    /// [`Self::server_config`] serving whatever certificate `tls` holds now (renewals
    /// replace it).
    pub fn reloadable_server_config(
        &self,
        tls: Arc<ReloadableIdentity>,
    ) -> Result<Arc<rustls::ServerConfig>, DaemonError> {
        let roots = custody_net::roots_from_pem(self.ca_pem.as_bytes()).map_err(DaemonError::Tls)?;
        custody_net::server_config_with(ServerCert::Reloadable(tls), ClientAuth::Required(roots))
            .map_err(DaemonError::Tls)
    }

    /// When to renew: half way through the certificate's validity (now, if past it).
    pub fn renew_in(&self) -> Result<Duration, DaemonError> {
        let der = custody_net::certs_from_pem(self.certificate_pem.as_bytes())
            .map_err(|e| DaemonError::NodeCert(e.to_string()))?;
        let leaf = der
            .first()
            .ok_or_else(|| DaemonError::NodeCert("no certificate".into()))?;
        let (_, c) = x509_parser::parse_x509_certificate(leaf)
            .map_err(|e| DaemonError::NodeCert(format!("not X.509: {e}")))?;
        let (nb, na) = (
            c.validity().not_before.timestamp(),
            c.validity().not_after.timestamp(),
        );
        let half = nb.saturating_add(na.saturating_sub(nb) / 2);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        Ok(Duration::from_secs(
            u64::try_from(half.saturating_sub(now)).unwrap_or(0),
        ))
    }
}

pub(super) fn stored_verifier_key(state_dir: &Path) -> Result<Option<Vec<u8>>, DaemonError> {
    let path = state_dir.join(VERIFIER_KEY_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let text = read_state_file(&path)?;
    hex::decode(text.trim())
        .map(Some)
        .map_err(|e| state_err(&path, format!("not hex: {e}")))
}

/// The verifier result key this enrollment may accept: the configured pin, else the one
/// stored at the first enrollment (stored now when there is none). A different key is
/// refused, never taken silently: it checks every move ticket.
pub(super) fn pin_verifier_key(cfg: &AgentConfig, got: &[u8]) -> Result<(), DaemonError> {
    let (want, pinned_by) = match cfg.pinned_verifier_key()? {
        Some(k) => (k, "in agent.toml (`verifier_key`)"),
        None => match stored_verifier_key(&cfg.state_dir)? {
            Some(k) => (k, "in the state directory at the first enrollment"),
            None => {
                if !got.is_empty() {
                    ensure_state_dir(&cfg.state_dir)?;
                    write_state_file(
                        &cfg.state_dir,
                        VERIFIER_KEY_FILE,
                        format!("{}\n", hex::encode(got)).as_bytes(),
                        0o644,
                    )?;
                }
                return Ok(());
            }
        },
    };
    if want != got {
        return Err(DaemonError::VerifierKeyMismatch { pinned_by });
    }
    Ok(())
}
