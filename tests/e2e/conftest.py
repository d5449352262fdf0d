"""End-to-end harness: starts the real telehook binary on a kernel-picked loopback port with a
temporary config and store, and speaks HTTP to it. Every process started is stopped by pid."""
import http.client
import json
import os
import secrets
import signal
import socket
import sqlite3
import subprocess
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from fakes import FakeEUM, FakeTwilio

BIN = os.environ.get("TELEHOOK_BIN", os.path.join(os.path.dirname(__file__), "../../build/telehook"))
SANITIZED = os.environ.get("TELEHOOK_SANITIZED") == "1"
SLOW = 4 if SANITIZED else 1  # sanitizer builds are slower: scale waits, never assert speed

# Numbers libphonenumber considers valid (see tests/unit/test_phone.c).
US_NUMBER = "+12015550123"
ES_NUMBER = "+34612345678"
HOOK = "/v1/okta/telephony"


def free_port():
    """A loopback port the kernel has just handed out (for tests that need a fixed listen)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def iso(dt):
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def okta_request(phone=US_NUMBER, otp=None, channel="SMS", locale="EN-US", **extra):
    """Okta's documented sample request, with its Preview placeholder number edited. Each call
    gets a new eventId and, unless given, a new code (as Okta sends), so dedupe stays out of
    the way of tests that are not about it."""
    if otp is None:
        otp = f"{secrets.randbelow(900000) + 100000}"
    now = datetime.now(timezone.utc)
    body = {
        "eventId": uuid.uuid4().hex[:22],
        "eventTime": iso(now),
        "eventType": "com.okta.telephony.provider",
        "eventTypeVersion": "1.0",
        "contentType": "application/json",
        "cloudEventVersion": "0.1",
        "source": "https://example.okta.com/api/v1/inlineHooks/calz6lVQA77AwFeEe0g3",
        "requestType": "com.okta.user.telephony.mfa-verification",
        "data": {
            "context": {"request": {"id": "reqRgSk8IBBRhuo0YdlEDTmUw", "method": "POST",
                                    "url": {"value": "/api/v1/authn/factors/sms/verify"},
                                    "ipAddress": "127.0.0.1"}},
            "userProfile": {"firstName": "Test", "lastName": "User",
                            "login": "test.user@example.com", "userId": "00uyxxSknGtK8022w0g3"},
            "messageProfile": {
                "msgTemplate": f"(HOOK)Your code is {otp}",
                "phoneNumber": phone,
                "otpExpires": iso(now + timedelta(minutes=5) - timedelta(seconds=5)),
                "deliveryChannel": channel,
                "otpCode": otp,
                "locale": locale,
            },
        },
    }
    mp = body["data"]["messageProfile"]
    for k, v in extra.items():
        if v is None:
            mp.pop(k, None)
        else:
            mp[k] = v
    return body


OKTA_CAUSE_FIELDS = {"errorSummary", "reason", "locationType", "location", "domain"}


def assert_okta_error(body, reason=None, summary=None, causes=True):
    """Okta's error object, whole (reference §2.4): {"error": {"errorSummary": S, "errorCauses":
    [{"errorSummary": S, "reason": R}]}} and nothing else; a cause may also hold Okta's
    locationType, location and domain, all strings. causes=False: an HTTP-level refusal, which
    carries the summary alone. Returns the error object."""
    assert isinstance(body, dict) and set(body) == {"error"}, body
    err = body["error"]
    assert isinstance(err, dict), body
    assert isinstance(err.get("errorSummary"), str) and err["errorSummary"].strip(), body
    if summary is not None:
        assert err["errorSummary"] == summary, body
    if not causes:
        assert set(err) == {"errorSummary"}, body
        return err
    assert set(err) == {"errorSummary", "errorCauses"}, body
    assert isinstance(err["errorCauses"], list) and len(err["errorCauses"]) == 1, body
    cause = err["errorCauses"][0]
    assert isinstance(cause, dict) and {"errorSummary", "reason"} <= set(cause), body
    assert set(cause) <= OKTA_CAUSE_FIELDS, body
    assert all(isinstance(v, str) for v in cause.values()), body
    assert cause["errorSummary"] == err["errorSummary"], body
    assert cause["reason"].strip(), body
    if reason is not None:
        assert cause["reason"] == reason, body
    return err


class Server:
    def __init__(self, tmp, config="", env=None, secret=None):
        self.tmp = tmp
        self.secret = secret or "sk-" + secrets.token_urlsafe(24)
        self.header = "x-telephony-key"
        self.db = os.path.join(tmp, "telehook.db")
        self.conf = os.path.join(tmp, "telehook.conf")
        (tmp / "secret").write_text(self.secret + "\n")
        os.chmod(tmp / "secret", 0o600)  # a secret file others can read is refused
        base = {
            "server": {"listen": "127.0.0.1:0", "threads": "2", "port_file": str(tmp / "port")},
            "auth": {"mode": "header", "header_name": self.header,
                     "header_secret_file": str(tmp / "secret")},
            "store": {"url": "sqlite:" + self.db},
            # Rate limits and budgets off: tests that are about them turn them on.
            "guard": {"limit_phone": "0", "limit_phone_daily": "0", "limit_user": "0",
                      "limit_country": "0", "budget_calling_code": "0", "limit_global": "0"},
        }
        for line in config.strip().splitlines():  # "section.key = value" overrides
            if line.strip():
                k, v = line.split("=", 1)
                sect, key = k.strip().split(".", 1)
                if v.strip() == "<unset>":
                    base.get(sect, {}).pop(key, None)
                else:
                    base.setdefault(sect, {})[key] = v.strip()
        with open(self.conf, "w") as f:
            for sect, kv in base.items():
                f.write(f"[{sect}]\n")
                for k, v in kv.items():
                    if v is not None:
                        f.write(f"{k} = {v}\n")
        # Nothing of the developer's own set-up leaks in: no TELEHOOK_ or AWS_ variables, and a
        # HOME of its own (so ~/.aws is not read); instance metadata is off unless a test asks.
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith("TELEHOOK_") and not k.startswith("AWS_")}
        self.env["HOME"] = str(tmp)
        self.env["AWS_EC2_METADATA_DISABLED"] = "true"
        self.env.update(env or {})
        self.proc = None
        self.port = None

    def cli(self, *args, check=True, env=None):
        e = dict(self.env, **(env or {}))
        r = subprocess.run([BIN, "-c", self.conf, *args], env=e, capture_output=True, text=True,
                           timeout=30 * SLOW)
        if check and r.returncode != 0:
            raise AssertionError(f"telehook {' '.join(args)} failed: {r.stderr}")
        return r

    def start(self, expect_fail=False):
        self.stderr = open(os.path.join(self.tmp, "stderr.log"), "wb")
        self.proc = subprocess.Popen([BIN, "-c", self.conf, "serve"], env=self.env,
                                     stdout=subprocess.DEVNULL, stderr=self.stderr)
        if expect_fail:
            return self.proc.wait(timeout=10 * SLOW)
        port_file = self.tmp / "port"
        deadline = time.monotonic() + 15 * SLOW
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}: {self.log_text()}")
            if port_file.exists() and port_file.read_text().strip():
                self.port = int(port_file.read_text())
                status, _, _ = self.request("GET", "/healthz")
                if status == 200:
                    return self
            time.sleep(0.02)
        raise AssertionError("server did not start: " + self.log_text())

    def stop(self, sig=signal.SIGTERM):
        """Stops the server by pid; returns its exit status."""
        if not self.proc or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=10 * SLOW)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("server did not stop on SIGTERM")

    def connect(self):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=10 * SLOW)

    def request(self, method, path, body=None, headers=None, conn=None):
        own = conn is None
        conn = conn or self.connect()
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
        finally:
            if own:
                conn.close()

    def post(self, body, auth=True, headers=None, conn=None):
        """POSTs an Okta request (dict → JSON); returns (status, headers, parsed JSON)."""
        h = {"Content-Type": "application/json", "Accept": "application/json"}
        if auth:
            h[self.header] = self.secret
        h.update(headers or {})
        data = body if isinstance(body, (bytes, str)) else json.dumps(body)
        status, hdrs, raw = self.request("POST", HOOK, data, h, conn)
        return status, hdrs, json.loads(raw)

    def db_rows(self, sql, args=()):
        con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10)
        try:
            return con.execute(sql, args).fetchall()
        finally:
            con.close()

    def wait_rows(self, sql, want, args=()):
        """Delivery records are written off the hot path: poll until they land."""
        deadline = time.monotonic() + 10 * SLOW
        while True:
            n = self.db_rows(sql, args)[0][0]
            if n >= want or time.monotonic() > deadline:
                return n
            time.sleep(0.02)

    def log_text(self):
        self.stderr.flush()
        with open(os.path.join(self.tmp, "stderr.log"), "rb") as f:
            return f.read().decode("utf-8", "replace")

    def logs(self):
        """Every stderr line, each of which must be a JSON object."""
        out = []
        for line in self.log_text().splitlines():
            out.append(json.loads(line))
        return out


@pytest.fixture
def make_server(tmp_path):
    servers = []

    def make(config="", env=None, start=True, secret=None):
        d = tmp_path / f"s{len(servers)}"
        d.mkdir()
        s = Server(d, config, env, secret)
        servers.append(s)
        return s.start() if start else s

    yield make
    for s in servers:
        if s.proc and s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait()


@pytest.fixture
def server(make_server):
    s = make_server()
    yield s
    assert s.stop() == 0, "telehook must exit 0 after SIGTERM"


# The provider fakes most provider tests use (a module may define its own, e.g. test_aws_creds).
@pytest.fixture
def eum():
    with FakeEUM(region="eu-west-1") as f:
        yield f
        assert not f.errors, f.errors


@pytest.fixture
def twilio():
    with FakeTwilio(credentials=None) as f:
        yield f
        assert not f.errors, f.errors
