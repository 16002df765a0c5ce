"""Honest send status (issue 19 item 4): every send says whether the mail left the
server, ``captured`` says why it did not, and the server says it is capture-only."""

from __future__ import annotations

import asyncio
import json

import falcon.testing
import pytest
from click.testing import CliRunner
from support.world import make_tenant

from postern.api import create_app
from postern.cli import cli
from postern.core.mail.ingest import ingest
from postern.core.mail.outcome import CAPTURED_REASON
from postern.core.runtime import build_postern


@pytest.fixture
def smarthost(sink):
    return f"127.0.0.1:{sink[1]}"


@pytest.fixture
def agent(db):
    return make_tenant("acme").agent_key(handle="alice", max_mailboxes=5)


def app(config, smarthost=None):
    if smarthost:
        config.roles["send"].options = {"smtp_local": {"smarthost": smarthost, "starttls": False}}
    postern = build_postern(config)
    return falcon.testing.TestClient(create_app(postern)), postern


def send(client, agent, inbox, to):
    headers = {"Authorization": f"Bearer {agent.agent_key}"}
    resp = client.simulate_post(
        f"/v1/inboxes/{inbox['id']}/messages", headers=headers, json={"to": [to], "subject": "hi", "text": "hello"}
    )
    assert resp.status_code == 201, resp.text
    return resp.json


def new_inbox(client, agent, username):
    headers = {"Authorization": f"Bearer {agent.agent_key}"}
    return client.simulate_post("/v1/inboxes", headers=headers, json={"username": username}).json


def test_captured_mail_says_it_did_not_leave_and_why(config, agent):
    client, _ = app(config)
    alice, bob = new_inbox(client, agent, "alice"), new_inbox(client, agent, "bob")
    captured = send(client, agent, alice, "someone@example.org")
    assert captured["status"] == "captured" and captured["left_server"] is False
    assert captured["status_reason"] == CAPTURED_REASON
    local = send(client, agent, alice, bob["address"])
    assert local["status"] == "sent" and local["left_server"] is False  # delivered here: nothing left
    assert "on this server" in local["status_reason"]
    listed = client.simulate_get(
        f"/v1/inboxes/{alice['id']}/messages", headers={"Authorization": f"Bearer {agent.agent_key}"}
    ).json["data"]
    assert {m["id"]: m["left_server"] for m in listed} == {captured["id"]: False, local["id"]: False}
    [inbound] = client.simulate_get(
        f"/v1/inboxes/{bob['id']}/messages", headers={"Authorization": f"Bearer {agent.agent_key}"}
    ).json["data"]
    assert inbound["left_server"] is False and inbound["status_reason"] is None
    health = client.simulate_get("/healthz").json["outbound"]
    assert health["mode"] == "capture-only" and health["backend"] == "smtp_local" and "route" not in health


def test_relayed_mail_left_the_server(config, agent, smarthost):
    client, _ = app(config, smarthost)
    alice = new_inbox(client, agent, "alice")
    relayed = send(client, agent, alice, "someone@example.org")
    assert relayed["status"] == "sent" and relayed["left_server"] is True
    assert "smtp_local" in relayed["status_reason"]
    assert client.simulate_get("/healthz").json["outbound"]["mode"] == "relay"


def test_summary_shows_the_envelope_sender_when_there_is_no_from(config, agent):
    client, postern = app(config)
    bob = new_inbox(client, agent, "bob")
    raw = f"To: {bob['address']}\r\nSubject: no from\r\n\r\nbody\r\n".encode()
    ingest(postern, raw, "bounce@sender.example", [bob["address"]])
    [summary] = client.simulate_get(
        f"/v1/inboxes/{bob['id']}/messages", headers={"Authorization": f"Bearer {agent.agent_key}"}
    ).json["data"]
    assert summary["from"]["address"] == "bounce@sender.example"


def test_postern_plugins_says_outbound_is_capture_only(env, monkeypatch, tmp_path):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("POSTERN_CONFIG", raising=False)
    text = CliRunner().invoke(cli, ["plugins"], obj={}, catch_exceptions=False).output
    assert "Outbound: CAPTURE-ONLY: mail to outside addresses is kept" in text
    data = json.loads(CliRunner().invoke(cli, ["plugins", "--json"], obj={}, catch_exceptions=False).output)
    assert data["outbound"]["mode"] == "capture-only" and data["outbound"]["route"] is None
    relay = tmp_path / "relay.toml"
    relay.write_text('[send.smtp_local]\nsmarthost = "relay.example:587"\n')
    out = CliRunner().invoke(cli, ["--config", str(relay), "plugins"], obj={}, catch_exceptions=False).output
    assert "Outbound: RELAY: mail to outside addresses leaves through smarthost relay.example:587" in out


def test_mcp_send_to_an_outside_address_warns_that_nothing_was_sent():
    from test_mcp import ok, stdio

    async def run():
        async with stdio({"POSTERN_MOCK": "1"}) as client:
            inbox = await ok(client, "create_inbox", username="support")
            sent = await ok(client, "send_email", inbox_id=inbox["id"], to=["ann@example.org"], subject="s", text="t")
            assert sent["status"] == "captured" and sent["left_server"] is False
            assert sent["warning"].startswith("NOT SENT: no outbound route configured")
            peer = await ok(client, "create_inbox", username="peer")
            local = await ok(client, "send_email", inbox_id=inbox["id"], to=[peer["address"]], subject="s", text="t")
            assert local["status"] == "sent" and "warning" not in local

    asyncio.run(run())
