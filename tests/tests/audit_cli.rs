//! `custody audit export|verify|prove` end to end: a log built with the library, exported
//! and audited by the binary; a row edited behind the log's back is named, exit 1.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

use custody_audit::note::Signer;
use custody_audit::store::Store;
use custody_audit::Entry;
use custody_e2e::custody;
use serde_json::json;
use std::path::Path;

fn build(db: &Path, signer: &Signer) {
    let mut s = Store::open(db).unwrap();
    for i in 0..12u64 {
        s.append(&Entry::Migration(
            json!({"job": format!("job-{i}"), "to": "node-b"}),
        ))
        .unwrap();
        s.checkpoint(signer).unwrap();
    }
}

#[test]
fn export_verify_prove_and_tamper() {
    let tmp = tempfile::tempdir().unwrap();
    let signer = Signer::generate("custody.example/audit").unwrap();
    let db = tmp.path().join("audit.db");
    build(&db, &signer);
    let pubkey = tmp.path().join("log.pub");
    std::fs::write(&pubkey, signer.verifier().to_key_string()).unwrap();

    let out = tmp.path().join("export");
    let r = custody([
        "audit",
        "export",
        "--db",
        db.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json()["entries"], 12);

    let r = custody([
        "audit",
        "verify",
        out.to_str().unwrap(),
        "--key",
        pubkey.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json()["verified"], true);
    assert_eq!(r.json()["claims"]["entries"], 12);

    // The key may also be given inline; a kept checkpoint must be a prefix.
    let kept = out
        .join("checkpoints")
        .join(custody_audit::export::checkpoint_file(5));
    let key = signer.verifier().to_key_string();
    let r = custody([
        "audit",
        "verify",
        out.to_str().unwrap(),
        "--key",
        &key,
        "--since",
        kept.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);

    let r = custody([
        "audit",
        "prove",
        "inclusion",
        "--db",
        db.to_str().unwrap(),
        "--index",
        "3",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json()["proof"].as_array().unwrap().len(), 4);
    let r = custody([
        "audit",
        "prove",
        "consistency",
        "--db",
        db.to_str().unwrap(),
        "--old",
        "5",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);

    // Edit entry 7 behind the log's back.
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch("DROP TRIGGER entries_no_update").unwrap();
    let forged = serde_json::to_vec(&Entry::Migration(json!({"job": "job-7", "to": "node-x"}))).unwrap();
    c.execute("UPDATE entries SET leaf = ?1 WHERE idx = 7", [forged])
        .unwrap();
    drop(c);
    let out2 = tmp.path().join("export2");
    let r = custody([
        "audit",
        "export",
        "--db",
        db.to_str().unwrap(),
        "--out",
        out2.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = custody([
        "audit",
        "verify",
        out2.to_str().unwrap(),
        "--key",
        pubkey.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert_eq!(r.failed_check().as_deref(), Some("tree_root"));
    assert!(r.stderr.contains("entry 7"), "{}", r.stderr);

    // Wrong key: rejected; missing directory: exit 2.
    let other = Signer::generate("custody.example/audit")
        .unwrap()
        .verifier()
        .to_key_string();
    let r = custody(["audit", "verify", out.to_str().unwrap(), "--key", &other]);
    assert_eq!(r.code, 1);
    assert_eq!(r.failed_check().as_deref(), Some("log_key"));
    let r = custody([
        "audit",
        "verify",
        tmp.path().join("nope").to_str().unwrap(),
        "--key",
        &key,
    ]);
    assert_eq!(r.code, 2);
}
