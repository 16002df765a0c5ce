"""The sign-up errand an agent runs most, "enroll → inbox → code", through a real MCP
client against a real ``postern serve``, the ``wait_for_code`` way beside the old way
(``wait_for_email`` + ``get_message``), in the same run.

Starts ``python -m postern serve`` with ``[mcp] enabled = true`` (SQLite in a temp
dir) and one enrollment key. Each of ``--runs`` rounds per way opens a fresh MCP
session with no key (as a host given only the enrollment key would), then:

- **new**: ``redeem_enrollment`` → ``create_inbox`` → ``wait_for_code``;
- **old**: ``redeem_enrollment`` → ``create_inbox`` → ``wait_for_email`` → ``get_message``
  (and the model still has to find the code in the text; the bench checks it is there).

The "website" sends its verification mail over SMTP as soon as the inbox exists, while
the agent's wait is in flight. Printed per way: tool calls per errand (target 3 for the
new way), wall time from the first call to the code in hand (p50/p90), and the bytes of
tool answers the model reads (a proxy for tokens). The ways alternate, so drift on a
shared machine hits both alike.

    python bench/agent_code_task.py [--runs 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import smtplib
import sys
import tempfile
import time
from pathlib import Path

import httpx2
from harness import Child, free_port, make_world, percentile, postern_cmd, record, running, wait_http, wait_smtp
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

TARGET_CALLS = 3
CALL_MS: dict[str, list[float]] = {}  # per tool, every call of the measured runs


def send_code(port: int, to: str, code: str) -> None:
    raw = (
        f"From: Example Shop <noreply@accounts.shop.example>\r\nTo: {to}\r\nSubject: Confirm your account\r\n\r\n"
        f"Welcome to Example Shop!\r\n\r\nYour verification code is {code}. It expires in 10 minutes.\r\n\r\n"
        "If you did not sign up, ignore this mail.\r\n"
    )
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        smtp.sendmail("noreply@accounts.shop.example", [to], raw.encode())


class Session:
    """One MCP session that counts its tool calls and the answer bytes the model reads."""

    def __init__(self, client: Client):
        self.client, self.calls, self.bytes = client, 0, 0

    async def tool(self, name: str, **args) -> dict:
        self.calls += 1
        start = time.perf_counter()
        result = await self.client.call_tool(name, args)
        CALL_MS.setdefault(name, []).append((time.perf_counter() - start) * 1000)
        text = result.content[0].text
        self.bytes += len(text.encode())
        if result.is_error:
            raise RuntimeError(f"{name}: {text}")
        return json.loads(text)


async def errand(way: str, mcp_url: str, enroll: str, smtp_port: int, n: int) -> tuple[int, float, int]:
    code = f"{random.randrange(10**5, 10**6)}"
    http = httpx2.AsyncClient(timeout=httpx2.Timeout(30, read=120))
    async with Client(streamable_http_client(f"{mcp_url}/mcp", http_client=http), mode="legacy") as client:
        s = Session(client)
        start = time.perf_counter()
        await s.tool("redeem_enrollment", enrollment_token=enroll, agent_handle=f"{way}-{n}")
        inbox = await s.tool("create_inbox")
        site = asyncio.create_task(asyncio.to_thread(send_code, smtp_port, inbox["address"], code))
        if way == "new":
            got = await s.tool("wait_for_code", inbox_id=inbox["id"], from_domain="shop.example", timeout_seconds=30)
            found = got["code"]
        else:
            waited = await s.tool("wait_for_email", inbox_id=inbox["id"], timeout=30)
            [message] = waited["messages"]
            full = await s.tool("get_message", inbox_id=inbox["id"], message_id=message["id"])
            found = code if code in full["text"] else None
        elapsed = time.perf_counter() - start
        await site
    if found != code:
        raise RuntimeError(f"{way} way: expected code {code}, got {found}")
    return s.calls, elapsed * 1000, s.bytes


async def measure(mcp_url: str, enroll: str, smtp_port: int, runs: int) -> dict[str, list[tuple[int, float, int]]]:
    out: dict[str, list] = {"new": [], "old": []}
    for n in range(runs):
        for way in ("new", "old") if n % 2 == 0 else ("old", "new"):
            out[way].append(await errand(way, mcp_url, enroll, smtp_port, n))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="postern-bench-code-") as tmp:
        mcp_port = free_port()
        world = make_world(Path(tmp), config_extra=f'[mcp]\nenabled = true\nbind = "127.0.0.1:{mcp_port}"\n')
        from support.world import make_tenant

        from postern.core.db import database

        with database.connection_context():
            _, enroll = make_tenant("signup").enrollment_key(max_mailboxes=2 * args.runs + 5)
        database.close()
        mcp_url = f"http://127.0.0.1:{mcp_port}"
        child = Child("postern", postern_cmd("serve"), Path(tmp) / "serve.log", env=world.env())
        with running(child):
            wait_http(child, world.http_port, "/healthz")
            wait_smtp(child, world.smtp_port)
            wait_http(child, mcp_port, "/healthz")
            asyncio.run(errand("warm", mcp_url, enroll, world.smtp_port, 0))  # first-call costs out of the figures
            CALL_MS.clear()
            results = asyncio.run(measure(mcp_url, enroll, world.smtp_port, args.runs))
    print(f'"enroll → inbox → code" over MCP (streamable HTTP), {args.runs} runs per way')
    p50s = {}
    for way, label in (("old", "wait_for_email + get_message"), ("new", "wait_for_code")):
        calls = sorted({c for c, _, _ in results[way]})
        ms = [t for _, t, _ in results[way]]
        answer_bytes = percentile([b for _, _, b in results[way]], 50)
        p50s[way] = percentile(ms, 50)
        print(
            f"  {label:<30} calls {'/'.join(map(str, calls)):>3}   p50 {p50s[way]:7.1f} ms   "
            f"p90 {percentile(ms, 90):7.1f} ms   answers {answer_bytes:6.0f} B"
        )
    print("  per tool call p50: " + ", ".join(f"{name} {percentile(ms, 50):.1f} ms" for name, ms in CALL_MS.items()))
    new_calls = max(c for c, _, _ in results["new"])
    print(f"  new/old p50 ratio {p50s['new'] / p50s['old']:.2f}; tool calls {new_calls} (target {TARGET_CALLS})")
    record(
        "enroll→inbox→code p50 (wait_for_code)",
        p50s["new"],
        "ms",
        "wait_for_email + get_message p50",
        p50s["old"],
        target=f"{TARGET_CALLS} tool calls",
        met=new_calls <= TARGET_CALLS,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
