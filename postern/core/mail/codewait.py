"""The store side of ``wait_for_code``: the oldest inbound message with a code or a
verification link that no ``wait_for_code`` has handed this agent yet.

A message is handed over by inserting its (agent, message) row into ``code_handover``
with ``ON CONFLICT DO NOTHING``: of two racing calls that read the same message, the
one whose insert counts a row returns it, the other tries the next one. No lock is
held while a call sleeps, and the delivery cursor of ``wait_for_email`` is left alone:
the two are independent hand-overs (docs/mail.md, "Waiting for a code").
"""

from __future__ import annotations

import re
from typing import NamedTuple

from postern.core import audit, fastsql
from postern.core.errors import InvalidInput, PermissionDenied
from postern.core.inboxes import get_inbox
from postern.core.mail.extract import Extraction
from postern.core.models import Inbox, Message, utcnow
from postern.core.principal import Principal, RequestInfo

#: Candidates read per look: more than enough, since each is claimed or skipped at once.
BATCH = 20
_FIELDS = (Message.id, Message.inbox, Message.seq, Message.from_address, Message.received_at, Message.extraction)
_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")


class Handed(NamedTuple):
    """What one ``wait_for_code`` call returns: the best code and link, and their message."""

    message_id: str
    inbox_id: str
    sender: str
    code: str | None
    link: str | None
    received_at: object  # datetime

    def to_json(self) -> dict:
        return {
            "message_id": self.message_id,
            "inbox_id": self.inbox_id,
            "from": self.sender,
            "code": self.code,
            "link": self.link,
            "received_at": self.received_at.isoformat(),
        }


def parse_domain(value: str | None) -> str | None:
    """``from_domain`` as compared: lower case, no trailing dot; None when absent."""
    if value in (None, ""):
        return None
    domain = value.strip().lower().rstrip(".")
    if domain.startswith("@"):
        domain = domain[1:]
    try:
        domain = domain.encode("idna").decode("ascii")  # münchen.de -> xn--mnchen-3ya.de
    except UnicodeError:
        domain = ""
    if len(domain) > 253 or not _DOMAIN.fullmatch(domain):
        raise InvalidInput("from_domain must be a domain name such as example.com", field="from_domain")
    return domain


def open_code_wait(principal: Principal, info: RequestInfo, inbox_id: str) -> Inbox:
    """Check access once for a ``wait_for_code`` call (the same as reading messages)."""
    inbox = get_inbox(principal, info, inbox_id, audit_read=False, action="code.wait")
    if principal.agent_id is None:
        raise PermissionDenied("wait_for_code hands codes to an agent: call it with an agent key")
    audit.record_read("code.wait", principal=principal, info=info, target=inbox.id)
    return inbox


def next_code(agent_id: str, inbox_id: str, from_domain: str | None) -> Handed | None:
    """Claim and return the oldest message not yet handed to this agent that has a code
    or link (and, with ``from_domain``, whose sender is on it or a subdomain of it)."""
    tail = (
        "WHERE inbox_id = ? AND direction = 'inbound' AND extraction <> '' AND NOT EXISTS "
        "(SELECT 1 FROM code_handover h WHERE h.agent_id = ? AND h.message_id = message.id)"
    )
    params: list = [inbox_id, agent_id]
    if from_domain is not None:
        # LIKE is safe: a parsed domain has no % or _ in it.
        tail += " AND (lower(from_address) LIKE ? OR lower(from_address) LIKE ?)"
        params += [f"%@{from_domain}", f"%.{from_domain}"]
    tail += " ORDER BY seq LIMIT ?"
    while True:
        rows = fastsql.select(Message, _FIELDS, tail, [*params, BATCH])
        if not rows:
            return None
        for row in rows:
            if _claim(agent_id, row.id):
                return _handed(row)
        # Every one was taken by a racing call of this agent: look again past them.


def _claim(agent_id: str, message_id: str) -> bool:
    return (
        fastsql.execute(
            "INSERT INTO code_handover (agent_id, message_id, handed_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
            (agent_id, message_id, utcnow()),
        ).rowcount
        == 1
    )


def _handed(row: Message) -> Handed:
    found = Extraction.stored(row)
    return Handed(
        row.id,
        row.inbox_id,
        row.from_address,
        found.codes[0].value if found.codes else None,
        found.links[0].url if found.links else None,
        row.received_at,
    )
