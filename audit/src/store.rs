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

/// Entries written inside a caller's transaction and not yet in the tree
/// ([`Store::append_in`]).
#[derive(Debug)]
#[must_use = "hand it to Store::applied once the transaction committed"]
pub struct Pending {
    first: u64,
    hashes: Vec<Hash>,
}

impl Pending {
    /// Index of the first entry written.
    pub fn first(&self) -> u64 {
        self.first
    }
}

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
        // The verifier's store writes the same file through its own connection: wait for
        // its write lock instead of failing at once ("database is locked").
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        Self::from_conn(conn)
    }

    fn from_conn(conn: Connection) -> Result<Self, StoreError> {
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

    fn take_conn(&mut self) -> Result<Connection, StoreError> {
        // A fresh in-memory handle stands in while the real one is rebuilt.
        Ok(std::mem::replace(&mut self.conn, Connection::open_in_memory()?))
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
        // IMMEDIATE: the write lock at BEGIN, where the busy timeout applies; a deferred
        // transaction that must upgrade fails at once when another connection writes.
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let pending = Self::insert(&tx, self.tree.size(), entries)?;
        tx.commit()?;
        self.applied(pending)
    }

    /// Write `entries` inside the caller's transaction (on any connection to this
    /// log's file), so a decision and its entry commit together or not at all. The
    /// tree is not touched: hand the [`Pending`] to [`Store::applied`] once `tx`
    /// committed, and drop it if `tx` did not. The caller must not let another append
    /// happen in between (the service holds this store's lock across both).
    pub fn append_in(
        &self,
        tx: &rusqlite::Transaction<'_>,
        entries: &[Entry],
    ) -> Result<Pending, StoreError> {
        Self::insert(tx, self.tree.size(), entries)
    }

    fn insert(tx: &rusqlite::Transaction<'_>, first: u64, entries: &[Entry]) -> Result<Pending, StoreError> {
        // The database, not the tree, says where the log ends: a tree that fell behind
        // must fail the append rather than write entries it cannot account for.
        let next: i64 = tx.query_row("SELECT IFNULL(MAX(idx) + 1, 0) FROM entries", [], |r| r.get(0))?;
        if u64::try_from(next).ok() != Some(first) {
            return Err(StoreError::Gap {
                row: next,
                expected: first,
            });
        }
        let mut hashes = Vec::with_capacity(entries.len());
        let mut stmt = tx.prepare_cached("INSERT INTO entries(idx, leaf) VALUES (?1, ?2)")?;
        for (i, e) in entries.iter().enumerate() {
            let leaf = e.to_leaf()?;
            let idx = first
                .checked_add(i as u64)
                .and_then(|x| i64::try_from(x).ok())
                .ok_or(StoreError::Gap {
                    row: i64::MAX,
                    expected: first,
                })?;
            stmt.execute(params![idx, leaf])?;
            hashes.push(tree::leaf_hash(&leaf));
        }
        Ok(Pending { first, hashes })
    }

    /// Take entries whose transaction committed into the tree; returns the index of the
    /// first. Only after the commit, so the tree never holds what the database refused.
    pub fn applied(&mut self, pending: Pending) -> Result<u64, StoreError> {
        if pending.first != self.tree.size() {
            // Not the append this tree expected: rebuild from what the database holds.
            let first = pending.first;
            *self = Self::from_conn(self.take_conn()?)?;
            return Ok(first);
        }
        for h in pending.hashes {
            self.tree.push(h);
        }
        Ok(pending.first)
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn entry(i: u64) -> Entry {
        Entry::AttestationResult(crate::entry::ResultEntry::example(&format!("n{i}"), i as i64))
    }

    /// An append inside a caller's transaction that rolls back leaves neither a row nor a
    /// leaf; one that commits lands exactly as a plain append would.
    /// Found by the attack bench: enrollment entries appended while the verifier's store
    /// connection held the write lock failed at once with "database is locked" (no busy
    /// timeout on this connection). Now the append waits for the lock.
    #[test]
    fn an_append_waits_for_another_connections_write() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("busy.db");
        let mut log = Store::open(&db).unwrap();
        let mut other = Connection::open(&db).unwrap();
        let held = std::thread::spawn(move || {
            let tx = other
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .unwrap();
            tx.execute_batch("CREATE TABLE IF NOT EXISTS x(a)").unwrap();
            std::thread::sleep(std::time::Duration::from_millis(300));
            tx.commit().unwrap();
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        let i = log
            .append(&Entry::AttestationResult(crate::entry::ResultEntry::example(
                "k", 1,
            )))
            .expect("the append waits for the other writer");
        assert_eq!(i, 0);
        held.join().unwrap();
    }

    #[test]
    fn append_in_a_callers_transaction_commits_or_vanishes_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("log.db");
        let mut log = Store::open(&db).unwrap();
        log.append(&entry(0)).unwrap();
        let mut other = Connection::open(&db).unwrap();

        let tx = other.transaction().unwrap();
        let p = log.append_in(&tx, &[entry(1), entry(2)]).unwrap();
        assert_eq!(p.first(), 1);
        drop(tx); // rolled back
        drop(p);
        assert_eq!(log.size(), 1);
        assert_eq!(log.leaf(1).unwrap(), None);

        let tx = other.transaction().unwrap();
        let p = log.append_in(&tx, &[entry(1), entry(2)]).unwrap();
        tx.commit().unwrap();
        assert_eq!(log.applied(p).unwrap(), 1);
        assert_eq!(log.size(), 3);

        let mut plain = Store::open(&dir.path().join("plain.db")).unwrap();
        plain.append_batch(&[entry(0), entry(1), entry(2)]).unwrap();
        assert_eq!(log.root(), plain.root());
        assert_eq!(Store::open(&db).unwrap().root(), plain.root());
    }

    /// A tree that does not match the rows refuses to append (the round then fails)
    /// instead of writing at an index it cannot account for.
    #[test]
    fn append_in_refuses_when_the_database_moved_on() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("log.db");
        let log = Store::open(&db).unwrap();
        let mut other = Connection::open(&db).unwrap();
        other
            .execute("INSERT INTO entries(idx, leaf) VALUES (0, x'7b7d')", [])
            .unwrap();
        let tx = other.transaction().unwrap();
        let e = log.append_in(&tx, &[entry(1)]).unwrap_err();
        assert!(matches!(e, StoreError::Gap { row: 1, expected: 0 }), "{e}");
    }
}
