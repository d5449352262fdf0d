"""Tests OF the fake providers (tests/e2e/fakes.py): they must accept what the real services
accept (requests signed by botocore's own client, botocore's own credential providers) and reject
what the real services reject, so a broken fake cannot make telehook's e2e tests pass vacuously.
Needs no telehook binary."""
import base64
import hashlib
import hmac
import http.client
import json
import threading
import time
import urllib.parse
from datetime import datetime, timedelta, timezone
from unittest import mock

import botocore.session
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore import UNSIGNED
from botocore.config import Config
from botocore.credentials import ContainerProvider, Credentials, InstanceMetadataProvider
from botocore.exceptions import ClientError
from botocore.utils import InstanceMetadataFetcher

from fakes import (FakeCredsEndpoint, FakeEUM, FakeSTS, FakeTwilio, FakeWebhook, VOICE_IDS,
                   aws_error_code)

AKID, SECRET, TOKEN = "AKIDTELEHOOKTEST", "s3cr3t/KEY+example0123456789abcdefghijkl", "FwoGZXIvtok"
TEXT_TARGET = "PinpointSMSVoiceV2.SendTextMessage"
VOICE_TARGET = "PinpointSMSVoiceV2.SendVoiceMessage"
JSON10 = "application/x-amz-json-1.0"
GOOD_TEXT = {"DestinationPhoneNumber": "+12015550123", "MessageBody": "Your code is 482913",
             "MessageType": "TRANSACTIONAL", "TimeToLive": 300,
             "Context": {"request_id": "r-1"}}
GOOD_VOICE = {"DestinationPhoneNumber": "+12015550123", "OriginationIdentity": "+12065550152",
              "MessageBody": '<speak>Your code is <say-as interpret-as="digits">482913</say-as>'
                             "</speak>",
              "MessageBodyTextType": "SSML", "VoiceId": "JOANNA"}
_SESSION = botocore.session.get_session()


@pytest.fixture
def run():
    """Starts fakes; stops them at teardown and checks that no fake hit an internal bug."""
    started = []

    def start(fake):
        started.append(fake)
        return fake.start()

    yield start
    for f in started:
        f.stop()
    for f in started:
        assert not f.errors, f"{f.name} internal errors:\n" + "\n".join(f.errors)


# ---- helpers ---------------------------------------------------------------------------------
def http_req(fake, method, path, body=b"", headers=None, timeout=5):
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


def aws_sign(url, body, target=TEXT_TARGET, akid=AKID, secret=SECRET, token=None,
             region="us-east-1", service="sms-voice", when=None, headers=None):
    """Signs like the AWS SDK (botocore SigV4Auth.add_auth), optionally at a frozen time."""
    h = {"Content-Type": JSON10, "X-Amz-Target": target}
    h.update(headers or {})
    req = AWSRequest(method="POST", url=url, data=body, headers=h)
    auth = SigV4Auth(Credentials(akid, secret, token), service, region)
    if when is None:
        auth.add_auth(req)
    else:
        with mock.patch("botocore.auth.datetime") as dt:
            dt.datetime.utcnow.return_value = when.astimezone(timezone.utc).replace(tzinfo=None)
            auth.add_auth(req)
    return dict(req.headers.items())


def eum_post(fake, body, sign_body=None, sign_url=None, extra_after=None, drop=(), **kw):
    """POSTs `body` to FakeEUM signed over `sign_body` (default: the same bytes)."""
    if isinstance(body, dict):
        body = json.dumps(body).encode()
    headers = aws_sign(sign_url or fake.url + "/", body if sign_body is None else sign_body,
                       **kw)
    for k in drop:
        headers.pop(k, None)
    headers.update(extra_after or {})
    status, rh, data = http_req(fake, "POST", "/", body, headers)
    return status, rh, (json.loads(data) if data else None)


def eum_client(fake, akid=AKID, secret=SECRET, token=None, region="us-east-1", validate=True):
    return _SESSION.create_client(
        "pinpoint-sms-voice-v2", region_name=region, endpoint_url=fake.url,
        aws_access_key_id=akid, aws_secret_access_key=secret, aws_session_token=token,
        config=Config(retries={"total_max_attempts": 1}, connect_timeout=2, read_timeout=5,
                      parameter_validation=validate))


def assert_aws_error(status, headers, body, want_status, want_type):
    assert status == want_status, (status, body)
    assert aws_error_code(body["__type"]) == want_type, body
    assert aws_error_code(headers["x-amzn-errortype"]) == want_type
    assert headers["content-type"] == JSON10
    assert headers.get("x-amzn-requestid")


def client_error(call):
    with pytest.raises(ClientError) as ei:
        call()
    return ei.value.response


# ---- FakeEUM: acceptance -----------------------------------------------------------------------
def test_eum_accepts_botocore_client_with_session_token(run):
    fake = run(FakeEUM(credentials=[(AKID, SECRET, TOKEN)]))
    c = eum_client(fake, token=TOKEN)
    r1 = c.send_text_message(**GOOD_TEXT)
    r2 = c.send_voice_message(**GOOD_VOICE)
    recs = fake.matching(valid=True)
    assert [r["op"] for r in recs] == ["SendTextMessage", "SendVoiceMessage"]
    assert [r["message_id"] for r in recs] == [r1["MessageId"], r2["MessageId"]]
    assert all(r["sig_ok"] and r["sent"] and r["status"] == 200 for r in recs)
    assert "x-amz-security-token" in recs[0]["signed_headers"]
    assert recs[0]["json"] == GOOD_TEXT and recs[1]["ssml"] == "speak"
    assert r1["ResponseMetadata"]["HTTPHeaders"]["content-type"] == JSON10
    assert fake.count(sig_ok=False) == 0


def test_eum_accepts_static_key_and_keeps_connection_alive(run):
    fake = run(FakeEUM(region="eu-west-1", credentials=[(AKID, SECRET, None)]))
    c = eum_client(fake, region="eu-west-1")
    for _ in range(3):
        c.send_text_message(DestinationPhoneNumber="+34612345678", MessageBody="x" * 1600)
    ports = {r["client_port"] for r in fake.requests}
    assert fake.count(valid=True) == 3 and len(ports) == 1  # botocore reused the connection


def test_eum_voice_ids_come_from_the_model():
    voices = list(VOICE_IDS)
    assert len(voices) == 59 and "JOANNA" in VOICE_IDS and "MATTHEW" in VOICE_IDS
    model = _SESSION.get_service_model("pinpoint-sms-voice-v2")
    assert voices == model.operation_model("SendVoiceMessage").input_shape.members["VoiceId"].enum


# Derived vector (shared/vectors/sigv4-derived, signed by botocore with the AWS suite key).
VEC_BODY = (b'{"DestinationPhoneNumber":"+14255550156","OriginationIdentity":"+12065550152",'
            b'"MessageBody":"Your code is 123456","MessageType":"TRANSACTIONAL",'
            b'"ConfigurationSetName":"otp","Context":{"request_id":"r-1"},"TimeToLive":300}')
VEC_AUTH = ("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/sms-voice/aws4_request, "
            "SignedHeaders=content-type;host;x-amz-date;x-amz-target, "
            "Signature=825f3d6536c47cd432d6811223aa16f78b52295b0b26927b7f0270dcef62b9df")


@pytest.mark.parametrize("flip", [False, True])
def test_eum_known_answer_vector(run, flip):
    fake = FakeEUM(credentials=[("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", None)])
    fake.clock = lambda: datetime(2015, 8, 30, 12, 36, tzinfo=timezone.utc).timestamp() + 30
    fake.check_host = False
    run(fake)
    auth = VEC_AUTH[:-1] + ("0" if VEC_AUTH[-1] != "0" else "1") if flip else VEC_AUTH
    status, _, data = http_req(fake, "POST", "/", VEC_BODY, {
        "Host": "sms-voice.us-east-1.amazonaws.com", "Content-Type": JSON10,
        "X-Amz-Target": TEXT_TARGET, "X-Amz-Date": "20150830T123600Z", "Authorization": auth})
    if flip:
        assert status == 403 and aws_error_code(json.loads(data)["__type"]) == \
            "InvalidSignatureException"
        assert fake.last()["sig_ok"] is False
    else:
        assert status == 200, data
        assert fake.last()["canonical_request"].endswith(hashlib.sha256(VEC_BODY).hexdigest())


# ---- FakeEUM: signature rejections -------------------------------------------------------------
def test_eum_rejects_wrong_secret(run):
    fake = run(FakeEUM(credentials=[(AKID, SECRET, None)]))
    err = client_error(lambda: eum_client(fake, secret=SECRET + "x").send_text_message(
        **GOOD_TEXT))
    assert err["Error"]["Code"] == "InvalidSignatureException"
    assert err["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert err["Error"]["Message"].startswith("The request signature we calculated does not match")
    rec = fake.last()
    assert rec["sig_ok"] is False and not rec["valid"] and not rec["sent"] and "mismatch" in \
        rec["reason"]


def test_eum_rejects_body_tampered_after_signing(run):
    fake = run(FakeEUM(credentials=[(AKID, SECRET, None)]))
    good = json.dumps(GOOD_TEXT).encode()
    evil = good.replace(b"482913", b"000000")
    assert len(evil) == len(good)
    status, h, body = eum_post(fake, evil, sign_body=good)
    assert_aws_error(status, h, body, 403, "InvalidSignatureException")
    assert eum_post(fake, good)[0] == 200


def test_eum_rejects_unknown_key_and_rotated_key(run):
    fake = run(FakeEUM(credentials=[(AKID, SECRET, None)]))
    err = client_error(lambda: eum_client(fake, akid="AKIDUNKNOWN").send_text_message(
        **GOOD_TEXT))
    assert err["Error"]["Code"] == "UnrecognizedClientException"
    assert err["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert "unknown access key" in fake.last()["reason"]
    fake.credentials = [("AKIDNEW", "newsecret", None)]  # rotation
    status, h, body = eum_post(fake, GOOD_TEXT)
    assert_aws_error(status, h, body, 400, "UnrecognizedClientException")
    assert eum_post(fake, GOOD_TEXT, akid="AKIDNEW", secret="newsecret")[0] == 200


def test_eum_session_token_rules(run):
    fake = run(FakeEUM(credentials=[(AKID, SECRET, TOKEN)]))
    # signed without the token header
    err = client_error(lambda: eum_client(fake).send_text_message(**GOOD_TEXT))
    assert err["Error"]["Code"] == "UnrecognizedClientException"
    assert err["Error"]["Message"] == "The security token included in the request is invalid."
    # signed with a different token
    status, h, body = eum_post(fake, GOOD_TEXT, token="other")
    assert_aws_error(status, h, body, 400, "UnrecognizedClientException")
    # the right token, but added after signing (not a SignedHeader)
    status, h, body = eum_post(fake, GOOD_TEXT, extra_after={"X-Amz-Security-Token": TOKEN})
    assert_aws_error(status, h, body, 400, "InvalidSignatureException")
    assert "x-amz-security-token" in body["message"]
    assert eum_post(fake, GOOD_TEXT, token=TOKEN)[0] == 200
    # a token sent for a static credential is refused too
    fake.credentials = [(AKID, SECRET, None)]
    status, h, body = eum_post(fake, GOOD_TEXT, token=TOKEN)
    assert_aws_error(status, h, body, 400, "UnrecognizedClientException")
    assert fake.count(valid=True) == 1


def test_eum_missing_authorization(run):
    fake = run(FakeEUM(credentials=[(AKID, SECRET, None)]))
    status, h, body = eum_post(fake, GOOD_TEXT, drop=("Authorization",))
    assert_aws_error(status, h, body, 400, "MissingAuthenticationTokenException")
    assert body["message"] == "Missing Authentication Token"
    assert fake.last()["sig_ok"] is False


@pytest.mark.parametrize("mangle", [
    lambda a: a.replace("AWS4-HMAC-SHA256", "AWS4-HMAC-SHA1"),
    lambda a: a.split(", Signature=")[0],
    lambda a: a.replace("Credential=AKIDTELEHOOKTEST/", "Credential="),
    lambda a: a.replace("SignedHeaders", "Headers"),
    lambda a: a[:-4],
    lambda a: a[:-64] + a[-64:].upper(),
    lambda a: a + ", Extra=1",
])
def test_eum_malformed_authorization(run, mangle):
    fake = run(FakeEUM(credentials=[(AKID, SECRET, None)]))
    body = json.dumps(GOOD_TEXT).encode()
    headers = aws_sign(fake.url + "/", body)
    headers["Authorization"] = mangle(headers["Authorization"])
    status, h, data = http_req(fake, "POST", "/", body, headers)
    assert status == 400
    assert aws_error_code(json.loads(data)["__type"]) == "IncompleteSignatureException"
    assert fake.last()["sig_ok"] is False


def test_eum_missing_amz_date_is_incomplete(run):
    fake = run(FakeEUM(credentials=[(AKID, SECRET, None)]))
    status, h, body = eum_post(fake, GOOD_TEXT, drop=("X-Amz-Date",))
    assert_aws_error(status, h, body, 400, "IncompleteSignatureException")


@pytest.mark.parametrize("minutes,ok,words", [
    (-10, False, "Signature expired"), (+10, False, "Signature not yet current"),
    (-4, True, None), (+4, True, None)])
def test_eum_clock_window(run, minutes, ok, words):
    fake = run(FakeEUM(credentials=[(AKID, SECRET, None)]))
    when = datetime.now(timezone.utc) + timedelta(minutes=minutes)
    status, h, body = eum_post(fake, GOOD_TEXT, when=when)
    if ok:
        assert status == 200, body
    else:
        assert_aws_error(status, h, body, 400, "InvalidSignatureException")
        assert body["message"].startswith(words)


def test_eum_fake_clock_skew(run):
    fake = run(FakeEUM(credentials=[(AKID, SECRET, None)]))
    fake.clock = lambda: time.time() + 3600  # the "AWS" clock is an hour ahead
    status, h, body = eum_post(fake, GOOD_TEXT)
    assert status == 400 and body["message"].startswith("Signature expired")


def test_eum_wrong_scope(run):
    fake = run(FakeEUM(region="us-east-1", credentials=[(AKID, SECRET, None)]))
    err = client_error(lambda: eum_client(fake, region="us-west-2").send_text_message(
        **GOOD_TEXT))
    assert err["Error"]["Code"] == "InvalidSignatureException"
    assert "region" in err["Error"]["Message"]
    status, h, body = eum_post(fake, GOOD_TEXT, service="sms")
    assert_aws_error(status, h, body, 400, "InvalidSignatureException")
    assert "sms-voice" in body["message"]
    # scope date differing from X-Amz-Date
    payload = json.dumps(GOOD_TEXT).encode()
    headers = aws_sign(fake.url + "/", payload)
    d = headers["X-Amz-Date"][:8]
    other = (datetime.strptime(d, "%Y%m%d") - timedelta(days=1)).strftime("%Y%m%d")
    headers["Authorization"] = headers["Authorization"].replace(f"/{d}/", f"/{other}/")
    status, h, data = http_req(fake, "POST", "/", payload, headers)
    assert status == 400 and "Date in Credential scope" in json.loads(data)["message"]


def test_eum_signed_host_must_carry_the_port(run):
    fake = run(FakeEUM(credentials=[(AKID, SECRET, None)]))
    status, h, body = eum_post(fake, GOOD_TEXT, sign_url="http://127.0.0.1/")
    assert_aws_error(status, h, body, 403, "InvalidSignatureException")


def test_eum_host_must_be_this_endpoint(run):
    """A request consistently signed for another Host is refused unless check_host is off."""
    fake = run(FakeEUM(credentials=[(AKID, SECRET, None)]))
    other = f"localhost:{fake.port}"
    payload = json.dumps(GOOD_TEXT).encode()
    headers = aws_sign(f"http://{other}/", payload)
    headers["Host"] = other
    status, h, data = http_req(fake, "POST", "/", payload, headers)
    assert status == 403 and "Host" in fake.last()["reason"]
    fake.check_host = False
    assert http_req(fake, "POST", "/", payload, headers)[0] == 200


@pytest.mark.parametrize("late", ["Content-Type", "X-Amz-Target", "X-Amz-Meta-Extra"])
def test_eum_required_headers_must_be_signed(run, late):
    """Headers added after signing (so absent from SignedHeaders) are refused."""
    fake = run(FakeEUM(credentials=[(AKID, SECRET, None)]))
    payload = json.dumps(GOOD_TEXT).encode()
    base = {"Content-Type": JSON10, "X-Amz-Target": TEXT_TARGET}
    value = base.pop(late, "v")
    r = AWSRequest(method="POST", url=fake.url + "/", data=payload, headers=base)
    SigV4Auth(Credentials(AKID, SECRET), "sms-voice", "us-east-1").add_auth(r)
    headers = dict(r.headers.items())
    headers[late] = value
    status, h, data = http_req(fake, "POST", "/", payload, headers)
    body = json.loads(data)
    assert status == 400 and aws_error_code(body["__type"]) == "InvalidSignatureException"
    assert late.lower() in body["message"]


def test_eum_content_sha256_must_match_payload(run):
    fake = run(FakeEUM(credentials=[(AKID, SECRET, None)]))
    payload = json.dumps(GOOD_TEXT).encode()
    # botocore's canonical request trusts a signed x-amz-content-sha256: the fake must not
    status, h, body = eum_post(fake, payload,
                               headers={"X-Amz-Content-SHA256": hashlib.sha256(b"x").hexdigest()})
    assert_aws_error(status, h, body, 400, "InvalidSignatureException")
    status, _, _ = eum_post(fake, payload,
                            headers={"X-Amz-Content-SHA256": hashlib.sha256(payload).hexdigest()})
    assert status == 200


# ---- FakeEUM: operation and body validation ----------------------------------------------------
@pytest.mark.parametrize("headers", [
    {"X-Amz-Target": "PinpointSMSVoiceV2.SendMediaMessage"},
    {"X-Amz-Target": "PinpointSMSVoice.SendTextMessage"},
    {"Content-Type": "application/json"},
    {"Content-Type": "application/x-amz-json-1.1"},
])
def test_eum_unknown_operation(run, headers):
    fake = run(FakeEUM(credentials=[(AKID, SECRET, None)]))
    status, h, body = eum_post(fake, GOOD_TEXT, headers=headers)
    assert_aws_error(status, h, body, 400, "UnknownOperationException")
    assert fake.last()["sig_ok"] is True and not fake.last()["valid"]


TEXT_BAD = [
    ({k: v for k, v in GOOD_TEXT.items() if k != "DestinationPhoneNumber"},
     "DestinationPhoneNumber"),
    (dict(GOOD_TEXT, DestinationPhoneNumber="12015550123x"), "DestinationPhoneNumber"),
    (dict(GOOD_TEXT, DestinationPhoneNumber="+0201555"), "DestinationPhoneNumber"),
    (dict(GOOD_TEXT, DestinationPhoneNumber=12015550123), "DestinationPhoneNumber"),
    ({k: v for k, v in GOOD_TEXT.items() if k != "MessageBody"}, "MessageBody"),
    (dict(GOOD_TEXT, MessageBody="x" * 1601), "MessageBody"),
    (dict(GOOD_TEXT, MessageBody="   "), "MessageBody"),
    (dict(GOOD_TEXT, MessageType="OTP"), "MessageType"),
    (dict(GOOD_TEXT, TimeToLive=4), "TimeToLive"),
    (dict(GOOD_TEXT, TimeToLive=259201), "TimeToLive"),
    (dict(GOOD_TEXT, TimeToLive="300"), "TimeToLive"),
    (dict(GOOD_TEXT, TimeToLive=300.0), "TimeToLive"),
    (dict(GOOD_TEXT, Context={str(i): "v" for i in range(6)}), "Context"),
    (dict(GOOD_TEXT, Context={"k": 1}), "Context"),
    (dict(GOOD_TEXT, Context={"k": " padded"}), "Context"),
    (dict(GOOD_TEXT, Contxt={"k": "v"}), "Contxt"),
    (dict(GOOD_TEXT, VoiceId="JOANNA"), "VoiceId"),
]
VOICE_BAD = [
    ({k: v for k, v in GOOD_VOICE.items() if k != "OriginationIdentity"}, "OriginationIdentity"),
    ({k: v for k, v in GOOD_VOICE.items() if k != "MessageBodyTextType"}, "MessageBodyTextType"),
    (dict(GOOD_VOICE, MessageBodyTextType="XML"), "MessageBodyTextType"),
    (dict(GOOD_VOICE, VoiceId="BOB"), "VoiceId"),
    (dict(GOOD_VOICE, VoiceId="Joanna"), "VoiceId"),
    (dict(GOOD_VOICE, MessageBody="<speak>unclosed"), "MessageBody"),
    (dict(GOOD_VOICE, MessageBody="<say>hi</say>"), "MessageBody"),
    (dict(GOOD_VOICE, MessageBodyTextType="TEXT", MessageBody="x" * 3001), "MessageBody"),
    (dict(GOOD_VOICE, MessageType="TRANSACTIONAL"), "MessageType"),
]


@pytest.mark.parametrize("target,body,field",
                         [(TEXT_TARGET, b, f) for b, f in TEXT_BAD] +
                         [(VOICE_TARGET, b, f) for b, f in VOICE_BAD])
def test_eum_field_validation(run, target, body, field):
    fake = run(FakeEUM(credentials=[(AKID, SECRET, None)]))
    status, h, resp = eum_post(fake, body, target=target)
    assert_aws_error(status, h, resp, 400, "ValidationException")
    assert resp["Reason"] == "FIELD_VALIDATION_FAILED" and "Message" in resp
    assert field in [f["Name"] for f in resp["Fields"]]
    rec = fake.last()
    assert rec["sig_ok"] and not rec["valid"] and field in rec["reason"] and not rec["sent"]


@pytest.mark.parametrize("raw", [b"", b"not json", b"[1,2]", b'{"a":1,"a":2}', b'{"x":NaN}',
                                 b'\xff{}'])
def test_eum_unparsable_body(run, raw):
    fake = run(FakeEUM(credentials=[(AKID, SECRET, None)]))
    status, h, resp = eum_post(fake, raw)
    assert_aws_error(status, h, resp, 400, "ValidationException")
    assert resp["Reason"] == "CANNOT_PARSE"


def test_eum_accepts_boundary_values(run):
    fake = run(FakeEUM(credentials=[(AKID, SECRET, None)]))
    ok = [dict(GOOD_TEXT, MessageBody="é" * 1600, TimeToLive=5,
               Context={f"k{i}": "v" for i in range(5)}, DryRun=True),
          {"DestinationPhoneNumber": "12015550123", "MessageBody": "x"}]
    for body in ok:
        assert eum_post(fake, body)[0] == 200
    for voice in ("MATTHEW", "ZHIYU"):
        body = dict(GOOD_VOICE, VoiceId=voice, MessageBodyTextType="TEXT",
                    MessageBody="Your code is 4 8 2 9 1 3")
        assert eum_post(fake, body, target=VOICE_TARGET)[0] == 200


# ---- FakeEUM: scripted errors ------------------------------------------------------------------
@pytest.mark.parametrize("action,status,etype,reason", [
    ("throttle", 400, "ThrottlingException", None),
    ("500", 500, "InternalServerException", None),
    ("validation", 400, "ValidationException", "INVALID_PARAMETER"),
    ("optout", 400, "ConflictException", "DESTINATION_PHONE_NUMBER_OPTED_OUT"),
    ("denied", 400, "AccessDeniedException", "ACCOUNT_DISABLED"),
    ("quota", 400, "ServiceQuotaExceededException", "MONTHLY_SPEND_LIMIT_REACHED_FOR_TEXT"),
    ("notfound", 400, "ResourceNotFoundException", None),
])
def test_eum_error_actions(run, action, status, etype, reason):
    fake = run(FakeEUM(credentials=[(AKID, SECRET, None)]))
    fake.script.append(action)
    st, h, body = eum_post(fake, GOOD_TEXT)
    assert_aws_error(st, h, body, status, etype)
    assert body["__type"] == f"com.amazonaws.pinpointsmsvoicev2#{etype}"
    assert h["x-amzn-errortype"].startswith(etype + ":http")
    assert "Message" in body and "message" not in body
    if reason:
        assert body["Reason"] == reason
    rec = fake.last()
    assert rec["valid"] and not rec["sent"] and rec["message_id"] is None and rec["error"] == etype
    # the script is consumed: the next request succeeds (default "ok")
    assert eum_post(fake, GOOD_TEXT)[0] == 200
    # and botocore (the reference client) classifies the error the same way
    fake.script.append(action)
    err = client_error(lambda: eum_client(fake).send_text_message(**GOOD_TEXT))
    assert err["Error"]["Code"] == etype
    assert err["ResponseMetadata"]["HTTPStatusCode"] == status


def test_eum_rejection_wins_over_scripted_error_and_consumes_it(run):
    fake = run(FakeEUM(credentials=[(AKID, SECRET, None)]))
    fake.script.extend(["throttle", "500"])
    status, h, body = eum_post(fake, GOOD_TEXT, secret="wrong")
    assert_aws_error(status, h, body, 403, "InvalidSignatureException")
    status, h, body = eum_post(fake, GOOD_TEXT)
    assert_aws_error(status, h, body, 500, "InternalServerException")
    assert body["RequestId"]
    assert [r["action"] for r in fake.requests] == ["throttle", "500"]
    assert fake.script == []


def test_eum_voice_quota_reason(run):
    fake = run(FakeEUM(credentials=[(AKID, SECRET, None)]))
    fake.default = "quota"
    status, h, body = eum_post(fake, GOOD_VOICE, target=VOICE_TARGET)
    assert body["Reason"] == "MONTHLY_SPEND_LIMIT_REACHED_FOR_VOICE"
    assert fake.count(op="SendVoiceMessage", error="ServiceQuotaExceededException") == 1


# ---- transport actions, common to every fake ---------------------------------------------------
def _good(fake):
    """(method, path, headers, body) of a request the fake accepts."""
    if isinstance(fake, FakeEUM):
        body = json.dumps(GOOD_TEXT).encode()
        return "POST", "/", aws_sign(fake.url + "/", body), body
    if isinstance(fake, FakeTwilio):
        body = urllib.parse.urlencode({"To": "+12015550123", "From": "+12065550152",
                                       "Body": "Your code is 482913"}).encode()
        return "POST", f"/2010-04-01/Accounts/{fake.account_sid}/Messages.json", \
            {"Authorization": basic(fake.account_sid, fake.auth_token),
             "Content-Type": "application/x-www-form-urlencoded"}, body
    if isinstance(fake, FakeCredsEndpoint):
        return "GET", fake.path, {"Authorization": fake.auth_token or "x"}, b""
    body = json.dumps({"to": "+12015550123", "otp": "482913"}).encode()
    return "POST", "/hook", {"Content-Type": "application/json",
                             "X-Telehook-Signature": wh_sig(fake.secret, body)}, body


FAKES = [lambda: FakeEUM(credentials=[(AKID, SECRET, None)]), FakeTwilio,
         lambda: FakeCredsEndpoint(auth_token="tok-1"), FakeWebhook]
FAKE_IDS = ["eum", "twilio", "creds", "webhook"]


def send_good(fake, timeout=5, conn=None):
    method, path, headers, body = _good(fake)
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", fake.port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        if own:
            conn.close()


@pytest.mark.parametrize("make", FAKES, ids=FAKE_IDS)
def test_good_request_script_and_default(run, make):
    fake = run(make())
    fake.script.extend(["ok", ("raw", 418, {"teapot": True}, {"X-Test": "1"})])
    fake.default = "garbage"
    st1, _, _ = send_good(fake)
    st2, h2, b2 = send_good(fake)
    st3, h3, b3 = send_good(fake)
    assert st1 in (200, 201) and fake.requests[0]["valid"] and fake.requests[0]["sent"]
    assert (st2, json.loads(b2), h2["x-test"]) == (418, {"teapot": True}, "1")
    assert st3 == 200 and b3.startswith(b"<html>")
    with pytest.raises(ValueError):
        json.loads(b3)
    assert [r["action"] for r in fake.requests] == ["ok", fake.requests[1]["action"], "garbage"]
    assert fake.count(valid=True) == 3 and fake.count(status=lambda s: s == 418) == 1
    assert all(isinstance(r["headers"], dict) and r["time"] > 0 for r in fake.requests)


@pytest.mark.parametrize("make", FAKES, ids=FAKE_IDS)
def test_keep_alive(run, make):
    fake = run(make())
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=5)
    try:
        for _ in range(3):
            st, h, _ = send_good(fake, conn=conn)
            assert st in (200, 201) and "content-length" in h
    finally:
        conn.close()
    assert len({r["client_port"] for r in fake.requests}) == 1


@pytest.mark.parametrize("make", FAKES, ids=FAKE_IDS)
def test_hang_released_by_stop(make):
    fake = make().start()
    fake.script.append("hang")
    result = {}

    def client():
        try:
            result["resp"] = send_good(fake, timeout=10)
        except Exception as e:  # connection closed without a response
            result["exc"] = e

    t = threading.Thread(target=client)
    t.start()
    assert fake.wait_for(1, timeout=5) == 1
    time.sleep(0.05)
    assert t.is_alive()  # still hanging
    t0 = time.monotonic()
    fake.stop()
    assert time.monotonic() - t0 < 1.0
    t.join(2)
    assert not t.is_alive() and isinstance(result.get("exc"), (http.client.HTTPException,
                                                               ConnectionError))
    assert fake.in_flight == 0  # the hanging handler itself was released, not just the socket
    assert fake.requests[0]["status"] is None and not fake.errors


@pytest.mark.parametrize("make", FAKES, ids=FAKE_IDS)
def test_timed_hang_close_half_delay(run, make):
    fake = run(make())
    fake.script.extend([("hang", 0.2), "close", "half", ("delay", 0.3)])
    t0 = time.monotonic()
    with pytest.raises(http.client.RemoteDisconnected):
        send_good(fake)
    assert 0.2 <= time.monotonic() - t0 < 2
    with pytest.raises(http.client.RemoteDisconnected):
        send_good(fake)
    with pytest.raises(http.client.IncompleteRead):
        send_good(fake)
    t0 = time.monotonic()
    st, _, _ = send_good(fake)
    assert st in (200, 201) and time.monotonic() - t0 >= 0.3
    assert [r["status"] is None for r in fake.requests] == [True, True, False, False]
    assert fake.requests[2]["partial"]


def test_stop_with_idle_keepalive_and_delay_is_prompt():
    fake = FakeWebhook().start()
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=5)
    send_good(fake, conn=conn)  # leaves an idle kept-alive connection
    fake.script.append(("delay", 30))
    t = threading.Thread(target=lambda: pytest.raises(Exception, send_good, fake))
    t.start()
    fake.wait_for(2, timeout=5)
    t0 = time.monotonic()
    fake.stop()
    fake.stop()  # idempotent
    assert time.monotonic() - t0 < 1.0
    t.join(2)
    assert not t.is_alive()
    conn.close()


def test_body_and_record_caps(run):
    fake = FakeWebhook()
    fake.max_body = 100
    fake.max_requests = 3
    run(fake)
    st, _, _ = http_req(fake, "POST", "/hook", b"x" * 101, {"Content-Type": "application/json"})
    assert st == 413 and "exceeds" in fake.last()["reason"]
    for _ in range(5):
        send_good(fake)
    assert len(fake.requests) == 3 and fake.requests[-1]["seq"] == 6
    st, _, _ = http_req(fake, "POST", "/hook", b"{}", {"Transfer-Encoding": "chunked"})
    assert st == 411


# ---- FakeTwilio --------------------------------------------------------------------------------
def basic(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def tw_post(fake, resource, fields, user=None, password=None, sid=None, ctype=None, raw=None):
    body = raw if raw is not None else urllib.parse.urlencode(fields).encode()
    headers = {"Content-Type": ctype or "application/x-www-form-urlencoded"}
    if user is not False:
        headers["Authorization"] = basic(user or fake.account_sid, password or fake.auth_token)
    status, h, data = http_req(
        fake, "POST", f"/2010-04-01/Accounts/{sid or fake.account_sid}/{resource}.json",
        body, headers)
    return status, h, json.loads(data)


SMS = {"To": "+12015550123", "From": "+12065550152", "Body": "Your code is 482913"}
TWIML = ('<Response><Say voice="Polly.Joanna" language="en-US" loop="2">Your code is '
         '4 8 2 9 1 3.</Say></Response>')
CALL = {"To": "+12015550123", "From": "+12065550152", "Twiml": TWIML}


def test_twilio_accepts_message_and_call(run):
    fake = run(FakeTwilio())
    st, h, msg = tw_post(fake, "Messages", SMS)
    assert st == 201 and h["content-type"].startswith("application/json")
    assert msg["sid"].startswith("SM") and len(msg["sid"]) == 34 and msg["status"] == "queued"
    assert (msg["to"], msg["from"], msg["body"], msg["account_sid"]) == \
        (SMS["To"], SMS["From"], SMS["Body"], fake.account_sid)
    mg = "MG" + "ab" * 16
    st, _, msg2 = tw_post(fake, "Messages", {"To": SMS["To"], "MessagingServiceSid": mg,
                                             "Body": "hi"})
    assert st == 201 and msg2["status"] == "accepted" and msg2["messaging_service_sid"] == mg
    st, _, call = tw_post(fake, "Calls", CALL)
    assert st == 201 and call["sid"].startswith("CA") and call["status"] == "queued"
    assert fake.last()["says"] == [{"voice": "Polly.Joanna", "language": "en-US", "loop": 2,
                                    "text": "Your code is 4 8 2 9 1 3."}]
    assert [r["sid"] for r in fake.requests] == [msg["sid"], msg2["sid"], call["sid"]]
    assert fake.count(resource="Messages", sent=True) == 2
    assert fake.requests[0]["form"] == SMS


def test_twilio_api_key_credentials(run):
    acct = "AC" + "0123456789abcdef" * 2
    fake = run(FakeTwilio(account_sid=acct, credentials=[("SK" + "f" * 32, "keysecret")]))
    st, _, _ = tw_post(fake, "Messages", SMS, user="SK" + "f" * 32, password="keysecret")
    assert st == 201
    st, _, body = tw_post(fake, "Messages", SMS, user=acct, password="keysecret")
    assert st == 401


def test_twilio_auth_failures(run):
    fake = run(FakeTwilio())
    st, h, body = tw_post(fake, "Messages", SMS, password="wrong")
    assert st == 401 and body == {"code": 20003, "message": "Authenticate",
                                  "more_info": "https://www.twilio.com/docs/errors/20003",
                                  "status": 401}
    assert h["www-authenticate"].startswith("Basic")
    assert tw_post(fake, "Messages", SMS, user=False)[0] == 401
    st, _, body = tw_post(fake, "Messages", SMS, sid="AC" + "1" * 32)
    assert st == 404 and body["code"] == 20404
    assert fake.count(auth_ok=False) == 2 and fake.count(valid=True) == 0


@pytest.mark.parametrize("resource,fields,code", [
    ("Messages", {"From": SMS["From"], "Body": "x"}, 21604),
    ("Messages", {"To": SMS["To"], "From": SMS["From"]}, 21602),
    ("Messages", {"To": SMS["To"], "Body": "x"}, 21603),
    ("Messages", dict(SMS, MessagingServiceSid="MG" + "a" * 32), 21603),
    ("Messages", dict(SMS, To="2015550123"), 21211),
    ("Messages", dict(SMS, Body="x" * 1601), 21617),
    ("Messages", dict(SMS, From="not a number!"), 21212),
    ("Messages", {"To": SMS["To"], "MessagingServiceSid": "MGxyz", "Body": "x"}, 21701),
    ("Calls", {"From": CALL["From"], "Twiml": TWIML}, 21201),
    ("Calls", {"To": CALL["To"], "Twiml": TWIML}, 21213),
    ("Calls", {"To": CALL["To"], "From": CALL["From"]}, 21205),
    ("Calls", dict(CALL, Twiml="<Response><Say>unclosed</Response>"), 12100),
    ("Calls", dict(CALL, Twiml="<Say>hi</Say>"), 12100),
    ("Calls", dict(CALL, Twiml="<Response><Pause/></Response>"), 12100),
    ("Calls", dict(CALL, Twiml='<Response><Say loop="x">hi</Say></Response>'), 12100),
    ("Calls", dict(CALL, Twiml="<Response><Say>" + "1" * 4000 + "</Say></Response>"), 21220),
])
def test_twilio_field_validation(run, resource, fields, code):
    fake = run(FakeTwilio())
    st, _, body = tw_post(fake, resource, fields)
    assert st == 400 and body["code"] == code and body["status"] == 400
    assert body["more_info"].endswith(str(code))
    rec = fake.last()
    assert rec["auth_ok"] and not rec["valid"] and rec["reason"] and not rec["sent"]


def test_twilio_unencoded_plus_and_wrong_content_type(run):
    fake = run(FakeTwilio())
    raw = b"To=+12015550123&From=%2B12065550152&Body=hi"  # '+' decodes as a space
    st, _, body = tw_post(fake, "Messages", None, raw=raw)
    assert st == 400 and body["code"] == 21211
    st, _, body = tw_post(fake, "Messages", None, raw=json.dumps(SMS).encode(),
                          ctype="application/json")
    assert st == 400 and "Content-Type" in fake.last()["reason"]


def test_twilio_allow_lists(run):
    fake = FakeTwilio()
    fake.from_numbers = {"+12065550152"}
    run(fake)
    assert tw_post(fake, "Messages", SMS)[0] == 201
    st, _, body = tw_post(fake, "Messages", dict(SMS, From="+12065550199"))
    assert st == 400 and body["code"] == 21606


@pytest.mark.parametrize("action,status,code", [
    ("throttle", 429, 20429), ("invalid_number", 400, 21211), ("unsubscribed", 400, 21610),
    ("not_sms_capable", 400, 21614), ("geo", 400, 21408), ("500", 500, 20500)])
def test_twilio_error_actions(run, action, status, code):
    fake = run(FakeTwilio())
    fake.script.append(action)
    st, _, body = tw_post(fake, "Messages", SMS)
    assert (st, body["code"], body["status"]) == (status, code, status)
    assert body["message"] and body["more_info"].endswith(str(code))
    assert fake.last()["valid"] and not fake.last()["sent"] and fake.last()["sid"] is None
    assert tw_post(fake, "Messages", SMS)[0] == 201


# ---- FakeCredsEndpoint -------------------------------------------------------------------------
def test_container_credentials(run):
    fake = run(FakeCredsEndpoint(path="/v2/credentials/abc", auth_token="Bearer tok-1"))
    st, h, data = http_req(fake, "GET", "/v2/credentials/abc",
                           headers={"Authorization": "Bearer tok-1"})
    doc = json.loads(data)
    assert st == 200 and h["content-type"] == "application/json"
    assert (doc["AccessKeyId"], doc["SecretAccessKey"], doc["Token"]) == fake.credential
    exp = datetime.strptime(doc["Expiration"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    assert 3500 < exp.timestamp() - time.time() <= 3600
    assert http_req(fake, "GET", "/v2/credentials/abc")[0] == 401
    assert http_req(fake, "GET", "/v2/credentials/abc",
                    headers={"Authorization": "Bearer tok-2"})[0] == 401
    assert http_req(fake, "GET", "/v2/credentials/other",
                    headers={"Authorization": "Bearer tok-1"})[0] == 404
    assert fake.count(kind="container", sent=True) == 1 and fake.count(kind="container") == 3
    old = fake.credential
    new = fake.rotate(expiration=datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc))
    assert new != old
    doc = json.loads(http_req(fake, "GET", "/v2/credentials/abc",
                              headers={"Authorization": "Bearer tok-1"})[2])
    assert doc["AccessKeyId"] == new[0] and doc["Expiration"] == "2030-01-02T03:04:05Z"


def test_container_credentials_via_botocore_provider(run):
    fake = run(FakeCredsEndpoint(auth_token="tok-9"))
    creds = ContainerProvider(environ={"AWS_CONTAINER_CREDENTIALS_FULL_URI": fake.container_url,
                                       "AWS_CONTAINER_AUTHORIZATION_TOKEN": "tok-9"}).load()
    frozen = creds.get_frozen_credentials()
    assert (frozen.access_key, frozen.secret_key, frozen.token) == fake.credential
    assert fake.last()["headers"]["authorization"] == "tok-9"
    # the fetched credentials sign requests FakeEUM accepts
    eum = run(FakeEUM(credentials=[fake.credential]))
    assert eum_post(eum, GOOD_TEXT, akid=frozen.access_key, secret=frozen.secret_key,
                    token=frozen.token)[0] == 200


def test_imdsv2_flow(run):
    fake = run(FakeCredsEndpoint(role="my-role"))
    assert http_req(fake, "PUT", "/latest/api/token")[0] == 400  # TTL header required
    assert http_req(fake, "GET", "/latest/api/token")[0] == 405
    assert http_req(fake, "PUT", "/latest/api/token",
                    headers={"X-aws-ec2-metadata-token-ttl-seconds": "21600",
                             "X-Forwarded-For": "1.2.3.4"})[0] == 403
    st, _, tok = http_req(fake, "PUT", "/latest/api/token",
                          headers={"X-aws-ec2-metadata-token-ttl-seconds": "21600"})
    assert st == 200 and tok
    base = "/latest/meta-data/iam/security-credentials/"
    assert http_req(fake, "GET", base)[0] == 401
    assert http_req(fake, "GET", base, headers={"X-aws-ec2-metadata-token": "forged"})[0] == 401
    st, _, role = http_req(fake, "GET", base, headers={"X-aws-ec2-metadata-token": tok.decode()})
    assert st == 200 and role == b"my-role"
    st, _, data = http_req(fake, "GET", base + "my-role",
                           headers={"X-aws-ec2-metadata-token": tok.decode()})
    doc = json.loads(data)
    assert doc["Code"] == "Success" and doc["Type"] == "AWS-HMAC"
    assert (doc["AccessKeyId"], doc["SecretAccessKey"], doc["Token"]) == fake.credential
    assert doc["Expiration"].endswith("Z") and doc["LastUpdated"].endswith("Z")
    assert http_req(fake, "GET", base + "other-role",
                    headers={"X-aws-ec2-metadata-token": tok.decode()})[0] == 404
    # tokens expire
    st, _, tok1 = http_req(fake, "PUT", "/latest/api/token",
                           headers={"X-aws-ec2-metadata-token-ttl-seconds": "1"})
    fake.clock = lambda: time.time() + 5
    assert http_req(fake, "GET", base, headers={"X-aws-ec2-metadata-token": tok1.decode()})[0] \
        == 401
    assert fake.count(kind="imds-creds", sent=True) == 1


def test_imdsv2_via_botocore_provider(run):
    fake = run(FakeCredsEndpoint())
    fetcher = InstanceMetadataFetcher(timeout=2, num_attempts=1, base_url=fake.url + "/",
                                      env={})
    creds = InstanceMetadataProvider(iam_role_fetcher=fetcher).load()
    assert creds is not None
    frozen = creds.get_frozen_credentials()
    assert (frozen.access_key, frozen.secret_key, frozen.token) == fake.credential
    kinds = [r["kind"] for r in fake.requests]
    assert kinds == ["imds-token", "imds-role", "imds-creds"], kinds


def test_creds_actions(run):
    fake = run(FakeCredsEndpoint())
    fake.script.extend(["500", "garbage", ("hang", 0.3)])
    assert http_req(fake, "GET", fake.path)[0] == 500
    st, _, data = http_req(fake, "GET", fake.path)
    assert st == 200
    with pytest.raises(ValueError):
        json.loads(data)
    t0 = time.monotonic()
    with pytest.raises((http.client.RemoteDisconnected, TimeoutError)):
        http_req(fake, "GET", fake.path, timeout=0.1)
    assert time.monotonic() - t0 < 1
    assert fake.count(kind="container") == 3 and fake.count(sent=True) == 0


# ---- FakeWebhook -------------------------------------------------------------------------------
def wh_sig(secret, body, t=None):
    t = int(time.time()) if t is None else t
    key = secret.encode() if isinstance(secret, str) else secret
    return f"t={t},v1=" + hmac.new(key, f"{t}.".encode() + body, hashlib.sha256).hexdigest()


def wh_post(fake, body, sig, ctype="application/json"):
    headers = {"Content-Type": ctype}
    if sig is not None:
        headers["X-Telehook-Signature"] = sig
    st, h, data = http_req(fake, "POST", "/gateway/send", body, headers)
    return st, json.loads(data)


def test_webhook_accepts_correct_signature(run):
    fake = run(FakeWebhook(secret="whsec-1"))
    body = json.dumps({"to": "+12015550123", "message": "Your code is 482913"}).encode()
    st, resp = wh_post(fake, body, wh_sig("whsec-1", body))
    assert st == 200 and resp["id"].startswith("wh-") and len(resp["id"]) == 39
    rec = fake.last()
    assert rec["sig_ok"] and rec["valid"] and rec["json"]["to"] == "+12015550123"
    assert rec["id"] == resp["id"] and rec["path"] == "/gateway/send"
    # several v1 entries (key rotation): any may match
    sig = wh_sig("old", body) + "," + wh_sig("whsec-1", body).split(",")[1]
    assert wh_post(fake, body, sig)[0] == 200


def test_webhook_refusals(run):
    fake = run(FakeWebhook(secret="whsec-1"))
    body = json.dumps({"to": "+12015550123"}).encode()
    now = int(time.time())
    cases = [
        wh_sig("wrong", body),                            # wrong secret
        wh_sig("whsec-1", body, now - 301),               # too old
        wh_sig("whsec-1", body, now + 301),               # too far ahead
        wh_sig("whsec-1", body.replace(b"0123", b"0124")),  # signed another body
        None,                                             # missing header
        "t=abc,v1=00",                                    # malformed
        wh_sig("whsec-1", body).replace("v1=", "v0="),    # unknown scheme only
        wh_sig("whsec-1", body).upper().replace("T=", "t=").replace("V1=", "v1="),  # upper hex
    ]
    for sig in cases:
        st, resp = wh_post(fake, body, sig)
        assert st == 401 and "error" in resp, sig
    assert fake.count(sig_ok=False) == len(cases) and fake.count(valid=True) == 0
    # inside the 300 s window, timed now (the cases above can take a second on a busy machine)
    assert wh_post(fake, body, wh_sig("whsec-1", body, int(time.time()) - 290))[0] == 200
    assert wh_post(fake, body, wh_sig("whsec-1", body), ctype="text/plain")[0] == 415
    assert wh_post(fake, b"[1]", wh_sig("whsec-1", b"[1]"))[0] == 400
    assert wh_post(fake, b"nope", wh_sig("whsec-1", b"nope"))[0] == 400


def test_webhook_error_actions(run):
    fake = run(FakeWebhook(secret=b"raw-bytes-key"))
    fake.script.extend(["500", "400", "429"])
    body = b'{"to":"+12015550123"}'
    assert wh_post(fake, body, wh_sig(b"raw-bytes-key", body))[0] == 500
    assert wh_post(fake, body, wh_sig(b"raw-bytes-key", body))[0] == 400
    st, h, _ = http_req(fake, "POST", "/", body, {"Content-Type": "application/json",
                                                  "X-Telehook-Signature":
                                                      wh_sig(b"raw-bytes-key", body)})
    assert st == 429 and h["retry-after"] == "1"
    assert wh_post(fake, body, wh_sig(b"raw-bytes-key", body))[0] == 200
    assert fake.count(valid=True) == 4 and fake.count(sent=True) == 1


def test_unknown_action_is_reported_as_fake_error():
    fake = FakeWebhook().start()
    try:
        fake.script.append("no-such-action")
        st, _, _ = send_good(fake)
        assert st == 500 and fake.errors and "no-such-action" in fake.errors[0]
    finally:
        fake.stop()


# ---- FakeSTS -----------------------------------------------------------------------------------
ROLE = "arn:aws:iam::123456789012:role/telehook-sms"


def sts_client(fake, akid=AKID, secret=SECRET, token=None, unsigned=False, validate=True):
    cfg = Config(retries={"total_max_attempts": 1}, connect_timeout=2, read_timeout=5,
                 parameter_validation=validate, signature_version=UNSIGNED if unsigned else None)
    kw = {} if unsigned else {"aws_access_key_id": akid, "aws_secret_access_key": secret,
                              "aws_session_token": token}
    return _SESSION.create_client("sts", region_name=fake.region, endpoint_url=fake.url,
                                  config=cfg, **kw)


def test_sts_assume_role_signed_by_botocore_and_chained(run):
    fake = run(FakeSTS(region="eu-west-1", credentials=[(AKID, SECRET, None)]))
    fake.token_suffix = "&<>'\""  # XML-escaped on the wire, decoded by botocore's parser
    r = sts_client(fake).assume_role(RoleArn=ROLE, RoleSessionName="s1", ExternalId="ext-1",
                                     DurationSeconds=900)
    rec = fake.last()
    assert rec["valid"] and rec["sig_ok"] and rec["signed"] and rec["akid"] == AKID
    assert rec["params"]["ExternalId"] == "ext-1" and rec["params"]["DurationSeconds"] == "900"
    c = r["Credentials"]
    assert (c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"]) == rec["issued"]
    assert c["SessionToken"].endswith("&<>'\"")
    left = (c["Expiration"] - datetime.now(timezone.utc)).total_seconds()
    assert 880 < left <= 900
    assert b"&amp;&lt;&gt;" in rec["response"]
    # the issued credentials (with their session token) may assume the next role of a chain
    r2 = sts_client(fake, *rec["issued"]).assume_role(RoleArn=ROLE + "-2", RoleSessionName="s2")
    assert fake.last()["akid"] == rec["issued"][0] and r2["Credentials"]["AccessKeyId"]
    assert fake.issued == [rec["issued"], fake.last()["issued"]]


def test_sts_front_end_errors_use_query_codes(run):
    fake = run(FakeSTS(credentials=[(AKID, SECRET, None)]))
    r = client_error(lambda: sts_client(fake, secret="wrong").assume_role(
        RoleArn=ROLE, RoleSessionName="s1"))
    assert (r["ResponseMetadata"]["HTTPStatusCode"], r["Error"]["Code"]) == \
        (403, "SignatureDoesNotMatch")
    assert r["Error"]["Type"] == "Sender"
    r = client_error(lambda: sts_client(fake, akid="AKIDUNKNOWN").assume_role(
        RoleArn=ROLE, RoleSessionName="s1"))
    assert r["Error"]["Code"] == "InvalidClientTokenId"
    st, h, body = http_req(fake, "POST", "/", b"Action=AssumeRole&Version=2011-06-15&RoleArn="
                           + ROLE.encode() + b"&RoleSessionName=s1",
                           {"Content-Type": "application/x-www-form-urlencoded"})
    assert st == 403 and b"<Code>MissingAuthenticationToken</Code>" in body
    assert h["content-type"] == "text/xml"
    assert fake.count(valid=True) == 0 and fake.count(sent=True) == 0


def test_sts_web_identity_token_checked(run):
    fake = run(FakeSTS(credentials=[(AKID, SECRET, None)]))
    fake.web_tokens = {"eyJhbGciOiJSUzI1NiJ9.pod.sig"}
    r = sts_client(fake, unsigned=True).assume_role_with_web_identity(
        RoleArn=ROLE, RoleSessionName="pod", WebIdentityToken="eyJhbGciOiJSUzI1NiJ9.pod.sig")
    rec = fake.last()
    assert rec["valid"] and not rec["signed"] and rec["web_token"] == "eyJhbGciOiJSUzI1NiJ9.pod.sig"
    assert r["Credentials"]["AccessKeyId"] == rec["issued"][0]
    assert r["SubjectFromWebIdentityToken"]
    r = client_error(lambda: sts_client(fake, unsigned=True).assume_role_with_web_identity(
        RoleArn=ROLE, RoleSessionName="pod", WebIdentityToken="eyJ.other.token"))
    assert r["Error"]["Code"] == "InvalidIdentityToken"
    assert fake.count(sent=True) == 1


@pytest.mark.parametrize("kw,words", [
    ({"RoleSessionName": "has space"}, "roleSessionName"),
    ({"RoleSessionName": "x"}, "roleSessionName"),
    ({"ExternalId": "bad id!"}, "externalId"),
    ({"DurationSeconds": 899}, "durationSeconds"),
    ({"DurationSeconds": 43201}, "durationSeconds"),
    ({"RoleArn": "arn:short"}, "roleArn"),
])
def test_sts_validation(run, kw, words):
    fake = run(FakeSTS(credentials=[(AKID, SECRET, None)]))
    args = dict({"RoleArn": ROLE, "RoleSessionName": "ok-name"}, **kw)
    r = client_error(lambda: sts_client(fake, validate=False).assume_role(**args))
    assert r["Error"]["Code"] == "ValidationError" and words in r["Error"]["Message"]
    assert fake.last()["sig_ok"] and fake.count(sent=True) == 0


def test_sts_roles_external_ids_and_error_actions(run):
    fake = run(FakeSTS(credentials=[(AKID, SECRET, None)]))
    fake.roles = {ROLE}
    fake.external_ids = {ROLE: "ext-42"}
    c = sts_client(fake)
    assert client_error(lambda: c.assume_role(RoleArn=ROLE + "x", RoleSessionName="s1"))[
        "Error"]["Code"] == "AccessDenied"
    assert client_error(lambda: c.assume_role(RoleArn=ROLE, RoleSessionName="s1"))[
        "Error"]["Code"] == "AccessDenied"
    assert c.assume_role(RoleArn=ROLE, RoleSessionName="s1", ExternalId="ext-42")["Credentials"]
    for action, status, code in [("denied", 403, "AccessDenied"), ("throttle", 400, "Throttling"),
                                 ("500", 500, "InternalFailure")]:
        fake.script.append(action)
        r = client_error(lambda: c.assume_role(RoleArn=ROLE, RoleSessionName="s1",
                                               ExternalId="ext-42"))
        assert (r["ResponseMetadata"]["HTTPStatusCode"], r["Error"]["Code"]) == (status, code)
    st, _, body = http_req(fake, "POST", "/", b"Action=GetCallerIdentity&Version=2011-06-15",
                           {"Content-Type": "application/x-www-form-urlencoded"})
    assert st == 400 and b"<Code>InvalidAction</Code>" in body


# ---- feedback (tests/e2e/test_feedback.py) ---------------------------------------------------

FEEDBACK_TARGET = "PinpointSMSVoiceV2.PutMessageFeedback"


def test_eum_put_message_feedback_only_for_messages_sent_with_it(run):
    fake = run(FakeEUM(credentials=[(AKID, SECRET, None)]))
    st, _, with_fb = eum_post(fake, dict(GOOD_TEXT, MessageFeedbackEnabled=True))
    assert st == 200
    st, _, without = eum_post(fake, GOOD_TEXT)
    assert st == 200
    ok = {"MessageId": with_fb["MessageId"], "MessageFeedbackStatus": "RECEIVED"}
    st, _, body = eum_post(fake, ok, target=FEEDBACK_TARGET)
    assert st == 200 and body == ok
    st, h, body = eum_post(fake, {"MessageId": without["MessageId"],
                                  "MessageFeedbackStatus": "RECEIVED"}, target=FEEDBACK_TARGET)
    assert_aws_error(st, h, body, 400, "ResourceNotFoundException")
    st, h, body = eum_post(fake, dict(ok, MessageFeedbackStatus="READ"), target=FEEDBACK_TARGET)
    assert_aws_error(st, h, body, 400, "ValidationException")
    st, h, body = eum_post(fake, ok, target=FEEDBACK_TARGET, secret="wrong" + SECRET[5:])
    assert_aws_error(st, h, body, 403, "InvalidSignatureException")
    assert fake.feedback == {with_fb["MessageId"]: "RECEIVED"}


def test_twilio_feedback_needs_auth_and_provide_feedback(run):
    fake = run(FakeTwilio())
    st, _, with_fb = tw_post(fake, "Messages", dict(SMS, ProvideFeedback="true"))
    assert st == 201
    st, _, without = tw_post(fake, "Messages", SMS)
    assert st == 201
    fb = f"Messages/{with_fb['sid']}/Feedback"
    assert tw_post(fake, fb, {"Outcome": "confirmed"}, password="wrong")[0] == 401
    assert tw_post(fake, fb, {"Outcome": "maybe"})[0] == 400
    st, _, body = tw_post(fake, f"Messages/{without['sid']}/Feedback", {"Outcome": "confirmed"})
    assert st == 404 and body["code"] == 20404
    st, _, body = tw_post(fake, fb, {"Outcome": "confirmed"})
    assert st == 201 and body["outcome"] == "confirmed"
    assert body["message_sid"] == with_fb["sid"]
    assert fake.feedback == {with_fb["sid"]: "confirmed"}
