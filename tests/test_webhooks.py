"""Webhooks in process: management over the real app, deliveries queued with their
events, and the dispatcher's claim/send/record against real HTTP receivers on 127.0.0.1."""

from __future__ import annotations

import base64
import datetime as dt
import json
import threading
import time

import falcon.testing
import peewee
import pytest
import standardwebhooks
from support.receiver import Receiver
from support.world import INFO, make_tenant

from postern.api import create_app
from postern.client import WebhookVerificationError, verify_webhook
from postern.core.auth import authenticate
from postern.core.config import load_config
from postern.core.mail.ingest import ingest
from postern.core.models import AuditEvent, Message, Webhook, WebhookDelivery, utcnow
from postern.core.runtime import build_postern
from postern.core.webhooks import dispatch, signing


@pytest.fixture
def config(config):
    config.webhooks.allow_destinations = ["127.0.0.0/8"]
    config.webhooks.retry_schedule = [1, 1]
    config.webhooks.timeout_seconds = 10  # no test here wants a timeout: a slow box must not make one
    config.webhooks.disable_after_failed_deliveries = 1
    return config


@pytest.fixture
def agent(client):
    return make_tenant("acme").agent_key(handle="bot")


def auth(agent) -> dict:
    return {"Authorization": f"Bearer {agent.agent_key}"}


def new_inbox(client, agent, username="support") -> dict:
    resp = client.simulate_post("/v1/inboxes", headers=auth(agent), json={"username": username})
    assert resp.status_code == 201, resp.text
    return resp.json


def new_hook(client, agent, url, **fields) -> dict:
    body = {"url": url, "event_types": ["message.received"], **fields}
    resp = client.simulate_post("/v1/webhooks", headers=auth(agent), json=body)
    assert resp.status_code == 201, resp.text
    return resp.json


def mail(postern, inbox, subject="Hello", text="Where is my order?") -> Message:
    raw = (
        f"From: Alice <alice@example.org>\r\nTo: {inbox['address']}\r\nSubject: {subject}\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n'
        f"{text}\r\n--b\r\nContent-Type: application/pdf\r\n"
        'Content-Disposition: attachment; filename="a.pdf"\r\n\r\n%PDF-SECRET-BYTES\r\n--b--\r\n'
    ).encode()
    [message] = ingest(postern, raw, "alice@example.org", [inbox["address"]])
    return message


def drain(postern, rounds=1) -> int:
    return sum(dispatch.deliver_due(postern) for _ in range(rounds))


def deliveries(**where) -> list[WebhookDelivery]:
    query = WebhookDelivery.select().order_by(WebhookDelivery.created_at, WebhookDelivery.id)
    for name, value in where.items():
        query = query.where(getattr(WebhookDelivery, name) == value)
    return list(query)


# -- management -----------------------------------------------------------------------


def test_create_shows_the_secret_once_and_stores_it_encrypted(client, agent, db):
    hook = new_hook(client, agent, "https://hooks.example.org/in", description="ops")
    secret = hook["secret"]
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 32
    assert hook["event_types"] == ["message.received"] and hook["enabled"] is True and hook["inbox_ids"] == []

    got = client.simulate_get(f"/v1/webhooks/{hook['id']}", headers=auth(agent)).json
    listed = client.simulate_get("/v1/webhooks", headers=auth(agent)).json["data"]
    assert "secret" not in got and [h["id"] for h in listed] == [hook["id"]] and "secret" not in listed[0]
    assert secret not in json.dumps(got) + json.dumps(listed)

    row = Webhook.get_by_id(hook["id"])
    assert secret not in row.secret and secret[6:] not in row.secret
    assert signing.decrypt(row.secret, row.id) == secret
    with pytest.raises(signing.SecretUnreadable):
        signing.decrypt(row.secret, "whk_" + "a" * 26)  # bound to its row
    dump = "\n".join(str(r) for r in db.execute_sql("SELECT * FROM webhook").fetchall())
    assert secret[6:] not in dump
    actions = [e.action for e in AuditEvent.select().where(AuditEvent.target == hook["id"]).order_by(AuditEvent.id)]
    assert actions == ["webhook.create", "webhook.read"]


def test_update_disable_enable_and_delete(client, agent):
    inbox = new_inbox(client, agent)
    hook = new_hook(client, agent, "https://hooks.example.org/in")
    url = f"/v1/webhooks/{hook['id']}"
    resp = client.simulate_patch(
        url,
        headers=auth(agent),
        json={"event_types": ["inbox.created", "message.sent"], "inbox_ids": [inbox["id"]], "enabled": False},
    )
    assert resp.status_code == 200, resp.text
    assert resp.json["event_types"] == ["inbox.created", "message.sent"] and resp.json["inbox_ids"] == [inbox["id"]]
    assert resp.json["enabled"] is False and resp.json["disabled_reason"] == "disabled by request"
    resp = client.simulate_patch(url, headers=auth(agent), json={"enabled": True})
    assert resp.json["enabled"] is True and resp.json["disabled_reason"] is None
    assert client.simulate_delete(url, headers=auth(agent)).status_code == 204
    assert client.simulate_get(url, headers=auth(agent)).status_code == 404
    actions = [e.action for e in AuditEvent.select().where(AuditEvent.target == hook["id"]).order_by(AuditEvent.id)]
    assert actions == ["webhook.create", "webhook.update", "webhook.update", "webhook.delete", "webhook.read"]


BAD_URLS = [
    "ftp://hooks.example.org/x",
    "hooks.example.org/x",
    "https://",
    "https://user:pw@hooks.example.org/x",
    "https://hooks.example.org/x#frag",
    "https://hooks.example.org/a b",
    "https://hooks.example.org:99999/x",
    "http://10.1.2.3/x",
    "http://192.168.0.10/x",
    "http://169.254.169.254/latest/meta-data",
    "http://[::1]/x",
    "http://[::ffff:10.0.0.1]/x",
    "http://[fe80::1]/x",
    "http://0.0.0.0/x",
    "https://bücher.example/x",
    "https://x" + "a" * 2000 + ".example.org/",
    5,
]


@pytest.mark.parametrize("url", BAD_URLS)
def test_bad_and_private_urls_are_refused(client, agent, url):
    resp = client.simulate_post(
        "/v1/webhooks", headers=auth(agent), json={"url": url, "event_types": ["message.received"]}
    )
    assert resp.status_code == 422, resp.text
    assert resp.json["error"]["field"] == "url"
    assert Webhook.select().count() == 0


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/x", "http://localhost:8080/x", "http://api.localhost/x"])
def test_loopback_needs_the_operators_allowance(env, db, url):
    # Not this file's config, which allows loopback: the default, allow_destinations empty.
    client = falcon.testing.TestClient(create_app(build_postern(load_config(environ=env))))
    agent = make_tenant("acme").agent_key()
    resp = client.simulate_post(
        "/v1/webhooks", headers=auth(agent), json={"url": url, "event_types": ["inbox.created"]}
    )
    assert resp.status_code == 422 and resp.json["error"]["code"] == "destination_refused"
    assert "webhooks.allow_destinations" in resp.json["error"]["message"]


@pytest.mark.parametrize(
    "body, field",
    [
        ({"event_types": ["message.received"]}, "url"),
        ({"url": "https://h.example.org/"}, "event_types"),
        ({"url": "https://h.example.org/", "event_types": []}, "event_types"),
        ({"url": "https://h.example.org/", "event_types": ["message.opened"]}, "event_types"),
        ({"url": "https://h.example.org/", "event_types": "message.received"}, "event_types"),
        ({"url": "https://h.example.org/", "event_types": ["inbox.created"], "secret": "mine"}, "secret"),
        ({"url": "https://h.example.org/", "event_types": ["inbox.created"], "inbox_ids": ["inb_nope"]}, "inbox_ids"),
        ({"url": "https://h.example.org/", "event_types": ["inbox.created"], "inbox_ids": "all"}, "inbox_ids"),
        ({"url": "https://h.example.org/", "event_types": ["inbox.created"], "enabled": "yes"}, "enabled"),
        ({"url": "https://h.example.org/", "event_types": ["inbox.created"], "description": "a\nb"}, "description"),
    ],
)
def test_bad_fields_are_named_and_create_nothing(client, agent, body, field):
    resp = client.simulate_post("/v1/webhooks", headers=auth(agent), json=body)
    assert resp.status_code == 422 and resp.json["error"]["field"] == field, resp.text
    assert Webhook.select().count() == 0


def test_malformed_json_and_other_tenants_inboxes_are_refused(client, agent):
    resp = client.simulate_post(
        "/v1/webhooks", headers={**auth(agent), "Content-Type": "application/json"}, body="{nope"
    )
    assert resp.status_code == 400 and resp.json["error"]["code"] == "malformed_json"
    other = make_tenant("globex").agent_key(handle="other")
    theirs = new_inbox(client, other, "theirs")
    body = {"url": "https://h.example.org/", "event_types": ["inbox.created"], "inbox_ids": [theirs["id"]]}
    resp = client.simulate_post("/v1/webhooks", headers=auth(agent), json=body)
    assert resp.status_code == 422 and resp.json["error"]["message"] == f"inbox_ids: no inbox '{theirs['id']}'"
    assert Webhook.select().count() == 0


# -- events become deliveries, in the event's transaction -------------------------


def test_a_received_message_is_one_signed_delivery(postern, client, agent):
    inbox = new_inbox(client, agent)
    with Receiver() as receiver:
        hook = new_hook(client, agent, receiver.url)
        message = mail(postern, inbox)
        [queued] = deliveries()
        assert (queued.status, queued.event_type, queued.webhook_id) == ("pending", "message.received", hook["id"])
        assert drain(postern) == 1
        [got] = receiver.wait_for(1)
    event = standardwebhooks.Webhook(hook["secret"]).verify(got.body, got.headers)
    assert event == verify_webhook(got.body, got.headers, hook["secret"])
    assert got.headers["webhook-id"] == queued.event_id and got.headers["content-type"] == "application/json"
    assert event["type"] == "message.received" and event["timestamp"].endswith("Z")
    data = event["data"]
    assert (data["id"], data["inbox_id"], data["thread_id"]) == (message.id, inbox["id"], message.thread_id)
    assert data["from"] == {"address": "alice@example.org", "name": "Alice"} and data["subject"] == "Hello"
    assert data["text"].strip() == "Where is my order?" and data["truncated"] is False
    assert data["snippet"] == "Where is my order?"
    [att] = data["attachments"]
    assert att["filename"] == "a.pdf" and b"SECRET-BYTES" not in got.body and "headers" not in data
    assert data["links"]["message"] == f"/v1/inboxes/{inbox['id']}/messages/{message.id}"
    [row] = deliveries()
    assert (row.status, row.attempts, row.last_status_code, row.lease) == ("succeeded", 1, 200, None)


def test_a_received_message_carries_its_codes_and_verification_links(postern, client, agent):
    inbox = new_inbox(client, agent)
    with Receiver() as receiver:
        hook = new_hook(client, agent, receiver.url)
        mail(postern, inbox, "Your code", "Your login code is 482 913.\nConfirm: https://example.org/verify?t=1")
        assert drain(postern) == 1
        [got] = receiver.wait_for(1)
    data = verify_webhook(got.body, got.headers, hook["secret"])["data"]
    assert data["codes"] == [{"value": "482913", "as_written": "482 913", "evidence": "login code"}]
    assert [x["url"] for x in data["verification_links"]] == ["https://example.org/verify?t=1"]
    assert data["verification_links"][0]["sender_domain"] is True and "message" in data["links"]


def test_bodies_are_capped(postern, client, agent):
    postern.config.webhooks.max_body_chars = 10
    inbox = new_inbox(client, agent)
    new_hook(client, agent, "http://127.0.0.1:9/x")
    mail(postern, inbox, text="x" * 500)
    data = json.loads(deliveries()[0].payload)["data"]
    assert data["text"] == "x" * 10 and data["truncated"] is True


def test_filters_by_event_type_and_inbox(postern, client, agent):
    a, b = new_inbox(client, agent, "a"), new_inbox(client, agent, "b")
    only_a = new_hook(client, agent, "http://127.0.0.1:9/a", inbox_ids=[a["id"]])
    inbox_events = new_hook(client, agent, "http://127.0.0.1:9/i", event_types=["inbox.created", "inbox.deleted"])
    mail(postern, a)
    mail(postern, b)
    c = new_inbox(client, agent, "c")
    assert client.simulate_delete(f"/v1/inboxes/{c['id']}", headers=auth(agent)).status_code == 204
    got = [(d.webhook_id, d.event_type, json.loads(d.payload)["data"]["id"]) for d in deliveries()]
    assert got == [
        (only_a["id"], "message.received", Message.get(Message.inbox == a["id"]).id),
        (inbox_events["id"], "inbox.created", c["id"]),
        (inbox_events["id"], "inbox.deleted", c["id"]),
    ]
    # another enrollment's inboxes never reach these webhooks
    stranger = make_tenant("globex").agent_key(handle="x")
    mail(postern, new_inbox(client, stranger, "x"))
    assert len(deliveries()) == 3


def test_no_event_commits_without_its_deliveries(postern, client, agent, monkeypatch):
    inbox = new_inbox(client, agent)
    new_hook(client, agent, "http://127.0.0.1:9/x")

    def broken(*args, **kwargs):
        raise peewee.OperationalError("disk full while queuing deliveries")

    monkeypatch.setattr(WebhookDelivery, "insert_many", broken)
    with pytest.raises(peewee.OperationalError):
        mail(postern, inbox)
    assert Message.select().count() == 0 and WebhookDelivery.select().count() == 0


def test_sent_and_failed_messages(postern, client, agent):
    inbox = new_inbox(client, agent)
    peer = new_inbox(client, agent, "peer")
    hook = new_hook(client, agent, "http://127.0.0.1:9/x", event_types=["message.sent", "message.failed"])
    resp = client.simulate_post(
        f"/v1/inboxes/{inbox['id']}/messages",
        headers=auth(agent),
        json={"to": [peer["address"]], "subject": "hi", "text": "local"},
    )
    assert resp.status_code == 201 and resp.json["status"] == "sent"
    [sent] = deliveries(webhook=hook["id"])
    assert sent.event_type == "message.sent" and json.loads(sent.payload)["data"]["id"] == resp.json["id"]

    from postern.core.backends import PermanentFailure
    from postern.core.mail import delivery

    message = Message.get_by_id(resp.json["id"])
    Message.update(status="queued").where(Message.id == message.id).execute()
    delivery.mark_failed(postern, Message.get_by_id(message.id), PermanentFailure("550 no such user", code="rejected"))
    failed = deliveries(event_type="message.failed")[0]
    data = json.loads(failed.payload)["data"]
    assert data["status"] == "failed" and "550 no such user" in data["error"]


# -- the dispatcher -------------------------------------------------------------------


def test_retries_use_the_same_webhook_id_on_schedule(postern, client, agent):
    inbox = new_inbox(client, agent)
    with Receiver(script=[500, 500]) as receiver:
        hook = new_hook(client, agent, receiver.url)
        mail(postern, inbox)
        before = utcnow()
        assert drain(postern) == 1
        [row] = deliveries()
        after = utcnow()
        assert (row.status, row.attempts, row.last_status_code, row.last_error) == ("pending", 1, 500, "HTTP 500")
        # Due 1 s after the result was recorded, which happened between these two readings.
        assert before + dt.timedelta(seconds=1) <= row.next_attempt_at <= after + dt.timedelta(seconds=1)
        # Not claimed before it is due (on a slow box it may be due by now: then it is sent).
        assert drain(postern) == 0 or utcnow() >= row.next_attempt_at
        deadline = time.monotonic() + 60
        while len(receiver.requests) < 3 and time.monotonic() < deadline:
            drain(postern)
            time.sleep(0.1)
        got = receiver.wait_for(3)
    assert len({r.headers["webhook-id"] for r in got}) == 1 and len({r.body for r in got}) == 1
    assert got[1].at - got[0].at >= 0.9 and got[2].at - got[1].at >= 0.9
    for request in got:
        standardwebhooks.Webhook(hook["secret"]).verify(request.body, request.headers)
    [row] = deliveries()
    assert (row.status, row.attempts, row.last_status_code) == ("succeeded", 3, 200)
    log = client.simulate_get(f"/v1/webhooks/{hook['id']}/deliveries", headers=auth(agent)).json["data"]
    assert [(d["status"], d["attempts"], d["last_status_code"], d["next_attempt_at"]) for d in log] == [
        ("succeeded", 3, 200, None)
    ]


def test_a_delivery_fails_after_its_schedule_and_the_webhook_is_disabled(postern, client, agent):
    inbox = new_inbox(client, agent)
    with Receiver(script=[503] * 10) as receiver:
        hook = new_hook(client, agent, receiver.url)
        mail(postern, inbox)
        deadline = time.monotonic() + 60
        while deliveries()[0].status == "pending" and time.monotonic() < deadline:
            drain(postern)
            time.sleep(0.1)
        assert len(receiver.requests) == 3  # now, +1 s, +1 s
        [row] = deliveries()
        assert (row.status, row.attempts, row.last_status_code) == ("failed", 3, 503)
        got = client.simulate_get(f"/v1/webhooks/{hook['id']}", headers=auth(agent)).json
        assert got["enabled"] is False and "failed every attempt" in got["disabled_reason"]
        mail(postern, inbox)  # a disabled webhook queues nothing
        assert len(deliveries()) == 1

        # a manual retry is held while disabled, and sent once enabled again
        url = f"/v1/webhooks/{hook['id']}/deliveries/{row.id}/retry"
        resp = client.simulate_post(url, headers=auth(agent))
        assert resp.status_code == 202 and resp.json["status"] == "pending"
        assert drain(postern) == 0
        client.simulate_patch(f"/v1/webhooks/{hook['id']}", headers=auth(agent), json={"enabled": True})
        receiver.script = []
        assert drain(postern) == 1
        assert receiver.requests[-1].headers["webhook-id"] == row.event_id
    assert deliveries()[0].status == "succeeded"


def test_redirects_are_not_followed_and_responses_are_capped(postern, client, agent):
    inbox = new_inbox(client, agent)
    with Receiver(script=[302], headers={"Location": "http://127.0.0.1:9/elsewhere"}, body=b"y" * 200_000) as r:
        new_hook(client, agent, r.url)
        mail(postern, inbox)
        drain(postern)
        time.sleep(0.2)
        assert len(r.requests) == 1
    [row] = deliveries()
    assert (row.status, row.last_status_code) == ("pending", 302) and len(row.last_response) == 1024


def test_connect_time_check_refuses_what_the_policy_no_longer_allows(postern, client, agent):
    inbox = new_inbox(client, agent)
    with Receiver() as receiver:
        new_hook(client, agent, receiver.url.replace("127.0.0.1", "localhost"))
        postern.config.webhooks.allow_destinations = []
        mail(postern, inbox)
        drain(postern)
        time.sleep(0.2)
        assert receiver.requests == []
    [row] = deliveries()
    assert row.status == "pending" and row.last_error.startswith("destination refused: localhost resolves to")


def test_rotation_signs_with_both_secrets_during_the_grace_period(postern, client, agent):
    inbox = new_inbox(client, agent)
    with Receiver() as receiver:
        hook = new_hook(client, agent, receiver.url)
        url = f"/v1/webhooks/{hook['id']}/rotate-secret"
        rotated = client.simulate_post(url, headers=auth(agent), json={"grace_seconds": 3600}).json
        assert rotated["secret"] != hook["secret"] and rotated["secret_rotating_until"]
        mail(postern, inbox)
        drain(postern)
        [got] = receiver.wait_for(1)
        assert len(got.headers["webhook-signature"].split()) == 2
        for secret in (hook["secret"], rotated["secret"]):
            standardwebhooks.Webhook(secret).verify(got.body, got.headers)
            verify_webhook(got.body, got.headers, secret)

        final = client.simulate_post(url, headers=auth(agent), json={"grace_seconds": 0}).json
        mail(postern, inbox)
        drain(postern)
        got = receiver.wait_for(2)[1]
    assert len(got.headers["webhook-signature"].split()) == 1
    verify_webhook(got.body, got.headers, final["secret"])
    with pytest.raises(WebhookVerificationError):
        verify_webhook(got.body, got.headers, rotated["secret"])
    bad = client.simulate_post(url, headers=auth(agent), json={"grace_seconds": -1})
    assert bad.status_code == 422 and bad.json["error"]["field"] == "grace_seconds"


def test_test_event_and_manual_retry_resend_the_same_id(postern, client, agent):
    with Receiver() as receiver:
        hook = new_hook(client, agent, receiver.url)
        resp = client.simulate_post(f"/v1/webhooks/{hook['id']}/test", headers=auth(agent))
        assert resp.status_code == 202 and resp.json["event_type"] == "webhook.test"
        drain(postern)
        url = f"/v1/webhooks/{hook['id']}/deliveries/{resp.json['id']}/retry"
        assert client.simulate_post(url, headers=auth(agent)).status_code == 202
        drain(postern)
        first, second = receiver.wait_for(2)
    assert first.body == second.body and first.headers["webhook-id"] == second.headers["webhook-id"]
    assert json.loads(first.body)["data"]["webhook_id"] == hook["id"]
    missing = f"/v1/webhooks/{hook['id']}/deliveries/dlv_{'a' * 26}/retry"
    assert client.simulate_post(missing, headers=auth(agent)).status_code == 404


def test_concurrent_dispatchers_never_send_an_attempt_twice(postern, client, agent, db_url):
    from postern.core.db import database

    inbox = new_inbox(client, agent)
    with Receiver(delay=0.01) as receiver:
        new_hook(client, agent, receiver.url)
        for i in range(40):
            mail(postern, inbox, subject=f"n{i}")
        errors = []

        def worker():
            try:
                with database.connection_context():
                    while dispatch.deliver_due(postern, limit=3):
                        pass
            except Exception as exc:  # collected and asserted on below
                errors.append(exc)

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        got = receiver.wait_for(40)
        time.sleep(0.1)
    assert errors == []
    ids = [r.headers["webhook-id"] for r in receiver.requests]
    assert len(ids) == len(set(ids)) == 40
    assert {d.status for d in deliveries()} == {"succeeded"} and {d.attempts for d in deliveries()} == {1}
    assert len(got) == 40


def test_a_late_result_under_a_lost_lease_is_dropped(postern, client, agent):
    inbox = new_inbox(client, agent)
    new_hook(client, agent, "http://127.0.0.1:9/x")
    mail(postern, inbox)
    [first] = dispatch.claim(postern, 10)
    WebhookDelivery.update(next_attempt_at=utcnow()).execute()  # as if the lease expired
    [second] = dispatch.claim(postern, 10)
    assert second.attempts == 2 and second.lease != first.lease
    assert dispatch.record(postern, first, dispatch.Outcome(True, 200)) is None
    assert dispatch.record(postern, second, dispatch.Outcome(True, 200)) == "succeeded"


# -- the SDK ----------------------------------------------------------------------------


def signed(secret: str, body: bytes, ts: int | None = None, msg_id: str = "evt_1") -> dict:
    ts = int(time.time()) if ts is None else ts
    return {
        "Webhook-Id": msg_id,
        "Webhook-Timestamp": str(ts),
        "Webhook-Signature": signing.signature_header([secret], msg_id, ts, body),
    }


def test_verify_webhook_accepts_what_standardwebhooks_signs():
    secret = signing.new_secret()
    body = json.dumps({"type": "message.received", "data": {"subject": "héllo"}}, ensure_ascii=False).encode()
    ts = int(time.time())
    from datetime import UTC, datetime

    theirs = standardwebhooks.Webhook(secret).sign("evt_x", datetime.fromtimestamp(ts, UTC), body.decode())
    headers = {"webhook-id": "evt_x", "webhook-timestamp": str(ts), "webhook-signature": theirs}
    assert verify_webhook(body, headers, secret)["data"]["subject"] == "héllo"
    assert signing.signature(secret, "evt_x", ts, body) == theirs


@pytest.mark.parametrize("case", ["tampered", "stale", "future", "wrong-secret", "missing", "bad-version"])
def test_verify_webhook_refuses(case):
    secret, body = signing.new_secret(), b'{"type":"message.received"}'
    now = time.time()
    headers = signed(secret, body)
    if case == "tampered":
        body = b'{"type":"message.sent"}'
    elif case == "stale":
        headers = signed(secret, body, int(now) - 301)
    elif case == "future":
        headers = signed(secret, body, int(now) + 301)
    elif case == "wrong-secret":
        secret = signing.new_secret()
    elif case == "missing":
        del headers["Webhook-Signature"]
    else:
        headers["Webhook-Signature"] = headers["Webhook-Signature"].replace("v1,", "v2,")
    with pytest.raises(WebhookVerificationError):
        verify_webhook(body, headers, secret, now=now)


def test_verify_webhook_tolerance_edges():
    secret, body = signing.new_secret(), b"{}"
    now = time.time()
    assert verify_webhook(body, signed(secret, body, int(now) - 299), secret, now=now) == {}
    both = signed(secret, body)
    both["Webhook-Signature"] = "v1,AAAA " + both["Webhook-Signature"]
    assert verify_webhook(body, both, secret) == {}


def test_webhook_management_is_audited_per_agent(client, agent, postern):
    principal = authenticate(agent.agent_key, "agent", INFO)
    hook = new_hook(client, agent, "https://hooks.example.org/x")
    [row] = AuditEvent.select().where(AuditEvent.action == "webhook.create")
    assert (row.agent_id, row.token_id, row.target) == (principal.agent_id, principal.token_id, hook["id"])
