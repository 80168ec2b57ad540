#!/bin/sh
# Plants a fixed list of realistic faults, one at a time, in a scratch worktree of HEAD and
# runs the tests that should catch each; prints caught/missed (scripts/mutants.py holds the
# list). Not part of CI: run it after changing tests or the code they guard.
set -eu
cd "$(dirname "$0")/.."
exec python3 scripts/mutants.py "$@"
