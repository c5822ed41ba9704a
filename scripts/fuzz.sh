#!/usr/bin/env bash
# fuzz.sh runs every native Go fuzz target in the module for the given time
# each (default 3s), one after another, and stops at the first failure.
set -euo pipefail
fuzztime=${1:-3s}
cd "$(dirname "$0")/.."
for pkg in $(go list ./...); do
  dir=$(go list -f '{{.Dir}}' "$pkg")
  targets=$(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //' || true)
  for t in $targets; do
    echo "fuzz $pkg $t ($fuzztime)"
    go test "$pkg" -run='^$' -fuzz="^${t}\$" -fuzztime="$fuzztime" >/tmp/shoal-fuzz.log 2>&1 || { cat /tmp/shoal-fuzz.log; exit 1; }
    tail -1 /tmp/shoal-fuzz.log
  done
done
