"""Delivery receipts per second (issue 23): N signed Twilio status callbacks and N signed SNS
notifications (RSA-2048, SignatureVersion 1) POSTed over 4 keep-alive connections to a telehook on
SQLite, then the time until the writer has applied the SNS ones to their records (inserted
beforehand). The client (python) is likely the bound: these are floors.

usage: TELEHOOK_BIN=build/telehook /usr/bin/python3 bench/receipts.py [N]   (default 2000)
Every process it starts (telehook, the fake SNS thread) is stopped at the end."""
import http.client
import json
import pathlib
import sqlite3
import sys
import tempfile
import threading
import time
import urllib.parse

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests" / "e2e"))
from conftest import Server, okta_request
from fake_sns import FakeSNS, TwilioStatus, eum_record

N = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
URL = "https://telehook.example.com/v1/twilio/status"
TOPIC = "arn:aws:sns:us-east-1:123456789012:t"
tmp = pathlib.Path(tempfile.mkdtemp())
sns = FakeSNS(tmp).start()
s = Server(tmp, f"""
    twilio.auth_token = {"a" * 32}
    receipts.twilio_status_url = {URL}
    tls.ca_file = {sns.ca_file}
    receipts.sns_topic_arns = {TOPIC}
    receipts.sns_cert_hosts = {sns.host}
    receipts.max_queue = 100000""").start()
# records: outbox provider deliveries with known transaction ids
for _ in range(50):
    s.post(okta_request())
s.wait_rows("SELECT count(*) FROM deliveries", 50)
txs = [r[0] for r in s.db_rows("SELECT transaction_id FROM deliveries")]
cb = TwilioStatus(s.port, URL, "a" * 32)

def metric(name, **labels):
    _, _, text = s.request("GET", "/metrics")
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.decode().splitlines():
        if line.startswith(f"{name}{{{want}}} "):
            return float(line.split()[-1])
    return 0.0

def run(bodies, path, ctype, hdrs_of):
    statuses = []
    def worker(part):
        c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
        for b, h in part:
            c.request("POST", path, body=b, headers=dict(h, **{"Content-Type": ctype}))
            r = c.getresponse(); r.read(); statuses.append(r.status)
        c.close()
    parts = [list(zip(bodies, hdrs_of))[i::4] for i in range(4)]
    t0 = time.perf_counter()
    ts = [threading.Thread(target=worker, args=(p,)) for p in parts]
    [t.start() for t in ts]; [t.join() for t in ts]
    return time.perf_counter() - t0, statuses

# Twilio: the provider of the outbox records is "outbox": receipts name "twilio", so they end
# unmatched; the front's cost is what is measured here.
params = [cb.message(txs[i % 50], "sent") for i in range(N)]
bodies = [urllib.parse.urlencode(p) for p in params]
hdrs = [{"X-Twilio-Signature": cb.signature(p)} for p in params]
took, st = run(bodies, "/v1/twilio/status", "application/x-www-form-urlencoded", hdrs)
print(f"twilio: {N} callbacks in {took:.2f}s = {N / took:.0f}/s, statuses {sorted(set(st))}")
# SNS: records that exist (provider aws, ids m-0..), the certificate primed, then N notifications
con = sqlite3.connect(s.db, timeout=10)
now = int(time.time() * 1000)
con.executemany("INSERT INTO deliveries (request_id, event_id, created_ms, request_type, phone_masked, "
                "country, channel, language, source, provider, outcome, transaction_id, error, latency_us) "
                "VALUES (?, '', ?, '', '', 'US', 'sms', 'en', '', 'aws', 'SUCCESSFUL', ?, '', 0)",
                [(f"b-{i}", now, f"m-{i}") for i in range(N)])
con.commit(); con.close()
sns.deliver(s.port, sns.notification(TOPIC, eum_record("warm")))
msgs = [json.dumps(sns.notification(TOPIC, eum_record(f"m-{i}"))) for i in range(N)]
took, st = run(msgs, "/v1/aws/sns", "text/plain", [{}] * N)
print(f"sns: {N} notifications (RSA-2048 SHA1 verify each) in {took:.2f}s = {N / took:.0f}/s, statuses {sorted(set(st))}")
t0 = time.perf_counter()
while metric("telehook_receipts_store_total", result="applied") < N and time.perf_counter() - t0 < 60:
    time.sleep(0.05)
print(f"store: {metric('telehook_receipts_store_total', result='applied'):.0f} applied, all within {time.perf_counter() - t0 + took:.2f}s of the first send")
queued = metric("telehook_receipts_total", provider="aws", result="queued") + metric("telehook_receipts_total", provider="twilio", result="queued")
print("queued total", queued)
s.stop(); sns.stop()
