"""Languages end to end: the built-in pack along the locale chain, stored templates over it,
users' preferences (loaded at start and on SIGHUP), SMS encodings, and the voices providers are
asked for. The admin commands of src/cli/lang.c (templates preview/check/import-aws/export,
prefs) are tested at the end."""
import json
import signal
import sqlite3
import time
from datetime import datetime, timedelta, timezone

import pytest

from conftest import SLOW, US_NUMBER, iso, okta_request
from fakes import FakeEUM, FakeTwilio

GSM_BASIC = set("@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡"
                "ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà")
GSM_EXT = set("\f^{}\\[~]|€")

# The pack's voices (src/message/pack.c); the fakes check them against AWS's own VoiceId list.
VOICES = {"da": "Naja", "de": "Vicki", "en": "Joanna", "es": "Lupe", "fr": "Lea", "it": "Bianca",
          "ja": "Mizuki", "ko": "Seoyeon", "nb": "Liv", "nl": "Lotte", "pl": "Ewa",
          "pt-BR": "Camila", "ro": "Carmen", "ru": "Tatyana", "sv": "Astrid", "tr": "Filiz",
          "zh-CN": "Zhiyu", "zh-TW": "Zhiyu"}
NO_VOICE = ["cs", "el", "eu", "fi", "hu", "id", "ms", "th", "uk", "vi"]
POLLY_LANG = {"Naja": "da-DK", "Vicki": "de-DE", "Joanna": "en-US", "Lupe": "es-US",
              "Lea": "fr-FR", "Bianca": "it-IT", "Mizuki": "ja-JP", "Seoyeon": "ko-KR",
              "Liv": "nb-NO", "Lotte": "nl-NL", "Ewa": "pl-PL", "Camila": "pt-BR",
              "Carmen": "ro-RO", "Tatyana": "ru-RU", "Astrid": "sv-SE", "Filiz": "tr-TR",
              "Zhiyu": "cmn-CN"}


def sent(server, body):
    """The outbox row of an answered request."""
    assert "error" not in body, body
    tx = body["commands"][0]["value"][0]["transactionId"]
    rows = server.db_rows("SELECT channel, language, body, voice_id FROM outbox WHERE id = ?",
                          (tx,))
    assert len(rows) == 1, f"no outbox row for {tx}"
    return dict(zip(("channel", "language", "body", "voice_id"), rows[0]))


def last_delivery(server, n):
    server.wait_rows("SELECT count(*) FROM deliveries", n)
    cols = ("channel", "language", "source", "locale", "preference")
    row = server.db_rows(f"SELECT {', '.join(cols)} FROM deliveries "
                         "ORDER BY created_ms DESC, rowid DESC LIMIT 1")[0]
    return dict(zip(cols, row))


def sighup(server, what):
    """SIGHUP, then wait for the reload line naming what."""
    before = server.log_text().count(f"{what} reloaded")
    server.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10 * SLOW
    while server.log_text().count(f"{what} reloaded") <= before:
        assert time.monotonic() < deadline, server.log_text()
        time.sleep(0.02)


def is_gsm7(text):
    return all(c in GSM_BASIC or c in GSM_EXT for c in text)


def test_german_sms_from_de_de(server):
    _, _, body = server.post(okta_request(otp="48213377", locale="de-DE"))
    msg = sent(server, body)
    assert msg["language"] == "de"
    assert msg["body"] == "48213377 ist Ihr Bestätigungscode. Er ist 5 Minuten gültig."
    assert is_gsm7(msg["body"])  # German fits GSM-7: one 160-character segment
    d = last_delivery(server, 1)
    assert (d["source"], d["locale"], d["preference"]) == ("builtin", "de-de", "")


def test_japanese_voice(server):
    _, _, body = server.post(okta_request(otp="246810", locale="ja-JP", channel="voice"))
    msg = sent(server, body)
    assert (msg["channel"], msg["language"], msg["voice_id"]) == ("voice", "ja", "Mizuki")
    assert msg["body"].startswith("<speak>認証コードは") and msg["body"].endswith("</speak>")
    assert msg["body"].count("2, 4, 6, 8, 1, 0") == 2
    assert "246810" not in msg["body"]


def test_one_minute_is_singular(server):
    soon = datetime.now(timezone.utc) + timedelta(seconds=40)
    _, _, body = server.post(okta_request(otp="135790", locale="en", otpExpires=iso(soon)))
    assert sent(server, body)["body"] == "135790 is your verification code. It expires in 1 minute."
    _, _, body = server.post(okta_request(otp="135791", locale="pl", otpExpires=iso(soon)))
    assert sent(server, body)["body"].endswith("Ważny przez 1 minutę.")


@pytest.mark.parametrize("locale,lang,start", [
    ("pt-PT", "pt-br", "{otp} é o seu código"),         # pt-PT → pt → pt-br
    ("pt_BR", "pt-br", "{otp} é o seu código"),
    ("zh-Hant-TW", "zh-tw", "{otp}是您的驗證碼"),
    ("zh-HK", "zh-tw", "{otp}是您的驗證碼"),
    ("zh-Hans", "zh-cn", "{otp}是您的验证码"),
    ("zh", "zh-cn", "{otp}是您的验证码"),
    ("no", "nb", "{otp} er bekreftelseskoden"),
    ("nn-NO", "nb", "{otp} er bekreftelseskoden"),
    ("nl-NL", "nl", "{otp} is uw verificatiecode"),
    ("in", "id", "{otp} adalah kode verifikasi"),
    ("EL-GR", "el", "{otp} είναι ο κωδικός"),
    ("xx-YY", "en", "{otp} is your verification code"),  # unknown: the default language
    ("not a locale", "en", "{otp} is your verification code"),
])
def test_locale_chain(server, locale, lang, start):
    req = okta_request(locale=locale)
    otp = req["data"]["messageProfile"]["otpCode"]
    msg = sent(server, server.post(req)[2])
    assert msg["language"] == lang
    assert msg["body"].startswith(start.format(otp=otp)), msg["body"]


def test_no_polly_voice_goes_on_along_the_chain(server):
    """Greek has no voice AWS accepts: the call is English (default language), never a voice of
    another language reading Greek; the request log says which locale was asked for."""
    _, hdrs, body = server.post(okta_request(otp="112233", locale="el-GR", channel="voice"))
    msg = sent(server, body)
    assert (msg["language"], msg["voice_id"]) == ("en", "Joanna")
    line = next(l for l in server.logs() if l.get("req") == hdrs["x-request-id"])
    assert line["lang"] == "en" and line["locale"] == "el-gr"
    assert "112233" not in server.log_text()


def test_stored_template_overrides_builtin(make_server):
    s = make_server()
    _, _, body = s.post(okta_request(otp="556677", locale="fr-FR"))
    assert sent(s, body)["body"] == ("556677 est votre code de vérification. Il expire dans "
                                     "5 minutes.")
    s.cli("templates", "set", "fr", "sms", "Code {{otp}}, valable {{expires}}")
    sighup(s, "templates")
    _, _, body = s.post(okta_request(otp="556678", locale="fr-FR"))
    msg = sent(s, body)
    assert (msg["language"], msg["body"]) == ("fr", "Code 556678, valable 5 minutes")
    assert last_delivery(s, 2)["source"] == "template"
    # the built-in French voice still speaks: no stored fr voice
    _, _, body = s.post(okta_request(otp="556679", locale="fr", channel="voice"))
    assert sent(s, body)["voice_id"] == "Lea"
    assert s.stop() == 0


def put_pref(server, user, language, channel=""):
    """`telehook prefs set`, as an admin runs it beside the server."""
    server.cli("prefs", "set", user, language, *([channel] if channel else []))


def test_preference_overrides_locale_after_sighup(make_server):
    s = make_server()
    _, _, body = s.post(okta_request(otp="700001", locale="EN-US"))
    assert sent(s, body)["language"] == "en"
    # the sample request's user: login test.user@example.com, userId 00uyxxSknGtK8022w0g3
    put_pref(s, "Test.User@Example.com", "pt-BR", "voice")
    put_pref(s, "00uOTHERuser", "de")
    sighup(s, "preferences")
    _, _, body = s.post(okta_request(otp="700002", locale="EN-US"))
    msg = sent(s, body)
    assert (msg["channel"], msg["language"]) == ("sms", "pt-br")  # the channel is only a hint
    assert msg["body"].startswith("700002 é o seu código de verificação")
    d = last_delivery(s, 2)
    assert (d["channel"], d["language"], d["locale"], d["preference"]) == (
        "sms", "pt-br", "en-us", "pt-br/voice")
    # by userId too; other users keep their locale
    req = okta_request(otp="700003", locale="EN-US")
    req["data"]["userProfile"].update(login="someone@example.com", userId="00uotheruser")
    assert sent(s, s.post(req)[2])["language"] == "de"
    req = okta_request(otp="700004", locale="EN-US")
    req["data"]["userProfile"].update(login="nobody@example.com", userId="00uNobody")
    assert sent(s, s.post(req)[2])["language"] == "en"
    assert "preferences reloaded: 2" in s.log_text()
    assert s.stop() == 0


def test_preferences_loaded_at_start(make_server):
    s = make_server(start=False)
    s.cli("templates", "list")  # creates the store
    put_pref(s, "test.user@example.com", "ja")
    s.start()
    _, _, body = s.post(okta_request(otp="810002", locale="en", channel="voice"))
    assert sent(s, body)["voice_id"] == "Mizuki"
    line = next(l for l in s.logs() if l.get("event") == "languages")
    assert line["preferences"] == 1 and line["pack_languages"] == 28
    assert s.stop() == 0


def test_gsm7_transliterates_latin_only(make_server):
    s = make_server("message.sms_encoding = gsm7")
    _, _, body = s.post(okta_request(otp="48213377", locale="pl"))
    msg = sent(s, body)
    assert msg["body"] == "48213377 to Twoj kod weryfikacyjny. Wazny przez 5 minut."
    assert is_gsm7(msg["body"])
    _, _, body = s.post(okta_request(otp="48213378", locale="ro"))
    assert is_gsm7(sent(s, body)["body"])
    _, _, body = s.post(okta_request(otp="48213379", locale="vi"))
    assert sent(s, body)["body"].startswith("48213379 là ma xac minh cua ban")  # à is GSM-7
    # Greek, Cyrillic, CJK, Thai stay as written (UCS-2), and the start-up log says which
    _, _, body = s.post(okta_request(otp="48213380", locale="el"))
    assert "κωδικός" in sent(s, body)["body"]
    line = next(l for l in s.logs() if l.get("event") == "languages")
    assert line["sms_encoding"] == "gsm7"
    assert set(line["gsm7_stays_ucs2"].split()) == {"el", "ja", "ko", "ru", "th", "uk", "zh-cn",
                                                     "zh-tw"}
    assert s.stop() == 0


def test_auto_keeps_accents(server):
    _, _, body = server.post(okta_request(otp="48213377", locale="pl"))
    assert sent(server, body)["body"] == "48213377 to Twój kod weryfikacyjny. Ważny przez 5 minut."


def test_long_template_skipped_over_max_segments(make_server):
    s = make_server("message.max_sms_segments = 1", start=False)
    s.cli("templates", "list")  # creates the store
    # AWS's guidance's Spanish text: UCS-2 (for one "ó") and two segments with the code
    con = sqlite3.connect(s.db, timeout=10)
    con.execute("INSERT INTO templates VALUES ('es', 'sms', 'Su código de acceso de un solo uso "
                "del servicio AWS End User Messaging es @otp', '', 1)")
    con.commit()
    con.close()
    s.start()
    _, _, body = s.post(okta_request(otp="48213377", locale="es"))
    msg = sent(s, body)
    assert msg["body"].startswith("48213377 es su código de verificación")  # the built-in
    skipped = [l for l in s.logs() if l.get("event") == "template_skipped"]
    assert skipped and "max_sms_segments" in skipped[0]["msg"]
    assert s.stop() == 0


def test_every_voice_accepted_by_aws(make_server):
    """Each pack voice, as AWS End User Messaging's SendVoiceMessage takes it (the fake checks
    VoiceId against botocore's list of Polly voices)."""
    with FakeEUM(region="eu-west-1") as eum:
        akid, secret, _ = eum.credential
        s = make_server(f"""
            provider.name = aws
            aws.region = {eum.region}
            aws.endpoint = {eum.url}
            aws.origination_identity = +12065550100""",
                        env={"AWS_ACCESS_KEY_ID": akid, "AWS_SECRET_ACCESS_KEY": secret})
        for i, lang in enumerate(list(VOICES) + NO_VOICE):
            otp = f"9753{i:02d}"  # a new code each time (the same one would be a duplicate)
            _, _, body = s.post(okta_request(otp=otp, locale=lang, channel="voice"))
            assert "error" not in body, (lang, body)
            rec = eum.last()
            assert rec["valid"], (lang, rec["reason"])
            assert rec["parsed"]["VoiceId"] == VOICES.get(lang, "Joanna").upper(), lang
            assert rec["parsed"]["MessageBody"].count(", ".join(otp)) == 2
        assert not eum.errors, eum.errors
        assert s.stop() == 0


def test_every_voice_on_twilio(make_server):
    with FakeTwilio(credentials=None) as tw:
        s = make_server(f"""
            provider.name = twilio
            twilio.account_sid = {tw.account_sid}
            twilio.auth_token = {tw.auth_token}
            twilio.from = +12065550111
            twilio.base_url = {tw.url}""")
        for i, (lang, voice) in enumerate(VOICES.items()):
            _, _, body = s.post(okta_request(otp=f"8642{i:02d}", locale=lang, channel="voice"))
            assert "error" not in body, (lang, body)
            rec = tw.last()
            assert rec["valid"], (lang, rec["reason"])
            (say,) = rec["says"]
            assert (say["voice"], say["language"]) == (f"Polly.{voice}", POLLY_LANG[voice]), lang
        assert not tw.errors, tw.errors
        assert s.stop() == 0


# ---- the admin commands of src/cli/lang.c ----------------------------------------------------

def test_cli_prefs_set_list_delete_and_sighup(make_server):
    s = make_server()
    r = s.cli("prefs", "set", "Test.User@Example.com", "pt_BR", "voice")
    assert "SIGHUP" in r.stderr
    listed = s.cli("prefs", "list").stdout
    assert "Test.User@Example.com" in listed and "pt-br" in listed and "voice" in listed
    sighup(s, "preferences")
    _, _, body = s.post(okta_request(otp="700002", locale="EN-US"))
    assert sent(s, body)["language"] == "pt-br"
    s.cli("prefs", "delete", "test.user@example.com")
    assert s.cli("prefs", "delete", "test.user@example.com", check=False).returncode == 1
    sighup(s, "preferences")
    _, _, body = s.post(okta_request(otp="700003", locale="EN-US"))
    assert sent(s, body)["language"] == "en"
    for bad in (["set", "u", "english"], ["set", "", "en"], ["set", "u", "en", "fax"],
                ["delete"], ["nope"]):
        assert s.cli("prefs", *bad, check=False).returncode == 2, bad
    assert s.stop() == 0


def test_cli_templates_preview(make_server):
    s = make_server("phone.default_region = DE", start=False)
    out = s.cli("templates", "preview", "de", "sms").stdout
    assert "12345678 ist Ihr Bestätigungscode. Er ist 10 Minuten gültig." in out
    assert "GSM-7" in out and "1 segment" in out and "DE, indicative" in out
    out = s.cli("templates", "preview", "pl", "sms", "--otp", "4821", "--expires", "1",
                "--country", "us").stdout
    assert "4821 to Twój kod weryfikacyjny. Ważny przez 1 minutę." in out
    assert "UCS-2" in out and "US" in out
    out = s.cli("templates", "preview", "ja", "voice").stdout
    assert "Mizuki" in out and 'Polly.Mizuki' in out and "MIZUKI" in out
    out = s.cli("templates", "preview", "el", "voice").stdout
    assert "chose en" in out and "no Amazon Polly voice" in out
    out = s.cli("templates", "preview", "de", "sms", "--country", "KE",
                env={"TELEHOOK_MESSAGE_SMS_PRICES": "KE:0.05"}).stdout
    assert "0.0500 USD (KE, message.sms_prices)" in out
    assert s.cli("templates", "preview", "xx!", "sms", check=False).returncode == 2
    assert s.cli("templates", "preview", "de", "fax", check=False).returncode == 2


AWS_ITEMS = {"Items": [
    {"id": {"S": "1"}, "messagetype": {"S": "sms"}, "language": {"S": "en"},
     "message": {"S": "Your sign-in code for Example Corp is @otp"}},
    {"id": {"S": "2"}, "messagetype": {"S": "voice call"}, "language": {"S": "en"},
     "message": {"S": "<speak> <prosody rate='slow'> Your code is <emphasis>@otp</emphasis>. "
                      "<break time='0.5s'/> Again, <emphasis>@otp2</emphasis> <amazon:effect "
                      "phonation='soft'>Goodbye.</amazon:effect> </prosody> </speak>"},
     "voiceid": {"S": "MATTHEW"}},
    {"id": {"S": "3"}, "messagetype": {"S": "sms"}, "language": {"S": "es"},
     "message": {"S": "Su código de acceso de Example Corp es @otp"}},
], "Count": 3, "ScannedCount": 3}


def test_cli_import_export_aws_round_trip(make_server, tmp_path):
    s = make_server()
    src = tmp_path / "scan.json"
    src.write_text(json.dumps(AWS_ITEMS))
    s.cli("templates", "import-aws", str(src))
    sighup(s, "templates")
    _, _, body = s.post(okta_request(otp="482913", locale="en", channel="voice"))
    msg = sent(s, body)
    assert msg["voice_id"] == "Matthew" and msg["body"].count("4, 8, 2, 9, 1, 3") == 2
    _, _, body = s.post(okta_request(otp="482914", locale="en"))
    assert sent(s, body)["body"] == "Your sign-in code for Example Corp is 482914"
    out = tmp_path / "export.json"
    s.cli("templates", "export", "--aws", str(out))
    back = json.loads(out.read_text())
    key = lambda i: (i["language"]["S"], i["messagetype"]["S"])  # noqa: E731
    want = sorted(AWS_ITEMS["Items"], key=key)
    got = sorted(back["Items"], key=key)
    assert back["Count"] == 3
    assert [{k: v for k, v in i.items() if k != "id"} for i in got] == \
        [{k: v for k, v in i.items() if k != "id"} for i in want]
    # the export imports again, and --builtin adds the pack where nothing overrides it
    s.cli("templates", "import-aws", str(out), "--dry-run")
    allout = json.loads(s.cli("templates", "export", "--aws", "--builtin").stdout)
    # 3 stored, and the pack's 28 SMS and 18 voice texts but the 3 they override
    assert allout["Count"] == 3 + (28 + 18 - 3)
    assert s.stop() == 0


def test_cli_import_refuses_bad_items(make_server, tmp_path):
    s = make_server("message.max_sms_segments = 1", start=False)
    bad = tmp_path / "bad.json"
    items = {"Items": [{"language": {"S": "es"}, "messagetype": {"S": "sms"}, "message": {
        "S": "Su código de acceso de un solo uso del servicio AWS End User Messaging es @otp"}}]}
    bad.write_text(json.dumps(items))
    r = s.cli("templates", "import-aws", str(bad), check=False)
    assert r.returncode == 2 and "max_sms_segments" in r.stderr and "nothing imported" in r.stderr
    bad.write_text("{not json")
    assert s.cli("templates", "import-aws", str(bad), check=False).returncode == 2
    assert s.cli("templates", "import-aws", str(tmp_path / "absent.json"),
                 check=False).returncode == 2
    s.start()
    assert s.db_rows("SELECT count(*) FROM templates")[0][0] == 0
    assert s.stop() == 0


def test_cli_templates_check(make_server):
    s = make_server("message.max_sms_segments = 1", start=False)
    s.cli("templates", "set", "de", "sms", "{{otp}} ist Ihr Code")
    assert s.cli("templates", "check").returncode == 0
    con = sqlite3.connect(s.db, timeout=10)
    con.execute("INSERT INTO templates VALUES ('fr', 'voice', '<speak>Code {{otp_spaced}}"
                "</speak>', 'Joanna', 1)")
    con.commit()
    con.close()
    r = s.cli("templates", "check", check=False)
    assert r.returncode == 1
    assert "ERROR fr/voice" in r.stdout and "Joanna speaks en-US" in r.stdout
    assert "OK    de/sms" in r.stdout


def test_cli_preview_and_check_as_json(make_server):
    s = make_server("message.sms_prices = DE:0.09", start=False)
    doc = json.loads(s.cli("templates", "preview", "de-AT", "sms", "--expires", "1", "--country",
                           "de", "--json").stdout)
    assert (doc["requested"], doc["language"], doc["source"], doc["last_resort"]) == (
        "de-at", "de", "builtin", False)
    assert doc["text"] == "12345678 ist Ihr Bestätigungscode. Er ist 1 Minute gültig."
    assert (doc["charset"], doc["units"], doc["segments"]) == ("GSM-7", 58, 1)
    assert doc["cost"] == {"country": "DE", "usd_per_segment": 0.09, "usd": 0.09,
                           "price_from": "message.sms_prices"}
    doc = json.loads(s.cli("templates", "preview", "th", "voice", "--json").stdout)
    assert (doc["language"], doc["voice_id"], doc["voice_locale"]) == ("en", "Joanna", "en-US")
    assert "no Amazon Polly voice" in doc["note"]
    s.cli("templates", "set", "de", "sms", "{{otp}} ist Ihr Code")
    con = sqlite3.connect(s.db, timeout=10)
    con.execute("INSERT INTO templates VALUES ('it', 'voice', '<speak>{{otp_spaced}}</speak>', "
                "'Hans', 1)")
    con.commit()
    con.close()
    r = s.cli("templates", "check", "--json", check=False)
    assert r.returncode == 1 and "2 stored templates: 1 ok" in r.stderr
    got = {(c["language"], c["channel"]): c for c in json.loads(r.stdout)}
    assert got[("de", "sms")]["result"] == "ok"
    assert got[("de", "sms")]["findings"] == "GSM-7, 21 units, 1 segment"
    assert got[("it", "voice")]["result"] == "error"
    assert "voice Hans speaks de-DE" in got[("it", "voice")]["findings"]
