"""A message with its attachments' metadata: what the message views are built from.

A leaf module (models and fastsql only), so webhook events can build a message's JSON
without importing ``reading``, which imports ``inboxes``, which queues webhook events:
that was an import cycle.
"""

from __future__ import annotations

from dataclasses import dataclass

from postern.core import fastsql
from postern.core.models import Attachment, Message, MessageRecipient

_ATTACHMENT_META_FIELDS = fastsql.all_fields(Attachment, without=("data",))


@dataclass(frozen=True)
class MessageView:
    message: Message
    attachments: list[Attachment]
    #: Outbound only, in full views: where each recipient stands (``message_recipient``).
    recipients: list[MessageRecipient] | None = None
    #: Summaries (with_attachment_counts) know how many attachments, not which.
    counted: int | None = None

    @property
    def attachment_count(self) -> int:
        return len(self.attachments) if self.counted is None else self.counted


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


COUNTS_PER_QUERY = 50


def with_attachment_counts(messages: list[Message]) -> list[MessageView]:
    """Each message with how many attachments it has, in one query per 50 messages (a
    page's worth: longer lists would each be a statement of their own): what a summary
    shows. Cheaper than ``with_attachments`` by the metadata rows it does not build."""
    counts: dict[str, int] = {}
    ids = [m.id for m in messages]
    for start in range(0, len(ids), COUNTS_PER_QUERY):
        chunk = ids[start : start + COUNTS_PER_QUERY]
        marks = ", ".join("?" * len(chunk))
        sql = f"SELECT message_id, COUNT(*) FROM attachment WHERE message_id IN ({marks}) GROUP BY message_id"
        counts.update(fastsql.execute(sql, chunk).fetchall())
    return [MessageView(m, [], counted=counts.get(m.id, 0)) for m in messages]


def view_of(message: Message) -> MessageView:
    """One message's full view: its attachments and, when outbound, its recipients."""
    view = with_attachments([message])[0]
    if message.direction != "outbound":
        return view
    rows = list(
        MessageRecipient.select().where(MessageRecipient.message == message.id).order_by(MessageRecipient.address)
    )
    return MessageView(message, view.attachments, rows)
