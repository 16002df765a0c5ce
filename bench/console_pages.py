"""Console page latency and weight as an inbox grows (1k -> 100k stored messages).

One ``postern serve --only api`` (SQLite, 2 workers) serves the run; an operator signs
in to the console with an admin token. At each size the listed inbox is grown by bulk
SQL (``list_growth.grow``), then each page is fetched ``--requests`` times in sequence
on one keep-alive connection, with the session cookie, as a browser would:

- ``overview``: counts (every message of the tenant), health, recent activity;
- ``inbox``: the newest 50 messages of the grown inbox;
- ``message``: one message with headers and bodies;
- ``inboxes`` and ``audit``: the listings (the audit log grows with every request).

The tenant also has ``--inboxes`` (10,000) inboxes, copied by bulk SQL.

Targets: p95 of every page under 100 ms at the largest size, and each page's weight
(HTML plus the stylesheet and scripts it loads, uncompressed) under 150 KB. The baseline
beside each latency is the same page at the smallest size in the same run.

    python bench/console_pages.py                      # 1k, 10k, 100k
    python bench/console_pages.py --sizes 1000,100000 --requests 100
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

from harness import Child, make_world, percentile, postern_cmd, prefill, record, running, wait_http
from list_growth import ID_EXPR, grow

P95_TARGET_MS = 100.0
WEIGHT_TARGET_KB = 150.0


def add_inboxes(db_path: Path, inbox_id: str, total: int) -> None:
    """Copy the inbox row until the tenant has ``total`` inboxes (fresh ids and addresses),
    as ``grow`` copies messages: 10k inboxes in a second rather than 10k API calls."""
    with contextlib.closing(sqlite3.connect(db_path, timeout=60)) as conn, conn:
        have = conn.execute("SELECT count(*) FROM inbox").fetchone()[0]
        conn.execute(
            f"""
            WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)
            INSERT INTO inbox (id, customer_id, enrollment_id, agent_id, address, username, domain,
                               display_name, client_id, created_at, last_seq)
            SELECT {ID_EXPR.replace("'msg_'", "'inb_'")}, customer_id, enrollment_id, agent_id,
                   'extra' || n.i || '@' || domain, 'extra' || n.i, domain, '', NULL, created_at, 0
            FROM n JOIN inbox ON inbox.id = ?
            """,
            (total - have, inbox_id),
        )


def admin_token(world) -> str:
    out = subprocess.run(
        postern_cmd("admin", "token", "create", "--json"),
        env=world.env(),
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)["admin_token"]


def sign_in(port: int, token: str) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(
            "POST",
            "/console/login",
            body=urlencode({"token": token}),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        resp = conn.getresponse()
        resp.read()
        if resp.status != 303:
            raise RuntimeError(f"sign-in answered {resp.status}")
        cookie = resp.getheader("Set-Cookie")
        return cookie.split(";", 1)[0]
    finally:
        conn.close()


def timed_pages(port: int, path: str, cookie: str, count: int) -> tuple[list[float], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    times, body = [], b""
    try:
        for _ in range(count):
            start = time.perf_counter()
            conn.request("GET", path, headers={"Cookie": cookie})
            resp = conn.getresponse()
            body = resp.read()
            times.append((time.perf_counter() - start) * 1000)
            if resp.status != 200:
                raise RuntimeError(f"GET {path} -> {resp.status}: {body[:300]!r}")
    finally:
        conn.close()
    return times, body


def weight(port: int, html: bytes, cookie: str) -> int:
    """Bytes of the page plus every stylesheet and script it loads (uncompressed)."""
    total = len(html)
    for url in set(re.findall(rb'(?:src|href)="(/console/static/[^"]+)"', html)):
        _, body = timed_pages(port, url.decode(), cookie, 1)
        total += len(body)
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000,100000", help="messages in the inbox, ascending")
    parser.add_argument("--requests", type=int, default=100, help="sequential requests per page and size [100]")
    parser.add_argument("--templates", type=int, default=20, help="messages ingested for real, then copied [20]")
    parser.add_argument("--inboxes", type=int, default=10000, help="inboxes of the tenant [10000]")
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    print(
        f"# {platform.node()} | {os.cpu_count()} CPUs | Python {platform.python_version()} | "
        f"SQLite {sqlite3.sqlite_version}\n# sizes {sizes}, {args.inboxes:,} inboxes, "
        f"{args.requests} requests per page and size",
        flush=True,
    )
    tmp = Path(tempfile.mkdtemp(prefix="postern-bench-console-"))
    results: dict[str, dict[int, list[float]]] = {}
    weights: dict[str, int] = {}
    try:
        world = make_world(tmp)
        inbox = world.inboxes[0]
        prefill(world, inbox, args.templates, body_bytes=2048)
        add_inboxes(world.db_path, inbox["id"], args.inboxes)
        with contextlib.closing(sqlite3.connect(world.db_path)) as conn:
            message_id = conn.execute("SELECT id FROM message WHERE inbox_id = ? LIMIT 1", (inbox["id"],)).fetchone()[0]
            agent_id = conn.execute("SELECT agent_id FROM inbox WHERE id = ?", (inbox["id"],)).fetchone()[0]
        token = admin_token(world)
        child = Child("postern", postern_cmd("serve", "--only", "api"), tmp / "serve.log", world.env(), tmp)
        with running(child):
            wait_http(child, world.http_port, "/healthz")
            cookie = sign_in(world.http_port, token)
            pages = {
                "overview": "/console",
                "inbox": f"/console/inboxes/{inbox['id']}",
                "message": f"/console/inboxes/{inbox['id']}/messages/{message_id}",
                "inboxes": "/console/inboxes",
                "audit": "/console/audit",
                "domains": "/console/domains",
                "webhooks": "/console/webhooks",
                "agent": f"/console/agents/{agent_id}",
            }
            for size in sizes:
                took = grow(world.db_path, inbox["id"], size)
                for name, path in pages.items():
                    timed_pages(world.http_port, path, cookie, 5)  # warm the page cache
                    times, html = timed_pages(world.http_port, path, cookie, args.requests)
                    results.setdefault(name, {})[size] = times
                    weights[name] = weight(world.http_port, html, cookie)
                    print(
                        f"  {size:>9,} msgs (grown in {took:5.1f}s): {name:<9} p95 {percentile(times, 95):7.2f} ms",
                        file=sys.stderr,
                    )
            child.check_alive()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"\n{'page':<9} {'messages':>10} {'p50 ms':>8} {'p95 ms':>8} {'vs smallest':>12} {'weight KB':>10}")
    met = True
    for name, by_size in results.items():
        small = percentile(by_size[sizes[0]], 95)
        for size, times in by_size.items():
            p95 = percentile(times, 95)
            print(
                f"{name:<9} {size:>10,} {percentile(times, 50):>8.2f} {p95:>8.2f} {p95 / small:>11.2f}x "
                f"{weights[name] / 1024:>10.1f}"
            )
        largest = percentile(by_size[sizes[-1]], 95)
        ok = largest < P95_TARGET_MS and weights[name] / 1024 < WEIGHT_TARGET_KB
        met = met and ok
        record(
            f"console {name} at {sizes[-1]:,} msgs p95",
            largest,
            "ms",
            f"same at {sizes[0]:,}",
            small,
            f"< {P95_TARGET_MS:g} ms, < {WEIGHT_TARGET_KB:g} KB",
            ok,
        )
    print(
        f"\ntarget: p95 < {P95_TARGET_MS:g} ms at {sizes[-1]:,} and weight < {WEIGHT_TARGET_KB:g} KB: "
        f"{'met' if met else 'NOT met'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
