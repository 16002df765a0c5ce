"""The MCP tools' contract with 2026 hosts, through the real MCP client: every tool
publishes an outputSchema its answers validate against and behaviour hints; argument
errors read like every other error; every declared parameter reaches the REST call;
the untrusted-content notice comes only with mail; mock mode can bring in outside
mail; and the client example in docs/mcp.md runs as written."""

from __future__ import annotations

import asyncio
import json
import os
import re
import smtplib
import subprocess
import sys
import textwrap
from pathlib import Path

import jsonschema
import pytest
import test_mcp
from mcp import Client
from support.world import make_tenant
from test_mcp import call, http, ok, smtp_send, stdio

from postern.api import create_app
from postern.api import messages as rest_messages
from postern.client import Postern
from postern.core.mail.ingest import ingest
from postern.core.runtime import build_postern
from postern.mcp import server as mcp_server
from postern.mcp.contract import ANNOTATIONS
from postern.testing.inprocess import InProcessTransport

live = test_mcp.live  # the real `postern serve` with its MCP service, shared with test_mcp
DOCS = Path(__file__).parent.parent / "docs" / "mcp.md"
ERROR = re.compile(r"^[a-z_]+: .+ \| fix: .+$", re.DOTALL)
HINTS = ("read_only_hint", "destructive_hint", "idempotent_hint", "open_world_hint")
ATTACHED = (
    "From: Ann <ann@example.org>\r\nTo: {to}\r\nSubject: invoice\r\nMIME-Version: 1.0\r\n"
    'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n'
    "--b\r\nContent-Type: text/html\r\n\r\n<p>see</p>\r\n"
    "--b\r\nContent-Type: application/pdf\r\n"
    'Content-Disposition: attachment; filename="bill.pdf"\r\n\r\n%PDF-1.4\r\n--b--\r\n'
)


def checked(tool, result) -> dict:
    """The structured result of a successful call, validated against the tool's outputSchema."""
    assert not result.is_error, result.content[0].text
    assert result.structured_content is not None, f"{tool.name} answered without structured content"
    jsonschema.validate(result.structured_content, tool.output_schema)
    assert json.loads(result.content[0].text) == result.structured_content  # text mirrors it for old hosts
    return result.structured_content


@pytest.mark.slow
def test_every_tool_has_hints_and_an_output_schema_its_real_answers_validate_against(live):
    def deliver(to: str) -> None:
        with smtplib.SMTP("127.0.0.1", live.smtp_port, timeout=30) as smtp:
            smtp.sendmail("ann@example.org", [to], ATTACHED.format(to=to).encode())

    def deliver_code(to: str) -> None:
        raw = f"From: ann@example.org\r\nTo: {to}\r\nSubject: code\r\n\r\nYour verification code is 246810.\r\n"
        with smtplib.SMTP("127.0.0.1", live.smtp_port, timeout=30) as smtp:
            smtp.sendmail("ann@example.org", [to], raw.encode())

    async def run():
        answered: dict[str, dict] = {}
        async with http(live.mcp_url, live.keys["agent"]) as client:
            tools = {t.name: t for t in (await client.list_tools()).tools}
            assert "mock_deliver_email" not in tools  # only in mock mode
            for tool in tools.values():
                assert tool.output_schema and tool.output_schema["type"] == "object", tool.name
                assert tool.annotations is not None and tool.annotations.title, tool.name
                assert all(isinstance(getattr(tool.annotations, h), bool) for h in HINTS), (tool.name, tool.annotations)
                assert tool.input_schema.get("additionalProperties") is False, tool.name
            sends = {n for n, t in tools.items() if t.annotations.open_world_hint}
            assert sends == {"send_email", "reply_to_email"}
            assert {n for n, t in tools.items() if t.annotations.read_only_hint} >= {"whoami", "get_message"}

            async def use(name: str, **args) -> dict:
                answered[name] = checked(tools[name], await client.call_tool(name, args))
                return answered[name]

            await use("whoami")
            inbox = await use("create_inbox", username="contract", display_name="Contract")
            await use("list_inboxes", limit=5)
            # Nothing to warn about: no notice on empty answers.
            empty = [
                await use("wait_for_email", inbox_id=inbox["id"], timeout=0),
                await use("list_messages", inbox_id=inbox["id"]),
                await use("list_threads", inbox_id=inbox["id"]),
            ]
            assert all("notice" not in e for e in empty), empty
            cursor = empty[0]["cursor"]
            await asyncio.to_thread(deliver, inbox["address"])
            got = await use("wait_for_email", inbox_id=inbox["id"], timeout=50, cursor=cursor)
            [first] = got["messages"]
            listed = await use("list_messages", inbox_id=inbox["id"], direction="inbound")
            threads = await use("list_threads", inbox_id=inbox["id"])
            message = await use("get_message", inbox_id=inbox["id"], message_id=first["id"], include_html=True)
            thread = await use("get_thread", inbox_id=inbox["id"], thread_id=first["thread_id"])
            assert all("untrusted" in r["notice"] for r in (got, listed, threads, message, thread))
            [attachment] = message["attachments"]
            ids = {"inbox_id": inbox["id"], "message_id": first["id"]}
            await use("get_attachment_link", **ids, attachment_id=attachment["id"])
            assert (await use("list_mail_rules", inbox_id=inbox["id"]))["rules"] == []  # no list binds it
            assert "notice" not in await use("wait_for_code", inbox_id=inbox["id"], timeout_seconds=0)  # no code in it
            await asyncio.to_thread(deliver_code, inbox["address"])
            coded = await use("wait_for_code", inbox_id=inbox["id"], from_domain="example.org", timeout_seconds=50)
            assert coded["code"] == "246810" and "untrusted" in coded["notice"]
            out = {"to": ["bob@example.org"], "cc": ["cc@example.org"], "subject": "s", "text": "t"}
            await use("send_email", inbox_id=inbox["id"], **out)
            await use("reply_to_email", inbox_id=inbox["id"], message_id=first["id"], text="thanks")
            # Over streamable HTTP too, a bad argument reads like any other error.
            failed, text = await call(client, "list_messages", inbox_id=inbox["id"], limit="many", extra=1)
            assert failed and ERROR.match(text) and text.startswith("invalid_argument: list_messages takes no")
        async with http(live.mcp_url, mode="legacy") as session:  # redeeming keeps a key per session
            tools = {t.name: t for t in (await session.list_tools()).tools}
            result = await session.call_tool(
                "redeem_enrollment", {"enrollment_token": live.keys["enroll"], "agent_handle": "schema-bot"}
            )
            answered["redeem_enrollment"] = checked(tools["redeem_enrollment"], result)
        assert set(answered) == set(tools)  # a new tool has to be called here too

    asyncio.run(run())


def test_rest_and_mcp_wait_bounds_are_documented_together():
    # The MCP bound is lower on purpose (hosts cut a call at about 60 s); docs/mcp.md says so.
    assert mcp_server.MAX_WAIT < 60 < rest_messages.MAX_WAIT
    doc = DOCS.read_text()
    assert f"**{mcp_server.MAX_WAIT} s**" in doc and f"{rest_messages.MAX_WAIT} s" in doc


def test_the_hints_table_in_the_docs_matches_the_tools():
    doc = DOCS.read_text()
    table = doc[doc.index("| tool | readOnly | destructive | idempotent | openWorld |") :].split("\n\n", 1)[0]
    documented = {}
    for row in table.splitlines()[2:]:
        tools, *cells = [c.strip() for c in row.strip("|").split("|")]
        flags = tuple(c.lstrip("*").startswith("yes") for c in cells)
        documented.update({name: flags for name in re.findall(r"`(\w+)`", tools)})
    actual = {name: tuple(getattr(a, h) for h in HINTS) for name, a in ANNOTATIONS.items()}
    assert documented == actual


# -- in process: the real app on the test database, its REST requests recorded ---------


class Recorder:
    """An httpx transport in front of the in-process app that keeps every request."""

    def __init__(self, inner):
        self.inner = inner
        self.requests: list[tuple[str, str, object]] = []

    def handle_request(self, request):
        body = request.read()
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = body
        self.requests.append((request.method, str(request.url), parsed))
        return self.inner.handle_request(request)

    def close(self):
        pass


@pytest.fixture
def world(config, db):
    postern = build_postern(config)
    transport = InProcessTransport(create_app(postern))
    acme = make_tenant("acme")
    _, enroll = acme.enrollment_key(max_mailboxes=5)
    agent = acme.agent_key(handle="bot", max_mailboxes=50).agent_key
    with Postern(api_key=agent, base_url="http://postern.test", transport=transport) as client:
        inbox = client.inboxes.create("params")
        peer = client.inboxes.create("peer")
        ingest(postern, ATTACHED.format(to=inbox.address).encode(), "ann@example.org", [inbox.address])
        [message] = client.messages.list(inbox.id)
        message = client.messages.get(inbox.id, message.id)
    yield {
        "transport": transport,
        "agent": agent,
        "base": {
            "inbox_id": inbox.id,
            "message_id": message.id,
            "thread_id": message.thread_id,
            "attachment_id": message.attachments[0].id,
            "enrollment_token": enroll,
            "agent_handle": "param-bot",
            "to": [peer.address],
            "subject": "s",
            "text": "t",
        },
    }
    transport.shutdown()


def in_process(world) -> tuple[Client, Recorder]:
    server = mcp_server.build_server(api_key=world["agent"], base_url="http://postern.test")
    recorder = server.postern_clients.transport = Recorder(world["transport"])
    return Client(server), recorder


#: Parameters that shape the MCP answer only, with the reason; everything else must reach the API.
MCP_ONLY = {("get_message", "include_html"): "the API returns the HTML body anyway; the tool shows it on request"}
#: Base values by parameter name, for every tool: a wait that answers at once keeps the test quick.
BASE = {"timeout": 0, "timeout_seconds": 0}


def alternative(name: str, spec: dict, base):
    """A valid value for the parameter, different from its default and from ``base``."""
    [option] = [o for o in spec.get("anyOf", [spec]) if o.get("type") != "null"]
    kind, default = option.get("type"), spec.get("default")
    if "enum" in option:
        return next(v for v in option["enum"] if v not in (default, base))
    if kind == "string":
        return f"zz-{name}-zz"
    if kind == "array":
        return [f"zz-{name}@example.org"]
    if kind == "integer":
        low, high = option.get("minimum", 0), option.get("maximum", 10**6)
        return next(v for v in (7, low, low + 1, high) if low <= v <= high and v not in (default, base))
    if kind == "boolean":
        return not default
    raise AssertionError(f"no test value for a {kind} parameter {name!r}: teach alternative() one")


def test_every_declared_parameter_of_every_tool_reaches_the_rest_call(world):
    """Each parameter in a tool's inputSchema, set alone to a new value, changes the REST
    requests the tool makes (and a text value appears in them): a parameter the tool
    accepts but drops fails here."""

    async def requests_for(tool: str, args: dict) -> list:
        client, recorder = in_process(world)
        async with client:
            await client.call_tool(tool, args)  # errors from the API are fine: the request was made
        return recorder.requests

    async def run():
        client, _ = in_process(world)
        async with client:
            tools = (await client.list_tools()).tools
        checked = set()
        for tool in tools:
            properties, required = tool.input_schema["properties"], tool.input_schema.get("required", [])
            base = {p: world["base"].get(p, f"base-{p}") for p in required}
            base.update({p: v for p, v in BASE.items() if p in properties})
            before = await requests_for(tool.name, base)
            assert before, f"{tool.name} made no REST request"
            for name, spec in properties.items():
                if (tool.name, name) in MCP_ONLY:
                    continue
                value = alternative(name, spec, base.get(name))
                after = await requests_for(tool.name, {**base, name: value})
                assert after != before, f"{tool.name}({name}=…) made the same REST requests: {name} is dropped"
                if isinstance(value, (str, list)):
                    text = value[0] if isinstance(value, list) else value
                    assert text in json.dumps(after), f"{tool.name}: {name}'s value never reached the API"
                checked.add((tool.name, name))
        assert checked, "no parameters driven"
        declared = {(t.name, p) for t in tools for p in t.input_schema["properties"]}
        assert set(MCP_ONLY) <= declared  # no stale exemptions
        assert checked | set(MCP_ONLY) == declared

    asyncio.run(run())


def test_argument_errors_read_like_every_other_error(world):
    async def run():
        client, _ = in_process(world)
        inbox_id = world["base"]["inbox_id"]
        async with client:
            cases = {
                "wrong type": {"inbox_id": inbox_id, "limit": "many"},
                "missing required": {"limit": 5},
                "unknown argument": {"inbox_id": inbox_id, "inbox": "x"},
                "out of range": {"inbox_id": inbox_id, "limit": 1000},
            }
            texts = {}
            for case, args in cases.items():
                result = await client.call_tool("list_messages", args)
                assert result.is_error, case
                texts[case] = text = result.content[0].text
                assert ERROR.match(text), (case, text)
                assert text.startswith("invalid_argument: ") and "fix: call list_messages(inbox_id: string" in text
                for dump in ("validation error", "pydantic", "input_value", "For further information", "\n"):
                    assert dump not in text, (case, text)
            assert "limit: input should be a valid integer" in texts["wrong type"]
            assert "'many'" not in texts["wrong type"]  # the caller's values are not echoed
            assert "missing required argument 'inbox_id'" in texts["missing required"]
            assert "takes no argument 'inbox'" in texts["unknown argument"]
            assert "limit: input should be less than or equal to 100" in texts["out of range"]
            # The API's own errors (any code, with or without a hint of its own) and an
            # unknown tool read the same way.
            for tool, args in [
                ("get_message", {"inbox_id": inbox_id, "message_id": "msg_nope"}),
                ("create_inbox", {"username": "bad name!"}),
                ("list_messages", {"inbox_id": inbox_id, "page_token": "garbage"}),
                ("redeem_enrollment", {"enrollment_token": "pk_enroll_nope", "agent_handle": "x"}),
                ("nope", {}),
            ]:
                result = await client.call_tool(tool, args)
                assert result.is_error and ERROR.match(result.content[0].text), result.content[0].text
                assert not result.content[0].text.startswith("Error executing tool")

    asyncio.run(run())


def test_mock_mode_delivers_outside_mail_through_a_tool():
    async def run():
        async with stdio({"POSTERN_MOCK": "1"}) as client:
            tool = {t.name: t for t in (await client.list_tools()).tools}["mock_deliver_email"]
            assert "MOCK MODE ONLY" in tool.description
            inbox = await ok(client, "create_inbox", username="signup")
            cursor = (await ok(client, "wait_for_email", inbox_id=inbox["id"], timeout=0))["cursor"]
            delivered = checked(
                tool,
                await client.call_tool(
                    "mock_deliver_email",
                    {
                        "to": [inbox["address"]],
                        "subject": "Your code is 482913",
                        "text": "Enter 482913 to verify.",
                        "sender": "noreply@shop.example",
                        "sender_name": "Shop",
                    },
                ),
            )
            got = await ok(client, "wait_for_email", inbox_id=inbox["id"], timeout=10, cursor=cursor)
            [message] = got["messages"]
            assert delivered["message_ids"] == [message["id"]]
            assert (message["from"], message["direction"]) == ("Shop <noreply@shop.example>", "inbound")
            detail = await ok(client, "get_message", inbox_id=inbox["id"], message_id=message["id"])
            assert "Enter 482913 to verify." in detail["text"]
            failed, text = await call(client, "mock_deliver_email", to=["nobody@mock.agents.localhost"], subject="x")
            assert failed and text.startswith("no_recipient: no local recipient | fix: ")

    asyncio.run(run())


def doc_example() -> str:
    """The Python block after the 'official Python client' marker in docs/mcp.md."""
    doc = DOCS.read_text()
    marker = doc.index("<!-- example: official Python client -->")
    start = doc.index("```python\n", marker) + len("```python\n")
    return textwrap.dedent(doc[start : doc.index("```", start)])


@pytest.mark.slow
def test_the_docs_client_example_runs_against_a_real_server(live, tmp_path):
    script = tmp_path / "example.py"
    script.write_text(doc_example())
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("POSTERN_")},
        "POSTERN_MCP_URL": f"{live.mcp_url}/mcp",
        "POSTERN_API_KEY": live.keys["agent"],
    }
    proc = subprocess.Popen(
        [sys.executable, str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("send mail to "), (line, proc.stderr.read() if proc.poll() is not None else "")
        address = line.split()[-1]
        smtp_send(live.smtp_port, address, "Your code is 482913", "Enter 482913 to verify.").join()
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "Ann <ann@example.org> | Your code is 482913" in out and "Enter 482913 to verify." in out
