"""The send side of human approval (postern.core.approval): whether an inbox's outbound
mail must wait for a reviewer, and holding a just-stored message.

A leaf module of its own so the outbound path can use it without importing
``postern.core.approval``, which imports the outbound path for an approved message's
first delivery attempt.
"""

from __future__ import annotations

import datetime as dt

from postern.core.models import EnrollmentKey, Inbox, Message, utcnow
from postern.core.webhooks import events as webhook_events

PENDING = "pending_approval"


def requires_approval(inbox: Inbox) -> bool:
    """Whether mail sent from ``inbox`` waits for a human: the inbox asks, or its
    enrollment key does (read now, so turning it on applies to the very next send)."""
    if inbox.require_approval:
        return True
    query = EnrollmentKey.select(EnrollmentKey.require_approval).where(EnrollmentKey.id == inbox.enrollment_id)
    return bool(query.scalar())


def hold(postern, message: Message) -> Message:
    """Make a just-stored outbound message wait for approval; inside the send's
    transaction, so the message and its ``message.pending_approval`` event commit together."""
    expires = utcnow() + dt.timedelta(hours=postern.config.mail.approval_expiry_hours)
    Message.update(status=PENDING, approval_expires_at=expires, next_attempt_at=None, claimed_until=None).where(
        Message.id == message.id
    ).execute()
    message = Message.get_by_id(message.id)
    webhook_events.message_event(postern, "message.pending_approval", [message])
    return message
