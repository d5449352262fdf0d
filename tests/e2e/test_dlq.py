"""The dead-letter queue end to end: what no attempt delivered is kept, sealed, committed before
Okta gets its answer, and can be shown and replayed (while the code is valid) from the CLI."""
import concurrent.futures
import json
import os
import signal
import time
from datetime import datetime, timedelta, timezone

import pytest

from conftest import SLOW, iso, okta_request
from fakes import FakeWebhook

KEY = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="


@pytest.fixture
def webhook():
    with FakeWebhook() as f:
        yield f
        assert not f.errors, f.errors


def config(webhook, extra=""):
    return f"""
        provider.name = webhook
        webhook.url = {webhook.url}/send
        webhook.secret = {webhook.secret}
        dlq.key = {KEY}
        {extra}"""


def dlq_rows(s):
    return s.db_rows("SELECT id, outcome, errors, attempts, key_id, payload FROM dlq")


def test_failed_delivery_is_dead_lettered_sealed_and_replayable(make_server, webhook):
    s = make_server(config(webhook))
    webhook.default = "500"
    status, headers, body = s.post(okta_request(otp="918273"))
    assert status == 200 and "commands" not in body
    # committed before the answer: no waiting for it
    (row,) = dlq_rows(s)
    dlq_id, outcome, errors, attempts, key_id, payload = row
    assert (outcome, attempts, key_id) == ("FAILED", 1, "k1")
    assert "webhook: HTTP 500" in errors
    assert payload and b"918273" not in payload
    with open(s.db, "rb") as f:  # nowhere in the database file either
        assert b"918273" not in f.read()
    log = [l for l in s.logs() if l.get("event") == "request"][-1]
    assert log["dlq"] == dlq_id and log["req"] == headers["x-request-id"]
    assert "918273" not in s.log_text()

    listed = s.cli("dlq", "list").stdout
    assert dlq_id in listed and "FAILED" in listed and "918273" not in listed
    shown = s.cli("dlq", "show", dlq_id).stdout
    doc = json.loads(shown[shown.index("{"):])
    assert "918273" in doc["body"] and doc["to"] == "+12015550123"
    # --json: one document each, the entry with its message inside
    (entry,) = json.loads(s.cli("dlq", "list", "--json").stdout)
    assert (entry["id"], entry["outcome"], entry["attempts"]) == (dlq_id, "FAILED", 1)
    assert entry["has_message"] is True and entry["expired"] is False
    assert "918273" not in json.dumps(entry)
    shown = json.loads(s.cli("dlq", "show", dlq_id, "--json").stdout)
    assert shown["message"] == doc and shown["id"] == dlq_id
    # without the key it does not open
    r = s.cli("dlq", "show", dlq_id, check=False, env={"TELEHOOK_DLQ_KEY": ""})
    assert r.returncode == 1 and "918273" not in r.stdout + r.stderr

    webhook.default = "ok"
    r = s.cli("dlq", "replay", dlq_id)
    assert "delivered by webhook" in r.stdout
    sent = webhook.last()
    assert sent["valid"] and "918273" in sent["json"]["body"]
    assert dlq_rows(s) == []  # a delivered entry leaves the queue


def test_replay_refused_once_the_code_expired(make_server, webhook):
    s = make_server(config(webhook))
    webhook.default = "500"
    soon = datetime.now(timezone.utc) + timedelta(seconds=1)
    s.post(okta_request(otpExpires=iso(soon)))
    (row,) = dlq_rows(s)
    time.sleep(1.2)
    webhook.default = "ok"
    r = s.cli("dlq", "replay", row[0], check=False)
    assert r.returncode == 1 and "expired" in r.stderr
    assert webhook.count(sent=True) == 0
    assert len(dlq_rows(s)) == 1


def test_deadline_is_dead_lettered_before_the_answer(make_server, webhook):
    s = make_server(config(webhook, "server.deadline_ms = 600"))
    webhook.default = "hang"
    t0 = time.monotonic()
    status, _, body = s.post(okta_request())
    assert time.monotonic() - t0 < 1.2 * SLOW
    assert "commands" not in body
    (row,) = dlq_rows(s)
    assert row[1] == "TIMEOUT"


def test_without_a_key_entries_have_no_payload(make_server, webhook):
    s = make_server(config(webhook).replace(f"dlq.key = {KEY}", ""))
    webhook.default = "500"
    s.post(okta_request())
    (row,) = dlq_rows(s)
    assert row[4] == "" and row[5] is None
    r = s.cli("dlq", "show", row[0], check=False)
    assert r.returncode == 1 and "no payload" in r.stderr
    assert any(l.get("event") == "dlq_no_key" for l in s.logs())


def test_nothing_dead_lettered_for_deliveries_or_refusals(make_server, webhook):
    s = make_server(config(webhook, "guard.limit_phone = 1/1h"))
    s.post(okta_request())  # delivered
    s.post(okta_request())  # blocked
    s.post(okta_request(phoneNumber="9876543210"))  # invalid number
    assert dlq_rows(s) == []


def test_purge(make_server, webhook):
    s = make_server(config(webhook))
    webhook.default = "500"
    for _ in range(3):
        s.post(okta_request())
    ids = [r[0] for r in dlq_rows(s)]
    assert "deleted" in s.cli("dlq", "purge", ids[0]).stderr
    assert len(dlq_rows(s)) == 2
    assert "0 entries deleted" in s.cli("dlq", "purge", "--older-than", "1").stderr
    assert "2 entries deleted" in s.cli("dlq", "purge", "--older-than", "0").stderr


def test_kill_9_keeps_every_answered_entry(make_server, webhook):
    """kill -9 during a bounded load: every request Okta got an answer for has its entry."""
    s = make_server(config(webhook))
    webhook.default = "500"
    answered = []

    def one(i):
        try:
            status, headers, body = s.post(okta_request())
            if status == 200:
                answered.append(headers["x-request-id"])
        except Exception:  # noqa: BLE001 - the server is killed under our feet
            pass

    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        futs = [pool.submit(one, i) for i in range(300)]
        while len(answered) < 60:
            time.sleep(0.005)
        os.kill(s.proc.pid, signal.SIGKILL)
        for f in futs:
            f.result()
    s.proc.wait()
    stored = {r[0] for r in s.db_rows("SELECT request_id FROM dlq")}
    missing = [rid for rid in answered if rid not in stored]
    assert not missing, f"{len(missing)} answered requests have no dead-letter entry"


def test_depth_gauge_follows_the_store(make_server, webhook):
    """telehook_dlq_depth: an entry shows at once; a purge by the CLI (another process) shows
    after the writer's next count (dlq.depth_refresh, 1 s here)."""
    from test_metrics import scrape, value

    def depth_becomes(want, bound_s=5):
        deadline = time.monotonic() + bound_s
        while True:
            got = value(scrape(s)[1], "telehook_dlq_depth")
            if got == want or time.monotonic() > deadline:
                return got
            time.sleep(0.05)

    s = make_server(config(webhook, "dlq.depth_refresh = 1"))
    assert depth_becomes(0) == 0
    webhook.default = "500"
    assert s.post(okta_request())[0] == 200
    assert depth_becomes(1) == 1
    f = scrape(s)[1]
    assert value(f, "telehook_guard_dedupe_records") == 1  # the answered request, remembered
    assert value(f, "telehook_guard_dedupe_waiters") == 0
    (dlq_id,) = [r[0] for r in dlq_rows(s)]
    assert "deleted" in s.cli("dlq", "purge", dlq_id).stderr
    assert depth_becomes(0) == 0
