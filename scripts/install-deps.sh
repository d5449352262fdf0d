#!/usr/bin/env bash
# Installs the Debian packages telehook needs to build, test and run, if any is missing.
# Used by `make run`, `make check` and .ci/run; safe to run again (does nothing when all present).
# Usage: scripts/install-deps.sh [build|check]   (check adds what the test suites need)
set -euo pipefail
mode=${1:-build}
pkgs=(build-essential pkg-config meson ninja-build
      libmicrohttpd-dev libgnutls28-dev libjansson-dev libsqlite3-dev libssl-dev libinih-dev libphonenumber-dev libprotobuf-dev libcurl4-openssl-dev libcjose-dev libsimdjson-dev libsystemd-dev libpq-dev
      sqlite3 ca-certificates curl)
if [ "$mode" = check ]; then
  pkgs+=(libcmocka-dev python3 python3-pytest python3-botocore python3-jwt python3-cryptography valgrind clang libclang-rt-14-dev clang-format git
        postgresql-15 haproxy)
fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "install-deps: installing ${missing[*]}" >&2
SUDO=
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  SUDO=sudo
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
