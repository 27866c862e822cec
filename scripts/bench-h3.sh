#!/usr/bin/env bash
# HTTP/3 side by side: outrider and Caddy on loopback, measured with our own
# quic-go load client (scripts/h3load), since h2load's HTTP/3 depends on how
# it was built. Each proxy gets CPU 0 alone; the load client and the stand-in
# app (../shared/bench/backend) share CPU 1. Columns: h3 req/s, p99, and the
# proxy's own CPU time (user+system) per request in µs, the fairest figure on
# a shared two-core machine; then outrider's ratios to Caddy. RUNS runs,
# medians printed.
#
# Usage: scripts/bench-h3.sh [seconds-per-run] ; env RUNS (default 3),
# CADDY_BIN (default caddy on PATH; build one with
#   GOBIN=$(mktemp -d) go install github.com/caddyserver/caddy/v2/cmd/caddy@v2.11.9
# and never commit it), CONNS (16), STREAMS (16), OUTRIDER_ARGS (extra flags).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${SHARED_DIR:-$ROOT/../shared}
D=${1:-8}
RUNS=${RUNS:-3}
CADDY=${CADDY_BIN:-$(command -v caddy || true)}
C=${CONNS:-16}
M=${STREAMS:-16}
for t in taskset openssl go; do
  command -v "$t" >/dev/null || { echo "bench-h3.sh: $t is not installed" >&2; exit 2; }
done
[ -d "$SHARED/bench/backend" ] || { echo "bench-h3.sh: $SHARED/bench/backend not found (set SHARED_DIR)" >&2; exit 2; }
names="outrider"
[ -n "$CADDY" ] && [ -x "$CADDY" ] && names="$names caddy" || echo "bench-h3.sh: no caddy (CADDY_BIN), skipped" >&2

W=$(mktemp -d -t outrider-bench-h3.XXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
echo "== building outrider, h3load and the backend" >&2
go build -o "$W/outrider" "$ROOT/cmd/outrider"
go build -o "$W/h3load" "$ROOT/scripts/h3load"
( cd "$SHARED/bench/backend" && go build -o "$W/backend" . )
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
  -keyout "$W/key.pem" -out "$W/cert.pem" 2>/dev/null

# Ports away from peers.sh's (18080, 19443+), which others may be running.
BACKEND=127.0.0.1:28080
taskset -c 1 "$W/backend" -listen $BACKEND & PIDS+=($!)
waitport() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; return 1; }
waitport 28080 || { echo "backend did not start" >&2; exit 2; }

start() { # name port -> PID
  case $1 in
  outrider)
    # shellcheck disable=SC2086
    taskset -c 0 "$W/outrider" proxy --listen 127.0.0.1:$2 --http-listen "" --admin-listen "" \
      --upstream http://$BACKEND --cert "$W/cert.pem" --key "$W/key.pem" ${OUTRIDER_ARGS:-} >"$W/outrider.log" 2>&1 & ;;
  caddy)
    cat > "$W/Caddyfile" <<C
{
	admin off
	auto_https off
	storage file_system $W/caddydata
}
https://localhost:$2, https://127.0.0.1:$2 {
	tls $W/cert.pem $W/key.pem
	reverse_proxy $BACKEND
}
C
    HOME=$W XDG_DATA_HOME=$W XDG_CONFIG_HOME=$W taskset -c 0 "$CADDY" run --config "$W/Caddyfile" --adapter caddyfile >"$W/caddy.log" 2>&1 & ;;
  esac
  PID=$!; PIDS+=($PID)
}
ticks() { local t=0 p; for p in $PID $(pgrep -P $PID 2>/dev/null); do
  t=$((t + $(awk '{print $14+$15}' /proc/$p/stat 2>/dev/null || echo 0))); done; echo $t; }
HZ=$(getconf CLK_TCK)

declare -A RPS US P99
port=29443
for run in $(seq "$RUNS"); do
  for n in $names; do
    port=$((port+1))
    start "$n" $port
    waitport $port || { echo "$n did not start" >&2; cat "$W/$n.log" >&2; exit 1; }
    sleep 0.5
    # Warm-up (handshakes, pools), then the measured run.
    taskset -c 1 "$W/h3load" -addr 127.0.0.1:$port -url https://localhost:$port/ -cacert "$W/cert.pem" -c "$C" -m "$M" -d 1s -warmup 0s >/dev/null
    t0=$(ticks)
    out=$(taskset -c 1 "$W/h3load" -addr 127.0.0.1:$port -url https://localhost:$port/ -cacert "$W/cert.pem" -c "$C" -m "$M" -d "${D}s" -warmup 1s)
    t1=$(ticks)
    kill $PID; wait $PID 2>/dev/null || true
    reqs=$(awk '{print $2}' <<<"$out"); rps=$(awk '{print $8}' <<<"$out"); p99=$(awk '{print $12}' <<<"$out")
    # The ticks cover the 1 s warm-up of the measured run too: count its
    # requests at the measured rate.
    us=$(awk -v t=$((t1-t0)) -v hz="$HZ" -v n="$reqs" -v r="$rps" 'BEGIN { printf "%.1f", t*1e6/hz/(n + r) }')
    echo "run $run $n: $out us_per_req $us" >&2
    RPS[$n]="${RPS[$n]:-} $rps"; US[$n]="${US[$n]:-} $us"; P99[$n]="${P99[$n]:-} $p99"
  done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END { print a[int((NR+1)/2)] }'; }
printf "%-9s %9s %9s %10s\n" proxy h3_rps p99_ms us_per_req
for n in $names; do
  printf "%-9s %9s %9s %10s\n" "$n" "$(median <<<"${RPS[$n]}")" "$(median <<<"${P99[$n]}")" "$(median <<<"${US[$n]}")"
done
if [[ " $names " == *" caddy "* ]]; then
  awk -v r1="$(median <<<"${RPS[outrider]}")" -v r2="$(median <<<"${RPS[caddy]}")" \
      -v u1="$(median <<<"${US[outrider]}")" -v u2="$(median <<<"${US[caddy]}")" \
      'BEGIN { printf "outrider/caddy: req/s %.2f×, CPU per request %.2f×\n", r1/r2, u1/u2 }'
fi
