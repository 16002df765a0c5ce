"""The WildDuck front door when something under it fails: the sender always gets a 4xx
(it keeps the message and retries), never aiosmtpd's ``500 Error``, and copies the
policy held for the attempt are let go, so the retry does not hold them twice. Runs the
front door's ``on_message`` with a real database, real DNS verdicts and the real screen;
only the LMTP hand-over is made to fail."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import peewee
import pytest
from support.world import make_tenant, seed_inbox
from support.zone_dns import ZoneDns

from postern.core.db import DatabaseRunner, GroupCommitter
from postern.core.mail.ingest import limits_for, local_inbox
from postern.core.mail.mime import parse
from postern.core.models import QuarantinedMessage
from postern.core.smtp.session import Arrival
from postern.plugins.wildduck import frontdoor
from postern.plugins.wildduck.models import WildDuckVerdict


@pytest.fixture
def zone():
    server = ZoneDns({("sender.example", "TXT"): ["v=spf1 ip4:192.0.2.1 -all"]})
    yield server
    server.close()


@pytest.fixture
def config(config, zone):
    config.trust.verify, config.trust.resolver, config.trust.dns_timeout = True, zone.address, 2
    config.trust.unauthenticated = "quarantine"  # every copy of unproven mail is held
    return config


def arrival(postern, inboxes, runner, mail_from="bob@plain.example"):
    raw = f"From: {mail_from}\r\nTo: {inboxes[0].address}\r\nSubject: held\r\nMessage-ID: <f1@x>\r\n\r\nhi\r\n".encode()
    return Arrival(
        raw=raw,
        parsed=parse(raw, limits_for(postern)),
        mail_from=mail_from,
        recipients=[i.address for i in inboxes],
        inboxes={i.address: local_inbox(i.address) for i in inboxes},
        runner=runner,
        committer=GroupCommitter(),
        client_ip="192.0.2.1",
        helo="mx.sender.example",
    )


@pytest.fixture
def runner():
    pool = DatabaseRunner(2)
    yield pool
    pool.shutdown()


@pytest.fixture
def boxes(postern):
    enrolled = make_tenant("acme").agent_key(max_mailboxes=5)
    return seed_inbox(postern, enrolled, username="held"), seed_inbox(postern, enrolled, username="taken")


def test_a_database_failure_during_the_hand_over_is_a_451_and_lets_go_of_held_copies(
    postern, boxes, runner, monkeypatch
):
    held, taken = boxes
    # 'taken' delivers (its own policy), 'held' holds: then the hand-over to WildDuck fails.
    from postern.core.models import InboundPolicy

    InboundPolicy.create(customer=taken.customer_id, scope=taken.id, unauthenticated="deliver")

    def broken(*args, **kwargs):
        raise peewee.OperationalError("database is locked")

    monkeypatch.setattr(frontdoor, "deliver_once", broken)
    receiver = SimpleNamespace(options=None)
    reply = asyncio.run(frontdoor.deliver_arrival(postern, receiver, arrival(postern, [held, taken], runner)))
    assert reply.startswith("451 ") and "Error" not in reply
    assert QuarantinedMessage.select().count() == 0  # let go: the retry holds it again
    assert WildDuckVerdict.select().count() == 1  # recorded before the hand-over, harmless


def test_wildduck_refusing_the_rest_lets_go_of_held_copies_too(postern, boxes, runner, monkeypatch):
    held, taken = boxes
    from postern.core.models import InboundPolicy

    InboundPolicy.create(customer=taken.customer_id, scope=taken.id, unauthenticated="deliver")
    monkeypatch.setattr(frontdoor, "deliver_once", lambda *a, **k: {taken.address: (550, "5.1.1 no such user")})
    reply = asyncio.run(frontdoor.deliver_arrival(postern, SimpleNamespace(), arrival(postern, [held, taken], runner)))
    assert reply.startswith("550 ")  # the sender bounces the whole message
    assert QuarantinedMessage.select().count() == 0


def test_all_copies_held_is_a_plain_250_and_nothing_reaches_wildduck(postern, boxes, runner, monkeypatch):
    held, taken = boxes
    called = []
    monkeypatch.setattr(frontdoor, "deliver_once", lambda *a, **k: called.append(a) or {})
    reply = asyncio.run(frontdoor.deliver_arrival(postern, SimpleNamespace(), arrival(postern, [held, taken], runner)))
    assert reply.startswith("250 ") and called == []
    assert sorted(q.inbox_id for q in QuarantinedMessage.select()) == sorted([held.id, taken.id])
