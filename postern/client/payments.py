"""x402 payments by the SDK (docs/billing.md): with a test wallet, a 402 that carries an
x402 ``PAYMENT-REQUIRED`` offer is paid with the official ``x402`` client and the call made
once more with ``PAYMENT-SIGNATURE``. Needs ``pip install 'x402[evm]'``.

Only the networks given are paid on (default Base Sepolia): the SDK never signs a payment
on a network the caller did not name, so a server cannot make it spend real money."""

from __future__ import annotations

from collections.abc import Iterable

PAYMENT_REQUIRED, PAYMENT_SIGNATURE, PAYMENT_RESPONSE = "PAYMENT-REQUIRED", "PAYMENT-SIGNATURE", "PAYMENT-RESPONSE"


class X402Payer:
    """Signs x402 payments with ``account`` (an ``eth_account`` ``LocalAccount``)."""

    def __init__(self, account, *, networks: Iterable[str] = ("eip155:84532",)):
        try:
            from x402 import x402ClientSync
            from x402.http import x402HTTPClientSync
            from x402.mechanisms.evm.exact import ExactEvmClientScheme
        except ImportError as exc:
            raise ImportError(f"paying with x402 needs pip install 'x402[evm]' ({exc})") from None
        client = x402ClientSync()
        for network in networks:
            client.register(network, ExactEvmClientScheme(account))
        self.address = account.address
        self._http = x402HTTPClientSync(client)

    def signature(self, offer: str, url: str) -> str:
        """The ``PAYMENT-SIGNATURE`` paying ``offer`` (a ``PAYMENT-REQUIRED`` header)."""
        headers, _ = self._http.handle_402_response({PAYMENT_REQUIRED: offer}, b"", url)
        return headers[PAYMENT_SIGNATURE]
