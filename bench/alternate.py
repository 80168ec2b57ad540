#!/usr/bin/env python3
"""Times commands run alternately, one run of each per round, and prints each one's median
in seconds on its own line (in the order given).

Usage: alternate.py ROUNDS WARMUP [--prepare CMD] CMD...   (the commands' stdout is discarded)

A sequential benchmark (all runs of one command, then all of the next) puts any drift of the
machine between the two into their ratio; alternating single runs keeps both in the same
conditions, and the order rotates from round to round, so no command always runs right after
the same other one. Each run is one posix_spawn + waitpid, timed around those two calls only. With
--prepare, CMD runs untimed before every timed run (for example `sleep 0.2`).
"""
import os
import shlex
import statistics
import sys
import time


def spawn_wait(argv):
    # Their output is not ours: stdout carries the medians.
    quiet = [(os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)]
    pid = os.posix_spawnp(argv[0], argv, os.environ, file_actions=quiet)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"alternate.py: {shlex.join(argv)} failed")


def main():
    args = sys.argv[1:]
    rounds, warmup = int(args[0]), int(args[1])
    args = args[2:]
    prepare = None
    if args[:1] == ["--prepare"]:
        prepare, args = shlex.split(args[1]), args[2:]
    commands = [shlex.split(c) for c in args]
    times = [[] for _ in commands]
    n = len(commands)
    for r in range(warmup + rounds):
        # Each round starts one command later, so none always follows the same one.
        for i in ((r + k) % n for k in range(n)):
            argv = commands[i]
            if prepare:
                spawn_wait(prepare)
            t = time.perf_counter_ns()
            spawn_wait(argv)
            if r >= warmup:
                times[i].append((time.perf_counter_ns() - t) / 1e9)
    for t in times:
        print(f"{statistics.median(t):.5f}")


if __name__ == "__main__":
    main()
