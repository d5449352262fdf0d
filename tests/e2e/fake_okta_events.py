"""A fake Okta event hook sender: what Okta does once an event hook points at telehook.

- verify(): the one-time verification, a GET with X-Okta-Verification-Challenge, checking the
  answer echoes the challenge as {"verification": ...} (Okta refuses the hook otherwise);
- deliver(events): a POST of one batch, {"eventType": "com.okta.event_hook", "data": {"events":
  [...]}}, retried once on a timeout or a 5xx as Okta does;
- mfa_event() / enroll_event(): System Log events shaped as Okta's (uuid, published, eventType,
  actor, outcome, debugContext.debugData.factor, target[]).
Only loopback; every call is bounded in time."""
import http.client
import json
import secrets
import uuid
from datetime import datetime, timezone

PATH = "/v1/okta/events"


def iso(ms):
    dt = datetime.fromtimestamp(ms / 1000, timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def event(event_type, user_id, published_ms, factor="SMS_FACTOR", result="SUCCESS", uid=None):
    return {
        "uuid": uid or str(uuid.uuid4()),
        "published": iso(published_ms),
        "eventType": event_type,
        "version": "0",
        "severity": "INFO",
        "legacyEventType": "core.user.factor.attempt_success",
        "displayMessage": "Authentication of user via MFA",
        "actor": {"id": user_id, "type": "User", "alternateId": "pat@example.com",
                  "displayName": "Pat Example", "detailEntry": None},
        "client": {"userAgent": {"rawUserAgent": "Mozilla/5.0", "os": "Mac OS X",
                                 "browser": "CHROME"}, "zone": "null", "device": "Computer",
                   "ipAddress": "192.0.2.10"},
        "outcome": {"result": result, "reason": None},
        "transaction": {"type": "WEB", "id": "Yx" + secrets.token_hex(6), "detail": {}},
        "debugContext": {"debugData": {"factor": factor, "requestId": secrets.token_hex(8),
                                       "requestUri": "/idp/idx/challenge/answer"}},
        "authenticationContext": {"authenticationStep": 0, "externalSessionId": "102" +
                                  secrets.token_hex(8)},
        "securityContext": {},
        "target": [{"id": "mbl" + secrets.token_hex(6), "type": "AuthenticatorEnrollment",
                    "alternateId": "unknown", "displayName": "Phone", "detailEntry": None}],
    }


def mfa_event(user_id, published_ms, factor="SMS_FACTOR", **kw):
    return event("user.authentication.auth_via_mfa", user_id, published_ms, factor, **kw)


def enroll_event(user_id, published_ms, factor="sms", **kw):
    return event("user.mfa.factor.activate", user_id, published_ms, factor, **kw)


class Sender:
    def __init__(self, port, header="Authorization", secret=None, timeout=5):
        self.port, self.header, self.secret, self.timeout = port, header, secret, timeout
        self.attempts = 0

    def _request(self, method, body=None, headers=None):
        h = dict(headers or {})
        if self.secret is not None:
            h[self.header] = self.secret
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        try:
            conn.request(method, PATH, body=body, headers=h)
            r = conn.getresponse()
            return r.status, r.read()
        finally:
            conn.close()

    def verify(self, challenge=None):
        challenge = challenge or secrets.token_urlsafe(24)
        status, raw = self._request("GET", headers={"X-Okta-Verification-Challenge": challenge})
        return status, raw, challenge

    def deliver(self, events, retries=1):
        """POSTs one batch; retried (the same body) on a 5xx or a timeout, as Okta does."""
        body = json.dumps({
            "eventType": "com.okta.event_hook", "eventTypeVersion": "1.0",
            "cloudEventsVersion": "0.1", "source": "https://example.okta.com/api/v1/eventHooks/"
            "who8" + secrets.token_hex(4), "eventId": str(uuid.uuid4()),
            "data": {"events": events}, "eventTime": iso(events[0]["_ms"]) if events and
            "_ms" in events[0] else "2026-12-05T00:00:00.000Z",
            "contentType": "application/json"})
        status = None
        for _ in range(retries + 1):
            self.attempts += 1
            try:
                status, raw = self._request("POST", body, {"Content-Type": "application/json"})
            except (TimeoutError, OSError):
                continue
            if status < 500:
                return status, raw
        return status, b""
