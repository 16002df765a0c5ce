"""Deleting stored mail: one message, by its agent or an admin, or many at once by the
retention sweep (``postern.core.mail.retention``); both through ``remove``.

What goes with a message, in its one write transaction (docs/retention.md): its
attachments, the download links minted for it or its attachments, its
``wait_for_code`` handovers, the ``Idempotency-Key`` record of the send that made it
(and anything else whose foreign key cascades from it, such as WildDuck's pending Sent
copy), and its thread once the thread holds nothing else; a thread that keeps messages
has its ``message_count`` lowered. The inbox's sequence and every delivery cursor stay as
they are: a cursor never goes back, and waits read the store, so a deleted message is
never handed out.
"""

from __future__ import annotations

import collections

import peewee

from postern.core import audit
from postern.core.db import write_transaction
from postern.core.errors import Conflict, NotFound
from postern.core.ids import well_formed
from postern.core.inboxes import get_inbox
from postern.core.models import Attachment, CodeHandover, DownloadLink, IdempotencyRecord, Message, Thread
from postern.core.principal import Principal, RequestInfo

#: Outbound messages the outbox still holds a claim on: deleting one would pull a send
#: out from under it. Deleted by hand once sent or failed; the sweep leaves them.
IN_FLIGHT = ("queued", "sending")


def delete_message(postern, principal: Principal, info: RequestInfo, inbox_id: str, message_id: str) -> None:
    """Delete one message of an inbox ``principal`` may see, audited ``message.delete``.
    Another tenant's (or enrollment's) inbox or message is the same 404 as a missing one.

    The receive backend is not asked: WildDuck's API as Postern uses it has no call to
    delete one message, and Postern keeps no WildDuck message id to name it by, so a
    WildDuck mailbox keeps its copy (a person reading it over IMAP still sees it). The
    watcher does not store it again: its key stays in ``wildduck_seen`` while it is
    within the watcher's overlap, and after that it is older than the watermark."""
    inbox = get_inbox(principal, info, inbox_id, audit_read=False, action="message.delete")
    message = None
    if well_formed(message_id, "msg"):
        message = (
            Message.select(Message.id, Message.status)
            .where((Message.id == message_id) & (Message.inbox == inbox.id))
            .first()
        )
    if message is None:
        raise NotFound(f"no message '{message_id[:60]}' in this inbox")
    if message.status in IN_FLIGHT:
        raise Conflict(
            f"message '{message.id}' is still being sent ({message.status}); delete it once it is sent or failed",
            code="message_in_flight",
        )
    with write_transaction():
        if not remove([message.id], inbox.id):
            raise NotFound(f"no message '{message_id[:60]}' in this inbox")  # a concurrent delete won
        # The tenant's, not the caller's: an operator's delete shows in the org admin's log.
        audit.record("message.delete", principal=principal, info=info, target=message.id, customer_id=inbox.customer_id)


def remove(message_ids: list[str], inbox_id: str) -> int:
    """Delete these messages of one inbox and what hangs off them; call inside a write
    transaction. Messages still in flight (``IN_FLIGHT``) and ids not in the inbox are
    left alone. Returns how many messages were deleted."""
    if not message_ids:
        return 0
    rows = list(
        Message.select(Message.id, Message.thread).where(
            (Message.id.in_(message_ids)) & (Message.inbox == inbox_id) & (Message.status.not_in(IN_FLIGHT))
        )
    )
    if not rows:
        return 0
    ids = [m.id for m in rows]
    attachment_ids = [a.id for a in Attachment.select(Attachment.id).where(Attachment.message.in_(ids))]
    # Links name what they open by id, with no foreign key: a link made before the delete
    # must not outlive it (its redeem is then a 404, as for a link never made).
    DownloadLink.delete().where(DownloadLink.object_id.in_(ids + attachment_ids)).execute()
    # The rest would cascade; deleted by name so nothing depends on the database doing it.
    CodeHandover.delete().where(CodeHandover.message.in_(ids)).execute()
    IdempotencyRecord.delete().where(IdempotencyRecord.message.in_(ids)).execute()
    Attachment.delete().where(Attachment.message.in_(ids)).execute()
    removed = Message.delete().where(Message.id.in_(ids)).execute()
    per_thread = collections.Counter(m.thread_id for m in rows)
    for thread_id, count in per_thread.items():
        Thread.update(message_count=Thread.message_count - count).where(Thread.id == thread_id).execute()
    # A thread left empty goes too (its subject is the mail's). The count test is what a
    # concurrent ingest into the thread changes (under the row lock on PostgreSQL).
    Thread.delete().where(
        Thread.id.in_(list(per_thread))
        & (Thread.message_count <= 0)
        & ~peewee.fn.EXISTS(Message.select(Message.id).where(Message.thread == Thread.id))
    ).execute()
    return removed
