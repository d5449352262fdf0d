"""server.max_connections: once a loop has been at its limit, it accepts again as soon as its
connections are gone, whether they closed, timed out or were slow-header (slowloris) clients.

libmicrohttpd takes a loop's listening socket out of its epoll set while the loop is at its limit
and puts it back only when it is run again; the bug these tests pin was a loop that, having closed
its last connection, was never run again, so every new connection waited in the kernel's listen
queue for ever. The server is paused (SIGSTOP, by pid) while the clients go away, so that it sees
every close (or every timeout) in one pass, as a busy server does: without the pause the kernel
often delivers the closes one by one and the bug hides.
"""
import contextlib
import os
import signal
import socket
import time

import pytest

from conftest import SLOW

LIMIT = 8


def accepted(s):
    """The connections the server holds (accepted, not yet closed), from its socket fds and the
    kernel's TCP table: {client-side port: bytes received that the server has not read yet}."""
    inodes = set()
    for fd in os.listdir(f"/proc/{s.proc.pid}/fd"):
        with contextlib.suppress(OSError):
            link = os.readlink(f"/proc/{s.proc.pid}/fd/{fd}")
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    ports = {}
    with open(f"/proc/{s.proc.pid}/net/tcp") as f:
        next(f)
        for row in f:
            local, remote, queues, inode = (row.split()[i] for i in (1, 2, 4, 9))
            if inode in inodes and int(local.split(":")[1], 16) == s.port:
                if remote != "00000000:0000":  # not a listening socket
                    ports[int(remote.split(":")[1], 16)] = int(queues.split(":")[1], 16)
    return ports


def wait_until(cond, what, timeout=5.0):
    deadline = time.monotonic() + timeout * SLOW
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting until " + what)
        time.sleep(0.01)


def stopped(pid):
    """True once every thread of pid is stopped (SIGSTOP takes effect asynchronously)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] != "T":
                return False
    return True


@contextlib.contextmanager
def paused(s):
    os.kill(s.proc.pid, signal.SIGSTOP)
    try:
        wait_until(lambda: stopped(s.proc.pid), "the server is stopped")
        yield
    finally:
        os.kill(s.proc.pid, signal.SIGCONT)


def fill(s, first=b"G"):
    """Opens more connections than the limit and returns (held, waiting) once the server holds
    exactly its limit: `held` the accepted ones, each of which has then sent `first`; `waiting`
    the rest, silent in the listen queues. With several loops each takes its share of the limit;
    five times the limit reaches every loop's share (SO_REUSEPORT spreads connections by hash).
    The waiting ones stay silent, and the server has read `first` before this returns: when a
    byte and the FIN behind it are both pending, libmicrohttpd reads the byte and sees the FIN
    only at the idle timeout (its epoll is edge-triggered and a short read ends its reading)."""
    socks = [socket.create_connection(("127.0.0.1", s.port), timeout=5 * SLOW)
             for _ in range(LIMIT * 5)]
    wait_until(lambda: len(accepted(s)) == LIMIT, f"the server holds {LIMIT} connections")
    ports = accepted(s)
    held = [c for c in socks if c.getsockname()[1] in ports]
    waiting = [c for c in socks if c.getsockname()[1] not in ports]
    assert len(held) == LIMIT
    for c in held:
        c.sendall(first)
    wait_until(lambda: not any(accepted(s).values()), "the server has read what was sent")
    return held, waiting


def answered(s, timeout):
    """True if a new connection's GET /healthz is answered within `timeout` seconds."""
    with socket.create_connection(("127.0.0.1", s.port), timeout=timeout) as c:
        c.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        try:
            return c.recv(64).startswith(b"HTTP/1.1 200")
        except socket.timeout:
            return False


def all_loops_answer(s):
    # The clients are gone: the server holds no client connection any more...
    wait_until(lambda: not accepted(s), "the server has closed every client connection")
    # ...and new connections, spread over every loop, are answered at once.
    for i in range(12):
        assert answered(s, 2 * SLOW), f"new connection {i} not answered: accept never resumed"


def limited(make_server, threads, timeout):
    return make_server(f"server.threads = {threads}\nserver.max_connections = {LIMIT}\n"
                       f"server.connection_timeout = {timeout}")


@pytest.mark.parametrize("threads", [1, 2])
def test_accepts_again_after_clients_close_at_the_limit(make_server, threads):
    s = limited(make_server, threads, 30)
    held, waiting = fill(s)
    assert not answered(s, 0.3), "the limit is not in effect"
    with paused(s):
        for c in held + waiting:
            c.close()
    all_loops_answer(s)
    assert s.stop() == 0


@pytest.mark.parametrize("threads", [1, 2])
def test_accepts_again_after_connections_time_out_at_the_limit(make_server, threads):
    s = limited(make_server, threads, 1)
    held, waiting = fill(s)
    with paused(s):
        for c in waiting:
            c.close()
        time.sleep(1.3)  # past the idle timeout of every connection held
    all_loops_answer(s)
    for c in held:
        c.close()
    assert s.stop() == 0


@pytest.mark.parametrize("threads", [1, 2])
def test_accepts_again_after_slow_header_clients_at_the_limit(make_server, threads):
    s = limited(make_server, threads, 1)
    held, waiting = fill(s, b"GET /healthz HTTP/1.1\r\n")
    # slowloris: a header line now and then keeps each connection alive past the idle timeout
    for i in range(4):
        time.sleep(0.4)
        for c in held:
            c.sendall(b"X-Slow-%d: x\r\n" % i)
    wait_until(lambda: not any(accepted(s).values()), "the server has read every header line")
    assert len(accepted(s)) == LIMIT, "slow clients were dropped while they were sending"
    with paused(s):
        for c in waiting:
            c.close()
        time.sleep(1.3)  # the clients stall: past every connection's idle timeout
    all_loops_answer(s)
    for c in held:
        c.close()
    assert s.stop() == 0


def test_room_made_under_the_limit_is_used_at_once(make_server):
    # Not a hang but a stall: one connection stays open (30 s idle timeout), the others go at
    # once; new connections must not wait for the one left to time out.
    s = limited(make_server, 1, 30)
    held, waiting = fill(s)
    with paused(s):
        for c in held[1:] + waiting:
            c.close()
    wait_until(lambda: len(accepted(s)) == 1, "the server holds only the connection left")
    assert answered(s, 2 * SLOW), "room was made but the loop did not accept"
    held[0].close()
    assert s.stop() == 0
