"""SMTP ingest with sender verification on and off, in the same run, on the same database,
and what one message's verification costs.

Postern's real listener (``python -m postern service run smtp``, SQLite) loaded by
Debian's ``smtp-source`` as bench/extraction_ingest.py does (10 sessions, a new
connection per message), every message DKIM-signed (RSA 2048) by a domain whose key,
SPF and DMARC policy a local DNS server on 127.0.0.1 serves (tests/support/zone_dns.py,
``[trust] resolver``), so each message costs SPF, DKIM and DMARC lookups and checks.
Rounds interleave ``[trust] verify = false`` (the baseline) and ``true``; the table
shows the median msg/s and their ratio (target >= 70%).

Then ``verdicts.evaluate`` alone, in this process, on the same message against the same
DNS server: p50 and p99 of one message's verification.

    python bench/verify_ingest.py [--messages 1000] [--rounds 3] [--samples 500]
"""

from __future__ import annotations

import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

from harness import Child, count_messages, make_world, postern_cmd, record, running, wait_smtp
from smtp_ingest import check_tools, interleaved_arguments, smtp_source

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
TARGET = 0.70


def signed_message(to: str) -> tuple[bytes, str]:
    """A DKIM-signed message from news@sender.example, and the key record to publish."""
    import base64

    import dkim
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    body = "".join(f"Line {n} of a newsletter that says very little at some length.\r\n" for n in range(40))
    raw = (
        f"From: News <news@sender.example>\r\nTo: {to}\r\nSubject: This week\r\n"
        f"Message-ID: <bench@sender.example>\r\nDate: Sun, 06 Dec 2026 10:00:00 +0000\r\n\r\n{body}"
    ).encode()
    signature = dkim.sign(raw, b"s1", b"sender.example", private, include_headers=[b"from", b"to", b"subject"])
    return signature + raw, f"v=DKIM1; k=rsa; p={base64.b64encode(public).decode()}"


def zone_for(key_record: str):
    from support.zone_dns import ZoneDns

    return ZoneDns(
        {
            ("s1._domainkey.sender.example", "TXT"): [key_record],
            ("_dmarc.sender.example", "TXT"): ["v=DMARC1; p=reject"],
            # smtp-source's envelope sender (a@example.org) from 127.0.0.1.
            ("example.org", "TXT"): ["v=spf1 ip4:127.0.0.1 -all"],
        }
    )


def main() -> int:
    parser = interleaved_arguments(__doc__)
    parser.add_argument("--samples", type=int, default=500, help="verifications timed alone [500]")
    args = parser.parse_args()
    check_tools()
    args.reuse, args.size = False, 0

    samples: dict[bool, list[float]] = {}
    tmp = Path(tempfile.mkdtemp(prefix="postern-bench-verify-"))
    try:
        world = make_world(tmp)
        inbox = world.inboxes[0]["address"]
        raw, key_record = signed_message(inbox)
        source = tmp / "signed.eml"
        source.write_bytes(raw.replace(b"\r\n", b"\n"))  # smtp-source -F sends LF as CRLF
        zone = zone_for(key_record)
        sent = 0
        for round_no in range(1, args.rounds + 1):
            for verifying in (False, True):
                world.write_config(
                    f'[trust]\nverify = {"true" if verifying else "false"}\nresolver = "{zone.address}"\n'
                )
                name = "verify" if verifying else "baseline"
                child = Child(
                    name, postern_cmd("service", "run", "smtp"), tmp / f"{name}-{round_no}.log", world.env(), tmp
                )
                with running(child):
                    wait_smtp(child, world.smtp_port)
                    smtp_source(args, world.smtp_port, inbox, args.warmup, extra=["-F", str(source)])
                    elapsed = smtp_source(args, world.smtp_port, inbox, args.messages, extra=["-F", str(source)])
                    child.check_alive()
                sent += args.warmup + args.messages
                rate = args.messages / elapsed
                samples.setdefault(verifying, []).append(rate)
                print(f"  round {round_no}: {name:<9} {rate:>7,.0f} msg/s", file=sys.stderr)
        stored = count_messages(world)
        with sqlite3.connect(world.db_path) as conn:
            verified = conn.execute(
                """SELECT count(*) FROM message WHERE authentication LIKE '%"verified_sender": true%'"""
            ).fetchone()[0]
        latencies = time_alone(raw, zone.address, args.samples)
        zone.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    verified_expected = args.rounds * (args.warmup + args.messages)
    base, on = statistics.median(samples[False]), statistics.median(samples[True])
    ratio = on / base
    p50, p99 = _percentile(latencies, 50), _percentile(latencies, 99)
    print(f"\n# {args.sessions} sessions, {args.messages} messages per run, {args.rounds} rounds, median msg/s")
    print(f"{'baseline':>9} {'verify':>9} {'ratio':>7}")
    print(f"{base:>9,.0f} {on:>9,.0f} {ratio:>7.0%}")
    print(f"one message's verification alone ({len(latencies)} runs): p50 {p50:.2f} ms, p99 {p99:.2f} ms")
    print(f"stored rows: {stored:,} of {sent:,} sent -> {'OK' if stored == sent else 'MISMATCH'}")
    print(f"verified senders: {verified:,} of {verified_expected:,} checked -> "
          f"{'OK' if verified == verified_expected else 'MISMATCH'}")  # fmt: skip
    record("SMTP ingest with sender verification, msg/s", on, "msg/s", "[trust] verify = false", base,
           f">= {TARGET:.0%}", ratio >= TARGET)  # fmt: skip
    record("sender verification p50, ms", p50, "ms")
    record("sender verification p99, ms", p99, "ms")
    return 0 if stored == sent and verified == verified_expected and ratio >= TARGET else 1


def time_alone(raw: bytes, resolver: str, count: int) -> list[float]:
    from postern.core.mail import verdicts

    times = []
    for _ in range(count):
        start = time.perf_counter()
        verdict = verdicts.evaluate(
            raw, "news@sender.example", "a@example.org", "127.0.0.1", "bench", resolver=resolver
        )
        times.append((time.perf_counter() - start) * 1000)
        assert verdict.verified_sender, verdict
    return times


def _percentile(values: list[float], pct: int) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


if __name__ == "__main__":
    sys.exit(main())
