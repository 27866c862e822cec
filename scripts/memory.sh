#!/usr/bin/env bash
# Resident memory of outrider: idle, under 64-connection wrk load, and
# holding N idle keep-alive connections (default 10,000). Loopback only;
# proxy pinned to CPU 0, load and app to CPU 1. Access log and metrics on.
# Usage: scripts/memory.sh [N]
set -euo pipefail
N=${1:-10000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${SHARED_DIR:-$ROOT/../shared}
[ -d "$SHARED/bench/backend" ] || { echo "memory.sh: $SHARED/bench/backend not found (set SHARED_DIR)" >&2; exit 2; }
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
[ "$(ulimit -n)" -gt $((N + 100)) ] || { echo "memory.sh: ulimit -n $(ulimit -n) is too low for $N connections" >&2; exit 2; }
W=$(mktemp -d -t outrider-mem.XXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT

go build -o "$W/outrider" "$ROOT/cmd/outrider"
go build -o "$W/idleconns" "$ROOT/scripts/idleconns"
(cd "$SHARED/bench/backend" && go build -o "$W/backend" .)
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
  -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" -keyout "$W/key.pem" -out "$W/cert.pem" 2>/dev/null
waitport() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; return 1; }
rss() { awk '/VmRSS/ {printf "%.1f", $2/1024}' /proc/$1/status; }
hwm() { awk '/VmHWM/ {printf "%.1f", $2/1024}' /proc/$1/status; }

taskset -c 1 "$W/backend" -listen 127.0.0.1:18280 & PIDS+=($!)
waitport 18280
start_proxy() {
  taskset -c 0 "$W/outrider" proxy --listen 127.0.0.1:19643 --http-listen "" --admin-listen "" \
    --upstream http://127.0.0.1:18280 --cert "$W/cert.pem" --key "$W/key.pem" 2>"$W/outrider.log" &
  PX=$!; PIDS+=($PX); waitport 19643
}

start_proxy
sleep 2
taskset -c 1 curl -sk -o /dev/null https://localhost:19643/
sleep 1
echo "idle_rss_MB=$(rss $PX)"
taskset -c 1 wrk -t1 -c64 -d10s https://localhost:19643/ >/dev/null 2>&1 &
LOAD=$!
sleep 8; during=$(rss $PX)
wait $LOAD || true
echo "load64_rss_MB=$during load64_hwm_MB=$(hwm $PX)"
kill $PX; wait $PX 2>/dev/null || true

start_proxy
taskset -c 1 "$W/idleconns" -addr 127.0.0.1:19643 -n "$N" -hold 20s > "$W/idle.txt" &
IC=$!
for _ in $(seq 600); do grep -q open= "$W/idle.txt" 2>/dev/null && break; sleep 0.5; done
sleep 5
cat "$W/idle.txt"
echo "idle${N}_rss_MB=$(rss $PX) idle${N}_hwm_MB=$(hwm $PX)"
wait $IC || true
