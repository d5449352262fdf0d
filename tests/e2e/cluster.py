"""Helpers shared by the several-node end-to-end tests (test_multinode.py, test_ha.py,
test_store_away.py): psql, a PostgreSQL cluster a test owns (to stop and start it), HAProxy in
front of the nodes, and requests through it. Every process is started and stopped by pid."""
import http.client
import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.parse

from conftest import HOOK, SLOW, free_port, okta_request

PSQL = shutil.which("psql") or os.path.join(os.environ.get("TH_TEST_PG_BIN", ""), "psql")
PGBIN = os.environ.get("TH_TEST_PG_BIN") or "/usr/lib/postgresql/15/bin"
HAPROXY = shutil.which("haproxy") or ("/usr/sbin/haproxy" if os.path.exists("/usr/sbin/haproxy")
                                      else None)
# HAProxy's health check: every 200 ms, out after 2 failures, back after 2 successes.
CHECK_INTER_MS = 200


def psql(url, sql):
    r = subprocess.run([PSQL, "-X", "-q", "-tA", "-F", "\t", "-v", "ON_ERROR_STOP=1", url,
                        "-c", sql], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return [line.split("\t") for line in r.stdout.splitlines() if line]


def drop_database(base, name):
    """DROP DATABASE name WITH (FORCE): it ends the sessions still in it, but not one of a
    superuser's (an autovacuum worker that has just come in), which the test role may not signal
    ("must be a member of ... pg_signal_backend"): then asked again shortly."""
    for attempt in range(50):
        try:
            psql(base, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            return
        except AssertionError as e:
            if "pg_signal_backend" not in str(e) or attempt == 49:
                raise
            time.sleep(0.1)


def with_db(url, db):
    u = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((u.scheme, u.netloc, "/" + db, u.query, u.fragment))


def wait_for(fn, what, limit=10):
    deadline = time.monotonic() + limit * SLOW
    while True:
        v = fn()
        if v:
            return v
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


class PgCluster:
    """A throw-away PostgreSQL the test may stop and start again (same port, same data):
    initdb + pg_ctl in a temporary directory as scripts/with-postgres.sh does (as `nobody` when
    run as root: PostgreSQL refuses root), on a Unix socket there and a free loopback port,
    trust authentication (loopback only, for the test's life)."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="telehook-pg-own.")
        self.as_ = []
        if os.getuid() == 0:
            nobody = pwd.getpwnam("nobody")
            os.chown(self.dir, nobody.pw_uid, nobody.pw_gid)
            self.as_ = ["runuser", "-u", "nobody", "--"]
        self.data = os.path.join(self.dir, "data")
        self.run("initdb", "-D", self.data, "-U", "postgres", "-E", "UTF8", "--no-locale",
                 "--no-sync", "--auth=trust")
        self.port = free_port()
        self.start()
        self.run("psql", "-X", "-q", "-h", self.dir, "-p", str(self.port), "-U", "postgres",
                 "-d", "postgres", "-c", "CREATE DATABASE telehook")
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/telehook"

    @staticmethod
    def available():
        return os.access(os.path.join(PGBIN, "initdb"), os.X_OK)

    def run(self, tool, *args):
        r = subprocess.run([*self.as_, os.path.join(PGBIN, tool), *args], capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0, f"{tool}: {r.stdout}{r.stderr}"
        return r.stdout

    def start(self):
        self.run("pg_ctl", "-D", self.data, "-l", os.path.join(self.dir, "server.log"), "-w",
                 "-t", "30", "-o", f"-k {self.dir} -h 127.0.0.1 -p {self.port} -c fsync=off",
                 "start")

    def stop(self, mode="fast"):
        self.run("pg_ctl", "-D", self.data, "-w", "-t", "30", "stop", "-m", mode)

    def query(self, sql):
        out = self.run("psql", "-X", "-q", "-tA", "-h", self.dir, "-p", str(self.port), "-U",
                       "postgres", "-d", "telehook", "-c", sql)
        return [line for line in out.splitlines() if line]

    def remove(self):
        if os.path.exists(os.path.join(self.data, "postmaster.pid")):
            subprocess.run([*self.as_, os.path.join(PGBIN, "pg_ctl"), "-D", self.data, "stop",
                            "-m", "immediate"], capture_output=True, timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)


class Balancer:
    """HAProxy in the foreground (-db), its configuration written here; stopped by pid.

    fail_open: every node also as a backup server without a health check, all used (`option
    allbackups`) when every node fails its check — as when the one database is away and each
    node's /readyz says so: the nodes still answer (store.unavailable), so the balancer keeps
    sending them requests rather than answering 503 itself (an AWS ALB fails open by itself)."""

    def __init__(self, tmp, ports, fail_open=False):
        self.port = free_port()
        self.conf = tmp / "haproxy.cfg"
        servers = "\n".join(f"    server n{i + 1} 127.0.0.1:{p} check"
                            for i, p in enumerate(ports))
        if fail_open:
            servers += "\n    option allbackups\n" + "\n".join(
                f"    server n{i + 1}-open 127.0.0.1:{p} backup" for i, p in enumerate(ports))
        # retries + redispatch: a request whose connection to a dead node is refused goes to
        # another node (it never reached the dead one, so it is safe to send again).
        self.conf.write_text(f"""global
    maxconn 512
defaults
    mode http
    timeout connect 500ms
    timeout client 10s
    timeout server 10s
    retries 2
    option redispatch 1
frontend okta
    bind 127.0.0.1:{self.port}
    default_backend telehook
backend telehook
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    default-server inter {CHECK_INTER_MS}ms fall 2 rise 2
    http-response set-header X-Served-By %s
{servers}
""")
        self.log = open(tmp / "haproxy.log", "wb")
        self.proc = subprocess.Popen([HAPROXY, "-db", "-f", str(self.conf)],
                                     stdout=self.log, stderr=subprocess.STDOUT)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def through(lb, body, secret, timeout=5):
    """POSTs an Okta request through HAProxy on a new connection: (status, headers, JSON)."""
    c = http.client.HTTPConnection("127.0.0.1", lb.port, timeout=timeout)
    try:
        c.request("POST", HOOK, json.dumps(body),
                  {"Content-Type": "application/json", "x-telephony-key": secret,
                   "Connection": "close"})
        r = c.getresponse()
        raw = r.read()
        h = {k.lower(): v for k, v in r.getheaders()}
        if r.status != 200 and "json" not in h.get("content-type", ""):
            return r.status, h, {}  # HAProxy's own answer (a 502 when a node died mid-request)
        return r.status, h, json.loads(raw)
    finally:
        c.close()


def outcome(body):
    cmds = body.get("commands") or [{}]
    vals = cmds[0].get("value") or [{}]
    return vals[0].get("status")


def wait_balancer(lb, secret, want_nodes):
    """Until HAProxy has seen each node in want_nodes healthy and sends it requests."""
    seen = set()

    def all_seen():
        try:
            status, h, _ = through(lb, okta_request(), secret)
        except OSError:
            return False
        if status == 200:
            seen.add(h.get("x-served-by"))
        return want_nodes <= seen
    wait_for(all_seen, f"HAProxy does not reach {sorted(want_nodes)} (saw {sorted(seen)})")
