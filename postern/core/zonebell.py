"""Cross-process "this zone changed" rings, so DNS servers drop cached answers at once.

The same idea as ``doorbell`` (wake-ups for ``wait_for_email``), on its own channel:
on PostgreSQL a ``NOTIFY postern_dns`` reaches every DNS server on every host; on
SQLite (one host) a datagram goes to each DNS server's Unix socket in a directory
keyed by the database file. Callers ring after their transaction commits, so a
server that reloads on the ring sees the change. A ring names zones (apex domains,
or ``label:<tenant label>`` for a new tenant, or ``*`` for everything). A lost
ring costs freshness, not correctness: servers also drop their caches every
``refresh_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import secrets
import socket
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import peewee

from postern.core.db import database, is_postgres

log = logging.getLogger("postern.zonebell")

CHANNEL = "postern_dns"
MAX_PAYLOAD = 7000  # below PostgreSQL's 8000-byte NOTIFY limit


def ring(zones: Iterable[str]) -> None:
    """Announce changed zones; never raises (the change is committed already)."""
    payload = " ".join(sorted(set(zones))) or "*"
    if len(payload) > MAX_PAYLOAD:
        payload = "*"
    try:
        if is_postgres():
            database.execute_sql("SELECT pg_notify(%s, %s)", (CHANNEL, payload))
        else:
            _ring_sockets(payload.encode())
    except (OSError, peewee.PeeweeException) as exc:
        log.warning("could not announce a DNS zone change (%s); servers catch up on their refresh", exc)


def socket_dir() -> Path:
    """Where SQLite-mode DNS servers listen: short (sun_path is 108 bytes), per database."""
    digest = hashlib.sha256(str(Path(database.obj.database).resolve()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"postern-dns-{digest}"


def _ring_sockets(payload: bytes) -> None:
    directory = socket_dir()
    if not directory.is_dir():
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        for path in directory.glob("*.sock"):
            try:
                sock.sendto(payload, str(path))
            except (ConnectionRefusedError, FileNotFoundError):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()  # a server that died without cleaning up
            except BlockingIOError:
                log.debug("zone bell %s is full; that server catches up on its refresh", path.name)


class ZoneBellListener:
    """Calls ``on_ring(zones)`` in the running loop for every ring (``["*"]`` when the
    PostgreSQL connection was lost and rings may have been missed)."""

    def __init__(self, database_url: str, on_ring: Callable[[list[str]], None]):
        self.on_ring = on_ring
        self.loop = asyncio.get_running_loop()
        self.path: Path | None = None
        self.conn = None
        if database_url.startswith(("postgres://", "postgresql://")):
            import psycopg2
            import psycopg2.extensions

            self.conn = psycopg2.connect(database_url.replace("postgres://", "postgresql://", 1))
            self.conn.set_isolation_level(psycopg2.extensions.ISOLATION_LEVEL_AUTOCOMMIT)
            self.conn.cursor().execute(f"LISTEN {CHANNEL}")
            self.fd = self.conn.fileno()
        else:
            directory = socket_dir()
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.path = directory / f"{os.getpid()}-{secrets.token_hex(4)}.sock"
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self.sock.bind(str(self.path))
            self.sock.setblocking(False)
            self.fd = self.sock.fileno()
        self.loop.add_reader(self.fd, self._readable)
        self.alive = True

    def _readable(self) -> None:
        if self.conn is None:
            while True:
                try:
                    payload = self.sock.recv(65536)
                except BlockingIOError:
                    return
                self.on_ring(payload.decode(errors="replace").split())
        import psycopg2

        try:
            self.conn.poll()
        except psycopg2.Error as exc:
            log.warning("zone bell connection lost (%s); dropping every cached zone", exc)
            self.close()
            self.on_ring(["*"])
            return
        while self.conn.notifies:
            self.on_ring(self.conn.notifies.pop(0).payload.split())

    def close(self) -> None:
        if not self.alive:
            return
        self.alive = False
        self.loop.remove_reader(self.fd)
        if self.conn is not None:
            self.conn.close()
        else:
            self.sock.close()
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
