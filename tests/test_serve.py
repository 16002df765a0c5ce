"""`postern serve` as a real process: health over a socket, supervision, clean exit."""

from __future__ import annotations

import os
import re
import signal

import psutil
import pytest
from support.server import Server, descendants, kill_tree, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def server(env, tmp_path):
    servers = []

    def start(*args):
        servers.append(Server(env, tmp_path, *args))
        return servers[-1]

    yield start
    for s in servers:
        kill_tree(s)


def test_serve_health_supervision_and_clean_exit(server):
    s = server()
    health = wait_for(lambda: (h := s.health()) and {x["name"] for x in h["services"]} >= {"api", "demo-sleeper"} and h)
    assert health["status"] == "ok" and health["database"]["ok"] is True
    # supervisor -> gunicorn master -> 2 workers, and the service
    tree = wait_for(lambda: len(t := descendants(s.proc.pid)) >= 4 and t)
    assert sum("demo-sleeper" in " ".join(p.cmdline()) for p in tree) == 1

    first = wait_for(s.sleeper_pids)[0]
    os.kill(first, signal.SIGKILL)
    pids = wait_for(lambda: len(s.sleeper_pids()) >= 2 and s.sleeper_pids(), timeout=20)
    assert pids[1] != first and psutil.pid_exists(pids[1])

    def restarted():
        health = s.health()
        rows = {x["name"]: x for x in (health or {}).get("services", [])}
        row = rows.get("demo-sleeper")
        return row if row and row["restarts"] == 1 and row["state"] == "running" and row["pid"] == pids[1] else None

    row = wait_for(restarted)
    assert row["last_exit"] == "signal 9"

    tree = descendants(s.proc.pid)
    assert s.stop() == 0
    gone, alive = psutil.wait_procs(tree, timeout=10)
    assert alive == [], f"orphans left: {[p.pid for p in alive]}"
    assert "received SIGTERM: stopping" in s.output()


def test_only_api_serves_without_services(server):
    s = server("--only", "api")
    health = wait_for(s.health)
    assert health["database"]["ok"] is True
    assert not s.sleeper_pids()
    # The access line (postern.httpconn.AccessLogger): peer, method and path (never the
    # query), status, bytes sent and milliseconds.
    line = wait_for(lambda: re.search(r'127\.0\.0\.1 "GET /healthz" 200 (\d+) (\d+)ms', s.output()))
    assert int(line.group(1)) > 0
    tree = descendants(s.proc.pid)
    assert s.stop() == 0
    _, alive = psutil.wait_procs(tree, timeout=10)
    assert alive == []


def test_only_services_runs_services_without_api(server):
    s = server("--only", "services")
    wait_for(s.sleeper_pids)
    assert s.health() is None  # nothing listens on the API port
    tree = descendants(s.proc.pid)
    assert s.stop(signal.SIGINT) == 0
    _, alive = psutil.wait_procs(tree, timeout=10)
    assert alive == []


def test_crashed_api_is_restarted(server):
    s = server()
    wait_for(s.health)

    def api_master():
        for child in psutil.Process(s.proc.pid).children():
            try:
                if "--only" in child.cmdline():
                    return child
            except (psutil.ZombieProcess, psutil.NoSuchProcess):
                continue  # the killed one, until the supervisor reaps it
        return None

    master = wait_for(api_master)
    master.kill()
    wait_for(lambda: (m := api_master()) and m.pid != master.pid)
    health = wait_for(
        lambda: (h := s.health()) and any(x["name"] == "api" and x["restarts"] == 1 for x in h["services"]) and h
    )
    assert health["database"]["ok"]
    assert s.stop() == 0
