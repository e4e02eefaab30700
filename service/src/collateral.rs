//! Intel TDX collateral from the operator's directory (`[tdx] collateral`), loaded at
//! start and again whenever the directory changes: an air-gapped operator copies newer
//! Intel PCS files in (TCB info is reissued about monthly) and the verifier takes them up
//! without a restart.
//!
//! The directory holds the six files of one platform model (FMSPC) itself, and/or one
//! subdirectory per model with the same six files. A set that does not parse, or two sets
//! for one FMSPC, refuse the whole directory: at start that stops the verifier, later it
//! keeps the collateral in force and says why in the log.

use custody_appraisal::tdx::CollateralSet;
use custody_verifier::tdx::COLLATERAL_FILES;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// More sets than platform models Intel ships; bounds what a directory can make us read.
const MAX_SETS: usize = 256;
/// Per file: TCB info with every level is tens of KiB, a PCK CRL a few hundred KiB.
const MAX_FILE: u64 = 4 << 20;

/// What identifies the directory's content without reading it: every file's path, length
/// and modification time.
pub type Fingerprint = Vec<(PathBuf, u64, Option<SystemTime>)>;

fn set_dirs(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    if dir.join(COLLATERAL_FILES[0]).is_file() {
        out.push(dir.to_path_buf());
    }
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut subs: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir() && p.join(COLLATERAL_FILES[0]).is_file())
        .collect();
    subs.sort();
    out.extend(subs);
    if out.len() > MAX_SETS {
        return Err(format!("{}: more than {MAX_SETS} collateral sets", dir.display()));
    }
    Ok(out)
}

/// The directory's fingerprint (see [`Fingerprint`]).
pub fn fingerprint(dir: &Path) -> Result<Fingerprint, String> {
    let mut out = Vec::new();
    for d in set_dirs(dir)? {
        for name in COLLATERAL_FILES {
            let p = d.join(name);
            let m = std::fs::metadata(&p).ok();
            out.push((
                p,
                m.as_ref().map_or(0, std::fs::Metadata::len),
                m.and_then(|m| m.modified().ok()),
            ));
        }
    }
    Ok(out)
}

fn read(p: &Path) -> Result<Vec<u8>, String> {
    let len = std::fs::metadata(p)
        .map_err(|e| format!("{}: {e}", p.display()))?
        .len();
    if len > MAX_FILE {
        return Err(format!("{}: {len} bytes, more than {MAX_FILE}", p.display()));
    }
    std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))
}

/// Every collateral set in `dir`, one per FMSPC.
pub fn load(dir: &Path) -> Result<Vec<CollateralSet>, String> {
    let mut sets: Vec<CollateralSet> = Vec::new();
    for d in set_dirs(dir)? {
        let mut files: [Vec<u8>; 6] = Default::default();
        for (slot, name) in files.iter_mut().zip(COLLATERAL_FILES) {
            *slot = read(&d.join(name))?;
        }
        let set = CollateralSet::new(files).map_err(|e| format!("{}: {e}", d.display()))?;
        if let Some(twin) = sets.iter().find(|s| s.fmspc() == set.fmspc()) {
            return Err(format!(
                "{}: a second set for FMSPC {} (the first is in force as {})",
                d.display(),
                hex::encode_upper(set.fmspc()),
                hex::encode_upper(twin.fmspc())
            ));
        }
        sets.push(set);
    }
    if sets.is_empty() {
        return Err(format!(
            "{}: no collateral set (the six Intel PCS files, here or in a subdirectory per FMSPC)",
            dir.display()
        ));
    }
    Ok(sets)
}

/// `FMSPC until` for each set, for the log.
pub fn describe(sets: &[CollateralSet]) -> String {
    sets.iter()
        .map(|s| {
            let until = s.window().until;
            format!("{} (until {until})", hex::encode_upper(s.fmspc()))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests;
