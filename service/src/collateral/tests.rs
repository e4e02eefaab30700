#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use super::*;

fn vector(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../verifier/testdata/tdx")
        .join(name)
}

fn copy_set(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for f in COLLATERAL_FILES {
        std::fs::copy(from.join(f), to.join(f)).unwrap();
    }
}

/// One set in the directory itself, others in subdirectories: one per FMSPC.
#[test]
fn sets_are_read_from_the_directory_and_its_subdirectories() {
    let dir = tempfile::tempdir().unwrap();
    copy_set(&vector("tdx-dcap-qvl-uptodate"), dir.path());
    copy_set(&vector("tdx-go-tdx-guest-spr-v4"), &dir.path().join("spr"));
    std::fs::create_dir(dir.path().join("empty")).unwrap();
    let sets = load(dir.path()).unwrap();
    let fmspcs: Vec<String> = sets.iter().map(|s| hex::encode_upper(s.fmspc())).collect();
    assert_eq!(fmspcs, ["B0C06F000000", "50806F000000"]);
    assert!(
        describe(&sets).starts_with("B0C06F000000 (until "),
        "{}",
        describe(&sets)
    );
}

/// A directory with nothing usable, two sets for one FMSPC, or a broken file is refused
/// whole, naming the place.
#[test]
fn a_bad_directory_is_refused_naming_why() {
    let dir = tempfile::tempdir().unwrap();
    assert!(load(dir.path()).unwrap_err().contains("no collateral set"));
    copy_set(&vector("tdx-dcap-qvl-outdated"), &dir.path().join("a"));
    copy_set(&vector("tdx-go-tdx-guest-v5"), &dir.path().join("b"));
    let e = load(dir.path()).unwrap_err();
    assert!(e.contains("a second set for FMSPC 90C06F000000"), "{e}");
    std::fs::remove_dir_all(dir.path().join("b")).unwrap();
    std::fs::write(dir.path().join("a/pck_crl.der"), b"garbage").unwrap();
    let e = load(dir.path()).unwrap_err();
    assert!(e.contains("PCK CRL"), "{e}");
    assert!(load(&dir.path().join("absent")).is_err());
}

/// The fingerprint changes when a file is replaced, and only then.
#[test]
fn the_fingerprint_follows_the_files() {
    let dir = tempfile::tempdir().unwrap();
    copy_set(&vector("tdx-dcap-qvl-uptodate"), dir.path());
    let a = fingerprint(dir.path()).unwrap();
    assert_eq!(a.len(), 6);
    assert_eq!(fingerprint(dir.path()).unwrap(), a);
    std::fs::write(dir.path().join("root_ca_crl.der"), b"x").unwrap();
    assert_ne!(fingerprint(dir.path()).unwrap(), a);
}
