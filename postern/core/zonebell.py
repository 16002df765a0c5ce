"""Cross-process "this zone changed" rings, so DNS servers drop cached answers at once:
the bell's ``dns`` channel (postern.core.bell).

Callers ring after their transaction commits, so a server that reloads on the ring sees
the change. A ring names zones (apex domains, or ``label:<tenant label>`` for a new
tenant, or ``*`` for everything, also delivered when rings may have been missed). A lost
ring costs freshness, not correctness: servers also drop their caches every
``refresh_seconds``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import peewee

from postern.core import bell

log = logging.getLogger("postern.zonebell")

CHANNEL = "dns"


def ring(zones: Iterable[str]) -> None:
    """Announce changed zones; never raises (the change is committed already)."""
    try:
        bell.ring(CHANNEL, zones)
    except (OSError, peewee.PeeweeException) as exc:
        log.warning("could not announce a DNS zone change (%s); servers catch up on their refresh", exc)


class ZoneBellListener(bell.AsyncListener):
    """Calls ``on_ring(zones)`` in the running loop for every ring (``["*"]`` when rings
    may have been missed: the server drops every cached zone)."""

    def __init__(self, database_url: str, on_ring: Callable[[list[str]], None]):
        super().__init__(CHANNEL, database_url, on_ring)
