"""A real `postern serve` process for tests that need sockets, workers and signals."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

TESTS_DIR = Path(__file__).parent.parent


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
        self.smtp_port = free_port()
        self.dns_port = free_port()
        self.config_file = tmp_path / f"postern-{self.port}.toml"
        # Backend options live in the file; everything else comes from the environment.
        self.config_file.write_text(
            f'[receive.smtp_local]\nbind = "127.0.0.1:{self.smtp_port}"\n'
            f'[dns.dns_builtin]\nbind = "127.0.0.1:{self.dns_port}"\n'
        )
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
        full_env["POSTERN_CONFIG"] = str(self.config_file)
        self.env = full_env
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


def descendants(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


def kill_tree(server: Server) -> None:
    if server.proc.poll() is None:
        for child in descendants(server.proc.pid):
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
        server.proc.kill()
        server.proc.wait()
