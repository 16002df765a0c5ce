"""Idle SMTP sessions kept for the next message to the same MX (``direct.py``).

Opening a session costs a TCP handshake, a greeting, EHLO and often a TLS handshake;
a burst of messages to one provider's MX pays that once. Sessions are keyed by (MX
host, address): whatever domain the next message is for, the same server takes it.
"""

from __future__ import annotations

import smtplib
import socket
import threading
import time
from dataclasses import dataclass

MAX_IDLE_CONNECTIONS = 32


def close_quietly(client: smtplib.SMTP, *, quit: bool = False) -> None:
    """Close a session, politely (QUIT) when it is believed healthy."""
    try:
        if quit and client.sock is not None:
            client.quit()
    except (OSError, smtplib.SMTPException):
        pass
    finally:
        client.close()


def cut_off(client: smtplib.SMTP, fired: threading.Event) -> None:
    """A watchdog's deadline: shut the socket down under whatever call is blocked on it,
    which then fails like any broken connection."""
    fired.set()  # before the cut, so the failure it causes is read as the deadline's
    sock = client.sock
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already closed


@dataclass(eq=False)
class Connection:
    """An open SMTP session with one address of one MX host."""

    client: smtplib.SMTP
    host: str
    address: str
    #: TLS with a certificate verified for ``host``: good enough for an enforced
    #: MTA-STS policy; an opportunistic session is not.
    verified: bool = False
    messages: int = 0
    idle_since: float = 0.0


class ConnectionPool:
    """Idle sessions by (MX host, address). A session is taken out while one thread
    uses it and given back after its transaction, so no two threads share one."""

    def __init__(self, seconds: float, messages: int, *, clock=time.monotonic):
        self.seconds, self.messages, self._clock = seconds, messages, clock
        self._idle: dict[tuple[str, str], list[Connection]] = {}
        self._lock = threading.Lock()

    def take(self, host: str, address: str, *, verified: bool) -> Connection | None:
        with self._lock:
            stale = self._sweep()
            idle = self._idle.get((host, address), [])
            found = next((c for c in reversed(idle) if c.verified or not verified), None)
            if found is not None:
                idle.remove(found)
        for conn in stale:
            close_quietly(conn.client)
        return found

    def give(self, conn: Connection) -> None:
        """Keep ``conn`` for the next message to its host, once RSET succeeds, unless it
        has carried its share of messages or the pool is full."""
        reuse = self.seconds > 0 and conn.messages < self.messages and conn.client.sock is not None
        if reuse:
            try:
                reuse = conn.client.rset()[0] == 250
            except (OSError, smtplib.SMTPException):
                close_quietly(conn.client)
                return
        with self._lock:
            stale = self._sweep()
            if reuse and sum(map(len, self._idle.values())) < MAX_IDLE_CONNECTIONS:
                conn.idle_since = self._clock()
                self._idle.setdefault((conn.host, conn.address), []).append(conn)
                conn = None
        for old in stale:
            close_quietly(old.client)
        if conn is not None:
            close_quietly(conn.client, quit=True)

    def close(self) -> None:
        with self._lock:
            idle = [c for conns in self._idle.values() for c in conns]
            self._idle.clear()
        for conn in idle:
            close_quietly(conn.client, quit=True)

    def _sweep(self) -> list[Connection]:
        """Take out what idled too long (under the lock; the caller closes them)."""
        now, stale = self._clock(), []
        for key, conns in list(self._idle.items()):
            stale += [c for c in conns if now - c.idle_since > self.seconds]
            kept = [c for c in conns if now - c.idle_since <= self.seconds]
            if kept:
                self._idle[key] = kept
            else:
                del self._idle[key]
        return stale
