#!/usr/bin/env bash
# Installs everything Custody needs on a fresh Debian (bookworm) machine: the system
# packages for the real-TPM tests (swtpm, tpm2-tools, tpm2-tss), libxmlsec1 for NVIDIA RIM
# signatures, python3 (the demo reads JSON with it; bench/appraise.sh makes a venv, and
# scripts/schemathesis.sh installs schemathesis from PyPI into .venv-schemathesis),
# openssh-server (bench/mover.sh compares against scp through a private sshd), and the
# Rust tools CI uses; perl builds the OpenSSL that Veraison's `ear` crate (a dev-dependency,
# the EAR interop test) compiles from source. CI and a new user run this same script.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

PKGS=(
  build-essential pkg-config clang libclang-dev cmake
  swtpm swtpm-tools tpm2-tools libtss2-dev
  libxml2-dev libxmlsec1-dev libxmlsec1-openssl
  openssl perl iproute2 iptables python3 python3-venv
  openssh-server
  valgrind  # scripts/policy-instructions.sh: instruction counts per policy decision
  prometheus  # promtool: tests/tests/dashboards.rs checks deploy/prometheus rules
  chromium  # headless: tests/tests/audit_cli.rs loads the auditor's report
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
  echo "setup: cargo not found; install the stable Rust toolchain (rustup) first" >&2
  exit 1
fi
rustup component add clippy rustfmt >/dev/null 2>&1 || true
# schemathesis for scripts/schemathesis.sh (the API fuzzing scripts/test.sh runs), pinned
# there; SCHEMATHESIS_EXAMPLES=0 skips both the install and the run.
if [ "${SCHEMATHESIS_EXAMPLES:-25}" != "0" ]; then
  root="$(cd "$(dirname "$0")/.." && pwd)"
  st_version="$(sed -n 's/^SCHEMATHESIS_VERSION="${SCHEMATHESIS_VERSION:-\(.*\)}"$/\1/p' "$root/scripts/schemathesis.sh")"
  if ! "$root/.venv-schemathesis/bin/st" --version 2>/dev/null | grep -q "$st_version"; then
    echo "setup: installing schemathesis $st_version into .venv-schemathesis"
    python3 -m venv "$root/.venv-schemathesis"
    "$root/.venv-schemathesis/bin/pip" install -q --disable-pip-version-check "schemathesis==$st_version"
  fi
fi
echo "setup: ok ($(cargo --version), $(swtpm --version 2>&1 | head -1))"
