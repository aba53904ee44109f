#!/usr/bin/env bash
# setup.sh prepares this machine to build and test drover. It is idempotent
# and quick when everything is in place, so `make test` runs it every time.
#
#   scripts/setup.sh          Go check, Debian packages, Go modules, versitygw
#   scripts/setup.sh --lint   the same, plus golangci-lint in ./bin
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

GO_MIN=1.26
# Bump deliberately: a new golangci-lint release can bring new findings.
GOLANGCI_LINT_VERSION=v2.15.0
# The S3-compatible server of the S3 storage tests (internal/testkit/s3test),
# built from its Go module into bin/versitygw-<version>/.
VERSITYGW_VERSION=v1.8.0

# Debian packages the tests need, one per line.
PACKAGES=(
	redis-server
	haproxy
	# drover bench: the proxies and the stdio server it measures drover against
	nginx
	websocketd
	chromium
	nodejs
	# conversion/convert: the real converters and their virtual display
	assimp-utils
	occt-draw
	libocct-draw-dev
	f3d
	xvfb
	xauth
	# conversion/convert: prlimit, the process runtime's converter limits
	util-linux
	# upload and download tokens: the tests use them as clients do
	curl
)

lint=false
for arg in "$@"; do
	case "$arg" in
	--lint) lint=true ;;
	-h | --help)
		sed -n 's/^# \{0,1\}//; 2,6p' "$0"
		exit 0
		;;
	*)
		echo "setup: unknown argument: $arg" >&2
		exit 2
		;;
	esac
done

log() { echo "setup: $*" >&2; }
die() {
	log "error: $*"
	exit 1
}

check_go() {
	command -v go >/dev/null 2>&1 ||
		die "go is not on PATH; install Go >= $GO_MIN from https://go.dev/dl/ and add its bin directory to PATH"
	# GOTOOLCHAIN=local and a neutral directory: check the Go that is
	# installed, not a toolchain go.mod would make it download.
	local v
	v=$(cd / && GOTOOLCHAIN=local go env GOVERSION) || die "cannot run 'go env GOVERSION'"
	case "$v" in
	go[0-9]*) ;;
	*)
		log "warning: cannot tell the version of '$v'; assuming it is >= $GO_MIN"
		return
		;;
	esac
	local have=${v#go} major minor
	major=${have%%.*}
	minor=${have#*.}
	minor=${minor%%[!0-9]*}
	if ((major < ${GO_MIN%%.*} || (major == ${GO_MIN%%.*} && minor < ${GO_MIN#*.}))); then
		die "$v is too old (at $(command -v go)); drover needs Go >= $GO_MIN: https://go.dev/dl/"
	fi
}

installed() {
	dpkg -s "$1" 2>/dev/null | grep -q '^Status: install ok installed$'
}

install_packages() {
	((${#PACKAGES[@]})) || return 0
	command -v dpkg >/dev/null 2>&1 ||
		die "not a Debian system; install these packages by hand: ${PACKAGES[*]}"
	local missing=() p
	for p in "${PACKAGES[@]}"; do
		installed "$p" || missing+=("$p")
	done
	((${#missing[@]})) || return 0

	local sudo=()
	if ((EUID != 0)); then
		command -v sudo >/dev/null 2>&1 || die "need root or sudo to install: ${missing[*]}"
		sudo=(sudo)
	fi
	log "installing ${missing[*]}"
	"${sudo[@]}" apt-get update -qq
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

install_golangci_lint() {
	local bin=$PWD/bin/golangci-lint
	if [[ -x $bin ]] && [[ $("$bin" version --short 2>/dev/null) == "${GOLANGCI_LINT_VERSION#v}" ]]; then
		return 0
	fi
	log "installing golangci-lint $GOLANGCI_LINT_VERSION into ./bin"
	GOBIN=$PWD/bin go install "github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$GOLANGCI_LINT_VERSION"
}

install_versitygw() {
	local dir=$PWD/bin/versitygw-$VERSITYGW_VERSION
	[[ -x $dir/versitygw ]] && return 0
	log "building versitygw $VERSITYGW_VERSION into $dir (the S3 server of the storage tests)"
	GOBIN=$dir go install "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION"
}

check_go
install_packages
install_versitygw
if $lint; then
	install_golangci_lint
fi
go mod download
