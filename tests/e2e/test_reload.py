"""SIGHUP re-reads the configuration: what can change under running requests is applied
(log.level), every other changed key is named as waiting for a restart (never its value), and a
file that no longer loads changes nothing."""
import signal
import time

from conftest import SLOW, okta_request


def reload_lines(s, n):
    deadline = time.monotonic() + 10 * SLOW
    while time.monotonic() < deadline:
        lines = [l for l in s.logs() if l.get("event") == "reload" and "applied" in l
                 or l.get("event") == "reload" and "not re-read" in l.get("msg", "")]
        if len(lines) >= n:
            return lines
        time.sleep(0.05)
    raise AssertionError("no reload line: " + s.log_text())


def request_lines(s):
    return [l for l in s.logs() if l.get("event") == "request"]


def test_sighup_applies_log_level_and_names_the_rest(make_server):
    s = make_server()
    assert s.post(okta_request())[0] == 200
    assert len(request_lines(s)) == 1
    new_secret = "another-secret-of-enough-length"
    with open(s.conf, "a") as f:
        f.write(f"[log]\nlevel = warn\n[server]\ndeadline_ms = 2000\n[auth]\n")
    text = open(s.conf).read().replace(f"header_secret_file = {s.tmp / 'secret'}",
                                       f"header_secret = {new_secret}")
    open(s.conf, "w").write(text)
    s.proc.send_signal(signal.SIGHUP)
    line = reload_lines(s, 1)[-1]
    assert line["applied"] == "log.level"
    assert line["restart_needed"] == "server.deadline_ms, auth.header_secret"
    assert line["level"] == "warn"
    assert new_secret not in s.log_text() and s.secret not in s.log_text()
    # applied: info lines are gone; not applied: the running secret still authenticates
    assert s.post(okta_request())[0] == 200
    time.sleep(0.2 * SLOW)
    assert len(request_lines(s)) == 1
    assert s.stop() == 0


def test_sighup_with_a_broken_file_keeps_everything(make_server):
    s = make_server()
    with open(s.conf, "a") as f:
        f.write("[server]\ndeadline_ms = lots\n")
    s.proc.send_signal(signal.SIGHUP)
    line = reload_lines(s, 1)[-1]
    assert line["level"] == "error"
    assert "deadline_ms" in line["msg"] and "running one stays" in line["msg"]
    status, _, body = s.post(okta_request())
    assert status == 200 and body["commands"][0]["value"][0]["status"] == "SUCCESSFUL"
    assert s.stop() == 0


def test_sighup_without_changes_says_so(make_server):
    s = make_server()
    s.proc.send_signal(signal.SIGHUP)
    line = reload_lines(s, 1)[-1]
    assert (line["applied"], line["restart_needed"], line["level"]) == ("none", "none", "info")
    assert s.stop() == 0
