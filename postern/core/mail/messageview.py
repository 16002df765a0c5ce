"""A message with its attachments' metadata: what the message views are built from.

A leaf module (models and fastsql only), so webhook events can build a message's JSON
without importing ``reading``, which imports ``inboxes``, which queues webhook events:
that was an import cycle.
"""

from __future__ import annotations

from dataclasses import dataclass

from postern.core import fastsql
from postern.core.models import Attachment, Message

_ATTACHMENT_META_FIELDS = fastsql.all_fields(Attachment, without=("data",))


@dataclass(frozen=True)
class MessageView:
    message: Message
    attachments: list[Attachment]


def with_attachments(messages: list[Message]) -> list[MessageView]:
    """Each message with its attachments' metadata (never their bytes), in one query."""
    ids = [m.id for m in messages]
    by_message: dict[str, list[Attachment]] = {i: [] for i in ids}
    if ids:
        marks = ", ".join("?" * len(ids))
        tail = f"WHERE message_id IN ({marks}) ORDER BY id"
        for att in fastsql.select(Attachment, _ATTACHMENT_META_FIELDS, tail, ids):
            by_message[att.message_id].append(att)
    return [MessageView(m, by_message[m.id]) for m in messages]


def view_of(message: Message) -> MessageView:
    return with_attachments([message])[0]
