"""Sending limits (docs/limits.md, "Sending limits"): how much mail one inbox and one
customer may send, counted in messages per hour and recipients per day, how many
recipients one message may have, and a fresh domain's ramp of new recipients. Checked
before a send is stored (and before any payment is taken), so a refused send leaves
nothing behind."""

from __future__ import annotations

import hashlib

import peewee

from postern.core.errors import InvalidInput
from postern.core.models import Inbox, KnownRecipient, utcnow
from postern.core.ratelimits.policy import RAMP, Policy, Rate, parse_rate

#: Doublings past which a ramp no longer matters (2**20 new recipients a day).
MAX_DOUBLINGS = 20


def charge_send(postern, inbox, recipients: list[str]) -> list[str]:
    """Refuse a send from ``inbox`` to ``recipients`` past a sending limit: 422
    ``too_many_recipients`` over ``recipients_per_message``, else 429 naming the limit.
    The message, its recipients and a fresh domain's new recipients are counted
    together, or not at all. Returns the recipient hashes the send must remember
    (``remember_recipients``, in its transaction) while its domain ramps up."""
    section = postern.config.limits
    if not section.enabled:
        return []
    count = len(recipients)
    if section.recipients_per_message and count > section.recipients_per_message:
        raise InvalidInput(
            f"{count} recipients; a message may have at most {section.recipients_per_message}",
            field="to",
            code="too_many_recipients",
        )
    items = [
        ("inbox", inbox.id, "send_messages", 1),
        ("customer", inbox.customer_id, "send_messages", 1),
        ("inbox", inbox.id, "send_recipients", count),
        ("customer", inbox.customer_id, "send_recipients", count),
    ]
    fresh = _fresh_domain(section, inbox)
    hashes, ramp = [], []
    if fresh is not None:
        hashes = sorted({_hash(r) for r in recipients})
        new = len(set(hashes) - _known(inbox.customer_id, hashes))
        if new:
            ramp.append((fresh, inbox.domain, new))
    verdict = postern.limiter.charge_all(items, extra=ramp)
    if not verdict.allowed:
        raise verdict.refusal()
    return hashes


def _fresh_domain(section, inbox) -> Policy | None:
    """The day's new-recipient rate of ``inbox``'s domain while it ramps up, else None."""
    start = parse_rate(section.fresh_domain_new_recipients)
    if start is None or not section.fresh_domain_days:
        return None
    now = utcnow()
    if (now - inbox.created_at).days >= section.fresh_domain_days:
        return None  # its domain's first inbox is older still: no look at the others needed
    born = Inbox.select(peewee.fn.MIN(Inbox.created_at)).where(Inbox.domain == inbox.domain).scalar()
    age = (now - born).days if born is not None else 0
    if age >= section.fresh_domain_days:
        return None
    return Policy(RAMP, Rate(start.count * 2 ** min(age, MAX_DOUBLINGS), start.seconds))


def _hash(address: str) -> str:
    """Recipients are remembered by hash: the ramp needs to know "seen before", not who."""
    return hashlib.sha256(address.strip().lower().encode()).hexdigest()


def _known(customer_id: str, hashes: list[str]) -> set[str]:
    query = KnownRecipient.select(KnownRecipient.address_hash).where(
        (KnownRecipient.customer == customer_id) & KnownRecipient.address_hash.in_(hashes)
    )
    return {row.address_hash for row in query}


def remember_recipients(customer_id: str, hashes: list[str]) -> None:
    """Note ``hashes`` as sent to by ``customer_id`` (inside the send's transaction)."""
    if hashes:
        now = utcnow()
        rows = [{"customer": customer_id, "address_hash": h, "first_at": now} for h in hashes]
        KnownRecipient.insert_many(rows).on_conflict_ignore().execute()
