"""The one outbound path, accepting a send: validate, build MIME, store as ``queued``
under the sender's lease, then make the first attempt (postern.core.mail.delivery).

A send whose recipients are all inboxes here is stored, delivered and recorded ``sent``
in one transaction. Otherwise the message is committed before any backend is asked, so
a crash between storing and delivering is recovered by the outbox when the lease
lapses: an accepted message is sent or failed, never forgotten.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import asdict
from email.utils import make_msgid

import peewee

from postern.core import audit, doorbell, metrics, usage
from postern.core.db import database_fault, write_transaction
from postern.core.errors import Conflict, InvalidInput, NotFound
from postern.core.ids import new_id, well_formed
from postern.core.inboxes import get_inbox
from postern.core.mail import recipients as recipient_rows
from postern.core.mail.compose import (
    SendRequest,
    build_mime,
    parse_send_request,
    usable_message_id,
    validate_address,
)
from postern.core.mail.delivery import deliver, lease, receiver_keeps_mailboxes, record_sent, tell_sent
from postern.core.mail.headers import display_name, neutralise
from postern.core.mail.held import hold, requires_approval
from postern.core.mail.ingest import announce, limits_for, local_inbox, next_seq, snippet_of, store
from postern.core.mail.mime import Mailbox, MailRejected, ParsedMessage, parse
from postern.core.mail.rules import check_local_recipients, check_recipients
from postern.core.mail.threads import normalize_subject
from postern.core.models import Attachment, IdempotencyRecord, Inbox, Message, Thread, utcnow
from postern.core.principal import Principal, RequestInfo
from postern.core.quota import check_quota, payment_refusal
from postern.core.ratelimits.sending import charge_send, remember_recipients
from postern.core.sendingstops import refuse_if_stopped
from postern.core.suppression import suppressed_among

log = logging.getLogger("postern.outbound")


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
    if len(request.recipients) > postern.config.mail.bulk_recipients:
        request = dataclasses.replace(request, bulk=True)  # mail to many looks like bulk to receivers
    recipients = request.recipients
    if not recipients:
        raise InvalidInput("give at least one recipient in to, cc or bcc", field="to")
    check_recipients(inbox, recipients)
    check_local_recipients(inbox.address, recipients)
    refuse_if_stopped(inbox)
    suppressed = refuse_if_all_suppressed(inbox, recipients)
    fresh = charge_send(postern, inbox, recipients)  # before billing: a refused send costs no payment
    decision = check_quota(postern, principal.customer_id, "message.send", len(recipients), info)
    if not decision.allowed:
        raise payment_refusal(decision)

    sender = Mailbox(inbox.address, display_name(neutralise(inbox.display_name)))
    message_id_header = make_msgid(domain=inbox.domain)
    raw = build_mime(sender, request, message_id=message_id_header, in_reply_to=in_reply_to, references=references)
    if len(raw) > max_bytes:
        raise InvalidInput(f"the message would be {len(raw)} bytes; the limit is {max_bytes}", field="attachments")
    held = requires_approval(inbox)  # waits for a human: never the all-local shortcut
    local = None if held else _all_local(postern, [r for r in recipients if r.lower() not in suppressed], raw)
    delivered: list[Message] = []
    try:
        with write_transaction():
            message = _store(
                inbox, request, raw, sender, message_id_header, in_reply_to, references, original, lease(postern)
            )
            _recipient_rows(message.id, recipients, suppressed)
            if idempotency_key is not None:
                IdempotencyRecord.create(
                    inbox=inbox.id, key=idempotency_key, request_hash=request_hash, message=message.id
                )
            audit.record("message.send", principal=principal, info=info, target=message.id)
            usage.message_sent(inbox, message, len(recipients))
            remember_recipients(inbox.customer_id, fresh)
            if local is not None:
                parsed, known = local
                delivered = store(postern, parsed, raw, sender.address, list(known), known, delivered_for=message.id)
                message = record_sent(postern, message, None, attempt=True)  # ours: stored just now
            if held:
                message = hold(postern, message)
            doorbell.ring_in_transaction([inbox.id])
    except peewee.IntegrityError:
        if idempotency_key is not None and (replay := _replay(inbox, idempotency_key, request_hash)) is not None:
            return replay, True  # a concurrent retry with the same key won
        raise
    doorbell.ring_after_commit([inbox.id])
    if local is not None:
        metrics.OUTBOUND.labels(message.status).inc()  # delivered here, at once: sent
        announce(postern, delivered)
        tell_sent(postern, message, None)
        return message, False
    if held or not attempt_now:
        return message, False
    return first_attempt(postern, message), False


def refuse_if_all_suppressed(inbox: Inbox, addresses: list[str]) -> set[str]:
    """Recipients on the customer's suppression list (bounced, complained, unsubscribed
    or added by an admin) are never sent to: each gets status ``suppressed``. When that
    is every recipient the send is refused (422 ``recipients_suppressed``), nothing stored."""
    found = suppressed_among(inbox.customer_id, addresses)
    if found and all(a.lower() in found for a in addresses):
        raise InvalidInput(
            f"every recipient is on the suppression list ({', '.join(sorted(found))}); nothing was sent",
            field="to",
            code="recipients_suppressed",
        )
    return found


def _recipient_rows(message_id: str, addresses: list[str], suppressed: set[str]) -> None:
    recipient_rows.create(message_id, [a for a in addresses if a.lower() not in suppressed])
    if suppressed:
        kept_out = [a for a in addresses if a.lower() in suppressed]
        recipient_rows.create(message_id, kept_out, "suppressed", "recipient_suppressed")


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
    if receiver_keeps_mailboxes(postern):
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
    """Recipients, subject and threading headers of a reply to ``original``. What comes
    from the stored message is text a sender chose: neutralised again here (rows stored
    before ingest neutralised them), and written as text, never decoded once more."""
    people = lambda raw: tuple(_stored_person(p["address"], p.get("name", "")) for p in json.loads(raw))  # noqa: E731
    if original.direction == "inbound":
        to = people(original.reply_to) or (_stored_person(original.from_address, original.from_name),)
    else:
        to = people(original.to_addresses)
    to = _unique(m for m in to if m.address and m.address != inbox.address)
    cc = request.cc
    if reply_all:
        extra = people(original.to_addresses) + people(original.cc_addresses)
        cc = (*cc, *extra)
    seen = {m.address for m in to} | {inbox.address}
    cc = _unique(m for m in cc if m.address and m.address not in seen)
    if not to and cc:
        to, cc = cc[:1], cc[1:]
    subject = neutralise(original.subject)
    if not subject.lower().startswith("re:"):
        subject = f"Re: {subject}"
    in_reply_to = original.message_id_header if usable_message_id(original.message_id_header) else None
    references = tuple([r for r in [*original.references.split(), in_reply_to] if usable_message_id(r)][-20:])
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
    return reply, in_reply_to, references


def _stored_person(address: str, name: str) -> Mailbox:
    """A recipient taken from a stored message: its name as one line of text, and its
    address only if an agent could have given it (else "", which drops it)."""
    try:
        address = validate_address(address, "to") if address else ""
    except InvalidInput:
        address = ""
    return Mailbox(address, display_name(neutralise(name)))


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
        claimed_until=now + claim,
        bulk=request.bulk,
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
