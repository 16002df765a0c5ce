"""Delivery attempts for stored outbound messages: the sender's first one and the
outbox's retries (``deliver_due``).

Each recipient served by this Postern gets its copy through the ingest path
(agent-to-agent needs no outside server; a receive backend with mailboxes of its own,
such as WildDuck, delivers there instead); the rest go to the send backend. A temporary
failure leaves the message ``queued`` with a retry time that the outbox honours; a
permanent one marks it ``failed``. Outcomes are committed before plugins hear of them.
"""

from __future__ import annotations

import datetime as dt
import json
import logging

import peewee

from postern.core import dkim, metrics
from postern.core.backends import (
    BackendError,
    OutboundAttachment,
    OutboundMessage,
    PermanentFailure,
    Receiver,
    TemporaryFailure,
)
from postern.core.db import write_transaction
from postern.core.errors import BackendUnavailable
from postern.core.mail import wire
from postern.core.mail.ingest import ingest, local_inbox
from postern.core.models import Inbox, Message, utcnow
from postern.core.plugins import notify
from postern.core.sendingstops import stopped_for_inbox
from postern.core.tenancy import is_suspended
from postern.core.webhooks import events as webhook_events

log = logging.getLogger("postern.outbound")

MAX_ATTEMPTS = 8


def lease(postern) -> dt.timedelta:
    """How long a delivery attempt owns a message (``mail.outbound_lease_seconds``);
    longer than any backend's timeouts."""
    return dt.timedelta(seconds=postern.config.mail.outbound_lease_seconds)


RETRY_SCHEDULE = (5, 30, 120, 600, 1800, 3600, 7200)  # seconds before attempts 2..8
#: Seconds before the first check of an accepted message when the backend names none.
CHECK_AFTER = 5.0


def deliver(postern, message_id: str) -> Message:
    """One delivery attempt; updates the row and fires the sent/failed hook."""
    message = Message.get_by_id(message_id)
    if message.status != "queued":
        return message  # delivered meanwhile by another attempt
    if is_suspended(message.customer_id):
        return _hold(message, "customer suspended")
    stop = stopped_for_inbox(Inbox.get_by_id(message.inbox_id))
    if stop is not None:
        return _hold(message, f"sending stopped for this {stop.kind}")
    recipients = json.loads(message.envelope_to)
    local = [r for r in recipients if local_inbox(r) is not None]
    remote = [r for r in recipients if r not in local]
    try:
        check_wire(message)
        if local and not message.local_done:
            _deliver_local(postern, message, local)
        result = _hand_over(postern, message, remote) if remote else None
    except TemporaryFailure as exc:
        return _retry_later(postern, message, exc)
    except PermanentFailure as exc:
        return mark_failed(postern, message, exc)
    except (peewee.PeeweeException, OSError) as exc:
        log.warning("delivery of %s failed for now: %s", message.id, exc)
        return _retry_later(postern, message, TemporaryFailure(str(exc)))
    if result is not None and result.status == "accepted" and postern.backend("send").confirms:
        return _confirm_later(message, result)
    return mark_sent(postern, message, result, attempt=True)


def check_wire(message: Message) -> None:
    """Fail closed: the stored message must carry exactly the headers its row says were
    composed (a message queued by an older Postern with an injected line never leaves)."""
    optional = {
        "To": json.loads(message.to_addresses),
        "Cc": json.loads(message.cc_addresses),
        "Reply-To": json.loads(message.reply_to),
        "In-Reply-To": message.in_reply_to,
        "References": message.references,
    }
    names = ["From", "Subject", "Date", "Message-ID", *(name for name, value in optional.items() if value)]
    names += [name for name, _ in json.loads(message.headers)]
    fault = wire.problem(bytes(message.raw), wire.expected(*names))
    if fault is not None:
        log.error("message %s refused before sending: %s", message.id, fault)
        raise PermanentFailure(f"the message was not sent: {fault}", code="header_mismatch")


def receiver_keeps_mailboxes(postern) -> bool:
    """Whether the receive backend has a local delivery of its own (``deliver_local``)."""
    receiver = postern.active("receive")
    return receiver is not None and type(receiver).deliver_local is not Receiver.deliver_local


def _deliver_local(postern, message: Message, local: list[str]) -> None:
    """Local recipients: the receive backend's own delivery if it has one (a mailbox
    store such as WildDuck must hold the mail too), else straight through ingest."""
    receiver = postern.active("receive")
    if receiver is None or not receiver.deliver_local(postern, message, local):
        ingest(postern, bytes(message.raw), message.envelope_from, local, delivered_for=message.id)


def mark_sent(postern, message: Message, result, *, attempt: bool) -> Message:
    """Record the final, successful outcome and announce it (``message.sent`` and the hook).
    ``attempt`` counts a delivery attempt (not for a confirmation that completed)."""
    with write_transaction():
        message = record_sent(postern, message.id, result, attempt=attempt)
    metrics.OUTBOUND.labels(message.status).inc()  # sent, or captured
    tell_sent(postern, message, result)
    return message


def record_sent(postern, message_id: str, result, *, attempt: bool) -> Message:
    """``mark_sent``'s writes, inside the caller's transaction."""
    status = result.status if result is not None else "sent"
    Message.update(
        status="sent" if status == "accepted" else status,
        backend=result.backend if result else "local",
        backend_message_id=result.backend_message_id if result else None,
        attempts=Message.attempts + (1 if attempt else 0),
        next_attempt_at=None,
        error=None,
    ).where(Message.id == message_id).execute()
    message = Message.get_by_id(message_id)
    webhook_events.message_event(postern, "message.sent", [message])
    return message


def _confirm_later(message: Message, result) -> Message:
    """The backend accepted the message and will finish later: ``sending`` until the
    outbox learns the outcome (postern.core.mail.confirm). Nothing is announced yet."""
    now = utcnow()
    Message.update(
        status="sending",
        backend=result.backend,
        backend_message_id=result.backend_message_id,
        attempts=Message.attempts + 1,
        accepted_at=now,
        next_attempt_at=now + dt.timedelta(seconds=result.check_after or CHECK_AFTER),
        error=None,
    ).where(Message.id == message.id).execute()
    return Message.get_by_id(message.id)


def _hand_over(postern, message: Message, remote: list[str]):
    try:
        backend = postern.backend("send")
    except BackendUnavailable as exc:
        raise PermanentFailure(str(exc), code="no_send_backend") from exc
    try:
        raw = backend.dkim_sign(postern, message.envelope_from, bytes(message.raw))
    except dkim.DkimKeyUnavailable as exc:
        log.error("cannot DKIM-sign %s: %s", message.id, exc)
        raise TemporaryFailure(str(exc), code="dkim_key_unavailable") from exc
    attachments = tuple(
        OutboundAttachment(a.filename, a.content_type, bytes(a.data), a.content_id, a.inline)
        for a in message.attachments
    )
    people = [p for field in (message.to_addresses, message.cc_addresses, message.reply_to) for p in json.loads(field)]
    outbound = OutboundMessage(
        message_id=message.message_id_header,
        sender=message.envelope_from,
        recipients=tuple(remote),
        raw=raw,
        postern_id=message.id,
        subject=message.subject,
        text=message.text,
        html=message.html,
        from_name=message.from_name,
        to=tuple(p["address"] for p in json.loads(message.to_addresses)),
        cc=tuple(p["address"] for p in json.loads(message.cc_addresses)),
        bcc=tuple(r for r in remote if r not in _visible(message)),
        reply_to=tuple(p["address"] for p in json.loads(message.reply_to)),
        attachments=attachments,
        headers=_headers(message),
        names={p["address"]: p["name"] for p in people if p.get("name")},
        attempt=message.attempts + 1,
    )
    try:
        return backend.send(outbound)
    except BackendError:
        raise
    except Exception as exc:  # a backend bug must not lose the message: retry, and log it
        log.exception("send backend %s raised unexpectedly for %s", backend.name, message.id)
        raise TemporaryFailure(f"{type(exc).__name__}: {exc}") from exc


def _headers(message: Message) -> dict[str, str]:
    """The headers a field-based backend must carry over: threading and the sender's X-… ones."""
    found = {name: value for name, value in json.loads(message.headers)}
    if message.in_reply_to:
        found["In-Reply-To"] = message.in_reply_to
    if message.references:
        found["References"] = message.references
    return found


def _visible(message: Message) -> set[str]:
    return {p["address"] for p in json.loads(message.to_addresses) + json.loads(message.cc_addresses)}


#: How often the queued mail of a suspended customer is looked at again.
SUSPENDED_RECHECK = dt.timedelta(minutes=5)


def _hold(message: Message, why: str) -> Message:
    """Queued mail of a suspended customer, or under a sending stop, waits without using
    up its attempts, and leaves once the operator resumes it (or can be cancelled)."""
    Message.update(next_attempt_at=utcnow() + SUSPENDED_RECHECK, error=why).where(Message.id == message.id).execute()
    log.info("message %s held: %s", message.id, why)
    return Message.get_by_id(message.id)


def _retry_later(postern, message: Message, exc: TemporaryFailure) -> Message:
    attempts = message.attempts + 1
    if attempts >= MAX_ATTEMPTS:
        return mark_failed(postern, message, exc)
    delay = max(exc.retry_after or 0, RETRY_SCHEDULE[min(attempts - 1, len(RETRY_SCHEDULE) - 1)])
    Message.update(
        status="queued",
        attempts=attempts,
        error=str(exc)[:2000],
        next_attempt_at=utcnow() + dt.timedelta(seconds=delay),
    ).where(Message.id == message.id).execute()
    metrics.OUTBOUND.labels("retried").inc()
    log.warning("message %s: temporary failure (%s); attempt %s, retry in %ss", message.id, exc, attempts, delay)
    return Message.get_by_id(message.id)


def mark_failed(postern, message: Message, exc: BackendError) -> Message:
    log.warning("message %s failed for good: %s", message.id, exc)
    with write_transaction():
        Message.update(
            status="failed",
            attempts=Message.attempts + 1,
            error=f"{getattr(exc, 'code', 'error')}: {exc}"[:2000],
            next_attempt_at=None,
        ).where(Message.id == message.id).execute()
        message = Message.get_by_id(message.id)
        webhook_events.message_event(postern, "message.failed", [message])
    metrics.OUTBOUND.labels("failed").inc()
    notify(postern, "postern_message_failed", message=message, error=exc)
    return message


def tell_sent(postern, message: Message, result) -> None:
    """Announce a committed send to the active backends (``message_sent``; WildDuck files
    it in the Sent folder), then to every plugin (``postern_message_sent``, through
    ``notify``); each failure is logged and ignored, the message stays sent."""
    for backend in postern.active_backends():
        try:
            backend.message_sent(postern, message, result)
        except Exception:
            log.exception("the %s backend's message_sent failed for %s", backend.name, message.id)
    notify(postern, "postern_message_sent", message=message, result=result)


def deliver_due(postern, limit: int = 50) -> int:
    """The outbox's sweep: claim queued messages whose retry time has come (or whose
    sender crashed before delivering) and attempt them."""
    return run_due(postern, "queued", deliver, limit)


def run_due(postern, status: str, attempt, limit: int = 50) -> int:
    """Claim messages in ``status`` whose ``next_attempt_at`` has come and run
    ``attempt(postern, message_id)`` on each. Safe in several processes: a message is
    claimed by moving its time forward by the lease only if nobody else has."""
    due = list(
        Message.select(Message.id, Message.next_attempt_at)
        .where((Message.status == status) & (Message.next_attempt_at <= utcnow()))
        .order_by(Message.next_attempt_at)
        .limit(limit)
    )
    done = 0
    for row in due:
        claimed = (
            Message.update(next_attempt_at=utcnow() + lease(postern))
            .where(
                (Message.id == row.id) & (Message.status == status) & (Message.next_attempt_at == row.next_attempt_at)
            )
            .execute()
        )
        if not claimed:
            continue  # another outbox took it
        try:
            attempt(postern, row.id)
        except Exception:  # one bad message must not stop the sweep; its lease expires and it is retried
            log.exception("outbox: %s %s failed unexpectedly", status, row.id)
        done += 1
    return done
