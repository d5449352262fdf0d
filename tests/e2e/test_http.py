"""The HTTP front: authentication, limits, methods, keep-alive and concurrency."""
import json
import socket
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import HOOK, assert_okta_error, okta_request


def no_records(server):
    assert server.db_rows("SELECT count(*) FROM deliveries")[0][0] == 0
    assert server.db_rows("SELECT count(*) FROM outbox")[0][0] == 0


@pytest.mark.parametrize("headers", [{}, {"x-telephony-key": "wrong"}, {"Authorization": "x"}])
def test_missing_or_wrong_secret_is_401_and_nothing_recorded(server, headers):
    status, hdrs, body = server.post(okta_request(), auth=False, headers=headers)
    assert status == 401
    assert hdrs["content-type"] == "application/json"
    assert_okta_error(body, summary="Unauthorized.", causes=False)
    no_records(server)


def test_secret_is_compared_verbatim(server):
    # (leading and trailing spaces are not part of an HTTP header value: the parser drops them)
    for bad in (server.secret.upper(), server.secret[:-1], server.secret + "x", "Basic " + server.secret):
        status, _, _ = server.post(okta_request(), auth=False, headers={"X-Telephony-Key": bad})
        assert status == 401
    status, _, _ = server.post(okta_request(), auth=False,
                               headers={"X-TELEPHONY-KEY": server.secret})  # name: any case
    assert status == 200


def test_basic_style_secret(make_server):
    s = make_server("auth.header_name = Authorization", secret="Basic dXNlcjpzdXBlcnNlY3JldA==")
    status, _, body = s.post(okta_request(), auth=False,
                             headers={"Authorization": "Basic dXNlcjpzdXBlcnNlY3JldA=="})
    assert status == 200 and body["commands"][0]["value"][0]["status"] == "SUCCESSFUL"
    status, _, _ = s.post(okta_request(), auth=False,
                          headers={"Authorization": "dXNlcjpzdXBlcnNlY3JldA=="})
    assert status == 401
    assert s.stop() == 0


def test_one_mib_body_refused(server):
    # refused from the headers alone, before a byte of the body is read
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"%s: %s\r\nContent-Length: %d\r\n\r\n"
                     % (HOOK.encode(), server.header.encode(), server.secret.encode(), 1 << 20))
        head = sock.recv(4096)
        assert head.startswith(b"HTTP/1.1 413"), head
        assert b'"errorSummary"' in head
    # the same without Content-Length (chunked): read up to the cap, then refused
    conn = server.connect()
    conn.putrequest("POST", HOOK)
    conn.putheader("Content-Type", "application/json")
    conn.putheader(server.header, server.secret)
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    chunk = b"x" * 65536
    for _ in range(16):
        conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    conn.send(b"0\r\n\r\n")
    resp = conn.getresponse()
    assert resp.status == 413
    assert json.loads(resp.read())["error"]["errorSummary"]
    conn.close()
    no_records(server)
    assert server.request("GET", "/healthz")[0] == 200


def test_body_cap_is_configurable(make_server):
    s = make_server("server.max_body = 1024")
    req = okta_request()
    req["data"]["userProfile"]["firstName"] = "y" * 2000
    assert s.post(req)[0] == 413
    assert s.post(okta_request())[0] == 200
    assert s.stop() == 0


def test_wrong_content_type_is_415(server):
    status, hdrs, raw = server.request("POST", HOOK, json.dumps(okta_request()),
                                       {"Content-Type": "text/plain", server.header: server.secret})
    assert status == 415 and json.loads(raw)["error"]["errorSummary"]
    # parameters and case are fine
    status, _, _ = server.post(okta_request(),
                               headers={"Content-Type": "Application/JSON; charset=utf-8"})
    assert status == 200


def test_methods_and_paths(server):
    status, hdrs, raw = server.request("GET", HOOK, headers={server.header: server.secret})
    assert status == 405 and hdrs["allow"] == "POST" and json.loads(raw)["error"]
    status, _, raw = server.request("GET", "/nope")
    assert status == 404 and json.loads(raw)["error"]
    assert server.request("GET", "/healthz")[0] == 200
    status, _, raw = server.request("GET", "/readyz")
    assert status == 200 and json.loads(raw)["status"] == "ready"
    assert server.request("POST", "/healthz", "x")[0] == 405


def test_oversized_headers_refused(server):
    status, _, _ = server.request("GET", "/healthz", headers={"X-Big": "a" * 40000})
    assert status in (413, 431)
    assert server.request("GET", "/healthz")[0] == 200


def test_garbage_on_the_wire(make_server):
    s = make_server("server.connection_timeout = 1")
    # closed at once, or at the latest when the idle timeout (1 s here) runs out: never held
    for junk in (b"GARBAGE\r\n\r\n", b"\x00\x01GARBAGE\r\n\r\n", b"GET /healthz HTTP/1.1\r\n"):
        with socket.create_connection(("127.0.0.1", s.port), timeout=10) as sock:
            sock.sendall(junk)
            data = sock.recv(4096)
            assert data == b"" or data.startswith(b"HTTP/1.1 4")
    assert s.request("GET", "/healthz")[0] == 200
    assert s.stop() == 0


def test_keep_alive(server):
    conn = server.connect()
    txs = set()
    for _ in range(5):
        status, _, body = server.post(okta_request(), conn=conn)
        assert status == 200
        txs.add(body["commands"][0]["value"][0]["transactionId"])
    conn.close()
    assert len(txs) == 5


def test_concurrent_requests(server):
    def one(i):
        return server.post(okta_request(otp=str(100000 + i)))

    with ThreadPoolExecutor(max_workers=32) as pool:
        results = list(pool.map(one, range(200)))
    txs = set()
    for status, _, body in results:
        assert status == 200
        v = body["commands"][0]["value"][0]
        assert v["status"] == "SUCCESSFUL"
        txs.add(v["transactionId"])
    assert len(txs) == 200
    assert server.db_rows("SELECT count(*) FROM outbox")[0][0] == 200
    assert server.wait_rows("SELECT count(*) FROM deliveries", 200) == 200


def test_metrics(server):
    server.post(okta_request())
    server.post(okta_request(phoneNumber="9876543210"))
    status, headers, body = server.request("GET", "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    text = body.decode()
    assert 'telehook_requests_total{outcome="SUCCESSFUL"} 1' in text
    assert 'telehook_requests_total{outcome="REJECTED"} 1' in text
    assert 'telehook_answer_seconds_count 2' in text
    assert 'telehook_provider_circuit_open{provider="outbox"} 0' in text
    assert 'telehook_blocked_total{reason="phone_rate"} 0' in text
    for line in text.splitlines():  # every sample line is "name{labels} number"
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            float(value)
            assert name.startswith(("telehook_", "process_"))
    assert "+1201" not in text  # no number, no code, nothing personal
    assert server.request("POST", "/metrics", b"{}",
                          {"Content-Type": "application/json"})[0] == 405
