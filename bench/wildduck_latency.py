"""Delay from the SMTP ``250`` to ``wait_for_email`` returning, with the ``wildduck``
receive backend beside ``smtp_local``, in the same run on the same machine.

With smtp_local the listener stores the message before its 250, so the delay is the
doorbell and one read. With wildduck the 250 follows WildDuck's LMTP acceptance, and
the message then travels WildDuck -> Redis ``wd_events`` -> the watcher -> REST listing
and fetch -> the core's ingest -> the doorbell. Rounds alternate between the two.

    python bench/wildduck_latency.py --rounds 40

Needs the WildDuck stack (tests/support/wildduck_stack.py: npm install in wildduck-harness,
secantusdb, redis-server). Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import platform
import smtplib
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from harness import Child, make_world, percentile, postern_cmd, running, wait_http, wait_smtp
from support.server import free_port
from support.wildduck_stack import WildDuckStack


def wildduck_config(stack: WildDuckStack, smtp_port: int) -> str:
    return (
        '[receive]\nbackend = "wildduck"\n[receive.wildduck]\n'
        f'api_url = "{stack.api_url}"\nredis_url = "{stack.redis_url}"\n'
        f'lmtp_host = "127.0.0.1"\nlmtp_port = {stack.lmtp_port}\nsmtp_bind = "127.0.0.1:{smtp_port}"\n'
    )


class Side:
    """One running Postern and the cursor of its one inbox."""

    def __init__(self, name: str, world, smtp_port: int):
        self.name, self.world, self.smtp_port = name, world, smtp_port
        self.inbox = world.inboxes[0]
        self.cursor = "0"
        self.delays: list[float] = []
        self.data_ms: list[float] = []  # DATA sent -> 250 received

    def round(self, n: int) -> None:
        result: dict = {}
        url = f"http://127.0.0.1:{self.world.http_port}/v1/inboxes/{self.inbox['id']}/messages/wait"
        headers = {"Authorization": f"Bearer {self.world.key}"}

        def wait():
            resp = httpx.get(url, params={"after": self.cursor, "timeout": 30}, headers=headers, timeout=40)
            result["at"] = time.perf_counter()
            result["body"] = resp.json()

        waiter = threading.Thread(target=wait)
        waiter.start()
        time.sleep(0.3)  # let the wait park: the delay measured is the wake-up, not the request
        raw = f"From: a@example.org\r\nSubject: round {n}\r\nMessage-ID: <r{n}-{self.name}@example.org>\r\n\r\nhi\r\n"
        with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=30) as client:
            client.ehlo()
            client.mail("a@example.org")
            client.rcpt(self.inbox["address"])
            started = time.perf_counter()
            client.data(raw.encode())
            acked = time.perf_counter()
        self.data_ms.append((acked - started) * 1000)
        waiter.join()
        subjects = [m["subject"] for m in result["body"]["messages"]]
        if subjects != [f"round {n}"]:
            raise RuntimeError(f"{self.name}: round {n} woke with {subjects}")
        self.cursor = result["body"]["cursor"]
        self.delays.append((result["at"] - acked) * 1000)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    stack = WildDuckStack().start()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-wd-") as tmp:
            tmp = Path(tmp)
            (tmp / "local").mkdir()
            (tmp / "wd").mkdir()
            local_world = make_world(tmp / "local")
            wd_smtp = free_port()
            wd_world = make_world(tmp / "wd", config_extra=wildduck_config(stack, wd_smtp))
            sides = [Side("smtp_local", local_world, local_world.smtp_port), Side("wildduck", wd_world, wd_smtp)]
            children = [Child(s.name, postern_cmd("serve"), tmp / f"{s.name}.log", env=s.world.env()) for s in sides]
            with running(children[0]), running(children[1]):
                for side, child in zip(sides, children, strict=True):
                    wait_http(child, side.world.http_port, "/healthz")
                    wait_smtp(child, side.smtp_port)
                time.sleep(2)  # the watcher's first sweep and subscription
                for n in range(args.rounds):
                    for side in sides if n % 2 == 0 else reversed(sides):
                        side.round(n)
    finally:
        stack.stop()
    report(sides, args.rounds)
    return 0


def report(sides, rounds: int) -> None:
    print(f"SMTP 250 -> wait_for_email returned, ms ({rounds} rounds, {platform.node()}, {sys.version.split()[0]})")
    print(f"{'backend':<12}{'p50':>8}{'p95':>8}{'max':>8}{'DATA->250 p50':>16}")
    row = {}
    for side in sides:
        p50, p95 = statistics.median(side.delays), percentile(side.delays, 95)
        data_p50 = statistics.median(side.data_ms)
        row[side.name] = {
            "p50_ms": round(p50, 1),
            "p95_ms": round(p95, 1),
            "max_ms": round(max(side.delays), 1),
            "data_to_250_p50_ms": round(data_p50, 1),
        }
        print(f"{side.name:<12}{p50:>8.1f}{p95:>8.1f}{max(side.delays):>8.1f}{data_p50:>16.1f}")
    ratio = row["wildduck"]["p50_ms"] / max(row["smtp_local"]["p50_ms"], 0.001)
    print(f"wildduck / smtp_local (p50): {ratio:.1f}x")
    print(json.dumps({"bench": "wildduck_latency", "rounds": rounds, **row, "p50_ratio": round(ratio, 1)}))


if __name__ == "__main__":
    sys.exit(main())
