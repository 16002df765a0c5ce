"""Bulk mail leaves one copy per recipient, each with its own one-click unsubscribe link
(RFC 8058) covered by the DKIM signature; the link's POST suppresses that recipient."""

from __future__ import annotations

import re
import urllib.parse

import dkim
import falcon.testing
import pytest
from support.dns import RunningDns
from support.sink import relaying_config
from support.world import make_tenant
from test_dkim import txt_from

from postern.api import create_app
from postern.core.models import Message, MessageRecipient, Suppression, UnsubscribeToken

PUBLIC = "https://postern.example.org"


@pytest.fixture
def config(tmp_path, env, sink):
    config = relaying_config(tmp_path, env, sink[1])
    config.server.public_url = PUBLIC
    return config


@pytest.fixture
def ns(postern):
    server = RunningDns(postern)
    yield server
    server.stop()


@pytest.fixture
def agent(postern):
    client = falcon.testing.TestClient(create_app(postern))
    acme = make_tenant("acme")
    key = acme.agent_key(handle="alice")
    headers = {"Authorization": f"Bearer {key.agent_key}"}
    inbox = client.simulate_post("/v1/inboxes", headers=headers, json={"username": "alice"}).json
    return client, headers, inbox, acme


def send(agent, to, **extra):
    client, headers, inbox, _ = agent
    body = {"to": to, "subject": "Monthly news", "text": "hello", **extra}
    resp = client.simulate_post(f"/v1/inboxes/{inbox['id']}/messages", headers=headers, json=body)
    return resp


def link_of(raw: bytes) -> str:
    [url] = re.findall(rb"List-Unsubscribe: <([^>]+)>", raw)
    return url.decode()


def test_bulk_mail_gets_a_signed_link_per_recipient_and_the_link_unsubscribes(agent, sink, ns):
    client, _, _, acme = agent
    resp = send(agent, ["ann@example.org", "ben@example.org"], bulk=True)
    assert resp.status_code == 201 and resp.json["status"] == "sent", resp.text
    copies = sink[0].received
    assert sorted(c.rcpt_tos[0] for c in copies) == ["ann@example.org", "ben@example.org"]
    assert all(len(c.rcpt_tos) == 1 for c in copies)  # one transaction per recipient
    links = {c.rcpt_tos[0]: link_of(c.data) for c in copies}
    assert len(set(links.values())) == 2 and all(u.startswith(f"{PUBLIC}/v1/unsubscribe/") for u in links.values())
    dnsfunc, _ = txt_from(ns)
    for copy in copies:
        assert b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n" in copy.data
        signature = copy.data.split(b"\r\n\r\n", 1)[0].decode()
        assert "list-unsubscribe:list-unsubscribe-post" in re.sub(r"\s", "", signature)
        assert dkim.verify(copy.data, dnsfunc=dnsfunc) is True
    # Only hashes of the tokens are stored.
    tokens = {urllib.parse.urlparse(u).path.rsplit("/", 1)[1] for u in links.values()}
    stored = {t.token_hash for t in UnsubscribeToken.select()}
    assert len(stored) == 2 and not tokens & stored

    # The reader's mail client POSTs the one-click body to the link.
    path = urllib.parse.urlparse(links["ann@example.org"]).path
    clicked = client.simulate_post(
        path, body="List-Unsubscribe=One-Click", headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert clicked.status_code == 200
    [row] = Suppression.select()
    assert (row.address, row.reason, row.customer_id) == ("ann@example.org", "unsubscribe", acme.customer.id)
    again = send(agent, ["ann@example.org"])
    assert again.status_code == 422 and again.json["error"]["code"] == "recipients_suppressed"


def test_mail_to_many_counts_as_bulk_and_mail_to_one_does_not(agent, sink):
    many = [f"reader{i}@example.org" for i in range(11)]  # over [mail] bulk_recipients = 10
    assert send(agent, many).status_code == 201
    assert len(sink[0].received) == 11 and all(b"List-Unsubscribe:" in c.data for c in sink[0].received)
    assert send(agent, ["one@example.org"]).status_code == 201
    last = sink[0].received[-1]
    assert last.rcpt_tos == ["one@example.org"] and b"List-Unsubscribe" not in last.data


def test_bulk_must_be_a_boolean(agent, sink):
    resp = send(agent, ["ann@example.org"], bulk="yes")
    assert resp.status_code == 422 and resp.json["error"]["field"] == "bulk"
    assert sink[0].received == []


def test_without_a_public_https_url_no_link_is_made(config, agent, sink):
    config.server.public_url = ""
    assert send(agent, ["ann@example.org", "ben@example.org"], bulk=True).status_code == 201
    [copy] = sink[0].received  # one transaction, as for any mail
    assert b"List-Unsubscribe" not in copy.data and UnsubscribeToken.select().count() == 0


def test_bulk_mail_the_relay_refuses_whole_fails_and_the_request_returns(agent, sink):
    sink[0].reply = "554 5.7.1 message refused as spam"
    resp = send(agent, ["ann@example.org", "ben@example.org"], bulk=True)
    assert resp.status_code == 201, resp.text
    assert resp.json["status"] == "failed" and resp.json["error"].startswith("554")
    assert {r["status"] for r in resp.json["recipients"]} == {"failed"}
    assert Suppression.select().count() == 0  # a refused message says nothing about the addresses


def test_each_bulk_copy_extends_the_attempts_claim(agent, sink):
    seen = []
    real = sink[0].handle_DATA

    async def recording(server, session, envelope):
        from postern.core.db import database

        with database.connection_context():
            seen.append(
                Message.select(Message.claimed_until).order_by(Message.received_at.desc()).first().claimed_until
            )
        return await real(server, session, envelope)

    sink[0].handle_DATA = recording
    resp = send(agent, ["ann@example.org", "ben@example.org", "cy@example.org"], bulk=True)
    assert resp.json["status"] == "sent"
    assert len(seen) == 3 and seen[0] < seen[1] < seen[2]  # a new lease before each copy
    assert Message.get_by_id(resp.json["id"]).claimed_until is None  # released at the end


def test_each_bulk_copy_has_its_own_bounce_address_which_speaks_only_for_its_recipient(postern, agent, sink):
    from support.fuzz import RunningSmtp
    from test_bounces import dsn, smtp

    from postern.core.mail import reports

    resp = send(agent, ["ann@example.org", "ben@example.org"], bulk=True)
    verps = {c.rcpt_tos[0]: c.mail_from for c in sink[0].received}
    ann_id, ann_tag = reports.verp_parts(verps["ann@example.org"])
    assert ann_id == resp.json["id"] and ann_tag and verps["ann@example.org"] != verps["ben@example.org"]
    original = Message.get_by_id(resp.json["id"])
    listener = RunningSmtp(postern)
    try:
        # Ann's address cannot get Ben bounced, nor can the untagged address of bulk mail.
        assert smtp(listener, "", verps["ann@example.org"], dsn(original, "ben@example.org", "5.1.1"))[0] == 250
        untagged = reports.verp_address(original.id, "acme.agents.localhost")
        assert smtp(listener, "", untagged, dsn(original, "ben@example.org", "5.1.1"))[0] == 250
        assert Suppression.select().count() == 0
        # Ann's address speaks for Ann.
        assert smtp(listener, "", verps["ann@example.org"], dsn(original, "ann@example.org", "5.1.1"))[0] == 250
    finally:
        listener.stop()
    assert [(s.address, s.reason) for s in Suppression.select()] == [("ann@example.org", "bounce")]
    statuses = {r.address: r.status for r in MessageRecipient.select()}
    assert statuses == {"ann@example.org": "bounced", "ben@example.org": "sent"}


def test_verp_addresses_parse_strictly():
    from postern.core.mail import reports

    good = "bounce-msg_aaaaaaaaaaaaaaaaaaaaaaaaaa-abcdefgh234567ab@acme.agents.localhost"
    assert reports.verp_parts(good) == ("msg_aaaaaaaaaaaaaaaaaaaaaaaaaa", "abcdefgh234567ab")
    for bad in (
        "bounce-msg_aaaaaaaaaaaaaaaaaaaaaaaaaa-@acme.agents.localhost",  # empty tag
        "bounce-msg_aaaaaaaaaaaaaaaaaaaaaaaaaa-ABCDEFGH234567AB@acme.agents.localhost",  # not lower case
        "bounce-msg_aaaaaaaaaaaaaaaaaaaaaaaaaa-short@acme.agents.localhost",  # too short
        "bounce-msg_aaaaaaaaaaaaaaaaaaaaaaaaaa-abcdefgh234567ab-x@acme.agents.localhost",
    ):
        assert reports.verp_parts(bad) is None, bad
