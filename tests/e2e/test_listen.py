"""One address, one server: a second telehook on an address already served refuses to start
(SO_REUSEPORT would otherwise let the kernel split Okta's requests between the two), while a
restart on the same address right after a stop (connections in TIME_WAIT) starts."""
import socket

from conftest import free_port


def test_second_server_on_the_same_address_refuses(make_server):
    port = free_port()
    first = make_server(f"server.listen = 127.0.0.1:{port}")
    assert first.port == port
    second = make_server(f"server.listen = 127.0.0.1:{port}", start=False)
    assert second.start(expect_fail=True) != 0
    assert "already served by another process" in second.log_text()
    # the first one still answers
    for _ in range(20):
        assert first.request("GET", "/healthz")[0] == 200
    assert first.stop() == 0


def test_restart_on_the_same_address_after_traffic(make_server):
    port = free_port()
    first = make_server(f"server.listen = 127.0.0.1:{port}\nserver.threads = 2")
    for _ in range(10):  # connections the server closes: TIME_WAIT on its side
        assert first.request("GET", "/healthz", headers={"Connection": "close"})[0] == 200
    assert first.stop() == 0
    again = make_server(f"server.listen = 127.0.0.1:{port}\nserver.threads = 2")
    assert again.request("GET", "/healthz")[0] == 200
    assert again.stop() == 0


def test_address_held_by_another_program(make_server):
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen(1)
        port = other.getsockname()[1]
        s = make_server(f"server.listen = 127.0.0.1:{port}", start=False)
        assert s.start(expect_fail=True) != 0
        assert "already served" in s.log_text()
