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

#: Every server started during the running test, for the report of a failed test
#: (tests/conftest.py prints each one's log, process tree and stacks), and killed after
#: the test's teardown: a server shared by several tests (a module-scoped fixture) would
#: need to leave this list.
started_in_test: list[Server] = []

#: tests/sitecustomize.py has every Python process of a test's server dump its threads'
#: stacks to its log on this signal (gunicorn resets the standard ones in its workers).
STACKS_SIGNAL = signal.SIGRTMIN + 3


def free_port() -> int:
    """A loopback port free now for TCP and for UDP, and never handed out before in this
    process. The caller binds it later; after a bind(0) socket is closed the kernel may
    give the same port to the next bind(0), so the API, SMTP and DNS ports of one server
    (or the ports of two tests' servers) could otherwise be the same, and one of the
    binds fail. UDP too, since the DNS service binds both: a port free for TCP may be
    some process's ephemeral UDP port (a resolver's query, a doorbell datagram socket)."""
    with _issued_lock:
        while True:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
                if port in _issued or not _udp_free(port):
                    continue
            _issued.add(port)
            return port


def _udp_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


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
        started_in_test.append(self)
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


def post_mortem(server: Server, log_lines: int = 40, frames: int = 6) -> str:
    """What a failed test needs to know about ``server``: the end of its log, its
    processes, and where each one's threads are (the innermost ``frames`` calls)."""
    if not server.log.closed:
        server.log.flush()
    lines = [f"--- the last {log_lines} lines of its log ---", *server.output().splitlines()[-log_lines:]]
    lines.append(f"--- its processes (API port {server.port}, SMTP {server.smtp_port}, DNS {server.dns_port}) ---")
    proc = getattr(server, "proc", None)
    if proc is None or proc.poll() is not None:  # (a reaped pid may be someone else's by now)
        lines.append(f"none: {'it did not start' if proc is None else f'it exited with {proc.returncode}'}")
        return "\n".join(lines)
    tree = []
    with contextlib.suppress(psutil.NoSuchProcess):
        tree = [psutil.Process(proc.pid), *descendants(proc.pid)]
    for member in tree:
        with contextlib.suppress(psutil.Error):
            lines.append(f"{member.pid} (parent {member.ppid()}) {member.status()}: {' '.join(member.cmdline()[2:])}")
            lines += _stacks(server, member, frames)
    return "\n".join(lines)


def _stacks(server: Server, proc: psutil.Process, frames: int) -> list[str]:
    """``proc``'s threads' innermost ``frames`` calls, which it writes to the log on
    ``STACKS_SIGNAL`` (tests/sitecustomize.py). Only to a process that handles the
    signal: one that has not reached sitecustomize yet (just started, or not Python)
    would die of it."""
    try:
        with open(f"/proc/{proc.pid}/status") as status:
            caught = next(int(line.split()[1], 16) for line in status if line.startswith("SigCgt:"))
    except (OSError, StopIteration):
        return ["  (gone)"]
    if not caught >> (STACKS_SIGNAL - 1) & 1:
        return ["  (no stacks: it does not handle the signal yet)"]
    before = len(server.output())
    proc.send_signal(STACKS_SIGNAL)  # psutil checks the pid is still this process
    deadline, size = time.monotonic() + 2, before
    while time.monotonic() < deadline:
        time.sleep(0.1)
        grown = len(server.output())
        if grown > before and grown == size:
            break  # written, and no longer growing
        size = grown
    kept, depth = [], 0
    for line in server.output()[before:].splitlines():
        if line.startswith(("Current thread", "Thread 0x")):
            kept.append("  " + line)
            depth = 0
        elif line.startswith("  File") and "<frozen " not in line and depth < frames:
            kept.append("  " + line)
            depth += 1
    return kept


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
