#!/usr/bin/env bash
# Offline evidence showcase (`custody verify`): set up, build, then appraise
#   1. a live TPM quote from a fresh swtpm (with an EK certificate from swtpm's local CA),
#      accepted, then the same quote with the nonce of another round, rejected;
#   2. real SEV-SNP and NVIDIA (Hopper, Blackwell) evidence captured on real hardware,
#      accepted, and tampered or expired variants, each rejected with the failed check named.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --quiet -p custody-cli
CUSTODY="$PWD/target/release/custody"
TV="${CUSTODY_TESTVECTORS:-$PWD/../shared/testvectors}"
[ -d "$TV" ] || TV="$PWD/verifier/testdata"

work=$(mktemp -d)
swtpm_pid=""
cleanup() { [ -n "$swtpm_pid" ] && kill "$swtpm_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

show() { # name, expected exit, command...
  local name=$1 want=$2; shift 2
  local out rc=0
  out=$("$@" 2>"$work/err") || rc=$?
  local checks
  checks=$(printf '%s' "$out" | python3 -c 'import json,sys
try:
  r=json.load(sys.stdin); print(" ".join(("ok:" if c["ok"] else "FAIL:")+c["name"] for c in r["checks"]))
except Exception: print("(no report)")')
  local verdict="accepted"; [ "$rc" -ne 0 ] && verdict="rejected (exit $rc)"
  local mark="as expected"; [ "$rc" -ne "$want" ] && mark="UNEXPECTED"
  printf '%-44s %-20s %s\n    %s\n' "$name" "$verdict" "$mark" "$checks"
  [ "$rc" -eq 0 ] || sed 's/^/    /' "$work/err" | head -2
  [ "$rc" -eq "$want" ]
}

echo "== live TPM 2.0 quote from swtpm"
mkdir -p "$work/tpm" "$work/xdg"
export XDG_CONFIG_HOME="$work/xdg"
swtpm_setup --tpm2 --create-config-files skip-if-exist >/dev/null 2>&1 ||
  swtpm_setup --tpm2 --create-config-files skip-if-exist,root >/dev/null 2>&1 || true
swtpm_setup --tpm2 --tpmstate "$work/tpm" --create-ek-cert --create-platform-cert --overwrite >/dev/null
port=$((20000 + RANDOM % 20000))
swtpm socket --tpm2 --tpmstate dir="$work/tpm" --server type=tcp,port=$port \
  --ctrl type=tcp,port=$((port + 1)) --flags not-need-init,startup-clear &
swtpm_pid=$!
export TPM2TOOLS_TCTI="swtpm:host=127.0.0.1,port=$port"
for _ in $(seq 50); do tpm2_pcrread sha256:0 >/dev/null 2>&1 && break; sleep 0.1; done
cd "$work"
# swtpm has no resource manager: flush transient objects after each tool, or it runs out
# of object slots.
tpm2_createek -c ek.ctx -G rsa -u ek.pub >/dev/null
tpm2_flushcontext -t
tpm2_createak -C ek.ctx -c ak.ctx -G rsa -g sha256 -s rsassa -u ak.pem -n ak.name -f pem >/dev/null
tpm2_flushcontext -t
echo -n "model weights v1" | tpm2_pcrextend 16:sha256=$(echo -n "model weights v1" | sha256sum | cut -c1-64)
nonce=$(openssl rand -hex 32)
tpm2_quote -c ak.ctx -l sha256:0,1,2,3,7,16 -q "$nonce" -m quote.bin -s sig.bin -o pcrs.bin -g sha256 >/dev/null
tpm2_flushcontext -t
cd - >/dev/null
show "swtpm quote, this round's nonce" 0 "$CUSTODY" verify tpm --quote "$work/quote.bin" --sig "$work/sig.bin" --ak "$work/ak.pem" --pcrs "$work/pcrs.bin" --nonce "$nonce"
cp "$work/quote.bin" "$work/quote-tampered.bin"
printf '\x01' | dd of="$work/quote-tampered.bin" bs=1 seek=40 conv=notrunc status=none
show "swtpm quote, one byte changed" 1 "$CUSTODY" verify tpm --quote "$work/quote-tampered.bin" --sig "$work/sig.bin" --ak "$work/ak.pem" --pcrs "$work/pcrs.bin" --nonce "$nonce"
show "swtpm quote replayed into another round" 1 "$CUSTODY" verify tpm --quote "$work/quote.bin" --sig "$work/sig.bin" --ak "$work/ak.pem" --pcrs "$work/pcrs.bin" --nonce "$(openssl rand -hex 32)"

echo
echo "== AMD SEV-SNP (real reports, built-in AMD roots)"
show "Milan report + VCEK" 0 "$CUSTODY" verify snp --report "$TV/snp/trustee-test-report.bin" --vcek "$TV/snp/trustee-test-vcek.der" --at 2025-06-01T00:00:00Z
show "Milan report + VLEK (via ASVK)" 0 "$CUSTODY" verify snp --report "$TV/snp/trustee-test-vlek-report.bin" --vcek "$TV/snp/trustee-test-vlek.der" --ca "$TV/snp/trustee-milan_ask_ark_asvk.pem" --at 2025-06-01T00:00:00Z
show "Milan report + a VCEK for another chip/TCB" 1 "$CUSTODY" verify snp --report "$TV/snp/trustee-test-report.bin" --vcek "$TV/snp/trustee-test-vcek-invalid-new.der" --at 2025-06-01T00:00:00Z

echo
echo "== NVIDIA confidential GPUs (real SPDM reports, pinned NVIDIA Device Identity CA)"
NV="$TV/nvidia"
show "H100 report" 0 "$CUSTODY" verify nvgpu --report "$NV/sdk-hopperAttestationReport.txt" --certs "$NV/sdk-hopperCertChain.txt" --nonce 27a328247bf7935c993341cf587be6f05986ccce4fe7ba2c54100bd616a58f66
show "Blackwell report" 0 "$CUSTODY" verify nvgpu --report "$NV/sdk-blackwellAttestationReport.txt" --certs "$NV/sdk-blackwellCertChain.txt" --nonce 931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb
# (NVIDIA's corrupted-signature sample was taken in the Blackwell sample's round.)
show "H100 report, corrupted signature" 1 "$CUSTODY" verify nvgpu --report "$NV/sdk-hopperAttestationReportInvalidSignature.txt" --certs "$NV/sdk-hopperCertChain.txt" --nonce 931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb
show "H100 report + RIM for another driver" 1 "$CUSTODY" verify nvgpu --report "$NV/sdk-hopperAttestationReport.txt" --certs "$NV/sdk-hopperCertChain.txt" --nonce 27a328247bf7935c993341cf587be6f05986ccce4fe7ba2c54100bd616a58f66 --rim "$NV/rims/NV_GPU_DRIVER_GH100_550.144.03.xml"
show "H100 report + VBIOS RIM, measurement differs" 1 "$CUSTODY" verify nvgpu --report "$NV/sdk-hopperAttestationReport.txt" --certs "$NV/sdk-hopperCertChain.txt" --nonce 27a328247bf7935c993341cf587be6f05986ccce4fe7ba2c54100bd616a58f66 --rim "$NV/rims/NV_GPU_VBIOS_1010_0200_882_96005E0001_measurement_mismatch.xml" --at 2025-06-01T00:00:00Z
show "H100 report, another round's nonce" 1 "$CUSTODY" verify nvgpu --report "$NV/sdk-hopperAttestationReport.txt" --certs "$NV/sdk-hopperCertChain.txt" --nonce "$(openssl rand -hex 32)"
echo
echo "demo: every outcome as expected"
