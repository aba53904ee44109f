#!/usr/bin/env bash
# fuzz.sh runs every Fuzz target of the module, each for FUZZTIME (default
# 30s; Go's -fuzztime, so "500x" means 500 inputs), FUZZJOBS targets at a
# time (default 1; each fuzzes with GOMAXPROCS/FUZZJOBS workers).
#
# The targets are found in the test files `go list` names for this
# platform, so a new target runs without being listed here. Each run
# starts with the target's seeds (f.Add and testdata/fuzz/FuzzXxx), then
# fuzzes. A failing input lands in the package's testdata/fuzz/FuzzXxx
# directory: the script prints the run's output and the input, goes on
# with the other targets and exits 1 at the end. Commit the input with the
# fix; it then runs as a regression seed in every `go test`.
#
# FUZZPKGS limits the run to some packages (go list patterns; default
# ./...).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

export GO=${GO:-go}
export FUZZTIME=${FUZZTIME:-30s}
jobs=${FUZZJOBS:-1}

# one runs one target ("pkg dir target"), quietly unless it fails.
one() {
	local pkg=$1 dir=$2 target=$3 out marker start rc=0
	out=$(mktemp)
	marker=$(mktemp)
	start=$SECONDS
	if [ "${FUZZJOBS:-1}" -gt 1 ]; then
		export GOMAXPROCS=$(( ($(nproc) + FUZZJOBS - 1) / FUZZJOBS ))
	fi
	$GO test -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" "$pkg" >"$out" 2>&1 || rc=$?
	if [ $rc -eq 0 ]; then
		echo "fuzz: ok   $pkg $target ($((SECONDS - start))s)"
	else
		{
			echo "fuzz: FAIL $pkg $target ($((SECONDS - start))s)"
			cat "$out"
			# The input that failed, so that a CI log shows it.
			if [ -d "$dir/testdata/fuzz/$target" ]; then
				find "$dir/testdata/fuzz/$target" -type f -newer "$marker" | while read -r input; do
					echo "fuzz: failing input $input:"
					cat "$input"
				done
			fi
		} >&2
	fi
	rm -f "$out" "$marker"
	return $rc
}
export -f one

# Every "pkg dir FuzzXxx", from the test files go list gives for this
# platform: no test binary is built to list them.
list() {
	# shellcheck disable=SC2086
	$GO list -f '{{.ImportPath}} {{.Dir}} {{join .TestGoFiles " "}} {{join .XTestGoFiles " "}}' ${FUZZPKGS:-./...} |
		while read -r pkg dir files; do
			[ -n "$files" ] || continue
			(cd "$dir" && sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*\*testing\.F) {$/\1/p' $files) |
				sort -u | while read -r target; do echo "$pkg $dir $target"; done
		done
}

targets=$(list)
n=$(echo "$targets" | grep -c . || true)
echo "fuzz: $n targets, $FUZZTIME each, $jobs at a time" >&2
start=$SECONDS
failed=0
echo "$targets" | xargs -r -P "$jobs" -L 1 bash -c 'one "$@"' _ || failed=1
secs=$((SECONDS - start))
if [ $failed -ne 0 ]; then
	echo "fuzz: some of the $n targets failed (above) in ${secs}s" >&2
	exit 1
fi
echo "fuzz: $n targets passed in ${secs}s" >&2
