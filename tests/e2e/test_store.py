"""The SQLite store shared by a live server, its SIGHUP reloads and CLI commands run beside it.

POSIX record locks belong to a process and an inode: closing any descriptor of the database
file drops every lock the process holds on it, its live connections' included. A server that
lost its lock lets the next CLI command believe it is the last connection: that command
checkpoints and deletes the WAL the server is still writing to (what the server writes next is
lost) or two writers check-point over each other (a corrupt file)."""
import concurrent.futures
import itertools
import json
import os
import signal
import sqlite3
import time

import pytest

from conftest import SLOW, okta_request
from fakes import FakeWebhook

KEY = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="


@pytest.fixture
def webhook():
    with FakeWebhook() as f:
        yield f
        assert not f.errors, f.errors


def reloads(s):
    """The reload log lines written so far (a line still being written is left for later)."""
    lines = s.log_text().split("\n")[:-1]
    return [json.loads(l) for l in lines if '"event":"reload"' in l]


def sighup(s):
    """SIGHUP, then wait until both reloads are done, whatever their outcome (the routes come
    last): the tests look at what the store holds afterwards."""
    seen = sum("routes" in l["msg"] for l in reloads(s))
    s.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10 * SLOW
    while sum("routes" in l["msg"] for l in reloads(s)) == seen:
        assert time.monotonic() < deadline, "no reload logged"
        time.sleep(0.01)


def deleted_store_files(s):
    """The store's files the server still holds though they are gone from the directory."""
    fds = f"/proc/{s.proc.pid}/fd"
    out = []
    for fd in os.listdir(fds):
        try:
            target = os.readlink(os.path.join(fds, fd))
        except OSError:
            continue
        if target.startswith(s.db) and target.endswith("(deleted)"):
            out.append(target)
    return out


def test_sighup_and_a_cli_command_lose_nothing(make_server, webhook):
    """The review's reproduction: SIGHUP, any CLI command, a request that ends in the DLQ,
    kill -9: the answered request keeps its entry."""
    s = make_server(f"""
        provider.name = webhook
        webhook.url = {webhook.url}/send
        webhook.secret = {webhook.secret}
        dlq.key = {KEY}""")
    webhook.default = "500"
    sighup(s)
    s.cli("routes", "list")
    status, headers, body = s.post(okta_request())
    assert status == 200 and "commands" not in body
    rid = headers["x-request-id"]
    orphans = deleted_store_files(s)  # what lost it: a WAL another process deleted
    os.kill(s.proc.pid, signal.SIGKILL)
    s.proc.wait()
    (line,) = [l for l in s.logs() if l.get("event") == "request" and l.get("req") == rid]
    assert line["dlq"] in s.cli("dlq", "list").stdout
    assert s.db_rows("SELECT count(*) FROM dlq WHERE request_id = ?", (rid,)) == [(1,)]
    assert orphans == []
    assert all("not reloaded" not in l["msg"] for l in reloads(s))


def test_cli_writes_beside_a_loaded_server_keep_the_file_sound(make_server):
    """Bounded load while the CLI writes templates and the server reloads them: the file passes
    integrity_check and holds one delivery record per answered request."""
    s = make_server()
    answered = []
    stop = False
    codes = itertools.count(100000)  # one code each: no request is taken for a duplicate

    def client():
        conn = s.connect()
        try:
            while not stop:
                status, headers, _ = s.post(okta_request(otp=str(next(codes))), conn=conn)
                assert status == 200
                answered.append(headers["x-request-id"])
        finally:
            conn.close()

    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        clients = [pool.submit(client) for _ in range(4)]
        try:
            for i in range(30):
                s.cli("templates", "set", "en", "sms", f"Code {{{{otp}}}} ({i})")
                sighup(s)
        finally:
            stop = True
        for c in clients:
            c.result()
    assert len(answered) > 30
    assert s.stop() == 0
    con = sqlite3.connect(s.db, timeout=10)
    try:
        assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        stored = {r[0] for r in con.execute("SELECT request_id FROM deliveries")}
    finally:
        con.close()
    assert stored == set(answered)
    assert all("not reloaded" not in l["msg"] for l in reloads(s))
