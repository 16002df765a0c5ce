"""Following accepted sends to their outcome.

A send backend that ``confirms`` (ACS) may answer "accepted": the service took the
message but reports later whether it went out. The message is then ``sending``, its
``backend_message_id`` names the backend's operation, and the outbox calls the
backend's ``check`` when ``next_attempt_at`` comes, under the same lease as delivery,
so no API worker ever waits on the outcome. ``message.sent`` / ``message.failed``
(webhooks and hooks) fire only once the outcome is known.
"""

from __future__ import annotations

import datetime as dt
import logging

from postern.core.backends import PendingSend, PermanentFailure, TemporaryFailure
from postern.core.mail.claims import mine
from postern.core.mail.delivery import CHECK_AFTER, mark_failed, mark_sent, run_due
from postern.core.models import Message, utcnow

log = logging.getLogger("postern.outbound")

#: Seconds before asking again after a check that could not read the outcome, when the
#: backend gives no Retry-After; the backend's own timeout bounds how long this goes on.
CHECK_RETRY = 30.0
#: A message left ``sending`` by a backend that is no longer configured is looked at
#: again this often (seconds): switching back confirms it; nothing resends it.
ORPHAN_RECHECK = 3600.0


def confirm_due(postern, limit: int = 50) -> int:
    """The outbox's sweep of ``sending`` messages whose check is due."""
    return run_due(postern, "sending", confirm, limit)


def confirm(postern, message_id: str) -> Message:
    """Ask the send backend once for the outcome of an accepted message."""
    message = Message.get_by_id(message_id)
    if message.status != "sending":
        return message
    backend = postern.backend("send")
    if backend.name != message.backend or not backend.confirms:
        log.warning(
            "message %s was accepted by send backend %s, which is not the configured one (%s): "
            "its outcome cannot be checked until it is",
            message.id,
            message.backend,
            backend.name,
        )
        return _check_later(message, ORPHAN_RECHECK, f"waiting for send backend {message.backend}")
    pending = PendingSend(message.id, message.backend_message_id or "", message.accepted_at)
    try:
        result = backend.check(pending)
    except PermanentFailure as exc:
        return mark_failed(postern, message, exc)
    except TemporaryFailure as exc:
        log.info("message %s: outcome not readable yet (%s)", message.id, exc)
        return _check_later(message, max(exc.retry_after or 0, CHECK_RETRY), str(exc))
    except Exception as exc:  # a backend bug: keep the message, check again, and say so
        log.exception("send backend %s: check of %s raised unexpectedly", backend.name, message.id)
        return _check_later(message, CHECK_RETRY, f"{type(exc).__name__}: {exc}")
    if result.status == "accepted":
        return _check_later(message, result.check_after or CHECK_AFTER, None)
    return mark_sent(postern, message, result, attempt=False)


def _check_later(message: Message, seconds: float, error: str | None) -> Message:
    Message.update(
        next_attempt_at=utcnow() + dt.timedelta(seconds=seconds), claimed_until=None, error=error and error[:2000]
    ).where(mine(message)).execute()
    return Message.get_by_id(message.id)
