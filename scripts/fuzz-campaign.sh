#!/usr/bin/env bash
# A long fuzzing campaign: every cargo-fuzz target gets an equal share of HOURS (at least
# 60 s each), then a table of executions, corpus size and edge coverage per target. Any
# finding (crash, oom, timeout, leak) fails it, as in scripts/fuzz.sh, which runs each
# share. Corpora grow in fuzz/corpus/ and carry over to the next campaign.
#
#   bash scripts/fuzz-campaign.sh 4      # 4 hours over every target
set -uo pipefail
cd "$(dirname "$0")/.."
hours="${1:?usage: scripts/fuzz-campaign.sh HOURS}"
export RUSTC_BOOTSTRAP=1
targets=$(cd fuzz && cargo fuzz list) || exit 2
n=$(wc -w <<<"$targets")
share=$(python3 -c "print(max(60, int(float('$hours') * 3600 / $n)))")
echo "campaign: $n targets, ${share}s each, started $(date -u +%FT%TZ) on $(nproc) cores"
out=$(mktemp)
rc=0
for t in $targets; do
  bash scripts/fuzz.sh "$share" "$t" 2>&1 | tee -a "$out" | grep -E '^fuzz: '"$t"' ' || true
  [ "${PIPESTATUS[0]}" -eq 0 ] || rc=1
done
echo
printf '%-22s %14s %8s %8s %8s\n' target execs corpus cov ft
grep -E '^fuzz: [a-z_0-9]+ execs ' "$out" | while read -r _ t _ e _ c _ v _ f; do
  printf '%-22s %14s %8s %8s %8s\n' "$t" "$e" "$c" "$v" "$f"
done
grep -E 'FAILED' "$out" || true
echo "campaign: finished $(date -u +%FT%TZ), ${share}s per target, $( [ $rc -eq 0 ] && echo 'no finding' || echo 'FINDINGS above')"
rm -f "$out"
exit $rc
