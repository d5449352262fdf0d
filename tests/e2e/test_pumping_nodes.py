"""Conversion blocks on several nodes sharing one PostgreSQL: a block made on one node is adopted
by the other within a few seconds (it refuses the prefix without having seen a send to it), and
`guard blocks clear` on any host lifts it on both. Skipped without TH_TEST_PG_URL (as
test_postgres.py), failing when TH_TEST_REQUIRE_PG is set."""
import json
import os
import time
import uuid

import pytest

from cluster import drop_database, psql, with_db
from conftest import SLOW
from test_pumping import ENFORCE, metric, outcome

BASE = os.environ.get("TH_TEST_PG_URL")

if not BASE:
    if os.environ.get("TH_TEST_REQUIRE_PG"):
        raise RuntimeError("TH_TEST_PG_URL is not set: run under scripts/with-postgres.sh")
    pytest.skip("no PostgreSQL (TH_TEST_PG_URL unset)", allow_module_level=True)


@pytest.fixture
def pg_url():
    name = "th_pump_" + uuid.uuid4().hex[:10]
    psql(BASE, f"CREATE DATABASE {name}")
    yield with_db(BASE, name)
    drop_database(BASE, name)


def eventually(pred, what, seconds=10):
    deadline = time.monotonic() + seconds * SLOW
    while not pred():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_block_adopted_by_the_other_node_and_cleared(make_server, pg_url):
    conf = ENFORCE + f"\nstore.url = {pg_url}\n"
    a = make_server(conf)
    b = make_server(conf)
    prefix = "+44740077"
    for i in range(5):
        assert outcome(a, f"{prefix}{i:04d}") == "SUCCESSFUL"
    assert outcome(a, f"{prefix}0100") == "FAILED"
    # b never sent to the prefix: it refuses it once it has read a's block
    eventually(lambda: metric(b, "telehook_conversion_blocks", kind="prefix") == 1,
               "node b adopts node a's block")
    assert outcome(b, f"{prefix}0200") == "FAILED"
    assert metric(b, "telehook_conversion_sent_total", country="GB", provider="outbox",
                  channel="sms") is None  # b sent nothing
    rows = json.loads(b.cli("guard", "blocks", "list", "--json").stdout)
    assert [(r["prefix"], r["mode"]) for r in rows] == [(prefix + "****", "enforce")]
    assert "1 block cleared" in b.cli("guard", "blocks", "clear", rows[0]["id"]).stdout
    for s in (a, b):
        eventually(lambda s=s: outcome(s, f"{prefix}{int(time.monotonic() * 1000) % 10000:04d}")
                   == "SUCCESSFUL", "the clear reaches every node")
    assert a.stop() == 0 and b.stop() == 0
