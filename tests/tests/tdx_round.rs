//! Intel TDX rounds appraised end to end by a real verifier (issue 23). This machine has
//! no TDX hardware: the quotes are a real v4 quote re-signed over each round's binding
//! under a test Intel-shaped chain ([`custody_e2e::tdx`], tests/testdata/tdx-test-root),
//! which the verifier trusts only through `[tdx] test_root`. Each test is one case, with
//! the check that must decide it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use custody_e2e::pushed::{node_with, Node};
use custody_e2e::tdx::{self, Td};
use custody_formats::bundle::TdxEvidence;
use custody_registry::model::{Hardware, HardwareId};

/// A node whose TDX platform (PPID) the registry puts at `ppid_site` (its TPM EK is at
/// `par1`), with `[tdx]` from the test collateral `dir` and `reference`.
async fn tdx_node(ppid_site: &str, dir: std::path::PathBuf, reference: &str) -> Node {
    let reference = reference.to_owned();
    let site = ppid_site.to_owned();
    node_with(Some("fra1"), "", move |_| {
        (
            vec![Hardware {
                site,
                id: HardwareId::TdxPpid(tdx::ppid()),
                label: None,
            }],
            tdx::config(&dir, &reference),
        )
    })
    .await
}

fn real_mr_td() -> String {
    format!("mr_td = [\"{}\"]\n", hex::encode(tdx::real_td().mr_td))
}

/// The captured TD's image, and its launch configuration: TD attributes with DEBUG and
/// PERFMON under the mask (the rest free), every XFAM bit.
fn real_td_reference() -> String {
    let td = tdx::real_td();
    let mut mask = [0u8; 8];
    mask[0] = 0x01;
    mask[7] = 0x80;
    let value: [u8; 8] = std::array::from_fn(|i| td.td_attributes[i] & mask[i]);
    format!(
        "{}td_attributes = \"{}/{}\"\nxfam = \"{}\"\n",
        real_mr_td(),
        hex::encode(value),
        hex::encode(mask),
        hex::encode(td.xfam)
    )
}

/// The node's own TD on a platform registered at its site: verified, UpToDate, the
/// session key in CVM memory, the node trusted; the same from a v5 quote. Then each
/// forgery fails at its check:
/// a quote for an earlier round, another TD image, a debuggable TD, the same image with
/// other CPU features (XFAM), a flipped bit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tdx_round_is_appraised_and_each_forgery_fails_at_its_check() {
    let n = tdx_node("par1", tdx::collateral(), &real_td_reference()).await;
    let td = Td::default();

    let mut earlier = Vec::new();
    let (r, input) = n
        .push_with(|binding, b| {
            let q = tdx::quote(binding, &td);
            earlier = q.clone();
            b.tdx = Some(TdxEvidence { quote: q });
        })
        .await;
    assert_eq!(r.failed_check, None, "{:?} {input}", r.reasons);
    let d = &input["devices"]["tdx"];
    assert_eq!(d["kind"], "tdx", "{input}");
    assert_eq!(d["verified"], true, "{input}");
    assert_eq!(d["claims"]["tcb_status"], "UpToDate", "{input}");
    assert_eq!(d["claims"]["ppid"], hex::encode(tdx::ppid()), "{input}");
    assert_eq!(d["guest"]["reference"], "matched", "{input}");
    assert_eq!(d["guest"]["platform"], "bound", "{input}");
    assert_eq!(input["key_protection"]["level"], "cvm", "{input}");
    assert_eq!(n.v.node("hostile")["node"]["state"], "trusted");

    // A v5 quote (TD report 1.5) of the same TD, as TDX module 1.5 platforms write it.
    let (r, input) = n
        .push_with(|binding, b| {
            let q = tdx::quote_v5(binding, &td);
            earlier = q.clone();
            b.tdx = Some(TdxEvidence { quote: q });
        })
        .await;
    assert_eq!(r.failed_check, None, "{:?} {input}", r.reasons);
    assert_eq!(input["devices"]["tdx"]["claims"]["version"], 5, "{input}");
    assert_eq!(input["key_protection"]["level"], "cvm", "{input}");

    // The quote of the round before, replayed: its REPORT_DATA is that round's binding.
    let (r, _) = n
        .push_with(|_, b| b.tdx = Some(TdxEvidence { quote: earlier }))
        .await;
    assert_eq!(
        r.failed_check.as_deref(),
        Some("tdx.report_data"),
        "{:?}",
        r.reasons
    );

    // Another TD image (any TD can quote any round's public binding).
    let other = Td {
        mr_td: [0x42; 48],
        ..Td::default()
    };
    let (r, input) = n
        .push_with(|binding, b| {
            b.tdx = Some(TdxEvidence {
                quote: tdx::quote(binding, &other),
            })
        })
        .await;
    assert_eq!(r.failed_check.as_deref(), Some("tdx.mr_td"), "{:?}", r.reasons);
    assert!(r.reasons[0].contains(&hex::encode([0x42; 48])), "{:?}", r.reasons);
    assert_eq!(input["devices"]["tdx"]["verified"], false, "{input}");
    assert_eq!(input["key_protection"]["level"], "process", "{input}");

    // The node's own image, launched debuggable: the host can read its memory.
    let debug = Td {
        td_attributes: [1, 0, 0, 0, 0, 0, 0, 0],
        ..Td::default()
    };
    let (r, _) = n
        .push_with(|binding, b| {
            b.tdx = Some(TdxEvidence {
                quote: tdx::quote(binding, &debug),
            })
        })
        .await;
    assert_eq!(r.failed_check.as_deref(), Some("tdx.debug"), "{:?}", r.reasons);

    // The node's own image, launched with another XFAM (AVX-512 state off).
    let mut xfam = tdx::real_td().xfam;
    xfam[0] ^= 0xe0;
    let other_features = Td {
        xfam,
        ..Td::default()
    };
    let (r, _) = n
        .push_with(|binding, b| {
            b.tdx = Some(TdxEvidence {
                quote: tdx::quote(binding, &other_features),
            })
        })
        .await;
    assert_eq!(r.failed_check.as_deref(), Some("tdx.xfam"), "{:?}", r.reasons);
    assert!(
        r.reasons[0].contains("bits e000000000000000 differ"),
        "{:?}",
        r.reasons
    );

    // One bit of the TD report changed after signing.
    let (r, _) = n
        .push_with(|binding, b| {
            let mut q = tdx::quote(binding, &td);
            q[48 + 200] ^= 0x10;
            b.tdx = Some(TdxEvidence { quote: q });
        })
        .await;
    assert_eq!(
        r.failed_check.as_deref(),
        Some("tdx.quote_signature"),
        "{:?}",
        r.reasons
    );
    assert_eq!(n.v.node("hostile")["node"]["consecutive_failures"], 5);
}

/// A genuine quote from a TDX platform registered at another site is not this node's
/// (`tdx.platform`); one whose PCK the collateral lists as revoked fails at
/// `tdx.revocation`, and a revoked TCB at `tdx.tcb`.
async fn push(n: &Node) -> (custody_e2e::pushed::Pushed, serde_json::Value) {
    n.push_with(|binding, b| {
        b.tdx = Some(TdxEvidence {
            quote: tdx::quote(binding, &Td::default()),
        })
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tdx_platform_elsewhere_or_revoked_fails_at_its_check() {
    let n = tdx_node("fra1", tdx::collateral(), &real_mr_td()).await;
    let (r, _) = push(&n).await;
    assert_eq!(r.failed_check.as_deref(), Some("tdx.platform"), "{:?}", r.reasons);
    assert!(
        r.reasons[0].contains("registered at site fra1"),
        "{:?}",
        r.reasons
    );

    let n = tdx_node("par1", tdx::collateral_pck_revoked(), &real_mr_td()).await;
    let (r, _) = push(&n).await;
    assert_eq!(
        r.failed_check.as_deref(),
        Some("tdx.revocation"),
        "{:?}",
        r.reasons
    );

    let n = tdx_node("par1", tdx::collateral_tcb_revoked(), "").await;
    let (r, _) = push(&n).await;
    assert_eq!(r.failed_check.as_deref(), Some("tdx.tcb"), "{:?}", r.reasons);
}

/// Without reference values a genuine quote only says "some TD saw this round": the round
/// passes but the session key stays `process`, and the reasons say why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tdx_quote_without_reference_values_leaves_the_key_in_process_memory() {
    let n = tdx_node("par1", tdx::collateral(), "").await;
    let (r, input) = n
        .push_with(|binding, b| {
            b.tdx = Some(TdxEvidence {
                quote: tdx::quote(binding, &Td::default()),
            })
        })
        .await;
    assert_eq!(r.failed_check, None, "{:?} {input}", r.reasons);
    assert_eq!(
        input["devices"]["tdx"]["guest"]["reference"], "unconfigured",
        "{input}"
    );
    assert_eq!(input["key_protection"]["level"], "process", "{input}");
    let why = input["key_protection"]["reasons"].to_string();
    assert!(why.contains("tdx_reference: unconfigured"), "{input}");
}

/// A verifier without TDX collateral cannot appraise a TDX quote, bare metal or an Azure
/// CVM's: the round fails at `tdx.collateral`, the node is `failed` (untrusted), but that
/// is the verifier's shortcoming and never counts towards revocation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_tdx_collateral_fails_the_round_without_blaming_the_node() {
    let n = node_with(Some("par1"), "", |_| (vec![], String::new())).await;
    for _ in 0..2 {
        let (r, _) = n
            .push_with(|binding, b| {
                b.tdx = Some(TdxEvidence {
                    quote: tdx::quote(binding, &Td::default()),
                })
            })
            .await;
        assert_eq!(
            r.failed_check.as_deref(),
            Some("tdx.collateral"),
            "{:?}",
            r.reasons
        );
        assert!(r.reasons[0].contains("no TDX collateral"), "{:?}", r.reasons);
    }
    // The same for an Azure TDX CVM's TD quote: the verifier's gap, not the node's.
    let (r, input) = n
        .push_with(|_, b| {
            let ak = b.tpm.as_ref().unwrap().ak_public.clone();
            b.azure = Some(custody_e2e::azure::tdx_evidence(&ak, &Td::default()));
        })
        .await;
    assert_eq!(
        r.failed_check.as_deref(),
        Some("tdx.collateral"),
        "{:?}",
        r.reasons
    );
    assert_eq!(input["devices"]["azure"]["verified"], false, "{input}");
    let node = n.v.node("hostile");
    assert_eq!(node["node"]["state"], "failed", "{node}");
    assert_eq!(node["node"]["consecutive_failures"], 0, "{node}");
}

/// Intel reissues TCB info about monthly: an operator copies the newer files into
/// `[tdx] collateral` and the running verifier takes them up (here: a TCB Intel now calls
/// revoked). A directory that does not load leaves the sets in force.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newer_collateral_is_taken_up_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let copy = |from: &std::path::Path| {
        for f in custody_verifier::tdx::COLLATERAL_FILES {
            std::fs::copy(from.join(f), dir.path().join(f)).unwrap();
        }
    };
    copy(&tdx::collateral());
    let n = tdx_node("par1", dir.path().to_path_buf(), "collateral_check_secs = 1\n").await;
    let (r, _) = push(&n).await;
    assert_eq!(r.failed_check, None, "{:?}", r.reasons);

    copy(&tdx::collateral_tcb_revoked());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let r = loop {
        let (r, _) = push(&n).await;
        if r.failed_check.is_some() || std::time::Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    };
    assert_eq!(r.failed_check.as_deref(), Some("tdx.tcb"), "{:?}", r.reasons);
    assert!(
        n.v.log().contains("Intel TDX collateral reloaded"),
        "{}",
        n.v.log()
    );

    std::fs::write(dir.path().join("pck_crl.der"), b"not a CRL").unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert!(
        n.v.log().contains("Intel TDX collateral not reloaded"),
        "{}",
        n.v.log()
    );
    let (r, _) = push(&n).await;
    assert_eq!(r.failed_check.as_deref(), Some("tdx.tcb"), "{:?}", r.reasons);
}
