"""Webhooks end to end over real sockets: SMTP in, a supervised dispatcher out, and
dispatcher processes killed and run side by side."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import smtplib
import subprocess
import sys
import threading

import httpx
import pytest
import standardwebhooks
from support.receiver import Receiver
from support.server import Server, kill_tree, wait_for
from support.world import make_tenant

from postern.client import verify_webhook
from postern.core import migrations
from postern.core.db import database, open_database
from postern.core.mail.ingest import ingest
from postern.core.models import WebhookDelivery
from postern.core.runtime import build_postern
from postern.core.webhooks.manage import create_webhook

pytestmark = pytest.mark.slow
HOOK_ENV = {"POSTERN_WEBHOOKS_ALLOW_DESTINATIONS": "127.0.0.0/8"}


def test_smtp_mail_produces_one_signed_delivery(env, tmp_path, db_url):
    open_database(db_url)
    with database.connection_context():
        migrations.upgrade()
        enrolled = make_tenant("acme").agent_key(handle="support")
    # Exactly one attempt is asserted: one answered late on a loaded box must not time out.
    server = Server({**env, **HOOK_ENV, "POSTERN_WEBHOOKS_TIMEOUT_SECONDS": "10"}, tmp_path)
    headers = {"Authorization": f"Bearer {enrolled.agent_key}"}
    try:
        wait_for(lambda: (h := server.health()) and {"smtp", "webhooks"} <= {s["name"] for s in h["services"]})
        inbox = httpx.post(f"{server.url}/v1/inboxes", headers=headers, json={"username": "support"}).json()
        with Receiver() as receiver:
            resp = httpx.post(
                f"{server.url}/v1/webhooks",
                headers=headers,
                json={"url": receiver.url, "event_types": ["message.received"]},
            )
            assert resp.status_code == 201, resp.text
            secret = resp.json()["secret"]
            wait_for(lambda: _smtp_ready(server.smtp_port))
            with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=30) as smtp:
                smtp.sendmail("alice@example.org", [inbox["address"]], b"Subject: Order 42\r\n\r\nWhere is it?\r\n")
            [got] = receiver.wait_for(1)
            deliveries = f"{server.url}/v1/webhooks/{resp.json()['id']}/deliveries"

            def recorded():
                # The receiver has the request before the dispatcher has the answer and
                # records it: wait for the result, not for a fixed time.
                data = httpx.get(deliveries, headers=headers, timeout=30).json()["data"]
                return data if data and data[0]["status"] != "pending" else None

            log = wait_for(recorded)
            assert len(receiver.requests) == 1
        event = standardwebhooks.Webhook(secret).verify(got.body, got.headers)
        assert event == verify_webhook(got.body, got.headers, secret)
        assert event["type"] == "message.received" and event["data"]["subject"] == "Order 42"
        assert event["data"]["inbox_id"] == inbox["id"] and event["data"]["text"].strip() == "Where is it?"
        assert [(d["status"], d["attempts"], d["last_status_code"]) for d in log] == [("succeeded", 1, 200)]
        assert secret not in server.output()
    finally:
        kill_tree(server)


def _smtp_ready(port) -> bool:
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture
def queued(config, env, db):
    """A webhook to a slow receiver and a way to queue N message.received events."""
    config.webhooks.allow_destinations = ["127.0.0.0/8"]
    postern = build_postern(config)
    enrolled = make_tenant("acme").agent_key(handle="bot")
    from support.world import INFO

    from postern.core.auth import authenticate
    from postern.core.inboxes import create_inbox

    principal = authenticate(enrolled.agent_key, "agent", INFO)
    inbox = create_inbox(postern, principal, INFO, {"username": "bot"})[0]

    def queue(receiver, count):
        create_webhook(postern, principal, INFO, {"url": receiver.url, "event_types": ["message.received"]})
        for i in range(count):
            ingest(postern, f"Subject: n{i}\r\n\r\nbody {i}\r\n".encode(), "a@example.org", [inbox.address])

    return queue


def dispatcher(env, log=None, timeout: int = 1) -> subprocess.Popen:
    """``postern service run webhooks``; ``timeout``: its attempts' timeout in seconds."""
    full = {
        **os.environ,
        **env,
        **HOOK_ENV,
        "POSTERN_WEBHOOKS_TIMEOUT_SECONDS": str(timeout),
        "POSTERN_WEBHOOKS_CONCURRENCY": "2",
    }
    out = open(log, "w") if log else subprocess.DEVNULL  # noqa: SIM115 (closed with the process)
    return subprocess.Popen(
        [sys.executable, "-m", "postern", "service", "run", "webhooks"], env=full, stdout=out, stderr=subprocess.STDOUT
    )


def statuses() -> dict[str, int]:
    database.close()  # a fresh snapshot
    rows = list(WebhookDelivery.select(WebhookDelivery.status))
    found: dict[str, int] = {}
    for row in rows:
        found[row.status] = found.get(row.status, 0) + 1
    return found


def test_a_killed_dispatcher_loses_nothing_and_resumes_on_schedule(queued, env):
    # A 3 s timeout, well above the receiver's 0.3 s: an attempt that merely answered
    # late on a loaded machine would be repeated too, and this test counts repeats.
    with Receiver(delay=0.3) as receiver:
        queued(receiver, 12)
        first = dispatcher(env, timeout=3)
        try:
            receiver.wait_for(3, timeout=30)
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait()
        seen = len(receiver.requests)
        # Attempts the kill cut short still hold their lease: when it runs out, as the
        # claim stored it (claim time + 2 x timeout + 5 s).
        database.close()  # a fresh snapshot
        cut = [d for d in WebhookDelivery.select() if d.lease is not None]
        assert all(d.next_attempt_at - d.last_attempt_at == dt.timedelta(seconds=11) for d in cut)
        leases = {d.event_id: d.next_attempt_at.replace(tzinfo=dt.UTC).timestamp() for d in cut}
        second = dispatcher(env, timeout=3)
        try:
            wait_for(lambda: statuses() == {"succeeded": 12}, timeout=60)
        finally:
            second.terminate()
            second.wait(timeout=30)
    ids = [r.headers["webhook-id"] for r in receiver.requests]
    assert set(ids) == {d.event_id for d in WebhookDelivery.select()}  # nothing lost
    repeats = [i for i in set(ids) if ids.count(i) > 1]
    assert len(repeats) <= 2  # only the attempts in flight at the kill (concurrency 2)
    assert set(repeats) <= set(leases)  # only attempts cut by the kill are repeated
    for event_id in repeats:
        again = [r.wall for r in receiver.requests if r.headers["webhook-id"] == event_id][1]
        assert again >= leases[event_id]  # re-sent once its lease (2 x timeout + 5 s) ran out, not before
    rows = list(WebhookDelivery.select())
    # A claim counts the attempt before the request goes out, so a kill between the two
    # leaves one attempt that never reached the receiver; only claims in flight can be so.
    in_flight = {r.event_id for r in rows if r.attempts == 2}
    assert all(r.attempts in (1, 2) for r in rows)
    assert len(in_flight) <= 2 and set(repeats) <= in_flight  # concurrency 2
    assert all(r.attempts - ids.count(r.event_id) in (0, 1) for r in rows)
    assert seen >= 3 and len(ids) == 12 + len(repeats)
    for request in receiver.requests:
        assert json.loads(request.body)["type"] == "message.received"


def test_two_dispatcher_processes_never_send_an_attempt_twice(queued, env, tmp_path):
    logs = [tmp_path / "one.log", tmp_path / "two.log"]
    # The receiver holds its first answers until 4 attempts are in flight at once: with
    # 2 slots each, both dispatchers then hold a share, whichever wakes first. (Left to
    # race, one dispatcher can take all 30.) The timeout outlasts that hold.
    gate = threading.Event()
    with Receiver(delay=0.05, gate=gate) as receiver:
        procs = [dispatcher(env, log, timeout=60) for log in logs]
        try:
            wait_for(lambda: all("webhook dispatcher running" in log.read_text() for log in logs), timeout=60)
            queued(receiver, 30)
            receiver.wait_for(4, timeout=60)
            gate.set()
            wait_for(lambda: statuses() == {"succeeded": 30}, timeout=60)
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(timeout=30)
    ids = [r.headers["webhook-id"] for r in receiver.requests]
    assert len(ids) == len(set(ids)) == 30
    assert {r.attempts for r in WebhookDelivery.select()} == {1}
    sent = [log.read_text().count("-> succeeded") for log in logs]
    assert sum(sent) == 30 and min(sent) > 0, sent  # both took a share
