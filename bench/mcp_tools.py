"""The MCP server over streamable HTTP, against the REST API it wraps, in the same run.

Starts the real ``python -m postern serve`` with ``[mcp] enabled = true`` (2 API
workers, the supervised SMTP listener and MCP service, SQLite in a temp dir), one
tenant, one agent key and one inbox holding ``--prefill`` messages. Then:

1. **Throughput**: ``--concurrency`` clients call, for ``--duration`` seconds each,
   first ``GET /v1/inboxes/{id}/messages?limit=20`` on the REST API (httpx, keep-alive),
   then the ``list_messages`` tool (limit 20) through the official MCP client (one
   session per client, bearer key). Printed: calls/s of each and the ratio.
2. **Wake-up latency**: ``--rounds`` times each, one waiter parks (REST wait, then
   the ``wait_for_email`` tool), a message goes in over SMTP, and the latency is the time
   the answer arrived minus the time the SMTP ``250`` arrived. Printed: p50/p99 of each.

    python bench/mcp_tools.py [--duration 5] [--concurrency 8] [--rounds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import smtplib
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import httpx2
from harness import (
    Child,
    free_port,
    make_world,
    percentile,
    postern_cmd,
    prefill,
    record,
    running,
    wait_http,
    wait_smtp,
)
from mcp import Client
from mcp.client.streamable_http import streamable_http_client


def mcp_client(url: str, key: str) -> Client:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=httpx2.Timeout(30, read=120))
    return Client(streamable_http_client(f"{url}/mcp", http_client=http))


async def rest_throughput(api: str, key: str, inbox: str, concurrency: int, duration: float) -> float:
    done = 0
    deadline = time.perf_counter() + duration

    async def worker():
        nonlocal done
        async with httpx.AsyncClient(base_url=api, headers={"Authorization": f"Bearer {key}"}) as client:
            while time.perf_counter() < deadline:
                resp = await client.get(f"/v1/inboxes/{inbox}/messages", params={"limit": 20})
                resp.raise_for_status()
                done += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / (time.perf_counter() - start)


async def mcp_throughput(url: str, key: str, inbox: str, concurrency: int, duration: float) -> float:
    done = 0
    deadline = time.perf_counter() + duration

    async def worker():
        nonlocal done
        async with mcp_client(url, key) as client:
            while time.perf_counter() < deadline:
                result = await client.call_tool("list_messages", {"inbox_id": inbox, "limit": 20})
                if result.is_error:
                    raise RuntimeError(result.content[0].text)
                done += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / (time.perf_counter() - start)


def smtp_send(port: int, to: str, n: int) -> float:
    """Send one message; returns when the 250 after DATA arrived."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        raw = f"From: bench@example.org\r\nTo: {to}\r\nSubject: wake {n}\r\n\r\nx\r\n"
        smtp.sendmail("bench@example.org", [to], raw)
        return time.perf_counter()


async def rest_latency(api: str, key: str, inbox: dict, smtp_port: int, rounds: int) -> list[float]:
    out = []
    async with httpx.AsyncClient(base_url=api, headers={"Authorization": f"Bearer {key}"}, timeout=90) as client:
        cursor = (await client.get(f"/v1/inboxes/{inbox['id']}/messages/wait", params={"timeout": 0})).json()["cursor"]
        for n in range(rounds):
            waiting = asyncio.create_task(
                client.get(f"/v1/inboxes/{inbox['id']}/messages/wait", params={"after": cursor, "timeout": 30})
            )
            await asyncio.sleep(0.3)  # parked
            t250 = await asyncio.to_thread(smtp_send, smtp_port, inbox["address"], n)
            resp = await waiting
            arrived = time.perf_counter()
            cursor = resp.json()["cursor"]
            out.append((arrived - t250) * 1000)
    return out


async def mcp_latency(url: str, key: str, inbox: dict, smtp_port: int, rounds: int) -> list[float]:
    out = []
    async with mcp_client(url, key) as client:
        first = await client.call_tool("wait_for_email", {"inbox_id": inbox["id"], "timeout": 0})
        cursor = json.loads(first.content[0].text)["cursor"]
        for n in range(rounds):
            args = {"inbox_id": inbox["id"], "timeout": 30, "cursor": cursor}
            waiting = asyncio.create_task(client.call_tool("wait_for_email", args))
            await asyncio.sleep(0.3)
            t250 = await asyncio.to_thread(smtp_send, smtp_port, inbox["address"], 1000 + n)
            result = await waiting
            arrived = time.perf_counter()
            cursor = json.loads(result.content[0].text)["cursor"]
            out.append((arrived - t250) * 1000)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--prefill", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="postern-bench-mcp-") as tmp:
        mcp_port = free_port()
        world = make_world(Path(tmp), config_extra=f'[mcp]\nenabled = true\nbind = "127.0.0.1:{mcp_port}"\n')
        inbox = world.inboxes[0]
        prefill(world, inbox, args.prefill)
        api, mcp_url = f"http://127.0.0.1:{world.http_port}", f"http://127.0.0.1:{mcp_port}"
        child = Child("postern", postern_cmd("serve"), Path(tmp) / "serve.log", env=world.env())
        with running(child):
            wait_http(child, world.http_port, "/healthz")
            wait_smtp(child, world.smtp_port)
            wait_http(child, mcp_port, "/healthz")
            rest = asyncio.run(rest_throughput(api, world.key, inbox["id"], args.concurrency, args.duration))
            tool = asyncio.run(mcp_throughput(mcp_url, world.key, inbox["id"], args.concurrency, args.duration))
            rest_wake = asyncio.run(rest_latency(api, world.key, inbox, world.smtp_port, args.rounds))
            mcp_wake = asyncio.run(mcp_latency(mcp_url, world.key, inbox, world.smtp_port, args.rounds))
    print(f"list, {args.concurrency} clients, {args.duration:g} s each (limit 20 of {args.prefill} messages)")
    print(f"  REST GET .../messages      {rest:8.1f} calls/s   (baseline)")
    print(f"  MCP list_messages (HTTP)   {tool:8.1f} calls/s   ratio {tool / rest:.2f}")
    print(f"wake-up from the SMTP 250, {args.rounds} rounds each (ms)")
    for name, values in (("REST wait", rest_wake), ("MCP wait_for_email", mcp_wake)):
        p50, p99 = percentile(values, 50), percentile(values, 99)
        print(f"  {name:<26} p50 {p50:7.1f}   p99 {p99:7.1f}   mean {statistics.fmean(values):7.1f}")
    ratio = percentile(mcp_wake, 50) / max(percentile(rest_wake, 50), 0.001)
    print(f"  MCP/REST p50 ratio {ratio:.2f}")
    record("MCP list_messages", tool, "calls/s", "REST list (same calls)", rest)
    record("MCP wait_for_email wake p50", percentile(mcp_wake, 50), "ms", "REST wait p50", percentile(rest_wake, 50))
    return 0


if __name__ == "__main__":
    sys.exit(main())
