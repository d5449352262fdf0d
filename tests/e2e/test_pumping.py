"""Pumping stopped by conversion, end to end: a real telehook with [conversion] mode = enforce and
small thresholds; an attack over a few prefixes of one country is refused after N sends per
prefix while a number elsewhere in the country is sent; `guard blocks list|clear` work against the
running server's store, and a cleared block leaves the server within a few seconds.

Verifications (part A's Okta event hook) are not in this tree yet: the unit tests feed them to
the tracker directly; here require_signal = false lets enforce refuse without them, and the
default (require_signal = true) is checked to refuse nothing."""
import json
import re
import time

from conftest import SLOW, okta_request

SECRET = "guard-secret-for-the-pumping-test"
ENFORCE = f"""
    guard.secret = {SECRET}
    conversion.mode = enforce
    conversion.require_signal = false
    conversion.prefix_min_sends = 5
    conversion.prefix_min_rate = 50
    conversion.country_min_sends = 1000
"""
# three attacked prefixes of GB (the number less its last 4 digits), and a legitimate user's
ATTACKED = ["+44740012", "+44740034", "+44740056"]
LEGIT = "+447400987654"


def outcome(server, phone):
    status, _, body = server.post(okta_request(phone=phone))
    assert status == 200, body
    if "error" in body:
        return "ERROR"
    (cmd,) = body["commands"]
    (v,) = cmd["value"]
    return v["status"]


def metric(server, name, **labels):
    _, _, raw = server.request("GET", "/metrics")
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pat = re.escape(name) + (r"\{" + re.escape(want) + r"\}" if labels else "") + r" (\S+)"
    m = re.search("^" + pat + "$", raw.decode(), re.M)
    return float(m.group(1)) if m else None


def blocks(server, *args):
    return json.loads(server.cli("guard", "blocks", "list", "--json", *args).stdout)


def wait_for(pred, what, seconds=10):
    deadline = time.monotonic() + seconds * SLOW
    while not pred():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_attack_refused_per_prefix_legit_sent(make_server):
    s = make_server(ENFORCE)
    results = {p: [] for p in ATTACKED}
    for i in range(15):
        for p in ATTACKED:
            results[p].append(outcome(s, f"{p}{i:04d}"))
        if i % 5 == 0:  # a legitimate user of the same country, another prefix
            assert outcome(s, LEGIT) == "SUCCESSFUL"
    for p in ATTACKED:  # the first 5 go (to measure), every later one is refused
        assert results[p] == ["SUCCESSFUL"] * 5 + ["FAILED"] * 10, (p, results[p])
    assert outcome(s, LEGIT) == "SUCCESSFUL"
    assert s.db_rows("SELECT count(*) FROM outbox")[0][0] == 3 * 5 + 4
    assert metric(s, "telehook_blocked_total", reason="conversion_prefix") == 30
    assert metric(s, "telehook_conversion_refused_total", kind="prefix") == 30
    assert metric(s, "telehook_conversion_blocks", kind="prefix") == 3
    assert metric(s, "telehook_conversion_sent_total", country="GB", provider="outbox",
                  channel="sms") == 19
    assert metric(s, "telehook_guard_bytes", table="conversion") > 0
    # logged with the prefix masked, once per block; never a whole number
    text = s.log_text()
    for p in ATTACKED:
        assert f"{p}****" in text
        for i in range(15):
            assert f"{p}{i:04d}" not in text
    assert LEGIT not in text
    assert SECRET not in text
    # the store has them (the sync thread: within a few seconds), masked and keyed
    wait_for(lambda: len(blocks(s)) == 3, "the blocks reach the store")
    rows = blocks(s)
    assert sorted(r["prefix"] for r in rows) == sorted(p + "****" for p in ATTACKED)
    assert all(r["kind"] == "prefix" and r["country"] == "GB" and r["mode"] == "enforce"
               and r["sends"] == 5 and r["verified"] == 0 and len(r["key"]) == 32
               for r in rows), rows
    assert s.stop() == 0


def test_blocks_clear_reaches_the_server(make_server):
    s = make_server(ENFORCE)
    a, b = ATTACKED[0], ATTACKED[1]
    for p in (a, b):
        for i in range(6):
            outcome(s, f"{p}{i:04d}")
        assert outcome(s, f"{p}9999") == "FAILED"
    wait_for(lambda: len(blocks(s)) == 2, "the blocks reach the store")
    key = next(r["key"] for r in blocks(s) if r["prefix"] == a + "****")
    r = s.cli("guard", "blocks", "clear", "--prefix", key)
    assert "1 block cleared" in r.stdout
    # gone from the list (still kept with --all), and lifted by the server within seconds
    assert [x["prefix"] for x in blocks(s)] == [b + "****"]
    assert any(x["cleared"] for x in blocks(s, "--all"))
    wait_for(lambda: outcome(s, f"{a}8000") == "SUCCESSFUL", "the server lifts the block")
    assert outcome(s, f"{b}8000") == "FAILED"  # the other stays
    # judged again only after prefix_min_sends new sends: 4 more go, then refused
    assert [outcome(s, f"{a}81{i:02d}") for i in range(6)] == ["SUCCESSFUL"] * 4 + ["FAILED"] * 2
    # clear by id; nothing left to clear is exit 1
    wait_for(lambda: len(blocks(s)) == 2, "the new block reaches the store")
    bid = next(x["id"] for x in blocks(s) if x["prefix"] == b + "****")
    assert s.cli("guard", "blocks", "clear", bid).returncode == 0
    r = s.cli("guard", "blocks", "clear", bid, check=False)
    assert r.returncode == 1 and "no active block" in r.stderr
    assert s.cli("guard", "blocks", "clear", check=False).returncode == 2
    wait_for(lambda: outcome(s, f"{b}8001") == "SUCCESSFUL", "the server lifts the block")
    assert s.stop() == 0


def test_enforce_without_verifications_refuses_nothing(make_server):
    """A new install whose Okta event hook reports nothing yet: every prefix converts 0 %, and
    enforce must not block the org: the blocks are made and counted as would_refuse only."""
    s = make_server(ENFORCE.replace("conversion.require_signal = false", ""))
    out = [outcome(s, f"{ATTACKED[0]}{i:04d}") for i in range(12)]
    assert out == ["SUCCESSFUL"] * 12
    assert metric(s, "telehook_conversion_would_refuse_total", kind="prefix") == 7
    assert metric(s, "telehook_conversion_refused_total", kind="prefix") == 0
    assert metric(s, "telehook_conversion_signal") == 0
    wait_for(lambda: len(blocks(s)) == 1, "the block reaches the store")
    assert blocks(s)[0]["mode"] == "monitor"
    assert s.stop() == 0


def test_enforce_needs_guard_secret(make_server):
    s = make_server("conversion.mode = enforce", start=False)
    r = s.cli("config", "check", check=False)
    assert r.returncode != 0 and "needs [guard] secret" in r.stderr
    s = make_server(f"conversion.mode = enforce\nguard.secret = {SECRET}", start=False)
    r = s.cli("config", "check")
    assert "refuses only once a verification has been seen" in r.stderr
    s = make_server("conversion.mode = monitor", start=False)
    assert "conversion is not tracked" in s.cli("config", "check").stderr
