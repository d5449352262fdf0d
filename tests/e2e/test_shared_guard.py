"""Several nodes, one PostgreSQL: the guard's dedupe, limits and budgets shared by two telehook
nodes. Most tests share the guard alone (guard.url, each node's records in its own SQLite file):
what is tested is the guard's state; the last shares the whole store (store.url, in a schema of
its own, tests/e2e/test_postgres.py's way). Both nodes send through one fake webhook, which
counts what was really sent.

Needs TH_TEST_PG_URL (scripts/with-postgres.sh provides it under `make check`); skipped
without it. The database "stopping" is a TCP proxy in front of it that refuses connections
(down) or swallows traffic (stalled): the nodes see exactly what a stopped or hung server
gives them, without stopping the shared test cluster."""
import concurrent.futures
import os
import secrets
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import uuid

import pytest

from conftest import SLOW, assert_okta_error, okta_request
from fakes import FakeWebhook

PG = os.environ.get("TH_TEST_PG_URL")
pytestmark = pytest.mark.skipif(not PG, reason="TH_TEST_PG_URL not set (scripts/with-postgres.sh)")
GB_BASE = "+4474001234"


@pytest.fixture
def webhook():
    with FakeWebhook() as f:
        yield f
        assert not f.errors, f.errors


def value(body):
    assert "error" not in body, body
    (cmd,) = body["commands"]
    (v,) = cmd["value"]
    return v


class PgProxy:
    """127.0.0.1:port → the test database. down(): connections refused and the open ones cut;
    stall(): connections accepted, nothing forwarded; up(): forwarding again, same port."""

    def __init__(self, url):
        u = urllib.parse.urlsplit(url)
        self.target = (u.hostname or "127.0.0.1", u.port or 5432)
        self.url_parts = u
        self.mode = "pass"
        self.socks = []
        self.lock = threading.Lock()
        self.lsock = None
        self.port = 0
        self._listen()

    def _listen(self):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(64)
        s.settimeout(0.05)
        self.port = s.getsockname()[1]
        self.lsock = s
        self.thread = threading.Thread(target=self._accept, args=(s,), daemon=True)
        self.thread.start()

    @property
    def url(self):
        u = self.url_parts
        user = u.netloc.rsplit("@", 1)[0] + "@" if "@" in u.netloc else ""  # user:password
        return urllib.parse.urlunsplit((u.scheme, f"{user}127.0.0.1:{self.port}", u.path,
                                        u.query, ""))

    def _accept(self, lsock):
        while self.lsock is lsock:
            try:
                c, _ = lsock.accept()
            except (socket.timeout, OSError):
                continue
            with self.lock:
                self.socks.append(c)
            if self.mode == "stall":
                continue  # held open, never answered
            try:
                up = socket.create_connection(self.target, timeout=2)
            except OSError:
                c.close()
                continue
            with self.lock:
                self.socks.append(up)
            for a, b in ((c, up), (up, c)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                while self.mode == "stall":
                    time.sleep(0.01)
                if self.mode == "down":
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _cut(self):
        with self.lock:
            socks, self.socks = self.socks, []
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def down(self):
        self.mode = "down"
        lsock, self.lsock = self.lsock, None
        lsock.close()
        self.thread.join(timeout=2)
        self._cut()

    def stall(self):
        self.mode = "stall"

    def up(self):
        if self.mode == "down":
            self._cut()
            self.mode = "pass"
            self._listen()
        else:
            self._cut()  # stalled connections are given up on; the nodes reconnect
            self.mode = "pass"

    def close(self):
        if self.lsock:
            self.down()


@pytest.fixture
def proxy():
    p = PgProxy(PG)
    yield p
    p.close()


def nodes(make_server, webhook, url, extra=""):
    """Two nodes on one guard state: the same guard.secret, the same database."""
    secret = "shared-" + secrets.token_hex(16)  # fresh keys: earlier runs' rows do not count
    conf = f"""
        provider.name = webhook
        webhook.url = {webhook.url}/send
        webhook.secret = {webhook.secret}
        guard.url = {url}
        guard.secret = {secret}
        {extra}"""
    a, b = make_server(conf), make_server(conf)
    if url == PG:
        warm(a), warm(b)
        webhook.clear()  # the warm-up's sends are not the test's
    return a, b


def warm(node):
    """A loop connects to the shared state on its first request; the first requests of a fresh
    node may then spend their guard budget connecting (and fall back). Warmed: every loop's
    connections up (2 threads x 2)."""
    deadline = time.monotonic() + 10 * SLOW
    while metric(node, "telehook_guard_db_connections") < 4:
        assert time.monotonic() < deadline, "guard connections not up"
        node.post(okta_request(phone="+12065550199"))
        time.sleep(0.02)


def metric(node, name):
    status, _, text = node.request("GET", "/metrics")
    assert status == 200
    (line,) = [l for l in text.decode().splitlines() if l.startswith(name + " ")]
    return float(line.split()[-1])


def post_all(pairs):
    """Posts every (node, request) at once; returns the answers in order."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(pairs)) as pool:
        futs = [pool.submit(n.post, r) for n, r in pairs]
        return [f.result() for f in futs]


def test_same_request_at_two_nodes_sent_once(make_server, webhook):
    a, b = nodes(make_server, webhook, PG)
    webhook.default = ("delay", 0.4)  # the first is still in flight when the second arrives
    req = okta_request()
    answers = post_all([(a, req), (b, req)])
    txs = [value(body)["transactionId"] for status, _, body in answers]
    assert all(status == 200 for status, _, _ in answers)
    assert txs[0] == txs[1]
    assert webhook.count() == 1
    # later, the same event again at either node: the stored answer, nothing sent
    assert value(b.post(req)[2])["transactionId"] == txs[0]
    assert value(a.post(req)[2])["transactionId"] == txs[0]
    assert webhook.count() == 1
    for s in (a, b):
        assert req["data"]["messageProfile"]["otpCode"] not in s.log_text()


def test_phone_limit_exact_across_nodes(make_server, webhook):
    n = 3
    a, b = nodes(make_server, webhook, PG, f"guard.limit_phone = {n}/1h")
    phone = GB_BASE + f"{secrets.randbelow(100):02d}"
    before = metric(a, "telehook_guard_db_decisions_total") + \
        metric(b, "telehook_guard_db_decisions_total")
    reqs = [((a, b)[i % 2], okta_request(phone=phone)) for i in range(n + 5)]
    answers = post_all(reqs)
    statuses = [value(body)["status"] for _, _, body in answers]
    assert statuses.count("SUCCESSFUL") == n, statuses
    assert statuses.count("FAILED") == 5
    assert all(value(body)["transactionMetadata"] == "blocked=phone_rate"
               for _, _, body in answers if value(body)["status"] == "FAILED")
    assert webhook.count() == n
    # the hot path's round trips: one guard_decide per request, on whichever node took it
    assert metric(a, "telehook_guard_db_decisions_total") + \
        metric(b, "telehook_guard_db_decisions_total") - before == n + 5
    assert metric(a, "telehook_guard_db_fallbacks_total") == 0


def test_budget_exact_across_nodes(make_server, webhook):
    n = 4
    a, b = nodes(make_server, webhook, PG, f"guard.budgets = 44:{n}")
    reqs = [((a, b)[i % 2], okta_request(phone=GB_BASE + f"{i:02d}")) for i in range(n + 8)]
    answers = post_all(reqs)
    statuses = [value(body)["status"] for _, _, body in answers]
    assert statuses.count("SUCCESSFUL") == n, statuses
    assert webhook.count() == n


def test_fresh_node_ready_means_decided_by_the_database(make_server, webhook):
    """Eager pools: every loop opens its connections to the shared state when it starts, and
    /readyz is 200 only once each loop has one up. So a fresh node's first request after
    /readyz is 200 is decided by the database, never left to the node's memory."""
    conf = f"""
        provider.name = webhook
        webhook.url = {webhook.url}/send
        webhook.secret = {webhook.secret}
        guard.url = {PG}
        guard.secret = shared-{secrets.token_hex(16)}
        store.unavailable = open"""
    s = make_server(conf)
    deadline = time.monotonic() + 10 * SLOW
    while s.request("GET", "/readyz")[0] != 200:
        assert time.monotonic() < deadline, "not ready"
        time.sleep(0.01)
    # no request yet: the connections are the loops' own (2 threads, one at least each)
    assert metric(s, "telehook_guard_db_connections") >= 2
    status, _, body = s.post(okta_request())
    assert status == 200 and value(body)["status"] == "SUCCESSFUL"
    assert metric(s, "telehook_guard_db_decisions_total") == 1
    assert metric(s, "telehook_guard_db_fallbacks_total") == 0
    assert webhook.count() == 1


def timed_post(node, req):
    t0 = time.monotonic()
    status, _, body = node.post(req)
    return status, body, time.monotonic() - t0


def wait_shared_again(a, b, timeout):
    """After the database is back: the same event at a then b is sent once (only the shared
    state can tell b, the nodes' memories being apart). Returns when it is, or fails."""
    deadline = time.monotonic() + timeout
    while True:
        req = okta_request()
        ta = a.post(req)[2]
        tb = b.post(req)[2]
        if "error" not in ta and "error" not in tb and \
                value(ta)["transactionId"] == value(tb)["transactionId"]:
            return time.monotonic()
        assert time.monotonic() < deadline, "shared state not back"
        time.sleep(0.2)


def test_database_down_open_answers_in_time(make_server, webhook, proxy):
    a, b = nodes(make_server, webhook, proxy.url,
                 "store.unavailable = open\nserver.deadline_ms = 2000")
    assert value(a.post(okta_request())[2])["status"] == "SUCCESSFUL"
    for mode in ("down", "stall"):
        getattr(proxy, mode)()
        for node in (a, b, a):
            status, body, took = timed_post(node, okta_request())
            assert status == 200 and value(body)["status"] == "SUCCESSFUL", (mode, body)
            assert took < 2.0 * SLOW, (mode, took)
        proxy.up()
        t_up = time.monotonic()
        back = wait_shared_again(a, b, 10 * SLOW)
        assert back - t_up < 5 * SLOW
    for s in (a, b):
        events = [l.get("event") for l in s.logs()]
        assert "guard_unavailable" in events and "guard_shared" in events
        assert metric(s, "telehook_guard_db_fallbacks_total") >= 2


def test_database_down_closed_refuses_with_okta_error(make_server, webhook, proxy):
    a, b = nodes(make_server, webhook, proxy.url,
                 "store.unavailable = closed\nserver.deadline_ms = 2000")
    assert value(a.post(okta_request())[2])["status"] == "SUCCESSFUL"
    sent = webhook.count()
    proxy.down()
    for node in (a, b):
        status, body, took = timed_post(node, okta_request())
        assert status == 200
        assert_okta_error(body, reason="abuse controls unavailable")
        assert took < 2.0 * SLOW
    assert webhook.count() == sent  # nothing sent while the shared state is away
    assert a.request("GET", "/readyz")[0] == 503  # a load balancer may take the node out
    proxy.up()
    t_up = time.monotonic()
    back = wait_shared_again(a, b, 10 * SLOW)
    assert back - t_up < 5 * SLOW
    assert a.request("GET", "/readyz")[0] == 200


def psql(url, sql):
    exe = shutil.which("psql") or os.path.join(os.environ.get("TH_TEST_PG_BIN", ""), "psql")
    r = subprocess.run([exe, "-X", "-q", "-tA", "-v", "ON_ERROR_STOP=1", url, "-c", sql],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return [line.split("|") for line in r.stdout.splitlines() if line]


@pytest.fixture
def store_url():
    """The store on PostgreSQL, in a schema of its own (dropped afterwards)."""
    schema = "g_" + uuid.uuid4().hex[:10]
    psql(PG, f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in PG else "?"
    yield f"{PG}{sep}options=-csearch_path%3D{schema}"
    psql(PG, f"DROP SCHEMA {schema} CASCADE")


def test_store_on_postgres_shares_the_guard(make_server, webhook, store_url):
    conf = f"""
        provider.name = webhook
        webhook.url = {webhook.url}/send
        webhook.secret = {webhook.secret}
        store.url = {store_url}
        guard.secret = shared-{secrets.token_hex(16)}"""
    a, b = make_server(conf), make_server(conf)
    warm(a), warm(b)
    webhook.clear()
    webhook.default = ("delay", 0.4)
    req = okta_request()
    answers = post_all([(a, req), (b, req)])
    txs = {value(body)["transactionId"] for _, _, body in answers}
    assert len(txs) == 1 and webhook.count() == 1
    # both nodes' records in the one store: the send, and the duplicate that got its answer
    deadline = time.monotonic() + 10 * SLOW
    while True:
        rows = psql(store_url, "SELECT outcome FROM deliveries WHERE event_id = '%s' "
                               "ORDER BY outcome" % req["eventId"])
        if len(rows) == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert rows == [["DUPLICATE"], ["SUCCESSFUL"]]
    # the guard's tables went to the store's schema (the URL's search_path was kept)
    assert psql(store_url, "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema() "
                           "AND tablename LIKE 'guard_%'") == [["4"]]
