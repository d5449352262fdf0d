#!/usr/bin/env bash
# The Debian package, end to end (make package-check; run by .ci/run): build it with
# dpkg-buildpackage from a clean copy of the tree, check it with lintian, rate the systemd unit
# (systemd-analyze security: at most 2.0; verify clean once installed), install it with apt into
# a minimal Debian 12 (debootstrap minbase, cached in /var/tmp), start `telehook serve` there as
# the packaged user with the packaged configuration, and answer Okta's sample request.
# systemd itself does not run in the chroot (no PID 1): the unit's start-up is not exercised.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /var/tmp/telehook-pkg.XXXXXX)
chroot_dir=$work/root
mounted=()
cleanup() {
  for m in "${mounted[@]:-}"; do [ -n "$m" ] && umount -l "$m" 2>/dev/null || true; done
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT
say() { printf 'package-test: %s\n' "$*"; }

need=(dpkg-dev debhelper lintian fakeroot debootstrap systemd)
missing=()
for p in "${need[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# 1. Build from the committed tree (git archive: nothing a developer left lying around).
mkdir -p "$work/src"
git -C "$root" archive --format=tar --prefix=telehook/ HEAD | tar -C "$work/src" -xf -
(cd "$work/src/telehook" && dpkg-buildpackage -us -uc -b >"$work/build.log" 2>&1) \
  || { tail -40 "$work/build.log"; exit 1; }
deb=$(ls "$work"/src/telehook_*_*.deb)
say "built $(basename "$deb")"

# 2. lintian: no error or warning (each remaining tag would be explained in debian/*.lintian-overrides).
tags=$(lintian --fail-on error,warning "$deb" 2>&1 | grep -v 'running with root privileges' || true)
if lintian --fail-on error,warning "$deb" >/dev/null 2>&1; then say "lintian: clean${tags:+ (info: $tags)}"; else echo "$tags"; exit 1; fi

# 3. The unit's exposure as systemd rates it, offline.
score=$(systemd-analyze security --offline=yes "$root/debian/telehook.service" 2>&1 | sed -n 's/.*Overall exposure level for telehook.service: \([0-9.]*\).*/\1/p')
awk -v s="$score" 'BEGIN { exit !(s != "" && s <= 2.0) }' || { say "unit exposure $score > 2.0"; exit 1; }
say "systemd-analyze security: $score"

# 4. A minimal Debian 12, the package installed by apt (its dependencies from Debian's mirror).
cache=/var/tmp/telehook-bookworm-minbase.tar
mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
if [ ! -f "$cache" ]; then
  mkdir -p "$work/boot"
  debootstrap --variant=minbase bookworm "$work/boot" ${mirror:+"$mirror"} >/dev/null
  tar -C "$work/boot" -cf "$cache.tmp" . && mv "$cache.tmp" "$cache"
  rm -rf --one-file-system "$work/boot"
fi
mkdir -p "$chroot_dir" && tar -C "$chroot_dir" -xf "$cache"
cp /etc/apt/sources.list.d/debian.sources "$chroot_dir/etc/apt/sources.list.d/" 2>/dev/null && rm -f "$chroot_dir/etc/apt/sources.list"
cp /etc/resolv.conf "$chroot_dir/etc/resolv.conf"
for m in proc sys dev dev/pts; do mount --bind "/$m" "$chroot_dir/$m" && mounted=("$chroot_dir/$m" "${mounted[@]}"); done
cp "$deb" "$chroot_dir/tmp/"
cp "$root/docs/examples/okta-sms-request.json" "$chroot_dir/tmp/sample.json"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
chroot "$chroot_dir" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root DEBIAN_FRONTEND=noninteractive bash -euo pipefail -c "
  echo 'APT::Sandbox::User \"root\";' > /etc/apt/apt.conf.d/99sandbox
  apt-get update -qq >/dev/null
  apt-get install -y -qq /tmp/$(basename "$deb") systemd man-db procps >/dev/null
  id telehook
  stat -c '%U:%G %a %n' /etc/telehook /etc/telehook/secret /var/lib/telehook
  [ \"\$(stat -c %a /etc/telehook/secret)\" = 600 ]
  out=\$(systemd-analyze verify /lib/systemd/system/telehook.service 2>&1) || { echo \"\$out\"; exit 1; }
  [ -z \"\$out\" ] || { echo \"systemd-analyze verify: \$out\"; exit 1; }
  echo 'systemd-analyze verify: clean'
  man -w telehook.8 telehook.conf.5
  cd /var/lib/telehook
  runuser -u telehook -- telehook -c /etc/telehook/telehook.conf -t >/dev/null
  TELEHOOK_SERVER_LISTEN=127.0.0.1:$port setsid runuser -u telehook -- telehook -c /etc/telehook/telehook.conf serve >/tmp/serve.log 2>&1 &
  pid=\$!
  trap 'kill -KILL -- -\$pid 2>/dev/null || true' EXIT
  for i in \$(seq 100); do
    (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break || sleep 0.1
  done
  exec 3<>/dev/tcp/127.0.0.1/$port
  secret=\$(cat /etc/telehook/secret)
  len=\$(wc -c < /tmp/sample.json)
  { printf 'POST /v1/okta/telephony HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nx-telephony-key: %s\r\nContent-Length: %s\r\n\r\n' \"\$secret\" \"\$len\"; cat /tmp/sample.json; } >&3
  answer=\$(cat <&3)
  kill -TERM -- -\$pid
  for i in \$(seq 100); do kill -0 -- -\$pid 2>/dev/null || break; sleep 0.1; done
  ! kill -0 -- -\$pid 2>/dev/null || { echo 'telehook did not stop on SIGTERM'; exit 1; }
  echo \"\$answer\" | grep -q SUCCESSFUL || { echo \"\$answer\"; cat /tmp/serve.log; exit 1; }
  ls -l /var/lib/telehook
  apt-get purge -y -qq telehook >/dev/null
  [ ! -e /etc/telehook/secret ] && [ ! -e /var/lib/telehook ]
" | sed 's/^/package-test:   /'
say "installed in a fresh Debian 12, served Okta's sample as user telehook, purged cleanly"
echo "package-check: 6 passed, 0 failed"  # build, lintian, unit rating, install + verify, serve, purge
