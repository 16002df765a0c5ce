"""Authenticated message listing under load, against falcon doing one primary-key read.

One server at a time on a free 127.0.0.1 port, each loaded with wrk:

- ``falcon /ping``: bench/model_apps.py ``asgi_app`` under ``gunicorn -k asgi`` with
  the same worker count, as bench/serve_models.py runs it (context: the HTTP ceiling);
- ``falcon /db`` (the baseline, issue 25): the same app, one peewee primary-key SELECT
  through Postern's ``DatabaseRunner``: what one query per request costs in this model;
- ``postern /healthz`` and ``postern list``: the real ``python -m postern serve --only
  api`` (SQLite in a temp data dir), the latter
  ``GET /v1/inboxes/{id}/messages`` with ``Authorization: Bearer <agent key>`` on an
  inbox pre-filled with ``--messages`` (~2 KB) messages, default page (50).

Rounds interleave the servers; the table shows the median req/s and the ratio to
the ``falcon /db`` median of the same run.

    python bench/list_throughput.py [--duration 5] [--rounds 2] [--connections 32] [--workers 2]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import gunicorn
from harness import BENCH_DIR, Child, free_port, make_world, postern_cmd, prefill, record, running, wait_http

TARGET = 0.50  # postern list >= 50% of falcon /db (issue 25: one primary-key read, same worker model)
BASELINE = "falcon /db"
PING = "falcon /ping"


def wrk(port: int, path: str, seconds: int, connections: int, threads: int, headers: dict) -> tuple[float, int]:
    """(requests/s, errors: socket errors plus non-2xx responses) from one wrk run."""
    # --timeout 10s: Postern's list answers in ~0.3 s at this load, with a tail past wrk's default 2 s,
    # which wrk would count as socket errors rather than as (slow) requests.
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s"]
    for name, value in headers.items():
        cmd += ["-H", f"{name}: {value}"]
    out = subprocess.run([*cmd, f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    socket_errors = re.search(r"Socket errors:(.*)", out)
    errors = sum(map(int, re.findall(r"\d+", socket_errors.group(1)))) if socket_errors else 0
    return rps, errors + (int(non2xx.group(1)) if non2xx else 0)


def check_list(port: int, path: str, headers: dict, expected: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    if resp.status != 200:
        raise RuntimeError(f"{path} answered {resp.status}: {body[:300]!r}")
    items = len(json.loads(body)["data"])
    if items != expected:
        raise RuntimeError(f"{path} listed {items} messages, expected {expected}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds measured per endpoint and round [5]")
    parser.add_argument("--warmup", type=int, default=1, help="seconds of unmeasured load first [1]")
    parser.add_argument("--rounds", type=int, default=2, help="rounds over all servers; the median is shown [2]")
    parser.add_argument("--connections", type=int, default=32, help="concurrent keep-alive connections [32]")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads [2]")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes per server [2]")
    parser.add_argument("--messages", type=int, default=50, help="messages pre-filled in the listed inbox [50]")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, database) and print its path")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not on PATH: apt-get install -y wrk")

    print(
        f"# {platform.node()} | {os.cpu_count()} CPUs | Python {platform.python_version()} | "
        f"gunicorn {gunicorn.__version__} | load: wrk -t{args.threads} -c{args.connections}"
    )
    print(
        f"# {args.duration}s per endpoint after {args.warmup}s warm-up, {args.rounds} round(s), {args.workers} workers "
        f"per server; listed inbox holds {args.messages} messages, default page",
        flush=True,
    )

    samples: dict[str, list[tuple[float, int]]] = {}
    tmp = Path(tempfile.mkdtemp(prefix="postern-bench-list-"))
    try:
        world = make_world(tmp, workers=args.workers)
        inbox = world.inboxes[0]
        prefill(world, inbox, args.messages)
        auth = {"Authorization": f"Bearer {world.key}"}
        list_path = f"/v1/inboxes/{inbox['id']}/messages"
        page = min(args.messages, 50)

        import model_apps  # after the world: both use postern.core.db's database proxy in this process

        model_apps.seed(str(tmp / "bench.db"))
        model_env = {**os.environ, "BENCH_DB": str(tmp / "bench.db")}

        for round_no in range(1, args.rounds + 1):
            # (name, endpoint label, child factory, port, [(row name, path, headers)])
            port = free_port()
            gunicorn_cmd = [
                sys.executable, "-m", "gunicorn", "--chdir", str(BENCH_DIR), "-w", str(args.workers),
                "-b", f"127.0.0.1:{port}", "--graceful-timeout", "5", "--no-control-socket",
                "-k", "asgi", "model_apps:asgi_app",
            ]  # fmt: skip
            plan = [
                (
                    Child("falcon", gunicorn_cmd, tmp / f"falcon-{round_no}.log", model_env, tmp),
                    port,
                    "/ping",
                    [(PING, "/ping", {}), (BASELINE, "/db", {})],
                ),
                (
                    Child(
                        "postern",
                        postern_cmd("serve", "--only", "api"),
                        tmp / f"postern-{round_no}.log",
                        world.env(),
                        tmp,
                    ),
                    world.http_port,
                    "/healthz",
                    [("postern /healthz", "/healthz", {}), ("postern list", list_path, auth)],
                ),
            ]
            for child, child_port, ready_path, rows in plan:
                with running(child):
                    wait_http(child, child_port, ready_path)
                    if child.name == "postern":
                        check_list(child_port, list_path, auth, page)
                    for name, path, headers in rows:
                        if args.warmup:
                            wrk(child_port, path, args.warmup, args.connections, args.threads, headers)
                        rps, errors = wrk(child_port, path, args.duration, args.connections, args.threads, headers)
                        samples.setdefault(name, []).append((rps, errors))
                        print(f"  round {round_no}: {name:<17} {rps:>8,.0f} req/s  errors {errors}", file=sys.stderr)
                    child.check_alive()
        with sqlite3.connect(world.db_path) as conn:
            audit_rows = conn.execute("SELECT count(*) FROM audit_event WHERE action = 'message.list'").fetchone()[0]
    finally:
        if args.keep:
            print(f"# kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    median = {name: statistics.median(r for r, _ in runs) for name, runs in samples.items()}
    base = median[BASELINE]
    print(f"\n{'server':<17} {'req/s':>8} {'min-max':>14} {'vs /db':>8} {'errors':>6}")
    for name, runs in samples.items():
        spread = f"{min(r for r, _ in runs):,.0f}-{max(r for r, _ in runs):,.0f}"
        errors = sum(e for _, e in runs)
        print(f"{name:<17} {median[name]:>8,.0f} {spread:>14} {median[name] / base:>7.0%} {errors:>6}")
    ratio = median["postern list"] / base
    print(
        f"\ntarget: postern list >= {TARGET:.0%} of {BASELINE} -> {ratio:.0%}, "
        f"{'met' if ratio >= TARGET else 'NOT met'}"
    )
    record("list messages, req/s", median["postern list"], "req/s", BASELINE, base, f">= {TARGET:.0%}", ratio >= TARGET)
    record("postern /healthz, req/s", median["postern /healthz"], "req/s", BASELINE, base)
    print(f"message.list audit rows written during the run: {audit_rows:,} (one committed write per list request)")
    errors = sum(e for runs in samples.values() for _, e in runs)
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
