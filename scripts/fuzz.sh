#!/usr/bin/env bash
# fuzz.sh runs every Fuzz target of the module, each for FUZZTIME (default
# 30s; Go's -fuzztime, so "500x" means 500 inputs), the packages FUZZJOBS
# at a time (default 1; each fuzzes with nproc/FUZZJOBS workers).
#
# The targets are found in the test files `go list` names for this
# platform, so a new target runs without being listed here. Each package's
# fuzzing test binary is built once (go test -c -fuzz), then run for each
# of its targets from the package's directory, as `go test -run '^$' -fuzz
# '^FuzzXxx$' -fuzztime FUZZTIME` would run it (same corpus cache), without
# linking it again for every target. Each run starts with the target's
# seeds (f.Add and testdata/fuzz/FuzzXxx), then fuzzes. A failing input
# lands in the package's testdata/fuzz/FuzzXxx directory: the script
# prints the run's output and the input, goes on with the other targets
# and exits 1 at the end. Commit the input with the fix; it then runs as a
# regression seed in every `go test`.
#
# FUZZPKGS limits the run to some packages (go list patterns; default
# ./...).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

export GO=${GO:-go}
export FUZZTIME=${FUZZTIME:-30s}
jobs=${FUZZJOBS:-1}
workers=$(( $(nproc) / jobs ))
export FUZZWORKERS=$(( workers > 0 ? workers : 1 ))
FUZZBIN=$(mktemp -d)
export FUZZBIN
trap 'rm -rf "$FUZZBIN"' EXIT
FUZZCACHE=$($GO env GOCACHE)/fuzz
export FUZZCACHE

# deadline_race reports whether the failed run whose output is in $1 is
# Go's own race at the end of a -fuzztime duration (go.dev/issue/75804,
# fixed in Go 1.27): its only error "context deadline exceeded", and no
# new input in the corpus directory $2 since the marker file $3.
deadline_race() {
	grep -q '^    context deadline exceeded$' "$1" || return 1
	! grep -q 'Failing input written\|panic:\|_test\.go:[0-9]' "$1" || return 1
	[ ! -d "$2" ] || [ -z "$(find "$2" -type f -newer "$3")" ]
}
export -f deadline_race

# pkg fuzzes one package: "pkg dir FuzzA FuzzB ...". It prints one line
# per target, and everything about a failure.
pkg() {
	local pkg=$1 dir=$2 bin out marker start rc=0 failed=0
	shift 2
	bin=$FUZZBIN/$(echo "$pkg" | tr / _).test
	out=$(mktemp)
	if ! $GO test -c -fuzz . -o "$bin" "$pkg" >"$out" 2>&1; then
		echo "fuzz: FAIL $pkg: the test binary does not build" >&2
		cat "$out" >&2
		rm -f "$out"
		return 1
	fi
	for target in "$@"; do
		marker=$(mktemp)
		start=$SECONDS
		rc=0
		(cd "$dir" && "$bin" -test.run '^$' -test.fuzz "^${target}\$" -test.fuzztime "$FUZZTIME" \
			-test.parallel "$FUZZWORKERS" -test.fuzzcachedir "$FUZZCACHE/$pkg") >"$out" 2>&1 || rc=$?
		if [ $rc -ne 0 ] && deadline_race "$out" "$dir/testdata/fuzz/$target" "$marker"; then
			echo "fuzz: ok   $pkg $target ($((SECONDS - start))s; Go's fuzztime deadline race, go.dev/issue/75804, no failing input)"
		elif [ $rc -eq 0 ]; then
			echo "fuzz: ok   $pkg $target ($((SECONDS - start))s)"
		else
			failed=1
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
		rm -f "$marker"
	done
	rm -f "$out"
	return $failed
}
export -f pkg

# Every package with targets, as "pkg dir FuzzA FuzzB ...", from the test
# files go list gives for this platform: no test binary is built to list
# them.
list() {
	# shellcheck disable=SC2086
	$GO list -f '{{.ImportPath}} {{.Dir}} {{join .TestGoFiles " "}} {{join .XTestGoFiles " "}}' ${FUZZPKGS:-./...} |
		while read -r pkg dir files; do
			[ -n "$files" ] || continue
			# shellcheck disable=SC2086
			targets=$(cd "$dir" && sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*\*testing\.F) {$/\1/p' $files | sort -u)
			[ -z "$targets" ] || echo "$pkg $dir" $targets
		done
}

packages=$(list)
n=$(echo "$packages" | awk '{n += NF - 2} END {print n + 0}')
echo "fuzz: $n targets in $(echo "$packages" | grep -c .) packages, $FUZZTIME each, $jobs packages at a time" >&2
start=$SECONDS
failed=0
echo "$packages" | xargs -r -P "$jobs" -L 1 bash -c 'pkg "$@"' _ || failed=1
secs=$((SECONDS - start))
if [ $failed -ne 0 ]; then
	echo "fuzz: some of the $n targets failed (above) in ${secs}s" >&2
	exit 1
fi
echo "fuzz: $n targets passed in ${secs}s" >&2
