//! Azure confidential VMs (SEV-SNP behind Azure's paravisor) appraised in rounds by a real
//! verifier (issue 23). This machine is not an Azure CVM: the HCL report is a real one
//! whose runtime data names the test node's own AK (swtpm), its SNP report re-signed over
//! that runtime data by the test VCEK ([`custody_e2e::azure`]), which the verifier trusts
//! only through `[snp] test_ark`. The vTPM quote is the node's real TPM quote over the
//! round's binding. Each test is one case, with the check that must decide it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use custody_e2e::azure;
use custody_e2e::pushed::{node, Node};
use custody_e2e::snp::{self, Guest};
use custody_formats::bundle::EvidenceBundle;
use serde_json::Value;

fn reference() -> String {
    format!(
        "measurements = [\"{}\"]\nhost_data = \"{}\"\n",
        hex::encode(snp::real_measurement()),
        hex::encode(snp::real_host_data())
    )
}

/// A round whose Azure evidence `make` builds from the node's AK (TPMT_PUBLIC).
async fn push(
    n: &Node,
    make: impl FnOnce(&[u8]) -> custody_formats::bundle::AzureEvidence,
) -> (custody_e2e::pushed::Pushed, Value) {
    n.push_with(|_, b: &mut EvidenceBundle| {
        let ak = b.tpm.as_ref().unwrap().ak_public.clone();
        b.azure = Some(make(&ak));
    })
    .await
}

/// The paravisor's report on a registered chip, naming the node's AK: verified, the vTPM
/// named as the paravisor's, the key in CVM memory. Then: another key named, runtime data
/// changed after signing, another paravisor image.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_azure_cvm_round_is_appraised_and_each_forgery_fails_at_its_check() {
    let n = node(Some("par1"), &reference()).await;

    let (r, input) = push(&n, |ak| azure::evidence(ak, &Guest::default())).await;
    assert_eq!(r.failed_check, None, "{:?} {input}", r.reasons);
    let d = &input["devices"]["azure"];
    assert_eq!(d["kind"], "azure", "{input}");
    assert_eq!(d["verified"], true, "{input}");
    assert_eq!(d["claims"]["tpm"], "paravisor-vtpm", "{input}");
    assert_eq!(d["guest"]["reference"], "matched", "{input}");
    assert_eq!(d["guest"]["platform"], "bound", "{input}");
    assert_eq!(input["key_protection"]["level"], "cvm", "{input}");
    assert_eq!(n.v.node("hostile")["node"]["state"], "trusted");

    // The runtime data names another vTPM key: the quote is not by the paravisor's key.
    let (r, _) = push(&n, |ak| {
        let mut rt: Value = serde_json::from_slice(&azure::runtime_data(ak)).unwrap();
        for k in rt["keys"].as_array_mut().unwrap() {
            if k["kid"] == "HCLAkPub" {
                let n = k["n"].as_str().unwrap().to_owned();
                k["n"] = format!("{}A{}", &n[..10], &n[11..]).into();
            }
        }
        azure::evidence_with(&serde_json::to_vec(&rt).unwrap(), &Guest::default())
    })
    .await;
    assert_eq!(r.failed_check.as_deref(), Some("azure.ak"), "{:?}", r.reasons);

    // The runtime data changed after the paravisor's report committed to it.
    let (r, _) = push(&n, |ak| {
        let mut e = azure::evidence(ak, &Guest::default());
        let last = e.hcl_report.len() - 2;
        e.hcl_report[last] ^= 0x01;
        e
    })
    .await;
    assert_eq!(
        r.failed_check.as_deref(),
        Some("azure.snp_report_data"),
        "{:?}",
        r.reasons
    );

    // Another paravisor image than the reference.
    let other = Guest {
        measurement: [0x42; 48],
        ..Guest::default()
    };
    let (r, input) = push(&n, |ak| azure::evidence(ak, &other)).await;
    assert_eq!(
        r.failed_check.as_deref(),
        Some("azure.measurement"),
        "{:?}",
        r.reasons
    );
    assert_eq!(input["key_protection"]["level"], "process", "{input}");
}

/// A TDX CVM behind Azure's paravisor: the HCL report's TDREPORT and the TD quote Azure's
/// quoting service made of it, on a platform (PPID) registered at the node's site and the
/// operator's TD image: verified, the key in CVM memory. Then: a TDREPORT of another TD
/// than the quote, another TD image, the TD quote replaced by one for other runtime data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_azure_tdx_round_is_appraised_and_each_forgery_fails_at_its_check() {
    use custody_e2e::tdx::{self, Td};
    use custody_registry::model::{Hardware, HardwareId};
    let reference = format!("mr_td = [\"{}\"]\n", hex::encode(tdx::real_td().mr_td));
    let n = custody_e2e::pushed::node_with(Some("fra1"), "", move |_| {
        (
            vec![Hardware {
                site: "par1".into(),
                id: HardwareId::TdxPpid(tdx::ppid()),
                label: None,
            }],
            tdx::config(&tdx::collateral(), &reference),
        )
    })
    .await;

    let (r, input) = push(&n, |ak| azure::tdx_evidence(ak, &Td::default())).await;
    assert_eq!(r.failed_check, None, "{:?} {input}", r.reasons);
    let d = &input["devices"]["azure"];
    assert_eq!(d["verified"], true, "{input}");
    assert_eq!(d["claims"]["tpm"], "paravisor-vtpm", "{input}");
    assert_eq!(d["claims"]["tdx"]["tcb_status"], "UpToDate", "{input}");
    assert!(d["claims"]["snp"].is_null(), "{input}");
    assert_eq!(d["guest"]["reference"], "matched", "{input}");
    assert_eq!(d["guest"]["platform"], "bound", "{input}");
    assert_eq!(input["key_protection"]["level"], "cvm", "{input}");
    assert_eq!(n.v.node("hostile")["node"]["state"], "trusted");

    // The HCL's TDREPORT measures another TD (its MRTD changed) than the TD quote.
    let (r, _) = push(&n, |ak| {
        let mut e = azure::tdx_evidence(ak, &Td::default());
        e.hcl_report[32 + 512 + 16] ^= 0x01;
        e
    })
    .await;
    assert_eq!(
        r.failed_check.as_deref(),
        Some("azure.td_report"),
        "{:?}",
        r.reasons
    );

    // Another TD image than the reference, quoted genuinely.
    let other = Td {
        mr_td: [0x42; 48],
        ..Td::default()
    };
    let (r, input) = push(&n, |ak| azure::tdx_evidence(ak, &other)).await;
    assert_eq!(r.failed_check.as_deref(), Some("azure.mr_td"), "{:?}", r.reasons);
    assert_eq!(input["key_protection"]["level"], "process", "{input}");

    // The TD quote of another HCL report (its REPORTDATA commits to other runtime data).
    let (r, _) = push(&n, |ak| {
        let mut e = azure::tdx_evidence(ak, &Td::default());
        let mut other_ak = ak.to_vec();
        let last = other_ak.len() - 1;
        other_ak[last] ^= 0x01;
        e.td_quote = azure::tdx_evidence(&other_ak, &Td::default()).td_quote;
        e
    })
    .await;
    assert_eq!(
        r.failed_check.as_deref(),
        Some("azure.tdx_report_data"),
        "{:?}",
        r.reasons
    );
    assert_eq!(n.v.node("hostile")["node"]["consecutive_failures"], 3);
}

/// A genuine paravisor report from a chip registered at another site is not this node's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_azure_report_from_a_chip_at_another_site_fails_at_azure_platform() {
    let n = node(Some("fra1"), &reference()).await;
    let (r, _) = push(&n, |ak| azure::evidence(ak, &Guest::default())).await;
    assert_eq!(
        r.failed_check.as_deref(),
        Some("azure.platform"),
        "{:?}",
        r.reasons
    );
    assert!(
        r.reasons[0].contains("registered at site fra1"),
        "{:?}",
        r.reasons
    );
}

/// The agent's side on an Azure CVM (a vTPM provisioned as Azure's paravisor does it: the
/// AK persisted at 0x81000003, the HCL report in NV index 0x01400001): the node enrolls
/// with the persistent key as its AK, the Azure collector reads the report from NV, and
/// the round passes with the key in CVM memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_reads_the_hcl_report_and_quotes_with_the_paravisors_key() {
    use custody_agent::collector::{Collector, Evidence};
    let mut provisioned = None;
    let n = custody_e2e::pushed::node_prepared(
        Some("par1"),
        &reference(),
        custody_agent::tpm::default_pcrs(),
        |_| (vec![], String::new()),
        |t| {
            provisioned = Some(azure::provision_vtpm(&t.tcti(), &Guest::default()));
            Some(azure::AK_HANDLE)
        },
    )
    .await;
    let (vcek, chain) = azure::vcek_files();
    let collector = custody_agent::azure::AzureCollector::new(n.tpm.clone(), vcek, Some(chain));
    let binding = n.session.binding(&custody_formats::binding::Nonce([0; 32]));
    let Evidence::Azure(read) = collector.collect(&binding).unwrap() else {
        panic!("not Azure evidence")
    };
    assert_eq!(
        Some(&read),
        provisioned.as_ref(),
        "the report as provisioned in NV"
    );

    let (r, input) = n.push_with(|_, b| b.azure = Some(read)).await;
    assert_eq!(r.failed_check, None, "{:?} {input}", r.reasons);
    assert_eq!(input["devices"]["azure"]["verified"], true, "{input}");
    assert_eq!(input["key_protection"]["level"], "cvm", "{input}");

    // A TPM without the paravisor's NV index: not an Azure CVM.
    let t = custody_e2e::Swtpm::start();
    let plain = std::sync::Arc::new(
        custody_agent::tpm::TpmCollector::new(custody_agent::tpm::TpmConfig {
            tcti: t.tcti(),
            pcrs: custody_agent::tpm::default_pcrs(),
            event_log: None,
        })
        .unwrap(),
    );
    let (vcek, chain) = azure::vcek_files();
    let e = custody_agent::azure::AzureCollector::new(plain, vcek, Some(chain))
        .collect(&binding)
        .unwrap_err();
    assert!(e.to_string().contains("not an Azure CVM"), "{e}");
}

/// The agent's side on an Azure TDX CVM: the HCL report (a TDREPORT) read from NV, the TD
/// quote from the file the operator's provisioning wrote (`[azure] td_quote`), no VCEK;
/// the round passes with the key in CVM memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_sends_a_tdx_cvms_td_quote_from_its_file() {
    use custody_agent::collector::{Collector, Evidence};
    use custody_e2e::tdx::{self, Td};
    use custody_registry::model::{Hardware, HardwareId};
    let reference = format!("mr_td = [\"{}\"]\n", hex::encode(tdx::real_td().mr_td));
    let mut provisioned = None;
    let n = custody_e2e::pushed::node_prepared(
        Some("par1"),
        "",
        custody_agent::tpm::default_pcrs(),
        move |_| {
            (
                vec![Hardware {
                    site: "par1".into(),
                    id: HardwareId::TdxPpid(tdx::ppid()),
                    label: None,
                }],
                tdx::config(&tdx::collateral(), &reference),
            )
        },
        |t| {
            provisioned = Some(azure::provision_vtpm_tdx(&t.tcti(), &Td::default()));
            Some(azure::AK_HANDLE)
        },
    )
    .await;
    let provisioned = provisioned.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let td_quote = dir.path().join("td_quote.bin");
    std::fs::write(&td_quote, provisioned.td_quote.as_ref().unwrap()).unwrap();
    // No VCEK file exists: a TDX CVM does not read one.
    let collector =
        custody_agent::azure::AzureCollector::new(n.tpm.clone(), dir.path().join("absent.pem"), None)
            .with_td_quote(Some(td_quote.clone()));
    let binding = n.session.binding(&custody_formats::binding::Nonce([0; 32]));
    let Evidence::Azure(read) = collector.collect(&binding).unwrap() else {
        panic!("not Azure evidence")
    };
    assert_eq!(read, provisioned, "the report from NV, the quote from its file");

    let (r, input) = n.push_with(|_, b| b.azure = Some(read)).await;
    assert_eq!(r.failed_check, None, "{:?} {input}", r.reasons);
    assert_eq!(input["devices"]["azure"]["verified"], true, "{input}");
    assert_eq!(input["key_protection"]["level"], "cvm", "{input}");

    // The file missing: the round's Azure evidence fails to collect, saying which file.
    std::fs::remove_file(&td_quote).unwrap();
    let e = collector.collect(&binding).unwrap_err();
    assert!(e.to_string().contains("td_quote.bin"), "{e}");
}
