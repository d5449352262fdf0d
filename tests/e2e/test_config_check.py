"""`telehook config check` (and -t) fails exactly when `serve` would, for the same reason."""
import pytest

CASES = [
    ("provider.name = aws", "provider aws: no region"),
    ("provider.name = twilio", "[twilio] account_sid"),
    ("provider.name = webhook", "[webhook] url"),
    ("store.url = mysql://db.example/telehook", "unsupported store URL scheme 'mysql'"),
    ("auth.header_secret_file = /nonexistent/secret", "cannot read '/nonexistent/secret'"),
    ("guard.url = postgresql://127.0.0.1:1/telehook", "[guard] secret must be set"),
]


def test_check_passes_where_serve_starts(make_server):
    s = make_server(start=False)
    r = s.cli("config", "check", check=False)
    assert r.returncode == 0, r.stderr
    assert "configuration OK" in r.stderr
    assert "[server]" in r.stdout and "********" in r.stdout  # effective values, secret masked
    assert s.secret not in r.stdout + r.stderr
    t = s.cli("-t", check=False)
    assert t.returncode == 0 and t.stdout == r.stdout
    s.start()
    assert s.stop() == 0


@pytest.mark.parametrize("setting,reason", CASES)
def test_check_fails_where_serve_fails(make_server, setting, reason):
    s = make_server(setting, start=False)
    r = s.cli("config", "check", check=False)
    assert r.returncode == 2, f"config check passed a configuration serve refuses: {r.stderr}"
    assert reason in r.stderr
    assert "configuration OK" not in r.stderr
    assert s.cli("-t", check=False).returncode == 2
    assert s.start(expect_fail=True) != 0
    assert reason in s.log_text()
