"""The wildduck receive backend in process, against a real WildDuck: config checks,
provisioning mirrored and all-or-nothing, and the watcher's exactly-once ingest."""

from __future__ import annotations

import gc
import json
import os
import smtplib

import falcon.testing
import httpx
import pytest
from support.server import free_port
from support.wildduck_stack import missing_inbox
from support.world import make_tenant

from postern.api import create_app
from postern.core.backends import InboxRef, TemporaryFailure
from postern.core.models import EnrollmentKey, Inbox, Message
from postern.core.plugins import get_plugin_manager
from postern.core.registry import BackendRegistry
from postern.core.runtime import Postern
from postern.plugins.wildduck import watcher
from postern.plugins.wildduck.models import (
    WildDuckDelivered,
    WildDuckMailbox,
    WildDuckOrphan,
    WildDuckSeen,
    WildDuckSentDue,
    WildDuckVerdict,
)
from postern.plugins.wildduck.receiver import WildDuckReceiver


def build(config, options: dict) -> Postern:
    config.roles["receive"].backend, config.roles["receive"].explicit = "wildduck", True
    config.roles["receive"].options["wildduck"] = options
    pm = get_plugin_manager(load_entrypoints=False)
    postern = Postern(config, pm, BackendRegistry.from_plugin_manager(pm))
    postern.validate_backends()
    return postern


def stack_options(stack) -> dict:
    return {
        "api_url": stack.api_url,
        "lmtp_host": "127.0.0.1",
        "lmtp_port": stack.lmtp_port,
        "imap_host": "127.0.0.1",
        "imap_port": stack.imap_port,
        "imap_tls": False,
        "redis_url": stack.redis_url,
    }


@pytest.fixture
def wd(config, db, wildduck_stack):
    postern = build(config, stack_options(wildduck_stack))
    postern.stack = wildduck_stack
    return postern


@pytest.fixture
def agent(db):
    return make_tenant("acme").agent_key(handle="bot", max_mailboxes=5)


def auth(agent):
    return {"Authorization": f"Bearer {agent.agent_key}"}


def wd_api(postern, method, path, **kwargs):
    return httpx.request(method, postern.stack.api_url + path, timeout=10, **kwargs)


def lmtp(stack, rcpt: str, subject: str, sender="alice@example.org") -> None:
    raw = f"From: {sender}\r\nTo: {rcpt}\r\nSubject: {subject}\r\nMessage-ID: <{subject}@example.org>\r\n\r\nbody\r\n"
    with smtplib.LMTP("127.0.0.1", stack.lmtp_port) as client:
        assert client.sendmail(sender, [rcpt], raw.encode()) == {}


# configuration


@pytest.mark.parametrize(
    "options, message",
    [
        ({}, "api_url is required"),
        ({"api_url": "ftp://x"}, "api_url must be an http(s) URL"),
        ({"api_url": "http://x", "lmtp_port": "24"}, "'lmtp_port' must be an integer, got a string (\"24\")$"),
        ({"api_url": "http://x", "imap_tls": 1}, "'imap_tls' must be true or false, got an integer (1)$"),
        ({"api_url": "http://x", "sweep_seconds": "60"}, "'sweep_seconds' must be a number, got a string"),
        ({"api_url": "http://x", "threads": 2.5}, "'threads' must be an integer, got a number (2.5)$"),
        ({"api_url": "http://x", "hostname": ["a"]}, "'hostname' must be a string, got an array$"),
        ({"api_url": "http://x", "colour": "red"}, "unknown option 'colour'"),
        ({"api_url": "http://x", "smtp_bind": "2525"}, "smtp_bind must be host:port"),
        ({"api_url": "http://x", "redis_url": "http://r"}, "redis_url must be a redis:// URL"),
        ({"api_url": "http://x", "sweep_seconds": 0}, "sweep_seconds must be positive"),
    ],
)
def test_bad_options_are_refused_at_start(config, options, message):
    from postern.core.config import ConfigError

    with pytest.raises(
        ConfigError, match=r"^\[receive\.wildduck\]: " + message.replace("(", r"\(").replace(")", r"\)")
    ):
        build(config, options)


def test_plugins_shows_wildduck_active(config):
    postern = build(config, {"api_url": "http://127.0.0.1:1"})
    status = {s.role: s for s in postern.role_status()}["receive"]
    assert (status.backend, status.available, status.plugin) == ("wildduck", True, "wildduck")
    assert {"wildduck-watcher", "smtp"} <= {s.name for s in postern.services()}


def test_no_front_door_when_smtp_bind_is_empty(config):
    postern = build(config, {"api_url": "http://127.0.0.1:1", "smtp_bind": ""})
    names = {s.name for s in postern.services()}
    assert "wildduck-watcher" in names and "smtp" not in names


# provisioning


def test_create_and_delete_are_mirrored_in_wildduck(wd, agent):
    client = falcon.testing.TestClient(create_app(wd))
    resp = client.simulate_post("/v1/inboxes", headers=auth(agent), json={"username": "mirror"})
    assert resp.status_code == 201, resp.text
    inbox = resp.json
    found = wd_api(wd, "GET", f"/addresses/resolve/{inbox['address']}").json()
    row = WildDuckMailbox.get_by_id(inbox["id"])
    assert found["user"] == row.user_id and row.sent_mailbox
    assert row.ingest_from is None and row.seen_until is None  # a new user: all its mail is the inbox's
    # Idempotent: provisioning the same inbox again finds the same user.
    wd.backend("receive").provision(InboxRef(inbox["id"], "cus_unused", inbox["address"]))
    assert WildDuckMailbox.get_by_id(inbox["id"]).user_id == row.user_id

    assert client.simulate_delete(f"/v1/inboxes/{inbox['id']}", headers=auth(agent)).status_code == 204
    assert wd_api(wd, "GET", f"/addresses/resolve/{inbox['address']}").status_code == 404
    assert wd_api(wd, "GET", f"/users/{row.user_id}").status_code == 404
    assert WildDuckMailbox.get_or_none(WildDuckMailbox.inbox == inbox["id"]) is None


def test_wildduck_unreachable_gives_503_and_leaves_nothing(config, db, agent):
    postern = build(config, {"api_url": f"http://127.0.0.1:{free_port()}", "timeout_seconds": 2})
    client = falcon.testing.TestClient(create_app(postern))
    resp = client.simulate_post("/v1/inboxes", headers=auth(agent), json={"username": "down"})
    assert resp.status_code == 503, resp.text
    assert resp.json["error"]["code"] == "provisioning_failed"
    assert resp.headers["Retry-After"] == "5"
    assert Inbox.select().count() == 0 and WildDuckMailbox.select().count() == 0
    assert EnrollmentKey.get_by_id(agent.enrollment.id).mailboxes_used == 0


def test_rollback_after_provisioning_removes_the_wildduck_user(wd, agent, monkeypatch):
    """The inbox transaction fails after WildDuck made the user: the user goes too."""
    from postern.core import inboxes

    def broken(*args, **kwargs):
        raise RuntimeError("audit store broke")

    monkeypatch.setattr(inboxes.webhook_events, "inbox_event", broken)
    client = falcon.testing.TestClient(create_app(wd))
    resp = client.simulate_post("/v1/inboxes", headers=auth(agent), json={"username": "halfway"})
    assert resp.status_code == 500
    assert Inbox.select().count() == 0
    assert wd_api(wd, "GET", "/addresses/resolve/halfway@acme.agents.localhost").status_code == 404


def test_rollback_leaves_a_user_that_held_the_address_before(wd, agent, monkeypatch):
    """A user an operator made in WildDuck is reused by the inbox; when the inbox's
    transaction then fails, that user stays: it was not Postern's to delete."""
    from postern.core import inboxes

    address = "kept@acme.agents.localhost"
    made = wd_api(wd, "POST", "/users", json={"username": "operators", "address": address, "password": False})
    assert made.status_code == 200, made.text

    def broken(*args, **kwargs):
        raise RuntimeError("audit store broke")

    monkeypatch.setattr(inboxes.webhook_events, "inbox_event", broken)
    client = falcon.testing.TestClient(create_app(wd))
    assert client.simulate_post("/v1/inboxes", headers=auth(agent), json={"username": "kept"}).status_code == 500
    assert wd_api(wd, "GET", f"/addresses/resolve/{address}").json()["user"] == made.json()["id"]
    assert Inbox.select().count() == 0 and WildDuckOrphan.select().count() == 0


# the watcher


def make_inbox(wd, agent, username):
    client = falcon.testing.TestClient(create_app(wd))
    resp = client.simulate_post("/v1/inboxes", headers=auth(agent), json={"username": username})
    assert resp.status_code == 201, resp.text
    return Inbox.get_by_id(resp.json["id"])


def stored_subjects(inbox) -> list[str]:
    return [m.subject for m in Message.select().where(Message.inbox == inbox.id).order_by(Message.seq)]


def test_sweep_ingests_each_message_once_across_restarts(wd, agent):
    inbox = make_inbox(wd, agent, "restart")
    stack = wd.stack
    lmtp(stack, inbox.address, "one")
    lmtp(stack, inbox.address, "two")
    api = wd.backend("receive").api
    assert watcher.sweep(wd, api) == 2
    assert watcher.sweep(wd, api) == 0  # nothing twice
    assert stored_subjects(inbox) == ["one", "two"]

    # A "restarted" watcher: a new API client, state only from the database.
    lmtp(stack, inbox.address, "three")
    fresh = WildDuckReceiver.from_config(stack_options(stack)).api
    assert watcher.sweep(wd, fresh) == 1
    assert stored_subjects(inbox) == ["one", "two", "three"]
    assert WildDuckSeen.select().where(WildDuckSeen.inbox == inbox.id).count() == 3
    message = Message.select().where(Message.inbox == inbox.id, Message.subject == "three").get()
    assert message.envelope_from == "alice@example.org"  # from WildDuck's Return-Path
    assert bytes(message.raw).startswith(b"Delivered-To: ")


def test_a_watcher_that_lost_the_race_stores_nothing(wd, agent):
    inbox = make_inbox(wd, agent, "race")
    lmtp(wd.stack, inbox.address, "raced")
    api = wd.backend("receive").api
    first, second = WildDuckMailbox.get_by_id(inbox.id), WildDuckMailbox.get_by_id(inbox.id)
    assert watcher.catch_up(wd, api, first) == 1
    # A second watcher that read the mailbox row before the first one stored anything:
    assert watcher.catch_up(wd, api, second) == 0
    # ... and one that also listed before the first one committed: its insert of the key fails.
    [summary] = api.received_since(first.user_id, first.inbox_mailbox, None)
    raw = api.raw_message(first.user_id, summary.mailbox, summary.uid)
    with pytest.raises(watcher._AlreadyStored):
        watcher._ingest_one(wd, inbox.id, summary, raw)
    assert stored_subjects(inbox) == ["raced"]


def test_mail_over_postern_limits_is_stepped_over(wd, agent, monkeypatch):
    inbox = make_inbox(wd, agent, "limits")
    monkeypatch.setattr(wd.config.mail, "max_message_bytes", 400)
    lmtp(wd.stack, inbox.address, "big" + "x" * 400)
    lmtp(wd.stack, inbox.address, "small")
    assert watcher.sweep(wd, wd.backend("receive").api) == 1
    assert stored_subjects(inbox) == ["small"]
    assert WildDuckSeen.select().where(WildDuckSeen.inbox == inbox.id).count() == 2  # both looked at
    assert watcher.sweep(wd, wd.backend("receive").api) == 0


def test_a_sweep_lists_only_mailboxes_that_changed(wd, agent, monkeypatch):
    quiet, busy = make_inbox(wd, agent, "quiet"), make_inbox(wd, agent, "busy")
    lmtp(wd.stack, quiet.address, "early")
    api = wd.backend("receive").api
    unchanged = watcher.Unchanged()
    assert watcher.sweep(wd, api, unchanged) == 1
    calls = []
    real = api.request
    monkeypatch.setattr(api, "request", lambda method, path, **kw: calls.append(path) or real(method, path, **kw))
    lmtp(wd.stack, busy.address, "late")  # no watcher runs here: only the sweep can find it
    assert watcher.sweep(wd, api, unchanged) == 1
    assert stored_subjects(busy) == ["late"]
    quiet_user = wd_user(wd, quiet)
    assert [c for c in calls if quiet_user in c] == [f"/users/{quiet_user}/mailboxes"]  # one request, no listing
    # Without the memory (a restarted watcher) every mailbox is listed again; nothing is new.
    calls.clear()
    assert watcher.sweep(wd, api) == 0
    assert any(c.startswith(f"/users/{quiet_user}/mailboxes/") for c in calls)


def test_doorbell_names_the_user_wildduck_rang_for(wd, agent):
    inbox = make_inbox(wd, agent, "bell")
    bell = watcher._Doorbell(wd.stack.redis_url)
    assert bell.ensure_subscribed() is True
    assert bell.ensure_subscribed() is False  # already
    assert bell.wait(0.2) == set()  # nothing yet
    lmtp(wd.stack, inbox.address, "ring")
    users: set = set()
    for _ in range(50):
        users |= bell.wait(0.1)
        if users:
            break
    assert WildDuckMailbox.get_by_id(inbox.id).user_id in users


def test_doorbell_keeps_every_ring_from_subscription_on_even_when_a_batch_runs_out(wd, monkeypatch):
    """A batch that runs out of time keeps the ring it has just taken off the
    subscription; the rest come with the next wait. (A dropped ring is mail that waits
    for the next sweep, an hour by default.)"""
    import redis

    monkeypatch.setattr(watcher, "MAX_BATCH_SECONDS", 0.0)  # every batch runs out at once
    publisher = redis.Redis.from_url(wd.stack.redis_url)
    ((_, before),) = publisher.pubsub_numsub("wd_events")  # WildDuck's own subscribers
    bell = watcher._Doorbell(wd.stack.redis_url)
    assert bell.ensure_subscribed() is True
    gc.collect()
    # Subscribed from the moment ensure_subscribed returns, not from the first wait:
    # rings before that wait (while the watcher sweeps) must not be lost.
    assert publisher.pubsub_numsub("wd_events") == [(b"wd_events", before + 1)]
    rung = [f"{n:024x}" for n in range(1, 4)]
    for user in rung:
        publisher.publish("wd_events", json.dumps({"e": user}))
    heard: list[set] = []
    for _ in range(50):
        if got := bell.wait(0.1):
            heard.append(got)
        if set().union(*heard) == set(rung):
            break
    assert set().union(*heard) == set(rung)
    assert all(len(batch) == 1 for batch in heard)  # one ring per batch: the time limit held


def test_doorbell_without_redis_leaves_the_sweeps_in_charge():
    bell = watcher._Doorbell(f"redis://127.0.0.1:{free_port()}/0")
    assert bell.ensure_subscribed() is False and bell.pubsub is None
    assert bell.wait(0.05) == set()


def test_catch_up_reports_wildduck_down(config, db, agent, wildduck_stack):
    postern = build(config, {**stack_options(wildduck_stack), "api_url": f"http://127.0.0.1:{free_port()}"})
    row = WildDuckMailbox(inbox="inb_x", user_id="a" * 24, inbox_mailbox="b" * 24)
    with pytest.raises(TemporaryFailure, match="WildDuck API unreachable"):
        watcher.catch_up(postern, postern.backend("receive").api, row)


@pytest.mark.parametrize(
    "model", [WildDuckMailbox, WildDuckSeen, WildDuckDelivered, WildDuckSentDue, WildDuckOrphan, WildDuckVerdict]
)
def test_migrations_match_the_models(db, model):
    in_db = {c.name for c in db.get_columns(model._meta.table_name)}
    assert in_db == {f.column_name for f in model._meta.sorted_fields}


def test_app_password_opens_the_mailbox_over_imap(wd, agent, env, tmp_path):
    import json
    import subprocess
    import sys

    from imapclient import IMAPClient

    from postern.core.models import AuditEvent

    inbox = make_inbox(wd, agent, "human")
    lmtp(wd.stack, inbox.address, "for a human")
    options = stack_options(wd.stack)
    toml = tmp_path / "wd.toml"
    toml.write_text(
        '[receive]\nbackend = "wildduck"\n[receive.wildduck]\n'
        + "".join(f"{k} = {json.dumps(v)}\n" for k, v in options.items())
    )
    argv = [sys.executable, "-m", "postern", "--config", str(toml), "wildduck", "app-password", inbox.id, "--json"]
    done = subprocess.run(argv, env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    issued = json.loads(done.stdout)
    assert (issued["username"], issued["imap_port"], issued["imap_tls"]) == (inbox.address, wd.stack.imap_port, False)
    assert issued["password"] not in done.stderr
    with IMAPClient("127.0.0.1", port=wd.stack.imap_port, ssl=False, timeout=10) as imap:
        imap.login(issued["username"], issued["password"])
        imap.select_folder("INBOX", readonly=True)
        assert len(imap.search(["SUBJECT", "for a human"])) == 1
    [row] = AuditEvent.select().where(AuditEvent.action == "inbox.app_password")
    assert (row.target, row.actor, row.customer_id) == (inbox.id, "cli", inbox.customer_id)

    unknown = subprocess.run(argv[:-2] + ["inb_nope"], env={**os.environ, **env}, capture_output=True)
    assert unknown.returncode == 1 and b"no WildDuck mailbox for inbox 'inb_nope'" in unknown.stderr


# helpers for the tests below: WildDuck seen from outside Postern


def wd_user(postern, inbox) -> str:
    return WildDuckMailbox.get_by_id(inbox.id).user_id


def imap(postern, inbox):
    """An IMAP session as the person reading ``inbox`` (an app password from WildDuck)."""
    from imapclient import IMAPClient

    user = wd_user(postern, inbox)
    password = wd_api(postern, "POST", f"/users/{user}/asps", json={"description": "t", "scopes": ["imap"]})
    client = IMAPClient("127.0.0.1", port=postern.stack.imap_port, ssl=False, timeout=10)
    client.login(inbox.address, password.json()["password"])
    return client


def copies_in(postern, inbox, folder: str, subject: str) -> int:
    with imap(postern, inbox) as client:
        client.select_folder(folder, readonly=True)
        return len(client.search(["SUBJECT", subject]))


# gap: agent-to-agent mail reaches WildDuck


def send(postern, agent, inbox, body) -> dict:
    client = falcon.testing.TestClient(create_app(postern))
    resp = client.simulate_post(f"/v1/inboxes/{inbox.id}/messages", headers=auth(agent), json=body)
    assert resp.status_code in (200, 201, 202), resp.text
    return resp.json


def test_agent_mail_to_another_inbox_goes_through_wildduck_once(wd, agent):
    sender, recipient = make_inbox(wd, agent, "asker"), make_inbox(wd, agent, "answerer")
    sent = send(wd, agent, sender, {"to": [recipient.address], "subject": "between agents", "text": "hi"})
    assert sent["status"] == "sent"
    # Not stored straight into Postern: WildDuck has it, and the watcher brings it in.
    assert stored_subjects(recipient) == []
    assert copies_in(wd, recipient, "INBOX", "between agents") == 1
    api = wd.backend("receive").api
    assert watcher.sweep(wd, api) == 1
    assert watcher.sweep(wd, api) == 0
    assert stored_subjects(recipient) == ["between agents"]
    [received] = Message.select().where((Message.inbox == recipient.id) & (Message.direction == "inbound"))
    assert received.envelope_from == sender.address and received.message_id_header == sent["message_id"]
    assert copies_in(wd, sender, "Sent Mail", "between agents") == 1


def test_local_delivery_that_reached_one_of_two_inboxes_reaches_only_the_other_on_retry(wd, agent):
    from postern.core.mail.delivery import deliver

    sender = make_inbox(wd, agent, "fanout")
    first, second = make_inbox(wd, agent, "first"), make_inbox(wd, agent, "second")
    body = {"to": [first.address, second.address], "subject": "to both", "text": "hi"}
    with missing_inbox(wd.stack, wd_user(wd, second)):
        sent = send(wd, agent, sender, body)
    assert sent["status"] == "queued"  # WildDuck took it for one of the two: retried later
    assert "450" in Message.get_by_id(sent["id"]).error
    assert deliver(wd, sent["id"]).status == "sent"
    assert (copies_in(wd, first, "INBOX", "to both"), copies_in(wd, second, "INBOX", "to both")) == (1, 1)
    watcher.sweep(wd, wd.backend("receive").api)
    assert (stored_subjects(first), stored_subjects(second)) == (["to both"], ["to both"])


class Died(BaseException):
    """The process ended at this point (nothing in Postern catches a BaseException)."""


def test_agent_mail_whose_answer_was_never_recorded_is_not_delivered_twice(wd, agent, monkeypatch):
    """WildDuck stored the message, then the sending process died before recording that:
    the outbox's retry finds it in the recipient's mailbox and does not deliver again."""
    from postern.core.mail.delivery import deliver
    from postern.plugins.wildduck import lmtp as lmtp_module

    sender, recipient = make_inbox(wd, agent, "crasher"), make_inbox(wd, agent, "survivor")
    real = lmtp_module._record

    def dies_after_the_handover(digest, recipients, *, delivered):
        if delivered:
            raise Died()
        real(digest, recipients, delivered=delivered)

    monkeypatch.setattr(lmtp_module, "_record", dies_after_the_handover)
    with pytest.raises(Died):
        send(wd, agent, sender, {"to": [recipient.address], "subject": "once only", "text": "hi"})
    monkeypatch.undo()
    [outbound] = Message.select().where((Message.inbox == sender.id) & (Message.subject == "once only"))
    assert outbound.status == "queued" and copies_in(wd, recipient, "INBOX", "once only") == 1
    assert deliver(wd, outbound.id).status == "sent"
    assert copies_in(wd, recipient, "INBOX", "once only") == 1
    watcher.sweep(wd, wd.backend("receive").api)
    assert stored_subjects(recipient) == ["once only"]


# gap: mail moved out of INBOX before the watcher saw it


def test_mail_moved_before_the_watcher_saw_it_is_ingested_once_from_its_new_folder(wd, agent):
    inbox = make_inbox(wd, agent, "mover")
    api = wd.backend("receive").api
    lmtp(wd.stack, inbox.address, "filed away")
    lmtp(wd.stack, inbox.address, "thrown away")
    with imap(wd, inbox) as client:
        client.create_folder("Projects")
        client.select_folder("INBOX")
        client.move(client.search(["SUBJECT", "filed away"]), "Projects")
        client.move(client.search(["SUBJECT", "thrown away"]), "Trash")
    assert watcher.sweep(wd, api) == 1
    assert stored_subjects(inbox) == ["filed away"]  # Trash is not followed
    # Moved again, back to INBOX (a new UID there): still the same message, not new mail.
    with imap(wd, inbox) as client:
        client.select_folder("Projects")
        client.move(client.search(["SUBJECT", "filed away"]), "INBOX")
    assert watcher.sweep(wd, api) == 0
    assert stored_subjects(inbox) == ["filed away"]


def test_a_reused_wildduck_user_brings_no_old_mail(wd, agent):
    """Mail a user held before its inbox existed is not the inbox's."""
    address = "older@acme.agents.localhost"
    user = wd_api(wd, "POST", "/users", json={"username": "older", "address": address, "password": False})
    assert user.status_code == 200, user.text
    lmtp(wd.stack, address, "from before")
    inbox = make_inbox(wd, agent, "older")
    assert wd_user(wd, inbox) == user.json()["id"]
    lmtp(wd.stack, inbox.address, "from after")
    watcher.sweep(wd, wd.backend("receive").api)
    assert stored_subjects(inbox) == ["from after"]


# gap: the Sent copy survives WildDuck being down


def sent_copies(postern, inbox, message_id: str) -> int:
    row = WildDuckMailbox.get_by_id(inbox.id)
    listing = postern.backend("receive").api.received_since(row.user_id, row.sent_mailbox, None)
    return sum(1 for m in listing if m.message_id == message_id)


def test_sent_copy_is_due_while_wildduck_is_down_and_appended_once_when_it_returns(wd, agent):
    from postern.plugins.wildduck import sent as sent_folder

    inbox = make_inbox(wd, agent, "outage-sender")
    wd.stack.stop_wildduck()
    try:
        sent = send(wd, agent, inbox, {"to": ["carol@example.org"], "subject": "while down", "text": "hi"})
        assert sent["status"] == "captured"  # sent (captured here): it does not wait for the IMAP copy
        due = WildDuckSentDue.get_by_id(sent["id"])
        assert due.attempts == 1
        assert sent_folder.append_due(wd) == 0  # not yet due again; and WildDuck is down
    finally:
        wd.stack.start_wildduck()
    WildDuckSentDue.update(next_attempt_at=due.next_attempt_at.replace(year=2000)).execute()
    assert sent_folder.append_due(wd) == 1
    assert sent_folder.append_due(wd) == 0
    assert WildDuckSentDue.select().count() == 0
    assert sent_copies(wd, inbox, sent["message_id"]) == 1


def test_a_due_sent_copy_that_did_land_is_not_appended_again(wd, agent):
    """The upload succeeded but the process died before deleting its due row."""
    from postern.plugins.wildduck import sent as sent_folder

    inbox = make_inbox(wd, agent, "landed")
    sent = send(wd, agent, inbox, {"to": ["dave@example.org"], "subject": "landed", "text": "hi"})
    assert sent_copies(wd, inbox, sent["message_id"]) == 1
    WildDuckSentDue.create(message=sent["id"])
    assert sent_folder.append_due(wd) == 1
    assert sent_copies(wd, inbox, sent["message_id"]) == 1
    assert WildDuckSentDue.select().count() == 0


# gap: nothing half-made when provisioning fails after WildDuck made the user


def fail_after_create(monkeypatch, api, *, delete_fails=False):
    def broken(user):
        raise TemporaryFailure("WildDuck API answered 503 to GET /users", retry_after=5)

    monkeypatch.setattr(api, "mailboxes", broken)
    if delete_fails:
        monkeypatch.setattr(api, "delete_user", lambda user: broken(user))


def test_failure_after_the_user_was_made_deletes_it(wd, agent, monkeypatch):
    fail_after_create(monkeypatch, wd.backend("receive").api)
    client = falcon.testing.TestClient(create_app(wd))
    resp = client.simulate_post("/v1/inboxes", headers=auth(agent), json={"username": "undone"})
    assert resp.status_code == 503 and resp.json["error"]["code"] == "provisioning_failed"
    assert wd_api(wd, "GET", "/addresses/resolve/undone@acme.agents.localhost").status_code == 404
    assert Inbox.select().count() == 0 and WildDuckOrphan.select().count() == 0


def test_a_user_that_could_not_be_deleted_is_deleted_later(wd, agent, monkeypatch):
    api = wd.backend("receive").api
    fail_after_create(monkeypatch, api, delete_fails=True)
    client = falcon.testing.TestClient(create_app(wd))
    resp = client.simulate_post("/v1/inboxes", headers=auth(agent), json={"username": "stranded"})
    assert resp.status_code == 503
    [orphan] = WildDuckOrphan.select()
    found = wd_api(wd, "GET", "/addresses/resolve/stranded@acme.agents.localhost").json()
    assert (orphan.user_id, orphan.address) == (found["user"], "stranded@acme.agents.localhost")
    assert Inbox.select().count() == 0 and WildDuckMailbox.select().count() == 0
    monkeypatch.undo()

    watcher.sweep(wd, api)
    assert wd_api(wd, "GET", f"/users/{orphan.user_id}").status_code == 404
    assert WildDuckOrphan.select().count() == 0


def test_a_rollback_after_provisioning_while_wildduck_fails_leaves_an_orphan_to_delete(wd, agent, monkeypatch):
    """Provisioning succeeded, then the inbox's own transaction failed, and WildDuck does
    not answer the deletion: the user is recorded, and deleted by a later sweep."""
    from postern.core import inboxes

    api = wd.backend("receive").api

    def broken(*args, **kwargs):
        monkeypatch.setattr(api, "delete_user", lambda user: _unavailable())
        raise RuntimeError("audit store broke")

    monkeypatch.setattr(inboxes.webhook_events, "inbox_event", broken)
    client = falcon.testing.TestClient(create_app(wd))
    assert client.simulate_post("/v1/inboxes", headers=auth(agent), json={"username": "late"}).status_code == 500
    [orphan] = WildDuckOrphan.select()
    assert wd_api(wd, "GET", "/addresses/resolve/late@acme.agents.localhost").json()["user"] == orphan.user_id
    monkeypatch.undo()
    watcher.sweep(wd, api)
    assert wd_api(wd, "GET", f"/users/{orphan.user_id}").status_code == 404


def _unavailable():
    raise TemporaryFailure("WildDuck API unreachable (ConnectError)", retry_after=5)


def test_an_orphan_holding_the_address_is_replaced_not_reused(wd, agent, monkeypatch):
    api = wd.backend("receive").api
    fail_after_create(monkeypatch, api, delete_fails=True)
    client = falcon.testing.TestClient(create_app(wd))
    assert client.simulate_post("/v1/inboxes", headers=auth(agent), json={"username": "again"}).status_code == 503
    [orphan] = WildDuckOrphan.select()
    lmtp(wd.stack, "again@acme.agents.localhost", "meant for nobody")
    monkeypatch.undo()

    inbox = make_inbox(wd, agent, "again")
    assert wd_user(wd, inbox) != orphan.user_id
    assert wd_api(wd, "GET", f"/users/{orphan.user_id}").status_code == 404
    watcher.sweep(wd, api)
    assert stored_subjects(inbox) == [] and WildDuckOrphan.select().count() == 0


def test_deleting_an_inbox_while_wildduck_fails_keeps_both_sides(wd, agent, monkeypatch):
    inbox = make_inbox(wd, agent, "kept")
    user = wd_user(wd, inbox)
    api = wd.backend("receive").api
    fail_after_create(monkeypatch, api, delete_fails=True)
    client = falcon.testing.TestClient(create_app(wd))
    resp = client.simulate_delete(f"/v1/inboxes/{inbox.id}", headers=auth(agent))
    assert resp.status_code == 503 and resp.json["error"]["code"] == "deprovisioning_failed"
    assert Inbox.get_by_id(inbox.id) and WildDuckMailbox.get_by_id(inbox.id).user_id == user
    assert WildDuckOrphan.select().count() == 0  # rolled back with the deletion: the user is still in use
    monkeypatch.undo()
    assert client.simulate_delete(f"/v1/inboxes/{inbox.id}", headers=auth(agent)).status_code == 204
    assert wd_api(wd, "GET", f"/users/{user}").status_code == 404
