"""Tests OF the fake Okta authorization server (tests/e2e/fake_issuer.py): its discovery documents
and JWKS are what an OIDC client expects, the tokens it mints verify with PyJWT (an independent
verifier) against the keys it publishes, key rotation looks like a rotation, the hostile tokens it
crafts are really rejected for the reason they claim to exercise, and its transport failures
(down, hang, close...) behave. Needs no telehook binary."""
import base64
import hashlib
import hmac
import http.client
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.parse

import jwt
import pytest
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from fake_issuer import FakeIssuer, b64url, b64url_decode, split_token

HERE = os.path.dirname(os.path.abspath(__file__))
B64URL = re.compile(r"^[A-Za-z0-9_-]+$")


@pytest.fixture
def run():
    """Starts fakes; stops them at teardown and checks that no fake hit an internal bug."""
    started = []

    def start(fake):
        started.append(fake)
        return fake.start()

    yield start
    for f in started:
        f.stop()
    for f in started:
        assert not f.errors, f"{f.name} internal errors:\n" + "\n".join(f.errors)


@pytest.fixture(scope="module")
def shared_issuer():
    """One issuer for read-only tests (each RSA key costs up to half a second to generate)."""
    fake = FakeIssuer(client_secret="SECRET").start()
    yield fake
    fake.stop()
    assert not fake.errors, "\n".join(fake.errors)


def http_req(fake, method, path, body=b"", headers=None, timeout=5, conn=None):
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", fake.port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        if own:
            conn.close()


def get_json(fake, path):
    status, headers, data = http_req(fake, "GET", path)
    assert status == 200, (status, data)
    assert headers["content-type"] == "application/json"
    return headers, json.loads(data)


def path_of(url):
    return urllib.parse.urlsplit(url).path


def verify(token, fake, algorithms=("RS256", "ES256"), **kw):
    """Verifies like an OIDC resource server: discovery -> jwks_uri -> key by kid -> PyJWT."""
    _, doc = get_json(fake, path_of(fake.discovery_url))
    key = jwt.PyJWKClient(doc["jwks_uri"], cache_keys=False).get_signing_key_from_jwt(token)
    return jwt.decode(token, key.key, algorithms=list(algorithms),
                      audience=kw.pop("audience", fake.audience),
                      issuer=kw.pop("issuer", doc["issuer"]), **kw)


def public_key_from_jwks(fake, kid):
    _, jwks = get_json(fake, path_of(fake.jwks_uri))
    jwk = next(k for k in jwks["keys"] if k["kid"] == kid)
    return (RSAAlgorithm if jwk["kty"] == "RSA" else ECAlgorithm).from_jwk(json.dumps(jwk))


# ---- discovery and JWKS ------------------------------------------------------------------------
@pytest.mark.parametrize("doc", ["openid-configuration", "oauth-authorization-server"])
def test_discovery_document(run, doc):
    fake = run(FakeIssuer())
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/oauth2/default", fake.issuer)
    headers, d = get_json(fake, f"/oauth2/default/.well-known/{doc}")
    assert d["issuer"] == fake.issuer
    assert d["jwks_uri"] == fake.issuer + "/v1/keys" == fake.jwks_uri
    assert d["token_endpoint"] == fake.issuer + "/v1/token"
    assert d["authorization_endpoint"] == fake.issuer + "/v1/authorize"
    assert "code" in d["response_types_supported"]
    assert d["id_token_signing_alg_values_supported"] == ["RS256"]
    assert "client_credentials" in d["grant_types_supported"]
    assert "client_secret_basic" in d["token_endpoint_auth_methods_supported"]
    assert "okta.telephony.hook" in d["scopes_supported"]
    assert ("userinfo_endpoint" in d) == (doc == "openid-configuration")
    assert fake.last()["kind"] == "discovery" and fake.last()["doc"] == doc
    # jwks_uri resolves, to this server
    _, jwks = get_json(fake, path_of(d["jwks_uri"]))
    assert [k["kid"] for k in jwks["keys"]] == [fake.signing_kid]
    assert fake.count(kind="jwks") == 1 and fake.count(kind="discovery") == 1


def test_discovery_overrides_custom_path_and_methods(run):
    fake = run(FakeIssuer(path="oauth2/aus1hook/", audience="https://hook.example.com"))
    assert fake.issuer.endswith("/oauth2/aus1hook")
    fake.doc_overrides = {"issuer": "https://evil.example.com", "jwks_uri": None}
    _, d = get_json(fake, "/oauth2/aus1hook/.well-known/openid-configuration")
    assert d["issuer"] == "https://evil.example.com" and "jwks_uri" not in d
    status, h, body = http_req(fake, "HEAD", "/oauth2/aus1hook/v1/keys")
    assert status == 200 and body == b"" and int(h["content-length"]) > 100
    status, h, body = http_req(fake, "POST", "/oauth2/aus1hook/v1/keys", b"{}")
    assert status == 405 and json.loads(body)["errorCode"] == "E0000022"
    status, _, body = http_req(fake, "GET", "/oauth2/default/v1/keys")  # wrong server path
    assert status == 404 and json.loads(body)["errorCode"] == "E0000007"
    assert fake.last()["kind"] == "other" and fake.count(kind="other") == 1


def test_jwks_shape_rsa_and_ec(run):
    fake = run(FakeIssuer())
    ec_kid = fake.add_key("ES256")
    assert [k["kid"] for k in fake.keys] == [fake.signing_kid, ec_kid] == fake.published
    _, jwks = get_json(fake, "/oauth2/default/v1/keys")
    rsa_jwk, ec_jwk = jwks["keys"]
    assert set(rsa_jwk) == {"kty", "alg", "kid", "use", "n", "e"}
    assert (rsa_jwk["kty"], rsa_jwk["alg"], rsa_jwk["use"], rsa_jwk["e"]) == \
        ("RSA", "RS256", "sig", "AQAB")
    assert len(b64url_decode(rsa_jwk["n"])) == 256  # 2048 bits, no leading zero byte
    assert set(ec_jwk) == {"kty", "alg", "kid", "use", "crv", "x", "y"}
    assert (ec_jwk["kty"], ec_jwk["alg"], ec_jwk["crv"]) == ("EC", "ES256", "P-256")
    assert len(b64url_decode(ec_jwk["x"])) == len(b64url_decode(ec_jwk["y"])) == 32
    for jwk in jwks["keys"]:
        assert len(jwk["kid"]) == 43 and B64URL.match(jwk["kid"])
        for field in ("n", "e", "x", "y"):
            if field in jwk:
                assert B64URL.match(jwk[field]), (field, jwk[field])  # no padding, URL-safe
    # the served JWK is the private key's public half
    assert RSAAlgorithm.from_jwk(json.dumps(rsa_jwk)).public_numbers() == \
        fake.keys[0]["private"].public_key().public_numbers()
    assert ECAlgorithm.from_jwk(json.dumps(ec_jwk)).public_numbers() == \
        fake.keys[1]["private"].public_key().public_numbers()
    assert fake.last()["kids"] == fake.published
    # published controls what is served, in its order; jwks_extra is appended verbatim
    fake.published = [ec_kid]
    fake.jwks_extra = [{"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"}]
    _, jwks = get_json(fake, "/oauth2/default/v1/keys")
    assert [k["kid"] for k in jwks["keys"]] == [ec_kid, "hmac"]


def test_cache_control(run):
    fake = run(FakeIssuer())
    h, _ = get_json(fake, "/oauth2/default/v1/keys")
    assert h["cache-control"] == "max-age=3600, must-revalidate" and "expires" in h
    fake.max_age = 60
    h, _ = get_json(fake, "/oauth2/default/v1/keys")
    assert h["cache-control"] == "max-age=60, must-revalidate"
    fake.max_age = None
    h, _ = get_json(fake, "/oauth2/default/v1/keys")
    assert "cache-control" not in h


# ---- minting and verification ------------------------------------------------------------------
def test_minted_token_verifies_with_pyjwt(run):
    fake = run(FakeIssuer())
    token = fake.mint()
    header, payload, _ = split_token(token)
    assert header == {"alg": "RS256", "kid": fake.signing_kid}  # Okta's header: no typ
    assert set(payload) == {"ver", "jti", "iss", "aud", "iat", "exp", "cid", "scp", "sub"}
    assert payload["ver"] == 1 and re.fullmatch(r"AT\.[A-Za-z0-9_-]{20,}", payload["jti"])
    assert abs(payload["iat"] - time.time()) < 5 and payload["exp"] - payload["iat"] == 3600
    assert payload["cid"] == payload["sub"] == "0oa1hookclient"
    assert payload["scp"] == ["okta.telephony.hook"]
    claims = verify(token, fake)
    assert claims["iss"] == fake.issuer and claims["aud"] == "api://default"
    assert fake.mint()  # jti differs per token
    assert split_token(fake.mint())[1]["jti"] != payload["jti"]
    # PyJWT checks iss and aud: the fake's claims are what make the token pass
    with pytest.raises(jwt.InvalidAudienceError):
        verify(token, fake, audience="api://other")
    with pytest.raises(jwt.InvalidIssuerError):
        verify(fake.mint(iss="https://other.okta.com/oauth2/default"), fake)
    with pytest.raises(jwt.ExpiredSignatureError):
        verify(fake.mint(exp=int(time.time()) - 60), fake)
    with pytest.raises(jwt.MissingRequiredClaimError):
        verify(fake.mint(exp=None), fake, options={"require": ["exp"]})


def test_claim_and_header_overrides(run):
    fake = run(FakeIssuer(scope="hooks.telephony", audience=["api://a", "api://b"]))
    p = split_token(fake.mint(cid="0oaOTHER", uid="00u1", scp=["a", "b"], nbf=1, ver=None))[1]
    assert p["cid"] == p["sub"] == "0oaOTHER" and p["uid"] == "00u1" and "ver" not in p
    assert p["scp"] == ["a", "b"] and p["nbf"] == 1 and p["aud"] == ["api://a", "api://b"]
    assert split_token(fake.mint())[1]["scp"] == ["hooks.telephony"]
    h = split_token(fake.mint(kid=None, headers={"typ": "at+jwt", "crit": ["exp"]}))[0]
    assert "kid" not in h and h["typ"] == "at+jwt" and h["crit"] == ["exp"]
    # kid of a known key selects it; an unknown kid is only a header value
    second = fake.add_key()
    token = fake.mint(kid=second)
    assert split_token(token)[0]["kid"] == second
    assert verify(token, fake, audience="api://b")["cid"] == "0oa1hookclient"
    token = fake.mint(kid="nope")
    assert split_token(token)[0]["kid"] == "nope"
    jwt.decode(token, public_key_from_jwks(fake, fake.signing_kid), algorithms=["RS256"],
               audience="api://a")
    token = fake.mint(key=fake.keys[1], alg="RS512")
    assert split_token(token)[0] == {"alg": "RS512", "kid": second}
    jwt.decode(token, public_key_from_jwks(fake, second), algorithms=["RS512"],
               audience="api://a")


def test_es256_issuer(run):
    fake = run(FakeIssuer(alg="ES256"))
    assert fake.keys[0]["alg"] == "ES256"
    _, d = get_json(fake, "/oauth2/default/.well-known/openid-configuration")
    assert "ES256" in d["id_token_signing_alg_values_supported"]
    token = fake.mint()
    header, _, sig = split_token(token)
    assert header["alg"] == "ES256" and len(sig) == 64  # JOSE r||s, not DER
    assert verify(token, fake)["iss"] == fake.issuer
    with pytest.raises(jwt.InvalidAlgorithmError):
        verify(token, fake, algorithms=["RS256"])


def test_sign_raw(run):
    fake = run(FakeIssuer())
    ec = fake.add_key("ES256")
    payload = fake.claims()
    for alg, key in (("RS256", None), ("PS256", None), ("ES256", ec)):
        kid = key or fake.signing_kid
        token = fake.sign_raw({"alg": alg, "kid": kid}, payload, key=key)
        assert jwt.decode(token, public_key_from_jwks(fake, kid), algorithms=[alg],
                          audience=fake.audience) == payload
    # bytes are signed exactly as given: a header PyJWT would refuse to produce
    token = fake.sign_raw(b'{"alg":"RS256","kid":42}', payload)
    assert split_token(token)[0] == {"alg": "RS256", "kid": 42}
    with pytest.raises(ValueError):
        fake.sign_raw({"alg": "HS256"}, payload)


# ---- rotation --------------------------------------------------------------------------------
def test_rotate_publishes_only_the_new_key(run):
    fake = run(FakeIssuer())
    old_kid = fake.signing_kid
    old_token = fake.mint()
    assert verify(old_token, fake)
    new_kid = fake.rotate()
    assert new_kid != old_kid and fake.signing_kid == new_kid
    assert fake.published == [new_kid] and [k["kid"] for k in fake.keys] == [old_kid, new_kid]
    _, jwks = get_json(fake, "/oauth2/default/v1/keys")
    assert [k["kid"] for k in jwks["keys"]] == [new_kid]
    # a client with the new JWKS cannot find the old key ...
    with pytest.raises(jwt.PyJWKClientError, match="Unable to find a signing key"):
        verify(old_token, fake)
    # ... and the new key does not verify the old signature even if the kid is forged
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(old_token, public_key_from_jwks(fake, new_kid), algorithms=["RS256"],
                   audience=fake.audience)
    new_token = fake.mint()
    assert split_token(new_token)[0]["kid"] == new_kid and verify(new_token, fake)
    # rotating to another algorithm
    ec_kid = fake.rotate("ES256")
    assert fake.published == [ec_kid] and split_token(fake.mint())[0]["alg"] == "ES256"
    assert verify(fake.mint(), fake)


# ---- hostile tokens ----------------------------------------------------------------------------
def test_alg_none_is_rejected(run):
    fake = run(FakeIssuer())
    token = fake.mint_none()
    assert token.endswith(".")
    header, payload, sig = split_token(token)
    assert header == {"kid": fake.signing_kid, "alg": "none"} and sig == b""
    assert payload["iss"] == fake.issuer
    # the token is otherwise well-formed: PyJWT reads it when told not to verify
    assert jwt.decode(token, options={"verify_signature": False})["cid"] == "0oa1hookclient"
    with pytest.raises(jwt.InvalidAlgorithmError):
        verify(token, fake)
    with pytest.raises(jwt.InvalidTokenError):
        jwt.decode(token, fake.keys[0]["public"], algorithms=["RS256", "ES256"],
                   audience=fake.audience)


def test_hs256_with_public_key_is_rejected(run):
    fake = run(FakeIssuer())
    token = fake.mint_hs256_with_public_key()
    header, _, sig = split_token(token)
    assert header == {"kid": fake.signing_kid, "alg": "HS256"}
    pem = fake.keys[0]["pem"]
    assert pem.startswith(b"-----BEGIN PUBLIC KEY-----")
    # it really is HMAC-SHA256 keyed with the public key PEM: a naive verifier would accept it
    signing_input = token.rsplit(".", 1)[0].encode()
    assert hmac.compare_digest(sig, hmac.new(pem, signing_input, hashlib.sha256).digest())
    # the PEM is exactly what the published JWK converts to
    from cryptography.hazmat.primitives import serialization
    assert public_key_from_jwks(fake, fake.signing_kid).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo) == pem
    with pytest.raises(jwt.InvalidAlgorithmError):
        verify(token, fake)
    with pytest.raises(jwt.InvalidKeyError):  # PyJWT refuses a PEM public key as HMAC secret
        jwt.decode(token, pem, algorithms=["HS256"], audience=fake.audience)
    other = fake.mint_hs256_with_public_key(secret="s3cr3t")
    assert jwt.decode(other, "s3cr3t", algorithms=["HS256"], audience=fake.audience)


def test_tampered_tokens_are_rejected(run):
    fake = run(FakeIssuer())
    token = fake.mint()
    assert verify(token, fake)
    bad_payload = fake.tamper_payload(token)
    h0, p0, s0 = token.split(".")
    h1, p1, s1 = bad_payload.split(".")
    assert (h1, s1) == (h0, s0) and p1 != p0
    assert split_token(bad_payload)[1]["exp"] == split_token(token)[1]["exp"] + 86400
    with pytest.raises(jwt.InvalidSignatureError):
        verify(bad_payload, fake)
    scoped = fake.tamper_payload(token, scp=["okta.telephony.hook", "okta.users.manage"])
    assert split_token(scoped)[1]["scp"][1] == "okta.users.manage"
    with pytest.raises(jwt.InvalidSignatureError):
        verify(scoped, fake)
    bad_sig = fake.tamper_signature(token)
    assert bad_sig.rsplit(".", 1)[0] == token.rsplit(".", 1)[0] and bad_sig != token
    assert len(split_token(bad_sig)[2]) == 256
    with pytest.raises(jwt.InvalidSignatureError):
        verify(bad_sig, fake)
    ec = fake.rotate("ES256")
    with pytest.raises(jwt.InvalidSignatureError):
        verify(fake.tamper_signature(fake.mint(kid=ec)), fake)
    assert verify(fake.mint(), fake)  # the untampered ES256 token does verify


# ---- token endpoint ----------------------------------------------------------------------------
def basic(user, password):
    raw = f"{urllib.parse.quote(user, safe='')}:{urllib.parse.quote(password, safe='')}"
    return "Basic " + base64.b64encode(raw.encode()).decode()


def token_request(fake, form, auth=None):
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
    if auth:
        headers["Authorization"] = auth
    status, h, body = http_req(fake, "POST", "/oauth2/default/v1/token",
                               urllib.parse.urlencode(form).encode(), headers)
    return status, h, json.loads(body)


def test_token_endpoint_client_credentials(run):
    fake = run(FakeIssuer(client_secret="sec ret/+:x"))
    status, h, body = token_request(fake, {"grant_type": "client_credentials",
                                           "scope": "okta.telephony.hook"},
                                    basic("0oa1hookclient", "sec ret/+:x"))
    assert status == 200, body
    assert h["cache-control"] == "no-cache, no-store"
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600
    assert body["scope"] == "okta.telephony.hook"
    claims = verify(body["access_token"], fake)
    assert claims["cid"] == "0oa1hookclient" and claims["scp"] == ["okta.telephony.hook"]
    rec = fake.last(kind="token")
    assert rec["status"] == 200 and rec["token"] == body["access_token"] and rec["sent"]


@pytest.mark.parametrize("form,auth,status,error", [
    ({"grant_type": "client_credentials"}, None, 401, "invalid_client"),
    ({"grant_type": "client_credentials"}, ("0oa1hookclient", "wrong"), 401, "invalid_client"),
    ({"grant_type": "client_credentials"}, ("0oaother", "SECRET"), 401, "invalid_client"),
    ({"grant_type": "client_credentials", "client_id": "0oa1hookclient",
      "client_secret": "SECRET"}, None, 401, "invalid_client"),
    ({"grant_type": "password"}, ("0oa1hookclient", "SECRET"), 400, "unsupported_grant_type"),
    ({}, ("0oa1hookclient", "SECRET"), 400, "invalid_request"),
    ({"grant_type": "client_credentials", "scope": "okta.users.manage"},
     ("0oa1hookclient", "SECRET"), 400, "invalid_scope"),
])
def test_token_endpoint_rejections(shared_issuer, form, auth, status, error):
    fake = shared_issuer
    got, h, body = token_request(fake, form, basic(*auth) if auth else None)
    assert (got, body["error"]) == (status, error), body
    assert body["error_description"]
    assert fake.last()["reason"].startswith(error) and fake.last()["token"] is None
    if status == 401:
        assert "www-authenticate" in h


# ---- actions, down, records ------------------------------------------------------------------
def test_scripted_actions(run):
    fake = run(FakeIssuer())
    fake.script.extend(["500", "garbage", "429", "close", ("delay", 0.2), "ok"])
    status, _, body = http_req(fake, "GET", "/oauth2/default/v1/keys")
    assert status == 500 and json.loads(body)["errorCode"] == "E0000009"
    status, h, body = http_req(fake, "GET", "/oauth2/default/v1/keys")
    assert status == 200 and h["content-type"] == "application/json"
    with pytest.raises(ValueError):
        json.loads(body)
    status, h, _ = http_req(fake, "GET", "/oauth2/default/.well-known/openid-configuration")
    assert status == 429 and h["x-rate-limit-remaining"] == "0"
    with pytest.raises(ConnectionError):
        http_req(fake, "GET", "/oauth2/default/v1/keys")
    t0 = time.monotonic()
    assert http_req(fake, "GET", "/oauth2/default/v1/keys")[0] == 200
    assert time.monotonic() - t0 >= 0.2
    assert http_req(fake, "GET", "/oauth2/default/v1/keys")[0] == 200
    assert [r["status"] for r in fake.matching(kind="jwks")] == [500, 200, None, 200, 200]
    assert fake.count(kind="discovery") == 1 and fake.wait_for(5, 1, kind="jwks") == 5
    assert fake.wait_for(1, 0.05, kind="other") == 0
    fake.default = "500"
    assert http_req(fake, "GET", "/oauth2/default/v1/keys")[0] == 500


def test_down_closes_connections(run):
    fake = run(FakeIssuer())
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=5)
    assert http_req(fake, "GET", "/oauth2/default/v1/keys", conn=conn)[0] == 200
    fake.down = True
    fake.script.append("500")  # not consumed while down
    with pytest.raises(ConnectionError):  # the kept-alive connection is closed...
        http_req(fake, "GET", "/oauth2/default/v1/keys", conn=conn)
    conn.close()
    for path in ("/oauth2/default/.well-known/openid-configuration", "/oauth2/default/v1/keys"):
        with pytest.raises(ConnectionError):  # ... and so is every new one
            http_req(fake, "GET", path)
    downs = fake.matching(action="down")
    assert [r["kind"] for r in downs] == ["jwks", "discovery", "jwks"]
    assert all(r["status"] is None for r in downs)
    assert fake.count(kind="jwks", status=200) == 1
    fake.down = False
    assert http_req(fake, "GET", "/oauth2/default/v1/keys")[0] == 500
    assert http_req(fake, "GET", "/oauth2/default/v1/keys")[0] == 200


def test_hang_released_by_stop():
    fake = FakeIssuer().start()
    fake.script.append("hang")
    result = {}

    def client():
        try:
            result["r"] = http_req(fake, "GET", "/oauth2/default/v1/keys", timeout=10)
        except Exception as e:  # noqa: BLE001 - the connection is expected to close
            result["e"] = e

    t = threading.Thread(target=client, daemon=True)
    t.start()
    assert fake.wait_for(1, 2, kind="jwks") == 1
    time.sleep(0.1)
    assert t.is_alive() and fake.in_flight == 1
    t0 = time.monotonic()
    fake.stop()
    assert time.monotonic() - t0 < 1.0
    t.join(2)
    assert not t.is_alive() and "r" not in result and isinstance(result["e"], ConnectionError)
    assert fake.in_flight == 0 and not fake.errors


def test_import_error_names_the_debian_packages():
    code = ("import sys; sys.modules['jwt'] = None; sys.path.insert(0, sys.argv[1]);\n"
            "try:\n import fake_issuer\nexcept ImportError as e:\n print(e)\n")
    out = subprocess.run([sys.executable, "-c", code, HERE], capture_output=True, text=True,
                         timeout=30)
    assert "python3-jwt" in out.stdout and "python3-cryptography" in out.stdout, out


def test_b64url_helpers():
    assert b64url(b"\xfb\xff") == "-_8" and b64url_decode("-_8") == b"\xfb\xff"
