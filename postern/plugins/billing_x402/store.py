"""Settled x402 payments in Postern's database (migration m0026): what makes a payment
pay for exactly one action.

A payment is claimed (a row under its unique key) *before* it is settled, so two
requests carrying it cannot both settle; the row records what it paid for (customer,
action, amount). ``used`` is true while an action holds the payment: an action that
fails after settlement releases it, and a retry of that action with the same payment
reuses the settlement instead of paying again. Mail cannot be unsent, so settlement
comes before the action, never after.
"""

from __future__ import annotations

from enum import Enum

import peewee

from postern.core.db import write_transaction
from postern.core.models import BaseModel, Customer, utcnow

SETTLING, SETTLED = "settling", "settled"


class X402Payment(BaseModel):
    key = peewee.CharField(primary_key=True, max_length=250)  # network|asset|payer|nonce
    customer = peewee.ForeignKeyField(Customer, on_delete="CASCADE")
    action = peewee.CharField(max_length=20)
    amount = peewee.CharField(max_length=80)  # atomic units of the asset
    payer = peewee.CharField(max_length=42)
    state = peewee.CharField(max_length=10)  # settling, settled
    used = peewee.BooleanField(default=False)
    transaction = peewee.CharField(max_length=100, default="")
    response = peewee.TextField(default="")  # the PAYMENT-RESPONSE header sent back
    created_at = peewee.DateTimeField(default=utcnow)


class Claim(Enum):
    NEW = "new"  # never seen: settle it
    REUSE = "reuse"  # settled for this very action, whose earlier attempt failed
    REPLAYED = "replayed"  # already paid for an action, or being settled right now
    ELSEWHERE = "elsewhere"  # settled for another customer, action or amount


def claim(key: str, customer_id: str, action: str, amount: str, payer: str) -> tuple[Claim, X402Payment | None]:
    """Take the payment under ``key`` for this action, atomically."""
    try:
        return _claim(key, customer_id, action, amount, payer)
    except peewee.IntegrityError:  # PostgreSQL: another request inserted it between our read and write
        return Claim.REPLAYED, None


def _claim(key, customer_id, action, amount, payer):
    with write_transaction():
        row = X402Payment.get_or_none(X402Payment.key == key)
        if row is None:
            row = X402Payment.create(
                key=key, customer=customer_id, action=action, amount=amount, payer=payer, state=SETTLING, used=True
            )
            return Claim.NEW, row
        if (row.customer_id, row.action, row.amount) != (customer_id, action, amount):
            return Claim.ELSEWHERE, row
        taken = (
            X402Payment.update(used=True)
            .where((X402Payment.key == key) & (X402Payment.state == SETTLED) & ~X402Payment.used)
            .execute()
        )
        return (Claim.REUSE if taken else Claim.REPLAYED), row


def settled(key: str, transaction: str, response: str) -> None:
    with write_transaction():
        X402Payment.update(state=SETTLED, transaction=transaction, response=response).where(
            X402Payment.key == key
        ).execute()


def forget(key: str) -> None:
    """Settlement failed: nothing was paid, so the payment may be presented again."""
    with write_transaction():
        X402Payment.delete().where((X402Payment.key == key) & (X402Payment.state == SETTLING)).execute()


def release(key: str) -> None:
    """The action failed after its payment settled: a retry may use the payment."""
    with write_transaction():
        X402Payment.update(used=False).where((X402Payment.key == key) & (X402Payment.state == SETTLED)).execute()
