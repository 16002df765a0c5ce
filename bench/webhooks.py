"""Webhook delivery: throughput to a local receiver, and SMTP 250 -> webhook delay.

1. Throughput: ``--deliveries`` message.received deliveries are queued through the core
   (SQLite, one webhook), then one ``postern service run webhooks`` dispatcher (the
   process ``postern serve`` supervises; ``webhooks.concurrency`` attempts in flight) is
   started against a threaded ``http.server`` receiver on 127.0.0.1 that answers 200.
   The rate is measured from the first request the receiver completes to the last.
2. Latency: the SMTP listener and the dispatcher run as their own processes; smtplib
   sends ``--messages`` messages one after another, each to the inbox the webhook
   watches. The delay is from ``sendmail`` returning (Postern's ``250``, sent only
   after the commit) to the receiver having read the whole webhook request.

The receiver runs in this process, so its own cost is part of the figures. Every
delivery must arrive, and verify with the webhook's secret, or the run fails.

    python bench/webhooks.py [--deliveries 2000] [--messages 200] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import smtplib
import sys
import tempfile
import time
from pathlib import Path

from harness import Child, make_world, percentile, postern_cmd, prefill, record, running, wait_smtp
from support.receiver import Receiver

from postern.client import verify_webhook


def add_webhook(world, url: str) -> str:
    from support.world import INFO

    from postern.core.auth import authenticate
    from postern.core.db import database
    from postern.core.webhooks.manage import create_webhook

    with database.connection_context():
        principal = authenticate(world.key, "agent", INFO)
        body = {"url": url, "event_types": ["message.received"], "inbox_ids": [world.inboxes[0]["id"]]}
        _, secret = create_webhook(world._postern, principal, INFO, body)
    database.close()
    return secret


def dispatcher(world, name: str) -> Child:
    return Child(name, postern_cmd("service", "run", "webhooks"), world.tmp / f"{name}.log", env=world.env())


def throughput(args, tmp: Path) -> tuple[float, float]:
    (tmp / "throughput").mkdir()
    world = make_world(tmp / "throughput", config_extra=config(args))
    with Receiver() as receiver:
        secret = add_webhook(world, receiver.url)
        prefill(world, world.inboxes[0], args.deliveries, body_bytes=1024)
        with running(dispatcher(world, "dispatcher")):
            got = receiver.wait_for(args.deliveries, timeout=600)
        check(got, secret, args.deliveries)
    span = got[-1].at - got[0].at
    return (len(got) - 1) / span, span


def latency(args, tmp: Path) -> list[float]:
    (tmp / "latency").mkdir()
    world = make_world(tmp / "latency", config_extra=config(args))
    delays = []
    with Receiver() as receiver:
        secret = add_webhook(world, receiver.url)
        smtp = Child("smtp", postern_cmd("service", "run", "smtp"), world.tmp / "smtp.log", env=world.env())
        with running(smtp), running(dispatcher(world, "dispatcher")):
            wait_smtp(smtp, world.smtp_port)
            time.sleep(1.0)  # the dispatcher's listener is up
            address = world.inboxes[0]["address"]
            with smtplib.SMTP("127.0.0.1", world.smtp_port, timeout=30) as client:
                for i in range(args.messages):
                    client.sendmail("a@example.org", [address], f"Subject: m{i}\r\n\r\nhello {i}\r\n".encode())
                    accepted = time.monotonic()
                    got = receiver.wait_for(i + 1, timeout=30)[i]
                    assert json.loads(got.body)["data"]["subject"] == f"m{i}"
                    delays.append(got.at - accepted)
                    time.sleep(0.02)
        check(receiver.requests, secret, args.messages)
    return delays


def direct_post_delays(count: int) -> list[float]:
    """The baseline for the delay: the last hop alone, a new connection and one POST of a
    small JSON body straight to the same kind of receiver, timed to its having read it."""
    import http.client

    delays = []
    with Receiver() as receiver:
        for i in range(count):
            start = time.monotonic()
            conn = http.client.HTTPConnection("127.0.0.1", receiver.port, timeout=10)
            conn.request("POST", "/hook", body=json.dumps({"i": i}), headers={"content-type": "application/json"})
            got = receiver.wait_for(i + 1)[i]
            conn.getresponse().read()
            conn.close()
            delays.append(got.at - start)
    return delays


def check(got, secret: str, expected: int) -> None:
    ids = {r.headers["webhook-id"] for r in got}
    if len(got) != expected or len(ids) != expected:
        raise RuntimeError(f"expected {expected} distinct deliveries, got {len(got)} ({len(ids)} ids)")
    for request in got:
        verify_webhook(request.body, request.headers, secret)


def config(args) -> str:
    return f'[webhooks]\nallow_destinations = ["127.0.0.0/8"]\nconcurrency = {args.concurrency}\n'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=2000)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    print(f"host {platform.node()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, SQLite")
    with tempfile.TemporaryDirectory(prefix="postern-bench-") as tmp:
        rate, span = throughput(args, Path(tmp))
        print(
            f"throughput: {args.deliveries} deliveries in {span:.2f} s = {rate:,.0f} deliveries/s "
            f"(one dispatcher, concurrency {args.concurrency})"
        )
        delays = latency(args, Path(tmp))
    ms = [d * 1000 for d in delays]
    direct = [d * 1000 for d in direct_post_delays(args.messages)]
    print(
        f"SMTP 250 -> webhook at receiver, {len(ms)} messages one at a time: "
        f"p50 {percentile(ms, 50):.1f} ms, p99 {percentile(ms, 99):.1f} ms, max {max(ms):.1f} ms"
    )
    print(
        f"baseline, a direct POST to a receiver: p50 {percentile(direct, 50):.2f} ms, "
        f"p99 {percentile(direct, 99):.2f} ms"
    )
    record("webhook deliveries/s", rate, "deliveries/s")
    record("SMTP 250 -> webhook p50", percentile(ms, 50), "ms", "direct POST p50", percentile(direct, 50))
    record("SMTP 250 -> webhook p99", percentile(ms, 99), "ms", "direct POST p99", percentile(direct, 99))


if __name__ == "__main__":
    sys.exit(main())
