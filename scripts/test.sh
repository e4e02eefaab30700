#!/usr/bin/env bash
# Set up and run every test: formatting, lints, unit and end-to-end tests (real swtpm),
# a short run of every fuzz target and a short schemathesis run against the live API. This is the README's test command and .ci/run's.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# One whole build from a clean checkout: incremental state would only double the disk used.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# Only what appraises links libxmlsec1: the agent, mover, audit log and locality share
# the small custody-types vocabulary instead of the appraisal core.
for c in custody-agent custody-mover custody-audit custody-locality; do
  if cargo tree --locked -p "$c" -e normal,build | grep -qE 'custody-xmldsig|custody-verifier'; then
    echo "$c depends on the appraisal core (and so on libxmlsec1)" >&2; exit 1
  fi
done
cargo test --workspace --locked
# Interop with Veraison's `ear` (own workspace: its dependencies stay out of Custody's).
cargo fmt --manifest-path interop/Cargo.toml -- --check
cargo test --manifest-path interop/Cargo.toml --locked
# Fuzz smoke run (each target briefly); FUZZ_SECONDS=0 skips it. Any finding fails it.
bash scripts/fuzz.sh "${FUZZ_SECONDS:-20}"
if [ "${FUZZ_SECONDS:-20}" != "0" ]; then bash scripts/fuzz-findings-test.sh; fi
# API fuzzing (schemathesis against service/openapi.json on a live verifier, anonymous,
# operator and node); SCHEMATHESIS_EXAMPLES=0 skips it. Any finding fails it.
if [ "${SCHEMATHESIS_EXAMPLES:-25}" != "0" ]; then
  bash scripts/schemathesis.sh --max-examples "${SCHEMATHESIS_EXAMPLES:-25}"
fi
