"""Billing backend ``x402`` (docs/billing.md), test mode only: a priced action is answered
402 with an x402 v2 offer in ``PAYMENT-REQUIRED``; the client retries with
``PAYMENT-SIGNATURE``; Postern matches, verifies and *settles* the payment before the
action (mail cannot be unsent), and the API returns ``PAYMENT-RESPONSE``.

The protocol is the official ``x402`` package's (``x402ResourceServerSync`` with the exact
EVM scheme); settlement goes to the offline facilitator (``facilitator.py``) or, with
``facilitator_url``, to a real facilitator over HTTP, on test networks either way.

x402 does not bind a payment to a resource: every offer carries ``extra.postern`` =
"<action>:<customer>", echoed in the payment's ``accepted`` and compared, so a payment
made for one customer's inbox cannot pay for another's send. Single use comes from the
``x402_payment`` table (``store.py``), keyed by the payment's nonce.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from postern.core.backends import BillingBackend, QuotaDecision
from postern.core.errors import ConfigError
from postern.core.options import option
from postern.plugins.billing_x402 import store
from postern.plugins.billing_x402.networks import _ADDRESS, SCHEME, network_refusal

log = logging.getLogger("postern.billing.x402")

PRICED = ("inbox.create", "message.send")  # message.send: the price is per recipient
PAYMENT_REQUIRED, PAYMENT_RESPONSE = "PAYMENT-REQUIRED", "PAYMENT-RESPONSE"
# Refusal codes (docs/billing.md); each 402 carries a fresh offer to pay again.
CODES = {
    "required": "payment_required",
    "malformed": "payment_malformed",
    "mismatch": "payment_mismatch",
    "invalid": "payment_invalid",
    "expired": "payment_expired",
    "replayed": "payment_replayed",
    "settle": "payment_settle_failed",
}
_EXPIRED = {
    "invalid_exact_evm_payload_authorization_valid_before",
    "invalid_exact_evm_payload_authorization_valid_after",
}


def _test_mode(value: str) -> str:
    if value != "test":
        raise ValueError(f'must be "test": this version of Postern takes no real money (got "{value}")')
    return value


def _test_network(value: str) -> str:
    if problem := network_refusal(value):
        raise ValueError(f"is refused: {problem}")
    return value


def _address(value: str) -> str:
    if value and not _ADDRESS.fullmatch(value):
        raise ValueError("must be a 0x-prefixed 20-byte hex address")
    return value


def _prices(raw: Mapping[str, Any]) -> dict[str, int]:
    prices = {}
    for key, units in raw.items():
        action = key.replace("_", ".")
        if action not in PRICED:
            raise ValueError(f"names '{key}', which is not a priced action; known: {', '.join(PRICED)}")
        if isinstance(units, bool) or not isinstance(units, int) or units < 0:
            raise ValueError(f"{key} must be atomic units of the asset, a whole number of 0 or more")
        prices[action] = units
    return prices


def _facilitator_url(value: str) -> str:
    if value and not value.startswith(("https://", "http://")):
        raise ValueError("must be an http(s) URL, or empty for the offline facilitator")
    return value.rstrip("/")


@dataclass(frozen=True)
class X402Options:
    pay_to: str = option(help="the 0x address payments go to", check=_address)
    mode: str = option("test", check=_test_mode)
    network: str = option("eip155:84532", check=_test_network)
    asset: str = option("", check=_address)  # "": the package's default token for the network
    prices: Mapping[str, int] = option({}, check=_prices)
    facilitator_url: str = option("", check=_facilitator_url)
    test_balances: Mapping[str, int] = option({})
    max_timeout_seconds: int = option(300)

    def __post_init__(self):
        if not self.pay_to:
            raise ValueError("pay_to is required: the 0x address payments go to")
        if self.max_timeout_seconds < 30:
            raise ValueError("max_timeout_seconds must be at least 30 (settlement needs time)")


class X402Billing(BillingBackend):
    """Per-action payments with x402 v2, settled before the action."""

    name = "x402"
    description = "x402 v2 payments per action (test networks only)"
    options_class = X402Options

    @classmethod
    def from_config(cls, options: Mapping[str, Any]) -> X402Billing:
        try:
            import x402.mechanisms.evm.exact  # noqa: F401
        except ImportError as exc:
            raise ConfigError(f"[billing.x402] needs pip install 'x402[evm]' ({exc})") from None
        return super().from_config(options)

    def __init__(self, options: X402Options, facilitator=None):
        from x402 import x402ResourceServerSync
        from x402.mechanisms.evm.default_assets import get_default_asset
        from x402.mechanisms.evm.exact import ExactEvmServerScheme

        self.options = options
        self.asset = options.asset or get_default_asset(options.network)["asset"]
        if facilitator is None:
            facilitator = self._facilitator(options)
        self.facilitator = facilitator
        self.server = x402ResourceServerSync(facilitator)
        self.server.register(options.network, ExactEvmServerScheme())
        self._ready = False
        self._init_lock = threading.Lock()

    @staticmethod
    def _facilitator(options: X402Options):
        if options.facilitator_url:  # a real facilitator; the network is still a test one
            from x402.http import FacilitatorConfig, HTTPFacilitatorClientSync

            return HTTPFacilitatorClientSync(FacilitatorConfig(url=options.facilitator_url))
        from postern.plugins.billing_x402.facilitator import OfflineFacilitatorSync

        assets = {options.network: [options.asset]} if options.asset else None
        return OfflineFacilitatorSync(networks=[options.network], assets=assets, balances=options.test_balances)

    def _offer(self, customer_id: str, action: str, amount: str):
        from x402 import ResourceConfig
        from x402.schemas import AssetAmount

        with self._init_lock:  # asks the facilitator what it supports: at first use, not at start-up
            if not self._ready:
                self.server.initialize()
                self._ready = True
        config = ResourceConfig(
            scheme=SCHEME,
            pay_to=self.options.pay_to,
            price=AssetAmount(amount=amount, asset=self.asset),
            network=self.options.network,
            max_timeout_seconds=self.options.max_timeout_seconds,
            extra={"postern": f"{action}:{customer_id}"},
        )
        return self.server.build_payment_requirements(config)

    def _refuse(self, offer, action: str, why: str, code: str) -> QuotaDecision:
        from x402 import ResourceInfo
        from x402.http import encode_payment_required_header

        required = self.server.create_payment_required_response(
            offer, ResourceInfo(url=f"postern:{action}", description=f"Postern {action}"), why
        )
        reason = f"{why}; pay the offer in the PAYMENT-REQUIRED header and retry with PAYMENT-SIGNATURE"
        return QuotaDecision(
            False, reason, code=code, headers={PAYMENT_REQUIRED: encode_payment_required_header(required)}
        )

    def check(self, customer_id: str, action: str, quantity: int = 1, info=None) -> QuotaDecision:
        units = self.options.prices.get(action, 0) * quantity
        if not units:
            return QuotaDecision(allowed=True)
        amount = str(units)
        offer = self._offer(customer_id, action, amount)
        payment = info.payment if info is not None else None
        if not payment:
            return self._refuse(offer, action, f"{action} costs {amount} units of {self.asset}", CODES["required"])
        payload, problem = _decode(payment)
        if payload is None:
            return self._refuse(
                offer, action, f"PAYMENT-SIGNATURE is not an x402 v2 payment: {problem}", CODES["malformed"]
            )
        if self.server.find_matching_requirements(offer, payload) is None:
            return self._refuse(offer, action, _mismatch(payload.accepted, offer[0]), CODES["mismatch"])
        authorization = payload.payload["authorization"]
        payer, nonce = str(authorization["from"]).lower(), str(authorization["nonce"]).lower()
        key = "|".join((self.options.network, self.asset.lower(), payer, nonce))
        claim, row = store.claim(key, customer_id, action, amount, payer)
        if claim is store.Claim.REUSE:  # settled for this action, whose first attempt failed
            info.billing.update(payment_key=key, payment_response=row.response)
            return QuotaDecision(allowed=True)
        if claim is not store.Claim.NEW:
            return self._refuse(offer, action, "this payment was already used; sign a new one", CODES["replayed"])
        return self._settle(offer, action, payload, key, info)

    def _settle(self, offer, action: str, payload, key: str, info) -> QuotaDecision:
        from x402.http import encode_payment_response_header

        requirements = offer[0]
        try:
            verified = self.server.verify_payment(payload, requirements)
            if not verified.is_valid:
                store.forget(key)
                reason = verified.verify.invalid_reason or "invalid"
                log.info("x402 payment refused: %s: %s", reason, verified.verify.invalid_message)
                code = CODES["expired"] if reason in _EXPIRED else CODES["invalid"]
                if reason == "invalid_exact_evm_nonce_already_used":
                    code = CODES["replayed"]
                return self._refuse(offer, action, f"the payment was refused: {reason}", code)
            settled = self.server.settle_payment(payload, requirements)
        except Exception as exc:  # noqa: BLE001 - a facilitator that cannot be reached has not settled
            store.forget(key)
            log.warning("x402 settlement failed: %s", exc)
            return self._refuse(offer, action, "the payment could not be settled; nothing was charged", CODES["settle"])
        if not settled.success:
            store.forget(key)
            log.info("x402 settlement refused: %s: %s", settled.error_reason, settled.error_message)
            why = f"the payment could not be settled ({settled.error_reason}); nothing was charged"
            return self._refuse(offer, action, why, CODES["settle"])
        header = encode_payment_response_header(settled)
        store.settled(key, settled.transaction, header)
        info.billing.update(payment_key=key, payment_response=header)
        return QuotaDecision(allowed=True)

    def record(self, customer_id: str, action: str, quantity: int = 1) -> None:
        """Nothing to record: payments are kept as they settle (``store``)."""

    def action_failed(self, info) -> None:
        store.release(info.billing["payment_key"])


def _decode(header: str):
    """(payload, None), or (None, why) for anything that is not a v2 EIP-3009 payment."""
    from x402.http import decode_payment_signature_header

    try:
        payload = decode_payment_signature_header(header.strip())
    except (ValueError, AttributeError, TypeError) as exc:
        return None, f"not base64 JSON of a payment payload ({type(exc).__name__})"
    authorization = payload.payload.get("authorization") if isinstance(payload.payload, dict) else None
    if getattr(payload, "x402_version", None) != 2:
        return None, "x402Version must be 2"
    if not isinstance(authorization, dict) or not authorization.get("nonce") or not authorization.get("from"):
        return None, "it has no EIP-3009 authorization with a nonce and a payer"
    return payload, None


def _mismatch(accepted, required) -> str:
    """Which term of the offer the payment does not meet, for the refusal's message."""
    for name in ("network", "asset", "amount", "pay_to", "scheme"):
        got, want = getattr(accepted, name, None), getattr(required, name)
        if str(got).lower() != str(want).lower():
            return f"the payment's {name} is {got}, the offer's is {want}"
    if (accepted.extra or {}).get("postern") != required.extra.get("postern"):
        return "the payment was made for another action or customer"
    return "the payment does not match the offer"
