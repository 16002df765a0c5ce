"""Billing backends (docs/billing.md): ``metered`` plans against the usage ledger, and
``x402`` test-mode payments over the real API."""

from __future__ import annotations

import datetime as dt

import falcon.testing
import pytest
from support.world import make_tenant

from postern.api import create_app
from postern.core import usage
from postern.core.db import write_transaction
from postern.core.models import Inbox, Message, UsageEvent, utcnow
from postern.core.options import OptionError
from postern.core.runtime import build_postern
from postern.plugins.billing_metered import MeteredBilling
from postern.plugins.billing_x402.facilitator import DEFAULT_BALANCE


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def use_backend(config, name: str, options: dict):
    config.roles["billing"].backend, config.roles["billing"].explicit = name, True
    config.roles["billing"].options[name] = options
    return config


PLANS = {
    "starter": {"inbox_create": {"included": 2, "cap": 2}, "message_send": {"included": 2, "cap": 3, "overage": 0.5}},
    "pro": {"message_send": {"included": 100}},
}


# -- metered ---------------------------------------------------------------------------


@pytest.fixture
def metered(config, db):
    use_backend(config, "metered", {"plans": PLANS, "default_plan": "starter", "customers": {"globex": "pro"}})
    postern = build_postern(config)
    return postern, falcon.testing.TestClient(create_app(postern))


def test_metered_refuses_exactly_at_the_cap(metered):
    postern, client = metered
    acme = make_tenant("acme")
    key = bearer(acme.agent_key().agent_key)
    made = [client.simulate_post("/v1/inboxes", json={}, headers=key) for _ in range(2)]
    assert [r.status_code for r in made] == [201, 201]
    third = client.simulate_post("/v1/inboxes", json={}, headers=key)
    assert third.status_code == 402, third.text
    error = third.json["error"]
    assert error["code"] == "plan_limit_reached" and error["type"] == "payment_required_error"
    assert "2 inboxes of inbox.create per month; 2 used, 1 asked" in error["message"]
    assert "resets at" in error["message"] and int(third.headers["Retry-After"]) > 0
    assert Inbox.select().count() == 2  # nothing performed

    # message.send counts recipients: 2 then 1 reach the cap of 3; one more is refused.
    path = f"/v1/inboxes/{made[0].json['id']}/messages"
    two = {"to": ["x@example.org", "y@example.org"], "text": "t"}
    assert client.simulate_post(path, json=two, headers=key).status_code == 201
    over = client.simulate_post(path, json=two, headers=key)
    assert over.status_code == 402 and over.json["error"]["code"] == "plan_limit_reached"
    assert "2 used, 2 asked" in over.json["error"]["message"]
    one = {"to": ["x@example.org"], "text": "t"}
    assert client.simulate_post(path, json=one, headers=key).status_code == 201
    assert client.simulate_post(path, json=one, headers=key).status_code == 402
    assert Message.select().where(Message.direction == "outbound").count() == 2

    lines = {line.action: line for line in postern.backend("billing").statement(acme.customer.id)}
    assert (lines["message.send"].used, lines["message.send"].overage_units) == (3, 1)
    assert lines["message.send"].overage_cost == 0.5


def test_the_ledger_is_the_source_of_truth(metered):
    """Rows outside the period do not count; rows in it count whoever wrote them."""
    postern, client = metered
    enrolled = make_tenant("acme").agent_key()
    key = bearer(enrolled.agent_key)
    first = client.simulate_post("/v1/inboxes", json={}, headers=key)
    assert first.status_code == 201
    inbox = Inbox.get_by_id(first.json["id"])
    last_month = UsageEvent.at.db_value(utcnow().replace(day=1) - dt.timedelta(days=1))
    with write_transaction():
        UsageEvent.update(at=last_month).execute()  # last month's inbox: this month has room for 2
    assert client.simulate_post("/v1/inboxes", json={}, headers=key).status_code == 201
    with write_transaction():  # an inbox made in this period by any path counts
        UsageEvent.create(
            ref="inbox.create:elsewhere", customer=inbox.customer_id, enrollment_id=inbox.enrollment_id,
            agent_id=inbox.agent_id, kind=usage.INBOX_CREATED, at=utcnow(), quantity=1,
        )  # fmt: skip
    assert client.simulate_post("/v1/inboxes", json={}, headers=key).status_code == 402


def test_a_replayed_request_is_not_refused_or_counted_twice(metered):
    _, client = metered
    key = bearer(make_tenant("acme").agent_key().agent_key)
    inbox = client.simulate_post("/v1/inboxes", json={}, headers=key).json
    body, path = (
        {"to": ["a@example.org", "b@example.org", "c@example.org"], "text": "t"},
        f"/v1/inboxes/{inbox['id']}/messages",
    )
    once = client.simulate_post(path, json=body, headers={**key, "Idempotency-Key": "k"})
    again = client.simulate_post(path, json=body, headers={**key, "Idempotency-Key": "k"})
    assert (once.status_code, again.status_code) == (201, 200)  # at the cap, yet the replay answers


def test_plans_by_customer_id_or_label(metered):
    postern, client = metered
    globex = make_tenant("globex")
    backend = postern.backend("billing")
    assert backend.plan_of(globex.customer.id) == "pro"
    assert backend.plan_of(make_tenant("acme").customer.id) == "starter"
    key = bearer(globex.agent_key().agent_key)
    made = [client.simulate_post("/v1/inboxes", json={}, headers=key).status_code for _ in range(3)]
    assert made == [201, 201, 201]  # pro meters no inbox.create


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({}, "plans is required"),
        ({"plans": {}}, "at least one plan"),
        ({"plans": {"a": {"inbox.delete": {}}}}, "not a metered action"),
        ({"plans": {"a": {"inbox_create": {"cap": -1}}}}, "a.inbox_create.cap must be a whole number"),
        ({"plans": {"a": {"inbox_create": {"included": 5, "cap": 2}}}}, "cap (2) is below included (5)"),
        ({"plans": {"a": {"inbox_create": {"limit": 2}}}}, "unknown keys limit"),
        ({"plans": {"a": {}, "b": {}}}, "default_plan is required"),
        ({"plans": {"a": {}}, "customers": {"acme": "gold"}}, "acme names plan 'gold'"),
    ],
)
def test_metered_options_are_checked(options, problem):
    with pytest.raises(OptionError) as caught:
        MeteredBilling.from_config(options)
    assert problem in str(caught.value) and "[billing.metered]" in str(caught.value)


def test_one_plan_is_the_default():
    assert MeteredBilling.from_config({"plans": {"only": {}}}).options.default_plan == "only"


# -- x402 (test mode) ------------------------------------------------------------------

PAY_TO = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"
PRICES = {"inbox_create": 10_000, "message_send": 1_000}


@pytest.fixture
def x402(config, db):
    pytest.importorskip("x402.mechanisms.evm.exact", reason="needs the optional package x402[evm]")
    use_backend(config, "x402", {"pay_to": PAY_TO, "prices": PRICES})
    postern = build_postern(config)
    return postern, falcon.testing.TestClient(create_app(postern))


@pytest.fixture
def wallet():
    from eth_account import Account

    return Account.create()


def pay(wallet, refused) -> str:
    """The PAYMENT-SIGNATURE the official client makes for a 402's offer."""
    from x402 import x402ClientSync
    from x402.http import x402HTTPClientSync
    from x402.mechanisms.evm.exact import ExactEvmClientScheme

    client = x402HTTPClientSync(x402ClientSync().register("eip155:*", ExactEvmClientScheme(wallet)))
    headers, _ = client.handle_402_response(dict(refused.headers), refused.content, "postern")
    return headers["PAYMENT-SIGNATURE"]


def reencoded(signature: str, change) -> str:
    """``signature`` decoded, changed by ``change(dict)``, encoded again."""
    import base64
    import json

    payload = json.loads(base64.b64decode(signature))
    change(payload)
    return base64.b64encode(json.dumps(payload).encode()).decode()


def settlements(postern) -> int:
    return len(postern.backend("billing").facilitator.settlements)


def outbound() -> int:
    return Message.select().where(Message.direction == "outbound").count()


def test_x402_inbox_and_send_paid_end_to_end(x402, wallet):
    from x402.http import decode_payment_required_header, decode_payment_response_header

    from postern.plugins.billing_x402.store import X402Payment

    postern, client = x402
    key = bearer(make_tenant("acme").agent_key().agent_key)
    unpaid = client.simulate_post("/v1/inboxes", json={}, headers=key)
    assert unpaid.status_code == 402 and unpaid.json["error"]["code"] == "payment_required"
    offer = decode_payment_required_header(unpaid.headers["PAYMENT-REQUIRED"])
    assert offer.x402_version == 2 and offer.accepts[0].amount == "10000"
    assert offer.accepts[0].network == "eip155:84532" and offer.accepts[0].pay_to == PAY_TO
    assert Inbox.select().count() == 0

    paid = client.simulate_post("/v1/inboxes", json={}, headers={**key, "PAYMENT-SIGNATURE": pay(wallet, unpaid)})
    assert paid.status_code == 201, paid.text
    receipt = decode_payment_response_header(paid.headers["PAYMENT-RESPONSE"])
    assert receipt.success and receipt.payer.lower() == wallet.address.lower()
    facilitator = postern.backend("billing").facilitator
    assert facilitator.balance_of(PAY_TO) == DEFAULT_BALANCE + 10_000

    # message.send is priced per recipient: two recipients, twice the price.
    path, body = f"/v1/inboxes/{paid.json['id']}/messages", {"to": ["a@example.org", "b@example.org"], "text": "t"}
    unpaid = client.simulate_post(path, json=body, headers=key)
    assert decode_payment_required_header(unpaid.headers["PAYMENT-REQUIRED"]).accepts[0].amount == "2000"
    sent = client.simulate_post(path, json=body, headers={**key, "PAYMENT-SIGNATURE": pay(wallet, unpaid)})
    assert sent.status_code == 201 and "PAYMENT-RESPONSE" in sent.headers
    assert facilitator.balance_of(PAY_TO) == DEFAULT_BALANCE + 12_000 and outbound() == 1
    assert [(p.action, p.amount, p.state, p.used) for p in X402Payment.select().order_by(X402Payment.created_at)] == [
        ("inbox.create", "10000", "settled", True),
        ("message.send", "2000", "settled", True),
    ]


def test_x402_bad_payments_are_refused_with_nothing_done_or_charged(x402, wallet):
    postern, client = x402
    acme, globex = make_tenant("acme"), make_tenant("globex")
    key, other = bearer(acme.agent_key().agent_key), bearer(globex.agent_key().agent_key)
    backend = postern.backend("billing")
    unpaid = client.simulate_post("/v1/inboxes", json={}, headers=key)
    good = pay(wallet, unpaid)

    def create(signature, headers=key):
        return client.simulate_post("/v1/inboxes", json={}, headers={**headers, "PAYMENT-SIGNATURE": signature})

    def refused(resp, code, words=""):
        assert resp.status_code == 402, resp.text
        assert resp.json["error"]["code"] == code, resp.json
        assert words in resp.json["error"]["message"]
        assert "PAYMENT-REQUIRED" in resp.headers  # a fresh offer to pay again
        assert Inbox.select().count() == 0 and settlements(postern) == 0

    refused(create("%%% not base64 %%%"), "payment_malformed")
    refused(create("WzEsMl0="), "payment_malformed")  # base64 of [1,2]
    refused(create(""), "payment_required")

    def relabel(field, value):
        return lambda p: p["accepted"].__setitem__(field, value)

    refused(create(reencoded(good, relabel("amount", "1"))), "payment_mismatch", "amount")
    refused(create(reencoded(good, relabel("asset", "0x" + "11" * 20))), "payment_mismatch", "asset")
    refused(create(reencoded(good, relabel("network", "eip155:11155111"))), "payment_mismatch", "network")
    refused(create(good, headers=other), "payment_mismatch", "another action or customer")
    # The value signed raised above the offer after signing: the signature no longer holds.
    raised = reencoded(good, lambda p: p["payload"]["authorization"].__setitem__("value", "20000"))
    refused(create(raised), "payment_invalid")

    # Expired: the facilitator's clock runs past the authorisation's validBefore.
    import time

    later = time.time() + 3600
    backend.facilitator._clock = lambda: later
    refused(create(good), "payment_expired")
    backend.facilitator._clock = time.time

    # A settle that fails after verify: the payer's balance is gone by then.
    backend.server.on_after_verify(lambda ctx: backend.facilitator.set_balance(wallet.address, 0))
    refused(create(good), "payment_settle_failed")
    backend.server._after_verify_hooks.clear()
    backend.facilitator.set_balance(wallet.address, 10**9)

    # The same payment, now good, pays once; presented again it is a replay.
    assert create(good).status_code == 201
    again = create(good)
    assert again.status_code == 402 and again.json["error"]["code"] == "payment_replayed"
    assert Inbox.select().count() == 1 and settlements(postern) == 1


def test_x402_a_payment_for_another_resource_is_refused(x402, wallet):
    postern, client = x402
    key = bearer(make_tenant("acme").agent_key().agent_key)
    first = client.simulate_post("/v1/inboxes", json={}, headers=key)
    made = client.simulate_post("/v1/inboxes", json={}, headers={**key, "PAYMENT-SIGNATURE": pay(wallet, first)})
    path = f"/v1/inboxes/{made.json['id']}/messages"
    ten = {"to": [f"r{i}@example.org" for i in range(10)], "text": "t"}  # 10 x 1000: the inbox's price
    unpaid_inbox = client.simulate_post("/v1/inboxes", json={}, headers=key)
    sent = client.simulate_post(path, json=ten, headers={**key, "PAYMENT-SIGNATURE": pay(wallet, unpaid_inbox)})
    assert sent.status_code == 402 and sent.json["error"]["code"] == "payment_mismatch"
    assert outbound() == 0 and settlements(postern) == 1


def test_x402_a_failed_action_after_settlement_is_retried_without_paying_again(x402, wallet):
    postern, client = x402
    key = bearer(make_tenant("acme").agent_key().agent_key)
    unpaid = client.simulate_post("/v1/inboxes", json={}, headers=key)
    first = client.simulate_post(
        "/v1/inboxes", json={"username": "taken"}, headers={**key, "PAYMENT-SIGNATURE": pay(wallet, unpaid)}
    )
    assert first.status_code == 201
    signature = pay(wallet, client.simulate_post("/v1/inboxes", json={}, headers=key))
    clash = client.simulate_post(
        "/v1/inboxes", json={"username": "taken"}, headers={**key, "PAYMENT-SIGNATURE": signature}
    )
    assert clash.status_code == 409, clash.text  # settled, then the action failed
    assert settlements(postern) == 2
    retry = client.simulate_post(
        "/v1/inboxes", json={"username": "free"}, headers={**key, "PAYMENT-SIGNATURE": signature}
    )
    assert retry.status_code == 201, retry.text
    assert "PAYMENT-RESPONSE" in retry.headers
    assert settlements(postern) == 2 and Inbox.select().count() == 2
    replay = client.simulate_post("/v1/inboxes", json={}, headers={**key, "PAYMENT-SIGNATURE": signature})
    assert replay.json["error"]["code"] == "payment_replayed"


def test_x402_a_retried_paid_send_is_charged_once(x402, wallet):
    postern, client = x402
    key = bearer(make_tenant("acme").agent_key().agent_key)
    unpaid = client.simulate_post("/v1/inboxes", json={}, headers=key)
    inbox = client.simulate_post("/v1/inboxes", json={}, headers={**key, "PAYMENT-SIGNATURE": pay(wallet, unpaid)})
    path, body = f"/v1/inboxes/{inbox.json['id']}/messages", {"to": ["a@example.org"], "text": "t"}
    idem = {**key, "Idempotency-Key": "send-1"}
    signature = pay(wallet, client.simulate_post(path, json=body, headers=idem))
    once = client.simulate_post(path, json=body, headers={**idem, "PAYMENT-SIGNATURE": signature})
    again = client.simulate_post(path, json=body, headers={**idem, "PAYMENT-SIGNATURE": signature})
    bare = client.simulate_post(path, json=body, headers=idem)
    assert (once.status_code, again.status_code, bare.status_code) == (201, 200, 200)
    assert once.json["id"] == again.json["id"] == bare.json["id"]
    assert outbound() == 1 and settlements(postern) == 2  # the inbox and one send
    assert postern.backend("billing").facilitator.balance_of(PAY_TO) == DEFAULT_BALANCE + 11_000


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"pay_to": PAY_TO, "mode": "live"}, 'mode must be "test"'),
        ({"pay_to": PAY_TO, "network": "eip155:8453"}, "Base mainnet"),
        ({"pay_to": PAY_TO, "network": "eip155:1"}, "Ethereum mainnet"),
        ({}, "pay_to is required"),
        ({"pay_to": "nope"}, "pay_to must be a 0x"),
        ({"pay_to": PAY_TO, "prices": {"inbox_delete": 1}}, "not a priced action"),
        ({"pay_to": PAY_TO, "facilitator_url": "ftp://x"}, "facilitator_url must be an http"),
    ],
)
def test_x402_options_refuse_real_money_and_bad_values(options, problem):
    pytest.importorskip("x402.mechanisms.evm.exact", reason="needs the optional package x402[evm]")
    from postern.plugins.billing_x402.backend import X402Billing

    with pytest.raises(OptionError) as caught:
        X402Billing.from_config(options)
    assert problem in str(caught.value)


def test_x402_the_sdk_pays_by_itself_with_a_test_wallet(x402, wallet):
    from postern.client import Postern, errors
    from postern.client.payments import X402Payer
    from postern.mcp.server import tool_error
    from postern.testing.inprocess import InProcessTransport

    postern, _ = x402
    key = make_tenant("acme").agent_key().agent_key
    transport = InProcessTransport(create_app(postern))
    try:
        unpaid = Postern(api_key=key, base_url="http://postern.test", transport=transport)
        with pytest.raises(errors.PaymentRequired) as caught:
            unpaid.inboxes.create()
        assert caught.value.code == "payment_required" and caught.value.payment_required
        assert "x402" in str(tool_error(caught.value)) and "payment_required" in str(tool_error(caught.value))

        paying = Postern(api_key=key, base_url="http://postern.test", transport=transport, x402_payer=X402Payer(wallet))
        inbox = paying.inboxes.create()
        assert paying.last_payment_response
        paying.messages.send(inbox.id, to=["a@example.org", "b@example.org"], text="paid")
        assert settlements(postern) == 2 and outbound() == 1
        assert postern.backend("billing").facilitator.balance_of(PAY_TO) == DEFAULT_BALANCE + 12_000
    finally:
        transport.shutdown()


def test_x402_one_payment_presented_by_many_requests_at_once_pays_once(x402, wallet):
    import threading

    from postern.core.db import database
    from postern.core.principal import RequestInfo

    postern, client = x402
    acme = make_tenant("acme")
    key = bearer(acme.agent_key().agent_key)
    signature = pay(wallet, client.simulate_post("/v1/inboxes", json={}, headers=key))
    backend, answers, start = postern.backend("billing"), [], threading.Barrier(8)

    def present():
        start.wait()
        try:
            answers.append(backend.check(acme.customer.id, "inbox.create", 1, info=RequestInfo(payment=signature)))
        finally:
            database.close()

    threads = [threading.Thread(target=present) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(a.allowed for a in answers) == [False] * 7 + [True]
    assert {a.code for a in answers if not a.allowed} == {"payment_replayed"}
    assert settlements(postern) == 1
