#!/bin/sh
# Installs the Debian packages strata's examples and tests need (run as root on Debian 12).
#  busybox-static      the tiny base image rootfs
#  debootstrap         the debian:bookworm base image rootfs
#  skopeo umoci runc podman  independent oracles for interop tests
#  docker-registry     the CNCF distribution server for registry tests
#  apache2-utils       htpasswd for registry auth tests
#  zstd xz-utils bzip2 hyperfine  compressed fixtures (ADD unpacks every kind); benchmarks
#  docker.io           dockerd as the oracle of the differential build tests
#  git python3         ADD of git repositories (and their test daemon); test fixtures
#  time                GNU time: peak memory of a build in the tests and benchmarks
#  strace              the tests check which syscalls a durable write makes
#  gcc libc6-dev       a static UDP echo server for the published-port tests
#  linux-libc-dev      syscall numbers the seccomp test compares Docker's profile by
#  uidmap passwd procps  rootless: newuidmap/newgidmap; useradd/usermod and pkill in its tests
#  slirp4netns         rootless containers' user-mode network
#  fuse-overlayfs      rootless overlays where the kernel will not mount overlayfs (and its test)
#  qemu-user-static    foreign platforms' RUN steps (registered in binfmt_misc by binfmt.sh);
#                      the arm64 architecture is added for the busybox-static:arm64 fixture
set -eu
pkgs="busybox-static debootstrap skopeo umoci runc podman docker-registry apache2-utils zstd xz-utils bzip2 hyperfine iproute2 nftables curl docker.io git python3 time strace linux-libc-dev gcc libc6-dev uidmap passwd procps slirp4netns fuse-overlayfs qemu-user-static"
missing=""
for p in $pkgs; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
update=""
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  dpkg --add-architecture arm64
  update=yes
fi
if [ -n "$missing" ] || [ -n "$update" ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # shellcheck disable=SC2086
  apt-get install -y -qq $missing >/dev/null
fi
"$(dirname "$0")/binfmt.sh"
