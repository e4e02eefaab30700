#!/usr/bin/env bash
# The attack bench (issue 20): the load of bench/load.sh (same profile, same spawned
# verifier config), measured once clean and once while custody-attacker - another process
# on this machine, loopback only - holds 2,000 idle TLS connections and 200 raw TCP ones,
# trickles HTTP/1.1 headers on 200 more one byte per 500 ms, sends 16 MiB bodies to
# /v1/enroll and /v1/enroll/activate (2 at a time) and pushes random garbage evidence from
# one enrolled node (2 at a time; its nonce requests get 429). The attacker stops by
# itself once the measured phase is over (--ramp-max + --hold seconds at most).
#
# Usage: bench/attack.sh [ATTESTERS] [CONCURRENCY] [SECONDS] [extra custody-loadgen args]
#   e.g. bench/attack.sh 200 64 20 --attack-args "--idle-tls 4000 --slow-byte-ms 100"
# The last line: attack: clean X/s p99 Y ms; under attack X'/s p99 Y' ms; revoked N; errors E
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
attesters=${1:-200}
concurrency=${2:-64}
secs=${3:-20}
shift $(( $# < 3 ? $# : 3 ))
cargo build --release -p custody-service -p custody-loadgen
target=${CARGO_TARGET_DIR:-$root/target}
# 2,600 attacker sockets and as many on the verifier's side (it inherits this limit):
# raise the soft limit to the hard one (a container cannot raise the hard limit).
ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 8192 ]; then
  echo "warning: open-files limit $(ulimit -n) is low for 2,600 attack connections" >&2
fi
echo "== $(nproc) cores; $attesters attesters, concurrency $concurrency, $secs s clean + $secs s under attack; fd limit $(ulimit -n)" >&2
"$target/release/custody-loadgen" --spawn --attack --attesters "$attesters" \
  --concurrency "$concurrency" --duration "$secs" "$@"
