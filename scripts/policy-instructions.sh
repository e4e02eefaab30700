#!/usr/bin/env bash
# Instructions per policy decision, counted by callgrind: `bash scripts/policy-instructions.sh
# [POLICY] [small]` (the production-shaped input; `small`: the earlier hand-written one). Runs policy/examples/decisions.rs with 201 decisions and with 1, and prints the
# difference / 200, so compiling the policy and starting the process drop out. Unlike the
# criterion bench's times on a shared VM, the count is the same from run to run: the figure
# to compare two versions of the library, the policies or regorus by. Needs valgrind.
set -euo pipefail
cd "$(dirname "$0")/.."
policy="${1:-eu-sovereign}"
input="${2:-production}"
command -v valgrind >/dev/null || { echo "policy-instructions: valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }
cargo build --quiet --release -p custody-policy --example decisions
count() {
    valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/decisions "$1" "$policy" "$input" 2>&1 |
        awk '/refs:/ { gsub(",", "", $NF); print $NF }'
}
many=$(count 201)
one=$(count 1)
echo "$policy ($input input): $(( (many - one) / 200 )) instructions per decision (callgrind Ir)"
