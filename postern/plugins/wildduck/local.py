"""Agent-to-agent mail with the wildduck backend: an outbound message to another inbox
of this Postern is delivered over WildDuck's LMTP like mail from outside, so a person
reading the recipient's mailbox over IMAP sees it, and the watcher ingests it (once,
like any other message) rather than the core storing it directly.

Recipients are recorded against the message's bytes before and after the hand-over
(postern.plugins.wildduck.lmtp), so the outbox's retry after a partial failure, or after
the process died with WildDuck's answer unrecorded, reaches only those without it.
"""

from __future__ import annotations

from postern.core.backends import PermanentFailure, TemporaryFailure
from postern.core.db import write_transaction
from postern.core.mail.ingest import ingest
from postern.core.models import Message
from postern.plugins.wildduck.lmtp import deliver_once
from postern.plugins.wildduck.models import WildDuckMailbox
from postern.plugins.wildduck.sent import CLOCK_MARGIN


def deliver_local(postern, receiver, message: Message, recipients: list[str]) -> None:
    """Deliver ``message`` to local ``recipients`` and mark its local part done. Raises
    ``TemporaryFailure`` (the outbox retries) or ``PermanentFailure``."""
    raw = bytes(message.raw)
    mailboxes = {r for r in recipients if _in_wildduck(r)}
    landed = lambda rcpt: _in_mailbox(receiver.api, message, rcpt)  # noqa: E731
    failed = deliver_once(receiver, message.envelope_from, sorted(mailboxes), raw, landed=landed) if mailboxes else {}
    if failed:
        temporary = {r: reply for r, reply in failed.items() if reply[0] < 500}
        rcpt, (code, text) = next(iter((temporary or failed).items()))
        error = f"WildDuck answered {code} {text} for {rcpt}"
        raise TemporaryFailure(error, retry_after=5) if temporary else PermanentFailure(error, code="wildduck_refused")
    others = [r for r in recipients if r not in mailboxes]
    if others:
        # Inboxes made before WildDuck was the backend have no mailbox there: the core stores them.
        ingest(postern, raw, message.envelope_from, others, delivered_for=message.id)
    else:
        with write_transaction():
            Message.update(local_done=True).where(Message.id == message.id).execute()


def _in_mailbox(api, message: Message, address: str) -> bool:
    """Whether ``message`` (by its Message-ID) is in any folder the watcher follows for
    ``address``: asked only when an earlier hand-over's answer was never recorded."""
    from postern.core.models import Inbox

    row = WildDuckMailbox.select().join(Inbox).where(Inbox.address == address.strip().lower()).first()
    folders = api.inbound_folders(row.user_id) if row else None
    since = (message.sent_at or message.received_at) - CLOCK_MARGIN
    for folder in folders or []:
        if any(m.message_id == message.message_id_header for m in api.received_since(row.user_id, folder, since) or []):
            return True
    return False


def _in_wildduck(address: str) -> bool:
    from postern.core.models import Inbox

    query = WildDuckMailbox.select().join(Inbox).where(Inbox.address == address.strip().lower())
    return query.exists()
