"""Outbound delivery: messages per second from Postern's smtp_local send backend to a
receiving server, in direct mode and in smarthost mode, beside the C ceiling.

The receiving server is Postfix's ``smtp-sink`` (C, accepts and discards) on a free
127.0.0.1 port. In the same run:

- ``smtp-source -d``: Postfix's C load generator into the same sink, reusing each
  connection: the ceiling of this machine's loopback SMTP.
- ``direct``: ``SmtpLocalSender`` with ``mode = "direct"``: per message an MTA-STS TXT
  lookup, an MX and an A lookup (answered by a small DNS server in this process, as a
  local caching resolver would), then the transaction over a pooled connection.
- ``direct, no reuse``: the same with ``reuse_seconds = 0`` (a connection per message).
- ``direct, no DNS cache``: with ``dns_cache = false`` (four lookups per message).
- ``smarthost``: ``SmtpLocalSender`` relaying to the sink, a connection per message (as
  it relays today).

Each Postern mode sends ``--messages`` ~2 KB messages from ``--threads`` threads (the
outbox's delivery threads); every message must be accepted. Rounds interleave the
modes; the table shows each mode's median and its ratio to the C ceiling.

    python bench/outbound_delivery.py [--messages 2000] [--threads 4] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from dnslib import QTYPE, RR, DNSRecord
from harness import free_port, record

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from postern.core.backends import OutboundMessage  # noqa: E402
from postern.plugins.smtp_local.sender import SmtpLocalSender, SmtpLocalSendOptions  # noqa: E402

DOMAIN = "bench.test"


class StubDns:
    """MX and A for the bench domain over real UDP; every other name is NXDOMAIN."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.records = {(DOMAIN, "MX"): f"10 mx.{DOMAIN}.", (f"mx.{DOMAIN}", "A"): "127.0.0.1"}
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                data, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            request = DNSRecord.parse(data)
            name, qtype = str(request.q.qname).rstrip(".").lower(), QTYPE[request.q.qtype]
            reply = request.reply()
            value = self.records.get((name, qtype))
            if value:
                reply.add_answer(*RR.fromZone(f"{name}. 300 IN {qtype} {value}"))
            elif not any(n == name for n, _ in self.records):
                reply.header.rcode = 3
            self.sock.sendto(reply.pack(), peer)


def message(i: int, size: int) -> OutboundMessage:
    body = ("x" * 76 + "\r\n") * max(1, size // 78)
    raw = (
        f"From: agent@acme.agents.localhost\r\nTo: reader{i}@{DOMAIN}\r\nSubject: bench {i}\r\n"
        f"Message-ID: <bench{i}@acme.agents.localhost>\r\nMIME-Version: 1.0\r\n"
        f"Content-Type: text/plain\r\n\r\n{body}"
    ).encode()
    return OutboundMessage(
        message_id=f"<bench{i}@acme.agents.localhost>",
        sender="agent@acme.agents.localhost",
        recipients=(f"reader{i}@{DOMAIN}",),
        raw=raw,
        return_path="bounce-msg_bench@acme.agents.localhost",
    )


def run_postern(sender: SmtpLocalSender, messages: list[OutboundMessage], threads: int) -> float:
    def one(m: OutboundMessage) -> None:
        result = sender.send(m)
        outcome = result.recipients.get(m.recipients[0])
        if result.status != "sent" or (outcome is not None and outcome.status != "sent"):
            raise RuntimeError(f"not accepted: {result}")

    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, messages))
    return time.perf_counter() - start


def run_c(port: int, count: int, threads: int, size: int) -> float:
    cmd = ["smtp-source", "-d", "-s", str(threads), "-m", str(count), "-l", str(size)]
    cmd += ["-M", "bench.example.org", "-f", "agent@acme.agents.localhost", "-t", f"reader@{DOMAIN}"]
    start = time.perf_counter()
    done = subprocess.run([*cmd, f"127.0.0.1:{port}"], capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"smtp-source failed: {done.stderr[-2000:]}")
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000, help="messages per mode per round [2000]")
    parser.add_argument("--threads", type=int, default=4, help="sending threads / smtp-source sessions [4]")
    parser.add_argument("--size", type=int, default=2048, help="approximate message bytes [2048]")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved passes; the median is shown [3]")
    args = parser.parse_args()
    if shutil.which("smtp-sink") is None or shutil.which("smtp-source") is None:
        sys.exit("missing smtp-sink/smtp-source: apt-get install -y postfix && postfix stop")

    port = free_port()
    sink_cmd = ["smtp-sink", *(["-u", "postfix"] if os.geteuid() == 0 else []), f"127.0.0.1:{port}", "256"]
    sink = subprocess.Popen(sink_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    dns = StubDns()
    time.sleep(0.5)
    common = {"timeout": 10, "helo": "out.bench.test"}
    senders = {
        "direct": SmtpLocalSender(
            SmtpLocalSendOptions(mode="direct", resolver=dns.address, mx_port=port, reuse_seconds=30, **common)
        ),
        "direct, no reuse": SmtpLocalSender(
            SmtpLocalSendOptions(mode="direct", resolver=dns.address, mx_port=port, reuse_seconds=0, **common)
        ),
        "direct, no DNS cache": SmtpLocalSender(
            SmtpLocalSendOptions(mode="direct", resolver=dns.address, mx_port=port, dns_cache=False, **common)
        ),
        "smarthost": SmtpLocalSender(SmtpLocalSendOptions(smarthost=f"127.0.0.1:{port}", starttls=False, **common)),
    }
    rates: dict[str, list[float]] = {name: [] for name in ["smtp-source -d (C)", *senders]}
    try:
        batch = [message(i, args.size) for i in range(args.messages)]
        for sender in senders.values():  # warm-up: imports, the pool, the DNS path
            run_postern(sender, batch[:50], args.threads)
        for _ in range(args.rounds):
            rates["smtp-source -d (C)"].append(args.messages / run_c(port, args.messages, args.threads, args.size))
            for name, sender in senders.items():
                rates[name].append(args.messages / run_postern(sender, batch, args.threads))
    finally:
        for sender in senders.values():
            if sender._direct is not None:
                sender._direct.close()
        sink.terminate()
        sink.wait(10)

    ceiling = statistics.median(rates["smtp-source -d (C)"])
    print(f"\noutbound delivery to smtp-sink: {args.messages} messages x {args.rounds} rounds, {args.threads} threads")
    print(f"{'mode':24} {'msg/s (median)':>15} {'of C ceiling':>13}   rounds")
    for name, values in rates.items():
        median = statistics.median(values)
        shown = ", ".join(f"{v:.0f}" for v in values)
        print(f"{name:24} {median:15.0f} {median / ceiling:13.0%}   {shown}")
        if name != "smtp-source -d (C)":
            record(f"outbound {name} msg/s", median, "msg/s", "smtp-source -d into smtp-sink", ceiling)
    return 0


if __name__ == "__main__":
    sys.exit(main())
