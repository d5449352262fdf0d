"""A node whose PostgreSQL goes away: /readyz answers 503 naming the store (a load balancer
takes the node out of rotation), a failed delivery's DLQ entry is kept in the local spool
(sealed) and its request answered; the database back, /readyz is 200 again and the entry is in
the database, once.

The test owns its cluster (it stops and starts it): initdb + pg_ctl in a temporary directory as
scripts/with-postgres.sh does (as `nobody` when run as root), on a Unix socket there and a free
loopback port, trust authentication (loopback only, for the test's life). Needs PostgreSQL's
binaries (TH_TEST_PG_BIN, or Debian's postgresql-15); skipped without them unless
TH_TEST_REQUIRE_PG is set."""
import json
import os
import time

import pytest

from cluster import PGBIN, PgCluster, wait_for
from conftest import SLOW, okta_request
from fakes import FakeWebhook

KEY = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
if not PgCluster.available():
    if os.environ.get("TH_TEST_REQUIRE_PG"):
        raise RuntimeError(f"no {PGBIN}/initdb (install postgresql-15)")
    pytest.skip("no PostgreSQL binaries", allow_module_level=True)


@pytest.fixture
def cluster():
    c = PgCluster()
    yield c
    c.remove()


@pytest.fixture
def webhook():
    with FakeWebhook() as f:
        yield f


def readyz(s):
    status, _, raw = s.request("GET", "/readyz")
    return status, json.loads(raw)


def metric(s, name):
    _, _, raw = s.request("GET", "/metrics")
    for line in raw.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def test_database_away_then_back(make_server, cluster, webhook, tmp_path):
    spool = tmp_path / "node" / "telehook.spool"
    s = make_server(f"""
        store.url = {cluster.url}
        store.spool = {spool}
        provider.name = webhook
        webhook.url = {webhook.url}/send
        webhook.secret = {webhook.secret}
        dlq.key = {KEY}""")
    assert readyz(s) == (200, {"status": "ready", "ready": True})
    assert metric(s, "telehook_store_up") == 1

    cluster.stop()
    # the idle writer's ping notices within a few seconds: out of rotation, the store named
    t0 = time.monotonic()
    wait_for(lambda: readyz(s)[0] == 503, "/readyz stayed 200 with the database stopped")
    assert time.monotonic() - t0 < 5 * SLOW
    assert readyz(s) == (503, {"status": "unavailable", "ready": False, "missing": ["store"]})
    assert metric(s, "telehook_store_up") == 0

    webhook.default = "500"
    t0 = time.monotonic()
    status, headers, body = s.post(okta_request(otp="615243"))
    assert status == 200 and "commands" not in body  # answered: the entry counts as committed
    assert time.monotonic() - t0 < 3 * SLOW
    wait_for(lambda: metric(s, "telehook_store_spooled") == 2, "DLQ entry + record not spooled")
    raw = spool.read_bytes() + b"".join(
        p.read_bytes() for p in spool.parent.glob(spool.name + "-*"))
    assert b"615243" not in raw  # sealed: never the code in clear
    assert oct(spool.stat().st_mode & 0o777) == "0o600"

    cluster.start()
    wait_for(lambda: readyz(s)[0] == 200, "/readyz did not come back with the database", 15)
    wait_for(lambda: metric(s, "telehook_store_spooled") == 0, "the spool was not flushed")
    assert metric(s, "telehook_store_spool_flushed_total") == 2
    assert metric(s, "telehook_store_spool_dropped_total") == 0
    (dlq_id,) = cluster.query("SELECT id FROM dlq")
    assert cluster.query("SELECT outcome FROM deliveries") == ["FAILED"]
    listed = s.cli("dlq", "list").stdout
    assert dlq_id in listed and "615243" not in listed
    assert "615243" in s.cli("dlq", "show", dlq_id).stdout  # the sealed payload intact
    assert s.stop() == 0
