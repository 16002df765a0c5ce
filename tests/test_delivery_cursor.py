"""Delivery cursors (docs/mail.md): a wait without ``after`` returns every message this
agent has not been given yet, each once. In process against the real app and database
for the semantics; a real ``postern serve`` with mail over SMTP for racing waits across
workers and for a restart."""

from __future__ import annotations

import datetime as dt
import smtplib
import socket
import threading
import time
from email.message import EmailMessage

import httpx
import pytest
from support.server import Server, kill_tree, wait_for
from support.world import INFO, make_tenant

from postern.client import Postern
from postern.core import enrollment, migrations
from postern.core.db import database, open_database
from postern.core.mail import cursors, reading
from postern.core.mail.ingest import ingest
from postern.core.models import DeliveryCursor, Inbox

HOUR = dt.timedelta(hours=1)


def two_agents(max_mailboxes=5) -> tuple[str, str]:
    """Two agents (handles) under one enrollment key: they share its inboxes."""
    _, plaintext = make_tenant("acme").enrollment_key(max_mailboxes=max_mailboxes)
    return (
        enrollment.redeem(INFO, plaintext, "first", agent_key_ttl=HOUR).agent_key,
        enrollment.redeem(INFO, plaintext, "second", agent_key_ttl=HOUR).agent_key,
    )


def client_for(transport, key: str) -> Postern:
    return Postern(api_key=key, base_url="http://postern.test", transport=transport)


def outside_mail(postern, to: str, subject: str) -> None:
    raw = f"From: Ann <ann@example.org>\r\nTo: {to}\r\nSubject: {subject}\r\n\r\nhello\r\n"
    ingest(postern, raw.encode(), "ann@example.org", [to])


def subjects(result) -> list[str]:
    return [m.subject for m in result.messages]


def test_mail_before_the_first_wait_is_returned_by_it(served):
    postern, transport = served
    client = client_for(transport, two_agents()[0])
    inbox = client.inboxes.create("signup")
    assert inbox.cursor == "0"
    outside_mail(postern, inbox.address, "Your code is 123456")  # before any wait
    got = client.messages.wait(inbox.id, timeout=0)
    assert subjects(got) == ["Your code is 123456"] and not got.timed_out
    assert client.messages.wait(inbox.id, timeout=0).messages == []  # given once


def test_mail_between_two_waits_is_returned_by_the_second_only(served):
    postern, transport = served
    client = client_for(transport, two_agents()[0])
    inbox = client.inboxes.create("signup")
    outside_mail(postern, inbox.address, "one")
    first = client.messages.wait(inbox.id, timeout=0)
    outside_mail(postern, inbox.address, "two")
    outside_mail(postern, inbox.address, "three")
    second = client.messages.wait(inbox.id, timeout=0)
    assert subjects(first) == ["one"] and subjects(second) == ["two", "three"]
    assert int(second.cursor) > int(first.cursor)
    again = client.messages.wait(inbox.id, timeout=0)
    assert again.timed_out and again.messages == [] and again.cursor == second.cursor


def test_two_agents_on_one_inbox_each_get_every_message_once(served):
    postern, transport = served
    first_key, second_key = two_agents()
    first, second = client_for(transport, first_key), client_for(transport, second_key)
    inbox = first.inboxes.create("shared")
    outside_mail(postern, inbox.address, "a")
    assert subjects(first.messages.wait(inbox.id, timeout=0)) == ["a"]
    outside_mail(postern, inbox.address, "b")
    assert subjects(second.messages.wait(inbox.id, timeout=0)) == ["a", "b"]  # its own cursor
    assert subjects(first.messages.wait(inbox.id, timeout=0)) == ["b"]
    assert first.messages.wait(inbox.id, timeout=0).messages == []
    assert second.messages.wait(inbox.id, timeout=0).messages == []


def test_an_explicit_cursor_works_as_before_and_moves_no_stored_cursor(served):
    postern, transport = served
    client = client_for(transport, two_agents()[0])
    inbox = client.inboxes.create("signup")
    outside_mail(postern, inbox.address, "one")
    outside_mail(postern, inbox.address, "two")
    peek = client.messages.wait(inbox.id, after="1", timeout=0)
    assert subjects(peek) == ["two"] and peek.cursor == "2"
    assert subjects(client.messages.wait(inbox.id, after="0", timeout=0)) == ["one", "two"]  # again: nothing moved
    taken = client.messages.wait(inbox.id, timeout=0)
    assert subjects(taken) == ["one", "two"]
    assert subjects(client.messages.wait(inbox.id, after="0", timeout=0)) == ["one", "two"]  # still re-readable
    assert client.messages.wait(inbox.id, timeout=0).messages == []


def test_listing_and_reading_never_move_the_cursor(served):
    postern, transport = served
    client = client_for(transport, two_agents()[0])
    inbox = client.inboxes.create("signup")
    outside_mail(postern, inbox.address, "look")
    listed = list(client.messages.list(inbox.id))
    client.messages.get(inbox.id, listed[0].id)
    assert [m.subject for m in listed] == ["look"]
    assert subjects(client.messages.wait(inbox.id, timeout=0)) == ["look"]


def test_a_repeated_create_answers_where_the_agent_cursor_stands(served):
    postern, transport = served
    client = client_for(transport, two_agents()[0])
    inbox = client.inboxes.create("signup", client_id="signup-1")
    outside_mail(postern, inbox.address, "one")
    taken = client.messages.wait(inbox.id, timeout=0)
    again = client.inboxes.create("signup", client_id="signup-1")
    assert again.id == inbox.id and again.cursor == taken.cursor == "1"


def test_deleting_an_inbox_deletes_its_cursors(served):
    postern, transport = served
    client = client_for(transport, two_agents()[0])
    inbox = client.inboxes.create("gone")
    outside_mail(postern, inbox.address, "one")
    client.messages.wait(inbox.id, timeout=0)
    assert DeliveryCursor.select().where(DeliveryCursor.inbox == inbox.id).count() == 1
    client.inboxes.delete(inbox.id)
    assert DeliveryCursor.select().where(DeliveryCursor.inbox == inbox.id).count() == 0


def test_racing_claims_hand_out_every_message_exactly_once(served):
    """Threads with their own database connections play waits of one agent: read from
    the stored cursor, claim by compare-and-swap, keep what they won."""
    postern, transport = served
    key = two_agents()[0]
    client = client_for(transport, key)
    inbox = client.inboxes.create("race")
    agent_id = Inbox.get_by_id(inbox.id).agent_id
    total, threads_n = 60, 6
    handed: list[list[str]] = [[] for _ in range(threads_n)]
    lost = [0] * threads_n
    done = threading.Event()
    errors = []
    barrier = threading.Barrier(threads_n + 1)

    def waiter(n):
        try:
            with database.connection_context():
                barrier.wait()
                while not done.is_set() or cursors.position(agent_id, inbox.id) < total:
                    old = cursors.position(agent_id, inbox.id)
                    views, new = reading.inbound_after(inbox.id, old, 7)
                    if new == old:
                        continue
                    won, _ = cursors.claim(agent_id, inbox.id, old, new)
                    if won:
                        handed[n].extend(v.message.subject for v in views)
                    else:
                        lost[n] += 1
        except Exception as exc:  # asserted on below
            errors.append(exc)

    threads = [threading.Thread(target=waiter, args=(n,)) for n in range(threads_n)]
    for t in threads:
        t.start()
    barrier.wait()
    for i in range(total):
        outside_mail(postern, inbox.address, f"m{i:02d}")
    done.set()
    for t in threads:
        t.join(120)
    assert errors == []
    everything = [s for h in handed for s in h]
    assert sorted(everything) == [f"m{i:02d}" for i in range(total)]  # none twice, none missed
    assert sum(lost) > 0, "the threads never raced: the test proves nothing"
    assert cursors.position(agent_id, inbox.id) == total


# A real server: waits racing across API workers, and a restart.


@pytest.fixture
def live(env, tmp_path, db_url):
    open_database(db_url)
    with database.connection_context():
        migrations.upgrade()
        key = make_tenant("acme").agent_key(handle="support", max_mailboxes=5).agent_key
    server = Server({**env, "POSTERN_SERVER_WORKERS": "2"}, tmp_path)
    server.key = key
    wait_for(lambda: (h := server.health()) and any(s["name"] == "smtp" for s in h["services"]))
    wait_for(lambda: smtp_ready(server.smtp_port))
    yield server
    kill_tree(server)


def smtp_ready(port) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def smtp_send(port: int, to: str | list[str], subject: str) -> None:
    msg = EmailMessage()
    to = ", ".join(to) if isinstance(to, list) else to
    msg["From"], msg["To"], msg["Subject"] = "Ann <ann@example.org>", to, subject
    msg.set_content("hello")
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        smtp.send_message(msg)


@pytest.mark.slow
def test_waits_racing_over_http_return_nothing_twice_and_miss_nothing(live):
    total, waiters_n = 40, 6
    with Postern(api_key=live.key, base_url=live.url) as client:
        inbox = client.inboxes.create("race")
    got: list[list[str]] = [[] for _ in range(waiters_n)]
    errors = []

    def waiter(n):
        try:
            with Postern(api_key=live.key, base_url=live.url) as client:
                while sum(len(g) for g in got) < total:
                    got[n].extend(m.subject for m in client.messages.wait(inbox.id, timeout=2).messages)
        except Exception as exc:  # asserted on below
            errors.append(exc)

    threads = [threading.Thread(target=waiter, args=(n,)) for n in range(waiters_n)]
    for t in threads:
        t.start()
    for i in range(total):
        smtp_send(live.smtp_port, inbox.address, f"m{i:02d}")
    for t in threads:
        t.join(120)
    assert errors == []
    everything = [s for g in got for s in g]
    assert sorted(everything) == [f"m{i:02d}" for i in range(total)]  # none twice, none missed
    assert sum(1 for g in got if g) >= 2, "one waiter took everything: no race happened"


@pytest.mark.slow
def test_the_cursor_survives_a_restart(live):
    with Postern(api_key=live.key, base_url=live.url) as client:
        inbox = client.inboxes.create("restart")
        smtp_send(live.smtp_port, inbox.address, "before the first wait")
        assert subjects(client.messages.wait(inbox.id, timeout=10)) == ["before the first wait"]
        smtp_send(live.smtp_port, inbox.address, "before the restart")
    assert live.stop() == 0
    live.start()
    wait_for(lambda: (h := live.health()) and any(s["name"] == "smtp" for s in h["services"]))
    wait_for(lambda: smtp_ready(live.smtp_port))
    with Postern(api_key=live.key, base_url=live.url) as client:
        assert subjects(client.messages.wait(inbox.id, timeout=10)) == ["before the restart"]
        smtp_send(live.smtp_port, inbox.address, "after the restart")
        assert subjects(client.messages.wait(inbox.id, timeout=10)) == ["after the restart"]
        assert client.messages.wait(inbox.id, timeout=0).messages == []


@pytest.mark.slow
def test_a_wait_parked_before_the_mail_returns_it_and_moves_the_cursor(live):
    with Postern(api_key=live.key, base_url=live.url) as client:
        inbox = client.inboxes.create("parked")
    sender = threading.Timer(1.0, smtp_send, (live.smtp_port, inbox.address, "late"))
    sender.start()
    resp = httpx.get(
        f"{live.url}/v1/inboxes/{inbox.id}/messages/wait",
        params={"timeout": 30},
        headers={"Authorization": f"Bearer {live.key}"},
        timeout=60,
    )
    sender.join()
    assert resp.status_code == 200 and [m["subject"] for m in resp.json()["messages"]] == ["late"]
    with Postern(api_key=live.key, base_url=live.url) as client:
        assert client.messages.wait(inbox.id, timeout=0).messages == []


@pytest.mark.slow
def test_one_message_to_many_inboxes_wakes_each_wait_with_its_own_inbox_copy(live):
    """One ring wakes the waits of every recipient inbox at once, and a worker answers
    them from one batched read (core/readbatch.py): each wait still gets exactly its own
    inbox's copy, whether it waits on its delivery cursor or on ``after``."""
    with Postern(api_key=live.key, base_url=live.url) as client:
        inboxes = [client.inboxes.create(f"fan{n}") for n in range(5)]
    answers: dict[tuple[str, str], object] = {}

    def wait(inbox_id: str, after: str | None) -> None:
        params = {"timeout": 30, **({"after": after} if after is not None else {})}
        answers[(inbox_id, after or "cursor")] = httpx.get(
            f"{live.url}/v1/inboxes/{inbox_id}/messages/wait",
            params=params,
            headers={"Authorization": f"Bearer {live.key}"},
            timeout=60,
        )

    threads = [threading.Thread(target=wait, args=(i.id, a)) for i in inboxes for a in (None, "0")]
    for t in threads:
        t.start()
    time.sleep(1.5)  # parked, in both workers
    smtp_send(live.smtp_port, [i.address for i in inboxes], "to all")
    for t in threads:
        t.join(60)
    assert len(answers) == 10
    for (inbox_id, _), resp in answers.items():
        assert resp.status_code == 200
        messages = resp.json()["messages"]
        assert [(m["subject"], m["inbox_id"]) for m in messages] == [("to all", inbox_id)]
