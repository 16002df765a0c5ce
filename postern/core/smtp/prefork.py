"""Pre-forked listeners: one socket, bound once, served by several forked processes.

A listener whose work is pure-Python CPU (the SMTP listener parses MIME) uses one core
however many sessions it holds. Forking N processes that accept on one socket uses N.

Why one inherited socket rather than N sockets with ``SO_REUSEPORT``: binding once fails
loudly when the port is taken, where ``SO_REUSEPORT`` would let a second Postern (of the
same user) silently share the port and take half the mail; and the processes share one
accept queue, so a process that dies takes no waiting connection with it.

The parent serves nothing. It restarts a child that dies after ``BACKOFF_START``
(0.5 s); only a child that exits by itself young (an exit status or a crash signal,
not a kill from outside) makes the next delay double, up to ``BACKOFF_MAX``, so killing
listeners never pushes their restart out (docs/reliability.md, "Listener restarts"). On
SIGTERM or SIGINT it stops every child, SIGKILLing one that outlives the grace period.
A child asks Linux for SIGTERM if the parent dies (and exits at once if the parent died
before it asked), so a SIGKILLed parent leaves no process behind holding the port; the
supervisor also kills whatever is left of the service's process group before it starts
the next one.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable

log = logging.getLogger("postern.prefork")

POLL = 0.2
BACKOFF_START = 0.5
BACKOFF_MAX = 30.0
HEALTHY_RUN = 30.0  # seconds after which a child's death no longer counts towards the backoff
GRACE = 20.0  # seconds a child has to finish its sessions on stop
# A death by one of these came from outside (an operator, the OOM killer): no sign that
# the next child would fail too, so it does not grow the backoff.
KILLED_BY = {signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGHUP}


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Ask Linux to send ``sig`` to this process when its parent dies (a no-op elsewhere)."""
    if sys.platform.startswith("linux"):
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, sig)


def serve_forked(
    sockets: list[socket.socket], processes: int, serve_one: Callable[[list[socket.socket]], None]
) -> None:
    """Run ``serve_one(sockets)`` in ``processes`` forked children until SIGTERM or SIGINT.

    Call it before any thread starts or database connection opens: a child gets a copy
    of the parent's memory, and a connection shared by two processes corrupts both."""
    stopping = False

    def stop(signum, frame):
        nonlocal stopping
        stopping = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    parent = os.getpid()
    children: dict[int, int] = {}  # pid -> slot
    started = [0.0] * processes
    backoff = [BACKOFF_START] * processes
    due = [0.0] * processes
    try:
        while not stopping:
            running = set(children.values())
            for slot in range(processes):
                if slot not in running and time.monotonic() >= due[slot]:
                    pid = _fork(sockets, serve_one, parent, previous)
                    children[pid] = slot
                    started[slot] = time.monotonic()
                    log.info("listener process %d started (pid %d)", slot + 1, pid)
            time.sleep(POLL)
            for pid, status in _reap():
                slot = children.pop(pid, None)
                if slot is None or stopping:
                    continue
                ran = time.monotonic() - started[slot]
                killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) in KILLED_BY
                if ran >= HEALTHY_RUN:
                    backoff[slot] = BACKOFF_START
                delay = BACKOFF_START if killed else backoff[slot]
                due[slot] = time.monotonic() + delay
                alive = len(children)
                log.warning(
                    "listener process %d (pid %d) stopped (%s) after %.1fs; restarting in %.1fs%s",
                    slot + 1, pid, _describe(status), ran, delay,
                    "" if alive else "; no listener process is accepting until then",
                )  # fmt: skip
                if not killed:
                    backoff[slot] = min(backoff[slot] * 2, BACKOFF_MAX)
    finally:
        _stop(children)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _fork(sockets, serve_one, parent: int, previous) -> int:
    pid = os.fork()
    if pid:
        return pid
    code = 0
    try:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        die_with_parent()
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(0)
        serve_one(sockets)
    except BaseException:  # noqa: BLE001 (a child must never return into the parent's loop)
        log.exception("listener process %d failed", os.getpid())
        code = 1
    finally:
        for handler in logging.getLogger().handlers:
            handler.flush()
        os._exit(code)


def _reap() -> list[tuple[int, int]]:
    done = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return done
        if pid == 0:
            return done
        done.append((pid, status))


def _stop(children: dict[int, int]) -> None:
    for pid in children:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + GRACE
    while children and time.monotonic() < deadline:
        for pid, _ in _reap():
            children.pop(pid, None)
        if children:
            time.sleep(0.05)
    for pid in children:
        log.warning("listener pid %d did not stop within %.0fs: killing it", pid, GRACE)
        _signal(pid, signal.SIGKILL)
    for pid in list(children):
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {os.WTERMSIG(status)}"
    return f"exit {os.waitstatus_to_exitcode(status)}"
