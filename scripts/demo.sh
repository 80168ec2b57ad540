#!/bin/sh
# The main job on a fresh Debian machine: build strata, make the busybox base image, and show it.
set -eu
cd "$(dirname "$0")/.."
./scripts/deps.sh
cargo build --release --locked
S="./target/x86_64-unknown-linux-gnu/release/strata --root ${STRATA_ROOT:-/var/lib/strata}"
tar=$(mktemp --suffix=.tar)
trap 'rm -f "$tar"' EXIT
./tests/fixtures/busybox-rootfs.sh "$tar"
$S import -c 'CMD ["sh"]' "$tar" busybox:latest
$S images
$S history busybox
