"""An offline x402 facilitator for test mode: scheme ``exact`` on EVM test networks.

A real facilitator verifies a payment (the payer's EIP-3009 ``transferWithAuthorization``
and its terms) and settles it by submitting that authorisation to the token contract.
This one checks what the facilitator and the contract would check, with no chain: the
EIP-712 signature recovers to ``authorization.from``; recipient, amount, asset and network
are those required; the authorisation is inside its validity window; its nonce is unused;
the payer's test balance covers it. Settling re-checks all of it, then spends the nonce and
moves the amount on a test ledger under one lock, so a payment settles once or not at all.

It refuses mainnets: it moves no money, so a payment it accepted there would be one nobody
received. Refusals are the package's own ``VerifyResponse`` / ``SettleResponse``, with the
package's reason code where it has one (clients read them as they would a real
facilitator's) and a sentence saying what was wrong.

``OfflineFacilitatorSync`` serves ``x402ResourceServerSync``; ``OfflineFacilitator`` is the
same ledger for the async ``x402ResourceServer`` that Postern's ASGI API would use.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from postern.core.errors import ConfigError, SetupError
from postern.plugins.billing_x402.networks import _ADDRESS, SCHEME, network_refusal
from postern.plugins.billing_x402.nonces import CallbackNonces, MemoryNonces, NonceKey, SpentNonces, SqliteNonces

__all__ = [  # the nonce stores stay importable from here, where tests and callers look
    "CallbackNonces",
    "MemoryNonces",
    "NonceKey",
    "OfflineFacilitator",
    "OfflineFacilitatorSync",
    "Settlement",
    "SpentNonces",
    "SqliteNonces",
    "network_refusal",
]

# The x402[evm] extra is optional: Postern imports every module (tests, `postern plugins`),
# so a missing package only stops a facilitator from being built.
try:
    from eth_account import Account
    from eth_account.messages import encode_typed_data
    from eth_keys.exceptions import BadSignature, ValidationError
    from x402.mechanisms.evm import constants as evm
    from x402.mechanisms.evm.default_assets import DEFAULT_ASSETS
    from x402.schemas import SettleResponse, SupportedKind, SupportedResponse, VerifyResponse
except ImportError as missing:
    _SDK_MISSING: ImportError | None = missing
else:
    _SDK_MISSING = None

if TYPE_CHECKING:
    from x402.schemas import PaymentPayload, PaymentRequirements

X402_VERSION = 2

# What any payer the ledger was not told about holds: a million test USDC (6 decimals), so
# a test or a demo needs no funding step unless funding is what it tests.
DEFAULT_BALANCE = 1_000_000 * 10**6

# Seconds an authorisation must stay valid beyond now, as the official facilitator asks:
# time for the settlement to land in a block before ``validBefore``.
EXPIRY_MARGIN = 6


# Reason codes the package has no constant for (its own are in x402.mechanisms.evm.constants).
ERR_TEST_NETWORK_REQUIRED = "test_network_required"
ERR_UNSUPPORTED_NETWORK = "unsupported_network"
ERR_UNSUPPORTED_ASSET = "unsupported_asset"
ERR_ASSET_MISMATCH = "asset_mismatch"
ERR_INVALID_PAYLOAD = "invalid_payload"
ERR_INVALID_REQUIREMENTS = "invalid_payment_requirements"
ERR_INVALID_VERSION = "invalid_x402_version"

_NONCE = re.compile(r"0x[0-9a-fA-F]{64}")
_SIGNATURE = re.compile(r"0x[0-9a-fA-F]{130}")
_UINT = re.compile(r"[0-9]{1,78}")
_UINT256_MAX = 2**256 - 1
# Half the secp256k1 group order: USDC's ECRecover refuses a larger ``s``, the malleable twin
# of a valid signature.
_HALF_N = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0

_EIP712_TYPES = {
    "EIP712Domain": [
        {"name": "name", "type": "string"},
        {"name": "version", "type": "string"},
        {"name": "chainId", "type": "uint256"},
        {"name": "verifyingContract", "type": "address"},
    ],
    "TransferWithAuthorization": [
        {"name": "from", "type": "address"},
        {"name": "to", "type": "address"},
        {"name": "value", "type": "uint256"},
        {"name": "validAfter", "type": "uint256"},
        {"name": "validBefore", "type": "uint256"},
        {"name": "nonce", "type": "bytes32"},
    ],
}


@dataclass(frozen=True)
class Settlement:
    """One settled payment, as the ledger recorded it."""

    transaction: str
    network: str
    asset: str
    payer: str
    pay_to: str
    amount: int


@dataclass(frozen=True)
class _Authorization:
    payer: str
    to: str
    value: int
    valid_after: int
    valid_before: int
    nonce: str
    signature: bytes


@dataclass(frozen=True)
class _Transfer:
    """A payment that passed every check."""

    key: NonceKey
    payer: str
    pay_to: str
    amount: int


@dataclass(frozen=True)
class _Refusal:
    reason: str
    message: str
    payer: str | None = None


class OfflineFacilitatorSync:
    """x402's ``FacilitatorClientSync`` for scheme ``exact`` on EVM test networks, with no chain.

    ``balances`` maps payer addresses to atomic units of the test token; any other address
    holds ``default_balance``. ``assets`` maps each network to the token addresses accepted
    there (default: the package's default stablecoin for the network). ``spent`` keeps spent
    nonces (default: in memory). ``clock`` is for tests that need time to pass.
    """

    scheme = SCHEME

    def __init__(
        self,
        *,
        networks: Iterable[str] = ("eip155:84532",),
        assets: Mapping[str, Iterable[str]] | None = None,
        balances: Mapping[str, int] | None = None,
        default_balance: int = DEFAULT_BALANCE,
        spent: SpentNonces | None = None,
        clock: Callable[[], float] = time.time,
        expiry_margin: int = EXPIRY_MARGIN,
    ) -> None:
        if _SDK_MISSING is not None:
            raise SetupError(f"the x402 test facilitator needs pip install 'x402[evm]' ({_SDK_MISSING})")
        self.networks = tuple(dict.fromkeys(networks))
        if not self.networks:
            raise ConfigError("the x402 test facilitator needs at least one test network")
        for network in self.networks:
            if problem := network_refusal(network):
                raise ConfigError(problem)
        self.assets = {network: _accepted_assets(network, (assets or {}).get(network)) for network in self.networks}
        self.spent: SpentNonces = spent if spent is not None else MemoryNonces()
        self._balances = {address.lower(): int(units) for address, units in (balances or {}).items()}
        self._default_balance = int(default_balance)
        self._settlements: list[Settlement] = []
        self._clock = clock
        self._expiry_margin = expiry_margin
        # Held from the balance and nonce checks to the debit: no two settlements can both
        # pass the checks on one balance or one nonce.
        self._lock = threading.Lock()

    # --- the ledger --------------------------------------------------------------------

    def balance_of(self, address: str) -> int:
        with self._lock:
            return self._balance(address.lower())

    def set_balance(self, address: str, units: int) -> None:
        with self._lock:
            self._balances[address.lower()] = int(units)

    @property
    def settlements(self) -> tuple[Settlement, ...]:
        with self._lock:
            return tuple(self._settlements)

    def _balance(self, address: str) -> int:
        return self._balances.get(address, self._default_balance)

    # --- FacilitatorClientSync ----------------------------------------------------------

    def get_supported(self) -> SupportedResponse:
        kinds = [SupportedKind(x402_version=X402_VERSION, scheme=SCHEME, network=n) for n in self.networks]
        return SupportedResponse(kinds=kinds)

    def verify(self, payload: PaymentPayload, requirements: PaymentRequirements) -> VerifyResponse:
        outcome = self._authorised(payload, requirements)
        if isinstance(outcome, _Transfer):
            with self._lock:
                outcome = self._fundable(outcome)
        if isinstance(outcome, _Refusal):
            return VerifyResponse(
                is_valid=False, invalid_reason=outcome.reason, invalid_message=outcome.message, payer=outcome.payer
            )
        return VerifyResponse(is_valid=True, payer=outcome.payer)

    def settle(self, payload: PaymentPayload, requirements: PaymentRequirements) -> SettleResponse:
        network = str(getattr(requirements, "network", ""))
        # A verified payment may have become unpayable since (spent, expired, balance gone):
        # settle trusts nothing verify said.
        outcome = self._authorised(payload, requirements)
        if isinstance(outcome, _Transfer):
            with self._lock:
                outcome = self._transfer(outcome)
        if isinstance(outcome, _Refusal):
            return SettleResponse(
                success=False,
                error_reason=outcome.reason,
                error_message=outcome.message,
                payer=outcome.payer,
                transaction="",
                network=network,
            )
        return SettleResponse(
            success=True,
            payer=outcome.payer,
            transaction=outcome.key.transaction,
            network=network,
            amount=str(outcome.amount),
        )

    # --- the checks ---------------------------------------------------------------------

    def _transfer(self, transfer: _Transfer) -> _Transfer | _Refusal:
        """Spend the nonce and move the amount; the caller holds the lock."""
        outcome = self._fundable(transfer)
        if isinstance(outcome, _Refusal):
            return outcome
        if not self.spent.spend(transfer.key):  # another process settled it after our check
            return _spent(transfer)
        payer, pay_to = transfer.key.payer, transfer.pay_to.lower()
        self._balances[payer] = self._balance(payer) - transfer.amount
        self._balances[pay_to] = self._balance(pay_to) + transfer.amount
        key = transfer.key
        self._settlements.append(
            Settlement(key.transaction, key.network, key.asset, transfer.payer, transfer.pay_to, transfer.amount)
        )
        return transfer

    def _fundable(self, transfer: _Transfer) -> _Transfer | _Refusal:
        """The checks against state, which the token contract would make when settling."""
        if self.spent.is_spent(transfer.key):
            return _spent(transfer)
        balance = self._balance(transfer.key.payer)
        if balance < transfer.amount:
            message = f"{transfer.payer} holds {balance} but the payment is {transfer.amount} (atomic units)"
            return _Refusal(evm.ERR_INSUFFICIENT_BALANCE, message, transfer.payer)
        return transfer

    def _authorised(self, payload: Any, requirements: Any) -> _Transfer | _Refusal:
        """The checks that need no state: is this a valid authorisation of what is required?"""
        outcome = self._terms(payload, requirements)
        if isinstance(outcome, _Refusal) and outcome.payer is None:  # name the payer whenever the payload does
            return replace(outcome, payer=_claimed_payer(payload))
        return outcome

    def _terms(self, payload: Any, requirements: Any) -> _Transfer | _Refusal:
        if getattr(payload, "x402_version", None) != X402_VERSION or not hasattr(requirements, "amount"):
            return _Refusal(ERR_INVALID_VERSION, "the offline facilitator takes x402 version 2 payments only")
        network, accepted = str(requirements.network), payload.accepted
        if problem := network_refusal(network):
            return _Refusal(ERR_TEST_NETWORK_REQUIRED, problem)
        if network not in self.assets:
            networks = ", ".join(self.networks)
            return _Refusal(ERR_UNSUPPORTED_NETWORK, f"{network} is not among this facilitator's networks ({networks})")
        if accepted.network != network:
            message = f"the payment is for {accepted.network}, the requirement for {network}"
            return _Refusal(evm.ERR_NETWORK_MISMATCH, message)
        if requirements.scheme != SCHEME or accepted.scheme != SCHEME:
            return _Refusal(evm.ERR_UNSUPPORTED_SCHEME, f"only scheme {SCHEME!r}, not {accepted.scheme!r}")
        if accepted.asset.lower() != requirements.asset.lower():
            message = f"the payment is in {accepted.asset}, the requirement in {requirements.asset}"
            return _Refusal(ERR_ASSET_MISMATCH, message)
        if requirements.asset.lower() not in self.assets[network]:
            message = f"{requirements.asset} is not a token this facilitator settles on {network}"
            return _Refusal(ERR_UNSUPPORTED_ASSET, message)
        authorization = _parse_authorization(payload.payload)
        if isinstance(authorization, _Refusal):
            return authorization
        payer = authorization.payer
        extra = requirements.extra or {}
        name, version = extra.get("name"), extra.get("version")
        if not isinstance(name, str) or not isinstance(version, str):
            message = "the requirement's extra lacks the token's EIP-712 domain name and version"
            return _Refusal(evm.ERR_MISSING_EIP712_DOMAIN, message)
        if authorization.to.lower() != requirements.pay_to.lower():
            message = f"the authorisation pays {authorization.to}, the requirement's payTo is {requirements.pay_to}"
            return _Refusal(evm.ERR_RECIPIENT_MISMATCH, message)
        if not _UINT.fullmatch(str(requirements.amount)):
            return _Refusal(ERR_INVALID_REQUIREMENTS, f"amount {requirements.amount!r} is not in atomic units")
        if authorization.value != int(requirements.amount):  # scheme exact: neither more nor less
            message = f"the authorisation is for {authorization.value}, the requirement is {requirements.amount}"
            return _Refusal(evm.ERR_AUTHORIZATION_VALUE_MISMATCH, message)
        now = int(self._clock())
        if authorization.valid_before < now + self._expiry_margin:
            message = f"the authorisation expired (validBefore {authorization.valid_before}, now {now})"
            return _Refusal(evm.ERR_VALID_BEFORE_EXPIRED, message)
        if authorization.valid_after > now:
            message = f"the authorisation is not valid yet (validAfter {authorization.valid_after}, now {now})"
            return _Refusal(evm.ERR_VALID_AFTER_FUTURE, message)
        chain_id = int(network.removeprefix("eip155:"))
        signer = _signer(authorization, chain_id=chain_id, asset=requirements.asset, name=name, version=version)
        if signer is None:
            message = "the signature is not in the form the token contract accepts (v 27 or 28, low s)"
            return _Refusal(evm.ERR_INVALID_SIGNATURE, message)
        if signer.lower() != payer.lower():
            message = f"the signature is not {payer}'s over this authorisation (it recovers to {signer})"
            return _Refusal(evm.ERR_INVALID_SIGNATURE, message)
        key = NonceKey(network, requirements.asset.lower(), payer.lower(), authorization.nonce.lower())
        return _Transfer(key, payer, authorization.to, authorization.value)


class OfflineFacilitator:
    """``OfflineFacilitatorSync`` for the async ``x402ResourceServer``, which awaits ``verify``
    and ``settle`` and calls ``get_supported`` plainly. The work runs through ``run``
    (default ``asyncio.to_thread``; Postern would pass ``DatabaseRunner.run``) so that
    recovering a signature or writing a nonce to a database never blocks the event loop."""

    scheme = SCHEME

    def __init__(
        self,
        facilitator: OfflineFacilitatorSync | None = None,
        *,
        run: Callable[..., Awaitable[Any]] | None = None,
        **options: Any,
    ) -> None:
        if facilitator is not None and options:
            raise TypeError("pass a facilitator or the options to build one, not both")
        self.sync = facilitator if facilitator is not None else OfflineFacilitatorSync(**options)
        self._run = run or asyncio.to_thread

    def get_supported(self) -> SupportedResponse:
        return self.sync.get_supported()

    async def verify(self, payload: PaymentPayload, requirements: PaymentRequirements) -> VerifyResponse:
        return await self._run(self.sync.verify, payload, requirements)

    async def settle(self, payload: PaymentPayload, requirements: PaymentRequirements) -> SettleResponse:
        return await self._run(self.sync.settle, payload, requirements)


def _accepted_assets(network: str, configured: Iterable[str] | None) -> frozenset[str]:
    if configured is None:
        configured = [entry["asset"] for entry in DEFAULT_ASSETS.get(network, [])]
    assets = frozenset(str(asset).lower() for asset in configured)
    if not assets:
        raise ConfigError(f"name the test token(s) the x402 test facilitator accepts on {network}")
    if bad := sorted(asset for asset in assets if not _ADDRESS.fullmatch(asset)):
        raise ConfigError(f"not token addresses for {network}: {', '.join(bad)}")
    return assets


def _spent(transfer: _Transfer) -> _Refusal:
    message = f"nonce {transfer.key.nonce} of {transfer.payer} is already spent: the payment was settled before"
    return _Refusal(evm.ERR_NONCE_ALREADY_USED, message, transfer.payer)


def _claimed_payer(payload: Any) -> str | None:
    inner = getattr(payload, "payload", None)
    fields = inner.get("authorization") if isinstance(inner, Mapping) else None
    payer = fields.get("from") if isinstance(fields, Mapping) else None
    return payer if isinstance(payer, str) and _ADDRESS.fullmatch(payer) else None


def _parse_authorization(inner: Any) -> _Authorization | _Refusal:
    """The EIP-3009 authorisation in a payment's scheme payload, every field well-formed."""
    if not isinstance(inner, Mapping) or not isinstance(inner.get("authorization"), Mapping):
        if isinstance(inner, Mapping) and "permit2Authorization" in inner:
            return _Refusal(ERR_INVALID_PAYLOAD, "Permit2 payments are not supported offline, only EIP-3009 ones")
        return _Refusal(ERR_INVALID_PAYLOAD, "the payload carries no EIP-3009 authorization")
    fields = inner["authorization"]
    for name in ("from", "to"):
        if not (isinstance(fields.get(name), str) and _ADDRESS.fullmatch(fields[name])):
            return _Refusal(ERR_INVALID_PAYLOAD, f"authorization.{name} is not an address")
    numbers = {}
    for name in ("value", "validAfter", "validBefore"):
        raw = fields.get(name)
        text = str(raw) if isinstance(raw, str | int) and not isinstance(raw, bool) else ""
        if not _UINT.fullmatch(text) or int(text) > _UINT256_MAX:
            return _Refusal(ERR_INVALID_PAYLOAD, f"authorization.{name} is not a uint256")
        numbers[name] = int(text)
    nonce = fields.get("nonce")
    if not (isinstance(nonce, str) and _NONCE.fullmatch(nonce)):
        return _Refusal(ERR_INVALID_PAYLOAD, "authorization.nonce is not 32 bytes of hex")
    signature = inner.get("signature")
    if not (isinstance(signature, str) and _SIGNATURE.fullmatch(signature)):
        # Smart-wallet signatures (EIP-1271, ERC-6492) are checked by calling the wallet: no chain here.
        message = "the signature is not a 65-byte EOA signature, the only kind checked offline"
        return _Refusal(evm.ERR_INVALID_SIGNATURE, message)
    return _Authorization(
        payer=fields["from"],
        to=fields["to"],
        value=numbers["value"],
        valid_after=numbers["validAfter"],
        valid_before=numbers["validBefore"],
        nonce=nonce,
        signature=bytes.fromhex(signature[2:]),
    )


def _signer(authorization: _Authorization, *, chain_id: int, asset: str, name: str, version: str) -> str | None:
    """Who signed the authorisation's EIP-712 message, or None when the token contract would
    refuse the signature before recovering anyone."""
    signature = authorization.signature
    if signature[64] not in (27, 28) or int.from_bytes(signature[32:64], "big") > _HALF_N:
        return None
    typed = {
        "types": _EIP712_TYPES,
        "primaryType": "TransferWithAuthorization",
        # The domain comes from the requirement, never the payer: a signature made for another
        # token or chain recovers to someone else.
        "domain": {"name": name, "version": version, "chainId": chain_id, "verifyingContract": asset.lower()},
        "message": {
            "from": authorization.payer.lower(),
            "to": authorization.to.lower(),
            "value": authorization.value,
            "validAfter": authorization.valid_after,
            "validBefore": authorization.valid_before,
            "nonce": bytes.fromhex(authorization.nonce[2:]),
        },
    }
    try:
        return Account.recover_message(encode_typed_data(full_message=typed), signature=signature)
    except (BadSignature, ValidationError, ValueError):
        return None
