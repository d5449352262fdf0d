"""systemd's notify protocol (Type=notify): READY=1 once listening, RELOADING=1 ... READY=1 around
a SIGHUP reload, STOPPING=1 on SIGTERM — spoken to a datagram socket as systemd would listen."""
import os
import signal
import socket

from conftest import SLOW


def notify_socket(tmp_path):
    path = str(tmp_path / "notify.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(10 * SLOW)
    return s, path


def messages_until(sock, key):
    """Datagrams (each a dict of KEY=VALUE lines) up to and including one holding key."""
    out = []
    while True:
        msg = dict(l.split("=", 1) for l in sock.recv(4096).decode().splitlines() if "=" in l)
        out.append(msg)
        if key in msg:
            return out


def test_notify_ready_reload_stopping(make_server, tmp_path):
    sock, path = notify_socket(tmp_path)
    try:
        s = make_server(env={"NOTIFY_SOCKET": path})
        ready = messages_until(sock, "READY")[-1]
        assert ready["READY"] == "1"
        assert str(s.port) in ready["STATUS"]
        assert ready["MAINPID"] == str(s.proc.pid)
        assert s.request("GET", "/healthz")[0] == 200

        s.proc.send_signal(signal.SIGHUP)
        seq = messages_until(sock, "READY")
        assert any(m.get("RELOADING") == "1" and "MONOTONIC_USEC" in m for m in seq), seq
        assert seq[-1]["READY"] == "1"

        assert s.stop() == 0
        assert any(m.get("STOPPING") == "1" for m in messages_until(sock, "STOPPING"))
    finally:
        sock.close()



def test_watchdog_fed_while_the_loops_run(make_server, tmp_path):
    """WatchdogSec: with WATCHDOG_USEC set, WATCHDOG=1 comes every half period, while requests
    are served (each tick is sent only when every loop ran the previous tick's probe; a stuck
    loop is covered by test_loop's ping test)."""
    sock, path = notify_socket(tmp_path)
    try:
        s = make_server("server.threads = 2",
                        env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": str(300000 * SLOW)})
        messages_until(sock, "READY")
        for _ in range(4):
            assert "WATCHDOG" in messages_until(sock, "WATCHDOG")[-1]
            assert s.request("GET", "/healthz")[0] == 200
        assert s.stop() == 0
    finally:
        sock.close()


def test_no_watchdog_messages_without_watchdog_usec(make_server, tmp_path):
    sock, path = notify_socket(tmp_path)
    try:
        s = make_server(env={"NOTIFY_SOCKET": path})
        seq = messages_until(sock, "READY")
        sock.settimeout(0.5)
        try:
            extra = sock.recv(4096).decode()
        except socket.timeout:
            extra = ""
        assert "WATCHDOG" not in extra and not any("WATCHDOG" in m for m in seq)
        assert s.stop() == 0
    finally:
        sock.close()
