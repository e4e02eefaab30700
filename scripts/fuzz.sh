#!/usr/bin/env bash
# Runs every cargo-fuzz target for N seconds (default 60), or only the targets named after
# N. Needs only the stable toolchain: cargo-fuzz's nightly flags are enabled with
# RUSTC_BOOTSTRAP=1.
#
# Every libFuzzer finding fails the run: a crash, an out-of-memory (-rss_limit_mb), a
# timeout on one input (-timeout) or a leak, whether libFuzzer exits non-zero or only
# leaves an artifact. The artifact is named on stderr. One line per target reports what
# the run did: `fuzz: TARGET execs N corpus N cov N ft N`.
set -uo pipefail
cd "$(dirname "$0")/../fuzz"
secs="${1:-60}"
shift || true
[ "$secs" = "0" ] && { echo "fuzz: skipped"; exit 0; }
# Per-input limits: an input that takes longer or needs more memory is a finding.
FUZZ_TIMEOUT="${FUZZ_TIMEOUT:-25}"
FUZZ_RSS_MB="${FUZZ_RSS_MB:-2048}"
if ! command -v cargo-fuzz >/dev/null; then
  cargo install --locked cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz || exit 2
fi
export RUSTC_BOOTSTRAP=1
if [ "$#" -gt 0 ]; then targets="$*"; else targets=$(cargo fuzz list) || exit 2; fi
cargo fuzz build -O || exit 2

failed=0
for t in $targets; do
  mkdir -p "corpus/$t" "artifacts/$t"
  # Findings of earlier runs were reported then; only this run's count now.
  find "artifacts/$t" -maxdepth 1 -type f -delete
  seeds="seeds/$t"; [ -d "$seeds" ] || seeds=""
  log=$(mktemp)
  cargo fuzz run -O "$t" "corpus/$t" $seeds -- \
    -max_total_time="$secs" -timeout="$FUZZ_TIMEOUT" -rss_limit_mb="$FUZZ_RSS_MB" \
    -print_final_stats=1 >"$log" 2>&1
  rc=$?
  # libFuzzer's last status line: "#N  DONE   cov: C ft: F corp: K/..." (or the last pulse).
  status=$(grep -aE '^#[0-9]+' "$log" | tail -1)
  execs=$(grep -aoE '^stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' | tail -1)
  cov=$(grep -aoE 'cov: [0-9]+' <<<"$status" | grep -oE '[0-9]+')
  ft=$(grep -aoE 'ft: [0-9]+' <<<"$status" | grep -oE '[0-9]+')
  corpus=$(find "corpus/$t" -type f | wc -l)
  echo "fuzz: $t execs ${execs:-?} corpus $corpus cov ${cov:-?} ft ${ft:-?}"
  artifact=$(find "artifacts/$t" -maxdepth 1 -type f \( -name 'crash-*' -o -name 'oom-*' -o -name 'timeout-*' -o -name 'leak-*' \) | head -1)
  if [ -n "$artifact" ] || [ "$rc" -ne 0 ]; then
    grep -aE '^(==[0-9]+==|SUMMARY|thread .* panicked|ERROR: libFuzzer)' "$log" | head -5 >&2
    echo "fuzz: $t FAILED (exit $rc): ${artifact:-no artifact written}" >&2
    failed=1
  fi
  rm -f "$log"
done
if [ "$failed" -ne 0 ]; then
  echo "fuzz: findings above; reproduce with: cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run -O TARGET ARTIFACT" >&2
  exit 1
fi
echo "fuzz: all targets ran ${secs}s with no finding (crash, oom, timeout, leak)"
