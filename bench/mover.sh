#!/usr/bin/env bash
# Move throughput on this machine, one file, six ways, all in one run:
#   (a) the mover's wire protocol between two custody-movepeer processes on loopback, as
#       the agents run it: control messages over mutual TLS, the AEAD-sealed chunks on a
#       second plain TCP connection bound to the TLS session by an exporter token (ticket
#       and manifest checked, chunks sealed, staged, every file digest checked, fsynced,
#       renamed into place, receipt signed and verified by A)
#   (a') the same with every chunk over the TLS connection too (`--transport tls-only`;
#       skipped for a binary without it, whose `tls` is this)
#   (b) the same over one plain TCP connection (`--transport tcp`, no peer
#       authentication: a baseline only)
#   (c) a plain TCP file copy, socket to file through 1 MiB buffers, fsync, ack (the
#       ceiling; std::io::copy reads a socket 8 KiB at a time, a third slower here)
#   (c') for reference, the same copy writing as the mover's destination does: aligned
#       O_DIRECT writes past the page cache (on the receiving thread; skipped for a
#       binary without `tcp-serve --direct`). The mover's destination writes this way
#       (`serve --buffered-writes` turns it off), so (c') shows how much of the mover's
#       figure against (c) is that choice
#   (d) scp through a private sshd on 127.0.0.1 (then `sync`)
# Each is repeated (default 3 times) and the median MB/s reported (MB = 10^6 bytes). The
# mover's seconds include A checking the ticket and the files' sizes against the
# manifest from the ticket's preparation, and B checking every file's digest.
# The page cache cannot be dropped reliably here: the file is read once (cat > /dev/null)
# before measuring, so every run reads it from memory and only the writes hit the disk.
#
# Usage: MOVER_BENCH_MB=1024 bench/mover.sh   (MB here: MiB of file; default 1024 = 1 GiB)
#   MOVER_BENCH_REPS=3       repetitions per measurement
#   MOVER_BENCH_BUFFER=N     custody-movepeer --buffer (bytes buffered around the stream)
#   MOVER_BENCH_BIN=PATH     a custody-movepeer binary to measure (no build; e.g. an older
#                            build kept aside, to compare before/after in one session)
# Needs openssh-server (scripts/setup.sh installs it); runs sshd as the current user (root
# in CI), with its own host key and authorized key in a temp dir, killed at exit.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
mib=${MOVER_BENCH_MB:-1024}
reps=${MOVER_BENCH_REPS:-3}
buffer=()
if [[ -n ${MOVER_BENCH_BUFFER:-} ]]; then buffer=(--buffer "$MOVER_BENCH_BUFFER"); fi

target=${CARGO_TARGET_DIR:-$root/target}
if [[ -n ${MOVER_BENCH_BIN:-} ]]; then
  bin=$MOVER_BENCH_BIN
else
  cargo build --release -p custody-movepeer
  bin=$target/release/custody-movepeer
fi
# Under the target dir: the same filesystem for the source, the inbox and the copies.
work=$(mktemp -d "$target/mover-bench.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

echo "== $(nproc) cores, load average: $(cut -d' ' -f1-3 /proc/loadavg); file ${mib} MiB" >&2
mkdir -p "$work/src" "$work/keys"
file=$work/src/checkpoint.bin
head -c $((mib * 1024 * 1024)) /dev/urandom >"$file"
cat "$file" >/dev/null
# Write the fresh file out now: its 1 GiB of dirty pages would otherwise be written back
# during the first measured run (seen here: that run at half the speed of the next).
sync
"$bin" keys --dir "$work/keys"

# Start a one-connection server ($@), wait for its address, leave it in $addr / $srv.
start() {
  local out=$work/serve.out
  : >"$out"
  "$@" >"$out" 2>>"$work/serve.log" &
  srv=$!
  pids+=("$srv")
  for _ in $(seq 200); do
    if grep -q '^listening ' "$out"; then
      addr=$(sed -n 's/^listening //p' "$out")
      return 0
    fi
    sleep 0.05
  done
  echo "server did not start: $*" >&2
  cat "$work/serve.log" >&2
  exit 1
}

mbps() { sed -E 's/.*"mb_per_s":([0-9.]+).*/\1/'; }

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# Before every timed run: write out what the previous one left (its deleted output's
# journal commit; the root filesystem here is mounted with online `discard`, so freeing a
# 1 GiB file issues discards at that commit). Without it a run pays for its predecessor:
# seen here as the same move at 340 then 640-820 MB/s, depending on what ran before it.
settle() { sync; }

declare -A runs

# The verifier's prepare step hands the source the manifest with the ticket; the source
# then reads the checkpoint once, to send it (B checks the digests). Older builds without
# --manifest hash the checkpoint before sending.
prepared=()
if "$bin" send --help | grep -q -- '--manifest'; then
  prepared=(--manifest "$work/manifest")
fi

has_tls_only=
if "$bin" send --help | grep -q -- 'tls-only'; then has_tls_only=1; fi

mover() { # transport
  local t=$1 n=$2 job="move-$1-$2"
  local mout=()
  if [[ ${#prepared[@]} -gt 0 ]]; then mout=(--manifest-out "$work/manifest"); fi
  "$bin" ticket --dir "$work/keys" --checkpoint "$work/src" --job "$job" --out "$work/ticket" "${mout[@]}"
  settle
  start "$bin" serve --dir "$work/keys" --listen 127.0.0.1:0 --inbox "$work/inbox" \
    --transport "$t" --once "${buffer[@]}"
  local json
  json=$("$bin" send --dir "$work/keys" --to "$addr" --ticket "$work/ticket" \
    --checkpoint "$work/src" --transport "$t" "${buffer[@]}" "${prepared[@]}")
  wait "$srv"
  echo "   mover/$t #$n (load $(cut -d' ' -f1 /proc/loadavg)): $json" >&2
  runs[mover-$t]+=" $(mbps <<<"$json")"
  rm -rf "${work:?}/inbox/$job"
}

tcp_copy() {
  settle
  start "$bin" tcp-serve --listen 127.0.0.1:0 --out "$work/copy.bin"
  local json
  json=$("$bin" tcp-send --to "$addr" --file "$file")
  wait "$srv"
  echo "   tcp #$1: $json" >&2
  runs[tcp]+=" $(mbps <<<"$json")"
  rm -f "$work/copy.bin"
}

# For reference: the plain copy writing as the mover's destination does (aligned writes
# past the page cache), so a reader can see how much of the mover's figure is that.
tcp_copy_direct() {
  settle
  start "$bin" tcp-serve --listen 127.0.0.1:0 --out "$work/copy.bin" --direct
  local json
  json=$("$bin" tcp-send --to "$addr" --file "$file")
  wait "$srv"
  echo "   tcp-direct #$1: $json" >&2
  runs[tcp-direct]+=" $(mbps <<<"$json")"
  rm -f "$work/copy.bin"
}
has_tcp_direct=
if "$bin" tcp-serve --help | grep -q -- '--direct'; then has_tcp_direct=1; fi

ssh_port=
start_sshd() {
  local d=$work/ssh
  mkdir -p "$d" /run/sshd
  ssh-keygen -q -t ed25519 -N '' -f "$d/host_key"
  ssh-keygen -q -t ed25519 -N '' -f "$d/client_key"
  cp "$d/client_key.pub" "$d/authorized_keys"
  ssh_port=$((20000 + RANDOM % 20000))
  cat >"$d/sshd_config" <<EOF
Port $ssh_port
ListenAddress 127.0.0.1
HostKey $d/host_key
PidFile $d/sshd.pid
AuthorizedKeysFile $d/authorized_keys
StrictModes no
UsePAM no
PermitRootLogin yes
PasswordAuthentication no
KbdInteractiveAuthentication no
Subsystem sftp internal-sftp
EOF
  /usr/sbin/sshd -D -e -p "$ssh_port" -f "$d/sshd_config" 2>>"$d/sshd.log" &
  pids+=("$!")
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$ssh_port") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "sshd did not start" >&2
  cat "$d/sshd.log" >&2
  exit 1
}

scp_copy() {
  local t0 t1 secs
  settle
  t0=$(date +%s.%N)
  scp -q -P "$ssh_port" -i "$work/ssh/client_key" -o StrictHostKeyChecking=no \
    -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR "$file" "root@127.0.0.1:$work/scp.bin"
  sync
  t1=$(date +%s.%N)
  secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.6f", b - a}')
  local mb
  mb=$(awk -v n=$((mib * 1024 * 1024)) -v s="$secs" 'BEGIN {printf "%.2f", n / 1e6 / s}')
  echo "   scp #$1: {\"seconds\":$secs,\"mb_per_s\":$mb}" >&2
  runs[scp]+=" $mb"
  if [[ $1 == "$reps" ]] && ! cmp -s "$file" "$work/scp.bin"; then
    echo "scp copy differs" >&2
    exit 1
  fi
  rm -f "$work/scp.bin"
}

start_sshd
echo "== measuring, $reps runs each, interleaved, order rotating" >&2
# The order rotates from one repetition to the next, so that no way always runs first
# after the previous repetition's scp and sync (here the first run after a pause was
# often the slowest of its kind, whichever it was).
ways=("mover tls")
if [[ -n $has_tls_only ]]; then ways+=("mover tls-only"); fi
ways+=("mover tcp" "tcp_copy")
if [[ -n $has_tcp_direct ]]; then ways+=("tcp_copy_direct"); fi
ways+=("scp_copy")
for n in $(seq "$reps"); do
  for ((j = 0; j < ${#ways[@]}; j++)); do
    way=${ways[$(((j + n - 1) % ${#ways[@]}))]}
    $way "$n"
  done
done

m_tls=$(median <<<"${runs[mover-tls]}")
m_tls_only=
if [[ -n $has_tls_only ]]; then m_tls_only=$(median <<<"${runs[mover-tls-only]}"); fi
m_tcp=$(median <<<"${runs[mover-tcp]}")
tcp=$(median <<<"${runs[tcp]}")
scp=$(median <<<"${runs[scp]}")
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
echo
echo "transfer of ${mib} MiB on loopback, median of $reps (MB/s, MB = 10^6 bytes)"
printf '  %-34s %10s   %s\n' "how" "MB/s" "runs"
if [[ -n $has_tls_only ]]; then
  printf '  %-34s %10s  %s\n' "mover, mTLS + bound TCP bulk" "$m_tls" "${runs[mover-tls]}"
  printf '  %-34s %10s  %s\n' "mover, everything over mTLS" "$m_tls_only" "${runs[mover-tls-only]}"
else
  printf '  %-34s %10s  %s\n' "mover, mutual TLS (this binary)" "$m_tls" "${runs[mover-tls]}"
fi
printf '  %-34s %10s  %s\n' "mover, one plain TCP connection" "$m_tcp" "${runs[mover-tcp]}"
printf '  %-34s %10s  %s\n' "TCP copy + fsync" "$tcp" "${runs[tcp]}"
if [[ -n $has_tcp_direct ]]; then
  printf '  %-34s %10s  %s\n' "TCP copy, O_DIRECT writes + fsync" "$(median <<<"${runs[tcp-direct]}")" "${runs[tcp-direct]}"
fi
printf '  %-34s %10s  %s\n' "scp + sync" "$scp" "${runs[scp]}"
echo "  mover/tcp $(ratio "$m_tls" "$tcp"), mover/scp $(ratio "$m_tls" "$scp"), mover one plain TCP connection / mover $(ratio "$m_tcp" "$m_tls")"
if [[ -n $has_tls_only ]]; then
  echo "  mover / everything over mTLS $(ratio "$m_tls" "$m_tls_only")"
fi
echo "  load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "mover: $m_tls MB/s, tcp $tcp MB/s, scp $scp MB/s"
