"""`make install`'s pieces: the installed tree, telehook.conf(5) generated from the configuration
table (every key, every default), and bash completion for every command the usage lists."""
import os
import re
import shutil
import subprocess

from conftest import BIN

ROOT = os.path.join(os.path.dirname(__file__), "../..")
BUILD = os.path.dirname(os.path.abspath(BIN))


def effective_keys():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEHOOK_", "AWS_"))}
    out = subprocess.run([BIN, "-c", "/dev/null", "config", "show"], env=env, capture_output=True,
                         text=True, timeout=30, check=True).stdout
    keys, section = [], None
    for line in out.splitlines():
        m = re.match(r"^\[(\w+)\]$", line)
        if m:
            section = m.group(1)
        elif " =" in line:
            k, _, v = line.partition(" =")
            keys.append((section, k, v.strip()))
    return keys


def test_install_tree(tmp_path):
    r = subprocess.run(["meson", "install", "-C", BUILD, "--no-rebuild", "--quiet",
                        "--destdir", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    files = {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()}
    want = ["sbin/telehook", "share/man/man8/telehook.8", "share/man/man5/telehook.conf.5",
            "share/bash-completion/completions/telehook", "share/doc/telehook/examples/telehook.conf"]
    for w in want:
        assert any(f.endswith(w) for f in files), f"{w} not installed: {sorted(files)}"
    # nothing of the tests or benchmarks
    assert not any(re.search(r"(test_|fuzz_|auth_cost|conf_man)", f) for f in files), files
    sbin = next(p for p in tmp_path.rglob("telehook") if p.parent.name == "sbin")
    assert os.access(sbin, os.X_OK)
    v = subprocess.run([str(sbin), "version"], capture_output=True, text=True, timeout=10)
    assert v.returncode == 0 and v.stdout.startswith("telehook ")


def test_conf_man_page_has_every_key():
    page = open(os.path.join(BUILD, "man", "telehook.conf.5")).read()
    keys = effective_keys()
    assert len(keys) > 30
    sections = re.findall(r"^\.SS \[(\w+)\]$", page, re.M)
    for section, key, default in keys:
        assert section in sections, f"[{section}] missing from telehook.conf(5)"
        env = f"TELEHOOK_{section}_{key}".upper()
        assert f".B {key}\n" in page, f"{section}.{key} missing from telehook.conf(5)"
        assert env in page.replace("\\-", "-"), f"{env} missing"
    if shutil.which("groff"):
        r = subprocess.run(["groff", "-man", "-ww", "-z", os.path.join(BUILD, "man", "telehook.conf.5"),
                            os.path.join(ROOT, "man", "telehook.8")],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0 and not r.stderr.strip(), r.stderr


def test_completion_knows_every_command():
    usage = subprocess.run([BIN, "help"], capture_output=True, text=True, timeout=10).stdout
    commands = set()
    for line in usage.splitlines():
        m = re.match(r"^  ([a-z][a-z-]*)(?: ([a-z][a-z-]*))?", line)
        if m:
            commands.add((m.group(1), m.group(2)))
    assert len(commands) >= 10, usage
    script = open(os.path.join(ROOT, "scripts", "telehook.bash-completion")).read()
    top = re.search(r"compgen -W '([^']*)'", script).group(1).split()
    for cmd, sub in commands:
        assert cmd in top, f"completion lacks the command {cmd}"
        if sub:
            m = re.search(rf"^\s*{cmd}\) subs='([^']*)'", script, re.M)
            assert m and sub in m.group(1).split(), f"completion lacks {cmd} {sub}"
    if shutil.which("bash") and os.path.exists("/usr/share/bash-completion/bash_completion"):
        r = subprocess.run(["bash", "-c", "source /usr/share/bash-completion/bash_completion; "
                            f"source {os.path.join(ROOT, 'scripts', 'telehook.bash-completion')}; "
                            "COMP_WORDS=(telehook routes ''); COMP_CWORD=2; _telehook; "
                            "echo ${COMPREPLY[@]}"], capture_output=True, text=True, timeout=10)
        assert r.stdout.split() == ["list", "set", "delete", "import-aws"], r.stdout + r.stderr
