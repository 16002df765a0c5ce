"""The Python SDK against the real app: in process (no sockets) for the surface, and a
real HTTP server for retries."""

from __future__ import annotations

import http.server
import json
import threading

import pytest
from support.world import make_tenant

from postern.client import Postern, bootstrap, errors
from postern.core.mail.ingest import ingest


def client_for(transport, key: str) -> Postern:
    return Postern(api_key=key, base_url="http://postern.test", transport=transport)


def outside_mail(postern, to: str, subject: str, body: str = "hello", msgid: str | None = None) -> None:
    msgid = msgid or f"<{subject.replace(' ', '-')}@example.org>"
    raw = f"From: Ann <ann@example.org>\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: {msgid}\r\n\r\n{body}\r\n"
    ingest(postern, raw.encode(), "ann@example.org", [to])


def test_bootstrap_redeems_and_returns_an_authenticated_client(served):
    _, transport = served
    _, plaintext = make_tenant("acme").enrollment_key(max_mailboxes=3)
    client, enrollment = bootstrap.enrolled(
        enrollment_token=plaintext, agent_handle="support-bot", base_url="http://postern.test", transport=transport
    )
    assert client.api_key.startswith("pk_agent_") and client.api_key not in repr(client)
    assert (enrollment.agent_handle, enrollment.mailboxes_used, enrollment.mailboxes_max) == ("support-bot", 0, 3)
    assert client.api_key.startswith(enrollment.agent_key_prefix) and enrollment.expires_at.tzinfo is not None
    me = client.me()
    assert me.agent_id == enrollment.agent_id and me.key_prefix == enrollment.agent_key_prefix
    with pytest.raises(errors.InvalidRequest) as exc:
        bootstrap.enrolled(plaintext, "bad handle!", base_url="http://postern.test", transport=transport)
    assert (exc.value.status, exc.value.code) == (422, "invalid_field")
    with pytest.raises(errors.AuthenticationFailed):
        bootstrap.enrolled(plaintext[:-4] + "AAAA", "bot", base_url="http://postern.test", transport=transport)


def test_inboxes_create_list_pages_get_delete(served):
    _, transport = served
    client = client_for(transport, make_tenant("acme").agent_key(max_mailboxes=10).agent_key)
    made = [client.inboxes.create(f"box{i}") for i in range(5)]
    assert made[0].address == "box0@acme.agents.localhost"
    listed = list(client.inboxes.list(limit=2))  # three pages, fetched as iterated
    assert [i.id for i in listed] == [i.id for i in made]
    assert client.inboxes.get(made[1].id) == made[1]
    again = client.inboxes.create("other", client_id="job-7")
    assert client.inboxes.create("ignored", client_id="job-7").id == again.id  # idempotent by client_id
    client.inboxes.delete(made[0].id)
    with pytest.raises(errors.NotFound) as exc:
        client.inboxes.get(made[0].id)
    assert exc.value.status == 404 and exc.value.request_id


def test_receive_wait_read_reply_and_thread(served):
    postern, transport = served
    tenant = make_tenant("acme")
    client = client_for(transport, tenant.agent_key(max_mailboxes=5).agent_key)
    support, sales = client.inboxes.create("support"), client.inboxes.create("sales")

    empty = client.messages.wait(support.id, timeout=0)
    assert empty.timed_out and empty.messages == []
    outside_mail(postern, support.address, "Order 42", body="where is it? " * 50)
    got = client.messages.wait(support.id, after=empty.cursor, timeout=5)
    assert not got.timed_out and [m.subject for m in got.messages] == ["Order 42"]
    first = got.messages[0]
    assert first.sender.address == "ann@example.org" and first.text is None  # a summary

    full = client.messages.get(support.id, first.id, max_length=20)
    assert full.truncated and len(full.text) == 20 and full.headers

    sent = client.messages.send(sales.id, to=[support.address], subject="internal", text="hi")
    assert sent.status == "sent" and sent.direction == "outbound"
    reply = client.messages.reply(support.id, first.id, text="on its way")
    assert reply.subject == "Re: Order 42" and [p.address for p in reply.to] == ["ann@example.org"]
    thread = client.threads.get(support.id, first.thread_id)
    assert [m.id for m in thread.messages] == [first.id, reply.id]
    assert {t.id for t in client.threads.list(support.id)} >= {first.thread_id}
    assert [m.subject for m in client.messages.list(support.id, direction="inbound")] == ["internal", "Order 42"]

    link = client.messages.raw_link(support.id, first.id)
    assert b"Subject: Order 42" in client.download(link)
    with pytest.raises(errors.Gone):
        client.download(link)  # single use


def test_sends_are_idempotent_across_retries(served):
    _, transport = served
    client = client_for(transport, make_tenant("acme").agent_key().agent_key)
    box = client.inboxes.create("box")
    first = client.messages.send(box.id, to=["x@example.org"], text="once", idempotency_key="k-1")
    again = client.messages.send(box.id, to=["x@example.org"], text="once", idempotency_key="k-1")
    assert first.id == again.id
    fresh = client.messages.send(box.id, to=["x@example.org"], text="once")  # a key is made per call
    assert fresh.id != first.id
    with pytest.raises(errors.Conflict) as exc:
        client.messages.send(box.id, to=["x@example.org"], text="different", idempotency_key="k-1")
    assert exc.value.code == "idempotency_key_reused"


def test_errors_are_typed_from_the_envelope(served):
    postern, transport = served
    acme, other = make_tenant("acme"), make_tenant("other")
    reader = client_for(transport, acme.agent_key(scopes=("mailbox:read",)).agent_key)
    with pytest.raises(errors.PermissionDenied) as exc:
        reader.inboxes.create("nope")
    assert exc.value.code == "insufficient_scope"

    theirs = client_for(transport, other.agent_key().agent_key).inboxes.create("secret")
    mine = client_for(transport, acme.agent_key().agent_key)
    with pytest.raises(errors.NotFound):
        mine.messages.list(theirs.id).__next__()
    with pytest.raises(errors.InvalidRequest) as exc:
        mine.messages.send(mine.inboxes.create("box").id, to=["not an address"], text="x")
    assert exc.value.status == 422 and exc.value.code
    with pytest.raises(errors.AuthenticationFailed):
        client_for(transport, "pk_agent_" + "x" * 40).me()
    with pytest.raises(ValueError):
        mine.messages.wait(theirs.id, timeout=301)


class Flaky(http.server.BaseHTTPRequestHandler):
    """Answers 503 with Retry-After twice, then 200: a real server to retry against."""

    hits: list[str] = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.hits.append(self.headers.get("Authorization", ""))
        if len(self.hits) <= 2:
            body = json.dumps({"error": {"type": "unavailable_error", "code": "busy", "message": "later"}}).encode()
            self.send_response(503)
            self.send_header("Retry-After", "0")
        else:
            body = json.dumps({"agent_id": "agt_1", "agent_handle": "h", "customer_id": "c", "enrollment_id": "e",
                               "key_prefix": "pk_agent_ab", "scopes": [], "domains": [], "mailboxes_used": 0,
                               "mailboxes_max": 1, "expires_at": None}).encode()  # fmt: skip
            self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def flaky():
    Flaky.hits = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_503_is_retried_honouring_retry_after_then_gives_up(flaky):
    me = Postern(api_key="pk_agent_test", base_url=flaky).me()
    assert me.agent_id == "agt_1" and len(Flaky.hits) == 3 and set(Flaky.hits) == {"Bearer pk_agent_test"}
    Flaky.hits = []
    with pytest.raises(errors.Unavailable) as exc:
        Postern(api_key="k", base_url=flaky, max_retries=1).me()
    assert exc.value.status == 503 and exc.value.code == "busy" and exc.value.retry_after == 0
    assert len(Flaky.hits) == 2


def test_unreachable_server_is_a_connection_error():
    with pytest.raises(errors.ConnectionFailed):
        Postern(api_key="k", base_url="http://127.0.0.1:9", max_retries=0).me()


def test_environment_supplies_key_and_url(monkeypatch):
    monkeypatch.setenv("POSTERN_API_KEY", "pk_agent_env")
    monkeypatch.setenv("POSTERN_API_BASE_URL", "http://example.invalid:1234/")
    client = Postern()
    assert client.api_key == "pk_agent_env" and client.base_url == "http://example.invalid:1234"
