//! The export directory an auditor receives. Plain files, readable by other tooling:
//!
//! ```text
//! DIR/log.pub                 the log's verifier key, `name+hex8+base64(0x01||key)\n`
//! DIR/entries.jsonl           line i = the exact leaf bytes of entry i (compact JSON
//!                             `{"kind":...,"body":...}`), each ended by `\n`
//! DIR/checkpoints/N.note      one C2SP signed checkpoint note per stored checkpoint,
//!                             N = tree size, zero-padded to 20 digits
//! ```
//!
//! Leaf i hashes as `SHA-256(0x00 || line i without its newline)`.

use crate::store::{Store, StoreError};
use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use thiserror::Error;

pub const LOG_PUB: &str = "log.pub";
pub const ENTRIES: &str = "entries.jsonl";
pub const CHECKPOINTS: &str = "checkpoints";

/// Why an export could not be written.
#[derive(Debug, Error)]
pub enum ExportError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{0} exists and is not empty; export into a new directory")]
    NotEmpty(PathBuf),
    #[error("the log has no checkpoint yet, so nothing an auditor could verify")]
    NoCheckpoint,
    #[error("entry {0} contains a newline")]
    Newline(u64),
}

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSummary {
    /// Entries written.
    pub entries: u64,
    /// Entries appended after the latest checkpoint and not written (`signed_only`).
    pub unsigned_left_out: u64,
    pub checkpoints: usize,
    pub latest_size: u64,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ExportError + '_ {
    move |source| ExportError::Io {
        path: path.to_owned(),
        source,
    }
}

/// File name of the checkpoint for `size`.
pub fn checkpoint_file(size: u64) -> String {
    format!("{size:020}.note")
}

/// Write the export of `store` into `dir` (created; must be absent or empty): every
/// entry, including any appended after the latest checkpoint (which the auditor will
/// report as not covered).
pub fn export(store: &Store, dir: &Path) -> Result<ExportSummary, ExportError> {
    export_with(store, dir, false)
}

/// Like [`export`]; with `signed_only`, stop at the latest checkpoint's size, so an
/// export taken from a running verifier holds exactly what its signatures cover.
pub fn export_with(store: &Store, dir: &Path, signed_only: bool) -> Result<ExportSummary, ExportError> {
    if dir.exists() {
        let mut it = fs::read_dir(dir).map_err(io(dir))?;
        if it.next().is_some() {
            return Err(ExportError::NotEmpty(dir.to_owned()));
        }
    }
    let log_key = store.log_key()?.ok_or(ExportError::NoCheckpoint)?;
    let cps = store.checkpoints()?;
    let cp_dir = dir.join(CHECKPOINTS);
    fs::create_dir_all(&cp_dir).map_err(io(&cp_dir))?;
    let pub_path = dir.join(LOG_PUB);
    fs::write(&pub_path, format!("{log_key}\n")).map_err(io(&pub_path))?;

    let entries_path = dir.join(ENTRIES);
    let f = fs::File::create(&entries_path).map_err(io(&entries_path))?;
    let mut w = BufWriter::with_capacity(1 << 20, f);
    let mut write_err = None;
    let mut newline = None;
    let latest = cps.last().map_or(0, |(s, _)| *s);
    let limit = if signed_only { latest } else { u64::MAX };
    let mut written = 0u64;
    store.for_each_leaf(|i, leaf| {
        if i >= limit {
            return Ok(());
        }
        written += 1;
        if leaf.contains(&b'\n') {
            newline.get_or_insert(i);
        } else if let Err(e) = w.write_all(leaf).and_then(|()| w.write_all(b"\n")) {
            write_err.get_or_insert(e);
        }
        Ok(())
    })?;
    if let Some(i) = newline {
        return Err(ExportError::Newline(i));
    }
    if let Some(e) = write_err {
        return Err(io(&entries_path)(e));
    }
    w.flush().map_err(io(&entries_path))?;

    for (size, note) in &cps {
        let p = cp_dir.join(checkpoint_file(*size));
        fs::write(&p, note).map_err(io(&p))?;
    }
    Ok(ExportSummary {
        entries: written,
        unsigned_left_out: store.size().saturating_sub(written),
        checkpoints: cps.len(),
        latest_size: latest,
    })
}
