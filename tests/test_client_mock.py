"""Mock mode (postern.testing): the real core offline, with a fixed cast of keys, reached
by a normal client; and the clear error left where the old constructor flag was."""

from __future__ import annotations

import os
import threading

import pytest

from postern import testing as mock_mode
from postern.client import Postern, errors
from postern.testing import MOCK_AGENT_KEY, MOCK_ENROLLMENT_TOKEN, MOCK_READ_ONLY_KEY, mock_client, mock_enrolled


@pytest.fixture
def world():
    world = mock_mode.reset()
    yield world
    mock_mode.shutdown()


def test_mock_client_serves_the_fixed_agent_and_keeps_nothing_after_shutdown(world):
    client = mock_client()
    assert type(client) is Postern and client.mock is world and client.api_key == MOCK_AGENT_KEY
    me = client.me()
    assert (me.agent_handle, me.mailboxes_max, me.domains) == ("mock-agent", 10, ["mock.agents.localhost"])
    inbox = client.inboxes.create("support")
    assert inbox.address == "support@mock.agents.localhost"
    data_dir = world.data_dir
    mock_mode.shutdown()
    assert not os.path.exists(data_dir)
    fresh = mock_client()
    assert [i.address for i in fresh.inboxes.list()] == []  # a new world, empty


@pytest.mark.parametrize(
    ("base_url", "environ"),
    [
        ("mock", {}),
        (None, {"POSTERN_MOCK": "1", "POSTERN_API_BASE_URL": "https://postern.example.org"}),
        (None, {"POSTERN_API_BASE_URL": "mock"}),
    ],
)
def test_the_old_mock_flag_names_the_new_way_and_never_reaches_a_real_server(base_url, environ, monkeypatch):
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=r"from postern\.testing import mock_client") as exc:
        Postern(base_url=base_url)
    assert "pip install postern" in str(exc.value)
    monkeypatch.delenv("POSTERN_MOCK", raising=False)
    monkeypatch.delenv("POSTERN_API_BASE_URL", raising=False)
    assert Postern(base_url="http://127.0.0.1:1").mock is None  # a real base URL is never mocked


def test_mock_client_ignores_the_environment_and_takes_a_key(world, monkeypatch):
    monkeypatch.setenv("POSTERN_MOCK", "1")  # no longer needed, and harmless
    monkeypatch.setenv("POSTERN_API_KEY", "pk_agent_a-real-key-means-nothing-here")
    monkeypatch.setenv("POSTERN_API_BASE_URL", "https://postern.example.org")
    client = mock_client()
    assert client.me().agent_handle == "mock-agent" and client.base_url == mock_mode.MOCK_BASE_URL
    assert mock_client(MOCK_READ_ONLY_KEY).me().scopes == ["mailbox:read"]
    with pytest.raises(TypeError, match="mock world"):
        mock_client(base_url="https://postern.example.org")


def test_wait_returns_when_mail_is_delivered_and_reply_threads(world):
    client = mock_client()
    inbox = client.inboxes.create("support")
    start = client.messages.wait(inbox.id, timeout=0)
    assert start.timed_out and start.messages == []
    timer = threading.Timer(
        0.3,
        world.deliver,
        args=(inbox.address,),
        kwargs={
            "subject": "Order 42",
            "text": "where is it?",
            "sender": "ann@example.org",
            "sender_name": "Ann",
            "attachments": [("invoice.pdf", "application/pdf", b"%PDF-1.4 fake")],
        },
    )
    timer.start()
    got = client.messages.wait(inbox.id, after=start.cursor, timeout=20)
    timer.join()
    assert not got.timed_out and [m.subject for m in got.messages] == ["Order 42"]
    message = client.messages.get(inbox.id, got.messages[0].id)
    assert message.sender.address == "ann@example.org" and message.text.strip() == "where is it?"
    assert [(a.filename, a.content_type) for a in message.attachments] == [("invoice.pdf", "application/pdf")]
    link = client.messages.attachment_link(inbox.id, message.id, message.attachments[0].id)
    assert client.download(link) == b"%PDF-1.4 fake"
    reply = client.messages.reply(inbox.id, message.id, text="on its way")
    assert reply.to[0].address == "ann@example.org" and reply.status == "captured"
    thread = client.threads.get(inbox.id, message.thread_id)
    assert [m.id for m in thread.messages] == [message.id, reply.id]
    again = client.messages.wait(inbox.id, after=got.cursor, timeout=0)
    assert again.timed_out and again.messages == []  # nothing seen twice


def test_agent_to_agent_mail_stays_inside_the_world(world):
    client = mock_client()
    a, b = client.inboxes.create("alpha"), client.inboxes.create("beta")
    sent = client.messages.send(a.id, to=[b.address], subject="ping", text="ping")
    assert sent.status == "sent"
    [arrived] = list(client.messages.list(b.id))
    assert (arrived.subject, arrived.direction) == ("ping", "inbound")


def test_scopes_quotas_and_tenancy_fail_as_on_a_server(world):
    reader = mock_client(MOCK_READ_ONLY_KEY)
    with pytest.raises(errors.PermissionDenied) as exc:
        reader.inboxes.create("nope")
    assert exc.value.code == "insufficient_scope"
    client, enrollment = mock_enrolled(MOCK_ENROLLMENT_TOKEN, "dev-bot")
    assert client.mock is world and client.api_key != MOCK_AGENT_KEY
    assert (enrollment.mailboxes_used, enrollment.mailboxes_max) == (0, 3)
    for name in ("one", "two", "three"):
        client.inboxes.create(name)
    with pytest.raises(errors.PermissionDenied) as exc:
        client.inboxes.create("four")
    assert exc.value.code == "quota_exceeded"
    with pytest.raises(errors.NotFound):
        client.inboxes.get(world.foreign_inbox_id)
    with pytest.raises(errors.NotFound):
        client.messages.wait(world.foreign_inbox_id, timeout=0)
    with pytest.raises(errors.AuthenticationFailed):
        mock_client(MOCK_AGENT_KEY[:-3] + "AAA").me()
    with pytest.raises(errors.NotFound):
        client.messages.send(world.foreign_inbox_id, to=["ann@example.org"], text="x")
    mine = next(iter(client.inboxes.list()))
    with pytest.raises(errors.InvalidRequest) as exc:
        client.messages.send(mine.id, to=["not an address"], text="x")
    assert exc.value.status == 422


def test_mock_keys_open_nothing_on_a_real_server(config, db):
    from postern.core import keys
    from postern.core.models import AgentKey, EnrollmentKey

    for token in (MOCK_AGENT_KEY, MOCK_READ_ONLY_KEY, MOCK_ENROLLMENT_TOKEN):
        assert keys.parse_kind(token) in ("agent", "enroll")  # well-formed, so tools accept them
        digest = keys.hash_key(token)
        assert not AgentKey.select().where(AgentKey.key_hash == digest).exists()
        assert not EnrollmentKey.select().where(EnrollmentKey.key_hash == digest).exists()
