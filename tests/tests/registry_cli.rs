//! `custody registry`: keygen, create from the shipped example, sign, verify, derive, and
//! the refusals (tampered, wrong authority, unsigned) with the check they name.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

use custody_e2e::{assert_rejected, custody, repo_root};
use std::path::Path;

const PAR2_EK: &str = "ek_sha256:5bda6a317873a59e01b29a0a9a4d296e948c5a0b1e5bb93e6d63111541f7a139";
const PAR2_GPU: &str = "gpu_serial:81aab55611518f36";
const FRA1_EK: &str = "ek_sha256:d6f67edf17de7d6f61188767d84a1a3c1fc2d65a9fad68acf2861c4815efcc60";
const PAR1_EK: &str = "ek_sha256:793cf4220c917b853860886599b2ac757f8290996dd9de5798121e8fa462d6e8";

fn p(dir: &Path, name: &str) -> String {
    dir.join(name).display().to_string()
}

/// keygen, create and sign into `dir`; returns (signed, authority pem).
fn signed_example(dir: &Path) -> (String, String) {
    let (key, public, cbor, cose) = (
        p(dir, "k.pk8"),
        p(dir, "k.pub.pem"),
        p(dir, "r.cbor"),
        p(dir, "r.cose"),
    );
    let r = custody(["registry", "keygen", "--key", &key, "--pub", &public]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let example = repo_root().join("docs/registry.example.toml");
    let r = custody([
        "registry",
        "create",
        "--from",
        example.to_str().unwrap(),
        "--out",
        &cbor,
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json()["entities"], 6);
    let r = custody(["registry", "sign", "--in", &cbor, "--key", &key, "--out", &cose]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    (cose, public)
}

#[test]
fn sign_verify_derive_the_example() {
    let dir = tempfile::tempdir().unwrap();
    let (cose, public) = signed_example(dir.path());

    let r = custody(["registry", "verify", "--in", &cose, "--authority", &public]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let j = r.json();
    assert_eq!(j["verified"], true);
    assert_eq!(
        r.check_names(),
        [
            "registry_format",
            "registry_signature",
            "registry_authority",
            "registry_consistency"
        ]
    );
    assert_eq!(j["claims"]["version"], 1);
    assert_eq!(j["claims"]["digest"].as_str().unwrap().len(), 64);

    // The US-controlled French SAS: Cloud Act exposed, with the reason a policy will print.
    let r = custody([
        "registry",
        "derive",
        "--in",
        &cose,
        "--authority",
        &public,
        "--hardware",
        PAR2_EK,
        "--hardware",
        PAR2_GPU,
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let d = r.json();
    assert_eq!(d["hardware"]["bound"], true);
    assert_eq!(d["site"]["id"], "par2");
    assert_eq!(d["site"]["country"], "FR");
    let op = &d["operator"];
    assert_eq!(op["id"], "acme-sas");
    assert_eq!(op["cloud_act_exposed"], true);
    assert_eq!(
        op["cloud_act_reasons"][0],
        "operator ACME Cloud SAS is controlled 60 % by ACME Inc (US): cloud_act_exposed"
    );
    assert_eq!(op["secnumcloud_immune"], false);
    assert_eq!(op["jurisdictions"], serde_json::json!(["EU", "FR", "US"]));
    assert_eq!(d["registry"]["digest"], j["claims"]["digest"]);

    // The German GmbH 30 % Chinese-held: SecNumCloud fails, Cloud Act does not.
    let d = custody([
        "registry",
        "derive",
        "--in",
        &cose,
        "--authority",
        &public,
        "--hardware",
        FRA1_EK,
    ])
    .json();
    let op = &d["operator"];
    assert_eq!(op["cloud_act_exposed"], false);
    assert_eq!(op["secnumcloud_immune"], false);
    assert_eq!(op["non_eu_capital_max_bp"], 3000);
    assert!(op["secnumcloud_reasons"][0]
        .as_str()
        .unwrap()
        .contains("30 % (capital) by Longhua Holding Ltd (CN)"));

    // The EU-only French SAS: neither.
    let d = custody([
        "registry",
        "derive",
        "--in",
        &cose,
        "--authority",
        &public,
        "--hardware",
        PAR1_EK,
    ])
    .json();
    assert_eq!(d["operator"]["cloud_act_exposed"], false);
    assert_eq!(d["operator"]["secnumcloud_immune"], true);

    // Hardware from two sites: not bound, no site.
    let d = custody([
        "registry",
        "derive",
        "--in",
        &cose,
        "--authority",
        &public,
        "--hardware",
        PAR1_EK,
        "--hardware",
        FRA1_EK,
    ])
    .json();
    assert_eq!(d["hardware"]["bound"], false);
    assert!(d["site"].is_null() && d["operator"].is_null());
    assert_eq!(d["hardware"]["conflicts"].as_array().unwrap().len(), 2);
}

#[test]
fn refusals_name_the_check() {
    let dir = tempfile::tempdir().unwrap();
    let (cose, public) = signed_example(dir.path());

    // One byte of the payload changed: the signature no longer verifies.
    let mut bytes = std::fs::read(&cose).unwrap();
    let at = bytes.windows(8).position(|w| w == b"ACME Inc").unwrap();
    bytes[at] = b'X';
    let tampered = p(dir.path(), "tampered.cose");
    std::fs::write(&tampered, &bytes).unwrap();
    let r = custody(["registry", "verify", "--in", &tampered, "--authority", &public]);
    assert_rejected(&r, "registry_signature");
    let r = custody([
        "registry",
        "derive",
        "--in",
        &tampered,
        "--authority",
        &public,
        "--hardware",
        PAR2_EK,
    ]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("`registry_signature`"), "{}", r.stderr);

    // Another authority's key.
    let other = p(dir.path(), "other.pem");
    let r = custody([
        "registry",
        "keygen",
        "--key",
        &p(dir.path(), "other.pk8"),
        "--pub",
        &other,
    ]);
    assert_eq!(r.code, 0);
    assert_rejected(
        &custody(["registry", "verify", "--in", &cose, "--authority", &other]),
        "registry_authority",
    );

    // The unsigned CBOR is not a signed registry.
    assert_rejected(
        &custody([
            "registry",
            "verify",
            "--in",
            &p(dir.path(), "r.cbor"),
            "--authority",
            &public,
        ]),
        "registry_format",
    );

    // Unreadable input or a bad authority file: exit 2.
    assert_eq!(
        custody([
            "registry",
            "verify",
            "--in",
            &p(dir.path(), "missing"),
            "--authority",
            &public
        ])
        .code,
        2
    );
    assert_eq!(
        custody(["registry", "verify", "--in", &cose, "--authority", &cose]).code,
        2
    );

    // show: UNVERIFIED without an authority, verified with one, refused when tampered.
    let r = custody(["registry", "show", "--in", &tampered]);
    assert_eq!(r.code, 0);
    assert!(r.stdout.starts_with("UNVERIFIED"), "{}", r.stdout);
    let r = custody([
        "registry",
        "show",
        "--in",
        &cose,
        "--authority",
        &public,
        "--json",
    ]);
    assert_eq!(r.json()["status"], "VERIFIED");
    let r = custody(["registry", "show", "--in", &tampered, "--authority", &public]);
    assert_eq!(r.code, 1);
}

#[test]
fn edit_bumps_version_and_revalidates() {
    let dir = tempfile::tempdir().unwrap();
    let (_, public) = signed_example(dir.path());
    let (cbor, out, key) = (
        p(dir.path(), "r.cbor"),
        p(dir.path(), "r2.cbor"),
        p(dir.path(), "k.pk8"),
    );
    // Longhua down to 24 %: RheinCloud becomes SecNumCloud immune.
    let r = custody([
        "registry",
        "edit",
        &cbor,
        "--out",
        &out,
        "--set-holder",
        "rheincloud-gmbh:longhua-holding:2400:2400",
        "--add-hardware",
        "fra1:gpu_serial:0a0b",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json()["version"], 2);
    let cose = p(dir.path(), "r2.cose");
    assert_eq!(
        custody(["registry", "sign", "--in", &out, "--key", &key, "--out", &cose]).code,
        0
    );
    let d = custody([
        "registry",
        "derive",
        "--in",
        &cose,
        "--authority",
        &public,
        "--hardware",
        "gpu_serial:0a0b",
    ])
    .json();
    assert_eq!(d["registry"]["version"], 2);
    assert_eq!(d["site"]["id"], "fra1");
    assert_eq!(d["operator"]["secnumcloud_immune"], true);

    // Binding a hardware id already at fra1 to par1 is refused; nothing is written.
    let bad = p(dir.path(), "bad.cbor");
    let r = custody([
        "registry",
        "edit",
        &cbor,
        "--out",
        &bad,
        "--add-hardware",
        &format!("par1:{FRA1_EK}"),
    ]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("bound to site"), "{}", r.stderr);
    assert!(!Path::new(&bad).exists());
}
