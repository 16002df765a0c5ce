"""Sent folder: an agent's outbound message, appended (read) to its WildDuck mailbox.

The copy must not be lost when WildDuck is down at the send, nor made twice: a
``wildduck_sent_due`` row is committed before the upload and deleted after it, so a
failed or interrupted upload is retried by the watcher (``append_due``), which first
looks in the Sent folder for the message's Message-ID in case the upload did land.
"""

from __future__ import annotations

import datetime as dt
import logging

from postern.core.backends import BackendError
from postern.core.db import write_transaction
from postern.core.models import Message, utcnow
from postern.plugins.wildduck.models import WildDuckMailbox, WildDuckSentDue

log = logging.getLogger("postern.wildduck")

#: Seconds before retry N of a due copy (the last repeats).
RETRY_SCHEDULE = (5, 10, 30, 60, 120, 300)
#: How far before the send the Sent folder is searched on a retry (WildDuck's clock
#: may differ from Postern's).
CLOCK_MARGIN = dt.timedelta(minutes=10)


def append_sent(postern, message: Message) -> int | None:
    """Append ``message`` (an outbound ``Message`` row) to its inbox's Sent folder;
    returns the new UID, or None when it has no WildDuck mailbox or the upload is
    left due (WildDuck did not answer)."""
    row = WildDuckMailbox.get_or_none(WildDuckMailbox.inbox == message.inbox_id)
    if row is None or not row.sent_mailbox:
        return None
    with write_transaction():
        WildDuckSentDue.insert(message=message.id, next_attempt_at=utcnow()).on_conflict_ignore().execute()
    return _upload(postern, row, message, first=True)


def append_due(postern, limit: int = 50) -> int:
    """Retry the Sent copies whose time has come; returns how many were appended."""
    done = 0
    due = WildDuckSentDue.select().where(WildDuckSentDue.next_attempt_at <= utcnow()).limit(limit)
    for entry in list(due):
        message = Message.get_or_none(Message.id == entry.message_id)
        row = message and WildDuckMailbox.get_or_none(WildDuckMailbox.inbox == message.inbox_id)
        if row is None or not row.sent_mailbox:
            WildDuckSentDue.delete().where(WildDuckSentDue.message == entry.message_id).execute()
            continue
        if _upload(postern, row, message, first=False) is not None:
            done += 1
    return done


def next_due() -> dt.datetime | None:
    """When the earliest due copy may be retried, or None when none is due."""
    entry = WildDuckSentDue.select(WildDuckSentDue.next_attempt_at).order_by(WildDuckSentDue.next_attempt_at).first()
    return entry.next_attempt_at if entry else None


def _upload(postern, row: WildDuckMailbox, message: Message, *, first: bool) -> int | None:
    api = postern.backend("receive").api
    try:
        uid = None if first else _already_there(api, row, message)
        if uid is None:
            uid = api.append(row.user_id, row.sent_mailbox, bytes(message.raw), seen=True)
    except BackendError as exc:
        _later(message.id)
        log.warning("Sent copy of %s not appended (%s); due for a retry", message.id, exc)
        return None
    with write_transaction():
        WildDuckSentDue.delete().where(WildDuckSentDue.message == message.id).execute()
    return uid


def _already_there(api, row: WildDuckMailbox, message: Message) -> int | None:
    """The UID of an earlier upload of ``message`` that landed although its answer was
    lost (or the process died before deleting the due row)."""
    since = (message.sent_at or message.received_at) - CLOCK_MARGIN
    for summary in api.received_since(row.user_id, row.sent_mailbox, since) or []:
        if summary.message_id == message.message_id_header:
            return summary.uid
    return None


def _later(message_id: str) -> None:
    with write_transaction():
        entry = WildDuckSentDue.get_or_none(WildDuckSentDue.message == message_id)
        if entry is None:
            return
        delay = RETRY_SCHEDULE[min(entry.attempts, len(RETRY_SCHEDULE) - 1)]
        WildDuckSentDue.update(
            attempts=WildDuckSentDue.attempts + 1, next_attempt_at=utcnow() + dt.timedelta(seconds=delay)
        ).where(WildDuckSentDue.message == message_id).execute()
