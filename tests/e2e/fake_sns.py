"""Fakes for delivery receipts, speaking the real formats:

FakeSNS — Amazon SNS's side of an HTTPS subscription. It holds a throw-away RSA signing key and a
certificate for it, serves that certificate over HTTPS on 127.0.0.1 (a throw-away CA signs the
TLS certificate: the test trusts it through [tls] ca_file), signs notifications and subscription
confirmations as SNS does (SignatureVersion 1 = SHA1withRSA, 2 = SHA256withRSA over the canonical
"Name\\nvalue\\n" string), and records each GET of a SubscribeURL. deliver() POSTs a message to
telehook the way SNS does (Content-Type text/plain, x-amz-sns-* headers) and, like SNS's delivery
policy, retries a 5xx a bounded number of times.

TwilioStatus — Twilio's status callbacks: a form POST signed with X-Twilio-Signature
(base64 HMAC-SHA1 of the URL Twilio requested and the sorted parameters, key = auth token).

Everything listens on or talks to 127.0.0.1 only; stop() ends the server thread.
"""
import base64
import datetime
import hashlib
import hmac
import http.client
import http.server
import ipaddress
import json
import ssl
import threading
import time
import urllib.parse
import uuid

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

NOTIFICATION_FIELDS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
CONFIRMATION_FIELDS = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn",
                       "Type")


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem(obj):
    return obj.public_bytes(serialization.Encoding.PEM)


class FakeSNS:
    def __init__(self, d):
        now = datetime.datetime.now(datetime.timezone.utc)
        life = (now - datetime.timedelta(minutes=5), now + datetime.timedelta(hours=1))
        # TLS: a CA and a certificate for 127.0.0.1 it signed
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = (x509.CertificateBuilder().subject_name(_name("fake sns ca"))
              .issuer_name(_name("fake sns ca")).public_key(ca_key.public_key())
              .serial_number(x509.random_serial_number())
              .not_valid_before(life[0]).not_valid_after(life[1])
              .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
              .sign(ca_key, hashes.SHA256()))
        tls_key = ec.generate_private_key(ec.SECP256R1())
        tls = (x509.CertificateBuilder().subject_name(_name("127.0.0.1"))
               .issuer_name(_name("fake sns ca")).public_key(tls_key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(life[0]).not_valid_after(life[1])
               .add_extension(x509.SubjectAlternativeName(
                   [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
               .sign(ca_key, hashes.SHA256()))
        self.ca_file = d / "sns-ca.pem"
        self.ca_file.write_bytes(_pem(ca))
        (d / "sns-tls.pem").write_bytes(_pem(tls))
        (d / "sns-tls.key").write_bytes(tls_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
        # the message signing key and its self-signed certificate (what SigningCertURL serves)
        self.sign_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.sign_cert = (x509.CertificateBuilder().subject_name(_name("sns.amazonaws.com"))
                          .issuer_name(_name("sns.amazonaws.com"))
                          .public_key(self.sign_key.public_key())
                          .serial_number(x509.random_serial_number())
                          .not_valid_before(life[0]).not_valid_after(life[1])
                          .sign(self.sign_key, hashes.SHA256()))
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(d / "sns-tls.pem", d / "sns-tls.key")
        self.cert_gets = 0
        self.subscribe_gets = []  # the Token of each SubscribeURL GET
        self.lock = threading.Lock()
        self.server = None

    # ---- the HTTPS side: the certificate, the SubscribeURL ----
    def start(self):
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                url = urllib.parse.urlparse(self.path)
                if url.path == "/cert.pem":
                    with fake.lock:
                        fake.cert_gets += 1
                    body, status = _pem(fake.sign_cert), 200
                elif url.path == "/confirm":
                    token = urllib.parse.parse_qs(url.query).get("Token", [""])[0]
                    with fake.lock:
                        fake.subscribe_gets.append(token)
                    body, status = b"<ConfirmSubscriptionResponse/>", 200
                else:
                    body, status = b"not found", 404
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.socket = self.ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()
        return self

    def stop(self):
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.thread.join(timeout=2)
            self.server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def host(self):
        return f"127.0.0.1:{self.port}"

    @property
    def cert_url(self):
        return f"https://{self.host}/cert.pem"

    # ---- messages ----
    def sign(self, msg, version="1"):
        """Sets SignatureVersion, SigningCertURL (unless set) and Signature of msg (a dict)."""
        fields = NOTIFICATION_FIELDS if msg["Type"] == "Notification" else CONFIRMATION_FIELDS
        canon = "".join(f"{k}\n{msg[k]}\n" for k in fields if k in msg)
        digest = hashes.SHA1() if version == "1" else hashes.SHA256()
        sig = self.sign_key.sign(canon.encode(), padding.PKCS1v15(), digest)
        msg["SignatureVersion"] = version
        msg.setdefault("SigningCertURL", self.cert_url)
        msg["Signature"] = base64.b64encode(sig).decode()
        return msg

    @staticmethod
    def _now():
        return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"

    def notification(self, topic, record, version="1", subject=None):
        msg = {"Type": "Notification", "MessageId": str(uuid.uuid4()), "TopicArn": topic,
               "Message": json.dumps(record), "Timestamp": self._now(),
               "UnsubscribeURL": f"https://{self.host}/unsubscribe"}
        if subject:
            msg["Subject"] = subject
        return self.sign(msg, version)

    def confirmation(self, topic, kind="SubscriptionConfirmation"):
        token = uuid.uuid4().hex
        msg = {"Type": kind, "MessageId": str(uuid.uuid4()), "Token": token, "TopicArn": topic,
               "Message": f"You have chosen to subscribe to the topic {topic}.",
               "SubscribeURL": f"https://{self.host}/confirm?Action=ConfirmSubscription&Token={token}",
               "Timestamp": self._now()}
        return self.sign(msg)

    @staticmethod
    def deliver(port, msg, tries=20, raw=None):
        """POSTs msg to telehook's /v1/aws/sns as SNS does; a 5xx is retried (up to tries, 100 ms
        apart), as SNS's delivery policy would. Returns (final status, statuses seen)."""
        body = raw if raw is not None else json.dumps(msg)
        seen = []
        for _ in range(tries):
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                c.request("POST", "/v1/aws/sns", body=body, headers={
                    "Content-Type": "text/plain; charset=UTF-8",
                    "x-amz-sns-message-type": msg.get("Type", ""),
                    "x-amz-sns-message-id": msg.get("MessageId", ""),
                    "x-amz-sns-topic-arn": msg.get("TopicArn", "")})
                r = c.getresponse()
                r.read()
                seen.append(r.status)
            finally:
                c.close()
            if r.status < 500:
                break
            time.sleep(0.1)
        return seen[-1], seen


def eum_record(message_id, event_type="TEXT_DELIVERED", country="US", final=True, ts=None):
    """An AWS End User Messaging SMS event record as the configuration set sends it."""
    return {"eventType": event_type, "eventVersion": "1.0",
            "eventTimestamp": ts if ts is not None else int(time.time() * 1000),
            "isFinal": final, "originationPhoneNumber": "+12065550100",
            "destinationPhoneNumber": "+12015550123", "isInternationalSend": False,
            "isoCountryCode": country, "messageId": message_id,
            "messageRequestTimestamp": int(time.time() * 1000), "messageEncoding": "GSM",
            "messageType": "TRANSACTIONAL", "messageStatus": event_type.replace("TEXT_", ""),
            "messageStatusDescription": "status", "totalMessageParts": 1,
            "totalMessagePrice": 0.00581, "totalCarrierFee": 0.00302}


class TwilioStatus:
    """Sends Twilio status callbacks, signed as Twilio signs them, to telehook."""

    def __init__(self, port, url, auth_token):
        self.port, self.url, self.token = port, url, auth_token

    def signature(self, params, url=None):
        data = (url or self.url) + "".join(k + v for k, v in sorted(params.items()))
        mac = hmac.new(self.token.encode(), data.encode(), hashlib.sha1).digest()
        return base64.b64encode(mac).decode()

    def send(self, params, signature=None):
        body = urllib.parse.urlencode(params)
        sig = signature if signature is not None else self.signature(params)
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            c.request("POST", "/v1/twilio/status", body=body, headers={
                "Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
                "X-Twilio-Signature": sig, "I-Twilio-Idempotency-Token": uuid.uuid4().hex})
            r = c.getresponse()
            r.read()
            return r.status
        finally:
            c.close()

    def message(self, sid, status, error_code=None, account_sid="AC" + "0" * 32):
        p = {"MessageSid": sid, "SmsSid": sid, "AccountSid": account_sid, "MessageStatus": status,
             "SmsStatus": status, "From": "+12065550111", "To": "+12015550123",
             "ApiVersion": "2010-04-01"}
        if error_code:
            p["ErrorCode"] = str(error_code)
        return p

    def call(self, sid, status, account_sid="AC" + "0" * 32):
        return {"CallSid": sid, "CallStatus": status, "AccountSid": account_sid,
                "From": "+12065550111", "To": "+12015550123", "Direction": "outbound-api",
                "ApiVersion": "2010-04-01", "CallbackSource": "call-progress-events",
                "SequenceNumber": "0", "Timestamp": "Sat, 05 Dec 2026 03:00:00 +0000"}
