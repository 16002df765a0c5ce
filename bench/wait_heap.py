"""Where a parked ``wait_for_email`` keeps its memory: the Python heap of one API worker,
by the package that allocated it, per parked wait.

Starts ``postern serve`` with one API worker whose Python traces its allocations
(``tracemalloc``, started by a ``sitecustomize`` this script writes into its temporary
directory; it is on the server's PYTHONPATH and on no one else's). It parks a tenth of
``--waiters`` first (a worker's first waits also warm it up), snapshots the worker's heap,
parks the rest, snapshots again, and prints the difference divided by the waits parked in
between: by package (gunicorn's HTTP server, falcon, Postern, asyncio) and by the line of
Postern's code that led to the allocation.

What it tells: which part of the stack a parked wait's memory belongs to, and so which of
it Postern can change. wait_latency.py reports the same waits' PSS; park_floor.py the
bare gunicorn floor. tracemalloc sees only the Python heap (no allocator slack, no kernel
socket buffers), so its total is below the PSS figure.

    python bench/wait_heap.py [--waiters 1000] [--top 15]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import shutil
import signal
import tempfile
import tracemalloc
from pathlib import Path

import psutil
from harness import Child, make_world, postern_cmd, running, wait_http, wait_smtp
from wait_latency import Client, audited_waits, wait_parked

SNAPSHOT_SIGNAL = signal.SIGRTMIN + 4
SITECUSTOMIZE = f"""
import os, signal, tracemalloc

tracemalloc.start(16)
_taken = [0]


def _snapshot(signum, frame):
    _taken[0] += 1
    tracemalloc.take_snapshot().dump(os.path.join({{dir!r}}, f"heap-{{{{os.getpid()}}}}-{{{{_taken[0]}}}}"))


signal.signal({int(SNAPSHOT_SIGNAL)}, _snapshot)
"""
ROOT = str(Path(__file__).resolve().parents[1])


def api_worker(serve_pid: int) -> psutil.Process:
    """The gunicorn worker: the child of the API master (``serve --only api``)."""
    for proc in psutil.Process(serve_pid).children(recursive=True):
        parent = proc.parent()
        if parent is not None and parent.pid != serve_pid and "--only" in parent.cmdline():
            return proc
    raise RuntimeError("no API worker found")


async def snapshot(worker: psutil.Process, directory: Path, number: int) -> tracemalloc.Snapshot:
    worker.send_signal(SNAPSHOT_SIGNAL)
    path = directory / f"heap-{worker.pid}-{number}"
    for _ in range(600):  # a snapshot of a big heap takes seconds
        await asyncio.sleep(0.1)
        if path.exists() and path.stat().st_size > 0:
            await asyncio.sleep(0.5)  # written in full
            return tracemalloc.Snapshot.load(str(path))
    raise RuntimeError(f"worker {worker.pid} wrote no snapshot")


async def park(world, serve_pid: int, waiters: int, directory: Path):
    headers = {"Authorization": f"Bearer {world.key}"}
    inbox = world.inboxes[0]["id"]
    clients = [Client(world.http_port, headers) for _ in range(waiters)]
    futures, audited = [], audited_waits(world.db_path)
    warm = max(1, waiters // 10)
    worker = api_worker(serve_pid)
    for i, client in enumerate(clients):
        futures.append(await client.get(f"/v1/inboxes/{inbox}/messages/wait?after=0&timeout=300"))
        if i + 1 == warm:
            await wait_parked(world.db_path, audited + warm, futures)
            await asyncio.sleep(1)
            before = await snapshot(worker, directory, 1)
    await wait_parked(world.db_path, audited + waiters, futures)
    await asyncio.sleep(1)
    after = await snapshot(worker, directory, 2)
    if any(f.done() for f in futures):
        raise RuntimeError("a waiter was answered before the second snapshot")
    for future in futures:  # closing the connections fails their requests: expected here
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
    for client in clients:
        client.close()
    return before, after, waiters - warm


def package(filename: str) -> str:
    if filename.startswith(ROOT + "/postern/"):
        return "postern"
    if "site-packages/" in filename:
        return filename.split("site-packages/")[1].split("/")[0]
    return "stdlib " + Path(filename).stem  # asyncio's locks, tasks, ...


def report(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, waits: int, top: int) -> None:
    ignore = [tracemalloc.Filter(False, tracemalloc.__file__)]
    stats = after.filter_traces(ignore).compare_to(before.filter_traces(ignore), "traceback")
    by_package, by_line = collections.Counter(), collections.Counter()
    for stat in stats:
        frames = list(stat.traceback)[::-1]  # innermost first
        by_package[package(frames[0].filename)] += stat.size_diff
        ours = next((f for f in frames if f.filename.startswith(ROOT + "/postern/")), None)
        where = f"{os.path.relpath(ours.filename, ROOT)}:{ours.lineno}" if ours else "(no Postern frame)"
        by_line[(package(frames[0].filename), where)] += stat.size_diff
    total = sum(by_package.values())
    print(f"\nPython heap per parked wait: {total / waits:,.0f} B ({waits} waits between the snapshots)")
    print(f"\n{'allocated in':<28} {'B per wait':>10} {'share':>7}")
    for name, size in by_package.most_common(top):
        print(f"{name:<28} {size / waits:>10,.0f} {size / total:>7.0%}")
    print(f"\n{'allocated in':<22} {'reached from (innermost Postern line)':<44} {'B per wait':>10}")
    for (name, where), size in by_line.most_common(top):
        print(f"{name:<22} {where:<44} {size / waits:>10,.0f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--waiters", type=int, default=1000, help="waits parked on one inbox [1000]")
    parser.add_argument("--top", type=int, default=15, help="rows per table [15]")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="postern-bench-heap-"))
    try:
        site = tmp / "site"
        site.mkdir()
        (site / "sitecustomize.py").write_text(SITECUSTOMIZE.format(dir=str(tmp)))
        connections = f"max_connections = {args.waiters + 100}\nmax_connections_per_client = 0\n"
        world = make_world(tmp, inboxes=1, workers=1, server_extra=connections)
        env = {**world.env(), "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}
        child = Child("postern serve", postern_cmd("serve"), tmp / "serve.log", env, tmp)
        print(f"# postern serve: 1 API worker, tracemalloc on | {args.waiters} waiters on one inbox", flush=True)
        with running(child):
            wait_http(child, world.http_port, "/healthz")
            wait_smtp(child, world.smtp_port)
            before, after, waits = asyncio.run(park(world, child.proc.pid, args.waiters, tmp))
            child.check_alive()
        report(before, after, waits, args.top)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
