"""Who is calling and from where: what every core action receives for checks and audit."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

SCOPES = ("mailbox:create", "mailbox:read", "mailbox:send")


@dataclass(frozen=True)
class RequestInfo:
    """Request id and client address, quoted by audit rows; the x402 ``PAYMENT-SIGNATURE``
    header for a billing backend that takes payments (docs/billing.md)."""

    request_id: str | None = None
    client_addr: str | None = None
    payment: str | None = None
    #: Written by the billing backend during the request, read by the API after it:
    #: ``payment_response`` (the PAYMENT-RESPONSE header) and ``payment_key`` (the payment
    #: to release if the action fails). Mutable on purpose; not part of equality.
    billing: dict = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class Principal:
    """An authenticated caller.

    ``kind`` is ``admin`` (org admin token; ``customer_id`` None for operator-wide
    tokens), ``agent`` (agent key) or ``cli`` (a local operator at the command line).
    """

    kind: str
    customer_id: str | None
    token_id: str | None = None
    key_prefix: str | None = None
    agent_id: str | None = None
    enrollment_id: str | None = None
    scopes: frozenset[str] = field(default_factory=frozenset)
    expires_at: dt.datetime | None = None

    @property
    def is_operator(self) -> bool:
        """May act on every tenant: the CLI and customer-less admin tokens."""
        return self.kind == "cli" or (self.kind == "admin" and self.customer_id is None)


CLI = Principal(kind="cli", customer_id=None, token_id="cli")  # noqa: S106 (an actor, not a secret)
