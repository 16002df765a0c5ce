"""``postern admin queue list|retry|cancel``: the outbound queue, with a smarthost that
is down (nothing listens on its port), so sent mail stays queued."""

from __future__ import annotations

import datetime as dt
import json

import falcon.testing
import pytest
from click.testing import CliRunner
from support.server import free_port
from support.world import make_tenant

from postern.api import create_app
from postern.cli.app import cli
from postern.cli.context import INFO
from postern.core import outqueue
from postern.core.auth import authenticate
from postern.core.errors import Conflict, NotFound
from postern.core.mail.delivery import deliver_due
from postern.core.models import Message, MessageRecipient, WebhookDelivery, utcnow
from postern.core.principal import CLI
from postern.core.runtime import build_postern


@pytest.fixture
def app(config, db):
    config.roles["send"].options = {"smtp_local": {"smarthost": f"127.0.0.1:{free_port()}", "starttls": False}}
    postern = build_postern(config)
    acme = make_tenant("acme")
    agent = acme.agent_key(handle="bot", max_mailboxes=5)
    client = falcon.testing.TestClient(create_app(postern))
    headers = {"Authorization": f"Bearer {agent.agent_key}"}
    inbox = client.simulate_post("/v1/inboxes", headers=headers, json={"username": "alice"}).json
    hook = {"url": "https://hooks.example.org/in", "event_types": ["message.cancelled"]}
    assert client.simulate_post("/v1/webhooks", headers=headers, json=hook).status_code == 201
    return postern, client, headers, inbox, acme


def queued(client, headers, inbox, to="x@example.org") -> dict:
    body = {"to": [to], "subject": "waiting", "text": "hi"}
    resp = client.simulate_post(f"/v1/inboxes/{inbox['id']}/messages", headers=headers, json=body)
    assert resp.json["status"] == "queued", resp.text
    return resp.json


def test_list_shows_queued_mail_with_its_pending_recipients(app):
    postern, client, headers, inbox, acme = app
    first = queued(client, headers, inbox)
    [entry] = outqueue.list_queue(CLI)
    assert entry["id"] == first["id"] and entry["from"] == inbox["address"]
    assert entry["recipients"] == ["x@example.org"] and entry["attempts"] == 1
    assert entry["under_attempt"] is False and "Connection refused" in entry["error"]
    other = make_tenant("other")
    assert outqueue.list_queue(authenticate(other.admin_token, "admin", INFO)) == []
    assert [e["id"] for e in outqueue.list_queue(authenticate(acme.admin_token, "admin", INFO))] == [first["id"]]


def test_retry_makes_it_due_now_and_the_outbox_attempts_it(app):
    postern, client, headers, inbox, _ = app
    first = queued(client, headers, inbox)
    later = Message.get_by_id(first["id"]).next_attempt_at
    assert later > utcnow() and deliver_due(postern) == 0  # not due yet
    assert outqueue.retry(CLI, INFO, first["id"]) == 1
    assert Message.get_by_id(first["id"]).next_attempt_at <= utcnow()
    assert deliver_due(postern) == 1
    assert Message.get_by_id(first["id"]).attempts == 2


def test_a_message_under_an_attempt_is_left_alone(app):
    postern, client, headers, inbox, _ = app
    first = queued(client, headers, inbox)
    lease_end = utcnow() + dt.timedelta(seconds=300)
    Message.update(claimed_until=lease_end).where(Message.id == first["id"]).execute()
    with pytest.raises(Conflict) as refused:
        outqueue.retry(CLI, INFO, first["id"])
    assert refused.value.code == "under_attempt"
    with pytest.raises(Conflict) as refused:
        outqueue.cancel(postern, CLI, INFO, first["id"])
    assert refused.value.code == "under_attempt"
    assert outqueue.retry(CLI, INFO) == 0  # the flush skips it too
    row = Message.get_by_id(first["id"])
    assert row.status == "queued" and row.next_attempt_at != utcnow()
    [entry] = outqueue.list_queue(CLI)
    assert entry["under_attempt"] is True
    Message.update(claimed_until=utcnow() - dt.timedelta(seconds=1)).where(Message.id == first["id"]).execute()
    assert outqueue.retry(CLI, INFO, first["id"]) == 1  # a lapsed lease is no claim


def test_an_attempt_claims_the_message_and_releases_it(app):
    postern, client, headers, inbox, _ = app
    first = queued(client, headers, inbox)
    assert Message.get_by_id(first["id"]).claimed_until is None  # released after the first attempt
    seen = []
    from postern.core.mail import delivery

    real = delivery.deliver

    def spy(postern, message_id):
        seen.append(Message.get_by_id(message_id).claimed_until)
        return real(postern, message_id)

    Message.update(next_attempt_at=utcnow()).where(Message.id == first["id"]).execute()
    delivery.run_due(postern, "queued", spy)
    assert seen and seen[0] > utcnow()  # claimed while the attempt ran
    assert Message.get_by_id(first["id"]).claimed_until is None


def test_cancel_stops_it_for_good_and_tells_the_agent(app):
    postern, client, headers, inbox, acme = app
    first = queued(client, headers, inbox)
    other = make_tenant("other")
    with pytest.raises(NotFound):
        outqueue.cancel(postern, authenticate(other.admin_token, "admin", INFO), INFO, first["id"])
    outqueue.cancel(postern, authenticate(acme.admin_token, "admin", INFO), INFO, first["id"])
    got = client.simulate_get(f"/v1/inboxes/{inbox['id']}/messages/{first['id']}", headers=headers).json
    assert got["status"] == "cancelled" and got["error"] == "cancelled by the operator"
    assert [r["status"] for r in got["recipients"]] == ["cancelled"]
    assert outqueue.list_queue(CLI) == []
    Message.update(next_attempt_at=utcnow()).where(Message.id == first["id"]).execute()
    assert deliver_due(postern) == 0  # never attempted again
    [event] = WebhookDelivery.select().where(WebhookDelivery.event_type == "message.cancelled")
    assert json.loads(event.payload)["data"]["id"] == first["id"]
    with pytest.raises(Conflict) as again:
        outqueue.cancel(postern, CLI, INFO, first["id"])
    assert again.value.code == "not_queued"
    assert MessageRecipient.get().status == "cancelled"


def test_the_cli_lists_retries_and_cancels(app, env, monkeypatch):
    postern, client, headers, inbox, _ = app
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    one, two = queued(client, headers, inbox), queued(client, headers, inbox, "y@example.org")
    listed = CliRunner().invoke(cli, ["admin", "queue", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.output[listed.output.index("[\n") :])  # after any log line
    assert {r["id"] for r in rows} == {one["id"], two["id"]}
    text = CliRunner().invoke(cli, ["admin", "queue", "list"]).output
    assert f"{one['id']}  queued" in text and "-> y@example.org" in text
    flushed = CliRunner().invoke(cli, ["admin", "queue", "retry", "--all"])
    assert flushed.exit_code == 0 and "2 message(s) due now" in flushed.output
    neither = CliRunner().invoke(cli, ["admin", "queue", "retry"])
    assert neither.exit_code != 0 and "give a message id or --all" in neither.output
    cancelled = CliRunner().invoke(cli, ["admin", "queue", "cancel", one["id"]])
    assert cancelled.exit_code == 0 and Message.get_by_id(one["id"]).status == "cancelled"
    missing = CliRunner().invoke(cli, ["admin", "queue", "cancel", "msg_nosuchmessage"])
    assert missing.exit_code == 1 and "no outbound message" in missing.output


def test_relay_failures_are_logged_at_warning_with_the_message_id(app, caplog):
    _, client, headers, inbox, _ = app
    with caplog.at_level("WARNING", logger="postern.outbound"):
        first = queued(client, headers, inbox)
    [record] = [r for r in caplog.records if first["id"] in r.getMessage()]
    assert record.levelname == "WARNING" and "temporary failure" in record.getMessage()
    assert "Connection refused" in record.getMessage()


def test_a_late_attempt_never_undoes_a_cancel(app, caplog):
    """The lease of a slow attempt lapsed, the operator cancelled the message, then the
    attempt ended: its outcome is not recorded over the cancel."""
    postern, client, headers, inbox, _ = app
    first = queued(client, headers, inbox)
    from postern.core.mail import delivery

    Message.update(next_attempt_at=utcnow()).where(Message.id == first["id"]).execute()
    real_hand_over = delivery.hand_over

    def slow_hand_over(postern, message, todo):
        # While "sending", the lease lapses and the operator cancels.
        Message.update(claimed_until=utcnow() - dt.timedelta(seconds=1)).where(Message.id == message.id).execute()
        outqueue.cancel(postern, CLI, INFO, message.id)
        return real_hand_over(postern, message, todo)

    delivery.hand_over = slow_hand_over
    try:
        with caplog.at_level("WARNING", logger="postern.outbound"):
            assert deliver_due(postern) == 1
    finally:
        delivery.hand_over = real_hand_over
    row = Message.get_by_id(first["id"])
    assert row.status == "cancelled" and row.attempts == 1  # the late temporary failure changed nothing
    assert any("no longer holds it" in r.getMessage() for r in caplog.records)


def test_cancelling_mail_some_recipients_already_have_leaves_it_sent(app):
    postern, client, headers, inbox, _ = app
    first = queued(client, headers, inbox, "x@example.org")
    MessageRecipient.update(status="sent").where(MessageRecipient.message == first["id"]).execute()
    MessageRecipient.insert(message=first["id"], address="y@example.org", status="deferred").execute()
    cancelled = outqueue.cancel(postern, CLI, INFO, first["id"])
    assert cancelled.status == "sent" and "still pending" in cancelled.error
    rows = {r.address: r.status for r in MessageRecipient.select()}
    assert rows == {"x@example.org": "sent", "y@example.org": "cancelled"}
