"""Long-running services that ``postern serve`` supervises (SMTP, DNS, dispatchers),
and how a service tells its supervisor that it serves, or why it could not.

The supervisor hands each child the write end of a pipe (its number in
``POSTERN_SUPERVISOR_FD``); a child writes one line per event: ``ready`` once it
serves (the SMTP listener: once its socket accepts and greets), ``running`` if it has
no such moment (it then counts as serving once it has run 30 s), ``failed <reason>``
just before it exits on an error. Forked listener processes inherit the descriptor
and may write too. Outside ``postern serve`` (no variable) both calls do nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

NOTIFY_ENV = "POSTERN_SUPERVISOR_FD"


@dataclass(frozen=True)
class Service:
    """A service a plugin declares through ``postern_services``.

    ``run(postern)`` blocks for the life of the service inside its own child process
    (``postern service run NAME``); returning or raising counts as a crash and the
    supervisor restarts it with backoff. It should exit promptly on SIGTERM.

    ``notifies_ready``: the service calls ``notify_ready()`` itself once it serves (a
    listener, once bound and accepting). Until then /healthz shows it as ``starting``,
    and a death before it counts as a failed start. Other services show ``running``
    once ``run`` is called, and count as having served once they have run 30 s.
    """

    name: str
    run: Callable[[Any], None]
    description: str = ""
    notifies_ready: bool = False


def notify_ready() -> None:
    """Tell the supervisor this service now serves."""
    _notify("ready")


def notify_running() -> None:
    """Tell the supervisor this service is up but has no moment of serving to report."""
    _notify("running")


def notify_failed(reason: str) -> None:
    """Tell the supervisor why this service is about to exit (shown by /healthz)."""
    _notify("failed " + " ".join(reason.split())[:180])


def _notify(line: str) -> None:
    fd = os.environ.get(NOTIFY_ENV)
    if not fd or not fd.isdigit():
        return
    try:
        os.write(int(fd), (line + "\n").encode("utf-8", "replace"))
    except OSError:
        pass  # the supervisor is gone or stopped listening: nothing to tell
