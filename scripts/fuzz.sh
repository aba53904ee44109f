#!/usr/bin/env bash
# fuzz.sh runs every Fuzz target of the module, one after the other, each
# for FUZZTIME (default 30s; Go's -fuzztime, so "200x" means 200 inputs).
# The targets are listed with `go test -list`, so a new one runs without
# being named here. Each run starts with the target's seeds (f.Add and
# testdata/fuzz/FuzzXxx). A failing input lands in the package's
# testdata/fuzz/FuzzXxx directory: the script prints it, goes on with the
# other targets and exits 1 at the end. Commit the input with the fix; it
# then runs as a regression seed in every `go test`.
#
# FUZZPKGS limits the run to some packages (go list patterns, default
# every package with a Fuzz target).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

go=${GO:-go}
fuzztime=${FUZZTIME:-30s}

# Only packages whose tests declare a Fuzz target: listing every package
# would build every test binary for nothing.
if [ -n "${FUZZPKGS:-}" ]; then
	# shellcheck disable=SC2086
	pkgs=$($go list $FUZZPKGS)
else
	dirs=$(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u)
	# shellcheck disable=SC2086
	pkgs=$($go list $dirs)
fi

start=$SECONDS
ran=0
failed=()
for pkg in $pkgs; do
	targets=$($go test -list '^Fuzz' "$pkg" | grep '^Fuzz' || true)
	for target in $targets; do
		echo "fuzz: $pkg $target for $fuzztime" >&2
		dir=$($go list -f '{{.Dir}}' "$pkg")/testdata/fuzz/$target
		marker=$(mktemp)
		if ! $go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$pkg"; then
			failed+=("$pkg $target")
			# The input that failed, so that a CI log shows it.
			if [ -d "$dir" ]; then
				find "$dir" -type f -newer "$marker" | while read -r input; do
					echo "fuzz: failing input $input:" >&2
					cat "$input" >&2
				done
			fi
		fi
		rm -f "$marker"
		ran=$((ran + 1))
	done
done
secs=$((SECONDS - start))
if [ ${#failed[@]} -gt 0 ]; then
	echo "fuzz: ${#failed[@]} of $ran targets failed in ${secs}s:" >&2
	printf 'fuzz:   %s\n' "${failed[@]}" >&2
	exit 1
fi
echo "fuzz: $ran targets passed in ${secs}s" >&2
