"""Reading mail: messages and threads of an inbox as a principal may see them, and
the store side of ``wait_for_email``."""

from __future__ import annotations

from postern.core import audit, fastsql
from postern.core.errors import InvalidInput, NotFound
from postern.core.ids import well_formed
from postern.core.inboxes import get_inbox
from postern.core.isotime import parse_time
from postern.core.mail import cursors
from postern.core.mail.messageview import MessageView, view_of, with_attachment_counts
from postern.core.models import Message, Thread
from postern.core.pagination import (
    Page,
    decode_token,
    encode_token,
    newest_first_bound,
    newest_first_page,
    parse_limit,
)
from postern.core.principal import Principal, RequestInfo

DIRECTIONS = ("inbound", "outbound")


def _audit(principal, info, action, target) -> None:
    audit.record_read(action, principal=principal, info=info, target=target)


# What a summary shows (views.message_json without ``full``, and mail/outcome.py for
# outbound status): listings never load raw bytes, bodies, headers or attachment data,
# nor the delivery bookkeeping. Each column fetched costs every row of a page a Python
# object: 38 columns took a 50-message page 217 us to fetch, these 24 take ~140.
_SUMMARY_FIELDS = tuple(
    getattr(Message, name)
    for name in (
        "id", "inbox", "thread", "seq", "direction", "status", "message_id_header", "subject",
        "from_address", "from_name", "envelope_from", "to_addresses", "cc_addresses", "snippet",
        "received_at", "sent_at", "size", "backend", "error", "extraction", "authentication",
        "review_note", "reviewed_at", "approval_expires_at",
    )
)  # fmt: skip


def list_messages(principal: Principal, info: RequestInfo, inbox_id: str, filters: dict, limit, page_token) -> Page:
    """Newest first. Filters: ``thread_id``, ``direction``, ``received_after`` (ISO 8601)."""
    inbox = get_inbox(principal, info, inbox_id, audit_read=False, action="message.list")
    clauses, params = ["inbox_id = ?"], [inbox.id]
    if filters.get("thread_id"):
        clauses.append("thread_id = ?")
        params.append(filters["thread_id"])
    direction = filters.get("direction")
    if direction:
        if direction not in DIRECTIONS:
            raise InvalidInput(f"direction must be one of {', '.join(DIRECTIONS)}", field="direction")
        clauses.append("direction = ?")
        params.append(direction)
    after = filters.get("received_after")
    if after:
        clauses.append("received_at > ?")
        params.append(Message.received_at.db_value(parse_time(after, "received_after")))
    before = newest_first_bound(page_token)
    if before is not None:
        clauses.append("seq < ?")
        params.append(before)
    limit = parse_limit(limit)
    tail = f"WHERE {' AND '.join(clauses)} ORDER BY seq DESC LIMIT ?"
    page = newest_first_page(fastsql.select(Message, _SUMMARY_FIELDS, tail, [*params, limit + 1]), limit, "seq")
    _audit(principal, info, "message.list", inbox.id)
    return Page(with_attachment_counts(page.items), page.next_page_token)


def get_message(principal: Principal, info: RequestInfo, inbox_id: str, message_id: str) -> MessageView:
    inbox = get_inbox(principal, info, inbox_id, audit_read=False, action="message.read")
    message = None
    if well_formed(message_id, "msg"):
        message = Message.get_or_none((Message.id == message_id) & (Message.inbox == inbox.id))
    if message is None:
        raise NotFound(f"no message '{message_id[:60]}' in this inbox")
    _audit(principal, info, "message.read", message.id)
    return view_of(message)


def list_threads(principal: Principal, info: RequestInfo, inbox_id: str, limit, page_token) -> Page:
    """Most recently active first."""
    inbox = get_inbox(principal, info, inbox_id, audit_read=False, action="thread.list")
    query = Thread.select().where(Thread.inbox == inbox.id)
    key = decode_token(page_token, 2)
    if key is not None:
        at = parse_time(key[0], "page_token")
        query = query.where((Thread.last_message_at < at) | ((Thread.last_message_at == at) & (Thread.id < key[1])))
    limit = parse_limit(limit)
    rows = list(query.order_by(Thread.last_message_at.desc(), Thread.id.desc()).limit(limit + 1))
    token = None
    if len(rows) > limit:
        rows = rows[:limit]
        token = encode_token([rows[-1].last_message_at.isoformat(), rows[-1].id])
    _audit(principal, info, "thread.list", inbox.id)
    return Page(rows, token)


def get_thread(principal: Principal, info: RequestInfo, inbox_id: str, thread_id: str):
    """The thread and its messages, oldest first."""
    inbox = get_inbox(principal, info, inbox_id, audit_read=False, action="thread.read")
    thread = None
    if well_formed(thread_id, "thr"):
        thread = Thread.get_or_none((Thread.id == thread_id) & (Thread.inbox == inbox.id))
    if thread is None:
        raise NotFound(f"no thread '{thread_id[:60]}' in this inbox")
    messages = list(Message.select(*_SUMMARY_FIELDS).where(Message.thread == thread.id).order_by(Message.seq))
    _audit(principal, info, "thread.read", thread.id)
    return thread, with_attachment_counts(messages)


def open_wait(principal: Principal, info: RequestInfo, inbox_id: str, after: str | None) -> tuple[str, int, str | None]:
    """Check access once for a wait and resolve where it reads from: ``after``, or when
    absent the agent's delivery cursor (docs/mail.md, "Delivery cursors"). Returns the
    inbox's id (a parked wait holds what it keeps for minutes, thousands at once: not
    the inbox row), the cursor, and the agent whose cursor the wait claims what it hands
    over on: None with ``after``, which moves no stored cursor."""
    inbox = get_inbox(principal, info, inbox_id, audit_read=False, action="message.wait")
    if after not in (None, ""):
        cursor, claimant = parse_cursor(after), None
    elif principal.agent_id is None:  # not an agent (waits are agent calls): from now
        cursor, claimant = inbox.last_seq, None
    else:
        cursor, claimant = cursors.position(principal.agent_id, inbox.id), principal.agent_id
    _audit(principal, info, "message.wait", inbox.id)
    return inbox.id, cursor, claimant


def inbound_after(inbox_id: str, cursor: int, limit: int) -> tuple[list[MessageView], int]:
    """Inbound messages newer than ``cursor`` (at most ``limit`` scanned, oldest first),
    and the cursor after them. The inbox's own sent mail advances the cursor without
    being returned: a waiter wants what arrives, not what it sent."""
    return inbound_after_each([(inbox_id, cursor, limit)])[0]


def inbound_after_each(reads: list[tuple[str, int, int]]) -> list[tuple[list[MessageView], int]]:
    """``inbound_after`` for each ``(inbox_id, cursor, limit)``, in one statement per
    ``fastsql.EACH_PARTS`` reads and one for the attachment counts of up to 50 messages:
    the inboxes a ring woke together (core/readbatch.py)."""
    tail = "WHERE inbox_id = ? AND seq > ? ORDER BY seq LIMIT ?"
    pages = fastsql.select_each(Message, _SUMMARY_FIELDS, tail, reads, "seq", nothing=("", 0, 0))
    inbound = [[m for m in rows if m.direction == "inbound"] for rows in pages]
    views = iter(with_attachment_counts([m for rows in inbound for m in rows]))
    return [
        ([next(views) for _ in shown], rows[-1].seq if rows else cursor)
        for (_, cursor, _), rows, shown in zip(reads, pages, inbound, strict=True)
    ]


def parse_cursor(value: str) -> int:
    try:
        cursor = int(value)
    except (TypeError, ValueError):
        raise InvalidInput("after must be a cursor returned by this API", field="after") from None
    if not 0 <= cursor < 2**63:
        raise InvalidInput("after must be a cursor returned by this API", field="after")
    return cursor
