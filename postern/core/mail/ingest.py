"""The one inbound path: every receive backend hands raw bytes and an envelope here.

Parse (within limits), then one transaction stores the message for every local
recipient inbox, with its thread and attachments; only after the commit do the
doorbell ring and the ``postern_message_received`` hook fire. A caller that answers
an SMTP ``250`` after ``ingest`` returns has the message durably stored.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass

from postern.core import doorbell, fastsql, usage
from postern.core.db import write_transaction
from postern.core.ids import new_id
from postern.core.mail.extract import extract
from postern.core.mail.htmltext import html_to_text
from postern.core.mail.mime import MailLimits, MailRejected, ParsedMessage, clean, parse
from postern.core.mail.threads import find_thread, normalize_subject
from postern.core.models import Attachment, Inbox, Message, Thread, utcnow
from postern.core.plugins import notify
from postern.core.webhooks import events as webhook_events

log = logging.getLogger("postern.ingest")


def limits_for(postern) -> MailLimits:
    mail = postern.config.mail
    return MailLimits(mail.max_message_bytes, mail.max_mime_depth, mail.max_mime_parts)


def snippet_of(text: str) -> str:
    return " ".join(text[:2000].split())[:200]


_INBOX_FIELDS = fastsql.all_fields(Inbox)


MAX_ADDRESS = 320


def storable_address(address: str) -> bool:
    """Whether ``address`` could be any inbox's address at all. SMTP hands over whatever
    the client sent: NUL, control characters, or bytes that were not UTF-8 (kept as
    surrogates). SQLite compares those as text and finds nothing; PostgreSQL refuses
    to receive them, and the lookup raised instead of answering "no such mailbox"."""
    return (
        0 < len(address) <= MAX_ADDRESS
        and address.isprintable()
        and not any("\ud800" <= c <= "\udfff" for c in address)
    )


def local_inbox(address: str) -> Inbox | None:
    """The inbox an address belongs to, if this Postern serves it."""
    address = address.strip().lower()
    if not storable_address(address):
        return None
    return fastsql.select_one(Inbox, _INBOX_FIELDS, "WHERE address = ?", (address,))


#: What ``receiving_inbox`` answers for an inbox of a suspended customer.
SUSPENDED = object()

_RECEIVING = (
    "WHERE address = ? AND NOT EXISTS "
    "(SELECT 1 FROM customer WHERE customer.id = inbox.customer_id AND customer.suspended_at IS NOT NULL)"
)


def receiving_inbox(address: str):
    """``local_inbox`` for the SMTP listener's RCPT: the inbox, None when no inbox has
    the address, or ``SUSPENDED`` when its customer is suspended. The suspension is a
    condition on the one statement; only an address it does not find costs a second."""
    address = address.strip().lower()
    if not storable_address(address):
        return None
    found = fastsql.select_one(Inbox, _INBOX_FIELDS, _RECEIVING, (address,))
    if found is None and local_inbox(address) is not None:
        return SUSPENDED
    if found is None and address.startswith("bounce-"):
        from postern.core.mail import reportintake  # rare: only for bounce addresses

        if reportintake.verp_target(address) is not None:
            return reportintake.REPORTS
    return found


def ingest(
    postern,
    raw: bytes,
    envelope_from: str,
    recipients: list[str],
    known: dict | None = None,
    delivered_for: str | None = None,
) -> list[Message]:
    """Store ``raw`` once per local inbox among ``recipients``; returns the stored rows.

    ``known`` maps addresses to the ``Inbox`` rows a caller already looked up (the SMTP
    listener does at RCPT), saving a query per recipient. Raises ``MailRejected`` for
    a message refused for good (size, MIME limits) and lets database errors propagate,
    so the SMTP layer answers 4xx and the sender retries. ``delivered_for`` names an
    outbound message whose local delivery this is: it is marked done in the same
    transaction, so a retry can never deliver it twice.
    """
    parsed = parse(raw, limits_for(postern))
    reading = readable(postern, parsed, envelope_from)  # before the write lock: pure CPU
    with write_transaction():
        stored = store(postern, parsed, raw, envelope_from, recipients, known, delivered_for, reading)
    announce(postern, stored)
    return stored


def store(
    postern,
    parsed: ParsedMessage,
    raw: bytes,
    envelope_from: str,
    recipients: list[str],
    known: dict | None = None,
    delivered_for: str | None = None,
    reading: Readable | None = None,
    tls: str | None = None,
    message_id: str | None = None,
) -> list[Message]:
    """The transactional half of ``ingest``: call inside a write transaction, and
    ``announce`` the result only once that transaction has committed. ``message_id``:
    the id to store a single recipient's copy under (one given out before, as a
    quarantined copy's is)."""
    known = known or {}
    reading = reading or readable(postern, parsed, envelope_from)
    stored = []
    for address in dict.fromkeys(r.strip().lower() for r in recipients):
        inbox = known.get(address) or local_inbox(address)
        if inbox is None:
            continue  # not ours: the listener refused it at RCPT already
        message = _store(inbox, parsed, raw, envelope_from, reading, tls, message_id)
        usage.message_received(inbox, message)
        stored.append(message)
    if not stored:
        raise MailRejected("no local recipient", smtp_code="550 5.1.1", code="no_recipient")
    if delivered_for is not None:
        fastsql.execute('UPDATE "message" SET "local_done" = ? WHERE "id" = ?', (True, delivered_for))
    doorbell.ring_in_transaction(m.inbox_id for m in stored)
    webhook_events.message_event(postern, "message.received", stored)
    return stored


def announce(postern, stored: list[Message]) -> None:
    """After the commit: wake waiters and tell plugins. Nothing here may fail the
    caller, or the sender would retry and the message would be stored twice, so
    failures are logged with the message ids (``notify`` never raises)."""
    try:
        doorbell.ring_after_commit([m.inbox_id for m in stored])
    except OSError:
        log.exception("doorbell failed after storing %s; waiters will re-check", [m.id for m in stored])
    for message in stored:
        notify(postern, "postern_message_received", message=message)


@dataclass(frozen=True)
class Readable:
    """What a reader gets from a parsed message beyond its parts: the text (derived
    from the HTML when there is no text part) and the codes and links in it."""

    text: str
    extraction: str  # Extraction.to_json()
    #: The sender verdicts as JSON (postern.core.mail.verdicts); '' when not checked.
    authentication: str = ""


def readable(postern, parsed: ParsedMessage, envelope_from: str) -> Readable:
    """Never raises: mail that cannot be read better is still stored as it came."""
    text = parsed.text
    try:
        if not text.strip():
            text = html_to_text(parsed.html)
        if not postern.config.mail.extract_codes:
            return Readable(text, "")
        sender = parsed.sender.address if parsed.sender else envelope_from
        return Readable(text, extract(parsed.subject, text, parsed.html, sender).to_json())
    except Exception:  # a bug here must not refuse mail
        log.exception("could not derive text or codes from a message from %s", clean(envelope_from)[:320])
        return Readable(text, "")


def _store(
    inbox: Inbox,
    parsed: ParsedMessage,
    raw: bytes,
    envelope_from: str,
    reading: Readable,
    tls: str | None = None,
    message_id: str | None = None,
) -> Message:
    seq = next_seq(inbox.id)
    sender = parsed.sender.address if parsed.sender else ""
    thread = find_thread(inbox.id, parsed.subject, parsed.in_reply_to, parsed.references, sender or None)
    now = utcnow()
    if thread is None:
        # Statements in hand-written SQL (see fastsql): this is the SMTP hot path.
        thread = fastsql.insert(
            Thread,
            dict(
                customer=inbox.customer_id,
                inbox=inbox.id,
                subject=parsed.subject,
                normalized_subject=normalize_subject(parsed.subject),
                message_count=1,
                created_at=now,
                last_message_at=now,
            ),
        )
    else:
        fastsql.execute(
            'UPDATE "thread" SET "message_count" = "message_count" + 1, "last_message_at" = ? WHERE "id" = ?',
            (Thread.last_message_at.db_value(now), thread.id),
        )
    message_id = message_id or new_id("msg")
    message = fastsql.insert(
        Message,
        dict(
            id=message_id,
            customer=inbox.customer_id,
            inbox=inbox.id,
            thread=thread.id,
            seq=seq,
            direction="inbound",
            status="received",
            message_id_header=parsed.message_id or f"<{message_id}@{inbox.domain}>",
            in_reply_to=parsed.in_reply_to,
            references=" ".join(parsed.references),
            subject=parsed.subject,
            from_address=sender,
            from_name=parsed.sender.name if parsed.sender else "",
            to_addresses=json.dumps([asdict(m) for m in parsed.to]),
            cc_addresses=json.dumps([asdict(m) for m in parsed.cc]),
            reply_to=json.dumps([asdict(m) for m in parsed.reply_to]),
            # SMTP hands MAIL FROM over as sent: bytes that are not UTF-8 arrive as
            # surrogates, which no database driver encodes, so storing failed and the
            # listener answered 451 to every retry of the message.
            envelope_from=clean(envelope_from)[:320],
            sent_at=parsed.date,
            received_at=now,
            # A mail with only an HTML part gets the text a reader of it sees.
            text=reading.text,
            html=parsed.html,
            snippet=snippet_of(reading.text),
            extraction=reading.extraction,
            authentication=reading.authentication,
            headers=json.dumps(parsed.headers),
            size=len(raw),
            raw=raw,
            tls=tls,
        ),
    )
    for item in parsed.attachments:
        fastsql.insert(
            Attachment,
            dict(
                message=message.id,
                filename=item.filename,
                content_type=item.content_type,
                content_id=item.content_id,
                inline=item.inline,
                size=len(item.data),
                sha256=hashlib.sha256(item.data).hexdigest(),
                data=item.data,
            ),
        )
    return message


def next_seq(inbox_id: str) -> int:
    """Take the inbox's next sequence number. The UPDATE holds the inbox row's lock
    (SQLite: the database's) until commit, so deliveries to one inbox commit in
    sequence order: a waiter that has seen seq N can never later meet N-1."""
    sql = 'UPDATE "inbox" SET "last_seq" = "last_seq" + 1 WHERE "id" = ? RETURNING "last_seq"'
    return fastsql.execute(sql, (inbox_id,)).fetchone()[0]
