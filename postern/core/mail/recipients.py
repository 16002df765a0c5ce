"""Where each recipient of an outbound message stands (``message_recipient`` rows).

The message keeps one overall ``status`` (queued, sent, failed…); its recipients keep
their own, because one message to several domains can be delivered to one, deferred at
another and bounced by a third. A retry hands over only the recipients still
``queued`` or ``deferred``; a bounce or complaint report that comes back later marks
the one recipient it names. Messages stored before these rows existed have none and
read as "every recipient shares the message's status".
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping

from postern.core.backends import RecipientOutcome as Outcome
from postern.core.models import Message, MessageRecipient, utcnow

#: Recipients a delivery attempt still has to hand over.
PENDING = ("queued", "deferred")
#: Final states reached without the mail leaving for that recipient.
NOT_SENT = ("bounced", "failed", "suppressed", "cancelled")


def create(message_id: str, addresses: Iterable[str], status: str = "queued", code: str = "") -> None:
    """The rows of a message being stored (inside the caller's transaction)."""
    now = utcnow()
    rows = [
        {"message": message_id, "address": a, "status": status, "code": code, "updated_at": now}
        for a in dict.fromkeys(addresses)
    ]
    if rows:
        MessageRecipient.insert_many(rows).execute()


def pending(message: Message, among: list[str]) -> list[str]:
    """Those of ``among`` (the remote recipients) still to hand over."""
    rows = {r.address: r.status for r in MessageRecipient.select().where(MessageRecipient.message == message.id)}
    if not rows:
        return among  # stored before per-recipient rows: all of them, as before
    return [a for a in among if rows.get(a, "queued") in PENDING]


def record(message_id: str, outcomes: Mapping[str, Outcome], *, attempt: bool = True) -> None:
    """Store each recipient's outcome (rows are created for messages that had none)."""
    now = utcnow()
    known = {
        r.address
        for r in MessageRecipient.select(MessageRecipient.address).where(MessageRecipient.message == message_id)
    }
    for address, o in outcomes.items():
        values = {"status": o.status, "code": o.code[:60], "detail": o.detail[:1000], "updated_at": now}
        if address in known:
            query = MessageRecipient.update(**values, attempts=MessageRecipient.attempts + (1 if attempt else 0)).where(
                (MessageRecipient.message == message_id) & (MessageRecipient.address == address)
            )
            query.execute()
        else:
            MessageRecipient.insert(message=message_id, address=address, attempts=int(attempt), **values).execute()


def set_all(message_id: str, addresses: Iterable[str], outcome: Outcome, *, attempt: bool = True) -> None:
    record(message_id, {a: outcome for a in addresses}, attempt=attempt)


def mark_report(message_id: str, address: str, status: str, code: str, detail: str) -> bool:
    """A bounce or complaint about one recipient; returns whether it changed anything
    (the caller then fires the event and suppresses). Nothing changes for an address
    that is not one of the message's recipients, for one never sent to (suppressed,
    cancelled, failed), for a report already recorded (a replayed report fires nothing
    twice), or for a bounce after a complaint."""
    envelope = json.loads(Message.get_by_id(message_id).envelope_to)
    if address not in {a.lower() for a in envelope}:
        return False
    address = next(a for a in envelope if a.lower() == address)
    row = MessageRecipient.get_or_none((MessageRecipient.message == message_id) & (MessageRecipient.address == address))
    if row is not None:
        if row.status in ("suppressed", "cancelled", "failed") or row.status == status:
            return False
        if row.status == "complained":
            return False
    record(message_id, {address: Outcome(status, code, detail)}, attempt=False)
    return True


def of(message_id: str) -> list[MessageRecipient]:
    return list(
        MessageRecipient.select().where(MessageRecipient.message == message_id).order_by(MessageRecipient.address)
    )
