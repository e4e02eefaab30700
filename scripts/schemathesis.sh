#!/usr/bin/env bash
# API fuzzing with schemathesis against service/openapi.json on a live verifier.
#
#   scripts/schemathesis.sh [--max-examples N]      (default 100; CI runs 25)
#
# Starts a real `custody-verifier` (init + run, 127.0.0.1, a free port) in a temporary
# directory, enrolls a real `custody-agent` on a swtpm it starts to get a node identity,
# then runs schemathesis three times: anonymous, with the operator's client certificate
# and with the node's, each trusting the verifier CA. Every check schemathesis has runs
# (`--checks all`): no 5xx, every status code, content type and body documented. Any
# failure, or a verifier or agent that dies on the way, fails the script (exit 1). Every
# process it started is stopped on exit. schemathesis lives in .venv-schemathesis
# (gitignored), installed from PyPI on the first run.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

EXAMPLES=100
while [ $# -gt 0 ]; do
  case "$1" in
    --max-examples) EXAMPLES="$2"; shift 2 ;;
    --max-examples=*) EXAMPLES="${1#*=}"; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "schemathesis: unknown argument $1" >&2; exit 2 ;;
  esac
done

VENV="$ROOT/.venv-schemathesis"
SCHEMATHESIS_VERSION="${SCHEMATHESIS_VERSION:-4.32.5}"
if ! "$VENV/bin/st" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  echo "schemathesis: installing schemathesis $SCHEMATHESIS_VERSION into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
cargo build -q -p custody-service -p custody-agent -p custody-cli --locked
VERIFIER="$TARGET/debug/custody-verifier"
AGENT="$TARGET/debug/custody-agent"
CUSTODY="$TARGET/debug/custody"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/custody-schemathesis.XXXXXX")"
PIDS=()
cleanup() {
  local rc=$?
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    kill -TERM "${PIDS[$i]}" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ "$rc" -ne 0 ] && [ -z "${KEEP:-}" ]; then
    for f in verifier.log agent.log; do
      [ -f "$WORK/$f" ] && { echo "--- last lines of $f"; tail -n 20 "$WORK/$f"; }
    done
  fi
  if [ -n "${KEEP:-}" ]; then echo "schemathesis: kept $WORK"; else rm -rf "$WORK"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
wait_for() { # wait_for WHAT SECONDS COMMAND...
  local what=$1 secs=$2; shift 2
  for _ in $(seq $((secs * 10))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "schemathesis: timed out waiting for $what" >&2
  return 1
}
alive() { # alive NAME PID: fail if a process we started has died
  if ! kill -0 "$2" 2>/dev/null; then
    echo "schemathesis: $1 (pid $2) is no longer running" >&2
    return 1
  fi
}

# --- swtpm with an EK certificate from a per-run local CA ------------------------------
TPM="$WORK/swtpm"
mkdir -p "$TPM/state" "$TPM/xdg"
export XDG_CONFIG_HOME="$TPM/xdg"
swtpm_setup --tpm2 --create-config-files skip-if-exist >/dev/null 2>&1 ||
  swtpm_setup --tpm2 --create-config-files skip-if-exist,root >/dev/null
swtpm_setup --tpm2 --tpmstate "$TPM/state" --create-ek-cert --create-platform-cert >"$TPM/setup.log" 2>&1 ||
  { cat "$TPM/setup.log" >&2; exit 1; }
conf_value() { sed -n "s/^[[:space:]]*$1[[:space:]]*=[[:space:]]*//p" "$TPM/xdg/swtpm-localca.conf" | head -1; }
STATEDIR="$(conf_value statedir)"
ISSUER="$(conf_value issuercert)"; ISSUER="${ISSUER:-$STATEDIR/issuercert.pem}"
mkdir -p "$WORK/ek-ca"
cp "$STATEDIR/swtpm-localca-rootca-cert.pem" "$ISSUER" "$WORK/ek-ca/"
while :; do
  TPM_PORT="$(free_port)"
  python3 -c "import socket,sys; s=socket.socket(); s.bind(('127.0.0.1',$TPM_PORT+1))" 2>/dev/null && break
done
swtpm socket --tpm2 --tpmstate "dir=$TPM/state" --server "type=tcp,port=$TPM_PORT" \
  --ctrl "type=tcp,port=$((TPM_PORT + 1))" --flags not-need-init,startup-clear \
  >"$WORK/swtpm.log" 2>&1 &
PIDS+=($!)
SWTPM_PID=$!
TCTI="swtpm:host=127.0.0.1,port=$TPM_PORT"
wait_for "swtpm" 10 env TPM2TOOLS_TCTI="$TCTI" tpm2_pcrread sha256:0

# --- the verifier -----------------------------------------------------------------------
PORT="$(free_port)"
URL="https://127.0.0.1:$PORT"
DATA="$WORK/data"
OPERATOR="$WORK/operator"
cat >"$WORK/verifier.toml" <<EOF
listen = "127.0.0.1:$PORT"
server_names = ["127.0.0.1", "localhost"]
data_dir = "$DATA"
ek_ca_dir = "$WORK/ek-ca"
interval_secs = 30
revoke_after = 1000
nonce_ttl_secs = 10
round_timeout_secs = 5
EOF
"$VERIFIER" init --config "$WORK/verifier.toml" --operator-dir "$OPERATOR" >"$WORK/init.log" 2>&1 ||
  { cat "$WORK/init.log" >&2; exit 1; }
RUST_LOG=info "$VERIFIER" run --config "$WORK/verifier.toml" >/dev/null 2>"$WORK/verifier.log" &
PIDS+=($!)
VERIFIER_PID=$!
wait_for "the verifier to listen" 20 python3 -c "import socket; socket.create_connection(('127.0.0.1',$PORT))"

# --- a node: a real agent enrolls on the swtpm -----------------------------------------
STATE="$WORK/agent-state"
cat >"$WORK/agent.toml" <<EOF
name = "fuzz-node"
listen = "127.0.0.1:$(free_port)"
verifier_url = "$URL"
verifier_ca = "$DATA/ca.pem"
state_dir = "$STATE"
round_timeout_secs = 10

[tpm]
tcti = "$TCTI"
event_log = ""

[collectors]
snp = false
nvml = false
EOF
"$AGENT" run --config "$WORK/agent.toml" >/dev/null 2>"$WORK/agent.log" &
PIDS+=($!)
AGENT_PID=$!
enrolled() {
  alive agent "$AGENT_PID" || exit 1
  [ -s "$STATE/node-cert.pem" ] && [ -s "$STATE/tls-key.pem" ] &&
    "$CUSTODY" nodes show fuzz-node --verifier "$URL" --identity "$OPERATOR" --json >/dev/null 2>&1
}
wait_for "the agent to enroll" 60 enrolled

# --- schemathesis, three identities -----------------------------------------------------
REPORTS="$WORK/reports"
mkdir -p "$REPORTS"
FAILED=()
SUMMARY=()
run_as() { # run_as NAME [CERT KEY]
  local who=$1; shift
  local cert=()
  if [ $# -eq 2 ]; then cert=(--request-cert "$1" --request-cert-key "$2"); fi
  echo "=== schemathesis as $who ($EXAMPLES examples per operation)"
  local rc=0
  SCHEMATHESIS_HOOKS=schemathesis_hooks PYTHONPATH="$ROOT/scripts" \
    "$VENV/bin/st" --config-file "$ROOT/scripts/schemathesis.toml" run "$ROOT/service/openapi.json" --url "$URL" \
    --tls-verify "$DATA/ca.pem" "${cert[@]}" \
    --checks all --max-examples "$EXAMPLES" --seed "${SCHEMATHESIS_SEED:-20}" \
    --workers 1 --request-timeout 20 --no-color \
    --suppress-health-check all --warnings off --generation-database none \
    --report ndjson --report-ndjson-path "$REPORTS/$who.ndjson" \
    >"$REPORTS/$who.log" 2>&1 || rc=$?
  cat "$REPORTS/$who.log"
  local tail
  tail="$(grep -E '^=+ .* in [0-9.]+s =+$' "$REPORTS/$who.log" | tail -1 | tr -d '=' | xargs || true)"
  local cases
  cases="$(grep -E '^ +[0-9]+ generated' "$REPORTS/$who.log" | tail -1 | xargs || true)"
  [ -n "$cases" ] && tail="$tail, $cases"
  SUMMARY+=("$who: ${tail:-exit $rc}")
  if [ "$rc" -ne 0 ]; then FAILED+=("$who"); fi
  alive verifier "$VERIFIER_PID" || FAILED+=("$who:verifier-died")
  alive agent "$AGENT_PID" || FAILED+=("$who:agent-died")
}
run_as anonymous
run_as operator "$OPERATOR/cert.pem" "$OPERATOR/key.pem"
run_as node "$STATE/node-cert.pem" "$STATE/tls-key.pem"

if grep -Eq 'panicked|thread .* panicked' "$WORK/verifier.log"; then
  FAILED+=("verifier-panicked")
  grep -E -A3 'panicked' "$WORK/verifier.log" | head -20
fi

if [ "${#FAILED[@]}" -eq 0 ]; then
  echo "schemathesis: ok, --checks all, $EXAMPLES examples per operation; $(IFS=';'; echo "${SUMMARY[*]}")"
else
  echo "schemathesis: FAILED (${FAILED[*]}); $(IFS=';'; echo "${SUMMARY[*]}")"
  exit 1
fi
