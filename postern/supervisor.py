"""Supervision of ``postern serve``'s child processes: the API and plugin services.

Each child is a ``postern`` command in its own process group. The API starts first;
services start once it accepts connections. SIGTERM or SIGINT stops every child
(SIGTERM, then SIGKILL after a grace period) before exit. States go to the database
so /healthz in any worker or host can report them.

Restarts, and the bound they keep (docs/reliability.md, "Listener restarts"):

- A service tells the supervisor when it serves (``postern.core.services``); the SMTP
  listener does so once it greets. Until then it is ``starting``.
- A child that dies after it served, or that was killed by a signal it did not raise
  itself (SIGKILL, SIGTERM, SIGINT, SIGHUP: an operator, the OOM killer, a test), is
  started again after ``RESTART_DELAY`` (1 s), however often that happens: being
  killed is no sign the next start will fail. The death is seen within ``POLL``.
- Only a child that fails by itself before it served (an exit status or a crash
  signal: the port taken, a bad config, a bug at start-up) backs off: 1 s doubling up
  to ``server.restart_backoff_max``, back to 1 s once a start serves or runs 30 s.
- Whatever the dead child left in its process group (forked listener processes still
  finishing their sessions) is sent SIGTERM at once and SIGKILL before the next start,
  so no leftover holds the port the new child must bind.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field

import peewee

from postern.core import metrics
from postern.core.config import Config
from postern.core.db import database
from postern.core.models import ServiceState, utcnow
from postern.core.services import NOTIFY_ENV
from postern.core.smtp.prefork import KILLED_BY, die_with_parent  # a death by KILLED_BY is no failed start

log = logging.getLogger("postern.supervisor")

BACKOFF_START = 1.0
RESTART_DELAY = BACKOFF_START  # after a death that is no failed start: a kill, or a child that served
HEALTHY_RUN = 30.0  # seconds of uptime after which a child counts as having served
READY_TIMEOUT = 60.0
POLL = 0.2  # the longest a death goes unseen
STARTING = "started; not serving yet"
SLOW_START = 30.0  # seconds a starting service may take before a WARNING says it does not serve yet


@dataclass
class Child:
    name: str
    argv: list[str]
    #: The child writes notifications (services do, through ``postern service run``):
    #: ``ready`` once it serves, or ``running`` if it has no such moment. A child without
    #: a ready signal (the API, most services) counts as having served after HEALTHY_RUN.
    notifies: bool = True
    proc: subprocess.Popen | None = None
    restarts: int = 0
    backoff: float = BACKOFF_START
    next_start: float = 0.0
    started_at: float = 0.0
    served_at: float | None = None
    state: str = "starting"
    last_exit: str | None = None
    reason: str | None = None
    failed_starts: int = 0  # in a row
    notes: int | None = None  # read end of the child's notification pipe
    leftover_group: int | None = None  # process group of the previous run, until it is gone
    slow_warned: bool = False
    history: list[int] = field(default_factory=list)


def _die_with_parent(supervisor: int) -> None:
    """Runs in the child before exec: ask Linux to SIGTERM it if the supervisor dies, and
    exit if it already has (between fork and prctl), rather than run on as an orphan."""
    os.setsid()
    die_with_parent(signal.SIGTERM)
    if os.getppid() != supervisor:
        os._exit(0)


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
                self._wait_for_notes(POLL)
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

    def _wait_for_notes(self, timeout: float) -> None:
        """Sleep up to ``timeout``, waking early when a child writes a notification."""
        fds = [c.notes for c in self.children if c.notes is not None]
        try:
            select.select(fds, [], [], timeout)
        except InterruptedError:  # pragma: no cover (PEP 475 retries; a handler may still cut it)
            pass

    def _tick(self) -> None:
        now = time.monotonic()
        for child in self.children:
            if child.proc is not None:
                self._read_notes(child, now)
                if child.proc.poll() is not None:
                    self._read_notes(child, now)  # what it wrote just before it exited
                    self._exited(child, now)
                elif child.state == "starting" and not child.slow_warned and now - child.started_at > SLOW_START:
                    child.slow_warned = True
                    log.warning(
                        "%s (pid %s) started %.0fs ago and does not serve yet",
                        child.name, child.proc.pid, now - child.started_at,
                    )  # fmt: skip
            if child.proc is None and now >= child.next_start:
                child.restarts += 1
                self._start(child)

    def _start(self, child: Child) -> None:
        self._kill_leftovers(child)
        env, pass_fds, write_end = None, (), None
        if child.notifies:
            child.notes, write_end = os.pipe()
            os.set_blocking(child.notes, False)
            env, pass_fds = {**os.environ, NOTIFY_ENV: str(write_end)}, (write_end,)
        try:
            child.proc = subprocess.Popen(
                child.argv, preexec_fn=functools.partial(_die_with_parent, os.getpid()), env=env, pass_fds=pass_fds
            )
        finally:
            if write_end is not None:
                os.close(write_end)
        child.started_at = time.monotonic()
        child.served_at = None
        child.slow_warned = False
        child.history.append(child.proc.pid)
        child.reason = STARTING if child.notifies else None
        self._record(child, "starting" if child.notifies else "running")
        log.info("started %s (pid %s)", child.name, child.proc.pid)

    def _read_notes(self, child: Child, now: float) -> None:
        if child.notes is None:
            return
        try:
            data = os.read(child.notes, 4096)
        except BlockingIOError:
            return
        if not data:  # every holder of the write end is gone: nothing more to wait for
            self._close_notes(child)
            return
        for line in data.decode("utf-8", "replace").splitlines():
            if line == "ready" and child.served_at is None:
                child.served_at = now
                child.failed_starts = 0
                child.reason = None
                self._record(child, "running")
                ran = now - child.started_at
                log.info("%s serves (pid %s, %.1fs after its start)", child.name, child.proc.pid, ran)
            elif line == "running" and child.state == "starting":
                child.reason = None  # no ready signal: up, and served once it has run HEALTHY_RUN
                self._record(child, "running")
            elif line.startswith("failed "):
                child.reason = line[len("failed ") :]

    def _exited(self, child: Child, now: float) -> None:
        code = child.proc.returncode
        child.last_exit = f"signal {-code}" if code < 0 else f"exit {code}"
        ran = now - child.started_at
        served = child.served_at is not None or ran >= HEALTHY_RUN
        killed = code < 0 and -code in KILLED_BY
        if served:
            child.backoff = BACKOFF_START
            child.failed_starts = 0
            why = f"{child.last_exit} after serving {now - (child.served_at or child.started_at):.1f}s"
        elif killed:
            why = f"{child.last_exit} {ran:.1f}s after its start, before it served (killed: no failed start)"
        else:
            child.failed_starts += 1
            why = f"{child.last_exit} {ran:.1f}s after its start ({child.failed_starts} failed start(s) in a row)"
        if child.reason and child.reason != STARTING:
            why += f": {child.reason}"
        if served or killed:
            delay = RESTART_DELAY
        else:
            delay = min(child.backoff, self.config.server.restart_backoff_max)
            child.backoff = min(child.backoff * 2, self.config.server.restart_backoff_max)
        # Forked listener processes left in its group stop listening now (they finish
        # their sessions); whatever still lives at the next start is killed then.
        _signal_group(child.proc, signal.SIGTERM)
        metrics.mark_dead(child.proc.pid)  # its live gauges stop counting; its counters stay
        metrics.sweep_dead()  # and those of processes that died with it (gunicorn's workers)
        child.leftover_group = child.proc.pid
        self._close_notes(child)
        child.next_start = now + delay
        child.proc = None
        child.reason = why[:200]
        log.warning("%s is not being served: %s; restarting in %.1fs", child.name, why, delay)
        self._record(child, "restarting", next_in=delay)

    def _kill_leftovers(self, child: Child) -> None:
        group, child.leftover_group = child.leftover_group, None
        if group is None:
            return
        left = _live_members(group)
        if left == []:
            return  # the whole group is gone (zombies waiting for init hold nothing)
        log.warning(
            "%s: killing what is left of its previous run (process group %s%s)",
            child.name, group, f": pids {', '.join(map(str, left))}" if left else "",
        )  # fmt: skip
        try:
            os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def _close_notes(self, child: Child) -> None:
        if child.notes is not None:
            os.close(child.notes)
            child.notes = None

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
            self._kill_leftovers(child)
            self._close_notes(child)
            self._record(child, "stopped")

    # -- state for /healthz -------------------------------------------------------------
    def _record(self, child: Child, state: str, next_in: float | None = None) -> None:
        child.state = state
        row = {
            ServiceState.host: self.host,
            ServiceState.name: child.name,
            ServiceState.state: state,
            ServiceState.pid: child.proc.pid if child.proc is not None else None,
            ServiceState.restarts: child.restarts,
            ServiceState.last_exit: child.last_exit,
            ServiceState.reason: child.reason if state in ("starting", "restarting") else None,
            ServiceState.next_attempt_at: utcnow() + dt.timedelta(seconds=next_in) if next_in is not None else None,
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
                        ServiceState.reason,
                        ServiceState.next_attempt_at,
                        ServiceState.updated_at,
                    ],
                ).execute()
        except (peewee.PeeweeException, OSError) as exc:  # supervision goes on while the database is down
            log.warning("could not record state %s of %s: %s", state, child.name, exc)


def _live_members(group: int) -> list[int] | None:
    """Pids of the live (not zombie) processes of process group ``group``, read from
    /proc; None where /proc cannot tell (then the caller kills the group blindly)."""
    if not os.path.isdir("/proc/self"):
        return None
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue  # gone meanwhile
            if int(fields[2]) == group and fields[0] != b"Z":  # after "(comm)": state, ppid, pgrp
                found.append(int(entry.name))
    return found


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
        children.append(Child("api", postern_command("serve", "--only", "api", config=config), notifies=False))
    children += [Child(name, postern_command("service", "run", name, config=config)) for name in services]
    if not children:
        log.error("nothing to run: no API and no services")
        return 1
    return Supervisor(config, children, config.server.bind if api else None).run()
