"""The PostgreSQL store end to end: `telehook serve` on a real PostgreSQL (scripts/with-postgres.sh
starts one and sets TH_TEST_PG_URL), the CLI beside it, `store status|migrate`, and a start-up
that fails clearly (without the password) when the database refuses the credentials.

Each module gets a database of its own (CREATE DATABASE), each test a schema of its own in it
(through the URL's options=-csearch_path=...). Without TH_TEST_PG_URL the tests are skipped, or
fail when TH_TEST_REQUIRE_PG is set (make e2e / make check)."""
import json
import os
import secrets
import signal
import urllib.parse
import uuid

import pytest

from cluster import drop_database, psql, wait_for, with_db
from conftest import okta_request
from fakes import FakeWebhook

KEY = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
BASE = os.environ.get("TH_TEST_PG_URL")

if not BASE:
    if os.environ.get("TH_TEST_REQUIRE_PG"):
        raise RuntimeError("TH_TEST_PG_URL is not set: run under scripts/with-postgres.sh")
    pytest.skip("no PostgreSQL (TH_TEST_PG_URL unset)", allow_module_level=True)


@pytest.fixture(scope="module")
def pg_db():
    """A fresh database for this module, dropped afterwards."""
    name = "th_e2e_" + uuid.uuid4().hex[:10]
    psql(BASE, f"CREATE DATABASE {name}")
    yield with_db(BASE, name)
    drop_database(BASE, name)


@pytest.fixture
def pg_url(pg_db):
    """A schema of its own for the test: the store URL that uses it."""
    schema = "s_" + uuid.uuid4().hex[:10]
    psql(pg_db, f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in pg_db else "?"
    return f"{pg_db}{sep}options=-csearch_path%3D{schema}"


@pytest.fixture
def webhook():
    with FakeWebhook() as f:
        yield f
        assert not f.errors, f.errors


def password_of(url):
    return urllib.parse.urlsplit(url).password


def test_serve_on_postgres_answers_okta_and_records(make_server, pg_url):
    s = make_server(f"store.url = {pg_url}")
    status, headers, body = s.post(okta_request(otp="483920"))
    assert status == 200 and body["commands"][0]["value"][0]["status"] == "SUCCESSFUL"
    req = headers["x-request-id"]
    # the outbox provider's "handset" and the delivery record are in PostgreSQL
    rows = wait_for(lambda: psql(pg_url, "SELECT request_id, outcome FROM deliveries"),
                    "no delivery record in PostgreSQL")
    assert rows == [[req, "SUCCESSFUL"]]
    (ob,) = psql(pg_url, "SELECT request_id, body FROM outbox")
    assert ob[0] == req and "483920" in ob[1]
    assert not os.path.exists(s.db)  # nothing went to SQLite
    listed = json.loads(s.cli("deliveries", "list", "--json").stdout)
    assert [d["request_id"] for d in listed] == [req]
    assert "483920" not in s.log_text()
    assert password_of(pg_url) not in s.log_text()
    assert s.stop() == 0


def test_templates_set_then_sighup_is_used(make_server, pg_url):
    s = make_server(f"store.url = {pg_url}")
    s.cli("templates", "set", "en", "sms", "From PostgreSQL: {{otp}}")
    assert psql(pg_url, "SELECT body FROM templates WHERE language = 'en' AND channel = 'sms'") \
        == [["From PostgreSQL: {{otp}}"]]
    s.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: '"event":"reload"' in s.log_text() and "routes" in s.log_text(),
             "no reload logged")

    def used():
        otp = str(secrets.randbelow(900000) + 100000)  # a new code each time: no duplicate
        status, _, _ = s.post(okta_request(otp=otp))
        assert status == 200
        return any(r[0] == f"From PostgreSQL: {otp}"
                   for r in psql(pg_url, "SELECT body FROM outbox"))
    wait_for(used, "the template set through the CLI was not used after SIGHUP")
    assert s.stop() == 0


def test_failed_delivery_lands_in_the_dlq(make_server, pg_url, webhook):
    s = make_server(f"""
        store.url = {pg_url}
        provider.name = webhook
        webhook.url = {webhook.url}/send
        webhook.secret = {webhook.secret}
        dlq.key = {KEY}""")
    webhook.default = "500"
    status, headers, body = s.post(okta_request(otp="918273"))
    assert status == 200 and "commands" not in body
    (row,) = psql(pg_url, "SELECT id, outcome, key_id, length(payload), "
                          "position(convert_to('918273', 'UTF8') in payload) FROM dlq")
    dlq_id, outcome, key_id, plen, pos = row
    assert (outcome, key_id) == ("FAILED", "k1") and int(plen) > 16 and pos == "0"
    listed = s.cli("dlq", "list").stdout
    assert dlq_id in listed and "FAILED" in listed and "918273" not in listed
    shown = s.cli("dlq", "show", dlq_id).stdout  # the sealed payload comes back intact
    assert "918273" in shown
    assert s.stop() == 0


def test_store_status_and_migrate(make_server, pg_url):
    s = make_server(f"store.url = {pg_url}", start=False)
    pw = password_of(pg_url)
    st = json.loads(s.cli("store", "status", "--json").stdout)
    assert st["backend"] == "postgresql" and st["schema_version"] == 0
    assert st["pending"] == st["latest_version"] == 11
    assert st["rows"]["templates"] is None  # not created yet
    assert pw not in st["url"] and "postgresql://telehook@" in st["url"]
    m = s.cli("store", "migrate")
    assert "schema version 11 (11 migrations applied)" in m.stdout and pw not in m.stdout
    assert "(0 migrations applied)" in s.cli("store", "migrate").stdout
    st = json.loads(s.cli("store", "status", "--json").stdout)
    assert (st["schema_version"], st["pending"]) == (11, 0)
    assert st["rows"] == {"templates": 0, "prefs": 0, "routes": 0, "outbox": 0,
                          "deliveries": 0, "dlq": 0}
    text = s.cli("store", "status").stdout
    assert "backend         postgresql" in text and pw not in text
    # config show and check: the password masked
    shown = s.cli("config", "show").stdout
    assert pw not in shown and ":********@" in shown


def test_wrong_password_is_a_clear_start_up_error(make_server, pg_url):
    pw = password_of(pg_url)
    wrong = pg_url.replace(f":{pw}@", ":wrong-secret-pw@")
    s = make_server(f"store.url = {wrong}", start=False)
    r = s.cli("config", "check", check=False)
    assert r.returncode == 2
    assert "password authentication failed" in r.stderr
    assert "wrong-secret-pw" not in r.stdout + r.stderr
    assert s.start(expect_fail=True) != 0
    log = s.log_text()
    assert "password authentication failed" in log and "wrong-secret-pw" not in log
    assert "postgresql://telehook@127.0.0.1" in log
