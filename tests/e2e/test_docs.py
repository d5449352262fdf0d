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

    # the text the README shows: the sample's code expired long ago, so "1 minute" (not "1 minutes")
    (text,) = s.db_rows("SELECT body FROM outbox WHERE id = ?", (sms["transactionId"],))[0]
    assert text == "11111 is your verification code. It expires in 1 minute."
    with open(os.path.join(ROOT, "README.md")) as f:
        assert "    " + text + "\n" in f.read()

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


# ---- every INI snippet in the docs loads to the values it shows ----

import re
import subprocess
import textwrap

from conftest import BIN

ROOT = os.path.join(os.path.dirname(__file__), "../..")
DOC_FILES = ["README.md"] + [os.path.join("docs", f) for f in sorted(os.listdir(DOCS))
                             if f.endswith(".md")]


def ini_snippets():
    """(file, line, text) of every ```ini block in README.md and docs/*.md."""
    out = []
    for name in DOC_FILES:
        lines = open(os.path.join(ROOT, name)).read().splitlines()
        i = 0
        while i < len(lines):
            if lines[i].strip() == "```ini":
                start, body = i + 1, []
                i += 1
                while i < len(lines) and lines[i].strip() != "```":
                    body.append(lines[i])
                    i += 1
                out.append((name, start, textwrap.dedent("\n".join(body))))
            i += 1
    return out


def shown_value(raw):
    """The value a reader sees in a doc's `key = value # comment` line, by the documented rule."""
    raw = raw.strip()
    m = re.match(r'^"([^"]*)"\s*(?:[#;].*)?$', raw)
    if m:
        return m.group(1)
    m = re.search(r"[ \t][#;]", raw)
    return (raw[:m.start()] if m else raw).strip()


def test_docs_have_ini_snippets():
    assert len(ini_snippets()) >= 5


def test_every_ini_snippet_loads_as_shown(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("s3cr3t-" + "x" * 32 + "\n")
    secret.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEHOOK_", "AWS_"))}
    env["HOME"] = str(tmp_path)
    defaults = subprocess.run([BIN, "-c", "/dev/null", "config", "show"], env=env,
                              capture_output=True, text=True, timeout=30).stdout
    known = set(re.findall(r"^(\w+) =", defaults, re.M))
    for name, line, text in ini_snippets():
        where = f"{name}:{line}"
        expected, section, conf = {}, None, []
        for l in text.splitlines():
            s = l.strip()
            if not s or s[0] in "#;":
                conf.append(l)
                continue
            m = re.match(r"^\[(\w+)\]$", s)
            if m:
                section = m.group(1)
                conf.append(l)
                continue
            key, _, raw = s.partition("=")
            key = key.strip()
            assert section and _, f"{where}: not key = value: {l!r}"
            if key.endswith("_file") and key not in known:
                # a secret file the reader creates: ours stands in for it
                conf.append(f"{key} = {secret}")
                expected[(section, key[:-5])] = "********"
                continue
            conf.append(l)
            expected[(section, key)] = shown_value(raw)
        path = tmp_path / "snippet.conf"
        path.write_text("\n".join(conf) + "\n")
        r = subprocess.run([BIN, "-c", str(path), "config", "show"], env=env,
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, f"{where}: does not load: {r.stderr}"
        got, sect = {}, None
        for l in r.stdout.splitlines():
            m = re.match(r"^\[(\w+)\]$", l)
            if m:
                sect = m.group(1)
            elif " = " in l or l.endswith(" ="):
                k, _, v = l.partition(" =")
                got[(sect, k)] = v.strip()
        for k, v in expected.items():
            assert got.get(k) == v, f"{where}: [{k[0]}] {k[1]} loads as {got.get(k)!r}, shown {v!r}"


# ---- the least-privilege IAM policy of docs/deploy.md ----

def test_iam_policy_is_least_privilege():
    """docs/aws-iam-policy.json parses, allows exactly the End User Messaging actions telehook
    calls (the X-Amz-Target operations in src/provider/aws.c), and only on named resources —
    except PutMessageFeedback ([feedback] aws), alone in its statement on "*": it names a message
    id, which no policy can list ahead; and,
    in a statement of its own, kms:Decrypt (what serve calls at start for [dlq] kms_key_id,
    src/aws/kms.c) on one named key ARN. Nothing else: GenerateDataKey is `dlq keygen --kms`, an
    operator's one-off, not the server's."""
    policy = json.load(open(os.path.join(DOCS, "aws-iam-policy.json")))
    assert policy["Version"] == "2012-10-17"
    src = open(os.path.join(ROOT, "src", "provider", "aws.c")).read()
    called = {"sms-voice:" + op for op in re.findall(r'"PinpointSMSVoiceV2\.(\w+)"', src)}
    assert called == {"sms-voice:SendTextMessage", "sms-voice:SendVoiceMessage",
                      "sms-voice:PutMessageFeedback"}, called
    kms_src = open(os.path.join(ROOT, "src", "aws", "kms.c")).read()
    assert '"TrentService.Decrypt"' in kms_src
    arn_of = {"sms-voice": r"^arn:aws:sms-voice:[a-z0-9-]+:\d{12}:"
                           r"(phone-number|pool|sender-id|configuration-set)/\S+$",
              "kms": r"^arn:aws:kms:[a-z0-9-]+:\d{12}:key/[0-9a-f-]{36}$"}
    allowed = {"sms-voice": set(), "kms": set()}
    for st in policy["Statement"]:
        assert st["Effect"] == "Allow"
        assert set(st) <= {"Sid", "Effect", "Action", "Resource"}, st  # no NotAction, Condition
        actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        assert all("*" not in a for a in actions), actions
        services = {a.split(":", 1)[0] for a in actions}
        assert len(services) == 1 and services <= set(allowed), actions  # one service each
        service = services.pop()
        allowed[service] |= set(actions)
        resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
        assert resources
        if actions == ["sms-voice:PutMessageFeedback"] and resources == ["*"]:
            continue
        for arn in resources:
            assert "*" not in arn
            assert re.match(arn_of[service], arn), arn
    assert allowed["sms-voice"] == called
    assert allowed["kms"] == {"kms:Decrypt"}
    assert "aws-iam-policy.json" in open(os.path.join(DOCS, "deploy.md")).read()
