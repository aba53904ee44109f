#!/usr/bin/env bash
# Builds the images of the container cluster (deploy/compose.yaml, the
# cluster tests), all FROM scratch since nothing can be pulled:
#
#   drover:local          the static drover (CGO_ENABLED=0): manager, farm
#                         and the reference worker its farms run
#                         (deploy/cluster/farm.yaml, /etc/drover/farm.yaml),
#                         with Debian's assimp and its shared libraries, the
#                         farms' mesh converter
#   drover-redis:local    Debian's redis-server with its shared libraries
#   drover-haproxy:local  Debian's haproxy with its shared libraries and
#                         deploy/cluster/haproxy.cfg
#
# Each build context is hashed; an image whose label drover.cluster.hash
# matches is left alone, so a second run only rebuilds drover (quick when Go's
# cache is warm) and builds nothing. TAG (default local) changes the tags.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
tag=${TAG:-local}
work="$root/bin/cluster"
mkdir -p "$work"

# copy_with_libs BINARY CONTEXT: the binary and every library ldd names
# (the dynamic loader too), at their own paths under CONTEXT.
copy_with_libs() {
	local bin=$1 ctx=$2
	install -D -m 0755 "$bin" "$ctx$bin"
	ldd "$bin" | awk '/=> \//{print $3} /^\t\//{print $1}' | while read -r lib; do
		# The loader and libraries keep the paths the binary asks for; the
		# targets of symlinks are copied as files of the linked name.
		install -D -m 0755 "$(readlink -f "$lib")" "$ctx$lib"
	done
}

# build NAME CONTEXT: docker build unless the image has this context's hash.
build() {
	local image=$1:$tag ctx=$2 sum have
	sum=$(cd "$ctx" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)
	have=$(docker image inspect -f '{{index .Config.Labels "drover.cluster.hash"}}' "$image" 2>/dev/null || true)
	if [ "$have" = "$sum" ]; then
		echo "$image is up to date"
		return
	fi
	if ! docker build -q --label drover.cluster.hash="$sum" --label drover.cluster=image -t "$image" "$ctx" >"$work/build.log" 2>&1; then
		cat "$work/build.log" >&2
		exit 1
	fi
	echo "built $image"
}

for bin in redis-server:/usr/bin/redis-server haproxy:/usr/sbin/haproxy assimp-utils:/usr/bin/assimp; do
	if [ ! -x "${bin#*:}" ]; then
		echo "${bin#*:} is missing: apt-get install ${bin%%:*} (scripts/setup.sh installs it)" >&2
		exit 1
	fi
done

# drover
ctx="$work/drover"
mkdir -p "$ctx/tmp"
( cd "$root" && CGO_ENABLED=0 go build -trimpath -buildvcs=false -o "$ctx/drover.new" ./cmd/drover )
if cmp -s "$ctx/drover.new" "$ctx/drover"; then rm "$ctx/drover.new"; else mv "$ctx/drover.new" "$ctx/drover"; fi
touch "$ctx/tmp/.keep"
install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$ctx/etc/ssl/certs/ca-certificates.crt"
install -D -m 0644 "$root/deploy/cluster/farm.yaml" "$ctx/etc/drover/farm.yaml"
copy_with_libs /usr/bin/assimp "$ctx"
cat > "$ctx/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY . /
ENV TMPDIR=/tmp HOME=/tmp XDG_STATE_HOME=/tmp XDG_DATA_HOME=/tmp PATH=/usr/bin
ENTRYPOINT ["/drover"]
CMD ["--help"]
DOCKERFILE
build drover "$ctx"

# redis
ctx="$work/redis"
rm -rf "$ctx" && mkdir -p "$ctx/data"
copy_with_libs /usr/bin/redis-server "$ctx"
install -m 0644 "$root/deploy/cluster/redis.conf" "$ctx/redis.conf"
touch "$ctx/data/.keep"
cat > "$ctx/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY . /
EXPOSE 6379
ENTRYPOINT ["/usr/bin/redis-server", "/redis.conf"]
DOCKERFILE
build drover-redis "$ctx"

# haproxy
ctx="$work/haproxy"
rm -rf "$ctx" && mkdir -p "$ctx/tmp"
copy_with_libs /usr/sbin/haproxy "$ctx"
install -D -m 0644 "$root/deploy/cluster/haproxy.cfg" "$ctx/etc/haproxy/haproxy.cfg"
touch "$ctx/tmp/.keep"
cat > "$ctx/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY . /
EXPOSE 80 8282
ENTRYPOINT ["/usr/sbin/haproxy", "-W", "-db", "-f", "/etc/haproxy/haproxy.cfg"]
DOCKERFILE
build drover-haproxy "$ctx"
