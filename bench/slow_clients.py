"""Legitimate traffic while slow clients hold connections (connection limits, loopback only).

Starts the real ``python -m postern serve`` (2 API workers, the SMTP listener, the
dns_builtin server; SQLite in a temp data dir) with the default connection limits.
A legitimate client on 127.0.0.2 measures, one at a time, each on a new connection:
- ``API``: ``GET /v1/inboxes/{id}/messages`` with its agent key;
- ``SMTP``: one message (EHLO, MAIL, RCPT, DATA, QUIT) to a real inbox;
- ``DNS TCP``: one MX query over TCP.

First with no slow clients (the baseline, same run), then while ``--slow`` slow clients
(a child process, from ``--slow-addresses`` other loopback addresses) hold connections:
a third each to the API (trickling request headers a byte a second: slowloris), to
SMTP (connected, silent) and to DNS over TCP (connected, silent). A slow client cut off
or refused by the server connects again after a second, so the pressure stays on for
the whole phase. Prints p50/p99 per kind and phase, the ratio, and errors (a request
refused or failed is an error, not a latency).

    python bench/slow_clients.py [--requests 200] [--slow 2000] [--slow-addresses 4]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import resource
import smtplib
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import Child, free_port, make_world, percentile, postern_cmd, record, running, wait_http, wait_smtp

LEGIT = "127.0.0.2"
KINDS = ("API", "SMTP", "DNS TCP")


# ---- the slow clients (run as a child process: --slow-child) ------------------------


async def _hold(kind: str, port: int, source: str, until: float, held: list[int]) -> None:
    while time.monotonic() < until:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
        except OSError:
            await asyncio.sleep(1)
            continue
        held[0] += 1
        try:
            if kind == "API":
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                while time.monotonic() < until and not reader.at_eof():
                    writer.write(b"x")  # one header byte a second: slowloris
                    await writer.drain()
                    try:
                        if await asyncio.wait_for(reader.read(4096), 1) == b"":
                            break
                    except TimeoutError:
                        pass
            else:
                # Silent: wait for the server to close (timeout, or a refusal).
                while time.monotonic() < until:
                    try:
                        if await asyncio.wait_for(reader.read(4096), 1) == b"":
                            break
                    except TimeoutError:
                        pass
        except OSError:
            pass
        finally:
            held[0] -= 1
            writer.close()
        await asyncio.sleep(1)  # cut off or refused: come back a second later


async def slow_child(ports: dict[str, int], count: int, addresses: int, seconds: float) -> None:
    until = time.monotonic() + seconds
    held = [0]
    tasks = []
    for i in range(count):
        kind = KINDS[i % 3]
        source = f"127.0.1.{1 + i % addresses}"
        tasks.append(asyncio.create_task(_hold(kind, ports[kind], source, until, held)))
        if i % 100 == 99:
            await asyncio.sleep(0.05)  # open them over ~1 s, not in one burst
    while time.monotonic() < until:
        print(f"held {held[0]}", flush=True)
        await asyncio.sleep(2)
    await asyncio.gather(*tasks, return_exceptions=True)


# ---- the legitimate client ------------------------------------------------------------


def api_request(port: int, inbox: str, key: str) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30, source_address=(LEGIT, 0))
    try:
        conn.request("GET", f"/v1/inboxes/{inbox}/messages", headers={"Authorization": f"Bearer {key}"})
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"API answered {response.status}")
    finally:
        conn.close()


def smtp_message(port: int, address: str, n: int) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30, source_address=(LEGIT, 0)) as client:
        client.sendmail("bench@example.org", [address], f"Subject: legit {n}\r\n\r\nbody {n}\r\n".encode())


def dns_query(port: int, name: str) -> None:
    import dns.message
    import dns.query
    import dns.rcode

    response = dns.query.tcp(dns.message.make_query(name, "MX"), "127.0.0.1", port=port, timeout=30, source=LEGIT)
    if response.rcode() != dns.rcode.NOERROR:
        raise RuntimeError(f"DNS answered {dns.rcode.to_text(response.rcode())}")


def measure(requests: int, do) -> tuple[list[float], int]:
    latencies, errors = [], 0
    for n in range(requests):
        start = time.perf_counter()
        try:
            do(n)
        except (OSError, smtplib.SMTPException, RuntimeError, EOFError, Exception):  # noqa: BLE001 (counted)
            errors += 1
            continue
        latencies.append((time.perf_counter() - start) * 1000)
    return latencies, errors


def phase(world, ports, requests: int) -> dict[str, tuple[list[float], int]]:
    inbox = world.inboxes[0]
    return {
        "API": measure(requests, lambda n: api_request(ports["API"], inbox["id"], world.key)),
        "SMTP": measure(requests, lambda n: smtp_message(ports["SMTP"], inbox["address"], n)),
        "DNS TCP": measure(requests, lambda n: dns_query(ports["DNS TCP"], "bench.agents.localhost")),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="per kind and phase")
    parser.add_argument("--warmup", type=int, default=20, help="unmeasured requests per kind first")
    parser.add_argument("--slow", type=int, default=2000, help="slow clients in the second phase")
    parser.add_argument("--slow-addresses", type=int, default=4, help="loopback addresses they come from")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds for the slow clients to connect")
    parser.add_argument("--slow-child", help=argparse.SUPPRESS)  # JSON: ports, count, addresses, seconds
    args = parser.parse_args()
    if args.slow_child:
        spec = json.loads(args.slow_child)
        asyncio.run(slow_child(spec["ports"], spec["count"], spec["addresses"], spec["seconds"]))
        return

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2 * args.slow + 1024:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 2 * args.slow + 1024), hard))
    with tempfile.TemporaryDirectory(prefix="postern-slow-") as tmp:
        dns_port = free_port()
        world = make_world(Path(tmp), config_extra=f'[dns.dns_builtin]\nbind = "127.0.0.1:{dns_port}"\n')
        ports = {"API": world.http_port, "SMTP": world.smtp_port, "DNS TCP": dns_port}
        server = Child("postern serve", postern_cmd("serve"), Path(tmp) / "serve.log", env=world.env())
        with running(server):
            wait_http(server, world.http_port, "/healthz")
            wait_smtp(server, world.smtp_port)
            phase(world, ports, args.warmup)  # first connections, caches, imports: not measured
            baseline = phase(world, ports, args.requests)
            spec = {"ports": ports, "count": args.slow, "addresses": args.slow_addresses, "seconds": 600}
            slow = subprocess.Popen(
                [sys.executable, __file__, "--slow-child", json.dumps(spec)],
                stdout=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
            try:
                time.sleep(args.settle)  # the slow clients connect (they keep reconnecting meanwhile)
                loaded = phase(world, ports, args.requests)
            finally:
                os.killpg(slow.pid, 15)
                slow.wait(30)
            held = [line for line in slow.stdout.read().splitlines() if line.startswith("held")]
            server.check_alive()
    report(baseline, loaded, args, held)


def report(baseline, loaded, args, held: list[str]) -> None:
    print(f"legitimate client {LEGIT}, {args.requests} requests per kind and phase, one new connection each")
    print(f"slow clients: {args.slow} from {args.slow_addresses} addresses; {', '.join(held[-3:])}")
    print(f"{'kind':8} {'phase':10} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for kind in KINDS:
        rows = {}
        for name, results in (("baseline", baseline), ("slow", loaded)):
            latencies, errors = results[kind]
            p50 = percentile(latencies, 50) if latencies else float("nan")
            p99 = percentile(latencies, 99) if latencies else float("nan")
            rows[name] = (p50, p99, errors)
            print(f"{kind:8} {name:10} {p50:8.2f} {p99:8.2f} {errors:7d}")
        (b50, b99, _), (s50, s99, errors) = rows["baseline"], rows["slow"]
        print(f"{kind:8} {'ratio':10} {s50 / b50:7.2f}x {s99 / b99:7.2f}x")
        figure = f"{kind} p50 with {args.slow} slow clients"
        record(figure, s50, "ms", f"{kind} p50, none", b50, "<= 2x", s50 <= 2 * b50)
        record(f"{kind} errors with slow clients", errors, "", "requests", args.requests, "= 0", errors == 0)


if __name__ == "__main__":
    main()
