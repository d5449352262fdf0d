"""The dead-letter queue's key sealed by AWS KMS (envelope encryption): `dlq keygen --kms` has
FakeKMS generate a data key and keeps only the sealed blob (0600); serve opens it with a signed
KMS Decrypt at start, and refuses to start — as does `config check` — when it does not open
(wrong key, access denied, disabled, another master key, KMS down). Entries are sealed as with
a plain key, and `dlq show` / `replay` open them through KMS too. The data key is never in a
file or log."""
import base64
import json
import os
import stat

import pytest

from conftest import okta_request
from fakes import FakeKMS, FakeWebhook

REGION = "us-east-1"


@pytest.fixture
def kms():
    with FakeKMS(region=REGION) as f:
        yield f
        assert not f.errors, f.errors


@pytest.fixture
def webhook():
    with FakeWebhook() as f:
        yield f
        assert not f.errors, f.errors


def aws_env(kms, endpoint=None):
    akid, secret, _ = kms.credential
    return {"AWS_ACCESS_KEY_ID": akid, "AWS_SECRET_ACCESS_KEY": secret, "AWS_REGION": REGION,
            "AWS_ENDPOINT_URL_KMS": endpoint or kms.url}


def config(webhook, key_id, blob_file, extra=""):
    return f"""
        provider.name = webhook
        webhook.url = {webhook.url}/send
        webhook.secret = {webhook.secret}
        dlq.kms_key_id = {key_id}
        dlq.kms_data_key_file = {blob_file}
        {extra}"""


def make(make_server, tmp_path, kms, webhook, key_id=None, env=None, extra=""):
    blob = tmp_path / "dlq-data-key.kms"
    s = make_server(config(webhook, key_id or kms.alias, blob, extra), env=env or aws_env(kms),
                    start=False)
    return s, blob


def secrets_of(kms):
    """Every data key KMS handed out, as it could appear anywhere: raw, base64, hex."""
    out = []
    for k in kms.issued:
        out += [k, base64.b64encode(k), k.hex().encode()]
    return out


def assert_nowhere(root, needles):
    for dirpath, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as f:
                data = f.read()
            for n in needles:
                assert n not in data, f"{n!r} found in {name}"


def test_kms_sealed_dead_letter_queue(make_server, tmp_path, kms, webhook):
    s, blob = make(make_server, tmp_path, kms, webhook)
    r = s.cli("dlq", "keygen", "--kms")
    assert r.stdout == "" and str(blob) in r.stderr
    gen = kms.last(op="GenerateDataKey")
    assert gen["sig_ok"] and gen["sent"] and gen["headers"]["x-amz-target"] == \
        "TrentService.GenerateDataKey"
    assert gen["json"] == {"KeyId": kms.alias, "KeySpec": "AES_256"}
    assert "x-amz-target" in gen["signed_headers"]
    assert stat.S_IMODE(os.stat(blob).st_mode) == 0o600
    sealed = blob.read_text().strip()
    assert base64.b64decode(sealed, validate=True)  # the CiphertextBlob, base64
    # never over an existing data key: the entries it sealed would be lost
    again = s.cli("dlq", "keygen", "--kms", check=False)
    assert again.returncode == 1 and "exists" in again.stderr
    assert blob.read_text().strip() == sealed and kms.count(op="GenerateDataKey") == 1

    s.start()
    dec = kms.last(op="Decrypt")
    assert dec["sig_ok"] and dec["sent"] and dec["headers"]["x-amz-target"] == \
        "TrentService.Decrypt"
    assert dec["json"] == {"CiphertextBlob": sealed, "KeyId": kms.alias}
    assert dec["headers"]["content-type"] == "application/x-amz-json-1.1"
    assert dec["akid"] == kms.credential[0]

    webhook.default = "500"
    s.post(okta_request(otp="918273"))
    ((dlq_id, key_id, payload),) = s.db_rows("SELECT id, key_id, payload FROM dlq")
    assert key_id == "k1" and payload and b"918273" not in payload
    n = kms.count(op="Decrypt")
    shown = json.loads(s.cli("dlq", "show", dlq_id, "--json").stdout)
    assert "918273" in shown["message"]["body"]
    assert kms.count(op="Decrypt", sig_ok=True, sent=True) == n + 1  # the CLI asks KMS too
    webhook.default = "ok"
    r = s.cli("dlq", "replay", dlq_id)
    assert "delivered by webhook" in r.stdout and "918273" in webhook.last()["json"]["body"]
    assert s.db_rows("SELECT id FROM dlq") == []
    assert s.stop() == 0
    assert "918273" not in s.log_text()
    assert_nowhere(tmp_path, secrets_of(kms) + [b"918273"])


def test_without_kms_the_cli_cannot_open_entries(make_server, tmp_path, kms, webhook):
    s, blob = make(make_server, tmp_path, kms, webhook)
    s.cli("dlq", "keygen", "--kms")
    s.start()
    webhook.default = "500"
    s.post(okta_request(otp="445566"))
    ((dlq_id,),) = s.db_rows("SELECT id FROM dlq")
    kms.denied.add(kms.key_id)
    r = s.cli("dlq", "show", dlq_id, check=False)
    assert r.returncode != 0 and "AccessDeniedException" in r.stderr
    assert "445566" not in r.stdout + r.stderr


@pytest.mark.parametrize("case,reason", [
    ("denied", "AccessDeniedException"),
    ("disabled", "DisabledException"),
    ("unknown_key", "NotFoundException"),
    ("other_key", "IncorrectKeyException"),
    ("other_master", "InvalidCiphertextException"),
    ("down", "KMS Decrypt at http://127.0.0.1:9/"),
    ("no_file", "keygen --kms"),
])
def test_serve_and_config_check_refuse_when_the_data_key_does_not_open(
        make_server, tmp_path, kms, webhook, case, reason):
    s, blob = make(make_server, tmp_path, kms, webhook)
    if case != "no_file":
        s.cli("dlq", "keygen", "--kms")
    if case == "denied":
        kms.denied.add(kms.key_id)
    elif case == "disabled":
        kms.disabled.add(kms.key_id)
    elif case == "unknown_key":
        _rewrite(s, kms.alias, "alias/no-such-key")
    elif case == "other_key":
        other = kms.new_key()
        _rewrite(s, kms.alias, kms.arn(other))
    elif case == "other_master":
        kms.keys[kms.key_id] = os.urandom(32)  # the key's material is not the one that sealed
    elif case == "down":
        s.env["AWS_ENDPOINT_URL_KMS"] = "http://127.0.0.1:9"
    r = s.cli("config", "check", check=False)
    assert r.returncode == 2 and reason in r.stderr, r.stderr
    assert "configuration OK" not in r.stderr
    assert s.start(expect_fail=True) != 0
    assert reason in s.log_text()
    assert_nowhere(tmp_path, secrets_of(kms))


def _rewrite(s, old, new):
    with open(s.conf) as f:
        text = f.read()
    with open(s.conf, "w") as f:
        f.write(text.replace(f"kms_key_id = {old}", f"kms_key_id = {new}"))


def test_key_and_kms_exclude_each_other(make_server, tmp_path, kms, webhook):
    s, _ = make(make_server, tmp_path, kms, webhook,
                extra="dlq.key = AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")
    r = s.cli("config", "check", check=False)
    assert r.returncode == 2 and "exclude each other" in r.stderr
    assert kms.count() == 0


def test_rotation_keeps_older_entries_open(make_server, tmp_path, kms, webhook):
    s, blob = make(make_server, tmp_path, kms, webhook)
    s.cli("dlq", "keygen", "--kms")
    s.start()
    webhook.default = "500"
    s.post(okta_request(otp="111222"))
    assert s.stop() == 0
    # rotate: the old data key becomes the previous one, a new one under key_id k2
    old = tmp_path / "dlq-data-key.kms.old"
    os.rename(blob, old)
    _append(s, "dlq", {"key_id": "k2", "previous_key_id": "k1",
                       "previous_kms_data_key_file": str(old)})
    s.cli("dlq", "keygen", "--kms")
    (s.tmp / "port").unlink()  # the first run's port
    s.start()
    s.post(okta_request(otp="333444"))
    rows = dict(s.db_rows("SELECT key_id, id FROM dlq"))
    assert set(rows) == {"k1", "k2"}
    for kid, otp in (("k1", "111222"), ("k2", "333444")):
        shown = json.loads(s.cli("dlq", "show", rows[kid], "--json").stdout)
        assert otp in shown["message"]["body"]
    # the previous blob is opened without a KeyId: KMS finds its key in the blob
    assert any(r["json"] == {"CiphertextBlob": old.read_text().strip()}
               for r in kms.matching(op="Decrypt"))
    assert s.stop() == 0


def _append(s, section, kv):
    with open(s.conf) as f:
        lines = f.read().splitlines()
    at = lines.index(f"[{section}]") + 1
    drop = {f"{k} =" for k in kv}
    lines = [l for l in lines if not any(l.startswith(d) for d in drop)]
    at = lines.index(f"[{section}]") + 1
    for k, v in kv.items():
        lines.insert(at, f"{k} = {v}")
    with open(s.conf, "w") as f:
        f.write("\n".join(lines) + "\n")
