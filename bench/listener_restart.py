"""Listener restarts, the long version: kill the SMTP listener of a real ``postern serve``
(default configuration: restart backoff cap 60 s) ``--kills`` times at random points of
its life and start-up (tests/support/restarts.py), with SMTP clients sending all along,
and print the distribution of the time from the last kill to a 220 greeting, per phase
and overall, and whether any acknowledged message was lost.

    python bench/listener_restart.py --kills 300 --processes 1
    python bench/listener_restart.py --kills 300 --processes 2 --database-url postgresql://…

Exit status 1 if a round exceeded the bound tests/test_listener_restart.py asserts, or
an acknowledged message was lost, stored twice or altered.
"""

from __future__ import annotations

import argparse
import random
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path

from harness import record  # puts tests/ on sys.path, for support.*
from support import crash, restarts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=300, help="rounds, each ending in one measured kill")
    parser.add_argument("--processes", type=int, default=1, help="[receive.smtp_local] processes (default 1)")
    parser.add_argument("--database-url", default=None, help="'sqlite' (default) or postgresql://… (scratch schema)")
    parser.add_argument("--phase", choices=restarts.PHASES, help="only this phase (default: random)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent SMTP clients (default 4)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the kill points")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (serve log, SQLite file)")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else secrets.randbits(32)
    tmp = Path(tempfile.mkdtemp(prefix="listener-restart-"))
    url = args.database_url if args.database_url not in (None, "", "sqlite") else None
    started = time.monotonic()
    with crash.scratch_database(url, tmp) as db_url:
        deployment = crash.Deployment(
            db_url,
            tmp,
            env={"POSTERN_SERVER_RESTART_BACKOFF_MAX": "60"},
            smtp_options=f"processes = {args.processes}\n",
        )
        killer = restarts.Killer(deployment, args.processes, random.Random(seed))
        try:
            sender = crash.smtp_sender(deployment.server.smtp_port, deployment.inboxes)
            with crash.Clients(args.clients, 0.0, sender, max_items=10**7) as clients:
                for n in range(args.kills):
                    done = killer.one_round(args.phase, deadline=restarts.BOUND + 120)
                    if (n + 1) % 25 == 0 or done.seconds > restarts.BOUND:
                        print(f"{n + 1} kills; last {done.phase}/{done.victim} {done.seconds:.2f}s", flush=True)
            deployment.wait_ready()
            row = crash.Row("listener_restart", crash.database_name(db_url), kills=len(killer.rounds))
            crash.check_stored(deployment, clients, row, crash.Knobs(raw_sample=0))
        finally:
            deployment.close()
    took = time.monotonic() - started
    print(f"\nseed {seed}, processes {args.processes}, {crash.database_name(db_url)}, {took:.0f}s")
    print(f"{'phase':<8} {'kills':>5} {'min':>6} {'p50':>6} {'p90':>6} {'p99':>6} {'max':>6}  (seconds, kill to 220)")
    groups = {phase: [r.seconds for r in killer.rounds if r.phase == phase] for phase in restarts.PHASES}
    groups["all"] = [r.seconds for r in killer.rounds]
    for phase, seconds in groups.items():
        if seconds:
            d = restarts.distribution(seconds)
            cells = " ".join(f"{d[k]:>6.2f}" for k in ("min", "p50", "p90", "p99", "max"))
            print(f"{phase:<8} {len(seconds):>5} {cells}")
    print(crash.report(row))
    over = [r for r in killer.rounds if r.seconds > restarts.BOUND]
    worst = restarts.distribution(groups["all"])["max"]
    record(
        f"listener restart, processes {args.processes}, max kill-to-220",
        round(worst, 2),
        "s",
        target=f"<= {restarts.BOUND:.1f}",
        met=not over,
    )
    if args.keep:
        print(f"kept {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if over or row.lost or row.duplicated or row.altered else 0


if __name__ == "__main__":
    sys.exit(main())
