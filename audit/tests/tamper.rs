//! The log behind its own back: an attacker with the SQLite file (but not the log key)
//! drops the triggers and edits, deletes, reorders or inserts rows; the offline auditor
//! must name the entry. Also forks, wrong keys and the append-only triggers themselves.
// `is_multiple_of` is newer than the workspace's rust-version.
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::manual_is_multiple_of
)]

use custody_audit::entry::ResultEntry;
use custody_audit::export::{self, checkpoint_file};
use custody_audit::note::{Checkpoint, Signer, Verifier};
use custody_audit::store::Store;
use custody_audit::verify::{verify_dir, AuditError};
use custody_audit::Entry;
use custody_types::FailedCheck;
use rusqlite::Connection;
use std::path::{Path, PathBuf};

const ORIGIN: &str = "custody.example/audit";

fn entry(i: u64) -> Entry {
    let mut r = ResultEntry::example(&format!("n{i}"), i as i64);
    if i % 3 == 1 {
        r.status = "contraindicated".into();
        r.failed_check = Some("pcr_values".into());
    }
    Entry::AttestationResult(r)
}

/// A log of `n` entries with a checkpoint every `every` entries and one at the end.
fn build(dir: &Path, signer: &Signer, n: u64, every: u64) -> PathBuf {
    let db = dir.join("audit.db");
    let mut s = Store::open(&db).unwrap();
    for i in 0..n {
        s.append(&entry(i)).unwrap();
        if (i + 1) % every == 0 {
            s.checkpoint(signer).unwrap();
        }
    }
    s.checkpoint(signer).unwrap();
    db
}

fn export_and_verify(db: &Path, out: &Path, key: &Verifier) -> Result<(), AuditError> {
    let s = Store::open(db).unwrap();
    export::export(&s, out).unwrap();
    verify_dir(out, key, None).map(|_| ()).map_err(|r| r.error)
}

/// Open the file as the attacker does: no triggers.
fn attacker(db: &Path) -> Connection {
    let c = Connection::open(db).unwrap();
    for t in [
        "entries_no_update",
        "entries_no_delete",
        "entries_in_order",
        "checkpoints_no_update",
        "checkpoints_no_delete",
    ] {
        c.execute_batch(&format!("DROP TRIGGER {t}")).unwrap();
    }
    c
}

fn setup(every: u64) -> (tempfile::TempDir, Signer, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let signer = Signer::generate(ORIGIN).unwrap();
    let db = build(tmp.path(), &signer, 20, every);
    (tmp, signer, db)
}

#[test]
fn untouched_log_verifies() {
    let (tmp, signer, db) = setup(1);
    let out = tmp.path().join("export");
    let s = Store::open(&db).unwrap();
    let sum = export::export(&s, &out).unwrap();
    assert_eq!(sum.entries, 20);
    assert_eq!(sum.checkpoints, 20);
    let v = verify_dir(&out, &signer.verifier(), None).unwrap();
    assert_eq!(v.claims.entries, 20);
    assert_eq!(v.claims.root, hex::encode(s.root()));
    let names: Vec<_> = v.checks.iter().map(|c| c.name).collect();
    assert_eq!(
        names,
        [
            "read",
            "log_key",
            "checkpoint_signature",
            "fork",
            "entry_parse",
            "tree_root",
            "coverage"
        ]
    );
    // Exporting again into the same directory is refused.
    assert!(export::export(&s, &out).is_err());
}

#[test]
fn triggers_refuse_update_delete_and_out_of_order_insert() {
    let (_tmp, _signer, db) = setup(5);
    let c = Connection::open(&db).unwrap();
    assert!(c
        .execute("UPDATE entries SET leaf = x'00' WHERE idx = 3", [])
        .is_err());
    assert!(c.execute("DELETE FROM entries WHERE idx = 3", []).is_err());
    assert!(c
        .execute("INSERT INTO entries(idx, leaf) VALUES (25, x'00')", [])
        .is_err());
    assert!(c
        .execute("INSERT INTO entries(idx, leaf) VALUES (3, x'00')", [])
        .is_err());
    assert!(c.execute("DELETE FROM checkpoints", []).is_err());
    assert!(c.execute("UPDATE checkpoints SET note = 'x'", []).is_err());
    assert!(c
        .execute("INSERT INTO checkpoints(size, note) VALUES (1, 'x')", [])
        .is_err());
}

fn expect_entry(db: &Path, tmp: &Path, key: &Verifier, check: &str, entry: u64) {
    let err = export_and_verify(db, &tmp.join("export"), key).unwrap_err();
    assert_eq!(err.check(), check, "{err}");
    assert_eq!(err.entry(), Some(entry), "{err}");
    assert!(err.to_string().contains(&format!("entry {entry}")), "{err}");
}

#[test]
fn edited_row_is_named() {
    let (tmp, signer, db) = setup(1);
    let mut r = ResultEntry::example("n6", 6);
    r.policy_id = "forged".into();
    let forged = serde_json::to_vec(&Entry::AttestationResult(r)).unwrap();
    attacker(&db)
        .execute("UPDATE entries SET leaf = ?1 WHERE idx = 6", [forged])
        .unwrap();
    expect_entry(&db, tmp.path(), &signer.verifier(), "tree_root", 6);
}

#[test]
fn edited_row_that_is_not_an_entry_is_named() {
    let (tmp, signer, db) = setup(1);
    attacker(&db)
        .execute("UPDATE entries SET leaf = x'7b7d' WHERE idx = 9", [])
        .unwrap();
    expect_entry(&db, tmp.path(), &signer.verifier(), "entry_parse", 9);
}

#[test]
fn deleted_row_is_named() {
    let (tmp, signer, db) = setup(1);
    let c = attacker(&db);
    c.execute("DELETE FROM entries WHERE idx = 4", []).unwrap();
    // A gap alone is caught when the store opens; the attacker closes it.
    assert!(Store::open(&db).is_err());
    // Opening the store re-created the triggers; the attacker drops them again.
    drop(c);
    let c = attacker(&db);
    c.execute("UPDATE entries SET idx = idx - 1 WHERE idx > 4", [])
        .unwrap();
    expect_entry(&db, tmp.path(), &signer.verifier(), "tree_root", 4);
}

#[test]
fn reordered_rows_are_named() {
    let (tmp, signer, db) = setup(1);
    let c = attacker(&db);
    c.execute_batch(
        "UPDATE entries SET idx = -1 WHERE idx = 11;
         UPDATE entries SET idx = 11 WHERE idx = 12;
         UPDATE entries SET idx = 12 WHERE idx = -1;",
    )
    .unwrap();
    expect_entry(&db, tmp.path(), &signer.verifier(), "tree_root", 11);
}

#[test]
fn inserted_row_is_named() {
    let (tmp, signer, db) = setup(1);
    let c = attacker(&db);
    c.execute_batch(
        "UPDATE entries SET idx = -idx - 1 WHERE idx >= 8;
         UPDATE entries SET idx = -idx WHERE idx < 0;",
    )
    .unwrap();
    let leaf = serde_json::to_vec(&entry(99)).unwrap();
    c.execute("INSERT INTO entries(idx, leaf) VALUES (8, ?1)", [leaf])
        .unwrap();
    expect_entry(&db, tmp.path(), &signer.verifier(), "tree_root", 8);
}

#[test]
fn appended_row_without_checkpoint_is_named() {
    let (tmp, signer, db) = setup(1);
    let leaf = serde_json::to_vec(&entry(99)).unwrap();
    attacker(&db)
        .execute("INSERT INTO entries(idx, leaf) VALUES (20, ?1)", [leaf])
        .unwrap();
    expect_entry(&db, tmp.path(), &signer.verifier(), "coverage", 20);
}

#[test]
fn truncated_log_is_named() {
    let (tmp, signer, db) = setup(1);
    attacker(&db)
        .execute("DELETE FROM entries WHERE idx >= 17", [])
        .unwrap();
    expect_entry(&db, tmp.path(), &signer.verifier(), "coverage", 17);
}

/// With a checkpoint every 5 entries, the finding is the first entry after the last
/// checkpoint that still verifies: the most any signed data can localise.
#[test]
fn sparse_checkpoints_localise_to_the_interval() {
    let (tmp, signer, db) = setup(5);
    let forged = serde_json::to_vec(&entry(100)).unwrap();
    attacker(&db)
        .execute("UPDATE entries SET leaf = ?1 WHERE idx = 7", [forged])
        .unwrap();
    let err = export_and_verify(&db, &tmp.path().join("export"), &signer.verifier()).unwrap_err();
    assert_eq!(err.check(), "tree_root");
    assert_eq!(err.entry(), Some(5));
    assert!(err.to_string().contains("entry 5 (or one up to 9)"), "{err}");
}

#[test]
fn fork_of_same_size_is_caught() {
    let (tmp, signer, db) = setup(1);
    let out = tmp.path().join("export");
    export::export(&Store::open(&db).unwrap(), &out).unwrap();
    verify_dir(&out, &signer.verifier(), None).unwrap();
    // The key holder signs a second, different tree of size 20 (a split view).
    let fork = Checkpoint {
        origin: ORIGIN.into(),
        size: 20,
        root: [0x42; 32],
        extensions: vec![],
    }
    .sign(&signer)
    .unwrap();
    std::fs::write(out.join("checkpoints").join("fork.note"), fork).unwrap();
    let err = verify_dir(&out, &signer.verifier(), None).unwrap_err().error;
    assert_eq!(err.check(), "fork", "{err}");
}

#[test]
fn new_log_inconsistent_with_kept_checkpoint_is_caught() {
    let tmp = tempfile::tempdir().unwrap();
    let signer = Signer::generate(ORIGIN).unwrap();
    // The auditor kept checkpoint 10 of the log as it was.
    let a = tmp.path().join("a");
    std::fs::create_dir(&a).unwrap();
    let db_a = build(&a, &signer, 10, 10);
    let kept = Store::open(&db_a).unwrap().checkpoints().unwrap()[0].1.clone();
    // Later the operator presents a rewritten history of 20 entries, freshly signed.
    let b = tmp.path().join("b");
    std::fs::create_dir(&b).unwrap();
    let db_b = b.join("audit.db");
    let mut s = Store::open(&db_b).unwrap();
    for i in 0..20 {
        s.append(&entry(if i == 3 { 77 } else { i })).unwrap();
    }
    s.checkpoint(&signer).unwrap();
    let out = tmp.path().join("export");
    export::export(&s, &out).unwrap();
    verify_dir(&out, &signer.verifier(), None).unwrap();
    let err = verify_dir(&out, &signer.verifier(), Some(&kept))
        .unwrap_err()
        .error;
    assert_eq!(err.check(), "consistency", "{err}");
    // The honest continuation is consistent with it.
    let mut s = Store::open(&db_a).unwrap();
    for i in 10..20 {
        s.append(&entry(i)).unwrap();
    }
    s.checkpoint(&signer).unwrap();
    let out2 = tmp.path().join("export2");
    export::export(&s, &out2).unwrap();
    let v = verify_dir(&out2, &signer.verifier(), Some(&kept)).unwrap();
    assert!(v.checks.iter().any(|c| c.name == "consistency" && c.ok));
    // And the store's consistency proof between the two checkpoints verifies.
    let (r1, r2, proof) = s.consistency_proof(10, 20).unwrap();
    custody_audit::tree::verify_consistency(10, 20, &proof, &r1, &r2).unwrap();
}

#[test]
fn wrong_key_and_tampered_checkpoint_are_refused() {
    let (tmp, signer, db) = setup(1);
    let out = tmp.path().join("export");
    export::export(&Store::open(&db).unwrap(), &out).unwrap();
    let other = Signer::generate(ORIGIN).unwrap();
    let err = verify_dir(&out, &other.verifier(), None).unwrap_err().error;
    assert_eq!(err.check(), "log_key");
    // A checkpoint file edited (its size changed) no longer verifies.
    let p = out.join("checkpoints").join(checkpoint_file(7));
    let note = std::fs::read_to_string(&p).unwrap();
    std::fs::write(&p, note.replacen("\n7\n", "\n8\n", 1)).unwrap();
    let err = verify_dir(&out, &signer.verifier(), None).unwrap_err().error;
    assert_eq!(err.check(), "checkpoint_signature", "{err}");
    assert!(err.to_string().contains(&checkpoint_file(7)));
}

#[test]
fn store_signer_must_stay_the_same() {
    let (_tmp, _signer, db) = setup(5);
    let mut s = Store::open(&db).unwrap();
    s.append(&entry(1)).unwrap();
    assert!(s.checkpoint(&Signer::generate(ORIGIN).unwrap()).is_err());
}

/// Throughput: appends per second (one transaction each, and batched) and the time to
/// verify a 1,000,000-entry export. Run once with
/// `cargo test --release -p custody-audit --test tamper -- --ignored --nocapture`.
#[test]
#[ignore]
fn perf_append_and_verify_million() {
    use std::time::Instant;
    let tmp = tempfile::tempdir().unwrap();
    let signer = Signer::generate(ORIGIN).unwrap();
    let mut s = Store::open(&tmp.path().join("audit.db")).unwrap();
    let n_single = 50_000u64;
    let t = Instant::now();
    for i in 0..n_single {
        s.append(&entry(i)).unwrap();
    }
    let single = n_single as f64 / t.elapsed().as_secs_f64();
    println!("append, one transaction each: {single:.0} entries/s ({n_single} entries)");
    let total = 1_000_000u64;
    let t = Instant::now();
    let mut i = n_single;
    while i < total {
        let batch: Vec<_> = (i..(i + 1000).min(total)).map(entry).collect();
        s.append_batch(&batch).unwrap();
        i += batch.len() as u64;
        if i % 100_000 == 0 {
            s.checkpoint(&signer).unwrap();
        }
    }
    let batched = (total - n_single) as f64 / t.elapsed().as_secs_f64();
    println!("append, 1000 per transaction: {batched:.0} entries/s");
    s.checkpoint(&signer).unwrap();
    let out = tmp.path().join("export");
    let t = Instant::now();
    export::export(&s, &out).unwrap();
    println!("export of {total} entries: {:.2} s", t.elapsed().as_secs_f64());
    drop(s);
    let t = Instant::now();
    let v = verify_dir(&out, &signer.verifier(), None).unwrap();
    let secs = t.elapsed().as_secs_f64();
    println!(
        "verify of {} entries, {} checkpoints: {secs:.2} s",
        v.claims.entries, v.claims.checkpoints
    );
    let t = Instant::now();
    let s = Store::open(&tmp.path().join("audit.db")).unwrap();
    println!(
        "store open (tree rebuild) of {} entries: {:.2} s",
        s.size(),
        t.elapsed().as_secs_f64()
    );
    assert!(single >= 10_000.0, "append rate {single:.0}/s below 10,000/s");
    assert!(secs < 60.0, "verify took {secs:.1} s");
}

#[test]
fn verified_entries_come_only_from_a_log_that_verifies() {
    use custody_audit::verify::verified_entries;
    let (tmp, signer, db) = setup(5);
    let out = tmp.path().join("export");
    export::export(&Store::open(&db).unwrap(), &out).unwrap();
    let (v, entries) = verified_entries(&out, &signer.verifier(), None).unwrap();
    assert_eq!(v.claims.entries, 20);
    assert_eq!(entries.len(), 20);
    assert_eq!(entries[4], entry(4));

    // An edited line: the audit itself refuses, no entries come back.
    let path = out.join(export::ENTRIES);
    let text = std::fs::read_to_string(&path).unwrap();
    let edited = text.replacen("\"n1\"", "\"n7\"", 1);
    assert_ne!(edited, text);
    std::fs::write(&path, edited).unwrap();
    let r = verified_entries(&out, &signer.verifier(), None).unwrap_err();
    assert_eq!(r.error.check(), "tree_root");

    // The wrong key: refused before any entry is read.
    std::fs::write(&path, text).unwrap();
    let other = Signer::generate(ORIGIN).unwrap();
    let r = verified_entries(&out, &other.verifier(), None).unwrap_err();
    assert_eq!(r.error.check(), "log_key");
}
