#!/usr/bin/env python3
"""Anchor: time Keylime's keylime.tpm.tpm_util.checkquote on Keylime's own test quote.

The quote, AK, signature and PCR blobs are read at run time from the unit test that ships
inside the installed wheel (keylime/tpm/tpm_util_test.py, TestTpmUtil.test_checkquote);
nothing of Keylime's is copied into this repository. The test file is parsed with `ast` and
only literal expressions are evaluated (no Keylime test code is executed).

Prints one JSON line on stdout.
"""

import argparse
import ast
import base64
import importlib.metadata
import importlib.util
import json
import logging
import statistics
import sys
import time

# keylime.config warns on stderr when /etc/keylime is absent; that is expected here.
logging.getLogger("keylime.config").setLevel(logging.ERROR)

from keylime.tpm.tpm_util import checkquote  # noqa: E402

TEST_MODULE = "keylime.tpm.tpm_util_test"
TEST_FUNC = "test_checkquote"
NEEDED = ("aikblob", "sigblob", "quoteblob", "pcrblob", "nonce")


def _eval_literal(node):
    """Evaluate the few expression shapes the test uses, literals only."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Call) and all(isinstance(a, ast.Constant) for a in node.args):
        args = [a.value for a in node.args]
        f = node.func
        if isinstance(f, ast.Name) and f.id == "bytes" and len(args) == 2:
            return bytes(args[0], args[1])
        if (
            isinstance(f, ast.Attribute)
            and f.attr == "b64decode"
            and isinstance(f.value, ast.Name)
            and f.value.id == "base64"
            and len(args) == 1
        ):
            return base64.b64decode(args[0], validate=True)
    raise ValueError(f"unexpected expression in Keylime test: {ast.dump(node)[:120]}")


def load_test_quote():
    spec = importlib.util.find_spec(TEST_MODULE)
    if spec is None or spec.origin is None:
        raise SystemExit(f"{TEST_MODULE} not found in the installed keylime package")
    with open(spec.origin, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=spec.origin)
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef) and fn.name == TEST_FUNC:
            data = {}
            for stmt in fn.body:
                if (
                    isinstance(stmt, ast.Assign)
                    and len(stmt.targets) == 1
                    and isinstance(stmt.targets[0], ast.Name)
                    and stmt.targets[0].id in NEEDED
                    and stmt.targets[0].id not in data
                ):
                    data[stmt.targets[0].id] = _eval_literal(stmt.value)
            missing = [k for k in NEEDED if k not in data]
            if missing:
                raise SystemExit(f"{spec.origin}: {TEST_FUNC} lacks {missing}")
            return spec.origin, data
    raise SystemExit(f"{spec.origin}: no {TEST_FUNC}")


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--iters", type=int, default=3000)
    ap.add_argument("--warmup", type=int, default=300)
    args = ap.parse_args()

    _origin, d = load_test_quote()
    call = (d["aikblob"], d["nonce"], d["sigblob"], d["quoteblob"], d["pcrblob"], "sha256")

    # Success must mean a verified quote: checkquote raises on any failure and returns the
    # quoted PCRs on success.
    pcrs = checkquote(*call)
    if not isinstance(pcrs, dict) or not pcrs:
        raise SystemExit(f"checkquote returned {pcrs!r}, not a PCR map")
    # And it must actually reject: a flipped quote byte has to fail the signature.
    bad = bytearray(d["quoteblob"])
    bad[5] ^= 1
    try:
        checkquote(d["aikblob"], d["nonce"], d["sigblob"], bytes(bad), d["pcrblob"], "sha256")
    except Exception:
        pass
    else:
        raise SystemExit("checkquote accepted a tampered quote; refusing to time it")

    for _ in range(args.warmup):
        checkquote(*call)
    samples = []
    clock = time.perf_counter_ns
    cpu0 = time.process_time_ns()
    for _ in range(args.iters):
        t0 = clock()
        r = checkquote(*call)
        samples.append(clock() - t0)
        if r != pcrs:
            raise SystemExit("checkquote result changed between iterations")
    cpu = time.process_time_ns() - cpu0

    print(
        json.dumps(
            {
                "anchor": "keylime checkquote",
                "version": importlib.metadata.version("keylime"),
                "function": "keylime.tpm.tpm_util.checkquote",
                "data": f"{TEST_MODULE.replace('.', '/')}.py::{TEST_FUNC} (installed wheel)",
                "key": "RSA-2048 AK, RSASSA-SHA256",
                "pcrs_returned": sorted(pcrs),
                "median_us": round(statistics.median(samples) / 1000, 2),
                "mean_us": round(statistics.fmean(samples) / 1000, 2),
                "iters": args.iters,
                # CPU time per call: less sensitive than wall time to other load on the machine.
                "cpu_mean_us": round(cpu / args.iters / 1000, 2),
                "python": sys.version.split()[0],
                "cryptography": importlib.metadata.version("cryptography"),
            }
        )
    )


if __name__ == "__main__":
    main()
