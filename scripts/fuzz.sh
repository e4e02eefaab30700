#!/usr/bin/env bash
# Runs every cargo-fuzz target for N seconds (default 60). Needs only the stable toolchain:
# cargo-fuzz's nightly flags are enabled with RUSTC_BOOTSTRAP=1.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs="${1:-60}"
[ "$secs" = "0" ] && { echo "fuzz: skipped"; exit 0; }
if ! command -v cargo-fuzz >/dev/null; then
  cargo install --locked cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz
fi
export RUSTC_BOOTSTRAP=1
targets=$(cargo fuzz list)
cargo fuzz build -O
for t in $targets; do
  mkdir -p "corpus/$t"
  seeds="seeds/$t"; [ -d "$seeds" ] || seeds=""
  echo "fuzz: $t for ${secs}s"
  cargo fuzz run -O "$t" "corpus/$t" $seeds -- -max_total_time="$secs" -print_final_stats=1 2>&1 |
    grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb|==[0-9]+==|SUMMARY|thread|panicked)" || true
  if ls "artifacts/$t"/crash-* >/dev/null 2>&1; then
    echo "fuzz: $t found a crash: $(ls artifacts/$t/crash-* | head -1)" >&2
    exit 1
  fi
done
echo "fuzz: all targets ran ${secs}s without a crash"
