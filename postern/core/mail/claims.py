"""Who owns an outbound message while a delivery attempt runs.

An attempt claims a message by setting ``claimed_until`` (and ``next_attempt_at``) a
lease ahead; that value is its token. Every write that ends or continues the attempt is
conditional on the message still holding the same status and token (``mine``): once
the lease lapsed and the queue tooling cancelled the message, or another attempt took
it over, the late attempt's outcome is not recorded (its copies did go out; the
recipient rows it wrote say so), and it never turns a cancelled message back into a
queued one. A long attempt (bulk mail, one copy per recipient) extends its claim
before each copy (``extend``).
"""

from __future__ import annotations

import datetime as dt
import logging

from postern.core.models import Message, utcnow

log = logging.getLogger("postern.outbound")


def lease(postern) -> dt.timedelta:
    """How long a delivery attempt owns a message (``mail.outbound_lease_seconds``);
    longer than any backend's timeouts."""
    return dt.timedelta(seconds=postern.config.mail.outbound_lease_seconds)


def mine(message: Message):
    """The condition under which ``message`` (as this attempt read it) is still ours."""
    return (
        (Message.id == message.id)
        & (Message.status == message.status)
        & (Message.claimed_until == message.claimed_until)
    )


def extend(postern, message: Message) -> bool:
    """Push this attempt's claim a lease ahead; False when it is no longer ours. The
    instance takes the new token, so later ``mine`` conditions use it."""
    until = utcnow() + lease(postern)
    if not Message.update(claimed_until=until, next_attempt_at=until).where(mine(message)).execute():
        return False
    message.claimed_until = message.next_attempt_at = until
    return True


def lost(message: Message) -> Message:
    """Say that this attempt's outcome is not recorded, and return the row as it is."""
    log.warning(
        "message %s: this attempt no longer holds it (cancelled, or another attempt took over after its "
        "lease); its outcome is not recorded",
        message.id,
    )
    return Message.get_by_id(message.id)
