"""Delivery receipts end to end: a telephony request goes out through the Twilio or AWS fake, its
receipt comes back (a signed Twilio status callback, a signed SNS notification over an HTTPS
subscription, an EventBridge event with its header secret) and `deliveries show` has the status.
Forged, foreign and malformed receipts are refused and counted; no number reaches a log line."""
import json
import re
import time

from conftest import SLOW, US_NUMBER, okta_request
from fake_sns import FakeSNS, TwilioStatus, eum_record
from fakes import FakeEUM, FakeTwilio

NO_PROXY_ENV = {k: "" for k in ("http_proxy", "https_proxy", "HTTPS_PROXY", "all_proxy",
                                "ALL_PROXY", "no_proxy", "NO_PROXY")}
PUBLIC_URL = "https://telehook.example.com/v1/twilio/status"  # behind a proxy: not our Host
TOPIC = "arn:aws:sns:us-east-1:123456789012:telehook-sms-events"


def request_of(s, tx):
    """The request id of the delivery record with transaction id tx (written off the hot path)."""
    s.wait_rows("SELECT count(*) FROM deliveries WHERE transaction_id = ?", 1, (tx,))
    return s.db_rows("SELECT request_id FROM deliveries WHERE transaction_id = ?", (tx,))[0][0]


def receipt_of(s, request_id, want=None):
    """deliveries show --json's receipt, waiting (bounded) until it is want's status."""
    deadline = time.monotonic() + 10 * SLOW
    while True:
        rec = json.loads(s.cli("deliveries", "show", request_id, "--json").stdout)["receipt"]
        if want is None or (rec and rec["status"] == want) or time.monotonic() > deadline:
            return rec
        time.sleep(0.05)


def metric(s, name, **labels):
    _, _, text = s.request("GET", "/metrics")
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.decode().splitlines():
        if line.startswith(f"{name}{{{want}}} "):
            return float(line.split()[-1])
    return 0.0


def wait_metric(s, want, name, **labels):
    """The metric once it reaches want (bounded wait: the writer applies receipts off the loop)."""
    deadline = time.monotonic() + 10 * SLOW
    while metric(s, name, **labels) < want and time.monotonic() < deadline:
        time.sleep(0.05)
    return metric(s, name, **labels)


def no_number_logged(s):
    text = s.log_text()
    assert US_NUMBER not in text and US_NUMBER[1:] not in text
    assert "+12065550111" not in text and "2015550123" not in text


def test_twilio_status_callbacks(make_server):
    with FakeTwilio(credentials=None) as tw:
        s = make_server(f"""
            provider.name = twilio
            twilio.account_sid = {tw.account_sid}
            twilio.auth_token = {tw.auth_token}
            twilio.from = +12065550111
            twilio.base_url = {tw.url}
            receipts.twilio_status_url = {PUBLIC_URL}""")
        cb = TwilioStatus(s.port, PUBLIC_URL, tw.auth_token)
        # an SMS: sent with StatusCallback, then its callbacks
        _, _, body = s.post(okta_request())
        assert "error" not in body, body
        rec = tw.last(resource="Messages")
        assert rec["form"]["StatusCallback"] == PUBLIC_URL
        assert "StatusCallbackEvent" not in rec["form"]
        sid = rec["sid"]
        rid = request_of(s, sid)
        assert receipt_of(s, rid) is None
        assert cb.send(cb.message(sid, "sent")) == 204
        assert receipt_of(s, rid, "sent")["status"] == "sent"
        assert cb.send(cb.message(sid, "undelivered", 30007)) == 204
        got = receipt_of(s, rid, "spam")
        assert (got["status"], got["code"]) == ("spam", "30007")
        # a late non-final status never replaces a final one
        assert cb.send(cb.message(sid, "sent")) == 204
        # forged: a wrong token, a changed parameter, no signature; the URL as seen (not the
        # public one) is not what Twilio signed either
        p = cb.message(sid, "delivered")
        assert cb.send(p, signature=TwilioStatus(0, PUBLIC_URL, "f" * 32).signature(p)) == 403
        assert cb.send(dict(p, MessageStatus="delivered"), signature=cb.signature(
            cb.message(sid, "failed"))) == 403
        assert cb.send(p, signature="") == 403
        assert cb.send(p, signature=cb.signature(p, f"http://127.0.0.1:{s.port}/v1/twilio/status")) == 403
        # the public URL with its default port is the same URL (Twilio's validators agree)
        assert cb.send(cb.message(sid, "sent"), signature=cb.signature(
            cb.message(sid, "sent"), PUBLIC_URL.replace(".com/", ".com:443/"))) == 204
        # signed but not a status callback
        assert cb.send({"Foo": "bar"}) == 400
        # a call: StatusCallbackEvent=completed, then its end
        _, _, body = s.post(okta_request(channel="voice"))
        assert "error" not in body, body
        call = tw.last(resource="Calls")
        assert call["form"]["StatusCallback"] == PUBLIC_URL
        assert call["form"]["StatusCallbackEvent"] == "completed"
        crid = request_of(s, call["sid"])
        assert cb.send(cb.call(call["sid"], "no-answer")) == 204
        assert receipt_of(s, crid, "no_answer")["status"] == "no_answer"
        # a receipt for a message we never sent: queued, then unmatched (not an error to Twilio)
        assert cb.send(cb.message("SM" + "0" * 32, "delivered")) == 204
        # the spam stays: the later "sent" and the forged "delivered" changed nothing
        assert receipt_of(s, rid)["status"] == "spam"
        assert metric(s, "telehook_receipts_total", provider="twilio", result="queued") == 6
        assert metric(s, "telehook_receipts_total", provider="twilio", result="bad_signature") == 4
        assert metric(s, "telehook_receipts_total", provider="twilio", result="malformed") == 1
        assert metric(s, "telehook_receipts_applied_total", provider="twilio", status="spam") == 1
        # the late "sent" and the ":443" one found spam there: stale; sent, spam, no_answer applied
        assert wait_metric(s, 2, "telehook_receipts_store_total", result="stale") == 2
        assert wait_metric(s, 3, "telehook_receipts_store_total", result="applied") == 3
        assert metric(s, "telehook_receipts_final_total", provider="twilio", country="US",
                      status="spam") == 1
        # `deliveries show` as text
        out = s.cli("deliveries", "show", rid).stdout
        assert re.search(r"^receipt\s+spam \(30007\) at ", out, re.M), out
        no_number_logged(s)
        assert s.stop() == 0


def test_twilio_status_url_needs_the_auth_token(make_server):
    s = make_server(f"""
        provider.name = twilio
        twilio.account_sid = AC{"0" * 32}
        twilio.api_key_sid = SK{"0" * 32}
        twilio.api_key_secret = {"s" * 32}
        twilio.from = +12065550111
        receipts.twilio_status_url = {PUBLIC_URL}""", start=False)
    r = s.cli("config", "check", check=False)
    assert r.returncode != 0 and "[receipts] twilio_status_url" in r.stderr, r.stderr


def aws_server(make_server, eum, sns, extra=""):
    akid, secret, _ = eum.credential
    return make_server(f"""
        provider.name = aws
        aws.region = {eum.region}
        aws.endpoint = {eum.url}
        aws.origination_identity = +12065550100
        tls.ca_file = {sns.ca_file}
        receipts.sns_topic_arns = arn:aws:sns:eu-west-1:123456789012:other, {TOPIC}
        receipts.sns_cert_hosts = sns.*.amazonaws.com, {sns.host}
        {extra}""", env=dict(NO_PROXY_ENV, AWS_ACCESS_KEY_ID=akid, AWS_SECRET_ACCESS_KEY=secret))


def test_sns_subscription_and_notifications(make_server, tmp_path):
    with FakeEUM(region="us-east-1") as eum, FakeSNS(tmp_path) as sns:
        s = aws_server(make_server, eum, sns)
        # the subscription: the first try waits for the certificate (503, SNS retries), then
        # the SubscribeURL is fetched
        conf = sns.confirmation(TOPIC)
        status, seen = sns.deliver(s.port, conf)
        assert status == 200 and seen[0] == 503, seen
        token = conf["Token"]
        deadline = time.monotonic() + 10 * SLOW
        while token not in sns.subscribe_gets and time.monotonic() < deadline:
            time.sleep(0.02)
        assert sns.subscribe_gets == [token]
        assert sns.cert_gets == 1  # kept: fetched once
        # a message, then its delivery event (SignatureVersion 1 and 2)
        _, _, body = s.post(okta_request())
        assert "error" not in body, body
        mid = eum.last(op="SendTextMessage")["message_id"]
        rid = request_of(s, mid)
        t0 = int(time.time() * 1000)
        st, _ = sns.deliver(s.port, sns.notification(TOPIC, eum_record(mid, "TEXT_SUCCESSFUL",
                                                                       final=False, ts=t0)))
        assert st == 200
        assert receipt_of(s, rid, "sent")["status"] == "sent"
        st, _ = sns.deliver(s.port, sns.notification(
            TOPIC, eum_record(mid, "TEXT_CARRIER_BLOCKED", ts=t0 + 10), version="2",
            subject="delivery"))
        assert st == 200
        got = receipt_of(s, rid, "blocked")
        assert (got["status"], got["code"]) == ("blocked", "CARRIER_BLOCKED")
        # an older final event does not overwrite the newer one
        st, _ = sns.deliver(s.port, sns.notification(TOPIC, eum_record(mid, "TEXT_DELIVERED",
                                                                       ts=t0 + 5)))
        assert st == 200
        # forged: a field changed after signing, a signature of another key
        msg = sns.notification(TOPIC, eum_record(mid, "TEXT_DELIVERED", ts=t0 + 20))
        msg["Message"] = msg["Message"].replace("TEXT_DELIVERED", "TEXT_SPAM")
        assert sns.deliver(s.port, msg)[0] == 403
        msg = sns.notification(TOPIC, eum_record(mid, "TEXT_DELIVERED", ts=t0 + 20))
        msg["Signature"] = msg["Signature"][:10] + ("A" if msg["Signature"][10] != "A" else "B") \
            + msg["Signature"][11:]
        assert sns.deliver(s.port, msg)[0] == 403
        # a topic not configured: refused even though correctly signed
        other = sns.notification("arn:aws:sns:us-east-1:123456789012:someone-else",
                                 eum_record(mid, "TEXT_DELIVERED", ts=t0 + 30))
        assert sns.deliver(s.port, other)[0] == 403
        # a certificate on a host not allowed: refused before anything is fetched
        for url in (f"https://127.0.0.2:{sns.port}/cert.pem", f"http://{sns.host}/cert.pem",
                    f"https://sns.us-east-1.amazonaws.com.evil.example/cert.pem"):
            bad = sns.notification(TOPIC, eum_record(mid, "TEXT_DELIVERED", ts=t0 + 40))
            bad["SigningCertURL"] = url
            sns.sign(bad)
            assert sns.deliver(s.port, bad)[0] == 403, url
        # malformed
        assert sns.deliver(s.port, {"Type": "Notification"}, raw="{not json")[0] == 400
        assert sns.deliver(s.port, sns.notification(TOPIC, {"hello": "world"}))[0] == 400
        assert sns.cert_gets == 1
        assert receipt_of(s, rid)["status"] == "blocked"
        assert metric(s, "telehook_receipts_total", provider="aws", result="queued") == 3
        assert metric(s, "telehook_receipts_total", provider="aws", result="bad_signature") == 2
        assert metric(s, "telehook_receipts_total", provider="aws", result="topic_refused") == 1
        assert metric(s, "telehook_receipts_total", provider="aws",
                      result="cert_host_refused") == 3
        assert metric(s, "telehook_receipts_total", provider="aws", result="cert_pending") == 1
        assert metric(s, "telehook_receipts_total", provider="aws",
                      result="subscription_confirmation") == 1
        assert metric(s, "telehook_receipts_final_total", provider="aws", country="US",
                      status="blocked") == 1
        assert wait_metric(s, 1, "telehook_receipts_store_total", result="stale") == 1
        no_number_logged(s)
        assert s.stop() == 0


def _at(ms):
    """An SNS Timestamp for unix milliseconds ms."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


def test_sns_old_messages_refused_as_replays(make_server, tmp_path):
    """A signed message is signed forever: one whose Timestamp is past SNS's hour of retries
    (or far ahead) is a replay, refused, and neither applied nor its SubscribeURL fetched."""
    with FakeEUM(region="us-east-1") as eum, FakeSNS(tmp_path) as sns:
        s = aws_server(make_server, eum, sns)
        _, _, body = s.post(okta_request())
        assert "error" not in body, body
        mid = eum.last(op="SendTextMessage")["message_id"]
        rid = request_of(s, mid)
        now = int(time.time() * 1000)
        st, _ = sns.deliver(s.port, sns.notification(TOPIC, eum_record(mid, "TEXT_SUCCESSFUL",
                                                                       final=False, ts=now)))
        assert st == 200
        assert receipt_of(s, rid, "sent")["status"] == "sent"
        refused = []
        for when in (now - 2 * 3600 * 1000, now - 30 * 86400 * 1000, now + 3600 * 1000):
            old = sns.notification(TOPIC, eum_record(mid, "TEXT_SPAM", ts=now + 1))
            old["Timestamp"] = _at(when)
            refused.append(sns.deliver(s.port, sns.sign(old))[0])
        conf = sns.confirmation(TOPIC)
        conf["Timestamp"] = _at(now - 2 * 3600 * 1000)
        refused.append(sns.deliver(s.port, sns.sign(conf))[0])
        assert refused == [403, 403, 403, 403]
        # within the hour: still taken (SNS's retries)
        late = sns.notification(TOPIC, eum_record(mid, "TEXT_DELIVERED", ts=now + 2))
        late["Timestamp"] = _at(now - 50 * 60 * 1000)
        assert sns.deliver(s.port, sns.sign(late))[0] == 200
        assert receipt_of(s, rid, "delivered")["status"] == "delivered"
        assert sns.subscribe_gets == []
        assert metric(s, "telehook_receipts_total", provider="aws",
                      result="timestamp_refused") == 4
        assert metric(s, "telehook_receipts_total", provider="aws", result="queued") == 2
        assert metric(s, "telehook_receipts_applied_total", provider="aws", status="spam") == 0
        no_number_logged(s)
        assert s.stop() == 0


def test_sns_bogus_certificate_urls_keep_the_good_one(make_server, tmp_path):
    """Messages naming certificate URLs that fail (404 on an allowed host: anyone can post
    them) do not push the certificate in use out of the cache: a real message after them is
    taken at once, its certificate fetched once."""
    with FakeEUM(region="us-east-1") as eum, FakeSNS(tmp_path) as sns:
        s = aws_server(make_server, eum, sns)
        _, _, body = s.post(okta_request())
        assert "error" not in body, body
        mid = eum.last(op="SendTextMessage")["message_id"]
        rid = request_of(s, mid)
        now = int(time.time() * 1000)
        st, seen = sns.deliver(s.port, sns.notification(TOPIC, eum_record(mid, "TEXT_SUCCESSFUL",
                                                                          final=False, ts=now)))
        assert (st, seen[0]) == (200, 503), seen
        for i in range(40):  # more than the cache holds; each fetch fails (404)
            bad = sns.notification(TOPIC, eum_record(mid, "TEXT_SPAM", ts=now + 1))
            bad["SigningCertURL"] = f"https://{sns.host}/bogus-{i}.pem"
            assert sns.deliver(s.port, sns.sign(bad), tries=1)[0] == 503
            time.sleep(0.01)  # its fetch fails before the next names another
        time.sleep(0.3)
        st, seen = sns.deliver(s.port, sns.notification(TOPIC, eum_record(mid, "TEXT_DELIVERED",
                                                                          ts=now + 2)), tries=1)
        assert (st, seen) == (200, [200])
        assert receipt_of(s, rid, "delivered")["status"] == "delivered"
        assert sns.cert_gets == 1
        assert s.stop() == 0


def test_eventbridge_events(make_server, tmp_path):
    secret = "eb-" + "x" * 29
    with FakeEUM(region="us-east-1") as eum, FakeSNS(tmp_path) as sns:
        s = aws_server(make_server, eum, sns, f"receipts.eventbridge_secret = {secret}")
        _, _, body = s.post(okta_request())
        assert "error" not in body, body
        mid = eum.last(op="SendTextMessage")["message_id"]
        rid = request_of(s, mid)
        event = {"version": "0", "id": "e-1", "detail-type": "Text Message Delivery Status Updated",
                 "source": "aws.sms-voice", "account": "123456789012",
                 "time": "2026-12-05T03:00:00Z", "region": "us-east-1", "resources": [],
                 "detail": eum_record(mid, "TEXT_DELIVERED")}
        h = {"Content-Type": "application/json", "X-Telehook-Receipts-Secret": secret}
        assert s.request("POST", "/v1/aws/events", json.dumps(event), h)[0] == 200
        assert receipt_of(s, rid, "delivered")["status"] == "delivered"
        bad = dict(h, **{"X-Telehook-Receipts-Secret": secret[:-1] + "y"})
        assert s.request("POST", "/v1/aws/events", json.dumps(event), bad)[0] == 401
        assert s.request("POST", "/v1/aws/events", json.dumps(event),
                         {"Content-Type": "application/json"})[0] == 401
        assert s.request("POST", "/v1/aws/events", json.dumps(dict(event, source="aws.ec2")),
                         h)[0] == 400
        no_number_logged(s)
        assert s.stop() == 0


def test_routes_off_unless_configured(make_server):
    s = make_server()
    for path in ("/v1/twilio/status", "/v1/aws/sns", "/v1/aws/events"):
        assert s.request("POST", path, "{}", {"Content-Type": "application/json"})[0] == 404, path
    assert s.stop() == 0
