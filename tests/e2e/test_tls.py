"""HTTPS in telehook itself (server.tls_cert / tls_key): a throw-away CA made here signs the
server's certificate for 127.0.0.1 and localhost; clients (python ssl, curl) verify against that
CA. TLS 1.2 and 1.3 only, AEAD ciphers only; the certificate is swapped on SIGHUP without
touching open connections; the key file's mode, the pair and the expiry are checked at start and
by `config check`."""
import http.client
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import time

import pytest

from conftest import HOOK, SLOW, okta_request
from throwaway_ca import ThrowawayCA


@pytest.fixture
def ca():
    return ThrowawayCA()


def client_context(ca_file, minimum=None, maximum=None):
    ctx = ssl.create_default_context(cafile=str(ca_file))
    if minimum:
        ctx.minimum_version = minimum
    if maximum:
        ctx.maximum_version = maximum
    return ctx


def tls_server(make_server, ca, leaf=None, config="", key_mode=0o600, start=True):
    """A server with leaf (default: a fresh one from ca) as its certificate; its connect() (and
    so request/post) speaks HTTPS verified against ca."""
    s = make_server(config, start=False)
    leaf = leaf or ca.issue()
    s.cert_path, s.key_path = s.tmp / "server.pem", s.tmp / "server.key"
    s.ca_path = ca.write_ca(s.tmp / "ca.pem")
    leaf.write(s.cert_path, s.key_path, key_mode)
    with open(s.conf, "a") as f:
        f.write(f"[server]\ntls_cert = {s.cert_path}\ntls_key = {s.key_path}\n")
    s.ctx = client_context(s.ca_path)
    s.connect = lambda: http.client.HTTPSConnection("127.0.0.1", s.port, timeout=10 * SLOW,
                                                    context=s.ctx)
    s.leaf = leaf
    return s.start() if start else s


def handshake(s, ctx, server_hostname="localhost"):
    """A TLS connection to s (the handshake done), or the ssl.SSLError it ended with."""
    raw = socket.create_connection(("127.0.0.1", s.port), timeout=5 * SLOW)
    try:
        return ctx.wrap_socket(raw, server_hostname=server_hostname)
    except (ssl.SSLError, ConnectionError) as e:
        raw.close()
        return e


def peer_serial(sock):
    from cryptography import x509
    return x509.load_der_x509_certificate(sock.getpeercert(binary_form=True)).serial_number


def client_hello(ctx):
    """The ClientHello ctx would send (bytes): proves what a client offers before a test takes
    the server's refusal as the server's doing."""
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return out.read()


def reload_lines(s, want):
    deadline = time.monotonic() + 10 * SLOW
    while True:
        lines = [l for l in s.logs() if l.get("event") == "reload" and "TLS" in l.get("msg", "")]
        if len(lines) >= want or time.monotonic() > deadline:
            return lines
        time.sleep(0.02)


def metric(s, name):
    status, _, body = s.request("GET", "/metrics")
    assert status == 200
    m = re.search(rf"^{name} (\S+)$", body.decode(), re.M)
    assert m, body.decode()
    return float(m.group(1))


# ---- serving ---------------------------------------------------------------------------------


def test_https_python_client(make_server, ca):
    s = tls_server(make_server, ca)
    status, _, body = s.request("GET", "/healthz")
    assert status == 200 and json.loads(body) == {"status": "ok"}
    status, _, body = s.post(okta_request())
    assert status == 200
    assert body["commands"][0]["value"][0]["status"] == "SUCCESSFUL"
    listening = [l for l in s.logs() if l.get("event") == "listening"]
    assert listening[0]["scheme"] == "https"
    # plain HTTP on the HTTPS port is not served
    plain = http.client.HTTPConnection("127.0.0.1", s.port, timeout=5 * SLOW)
    with pytest.raises((http.client.HTTPException, ConnectionError, OSError)):
        plain.request("GET", "/healthz")
        assert plain.getresponse().status != 200
    plain.close()
    assert s.stop() == 0


def test_https_curl(make_server, ca):
    s = tls_server(make_server, ca)
    base = f"https://127.0.0.1:{s.port}"
    r = subprocess.run(["curl", "-sS", "--cacert", str(s.ca_path), "-o", "/dev/null", "-w",
                        "%{http_code}", base + "/healthz"], capture_output=True, text=True,
                       timeout=20 * SLOW)
    assert r.returncode == 0 and r.stdout == "200", r.stderr
    r = subprocess.run(["curl", "-sS", "--cacert", str(s.ca_path), "-H",
                        "Content-Type: application/json", "-H", f"{s.header}: {s.secret}",
                        "--data-binary", json.dumps(okta_request()), base + HOOK],
                       capture_output=True, text=True, timeout=20 * SLOW)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["commands"][0]["value"][0]["status"] == "SUCCESSFUL"
    # the same curl without the CA: the certificate is not one it trusts
    r = subprocess.run(["curl", "-sS", "--capath", str(s.tmp), "--cacert", str(s.cert_path)
                        + ".missing", base + "/healthz"], capture_output=True, text=True,
                       timeout=20 * SLOW)
    assert r.returncode != 0
    assert s.stop() == 0


def test_tls12_and_tls13_accepted_with_aead(make_server, ca):
    s = tls_server(make_server, ca)
    for v, name in ((ssl.TLSVersion.TLSv1_2, "TLSv1.2"), (ssl.TLSVersion.TLSv1_3, "TLSv1.3")):
        c = handshake(s, client_context(s.ca_path, v, v))
        assert isinstance(c, ssl.SSLSocket), c
        assert c.version() == name
        cipher = c.cipher()[0]
        assert "GCM" in cipher or "CHACHA20" in cipher, cipher
        if v == ssl.TLSVersion.TLSv1_2:
            assert cipher.startswith("ECDHE-"), cipher  # forward secrecy
        c.close()
    assert s.stop() == 0


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
def test_old_tls_refused(make_server, ca, version):
    s = tls_server(make_server, ca)
    ctx = client_context(s.ca_path, version, version)
    ctx.set_ciphers("ALL:@SECLEVEL=0")  # or Debian's OpenSSL would not even offer it
    hello = client_hello(ctx)
    # a handshake record whose ClientHello asks for exactly that version (TLS 1.0: 0x0301)
    assert hello[0] == 0x16 and hello[5] == 0x01
    assert hello[9:11] == bytes([3, 1 if version == ssl.TLSVersion.TLSv1 else 2]), hello[:16]
    c = handshake(s, ctx)
    assert isinstance(c, (ssl.SSLError, ConnectionError)), c.version()
    # the server still serves modern clients
    assert s.request("GET", "/healthz")[0] == 200
    assert s.stop() == 0


def test_cbc_only_client_refused(make_server, ca):
    s = tls_server(make_server, ca)
    ctx = client_context(s.ca_path, ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2)
    ctx.set_ciphers("ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:ECDHE-ECDSA-AES128-SHA256:"
                    "ECDHE-ECDSA-AES256-SHA384")
    assert all("CBC" in c["description"] or "SHA" in c["name"] for c in ctx.get_ciphers())
    c = handshake(s, ctx)
    assert isinstance(c, (ssl.SSLError, ConnectionError)), c.cipher()
    assert s.stop() == 0


def test_rsa_certificate_forward_secrecy_only(make_server, ca):
    """An RSA certificate: ECDHE-RSA is served; a client offering only static RSA key exchange
    (no forward secrecy) is refused."""
    s = tls_server(make_server, ca, leaf=ca.issue(rsa_bits=2048))
    assert s.request("GET", "/healthz")[0] == 200
    ctx = client_context(s.ca_path, ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2)
    c = handshake(s, ctx)
    assert isinstance(c, ssl.SSLSocket) and c.cipher()[0].startswith("ECDHE-RSA-"), c
    c.close()
    ctx.set_ciphers("AES128-GCM-SHA256:AES256-GCM-SHA384")  # RSA key exchange, AEAD
    c = handshake(s, ctx)
    assert isinstance(c, (ssl.SSLError, ConnectionError)), c.cipher()
    assert s.stop() == 0


def test_session_resumption(make_server, ca):
    s = tls_server(make_server, ca)
    for v in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        ctx = client_context(s.ca_path, v, v)
        c = ctx.wrap_socket(socket.create_connection(("127.0.0.1", s.port), timeout=5 * SLOW),
                            server_hostname="localhost")
        # TLS 1.3 sends its ticket after the handshake: a request and its answer bring it
        c.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        while c.recv(4096):
            pass
        session = c.session
        c.close()
        assert session is not None and session.has_ticket, v
        c = ctx.wrap_socket(socket.create_connection(("127.0.0.1", s.port), timeout=5 * SLOW),
                            server_hostname="localhost", session=session)
        assert c.session_reused, v
        c.close()
    assert s.stop() == 0


# ---- connection hygiene over TLS ---------------------------------------------------------------


def test_framing_checks_over_tls(make_server, ca):
    """The framing checks read libmicrohttpd's header buffer: the same over TLS."""
    s = tls_server(make_server, ca)
    c = handshake(s, s.ctx)
    body = json.dumps(okta_request()).encode()
    c.sendall(b"POST " + HOOK.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
              b"\r\n" + f"{s.header}: {s.secret}\r\nContent-Length: {len(body)}\r\n".encode()
              + b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    data = b""
    while True:
        chunk = c.recv(4096)
        if not chunk:
            break  # closed after the refusal
        data += chunk
    assert data.startswith(b"HTTP/1.1 400"), data[:80]
    c.close()
    assert any(l.get("reason") == "both Content-Length and Transfer-Encoding"
               or "Transfer-Encoding" in l.get("reason", "") for l in s.logs()
               if l.get("event") == "refused"), s.log_text()
    assert s.stop() == 0


def test_idle_and_stalled_handshakes_time_out(make_server, ca):
    s = tls_server(make_server, ca, config="server.connection_timeout = 1")
    raw = socket.create_connection(("127.0.0.1", s.port), timeout=5 * SLOW)  # never handshakes
    idle = handshake(s, s.ctx)  # handshakes, then sends nothing
    t0 = time.monotonic()
    while raw.recv(64):  # at most an alert, then the close
        pass
    assert idle.recv(1) == b""
    assert time.monotonic() - t0 < 4 * SLOW
    raw.close()
    idle.close()
    assert s.stop() == 0


def test_connections_per_source_over_tls(make_server, ca):
    s = tls_server(make_server, ca,
                   config="server.threads = 1\nserver.max_connections_per_source = 1")
    first = handshake(s, s.ctx)
    assert isinstance(first, ssl.SSLSocket)
    second = handshake(s, s.ctx)  # libmicrohttpd closes it at accept: the handshake fails
    assert isinstance(second, (ssl.SSLError, ConnectionError, OSError)), second
    first.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert first.recv(4096).startswith(b"HTTP/1.1 200")
    first.close()
    assert s.stop() == 0


# ---- reload ----------------------------------------------------------------------------------


def test_sighup_swaps_the_certificate_keeping_open_connections(make_server, ca):
    s = tls_server(make_server, ca)
    old = s.leaf
    keep = s.connect()  # a keep-alive connection made with the old certificate
    assert s.post(okta_request(), conn=keep)[0] == 200
    keep_sock = keep.sock
    assert keep_sock is not None and peer_serial(keep_sock) == old.serial
    assert metric(s, "telehook_tls_certificate_expiry_seconds") == old.not_after

    new = ca.issue(cn="hook.test", dns=("localhost", "hook.test"), days=25)
    assert new.serial != old.serial and new.not_after != old.not_after
    new.write(s.cert_path, s.key_path)
    s.proc.send_signal(signal.SIGHUP)
    line = reload_lines(s, 1)[-1]
    assert line["level"] == "info" and line["msg"] == "TLS certificate reloaded", line
    assert "hook.test" in line["names"] and line["not_after"] == new.not_after

    # the open connection goes on, on the handshake it made
    status, _, body = s.post(okta_request(), conn=keep)
    assert status == 200 and body["commands"][0]["value"][0]["status"] == "SUCCESSFUL"
    assert keep.sock is keep_sock, "the open connection was dropped"
    assert peer_serial(keep.sock) == old.serial
    keep.close()
    # a new one gets the new certificate, and the gauge moved
    c = handshake(s, s.ctx, server_hostname="hook.test")
    assert isinstance(c, ssl.SSLSocket), c
    assert peer_serial(c) == new.serial
    c.close()
    assert metric(s, "telehook_tls_certificate_expiry_seconds") == new.not_after
    assert s.stop() == 0


def test_sighup_with_a_broken_key_keeps_the_certificate(make_server, ca):
    s = tls_server(make_server, ca)
    old = s.leaf
    other = ca.issue()
    with open(s.cert_path, "wb") as f:  # a new certificate, but the key is still the old one
        f.write(other.cert_pem + other.chain_pem)
    s.proc.send_signal(signal.SIGHUP)
    line = reload_lines(s, 1)[-1]
    assert line["level"] == "error", line
    assert "running one stays" in line["msg"] and "does not match" in line["msg"], line
    # a key that does not parse, then one others can read: refused too, each with its reason
    other.write(s.cert_path, s.key_path)
    with open(s.key_path, "wb") as f:
        f.write(b"-----BEGIN PRIVATE KEY-----\nbroken\n-----END PRIVATE KEY-----\n")
    s.proc.send_signal(signal.SIGHUP)
    line = reload_lines(s, 2)[-1]
    assert line["level"] == "error" and "private key could not be read" in line["msg"], line
    other.write(s.cert_path, s.key_path, key_mode=0o644)
    s.proc.send_signal(signal.SIGHUP)
    line = reload_lines(s, 3)[-1]
    assert line["level"] == "error" and "open to other users" in line["msg"], line
    assert "PRIVATE KEY" not in s.log_text()

    c = handshake(s, s.ctx)
    assert isinstance(c, ssl.SSLSocket), c
    assert peer_serial(c) == old.serial
    c.close()
    assert metric(s, "telehook_tls_certificate_expiry_seconds") == old.not_after
    assert s.stop() == 0


# ---- start-up and config check ---------------------------------------------------------------


def test_key_readable_by_others_refused_at_start(make_server, ca):
    s = tls_server(make_server, ca, key_mode=0o644, start=False)
    assert s.start(expect_fail=True) != 0
    assert "open to other users" in s.log_text() and "server.tls_key" in s.log_text()
    r = s.cli("config", "check", check=False)
    assert r.returncode != 0 and "open to other users" in r.stderr


def test_key_readable_by_group_warns(make_server, ca):
    s = tls_server(make_server, ca, key_mode=0o640)
    assert any(l.get("event") == "tls" and "open to its group" in l.get("msg", "")
               for l in s.logs()), s.log_text()
    assert s.stop() == 0


def test_config_check_lists_the_names(make_server, ca):
    s = tls_server(make_server, ca, start=False)
    r = s.cli("config", "check")
    assert "HTTPS: certificate for localhost, 127.0.0.1, valid until" in r.stderr, r.stderr
    assert "warning" not in r.stderr
    ca.issue(days=5).write(s.cert_path, s.key_path)
    r = s.cli("config", "check")
    assert "warning" in r.stderr and "expires in" in r.stderr, r.stderr


def test_config_check_refuses_a_key_of_another_certificate(make_server, ca):
    s = tls_server(make_server, ca, start=False)
    with open(s.key_path, "wb") as f:
        f.write(ca.issue().key_pem)
    r = s.cli("config", "check", check=False)
    assert r.returncode != 0 and "does not match" in r.stderr, r.stderr
    assert s.start(expect_fail=True) != 0


def test_config_check_refuses_an_expired_certificate(make_server, ca):
    s = tls_server(make_server, ca, leaf=ca.issue(days=-1, not_before_days=-30), start=False)
    r = s.cli("config", "check", check=False)
    assert r.returncode != 0 and "expired" in r.stderr, r.stderr
    assert s.start(expect_fail=True) != 0


def test_cert_without_key_refused(make_server, ca):
    s = make_server("server.tls_cert = /nonexistent.pem", start=False)
    r = s.cli("config", "check", check=False)
    assert r.returncode != 0 and "tls_cert and tls_key go together" in r.stderr, r.stderr
