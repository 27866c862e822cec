#!/usr/bin/env bash
# The one test command: installs the tools the tests need (as root), then
# gofmt, go vet, staticcheck, unit tests and integration tests.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  # sslscan + openssl: TLS posture scan and chain check; iproute2: the
  # netns pod test; knot + knot-dnsutils: the authoritative DNS server
  # (knotd), kdig and knsupdate of the DNS-01 tests.
  pkgs="etcd-server chromium iproute2 curl sslscan openssl knot knot-dnsutils"
  missing=""
  for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
  if [ -n "$missing" ]; then
    echo "== installing:$missing"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
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
echo "== fuzz (every target, briefly, on top of its testdata/fuzz corpus)"
FUZZTIME="${FUZZTIME:-3s}" bash scripts/fuzz.sh
echo "== integration tests"
go test -race -count=1 -timeout 20m ./integration/...
