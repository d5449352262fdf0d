#!/bin/sh
# Heap allocations per Okta request, telehook's own and third-party (see bench/allocs.py).
# Usage: bench/allocs.sh [path/to/telehook]   (default build/telehook; ALLOCS_N=requests)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
bin=${1:-$here/../build/telehook}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cc -O2 -shared -fPIC -o "$tmp/allocs_shim.so" "$here/allocs_shim.c" -ldl
TELEHOOK_BIN=$(realpath "$bin") /usr/bin/python3 "$here/allocs.py" "$tmp/allocs_shim.so"
