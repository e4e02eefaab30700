#!/usr/bin/env python3
"""Time Phala dcap-qvl (PyPI, Rust core) on the same TDX quote and collateral as the
criterion bench tdx/quote-cold: bench/tdx.sh runs both."""
import json, time, dcap_qvl
import sys
d = sys.argv[1] if len(sys.argv) > 1 else "../shared/testvectors/tdx/tdx-dcap-qvl-uptodate/"
quote = open(d + "quote.bin", "rb").read()
coll_json = open(d + "collateral.orig.json").read()
coll = dcap_qvl.QuoteCollateralV3.from_json(coll_json) if hasattr(dcap_qvl.QuoteCollateralV3, "from_json") else None
print("collateral", type(coll))
now = 1751328000
r = dcap_qvl.verify(quote, coll, now)
print("status", getattr(r, "status", r))
n = 2000
t = time.perf_counter()
for _ in range(n):
    dcap_qvl.verify(quote, coll, now)
print("dcap-qvl %.1f us per verify" % ((time.perf_counter() - t) / n * 1e6))
