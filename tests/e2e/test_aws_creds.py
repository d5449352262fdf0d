"""Where AWS credentials come from, end to end: assume-role profiles (source_profile chains,
credential_source), web identity (EKS IRSA variables and profile keys, with token rotation),
credential_process, long session tokens in the shared files, and a named profile that does not
exist. The real binary talks to FakeSTS (Query protocol, SigV4 checked with botocore) through
AWS_ENDPOINT_URL_STS and sends an SMS to FakeEUM, which accepts only the credentials STS issued
(or the process printed): a message that arrives proves the whole chain."""
import json
import os
import re
import secrets
import time

import pytest

from conftest import SLOW, okta_request
from fakes import FakeEUM, FakeSTS

ORIGINATOR = "+12065550100"
ROLE = "arn:aws:iam::123456789012:role/telehook-sms"
ROLE_MID = "arn:aws:iam::123456789012:role/telehook-hop"
REGION = "eu-west-1"


@pytest.fixture
def sts():
    with FakeSTS(region=REGION) as f:
        yield f
        assert not f.errors, f.errors


@pytest.fixture
def eum(sts):
    """Accepts exactly what the fake STS issued (the same list object)."""
    with FakeEUM(region=REGION) as f:
        f.credentials = sts.issued
        yield f
        assert not f.errors, f.errors


def static_key():
    return ("AKIA" + secrets.token_hex(8).upper(), "src-" + secrets.token_urlsafe(30), None)


def aws_config(eum, profile=None):
    conf = f"""
        provider.name = aws
        aws.region = {REGION}
        aws.endpoint = {eum.url if eum else "http://127.0.0.1:9"}
        aws.origination_identity = {ORIGINATOR}"""
    return conf + (f"\n        aws.profile = {profile}" if profile else "")


def aws_files(tmp_path, config="", credentials=""):
    d = tmp_path / f"aws-{secrets.token_hex(3)}"
    d.mkdir()
    (d / "config").write_text(config)
    (d / "credentials").write_text(credentials)
    return {"AWS_CONFIG_FILE": str(d / "config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(d / "credentials")}


def wait_ready(s, timeout=10):
    deadline = time.monotonic() + timeout * SLOW
    while time.monotonic() < deadline:
        if s.request("GET", "/readyz")[0] == 200:
            return
        time.sleep(0.05)
    raise AssertionError("server never became ready: " + s.log_text())


def wait_log(s, pred, timeout=10):
    deadline = time.monotonic() + timeout * SLOW
    while time.monotonic() < deadline:
        hits = [l for l in s.logs() if pred(l)]
        if hits:
            return hits
        time.sleep(0.05)
    raise AssertionError("no such log line: " + s.log_text())


def send_ok(s, eum):
    status, _, body = s.post(okta_request())
    assert status == 200 and "error" not in body, body
    rec = eum.last()
    assert rec["valid"] and rec["op"] == "SendTextMessage", rec["reason"]
    return rec


def source_line(s):
    """The provider's start-up line naming the credentials source."""
    (line,) = [l for l in s.logs() if l.get("event") == "aws"]
    return line["msg"]


def assert_no_secrets(s, *creds):
    text = s.log_text()
    for c in creds:
        for v in (c if isinstance(c, tuple) else (c,)):
            if v and len(v) > 8:
                assert v not in text, "a secret reached the log"


# ---- assume role -----------------------------------------------------------------------------

def test_role_from_source_profile_with_static_keys(make_server, sts, eum, tmp_path):
    base = static_key()
    sts.credentials = [base]
    sts.token_suffix = "&<>"  # arrives as &amp;&lt;&gt;: telehook must decode the entities
    env = aws_files(tmp_path,
                    config=f"[profile app]\nrole_arn = {ROLE}\nsource_profile = base\n"
                           "role_session_name = telehook-e2e\nexternal_id = ext-123\n"
                           "duration_seconds = 900\n",
                    credentials=f"[base]\naws_access_key_id = {base[0]}\n"
                                f"aws_secret_access_key = {base[1]}\n")
    env.update(AWS_PROFILE="app", AWS_ENDPOINT_URL_STS=sts.url)
    s = make_server(aws_config(eum), env=env)
    wait_ready(s)
    rec = send_ok(s, eum)
    (call,) = sts.matching(op="AssumeRole")
    assert call["valid"] and call["sig_ok"] and call["akid"] == base[0], call["reason"]
    assert call["signed_headers"] == ["content-type", "host", "x-amz-date"]
    assert call["params"] == {"RoleArn": ROLE, "RoleSessionName": "telehook-e2e",
                              "ExternalId": "ext-123", "DurationSeconds": "900"}
    assert rec["akid"] == call["issued"][0] and "x-amz-security-token" in rec["signed_headers"]
    assert rec["headers"]["x-amz-security-token"].endswith("&<>")
    assert f"assume-role {ROLE} from shared-files (profile 'base')" in source_line(s)
    assert_no_secrets(s, base, *sts.issued)


def test_role_chain_two_hops_refreshed_before_expiry(make_server, sts, eum, tmp_path):
    base = static_key()
    sts.credentials = [base]
    sts.expires_in = 4  # refreshed at half the remaining life: about 2 s after each issue
    env = aws_files(tmp_path,
                    config=f"[profile app]\nrole_arn = {ROLE}\nsource_profile = mid\n\n"
                           f"[profile mid]\nrole_arn = {ROLE_MID}\nsource_profile = base\n",
                    credentials=f"[base]\naws_access_key_id = {base[0]}\n"
                                f"aws_secret_access_key = {base[1]}\n")
    env.update(AWS_ENDPOINT_URL_STS=sts.url)
    s = make_server(aws_config(eum, profile="app"), env=env)
    wait_ready(s)
    first, second = sts.matching(op="AssumeRole")[:2]
    assert (first["params"]["RoleArn"], first["akid"]) == (ROLE_MID, base[0])
    assert (second["params"]["RoleArn"], second["akid"]) == (ROLE, first["issued"][0])
    assert second["valid"] and second["sig_ok"], second["reason"]
    assert "x-amz-security-token" in second["signed_headers"]  # signed with the hop's session
    assert re.fullmatch(r"telehook-\d+", second["params"]["RoleSessionName"])
    assert send_ok(s, eum)["akid"] == second["issued"][0]
    # the whole chain is redone from the source keys before the credentials expire
    assert sts.wait_for(4, timeout=8 * SLOW, op="AssumeRole", valid=True) >= 4
    newest = sts.last(op="AssumeRole", params=lambda p: p["RoleArn"] == ROLE)
    deadline = time.monotonic() + 5 * SLOW
    while send_ok(s, eum)["akid"] != newest["issued"][0]:
        assert time.monotonic() < deadline, "the refreshed credentials are never used"
        time.sleep(0.05)
    assert f"assume-role {ROLE} from assume-role {ROLE_MID} from shared-files" in source_line(s)
    assert_no_secrets(s, base, *sts.issued)


def test_credential_source_environment(make_server, sts, eum, tmp_path):
    envkey = static_key()
    sts.credentials = [envkey]
    env = aws_files(tmp_path, config=f"[profile app]\nrole_arn = {ROLE}\n"
                                     "credential_source = Environment\n")
    # aws.profile (not AWS_PROFILE): an explicit profile skips the environment keys as a source
    # of their own, so they serve as the role's source
    env.update(AWS_ACCESS_KEY_ID=envkey[0], AWS_SECRET_ACCESS_KEY=envkey[1],
               AWS_ENDPOINT_URL_STS=sts.url)
    s = make_server(aws_config(eum, profile="app"), env=env)
    wait_ready(s)
    rec = send_ok(s, eum)
    (call,) = sts.matching(op="AssumeRole")
    assert call["sig_ok"] and call["akid"] == envkey[0]
    assert rec["akid"] == call["issued"][0]
    assert f"assume-role {ROLE} from environment" in source_line(s)
    assert_no_secrets(s, envkey, *sts.issued)


def test_sts_refusal_is_logged_and_not_ready(make_server, sts, tmp_path):
    base = static_key()
    sts.credentials = [base]
    sts.default = "denied"
    env = aws_files(tmp_path, config=f"[profile app]\nrole_arn = {ROLE}\nsource_profile = app\n"
                                     f"aws_access_key_id = {base[0]}\n"
                                     f"aws_secret_access_key = {base[1]}\n")
    env.update(AWS_PROFILE="app", AWS_ENDPOINT_URL=sts.url)  # the global override works too
    with FakeEUM(region=REGION) as eum:
        s = make_server(aws_config(eum), env=env)
        (line,) = wait_log(s, lambda l: l.get("event") == "aws_credentials")[:1]
        assert line["level"] == "warn"
        assert f"AssumeRole {ROLE}: HTTP 403 AccessDenied: Not authorized" in line["msg"]
        assert s.request("GET", "/readyz")[0] == 503
        assert sts.last()["akid"] == base[0]  # a profile may name itself as its source
    assert_no_secrets(s, base)


CONFIG_ERRORS = [
    ("[profile app]\nrole_arn = {role}\nsource_profile = b\n\n"
     "[profile b]\nrole_arn = {role}\nsource_profile = app\n",
     "AWS profile 'b': source_profile loop through 'app'"),
    ("[profile app]\nrole_arn = {role}\nsource_profile = ghost\n",
     "source_profile 'ghost' of AWS profile 'app' not found in"),
    ("[profile app]\nrole_arn = {role}\n",
     "AWS profile 'app': role_arn needs source_profile or credential_source"),
    ("[profile app]\nrole_arn = {role}\ncredential_source = Ec2\n",
     "credential_source must be Environment, Ec2InstanceMetadata or EcsContainer"),
    ("[profile app]\nrole_arn = {role}\ncredential_source = Environment\n",
     "credential_source Environment, but AWS_ACCESS_KEY_ID"),
    ("[profile app]\nrole_arn = {role}\ncredential_source = Ec2InstanceMetadata\n",
     "credential_source Ec2InstanceMetadata, but AWS_EC2_METADATA_DISABLED is true"),
    ("[profile app]\nrole_arn = {role}\nsource_profile = base\nmfa_serial = arn:mfa\n"
     "[profile base]\naws_access_key_id = A\naws_secret_access_key = B\n",
     "AWS profile 'app': mfa_serial needs a code typed by a person"),
    ("[profile app]\nrole_arn = {role}\nsource_profile = base\n[profile base]\nregion = x\n",
     "AWS profile 'base' (source_profile of 'app') has no credentials"),
    ("[profile app]\nrole_arn = {role}\nsource_profile = app\nrole_session_name = bad name\n"
     "aws_access_key_id = A\naws_secret_access_key = B\n",
     "role_session_name must be 2-64 characters"),
    ("[profile app]\nrole_arn = {role}\nsource_profile = app\nduration_seconds = 60\n"
     "aws_access_key_id = A\naws_secret_access_key = B\n",
     "duration_seconds must be 900 to 43200"),
    ("[profile app]\naws_access_key_id = AKIAONLYHALF\n",
     "aws_access_key_id and aws_secret_access_key go together"),
    ("[profile app]\nsso_session = corp\nsso_account_id = 1\n",
     "IAM Identity Center (sso_*) sign-in needs a person"),
]


@pytest.mark.parametrize("config,reason", CONFIG_ERRORS)
def test_profile_mistakes_fail_check_and_serve(make_server, tmp_path, config, reason):
    env = aws_files(tmp_path, config=config.format(role=ROLE))
    env["AWS_PROFILE"] = "app"
    s = make_server(aws_config(None), env=env, start=False)
    r = s.cli("config", "check", check=False)
    assert r.returncode == 2 and reason in r.stderr, r.stderr
    assert s.start(expect_fail=True) != 0
    assert reason in s.log_text()


# ---- web identity ----------------------------------------------------------------------------

def fake_jwt():
    return "eyJhbGciOiJSUzI1NiIsImtpZCI6IjEifQ." + secrets.token_urlsafe(120) + "." + \
        secrets.token_urlsafe(64)


def test_web_identity_from_environment_rereads_rotated_token(make_server, sts, eum, tmp_path):
    token_file = tmp_path / "token"
    first = fake_jwt()
    token_file.write_text(first + "\n")
    sts.web_tokens = {first}
    sts.expires_in = 4
    s = make_server(aws_config(eum), env={
        "AWS_WEB_IDENTITY_TOKEN_FILE": str(token_file), "AWS_ROLE_ARN": ROLE,
        "AWS_ROLE_SESSION_NAME": "otp-pod-1", "AWS_ENDPOINT_URL_STS": sts.url})
    wait_ready(s)
    call = sts.last(op="AssumeRoleWithWebIdentity")
    assert call["valid"] and call["web_token"] == first  # the file's content, newline trimmed
    assert not call["signed"] and "authorization" not in call["headers"]
    assert call["params"]["RoleSessionName"] == "otp-pod-1" and call["params"]["RoleArn"] == ROLE
    assert send_ok(s, eum)["akid"] == call["issued"][0]
    # the issuer rotates the token (kubelet replaces the file); the old one stops working
    second = fake_jwt()
    tmp = tmp_path / "token.new"
    tmp.write_text(second)
    os.replace(tmp, token_file)
    sts.web_tokens = {second}
    assert sts.wait_for(1, timeout=8 * SLOW, web_token=second, valid=True) == 1
    newest = sts.last(web_token=second, valid=True)
    deadline = time.monotonic() + 5 * SLOW
    while send_ok(s, eum)["akid"] != newest["issued"][0]:
        assert time.monotonic() < deadline, "the refreshed credentials are never used"
        time.sleep(0.05)
    assert f"web-identity {ROLE} (AWS_WEB_IDENTITY_TOKEN_FILE)" in source_line(s)
    assert_no_secrets(s, first, second, *sts.issued)


def test_web_identity_from_profile_keys(make_server, sts, eum, tmp_path):
    token_file = tmp_path / "token"
    tok = fake_jwt()
    token_file.write_text(tok)
    sts.web_tokens = {tok}
    env = aws_files(tmp_path, config=f"[profile irsa]\nrole_arn = {ROLE}\n"
                                     f"web_identity_token_file = {token_file}\n")
    env.update(AWS_PROFILE="irsa", AWS_ENDPOINT_URL_STS=sts.url)
    s = make_server(aws_config(eum), env=env)
    wait_ready(s)
    call = sts.last(op="AssumeRoleWithWebIdentity")
    assert call["web_token"] == tok and not call["signed"]
    assert re.fullmatch(r"telehook-\d+", call["params"]["RoleSessionName"])
    assert send_ok(s, eum)["akid"] == call["issued"][0]
    assert f"web-identity {ROLE} (profile 'irsa')" in source_line(s)
    assert_no_secrets(s, tok, *sts.issued)


# ---- credential_process ----------------------------------------------------------------------

def process_profile(tmp_path, body):
    """A profile whose credential_process is a shell script the test writes; it counts its runs."""
    script = tmp_path / "creds helper.sh"  # a space: the command goes through /bin/sh -c
    script.write_text("#!/bin/sh\necho run >> \"$(dirname \"$0\")/runs\"\n" + body)
    env = aws_files(tmp_path, config=f"[profile proc]\ncredential_process = sh '{script}' "
                                     "--profile 'a b'; exit $?\n")
    env["AWS_PROFILE"] = "proc"
    return env, tmp_path / "runs"


def test_credential_process_json_refreshed_before_expiration(make_server, tmp_path):
    akid, secret, token = "ASIAPROCESS" + secrets.token_hex(4).upper(), \
        secrets.token_urlsafe(30), "IQoJb3JpZ2lu" + secrets.token_urlsafe(300)
    env, runs = process_profile(tmp_path, (
        'exp=$(date -u -d "@$(( $(date +%s) + 4 ))" +%Y-%m-%dT%H:%M:%SZ)\n'
        f"printf '{{\"Version\": 1, \"AccessKeyId\": \"{akid}\", \"SecretAccessKey\": "
        f"\"{secret}\", \"SessionToken\": \"{token}\", \"Expiration\": \"%s\"}}\\n' \"$exp\"\n"))
    with FakeEUM(region=REGION, credentials=[(akid, secret, token)]) as eum:
        s = make_server(aws_config(eum), env=env)
        wait_ready(s)
        rec = send_ok(s, eum)
        assert rec["akid"] == akid and "x-amz-security-token" in rec["signed_headers"]
        deadline = time.monotonic() + 8 * SLOW
        while len(runs.read_text().split()) < 2:  # run again ~2 s later, before Expiration
            assert time.monotonic() < deadline, "credential_process never ran again"
            time.sleep(0.05)
        assert "credential-process (profile 'proc')" in source_line(s)
    assert_no_secrets(s, secret, token)


@pytest.mark.parametrize("body,reason", [
    ('printf \'{"Version": 1, "AccessKeyId": "AKIAHALF", "SecretAccessKey": "%s"}\' '
     '"$LEAK"\necho "helper: no cached session for \'corp\'" >&2\nexit 3\n',
     "credential_process exited with status 3: helper: no cached session for 'corp'"),
    ('echo "Enter MFA code: $LEAK"\n', "credential_process output is not a JSON object"),
    ('printf \'{"Version": 2, "AccessKeyId": "AKIAV2", "SecretAccessKey": "%s"}\' "$LEAK"\n',
     '"Version" must be 1'),
    ('printf \'{"Version": 1, "AccessKeyId": "AKIAX", "SecretAccessKey": "%s", '
     '"Expiration": "tomorrow"}\' "$LEAK"\n', '"Expiration" is not an ISO 8601 time'),
])
def test_credential_process_failures_are_clear_and_leak_nothing(make_server, tmp_path, body,
                                                                 reason):
    leak = "leak-" + secrets.token_urlsafe(24)
    env, runs = process_profile(tmp_path, f"LEAK={leak}\n" + body)
    with FakeEUM(region=REGION) as eum:
        s = make_server(aws_config(eum), env=env)
        (line,) = wait_log(s, lambda l: l.get("event") == "aws_credentials")[:1]
        assert line["level"] == "warn" and reason in line["msg"], line
        assert s.request("GET", "/readyz")[0] == 503
        assert eum.count() == 0
    assert leak not in s.log_text()


# ---- shared files, missing profiles ----------------------------------------------------------

def test_long_session_token_in_credentials_file(make_server, tmp_path):
    """A session token is far longer than a generic INI reader's 200-byte line."""
    cred = ("ASIAFILE" + secrets.token_hex(6).upper(), secrets.token_urlsafe(30),
            "IQoJb3JpZ2luX2VjE" + secrets.token_urlsafe(700))
    env = aws_files(tmp_path,
                    config="[profile ops]\n# a comment\nregion = eu-west-1\ns3 =\n"
                           "  addressing_style = path\n",
                    credentials=f"[ops]\naws_access_key_id = {cred[0]}\n"
                                f"aws_secret_access_key = {cred[1]}\n"
                                f"aws_session_token = {cred[2]}\n")
    env["AWS_PROFILE"] = "ops"
    with FakeEUM(region=REGION, credentials=[cred]) as eum:
        s = make_server(aws_config(eum), env=env)
        send_ok(s, eum)
        assert "shared-files (profile 'ops')" in source_line(s)
    assert_no_secrets(s, cred)


@pytest.mark.parametrize("how", ["AWS_PROFILE", "aws.profile"])
def test_missing_profile_is_reported_as_missing(make_server, tmp_path, how):
    env = aws_files(tmp_path, config="[profile other]\nregion = eu-west-1\n")
    conf = "provider.name = aws\naws.origination_identity = +12065550100"
    if how == "AWS_PROFILE":
        env["AWS_PROFILE"] = "nope"  # no region anywhere: it used to say "no region"
    else:
        conf += f"\naws.profile = nope\naws.region = {REGION}"
        env.update(AWS_ACCESS_KEY_ID="AKIAIGNORED0000", AWS_SECRET_ACCESS_KEY="x" * 40)
    want = (f"AWS profile 'nope' not found in {env['AWS_CONFIG_FILE']} or "
            f"{env['AWS_SHARED_CREDENTIALS_FILE']}")
    s = make_server(conf, env=env, start=False)
    r = s.cli("config", "check", check=False)
    assert r.returncode == 2 and want in r.stderr, r.stderr
    assert "no region" not in r.stderr
    assert s.start(expect_fail=True) != 0
    assert want in s.log_text()
