"""Outbound TLS and proxies, end to end: providers served over HTTPS on 127.0.0.1 with a
certificate from a throw-away CA made here; telehook trusts that CA only when told to ([tls]
ca_file, a provider's ca_file, AWS_CA_BUNDLE, the AWS profile's ca_bundle). A CONNECT proxy on
loopback shows which requests go through HTTPS_PROXY and which never do (the AWS metadata and
container endpoints). And the webhook refuses plain http:// outside loopback."""
import datetime
import ipaddress
import select
import socket
import ssl
import threading
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from conftest import ES_NUMBER, SLOW, US_NUMBER, okta_request
from fakes import FakeCredsEndpoint, FakeEUM, FakeTwilio, FakeWebhook

# ---- a throw-away CA -------------------------------------------------------------------------


class ThrowawayCA:
    """A CA and a server certificate for 127.0.0.1 it signed, as PEM files in directory d."""

    def __init__(self, d, name):
        now = datetime.datetime.now(datetime.timezone.utc)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"telehook test {name}")])
        ca = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
              .public_key(key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now - datetime.timedelta(minutes=5))
              .not_valid_after(now + datetime.timedelta(hours=1))
              .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
              .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                           False), critical=True)
              .sign(key, hashes.SHA256()))
        leaf_key = ec.generate_private_key(ec.SECP256R1())
        leaf = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
                .issuer_name(subject).public_key(leaf_key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(hours=1))
                .add_extension(x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                     x509.DNSName("localhost")]), critical=False)
                .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                               critical=False)
                .sign(key, hashes.SHA256()))
        self.ca_file = d / f"{name}-ca.pem"
        self.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        self.cert_file = d / f"{name}-server.pem"
        self.cert_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
        self.key_file = d / f"{name}-server.key"
        self.key_file.write_bytes(leaf_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))

    def server_context(self):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx


@pytest.fixture
def ca(tmp_path):
    return ThrowawayCA(tmp_path, "a")


@pytest.fixture
def other_ca(tmp_path):
    return ThrowawayCA(tmp_path, "b")


def https(fake, ca):
    fake.tls = ca.server_context()
    return fake.start()


# ---- a CONNECT proxy on loopback -------------------------------------------------------------


class Proxy:
    """A forward proxy on loopback, to 127.0.0.1 only, recording what it carries: `.tunnels` the
    CONNECT targets ("127.0.0.1:PORT", for https), `.forwarded` the plain-HTTP requests
    ("GET http://127.0.0.1:PORT/path", each forwarded on a connection of its own)."""

    def __init__(self, tls=None):
        self.tls = tls  # a server-side ssl.SSLContext: an https:// proxy
        self.tunnels, self.forwarded, self.tls_errors = [], [], []
        self._lock = threading.Lock()
        self._socks = set()
        self._threads = []
        self._listen = socket.socket()
        self._listen.bind(("127.0.0.1", 0))
        self._listen.listen(64)
        self.port = self._listen.getsockname()[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self._accepter = threading.Thread(target=self._accept, daemon=True)
        self._accepter.start()

    def _track(self, s):
        with self._lock:
            self._socks.add(s)
        return s

    def _accept(self):
        while True:
            try:
                c, _ = self._listen.accept()
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(self._track(c),), daemon=True)
            with self._lock:
                self._threads.append(t)
            t.start()

    def _serve(self, c):
        try:
            c.settimeout(10)
            if self.tls is not None:
                try:
                    c = self._track(self.tls.wrap_socket(c, server_side=True))
                except (ssl.SSLError, OSError) as e:
                    with self._lock:
                        self.tls_errors.append(str(e))
                    return
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 8192:
                chunk = c.recv(4096)
                if not chunk:
                    return
                head += chunk
            head, rest = head.split(b"\r\n\r\n", 1)
            line, *fields = head.decode("latin-1").split("\r\n")
            method, target, version = (line.split(" ") + ["", "", ""])[:3]
            if method == "CONNECT":
                with self._lock:
                    self.tunnels.append(target)
                host, _, port = target.rpartition(":")
            else:
                with self._lock:
                    self.forwarded.append(f"{method} {target}")
                hostport, _, path = target.removeprefix("http://").partition("/")
                host, _, port = hostport.rpartition(":")
            if host != "127.0.0.1":
                c.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                return
            up = self._track(socket.create_connection((host, int(port)), timeout=10))
            if method == "CONNECT":
                c.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:  # origin-form, and one request per connection: the origin closes after it
                fields = [f for f in fields if not f.lower().startswith(("connection:",
                                                                         "proxy-connection:"))]
                up.sendall("\r\n".join([f"{method} /{path} {version}", *fields,
                                         "Connection: close", "", ""]).encode("latin-1"))
            if rest:
                up.sendall(rest)
            self._relay(c, up)
        except OSError:
            pass
        finally:
            c.close()

    @staticmethod
    def _relay(a, b):
        peers = {a: b, b: a}
        while True:
            ready, _, _ = select.select(list(peers), [], [], 10)
            if not ready:
                return
            for s in ready:
                data = s.recv(65536)
                if not data:
                    return
                while isinstance(s, ssl.SSLSocket) and s.pending():  # select cannot see these
                    data += s.recv(s.pending())
                peers[s].sendall(data)

    def stop(self):
        try:
            self._listen.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        except OSError:
            pass
        self._listen.close()
        with self._lock:
            socks, threads = list(self._socks), list(self._threads)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        self._accepter.join(timeout=2)
        for t in threads:
            t.join(timeout=2)


@pytest.fixture
def proxy():
    p = Proxy()
    yield p
    p.stop()


# Every proxy variable libcurl reads, so the developer's own set-up never leaks into a test.
NO_PROXY_ENV = {k: "" for k in ("http_proxy", "https_proxy", "HTTPS_PROXY", "all_proxy",
                                "ALL_PROXY", "no_proxy", "NO_PROXY")}


def proxy_env(proxy, no_proxy=""):
    env = dict(NO_PROXY_ENV)
    for k in ("http_proxy", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        env[k] = proxy.url
    env["no_proxy"] = env["NO_PROXY"] = no_proxy
    return env


# ---- helpers ---------------------------------------------------------------------------------

def send(server, **kw):
    """Posts an Okta request; returns (delivered: bool, Okta's answer body)."""
    status, _, body = server.post(okta_request(**kw))
    assert status == 200, body
    return "commands" in body and "error" not in body, body


def wait_for(cond, what):
    """Polls cond (the fakes record on their own threads, maybe after telehook has answered)."""
    deadline = time.monotonic() + 5 * SLOW
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def last_error(server):
    server.wait_rows("SELECT count(*) FROM deliveries", 1)
    return server.db_rows("SELECT error FROM deliveries ORDER BY created_ms DESC, rowid DESC "
                          "LIMIT 1")[0][0] or ""


def provider_setup(name, fake):
    """Config lines and environment (no proxy) that route every message to the fake."""
    if name == "twilio":
        return f"""
            provider.name = twilio
            twilio.account_sid = {fake.account_sid}
            twilio.auth_token = {fake.auth_token}
            twilio.from = +12065550111
            twilio.base_url = {fake.url}""", dict(NO_PROXY_ENV)
    if name == "webhook":
        return f"""
            provider.name = webhook
            webhook.url = {fake.url}/send
            webhook.secret = {fake.secret}""", dict(NO_PROXY_ENV)
    akid, secret, _ = fake.credential
    return f"""
        provider.name = aws
        aws.region = {fake.region}
        aws.endpoint = {fake.url}
        aws.origination_identity = +12065550100""", dict(
        NO_PROXY_ENV, AWS_ACCESS_KEY_ID=akid, AWS_SECRET_ACCESS_KEY=secret)


FAKES = {"twilio": lambda: FakeTwilio(credentials=None), "webhook": FakeWebhook,
         "aws": lambda: FakeEUM(region="us-east-1")}


# ---- a private CA ----------------------------------------------------------------------------

# How each provider is told about the CA: (provider, config line, environment, AWS config file).
TRUST_WAYS = [
    ("twilio", "tls.ca_file = {ca}", {}, None),
    ("twilio", "twilio.ca_file = {ca}", {}, None),
    ("webhook", "tls.ca_file = {ca}", {}, None),
    ("webhook", "webhook.ca_file = {ca}", {}, None),
    ("aws", "tls.ca_file = {ca}", {}, None),
    ("aws", "aws.ca_file = {ca}", {}, None),
    ("aws", "", {"AWS_CA_BUNDLE": "{ca}"}, None),
    ("aws", "", {}, "[default]\nca_bundle = {ca}\n"),
]


@pytest.mark.parametrize("name,line,env,aws_config", TRUST_WAYS,
                         ids=["tls-twilio", "twilio", "tls-webhook", "webhook", "tls-aws",
                              "aws-key", "AWS_CA_BUNDLE", "aws-profile-ca_bundle"])
def test_private_ca_trusted_only_when_configured(make_server, tmp_path, ca, name, line, env,
                                                 aws_config):
    fake = https(FAKES[name](), ca)
    try:
        conf, base_env = provider_setup(name, fake)
        # Without the setting: the handshake fails (the fake sees telehook refuse its
        # certificate), nothing is sent, Okta gets an error and the record says why.
        s = make_server(conf, env=base_env)
        ok, body = send(s)
        assert not ok, body
        assert fake.count() == 0
        wait_for(lambda: fake.tls_errors, "the fake saw no refused handshake")
        assert "unknown ca" in fake.tls_errors[-1].lower(), fake.tls_errors
        assert "certificate" in last_error(s).lower(), last_error(s)
        assert s.stop() == 0
        # With it: delivered, over TLS, and the fake verified the request as usual.
        env2 = dict(base_env, **{k: v.format(ca=ca.ca_file) for k, v in env.items()})
        if aws_config:
            cfg = tmp_path / "aws-config"
            cfg.write_text(aws_config.format(ca=ca.ca_file))
            env2["AWS_CONFIG_FILE"] = str(cfg)
        s = make_server(conf + "\n" + line.format(ca=ca.ca_file), env=env2)
        ok, body = send(s)
        assert ok, (body, last_error(s))
        assert fake.last()["valid"], fake.last()["reason"]
        assert not fake.errors, fake.errors
    finally:
        fake.stop()


def test_provider_ca_file_overrides_tls_on_the_same_connections(make_server, tmp_path, ca,
                                                               other_ca):
    """[tls] ca_file trusts CA b (Twilio's here); [webhook] ca_file trusts CA a (the gateway's)
    and replaces [tls] for the webhook alone. One event loop, so the same recycled transfer
    handles alternate between the two trusts."""
    web = https(FakeWebhook(), ca)
    tw = https(FakeTwilio(credentials=None), other_ca)
    try:
        conf, env = provider_setup("twilio", tw)
        s = make_server(conf + f"""
            server.threads = 1
            tls.ca_file = {other_ca.ca_file}
            webhook.url = {web.url}/send
            webhook.secret = {web.secret}
            webhook.ca_file = {ca.ca_file}""", env=env, start=False)
        s.cli("routes", "set", "sms", "US", "webhook")
        s.cli("routes", "set", "sms", "ES", "twilio")
        s.start()
        for i in range(3):
            for phone, fake in ((US_NUMBER, web), (ES_NUMBER, tw)):
                ok, body = send(s, phone=phone)
                assert ok, (body, last_error(s))
                assert fake.count(valid=True) == i + 1
        assert not web.tls_errors and not tw.tls_errors
    finally:
        web.stop()
        tw.stop()


@pytest.mark.parametrize("line,want", [
    ("tls.ca_file = {missing}", "[tls] ca_file: '{missing}': No such file"),
    ("tls.ca_file = {junk}", "[tls] ca_file: '{junk}' holds no PEM certificate"),
    ("tls.ca_path = {junk}", "[tls] ca_path: '{junk}' is not a directory"),
    ("twilio.ca_file = {tmp}", "[twilio] ca_file: '{tmp}' is not a regular file"),
    ("webhook.ca_file = {missing}", "[webhook] ca_file: '{missing}': No such file"),
    ("aws.ca_file = {junk}", "[aws] ca_file: '{junk}' holds no PEM certificate"),
])
def test_bad_ca_settings_stop_config_check_and_serve(make_server, tmp_path, line, want):
    junk = tmp_path / "junk.pem"
    junk.write_text("this is not a certificate\n")
    paths = dict(missing=tmp_path / "missing.pem", junk=junk, tmp=tmp_path)
    s = make_server(line.format(**paths), start=False)
    r = s.cli("config", "check", check=False)
    assert r.returncode == 2 and want.format(**paths) in r.stderr, r.stderr
    assert s.start(expect_fail=True) == 2
    assert want.format(**paths) in s.log_text()


@pytest.mark.parametrize("how", ["AWS_CA_BUNDLE", "profile"])
def test_bad_aws_ca_bundle_stops_serve(make_server, tmp_path, how):
    missing = tmp_path / "nope.pem"
    env = {"AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE", "AWS_SECRET_ACCESS_KEY": "x" * 40}
    if how == "AWS_CA_BUNDLE":
        env["AWS_CA_BUNDLE"] = str(missing)
        want = f"provider aws: AWS_CA_BUNDLE: '{missing}': No such file"
    else:
        cfg = tmp_path / "aws-config"
        cfg.write_text(f"[profile ops]\nca_bundle = {missing}\n")
        env.update(AWS_CONFIG_FILE=str(cfg), AWS_PROFILE="ops")
        want = f"provider aws: ca_bundle of the AWS config file: '{missing}': No such file"
    s = make_server("provider.name = aws\naws.region = us-east-1", env=env, start=False)
    assert s.start(expect_fail=True) != 0
    assert want in s.log_text(), s.log_text()


# ---- proxies ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["twilio", "webhook", "aws"])
def test_https_proxy_from_the_environment(make_server, tmp_path, ca, proxy, name):
    """HTTPS_PROXY sends provider requests through the proxy (a CONNECT tunnel, TLS still
    verified end to end against the CA); NO_PROXY naming the host sends them directly. This pins
    libcurl's default, which telehook relies on and documents (telehook never sets a proxy)."""
    fake = https(FAKES[name](), ca)
    try:
        conf, env = provider_setup(name, fake)
        conf += f"\ntls.ca_file = {ca.ca_file}"
        s = make_server(conf, env=dict(env, **proxy_env(proxy)))
        ok, body = send(s)
        assert ok, (body, last_error(s))
        assert proxy.tunnels == [f"127.0.0.1:{fake.port}"], proxy.tunnels
        assert proxy.forwarded == []
        assert s.stop() == 0
        s = make_server(conf, env=dict(env, **proxy_env(proxy, no_proxy="127.0.0.1")))
        ok, body = send(s)
        assert ok, (body, last_error(s))
        assert proxy.tunnels == [f"127.0.0.1:{fake.port}"], "NO_PROXY: no new tunnel"
        assert fake.count(valid=True) == 2
    finally:
        fake.stop()


def test_https_proxy_verified_against_tls_ca(make_server, tmp_path, ca, other_ca):
    """An https:// proxy's own certificate is checked against [tls] (CA b here), while Twilio's
    is checked against [twilio] ca_file (CA a): without [tls] the proxy is refused."""
    tw = https(FakeTwilio(credentials=None), ca)
    tls_proxy = Proxy(tls=other_ca.server_context())
    try:
        conf, _ = provider_setup("twilio", tw)
        conf += f"\ntwilio.ca_file = {ca.ca_file}"
        env = proxy_env(tls_proxy)
        s = make_server(conf, env=env)
        ok, body = send(s)
        assert not ok, body
        wait_for(lambda: tls_proxy.tls_errors, "the proxy saw no refused handshake")
        assert tls_proxy.tunnels == [], tls_proxy.tunnels
        assert "proxy" in last_error(s).lower() or "certificate" in last_error(s).lower()
        assert s.stop() == 0
        s = make_server(conf + f"\ntls.ca_file = {other_ca.ca_file}", env=env)
        ok, body = send(s)
        assert ok, (body, last_error(s))
        assert tls_proxy.tunnels == [f"127.0.0.1:{tw.port}"]
        assert tw.last()["valid"], tw.last()["reason"]
    finally:
        tls_proxy.stop()
        tw.stop()


@pytest.mark.parametrize("source", ["imds", "container"])
def test_credential_endpoints_never_go_through_the_proxy(make_server, tmp_path, proxy, source):
    """Every proxy variable names the proxy and NO_PROXY is empty: the AWS API call goes through
    the proxy, but the metadata service and the container agent are always reached directly
    (through a proxy, IMDS would answer with the proxy host's credentials, or not at all)."""
    with FakeCredsEndpoint(role="telehook-node") as creds, \
            FakeEUM(region="us-east-1", credentials=[creds.credential]) as eum:
        conf, _ = provider_setup("aws", eum)
        env = proxy_env(proxy)
        if source == "imds":
            env.update(AWS_EC2_METADATA_DISABLED="false",
                       AWS_EC2_METADATA_SERVICE_ENDPOINT=creds.url)
        else:
            env["AWS_CONTAINER_CREDENTIALS_FULL_URI"] = creds.container_url
        s = make_server(conf, env=env)
        deadline = time.monotonic() + 10 * SLOW
        while s.request("GET", "/readyz")[0] != 200:
            assert time.monotonic() < deadline, s.log_text()
            time.sleep(0.05)
        ok, body = send(s)
        assert ok, (body, last_error(s))
        assert creds.count(valid=True) >= 1
        via_proxy = [r for r in proxy.forwarded if f":{creds.port}/" in r]
        assert via_proxy == [], "credentials fetched through the proxy"
        assert proxy.forwarded == [f"POST {eum.url}/"], proxy.forwarded
        assert eum.last()["valid"], eum.last()["reason"]


# ---- the webhook's scheme --------------------------------------------------------------------

@pytest.mark.parametrize("url,accepted", [
    ("http://example.com/hook", False),
    ("http://10.1.2.3:8080/hook", False),
    ("http://127.0.0.1@example.com/hook", False),
    ("https://example.com/hook", True),
    ("http://127.0.0.1:9/hook", True),
    ("http://[::1]:9/hook", True),
    ("http://localhost:9/hook", True),
])
def test_webhook_plain_http_only_to_loopback(make_server, url, accepted):
    s = make_server(f"""
        provider.name = webhook
        webhook.url = {url}
        webhook.secret = 0123456789abcdef0123""", start=False)
    r = s.cli("config", "check", check=False)
    if accepted:
        assert r.returncode == 0, r.stderr
        return
    assert r.returncode == 2, r.stderr
    assert "[webhook] url: plain http:// is allowed only to a loopback host" in r.stderr
    assert "use https://" in r.stderr
    assert s.start(expect_fail=True) == 2
    assert "[webhook] url: plain http://" in s.log_text()
