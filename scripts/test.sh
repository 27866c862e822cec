#!/usr/bin/env bash
# The one test command: installs the tools the tests need (as root), then
# gofmt, go vet, staticcheck, unit tests and integration tests.
set -euo pipefail
cd "$(dirname "$0")/.."

# apt_get runs apt-get, waiting (up to 10 minutes) for another apt or dpkg
# to release its lock instead of failing: on a fresh machine unattended
# upgrades, or a provisioning script, often holds it. Other failures fail.
apt_get() {
  local deadline=$((SECONDS + 600)) out
  while :; do
    if out=$(apt-get -o DPkg::Lock::Timeout=60 "$@" 2>&1); then
      [ -z "$out" ] || printf '%s\n' "$out"
      return 0
    fi
    if ! grep -qiE 'could not get lock|unable to acquire|is another process using it' <<<"$out" || ((SECONDS >= deadline)); then
      printf '%s\n' "$out" >&2
      return 1
    fi
    echo "== apt-get $1: another package manager holds the lock; waiting"
    sleep 5
  done
}

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  # sslscan + openssl: TLS posture scan and chain check; iproute2: the
  # netns pod test; knot + knot-dnsutils: the authoritative DNS server
  # (knotd), kdig and knsupdate of the DNS-01 tests; haproxy: PROXY
  # protocol v2 from a real balancer; nodejs and libcgi-pm-perl: the real
  # apps of the request-path tests.
  pkgs="etcd-server chromium iproute2 curl sslscan openssl knot knot-dnsutils haproxy nodejs libcgi-pm-perl"
  missing=""
  for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
  if [ -n "$missing" ]; then
    echo "== installing:$missing"
    apt_get update -qq
    DEBIAN_FRONTEND=noninteractive apt_get install -y -qq $missing >/dev/null
  fi
fi

echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go'))
if [ -n "$unformatted" ]; then echo "gofmt would change: $unformatted"; exit 1; fi
echo "== go vet"
go vet ./...
echo "== staticcheck"
go tool staticcheck ./...
echo "== unit tests"
go test -race -short -count=1 ./...
echo "== etcd storage tests (skipped by -short; they start the etcd installed above)"
go test -race -count=1 -run '^TestEtcd' ./certs/
echo "== fuzz (every target, briefly, on top of its testdata/fuzz corpus)"
FUZZTIME="${FUZZTIME:-3s}" bash scripts/fuzz.sh
echo "== integration tests"
go test -race -count=1 -timeout 20m ./integration/...
