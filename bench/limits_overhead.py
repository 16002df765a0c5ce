"""What request rate limits cost a served request, and what a flood past them costs.

The real ``python -m postern serve --only api`` (SQLite in a temp data dir, ``--workers``
workers), loaded with wrk, one server at a time on a free 127.0.0.1 port:

- ``limits off`` (``[limits] enabled = false``, what every other bench runs with) against
  ``limits high`` (on, every rate 1,000,000/minute: each request is charged to its agent
  key, enrollment and customer in the shared counters file, and none is refused), on
  ``GET /v1/inboxes/{id}/messages`` (the list of list_throughput.py: ``--messages`` ~2 KB
  messages, default page), ``POST /v1/inboxes/{id}/messages`` (a send to an outside
  address: with no smarthost the default ``smtp_local`` backend keeps it as ``captured``;
  a wrk Lua script posts the JSON body) and ``GET /v1/me`` (the cheapest authenticated
  read, where the limiter's share is largest). Sends go from a second inbox, so the
  listed one never grows. Rounds interleave the two configs (ABBA order, as the
  database grows with every send); the table shows the medians and the ratio on/off.
- floods, on a fresh data dir: limits on with ``agent_read = "10/minute"``, wrk on
  ``GET /v1/me`` with the good key (all but 10 a window should be 429), then with a bad
  key (``pk_agent_`` + 43 x) and ``ip_failed_auth = "30/minute"`` (30 401s, then 429s);
  the 429s/s against ``GET /v1/me`` with limits off, and the audit rows each flood left
  (refusals are audited in aggregate: the 1st, 10th, 100th… of a window).

    python bench/limits_overhead.py [--duration 4] [--rounds 2] [--flood 5] [--connections 32] [--workers 2]
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import platform
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import gunicorn
from harness import Child, World, make_world, postern_cmd, prefill, record, running, wait_http

TARGET = 0.90  # limits high >= 90% of limits off, on every endpoint
FLOOD_LIMITS = 'agent_read = "10/minute"\nip_failed_auth = "30/minute"\n'
READ_LIMIT, FAILED_AUTH_LIMIT, WINDOW = 10, 30, 60
BAD_KEY = "pk_agent_" + "x" * 43
SEND_BODY = {"to": ["someone@example.org"], "subject": "limits bench", "text": "hello from the limits bench\n"}

# Counts the status of every answer (wrk threads each keep their own table) and prints
# them with the measured duration, for the floods.
STATUS_LUA = """
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) statuses = {} end
function response(status, headers, body) statuses[status] = (statuses[status] or 0) + 1 end
function done(summary, latency, requests)
  io.write(string.format("duration_us %d\\n", summary.duration))
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses")) do io.write(string.format("status %d %d\\n", status, n)) end
  end
end
"""


def send_lua(body: dict) -> str:
    """A wrk script that POSTs ``body`` as JSON (the Authorization header comes with -H)."""
    return (
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(json.dumps(body))}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
    )


def wrk(port: int, path: str, seconds: int, args, headers: dict, script: Path | None = None) -> dict:
    """One wrk run: requests/s, errors (socket errors plus non-2xx answers) and, with
    STATUS_LUA, the answers by status."""
    cmd = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{seconds}s", "--timeout", "10s"]
    for name, value in headers.items():
        cmd += ["-H", f"{name}: {value}"]
    if script is not None:
        cmd += ["-s", str(script)]
    out = subprocess.run([*cmd, f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True, check=True).stdout
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    socket_errors = re.search(r"Socket errors:(.*)", out)
    statuses: dict[int, int] = {}
    for status, n in re.findall(r"^status (\d+) (\d+)$", out, re.M):
        statuses[int(status)] = statuses.get(int(status), 0) + int(n)
    duration = re.search(r"^duration_us (\d+)$", out, re.M)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "errors": (sum(map(int, re.findall(r"\d+", socket_errors.group(1)))) if socket_errors else 0)
        + (int(non2xx.group(1)) if non2xx else 0),
        "statuses": statuses,
        "seconds": int(duration.group(1)) / 1e6 if duration else float(seconds),
    }


def request(port: int, method: str, path: str, headers: dict, body: dict | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        data = json.dumps(body).encode() if body is not None else None
        if data is not None:
            headers = {**headers, "Content-Type": "application/json"}
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


def check_server(port: int, world: World, mode: str, list_path: str, send_path: str, page: int) -> None:
    """One list and one send answer as expected, with RateLimit headers only when limits are on."""
    auth = {"Authorization": f"Bearer {world.key}"}
    status, headers, body = request(port, "GET", list_path, auth)
    if status != 200 or len(json.loads(body)["data"]) != page:
        raise RuntimeError(f"{list_path} answered {status}: {body[:300]!r}")
    if (headers.get("RateLimit-Policy") is not None) != (mode == "high"):
        raise RuntimeError(f"limits {mode}, but RateLimit-Policy is {headers.get('RateLimit-Policy')!r}")
    status, _, body = request(port, "POST", send_path, auth, SEND_BODY)
    if status != 201 or json.loads(body)["status"] != "captured":
        raise RuntimeError(f"POST {send_path} answered {status}: {body[:300]!r}")


def audit_counts(db_path: Path) -> dict[tuple[str, str | None], int]:
    with sqlite3.connect(db_path) as conn:
        rows = conn.execute("SELECT action, code, count(*) FROM audit_event GROUP BY action, code").fetchall()
    return {(action, code): n for action, code, n in rows}


def audit_delta(before: dict, after: dict) -> dict:
    return {key: n - before.get(key, 0) for key, n in after.items() if n != before.get(key, 0)}


def within_one_window(seconds: int) -> None:
    """Start a flood where it fits in one clock-aligned minute window (the limiter's)."""
    left = WINDOW - time.time() % WINDOW
    if left < seconds + 3:
        print(f"  waiting {left:.0f} s for the next minute window", file=sys.stderr, flush=True)
        time.sleep(left + 0.2)


def windows_spanned(start: float, end: float) -> int:
    return int(end // WINDOW) - int(start // WINDOW) + 1


def run_floods(tmp: Path, args, status_script: Path) -> dict:
    """Both floods on one server with ``FLOOD_LIMITS``, on a data dir of their own: fresh
    counters (the rounds' stay in postern.db-ratelimits for the rest of their minute) and
    a clean audit table. The good key's flood comes first: the bad key's locks the
    address out for the rest of its window."""
    (tmp / "flood").mkdir()
    world = make_world(tmp / "flood", workers=args.workers, limits=FLOOD_LIMITS)
    child = Child("postern", postern_cmd("serve", "--only", "api"), tmp / "flood.log", world.env(), tmp)
    result = {}
    with running(child):
        wait_http(child, world.http_port, "/healthz")  # /healthz is not rate-limited
        audits = [audit_counts(world.db_path)]
        for name, key in (("read", world.key), ("auth", BAD_KEY)):
            within_one_window(args.flood)
            start = time.time()
            result[name] = wrk(world.http_port, "/v1/me", args.flood, args, {"Authorization": f"Bearer {key}"},
                               status_script)  # fmt: skip
            result[name]["windows"] = windows_spanned(start, time.time())
            print(f"  flood {name}: {result[name]['statuses']}", file=sys.stderr, flush=True)
            if name == "read":
                audits.append(audit_counts(world.db_path))
        child.check_alive()
    audits.append(audit_counts(world.db_path))  # after the stop: deferred read audits are flushed
    result["read"]["audit"], result["auth"]["audit"] = audit_delta(*audits[:2]), audit_delta(*audits[1:])
    return result


def flood_table(floods: dict, me_off: float | None) -> bool:
    """The floods' rows: 429s/s (against GET /v1/me with limits off, when measured),
    the answers that were not 429 against the limit, and the audit rows left."""
    ok = True
    print(f"\n{'flood':<36} {'429/s':>9} {'vs off':>7} {'not 429':>8} {'expect':>8} {'result':>6} {'audit':>6}")
    for name, label, limit, status in (
        ("read", "GET /v1/me, agent_read=10/minute", READ_LIMIT, 200),
        ("auth", "bad key, ip_failed_auth=30/minute", FAILED_AUTH_LIMIT, 401),
    ):
        flood = floods[name]
        statuses, expect = flood["statuses"], limit * flood["windows"]
        refused = statuses.get(429, 0)
        rate = refused / flood["seconds"]
        others = sum(statuses.values()) - refused
        audit_rows = sum(flood["audit"].values())
        # Within the limit each request is audited as ever (a read, a failed sign-in);
        # refusals in aggregate, the 1st, 10th, 100th… of a window: log10(refused) + 1 rows.
        bound = expect + (math.floor(math.log10(refused)) + 1 if refused else 0) * flood["windows"]
        met = statuses.get(status, 0) == expect == others and audit_rows <= bound
        ok &= met
        ratio = f"{rate / me_off:.0%}" if me_off else "-"
        print(
            f"{label:<36} {rate:>9,.0f} {ratio:>7} {others:>8,} {f'{expect} x{status}':>8} "
            f"{'pass' if met else 'FAIL':>6} {audit_rows:>6,}"
        )
        record(f"flood {label}, 429/s", rate, "req/s", "GET /v1/me, limits off", me_off, f"{expect} not 429", met)
    print("  vs off: 429s/s over GET /v1/me with limits off (200s); expect: answers other than 429, all of that status")
    for name in ("read", "auth"):
        flood = floods[name]
        parts = ", ".join(f"{action} {code}: {n}" for (action, code), n in sorted(flood["audit"].items(), key=str))
        print(f"  audit rows of the {name} flood: {sum(flood['audit'].values()):,} for "
              f"{sum(flood['statuses'].values()):,} requests ({parts})")  # fmt: skip
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=4, help="seconds measured per endpoint and round [4]")
    parser.add_argument("--warmup", type=int, default=1, help="seconds of unmeasured load first [1]")
    parser.add_argument("--rounds", type=int, default=2, help="rounds over both configs; the median is shown [2]")
    parser.add_argument("--flood", type=int, default=5, help="seconds of each flood [5]")
    parser.add_argument("--connections", type=int, default=32, help="concurrent keep-alive connections [32]")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads [2]")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes [2]")
    parser.add_argument("--messages", type=int, default=50, help="messages pre-filled in the listed inbox [50]")
    parser.add_argument("--only", default="list,send,me", help="endpoints compared, of list,send,me [all]")
    parser.add_argument("--no-floods", action="store_true", help="leave the floods out")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, databases) and print its path")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not on PATH: apt-get install -y wrk")
    if args.flood + 5 > WINDOW:
        sys.exit(f"--flood must leave room in one {WINDOW} s window")

    print(
        f"# {platform.node()} | {os.cpu_count()} CPUs | Python {platform.python_version()} | SQLite "
        f"{sqlite3.sqlite_version} | gunicorn {gunicorn.__version__} | load: wrk -t{args.threads} -c{args.connections}"
    )
    print(
        f"# {args.duration}s per endpoint after {args.warmup}s warm-up, {args.rounds} round(s), "
        f"{args.workers} workers; listed inbox holds {args.messages} messages; floods {args.flood}s",
        flush=True,
    )

    samples: dict[tuple[str, str], list[dict]] = {}
    tmp = Path(tempfile.mkdtemp(prefix="postern-bench-limits-overhead-"))
    try:
        (tmp / "rounds").mkdir()
        world = make_world(tmp / "rounds", inboxes=2, workers=args.workers)
        listed, sender = world.inboxes
        prefill(world, listed, args.messages)
        auth = {"Authorization": f"Bearer {world.key}"}
        list_path, send_path = f"/v1/inboxes/{listed['id']}/messages", f"/v1/inboxes/{sender['id']}/messages"
        send_script, status_script = tmp / "send.lua", tmp / "statuses.lua"
        send_script.write_text(send_lua(SEND_BODY))
        status_script.write_text(STATUS_LUA)
        endpoints = [
            (name, path, script)
            for key, name, path, script in (
                ("list", "list", list_path, None),
                ("send", "send", send_path, send_script),
                ("me", "GET /v1/me", "/v1/me", None),
            )
            if key in args.only.split(",")
        ]

        for round_no in range(1, args.rounds + 1):
            for mode in ("off", "high") if round_no % 2 else ("high", "off"):
                world.write_config(limits=mode)
                child = Child("postern", postern_cmd("serve", "--only", "api"), tmp / f"{mode}-{round_no}.log",
                              world.env(), tmp)  # fmt: skip
                with running(child):
                    wait_http(child, world.http_port, "/healthz")
                    check_server(world.http_port, world, mode, list_path, send_path, min(args.messages, 50))
                    for name, path, script in endpoints:
                        if args.warmup:
                            wrk(world.http_port, path, args.warmup, args, auth, script)
                        result = wrk(world.http_port, path, args.duration, args, auth, script)
                        samples.setdefault((name, mode), []).append(result)
                        print(
                            f"  round {round_no}: {name:<11} limits {mode:<4} {result['rps']:>8,.0f} req/s  "
                            f"errors {result['errors']}",
                            file=sys.stderr,
                            flush=True,
                        )
                    child.check_alive()

        floods = None if args.no_floods else run_floods(tmp, args, status_script)
    finally:
        if args.keep:
            print(f"# kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    # ---- table -----------------------------------------------------------------------
    median = {key: statistics.median(r["rps"] for r in runs) for key, runs in samples.items()}
    errors = {key: sum(r["errors"] for r in runs) for key, runs in samples.items()}
    ok = True
    print(f"\n{'figure':<36} {'req/s':>9} {'min-max':>15} {'vs off':>7} {'target':>8} {'result':>6} {'errors':>6}")
    for name, _, _ in endpoints:
        for mode in ("off", "high"):
            runs = samples[(name, mode)]
            spread = f"{min(r['rps'] for r in runs):,.0f}-{max(r['rps'] for r in runs):,.0f}"
            ratio = median[(name, mode)] / median[(name, "off")]
            target, verdict = "", ""
            if mode == "high":
                met = ratio >= TARGET and errors[(name, mode)] == 0
                ok &= met
                target, verdict = f">= {TARGET:.0%}", "pass" if met else "FAIL"
                record(f"{name}, limits on (high), req/s", median[(name, mode)], "req/s",
                       f"{name}, limits off", median[(name, "off")], target, met)  # fmt: skip
            print(
                f"{name + ', limits ' + mode:<36} {median[(name, mode)]:>9,.0f} {spread:>15} {ratio:>7.0%} "
                f"{target:>8} {verdict:>6} {errors[(name, mode)]:>6}"
            )
    if floods is not None:
        ok &= flood_table(floods, median.get(("GET /v1/me", "off")))
    print(f"\ntarget: every 'limits high' row >= {TARGET:.0%} of 'limits off'; floods as expected -> "
          f"{'met' if ok else 'NOT met'}")  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
