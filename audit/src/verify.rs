//! The offline auditor: from an export directory and the log's public key alone, check
//! every checkpoint signature, recompute the tree over every entry, and require that each
//! signed checkpoint is the root of the entries before it. Since every checkpoint is
//! recomputed from the one entry sequence, successive checkpoints are consistent exactly
//! when all of them verify; two signed checkpoints of one size with different roots are a
//! fork. An older checkpoint the auditor kept (`since`) must also be a prefix root.
//!
//! Checks, in order: `read`, `log_key`, `checkpoint_signature`, `fork`, then per entry
//! `entry_parse` and at each checkpoint size `tree_root`, then `consistency` (the kept
//! checkpoint) and `coverage` (every entry signed for, none missing).
//!
//! Localisation: only signed data can say which entry is wrong, so a tampered entry is
//! named as the first entry after the last checkpoint that still verified, and exactly
//! when checkpoints are one entry apart.

use crate::export::{CHECKPOINTS, ENTRIES, LOG_PUB};
use crate::note::{Checkpoint, NoteError, Verifier};
use crate::tree::{self, CompactTree, Hash};
use crate::Entry;
use custody_types::check::CheckLog;
use custody_types::check::{FailedCheck, Rejected, Verified};
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use thiserror::Error;

/// An audit finding (or an unreadable export), naming the entry or checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AuditError {
    #[error("cannot read {path}: {error}")]
    Read { path: String, error: String },
    #[error("log.pub is {found}, not the auditor's key {expected}")]
    LogKey { found: String, expected: String },
    #[error("checkpoint {file}: {error}")]
    CheckpointSignature { file: String, error: NoteError },
    #[error("fork: checkpoints {a} and {b} both sign size {size} with different roots")]
    Fork { size: u64, a: String, b: String },
    #[error("entry {index} is not a valid log entry: {error}")]
    EntryParse { index: u64, error: String },
    #[error("{} does not match checkpoint {file} (size {size}): tree root differs", describe(*first, *size))]
    TreeRoot { first: u64, size: u64, file: String },
    #[error("kept checkpoint (size {size}) is not consistent with this log: {reason}")]
    Inconsistent { size: u64, reason: String },
    #[error("entry {index} is missing: checkpoint {file} signs {size} entries, the export has {index}")]
    Missing { index: u64, size: u64, file: String },
    #[error("entry {index} is not covered by any checkpoint (latest signs {latest})")]
    Uncovered { index: u64, latest: u64 },
    #[error("the export has no checkpoint")]
    NoCheckpoint,
}

fn describe(first: u64, size: u64) -> String {
    if size.saturating_sub(first) <= 1 {
        format!("entry {first}")
    } else {
        format!("entry {first} (or one up to {})", size - 1)
    }
}

impl AuditError {
    /// The first entry the finding points at, where it points at one.
    pub fn entry(&self) -> Option<u64> {
        match self {
            AuditError::EntryParse { index, .. }
            | AuditError::Missing { index, .. }
            | AuditError::Uncovered { index, .. } => Some(*index),
            AuditError::TreeRoot { first, .. } => Some(*first),
            _ => None,
        }
    }
}

impl FailedCheck for AuditError {
    fn check(&self) -> &'static str {
        match self {
            AuditError::Read { .. } => "read",
            AuditError::LogKey { .. } => "log_key",
            AuditError::CheckpointSignature { .. } => "checkpoint_signature",
            AuditError::Fork { .. } => "fork",
            AuditError::EntryParse { .. } => "entry_parse",
            AuditError::TreeRoot { .. } => "tree_root",
            AuditError::Inconsistent { .. } => "consistency",
            AuditError::Missing { .. } | AuditError::Uncovered { .. } | AuditError::NoCheckpoint => {
                "coverage"
            }
        }
    }
}

/// What a successful audit established.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditSummary {
    pub origin: String,
    pub entries: u64,
    pub checkpoints: usize,
    /// Hex root of the latest checkpoint (= the root over every entry).
    pub root: String,
}

/// Outcome of an audit: the passed checks and the summary, or the first finding.
pub type AuditOutcome = Result<Verified<AuditSummary>, Rejected<AuditError>>;

fn read_err(path: &Path, e: impl std::fmt::Display) -> AuditError {
    AuditError::Read {
        path: path.display().to_string(),
        error: e.to_string(),
    }
}

struct SignedCheckpoint {
    file: String,
    cp: Checkpoint,
}

/// Audit the export in `dir` against the log key `key`; `since` is an older signed
/// checkpoint the auditor kept from an earlier audit.
pub fn verify_dir(dir: &Path, key: &Verifier, since: Option<&str>) -> AuditOutcome {
    let mut log = CheckLog::new();
    match run(dir, key, since, &mut log, None, None) {
        Ok(s) => Ok(log.finish(s)),
        Err(e) => Err(log.reject(e)),
    }
}

/// Audit the export and keep its entries for a question (`custody audit where`): the
/// entries come from the same single read the audit hashed, so nothing changed between
/// the audit and the answer.
pub fn verified_entries(
    dir: &Path,
    key: &Verifier,
    since: Option<&str>,
) -> Result<(Verified<AuditSummary>, Vec<Entry>), Rejected<AuditError>> {
    let mut log = CheckLog::new();
    let mut entries = Vec::new();
    match run(dir, key, since, &mut log, Some(&mut entries), None) {
        Ok(s) => Ok((log.finish(s), entries)),
        Err(e) => Err(log.reject(e)),
    }
}

/// Like [`verified_entries`], and also the tree of those entries' leaves, so that a
/// report can show each entry's inclusion proof against the root the audit checked.
pub fn verified_log(
    dir: &Path,
    key: &Verifier,
    since: Option<&str>,
) -> Result<(Verified<AuditSummary>, Vec<Entry>, tree::Tree), Rejected<AuditError>> {
    let mut log = CheckLog::new();
    let mut entries = Vec::new();
    let mut leaves = tree::Tree::new();
    match run(dir, key, since, &mut log, Some(&mut entries), Some(&mut leaves)) {
        Ok(s) => Ok((log.finish(s), entries, leaves)),
        Err(e) => Err(log.reject(e)),
    }
}

fn run(
    dir: &Path,
    key: &Verifier,
    since: Option<&str>,
    log: &mut CheckLog,
    mut keep: Option<&mut Vec<Entry>>,
    mut leaves: Option<&mut tree::Tree>,
) -> Result<AuditSummary, AuditError> {
    let pub_path = dir.join(LOG_PUB);
    let found = fs::read_to_string(&pub_path).map_err(|e| read_err(&pub_path, e))?;
    let cp_dir = dir.join(CHECKPOINTS);
    let mut files: Vec<_> = fs::read_dir(&cp_dir)
        .map_err(|e| read_err(&cp_dir, e))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(|e| read_err(&cp_dir, e))?;
    files.sort();
    let entries_path = dir.join(ENTRIES);
    let entries = fs::File::open(&entries_path).map_err(|e| read_err(&entries_path, e))?;
    log.pass("read", format!("{}", dir.display()));

    let expected = key.to_key_string();
    if found.trim_end_matches('\n') != expected {
        return Err(AuditError::LogKey {
            found: found.trim_end().to_owned(),
            expected,
        });
    }
    log.pass("log_key", expected);

    let mut cps = Vec::with_capacity(files.len());
    for path in &files {
        let file = path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let note = fs::read_to_string(path).map_err(|e| read_err(path, e))?;
        let cp = Checkpoint::open(&note, key).map_err(|error| AuditError::CheckpointSignature {
            file: file.clone(),
            error,
        })?;
        cps.push(SignedCheckpoint { file, cp });
    }
    if cps.is_empty() {
        return Err(AuditError::NoCheckpoint);
    }
    cps.sort_by_key(|c| c.cp.size);
    log.pass("checkpoint_signature", format!("{} checkpoints", cps.len()));

    for w in cps.windows(2) {
        if let [a, b] = w {
            if a.cp.size == b.cp.size && a.cp.root != b.cp.root {
                return Err(AuditError::Fork {
                    size: a.cp.size,
                    a: a.file.clone(),
                    b: b.file.clone(),
                });
            }
        }
    }
    log.pass("fork", "no two checkpoints of one size differ");

    let kept = match since {
        Some(note) => Some(Checkpoint::open(note, key).map_err(|e| AuditError::Inconsistent {
            size: 0,
            reason: format!("kept checkpoint does not verify: {e}"),
        })?),
        None => None,
    };

    // Stream the entries once; compare the root at every checkpoint size.
    let mut tree = CompactTree::new();
    let mut next = 0usize;
    let mut last_good = 0u64;
    let mut kept_ok = false;
    let check_at = |tree: &CompactTree,
                    next: &mut usize,
                    last_good: &mut u64,
                    kept_ok: &mut bool|
     -> Result<(), AuditError> {
        let size = tree.size();
        let mut root: Option<Hash> = None;
        while let Some(c) = cps.get(*next).filter(|c| c.cp.size == size) {
            let r = *root.get_or_insert_with(|| tree.root());
            if c.cp.root != r {
                return Err(AuditError::TreeRoot {
                    first: *last_good,
                    size,
                    file: c.file.clone(),
                });
            }
            *last_good = size;
            *next += 1;
        }
        if let Some(k) = kept.as_ref().filter(|k| k.size == size) {
            let r = *root.get_or_insert_with(|| tree.root());
            if k.root != r {
                return Err(AuditError::Inconsistent {
                    size,
                    reason: "its root is not the root of the first entries".into(),
                });
            }
            *kept_ok = true;
        }
        Ok(())
    };
    check_at(&tree, &mut next, &mut last_good, &mut kept_ok)?;
    let latest = cps.last().map_or(0, |c| c.cp.size);
    let mut reader = BufReader::with_capacity(1 << 20, entries);
    let mut line = Vec::with_capacity(4096);
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| read_err(&entries_path, e))?;
        if n == 0 {
            break;
        }
        let index = tree.size();
        let Some(leaf) = line.strip_suffix(b"\n") else {
            return Err(AuditError::EntryParse {
                index,
                error: "last line has no newline".into(),
            });
        };
        if index >= latest {
            return Err(AuditError::Uncovered { index, latest });
        }
        let entry = Entry::from_leaf(leaf).map_err(|e| AuditError::EntryParse {
            index,
            error: e.to_string(),
        })?;
        if let Some(k) = keep.as_deref_mut() {
            k.push(entry);
        }
        let hash = tree::leaf_hash(leaf);
        if let Some(t) = leaves.as_deref_mut() {
            t.push(hash);
        }
        tree.push(hash);
        check_at(&tree, &mut next, &mut last_good, &mut kept_ok)?;
    }
    log.pass("entry_parse", format!("{} entries", tree.size()));
    if let Some(c) = cps.get(next) {
        // Entries ended before a checkpoint's size: some were cut off.
        return Err(AuditError::Missing {
            index: tree.size(),
            size: c.cp.size,
            file: c.file.clone(),
        });
    }
    log.pass("tree_root", format!("{} checkpoint roots recomputed", cps.len()));
    if let Some(k) = &kept {
        if !kept_ok {
            return Err(AuditError::Inconsistent {
                size: k.size,
                reason: format!("the log holds only {} entries", tree.size()),
            });
        }
        log.pass(
            "consistency",
            format!("kept checkpoint of size {} is a prefix", k.size),
        );
    }
    log.pass("coverage", format!("every entry signed by checkpoint {latest}"));
    Ok(AuditSummary {
        origin: key.name().to_owned(),
        entries: tree.size(),
        checkpoints: cps.len(),
        root: hex::encode(tree.root()),
    })
}
