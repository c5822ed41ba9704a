#!/usr/bin/env bash
# fuzz.sh runs every native Go fuzz target in the module, one after
# another, for the given -fuzztime each (a duration such as 10m, or a count
# such as 200000x; default 200000x), and stops at the first failure. It
# prints each target's last status line, with its executions.
set -euo pipefail
fuzztime=${1:-200000x}
# FUZZPARALLEL limits the fuzzing workers (default: one per CPU).
parallel=${FUZZPARALLEL:+-parallel=$FUZZPARALLEL}
cd "$(dirname "$0")/.."
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for pkg in $(go list ./...); do
  dir=$(go list -f '{{.Dir}}' "$pkg")
  targets=$(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //' || true)
  for t in $targets; do
    echo "fuzz $pkg $t ($fuzztime)"
    if ! go test "$pkg" -run='^$' -fuzz="^${t}\$" -fuzztime="$fuzztime" $parallel >"$log" 2>&1; then
      # When a time budget runs out while a worker is busy, the fuzzer can
      # report its own "context deadline exceeded": that is no finding.
      if grep -q 'context deadline exceeded' "$log" && ! grep -q 'Failing input written' "$log"; then
        grep 'execs:' "$log" | tail -1
        echo "($t: the fuzzer's time budget ran out mid-run; no failing input)"
        continue
      fi
      cat "$log"
      exit 1
    fi
    grep 'execs:' "$log" | tail -1 || true
    tail -1 "$log"
  done
done
