#!/usr/bin/env python3
"""usage: gen-scale.py DIR N -- a build context of N small files (100 per directory) and a
Dockerfile that copies it all: the context-scale benchmark (bench/run.sh ctxscale)."""
import os
import sys

root, n = sys.argv[1], int(sys.argv[2])
os.makedirs(root, exist_ok=True)
per = 100
for i in range(n):
    d = os.path.join(root, "src", f"d{i // (per * per)}", f"e{(i // per) % per}")
    if i % per == 0:
        os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i}.txt"), "w") as f:
        f.write(f"file {i}\n")
with open(os.path.join(root, "Dockerfile"), "w") as f:
    f.write("FROM busybox\nCOPY . /app\nRUN true\n")
