"""Billing backend ``x402`` (issue 22, docs/billing.md): agents pay per metered action with
x402 v2 payments (``PAYMENT-REQUIRED`` / ``PAYMENT-SIGNATURE`` / ``PAYMENT-RESPONSE``), in
test mode only.

``backend`` is the backend; ``facilitator`` its offline facilitator, which checks EIP-3009
payments on EVM test networks the way a real one does and settles them against a test
ledger without touching a chain; ``store`` keeps settled payments in the database. It needs
the optional ``x402[evm]`` package; Postern imports without it, and choosing the backend
without it is a setup error.
"""

from postern.core.hookspecs import hookimpl
from postern.plugins.billing_x402.backend import X402Billing


@hookimpl
def postern_register_backends(register):
    register("billing", X402Billing.name, X402Billing)
