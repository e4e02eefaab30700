#!/usr/bin/env bash
# TDX quote appraisal, side by side in one run: Custody (criterion tdx/quote-cold and
# tdx/quote-warm, and the floor: one P-256 verify) and
# Phala's dcap-qvl from PyPI (its Rust core through the Python binding), on the same
# quote and collateral (../shared/testvectors/tdx/tdx-dcap-qvl-uptodate).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x bench/.venv-tdx/bin/python ] || python3 -m venv bench/.venv-tdx
bench/.venv-tdx/bin/pip install -q dcap-qvl==0.7.0
cargo bench -p custody-verifier --bench appraise -- 'tdx|p256' 2>&1 | grep -E "^(tdx|floor)/|time:"
bench/.venv-tdx/bin/python bench/tdx_dcap_qvl.py ../shared/testvectors/tdx/tdx-dcap-qvl-uptodate/
