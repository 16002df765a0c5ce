"""A real `postern serve` process for tests that need sockets, workers and signals."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil

from postern.core import migrations
from postern.core.db import database, open_database

TESTS_DIR = Path(__file__).parent.parent


_issued: set[int] = set()
_issued_lock = threading.Lock()


def free_port() -> int:
    """A loopback port free now, and never handed out before in this process. The caller
    binds it later; after a bind(0) socket is closed the kernel may give the same port
    to the next bind(0), so the API, SMTP and DNS ports of one server (or the ports of
    two tests' servers) could otherwise be the same, and one of the binds fail."""
    with _issued_lock:
        while True:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
            if port not in _issued:
                _issued.add(port)
                return port


def wait_for(predicate, timeout=30.0, interval=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {predicate.__name__}")


class Server:
    def __init__(self, env: dict, tmp_path: Path, *args: str, config=lambda server: "", smtp_options: str = ""):
        """``config(server)`` returns TOML appended to the config file (ports are chosen);
        ``smtp_options`` are lines added to its ``[receive.smtp_local]`` table."""
        self.port = free_port()
        self.smtp_port = free_port()
        self.dns_port = free_port()
        self.config_file = tmp_path / f"postern-{self.port}.toml"
        # Backend options live in the file; everything else comes from the environment.
        self.config_file.write_text(
            f'[receive.smtp_local]\nbind = "127.0.0.1:{self.smtp_port}"\n{smtp_options}'
            f'[dns.dns_builtin]\nbind = "127.0.0.1:{self.dns_port}"\n' + config(self)
        )
        self.pidfile = tmp_path / "sleeper.pids"
        self.logfile = tmp_path / f"serve-{self.port}.log"
        self.log = open(self.logfile, "w")
        full_env = {
            **os.environ,
            "POSTERN_SERVER_WORKERS": "2",  # unless the test's env says otherwise
            **env,
            "POSTERN_SERVER_BIND": f"127.0.0.1:{self.port}",
            "POSTERN_PLUGINS_MODULES": "support.demo_plugin",
            "POSTERN_DEMO_PIDFILE": str(self.pidfile),
            "PYTHONPATH": str(TESTS_DIR) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        }
        full_env["POSTERN_CONFIG"] = str(self.config_file)
        self.env = full_env
        self.args = args
        self.url = f"http://127.0.0.1:{self.port}"
        self.start()

    def start(self) -> None:
        """Start ``postern serve`` (again, after a crash) on the same ports, config and log."""
        if self.log.closed:
            self.log = open(self.logfile, "a")  # noqa: SIM115 (closed by stop)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "postern", "serve", *self.args],
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

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


def workers_holding_my_connections(server: Server) -> set[int]:
    """Pids of the processes under ``server`` (its API workers) that hold an open
    connection this test process made to its API port: which worker serves a
    connection is the kernel's choice, and this is how a test sees it."""
    mine = {
        c.laddr.port
        for c in psutil.Process().net_connections("tcp")
        if c.raddr and c.raddr.port == server.port and c.status == psutil.CONN_ESTABLISHED
    }
    holders = set()
    for proc in descendants(server.proc.pid):
        try:
            conns = proc.net_connections("tcp")
        except psutil.NoSuchProcess:
            continue
        if any(c.laddr.port == server.port and c.raddr and c.raddr.port in mine for c in conns):
            holders.add(proc.pid)
    return holders


def descendants(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


def kill_tree(server: Server) -> None:
    if server.proc.poll() is None:
        for child in descendants(server.proc.pid):
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
        server.proc.kill()
        server.proc.wait()


def crash_tree(server: Server) -> None:
    """``kill -9`` of the whole ``postern serve`` tree as one event, like a machine
    losing its processes: every process is frozen (SIGSTOP) first, so the supervisor
    cannot restart a child and no child sees its parent die and shut down cleanly
    (PR_SET_PDEATHSIG sends SIGTERM), then all are killed."""
    try:
        top = psutil.Process(server.proc.pid)
    except psutil.NoSuchProcess:
        server.proc.wait()
        return
    frozen: dict[int, psutil.Process] = {}
    while True:  # children forked while we froze their parents join the list
        found = [top, *_quiet_children(top)]
        fresh = [p for p in found if p.pid not in frozen]
        if not fresh:
            break
        for proc in fresh:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.suspend()
            frozen[proc.pid] = proc
    for proc in frozen.values():
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    server.proc.wait()
    psutil.wait_procs(list(frozen.values()), timeout=10)


def _quiet_children(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return proc.children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def smtp_greets(port: int, timeout: float = 5) -> bool:
    """Whether an SMTP server on ``port`` greets and answers NOOP: listed in health is
    not listening yet."""
    import smtplib

    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=timeout) as client:
            return client.noop()[0] == 250
    except (OSError, smtplib.SMTPException):
        return False


@contextlib.contextmanager
def seeding(db_url: str):
    """The test database, migrated and connected for the block, closed after it: make
    there what a server test starts with (tenants, keys) before the server starts."""
    open_database(db_url)
    with database.connection_context():
        migrations.upgrade()
        yield


class Servers:
    """Starts ``postern serve`` processes for one test and kills each one after it."""

    def __init__(self, env: dict, tmp_path: Path):
        self.env, self.tmp_path, self.started = env, tmp_path, []

    def __call__(
        self, *args: str, env: dict | None = None, services=("smtp",), timeout: float = 60, **kwargs
    ) -> Server:
        """A server (``Server`` arguments: ``config=``, ``smtp_options=``), with ``env``
        added to the test's, once health lists ``services`` (and, with ``smtp`` among
        them, its SMTP port greets)."""
        server = Server({**self.env, **(env or {})}, self.tmp_path, *args, **kwargs)
        self.started.append(server)
        wait_for(lambda: (h := server.health()) and set(services) <= {s["name"] for s in h["services"]}, timeout)
        if "smtp" in services:
            wait_for(lambda: smtp_greets(server.smtp_port), timeout)
        return server

    def kill_all(self) -> None:
        for server in self.started:
            kill_tree(server)
