"""log.emf: CloudWatch Embedded Metric Format lines on the stderr log stream, checked the way
CloudWatch Logs reads them (see docs/operations.md, CloudWatch)."""
import json
import time

from conftest import ES_NUMBER, SLOW, US_NUMBER, okta_request


def emf_lines(server):
    return [line for line in server.logs() if "_aws" in line]


def check_emf(line, namespace="Telehook"):
    """What CloudWatch requires of an EMF event; returns the metric names it declares."""
    aws = line["_aws"]
    assert isinstance(aws["Timestamp"], int) and aws["Timestamp"] > 1_600_000_000_000  # ms
    assert abs(aws["Timestamp"] / 1000 - time.time()) < 600
    names = []
    assert aws["CloudWatchMetrics"], "at least one directive"
    for d in aws["CloudWatchMetrics"]:
        assert d["Namespace"] == namespace
        assert 1 <= len(d["Metrics"]) <= 100
        for dims in d["Dimensions"]:
            assert len(dims) <= 9
            for key in dims:
                assert isinstance(line[key], str) and line[key]
        for m in d["Metrics"]:
            assert m["Unit"] in ("Count", "Milliseconds")
            v = line[m["Name"]]
            assert isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0
            names.append(m["Name"])
    assert line["event"] == "metrics"
    return names


def total(lines, name):
    return sum(line.get(name, 0) for line in lines)


def test_emf_lines_count_what_was_sent(make_server):
    s = make_server("log.emf = true\nlog.emf_interval = 1\nguard.countries_deny = ES\n"
                    "log.emf_namespace = Telehook-e2e")
    otps = []
    for _ in range(3):
        body = okta_request(US_NUMBER)
        otps.append(body["data"]["messageProfile"]["otpCode"])
        status, _, ans = s.post(body)
        assert status == 200 and "SUCCESSFUL" in json.dumps(ans)
    blocked = okta_request(ES_NUMBER)
    otps.append(blocked["data"]["messageProfile"]["otpCode"])
    status, _, ans = s.post(blocked)
    assert status == 200 and "FAILED" in json.dumps(ans)
    status, _, _ = s.request("POST", "/v1/okta/telephony", b"{not json",
                             {"Content-Type": "application/json", s.header: s.secret})
    assert status == 400
    status, _, _ = s.post(okta_request(US_NUMBER), auth=False)
    assert status == 401

    # Deltas: the lines of the intervals add up to what was sent, whichever line took them.
    deadline = time.monotonic() + 10 * SLOW
    while time.monotonic() < deadline:
        lines = emf_lines(s)
        if total(lines, "Requests.SUCCESSFUL") >= 3 and total(lines, "Requests.BLOCKED") >= 1:
            break
        time.sleep(0.1)
    assert s.stop() == 0
    lines = emf_lines(s)
    assert len(lines) >= 2  # at least one interval line and the last one at shutdown
    for line in lines:
        names = check_emf(line, "Telehook-e2e")
        assert line["Service"] == "telehook"
        # bounded names: a fixed word, never a number, a code or an id
        for n in names:
            assert not any(ch.isdigit() for ch in n), n
    assert total(lines, "Requests.SUCCESSFUL") == 3
    assert total(lines, "Requests.BLOCKED") == 1
    assert total(lines, "Blocked.country_not_allowed") == 1
    assert total(lines, "Requests.REJECTED") + total(lines, "Requests.ERROR") == 1
    assert total(lines, "Requests.FAILED") == 0
    assert total(lines, "Duplicates") == 0
    # the answer time is there for the intervals that answered requests, in milliseconds
    timed = [line["AnswerTime"] for line in lines if "AnswerTime" in line]
    assert timed and all(0 <= t < 3000 for t in timed)
    text = s.log_text()
    for line in text.splitlines():
        if "_aws" in line:
            for secret in otps + [US_NUMBER, ES_NUMBER, US_NUMBER[1:], s.secret]:
                assert secret not in line


def test_emf_interval_paces_the_lines(make_server):
    s = make_server("log.emf = true\nlog.emf_interval = 1")
    time.sleep(2.5)
    assert s.stop() == 0
    lines = emf_lines(s)
    # two interval lines (about 1 s and 2 s after the start) and the last one at shutdown
    assert 2 <= len(lines) <= 4, len(lines)
    for line in lines:
        check_emf(line)
        assert line["Requests.SUCCESSFUL"] == 0


def test_emf_is_off_by_default(server):
    status, _, _ = server.post(okta_request(US_NUMBER))
    assert status == 200
    assert server.stop() == 0
    assert emf_lines(server) == []
    assert not [line for line in server.logs() if line.get("event") == "metrics"]


def test_emf_keys_are_checked(make_server):
    s = make_server("log.emf = true\nlog.emf_interval = 0", start=False)
    assert s.start(expect_fail=True) != 0
    assert "emf_interval" in s.log_text()


def test_emf_namespace_is_checked(make_server):
    s = make_server("log.emf = true\nlog.emf_namespace = " + "N" * 256, start=False)
    assert s.start(expect_fail=True) != 0
    assert "emf_namespace" in s.log_text()
    r = s.cli("config", "check", check=False)
    assert r.returncode != 0 and "emf_namespace" in r.stderr
