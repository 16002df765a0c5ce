"""The floor under wait_latency.py: gunicorn's asgi worker answering parked requests.

Runs ``gunicorn -k asgi -w <workers>`` with the bare ASGI app below (no falcon, no
Postern): every request to ``/park?at=<t>`` parks until the worker's clock reaches ``t``
(one timer per worker sets one event that every parked request awaits, as Postern's
doorbell wakes its waiters at once), then answers a small JSON body. The client opens
``--waiters`` connections (raw asyncio protocols, uvloop if importable, timestamps taken
in ``data_received``), parks them all, and measures each response's arrival minus ``t``.
It also reports the server's memory per parked connection (PSS of the gunicorn tree,
all parked minus none parked).

What it tells: how fast the HTTP server and the load generator on the same cores can
answer N parked requests at once, with nothing of Postern in the way: the floor for
wait_latency.py's wake figures and memory per wait.

    python bench/park_floor.py [--waiters 1000] [--workers 2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from pathlib import Path

from harness import BENCH_DIR, free_port, memory_of, percentile, record

BODY = b'{"messages":[{"id":"msg_floor","subject":"wake"}],"cursor":"1","timed_out":false}'
_events: dict[float, asyncio.Event] = {}


async def app(scope, receive, send):
    """Park ``/park?at=<unix time>`` until that time, then answer ``BODY``."""
    if scope["type"] != "http":
        return
    at = float(scope["query_string"].decode().partition("at=")[2] or 0)
    event = _events.get(at)
    if event is None:
        event = _events[at] = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.call_at(loop.time() + max(0.0, at - time.time()), event.set)
    await event.wait()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": BODY})


class Conn(asyncio.Protocol):
    def __init__(self):
        self.transport = None
        self.future = None
        self.buffer = b""

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.buffer += data
        if self.future is not None and not self.future.done() and self.buffer.endswith(b"}"):
            self.future.set_result(time.time())
            self.buffer = b""

    def park(self, at: float) -> asyncio.Future:
        self.future = asyncio.get_running_loop().create_future()
        self.transport.write(f"GET /park?at={at} HTTP/1.1\r\nHost: floor\r\n\r\n".encode())
        return self.future


async def measure(port: int, waiters: int, rounds: int, server_pid: int) -> tuple[list[float], float]:
    loop = asyncio.get_running_loop()
    before = memory_of(server_pid)["pss"]  # connections and parked requests, as a wait costs both
    conns = [(await loop.create_connection(Conn, "127.0.0.1", port))[1] for _ in range(waiters)]
    await asyncio.sleep(0.5)
    latencies, per_conn = [], 0.0
    for round_no in range(rounds):
        at = time.time() + 3 + waiters / 2000  # time for every request to arrive and park
        futures = [conn.park(at) for conn in conns]
        await asyncio.sleep(max(0.0, at - time.time() - 0.3))
        if round_no == 0:
            per_conn = (memory_of(server_pid)["pss"] - before) / waiters
        arrived = await asyncio.wait_for(asyncio.gather(*futures), 60)
        latencies += [(t - at) * 1000 for t in arrived]
    for conn in conns:
        conn.transport.close()
    return latencies, per_conn


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--waiters", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-k", "asgi", "-w", str(args.workers), "-b", f"127.0.0.1:{port}",
         "--worker-connections", str(args.waiters + 100), "--chdir", str(BENCH_DIR), "park_floor:app"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=Path(BENCH_DIR),
    )  # fmt: skip
    try:
        time.sleep(2)
        try:
            import uvloop

            runner = uvloop.run
        except ImportError:
            runner = asyncio.run
        latencies, per_conn = runner(measure(port, args.waiters, args.rounds, server.pid))
    finally:
        server.terminate()
        server.wait(10)
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    print(
        f"gunicorn asgi, {args.workers} workers, {args.waiters} parked, {args.rounds} rounds: wake p50 {p50:.1f} ms, "
        f"p99 {p99:.1f} ms, max {max(latencies):.1f} ms; memory per parked connection {per_conn / 1024:.1f} KiB (PSS)"
    )
    record("floor: gunicorn parked wake p99", p99, "ms")
    record("floor: gunicorn memory per parked connection", per_conn / 1024, "KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
