"""Wire-accurate fake providers for telehook's end-to-end tests.

Each fake is an HTTP/1.1 server on 127.0.0.1 (kernel-picked port) running in daemon threads of
the test process. It is deliberately *strict*: a request the real provider would reject is
rejected here too, with the provider's own status code and error body, and the reason is recorded
so a failing product test says why. tests/e2e/test_fakes.py proves that strictness, so a lenient
fake cannot make a product test pass vacuously.

What each fake verifies (and why)
---------------------------------
FakeEUM           AWS End User Messaging SMS and Voice v2 (JSON 1.0, `POST /`).
                  * SigV4, recomputed independently with botocore's SigV4Auth from exactly the
                    headers named in SignedHeaders and the request's own X-Amz-Date (botocore is
                    the reference signer; if telehook's C signer disagrees, the request fails as it
                    would against AWS). Checks, in AWS's order: Authorization present
                    (MissingAuthenticationTokenException), well-formed (IncompleteSignature...),
                    known access key and matching session token (UnrecognizedClientException),
                    X-Amz-Date within 5 minutes (InvalidSignatureException "Signature expired"),
                    scope date/region/service, SignedHeaders complete (host, x-amz-date,
                    content-type, x-amz-target, the token when there is one, and every x-amz-*
                    header sent), x-amz-content-sha256 equal to the payload hash when sent, then
                    the signature itself (403). The signed Host must be the one the client sent,
                    port included, and (unless check_host is False) this server's address.
                    All of these are 400 except a signature mismatch (403).
                  * Content-Type / X-Amz-Target (UnknownOperationException), then the body against
                    the sms-voice model taken from botocore (ValidationException with
                    Reason FIELD_VALIDATION_FAILED, or CANNOT_PARSE for a body that is not a JSON
                    object). Unknown members are rejected too: they would be typos.
                  * PutMessageFeedback (MessageId, MessageFeedbackStatus RECEIVED|FAILED), taken
                    only for a message this fake sent with MessageFeedbackEnabled (else 400
                    ResourceNotFoundException, AWS's status for it); `.feedback` maps message id -> status taken.
FakeTwilio        Twilio REST 2010-04-01 Messages.json / Calls.json: Basic auth (401 20003),
                  account SID in the URL (404 20404), form encoding, required fields, E.164, exactly
                  one of From / MessagingServiceSid, TwiML that parses with <Response><Say>...
                  Messages/{Sid}/Feedback.json (Outcome confirmed|unconfirmed) only for a message
                  sent with ProvideFeedback=true (else 404 20404); `.feedback` maps SID -> Outcome.
FakeCredsEndpoint The container credentials endpoint (ECS / EKS Pod Identity; optional
                  Authorization token) and EC2 IMDSv2 (PUT token, then token-guarded GETs) in one
                  server; records every fetch so tests can count refreshes.
FakeSTS           AWS STS, Query protocol: AssumeRole (SigV4 with service "sts", checked as FakeEUM
                  checks, errors under the Query-protocol codes) and AssumeRoleWithWebIdentity
                  (unsigned, the token must be one it knows); parameters as the STS model bounds
                  them; answers and errors in the real XML; records every credential it issues.
FakeKMS           AWS KMS, JSON 1.1 (`TrentService.GenerateDataKey` / `Decrypt`, SigV4 with service
                  "kms"): real envelope semantics (master keys per key id, sealed blobs), and
                  NotFound / AccessDenied / Disabled / InvalidCiphertext answers.
FakeWebhook       A customer gateway checking `X-Telehook-Signature: t=<unix>,v1=<hex HMAC-SHA256(
                  secret, "<t>." + raw body)>` in constant time with a 300 s tolerance.

Common API
----------
fake.start() / fake.stop() (stop returns promptly, releasing "hang"ing handlers and closing every
open connection), context manager, `.url`, `.port`, `.host_header`,
`.requests` (list of dicts, newest last, capped at `.max_requests`), `.script` (list of actions,
consumed FIFO, one per request), `.default` (action when the script is empty, "ok"),
`.count(**filters)`, `.matching(**filters)`, `.last(**filters)`, `.wait_for(n, timeout, **filters)`,
`.clear()`, `.in_flight`, `.errors` (tracebacks of bugs inside the fake itself: should stay
empty), `.clock` (callable returning Unix seconds; replace it to simulate clock skew),
`.max_body` (1 MiB: larger bodies get 413), `.max_requests` (10,000 records kept).
`.tls`: set to a server-side ssl.SSLContext before start() to speak HTTPS (then `.url` starts
with https://); every failed handshake (a client refusing the certificate, say) is appended to
`.tls_errors` as text.

A record has: seq, time, client_port (same value = same kept-alive connection), method, path,
headers (lower-cased names, repeated values joined with ", "), body (raw bytes), parsed (parsed
body or None), action, valid (the request passed every check), reason (why not), status (HTTP
status sent, None if none), error (error type / code sent), response (parsed response body),
sent (the provider accepted the message / served credentials), plus provider-specific keys
documented on each class. A filter value may be a callable predicate:
fake.count(op="SendTextMessage", sig_ok=True), fake.count(status=lambda s: s and s >= 500).

Actions (strings or tuples), common to every fake:
  "ok"               answer normally
  ("delay", s)       sleep s seconds (cut short by stop()), then answer normally
  "hang"             never answer; the connection is closed when stop() is called
  ("hang", s)        wait s seconds, then close the connection without answering
  "close"            close the connection without any response
  "garbage"          200 with a body that is not JSON
  "half"             the normal response's headers, Content-Length larger than the body sent,
                     then close (a valid request counts as accepted: sent=True, response lost)
  ("raw", status, body, headers)  exactly this response (body: bytes, str or JSON-able object)
The request is always verified first; a request that fails verification gets its rejection, not
a provider error action (AWS and Twilio authenticate before anything else), but transport actions
(hang, close, garbage, half, raw) apply to every request. Provider-specific error actions are
listed on each class.
"""
import base64
import functools
import hashlib
import hmac
import http.server
import json
import re
import secrets
import socket
import ssl
import string
import threading
import time
import traceback
import uuid
import xml.etree.ElementTree as ET
from collections import namedtuple
from datetime import datetime, timezone
from email.utils import formatdate
from urllib.parse import parse_qsl

__all__ = ["FakeEUM", "FakeTwilio", "FakeCredsEndpoint", "FakeSTS", "FakeWebhook",
           "aws_error_code", "VOICE_IDS"]

MAX_BODY = 1 << 20
MAX_REQUESTS = 10_000
GARBAGE = b"<html><body><h1>502 Bad Gateway</h1></body></html>\n"

Response = namedtuple("Response", "status headers body")


def _json_bytes(obj):
    return json.dumps(obj, separators=(",", ":")).encode()


def _strict_json(raw):
    """Parses UTF-8 JSON; rejects duplicate keys, NaN/Infinity and invalid UTF-8 (ValueError)."""
    def pairs(items):
        d = {}
        for k, v in items:
            if k in d:
                raise ValueError(f"duplicate key {k!r}")
            d[k] = v
        return d

    def bad_constant(c):
        raise ValueError(f"invalid JSON constant {c}")

    return json.loads(raw.decode("utf-8"), object_pairs_hook=pairs, parse_constant=bad_constant)


def aws_error_code(type_string):
    """The AWS JSON protocol's error-type sanitizing: cut at ':' then keep what follows '#'."""
    return type_string.split(":", 1)[0].rsplit("#", 1)[-1]


def _parse_action(action):
    if isinstance(action, str):
        return action, None
    if isinstance(action, (tuple, list)) and action and isinstance(action[0], str):
        return action[0], tuple(action[1:])
    raise ValueError(f"bad action {action!r}")


def _iso_z(dt):
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 1024  # the listen backlog: hundreds of concurrent clients, no SYN drops

    def __init__(self, fake):
        self.fake = fake
        super().__init__(("127.0.0.1", 0), _Handler)

    def get_request(self):
        sock, addr = super().get_request()
        if self.fake.tls is not None:  # the handshake runs in the handler's thread (setup)
            sock = self.fake.tls.wrap_socket(sock, server_side=True,
                                             do_handshake_on_connect=False)
        return sock, addr

    def process_request(self, request, client_address):
        with self.fake._lock:
            self.fake._conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self.fake._lock:
            self.fake._conns.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request, client_address):
        pass  # client resets and the like; bugs inside the fake are caught in _handle


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 60  # idle keep-alive connections; stop() closes them anyway

    def log_message(self, fmt, *args):
        pass

    def setup(self):
        if isinstance(self.request, ssl.SSLSocket):
            self.request.settimeout(10)
            try:
                self.request.do_handshake()
            except (ssl.SSLError, OSError) as e:
                with self.server.fake._lock:
                    self.server.fake.tls_errors.append(str(e))
                raise
        super().setup()

    def _dispatch(self):
        self.server.fake._handle(self)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _dispatch


class _FakeBase:
    """Threads, connection tracking, recording, scripting and transport-level actions."""

    name = "fake"
    json_type = "application/json"

    def __init__(self):
        self.requests = []
        self.script = []
        self.default = "ok"
        self.errors = []
        self.max_body = MAX_BODY
        self.max_requests = MAX_REQUESTS
        self.clock = time.time
        self.tls = None
        self.tls_errors = []
        self._lock = threading.Lock()
        self._conns = set()
        self._inflight = 0
        self._idle = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._server = None
        self._thread = None
        self._seq = 0
        self.port = None

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self):
        if self._server is not None:
            return self
        self._server = _Server(self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.02},
                                        name=f"{self.name}-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        """Stops accepting, releases hanging handlers and closes every open connection."""
        if self._server is None or self._stopping.is_set():
            return
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(timeout=2)
        with self._idle:
            self._idle.wait_for(lambda: self._inflight == 0, timeout=1)

    @property
    def in_flight(self):
        """Requests being handled right now (0 once stop() has returned)."""
        with self._lock:
            return self._inflight

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def url(self):
        if self.port is None:
            raise RuntimeError(f"{self.name} not started")
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def host_header(self):
        return f"127.0.0.1:{self.port}"

    # ---- records ---------------------------------------------------------------------------
    @staticmethod
    def _match(rec, filters):
        for k, want in filters.items():
            have = rec.get(k)
            if callable(want):
                if not want(have):
                    return False
            elif have != want:
                return False
        return True

    def matching(self, **filters):
        with self._lock:
            recs = list(self.requests)
        return [r for r in recs if self._match(r, filters)]

    def count(self, **filters):
        return len(self.matching(**filters))

    def last(self, **filters):
        m = self.matching(**filters)
        return m[-1] if m else None

    def wait_for(self, n, timeout=5.0, **filters):
        """Polls until at least n matching records exist (or timeout); returns the count."""
        deadline = time.monotonic() + timeout
        while True:
            c = self.count(**filters)
            if c >= n or time.monotonic() >= deadline:
                return c
            time.sleep(0.01)

    def clear(self):
        with self._lock:
            del self.requests[:]
            del self.script[:]

    def _next_action(self):
        with self._lock:
            return self.script.pop(0) if self.script else self.default

    def _append(self, rec):
        with self._lock:
            self._seq += 1
            rec["seq"] = self._seq
            self.requests.append(rec)
            excess = len(self.requests) - self.max_requests
            if excess > 0:
                del self.requests[:excess]

    # ---- per-request flow ------------------------------------------------------------------
    def _handle(self, h):
        with self._lock:
            self._inflight += 1
        try:
            self._handle_request(h)
        finally:
            with self._idle:
                self._inflight -= 1
                self._idle.notify_all()

    def _handle_request(self, h):
        headers = {}
        for k, v in h.headers.items():
            k = k.lower()
            headers[k] = f"{headers[k]}, {v}" if k in headers else v
        rec = {"time": time.time(), "client_port": h.client_address[1],
               "method": h.command, "path": h.path, "headers": headers,
               "body": b"", "parsed": None, "action": None, "valid": False, "reason": None,
               "status": None, "error": None, "response": None, "sent": False}
        body, problem = self._read_body(h)
        if problem is not None:
            rec["reason"] = problem[1]
            self._append(rec)
            h.close_connection = True
            self._send(h, rec, Response(problem[0], {"Content-Type": "text/plain"},
                                        problem[1].encode() + b"\n"))
            return
        rec["body"] = body
        action = self._next_action()
        rec["action"] = action
        self._append(rec)
        try:
            kind, args = _parse_action(action)
            if kind == "delay":
                if self._stopping.wait(float(args[0])):
                    return self._abort(h)
                kind = "ok"
            rejection = self.verify(h, rec)
            rec["valid"] = rejection is None
            if kind == "hang":
                self._stopping.wait(float(args[0]) if args else None)
                return self._abort(h)
            if kind == "close":
                return self._abort(h)
            if kind == "garbage":
                resp = Response(200, {"Content-Type": self.json_type}, GARBAGE)
            elif kind == "raw":
                status, rbody = args[0], args[1] if len(args) > 1 else b""
                rheaders = dict(args[2]) if len(args) > 2 else {}
                if not isinstance(rbody, (bytes, str)):
                    rbody = _json_bytes(rbody)
                    rheaders.setdefault("Content-Type", self.json_type)
                resp = Response(int(status), rheaders,
                                rbody.encode() if isinstance(rbody, str) else rbody)
            elif rejection is not None:
                resp = rejection
            else:
                resp = self.respond(h, rec, "ok" if kind == "half" else kind, args)
            if kind == "half":
                self._send(h, rec, resp, partial=True)
            else:
                self._send(h, rec, resp)
        except Exception:
            self.errors.append(traceback.format_exc())
            h.close_connection = True
            self._send(h, rec, Response(500, {"Content-Type": "text/plain"},
                                        b"fake internal error\n"))

    def _read_body(self, h):
        if "chunked" in (h.headers.get("Transfer-Encoding") or "").lower():
            return None, (411, "chunked request bodies are not accepted (send Content-Length)")
        cl = h.headers.get_all("Content-Length") or []
        if len(set(cl)) > 1:
            return None, (400, "conflicting Content-Length headers")
        if not cl:
            return b"", None
        if not cl[0].strip().isdigit():
            return None, (400, f"bad Content-Length {cl[0]!r}")
        n = int(cl[0])
        if n > self.max_body:
            return None, (413, f"body of {n} bytes exceeds the fake's cap of {self.max_body}")
        data = b""
        while len(data) < n:
            chunk = h.rfile.read(n - len(data))
            if not chunk:
                return None, (400, "connection closed before the body was complete")
            data += chunk
        return data, None

    def _abort(self, h):
        """Closes the connection without writing anything."""
        h.close_connection = True
        try:
            h.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _send(self, h, rec, resp, partial=False):
        rec["status"] = resp.status
        ctype = next((v for k, v in resp.headers.items() if k.lower() == "content-type"), "")
        if "json" in ctype and resp.body:
            try:
                rec["response"] = json.loads(resp.body)
            except ValueError:
                rec["response"] = None
        else:
            rec["response"] = resp.body
        if self._stopping.is_set():
            h.close_connection = True
        try:
            h.send_response(resp.status)
            for k, v in resp.headers.items():
                h.send_header(k, v)
            body = b"" if h.command == "HEAD" else resp.body
            if partial:
                h.send_header("Content-Length", str(len(resp.body) + 64))
                h.send_header("Connection", "close")
                h.end_headers()
                h.wfile.write(body[: len(body) // 2])
                h.wfile.flush()
                rec["partial"] = True
                return self._abort(h)
            h.send_header("Content-Length", str(len(resp.body)))
            if h.close_connection:
                h.send_header("Connection", "close")
            h.end_headers()
            h.wfile.write(body)
            h.wfile.flush()
        except OSError:
            rec["client_gone"] = True
            h.close_connection = True

    # ---- subclass hooks --------------------------------------------------------------------
    def verify(self, h, rec):
        """Fills provider-specific record fields; returns a rejection Response or None."""
        return None

    def respond(self, h, rec, kind, args):
        """Answers a verified request according to the action `kind`."""
        raise NotImplementedError


# =============================================================================================
# AWS End User Messaging SMS and Voice v2
# =============================================================================================

# Fallback only; the list used is read from botocore's model (the 59 voices of provider-apis §1.4).
_VOICES_FALLBACK = (
    "AMY ASTRID BIANCA BRIAN CAMILA CARLA CARMEN CELINE CHANTAL CONCHITA CRISTIANO DORA EMMA "
    "ENRIQUE EWA FILIZ GERAINT GIORGIO GWYNETH HANS INES IVY JACEK JAN JOANNA JOEY JUSTIN KARL "
    "KENDRA KIMBERLY LEA LIV LOTTE LUCIA LUPE MADS MAJA MARLENE MATHIEU MATTHEW MAXIM MIA MIGUEL "
    "MIZUKI NAJA NICOLE PENELOPE RAVEENA RICARDO RUBEN RUSSELL SALLI SEOYEON TAKUMI TATYANA VICKI "
    "VITORIA ZEINA ZHIYU").split()


@functools.lru_cache(maxsize=None)
def _sms_voice_model():
    """(voice ids, {operation: set of member names}) from botocore's pinpoint-sms-voice-v2 model."""
    try:
        import botocore.session
        model = botocore.session.get_session().get_service_model("pinpoint-sms-voice-v2")
        voices = tuple(model.operation_model("SendVoiceMessage")
                       .input_shape.members["VoiceId"].enum)
        members = {op: set(model.operation_model(op).input_shape.members)
                   for op in ("SendTextMessage", "SendVoiceMessage")}
    except Exception:
        voices, members = tuple(_VOICES_FALLBACK), {}
    # Members newer than botocore 1.29.27's model (provider-apis.md §1.3/§1.4).
    text = {"DestinationPhoneNumber", "OriginationIdentity", "MessageBody", "MessageType",
            "Keyword", "ConfigurationSetName", "MaxPrice", "TimeToLive", "Context",
            "DestinationCountryParameters", "DryRun", "ProtectConfigurationId",
            "MessageFeedbackEnabled"}
    voice = {"DestinationPhoneNumber", "OriginationIdentity", "MessageBody",
             "MessageBodyTextType", "VoiceId", "ConfigurationSetName", "MaxPricePerMinute",
             "TimeToLive", "Context", "DryRun", "ProtectConfigurationId",
             "MessageFeedbackEnabled"}
    members["SendTextMessage"] = members.get("SendTextMessage", set()) | text
    members["SendVoiceMessage"] = members.get("SendVoiceMessage", set()) | voice
    return voices, members


class _VoiceIds:
    def __iter__(self):
        return iter(_sms_voice_model()[0])

    def __contains__(self, v):
        return v in _sms_voice_model()[0]

    def __len__(self):
        return len(_sms_voice_model()[0])


VOICE_IDS = _VoiceIds()

_SIGV4_TS = re.compile(r"\d{8}T\d{6}Z\Z")
_PHONE = re.compile(r"\+?[1-9][0-9]{1,18}")
_ORIGIN = re.compile(r"[A-Za-z0-9_:/+\-]+")
_CONFSET = re.compile(r"[A-Za-z0-9_:/\-]+")
_PRICE = re.compile(r"[0-9]{0,2}\.[0-9]{1,5}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_CORAL = "com.amazon.coral.service"
_EUM_NS = "com.amazonaws.pinpointsmsvoicev2"
_TARGET_PREFIX = "PinpointSMSVoiceV2."
_OPS = ("SendTextMessage", "SendVoiceMessage", "PutMessageFeedback")
_MESSAGE_ID = re.compile(r"[A-Za-z0-9_:/-]+")


class _Reject(Exception):
    def __init__(self, status, etype, message, ns=_CORAL, reason=None, extra=None, sig=True):
        super().__init__(message)
        self.status, self.etype, self.message, self.ns = status, etype, message, ns
        self.reason, self.extra, self.sig = reason or message, extra or {}, sig


class _SigV4Verifier:
    """AWS front-end authentication, shared by the AWS fakes: SigV4 recomputed with botocore.
    The class sets `service` and `signed_required` (headers that must be signed); the instance
    `region`, `credentials`, `expected_host`, `check_host`, `skew_limit`. Rejections are raised as
    _Reject with the AWS JSON-protocol type names; each fake renders them in its own protocol."""

    signed_required = ("content-type", "host", "x-amz-date")

    def _signers(self):
        """The (akid, secret, token) a request may be signed with."""
        return self.credentials

    def _verify_signature(self, h, rec):
        def reject(status, etype, message, reason=None):
            raise _Reject(status, etype, message, reason=reason, sig=False)

        auth = h.headers.get_all("Authorization") or []
        if not auth:
            reject(400, "MissingAuthenticationTokenException", "Missing Authentication Token",
                   "no Authorization header")
        if len(auth) > 1:
            reject(400, "IncompleteSignatureException", "Multiple Authorization headers")
        auth = auth[0].strip()
        alg, _, rest = auth.partition(" ")
        if alg != "AWS4-HMAC-SHA256":
            reject(400, "IncompleteSignatureException",
                   f"Unsupported Authorization Type: {alg!r}. Authorization={auth}")
        parts = {}
        for item in rest.split(","):
            k, eq, v = item.strip().partition("=")
            if not eq or k in parts:
                reject(400, "IncompleteSignatureException",
                       f"Authorization header is malformed near {item.strip()!r}. "
                       f"Authorization={auth}")
            parts[k] = v
        missing = [k for k in ("Credential", "SignedHeaders", "Signature") if k not in parts]
        if missing or set(parts) != {"Credential", "SignedHeaders", "Signature"}:
            reject(400, "IncompleteSignatureException",
                   "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' "
                   f"parameters (missing {missing}). Authorization={auth}")
        scope = parts["Credential"].split("/")
        if len(scope) != 5 or not all(scope):
            reject(400, "IncompleteSignatureException",
                   f"Credential must have exactly 5 slash-separated components, got "
                   f"{parts['Credential']!r}")
        akid, sdate, sregion, sservice, term = scope
        rec["akid"] = akid
        signature = parts["Signature"]
        if not _HEX64.fullmatch(signature):
            reject(400, "IncompleteSignatureException",
                   "Signature must be 64 lower-case hex digits")
        amz_dates = h.headers.get_all("X-Amz-Date") or []
        if len(amz_dates) != 1 or not _SIGV4_TS.match(amz_dates[0]):
            reject(400, "IncompleteSignatureException",
                   "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' "
                   f"header (a single YYYYMMDD'T'HHMMSS'Z' value; got {amz_dates})")
        amz_date = amz_dates[0]
        signed = parts["SignedHeaders"].split(";")
        rec["signed_headers"] = signed

        candidates = [c for c in self._signers() if c[0] == akid]
        if not candidates:
            reject(400, "UnrecognizedClientException",
                   "The security token included in the request is invalid.",
                   f"unknown access key {akid!r}")
        tokens = h.headers.get_all("X-Amz-Security-Token") or []
        sent_token = tokens[0] if len(tokens) == 1 else None
        candidates = [c for c in candidates if (c[2] or None) == sent_token
                      and len(tokens) <= 1]
        if not candidates:
            reject(400, "UnrecognizedClientException",
                   "The security token included in the request is invalid.",
                   "X-Amz-Security-Token missing, repeated or not the credential's token")

        try:
            ts = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
        except ValueError:
            reject(400, "IncompleteSignatureException", f"Invalid X-Amz-Date {amz_date!r}")
        now = self.clock()
        fmt = "%Y%m%dT%H%M%SZ"
        now_s = datetime.fromtimestamp(now, timezone.utc).strftime(fmt)
        if ts.timestamp() < now - self.skew_limit:
            earliest = datetime.fromtimestamp(now - self.skew_limit, timezone.utc).strftime(fmt)
            reject(400, "InvalidSignatureException",
                   f"Signature expired: {amz_date} is now earlier than {earliest} "
                   f"({now_s} - 5 min.)")
        if ts.timestamp() > now + self.skew_limit:
            latest = datetime.fromtimestamp(now + self.skew_limit, timezone.utc).strftime(fmt)
            reject(400, "InvalidSignatureException",
                   f"Signature not yet current: {amz_date} is still later than {latest} "
                   f"({now_s} + 5 min.)")
        if term != "aws4_request":
            reject(400, "InvalidSignatureException",
                   "Credential should be scoped with a valid terminator: 'aws4_request', "
                   f"not '{term}'.")
        if sdate != amz_date[:8]:
            reject(400, "InvalidSignatureException",
                   "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of "
                   f"date from HTTP: '{sdate}' != '{amz_date[:8]}', from '{amz_date}'.")
        if sregion != self.region:
            reject(400, "InvalidSignatureException",
                   f"Credential should be scoped to a valid region, not '{sregion}'. ")
        if sservice != self.service:
            reject(400, "InvalidSignatureException",
                   f"Credential should be scoped to correct service: '{self.service}'. ")

        if signed != sorted(set(signed)) or any(s != s.lower() or not s for s in signed):
            reject(400, "InvalidSignatureException",
                   f"SignedHeaders must be lower-case, sorted and unique: {parts['SignedHeaders']}")
        required = list(self.signed_required)
        required += [k.lower() for k in h.headers.keys() if k.lower().startswith("x-amz-")]
        for name in required:
            if name not in signed:
                reject(400, "InvalidSignatureException",
                       f"'{name}' must be a 'SignedHeader' in the AWS Authorization.")
        for name in signed:
            if not h.headers.get_all(name):
                reject(403, "InvalidSignatureException",
                       "The request signature we calculated does not match the signature you "
                       "provided. Check your AWS Secret Access Key and signing method. Consult "
                       "the service documentation for details.",
                       f"signed header {name!r} is not in the request")
        hosts = h.headers.get_all("Host")
        want_host = self.expected_host or self.host_header
        if self.check_host and hosts != [want_host]:
            reject(403, "InvalidSignatureException",
                   "The request signature we calculated does not match the signature you "
                   "provided. Check your AWS Secret Access Key and signing method. Consult the "
                   "service documentation for details.",
                   f"Host header {hosts} is not this endpoint's {want_host!r}")
        body = rec["body"]
        if "x-amz-content-sha256" in signed:
            if h.headers.get("X-Amz-Content-SHA256") != hashlib.sha256(body).hexdigest():
                reject(400, "InvalidSignatureException",
                       "The provided 'x-amz-content-sha256' header does not match what was "
                       "computed.")

        for cred in candidates:
            creq, sts, sig = _botocore_sigv4(cred, self.region, self.service, h, signed,
                                             amz_date, body, self.url)
            rec["canonical_request"], rec["string_to_sign"] = creq, sts
            if hmac.compare_digest(sig.encode(), signature.encode()):
                return
        reject(403, "InvalidSignatureException",
               "The request signature we calculated does not match the signature you provided. "
               "Check your AWS Secret Access Key and signing method. Consult the service "
               "documentation for details.",
               "signature mismatch (see record's canonical_request / string_to_sign)")



class FakeEUM(_SigV4Verifier, _FakeBase):
    """AWS End User Messaging SMS and Voice v2 (`PinpointSMSVoiceV2`, JSON 1.0).

    FakeEUM(region="us-east-1", credentials=None)
      credentials: list of (access_key_id, secret_access_key, session_token or None) accepted;
                   a mutable attribute (rotate keys by assigning). Default: one random static key.
      region, service ("sms-voice"): the scope the signature must carry.
      expected_host: the Host that must be signed and sent (None, the default, means this
                     server's "127.0.0.1:PORT"); check_host=False accepts any Host (e.g. to
                     replay requests signed for the real endpoint).
      skew_limit: allowed |X-Amz-Date - clock()| in seconds (300, as AWS).
      clock: callable returning Unix seconds, used for the 5-minute X-Amz-Date window.
    Extra record keys: op ("SendTextMessage"/"SendVoiceMessage" or None), sig_ok (bool), akid,
      signed_headers (list), canonical_request / string_to_sign (as recomputed), message_id,
      fields (list of {"Name","Message"} on ValidationException), ssml (parsed root tag).
    Error actions (each 4xx/5xx with `__type` "com.amazonaws.pinpointsmsvoicev2#<Name>",
      `Message`, header X-Amzn-Errortype "<Name>:http://internal.amazon.com/coral/..."):
      "throttle" 400 ThrottlingException; "500" 500 InternalServerException;
      "validation" 400 ValidationException Reason INVALID_PARAMETER;
      "optout" 400 ConflictException Reason DESTINATION_PHONE_NUMBER_OPTED_OUT;
      "denied" 400 AccessDeniedException Reason ACCOUNT_DISABLED;
      "quota" 400 ServiceQuotaExceededException Reason MONTHLY_SPEND_LIMIT_REACHED_FOR_TEXT/VOICE;
      "notfound" 400 ResourceNotFoundException.
    Front-end (authentication) errors use `__type` "com.amazon.coral.service#<Name>" and a
    lower-case `message`, as live AWS JSON services do.
    """

    name = "FakeEUM"
    json_type = "application/x-amz-json-1.0"
    service = "sms-voice"
    signed_required = ("content-type", "host", "x-amz-date", "x-amz-target")

    def __init__(self, region="us-east-1", credentials=None):
        super().__init__()
        self.region = region
        if credentials is None:
            credentials = [("AKIA" + "".join(secrets.choice(string.ascii_uppercase + "234567")
                                              for _ in range(16)),
                            secrets.token_urlsafe(30)[:40], None)]
        self.credentials = list(credentials)
        self.expected_host = None  # None: this server's own "127.0.0.1:PORT"
        self.check_host = True
        self.skew_limit = 300
        self.feedback_enabled = set()  # message ids sent with MessageFeedbackEnabled
        self.feedback = {}  # message id -> MessageFeedbackStatus taken

    def _feedback(self, rec):
        """PutMessageFeedback: only for a message this fake sent with MessageFeedbackEnabled
        (AWS has no feedback record for the others: ResourceNotFoundException, HTTP 400 as AWS
        answers it)."""
        mid = rec["json"]["MessageId"]
        if mid not in self.feedback_enabled:
            rec["error"] = "ResourceNotFoundException"
            rec["reason"] = f"no message {mid} sent with MessageFeedbackEnabled"
            return self._aws_error(400, "ResourceNotFoundException", "Resource not found",
                                   extra={"ResourceType": "message", "ResourceId": mid})
        status = rec["json"]["MessageFeedbackStatus"]
        self.feedback[mid] = status
        rec["message_id"] = mid
        rec["sent"] = True
        return Response(200, {"Content-Type": self.json_type,
                              "x-amzn-RequestId": str(uuid.uuid4())},
                        _json_bytes({"MessageId": mid, "MessageFeedbackStatus": status}))

    @property
    def credential(self):
        """The first accepted (akid, secret, token): handy to configure the client under test."""
        return tuple(self.credentials[0])

    # ---- responses ---------------------------------------------------------------------------
    def _aws_error(self, status, etype, message, ns=_EUM_NS, extra=None):
        rid = str(uuid.uuid4())
        msg_key = "message" if ns == _CORAL else "Message"
        body = {"__type": f"{ns}#{etype}"}
        if message:
            body[msg_key] = message
        body.update(extra or {})
        if etype == "InternalServerException":
            body["RequestId"] = rid
        return Response(status, {"Content-Type": self.json_type, "x-amzn-RequestId": rid,
                                 "X-Amzn-Errortype":
                                     f"{etype}:http://internal.amazon.com/coral/{ns}/"},
                        _json_bytes(body))

    def _rejection(self, rec, r):
        rec["reason"] = r.reason
        rec["error"] = r.etype
        if not r.sig:
            rec["sig_ok"] = False
        return self._aws_error(r.status, r.etype, r.message, r.ns, r.extra)

    # ---- verification ------------------------------------------------------------------------
    def verify(self, h, rec):
        rec.update(op=None, sig_ok=False, akid=None, signed_headers=None, message_id=None)
        try:
            self._verify_signature(h, rec)
            rec["sig_ok"] = True
            self._verify_operation(h, rec)
            self._verify_body(rec)
        except _Reject as r:
            return self._rejection(rec, r)
        return None

    def _verify_operation(self, h, rec):
        def unknown(reason):
            raise _Reject(400, "UnknownOperationException", "", ns=_CORAL, reason=reason)

        if h.command != "POST" or h.path != "/":
            unknown(f"JSON protocol requests are POST /, got {h.command} {h.path}")
        ctype = h.headers.get_all("Content-Type") or []
        if ctype != ["application/x-amz-json-1.0"]:
            unknown(f"Content-Type must be application/x-amz-json-1.0, got {ctype}")
        target = h.headers.get_all("X-Amz-Target") or []
        op = target[0][len(_TARGET_PREFIX):] if len(target) == 1 and \
            target[0].startswith(_TARGET_PREFIX) else None
        if op not in _OPS:
            unknown(f"X-Amz-Target {target} is not SendTextMessage / SendVoiceMessage / "
                    "PutMessageFeedback")
        rec["op"] = op

    def _verify_body(self, rec):
        op = rec["op"]
        try:
            body = _strict_json(rec["body"])
        except (ValueError, UnicodeDecodeError) as e:
            raise _Reject(400, "ValidationException", "The request body could not be parsed",
                          ns=_EUM_NS, reason=f"body is not JSON: {e}",
                          extra={"Reason": "CANNOT_PARSE"})
        if not isinstance(body, dict):
            raise _Reject(400, "ValidationException", "The request body must be a JSON object",
                          ns=_EUM_NS, reason="body is not a JSON object",
                          extra={"Reason": "CANNOT_PARSE"})
        rec["parsed"] = rec["json"] = body
        problems = []

        def bad(name, msg):
            problems.append({"Name": name, "Message": msg})

        def string_field(name, lo, hi, pattern=None, required=False):
            if name not in body:
                if required:
                    bad(name, "Member must not be null")
                return None
            v = body[name]
            if not isinstance(v, str):
                bad(name, "Member must be a string")
                return None
            if not lo <= len(v) <= hi:
                bad(name, f"Member must have length between {lo} and {hi}")
            elif pattern is not None and not pattern.fullmatch(v):
                bad(name, f"Member must satisfy regular expression pattern: {pattern.pattern}")
            return v

        def enum_field(name, allowed, required=False):
            if name not in body:
                if required:
                    bad(name, "Member must not be null")
                return None
            if body[name] not in allowed:
                bad(name, f"Member must satisfy enum value set: [{', '.join(allowed)}]")
            return body[name]

        def int_field(name, lo, hi):
            if name in body:
                v = body[name]
                if type(v) is not int or not lo <= v <= hi:
                    bad(name, f"Member must be an integer between {lo} and {hi}")

        def bool_field(name):
            if name in body and type(body[name]) is not bool:
                bad(name, "Member must be a boolean")

        def map_field(name, max_entries, key_ok, val_ok):
            if name not in body:
                return
            m = body[name]
            if not isinstance(m, dict):
                bad(name, "Member must be a map")
                return
            if len(m) > max_entries:
                bad(name, f"Member must have at most {max_entries} entries")
            for k, v in m.items():
                if not key_ok(k):
                    bad(name, f"Invalid map key {k!r}")
                if not isinstance(v, str) or not val_ok(v):
                    bad(name, f"Invalid value for map key {k!r}")

        if op == "PutMessageFeedback":
            for k in body:
                if k not in ("MessageId", "MessageFeedbackStatus"):
                    bad(k, f"Unknown member for {op}")
            string_field("MessageId", 1, 64, _MESSAGE_ID, required=True)
            enum_field("MessageFeedbackStatus", ("RECEIVED", "FAILED"), required=True)
            if problems:
                rec["fields"] = problems
                raise _Reject(400, "ValidationException", "validation error detected",
                              ns=_EUM_NS, reason="; ".join(f"{p['Name']}: {p['Message']}"
                                                            for p in problems),
                              extra={"Reason": "FIELD_VALIDATION_FAILED", "Fields": problems})
            return
        _, members = _sms_voice_model()
        for k in body:
            if k not in members[op]:
                bad(k, f"Unknown member for {op}")
        string_field("DestinationPhoneNumber", 1, 20, _PHONE, required=True)
        string_field("ConfigurationSetName", 1, 256, _CONFSET)
        string_field("ProtectConfigurationId", 1, 256, _CONFSET)
        int_field("TimeToLive", 5, 259200)
        bool_field("DryRun")
        bool_field("MessageFeedbackEnabled")
        map_field("Context", 5,
                  lambda k: isinstance(k, str) and 1 <= len(k) <= 100 and
                  re.fullmatch(r"\S+", k) is not None,
                  lambda v: 1 <= len(v) <= 800 and v == v.strip())
        if op == "SendTextMessage":
            string_field("OriginationIdentity", 1, 256, _ORIGIN)
            text = string_field("MessageBody", 1, 1600, required=True)
            if text is not None and not text.strip():
                bad("MessageBody", "Member must not be blank")
            enum_field("MessageType", ("TRANSACTIONAL", "PROMOTIONAL"))
            string_field("Keyword", 1, 30, re.compile(r"[ \S]+"))
            string_field("MaxPrice", 2, 8, _PRICE)
            map_field("DestinationCountryParameters", 10,
                      lambda k: k in ("IN_TEMPLATE_ID", "IN_ENTITY_ID"),
                      lambda v: 1 <= len(v) <= 64 and re.fullmatch(r"\S+", v) is not None)
        else:
            string_field("OriginationIdentity", 1, 256, _ORIGIN, required=True)
            text = string_field("MessageBody", 1, 6000, required=True)
            kind = enum_field("MessageBodyTextType", ("TEXT", "SSML"), required=True)
            enum_field("VoiceId", tuple(VOICE_IDS))
            string_field("MaxPricePerMinute", 2, 8, _PRICE)
            if text is not None and not text.strip():
                bad("MessageBody", "Member must not be blank")
            elif text is not None and kind == "TEXT" and len(text) > 3000:
                bad("MessageBody", "TEXT message bodies are limited to 3000 characters")
            elif text is not None and kind == "SSML":
                try:
                    root = ET.fromstring(text)
                    rec["ssml"] = root.tag
                    if root.tag.rsplit("}", 1)[-1] != "speak":
                        bad("MessageBody", "SSML must have a <speak> root element")
                except ET.ParseError as e:
                    bad("MessageBody", f"SSML is not well-formed XML: {e}")
        if problems:
            rec["fields"] = problems
            raise _Reject(400, "ValidationException",
                          "1 validation error detected" if len(problems) == 1 else
                          f"{len(problems)} validation errors detected",
                          ns=_EUM_NS, reason="; ".join(f"{p['Name']}: {p['Message']}"
                                                        for p in problems),
                          extra={"Reason": "FIELD_VALIDATION_FAILED", "Fields": problems})

    # ---- actions -----------------------------------------------------------------------------
    def respond(self, h, rec, kind, args):
        dest = (rec.get("json") or {}).get("DestinationPhoneNumber")
        voice = rec["op"] == "SendVoiceMessage"
        errors = {
            "throttle": (400, "ThrottlingException", "Rate exceeded", {}),
            "500": (500, "InternalServerException", "Internal server error", {}),
            "validation": (400, "ValidationException", "Invalid parameter",
                           {"Reason": "INVALID_PARAMETER",
                            "Fields": [{"Name": "DestinationPhoneNumber",
                                        "Message": "Invalid phone number"}]}),
            "optout": (400, "ConflictException",
                       "The destination phone number is opted out",
                       {"Reason": "DESTINATION_PHONE_NUMBER_OPTED_OUT",
                        "ResourceType": "opt-out-list", "ResourceId": dest or "Default"}),
            "denied": (400, "AccessDeniedException", "Account is disabled",
                       {"Reason": "ACCOUNT_DISABLED"}),
            "quota": (400, "ServiceQuotaExceededException", "Monthly spend limit reached",
                      {"Reason": "MONTHLY_SPEND_LIMIT_REACHED_FOR_VOICE" if voice else
                       "MONTHLY_SPEND_LIMIT_REACHED_FOR_TEXT"}),
            "notfound": (400, "ResourceNotFoundException", "Resource not found",
                         {"ResourceType": "phone-number",
                          "ResourceId": (rec.get("json") or {}).get("OriginationIdentity", "")}),
        }
        if kind in errors:
            status, etype, message, extra = errors[kind]
            rec["error"] = etype
            return self._aws_error(status, etype, message, extra=extra)
        if kind != "ok":
            raise ValueError(f"FakeEUM: unknown action {kind!r}")
        if rec["op"] == "PutMessageFeedback":
            return self._feedback(rec)
        mid = str(uuid.uuid4())
        if rec["json"].get("MessageFeedbackEnabled") is True:
            self.feedback_enabled.add(mid)
        rec["message_id"] = mid
        rec["sent"] = True
        return Response(200, {"Content-Type": self.json_type,
                              "x-amzn-RequestId": str(uuid.uuid4())},
                        _json_bytes({"MessageId": mid}))


def _botocore_sigv4(cred, region, service, h, signed, amz_date, body, base_url):
    """Recomputes (canonical request, string to sign, signature) with botocore's SigV4Auth,
    using exactly the signed headers as received (no blacklist: a client may sign what it likes)
    and the request's own X-Amz-Date."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.compat import HTTPHeaders
    from botocore.credentials import Credentials

    class ExactSigV4(SigV4Auth):
        def headers_to_sign(self, request):
            out = HTTPHeaders()
            for name, value in request.headers.items():
                out[name.lower()] = value
            return out

    req = AWSRequest(method=h.command, url=base_url + h.path, data=body)
    for name in signed:
        for value in h.headers.get_all(name) or []:
            req.headers[name] = value
    req.context["timestamp"] = amz_date
    auth = ExactSigV4(Credentials(cred[0], cred[1], cred[2]), service, region)
    creq = auth.canonical_request(req)
    sts = auth.string_to_sign(req, creq)
    return creq, sts, auth.signature(sts, req)


# =============================================================================================
# Twilio
# =============================================================================================

_E164 = re.compile(r"\+[1-9][0-9]{1,14}")
_TW_ROUTE = re.compile(r"/2010-04-01/Accounts/([^/]+)/(Messages|Calls)\.json")
_TW_FEEDBACK = re.compile(r"/2010-04-01/Accounts/([^/]+)/Messages/([^/]+)/Feedback\.json")
_MG = re.compile(r"MG[0-9a-f]{32}")
_ALNUM_SENDER = re.compile(r"(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}")
_SHORT_CODE = re.compile(r"[0-9]{5,6}")


def _hex_sid(prefix):
    return prefix + secrets.token_hex(16)


class FakeTwilio(_FakeBase):
    """Twilio REST API 2010-04-01: Messages.json and Calls.json.

    FakeTwilio(account_sid=None, credentials=None)
      account_sid: "AC" + 32 hex (random by default); must be the SID in the URL.
      credentials: list of (username, password) accepted for HTTP Basic auth (account SID + auth
                   token, or API key "SK…" + secret). Default: [(account_sid, auth_token)] with a
                   random `auth_token` attribute.
      from_numbers / messaging_service_sids: optional collections; when set, From /
                   MessagingServiceSid must be one of them (21606 / 21701).
    Extra record keys: resource ("Messages"/"Calls"), auth_ok, user, form (dict of fields),
      sid, says (Calls: list of {"voice","language","loop","text"} from the TwiML <Say>s).
    Error actions: "throttle" 429 20429; "invalid_number" 400 21211; "unsubscribed" 400 21610;
      "not_sms_capable" 400 21614; "geo" 400 21408; "500" 500 20500.
    """

    name = "FakeTwilio"
    json_type = "application/json; charset=utf-8"

    def __init__(self, account_sid=None, credentials=None):
        super().__init__()
        self.account_sid = account_sid or _hex_sid("AC")
        self.auth_token = None
        if credentials is None:
            self.auth_token = secrets.token_hex(16)
            credentials = [(self.account_sid, self.auth_token)]
        self.credentials = list(credentials)
        self.from_numbers = None
        self.messaging_service_sids = None
        self.feedback_enabled = set()  # message SIDs sent with ProvideFeedback=true
        self.feedback = {}  # message SID -> Outcome taken

    def _err(self, rec, status, code, message, reason=None, headers=None):
        rec["error"] = code
        if reason is not None or rec.get("reason") is None:
            rec["reason"] = reason or message
        hdrs = {"Content-Type": self.json_type}
        hdrs.update(headers or {})
        return Response(status, hdrs, _json_bytes(
            {"code": code, "message": message,
             "more_info": f"https://www.twilio.com/docs/errors/{code}", "status": status}))

    def verify(self, h, rec):
        rec.update(resource=None, auth_ok=False, user=None, form=None, sid=None)
        auth = h.headers.get("Authorization") or ""
        user = pw = None
        if auth[:6].lower() == "basic ":
            try:
                user, sep, pw = base64.b64decode(auth[6:].strip(), validate=True) \
                    .decode("utf-8").partition(":")
                if not sep:
                    user = None
            except (ValueError, UnicodeDecodeError):
                user = None
        rec["user"] = user
        ok = False
        if user is not None:
            for u, p in self.credentials:
                # evaluate both comparisons: constant time whatever matches
                ok |= hmac.compare_digest(u.encode(), user.encode()) & \
                    hmac.compare_digest(p.encode(), pw.encode())
        if not ok:
            why = ("no Authorization header" if not auth else
                   "malformed Basic credentials" if user is None else
                   f"wrong Basic credentials for {user!r}")
            return self._err(rec, 401, 20003, "Authenticate", why,
                             headers={"WWW-Authenticate": 'Basic realm="Twilio API"'})
        rec["auth_ok"] = True
        m = _TW_ROUTE.fullmatch(h.path) or _TW_FEEDBACK.fullmatch(h.path)
        if not m:
            return self._err(rec, 404, 20404,
                             f"The requested resource {h.path} was not found")
        if m.group(1) != self.account_sid:
            return self._err(rec, 404, 20404,
                             f"The requested resource {h.path} was not found",
                             f"account SID {m.group(1)!r} in the URL is not {self.account_sid!r}")
        rec["resource"] = m.group(2) if m.re is _TW_ROUTE else "Feedback"
        rec["sid"] = m.group(2) if m.re is _TW_FEEDBACK else None
        if h.command != "POST":
            return self._err(rec, 405, 20004, "Method not allowed")
        ctype = (h.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        try:
            text = rec["body"].decode("utf-8")
        except UnicodeDecodeError:
            return self._err(rec, 400, 21604, "Request body is not valid UTF-8")
        if ctype != "application/x-www-form-urlencoded":
            rec["reason"] = f"Content-Type {ctype!r} is not form-encoded (Twilio ignores the body)"
            text = ""
        pairs = parse_qsl(text, keep_blank_values=True)
        form = {}
        for k, v in pairs:
            if k in form:
                return self._err(rec, 400, 21604, f"Parameter '{k}' was given more than once")
            form[k] = v
        rec["form"] = rec["parsed"] = form
        if rec["resource"] == "Messages":
            return self._verify_message(rec, form)
        if rec["resource"] == "Feedback":
            return self._verify_feedback(rec, form)
        return self._verify_call(rec, form)

    def _verify_feedback(self, rec, form):
        """Message Feedback: Outcome confirmed|unconfirmed, on a message sent with
        ProvideFeedback=true (Twilio keeps no feedback resource for the others: 404)."""
        if set(form) - {"Outcome"}:
            return self._err(rec, 400, 21604, f"Unknown parameters {sorted(set(form) - {'Outcome'})}")
        if form.get("Outcome") not in ("confirmed", "unconfirmed"):
            return self._err(rec, 400, 21604, "Outcome must be confirmed or unconfirmed")
        if rec["sid"] not in self.feedback_enabled:
            return self._err(rec, 404, 20404, "The requested resource was not found",
                             f"no message {rec['sid']} sent with ProvideFeedback=true")
        return None

    def _verify_message(self, rec, form):
        to = form.get("To")
        if not to:
            return self._err(rec, 400, 21604, "A 'To' phone number is required.")
        if not re.fullmatch(r"(whatsapp:)?" + _E164.pattern, to):
            return self._err(rec, 400, 21211, f"The 'To' number {to} is not a valid phone number.")
        has_from, has_ms = bool(form.get("From")), bool(form.get("MessagingServiceSid"))
        if not has_from and not has_ms:
            return self._err(rec, 400, 21603, "A 'From' phone number is required.")
        if has_from and has_ms:
            return self._err(rec, 400, 21603,
                             "Provide exactly one of 'From' or 'MessagingServiceSid'.")
        if has_from:
            frm = form["From"]
            if not (_E164.fullmatch(frm) or _ALNUM_SENDER.fullmatch(frm)
                    or _SHORT_CODE.fullmatch(frm) or re.fullmatch(r"whatsapp:" + _E164.pattern,
                                                                  frm)):
                return self._err(rec, 400, 21212,
                                 f"The 'From' number {frm} is not a valid phone number, "
                                 "shortcode, or alphanumeric sender ID.")
            if self.from_numbers is not None and frm not in self.from_numbers:
                return self._err(rec, 400, 21606,
                                 f"The 'From' phone number provided ({frm}) is not a valid "
                                 "message-capable Twilio phone number for this destination.")
        else:
            ms = form["MessagingServiceSid"]
            if not _MG.fullmatch(ms) or (self.messaging_service_sids is not None
                                         and ms not in self.messaging_service_sids):
                return self._err(rec, 400, 21701,
                                 f"The Messaging Service Sid {ms} is invalid.")
        body = form.get("Body")
        if not body:
            return self._err(rec, 400, 21602, "Message body is required.")
        if len(body) > 1600:
            return self._err(rec, 400, 21617,
                             "The concatenated message body exceeds the 1600 character limit.")
        return None

    def _verify_call(self, rec, form):
        to, frm = form.get("To"), form.get("From")
        if not to:
            return self._err(rec, 400, 21201, "No 'To' number is specified")
        if not _E164.fullmatch(to):
            return self._err(rec, 400, 21217, f"Phone number {to} does not appear to be valid")
        if not frm:
            return self._err(rec, 400, 21213, "No 'From' number is specified")
        if not _E164.fullmatch(frm):
            return self._err(rec, 400, 21212, f"The 'From' number {frm} is not a valid phone "
                             "number.")
        if self.from_numbers is not None and frm not in self.from_numbers:
            return self._err(rec, 400, 21210, f"The source phone number provided, {frm}, is not "
                             "yet verified for your account.")
        twiml = form.get("Twiml")
        if form.get("Url"):
            return self._err(rec, 400, 21205, "Url given: this fake expects inline Twiml only",
                             "Url parameter given (Twilio would ignore Twiml)")
        if not twiml:
            return self._err(rec, 400, 21205, "Url parameter is required.",
                             "neither Twiml nor Url given")
        if len(twiml) > 4000:
            return self._err(rec, 400, 21220, "Twiml exceeds 4000 characters")
        try:
            root = ET.fromstring(twiml)
        except ET.ParseError as e:
            return self._err(rec, 400, 12100, f"Document parse failure: {e}")
        if root.tag != "Response":
            return self._err(rec, 400, 12100, f"TwiML root is <{root.tag}>, not <Response>")
        says = []
        for say in root.iter("Say"):
            loop = say.get("loop")
            if loop is not None and not loop.isdigit():
                return self._err(rec, 400, 12100, f"<Say loop={loop!r}> is not an integer >= 0")
            text = "".join(say.itertext()).strip()
            if not text:
                return self._err(rec, 400, 12100, "<Say> has no text")
            says.append({"voice": say.get("voice"), "language": say.get("language"),
                         "loop": int(loop) if loop is not None else None, "text": text})
        if not says:
            return self._err(rec, 400, 12100, "TwiML <Response> has no <Say>")
        rec["says"] = says
        return None

    def respond(self, h, rec, kind, args):
        errors = {
            "throttle": (429, 20429, "Too Many Requests"),
            "invalid_number": (400, 21211, "The 'To' number {to} is not a valid phone number."),
            "unsubscribed": (400, 21610, "Attempt to send to unsubscribed recipient"),
            "not_sms_capable": (400, 21614, "'To' number {to} is not a valid mobile number"),
            "geo": (400, 21408, "Permission to send an SMS has not been enabled for the region "
                                "indicated by the 'To' number: {to}"),
            "500": (500, 20500, "An internal server error has occurred"),
        }
        form = rec["form"] or {}
        if kind in errors:
            status, code, msg = errors[kind]
            rec["error"] = code
            return Response(status, {"Content-Type": self.json_type}, _json_bytes(
                {"code": code, "message": msg.format(to=form.get("To")),
                 "more_info": f"https://www.twilio.com/docs/errors/{code}", "status": status}))
        if kind != "ok":
            raise ValueError(f"FakeTwilio: unknown action {kind!r}")
        now = formatdate(usegmt=True).replace("GMT", "+0000")
        base = f"/2010-04-01/Accounts/{self.account_sid}"
        if rec["resource"] == "Feedback":
            sid = rec["sid"]
            self.feedback[sid] = form["Outcome"]
            rec["sent"] = True
            return Response(201, {"Content-Type": self.json_type}, _json_bytes(
                {"account_sid": self.account_sid, "message_sid": sid,
                 "outcome": form["Outcome"], "date_created": now, "date_updated": now,
                 "uri": f"{base}/Messages/{sid}/Feedback.json"}))
        if rec["resource"] == "Messages":
            sid = _hex_sid("SM")
            if form.get("ProvideFeedback") == "true":
                self.feedback_enabled.add(sid)
            ms = form.get("MessagingServiceSid")
            res = {"account_sid": self.account_sid, "api_version": "2010-04-01",
                   "body": form["Body"], "date_created": now, "date_sent": None,
                   "date_updated": now, "direction": "outbound-api", "error_code": None,
                   "error_message": None, "from": form.get("From"),
                   "messaging_service_sid": ms, "num_media": "0", "num_segments": "1",
                   "price": None, "price_unit": "USD", "sid": sid,
                   "status": "accepted" if ms else "queued",
                   "subresource_uris": {"media": f"{base}/Messages/{sid}/Media.json"},
                   "to": form["To"], "uri": f"{base}/Messages/{sid}.json"}
        else:
            sid = _hex_sid("CA")
            res = {"account_sid": self.account_sid, "annotation": None, "answered_by": None,
                   "api_version": "2010-04-01", "caller_name": None, "date_created": None,
                   "date_updated": None, "direction": "outbound-api", "duration": None,
                   "end_time": None, "forwarded_from": None, "from": form["From"],
                   "from_formatted": form["From"], "group_sid": None, "parent_call_sid": None,
                   "phone_number_sid": None, "price": None, "price_unit": "USD",
                   "queue_time": "0", "sid": sid, "start_time": None, "status": "queued",
                   "subresource_uris": {}, "to": form["To"], "to_formatted": form["To"],
                   "trunk_sid": None, "uri": f"{base}/Calls/{sid}.json"}
        rec["sid"] = sid
        rec["sent"] = True
        return Response(201, {"Content-Type": self.json_type}, _json_bytes(res))


# =============================================================================================
# Container credentials endpoint + EC2 IMDSv2
# =============================================================================================

_IMDS_CREDS = "/latest/meta-data/iam/security-credentials/"


class FakeCredsEndpoint(_FakeBase):
    """AWS container credentials endpoint and EC2 IMDSv2 in one server.

    FakeCredsEndpoint(path=None, auth_token=None, role="telehook-role", creds=None)
      path: container credentials path (default "/v2/credentials/<random>"); the full URI is
            `.container_url` (for AWS_CONTAINER_CREDENTIALS_FULL_URI).
      auth_token: when set, the container GET needs `Authorization: <auth_token>` (else 401).
      creds: dict(akid=, secret=, token=, expiration=datetime or seconds-from-now, evaluated at
             each fetch); mutable. `.credential` gives (akid, secret, token) for FakeEUM;
             `.rotate(expiration=3600)` installs fresh random credentials and returns them.
      role: the IMDS role name; imds_tokens: {token: expiry (clock seconds)} issued by PUT.
    Extra record keys: kind ("container", "imds-token", "imds-role", "imds-creds", "unknown"),
      akid (credentials served).
    Error actions: "500" (500 JSON), plus the common ones ("hang", ("delay", s), "garbage" …).
    """

    name = "FakeCredsEndpoint"

    def __init__(self, path=None, auth_token=None, role="telehook-role", creds=None):
        super().__init__()
        self.path = path or "/v2/credentials/" + uuid.uuid4().hex
        self.auth_token = auth_token
        self.role = role
        self.creds = creds or {}
        if not self.creds:
            self.rotate()
        self.imds_tokens = {}

    def rotate(self, expiration=3600):
        self.creds = {"akid": "ASIA" + "".join(secrets.choice(string.ascii_uppercase + "234567")
                                               for _ in range(16)),
                      "secret": secrets.token_urlsafe(30)[:40],
                      "token": "IQoJb3JpZ2luX2VjE" + secrets.token_urlsafe(96),
                      "expiration": expiration}
        return self.credential

    @property
    def credential(self):
        c = self.creds
        return (c["akid"], c["secret"], c.get("token"))

    @property
    def container_url(self):
        return self.url + self.path

    def _expiration(self):
        exp = self.creds.get("expiration", 3600)
        if isinstance(exp, datetime):
            return _iso_z(exp)
        return _iso_z(datetime.fromtimestamp(self.clock() + float(exp), timezone.utc))

    def verify(self, h, rec):
        rec.update(kind="unknown", akid=None)
        path = h.path.split("?", 1)[0]
        text = {"Content-Type": "text/plain"}
        if path == self.path:
            rec["kind"] = "container"
            if h.command != "GET":
                rec["reason"] = f"container endpoint needs GET, got {h.command}"
                return Response(405, text, b"Method Not Allowed\n")
            if self.auth_token is not None:
                got = h.headers.get("Authorization")
                if got is None or not hmac.compare_digest(got.encode(),
                                                          self.auth_token.encode()):
                    rec["reason"] = "missing or wrong Authorization token"
                    return Response(401, {"Content-Type": "application/json"}, _json_bytes(
                        {"code": "Unauthorized", "message": "invalid authorization token"}))
            return None
        if path == "/latest/api/token":
            rec["kind"] = "imds-token"
            if h.command != "PUT":
                rec["reason"] = "token request must be PUT"
                return Response(405, text, b"Method Not Allowed\n")
            if h.headers.get("X-Forwarded-For"):
                rec["reason"] = "X-Forwarded-For on a token PUT"
                return Response(403, text, b"Forbidden\n")
            ttl = h.headers.get("X-aws-ec2-metadata-token-ttl-seconds", "")
            if not ttl.isdigit() or not 1 <= int(ttl) <= 21600:
                rec["reason"] = f"bad X-aws-ec2-metadata-token-ttl-seconds {ttl!r}"
                return Response(400, text, b"Bad Request\n")
            return None
        if path.startswith(_IMDS_CREDS):
            rec["kind"] = "imds-role" if path == _IMDS_CREDS else "imds-creds"
            if h.command != "GET":
                return Response(405, text, b"Method Not Allowed\n")
            tok = h.headers.get("X-aws-ec2-metadata-token")
            now = self.clock()
            with self._lock:
                expiry = self.imds_tokens.get(tok) if tok else None
            if expiry is None or expiry < now:
                rec["reason"] = "missing, unknown or expired X-aws-ec2-metadata-token"
                return Response(401, text, b"Unauthorized\n")
            if rec["kind"] == "imds-creds" and path[len(_IMDS_CREDS):] != self.role:
                rec["reason"] = f"unknown role {path[len(_IMDS_CREDS):]!r}"
                return Response(404, text, b"Not Found\n")
            return None
        rec["reason"] = f"no such path {path}"
        return Response(404, text, b"Not Found\n")

    def respond(self, h, rec, kind, args):
        if kind == "500":
            rec["error"] = 500
            return Response(500, {"Content-Type": "application/json"},
                            _json_bytes({"code": "InternalError", "message": "internal error"}))
        if kind != "ok":
            raise ValueError(f"FakeCredsEndpoint: unknown action {kind!r}")
        c = self.creds
        text = {"Content-Type": "text/plain"}
        if rec["kind"] == "imds-token":
            tok = "AQAEA" + secrets.token_urlsafe(40)
            with self._lock:
                if len(self.imds_tokens) >= MAX_REQUESTS:
                    self.imds_tokens.clear()
                self.imds_tokens[tok] = self.clock() + int(h.headers[
                    "X-aws-ec2-metadata-token-ttl-seconds"])
            rec["sent"] = True
            return Response(200, dict(text, **{"X-aws-ec2-metadata-token-ttl-seconds":
                                               h.headers["X-aws-ec2-metadata-token-ttl-seconds"]}),
                            tok.encode())
        if rec["kind"] == "imds-role":
            rec["sent"] = True
            return Response(200, text, self.role.encode())
        rec["akid"] = c["akid"]
        rec["sent"] = True
        if rec["kind"] == "container":
            return Response(200, {"Content-Type": "application/json"}, _json_bytes(
                {"AccessKeyId": c["akid"], "SecretAccessKey": c["secret"],
                 "Token": c.get("token"), "Expiration": self._expiration()}))
        return Response(200, text, json.dumps(
            {"Code": "Success", "LastUpdated": _iso_z(datetime.now(timezone.utc)),
             "Type": "AWS-HMAC", "AccessKeyId": c["akid"], "SecretAccessKey": c["secret"],
             "Token": c.get("token"), "Expiration": self._expiration()}, indent=2).encode())


# =============================================================================================
# AWS STS (Query protocol)
# =============================================================================================

_STS_NS = "https://sts.amazonaws.com/doc/2011-06-15/"
_STS_VERSION = "2011-06-15"
_SESSION_NAME = re.compile(r"[\w+=,.@-]{2,64}", re.ASCII)
_EXTERNAL_ID = re.compile(r"[\w+=,.@:/-]{2,1224}", re.ASCII)
_STS_PARAMS = {
    "AssumeRole": ({"RoleArn", "RoleSessionName"},
                   {"DurationSeconds", "ExternalId", "Policy", "SerialNumber", "TokenCode",
                    "SourceIdentity"}),
    "AssumeRoleWithWebIdentity": ({"RoleArn", "RoleSessionName", "WebIdentityToken"},
                                  {"DurationSeconds", "Policy", "ProviderId"}),
}
# The JSON-protocol front-end errors of _SigV4Verifier, as the Query protocol names them.
_QUERY_AUTH_ERRORS = {
    "MissingAuthenticationTokenException": (403, "MissingAuthenticationToken"),
    "IncompleteSignatureException": (400, "IncompleteSignature"),
    "UnrecognizedClientException": (403, "InvalidClientTokenId"),
    "InvalidSignatureException": (403, "SignatureDoesNotMatch"),
}


def _xml(s):
    return (str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;").replace("'", "&apos;"))


class FakeSTS(_SigV4Verifier, _FakeBase):
    """AWS STS, Query protocol (API 2011-06-15): AssumeRole and AssumeRoleWithWebIdentity.

    FakeSTS(region="us-east-1", credentials=None)
      credentials: list of (akid, secret, token or None) an AssumeRole may be signed with
                   (mutable); credentials this fake issued are accepted too (role chains).
      region, service ("sts"): the scope an AssumeRole signature must carry. The SigV4 checks are
                   FakeEUM's (shared _SigV4Verifier), answered with the Query-protocol codes
                   (MissingAuthenticationToken, IncompleteSignature, InvalidClientTokenId,
                   SignatureDoesNotMatch).
      roles: None (any role ARN) or a collection of the ARNs that may be assumed (else 403
             AccessDenied). external_ids: {role ARN: ExternalId the role requires}.
      web_tokens: collection of the web identity tokens accepted (mutable; else 400
             InvalidIdentityToken). AssumeRoleWithWebIdentity needs no signature (the token is
             the proof; the SDKs send it unsigned): the record's `signed` says whether one came.
      expires_in: seconds the issued credentials live (None: DurationSeconds, else 3600).
      token_suffix: appended to every issued session token (e.g. "&<>" to test XML entities).
    Checks: POST /, Content-Type application/x-www-form-urlencoded, Version 2011-06-15, a known
      Action (400 InvalidAction), required and known parameters only, RoleSessionName
      [\\w+=,.@-]{2,64}, ExternalId [\\w+=,.@:/-]{2,1224}, DurationSeconds 900..43200
      (400 ValidationError).
    Answers: the real XML (<AssumeRoleResponse><AssumeRoleResult><Credentials>… with
      AccessKeyId, SecretAccessKey, SessionToken, Expiration), errors as <ErrorResponse><Error>
      <Type>Sender|Receiver</Type><Code>…</Code><Message>…</Message></Error><RequestId>…,
      Content-Type text/xml.
    Extra record keys: op (the Action), params (dict), signed (an Authorization header came),
      sig_ok, akid (signer), web_token, issued ((akid, secret, token) answered).
    `.issued`: every (akid, secret, token) issued, oldest first — hand it to FakeEUM as its
      `credentials` list (the same list object) so it accepts whatever STS issued.
    Error actions: "denied" 403 AccessDenied; "throttle" 400 Throttling; "500" 500
      InternalFailure (Receiver); "invalid_token" 400 InvalidIdentityToken; "expired_token" 400
      ExpiredTokenException.
    """

    name = "FakeSTS"
    service = "sts"
    signed_required = ("content-type", "host", "x-amz-date")

    def __init__(self, region="us-east-1", credentials=None):
        super().__init__()
        self.region = region
        self.credentials = list(credentials or [])
        self.issued = []
        self.roles = None
        self.external_ids = {}
        self.web_tokens = set()
        self.expires_in = None
        self.token_suffix = ""
        self.expected_host = None
        self.check_host = True
        self.skew_limit = 300

    def _signers(self):
        return list(self.credentials) + list(self.issued)

    # ---- responses ---------------------------------------------------------------------------
    def _error(self, rec, status, code, message, kind="Sender", reason=None):
        rec["error"] = code
        if reason is not None or rec.get("reason") is None:
            rec["reason"] = reason or message
        body = (f'<ErrorResponse xmlns="{_STS_NS}">\n  <Error>\n    <Type>{kind}</Type>\n'
                f"    <Code>{_xml(code)}</Code>\n    <Message>{_xml(message)}</Message>\n"
                f"  </Error>\n  <RequestId>{uuid.uuid4()}</RequestId>\n</ErrorResponse>\n")
        return Response(status, {"Content-Type": "text/xml", "x-amzn-RequestId": str(uuid.uuid4())},
                        body.encode())

    # ---- verification ------------------------------------------------------------------------
    def verify(self, h, rec):
        rec.update(op=None, params=None, signed=False, sig_ok=False, akid=None, web_token=None,
                   issued=None)
        if h.command != "POST" or h.path != "/":
            return self._error(rec, 400, "InvalidAction", "STS takes POST /",
                               reason=f"STS takes POST /, got {h.command} {h.path}")
        ctype = (h.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/x-www-form-urlencoded":
            return self._error(rec, 400, "InvalidAction", "Unsupported Content-Type",
                               reason=f"Content-Type {ctype!r} is not a form")
        try:
            pairs = parse_qsl(rec["body"].decode("utf-8"), keep_blank_values=True,
                              strict_parsing=bool(rec["body"]))
        except (ValueError, UnicodeDecodeError) as e:
            return self._error(rec, 400, "MalformedInput", "Malformed form body",
                               reason=f"body is not a form: {e}")
        params = {}
        for k, v in pairs:
            if k in params:
                return self._error(rec, 400, "ValidationError", f"Duplicate parameter {k}")
            params[k] = v
        rec["params"] = rec["parsed"] = params
        op = params.pop("Action", None)
        rec["op"] = op
        if op not in _STS_PARAMS:
            return self._error(rec, 400, "InvalidAction", f"Could not find operation {op}")
        if params.pop("Version", None) != _STS_VERSION:
            return self._error(rec, 400, "InvalidAction",
                               f"Could not find operation {op} for the version given",
                               reason="Version is not 2011-06-15")
        rec["signed"] = bool(h.headers.get_all("Authorization")) or \
            bool(h.headers.get_all("X-Amz-Security-Token"))
        if op == "AssumeRole":
            try:
                self._verify_signature(h, rec)
            except _Reject as r:
                status, code = _QUERY_AUTH_ERRORS.get(r.etype, (r.status, r.etype))
                return self._error(rec, status, code, r.message, reason=r.reason)
            rec["sig_ok"] = True
        required, optional = _STS_PARAMS[op]
        problems = [f"Value null at '{k[0].lower() + k[1:]}' failed to satisfy constraint: "
                    "Member must not be null" for k in sorted(required - set(params))]
        problems += [f"Unknown parameter {k}" for k in sorted(set(params) - required - optional)]
        name = params.get("RoleSessionName")
        if name is not None and not _SESSION_NAME.fullmatch(name):
            problems.append("Value at 'roleSessionName' failed to satisfy constraint: Member "
                            "must satisfy regular expression pattern: [\\w+=,.@-]*")
        ext = params.get("ExternalId")
        if ext is not None and not _EXTERNAL_ID.fullmatch(ext):
            problems.append("Value at 'externalId' failed to satisfy constraint: Member must "
                            "satisfy regular expression pattern: [\\w+=,.@:/-]*")
        dur = params.get("DurationSeconds")
        if dur is not None and (not dur.isdigit() or not 900 <= int(dur) <= 43200):
            problems.append("Value at 'durationSeconds' failed to satisfy constraint: Member "
                            "must have value between 900 and 43200")
        arn = params.get("RoleArn")
        if arn is not None and not 20 <= len(arn) <= 2048:
            problems.append("Value at 'roleArn' failed to satisfy constraint: Member must have "
                            "length between 20 and 2048")
        if problems:
            n = len(problems)
            return self._error(rec, 400, "ValidationError",
                               f"{n} validation error{'s' if n > 1 else ''} detected: "
                               + "; ".join(problems))
        if op == "AssumeRoleWithWebIdentity":
            rec["web_token"] = params["WebIdentityToken"]
            if params["WebIdentityToken"] not in self.web_tokens:
                return self._error(rec, 400, "InvalidIdentityToken",
                                   "Couldn't verify the web identity token",
                                   reason="unknown web identity token")
        if self.roles is not None and arn not in self.roles:
            return self._error(rec, 403, "AccessDenied",
                               f"User: arn:aws:iam::123456789012:user/caller is not authorized "
                               f"to perform: sts:{op} on resource: {arn}")
        want_ext = self.external_ids.get(arn)
        if op == "AssumeRole" and want_ext is not None and ext != want_ext:
            return self._error(rec, 403, "AccessDenied",
                               f"User is not authorized to perform: sts:AssumeRole on "
                               f"resource: {arn}", reason="wrong or missing ExternalId")
        return None

    # ---- actions -----------------------------------------------------------------------------
    def respond(self, h, rec, kind, args):
        errors = {
            "denied": (403, "AccessDenied", "Not authorized to perform sts:AssumeRole", "Sender"),
            "throttle": (400, "Throttling", "Rate exceeded", "Sender"),
            "500": (500, "InternalFailure", "An internal error occurred", "Receiver"),
            "invalid_token": (400, "InvalidIdentityToken", "Couldn't verify the token",
                              "Sender"),
            "expired_token": (400, "ExpiredTokenException", "Token expired", "Sender"),
        }
        if kind in errors:
            status, code, message, who = errors[kind]
            return self._error(rec, status, code, message, who)
        if kind != "ok":
            raise ValueError(f"FakeSTS: unknown action {kind!r}")
        p, op = rec["params"], rec["op"]
        life = self.expires_in
        if life is None:
            life = int(p.get("DurationSeconds") or 3600)
        akid = "ASIA" + "".join(secrets.choice(string.ascii_uppercase + "234567")
                                for _ in range(16))
        cred = (akid, secrets.token_urlsafe(30)[:40],
                "FwoGZXIvYXdzE" + secrets.token_urlsafe(200) + self.token_suffix)
        with self._lock:
            self.issued.append(cred)
        rec["issued"], rec["sent"] = cred, True
        exp = _iso_z(datetime.fromtimestamp(self.clock() + float(life), timezone.utc))
        role = p["RoleArn"].rsplit("/", 1)[-1]
        extra = ""
        if op == "AssumeRoleWithWebIdentity":
            extra = ("    <SubjectFromWebIdentityToken>system:serviceaccount:otp:telehook"
                     "</SubjectFromWebIdentityToken>\n    <Audience>sts.amazonaws.com</Audience>\n"
                     "    <Provider>arn:aws:iam::123456789012:oidc-provider/oidc.example</Provider>\n")
        body = (f'<{op}Response xmlns="{_STS_NS}">\n  <{op}Result>\n{extra}'
                f"    <AssumedRoleUser>\n      <AssumedRoleId>AROA3XFRBF535PLBIFPI4:"
                f"{_xml(p['RoleSessionName'])}</AssumedRoleId>\n"
                f"      <Arn>arn:aws:sts::123456789012:assumed-role/{_xml(role)}/"
                f"{_xml(p['RoleSessionName'])}</Arn>\n    </AssumedRoleUser>\n"
                f"    <Credentials>\n      <AccessKeyId>{cred[0]}</AccessKeyId>\n"
                f"      <SecretAccessKey>{_xml(cred[1])}</SecretAccessKey>\n"
                f"      <SessionToken>{_xml(cred[2])}</SessionToken>\n"
                f"      <Expiration>{exp}</Expiration>\n    </Credentials>\n"
                f"    <PackedPolicySize>6</PackedPolicySize>\n  </{op}Result>\n"
                f"  <ResponseMetadata>\n    <RequestId>{uuid.uuid4()}</RequestId>\n"
                f"  </ResponseMetadata>\n</{op}Response>\n")
        return Response(200, {"Content-Type": "text/xml", "x-amzn-RequestId": str(uuid.uuid4())},
                        body.encode())


# =============================================================================================
# AWS KMS
# =============================================================================================

_KMS_TYPE = "application/x-amz-json-1.1"
_KMS_TARGET = "TrentService."
_KMS_OPS = ("GenerateDataKey", "Decrypt")
_KMS_ARN = re.compile(r"arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:(key|alias)/(.+)")


class FakeKMS(_SigV4Verifier, _FakeBase):
    """AWS KMS, JSON 1.1 protocol (`TrentService`): GenerateDataKey and Decrypt, with real
    semantics: each key holds a master key (AES-256-GCM); a CiphertextBlob is the key's id, a
    nonce and the sealed data key, so Decrypt opens it only under that key.

    FakeKMS(region="us-east-1", credentials=None)
      credentials: (akid, secret, token or None) accepted (as FakeEUM; default one random key).
      keys: {key id: master key bytes}; one key is made at start: `.key_id` (a UUID), also
            reachable as `.key_arn` and the alias `.alias` ("alias/telehook-dlq").
      denied: key ids (or ARNs/aliases) whose use is refused (400 AccessDeniedException).
      disabled: key ids refused with 400 DisabledException.
    Checks: SigV4 (service "kms", x-amz-target signed), POST /, Content-Type
      application/x-amz-json-1.1, X-Amz-Target TrentService.GenerateDataKey|Decrypt (400
      UnknownOperationException), a JSON object body with known members (400
      ValidationException / SerializationException).
    Errors (400, `__type` and `message`): NotFoundException (unknown key), AccessDeniedException,
      DisabledException, InvalidCiphertextException (a blob that does not open under the key
      it names, or under the KeyId given), IncorrectKeyException (KeyId not the blob's key).
    Extra record keys: op, sig_ok, akid, key (the resolved key id), json (the parsed body).
    Error actions: "500" 500 KMSInternalException; "throttle" 400 ThrottlingException.
    """

    name = "FakeKMS"
    json_type = _KMS_TYPE
    service = "kms"
    signed_required = ("content-type", "host", "x-amz-date", "x-amz-target")
    account = "111122223333"

    def __init__(self, region="us-east-1", credentials=None):
        super().__init__()
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        self._aesgcm = AESGCM
        self.region = region
        if credentials is None:
            credentials = [("AKIA" + "".join(secrets.choice(string.ascii_uppercase + "234567")
                                              for _ in range(16)),
                            secrets.token_urlsafe(30)[:40], None)]
        self.credentials = list(credentials)
        self.expected_host = None
        self.check_host = True
        self.skew_limit = 300
        self.keys = {}
        self.key_id = self.new_key()
        self.alias = "alias/telehook-dlq"
        self.aliases = {self.alias: self.key_id}
        self.denied = set()
        self.disabled = set()
        self.issued = []  # every plaintext data key handed out (tests grep files/logs for them)

    def new_key(self):
        kid = str(uuid.uuid4())
        with self._lock:
            self.keys[kid] = secrets.token_bytes(32)
        return kid

    def arn(self, kid):
        return f"arn:aws:kms:{self.region}:{self.account}:key/{kid}"

    @property
    def key_arn(self):
        return self.arn(self.key_id)

    @property
    def credential(self):
        return tuple(self.credentials[0])

    def _resolve(self, ref):
        """A key id, key ARN, alias or alias ARN → the key id, or None."""
        m = _KMS_ARN.fullmatch(ref)
        if m:
            ref = m.group(2) if m.group(1) == "key" else "alias/" + m.group(2)
        if ref.startswith("alias/"):
            ref = self.aliases.get(ref)
        return ref if ref in self.keys else None

    # ---- responses ---------------------------------------------------------------------------
    def _error(self, rec, status, etype, message, reason=None):
        rec["error"] = etype
        rec["reason"] = reason or message
        return Response(status, {"Content-Type": _KMS_TYPE, "x-amzn-RequestId": str(uuid.uuid4())},
                        _json_bytes({"__type": etype, "message": message}))

    # ---- verification ------------------------------------------------------------------------
    def verify(self, h, rec):
        rec.update(op=None, sig_ok=False, akid=None, signed_headers=None, key=None, json=None)
        try:
            self._verify_signature(h, rec)
        except _Reject as r:
            return self._error(rec, r.status, r.etype, r.message, r.reason)
        rec["sig_ok"] = True
        if h.command != "POST" or h.path != "/":
            return self._error(rec, 400, "UnknownOperationException", "",
                               f"JSON protocol requests are POST /, got {h.command} {h.path}")
        ctype = h.headers.get_all("Content-Type") or []
        if ctype != [_KMS_TYPE]:
            return self._error(rec, 400, "UnknownOperationException", "",
                               f"Content-Type must be {_KMS_TYPE}, got {ctype}")
        target = h.headers.get_all("X-Amz-Target") or []
        op = target[0][len(_KMS_TARGET):] if len(target) == 1 and \
            target[0].startswith(_KMS_TARGET) else None
        if op not in _KMS_OPS:
            return self._error(rec, 400, "UnknownOperationException", "",
                               f"X-Amz-Target {target} is not GenerateDataKey / Decrypt")
        rec["op"] = op
        try:
            body = _strict_json(rec["body"])
        except (ValueError, UnicodeDecodeError) as e:
            return self._error(rec, 400, "SerializationException", "", f"body is not JSON: {e}")
        if not isinstance(body, dict):
            return self._error(rec, 400, "SerializationException", "", "body is not an object")
        rec["json"] = rec["parsed"] = body
        allowed = {"GenerateDataKey": {"KeyId", "KeySpec", "NumberOfBytes", "EncryptionContext",
                                       "GrantTokens", "DryRun"},
                   "Decrypt": {"CiphertextBlob", "KeyId", "EncryptionContext", "GrantTokens",
                               "EncryptionAlgorithm", "DryRun"}}[op]
        unknown = set(body) - allowed
        if unknown:
            return self._error(rec, 400, "SerializationException", "",
                               f"unknown members {sorted(unknown)}")
        for k in ("KeyId", "KeySpec", "CiphertextBlob"):
            if k in body and not (isinstance(body[k], str) and 1 <= len(body[k]) <= 6144):
                return self._error(rec, 400, "ValidationException",
                                   f"1 validation error detected: Value at '{k[0].lower()}"
                                   f"{k[1:]}' failed to satisfy constraint")
        if op == "GenerateDataKey":
            if "KeyId" not in body:
                return self._error(rec, 400, "ValidationException", "KeyId is required")
            if body.get("KeySpec") != "AES_256":
                return self._error(rec, 400, "ValidationException",
                                   "KeySpec must be AES_256 (this fake)")
        elif "CiphertextBlob" not in body:
            return self._error(rec, 400, "ValidationException", "CiphertextBlob is required")
        return None

    def _check_key(self, rec, ref):
        kid = self._resolve(ref)
        if kid is None:
            return None, self._error(rec, 400, "NotFoundException",
                                     f"Key '{self.arn(ref) if '/' not in ref else ref}' "
                                     "does not exist")
        rec["key"] = kid
        if {kid, ref, self.arn(kid)} & self.denied:
            return None, self._error(
                rec, 400, "AccessDeniedException",
                f"User: arn:aws:iam::{self.account}:user/telehook is not authorized to perform: "
                f"kms:{rec['op']} on resource: {self.arn(kid)} because no identity-based policy "
                "allows the kms:" + rec["op"] + " action")
        if {kid, ref, self.arn(kid)} & self.disabled:
            return None, self._error(rec, 400, "DisabledException",
                                     f"{self.arn(kid)} is disabled.")
        return kid, None

    def respond(self, h, rec, kind, args):
        if kind == "500":
            return self._error(rec, 500, "KMSInternalException", "internal error")
        if kind == "throttle":
            return self._error(rec, 400, "ThrottlingException", "Rate exceeded")
        if kind != "ok":
            raise ValueError(f"FakeKMS: unknown action {kind!r}")
        body = rec["json"]
        if rec["op"] == "GenerateDataKey":
            kid, err = self._check_key(rec, body["KeyId"])
            if err:
                return err
            data_key = secrets.token_bytes(32)
            nonce = secrets.token_bytes(12)
            sealed = self._aesgcm(self.keys[kid]).encrypt(nonce, data_key, kid.encode())
            blob = b"\x01" + kid.encode() + b"\x00" + nonce + sealed
            with self._lock:
                self.issued.append(data_key)
            rec["sent"] = True
            return Response(200, {"Content-Type": _KMS_TYPE},
                            _json_bytes({"CiphertextBlob": base64.b64encode(blob).decode(),
                                         "KeyId": self.arn(kid),
                                         "Plaintext": base64.b64encode(data_key).decode()}))
        try:
            blob = base64.b64decode(body["CiphertextBlob"], validate=True)
        except ValueError:
            return self._error(rec, 400, "SerializationException", "",
                               "CiphertextBlob is not base64")
        bad = self._error(rec, 400, "InvalidCiphertextException", "")
        head, sep, rest = blob[1:].partition(b"\x00")
        if blob[:1] != b"\x01" or not sep or len(rest) < 12 + 16:
            return bad
        blob_kid = head.decode("ascii", "replace")
        if "KeyId" in body:
            kid, err = self._check_key(rec, body["KeyId"])
            if err:
                return err
            if kid != blob_kid:
                # KMS: the ciphertext was not made under the KeyId given
                return self._error(rec, 400, "IncorrectKeyException",
                                   "The key ID in the request does not identify a CMK that can "
                                   "perform this operation.")
        if blob_kid not in self.keys:
            return bad
        kid, err = self._check_key(rec, blob_kid)
        if err:
            return err
        try:
            data_key = self._aesgcm(self.keys[kid]).decrypt(rest[:12], rest[12:], kid.encode())
        except Exception:
            return bad
        rec["sent"] = True
        return Response(200, {"Content-Type": _KMS_TYPE},
                        _json_bytes({"EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
                                     "KeyId": self.arn(kid),
                                     "Plaintext": base64.b64encode(data_key).decode()}))


# =============================================================================================
# Customer webhook
# =============================================================================================

class FakeWebhook(_FakeBase):
    """A customer's own gateway, checking telehook's webhook signature.

    FakeWebhook(secret=None, tolerance=300)
      secret: str or bytes HMAC key (random by default); tolerance: allowed |now - t| seconds.
      Header: X-Telehook-Signature: t=<unix seconds>,v1=<lowercase hex HMAC-SHA256(secret,
              "<t>." + raw body)> (several v1= entries allowed: any may match).
    Extra record keys: sig_ok, json (parsed body), id (the "wh-<uuid>" answered).
    Error actions: "500" (500 JSON), "400" (400 JSON), "429" (429 with Retry-After: 1).
    """

    name = "FakeWebhook"

    def __init__(self, secret=None, tolerance=300):
        super().__init__()
        self.secret = secret if secret is not None else secrets.token_urlsafe(32)
        self.tolerance = tolerance

    def _err(self, rec, status, message, reason=None):
        rec["reason"] = reason or message
        rec["error"] = status
        return Response(status, {"Content-Type": "application/json"},
                        _json_bytes({"error": message}))

    def verify(self, h, rec):
        rec.update(sig_ok=False, id=None, json=None)
        if h.command != "POST":
            return self._err(rec, 405, "method not allowed")
        header = h.headers.get_all("X-Telehook-Signature") or []
        if len(header) != 1:
            return self._err(rec, 401, "missing signature",
                             f"{len(header)} X-Telehook-Signature headers")
        t, sigs = None, []
        for item in header[0].split(","):
            k, eq, v = item.strip().partition("=")
            if k == "t" and eq and t is None:
                t = v
            elif k == "v1" and eq:
                sigs.append(v)
        if t is None or not t.isdigit() or not sigs:
            return self._err(rec, 401, "malformed signature", f"malformed header {header[0]!r}")
        if abs(self.clock() - int(t)) > self.tolerance:
            return self._err(rec, 401, "timestamp outside tolerance",
                             f"t={t} is more than {self.tolerance}s from now")
        key = self.secret.encode() if isinstance(self.secret, str) else self.secret
        want = hmac.new(key, t.encode() + b"." + rec["body"], hashlib.sha256).hexdigest()
        if not any(hmac.compare_digest(want.encode(), s.encode()) for s in sigs):
            return self._err(rec, 401, "bad signature", "no v1 signature matches")
        rec["sig_ok"] = True
        ctype = (h.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/json":
            return self._err(rec, 415, "unsupported media type", f"Content-Type {ctype!r}")
        try:
            body = _strict_json(rec["body"])
        except (ValueError, UnicodeDecodeError) as e:
            return self._err(rec, 400, "invalid JSON", f"body is not JSON: {e}")
        if not isinstance(body, dict):
            return self._err(rec, 400, "body must be a JSON object")
        rec["json"] = rec["parsed"] = body
        return None

    def respond(self, h, rec, kind, args):
        if kind == "500":
            return self._err(rec, 500, "internal error", "scripted 500")
        if kind == "400":
            return self._err(rec, 400, "bad request", "scripted 400")
        if kind == "429":
            resp = self._err(rec, 429, "slow down", "scripted 429")
            return Response(429, dict(resp.headers, **{"Retry-After": "1"}), resp.body)
        if kind != "ok":
            raise ValueError(f"FakeWebhook: unknown action {kind!r}")
        rec["id"] = "wh-" + str(uuid.uuid4())
        rec["sent"] = True
        return Response(200, {"Content-Type": "application/json"}, _json_bytes({"id": rec["id"]}))
