#!/usr/bin/env bash
# fuzz.sh runs every Fuzz target of the module, one after the other, each for
# FUZZTIME (default 30s). New failing inputs land in the package's
# testdata/fuzz directory; commit them with the fix.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

fuzztime=${FUZZTIME:-30s}
ran=0
for pkg in $(go list ./...); do
	for target in $(go test -list '^Fuzz' "$pkg" | grep '^Fuzz' || true); do
		echo "fuzz: $pkg $target for $fuzztime" >&2
		go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$pkg"
		ran=$((ran + 1))
	done
done
echo "fuzz: $ran targets passed" >&2
