"""The usage ledger (docs/usage.md): what each tenant used, for limits and billing.

Discrete actions (an inbox made, a message sent, a message received) are one
``usage_event`` row each, written by the action inside its own transaction: a rollback
takes the entry with it, and a committed action never lacks one. Each row's ``ref``
names the action ("message.send:msg_…") and is unique; rows go in with ``ON CONFLICT DO
NOTHING``, so however often an action is retried or replayed it is counted once.

API calls are too many for a row each: ``count_calls`` adds to one counter per hour,
customer, enrollment, agent and route class in a single UPSERT.

Bytes stored is not recorded at all: ``summaries`` sums the sizes of the tenant's
message rows when asked, so deleted and expired mail can never leave it wrong.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import peewee

from postern.core import audit, fastsql
from postern.core.db import database
from postern.core.errors import InvalidInput, PermissionDenied
from postern.core.isotime import parse_time
from postern.core.models import Customer, Inbox, Message, UsageCalls, UsageEvent, utcnow
from postern.core.principal import Principal, RequestInfo
from postern.core.ratelimits.policy import ROUTE_CLASSES  # the rate limits' classes: calls count by the same
from postern.core.tenancy import named_customer

INBOX_CREATED, MESSAGE_SENT, MESSAGE_RECEIVED = "inbox.create", "message.send", "message.received"

# Hand-written (postern.core.fastsql): these run inside every ingest, send and API call.
_INSERT_EVENT = (
    'INSERT INTO "usage_event" ("ref", "customer_id", "enrollment_id", "agent_id", "kind", "at", "quantity", "bytes") '
    'VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT ("ref") DO NOTHING'
)
_ADD_CALLS = (
    'INSERT INTO "usage_calls" ("customer_id", "hour", "enrollment_id", "agent_id", "route_class", "calls") '
    'VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT ("customer_id", "hour", "enrollment_id", "agent_id", "route_class") '
    'DO UPDATE SET "calls" = "usage_calls"."calls" + excluded."calls"'
)


def _record(kind: str, object_id: str, inbox, quantity: int = 1, nbytes: int = 0) -> None:
    """One ledger row for ``kind`` done to ``object_id``, charged to ``inbox``'s owner.
    Call inside the action's write transaction."""
    at = UsageEvent.at.db_value(utcnow())
    params = (f"{kind}:{object_id}", inbox.customer_id, inbox.enrollment_id, inbox.agent_id, kind, at, quantity, nbytes)
    fastsql.execute(_INSERT_EVENT, params)


def inbox_created(inbox) -> None:
    _record(INBOX_CREATED, inbox.id, inbox)


def message_sent(inbox, message, recipients: int) -> None:
    """A send accepted from ``inbox``: counted once, when it is stored, whatever its
    delivery does later; a replayed Idempotency-Key never reaches here."""
    _record(MESSAGE_SENT, message.id, inbox, recipients, message.size)


def message_received(inbox, message) -> None:
    """One copy stored into ``inbox`` (mail to two inboxes here is two)."""
    _record(MESSAGE_RECEIVED, message.id, inbox, 1, message.size)


def count_calls(
    customer_id: str,
    enrollment_id: str | None,
    agent_id: str | None,
    route_class: str,
    n: int = 1,
    *,
    at: dt.datetime | None = None,
) -> None:
    """Add ``n`` API calls of ``route_class`` (``ROUTE_CLASSES``) to the hour of ``at``
    (default: now, UTC). An absent enrollment or agent (an admin's call) is counted
    under ''. Inside a transaction it joins it (e.g. the read-audit group commit);
    alone it commits by itself, with the durability read audit rows have."""
    if route_class not in ROUTE_CLASSES:
        raise ValueError(f"route_class must be one of {', '.join(ROUTE_CLASSES)}, not {route_class!r}")
    if n < 1:
        raise ValueError(f"n must be at least 1, not {n}")
    hour = UsageCalls.hour.db_value((at or utcnow()).replace(minute=0, second=0, microsecond=0))
    params = (customer_id, hour, enrollment_id or "", agent_id or "", route_class, n)
    if database.obj.in_transaction():
        fastsql.execute(_ADD_CALLS, params)
        return
    with audit.read_audit_transaction():
        fastsql.execute(_ADD_CALLS, params)


# -- reading ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Usage:
    """A customer's (or one enrollment's) usage over [since, until). ``bytes_stored`` is
    what its mail takes now, whatever the period."""

    customer_id: str
    enrollment_id: str | None
    since: dt.datetime
    until: dt.datetime
    inboxes_created: int = 0
    messages_sent: int = 0
    recipients: int = 0
    bytes_sent: int = 0
    messages_received: int = 0
    bytes_received: int = 0
    bytes_stored: int = 0
    api_calls: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ROUTE_CLASSES, 0))


def _month_start(moment: dt.datetime) -> dt.datetime:
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def period(since: str | None, until: str | None, now: dt.datetime | None = None) -> tuple[dt.datetime, dt.datetime]:
    """[since, until) from ISO 8601 strings; each absent one is the current calendar
    month's (UTC) start or end."""
    start = _month_start(now or utcnow())
    end = _month_start(start + dt.timedelta(days=32))
    since_at = parse_time(since, "since") if since else start
    until_at = parse_time(until, "until") if until else end
    if since_at >= until_at:
        hint = "" if since and until else " (the one not given is this month's start or end)"
        raise InvalidInput(f"since must be before until{hint}", field="until" if until else "since")
    return since_at, until_at


def summaries(
    customer_ids: list[str] | None, *, since: dt.datetime, until: dt.datetime, enrollment_id: str | None = None
) -> list[Usage]:
    """The usage of each customer in ``customer_ids`` (in that order; None: every
    customer, oldest first) in two aggregate queries, whatever the number of customers
    or rows: the ledger and call counters in one, bytes stored in the other.
    ``enrollment_id`` narrows each to that enrollment."""
    named = customer_ids  # None: no filter on customers in the queries
    if customer_ids is None:
        customer_ids = [c.id for c in Customer.select(Customer.id).order_by(Customer.created_at, Customer.id)]
    totals = {c: {} for c in customer_ids}
    stored = dict.fromkeys(customer_ids, 0)
    if customer_ids:
        for customer_id, key, count, quantity, nbytes in _counted(named, since, until, enrollment_id):
            if customer_id in totals:  # not one created since the list was read
                totals[customer_id][key] = (int(count or 0), int(quantity or 0), int(nbytes or 0))
        for customer_id, nbytes in _stored(named, enrollment_id):
            if customer_id in stored:
                stored[customer_id] = int(nbytes or 0)
    return [_usage(c, enrollment_id, since, until, totals[c], stored[c]) for c in customer_ids]


def summary(customer_id: str, *, enrollment_id: str | None = None, since: dt.datetime, until: dt.datetime) -> Usage:
    return summaries([customer_id], since=since, until=until, enrollment_id=enrollment_id)[0]


def _counted(customer_ids, since, until, enrollment_id):
    """(customer, kind or route class, count, quantity, bytes) rows of ``customer_ids``
    (None: every customer)."""
    events = (
        UsageEvent.select(
            UsageEvent.customer,
            UsageEvent.kind,
            peewee.fn.COUNT(UsageEvent.id),
            peewee.fn.SUM(UsageEvent.quantity),
            peewee.fn.SUM(UsageEvent.bytes),
        )
        .where((UsageEvent.at >= since) & (UsageEvent.at < until))
        .group_by(UsageEvent.customer, UsageEvent.kind)
    )
    # A call bucket is an hour: a period counts the hours that start within it.
    calls = (
        UsageCalls.select(
            UsageCalls.customer,
            UsageCalls.route_class,
            peewee.fn.SUM(UsageCalls.calls),
            peewee.Value(0),
            peewee.Value(0),
        )
        .where((UsageCalls.hour >= since) & (UsageCalls.hour < until))
        .group_by(UsageCalls.customer, UsageCalls.route_class)
    )
    if customer_ids is not None:
        events = events.where(UsageEvent.customer.in_(customer_ids))
        calls = calls.where(UsageCalls.customer.in_(customer_ids))
    if enrollment_id is not None:
        events = events.where(UsageEvent.enrollment_id == enrollment_id)
        calls = calls.where(UsageCalls.enrollment_id == enrollment_id)
    return (events + calls).tuples()  # UNION ALL


def _stored(customer_ids, enrollment_id):
    """(customer, sum of message sizes) rows: mail as it is now."""
    query = Message.select(Message.customer, peewee.fn.SUM(Message.size))
    if customer_ids is not None:
        query = query.where(Message.customer.in_(customer_ids))
    if enrollment_id is not None:
        query = query.join(Inbox, on=(Message.inbox == Inbox.id)).where(Inbox.enrollment == enrollment_id)
    return query.group_by(Message.customer).tuples()


def _usage(customer_id, enrollment_id, since, until, totals: dict, stored: int) -> Usage:
    none = (0, 0, 0)
    created, sent, received = (totals.get(k, none) for k in (INBOX_CREATED, MESSAGE_SENT, MESSAGE_RECEIVED))
    return Usage(
        customer_id=customer_id,
        enrollment_id=enrollment_id,
        since=since,
        until=until,
        inboxes_created=created[0],
        messages_sent=sent[0],
        recipients=sent[1],
        bytes_sent=sent[2],
        messages_received=received[0],
        bytes_received=received[2],
        bytes_stored=stored,
        api_calls={c: totals.get(c, none)[0] for c in ROUTE_CLASSES},
    )


def read_usage(
    principal: Principal, info: RequestInfo, customer_ref: str | None, since: str | None, until: str | None
) -> Usage:
    """Usage as ``principal`` may see it: an agent key its own enrollment's; an org admin
    its customer's; an operator (or the CLI) the customer it names."""
    since_at, until_at = period(since, until)
    if principal.kind == "agent":
        customer_id, enrollment_id = principal.customer_id, principal.enrollment_id
    else:
        customer_id, enrollment_id = named_customer(principal, customer_ref).id, None
    audit.record_read("usage.read", principal=principal, info=info, target=enrollment_id or customer_id)
    return summary(customer_id, enrollment_id=enrollment_id, since=since_at, until=until_at)


def read_every_customer(principal: Principal, info: RequestInfo, since: str | None, until: str | None) -> list[Usage]:
    """Every customer's usage, oldest customer first: the operator's report."""
    if not principal.is_operator:
        raise PermissionDenied("only an operator can read every customer's usage", code="operator_only")
    since_at, until_at = period(since, until)
    audit.record_read("usage.read", principal=principal, info=info)
    return summaries(None, since=since_at, until=until_at)
