#!/usr/bin/env bash
# CPU and allocation profiles of outrider under load, on loopback.
# Usage: scripts/profile.sh [seconds] [h1|h2|big] [outdir]
# Needs wrk (h1, big) or h2load (h2), and ../shared/bench/backend (the
# stand-in app). The proxy is pinned to CPU 0, load and app to CPU 1, as in
# scripts/bench.sh. Access log and metrics stay on.
set -euo pipefail
D=${1:-10}; MODE=${2:-h1}; OUT=${3:-prof}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${SHARED_DIR:-$ROOT/../shared}
[ -d "$SHARED/bench/backend" ] || { echo "profile.sh: $SHARED/bench/backend not found (set SHARED_DIR)" >&2; exit 2; }
mkdir -p "$OUT"
W=$(mktemp -d -t outrider-prof.XXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT

go build -o "$OUT/outrider" "$ROOT/cmd/outrider"
(cd "$SHARED/bench/backend" && go build -o "$W/backend" .)
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
  -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" -keyout "$W/key.pem" -out "$W/cert.pem" 2>/dev/null

waitport() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; return 1; }
taskset -c 1 "$W/backend" -listen 127.0.0.1:18180 & PIDS+=($!)
taskset -c 0 "$OUT/outrider" proxy --listen 127.0.0.1:19543 --http-listen "" --admin-listen 127.0.0.1:19901 --pprof \
  --upstream http://127.0.0.1:18180 --cert "$W/cert.pem" --key "$W/key.pem" 2>"$W/outrider.log" & PIDS+=($!)
waitport 18180 && waitport 19543 && waitport 19901

U=https://localhost:19543
case $MODE in
  h1) load=(wrk -t1 -c64 -d$((D+2))s "$U/") ;;
  big) load=(wrk -t1 -c8 -d$((D+2))s "$U/big") ;;
  h2) load=(h2load -c16 -m16 -D $((D+2)) "$U/") ;;
  *) echo "mode: h1, h2 or big" >&2; exit 2 ;;
esac
taskset -c 1 "${load[@]}" > "$OUT/load-$MODE.txt" 2>&1 &
LOAD=$!
sleep 1
curl -s -o "$OUT/cpu-$MODE.pprof" "http://127.0.0.1:19901/debug/pprof/profile?seconds=$D"
curl -s -o "$OUT/allocs-$MODE.pprof" "http://127.0.0.1:19901/debug/pprof/allocs"
wait $LOAD || true
grep -E "Requests/sec|req/s|Transfer/sec" "$OUT/load-$MODE.txt" || true
echo "profiles: $OUT/cpu-$MODE.pprof $OUT/allocs-$MODE.pprof (go tool pprof -top $OUT/outrider $OUT/cpu-$MODE.pprof)"
