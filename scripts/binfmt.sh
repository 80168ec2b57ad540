#!/bin/sh
# Registers QEMU user emulation for foreign platforms (arm64) in binfmt_misc, with the
# fix-binary flag Debian's qemu-user-static files ask for (the interpreter is opened now, so
# containers, which cannot see it, run foreign binaries too). Idempotent; run as root after
# apt-get install qemu-user-static (systemd-binfmt does this at boot on a booted system).
set -eu
dir=/proc/sys/fs/binfmt_misc
[ -e "$dir/register" ] || mount -t binfmt_misc binfmt_misc "$dir"
for arch in aarch64; do
  conf=/usr/lib/binfmt.d/qemu-$arch.conf
  [ -f "$conf" ] || { echo "binfmt.sh: $conf missing (apt-get install qemu-user-static)" >&2; exit 1; }
  [ -e "$dir/qemu-$arch" ] || cat "$conf" > "$dir/register"
done
