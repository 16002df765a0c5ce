"""Deleting a message (docs/retention.md): ``DELETE /v1/inboxes/{id}/messages/{id}`` for
agent keys with ``mailbox:create``, ``DELETE /v1/admin/inboxes/{id}/messages/{id}`` for
admins, ``postern admin message delete``; what goes with the message, what stays, and
that no wait hands a deleted message out."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from click.testing import CliRunner
from support.world import first_message, make_tenant, operator_token, seed_inbox

from postern.cli import cli
from postern.core.db import write_transaction
from postern.core.ids import new_id
from postern.core.mail.ingest import ingest
from postern.core.models import (
    Attachment,
    AuditEvent,
    CodeHandover,
    DownloadLink,
    Inbox,
    Message,
    Thread,
)


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def deliver(postern, inbox, subject: str, **headers) -> Message:
    extra = "".join(f"{k.replace('_', '-')}: {v}\r\n" for k, v in headers.items())
    raw = f"From: b@example.org\r\nTo: {inbox.address}\r\nSubject: {subject}\r\n{extra}\r\nbody {subject}\r\n".encode()
    [message] = ingest(postern, raw, "b@example.org", [inbox.address])
    return message


@pytest.fixture
def acme(client, postern):
    tenant = make_tenant("acme")
    tenant.bot = tenant.agent_key(handle="bot")
    tenant.inbox = seed_inbox(postern, tenant.bot, username="bot")
    return tenant


def path(inbox_id: str, message_id: str, admin: bool = False) -> str:
    return f"/v1{'/admin' if admin else ''}/inboxes/{inbox_id}/messages/{message_id}"


def audited(action: str, outcome: str = "ok") -> list[AuditEvent]:
    query = AuditEvent.select().where((AuditEvent.action == action) & (AuditEvent.outcome == outcome))
    return list(query.order_by(AuditEvent.id))


def link_path(resp) -> str:
    assert resp.status_code == 201, resp.text
    return urlsplit(resp.json["url"]).path


def test_an_agent_deletes_a_message_with_its_attachments_links_and_thread(client, acme):
    message = first_message(acme.inbox)
    [attachment] = message.attachments
    headers = bearer(acme.bot.agent_key)
    base = path(acme.inbox.id, message.id)
    raw_link = link_path(client.simulate_post(f"{base}/raw-link", headers=headers))
    attachment_link = link_path(client.simulate_post(f"{base}/attachments/{attachment.id}/link", headers=headers))
    CodeHandover.create(agent=acme.bot.agent.id, message=message.id)

    resp = client.simulate_delete(base, headers=headers)

    assert resp.status_code == 204, resp.text
    assert not Message.select().where(Message.id == message.id).exists()
    assert not Attachment.select().where(Attachment.id == attachment.id).exists()
    assert DownloadLink.select().count() == 0
    assert CodeHandover.select().count() == 0
    assert not Thread.select().where(Thread.id == message.thread_id).exists()  # it held nothing else
    for link in (raw_link, attachment_link):
        assert client.simulate_get(link).status_code == 404  # as a link never made
    assert client.simulate_get(base, headers=headers).status_code == 404
    [row] = audited("message.delete")
    assert (row.actor, row.target, row.customer_id) == ("agent", message.id, acme.customer.id)
    assert (row.agent_id, row.request_id) == (acme.bot.agent.id, resp.headers["x-request-id"])
    again = client.simulate_delete(base, headers=headers)
    assert again.status_code == 404 and again.json["error"]["code"] == "not_found"


def test_a_thread_that_keeps_messages_has_its_count_lowered(client, postern, acme):
    first = deliver(postern, acme.inbox, "plans", Message_ID="<one@example.org>")
    second = deliver(postern, acme.inbox, "Re: plans", In_Reply_To="<one@example.org>")
    assert second.thread_id == first.thread_id
    assert Thread.get_by_id(first.thread_id).message_count == 2

    resp = client.simulate_delete(path(acme.inbox.id, first.id), headers=bearer(acme.bot.agent_key))

    assert resp.status_code == 204, resp.text
    thread = client.simulate_get(
        f"/v1/inboxes/{acme.inbox.id}/threads/{first.thread_id}", headers=bearer(acme.bot.agent_key)
    ).json
    assert thread["message_count"] == 1
    assert [m["id"] for m in thread["messages"]] == [second.id]
    assert Inbox.get_by_id(acme.inbox.id).last_seq == second.seq  # the sequence never goes back


def test_a_key_without_mailbox_create_is_refused_and_nothing_is_deleted(client, postern, acme):
    reader = acme.agent_key(handle="reader", scopes=("mailbox:read", "mailbox:send"))
    inbox = seed_inbox(postern, reader, username="reader")
    message = first_message(inbox)

    resp = client.simulate_delete(path(inbox.id, message.id), headers=bearer(reader.agent_key))

    assert resp.status_code == 403, resp.text
    assert resp.json["error"]["code"] == "insufficient_scope"
    assert "'mailbox:create'" in resp.json["error"]["message"]
    assert Message.select().where(Message.id == message.id).exists()
    [row] = audited("message.delete", "denied")
    assert (row.code, row.target) == ("insufficient_scope", inbox.id)


def test_another_tenants_message_is_the_same_404_as_a_missing_one(client, postern, acme):
    globex = make_tenant("globex")
    victim = globex.agent_key(handle="victim")
    theirs = seed_inbox(postern, victim, username="victim")
    their_message = first_message(theirs)
    headers = bearer(acme.bot.agent_key)

    cases = {
        "their inbox": (path(theirs.id, their_message.id), theirs.id),
        "a missing inbox": (path(new_id("inb"), new_id("msg")), None),
    }
    errors = {}
    for name, (url, _) in cases.items():
        resp = client.simulate_delete(url, headers=headers)
        assert resp.status_code == 404, (name, resp.text)
        errors[name] = resp.json["error"]
    assert errors["their inbox"]["code"] == errors["a missing inbox"]["code"] == "not_found"
    assert set(errors["their inbox"]) == set(errors["a missing inbox"])

    # Their message id in my own inbox: the same answer as a made-up id there.
    mine = client.simulate_delete(path(acme.inbox.id, their_message.id), headers=headers).json["error"]
    made_up_id = new_id("msg")
    made_up = client.simulate_delete(path(acme.inbox.id, made_up_id), headers=headers).json["error"]
    assert mine["message"].replace(their_message.id, "<id>") == made_up["message"].replace(made_up_id, "<id>")
    assert Message.select().where(Message.id == their_message.id).exists()
    assert audited("message.delete") == []


def test_admins_delete_within_their_tenant_and_operators_anywhere(client, postern, acme):
    globex = make_tenant("globex")
    theirs = seed_inbox(postern, globex.agent_key(handle="victim"), username="victim")
    their_message, my_message = first_message(theirs), first_message(acme.inbox)

    refused = client.simulate_delete(path(theirs.id, their_message.id, admin=True), headers=bearer(acme.admin_token))
    assert refused.status_code == 404 and refused.json["error"]["code"] == "not_found"
    assert Message.select().where(Message.id == their_message.id).exists()

    mine = client.simulate_delete(path(acme.inbox.id, my_message.id, admin=True), headers=bearer(acme.admin_token))
    assert mine.status_code == 204, mine.text
    operator = client.simulate_delete(path(theirs.id, their_message.id, admin=True), headers=bearer(operator_token()))
    assert operator.status_code == 204, operator.text

    assert Message.select().count() == 0
    rows = audited("message.delete")
    assert [(r.actor, r.target, r.customer_id) for r in rows] == [
        ("admin", my_message.id, acme.customer.id),
        ("admin", their_message.id, globex.customer.id),  # the tenant's log shows the operator's delete
    ]


def test_an_admin_token_is_refused_on_the_agent_route(client, acme):
    message = first_message(acme.inbox)
    resp = client.simulate_delete(path(acme.inbox.id, message.id), headers=bearer(acme.admin_token))
    assert resp.status_code == 403 and resp.json["error"]["code"] == "wrong_key_type"
    assert Message.select().where(Message.id == message.id).exists()


def test_a_message_still_being_sent_cannot_be_deleted(client, acme):
    message = first_message(acme.inbox)
    Message.update(direction="outbound", status="queued").where(Message.id == message.id).execute()
    resp = client.simulate_delete(path(acme.inbox.id, message.id), headers=bearer(acme.bot.agent_key))
    assert resp.status_code == 409 and resp.json["error"]["code"] == "message_in_flight"
    assert Message.select().where(Message.id == message.id).exists()


def test_a_wait_never_hands_out_a_deleted_message(client, postern, acme):
    headers = bearer(acme.bot.agent_key)
    wait = f"/v1/inboxes/{acme.inbox.id}/messages/wait"
    seed = first_message(acme.inbox)
    kept = deliver(postern, acme.inbox, "kept")
    doomed = deliver(postern, acme.inbox, "doomed")  # the newest: deleted before any wait reads it
    assert client.simulate_delete(path(acme.inbox.id, doomed.id), headers=headers).status_code == 204

    got = client.simulate_get(wait, params={"timeout": "0"}, headers=headers).json
    assert [m["id"] for m in got["messages"]] == [seed.id, kept.id]
    assert int(got["cursor"]) == kept.seq
    with_cursor = client.simulate_get(wait, params={"timeout": "0", "after": str(kept.seq)}, headers=headers).json
    assert with_cursor["messages"] == [] and with_cursor["timed_out"] is True

    # Deleted between waits, after it arrived but before the wait that would read it.
    later = deliver(postern, acme.inbox, "later")
    with write_transaction():
        from postern.core.mail.deletion import remove

        assert remove([later.id], acme.inbox.id) == 1
    again = client.simulate_get(wait, params={"timeout": "0"}, headers=headers).json
    assert again["messages"] == [] and again["timed_out"] is True


def test_the_cli_deletes_a_message(env, monkeypatch, acme):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("POSTERN_CONFIG", raising=False)
    message = first_message(acme.inbox)

    result = CliRunner().invoke(cli, ["admin", "message", "delete", acme.inbox.id, message.id], obj={})
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"deleted {message.id}"
    assert not Message.select().where(Message.id == message.id).exists()
    [row] = audited("message.delete")
    assert (row.actor, row.target) == ("cli", message.id)

    missing = CliRunner().invoke(cli, ["admin", "message", "delete", acme.inbox.id, message.id], obj={})
    assert missing.exit_code == 1 and "Error: no message" in missing.output


def test_the_sdk_deletes_a_message(client, acme):
    """``Messages.delete`` goes to the agent route (the SDK over falcon's test client)."""
    import httpx

    from postern.client import Postern

    def handler(request: httpx.Request) -> httpx.Response:
        resp = client.simulate_request(
            request.method, request.url.path, headers=dict(request.headers), body=request.content
        )
        return httpx.Response(resp.status_code, headers=dict(resp.headers), content=resp.content)

    sdk = Postern(api_key=acme.bot.agent_key, base_url="http://postern.test", transport=httpx.MockTransport(handler))
    message = first_message(acme.inbox)
    assert sdk.messages.delete(acme.inbox.id, message.id) is None
    assert not Message.select().where(Message.id == message.id).exists()
