"""Human approval of outbound mail: a send from an enrollment key (or inbox) that
requires it is held as ``pending_approval`` and nothing leaves, not to a real smarthost
nor to an inbox here, until an operator or org admin approves it as written; a rejection
carries the reviewer's note to the agent; unreviewed mail expires. API, CLI, console,
webhook events, tenancy and audit."""

from __future__ import annotations

import datetime as dt
import json
import re

import falcon.testing
import pytest
from click.testing import CliRunner
from support.world import INFO, make_tenant, operator_token, seed_inbox
from test_console import csrf_of, post, sign_in

from postern.api import create_app
from postern.cli.app import cli
from postern.client.models import Message as SdkMessage
from postern.core import approval
from postern.core.auth import authenticate
from postern.core.mail.delivery import deliver_due
from postern.core.models import AuditEvent, EnrollmentKey, Inbox, Message, WebhookDelivery, utcnow
from postern.core.runtime import build_postern
from postern.core.webhooks.manage import create_webhook
from postern.mcp import shape

OUTSIDE = "someone@example.org"
EVENTS = ["message.pending_approval", "message.approved", "message.rejected", "message.expired", "message.sent"]


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def acme(postern):
    """A customer with a supervised agent (its enrollment key requires approval, and a
    webhook for the approval events) and an unsupervised one whose inbox receives."""
    tenant = make_tenant("acme")
    tenant.bot = tenant.agent_key(handle="bot", require_approval=True)
    tenant.inbox = seed_inbox(postern, tenant.bot, "bot")
    principal = authenticate(tenant.bot.agent_key, "agent", INFO)
    create_webhook(postern, principal, INFO, {"url": "https://hooks.example.org/in", "event_types": EVENTS})
    tenant.peer = tenant.agent_key(handle="peer")
    tenant.peer_inbox = seed_inbox(postern, tenant.peer, "peer")
    return tenant


def send(client, tenant, to=None, **mail):
    body = {"to": to or [tenant.peer_inbox.address, OUTSIDE], "subject": "quarterly numbers", "text": "hi", **mail}
    return client.simulate_post(
        f"/v1/inboxes/{tenant.inbox.id}/messages", headers=bearer(tenant.bot.agent_key), json=body
    )


def agent_view(client, tenant, message_id: str) -> dict:
    resp = client.simulate_get(
        f"/v1/inboxes/{tenant.inbox.id}/messages/{message_id}", headers=bearer(tenant.bot.agent_key)
    )
    assert resp.status_code == 200, resp.text
    return resp.json


def peer_received(tenant) -> list[Message]:
    """What the local recipient got besides its seed message."""
    query = Message.select().where((Message.inbox == tenant.peer_inbox.id) & (Message.subject == "quarterly numbers"))
    return list(query)


def events(message_id: str) -> list[str]:
    """The event types queued for ``message_id``, sorted (ids are random: no order)."""
    rows = WebhookDelivery.select()
    return sorted(r.event_type for r in rows if json.loads(r.payload)["data"].get("id") == message_id)


def test_a_held_send_waits_and_an_approval_delivers_it_as_written(client, postern, acme):
    held = send(client, acme)
    assert held.status_code == 202, held.text
    assert held.json["status"] == "pending_approval" and held.json["left_server"] is False
    assert "approval" in held.json["status_reason"]
    told_the_model = shape.sent(SdkMessage.from_json(held.json))  # MCP's send_email answer
    assert told_the_model["warning"].startswith("NOT SENT YET: held for a human's approval")
    expires = dt.datetime.fromisoformat(held.json["approval_expires_at"].rstrip("Z"))
    assert dt.timedelta(hours=71) < expires - utcnow() <= dt.timedelta(hours=72)
    deliver_due(postern)  # the outbox does not take it either
    assert peer_received(acme) == [] and Message.get_by_id(held.json["id"]).status == "pending_approval"
    assert events(held.json["id"]) == ["message.pending_approval"]

    listed = client.simulate_get("/v1/admin/approvals", headers=bearer(acme.admin_token))
    assert listed.status_code == 200
    [pending] = listed.json["data"]
    assert pending["id"] == held.json["id"] and pending["text"] == "hi"
    assert sorted(pending["envelope_to"]) == sorted([acme.peer_inbox.address, OUTSIDE])

    approved = client.simulate_post(
        f"/v1/admin/approvals/{held.json['id']}/approve", headers=bearer(acme.admin_token), json={}
    )
    assert approved.status_code == 200, approved.text
    assert approved.json["status"] == "captured"  # the outside copy: no outbound route configured here
    [copy] = peer_received(acme)
    assert copy.text == "hi\n" and copy.from_address == acme.inbox.address
    row = Message.get_by_id(held.json["id"])
    assert row.reviewed_by and row.reviewed_at and row.approval_expires_at is None
    assert events(held.json["id"]) == ["message.approved", "message.pending_approval", "message.sent"]
    assert agent_view(client, acme, held.json["id"])["approval_expires_at"] is None

    again = client.simulate_post(f"/v1/admin/approvals/{held.json['id']}/approve", headers=bearer(acme.admin_token))
    assert again.status_code == 409 and again.json["error"]["code"] == "not_pending_approval"
    assert "captured" in again.json["error"]["message"]
    assert client.simulate_get("/v1/admin/approvals", headers=bearer(acme.admin_token)).json["data"] == []
    actions = [e.action for e in AuditEvent.select().where(AuditEvent.target == held.json["id"])]
    assert "message.send" in actions and "message.approve" in actions


def test_nothing_reaches_a_real_smarthost_before_approval(config, db, sink):
    handler, port = sink
    config.roles["send"].options = {"smtp_local": {"smarthost": f"127.0.0.1:{port}", "starttls": False}}
    postern = build_postern(config)
    client = falcon.testing.TestClient(create_app(postern))
    tenant = make_tenant("acme")
    tenant.bot = tenant.agent_key(handle="bot", require_approval=True)
    tenant.inbox = seed_inbox(postern, tenant.bot, "bot")
    held = send(client, tenant, to=[OUTSIDE], bcc=["hidden@example.org"])
    assert held.status_code == 202
    deliver_due(postern)
    assert handler.received == []
    approved = client.simulate_post(f"/v1/admin/approvals/{held.json['id']}/approve", headers=bearer(operator_token()))
    assert approved.status_code == 200 and approved.json["status"] == "sent", approved.text
    [(mail_from, rcpts, content)] = handler.received
    assert mail_from.endswith("@acme.agents.localhost") and sorted(rcpts) == ["hidden@example.org", OUTSIDE]
    assert f"From: {tenant.inbox.address}".encode() in content and b"Subject: quarterly numbers" in content


def test_a_rejection_carries_the_note_to_the_agent_and_sends_nothing(client, postern, acme):
    held = send(client, acme).json
    rejected = client.simulate_post(
        f"/v1/admin/approvals/{held['id']}/reject",
        headers=bearer(acme.admin_token),
        json={"note": "no numbers before the earnings call"},
    )
    assert rejected.status_code == 200, rejected.text
    seen = agent_view(client, acme, held["id"])
    assert seen["status"] == "rejected" and seen["review_note"] == "no numbers before the earnings call"
    assert "earnings call" in seen["status_reason"] and seen["reviewed_at"]
    sdk = SdkMessage.from_json(seen)  # the SDK's model carries the outcome too
    assert (sdk.status, sdk.review_note, sdk.approval_expires_at) == ("rejected", seen["review_note"], None)
    assert isinstance(sdk.reviewed_at, dt.datetime)
    listing = client.simulate_get(f"/v1/inboxes/{acme.inbox.id}/messages", headers=bearer(acme.bot.agent_key))
    assert [m["status"] for m in listing.json["data"] if m["id"] == held["id"]] == ["rejected"]
    deliver_due(postern)
    assert peer_received(acme) == []
    assert events(held["id"]) == ["message.pending_approval", "message.rejected"]
    late = client.simulate_post(f"/v1/admin/approvals/{held['id']}/approve", headers=bearer(acme.admin_token))
    assert late.status_code == 409 and "rejected" in late.json["error"]["message"]
    assert Message.get_by_id(held["id"]).status == "rejected"
    assert (
        AuditEvent.select().where((AuditEvent.action == "message.reject") & (AuditEvent.target == held["id"])).count()
        == 1
    )


def test_unreviewed_mail_expires_when_its_time_has_passed(client, postern, acme, monkeypatch):
    held = send(client, acme).json
    assert approval.expire_due(postern) == 0  # not yet
    later = utcnow() + dt.timedelta(hours=72, minutes=1)
    monkeypatch.setattr(approval, "utcnow", lambda: later)
    assert approval.expire_due(postern) == 1
    assert approval.expire_due(postern) == 0
    seen = agent_view(client, acme, held["id"])
    assert seen["status"] == "expired" and "nobody approved" in seen["status_reason"]
    assert events(held["id"]) == ["message.expired", "message.pending_approval"]
    assert peer_received(acme) == []
    late = client.simulate_post(f"/v1/admin/approvals/{held['id']}/reject", headers=bearer(acme.admin_token))
    assert late.status_code == 409
    [row] = AuditEvent.select().where(AuditEvent.action == "message.expire")
    assert row.target == held["id"] and row.customer_id == acme.customer.id


def test_an_approval_takes_no_edits_and_bad_input_is_refused(client, acme):
    held = send(client, acme).json
    url = f"/v1/admin/approvals/{held['id']}"
    for path, body, field in (
        ("approve", {"text": "an edited text"}, "text"),
        ("approve", {"note": "fine"}, "note"),
        ("reject", {"note": "no", "subject": "edited"}, "subject"),
        ("reject", {"note": "x" * (approval.MAX_NOTE + 1)}, "note"),
        ("reject", {"note": 7}, "note"),
    ):
        resp = client.simulate_post(f"{url}/{path}", headers=bearer(acme.admin_token), json=body)
        assert resp.status_code == 422, (path, body, resp.text)
        assert resp.json["error"]["field"] == field
    assert Message.get_by_id(held["id"]).status == "pending_approval"
    assert Message.get_by_id(held["id"]).text == "hi"  # as the agent wrote it
    missing = client.simulate_post("/v1/admin/approvals/msg_nosuchmessage/approve", headers=bearer(acme.admin_token))
    assert missing.status_code == 404
    inbound = Message.select().where(Message.inbox == acme.inbox.id, Message.direction == "inbound").first()
    other = client.simulate_post(f"/v1/admin/approvals/{inbound.id}/approve", headers=bearer(acme.admin_token))
    assert other.status_code == 404  # not outbound mail: nothing to approve
    bad_limit = client.simulate_get("/v1/admin/approvals", params={"limit": "0"}, headers=bearer(acme.admin_token))
    assert bad_limit.status_code == 422


def test_another_tenant_sees_and_decides_nothing(client, acme):
    held = send(client, acme).json
    bolt = make_tenant("bolt")
    for verb in ("approve", "reject"):
        foreign = client.simulate_post(f"/v1/admin/approvals/{held['id']}/{verb}", headers=bearer(bolt.admin_token))
        absent = client.simulate_post(f"/v1/admin/approvals/msg_nosuchmessage/{verb}", headers=bearer(bolt.admin_token))
        assert foreign.status_code == absent.status_code == 404
        assert foreign.json["error"]["code"] == absent.json["error"]["code"] == "not_found"
    assert client.simulate_get("/v1/admin/approvals", headers=bearer(bolt.admin_token)).json["data"] == []
    narrowed = client.simulate_get(
        "/v1/admin/approvals", params={"customer_id": "acme"}, headers=bearer(bolt.admin_token)
    )
    assert narrowed.status_code == 404
    every = client.simulate_get("/v1/admin/approvals", params={"customer_id": "acme"}, headers=bearer(operator_token()))
    assert [m["id"] for m in every.json["data"]] == [held["id"]]
    assert Message.get_by_id(held["id"]).status == "pending_approval"
    for key in (acme.bot.agent_key, bolt.admin_token):
        toggle = client.simulate_post(
            f"/v1/admin/inboxes/{acme.peer_inbox.id}/approval", headers=bearer(key), json={"require_approval": True}
        )
        assert toggle.status_code in (403, 404)
    agent = client.simulate_get("/v1/admin/approvals", headers=bearer(acme.bot.agent_key))
    assert agent.status_code == 403 and agent.json["error"]["code"] == "wrong_key_type"


def test_approval_is_turned_on_and_off_for_a_key_or_an_inbox(client, acme):
    peer_send = {"to": [OUTSIDE], "subject": "s", "text": "t"}
    url = f"/v1/inboxes/{acme.peer_inbox.id}/messages"
    assert client.simulate_post(url, headers=bearer(acme.peer.agent_key), json=peer_send).status_code == 201
    on = client.simulate_post(
        f"/v1/admin/inboxes/{acme.peer_inbox.id}/approval",
        headers=bearer(acme.admin_token),
        json={"require_approval": True},
    )
    assert on.status_code == 200 and on.json["require_approval"] is True
    assert client.simulate_post(url, headers=bearer(acme.peer.agent_key), json=peer_send).status_code == 202
    client.simulate_post(
        f"/v1/admin/inboxes/{acme.peer_inbox.id}/approval",
        headers=bearer(acme.admin_token),
        json={"require_approval": False},
    )
    assert client.simulate_post(url, headers=bearer(acme.peer.agent_key), json=peer_send).status_code == 201
    # The enrollment key: on at creation, visible in its JSON, and off again.
    made = client.simulate_post(
        "/v1/admin/enrollment-keys",
        headers=bearer(acme.admin_token),
        json={"scopes": ["mailbox:send"], "max_mailboxes": 1, "require_approval": True},
    )
    assert made.status_code == 201 and made.json["require_approval"] is True
    off = client.simulate_post(
        f"/v1/admin/enrollment-keys/{acme.bot.enrollment.id}/approval",
        headers=bearer(acme.admin_token),
        json={"require_approval": False},
    )
    assert off.status_code == 200 and off.json["require_approval"] is False
    assert send(client, acme, to=[OUTSIDE]).status_code == 201
    bad = client.simulate_post(
        f"/v1/admin/enrollment-keys/{acme.bot.enrollment.id}/approval",
        headers=bearer(acme.admin_token),
        json={"require_approval": "yes"},
    )
    assert bad.status_code == 422 and bad.json["error"]["field"] == "require_approval"
    assert AuditEvent.select().where(AuditEvent.action == "inbox.approval").count() == 2


def test_the_cli_lists_approves_rejects_and_requires(env, client, acme, monkeypatch):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    first, second = send(client, acme).json, send(client, acme).json
    listed = CliRunner().invoke(cli, ["admin", "approvals", "list"])
    assert listed.exit_code == 0, listed.output
    assert first["id"] in listed.output and second["id"] in listed.output and OUTSIDE in listed.output
    out = CliRunner().invoke(cli, ["admin", "approvals", "approve", first["id"], "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output[out.output.index("{") :])["status"] == "captured"
    out = CliRunner().invoke(cli, ["admin", "approvals", "reject", second["id"], "--note", "tone it down"])
    assert out.exit_code == 0 and "rejected" in out.output
    assert Message.get_by_id(second["id"]).review_note == "tone it down"
    again = CliRunner().invoke(cli, ["admin", "approvals", "approve", second["id"]])
    assert again.exit_code == 1 and "not pending approval" in again.output
    assert "nothing is waiting" in CliRunner().invoke(cli, ["admin", "approvals", "list"]).output
    out = CliRunner().invoke(cli, ["admin", "approvals", "require", "--inbox", acme.peer_inbox.id])
    assert out.exit_code == 0 and Inbox.get_by_id(acme.peer_inbox.id).require_approval
    out = CliRunner().invoke(cli, ["admin", "approvals", "require", "--enrollment", acme.bot.enrollment.id, "--off"])
    assert out.exit_code == 0 and not EnrollmentKey.get_by_id(acme.bot.enrollment.id).require_approval
    both = CliRunner().invoke(cli, ["admin", "approvals", "require"])
    assert both.exit_code != 0 and "exactly one" in both.output
    made = CliRunner().invoke(
        cli,
        ["admin", "enroll-key", "create", "--customer", "acme", "--scopes", "mailbox:send"]
        + ["--max-mailboxes", "1", "--require-approval", "--json"],
    )
    assert made.exit_code == 0, made.output
    assert json.loads(made.output[made.output.index("{") :])["require_approval"] is True


def test_the_console_queue_shows_text_only_and_decides_with_csrf(client, postern, acme):
    evil = send(client, acme, text="<b>bold</b> claim", html="<script>alert(1)</script><p>hello</p>").json
    plain = send(client, acme, text="", html="<p>only html <img src=x onerror=alert(2)></p>").json
    bolt = make_tenant("bolt")
    theirs = sign_in(client, bolt.admin_token)
    assert evil["id"] not in client.simulate_get("/console/approvals", cookies=theirs).text
    cookies = sign_in(client, acme.admin_token)
    page = client.simulate_get("/console/approvals", cookies=cookies)
    assert page.status_code == 200 and '<a href="/console/approvals">Approvals</a>' in page.text
    assert "&lt;b&gt;bold&lt;/b&gt; claim" in page.text and "<b>bold</b>" not in page.text
    assert "<script>" not in page.text and "onerror" not in page.text and "only html" in page.text
    assert OUTSIDE in page.text and acme.peer_inbox.address in page.text
    csrf = csrf_of(client, cookies)
    refused = post(client, f"/console/approvals/{evil['id']}/approve", cookies)
    assert refused.status_code == 403 and Message.get_by_id(evil["id"]).status == "pending_approval"
    foreign = post(client, f"/console/approvals/{evil['id']}/approve", theirs, csrf_of(client, theirs))
    assert foreign.status_code == 404 and Message.get_by_id(evil["id"]).status == "pending_approval"
    done = post(client, f"/console/approvals/{evil['id']}/approve", cookies, csrf)
    assert done.status_code == 303 and Message.get_by_id(evil["id"]).status == "queued"  # due now, for the outbox
    assert deliver_due(postern) == 1 and Message.get_by_id(evil["id"]).status == "captured"
    done = post(client, f"/console/approvals/{plain['id']}/reject", cookies, csrf, note="not+today")
    assert done.status_code == 303
    assert (Message.get_by_id(plain["id"]).status, Message.get_by_id(plain["id"]).review_note) == (
        "rejected",
        "not today",
    )
    toggled = post(
        client, "/console/approvals/require", cookies, csrf, kind="inbox", id=acme.peer_inbox.id, require="on"
    )
    assert toggled.status_code == 303 and Inbox.get_by_id(acme.peer_inbox.id).require_approval
    audited = {e.action for e in AuditEvent.select().where(AuditEvent.customer_id == acme.customer.id)}
    assert {"message.approve", "message.reject", "inbox.approval"} <= audited
    assert re.search(
        r"Nothing is waiting for approval", client.simulate_get("/console/approvals", cookies=cookies).text
    )
