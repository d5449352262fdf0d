"""`telehook store copy FROM TO` end to end: a SQLite store with every kind of row (templates,
preferences, routes, delivery records, outbox, sealed DLQ entries) into a real PostgreSQL and
back, compared row by row (ids, times, order); the DLQ entry opens with dlq.key on the target;
a non-empty target refused; a failure mid-copy leaves the target unchanged; never a password.

SQLite to SQLite runs everywhere; the PostgreSQL tests need TH_TEST_PG_URL
(scripts/with-postgres.sh), and fail without it when TH_TEST_REQUIRE_PG is set."""
import json
import os
import shutil
import sqlite3
import subprocess
import urllib.parse
import uuid

import pytest

from cluster import drop_database
from conftest import BIN, SLOW, okta_request
from fakes import FakeWebhook

KEY = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
BASE = os.environ.get("TH_TEST_PG_URL")
PSQL = shutil.which("psql") or os.path.join(os.environ.get("TH_TEST_PG_BIN", ""), "psql")

# Every column of every table, in an order both backends share; history tables in insertion
# order (SQLite's rowid, PostgreSQL's seq), the catalog by its key.
TABLES = {
    "templates": ("language, channel, body, voice_id, updated_ms", "language, channel"),
    "prefs": ("user_key, language, channel, updated_ms", "user_key"),
    "routes": ("channel, country, attempts, updated_ms", "channel, country"),
    "outbox": ("id, created_ms, request_id, recipient, channel, language, body, voice_id", None),
    "deliveries": ("request_id, event_id, created_ms, request_type, phone_masked, country, "
                   "channel, language, source, provider, outcome, transaction_id, error, "
                   "latency_us, attempts, user_id, login_hash, phone_hash, locale, preference",
                   None),
    "dlq": ("id, created_ms, request_id, event_id, phone_masked, country, channel, language, "
            "outcome, errors, attempts, otp_expires_ms, key_id, {payload}", None),
}


def need_pg():
    if not BASE:
        if os.environ.get("TH_TEST_REQUIRE_PG"):
            raise RuntimeError("TH_TEST_PG_URL is not set: run under scripts/with-postgres.sh")
        pytest.skip("no PostgreSQL (TH_TEST_PG_URL unset)")


def psql(url, sql):
    r = subprocess.run([PSQL, "-X", "-q", "-tA", "-F", "\t", "-v", "ON_ERROR_STOP=1", url,
                        "-c", sql], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return [line.split("\t") for line in r.stdout.splitlines() if line]


@pytest.fixture
def pg_url():
    """A database of the test's own (dropped afterwards): the store URL that uses it."""
    need_pg()
    name = "th_copy_" + uuid.uuid4().hex[:10]
    psql(BASE, f"CREATE DATABASE {name}")
    u = urllib.parse.urlsplit(BASE)
    yield urllib.parse.urlunsplit((u.scheme, u.netloc, "/" + name, u.query, u.fragment))
    drop_database(BASE, name)


def sqlite_rows(path, table):
    cols, key = TABLES[table]
    cols = cols.format(payload="lower(hex(payload))")
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = con.execute(f"SELECT {cols} FROM {table} ORDER BY {key or 'rowid'}").fetchall()
    finally:
        con.close()
    return [["" if v is None else str(v) for v in r] for r in rows]


def pg_rows(url, table):
    cols, key = TABLES[table]
    ncols = len(cols.split(","))
    cols = cols.format(payload="encode(payload, 'hex')")
    order = " COLLATE \"C\", ".join(key.split(", ")) + " COLLATE \"C\"" if key else "seq"
    rows = psql(url, f"SELECT {cols} FROM {table} ORDER BY {order}")
    return [r + [""] * (ncols - len(r)) for r in rows]  # psql drops trailing empty fields


def counts(rows_of, where):
    return {t: len(rows_of(where, t)) for t in TABLES}


@pytest.fixture
def webhook():
    with FakeWebhook() as f:
        yield f
        assert not f.errors, f.errors


@pytest.fixture
def source(make_server, webhook):
    """A SQLite store holding rows of every table, its node stopped (as the docs say)."""
    s = make_server(f"""
        provider.name = webhook
        webhook.url = {webhook.url}/send
        webhook.secret = {webhook.secret}
        dlq.key = {KEY}
        guard.secret = copy-test-secret""")
    s.cli("templates", "set", "fr", "sms", "Votre code : {{otp}}")
    s.cli("templates", "set", "en", "voice", "<speak>Code {{otp_spaced}}</speak>", "Joanna")
    s.cli("prefs", "set", "Ana.Silva@example.com", "pt", "voice")
    s.cli("prefs", "set", "00u1abcdEFGH", "fr")
    s.cli("routes", "set", "sms", "US", "webhook")
    for i in range(3):
        s.post(okta_request(otp=f"10{i}234"))
    webhook.default = "500"
    for i in range(2):
        s.post(okta_request(otp=f"99{i}876"))
    s.wait_rows("SELECT count(*) FROM deliveries", 5)
    assert s.stop() == 0
    con = sqlite3.connect(s.db)
    with con:
        # outbox rows (the development provider's), two of them in one millisecond: their order
        # must survive the copy; the same for two delivery records
        for i in range(3):
            con.execute("INSERT INTO outbox VALUES (?, ?, ?, ?, 'sms', 'en', ?, '')",
                        (f"ob-{i}", 1764900000000 + (i // 2), f"req-ob{i}", "+12015550123",
                         f"code {i}"))
        for rid in ("req-same-b", "req-same-a"):
            con.execute("INSERT INTO deliveries (request_id, event_id, created_ms, request_type, "
                        "phone_masked, country, channel, language, source, provider, outcome, "
                        "transaction_id, error, latency_us, attempts, user_id, login_hash, "
                        "phone_hash, locale, preference) VALUES (?, '', 1764900000123, '', "
                        "'+1201*****23', 'US', 'sms', 'en', 'template', 'webhook', "
                        "'SUCCESSFUL', 'tx', '', 1234, 1, '', 'aa', 'bb', 'en-us', '')", (rid,))
    con.close()
    n = counts(sqlite_rows, s.db)
    assert n == {"templates": 2, "prefs": 2, "routes": 1, "outbox": 3, "deliveries": 7,
                 "dlq": 2}, n
    return s


def copy(s, *args, check=True):
    r = subprocess.run([BIN, "store", "copy", *args], env=s.env, capture_output=True, text=True,
                       timeout=60 * SLOW)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def assert_same(a, rows_a, b, rows_b):
    """Every row of every table equal, column by column, in the same order."""
    for t in TABLES:
        ra, rb = rows_a(a, t), rows_b(b, t)
        assert len(ra) == len(rb), t
        names = [c.strip() for c in TABLES[t][0].split(",")]
        for i, (x, y) in enumerate(zip(ra, rb)):
            assert len(x) == len(y) == len(names), (t, i, len(x), len(y))
            bad = [n for n, u, v in zip(names, x, y) if u != v]
            assert not bad, f"{t} row {i}: {bad}: {[(u, v) for u, v in zip(x, y) if u != v]}"


def test_sqlite_to_sqlite_with_dry_run_first(source, tmp_path):
    dst = str(tmp_path / "copy.db")
    r = copy(source, "--dry-run", source.db, dst)
    assert "dry run: 17 rows to copy" in r.stdout
    assert counts(sqlite_rows, dst) == {t: 0 for t in TABLES}  # migrated, nothing copied
    r = copy(source, "--json", source.db, "sqlite:" + dst)
    doc = json.loads(r.stdout)
    assert doc["rows"] == {"templates": 2, "prefs": 2, "routes": 1, "outbox": 3,
                           "deliveries": 7, "dlq": 2} and doc["total"] == 17
    assert_same(source.db, sqlite_rows, dst, sqlite_rows)
    # refused the second time: the target holds rows, and stays as it was
    r = copy(source, source.db, dst, check=False)
    assert r.returncode == 1 and "is not empty" in r.stderr and "--append" in r.stderr
    assert counts(sqlite_rows, dst)["deliveries"] == 7
    # the same store on both sides is refused
    r = copy(source, source.db, "sqlite:" + source.db, check=False)
    assert r.returncode == 1 and "the same store" in r.stderr


def test_sqlite_to_postgres_and_back(source, pg_url, tmp_path, webhook):
    pw = urllib.parse.urlsplit(pg_url).password
    # the target through a configuration file: its password never on the command line
    conf = tmp_path / "pg.conf"
    conf.write_text(f"[store]\nurl = {pg_url}\n[dlq]\nkey = {KEY}\n")
    r = copy(source, source.db, f"config:{conf}")
    assert "copied 17 rows in one transaction" in r.stdout
    assert "postgresql://" in r.stdout and pw not in r.stdout + r.stderr
    assert_same(source.db, sqlite_rows, pg_url, pg_rows)

    # the DLQ entry opens with dlq.key on the target, and replays from it
    dlq_id = sqlite_rows(source.db, "dlq")[0][0]  # the first failed request's (code 990876)
    on_pg = {"TELEHOOK_STORE_URL": pg_url}
    shown = json.loads(source.cli("dlq", "show", dlq_id, "--json", env=on_pg).stdout)
    assert shown["id"] == dlq_id and "990876" in shown["message"]["body"]
    # the order of rows of one millisecond is the source's
    listed = json.loads(source.cli("deliveries", "list", "--json", env=on_pg).stdout)
    ids = [d["request_id"] for d in listed]
    assert ids.index("req-same-a") < ids.index("req-same-b")

    # refused: the target is not empty; nothing changes; the password is not printed
    before = counts(pg_rows, pg_url)
    r = copy(source, source.db, pg_url, check=False)
    assert r.returncode == 1 and "is not empty" in r.stderr
    assert pw not in r.stdout + r.stderr
    assert counts(pg_rows, pg_url) == before

    # and back: PostgreSQL to a new SQLite file, equal to the original row for row
    back = str(tmp_path / "back.db")
    r = copy(source, pg_url, back)
    assert "copied 17 rows" in r.stdout and pw not in r.stdout + r.stderr
    assert_same(source.db, sqlite_rows, back, sqlite_rows)

    # the copied entry replays from the target, which then holds one entry fewer
    webhook.default = "ok"
    r = source.cli("dlq", "replay", dlq_id, env=on_pg)
    assert "delivered by webhook" in r.stdout and "990876" in webhook.last()["json"]["body"]
    assert [row[0] for row in pg_rows(pg_url, "dlq")] == [sqlite_rows(source.db, "dlq")[1][0]]


def test_failure_mid_copy_leaves_the_target_unchanged(source, pg_url):
    # the target holds one DLQ entry with the id of one of the source's: --append copies the
    # catalog, the outbox and the delivery records, then fails on the DLQ — and rolls back
    dlq_id = sqlite_rows(source.db, "dlq")[1][0]
    copy(source, "--dry-run", source.db, pg_url)  # migrates the target
    psql(pg_url, "INSERT INTO dlq (id, created_ms, request_id, event_id, phone_masked, country, "
                 "channel, language, outcome, errors, attempts, otp_expires_ms, key_id) VALUES "
                 f"('{dlq_id}', 1, 'r', '', '', '', 'sms', 'en', 'FAILED', '', 1, 0, '')")
    r = copy(source, "--append", source.db, pg_url, check=False)
    assert r.returncode == 1, r.stdout
    assert "dlq: row" in r.stderr and "the target is left unchanged" in r.stderr
    assert counts(pg_rows, pg_url) == {"templates": 0, "prefs": 0, "routes": 0, "outbox": 0,
                                       "deliveries": 0, "dlq": 1}
    assert urllib.parse.urlsplit(pg_url).password not in r.stdout + r.stderr


def test_unreachable_target_named_without_its_password(source, pg_url, tmp_path):
    pw = urllib.parse.urlsplit(pg_url).password
    wrong = pg_url.replace(f":{pw}@", ":wrong-secret-pw@")
    r = copy(source, source.db, wrong, check=False)
    assert r.returncode == 1 and r.stderr.startswith("telehook: store copy: TO: ")
    assert "wrong-secret-pw" not in r.stdout + r.stderr and pw not in r.stdout + r.stderr
    r = copy(source, f"config:{tmp_path}/missing.conf", pg_url, check=False)
    assert r.returncode == 2 and "FROM" in r.stderr
