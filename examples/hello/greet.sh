#!/bin/sh
# Greets its arguments as the unprivileged user the image runs as.
echo "$GREETING, $*! (uid $(id -u) in $(pwd))"
