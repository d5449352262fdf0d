"""Delivery records and logs: what happened to every request, and never an OTP or a secret."""
from conftest import HOOK, US_NUMBER, okta_request

COLUMNS = ("request_id", "event_id", "created_ms", "request_type", "phone_masked", "country",
           "channel", "language", "source", "provider", "outcome", "transaction_id", "error",
           "latency_us", "locale", "preference")


def deliveries(server):
    return [dict(zip(COLUMNS, r)) for r in server.db_rows(
        f"SELECT {', '.join(COLUMNS)} FROM deliveries ORDER BY created_ms")]


def test_one_record_per_request(server):
    ok = okta_request(otp="739154", locale="es-MX", channel="voice call")
    _, hdrs, body = server.post(ok)
    server.post(okta_request(phone="9876543210", otp="739154"))
    server.post(b"{broken")
    assert server.wait_rows("SELECT count(*) FROM deliveries", 3) == 3
    rows = deliveries(server)
    good = next(r for r in rows if r["outcome"] == "SUCCESSFUL")
    assert good["request_id"] == hdrs["x-request-id"]
    assert good["event_id"] == ok["eventId"]
    assert good["request_type"] == "com.okta.user.telephony.mfa-verification"
    assert good["phone_masked"] == "+1201*****23"
    assert good["country"] == "US"
    assert good["channel"] == "voice"
    assert good["language"] == "es"
    assert good["source"] == "builtin"  # the language pack: no stored template
    assert good["locale"] == "es-mx" and good["preference"] == ""
    assert good["provider"] == "outbox"
    assert good["transaction_id"] == body["commands"][0]["value"][0]["transactionId"]
    assert good["latency_us"] > 0
    rejected = [r for r in rows if r["outcome"] == "REJECTED"]
    assert {r["error"] for r in rejected} >= {"invalid phone number"}
    assert any(r["error"].startswith("invalid JSON") for r in rejected)
    # never the OTP, never the full number, in any column
    for r in rows:
        for v in r.values():
            assert "739154" not in str(v)
            assert US_NUMBER not in str(v) and US_NUMBER[1:] not in str(v)


def test_cli_lists_deliveries(server):
    server.post(okta_request())
    server.wait_rows("SELECT count(*) FROM deliveries", 1)
    out = server.cli("deliveries", "list").stdout
    assert "SUCCESSFUL" in out and "+1201*****23" in out and US_NUMBER not in out


def test_logs_hold_no_otp_secret_or_number(server):
    otp = "371946"
    server.post(okta_request(otp=otp))
    server.post(okta_request(otp=otp, channel="voice", locale="es"))
    server.post(okta_request(otp=otp, phone="9876543210"))
    server.post(okta_request(otp=otp), auth=False, headers={server.header: server.secret + "x"})
    server.post(okta_request(otp=otp), auth=False)
    server.post(b'{"otpCode": "%s"' % otp.encode())
    server.request("POST", HOOK, "x" * 100, {"Content-Type": "text/plain", server.header: server.secret})
    server.wait_rows("SELECT count(*) FROM deliveries", 4)
    assert server.stop() == 0
    text = server.log_text()
    assert otp not in text
    assert server.secret not in text
    assert US_NUMBER not in text and US_NUMBER[1:] not in text
    logs = server.logs()  # every line is JSON
    requests = [l for l in logs if l["event"] == "request"]
    assert len(requests) == 4
    assert all(l["req"].startswith("r-") for l in requests)
    assert {l["outcome"] for l in requests} == {"SUCCESSFUL", "REJECTED"}
    refused = [l for l in logs if l["event"] == "refused"]
    assert {l["status"] for l in refused} == {401, 415}


def test_deliveries_list_filters_and_show(make_server):
    s = make_server()
    _, h1, _ = s.post(okta_request())
    _, h2, _ = s.post(okta_request(phoneNumber="+34612345678", deliveryChannel="voice"))
    s.post(okta_request(phoneNumber="9876543210"))
    s.wait_rows("SELECT count(*) FROM deliveries", 3)
    out = s.cli("deliveries", "list", "--country", "ES").stdout
    assert h2["x-request-id"] in out and h1["x-request-id"] not in out
    out = s.cli("deliveries", "list", "--channel", "sms", "--outcome", "SUCCESSFUL").stdout
    assert h1["x-request-id"] in out and h2["x-request-id"] not in out
    out = s.cli("deliveries", "list", "--outcome", "REJECTED", "--since", "1h").stdout
    assert out.count("REJECTED") == 1
    assert s.cli("deliveries", "list", "--since", "2030-01-01T00:00:00Z").stdout == "(none)\n"
    out = s.cli("deliveries", "show", h1["x-request-id"]).stdout
    assert h1["x-request-id"] in out and "+1201*****23" in out
    r = s.cli("deliveries", "show", "r-nope", check=False)
    assert r.returncode == 1 and "no delivery record" in r.stderr
    r = s.cli("deliveries", "list", "--since", "yesterday", check=False)
    assert r.returncode == 2


def test_two_servers_share_one_store(make_server):
    """A second start on the same SQLite file is safe: both serve, both records land."""
    a = make_server()
    b = make_server(start=False)
    b.db = a.db
    with open(b.conf) as f:
        conf = f.read()
    with open(b.conf, "w") as f:
        f.write(conf.replace(str(b.tmp / "telehook.db"), a.db))
    b.start()
    assert a.post(okta_request())[0] == 200
    assert b.post(okta_request())[0] == 200
    assert a.wait_rows("SELECT count(*) FROM deliveries", 2) == 2
    assert b.stop() == 0
