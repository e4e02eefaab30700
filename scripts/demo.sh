#!/usr/bin/env bash
# The README's first command: install what the system needs, build, run `custody demo`
# (a verifier, two agents each with its own swtpm, enrollment, rounds, a revocation,
# and an offline audit of the log). Extra arguments go to `custody demo` (--keep, --dir).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --quiet -p custody-cli -p custody-service -p custody-agent
exec target/release/custody demo "$@"
