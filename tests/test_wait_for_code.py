"""``wait_for_code`` (docs/mail.md, "Waiting for a code"): the code or link of each
message with one, handed to an agent once, oldest first, optionally only from one
sender domain. In process against the real app and database for the semantics and the
race; through the real MCP client against a real ``postern serve`` with mail over SMTP."""

from __future__ import annotations

import asyncio
import datetime as dt
import smtplib
import threading
from email.message import EmailMessage

import httpx
import pytest
import test_mcp
from support.world import INFO, make_tenant
from test_mcp import http, ok

from postern.client import Postern, errors
from postern.core import enrollment
from postern.core.mail.ingest import ingest

live = test_mcp.live


def agent_client(transport, tenant="acme", handle="bot") -> Postern:
    key = make_tenant(tenant).agent_key(handle=handle, max_mailboxes=5).agent_key
    client = Postern(api_key=key, base_url="http://postern.test", transport=transport)
    client.test_key = key
    return client


def mail(postern, to: str, body: str, sender: str = "noreply@example.org", subject: str = "hello") -> str:
    raw = f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\n\r\n{body}\r\n"
    ingest(postern, raw.encode(), sender, [to])
    return body


def code_mail(postern, to: str, code: str, sender: str = "noreply@example.org") -> None:
    mail(postern, to, f"Your verification code is {code}. It expires in 10 minutes.", sender)


def test_a_code_that_came_before_the_call_is_returned_once(served):
    postern, transport = served
    client = agent_client(transport)
    inbox = client.inboxes.create("signup")
    code_mail(postern, inbox.address, "482913", sender="Shop <noreply@shop.example>")
    got = client.messages.wait_for_code(inbox.id, timeout=0)
    assert not got.timed_out and got.code == "482913" and got.link is None
    assert got.sender == "noreply@shop.example" and got.inbox_id == inbox.id
    assert got.message_id == next(iter(client.messages.list(inbox.id))).id and got.received_at is not None
    again = client.messages.wait_for_code(inbox.id, timeout=0)
    assert again.timed_out and again.message_id is None and again.code is None


def test_mail_without_a_code_is_skipped_and_the_next_coded_one_returned(served):
    postern, transport = served
    client = agent_client(transport)
    inbox = client.inboxes.create("signup")
    mail(postern, inbox.address, "Welcome aboard! Nothing to type here.")
    mail(postern, inbox.address, "Confirm your address: https://app.example.org/verify/abc123", subject="Verify")
    code_mail(postern, inbox.address, "771204")
    first = client.messages.wait_for_code(inbox.id, timeout=0)
    assert first.link == "https://app.example.org/verify/abc123" and first.code is None
    assert client.messages.wait_for_code(inbox.id, timeout=0).code == "771204"
    # Independent of the delivery cursor: wait_for_email still hands over all three.
    assert len(client.messages.wait(inbox.id, timeout=0).messages) == 3


def test_a_code_arriving_during_the_wait_wakes_it(served):
    postern, transport = served
    client = agent_client(transport)
    inbox = client.inboxes.create("signup")
    timer = threading.Timer(0.5, code_mail, (postern, inbox.address, "550011"))
    timer.start()
    got = client.messages.wait_for_code(inbox.id, timeout=20)
    timer.join()
    assert got.code == "550011" and not got.timed_out


def test_from_domain_takes_the_domain_and_its_subdomains_only(served):
    postern, transport = served
    client = agent_client(transport)
    inbox = client.inboxes.create("signup")
    code_mail(postern, inbox.address, "111111", sender="x@notgithub.com")
    code_mail(postern, inbox.address, "222222", sender="noreply@mail.GitHub.com")
    code_mail(postern, inbox.address, "333333", sender="noreply@github.com")
    assert client.messages.wait_for_code(inbox.id, from_domain="github.com", timeout=0).code == "222222"
    assert client.messages.wait_for_code(inbox.id, from_domain="GitHub.com.", timeout=0).code == "333333"
    assert client.messages.wait_for_code(inbox.id, from_domain="github.com", timeout=0).timed_out
    # The mail the filter passed over is still there for an unfiltered call.
    assert client.messages.wait_for_code(inbox.id, timeout=0).code == "111111"
    assert client.messages.wait_for_code(inbox.id, timeout=0).timed_out


def test_two_racing_calls_never_return_the_same_message(served):
    postern, transport = served
    client = agent_client(transport)
    inbox = client.inboxes.create("signup")
    results = []

    def wait():
        results.append(client.messages.wait_for_code(inbox.id, timeout=30))

    waiters = [threading.Thread(target=wait) for _ in range(2)]
    for waiter in waiters:
        waiter.start()
    code_mail(postern, inbox.address, "900001")
    code_mail(postern, inbox.address, "900002")
    for waiter in waiters:
        waiter.join()
    assert sorted(r.code for r in results) == ["900001", "900002"]
    assert len({r.message_id for r in results}) == 2


def test_each_agent_gets_each_code_once(served):
    postern, transport = served
    _, plaintext = make_tenant("acme").enrollment_key(max_mailboxes=5)
    first, second = (
        Postern(
            api_key=enrollment.redeem(INFO, plaintext, handle, agent_key_ttl=dt.timedelta(hours=1)).agent_key,
            base_url="http://postern.test",
            transport=transport,
        )
        for handle in ("first", "second")
    )
    inbox = first.inboxes.create("shared")
    code_mail(postern, inbox.address, "424242")
    assert first.messages.wait_for_code(inbox.id, timeout=0).code == "424242"
    assert second.messages.wait_for_code(inbox.id, timeout=0).code == "424242"  # its own hand-overs
    assert first.messages.wait_for_code(inbox.id, timeout=0).timed_out


def test_another_tenants_inbox_is_not_found_and_bad_input_is_refused(served):
    postern, transport = served
    mine = agent_client(transport)
    theirs = agent_client(transport, tenant="other", handle="them")
    private = theirs.inboxes.create("private")
    code_mail(postern, private.address, "123123")
    with pytest.raises(errors.NotFound):
        mine.messages.wait_for_code(private.id, timeout=0)
    inbox = mine.inboxes.create("signup")
    for bad in ("exa mple.com", "under_score.com", "-x.com", "a" * 300):
        with pytest.raises(errors.InvalidRequest) as caught:
            mine.messages.wait_for_code(inbox.id, from_domain=bad, timeout=0)
        assert "from_domain" in str(caught.value)
    with httpx.Client(transport=transport, base_url="http://postern.test") as raw:
        response = raw.get(
            f"/v1/inboxes/{inbox.id}/codes/wait",
            params={"timeout": "301"},
            headers={"Authorization": f"Bearer {mine.test_key}"},
        )
    assert response.status_code == 422 and response.json()["error"]["field"] == "timeout"
    assert theirs.messages.wait_for_code(private.id, timeout=0).code == "123123"  # untouched by the refusal


@pytest.mark.slow
def test_through_the_real_mcp_client_with_mail_over_smtp(live):
    def send(to: str, sender: str, body: str) -> None:
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = sender, to, "Your sign-in code"
        msg.set_content(body)
        with smtplib.SMTP("127.0.0.1", live.smtp_port, timeout=30) as smtp:
            smtp.send_message(msg)

    async def run():
        async with http(live.mcp_url, live.keys["agent"]) as client:
            inbox = await ok(client, "create_inbox", username="codes")
            empty = await ok(client, "wait_for_code", inbox_id=inbox["id"], timeout_seconds=0)
            assert empty["timed_out"] and "notice" not in empty
            await asyncio.to_thread(send, inbox["address"], "news@other.example", "Your code is 111222.")
            sending = asyncio.create_task(
                asyncio.to_thread(send, inbox["address"], "Acme <auth@id.acme.example>", "Verification code: 654321")
            )
            ids = {"inbox_id": inbox["id"]}
            got = await ok(client, "wait_for_code", **ids, from_domain="acme.example", timeout_seconds=30)
            await sending
            assert got["code"] == "654321" and got["from"] == "auth@id.acme.example" and "untrusted" in got["notice"]
            rest = await ok(client, "wait_for_code", inbox_id=inbox["id"], timeout_seconds=10)
            assert rest["code"] == "111222" and rest["message_id"] != got["message_id"]
            refused = await client.call_tool("wait_for_code", {"inbox_id": live.foreign_inbox, "timeout_seconds": 0})
            assert refused.is_error and refused.content[0].text.startswith("not_found")

    asyncio.run(run())
