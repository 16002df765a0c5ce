"""The one outbound path: validate, build MIME, store as ``queued``, then deliver.

Delivery gives each recipient served by this Postern its copy through the ingest
path (agent-to-agent needs no outside server; a receive backend with mailboxes of its
own, such as WildDuck, delivers there instead) and hands the rest to the send
backend. A temporary failure leaves the message ``queued`` with a retry time that
the outbox service honours; a crash between storing and delivering is recovered the
same way, so an accepted message is sent or failed, never forgotten.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from dataclasses import asdict
from email.utils import make_msgid

import peewee

from postern.core import audit, dkim, doorbell
from postern.core.backends import (
    BackendError,
    OutboundAttachment,
    OutboundMessage,
    PermanentFailure,
    Receiver,
    TemporaryFailure,
)
from postern.core.db import database_fault, write_transaction
from postern.core.errors import Conflict, InvalidInput, NotFound, PaymentRequired
from postern.core.ids import new_id, well_formed
from postern.core.inboxes import get_inbox
from postern.core.mail.compose import SendRequest, build_mime, parse_send_request
from postern.core.mail.ingest import announce, ingest, limits_for, local_inbox, next_seq, snippet_of, store
from postern.core.mail.mime import Mailbox, MailRejected, ParsedMessage, parse
from postern.core.mail.threads import normalize_subject
from postern.core.models import Attachment, IdempotencyRecord, Inbox, Message, Thread, utcnow
from postern.core.principal import Principal, RequestInfo
from postern.core.quota import check_quota
from postern.core.runtime import BackendUnavailable
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


def send(
    postern,
    principal: Principal,
    info: RequestInfo,
    inbox_id: str,
    body: dict,
    *,
    idempotency_key: str | None = None,
    reply_to_message: str | None = None,
    attempt_now: bool = True,
) -> tuple[Message, bool]:
    """Send (or reply) from ``inbox_id``. Returns (message, replayed): a retried request
    with the same ``Idempotency-Key`` returns the first message and sends nothing.
    With ``attempt_now=False`` the message is only stored (queued, under this sender's
    lease); the caller makes the first attempt with ``first_attempt``."""
    inbox = get_inbox(principal, info, inbox_id, audit_read=False, action="message.send")
    request_hash = hashlib.sha256(json.dumps([body, reply_to_message], sort_keys=True).encode()).hexdigest()
    if idempotency_key is not None:
        if not 1 <= len(idempotency_key) <= 200:
            raise InvalidInput("Idempotency-Key must be 1 to 200 characters", field="Idempotency-Key")
        replay = _replay(inbox, idempotency_key, request_hash)
        if replay is not None:
            return replay, True

    max_bytes = postern.config.mail.max_message_bytes
    original = _original(inbox, reply_to_message) if reply_to_message else None
    request = parse_send_request(body, max_bytes=max_bytes, reply=original is not None)
    in_reply_to, references = None, ()
    if original is not None:
        request, in_reply_to, references = _as_reply(inbox, original, request, bool(body.get("reply_all")))
    recipients = request.recipients
    if not recipients:
        raise InvalidInput("give at least one recipient in to, cc or bcc", field="to")
    decision = check_quota(postern, principal.customer_id, "message.send", len(recipients))
    if not decision.allowed:
        raise PaymentRequired(decision.reason or "billing refused", retry_after=decision.retry_after)

    sender = Mailbox(inbox.address, inbox.display_name)
    message_id_header = make_msgid(domain=inbox.domain)
    raw = build_mime(sender, request, message_id=message_id_header, in_reply_to=in_reply_to, references=references)
    if len(raw) > max_bytes:
        raise InvalidInput(f"the message would be {len(raw)} bytes; the limit is {max_bytes}", field="attachments")
    local = _all_local(postern, request.recipients, raw)
    delivered: list[Message] = []
    try:
        with write_transaction():
            message = _store(
                inbox, request, raw, sender, message_id_header, in_reply_to, references, original, lease(postern)
            )
            if idempotency_key is not None:
                IdempotencyRecord.create(
                    inbox=inbox.id, key=idempotency_key, request_hash=request_hash, message=message.id
                )
            audit.record("message.send", principal=principal, info=info, target=message.id)
            if local is not None:
                parsed, known = local
                delivered = store(postern, parsed, raw, sender.address, list(known), known, delivered_for=message.id)
                message = _record_sent(postern, message.id, None, attempt=True)
            doorbell.ring_in_transaction([inbox.id])
    except peewee.IntegrityError:
        if idempotency_key is not None and (replay := _replay(inbox, idempotency_key, request_hash)) is not None:
            return replay, True  # a concurrent retry with the same key won
        raise
    doorbell.ring_after_commit(postern.config.data_dir, [inbox.id])
    if local is not None:
        announce(postern, delivered)
        _tell_plugins(postern.hook.postern_message_sent, postern=postern, message=message, result=None)
        return message, False
    if not attempt_now:
        return message, False
    return first_attempt(postern, message), False


def first_attempt(postern, message: Message) -> Message:
    """The sender's own delivery attempt, right after the message was committed."""
    try:
        return deliver(postern, message.id)
    except peewee.PeeweeException as exc:
        # The message is committed: an error now would make the caller send it again.
        # It stays queued under this attempt's lease, and the outbox takes it over when
        # the lease lapses, as if this process had died here.
        if database_fault(exc) is None:
            raise
        log.warning(
            "message %s stored; its first attempt failed on the database (%s): the outbox retries", message.id, exc
        )
        return message


def _all_local(postern, recipients: list[str], raw: bytes) -> tuple[ParsedMessage, dict] | None:
    """When every recipient is an inbox here, the parsed message and the inboxes by
    address, so the send stores, delivers and records itself in one transaction (one
    commit, not three). Otherwise, or when our own limits refuse the message, None:
    ``deliver`` then takes the usual path and reports the refusal as it always does."""
    if _receiver_keeps_mailboxes(postern):
        return None  # its own delivery (e.g. WildDuck's LMTP) goes through ``deliver``
    known = {}
    for address in dict.fromkeys(r.strip().lower() for r in recipients):
        inbox = local_inbox(address)
        if inbox is None:
            return None
        known[address] = inbox
    try:
        return parse(raw, limits_for(postern)), known
    except MailRejected:
        return None


def _replay(inbox: Inbox, key: str, request_hash: str) -> Message | None:
    record = IdempotencyRecord.get_or_none((IdempotencyRecord.inbox == inbox.id) & (IdempotencyRecord.key == key))
    if record is None:
        return None
    if record.request_hash != request_hash:
        raise Conflict("this Idempotency-Key was used for a different request", code="idempotency_key_reused")
    return Message.get_by_id(record.message_id)


def _original(inbox: Inbox, message_id: str) -> Message:
    original = None
    if well_formed(message_id, "msg"):
        original = Message.get_or_none((Message.id == message_id) & (Message.inbox == inbox.id))
    if original is None:
        raise NotFound(f"no message '{message_id[:60]}' in this inbox")
    return original


def _as_reply(inbox: Inbox, original: Message, request: SendRequest, reply_all: bool):
    """Recipients, subject and threading headers of a reply to ``original``."""
    people = lambda raw: tuple(Mailbox(p["address"], p.get("name", "")) for p in json.loads(raw))  # noqa: E731
    if original.direction == "inbound":
        to = people(original.reply_to) or (Mailbox(original.from_address, original.from_name),)
    else:
        to = people(original.to_addresses)
    to = _unique(m for m in to if m.address and m.address != inbox.address)
    cc = request.cc
    if reply_all:
        extra = people(original.to_addresses) + people(original.cc_addresses)
        cc = (*cc, *extra)
    seen = {m.address for m in to} | {inbox.address}
    cc = _unique(m for m in cc if m.address not in seen)
    if not to and cc:
        to, cc = cc[:1], cc[1:]
    subject = original.subject
    if not subject.lower().startswith("re:"):
        subject = f"Re: {subject}"
    references = tuple([*original.references.split(), original.message_id_header][-20:])
    reply = SendRequest(
        to=to,
        cc=cc,
        bcc=request.bcc,
        subject=subject[:998],
        text=request.text,
        html=request.html,
        reply_to=(),
        headers=request.headers,
        attachments=request.attachments,
    )
    return reply, original.message_id_header, references


def _unique(mailboxes) -> tuple[Mailbox, ...]:
    """First occurrence of each address wins (names differ between headers)."""
    found: dict[str, Mailbox] = {}
    for m in mailboxes:
        found.setdefault(m.address, m)
    return tuple(found.values())


def _store(
    inbox, request: SendRequest, raw, sender, message_id_header, in_reply_to, references, original, claim
) -> Message:
    now = utcnow()
    if original is not None:
        thread = Thread.get_by_id(original.thread_id)
    else:
        thread = Thread.create(
            customer=inbox.customer_id,
            inbox=inbox.id,
            subject=request.subject,
            normalized_subject=normalize_subject(request.subject),
            created_at=now,
            last_message_at=now,
        )
    Thread.update(message_count=Thread.message_count + 1, last_message_at=now).where(Thread.id == thread.id).execute()
    message = Message.create(
        id=new_id("msg"),
        customer=inbox.customer_id,
        inbox=inbox.id,
        thread=thread.id,
        seq=next_seq(inbox.id),
        direction="outbound",
        status="queued",
        message_id_header=message_id_header,
        in_reply_to=in_reply_to,
        references=" ".join(references),
        subject=request.subject,
        from_address=sender.address,
        from_name=sender.name,
        to_addresses=json.dumps([asdict(m) for m in request.to]),
        cc_addresses=json.dumps([asdict(m) for m in request.cc]),
        reply_to=json.dumps([asdict(m) for m in request.reply_to]),
        envelope_from=sender.address,
        envelope_to=json.dumps(request.recipients),
        sent_at=now,
        received_at=now,
        text=request.text,
        html=request.html,
        snippet=snippet_of(request.text),
        headers=json.dumps([list(h) for h in request.headers]),
        size=len(raw),
        raw=raw,
        next_attempt_at=now + claim,  # the sender's claim; the outbox takes over only if it lapses
    )
    for att in request.attachments:
        Attachment.create(
            message=message,
            filename=att.filename,
            content_type=att.content_type,
            content_id=att.content_id,
            inline=att.inline,
            size=len(att.data),
            sha256=hashlib.sha256(att.data).hexdigest(),
            data=att.data,
        )
    return message


def deliver(postern, message_id: str) -> Message:
    """One delivery attempt; updates the row and fires the sent/failed hook."""
    message = Message.get_by_id(message_id)
    if message.status != "queued":
        return message  # delivered meanwhile by another attempt
    recipients = json.loads(message.envelope_to)
    local = [r for r in recipients if local_inbox(r) is not None]
    remote = [r for r in recipients if r not in local]
    try:
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


def _receiver_keeps_mailboxes(postern) -> bool:
    """Whether the receive backend has a local delivery of its own (``deliver_local``)."""
    try:
        receiver = postern.backend("receive")
    except BackendUnavailable:
        return False
    return type(receiver).deliver_local is not Receiver.deliver_local


def _deliver_local(postern, message: Message, local: list[str]) -> None:
    """Local recipients: the receive backend's own delivery if it has one (a mailbox
    store such as WildDuck must hold the mail too), else straight through ingest."""
    try:
        receiver = postern.backend("receive")
    except BackendUnavailable:
        receiver = None
    if receiver is None or not receiver.deliver_local(postern, message, local):
        ingest(postern, bytes(message.raw), message.envelope_from, local, delivered_for=message.id)


def mark_sent(postern, message: Message, result, *, attempt: bool) -> Message:
    """Record the final, successful outcome and announce it (``message.sent`` and the hook).
    ``attempt`` counts a delivery attempt (not for a confirmation that completed)."""
    with write_transaction():
        message = _record_sent(postern, message.id, result, attempt=attempt)
    _tell_plugins(postern.hook.postern_message_sent, postern=postern, message=message, result=result)
    return message


def _record_sent(postern, message_id: str, result, *, attempt: bool) -> Message:
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
    raw = bytes(message.raw)
    if getattr(backend, "dkim_sign", False):
        try:
            raw = dkim.sign_as(postern, message.envelope_from, raw)
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
    log.info("message %s: temporary failure (%s); attempt %s, retry in %ss", message.id, exc, attempts, delay)
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
    _tell_plugins(postern.hook.postern_message_failed, postern=postern, message=message, error=exc)
    return message


def _tell_plugins(hook, **kwargs) -> None:
    """Call an outcome hook after the outcome is committed. A plugin's exception is
    logged, never raised: the send succeeded (or failed) whatever a plugin thinks, and
    raising here would answer 500 for a committed send, inviting a duplicate."""
    try:
        hook(**kwargs)
    except Exception:
        log.exception("a %s hook failed for %s", hook.name, kwargs["message"].id)


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
