"""`telehook probe [URL]`: exit 0 when the server answers ready, 1 otherwise with the reason — the
health check a load balancer or a container runtime runs without curl."""
from conftest import free_port

from test_tls import ca, tls_server  # noqa: F401  (the fixture and the HTTPS server helper)
from throwaway_ca import ThrowawayCA


def test_probe_default_url_and_given_url(make_server):
    port = free_port()
    s = make_server(f"server.listen = 127.0.0.1:{port}")
    r = s.cli("probe", check=False)
    assert r.returncode == 0 and f"http://127.0.0.1:{port}/readyz" in r.stdout, r.stderr
    r = s.cli("probe", f"http://127.0.0.1:{port}/readyz", "--timeout", "3", check=False)
    assert r.returncode == 0, r.stderr
    r = s.cli("probe", f"http://127.0.0.1:{port}/nope", check=False)
    assert r.returncode == 1 and "HTTP 404" in r.stderr
    assert s.stop() == 0
    r = s.cli("probe", check=False)
    assert r.returncode == 1 and "127.0.0.1" in r.stderr  # connection refused, said


def test_probe_usage_errors(make_server):
    s = make_server(start=False)  # listen 127.0.0.1:0: no port to probe
    r = s.cli("probe", check=False)
    assert r.returncode == 2 and "give the URL" in r.stderr
    r = s.cli("probe", "http://127.0.0.1:1/readyz", "--timeout", "0", check=False)
    assert r.returncode == 2 and "--timeout" in r.stderr
    r = s.cli("probe", "ftp://127.0.0.1/x", check=False)
    assert r.returncode == 1


def test_probe_https_pins_the_servers_own_key(make_server, ca):
    port = free_port()
    s = tls_server(make_server, ca, config=f"server.listen = 127.0.0.1:{port}")
    # the default URL is https and is checked by the certificate's own key, not by name or CA
    r = s.cli("probe", check=False)
    assert r.returncode == 0 and f"https://127.0.0.1:{port}/readyz" in r.stdout, r.stderr
    # a URL given is verified the usual way: the throw-away CA is not trusted
    r = s.cli("probe", f"https://127.0.0.1:{port}/readyz", check=False)
    assert r.returncode == 1 and "certificate" in r.stderr.lower(), r.stderr
    # another key in server.tls_cert than the one served: the pin refuses the server
    other = ThrowawayCA().issue()
    other.write(s.cert_path, s.tmp / "other.key")
    r = s.cli("probe", check=False)
    assert r.returncode == 1, r.stdout + r.stderr
    assert s.stop() == 0
