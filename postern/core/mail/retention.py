"""Message retention: how long a customer's or one inbox's mail is kept, and the sweep
that deletes what is older (docs/retention.md).

A level's setting is a ``retention_policy`` row: ``days`` N keeps mail N days after it
was received, None keeps it forever. An inbox's own row wins over its customer's, None
included; with no row of its own the inbox follows its customer, and with none at all
mail is kept forever. Only admins (and the CLI) set it.

The sweep runs in the outbox service (``postern.core.coreservices``): for each inbox with
a retention it deletes, oldest first, at most ``batch`` expired messages per write
transaction through ``deletion.remove`` (the same deletion as ``DELETE …/messages/{id}``),
and writes one ``message.purge`` audit row per batch with the count, never one per message.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from postern.core import audit
from postern.core.db import write_transaction
from postern.core.errors import InvalidInput
from postern.core.inboxes import get_inbox
from postern.core.mail import deletion
from postern.core.models import AuditEvent, Inbox, Message, RetentionPolicy, utcnow
from postern.core.principal import Principal, RequestInfo

MIN_DAYS, MAX_DAYS = 1, 36500
#: Messages deleted per write transaction (and per audit row) by the sweep.
BATCH = 500
#: Who the sweep's audit rows name as actor.
SWEEPER = Principal(kind="system", customer_id=None, token_id="retention")  # noqa: S106 (an actor, not a secret)
SWEEP_INFO = RequestInfo()


def check_days(value) -> int | None:
    """``days`` as a body gives it: an integer 1..36500, or None (keep forever)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not MIN_DAYS <= value <= MAX_DAYS:
        raise InvalidInput(f"days must be an integer from {MIN_DAYS} to {MAX_DAYS}, or null", field="days")
    return value


def parse_body(body) -> int | None:
    if not isinstance(body, dict):
        raise InvalidInput("the body must be a JSON object with 'days'")
    unknown = sorted(set(body) - {"days"})
    if unknown:
        raise InvalidInput(f"unknown field '{unknown[0]}'; known: days", field=unknown[0])
    if "days" not in body:
        raise InvalidInput("days is required: an integer from 1 to 36500, or null to keep mail forever", field="days")
    return check_days(body["days"])


@dataclasses.dataclass(frozen=True)
class RetentionView:
    customer_id: str
    inbox_id: str | None
    #: Whether this level has a setting of its own (an inbox without one follows its customer).
    set_here: bool
    #: This level's own setting (None: forever, or not set).
    days: int | None
    #: What applies to this level's mail, after inheritance (None: kept forever).
    effective_days: int | None


def _target(principal: Principal, info: RequestInfo, customer_ref: str | None, inbox_id: str | None):
    """(customer id, inbox id or None) of the level named, as ``principal`` may see it."""
    from postern.core.tenancy import named_customer

    if inbox_id:
        inbox = get_inbox(principal, info, inbox_id, audit_read=False, action="retention")
        return inbox.customer_id, inbox.id
    return named_customer(principal, customer_ref).id, None


def _view(customer_id: str, inbox_id: str | None) -> RetentionView:
    scopes = ["", inbox_id] if inbox_id else [""]
    rows = {
        r.scope: r
        for r in RetentionPolicy.select().where(
            (RetentionPolicy.customer == customer_id) & (RetentionPolicy.scope.in_(scopes))
        )
    }
    own = rows.get(inbox_id or "")
    effective = own if own is not None else rows.get("")
    return RetentionView(
        customer_id=customer_id,
        inbox_id=inbox_id,
        set_here=own is not None,
        days=own.days if own else None,
        effective_days=effective.days if effective else None,
    )


def read_retention(principal: Principal, info: RequestInfo, customer_ref=None, inbox_id=None) -> RetentionView:
    customer_id, inbox_id = _target(principal, info, customer_ref, inbox_id)
    audit.record_read("retention.read", principal=principal, info=info, target=inbox_id or customer_id)
    return _view(customer_id, inbox_id)


def set_retention(principal: Principal, info: RequestInfo, days, customer_ref=None, inbox_id=None) -> RetentionView:
    """Set this level's retention: ``days`` N, or None to keep its mail forever (for an
    inbox: whatever its customer sets)."""
    days = check_days(days)
    customer_id, inbox_id = _target(principal, info, customer_ref, inbox_id)
    scope = inbox_id or ""
    with write_transaction():
        # One statement, so two first settings at once cannot both insert.
        RetentionPolicy.insert(customer=customer_id, scope=scope, days=days, updated_at=utcnow()).on_conflict(
            conflict_target=[RetentionPolicy.customer, RetentionPolicy.scope],
            update={RetentionPolicy.days: days, RetentionPolicy.updated_at: utcnow()},
        ).execute()
        audit.record(
            "retention.set",
            principal=principal,
            info=info,
            target=scope or customer_id,
            customer_id=customer_id,
            code=f"days={days if days is not None else 'forever'}",
        )
    return _view(customer_id, inbox_id)


def clear_retention(principal: Principal, info: RequestInfo, customer_ref=None, inbox_id=None) -> RetentionView:
    """Remove this level's own setting: an inbox follows its customer again; a customer's
    mail is kept forever (the default)."""
    customer_id, inbox_id = _target(principal, info, customer_ref, inbox_id)
    scope = inbox_id or ""
    with write_transaction():
        RetentionPolicy.delete().where(
            (RetentionPolicy.customer == customer_id) & (RetentionPolicy.scope == scope)
        ).execute()
        audit.record(
            "retention.clear", principal=principal, info=info, target=scope or customer_id, customer_id=customer_id
        )
    return _view(customer_id, inbox_id)


# -- the sweep ----------------------------------------------------------------------------


def retained_inboxes() -> dict[str, tuple[str, int]]:
    """Every inbox whose mail expires: inbox id -> (customer id, days)."""
    own: dict[str, RetentionPolicy] = {}
    customers: dict[str, int] = {}
    for row in RetentionPolicy.select():
        if row.scope:
            own[row.scope] = row
        elif row.days is not None:
            customers[row.customer_id] = row.days
    found = {scope: (r.customer_id, r.days) for scope, r in own.items() if r.days is not None}
    if customers:
        query = Inbox.select(Inbox.id, Inbox.customer).where(Inbox.customer.in_(list(customers)))
        for inbox in query:
            if inbox.id not in own:
                found[inbox.id] = (inbox.customer_id, customers[inbox.customer_id])
    return found


def purge_inbox(inbox_id: str, customer_id: str, days: int, *, batch: int = BATCH, now: dt.datetime | None = None):
    """Delete one batch of ``inbox_id``'s mail received more than ``days`` ago, in one
    write transaction with its ``message.purge`` audit row. Returns how many went.

    Reads the oldest ``batch`` messages by sequence (the inbox's own index, so a sweep
    of an inbox with nothing expired reads one page, however big the inbox) and takes
    those received before the cutoff, stopping at the first newer one: a message stored
    out of order is purged late, never early."""
    cutoff = (now or utcnow()) - dt.timedelta(days=days)
    rows = (
        Message.select(Message.id, Message.received_at, Message.status)
        .where(Message.inbox == inbox_id)
        .order_by(Message.seq)
        .limit(batch)
    )
    expired = []
    for row in rows:
        if row.received_at >= cutoff:
            break
        if row.status not in deletion.IN_FLIGHT:
            expired.append(row.id)
    if not expired:
        return 0
    with write_transaction():
        removed = deletion.remove(expired, inbox_id)
        if removed:
            audit.record(
                "message.purge",
                principal=SWEEPER,
                info=SWEEP_INFO,
                target=inbox_id,
                customer_id=customer_id,
                code=f"count={removed} days={days}",
            )
    return removed


def purge_audit(keep_days: int, *, batch: int = BATCH, now: dt.datetime | None = None) -> int:
    """Delete one batch of audit rows older than ``keep_days`` (``[audit] keep_days``; 0
    keeps them forever), oldest first by the ``at`` index, with one ``audit.purge`` row
    saying how many went. The audit log keeps its own period, apart from the mail's:
    purging a message never removes the rows that tell who read or deleted it."""
    if keep_days <= 0:
        return 0
    cutoff = (now or utcnow()) - dt.timedelta(days=keep_days)
    ids = [
        row.id
        for row in AuditEvent.select(AuditEvent.id).where(AuditEvent.at < cutoff).order_by(AuditEvent.at).limit(batch)
    ]
    if not ids:
        return 0
    with write_transaction():
        removed = AuditEvent.delete().where(AuditEvent.id.in_(ids)).execute()
        audit.record("audit.purge", principal=SWEEPER, info=SWEEP_INFO, code=f"count={removed} days={keep_days}")
    return removed


def purge_expired(postern=None, *, batch: int = BATCH, now: dt.datetime | None = None) -> int:
    """One round of the sweep: at most one batch per inbox with a retention, and one of
    audit rows past ``[audit] keep_days``. Returns how many rows went; the outbox calls
    it again while it returns any."""
    total = 0
    for inbox_id, (customer_id, days) in retained_inboxes().items():
        total += purge_inbox(inbox_id, customer_id, days, batch=batch, now=now)
    if postern is not None:
        total += purge_audit(postern.config.audit.keep_days, batch=batch, now=now)
    return total
