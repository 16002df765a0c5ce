"""Crash consistency, the long version: every scenario of tests/support/crash.py with
``--kills`` SIGKILLs each (default 20), on SQLite or on PostgreSQL, one table row per
scenario: kills, acknowledged, lost, duplicated, altered, stored-though-cut-before-ack.

    python bench/crash_consistency.py --kills 20
    python bench/crash_consistency.py --kills 20 --database-url postgresql://postgres@127.0.0.1:5432/test
    python bench/crash_consistency.py --database-url sqlite --database-url postgresql://…   # both, one table
    python bench/crash_consistency.py --only smtp_listener,webhooks --kills 5

A PostgreSQL run works in a fresh schema of the named database, dropped afterwards.
Exit status 1 if any scenario lost or altered anything, left a send or a delivery
unfinished, or stored an SMTP message twice (see bench/README.md).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

from harness import record  # puts tests/ on sys.path, for support.*
from support import crash

FAILURES: list[str] = []


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLs per scenario (default 20)")
    parser.add_argument(
        "--database-url",
        action="append",
        help="'sqlite' (the default) or postgresql://… (a scratch schema is used); repeat to run on each; "
        "an empty value is skipped (tox passes an unset $POSTERN_TEST_DATABASE_URL so)",
    )
    parser.add_argument("--only", help=f"comma-separated subset of: {', '.join(crash.SCENARIOS)}")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients per scenario (default 4)")
    parser.add_argument("--pace", type=float, default=0.02, help="seconds each client pauses between items")
    parser.add_argument("--gap", default="0.3,3", help="random seconds between back-at-work and the next kill")
    parser.add_argument("--raw-sample", type=int, default=50, help="messages also read back raw through the API")
    parser.add_argument("--seed", type=int, default=None, help="seed of the kill moments")
    parser.add_argument("--keep", action="store_true", help="keep the temp dirs (logs, SQLite files)")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(crash.SCENARIOS)
    unknown = [n for n in names if n not in crash.SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(crash.SCENARIOS)}")
    low, high = (float(x) for x in args.gap.split(","))
    knobs = crash.Knobs(
        kills=args.kills,
        clients=args.clients,
        pace=args.pace,
        gap=(low, high),
        raw_sample=args.raw_sample,
        seed=args.seed,
    )

    urls = args.database_url or ["sqlite"]
    for url in urls:
        if not url:
            print("(an empty --database-url: that run is skipped)", file=sys.stderr)
    rows = []
    for database_url in [u for u in urls if u]:
        rows += run_all(names, database_url, knobs, args.keep)
    print(f"\nCrash consistency, {args.kills} kills per scenario\n")
    print(crash.table(rows))
    broken = [row for row in rows if row.broken]
    for row in broken:
        what = "acknowledged item(s) lost, altered, unfinished or stored twice"
        print(f"! {row.scenario} on {row.database}: {row.broken} {what}")
        for finding in row.findings:
            print(f"    {finding}")
    for failure in FAILURES:
        print(f"! {failure}")
    return 1 if broken or FAILURES else 0


def run_all(names: list[str], database_url: str, knobs: crash.Knobs, keep: bool) -> list[crash.Row]:
    rows = []
    for name in names:
        tmp = Path(tempfile.mkdtemp(prefix=f"postern-crash-{name}-"))
        start = time.monotonic()
        where = crash.database_name(database_url)
        print(f"- {name} on {where}: {knobs.kills} kills ({crash.now()} UTC, in {tmp})", file=sys.stderr, flush=True)
        try:
            with crash.scratch_database(database_url, tmp) as url:
                row = crash.run(name, url, tmp, knobs)
        except Exception as exc:  # the run itself broke (a part never came back): say so, go on
            traceback.print_exc()
            FAILURES.append(f"{name} on {where}: the run failed: {type(exc).__name__}: {exc} (kept: {tmp})")
            continue
        print(f"  done in {time.monotonic() - start:.0f}s", file=sys.stderr, flush=True)
        rows.append(row)
        print(crash.table([row]).splitlines()[-1], file=sys.stderr, flush=True)
        if not keep and not row.broken:
            shutil.rmtree(tmp, ignore_errors=True)
        record(
            f"crash {name} {row.database}, broken",
            row.broken,
            "items",
            baseline="acknowledged",
            baseline_value=row.acknowledged,
            target="= 0",
            met=row.broken == 0,
        )
    return rows


if __name__ == "__main__":
    sys.exit(main())
