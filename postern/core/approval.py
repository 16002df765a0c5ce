"""Human approval of outbound mail (docs/mail.md, "Human approval").

An enrollment key or an inbox can require it (``require_approval``). A send from such
an inbox is stored as ``pending_approval`` instead of ``queued``: nothing is delivered,
not even to inboxes here, until an operator or an org admin of the customer approves
it (it then goes the usual way: ``queued``, the first attempt, the outbox) or rejects
it with a note the agent reads. Unreviewed mail expires after
``[mail] approval_expiry_hours`` and is never sent.

The reviewer approves exactly the bytes the agent wrote: there is no way to edit a held
message, so what leaves is what the agent's key sent. Every decision is conditional on
the message still being pending (two reviewers, or a reviewer and the expiry, cannot
both win) and is audited, with its webhook event in the same transaction.
"""

from __future__ import annotations

import logging

from postern.core import audit, enrollment
from postern.core.db import write_transaction
from postern.core.errors import Conflict, InvalidInput, NotFound
from postern.core.ids import well_formed
from postern.core.inboxes import get_inbox
from postern.core.mail.delivery import lease
from postern.core.mail.held import PENDING, hold, requires_approval  # noqa: F401 (the send side, re-exported)
from postern.core.mail.outbound import first_attempt
from postern.core.models import EnrollmentKey, Inbox, Message, MessageRecipient, utcnow
from postern.core.principal import Principal, RequestInfo
from postern.core.tenancy import get_customer
from postern.core.webhooks import events as webhook_events

log = logging.getLogger("postern.approval")

#: Longest reviewer's note; the agent reads it in the message's ``review_note``.
MAX_NOTE = 2000
MAX_LIST = 200
#: Who expires mail nobody reviewed, in the audit log.
EXPIRER = Principal(kind="system", customer_id=None, token_id="approval")  # noqa: S106 (an actor, not a secret)
EXPIRY_INFO = RequestInfo()


def _visible_outbound(principal: Principal, message_id: str) -> Message:
    """An outbound message ``principal`` may review; another tenant's is the same 404
    as a missing one."""
    row = None
    if isinstance(message_id, str) and well_formed(message_id, "msg"):
        query = Message.select().where((Message.id == message_id) & (Message.direction == "outbound"))
        if not principal.is_operator:
            query = query.where(Message.customer == principal.customer_id)
        row = query.first()
    if row is None:
        raise NotFound(f"no message '{str(message_id)[:60]}'")
    return row


def _not_pending(message_id: str, verb: str) -> Conflict:
    status = Message.select(Message.status).where(Message.id == message_id).scalar()
    return Conflict(
        f"message '{message_id}' is {status}, not pending approval: only a pending message can be {verb}",
        code="not_pending_approval",
    )


def _decide(principal: Principal, message: Message, **values) -> bool:
    """Move ``message`` out of ``pending_approval`` if it is still there; False when
    someone (another reviewer, the expiry) decided first."""
    changed = (
        Message.update(reviewed_by=principal.token_id or principal.kind, reviewed_at=utcnow(), **values)
        .where((Message.id == message.id) & (Message.status == PENDING))
        .execute()
    )
    return bool(changed)


def approve(
    postern,
    principal: Principal,
    info: RequestInfo,
    message_id: str,
    *,
    attempt_now: bool = True,
    via_outbox: bool = False,
) -> Message:
    """Approve a pending message as the agent wrote it: ``queued``, then the first
    delivery attempt (with ``attempt_now=False`` the caller makes it, with
    ``postern.core.mail.outbound.first_attempt``; with ``via_outbox`` nobody here does:
    it is due at once and the outbox attempts it on its next pass). 409
    ``not_pending_approval`` for a message that is not pending (approved, rejected or
    expired already)."""
    message = _visible_outbound(principal, message_id)
    claim = utcnow() + lease(postern)
    with write_transaction():
        # The approver's own attempt owns the message for a lease, as a sender's does:
        # the outbox takes it over only if that attempt never happens.
        queued = {"status": "queued", "next_attempt_at": claim, "claimed_until": claim, "approval_expires_at": None}
        if via_outbox:
            queued.update(next_attempt_at=utcnow(), claimed_until=None)
        if not _decide(principal, message, **queued):
            raise _not_pending(message.id, "approved")
        audit.record(
            "message.approve", principal=principal, info=info, target=message.id, customer_id=message.customer_id
        )
        message = Message.get_by_id(message.id)
        webhook_events.message_event(postern, "message.approved", [message])
    log.info("message %s approved by %s", message.id, message.reviewed_by)
    return first_attempt(postern, message) if attempt_now and not via_outbox else message


def check_note(note) -> str:
    if note is None:
        return ""
    if not isinstance(note, str) or len(note) > MAX_NOTE:
        raise InvalidInput(f"note must be text of at most {MAX_NOTE} characters", field="note")
    return note.strip()


def reject(postern, principal: Principal, info: RequestInfo, message_id: str, note: str | None = None) -> Message:
    """Reject a pending message: ``rejected``, never sent; the agent reads ``note``."""
    message = _visible_outbound(principal, message_id)  # first: a foreign id is a 404 whatever the note
    note = check_note(note)
    with write_transaction():
        if not _decide(principal, message, status="rejected", review_note=note or None, approval_expires_at=None):
            raise _not_pending(message.id, "rejected")
        _cancel_recipients(message.id, "rejected")
        audit.record(
            "message.reject", principal=principal, info=info, target=message.id, customer_id=message.customer_id
        )
        message = Message.get_by_id(message.id)
        webhook_events.message_event(postern, "message.rejected", [message])
    log.info("message %s rejected by %s", message.id, message.reviewed_by)
    return message


def expire_due(postern, limit: int = 100) -> int:
    """The outbox's sweep: pending mail past its ``approval_expires_at`` becomes
    ``expired`` (event ``message.expired``). Returns how many expired."""
    now = utcnow()
    due = list(
        Message.select(Message.id)
        .where((Message.status == PENDING) & (Message.approval_expires_at <= now))
        .order_by(Message.approval_expires_at)
        .limit(limit)
    )
    done = 0
    for row in due:
        with write_transaction():
            changed = (
                Message.update(
                    status="expired", error="nobody approved it in time", next_attempt_at=None, approval_expires_at=None
                )
                .where((Message.id == row.id) & (Message.status == PENDING))
                .execute()
            )
            if not changed:
                continue  # decided meanwhile
            _cancel_recipients(row.id, "approval_expired")
            message = Message.get_by_id(row.id)
            audit.record(
                "message.expire",
                principal=EXPIRER,
                info=EXPIRY_INFO,
                target=message.id,
                customer_id=message.customer_id,
            )
            webhook_events.message_event(postern, "message.expired", [message])
        done += 1
    if done:
        log.info("approval: %s pending message(s) expired", done)
    return done


def _cancel_recipients(message_id: str, code: str) -> None:
    """Recipient rows the send stored as queued are closed: this mail never leaves."""
    MessageRecipient.update(status="cancelled", code=code, updated_at=utcnow()).where(
        (MessageRecipient.message == message_id) & (MessageRecipient.status.in_(("queued", "deferred")))
    ).execute()


def list_pending(
    principal: Principal, customer_ref: str | None = None, limit: int | str | None = None
) -> list[Message]:
    """Messages waiting for approval that ``principal`` may review, oldest first; an
    org admin sees its own customer's, an operator every one (or ``customer_ref``'s)."""
    if limit is None:
        limit = 50
    if isinstance(limit, str):
        limit = int(limit) if limit.isdigit() else -1
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LIST:
        raise InvalidInput(f"limit must be an integer from 1 to {MAX_LIST}", field="limit")
    query = Message.select().where(Message.approval_expires_at.is_null(False) & (Message.status == PENDING))
    if not principal.is_operator:
        query = query.where(Message.customer == principal.customer_id)
    if customer_ref:
        query = query.where(Message.customer == get_customer(principal, customer_ref).id)
    return list(query.order_by(Message.received_at, Message.id).limit(limit))


KINDS = ("enrollment", "inbox")


def set_required(principal: Principal, info: RequestInfo, kind: str, object_id: str, required) -> EnrollmentKey | Inbox:
    """Turn approval on or off for an enrollment key (every inbox made under it) or one
    inbox. Mail already pending stays pending: a reviewer still decides it."""
    if kind == "enrollment":
        key = enrollment.get_enrollment_key(principal, object_id)
        model, row = EnrollmentKey, key
    elif kind == "inbox":
        model, row = Inbox, get_inbox(principal, info, object_id, audit_read=False, action="inbox.approval")
    else:
        raise InvalidInput(f"kind must be one of {', '.join(KINDS)}", field="kind")
    # After the lookup: another tenant's id is a 404 whatever the body says, as a missing one.
    if not isinstance(required, bool):
        raise InvalidInput("require_approval must be true or false", field="require_approval")
    with write_transaction():
        model.update(require_approval=required).where(model.id == row.id).execute()
        audit.record(
            f"{'enrollment_key' if kind == 'enrollment' else 'inbox'}.approval",
            principal=principal,
            info=info,
            target=row.id,
            customer_id=row.customer_id,
            code=f"require_approval={'on' if required else 'off'}",
        )
    return model.get_by_id(row.id)
