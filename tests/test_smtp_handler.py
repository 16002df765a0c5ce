"""The SMTP handler's answers when storing fails: never 250 for what was not stored."""

import asyncio
import dataclasses
from types import SimpleNamespace

import peewee
import pytest
from support.world import INFO, make_tenant

from postern.core.auth import authenticate
from postern.core.db import DatabaseRunner, GroupCommitter
from postern.core.inboxes import create_inbox
from postern.core.models import Message
from postern.core.runtime import build_postern
from postern.core.smtp import session
from postern.plugins.smtp_local import intake as smtp


@pytest.fixture
def handler(config, db):
    postern = build_postern(config)
    agent = make_tenant("acme").agent_key()
    inbox, _ = create_inbox(postern, authenticate(agent.agent_key, "agent", INFO), INFO, {"username": "box"})
    runner, committer = DatabaseRunner(1), GroupCommitter()
    yield smtp.make_handler(postern, runner, committer), inbox
    committer.shutdown()
    runner.shutdown()


def envelope(rcpts, content=b"Subject: x\r\n\r\nbody\r\n"):
    return SimpleNamespace(rcpt_tos=list(rcpts), mail_from="a@example.org", content=content, original_content=content)


def test_database_failure_answers_451_and_stores_nothing(handler, monkeypatch):
    h, inbox = handler

    def broken(*args, **kwargs):
        raise peewee.OperationalError("database is locked")

    monkeypatch.setattr(smtp, "store", broken)
    answer = asyncio.run(h.handle_DATA(None, None, envelope([inbox.address])))
    assert answer.startswith("451 ")
    assert Message.select().count() == 0


def test_unexpected_failure_answers_451_too(handler, monkeypatch):
    h, inbox = handler
    monkeypatch.setattr(smtp, "store", lambda *a, **k: 1 / 0)
    assert asyncio.run(h.handle_DATA(None, None, envelope([inbox.address]))).startswith("451 ")


def test_rcpt_answers(handler, monkeypatch):
    h, inbox = handler
    env = envelope([])
    assert asyncio.run(h.handle_RCPT(None, None, env, inbox.address.upper(), [])).startswith("250")
    assert asyncio.run(h.handle_RCPT(None, None, env, "ghost@acme.agents.localhost", [])).startswith("550")
    h.options = dataclasses.replace(h.options, max_recipients=1)
    assert asyncio.run(h.handle_RCPT(None, None, env, inbox.address, [])).startswith("452")

    def down(*args, **kwargs):
        raise peewee.OperationalError("unable to open database file")

    monkeypatch.setattr(session, "receiving_inbox", down)
    assert asyncio.run(h.handle_RCPT(None, None, envelope([]), inbox.address, [])).startswith("451")


def test_success_is_250_with_the_stored_ids(handler):
    h, inbox = handler
    answer = asyncio.run(h.handle_DATA(None, None, envelope([inbox.address])))
    [message] = Message.select()
    assert answer == f"250 2.0.0 OK stored as {message.id}"


ADDRESSES = [
    "", "<>", "<a@example.org>", " <a@example.org> SIZE=100", "a@example.org", "<a@[127.0.0.1]>",
    '<"quoted local"@example.org>', "<@relay.example:a@example.org>", "<a@example.org", "<", "<@", "@", "a",
    "<" + "l" * 65 + "@example.org>", "<" + "l" * 64 + "@example.org>", "<a@example.org> BODY=8BITMIME",
    "\u00e9l\u00e8ve@example.org", "<a b@example.org>", '"', '<"', '< "', '()"', '"a"@example.org',
]  # fmt: skip


@pytest.mark.parametrize("limit", [0, 64])
def test_listener_reads_addresses_as_aiosmtpd_does(limit):
    """Postern's _getaddr replaces aiosmtpd's for speed: same answers, except that the
    inputs on which the standard library raises IndexError get aiosmtpd's refusal."""
    from aiosmtpd.smtp import SMTP

    ours, theirs = session._smtp_class()._getaddr, SMTP._getaddr
    probe = SimpleNamespace(local_part_limit=limit)
    for arg in ADDRESSES:
        try:
            expected = theirs(probe, arg)
        except (IndexError, ValueError):
            expected = (None, None)
        assert ours(probe, arg) == expected, arg
