"""Billing backend ``x402`` (issue 22): agents pay per metered action with x402 v2 payments
(``PAYMENT-REQUIRED`` / ``PAYMENT-SIGNATURE`` / ``PAYMENT-RESPONSE``).

Not registered as a backend yet. ``facilitator`` is its test mode: an in-process facilitator
that checks EIP-3009 payments on EVM test networks the way a real one does, and settles
them against a test ledger without touching a chain. It needs the optional ``x402[evm]``
package; Postern imports without it, and building a facilitator without it is a setup error.
"""
