"""Mock mode's server: a real Postern core and API in this process, for offline tests.

No fixture data is faked: the mock world is Postern's own core and API on a throwaway
SQLite database, served to a normal ``postern.client.Postern`` through
``InProcessTransport`` (no sockets). Keys, scopes, quotas, errors and ``wait`` behave
exactly as on a server, because they are the server's own code. What mock mode adds is
a fixed cast, so agent developers' tests can use known keys without minting any:

- ``MOCK_AGENT_KEY``: an agent of tenant ``mock`` with every scope, from an enrollment
  key of its own with 10 mailboxes; ``postern.testing.mock_client()`` uses it when no
  key is given.
- ``MOCK_READ_ONLY_KEY``: an agent of the same tenant that may only read.
- ``MOCK_ENROLLMENT_TOKEN``: an enrollment key of tenant ``mock`` (every scope,
  3 mailboxes, any number of redemptions), for ``bootstrap.enrolled``. As everywhere,
  the mailbox quota belongs to the enrollment key: every agent redeemed from that key shares it.
- ``world().foreign_inbox_id``: an inbox of another tenant, which a mock agent must
  not see (404), as on a real server.

``world().deliver(...)`` brings mail in through the same ingest path the SMTP listener
uses, so a parked ``wait`` returns it. Mail sent to addresses outside the world is
captured by the local outbox, never sent anywhere. The keys are well-formed but exist
only in the mock database: they open nothing on a real server.

One world per process (the core keeps one database per process); ``reset()`` starts
a fresh one and ``shutdown()`` removes it. This module is part of the server package
(it imports the core and the API); ``postern.client`` never imports it.
"""

from __future__ import annotations

import atexit
import datetime as dt
import os
import shutil
import tempfile
import threading
from email.message import EmailMessage
from email.utils import formataddr, formatdate, make_msgid

from postern.api import create_app
from postern.client import Postern
from postern.core import enrollment, keys, migrations, tenancy
from postern.core.config import config_from_mapping
from postern.core.db import database, write_transaction
from postern.core.mail.ingest import ingest
from postern.core.models import AgentKey, EnrollmentKey
from postern.core.principal import CLI, SCOPES, RequestInfo
from postern.core.runtime import build_postern
from postern.testing.inprocess import InProcessTransport

SHM = "/dev/shm"  # noqa: S108  (only ever a parent for mkdtemp)
MOCK_BASE_URL = "http://mock.postern.invalid"
MOCK_DOMAIN = "agents.localhost"
TENANT = "mock"
OTHER_TENANT = "elsewhere"
MAILBOXES = 10
ENROLLMENT_MAILBOXES = 3


def _fixed_key(kind: str, name: str) -> str:
    """A well-formed, documented key: fixed text in the body, a valid checksum."""
    return keys.with_checksum(kind, (name + "0" * keys.BODY_LENGTH)[: keys.BODY_LENGTH])


MOCK_AGENT_KEY = _fixed_key("agent", "MockAgentKeyForOfflineTestsOnly")
MOCK_READ_ONLY_KEY = _fixed_key("agent", "MockReadOnlyAgentKeyForOfflineTests")
MOCK_ENROLLMENT_TOKEN = _fixed_key("enroll", "MockEnrollmentKeyForOfflineTestsOnly")

_lock = threading.Lock()
_world: MockWorld | None = None


def world() -> MockWorld:
    """The process's mock world, built on first use."""
    global _world
    with _lock:
        if _world is None:
            _world = MockWorld()
        return _world


def reset() -> MockWorld:
    """Discard every inbox, message and key made so far; return a fresh world."""
    shutdown()
    return world()


def shutdown() -> None:
    """Close the world and delete its database (the next mock client builds a new one)."""
    global _world
    with _lock:
        if _world is not None:
            _world.close()
            _world = None


class MockWorld:
    def __init__(self):
        # /dev/shm keeps the database in memory where Linux offers it; mkdtemp makes a
        # private (0700), unpredictable directory inside it.
        parent = SHM if os.path.isdir(SHM) and os.access(SHM, os.W_OK) else None
        self.data_dir = tempfile.mkdtemp(prefix="postern-mock-", dir=parent)
        atexit.register(shutil.rmtree, self.data_dir, True)
        # A throwaway world needs no fsync per commit; the rest is the default config.
        config = config_from_mapping({"data_dir": self.data_dir, "database": {"sqlite_synchronous": "normal"}})
        self.postern = build_postern(config)
        with database.connection_context():
            migrations.upgrade()
            self._cast()
        self.transport = InProcessTransport(create_app(self.postern))
        self.base_url = MOCK_BASE_URL
        self.agent_key = MOCK_AGENT_KEY
        self.read_only_key = MOCK_READ_ONLY_KEY
        self.enrollment_token = MOCK_ENROLLMENT_TOKEN
        self.foreign_inbox_id = self._foreign_inbox()

    def _cast(self) -> None:
        info = RequestInfo(request_id="req_mock", client_addr="127.0.0.1")
        domain = self.postern.config.mail.domain
        year = dt.timedelta(days=366)

        def enroll(customer, scopes, mailboxes, fixed: str | None = None):
            row, plaintext = enrollment.create_enrollment_key(
                CLI, info, customer, base_domain=domain, scopes=list(scopes), max_mailboxes=mailboxes, expires_in=year
            )
            if fixed is not None:
                _rekey(EnrollmentKey, row.id, fixed)
                plaintext = fixed
            return plaintext

        def agent(customer, scopes, handle, fixed):
            token = enroll(customer, scopes, MAILBOXES)
            minted = enrollment.redeem(info, token, handle, agent_key_ttl=year)
            _rekey(AgentKey, minted.key.id, fixed)

        mock = tenancy.create_customer(CLI, info, TENANT, "Mock tenant")
        enroll(mock, SCOPES, ENROLLMENT_MAILBOXES, MOCK_ENROLLMENT_TOKEN)
        agent(mock, SCOPES, "mock-agent", MOCK_AGENT_KEY)
        agent(mock, ("mailbox:read",), "mock-reader", MOCK_READ_ONLY_KEY)
        other = tenancy.create_customer(CLI, info, OTHER_TENANT, "Another tenant")
        self._foreign_key = _fixed_key("agent", "MockForeignTenantAgentKey")
        agent(other, SCOPES, "foreign-agent", self._foreign_key)

    def _foreign_inbox(self) -> str:
        with Postern(api_key=self._foreign_key, base_url=self.base_url, transport=self.transport) as foreign:
            return foreign.inboxes.create("private").id

    def deliver(
        self,
        to: str | list[str],
        *,
        subject: str = "",
        text: str = "",
        html: str | None = None,
        sender: str = "someone@example.org",
        sender_name: str = "",
        headers: dict[str, str] | None = None,
        attachments: list[tuple[str, str, bytes]] | None = None,
        raw: bytes | None = None,
    ) -> list[str]:
        """Deliver a message from outside, as the SMTP listener would; returns the ids
        stored (one per inbox of the world among ``to``). ``attachments`` are
        ``(filename, content_type, data)``; ``raw`` sends exact bytes instead."""
        recipients = [to] if isinstance(to, str) else list(to)
        if raw is None:
            raw = _compose(recipients, subject, text, html, sender, sender_name, headers or {}, attachments or [])
        with database.connection_context():
            return [m.id for m in ingest(self.postern, raw, sender, recipients)]

    def close(self) -> None:
        self.transport.shutdown()
        if not database.is_closed():
            database.close()
        shutil.rmtree(self.data_dir, ignore_errors=True)


def _rekey(model, row_id: str, plaintext: str) -> None:
    """Give a freshly minted key row the fixed key's hash: only the hash is stored."""
    with write_transaction():
        model.update(key_hash=keys.hash_key(plaintext), key_prefix=keys.display_prefix(plaintext)).where(
            model.id == row_id
        ).execute()


def _compose(recipients, subject, text, html, sender, sender_name, headers, attachments) -> bytes:
    msg = EmailMessage()
    msg["From"] = formataddr((sender_name, sender)) if sender_name else sender
    msg["To"] = ", ".join(recipients)
    msg["Subject"] = subject
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or "example.org")
    for name, value in headers.items():
        msg[name] = value
    msg.set_content(text)
    if html is not None:
        msg.add_alternative(html, subtype="html")
    for filename, content_type, data in attachments:
        maintype, _, subtype = content_type.partition("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype or "octet-stream", filename=filename)
    return bytes(msg)
