"""Okta's event hook (docs/conversion.md): the verification GET, batches of System Log events
credited to the deliveries that carried the codes, idempotent on Okta's uuid, `deliveries
stats`, and the side route's authentication and refusals."""
import json
import socket
import time

from conftest import SLOW, US_NUMBER, okta_request
from fake_okta_events import Sender, enroll_event, mfa_event
from test_metrics import parse, value

USER = "00uyxxSknGtK8022w0g3"  # okta_request's userProfile.userId
GUARD = "guard.secret = gs-0123456789abcdef0123456789"
ON = "events.enabled = true\n" + GUARD


def now_ms():
    return int(time.time() * 1000)


def send(server, **kw):
    status, hdrs, body = server.post(okta_request(**kw))
    assert status == 200, body
    return hdrs["x-request-id"]


def record(server, req):
    r = server.cli("deliveries", "show", req, "--json")
    return json.loads(r.stdout)


def wait_verified(server, want, timeout=10):
    deadline = time.monotonic() + timeout * SLOW
    while True:
        n = server.db_rows("SELECT count(*) FROM deliveries WHERE verified_ms IS NOT NULL")[0][0]
        if n >= want or time.monotonic() > deadline:
            return n
        time.sleep(0.02)


def metrics(server):
    status, _, raw = server.request("GET", "/metrics")
    assert status == 200
    return parse(raw.decode())


def events_metric(server, type_, result):
    return value(metrics(server), "telehook_okta_events_total", type=type_, result=result)


def wait_metric(server, type_, result, want, timeout=12):
    deadline = time.monotonic() + timeout * SLOW
    while True:
        v = events_metric(server, type_, result)
        if v >= want or time.monotonic() > deadline:
            return v
        time.sleep(0.05)


def sender(server, **kw):
    return Sender(server.port, header=server.header, secret=server.secret, **kw)


def test_verification_get(make_server):
    s = make_server(ON)
    status, raw, challenge = sender(s).verify()
    assert status == 200
    assert json.loads(raw) == {"verification": challenge}
    # the value is JSON-escaped, never pasted raw
    status, raw, challenge = sender(s).verify('a"b\\c')
    assert status == 200 and json.loads(raw) == {"verification": 'a"b\\c'}
    # bounded: a challenge no Okta sends is refused
    status, _, _ = sender(s).verify("x" * 300)
    assert status == 400
    assert s.stop() == 0


def test_event_credits_the_delivery(make_server):
    s = make_server(ON)
    req = send(s)
    s.wait_rows("SELECT count(*) FROM deliveries", 1)
    before = record(s, req)
    assert before["verified_ms"] is None
    ev = mfa_event(USER, now_ms())
    status, _ = sender(s).deliver([ev])
    assert status == 200
    assert wait_verified(s, 1) == 1
    rec = record(s, req)
    assert rec["verified_event"] == ev["uuid"]
    assert rec["verified_ms"] >= before["verified_ms"] if before["verified_ms"] else True
    assert "verified" in s.cli("deliveries", "show", req).stdout
    # the same event again (Okta retries): changes nothing, counted once as a duplicate
    status, _ = sender(s).deliver([ev])
    assert status == 200
    assert wait_metric(s, "auth_via_mfa", "duplicate", 1) == 1
    assert s.db_rows("SELECT count(*) FROM verifications")[0][0] == 1
    assert events_metric(s, "auth_via_mfa", "matched") == 1
    assert events_metric(s, "auth_via_mfa", "queued") == 2
    stats = json.loads(s.cli("deliveries", "stats", "--by", "country", "--json").stdout)
    assert stats == [{"country": "US", "sends": 1, "verified": 1, "conversion_pct": 100.0,
                      "refused": 0, "failed": 0}]
    assert s.stop() == 0
    text = s.log_text()
    assert s.secret not in text
    assert any(l.get("event") == "verified" and l.get("req") == req for l in s.logs())


def test_resend_credits_the_last_before_the_event(make_server):
    s = make_server(ON)
    first = send(s)
    second = send(s)
    s.wait_rows("SELECT count(*) FROM deliveries", 2)
    third_after = None
    status, _ = sender(s).deliver([mfa_event(USER, now_ms())])
    assert status == 200
    assert wait_verified(s, 1) == 1
    time.sleep(0.2)
    assert record(s, second)["verified_ms"] is not None
    assert record(s, first)["verified_ms"] is None
    # a voice sign-in does not credit an SMS delivery; a later send is outside [.., event+skew]
    third_after = send(s, channel="voice call")
    s.wait_rows("SELECT count(*) FROM deliveries", 3)
    status, _ = sender(s).deliver([mfa_event(USER, now_ms() - 5 * 60 * 1000, factor="call")])
    assert status == 200
    assert wait_metric(s, "auth_via_mfa", "unmatched", 1) == 1
    assert record(s, third_after)["verified_ms"] is None
    assert record(s, first)["verified_ms"] is None
    assert s.stop() == 0


def test_stats_by_group(make_server):
    s = make_server(ON)
    reqs = [send(s) for _ in range(3)]
    send(s, phone="+34612345678")
    s.post(okta_request(phone="9876543210"))  # refused: not a valid number
    s.wait_rows("SELECT count(*) FROM deliveries", 5)
    status, _ = sender(s).deliver([mfa_event(USER, now_ms())])
    assert status == 200
    assert wait_verified(s, 1) == 1
    assert record(s, reqs[2])["verified_ms"] is None  # the ES send was the user's last one
    by_country = json.loads(s.cli("deliveries", "stats", "--json").stdout)
    assert {r["country"]: (r["sends"], r["verified"]) for r in by_country} == {
        "US": (3, 0), "ES": (1, 1), "": (0, 0)}
    assert by_country[0]["country"] == "US"  # sorted by sends
    by_prefix = json.loads(s.cli("deliveries", "stats", "--by", "prefix", "--json").stdout)
    sends = {r["country"]: r["sends"] for r in by_prefix if r["sends"]}
    assert sends == {"US": 3, "ES": 1}
    assert all(len(r["prefix"]) == 32 for r in by_prefix if r["sends"])
    assert US_NUMBER[:-4] not in json.dumps(by_prefix)
    by_route = json.loads(s.cli("deliveries", "stats", "--by", "route", "--json").stdout)
    assert {r["route"]: r["sends"] for r in by_route if r["sends"]} == {"outbox#1": 4}
    table = s.cli("deliveries", "stats", "--by", "channel").stdout
    assert "SENDS" in table and "sms" in table and "25.0%" in table
    assert s.stop() == 0


def test_enrolment_and_ignored_events(make_server):
    s = make_server(ON)
    send(s)
    s.wait_rows("SELECT count(*) FROM deliveries", 1)
    t = now_ms()
    batch = [enroll_event(USER, t), mfa_event(USER, t, factor="push"),
             mfa_event(USER, t, result="FAILURE"), {"uuid": "bad id!", "eventType": 5}]
    status, _ = sender(s).deliver(batch)
    assert status == 200
    assert wait_verified(s, 1) == 1
    assert wait_metric(s, "factor_activate", "matched", 1) == 1
    assert events_metric(s, "auth_via_mfa", "ignored") == 2
    assert events_metric(s, "other", "invalid") == 1
    assert s.stop() == 0


def test_authentication_and_refusals(make_server):
    s = make_server(ON)
    body = json.dumps({"data": {"events": []}})
    st, _, _ = s.request("POST", "/v1/okta/events", body, {"Content-Type": "application/json"})
    assert st == 401
    st, _, _ = s.request("POST", "/v1/okta/events", body,
                         {"Content-Type": "application/json", s.header: s.secret + "x"})
    assert st == 401
    st, _, _ = s.request("GET", "/v1/okta/events", None, {"X-Okta-Verification-Challenge": "c"})
    assert st == 401
    st, _, _ = s.request("POST", "/v1/okta/events", body,
                         {"Content-Type": "text/plain", s.header: s.secret})
    assert st == 415
    st, hdrs, _ = s.request("PUT", "/v1/okta/events", body,
                            {"Content-Type": "application/json", s.header: s.secret})
    assert st == 405 and hdrs["allow"] == "GET, HEAD, POST"
    st, _, _ = s.request("POST", "/v1/okta/events", "{nope",
                         {"Content-Type": "application/json", s.header: s.secret})
    assert st == 400
    # announced over [events] max_body: refused before a byte of it is read
    with socket.create_connection(("127.0.0.1", s.port), timeout=5) as c:
        c.sendall(b"POST /v1/okta/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                  b"\r\nContent-Length: 1048577\r\n" + s.header.encode() + b": " +
                  s.secret.encode() + b"\r\n\r\n")
        assert c.recv(64).startswith(b"HTTP/1.1 413")
    f = metrics(s)
    refusals = {l["reason"]: v for _, l, v in f["telehook_refusals_total"]["samples"]}
    assert refusals["auth_missing"] == 2 and refusals["auth_invalid"] == 1
    assert refusals["media_type"] == 1 and refusals["method"] == 1
    assert refusals["too_large"] == 1
    assert s.stop() == 0


def test_own_secret(make_server):
    own = "ev-" + "k" * 30
    s = make_server(ON + f"\nevents.header_name = x-okta-events-key\nevents.header_secret = {own}")
    st, raw, c = Sender(s.port, header="x-okta-events-key", secret=own).verify()
    assert st == 200 and json.loads(raw) == {"verification": c}
    st, _, _ = sender(s).verify()  # the telephony hook's secret is not this route's
    assert st == 401
    assert s.stop() == 0
    assert own not in s.log_text()


def test_disabled_is_404(make_server):
    s = make_server(GUARD)
    st, _, _ = sender(s).verify()
    assert st == 404
    assert s.stop() == 0
