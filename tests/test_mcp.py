"""The MCP server with the real MCP client from the `mcp` package: over stdio and over
streamable HTTP against a real `postern serve`, and offline on the SDK's mock mode."""

from __future__ import annotations

import asyncio
import json
import os
import smtplib
import subprocess
import sys
import threading
import time
from email.message import EmailMessage

import httpx
import httpx2
import pytest
from mcp import Client, StdioServerParameters
from support.server import free_port, seeding, wait_for
from support.world import make_tenant, operator_token

from postern.client import Postern
from postern.testing import MOCK_ENROLLMENT_TOKEN


@pytest.fixture
def live(serve, db_url):
    with seeding(db_url):
        acme = make_tenant("acme")
        _, enroll = acme.enrollment_key(max_mailboxes=5)
        agent = acme.agent_key(handle="bot", max_mailboxes=5).agent_key
        reader = acme.agent_key(scopes=("mailbox:read",), handle="reader").agent_key
        other = make_tenant("other").agent_key(handle="them").agent_key
        admin = acme.admin_token
        operator = operator_token()
    mcp_port = free_port()
    # The conversations send mail over SMTP: serve() waits until it greets.
    server = serve(
        env={"POSTERN_MCP_ENABLED": "true", "POSTERN_MCP_BIND": f"127.0.0.1:{mcp_port}"}, services=("smtp", "mcp")
    )
    server.mcp_url = f"http://127.0.0.1:{mcp_port}"
    server.keys = {"enroll": enroll, "agent": agent, "reader": reader, "other": other, "admin": admin}
    server.operator = operator
    wait_for(lambda: _answers(f"{server.mcp_url}/healthz"))
    with Postern(api_key=other, base_url=server.url) as theirs:
        server.foreign_inbox = theirs.inboxes.create("private").id
    return server


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def smtp_send(port: int, to: str, subject: str, body: str, delay: float = 0.0) -> threading.Thread:
    def send():
        time.sleep(delay)
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = "Ann <ann@example.org>", to, subject
        msg.set_content(body)
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
            smtp.send_message(msg)

    thread = threading.Thread(target=send)
    thread.start()
    return thread


async def call(client, tool: str, **args):
    result = await client.call_tool(tool, args)
    data = json.loads(result.content[0].text) if not result.is_error else result.content[0].text
    return result.is_error, data


async def ok(client, tool: str, **args):
    failed, data = await call(client, tool, **args)
    assert not failed, data
    return data


def stdio(env: dict) -> Client:
    full = {k: v for k, v in os.environ.items() if not k.startswith("POSTERN_")}
    return Client(StdioServerParameters(command=sys.executable, args=["-m", "postern", "mcp"], env={**full, **env}))


def http(url: str, key: str | None = None, **kwargs) -> Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    http_client = httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=120))
    from mcp.client.streamable_http import streamable_http_client

    return Client(streamable_http_client(f"{url}/mcp", http_client=http_client), **kwargs)


async def conversation(client, send_in) -> dict:
    """create_inbox → mail arrives while wait_for_email blocks → reply → the thread holds both."""
    inbox = await ok(client, "create_inbox", username="support")
    start = await ok(client, "wait_for_email", inbox_id=inbox["id"], timeout=0)
    assert start["timed_out"] and start["messages"] == []
    progress = []

    async def on_progress(done, total, message):
        progress.append((done, total))

    sender = send_in(inbox["address"])
    args = {"inbox_id": inbox["id"], "timeout": 30, "cursor": start["cursor"]}
    result = await client.call_tool("wait_for_email", args, progress_callback=on_progress)
    await asyncio.to_thread(sender.join)
    got = json.loads(result.content[0].text)
    assert not result.is_error and not got["timed_out"]
    assert [m["subject"] for m in got["messages"]] == ["Order 42"] and "untrusted" in got["notice"]
    assert progress and progress[0] == (0, 30)  # the host hears at once that the call waits
    first = got["messages"][0]
    message = await ok(client, "get_message", inbox_id=inbox["id"], message_id=first["id"], max_length=200)
    nonce = message["text"].split(">>", 1)[0].split()[-1]
    assert message["text"].startswith(f"<<untrusted-email {nonce}>>")
    assert message["text"].rstrip().endswith(f"<<end-untrusted-email {nonce}>>") and "where is it?" in message["text"]
    assert "html" not in message  # only on request
    reply = await ok(client, "reply_to_email", inbox_id=inbox["id"], message_id=first["id"], text="on its way")
    assert reply["subject"] == "Re: Order 42" and reply["to"] == ["Ann <ann@example.org>"]
    thread = await ok(client, "get_thread", inbox_id=inbox["id"], thread_id=first["thread_id"])
    assert [m["id"] for m in thread["messages"]] == [first["id"], reply["id"]]
    again = await ok(client, "wait_for_email", inbox_id=inbox["id"], timeout=0, cursor=got["cursor"])
    assert again["messages"] == []  # nothing returned twice
    listed = await ok(client, "list_messages", inbox_id=inbox["id"])
    assert {m["id"] for m in listed["messages"]} == {first["id"], reply["id"]}
    assert set(listed["messages"][0]) == {
        "id", "thread_id", "direction", "from", "subject", "snippet", "received_at", "attachment_count",
        "verified_sender",
    }  # fmt: skip
    assert listed["messages"][0]["verified_sender"] is False  # unsigned mail proves no sender
    return inbox


@pytest.mark.slow
def test_stdio_redeem_create_wait_reply_thread_against_a_real_server(live):
    async def run():
        async with stdio({"POSTERN_API_BASE_URL": live.url}) as client:
            names = {t.name for t in (await client.list_tools()).tools}
            assert names >= {
                "redeem_enrollment", "create_inbox", "list_inboxes", "list_messages", "get_message", "send_email",
                "reply_to_email", "list_threads", "get_thread", "wait_for_email", "get_attachment_link", "whoami",
            }  # fmt: skip
            failed, text = await call(client, "whoami")
            assert failed and "missing_key" in text and "redeem_enrollment" in text
            token = live.keys["enroll"]
            enrolled = await ok(client, "redeem_enrollment", enrollment_token=token, agent_handle="mcp-bot")
            assert enrolled["agent_handle"] == "mcp-bot" and "pk_agent_" not in json.dumps(enrolled).replace(
                enrolled["key_prefix"], ""
            )  # the key itself never reaches the model
            me = await ok(client, "whoami")
            assert me["agent_id"] == enrolled["agent_id"]
            await conversation(client, lambda to: smtp_send(live.smtp_port, to, "Order 42", "where is it?", 2.0))

    asyncio.run(run())


@pytest.mark.slow
def test_http_bearer_per_request_and_redeem_per_session(live):
    async def run():
        async with http(live.mcp_url, live.keys["agent"]) as client:
            await conversation(client, lambda to: smtp_send(live.smtp_port, to, "Order 42", "where is it?", 2.0))
        # A handshake-era session keeps the key it redeemed, and only that session does.
        async with http(live.mcp_url, mode="legacy") as session:
            await ok(session, "redeem_enrollment", enrollment_token=live.keys["enroll"], agent_handle="sess-bot")
            assert (await ok(session, "whoami"))["agent_handle"] == "sess-bot"
            async with http(live.mcp_url, mode="legacy") as stranger:
                failed, text = await call(stranger, "whoami")
                assert failed and "missing_key" in text
        async with http(live.mcp_url) as stateless:
            failed, text = await call(
                stateless, "redeem_enrollment", enrollment_token=live.keys["enroll"], agent_handle="x"
            )
            assert failed and "no MCP session" in text

    asyncio.run(run())


@pytest.mark.slow
def test_wrong_key_missing_scope_and_foreign_ids_are_clear_tool_errors(live):
    async def run():
        async with http(live.mcp_url, live.keys["agent"][:-4] + "AAAA") as client:
            failed, text = await call(client, "whoami")
            assert failed and text.count("invalid_key") and "fix:" in text
        async with http(live.mcp_url, live.keys["reader"]) as client:
            failed, text = await call(client, "create_inbox", username="nope")
            assert failed and "insufficient_scope" in text and "mailbox:create" in text
        async with http(live.mcp_url, live.keys["agent"]) as client:
            for tool, args in [
                ("list_messages", {"inbox_id": live.foreign_inbox}),
                ("wait_for_email", {"inbox_id": live.foreign_inbox, "timeout": 0}),
                ("send_email", {"inbox_id": live.foreign_inbox, "to": ["a@example.org"], "subject": "s", "text": "t"}),
            ]:
                failed, text = await call(client, tool, **args)
                assert failed and "not_found" in text, (tool, text)
            failed, text = await call(client, "send_email", inbox_id="inb_x", to=[], subject="s", text="t")
            assert failed

    asyncio.run(run())
    # An org admin key never reaches a tool: over HTTP the request is refused, and the
    # stdio server will not start with one.
    for key in (live.keys["admin"], live.operator):
        resp = httpx.post(f"{live.mcp_url}/mcp", headers={"Authorization": f"Bearer {key}"}, json={})
        assert resp.status_code == 403 and resp.json()["error"]["code"] == "admin_key_refused"
    env = {**os.environ, "POSTERN_API_KEY": live.keys["admin"], "POSTERN_API_BASE_URL": live.url}
    proc = subprocess.run(
        [sys.executable, "-m", "postern", "mcp"], env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=60
    )
    assert proc.returncode != 0 and b"never your master key" in proc.stderr


@pytest.mark.slow
def test_a_waiter_that_disconnects_leaves_nothing_behind(live):
    health = f"{live.mcp_url}/healthz"

    async def run():
        async with http(live.mcp_url, live.keys["agent"]) as client:
            inbox = await ok(client, "create_inbox", username="gone")
            task = asyncio.create_task(client.call_tool("wait_for_email", {"inbox_id": inbox["id"], "timeout": 45}))
            await asyncio.to_thread(wait_for, lambda: httpx.get(health).json()["waits_in_flight"] == 1, 20)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        return inbox

    inbox = asyncio.run(run())
    started = time.monotonic()
    wait_for(lambda: httpx.get(health).json()["waits_in_flight"] == 0, 20)
    assert time.monotonic() - started < 20  # long before the 45 s the wait asked for
    # The server still serves the inbox normally afterwards.
    with Postern(api_key=live.keys["agent"], base_url=live.url) as client:
        assert client.messages.wait(inbox["id"], timeout=0).timed_out


def test_mock_mode_runs_the_same_tools_offline():
    async def run():
        async with stdio({"POSTERN_MOCK": "1"}) as client:
            assert (await ok(client, "whoami"))["agent_handle"] == "mock-agent"  # usable at once
            await ok(client, "redeem_enrollment", enrollment_token=MOCK_ENROLLMENT_TOKEN, agent_handle="dev")
            assert (await ok(client, "whoami"))["agent_handle"] == "dev"
            peer = await ok(client, "create_inbox", username="peer")
            inbox = await conversation_mock(client, peer)
            assert inbox["address"] == "support@mock.agents.localhost"
            await ok(client, "create_inbox", username="third")
            failed, text = await call(client, "create_inbox", username="fourth")
            assert failed and "quota_exceeded" in text  # the mock enrollment allows 3

    asyncio.run(run())


async def conversation_mock(client, peer) -> dict:
    inbox = await ok(client, "create_inbox", username="support")
    start = await ok(client, "wait_for_email", inbox_id=inbox["id"], timeout=0)

    async def later():
        await asyncio.sleep(2)
        return await ok(client, "send_email", inbox_id=peer["id"], to=[inbox["address"]], subject="Order 42", text="hi")

    sending = asyncio.create_task(later())
    got = await ok(client, "wait_for_email", inbox_id=inbox["id"], timeout=30, cursor=start["cursor"])
    await sending
    assert [m["subject"] for m in got["messages"]] == ["Order 42"]
    first = got["messages"][0]
    reply = await ok(client, "reply_to_email", inbox_id=inbox["id"], message_id=first["id"], text="thanks")
    thread = await ok(client, "get_thread", inbox_id=inbox["id"], thread_id=first["thread_id"])
    assert [m["id"] for m in thread["messages"]] == [first["id"], reply["id"]]
    assert reply["status"] == "sent"  # delivered to peer inside the world
    return inbox


@pytest.mark.slow
def test_attachment_names_and_links_reach_the_model_safely(live):
    """Hardening issue items 7 and 8 through the real MCP client: a filename with a bidi
    override shows as it reads, and its link is absolute and works although the server
    has no ``server.public_url`` (the API answers it relative; the SDK completes it)."""
    raw = (
        "From: Ann <ann@example.org>\r\nTo: {to}\r\nSubject: invoice\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nsee\r\n'
        "--b\r\nContent-Type: application/pdf\r\n"
        "Content-Disposition: attachment; filename*=utf-8''%C3%A9vil.pdf%E2%80%AEgpj.exe\r\n\r\n%PDF-1.4\r\n--b--\r\n"
    )

    def deliver(to: str) -> None:
        with smtplib.SMTP("127.0.0.1", live.smtp_port, timeout=30) as smtp:
            smtp.sendmail("ann@example.org", [to], raw.format(to=to).encode())

    async def run():
        async with http(live.mcp_url, live.keys["agent"]) as client:
            inbox = await ok(client, "create_inbox", username="files")
            cursor = (await ok(client, "wait_for_email", inbox_id=inbox["id"], timeout=0))["cursor"]
            await asyncio.to_thread(deliver, inbox["address"])
            got = await ok(client, "wait_for_email", inbox_id=inbox["id"], timeout=50, cursor=cursor)
            [first] = got["messages"]
            message = await ok(client, "get_message", inbox_id=inbox["id"], message_id=first["id"])
            [attachment] = message["attachments"]
            assert attachment["filename"] == "évil.pdfgpj.exe"
            url = attachment["download"]["url"]
            assert url.startswith(f"{live.url}/v1/downloads/")
            resp = await asyncio.to_thread(httpx.get, url, timeout=30)
            assert resp.status_code == 200 and resp.content.startswith(b"%PDF-1.4")
            assert resp.headers["content-disposition"] == "attachment; filename*=UTF-8''%C3%A9vil.pdfgpj.exe"

    asyncio.run(run())


def test_wait_for_email_is_described_in_the_words_of_docs_mail():
    """One wording for the semantics of a wait: the tool says what docs/mail.md says."""
    from pathlib import Path

    from postern.mcp.delivery import DELIVERY_CURSORS
    from postern.mcp.server import build_server

    docs = " ".join((Path(__file__).parent.parent / "docs" / "mail.md").read_text().split())
    assert " ".join(DELIVERY_CURSORS.split()) in docs

    async def described():
        tools = {t.name: t for t in await build_server().list_tools()}
        return tools["wait_for_email"].description

    assert DELIVERY_CURSORS in asyncio.run(described())


@pytest.mark.slow
def test_mail_that_arrives_before_the_first_wait_is_returned_by_it(live):
    """The verification mail lands between create_inbox and the first wait_for_email."""

    async def run():
        async with http(live.mcp_url, live.keys["agent"]) as client:
            inbox = await ok(client, "create_inbox", username="signup")
            assert inbox["cursor"] == "0"
            await asyncio.to_thread(smtp_send(live.smtp_port, inbox["address"], "Your code is 424242", "code").join)
            got = await ok(client, "wait_for_email", inbox_id=inbox["id"], timeout=10)
            assert [m["subject"] for m in got["messages"]] == ["Your code is 424242"] and not got["timed_out"]
            again = await ok(client, "wait_for_email", inbox_id=inbox["id"], timeout=0)
            assert again["messages"] == [] and again["timed_out"]  # returned once
            smtp_send(live.smtp_port, inbox["address"], "second", "more", 1.0)
            later = await ok(client, "wait_for_email", inbox_id=inbox["id"], timeout=30)  # slices on the cursor
            assert [m["subject"] for m in later["messages"]] == ["second"]

    asyncio.run(run())
