"""The Okta telephony hook end to end: decoding, numbers, locale chain, rendering, the outbox."""
import json

import pytest

from conftest import ES_NUMBER, US_NUMBER, assert_okta_error, okta_request


def success_value(body):
    assert "error" not in body, body
    (cmd,) = body["commands"]
    assert cmd["type"] == "com.okta.telephony.action"
    (value,) = cmd["value"]
    return value


def outbox(server, tx):
    rows = server.db_rows(
        "SELECT recipient, channel, language, body, voice_id FROM outbox WHERE id = ?", (tx,))
    assert len(rows) == 1, f"no outbox row for {tx}"
    return dict(zip(("to", "channel", "language", "body", "voice_id"), rows[0]))


def test_okta_sample_with_edited_number(server):
    status, headers, body = server.post(okta_request(otp="11111"))
    assert status == 200
    assert headers["content-type"] == "application/json"
    v = success_value(body)
    assert v["status"] == "SUCCESSFUL"
    assert v["provider"] == "outbox"
    assert v["transactionId"].startswith("ob-")
    assert v["transactionMetadata"].startswith("attempts=1;ms=")
    msg = outbox(server, v["transactionId"])
    assert msg["to"] == US_NUMBER
    assert msg["channel"] == "sms"
    assert "11111" in msg["body"]
    listed = server.cli("outbox", "list", "-n", "5").stdout
    assert v["transactionId"] in listed and "11111" in listed


def test_unedited_placeholder_number_gets_error_object(server):
    status, _, body = server.post(okta_request(phone="9876543210"))
    assert status == 200
    assert_okta_error(body, reason="invalid phone number")
    assert server.db_rows("SELECT count(*) FROM outbox")[0][0] == 0


def test_sms_english_from_en_us(server):
    _, _, body = server.post(okta_request(otp="730194", locale="EN-US"))
    msg = outbox(server, success_value(body)["transactionId"])
    assert msg["language"] == "en"
    assert msg["body"] == "730194 is your verification code. It expires in 5 minutes."


def test_sms_spanish_plural_agrees(server):
    _, _, body = server.post(okta_request(otp="730194", locale="es"))
    msg = outbox(server, success_value(body)["transactionId"])
    assert msg["body"] == "730194 es su código de verificación. Caduca en 5 minutos."
    _, _, body = server.post(okta_request(otp="730195", locale="es",
                                          otpExpires="2022-01-28T21:48:34.321Z"))
    msg = outbox(server, success_value(body)["transactionId"])
    assert msg["body"] == "730195 es su código de verificación. Caduca en 1 minuto."


def test_stored_plural_form_beside_the_pack(make_server):
    """An admin's {{expires_minutes:ONE|OTHER}} and the pack's {{expires}} in one template."""
    s = make_server(start=False)
    s.cli("templates", "set", "es", "sms",
          "{{otp}}: {{expires}} ({{expires_minutes:minutito|minutitos}})")
    s.start()
    _, _, body = s.post(okta_request(otp="730196", locale="es",
                                     otpExpires="2022-01-28T21:48:34.321Z"))
    msg = outbox(s, success_value(body)["transactionId"])
    assert msg["body"] == "730196: 1 minuto (1 minutito)"
    _, _, body = s.post(okta_request(otp="730197", locale="es"))
    msg = outbox(s, success_value(body)["transactionId"])
    assert msg["body"] == "730197: 5 minutos (5 minutitos)"
    assert s.stop() == 0


def test_voice_spanish_from_es_mx(server):
    req = okta_request(phone=ES_NUMBER, otp="123456", channel="Voice", locale="es-MX")
    _, _, body = server.post(req)
    msg = outbox(server, success_value(body)["transactionId"])
    assert msg["to"] == ES_NUMBER
    assert msg["channel"] == "voice"
    assert msg["language"] == "es"
    assert msg["voice_id"] == "Lupe"
    assert msg["body"].startswith("<speak>") and msg["body"].endswith("</speak>")
    assert msg["body"].count("1, 2, 3, 4, 5, 6") == 2  # spoken digit by digit, repeated once
    assert "123456" not in msg["body"]


@pytest.mark.parametrize("value,channel", [("voice call", "voice"), ("CALL", "voice"),
                                           ("Voice", "voice"), ("sms", "sms"), ("Sms", "sms")])
def test_delivery_channel_variants(server, value, channel):
    _, _, body = server.post(okta_request(channel=value))
    assert outbox(server, success_value(body)["transactionId"])["channel"] == channel


def test_unknown_locale_uses_default_language(server):
    _, _, body = server.post(okta_request(otp="555111", locale="sw-KE"))
    msg = outbox(server, success_value(body)["transactionId"])
    assert msg["language"] == "en"
    assert msg["body"].startswith("555111 is your verification code")


def test_missing_template_uses_okta_msg_template(make_server):
    # without the language pack: stored templates (none for de or fr), then Okta's text
    s = make_server("message.default_language = de\nmessage.builtin_pack = false")
    req = okta_request(otp="246810", locale="fr")
    _, _, body = s.post(req)
    msg = outbox(s, success_value(body)["transactionId"])
    assert msg["body"] == req["data"]["messageProfile"]["msgTemplate"]
    # voice never uses Okta's SMS text: the built-in English voice
    _, _, body = s.post(okta_request(otp="246810", locale="fr", channel="voice"))
    msg = outbox(s, success_value(body)["transactionId"])
    assert msg["body"].startswith("<speak>") and "2, 4, 6, 8, 1, 0" in msg["body"]
    assert s.stop() == 0


def test_no_template_and_no_fallback_gets_error_object(make_server):
    s = make_server("message.default_language = sw\nmessage.builtin_fallback = false")
    status, _, body = s.post(okta_request(locale="xh", msgTemplate=None))
    assert status == 200
    assert_okta_error(body)
    assert s.db_rows("SELECT count(*) FROM outbox")[0][0] == 0
    assert s.stop() == 0


def test_template_changed_with_cli_and_sighup(make_server):
    s = make_server(start=False)
    s.cli("templates", "set", "es", "sms", "Codigo: @otp (vence en {{expires_minutes}} min)")
    s.start()
    _, _, body = s.post(okta_request(otp="909090", locale="es-ES"))
    assert outbox(s, success_value(body)["transactionId"])["body"] == "Codigo: 909090 (vence en 5 min)"
    # a change while running is picked up on SIGHUP
    s.cli("templates", "set", "es", "sms", "Nuevo {{otp}}")
    import signal
    s.proc.send_signal(signal.SIGHUP)
    deadline = __import__("time").monotonic() + 10
    while "templates reloaded" not in s.log_text():
        assert __import__("time").monotonic() < deadline, s.log_text()
        __import__("time").sleep(0.02)
    _, _, body = s.post(okta_request(otp="808080", locale="es"))
    assert outbox(s, success_value(body)["transactionId"])["body"] == "Nuevo 808080"
    # an invalid template is refused by the CLI, not at send time
    r = s.cli("templates", "set", "es", "sms", "Hola {{codigo}}", check=False)
    assert r.returncode != 0 and "{{codigo}}" in r.stderr
    assert s.stop() == 0


@pytest.mark.parametrize("raw,e164", [("12015550123", US_NUMBER), ("+1 (201) 555-0123", US_NUMBER),
                                      ("34612345678", ES_NUMBER), ("+34 612-345-678", ES_NUMBER)])
def test_phone_formats(server, raw, e164):
    _, _, body = server.post(okta_request(phone=raw))
    assert outbox(server, success_value(body)["transactionId"])["to"] == e164


def test_national_number_in_default_region(make_server):
    s = make_server("phone.default_region = GB")
    _, _, body = s.post(okta_request(phone="07400 123456"))
    assert outbox(s, success_value(body)["transactionId"])["to"] == "+447400123456"
    # a fixed line is fine for a voice call (SMS to it is refused by default: see test_guard)
    _, _, body = s.post(okta_request(phone="020 7946 0000", channel="voice"))
    assert outbox(s, success_value(body)["transactionId"])["to"] == "+442079460000"
    assert s.stop() == 0


def test_national_number_valid_abroad_stays_national(server):
    """2015550123 is a US number (phone.default_region = US, the default) and also +20 1555 0123
    in Egypt: it is sent to the US, and the ambiguity is counted and logged, masked."""
    _, _, body = server.post(okta_request(phone="2015550123"))
    assert outbox(server, success_value(body)["transactionId"])["to"] == US_NUMBER
    # a number valid only abroad is still read as international
    _, _, body = server.post(okta_request(phone="447400123456"))
    assert outbox(server, success_value(body)["transactionId"])["to"] == "+447400123456"
    text = server.request("GET", "/metrics")[2].decode()
    assert "telehook_phone_ambiguous_total 1\n" in text
    (line,) = [l for l in server.logs() if l.get("event") == "phone_ambiguous"]
    assert (line["phone"], line["not_taken"], line["default_region"]) == \
        ("+1201*****23", "+2015****23", "US")
    assert "2015550123" not in server.log_text() and "5550123" not in server.log_text()


def test_numbers_as_json_numbers(server):
    raw = json.dumps(okta_request(otp="X")).replace('"+12015550123"', "12015550123").replace(
        '"otpCode": "X"', '"otpCode": 654321')
    _, _, body = server.post(raw)
    msg = outbox(server, success_value(body)["transactionId"])
    assert msg["to"] == US_NUMBER and "654321" in msg["body"]


@pytest.mark.parametrize("phone", ["9876543210", "+1555555121", "not a number", "+999999999999"])
def test_invalid_phone_is_okta_error(server, phone):
    status, _, body = server.post(okta_request(phone=phone))
    assert status == 200
    assert_okta_error(body, summary="The phone number cannot receive a verification code.",
                      reason="invalid phone number")


def test_unservable_requests_get_error_object(server):
    for req in ({"data": {}}, okta_request(otpCode=None), okta_request(otpCode="12 34"),
                dict(okta_request(), eventType="com.okta.import.transform")):
        status, _, body = server.post(req)
        assert status == 200, req
        assert_okta_error(body, summary="The verification code could not be sent.")


@pytest.mark.parametrize("field,value", [
    ("deliveryChannel", ["voice"]), ("deliveryChannel", None), ("deliveryChannel", 1),
    ("deliveryChannel", {"type": "voice"}), ("deliveryChannel", "voice " * 20),
    ("phoneNumber", [US_NUMBER]), ("otpCode", 1.5), ("locale", False),
])
def test_field_of_wrong_type_is_malformed(server, field, value):
    """A field of the wrong type is not absent (["voice"] once became an SMS): the request is
    malformed, answered 400 (Okta falls back to its own providers), and nothing is sent."""
    req = okta_request()
    req["data"]["messageProfile"][field] = value
    status, _, body = server.post(req)
    assert status == 400 and "commands" not in body
    assert body["error"]["errorCauses"][0]["reason"] == \
        f"data.messageProfile.{field} has the wrong type or is too long"
    assert server.db_rows("SELECT count(*) FROM outbox")[0][0] == 0
    server.wait_rows("SELECT count(*) FROM deliveries", 1)
    assert server.db_rows("SELECT outcome FROM deliveries") == [("REJECTED",)]


@pytest.mark.parametrize("raw", [b"{", b"not json", b"[1,2]", b'"x"', b""])
def test_malformed_json_is_400(server, raw):
    status, headers, body = server.post(raw)
    assert status == 400
    assert headers["content-type"] == "application/json"
    assert_okta_error(body, summary="Malformed request.")
