"""GET /metrics as a Prometheus server reads it: the text parsed strictly (format 0.0.4), every
family announced by HELP and TYPE, histograms whole, and the families operators look for there
with values that follow from the requests sent."""
import math
import re
import subprocess
import time

from conftest import BIN, US_NUMBER, okta_request

NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


def parse_value(s):
    if s in ("+Inf", "-Inf", "NaN"):
        return {"+Inf": math.inf, "-Inf": -math.inf, "NaN": math.nan}[s]
    assert re.fullmatch(r"-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?", s), s
    return float(s)


def parse_labels(s, i):
    """Labels from s[i] == '{'; returns (dict, index after '}')."""
    assert s[i] == "{"
    i += 1
    labels = {}
    while s[i] != "}":
        m = LABEL.match(s, i)
        assert m, s
        name = m.group(0)
        i = m.end()
        assert s[i:i + 2] == '="', s
        i += 2
        v = []
        while s[i] != '"':
            if s[i] == "\\":
                assert s[i + 1] in '\\"n', s
                v.append("\n" if s[i + 1] == "n" else s[i + 1])
                i += 2
            else:
                v.append(s[i])
                i += 1
        i += 1
        assert name not in labels, s
        labels[name] = "".join(v)
        if s[i] == ",":
            i += 1
        else:
            assert s[i] == "}", s
    return labels, i + 1


def parse(text):
    """Families {name: {"help", "type", "samples": [(name, labels, value)]}}; fails the test at
    the first line a strict reader of text format 0.0.4 would refuse."""
    assert text.endswith("\n")
    families = {}
    seen = set()
    for line in text[:-1].split("\n"):
        if line.startswith("# HELP "):
            name, _, help_ = line[7:].partition(" ")
            assert NAME.fullmatch(name) and help_ and name not in families, line
            families[name] = {"help": help_, "type": None, "samples": []}
        elif line.startswith("# TYPE "):
            name, _, type_ = line[7:].partition(" ")
            assert name in families and families[name]["type"] is None, line  # HELP first
            assert type_ in ("counter", "gauge", "histogram"), line
            families[name]["type"] = type_
        else:
            assert not line.startswith("#") and line, line
            m = NAME.match(line)
            assert m, line
            name = m.group(0)
            labels, i = parse_labels(line, m.end()) if line[m.end()] == "{" else ({}, m.end())
            assert line[i] == " ", line
            value = parse_value(line[i + 1:])
            fam = name
            if fam not in families:
                for sfx in ("_bucket", "_sum", "_count"):
                    if name.endswith(sfx) and families.get(name[:-len(sfx)], {}).get("type") \
                            == "histogram":
                        fam = name[:-len(sfx)]
            assert fam in families and families[fam]["type"], f"{line}: no HELP and TYPE before"
            key = (name, tuple(sorted(labels.items())))
            assert key not in seen, line
            seen.add(key)
            families[fam]["samples"].append((name, labels, value))
    for name, f in families.items():
        if f["type"] == "histogram":
            check_histogram(name, f["samples"])
    return families


def check_histogram(name, samples):
    series = {}
    for n, labels, v in samples:
        rest = tuple(sorted((k, x) for k, x in labels.items() if k != "le"))
        series.setdefault(rest, []).append((n, labels.get("le"), v))
    for rest, s in series.items():
        buckets = [(parse_value(le), v) for n, le, v in s if n == name + "_bucket"]
        assert buckets and buckets[-1][0] == math.inf, (name, rest)
        assert [b[0] for b in buckets] == sorted(b[0] for b in buckets), (name, rest)
        assert all(a[1] <= b[1] for a, b in zip(buckets, buckets[1:])), (name, rest)
        count = [v for n, _, v in s if n == name + "_count"]
        total = [v for n, _, v in s if n == name + "_sum"]
        assert count == [buckets[-1][1]] and len(total) == 1 and total[0] >= 0, (name, rest)


def value(families, name, **labels):
    """The one sample name{labels} (a histogram's _bucket, _sum, _count too)."""
    base = name if name in families else re.sub(r"_(bucket|sum|count)$", "", name)
    fam = families[base]
    hits = [v for n, l, v in fam["samples"] if n == name and l == labels]
    assert len(hits) == 1, (name, labels, fam["samples"])
    return hits[0]


def scrape(s):
    status, headers, body = s.request("GET", "/metrics")
    assert status == 200
    assert headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return body.decode(), parse(body.decode())


def test_operators_families(make_server):
    s = make_server("server.process_metrics = true\nguard.limit_phone = 1/1h")
    t0 = time.time()
    assert s.post(okta_request())[0] == 200  # sent
    assert s.post(okta_request())[0] == 200  # the same number again: blocked (phone_rate)
    for _ in range(2):
        assert s.post(okta_request(), auth=False)[0] == 401
    assert s.post(okta_request(), auth=False, headers={s.header: "wrong"})[0] == 401
    assert s.post(okta_request(), headers={"Content-Type": "text/plain"})[0] == 415
    assert s.post(b"{", headers={})[0] == 400  # the hook's refusal: not JSON

    text, f = scrape(s)
    assert US_NUMBER[2:] not in text  # no number, nothing personal in a label

    assert value(f, "telehook_requests_total", outcome="SUCCESSFUL") == 1
    assert value(f, "telehook_requests_total", outcome="BLOCKED") == 1
    assert value(f, "telehook_blocked_total", reason="phone_rate") == 1

    assert f["telehook_refusals_total"]["type"] == "counter"
    refusals = {l["reason"]: v for _, l, v in f["telehook_refusals_total"]["samples"]}
    assert refusals == {"framing": 0, "source_rate": 0, "headers": 0, "method": 0,
                        "too_large": 0, "media_type": 1, "auth_missing": 2, "auth_invalid": 1,
                        "malformed": 1, "request_invalid": 0, "phone_invalid": 0}

    assert value(f, "telehook_provider_attempts_total", provider="outbox", result="ok") == 1
    for result in ("retryable", "permanent", "timeout"):
        assert value(f, "telehook_provider_attempts_total", provider="outbox", result=result) == 0
    assert f["telehook_provider_attempt_seconds"]["type"] == "histogram"
    assert value(f, "telehook_provider_attempt_seconds_count", provider="outbox") == 1
    assert 0 < value(f, "telehook_provider_attempt_seconds_sum", provider="outbox") < 3

    assert value(f, "telehook_dlq_entries_total") == 0
    assert value(f, "telehook_guard_entries") >= 1  # the phone number's limit is held
    assert value(f, "telehook_guard_max_entries") == 100000
    # the tables at their default size: 2^17 slots of 16 bytes each (at most 64 bytes a key)
    assert value(f, "telehook_guard_bytes", table="people") == 131072 * 16
    assert value(f, "telehook_guard_bytes", table="dedupe") == 131072 * 16
    assert value(f, "telehook_guard_bytes", table="records") >= 32  # the requests remembered
    version = subprocess.run([BIN, "--version"], capture_output=True, text=True,
                             check=True).stdout.split()[-1]
    assert value(f, "telehook_build_info", version=version) == 1

    assert f["process_cpu_seconds_total"]["type"] == "counter"
    assert value(f, "process_cpu_seconds_total") >= 0
    assert value(f, "process_resident_memory_bytes") > 1 << 20
    assert value(f, "process_virtual_memory_bytes") >= value(f, "process_resident_memory_bytes")
    assert 3 <= value(f, "process_open_fds") <= value(f, "process_max_fds")
    assert t0 - 60 < value(f, "process_start_time_seconds") <= time.time() + 1


def test_defaults_name_telehook_and_process_families(server):
    server.post(okta_request())
    _, f = scrape(server)
    assert all(name.startswith(("telehook_", "process_")) for name in f)
    assert "process_resident_memory_bytes" in f  # on by default, as every client library does
    for name in ("telehook_requests_total", "telehook_answer_seconds", "telehook_refusals_total",
                 "telehook_provider_attempts_total", "telehook_build_info",
                 "telehook_store_queue", "telehook_requests_in_flight"):
        assert name in f and f[name]["help"], name
    assert value(f, "telehook_answer_seconds_count") == 1


def test_process_metrics_off_keeps_every_name_under_telehook(make_server):
    s = make_server("server.process_metrics = false")
    s.post(okta_request())
    _, f = scrape(s)
    assert all(name.startswith("telehook_") for name in f)
    assert "telehook_requests_total" in f
