"""Mail over real sockets: smtplib into the supervised SMTP listener, HTTP out of a
two-worker API, waiters woken across processes."""

from __future__ import annotations

import hashlib
import smtplib
import socket
import threading
import time
from email.message import EmailMessage

import httpx
import pytest
from support.server import seeding, wait_for, workers_holding_my_connections
from support.world import make_tenant

from postern.core.db import database, open_database
from postern.core.doorbell import SAFETY_RECHECK
from postern.core.models import AuditEvent, Message

pytestmark = pytest.mark.slow
MAX_BYTES = 200_000


@pytest.fixture
def live(serve, db_url):
    with seeding(db_url):
        enrolled = make_tenant("acme").agent_key(handle="support", max_mailboxes=5)
    server = serve(env={"POSTERN_MAIL_MAX_MESSAGE_BYTES": str(MAX_BYTES)})
    server.key = enrolled.agent_key
    return server


def api(server, method, path, **kwargs):
    headers = {"Authorization": f"Bearer {server.key}"}
    return httpx.request(method, f"{server.url}{path}", headers=headers, timeout=60, **kwargs)


def make_inbox(server, username):
    resp = api(server, "POST", "/v1/inboxes", json={"username": username})
    assert resp.status_code == 201, resp.text
    return resp.json()


def smtp(server) -> smtplib.SMTP:
    return smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=30)


def messages(server, inbox):
    return api(server, "GET", f"/v1/inboxes/{inbox['id']}/messages").json()["data"]


def test_receive_thread_and_attachments(live):
    inbox = make_inbox(live, "support")
    first = EmailMessage()
    first["From"], first["To"], first["Subject"] = "Alice <alice@example.org>", inbox["address"], "Order 42"
    first["Message-ID"] = "<order-42@example.org>"
    first.set_content("Where is my order?")
    blob = bytes(range(256)) * 300
    first.add_attachment(blob, maintype="application", subtype="octet-stream", filename="../../etc/passwd\x07.bin")
    with smtp(live) as client:
        refused = client.send_message(first)
    assert refused == {}

    reply = EmailMessage()
    reply["From"], reply["To"], reply["Subject"] = "alice@example.org", inbox["address"], "Re: Order 42"
    reply["In-Reply-To"] = reply["References"] = "<order-42@example.org>"
    reply.set_content("Any news?")
    unrelated = EmailMessage()
    unrelated["From"], unrelated["To"], unrelated["Subject"] = "bob@example.org", inbox["address"], "Hello"
    unrelated.set_content("Different thread")
    with smtp(live) as client:
        client.send_message(reply)
        client.send_message(unrelated)

    listed = messages(live, inbox)
    assert [m["subject"] for m in listed] == ["Hello", "Re: Order 42", "Order 42"]  # newest first
    assert listed[1]["thread_id"] == listed[2]["thread_id"] != listed[0]["thread_id"]
    detail = api(live, "GET", f"/v1/inboxes/{inbox['id']}/messages/{listed[2]['id']}").json()
    assert detail["from"] == {"address": "alice@example.org", "name": "Alice"}
    assert detail["text"].strip() == "Where is my order?"
    [att] = detail["attachments"]
    assert att["filename"] == "passwd_.bin" and att["size"] == len(blob)
    assert att["sha256"] == hashlib.sha256(blob).hexdigest()
    thread = api(live, "GET", f"/v1/inboxes/{inbox['id']}/threads/{listed[2]['thread_id']}").json()
    assert thread["message_count"] == 2 and [m["subject"] for m in thread["messages"]] == ["Order 42", "Re: Order 42"]
    trimmed = api(live, "GET", f"/v1/inboxes/{inbox['id']}/messages/{listed[2]['id']}", params={"max_length": 5})
    assert trimmed.json()["text"] == "Where" and trimmed.json()["truncated"] is True


def test_one_message_to_two_inboxes_is_delivered_to_each(live):
    a, b = make_inbox(live, "a"), make_inbox(live, "b")
    with smtp(live) as client:
        client.sendmail("x@example.org", [a["address"], b["address"]], b"Subject: both\r\n\r\nhi\r\n")
    assert [m["subject"] for m in messages(live, a)] == ["both"]
    assert [m["subject"] for m in messages(live, b)] == ["both"]


def test_unknown_recipient_oversize_and_mime_bomb_are_refused(live):
    inbox = make_inbox(live, "guard")
    with smtp(live) as client:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            client.sendmail("x@example.org", ["nobody@acme.agents.localhost"], b"Subject: x\r\n\r\nx\r\n")
        assert refused.value.recipients["nobody@acme.agents.localhost"][0] == 550
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            client.sendmail("x@example.org", ["relay@elsewhere.example"], b"Subject: x\r\n\r\nx\r\n")
    big = b"Subject: big\r\n\r\n" + b"x" * (MAX_BYTES + 10) + b"\r\n"
    with smtp(live) as client:
        with pytest.raises((smtplib.SMTPDataError, smtplib.SMTPSenderRefused)) as too_big:
            client.sendmail("x@example.org", [inbox["address"]], big)
        assert too_big.value.smtp_code == 552
    bomb = _nested_multipart(40)
    with smtp(live) as client:
        with pytest.raises(smtplib.SMTPDataError) as refused_bomb:
            client.sendmail("x@example.org", [inbox["address"]], bomb)
        assert refused_bomb.value.smtp_code == 554 and b"nesting" in refused_bomb.value.smtp_error
    assert messages(live, inbox) == []


def _nested_multipart(depth: int) -> bytes:
    lines = ["Subject: bomb", "MIME-Version: 1.0"]
    for level in range(depth):
        lines += [f'Content-Type: multipart/mixed; boundary="b{level}"', "", f"--b{level}"]
    lines += ["Content-Type: text/plain", "", "boom"]
    for level in reversed(range(depth)):
        lines += [f"--b{level}--"]
    return "\r\n".join(lines).encode() + b"\r\n"


def test_smtp_smuggling_stays_one_message(live):
    inbox = make_inbox(live, "smuggle")
    addr = inbox["address"].encode()
    payload = (
        b"Subject: outer\r\n\r\nfirst part\r\n"
        b"\n.\n"  # bare-LF end-of-data trick
        b"MAIL FROM:<evil@example.org>\r\nRCPT TO:<" + addr + b">\r\nDATA\r\n"
        b"Subject: smuggled\r\n\r\nsecond\r\n"
        b"\r.\r"  # bare-CR variant
        b"tail\r\n.\r\n"
    )
    with socket.create_connection(("127.0.0.1", live.smtp_port), timeout=10) as sock:
        f = sock.makefile("rwb")
        f.readline()
        for line in (b"EHLO test\r\n",):
            f.write(line), f.flush()
            while not f.readline().startswith(b"250 "):
                pass
        for line in (b"MAIL FROM:<a@example.org>\r\n", b"RCPT TO:<" + addr + b">\r\n", b"DATA\r\n"):
            f.write(line), f.flush()
            f.readline()
        f.write(payload), f.flush()
        assert f.readline().startswith(b"250 ")
        f.write(b"QUIT\r\n"), f.flush()
    stored = messages(live, inbox)
    assert [m["subject"] for m in stored] == ["outer"]
    detail = api(live, "GET", f"/v1/inboxes/{inbox['id']}/messages/{stored[0]['id']}").json()
    assert "smuggled" in detail["text"] and "tail" in detail["text"]


def until_waits_opened(inbox_id: str, count: int) -> None:
    """Until ``count`` waits on the inbox have begun: a wait commits its audit row
    (resolving its cursor) before it parks, so mail sent after this wakes it."""

    def opened():
        with database.connection_context():
            where = (AuditEvent.action == "message.wait") & (AuditEvent.target == inbox_id)
            return AuditEvent.select().where(where).count() == count

    wait_for(opened, timeout=60)


def test_waiters_in_every_worker_wake_when_mail_arrives_over_smtp(live):
    inbox = make_inbox(live, "waiter")
    idle = api(live, "GET", f"/v1/inboxes/{inbox['id']}/messages/wait", params={"timeout": 0}).json()
    assert idle == {"messages": [], "cursor": "0", "timed_out": True}
    results, threads = [], []

    def wait():
        resp = api(live, "GET", f"/v1/inboxes/{inbox['id']}/messages/wait", params={"after": "0", "timeout": 60})
        results.append((resp.json(), time.monotonic()))

    # Which worker accepts a connection is the kernel's choice, and it may give one worker
    # all of them: open waits in batches until both workers hold one, every wait parked.
    deadline = time.monotonic() + 60
    while True:
        batch = [threading.Thread(target=wait) for _ in range(4)]
        for t in batch:
            t.start()
        threads += batch
        until_waits_opened(inbox["id"], 1 + len(threads))
        holders = workers_holding_my_connections(live)
        if len(holders) == 2:
            break
        assert time.monotonic() < deadline, f"{len(threads)} waits, all held by workers {holders}"
    sent_at = time.monotonic()
    with smtp(live) as client:
        client.sendmail("x@example.org", [inbox["address"]], b"Subject: ding\r\n\r\ndong\r\n")
    for t in threads:
        t.join(70)
    assert len(results) == len(threads)
    for body, _ in results:
        assert body["timed_out"] is False and [m["subject"] for m in body["messages"]] == ["ding"]
        assert body["cursor"] == body["messages"][0]["cursor"] == "1"
    # Woken by the doorbell, not by the 15 s safety re-check (latency figures: bench/).
    assert max(done for _, done in results) - sent_at < SAFETY_RECHECK / 2
    again = api(live, "GET", f"/v1/inboxes/{inbox['id']}/messages/wait", params={"after": "1", "timeout": 1}).json()
    assert again == {"messages": [], "cursor": "1", "timed_out": True}
    log = live.output()
    workers = {
        line.split("[")[1].split("]")[0] for line in log.splitlines() if "/messages/wait" in line and " 200 " in line
    }
    assert len(workers) == 2, f"waits were served by {workers}; expected both workers"


def test_a_wait_whose_client_disconnects_is_released_at_once(live):
    inbox = make_inbox(live, "leaver")
    path = f"/v1/inboxes/{inbox['id']}/messages/wait?timeout=120"
    clients = []
    for _ in range(4):  # spread over both workers
        sock = socket.create_connection(("127.0.0.1", live.port), timeout=10)
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {live.key}\r\n\r\n".encode())
        clients.append(sock)
    until_waits_opened(inbox["id"], 4)  # every wait parked
    for sock in clients:
        sock.close()
    wait_for(lambda: live.output().count(f"wait on {inbox['id']} ended early: the client disconnected") == 4, 20)
    # A wait that stays connected is not cut short by its neighbours leaving, and still wakes.
    result = {}
    waiter = threading.Thread(
        target=lambda: result.update(api(live, "GET", path.split("?")[0], params={"timeout": 60}).json())
    )
    waiter.start()
    # Parked before the mail comes: without ``after`` it waits for mail newer than its start.
    until_waits_opened(inbox["id"], 5)
    with smtp(live) as client:
        client.sendmail("x@example.org", [inbox["address"]], b"Subject: still here\r\n\r\nyes\r\n")
    waiter.join(70)
    assert [m["subject"] for m in result["messages"]] == ["still here"]


def test_mail_is_stored_before_250(live, db_url):
    inbox = make_inbox(live, "durable")
    with smtp(live) as client:
        client.sendmail("x@example.org", [inbox["address"]], b"Subject: sync\r\n\r\nnow\r\n")
    # The 250 has been read: the row must already be committed and visible to anyone.
    open_database(db_url)
    with database.connection_context():
        assert Message.select().where(Message.inbox == inbox["id"]).count() == 1


def test_outside_mail_answered_over_http_lands_in_threads(live):
    a, b = make_inbox(live, "desk"), make_inbox(live, "colleague")
    original = EmailMessage()
    original["From"], original["To"], original["Subject"] = "carol@example.org", a["address"], "Invoice 7"
    original["Message-ID"] = "<inv-7@example.org>"
    original.set_content("Please confirm.")
    with smtp(live) as client:
        client.send_message(original)
    [inbound] = messages(live, a)
    # A answers the outside sender and copies B, who is served by the same Postern.
    reply = api(
        live,
        "POST",
        f"/v1/inboxes/{a['id']}/messages/{inbound['id']}/reply",
        json={"text": "Confirmed.", "cc": [b["address"]]},
    )
    assert reply.status_code == 201 and reply.json()["status"] == "captured"  # carol is outside: captured
    [copy] = messages(live, b)
    assert copy["subject"] == "Re: Invoice 7" and copy["from"]["address"] == a["address"]
    # B answers all: A receives it in the original thread.
    answer = api(
        live, "POST", f"/v1/inboxes/{b['id']}/messages/{copy['id']}/reply", json={"text": "Noted.", "reply_all": True}
    )
    assert answer.status_code == 201, answer.text
    inbound_a = [m for m in messages(live, a) if m["direction"] == "inbound"]
    assert [m["subject"] for m in inbound_a] == ["Re: Invoice 7", "Invoice 7"]
    assert inbound_a[0]["thread_id"] == inbound_a[1]["thread_id"] == inbound["thread_id"]
