#!/usr/bin/env bash
# make bench: outrider beside nginx, Caddy and HAProxy on loopback.
#
# Builds outrider (no -race) and runs the shared side-by-side harness
# ../shared/bench/peers.sh (one core for the proxy, the load and the stand-in
# app on the other; wrk and h2load), RUNS times, then prints the median of
# each column and outrider's ratios to nginx and Caddy. Peers that are not
# installed are skipped. Needs ../shared beside the repository (CI copies
# it there); SHARED_DIR overrides.
#
# Usage: scripts/bench.sh [seconds-per-test] ; env RUNS (default 3), PEERS.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${SHARED_DIR:-$ROOT/../shared}
PEERS_SH=$SHARED/bench/peers.sh
D=${1:-6}
RUNS=${RUNS:-3}
if [ ! -f "$PEERS_SH" ]; then
  echo "bench.sh: $PEERS_SH not found: the shared harness must sit beside the repository (../shared), or set SHARED_DIR" >&2
  exit 2
fi
for t in wrk h2load taskset openssl go; do
  command -v "$t" >/dev/null || { echo "bench.sh: $t is not installed" >&2; exit 2; }
done
[ "$(nproc)" -ge 2 ] || echo "bench.sh: warning: fewer than 2 CPUs; the proxy and the load will share a core" >&2

names=${PEERS:-}
if [ -z "$names" ]; then
  names="godirect"
  command -v nginx >/dev/null && names="$names nginx" || echo "bench.sh: nginx not installed, skipped" >&2
  command -v "${CADDY_BIN:-caddy}" >/dev/null && names="$names caddy" || echo "bench.sh: caddy not installed (CADDY_BIN), skipped" >&2
  command -v haproxy >/dev/null && names="$names haproxy" || echo "bench.sh: haproxy not installed, skipped" >&2
  names="$names outrider"
fi

W=$(mktemp -d -t outrider-bench.XXXX)
trap 'rm -rf "$W"' EXIT
echo "== building outrider" >&2
go build -o "$W/outrider" "$ROOT/cmd/outrider"
export OUTRIDER_BIN=$W/outrider

for i in $(seq "$RUNS"); do
  echo "== run $i/$RUNS:$names (${D}s per test)" >&2
  bash "$PEERS_SH" "$D" $names | tee "$W/run$i.txt" >&2
done

# Median per proxy and column over the runs, then ratios. A cell that is
# "-" in a run is left out of that median.
awk -v runs="$RUNS" '
FNR == 1 { next }                      # each run has its header line
{ order[$1] = order[$1] ? order[$1] : ++n; names[order[$1]] = $1
  for (c = 2; c <= 9; c++) { v = $c; sub(/ms$/, "", v)
    if ($c ~ /us$/) { v = $c; sub(/us$/, "", v); v /= 1000 }
    if ($c ~ /[0-9.]+s$/ && $c !~ /ms$/ && $c !~ /us$/) { v = $c; sub(/s$/, "", v); v *= 1000 }
    if ($c != "-" && $c != "") vals[$1, c] = vals[$1, c] " " v } }
function median(s,   a, k, i, j, t) {
  k = split(s, a, " "); if (k == 0) return ""
  for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
  return (k % 2) ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2 }
END {
  split("h1_rps h1_p99_ms h2_rps hs_per_s big_MBps rss_MB h1_us_req h2_us_req", hdr, " ")
  printf "\nmedian of %d runs\n%-9s", runs, "proxy"; for (c = 1; c <= 8; c++) printf " %10s", hdr[c]; printf "\n"
  for (i = 1; i <= n; i++) { p = names[i]; printf "%-9s", p
    for (c = 2; c <= 9; c++) { m[p, c] = median(vals[p, c]); printf " %10s", (m[p, c] == "" ? "-" : m[p, c]) }
    printf "\n" }
  for (r = 1; r <= 2; r++) { ref = (r == 1) ? "nginx" : "caddy"
    if (!((ref, 2) in m) || m[ref, 2] == "") continue
    printf "%-9s", "÷" ref
    for (c = 2; c <= 9; c++) {
      a = m["outrider", c]; b = m[ref, c]
      if (a == "" || b == "" || b + 0 == 0) printf " %10s", "-"; else printf " %9.2fx", a / b }
    printf "\n" }
  print "(ratios are outrider / peer; for h1_p99_ms, rss_MB and the us_req columns lower is better)"
}' "$W"/run*.txt
