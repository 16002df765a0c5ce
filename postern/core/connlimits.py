"""Connection caps shared by the listeners (HTTP API, SMTP, DNS over TCP).

A listener asks ``ConnectionLimiter.acquire(peer)`` when a connection opens and calls
``release`` with the key it got when that connection closes. Two bounds apply: a total
(so many slow clients cannot exhaust file descriptors and memory) and one per client
address (so one client cannot take every slot and lock the others out). Counts are
kept per process: a listener served by N processes admits up to N times each bound.

IPv6 clients are counted by their /64: one host is usually given a whole /64 and can
pick a fresh address from it for every connection.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections import Counter

log = logging.getLogger("postern.connlimits")

#: Refusals are logged at most this often (seconds), with how many there were: a flood
#: of refused connections must not become a flood of log lines.
LOG_EVERY = 10.0

TOTAL = "total"
PER_CLIENT = "per_client"


def client_key(peer) -> str:
    """Who a connection counts against, from its ``peername``: the IPv4 address, the
    IPv6 /64, or "local" for a Unix socket."""
    if not isinstance(peer, tuple) or not peer:
        return "local"
    try:
        address = ipaddress.ip_address(str(peer[0]).split("%", 1)[0])
    except ValueError:
        return str(peer[0])
    if address.version == 6:
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


class ConnectionLimiter:
    """Counts open connections in total and per client. Not thread-safe: each listener
    calls it from its own event loop. ``per_client`` 0 means no per-client bound."""

    def __init__(self, name: str, total: int, per_client: int):
        self.name = name
        self.total = total
        self.per_client = per_client
        self.open = 0
        self.by_client: Counter[str] = Counter()
        self.refused = 0
        self._unlogged = 0
        self._logged_at = float("-inf")

    def acquire(self, peer) -> tuple[str, str | None]:
        """``(key, None)`` when the connection is admitted (release ``key`` later), or
        ``(key, reason)`` with ``TOTAL`` or ``PER_CLIENT`` when it must be refused."""
        key = client_key(peer)
        reason = None
        if self.open >= self.total:
            reason = TOTAL
        elif self.per_client and self.by_client[key] >= self.per_client:
            reason = PER_CLIENT
        if reason is not None:
            self._refused(key, reason)
            return key, reason
        self.open += 1
        self.by_client[key] += 1
        return key, None

    def release(self, key: str) -> None:
        self.open -= 1
        left = self.by_client[key] - 1
        if left > 0:
            self.by_client[key] = left
        else:
            del self.by_client[key]  # an address that went away costs no memory

    def _refused(self, key: str, reason: str) -> None:
        self.refused += 1
        self._unlogged += 1
        now = time.monotonic()
        if now - self._logged_at >= LOG_EVERY:
            if reason == TOTAL:
                why = f"{self.open} open, the total cap of {self.total}"
            else:
                why = f"the cap of {self.per_client} per client"
            log.warning("%s: refused %d connection(s) (last from %s: %s)", self.name, self._unlogged, key, why)
            self._logged_at, self._unlogged = now, 0
