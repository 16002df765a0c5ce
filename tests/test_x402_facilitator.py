"""The x402 test-mode facilitator (issue 22, part 4) against the official ``x402`` package.

The package's resource server builds the 402 offer, its client signs it with a test wallet,
and the package verifies and settles through ``OfflineFacilitator``, driven from a falcon
resource the way Postern's API would drive it. Nothing of x402 is mocked. Every refusal must
say why and leave the ledger and the spent nonces as they were.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time

import falcon.asgi
import falcon.testing
import pytest

pytest.importorskip("x402.mechanisms.evm.exact", reason="needs the optional package x402[evm]")

from eth_account import Account  # noqa: E402
from eth_account.messages import encode_typed_data  # noqa: E402
from x402 import (  # noqa: E402
    PaymentPayload,
    PaymentRequired,
    PaymentRequirements,
    ResourceConfig,
    ResourceInfo,
    x402ClientSync,
    x402ResourceServer,
    x402ResourceServerSync,
)
from x402.http import (  # noqa: E402
    PAYMENT_REQUIRED_HEADER,
    PAYMENT_RESPONSE_HEADER,
    PAYMENT_SIGNATURE_HEADER,
    HTTPRequestContext,
    PaymentOption,
    RouteConfig,
    RouteConfigurationError,
    decode_payment_required_header,
    decode_payment_response_header,
    decode_payment_signature_header,
    encode_payment_required_header,
    encode_payment_response_header,
    encode_payment_signature_header,
    x402HTTPClientSync,
    x402HTTPResourceServer,
)
from x402.http.types import RESULT_PAYMENT_ERROR, RESULT_PAYMENT_VERIFIED  # noqa: E402
from x402.mechanisms.evm import constants as evm  # noqa: E402
from x402.mechanisms.evm.exact import ExactEvmClientScheme, ExactEvmServerScheme  # noqa: E402

from postern.core.errors import ConfigError  # noqa: E402
from postern.plugins.billing_x402 import facilitator as fac  # noqa: E402
from postern.plugins.billing_x402.facilitator import (  # noqa: E402
    DEFAULT_BALANCE,
    CallbackNonces,
    NonceKey,
    OfflineFacilitator,
    OfflineFacilitatorSync,
    Settlement,
    SqliteNonces,
)

NETWORK = "eip155:84532"  # Base Sepolia
SEPOLIA = "eip155:11155111"  # Ethereum Sepolia: a test network the ledger is not set up for
USDC = "0x036CbD53842c5426634e7929541eC2318f3dCF7e"  # the package's default token on Base Sepolia
OTHER_TOKEN = "0x" + "5e" * 20
PAY_TO = Account.from_key(b"\x02" * 32).address
PRICE = 10_000  # "$0.01" in USDC's 6 decimals
SITE = "https://postern.test"


def option(price: str = "$0.01", **extra) -> PaymentOption:
    return PaymentOption(scheme="exact", pay_to=PAY_TO, price=price, network=NETWORK, extra=extra or None)


# Each paid route names itself in ``extra`` so that a payment made for one is no match for
# another (see test_a_payment_for_another_resource_is_no_match_there).
ROUTES = {
    "POST /v1/send": RouteConfig(accepts=option(resource="/v1/send"), resource=f"{SITE}/v1/send"),
    "POST /v1/inboxes": RouteConfig(accepts=option(resource="/v1/inboxes"), resource=f"{SITE}/v1/inboxes"),
    "POST /v1/dear": RouteConfig(accepts=option("$0.02", resource="/v1/dear"), resource=f"{SITE}/v1/dear"),
    "POST /v1/upfront": RouteConfig(accepts=option(paymentFlow="upfront"), resource=f"{SITE}/v1/upfront"),
    "POST /v1/unbound-a": RouteConfig(accepts=option(), resource=f"{SITE}/v1/unbound-a"),
    "POST /v1/unbound-b": RouteConfig(accepts=option(), resource=f"{SITE}/v1/unbound-b"),
}


# --- the server side, as Postern's falcon API would drive it -----------------------------


class FalconRequest:
    """x402's ``HTTPAdapter`` over a falcon request: all the package's HTTP server reads."""

    def __init__(self, req: falcon.asgi.Request) -> None:
        self.req = req

    def get_header(self, name: str) -> str | None:
        return self.req.get_header(name)

    def get_method(self) -> str:
        return self.req.method

    def get_path(self) -> str:
        return self.req.path

    def get_url(self) -> str:
        return self.req.url

    def get_accept_header(self) -> str:
        return self.req.get_header("Accept") or ""

    def get_user_agent(self) -> str:
        return self.req.get_header("User-Agent") or ""

    def get_query_params(self) -> dict:
        return dict(self.req.params)

    def get_query_param(self, name: str):
        return self.req.params.get(name)

    def get_body(self):
        return None


def answer(resp, instructions) -> None:
    resp.status = instructions.status
    resp.set_headers(instructions.headers)
    if instructions.is_html:
        resp.text = instructions.body
    else:
        resp.media = instructions.body


class Paid:
    """A paid action. It settles before doing the work: a sent message cannot be taken back,
    so it goes only once paid (the package's own middleware runs the handler, then settles)."""

    def __init__(self, http: x402HTTPResourceServer) -> None:
        self.http = http
        self.done: list[str] = []

    async def on_post(self, req, resp) -> None:
        context = HTTPRequestContext(adapter=FalconRequest(req), path=req.path, method=req.method)
        result = await self.http.process_http_request(context)
        if result.type == RESULT_PAYMENT_ERROR:
            return answer(resp, result.response)
        assert result.type == RESULT_PAYMENT_VERIFIED
        if result.before_handler_settlement is not None:  # flow "upfront": the package settled it
            headers = self.http.create_completed_settlement_headers(result.before_handler_settlement)
        else:
            settled = await self.http.process_settlement(
                result.payment_payload,
                result.payment_requirements,
                context=context,
                declared_extensions=result.declared_extensions,
            )
            if not settled.success:
                return answer(resp, settled.response)
            headers = settled.headers
        self.done.append(req.path)
        resp.set_headers(headers)
        resp.media = {"done": req.path}


class Api:
    def __init__(self, facilitator: OfflineFacilitator, routes=ROUTES, after_verify=None) -> None:
        self.facilitator = facilitator
        self.ledger = facilitator.sync
        server = x402ResourceServer(facilitator)
        server.register(NETWORK, ExactEvmServerScheme())
        if after_verify:
            server.on_after_verify(after_verify)
        http = x402HTTPResourceServer(server, routes)
        http.initialize()
        self.paid = Paid(http)
        app = falcon.asgi.App()
        for route in routes:
            app.add_route(route.split()[1], self.paid)
        self.client = falcon.testing.TestClient(app)

    def post(self, path: str, headers: dict | None = None):
        return self.client.simulate_post(path, headers=headers)


# --- the paying side: the package's client with a test wallet -----------------------------


def http_client(wallet) -> x402HTTPClientSync:
    return x402HTTPClientSync(x402ClientSync().register("eip155:*", ExactEvmClientScheme(wallet)))


def offer(api: Api, path: str):
    unpaid = api.post(path)
    assert unpaid.status_code == 402
    return unpaid


def payment_headers(api: Api, wallet, path: str) -> tuple[dict, PaymentPayload]:
    """What the client sends after reading the 402 ``path`` answers."""
    unpaid = offer(api, path)
    return http_client(wallet).handle_402_response(dict(unpaid.headers), unpaid.content, SITE + path)


def signed(wallet, requirements: PaymentRequirements) -> PaymentPayload:
    """A payment the package's client makes for ``requirements``, whatever they are."""
    client = x402ClientSync().register("eip155:*", ExactEvmClientScheme(wallet)).set_spend_controls(False)
    return client.create_payment_payload(PaymentRequired(accepts=[requirements]))


def requirement(**changes) -> PaymentRequirements:
    terms = {
        "scheme": "exact",
        "network": NETWORK,
        "asset": USDC,
        "amount": str(PRICE),
        "pay_to": PAY_TO,
        "max_timeout_seconds": 300,
        "extra": {"name": "USDC", "version": "2"},
    }
    return PaymentRequirements(**(terms | changes))


def typed_data(authorization: dict, chain_id: int = 84532, token: str = USDC) -> dict:
    """The EIP-712 message of an EIP-3009 transferWithAuthorization of Base Sepolia USDC,
    written out from the EIP here rather than taken from the module under test."""
    return {
        "types": {
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
        },
        "primaryType": "TransferWithAuthorization",
        "domain": {"name": "USDC", "version": "2", "chainId": chain_id, "verifyingContract": token},
        "message": {
            "from": authorization["from"],
            "to": authorization["to"],
            "value": int(authorization["value"]),
            "validAfter": int(authorization["validAfter"]),
            "validBefore": int(authorization["validBefore"]),
            "nonce": bytes.fromhex(authorization["nonce"][2:]),
        },
    }


def as_header(payload: dict | PaymentPayload) -> dict:
    data = payload if isinstance(payload, dict) else payload.model_dump(by_alias=True, exclude_none=True)
    return {PAYMENT_SIGNATURE_HEADER: base64.b64encode(json.dumps(data).encode()).decode()}


def key_of(payload: PaymentPayload) -> NonceKey:
    authorization = payload.payload["authorization"]
    return NonceKey(
        payload.accepted.network, payload.accepted.asset.lower(), authorization["from"].lower(), authorization["nonce"]
    )


def refusal(result) -> str:
    """The reason a 402 gives, from its PAYMENT-REQUIRED header."""
    assert result.status_code == 402, result.text
    return decode_payment_required_header(result.headers[PAYMENT_REQUIRED_HEADER]).error


def untouched(ledger: OfflineFacilitatorSync, wallet, *payloads: PaymentPayload, balance=DEFAULT_BALANCE) -> None:
    """Nothing was charged or credited, and no nonce was spent."""
    assert ledger.balance_of(wallet.address) == balance
    assert ledger.balance_of(PAY_TO) == DEFAULT_BALANCE
    assert ledger.settlements == ()
    assert not any(ledger.spent.is_spent(key_of(p)) for p in payloads)


@pytest.fixture
def wallet():
    return Account.create()


@pytest.fixture
def api():
    return Api(OfflineFacilitator())


# --- a paid request ------------------------------------------------------------------------


def test_a_paid_request_is_offered_verified_and_settled_once(api, wallet):
    unpaid = offer(api, "/v1/send")
    required = decode_payment_required_header(unpaid.headers[PAYMENT_REQUIRED_HEADER])
    assert (required.x402_version, required.error, required.resource.url) == (2, "Payment required", SITE + "/v1/send")
    [terms] = required.accepts
    assert (terms.scheme, terms.network, terms.asset, terms.amount, terms.pay_to) == (
        "exact",
        NETWORK,
        USDC,
        str(PRICE),
        PAY_TO,
    )
    assert terms.extra == {"name": "USDC", "version": "2", "resource": "/v1/send"}
    assert api.paid.done == []

    headers, payload = http_client(wallet).handle_402_response(dict(unpaid.headers), unpaid.content, SITE)
    assert set(headers) == {PAYMENT_SIGNATURE_HEADER}
    assert payload.payload["authorization"]["from"] == wallet.address
    paid = api.post("/v1/send", headers)

    assert paid.status_code == 200, paid.text
    assert paid.json == {"done": "/v1/send"}
    receipt = decode_payment_response_header(paid.headers[PAYMENT_RESPONSE_HEADER])
    key = key_of(payload)
    assert receipt.success and receipt.payer == wallet.address and receipt.network == NETWORK
    assert receipt.transaction == key.transaction and len(receipt.transaction) == 66
    assert receipt.amount == str(PRICE)
    assert http_client(wallet).get_payment_settle_response(paid.headers.get) == receipt
    ledger = api.ledger
    assert ledger.balance_of(wallet.address) == DEFAULT_BALANCE - PRICE
    assert ledger.balance_of(PAY_TO) == DEFAULT_BALANCE + PRICE
    assert ledger.spent.is_spent(key)
    assert ledger.settlements == (Settlement(key.transaction, NETWORK, USDC.lower(), wallet.address, PAY_TO, PRICE),)
    assert api.paid.done == ["/v1/send"]


def test_flow_upfront_settles_without_a_verify_call_and_still_checks_everything(wallet):
    """With ``paymentFlow: upfront`` the package never calls verify: settle must check all."""
    ledger = OfflineFacilitatorSync()
    calls = []
    spy = OfflineFacilitator(ledger)
    verify = spy.verify

    async def counted_verify(payload, requirements):
        calls.append("verify")
        return await verify(payload, requirements)

    spy.verify = counted_verify
    api = Api(spy)
    headers, payload = payment_headers(api, wallet, "/v1/upfront")
    assert api.post("/v1/upfront", headers).status_code == 200
    # A failed upfront settlement answers 402 with a PAYMENT-RESPONSE and no new offer.
    replay = api.post("/v1/upfront", headers)
    assert replay.status_code == 402 and PAYMENT_REQUIRED_HEADER not in replay.headers
    receipt = decode_payment_response_header(replay.headers[PAYMENT_RESPONSE_HEADER])
    assert (receipt.success, receipt.error_reason) == (False, evm.ERR_NONCE_ALREADY_USED)
    assert calls == [] and ledger.balance_of(wallet.address) == DEFAULT_BALANCE - PRICE
    assert api.paid.done == ["/v1/upfront"]


def test_the_core_server_driven_by_hand_without_the_http_helper(wallet):
    """The same round trip from the package's encoders and the core resource server."""
    ledger = OfflineFacilitatorSync()

    async def scenario():
        server = x402ResourceServer(OfflineFacilitator(ledger)).register(NETWORK, ExactEvmServerScheme())
        server.initialize()
        requirements = server.build_payment_requirements(
            ResourceConfig(scheme="exact", pay_to=PAY_TO, price="$0.01", network=NETWORK)
        )
        required = await server.create_payment_required_response(
            requirements, ResourceInfo(url=SITE + "/v1/send"), "Payment required"
        )
        payment_required_header = encode_payment_required_header(required)  # the 402's PAYMENT-REQUIRED

        client = x402ClientSync().register(NETWORK, ExactEvmClientScheme(wallet))
        payment = client.create_payment_payload(decode_payment_required_header(payment_required_header))
        payment_signature_header = encode_payment_signature_header(payment)  # the retry's PAYMENT-SIGNATURE

        received = decode_payment_signature_header(payment_signature_header)
        matched = server.find_matching_requirements(required.accepts, received)
        verified = await server.verify_payment(received, matched)
        settled = await server.settle_payment(received, matched)
        return received, verified, encode_payment_response_header(settled)  # the answer's PAYMENT-RESPONSE

    received, verified, payment_response_header = asyncio.run(scenario())
    assert verified.is_valid and verified.payer == wallet.address
    receipt = decode_payment_response_header(payment_response_header)
    assert receipt.success and receipt.transaction == key_of(received).transaction
    assert received.resource.url == SITE + "/v1/send"
    assert ledger.balance_of(wallet.address) == DEFAULT_BALANCE - PRICE


def test_the_sync_server_takes_the_sync_facilitator_and_refuses_the_async_one(wallet):
    ledger = OfflineFacilitatorSync()
    server = x402ResourceServerSync(ledger).register(NETWORK, ExactEvmServerScheme())
    server.initialize()
    payment = signed(wallet, requirement())
    assert server.verify_payment(payment, requirement()).is_valid
    assert server.settle_payment(payment, requirement()).success
    assert ledger.balance_of(wallet.address) == DEFAULT_BALANCE - PRICE
    with pytest.raises(TypeError, match="requires a sync facilitator client"):
        x402ResourceServerSync(OfflineFacilitator(ledger))


def test_get_supported_lists_exact_on_each_configured_test_network():
    ledger = OfflineFacilitatorSync(networks=[NETWORK, SEPOLIA], assets={SEPOLIA: [OTHER_TOKEN]})
    kinds = [(k.x402_version, k.scheme, k.network) for k in ledger.get_supported().kinds]
    assert kinds == [(2, "exact", NETWORK), (2, "exact", SEPOLIA)]
    assert OfflineFacilitator(ledger).get_supported() == ledger.get_supported()
    assert ledger.assets == {NETWORK: frozenset({USDC.lower()}), SEPOLIA: frozenset({OTHER_TOKEN})}


# --- refusals: each says why, and nothing is charged --------------------------------------


def test_a_replayed_payment_is_refused_and_charged_once(api, wallet):
    headers, payload = payment_headers(api, wallet, "/v1/send")
    assert api.post("/v1/send", headers).status_code == 200

    assert refusal(api.post("/v1/send", headers)) == evm.ERR_NONCE_ALREADY_USED
    again = api.ledger.settle(payload, payload.accepted)
    assert not again.success and again.error_reason == evm.ERR_NONCE_ALREADY_USED
    assert "already spent" in again.error_message and again.transaction == ""
    assert api.ledger.balance_of(wallet.address) == DEFAULT_BALANCE - PRICE
    assert len(api.ledger.settlements) == 1 and api.paid.done == ["/v1/send"]


def test_a_payment_of_the_wrong_amount_is_refused(api, wallet):
    headers, payload = payment_headers(api, wallet, "/v1/send")  # signs 0.01 USDC
    dear = decode_payment_required_header(offer(api, "/v1/dear").headers[PAYMENT_REQUIRED_HEADER]).accepts[0]
    assert dear.amount == str(2 * PRICE)

    # As made, it matches nothing /v1/dear asks for.
    assert refusal(api.post("/v1/dear", headers)) == "No matching payment requirements"
    # Claiming to accept the dearer terms does not change what was signed.
    claims = payload.model_dump(by_alias=True, exclude_none=True)
    claims["accepted"] = dear.model_dump(by_alias=True, exclude_none=True)
    assert refusal(api.post("/v1/dear", as_header(claims))) == evm.ERR_AUTHORIZATION_VALUE_MISMATCH
    # Nor does raising the signed value after signing.
    claims["payload"]["authorization"]["value"] = dear.amount
    assert refusal(api.post("/v1/dear", as_header(claims))) == evm.ERR_INVALID_SIGNATURE
    # Exact means exact: paying more than asked is refused too.
    over = api.ledger.verify(signed(wallet, requirement(amount=str(PRICE + 1))), requirement())
    assert (over.is_valid, over.invalid_reason) == (False, evm.ERR_AUTHORIZATION_VALUE_MISMATCH)
    assert over.invalid_message == f"the authorisation is for {PRICE + 1}, the requirement is {PRICE}"
    untouched(api.ledger, wallet, payload)
    assert api.paid.done == []


def test_a_payment_in_the_wrong_asset_is_refused(api, wallet):
    ledger = api.ledger
    in_other = signed(wallet, requirement(asset=OTHER_TOKEN))

    verdict = ledger.verify(in_other, requirement())
    assert (verdict.invalid_reason, verdict.payer) == (fac.ERR_ASSET_MISMATCH, wallet.address)
    assert verdict.invalid_message == f"the payment is in {OTHER_TOKEN}, the requirement in {USDC}"
    verdict = ledger.verify(in_other, requirement(asset=OTHER_TOKEN))
    assert verdict.invalid_reason == fac.ERR_UNSUPPORTED_ASSET
    # Relabelled as USDC, it matches the route; the signature is still over the other token.
    relabelled = in_other.model_dump(by_alias=True, exclude_none=True)
    relabelled["accepted"] = payment_headers(api, wallet, "/v1/send")[1].accepted.model_dump(by_alias=True)
    assert refusal(api.post("/v1/send", as_header(relabelled))) == evm.ERR_INVALID_SIGNATURE
    settled = ledger.settle(in_other, requirement())
    assert not settled.success and settled.error_reason == fac.ERR_ASSET_MISMATCH
    untouched(ledger, wallet, in_other)


def test_a_payment_on_the_wrong_network_is_refused(api, wallet):
    on_sepolia = signed(wallet, requirement(network=SEPOLIA))
    verdict = api.ledger.verify(on_sepolia, requirement())
    assert verdict.invalid_reason == evm.ERR_NETWORK_MISMATCH
    assert verdict.invalid_message == f"the payment is for {SEPOLIA}, the requirement for {NETWORK}"
    # A test network the ledger was not set up for.
    assert api.ledger.verify(on_sepolia, requirement(network=SEPOLIA)).invalid_reason == fac.ERR_UNSUPPORTED_NETWORK
    # Relabelled as Base Sepolia: the signature names Sepolia's chain id, so it recovers to someone else.
    relabelled = on_sepolia.model_dump(by_alias=True, exclude_none=True)
    relabelled["accepted"] = payment_headers(api, wallet, "/v1/send")[1].accepted.model_dump(by_alias=True)
    assert refusal(api.post("/v1/send", as_header(relabelled))) == evm.ERR_INVALID_SIGNATURE
    untouched(api.ledger, wallet, on_sepolia)


@pytest.mark.parametrize("network, name", [("eip155:8453", "Base mainnet"), ("eip155:1", "Ethereum mainnet")])
def test_mainnets_are_refused_everywhere(wallet, network, name):
    with pytest.raises(ConfigError, match=f"{network} is {name}: .* settles on test networks only"):
        OfflineFacilitatorSync(networks=[NETWORK, network])

    ledger = OfflineFacilitatorSync()
    on_mainnet = requirement(network=network)
    payment = signed(wallet, on_mainnet)
    verdict = ledger.verify(payment, on_mainnet)
    assert (verdict.is_valid, verdict.invalid_reason) == (False, fac.ERR_TEST_NETWORK_REQUIRED)
    assert verdict.invalid_message.startswith(f"{network} is {name}: the offline facilitator moves no money")
    settled = ledger.settle(payment, on_mainnet)
    assert (settled.success, settled.error_reason, settled.network) == (False, fac.ERR_TEST_NETWORK_REQUIRED, network)
    untouched(ledger, wallet, payment)

    # A Postern configured to charge on a mainnet with it does not start.
    server = x402ResourceServer(OfflineFacilitator(ledger)).register(network, ExactEvmServerScheme())
    routes = {"POST /v1/send": RouteConfig(accepts=PaymentOption("exact", PAY_TO, "$0.01", network))}
    with pytest.raises(RouteConfigurationError) as refused:
        x402HTTPResourceServer(server, routes).initialize()
    assert [e.reason for e in refused.value.errors] == ["missing_facilitator"]


def test_networks_the_facilitator_cannot_vouch_for_are_refused():
    with pytest.raises(ConfigError, match="eip155:999999 is not a known EVM test network"):
        OfflineFacilitatorSync(networks=["eip155:999999"])
    with pytest.raises(ConfigError, match="name the test token"):
        OfflineFacilitatorSync(networks=["eip155:31337"])  # no default token there
    with pytest.raises(ConfigError, match="not token addresses"):
        OfflineFacilitatorSync(assets={NETWORK: ["USDC"]})
    assert OfflineFacilitatorSync(networks=["eip155:31337"], assets={"eip155:31337": [OTHER_TOKEN]}).networks == (
        "eip155:31337",
    )


def test_an_expired_authorisation_is_refused(wallet):
    later = OfflineFacilitator(clock=lambda: time.time() + 3600)  # the client signs for 300 s
    api = Api(later)
    headers, payload = payment_headers(api, wallet, "/v1/send")
    assert refusal(api.post("/v1/send", headers)) == evm.ERR_VALID_BEFORE_EXPIRED
    untouched(api.ledger, wallet, payload)

    # Within the 6 seconds a settlement needs, it is as good as expired.
    valid_before = int(payload.payload["authorization"]["validBefore"])
    nearly = OfflineFacilitatorSync(clock=lambda: valid_before - 3)
    verdict = nearly.verify(payload, payload.accepted)
    assert verdict.invalid_reason == evm.ERR_VALID_BEFORE_EXPIRED
    assert verdict.invalid_message == f"the authorisation expired (validBefore {valid_before}, now {valid_before - 3})"
    assert OfflineFacilitatorSync(clock=lambda: valid_before - 7).verify(payload, payload.accepted).is_valid


def test_an_authorisation_not_valid_yet_is_refused(wallet):
    ledger = OfflineFacilitatorSync()
    payload = signed(wallet, requirement())
    # The client always signs validAfter 0: sign one for the future, as a wallet could.
    now = int(time.time())
    authorization = dict(payload.payload["authorization"], validAfter=str(now + 600), validBefore=str(now + 3600))
    signature = "0x" + wallet.sign_typed_data(full_message=typed_data(authorization)).signature.hex()
    early = payload.model_copy(update={"payload": {"authorization": authorization, "signature": signature}})
    verdict = ledger.verify(early, requirement())
    assert verdict.invalid_reason == evm.ERR_VALID_AFTER_FUTURE
    # Once its time comes, the same signature is good: the refusal was the window, not the signature.
    later = OfflineFacilitatorSync(clock=lambda: now + 700)
    assert later.settle(early, requirement()).success
    untouched(ledger, wallet, early)


@pytest.mark.parametrize(
    "header",
    [
        "%%% not base64 %%%",
        base64.b64encode(b"not json").decode(),
        base64.b64encode(b"\xff\xfe").decode(),
        base64.b64encode(json.dumps({"x402Version": 2}).encode()).decode(),
        base64.b64encode(json.dumps([1, 2]).encode()).decode(),
    ],
    ids=["not-base64", "not-json", "not-utf8", "no-fields", "not-an-object"],
)
def test_a_garbage_header_is_refused(api, header):
    """The package reads an undecodable header as no payment: a fresh 402 saying "Payment
    required". Glue that decodes it itself can say more: decoding raises a ValueError
    (base64, UTF-8, JSON, schema), or an AttributeError for JSON that is not an object."""
    assert refusal(api.post("/v1/send", {PAYMENT_SIGNATURE_HEADER: header})) == "Payment required"
    with pytest.raises((ValueError, AttributeError)):
        decode_payment_signature_header(header)
    assert api.ledger.settlements == () and api.paid.done == []


def test_a_well_formed_header_with_a_garbage_authorisation_is_refused(api, wallet):
    _, payload = payment_headers(api, wallet, "/v1/send")
    good = payload.model_dump(by_alias=True, exclude_none=True)
    cases = {
        "the payload carries no EIP-3009 authorization": {"authorization": "nope"},
        "Permit2 payments are not supported offline, only EIP-3009 ones": {"permit2Authorization": {}},
        "authorization.to is not an address": {
            **good["payload"],
            "authorization": {**good["payload"]["authorization"], "to": "me"},
        },
        "authorization.value is not a uint256": {
            **good["payload"],
            "authorization": {**good["payload"]["authorization"], "value": "-1"},
        },
        "authorization.nonce is not 32 bytes of hex": {
            **good["payload"],
            "authorization": {**good["payload"]["authorization"], "nonce": "0x01"},
        },
    }
    for message, inner in cases.items():
        verdict = api.ledger.verify(payload.model_copy(update={"payload": inner}), payload.accepted)
        assert (verdict.invalid_reason, verdict.invalid_message) == (fac.ERR_INVALID_PAYLOAD, message)
        assert refusal(api.post("/v1/send", as_header({**good, "payload": inner}))) == fac.ERR_INVALID_PAYLOAD
    short = {**good["payload"], "signature": "0x1234"}  # e.g. a smart wallet's: needs a chain
    assert refusal(api.post("/v1/send", as_header({**good, "payload": short}))) == evm.ERR_INVALID_SIGNATURE
    untouched(api.ledger, wallet, payload)


def test_a_signature_by_someone_else_is_refused(api, wallet):
    thief = Account.create()
    stolen = signed(thief, requirement()).model_dump(by_alias=True, exclude_none=True)
    stolen["payload"]["authorization"]["from"] = wallet.address  # spend the wallet's balance
    stolen["accepted"] = payment_headers(api, wallet, "/v1/send")[1].accepted.model_dump(by_alias=True)
    assert refusal(api.post("/v1/send", as_header(stolen))) == evm.ERR_INVALID_SIGNATURE
    verdict = api.ledger.verify(PaymentPayload.model_validate(stolen), requirement())
    assert verdict.invalid_message.startswith(f"the signature is not {wallet.address}'s over this authorisation")
    # The malleable twin of a valid signature (s -> n - s, v flipped) is refused as the token would.
    good = signed(wallet, requirement())
    raw = bytes.fromhex(good.payload["signature"][2:])
    n = 2 * fac._HALF_N + 1
    twin = raw[:32] + (n - int.from_bytes(raw[32:64], "big")).to_bytes(32, "big") + bytes([55 - raw[64]])
    twinned = good.model_copy(update={"payload": {**good.payload, "signature": "0x" + twin.hex()}})
    verdict = api.ledger.verify(twinned, requirement())
    assert (verdict.invalid_reason, verdict.payer) == (evm.ERR_INVALID_SIGNATURE, wallet.address)
    assert verdict.invalid_message == "the signature is not in the form the token contract accepts (v 27 or 28, low s)"
    assert (
        Account.recover_message(  # eth_account alone would have taken the twin
            encode_typed_data(full_message=typed_data(good.payload["authorization"])), signature=twin
        )
        == wallet.address
    )
    untouched(api.ledger, wallet, good)


def test_a_payment_for_another_resource_is_no_match_there(api, wallet):
    headers, payload = payment_headers(api, wallet, "/v1/send")
    assert payload.resource.url == SITE + "/v1/send"
    assert refusal(api.post("/v1/inboxes", headers)) == "No matching payment requirements"
    untouched(api.ledger, wallet, payload)
    assert api.post("/v1/send", headers).status_code == 200  # still good where it was made for


def test_without_a_binding_the_package_takes_a_payment_for_any_route_of_that_price(api, wallet):
    """Pitfall: the signature covers payer, payee, amount, window and nonce, never the
    resource, and the package matches on the terms only. Postern must bind each route (here
    ``extra.resource``) or a payment made for one cheap action buys any other of that price."""
    headers, payload = payment_headers(api, wallet, "/v1/unbound-a")
    assert api.post("/v1/unbound-b", headers).status_code == 200
    assert api.paid.done == ["/v1/unbound-b"] and payload.resource.url == SITE + "/v1/unbound-a"


def test_a_payer_without_the_balance_is_refused(wallet):
    api = Api(OfflineFacilitator(balances={wallet.address: PRICE - 1}, default_balance=0))
    headers, payload = payment_headers(api, wallet, "/v1/send")
    assert refusal(api.post("/v1/send", headers)) == evm.ERR_INSUFFICIENT_BALANCE
    verdict = api.ledger.verify(payload, payload.accepted)
    assert verdict.invalid_message == f"{wallet.address} holds {PRICE - 1} but the payment is {PRICE} (atomic units)"
    assert api.ledger.balance_of(wallet.address) == PRICE - 1 and api.ledger.balance_of(PAY_TO) == 0
    assert not api.ledger.spent.is_spent(key_of(payload)) and api.paid.done == []


def test_a_settlement_that_fails_after_verify_charges_nothing(wallet):
    """The balance goes between verify and settle (another payment spent it): the settle is
    refused, the work is not done, and the same payment settles once the funds are back."""
    ledger = OfflineFacilitatorSync(balances={wallet.address: PRICE})
    api = Api(OfflineFacilitator(ledger), after_verify=lambda context: ledger.set_balance(wallet.address, 0))
    headers, payload = payment_headers(api, wallet, "/v1/send")

    failed = api.post("/v1/send", headers)
    receipt = decode_payment_response_header(failed.headers[PAYMENT_RESPONSE_HEADER])
    assert failed.status_code == 402
    assert (receipt.success, receipt.error_reason, receipt.transaction) == (False, evm.ERR_INSUFFICIENT_BALANCE, "")
    assert api.paid.done == [] and ledger.settlements == ()
    assert ledger.balance_of(wallet.address) == 0 and ledger.balance_of(PAY_TO) == DEFAULT_BALANCE
    assert not ledger.spent.is_spent(key_of(payload))

    # Two payments verified on one balance: the first to settle wins, the other charges nothing.
    ledger.set_balance(wallet.address, PRICE)
    first, second = signed(wallet, requirement()), signed(wallet, requirement())
    assert ledger.verify(first, requirement()).is_valid and ledger.verify(second, requirement()).is_valid
    assert ledger.settle(first, requirement()).success
    late = ledger.settle(second, requirement())
    assert (late.success, late.error_reason) == (False, evm.ERR_INSUFFICIENT_BALANCE)
    assert ledger.balance_of(wallet.address) == 0 and ledger.balance_of(PAY_TO) == DEFAULT_BALANCE + PRICE
    assert not ledger.spent.is_spent(key_of(second))


# --- the ledger under concurrency, and where spent nonces are kept -------------------------


def race(count: int, settle) -> list:
    start = threading.Barrier(count)
    results: list = [None] * count

    def run(i: int) -> None:
        start.wait()
        results[i] = settle(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_racing_settlements_of_one_payment_settle_it_once(wallet):
    ledger = OfflineFacilitatorSync()
    payment = signed(wallet, requirement())
    results = race(16, lambda _: ledger.settle(payment, requirement()))
    assert sorted(r.success for r in results) == [False] * 15 + [True]
    assert {r.error_reason for r in results if not r.success} == {evm.ERR_NONCE_ALREADY_USED}
    assert ledger.balance_of(wallet.address) == DEFAULT_BALANCE - PRICE and len(ledger.settlements) == 1


def test_racing_payments_never_overdraw(wallet):
    ledger = OfflineFacilitatorSync(balances={wallet.address: 3 * PRICE})
    payments = [signed(wallet, requirement()) for _ in range(10)]
    results = race(10, lambda i: ledger.settle(payments[i], requirement()))
    assert sum(r.success for r in results) == 3
    assert ledger.balance_of(wallet.address) == 0 and ledger.balance_of(PAY_TO) == DEFAULT_BALANCE + 3 * PRICE


def test_spent_nonces_in_sqlite_are_shared_by_every_worker(tmp_path, wallet):
    path = tmp_path / "nonces.sqlite3"
    worker_a = OfflineFacilitatorSync(spent=SqliteNonces(path))
    worker_b = OfflineFacilitatorSync(spent=SqliteNonces(path))
    payment = signed(wallet, requirement())
    assert worker_a.settle(payment, requirement()).success
    replay = worker_b.settle(payment, requirement())
    assert (replay.success, replay.error_reason) == (False, evm.ERR_NONCE_ALREADY_USED)
    assert worker_b.balance_of(wallet.address) == DEFAULT_BALANCE  # its ledger untouched
    assert SqliteNonces(path).is_spent(key_of(payment))  # and it outlives the process
    assert not SqliteNonces(path).is_spent(key_of(signed(wallet, requirement())))


def test_spent_nonces_can_live_wherever_the_caller_keeps_them(wallet):
    kept: set[NonceKey] = set()

    def spend(key: NonceKey) -> bool:
        fresh = key not in kept
        kept.add(key)
        return fresh

    ledger = OfflineFacilitatorSync(spent=CallbackNonces(is_spent=kept.__contains__, spend=spend))
    payment = signed(wallet, requirement())
    assert ledger.settle(payment, requirement()).success
    assert kept == {key_of(payment)}
    assert ledger.settle(payment, requirement()).error_reason == evm.ERR_NONCE_ALREADY_USED


def test_a_nonce_store_that_loses_the_race_elsewhere_charges_nothing(wallet):
    """Another process spent the nonce between this one's check and its own spend."""
    ledger = OfflineFacilitatorSync(spent=CallbackNonces(is_spent=lambda key: False, spend=lambda key: False))
    settled = ledger.settle(signed(wallet, requirement()), requirement())
    assert (settled.success, settled.error_reason) == (False, evm.ERR_NONCE_ALREADY_USED)
    assert ledger.balance_of(wallet.address) == DEFAULT_BALANCE and ledger.settlements == ()


def test_the_async_facilitator_runs_its_work_where_it_is_told(wallet):
    ran = []

    async def run(fn, *args):
        ran.append(fn.__name__)
        return fn(*args)

    facilitator = OfflineFacilitator(run=run)
    payment = signed(wallet, requirement())
    assert asyncio.run(facilitator.verify(payment, requirement())).is_valid
    assert asyncio.run(facilitator.settle(payment, requirement())).success
    assert ran == ["verify", "settle"]
    with pytest.raises(TypeError, match="not both"):
        OfflineFacilitator(facilitator.sync, default_balance=0)


# --- MCP: the payment rides in the tool call's _meta ---------------------------------------


def test_a_paid_mcp_tool_call(wallet):
    from x402.mcp import MCP_PAYMENT_META_KEY, MCP_PAYMENT_RESPONSE_META_KEY
    from x402.mcp.server_async import PaymentWrapperConfig, create_payment_wrapper
    from x402.mcp.types import ResourceInfo as ToolResource
    from x402.mcp.utils import (
        attach_payment_to_meta,
        extract_payment_required_from_result,
        extract_payment_response_from_meta,
    )

    ledger = OfflineFacilitatorSync()
    server = x402ResourceServer(OfflineFacilitator(ledger)).register(NETWORK, ExactEvmServerScheme())
    server.initialize()
    accepts = server.build_payment_requirements(
        ResourceConfig(scheme="exact", pay_to=PAY_TO, price="$0.01", network=NETWORK, extra={"tool": "send_email"})
    )
    paid = create_payment_wrapper(
        server, PaymentWrapperConfig(accepts=accepts, resource=ToolResource(url="mcp://tool/send_email"))
    )
    sent = []

    async def send_email(args, context):
        sent.append(args["to"])
        return {"content": [{"type": "text", "text": "sent"}]}

    tool = paid(send_email)
    args = {"to": "ops@example.test"}

    async def scenario():
        unpaid = await tool(args, {"_meta": {}, "toolName": "send_email"})
        required = extract_payment_required_from_result(unpaid)
        payment = x402ClientSync().register(NETWORK, ExactEvmClientScheme(wallet)).create_payment_payload(required)
        params = attach_payment_to_meta({"name": "send_email", "arguments": args}, payment)
        assert set(params["_meta"]) == {MCP_PAYMENT_META_KEY}
        return unpaid, required, await tool(args, {"_meta": params["_meta"], "toolName": "send_email"})

    unpaid, required, result = asyncio.run(scenario())
    assert unpaid.is_error and required.error == "Payment required to access this tool"
    assert required.resource.url == "mcp://tool/send_email"
    assert not result.is_error and sent == ["ops@example.test"]
    assert set(result.meta) == {MCP_PAYMENT_RESPONSE_META_KEY}
    receipt = extract_payment_response_from_meta(result)
    assert receipt.success and receipt.transaction == ledger.settlements[0].transaction
    assert ledger.balance_of(wallet.address) == DEFAULT_BALANCE - PRICE
