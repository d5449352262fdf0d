"""The documentation's own examples, run as a reader would run them."""
import json
import os

DOCS = os.path.join(os.path.dirname(__file__), "../../docs")
# The shipped defaults for the guard (as `make run` has them), not the harness's "all off".
DEFAULT_GUARD = "\n".join(f"guard.{k} = <unset>" for k in (
    "limit_phone", "limit_phone_daily", "limit_user", "limit_country", "budget_calling_code",
    "limit_global"))


def example(name):
    with open(os.path.join(DOCS, "examples", name)) as f:
        return json.load(f)


def test_examples_are_distinct_events():
    ids = [example(n)["eventId"] for n in sorted(os.listdir(os.path.join(DOCS, "examples")))]
    assert len(ids) == len(set(ids)), f"docs/examples share an eventId: {ids}"


def test_readme_examples_in_order(make_server):
    """README's sequence on the defaults: the SMS, the placeholder refused, the Spanish voice call
    made (not answered as a duplicate of the SMS)."""
    s = make_server(DEFAULT_GUARD)
    status, _, body = s.post(example("okta-sms-request.json"))
    assert status == 200
    sms = body["commands"][0]["value"][0]
    assert sms["status"] == "SUCCESSFUL" and sms["provider"] == "outbox"

    status, _, body = s.post(example("okta-preview-placeholder.json"))
    assert status == 200 and "error" in body
    assert body["error"]["errorSummary"]

    status, _, body = s.post(example("okta-voice-request.json"))
    assert status == 200
    voice = body["commands"][0]["value"][0]
    assert voice["status"] == "SUCCESSFUL"
    assert voice["transactionId"] != sms["transactionId"], "voice answered as the SMS's duplicate"
    rows = s.db_rows("SELECT recipient, channel, language, body FROM outbox WHERE id = ?",
                     (voice["transactionId"],))
    assert len(rows) == 1
    recipient, channel, language, text = rows[0]
    assert (recipient, channel, language) == ("+34612345678", "voice", "es")
    assert text.startswith("<speak>"), text
    assert s.db_rows("SELECT count(*) FROM outbox")[0][0] == 2
    assert s.stop() == 0
