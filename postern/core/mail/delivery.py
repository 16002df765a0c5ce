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
import threading
from concurrent.futures import ThreadPoolExecutor

import peewee

from postern.core import metrics
from postern.core.backends import (
    BackendError,
    PermanentFailure,
    Receiver,
    RecipientOutcome,
    TemporaryFailure,
)
from postern.core.db import database, write_transaction
from postern.core.mail import bounces, recipients, wire
from postern.core.mail.claims import lease, lost, mine
from postern.core.mail.handover import hand_over
from postern.core.mail.ingest import ingest, local_inbox
from postern.core.models import Inbox, Message, utcnow
from postern.core.plugins import notify
from postern.core.sendingstops import stopped_for_inbox
from postern.core.tenancy import is_suspended
from postern.core.webhooks import events as webhook_events

log = logging.getLogger("postern.outbound")

MAX_ATTEMPTS = 8


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
    everyone = json.loads(message.envelope_to)
    local = [r for r in everyone if local_inbox(r) is not None]
    remote = [r for r in everyone if r not in local]
    todo: list[str] = []
    try:
        check_wire(message)
        if local and not message.local_done:
            local = _not_suppressed(message, local)  # inboxes here can be on the list too (an admin put them)
            if local:
                _deliver_local(postern, message, local)
        todo = _not_suppressed(message, recipients.pending(message, remote))
        result = hand_over(postern, message, todo) if todo else None
    except TemporaryFailure as exc:
        return _retry_later(postern, message, exc, todo)
    except PermanentFailure as exc:
        return mark_failed(postern, message, exc)
    except (peewee.PeeweeException, OSError) as exc:
        log.warning("delivery of %s failed for now: %s", message.id, exc)
        return _retry_later(postern, message, TemporaryFailure(str(exc)), todo)
    if result is not None and result.status == "accepted" and postern.backend("send").confirms:
        return _confirm_later(message, result)
    return _settle(postern, message, todo, result, bool(local))


def _not_suppressed(message: Message, todo: list[str]) -> list[str]:
    """Recipients put on the suppression list since the message was accepted are
    dropped here, before the mail leaves (``suppressed``, never sent)."""
    if not todo:
        return todo
    from postern.core import suppression

    dropped = suppression.suppressed_among(message.customer_id, todo)
    if dropped:
        outcome = RecipientOutcome("suppressed", "recipient_suppressed", "on the suppression list")
        with write_transaction():
            recipients.set_all(message.id, [a for a in todo if a.lower() in dropped], outcome, attempt=False)
    return [a for a in todo if a.lower() not in dropped]


def _settle(postern, message: Message, todo: list[str], result, had_local: bool) -> Message:
    """Record what the attempt did for each recipient; then the message is sent (some
    recipient got it), failed (none did) or stays queued for its deferred recipients."""
    if result is None:
        if not had_local and not todo and _nobody_got_it(message):
            return mark_failed(postern, message, PermanentFailure("no recipient may be sent to", code="no_recipients"))
        return mark_sent(postern, message, result, attempt=True)
    default = RecipientOutcome("captured" if result.status == "captured" else "sent")
    outcomes = {a: result.recipients.get(a, default) for a in todo}
    refused = {a: o for a, o in outcomes.items() if o.status == "bounced"}
    deferred = [a for a, o in outcomes.items() if o.status == "deferred"]
    failure, recorded = None, message
    with write_transaction():
        recipients.record(message.id, {a: o for a, o in outcomes.items() if o.status != "bounced"})
        bounces.bounced(postern, message, refused, "delivery")
        if not deferred and not had_local and _nobody_got_it(message):
            # Refused at RCPT (bounced), or the whole copy refused (failed: bulk mail).
            nobody = RecipientOutcome("failed", "no_recipients", "no recipient took it")
            first = next((o for o in outcomes.values() if o.status in ("bounced", "failed")), nobody)
            failure = PermanentFailure(f"every recipient was refused: {_words(first)}", code=first.code)
            recorded = _fail(postern, message, failure)
        elif not deferred:
            recorded = record_sent(postern, message, result, attempt=True)
    if recorded is None:
        return lost(message)
    message = recorded
    if failure is not None:
        notify(postern, "postern_message_failed", message=message, error=failure)
        return message
    if deferred:
        exc = TemporaryFailure(f"deferred for {', '.join(deferred)}: {_words(outcomes[deferred[0]])}")
        return _retry_later(postern, message, exc, [], backend=result.backend)
    metrics.OUTBOUND.labels(message.status).inc()
    tell_sent(postern, message, result)
    return message


def _words(outcome: RecipientOutcome) -> str:
    """An outcome in one phrase: its detail, led by its code when the detail lacks it."""
    if outcome.detail.startswith(outcome.code):
        return outcome.detail
    return f"{outcome.code} {outcome.detail}".strip()


def _nobody_got_it(message: Message) -> bool:
    got = recipients.of(message.id)
    return bool(got) and not any(r.status in ("sent", "captured") for r in got)


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
        recorded = record_sent(postern, message, result, attempt=attempt)
    if recorded is None:
        return lost(message)
    message = recorded
    metrics.OUTBOUND.labels(message.status).inc()  # sent, or captured
    tell_sent(postern, message, result)
    return message


def record_sent(postern, message: Message, result, *, attempt: bool) -> Message | None:
    """``mark_sent``'s writes, inside the caller's transaction; None (nothing written)
    when the attempt no longer holds the message (``claims.mine``)."""
    status = result.status if result is not None else "sent"
    status = "sent" if status == "accepted" else status
    message_id = message.id
    done = (
        Message.update(
            status=status,
            # None: nothing left by a backend in this attempt; an earlier one may have
            # (recipients deferred then given up), else every recipient was local.
            backend=result.backend if result else peewee.fn.COALESCE(Message.backend, "local"),
            backend_message_id=result.backend_message_id if result else Message.backend_message_id,
            attempts=Message.attempts + (1 if attempt else 0),
            next_attempt_at=None,
            claimed_until=None,
            error=None,
        )
        .where(mine(message))
        .execute()
    )
    if not done:
        return None
    _close_pending(message_id, RecipientOutcome(status))
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
        claimed_until=None,
        error=None,
    ).where(mine(message)).execute()
    return Message.get_by_id(message.id)


#: How often the queued mail of a suspended customer is looked at again.
SUSPENDED_RECHECK = dt.timedelta(minutes=5)


def _hold(message: Message, why: str) -> Message:
    """Queued mail of a suspended customer, or under a sending stop, waits without using
    up its attempts, and leaves once the operator resumes it (or can be cancelled)."""
    Message.update(next_attempt_at=utcnow() + SUSPENDED_RECHECK, claimed_until=None, error=why).where(
        mine(message)
    ).execute()
    log.info("message %s held: %s", message.id, why)
    return Message.get_by_id(message.id)


def _retry_later(postern, message: Message, exc: TemporaryFailure, todo: list[str], backend: str | None = None):
    """A temporary failure for ``todo`` (deferred), or for the recipients a per-recipient
    result deferred: retry on the send backend's schedule, or give up past it."""
    attempts = message.attempts + 1
    sender = postern.active("send")
    delays = getattr(sender, "retry_delays", None) or RETRY_SCHEDULE
    lifetime = getattr(sender, "queue_lifetime", None)
    if lifetime is not None:
        expired = utcnow() - message.received_at >= dt.timedelta(seconds=lifetime)
    else:
        expired = attempts >= MAX_ATTEMPTS
    if expired:
        return _give_up(postern, message, exc, todo)
    delay = max(exc.retry_after or 0, delays[min(attempts - 1, len(delays) - 1)])
    with write_transaction():
        if todo:
            recipients.set_all(message.id, todo, RecipientOutcome("deferred", exc.code or "", str(exc)))
        done = (
            Message.update(
                status="queued",
                attempts=attempts,
                error=str(exc)[:2000],
                next_attempt_at=utcnow() + dt.timedelta(seconds=delay),
                claimed_until=None,
                **({"backend": backend} if backend else {}),
            )
            .where(mine(message))
            .execute()
        )
    if not done:
        return lost(message)
    metrics.OUTBOUND.labels("retried").inc()
    log.warning("message %s: temporary failure (%s); attempt %s, retry in %ss", message.id, exc, attempts, delay)
    return Message.get_by_id(message.id)


def _give_up(postern, message: Message, exc: TemporaryFailure, todo: list[str]) -> Message:
    """Deferred too long: the recipients still pending fail (RFC 3463 4.4.7, expired);
    the message counts as sent if any recipient got it."""
    expired = PermanentFailure(f"gave up after {message.attempts + 1} attempts: {exc}", code="expired")
    got_it = [r for r in recipients.of(message.id) if r.status in ("sent", "captured")]
    if not got_it and not message.local_done:
        return mark_failed(postern, message, expired)
    with write_transaction():
        done = (
            Message.update(
                status="sent",
                attempts=Message.attempts + 1,
                error=f"expired: {exc}"[:2000],
                next_attempt_at=None,
                claimed_until=None,
            )
            .where(mine(message))
            .execute()
        )
        if done:
            _close_pending(message.id, RecipientOutcome("failed", "expired", str(exc)))
            webhook_events.message_event(postern, "message.sent", [Message.get_by_id(message.id)])
    if not done:
        return lost(message)
    message = Message.get_by_id(message.id)
    log.warning("message %s: gave up on its deferred recipients: %s", message.id, exc)
    metrics.OUTBOUND.labels("failed").inc()
    tell_sent(postern, message, None)
    return message


def _close_pending(message_id: str, outcome: RecipientOutcome) -> None:
    """Every recipient still queued or deferred takes ``outcome`` (the message is final)."""
    from postern.core.models import MessageRecipient

    MessageRecipient.update(
        status=outcome.status, code=outcome.code[:60], detail=outcome.detail[:1000], updated_at=utcnow()
    ).where((MessageRecipient.message == message_id) & (MessageRecipient.status.in_(recipients.PENDING))).execute()


def mark_failed(postern, message: Message, exc: BackendError) -> Message:
    with write_transaction():
        failed = _fail(postern, message, exc)
    if failed is None:
        return lost(message)
    message = failed
    notify(postern, "postern_message_failed", message=message, error=exc)
    return message


def _fail(postern, message: Message, exc: BackendError) -> Message | None:
    """``mark_failed``'s writes, inside the caller's transaction (the caller notifies
    plugins after the commit); None, writing nothing, when the attempt no longer holds
    the message (``claims.mine``)."""
    code = getattr(exc, "code", None) or "error"
    done = (
        Message.update(
            status="failed",
            attempts=Message.attempts + 1,
            error=f"{code}: {exc}"[:2000],
            next_attempt_at=None,
            claimed_until=None,
        )
        .where(mine(message))
        .execute()
    )
    if not done:
        return None
    log.warning("message %s failed for good: %s", message.id, exc)
    _close_pending(message.id, RecipientOutcome("failed", code, str(exc)))
    message = Message.get_by_id(message.id)
    webhook_events.message_event(postern, "message.failed", [message])
    metrics.OUTBOUND.labels("failed").inc()
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
    ``attempt(postern, message_id)`` on each, at most ``limit``. Safe in several
    processes: a message is claimed by moving its time forward by the lease only if
    nobody else has.

    Up to ``[mail] outbox_threads`` attempts run at once, each thread taking the next
    due message when it is free and claiming it just before its attempt (so no claim
    waits long enough for its lease to lapse): a relay or an MX that hangs until its
    deadline holds one thread while the others go on through the queue."""
    due = (Message.status == status) & (Message.next_attempt_at <= utcnow())
    workers = min(postern.config.mail.outbox_threads, Message.select(Message.id).where(due).limit(limit).count())
    taken: set[str] = set()
    take = threading.Lock()

    def next_due():
        with take:
            if len(taken) >= limit:
                return None
            query = Message.select(Message.id, Message.next_attempt_at).where(
                (Message.status == status) & (Message.next_attempt_at <= utcnow())
            )
            if taken:
                query = query.where(Message.id.not_in(list(taken)))
            row = query.order_by(Message.next_attempt_at).first()
            if row is not None:
                taken.add(row.id)
            return row

    def work(_=None) -> int:
        done = 0
        while (row := next_due()) is not None:
            done += _claim_and_run(postern, status, attempt, row)
        return done

    if workers <= 1:
        return work()

    def in_thread(_) -> int:
        with database.connection_context():  # a connection of its own, closed with the thread's work
            return work()

    with ThreadPoolExecutor(workers, thread_name_prefix="postern-outbox") as pool:
        return sum(pool.map(in_thread, range(workers)))


def _claim_and_run(postern, status: str, attempt, row) -> int:
    """1 when this process claimed ``row`` and ran its attempt, 0 when another had it."""
    now = utcnow()
    claimed = (
        Message.update(next_attempt_at=now + lease(postern), claimed_until=now + lease(postern))
        .where((Message.id == row.id) & (Message.status == status) & (Message.next_attempt_at == row.next_attempt_at))
        .execute()
    )
    if not claimed:
        return 0  # another outbox took it
    try:
        attempt(postern, row.id)
    except Exception:  # one bad message must not stop the sweep; its lease expires and it is retried
        log.exception("outbox: %s %s failed unexpectedly", status, row.id)
    return 1
