"""Listener restarts: kill the SMTP listener of a real ``postern serve`` at a chosen point
of its life or of its start-up, and time how long until the port greets again (SMTP
220 from a process that accepts, not merely a listening socket).

Shared by tests/test_listener_restart.py (a few rounds, asserts the documented bound)
and bench/listener_restart.py (hundreds of kills, the distribution for
docs/reliability.md). One round:

- ``accept``: the listener serves; a random moment later one victim is killed: the
  service process, one forked listener process, or every forked listener process.
- ``spawn``, ``import``, ``bind``, ``fork``: the serving service is killed first, then
  its replacement at that point of its start-up: as soon as its pid exists; a random
  moment later (Python still importing); once it holds the listening socket (before a
  forked child greets, with ``processes`` above 1); once it has forked (the parent or
  the child, at random). The time is measured from the last kill.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import statistics
import time
from dataclasses import dataclass, field

import psutil

from postern.core.ports import listening_pids
from postern.supervisor import POLL, RESTART_DELAY

#: Start-up allowance on a loaded 2-core machine: the listener takes about 0.5 s to
#: import, open the database and bind when idle; this is the margin the test grants.
START_ALLOWANCE = 10.0
#: What the test asserts: the supervisor sees the death within POLL, starts the next
#: listener RESTART_DELAY later, and that one greets within its start-up.
BOUND = POLL + RESTART_DELAY + START_ALLOWANCE
PHASES = ("spawn", "import", "bind", "fork", "accept")


@dataclass
class Round:
    phase: str
    victim: str
    seconds: float  # from the last kill to a 220 greeting


@dataclass
class Killer:
    deployment: object  # support.crash.Deployment
    processes: int
    rng: random.Random
    rounds: list[Round] = field(default_factory=list)

    @property
    def port(self) -> int:
        return self.deployment.server.smtp_port

    def service(self) -> int | None:
        return self.deployment.service_pid("smtp")

    def forked(self, service: int) -> list[int]:
        with contextlib.suppress(psutil.Error):
            return [p.pid for p in psutil.Process(service).children() if p.status() != psutil.STATUS_ZOMBIE]
        return []

    def phases(self) -> tuple[str, ...]:
        return PHASES if self.processes > 1 else tuple(p for p in PHASES if p != "fork")

    def one_round(self, phase: str | None = None, deadline: float = 60.0) -> Round:
        phase = phase or self.rng.choice(self.phases())
        greets_within(self.port, deadline)  # served before the round starts
        time.sleep(self.rng.uniform(0.0, 0.5))
        service = self.service()
        assert service, "no smtp service"
        if phase == "accept":
            victim, pids = self._accept_victims(service)
        else:
            _kill(service)
            victim, pids = self._startup_victim(phase, service, deadline)
        killed = time.monotonic()
        for pid in pids:
            _kill(pid)
        seconds = greets_within(self.port, deadline) - killed
        self.rounds.append(Round(phase, victim, seconds))
        return self.rounds[-1]

    def _accept_victims(self, service: int) -> tuple[str, list[int]]:
        kids = self.forked(service)
        choice = self.rng.choice(["service", "one forked", "all forked"] if kids else ["service"])
        if choice == "service":
            return choice, [service]
        return choice, kids if choice == "all forked" else [self.rng.choice(kids)]

    def _startup_victim(self, phase: str, old: int, deadline: float) -> tuple[str, list[int]]:
        """Wait for the replacement of ``old`` to reach ``phase``; what to kill then."""
        end = time.monotonic() + deadline
        new = None
        while time.monotonic() < end:
            new = self.service()
            if new not in (None, old):
                break
            time.sleep(0.005)
        assert new not in (None, old), "the killed service was not replaced"
        if phase == "spawn":
            return "service", [new]
        if phase == "import":
            time.sleep(self.rng.uniform(0.0, 0.4))
            return "service", [new]
        # bind or fork: poll the new service's state closely (an early kill still counts)
        while time.monotonic() < end:
            if phase == "bind" and new in listening_pids(self.port):
                return "service", [new]
            if phase == "fork" and (kids := self.forked(new)):
                return ("service", [new]) if self.rng.random() < 0.5 else ("forked", [self.rng.choice(kids)])
            if not psutil.pid_exists(new):
                return "service (already gone)", []
            time.sleep(0.002)
        raise AssertionError(f"the new service {new} never reached {phase}")


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def greets_within(port: int, timeout: float) -> float:
    """The time.monotonic() at which ``port`` greeted (SMTP 220) and went on greeting: a
    second connection 0.3 s later is greeted too, so a forked listener that answers one
    last connection on its way out (its parent was killed) does not count as served."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        first = _greeted(port, end)
        if first is not None:
            time.sleep(0.3)
            if _greeted(port, end) is not None:
                return first
        time.sleep(0.01)
    raise AssertionError(f"port {port} did not greet within {timeout:.0f}s")


def _greeted(port: int, end: float) -> float | None:
    """When a connection got its 220. One waiting in the accept queue is greeted the
    moment a process accepts it, so the time is not rounded up to a polling interval."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.settimeout(max(0.1, end - time.monotonic()))
            if sock.recv(512).startswith(b"220"):
                return time.monotonic()
    except OSError:
        pass  # refused (nothing listens), or reset (the listener died with us queued)
    return None


def distribution(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    cuts = statistics.quantiles(ordered, n=100, method="inclusive") if len(ordered) > 1 else ordered * 99
    return {
        "min": ordered[0],
        "p50": statistics.median(ordered),
        "p90": cuts[89],
        "p99": cuts[98],
        "max": ordered[-1],
    }
