"""Which thread a message belongs to.

1. In-Reply-To and References: the newest message of this inbox whose Message-ID is
   among them gives the thread.
2. Fallback, for clients that drop those headers: a subject with a reply prefix
   (Re:, Fwd:, AW:, SV:…) joins the inbox's most recent thread with the same
   normalised subject, if that thread saw a message in the last 7 days and the
   sender took part in it.
3. Otherwise a new thread.
"""

from __future__ import annotations

import datetime as dt
import json
import re

from postern.core import fastsql
from postern.core.models import Message, Thread, utcnow

REPLY_PREFIX = re.compile(r"^\s*((re|fw|fwd|aw|sv|wg|vs)(\[\d+\])?\s*:\s*)+", re.IGNORECASE)
FALLBACK_WINDOW = dt.timedelta(days=7)


_THREAD_FIELDS = fastsql.all_fields(Thread)


def normalize_subject(subject: str) -> str:
    # Indexed: 500 characters stay under PostgreSQL's btree entry limit in any script.
    return " ".join(REPLY_PREFIX.sub("", subject).split()).casefold()[:500]


def find_thread(inbox_id: str, subject: str, in_reply_to: str | None, references: list[str], sender: str | None):
    ids = [ref for ref in [in_reply_to, *reversed(references)] if ref]
    if ids:
        # Hand-written SQL (see fastsql): every received message asks this.
        marks = ", ".join("?" * len(ids))
        tail = f"WHERE id = (SELECT thread_id FROM message WHERE inbox_id = ? AND message_id_header IN ({marks}) "
        tail += "ORDER BY seq DESC LIMIT 1)"
        parent = fastsql.select_one(Thread, _THREAD_FIELDS, tail, [inbox_id, *ids])
        if parent is not None:
            return parent
    if sender and REPLY_PREFIX.match(subject):
        candidate = (
            Thread.select()
            .where(
                (Thread.inbox == inbox_id)
                & (Thread.normalized_subject == normalize_subject(subject))
                & (Thread.last_message_at >= utcnow() - FALLBACK_WINDOW)
            )
            .order_by(Thread.last_message_at.desc())
            .first()
        )
        if candidate is not None and _took_part(candidate, sender):
            return candidate
    return None


def _took_part(thread: Thread, address: str) -> bool:
    for msg in Message.select(Message.from_address, Message.to_addresses, Message.cc_addresses).where(
        Message.thread == thread.id
    ):
        people = {msg.from_address} | {
            m["address"] for m in json.loads(msg.to_addresses) + json.loads(msg.cc_addresses)
        }
        if address in people:
            return True
    return False
