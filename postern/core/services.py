"""Long-running services that ``postern serve`` supervises (SMTP, DNS, dispatchers)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Service:
    """A service a plugin declares through ``postern_services``.

    ``run(postern)`` blocks for the life of the service inside its own child process
    (``postern service run NAME``); returning or raising counts as a crash and the
    supervisor restarts it with backoff. It should exit promptly on SIGTERM.
    """

    name: str
    run: Callable[[Any], None]
    description: str = ""
