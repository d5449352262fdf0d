"""Counts telehook's heap allocations per Okta request (bench/allocs.sh runs this).

Starts the real binary (the e2e harness: header auth, dedupe off, limits off) twice under
bench/allocs_shim.so, with FEW and then MANY requests over one keep-alive connection; the
difference of the two totals divided by MANY - FEW is what one request costs, start-up and
shutdown cancelling out. ALLOCS_PROVIDER: outbox (default: the message is a row the store writer
keeps), aws, twilio or webhook (the fakes of tests/e2e/fakes.py, over HTTP)."""
import contextlib
import json
import os
import pathlib
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "../tests/e2e"))
from conftest import Server, okta_request  # noqa: E402
from fakes import FakeEUM, FakeTwilio, FakeWebhook  # noqa: E402

SHIM = sys.argv[1]
PROVIDER = os.environ.get("ALLOCS_PROVIDER", "outbox")
FEW, MANY = 100, int(os.environ.get("ALLOCS_N", "1100"))


def run(n, fake):
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "counts")
        env = {"LD_PRELOAD": SHIM, "ALLOCS_OUT": out}
        if os.environ.get("ALLOCS_SITES"):  # where telehook's own allocations come from
            env["ALLOCS_SITES"] = f"{os.environ['ALLOCS_SITES']}.{PROVIDER}.{n}"
        config = "guard.dedupe = false"
        if PROVIDER == "aws":
            akid, secret, _ = fake.credential
            env.update({"AWS_ACCESS_KEY_ID": akid, "AWS_SECRET_ACCESS_KEY": secret})
            config += (f"\nprovider.name = aws\naws.region = {fake.region}\n"
                       f"aws.endpoint = {fake.url}\naws.origination_identity = +12065550100")
        elif PROVIDER == "twilio":
            config += (f"\nprovider.name = twilio\ntwilio.account_sid = {fake.account_sid}\n"
                       f"twilio.auth_token = {fake.auth_token}\ntwilio.from = +12065550111\n"
                       f"twilio.base_url = {fake.url}")
        elif PROVIDER == "webhook":
            config += (f"\nprovider.name = webhook\nwebhook.url = {fake.url}/send\n"
                       f"webhook.secret = {fake.secret}")
        s = Server(pathlib.Path(d), config=config, env=env)
        s.start()
        conn = s.connect()
        for _ in range(n):
            status, _, body = s.post(okta_request(), conn=conn)
            assert status == 200 and "SUCCESSFUL" in json.dumps(body), body
        conn.close()
        assert s.stop() == 0
        own, third = map(int, open(out).read().split())
        return own, third


FAKES = {"aws": lambda: FakeEUM(region="us-east-1"), "twilio": FakeTwilio,
         "webhook": FakeWebhook}
with (FAKES[PROVIDER]() if PROVIDER in FAKES else contextlib.nullcontext()) as fake:
    a, b = run(FEW, fake), run(MANY, fake)
n = MANY - FEW
print(f"telehook allocations per request: {(b[0] - a[0]) / n:.2f} "
      f"(third-party: {(b[1] - a[1]) / n:.2f}) [provider {PROVIDER}]")
