"""SMTP ingest: Postern's real listener against a do-nothing aiosmtpd and smtp-sink.

Loads the servers below in turn, one at a time on free 127.0.0.1 ports, with Debian's
``smtp-source`` (package ``postfix``): ~2 KB messages, 10 concurrent sessions, a new
connection per message. Postern answers 250 only after the message is committed.

- ``postern``: ``python -m postern service run smtp`` (the process ``postern serve``
  supervises), SQLite in a temp data dir, one inbox created beforehand.
- ``postern xN``: the same with ``[receive.smtp_local] processes = N`` (``--multi``).
- ``aiosmtpd parse``: bench/null_smtp.py --parse: aiosmtpd built as Postern builds it,
  whose handler parses the message with Postern's parser and stores nothing. The
  ceiling of any one-process listener that parses before its 250.
- ``aiosmtpd null``: bench/null_smtp.py, aiosmtpd built with Postern's settings
  (fixed hostname, same size limit, uvloop if importable), whose handler only says 250.
- ``smtp-sink``: Postfix's C sink, the ceiling of the load generator on this machine.

Rounds interleave the servers; the table shows the median. After the run, the rows
in Postern's ``message`` table are counted and must equal the messages sent to it.

    python bench/smtp_ingest.py [--messages 2000] [--sessions 10] [--size 2048] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiosmtpd
from harness import (
    BENCH_DIR,
    Child,
    count_messages,
    free_port,
    make_world,
    postern_cmd,
    record,
    running,
    wait_smtp,
)

TARGET = 0.80  # Postern >= 80% of the parse-only aiosmtpd (issue 25; every 250 still committed)
BASELINE = "aiosmtpd parse"


def smtp_source(args, port: int, to: str, messages: int, extra: list[str] | tuple = ()) -> float:
    """Send ``messages`` with smtp-source; returns the wall-clock seconds it took.
    ``extra``: more smtp-source flags (bench/extraction_ingest.py sends a file with -F)."""
    cmd = [
        "smtp-source",
        "-s", str(args.sessions),
        "-m", str(messages),
        *(["-l", str(args.size)] if args.size else []),  # -F (a file) and -l exclude each other
        "-M", "bench.example.org",
        "-f", "a@example.org",
        "-t", to,
    ]  # fmt: skip
    if args.reuse:
        cmd.append("-d")
    cmd += [*extra, f"127.0.0.1:{port}"]
    start = time.perf_counter()
    # Without -A, smtp-source exits non-zero on the first reply that is not the expected one.
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"smtp-source failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return elapsed


def sink_cmd(port: int) -> list[str]:
    cmd = ["smtp-sink"]
    if os.geteuid() == 0:
        cmd += ["-u", "postfix"]  # required when run as root: it drops to this user after binding
    return [*cmd, f"127.0.0.1:{port}", "256"]


def config_extra(args) -> str:
    """Optional overrides for Postern's config file; none by default (Postern as shipped)."""
    extra = ""
    if args.log_level:
        extra += f'[log]\nlevel = "{args.log_level}"\n'
    if args.sqlite_synchronous:
        extra += f'[database]\nsqlite_synchronous = "{args.sqlite_synchronous}"\n'
    return extra


def smtp_extra(args, processes: int = 0) -> str:
    extra = f"threads = {args.smtp_threads}\n" if args.smtp_threads else ""
    return extra + (f"processes = {processes}\n" if processes else "")


def interleaved_arguments(doc: str) -> argparse.ArgumentParser:
    """The options of a bench that interleaves a baseline and a variant of the listener
    under smtp-source (extraction_ingest.py, verify_ingest.py)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1000, help="messages per measured run [1000]")
    parser.add_argument("--warmup", type=int, default=100, help="unmeasured messages before each run [100]")
    parser.add_argument("--sessions", type=int, default=10, help="concurrent SMTP sessions [10]")
    parser.add_argument("--rounds", type=int, default=3, help="passes over both configurations [3]")
    return parser


def check_tools() -> None:
    missing = [tool for tool in ("smtp-source", "smtp-sink") if shutil.which(tool) is None]
    if missing:
        sys.exit(
            f"missing {', '.join(missing)}: install Debian's postfix package "
            "(DEBIAN_FRONTEND=noninteractive apt-get install -y postfix; then `postfix stop` if it started)"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000, help="messages per measured run [2000]")
    parser.add_argument("--warmup", type=int, default=100, help="unmeasured messages before each run [100]")
    parser.add_argument("--sessions", type=int, default=10, help="concurrent SMTP sessions (smtp-source -s) [10]")
    parser.add_argument("--size", type=int, default=2048, help="message payload bytes (smtp-source -l) [2048]")
    parser.add_argument("--rounds", type=int, default=2, help="passes over all servers; the median is shown [2]")
    parser.add_argument("--reuse", action="store_true", help="reuse connections (smtp-source -d) instead of one each")
    parser.add_argument("--log-level", help="Postern's [log] level (default: Postern's default, info)")
    parser.add_argument("--sqlite-synchronous", choices=["full", "normal"], help="Postern's [database] setting")
    parser.add_argument("--smtp-threads", type=int, help="[receive.smtp_local] threads (Postern's default: 4)")
    parser.add_argument(
        "--multi", type=int, default=2, help="also run Postern with this many listener processes; 0: skip [2]"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, database) and print its path")
    args = parser.parse_args()
    check_tools()

    try:
        import uvloop

        loop = f"uvloop {uvloop.__version__}"
    except ImportError:
        loop = "asyncio (no uvloop)"
    print(
        f"# {platform.node()} | {os.cpu_count()} CPUs | Python {platform.python_version()} | "
        f"aiosmtpd {aiosmtpd.__version__} on {loop} | load: smtp-source"
    )
    print(
        f"# {args.sessions} sessions, {args.size}-byte payloads, {args.messages} messages per run after "
        f"{args.warmup} warm-up, {'connection reuse' if args.reuse else 'new connection per message'}, "
        f"{args.rounds} round(s)",
        flush=True,
    )

    multi = f"postern x{args.multi}" if args.multi > 1 else None
    servers = ["postern", *([multi] if multi else []), "aiosmtpd parse", "aiosmtpd null", "smtp-sink"]
    samples: dict[str, list[float]] = {}
    sent_to_postern = 0
    tmp = Path(tempfile.mkdtemp(prefix="postern-bench-smtp-"))
    try:
        world = make_world(tmp, config_extra=config_extra(args), smtp_extra=smtp_extra(args))
        inbox = world.inboxes[0]["address"]
        for round_no in range(1, args.rounds + 1):
            for name in servers:
                if name.startswith("postern"):
                    # A fresh listener each round on the same database; its port is in the config file.
                    processes = args.multi if name == multi else 0
                    world.write_config(config_extra(args), smtp_extra(args, processes))
                    port = world.smtp_port
                    log = tmp / f"postern{processes or ''}-{round_no}.log"
                    child = Child(name, postern_cmd("service", "run", "smtp"), log, world.env(), tmp)
                elif name.startswith("aiosmtpd"):
                    port = free_port()
                    cmd = [sys.executable, str(BENCH_DIR / "null_smtp.py"), f"127.0.0.1:{port}"]
                    cmd += ["--parse"] if name == "aiosmtpd parse" else []
                    child = Child(name, cmd, tmp / f"{name.split()[1]}-{round_no}.log", cwd=tmp)
                else:
                    port = free_port()
                    child = Child(name, sink_cmd(port), tmp / f"sink-{round_no}.log", cwd=tmp)
                with running(child):
                    wait_smtp(child, port)
                    if args.warmup:
                        smtp_source(args, port, inbox, args.warmup)
                    elapsed = smtp_source(args, port, inbox, args.messages)
                    child.check_alive()
                if name.startswith("postern"):
                    sent_to_postern += args.warmup + args.messages
                rate = args.messages / elapsed
                samples.setdefault(name, []).append(rate)
                print(f"  round {round_no}: {name:<14} {rate:>8,.0f} msg/s  ({elapsed:.1f}s)", file=sys.stderr)

        stored = count_messages(world)
    finally:
        if args.keep:
            print(f"# kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    median = {name: statistics.median(rates) for name, rates in samples.items()}
    null, sink = median["aiosmtpd null"], median["smtp-sink"]
    print(f"\n{'server':<14} {'msg/s':>8} {'min-max':>14} {'vs parse':>8} {'vs null':>8} {'vs sink':>8}")
    for name, rates in samples.items():
        spread = f"{min(rates):,.0f}-{max(rates):,.0f}"
        print(
            f"{name:<14} {median[name]:>8,.0f} {spread:>14} {median[name] / median[BASELINE]:>7.0%} "
            f"{median[name] / null:>7.0%} {median[name] / sink:>7.0%}"
        )
    print()
    base = median[BASELINE]
    for name in servers[: 2 if multi else 1]:
        ratio = median[name] / base
        print(f"target: {name} >= {TARGET:.0%} of {BASELINE} -> {ratio:.0%}, {'met' if ratio >= TARGET else 'NOT met'}")
    ceiling = base / null
    print(
        f"parsing alone, in one process, reaches {ceiling:.0%} of aiosmtpd null: the most any one-process "
        "listener that refuses bad MIME at DATA can reach"
    )
    ok = stored == sent_to_postern
    ratio = median["postern"] / base
    record("SMTP ingest, msg/s", median["postern"], "msg/s", BASELINE, base, f">= {TARGET:.0%}", ratio >= TARGET)
    if multi:
        ratio = median[multi] / base
        met = ratio >= TARGET
        record(f"SMTP ingest {multi}, msg/s", median[multi], "msg/s", BASELINE, base, f">= {TARGET:.0%}", met)
    record("SMTP parse-only aiosmtpd, msg/s", median["aiosmtpd parse"], "msg/s", "aiosmtpd null", null)
    record("SMTP ingest vs C sink, msg/s", median["postern"], "msg/s", "smtp-sink", sink)
    record("SMTP messages stored of sent", stored, "rows", "sent", sent_to_postern, "= 100%", ok)
    print(
        f"stored rows in postern's message table: {stored:,} of {sent_to_postern:,} sent -> "
        f"{'OK' if ok else 'MISMATCH'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
