//! Checkpoint manifest: the files of a directory, their sizes and SHA-256 digests, in one
//! canonical CBOR encoding whose SHA-256 is the manifest digest a ticket names.
//!
//! Encoding (deterministic, no maps): `["custody-manifest-v1", [[path, size, sha256], ...]]`
//! with entries sorted by the path's UTF-8 bytes, paths relative with `/` separators.

use crate::error::MoverError;
use aws_lc_rs::digest;
use ciborium::value::Value;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

/// Manifest format label (first array element).
pub const MANIFEST_LABEL: &str = "custody-manifest-v1";
/// Most files one checkpoint may hold (bounds memory on hostile input).
pub const MAX_FILES: usize = 1_000_000;
/// Longest relative path accepted.
pub const MAX_PATH: usize = 4096;

/// One file of a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Relative, `/`-separated, validated by [`validate_path`].
    pub path: String,
    pub size: u64,
    pub sha256: [u8; 32],
}

/// The files of a checkpoint in canonical order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Manifest {
    pub files: Vec<FileEntry>,
}

fn fmt_err(msg: impl Into<String>) -> MoverError {
    MoverError::ManifestFormat(msg.into())
}

/// A relative path that names a file inside the checkpoint and nothing else: non-empty
/// `/`-separated components, none empty, `.` or `..`, no leading `/`, no backslash or NUL.
pub fn validate_path(p: &str) -> Result<(), MoverError> {
    let bad = |why: &str| Err(MoverError::ManifestPath(format!("{p:?}: {why}")));
    if p.is_empty() || p.len() > MAX_PATH {
        return bad("empty or too long");
    }
    if p.contains('\\') || p.contains('\0') {
        return bad("backslash or NUL");
    }
    if p.starts_with('/') {
        return bad("absolute");
    }
    if p.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        return bad("empty, '.' or '..' component");
    }
    Ok(())
}

/// The path under `root` for a validated relative path.
pub fn join(root: &Path, rel: &str) -> Result<PathBuf, MoverError> {
    validate_path(rel)?;
    let mut out = root.to_path_buf();
    for c in rel.split('/') {
        out.push(c);
    }
    // Belt and braces: only normal components were added.
    if out
        .strip_prefix(root)
        .map(|r| r.components().all(|c| matches!(c, Component::Normal(_))))
        != Ok(true)
    {
        return Err(MoverError::ManifestPath(format!(
            "{rel:?} escapes the checkpoint"
        )));
    }
    Ok(out)
}

/// Relative paths of the regular files under `dir`, sorted. Symlinks and special files
/// are refused (never followed): a checkpoint is moved as the bytes it holds.
pub fn list_files(dir: &Path) -> Result<Vec<String>, MoverError> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), String::new())];
    while let Some((abs, rel)) = stack.pop() {
        let rd = std::fs::read_dir(&abs).map_err(|e| MoverError::io(&abs, e))?;
        for entry in rd {
            let entry = entry.map_err(|e| MoverError::io(&abs, e))?;
            let name = entry.file_name();
            let name = name
                .to_str()
                .ok_or_else(|| MoverError::ManifestPath(format!("{:?} is not UTF-8", entry.path())))?;
            let child_rel = if rel.is_empty() {
                name.to_owned()
            } else {
                format!("{rel}/{name}")
            };
            validate_path(&child_rel)?;
            let ft = entry.file_type().map_err(|e| MoverError::io(&entry.path(), e))?;
            if ft.is_symlink() {
                return Err(MoverError::ManifestPath(format!("{child_rel:?} is a symlink")));
            } else if ft.is_dir() {
                stack.push((entry.path(), child_rel));
            } else if ft.is_file() {
                out.push(child_rel);
            } else {
                return Err(MoverError::ManifestPath(format!(
                    "{child_rel:?} is not a regular file"
                )));
            }
            if out.len() > MAX_FILES {
                return Err(MoverError::ManifestPath(format!("more than {MAX_FILES} files")));
            }
        }
    }
    out.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(out)
}

/// SHA-256 of a file, streamed.
pub fn hash_file(path: &Path) -> Result<(u64, [u8; 32]), MoverError> {
    let mut f = std::fs::File::open(path).map_err(|e| MoverError::io(path, e))?;
    let mut ctx = digest::Context::new(&digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|e| MoverError::io(path, e))?;
        if n == 0 {
            break;
        }
        ctx.update(buf.get(..n).unwrap_or_default());
        total += n as u64;
    }
    Ok((total, sha256_of(ctx)))
}

pub(crate) fn sha256_of(ctx: digest::Context) -> [u8; 32] {
    let d = ctx.finish();
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(data);
    sha256_of(ctx)
}

impl Manifest {
    /// List and hash a checkpoint directory.
    pub fn build(dir: &Path) -> Result<Self, MoverError> {
        let mut files = Vec::new();
        for rel in list_files(dir)? {
            let (size, sha256) = hash_file(&join(dir, &rel)?)?;
            files.push(FileEntry {
                path: rel,
                size,
                sha256,
            });
        }
        Ok(Self { files })
    }

    /// Sum of the file sizes: the length of the stream's plaintext.
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).fold(0u64, u64::saturating_add)
    }

    /// Canonical CBOR.
    pub fn to_cbor(&self) -> Result<Vec<u8>, MoverError> {
        let entries = self
            .files
            .iter()
            .map(|f| {
                Value::Array(vec![
                    Value::Text(f.path.clone()),
                    Value::Integer(f.size.into()),
                    Value::Bytes(f.sha256.to_vec()),
                ])
            })
            .collect();
        let v = Value::Array(vec![Value::Text(MANIFEST_LABEL.into()), Value::Array(entries)]);
        let mut out = Vec::new();
        ciborium::into_writer(&v, &mut out).map_err(|e| fmt_err(e.to_string()))?;
        Ok(out)
    }

    /// SHA-256 of the canonical CBOR.
    pub fn digest(&self) -> Result<[u8; 32], MoverError> {
        Ok(sha256(&self.to_cbor()?))
    }

    /// Parse; refuses anything but the canonical encoding of a valid manifest (sorted,
    /// unique, valid paths), so one manifest has exactly one digest.
    pub fn from_cbor(bytes: &[u8]) -> Result<Self, MoverError> {
        let v: Value = ciborium::from_reader(bytes).map_err(|e| fmt_err(format!("CBOR: {e}")))?;
        let Value::Array(top) = v else {
            return Err(fmt_err("not an array"));
        };
        let [Value::Text(label), Value::Array(entries)] = top.as_slice() else {
            return Err(fmt_err("want [label, entries]"));
        };
        if label != MANIFEST_LABEL {
            return Err(fmt_err(format!("label {label:?}")));
        }
        if entries.len() > MAX_FILES {
            return Err(fmt_err("too many files"));
        }
        let mut files = Vec::with_capacity(entries.len());
        for e in entries {
            let Value::Array(e) = e else {
                return Err(fmt_err("entry is not an array"));
            };
            let [Value::Text(path), Value::Integer(size), Value::Bytes(sha)] = e.as_slice() else {
                return Err(fmt_err("entry is not [path, size, sha256]"));
            };
            validate_path(path)?;
            let size = u64::try_from(*size).map_err(|_| fmt_err("size out of range"))?;
            let sha256: [u8; 32] = sha
                .as_slice()
                .try_into()
                .map_err(|_| fmt_err(format!("digest of {path:?} has {} bytes, want 32", sha.len())))?;
            files.push(FileEntry {
                path: path.clone(),
                size,
                sha256,
            });
        }
        if files
            .windows(2)
            .any(|w| matches!(w, [a, b] if a.path.as_bytes() >= b.path.as_bytes()))
        {
            return Err(fmt_err("paths not sorted or not unique"));
        }
        // A file may not also be a directory prefix of another ("a" and "a/b").
        if files.windows(2).any(|w| {
            matches!(w, [a, b] if b.path.starts_with(&a.path) && b.path.as_bytes().get(a.path.len()) == Some(&b'/'))
        }) {
            return Err(fmt_err("a path is both a file and a directory"));
        }
        if files
            .iter()
            .try_fold(0u64, |acc, f| acc.checked_add(f.size))
            .is_none()
        {
            return Err(fmt_err("total size overflows"));
        }
        let m = Self { files };
        if m.to_cbor()? != bytes {
            return Err(fmt_err("not the canonical encoding"));
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_validated() {
        for ok in ["a", "a/b.safetensors", "x/y/z"] {
            assert!(validate_path(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "a//b",
            "./a",
            "a/",
            "a\\b",
            "a\0b",
        ] {
            assert!(validate_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn build_roundtrip_and_refusals() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::fs::write(d.path().join("b.bin"), b"hello").unwrap();
        std::fs::write(d.path().join("sub/a.bin"), b"").unwrap();
        let m = Manifest::build(d.path()).unwrap();
        assert_eq!(
            m.files.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(),
            vec!["b.bin", "sub/a.bin"]
        );
        assert_eq!(m.files[0].sha256, sha256(b"hello"));
        assert_eq!(m.total_bytes(), 5);
        let cbor = m.to_cbor().unwrap();
        assert_eq!(Manifest::from_cbor(&cbor).unwrap(), m);
        // Non-canonical: trailing byte, reordered entries.
        let mut extra = cbor.clone();
        extra.push(0);
        assert!(Manifest::from_cbor(&extra).is_err());
        let swapped = Manifest {
            files: vec![m.files[1].clone(), m.files[0].clone()],
        };
        assert!(Manifest::from_cbor(&swapped.to_cbor().unwrap()).is_err());
        // Symlinks are refused, not followed.
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink("/etc/hostname", d.path().join("link")).unwrap();
            let e = Manifest::build(d.path()).unwrap_err();
            assert!(matches!(e, MoverError::ManifestPath(_)), "{e}");
        }
    }
}
