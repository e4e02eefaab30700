#!/usr/bin/env python3
"""Anchor: time NVIDIA nv-local-gpu-verifier's offline appraisal of one Hopper report.

Uses the sample the wheel ships (verifier/samples/hopperAttestationReport.txt and
hopperCertChain.txt) and the root it pins (verifier/certs/verifier_device_root.pem); nothing
of NVIDIA's is copied into this repository. The steps are the ones cc_admin.attest() runs per
GPU, minus OCSP and RIM fetching (both online):

  1. GpuCertificateChains(TestHandle(pem))   PEM chain parse; shipped root swapped for the pinned one
  2. AttestationReport(report, settings)     SPDM GET_MEASUREMENTS request/response parse
  3. CcAdminUtils.verify_gpu_certificate_chain(chain, settings, fwid)
                                             FWID (leaf cert vs report) + X.509 chain to the root
  4. CcAdminUtils.verify_attestation_report(report, leaf, nonce, driver, vbios, settings)
                                             nonce, driver/VBIOS version, ECDSA P-384 signature

NVIDIA's path has no cache: every report pays all four steps, so each iteration is a cold
appraisal. Network access is blocked for the whole run (a step that tried to go online would
fail the run rather than be timed).

Prints one JSON line on stdout.
"""

import argparse
import importlib.metadata
import json
import logging
import os
import socket
import statistics
import sys
import tempfile
import time

# verifier.config deletes and recreates ./verifier.log at import and logs DEBUG to it on every
# call; keep that file out of the caller's directory.
_LOGDIR = tempfile.TemporaryDirectory(prefix="nvverifier-")
_CWD = os.getcwd()
os.chdir(_LOGDIR.name)


def _no_network(*_a, **_k):
    raise RuntimeError("network access attempted during the offline anchor")


socket.socket.connect = _no_network  # type: ignore[method-assign]
socket.create_connection = _no_network  # type: ignore[assignment]

from verifier.attestation import AttestationReport  # noqa: E402
from verifier.cc_admin_utils import CcAdminUtils  # noqa: E402
from verifier.config import GPU_ARCHITECTURE_MAP, BaseSettings, HopperSettings, info_log  # noqa: E402
from verifier.nvml.gpu_cert_chains import GpuCertificateChains  # noqa: E402
from verifier.nvml.test_handle import TestHandle  # noqa: E402
from verifier.utils import convert_string_to_blob  # noqa: E402

os.chdir(_CWD)

# The nonce in the SPDM request of the shipped hopperAttestationReport.txt. It is the
# attestation-sdk unit-test nonce; the package's own BaseSettings.NONCE (4cff7f53...) does
# NOT match its shipped Hopper sample (checked and reported below).
SAMPLE_NONCE = "931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb"
# What verifier/nvml/nvmlHandlerTest.py (the package's --test_no_gpu handle) reports.
DRIVER_VERSION = "550.90.07"
VBIOS_VERSION = "96.00.9f.00.01"

STEPS = ("chain_parse", "report_parse", "fwid_and_chain", "nonce_versions_signature")


def appraise(pem, report, nonce, host, settings, clock, times):
    """One full offline appraisal; host = (driver version, VBIOS version, FWID required)."""
    driver, vbios, need_fwid = host
    t0 = clock()
    chain = GpuCertificateChains(TestHandle(pem)).GpuAttestationCertificateChain
    t1 = clock()
    ar = AttestationReport(report, settings)
    t2 = clock()
    fwid = ar.get_response_message().get_opaque_data().get_data("OPAQUE_FIELD_ID_FWID").hex()
    ok, expired, _ = CcAdminUtils.verify_gpu_certificate_chain(chain, settings, fwid)
    t3 = clock()
    if not ok or expired:
        raise SystemExit(f"verify_gpu_certificate_chain failed (expired={expired})")
    # Raises NonceMismatchError / ...VersionMismatchError / SignatureVerificationError on failure.
    sig_ok = CcAdminUtils.verify_attestation_report(
        attestation_report_obj=ar,
        gpu_leaf_certificate=chain[0],
        nonce=nonce,
        driver_version=driver,
        vbios_version=vbios,
        settings=settings,
    )
    t4 = clock()
    if sig_ok is not True:
        raise SystemExit(f"verify_attestation_report returned {sig_ok!r}")
    if need_fwid and not fwid:
        # NVIDIA skips the FWID comparison when the report has no FWID field (pre-550 drivers).
        raise SystemExit("report carries no FWID, so NVIDIA skips the FWID check; pass --allow-no-fwid")
    if times is not None:
        for k, v in zip(STEPS, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            times[k].append(v)
    return t4 - t0


def expect_reject(what, fn):
    try:
        r = fn()
    except Exception as e:  # the package signals most failures by raising
        return type(e).__name__
    if r is False or (isinstance(r, tuple) and r and r[0] is False):
        return "returned False"
    raise SystemExit(f"{what}: accepted; refusing to time a verifier that does not reject")


def run(pem, report, nonce, host, settings, iters, warmup):
    clock = time.perf_counter_ns
    for _ in range(warmup):
        appraise(pem, report, nonce, host, settings, clock, None)
    times = {k: [] for k in STEPS}
    cpu0 = time.process_time_ns()
    total = [appraise(pem, report, nonce, host, settings, clock, times) for _ in range(iters)]
    cpu = time.process_time_ns() - cpu0
    return total, times, cpu / iters


def us(xs):
    return round(statistics.median(xs) / 1000, 1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--report", default=HopperSettings.ATTESTATION_REPORT_PATH, help="hex report (sample format)")
    ap.add_argument("--chain", default=HopperSettings.GPU_ATTESTATION_CERTIFICATES_PATH, help="PEM chain")
    ap.add_argument("--nonce", default=SAMPLE_NONCE, help="expected nonce, hex")
    ap.add_argument("--driver", default=DRIVER_VERSION, help="driver version the host reports")
    ap.add_argument("--vbios", default=VBIOS_VERSION, help="VBIOS version the host reports")
    ap.add_argument("--allow-no-fwid", action="store_true", help="accept a report without FWID (check skipped)")
    args = ap.parse_args()

    host = (args.driver, args.vbios.lower(), not args.allow_no_fwid)  # attest() lowercases VBIOS
    settings = GPU_ARCHITECTURE_MAP[9]  # the HopperSettings instance attest() uses
    with open(args.report, encoding="ascii") as f:
        report = convert_string_to_blob(f.read())  # NVML hands raw bytes; not timed
    with open(args.chain, "rb") as f:
        pem = f.read()
    nonce = CcAdminUtils.validate_and_extract_nonce(args.nonce)

    # The shipped console logger prints INFO to stdout; keep its formatting cost, drop the text.
    for h in info_log.handlers:
        if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
            h.setStream(open(os.devnull, "w"))

    clock = time.perf_counter_ns
    first_call = appraise(pem, report, nonce, host, settings, clock, None)

    # Negative controls: each check must be able to fail.
    chain = GpuCertificateChains(TestHandle(pem)).GpuAttestationCertificateChain
    bad_sig = bytearray(report)
    bad_sig[-1] ^= 1
    rejects = {
        "signature": expect_reject(
            "flipped signature byte",
            lambda: CcAdminUtils.verify_attestation_report(
                AttestationReport(bytes(bad_sig), settings), chain[0], nonce, *host[:2], settings
            ),
        ),
        "nonce": expect_reject(
            "wrong nonce",
            lambda: CcAdminUtils.verify_attestation_report(
                AttestationReport(report, settings), chain[0], bytes(32), *host[:2], settings
            ),
        ),
        "fwid": expect_reject(
            "wrong FWID",
            lambda: CcAdminUtils.verify_gpu_certificate_chain(chain, settings, "00" * 48),
        ),
        "chain": expect_reject(
            "broken link (leaf in place of its issuer)",
            lambda: CcAdminUtils.verify_gpu_certificate_chain(
                [chain[0], chain[0], chain[2], chain[3], chain[4]], settings, ""
            ),
        ),
    }
    own_nonce_ok = BaseSettings.NONCE.lower() == args.nonce.lower()
    opaque = AttestationReport(report, settings).get_response_message().get_opaque_data()
    fwid_checked = bool(opaque.get_data("OPAQUE_FIELD_ID_FWID"))

    total, steps, cpu = run(pem, report, nonce, host, settings, args.iters, args.warmup)
    # Same work with every logger disabled, to show what logging costs NVIDIA's path.
    logging.disable(logging.CRITICAL)
    total_nolog, _, _ = run(pem, report, nonce, host, settings, args.iters, args.warmup)
    logging.disable(logging.NOTSET)

    print(
        json.dumps(
            {
                "anchor": "nv-local-gpu-verifier offline",
                "version": importlib.metadata.version("nv-local-gpu-verifier"),
                "functions": [
                    "verifier.nvml.gpu_cert_chains.GpuCertificateChains(TestHandle(pem))",
                    "verifier.attestation.AttestationReport(report, HopperSettings)",
                    "verifier.cc_admin_utils.CcAdminUtils.verify_gpu_certificate_chain",
                    "verifier.cc_admin_utils.CcAdminUtils.verify_attestation_report",
                ],
                "data": "wheel samples" if args.report == HopperSettings.ATTESTATION_REPORT_PATH else args.report,
                "cache": "none (every report is a cold appraisal)",
                "ocsp_rim": "not run (online steps)",
                "median_us": us(total),
                "mean_us": round(statistics.fmean(total) / 1000, 1),
                "iters": args.iters,
                # CPU time per appraisal: less sensitive than wall time to other load.
                "cpu_mean_us": round(cpu / 1000, 1),
                "step_median_us": {k: us(v) for k, v in steps.items()},
                "median_us_logging_off": us(total_nolog),
                "first_call_us": round(first_call / 1000, 1),
                "fwid_checked": fwid_checked,
                "rejects": rejects,
                "package_nonce_matches_sample": own_nonce_ok,
                "python": sys.version.split()[0],
                "ecdsa": importlib.metadata.version("ecdsa"),
                "pyOpenSSL": importlib.metadata.version("pyOpenSSL"),
            }
        )
    )


if __name__ == "__main__":
    main()
