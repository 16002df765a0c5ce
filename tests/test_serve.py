"""`postern serve` as a real process: health over a socket, supervision, clean exit."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest
from tests_paths import TESTS_DIR

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout=30.0, interval=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {predicate.__name__}")


class Server:
    def __init__(self, env: dict, tmp_path: Path, *args: str):
        self.port = free_port()
        self.pidfile = tmp_path / "sleeper.pids"
        self.logfile = tmp_path / f"serve-{self.port}.log"
        self.log = open(self.logfile, "w")
        full_env = {
            **os.environ,
            **env,
            "POSTERN_SERVER_BIND": f"127.0.0.1:{self.port}",
            "POSTERN_SERVER_WORKERS": "2",
            "POSTERN_PLUGINS_MODULES": "support.demo_plugin",
            "POSTERN_DEMO_PIDFILE": str(self.pidfile),
            "PYTHONPATH": str(TESTS_DIR) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        }
        full_env.pop("POSTERN_CONFIG", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "postern", "serve", *args], env=full_env, stdout=self.log, stderr=subprocess.STDOUT
        )
        self.url = f"http://127.0.0.1:{self.port}"

    def health(self):
        try:
            return httpx.get(f"{self.url}/healthz", timeout=2).json()
        except httpx.HTTPError:
            return None

    def sleeper_pids(self) -> list[int]:
        if not self.pidfile.exists():
            return []
        return [int(line) for line in self.pidfile.read_text().split()]

    def output(self) -> str:
        return self.logfile.read_text()

    def stop(self, sig=signal.SIGTERM, timeout=40) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self.log.close()


@pytest.fixture
def server(env, tmp_path):
    servers = []

    def start(*args):
        servers.append(Server(env, tmp_path, *args))
        return servers[-1]

    yield start
    for s in servers:
        if s.proc.poll() is None:
            for child in psutil.Process(s.proc.pid).children(recursive=True):
                child.kill()
            s.proc.kill()
            s.proc.wait()


def descendants(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


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
            except psutil.ZombieProcess:
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
