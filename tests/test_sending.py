"""Sending and replying through the API, with a real SMTP smarthost where mail leaves."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import time

import falcon.testing
import pytest
from aiosmtpd.controller import Controller
from support.faults import BadRelay
from support.server import free_port
from support.sink import Sink
from support.world import make_tenant

from postern.api import create_app
from postern.core.config import ConfigError
from postern.core.db import database
from postern.core.hookspecs import hookimpl
from postern.core.mail.delivery import MAX_ATTEMPTS, RETRY_SCHEDULE, deliver_due
from postern.core.models import Message, utcnow
from postern.core.runtime import build_postern


def make_client(config, smarthost=None):
    if smarthost:
        config.roles["send"].options = {"smtp_local": {"smarthost": smarthost, "starttls": False}}
    postern = build_postern(config)
    return falcon.testing.TestClient(create_app(postern)), postern


@pytest.fixture
def world(db):
    acme = make_tenant("acme")
    return acme, acme.agent_key(handle="alice", max_mailboxes=5)


def auth(agent, **extra):
    return {"Authorization": f"Bearer {agent.agent_key}", **extra}


def new_inbox(client, agent, username):
    return client.simulate_post("/v1/inboxes", headers=auth(agent), json={"username": username}).json


def test_agent_to_agent_and_threaded_reply(config, world):
    client, _ = make_client(config)
    _, agent = world
    alice, bob = new_inbox(client, agent, "alice"), new_inbox(client, agent, "bob")
    blob = bytes(range(256)) * 50
    sent = client.simulate_post(
        f"/v1/inboxes/{alice['id']}/messages",
        headers=auth(agent),
        json={
            "to": [{"address": bob["address"], "name": "Bob"}],
            "subject": "Plan",
            "text": "Shall we?",
            "html": "<p>Shall we?</p>",
            "attachments": [
                {
                    "filename": "plan.bin",
                    "content_type": "application/octet-stream",
                    "content": base64.b64encode(blob).decode(),
                }
            ],
        },
    )
    assert sent.status_code == 201, sent.text
    assert sent.json["status"] == "sent" and sent.json["direction"] == "outbound"
    assert sent.json["message_id"].endswith("@acme.agents.localhost>")
    [received] = client.simulate_get(f"/v1/inboxes/{bob['id']}/messages", headers=auth(agent)).json["data"]
    assert received["from"] == {"address": alice["address"], "name": ""} and received["subject"] == "Plan"
    detail = client.simulate_get(f"/v1/inboxes/{bob['id']}/messages/{received['id']}", headers=auth(agent)).json
    assert detail["attachments"][0]["sha256"] == hashlib.sha256(blob).hexdigest()
    assert detail["html"] == "<p>Shall we?</p>\n" and detail["text"] == "Shall we?\n"

    reply = client.simulate_post(
        f"/v1/inboxes/{bob['id']}/messages/{received['id']}/reply", headers=auth(agent), json={"text": "Yes."}
    )
    assert reply.status_code == 201 and reply.json["subject"] == "Re: Plan"
    assert reply.json["in_reply_to"] == sent.json["message_id"]
    assert reply.json["thread_id"] == received["thread_id"]
    back = client.simulate_get(f"/v1/inboxes/{alice['id']}/messages", headers=auth(agent)).json["data"]
    assert [m["subject"] for m in back] == ["Re: Plan", "Plan"]
    assert back[0]["thread_id"] == back[1]["thread_id"] == sent.json["thread_id"]  # same thread on Alice's side


def test_external_mail_is_captured_without_a_smarthost(config, world):
    client, _ = make_client(config)
    _, agent = world
    alice = new_inbox(client, agent, "alice")
    resp = client.simulate_post(
        f"/v1/inboxes/{alice['id']}/messages",
        headers=auth(agent),
        json={"to": ["someone@example.org"], "subject": "hi", "text": "hello"},
    )
    assert resp.status_code == 201 and resp.json["status"] == "captured"
    outbox = client.simulate_get(
        f"/v1/inboxes/{alice['id']}/messages", headers=auth(agent), params={"direction": "outbound"}
    ).json["data"]
    assert [m["status"] for m in outbox] == ["captured"]


def test_relay_through_a_smarthost(config, world, sink):
    handler, port = sink
    client, _ = make_client(config, f"127.0.0.1:{port}")
    _, agent = world
    alice = new_inbox(client, agent, "alice")
    resp = client.simulate_post(
        f"/v1/inboxes/{alice['id']}/messages",
        headers=auth(agent),
        json={"to": ["a@example.org"], "bcc": ["hidden@example.org"], "subject": "out", "text": "x"},
    )
    assert resp.status_code == 201 and resp.json["status"] == "sent", resp.text
    [(mail_from, rcpts, content)] = handler.received
    # The envelope sender is the message's VERP bounce address, on the inbox's domain.
    assert mail_from == f"bounce-{resp.json['id']}@{alice['address'].split('@')[1]}"
    assert sorted(rcpts) == ["a@example.org", "hidden@example.org"]
    assert b"hidden@example.org" not in content  # Bcc travels in the envelope only
    assert b"From: alice@" in content or alice["address"].encode() in content
    assert [(r["address"], r["status"]) for r in resp.json["recipients"]] == [
        ("a@example.org", "sent"),
        ("hidden@example.org", "sent"),
    ]
    assert b"Subject: out" in content


class TlsAuthSink(Sink):
    """Records the TLS and login state of the session each message came in on."""

    async def handle_DATA(self, server, session, envelope):
        self.sessions.append((session.ssl is not None, session.authenticated, list(self.logins)))
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
def tls_sink(tmp_path):
    """A real smarthost that requires STARTTLS, then AUTH, with a certificate from a private CA."""
    import ssl

    import trustme
    from aiosmtpd.smtp import AuthResult

    ca = trustme.CA()
    server_cert = ca.issue_cert("127.0.0.1", "localhost")
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_cert.configure_cert(tls)
    ca_file = tmp_path / "private-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))

    def check(server, session, envelope, mechanism, auth_data):
        ok = (auth_data.login, auth_data.password) == (b"relay-user", b"s3cret pass")
        if ok:
            handler.logins.append(auth_data.login)
        return AuthResult(success=ok, handled=False)

    handler = TlsAuthSink()
    handler.sessions, handler.logins = [], []
    controller = Controller(
        handler,
        hostname="127.0.0.1",
        port=free_port(),
        tls_context=tls,
        require_starttls=True,
        auth_required=True,
        authenticator=check,
    )
    controller.start()
    yield handler, controller.port, str(ca_file)
    controller.stop()


def tls_client(config, port, ca_file, password="s3cret pass", **extra):
    options = {"smarthost": f"127.0.0.1:{port}", "username": "relay-user", "password": password, **extra}
    if ca_file:
        options["ca_file"] = ca_file
    config.roles["send"].options = {"smtp_local": options}
    postern = build_postern(config)
    return falcon.testing.TestClient(create_app(postern)), postern


def test_relay_over_starttls_with_auth_to_a_private_ca_smarthost(config, world, tls_sink):
    handler, port, ca_file = tls_sink
    client, _ = tls_client(config, port, ca_file, verp=False)  # a relay that wants MAIL FROM = From
    _, agent = world
    alice = new_inbox(client, agent, "alice")
    body = {"to": ["a@example.org"], "subject": "over tls", "text": "x"}
    resp = client.simulate_post(f"/v1/inboxes/{alice['id']}/messages", headers=auth(agent), json=body)
    assert resp.status_code == 201 and resp.json["status"] == "sent", resp.text
    assert handler.sessions == [(True, True, [b"relay-user"])]  # encrypted, then logged in
    [(mail_from, rcpts, content)] = handler.received
    assert mail_from == alice["address"] and rcpts == ["a@example.org"] and b"Subject: over tls" in content


@pytest.mark.parametrize(
    "ca, password, expected",
    [
        (False, "s3cret pass", "certificate verify failed"),  # the private CA is not trusted by default
        (True, "wrong", "refused our login: 535"),
    ],
)
def test_untrusted_certificate_or_wrong_login_keeps_the_message_queued(config, world, tls_sink, ca, password, expected):
    handler, port, ca_file = tls_sink
    client, _ = tls_client(config, port, ca_file if ca else "", password=password)
    _, agent = world
    alice = new_inbox(client, agent, "alice")
    body = {"to": ["a@example.org"], "subject": "s", "text": "t"}
    resp = client.simulate_post(f"/v1/inboxes/{alice['id']}/messages", headers=auth(agent), json=body)
    assert resp.status_code == 201 and resp.json["status"] == "queued", resp.text
    assert expected in resp.json["error"] and "s3cret" not in resp.json["error"]
    assert handler.received == []


def test_smarthost_refusal_fails_and_outage_retries(config, world, sink):
    handler, port = sink
    client, postern = make_client(config, f"127.0.0.1:{port}")
    _, agent = world
    alice = new_inbox(client, agent, "alice")
    body = {"to": ["a@example.org"], "subject": "s", "text": "t"}
    handler.reply = "550 5.1.1 no such user"
    failed = client.simulate_post(f"/v1/inboxes/{alice['id']}/messages", headers=auth(agent), json=body)
    assert failed.json["status"] == "failed" and failed.json["error"].startswith("550")

    handler.reply = "451 4.3.0 try later"
    queued = client.simulate_post(f"/v1/inboxes/{alice['id']}/messages", headers=auth(agent), json=body)
    assert queued.json["status"] == "queued" and queued.json["attempts"] == 1
    handler.reply = "250 OK"
    Message.update(next_attempt_at=utcnow()).where(Message.id == queued.json["id"]).execute()
    assert deliver_due(postern) == 1
    assert Message.get_by_id(queued.json["id"]).status == "sent"
    assert len(handler.received) == 1


def test_idempotency_key_replays_the_first_result(config, world, sink):
    handler, port = sink
    client, _ = make_client(config, f"127.0.0.1:{port}")
    _, agent = world
    alice = new_inbox(client, agent, "alice")
    body = {"to": ["a@example.org"], "subject": "once", "text": "t"}
    first = client.simulate_post(
        f"/v1/inboxes/{alice['id']}/messages", headers=auth(agent, **{"Idempotency-Key": "k1"}), json=body
    )
    again = client.simulate_post(
        f"/v1/inboxes/{alice['id']}/messages", headers=auth(agent, **{"Idempotency-Key": "k1"}), json=body
    )
    assert (first.status_code, again.status_code) == (201, 200) and first.json["id"] == again.json["id"]
    assert len(handler.received) == 1
    other = client.simulate_post(
        f"/v1/inboxes/{alice['id']}/messages",
        headers=auth(agent, **{"Idempotency-Key": "k1"}),
        json={**body, "subject": "different"},
    )
    assert other.status_code == 409 and other.json["error"]["code"] == "idempotency_key_reused"


@pytest.mark.parametrize(
    "body, field",
    [
        ({"to": ["a@example.org"], "subject": "x\r\nBcc: victim@example.org", "text": "t"}, "subject"),
        ({"to": ["a@example.org"], "text": "t", "headers": {"X-Ok": "a\r\nBcc: v@example.org"}}, "headers"),
        ({"to": ["a@example.org"], "text": "t", "headers": {"From": "ceo@example.org"}}, "headers"),
        ({"to": ["not an address"], "text": "t"}, "to"),
        ({"to": ["a@example.org\r\nRCPT TO:<b@example.org>"], "text": "t"}, "to"),
        ({"to": [], "text": "t"}, "to"),
        ({"to": ["a@example.org"]}, "text"),
        ({"to": ["a@example.org"], "text": "t", "attachments": [{"content": "!!notbase64"}]}, "attachments"),
        ({"to": ["a@example.org"], "text": "t", "attachments": [{"content": "", "content_type": "x"}]}, "attachments"),
        ({"to": ["a@example.org"], "text": "t", "priority": "high"}, "priority"),
        ({"to": [{"address": "a@example.org", "name": "A\nB"}], "text": "t"}, "to"),
    ],
)
def test_bad_sends_are_refused_and_store_nothing(config, world, body, field):
    client, _ = make_client(config)
    _, agent = world
    alice = new_inbox(client, agent, "alice")
    resp = client.simulate_post(f"/v1/inboxes/{alice['id']}/messages", headers=auth(agent), json=body)
    assert resp.status_code == 422 and resp.json["error"]["field"] == field, resp.text
    assert Message.select().count() == 0


def test_reply_all_and_reply_to_header(config, world):
    client, postern = make_client(config)
    _, agent = world
    alice = new_inbox(client, agent, "alice")
    from postern.core.mail.ingest import ingest

    raw = (
        f"From: Carol <carol@example.org>\r\nTo: {alice['address']}, dave@example.org\r\n"
        "Cc: erin@example.org\r\nReply-To: helpdesk@example.org\r\nSubject: Ticket\r\n"
        "Message-ID: <t1@example.org>\r\n\r\nhelp\r\n"
    ).encode()
    [inbound] = ingest(postern, raw, "carol@example.org", [alice["address"]])
    reply = client.simulate_post(
        f"/v1/inboxes/{alice['id']}/messages/{inbound.id}/reply",
        headers=auth(agent),
        json={"text": "on it", "reply_all": True},
    ).json
    assert [p["address"] for p in reply["to"]] == ["helpdesk@example.org"]
    assert sorted(p["address"] for p in reply["cc"]) == ["dave@example.org", "erin@example.org"]
    assert reply["references"] == ["<t1@example.org>"] and reply["status"] == "captured"
    assert json.loads(Message.get_by_id(reply["id"]).envelope_to) == [
        "helpdesk@example.org",
        "dave@example.org",
        "erin@example.org",
    ]


def test_a_wait_skips_the_inbox_own_sent_mail(config, world):
    client, _ = make_client(config)
    _, agent = world
    alice, bob = new_inbox(client, agent, "alice"), new_inbox(client, agent, "bob")
    start = client.simulate_get(f"/v1/inboxes/{alice['id']}/messages/wait", headers=auth(agent), params={"timeout": 0})
    cursor = start.json["cursor"]
    client.simulate_post(
        f"/v1/inboxes/{alice['id']}/messages", headers=auth(agent), json={"to": [bob["address"]], "text": "ping"}
    )
    own = client.simulate_get(
        f"/v1/inboxes/{alice['id']}/messages/wait", headers=auth(agent), params={"after": cursor, "timeout": 0}
    ).json
    assert own["messages"] == [] and int(own["cursor"]) > int(cursor)  # skipped, but the cursor moved on
    bob_msgs = client.simulate_get(f"/v1/inboxes/{bob['id']}/messages", headers=auth(agent)).json["data"]
    client.simulate_post(
        f"/v1/inboxes/{bob['id']}/messages/{bob_msgs[0]['id']}/reply", headers=auth(agent), json={"text": "pong"}
    )
    got = client.simulate_get(
        f"/v1/inboxes/{alice['id']}/messages/wait", headers=auth(agent), params={"after": own["cursor"], "timeout": 0}
    ).json
    assert [m["snippet"] for m in got["messages"]] == ["pong"] and got["timed_out"] is False


@pytest.mark.parametrize(
    "options, message",
    [
        ({"smarthost": "relay.example.org"}, "smarthost must be host:port"),
        ({"smarthost": "relay.example.org:587", "username": "u"}, "username and password go together"),
        (
            {"smarthost": "relay.example.org:25", "starttls": False, "username": "u", "password": "p"},
            "a password is never sent in clear",
        ),
        ({"smarthost": "relay.example.org:587", "ca_file": "/nonexistent/ca.pem"}, "is not a readable PEM file"),
        ({"smarthost": "relay.example.org:587", "tls": True}, "unknown option 'tls'"),
        ({"starttls": "yes"}, "'starttls' must be true or false, got a string"),
        ({"timeout": 10, "deadline": 5}, "'deadline' .* at least 'timeout'"),
        ({"timeout": 0}, "'timeout' must be positive"),
    ],
)
def test_bad_smarthost_options_are_refused_at_start(options, message):
    from postern.plugins.smtp_local.sender import SmtpLocalSender

    with pytest.raises(ValueError, match=message):
        SmtpLocalSender.from_config(options)


def test_a_lease_no_longer_than_a_relay_attempt_is_refused_at_start(config):
    """The outbox may start a new attempt when the lease lapses: an attempt that can
    outlive it could relay the message twice, so such a configuration never starts."""
    config.roles["send"].options = {"smtp_local": {"smarthost": "127.0.0.1:2525", "starttls": False, "timeout": 30}}
    config.mail.outbound_lease_seconds = 120  # the deadline defaults to 4 x timeout = 120 s
    with pytest.raises(ConfigError, match=r"outbound_lease_seconds \(120\) must be above .*'smtp_local' \(120 s\)"):
        build_postern(config)
    config.mail.outbound_lease_seconds = 121
    assert build_postern(config).backend("send").attempt_deadline == 120
    config.roles["send"].options = {"smtp_local": {}}  # capturing: no relay, nothing to outlive
    config.mail.outbound_lease_seconds = 5
    assert build_postern(config).backend("send").attempt_deadline is None


@pytest.mark.parametrize("fault", ["hang", "drop", "down", "drip"])
def test_relay_that_hangs_drops_or_is_down_keeps_the_message_queued_until_it_is_back(config, world, sink, fault):
    handler, good_port = sink
    with contextlib.ExitStack() as stack:
        if fault == "down":
            port, relay = free_port(), None  # nothing listens there
        else:
            relay = stack.enter_context(BadRelay(fault))
            port = relay.port
        config.roles["send"].options = {
            "smtp_local": {"smarthost": f"127.0.0.1:{port}", "starttls": False, "timeout": 1, "deadline": 2}
        }
        postern = build_postern(config)
        client = falcon.testing.TestClient(create_app(postern))
        _, agent = world
        alice = new_inbox(client, agent, "alice")
        body = {"to": ["a@example.org"], "subject": "s", "text": "t"}
        started = time.monotonic()
        resp = client.simulate_post(f"/v1/inboxes/{alice['id']}/messages", headers=auth(agent), json=body)
        took = time.monotonic() - started
        assert resp.status_code == 201 and resp.json["status"] == "queued", resp.text
        expected = {
            "hang": "timed out",
            "drop": "Connection unexpectedly closed",
            "down": "Connection refused",
            "drip": "not done within 2 s",  # each byte came within the 1 s timeout
        }[fault]
        if fault == "drip":  # the deadline, not the relay, ended it (the relay drips forever)
            assert 2 <= took < 30
        assert expected in resp.json["error"] and resp.json["attempts"] == 1, resp.json["error"]
        assert relay is None or relay.connections == 1
        shown = client.simulate_get(f"/v1/inboxes/{alice['id']}/messages/{resp.json['id']}", headers=auth(agent))
        assert shown.json["status"] == "queued" and expected in shown.json["error"]

    # The relay is back (same message, now pointed at a working smarthost): the outbox sends it once.
    sender = postern.backend("send")
    sender.options = dataclasses.replace(sender.options, smarthost=f"127.0.0.1:{good_port}")
    Message.update(next_attempt_at=utcnow()).where(Message.id == resp.json["id"]).execute()
    assert deliver_due(postern) == 1
    sent = Message.get_by_id(resp.json["id"])
    assert (sent.status, sent.attempts, sent.error) == ("sent", 2, None)
    assert len(handler.received) == 1


def test_temporary_failures_back_off_then_fail_for_good_with_the_reason(config, world, sink):
    handler, port = sink
    client, postern = make_client(config, f"127.0.0.1:{port}")
    _, agent = world
    alice = new_inbox(client, agent, "alice")
    handler.reply = "421 4.3.2 shutting down"
    body = {"to": ["a@example.org"], "subject": "s", "text": "t"}
    before = utcnow()
    message_id = client.simulate_post(f"/v1/inboxes/{alice['id']}/messages", headers=auth(agent), json=body).json["id"]
    for attempt, delay in enumerate(RETRY_SCHEDULE, start=1):
        after = utcnow()
        row = Message.get_by_id(message_id)
        assert (row.status, row.attempts, row.error) == ("queued", attempt, "421 4.3.2 shutting down")
        wait = dt.timedelta(seconds=delay)  # the schedule's delay, counted from the failed attempt
        assert before + wait <= row.next_attempt_at <= after + wait
        Message.update(next_attempt_at=utcnow()).where(Message.id == message_id).execute()
        before = utcnow()
        assert deliver_due(postern) == 1
    failed = client.simulate_get(f"/v1/inboxes/{alice['id']}/messages/{message_id}", headers=auth(agent)).json
    assert failed["status"] == "failed" and failed["attempts"] == MAX_ATTEMPTS == len(RETRY_SCHEDULE) + 1
    assert failed["error"] == "expired: gave up after 8 attempts: 421 4.3.2 shutting down"
    assert [r["status"] for r in failed["recipients"]] == ["failed"]
    assert Message.get_by_id(message_id).next_attempt_at is None  # never tried again
    assert deliver_due(postern) == 0 and handler.received == []


class LockingSink(Sink):
    """A relay that, while it is being talked to, has another session lock the table
    Postern must write the outcome to, then answers 451: the message is stored, the
    attempt failed, and recording that failure meets a locked database."""

    def __init__(self, db_url):
        super().__init__()
        self.db_url = db_url
        self.reply = "451 4.3.0 busy"
        self.locker = None

    async def handle_DATA(self, server, session, envelope):
        if self.locker is None:
            self.locker = _lock_messages(self.db_url)
        return await super().handle_DATA(server, session, envelope)


def _lock_messages(db_url):
    if db_url.startswith("sqlite"):
        import sqlite3

        conn = sqlite3.connect(db_url[len("sqlite:///") :], isolation_level=None, check_same_thread=False)
        conn.execute("BEGIN EXCLUSIVE")
        return conn
    import psycopg2

    conn = psycopg2.connect(db_url)
    conn.cursor().execute("LOCK TABLE message IN ACCESS EXCLUSIVE MODE")
    return conn


def test_a_database_fault_after_the_message_is_stored_answers_201_queued_not_503(config, world, db_url):
    handler = LockingSink(db_url)
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        client, postern = make_client(config, f"127.0.0.1:{controller.port}")
        _, agent = world
        alice = new_inbox(client, agent, "alice")
        body = {"to": ["a@example.org"], "subject": "stored", "text": "t"}
        resp = client.simulate_post(f"/v1/inboxes/{alice['id']}/messages", headers=auth(agent), json=body)
        handler.locker.rollback()
        handler.locker.close()
        # Stored and committed: a 503 would make the client send it again. The outbox
        # delivers it once the sender's lease on it lapses.
        assert resp.status_code == 201 and resp.json["status"] == "queued", resp.text
        assert [m.id for m in Message.select()] == [resp.json["id"]]
        handler.reply = "250 OK"
        Message.update(next_attempt_at=utcnow()).where(Message.id == resp.json["id"]).execute()
        assert deliver_due(postern) == 1
        assert Message.get_by_id(resp.json["id"]).status == "sent" and len(handler.received) == 1
    finally:
        controller.stop()


class FailingOutcomePlugin:
    """A plugin whose outcome hooks raise, counting that they were called."""

    def __init__(self):
        self.calls = []

    @hookimpl
    def postern_message_sent(self, message, result):
        self.calls.append(("sent", message.id))
        raise RuntimeError("metrics down")

    @hookimpl
    def postern_message_failed(self, message, error):
        self.calls.append(("failed", message.id))
        raise RuntimeError("alerts down")


def test_a_failing_outcome_hook_does_not_fail_a_committed_send(config, world, sink, caplog):
    handler, port = sink
    client, postern = make_client(config, f"127.0.0.1:{port}")
    plugin = FailingOutcomePlugin()
    postern.pm.register(plugin)
    _, agent = world
    alice = new_inbox(client, agent, "alice")
    body = {"to": ["a@example.org"], "subject": "s", "text": "t"}
    sent = client.simulate_post(f"/v1/inboxes/{alice['id']}/messages", headers=auth(agent), json=body)
    assert sent.status_code == 201 and sent.json["status"] == "sent"
    handler.reply = "550 5.1.1 no such user"
    failed = client.simulate_post(f"/v1/inboxes/{alice['id']}/messages", headers=auth(agent), json=body)
    assert failed.status_code == 201 and failed.json["status"] == "failed"
    assert plugin.calls == [("sent", sent.json["id"]), ("failed", failed.json["id"])]
    assert len(handler.received) == 1  # the sent one, once
    logged = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any("postern_message_sent hook failed" in m for m in logged)
    assert any("postern_message_failed hook failed" in m for m in logged)


def test_a_send_to_local_inboxes_only_commits_once(config, world, monkeypatch):
    """Stored, delivered to every local inbox and recorded as sent in one transaction:
    one commit (one fsync) per send instead of three."""
    client, _ = make_client(config)
    _, agent = world
    alice, bob, carol = (new_inbox(client, agent, name) for name in ("alice", "bob", "carol"))
    commits = []
    real_commit = database.obj.commit  # the database the app opened
    monkeypatch.setattr(database.obj, "commit", lambda: commits.append(1) or real_commit())
    body = {"to": [bob["address"]], "cc": [carol["address"]], "subject": "one", "text": "commit"}
    sent = client.simulate_post(f"/v1/inboxes/{alice['id']}/messages", headers=auth(agent), json=body)
    assert sent.status_code == 201 and sent.json["status"] == "sent" and sent.json["attempts"] == 1
    assert len(commits) == 1
    for inbox in (bob, carol):
        [got] = client.simulate_get(f"/v1/inboxes/{inbox['id']}/messages", headers=auth(agent)).json["data"]
        assert got["subject"] == "one" and got["direction"] == "inbound"
    assert Message.get_by_id(sent.json["id"]).local_done is True
