"""Whether a customer may perform a metered action: the billing backend, then plugins."""

from __future__ import annotations

from postern.core.backends import QuotaDecision


def check_quota(postern, customer_id: str, action: str, quantity: int = 1) -> QuotaDecision:
    """Ask the billing backend and every ``postern_check_quota`` plugin; any refusal wins.

    Plugins can add limits but never lift the billing backend's, so the first
    refusal is returned as is (its reason and ``retry_after`` reach the caller).
    """
    decision = postern.backend("billing").check(customer_id, action, quantity)
    if not decision.allowed:
        return decision
    for answer in postern.hook.postern_check_quota(
        postern=postern, customer_id=customer_id, action=action, quantity=quantity
    ):
        if answer is not None and not answer.allowed:
            return answer
    return QuotaDecision(allowed=True)
