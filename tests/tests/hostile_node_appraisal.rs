//! A hostile node's evidence, appraised end to end by a real verifier: each test is one
//! attack, named after it, with the check that must stop it.
//!
//! SEV-SNP: this machine has no SNP hardware, so the reports are captured real reports
//! re-signed under a test AMD-shaped root ([`custody_e2e::snp`]) that the verifier trusts
//! only through `[snp] test_ark`. GPUs likewise: NVIDIA's sample report re-signed by a
//! test device chain ([`custody_e2e::nvgpu`]), trusted only through `[nvgpu] test_root`. The round binding is computable from public values, so
//! any SNP guest can produce a report for any node's round: only the reference values
//! (`[snp]`) and the registry's hardware binding tie it to the node.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use custody_e2e::nvgpu::Gpu;
use custody_e2e::pushed::{node, node_with};
use custody_e2e::snp::{self, Guest};
use custody_formats::bundle::EvidenceBundle;
use custody_registry::model::{Hardware, HardwareId};

fn reference(vmpl: u32) -> String {
    format!(
        "measurements = [\"{}\"]\nhost_data = \"{}\"\nvmpl = {vmpl}\n",
        hex::encode(snp::real_measurement()),
        hex::encode(snp::real_host_data())
    )
}

/// Another guest (a VMPL the agent does not run at, another image, other host data) can
/// sign a report for this node's round: each fails the round naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_snp_report_from_another_guest_does_not_make_the_key_cvm() {
    let n = node(Some("par1"), &reference(0)).await;

    // The node's own guest, its chip at the node's site: the key is in CVM memory.
    let (r, input) = n.push(&Guest::default()).await;
    assert_eq!(r.failed_check, None, "{:?} {input}", r.reasons);
    assert_eq!(input["key_protection"]["level"], "cvm", "{input}");
    assert_eq!(
        input["devices"]["snp"]["guest"]["reference"], "matched",
        "{input}"
    );
    assert_eq!(input["devices"]["snp"]["guest"]["platform"], "bound", "{input}");

    // A report requested from VMPL 3 (an unprivileged layer of some guest).
    let (r, input) = n
        .push(&Guest {
            vmpl: 3,
            ..Guest::default()
        })
        .await;
    assert_eq!(
        r.failed_check.as_deref(),
        Some("snp.vmpl"),
        "{:?} {input}",
        r.reasons
    );
    assert!(r.reasons[0].contains("VMPL is 3, expected 0"), "{:?}", r.reasons);
    assert_eq!(input["devices"]["snp"]["verified"], false, "{input}");
    assert_eq!(input["key_protection"]["level"], "process", "{input}");

    // Another launch measurement (a guest the operator did not approve).
    let (r, _) = n
        .push(&Guest {
            measurement: [0x5a; 48],
            ..Guest::default()
        })
        .await;
    assert_eq!(
        r.failed_check.as_deref(),
        Some("snp.measurement"),
        "{:?}",
        r.reasons
    );
    assert!(r.reasons[0].contains(&hex::encode([0x5a; 48])), "{:?}", r.reasons);

    // Other host data.
    let (r, _) = n
        .push(&Guest {
            host_data: [0x77; 32],
            ..Guest::default()
        })
        .await;
    assert_eq!(
        r.failed_check.as_deref(),
        Some("snp.host_data"),
        "{:?}",
        r.reasons
    );
}

/// A genuine report with no configured reference says only that some guest saw the
/// round: it is kept, but the key stays in `process` memory and the input says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_snp_report_without_reference_values_leaves_the_key_in_process_memory() {
    let n = node(None, "").await;
    let (r, input) = n
        .push(&Guest {
            vmpl: 3,
            measurement: [0x5a; 48],
            ..Guest::default()
        })
        .await;
    assert_eq!(r.failed_check, None, "{:?} {input}", r.reasons);
    assert_eq!(input["devices"]["snp"]["verified"], true, "{input}");
    assert_eq!(
        input["devices"]["snp"]["guest"]["reference"], "unconfigured",
        "{input}"
    );
    assert_eq!(input["key_protection"]["level"], "process", "{input}");
    let why = input["key_protection"]["reasons"].to_string();
    assert!(why.contains("snp_reference: unconfigured"), "{input}");
}

/// A report from the operator's own image, but on a chip registered at another site
/// than the node's TPM: it vouches for another machine, and the round fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_snp_report_from_a_chip_at_another_site_fails_at_snp_platform() {
    let n = node(Some("fra1"), &reference(0)).await;
    let (r, input) = n.push(&Guest::default()).await;
    assert_eq!(
        r.failed_check.as_deref(),
        Some("snp.platform"),
        "{:?} {input}",
        r.reasons
    );
    assert!(r.reasons[0].contains("site fra1"), "{:?}", r.reasons);
    assert_eq!(input["key_protection"]["level"], "process", "{input}");
}

/// Issue 19 item 9 for GPUs: the round's binding is public, so any confidential GPU can
/// sign a report for any node's round. A GPU counts as the node's own only where the
/// registry puts its certificate serial at the node's site; a GPU of another machine
/// (registered elsewhere, or not at all) fails the round at `gpu0.platform`, and a report
/// for another round at `gpu0.nonce`. Its model is the signed report's, whatever NVML says.
/// The GPU is a test double ([`custody_e2e::nvgpu`]) under a test root the verifier trusts
/// only through `[nvgpu] test_root`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gpu_report_from_another_machine_does_not_count_as_the_nodes_gpu() {
    let own = Gpu::new(&[0x4e, 0x01]);
    let elsewhere = Gpu::new(&[0x4e, 0x02]);
    let unregistered = Gpu::new(&[0x4e, 0x03]);
    let n = node_with(Some("par1"), "", |dir| {
        let roots: String = [&own, &elsewhere, &unregistered]
            .iter()
            .map(|g| g.root_pem.clone())
            .collect();
        let p = dir.join("gpu-roots.pem");
        std::fs::write(&p, roots).unwrap();
        let at = |g: &Gpu, site: &str| Hardware {
            site: site.into(),
            id: HardwareId::GpuCertSerial(g.serial.clone()),
            label: None,
        };
        (
            vec![at(&own, "par1"), at(&elsewhere, "fra1")],
            format!("[nvgpu]\ntest_root = \"{}\"\n", p.display()),
        )
    })
    .await;
    fn with(g: &Gpu) -> impl FnOnce(&[u8; 32], &mut EvidenceBundle) + '_ {
        move |binding, b| {
            b.gpus = vec![g.evidence(0, binding)];
            // The agent's unsigned word: a chip it does not have.
            b.gpu_identities = vec![Gpu::identity(0, "NVIDIA B200")];
        }
    }

    // The node's own GPU, registered at its site: attested, named by its report.
    let (r, input) = n.push_with(with(&own)).await;
    assert_eq!(r.failed_check, None, "{:?} {input}", r.reasons);
    assert_eq!(input["devices"]["gpu0"]["verified"], true, "{input}");
    assert_eq!(input["devices"]["gpu0"]["platform"], "bound", "{input}");
    assert_eq!(input["gpus"][0]["attested"], true, "{input}");
    assert_eq!(input["gpus"][0]["model"], "GH100 A01 GSP FMC LF", "{input}");

    // A GPU registered at another site: it vouches for another machine.
    let (r, input) = n.push_with(with(&elsewhere)).await;
    assert_eq!(
        r.failed_check.as_deref(),
        Some("gpu0.platform"),
        "{:?} {input}",
        r.reasons
    );
    assert!(r.reasons[0].contains("site fra1"), "{:?}", r.reasons);
    assert_eq!(input["gpus"][0]["attested"], false, "{input}");

    // A genuine GPU the registry does not know.
    let (r, _) = n.push_with(with(&unregistered)).await;
    assert_eq!(
        r.failed_check.as_deref(),
        Some("gpu0.platform"),
        "{:?}",
        r.reasons
    );
    assert!(r.reasons[0].contains("not in the registry"), "{:?}", r.reasons);

    // The node's own GPU, but a report made for another round.
    let (r, _) = n
        .push_with(|_, b| {
            b.gpus = vec![own.evidence(0, &[0x11; 32])];
        })
        .await;
    assert_eq!(r.failed_check.as_deref(), Some("gpu0.nonce"), "{:?}", r.reasons);
}

/// Issue 22 (revocation collateral) end to end: with the ARK's CRL configured
/// (`[snp] crls`), a report whose chain runs through a revoked ASK fails the round at
/// `snp.revocation`; a CRL that lists nothing makes the chain `good`, one past its next
/// update `stale` (the round passes; policies decide). The CRLs are the test root's
/// (tests/testdata/snp-test-root/make.py), signed like AMD's KDS CRLs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_snp_chain_through_a_revoked_ask_fails_at_snp_revocation() {
    let crl = |name: &str| {
        custody_e2e::repo_root()
            .join("tests/testdata/snp-test-root")
            .join(name)
            .display()
            .to_string()
    };
    for (file, failed, status) in [
        ("crl_ask_revoked.der", Some("snp.revocation"), None),
        ("crl_good.der", None, Some("good")),
        ("crl_stale.der", None, Some("stale")),
    ] {
        let n = node(
            Some("par1"),
            &format!("{}crls = [\"{}\"]\n", reference(0), crl(file)),
        )
        .await;
        let (r, input) = n.push(&Guest::default()).await;
        assert_eq!(
            r.failed_check.as_deref(),
            failed,
            "{file}: {:?} {input}",
            r.reasons
        );
        match status {
            Some(s) => assert_eq!(
                input["devices"]["snp"]["claims"]["revocation"]["status"], s,
                "{file}: {input}"
            ),
            None => assert!(r.reasons[0].contains("revoked"), "{file}: {:?}", r.reasons),
        }
        // The operator sees when the CRL in use is due (issue 24: collateral freshness).
        let m = n.v.metrics().await;
        let due = m
            .lines()
            .find(|l| l.starts_with("custody_collateral_next_update_timestamp_seconds{kind=\"amd_crl\""))
            .unwrap_or_else(|| panic!("{file}: no collateral sample in\n{m}"));
        let at: i64 = due.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(at > 1_600_000_000, "{file}: {due}");
    }
}

/// Issue 22 (reference values for SEV-SNP): beyond the image (MEASUREMENT, HOST_DATA,
/// VMPL), the operator's ID key and a minimum TCB. A platform below the minimum fails at
/// `snp.tcb_min` naming the component; a guest launched with another ID key at
/// `snp.id_key_digest`; the captured report (SNP SPL 8) passes a minimum of 8.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_snp_guest_below_the_minimum_tcb_or_under_another_id_key_is_refused() {
    let id_key = hex::encode(snp::real_id_key_digest());
    for (extra, failed, reason) in [
        (
            format!("id_key_digests = [\"{id_key}\"]\n[snp.min_tcb]\nsnp = 9\n"),
            Some("snp.tcb_min"),
            "snp 8 < 9",
        ),
        (
            format!(
                "id_key_digests = [\"{}\"]\n[snp.min_tcb]\nsnp = 8\n",
                "ab".repeat(48)
            ),
            Some("snp.id_key_digest"),
            "ID key digest",
        ),
        (
            format!("id_key_digests = [\"{id_key}\"]\nforbid_policy = [\"debug\"]\n[snp.min_tcb]\nsnp = 8\n"),
            None,
            "",
        ),
    ] {
        let n = node(Some("par1"), &format!("{}{extra}", reference(0))).await;
        let (r, input) = n.push(&Guest::default()).await;
        assert_eq!(
            r.failed_check.as_deref(),
            failed,
            "{extra}: {:?} {input}",
            r.reasons
        );
        if failed.is_some() {
            assert!(r.reasons[0].contains(reason), "{:?}", r.reasons);
        } else {
            assert_eq!(input["key_protection"]["level"], "cvm", "{input}");
        }
    }
}
