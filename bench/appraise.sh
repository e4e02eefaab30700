#!/usr/bin/env bash
# Side-by-side appraisal benchmark: Keylime and NVIDIA anchors, then Custody's criterion
# bench, then one table. Usage: bench/appraise.sh [--anchors-only] [--strict]
#   --anchors-only  measure the anchors and stop (no cargo bench, no table)
#   --strict        also fail when a goal is not met
# Exit status: non-zero if an anchor fails, the bench fails or a criterion result is missing.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

anchors_only=0
strict=()
for arg in "$@"; do
  case "$arg" in
    --anchors-only) anchors_only=1 ;;
    --strict) strict=(--strict) ;;
    *) echo "usage: $0 [--anchors-only] [--strict]" >&2; exit 64 ;;
  esac
done

venv=bench/.venv
req=bench/anchors/requirements.txt
stamp=$venv/.requirements.installed
if [[ ! -x $venv/bin/python ]] || ! cmp -s "$req" "$stamp"; then
  echo "== setting up $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req"
  cp "$req" "$stamp"
fi
py=$venv/bin/python

target=${CARGO_TARGET_DIR:-$root/target}
mkdir -p "$target"
anchors=$target/appraise-anchors.jsonl
: >"$anchors"

echo "== anchors (Python, one process each)" >&2
"$py" bench/anchors/keylime_checkquote.py | tee -a "$anchors"
"$py" bench/anchors/nvidia_gpu_offline.py | tee -a "$anchors"

if ((anchors_only)); then
  exit 0
fi

echo "== custody (criterion)" >&2
started=$(date +%s)
cargo bench -p custody-verifier --bench appraise -- --noplot

echo "== anchors again (the faster of the two runs counts)" >&2
"$py" bench/anchors/keylime_checkquote.py | tee -a "$anchors"
"$py" bench/anchors/nvidia_gpu_offline.py | tee -a "$anchors"

criterion=${CRITERION_HOME:-$target/criterion}
echo
"$py" bench/anchors/report.py --criterion "$criterion" --anchors "$anchors" --since "$started" "${strict[@]}"
