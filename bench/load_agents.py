"""200 agents at once: waiting, sending, listing and replying against `postern serve`.

Starts the real ``python -m postern serve`` (its API workers, the SMTP listener and the
outbox that delivers agent-to-agent mail) on SQLite in a temp data dir, or on
PostgreSQL in a fresh schema with ``--database-url``. Makes ``--agents`` agents, each
with its own ``pk_agent_`` key and inbox, then runs them all for ``--duration``
seconds. Each agent loops, picking at random (weights in ``MIX``):

- **wait**: ``GET .../messages/wait?after=<cursor>&timeout=2``; mail it gets is queued
  for a reply;
- **send**: a new message to another agent's inbox (local delivery through the outbox);
- **list**: the first page of its inbox;
- **reply**: to a message it received (a send when it has none to answer).

Printed: per operation the count, errors (any non-2xx or transport error), p50 and
p99 latency; the peak RSS of all server processes, sampled every 0.5 s; and a
delivery check: every send and reply the API accepted must reach its recipient's
inbox (counted in the database once the outbox is drained), none twice.

The load generator runs on the same 2 cores as the server, so the figures are what
one machine does playing both sides.

    python bench/load_agents.py [--agents 200] [--duration 60] [--database-url postgresql://...]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import random
import secrets
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path
from urllib.parse import quote

import httpx
from harness import Child, World, free_port, memory_of, percentile, postern_cmd, record, running, wait_http

MIX = {"wait": 40, "send": 20, "list": 25, "reply": 15}
WAIT_SECONDS = 2
MEMORY_TARGET_MIB = 300


def make_agents(tmp: Path, agents: int, database_url: str, workers: int) -> tuple[World, list[dict]]:
    """Config file, migrated database, one tenant and ``agents`` keys each with one inbox."""
    from support.world import INFO, make_tenant

    from postern.core import migrations
    from postern.core.auth import authenticate
    from postern.core.config import load_config
    from postern.core.db import database
    from postern.core.inboxes import create_inbox
    from postern.core.runtime import build_postern

    world = World(tmp, free_port(), free_port(), workers)
    extra = f'[database]\nurl = "{database_url}"\n' if database_url else ""
    world.write_config(extra)
    postern = build_postern(load_config(world.config_file, environ={}))
    made = []
    with database.connection_context():
        migrations.upgrade()
        tenant = make_tenant("load")
        for i in range(agents):
            enrolled = tenant.agent_key(handle=f"agent{i}", max_mailboxes=1, ttl=dt.timedelta(hours=2))
            principal = authenticate(enrolled.agent_key, "agent", INFO)
            inbox, _ = create_inbox(postern, principal, INFO, {"username": f"agent{i}"})
            made.append({"key": enrolled.agent_key, "inbox": inbox.id, "address": inbox.address})
    database.close()
    return world, made


class Stats:
    def __init__(self):
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.errors: dict[str, int] = defaultdict(int)
        self.error_samples: list[str] = []
        self.accepted_sends: set[str] = set()  # the tags of sends/replies the API accepted

    def error(self, op: str, what: str) -> None:
        self.errors[op] += 1
        if len(self.error_samples) < 10:
            self.error_samples.append(f"{op}: {what}")


async def agent(me: dict, peers: list[dict], base: str, deadline: float, stats: Stats, rng: random.Random):
    headers = {"Authorization": f"Bearer {me['key']}"}
    cursor = None
    to_answer: list[str] = []
    ops, weights = list(MIX), list(MIX.values())
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as http:
        while time.monotonic() < deadline:
            op = rng.choices(ops, weights)[0]
            if op == "reply" and not to_answer:
                op = "send"
            tag = uuid.uuid4().hex
            path = f"/v1/inboxes/{me['inbox']}/messages"
            started = time.monotonic()
            try:
                if op == "wait":
                    params = {"timeout": WAIT_SECONDS, **({"after": cursor} if cursor else {})}
                    response = await http.get(f"{path}/wait", params=params)
                elif op == "list":
                    response = await http.get(path, params={"limit": 20})
                elif op == "send":
                    peer = rng.choice(peers)
                    body = {"to": [peer["address"]], "subject": f"load {tag}", "text": f"hello {tag}"}
                    response = await http.post(path, json=body, headers={"Idempotency-Key": tag})
                else:
                    reply_to = to_answer.pop()
                    body = {"text": f"reply {tag}"}
                    response = await http.post(
                        f"{path}/{quote(reply_to)}/reply", json=body, headers={"Idempotency-Key": tag}
                    )
            except httpx.HTTPError as exc:
                stats.error(op, repr(exc))
                continue
            elapsed = time.monotonic() - started
            if response.status_code >= 300:
                stats.error(op, f"{response.status_code} {response.text[:200]}")
                continue
            if op == "wait":
                data = response.json()
                cursor = data["cursor"]
                op = "wait (mail)" if data["messages"] else "wait (timeout)"
                to_answer.extend(m["id"] for m in data["messages"])
                del to_answer[:-20]  # an agent answers recent mail; the rest it lets go
            elif op in ("send", "reply"):
                stats.accepted_sends.add(tag)
            stats.latency[op].append(elapsed)


async def sample_rss(root_pid: int, stop: asyncio.Event, peaks: dict) -> None:
    while not stop.is_set():
        for key, value in memory_of(root_pid).items():
            peaks[key] = max(peaks.get(key, 0), value)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)


async def run_load(world: World, agents: list[dict], root_pid: int, duration: float, seed: int) -> tuple[Stats, dict]:
    stats, peaks, stop = Stats(), {}, asyncio.Event()
    base = f"http://127.0.0.1:{world.http_port}"
    deadline = time.monotonic() + duration
    sampler = asyncio.create_task(sample_rss(root_pid, stop, peaks))
    rng = random.Random(seed)
    tasks = [
        agent(me, [p for p in agents if p is not me], base, deadline, stats, random.Random(rng.random()))
        for me in agents
    ]
    await asyncio.gather(*tasks)
    stop.set()
    await sampler
    return stats, peaks


def delivered_tags(world: World, database_url: str) -> dict[str, int]:
    """How many inbound copies of each tagged load message the database holds."""
    from postern.core.config import load_config
    from postern.core.db import database
    from postern.core.models import Message
    from postern.core.runtime import build_postern

    build_postern(load_config(world.config_file, environ={}))
    counts: dict[str, int] = defaultdict(int)
    with database.connection_context():
        query = Message.select(Message.subject, Message.text).where(Message.direction == "inbound")
        for row in query.iterator():
            text = (row.text or "").strip()
            for word in ("hello ", "reply "):
                if text.startswith(word):
                    counts[text[len(word) : len(word) + 32]] += 1
                    break
    database.close()
    return counts


def fresh_schema(url: str) -> tuple[str, str]:
    """A new schema on the PostgreSQL server; returns (URL using it, schema name)."""
    import psycopg2

    schema = f"load_{secrets.token_hex(4)}"
    with contextlib.closing(psycopg2.connect(url)) as conn:
        conn.autocommit = True
        conn.cursor().execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options=-csearch_path%3D{schema}", schema


def drop_schema(url: str, schema: str) -> None:
    import psycopg2

    with contextlib.closing(psycopg2.connect(url)) as conn:
        conn.autocommit = True
        conn.cursor().execute(f"DROP SCHEMA {schema} CASCADE")


def report(stats: Stats, peaks: dict, idle: dict, duration: float, label: str) -> int:
    print(f"\n{label}: {len(stats.latency) and sum(map(len, stats.latency.values()))} calls in {duration:.0f} s")
    print(f"{'operation':<16} {'calls':>7} {'errors':>7} {'p50 ms':>9} {'p99 ms':>9}")
    for op in ("wait (mail)", "wait (timeout)", "send", "list", "reply"):
        values = stats.latency.get(op, [])
        errors = stats.errors.get(op.split(" ")[0], 0) if op != "wait (timeout)" else 0
        p50 = f"{percentile(values, 50) * 1000:.1f}" if values else "-"
        p99 = f"{percentile(values, 99) * 1000:.1f}" if values else "-"
        print(f"{op:<16} {len(values):>7} {errors:>7} {p50:>9} {p99:>9}")
        if values:
            record(f"load {label}: {op} p50", percentile(values, 50) * 1000, "ms")
    total_errors = sum(stats.errors.values())
    print(f"errors: {total_errors}" + "".join(f"\n  {s}" for s in stats.error_samples))
    record(f"load {label}: errors", total_errors, "", target="0", met=total_errors == 0)
    report_memory(label, "idle", idle)
    report_memory(label, "peak under load", peaks)
    return total_errors


def report_memory(label: str, when: str, memory: dict) -> None:
    """The target (issue 25): the whole ``postern serve`` tree under MEMORY_TARGET_MIB,
    judged on summed PSS, the tree's real footprint: summed RSS counts every page the
    forked API workers share with their master once per process (shown beside it)."""
    rss, pss = memory.get("rss", 0) / 2**20, memory.get("pss", 0) / 2**20
    met = pss < MEMORY_TARGET_MIB
    print(
        f"memory {when}: RSS {rss:.0f} MiB summed, PSS {pss:.0f} MiB, USS {memory.get('uss', 0) / 2**20:.0f} MiB "
        f"across {memory.get('processes', 0)} processes; target PSS < {MEMORY_TARGET_MIB} MiB: "
        f"{'met' if met else 'NOT met'}"
    )
    record(f"load {label}: PSS {when}", pss, "MiB", target=f"< {MEMORY_TARGET_MIB}", met=met)
    record(f"load {label}: RSS summed {when}", rss, "MiB")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument("--duration", type=float, default=60)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--database-url", default="", help="PostgreSQL URL; a fresh schema is made and dropped")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    label = "PostgreSQL" if args.database_url else "SQLite"
    schema = None
    url = args.database_url
    if url:
        url, schema = fresh_schema(args.database_url)
    try:
        with tempfile.TemporaryDirectory(prefix="postern-load-") as tmp:
            world, agents = make_agents(Path(tmp), args.agents, url, args.workers)
            serve = Child("serve", postern_cmd("serve"), world.tmp / "serve.log", env=world.env())
            with running(serve):
                wait_http(serve, world.http_port, "/healthz")
                time.sleep(2)  # the services (SMTP listener, outbox) come up after the API
                idle = memory_of(serve.proc.pid)
                stats, peaks = asyncio.run(run_load(world, agents, serve.proc.pid, args.duration, args.seed))
                errors = report(stats, peaks, idle, args.duration, label)
                # Delivery check: the outbox drains, then every accepted send is in one inbox once.
                deadline = time.monotonic() + 60
                while True:
                    counts = delivered_tags(world, url)
                    missing = stats.accepted_sends - counts.keys()
                    if not missing or time.monotonic() > deadline:
                        break
                    time.sleep(1)
                twice = sum(1 for tag in stats.accepted_sends if counts.get(tag, 0) > 1)
                print(
                    f"delivery: {len(stats.accepted_sends)} sends accepted, "
                    f"{len(stats.accepted_sends) - len(missing)} delivered, {len(missing)} missing, {twice} twice"
                )
                record(f"load {label}: sends missing", len(missing), "", target="0", met=not missing)
                return 1 if errors or missing or twice else 0
    finally:
        if schema:
            drop_schema(args.database_url, schema)


if __name__ == "__main__":
    sys.exit(main())
