"""Issue 23's parts wired together in one server (docs/conversion.md): an Okta event that
verifies a delivery makes telehook report it to the provider that sent it (AWS
PutMessageFeedback), and final delivery receipts that show a provider not delivering to a
country move it behind the next provider of the route there."""
import json
import time

from conftest import SLOW, ES_NUMBER, okta_request
from fake_okta_events import Sender, mfa_event
from fake_sns import eum_record
from test_providers import answer_value, aws_config, aws_env, twilio_config

GUARD = "guard.secret = gs-conversion-0123456789abcdef"
EB_SECRET = "eb-conversion-" + "x" * 24
EB_HEADER = "X-Telehook-Receipts-Secret"


def wait_for(pred, what, seconds=10):
    deadline = time.monotonic() + seconds * SLOW
    while not pred():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def metric(s, name, **labels):
    _, _, raw = s.request("GET", "/metrics")
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    head = f"{name}{{{want}}} " if labels else f"{name} "
    for line in raw.decode().splitlines():
        if line.startswith(head):
            return float(line.split()[-1])
    return 0.0


def eventbridge(s, message_id, event_type, country):
    event = {"version": "0", "id": f"e-{message_id}",
             "detail-type": "Text Message Delivery Status Updated", "source": "aws.sms-voice",
             "account": "123456789012", "time": "2026-12-05T03:00:00Z", "region": "eu-west-1",
             "resources": [], "detail": eum_record(message_id, event_type, country)}
    status, _, _ = s.request("POST", "/v1/aws/events", json.dumps(event),
                             {"Content-Type": "application/json", EB_HEADER: EB_SECRET})
    assert status == 200


def test_verification_reports_feedback_to_the_provider(make_server, eum):
    s = make_server(aws_config(eum, f"""
        events.enabled = true
        feedback.enabled = true
        {GUARD}"""), env=aws_env(eum))
    req = okta_request()
    user = req["data"]["userProfile"]["userId"]
    status, _, body = s.post(req)
    assert status == 200
    mid = answer_value(body)["transactionId"]
    assert eum.last(op="SendTextMessage")["parsed"]["MessageFeedbackEnabled"] is True
    s.wait_rows("SELECT count(*) FROM deliveries", 1)
    sender = Sender(s.port, header=s.header, secret=s.secret)
    status, _ = sender.deliver([mfa_event(user, int(time.time() * 1000))])
    assert status == 200
    wait_for(lambda: eum.feedback == {mid: "RECEIVED"}, "PutMessageFeedback for the verified one")
    (fb,) = eum.matching(op="PutMessageFeedback")
    assert fb["sig_ok"], fb["reason"]
    wait_for(lambda: metric(s, "telehook_feedback_total", provider="aws", result="sent") == 1,
             "the feedback counted")
    # Okta retries its batch: the delivery is credited once, so reported once
    assert sender.deliver([mfa_event(user, int(time.time() * 1000))])[0] == 200
    time.sleep(0.5 * SLOW)
    assert eum.count(op="PutMessageFeedback") == 1
    assert s.stop() == 0


def test_receipts_move_an_undelivering_provider_behind(make_server, eum, twilio):
    s = make_server(aws_config(eum, twilio_config(twilio, f"""
        receipts.eventbridge_secret = {EB_SECRET}
        routing.health_min_receipts = 5
        routing.health_threshold = 50""")), env=aws_env(eum), start=False)
    s.cli("routes", "set", "sms", "ES", "aws, twilio")
    s.start()
    # AWS's messages to Spain: accepted, then reported unreachable by the carrier
    for _ in range(5):
        status, _, body = s.post(okta_request(phone=ES_NUMBER))
        mid = answer_value(body)["transactionId"]
        s.wait_rows("SELECT count(*) FROM deliveries WHERE transaction_id = ?", 1, (mid,))
        eventbridge(s, mid, "TEXT_CARRIER_UNREACHABLE", "ES")
    wait_for(lambda: metric(s, "telehook_route_health_demoted", provider="aws") == 1,
             "AWS demoted for ES")
    firsts = [_provider(s) for _ in range(10)]
    # one request in ten keeps the route's order (a probe, so AWS's receipts keep coming)
    assert firsts.count("twilio") >= 8, firsts
    # another country's route is not touched
    assert _provider(s, phone="+12015550123") == "aws"
    assert s.stop() == 0


def _provider(s, phone=ES_NUMBER):
    """The provider that sent a new request's message (each answers at once: the first tried)."""
    status, _, body = s.post(okta_request(phone=phone))
    assert status == 200
    return answer_value(body)["provider"]


def test_indexes_built_only_with_the_features(make_server):
    """An index on the delivery records costs every record an insert: conversion tracking's two
    are built when the feature is turned on, not for every install (docs/conversion.md)."""
    def indexes(s):
        return {r[0] for r in s.db_rows("SELECT name FROM sqlite_master WHERE type = 'index' "
                                        "AND name IN ('deliveries_user', "
                                        "'deliveries_transaction')")}
    s = make_server()
    assert indexes(s) == set()
    assert s.stop() == 0
    s = make_server(f"events.enabled = true\n{GUARD}")
    assert indexes(s) == {"deliveries_user"}
    assert s.stop() == 0
    s = make_server(f"receipts.eventbridge_secret = {EB_SECRET}")
    assert indexes(s) == {"deliveries_transaction"}
    assert s.stop() == 0
