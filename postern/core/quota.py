"""Whether a customer may perform a metered action: the billing backend, then plugins."""

from __future__ import annotations

import inspect

from postern.core.backends import QuotaDecision
from postern.core.errors import PaymentRequired


def check_quota(postern, customer_id: str, action: str, quantity: int = 1, info=None) -> QuotaDecision:
    """Ask the billing backend and every ``postern_check_quota`` plugin; any refusal wins.

    Plugins can add limits but never lift the billing backend's, so the first
    refusal is returned as is (its reason and ``retry_after`` reach the caller).
    ``info`` (the request's ``RequestInfo``) reaches backends whose ``check`` takes it.
    """
    backend = postern.backend("billing")
    if info is not None and "info" in inspect.signature(backend.check).parameters:
        decision = backend.check(customer_id, action, quantity, info=info)
    else:  # a backend written before ``info`` existed
        decision = backend.check(customer_id, action, quantity)
    if not decision.allowed:
        return decision
    for answer in postern.hook.postern_check_quota(
        postern=postern, customer_id=customer_id, action=action, quantity=quantity
    ):
        if answer is not None and not answer.allowed:
            return answer
    return QuotaDecision(allowed=True)


def payment_refusal(decision: QuotaDecision) -> PaymentRequired:
    """The 402 a refused ``decision`` is answered with: its code (``payment_required``
    when it names none), reason, ``Retry-After`` and headers."""
    exc = PaymentRequired(
        decision.reason or "billing refused", code=decision.code or None, retry_after=decision.retry_after
    )
    exc.headers = dict(decision.headers)
    return exc
