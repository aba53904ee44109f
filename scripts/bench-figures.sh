#!/usr/bin/env bash
# bench-figures.sh FILE FIGURES replaces the lines of FILE between
# "<!-- figures:begin -->" and "<!-- figures:end -->" with the contents of
# FIGURES (what `drover bench --markdown` wrote). make bench-report runs it.
set -euo pipefail
file=$1 figures=$2
grep -q '^<!-- figures:begin -->$' "$file" && grep -q '^<!-- figures:end -->$' "$file" ||
	{ echo "bench-figures: $file has no figures:begin/end markers" >&2; exit 1; }
tmp=$(mktemp)
awk -v figures="$figures" '
	/^<!-- figures:begin -->$/ { print; while ((getline line < figures) > 0) print line; skip = 1; next }
	/^<!-- figures:end -->$/ { skip = 0 }
	!skip { print }
' "$file" >"$tmp"
mv "$tmp" "$file"
