"""Counts telehook's heap allocations per Okta request (bench/allocs.sh runs this).

Starts the real binary (the e2e harness, outbox provider, header auth, dedupe off) twice under
bench/allocs_shim.so, with FEW and then MANY requests over one keep-alive connection; the
difference of the two totals divided by MANY - FEW is what one request costs, start-up and
shutdown cancelling out."""
import json
import os
import sys
import tempfile
import pathlib

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "../tests/e2e"))
from conftest import Server, okta_request, HOOK  # noqa: E402

SHIM = sys.argv[1]
FEW, MANY = 100, int(os.environ.get("ALLOCS_N", "1100"))


def run(n):
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "counts")
        s = Server(pathlib.Path(d), config="guard.dedupe = false",
                   env={"LD_PRELOAD": SHIM, "ALLOCS_OUT": out})
        s.start()
        conn = s.connect()
        for _ in range(n):
            status, _, body = s.post(okta_request(), conn=conn)
            assert status == 200 and "SUCCESSFUL" in json.dumps(body), body
        conn.close()
        assert s.stop() == 0
        own, third = map(int, open(out).read().split())
        return own, third


a, b = run(FEW), run(MANY)
n = MANY - FEW
print(f"telehook allocations per request: {(b[0] - a[0]) / n:.2f} "
      f"(third-party: {(b[1] - a[1]) / n:.2f})")
