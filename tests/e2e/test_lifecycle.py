"""Start-up, configuration errors, development mode and clean shutdown."""
import signal
import subprocess
import threading
import time

from conftest import BIN, SLOW, okta_request


def test_version():
    r = subprocess.run([BIN, "version"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0 and r.stdout.startswith("telehook ")


def test_config_check_masks_the_secret(make_server):
    s = make_server(start=False)
    r = s.cli("config", "check")
    assert "header_secret = ********" in r.stdout
    assert "listen = 127.0.0.1:0" in r.stdout
    assert s.secret not in r.stdout + r.stderr


def test_config_errors_name_the_key(make_server):
    s = make_server("server.listn = 1", start=False)
    r = s.cli("config", "check", check=False)
    assert r.returncode != 0 and "listn" in r.stderr and "unknown key" in r.stderr
    s = make_server(start=False)
    r = s.cli("config", "check", check=False, env={"TELEHOOK_SERVER_DEADLINE_MS": "abc"})
    assert r.returncode != 0 and "TELEHOOK_SERVER_DEADLINE_MS" in r.stderr
    bad = make_server("server.deadline_ms = 5000", start=False)
    assert bad.start(expect_fail=True) != 0


def test_serve_needs_a_secret(make_server):
    s = make_server("auth.header_secret_file = <unset>", start=False)
    assert s.start(expect_fail=True) != 0
    assert "header_secret" in s.log_text()
    # admin commands need no secret
    assert s.cli("outbox", "list").returncode == 0
    s = make_server("auth.header_secret_file = /nonexistent/secret", start=False)
    assert s.start(expect_fail=True) != 0
    assert "cannot read" in s.log_text()


def test_mode_none_only_on_loopback(make_server):
    s = make_server("auth.mode = none\nserver.listen = 0.0.0.0:0\nauth.header_secret_file = <unset>",
                    start=False)
    assert s.start(expect_fail=True) != 0
    assert "loopback" in s.log_text()
    s = make_server("auth.mode = none\nauth.header_secret_file = <unset>", start=False)
    s.start()
    status, _, body = s.post(okta_request(), auth=False)
    assert status == 200 and body["commands"][0]["value"][0]["status"] == "SUCCESSFUL"
    assert "auth_disabled" in s.log_text()
    assert s.stop() == 0


def test_outbox_on_public_address_warns(make_server):
    s = make_server("server.listen = 0.0.0.0:0")
    assert "outbox_exposed" in s.log_text()
    assert s.stop() == 0


def test_sigterm_answers_in_flight_and_flushes_records(make_server):
    s = make_server()
    results = []

    def client(i):
        try:
            results.append(s.post(okta_request(otp=str(200000 + i)))[0])
        except Exception as e:  # a refused connection after shutdown began is fine
            results.append(repr(e))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(64)]
    for t in threads:
        t.start()
    time.sleep(0.05 * SLOW)
    rc = s.stop(signal.SIGTERM)
    for t in threads:
        t.join(timeout=10 * SLOW)
    assert rc == 0
    answered = [r for r in results if r == 200]
    assert all(r == 200 or "Connection" in r for r in results), results
    # every answered request has its record: nothing lost at shutdown
    assert s.db_rows("SELECT count(*) FROM deliveries")[0][0] == len(answered)
    assert s.db_rows("SELECT count(*) FROM outbox")[0][0] == len(answered)
    assert "clean shutdown" in s.log_text()


def test_store_locked_by_another_process(make_server):
    """The store cannot be written (another process holds SQLite's write lock): every request is
    still answered within its deadline, the log says what happened, and once the lock goes the
    server carries on (nothing crashes, nothing hangs)."""
    import sqlite3
    import threading
    import time as _time

    s = make_server("server.deadline_ms = 800")
    assert s.post(okta_request())[0] == 200
    con = sqlite3.connect(s.db, timeout=5, isolation_level=None, check_same_thread=False)
    con.execute("BEGIN EXCLUSIVE")
    released = threading.Event()

    def release():
        _time.sleep(3.5)
        con.execute("COMMIT")
        con.close()
        released.set()

    threading.Thread(target=release, daemon=True).start()
    for _ in range(2):  # both well inside the 3.5 s the lock is held
        t0 = _time.monotonic()
        status, _, body = s.post(okta_request())
        assert status == 200 and "commands" not in body  # the outbox could not record it
        assert _time.monotonic() - t0 < 1.5
    released.wait(10)
    _time.sleep(0.5)
    status, _, body = s.post(okta_request())
    assert status == 200 and "commands" in body
    events = {l.get("event") for l in s.logs()}
    assert events & {"late_provider_answer", "dlq_slow", "record_dropped"}, events
    assert s.stop() == 0
