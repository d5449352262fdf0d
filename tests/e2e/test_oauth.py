"""OAuth 2.0 hook authentication end to end: telehook verifies Okta's JWT access tokens against a
fake Okta authorization server on loopback (discovery + JWKS), whose tokens are minted by PyJWT —
an implementation independent of telehook's."""
import time

import pytest

from conftest import SLOW, okta_request
from fake_issuer import FakeIssuer, b64url, b64url_decode


@pytest.fixture
def issuer():
    with FakeIssuer() as f:
        yield f
        assert not f.errors, f.errors


def oauth_config(issuer, mode="oauth2", extra=""):
    return f"""
        auth.mode = {mode}
        auth.issuer = {issuer.issuer}
        auth.audience = api://default
        auth.scopes = okta.telephony.hook
        auth.client_ids = {issuer.client_id}
        {extra}"""


def bearer(s, token, body=None):
    return s.post(body or okta_request(), auth=False,
                  headers={"Authorization": f"Bearer {token}"})


def wait_ready(s, timeout=10):
    deadline = time.monotonic() + timeout * SLOW
    while s.request("GET", "/readyz")[0] != 200:
        assert time.monotonic() < deadline, "never ready: " + s.log_text()
        time.sleep(0.05)


def stats(s):
    assert s.stop() == 0
    (line,) = [l for l in s.logs() if l.get("event") == "stopped"]
    return line


def test_valid_token_accepted(make_server, issuer):
    s = make_server(oauth_config(issuer))
    wait_ready(s)
    status, _, body = bearer(s, issuer.mint())
    assert status == 200 and "commands" in body, body
    assert issuer.count(kind="discovery") >= 1 and issuer.count(kind="jwks") == 1


def test_es256_accepted_when_allowed(make_server):
    with FakeIssuer(alg="ES256") as iss:
        s = make_server(oauth_config(iss, extra="auth.algorithms = RS256 ES256"))
        wait_ready(s)
        assert bearer(s, iss.mint())[0] == 200


@pytest.mark.parametrize("case", [
    "expired", "not_yet_valid", "wrong_issuer", "wrong_audience", "wrong_client",
    "missing_scope", "tampered_payload", "tampered_signature", "alg_none", "hs256_confusion",
    "garbage", "basic_instead"])
def test_bad_tokens_refused_with_nothing_recorded(make_server, issuer, case):
    s = make_server(oauth_config(issuer))
    wait_ready(s)
    now = int(time.time())
    tok = {
        "expired": lambda: issuer.mint(exp=now - 120, iat=now - 3720),
        "not_yet_valid": lambda: issuer.mint(nbf=now + 600),
        "wrong_issuer": lambda: issuer.mint(iss="https://evil.example.com/oauth2/default"),
        "wrong_audience": lambda: issuer.mint(aud="api://other"),
        "wrong_client": lambda: issuer.mint(cid="0oaSomebodyElse"),
        "missing_scope": lambda: issuer.mint(scp=["okta.users.read"]),
        "tampered_payload": lambda: issuer.tamper_payload(issuer.mint()),
        "tampered_signature": lambda: issuer.tamper_signature(issuer.mint()),
        "alg_none": issuer.mint_none,
        "hs256_confusion": issuer.mint_hs256_with_public_key,
        "garbage": lambda: "not.a.jwt",
        "basic_instead": None,
    }[case]
    if tok is None:
        status, headers, body = s.post(okta_request(), auth=False,
                                       headers={"Authorization": "Basic dXNlcjpwYXNz"})
        token = "dXNlcjpwYXNz"
    else:
        token = tok()
        status, headers, body = bearer(s, token)
    assert status == 401, body
    assert headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert body == {"error": {"errorSummary": "Unauthorized."}}
    time.sleep(0.1)
    assert s.db_rows("SELECT count(*) FROM deliveries")[0][0] == 0
    assert s.db_rows("SELECT count(*) FROM outbox")[0][0] == 0
    log = s.log_text()
    assert token not in log
    assert all(part not in log for part in token.split(".") if len(part) > 16)


def test_key_rotation_verifies_after_one_refresh(make_server, issuer):
    s = make_server(oauth_config(issuer))
    wait_ready(s)
    assert bearer(s, issuer.mint())[0] == 200
    fetches = issuer.count(kind="jwks")
    issuer.rotate()
    t0 = time.monotonic()
    status, _, body = bearer(s, issuer.mint())  # signed by a key telehook has not seen yet
    assert status == 200 and "commands" in body, body
    assert issuer.count(kind="jwks") == fetches + 1
    assert time.monotonic() - t0 < 1.5 * SLOW
    # a flood of tokens with unknown kids does not hammer the issuer: at most one fetch / 30 s
    for _ in range(20):
        assert bearer(s, issuer.mint(kid="unknown-kid-" + str(_)))[0] == 401
    assert issuer.count(kind="jwks") == fetches + 1


def test_issuer_down_at_start_then_ready(make_server, issuer):
    issuer.down = True
    s = make_server(oauth_config(issuer))
    time.sleep(0.3)
    assert s.request("GET", "/readyz")[0] == 503
    assert bearer(s, issuer.mint())[0] == 401  # no keys yet: refused, never waved through
    issuer.down = False
    wait_ready(s, timeout=10)
    assert bearer(s, issuer.mint())[0] == 200


def test_one_token_thousand_requests_one_fetch_one_verification(make_server, issuer):
    s = make_server(oauth_config(issuer))
    wait_ready(s)
    token = issuer.mint()
    conn = s.connect()
    for i in range(1000):
        status, _, body = s.post(okta_request(otp=f"{100000 + i}"), auth=False,
                                 headers={"Authorization": f"Bearer {token}"}, conn=conn)
        assert status == 200, body
    conn.close()
    st = stats(s)
    assert st["tokens_verified"] == 1
    assert st["token_cache_hits"] == 999
    assert st["key_fetches"] == 1
    assert issuer.count(kind="jwks") == 1


def test_either_mode_accepts_both(make_server, issuer):
    s = make_server(oauth_config(issuer, mode="either"))
    wait_ready(s)
    assert bearer(s, issuer.mint())[0] == 200
    assert s.post(okta_request())[0] == 200  # the header secret
    assert bearer(s, issuer.mint_none())[0] == 401


def test_oauth_mode_refuses_the_header_secret(make_server, issuer):
    s = make_server(oauth_config(issuer))
    wait_ready(s)
    status, headers, _ = s.post(okta_request())
    assert status == 401 and "www-authenticate" in headers


def test_local_keys_with_token_cli(make_server, tmp_path):
    s = make_server(f"""
        auth.mode = oauth2
        auth.issuer = https://example.okta.com/oauth2/default
        auth.client_ids = 0oa-dev
        auth.jwks_file = {tmp_path / 'jwks.json'}
        auth.algorithms = ES256""", start=False)
    s.cli("token", "keygen", "--alg", "ES256", "--dir", str(tmp_path))
    assert oct((tmp_path / "jwt-private.jwk").stat().st_mode & 0o777) == "0o600"
    s.start()
    tok = s.cli("token", "mint", "--key", str(tmp_path / "jwt-private.jwk"),
                "--cid", "0oa-dev").stdout.strip()
    assert bearer(s, tok)[0] == 200
    other = s.cli("token", "mint", "--key", str(tmp_path / "jwt-private.jwk"),
                  "--cid", "0oa-dev", "--ttl", "-100").stdout.strip()
    assert bearer(s, other)[0] == 401


# ---- a withdrawn key ends the tokens it signed, even cached ones ----

def test_withdrawn_key_refuses_cached_token(make_server, issuer):
    s = make_server(oauth_config(issuer))
    wait_ready(s)
    old = issuer.mint()  # signed with kid A
    assert bearer(s, old)[0] == 200
    assert bearer(s, old)[0] == 200  # from the verified-token cache
    issuer.rotate()  # emergency rotation: the JWKS now holds only kid B
    status, _, body = bearer(s, issuer.mint())  # an unknown kid: the keys are refreshed
    assert status == 200, body
    assert issuer.last(kind="jwks")["kids"] == [issuer.signing_kid]
    status, headers, body = bearer(s, old)
    assert status == 401, body
    assert headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert bearer(s, old)[0] == 401
    st = stats(s)
    assert st["tokens_verified"] == 2 and st["token_cache_hits"] == 1, st


def test_added_key_keeps_cached_token(make_server, issuer):
    s = make_server(oauth_config(issuer))
    wait_ready(s)
    old = issuer.mint()
    assert bearer(s, old)[0] == 200
    new_kid = issuer.add_key()  # the issuer publishes its next key next to the current one
    assert bearer(s, issuer.mint(key=new_kid))[0] == 200  # refresh: both keys now
    assert sorted(issuer.last(kind="jwks")["kids"]) == sorted(issuer.published)
    assert bearer(s, old)[0] == 200
    st = stats(s)
    # the old token was not verified again: a refresh that only adds keys keeps the cache
    assert st["tokens_verified"] == 2 and st["token_cache_hits"] == 1, st


# ---- the issuer's keys only over https (plain http only to loopback) ----

@pytest.mark.parametrize("key,url", [
    ("issuer", "http://example.okta.com/oauth2/default"),
    ("issuer", "HTTP://example.okta.com/oauth2/default"),
    ("issuer", "http://127.0.0.1@example.okta.com/oauth2/default"),
    ("issuer", "http://localhost.example.com/oauth2/default"),
    ("jwks_url", "http://example.okta.com/oauth2/default/v1/keys"),
    ("jwks_url", "http://127.0.0.1.example.com/keys"),
])
def test_http_key_source_refused_by_config(make_server, key, url):
    extra = f"auth.{key} = {url}"
    s = make_server(f"""
        auth.mode = oauth2
        auth.issuer = https://example.okta.com/oauth2/default
        {extra}""", start=False)
    r = s.cli("config", "check", check=False)
    assert r.returncode == 2, r.stderr
    assert f"[auth] {key}" in r.stderr and "https" in r.stderr, r.stderr
    assert s.start(expect_fail=True) == 2
    assert f"[auth] {key}" in s.log_text()


def test_loopback_http_key_source_accepted_by_config(make_server):
    s = make_server("""
        auth.mode = oauth2
        auth.issuer = http://[::1]:9/oauth2/default
        auth.jwks_url = http://localhost:9/keys""", start=False)
    r = s.cli("config", "check", check=False)
    assert r.returncode == 0, r.stderr


def jwks_errors(s):
    return [l for l in s.logs() if l.get("event") == "jwks" and l.get("level") == "error"]


def test_discovery_with_http_jwks_uri_refused(make_server, issuer):
    issuer.doc_overrides = {"jwks_uri": "http://example.invalid/oauth2/default/v1/keys"}
    s = make_server(oauth_config(issuer))
    deadline = time.monotonic() + 5 * SLOW
    while not jwks_errors(s):
        assert time.monotonic() < deadline, s.log_text()
        time.sleep(0.05)
    (line,) = jwks_errors(s)[:1]
    assert "not https" in line["msg"] and "example.invalid" in line["msg"], line
    assert s.request("GET", "/readyz")[0] == 503  # no keys: not ready
    assert bearer(s, issuer.mint())[0] == 401
    # refused without fetching it, and not worked around by guessing {issuer}/v1/keys
    assert issuer.count(kind="discovery") >= 1
    assert issuer.count(kind="jwks") == 0


def test_discovery_naming_another_issuer_is_not_used(make_server, issuer):
    # its jwks_uri is not followed (not even refused as http): the keys are looked for at
    # ISSUER/v1/keys, Okta's layout
    issuer.doc_overrides = {"issuer": "https://evil.example.com/oauth2/default",
                            "jwks_uri": "http://example.invalid/oauth2/default/v1/keys"}
    s = make_server(oauth_config(issuer))
    wait_ready(s)
    assert issuer.last(kind="jwks")["path"] == issuer.path + "/v1/keys"
    assert not jwks_errors(s)
    assert any("names another issuer" in l.get("msg", "") for l in s.logs())
    assert bearer(s, issuer.mint())[0] == 200


def test_discovery_turning_to_http_keeps_the_keys_held(make_server, issuer):
    s = make_server(oauth_config(issuer))
    wait_ready(s)
    assert issuer.count(kind="jwks") == 1
    # the issuer's document now points at plain http; telehook finds out when it discovers
    # again, after a failed key fetch (asked for here by a token with an unknown kid)
    issuer.doc_overrides = {"jwks_uri": "http://example.invalid/oauth2/default/v1/keys"}
    issuer.script.append("500")
    assert bearer(s, issuer.mint(kid="unknown-kid"))[0] == 401
    deadline = time.monotonic() + 10 * SLOW
    while not jwks_errors(s):
        assert time.monotonic() < deadline, s.log_text()
        time.sleep(0.05)
    assert "keys held: yes, kept" in jwks_errors(s)[0]["msg"]
    assert s.request("GET", "/readyz")[0] == 200
    assert bearer(s, issuer.mint())[0] == 200  # a new token, verified with the kept keys
    assert issuer.count(kind="jwks") == 2  # the failed fetch; nothing since


def test_es256_twin_signature_is_the_same_token(make_server):
    """(r, s) and (r, n - s) both verify (ECDSA is malleable; issuers do not normalise S): the
    other spelling of a cached token is the same cache entry, not a second token."""
    n = 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551
    with FakeIssuer(alg="ES256") as iss:
        s = make_server(oauth_config(iss, extra="auth.algorithms = ES256"))
        wait_ready(s)
        tok = iss.mint()
        h, p, sig = tok.split(".")
        raw = b64url_decode(sig)
        r, sv = raw[:32], int.from_bytes(raw[32:], "big")
        twin = f"{h}.{p}.{b64url(r + (n - sv).to_bytes(32, 'big'))}"
        assert bearer(s, tok)[0] == 200
        assert bearer(s, twin)[0] == 200
        st = stats(s)
        assert st["tokens_verified"] == 1 and st["token_cache_hits"] == 1, st
