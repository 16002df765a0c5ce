"""List latency as an inbox grows: 1k -> 100k stored messages by default, 1M on request.

One ``postern serve --only api`` (SQLite, 2 workers) serves the whole run. The listed
inbox starts with ``--templates`` messages stored through the core's ingest; before
each measurement it is grown to the next size by bulk SQL (one ``INSERT ... SELECT``
over a recursive CTE copying those rows with fresh ids and sequence numbers), so a
million rows take seconds rather than an hour of SMTP. Growing happens while the
server runs, as mail would arrive.

At each size, ``--requests`` sequential keep-alive requests of each kind:

- ``first page``: ``GET /v1/inboxes/{id}/messages`` (newest 50), what agents poll;
- ``deep page``: the same with a ``page_token`` halfway down the inbox;
- ``by thread``: the first page filtered by ``thread_id`` (the (thread, seq) index).

The baseline of each row is the same request at the smallest size in the same run: the
ratio is how much slower listing got as the inbox grew (target: at most 2x).

    python bench/list_growth.py                                  # 1k, 10k, 100k
    python bench/list_growth.py --sizes 1000,10000,100000,1000000  # the 1M figure; ~1.5 GB of disk
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from harness import Child, make_world, percentile, postern_cmd, prefill, record, running, wait_http

from postern.core.pagination import encode_token

TARGET = 2.0  # latency at the largest size <= 2x the smallest
# Hex digits outside base32's [a-z2-7] mapped into it, so bulk ids have the shape of real ones.
ID_EXPR = (
    "'msg_' || "
    + "replace(replace(replace(replace(lower(hex(randomblob(13))), '0', 'k'), '1', 'm'), '8', 'n'), '9', 'p')"
)


def grow(db_path: Path, inbox_id: str, target: int) -> float:
    """Copy the inbox's template rows until it holds ``target`` messages; returns seconds."""
    start = time.monotonic()
    with contextlib.closing(sqlite3.connect(db_path, timeout=60)) as conn:
        have = conn.execute("SELECT count(*) FROM message WHERE inbox_id = ?", (inbox_id,)).fetchone()[0]
        templates = [r[0] for r in conn.execute("SELECT id FROM message WHERE inbox_id = ? ORDER BY seq", (inbox_id,))]
        columns = [r[1] for r in conn.execute("PRAGMA table_info(message)")]
        copied = [c for c in columns if c not in ("id", "seq", "message_id_header")]
        last_seq = conn.execute("SELECT last_seq FROM inbox WHERE id = ?", (inbox_id,)).fetchone()[0]
        missing = target - have
        if missing <= 0:
            return 0.0
        column_list = ", ".join(f'"{c}"' for c in copied)
        template_values = ", ".join(f"('{t}', {i})" for i, t in enumerate(templates[:20]))
        with conn:
            conn.execute(
                f"""
                WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?),
                     t(tid, k) AS (VALUES {template_values})
                INSERT INTO message ("id", "seq", "message_id_header", {column_list})
                SELECT {ID_EXPR}, ? + n.i, '<bulk-' || (? + n.i) || '@bench.example>', {column_list}
                FROM n JOIN t ON t.k = n.i % ? JOIN message ON message.id = t.tid
                """,
                (missing, last_seq, last_seq, min(len(templates), 20)),
            )
            conn.execute("UPDATE inbox SET last_seq = last_seq + ? WHERE id = ?", (missing, inbox_id))
            conn.execute(
                "UPDATE thread SET message_count = (SELECT count(*) FROM message WHERE thread_id = thread.id) "
                "WHERE inbox_id = ?",
                (inbox_id,),
            )
    return time.monotonic() - start


def timed_requests(port: int, path: str, headers: dict, count: int, expect: int) -> list[float]:
    """Milliseconds per request, sequential on one keep-alive connection; every page must be full."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    times = []
    try:
        for _ in range(count):
            start = time.perf_counter()
            conn.request("GET", path, headers=headers)
            resp = conn.getresponse()
            body = resp.read()
            times.append((time.perf_counter() - start) * 1000)
            if resp.status != 200 or len(json.loads(body)["data"]) != expect:
                raise RuntimeError(f"GET {path} -> {resp.status}: {body[:300]!r}")
    finally:
        conn.close()
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000,100000", help="messages in the inbox, ascending [1k,10k,100k]")
    parser.add_argument("--requests", type=int, default=200, help="sequential requests per kind and size [200]")
    parser.add_argument("--templates", type=int, default=20, help="messages ingested for real, then copied [20]")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, database) and print its path")
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    if sizes[0] < max(args.templates, 100):
        sys.exit(f"the smallest size must be at least {max(args.templates, 100)}")

    print(
        f"# {platform.node()} | {os.cpu_count()} CPUs | Python {platform.python_version()} | "
        f"SQLite {sqlite3.sqlite_version}"
    )
    print(f"# sizes {sizes}, {args.requests} sequential requests per kind and size, 2 API workers", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="postern-bench-growth-"))
    results: dict[str, dict[int, list[float]]] = {}
    try:
        world = make_world(tmp)
        inbox = world.inboxes[0]
        prefill(world, inbox, args.templates, body_bytes=512)
        with contextlib.closing(sqlite3.connect(world.db_path)) as conn:
            thread_id = conn.execute(
                "SELECT thread_id FROM message WHERE inbox_id = ? LIMIT 1", (inbox["id"],)
            ).fetchone()[0]
        auth = {"Authorization": f"Bearer {world.key}"}
        base = f"/v1/inboxes/{inbox['id']}/messages"
        child = Child("postern", postern_cmd("serve", "--only", "api"), tmp / "serve.log", world.env(), tmp)
        with running(child):
            wait_http(child, world.http_port, "/healthz")
            for size in sizes:
                took = grow(world.db_path, inbox["id"], size)
                kinds = {
                    "first page": (base, 50),
                    "deep page": (f"{base}?page_token={encode_token([size // 2])}", 50),
                    "by thread": (f"{base}?thread_id={thread_id}", min(50, size // args.templates)),
                }
                for kind, (path, expect) in kinds.items():
                    timed_requests(world.http_port, path, auth, 10, expect)  # warm the page cache
                    times = timed_requests(world.http_port, path, auth, args.requests, expect)
                    results.setdefault(kind, {})[size] = times
                    print(
                        f"  {size:>9,} msgs (grown in {took:5.1f}s): {kind:<10} p50 {percentile(times, 50):6.2f} ms",
                        file=sys.stderr,
                    )
            child.check_alive()
    finally:
        if args.keep:
            print(f"# kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    print(f"\n{'request':<11} {'messages':>10} {'p50 ms':>8} {'p99 ms':>8} {'vs smallest':>12}")
    worst = 0.0
    for kind, by_size in results.items():
        small = percentile(by_size[sizes[0]], 50)
        for size, times in by_size.items():
            p50 = percentile(times, 50)
            worst = max(worst, p50 / small)
            print(f"{kind:<11} {size:>10,} {p50:>8.2f} {percentile(times, 99):>8.2f} {p50 / small:>11.2f}x")
        largest = percentile(by_size[sizes[-1]], 50)
        record(
            f"list {kind} at {sizes[-1]:,} msgs p50",
            largest,
            "ms",
            f"same at {sizes[0]:,}",
            small,
            f"<= {TARGET:g}x",
            largest / small <= TARGET,
        )
    print(
        f"\ntarget: p50 at {sizes[-1]:,} <= {TARGET:g}x p50 at {sizes[0]:,} -> worst {worst:.2f}x, "
        f"{'met' if worst <= TARGET else 'NOT met'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
