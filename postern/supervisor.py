"""Supervision of ``postern serve``'s child processes: the API and plugin services.

Each child is a ``postern`` command in its own process group. The API starts first;
services start once it accepts connections. A child that exits is restarted after
a backoff that doubles up to a minute and resets after a healthy run. SIGTERM or
SIGINT stops every child (SIGTERM, then SIGKILL after a grace period) before exit.
States go to the database so /healthz in any worker or host can report them.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field

import peewee

from postern.core.config import Config
from postern.core.db import database
from postern.core.models import ServiceState, utcnow
from postern.core.prefork import die_with_parent

log = logging.getLogger("postern.supervisor")

BACKOFF_START = 1.0
HEALTHY_RUN = 30.0  # seconds of uptime after which a crash no longer counts towards backoff
READY_TIMEOUT = 60.0
POLL = 0.2


@dataclass
class Child:
    name: str
    argv: list[str]
    proc: subprocess.Popen | None = None
    restarts: int = 0
    backoff: float = BACKOFF_START
    next_start: float = 0.0
    started_at: float = 0.0
    state: str = "starting"
    last_exit: str | None = None
    history: list[int] = field(default_factory=list)


def _die_with_parent() -> None:
    """Runs in the child before exec: ask Linux to SIGTERM it if the supervisor dies."""
    os.setsid()
    die_with_parent(signal.SIGTERM)


class Supervisor:
    def __init__(self, config: Config, children: list[Child], wait_for_bind: str | None):
        self.config = config
        self.children = children
        self.wait_for_bind = wait_for_bind
        self.host = socket.gethostname()
        self.stopping = False

    # -- lifecycle -----------------------------------------------------------------
    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        try:
            first, rest = (self.children[:1], self.children[1:]) if self.wait_for_bind else ([], self.children)
            for child in first:
                self._start(child)
            if self.wait_for_bind and not self._wait_ready(first[0]):
                return 1
            for child in rest:
                self._start(child)
            while not self.stopping:
                self._tick()
                time.sleep(POLL)
        finally:
            self._stop_all()
        return 0

    def _on_signal(self, signum, frame) -> None:
        log.info("received %s: stopping", signal.Signals(signum).name)
        self.stopping = True

    def _wait_ready(self, child: Child) -> bool:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline and not self.stopping:
            if child.proc.poll() is not None:
                log.error("%s exited with %s before it was ready", child.name, child.proc.returncode)
                return False
            if _accepts(self.wait_for_bind):
                log.info("%s is ready on %s", child.name, self.wait_for_bind)
                return True
            time.sleep(0.05)
        if not self.stopping:
            log.error("%s was not ready on %s within %ss", child.name, self.wait_for_bind, READY_TIMEOUT)
        return False

    def _tick(self) -> None:
        now = time.monotonic()
        for child in self.children:
            if child.proc is not None and child.proc.poll() is not None:
                self._exited(child, now)
            if child.proc is None and now >= child.next_start:
                child.restarts += 1
                self._start(child)

    def _start(self, child: Child) -> None:
        child.proc = subprocess.Popen(child.argv, preexec_fn=_die_with_parent)
        child.started_at = time.monotonic()
        child.history.append(child.proc.pid)
        self._record(child, "running")
        log.info("started %s (pid %s)", child.name, child.proc.pid)

    def _exited(self, child: Child, now: float) -> None:
        code = child.proc.returncode
        child.last_exit = f"signal {-code}" if code < 0 else f"exit {code}"
        if now - child.started_at >= HEALTHY_RUN:
            child.backoff = BACKOFF_START
        delay = min(child.backoff, self.config.server.restart_backoff_max)
        child.backoff = min(child.backoff * 2, self.config.server.restart_backoff_max)
        child.next_start = now + delay
        child.proc = None
        log.warning("%s stopped (%s); restarting in %.0fs", child.name, child.last_exit, delay)
        self._record(child, "backoff")

    def _stop_all(self) -> None:
        running = [c for c in self.children if c.proc is not None and c.proc.poll() is None]
        for child in running:
            _signal_group(child.proc, signal.SIGTERM)
        deadline = time.monotonic() + self.config.server.graceful_timeout + 5
        for child in running:
            try:
                child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in time: killing it", child.name)
                _signal_group(child.proc, signal.SIGKILL)
                child.proc.wait()
        for child in running:
            # Whatever the child left in its group (e.g. gunicorn workers) goes too.
            _signal_group(child.proc, signal.SIGKILL)
        for child in self.children:
            self._record(child, "stopped")

    # -- state for /healthz -------------------------------------------------------------
    def _record(self, child: Child, state: str) -> None:
        child.state = state
        row = {
            ServiceState.host: self.host,
            ServiceState.name: child.name,
            ServiceState.state: state,
            ServiceState.pid: child.proc.pid if child.proc is not None else None,
            ServiceState.restarts: child.restarts,
            ServiceState.last_exit: child.last_exit,
            ServiceState.updated_at: utcnow(),
        }
        try:
            with database.connection_context():
                ServiceState.insert(row).on_conflict(
                    conflict_target=[ServiceState.host, ServiceState.name],
                    preserve=[
                        ServiceState.state,
                        ServiceState.pid,
                        ServiceState.restarts,
                        ServiceState.last_exit,
                        ServiceState.updated_at,
                    ],
                ).execute()
        except (peewee.PeeweeException, OSError) as exc:  # supervision goes on while the database is down
            log.warning("could not record state %s of %s: %s", state, child.name, exc)


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass  # the whole group is already gone


def _accepts(bind: str) -> bool:
    if bind.startswith("unix:"):
        family, address = socket.AF_UNIX, bind[len("unix:") :]
    else:
        host, _, port = bind.rpartition(":")
        host = host.strip("[]") or "127.0.0.1"
        # A wildcard bind is reached through loopback.
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # noqa: S104
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        address = (host, int(port))
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        try:
            sock.connect(address)
            return True
        except OSError:
            return False


def postern_command(*args: str, config: Config) -> list[str]:
    argv = [sys.executable, "-m", "postern"]
    if config.source is not None:
        argv += ["--config", str(config.source)]
    return argv + list(args)


def serve(config: Config, *, api: bool, services: list[str]) -> int:
    """Supervise the API (if ``api``) and the named services until stopped."""
    children = []
    if api:
        children.append(Child("api", postern_command("serve", "--only", "api", config=config)))
    children += [Child(name, postern_command("service", "run", name, config=config)) for name in services]
    if not children:
        log.error("nothing to run: no API and no services")
        return 1
    return Supervisor(config, children, config.server.bind if api else None).run()
