"""Builders for tenants, keys and inboxes, through the core as the API would use it."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from postern.core import enrollment, mailrules, quarantine, tenancy
from postern.core.auth import authenticate
from postern.core.db import write_transaction
from postern.core.inboxes import create_inbox
from postern.core.mail.ingest import ingest, limits_for
from postern.core.mail.mime import parse
from postern.core.models import Inbox, Message, Webhook, WebhookDelivery
from postern.core.principal import CLI, SCOPES, RequestInfo
from postern.core.webhooks.manage import create_webhook

INFO = RequestInfo(request_id="req_test", client_addr="127.0.0.1")
BASE_DOMAIN = "agents.localhost"


@dataclass
class Tenant:
    """One customer with an org admin token and helpers to mint agent keys."""

    label: str
    customer: object
    admin_token: str
    operator_token: str | None = None
    enrollment_keys: list = field(default_factory=list)

    @property
    def domain(self) -> str:
        return f"{self.label}.{BASE_DOMAIN}"

    def enrollment_key(self, scopes=SCOPES, max_mailboxes=10, **kwargs) -> tuple[object, str]:
        kwargs.setdefault("expires_in", dt.timedelta(days=7))
        row, plaintext = enrollment.create_enrollment_key(
            CLI,
            INFO,
            self.customer,
            base_domain=BASE_DOMAIN,
            scopes=list(scopes),
            max_mailboxes=max_mailboxes,
            **kwargs,
        )
        self.enrollment_keys.append(row)
        return row, plaintext

    def agent_key(self, scopes=SCOPES, handle="bot", max_mailboxes=10, ttl=dt.timedelta(hours=1), **kwargs):
        """A fresh enrollment key redeemed once: returns the ``Enrollment`` (``.agent_key`` is the secret)."""
        _, plaintext = self.enrollment_key(scopes, max_mailboxes, **kwargs)
        return enrollment.redeem(INFO, plaintext, handle, agent_key_ttl=ttl)


def make_tenant(label: str) -> Tenant:
    customer = tenancy.create_customer(CLI, INFO, label, label.title())
    _, admin_token = tenancy.create_admin_token(CLI, INFO, customer, f"{label} admin")
    return Tenant(label, customer, admin_token)


def operator_token() -> str:
    return tenancy.create_admin_token(CLI, INFO, None, "operator")[1]


def seed_inbox(postern, enrolled, username: str | None = None) -> Inbox:
    """An inbox under ``enrolled``'s enrollment, made through the core whatever its scopes,
    holding one received message (so message and thread ids exist too)."""
    principal = authenticate(enrolled.agent_key, "agent", INFO)
    body = {"username": username} if username else {}
    inbox = create_inbox(postern, principal, INFO, body)[0]
    raw = (
        f"From: a@example.org\r\nTo: {inbox.address}\r\nSubject: seed\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n'
        '--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename="a.pdf"\r\n\r\n'
        "%PDF\r\n--b--\r\n"
    ).encode()
    ingest(postern, raw, "a@example.org", [inbox.address])
    return Inbox.get_by_id(inbox.id)


def seed_webhook(postern, enrolled) -> Webhook:
    """A webhook for every event of ``enrolled``'s enrollment, made through the core."""
    principal = authenticate(enrolled.agent_key, "agent", INFO)
    body = {"url": "https://hooks.example.org/in", "event_types": ["message.received", "inbox.created"]}
    return create_webhook(postern, principal, INFO, body)[0]


def first_delivery(webhook: Webhook) -> WebhookDelivery:
    return WebhookDelivery.select().where(WebhookDelivery.webhook == webhook.id).order_by(WebhookDelivery.id).first()


def seed_held(postern, inbox: Inbox, subject: str = "held", reason: str = "unauthenticated") -> str:
    """A message held back for ``inbox`` by its inbound policy, as the listener holds it."""
    raw = f"From: spoof@bank.example\r\nTo: {inbox.address}\r\nSubject: {subject}\r\n\r\npay now\r\n".encode()
    parsed = parse(raw, limits_for(postern))
    with write_transaction():
        return quarantine.hold(inbox, parsed, raw, "spoof@bank.example", reason, "", None).id


def seed_rule(inbox: Inbox, direction: str = "receive", action: str = "block", pattern: str = "spam.example") -> str:
    """An allow or block entry of ``inbox``'s own, made through the core as its admin would."""
    body = {"direction": direction, "action": action, "pattern": pattern, "inbox_id": inbox.id}
    return mailrules.create_rule(CLI, INFO, body).id


def first_message(inbox: Inbox) -> Message:
    return Message.select().where(Message.inbox == inbox.id).order_by(Message.seq).first()
