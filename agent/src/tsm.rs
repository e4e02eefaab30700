//! The Intel TDX collector (kind `tdx`), through Linux's configfs-tsm report interface
//! (`/sys/kernel/config/tsm/report`, kernel 6.7+): plain file reads and writes, no ioctl,
//! no `unsafe`, no library.
//!
//! One request is one directory: `mkdir` an entry, read its `provider` (the kernel's TSM
//! driver: `tdx_guest` in a TD), write the 64-byte `inblob` (`binding || 32 zero bytes`,
//! as for SNP), read the `outblob` (the kernel has the quoting enclave sign it), and
//! `rmdir` the entry. The entry's `generation` counts writes to it: read before and after
//! the `outblob`, a change means another writer raced this request, and the quote is not
//! trusted to carry this round's binding.
//!
//! Outside a TD there is no `tsm/report` directory, or its provider is not `tdx_guest`
//! (an SEV-SNP guest's is `sev_guest`; that kind is collected through `/dev/sev-guest` by
//! the `snp` collector): [`CollectError::NotAvailable`]. The quote is parsed before it is
//! sent, and its REPORT_DATA must be the binding, so a driver that answers something
//! else fails here, naming why, rather than at the verifier.

use crate::collector::{CollectError, Collector, Evidence};
use custody_formats::binding::Binding;
use custody_formats::bundle::{TdxEvidence, MAX_TDX_QUOTE_LEN};
use custody_formats::tdx::TdxQuote;
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

const KIND: &str = "tdx";

/// Where configfs-tsm serves report requests.
pub const TSM_REPORT_DIR: &str = "/sys/kernel/config/tsm/report";

/// The provider name of the TDX guest driver.
pub const TDX_PROVIDER: &str = "tdx_guest";

/// Requests TDX quotes through configfs-tsm.
#[derive(Debug)]
pub struct TsmCollector {
    root: PathBuf,
    next: AtomicU64,
}

impl Default for TsmCollector {
    fn default() -> Self {
        Self::new()
    }
}

impl TsmCollector {
    pub fn new() -> Self {
        Self::with_root(TSM_REPORT_DIR)
    }

    /// Another report directory (tests).
    pub fn with_root(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            next: AtomicU64::new(0),
        }
    }
}

fn failed(reason: String) -> CollectError {
    CollectError::Failed { kind: KIND, reason }
}

/// Removes the request's entry however the request ends (configfs keeps it otherwise).
struct Entry(PathBuf);

impl Drop for Entry {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir(&self.0) {
            tracing::debug!(entry = %self.0.display(), error = %e, "configfs-tsm entry not removed");
        }
    }
}

/// Read at most `limit` bytes of `path`; more is an error (the kernel's files are small).
fn read_bounded(path: &Path, limit: usize) -> Result<Vec<u8>, CollectError> {
    let f = std::fs::File::open(path).map_err(|e| failed(format!("{}: {e}", path.display())))?;
    let mut out = Vec::new();
    f.take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| failed(format!("{}: {e}", path.display())))?;
    if out.len() > limit {
        return Err(failed(format!("{}: more than {limit} bytes", path.display())));
    }
    Ok(out)
}

fn read_text(path: &Path) -> Result<String, CollectError> {
    let b = read_bounded(path, 256)?;
    Ok(String::from_utf8_lossy(&b).trim().to_owned())
}

/// One request on an existing entry: its provider, then the quote for `inblob`.
pub fn request(entry: &Path, inblob: &[u8; 64]) -> Result<(String, Vec<u8>), CollectError> {
    let provider = read_text(&entry.join("provider"))?;
    if provider != TDX_PROVIDER {
        return Ok((provider, Vec::new()));
    }
    std::fs::write(entry.join("inblob"), inblob)
        .map_err(|e| failed(format!("{}: {e}", entry.join("inblob").display())))?;
    let before = read_text(&entry.join("generation"))?;
    let quote = read_bounded(&entry.join("outblob"), MAX_TDX_QUOTE_LEN)?;
    let after = read_text(&entry.join("generation"))?;
    if before != after {
        return Err(failed(format!(
            "the request changed while it was served (generation {before} -> {after}): another writer"
        )));
    }
    Ok((provider, quote))
}

impl Collector for TsmCollector {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn collect(&self, binding: &Binding) -> Result<Evidence, CollectError> {
        match std::fs::metadata(&self.root) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(failed(format!("{} is not a directory", self.root.display()))),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(CollectError::NotAvailable {
                    kind: KIND,
                    reason: format!(
                        "{}: {e} (no configfs-tsm: not a TD, or a kernel before 6.7)",
                        self.root.display()
                    ),
                })
            }
            Err(e) => return Err(failed(format!("{}: {e}", self.root.display()))),
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let path = self.root.join(format!("custody-{}-{n}", std::process::id()));
        std::fs::create_dir(&path).map_err(|e| failed(format!("{}: {e}", path.display())))?;
        let entry = Entry(path);
        let mut inblob = [0u8; 64];
        inblob[..32].copy_from_slice(binding.as_bytes());
        let (provider, quote) = request(&entry.0, &inblob)?;
        evidence(&provider, quote, &inblob)
    }
}

/// What a request returned, as the round's evidence: a TDX quote that parses and carries
/// `inblob` as its REPORT_DATA.
pub fn evidence(provider: &str, quote: Vec<u8>, inblob: &[u8; 64]) -> Result<Evidence, CollectError> {
    if provider != TDX_PROVIDER {
        return Err(CollectError::NotAvailable {
            kind: KIND,
            reason: format!(
                "configfs-tsm provider is {provider:?}, not {TDX_PROVIDER:?} (SEV-SNP is collected through /dev/sev-guest)"
            ),
        });
    }
    let q = TdxQuote::parse(&quote).map_err(|e| failed(format!("the driver's quote: {e}")))?;
    if q.body.report_data != inblob {
        return Err(failed(format!(
            "the quote's REPORT_DATA {} is not this round's binding",
            hex::encode(q.body.report_data)
        )));
    }
    Ok(Evidence::Tdx(TdxEvidence { quote }))
}

#[cfg(test)]
mod tests;
