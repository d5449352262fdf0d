"""The admin CLI as an admin meets it: help for every command, options in any position, errors
that name the bad value, exit codes, --json, empty lists, the helpdesk's search, templates and
routes refused with the reason."""
import json
import re
import subprocess

import pytest

from conftest import BIN, ES_NUMBER, SLOW, US_NUMBER, okta_request

# Every command the dispatcher knows, and what its help must mention.
COMMANDS = {
    ("serve",): ["SIGHUP"],
    ("config", "check"): ["--json", "-t"],
    ("config", "show"): ["--json"],
    ("templates", "list"): ["--json"],
    ("templates", "set"): ["LANG CHANNEL BODY [VOICE_ID]", "--force", "{{otp}}", "<speak>"],
    ("templates", "delete"): ["LANG CHANNEL"],
    ("templates", "preview"): ["LANG CHANNEL", "--otp CODE", "--first-name NAME",
                               "--last-name NAME", "--login LOGIN", "--expires MINUTES",
                               "--country CC", "--json", "message.sms_prices"],
    ("templates", "check"): ["--json", "max_sms_segments", "Exit 1"],
    ("templates", "import-aws"): ["FILE", "--dry-run"],
    ("templates", "export"): ["[FILE]", "--aws", "--builtin"],
    ("prefs", "set"): ["USER LANG [CHANNEL]", "hint"],
    ("prefs", "list"): ["--json"],
    ("prefs", "delete"): ["USER"],
    ("routes", "list"): ["--json"],
    ("routes", "set"): ["CHANNEL COUNTRY ATTEMPTS", "--force"],
    ("routes", "delete"): ["CHANNEL COUNTRY"],
    ("routes", "import-aws"): ["FILE [PROVIDER]", "--force"],
    ("outbox", "list"): ["--limit N", "--json"],
    ("deliveries", "list"): ["--limit N", "--since TIME", "--until TIME", "--outcome", "--provider",
                             "--country", "--channel", "--event-id", "--user", "--phone",
                             "--json"],
    ("deliveries", "show"): ["REQUEST_ID", "--json"],
    ("dlq", "list"): ["--limit N", "--json"],
    ("dlq", "show"): ["ID", "--json"],
    ("dlq", "replay"): ["ID"],
    ("dlq", "purge"): ["--older-than DAYS"],
    ("dlq", "keygen"): ["[dlq] key"],
    ("token", "keygen"): ["--alg", "--kid", "--dir"],
    ("token", "mint"): ["--key", "--ttl", "--cid", "--scope", "--iss", "--aud", "--claim"],
    ("store", "copy"): ["FROM TO", "--dry-run", "--append", "--json", "config:FILE"],
    ("guard", "show"): ["--phone NUMBER", "--user USER", "--country CC", "--calling-code CODE",
                        "--json"],
    ("guard", "reset"): ["--phone NUMBER", "--user USER", "--country CC", "--calling-code CODE"],
    ("version",): ["--json"],
}
GROUPS = sorted({c[0] for c in COMMANDS if len(c) == 2})
EXIT_TEXT = "exit status: 0 done; 1"


def run(s, *args, env=None):
    """The binary without the harness's leading -c (so tests place it themselves)."""
    return subprocess.run([BIN, *args], env=dict(s.env, **(env or {})), capture_output=True,
                          text=True, timeout=30 * SLOW)


def rows(s, *args):
    r = s.cli(*args, "--json")
    return json.loads(r.stdout)


# ---- help ------------------------------------------------------------------------------------

def test_usage_lists_every_command(make_server):
    s = make_server(start=False)
    r = run(s, "--help")
    assert r.returncode == 0 and r.stderr == ""
    for cmd in COMMANDS:
        assert "\n  " + " ".join(cmd) in r.stdout, cmd
    assert EXIT_TEXT in r.stdout and "2 usage or configuration error" in r.stdout
    assert r.stdout == run(s, "help").stdout == run(s, "-h").stdout
    # no command at all: the same text on stderr, and a usage error
    r = run(s)
    assert r.returncode == 2 and r.stdout == "" and "commands:" in r.stderr


@pytest.mark.parametrize("cmd", sorted(COMMANDS))
def test_help_for_every_command(make_server, cmd):
    s = make_server(start=False)
    for args in ([*cmd, "--help"], [*cmd, "-h"], ["help", *cmd], ["--help", *cmd]):
        r = s.cli(*args)
        assert r.returncode == 0, (args, r.stderr)
        assert r.stdout.startswith("usage: telehook " + " ".join(cmd)), (args, r.stdout)
        for word in COMMANDS[cmd] + ["-c, --config FILE", "-h, --help", EXIT_TEXT]:
            assert word in r.stdout, (args, word)


@pytest.mark.parametrize("group", GROUPS)
def test_help_for_every_group(make_server, group):
    s = make_server(start=False)
    subs = [c[1] for c in COMMANDS if c[0] == group]
    for args in ([group, "--help"], ["help", group]):
        r = s.cli(*args)
        assert r.returncode == 0 and r.stdout.startswith(f"usage: telehook {group} SUBCOMMAND")
        for sub in subs:
            assert f"\n  {group} {sub}" in r.stdout, (args, sub)
    # no subcommand: a usage error naming them
    r = s.cli(group, check=False)
    assert r.returncode == 2 and ", ".join(subs) in r.stderr


def test_help_needs_no_working_configuration(make_server):
    s = make_server(start=False)
    r = run(s, "-c", "/nonexistent/telehook.conf", "deliveries", "list", "--help")
    assert r.returncode == 0 and "--phone" in r.stdout


def test_version(make_server):
    s = make_server(start=False)
    text = run(s, "version").stdout
    assert text.startswith("telehook ") and run(s, "--version").stdout == text
    doc = json.loads(run(s, "--version", "--json").stdout)
    assert doc == {"name": "telehook", "version": text.split()[1]}
    assert json.loads(run(s, "version", "--json").stdout) == doc


# ---- options anywhere, errors naming the value, exit codes -------------------------------------

def test_options_in_any_position(make_server):
    s = make_server()
    _, headers, _ = s.post(okta_request())
    s.wait_rows("SELECT count(*) FROM deliveries", 1)
    c = s.conf
    outs = [run(s, *args) for args in (
        ["deliveries", "list", "-n", "5", "-c", c],
        ["-c", c, "deliveries", "list", "-n", "5"],
        ["deliveries", "-c", c, "list", "--limit", "5"],
        ["deliveries", "list", "--limit=5", f"--config={c}"],
        ["-n5", "deliveries", "list", "--config", c],
    )]
    for r in outs:
        assert r.returncode == 0, r.stderr
        assert headers["x-request-id"] in r.stdout
    assert len({r.stdout for r in outs}) == 1
    assert s.stop() == 0


@pytest.mark.parametrize("args,message", [
    (["deliveries", "list", "-n", "abc"], "telehook: -n: 'abc' is not a number from 1 to 100000"),
    (["deliveries", "list", "--limit=0"], "--limit: '0' is not a number from 1 to 100000"),
    (["outbox", "list", "-n", "100001"], "-n: '100001' is not a number"),
    (["dlq", "list", "-n", "5x"], "-n: '5x' is not a number"),
    (["deliveries", "list", "--since", "yesterday"], "--since: 'yesterday' is not a time"),
    (["deliveries", "list", "--until", "5y"], "--until: '5y' is not a time"),
    (["deliveries", "list", "--outcome", "sent"],
     "--outcome: 'sent' is not one of SUCCESSFUL, FAILED, TIMEOUT, REJECTED, BLOCKED, DUPLICATE, "
     "OVERLOAD, ERROR"),
    (["deliveries", "list", "--channel", "fax"], "--channel: 'fax' is not one of sms, voice"),
    (["deliveries", "list", "--provider", "pigeon"],
     "--provider: 'pigeon' is not one of outbox, aws, twilio, webhook"),
    (["deliveries", "list", "--country", "XX"], "--country: 'XX' is not an ISO 3166"),
    (["deliveries", "list", "--country", "USA"], "--country: 'USA' is not an ISO 3166"),
    (["deliveries", "list", "--outcom", "FAILED"], "unknown option '--outcom'"),
    (["deliveries", "list", "-n"], "-n needs a value"),
    (["deliveries", "list", "--json=yes"], "--json takes no value"),
    (["routes", "list", "--outcome", "FAILED"], "routes list: --outcome is not an option"),
    (["routes", "list", "extra"], "routes list: unexpected argument 'extra'"),
    (["routes", "set", "sms"], "routes set: needs CHANNEL COUNTRY ATTEMPTS"),
    (["routes", "frobnicate"], "unknown subcommand 'frobnicate' (list, set, delete, import-aws)"),
    (["frobnicate"], "unknown command 'frobnicate'"),
    (["dlq", "purge", "--older-than", "x"], "--older-than: 'x' is not a number from 0 to 36500"),
    (["dlq", "purge"], "either an ID or --older-than DAYS"),
    (["token", "keygen", "--alg", "HS256"], "--alg: 'HS256' is not one of RS256, ES256"),
    (["token", "mint", "--key", "k", "--claim", "novalue"], "--claim: 'novalue' is not NAME=VALUE"),
    (["templates", "set", "english", "sms", "{{otp}}"], "LANG: 'english' is not a language tag"),
    (["templates", "set", "en", "fax", "{{otp}}"], "CHANNEL: 'fax' is not one of sms, voice"),
    (["templates", "set", "en", "sms", "-x {{otp}}"], "unknown option '-x'"),
    (["templates", "preview", "xx!", "sms"], "LANG: 'xx!' is not a language tag"),
    (["templates", "preview", "de", "fax"], "CHANNEL: 'fax' is not one of sms, voice"),
    (["templates", "preview", "de", "sms", "--expires", "0"],
     "--expires: '0' is not a number from 1 to 1440"),
    (["templates", "preview", "de", "sms", "--country", "XX"], "--country: 'XX' is not an ISO 3166"),
    (["templates", "preview", "de", "sms", "--otp", "12 34"],
     "--otp: '12 34' is not 1 to 16 letters or digits"),
    (["templates", "preview", "de", "sms", "--force"], "templates preview: --force is not an option"),
    (["templates", "export"], "which format? --aws"),
    (["templates", "import-aws"], "templates import-aws: needs FILE"),
    (["prefs", "set", "u", "english"], "LANG: 'english' is not a language tag"),
    (["prefs", "set", "u", "en", "fax"], "CHANNEL: 'fax' is not one of sms, voice"),
    (["prefs", "set", " u", "en"], "USER: ' u' is not an Okta userId or login"),
    (["prefs", "delete"], "prefs delete: needs USER"),
    (["prefs", "nope"], "unknown subcommand 'nope' (set, list, delete)"),
])
def test_bad_values_are_named(make_server, args, message):
    s = make_server(start=False)
    r = s.cli(*args, check=False)
    assert r.returncode == 2, (args, r.stderr)
    assert message in r.stderr, (args, r.stderr)
    assert r.stdout == ""


def test_filters_ignore_case(make_server):
    s = make_server()
    _, h_us, _ = s.post(okta_request())
    _, h_es, _ = s.post(okta_request(phone=ES_NUMBER, channel="voice"))
    s.wait_rows("SELECT count(*) FROM deliveries", 2)
    ids = lambda *a: [r["request_id"] for r in rows(s, "deliveries", "list", *a)]
    assert ids("--outcome", "successful", "--channel", "SMS") == [h_us["x-request-id"]]
    assert ids("--country", "es") == [h_es["x-request-id"]]
    assert ids("--channel", "Voice", "--provider", "OUTBOX") == [h_es["x-request-id"]]
    assert ids("--outcome", "FAILED") == []
    assert s.stop() == 0


def test_exit_codes(make_server, tmp_path):
    s = make_server(start=False)
    assert s.cli("routes", "list").returncode == 0
    # 1: the command ran and failed
    r = s.cli("deliveries", "show", "r-nope", check=False)
    assert r.returncode == 1 and "no delivery record r-nope" in r.stderr
    r = s.cli("routes", "delete", "sms", "US", check=False)
    assert r.returncode == 1 and "no such route" in r.stderr
    r = s.cli("routes", "list", check=False, env={"TELEHOOK_STORE_URL": "sqlite:/proc/nope/x.db"})
    assert r.returncode == 1
    # 2: the configuration is wrong
    r = s.cli("routes", "list", check=False, env={"TELEHOOK_SERVER_THREADS": "many"})
    assert r.returncode == 2 and "TELEHOOK_SERVER_THREADS" in r.stderr
    r = run(s, "-c", str(tmp_path / "missing.conf"), "routes", "list")
    assert r.returncode == 2


# ---- --json and empty lists --------------------------------------------------------------------

def test_empty_lists_say_none(make_server):
    s = make_server(start=False)
    for cmd in (("outbox", "list"), ("deliveries", "list"), ("routes", "list"), ("dlq", "list"),
                ("prefs", "list")):
        r = s.cli(*cmd)
        assert r.stdout == "(none)\n", cmd
        assert json.loads(s.cli(*cmd, "--json").stdout) == [], cmd
    r = s.cli("deliveries", "list", "--phone", US_NUMBER, check=False)  # no [guard] secret here
    assert r.returncode == 2 and "[guard] secret" in r.stderr


def test_tables_have_headers(make_server):
    s = make_server()
    s.post(okta_request())
    s.wait_rows("SELECT count(*) FROM deliveries", 1)
    s.cli("routes", "set", "sms", "US", "outbox")
    s.cli("prefs", "set", "test.user@example.com", "de")
    heads = {
        ("deliveries", "list"): ["TIME", "REQUEST_ID", "OUTCOME", "PHONE", "PROVIDER"],
        ("outbox", "list"): ["TIME", "ID", "TO", "CHANNEL"],
        ("templates", "list"): ["LANGUAGE", "CHANNEL", "SOURCE", "VOICE", "TEXT"],
        ("routes", "list"): ["CHANNEL", "COUNTRY", "ATTEMPTS"],
        ("prefs", "list"): ["USER", "LANGUAGE", "CHANNEL", "UPDATED"],
    }
    for cmd, words in heads.items():
        first = s.cli(*cmd).stdout.splitlines()[0]
        assert all(w in first.split() for w in words), (cmd, first)
    assert s.stop() == 0


def test_json_outputs(make_server):
    s = make_server()
    _, h1, b1 = s.post(okta_request(otp="246810"))
    _, h2, _ = s.post(okta_request(phone=ES_NUMBER, channel="voice", locale="es"))
    s.wait_rows("SELECT count(*) FROM deliveries", 2)

    deliveries = rows(s, "deliveries", "list")
    assert [d["request_id"] for d in deliveries] == [h2["x-request-id"], h1["x-request-id"]]
    d = deliveries[1]
    assert (d["outcome"], d["phone"], d["country"], d["channel"], d["provider"]) == (
        "SUCCESSFUL", "+1201*****23", "US", "sms", "outbox")
    assert d["user_id"] == "00uyxxSknGtK8022w0g3" and d["attempts"] == 1
    assert d["transaction_id"] == b1["commands"][0]["value"][0]["transactionId"]
    assert d["time"].endswith("Z") and d["latency_us"] > 0
    assert "phone_hash" not in d and "login_hash" not in d
    shown = json.loads(s.cli("deliveries", "show", h1["x-request-id"], "--json").stdout)
    assert shown == d

    outbox = rows(s, "outbox", "list")
    assert len(outbox) == 2 and outbox[1]["to"] == US_NUMBER and "246810" in outbox[1]["body"]
    assert outbox[1]["id"] == d["transaction_id"]
    assert len(rows(s, "outbox", "list", "-n", "1")) == 1

    # nothing stored (the seeds went in schema 7): the built-in language pack, marked so
    templates = rows(s, "templates", "list")
    assert {t["source"] for t in templates} == {"builtin"}
    assert len(templates) == 28 + 18  # every language's SMS, and voice where Polly speaks it
    en = {t["channel"]: t for t in templates if t["language"] == "en"}
    assert en["sms"]["body"] == "{{otp}} is your verification code. It expires in {{expires}}."
    assert en["voice"]["voice_id"] == "Joanna" and en["sms"]["updated"] is None
    assert (d["locale"], d["preference"]) == ("en-us", "")
    assert rows(s, "routes", "list") == [] and rows(s, "dlq", "list") == []

    cfg = rows(s, "config", "show")
    assert cfg["store"]["url"] == "sqlite:" + s.db
    assert cfg["server"]["threads"] == 2 and cfg["guard"]["dedupe"] is True
    assert cfg["auth"]["header_secret"] == "********" and s.secret not in json.dumps(cfg)
    r = s.cli("config", "check", "--json")
    assert json.loads(r.stdout) == cfg and "configuration OK" in r.stderr
    r = run(s, "-t", "--json", "-c", s.conf)
    assert r.returncode == 0 and json.loads(r.stdout) == cfg
    assert s.stop() == 0


# ---- the helpdesk's search -----------------------------------------------------------------------

GUARD_SECRET = "guard.secret = helpdesk-test-secret-0123456789"


def with_user(body, login, user_id):
    body["data"]["userProfile"].update({"login": login, "userId": user_id})
    return body


def test_deliveries_found_by_event_user_and_phone(make_server):
    s = make_server(GUARD_SECRET)
    a = okta_request(phone="+1 (201) 555-0123")
    b = with_user(okta_request(phone=ES_NUMBER), "other.user@example.com", "00uOTHER000000000000")
    c = okta_request(phone="12015550123", channel="voice")
    ids = {}
    for name, body in (("a", a), ("b", b), ("c", c)):
        ids[name] = s.post(body)[1]["x-request-id"]
    s.wait_rows("SELECT count(*) FROM deliveries", 3)

    def found(*args):
        return sorted(r["request_id"] for r in rows(s, "deliveries", "list", *args))

    us = sorted([ids["a"], ids["c"]])
    # the number in any format, normalised to E.164 before it is hashed
    for number in ("+1 201-555-0123", "+12015550123", "+1 (201) 555.0123"):
        assert found("--phone", number) == us, number
    assert found("--phone", "+34 612 34 56 78") == [ids["b"]]
    assert found("--phone", "+1 201-555-0199") == []
    # Okta's user id, or the login (any case) through its HMAC
    assert found("--user", "00uyxxSknGtK8022w0g3") == us
    assert found("--user", "Test.User@EXAMPLE.com") == us
    assert found("--user", "other.user@example.com") == [ids["b"]]
    assert found("--event-id", b["eventId"]) == [ids["b"]]
    assert found("--phone", US_NUMBER, "--channel", "voice") == [ids["c"]]
    # neither the number nor the login is kept or shown in clear
    for text in (s.cli("deliveries", "list").stdout, s.cli("deliveries", "list", "--json").stdout,
                 s.cli("deliveries", "show", ids["a"]).stdout):
        assert "2015550123" not in text and "612345678" not in text
        assert "test.user@example.com" not in text
    for row in s.db_rows("SELECT * FROM deliveries"):
        for v in row:
            assert "2015550123" not in str(v) and "612345678" not in str(v), row
            assert "@example.com" not in str(v), row
    r = s.cli("deliveries", "list", "--phone", "+1 201", check=False)
    assert r.returncode == 2 and "'+1 201' is not a valid phone number" in r.stderr
    assert s.stop() == 0


def test_national_number_uses_default_region(make_server):
    s = make_server(GUARD_SECRET + "\nphone.default_region = ES")
    _, h, _ = s.post(okta_request(phone=ES_NUMBER))
    s.wait_rows("SELECT count(*) FROM deliveries", 1)
    assert [r["request_id"] for r in rows(s, "deliveries", "list", "--phone", "612 34 56 78")] == [
        h["x-request-id"]]
    assert s.stop() == 0


def test_search_without_guard_secret(make_server):
    """Without [guard] secret nothing searchable is kept: --phone says so, --user matches ids."""
    s = make_server()
    _, h, _ = s.post(okta_request())
    s.wait_rows("SELECT count(*) FROM deliveries", 1)
    assert s.db_rows("SELECT phone_hash, login_hash FROM deliveries") == [("", "")]
    r = s.cli("deliveries", "list", "--phone", US_NUMBER, check=False)
    assert r.returncode == 2 and "[guard] secret" in r.stderr
    r = s.cli("deliveries", "list", "--user", "00uyxxSknGtK8022w0g3", "--json")
    assert [d["request_id"] for d in json.loads(r.stdout)] == [h["x-request-id"]]
    assert "Okta user ids only" in r.stderr
    assert s.stop() == 0


# ---- templates and routes refused with the reason ------------------------------------------------

@pytest.mark.parametrize("args,reason", [
    (["en", "sms", "Your code is ready"], "never gives the code"),
    (["en", "sms", "Hello {{first_name}}, {{expires_minutes:minute|minutes}}"],
     "never gives the code"),
    (["en", "sms", "Code {{code}}"], "unknown placeholder '{{code}}'"),
    (["en", "sms", "Code {{expires_minutes:minute}} {{otp}}"], "plural form"),
    (["en", "sms", "Code {{otp}}", "Joanna"], "voice id is for voice templates"),
    (["en", "voice", "Your code is {{otp_spaced}}"], "outside <speak>"),
    (["en", "voice", "<speak>Your code is {{otp_spaced}}"], "<speak> is not closed"),
    (["en", "voice", "<speak>{{otp_spaced}}<break time=1s/></speak>"], "quoted"),
    (["en", "voice", "<speak>{{otp_spaced}} & more</speak>"], "&amp;"),
    (["en", "voice", "<speak>{{otp_spaced}}</speak>", "Jonna"], "'Jonna' is not an Amazon Polly voice"),
])
def test_templates_set_refuses_with_the_reason(make_server, args, reason):
    s = make_server(start=False)
    before = s.cli("templates", "list", "--json").stdout
    r = s.cli("templates", "set", *args, check=False)
    assert r.returncode == 2 and reason in r.stderr, r.stderr
    assert s.cli("templates", "list", "--json").stdout == before  # nothing stored


def test_templates_set_says_encoding_and_segments(make_server):
    """templates set checks as templates check does: the SMS's encoding and segments are
    printed, a warning over one segment, a refusal over message.max_sms_segments."""
    s = make_server(start=False)
    r = s.cli("templates", "set", "de", "sms", "{{otp}} ist Ihr Code")
    assert "template de/sms: GSM-7, 21 units, 1 segment\n" in r.stderr and "warning" not in r.stderr
    r = s.cli("templates", "set", "pl", "sms", "Twój kod: {{otp}}")
    assert "template pl/sms: UCS-2, 18 units, 1 segment" in r.stderr
    aws_es = "Su código de acceso de un solo uso del servicio AWS End User Messaging es @otp"
    r = s.cli("templates", "set", "es", "sms", aws_es)
    assert "warning: template es/sms: UCS-2, 82 units, 2 segments: over one segment" in r.stderr
    r = s.cli("templates", "set", "es", "sms", aws_es, check=False,
              env={"TELEHOOK_MESSAGE_MAX_SMS_SEGMENTS": "1"})
    assert r.returncode == 2 and "over message.max_sms_segments = 1" in r.stderr
    r = s.cli("templates", "set", "en", "voice", "<speak>{{otp_spaced}}</speak>")
    assert "warning: template en/voice: no voice" in r.stderr
    r = s.cli("templates", "set", "fr", "voice", "<speak>{{otp_spaced}}</speak>", "Joanna",
              check=False)
    assert r.returncode == 2 and "voice Joanna speaks en-US, not the template's language (fr)" \
        in r.stderr
    stored = {(t["language"], t["channel"]) for t in rows(s, "templates", "list")
              if t["source"] == "stored"}
    assert stored == {("de", "sms"), ("pl", "sms"), ("es", "sms"), ("en", "voice")}


def test_deliveries_show_locale_and_preference(make_server):
    s = make_server(start=False)
    s.cli("prefs", "set", "00uyxxSknGtK8022w0g3", "de", "voice")
    s.start()
    _, h, _ = s.post(okta_request(locale="fr-CA"))
    s.wait_rows("SELECT count(*) FROM deliveries", 1)
    out = s.cli("deliveries", "show", h["x-request-id"]).stdout
    assert re.search(r"^language +de$", out, re.M), out
    assert re.search(r"^locale +fr-ca$", out, re.M), out
    assert re.search(r"^preference +de/voice$", out, re.M), out
    shown = json.loads(s.cli("deliveries", "show", h["x-request-id"], "--json").stdout)
    assert (shown["language"], shown["locale"], shown["preference"]) == ("de", "fr-ca", "de/voice")
    assert s.stop() == 0


def test_templates_set_voice(make_server):
    s = make_server(start=False)
    s.cli("templates", "set", "fr", "voice", '<speak>Votre code: <say-as interpret-as="digits">'
          "{{otp}}</say-as>.</speak>", "lea")
    r = s.cli("templates", "set", "de", "voice", "<speak>{{otp_spaced}}</speak>", "MyVoice",
              "--force")
    assert "warning" in r.stderr
    got = {(t["language"], t["voice_id"]) for t in rows(s, "templates", "list")}
    assert ("fr", "Lea") in got and ("de", "MyVoice") in got  # a Polly name as Polly spells it


def test_routes_import_refuses_unconfigured_provider(make_server, tmp_path):
    f = tmp_path / "originationIdentities.json"
    f.write_text(json.dumps({"US": "+18665550100", "GB": "phone-0123"}))
    s = make_server(start=False)
    r = s.cli("routes", "import-aws", str(f), "webhook", check=False)
    assert r.returncode == 2 and "provider webhook is not configured" in r.stderr
    assert "[webhook] url" in r.stderr
    assert rows(s, "routes", "list") == []
    r = s.cli("routes", "import-aws", str(f), "webhook", "--force")
    assert r.stderr.count("warning") == 1  # once, not per route
    assert len(rows(s, "routes", "list")) == 4
