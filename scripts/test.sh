#!/bin/sh
# Runs every test on a fresh Debian machine: installs the packages, builds, tests.
set -eu
cd "$(dirname "$0")/.."
./scripts/deps.sh
cargo build --release --locked
cargo test --workspace --release --locked
