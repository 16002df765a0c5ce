"""A local endpoint that speaks the ACS email REST protocol over TLS, checking what Azure
checks, for the real ``azure-communication-email`` SDK to talk to.

What it checks, as Azure documents it (learn.microsoft.com/rest/api/communication/
authentication, and the SDK 1.1.0 source: ``_shared/policy.py``, ``_operations``):
- ``Authorization: HMAC-SHA256 SignedHeaders=x-ms-date;host;x-ms-content-sha256&Signature=S``
  where S = base64(HMAC-SHA256(base64decode(key), "VERB\\npath?query\\nDATE;HOST;HASH"));
  ``x-ms-date`` within 15 minutes; ``x-ms-content-sha256`` = base64(SHA-256(body)).
  Anything wrong: 401 with ACS's ``{"error": {"code": "Denied", ...}}``.
- ``api-version=2025-09-01`` on every request; ``POST /emails:send`` with a JSON
  ``EmailMessage`` (senderAddress, recipients.to/cc/bcc of {address, displayName},
  content.subject + plainText/html, attachments {name, contentType, contentInBase64},
  headers, replyTo, userEngagementTrackingDisabled) and no other keys: else 400.
- ``202`` with ``Operation-Location: {endpoint}/emails/operations/{id}?api-version=…`` and
  body ``{"id", "status": "Running"}``; the id is the ``Operation-Id`` header when given.
  ``GET`` of that location answers ``Running`` until the operation ends ``Succeeded`` or
  ``Failed`` (with ``error``); an unknown id is 404.
Not Azure's documented behaviour but this endpoint's choices, for tests to steer: a
repeated ``Operation-Id`` is 409 and sends nothing; a sender outside ``senders`` is 400
``InvalidSenderUserName``; ``script`` answers the next sends with given statuses
(e.g. 429 with Retry-After); ``hang`` stalls before (or after) taking a send.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import email.utils
import hashlib
import hmac
import json
import ssl
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

API_VERSION = "2025-09-01"
PEOPLE = ("to", "cc", "bcc")
MESSAGE_KEYS = {
    "senderAddress",
    "recipients",
    "content",
    "attachments",
    "headers",
    "replyTo",
    "userEngagementTrackingDisabled",
}


class AcsEndpoint:
    """Run with ``start(ca)``; ``sends`` holds every accepted message body."""

    def __init__(self, access_key: bytes, senders: set[str]):
        self.key = base64.b64encode(access_key).decode()
        self.senders = {s.lower() for s in senders}
        self.sends: list[dict] = []
        self.operations: dict[str, dict] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path?query) that passed the checks
        self.refused: list[str] = []  # why requests were refused
        self.script: list[tuple[int, dict, dict]] = []  # answers for the next sends
        self.hang: str | None = None  # "before" (answer nothing) or "after" (take it, answer late)
        self.polls_before_done = 1
        self.outcome: tuple[str, dict | None] = ("Succeeded", None)
        self.release = threading.Event()
        self.lock = threading.Lock()

    def start(self, ca) -> None:
        cert = ca.issue_cert("127.0.0.1")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        cert.configure_cert(context)
        endpoint = self

        class Handler(_Handler):
            acs = endpoint

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


class _Handler(BaseHTTPRequestHandler):
    acs: AcsEndpoint
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def do_POST(self) -> None:
        self._serve()

    def do_GET(self) -> None:
        self._serve()

    def _serve(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        acs = self.acs
        if acs.hang == "before":
            acs.release.wait(30)
            return
        url = urlsplit(self.path)
        problem = self._signature_problem(body)
        if problem:
            acs.refused.append(problem)
            return self._error(401, "Denied", "Denied by the resource provider.")
        if parse_qs(url.query).get("api-version") != [API_VERSION]:
            acs.refused.append(f"api-version {url.query}")
            return self._error(400, "InvalidApiVersion", f"api-version must be {API_VERSION}")
        with acs.lock:
            acs.requests.append((self.command, self.path))
        if self.command == "POST" and url.path == "/emails:send":
            return self._send(body)
        if self.command == "GET" and url.path.startswith("/emails/operations/"):
            return self._status(url.path.rsplit("/", 1)[1])
        self._error(404, "NotFound", "no such resource")

    def _signature_problem(self, body: bytes) -> str | None:
        date, digest = self.headers.get("x-ms-date", ""), self.headers.get("x-ms-content-sha256", "")
        auth = self.headers.get("Authorization", "")
        prefix = "HMAC-SHA256 SignedHeaders=x-ms-date;host;x-ms-content-sha256&Signature="
        if not auth.startswith(prefix):
            return "no HMAC-SHA256 Authorization"
        try:
            sent_at = email.utils.parsedate_to_datetime(date)
        except (TypeError, ValueError):
            return "bad x-ms-date"
        if abs((dt.datetime.now(dt.UTC) - sent_at).total_seconds()) > 900:
            return "x-ms-date more than 15 minutes off"
        if digest != base64.b64encode(hashlib.sha256(body).digest()).decode():
            return "x-ms-content-sha256 does not match the body"
        to_sign = f"{self.command}\n{self.path}\n{date};{self.headers.get('Host', '')};{digest}"
        expected = hmac.new(base64.b64decode(self.acs.key), to_sign.encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(auth[len(prefix) :], base64.b64encode(expected).decode()):
            return "signature does not match"
        return None

    def _send(self, raw: bytes) -> None:
        acs = self.acs
        if self.headers.get_content_type() != "application/json":
            return self._error(415, "UnsupportedMediaType", "JSON only")
        try:
            message = json.loads(raw)
            shape = _shape_problem(message)
        except ValueError:
            shape = "body is not JSON"
        if shape:
            acs.refused.append(shape)
            return self._error(400, "BadRequest", shape)
        with acs.lock:
            if acs.script:
                status, headers, error = acs.script.pop(0)
                return self._error(status, error["code"], error["message"], headers)
            if message["senderAddress"].lower() not in acs.senders:
                return self._error(400, "InvalidSenderUserName", "Invalid email sender username.")
            operation = self.headers.get("Operation-Id") or str(uuid.uuid4())
            if operation in acs.operations:
                return self._error(409, "Conflict", f"operation {operation} already exists")
            acs.operations[operation] = {"polls": acs.polls_before_done, "outcome": acs.outcome}
            acs.sends.append(message)
        if acs.hang == "after":
            acs.release.wait(30)
            return
        location = f"https://{self.headers['Host']}/emails/operations/{operation}?api-version={API_VERSION}"
        self._json(202, {"id": operation, "status": "Running"}, {"Operation-Location": location, "Retry-After": "0"})

    def _status(self, operation: str) -> None:
        acs = self.acs
        with acs.lock:
            state = acs.operations.get(operation)
            if state is None:
                return self._error(404, "NotFound", f"no operation {operation}")
            if state["polls"] > 0:
                state["polls"] -= 1
                return self._json(200, {"id": operation, "status": "Running"}, {"Retry-After": "0"})
        status, error = state["outcome"]
        self._json(200, {"id": operation, "status": status, **({"error": error} if error else {})})

    def _error(self, status: int, code: str, message: str, headers: dict | None = None) -> None:
        self._json(status, {"error": {"code": code, "message": message}}, headers or {})

    def _json(self, status: int, data: dict, headers: dict | None = None) -> None:
        payload = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)


def _shape_problem(message) -> str | None:
    if not isinstance(message, dict) or set(message) - MESSAGE_KEYS:
        return f"unknown keys {sorted(set(message) - MESSAGE_KEYS)}"
    if not isinstance(message.get("senderAddress"), str):
        return "senderAddress missing"
    recipients = message.get("recipients")
    if (
        not isinstance(recipients, dict)
        or set(recipients) - set(PEOPLE)
        or not recipients.get("to", []) + recipients.get("cc", []) + recipients.get("bcc", [])
    ):
        return "recipients must hold to, cc or bcc"
    people = [p for kind in PEOPLE for p in recipients.get(kind, [])] + message.get("replyTo", [])
    if not all(
        isinstance(p, dict) and set(p) <= {"address", "displayName"} and "@" in p.get("address", "") for p in people
    ):
        return "every recipient is {address, displayName}"
    content = message.get("content")
    if not isinstance(content, dict) or not isinstance(content.get("subject"), str):
        return "content.subject missing"
    if set(content) - {"subject", "plainText", "html"} or not (content.get("plainText") or content.get("html")):
        return "content needs plainText or html"
    for att in message.get("attachments", []):
        if set(att) - {"name", "contentType", "contentInBase64", "contentId"}:
            return "bad attachment keys"
        try:
            base64.b64decode(att["contentInBase64"], validate=True)
        except (KeyError, binascii.Error):
            return "attachment content is not base64"
    headers = message.get("headers", {})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
        return "headers must map strings to strings"
    if not isinstance(message.get("userEngagementTrackingDisabled", False), bool):
        return "userEngagementTrackingDisabled must be a boolean"
    return None
