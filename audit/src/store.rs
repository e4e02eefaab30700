//! The log in SQLite (WAL). Append-only by construction: triggers refuse UPDATE and
//! DELETE on entries and checkpoints, and refuse an entry whose index is not the next one.
//! The tree is rebuilt in memory from the rows when the store opens (O(n) hashes; about
//! 64 bytes of memory per entry), which also makes proofs O(log^2 n).

use crate::note::{Checkpoint, NoteError, Signer};
use crate::tree::{self, Hash, ProofError, Tree};
use crate::Entry;
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;
use thiserror::Error;

/// A store operation failed (not an audit finding: those are [`crate::verify::AuditError`]).
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("sqlite value: {0}")]
    Value(#[from] rusqlite::types::FromSqlError),
    #[error("entry encoding: {0}")]
    Json(#[from] serde_json::Error),
    #[error("checkpoint: {0}")]
    Note(#[from] NoteError),
    #[error("proof: {0}")]
    Proof(#[from] ProofError),
    #[error("row {row} found where entry {expected} was expected")]
    Gap { row: i64, expected: u64 },
    #[error("signer {signer} is not the log's key {log}")]
    WrongSigner { signer: String, log: String },
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;
CREATE TABLE IF NOT EXISTS entries(idx INTEGER PRIMARY KEY, leaf BLOB NOT NULL) STRICT;
CREATE TABLE IF NOT EXISTS checkpoints(size INTEGER PRIMARY KEY, note TEXT NOT NULL) STRICT;
CREATE TRIGGER IF NOT EXISTS entries_no_update BEFORE UPDATE ON entries
  BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS entries_no_delete BEFORE DELETE ON entries
  BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS entries_in_order BEFORE INSERT ON entries
  WHEN NEW.idx IS NOT (SELECT IFNULL(MAX(idx) + 1, 0) FROM entries)
  BEGIN SELECT RAISE(ABORT, 'entries are appended at the next index'); END;
CREATE TRIGGER IF NOT EXISTS checkpoints_no_update BEFORE UPDATE ON checkpoints
  BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS checkpoints_no_delete BEFORE DELETE ON checkpoints
  BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS checkpoints_grow BEFORE INSERT ON checkpoints
  WHEN NEW.size < (SELECT IFNULL(MAX(size), 0) FROM checkpoints)
  BEGIN SELECT RAISE(ABORT, 'checkpoints only grow'); END;
CREATE TRIGGER IF NOT EXISTS meta_no_update BEFORE UPDATE ON meta
  BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS meta_no_delete BEFORE DELETE ON meta
  BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
";

/// The audit log on disk plus its tree in memory.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    tree: Tree,
}

impl Store {
    /// Open or create the log at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        // WAL: readers never block the appender. synchronous=NORMAL: a commit survives a
        // process crash; a power cut may lose the last commits but never corrupts the log.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(SCHEMA)?;
        let mut tree = Tree::new();
        {
            let mut stmt = conn.prepare("SELECT idx, leaf FROM entries ORDER BY idx")?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let idx: i64 = row.get(0)?;
                if u64::try_from(idx).ok() != Some(tree.size()) {
                    return Err(StoreError::Gap {
                        row: idx,
                        expected: tree.size(),
                    });
                }
                let leaf = row.get_ref(1)?.as_blob()?;
                tree.push(tree::leaf_hash(leaf));
            }
        }
        Ok(Self { conn, tree })
    }

    /// Number of entries.
    pub fn size(&self) -> u64 {
        self.tree.size()
    }

    /// Root over every entry.
    pub fn root(&self) -> Hash {
        self.tree.root()
    }

    /// Append one entry in its own transaction; returns its index.
    pub fn append(&mut self, entry: &Entry) -> Result<u64, StoreError> {
        self.append_batch(std::slice::from_ref(entry))
    }

    /// Append entries in one transaction; returns the index of the first.
    pub fn append_batch(&mut self, entries: &[Entry]) -> Result<u64, StoreError> {
        let first = self.tree.size();
        let mut hashes = Vec::with_capacity(entries.len());
        let tx = self.conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached("INSERT INTO entries(idx, leaf) VALUES (?1, ?2)")?;
            for (i, e) in entries.iter().enumerate() {
                let leaf = e.to_leaf()?;
                stmt.execute(params![first as i64 + i as i64, leaf])?;
                hashes.push(tree::leaf_hash(&leaf));
            }
        }
        tx.commit()?;
        // Only after the commit, so the tree never holds what the database refused.
        for h in hashes {
            self.tree.push(h);
        }
        Ok(first)
    }

    /// The exact leaf bytes of entry `index`.
    pub fn leaf(&self, index: u64) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT leaf FROM entries WHERE idx = ?1", [index as i64], |r| {
                r.get(0)
            })
            .optional()?)
    }

    /// Visit every leaf in index order.
    pub fn for_each_leaf(
        &self,
        mut f: impl FnMut(u64, &[u8]) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut stmt = self.conn.prepare("SELECT idx, leaf FROM entries ORDER BY idx")?;
        let mut rows = stmt.query([])?;
        let mut expected = 0u64;
        while let Some(row) = rows.next()? {
            let idx: i64 = row.get(0)?;
            if u64::try_from(idx).ok() != Some(expected) {
                return Err(StoreError::Gap { row: idx, expected });
            }
            f(expected, row.get_ref(1)?.as_blob()?)?;
            expected += 1;
        }
        Ok(())
    }

    /// The log's public key (verifier key string), recorded at the first checkpoint.
    pub fn log_key(&self) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'log_key'", [], |r| r.get(0))
            .optional()?)
    }

    /// Sign a checkpoint over every entry (or return the stored one of that size).
    /// The first checkpoint records the signer's public key; later ones must use it.
    pub fn checkpoint(&mut self, signer: &Signer) -> Result<String, StoreError> {
        let vkey = signer.verifier().to_key_string();
        match self.log_key()? {
            Some(k) if k != vkey => return Err(StoreError::WrongSigner { signer: vkey, log: k }),
            Some(_) => {}
            None => {
                self.conn
                    .execute("INSERT INTO meta(key, value) VALUES ('log_key', ?1)", [&vkey])?;
            }
        }
        let size = self.tree.size();
        if let Some(note) = self
            .conn
            .query_row(
                "SELECT note FROM checkpoints WHERE size = ?1",
                [size as i64],
                |r| r.get::<_, String>(0),
            )
            .optional()?
        {
            return Ok(note);
        }
        let note = Checkpoint {
            origin: signer.name().to_owned(),
            size,
            root: self.tree.root(),
            extensions: Vec::new(),
        }
        .sign(signer)?;
        self.conn.execute(
            "INSERT INTO checkpoints(size, note) VALUES (?1, ?2)",
            params![size as i64, note],
        )?;
        Ok(note)
    }

    /// Every stored checkpoint note, smallest size first.
    pub fn checkpoints(&self) -> Result<Vec<(u64, String)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT size, note FROM checkpoints ORDER BY size")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
        let mut out = Vec::new();
        for r in rows {
            let (s, n) = r?;
            out.push((s as u64, n));
        }
        Ok(out)
    }

    /// Inclusion proof of entry `index` in the tree of `size`, with its leaf hash and root.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<(Hash, Hash, Vec<Hash>), StoreError> {
        let proof = self.tree.inclusion_proof(index, size)?;
        let leaf = self
            .tree
            .leaf(index)
            .ok_or(ProofError::IndexOutOfRange { index, size })?;
        Ok((leaf, self.tree.root_at(size)?, proof))
    }

    /// Consistency proof from `old` to `new` entries, with both roots.
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<(Hash, Hash, Vec<Hash>), StoreError> {
        let proof = self.tree.consistency_proof(old, new)?;
        Ok((self.tree.root_at(old)?, self.tree.root_at(new)?, proof))
    }
}
