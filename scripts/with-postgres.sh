#!/usr/bin/env bash
# Runs CMD with a throw-away PostgreSQL: a cluster in a temporary directory, listening on a Unix
# socket in that directory and on 127.0.0.1 at a free port, with a database "telehook" owned by a
# role "telehook" (password auth over TCP, CREATEDB for the tests' own databases). CMD gets
#   TH_TEST_PG_URL   postgresql://telehook:PASSWORD@127.0.0.1:PORT/telehook
#   TH_TEST_PG_BIN   the server's bin directory
# The cluster is stopped (immediate) and the directory removed whatever CMD does; the status is
# CMD's. PostgreSQL refuses to run as root: as root, the server runs as `nobody`.
# Usage: scripts/with-postgres.sh CMD [ARGS...]      (PGBIN=... for another server version)
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 CMD [ARGS...]" >&2; exit 2; }
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
[ -x "$PGBIN/initdb" ] || { echo "with-postgres: no $PGBIN/initdb (install postgresql-15)" >&2; exit 2; }

dir=$(mktemp -d "${TMPDIR:-/tmp}/telehook-pg.XXXXXX")
as=()
if [ "$(id -u)" -eq 0 ]; then
  chown nobody: "$dir"
  as=(runuser -u nobody --)
fi
cleanup() {
  if [ -f "$dir/data/postmaster.pid" ]; then
    "${as[@]}" "$PGBIN/pg_ctl" -D "$dir/data" stop -m immediate >/dev/null 2>&1 || true
  fi
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

su_pw=$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')
pw=$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')
(umask 077; echo "$su_pw" >"$dir/su-pw")
[ ${#as[@]} -eq 0 ] || chown nobody: "$dir/su-pw"

# Speed over durability: the cluster lives for one test run.
"${as[@]}" "$PGBIN/initdb" -D "$dir/data" -U postgres -E UTF8 --no-locale --no-sync \
  --auth-local=trust --auth-host=scram-sha-256 --pwfile="$dir/su-pw" >"$dir/initdb.log" 2>&1 \
  || { cat "$dir/initdb.log" >&2; exit 1; }
# A port the kernel just handed out; another process may take it before the server binds it,
# so a failed start is tried again on another (3 tries, each bounded by pg_ctl -t 30).
for try in 1 2 3; do
  port=$(/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  if "${as[@]}" "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
    -o "-k $dir -h 127.0.0.1 -p $port -c fsync=off -c full_page_writes=off -c synchronous_commit=off -c max_connections=200" \
    start >/dev/null; then
    break
  fi
  [ "$try" -lt 3 ] || { cat "$dir/server.log" >&2; exit 1; }
done
"${as[@]}" "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$dir" -p "$port" -U postgres -d postgres \
  -v pw="$pw" <<'SQL' >/dev/null
CREATE ROLE telehook LOGIN CREATEDB PASSWORD :'pw';
CREATE DATABASE telehook OWNER telehook;
SQL

export TH_TEST_PG_URL="postgresql://telehook:$pw@127.0.0.1:$port/telehook"
export TH_TEST_PG_BIN=$PGBIN
set +e
"$@"
status=$?
set -e
exit $status
