"""Run by tests/test_client_boundary.py in a fresh interpreter: the client with every
server package blocked, against a real `postern serve` over HTTP and SMTP.

    python [-S] -c "$(cat client_alone.py)" '{"url", "key", "smtp_port", "inbox", "path": [...], "mock"}'

Prints one JSON line of what it saw. With ``mock``, the blocker is then lifted and mock
mode is reached through ``postern.testing``, the way a developer with the server
installed reaches it now.
"""

import importlib.abc
import json
import sys

ARGS = json.loads(sys.argv[1])
sys.path[:0] = ARGS["path"]
SERVER = (
    "postern.core", "postern.api", "postern.plugins", "postern.mcp", "postern.cli", "postern.server",
    "postern.supervisor", "postern.testing",
    "falcon", "peewee", "gunicorn", "aiosmtpd", "dnslib", "pluggy", "psycopg2",
)  # fmt: skip


def server_module(name: str) -> bool:
    return any(name == blocked or name.startswith(blocked + ".") for blocked in SERVER)


class BlockServer(importlib.abc.MetaPathFinder):
    attempts: list = []

    def find_spec(self, name, path, target=None):
        if server_module(name):
            self.attempts.append(name)
            raise ImportError(f"{name} is blocked: the client must not need the server")
        return None


blocker = BlockServer()
sys.meta_path.insert(0, blocker)
assert not [name for name in sys.modules if server_module(name)], "loaded before the blocker"

import base64  # noqa: E402
import hashlib  # noqa: E402
import hmac  # noqa: E402
import smtplib  # noqa: E402
import time  # noqa: E402

import postern.client  # noqa: E402
from postern.client import Postern, errors, verify_webhook  # noqa: E402

seen = {"client_file": postern.client.__file__}
with Postern(api_key=ARGS["key"], base_url=ARGS["url"]) as client:
    seen["agent"] = client.me().agent_handle
    inbox = client.inboxes.create(ARGS["inbox"])
    start = client.messages.wait(inbox.id, timeout=0)
    with smtplib.SMTP("127.0.0.1", ARGS["smtp_port"], timeout=60) as smtp:
        raw = f"From: ann@example.org\r\nTo: {inbox.address}\r\nSubject: over SMTP\r\n\r\nhello\r\n"
        smtp.sendmail("ann@example.org", [inbox.address], raw.encode())
    got = client.messages.wait(inbox.id, after=start.cursor, timeout=60)
    seen["waited"] = [m.subject for m in got.messages]
    message = got.messages[0]
    seen["raw_has_subject"] = b"Subject: over SMTP" in client.download(client.messages.raw_link(inbox.id, message.id))
    reply = client.messages.reply(inbox.id, message.id, text="thanks")
    seen["thread"] = [m.id for m in client.threads.get(inbox.id, message.thread_id).messages] == [message.id, reply.id]
    try:
        client.inboxes.get("inb_doesnotexist")
    except errors.NotFound as exc:
        seen["not_found"] = exc.code
try:
    Postern(api_key="pk_agent_wrong", base_url=ARGS["url"]).me()
except errors.AuthenticationFailed as exc:
    seen["bad_key"] = exc.status
try:
    Postern(base_url="mock")
except ValueError as exc:
    seen["old_mock_flag"] = str(exc)
secret = base64.b64encode(b"k" * 32).decode()
stamp, body = str(int(time.time())), b'{"type": "message.received"}'
signature = base64.b64encode(hmac.new(b"k" * 32, b"msg_1." + stamp.encode() + b"." + body, hashlib.sha256).digest())
headers = {"webhook-id": "msg_1", "webhook-timestamp": stamp, "webhook-signature": "v1," + signature.decode()}
seen["webhook"] = verify_webhook(body, headers, "whsec_" + secret)["type"]
seen["server_modules"] = sorted(name for name in sys.modules if server_module(name))
seen["blocked_attempts"] = sorted(set(BlockServer.attempts))

if ARGS["mock"]:
    sys.meta_path.remove(blocker)
    from postern.testing import mock_client  # noqa: E402

    offline = mock_client()
    seen["mock_same_class"] = type(offline) is Postern
    box = offline.inboxes.create("support")
    cursor = offline.messages.wait(box.id, timeout=0).cursor
    offline.mock.deliver(box.address, subject="Your code", text="123456")
    seen["mock_waited"] = [m.subject for m in offline.messages.wait(box.id, after=cursor, timeout=30).messages]
print(json.dumps(seen))
