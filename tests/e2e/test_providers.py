"""Real delivery end to end: AWS End User Messaging, Twilio and the webhook, each against a fake
that speaks the real wire format and verifies what the real service verifies (SigV4 recomputed
with botocore, Basic auth, form fields, HMAC signatures); routing, failover, circuit breaking,
deadlines, and where AWS credentials come from."""
import concurrent.futures
import json
import signal
import time

import pytest

from conftest import ES_NUMBER, SLOW, US_NUMBER, assert_okta_error, okta_request
from fakes import FakeCredsEndpoint, FakeEUM, FakeTwilio, FakeWebhook

GB_NUMBER = "+447400123456"
ORIGINATOR = "+12065550100"


@pytest.fixture
def webhook():
    with FakeWebhook() as f:
        yield f
        assert not f.errors, f.errors


def aws_config(eum, extra=""):
    return f"""
        provider.name = aws
        aws.region = {eum.region}
        aws.endpoint = {eum.url}
        aws.origination_identity = {ORIGINATOR}
        aws.configuration_set = otp-events
        {extra}"""


def aws_env(eum, cred=None):
    akid, secret, token = cred or eum.credential
    env = {"AWS_ACCESS_KEY_ID": akid, "AWS_SECRET_ACCESS_KEY": secret}
    if token:
        env["AWS_SESSION_TOKEN"] = token
    return env


def twilio_config(tw, extra=""):
    return f"""
        twilio.account_sid = {tw.account_sid}
        twilio.auth_token = {tw.auth_token}
        twilio.from = +12065550111
        twilio.base_url = {tw.url}
        {extra}"""


def answer_value(body):
    assert "error" not in body, body
    (cmd,) = body["commands"]
    (value,) = cmd["value"]
    return value


def delivery(server, request_id=None):
    """The newest delivery record (written off the hot path: waits for it)."""
    server.wait_rows("SELECT count(*) FROM deliveries", 1)
    cols = ("request_id", "outcome", "provider", "transaction_id", "error", "attempts")
    row = server.db_rows(f"SELECT {', '.join(cols)} FROM deliveries "
                         "ORDER BY created_ms DESC, rowid DESC LIMIT 1")[0]
    return dict(zip(cols, row))


def routes(server, *items):
    for channel, country, attempts in items:
        server.cli("routes", "set", channel, country, attempts)


# ---- AWS End User Messaging ------------------------------------------------------------------

def test_aws_sms_signed_and_complete(make_server, eum):
    s = make_server(aws_config(eum), env=aws_env(eum))
    status, _, body = s.post(okta_request(otp="482913"))
    assert status == 200
    v = answer_value(body)
    rec = eum.last()
    assert rec["valid"] and rec["sig_ok"], rec["reason"]
    assert rec["op"] == "SendTextMessage"
    p = rec["parsed"]
    assert p["DestinationPhoneNumber"] == US_NUMBER
    assert p["OriginationIdentity"] == ORIGINATOR
    assert p["MessageType"] == "TRANSACTIONAL"
    assert p["ConfigurationSetName"] == "otp-events"
    assert "482913" in p["MessageBody"]
    assert 250 <= p["TimeToLive"] <= 300  # from otpExpires (five minutes ahead)
    assert list(p["Context"]) == ["telehook_request_id"]
    assert v["provider"] == "aws"
    assert v["transactionId"] == rec["message_id"]
    assert v["transactionMetadata"].startswith("attempts=1;ms=")
    d = delivery(s)
    assert (d["outcome"], d["provider"], d["attempts"]) == ("SUCCESSFUL", "aws", 1)
    assert d["transaction_id"] == rec["message_id"]
    assert "482913" not in s.log_text()
    assert eum.credential[1] not in s.log_text()


def test_aws_voice_ssml_in_spanish(make_server, eum):
    s = make_server(aws_config(eum), env=aws_env(eum))
    status, _, body = s.post(okta_request(phone=ES_NUMBER, otp="123456", channel="Voice",
                                          locale="es-MX"))
    assert status == 200
    answer_value(body)
    rec = eum.last()
    assert rec["valid"], rec["reason"]
    assert rec["op"] == "SendVoiceMessage"
    p = rec["parsed"]
    assert p["MessageBodyTextType"] == "SSML"
    assert p["VoiceId"] == "LUPE"
    assert p["MessageBody"].startswith("<speak>") and "1, 2, 3, 4, 5, 6" in p["MessageBody"]


def test_aws_keep_alive_reuses_connections(make_server, eum):
    s = make_server(aws_config(eum, "server.threads = 1"), env=aws_env(eum))
    for _ in range(5):
        answer_value(s.post(okta_request())[2])
    ports = {r["client_port"] for r in eum.requests}
    assert len(ports) == 1, f"5 sequential sends used {len(ports)} connections"


def test_aws_session_token_from_environment(make_server):
    with FakeEUM(region="us-east-1", credentials=[("ASIAENVTOKEN0000001", "s3cr3t" * 6,
                                                   "FwoGZXIvYXdzEBYaD" + "x" * 300)]) as eum:
        s = make_server(aws_config(eum), env=aws_env(eum))
        answer_value(s.post(okta_request())[2])
        rec = eum.last()
        assert rec["valid"] and "x-amz-security-token" in rec["signed_headers"]


def test_aws_shared_credentials_file_with_profile(make_server, eum, tmp_path):
    akid, secret, _ = eum.credential
    creds = tmp_path / "credentials"
    creds.write_text(f"[default]\naws_access_key_id = AKIAWRONGWRONGWRONG\n"
                     f"aws_secret_access_key = wrong\n\n[ops]\naws_access_key_id = {akid}\n"
                     f"aws_secret_access_key = {secret}\n")
    cfg = tmp_path / "config"
    cfg.write_text(f"[profile ops]\nregion = {eum.region}\n")
    conf = aws_config(eum).replace(f"aws.region = {eum.region}", "")
    s = make_server(conf, env={"AWS_SHARED_CREDENTIALS_FILE": str(creds),
                               "AWS_CONFIG_FILE": str(cfg), "AWS_PROFILE": "ops"})
    answer_value(s.post(okta_request())[2])
    assert eum.last()["valid"], eum.last()["reason"]
    assert any(l.get("event") == "aws" and "shared-files" in l.get("msg", "") for l in s.logs())


def test_aws_container_credentials_with_token(make_server):
    with FakeCredsEndpoint(auth_token="Bearer pod-identity-token") as creds:
        with FakeEUM(region="us-east-1", credentials=[creds.credential]) as eum:
            s = make_server(aws_config(eum), env={
                "AWS_CONTAINER_CREDENTIALS_FULL_URI": creds.container_url,
                "AWS_CONTAINER_AUTHORIZATION_TOKEN": "Bearer pod-identity-token"})
            wait_ready(s)
            answer_value(s.post(okta_request())[2])
            rec = eum.last()
            assert rec["valid"], rec["reason"]
            assert "x-amz-security-token" in rec["signed_headers"]
            assert creds.count(kind="container", valid=True) == 1
            assert "pod-identity-token" not in s.log_text()


def wait_ready(s, timeout=10):
    deadline = time.monotonic() + timeout * SLOW
    while time.monotonic() < deadline:
        if s.request("GET", "/readyz")[0] == 200:
            return
        time.sleep(0.05)
    raise AssertionError("server never became ready")


def test_not_ready_until_container_credentials_arrive(make_server):
    with FakeCredsEndpoint() as creds:
        creds.script = ["500", "500"]  # the first two fetches fail (1 s, then 2 s back-off)
        with FakeEUM(region="us-east-1", credentials=[creds.credential]) as eum:
            s = make_server(aws_config(eum), env={
                "AWS_CONTAINER_CREDENTIALS_FULL_URI": creds.container_url})
            assert s.request("GET", "/readyz")[0] == 503
            wait_ready(s, timeout=10)
            answer_value(s.post(okta_request())[2])
            assert creds.count(kind="container") >= 3


def test_credential_refresh_never_stalls_requests(make_server):
    """The refresh starts before the old credentials expire; the endpoint hangs for 2 s; requests
    go on, signed with the old credentials, without waiting."""
    with FakeCredsEndpoint() as creds:
        creds.creds["expiration"] = 8  # seconds from each fetch: the refresh starts after ~4 s
        old = creds.credential
        with FakeEUM(region="us-east-1", credentials=[old]) as eum:
            s = make_server(aws_config(eum), env={
                "AWS_CONTAINER_CREDENTIALS_FULL_URI": creds.container_url})
            wait_ready(s)
            new = creds.rotate(expiration=3600)
            eum.credentials = [old, new]
            # The refresh hangs 2 s (telehook's fetch gives up after 2 s and retries 1 s later,
            # still before the old credentials expire).
            creds.script = [("delay", 2.0)]
            worst = 0.0
            t_end = time.monotonic() + 9 * SLOW
            while time.monotonic() < t_end and eum.count(akid=new[0]) < 3:
                t0 = time.monotonic()
                answer_value(s.post(okta_request())[2])
                worst = max(worst, time.monotonic() - t0)
                time.sleep(0.05)
            assert worst < 0.5 * SLOW, f"a request waited {worst:.2f} s during the refresh"
            used = {r["akid"] for r in eum.requests if r["valid"]}
            assert used == {old[0], new[0]}, "old credentials during the hang, new ones after"


# ---- Twilio ----------------------------------------------------------------------------------

def test_twilio_sms_with_api_key(make_server):
    with FakeTwilio(credentials=[("SK" + "0" * 32, "api-key-secret-value")]) as tw:
        s = make_server(f"""
            provider.name = twilio
            twilio.account_sid = {tw.account_sid}
            twilio.api_key_sid = {"SK" + "0" * 32}
            twilio.api_key_secret = api-key-secret-value
            twilio.messaging_service_sid = MG{"1" * 32}
            twilio.base_url = {tw.url}""")
        status, _, body = s.post(okta_request(otp="777111"))
        v = answer_value(body)
        rec = tw.last()
        assert rec["valid"], rec["reason"]
        assert rec["resource"] == "Messages"
        assert rec["form"]["To"] == US_NUMBER
        assert rec["form"]["MessagingServiceSid"] == "MG" + "1" * 32
        assert "From" not in rec["form"]
        assert "777111" in rec["form"]["Body"]
        assert v["provider"] == "twilio" and v["transactionId"] == rec["sid"]
        assert "api-key-secret-value" not in s.log_text()


def test_twilio_voice_twiml(make_server, twilio):
    s = make_server("provider.name = twilio\n" + twilio_config(twilio))
    answer_value(s.post(okta_request(otp="246810", channel="voice"))[2])
    rec = twilio.last()
    assert rec["valid"], rec["reason"]
    assert rec["resource"] == "Calls"
    assert rec["form"]["From"] == "+12065550111"
    (say,) = rec["says"]
    assert say["voice"] == "Polly.Joanna" and say["language"] == "en-US"
    assert "2, 4, 6, 8, 1, 0" in say["text"]
    assert "<speak" not in rec["form"]["Twiml"]


@pytest.mark.parametrize("action,failover", [("unsubscribed", False), ("invalid_number", False),
                                             ("throttle", True), ("500", True)])
def test_twilio_error_classes(make_server, twilio, webhook, action, failover):
    s = make_server(f"""
        provider.name = twilio
        webhook.url = {webhook.url}/send
        webhook.secret = {webhook.secret}
        {twilio_config(twilio)}""", start=False)
    routes(s, ("sms", "*", "twilio, webhook"))
    s.start()
    twilio.script = [action]
    status, _, body = s.post(okta_request())
    assert status == 200
    if failover:
        assert answer_value(body)["provider"] == "webhook"
        assert webhook.count(valid=True) == 1
    else:
        assert_okta_error(body)
        assert webhook.count() == 0
        d = delivery(s)
        assert d["outcome"] == "FAILED" and "twilio: error" in d["error"]


# ---- webhook ---------------------------------------------------------------------------------

def test_webhook_signed_json(make_server, webhook):
    s = make_server(f"""
        provider.name = webhook
        webhook.url = {webhook.url}/send
        webhook.secret = {webhook.secret}""")
    v = answer_value(s.post(okta_request(phone=GB_NUMBER, otp="135790"))[2])
    rec = webhook.last()
    assert rec["valid"] and rec["sig_ok"], rec["reason"]
    j = rec["json"]
    assert (j["to"], j["country"], j["channel"], j["language"]) == (GB_NUMBER, "GB", "sms", "en")
    assert "135790" in j["body"] and j["expires_at"].endswith("Z")
    assert v["transactionId"] == rec["id"]


# ---- routing and failover --------------------------------------------------------------------

def test_failover_from_failing_first_route(make_server, eum, twilio):
    s = make_server(aws_config(eum) + twilio_config(twilio), env=aws_env(eum), start=False)
    routes(s, ("sms", "US", "aws, twilio:+12065550199"))
    s.start()
    eum.script = ["500"]
    v = answer_value(s.post(okta_request())[2])
    assert v["provider"] == "twilio"
    assert v["transactionMetadata"].startswith("attempts=2;")
    assert twilio.last()["form"]["From"] == "+12065550199"
    d = delivery(s)
    assert d["attempts"] == 2 and "aws: InternalServerException" in d["error"]


def test_throttle_then_success_on_same_provider(make_server, eum):
    s = make_server(aws_config(eum), env=aws_env(eum), start=False)
    routes(s, ("*", "*", f"aws, aws:{ORIGINATOR}"))
    s.start()
    eum.script = ["throttle"]
    v = answer_value(s.post(okta_request())[2])
    assert v["provider"] == "aws" and v["transactionMetadata"].startswith("attempts=2;")
    assert [r["action"] for r in eum.requests] == ["throttle", "ok"]


@pytest.mark.parametrize("action", ["optout", "validation", "denied", "quota"])
def test_no_failover_on_permanent_errors(make_server, eum, twilio, action):
    s = make_server(aws_config(eum) + twilio_config(twilio), env=aws_env(eum), start=False)
    routes(s, ("sms", "*", "aws, twilio"))
    s.start()
    eum.script = [action]
    status, _, body = s.post(okta_request())
    assert status == 200 and "commands" not in body
    assert twilio.count() == 0
    d = delivery(s)
    assert d["outcome"] == "FAILED" and d["attempts"] == 1
    if action == "optout":
        assert "ConflictException DESTINATION_PHONE_NUMBER_OPTED_OUT" in d["error"]


def test_hanging_provider_still_answered_before_deadline(make_server, eum):
    s = make_server(aws_config(eum, "server.deadline_ms = 800"), env=aws_env(eum))
    eum.default = "hang"
    t0 = time.monotonic()
    status, _, body = s.post(okta_request())
    elapsed = time.monotonic() - t0
    assert status == 200 and "commands" not in body
    assert elapsed < 1.2 * SLOW, f"answered after {elapsed:.2f} s (deadline 0.8 s)"
    d = delivery(s)
    assert d["outcome"] in ("TIMEOUT", "FAILED") and "timeout" in d["error"]


def test_garbage_and_broken_answers_fail_over(make_server, eum, webhook):
    s = make_server(aws_config(eum) + f"""
        webhook.url = {webhook.url}/send
        webhook.secret = {webhook.secret}""", env=aws_env(eum), start=False)
    routes(s, ("sms", "*", "aws, webhook"))
    s.start()
    for action in ("close", "half", ("raw", 502, "<html>bad gateway</html>", {})):
        eum.script = [action]
        v = answer_value(s.post(okta_request())[2])
        assert v["provider"] == "webhook", action


def test_circuit_breaker_opens_and_closes(make_server, eum, twilio):
    s = make_server(aws_config(eum, """
        dispatch.breaker_failures = 2
        dispatch.breaker_seconds = 2""") + twilio_config(twilio), env=aws_env(eum), start=False)
    routes(s, ("sms", "*", "aws, twilio"))
    s.start()
    eum.default = "500"
    for _ in range(2):
        assert answer_value(s.post(okta_request())[2])["provider"] == "twilio"
    assert eum.count() == 2
    # open: aws is skipped, no request reaches it
    for _ in range(3):
        assert answer_value(s.post(okta_request())[2])["provider"] == "twilio"
    assert eum.count() == 2
    assert any(l.get("event") == "circuit_open" for l in s.logs())
    # after breaker_seconds aws is tried again, and serves
    eum.default = "ok"
    time.sleep(2.2)
    assert answer_value(s.post(okta_request())[2])["provider"] == "aws"
    assert eum.count() == 3
    assert any(l.get("event") == "circuit_closed" for l in s.logs())


def test_routes_imported_from_aws_guidance(make_server, eum, tmp_path):
    guidance = tmp_path / "originationIdentities.json"
    guidance.write_text(json.dumps({
        "US": "+1866XXXXXXX".replace("X", "5"),
        "GB": "phone-0123456789abcdef0123456789abcdef",
        "DE": "arn:aws:sms-voice:us-east-1:700000000000:sender-id/DESenderID/DE"}))
    s = make_server(aws_config(eum), env=aws_env(eum), start=False)
    r = s.cli("routes", "import-aws", str(guidance))
    assert "imported 3 countries" in r.stderr
    listed = json.loads(s.cli("routes", "list", "--json").stdout)
    assert {(r["channel"], r["country"], r["attempts"]) for r in listed} >= {
        ("voice", "GB", "aws:phone-0123456789abcdef0123456789abcdef"),
        ("sms", "GB", "aws:phone-0123456789abcdef0123456789abcdef")}
    s.start()
    answer_value(s.post(okta_request(phone=GB_NUMBER))[2])
    assert eum.last()["parsed"]["OriginationIdentity"] == "phone-0123456789abcdef0123456789abcdef"
    answer_value(s.post(okta_request(phone=ES_NUMBER))[2])  # no ES route: the default
    assert eum.last()["parsed"]["OriginationIdentity"] == ORIGINATOR


def test_routes_cli_refuses_bad_routes(make_server):
    s = make_server(start=False)
    for args in (("sms", "USA", "aws"), ("fax", "US", "aws"), ("sms", "US", "pigeon"),
                 ("sms", "US", "aws:bad<sender>")):
        r = s.cli("routes", "set", *args, check=False)
        assert r.returncode == 2 and "invalid route" in r.stderr, args
    r = s.cli("routes", "delete", "sms", "US", check=False)
    assert r.returncode == 1 and "no such route" in r.stderr


def test_route_to_unconfigured_provider_is_skipped(make_server):
    """A stored route through a provider that is not configured (only the outbox is) never
    keeps the server from starting: the attempt is skipped, logged and counted, and the route's
    other attempts, or the default provider, still deliver."""
    s = make_server(start=False)
    r = s.cli("routes", "set", "sms", "*", "twilio, outbox", check=False)
    assert r.returncode == 2 and "provider twilio is not configured" in r.stderr
    assert "account_sid" in r.stderr and "--force" in r.stderr
    assert json.loads(s.cli("routes", "list", "--json").stdout) == []  # nothing stored
    r = s.cli("routes", "set", "sms", "*", "twilio, outbox", "--force")
    assert "warning" in r.stderr and "twilio" in r.stderr
    s.cli("routes", "set", "voice", "*", "twilio", "--force")
    s.start()
    skipped = [l for l in s.logs() if l.get("event") == "route_skipped"]
    assert len(skipped) == 2 and all("account_sid" in l["msg"] for l in skipped), skipped
    v = answer_value(s.post(okta_request())[2])  # sms: the route's other attempt
    assert v["status"] == "SUCCESSFUL" and v["provider"] == "outbox"
    v = answer_value(s.post(okta_request(channel="voice"))[2])  # voice: the default provider
    assert v["status"] == "SUCCESSFUL" and v["provider"] == "outbox"
    _, _, metrics = s.request("GET", "/metrics")
    assert b"\ntelehook_routes_skipped 2\n" in metrics
    # a reload with such a route is not refused either: it is cut the same way
    s.cli("routes", "delete", "voice", "*")
    s.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 5 * SLOW
    while b"\ntelehook_routes_skipped 1\n" not in s.request("GET", "/metrics")[2]:
        assert time.monotonic() < deadline, s.log_text()
        time.sleep(0.02)
    assert answer_value(s.post(okta_request())[2])["provider"] == "outbox"
    assert s.stop() == 0


# ---- non-blocking ----------------------------------------------------------------------------

def test_200_concurrent_requests_with_slow_provider(make_server, eum):
    """Every send takes 300 ms: 200 concurrent Okta requests must overlap, not queue."""
    s = make_server(aws_config(eum, "server.max_connections = 1000"), env=aws_env(eum))
    answer_value(s.post(okta_request())[2])  # warm up
    eum.default = ("delay", 0.3)
    n = 200

    def one(i):
        return s.post(okta_request(otp=f"{100000 + i}"))

    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=n) as pool:
        results = list(pool.map(one, range(n)))
    wall = time.monotonic() - t0
    bad = [b for st, _, b in results if st != 200 or "commands" not in b]
    assert not bad, f"{len(bad)} failed, e.g. {bad[0]}; {s.db_rows('SELECT error FROM deliveries WHERE outcome != ? LIMIT 3', ('SUCCESSFUL',))}"
    assert eum.count(valid=True) == n + 1
    assert wall < 2.0 * SLOW, f"{n} requests took {wall:.2f} s"


def test_sighup_reloads_routes(make_server, eum, webhook):
    s = make_server(aws_config(eum) + f"""
        webhook.url = {webhook.url}/send
        webhook.secret = {webhook.secret}""", env=aws_env(eum))
    assert answer_value(s.post(okta_request())[2])["provider"] == "aws"
    routes(s, ("sms", "*", "webhook"))
    s.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 5 * SLOW
    while not any(l.get("event") == "reload" and "routes reloaded" in l.get("msg", "")
                  for l in s.logs()):
        assert time.monotonic() < deadline, s.log_text()
        time.sleep(0.02)
    assert answer_value(s.post(okta_request())[2])["provider"] == "webhook"


def test_aws_credentials_from_imds_v2(make_server):
    with FakeCredsEndpoint(role="telehook-node") as imds:
        with FakeEUM(region="us-east-1", credentials=[imds.credential]) as eum:
            s = make_server(aws_config(eum), env={
                "AWS_EC2_METADATA_DISABLED": "false",
                "AWS_EC2_METADATA_SERVICE_ENDPOINT": imds.url})
            wait_ready(s)
            answer_value(s.post(okta_request())[2])
            assert eum.last()["valid"], eum.last()["reason"]
            kinds = [r["kind"] for r in imds.requests]
            assert kinds[:3] == ["imds-token", "imds-role", "imds-creds"], kinds


def test_overload_answers_at_once(make_server, eum):
    """Past dispatch.max_in_flight, Okta is answered at once (it falls back to its own
    providers) instead of being queued past its deadline."""
    s = make_server(aws_config(eum, """
        server.threads = 1
        server.deadline_ms = 1500
        dispatch.max_in_flight = 2"""), env=aws_env(eum))
    eum.default = "hang"
    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
        held = [pool.submit(s.post, okta_request()) for _ in range(2)]
        deadline = time.monotonic() + 5 * SLOW
        while eum.in_flight < 2:  # both sends are now held by the provider
            assert time.monotonic() < deadline, "the provider never saw two sends"
            time.sleep(0.01)
        t0 = time.monotonic()
        status, _, body = s.post(okta_request())
        quick = time.monotonic() - t0
        assert status == 200
        assert_okta_error(body, reason="overloaded")
        assert quick < 0.5 * SLOW
        for f in held:  # the held ones are answered at their deadline
            assert "commands" not in f.result()[2]
    rows = s.db_rows("SELECT outcome FROM deliveries WHERE outcome = 'OVERLOAD'")
    assert len(rows) == 1


def test_open_circuit_without_alternative_is_still_tried(make_server, eum):
    s = make_server(aws_config(eum, """
        dispatch.breaker_failures = 2
        dispatch.breaker_seconds = 30"""), env=aws_env(eum))
    eum.default = "500"
    for _ in range(3):
        s.post(okta_request())
    assert any(l.get("event") == "circuit_open" for l in s.logs())
    eum.default = "ok"  # recovered well before 30 s: the only provider is still used
    assert answer_value(s.post(okta_request())[2])["provider"] == "aws"
    assert eum.count() == 4
