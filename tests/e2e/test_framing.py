"""Request framing (RFC 9112): a request whose length a proxy in front could read differently,
or whose header section is not strictly formed, gets one 400 (501 for a transfer coding we do not
implement) with Connection: close, and the connection is closed: the bytes after it, here a
complete second request, are never served. Raw sockets: http.client would not send these."""
import json
import socket

import pytest

from conftest import HOOK, SLOW, Server, okta_request

SMUGGLED = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


def exchange(s, data):
    """Sends data, reads until the server closes; returns everything it sent."""
    with socket.create_connection(("127.0.0.1", s.port), timeout=5 * SLOW) as c:
        c.sendall(data)
        got = b""
        while True:
            try:
                chunk = c.recv(65536)
            except socket.timeout:
                raise AssertionError(f"connection left open after {got[:200]!r}")
            if not chunk:
                return got
            got += chunk


def responses(raw):
    """Splits what the server sent into (status, headers, body) by Content-Length."""
    out = []
    while raw:
        head, sep, rest = raw.partition(b"\r\n\r\n")
        assert sep, f"not an HTTP response: {raw[:200]!r}"
        lines = head.decode("latin-1").split("\r\n")
        assert lines[0].startswith("HTTP/1.1 "), lines[0]
        hdrs = {}
        for line in lines[1:]:
            k, v = line.split(":", 1)
            hdrs[k.strip().lower()] = v.strip()
        n = int(hdrs.get("content-length", "0"))
        out.append((int(lines[0].split()[1]), hdrs, rest[:n]))
        raw = rest[n:]
    return out


def post_head(s, extra):
    return (b"POST " + HOOK.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + s.header.encode() + b": " + s.secret.encode() + b"\r\n" + extra + b"\r\n")


def refused_alone(s, data, status=400, reason=None):
    """Exactly one answer, the refusal, and the connection closed: nothing after it served."""
    (answer,) = responses(exchange(s, data + SMUGGLED))
    got, hdrs, body = answer
    assert got == status, answer
    assert hdrs["connection"].lower() == "close"
    assert hdrs["content-type"] == "application/json"
    assert json.loads(body)["error"]["errorSummary"]
    if reason:
        assert any(l.get("event") == "refused" and l.get("reason") == reason for l in s.logs())


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    """One server for the module (each case is a connection of its own)."""
    s = Server(tmp_path_factory.mktemp("framing"), "server.connection_timeout = 2")
    try:
        yield s.start()
        assert s.stop() == 0
        assert s.secret not in s.log_text()
    finally:
        if s.proc and s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait()


LENGTH_CASES = {
    # (header lines, body): the body is the chunked framing's, or the second length's
    "content-length then transfer-encoding":
        (b"Content-Length: 40\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n"),
    "transfer-encoding then content-length":
        (b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n", b"0\r\n\r\n"),
    "two content-lengths": (b"Content-Length: 2\r\nContent-Length: 40\r\n", b"{}"),
    "two equal content-lengths": (b"Content-Length: 2\r\nContent-Length: 2\r\n", b"{}"),
    "content-length behind a valid one": (b"Content-Length: 2\r\nContent-Length: -1\r\n", b"{}"),
    "two transfer-encodings":
        (b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n"),
    "chunked twice": (b"Transfer-Encoding: chunked, chunked\r\n", b"0\r\n\r\n"),
    "chunked not last": (b"Transfer-Encoding: chunked, gzip\r\n", b"0\r\n\r\n"),
    "not chunked": (b"Transfer-Encoding: gzip\r\n", b"0\r\n\r\n"),
    "xchunked": (b"Transfer-Encoding: xchunked\r\n", b"0\r\n\r\n"),
    "chunked and a space": (b"Transfer-Encoding: chunked \r\n", b"0\r\n\r\n"),
}


@pytest.mark.parametrize("name", LENGTH_CASES)
def test_ambiguous_length_refused_and_closed(srv, name):
    extra, body = LENGTH_CASES[name]
    refused_alone(srv, post_head(srv, extra) + body)


def test_unimplemented_coding_before_chunked_is_501(srv):
    refused_alone(srv, post_head(srv, b"Transfer-Encoding: gzip, chunked\r\n") + b"0\r\n\r\n",
                  501, "a transfer coding other than chunked")


def test_transfer_encoding_in_http10_refused(srv):
    head = post_head(srv, b"Transfer-Encoding: chunked\r\n").replace(b"HTTP/1.1", b"HTTP/1.0")
    refused_alone(srv, head + b"0\r\n\r\n", 400, "Transfer-Encoding in an HTTP/1.0 request")


HEADER_CASES = {
    "NUL in a value": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
    "NUL before the line end": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\x00\r\n\r\n",
    "NUL hiding a field": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: \x00Content-Length: 9\r\n\r\n",
    "bare CR": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n",
    "control character": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n",
    "bare LF": b"GET /healthz HTTP/1.1\nHost: x\nX-A: a\n\n",
    "bare LF in the middle": b"GET /healthz HTTP/1.1\r\nHost: x\nX-A: a\r\n\r\n",
    "line folding": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n",
    "space before the colon": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A : a\r\n\r\n",
    "tab before the colon": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A\t: a\r\n\r\n",
    "space before the first field": b"GET /healthz HTTP/1.1\r\n X-A: a\r\nHost: x\r\n\r\n",
    "no Host": b"GET /healthz HTTP/1.1\r\n\r\n",
    "two Hosts": b"GET /healthz HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
}


@pytest.mark.parametrize("name", HEADER_CASES)
def test_malformed_header_section_refused_and_closed(srv, name):
    refused_alone(srv, HEADER_CASES[name])


def test_space_before_colon_of_content_length(srv):
    # libmicrohttpd would take "Content-Length " for another field and the body for a request
    refused_alone(srv, post_head(srv, b"Content-Length : 2\r\n") + b"{}",
                  400, "a field name that is not a token")


def test_refused_before_authentication(srv):
    data = (b"POST " + HOOK.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
            b"\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    refused_alone(srv, data, 400, "both Transfer-Encoding and Content-Length")


def test_sound_framing_still_served(srv):
    body = json.dumps(okta_request()).encode()
    # chunked, in any case, on a kept-alive connection: both requests answered
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    got = responses(exchange(srv, post_head(srv, b"Transfer-Encoding: CHUNKED\r\n") + chunked
                             + b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
    assert [r[0] for r in got] == [200, 200]
    assert json.loads(got[0][2])["commands"][0]["value"][0]["status"] == "SUCCESSFUL"
    # HTTP/1.0 needs no Host; whitespace, empty values and cookies are fine
    got = responses(exchange(srv, b"GET /healthz HTTP/1.0\r\nX-Empty:\r\nX-Tab:\t v \r\n"
                             b"Cookie: a=1; b=\"2\"\r\n\r\n"))
    assert [r[0] for r in got] == [200]


def test_checked_on_every_request_of_a_connection(srv):
    # a sound request on a kept-alive connection, then one that is not: refused, closed
    body = json.dumps(okta_request()).encode()
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5 * SLOW) as c:
        c.sendall(post_head(srv, b"Content-Length: %d\r\n" % len(body)) + body)
        first = b""
        while not first.endswith(b"}"):  # a JSON answer, read whole
            chunk = c.recv(65536)
            assert chunk, "closed after a sound request"
            first += chunk
        ((status, hdrs, _),) = responses(first)
        assert status == 200 and hdrs.get("connection", "").lower() != "close"
        c.sendall(post_head(srv, b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n")
                  + b"0\r\n\r\n" + SMUGGLED)
        rest = b""
        while chunk:
            chunk = c.recv(65536)
            rest += chunk
    ((status, hdrs, _),) = responses(rest)
    assert status == 400 and hdrs["connection"].lower() == "close"


# libmicrohttpd refuses a malformed lone Content-Length itself, before telehook sees the request,
# and 0.9.75-0.9.77 write that answer's status line and header block twice (fixed in 1.0.0:
# its parse error path no longer falls through to the reply). telehook cannot reach that answer;
# what matters holds: an error status, the connection closed, nothing after it served.
MHD_LENGTH_CASES = {
    "negative": (b"Content-Length: -1\r\n", 400),
    "plus sign": (b"Content-Length: +2\r\n", 400),
    "space inside": (b"Content-Length: 2 \r\n", 400),
    "a list": (b"Content-Length: 2, 2\r\n", 400),
    "hex": (b"Content-Length: 0x2\r\n", 400),
    "empty": (b"Content-Length:\r\n", 400),
    "past 2^64": (b"Content-Length: 99999999999999999999999\r\n", 413),
}


@pytest.mark.parametrize("name", MHD_LENGTH_CASES)
def test_malformed_content_length_refused_and_closed(srv, name):
    extra, status = MHD_LENGTH_CASES[name]
    raw = exchange(srv, post_head(srv, extra) + b"{}" + SMUGGLED)
    assert raw.startswith(b"HTTP/1.1 %d " % status), raw[:100]
    assert b'"status":"ok"' not in raw  # the request behind it was not served


@pytest.mark.xfail(strict=True, reason="libmicrohttpd 0.9.75-0.9.77 write their own error "
                   "answer's header block twice; fixed in libmicrohttpd 1.0.0")
def test_malformed_content_length_answer_is_clean(srv):
    raw = exchange(srv, post_head(srv, b"Content-Length: -1\r\n") + b"{}")
    assert len(responses(raw)) == 1
