"""Provider feedback end to end: sends ask for feedback only while [feedback] is on
(MessageFeedbackEnabled on AWS, ProvideFeedback=true on Twilio), and route/feedback reports a
verified message with the provider's own authentication — AWS PutMessageFeedback signed with
SigV4 (recomputed by the fake with botocore), Twilio Feedback.json with Basic auth.

Part A's verifications are not wired to the queue in this tree yet: the reports are driven by
build/tests/unit/feedback_driver (test builds only), which sets the providers up from the same
config file as the server and runs the real queue, providers and HTTP client."""
import json
import os
import subprocess

import pytest

from conftest import BIN, okta_request
from test_providers import answer_value, aws_config, aws_env, twilio_config

DRIVER = os.path.join(os.path.dirname(os.path.abspath(BIN)), "tests", "unit", "feedback_driver")


def drive(server, *items):
    """Reports each "provider:id" as verified through the real queue; the counts it ended with."""
    if not os.path.exists(DRIVER):
        pytest.skip(f"{DRIVER} is built with -Dtests=enabled only")
    r = subprocess.run([DRIVER, server.conf, *items], env=server.env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout), r.stderr


FEEDBACK_ON = "feedback.enabled = true"


def test_aws_sends_ask_for_feedback_and_get_it(make_server, eum):
    s = make_server(aws_config(eum, FEEDBACK_ON), env=aws_env(eum))
    status, _, body = s.post(okta_request(otp="482913"))
    assert status == 200
    v = answer_value(body)
    send = eum.last(op="SendTextMessage")
    assert send["valid"], send["reason"]
    assert send["parsed"]["MessageFeedbackEnabled"] is True
    mid = send["message_id"]
    assert v["transactionId"] == mid
    counts, log = drive(s, f"aws:{mid}")
    assert counts["aws"] == {"sent": 1, "failed": 0, "dropped": 0, "skipped": 0, "retried": 0}
    (fb,) = eum.matching(op="PutMessageFeedback")
    assert fb["valid"] and fb["sig_ok"], fb["reason"]
    assert fb["parsed"] == {"MessageId": mid, "MessageFeedbackStatus": "RECEIVED"}
    assert eum.feedback == {mid: "RECEIVED"}
    assert eum.credential[1] not in log


def test_aws_feedback_for_a_message_sent_without_it_fails_once(make_server, eum):
    """AWS has no feedback record for it (ResourceNotFoundException): permanent, one request,
    counted."""
    s = make_server(aws_config(eum, FEEDBACK_ON), env=aws_env(eum))
    counts, log = drive(s, "aws:not-a-known-message")
    assert counts["aws"]["failed"] == 1 and counts["aws"]["sent"] == 0
    assert counts["aws"]["retried"] == 0
    assert eum.count(op="PutMessageFeedback") == 1
    assert eum.last(op="PutMessageFeedback")["sig_ok"]
    assert "feedback_failed" in log and "ResourceNotFoundException" in log
    assert "not-a-known-message" not in log  # the message id stays out of the log


def test_twilio_sms_ask_for_feedback_and_get_it(make_server, twilio):
    s = make_server("provider.name = twilio\n" + twilio_config(twilio, FEEDBACK_ON))
    status, _, body = s.post(okta_request(otp="777111"))
    v = answer_value(body)
    send = twilio.last(resource="Messages")
    assert send["valid"], send["reason"]
    assert send["form"]["ProvideFeedback"] == "true"
    sid = send["sid"]
    assert v["transactionId"] == sid
    call_sid = "CA" + "0" * 32
    not_a_sid = "SM" + "0" * 29 + "/.."  # goes into the URL: refused before any request
    counts, log = drive(s, f"twilio:{sid}", f"twilio:{call_sid}", f"twilio:{not_a_sid}")
    assert counts["twilio"] == {"sent": 1, "failed": 0, "dropped": 0, "skipped": 2, "retried": 0}
    (fb,) = twilio.matching(resource="Feedback")  # the call and the bad SID made no request
    assert fb["valid"] and fb["auth_ok"], fb["reason"]
    assert fb["form"] == {"Outcome": "confirmed"}
    assert twilio.feedback == {sid: "confirmed"}
    assert twilio.auth_token not in log


def test_sends_do_not_ask_for_feedback_when_off(make_server, eum, twilio):
    s = make_server(aws_config(eum) + twilio_config(twilio), env=aws_env(eum), start=False)
    s.cli("routes", "set", "sms", "US", "aws, twilio")
    s.start()
    eum.script = ["500"]  # fails over: one send to each
    assert answer_value(s.post(okta_request())[2])["provider"] == "twilio"
    send = eum.last(op="SendTextMessage")
    assert send["sig_ok"] and "MessageFeedbackEnabled" not in send["parsed"]
    tw = twilio.last(resource="Messages")
    assert tw["valid"], tw["reason"]
    assert "ProvideFeedback" not in tw["form"]


def test_feedback_per_provider_switch(make_server, eum):
    s = make_server(aws_config(eum, FEEDBACK_ON + "\nfeedback.aws = false"), env=aws_env(eum))
    s.post(okta_request())
    assert "MessageFeedbackEnabled" not in eum.last(op="SendTextMessage")["parsed"]
    counts, _ = drive(s, "aws:some-id")
    assert counts["aws"]["skipped"] == 1 and eum.count(op="PutMessageFeedback") == 0
