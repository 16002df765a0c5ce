"""Billing backend ``free``: every metered action is allowed and nothing is charged.

Mailbox quotas still apply: they belong to enrollment keys, enforced by the core,
and any plugin can refuse an action through ``postern_check_quota``.
"""

from postern.core.backends import BillingBackend, QuotaDecision
from postern.core.hookspecs import hookimpl


class FreeBilling(BillingBackend):
    """Allows everything; for self-hosters who do not meter usage."""

    name = "free"
    description = "no metering: every action is allowed"

    def check(self, customer_id: str, action: str, quantity: int = 1) -> QuotaDecision:
        return QuotaDecision(allowed=True)

    def record(self, customer_id: str, action: str, quantity: int = 1) -> None:
        """Nothing to record: the free plan keeps no usage ledger."""


@hookimpl
def postern_register_backends(register):
    register("billing", FreeBilling.name, FreeBilling)
