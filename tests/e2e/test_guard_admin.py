"""`telehook guard show|reset` against a running node whose guard state is in PostgreSQL: a
number, a user and a calling code hit their limit, the CLI shows it (from the HMAC keys it
computes under guard.secret, the number printed back masked), resets it, and the next request
goes through. On SQLite (the guard in the process's memory) both commands say so and exit 1.

Needs TH_TEST_PG_URL (scripts/with-postgres.sh); skipped without it, a failure when
TH_TEST_REQUIRE_PG is set."""
import json
import os
import secrets
import urllib.parse

import pytest

from conftest import okta_request
from fakes import FakeWebhook
from test_shared_guard import value, warm

PG = os.environ.get("TH_TEST_PG_URL")
GB = "+4474001234"


def need_pg():
    if not PG:
        if os.environ.get("TH_TEST_REQUIRE_PG"):
            raise RuntimeError("TH_TEST_PG_URL is not set: run under scripts/with-postgres.sh")
        pytest.skip("no PostgreSQL (TH_TEST_PG_URL unset)")


@pytest.fixture
def webhook():
    with FakeWebhook() as f:
        yield f
        assert not f.errors, f.errors


def node(make_server, webhook, extra):
    need_pg()
    s = make_server(f"""
        provider.name = webhook
        webhook.url = {webhook.url}/send
        webhook.secret = {webhook.secret}
        guard.url = {PG}
        guard.secret = admin-{secrets.token_hex(12)}
        {extra}""")
    warm(s)
    webhook.clear()
    return s


def request(phone, user="00uAdminTest"):
    r = okta_request(phone=phone)
    r["data"]["userProfile"]["userId"] = user
    return r


def status(s, req):
    return value(s.post(req)[2])


def no_secret(*outputs):
    pw = urllib.parse.urlsplit(PG).password
    for o in outputs:
        assert pw not in o


def test_phone_limit_shown_and_reset(make_server, webhook):
    s = node(make_server, webhook, "guard.limit_phone = 2/1h")
    phone = GB + f"{secrets.randbelow(99):02d}"  # never GB + "99", the untouched one below
    got = [status(s, request(phone, f"00u{i}"))["status"] for i in range(3)]
    assert got == ["SUCCESSFUL", "SUCCESSFUL", "FAILED"]

    r = s.cli("guard", "show", "--phone", phone)
    assert "phone_rate      2 of 2 per 1h: the next request is refused for" in r.stdout
    assert phone not in r.stdout and phone[:5] in r.stdout  # masked
    doc = json.loads(s.cli("guard", "show", "--phone", phone, "--json").stdout)
    (lim,) = doc["limits"]
    assert (lim["limit"], lim["used"], lim["count"], lim["passes"]) == ("phone_rate", 2, 2, False)
    assert 1700 < lim["refused_for_s"] <= 1800  # GCRA: one more fits after period / count
    assert doc["state"].startswith("postgresql://") and phone not in json.dumps(doc)
    # another number is untouched
    other = json.loads(s.cli("guard", "show", "--phone", GB + "99", "--json").stdout)
    assert other["limits"][0]["held"] is False and other["limits"][0]["passes"] is True

    r2 = s.cli("guard", "reset", "--phone", phone)
    assert "phone_rate and phone_daily cleared (1 row deleted)" in r2.stdout
    assert status(s, request(phone, "00u9"))["status"] == "SUCCESSFUL"
    assert status(s, request(phone, "00u8"))["status"] == "SUCCESSFUL"
    assert status(s, request(phone, "00u7"))["status"] == "FAILED"  # the limit holds again
    assert webhook.count() == 4
    no_secret(r.stdout, r.stderr, r2.stdout, r2.stderr, s.log_text())


def test_user_limit_reset(make_server, webhook):
    s = node(make_server, webhook, "guard.limit_user = 1/1h")
    user = "00u" + secrets.token_hex(6)
    assert status(s, request(GB + "01", user))["status"] == "SUCCESSFUL"
    blocked = status(s, request(GB + "02", user))
    assert (blocked["status"], blocked["transactionMetadata"]) == ("FAILED", "blocked=user_rate")
    r = s.cli("guard", "show", "--user", user)
    assert "user_rate       1 of 1 per 1h: the next request is refused" in r.stdout
    assert "user_rate cleared (1 row deleted)" in s.cli("guard", "reset", "--user", user).stdout
    assert status(s, request(GB + "03", user))["status"] == "SUCCESSFUL"


def test_calling_code_budget_shown_and_reset(make_server, webhook):
    s = node(make_server, webhook, "guard.budgets = 44:2")
    got = [status(s, request(GB + f"{i:02d}", f"00u{i}")) for i in range(3)]
    assert [g["status"] for g in got] == ["SUCCESSFUL", "SUCCESSFUL", "FAILED"]
    assert got[2]["transactionMetadata"] == "blocked=calling_code_budget"
    r = s.cli("guard", "show")
    assert "+44           2 of 2 (spent: refused until 00:00 UTC)" in r.stdout
    assert "guard_budget" in r.stdout and "(shared by every node)" in r.stdout
    doc = json.loads(s.cli("guard", "show", "--json").stdout)
    assert {"calling_code": 44, "used": 2, "budget": 2} in doc["budgets"]
    one = json.loads(s.cli("guard", "show", "--calling-code", "+44", "--json").stdout)
    assert one["budgets"] == [{"calling_code": 44, "used": 2, "budget": 2}]
    r2 = s.cli("guard", "reset", "--calling-code", "44")
    assert "calling code +44: today's count" in r2.stdout and "(1 row deleted)" in r2.stdout
    assert status(s, request(GB + "50", "00u50"))["status"] == "SUCCESSFUL"
    after = json.loads(s.cli("guard", "show", "--calling-code", "44", "--json").stdout)
    assert after["budgets"] == [{"calling_code": 44, "used": 1, "budget": 2}]
    no_secret(r.stdout, r2.stdout)


def test_in_memory_guard_says_so(make_server):
    s = make_server("guard.limit_phone = 2/1h")  # SQLite: the guard in the process's memory
    for args in (["guard", "show"], ["guard", "reset", "--phone", GB + "01"]):
        r = s.cli(*args, check=False)
        assert r.returncode == 1, r
        assert "in memory" in r.stderr and "restart" in r.stderr


def test_reset_needs_one_subject(make_server):
    s = make_server(start=False)
    r = s.cli("guard", "reset", check=False)
    assert r.returncode == 2 and "needs one of --phone" in r.stderr
    r = s.cli("guard", "reset", "--phone", GB + "01", "--user", "00u1", check=False)
    assert r.returncode == 2 and "one of --phone, --user" in r.stderr
    r = s.cli("guard", "show", "--calling-code", "1000", check=False)
    assert r.returncode == 2 and "not a calling code" in r.stderr
