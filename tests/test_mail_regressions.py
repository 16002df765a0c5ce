"""Regressions from the mail-flow review: each of these lost, duplicated or refused
mail, or answered 500, before it was fixed."""

from __future__ import annotations

import json
import time

import falcon.testing
import pytest
from support.world import INFO, make_tenant

from postern.api import create_app
from postern.core.auth import authenticate
from postern.core.hookspecs import hookimpl
from postern.core.inboxes import create_inbox
from postern.core.mail import delivery
from postern.core.mail.ingest import ingest
from postern.core.mail.mime import MailLimits, MailRejected, parse
from postern.core.models import Inbox, Message, utcnow
from postern.core.runtime import build_postern


@pytest.fixture
def world(config, db):
    postern = build_postern(config)
    agent = make_tenant("acme").agent_key(handle="bot")
    principal = authenticate(agent.agent_key, "agent", INFO)
    inbox, _ = create_inbox(postern, principal, INFO, {"username": "bot"})
    client = falcon.testing.TestClient(create_app(postern))
    return postern, client, {"Authorization": f"Bearer {agent.agent_key}"}, inbox


def deliver(postern, inbox, raw: bytes) -> Message:
    [message] = ingest(postern, raw, "x@example.org", [inbox.address])
    return Message.get_by_id(message.id)


def test_raw_utf8_headers_nul_and_odd_charsets_are_stored(world):
    postern, _, _, inbox = world
    raw = (
        "From: José Ñandú <jose@example.org>\r\nTo: " + inbox.address + "\r\nSubject: Olá\r\n"
        "Message-ID: <ñ@example.org>\r\nContent-Type: text/plain; charset=ut\x00f-8\r\n\r\nbody\x00 text\r\n"
    ).encode()
    message = deliver(postern, inbox, raw)
    assert message.from_name == "José Ñandú" and message.message_id_header == "<ñ@example.org>"
    assert message.subject == "Olá" and "\x00" not in message.text and "body" in message.text
    assert bytes(message.raw) == raw  # the raw bytes keep everything


def test_long_wide_subjects_and_message_ids_fit_the_indexes(world):
    postern, _, _, inbox = world
    subject, msgid = "😀" * 990, "<" + "😀" * 900 + "@example.org>"
    raw = f"To: {inbox.address}\r\nSubject: {subject}\r\nMessage-ID: {msgid}\r\n\r\nx\r\n".encode()
    message = deliver(postern, inbox, raw)
    assert message.subject.startswith("😀") and len(message.message_id_header) <= 500


def test_a_part_bomb_is_refused_while_parsing():
    bomb = b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n' + b"--b\r\n\r\n" * 100_000 + b"--b--\r\n"
    with pytest.raises(MailRejected) as refused:
        parse(bomb, MailLimits(max_bytes=10**7, max_parts=200))
    assert refused.value.code == "mime_too_many_parts"


def test_a_failing_hook_after_the_commit_does_not_unacknowledge(world):
    postern, _, _, inbox = world

    heard = []

    class Listening:
        @hookimpl
        def postern_message_received(self, message):
            heard.append(message.id)

    class Broken:
        @hookimpl
        def postern_message_received(self, message):
            raise RuntimeError("plugin bug")

    postern.pm.register(Listening())
    postern.pm.register(Broken())  # registered last, so called first
    [message] = ingest(postern, f"To: {inbox.address}\r\nSubject: s\r\n\r\nx\r\n".encode(), "x@e.org", [inbox.address])
    assert Message.get_by_id(message.id).status == "received"
    assert heard == [message.id]  # the broken plugin silenced nobody


def test_a_delivered_message_is_never_delivered_again(world, monkeypatch):
    postern, client, headers, inbox = world
    other = client.simulate_post("/v1/inboxes", headers=headers, json={"username": "peer"}).json
    sent = client.simulate_post(
        f"/v1/inboxes/{inbox.id}/messages", headers=headers, json={"to": [other["address"]], "text": "once"}
    ).json
    assert sent["status"] == "sent"
    delivery.deliver(postern, sent["id"])  # e.g. an outbox that thought it was due
    assert Message.select().where(Message.inbox == other["id"]).count() == 1


def test_the_outbox_survives_a_message_that_explodes(world, monkeypatch):
    postern, _, _, inbox = world
    for text in ("a", "b"):
        raw = f"From: {inbox.address}\r\nTo: z@example.org\r\nSubject: {text}\r\n\r\n{text}\r\n".encode()
        m = deliver(postern, inbox, raw)
        Message.update(
            direction="outbound", status="queued", envelope_to=json.dumps(["z@example.org"]), next_attempt_at=utcnow()
        ).where(Message.id == m.id).execute()
    calls = []

    def flaky(postern_, message_id):
        calls.append(message_id)
        if len(calls) == 1:
            raise RuntimeError("unexpected")
        return Message.get_by_id(message_id)

    monkeypatch.setattr(delivery, "deliver", flaky)
    assert delivery.deliver_due(postern) == 2 and len(calls) == 2


def test_a_wait_reads_past_a_full_batch_of_sent_mail(world):
    postern, client, headers, inbox = world
    start = client.simulate_get(f"/v1/inboxes/{inbox.id}/messages/wait", headers=headers, params={"timeout": 0})
    for i in range(55):
        client.simulate_post(
            f"/v1/inboxes/{inbox.id}/messages", headers=headers, json={"to": ["z@example.org"], "text": str(i)}
        )
    deliver(postern, inbox, f"To: {inbox.address}\r\nSubject: real\r\n\r\nx\r\n".encode())
    t0 = time.monotonic()
    got = client.simulate_get(
        f"/v1/inboxes/{inbox.id}/messages/wait",
        headers=headers,
        params={"after": start.json["cursor"], "timeout": 10},
    ).json
    assert [m["subject"] for m in got["messages"]] == ["real"] and got["timed_out"] is False
    assert time.monotonic() - t0 < 10  # answered from the store, not after a timeout


def test_links_to_deleted_mail_are_gone_and_odd_tokens_are_404(world):
    postern, client, headers, inbox = world
    message = deliver(postern, inbox, f"To: {inbox.address}\r\nSubject: s\r\n\r\nx\r\n".encode())
    url = client.simulate_post(f"/v1/inboxes/{inbox.id}/messages/{message.id}/raw-link", headers=headers).json["url"]
    token = url.rsplit("/", 1)[1]
    link_id, _, signature = token.split(".")
    assert client.simulate_get(f"/v1/downloads/{link_id}.²³.{signature}").status_code == 404
    Message.delete().where(Message.id == message.id).execute()
    assert client.simulate_get(f"/v1/downloads/{token}").status_code == 410


@pytest.mark.parametrize(
    "body, field",
    [
        ({"to": ["a@example.org"], "subject": "a\u2028b", "text": "t"}, "subject"),
        ({"to": ["a@example.org"], "subject": "a\x0bb", "text": "t"}, "subject"),
        ({"to": [{"address": "a@example.org", "name": "A\x85B"}], "text": "t"}, "to"),
        ({"to": ["a@example.org"], "text": "t", "headers": {"X-A": "a\x0cb"}}, "headers"),
        ({"to": ["jöhn@example.org"], "text": "t"}, "to"),
    ],
)
def test_every_line_break_and_non_ascii_mailboxes_are_422(world, body, field):
    _, client, headers, inbox = world
    resp = client.simulate_post(f"/v1/inboxes/{inbox.id}/messages", headers=headers, json=body)
    assert resp.status_code == 422 and resp.json["error"]["field"] == field


def test_a_lone_surrogate_is_422(world):
    _, client, headers, inbox = world
    body = '{"to": ["a@example.org"], "text": "\\ud800"}'
    resp = client.simulate_post(
        f"/v1/inboxes/{inbox.id}/messages", body=body, headers={**headers, "Content-Type": "application/json"}
    )
    assert resp.status_code == 422 and resp.json["error"]["field"] == "text"


def test_a_reply_never_goes_to_the_inbox_itself(world):
    postern, client, headers, inbox = world
    raw = (
        f"From: Ann <ann@example.org>\r\nTo: {inbox.address}, ann@example.org\r\nCc: Ann A <ann@example.org>\r\n"
        f"Reply-To: {inbox.address}\r\nSubject: loop\r\n\r\nx\r\n"
    ).encode()
    message = deliver(postern, inbox, raw)
    reply = client.simulate_post(
        f"/v1/inboxes/{inbox.id}/messages/{message.id}/reply", headers=headers, json={"text": "ok", "reply_all": True}
    ).json
    everyone = [p["address"] for p in reply["to"] + reply["cc"]]
    assert inbox.address not in everyone and everyone == ["ann@example.org"]
    assert Message.select().where((Message.inbox == inbox.id) & (Message.direction == "inbound")).count() == 1
    assert Inbox.get_by_id(inbox.id).last_seq == 2  # the original and our reply: no copy to ourselves
