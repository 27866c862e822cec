#!/usr/bin/env bash
# Runs every Go native fuzz target briefly (FUZZTIME, default 5s each), on
# top of its seed corpus in testdata/fuzz. A crasher is written to that
# package's testdata/fuzz/<Target>/ and fails the run: commit it with the fix.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime="${FUZZTIME:-5s}"
status=0
for pkg in $(go list ./...); do
  dir=$(go list -f '{{.Dir}}' "$pkg")
  for target in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //' | sort -u); do
    echo "== fuzz $pkg $target ($fuzztime)"
    if ! go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$pkg" 2>&1 | grep -v '^fuzz: elapsed'; then
      status=1
    fi
  done
done
exit $status
