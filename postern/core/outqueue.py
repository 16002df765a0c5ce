"""The outbound queue as an operator sees it: ``postern admin queue list|retry|cancel``
(the ``mailq`` and flush of a mail server; docs/mail.md, "Outbound queue").

A delivery attempt owns a message while ``claimed_until`` lies ahead (its lease): retry
and cancel leave such a message alone, as moving it under a running attempt could send
it twice or record an outcome for mail the operator cancelled. Mail held by a
suspension or sending stop is between attempts, so it can be retried (it is held again
while the hold stands) or cancelled.
"""

from __future__ import annotations

import json

from postern.core import audit
from postern.core.db import write_transaction
from postern.core.errors import Conflict, NotFound
from postern.core.ids import well_formed
from postern.core.mail import recipients
from postern.core.models import Inbox, Message, MessageRecipient, utcnow
from postern.core.principal import Principal, RequestInfo
from postern.core.tenancy import get_customer
from postern.core.webhooks import events as webhook_events

#: What the queue shows: mail still to leave, and mail a confirming backend is finishing.
SHOWN = ("queued", "sending")


def _scope(query, principal: Principal):
    return query if principal.is_operator else query.where(Message.customer == principal.customer_id)


def list_queue(principal: Principal, customer_ref: str | None = None, limit: int = 200) -> list[dict]:
    """Queued and sending mail, the next attempt first; with each message its pending
    recipients and whether an attempt holds it now."""
    query = (
        Message.select(Message, Inbox.address)
        .join(Inbox, on=(Inbox.id == Message.inbox))
        .where(Message.status.in_(SHOWN))
        .order_by(Message.next_attempt_at, Message.id)
        .limit(max(1, min(limit, 10_000)))
    )
    if customer_ref:
        query = query.where(Message.customer == get_customer(principal, customer_ref).id)
    rows = list(_scope(query, principal))
    pending = _pending_of([m.id for m in rows])
    now = utcnow()
    return [
        {
            "id": m.id,
            "customer_id": m.customer_id,
            "from": m.inbox.address,
            "status": m.status,
            "recipients": pending.get(m.id) or json.loads(m.envelope_to),
            "attempts": m.attempts,
            "queued_at": m.received_at,
            "next_attempt_at": m.next_attempt_at,
            "under_attempt": m.claimed_until is not None and m.claimed_until > now,
            "error": m.error,
        }
        for m in rows
    ]


def _pending_of(ids: list[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    if ids:
        query = MessageRecipient.select(MessageRecipient.message, MessageRecipient.address).where(
            MessageRecipient.message.in_(ids) & MessageRecipient.status.in_(recipients.PENDING)
        )
        for row in query:
            found.setdefault(row.message_id, []).append(row.address)
    return found


def _free(now):
    """Queued and between attempts: no lease ahead."""
    return (Message.status == "queued") & (Message.claimed_until.is_null() | (Message.claimed_until <= now))


def retry(principal: Principal, info: RequestInfo, message_id: str | None = None) -> int:
    """Make queued mail due now (one message, or with None every message ``principal``
    may see); returns how many. The outbox attempts them on its next pass."""
    now = utcnow()
    query = Message.update(next_attempt_at=now).where(_free(now))
    if message_id is not None:
        message = _get(principal, message_id)
        query = query.where(Message.id == message.id)
    elif not principal.is_operator:
        query = query.where(Message.customer == principal.customer_id)
    with write_transaction():
        moved = query.execute()
        if message_id is not None and not moved:
            raise _not_free(message)
        audit.record("queue.retry", principal=principal, info=info, target=message_id or f"{moved} messages")
    return moved


def cancel(postern, principal: Principal, info: RequestInfo, message_id: str) -> Message:
    """Cancel one queued message: it leaves for no one else (recipients still pending
    become ``cancelled``); the agent sees status ``cancelled`` (``sent`` when some
    recipients already had it) and a ``message.cancelled`` event."""
    message = _get(principal, message_id)
    now = utcnow()
    got_it = message.local_done or (
        MessageRecipient.select()
        .where((MessageRecipient.message == message.id) & MessageRecipient.status.in_(("sent", "captured")))
        .exists()
    )
    # Some recipients already have it: the message was sent, to fewer than asked.
    status, error = ("sent", "cancelled by the operator for the recipients still pending")
    if not got_it:
        status, error = "cancelled", "cancelled by the operator"
    with write_transaction():
        done = (
            Message.update(status=status, next_attempt_at=None, error=error)
            .where(_free(now) & (Message.id == message.id))
            .execute()
        )
        if not done:
            raise _not_free(message)
        MessageRecipient.update(status="cancelled", code="cancelled", updated_at=now).where(
            (MessageRecipient.message == message.id) & MessageRecipient.status.in_(recipients.PENDING)
        ).execute()
        message = Message.get_by_id(message.id)
        webhook_events.message_event(postern, "message.cancelled", [message])
        audit.record("queue.cancel", principal=principal, info=info, target=message.id, customer_id=message.customer_id)
    return message


def _get(principal: Principal, message_id: str) -> Message:
    message = None
    if well_formed(message_id, "msg"):
        message = _scope(Message.select(), principal).where(Message.id == message_id).first()
    if message is None or message.direction != "outbound":
        raise NotFound(f"no outbound message '{message_id[:60]}'")
    return message


def _not_free(message: Message) -> Conflict:
    current = Message.get_by_id(message.id)
    if current.status != "queued":
        return Conflict(f"message {message.id} is {current.status}, not queued", code="not_queued")
    return Conflict(
        f"a delivery attempt holds message {message.id} until {current.claimed_until:%H:%M:%S} UTC; try again then",
        code="under_attempt",
    )
