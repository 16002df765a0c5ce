"""A real `postern serve` with a tenant, and the requests the fault tests repeat before,
during and after a fault: SMTP DATA, inbox creation, a send, and row counts."""

from __future__ import annotations

import base64
import smtplib
import socket

import httpx

from postern.core import migrations
from postern.core.db import database, open_database
from postern.core.models import Attachment, AuditEvent, Inbox, Message, Thread
from support.server import Server, kill_tree, wait_for
from support.world import make_tenant

MAIL = b"Subject: during the fault\r\nMessage-ID: <fault-1@example.org>\r\n\r\nhello\r\n"
SERVICES = ("api", "demo-sleeper", "dns", "outbox", "smtp", "webhooks")
ATTACHMENT = {"filename": "a.txt", "content_type": "text/plain", "content": base64.b64encode(b"hi").decode()}


def prepare(db_url: str) -> str:
    """Migrate the test database and return an agent key allowed to do everything."""
    open_database(db_url)
    with database.connection_context():
        migrations.upgrade()
        enrolled = make_tenant("acme").agent_key(handle="support", max_mailboxes=10)
    database.close()
    return enrolled.agent_key


def start(env: dict, tmp_path, key: str, config: str = "") -> Server:
    server = Server(env, tmp_path, config=lambda _: config)
    server.key = key
    # Every service running and past its start-up (a fault during start-up is another test).
    wait_for(lambda: (h := server.health()) and _all_running(h), timeout=60)
    wait_for(lambda: _accepts(server.smtp_port) and _accepts(server.dns_port), timeout=60)
    return server


def _all_running(health: dict) -> bool:
    return {s["name"]: s["state"] for s in health["services"]} == dict.fromkeys(SERVICES, "running")


def stop(server: Server) -> None:
    kill_tree(server)
    print(server.output()[-20000:])  # shown by pytest when the test failed


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def api(server: Server, method: str, path: str, **kwargs) -> httpx.Response:
    headers = {"Authorization": f"Bearer {server.key}"}
    return httpx.request(method, f"{server.url}{path}", headers=headers, timeout=60, **kwargs)


def smtp_data(server: Server, rcpt: str, raw: bytes = MAIL) -> tuple[int, int, str]:
    """One SMTP transaction; returns (RCPT code, DATA code, DATA text)."""
    with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=60) as client:
        client.ehlo()
        client.mail("alice@example.org")
        rcpt_code, _ = client.rcpt(rcpt)
        if rcpt_code != 250:
            return rcpt_code, 0, ""
        data_code, text = client.data(raw)
        return rcpt_code, data_code, text.decode()


def send_body(subject: str) -> dict:
    return {"to": ["bob@example.org"], "subject": subject, "text": "t", "attachments": [ATTACHMENT]}


def counts(db_url: str) -> dict[str, int]:
    """Row counts read through a fresh connection of our own."""
    open_database(db_url)
    try:
        with database.connection_context():
            return {
                "inboxes": Inbox.select().count(),
                "messages": Message.select().count(),
                "threads": Thread.select().count(),
                "attachments": Attachment.select().count(),
                "inbox_creates": AuditEvent.select().where(AuditEvent.action == "inbox.create").count(),
                "sends": AuditEvent.select().where(AuditEvent.action == "message.send").count(),
            }
    finally:
        database.close()


def assert_unavailable(resp: httpx.Response, code: str) -> None:
    assert resp.status_code == 503, resp.text
    assert int(resp.headers["Retry-After"]) >= 1
    assert resp.json()["error"]["code"] == code, resp.text


def after_fault(before: dict[str, int]) -> dict[str, int]:
    """The counts once the requests the fault tests repeat have succeeded: one SMTP
    message, one inbox, one send with an attachment (each new message in a new thread)."""
    return {
        **before,
        "inboxes": before["inboxes"] + 1,
        "messages": before["messages"] + 2,
        "threads": before["threads"] + 2,
        "attachments": before["attachments"] + 1,
        "inbox_creates": before["inbox_creates"] + 1,
        "sends": before["sends"] + 1,
    }
