"""A killed SMTP listener greets again within the documented bound (docs/reliability.md,
"Listener restarts"), however often and at whichever point of its start-up it is
killed, and no acknowledged message is lost.

Before the fix every kill doubled the supervisor's restart delay (1, 2, 4, 8, 16 … 60 s,
reset only after 30 s of uptime), and the prefork parent's likewise (0.5 … 30 s).

The kill points are drawn from a seeded random: a fixed seed in CI (as Hypothesis is
derandomized there, tests/conftest.py), a fresh one elsewhere, printed on failure;
``POSTERN_RESTART_SEED`` replays one. The long run is bench/listener_restart.py.
"""

from __future__ import annotations

import os
import random
import re
import secrets
import signal
import socket
import time

import pytest
from support import crash, restarts
from support.server import wait_for

pytestmark = pytest.mark.slow

ROUNDS = 6
BUDGET = 20.0  # seconds of rounds per case, whatever the machine's load: no new round after it


def _seed(processes: int) -> int:
    if os.environ.get("POSTERN_RESTART_SEED"):
        return int(os.environ["POSTERN_RESTART_SEED"])
    return 1000 + processes if os.environ.get("CI") else secrets.randbits(32)


@pytest.mark.parametrize("processes", [1, 2])
def test_a_killed_listener_greets_again_within_the_bound(processes, db_url, tmp_path):
    seed = _seed(processes)
    # The default restart backoff cap (60 s), not the crash tests' 1 s: the bound must
    # hold with the configuration `postern init` writes.
    deployment = crash.Deployment(
        db_url,
        tmp_path,
        env={"POSTERN_SERVER_RESTART_BACKOFF_MAX": "60"},
        smtp_options=f"processes = {processes}\n",
    )
    killer = restarts.Killer(deployment, processes, random.Random(seed))
    try:
        sender = crash.smtp_sender(deployment.server.smtp_port, deployment.inboxes)
        with crash.Clients(3, 0.02, sender) as clients:
            # Every phase once, in a random order, then random ones: bounded in count and time.
            phases = list(killer.phases())
            killer.rng.shuffle(phases)
            phases += [None] * (ROUNDS - len(phases))
            started = time.monotonic()
            for phase in phases:
                if phase is None and time.monotonic() - started > BUDGET:
                    break
                done = killer.one_round(phase, deadline=restarts.BOUND + 30)
                assert done.seconds <= restarts.BOUND, (
                    f"seed {seed}: after a kill at {done.phase} ({done.victim}) the port greeted only after "
                    f"{done.seconds:.1f}s (bound {restarts.BOUND:.1f}s); rounds so far: {killer.rounds}\n"
                    + deployment.server.output()[-4000:]
                )
        deployment.wait_ready()
        row = crash.Row("listener_restart", crash.database_name(db_url), kills=len(killer.rounds))
        crash.check_stored(deployment, clients, row, crash.Knobs())
    finally:
        deployment.close()
    print(f"\nseed {seed}: " + ", ".join(f"{r.phase}/{r.victim} {r.seconds:.2f}s" for r in killer.rounds))
    assert {r.phase for r in killer.rounds} == set(killer.phases())
    assert row.acknowledged > 0
    assert (row.lost, row.duplicated, row.altered) == (0, 0, 0), crash.report(row)


def test_healthz_and_the_log_say_why_the_smtp_port_is_not_served(db_url, tmp_path):
    """Killed, the listener shows as restarting (how it died, when it comes back); its
    replacement, finding the port taken, says by whom, backs off, and serves once the
    port is free again."""
    deployment = crash.Deployment(db_url, tmp_path, env={"POSTERN_SERVER_RESTART_BACKOFF_MAX": "60"})
    port = deployment.server.smtp_port

    def smtp_row():
        health = deployment.server.health() or {}
        return {s["name"]: s for s in health.get("services", [])}.get("smtp"), health.get("status")

    try:
        pid = deployment.service_pid("smtp")
        os.kill(pid, signal.SIGKILL)
        squatter = socket.socket()
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        wait_for(lambda: _try_bind(squatter, port), timeout=10, interval=0.01)  # before the 1 s restart delay ends
        squatter.listen()
        try:
            held = f"held by pid {os.getpid()}"
            row, status = wait_for(
                lambda: (r := smtp_row())[0] and r[0]["state"] == "restarting" and held in (r[0]["reason"] or "") and r,
                timeout=30,
            )
            assert status == "degraded"
            failed = re.match(r"exit 1 [\d.]+s after its start \((\d+) failed start\(s\) in a row\): ", row["reason"])
            assert failed, row["reason"]
            assert "address already in use" in row["reason"].lower()
            # Seen at once, this is the first failed start (next in 1 s); a loaded machine may see a later one.
            delay = 2 ** (int(failed.group(1)) - 1)
            assert 0 <= row["next_attempt_in"] <= delay
        finally:
            squatter.close()
        restarts.greets_within(port, restarts.BOUND + 2 * delay)  # the next attempt binds
        row, status = wait_for(lambda: (r := smtp_row())[0] and r[0]["state"] == "running" and r, timeout=30)
        assert (row["reason"], row["next_attempt_in"], status) == (None, None, "ok")
    finally:
        deployment.close()
    log = deployment.server.output()
    assert "WARNING postern.supervisor" in log and "smtp is not being served: signal 9 after serving" in log
    assert re.search(rf"ERROR postern.service \[\d+\] service smtp failed: .*in use.*{held}", log)
    assert re.search(r"smtp is not being served: exit 1 [\d.]+s after its start \(1 failed start\(s\) in a row\)", log)


def _try_bind(sock: socket.socket, port: int) -> bool:
    try:
        sock.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
