#!/bin/sh
# The main job on a fresh Debian machine: build strata, make the busybox base image from
# Debian's busybox-static, build the example images and run them.
#   ./scripts/demo.sh          static-site and hello examples
#   ./scripts/demo.sh c-app    also the multi-stage C example (debootstraps debian:bookworm)
#   ./scripts/demo.sh multiarch  also the cross-compiled example for amd64 and arm64 (QEMU)
set -eu
cd "$(dirname "$0")/.."
./scripts/deps.sh
cargo build --release --locked
bin=./target/x86_64-unknown-linux-gnu/release/strata
S="$bin --root ${STRATA_ROOT:-/var/lib/strata}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
./tests/fixtures/busybox-rootfs.sh "$work/busybox.tar"
$S import -c 'CMD ["sh"]' "$work/busybox.tar" busybox:latest >/dev/null

echo "== building examples/hello"
$S build -t hello examples/hello
$S run --rm hello strata

echo "== building examples/static-site"
$S build -t static-site examples/static-site
port=18080
id=$($S run -d --rm --network host static-site httpd -f -p $port -h /www)
sleep 0.5
$S exec "$id" wget -q -O - "http://127.0.0.1:$port/"
$S stop -t 1 "$id" >/dev/null

if [ "${1:-}" = "c-app" ]; then
  echo "== building examples/c-app (debian:bookworm from debootstrap)"
  ./tests/fixtures/debian-rootfs.sh "$work/debian.tar"
  $S import "$work/debian.tar" debian:bookworm >/dev/null
  $S build -t c-app examples/c-app
  $S run --rm c-app
fi
if [ "${1:-}" = "multiarch" ]; then
  echo "== building examples/multiarch for linux/amd64 and linux/arm64"
  ./tests/fixtures/debian-rootfs.sh "$work/debian.tar"
  $S import "$work/debian.tar" debian:bookworm >/dev/null
  ./tests/fixtures/busybox-rootfs.sh "$work/busybox-arm64.tar" arm64
  $S import --platform linux/arm64 -c 'CMD ["sh"]' "$work/busybox-arm64.tar" busybox:arm64 >/dev/null
  $S tag busybox:latest busybox:amd64
  $S build --platform linux/amd64,linux/arm64 -t multiarch examples/multiarch
  for arch in amd64 arm64; do
    $S run --rm --platform "linux/$arch" multiarch
  done
fi
$S images
