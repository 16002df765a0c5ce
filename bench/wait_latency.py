"""wait_for_email wake-up latency: from the SMTP 250 to each parked waiter's HTTP response.

Starts the real ``python -m postern serve`` (2 API workers and the supervised SMTP
listener, SQLite in a temp data dir) with one tenant, one agent key and
``--inboxes`` inboxes. Then, for ``--rounds`` rounds:

1. ``--waiters`` keep-alive connections each send
   ``GET /v1/inboxes/{id}/messages/wait?after=<cursor>&timeout=300`` (waiters spread
   round-robin over the inboxes);
2. the bench waits until every wait has passed its access check (one
   ``message.wait`` audit row each, read from the database) plus ``--settle`` seconds,
   so all are parked;
3. one message goes out over SMTP with a RCPT for every inbox, and the time the
   ``250`` reply arrives is taken;
4. each waiter's latency is the time its response arrived minus that 250 time; the
   returned cursor re-arms it for the next round.

Timestamps are taken in the client's ``data_received`` callbacks (raw asyncio
protocols, uvloop if importable), so they are not delayed behind other coroutines.
A negative latency means the response beat the 250 to the client: Postern rings the
doorbell right after the commit, before the 250 is written.

The same run measures a trivial round trip as the baseline: sequential
``GET /healthz`` on one keep-alive connection (two small queries).

With ``--delivery-cursor`` the waits carry no ``after``: each wake also claims the
agent's delivery cursor (a compare-and-swap UPDATE; docs/mail.md).

    python bench/wait_latency.py [--waiters 100] [--rounds 20] [--inboxes 1] [--delivery-cursor]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

from harness import Child, make_world, memory_of, percentile, postern_cmd, record, running, wait_http, wait_smtp

TARGET_P50_MS = 10.0
TARGET_P99_MS = 50.0  # up to 1,000 waiters (issue 25)
TARGET_P99_MS_10K = 250.0  # 10,000 waiters (issue 25)
TARGET_BYTES_PER_WAIT = 20 * 1024
WAIT_TIMEOUT = 300  # seconds each waiter asks the server to park for (its maximum): arming 10,000 takes a while


class HttpConn(asyncio.Protocol):
    """One HTTP/1.1 keep-alive connection; one request at a time. The completion time
    is taken in the callback that delivered the last byte of the response."""

    def __init__(self):
        self.transport = None
        self.buf = b""
        self.future: asyncio.Future | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport):
        self.transport = transport

    def connection_lost(self, exc):
        if self.future is not None and not self.future.done():
            self.future.set_exception(ConnectionError(f"connection lost: {exc}"))
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data):
        now = time.perf_counter()
        self.buf += data
        head_end = self.buf.find(b"\r\n\r\n")
        if head_end < 0 or self.future is None:
            return
        head = self.buf[:head_end].decode("latin-1")
        length = 0
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        end = head_end + 4 + length
        if len(self.buf) < end:
            return
        status = int(head.split(" ", 2)[1])
        body, self.buf = self.buf[head_end + 4 : end], self.buf[end:]
        future, self.future = self.future, None
        future.set_result((status, body, now, "connection: close" in head.lower()))

    def request(self, path: str, headers: dict[str, str]) -> asyncio.Future:
        self.future = asyncio.get_running_loop().create_future()
        lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items())]
        self.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        return self.future


class Client:
    """An HttpConn that reconnects when the server closed the previous one."""

    def __init__(self, port: int, headers: dict[str, str]):
        self.port, self.headers, self.conn = port, headers, None

    async def get(self, path: str) -> asyncio.Future:
        """Send the request now; the returned future resolves to (status, body, t_done)."""
        if self.conn is None or self.conn.transport.is_closing():
            _, self.conn = await asyncio.get_running_loop().create_connection(HttpConn, "127.0.0.1", self.port)
        return self.conn.request(path, self.headers)

    def close(self):
        if self.conn is not None:
            self.conn.transport.close()


class SmtpConn(asyncio.Protocol):
    """Minimal SMTP client; each complete reply is stamped with its arrival time."""

    def __init__(self):
        self.buf = b""
        self.replies: asyncio.Queue = asyncio.Queue()

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        now = time.perf_counter()
        self.buf += data
        while True:
            # A reply ends with a line whose 4th byte is a space ("250 ..."), not "-".
            start = 0
            while True:
                eol = self.buf.find(b"\r\n", start)
                if eol < 0:
                    return
                line = self.buf[start:eol]
                start = eol + 2
                if len(line) < 4 or line[3:4] != b"-":
                    break
            reply, self.buf = self.buf[:start], self.buf[start:]
            self.replies.put_nowait((int(reply[:3]), reply.decode(errors="replace").strip(), now))

    async def command(self, line: bytes, expect: int) -> float:
        if line:
            self.transport.write(line)
        code, text, at = await asyncio.wait_for(self.replies.get(), 60)
        if code != expect:
            raise RuntimeError(f"SMTP {line[:60]!r}: expected {expect}, got {text}")
        return at


async def send_mail(port: int, recipients: list[str], round_no: int) -> tuple[float, float]:
    """One message to every recipient; returns (time end-of-DATA was sent, time the 250 arrived)."""
    _, smtp = await asyncio.get_running_loop().create_connection(SmtpConn, "127.0.0.1", port)
    try:
        await smtp.command(b"", 220)
        await smtp.command(b"EHLO bench.example.org\r\n", 250)
        await smtp.command(b"MAIL FROM:<bench@example.org>\r\n", 250)
        for rcpt in recipients:
            await smtp.command(f"RCPT TO:<{rcpt}>\r\n".encode(), 250)
        await smtp.command(b"DATA\r\n", 354)
        to = ",\r\n ".join(recipients)  # folded: one line per address stays under SMTP's 1,000
        body = (
            f"From: bench@example.org\r\nTo: {to}\r\nSubject: wake {round_no}\r\n"
            f"Message-ID: <wake-{round_no}-{time.time_ns()}@example.org>\r\n\r\n" + "wake up\r\n" * 200 + ".\r\n"
        ).encode()
        sent = time.perf_counter()
        done = await smtp.command(body, 250)
        smtp.transport.write(b"QUIT\r\n")
        return sent, done
    finally:
        smtp.transport.close()


def audited_waits(db_path: Path) -> int:
    with contextlib.closing(sqlite3.connect(db_path, timeout=5)) as conn:
        return conn.execute("SELECT count(*) FROM audit_event WHERE action = 'message.wait'").fetchone()[0]


async def wait_parked(db_path: Path, expected: int, futures: list, timeout: float = 240) -> float:
    """Until ``expected`` waits have been audited (access checked, about to park); returns seconds taken."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if audited_waits(db_path) >= expected:
            return time.perf_counter() - start
        if any(f.done() for f in futures):
            break
        await asyncio.sleep(0.02)
    answered = [f.result()[:2] for f in futures if f.done() and not f.exception()]
    raise RuntimeError(f"waiters not parked after {timeout}s (answered early: {answered[:3]})")


async def baseline(port: int, count: int) -> list[float]:
    client = Client(port, {})
    times = []
    try:
        for _ in range(count):
            start = time.perf_counter()
            status, _, done, _ = await (await client.get("/healthz"))
            if status != 200:
                raise RuntimeError(f"/healthz answered {status}")
            times.append((done - start) * 1000)
    finally:
        client.close()
    return times


async def measure(args, world, port: int, server_pid: int) -> dict:
    headers = {"Authorization": f"Bearer {world.key}"}
    inboxes = world.inboxes
    clients = [Client(port, headers) for _ in range(args.waiters)]
    cursors = ["0"] * args.waiters
    result = {"lat_250": [], "lat_dot": [], "smtp_ms": [], "woken": [], "late": 0, "arm_s": []}

    result["healthz_ms"] = await baseline(port, args.baseline)
    audited = audited_waits(world.db_path)
    for round_no in range(1, args.rounds + 1):
        futures = []
        # Round 1 parks a tenth first: the first waits of a worker also pay for warming
        # up (its database threads and their connections, code first run), which the
        # memory per parked wait must not count.
        warm = max(1, args.waiters // 10) if round_no == 1 else 0
        for i, client in enumerate(clients):
            inbox = inboxes[i % len(inboxes)]["id"]
            after = "" if args.delivery_cursor else f"after={cursors[i]}&"
            futures.append(await client.get(f"/v1/inboxes/{inbox}/messages/wait?{after}timeout={WAIT_TIMEOUT}"))
            if i + 1 == warm:
                await wait_parked(world.db_path, audited + warm, futures)
                await asyncio.sleep(args.settle)
                result["memory_warm"] = memory_of(server_pid)
        audited += args.waiters
        result["arm_s"].append(await wait_parked(world.db_path, audited, futures))
        await asyncio.sleep(args.settle)
        if any(f.done() for f in futures):
            raise RuntimeError(f"round {round_no}: a waiter answered before any mail was sent")
        if round_no == 1:  # every waiter parked, none woken yet: what parking them cost
            result["memory_parked"] = memory_of(server_pid)
            result["memory_waits"] = args.waiters - warm

        sent, acked = await send_mail(world.smtp_port, [i["address"] for i in inboxes], round_no)
        done, pending = await asyncio.wait(futures, timeout=args.round_timeout)
        woken = 0
        for i, future in enumerate(futures):
            if future not in done:
                continue
            status, body, at, _ = future.result()
            payload = json.loads(body) if status == 200 else {}
            if status == 200 and payload.get("messages"):
                woken += 1
                cursors[i] = payload["cursor"]
                result["lat_250"].append((at - acked) * 1000)
                result["lat_dot"].append((at - sent) * 1000)
            elif status != 200:
                print(f"  round {round_no}: waiter {i} got HTTP {status}: {body[:200]!r}", file=sys.stderr)
        result["woken"].append(woken)
        result["smtp_ms"].append((acked - sent) * 1000)
        if pending:
            # Not woken within --round-timeout: wait for the rest (doorbell lost, or the 15 s re-check).
            result["late"] += len(pending)
            late, _ = await asyncio.wait(pending, timeout=WAIT_TIMEOUT + 10)
            for future in late:
                status, body, _, _ = future.result()
                if status == 200:
                    cursors[futures.index(future)] = json.loads(body)["cursor"]
        worst = max(result["lat_250"][-woken:]) if woken else float("nan")
        print(
            f"  round {round_no:>2}: woken {woken}/{args.waiters}, armed in {result['arm_s'][-1]:.2f}s, "
            f"SMTP DATA->250 {result['smtp_ms'][-1]:.1f} ms, slowest wake {worst:.1f} ms",
            file=sys.stderr,
        )
    for client in clients:
        client.close()
    return result


def summary_row(name: str, values: list[float]) -> str:
    if not values:
        return f"{name:<34} (none)"
    return (
        f"{name:<34} {percentile(values, 50):>7.1f} {percentile(values, 95):>7.1f} {percentile(values, 99):>7.1f} "
        f"{max(values):>7.1f} {min(values):>7.1f} {len(values):>6}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--waiters", type=int, default=100, help="concurrent parked waiters [100]")
    parser.add_argument("--rounds", type=int, default=20, help="messages sent, one per round [20]")
    parser.add_argument("--inboxes", type=int, default=1, help="inboxes the waiters are spread over [1]")
    parser.add_argument("--workers", type=int, default=2, help="API worker processes [2]")
    parser.add_argument("--settle", type=float, default=0.3, help="extra seconds after all waits are audited [0.3]")
    parser.add_argument("--round-timeout", type=float, default=5.0, help="seconds a round waits for wakes [5]")
    parser.add_argument("--baseline", type=int, default=300, help="sequential /healthz requests for the baseline [300]")
    parser.add_argument(
        "--delivery-cursor",
        action="store_true",
        help="wait without after: each wake claims the agent's delivery cursor (give each waiter "
        "its own inbox, --inboxes = --waiters, or waiters sharing one race and only one is woken)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, database) and print its path")
    args = parser.parse_args()

    try:
        import uvloop

        loop_name = f"uvloop {uvloop.__version__}"
        runner = uvloop.run
    except ImportError:
        loop_name, runner = "asyncio", asyncio.run

    print(
        f"# {platform.node()} | {os.cpu_count()} CPUs | Python {platform.python_version()} | "
        f"client: raw HTTP on {loop_name}"
    )
    print(
        f"# postern serve: {args.workers} workers + SMTP listener | {args.waiters} waiters over "
        f"{args.inboxes} inbox(es), {args.rounds} rounds, one message per round"
        + (", waits on delivery cursors (no after)" if args.delivery_cursor else ""),
        flush=True,
    )
    tmp = Path(tempfile.mkdtemp(prefix="postern-bench-wait-"))
    try:
        # Room for every waiter on one client address (the defaults, 1,000 connections per
        # worker and 256 per client, would refuse a bench's waiters with 503).
        connections = f"max_connections = {args.waiters + 100}\nmax_connections_per_client = 0\n"
        world = make_world(tmp, inboxes=args.inboxes, workers=args.workers, server_extra=connections)
        child = Child("postern serve", postern_cmd("serve"), tmp / "serve.log", world.env(), tmp)
        with running(child):
            wait_http(child, world.http_port, "/healthz")
            wait_smtp(child, world.smtp_port)
            result = runner(measure(args, world, world.http_port, child.proc.pid))
            child.check_alive()
    finally:
        if args.keep:
            print(f"# kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    print(f"\n{'latency (ms)':<34} {'p50':>7} {'p95':>7} {'p99':>7} {'max':>7} {'min':>7} {'n':>6}")
    print(summary_row("wake, from SMTP 250", result["lat_250"]))
    print(summary_row("wake, from end of DATA sent", result["lat_dot"]))
    print(summary_row("SMTP end of DATA -> 250", result["smtp_ms"]))
    print(summary_row("baseline: GET /healthz round trip", result["healthz_ms"]))
    woken = result["woken"]
    print(
        f"\nwoken per round: min {min(woken)}, median {statistics.median(woken):g}, max {max(woken)} of {args.waiters}"
        f" | not woken within {args.round_timeout:g}s: {result['late']} | arming took median "
        f"{statistics.median(result['arm_s']):.2f}s"
    )
    lat = result["lat_250"]
    if lat:
        p50, p99 = percentile(lat, 50), percentile(lat, 99)
        base = percentile(result["healthz_ms"], 50)
        p99_target = TARGET_P99_MS_10K if args.waiters >= 10_000 else TARGET_P99_MS
        record(
            "wait_for_email wake p50",
            p50,
            "ms",
            "GET /healthz p50",
            base,
            f"< {TARGET_P50_MS:g} ms",
            p50 < TARGET_P50_MS,
        )
        record(
            "wait_for_email wake p99",
            p99,
            "ms",
            "GET /healthz p50",
            base,
            f"< {p99_target:g} ms",
            p99 < p99_target,
        )
        print(f"wake p50 = {p50 / base:.1f}x the /healthz p50 ({base:.1f} ms)")
        print(
            f"targets: p50 < {TARGET_P50_MS:g} ms -> {p50:.1f} ms, {'met' if p50 < TARGET_P50_MS else 'NOT met'}; "
            f"p99 < {p99_target:g} ms -> {p99:.1f} ms, {'met' if p99 < p99_target else 'NOT met'}"
        )
    before, parked = result["memory_warm"], result["memory_parked"]
    per_wait = {k: (parked[k] - before[k]) / max(1, result["memory_waits"]) for k in ("rss", "pss", "uss")}
    met = per_wait["pss"] < TARGET_BYTES_PER_WAIT
    print(
        f"memory per parked wait (server tree, all parked minus the first tenth): "
        f"PSS {per_wait['pss'] / 1024:.1f} KiB, USS {per_wait['uss'] / 1024:.1f} KiB, "
        f"RSS {per_wait['rss'] / 1024:.1f} KiB; server PSS "
        f"{before['pss'] / 2**20:.0f} -> {parked['pss'] / 2**20:.0f} MiB; "
        f"target < {TARGET_BYTES_PER_WAIT // 1024} KiB: {'met' if met else 'NOT met'}"
    )
    record("memory per parked wait (PSS)", per_wait["pss"] / 1024, "KiB", target="< 20 KiB", met=met)
    all_woken = all(w == args.waiters for w in woken) and not result["late"]
    return 0 if all_woken else 1


if __name__ == "__main__":
    sys.exit(main())
