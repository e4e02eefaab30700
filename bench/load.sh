#!/usr/bin/env bash
# Load test of the verifier service's push API: builds release, starts custody-verifier
# (throwaway data dir, test EK CA), enrolls simulated attesters through the real API and
# drives nonce -> quote -> evidence rounds. Both processes share this machine's cores;
# the CPU each used is printed (from /proc/PID/stat), so the split is visible.
#
# Usage: bench/load.sh [ATTESTERS] [CONCURRENCY] [SECONDS] [extra custody-loadgen args]
#   e.g. bench/load.sh 200 64 20 --service-log warn
# Then the per-stage breakdown in process: target/release/custody-loadgen --stages 2000
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
attesters=${1:-200}
concurrency=${2:-64}
secs=${3:-20}
shift $(( $# < 3 ? $# : 3 ))
cargo build --release -p custody-service -p custody-loadgen
target=${CARGO_TARGET_DIR:-$root/target}
echo "== $(nproc) cores; $attesters attesters, concurrency $concurrency, $secs s" >&2
"$target/release/custody-loadgen" --spawn --attesters "$attesters" --concurrency "$concurrency" \
  --duration "$secs" "$@"
