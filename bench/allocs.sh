#!/bin/sh
# Heap allocations per Okta request, telehook's own and third-party (see bench/allocs.py), with
# the outbox provider and with AWS, Twilio and a webhook (fakes on 127.0.0.1).
# Usage: bench/allocs.sh [path/to/telehook]   (default build/telehook; ALLOCS_N=requests;
# ALLOCS_PROVIDER=outbox|aws|twilio|webhook, or a list; ALLOCS_SITES=PREFIX also writes PREFIX.PROVIDER.N:
# "count offset" per allocation site of telehook, for addr2line -f -e telehook)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
bin=${1:-$here/../build/telehook}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cc -O2 -shared -fPIC -o "$tmp/allocs_shim.so" "$here/allocs_shim.c" -ldl
for p in ${ALLOCS_PROVIDER:-outbox aws twilio webhook}; do
    ALLOCS_PROVIDER=$p TELEHOOK_BIN=$(realpath "$bin") /usr/bin/python3 "$here/allocs.py" \
        "$tmp/allocs_shim.so"
done
