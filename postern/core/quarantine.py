"""Quarantine and the inbound policy, as humans (admin tokens, the CLI) manage them.

Held mail lives in its own table, not in ``message``: no agent query (lists, waits,
threads, codes, webhooks) can meet it by mistake. Releasing it stores it into its inbox
as newly received mail, so waits and webhooks see it then, once.
"""

from __future__ import annotations

import dataclasses

from postern.core import audit
from postern.core.db import write_transaction
from postern.core.errors import Conflict, InvalidInput, NotFound
from postern.core.inboxes import get_inbox
from postern.core.mail import policy
from postern.core.mail.ingest import announce, limits_for, local_inbox, readable, store
from postern.core.mail.mime import MailRejected, ParsedMessage, parse
from postern.core.models import InboundPolicy, Inbox, Message, QuarantinedMessage, utcnow
from postern.core.principal import Principal, RequestInfo
from postern.core.visibility import get_visible, visible


def hold(inbox, parsed: ParsedMessage, raw: bytes, envelope_from: str, reason: str, authentication: str, tls):
    """Keep one inbox's copy back (inside the receiving transaction); returns the row."""
    row = QuarantinedMessage.create(
        customer=inbox.customer_id,
        inbox=inbox.id,
        reason=reason,
        envelope_from=envelope_from[:320],
        from_address=(parsed.sender.address if parsed.sender else "")[:320],
        subject=parsed.subject[:998],
        authentication=authentication,
        tls=tls,
        size=len(raw),
        raw=raw,
    )
    return row


#: What a listing shows: every column but the message itself (up to the size limit each).
LISTED = [f for f in QuarantinedMessage._meta.sorted_fields if f is not QuarantinedMessage.raw]


def visible_held(principal: Principal, inbox_id: str | None = None):
    query = visible(QuarantinedMessage, principal).select(*LISTED)
    return query.where(QuarantinedMessage.inbox == inbox_id) if inbox_id else query


def get_held(principal: Principal, held_id: str) -> QuarantinedMessage:
    return get_visible(QuarantinedMessage, principal, held_id, "quarantined message")


def parsed_held(postern, row: QuarantinedMessage) -> ParsedMessage:
    try:
        return parse(bytes(row.raw), limits_for(postern))
    except MailRejected as exc:  # the limits were lowered since it arrived
        raise Conflict(f"the held message no longer parses within [mail] limits: {exc.message}") from None


def release(postern, principal: Principal, info: RequestInfo, held_id: str) -> Message:
    """Store the held copy into its inbox as mail received now (its verdict and TLS as
    they were at receive); waits, lists and webhooks see it from the commit on."""
    row = get_held(principal, held_id)
    raw = bytes(row.raw)
    parsed = parsed_held(postern, row)
    reading = dataclasses.replace(readable(postern, parsed, row.envelope_from), authentication=row.authentication)
    inbox = Inbox.get_by_id(row.inbox_id)
    with write_transaction():
        if not QuarantinedMessage.delete().where(QuarantinedMessage.id == row.id).execute():
            raise NotFound(f"no quarantined message '{held_id[:60]}'")  # a concurrent release or discard won
        known = {inbox.address: local_inbox(inbox.address)}
        [message] = store(
            postern, parsed, raw, row.envelope_from, [inbox.address], known, None, reading, row.tls, row.message_id
        )
        audit.record(
            "quarantine.release",
            principal=principal,
            info=info,
            target=row.id,
            customer_id=row.customer_id,
            code=f"message={message.id}",
        )
    announce(postern, [message])
    return message


def discard(principal: Principal, info: RequestInfo, held_id: str) -> None:
    row = get_held(principal, held_id)
    with write_transaction():
        if not QuarantinedMessage.delete().where(QuarantinedMessage.id == row.id).execute():
            raise NotFound(f"no quarantined message '{held_id[:60]}'")
        audit.record("quarantine.discard", principal=principal, info=info, target=row.id, customer_id=row.customer_id)


# -- the policy --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PolicyView:
    customer_id: str
    inbox_id: str | None
    #: What this level sets (None: inherited).
    dmarc_reject: str | None
    unauthenticated: str | None
    #: What applies, after inheritance.
    effective: policy.Policy


def _target(principal: Principal, info: RequestInfo, customer_ref: str | None, inbox_id: str | None):
    """(customer id, inbox id or None) of the level named, as ``principal`` may see it."""
    from postern.core.tenancy import named_customer

    if inbox_id:
        inbox = get_inbox(principal, info, inbox_id, audit_read=False, action="inbound_policy")
        return inbox.customer_id, inbox.id
    return named_customer(principal, customer_ref).id, None


def read_policy(postern, principal: Principal, info: RequestInfo, customer_ref=None, inbox_id=None) -> PolicyView:
    customer_id, inbox_id = _target(principal, info, customer_ref, inbox_id)
    audit.record_read("inbound_policy.read", principal=principal, info=info, target=inbox_id or customer_id)
    return _view(postern, customer_id, inbox_id)


def set_policy(postern, principal: Principal, info: RequestInfo, body: dict, customer_ref=None, inbox_id=None):
    """Set (or, with null, clear) this level's answers; fields left out keep theirs."""
    unknown = set(body) - set(policy.QUESTIONS)
    if unknown:
        raise InvalidInput(f"unknown field '{sorted(unknown)[0]}'; known: {', '.join(policy.QUESTIONS)}")
    values = {q: policy.check_action(q, body[q]) for q in policy.QUESTIONS if q in body}
    customer_id, inbox_id = _target(principal, info, customer_ref, inbox_id)
    scope = inbox_id or ""
    with write_transaction():
        # One statement, so two first settings at once cannot both insert.
        insert = InboundPolicy.insert(customer=customer_id, scope=scope, **values)
        if values:
            conflict = [InboundPolicy.customer, InboundPolicy.scope]
            update = {getattr(InboundPolicy, q): v for q, v in values.items()}
            insert.on_conflict(
                conflict_target=conflict, update={**update, InboundPolicy.updated_at: utcnow()}
            ).execute()
        else:
            insert.on_conflict_ignore().execute()
        changes = " ".join(f"{q}={v or 'inherit'}" for q, v in values.items())
        audit.record(
            "inbound_policy.set",
            principal=principal,
            info=info,
            target=scope or customer_id,
            customer_id=customer_id,
            code=changes[:60] or None,
        )
    return _view(postern, customer_id, inbox_id)


def _view(postern, customer_id: str, inbox_id: str | None) -> PolicyView:
    row = policy.levels(customer_id, inbox_id).get(inbox_id or "")
    return PolicyView(
        customer_id=customer_id,
        inbox_id=inbox_id,
        dmarc_reject=row.dmarc_reject if row else None,
        unauthenticated=row.unauthenticated if row else None,
        effective=policy.effective(postern.config, customer_id, inbox_id),
    )
