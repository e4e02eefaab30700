#!/usr/bin/env bash
# Regression test for scripts/fuzz.sh: an out-of-memory is a finding that fails the run.
# (It used to count only crash-* artifacts, so an OOM, a timeout or a leak passed.) The
# bundle target runs under an 8 MB RSS limit, which any run exceeds at once.
set -uo pipefail
cd "$(dirname "$0")/.."
out=$(FUZZ_RSS_MB=8 bash scripts/fuzz.sh 5 bundle 2>&1)
rc=$?
if [ "$rc" -ne 1 ] || ! grep -q 'out-of-memory' <<<"$out" || ! grep -q 'fuzz: bundle FAILED' <<<"$out"; then
  echo "$out" | tail -20
  echo "fuzz-findings-test: FAILED: an out-of-memory did not fail scripts/fuzz.sh (exit $rc)" >&2
  exit 1
fi
rm -f fuzz/artifacts/bundle/oom-*
echo "fuzz-findings-test: an out-of-memory fails scripts/fuzz.sh, naming its artifact"
