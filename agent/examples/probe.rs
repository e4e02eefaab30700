//! `probe [--out DIR] [--nonce HEX]`: run the NVML (`nvgpu`) and SEV-SNP collectors once
//! and print ONE pretty JSON object with everything the drivers returned: per-GPU
//! identity, every confidential-computing query's answer or error, and for each report:
//! its length, SPDM version byte, the certificate chain's length, encoding and count.
//!
//! `--nonce` is the 32-byte value used as the binding (the SPDM requester nonce and SNP
//! `report_data[0..32]`); without it a fixed one (bytes 0x00..0x1f) is used.
//!
//! With `--out DIR` it writes, per attested GPU `i`, `gpu<i>-report.bin` and
//! `gpu<i>-certs.pem` (PEM; DER chains converted), for SNP `snp-report.bin`,
//! `snp-vcek.bin` and `snp-ca.pem`, and `nonce.hex`, so that
//!
//! ```text
//! custody verify nvgpu --report DIR/gpu0-report.bin --certs DIR/gpu0-certs.pem --nonce $(cat DIR/nonce.hex)
//! ```
//! appraises the GPU's report.
//!
//! Exit status: 0 when the JSON was printed (also when NVML or `/dev/sev-guest` is absent:
//! the JSON says why); 1 when an output file could not be written (the JSON lists it);
//! 2 on bad usage.

use anyhow::{bail, Context};
use custody_agent::collector::{CollectError, Collector, Evidence};
use custody_agent::nvml::{self, GpuReading, NvmlCollector};
use custody_agent::pem::{self, ChainEncoding};
use custody_agent::snp::SnpCollector;
use custody_formats::binding::{Binding, Nonce};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::ExitCode;

struct Args {
    out: Option<PathBuf>,
    binding: Binding,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut out = None;
    let mut binding = Binding(core::array::from_fn(|i| i as u8));
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--out" => out = Some(PathBuf::from(it.next().context("--out needs a directory")?)),
            "--nonce" => {
                let h = it.next().context("--nonce needs 64 hex digits")?;
                let n = Nonce::from_hex(&h).map_err(|e| anyhow::anyhow!("--nonce: {e}"))?;
                binding = Binding(*n.as_bytes());
            }
            "-h" | "--help" => bail!("usage"),
            other => bail!("unknown argument {other:?}"),
        }
    }
    Ok(Args { out, binding })
}

/// Where `--out` files go, and what happened to each.
#[derive(Default)]
struct Out {
    dir: Option<PathBuf>,
    files: Vec<String>,
    errors: Vec<String>,
}

impl Out {
    fn write(&mut self, name: &str, bytes: &[u8]) {
        let Some(dir) = &self.dir else { return };
        let p = dir.join(name);
        match std::fs::write(&p, bytes) {
            Ok(()) => self.files.push(p.display().to_string()),
            Err(e) => self.errors.push(format!("{}: {e}", p.display())),
        }
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("probe: {e}\nusage: probe [--out DIR] [--nonce HEX(64)]");
            return ExitCode::from(2);
        }
    };
    let mut out = Out {
        dir: args.out.clone(),
        ..Out::default()
    };
    if let Some(dir) = &args.out {
        if let Err(e) = std::fs::create_dir_all(dir) {
            out.errors.push(format!("{}: {e}", dir.display()));
        }
    }
    out.write(
        "nonce.hex",
        format!("{}\n", hex(args.binding.as_bytes())).as_bytes(),
    );

    let gpu = probe_gpus(&args.binding, &mut out);
    let snp = probe_snp(&args.binding, &mut out);
    let tdx = probe_tdx(&args.binding, &mut out);

    let failed_writes = !out.errors.is_empty();
    let json = json!({
        "binding": hex(args.binding.as_bytes()),
        "nvgpu": gpu,
        "snp": snp,
        "tdx": tdx,
        "files": out.files,
        "write_errors": out.errors,
    });
    match serde_json::to_string_pretty(&json) {
        Ok(s) => println!("{s}"),
        Err(e) => {
            eprintln!("probe: could not encode JSON: {e}");
            return ExitCode::from(1);
        }
    }
    if failed_writes {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn probe_gpus(binding: &Binding, out: &mut Out) -> Value {
    let collector = NvmlCollector::new();
    let readings = match collector.read(binding) {
        Ok(r) => r,
        Err(e) => return error_json(&e),
    };
    let gpus: Vec<Value> = readings.iter().map(|r| gpu_json(r, binding, out)).collect();
    // What the collector's `collect` would answer for a round.
    let round = match nvml::assemble(readings) {
        Ok(r) => format!(
            "ok: {} report(s), {} identit(y/ies)",
            r.evidence.len(),
            r.identities.len()
        ),
        Err(e) => format!("error: {e}"),
    };
    json!({ "available": true, "collect": round, "gpus": gpus })
}

fn gpu_json(r: &GpuReading, binding: &Binding, out: &mut Out) -> Value {
    let identity = serde_json::to_value(&r.identity).unwrap_or_else(|e| json!(format!("error: {e}")));
    let attestation = match &r.attestation {
        None => json!("not requested: confidential computing is off"),
        Some(Err(e)) => json!({ "error": e }),
        Some(Ok(a)) => {
            let ev = &a.evidence;
            let (encoding, count) = match pem::classify(&ev.cert_chain) {
                ChainEncoding::Pem(n) => ("pem", n),
                ChainEncoding::Der(n) => ("der", n),
                ChainEncoding::Unknown => ("unknown", 0),
            };
            out.write(&format!("gpu{}-report.bin", ev.index), &ev.report);
            match pem::chain_to_pem(&ev.cert_chain) {
                Some(p) => out.write(&format!("gpu{}-certs.pem", ev.index), &p),
                // Keep the raw bytes for inspection when they are neither PEM nor DER.
                None => out.write(&format!("gpu{}-certs.raw", ev.index), &ev.cert_chain),
            }
            json!({
                "report_len": ev.report.len(),
                "spdm_version": ev.report.first().map(|v| format!("0x{v:02x}")),
                "request_code": ev.report.get(1).map(|v| format!("0x{v:02x}")),
                // SPDM 1.1 GET_MEASUREMENTS request: version, code, param1, param2, nonce[32].
                "request_nonce_is_binding": ev.report.get(4..36) == Some(&binding.as_bytes()[..]),
                "cert_chain_len": ev.cert_chain.len(),
                "cert_chain_encoding": encoding,
                "cert_count": count,
                "cec_report_len": a.cec_report.as_ref().map(Vec::len),
            })
        }
    };
    json!({ "identity": identity, "attestation": attestation })
}

fn probe_snp(binding: &Binding, out: &mut Out) -> Value {
    match SnpCollector::new().collect(binding) {
        Ok(Evidence::Snp(s)) => {
            out.write("snp-report.bin", &s.report);
            out.write("snp-vcek.bin", &s.vcek);
            if let Some(ca) = &s.ca_chain {
                out.write("snp-ca.pem", ca);
            }
            json!({
                "available": true,
                "report_len": s.report.len(),
                "report_version": s.report.get(..4).map(hex),
                "vcek_len": s.vcek.len(),
                "ca_chain_certs": s.ca_chain.as_deref().map(pem::count_pem),
            })
        }
        Ok(_) => json!({ "available": true, "error": "unexpected evidence kind" }),
        Err(e) => error_json(&e),
    }
}

/// A TDX quote through configfs-tsm, written for `custody verify tdx --quote`.
fn probe_tdx(binding: &Binding, out: &mut Out) -> Value {
    match custody_agent::tsm::TsmCollector::new().collect(binding) {
        Ok(Evidence::Tdx(t)) => {
            out.write("tdx-quote.bin", &t.quote);
            json!({
                "available": true,
                "quote_len": t.quote.len(),
                "quote_version": t.quote.get(..2).map(hex),
            })
        }
        Ok(_) => json!({ "available": true, "error": "unexpected evidence kind" }),
        Err(e) => error_json(&e),
    }
}

fn error_json(e: &CollectError) -> Value {
    match e {
        CollectError::NotAvailable { reason, .. } => json!({ "available": false, "reason": reason }),
        CollectError::Failed { reason, .. } => json!({ "available": true, "error": reason }),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
