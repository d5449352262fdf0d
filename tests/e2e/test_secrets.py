"""Secrets hygiene at the edges: secret files (mode, kind, content), the header secret's minimum
length, and `token keygen` writing its private key over what is already there."""
import json
import os
import stat

from conftest import okta_request


def mode_of(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_secret_file_open_to_others_is_refused(make_server):
    s = make_server(start=False)
    path = s.tmp / "secret"
    for mode in (0o644, 0o604, 0o602):
        os.chmod(path, mode)
        assert s.start(expect_fail=True) == 2
        log = s.log_text()
        assert str(path) in log and f"mode {mode:04o}" in log and "chmod 600" in log, log
        assert s.secret not in log
        r = s.cli("config", "check", check=False)
        assert r.returncode == 2 and str(path) in r.stderr and "chmod 600" in r.stderr
    os.chmod(path, 0o600)
    s.start()
    status, _, body = s.post(okta_request())
    assert status == 200 and body["commands"][0]["value"][0]["status"] == "SUCCESSFUL"
    assert s.stop() == 0


def test_secret_file_open_to_its_group_warns(make_server):
    s = make_server(start=False)
    path = s.tmp / "secret"
    os.chmod(path, 0o640)  # root:telehook 0640, as a systemd unit with a group often has it
    r = s.cli("config", "check")
    assert "warning:" in r.stderr and str(path) in r.stderr and "0640" in r.stderr, r.stderr
    assert s.secret not in r.stdout + r.stderr
    s.start()
    warns = [line for line in s.logs() if line["event"] == "config_warning"]
    assert len(warns) == 1 and warns[0]["level"] == "warn", warns
    assert str(path) in warns[0]["msg"] and "group" in warns[0]["msg"]
    assert s.post(okta_request())[0] == 200
    assert s.secret not in s.log_text()
    assert s.stop() == 0
    # 0600: no warning
    os.chmod(path, 0o600)
    assert "warning" not in s.cli("config", "check").stderr


def test_secret_file_through_a_symlink(make_server):
    """Kubernetes mounts secrets as symlinks (..data/secret): the target's mode is what counts."""
    s = make_server(start=False)
    real = s.tmp / "real-secret"
    os.rename(s.tmp / "secret", real)
    os.symlink(real, s.tmp / "secret")
    s.start()
    assert s.post(okta_request())[0] == 200
    assert s.stop() == 0
    os.chmod(real, 0o644)
    assert s.start(expect_fail=True) == 2 and "mode 0644" in s.log_text()


def test_secret_file_not_a_regular_file(make_server):
    s = make_server(start=False)
    os.unlink(s.tmp / "secret")
    os.mkfifo(s.tmp / "secret", 0o600)  # nobody writes it: the start must not wait on it
    assert s.start(expect_fail=True) == 2 and "not a regular file" in s.log_text()


def test_secret_file_with_two_newlines_is_refused(make_server):
    """One trailing newline is the file's; a second would make a secret nobody sends."""
    s = make_server(start=False)
    path = s.tmp / "secret"
    for content, ok in ((s.secret + "\n\n", False), (s.secret + "\r\n\r\n", False),
                        (s.secret + "\n \n", False), ("\n", False), (s.secret + "\r\n", True)):
        path.write_text(content, newline="")
        if ok:
            s.start()
            assert s.post(okta_request())[0] == 200
            assert s.stop() == 0
        else:
            assert s.start(expect_fail=True) == 2, repr(content)
            assert str(path) in s.log_text() and s.secret not in s.log_text()


def test_short_header_secret_is_refused(make_server):
    for short in ("x", "Basic YTpi", "0123456789abcde"):
        s = make_server(secret=short, start=False)
        assert s.start(expect_fail=True) == 2
        assert "at least 16 bytes" in s.log_text() or "shorter than 16 bytes" in s.log_text()
        r = s.cli("config", "check", check=False)
        assert r.returncode == 2 and "shorter than 16 bytes" in r.stderr
    s = make_server(secret="0123456789abcdef")  # 16: the minimum
    assert s.post(okta_request())[0] == 200
    assert s.stop() == 0


def keygen(s, d):
    return s.cli("token", "keygen", "--dir", str(d), check=False)


def test_keygen_over_a_world_readable_key_makes_it_0600(make_server, tmp_path):
    s = make_server(start=False)
    d = tmp_path / "keys"
    d.mkdir()
    priv = d / "jwt-private.jwk"
    priv.write_text("old key\n")
    os.chmod(priv, 0o644)
    r = keygen(s, d)
    assert r.returncode == 0, r.stderr
    assert mode_of(priv) == 0o600
    key = json.loads(priv.read_text())
    assert key["kty"] == "RSA" and "d" in key  # the new private key, whole
    # and again over a 0666 one, and over a 0600 one (unchanged)
    os.chmod(priv, 0o666)
    assert keygen(s, d).returncode == 0 and mode_of(priv) == 0o600
    assert keygen(s, d).returncode == 0 and mode_of(priv) == 0o600
    assert json.loads((d / "jwks.json").read_text())["keys"][0]["kid"]


def test_keygen_refuses_a_symlink_or_a_hard_link(make_server, tmp_path):
    s = make_server(start=False)
    d = tmp_path / "keys"
    d.mkdir()
    elsewhere = tmp_path / "elsewhere.txt"
    elsewhere.write_text("not yours\n")
    os.chmod(elsewhere, 0o644)
    os.symlink(elsewhere, d / "jwt-private.jwk")
    r = keygen(s, d)
    assert r.returncode != 0 and "symbolic link" in r.stderr, r.stderr
    assert elsewhere.read_text() == "not yours\n" and mode_of(elsewhere) == 0o644
    os.unlink(d / "jwt-private.jwk")
    os.link(elsewhere, d / "jwt-private.jwk")
    r = keygen(s, d)
    assert r.returncode != 0 and "single link" in r.stderr, r.stderr
    assert elsewhere.read_text() == "not yours\n" and mode_of(elsewhere) == 0o644
